"""nlref.py — plain-PyTorch reference forward pass for the Hugging Face architectures
neuronlab loads (llama, mistral, qwen2, gpt2, gpt_neox, phi), plus a minimal safetensors
reader/writer and an HF-folder loader.

Rules: everything is computed in float32 from the stored weights (BF16/F16 weights are
widened exactly); the model is rebuilt from config.json + the tensors alone, following
the transformers implementations (eager attention, batch of one, positions 0..T-1,
no padding, no cache). Used by gen_fixtures.py (writes the fixtures) and
check_fixtures.py (reloads them and re-runs this code).

Outputs of forward(): logits (T,V), and per layer l: ffn_pre (T,F) (gated: x·W_gateᵀ
before the activation; plain: x·W_inᵀ + b_in before the activation), ffn_act (T,F)
(the input of the down projection), resid (T,D) (residual stream after the block).
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------
# safetensors

_DT_TO_STR = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.bool: "BOOL", torch.int64: "I64", torch.int32: "I32"}
_STR_TO_DT = {v: k for k, v in _DT_TO_STR.items()}
_ELEM = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1, "I64": 8, "I32": 4}


def _tensor_bytes(t):
    t = t.contiguous().cpu()
    if t.dtype == torch.bfloat16:          # numpy has no bf16: go through the raw bits
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.bool:
        return t.numpy().astype(np.uint8).tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor in its storage dtype), written in that order.
    Header: u64 LE length, JSON (\"__metadata__\" first, space-padded to 8 bytes), data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name, t in tensors:
        b = _tensor_bytes(t)
        header[name] = {"dtype": _DT_TO_STR[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return off


def read_safetensors(path):
    """Returns {name: torch tensor in its stored dtype} (own parser, no safetensors lib)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"cannot read '{path}': header length {n} exceeds file size")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        a, b = info["data_offsets"]
        shape = info["shape"]
        nel = int(np.prod(shape)) if shape else 1
        if b - a != nel * _ELEM[dt] or base + b > len(data):
            raise ValueError(f"cannot read '{path}': bad data_offsets for '{name}'")
        raw = data[base + a:base + b]
        if dt == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
        elif dt == "BOOL":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()).bool()
        else:
            npdt = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}[dt]
            t = torch.from_numpy(np.frombuffer(raw, dtype=npdt).copy())
        out[name] = t.reshape(shape)
    return out


def load_folder(folder):
    """config dict + {name: tensor (stored dtype)} from an HF folder (single file or
    sharded with model.safetensors.index.json)."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(folder, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for fn in sorted(set(wm.values())):
            part = read_safetensors(os.path.join(folder, fn))
            for k, v in part.items():
                if wm.get(k) != fn:
                    raise ValueError(f"'{k}' found in '{fn}' but weight_map says '{wm.get(k)}'")
                tensors[k] = v
        missing = set(wm) - set(tensors)
        if missing:
            raise ValueError(f"weight_map names missing from shards: {sorted(missing)[:3]}")
    else:
        tensors = read_safetensors(os.path.join(folder, "model.safetensors"))
    return cfg, tensors


# ----------------------------------------------------------------------------------------
# activations (transformers ACT2FN names)

def gelu_new(x):
    # NewGELUActivation / "gelu_new": tanh approximation, GPT-2 and Phi
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,                                               # exact erf GELU
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


# ----------------------------------------------------------------------------------------
# building blocks

def rms_norm(x, w, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then weight * (.)
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def linear(x, w, b=None):
    # nn.Linear: weight (out, in)
    return F.linear(x, w, b)


def default_inv_freq(base, dim):
    # _compute_default_rope_parameters: 1 / base^(arange(0, dim, 2)/dim), in float32
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def llama3_inv_freq(inv_freq, rs):
    # modeling_rope_utils._compute_llama3_parameters (attention_factor stays 1.0)
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def rope_inv_freq(cfg, rot_dim, base):
    inv = default_inv_freq(base, rot_dim)
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "llama3":
            inv = llama3_inv_freq(inv, rs)
        elif kind != "default":
            raise NotImplementedError(f"rope_scaling type '{kind}'")
    return inv


def rope_cos_sin(inv_freq, T):
    # LlamaRotaryEmbedding.forward: freqs = pos ⊗ inv_freq (float32), emb = cat(freqs, freqs)
    pos = torch.arange(T, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()                        # (T, rot_dim)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x (H, T, hd); rotate the first cos.shape[-1] dims of each head (NeoX/'rotate_half'
    pairing: dim j with j + rot/2), pass the rest through (partial rotary)."""
    rot = cos.shape[-1]
    xr, xp = x[..., :rot], x[..., rot:]
    xr = xr * cos + rotate_half(xr) * sin
    return torch.cat((xr, xp), dim=-1)


