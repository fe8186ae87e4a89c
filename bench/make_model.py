#!/usr/bin/python3
"""make_model.py — writes the benchmark's random-weight Llama model and token datasets.

Usage: make_model.py OUTDIR [--layers 12] [--hidden 768] [--heads 12] [--kv-heads 4]
                            [--ffn 2048] [--vocab 32000] [--docs 16] [--doc-len 512]

Writes, once (skipped when OUTDIR/.done matches the requested shape):
  OUTDIR/llama100m/config.json         Hugging Face LlamaConfig field names
  OUTDIR/llama100m/model.safetensors   float32, our own writer (see write_safetensors)
  OUTDIR/data_{4,16}.jsonl             {"tokens": [...]} rows, uniform random ids, seed 1234
  OUTDIR/data_tiny.jsonl               one 2-token document (measures fixed start-up cost)
Weights are N(0, 0.02) (embeddings, projections, head), RMSNorm weights are 1 + N(0, 0.02),
all drawn from one numpy Generator with a fixed seed, so the folder is reproducible.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray float32). Format: u64 LE header length, JSON
    header {name: {dtype, shape, data_offsets: [begin, end]}} padded with spaces to a
    multiple of 8 bytes, then the raw little-endian data in header order."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors:
        assert a.dtype == np.float32 and a.flags["C_CONTIGUOUS"]
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a in tensors:
            f.write(a.astype("<f4", copy=False).tobytes(order="C"))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--doc-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    stamp = json.dumps(vars(a), sort_keys=True)
    done = os.path.join(a.outdir, ".done")
    if os.path.exists(done) and open(done).read() == stamp:
        print(f"make_model: cached in {a.outdir}", file=sys.stderr)
        return
    mdir = os.path.join(a.outdir, "llama100m")
    os.makedirs(mdir, exist_ok=True)
    D, F, L, H, Hk, V = a.hidden, a.ffn, a.layers, a.heads, a.kv_heads, a.vocab
    Dh = D // H
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": D,
        "intermediate_size": F,
        "num_hidden_layers": L,
        "num_attention_heads": H,
        "num_key_value_heads": Hk,
        "head_dim": Dh,
        "hidden_act": "silu",
        "max_position_embeddings": a.max_pos,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "vocab_size": V,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
    }
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    rng = np.random.default_rng(a.seed)

    def mat(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    def normw():
        return (np.float32(1.0) + rng.standard_normal((D,), dtype=np.float32) * np.float32(0.02))

    ts = [("model.embed_tokens.weight", mat(V, D))]
    for l in range(L):
        p = f"model.layers.{l}."
        ts += [
            (p + "input_layernorm.weight", normw()),
            (p + "self_attn.q_proj.weight", mat(H * Dh, D)),
            (p + "self_attn.k_proj.weight", mat(Hk * Dh, D)),
            (p + "self_attn.v_proj.weight", mat(Hk * Dh, D)),
            (p + "self_attn.o_proj.weight", mat(D, H * Dh)),
            (p + "post_attention_layernorm.weight", normw()),
            (p + "mlp.gate_proj.weight", mat(F, D)),
            (p + "mlp.up_proj.weight", mat(F, D)),
            (p + "mlp.down_proj.weight", mat(D, F)),
        ]
    ts += [("model.norm.weight", normw()), ("lm_head.weight", mat(V, D))]
    write_safetensors(os.path.join(mdir, "model.safetensors"), ts)
    n_params = sum(t.size for _, t in ts)

    drng = np.random.default_rng(a.seed + 1)
    docs = [drng.integers(0, V, size=a.doc_len).tolist() for _ in range(a.docs)]
    for n in sorted({4, a.docs}):
        with open(os.path.join(a.outdir, f"data_{n}.jsonl"), "w") as f:
            for d in docs[:n]:
                f.write(json.dumps({"tokens": d}) + "\n")
    with open(os.path.join(a.outdir, "data_tiny.jsonl"), "w") as f:
        f.write(json.dumps({"tokens": docs[0][:2]}) + "\n")
    with open(done, "w") as f:
        f.write(stamp)
    print(f"make_model: wrote {mdir} ({n_params / 1e6:.1f}M parameters) and {a.docs} x {a.doc_len} tokens",
          file=sys.stderr)


if __name__ == "__main__":
    main()
