#!/usr/bin/python3
"""torch_llama.py — the PyTorch baselines of the benchmark: a minimal Llama in plain torch.

Usage:
  torch_llama.py ppl    MODEL DATA.jsonl [--threads N]
  torch_llama.py record MODEL DATA.jsonl -o OUT.h5 [--dtype f16|f32] [--threads N]

MODEL is a Hugging Face Llama folder (config.json + model.safetensors, float32/f16/bf16) or a
llama2.c legacy checkpoint (.bin, adjacent-pair RoPE). Weights are read with our own
safetensors reader (numpy memmap + torch.from_numpy: no copy, like neuronlab's mmap).
Documents go through one at a time as a (1, T) batch under torch.inference_mode(); the
loss is the mean NLL of every next-token prediction (token i predicts token i+1), the same
contract as `neuronlab ppl`: a document longer than the context (--ctx, default the model's)
goes through in windows of that length every --stride tokens (default half of it), each
scoring (recording) only the tokens after the previous window, as neuronlab's walk.c does.
Tied embeddings (tie_word_embeddings, or no lm_head tensor) and f16/bf16 weights (converted to
f32 once at load) are supported, so the zoo models run as they are.
`record` registers a forward pre-hook on every layer's mlp.down_proj (its input is the FFN
activation a = silu(x W_gate) * (x W_up)) and appends it to /layers/{l}/ffn_act, a chunked,
resizable h5py dataset, in the requested dtype — the "obvious" PyTorch + h5py recorder.
Prints one JSON line on stdout: {nll, ppl, tokens, predictions, docs: [...], t_import,
t_load, t_compute, threads, blas}.
"""
import time

T_START = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

