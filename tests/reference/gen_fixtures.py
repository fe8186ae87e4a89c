#!/usr/bin/python3
"""gen_fixtures.py — writes the random-weight Hugging Face model folders and the expected
outputs under tests/fixtures/hf/<case>/ (see tests/reference/README.md).

Rules: deterministic (one fixed seed per case, CPU torch); weights are drawn in float32,
rounded to the case's storage dtype, stored in that dtype, and the reference is computed
in float32 from the *stored* values (the folder is read back through nlref.load_folder
before the forward pass, so what is checked is exactly what is on disk).
Run: /usr/bin/python3 tests/reference/gen_fixtures.py   (regenerates everything)
Checked by: tests/reference/check_fixtures.py
"""

import json
import os
import re
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nlref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf")

TOKENS = [1, 15, 200, 37, 99, 249, 3, 128, 77, 5, 42]          # T = 11, all < every V
TOLERANCE = 1e-4

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TRANSFORMERS_VERSION = "4.44.0"

# Emit the legacy buffers real checkpoints carry: Pythia (gpt_neox case) has
# attention.bias (BOOL causal mask), attention.masked_bias (0-dim F32) and
# rotary_emb.inv_freq; openai-community/gpt2 has h.N.attn.bias (F32 causal mask).
# A loader must ignore tensors it does not use. Listed in expected.json "ignored_tensors".
LEGACY_BUFFERS = True


class Rand:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def w(self, shape, std):
        return torch.randn(*shape, generator=self.g) * std

    def norm_w(self, n):   # norm weights: around 1
        return 1.0 + torch.randn(n, generator=self.g) * 0.1

    def bias(self, n, std=0.05):
        return torch.randn(n, generator=self.g) * std


# ----------------------------------------------------------------------------------------
# case definitions: (config, ordered list of (name, float32 tensor), extras)

