#!/usr/bin/env bash
# ability_cli.sh — `ability` and `overlap` end to end on the fixture model tests/fixtures/hf/llama
# with a labelled token dataset recorded with --pool: one complete ability run whose scores
# equal an independent AP/predictivity computed in Python from the HDF5 file (h5py) for every
# neuron, --json agrees with the database, the top sets are the best-scoring neurons, resident
# exclusion reads the sparsity run, overlap's matrices follow from the stored sets; bad input
# (top outside (0, 1], unknown ability, unlabelled file, a non-ability scores run, missing run)
# is a one-line error. Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$(realpath "${NL_BUILD:-build}/neuronlab")
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_ability.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/hf/llama
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }
if ! $py -c 'import h5py, numpy, sqlite3' 2>/dev/null; then echo "SKIP ability CLI checks: /usr/bin/python3 lacks h5py or numpy"; exit 0; fi

# 30 labelled documents (3 abilities whose token ranges differ, so neurons can tell them
# apart) and 2 unlabelled ones; prompt/response not needed: the whole text is the prompt.
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(11)
ranges = {"code": (2, 90), "math": (80, 170), "prose": (160, 256)}
with open(sys.argv[1] + "/d.jsonl", "w") as f:
    for d in range(32):
        lab = ["code", "math", "prose"][d % 3] if d < 30 else ""
        lo, hi = ranges[lab] if lab else (2, 256)
        toks = [1] + [random.randrange(lo, hi) for _ in range(random.randrange(12, 40))]
        f.write(json.dumps({"tokens": toks, "label": lab}) + "\n")
    f.close()
with open(sys.argv[1] + "/nolabel.jsonl", "w") as f:
    for d in range(4):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(20)]}) + "\n")
PY
db=$tmp/r.db
"$nl" record $model "$tmp/d.jsonl" -o "$tmp/a.h5" --pool --threads 1 > /dev/null 2> "$tmp/err" || fail "record" "$tmp/err"

# 1. AP run: every score equals numpy's AP from the file; --json agrees; top sets are the best.
if "$nl" ability "$tmp/a.h5" --db "$db" --top 0.1 --threads 1 --json > "$tmp/a.json" 2> "$tmp/err"; then
  $py - "$tmp/a.h5" "$db" "$tmp/a.json" ap > "$tmp/check" 2>&1 <<'PY' && pass "ability (ap): scores = AP computed from the HDF5 file, --json = database, top sets" || fail "ability ap" "$tmp/check"
import json, sqlite3, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); c = sqlite3.connect(sys.argv[2]); js = json.load(open(sys.argv[3])); method = sys.argv[4]
labels = np.array([x.decode() if isinstance(x, bytes) else x for x in f["doc_labels"][:]])
keep = labels != ""
run = js["run_id"]
assert c.execute("SELECT kind, status FROM runs WHERE id = ?", (run,)).fetchone() == ("ability", "complete")
def ap(v, y):  # sklearn's step-wise AP over distinct thresholds
    P = y.sum(); s = 0.0
    for t in np.unique(v)[::-1]:
        sel = v >= t; tp = (y & sel).sum(); gain = (y & (v == t)).sum()
        s += gain / P * tp / sel.sum()
    return s
