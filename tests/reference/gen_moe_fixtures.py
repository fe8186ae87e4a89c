#!/usr/bin/python3
"""gen_moe_fixtures.py — random-weight Hugging Face folders and expected outputs for the
mixture-of-experts and Qwen3 model types (mixtral, qwen2_moe, qwen3, qwen3_moe) under
tests/fixtures/hf/<case>/, plus tests/fixtures/moe_topk.json (torch.topk on tie-heavy rows).

The reference forward pass below is written from the Hugging Face modeling files' equations
(modeling_mixtral.py, modeling_qwen2_moe.py, modeling_qwen3.py, modeling_qwen3_moe.py):
  - attention as Llama (nlref), Qwen3/Qwen3-MoE with RMSNorm over each head's q and k
    (q_norm/k_norm, weight (head_dim), eps rms_norm_eps) after the projection, before RoPE;
  - sparse block: router_logits = x·gateᵀ; p = softmax(router_logits, float32);
    (w, sel) = torch.topk(p, k); w /= w.sum() when Mixtral, or Qwen when norm_topk_prob;
    the output starts at zero and, for each expert hit (increasing id), the expert's gated MLP
    on its tokens times their weight is index_add_-ed; Qwen2-MoE adds
    sigmoid(x·shared_expert_gateᵀ) · shared_expert(x);
  - Qwen-MoE layer l is sparse iff l not in mlp_only_layers and num_experts > 0 and
    (l + 1) % decoder_sparse_step == 0; other layers use a dense MLP of intermediate_size.
Weights are random with router rows scaled up ("peaked" logits) so that the k-th and (k+1)-th
probabilities of every token are far apart (relative gap > 1e-3, checked: a near tie could go
either way in float32).

Outputs per case (raw little-endian, row-major): logits.f32 (T, V); resid.f32 (L, T, D);
ffn_out.f32 (L, T, D) the FFN/MoE block output; ffn_act.f32 (n_dense, T, F) the neuron
activation of the dense layers (expected.json "dense_layers"); router_logits.f32
(n_moe, T, E), experts.i32 (n_moe, T, k) and expert_weights.f32 (n_moe, T, k) of the MoE layers
(expected.json "moe_layers"; experts in torch.topk order); expert_act.f32 (n_moe, T, k, Fe): slot j
of token t holds act(x·W1ᵀ) ⊙ (x·W3ᵀ) of expert experts[t, j] (what `record` stores as
/layers/{l}/expert_act); for qwen2_moe shared_act.f32 (n_moe, T, Fs) and shared_gate.f32 (n_moe, T)
= sigmoid(x·shared_expert_gateᵀ); generate.json the greedy
continuation of "Hello" (llama_bf16's tokenizer ids), recomputed over the whole sequence at
each step, stopping before a near tie or EOS.
Run: /usr/bin/python3 tests/reference/gen_moe_fixtures.py   (Debian python3-torch)
Checked by: tests/test_moe_models.c, tests/moe_generate.sh; check_fixtures.py re-runs the
reference on these folders (check_case).
"""

import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nlref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf")
TOKENS = [1, 15, 200, 37, 99, 249, 3, 128, 77, 5, 42]          # T = 11
CASES = ("mixtral", "qwen2_moe", "qwen3", "qwen3_moe")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GAP = 1e-3          # minimum (p_(k) - p_(k+1)) / p_(k) of every routed token
PROMPT = "Hello"
GREEDY_STEPS = 16


class Rand:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def w(self, shape, std):
        return torch.randn(*shape, generator=self.g) * std

    def norm_w(self, n):
        return 1.0 + torch.randn(n, generator=self.g) * 0.1


# ---- cases -------------------------------------------------------------------------------

def moe_layers(cfg):
    L = cfg["num_hidden_layers"]
    mt = cfg["model_type"]
    if mt == "qwen3":
        return []
    if mt == "mixtral":
        return list(range(L))
    E = cfg.get("num_experts", 0)
    step = cfg.get("decoder_sparse_step", 1)
    only = cfg.get("mlp_only_layers", [])
    return [l for l in range(L) if l not in only and E > 0 and (l + 1) % step == 0]


