#!/usr/bin/env bash
# prune_cli.sh — `prune` end to end: record --pool → ability → prune.
#   Fixture model tests/fixtures/hf/llama (always): one complete run with the documented rows
#   (base rel_change 0, each ability's neuron count = its ability_top rows, random passes shared
#   by abilities with equal counts, control statistics over the seeds), --json agrees with the
#   database, --abilities / --seeds / --top change what they should, Ctrl-C keeps whole passes
#   (exit 130, run 'interrupted'), and bad input is a one-line error: --scores naming a
#   non-ability or missing run or `latest` without an ability run, scores from another model (same shapes, other weights; other
#   shapes), an ability without documents in DATA, and usage errors (exit 2) for --top 0,
#   --top 1.5, --seeds 0, --scores last, a missing --db or --scores, an empty --abilities name.
#   stories260K (../shared, skipped when absent), documents labelled a, b, c by index mod 3:
#   --threads 1 and --threads 2 prune the same neurons with the same counts and agree to 1e-5
#   (the forward pass itself sums in another order on 2 threads: ppl differs by ~4e-7), and
#   pinned values of the --threads 1 run.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$(realpath "${NL_BUILD:-build}/neuronlab")
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_prune.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=passive
model=tests/fixtures/hf/llama

if ! $py -c 'import sqlite3' 2>/dev/null; then echo "SKIP prune CLI checks: /usr/bin/python3 has no sqlite3"; exit 0; fi

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }

# Fixture datasets (vocab 256): 24 documents of 48 tokens labelled code, math, '', prose in turn;
# 1000 of 128 tokens (for Ctrl-C); the small set without 'prose'.
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(5)
labels = ["code", "math", "", "prose"]
with open(sys.argv[1] + "/small.jsonl", "w") as f, open(sys.argv[1] + "/noprose.jsonl", "w") as g:
    for d in range(24):
        row = json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(47)], "label": labels[d % 4]}) + "\n"
        f.write(row)
        if labels[d % 4] != "prose": g.write(row)
with open(sys.argv[1] + "/big.jsonl", "w") as f:
    for d in range(1000):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(127)], "label": labels[d % 4]}) + "\n")
PY

db=$tmp/r.db
# run 1: record (registered), run 2: ability, run 3: ability --top 0.1 --global
if "$nl" record $model "$tmp/small.jsonl" -o "$tmp/a.h5" --pool --db "$db" --threads 1 > /dev/null 2>"$tmp/err" &&
   "$nl" ability "$tmp/a.h5" --db "$db" --threads 1 > /dev/null 2>>"$tmp/err" &&
   "$nl" ability "$tmp/a.h5" --db "$db" --top 0.1 --global --threads 1 > /dev/null 2>>"$tmp/err"; then
  pass "record --pool and two ability runs on the fixture model"
else fail "record / ability on the fixture model" "$tmp/err"; exit 0; fi

# 1. One complete run (run 4) with the documented rows; --json agrees with the database.
if "$nl" prune $model "$tmp/small.jsonl" --db "$db" --scores 2 --threads 1 --json > "$tmp/p.json" 2>"$tmp/err"; then
  $py - "$db" "$tmp/p.json" "$tmp/small.jsonl" > "$tmp/check" 2>&1 <<'PY' && pass "prune --db: one complete run, documented rows, random passes shared, --json agrees" || fail "prune rows" "$tmp/check"
import json, math, os, sqlite3, statistics, sys
c = sqlite3.connect(sys.argv[1])
run = c.execute("SELECT id, kind, status, model, dataset, source, params FROM runs WHERE id = 4").fetchone()
assert run[1:5] == ("prune", "complete", os.path.realpath("tests/fixtures/hf/llama"), os.path.realpath(sys.argv[3])), run  # canonical paths
assert run[5] == c.execute("SELECT source FROM runs WHERE id = 2").fetchone()[0], run
p = json.loads(run[6])
assert p == {"scores_run": 2, "method": "ap", "symmetric": False, "top": 0.05, "scope": "layer", "seeds": 3, "abilities": ["code", "math", "prose"],
             "ctx": 128, "stride": 64, "batch": 512, "eval": "selection", "eval_docs": 24}, p