def llama_like(name, model_type, seed, V, F, Hkv, dtype, tied, act="silu", rope_theta=10000.0,
               rope_scaling=None, eps=1e-5, extra_cfg=None, embed_std=0.5, arch=None):
    D, L, H = 64, 2, 4
    hd = D // H
    r = Rand(seed)
    cfg = {
        "architectures": [arch or {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                   "qwen2": "Qwen2ForCausalLM"}[model_type]],
        "model_type": model_type,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": act,
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "max_position_embeddings": 128,
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": Hkv,
        "rms_norm_eps": eps,
        "rope_scaling": rope_scaling,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    if model_type == "llama":
        cfg.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    if extra_cfg:
        cfg.update(extra_cfg)
    T = []
    T.append(("model.embed_tokens.weight", r.w((V, D), embed_std)))
    for l in range(L):
        p = f"model.layers.{l}."
        T.append((p + "input_layernorm.weight", r.norm_w(D)))
        T.append((p + "self_attn.q_proj.weight", r.w((H * hd, D), 0.1)))
        if model_type == "qwen2":
            T.append((p + "self_attn.q_proj.bias", r.bias(H * hd, 0.1)))
        T.append((p + "self_attn.k_proj.weight", r.w((Hkv * hd, D), 0.1)))
        if model_type == "qwen2":
            T.append((p + "self_attn.k_proj.bias", r.bias(Hkv * hd, 0.1)))
        T.append((p + "self_attn.v_proj.weight", r.w((Hkv * hd, D), 0.1)))
        if model_type == "qwen2":
            T.append((p + "self_attn.v_proj.bias", r.bias(Hkv * hd, 0.1)))
        T.append((p + "self_attn.o_proj.weight", r.w((D, H * hd), 0.1)))
        T.append((p + "post_attention_layernorm.weight", r.norm_w(D)))
        T.append((p + "mlp.gate_proj.weight", r.w((F, D), 0.15)))
        T.append((p + "mlp.up_proj.weight", r.w((F, D), 0.15)))
        T.append((p + "mlp.down_proj.weight", r.w((D, F), 0.1)))
    T.append(("model.norm.weight", r.norm_w(D)))
    if not tied:
        T.append(("lm_head.weight", r.w((V, D), 0.1)))
    return cfg, T


def gpt2_case(seed, legacy_buffers):
    D, L, H, V, P = 64, 2, 4, 257, 32
    F = 4 * D            # n_inner is null in config.json -> 4 * n_embd
    r = Rand(seed)
    cfg = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": V - 1,
        "embd_pdrop": 0.1,
        "eos_token_id": V - 1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-5,
        "model_type": "gpt2",
        "n_ctx": P,
        "n_embd": D,
        "n_head": H,
        "n_inner": None,
        "n_layer": L,
        "n_positions": P,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }   # no tie_word_embeddings key, exactly like openai-community/gpt2: default true
    T = [("transformer.wte.weight", r.w((V, D), 0.2)),
         ("transformer.wpe.weight", r.w((P, D), 0.1))]
    extras = []
    for l in range(L):
        p = f"transformer.h.{l}."
        T += [(p + "ln_1.weight", r.norm_w(D)), (p + "ln_1.bias", r.bias(D))]
        if legacy_buffers:   # the F32 causal-mask buffer real gpt2 files carry as h.N.attn.bias
            T.append((p + "attn.bias", torch.tril(torch.ones(P, P)).view(1, 1, P, P)))
            extras.append(p + "attn.bias")
        T += [
              (p + "attn.c_attn.weight", r.w((D, 3 * D), 0.12)),      # Conv1D: (in, out)
              (p + "attn.c_attn.bias", r.bias(3 * D, 0.1)),
              (p + "attn.c_proj.weight", r.w((D, D), 0.1)),
              (p + "attn.c_proj.bias", r.bias(D)),
              (p + "ln_2.weight", r.norm_w(D)), (p + "ln_2.bias", r.bias(D)),
              (p + "mlp.c_fc.weight", r.w((D, F), 0.15)),
              (p + "mlp.c_fc.bias", r.bias(F, 0.1)),
              (p + "mlp.c_proj.weight", r.w((F, D), 0.08)),
              (p + "mlp.c_proj.bias", r.bias(D))]
    T += [("transformer.ln_f.weight", r.norm_w(D)), ("transformer.ln_f.bias", r.bias(D))]
    return cfg, T, extras


