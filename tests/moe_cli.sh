#!/usr/bin/env bash
# moe_cli.sh — `moefy` and `ppl --moe` end to end on the fixture model tests/fixtures/hf/llama:
#   moefy writes a folder (manifest.json + experts.safetensors, no temporary left), refuses to
#   overwrite it without --force; ppl --moe with K = E prints the dense perplexity, with K < E a
#   FLOPs fraction below 1 and a router recall; the same split twice is byte-identical (seed);
#   --json carries the moe object. Bad input is one line naming the file, exit 1: a folder from
#   another model (same shapes, other weights: llama_bf16), --k above E, --experts above d_ff,
#   --experts 0, a calibration set with fewer than 4·E tokens, a corrupt or missing manifest,
#   a missing tensor file, --layers out of range. Usage errors exit 2: --k 0, --k 150%, --fill x,
#   --router x, --k without --moe, moefy without -o or --experts, --split x.
# --moe on the other forward commands (same parser): with K = E, generate (greedy and sampled),
# perturb, prune and record print/store what the dense model gives (record: ffn_act to 1e-5, as
# the expert FFN's GEMMs are blocked differently); with K < E they differ from it (the options
# reach the forward pass; numbers of perturb/prune to 1e-5 relative), perturb/prune/record --db carry "moe" in the run's params; --k without
# --moe is a usage error on each; record --resume --moe is a usage error.
# MLP router: moefy --router mlp stores both routers (manifest "routers", router.mlp tensors) and
# prints per layer its losses and held-out recall; ppl --router mlp with K = E prints the dense
# perplexity, with K < E its recall; --router mlp on a sim-only folder is one line naming the
# folder; --router-* without --router mlp is a usage error; on the zoo SiLU model
# (notebooks-data/models/silu, skipped when absent) ppl --moe --router mlp runs and K = E is dense.
# Prints PASS/FAIL lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$(realpath "${NL_BUILD:-build}/neuronlab")
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_moe.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
model=tests/fixtures/hf/llama

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/  | /' "$2" | head -20; }

$py - "$tmp" <<'PY'
import json, random, sys
random.seed(3)
with open(sys.argv[1] + "/calib.jsonl", "w") as f:
    for d in range(8):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(39)], "label": "ab"[d % 2]}) + "\n")
with open(sys.argv[1] + "/tiny.jsonl", "w") as f:
    f.write(json.dumps({"tokens": [1, 5, 9, 13, 17, 21, 25]}) + "\n")
PY

# expect NAME CODE NEEDLE -- command...: exit code CODE and one stderr line containing NEEDLE
expect() {
  local name=$1 code=$2 needle=$3; shift 4
  "$@" > "$tmp/out" 2> "$tmp/err"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/err")
  if [ $rc -eq "$code" ] && grep -qF -- "$needle" "$tmp/err" && { [ "$code" -eq 2 ] || [ "$lines" -eq 1 ]; }; then pass "$name"
  else echo "  (exit $rc, $lines stderr lines, wanted $code with '$needle')"; fail "$name" "$tmp/err"; fi
}

m=$tmp/moe
if "$nl" moefy $model "$tmp/calib.jsonl" --experts 8 -o "$m" --quiet > "$tmp/out" 2> "$tmp/err" &&
   [ -f "$m/manifest.json" ] && [ -f "$m/experts.safetensors" ] && ! ls "$tmp" | grep -q 'tmp\.' ; then pass "moefy writes the folder"
else fail "moefy writes the folder" "$tmp/err"; fi
"$nl" moefy $model "$tmp/calib.jsonl" --experts 8 -o "$tmp/moe2" --quiet > /dev/null 2>&1
if cmp -s "$m/experts.safetensors" "$tmp/moe2/experts.safetensors"; then pass "moefy is deterministic"; else fail "moefy is deterministic"; fi
expect "existing folder refused" 1 "--force" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 8 -o "$m" --quiet
if "$nl" moefy $model "$tmp/calib.jsonl" --experts 4 --split coact --shared 8 -o "$m" --force --quiet > /dev/null 2> "$tmp/err" &&
   grep -q '"split": "coact"' "$m/manifest.json" && grep -q '"shared": 8' "$m/manifest.json"; then pass "--force replaces, coact + shared"