cols = [r[1] for r in c.execute("PRAGMA table_info(prune_effect)")]
assert cols == ["run_id", "pruned", "control", "seed", "label", "neurons", "tokens", "nll", "ppl", "rel_change"], cols
cols = [r[1] for r in c.execute("PRAGMA table_info(prune_control)")]
assert cols == ["run_id", "pruned", "label", "seeds", "mean", "sd", "min", "max"], cols
rows = c.execute("SELECT pruned, control, seed, label, neurons, tokens, nll, ppl, rel_change FROM prune_effect WHERE run_id = 4").fetchall()
labels = ["", "code", "math", "prose"]
assert len(rows) == 4 + 3 * 4 + 3 * 3 * 4, len(rows)
base = {r[3]: r for r in rows if r[1] == "none"}
assert sorted(base) == labels and all(r[0] == "" and r[2] == -1 and r[4] == 0 and r[8] == 0.0 for r in base.values()), base
top = dict(c.execute("SELECT ability, count(*) FROM ability_top WHERE run_id = 2 GROUP BY ability"))
assert top == {"code": 12, "math": 12, "prose": 12}, top  # floor(0.05 x 128) = 6 per layer, 2 layers
for r in rows:
    assert r[5] == (24 * 47 if r[3] == "" else 6 * 47), r
    assert abs(math.exp(r[6]) - r[7]) < 1e-9 * r[7], r
    assert abs(r[8] - (r[7] - base[r[3]][7]) / base[r[3]][7]) < 1e-12, r
    if r[1] != "none": assert r[4] == top[r[0]] and (r[2] == -1) == (r[1] == "ability"), r
assert {r[2] for r in rows if r[1] == "random"} == {0, 1, 2}
# per-layer scope: equal counts, so the abilities share their random passes
rnd = {}
for r in rows:
    if r[1] == "random": rnd.setdefault((r[2], r[3]), set()).add(r[7])
assert all(len(v) == 1 for v in rnd.values()), rnd
assert len({v.pop() for k, v in rnd.items() if k[1] == ""}) == 3, "three seeds, three different sets"
ctl = c.execute("SELECT pruned, label, seeds, mean, sd, min, max FROM prune_control WHERE run_id = 4").fetchall()
assert len(ctl) == 3 * 4, ctl
for a, lab, n, mean, sd, lo, hi in ctl:
    v = [r[8] for r in rows if r[0] == a and r[1] == "random" and r[3] == lab]
    assert n == 3 and len(v) == 3 and abs(mean - statistics.mean(v)) < 1e-12 and abs(sd - statistics.stdev(v)) < 1e-12, (a, lab)
    assert lo == min(v) and hi == max(v)
got = json.load(open(sys.argv[2]))
assert got["run_id"] == 4 and got["status"] == "complete" and got["labels"] == ["code", "math", "prose", ""], got["labels"]
db = {(r[0], r[1], r[2], r[3]): r for r in rows}
for lab, s in got["base"].items(): assert abs(s["ppl"] - db[("", "none", -1, lab)][7]) < 1e-6 * s["ppl"]
for row in got["rows"]:
    for lab, s in row["effect"].items():
        assert abs(s["rel_change"] - db[(row["pruned"], "ability", -1, lab)][8]) < 1e-6, (row["pruned"], lab)
    for lab, s in row["random"].items():
        want = [db[(row["pruned"], "random", k, lab)][8] for k in range(3)]
        assert s["seeds"] == 3 and all(abs(x - y) < 1e-6 for x, y in zip(s["rel_change"], want)), (row["pruned"], lab)
    d = row["pruned"]
    assert abs(row["diagonal"] - db[(d, "ability", -1, d)][8]) < 1e-6
    off = [db[(d, "ability", -1, l)][8] for l in ("code", "math", "prose") if l != d]
    assert abs(row["off_diagonal_mean"] - sum(off) / 2) < 1e-6, row
    assert abs(row["random_mean"] - statistics.mean(db[(d, "random", k, d)][8] for k in range(3))) < 1e-6
print("ok")
PY
else fail "prune --db exited non-zero" "$tmp/err"; fi

