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
# the expert figures: a real experts run and prune --experts all on the mixtral fixture (2 MoE layers, 8 experts, top-2)
mx=tests/fixtures/hf/mixtral
{ "$nl" experts $mx "$tmp/d.jsonl" --db "$tmp/r.db" --quiet && "$nl" prune $mx "$tmp/d.jsonl" --db "$tmp/r.db" --experts all --seeds 2 --quiet
} > /dev/null 2> "$tmp/why"
ok $? "experts and prune --experts all on mixtral for the expert figures"
# the logit lens figures and the attention heatmap: a lens run and a record --attn run
{ "$nl" lens $fx "$tmp/d.jsonl" --db "$tmp/r.db" --quiet && "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/at.h5" --attn 1 --db "$tmp/r.db" --quiet
} > /dev/null 2> "$tmp/why"
ok $? "lens and record --attn for the lens and attention figures"
"$nl" report --db "$tmp/r.db" -o "$tmp/rep" > "$tmp/out" 2> "$tmp/why"
rc=$?
cat "$tmp/out" >> "$tmp/why"
grep -q '(22 figures drawn, 0 without data)' "$tmp/out"
ok $(( rc | $? )) "report with every analysis exits 0 and draws all 22 figures (every gnuplot call exited 0)"
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

# the expert figures (figures_experts.c) from the real mixtral runs: every cell recomputed from the
# database another way (load from token counts, co-selection from the pair counts, the random
# control's mean and sd with numpy), the layer the one-layer figures show chosen by its label
# spread, the PNGs real pictures (not a blank canvas)
$py - "$tmp/rep" "$tmp/r.db" > "$tmp/why" 2>&1 <<'PY'
import glob, math, os, sqlite3, sys
import numpy as np
d, con = sys.argv[1], sqlite3.connect(sys.argv[2])
q = lambda sql, *a: con.execute(sql, a).fetchall()
run = q("SELECT MAX(id) FROM runs WHERE kind = 'experts' AND status = 'complete'")[0][0]
def matrix(f):
    rows = [r.split(",") for r in open(f, encoding="utf-8").read().splitlines()]
    return rows[0][1:], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])
def close(a, b, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=1e-6), (what, a, b)
layers = [l for (l,) in q("SELECT DISTINCT layer FROM expert_load WHERE run_id = ? AND expert >= 0 ORDER BY layer", run)]
E = q("SELECT COUNT(*) FROM expert_load WHERE run_id = ? AND layer = ? AND label = '*' AND expert >= 0", run, layers[0])[0][0]
labels = [l for (l,) in q("SELECT DISTINCT label FROM expert_routing WHERE run_id = ? AND label <> '*' ORDER BY label", run)]
assert layers == [0, 1] and E == 8 and labels == ["code", "math", "prose"], (layers, E, labels)
tok = {(l, e, lab): t for l, e, lab, t in q("SELECT layer, expert, label, tokens FROM expert_load WHERE run_id = ?", run)}
ntok = {(l, lab): t for l, lab, t in q("SELECT layer, label, tokens FROM expert_routing WHERE run_id = ?", run)}
# load by ability: one panel per layer (2 MoE layers), rows = labels then all tokens, 100 x tokens / the label's tokens
for p, l in enumerate(layers):
    h, rows, m = matrix(os.path.join(d, f"expert_load-{p + 1}-layer-{l}.csv"))
    assert h == [str(e) for e in range(E)] and rows == labels + ["all tokens"], (h, rows)
    close(m, [[100.0 * tok[(l, e, lab)] / ntok[(l, lab)] for e in range(E)] for lab in labels + ["*"]], f"load layer {l}")
    assert abs(m[-1].sum() - 200.0) < 1e-6, "top-2: the all-token row sums to 200 %"
# load across layers: 100 x (share / (k/E) - 1), k from the token counts
h, rows, m = matrix(glob.glob(os.path.join(d, "expert_load_layers-1-*.csv"))[0])
want = []
for l in layers:
    k = sum(tok[(l, e, "*")] for e in range(E)) / ntok[(l, "*")]
    want.append([100.0 * (tok[(l, e, "*")] / ntok[(l, "*")] / (k / E) - 1) for e in range(E)])
