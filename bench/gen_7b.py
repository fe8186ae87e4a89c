#!/usr/bin/python3
"""gen_7b.py — writes a random-weight Llama-2-7B-shaped bf16 model as sharded safetensors.

Usage: gen_7b.py OUTDIR [--shard-gb 5] [--seed 7] [--layers 32] [--docs 2] [--doc-len 512]

Writes, once (the model is skipped when OUTDIR/.done matches the requested model; the dataset,
which is cheap, is rewritten every time):
  OUTDIR/model/config.json                       LlamaConfig field names, torch_dtype bfloat16
  OUTDIR/model/model-0000i-of-0000n.safetensors  BF16 tensors, at most --shard-gb GB each
  OUTDIR/model/model.safetensors.index.json      {"metadata": {"total_size"}, "weight_map"}
  OUTDIR/data.jsonl                              --docs rows of --doc-len uniform random ids
Shape (Llama-2-7B): hidden 4096, 32 layers, 32 heads (no GQA), FFN 11008, vocab 32000,
untied lm_head: 6.74e9 parameters, 13.48 GB.

Memory: the shard headers are computed from the shapes alone; each tensor is then written in
chunks of CHUNK elements, so the generator holds a few hundred MB at most, never the model.
Weights are N(0, 0.02) (the HF initializer_range; with RMSNorm before every projection this
keeps activations O(1) over 32 layers), norm weights 1 + N(0, 0.02), rounded to bf16 by
truncation (the top 16 bits of the float32). Drawing 6.7e9 normals costs minutes of CPU on a
shared 2-core machine, so one pool of POOL draws is made once and every chunk is a slice of it
at a random offset: each weight is still N(0, 0.02), but tensors share values (no benchmark
number depends on that). Fixed seed: reproducible.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

CHUNK = 1 << 24  # elements written at a time (32 MiB of bf16)
POOL = 1 << 26   # normal draws made once (128 MiB of bf16)


def tensors(L, D, F, H, Hk, V):
    """(name, shape, kind) in the order of the files; kind 'w' (N(0, .02)) or 'n' (1 + N(0, .02))."""
    Dh = D // H
    out = [("model.embed_tokens.weight", (V, D), "w")]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [
            (p + "input_layernorm.weight", (D,), "n"),
            (p + "self_attn.q_proj.weight", (H * Dh, D), "w"),
            (p + "self_attn.k_proj.weight", (Hk * Dh, D), "w"),
            (p + "self_attn.v_proj.weight", (Hk * Dh, D), "w"),
            (p + "self_attn.o_proj.weight", (D, H * Dh), "w"),
            (p + "post_attention_layernorm.weight", (D,), "n"),
            (p + "mlp.gate_proj.weight", (F, D), "w"),
            (p + "mlp.up_proj.weight", (F, D), "w"),
            (p + "mlp.down_proj.weight", (D, F), "w"),
        ]
    out += [("model.norm.weight", (D,), "n"), ("lm_head.weight", (V, D), "w")]
    return out


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write_shard(path, items, rng, pools):
    """items: [(name, shape, kind)]. Header first, then each tensor streamed in chunks."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in items:
        nb = 2 * numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, kind in items:
            n = numel(shape)
            for a in range(0, n, CHUNK):
                k = min(CHUNK, n - a)
                o = int(rng.integers(0, POOL - k + 1))
                f.write(pools[kind][o:o + k].tobytes())
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--docs", type=int, default=2)
    ap.add_argument("--doc-len", type=int, default=512)
    a = ap.parse_args()
    D, F, L, H, Hk, V = 4096, 11008, a.layers, 32, 32, 32000

    os.makedirs(a.outdir, exist_ok=True)
    drng = np.random.default_rng(a.seed + 1)
    with open(os.path.join(a.outdir, "data.jsonl"), "w") as f:
        for _ in range(a.docs):
            f.write(json.dumps({"tokens": drng.integers(0, V, size=a.doc_len).tolist()}) + "\n")
    stamp = json.dumps({k: getattr(a, k) for k in ("shard_gb", "seed", "layers")}, sort_keys=True)
    done = os.path.join(a.outdir, ".done")
    mdir = os.path.join(a.outdir, "model")
    if os.path.exists(done) and open(done).read() == stamp:
        print(f"gen_7b: model cached in {mdir}; wrote {a.docs} x {a.doc_len} tokens", file=sys.stderr)
        return
    if os.path.exists(done):
        os.remove(done)
    os.makedirs(mdir, exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": D, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": Hk, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
        "vocab_size": V, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02,
    }
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    # Split into shards of at most shard-gb (whole tensors, in file order).
    limit = int(a.shard_gb * 1e9)
    shards, cur, size = [], [], 0
    for t in tensors(L, D, F, H, Hk, V):
        nb = 2 * numel(t[1])
        if cur and size + nb > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += nb
    shards.append(cur)
    n = len(shards)
    rng = np.random.default_rng(a.seed)
    x = rng.standard_normal(POOL, dtype=np.float32) * np.float32(0.02)
    pools = {"w": (x.view(np.uint32) >> 16).astype("<u2")}
    x += np.float32(1.0)
    pools["n"] = (x.view(np.uint32) >> 16).astype("<u2")
    del x
    weight_map, total, t0 = {}, 0, time.time()
    for i, items in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        total += write_shard(os.path.join(mdir, fname), items, rng, pools)
        for name, _, _ in items:
            weight_map[name] = fname
        print(f"gen_7b: wrote {fname} ({total / 1e9:.2f} GB so far, {time.time() - t0:.0f} s)", file=sys.stderr)
    with open(os.path.join(mdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)

    with open(done, "w") as f:
        f.write(stamp)
    n_params = total // 2
    print(f"gen_7b: wrote {mdir} ({n_params / 1e9:.2f}B parameters, {total / 1e9:.2f} GB in {n} shards) "
          f"and {a.docs} x {a.doc_len} tokens in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