def build(name, seed, mt, dtype, L, V, H, Hkv, hd, F_dense, tied, E=0, k=0, Fe=0, Fs=0, extra=None):
    D = 64
    r = Rand(seed)
    arch = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "qwen3_moe": "Qwen3MoeForCausalLM"}[mt]
    cfg = {"architectures": [arch], "model_type": mt, "attention_dropout": 0.0, "bos_token_id": 1,
           "eos_token_id": 2, "hidden_act": "silu", "hidden_size": D, "initializer_range": 0.02,
           "intermediate_size": F_dense, "max_position_embeddings": 128, "num_attention_heads": H,
           "num_hidden_layers": L, "num_key_value_heads": Hkv, "rms_norm_eps": 1e-6, "rope_scaling": None,
           "rope_theta": 10000.0, "tie_word_embeddings": tied, "torch_dtype": dtype,
           "transformers_version": "4.51.0", "use_cache": True, "vocab_size": V}
    if mt == "mixtral":
        cfg.update({"num_local_experts": E, "num_experts_per_tok": k, "router_aux_loss_coef": 0.02,
                    "router_jitter_noise": 0.0, "output_router_logits": False, "sliding_window": None,
                    "rope_theta": 1000000.0, "rms_norm_eps": 1e-5})
    if mt in ("qwen2_moe", "qwen3_moe"):
        cfg.update({"num_experts": E, "num_experts_per_tok": k, "moe_intermediate_size": Fe,
                    "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": False,
                    "router_aux_loss_coef": 0.001, "output_router_logits": False})
    if mt == "qwen2_moe":
        cfg.update({"shared_expert_intermediate_size": Fs, "qkv_bias": True, "use_sliding_window": False,
                    "sliding_window": 4096, "max_window_layers": L})
    if mt in ("qwen3", "qwen3_moe"):
        cfg.update({"head_dim": hd, "attention_bias": False, "use_sliding_window": False,
                    "sliding_window": None, "max_window_layers": L})
    if extra:
        cfg.update(extra)
    sparse = moe_layers(cfg)
    T = [("model.embed_tokens.weight", r.w((V, D), 0.5))]
    for l in range(L):
        p = f"model.layers.{l}."
        T.append((p + "input_layernorm.weight", r.norm_w(D)))
        T.append((p + "self_attn.q_proj.weight", r.w((H * hd, D), 0.1)))
        if mt == "qwen2_moe":
            T.append((p + "self_attn.q_proj.bias", r.w((H * hd,), 0.1)))
        T.append((p + "self_attn.k_proj.weight", r.w((Hkv * hd, D), 0.1)))
        if mt == "qwen2_moe":
            T.append((p + "self_attn.k_proj.bias", r.w((Hkv * hd,), 0.1)))
        T.append((p + "self_attn.v_proj.weight", r.w((Hkv * hd, D), 0.1)))
        if mt == "qwen2_moe":
            T.append((p + "self_attn.v_proj.bias", r.w((Hkv * hd,), 0.1)))
        T.append((p + "self_attn.o_proj.weight", r.w((D, H * hd), 0.1)))
        if mt in ("qwen3", "qwen3_moe"):
            T.append((p + "self_attn.q_norm.weight", r.norm_w(hd)))
            T.append((p + "self_attn.k_norm.weight", r.norm_w(hd)))
        T.append((p + "post_attention_layernorm.weight", r.norm_w(D)))
        if l not in sparse:
            T.append((p + "mlp.gate_proj.weight", r.w((F_dense, D), 0.15)))
            T.append((p + "mlp.up_proj.weight", r.w((F_dense, D), 0.15)))
            T.append((p + "mlp.down_proj.weight", r.w((D, F_dense), 0.1)))
            continue
        if mt == "mixtral":
            T.append((p + "block_sparse_moe.gate.weight", r.w((E, D), 0.6)))
            for e in range(E):
                q = p + f"block_sparse_moe.experts.{e}."
                T.append((q + "w1.weight", r.w((Fe, D), 0.15)))
                T.append((q + "w2.weight", r.w((D, Fe), 0.1)))
                T.append((q + "w3.weight", r.w((Fe, D), 0.15)))
        else:
            T.append((p + "mlp.gate.weight", r.w((E, D), 0.6)))
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                T.append((q + "gate_proj.weight", r.w((Fe, D), 0.15)))
                T.append((q + "up_proj.weight", r.w((Fe, D), 0.15)))
                T.append((q + "down_proj.weight", r.w((D, Fe), 0.1)))
            if Fs:
                T.append((p + "mlp.shared_expert.gate_proj.weight", r.w((Fs, D), 0.15)))
                T.append((p + "mlp.shared_expert.up_proj.weight", r.w((Fs, D), 0.15)))
                T.append((p + "mlp.shared_expert.down_proj.weight", r.w((D, Fs), 0.1)))
                T.append((p + "mlp.shared_expert_gate.weight", r.w((1, D), 0.3)))
    T.append(("model.norm.weight", r.norm_w(D)))
    if not tied:
        T.append(("lm_head.weight", r.w((V, D), 0.1)))
    return cfg, T