else fail "--force replaces, coact + shared" "$tmp/err"; fi
"$nl" moefy $model "$tmp/calib.jsonl" --experts 8 -o "$m" --force --quiet > /dev/null 2>&1

dense=$("$nl" ppl $model "$tmp/calib.jsonl" | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
full=$("$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 8 --fill mean | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
if [ -n "$dense" ] && [ "$dense" = "$full" ]; then pass "K = E prints the dense perplexity ($dense)"; else fail "K = E prints the dense perplexity ($dense vs $full)"; fi
"$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 25% > "$tmp/out" 2> "$tmp/err"
if grep -q 'K 2 (25.0%)' "$tmp/out" && grep -q 'FFN FLOPs fraction 0\.2[0-9]* of the dense model' "$tmp/out" &&
   grep -q 'router recall vs oracle 0\.' "$tmp/out"; then pass "ppl --moe --k 25% prints FLOPs and recall"
else fail "ppl --moe --k 25% prints FLOPs and recall" "$tmp/out"; fi
"$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 3 --router oracle --json > "$tmp/out" 2> "$tmp/err"
if $py -c 'import json,sys; j=json.load(open(sys.argv[1]))["moe"]; assert j["k"]==3 and j["router"]=="oracle" and j["ffn_flops_fraction"]==1 and j["router_recall"]==1' "$tmp/out"
then pass "ppl --moe --json"; else fail "ppl --moe --json" "$tmp/out"; fi

expect "another model" 1 "another model" -- "$nl" ppl tests/fixtures/hf/llama_bf16 "$tmp/calib.jsonl" --moe "$m"
expect "K above E" 1 "manifest.json" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 9
expect "E above d_ff" 1 "--experts 200" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 200 -o "$tmp/x"
expect "E below 1" 1 "--experts 0" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 0 -o "$tmp/x"
expect "calibration too small" 1 "tiny.jsonl" -- "$nl" moefy $model "$tmp/tiny.jsonl" --experts 2 -o "$tmp/x"
expect "layers out of range" 1 "--layers" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 2 --layers 0-5 -o "$tmp/x"
cp -r "$m" "$tmp/bad"
echo '{"format": "neuronlab.moe", "version": 1' > "$tmp/bad/manifest.json"
expect "corrupt manifest" 1 "bad/manifest.json" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$tmp/bad"
rm "$tmp/bad/manifest.json"
expect "missing manifest" 1 "bad/manifest.json" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$tmp/bad"
cp "$m/manifest.json" "$tmp/bad/"; rm "$tmp/bad/experts.safetensors"
expect "missing tensors" 1 "experts.safetensors" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$tmp/bad"
[ -d "$tmp/x" ] && fail "a refused moefy left its output" || pass "refused moefy writes nothing"

expect "--k 0" 2 "--k" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 0
expect "--k 150%" 2 "percentage" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --k 150%
expect "--fill x" 2 "--fill" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --fill x
expect "--router x" 2 "--router" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --router x
expect "--k without --moe" 2 "need --moe" -- "$nl" ppl $model "$tmp/calib.jsonl" --k 2
expect "moefy without -o" 2 "-o" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 2
expect "moefy without --experts" 2 "--experts" -- "$nl" moefy $model "$tmp/calib.jsonl" -o "$tmp/x"
expect "--split x" 2 "--split" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 2 --split x -o "$tmp/x"

# ---- the MLP router ---------------------------------------------------------------------------
mm=$tmp/moemlp
if "$nl" moefy $model "$tmp/calib.jsonl" --experts 8 --router mlp --router-epochs 10 --router-k 4 -o "$mm" > "$tmp/out" 2> "$tmp/err" &&
   $py - "$mm" "$tmp/err" <<'PY'
import json, struct, sys
d, err = sys.argv[1], open(sys.argv[2]).read()
m = json.load(open(d + "/manifest.json"))
assert m["routers"] == ["sim", "mlp"] and m["router"] == "mlp", m["routers"]
r = m["router_mlp"]
assert r["epochs"] == 10 and r["lr"] == 0.01 and r["batch"] == 512 and r["fill"] == "mean" and r["holdout"] == 0.1, r
assert [x["layer"] for x in r["layers"]] == [0, 1] and all(x["k"] == 4 and x["train_tokens"] + x["heldout_tokens"] == 320 for x in r["layers"])
b = open(d + "/experts.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
for l in (0, 1):
    assert h["layers.%d.router.mlp.w1" % l]["shape"] == [8, 64] and h["layers.%d.router.mlp.w2" % l]["shape"] == [8, 8]
for l in (0, 1):
    assert ("router layer %d:" % l) in err and "held-out recall K=2 sim" in err and "K=4 sim" in err, err
PY
then pass "moefy --router mlp: both routers, training report, per-layer stderr"; else fail "moefy --router mlp: both routers, training report, per-layer stderr" "$tmp/err"; fi
full=$("$nl" ppl $model "$tmp/calib.jsonl" --moe "$mm" --k 8 --router mlp | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
if [ -n "$dense" ] && [ "$dense" = "$full" ]; then pass "--router mlp: K = E prints the dense perplexity"; else fail "--router mlp: K = E prints the dense perplexity ($dense vs $full)"; fi
"$nl" ppl $model "$tmp/calib.jsonl" --moe "$mm" --k 2 --router mlp --fill mean > "$tmp/out" 2> "$tmp/err"
if grep -q 'router mlp, fill mean' "$tmp/out" && grep -q 'router recall vs oracle 0\.' "$tmp/out"; then pass "ppl --router mlp prints its recall"
else fail "ppl --router mlp prints its recall" "$tmp/out"; fi
expect "--router mlp on a sim-only folder" 1 "'$m' has no mlp router" -- "$nl" ppl $model "$tmp/calib.jsonl" --moe "$m" --router mlp
expect "--router-epochs without --router mlp" 2 "--router mlp" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 2 --router-epochs 3 -o "$tmp/x"
expect "moefy --router oracle" 2 "--router" -- "$nl" moefy $model "$tmp/calib.jsonl" --experts 2 --router oracle -o "$tmp/x"
zoo=notebooks-data/models/silu
if [ -f "$zoo/model.safetensors" ]; then
  head -n 6 notebooks-data/eval/all.jsonl > "$tmp/zcal.jsonl"
  "$nl" moefy $zoo "$tmp/zcal.jsonl" --experts 32 --router mlp --router-epochs 3 -o "$tmp/zmoe" --quiet > /dev/null 2> "$tmp/err"
  zd=$("$nl" ppl $zoo "$tmp/zcal.jsonl" | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
  zf=$("$nl" ppl $zoo "$tmp/zcal.jsonl" --moe "$tmp/zmoe" --router mlp --k 32 --fill mean 2>> "$tmp/err" | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
  zq=$("$nl" ppl $zoo "$tmp/zcal.jsonl" --moe "$tmp/zmoe" --router mlp --k 25% 2>> "$tmp/err" | sed -n 's/^overall  ppl \([0-9.]*\).*/\1/p')
  if [ -n "$zd" ] && [ "$zd" = "$zf" ] && [ -n "$zq" ] && [ "$zq" != "$zd" ]; then pass "zoo silu: --router mlp runs, K = E is dense ($zd), K = 25% $zq"
  else fail "zoo silu: --router mlp runs, K = E is dense ($zd vs $zf), K = 25% ($zq)" "$tmp/err"; fi
else echo "SKIP zoo silu --router mlp: $zoo is absent"; fi

# ---- --moe on generate, perturb, prune, record ---------------------------------------------
bf=tests/fixtures/hf/llama_bf16
"$nl" moefy $bf "$tmp/calib.jsonl" --experts 8 -o "$tmp/moebf" --quiet > /dev/null 2>&1
for mode in "--temp 0 --seed 5" "--temp 0.9 --seed 5"; do
  "$nl" generate $bf --prompt Once -n 24 $mode --json > "$tmp/g0" 2> /dev/null
  "$nl" generate $bf --prompt Once -n 24 $mode --json --moe "$tmp/moebf" --k 8 --fill mean > "$tmp/g1" 2> "$tmp/err"
  "$nl" generate $bf --prompt Once -n 24 $mode --json --moe "$tmp/moebf" --k 1 > "$tmp/g2" 2> /dev/null
  if [ -s "$tmp/g0" ] && cmp -s "$tmp/g0" "$tmp/g1" && grep -q 'K 8 (100.0%)' "$tmp/err"; then pass "generate $mode: K = E gives the dense tokens"
  else fail "generate $mode: K = E gives the dense tokens" "$tmp/err"; fi
  if [ -s "$tmp/g2" ] && ! cmp -s "$tmp/g0" "$tmp/g2"; then pass "generate $mode: K = 1 changes the text"
  else fail "generate $mode: K = 1 changes the text" "$tmp/g2"; fi
done

# jsonsame A B: the two perturb/prune JSON outputs agree (numbers to 1e-5 relative + 1e-7 for the
# relative changes near 0; run ids aside)
jsonsame() {
  $py - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def same(x, y):
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(k == "run_id" or same(x[k], y[k]) for k in x)
    if isinstance(x, list): return isinstance(y, list) and len(x) == len(y) and all(map(same, x, y))
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(y, (int, float)) and isinstance(x, (int, float)) and abs(x - y) <= 1e-5 * max(abs(x), abs(y)) + 1e-7
    return x == y
sys.exit(0 if same(a, b) else 1)
PY
}
pa=(--metric value,random --ratios 0,0.5 --json)
"$nl" perturb $model "$tmp/calib.jsonl" "${pa[@]}" > "$tmp/p0" 2> "$tmp/err"
"$nl" perturb $model "$tmp/calib.jsonl" "${pa[@]}" --moe "$m" --k 8 > "$tmp/p1" 2>> "$tmp/err"
"$nl" perturb $model "$tmp/calib.jsonl" "${pa[@]}" --moe "$m" --k 2 --fill mean > "$tmp/p2" 2>> "$tmp/err"
if [ -s "$tmp/p0" ] && jsonsame "$tmp/p0" "$tmp/p1"; then pass "perturb: K = E gives the dense table"
else fail "perturb: K = E gives the dense table" "$tmp/err"; fi
if [ -s "$tmp/p2" ] && ! jsonsame "$tmp/p0" "$tmp/p2"; then pass "perturb: K < E differs"; else fail "perturb: K < E differs" "$tmp/p2"; fi
"$nl" perturb $model "$tmp/calib.jsonl" --ratios 0.5 --metric value > "$tmp/out" 2> "$tmp/err" --moe "$m" --k 4 --db "$tmp/p.db"
if $py -c '
import json, sqlite3, sys
p = json.loads(sqlite3.connect(sys.argv[1]).execute("SELECT params FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
assert p["moe"]["k"] == 4 and p["moe"]["experts"] == 8 and p["moe"]["fill"] == "zero", p
' "$tmp/p.db" 2> "$tmp/err2" && grep -q 'K 4 (50.0%)' "$tmp/out"; then pass "perturb --moe --db: params carry moe, text prints it"
else fail "perturb --moe --db: params carry moe, text prints it" "$tmp/err2"; fi

printf 'layer,neuron\n0,1\n0,7\n1,3\n1,40\n' > "$tmp/n.csv"
pr=(--db "$tmp/pr.db" --neurons "$tmp/n.csv" --seeds 1 --json)
"$nl" prune $model "$tmp/calib.jsonl" "${pr[@]}" > "$tmp/r0" 2> "$tmp/err"
"$nl" prune $model "$tmp/calib.jsonl" "${pr[@]}" --moe "$m" --k 8 > "$tmp/r1" 2>> "$tmp/err"
"$nl" prune $model "$tmp/calib.jsonl" "${pr[@]}" --moe "$m" --k 2 > "$tmp/r2" 2>> "$tmp/err"
if [ -s "$tmp/r0" ] && jsonsame "$tmp/r0" "$tmp/r1"; then pass "prune: K = E gives the dense matrix"
else fail "prune: K = E gives the dense matrix" "$tmp/err"; fi
if [ -s "$tmp/r2" ] && ! jsonsame "$tmp/r0" "$tmp/r2" && $py -c '
import json, sqlite3, sys
p = json.loads(sqlite3.connect(sys.argv[1]).execute("SELECT params FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
assert p["moe"]["k"] == 2, p' "$tmp/pr.db"; then pass "prune: K < E differs, params carry moe"
else fail "prune: K < E differs, params carry moe" "$tmp/r2"; fi

"$nl" record $model "$tmp/calib.jsonl" -o "$tmp/a0.h5" --quiet > /dev/null 2> "$tmp/err"
"$nl" record $model "$tmp/calib.jsonl" -o "$tmp/a1.h5" --moe "$m" --k 8 > /dev/null 2>> "$tmp/err"
"$nl" record $model "$tmp/calib.jsonl" -o "$tmp/a2.h5" --moe "$m" --k 2 --fill mean --db "$tmp/rec.db" > /dev/null 2>> "$tmp/err"
if $py -c 'import h5py' 2> /dev/null; then
  if $py - "$tmp/a0.h5" "$tmp/a1.h5" "$tmp/a2.h5" "$m" > "$tmp/chk" 2>&1 <<'PY'
import h5py, json, sys
import numpy as np
f0, f1, f2 = (h5py.File(p, "r") for p in sys.argv[1:4])
L = len([k for k in f0["layers"].keys()])
for l in range(L):
    a0, a1, a2 = (f["layers"][str(l)]["ffn_act"][:] for f in (f0, f1, f2))
    assert a0.shape == a1.shape == a2.shape and a0.shape[0] > 0
    err = np.abs(a1 - a0).max() / max(np.abs(a0).max(), 1e-30)
    assert err < 1e-5, (l, err)
    # K = 2 of 8, fill mean: per token, the unselected experts' neurons hold mu exactly
    same = np.isclose(a2, a0, rtol=1e-4, atol=1e-6).mean(axis=1)
    assert same.max() < 0.75, (l, same.max())
print("ok")
PY
  then pass "record: K = E stores the dense ffn_act (1e-5); K < E the MoE layer's activations"
  else fail "record: K = E stores the dense ffn_act (1e-5); K < E the MoE layer's activations" "$tmp/chk"; fi
else echo "SKIP record --moe comparison: /usr/bin/python3 has no h5py"; fi
if $py -c '
import json, sqlite3, sys
p = json.loads(sqlite3.connect(sys.argv[1]).execute("SELECT params FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
assert p["moe"]["k"] == 2 and p["moe"]["fill"] == "mean", p' "$tmp/rec.db" 2> "$tmp/err2"; then pass "record --moe --db: params carry moe"
else fail "record --moe --db: params carry moe" "$tmp/err2"; fi

for c in generate perturb prune record; do
  case $c in
    generate) args=($bf --prompt x) ;;
    prune) args=($model "$tmp/calib.jsonl" --db "$tmp/pr.db" --neurons "$tmp/n.csv") ;;
    record) args=($model "$tmp/calib.jsonl" -o "$tmp/x.h5") ;;
    *) args=($model "$tmp/calib.jsonl") ;;
  esac
  expect "$c --k without --moe" 2 "need --moe" -- "$nl" $c "${args[@]}" --k 2
done
expect "record --resume --moe" 2 "--resume with --moe" -- "$nl" record $model "$tmp/calib.jsonl" -o "$tmp/a2.h5" --resume --moe "$m"