def pred(v, y):
    p = v > v.astype(np.float64).mean()
    return 0.5 * ((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum())
worst = 0
for layer in f["pooled"]:
    V = f["pooled"][layer]["mean_abs"][:][keep]
    for ab in ["code", "math", "prose"]:
        y = labels[keep] == ab
        got = dict(c.execute("SELECT neuron, score FROM ability_score WHERE run_id=? AND ability=? AND layer=?", (run, ab, int(layer))).fetchall())
        assert len(got) == V.shape[1], (layer, ab, len(got))
        for i in range(V.shape[1]):
            want = ap(V[:, i], y) if method == "ap" else pred(V[:, i], y)
            worst = max(worst, abs(got[i] - want))
        top = {n for (n,) in c.execute("SELECT neuron FROM ability_top WHERE run_id=? AND ability=? AND layer=?", (run, ab, int(layer)))}
        k = max(1, int(np.floor(0.1 * V.shape[1] + 1e-9)))
        assert len(top) == k, (len(top), k)
        assert min(got[n] for n in top) >= max(got[n] for n in got if n not in top), "top set is not the best"
        # the tie-break key: margin = mean v on the ability's documents - mean v on the others
        M = dict(c.execute("SELECT neuron, margin FROM ability_score WHERE run_id=? AND ability=? AND layer=?", (run, ab, int(layer))).fetchall())
        for i in range(V.shape[1]):
            want = V[y, i].astype(np.float64).mean() - V[~y, i].astype(np.float64).mean()
            assert abs(M[i] - want) <= 1e-5 * max(1, abs(want)), (layer, ab, i, M[i], want)
        for n in top:  # no neuron left out beats a chosen one on (score, margin)
            for o in got:
                if o not in top: assert (got[o], M[o]) <= (got[n], M[n]), (layer, ab, n, o)
        cut = min(got[n] for n in top)
        tied = sum(1 for n in got if got[n] == cut); chosen = sum(1 for n in top if got[n] == cut)
        row = c.execute("SELECT cut, tied, chosen, broken_by FROM ability_ties WHERE run_id=? AND ability=? AND layer=?", (run, ab, int(layer))).fetchone()
        assert row[1:3] == (tied, chosen) and abs(row[0] - cut) < 1e-7, (row, cut, tied, chosen)
        assert (row[3] == "none") == (tied == chosen), row
        jt = [t for t in js["ties"] if t["ability"] == ab and t["layer"] == int(layer)]
        assert len(jt) == 1 and (jt[0]["tied"], jt[0]["chosen"], jt[0]["broken_by"]) == row[1:], (jt, row)
assert worst < 1e-6, worst
assert js["cut_in_tie"] == c.execute("SELECT count(*) FROM ability_ties WHERE run_id=? AND chosen < tied", (run,)).fetchone()[0]
rows = {(r["ability"], r["layer"]): r for r in js["rows"]}
for ab, layer, best, mean, base in c.execute("SELECT ability, layer, best, mean, baseline FROM ability_layer WHERE run_id=?", (run,)):
    r = rows[(ab, layer)]
    assert abs(r["best"] - best) < 1e-5 and abs(r["mean"] - mean) < 1e-5 and abs(r["baseline"] - base) < 1e-8
    assert abs(base - 10 / 30) < 1e-12
print("worst", worst)
PY
else fail "ability (ap) exits 0" "$tmp/err"; fi

# 2. predictivity run, checked the same way.
if "$nl" ability "$tmp/a.h5" --db "$db" --top 0.1 --method predictivity --threads 2 --json > "$tmp/p.json" 2> "$tmp/err"; then
  $py - "$tmp/a.h5" "$db" "$tmp/p.json" predictivity > "$tmp/check" 2>&1 <<'PY' && pass "ability (predictivity): balanced accuracy of a > mean from the HDF5 file" || fail "ability predictivity" "$tmp/check"
import json, sqlite3, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); c = sqlite3.connect(sys.argv[2]); run = json.load(open(sys.argv[3]))["run_id"]
labels = np.array([x.decode() if isinstance(x, bytes) else x for x in f["doc_labels"][:]]); keep = labels != ""
worst = 0
for layer in f["pooled"]:
    V = f["pooled"][layer]["mean_abs"][:][keep]
    for ab in ["code", "math", "prose"]:
        y = labels[keep] == ab
        for n, s in c.execute("SELECT neuron, score FROM ability_score WHERE run_id=? AND ability=? AND layer=?", (run, ab, int(layer))):
            v = V[:, n]; p = v > v.astype(np.float64).mean()
            want = 0.5 * ((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum())
            worst = max(worst, abs(s - want))
assert worst < 1e-6, worst  # scores are stored as float32
base = c.execute("SELECT DISTINCT baseline FROM ability_label WHERE run_id=?", (run,)).fetchall()
assert base == [(0.5,)], base
PY
else fail "ability (predictivity) exits 0" "$tmp/err"; fi

# 2b. predictivity scores are coarse (n + 1 values), so cuts fall inside tie blocks: the command
# warns on stderr, the text names each such cut, and the counts match ability_ties.
"$nl" ability "$tmp/a.h5" --db "$tmp/t.db" --top 0.1 --method predictivity --threads 1 > "$tmp/out" 2> "$tmp/err"
n=$(sqlite3 "$tmp/t.db" "SELECT count(*) FROM ability_ties WHERE chosen < tied" 2>/dev/null || echo x)
lines=$(grep -c "neurons score .*of them in the set" "$tmp/out")
if [ "$n" != x ] && [ "$n" -gt 0 ] && [ "$lines" = "$n" ] && grep -q "warning: the cut of $n of 6 top sets falls inside" "$tmp/err"; then
  pass "ties at the cut: stderr warning, one text line per cut inside a tie block ($n), = ability_ties"
else fail "ties at the cut (ability_ties $n, text lines $lines)" "$tmp/err"; fi

# 3. the text summary names the run and every ability
"$nl" ability "$tmp/a.h5" --db "$db" --threads 1 > "$tmp/out" 2> "$tmp/err" &&
  grep -q "^code " "$tmp/out" && grep -q "^prose " "$tmp/out" && grep -q "run 3 in" "$tmp/out" &&
  pass "ability text summary" || fail "ability text summary" "$tmp/out"

# 4. overlap of run 1's sets: diagonal 1, rows follow from ability_top, baseline = |B|/F
if "$nl" overlap --db "$db" --scores 1 --json > "$tmp/o.json" 2> "$tmp/err"; then
  $py - "$db" "$tmp/o.json" > "$tmp/check" 2>&1 <<'PY' && pass "overlap: matrices from the stored top sets, diagonal 1, baseline" || fail "overlap" "$tmp/check"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); js = json.load(open(sys.argv[2])); run = js["run_id"]