def build_cases():
    c = []
    cfg, T = build("mixtral", 201, "mixtral", "float32", L=2, V=260, H=4, Hkv=2, hd=16, F_dense=32, tied=False,
                   E=8, k=2, Fe=32)
    c.append(dict(name="mixtral", cfg=cfg, tensors=T,
                  notes="Mixtral: 8 experts, top-2 renormalised, every layer sparse; GQA 4/2; untied; "
                        "experts.E.w1/w3/w2 = gate/up/down; rope_theta 1e6"))
    cfg, T = build("qwen2_moe", 202, "qwen2_moe", "bfloat16", L=4, V=260, H=4, Hkv=2, hd=16, F_dense=96, tied=True,
                   E=6, k=2, Fe=24, Fs=48, extra={"decoder_sparse_step": 2, "mlp_only_layers": [3, 9]})
    c.append(dict(name="qwen2_moe", cfg=cfg, tensors=T,
                  notes="Qwen2-MoE in BF16: decoder_sparse_step 2 and mlp_only_layers [3, 9] make layers 0 and 2 "
                        "dense (step), 3 dense (mlp_only; 9 is beyond the layers and changes nothing) and only "
                        "layer 1 sparse; 6 experts top-2 NOT renormalised (norm_topk_prob false); a shared "
                        "expert (48 wide) gated by sigmoid(x . shared_expert_gate); q/k/v bias; tied embeddings"))
    cfg, T = build("qwen3", 203, "qwen3", "float32", L=2, V=260, H=4, Hkv=2, hd=32, F_dense=96, tied=False)
    c.append(dict(name="qwen3", cfg=cfg, tensors=T,
                  notes="Qwen3 dense: head_dim 32 given explicitly (H*hd = 128 != hidden 64), RMSNorm over each "
                        "head's q and k before RoPE, no attention bias, GQA 4/2, untied"))
    cfg, T = build("qwen3_moe", 204, "qwen3_moe", "float16", L=2, V=260, H=4, Hkv=2, hd=16, F_dense=80, tied=False,
                   E=8, k=3, Fe=24, extra={"norm_topk_prob": True})
    c.append(dict(name="qwen3_moe", cfg=cfg, tensors=T, shard_after="model.layers.1.self_attn.o_proj.weight",
                  notes="Qwen3-MoE in F16, two shards (layer 1 split): 8 experts top-3 renormalised "
                        "(norm_topk_prob true), q/k norms, no shared expert, every layer sparse"))
    return c


# ---- reference forward -------------------------------------------------------------------

def gated_mlp(x, g, u, d, act):
    return F.linear(act(F.linear(x, g)) * F.linear(x, u), d)