def neox_case(seed, parallel, V, base, legacy_buffers):
    D, L, H, F, P = 64, 2, 4, 128, 64
    hd = D // H
    rotary_pct = 0.25
    r = Rand(seed)
    cfg = {
        "architectures": ["GPTNeoXForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "classifier_dropout": 0.1,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_dropout": 0.0,
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": P,
        "model_type": "gpt_neox",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "rope_scaling": None,
        "rotary_emb_base": base,
        "rotary_pct": rotary_pct,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_parallel_residual": parallel,
        "vocab_size": V,
    }
    rot = int(hd * rotary_pct)
    T = [("gpt_neox.embed_in.weight", r.w((V, D), 0.5))]
    extras = []
    for l in range(L):
        p = f"gpt_neox.layers.{l}."
        T += [(p + "input_layernorm.weight", r.norm_w(D)), (p + "input_layernorm.bias", r.bias(D)),
              (p + "post_attention_layernorm.weight", r.norm_w(D)),
              (p + "post_attention_layernorm.bias", r.bias(D))]
        if legacy_buffers:
            mask = torch.tril(torch.ones(P, P, dtype=torch.bool)).view(1, 1, P, P)
            T.append((p + "attention.bias", mask))
            T.append((p + "attention.masked_bias", torch.tensor(-1e9)))
            extras += [p + "attention.bias", p + "attention.masked_bias"]
        T += [(p + "attention.query_key_value.weight", r.w((3 * D, D), 0.12)),
              (p + "attention.query_key_value.bias", r.bias(3 * D, 0.1))]
        if legacy_buffers:
            T.append((p + "attention.rotary_emb.inv_freq", nlref.default_inv_freq(base, rot)))
            extras.append(p + "attention.rotary_emb.inv_freq")
        T += [(p + "attention.dense.weight", r.w((D, D), 0.1)), (p + "attention.dense.bias", r.bias(D)),
              (p + "mlp.dense_h_to_4h.weight", r.w((F, D), 0.15)),
              (p + "mlp.dense_h_to_4h.bias", r.bias(F, 0.1)),
              (p + "mlp.dense_4h_to_h.weight", r.w((D, F), 0.1)),
              (p + "mlp.dense_4h_to_h.bias", r.bias(D))]
    T += [("gpt_neox.final_layer_norm.weight", r.norm_w(D)),
          ("gpt_neox.final_layer_norm.bias", r.bias(D)),
          ("embed_out.weight", r.w((V, D), 0.1))]
    return cfg, T, extras


def phi_case(seed):
    D, L, H, F, V = 64, 2, 4, 128, 288
    hd = D // H
    r = Rand(seed)
    cfg = {
        "architectures": ["PhiForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu_new",
        "hidden_size": D,
        "initializer_range": 0.02,
        "intermediate_size": F,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": 128,
        "model_type": "phi",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": H,
        "partial_rotary_factor": 0.5,
        "qk_layernorm": False,
        "resid_pdrop": 0.1,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": V,
    }
    T = [("model.embed_tokens.weight", r.w((V, D), 0.5))]
    for l in range(L):
        p = f"model.layers.{l}."
        T += [(p + "input_layernorm.weight", r.norm_w(D)), (p + "input_layernorm.bias", r.bias(D))]
        for n in ("q_proj", "k_proj", "v_proj"):
            T += [(p + f"self_attn.{n}.weight", r.w((H * hd, D), 0.12)),
                  (p + f"self_attn.{n}.bias", r.bias(H * hd, 0.1))]
        T += [(p + "self_attn.dense.weight", r.w((D, H * hd), 0.1)), (p + "self_attn.dense.bias", r.bias(D)),
              (p + "mlp.fc1.weight", r.w((F, D), 0.15)), (p + "mlp.fc1.bias", r.bias(F, 0.1)),
              (p + "mlp.fc2.weight", r.w((D, F), 0.1)), (p + "mlp.fc2.bias", r.bias(D))]
    T += [("model.final_layernorm.weight", r.norm_w(D)), ("model.final_layernorm.bias", r.bias(D)),
          ("lm_head.weight", r.w((V, D), 0.1)), ("lm_head.bias", r.bias(V, 0.1))]
    return cfg, T


MISTRAL_WINDOW = 4
SLIDING_RULE = ("key j is visible to query i iff i - sliding_window < j <= i "
                "(each query sees at most sliding_window keys, itself included); "
                "transformers masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window "
                "(also modeling_mistral eager/sdpa since 4.42, and vLLM). Some older paths used "
                "W+1 keys (i - W <= j): transformers 4.38-4.41 AttentionMaskConverter "
                "(tril diagonal -W-1), flash-attn window_size=(W, W), the original mistral-src "
                "reference.")


def build_cases():
    cases = []

    cfg, T = llama_like("llama", "llama", 101, V=256, F=128, Hkv=2, dtype="float32", tied=False)
    cases.append(dict(name="llama", cfg=cfg, tensors=T,
                      notes="plain Llama, GQA 4 q heads / 2 kv heads (q head h uses kv head h // 2), "
                            "silu, untied lm_head, rope_theta 10000"))

    rs = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
          "original_max_position_embeddings": 64, "rope_type": "llama3"}
    cfg, T = llama_like("llama3_rope", "llama", 102, V=256, F=128, Hkv=2, dtype="float32", tied=True,
                        rope_theta=500000.0, rope_scaling=rs, embed_std=0.15,
                        extra_cfg={"head_dim": 16, "max_position_embeddings": 512,
                                   "bos_token_id": 1, "eos_token_id": [2, 3, 4]})
    cases.append(dict(name="llama3_rope", cfg=cfg, tensors=T,
                      notes="Llama 3.1-style rope_scaling llama3 (factor 8, low 1, high 4, original 64) "
                            "with rope_theta 500000: of the 8 frequencies, i=0 is kept (high), i=1 is "
                            "smoothed (medium), i=2..7 are divided by 8 (low). Tied embeddings (no "
                            "lm_head.weight tensor). eos_token_id is a list, head_dim given explicitly."))

    cfg, T = llama_like("llama_bf16", "llama", 103, V=260, F=160, Hkv=2, dtype="bfloat16", tied=False)
    cases.append(dict(name="llama_bf16", cfg=cfg, tensors=T,
                      notes="Llama with every tensor stored as BF16; reference computed in float32 on "
                            "the BF16 values (widen exactly: f32 bits = bf16 bits << 16)"))

    cfg, T = llama_like("mistral_sharded", "mistral", 104, V=272, F=128, Hkv=2, dtype="float16", tied=False,
                        extra_cfg={"sliding_window": MISTRAL_WINDOW})
    cases.append(dict(name="mistral_sharded", cfg=cfg, tensors=T, shard_after="model.layers.1.self_attn.o_proj.weight",
                      notes=f"Mistral, GQA 4/2, F16 storage, sliding_window {MISTRAL_WINDOW} < T so the window "
                            "matters; sharded into 2 files with layer 1 split across them (attention in "
                            "shard 1, norms/MLP in shard 2)",
                      extra={"sliding_window": MISTRAL_WINDOW, "sliding_window_convention": SLIDING_RULE}))

    cfg, T = llama_like("qwen2", "qwen2", 105, V=300, F=112, Hkv=2, dtype="float32", tied=True,
                        rope_theta=1000000.0, eps=1e-6, embed_std=0.15,
                        extra_cfg={"use_sliding_window": False, "sliding_window": 128,
                                   "max_window_layers": 2, "bos_token_id": 1, "eos_token_id": 2})
    cases.append(dict(name="qwen2", cfg=cfg, tensors=T,
                      notes="Qwen2: q/k/v with bias, o_proj without; rope_theta 1e6; rms_norm_eps 1e-6; "
                            "tied embeddings (no lm_head.weight); use_sliding_window false -> full causal"))

    cfg, T, ex = gpt2_case(106, legacy_buffers=LEGACY_BUFFERS)
    cases.append(dict(name="gpt2", cfg=cfg, tensors=T, extra={"ignored_tensors": ex},
                      notes="GPT2LMHeadModel names (transformer. prefix, no lm_head: tied to wte; config "
                            "has no tie_word_embeddings key -> default true). Conv1D weights are (in, out): "
                            "y = x @ W + b. c_attn output columns = [q (D) | k (D) | v (D)], heads "
                            "contiguous inside each. Learned wpe added at positions 0..T-1. gelu_new. "
                            "n_inner null -> F = 4*n_embd = 256. Also holds the F32 causal-mask buffers "
                            "transformer.h.N.attn.bias (1,1,32,32) that real gpt2 files carry (listed in "
                            "ignored_tensors; not to be confused with attn.c_attn.bias): skip them."))

    cfg, T, ex = neox_case(107, True, V=256, base=10000, legacy_buffers=LEGACY_BUFFERS)
    cases.append(dict(name="gpt_neox", cfg=cfg, tensors=T,
                      notes="Pythia-style GPT-NeoX: parallel residual x + attn(ln1(x)) + mlp(ln2(x)); "
                            "fused query_key_value rows grouped per head [q_h(16) k_h(16) v_h(16)] x 4 "
                            "heads; rotary on the first 4 dims of each head (rotary_pct 0.25, "
                            "rotate_half pairing j <-> j+2); exact erf gelu; untied embed_out. Also holds "
                            "the legacy buffers real Pythia files carry (listed in ignored_tensors, one "
                            "of them BOOL, one 0-dim): the loader must skip them.",
                      extra={"ignored_tensors": ex}))

    cfg, T, _ = neox_case(108, False, V=264, base=1000, legacy_buffers=False)
    cases.append(dict(name="gpt_neox_seq", cfg=cfg, tensors=T,
                      notes="GPT-NeoX with use_parallel_residual false: x = x + attn(ln1(x)); "
                            "x = x + mlp(ln2(x)). rotary_emb_base 1000 (not the default 10000)."))

    cfg, T = phi_case(109)
    cases.append(dict(name="phi", cfg=cfg, tensors=T,
                      notes="Phi-2 style: one input_layernorm per layer, x = x + attn(ln(x)) + mlp(ln(x)); "
                            "q/k/v/dense with bias; partial_rotary_factor 0.5 -> rotary on the first 8 of "
                            "16 dims (rotate_half pairing j <-> j+4), inv_freq over dim 8; gelu_new; "
                            "fc1/fc2 with bias; final_layernorm; lm_head with bias, untied."))

    cfg, T = llama_like("llama_relu", "llama", 110, V=256, F=100, Hkv=1, dtype="float32", tied=False,
                        act="relu", eps=1e-3)
    cases.append(dict(name="llama_relu", cfg=cfg, tensors=T,
                      notes="Llama with hidden_act relu: a = relu(x W_gate^T) * (x W_up^T); MQA (1 kv head "
                            "shared by 4 q heads); F = 100 (not a multiple of 8/16: GEMM tails); "
                            "rms_norm_eps 1e-3 (large enough that ignoring the config value shows)."))
    return cases


# ----------------------------------------------------------------------------------------

def to_storage(T, dtype):
    st = DTYPES[dtype]
    return [(n, t.to(st) if t.is_floating_point() and t.dim() > 0 and not n.endswith("inv_freq")
             else t) for n, t in T]


def dims(cfg):
    if cfg["model_type"] == "gpt2":
        D, L, H, V = cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]
        F = cfg.get("n_inner") or 4 * D
        Hkv = H
    else:
        D, L, H, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["vocab_size"]
        F = cfg["intermediate_size"]
        Hkv = cfg.get("num_key_value_heads") or H
    return dict(D=D, L=L, H=H, H_kv=Hkv, head_dim=cfg.get("head_dim") or D // H, F=F, V=V)


def rope_info(cfg):
    d = dims(cfg)
    hd = d["head_dim"]
    mt = cfg["model_type"]
    if mt == "gpt2":
        return {"variant": "none (learned absolute positions wpe)"}
    if mt == "gpt_neox":
        rot, base = int(hd * cfg["rotary_pct"]), cfg.get("rotary_emb_base", cfg.get("rope_theta", 10000))
    elif mt == "phi":
        rot, base = int(hd * cfg["partial_rotary_factor"]), cfg["rope_theta"]
    else:
        rot, base = hd, cfg["rope_theta"]
    inv = nlref.rope_inv_freq(cfg, rot, base)
    return {"variant": "rotate_half (NeoX pairing: dim j with j + rot_dim/2, j < rot_dim/2); "
                       "dims >= rot_dim pass through",
            "rot_dim": rot, "theta": base,
            "scaling": (cfg.get("rope_scaling") or {}).get("rope_type", "default"),
            "inv_freq": [float(x) for x in inv]}


def compact_lists(text):
    # put lists of numbers on one line: [1, 15, 200] instead of one element per line
    return re.sub(r"\[\s*([-0-9.e+,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def write_f32(path, t):
    a = t.detach().cpu().numpy().astype("<f4")
    a.tofile(path)
    return a.nbytes


def generate(case):
    name, cfg = case["name"], case["cfg"]
    folder = os.path.join(OUT, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    T = to_storage(case["tensors"], cfg["torch_dtype"])
    if "shard_after" in case:
        cut = [n for n, _ in T].index(case["shard_after"]) + 1
        parts = [("model-00001-of-00002.safetensors", T[:cut]),
                 ("model-00002-of-00002.safetensors", T[cut:])]
        total = 0
        wm = {}
        for fn, part in parts:
            total += nlref.write_safetensors(os.path.join(folder, fn), part)
            wm.update({n: fn for n, _ in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))},
                      f, indent=2)
            f.write("\n")
    else:
        nlref.write_safetensors(os.path.join(folder, "model.safetensors"), T)

    # reference from what is on disk
    cfg2, tensors = nlref.load_folder(folder)
    out = nlref.forward(cfg2, tensors, TOKENS)
    d = dims(cfg)
    Tn = len(TOKENS)
    assert out["logits"].shape == (Tn, d["V"])
    assert out["ffn_act"].shape == (d["L"], Tn, d["F"])
    assert out["resid"].shape == (d["L"], Tn, d["D"])
    for k in ("logits", "ffn_act", "ffn_pre", "resid"):
        write_f32(os.path.join(folder, k + ".f32"), out[k])
    ffn_kind = "gated" if cfg["model_type"] in ("llama", "mistral", "qwen2") else "plain"
    act = cfg.get("hidden_act", cfg.get("activation_function"))
    exp = {
        "case": name,
        "model_type": cfg["model_type"],
        "architecture": cfg["architectures"][0],
        "tokens": TOKENS,
        "T": Tn, "V": d["V"], "L": d["L"], "F": d["F"], "D": d["D"],
        "H": d["H"], "H_kv": d["H_kv"], "head_dim": d["head_dim"],
        "dtype": {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[cfg["torch_dtype"]],
        "ffn_kind": ffn_kind,
        "act_fn": act,
        "max_abs_logit": float(out["logits"].abs().max()),
        "max_abs_ffn_act": float(out["ffn_act"].abs().max()),
        "max_abs_resid": float(out["resid"].abs().max()),
        "tolerance": TOLERANCE,
        "files": {
            "logits.f32": {"shape": [Tn, d["V"]], "what": "final logits, row-major float32 LE"},
            "ffn_act.f32": {"shape": [d["L"], Tn, d["F"]],
                            "what": "neuron activation a = input of the down projection "
                                    + ("(act(x W_gate^T) * (x W_up^T))" if ffn_kind == "gated"
                                       else "(act(x W_in + b_in))")},
            "ffn_pre.f32": {"shape": [d["L"], Tn, d["F"]],
                            "what": ("x W_gate^T before the activation" if ffn_kind == "gated"
                                     else "x W_in + b_in before the activation")
                                    + "; x is the normalised MLP input"},
            "resid.f32": {"shape": [d["L"], Tn, d["D"]],
                          "what": "residual stream after each block (before the final norm)"},
        },
        "rope": rope_info(cfg),
        "notes": case["notes"],
    }
    exp.update(case.get("extra", {}))
    with open(os.path.join(folder, "expected.json"), "w") as f:
        f.write(compact_lists(json.dumps(exp, indent=2)) + "\n")
    return folder, out


def main():
    torch.set_num_threads(1)       # fixed reduction order
    os.makedirs(OUT, exist_ok=True)
    keep = set()
    for case in build_cases():
        folder, out = generate(case)
        keep.add(case["name"])
        fa = out["ffn_act"]
        print(f"{case['name']:16s} max|logit| {out['logits'].abs().max():7.3f}  std(logit) "
              f"{out['logits'].std():6.3f}  std(a) {fa.std():6.3f}  frac(a>0) "
              f"{(fa > 0).float().mean():5.2f}  max|resid| {out['resid'].abs().max():6.3f}")
    import gen_moe_fixtures                        # its folders (mixtral, qwen3 …) are not stale
    keep.update(gen_moe_fixtures.CASES)
    for d in os.listdir(OUT):                      # stale cases from older generator versions
        if d not in keep and os.path.isdir(os.path.join(OUT, d)):
            shutil.rmtree(os.path.join(OUT, d))
    import gen_tokenizers                          # the folders were rewritten: their tokenizers too
    gen_tokenizers.main()
    total = 0
    for dp, _, fns in os.walk(OUT):
        for fn in fns:
            total += os.path.getsize(os.path.join(dp, fn))
    print(f"total {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
