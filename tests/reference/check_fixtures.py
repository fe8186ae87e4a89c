#!/usr/bin/python3
"""check_fixtures.py — self-check of the committed fixtures in tests/fixtures/hf/.

For every case folder it
  1. checks the on-disk format: safetensors header (u64 LE length, JSON, 8-byte padded,
     contiguous data_offsets covering the whole data section), the shard index
     (weight_map complete, total_size = sum of tensor bytes), the sizes of the .f32 files;
  2. reloads the folder with nlref's own reader and re-runs the torch reference: the
     stored expectations must be reproduced (max abs diff <= 1e-5);
  3. runs a second, independently written reference (numpy float64, explicit loops over
     tokens and heads, written from the formulas rather than the torch code) and requires
     agreement within the C tolerance (1e-4) — a guard against bugs in nlref itself.
Run: /usr/bin/python3 tests/reference/check_fixtures.py [case ...]   (exit 1 on failure)
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nlref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "hf")
ELEM = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1, "I64": 8, "I32": 4}


def fail(msg):
    raise AssertionError(msg)


# ----------------------------------------------------------------------------------------
# 1. format checks

def check_safetensors_file(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    if (8 + n) % 8:
        fail(f"{path}: data section not 8-byte aligned")
    hdr = json.loads(data[8:8 + n])
    if hdr.get("__metadata__", {}).get("format") != "pt":
        fail(f"{path}: __metadata__.format != pt")
    spans = []
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        nel = int(np.prod(v["shape"])) if v["shape"] else 1
        a, b = v["data_offsets"]
        if b - a != nel * ELEM[v["dtype"]]:
            fail(f"{path}: '{k}' size mismatch")
        spans.append((a, b, k, v["dtype"]))
    spans.sort()
    pos = 0
    for a, b, k, _ in spans:
        if a != pos:
            fail(f"{path}: gap/overlap before '{k}'")
        pos = b
    if 8 + n + pos != len(data):
        fail(f"{path}: data section length {len(data) - 8 - n} != {pos}")
    return {k: (dt, b - a) for a, b, k, dt in spans}


def check_format(folder, exp):
    idx = os.path.join(folder, "model.safetensors.index.json")
    names = {}
    if os.path.exists(idx):
        with open(idx) as f:
            ij = json.load(f)
        files = sorted(set(ij["weight_map"].values()))
        total = 0
        for fn in files:
            t = check_safetensors_file(os.path.join(folder, fn))
            for k, (dt, nb) in t.items():
                if ij["weight_map"].get(k) != fn:
                    fail(f"{fn}: '{k}' not mapped to it")
                names[k] = dt
                total += nb
        if total != ij["metadata"]["total_size"]:
            fail(f"index total_size {ij['metadata']['total_size']} != {total}")
        if set(ij["weight_map"]) != set(names):
            fail("weight_map and shard contents differ")
        if os.path.exists(os.path.join(folder, "model.safetensors")):
            fail("sharded case must not also have model.safetensors")
    else:
        names = {k: dt for k, (dt, _) in check_safetensors_file(os.path.join(folder, "model.safetensors")).items()}
    for fn, info in exp["files"].items():
        want = 4 * int(np.prod(info["shape"]))
        got = os.path.getsize(os.path.join(folder, fn))
        if got != want:
            fail(f"{fn}: {got} bytes, expected {want}")
    return names


def load_f32(folder, fn, shape):
    return np.fromfile(os.path.join(folder, fn), dtype="<f4").reshape(shape)


# ----------------------------------------------------------------------------------------
# 3. independent float64 reference (numpy, loops; deliberately not sharing nlref code)

def np64(t):
    return t.float().numpy().astype(np.float64)


def inv_freq64(rot, base, rs):
    inv = np.array([1.0 / base ** (2 * i / rot) for i in range(rot // 2)])
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        out = []
        for w in inv:
            wavelen = 2 * math.pi / w
            if wavelen < old / hi:
                out.append(w)
            elif wavelen > old / lo:
                out.append(w / f)
            else:
                s = (old / wavelen - lo) / (hi - lo)
                out.append((1 - s) * w / f + s * w)
        inv = np.array(out)
    return inv


def rope64(v, pos, inv):
    """v: head vector (hd,). Rotate pairs (j, j+half) for j < half = len(inv)."""
    half = len(inv)
    out = v.copy()
    for j in range(half):
        c, s = math.cos(pos * inv[j]), math.sin(pos * inv[j])
        a, b = v[j], v[j + half]
        out[j] = a * c - b * s
        out[j + half] = b * c + a * s
    return out


def attn64(Q, K, V, H, Hkv, hd, window=None):
    """Q (T, H*hd), K/V (T, Hkv*hd), already rotated. Returns (T, H*hd)."""
    T = Q.shape[0]
    out = np.zeros((T, H * hd))
    group = H // Hkv
    for i in range(T):
        for h in range(H):
            kh = h // group
            q = Q[i, h * hd:(h + 1) * hd]
            js = [j for j in range(T) if j <= i and (window is None or j > i - window)]
            sc = np.array([q @ K[j, kh * hd:(kh + 1) * hd] / math.sqrt(hd) for j in js])
            p = np.exp(sc - sc.max())
            p /= p.sum()
            for pj, j in zip(p, js):
                out[i, h * hd:(h + 1) * hd] += pj * V[j, kh * hd:(kh + 1) * hd]
    return out


def rmsnorm64(x, w, eps):
    return np.stack([w * r / math.sqrt(np.mean(r * r) + eps) for r in x])


def lnorm64(x, w, b, eps):
    out = []
    for r in x:
        mu = r.mean()
        var = ((r - mu) ** 2).mean()
        out.append(w * (r - mu) / math.sqrt(var + eps) + b)
    return np.stack(out)


ACT64 = {
    "silu": lambda x: x / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "gelu": np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
}


def rotate_rows(X, Hn, hd, inv):
    X = X.copy()
    for i in range(X.shape[0]):
        for h in range(Hn):
            X[i, h * hd:h * hd + 2 * len(inv)] = rope64(X[i, h * hd:h * hd + 2 * len(inv)], i, inv)
    return X


def independent(cfg, W, tokens):
    W = {k: np64(v) for k, v in W.items() if v.is_floating_point() and v.dim() > 0}
    mt = cfg["model_type"]
    T = len(tokens)
    pre, act_, res = [], [], []
    if mt in ("llama", "mistral", "qwen2"):
        D, H = cfg["hidden_size"], cfg["num_attention_heads"]
        Hkv = cfg["num_key_value_heads"]
        hd = cfg.get("head_dim") or D // H
        eps = cfg["rms_norm_eps"]
        inv = inv_freq64(hd, cfg["rope_theta"], cfg.get("rope_scaling"))
        window = cfg.get("sliding_window") if mt == "mistral" else None
        A = ACT64[cfg["hidden_act"]]
        x = np.stack([W["model.embed_tokens.weight"][t] for t in tokens])
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = rmsnorm64(x, W[p + "input_layernorm.weight"], eps)
            q = h @ W[p + "self_attn.q_proj.weight"].T + W.get(p + "self_attn.q_proj.bias", 0)
            k = h @ W[p + "self_attn.k_proj.weight"].T + W.get(p + "self_attn.k_proj.bias", 0)
            v = h @ W[p + "self_attn.v_proj.weight"].T + W.get(p + "self_attn.v_proj.bias", 0)
            q, k = rotate_rows(q, H, hd, inv), rotate_rows(k, Hkv, hd, inv)
            x = x + attn64(q, k, v, H, Hkv, hd, window) @ W[p + "self_attn.o_proj.weight"].T
            h = rmsnorm64(x, W[p + "post_attention_layernorm.weight"], eps)
            g = h @ W[p + "mlp.gate_proj.weight"].T
            a = A(g) * (h @ W[p + "mlp.up_proj.weight"].T)
            x = x + a @ W[p + "mlp.down_proj.weight"].T
            pre.append(g); act_.append(a); res.append(x)
        h = rmsnorm64(x, W["model.norm.weight"], eps)
        head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
        logits = h @ head.T
    elif mt == "gpt2":
        D, H = cfg["n_embd"], cfg["n_head"]
        hd = D // H
        eps = cfg["layer_norm_epsilon"]
        A = ACT64[cfg["activation_function"]]
        x = np.stack([W["transformer.wte.weight"][t] + W["transformer.wpe.weight"][i] for i, t in enumerate(tokens)])
        for l in range(cfg["n_layer"]):
            p = f"transformer.h.{l}."
            h = lnorm64(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
            qkv = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
            a = attn64(qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:], H, H, hd)
            x = x + a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
            h = lnorm64(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
            g = h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"]
            a = A(g)
            x = x + a @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
            pre.append(g); act_.append(a); res.append(x)
        h = lnorm64(x, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps)
        logits = h @ W["transformer.wte.weight"].T
    elif mt == "gpt_neox":
        D, H = cfg["hidden_size"], cfg["num_attention_heads"]
        hd = D // H
        eps = cfg["layer_norm_eps"]
        rot = int(hd * cfg["rotary_pct"])
        inv = inv_freq64(rot, cfg["rotary_emb_base"], None)
        A = ACT64[cfg["hidden_act"]]
        x = np.stack([W["gpt_neox.embed_in.weight"][t] for t in tokens])
        for l in range(cfg["num_hidden_layers"]):
            p = f"gpt_neox.layers.{l}."
            Wqkv, bqkv = W[p + "attention.query_key_value.weight"], W[p + "attention.query_key_value.bias"]
            # de-interleave: rows [h*3hd, h*3hd+hd) = q of head h, next hd = k, next hd = v
            qi = np.concatenate([np.arange(h * 3 * hd, h * 3 * hd + hd) for h in range(H)])
            h1 = lnorm64(x, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
            q = h1 @ Wqkv[qi].T + bqkv[qi]
            k = h1 @ Wqkv[qi + hd].T + bqkv[qi + hd]
            v = h1 @ Wqkv[qi + 2 * hd].T + bqkv[qi + 2 * hd]
            q, k = rotate_rows(q, H, hd, inv), rotate_rows(k, H, hd, inv)
            att = attn64(q, k, v, H, H, hd) @ W[p + "attention.dense.weight"].T + W[p + "attention.dense.bias"]
            xm = x if cfg["use_parallel_residual"] else x + att
            h2 = lnorm64(xm, W[p + "post_attention_layernorm.weight"], W[p + "post_attention_layernorm.bias"], eps)
            g = h2 @ W[p + "mlp.dense_h_to_4h.weight"].T + W[p + "mlp.dense_h_to_4h.bias"]
            a = A(g)
            m = a @ W[p + "mlp.dense_4h_to_h.weight"].T + W[p + "mlp.dense_4h_to_h.bias"]
            x = x + att + m
            pre.append(g); act_.append(a); res.append(x)
        h = lnorm64(x, W["gpt_neox.final_layer_norm.weight"], W["gpt_neox.final_layer_norm.bias"], eps)
        logits = h @ W["embed_out.weight"].T
    elif mt == "phi":
        D, H = cfg["hidden_size"], cfg["num_attention_heads"]
        hd = D // H
        eps = cfg["layer_norm_eps"]
        rot = int(hd * cfg["partial_rotary_factor"])
        inv = inv_freq64(rot, cfg["rope_theta"], None)
        A = ACT64[cfg["hidden_act"]]
        x = np.stack([W["model.embed_tokens.weight"][t] for t in tokens])
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = lnorm64(x, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
            q, k, v = (h @ W[p + f"self_attn.{n}.weight"].T + W[p + f"self_attn.{n}.bias"]
                       for n in ("q_proj", "k_proj", "v_proj"))
            q, k = rotate_rows(q, H, hd, inv), rotate_rows(k, H, hd, inv)
            att = attn64(q, k, v, H, H, hd) @ W[p + "self_attn.dense.weight"].T + W[p + "self_attn.dense.bias"]
            g = h @ W[p + "mlp.fc1.weight"].T + W[p + "mlp.fc1.bias"]
            a = A(g)
            x = x + att + a @ W[p + "mlp.fc2.weight"].T + W[p + "mlp.fc2.bias"]
            pre.append(g); act_.append(a); res.append(x)
        h = lnorm64(x, W["model.final_layernorm.weight"], W["model.final_layernorm.bias"], eps)
        logits = h @ W["lm_head.weight"].T + W["lm_head.bias"]
    else:
        raise NotImplementedError(mt)
    return {"logits": logits, "ffn_pre": np.stack(pre), "ffn_act": np.stack(act_), "resid": np.stack(res)}


# ----------------------------------------------------------------------------------------

def check_case(folder):
    with open(os.path.join(folder, "expected.json")) as f:
        exp = json.load(f)
    names = check_format(folder, exp)
    for n in exp.get("ignored_tensors", []):
        if n not in names:
            fail(f"ignored tensor '{n}' absent")
    stored = {k: load_f32(folder, k + ".f32", exp["files"][k + ".f32"]["shape"])
              for k in ("logits", "ffn_act", "ffn_pre", "resid")}
    cfg, tensors = nlref.load_folder(folder)
    want_dt = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[cfg["torch_dtype"]]
    bad = [k for k, dt in names.items() if dt != want_dt and k not in exp.get("ignored_tensors", [])]
    if bad:
        fail(f"tensors not stored as {want_dt}: {bad[:3]}")
    if abs(float(np.abs(stored["logits"]).max()) - exp["max_abs_logit"]) > 1e-6:
        fail("max_abs_logit disagrees with logits.f32")
    ref = nlref.forward(cfg, tensors, exp["tokens"])
    ind = independent(cfg, tensors, exp["tokens"])
    report = []
    for k in stored:
        d1 = float(np.abs(ref[k].numpy() - stored[k]).max())
        d2 = float(np.abs(ind[k] - stored[k]).max())
        report.append(f"{k} rerun {d1:.1e} indep {d2:.1e}")
        if d1 > 1e-5:
            fail(f"{k}: re-run differs from stored by {d1}")
        if d2 > exp["tolerance"]:
            fail(f"{k}: independent float64 reference differs from stored by {d2}")
    return "; ".join(report)


def main():
    torch.set_num_threads(1)
    cases = sys.argv[1:] or sorted(d for d in os.listdir(FIX) if os.path.isdir(os.path.join(FIX, d)))
    ok = True
    import gen_moe_fixtures
    for c in cases:
        try:
            if c in gen_moe_fixtures.CASES:   # written and re-checked by gen_moe_fixtures.py
                print(f"ok   {c:16s} {gen_moe_fixtures.check_case(os.path.join(FIX, c))}")
                continue
            print(f"ok   {c:16s} {check_case(os.path.join(FIX, c))}")
        except Exception as e:  # noqa: BLE001
            ok = False
            print(f"FAIL {c:16s} {type(e).__name__}: {e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
