#!/usr/bin/env bash
# cli_errors.sh — every bad input the CLI can meet gets a one-line error that names the
# file (and line), exit status 1, and no sanitizer report. Runs the release binary and,
# when present, the ASan/UBSan build (build/debug/neuronlab, made by `make test`).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
tmp=$(mktemp -d /tmp/nl_cli_errors.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf

bins=("$build/neuronlab")
[ -x build/debug/neuronlab ] && bins+=(build/debug/neuronlab)

# expect NAME PATTERN CMD...: exit 1, exactly one line on stderr matching PATTERN, no sanitizer output.
expect() {
  local name=$1 pat=$2; shift 2
  for bin in "${bins[@]}"; do
    local tag=$name; [ "$bin" != "${bins[0]}" ] && tag="$name (asan)"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$? lines; lines=$(wc -l <"$tmp/err")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/err" && ! grep -q 'Sanitizer\|runtime error' "$tmp/err"; then
      echo "PASS $tag"
    else
      echo "FAIL $tag: exit $rc, $lines stderr lines, wanted /$pat/:"; sed 's/^/    /' "$tmp/err" | head -8
    fi
  done
}

# A tiny llama2.c checkpoint (dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 10, seq 4).
/usr/bin/env python3 - "$tmp" <<'PY'
import struct, sys, random
d = sys.argv[1]; random.seed(1)
D, F, L, H, Hk, V, S = 8, 16, 1, 2, 2, 10, 4
n = V*D + L*D + L*D*D*2 + L*D*D*2 + L*D + 3*L*F*D + D + S*(D//H)
with open(d + "/tiny.bin", "wb") as f:
    f.write(struct.pack("7i", D, F, L, H, Hk, V, S))
    f.write(struct.pack("%df" % n, *[random.uniform(-.1, .1) for _ in range(n)]))
open(d + "/ok.jsonl", "w").write('{"tokens": [1, 2, 3]}\n')
open(d + "/empty.jsonl", "w").write('')
open(d + "/notjson.jsonl", "w").write('{"tokens": [1, 2]}\n{"tokens": [1, 2\n')
open(d + "/bigid.jsonl", "w").write('{"tokens": [1, 2]}\n{"tokens": [3, 10]}\n')
PY

if [ ! -f "$tmp/tiny.bin" ]; then echo "FAIL setup: could not write the tiny checkpoint"; exit 1; fi
if "$build/neuronlab" ppl "$tmp/tiny.bin" "$tmp/ok.jsonl" >/dev/null 2>&1; then echo "PASS tiny llama2.c checkpoint scores"; else echo "FAIL tiny llama2.c checkpoint scores"; fi

head -c 1000 "$tmp/tiny.bin" > "$tmp/short.bin"
expect "llama2.c file of the wrong size" "short.bin': file has 1000 bytes, its header .* implies" info "$tmp/short.bin"
expect "missing model" "cannot open '$tmp/nope.bin'" info "$tmp/nope.bin"
expect "empty jsonl" "empty.jsonl': no documents" ppl "$tmp/tiny.bin" "$tmp/empty.jsonl"
expect "line that is not JSON" "notjson.jsonl' line 2: not JSON" ppl "$tmp/tiny.bin" "$tmp/notjson.jsonl"
expect "token id >= vocabulary" "bigid.jsonl' line 2: token id 10 is outside the vocabulary \(size 10\)" ppl "$tmp/tiny.bin" "$tmp/bigid.jsonl"

if [ -d "$fx/llama" ]; then
  mk() { rm -rf "$tmp/$1"; cp -r "$fx/$2" "$tmp/$1"; }
  mk trunc llama; head -c 5000 "$fx/llama/model.safetensors" > "$tmp/trunc/model.safetensors"
  expect "truncated safetensors" "trunc/model.safetensors'" info "$tmp/trunc"
  mk hdrlen llama; /usr/bin/env python3 -c "
import struct,sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[0:8]=struct.pack('<Q', 9*10**18); open(p,'wb').write(b)" "$tmp/hdrlen/model.safetensors"
  expect "header length beyond the file" "hdrlen/model.safetensors'.*header" info "$tmp/hdrlen"
  mk garbage llama; /usr/bin/env python3 -c "
import struct,sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); n=struct.unpack('<Q',b[:8])[0]; b[8:8+n]=b'{'+b'x'*(n-1); open(p,'wb').write(b)" "$tmp/garbage/model.safetensors"
  expect "garbage JSON header" "garbage/model.safetensors'" info "$tmp/garbage"
  mk shape llama; sed -i 's/"intermediate_size": *[0-9]*/"intermediate_size": 999/' "$tmp/shape/config.json"
  expect "shape contradicting config.json" "shape/.*(shape|999)" info "$tmp/shape"
  mk mtype llama; sed -i 's/"model_type": *"llama"/"model_type": "foo"/' "$tmp/mtype/config.json"
  expect "unknown model_type" "mtype/config.json': unknown model_type 'foo' \(supported: " info "$tmp/mtype"
  if [ -d "$fx/mistral_sharded" ]; then
    mk shard mistral_sharded; rm -f "$tmp/shard/model-00002-of-00002.safetensors"
    expect "missing shard" "model-00002-of-00002.safetensors" info "$tmp/shard"
  fi
  mk dtype llama; /usr/bin/env python3 -c "
import json,struct,sys; p=sys.argv[1]; b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
k=[k for k in h if k.endswith('up_proj.weight')][0]; h[k]['dtype']='F16'
s=h[k]['data_offsets']; h[k]['data_offsets']=[s[0], s[0]+(s[1]-s[0])//2]
j=json.dumps(h).encode(); j+=b' '*((8-len(j)%8)%8); open(p,'wb').write(struct.pack('<Q',len(j))+j+b[8+n:])" "$tmp/dtype/model.safetensors"
  expect "tensor dtype contradicting the others" "dtype/model.safetensors'" ppl "$tmp/dtype" "$tmp/ok.jsonl"
else
  echo "SKIP safetensors error cases: tests/fixtures/hf/llama is missing"
fi

if "$build/neuronlab" --help 2>/dev/null | grep -q '^  record'; then
  expect "output path not writable" "cannot create '/nonexistent/dir/acts.h5'" record "$tmp/tiny.bin" "$tmp/ok.jsonl" -o /nonexistent/dir/acts.h5
fi

# tokenizers (issue 3): `tokenize` on bad tokenizer files, text rows without a tokenizer, generate
printf '{"text": "hi"}\n' > "$tmp/text.jsonl"
printf '{"version": "1.0", "added_tokens": []}' > "$tmp/nomodel.json"
printf '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}' > "$tmp/wordpiece.json"
printf '{"pre_tokenizer": {"type": "CharDelimiterSplit", "delimiter": " "}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}' > "$tmp/pretok.json"
printf '{"model": {"type": "BPE", "vocab": {"a": 0, "ab": 1}, "merges": ["a b"]}}' > "$tmp/merge.json"
expect "tokenizer.json without a model" "nomodel.json'.*no \"model\"" tokenize "$tmp/nomodel.json" < "$tmp/text.jsonl"
expect "unsupported tokenizer model type" "wordpiece.json'.*unsupported model type 'WordPiece' \(supported: BPE\)" tokenize "$tmp/wordpiece.json" < "$tmp/text.jsonl"
expect "unsupported pre-tokenizer type" "pretok.json'.*unsupported pre_tokenizer type 'CharDelimiterSplit' \(supported: Sequence, Split, ByteLevel" tokenize "$tmp/pretok.json" < "$tmp/text.jsonl"
expect "merge naming an unknown token" "merge.json'.*names the token 'b', which is not in the vocabulary" tokenize "$tmp/merge.json" < "$tmp/text.jsonl"
if [ -f ../shared/tokenizers/llama2/tokenizer.model ]; then
  mkdir -p "$tmp/tm"; head -c 100000 ../shared/tokenizers/llama2/tokenizer.model > "$tmp/tm/tokenizer.model"
  expect "truncated tokenizer.model" "tokenizer.model'.*truncated" tokenize "$tmp/tm/tokenizer.model" < "$tmp/text.jsonl"
else
  echo "SKIP truncated tokenizer.model: ../shared/tokenizers/llama2/tokenizer.model is absent"
fi
printf '{"tokens": [1]}\n{"text": 5}\n' > "$tmp/badtext.jsonl"
expect "text rows without a tokenizer" "text.jsonl' line 1: text rows need a tokenizer" ppl "$tmp/tiny.bin" "$tmp/text.jsonl"
if [ -d "$fx/gpt2" ]; then
  expect "text that is not a string" "badtext.jsonl' line 2: \"text\" must be a string" ppl "$fx/gpt2" "$tmp/badtext.jsonl"
  expect "tokenizer id beyond the model" "tokenizer.json' gave token id 256, outside the vocabulary of .*gpt_neox' \(size 256\)" generate "$fx/gpt_neox" --tokenizer "$fx/gpt2" --prompt "" --temp 0
  expect "missing --tokenizer file" "cannot open '$tmp/none.json'" ppl "$fx/gpt2" "$tmp/text.jsonl" --tokenizer "$tmp/none.json"
  expect "generate without a tokenizer" "'$fx/llama': no tokenizer found with the model \(give --tokenizer PATH\)" generate "$fx/llama" --prompt hi
fi
# robustness of model loading and non-finite numbers (R11, R12, R13): config values checked in the
# float precision the model uses, safetensors data sections that do not match their header, layer
# counts the tensors do not hold, NaN weights and NaN tokenizer scores.
/usr/bin/env python3 - "$tmp" <<'PY'
import struct, sys, random
d = sys.argv[1]; random.seed(1)
D, F, L, H, Hk, V, S = 8, 16, 1, 2, 2, 10, 4
n = V*D + L*D + L*D*D*2 + L*D*D*2 + L*D + 3*L*F*D + D + S*(D//H)
w = [random.uniform(-.1, .1) for _ in range(n)]
w[V*D + 3] = float('nan')  # the first layer's attention norm
with open(d + "/nanw.bin", "wb") as f:
    f.write(struct.pack("7i", D, F, L, H, Hk, V, S))
    f.write(struct.pack("%df" % n, *w))
with open(d + "/hugehdr.bin", "wb") as f:  # 4096 layers of width 2^20: petabytes implied by 28 + 64 bytes
    f.write(struct.pack("7i", 1 << 20, 1 << 22, 4096, 16, 16, 1 << 24, 1 << 24) + b"\0" * 64)
toks = ["<unk>", "\n<s>\n", "\n</s>\n", "a", "b"]
for name, bad in (("nan", float("nan")), ("inf", float("inf"))):
    with open(d + "/tok_%s.bin" % name, "wb") as f:
        f.write(struct.pack("i", 8))
        for i, t in enumerate(toks):
            b = t.encode()
            f.write(struct.pack("<fi", bad if i == 3 else -float(i), len(b)) + b)
PY
expect "llama2.c weights with NaN: ppl" "nanw.bin': the loss is not finite \(nan\) at document 1 \(line 1\)" ppl "$tmp/nanw.bin" "$tmp/ok.jsonl"
expect "llama2.c weights with NaN: ppl --json" "nanw.bin': the loss is not finite" ppl "$tmp/nanw.bin" "$tmp/ok.jsonl" --json
if [ -s "$tmp/out" ]; then echo "FAIL ppl --json on NaN weights wrote to stdout"; else echo "PASS ppl --json on NaN weights writes nothing"; fi
expect "llama2.c weights with NaN: perturb" "nanw.bin': the loss is not finite" perturb "$tmp/nanw.bin" "$tmp/ok.jsonl" --db "$tmp/nanw.db" --ratios 0 --metric value
expect "llama2.c header implying petabytes" "hugehdr.bin': file has 92 bytes, its header \(dim 1048576, layers 4096" info "$tmp/hugehdr.bin"
expect "tokenizer.bin with a NaN score" "tok_nan.bin': token 3 has score nan" tokenize "$tmp/tok_nan.bin" < "$tmp/text.jsonl"
expect "tokenizer.bin with an infinite score" "tok_inf.bin': token 3 has score inf" tokenize "$tmp/tok_inf.bin" < "$tmp/text.jsonl"

if [ -d "$fx/llama" ]; then
  mk() { rm -rf "$tmp/$1"; cp -r "$fx/$2" "$tmp/$1"; }
  setcfg() { /usr/bin/env python3 -c "
import json,sys; p=sys.argv[1]; c=json.load(open(p)); c[sys.argv[2]]=json.loads(sys.argv[3]); json.dump(c,open(p,'w'))" "$tmp/$1/config.json" "$2" "$3"; }
  mk theta llama; setcfg theta rope_theta 1e-300
  expect "rope_theta 0 as a float (R11)" "theta/config.json': field 'rope_theta' is 1e-300, which becomes 0" ppl "$tmp/theta" "$tmp/ok.jsonl"
  expect "rope_theta 0 as a float, --json (R11)" "theta/config.json': field 'rope_theta'" ppl "$tmp/theta" "$tmp/ok.jsonl" --json
  mk theta2 llama; setcfg theta2 rope_theta 1e39
  expect "rope_theta beyond a float" "theta2/config.json': field 'rope_theta' is 1e\+39, beyond the largest single-precision float" info "$tmp/theta2"
  mk eps llama; setcfg eps rms_norm_eps 1e-300
  expect "rms_norm_eps 0 as a float" "eps/config.json': field 'rms_norm_eps' is 1e-300, which becomes 0" info "$tmp/eps"
  mk rsf llama; setcfg rsf rope_scaling '{"rope_type": "linear", "factor": 1e-45}'
  expect "rope scaling factor denormal as a float" "rsf/config.json': field 'rope_scaling.factor' is 1e-45" info "$tmp/rsf"
  mk layers llama; setcfg layers num_hidden_layers 2147483647
  expect "num_hidden_layers beyond the tensors (R13)" "layers/config.json': num_hidden_layers is 2147483647, but .*layers/model.safetensors' holds 2 layers" info "$tmp/layers"
  mk ins llama; /usr/bin/env python3 -c "
import struct,sys; p=sys.argv[1]; b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; k=8+n+1000
open(p,'wb').write(b[:k]+b'\0\0'+b[k:])" "$tmp/ins/model.safetensors"
  expect "2 bytes inserted into the data section (R12)" "ins/model.safetensors': the data section has [0-9]+ bytes but the last tensor ends at byte" ppl "$tmp/ins" "$tmp/ok.jsonl"
  mk ovl llama; /usr/bin/env python3 -c "
import json,struct,sys; p=sys.argv[1]; b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
t=sorted((v['data_offsets'][0],k) for k,v in h.items() if k!='__metadata__')
a,bn=h[t[0][1]],h[t[1][1]]; a['data_offsets'],bn['data_offsets']=[0,a['data_offsets'][1]-a['data_offsets'][0]],[0,bn['data_offsets'][1]-bn['data_offsets'][0]]
j=json.dumps(h).encode(); j+=b' '*((8-len(j)%8)%8); open(p,'wb').write(struct.pack('<Q',len(j))+j+b[8+n:])" "$tmp/ovl/model.safetensors"
  expect "overlapping tensors" "ovl/model.safetensors': tensor '.*' \(bytes 0\.\.[0-9]+ of the data section\) overlaps tensor" info "$tmp/ovl"
  if "$build/neuronlab" ppl "$fx/llama" "$tmp/ok.jsonl" --json > "$tmp/ok.json" 2>/dev/null &&
     /usr/bin/env python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$tmp/ok.json" 2>/dev/null; then
    echo "PASS ppl --json is valid JSON"
  else
    echo "FAIL ppl --json is not valid JSON"
  fi
  if "$build/neuronlab" info "$fx/llama" --json > "$tmp/info.json" 2>/dev/null &&
     /usr/bin/env python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$tmp/info.json" 2>/dev/null; then
    echo "PASS info --json is valid JSON"
  else
    echo "FAIL info --json is not valid JSON"
  fi
else
  echo "SKIP config and safetensors robustness cases: tests/fixtures/hf/llama is missing"
fi
exit 0
