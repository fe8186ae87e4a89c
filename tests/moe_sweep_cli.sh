#!/usr/bin/env bash
# moe_sweep_cli.sh — `moe-sweep` and `moe-usage` end to end on the zoo SiLU model
# (notebooks-data/models/silu; skipped when the checkout has no trained zoo) with the first 3
# documents of three abilities' eval sets:
#   the sweep table has one row per (configuration, label) plus the dense baseline; the K = E rows
#   equal the dense perplexity to 1e-5; every label's perplexity equals `ppl` on that label's
#   documents alone (dense and an MoE configuration, same K/router/fill through ppl --moe);
#   FLOP fractions: dense 1, below 1 for K < E with the sim router, oracle at the dense FFN;
#   recall in (0, 1], 1 for the oracle; the run is complete with its provenance;
#   moe-usage: per label and layer the token fractions over experts sum to K; AP rows equal the
#   AP definition of the ability analysis recomputed from expert_usage_doc (ties as one step),
#   PCA rows equal numpy's on the same vectors (sign: largest |score| positive);
#   bad input, one line each: an unknown router or fill in a LIST, a K out of range (a count
#   above E: exit 1 naming the manifest; 0 or 150%: usage), moe-usage on unlabelled data.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$(realpath "${NL_BUILD:-build}/neuronlab")
py=/usr/bin/python3
model=notebooks-data/models/silu
if [ ! -f "$model/config.json" ] || [ ! -f "$model/model.safetensors" ]; then
  echo "SKIP moe_sweep_cli: the zoo model $model is not trained in this checkout"
  exit 0
fi
tmp=$(mktemp -d /tmp/nl_moe_sweep.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }
expect() { # NAME CODE NEEDLE -- command...: exit CODE, stderr containing NEEDLE (one line unless a usage error)
  local name=$1 code=$2 needle=$3; shift 4
  "$@" > "$tmp/out" 2> "$tmp/err"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/err")
  if [ $rc -eq "$code" ] && grep -qF -- "$needle" "$tmp/err" && { [ "$code" -eq 2 ] || [ "$lines" -eq 1 ]; }; then pass "$name"
  else echo "  (exit $rc, $lines stderr lines, wanted $code with '$needle')"; fail "$name" "$tmp/err"; fi
}

for a in code math writing; do head -n 3 notebooks-data/eval/$a.jsonl > "$tmp/$a.jsonl"; done
cat "$tmp/code.jsonl" "$tmp/math.jsonl" "$tmp/writing.jsonl" > "$tmp/data.jsonl"
m=$tmp/moe
if ! "$nl" moefy $model "$tmp/data.jsonl" --experts 8 -o "$m" --quiet > /dev/null 2> "$tmp/err"; then
  fail "moefy for the sweep" "$tmp/err"; exit 0
fi
db=$tmp/r.db
if "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --k 2,50%,100% --fill zero,mean --quiet > "$tmp/sweep.out" 2> "$tmp/err"
then pass "moe-sweep runs"; else fail "moe-sweep runs" "$tmp/err"; fi
grep -q "^8 .*100.0% sim" "$tmp/sweep.out" && grep -q "dense" "$tmp/sweep.out" && pass "moe-sweep prints the table" ||
  fail "moe-sweep prints the table" "$tmp/sweep.out"

# per-label perplexity of `ppl` on each label's documents alone: dense, and K 2 sim mean
for a in code math writing; do
  "$nl" ppl $model "$tmp/$a.jsonl" --json > "$tmp/ppl_$a.json" 2> /dev/null
  "$nl" ppl $model "$tmp/$a.jsonl" --json --moe "$m" --k 2 --router sim --fill mean > "$tmp/pplm_$a.json" 2> /dev/null
