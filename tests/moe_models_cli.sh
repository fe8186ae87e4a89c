#!/usr/bin/env bash
# moe_models_cli.sh — the mixture-of-experts and Qwen3 model types through the CLI, on the
# fixtures of tests/reference/gen_moe_fixtures.py:
#   - `generate --temp 0` continues "Hello" exactly as the PyTorch reference's greedy decoding
#     (generate.json: the whole sequence recomputed per step) for mixtral, qwen2_moe (BF16),
#     qwen3 and qwen3_moe (F16, sharded);
#   - `info` loads each; bad input is one line naming config.json or the tensor, exit 1:
#     an unknown router option, num_experts_per_tok beyond the experts, a missing expert tensor,
#     an expert tensor of the wrong shape;
#   - `record` refuses a mixture-of-experts layer with a clear message (exit 1, no file written)
#     and records the dense layers of qwen2_moe.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
fx=tests/fixtures/hf
tmp=$(mktemp -d /tmp/nl_moecli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" 2>/dev/null | head -8; fi; }

for m in mixtral qwen2_moe qwen3 qwen3_moe; do
  if [ ! -f "$fx/$m/generate.json" ]; then echo "FAIL $m: $fx/$m/generate.json is missing"; continue; fi
  n=$($py -c "import json,sys; print(len(json.load(open(sys.argv[1]))['greedy']))" "$fx/$m/generate.json")
  "$nl" generate "$fx/$m" --tokenizer "$fx/llama_bf16/tokenizer.json" --prompt Hello -n "$n" --temp 0 --json \
    > "$tmp/g.json" 2> "$tmp/why"
  $py - "$tmp/g.json" "$fx/$m/generate.json" >> "$tmp/why" 2>&1 <<'PY'
import json, sys
g, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert g["prompt_tokens"] == e["prompt_tokens"], (g["prompt_tokens"], e["prompt_tokens"])
assert g["tokens"] == e["greedy"], (g["tokens"], e["greedy"])
PY
  ok $? "generate --temp 0 on $m continues as the PyTorch greedy reference"
  "$nl" info "$fx/$m" > "$tmp/info" 2> "$tmp/why"; ok $? "info $m"
done

grep -q "^experts      6 routed, top-2, width 24; shared expert width 48; 1 of 4 layers$" <("$nl" info "$fx/qwen2_moe" 2>&1) &&
  grep -q "^experts      8 routed, top-2 renormalised, width 32; 2 of 2 layers$" <("$nl" info "$fx/mixtral" 2>&1) &&
  grep -q "head dim 32, q/k RMSNorm per head$" <("$nl" info "$fx/qwen3" 2>&1)
echo "info output differs" > "$tmp/why"; ok $? "info shows the experts (routed, top-k, widths, sparse layers) and q/k norms"

# bad input: a copy of mixtral with one edit; one line on stderr matching the pattern, exit 1
bad() { # what pattern edit-kind args...
  local what=$1 pat=$2; shift 2
  rm -rf "$tmp/b"; mkdir "$tmp/b"; cp "$fx/mixtral/config.json" "$fx/mixtral/model.safetensors" "$tmp/b/"
  $py - "$tmp/b" "$@" <<'PY'
import json, struct, sys
d, kind = sys.argv[1], sys.argv[2]
if kind == "cfg":
    c = json.load(open(d + "/config.json")); c[sys.argv[3]] = json.loads(sys.argv[4])
    json.dump(c, open(d + "/config.json", "w"))
else:  # same-length edit of the safetensors header
    b = bytearray(open(d + "/model.safetensors", "rb").read()); n = struct.unpack("<Q", b[:8])[0]
    h = b[8:8 + n].decode(); a, z = sys.argv[3], sys.argv[4]; assert a in h and len(a) == len(z)
    b[8:8 + n] = h.replace(a, z, 1).encode(); open(d + "/model.safetensors", "wb").write(b)
PY
  "$nl" info "$tmp/b" > /dev/null 2> "$tmp/err"; local rc=$?
  { echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
  [ "$rc" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -Eq -- "$pat" "$tmp/err"
  ok $? "$what: exit 1, one line ($(head -c 150 "$tmp/err"))"
}
bad "unknown router option" "config.json': router option scoring_func = 'sigmoid' is not supported" cfg scoring_func '"sigmoid"'
bad "num_experts_per_tok > num_local_experts" "config.json': num_experts_per_tok = 9 must be in 1\.\.num_local_experts \(8\)" cfg num_experts_per_tok 9
bad "num_experts_per_tok < 1" "num_experts_per_tok = 0 must be in 1\.\.num_local_experts" cfg num_experts_per_tok 0
bad "missing expert tensor" "missing tensor 'model\.layers\.1\.block_sparse_moe\.experts\.6\.w1\.weight'" st \
  '"model.layers.1.block_sparse_moe.experts.6.w1.weight"' '"model.layers.1.block_sparse_moe.experts.6.w0.weight"'
bad "expert tensor of the wrong shape" "tensor 'model\.layers\.0\.block_sparse_moe\.experts\.2\.w3\.weight' has shape \[64, 32\], config\.json implies \[32, 64\]" st \
  '"model.layers.0.block_sparse_moe.experts.2.w3.weight":{"dtype":"F32","shape":[32,64]' \
  '"model.layers.0.block_sparse_moe.experts.2.w3.weight":{"dtype":"F32","shape":[64,32]'

# record: MoE layers are refused by name; the dense layers of qwen2_moe (0, 2, 3) record
printf '{"tokens":[1,15,200,37,99],"label":"a"}\n{"tokens":[3,128,77,5],"label":"b"}\n' > "$tmp/d.jsonl"
"$nl" record "$fx/mixtral" "$tmp/d.jsonl" -o "$tmp/m.h5" > /dev/null 2> "$tmp/err"; rc=$?
{ echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
[ "$rc" -eq 1 ] && grep -q "layer 0 of '.*mixtral' is a mixture-of-experts layer (8 experts)" "$tmp/err" && [ ! -e "$tmp/m.h5" ]
ok $? "record on mixtral refuses its MoE layers, writing no file ($(head -c 150 "$tmp/err"))"
"$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/q.h5" > /dev/null 2> "$tmp/err"; rc=$?
{ echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
[ "$rc" -eq 1 ] && grep -q "layer 1 of '.*qwen2_moe' is a mixture-of-experts layer (6 experts)" "$tmp/err"
ok $? "record on qwen2_moe refuses its MoE layer 1"
"$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/q2.h5" --layers 0,2,3 > /dev/null 2> "$tmp/why"
ok $? "record --layers 0,2,3 on qwen2_moe records the dense layers"
exit 0