# The text output: the matrix, the random control and one line per row.
"$nl" prune $model "$tmp/small.jsonl" --db "$db" --scores 2 --threads 1 > "$tmp/table" 2>"$tmp/err"
if grep -q '^pruned neurons  *code  *math  *prose  *all$' "$tmp/table" && grep -q '^random control: ' "$tmp/table" &&
   [ "$(grep -c '^prose  *12 ' "$tmp/table")" = 2 ] && grep -q "^math  *on 'math' [+-][0-9.]*, on the other labels (mean) [+-][0-9.]*, random sets on 'math' [+-][0-9.]* ± [0-9.]*$" "$tmp/table" &&
   grep -q "^wrote run 5 to '$db': 7 passes, 3 pruned abilities x 4 labels$" "$tmp/err"; then
  pass "prune prints the matrix, the random control and a line per pruned ability"
else cat "$tmp/err" >> "$tmp/table"; fail "prune text output" "$tmp/table"; fi

# 2. --abilities, --seeds 1 (sd 0), --top 0.1 (re-chosen: 12 per layer), a global-scope run.
if "$nl" prune $model "$tmp/small.jsonl" --db "$db" --scores 2 --abilities prose,code --seeds 1 --top 0.1 --threads 1 > /dev/null 2>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$db" --scores latest --seeds 2 --threads 1 > /dev/null 2>>"$tmp/err"; then
  $py - "$db" > "$tmp/check" 2>&1 <<'PY' && pass "prune --abilities --seeds 1 --top 0.1; --scores latest; a global-scope run groups abilities by their count vectors" || fail "prune options" "$tmp/check"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
p = json.loads(c.execute("SELECT params FROM runs WHERE id = 6").fetchone()[0])
assert p["abilities"] == ["prose", "code"] and p["seeds"] == 1 and p["top"] == 0.1, p
n = dict(c.execute("SELECT pruned, neurons FROM prune_effect WHERE run_id = 6 AND control = 'ability' AND label = ''"))
assert n == {"prose": 24, "code": 24}, n  # floor(0.1 x 128) = 12 per layer
assert c.execute("SELECT count(*) FROM prune_control WHERE run_id = 6 AND seeds = 1 AND sd = 0").fetchone()[0] == 2 * 4
p = json.loads(c.execute("SELECT params FROM runs WHERE id = 7").fetchone()[0])
assert p["scores_run"] == 3 and p["scope"] == "global" and p["top"] == 0.1, p  # latest = run 3
n = dict(c.execute("SELECT pruned, neurons FROM prune_effect WHERE run_id = 7 AND control = 'ability' AND label = ''"))
assert n == {"code": 25, "math": 25, "prose": 25}, n  # floor(0.1 x 2 x 128) over both layers
depth = {}
for a, l, k in c.execute("SELECT ability, layer, count(*) FROM ability_top WHERE run_id = 3 GROUP BY ability, layer"):
    depth.setdefault(a, {})[l] = k
groups = {}
for a in depth: groups.setdefault(tuple(depth[a].get(l, 0) for l in (0, 1)), []).append(a)
r = c.execute("SELECT count(DISTINCT ppl) FROM prune_effect WHERE run_id = 7 AND control = 'random' AND label = ''").fetchone()[0]
assert r == 2 * len(groups), (r, groups)  # one random pass per seed and count vector
print("ok")
PY
else fail "prune with options exited non-zero" "$tmp/err"; fi

# 3. Ctrl-C: exit 130, run 'interrupted', whole passes kept.
"$nl" prune $model "$tmp/big.jsonl" --db "$db" --scores 2 --seeds 20 --threads 1 > "$tmp/int.out" 2>"$tmp/int.err" &
pid=$!
$py - "$db" <<'PY'
import sqlite3, sys, time
t0 = time.time()
while time.time() - t0 < 120:  # wait for the first committed pass of run 8
    try:
        if sqlite3.connect(sys.argv[1], timeout=5).execute("SELECT count(*) FROM prune_effect WHERE run_id = 8").fetchone()[0] > 0: break
    except sqlite3.Error: pass
    time.sleep(0.1)
