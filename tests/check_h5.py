#!/usr/bin/python3
"""check_h5.py — checks a neuronlab activation file (schema v1, DESIGN §4) the way a user
sees it: through h5py. Every documented attribute and dataset, its dtype, shape, chunking
and the consistency of lengths (ffn_act rows == len(tokens) == doc_offsets[-1], one
label / prompt_len / pooled row per document …).

Usage: /usr/bin/python3 tests/check_h5.py FILE.h5 [FILE.h5 …]
Prints one "PASS <file>: <check>" or "FAIL <file>: <check>: <why>" line per check and
exits 1 when any check fails (2 when h5py is missing). Run by tests/h5_schema.sh on the
files tests/test_h5store.c leaves in the build directory; works on any recorded file
(only the first rows of each ffn_act are read).
"""
import os
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"SKIP check_h5: {e}")
    sys.exit(2)

FORMAT = "neuronlab.activations"
STR_ATTRS = ["model", "arch", "ffn_kind", "act_fn", "dtype", "dataset", "tokenizer", "created_by", "dataset_checksum"]
INT_ATTRS = ["version", "n_layers", "d_model", "d_ff"]
SAMPLE_ROWS = 256


class Checker:
    def __init__(self, path):
        self.name = os.path.basename(path)
        self.failed = 0

    def check(self, what, ok, why=""):
        if ok:
            print(f"PASS {self.name}: {what}")
        else:
            self.failed += 1
            print(f"FAIL {self.name}: {what}: {why}")
        return ok


def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def appendable(c, ds, what):
    """Chunked along axis 0, extendible along it, whole rows per chunk."""
    ok = ds.chunks is not None and ds.maxshape[0] is None
    if ok and ds.ndim == 2:
        ok = ds.chunks[1] == ds.shape[1] and ds.maxshape[1] == ds.shape[1]
    c.check(f"{what} chunked along axis 0 and extendible", ok,
            f"chunks={ds.chunks} maxshape={ds.maxshape}")


