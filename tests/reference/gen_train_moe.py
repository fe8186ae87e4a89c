#!/usr/bin/python3
"""gen_train_moe.py — PyTorch autograd references for the trainer's mixture-of-experts models
(tests/test_train_moe.c).

A tiny decoder (d_model 16, 2 layers, 4 heads, 2 kv heads, vocab 50, windows of 8+1 tokens,
batch 2) whose every FFN is a sparse MoE block written from the Hugging Face modeling code's
equations (MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock) with plain torch ops:
  router logits z = n·W_routerᵀ; p = softmax(z); (w, S) = topk(p, k); w /= Σw when norm_topk;
  out = Σ_e index_add over the tokens routed to e of w·down(silu(gate(x))·up(x))
        [+ sigmoid(n·w_shared_gate)·shared_expert(n)]   (qwen2_moe)
and the loss of MixtralForCausalLM / Qwen2MoeForCausalLM:
  loss = cross-entropy + aux_coef · load_balancing_loss_func(router logits of all layers)
with load_balancing_loss_func as in transformers (layers concatenated, one_hot of the top-k,
tokens_per_expert (k, E) · router_prob_per_expert (E), times E).
Everything in float64 from float32 parameters; gradients from autograd.

Cases (name: type, experts, top_k, d_expert, shared, norm_topk, aux_coef, tied):
  mixtral      mixtral    4 experts top-2, d_expert 12, renormalised, aux 0.5, untied
  qwen_shared  qwen2_moe  4 experts top-2, d_expert 8, shared expert 12, no renormalisation, aux 0.5, tied
  qwen_top3    qwen2_moe  5 experts top-3, d_expert 6, shared 10, renormalised, aux 0.1, untied
  mixtral_noaux mixtral   the mixtral case with aux 0 (isolates the balancing-loss gradient)
The parameters are drawn so that no token's k-th and (k+1)-th router probabilities are within
1e-3 of each other (the float32 trainer and this float64 reference then pick the same experts).

Writes tests/fixtures/train_moe/: cases.json (dims, windows, per case the tensor table, loss,
aux, the chosen experts of every layer and token, files) and <case>.params.f32, <case>.grad.f32
(raw little-endian float32 in the table's order). Run: /usr/bin/python3 tests/reference/gen_train_moe.py
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "train_moe")

DIMS = dict(d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, rope_theta=10000.0, norm_eps=1e-5)
B, S = 2, 8
CASES = [
    dict(name="mixtral", type="mixtral", experts=4, top_k=2, d_expert=12, shared=0, norm_topk=True, aux=0.5, tied=False),
    dict(name="qwen_shared", type="qwen2_moe", experts=4, top_k=2, d_expert=8, shared=12, norm_topk=False, aux=0.5,
         tied=True),
    dict(name="qwen_top3", type="qwen2_moe", experts=5, top_k=3, d_expert=6, shared=10, norm_topk=True, aux=0.1,
         tied=False),
    dict(name="mixtral_noaux", type="mixtral", experts=4, top_k=2, d_expert=12, shared=0, norm_topk=True, aux=0.0,
         tied=False),
]


def tensor_table(c):
    """(name, shape, role) in the trainer's parameter order (include/neuronlab/train_model.h)."""
    D, L, H, Hk, V = (DIMS[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"))
    Dh = D // H
    Q, KV, E, Fe, Fs = H * Dh, Hk * Dh, c["experts"], c["d_expert"], c["shared"]
    t = [("model.embed_tokens.weight", (V, D))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", (D,)), (p + "self_attn.q_proj.weight", (Q, D)),
              (p + "self_attn.k_proj.weight", (KV, D)), (p + "self_attn.v_proj.weight", (KV, D)),
              (p + "self_attn.o_proj.weight", (D, Q)), (p + "post_attention_layernorm.weight", (D,))]
        if c["type"] == "mixtral":
            t += [(p + "block_sparse_moe.gate.weight", (E, D))]
            for e in range(E):
                q = p + f"block_sparse_moe.experts.{e}."
                t += [(q + "w1.weight", (Fe, D)), (q + "w3.weight", (Fe, D)), (q + "w2.weight", (D, Fe))]
        else:
            t += [(p + "mlp.gate.weight", (E, D))]
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                t += [(q + "gate_proj.weight", (Fe, D)), (q + "up_proj.weight", (Fe, D)),
                      (q + "down_proj.weight", (D, Fe))]
            if Fs > 0:
                q = p + "mlp.shared_expert."
                t += [(q + "gate_proj.weight", (Fs, D)), (q + "up_proj.weight", (Fs, D)), (q + "down_proj.weight", (D, Fs)),
                      (p + "mlp.shared_expert_gate.weight", (1, D))]
    t += [("model.norm.weight", (DIMS["d_model"],))]
    if not c["tied"]:
        t += [("lm_head.weight", (V, D))]
    return t


def init_params(c, seed):
    """float32, larger than the trainer's init so every path carries signal: matrices N(0, 1/fan_in),
    routers N(0, 4/fan_in) (peaked routing), embedding N(0, 1), norm weights 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    P = {}
    for name, shape in tensor_table(c):
        if len(shape) == 1:
            P[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif "embed" in name or "lm_head" in name:
            P[name] = torch.randn(shape, generator=g)
        elif name.endswith("block_sparse_moe.gate.weight") or name.endswith("mlp.gate.weight"):
            P[name] = 2.0 * torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            P[name] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return {k: v.float() for k, v in P.items()}


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_tables(Dh, theta):
    inv = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.int64).float() / Dh))
    pos = torch.arange(S, dtype=torch.float32)
    fr = pos[:, None] * inv[None, :]
    emb = torch.cat((fr, fr), dim=-1)
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def load_balancing_loss_func(gate_logits, num_experts, top_k):
    """transformers' load_balancing_loss_func without an attention mask."""
    concatenated_gate_logits = torch.cat(list(gate_logits), dim=0)
    routing_weights = F.softmax(concatenated_gate_logits, dim=-1)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = F.one_hot(selected_experts, num_experts)
    tokens_per_expert = torch.mean(expert_mask.double(), dim=0)
    router_prob_per_expert = torch.mean(routing_weights, dim=0)
    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts


def moe_block(c, P, p, x):
    """x (T, D) → (out (T, D), router_logits (T, E), selected (T, k), min gap between the k-th and (k+1)-th p)."""
    E, k = c["experts"], c["top_k"]
    if c["type"] == "mixtral":
        router, ex = P[p + "block_sparse_moe.gate.weight"], lambda e, n: P[p + f"block_sparse_moe.experts.{e}.{n}.weight"]
        names = ("w1", "w3", "w2")
    else:
        router, ex = P[p + "mlp.gate.weight"], lambda e, n: P[p + f"mlp.experts.{e}.{n}.weight"]
        names = ("gate_proj", "up_proj", "down_proj")
    logits = x @ router.T
    prob = F.softmax(logits, dim=-1)
    w, sel = torch.topk(prob, k, dim=-1)
    srt = torch.sort(prob.detach(), dim=-1, descending=True).values
    gap = float((srt[:, k - 1] - srt[:, k]).min()) if k < E else 1.0
    if c["norm_topk"]:
        w = w / w.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(E):
        idx, slot = torch.where(sel == e)
        if idx.numel() == 0:
            continue
        xe = x[idx]
        y = (F.silu(xe @ ex(e, names[0]).T) * (xe @ ex(e, names[1]).T)) @ ex(e, names[2]).T
        out = out.index_add(0, idx, y * w[idx, slot, None])
    if c["shared"] > 0:
        q = p + "mlp.shared_expert."
        ys = (F.silu(x @ P[q + "gate_proj.weight"].T) * (x @ P[q + "up_proj.weight"].T)) @ P[q + "down_proj.weight"].T
        out = out + torch.sigmoid(x @ P[p + "mlp.shared_expert_gate.weight"].T) * ys
    return out, logits, sel, gap


def loss_fn(c, P, windows):
    D, L, H, Hk, V = (DIMS[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"))
    eps = DIMS["norm_eps"]
    Dh = D // H
    cos, sin = rope_tables(Dh, DIMS["rope_theta"])
    inp, tgt = windows[:, :-1], windows[:, 1:]
    E = P["model.embed_tokens.weight"]
    x = E[inp]
    mask = torch.ones(S, S, dtype=torch.bool).tril()
    all_logits, sels, gap = [], [], 1.0
    for l in range(L):
        p = f"model.layers.{l}."
        n = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = (n @ P[p + "self_attn.q_proj.weight"].T).view(B, S, H, Dh).transpose(1, 2)
        k = (n @ P[p + "self_attn.k_proj.weight"].T).view(B, S, Hk, Dh).transpose(1, 2)
        v = (n @ P[p + "self_attn.v_proj.weight"].T).view(B, S, Hk, Dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
        s = s.masked_fill(~mask, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, S, H * Dh)
        h = x + o @ P[p + "self_attn.o_proj.weight"].T
        n2 = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        out, lg, sel, g = moe_block(c, P, p, n2.reshape(B * S, D))
        all_logits.append(lg)
        sels.append(sel.tolist())
        gap = min(gap, g)
        x = h + out.view(B, S, D)
    xf = rms_norm(x, P["model.norm.weight"], eps)
    W = E if c["tied"] else P["lm_head.weight"]
    ce = F.cross_entropy((xf @ W.T).reshape(-1, V), tgt.reshape(-1))
    aux = load_balancing_loss_func(all_logits, c["experts"], c["top_k"])
    return ce + c["aux"] * aux, ce, aux, sels, gap


def flat(tensors, table):
    return np.concatenate([tensors[n].detach().double().reshape(-1).numpy() for n, _ in table]).astype("<f4")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".f32") or f == "cases.json":
            os.remove(os.path.join(OUT, f))
    g = torch.Generator().manual_seed(7)
    windows = torch.randint(0, DIMS["vocab_size"], (B, S + 1), generator=g)
    out_cases = []
    for c in CASES:
        table = tensor_table(c)
        for seed in range(100, 200):  # first seed whose routing has no near-tie
            P0 = init_params(c, seed)
            P = {n: P0[n].double().clone().requires_grad_(True) for n, _ in table}
            loss, ce, aux, sels, gap = loss_fn(c, P, windows)
            if gap > 1e-3:
                break
        loss.backward()
        flat(P0, table).tofile(os.path.join(OUT, c["name"] + ".params.f32"))
        flat({n: P[n].grad for n, _ in table}, table).tofile(os.path.join(OUT, c["name"] + ".grad.f32"))
        tab, off = [], 0
        for n, shp in table:
            tab.append({"name": n, "offset": off, "shape": list(shp)})
            off += int(np.prod(shp))
        rec = dict(c)
        rec.update({"seed": seed, "loss": float(ce), "aux_value": float(aux), "objective": float(loss),
                    "min_topk_gap": gap, "selected": sels, "tensors": tab, "n_params": off,
                    "params_file": c["name"] + ".params.f32", "grad_file": c["name"] + ".grad.f32"})
        out_cases.append(rec)
        print(f"{c['name']:14s} seed {seed} ce {float(ce):.6f} aux {float(aux):.6f} gap {gap:.2e} params {off}")
    meta = {"generator": "tests/reference/gen_train_moe.py", "torch": torch.__version__, "dims": DIMS, "batch": B,
            "seq_len": S, "windows": windows.tolist(), "cases": out_cases,
            "notes": "float64 autograd from float32 parameters; loss = ce + aux * load_balancing_loss_func"}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