PY
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
$py - "$db" $rc > "$tmp/check" 2>&1 <<'PY' && pass "Ctrl-C during prune: exit 130, run interrupted, finished passes kept whole" || { fail "Ctrl-C during prune (exit $rc)" "$tmp/check"; sed 's/^/  | /' "$tmp/int.err"; }
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rc = int(sys.argv[2])
st = c.execute("SELECT status, message, ended_at FROM runs WHERE id = 8").fetchone()
per = c.execute("SELECT pruned, control, seed, count(*) FROM prune_effect WHERE run_id = 8 GROUP BY 1, 2, 3").fetchall()
print(f"exit {rc}, run {st}, passes {per}")
assert rc == 130 and st[0] == "interrupted" and st[1] == "interrupted by the user" and st[2]
assert ("", "none", -1, 4) in per and all(p[3] == 4 for p in per), per  # '' + code, math, prose
assert len(per) < 1 + 3 + 3 * 20, per
PY
grep -q "^neuronlab: interrupted: '$db' keeps [0-9]* of 24 passes (run 8 marked interrupted)$" "$tmp/int.err" &&
  pass "Ctrl-C during prune says what was kept" || fail "Ctrl-C message" "$tmp/int.err"

# 4. Bad input: one line on stderr, nothing on stdout, exit 1 (errors) or 2 (usage).
bad() { # want-exit, expected text, args…
  local want=$1 text=$2; shift 2
  "$nl" prune "$@" > "$tmp/out" 2>"$tmp/e.err"; local rc=$?
  local lines=1; [ "$want" = 2 ] && lines=2 # usage errors add the usage line
  if [ $rc = "$want" ] && [ "$(wc -l < "$tmp/e.err")" = $lines ] && grep -qF -- "$text" "$tmp/e.err" && [ ! -s "$tmp/out" ]; then
    pass "prune $(echo "$*" | sed "s|$tmp/||g; s|tests/fixtures/hf/||g; s|../shared/models/||g"): exit $want ($(head -1 "$tmp/e.err"))"
  else echo "exit $rc" >> "$tmp/e.err"; fail "prune $*" "$tmp/e.err"; fi
}
bad 1 "run 1 of '$db' is a 'record' run, not an ability run" $model "$tmp/small.jsonl" --db "$db" --scores 1
bad 1 "run 4 of '$db' is a 'prune' run, not an ability run" $model "$tmp/small.jsonl" --db "$db" --scores 4
bad 1 "no run 99 in '$db'" $model "$tmp/small.jsonl" --db "$db" --scores 99
bad 1 "scores run 2 ('$tmp/a.h5') is from another model than 'tests/fixtures/hf/llama3_rope': layer 0 W_out norms differ" \
  tests/fixtures/hf/llama3_rope "$tmp/small.jsonl" --db "$db" --scores 2
bad 1 "'$tmp/noprose.jsonl' has no documents labelled 'prose' (an ability of scores run 2)" $model "$tmp/noprose.jsonl" --db "$db" --scores 2
bad 1 "scores run 2 has no ability 'poetry' (its abilities: code, math, prose)" $model "$tmp/small.jsonl" --db "$db" --scores 2 --abilities code,poetry
bad 1 "'$tmp/empty.db' has no complete ability run" $model "$tmp/small.jsonl" --db "$tmp/empty.db" --scores latest
bad 2 "--scores needs the id of an ability run (or latest)" $model "$tmp/small.jsonl" --db "$db" --scores last
bad 2 "--top: '0' is not a fraction in (0, 1]" $model "$tmp/small.jsonl" --db "$db" --scores 2 --top 0
bad 2 "--top: '1.5' is not a fraction in (0, 1]" $model "$tmp/small.jsonl" --db "$db" --scores 2 --top 1.5
bad 2 "--seeds needs a number of random sets, at least 1" $model "$tmp/small.jsonl" --db "$db" --scores 2 --seeds 0
bad 2 "--db is required" $model "$tmp/small.jsonl" --scores 2
bad 2 "--scores (the id of an ability run) or --neurons FILE is required" $model "$tmp/small.jsonl" --db "$db"
bad 2 "--scores and --neurons exclude each other" $model "$tmp/small.jsonl" --db "$db" --scores 2 --neurons x.csv
bad 2 "--abilities needs a list" $model "$tmp/small.jsonl" --db "$db" --scores 2 --abilities code,,math
n=$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM runs').fetchone()[0])" "$db")
[ "$n" = 8 ] && pass "refused prune commands start no run" || fail "refused prune commands started runs ($n runs)"

