#!/usr/bin/env bash
# make-corpus.sh — writes the seeds of fuzz/corpus/<harness>/ from tests/fixtures and from
# small files generated here (python3 with numpy and h5py; sqlite3). Deterministic; run by
# `make fuzz-corpus`; the output is committed. Multi-file seeds join their files with the
# line "--nlfuzz-next-file--" (NL_FUZZ_SEP in fuzz/fuzz_util.h).
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 - <<'PY'
import json, os, shutil, sqlite3, struct
import numpy as np
import h5py

SEP = b"\n--nlfuzz-next-file--\n"
C = "fuzz/corpus"
shutil.rmtree(C, ignore_errors=True)
def put(h, name, data):
    os.makedirs(f"{C}/{h}", exist_ok=True)
    with open(f"{C}/{h}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def st_bytes(tensors):
    """safetensors bytes of {name: (dtype, np.array)}."""
    hdr, data, off = {}, b"", 0
    for name, (dt, a) in tensors.items():
        b = a.tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        data += b; off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

rng = np.random.default_rng(1)
def tiny_llama(dt="F32", D=8, F=16, V=32, L=1, kv=4):
    t = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                  p + "self_attn.q_proj.weight": (D, D), p + "self_attn.k_proj.weight": (kv, D),
                  p + "self_attn.v_proj.weight": (kv, D), p + "self_attn.o_proj.weight": (D, D),
                  p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D), p + "mlp.down_proj.weight": (D, F)})
    out = {}
    for k, s in t.items():
        a = (rng.standard_normal(s) * 0.1).astype(np.float32)
        if dt == "BF16":
            a = (a.view(np.uint32) >> 16).astype(np.uint16)
        elif dt == "F16":
            a = a.astype(np.float16)
        out[k] = (dt, a)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D, "intermediate_size": F,
           "num_hidden_layers": L, "num_attention_heads": 2, "num_key_value_heads": kv * 2 // D,
           "vocab_size": V, "rms_norm_eps": 1e-5, "hidden_act": "silu", "max_position_embeddings": 64,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    return cfg, st_bytes(out)

# --- safetensors, model_hf, config
for i, dt in enumerate(["F32", "BF16", "F16"]):
    cfg, st = tiny_llama(dt, L=1 + i % 2)
    put("safetensors", f"tiny_{dt.lower()}.safetensors", st)
    put("model_hf", f"tiny_{dt.lower()}", json.dumps(cfg, indent=1).encode() + SEP + st)
def tiny_moe(mt, dt, D=8, Fe=4, Fs=4, E=4, k=2, L=2, V=32):
    """Mixture-of-experts seeds: mixtral (every layer sparse) and qwen2_moe (layer 0 dense by
    decoder_sparse_step 2, layer 1 sparse with a shared expert)."""
    t = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                  p + "self_attn.q_proj.weight": (D, D), p + "self_attn.k_proj.weight": (D, D),
                  p + "self_attn.v_proj.weight": (D, D), p + "self_attn.o_proj.weight": (D, D)})
        if mt == "qwen2_moe":
            t.update({p + "self_attn.q_proj.bias": (D,), p + "self_attn.k_proj.bias": (D,), p + "self_attn.v_proj.bias": (D,)})
        if mt == "qwen2_moe" and l == 0:
            t.update({p + "mlp.gate_proj.weight": (16, D), p + "mlp.up_proj.weight": (16, D), p + "mlp.down_proj.weight": (D, 16)})
            continue
        moe = p + ("block_sparse_moe." if mt == "mixtral" else "mlp.")
        t[moe + "gate.weight"] = (E, D)
        names = ("w1", "w3", "w2") if mt == "mixtral" else ("gate_proj", "up_proj", "down_proj")
        for e in range(E):
            t.update({f"{moe}experts.{e}.{names[0]}.weight": (Fe, D), f"{moe}experts.{e}.{names[1]}.weight": (Fe, D),
                      f"{moe}experts.{e}.{names[2]}.weight": (D, Fe)})
        if mt == "qwen2_moe":
            t.update({moe + "shared_expert.gate_proj.weight": (Fs, D), moe + "shared_expert.up_proj.weight": (Fs, D),
                      moe + "shared_expert.down_proj.weight": (D, Fs), moe + "shared_expert_gate.weight": (1, D)})
    out, r = {}, np.random.default_rng(2)  # its own stream: the other seeds stay as they were
    for n, sh in t.items():
        a = (r.standard_normal(sh) * 0.3).astype(np.float32)
        out[n] = (dt, (a.view(np.uint32) >> 16).astype(np.uint16) if dt == "BF16" else a)
    cfg = {"model_type": mt, "hidden_size": D, "intermediate_size": Fe if mt == "mixtral" else 16,
           "num_hidden_layers": L, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": V,
           "rms_norm_eps": 1e-5, "hidden_act": "silu", "max_position_embeddings": 64, "tie_word_embeddings": False,
           "num_experts_per_tok": k}
    if mt == "mixtral":
        cfg["num_local_experts"] = E
    else:
        cfg.update({"num_experts": E, "moe_intermediate_size": Fe, "shared_expert_intermediate_size": Fs,
                    "decoder_sparse_step": 2, "mlp_only_layers": [], "norm_topk_prob": False})
    return cfg, st_bytes(out)