assert c.execute("SELECT kind, status FROM runs WHERE id=?", (run,)).fetchone() == ("overlap", "complete")
sets = {}
for ab, layer, n in c.execute("SELECT ability, layer, neuron FROM ability_top WHERE run_id = 1"):
    sets.setdefault(ab, set()).add((layer, n))
F = c.execute("SELECT d_ff FROM ability_run WHERE run_id = 1").fetchone()[0]
for a, b, inter, frac, jac, bf in c.execute("SELECT a, b, inter, frac, jaccard, baseline_frac FROM overlap WHERE run_id=? AND layer=-1", (run,)):
    A, B = sets[a], sets[b]
    assert inter == len(A & B) and abs(frac - len(A & B) / len(A)) < 1e-12 and abs(jac - len(A & B) / len(A | B)) < 1e-12
    if a == b: assert frac == 1
    k = max(1, int(0.1 * F + 1e-9))
    assert abs(bf - k / F) < 1e-12, (bf, k / F)
assert len(js["cells"]) == c.execute("SELECT COUNT(*) FROM overlap WHERE run_id=?", (run,)).fetchone()[0]
PY
else fail "overlap exits 0" "$tmp/err"; fi
"$nl" overlap --db "$db" --scores 1 --top 0.2 > "$tmp/out" 2> "$tmp/err" && grep -q "top 0.2 of each layer" "$tmp/out" &&
  pass "overlap --top re-selects from the stored scores" || fail "overlap --top" "$tmp/out"

# 5. resident exclusion: refused without a sparsity run of the file, then excludes exactly its resident neurons
"$nl" ability "$tmp/a.h5" --db "$db" --exclude-resident > /dev/null 2> "$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q "no complete sparsity run of" "$tmp/err" &&
  pass "--exclude-resident without a sparsity run: one-line error" || fail "--exclude-resident refused" "$tmp/err"