# 4b. Held-out evaluation: ability --split 0.5 selects on half of each label's documents; prune
# then scores only the other half: its base perplexity equals `ppl` on a JSONL of exactly the
# held-out lines (from ability_docs), and the params and --json say "heldout".
hdb=$tmp/h.db
if "$nl" ability "$tmp/a.h5" --db "$hdb" --split 0.5 --threads 1 > "$tmp/h.out" 2>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --scores latest --seeds 1 --threads 1 --json > "$tmp/h.json" 2>>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --scores 1 --seeds 1 --threads 1 > "$tmp/h.txt" 2>>"$tmp/err"; then
  $py - "$hdb" "$tmp/h.json" "$tmp/small.jsonl" "$tmp/held.jsonl" > "$tmp/check" 2>&1 <<'PY' || fail "held-out split" "$tmp/check"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); js = json.load(open(sys.argv[2]))
lines = open(sys.argv[3]).read().splitlines()
docs = c.execute("SELECT doc, label, half FROM ability_docs WHERE run_id = 1 ORDER BY doc").fetchall()
assert [d for d, _, _ in docs] == list(range(24)), docs
for lab in ("code", "math", "prose"):
    halves = [h for _, l, h in docs if l == lab]
    assert halves.count("select") == 3 and halves.count("heldout") == 3, (lab, halves)  # 6 documents each: 3 + 3
assert all(h == "none" for _, l, h in docs if l == ""), docs
held = [d for d, _, h in docs if h == "heldout"]
p = json.loads(c.execute("SELECT params FROM runs WHERE id = 2").fetchone()[0])
assert p["eval"] == "heldout" and p["eval_docs"] == 9, p
assert js["eval"] == "heldout" and js["eval_docs"] == 9, js
ap = json.loads(c.execute("SELECT params FROM runs WHERE id = 1").fetchone()[0])
assert ap["split"] == 0.5 and ap["heldout_docs"] == 9 and ap["docs"] == 9, ap
assert c.execute("SELECT docs FROM ability_label WHERE run_id = 1 LIMIT 1").fetchone()[0] == 9
open(sys.argv[4], "w").write("".join(lines[d] + "\n" for d in held))
print(json.dumps(js["base"][""]["ppl"]))
PY
  want=$(tail -1 "$tmp/check")
  "$nl" ppl $model "$tmp/held.jsonl" --threads 1 --json > "$tmp/ppl.json" 2>>"$tmp/err"
  if $py -c "import json,sys; a=float(sys.argv[1]); b=json.load(open(sys.argv[2]))['ppl']; assert abs(a-b) <= 1e-6*b, (a,b)" "$want" "$tmp/ppl.json" 2>"$tmp/check" &&
     grep -q "^eval on  held out: the 9 documents of '$tmp/small.jsonl' that scores run 1 did not select on" "$tmp/h.txt" &&
     grep -q "^split: neurons selected on 9 documents (fraction 0.5 of each label, seed 0); 9 held out" "$tmp/h.out"; then
    pass "ability --split 0.5 + prune: evaluated on the 9 held-out documents only (base ppl = ppl of those lines), said in text, --json, params"
  else cat "$tmp/h.txt" >> "$tmp/check"; fail "held-out evaluation" "$tmp/check"; fi
else fail "ability --split / prune exited non-zero" "$tmp/err"; fi
grep -q "^eval on  the 24 documents of '$tmp/small.jsonl' - the same documents the neurons were selected on: scores run 2 has no held-out split" "$tmp/table" &&
  pass "without a split prune says it evaluates on the selection documents" || fail "selection-documents notice" "$tmp/table"
