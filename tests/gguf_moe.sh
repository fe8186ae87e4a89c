#!/usr/bin/env bash
# gguf_moe.sh — mixture-of-experts models through `neuronlab export` and the GGUF reader.
#
# 1. Each MoE fixture of tests/fixtures/hf (mixtral, qwen2_moe BF16 with dense layers, qwen3_moe
#    F16 sharded) exported with --gguf (f32 and q8_0) has llama.cpp's layout, read with the
#    independent reader tests/gguf_read.py: general.architecture llama / qwen2moe / qwen3moe,
#    {arch}.expert_count / expert_used_count (+ expert_feed_forward_length,
#    expert_shared_feed_forward_length for the qwen archs), stacked 3-D experts with ggml ne
#    [D, Fe, E] (gate, up) and [Fe, D, E] (down), the router F32, the shared expert's gate a
#    vector [D] in F32, Q8_0 experts unless their rows are not whole blocks (then F16, as the
#    converter falls back); `generate --temp 0` on the f32 file continues "Hello" exactly as the
#    PyTorch greedy reference (generate.json); `record` on the f32 file writes the same datasets
#    (router logits, experts, weights, expert / shared / dense activations) as on the folder.
# 2. GGUF → --hf folder: config.json carries the MoE keys of the source (qwen2_moe's
#    decoder_sparse_step 2 and mlp_only_layers [3] included) and generates the same tokens.
# 3. Size: a random mixtral folder of the MoE zoo's shape (d_model 256, 6 layers, 8 experts of
#    352, vocab 8192, tied, f16) exports to Q8_0 of the size its tensors imply (≈ 18 MB), every
#    matrix Q8_0.
# 4. Bad files (edits of an exported file): unknown architecture, expert_used_count >
#    expert_count, a missing expert tensor, a 3-D expert tensor of the wrong shape — exit 1 and
#    one line on stderr naming the file and the problem.
# Prints PASS/FAIL/SKIP lines (scripts/run-tests.sh). NL_BUILD selects the build (default build).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
fx=tests/fixtures/hf
tmp=$(mktemp -d /tmp/nl_ggufmoe.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" 2>/dev/null | head -8; fi; }

if [ ! -x "$nl" ]; then echo "FAIL gguf moe: $nl is missing (make)"; exit 0; fi
if ! $py -c "import numpy" 2>/dev/null; then echo "SKIP gguf moe: python3 with numpy is missing"; exit 0; fi

greedy() { # model fixture → 0 when generate --temp 0 equals generate.json
  "$nl" generate "$1" --tokenizer "$fx/llama_bf16/tokenizer.json" --prompt Hello \
    -n "$($py -c "import json,sys; print(len(json.load(open(sys.argv[1]))['greedy']))" "$fx/$2/generate.json")" \
    --temp 0 --json > "$tmp/g.json" 2> "$tmp/why" || return 1
  $py - "$tmp/g.json" "$fx/$2/generate.json" >> "$tmp/why" 2>&1 <<'PY'
import json, sys
g, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert g["tokens"] == e["greedy"], (g["tokens"], e["greedy"])
PY
}

# ---- 1, 2. the fixtures ------------------------------------------------------------------------
for m in mixtral qwen2_moe qwen3_moe; do
  if [ ! -f "$fx/$m/config.json" ]; then echo "SKIP $m: $fx/$m is absent"; continue; fi
  for t in f32 q8_0; do
    "$nl" export "$fx/$m" --gguf "$tmp/$m-$t.gguf" --type $t > /dev/null 2> "$tmp/why"
    ok $? "export $m --gguf --type $t"
    $py - "$tmp/$m-$t.gguf" "$fx/$m/config.json" "$t" > "$tmp/why" 2>&1 <<'PY'
import json, sys
sys.path.insert(0, "tests")
import gguf_read
_, kv, ts = gguf_read.read(sys.argv[1])
c, qtype = json.load(open(sys.argv[2])), sys.argv[3]
mt = c["model_type"]
arch = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}[mt]
val = lambda k: kv[k][1]
assert val("general.architecture") == arch.encode(), val("general.architecture")
E = c.get("num_local_experts", c.get("num_experts"))
Fe = c["intermediate_size"] if mt == "mixtral" else c["moe_intermediate_size"]
D, L = c["hidden_size"], c["num_hidden_layers"]
assert val(arch + ".expert_count") == E and val(arch + ".expert_used_count") == c["num_experts_per_tok"]
if mt != "mixtral":
    assert val(arch + ".expert_feed_forward_length") == Fe
if mt == "qwen2_moe":
    assert val(arch + ".expert_shared_feed_forward_length") == c["shared_expert_intermediate_size"]