for mt, dt in (("mixtral", "F32"), ("qwen2_moe", "BF16")):
    cfg, st = tiny_moe(mt, dt)
    put("model_hf", f"tiny_{mt}", json.dumps(cfg, indent=1).encode() + SEP + st)
put("safetensors", "empty.safetensors", st_bytes({}))
put("safetensors", "meta.safetensors", st_bytes({"x": ("I64", np.arange(3, dtype=np.int64))}).replace(b"{", b'{"__metadata__": {"format": "pt"}, ', 1))
cfg, _ = tiny_llama()
put("config", "tiny_llama.json", json.dumps(cfg, indent=1))
for d in sorted(os.listdir("tests/fixtures/hf")):
    p = f"tests/fixtures/hf/{d}/config.json"
    if os.path.exists(p):
        shutil.copy(p, f"{C}/config/{d}.json")
    p = f"tests/fixtures/hf/{d}/model.safetensors"
    if os.path.exists(p):  # fixture headers with the data cut to the first tensor
        b = open(p, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        put("safetensors", f"{d}_header.safetensors", b[:8 + n] + b[8 + n:8 + n + 256])
    p = f"tests/fixtures/hf/{d}/tokenizer.json"
    if os.path.exists(p):
        shutil.copy(p, f"{C}/tokenizer_json/{d}.json") if os.path.isdir(f"{C}/tokenizer_json") else put("tokenizer_json", f"{d}.json", open(p, "rb").read())

# --- GPT-2 vocab.json + merges.txt (as tests/test_tokenizer.c builds them)
vocab = {"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "abc": 5, "\u0120a": 6, "!": 7, "<|endoftext|>": 8}
put("tokenizer_gpt2", "mini", json.dumps(vocab, ensure_ascii=False).encode() + SEP + "#version: 0.2\na b\nab c\n\u0120 a\n".encode())

# --- SentencePiece tokenizer.model and llama2.c tokenizer.bin (the MINI vocabulary of tests/test_tokenizer.c)
MINI = [("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3), ("\u2581", -1, 1), ("a", -2, 1), ("b", -3, 1), ("ab", -4, 1),
        ("\u2581a", -5, 1), ("\u2581ab", -6, 1), ("<0x41>", 0, 6)]
def varint(v):
    o = b""
    while True:
        c = v & 0x7F; v >>= 7
        o += bytes([c | (0x80 if v else 0)])
        if not v: return o
def pb_bytes(f, b): return varint(f << 3 | 2) + varint(len(b)) + b
def pb_int(f, v): return varint(f << 3) + varint(v)
def pb_float(f, x): return varint(f << 3 | 5) + struct.pack("<f", x)
for mt in (2,):
    m = b""
    for piece, score, typ in MINI:
        p = pb_bytes(1, piece.encode()) + pb_float(2, score) + (pb_int(3, typ) if typ != 1 else b"")
        m += pb_bytes(1, p)
    m += pb_bytes(2, pb_int(3, mt) + pb_int(4, len(MINI)) + pb_int(35, 1))
    m += pb_bytes(3, pb_bytes(1, b"identity") + pb_int(3, 1) + pb_int(4, 0))
    put("tokenizer_sentencepiece", "mini_bpe.model", m)
b = struct.pack("<i", 8)
for piece, score, typ in MINI:
    s = {"<s>": "\n<s>\n", "</s>": "\n</s>\n"}.get(piece, piece).replace("\u2581", " ").encode()
    b += struct.pack("<fi", score, len(s)) + s
put("tokenizer_bin", "mini.bin", b)

# --- llama2.c checkpoint: dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 32, seq 16
def llama2c(shared):
    dim, hid, L, H, KV, V, S = 8, 16, 1, 2, 2, 32, 16
    hs = dim // H
    hdr = struct.pack("<7i", dim, hid, L, H, KV, V if shared else -V, S)
    sizes = [V * dim, L * dim, L * dim * dim, L * dim * KV * hs, L * dim * KV * hs, L * dim * dim, L * dim,
             L * hid * dim, L * dim * hid, L * hid * dim, dim, S * hs // 2, S * hs // 2] + ([] if shared else [V * dim])
    w = (rng.standard_normal(sum(sizes)) * 0.1).astype(np.float32)
    return hdr + w.tobytes()
put("llama2c", "tiny_shared.bin", llama2c(True))
put("llama2c", "tiny_unshared.bin", llama2c(False))

# --- GGUF files (fuzz_gguf): tiny llama models in every tensor type the reader dequantises,
# and gpt2 / llama (SentencePiece) vocabularies in the metadata (own random stream: the other seeds stay as they were)
grng = np.random.default_rng(15)
def gs(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b
def gkv(k, t, payload): return gs(k) + struct.pack("<I", t) + payload
def gstr(k, v): return gkv(k, 8, gs(v))
def gu32(k, v): return gkv(k, 4, struct.pack("<I", v))
def gf32(k, v): return gkv(k, 6, struct.pack("<f", v))
def gbool(k, v): return gkv(k, 7, bytes([1 if v else 0]))
def garr(k, et, items):
    if et == 8: body = b"".join(gs(x) for x in items)
    else: body = b"".join(struct.pack({4: "<I", 5: "<i", 6: "<f"}[et], x) for x in items)
    return gkv(k, 9, struct.pack("<IQ", et, len(items)) + body)
# ggml type: (block elements, block bytes, where the f16 scales are)
GT = {0: (1, 4, []), 1: (1, 2, []), 30: (1, 2, []), 2: (32, 18, [0]), 3: (32, 20, [0, 2]), 6: (32, 22, [0]), 7: (32, 24, [0, 2]),
      8: (32, 34, [0]), 10: (256, 84, [80, 82]), 11: (256, 110, [108]), 12: (256, 144, [0, 2]), 13: (256, 176, [0, 2]), 14: (256, 210, [208])}
def gdata(t, numel):
    be, bb, halves = GT[t]
    if t == 0: return (grng.standard_normal(numel) * 0.1).astype(np.float32).tobytes()
    if t in (1, 30):
        a = (grng.standard_normal(numel) * 0.1).astype(np.float32)
        return a.astype(np.float16).tobytes() if t == 1 else (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    out = bytearray(grng.integers(0, 256, numel // be * bb, dtype=np.uint8).tobytes())
    for b in range(numel // be):
        for h in halves: out[b * bb + h: b * bb + h + 2] = np.float16(0.01 * (1 + b % 7)).tobytes()
    return bytes(out)
def gguf_file(kvs, tensors):
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    infos, data = b"", b""
    for name, ne, t in tensors:
        numel = int(np.prod(ne))
        blob = gdata(t, numel)
        infos += gs(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne) + struct.pack("<IQ", t, len(data))
        data += blob + bytes(-len(blob) % 32)
    out = head + b"".join(kvs) + infos
    return out + bytes(-len(out) % 32) + data
def tiny_llama(D, F, V, types, extra_kv=()):
    kv = [gstr("general.architecture", "llama"), gu32("llama.block_count", 1), gu32("llama.embedding_length", D),
          gu32("llama.feed_forward_length", F), gu32("llama.attention.head_count", 2), gu32("llama.attention.head_count_kv", 1),
          gf32("llama.attention.layer_norm_rms_epsilon", 1e-5), gu32("llama.context_length", 16)] + list(extra_kv)
    q, k, v, o, g, u, dn, emb = types
    ts = [("token_embd.weight", [D, V], emb), ("output_norm.weight", [D], 0), ("blk.0.attn_norm.weight", [D], 0),
          ("blk.0.ffn_norm.weight", [D], 0), ("blk.0.attn_q.weight", [D, D], q), ("blk.0.attn_k.weight", [D, D // 2], k),
          ("blk.0.attn_v.weight", [D, D // 2], v), ("blk.0.attn_output.weight", [D, D], o), ("blk.0.ffn_gate.weight", [D, F], g),
          ("blk.0.ffn_up.weight", [D, F], u), ("blk.0.ffn_down.weight", [F, D], dn)]
    return gguf_file(kv, ts)
put("gguf", "llama_f32.gguf", tiny_llama(32, 64, 8, (0, 0, 0, 0, 0, 0, 0, 0)))
put("gguf", "llama_half.gguf", tiny_llama(32, 64, 8, (1, 30, 1, 30, 1, 30, 1, 0)))
put("gguf", "llama_q32.gguf", tiny_llama(32, 64, 8, (2, 3, 6, 7, 8, 2, 3, 8)))
put("gguf", "llama_k.gguf", tiny_llama(256, 256, 4, (10, 11, 12, 13, 14, 10, 11, 14)))
toks = ["<|bos|>", "a", "b", "ab", "\u0120", "\u0120a", "c"]
put("gguf", "vocab_gpt2.gguf", tiny_llama(32, 64, 7, (0,) * 8, [
    gstr("tokenizer.ggml.model", "gpt2"), gstr("tokenizer.ggml.pre", "llama-bpe"), garr("tokenizer.ggml.tokens", 8, toks),
    garr("tokenizer.ggml.token_type", 5, [3, 1, 1, 1, 1, 1, 1]), garr("tokenizer.ggml.merges", 8, ["a b", "\u0120 a"]),
    gu32("tokenizer.ggml.bos_token_id", 0), gbool("tokenizer.ggml.add_bos_token", True)]))
put("gguf", "vocab_llama.gguf", tiny_llama(32, 64, len(MINI), (0,) * 8, [
    gstr("tokenizer.ggml.model", "llama"), garr("tokenizer.ggml.tokens", 8, [p for p, _, _ in MINI]),
    garr("tokenizer.ggml.scores", 6, [float(s) for _, s, _ in MINI]), garr("tokenizer.ggml.token_type", 5, [t for _, _, t in MINI]),
    gu32("tokenizer.ggml.bos_token_id", 1), gu32("tokenizer.ggml.eos_token_id", 2), gu32("tokenizer.ggml.unknown_token_id", 0)]))
# mixture-of-experts layers as llama.cpp writes them (router, stacked 3-D experts): Mixtral as
# llama in Q8_0, qwen2moe with a shared expert and F16 down experts (rows of 16, not whole blocks)
def tiny_moe(arch, E, Fe, types, shared=0):
    D, V = 32, 8
    kv = [gstr("general.architecture", arch), gu32(arch + ".block_count", 1), gu32(arch + ".embedding_length", D),
          gu32(arch + ".feed_forward_length", Fe if arch == "llama" else 64), gu32(arch + ".attention.head_count", 2),
          gu32(arch + ".attention.head_count_kv", 1), gf32(arch + ".attention.layer_norm_rms_epsilon", 1e-5),
          gu32(arch + ".expert_count", E), gu32(arch + ".expert_used_count", 2)]
    if arch != "llama": kv.append(gu32(arch + ".expert_feed_forward_length", Fe))
    if shared: kv.append(gu32(arch + ".expert_shared_feed_forward_length", shared))
    g, d = types
    ts = [("token_embd.weight", [D, V], 0), ("output_norm.weight", [D], 0), ("blk.0.attn_norm.weight", [D], 0),
          ("blk.0.ffn_norm.weight", [D], 0), ("blk.0.attn_q.weight", [D, D], 0), ("blk.0.attn_k.weight", [D, D // 2], 0),
          ("blk.0.attn_v.weight", [D, D // 2], 0), ("blk.0.attn_output.weight", [D, D], 0),
          ("blk.0.ffn_gate_inp.weight", [D, E], 0), ("blk.0.ffn_gate_exps.weight", [D, Fe, E], g),
          ("blk.0.ffn_up_exps.weight", [D, Fe, E], g), ("blk.0.ffn_down_exps.weight", [Fe, D, E], d)]
    if shared:
        ts += [("blk.0.ffn_gate_inp_shexp.weight", [D], 0), ("blk.0.ffn_gate_shexp.weight", [D, shared], 0),
               ("blk.0.ffn_up_shexp.weight", [D, shared], 0), ("blk.0.ffn_down_shexp.weight", [shared, D], 0)]
    return gguf_file(kv, ts)
put("gguf", "moe_llama_q8.gguf", tiny_moe("llama", 4, 32, (8, 8)))
put("gguf", "moe_qwen2moe.gguf", tiny_moe("qwen2moe", 4, 16, (8, 1), shared=24))

# --- JSONL dataset rows
put("dataset", "tokens.jsonl", '{"tokens": [1, 4, 5, 6], "label": "math"}\n{"tokens": [2, 3], "prompt_len": 1}\n\n')
put("dataset", "text.jsonl", '{"text": "abc ab!", "label": "x"}\n{"prompt": "ab", "response": " abc", "label": "y"}\n')
put("dataset", "escapes.jsonl", '{"text": "a\\u00e9\\ud83d\\ude00\\n\\"b\\"", "label": "\\u0000z"}\n')
with open("notebooks-data/eval/math.jsonl") as f:
    put("dataset", "eval_math.jsonl", "".join(f.readlines()[:3]))

# --- HDF5 activation files (schema v1, as the writer lays it out; small)
def h5_file(name, L=2, F=4, docs=(3, 2), pooled=True, f16=False, layers_attr=True, chunked=True, gzip=False, gen=None):
    """chunked=False: contiguous datasets (no chunk B-trees: a smaller seed, so more executions
    per second); gzip: shuffle+deflate on ffn_act and mean_abs; gen: own random generator
    (so new seeds leave the ones after them unchanged)."""
    rng_ = gen if gen is not None else rng
    ck = lambda c: dict(maxshape=(None,) + c[1:], chunks=c) if chunked else {}
    zf = dict(compression="gzip", compression_opts=1, shuffle=True) if gzip else {}
    p = f"{C}/h5/{name}"
    os.makedirs(f"{C}/h5", exist_ok=True)
    N, D = sum(docs), len(docs)
    with h5py.File(p, "w", libver=("earliest", "latest")) as f:
        a = f.attrs
        a["format"] = "neuronlab.activations"; a["version"] = np.int32(1); a["model"] = "m"; a["arch"] = "llama"
        a["n_layers"] = np.int32(L); a["d_model"] = np.int32(8); a["d_ff"] = np.int32(F); a["ffn_kind"] = "gated"
        a["act_fn"] = "silu"; a["dtype"] = "float16" if f16 else "float32"; a["dataset"] = "d.jsonl"
        a["created_by"] = "make-corpus"; a["complete"] = np.int32(1)
        if layers_attr: a["layers"] = np.arange(L, dtype=np.int32)
        f.create_dataset("tokens", data=np.arange(N, dtype=np.int32), **ck((16,)))
        f.create_dataset("doc_offsets", data=np.concatenate([[0], np.cumsum(docs)]).astype(np.int64), **ck((16,)))
        f.create_dataset("doc_labels", data=["x", ""][:D] + ["y"] * (D - 2), dtype=h5py.string_dtype(), **ck((16,)))
        f.create_dataset("prompt_len", data=np.array(docs, dtype=np.int32), **ck((16,)))
        for l in range(L):
            f.create_dataset(f"layers/{l}/ffn_act", data=rng_.standard_normal((N, F)).astype(np.float16 if f16 else np.float32),
                             **(dict(maxshape=(None, F), chunks=(4, F), **zf) if chunked or gzip else {}))
            f.create_dataset(f"layers/{l}/w_out_norm", data=np.abs(rng_.standard_normal(F)).astype(np.float32))
            if pooled:
                f.create_dataset(f"pooled/{l}/mean_abs", data=np.abs(rng_.standard_normal((D, F))).astype(np.float32),
                                 **(dict(maxshape=(None, F), chunks=(4, F), **zf) if chunked or gzip else {}))
h5_file("small_f32.h5")
h5_file("small_f16_nolayers.h5", f16=True, pooled=False, layers_attr=False)
h5_file("three_docs.h5", L=1, F=3, docs=(1, 1, 2))
h5_file("tiny_contiguous.h5", L=1, F=2, docs=(1, 1), chunked=False, gen=np.random.default_rng(2))
h5_file("tiny_deflate.h5", L=1, F=4, docs=(2, 1), chunked=False, gzip=True, gen=np.random.default_rng(3))

# --- results database with a finished ability run (the tables nl_ability_sets_load reads)
def results_db():
    import subprocess, tempfile
    exe = "build/neuronlab"
    if not os.path.exists(exe):
        print("make-corpus: build/neuronlab missing: no results seed (run make first)")
        return
    with tempfile.TemporaryDirectory() as t:
        docs = (3, 2, 4, 3)
        h = f"{C}/h5/_tmp.h5"
        h5_file("_tmp.h5", docs=docs)
        with h5py.File(h, "r+") as f:
            del f["doc_labels"]
            f.create_dataset("doc_labels", data=["math", "code", "math", "code"], dtype=h5py.string_dtype(), maxshape=(None,), chunks=(16,))
        shutil.move(h, f"{t}/acts.h5")
        r = subprocess.run([exe, "ability", f"{t}/acts.h5", "--db", f"{t}/r.db"], capture_output=True, text=True)
        if r.returncode != 0:
            print("make-corpus: ability run failed:", r.stderr.strip())
            return
        con = sqlite3.connect(f"{t}/r.db"); con.execute("vacuum"); con.close()
        put("results", "ability.db", open(f"{t}/r.db", "rb").read())
results_db()
for h, _, fs in sorted(os.walk(C)):
    if fs: print(f"make-corpus: {h}: {len(fs)} seeds, {sum(os.path.getsize(os.path.join(h, x)) for x in fs)} bytes")
PY