# --eval FILE: another dataset; a DATA that is not the run's dataset is refused for the held-out half
"$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --scores 1 --seeds 1 --eval "$tmp/noprose.jsonl" --abilities code,math --threads 1 --json > "$tmp/e.json" 2>"$tmp/err" &&
  $py -c "import json,sqlite3,sys; j=json.load(open(sys.argv[1])); p=json.loads(sqlite3.connect(sys.argv[2]).execute('SELECT params FROM runs ORDER BY id DESC LIMIT 1').fetchone()[0]); assert j['eval']=='file' and j['eval_docs']==18 and p['eval']=='file' and p['eval_file']==sys.argv[3] and p['eval_docs']==18, (j['eval'], p)" "$tmp/e.json" "$hdb" "$tmp/noprose.jsonl" 2>"$tmp/check" &&
  pass "prune --eval FILE evaluates another dataset and records it" || { cat "$tmp/err" >> "$tmp/check"; fail "prune --eval" "$tmp/check"; }
"$nl" prune $model "$tmp/noprose.jsonl" --db "$hdb" --scores 1 --abilities code > "$tmp/out" 2>"$tmp/e.err"
[ $? = 1 ] && grep -qF "'$tmp/noprose.jsonl' is not the dataset of scores run 1: it has 18 documents, the run's activation file '$tmp/a.h5' 24" "$tmp/e.err" &&
  pass "a held-out evaluation on another dataset than the run's is a one-line error" || fail "held-out dataset check" "$tmp/e.err"

# 4c. --neurons FILE: the user's own sets (CSV with a set column, or JSON), same tables; the
# pass equals the ability pass of an equal set; the file's checksum and list are in the params.
$py - "$hdb" "$tmp" <<'PY'
import sqlite3, sys, json
c = sqlite3.connect(sys.argv[1])
top = c.execute("SELECT layer, neuron FROM ability_top WHERE run_id = 1 AND ability = 'math' ORDER BY layer, neuron").fetchall()
with open(sys.argv[2] + "/n.csv", "w") as f:
    f.write("layer,neuron,set\n" + "".join(f"{l},{i},math\n" for l, i in top) + "1,5,mine\n0,7,mine\n1,5,mine\n")
with open(sys.argv[2] + "/n.json", "w") as f:
    json.dump([{"layer": l, "neuron": i, "set": "math"} for l, i in top] + [{"set": "mine", "layer": 0, "neuron": 7}, {"layer": 1, "neuron": 5, "set": "mine"}], f, indent=1)
PY
if "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/n.csv" --seeds 1 --threads 1 --json > "$tmp/n1.json" 2>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/n.json" --seeds 1 --threads 1 > "$tmp/n2.txt" 2>>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --scores 1 --abilities math --seeds 1 --threads 1 --json > "$tmp/n3.json" 2>>"$tmp/err" &&
   "$nl" prune $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/n.csv" --eval "$tmp/held.jsonl" --seeds 1 --threads 1 --json > "$tmp/n4.json" 2>>"$tmp/err"; then
  $py - "$hdb" "$tmp" > "$tmp/check" 2>&1 <<'PY' && pass "prune --neurons (CSV and JSON): own sets pruned with the random control, file checksum and list in params" || fail "prune --neurons" "$tmp/check"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); t = sys.argv[2]
j1 = json.load(open(t + "/n1.json")); j4 = json.load(open(t + "/n4.json")); j3 = json.load(open(t + "/n3.json"))
assert j1["scores_run"] is None and j1["neurons"] == t + "/n.csv", j1["neurons"]
rows = {r["pruned"]: r for r in j1["rows"]}
assert sorted(rows) == ["math", "mine"] and rows["mine"]["neurons"] == 2, sorted(rows)
math_top = c.execute("SELECT count(*) FROM ability_top WHERE run_id = 1 AND ability = 'math'").fetchone()[0]
assert rows["math"]["neurons"] == math_top
assert rows["mine"]["diagonal"] is None  # 'mine' is no label
# the held-out evaluation of the user's 'math' set = the held-out evaluation of run 1's math set
r4 = {r["pruned"]: r for r in j4["rows"]}
for lab in ("code", "math", "prose", ""):
    a, b = r4["math"]["effect"][lab]["ppl"], j3["rows"][0]["effect"][lab]["ppl"]
    assert abs(a - b) <= 1e-9 * b, (lab, a, b)
def fnv(data):
    h = 0xcbf29ce484222325
    for x in data: h = ((h ^ x) * 0x100000001b3) & (2**64 - 1)
    return f"{h:016x}"
