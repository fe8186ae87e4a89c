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