close(m, want, "load across layers"); assert rows == ["layer 0", "layer 1"], rows
# the layer of the co-selection figure: the largest mean squared difference of the labels' load from all tokens'
spread = {l: np.mean([(tok[(l, e, lab)] / ntok[(l, lab)] - tok[(l, e, "*")] / ntok[(l, "*")]) ** 2 for lab in labels for e in range(E)]) for l in layers}
L = max(layers, key=lambda l: (spread[l], -l))
f = glob.glob(os.path.join(d, "expert_coselect-1-*.csv")); assert len(f) == 1, f
assert os.path.basename(f[0]).startswith(f"expert_coselect-1-layer-{L}-of-2-moe-layers"), (f, spread)
pair = {(a, b): t for a, b, t in q("SELECT expert_a, expert_b, tokens FROM expert_coselect WHERE run_id = ? AND layer = ?", run, L)}
h, rows, m = matrix(f[0])
want = [[math.nan if a == b else 100.0 * pair.get((min(a, b), max(a, b)), 0) / pair[(a, a)] for b in range(E)] for a in range(E)]
close(m, want, "co-selection"); assert abs(np.nansum(m[0]) - 100.0) < 1e-6, "top-2: a row sums to 100 %"
# routing: entropy / ln E and the margin per label and layer
for p, col in ((1, "entropy / entropy_max"), (2, "margin")):
    rows = [r.split(",") for r in open(glob.glob(os.path.join(d, f"expert_routing-{p}-*.csv"))[0], encoding="utf-8").read().splitlines()]
    assert rows[0] == ["layer", "all tokens"] + labels, rows[0]
    got = np.array([[float(v) for v in r] for r in rows[1:]])
    close(got, [[l] + [q(f"SELECT {col} FROM expert_routing WHERE run_id = ? AND layer = ? AND label = ?", run, l, lab)[0][0]
                       for lab in ["*"] + labels] for l in layers], f"routing {col}")
# prune --experts all: rows layer · expert in numeric order, random control = numpy mean and sd (ddof 1) over the seeds
pr = q("SELECT MAX(id) FROM runs WHERE kind = 'prune_experts' AND status = 'complete'")[0][0]
names = [f"{l}:{e}" for l in layers for e in range(E)]
cols = labels + [""]
h, rows, m1 = matrix(glob.glob(os.path.join(d, "expert_prune-1-*.csv"))[0])
assert rows == [f"layer {l} · expert {e}" for l in layers for e in range(E)] and h == labels + ["all"], (rows, h)
rel = lambda n, c, ctl: [r for (r,) in q("SELECT rel_change FROM expert_prune WHERE run_id = ? AND removed = ? AND label = ? AND control = ?"
                                          " ORDER BY seed", pr, n, c, ctl)]
close(m1, [[100 * rel(n, c, "expert")[0] for c in cols] for n in names], "expert removed")
h, rows, m2 = matrix(glob.glob(os.path.join(d, "expert_prune-2-*-seeds.csv"))[0])
close(m2, [[100 * np.mean(rel(n, c, "random")) for c in cols] for n in names], "random mean")
h, rows, s2 = matrix(glob.glob(os.path.join(d, "expert_prune-2-*-spread.csv"))[0])
close(s2, [[100 * np.std(rel(n, c, "random"), ddof=1) for c in cols] for n in names], "random sd")
h, rows, m3 = matrix(glob.glob(os.path.join(d, "expert_prune-3-*.csv"))[0])
close(m3, m1 - m2, "difference")
# real pictures: a PNG of a blank or near-blank canvas compresses to a few kB
for name in ("expert_load", "expert_load_layers", "expert_routing", "expert_coselect", "expert_prune"):
    assert os.path.getsize(os.path.join(d, name + ".png")) > 15000, (name, os.path.getsize(os.path.join(d, name + ".png")))