runs = c.execute("SELECT id, params, source FROM runs WHERE kind = 'prune' AND json_extract(params, '$.neurons') IS NOT NULL ORDER BY id").fetchall()
assert len(runs) == 3, runs
p1, p2 = json.loads(runs[0][1]), json.loads(runs[1][1])
assert p1["neurons"]["fnv1a"] == fnv(open(t + "/n.csv", "rb").read()) and p2["neurons"]["fnv1a"] == fnv(open(t + "/n.json", "rb").read())
assert p1["neurons"]["sets"] == {"math": math_top, "mine": 2} and p1["neurons"]["list"]["mine"] == [[0, 7], [1, 5]], p1["neurons"]
assert p1["neurons"]["list"] == p2["neurons"]["list"] and runs[0][2] == t + "/n.csv"
assert p1["scores_run"] is None and p1["eval"] == "all" and json.loads(runs[2][1])["eval"] == "file"
e1 = {(r[0], r[1]) for r in c.execute("SELECT pruned, control FROM prune_effect WHERE run_id = ?", (runs[0][0],))}
assert e1 == {("", "none"), ("math", "ability"), ("math", "random"), ("mine", "ability"), ("mine", "random")}, e1
n = dict(c.execute("SELECT pruned, neurons FROM prune_effect WHERE run_id = ? AND control = 'random' AND label = ''", (runs[0][0],)))
assert n == {"math": math_top, "mine": 2}, n
print("ok")
PY
  grep -q "^mine  *(no label of its own) on the labels (mean) " "$tmp/n2.txt" || fail "prune --neurons text: a set without a label" "$tmp/n2.txt"
else fail "prune --neurons exited non-zero" "$tmp/err"; fi
printf 'layer,neuron\n0,5\n\n7,1\n' > "$tmp/bad1.csv"
printf 'layer,neuron\n0,5\n1,999\n' > "$tmp/bad2.csv"
printf 'layer;neuron\n0;5\n' > "$tmp/bad3.csv"
printf '[{"layer": 0, "neuron": 1},\n {"layer": 1, "neuron": "x"}]' > "$tmp/bad4.json"
printf 'layer,neuron\n0,abc\n' > "$tmp/bad5.csv"
bad 1 "'$tmp/bad1.csv' line 4: layer 7 is outside the model's 0..1" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/bad1.csv"
bad 1 "'$tmp/bad2.csv' line 3: neuron 999 is outside 0..127" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/bad2.csv"
bad 1 "'$tmp/bad3.csv' line 1: the header must be layer,neuron or layer,neuron,set" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/bad3.csv"
bad 1 "'$tmp/bad4.json' line 2: \"neuron\" needs an integer" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/bad4.json"
bad 1 "'$tmp/bad5.csv' line 2: the neuron is not an integer" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/bad5.csv"
bad 1 "cannot read '$tmp/none.csv'" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/none.csv"
bad 2 "--top re-chooses an ability run's sets: not with --neurons" $model "$tmp/small.jsonl" --db "$hdb" --neurons "$tmp/n.csv" --top 0.1

# 5. stories260K: labels a, b, c by document index mod 3.
S=../shared/models/stories260K
if [ ! -f $S/stories260K.bin ]; then echo "SKIP prune on stories260K: ../shared is absent"; exit 0; fi
if ! command -v sqlite3 > /dev/null; then echo "SKIP prune stories260K pins: no sqlite3 command"; exit 0; fi
$py - $S/tokens.jsonl "$tmp/s.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as o:
    for i, line in enumerate(f):
        o.write(json.dumps({"label": "abc"[i % 3], "tokens": json.loads(line)["tokens"]}) + "\n")
PY
sdb=$tmp/s.db
if "$nl" record $S/stories260K.bin "$tmp/s.jsonl" -o "$tmp/s.h5" --pool --threads 1 > /dev/null 2>"$tmp/err" &&
   "$nl" ability "$tmp/s.h5" --db "$sdb" --threads 1 > /dev/null 2>>"$tmp/err" &&
   "$nl" prune $S/stories260K.bin "$tmp/s.jsonl" --db "$sdb" --scores 1 --threads 1 > "$tmp/s1.out" 2>>"$tmp/err" &&
   "$nl" prune $S/stories260K.bin "$tmp/s.jsonl" --db "$sdb" --scores 1 --threads 2 > "$tmp/s2.out" 2>>"$tmp/err"; then
  pass "stories260K: record --pool, ability, prune --threads 1 and --threads 2"
