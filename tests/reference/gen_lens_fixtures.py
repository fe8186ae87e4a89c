#!/usr/bin/python3
"""gen_lens_fixtures.py — reference values of the logit lens, the attention probabilities and the
direct logit attribution for tests/test_lens.c, computed with PyTorch from the weights of the
committed fixture model tests/fixtures/hf/llama alone (its own small Llama forward below: RMSNorm,
rotate-half RoPE, grouped-query causal attention, SiLU-gated FFN; not nlref.py's and not neuronlab's).

Writes tests/fixtures/lens/:
  tokens.jsonl     the two documents (token rows, labels "a" and "b")
  expected.json    per depth (layer -1 = embedding … L-1) and label ("" = all): tokens, loss,
                   top1_agree, kl (means over the predicted positions, as analyses/lens.h
                   defines them); attribution logits of two neurons (top 5 and bottom 5 token
                   ids with their logits, with and without the final norm's weight)
  attn.f32         attention probabilities of document 0, layers 0..L-1: (L, H, n, n) float32 LE

Run: /usr/bin/python3 tests/reference/gen_lens_fixtures.py   (from the repository root)
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from nlref import load_folder  # safetensors reader only

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "hf", "llama")
OUT = os.path.join(ROOT, "tests", "fixtures", "lens")
DOCS = [([1, 15, 200, 37, 99, 249, 3, 128, 77, 5, 42], "a"), ([1, 7, 8, 9, 10, 11, 12, 13], "b"),
        ([1, 250, 3, 17, 64, 64, 64, 2, 99], "a")]
NEURONS = [(0, 5), (1, 127)]


def rms(x, w, eps):
    x64 = x.double()
    return (x64 * torch.rsqrt((x64 * x64).mean(-1, keepdim=True) + eps)).float() * w


def forward(cfg, W, toks):
    """Residual after the embedding and after each block (L+1, T, D) and the probabilities (L, H, T, T)."""
    D, H, Hk = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    Dh, eps, L = D // H, cfg["rms_norm_eps"], cfg["num_hidden_layers"]
    T = len(toks)
    x = W["model.embed_tokens.weight"][torch.tensor(toks)].clone()
    resid, probs = [x.clone()], []
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()

    def rope(v):  # v (heads, T, Dh): rotate halves
        a, b = v[..., : Dh // 2], v[..., Dh // 2:]
        return v * cos + torch.cat([-b, a], -1) * sin

    mask = torch.ones(T, T).tril().bool()
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, H, Dh).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, Hk, Dh).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, Hk, Dh).transpose(0, 1)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(H // Hk, 0)
        v = v.repeat_interleave(H // Hk, 0)
        s = (q @ k.transpose(1, 2)) / (Dh ** 0.5)
        s = s.masked_fill(~mask, float("-inf"))
        pr = torch.softmax(s.double(), -1).float()
        probs.append(pr)
        att = (pr @ v).transpose(0, 1).reshape(T, H * Dh)
        x = x + att @ W[p + "self_attn.o_proj.weight"].T
        h2 = rms(x, W[p + "post_attention_layernorm.weight"], eps)
        a = torch.nn.functional.silu(h2 @ W[p + "mlp.gate_proj.weight"].T) * (h2 @ W[p + "mlp.up_proj.weight"].T)
        x = x + a @ W[p + "mlp.down_proj.weight"].T
        resid.append(x.clone())
    return torch.stack(resid), torch.stack(probs)


def main():
    cfg, W = load_folder(MODEL)
    W = {k: v.float() for k, v in W.items()}
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    WU = W["lm_head.weight"].double()
    g = W["model.norm.weight"]
    cells = {}  # (label, layer) -> [tokens, loss, agree, kl]
    attn0 = None
    for d, (toks, label) in enumerate(DOCS):
        R, P = forward(cfg, W, toks)
        if d == 0:
            attn0 = P
        logp = torch.log_softmax(rms(R, g, eps).double() @ WU.T, -1)  # (L+1, T, V)
        fin = logp[L]
        tgt = torch.tensor(toks[1:])
        for j in range(L + 1):
            lp = logp[j, :-1]
            loss = -lp.gather(1, tgt[:, None])[:, 0]
            agree = (lp.argmax(-1) == fin[:-1].argmax(-1)).double()
            kl = (fin[:-1].exp() * (fin[:-1] - lp)).sum(-1)
            for lab in ("", label):
                c = cells.setdefault((lab, j - 1), [0, 0.0, 0.0, 0.0])
                c[0] += len(toks) - 1
                c[1] += loss.sum().item()
                c[2] += agree.sum().item()
                c[3] += kl.sum().item()
    lens = [{"label": lab, "layer": l, "tokens": c[0], "loss": c[1] / c[0], "top1_agree": c[2] / c[0], "kl": c[3] / c[0]}
            for (lab, l), c in sorted(cells.items())]
    attrib = []
    for (l, i) in NEURONS:
        col = W[f"model.layers.{l}.mlp.down_proj.weight"][:, i].double()
        for nw in (0, 1):
            z = WU @ (col * g.double() if nw else col)
            order = sorted(range(len(z)), key=lambda v: (-z[v].item(), v))
            attrib.append({"layer": l, "neuron": i, "norm_weight": nw,
                           "top": [[v, z[v].item()] for v in order[:5]],
                           "bottom": [[v, z[v].item()] for v in reversed(order[-5:])]})
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokens.jsonl"), "w") as f:
        for toks, label in DOCS:
            f.write(json.dumps({"tokens": toks, "label": label}) + "\n")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"model": "tests/fixtures/hf/llama", "L": L, "H": cfg["num_attention_heads"], "n0": len(DOCS[0][0]),
                   "tolerance": 1e-4, "lens": lens, "attribution": attrib}, f, indent=1)
    attn0.numpy().astype("<f4").tofile(os.path.join(OUT, "attn.f32"))
    print(f"wrote {OUT}: {len(lens)} lens cells, attention {tuple(attn0.shape)}, {len(attrib)} attributions")


if __name__ == "__main__":
    main()