print(f"expert figures: layer {L} chosen (spread {spread}), every cell recomputed")
PY
ok $? "expert figures (mixtral): load, load across layers, co-selection of the layer whose labels differ most, routing, expert removal with its random control (mean, sd) recomputed from the database"
# a larger model (synthetic rows in the real tables): 30 MoE layers x 64 experts, top-4, layer 17 label-specific;
# 100 removals. The label x expert load shows layer 17 alone, so does the co-selection (64 x 64, coloured only:
# no numbers), the removals the 48 largest; every gnuplot call exits 0
cp "$tmp/r.db" "$tmp/big.db"
$py - "$tmp/big.db" > "$tmp/why" 2>&1 <<'PY' && "$nl" report --db "$tmp/big.db" -o "$tmp/big" > /dev/null 2>> "$tmp/why" &&
import json, math, random, sqlite3, sys
con, rnd, L, E, k, hot = sqlite3.connect(sys.argv[1]), random.Random(3), 30, 64, 4, 17
def run(kind):
    return con.execute("INSERT INTO runs(kind, model, dataset, source, params, tool_version, started_at, ended_at, status) VALUES"
                       " (?, 'synthetic', 'd.jsonl', '', '{}', 'test', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 'complete')", (kind,)).lastrowid
r, labels, T = run("experts"), ["code", "math", "prose"], 300
for l in range(L):
    tot = [0] * E
    for li, lab in enumerate(labels):
        w = [(1.0 + 0.3 * rnd.random()) * (6.0 if l == hot and e % 3 == li else 1.0) for e in range(E)]
        for e in range(E):
            t = round(k * T * w[e] / sum(w)); tot[e] += t
            con.execute("INSERT INTO expert_load VALUES (?,?,?,?,?,?,?,?)", (r, l, e, lab, t, t / T, t * 0.5, 1.0 / E))
    for e in range(E):
        con.execute("INSERT INTO expert_load VALUES (?,?,?,?,?,?,?,?)", (r, l, e, "*", tot[e], tot[e] / (3 * T), tot[e] * 0.5, 1.0 / E))
    for lab in labels + ["*"]:
        con.execute("INSERT INTO expert_routing VALUES (?,?,?,?,?,?,?)", (r, l, lab, T, 0.5 * math.log(E), math.log(E), 0.4))
    for a in range(E):
        for b in range(a, E):
            con.execute("INSERT INTO expert_coselect VALUES (?,?,?,?,?)", (r, l, a, b, tot[a] if a == b else rnd.randrange(1, 8)))
p = run("prune_experts")
for i in range(-1, 100):
    for lab in labels + [""]:
        name, ctl = ("", "none") if i < 0 else (f"{i // E}:{i % E}", "expert")
        con.execute("INSERT INTO expert_prune VALUES (?,?,?,-1,?,1,100,5.0,150.0,?)", (p, name, ctl, lab, 0.0 if i < 0 else 0.001 * i))
        for s in range(2 if i >= 0 else 0):
            con.execute("INSERT INTO expert_prune VALUES (?,?,'random',?,?,1,100,5.0,149.0,?)", (p, name, s, lab, 0.01 * (s + 1)))
con.commit()
PY
  [ "$(cat "$tmp/big/expert_load.titles")" = "layer 17: of the 30 MoE layers, the one whose labels differ most" ] &&
  [ "$(cat "$tmp/big/expert_coselect.titles")" = "layer 17 (of 30 MoE layers: the one whose labels differ most)" ] &&
  [ "$(head -1 "$tmp/big/expert_prune.titles")" = "expert removed (the 48 of 100 removals with the largest effect on all documents)" ] &&
  [ "$(tail -n +2 "$tmp"/big/expert_prune-1-*.csv | wc -l)" -eq 48 ] && [ "$(head -2 "$tmp"/big/expert_prune-1-*.csv | tail -1 | cut -d, -f1)" = "layer 0 · expert 52" ] &&
  [ "$(tail -n +2 "$tmp"/big/expert_load_layers-1-*.csv | wc -l)" -eq 30 ] && [ "$(tail -n +2 "$tmp"/big/expert_coselect-1-*.csv | wc -l)" -eq 64 ] &&
  grep -q '^annot = (maxc <= 32)' "$tmp/big/expert_coselect.gp" && [ -s "$tmp/big/expert_coselect.png" ] && [ -s "$tmp/big/expert_load_layers.pdf" ]
ok $? "30 MoE layers x 64 experts: the load and co-selection figures show the layer whose labels differ most (17), 30 x 64 overview, 48 of 100 removals"

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