def attention(q, k, v, scale, window=None):
    """q (Hq,T,hd), k/v (Hkv,T,hd). GQA as transformers repeat_kv: query head h reads kv
    head h // (Hq/Hkv). Causal; with window W key j is visible to query i iff
    i - W < j <= i. Softmax in float32. Returns (T, Hq*hd)."""
    Hq, T, hd = q.shape
    rep = Hq // k.shape[0]
    k = k.repeat_interleave(rep, dim=0)
    v = v.repeat_interleave(rep, dim=0)
    s = torch.matmul(q, k.transpose(1, 2)) * scale
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & (j > i - window)
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1, dtype=torch.float32)
    o = torch.matmul(p, v)                              # (Hq, T, hd)
    return o.transpose(0, 1).reshape(T, Hq * hd)


def heads(x, H, hd):
    # (T, H*hd) -> (H, T, hd)
    T = x.shape[0]
    return x.view(T, H, hd).transpose(0, 1)


# ----------------------------------------------------------------------------------------
# architectures

def _f32(tensors):
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def forward_llama(cfg, W, tokens):
    """llama / mistral / qwen2 (pre-RMSNorm, RoPE rotate_half over the full head,
    gated FFN down(act(gate(x)) * up(x)))."""
    mt = cfg["model_type"]
    D = cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    act = ACT[cfg["hidden_act"]]
    base = cfg.get("rope_theta", 10000.0)
    window = None
    if mt == "mistral":
        window = cfg.get("sliding_window")
    elif mt == "qwen2" and cfg.get("use_sliding_window", False):
        raise NotImplementedError("qwen2 use_sliding_window=true is not covered")
    qkv_bias = (mt == "qwen2") or cfg.get("attention_bias", False)
    o_bias = (mt != "qwen2") and cfg.get("attention_bias", False)
    mlp_bias = cfg.get("mlp_bias", False)

    T = len(tokens)
    cos, sin = rope_cos_sin(rope_inv_freq(cfg, hd, base), T)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    out = {"ffn_pre": [], "ffn_act": [], "resid": []}
    for l in range(L):
        p = f"model.layers.{l}."
        g = lambda n: W.get(p + n)
        h = rms_norm(x, g("input_layernorm.weight"), eps)
        q = linear(h, g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias") if qkv_bias else None)
        k = linear(h, g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias") if qkv_bias else None)
        v = linear(h, g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias") if qkv_bias else None)
        q, k, v = heads(q, H, hd), heads(k, Hkv, hd), heads(v, Hkv, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = attention(q, k, v, hd ** -0.5, window)
        x = x + linear(a, g("self_attn.o_proj.weight"), g("self_attn.o_proj.bias") if o_bias else None)
        h = rms_norm(x, g("post_attention_layernorm.weight"), eps)
        pre = linear(h, g("mlp.gate_proj.weight"), g("mlp.gate_proj.bias") if mlp_bias else None)
        up = linear(h, g("mlp.up_proj.weight"), g("mlp.up_proj.bias") if mlp_bias else None)
        fa = act(pre) * up
        x = x + linear(fa, g("mlp.down_proj.weight"), g("mlp.down_proj.bias") if mlp_bias else None)
        out["ffn_pre"].append(pre); out["ffn_act"].append(fa); out["resid"].append(x)
    h = rms_norm(x, W["model.norm.weight"], eps)
    lm = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", True) else W["lm_head.weight"]
    out["logits"] = linear(h, lm)
    return out


def forward_gpt2(cfg, W, tokens):
    """GPT2LMHeadModel: learned positions, pre-LayerNorm, Conv1D weights (in, out): y = x·W + b,
    fused c_attn output split [q | k | v] (each D wide, heads contiguous), gelu_new, tied head."""
    D = cfg["n_embd"]
    L = cfg["n_layer"]
    H = cfg["n_head"]
    hd = D // H
    eps = cfg["layer_norm_epsilon"]
    act = ACT[cfg["activation_function"]]
    T = len(tokens)
    pre_ = "transformer."
    x = W[pre_ + "wte.weight"][torch.tensor(tokens)] + W[pre_ + "wpe.weight"][:T]
    out = {"ffn_pre": [], "ffn_act": [], "resid": []}
    for l in range(L):
        p = f"{pre_}h.{l}."
        g = lambda n: W[p + n]
        h = layer_norm(x, g("ln_1.weight"), g("ln_1.bias"), eps)
        qkv = h @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        q, k, v = qkv.split(D, dim=-1)
        a = attention(heads(q, H, hd), heads(k, H, hd), heads(v, H, hd), hd ** -0.5)
        x = x + (a @ g("attn.c_proj.weight") + g("attn.c_proj.bias"))
        h = layer_norm(x, g("ln_2.weight"), g("ln_2.bias"), eps)
        pre = h @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")
        fa = act(pre)
        x = x + (fa @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias"))
        out["ffn_pre"].append(pre); out["ffn_act"].append(fa); out["resid"].append(x)
    h = layer_norm(x, W[pre_ + "ln_f.weight"], W[pre_ + "ln_f.bias"], eps)
    out["logits"] = linear(h, W.get("lm_head.weight", W[pre_ + "wte.weight"])
                           if not cfg.get("tie_word_embeddings", True) else W[pre_ + "wte.weight"])
    return out


def forward_gpt_neox(cfg, W, tokens):
    """GPTNeoXForCausalLM: fused query_key_value viewed as (T, H, 3*hd) -> per head [q|k|v];
    partial rotary on the first int(hd*rotary_pct) dims (rotate_half); parallel or
    sequential residual; untied embed_out."""
    D = cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    hd = D // H
    eps = cfg["layer_norm_eps"]
    act = ACT[cfg["hidden_act"]]
    rot = int(hd * cfg.get("rotary_pct", 0.25))
    base = cfg.get("rotary_emb_base", cfg.get("rope_theta", 10000))
    parallel = cfg.get("use_parallel_residual", True)
    T = len(tokens)
    cos, sin = rope_cos_sin(rope_inv_freq(cfg, rot, base), T)
    x = W["gpt_neox.embed_in.weight"][torch.tensor(tokens)]
    out = {"ffn_pre": [], "ffn_act": [], "resid": []}
    for l in range(L):
        p = f"gpt_neox.layers.{l}."
        g = lambda n: W[p + n]

        def attn(h):
            qkv = linear(h, g("attention.query_key_value.weight"), g("attention.query_key_value.bias"))
            qkv = qkv.view(T, H, 3 * hd).transpose(0, 1)          # (H, T, 3hd)
            q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            a = attention(q, k, v, hd ** -0.5)
            return linear(a, g("attention.dense.weight"), g("attention.dense.bias"))

        def mlp(h):
            pre = linear(h, g("mlp.dense_h_to_4h.weight"), g("mlp.dense_h_to_4h.bias"))
            fa = act(pre)
            return pre, fa, linear(fa, g("mlp.dense_4h_to_h.weight"), g("mlp.dense_4h_to_h.bias"))

        a = attn(layer_norm(x, g("input_layernorm.weight"), g("input_layernorm.bias"), eps))
        if parallel:   # x = x + attn(ln1(x)) + mlp(ln2(x))
            pre, fa, m = mlp(layer_norm(x, g("post_attention_layernorm.weight"),
                                        g("post_attention_layernorm.bias"), eps))
            x = m + a + x
        else:          # x = x + attn(ln1(x)); x = x + mlp(ln2(x))
            x = a + x
            pre, fa, m = mlp(layer_norm(x, g("post_attention_layernorm.weight"),
                                        g("post_attention_layernorm.bias"), eps))
            x = m + x
        out["ffn_pre"].append(pre); out["ffn_act"].append(fa); out["resid"].append(x)
    h = layer_norm(x, W["gpt_neox.final_layer_norm.weight"], W["gpt_neox.final_layer_norm.bias"], eps)
    lm = W["gpt_neox.embed_in.weight"] if cfg.get("tie_word_embeddings", False) else W["embed_out.weight"]
    out["logits"] = linear(h, lm)
    return out


def forward_phi(cfg, W, tokens):
    """PhiForCausalLM (Phi-2): one input_layernorm feeds attention and MLP in parallel,
    x = x + attn(ln(x)) + mlp(ln(x)); q/k/v/dense with bias; partial rotary on the first
    int(partial_rotary_factor*hd) dims (rotate_half); fc1/fc2 with bias; final_layernorm;
    lm_head with bias."""
    D = cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    hd = D // H
    eps = cfg["layer_norm_eps"]
    act = ACT[cfg["hidden_act"]]
    rot = int(cfg.get("partial_rotary_factor", 0.5) * hd)
    base = cfg.get("rope_theta", 10000.0)
    if cfg.get("qk_layernorm", False):
        raise NotImplementedError("phi qk_layernorm=true is not covered")
    T = len(tokens)
    cos, sin = rope_cos_sin(rope_inv_freq(cfg, rot, base), T)
    x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
    out = {"ffn_pre": [], "ffn_act": [], "resid": []}
    for l in range(L):
        p = f"model.layers.{l}."
        g = lambda n: W[p + n]
        h = layer_norm(x, g("input_layernorm.weight"), g("input_layernorm.bias"), eps)
        q = heads(linear(h, g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias")), H, hd)
        k = heads(linear(h, g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias")), Hkv, hd)
        v = heads(linear(h, g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias")), Hkv, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = linear(attention(q, k, v, hd ** -0.5), g("self_attn.dense.weight"), g("self_attn.dense.bias"))
        pre = linear(h, g("mlp.fc1.weight"), g("mlp.fc1.bias"))
        fa = act(pre)
        m = linear(fa, g("mlp.fc2.weight"), g("mlp.fc2.bias"))
        x = a + m + x
        out["ffn_pre"].append(pre); out["ffn_act"].append(fa); out["resid"].append(x)
    h = layer_norm(x, W["model.final_layernorm.weight"], W["model.final_layernorm.bias"], eps)
    if cfg.get("tie_word_embeddings", False):
        out["logits"] = linear(h, W["model.embed_tokens.weight"], W.get("lm_head.bias"))
    else:
        out["logits"] = linear(h, W["lm_head.weight"], W["lm_head.bias"])
    return out


FORWARD = {"llama": forward_llama, "mistral": forward_llama, "qwen2": forward_llama,
           "gpt2": forward_gpt2, "gpt_neox": forward_gpt_neox, "phi": forward_phi}


@torch.no_grad()
def forward(cfg, tensors, tokens):
    """Returns {"logits": (T,V), "ffn_pre"/"ffn_act": (L,T,F), "resid": (L,T,D)}, float32."""
    W = _f32(tensors)
    o = FORWARD[cfg["model_type"]](cfg, W, list(tokens))
    return {"logits": o["logits"].contiguous(),
            "ffn_pre": torch.stack(o["ffn_pre"]).contiguous(),
            "ffn_act": torch.stack(o["ffn_act"]).contiguous(),
            "resid": torch.stack(o["resid"]).contiguous()}