else fail "stories260K pipeline" "$tmp/err"; exit 0; fi

# --threads 1 vs 2: the same rows, neuron and token counts; ppl within relative 1e-5 and
# rel_change within 1e-5 of 1 + rel_change (the ratio of the two perplexities).
cmp_q="SELECT a.pruned, a.control, a.seed, a.label, a.neurons = b.neurons AND a.tokens = b.tokens,
  abs(a.ppl - b.ppl) / a.ppl, abs(a.rel_change - b.rel_change) / (1 + abs(a.rel_change)) FROM prune_effect a JOIN prune_effect b
  ON b.run_id = 3 AND a.pruned = b.pruned AND a.control = b.control AND a.seed = b.seed AND a.label = b.label WHERE a.run_id = 2"
worst=$(sqlite3 "$sdb" "WITH t(pr, co, se, la, c, p, r) AS ($cmp_q) SELECT count(*) || ' ' || sum(c) || ' ' || printf('%.3g', max(p)) || ' ' || printf('%.3g', max(r)) FROM t")
n2=$(sqlite3 "$sdb" "SELECT count(*) FROM prune_effect WHERE run_id = 3")
if $py -c "import sys; n, same, p, r = sys.argv[1].split(); assert int(n) == 52 == int(sys.argv[2]) and int(same) == 52 and float(p) < 1e-5 and float(r) < 1e-5" "$worst" "$n2"; then
  pass "stories260K: --threads 1 and 2 prune the same neurons (52 rows, counts equal; worst ppl difference $(echo $worst | cut -d' ' -f3), rel_change $(echo $worst | cut -d' ' -f4))"
else echo "rows, equal counts, worst ppl, worst rel: $worst (run 3: $n2 rows)" > "$tmp/check"; fail "stories260K threads 1 vs 2" "$tmp/check"; fi

# Pinned values of the --threads 1 run (run 2): the numbers this pipeline produced when prune
# was written (stories260K, ability defaults: AP, top 0.05 per layer = 8 neurons x 5 layers;
# random seeds 0..2), read with
#   sqlite3 s.db "SELECT printf('%.9g', rel_change) FROM prune_effect WHERE run_id = 2 AND …"
# and rounded to 6 significant digits; a value within relative 1e-5 passes (the last digit
# may move with another BLAS kernel). They check that record, ability and prune keep computing
# the same numbers. The two ability-pass pins were re-read when ties at the cut stopped going
# to the lower neuron index (12 of the 15 sets of this run cut inside a tie block; the margin
# tie-break chose: 7.11172 → 6.61840 and 9.15638 → 9.06531).
pin() { # description, SQL, pinned value
  local got
  got=$(sqlite3 "$sdb" "$2")
  if $py -c "import sys; g, w = float(sys.argv[1]), float(sys.argv[2]); assert abs(g - w) <= 1e-5 * abs(w)" "$got" "$3" 2>/dev/null; then
    pass "stories260K pin: $1 = $got (pinned $3)"
  else echo "got '$got', pinned '$3'" > "$tmp/check"; fail "stories260K pin: $1" "$tmp/check"; fi
}
pin "base ppl, all documents" "SELECT printf('%.9g', ppl) FROM prune_effect WHERE run_id = 2 AND control = 'none' AND label = ''" \
  "14.4886"
pin "rel_change pruning a, on a" "SELECT printf('%.9g', rel_change) FROM prune_effect WHERE run_id = 2 AND pruned = 'a' AND control = 'ability' AND label = 'a'" \
  "6.61840"
pin "rel_change pruning c, on b" "SELECT printf('%.9g', rel_change) FROM prune_effect WHERE run_id = 2 AND pruned = 'c' AND control = 'ability' AND label = 'b'" \
  "9.06531"
pin "random control mean, on all documents" "SELECT printf('%.9g', mean) FROM prune_control WHERE run_id = 2 AND pruned = 'b' AND label = ''" \
  "13.1417"
exit 0