step, only = c.get("decoder_sparse_step", 1), c.get("mlp_only_layers", [])
moe = [l for l in range(L) if l not in only and (l + 1) % step == 0]
for l in range(L):
    if l not in moe:
        assert "blk.%d.ffn_gate_inp.weight" % l not in ts and "blk.%d.ffn_up.weight" % l in ts, l
        continue
    r = ts["blk.%d.ffn_gate_inp.weight" % l]
    assert r["ne"] == [D, E] and r["type"] == 0, r["ne"]
    for k, ne in (("gate", [D, Fe, E]), ("up", [D, Fe, E]), ("down", [Fe, D, E])):
        t = ts["blk.%d.ffn_%s_exps.weight" % (l, k)]
        want = 0 if qtype == "f32" else (8 if ne[0] % 32 == 0 else 1)
        assert t["ne"] == ne and t["type"] == want, (l, k, t["ne"], t["type"])
    if mt == "qwen2_moe":
        g = ts["blk.%d.ffn_gate_inp_shexp.weight" % l]
        assert g["ne"] == [D] and g["type"] == 0, g["ne"]
        assert ts["blk.%d.ffn_down_shexp.weight" % l]["ne"] == [c["shared_expert_intermediate_size"], D]
assert ("output.weight" in ts) != c["tie_word_embeddings"]
print("layers", moe, "of", L, "MoE")
PY
    ok $? "$m $t: llama.cpp's names, metadata, 3-D expert shapes and types ($(tail -1 "$tmp/why"))"
  done
  greedy "$tmp/$m-f32.gguf" "$m"; ok $? "generate --temp 0 on the f32 GGUF of $m continues as the PyTorch greedy reference"
  if $py -c "import h5py" 2>/dev/null; then
    $py -c "import json,sys; print(json.dumps({'tokens': json.load(open(sys.argv[1]))['tokens']}))" \
      "$fx/$m/expected.json" > "$tmp/fx.jsonl"
    "$nl" record "$fx/$m" "$tmp/fx.jsonl" -o "$tmp/$m-a.h5" > /dev/null 2> "$tmp/why" &&
    "$nl" record "$tmp/$m-f32.gguf" "$tmp/fx.jsonl" -o "$tmp/$m-b.h5" > /dev/null 2>> "$tmp/why" &&
    $py - "$tmp/$m-a.h5" "$tmp/$m-b.h5" > "$tmp/why" 2>&1 <<'PY'
import sys
import h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
a["layers"].visit(lambda n: names.append(n) if isinstance(a["layers"][n], h5py.Dataset) else None)
assert any(n.endswith("router_logits") for n in names) and any(n.endswith("expert_act") for n in names), names
for n in names:
    x, y = a["layers"][n][()], b["layers"][n][()]
    assert x.shape == y.shape and np.array_equal(x, y), (n, x.shape, y.shape, float(np.max(np.abs(x - y))))
print(len(names), "datasets")
PY
    ok $? "record on the f32 GGUF of $m equals record on the folder ($(tail -1 "$tmp/why"): router logits, experts, weights, activations)"
  else
    echo "SKIP record comparison on $m: h5py is missing"
  fi
  "$nl" export "$tmp/$m-f32.gguf" --hf "$tmp/$m-hf" > /dev/null 2> "$tmp/why"; ok $? "export the $m GGUF --hf"
  $py - "$tmp/$m-hf/config.json" "$fx/$m/config.json" > "$tmp/why" 2>&1 <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
L = b["num_hidden_layers"]
keys = ["model_type", "num_local_experts", "num_experts", "num_experts_per_tok", "intermediate_size",
        "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob", "decoder_sparse_step"]
for k in keys:
    if k in b and not (b["model_type"] == "mixtral" and k == "norm_topk_prob"):
        assert a.get(k) == b[k], (k, a.get(k), b[k])
if "mlp_only_layers" in b:
    assert a["mlp_only_layers"] == [l for l in b["mlp_only_layers"] if l < L], a["mlp_only_layers"]
PY
  ok $? "$m GGUF → --hf: config.json keeps the MoE keys"
  greedy "$tmp/$m-hf" "$m"; ok $? "generate --temp 0 on the $m folder made from the GGUF continues as the reference"
done

# ---- 3. size of a zoo-shaped mixtral --------------------------------------------------------------
$py - "$tmp/zoo" > "$tmp/why" 2>&1 <<'PY'
import json, os, sys
import numpy as np
d = sys.argv[1]; os.makedirs(d)
D, L, E, Fe, V, H = 256, 6, 8, 352, 8192, 8
rng = np.random.default_rng(1)
ts = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
for l in range(L):
    p = "model.layers.%d." % l
    ts[p + "input_layernorm.weight"] = (D,); ts[p + "post_attention_layernorm.weight"] = (D,)
    for n in "qkvo": ts[p + "self_attn.%s_proj.weight" % n] = (D, D)
    ts[p + "block_sparse_moe.gate.weight"] = (E, D)
    for e in range(E):
        for w, s in (("w1", (Fe, D)), ("w3", (Fe, D)), ("w2", (D, Fe))):
            ts[p + "block_sparse_moe.experts.%d.%s.weight" % (e, w)] = s
