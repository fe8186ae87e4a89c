#!/usr/bin/env bash
# report.sh — `neuronlab report` end to end on the fixture model: record → sparsity → perturb →
# report, then ability / prune / overlap / moe-sweep / moe-usage runs of the real commands (so every table has the
# analyses' real schema) whose rows are replaced by synthetic ones with the sqlite3 CLI, for
# the ability figures and the heatmaps with known values; every figure's
# PNG, PDF, gnuplot script and CSV exist (each gnuplot call exited 0, or report fails), the PNGs
# are real images, index.html links them; the heatmap CSVs hold the expected matrices (the random
# control's spread too), the perturbation CSVs the relative perplexity change recomputed from the
# database rows, the ability figure one legend and one y range; a figure
# whose analysis has no complete run (or no rows) is listed as missing; bad input gives
# one-line errors.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$PWD/${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_report.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf/llama
if ! command -v gnuplot > /dev/null; then echo "SKIP report: gnuplot is not installed (apt-get install gnuplot-nox)"; exit 0; fi
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" | head -8; fi; }

$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(5)
with open(sys.argv[1], "w") as f:
    for i in range(18):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(40)], "label": ["code", "math", "prose"][i % 3]}) + "\n")
PY
{ "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" --pool && "$nl" sparsity "$tmp/a.h5" --db "$tmp/r.db" > /dev/null; } > "$tmp/why" 2>&1
ok $? "record and sparsity for the report"
"$nl" report --db "$tmp/r.db" -o "$tmp/half" > "$tmp/why" 2>&1
rc=$?
grep -q 'Not drawn: the database has no complete run of this analysis' "$tmp/half/index.html" 2>> "$tmp/why" && [ -f "$tmp/half/sparsity_cdf_value.png" ] && [ ! -f "$tmp/half/perturbation.png" ]
ok $(( rc | $? )) "report without a perturb run draws the sparsity figures and lists the perturbation figure as missing"
"$nl" perturb $fx "$tmp/d.jsonl" --db "$tmp/r.db" --ratios 0,0.3,0.6,0.9 > /dev/null 2> "$tmp/why"
ok $? "perturb for the report"
"$nl" report --db "$tmp/r.db" -o "$tmp/rep" > "$tmp/out" 2> "$tmp/why"
rc=$?
cat "$tmp/out" >> "$tmp/why"
ok $rc "report exits 0 (every gnuplot call exited 0)"
for f in ability_scores ability_depth prune_matrix overlap; do
  sed -n "/<figure id=\"$f\">/,/<\/figure>/p" "$tmp/rep/index.html" | grep -q 'Not drawn: the database has no complete run' && [ ! -e "$tmp/rep/$f.png" ] || echo "$f is not listed as missing" >> "$tmp/why"
done
! grep -q 'is not listed' "$tmp/why"
ok $? "without ability, prune and overlap runs their four figures are listed as not drawn"

# ability, prune and overlap runs: the real commands create the runs and their tables (the
# analyses' own schemas, so a schema change that breaks a figure's query fails this test); their
# rows are then replaced with synthetic ones (named columns) whose figures have known values
if ! command -v sqlite3 > /dev/null; then
  echo "SKIP report heatmaps: the sqlite3 CLI is not installed (apt-get install sqlite3)"
  exit 0