@torch.no_grad()
def forward(cfg, W, tokens):
    mt = cfg["model_type"]
    D, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    act = nlref.ACT[cfg["hidden_act"]]
    qkv_bias = mt == "qwen2_moe" and cfg.get("qkv_bias", True)
    qk_norm = mt in ("qwen3", "qwen3_moe")
    sparse = moe_layers(cfg)
    T = len(tokens)
    cos, sin = nlref.rope_cos_sin(nlref.rope_inv_freq(cfg, hd, cfg.get("rope_theta", 10000.0)), T)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    out = {"resid": [], "ffn_out": [], "ffn_act": [], "router_logits": [], "experts": [], "expert_weights": [],
           "expert_act": [], "shared_act": [], "shared_gate": []}
    for l in range(L):
        p = f"model.layers.{l}."
        g = lambda n: W.get(p + n)
        h = nlref.rms_norm(x, g("input_layernorm.weight"), eps)
        q = F.linear(h, g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias") if qkv_bias else None)
        kk = F.linear(h, g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias") if qkv_bias else None)
        v = F.linear(h, g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias") if qkv_bias else None)
        q, kk, v = nlref.heads(q, H, hd), nlref.heads(kk, Hkv, hd), nlref.heads(v, Hkv, hd)
        if qk_norm:     # Qwen3Attention: q_norm(q.view(..., head_dim)), k_norm(...) before RoPE
            q = nlref.rms_norm(q, g("self_attn.q_norm.weight"), eps)
            kk = nlref.rms_norm(kk, g("self_attn.k_norm.weight"), eps)
        q, kk = nlref.apply_rope(q, cos, sin), nlref.apply_rope(kk, cos, sin)
        a = nlref.attention(q, kk, v, hd ** -0.5, cfg.get("sliding_window") if mt == "mixtral" else None)
        x = x + F.linear(a, g("self_attn.o_proj.weight"))
        h = nlref.rms_norm(x, g("post_attention_layernorm.weight"), eps)
        if l not in sparse:
            pre = F.linear(h, g("mlp.gate_proj.weight"))
            fa = act(pre) * F.linear(h, g("mlp.up_proj.weight"))
            y = F.linear(fa, g("mlp.down_proj.weight"))
            out["ffn_act"].append(fa)
        else:
            pre = "block_sparse_moe." if mt == "mixtral" else "mlp."
            names = ("w1", "w3", "w2") if mt == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            E = cfg["num_local_experts"] if mt == "mixtral" else cfg["num_experts"]
            k = cfg["num_experts_per_tok"]
            logits = F.linear(h, g(pre + "gate.weight"))
            probs = F.softmax(logits, dim=1, dtype=torch.float)
            rw, sel = torch.topk(probs, k, dim=-1)
            top = torch.sort(probs, dim=-1, descending=True).values
            gap = float(((top[:, k - 1] - top[:, k]) / top[:, k - 1]).min()) if k < E else 1.0
            assert gap > GAP, f"layer {l}: routing near tie (relative gap {gap}); change the seed"
            if mt == "mixtral" or cfg.get("norm_topk_prob", False):
                rw = rw / rw.sum(dim=-1, keepdim=True)
            y = torch.zeros_like(h)
            Fe = g(f"{pre}experts.0.{names[0]}.weight").shape[0]
            ea = torch.zeros(T, k, Fe)
            for t in range(T):          # slot-aligned activations, computed per (token, slot)
                for j in range(k):
                    e = int(sel[t, j])
                    ex = [g(f"{pre}experts.{e}.{n}.weight") for n in names]
                    ea[t, j] = act(F.linear(h[t], ex[0])) * F.linear(h[t], ex[1])
            out["expert_act"].append(ea)
            mask = F.one_hot(sel, num_classes=E).permute(2, 1, 0)      # (E, k, T)
            for e in range(E):
                idx, tok = torch.where(mask[e])
                if tok.numel() == 0:
                    continue
                ex = [g(f"{pre}experts.{e}.{n}.weight") for n in names]
                ye = gated_mlp(h[tok], ex[0], ex[1], ex[2], act) * rw[tok, idx, None]
                y.index_add_(0, tok, ye)
            if mt == "qwen2_moe" and cfg.get("shared_expert_intermediate_size", 0):
                s = gated_mlp(h, g("mlp.shared_expert.gate_proj.weight"), g("mlp.shared_expert.up_proj.weight"),
                              g("mlp.shared_expert.down_proj.weight"), act)
                sg = torch.sigmoid(F.linear(h, g("mlp.shared_expert_gate.weight")))
                y = y + sg * s
                out["shared_act"].append(act(F.linear(h, g("mlp.shared_expert.gate_proj.weight"))) *
                                         F.linear(h, g("mlp.shared_expert.up_proj.weight")))
                out["shared_gate"].append(sg[:, 0])
            out["router_logits"].append(logits)
            out["experts"].append(sel.to(torch.int32))
            out["expert_weights"].append(rw)
        x = x + y
        out["ffn_out"].append(y)
        out["resid"].append(x)
    h = nlref.rms_norm(x, W["model.norm.weight"], eps)
    lm = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    out["logits"] = F.linear(h, lm)
    return out


# ---- writing -----------------------------------------------------------------------------

def write_raw(path, t, dt="<f4"):
    t.detach().cpu().numpy().astype(dt).tofile(path)


def greedy(cfg, W, prompt_ids, steps, eos):
    ids = list(prompt_ids)
    for _ in range(steps):
        logits = forward(cfg, W, ids)["logits"][-1]
        top2 = torch.topk(logits, 2).values
        if float(top2[0] - top2[1]) < 1e-3:
            break
        nxt = int(torch.argmax(logits))
        if nxt == eos:
            break
        ids.append(nxt)
    return ids[len(prompt_ids):]


def generate(case):
    name, cfg = case["name"], case["cfg"]
    folder = os.path.join(OUT, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    st = DTYPES[cfg["torch_dtype"]]
    T = [(n, t.to(st)) for n, t in case["tensors"]]
    if "shard_after" in case:
        cut = [n for n, _ in T].index(case["shard_after"]) + 1
        wm, total = {}, 0
        for fn, part in (("model-00001-of-00002.safetensors", T[:cut]), ("model-00002-of-00002.safetensors", T[cut:])):
            total += nlref.write_safetensors(os.path.join(folder, fn), part)
            wm.update({n: fn for n, _ in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)
            f.write("\n")
    else:
        nlref.write_safetensors(os.path.join(folder, "model.safetensors"), T)
    cfg2, tensors = nlref.load_folder(folder)          # the reference runs on what is on disk
    W = {k: v.float() for k, v in tensors.items()}
    o = forward(cfg2, W, TOKENS)
    sparse = moe_layers(cfg)
    dense = [l for l in range(cfg["num_hidden_layers"]) if l not in sparse]
    write_raw(os.path.join(folder, "logits.f32"), o["logits"])
    write_raw(os.path.join(folder, "resid.f32"), torch.stack(o["resid"]))
    write_raw(os.path.join(folder, "ffn_out.f32"), torch.stack(o["ffn_out"]))
    if dense:
        write_raw(os.path.join(folder, "ffn_act.f32"), torch.stack(o["ffn_act"]))
    if sparse:
        write_raw(os.path.join(folder, "router_logits.f32"), torch.stack(o["router_logits"]))
        write_raw(os.path.join(folder, "experts.i32"), torch.stack(o["experts"]), "<i4")
        write_raw(os.path.join(folder, "expert_weights.f32"), torch.stack(o["expert_weights"]))
        write_raw(os.path.join(folder, "expert_act.f32"), torch.stack(o["expert_act"]))
    if o["shared_act"]:
        write_raw(os.path.join(folder, "shared_act.f32"), torch.stack(o["shared_act"]))
        write_raw(os.path.join(folder, "shared_gate.f32"), torch.stack(o["shared_gate"]))
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    E = cfg.get("num_local_experts", cfg.get("num_experts", 0)) if sparse else 0
    exp = {"case": name, "model_type": cfg["model_type"], "tokens": TOKENS, "T": len(TOKENS),
           "V": cfg["vocab_size"], "L": cfg["num_hidden_layers"], "D": D, "F": cfg["intermediate_size"],
           "E": E, "k": cfg.get("num_experts_per_tok", 0) if sparse else 0,
           "head_dim": cfg.get("head_dim") or D // H, "dtype": cfg["torch_dtype"],
           "dense_layers": dense, "moe_layers": sparse, "tolerance": 1e-4,
           "max_abs_logit": float(o["logits"].abs().max()), "notes": case["notes"]}
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    prompt_ids = [1, 259] + [3 + b for b in PROMPT.encode()]   # llama_bf16's tokenizer: <s> ▁ bytes
    cont = greedy(cfg2, W, prompt_ids, GREEDY_STEPS, cfg["eos_token_id"])
    assert len(cont) >= 4, f"{name}: greedy stops within 4 steps; pick another seed"
    with open(os.path.join(folder, "generate.json"), "w") as f:
        json.dump({"prompt": PROMPT, "tokenizer": "llama_bf16", "prompt_tokens": prompt_ids, "greedy": cont}, f)
        f.write("\n")
    return folder, o


def check_case(folder):
    """Re-runs the reference on a stored case folder; raises when an output differs."""
    cfg, tensors = nlref.load_folder(folder)
    W = {k: v.float() for k, v in tensors.items()}
    with open(os.path.join(folder, "expected.json")) as f:
        exp = json.load(f)
    o = forward(cfg, W, exp["tokens"])
    report = []
    for fn, key, dt in (("logits.f32", "logits", "<f4"), ("resid.f32", "resid", "<f4"), ("ffn_out.f32", "ffn_out", "<f4"),
                        ("ffn_act.f32", "ffn_act", "<f4"), ("router_logits.f32", "router_logits", "<f4"),
                        ("expert_weights.f32", "expert_weights", "<f4"), ("experts.i32", "experts", "<i4"),
                        ("expert_act.f32", "expert_act", "<f4"), ("shared_act.f32", "shared_act", "<f4"),
                        ("shared_gate.f32", "shared_gate", "<f4")):
        path = os.path.join(folder, fn)
        got = o[key]
        if isinstance(got, list):
            if not got:             # no dense (or no MoE) layers: no such file
                continue
            got = torch.stack(got)
        if not os.path.exists(path):
            raise ValueError(f"{fn} is missing")
        stored = torch.from_numpy(__import__("numpy").fromfile(path, dtype=dt)).reshape(got.shape)
        d = float((got.double() - stored.double()).abs().max())
        if d > 1e-5:
            raise ValueError(f"{fn}: re-run differs from stored by {d}")
        report.append(f"{key} {d:.1e}")
    return "; ".join(report)


def topk_cases():
    """Rows with many exact ties (values from a small set) and torch.topk's answer."""
    g = torch.Generator().manual_seed(7)
    levels = torch.tensor([0.0625, 0.125, 0.25, 0.5])
    out = []
    for n, k in ((4, 2), (8, 1), (8, 2), (8, 3), (8, 7), (8, 8), (16, 4), (20, 6), (60, 4), (64, 1), (64, 8),
                 (128, 2), (128, 8), (33, 5), (150, 2)):
        for rep in range(12):
            nl = 1 + rep % 4            # 1 level: all equal; more levels: fewer ties
            v = levels[torch.randint(0, nl, (n,), generator=g)]
            _, idx = torch.topk(v, k)
            out.append({"n": n, "k": k, "p": [float(a) for a in v], "idx": [int(i) for i in idx]})
    return out


def main():
    torch.set_num_threads(1)
    for case in build_cases():
        folder, o = generate(case)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{case['name']:10s} max|logit| {o['logits'].abs().max():7.3f}  {size} bytes")
    path = os.path.join(ROOT, "tests", "fixtures", "moe_topk.json")
    with open(path, "w") as f:
        json.dump({"what": "torch.topk(p, k) indices on CPU (torch " + torch.__version__ + ")",
                   "cases": topk_cases()}, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
