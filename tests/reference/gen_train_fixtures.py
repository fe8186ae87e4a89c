#!/usr/bin/python3
"""gen_train_fixtures.py — PyTorch autograd references for the trainer (tests/test_train_model.c).

A tiny Llama decoder (d_model 16, 2 layers, 4 heads, 2 kv heads, d_ff 24, vocab 50, windows of
8+1 tokens, batch 2) is written with plain torch ops, exactly as the trainer defines it
(include/neuronlab/train_model.h): embedding; per layer h = x + o_proj(attn(rmsnorm(x))),
x' = h + down(act(gate(rmsnorm(h))) * up(rmsnorm(h))); final rmsnorm; lm_head (the embedding
when tied). Objective = mean cross-entropy + l1 * mean over layers, tokens and neurons of |a|.
Gradients come from autograd, not from re-derived formulas. The optimizer is torch.optim.AdamW
(two param groups: weight decay on 2-D tensors, none on norm weights) after
torch.nn.utils.clip_grad_norm_, with the trainer's schedule (linear warmup, cosine to min_lr).

Cases: every activation (silu, gelu, relu, relu2) x tied/untied x with/without the L1 penalty.
Everything is computed in float64 from float32 initial parameters (the reference is the exact
gradient; the C trainer computes in float32), RoPE tables in float32 as transformers does.

Writes tests/fixtures/train/:
  cases.json           dims, hyper-parameters, tensor table (name, offset, shape), windows of each
                       step, and per case: loss, l1_mean, grad_norm, losses of 3 steps, files
  params.f32           initial parameters, untied layout (tied cases use all but lm_head.weight)
  <case>.grad.f32      gradients of step 1 (before clipping), the case's layout
  <case>.step1.f32     parameters after 1 AdamW step  (the cases in STEP_CASES)
  <case>.step3.f32     parameters after 3 AdamW steps (new windows each step)
All raw little-endian float32. Run: /usr/bin/python3 tests/reference/gen_train_fixtures.py
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "train")

DIMS = dict(d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24, vocab_size=50,
            rope_theta=10000.0, norm_eps=1e-5)
B, S = 2, 8
STEPS_REF = 3
HP = dict(lr=1e-2, min_lr=1e-3, warmup_steps=2, steps=5, weight_decay=0.1, beta1=0.9, beta2=0.95,
          eps=1e-8)
L1 = 5.0
ACTS = ["silu", "gelu", "relu", "relu2"]
# cases with the optimizer checked, and their clipping threshold (0.5: clipping active; 1e6: not)
STEP_CASES = {"silu_untied_l1": 0.5, "gelu_tied_nol1": 1e6, "relu_untied_nol1": 0.5, "relu2_tied_l1": 1e6}
CLIP_DEFAULT = 1e6


def act_fn(name):
    return {"silu": F.silu, "gelu": F.gelu, "relu": F.relu,
            "relu2": lambda x: torch.square(F.relu(x))}[name]


def tensor_table(tied):
    D, L, H, Hk, Fd, V = (DIMS[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size"))
    Dh = D // H
    Q, KV = H * Dh, Hk * Dh
    t = [("model.embed_tokens.weight", (V, D))]
    for l in range(L):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", (D,)), (p + "self_attn.q_proj.weight", (Q, D)),
              (p + "self_attn.k_proj.weight", (KV, D)), (p + "self_attn.v_proj.weight", (KV, D)),
              (p + "self_attn.o_proj.weight", (D, Q)), (p + "post_attention_layernorm.weight", (D,)),
              (p + "mlp.gate_proj.weight", (Fd, D)), (p + "mlp.up_proj.weight", (Fd, D)),
              (p + "mlp.down_proj.weight", (D, Fd))]
    t += [("model.norm.weight", (D,))]
    if not tied:
        t += [("lm_head.weight", (V, D))]
    return t


def init_params(seed=1234):
    """float32 parameters, larger than the trainer's init so every path carries signal:
    matrices N(0, 1/fan_in), embedding N(0, 1), norm weights 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    P = {}
    for name, shape in tensor_table(tied=False):
        if len(shape) == 1:
            P[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif "embed" in name or "lm_head" in name:
            P[name] = torch.randn(shape, generator=g)
        else:
            P[name] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return {k: v.float() for k, v in P.items()}


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_tables(Dh, theta):
    # transformers LlamaRotaryEmbedding: inv_freq and cos/sin in float32
    inv = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.int64).float() / Dh))
    pos = torch.arange(S, dtype=torch.float32)
    fr = pos[:, None] * inv[None, :]
    emb = torch.cat((fr, fr), dim=-1)
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def loss_fn(P, windows, act, tied, l1):
    D, L, H, Hk, Fd, V = (DIMS[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size"))
    eps = DIMS["norm_eps"]
    Dh = D // H
    cos, sin = rope_tables(Dh, DIMS["rope_theta"])
    inp, tgt = windows[:, :-1], windows[:, 1:]
    E = P["model.embed_tokens.weight"]
    x = E[inp]                                                       # (B, S, D)
    f = act_fn(act)
    mask = torch.ones(S, S, dtype=torch.bool).tril()
    abs_sum = 0.0
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
        o = torch.softmax(s, dim=-1) @ v                             # (B, H, S, Dh)
        o = o.transpose(1, 2).reshape(B, S, H * Dh)
        h = x + o @ P[p + "self_attn.o_proj.weight"].T
        n2 = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        a = f(n2 @ P[p + "mlp.gate_proj.weight"].T) * (n2 @ P[p + "mlp.up_proj.weight"].T)
        abs_sum = abs_sum + a.abs().sum()
        x = h + a @ P[p + "mlp.down_proj.weight"].T
    xf = rms_norm(x, P["model.norm.weight"], eps)
    W = E if tied else P["lm_head.weight"]
    logits = xf @ W.T
    ce = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
    l1_mean = abs_sum / (L * B * S * Fd)
    return ce + l1 * l1_mean, ce, l1_mean


def lr_at(s):
    lr, mn, wu, st = HP["lr"], HP["min_lr"], HP["warmup_steps"], HP["steps"]
    if s <= wu and wu > 0:
        return lr * s / wu
    prog = min(1.0, (s - wu) / (st - wu))
    return mn + 0.5 * (lr - mn) * (1 + math.cos(math.pi * prog))


def flat(tensors, table):
    return np.concatenate([tensors[n].detach().double().reshape(-1).numpy() for n, _ in table]).astype("<f4")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".f32") or f == "cases.json":
            os.remove(os.path.join(OUT, f))
    P0 = init_params()
    g = torch.Generator().manual_seed(99)
    windows = torch.randint(0, DIMS["vocab_size"], (STEPS_REF, B, S + 1), generator=g)
    untied = tensor_table(False)
    flat(P0, untied).tofile(os.path.join(OUT, "params.f32"))
    table_json, off = [], 0
    for n, shp in untied:
        table_json.append({"name": n, "offset": off, "shape": list(shp)})
        off += int(np.prod(shp))
    cases = []
    for act in ACTS:
        for tied in (False, True):
            for use_l1 in (False, True):
                name = f"{act}_{'tied' if tied else 'untied'}_{'l1' if use_l1 else 'nol1'}"
                table = tensor_table(tied)
                l1 = L1 if use_l1 else 0.0
                clip = STEP_CASES.get(name, CLIP_DEFAULT)
                P = {n: P0[n].double().clone().requires_grad_(True) for n, _ in table}
                params = [P[n] for n, _ in table]
                decay = [P[n] for n, s in table if len(s) == 2]
                no_decay = [P[n] for n, s in table if len(s) == 1]
                opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                                         {"params": no_decay, "weight_decay": 0.0}],
                                        lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"])
                rec = {"name": name, "act": act, "tied": tied, "l1": l1, "grad_clip": clip,
                       "losses": [], "grad_norms": [], "lrs": []}
                for step in range(1, STEPS_REF + 1):
                    opt.zero_grad()
                    loss, ce, l1m = loss_fn(P, windows[step - 1], act, tied, l1)
                    loss.backward()
                    if step == 1:
                        rec["loss"] = float(ce)
                        rec["l1_mean"] = float(l1m)
                        grads = {n: P[n].grad for n, _ in table}
                        flat(grads, table).tofile(os.path.join(OUT, name + ".grad.f32"))
                        rec["grad_file"] = name + ".grad.f32"
                        gmax = {n: float(P[n].grad.abs().max()) for n, _ in table}
                        rec["grad_absmax"] = gmax
                    norm = torch.nn.utils.clip_grad_norm_(params, clip)
                    lr = lr_at(step)
                    for grp in opt.param_groups:
                        grp["lr"] = lr
                    opt.step()
                    rec["losses"].append(float(ce))
                    rec["grad_norms"].append(float(norm))
                    rec["lrs"].append(lr)
                    if name in STEP_CASES and step in (1, STEPS_REF):
                        fn = f"{name}.step{step}.f32"
                        flat({n: P[n] for n, _ in table}, table).tofile(os.path.join(OUT, fn))
                        rec[f"step{step}_file"] = fn
                cases.append(rec)
                print(f"{name:20s} loss {rec['loss']:.6f} l1_mean {rec['l1_mean']:.5f} "
                      f"grad_norm {rec['grad_norms'][0]:.4f} clip {clip:g}")
    meta = {"generator": "tests/reference/gen_train_fixtures.py", "torch": torch.__version__,
            "dims": DIMS, "batch": B, "seq_len": S, "steps_ref": STEPS_REF, "hparams": HP,
            "l1_coef": L1, "windows": windows.tolist(), "tensors": table_json,
            "n_params_untied": off, "cases": cases,
            "notes": "float64 autograd from float32 initial params; grads before clipping; "
                     "AdamW groups: decay on 2-D tensors only"}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