fi
run_row() { # id kind status
  echo "INSERT INTO runs(id, kind, model, dataset, source, params, tool_version, started_at, ended_at, status)
    VALUES ($1, '$2', '$fx', 'd.jsonl', 'a.h5', '{}', 'test', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', '$3');"
}
# a complete overlap run before the table exists: its figure has no rows, the report goes on
run_row 90 overlap complete | sqlite3 "$tmp/r.db" 2> "$tmp/why" && "$nl" report --db "$tmp/r.db" -o "$tmp/notab" > /dev/null 2>> "$tmp/why" \
  && sed -n '/<figure id="overlap">/,/<\/figure>/p' "$tmp/notab/index.html" | grep -q 'Not drawn: the run has no rows for this figure'
ok $? "an overlap run whose table does not exist is listed as not drawn, the report goes on"
{ "$nl" ability "$tmp/a.h5" --db "$tmp/r.db" && "$nl" prune $fx "$tmp/d.jsonl" --db "$tmp/r.db" --scores latest --seeds 1 \
  && "$nl" prune $fx "$tmp/d.jsonl" --db "$tmp/r.db" --scores latest --seeds 1 && "$nl" overlap --db "$tmp/r.db" --scores latest; } > "$tmp/why" 2>&1
ok $? "ability, prune (twice) and overlap runs of the real commands"
last() { sqlite3 "$tmp/r.db" "SELECT MAX(id) FROM runs WHERE kind = '$1' AND status = 'complete'"; }
A=$(last ability) P2=$(last prune) O=$(last overlap)
P1=$(sqlite3 "$tmp/r.db" "SELECT MAX(id) FROM runs WHERE kind = 'prune' AND id < $P2")
{ cat <<SQL
DELETE FROM ability_run WHERE run_id = $A; DELETE FROM ability_label WHERE run_id = $A;
DELETE FROM ability_layer WHERE run_id = $A; DELETE FROM ability_depth WHERE run_id = $A;
DELETE FROM overlap WHERE run_id = $O;
DELETE FROM prune_effect WHERE run_id IN ($P1, $P2); DELETE FROM prune_control WHERE run_id IN ($P1, $P2);
-- the first prune run failed half-way: its rows must not be drawn; the second is not complete yet
UPDATE runs SET status = 'failed' WHERE id = $P1;
UPDATE runs SET status = 'interrupted' WHERE id = $P2;
INSERT INTO prune_effect(run_id, pruned, control, seed, label, neurons, tokens, nll, ppl, rel_change)
  VALUES ($P1, 'code', 'ability', -1, 'code', 12, 80, 5.1, 150.0, 0.9);
INSERT INTO ability_run(run_id, method, symmetric, top, scope, resident_run, seed, docs, layers, d_ff)
  VALUES ($A, 'ap', 0, 0.05, 'layer', NULL, 0, 18, 4, 64);
WITH ab(k, name) AS (VALUES (0, 'code'), (1, 'math'), (2, 'prose'))
INSERT INTO ability_label(run_id, ability, docs, positives, baseline) SELECT $A, name, 18, 6, 6 / 18.0 FROM ab;
WITH ab(k, name) AS (VALUES (0, 'code'), (1, 'math'), (2, 'prose')), ly(l) AS (VALUES (0), (1), (2), (3))
INSERT INTO ability_layer(run_id, ability, layer, best, top_permille, mean, baseline, shuffled_best, shuffled_top_permille, shuffled_mean)
  SELECT $A, name, l, 0.45 + 0.1 * l + 0.02 * k, 0.35 + 0.08 * l, 0.34, 6 / 18.0, 0.42, 0.37, 6 / 18.0
  FROM ab, ly UNION ALL SELECT $A, name, -1, 0.8, 0.6, 0.34, 6 / 18.0, 0.45, 0.38, 6 / 18.0 FROM ab;
WITH ab(k, name) AS (VALUES (0, 'code'), (1, 'math'), (2, 'prose')), ly(l) AS (VALUES (0), (1), (2), (3))
INSERT INTO ability_depth(run_id, ability, layer, neurons, share)
  SELECT $A, name, l, 3 + l + k * (3 - l), (3 + l + k * (3 - l)) / (18.0 + 6 * k) FROM ab, ly;
WITH ab(name) AS (VALUES ('code'), ('math'), ('prose')),
  x(a, b, i) AS (SELECT p.name, q.name, CASE WHEN p.name = q.name THEN 40 WHEN p.name || q.name IN ('codemath', 'mathcode')
    THEN 12 WHEN p.name || q.name IN ('codeprose', 'prosecode') THEN 3 ELSE 5 END FROM ab p, ab q)
INSERT INTO overlap(run_id, a, b, layer, size_a, size_b, inter, frac, jaccard, baseline_frac, baseline_jaccard)
  SELECT $O, a, b, l, 40, 40, i, i / 40.0, i / (80.0 - i), 0.05, 0.05 / 1.95
  FROM x, (SELECT -1 AS l UNION ALL SELECT 0);
SQL
} > "$tmp/abl.sql"
sqlite3 "$tmp/r.db" < "$tmp/abl.sql" > "$tmp/why" 2>&1 && "$nl" report --db "$tmp/r.db" -o "$tmp/part" > /dev/null 2>> "$tmp/why" \
  && sed -n '/<figure id="prune_matrix">/,/<\/figure>/p' "$tmp/part/index.html" | grep -q 'Not drawn: the database has no complete run' \
  && [ ! -e "$tmp/part/prune_matrix.png" ] && [ -s "$tmp/part/overlap.png" ] && [ -s "$tmp/part/ability_scores.png" ]
ok $? "a prune run that failed is not drawn (listed as missing) while the ability and overlap figures are"
{ cat <<SQL
UPDATE runs SET status = 'complete' WHERE id = $P2;
WITH lb(c) AS (VALUES (''), ('code'), ('math'), ('prose'))
INSERT INTO prune_effect(run_id, pruned, control, seed, label, neurons, tokens, nll, ppl, rel_change)
  SELECT $P2, '', 'none', -1, c, 0, 240, 5.0, 148.4, 0 FROM lb;
WITH m(p, c, r) AS (VALUES ('code', 'code', 0.352), ('code', 'math', 0.021), ('code', 'prose', -0.004), ('code', '', 0.125),
  ('math', 'code', 0.015), ('math', 'math', 0.298), ('math', 'prose', 0.009), ('math', '', 0.104),
  ('prose', 'code', 0.003), ('prose', 'math', 0.012), ('prose', 'prose', 0.187), ('prose', '', 0.061))
INSERT INTO prune_effect(run_id, pruned, control, seed, label, neurons, tokens, nll, ppl, rel_change)
  SELECT $P2, p, 'ability', -1, c, 12, 80, 5.1, 150.0, r FROM m
  UNION ALL SELECT $P2, p, 'random', s, c, 12, 80, 5.0, 149.0, 0.01 + 0.002 * s FROM m, (SELECT 0 AS s UNION ALL SELECT 1 UNION ALL SELECT 2);
-- no random control for (prose, math): that cell stays empty (NaN) in the random and difference panels
INSERT INTO prune_control(run_id, pruned, label, seeds, mean, sd, min, max)
  SELECT $P2, pruned, label, 3, AVG(rel_change), 0.002, MIN(rel_change), MAX(rel_change) FROM prune_effect
  WHERE run_id = $P2 AND control = 'random' AND NOT (pruned = 'prose' AND label = 'math') GROUP BY pruned, label;
SQL
} | sqlite3 "$tmp/r.db" > "$tmp/why" 2>&1
ok $? "synthetic ability, prune and overlap rows inserted into the real tables with the sqlite3 CLI"
# the MoE figures: a real moefy, moe-sweep and moe-usage on the fixture model
{ "$nl" moefy $fx "$tmp/d.jsonl" --experts 4 -o "$tmp/moe" --quiet && "$nl" moe-sweep $fx "$tmp/d.jsonl" --moe "$tmp/moe" \
    --db "$tmp/r.db" --k 1,2 --no-recall --quiet && "$nl" moe-usage $fx "$tmp/d.jsonl" --moe "$tmp/moe" --db "$tmp/r.db" --k 1 --quiet
} > /dev/null 2> "$tmp/why"
ok $? "moefy, moe-sweep and moe-usage for the MoE figures"
"$nl" report --db "$tmp/r.db" -o "$tmp/rep" > "$tmp/out" 2> "$tmp/why"
rc=$?
cat "$tmp/out" >> "$tmp/why"
grep -q '(14 figures drawn, 0 without data)' "$tmp/out"
ok $(( rc | $? )) "report with every analysis exits 0 and draws all 14 figures (every gnuplot call exited 0)"
$py - "$tmp/rep" >> "$tmp/why" 2>&1 <<'PY'
import glob, os, re, sys
d = sys.argv[1]
html = open(os.path.join(d, "index.html"), encoding="utf-8").read()
figs = re.findall(r'<figure id="([^"]+)">', html)
assert len(figs) >= 5, figs
assert "Not drawn" not in html, "a figure is missing"
for name in figs:
    for ext in ("png", "pdf", "gp"):
        p = os.path.join(d, f"{name}.{ext}")
        assert os.path.getsize(p) > 0, p
        assert f'{name}.{ext}' in html, f"index.html does not link {name}.{ext}"
    png = open(os.path.join(d, name + ".png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", name
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert w >= 400 and h >= 300, (name, w, h)
    assert open(os.path.join(d, name + ".pdf"), "rb").read(5) == b"%PDF-", name
    csvs = glob.glob(os.path.join(d, name + "-*.csv"))
    assert csvs, f"no CSV for {name}"
    for c in csvs:
        rows = open(c).read().splitlines()
        assert len(rows) >= 2 and len(rows[0].split(",")) >= 2, c
        assert all(len(r.split(",")) == len(rows[0].split(",")) for r in rows), f"{c}: header and rows differ in columns"
        assert os.path.basename(c) in html, c
# index.html: every figure fits the window and a click toggles native resolution (wide figures readable)
assert ".plot img.native{max-width:none" in html and html.count("onclick=\"this.classList.toggle('native')\"") == len(figs), \
    "click-to-native-resolution"
# activation_frequency: the x axis is fitted to the data — it ends one bin (0.05) after the last non-empty bin
rows = [r.split(",") for r in open(glob.glob(os.path.join(d, "activation_frequency-*.csv"))[0]).read().splitlines()]
xs = [float(r[0]) for r in rows[1:]]
nonzero = [float(r[0]) for r in rows[1:] if any(v not in ("NaN", "0") and float(v) > 0 for v in r[1:])]
assert abs(xs[-1] - min(max(nonzero) + 0.05, 0.975)) < 1e-9 and abs(xs[0] - min(nonzero)) < 1e-9, ("activation_frequency x range", xs, nonzero)
# black is the aggregate's colour only: the lines template gives it to the series "all layers" alone,
# so no ability of ability_depth (nor a layer curve) is drawn black
tpl = open(os.path.join(d, "ability_depth.gp"), encoding="utf-8").read()
assert re.search(r'scol\(g\) = isagg\(g\) \? "#000000"', tpl) and 'isagg(g) = snames[g] eq "all layers"' in tpl, "black reserved"
assert "#000000" not in [l for l in tpl.splitlines() if l.startswith("array palette")][0], "black in the palette"
assert "all layers" not in open(glob.glob(os.path.join(d, "ability_depth-*.csv"))[0]).readline(), "an ability named all layers"
print(f"{len(figs)} figures with PNG, PDF, gnuplot script and CSV; click-to-native; frequency x axis {xs[0]}..{xs[-1]}")
PY
ok $? "every figure has its PNG, PDF, gnuplot script and CSV, linked from index.html"
$py - "$tmp/rep" > "$tmp/why" 2>&1 <<'PY'
import math, os, sys
d = sys.argv[1]
def matrix(name):
    rows = [r.split(",") for r in open(os.path.join(d, name), encoding="utf-8").read().splitlines()]
    return rows[0], {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}, [r[0] for r in rows[1:]]
def same(got, want, what):
    assert len(got) == len(want), (what, got, want)
    for g, w in zip(got, want):
        assert (math.isnan(g) and w is None) or (w is not None and abs(g - w) < 1e-6), (what, got, want)
nan = None
# prune: rows = pruned ability, columns = evaluated label ('' shown as "all", last), 100 x rel_change
h, m, order = matrix("prune_matrix-1-top-set-of-the-row-s-ability-zeroed.csv")
assert h == ["evaluated on", "code", "math", "prose", "all"] and order == ["code", "math", "prose"], (h, order)
same(m["code"], [35.2, 2.1, -0.4, 12.5], "ability code"); same(m["math"], [1.5, 29.8, 0.9, 10.4], "ability math")
same(m["prose"], [0.3, 1.2, 18.7, 6.1], "ability prose")
h, m, order = matrix("prune_matrix-2-same-size-random-neurons-mean-sd-3-seeds.csv")
assert h == ["evaluated on", "code", "math", "prose", "all"] and order == ["code", "math", "prose"], (h, order)
same(m["code"], [1.2] * 4, "random code"); same(m["prose"], [1.2, nan, 1.2, 1.2], "random prose (no control for math)")
# the random panel's spread: 100 x sd beside the means, and "mean±sd" in its cells; the other panels have none
h, m, order = matrix("prune_matrix-2-same-size-random-neurons-mean-sd-3-seeds-spread.csv")
assert h == ["evaluated on", "code", "math", "prose", "all"] and order == ["code", "math", "prose"], (h, order)
same(m["code"], [0.2] * 4, "spread code"); same(m["prose"], [0.2, nan, 0.2, 0.2], "spread prose")
assert not [f for f in os.listdir(d) if f.startswith(("prune_matrix-1-", "prune_matrix-3-")) and f.endswith("-spread.csv")]
cells = open(os.path.join(d, "prune_matrix-2.cells"), encoding="utf-8").read().splitlines()
assert cells[0] == "0,0,1.2,1.2±0.2" and "1,2,NaN,–" in cells and len(cells) == 12, cells
cells = open(os.path.join(d, "prune_matrix-1.cells"), encoding="utf-8").read().splitlines()
assert "2,0,-0.4,-0.4" in cells and "0,0,35.2,35.2" in cells, cells
cells = open(os.path.join(d, "prune_matrix-3.cells"), encoding="utf-8").read().splitlines()
assert "2,1,-0.3,-0.3" in cells and "0,1,0.3,0.3" in cells, cells
h, m, order = matrix("prune_matrix-3-ability-random-percentage-points.csv")
same(m["code"], [34.0, 0.9, -1.6, 11.3], "difference code"); same(m["prose"], [-0.9, nan, 17.5, 4.9], "difference prose")
t = open(os.path.join(d, "prune_matrix.titles"), encoding="utf-8").read().splitlines()
assert t == ["top set of the row's ability zeroed", "same-size random neurons (mean ± sd, 3 seeds)",
             "ability − random (percentage points)"], t
gp = open(os.path.join(d, "prune_matrix.gp"), encoding="utf-8").read()
for line in ("cbmin = -1.6", "cbmax = 35.2", 'style = "%.1f"', "symlog = 1.0",
             "array prows[3] = [3, 3, 3]", "array pcols[3] = [4, 4, 4]",
             'ylabel = "relative perplexity change (%), on the 18 documents the top sets were chosen on (no held-out split)"'):
    assert line + "\n" in gp, line
# which documents were scored (the run's params "eval"): under the matrix and in the caption
html = open(os.path.join(d, "index.html"), encoding="utf-8").read()
assert "Documents scored in this run: the same 18 documents the top sets were chosen on (the ability run has no --split)" in html, "prune caption"
# overlap: rows = a, columns = b, layer -1; the diagonal (always 1) is left empty; the comma of the xlabel became ';'
h, m, order = matrix("overlap-1-a-b-a-all-layers-random-0-05.csv")
assert h == ["B (column ability); A = row ability", "code", "math", "prose"] and order == ["code", "math", "prose"], h
same(m["code"], [nan, 0.3, 0.075], "frac code"); same(m["math"], [0.3, nan, 0.125], "frac math")
h, m, order = matrix("overlap-2-jaccard-all-layers-random-0-0256.csv")
same(m["code"], [nan, 12 / 68, 3 / 77], "jaccard code"); same(m["prose"], [3 / 77, 5 / 75, nan], "jaccard prose")
t = open(os.path.join(d, "overlap.titles"), encoding="utf-8").read().splitlines()
assert t == ["|A∩B| / |A|, all layers (random: 0.05)", "Jaccard, all layers (random: 0.0256)"], t
gp = open(os.path.join(d, "overlap.gp"), encoding="utf-8").read()
assert "cbmin = 0.038961039\n" in gp and "cbmax = 0.3\n" in gp and 'style = "%.2f"\n' in gp, "overlap colour range"
# a logarithmic colour scale (asinh, linear within 0.01): small overlaps are not washed out by large ones
assert "symlog = 0.01\n" in gp, "overlap: a symmetric logarithmic colour scale"
# ability: one panel per ability, x = layer (>= 0 only)
rows = open(os.path.join(d, "ability_scores-1-code-6-of-18-documents.csv"), encoding="utf-8").read().splitlines()
assert rows[0] == ("layer,best neuron,99.5th percentile (top 0.5 % of neurons),mean over neurons,best neuron (shuffled labels),"
                   "random baseline"), rows[0]
assert len(rows) == 5 and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"], rows
same([float(v) for v in rows[1].split(",")], [0, 0.45, 0.35, 0.34, 0.42, 6 / 18], "code layer 0")
rows = open(os.path.join(d, "ability_depth-1-global-top-set-best-5-of-all-recorded-neurons.csv"), encoding="utf-8").read().splitlines()
assert rows[0] == "layer,code,math,prose", rows[0]
same([float(v) for v in rows[4].split(",")], [3, 6 / 18, 6 / 24, 6 / 30], "depth layer 3")
gp = open(os.path.join(d, "ability_scores.gp"), encoding="utf-8").read()
# one legend and one y range (covering 0..1, the data 0.34..0.79) for all panels; the y label names the run's method
for line in ("sharedkey = 1", 'ylabel = "average precision (AP)"', "yfloor = 0.0", "yceil = 1.0", "ymin = 0.333333333",
             "ymax = 0.79", "array soff[3] = [0, 5, 10]", "array sidx[15] = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]"):
    assert line + "\n" in gp, line
gp = open(os.path.join(d, "ability_depth.gp"), encoding="utf-8").read()
assert 'key = "outside right top vertical"\n' in gp and "sharedkey = 0\n" in gp, "ability_depth legend placement"
assert "\nkey = " not in open(os.path.join(d, "sparsity_cdf_value.gp"), encoding="utf-8").read(), "a figure without a key setting got one"
# byte for byte as the report has always written them (number format %.9g, NaN, names as given)
exact = {
    "prune_matrix-3-ability-random-percentage-points.csv": "evaluated on,code,math,prose,all\ncode,34,0.9,-1.6,11.3\n"
        "math,0.3,28.6,-0.3,9.2\nprose,-0.9,NaN,17.5,4.9\n",
    "overlap-2-jaccard-all-layers-random-0-0256.csv": "B (column ability); A = row ability,code,math,prose\n"
        "code,NaN,0.176470588,0.038961039\nmath,0.176470588,NaN,0.0666666667\nprose,0.038961039,0.0666666667,NaN\n",
    "ability_depth-1-global-top-set-best-5-of-all-recorded-neurons.csv": "layer,code,math,prose\n0,0.166666667,0.25,0.3\n"
        "1,0.222222222,0.25,0.266666667\n2,0.277777778,0.25,0.233333333\n3,0.333333333,0.25,0.2\n",
}
for name, want in exact.items():
    got = open(os.path.join(d, name), encoding="utf-8").read()
    assert got == want, (name, got)
print("heatmap and ability CSVs hold the expected values")
PY
ok $? "heatmap CSVs (prune matrix, overlap) and ability CSVs hold the expected rows, columns and values, byte for byte"
$py - "$tmp/rep" "$tmp/r.db" > "$tmp/why" 2>&1 <<'PY'
import glob, math, os, re, sqlite3, sys
d, db = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db)
run = con.execute("SELECT MAX(id) FROM runs WHERE kind = 'perturb' AND status = 'complete'").fetchone()[0]
names = {"value": "lowest value |a_i|", "norm": "lowest output norm", "random": "random neurons (control)"}
labels = [l for (l,) in con.execute("SELECT DISTINCT label FROM perturb WHERE run_id = ? ORDER BY label <> '', label", (run,))]
t = open(os.path.join(d, "perturbation.titles"), encoding="utf-8").read().splitlines()
assert t == ["all documents" if l == "" else l for l in labels], t
n = 0
for p, lab in enumerate(labels):
    f = glob.glob(os.path.join(d, f"perturbation-{p + 1}-*.csv"))
    assert len(f) == 1, f
    rows = [r.split(",") for r in open(f[0], encoding="utf-8").read().splitlines()]
    assert rows[0] == ["fraction of neurons masked per token and layer"] + [names[m] for m in ("value", "norm", "random")], rows[0]
    for metric, ratio, ppl in con.execute("SELECT metric, ratio, ppl FROM perturb WHERE run_id = ? AND label = ?", (run, lab)):
        ppl0 = con.execute("SELECT ppl FROM perturb WHERE run_id = ? AND label = ? AND metric = ? AND ratio = 0",
                           (run, lab, metric)).fetchone()[0]
        want = 100.0 * (ppl - ppl0) / ppl0   # the relative change, recomputed from the database rows
        got = [float(r[1 + ("value", "norm", "random").index(metric)]) for r in rows[1:] if float(r[0]) == ratio]
        assert len(got) == 1 and abs(got[0] - want) <= 1e-6 * max(1, abs(want)), (lab, metric, ratio, got, want)
        assert ratio > 0 or got[0] == 0, (lab, metric, "the unmasked model is no change")
        n += 1
assert n == 4 * 3 * len(labels), n
gp = open(os.path.join(d, "perturbation.gp"), encoding="utf-8").read()
assert "symlog = 0.1\n" in gp and 'ylabel = "perplexity change vs. unmasked model (%)"\n' in gp, "perturbation axis"
print(f"{n} perturbation values are the relative perplexity change of the database rows")
PY
ok $? "perturbation CSVs hold 100 x (ppl - ppl at ratio 0) / ppl at ratio 0 per label and metric, recomputed from the database"
# without the unmasked rows (ratio 0) there is no baseline: the figure says so instead of drawing
cp "$tmp/r.db" "$tmp/nobase.db" && sqlite3 "$tmp/nobase.db" "DELETE FROM perturb WHERE ratio = 0" > "$tmp/why" 2>&1 \
  && "$nl" report --db "$tmp/nobase.db" -o "$tmp/nobase" > /dev/null 2>> "$tmp/why" \
  && sed -n '/<figure id="perturbation">/,/<\/figure>/p' "$tmp/nobase/index.html" | grep -q 'Not drawn: none of the run' \
  && [ ! -e "$tmp/nobase/perturbation.png" ]
ok $? "a perturb run without ratio 0 has no baseline: the perturbation figure is listed as not drawn"
(cd "$tmp/rep" && gnuplot perturbation.gp && gnuplot prune_matrix.gp && gnuplot overlap.gp) > "$tmp/why" 2>&1
ok $? "a figure's gnuplot script redraws it in place (lines and heatmaps)"

# bad input: one line naming the file, exit 1
expect() {
  local name=$1 pat=$2; shift 2
  "$nl" "$@" > /dev/null 2> "$tmp/err"
  local rc=$? lines; lines=$(wc -l < "$tmp/err")
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/err"; then echo "PASS $name"; else echo "FAIL $name: exit $rc, $lines lines:"; sed 's/^/    /' "$tmp/err" | head -5; fi
}
expect "report on a missing database" "cannot open '$tmp/none.db'" report --db "$tmp/none.db" -o "$tmp/x"
printf 'not a database, just text that is long enough to look like a header......................................' > "$tmp/junk.db"
expect "report on a file that is not a database" "'$tmp/junk.db' is not an SQLite database" report --db "$tmp/junk.db" -o "$tmp/x"
$py -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('create table t(x)')" "$tmp/other.db"
expect "report on another program's database" "'$tmp/other.db' is not a neuronlab results database" report --db "$tmp/other.db" -o "$tmp/x"
expect "report without gnuplot" "cannot run '/nonexistent/gnuplot'" report --db "$tmp/r.db" -o "$tmp/y" --gnuplot /nonexistent/gnuplot
expect "report into an unwritable directory" "cannot create '/nonexistent/dir/rep'" report --db "$tmp/r.db" -o /nonexistent/dir/rep
exit 0