"$nl" sparsity "$tmp/a.h5" --db "$db" --no-cett --resident 0.05 --resident-frac 0.5 > /dev/null 2> "$tmp/err" || fail "sparsity" "$tmp/err"
if "$nl" ability "$tmp/a.h5" --db "$db" --exclude-resident --json > "$tmp/x.json" 2> "$tmp/err"; then
  $py - "$db" "$tmp/x.json" > "$tmp/check" 2>&1 <<'PY' && pass "--exclude-resident: the sparsity run's resident neurons are excluded and never in a top set" || fail "--exclude-resident" "$tmp/check"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); run = json.load(open(sys.argv[2]))["run_id"]
sp = c.execute("SELECT resident_run FROM ability_run WHERE run_id=?", (run,)).fetchone()[0]
res = set(c.execute("SELECT layer, neuron FROM neurons WHERE run_id=? AND label='' AND resident=1", (sp,)).fetchall())
exc = set(c.execute("SELECT layer, neuron FROM ability_excluded WHERE run_id=?", (run,)).fetchall())
assert res and res == exc, (len(res), len(exc))
top = set(c.execute("SELECT layer, neuron FROM ability_top WHERE run_id=?", (run,)).fetchall())
assert not (top & exc)
PY
else fail "--exclude-resident exits 0" "$tmp/err"; fi

# 6. bad input: one line on stderr, non-zero exit
bad() { # name expected-rc pattern cmd...
  local name=$1 want=$2 pat=$3; shift 3
  "$@" > /dev/null 2> "$tmp/err"; local rc=$?
  if [ $rc -eq "$want" ] && grep -q "$pat" "$tmp/err" && { [ "$want" -eq 2 ] || [ "$(wc -l < "$tmp/err")" -eq 1 ]; }; then pass "$name"
  else echo "rc $rc" >> "$tmp/err"; fail "$name" "$tmp/err"; fi
}
bad "ability --top 0 is a usage error" 2 "not a fraction in (0, 1]" "$nl" ability "$tmp/a.h5" --db "$db" --top 0
bad "ability --top 1.5 is a usage error" 2 "not a fraction in (0, 1]" "$nl" ability "$tmp/a.h5" --db "$db" --top 1.5
bad "overlap --top -1 is a usage error" 2 "not a fraction in (0, 1]" "$nl" overlap --db "$db" --scores 1 --top -1
bad "ability with no documents: one-line error" 1 "has no document labelled 'poetry'" "$nl" ability "$tmp/a.h5" --db "$db" --abilities code,poetry
bad "unlabelled activation file: one-line error" 1 "has no labelled documents" sh -c \
  "'$nl' record $model '$tmp/nolabel.jsonl' -o '$tmp/n.h5' --pool >/dev/null 2>&1 && exec '$nl' ability '$tmp/n.h5' --db '$db'"
bad "overlap --scores of a sparsity run: one-line error" 1 "is a 'sparsity' run, not an ability run" \
  "$nl" overlap --db "$db" --scores "$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT id FROM runs WHERE kind='sparsity'\").fetchone()[0])" "$db")"
bad "overlap --scores of a missing run: one-line error" 1 "no run 999 in" "$nl" overlap --db "$db" --scores 999
bad "ability on a missing file: one-line error" 1 "cannot open" "$nl" ability "$tmp/none.h5" --db "$db"
bad "ability without --db is a usage error" 2 "missing --db" "$nl" ability "$tmp/a.h5"
"$nl" overlap --db "$db" --scores latest > "$tmp/out" 2> "$tmp/err" &&
  grep -q "^overlap of the top sets of ability run $($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT MAX(id) FROM runs WHERE kind='ability' AND status='complete'\").fetchone()[0])" "$db") " "$tmp/out" &&
  pass "overlap --scores latest takes the latest complete ability run" || fail "overlap --scores latest" "$tmp/out"
bad "overlap --scores latest without an ability run: one-line error" 1 "has no complete ability run" "$nl" overlap --db "$tmp/empty.db" --scores latest