T_IMPORT = time.perf_counter() - T_START

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """Returns {name: torch.Tensor} viewing a private (copy-on-write) mapping of the file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="c")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = raw[8 + n + b: 8 + n + e].view(ST_DTYPES[info["dtype"]]).reshape(info["shape"])
        t = torch.from_numpy(arr)
        if info["dtype"] == "BF16":
            t = (t.to(torch.int32) << 16).view(torch.float32)
        elif info["dtype"] == "F16":
            t = t.float()
        out[name] = t
    return out


def load_hf(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            w.update(read_safetensors(os.path.join(folder, fn)))
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    c = dict(D=D, F=cfg["intermediate_size"], L=cfg["num_hidden_layers"], H=H,
             Hk=cfg.get("num_key_value_heads", H), Dh=cfg.get("head_dim") or D // H,
             V=cfg["vocab_size"], eps=cfg.get("rms_norm_eps", 1e-6), theta=cfg.get("rope_theta", 10000.0),
             interleaved=False, max_pos=cfg.get("max_position_embeddings", 2048))
    if "lm_head.weight" not in w or cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    return c, w


def load_llama2c(path):
    raw = np.memmap(path, dtype=np.uint8, mode="c")
    D, F, L, H, Hk, V, S = struct.unpack("<7i", bytes(raw[:28]))
    shared = V > 0
    V = abs(V)
    Dh = D // H
    KV = Hk * Dh
    fl = torch.from_numpy(raw[28:].view(np.float32))
    pos = [0]

    def take(*shape):
        n = math.prod(shape)
        t = fl[pos[0]: pos[0] + n].view(*shape)
        pos[0] += n
        return t

    w = {"model.embed_tokens.weight": take(V, D)}
    per = [("input_layernorm", (D,)), ("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (KV, D)),
           ("self_attn.v_proj", (KV, D)), ("self_attn.o_proj", (D, D)), ("post_attention_layernorm", (D,)),
           ("mlp.gate_proj", (F, D)), ("mlp.down_proj", (D, F)), ("mlp.up_proj", (F, D))]
    for name, shape in per:
        for l in range(L):
            w[f"model.layers.{l}.{name}.weight"] = take(*shape)
    w["model.norm.weight"] = take(D)
    take(S, Dh)  # freq_cis_real, freq_cis_imag: recomputed
    w["lm_head.weight"] = w["model.embed_tokens.weight"] if shared else take(V, D)
    c = dict(D=D, F=F, L=L, H=H, Hk=Hk, Dh=Dh, V=V, eps=1e-5, theta=10000.0, interleaved=True, max_pos=S)
    return c, w


def linear(weight):
    m = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    m.weight = nn.Parameter(weight, requires_grad=False)
    return m


class RMSNorm(nn.Module):
    def __init__(self, weight, eps):
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class MLP(nn.Module):
    def __init__(self, w, p):
        super().__init__()
        self.gate_proj = linear(w[p + "gate_proj.weight"])
        self.up_proj = linear(w[p + "up_proj.weight"])
        self.down_proj = linear(w[p + "down_proj.weight"])

    def forward(self, x):
        return self.down_proj(Fn.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    def __init__(self, c, w, p):
        super().__init__()
        self.c = c
        self.q_proj, self.k_proj = linear(w[p + "q_proj.weight"]), linear(w[p + "k_proj.weight"])
        self.v_proj, self.o_proj = linear(w[p + "v_proj.weight"]), linear(w[p + "o_proj.weight"])

    def rope(self, x, cos, sin):  # x (B, h, T, Dh)
        if self.c["interleaved"]:  # llama2.c: rotate adjacent pairs (x0, x1), (x2, x3), ...
            x0, x1 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2)
        h = x.shape[-1] // 2  # Hugging Face: rotate_half
        x0, x1 = x[..., :h], x[..., h:]
        return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        H, Hk, Dh = self.c["H"], self.c["Hk"], self.c["Dh"]
        q = self.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
        k = self.k_proj(x).view(B, T, Hk, Dh).transpose(1, 2)
        v = self.v_proj(x).view(B, T, Hk, Dh).transpose(1, 2)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if Hk != H:
            k = k.repeat_interleave(H // Hk, dim=1)
            v = v.repeat_interleave(H // Hk, dim=1)
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(Dh)) + mask
        y = torch.matmul(torch.softmax(s, dim=-1), v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * Dh))


class Layer(nn.Module):
    def __init__(self, c, w, l):
        super().__init__()
        p = f"model.layers.{l}."
        self.input_layernorm = RMSNorm(w[p + "input_layernorm.weight"], c["eps"])
        self.self_attn = Attention(c, w, p + "self_attn.")
        self.post_attention_layernorm = RMSNorm(w[p + "post_attention_layernorm.weight"], c["eps"])
        self.mlp = MLP(w, p + "mlp.")

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, c, w):
        super().__init__()
        self.c = c
        self.embed = w["model.embed_tokens.weight"]
        self.layers = nn.ModuleList([Layer(c, w, l) for l in range(c["L"])])
        self.norm = RMSNorm(w["model.norm.weight"], c["eps"])
        self.lm_head = linear(w["lm_head.weight"])
        self.inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, c["Dh"], 2, dtype=torch.float32) / c["Dh"]))

    def forward(self, tokens, head=True):  # tokens (B, T) -> logits (B, T, V), or None without the head
        T = tokens.shape[1]
        ang = torch.outer(torch.arange(T, dtype=torch.float32), self.inv_freq)  # (T, Dh/2)
        cos, sin = ang.cos(), ang.sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = Fn.embedding(tokens, self.embed)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x)) if head else None


class H5Recorder:
    """Forward pre-hooks on every mlp.down_proj: append its input (T, F) to /layers/{l}/ffn_act."""

    def __init__(self, model, path, dtype, n_tokens_hint):
        import h5py
        self.f = h5py.File(path, "w")
        self.np_dtype = np.float16 if dtype == "f16" else np.float32
        self.torch_dtype = torch.float16 if dtype == "f16" else torch.float32
        F = model.c["F"]
        rows = max(1, min(n_tokens_hint, (1 << 20) // (F * np.dtype(self.np_dtype).itemsize)))  # ~1 MiB chunks
        self.f.attrs["format"] = "torch-baseline"
        self.sets, self.tokens, self.offsets = [], [], [0]
        self.keep_from = 0  # rows of the current window already recorded by the previous one
        for l, layer in enumerate(model.layers):
            ds = self.f.create_dataset(f"layers/{l}/ffn_act", shape=(0, F), maxshape=(None, F),
                                       chunks=(rows, F), dtype=self.np_dtype)
            self.sets.append(ds)
            layer.mlp.down_proj.register_forward_pre_hook(self.hook(l))

    def hook(self, l):
        def fn(module, inputs):
            a = inputs[0].reshape(-1, inputs[0].shape[-1])[self.keep_from:].to(self.torch_dtype).numpy()
            ds = self.sets[l]
            n = ds.shape[0]
            ds.resize(n + a.shape[0], axis=0)
            ds[n:] = a
        return fn

    def add_doc(self, toks):
        self.tokens.extend(toks)
        self.offsets.append(len(self.tokens))

    def close(self):
        self.f.create_dataset("tokens", data=np.asarray(self.tokens, dtype=np.int32))
        self.f.create_dataset("doc_offsets", data=np.asarray(self.offsets, dtype=np.int64))
        self.f.close()


def blas_info():
    """What torch computes with: build settings, oneDNN, and the BLAS libraries mapped in."""
    cfg = torch.__config__.show()
    build = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO|USE_MKLDNN|USE_OPENMP)=([^,\s]+)", cfg))
    cap = next((ln.split(":", 1)[1].strip() for ln in cfg.splitlines() if "CPU capability" in ln), "?")
    libs = set()
    for ln in open("/proc/self/maps"):
        f = ln.split()[-1]
        if re.search(r"blas|lapack|dnnl|mkl|gomp", os.path.basename(f)):
            libs.add(f"{f} -> {os.path.realpath(f)}" if os.path.realpath(f) != f else f)
    ob = {}
    try:  # the OpenBLAS the process actually loaded (torch's libblas.so.3 resolves to it on Debian)
        import ctypes
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_config.restype = lib.openblas_get_corename.restype = ctypes.c_char_p
        ob = {"config": lib.openblas_get_config().decode(), "core": lib.openblas_get_corename().decode(),
              "threads": lib.openblas_get_num_threads()}
    except (OSError, AttributeError):
        pass
    return {"build": build, "cpu_capability": cap, "mkldnn": torch.backends.mkldnn.is_available(),
            "version": torch.__version__, "libs": sorted(libs), "openblas": ob}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ppl", "record"])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("-o", "--out")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ctx", type=int, default=0, help="window length (default: the model's context)")
    ap.add_argument("--stride", type=int, default=0, help="window stride (default: half the window, as neuronlab)")
    a = ap.parse_args()
    if a.mode == "record" and not a.out:
        ap.error("record needs -o OUT.h5")
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message=".*non-writable.*")

    t0 = time.perf_counter()
    c, w = load_hf(a.model) if os.path.isdir(a.model) else load_llama2c(a.model)
    model = Llama(c, w).eval()
    docs = [json.loads(ln)["tokens"] for ln in open(a.data) if ln.strip()]
    C = min(a.ctx or c["max_pos"], c["max_pos"])
    S = a.stride if 0 < a.stride <= C else max(1, C // 2)
    rec = H5Recorder(model, a.out, a.dtype, min(C, max(len(d) for d in docs))) if a.mode == "record" else None
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    per_doc, tot, n_pred, n_tok = [], 0.0, 0, 0
    with torch.inference_mode():
        for d in docs:
            n_tok += len(d)
            if rec:
                rec.add_doc(d)
            doc_nll, doc_n = 0.0, 0
            # windows as `neuronlab ppl` walks a document longer than the context (walk.c): C tokens
            # from w0 = 0, S, 2S, ...; each window scores (records) only the rows after the previous one
            prev_end, w0 = 0, 0
            while True:
                wend = min(w0 + C, len(d))
                if wend > prev_end:
                    toks = torch.tensor(d[w0:wend], dtype=torch.long).unsqueeze(0)
                    first = max(prev_end, w0) - w0  # first new row of this window
                    if rec:
                        rec.keep_from = first
                        model(toks, head=False)  # the hooks do the work; like `neuronlab record`, no LM head
                    else:
                        last = min(wend, len(d) - 1) - w0  # rows first..last-1 have a next token
                        if last > first:
                            logits = model(toks)[0, first:last].float()
                            tgt = torch.tensor(d[w0 + first + 1: w0 + last + 1], dtype=torch.long)
                            doc_nll += Fn.cross_entropy(logits, tgt, reduction="sum").item()
                            doc_n += last - first
                    prev_end = wend
                if wend == len(d):
                    break
                w0 += S
            if not rec:
                per_doc.append(doc_nll / doc_n if doc_n else None)
                tot += doc_nll
                n_pred += doc_n
    if rec:
        rec.close()
    t_compute = time.perf_counter() - t0
    out = {"mode": a.mode, "tokens": n_tok, "predictions": n_pred, "nll": tot / n_pred if n_pred else None,
           "ppl": math.exp(tot / n_pred) if n_pred else None, "docs": per_doc, "t_import": T_IMPORT,
           "t_load": t_load, "t_compute": t_compute, "threads": torch.get_num_threads(), "blas": blas_info()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
