#!/usr/bin/env bash
# gguf_cli.sh — GGUF files through the CLI (issue 15, phase 1).
#
# 1. Acceptance: `neuronlab ppl FILE.gguf tokens.jsonl` gives every file of ../shared/models/gguf
#    its expected perplexity (expected.json) within 1e-5 relative (SKIP without ../shared).
# 2. `neuronlab tokenize` with the SiLU GGUF file equals the model folder's tokenizer.json on the
#    conformance corpus; `info` lists the metadata (long arrays by length), the tensor types and
#    where the activation came from; --hidden-act changes it; a bad --hidden-act is a usage error.
# 3. Bad files, made here: exit 1 and one line on stderr naming the file — bad version, tensor
#    past the end, unknown tensor type (named), unsupported architecture (the supported ones
#    listed), metadata of the wrong type, absurd counts — with the release build and, when
#    built (make debug-cli), the ASan/UBSan build (no sanitizer report allowed).
# Prints PASS/FAIL/SKIP lines (scripts/run-tests.sh). NL_BUILD selects the build (default build).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl=$build/neuronlab
asan=${NL_ASAN_BIN:-build/debug/neuronlab}
gg=../shared/models/gguf
tmp=$(mktemp -d /tmp/nl_ggufcli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
py=python3

if [ ! -x "$nl" ]; then echo "FAIL gguf cli: $nl is missing (make)"; exit 0; fi

# ---- 1. perplexities -------------------------------------------------------------------------
if [ ! -d "$gg" ]; then
  echo "SKIP GGUF perplexities: ../shared/models/gguf is absent"
else
  for folder in stories260K silu; do
    exp=$gg/$folder/expected.json
    toks=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_file'])" "$exp")
    for f in "$gg/$folder"/*.gguf; do
      name=$(basename "$f")
      want=$($py -c "import json,sys; print(repr(json.load(open(sys.argv[1]))['files'][sys.argv[2]]['ppl']))" "$exp" "$name")
      if ! "$nl" ppl "$f" "$gg/$folder/$toks" --json --quiet >"$tmp/ppl.json" 2>"$tmp/err"; then
        echo "FAIL ppl $name: exit $?"; sed 's/^/    /' "$tmp/err" | head -3; continue
      fi
      got=$($py -c "import json,sys; print(repr(json.load(open(sys.argv[1]))['ppl']))" "$tmp/ppl.json")
      if $py -c "import sys; g,w=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(g-w) <= 1e-5*w else 1)" "$got" "$want"; then
        echo "PASS ppl $name: $got (expected $want, within 1e-5 relative)"
      else
        echo "FAIL ppl $name: $got, expected $want (1e-5 relative)"
      fi
    done
  done
fi

# ---- 2. tokenizer, info, --hidden-act --------------------------------------------------------
silu=$gg/silu/silu-Q8_0.gguf
if [ -f "$silu" ]; then
  ok=1
  for opt in "" "--no-special" "--no-special --parse-special"; do
    "$nl" tokenize "$silu" tests/tokenizer/corpus.jsonl $opt --quiet >"$tmp/a" 2>"$tmp/err" || ok=0
    "$nl" tokenize notebooks-data/models/silu tests/tokenizer/corpus.jsonl $opt --quiet >"$tmp/b" 2>>"$tmp/err" || ok=0
    cmp -s "$tmp/a" "$tmp/b" || { ok=0; echo "    differs with options [$opt]"; }
  done
  rows=$(wc -l <"$tmp/a")
  if [ $ok = 1 ] && [ "$rows" -gt 300 ]; then echo "PASS tokenize with the GGUF metadata equals tokenizer.json ($rows rows, 3 option sets)"
  else echo "FAIL tokenize with the GGUF metadata differs from tokenizer.json"; sed 's/^/    /' "$tmp/err" | head -3; fi

  "$nl" info "$silu" >"$tmp/info" 2>"$tmp/err"
  if grep -q '^tensor types F32 ×13, F16 ×6, Q8_0 ×37$' "$tmp/info" &&
     grep -qE '^  tokenizer.ggml.tokens +array +\[8192 × string\]$' "$tmp/info" &&
     grep -qE '^  llama.block_count +uint32 +6$' "$tmp/info" &&
     grep -q '^activation   silu, from default' "$tmp/info"; then
    echo "PASS info lists the GGUF metadata, the tensor types and the activation's source"
  else
    echo "FAIL info of a GGUF file:"; sed 's/^/    /' "$tmp/info" "$tmp/err" | head -30
  fi
  "$nl" info "$silu" --json >"$tmp/info.json" 2>"$tmp/err"
  if $py - "$tmp/info.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
g = j["gguf"]
assert g["tensor_types"] == {"F32": 13, "F16": 6, "Q8_0": 37}, g["tensor_types"]
assert g["metadata"]["tokenizer.ggml.merges"] == {"type": "string", "n": 7934}
assert g["metadata"]["general.architecture"] == "llama" and g["metadata"]["llama.block_count"] == 6
assert j["act_source"] == "default" and j["act_fn"] == "silu" and j["dtype"] == "q8_0"
EOF
  then echo "PASS info --json of a GGUF file"; else echo "FAIL info --json of a GGUF file"; fi

  "$nl" info "$silu" --hidden-act relu >"$tmp/info" 2>&1
  if grep -q '(gated FFN, relu)' "$tmp/info" && grep -q '^activation   relu, from --hidden-act$' "$tmp/info"; then
    echo "PASS --hidden-act sets a GGUF model's activation"
  else echo "FAIL --hidden-act:"; sed 's/^/    /' "$tmp/info" | head -20; fi
  "$nl" ppl "$silu" "$gg/silu/tokens.jsonl" --hidden-act tanh >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ $rc = 2 ] && grep -q -- '--hidden-act needs one of silu' "$tmp/err"; then echo "PASS an unknown --hidden-act is a usage error (exit 2)"
  else echo "FAIL unknown --hidden-act: exit $rc"; sed 's/^/    /' "$tmp/err" | head -3; fi
else
  echo "SKIP GGUF tokenizer and info checks: $silu is absent"
fi

# ---- 3. bad files ----------------------------------------------------------------------------
$py - "$tmp" <<'EOF'
import struct, sys, os
d = sys.argv[1]
def s(x): b = x.encode(); return struct.pack("<Q", len(b)) + b
def kv_str(k, v): return s(k) + struct.pack("<I", 8) + s(v)
def kv_u32(k, v): return s(k) + struct.pack("<I", 4) + struct.pack("<I", v)
def kv_f32(k, v): return s(k) + struct.pack("<I", 6) + struct.pack("<f", v)
def gguf(kvs, tensors, version=3, data_pad=0, n_tensors=None, n_kv=None):
    # tensors: (name, ne list, type, nbytes)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = b"".join(kvs)
    infos, off, data = b"", 0, b""
    for name, ne, t, nb in tensors:
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", t, off)
        data += bytes(nb) + bytes((32 - nb % 32) % 32)
        off += nb + (32 - nb % 32) % 32
    out = head + body + infos
    out += bytes((32 - len(out) % 32) % 32)
    return out + data
def llama_kv(arch="llama"):
    return [kv_str("general.architecture", arch), kv_u32(arch + ".block_count", 1), kv_u32(arch + ".embedding_length", 32),
            kv_u32(arch + ".feed_forward_length", 64), kv_u32(arch + ".attention.head_count", 2),
            kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5)]
T = [("token_embd.weight", [32, 16], 0, 2048), ("output_norm.weight", [32], 0, 128), ("blk.0.attn_norm.weight", [32], 0, 128),
     ("blk.0.ffn_norm.weight", [32], 0, 128), ("blk.0.attn_q.weight", [32, 32], 0, 4096), ("blk.0.attn_k.weight", [32, 32], 0, 4096),
     ("blk.0.attn_v.weight", [32, 32], 0, 4096), ("blk.0.attn_output.weight", [32, 32], 0, 4096),
     ("blk.0.ffn_gate.weight", [32, 64], 0, 8192), ("blk.0.ffn_up.weight", [32, 64], 0, 8192), ("blk.0.ffn_down.weight", [64, 32], 0, 8192)]
def w(name, b): open(os.path.join(d, name), "wb").write(b)
w("ok.gguf", gguf(llama_kv(), T))
w("version.gguf", gguf(llama_kv(), T, version=7))
w("past_end.gguf", gguf(llama_kv(), T)[:-500])
T77 = list(T); T77[4] = ("blk.0.attn_q.weight", [32, 32], 77, 4096)
w("type77.gguf", gguf(llama_kv(), T77))
TIQ = list(T); TIQ[4] = ("blk.0.attn_q.weight", [32, 32], 16, 32 * 66 // 8)  # IQ2_XXS: 256 in 66 bytes
TIQ[4] = ("blk.0.attn_q.weight", [256, 4], 16, 4 * 66)
w("iq2.gguf", gguf(llama_kv(), TIQ))
w("mamba.gguf", gguf(llama_kv("mamba"), T))
kv = llama_kv(); kv[1] = kv_str("llama.block_count", "one")
w("wrongtype.gguf", gguf(kv, T))
w("ntensors.gguf", gguf(llama_kv(), T, n_tensors=1 << 60))
w("nkv.gguf", gguf(llama_kv(), T, n_kv=1 << 40))
b = bytearray(gguf(llama_kv(), T)); b[24:32] = struct.pack("<Q", 1 << 50)   # the first key's length
w("strlen.gguf", bytes(b))
arr = s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 1 << 40)
w("arrlen.gguf", gguf(llama_kv() + [arr], T))
w("truncated.gguf", gguf(llama_kv(), T)[:20])
EOF
echo '{"tokens": [1, 2, 3]}' >"$tmp/toks.jsonl"
bins=("$nl"); [ -x "$asan" ] && bins+=("$asan")
expect() { # NAME PATTERN FILE [CMD [ARG]]: exit 1, one stderr line matching PATTERN and naming FILE
  local name=$1 pat=$2 file=$3 cmd=${4:-info} extra=${5:-}
  for bin in "${bins[@]}"; do
    local tag=$name; [ "$bin" = "$asan" ] && tag="$name (asan)"
    ASAN_OPTIONS=detect_leaks=1 "$bin" $cmd "$tmp/$file" $extra >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$? lines; lines=$(wc -l <"$tmp/err")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/err" && grep -qF -- "$tmp/$file" "$tmp/err" &&
       ! grep -q 'Sanitizer\|runtime error' "$tmp/err"; then
      echo "PASS $tag"
    else
      echo "FAIL $tag: exit $rc, $lines stderr lines, wanted /$pat/ naming the file:"; sed 's/^/    /' "$tmp/err" | head -6
    fi
  done
}
if "$nl" info "$tmp/ok.gguf" >/dev/null 2>"$tmp/err"; then echo "PASS the generated base file loads"
else echo "FAIL the generated base file does not load:"; sed 's/^/    /' "$tmp/err"; fi
expect "GGUF: unsupported version" "unsupported GGUF version 7 \(supported: 2, 3\)" version.gguf
expect "GGUF: tensor past the end of the file" "tensor 'blk.0.ffn_down.weight' data .* runs past the end of the file" past_end.gguf
expect "GGUF: unknown tensor type named" "tensor 'blk.0.attn_q.weight' has unknown tensor type id 77" type77.gguf
expect "GGUF: a type without a dequantiser named" "tensor 'blk.0.attn_q.weight' has type IQ2_XXS, which neuronlab cannot dequantise" iq2.gguf
expect "GGUF: unsupported architecture lists the supported" "architecture 'mamba' is not supported \(supported: llama, qwen2, qwen3, gpt2, phi2, qwen2moe, qwen3moe\)" mamba.gguf
expect "GGUF: metadata of the wrong type" "metadata key 'llama.block_count' is a string, expected an integer" wrongtype.gguf
expect "GGUF: absurd tensor count" "header claims 1152921504606846976 tensors .* more than the file's" ntensors.gguf
expect "GGUF: absurd key count" "1099511627776 metadata keys, more than the file's" nkv.gguf
expect "GGUF: absurd string length" "metadata key 0 at byte 24 has length 1125899906842624, more than the" strlen.gguf
expect "GGUF: absurd array length" "'tokenizer.ggml.tokens' claims 1099511627776 string elements" arrlen.gguf
expect "GGUF: truncated header" "truncated GGUF file" truncated.gguf
expect "GGUF: bad file in ppl" "tensor 'blk.0.attn_q.weight' has unknown tensor type id 77" type77.gguf ppl "$tmp/toks.jsonl"
expect "GGUF: bad file as a tokenizer" "holds no tokenizer" ok.gguf "tokenize"
# ---- 4. export --gguf / --hf (issue 15 item 3) --------------------------------------------------
# The SiLU zoo folder → GGUF in each type → read back: f32 and f16 (the folder is f16) give the
# folder's perplexity within 1e-5 relative, bf16 and q8_0 only run (their per-element bounds are
# in test_gguf.c); → --hf → the same perplexity as the GGUF; q8_0 is byte-identical to the shared
# silu-Q8_0.gguf (made by llama.cpp's converter conventions); the exported tokenizer (GGUF and the
# folder made back from it) tokenizes the conformance corpus as the source folder; every shared
# GGUF file → --hf → its expected perplexity; qwen3 (tests/fixtures/hf/qwen3) and the GELU zoo
# model (neuronlab.hidden_act) round trip; bad input is one line naming the file.
zoo=notebooks-data/models/silu
data=notebooks-data/eval/math.jsonl
ppl_of() { "$nl" ppl "$1" "$2" --json --quiet 2>"$tmp/err" | $py -c "import json,sys; print(repr(json.load(sys.stdin)['ppl']))"; }
same() { $py -c "import sys; g,w=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(g-w) <= 1e-5*w else 1)" "$1" "$2" 2>/dev/null; }
if [ -d "$zoo" ]; then
  head -n 40 "$data" >"$tmp/math.jsonl"
  ref=$(ppl_of "$zoo" "$tmp/math.jsonl")
  for t in f32 f16 bf16 q8_0; do
    if ! "$nl" export "$zoo" --gguf "$tmp/silu-$t.gguf" --type "$t" --quiet 2>"$tmp/err"; then
      echo "FAIL export --gguf --type $t:"; sed 's/^/    /' "$tmp/err" | head -3; continue
    fi
    got=$(ppl_of "$tmp/silu-$t.gguf" "$tmp/math.jsonl")
    if [ "$t" = f32 ] || [ "$t" = f16 ]; then
      if same "$got" "$ref"; then echo "PASS export silu --gguf --type $t: ppl $got = folder's $ref"
      else echo "FAIL export silu --gguf --type $t: ppl $got, folder $ref"; fi
    elif [ -n "$got" ]; then echo "PASS export silu --gguf --type $t runs: ppl $got (folder $ref)"
    else echo "FAIL export silu --gguf --type $t: ppl failed"; sed 's/^/    /' "$tmp/err" | head -3; fi
    if "$nl" export "$tmp/silu-$t.gguf" --hf "$tmp/silu-$t-hf" --quiet 2>"$tmp/err"; then
      back=$(ppl_of "$tmp/silu-$t-hf" "$tmp/math.jsonl")
      if same "$back" "$got"; then echo "PASS export silu-$t.gguf --hf: ppl $back = the GGUF's"
      else echo "FAIL export silu-$t.gguf --hf: ppl $back, GGUF $got"; fi
    else echo "FAIL export silu-$t.gguf --hf:"; sed 's/^/    /' "$tmp/err" | head -3; fi
  done
  if [ -f "$gg/silu/silu-Q8_0.gguf" ]; then
    if cmp -s "$tmp/silu-q8_0.gguf" "$gg/silu/silu-Q8_0.gguf"; then
      echo "PASS export silu --gguf --type q8_0 is byte-identical to the shared silu-Q8_0.gguf"
    else echo "FAIL export silu --gguf --type q8_0 differs from the shared silu-Q8_0.gguf"; fi
  else echo "SKIP byte comparison with silu-Q8_0.gguf: ../shared/models/gguf is absent"; fi
  ok=1
  for opt in "" "--no-special" "--no-special --parse-special"; do
    "$nl" tokenize "$zoo" tests/tokenizer/corpus.jsonl $opt --quiet >"$tmp/a" 2>"$tmp/err" || ok=0
    for m in "$tmp/silu-f32.gguf" "$tmp/silu-f32-hf"; do
      "$nl" tokenize "$m" tests/tokenizer/corpus.jsonl $opt --quiet >"$tmp/b" 2>>"$tmp/err" || ok=0
      cmp -s "$tmp/a" "$tmp/b" || { ok=0; echo "    $m differs with options [$opt]"; }
    done
  done
  if [ $ok = 1 ]; then echo "PASS exported tokenizer (GGUF metadata and the tokenizer.json made back) equals the folder's on the corpus"
  else echo "FAIL exported tokenizer differs from the folder's:"; sed 's/^/    /' "$tmp/err" | head -3; fi
  gelu=notebooks-data/models/gelu
  if "$nl" export "$gelu" --gguf "$tmp/gelu.gguf" --type f32 --quiet 2>"$tmp/err" &&
     "$nl" info "$tmp/gelu.gguf" | grep -q "activation   gelu, from neuronlab.hidden_act" &&
     same "$(ppl_of "$tmp/gelu.gguf" "$tmp/math.jsonl")" "$(ppl_of "$gelu" "$tmp/math.jsonl")"; then
    echo "PASS export gelu --gguf: neuronlab.hidden_act = gelu, ppl equal to the folder's"
  else echo "FAIL export gelu --gguf"; sed 's/^/    /' "$tmp/err" | head -3; fi
else
  echo "SKIP export of the zoo models: $zoo is absent"
fi
if [ -d "$gg" ]; then
  for folder in stories260K silu; do
    exp=$gg/$folder/expected.json
    toks=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_file'])" "$exp")
    for f in "$gg/$folder"/*.gguf; do
      name=$(basename "$f" .gguf)
      want=$($py -c "import json,sys; print(repr(json.load(open(sys.argv[1]))['files'][sys.argv[2]]['ppl']))" "$exp" "$name.gguf")
      if "$nl" export "$f" --hf "$tmp/hf-$name" --quiet 2>"$tmp/err" && got=$(ppl_of "$tmp/hf-$name" "$gg/$folder/$toks") &&
         same "$got" "$want"; then echo "PASS $name.gguf --hf: ppl $got (expected $want)"
      else echo "FAIL $name.gguf --hf: ppl ${got:-?}, expected $want"; sed 's/^/    /' "$tmp/err" | head -3; fi
    done
  done
else
  echo "SKIP shared GGUF files to --hf: ../shared/models/gguf is absent"
fi
q3=tests/fixtures/hf/qwen3
$py -c "
import json, random
r = random.Random(7)
for i in range(8): print(json.dumps({'tokens': [r.randrange(260) for _ in range(r.randrange(20, 200))]}))" >"$tmp/q3.jsonl"
qref=$(ppl_of "$q3" "$tmp/q3.jsonl")
if "$nl" export "$q3" --gguf "$tmp/q3.gguf" --type f32 --quiet 2>"$tmp/err" && "$nl" export "$tmp/q3.gguf" --hf "$tmp/q3-hf" --quiet 2>>"$tmp/err" &&
   same "$(ppl_of "$tmp/q3.gguf" "$tmp/q3.jsonl")" "$qref" && same "$(ppl_of "$tmp/q3-hf" "$tmp/q3.jsonl")" "$qref" &&
   "$nl" info "$tmp/q3.gguf" | grep -q "architecture qwen3"; then
  echo "PASS qwen3 fixture → GGUF (attn_q_norm/attn_k_norm) → HF: ppl $qref all three"
else echo "FAIL qwen3 round trip (folder ppl $qref)"; sed 's/^/    /' "$tmp/err" | head -3; fi
# bad input: one line naming the file
for bin in "${bins[@]}"; do
  tag=""; [ "$bin" = "$asan" ] && tag=" (asan)"
  "$bin" export tests/fixtures/hf/gpt2 --gguf "$tmp/g.gguf" >"$tmp/out" 2>"$tmp/err"; rc=$?
  if [ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "tests/fixtures/hf/gpt2': architecture 'gpt2' cannot be exported (supported: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe)" "$tmp/err" &&
     [ ! -e "$tmp/g.gguf" ]; then echo "PASS export of an unsupported architecture: one line naming the folder$tag"
  else echo "FAIL export of gpt2: exit $rc$tag"; sed 's/^/    /' "$tmp/err" | head -3; fi
done
"$nl" export "$q3" --gguf "$tmp/x.gguf" --type q4_0 >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 2 ] && grep -q "type is f32, f16, bf16 or q8_0" "$tmp/err"; then echo "PASS export --type q4_0 is a usage error"
else echo "FAIL export --type q4_0: exit $rc"; fi
"$nl" export "$q3" --gguf "$tmp/q3.gguf" >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 1 ] && grep -q "q3.gguf' exists (use --force" "$tmp/err"; then echo "PASS export refuses an existing output without --force"
else echo "FAIL export over an existing output: exit $rc"; fi
"$nl" export "$tmp/q3.gguf" --gguf "$tmp/q3.gguf" --force >/dev/null 2>"$tmp/err"; rc=$?
if [ $rc = 1 ] && grep -q "refusing to write .*q3.gguf': it is the model" "$tmp/err"; then echo "PASS export never overwrites its model"
else echo "FAIL export onto its own model: exit $rc"; fi
exit 0