done
"$nl" ppl $model "$tmp/data.jsonl" --json > "$tmp/ppl_all.json" 2> /dev/null
$py - "$db" "$tmp" > "$tmp/check.out" 2>&1 <<'PY'
import json, sqlite3, sys
db, tmp = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db)
def ok(name, cond, why=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  (" + why + ")"))
rows = c.execute("SELECT router, fill, k, label, tokens, ppl, ffn_frac, model_frac, recall, dense, tokens_per_s, expert_frac FROM moe_sweep").fetchall()
cfg = {(r[0], r[1], r[2]) for r in rows}
want = {("dense", "none", 8)} | {(r, f, k) for k in (2, 4, 8) for r in ("sim", "oracle") for f in ("zero", "mean")}
ok("sweep has every configuration and the dense row", cfg == want, f"{sorted(cfg)}")
ok("sweep has one row per configuration and label ('' + 3)", len(rows) == len(want) * 4, f"{len(rows)} rows")
by = {(r[0], r[1], r[2], r[3]): r for r in rows}
dense = by[("dense", "none", 8, "")]
ok("dense row marked, fractions 1", dense[9] == 1 and abs(dense[6] - 1) < 1e-12 and abs(dense[7] - 1) < 1e-12 and dense[8] is None)
worst = max(abs(by[(r, f, 8, lab)][5] / by[("dense", "none", 8, lab)][5] - 1)
            for r in ("sim", "oracle") for f in ("zero", "mean") for lab in ("", "code", "math", "writing"))
ok("K = E rows equal the dense perplexity to 1e-5", worst < 1e-5, f"worst relative {worst:.3g}")
allp = json.load(open(f"{tmp}/ppl_all.json"))
ok("overall dense ppl equals ppl (its JSON has 6 decimals)", abs(dense[5] / allp["ppl"] - 1) < 1e-6, f"{dense[5]} vs {allp['ppl']}")
w1 = w2 = 0
for a in ("code", "math", "writing"):
    p = json.load(open(f"{tmp}/ppl_{a}.json")); q = json.load(open(f"{tmp}/pplm_{a}.json"))
    d = by[("dense", "none", 8, a)]; s = by[("sim", "mean", 2, a)]
    ok(f"label {a}: tokens as ppl", d[4] == p["tokens"] and s[4] == q["tokens"], f"{d[4]} {p['tokens']}")
    w1 = max(w1, abs(d[5] / p["ppl"] - 1)); w2 = max(w2, abs(s[5] / q["ppl"] - 1))
    w2 = max(w2, abs(s[6] - q["moe"]["ffn_flops_fraction"]))
ok("per-label dense ppl equals ppl on each label's file", w1 < 1e-6, f"{w1:.3g}")
ok("per-label MoE ppl and FFN fraction equal ppl --moe on each label's file", w2 < 1e-5, f"{w2:.3g}")
s2 = by[("sim", "zero", 2, "")]; o2 = by[("oracle", "zero", 2, "")]
ok("sim K < E costs less than dense; oracle costs the dense FFN", s2[6] < 0.5 and s2[7] < 1 and abs(o2[6] - 1) < 1e-12
   and abs(o2[11] - 0.25) < 1e-12, f"{s2[6]} {s2[7]} {o2[6]} {o2[11]}")
ok("recall in (0, 1], oracle 1", 0 < s2[8] <= 1 + 1e-12 and abs(o2[8] - 1) < 1e-9, f"{s2[8]} {o2[8]}")
ok("tokens/s measured", all(r[10] and r[10] > 0 for r in rows))
run = c.execute("SELECT kind, status, model_sum IS NOT NULL, json_extract(params, '$.moe.experts') FROM runs").fetchall()
ok("one complete moe-sweep run with provenance", run == [("moe-sweep", "complete", 1, 8)], f"{run}")
PY
cat "$tmp/check.out"

# ---- moe-usage -------------------------------------------------------------------------------
if "$nl" moe-usage $model "$tmp/data.jsonl" --moe "$m" --db "$db" --k 2 --quiet > "$tmp/usage.out" 2> "$tmp/err"
then pass "moe-usage runs"; else fail "moe-usage runs" "$tmp/err"; fi
$py - "$db" > "$tmp/check.out" 2>&1 <<'PY'
import sqlite3, sys
import numpy as np
c = sqlite3.connect(sys.argv[1])
def ok(name, cond, why=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  (" + why + ")"))
run = c.execute("SELECT MAX(id) FROM runs WHERE kind = 'moe-usage' AND status = 'complete'").fetchone()[0]
ok("moe-usage run complete", run is not None)
sums = c.execute("SELECT SUM(token_frac) FROM expert_usage WHERE run_id = ? GROUP BY layer, label", (run,)).fetchall()
ok("usage fractions over experts sum to K = 2 per label and layer", len(sums) == 6 * 3 and max(abs(s[0] - 2) for s in sums) < 1e-12,
   f"{sums[:3]}")
docs = c.execute("SELECT doc, label FROM expert_usage_pca WHERE run_id = ? ORDER BY doc", (run,)).fetchall()
X = np.array([[r[0] for r in c.execute("SELECT frac FROM expert_usage_doc WHERE run_id = ? AND doc = ? ORDER BY layer, expert",
                                         (run, d))] for d, _ in docs])
ok("per-document vectors: 9 documents x 6 layers x 8 experts, each layer summing to K", X.shape == (9, 48)
   and np.allclose(X.reshape(9, 6, 8).sum(axis=2), 2), f"{X.shape}")
labels = [l for _, l in docs]
def ap(v, y):  # the ability analysis's AP: ties form one step
    order = sorted(set(v), reverse=True); P = sum(y); s = 0; tp = 0; n = 0; prev_r = 0
    for t in order:
        idx = [i for i in range(len(v)) if v[i] == t]
        tp += sum(y[i] for i in idx); n += len(idx)
        r = tp / P; s += (r - prev_r) * (tp / n); prev_r = r
    return s
worst = 0
for layer, expert, label, a in c.execute("SELECT layer, expert, label, ap FROM expert_ap WHERE run_id = ?", (run,)):
    col = layer * 8 + expert  # MoE layers 0..5
    want = ap(list(X[:, col]), [int(l == label) for l in labels])
    worst = max(worst, abs(a - want))
ok("expert_ap equals the ability AP recomputed from expert_usage_doc", worst < 1e-6, f"worst {worst:.3g}")
Xc = X - X.mean(axis=0)
lam, V = np.linalg.eigh(Xc.T @ Xc)
S = Xc @ V[:, np.argsort(-lam)[:2]]
for k in range(2):
    if S[np.argmax(np.abs(S[:, k])), k] < 0: S[:, k] *= -1
got = np.array(c.execute("SELECT pc1, pc2 FROM expert_usage_pca WHERE run_id = ? ORDER BY doc", (run,)).fetchall())
ok("PCA rows equal numpy on the same vectors", np.abs(got - S).max() < 1e-5 * max(1, np.abs(S).max()), f"{np.abs(got - S).max():.3g}")
PY
cat "$tmp/check.out"

# ---- bad input ---------------------------------------------------------------------------------
expect "unknown router in the list" 2 "unknown router 'fast'" -- "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --router sim,fast
expect "unknown fill in the list" 2 "unknown fill 'half'" -- "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --fill zero,half
expect "K percentage out of range" 2 "150%" -- "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --k 25%,150%
expect "K 0 refused" 2 "'0'" -- "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --k 0
expect "K above E refused naming the folder" 1 "manifest.json' has 8 experts" -- "$nl" moe-sweep $model "$tmp/data.jsonl" --moe "$m" --db "$db" --k 2,9 --quiet
$py -c "
import json
for l in open('$tmp/data.jsonl'):
    d = json.loads(l); d.pop('label', None); print(json.dumps(d))" > "$tmp/nolabel.jsonl"
expect "moe-usage needs labels" 1 "at least two labels" -- "$nl" moe-usage $model "$tmp/nolabel.jsonl" --moe "$m" --db "$db" --quiet
expect "moe-usage: unknown router" 2 "--router" -- "$nl" moe-usage $model "$tmp/data.jsonl" --moe "$m" --db "$db" --router fast
n=$(sqlite3 "$db" "SELECT COUNT(*) FROM runs WHERE status <> 'complete'")
[ "$n" = 0 ] && pass "refused inputs leave no run behind" || fail "refused inputs leave no run behind"