def check_file(path):
    c = Checker(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        c.check("opens with h5py", False, str(e))
        return c.failed
    with f:
        c.check("opens with h5py", True)
        a = f.attrs
        # Root attributes.
        essential = c.check("attr format", a.get("format") == FORMAT, f"got {a.get('format')!r}")
        for k in STR_ATTRS:
            v = a.get(k)
            essential &= c.check(f"attr {k} is str", isinstance(v, str), f"got {type(v).__name__} {v!r}") or k != "dtype"
        for k in INT_ATTRS:
            v = a.get(k)
            essential &= c.check(f"attr {k} is a positive integer", is_int(v) and v > 0, f"got {v!r}")
        if not essential:
            return c.failed
        c.check("attr version == 1", int(a["version"]) == 1, f"got {a['version']}")
        L, F = int(a["n_layers"]), int(a["d_ff"])
        c.check("attr ffn_kind", a["ffn_kind"] in ("gated", "plain"), f"got {a['ffn_kind']!r}")
        c.check("attr dtype", a["dtype"] in ("float32", "float16"), f"got {a['dtype']!r}")
        c.check("attr created_by names neuronlab", a["created_by"].startswith("neuronlab "),
                f"got {a['created_by']!r}")
        layers = np.asarray(a.get("layers", []))
        c.check("attr layers: sorted distinct ints in 0..n_layers-1",
                "layers" in a and layers.ndim == 1 and np.issubdtype(layers.dtype, np.integer)
                and np.all(np.diff(layers) > 0) and (layers.size == 0 or (layers[0] >= 0 and layers[-1] < L)),
                f"got {layers!r}")
        comp = a.get("complete")
        c.check("attr complete is 0 or 1", is_int(comp) and comp in (0, 1), f"got {comp!r}")
        complete = comp == 1

        # Token and document datasets.
        for name, dt in (("tokens", np.int32), ("doc_offsets", np.int64), ("prompt_len", np.int32)):
            ok = name in f and isinstance(f[name], h5py.Dataset)
            if c.check(f"/{name} exists", ok, "missing"):
                ds = f[name]
                c.check(f"/{name} is 1-D {np.dtype(dt).name}", ds.ndim == 1 and ds.dtype == dt,
                        f"got {ds.ndim}-D {ds.dtype}")
                appendable(c, ds, f"/{name}")
        ok = "doc_labels" in f
        if c.check("/doc_labels exists", ok, "missing"):
            ds = f["doc_labels"]
            si = h5py.check_string_dtype(ds.dtype)
            c.check("/doc_labels is a 1-D UTF-8 string dataset",
                    ds.ndim == 1 and si is not None and si.encoding == "utf-8", f"got {ds.dtype} {si}")
            appendable(c, ds, "/doc_labels")
        if not all(n in f for n in ("tokens", "doc_offsets", "prompt_len", "doc_labels")):
            return c.failed
        tokens = f["tokens"][...]
        off = f["doc_offsets"][...]
        N, D = len(tokens), len(off) - 1
        c.check("doc_offsets has D+1 >= 1 entries", D >= 0, "empty")
        if D < 0:
            return c.failed
        c.check("doc_offsets[0] == 0", off[0] == 0, f"got {off[0]}")
        c.check("doc_offsets non-decreasing", bool(np.all(np.diff(off) >= 0)), "decreases")
        c.check("doc_offsets[-1] == len(tokens)", off[-1] == N, f"{off[-1]} vs {N}")
        labels = f["doc_labels"].asstr()[...]
        c.check("len(doc_labels) == D", len(labels) == D, f"{len(labels)} vs {D}")
        plen = f["prompt_len"][...]
        c.check("len(prompt_len) == D", len(plen) == D, f"{len(plen)} vs {D}")
        if len(plen) == D:
            c.check("0 <= prompt_len <= document length",
                    bool(np.all(plen >= 0) and np.all(plen <= np.diff(off))), "out of range")
        c.check("token ids non-negative", bool(np.all(tokens >= 0)), "negative id")

        # Token text (when the model has a tokenizer): /vocab str, /vocab_bytes the same length.
        if "vocab" in f:
            v = f["vocab"]
            c.check("/vocab is 1-D UTF-8 variable-length strings",
                    v.ndim == 1 and h5py.check_string_dtype(v.dtype) is not None
                    and h5py.check_string_dtype(v.dtype).encoding == "utf-8" and h5py.check_string_dtype(v.dtype).length is None,
                    f"{v.dtype}")
            c.check("/vocab_bytes beside /vocab, same length", "vocab_bytes" in f and len(f["vocab_bytes"]) == len(v), "missing")
            if len(v) > 0:
                c.check("/vocab reads as str with .asstr()", isinstance(v.asstr()[0], str), type(v.asstr()[0]).__name__)

        # Per-layer datasets.
        want = np.float16 if a["dtype"] == "float16" else np.float32
        lg = f.get("layers")
        c.check("/layers is a group", isinstance(lg, h5py.Group), "missing")
        if lg is None:
            return c.failed
        names = list(lg.keys())
        moe = [int(l) for l in np.asarray(a.get("moe_layers", []))]
        c.check("/layers holds exactly the recorded layers (dense and MoE), in creation order",
                names == [str(l) for l in sorted(set(int(l) for l in layers) | set(moe))],
                f"{names} vs {list(layers)} + moe {moe}")
        if moe:   # native mixture-of-experts layers (DESIGN §10)
            E, k, Fe, Fs = (int(a[x]) for x in ("n_experts", "experts_per_tok", "d_expert", "d_shared"))
            c.check("MoE layers are not in attr layers", not set(moe) & set(int(l) for l in layers), "overlap")
            for l in moe:
                shapes = {"router_logits": ((N, E), np.float32), "experts": ((N, k), np.int16),
                          "expert_weights": ((N, k), np.float32), "expert_act": ((N, k, Fe), want)}
                if Fs:
                    shapes.update({"shared_act": ((N, Fs), want), "shared_gate": ((N,), np.float32)})
                for name, (shape, dt) in shapes.items():
                    p = f"layers/{l}/{name}"
                    if c.check(f"/{p} exists", p in f, "missing"):
                        ds = f[p]
                        c.check(f"/{p} {np.dtype(dt).name} {shape}", ds.dtype == dt and ds.shape == shape,
                                f"got {ds.dtype} {ds.shape}")
                        appendable(c, ds, f"/{p}")
                c.check(f"/layers/{l} has no ffn_act (MoE layer)", f"layers/{l}/ffn_act" not in f, "present")
                if all(f"layers/{l}/{n}" in f for n in shapes) and N:
                    z = f[f"layers/{l}/router_logits"][...].astype(np.float64)
                    ex = f[f"layers/{l}/experts"][...].astype(np.int64)
                    w = f[f"layers/{l}/expert_weights"][...].astype(np.float64)
                    pr = np.exp(z - z.max(1, keepdims=True))
                    pr /= pr.sum(1, keepdims=True)
                    c.check(f"/layers/{l}/experts in 0..E-1, distinct per token",
                            bool(np.all((ex >= 0) & (ex < E))) and all(len(set(r)) == k for r in ex), "bad ids")
                    ps = np.take_along_axis(pr, np.clip(ex, 0, E - 1), 1)
                    top = -np.sort(-pr, 1)[:, :k]
                    c.check(f"/layers/{l}/experts are the top-k of softmax(router_logits)",
                            bool(np.allclose(ps, top, rtol=1e-4, atol=1e-6)), "not the top-k")
                    r = w / ps
                    c.check(f"/layers/{l}/expert_weights = p of the experts (renormalised or not)",
                            bool(np.allclose(r, r[:, :1], rtol=1e-4)) and
                            bool(np.allclose(r[:, 0], 1, rtol=1e-4) or np.allclose(w.sum(1), 1, rtol=1e-4)),
                            "weights do not match the router")
        for l in [int(x) for x in np.asarray(a.get("moefied_layers", []))]:   # record --moe DIR
            p = f"layers/{l}/moe_experts"
            K = int(a["moe_k"])
            if c.check(f"/{p} exists", p in f, "missing"):
                ds = f[p]
                c.check(f"/{p} int16 (N, K)", ds.dtype == np.int16 and ds.shape == (N, K), f"got {ds.dtype} {ds.shape}")
                v = ds[...]
                c.check(f"/{p} ascending distinct ids", bool(np.all(np.diff(v, axis=1) > 0)) and bool(np.all(v >= 0)),
                        "not ascending")
        n_acts = sum(1 for l in layers if f"layers/{l}/ffn_act" in f)
        c.check("ffn_act in all recorded layers or none (pooled-only)", n_acts in (0, len(layers)),
                f"{n_acts} of {len(layers)}")
        for l in layers:
            p = f"layers/{l}/ffn_act"
            if p in f:
                ds = f[p]
                c.check(f"/{p} dtype {np.dtype(want).name}", ds.dtype == want, f"got {ds.dtype}")
                c.check(f"/{p} shape (N, d_ff)", ds.shape == (N, F), f"got {ds.shape}, want {(N, F)}")
                appendable(c, ds, f"/{p}")
                rows = ds[: min(N, SAMPLE_ROWS)]
                c.check(f"/{p} first rows finite", bool(np.all(np.isfinite(rows.astype(np.float32)))),
                        "NaN or inf")
            for h in ("resid", "attn_out", "ffn_in"):  # record --hook: [N, d_model], the file's dtype
                p = f"layers/{l}/{h}"
                if p in f:
                    ds = f[p]
                    c.check(f"/{p} dtype {np.dtype(want).name}", ds.dtype == want, f"got {ds.dtype}")
                    c.check(f"/{p} shape (N, d_model)", ds.shape == (N, int(a["d_model"])), f"got {ds.shape}")
                    appendable(c, ds, f"/{p}")
                    c.check(f"/{h} in every recorded layer", all(f"layers/{m}/{h}" in f for m in layers), "some lack it")
            p = f"layers/{l}/w_out_norm"
            if p in f:
                ds = f[p]
                c.check(f"/{p} float32 (d_ff,)", ds.dtype == np.float32 and ds.shape == (F,),
                        f"got {ds.dtype} {ds.shape}")
                c.check(f"/{p} finite and >= 0", bool(np.all(np.isfinite(ds[...])) and np.all(ds[...] >= 0)),
                        "negative or not finite")
            else:
                c.check(f"/{p} present (required when complete)", not complete, "missing in a complete file")
        if "pooled" in f:
            pg = f["pooled"]
            c.check("/pooled holds exactly the recorded layers", list(pg.keys()) == [str(l) for l in layers],
                    f"{list(pg.keys())}")
            for l in layers:
                p = f"pooled/{l}/mean_abs"
                if c.check(f"/{p} exists", p in f, "missing"):
                    ds = f[p]
                    c.check(f"/{p} float32 (D, d_ff)", ds.dtype == np.float32 and ds.shape == (D, F),
                            f"got {ds.dtype} {ds.shape}, want {(D, F)}")
                    appendable(c, ds, f"/{p}")
                    c.check(f"/{p} >= 0 (mean |a|)", bool(np.all(ds[: min(D, SAMPLE_ROWS)] >= 0)), "negative")
        else:
            streams = any(f"layers/{l}/{h}" in f for l in layers for h in ("resid", "attn_out", "ffn_in"))
            c.check("a file without /pooled has ffn_act or a --hook dataset", n_acts > 0 or streams or len(layers) == 0,
                    "no ffn_act, no --hook dataset and no /pooled")
    return c.failed


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = sum(check_file(p) for p in argv[1:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