hdr, blobs, off = {}, [], 0
for n, s in ts.items():
    a = (np.ones(s) if len(s) == 1 else rng.normal(0, 0.02, s)).astype(np.float16).tobytes()
    hdr[n] = {"dtype": "F16", "shape": list(s), "data_offsets": [off, off + len(a)]}
    blobs.append(a); off += len(a)
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
with open(d + "/model.safetensors", "wb") as f:
    f.write(len(h).to_bytes(8, "little")); f.write(h); [f.write(a) for a in blobs]
json.dump({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": D, "intermediate_size": Fe,
           "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": H, "vocab_size": V,
           "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "num_local_experts": E,
           "num_experts_per_tok": 2, "tie_word_embeddings": True, "hidden_act": "silu", "sliding_window": None,
           "torch_dtype": "float16"}, open(d + "/config.json", "w"))
PY
if [ $? -ne 0 ]; then ok 1 "make the zoo-shaped mixtral folder"; else
  "$nl" export "$tmp/zoo" --gguf "$tmp/zoo.gguf" --type q8_0 > /dev/null 2> "$tmp/why"
  if [ $? -ne 0 ]; then ok 1 "export the zoo-shaped mixtral to q8_0"; else
    $py - "$tmp/zoo.gguf" > "$tmp/why" 2>&1 <<'PY'
import os, sys
sys.path.insert(0, "tests")
import gguf_read
_, kv, ts = gguf_read.read(sys.argv[1])
D, L, E, Fe, V = 256, 6, 8, 352, 8192
mats = V * D + L * (4 * D * D + 3 * E * Fe * D)        # Q8_0: 34 bytes per 32 values
f32 = D + L * (2 * D + E * D)                          # norms and routers stay F32
want = mats // 32 * 34 + f32 * 4
size = os.path.getsize(sys.argv[1])
types = {t["type"] for n, t in ts.items() if len(t["ne"]) > 1 and "ffn_gate_inp" not in n}
assert types == {8}, types
assert want <= size <= want + 300000, (size, want)  # + metadata and alignment padding
print("%.2f MB (tensors %.2f MB)" % (size / 1e6, want / 1e6))
PY
    ok $? "zoo-shaped mixtral (d 256, 6 layers, 8 experts of 352, vocab 8192) → q8_0: $(tail -1 "$tmp/why"), every matrix Q8_0"
  fi
fi

# ---- 4. bad files --------------------------------------------------------------------------------
src=$tmp/mixtral-f32.gguf
if [ ! -f "$src" ]; then echo "SKIP bad MoE files: no exported mixtral file"; else
  bad() { # what pattern kind a b: a same-length edit of the file, then info must fail with one line
    local what=$1 pat=$2
    $py - "$src" "$tmp/bad.gguf" "$3" "$4" "$5" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); kind, a, z = sys.argv[3:6]
if kind == "bytes":      # replace text of the same length
    i = b.find(a.encode()); assert i > 0 and len(a) == len(z); b[i:i + len(a)] = z.encode()
elif kind == "u32":      # the uint32 value of metadata key a
    k = struct.pack("<Q", len(a)) + a.encode(); i = b.find(k) + len(k); assert struct.unpack_from("<I", b, i)[0] == 4
    struct.pack_into("<I", b, i + 4, int(z))
else:                    # ne[2] of tensor a
    k = struct.pack("<Q", len(a)) + a.encode(); i = b.find(k) + len(k); assert struct.unpack_from("<I", b, i)[0] == 3
    struct.pack_into("<Q", b, i + 4 + 16, int(z))
open(sys.argv[2], "wb").write(b)
PY
    "$nl" info "$tmp/bad.gguf" > /dev/null 2> "$tmp/err"; local rc=$?
    { echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
    [ "$rc" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q "$tmp/bad.gguf" "$tmp/err" && grep -Eq -- "$pat" "$tmp/err"
    ok $? "bad file, $what: $(cat "$tmp/err")"
  }
  bad "unknown architecture" "architecture 'jamba' is not supported \(supported: llama, .*qwen2moe, qwen3moe\)" \
    bytes "llama" "jamba"
  bad "expert_used_count > expert_count" "'llama.expert_used_count' is 9, more than expert_count 8" \
    u32 llama.expert_used_count 9
  bad "expert tensor missing" "missing tensor 'blk.1.ffn_down_exps.weight' \(model_type gguf:llama, a mixture-of-experts layer\)" \
    bytes "blk.1.ffn_down_exps.weight" "blk.1.ffn_down_expz.weight"
  bad "wrong 3-D shape" "tensor 'blk.0.ffn_up_exps.weight' has shape \[7, 32, 64\], the file's metadata implies \[8, 32, 64\]" \
    ne blk.0.ffn_up_exps.weight 7
fi
