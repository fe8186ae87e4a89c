"""neuronlab.Model: a model, its tokenizer and the instrumented forward pass of libneuronlab.so.

Every number comes from the C library (the same code as the `neuronlab` CLI); this module only
converts arguments, checks what Python users get wrong, and turns C errors into neuronlab.Error.
"""
import ctypes
import inspect
import math
import os
import warnings
from typing import NamedTuple

import numpy as np

from . import _lib


class Error(RuntimeError):
    """An error reported by libneuronlab (the C message; .status is its nl_status name)."""

    def __init__(self, message, status="NL_EINVAL"):
        super().__init__(message)
        self.status = status


class HookInfo(NamedTuple):
    point: str
    layer: int
    pos0: int  # sequence position of the view's first row


class Doc(NamedTuple):
    tokens: np.ndarray  # int32 (n,)
    label: str
    prompt_len: int
    score_from: int  # the first token whose prediction counts in perplexity
    line: int


class PplResult(NamedTuple):
    ppl: float  # over every document
    nll: float  # mean negative log-likelihood (nats) over every prediction
    tokens: int  # predictions
    by_label: dict  # label -> {"ppl", "nll", "tokens"}
    doc_nll: np.ndarray  # (Dc,) summed nats per document
    doc_tokens: np.ndarray  # (Dc,) predictions per document


def _enc(s):
    return None if s is None else os.fspath(s).encode()


class Dataset:
    """A JSONL dataset read exactly as `neuronlab ppl` reads it, with the model's tokenizer."""

    def __init__(self, model, path):
        L = _lib.lib()
        self._model = model
        self._h = ctypes.c_void_p()
        model._check(L.nl_api_dataset_open(model._handle(), _enc(path), ctypes.byref(self._h)))
        self.path = os.fspath(path)
        self.docs = []
        for i in range(L.nl_api_dataset_size(self._h)):
            tok = ctypes.POINTER(ctypes.c_int32)()
            n, pl, sf, line = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            label = ctypes.c_char_p()
            L.nl_api_dataset_doc(self._h, i, ctypes.byref(tok), ctypes.byref(n), ctypes.byref(pl), ctypes.byref(sf),
                                 ctypes.byref(label), ctypes.byref(line))
            arr = np.ctypeslib.as_array(tok, shape=(n.value,)).copy()
            self.docs.append(Doc(arr, label.value.decode(), pl.value, sf.value, line.value))

    def __len__(self):
        return len(self.docs)

    def __getitem__(self, i):
        return self.docs[i]

    def __iter__(self):
        return iter(self.docs)

    @property
    def labels(self):
        """Distinct labels in first-seen order."""
        return list(dict.fromkeys(d.label for d in self.docs))

    def close(self):
        if getattr(self, "_h", None) and self._h.value:
            _lib.lib().nl_api_dataset_close(self._h)
            self._h = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Model:
    """A model (Hugging Face folder, GGUF file or llama2.c .bin) with its tokenizer.

    Model(path, tokenizer=None, hidden_act=None, ctx=0, batch=0, threads=None, compute="f32"):
    ctx = tokens per sequence (0: the model's context, at most 4096); batch = rows per forward
    call (0: ctx, so a hook sees a whole sequence at once); threads = worker threads (None: all
    cores, or OMP_NUM_THREADS); compute = "f32" or "bf16" (the matrix products in bf16 with
    AVX512-BF16: faster, approximate; on a CPU without it a warning and f32; self.compute says
    which one runs).
    """

    def __init__(self, path, tokenizer=None, hidden_act=None, ctx=0, batch=0, threads=None, compute="f32"):
        L = _lib.lib()
        self._h = ctypes.c_void_p()
        st = L.nl_api_open(_enc(path), _enc(tokenizer), _enc(hidden_act), int(ctx), int(batch), ctypes.byref(self._h))
        if st != 0:
            msg = L.nl_api_errmsg(self._h).decode(errors="replace")
            L.nl_api_close(self._h)
            self._h = ctypes.c_void_p()
            raise Error(msg, L.nl_status_name(st).decode())
        self.path = os.fspath(path)
        self._hook_exc = None
        self._hook_fns = {}
        self._tramp = _lib.HOOK_FN(self._trampoline)  # kept alive as long as the model
        if threads is not None:
            self._check(L.nl_api_set_threads(self._h, int(threads)))
        self._check(L.nl_api_set_compute(self._h, _enc(compute)))
        self.compute = L.nl_api_str(self._h, b"compute").decode()
        if compute == "bf16" and self.compute != "bf16":
            warnings.warn("neuronlab: compute='bf16': this CPU has no AVX512-BF16; computing in f32")
        d = lambda k: int(L.nl_api_dim(self._h, k.encode()))
        s = lambda k: L.nl_api_str(self._h, k.encode()).decode()
        self.n_layers, self.d_model, self.d_ff = d("n_layers"), d("d_model"), d("d_ff")
        self.n_heads, self.head_dim, self.vocab_size = d("n_heads"), d("head_dim"), d("vocab_size")
        self.ctx, self.batch, self.bos, self.eos = d("ctx"), d("batch"), d("bos"), d("eos")
        self.n_experts, self.gated = d("n_experts"), bool(d("gated"))
        self.arch, self.act, self.tokenizer_path = s("arch"), s("act"), s("tokenizer") or None
        self.points = tuple(L.nl_api_point(i).decode() for i in range(L.nl_api_n_points()))

    # ---- plumbing ---------------------------------------------------------------------------

    def _handle(self):
        if not self._h or not self._h.value:
            raise Error("the model is closed")
        return self._h

    def _check(self, st):
        if st != 0:
            L = _lib.lib()
            raise Error(L.nl_api_errmsg(self._h).decode(errors="replace"), L.nl_status_name(st).decode())

    def close(self):
        """Frees the model now (also done when it is garbage-collected)."""
        if getattr(self, "_h", None) and self._h.value:
            _lib.lib().nl_api_close(self._h)
            self._h = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"neuronlab.Model({self.path!r}: {self.arch}, {self.n_layers} layers, d_model {self.d_model}, d_ff {self.d_ff})"

    def _tokens(self, tokens, min_len=1):
        a = np.asarray(tokens)
        if a.ndim != 1:
            raise ValueError(f"tokens must be a 1-D sequence of ids, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"tokens must be integers, got dtype {a.dtype}")
        if a.size < min_len:
            raise ValueError(f"need at least {min_len} token(s), got {a.size}")
        if a.size > self.ctx:
            raise ValueError(f"{a.size} tokens exceed the context of {self.ctx} (open the model with a larger ctx=)")
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            bad = int(a[(a < 0) | (a >= self.vocab_size)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary 0..{self.vocab_size - 1}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _layer(self, layer, allow_all=True):
        if layer is None or (allow_all and layer == -1):
            if not allow_all:
                raise ValueError("a layer is needed")
            return -1
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(f"a layer is an int, got {type(layer).__name__}")
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} is outside the model's 0..{self.n_layers - 1}")
        return int(layer)

    def _point(self, point):
        if point not in self.points:
            raise ValueError(f"unknown hook point {point!r} (known: {', '.join(self.points)})")
        return point

    def point_width(self, point, layer):
        """Columns of the (T, width) view at point/layer."""
        w = _lib.lib().nl_api_point_width(self._handle(), self._point(point).encode(), self._layer(layer, False))
        if w < 0:
            self._check(3)  # NL_EINVAL: the C message says why the point does not fire there
        return w

    # ---- hooks ------------------------------------------------------------------------------

    def _trampoline(self, user, point, layer, pos0, T, width, x):
        fn, wants_info, key = self._hook_fns[user]
        try:
            src = np.ctypeslib.as_array(x, shape=(T, width))
            view = src.copy()  # the caller may keep it: it never points into the library's buffers
            ret = fn(view, HookInfo(point.decode(), layer, pos0)) if wants_info else fn(view)
            if ret is not None:
                if not isinstance(ret, np.ndarray):
                    raise TypeError(f"hook {key} returned {type(ret).__name__}: return None (edit the view in place) "
                                    f"or a float32 array of shape {(T, width)}")
                if ret.dtype != np.float32:
                    raise TypeError(f"hook {key} returned dtype {ret.dtype}; the view is float32")
                if ret.shape != (T, width):
                    raise ValueError(f"hook {key} returned shape {ret.shape}; the view is {(T, width)}")
                view = ret
            elif view.shape != (T, width) or view.dtype != np.float32:
                raise ValueError(f"hook {key} changed the view to {view.shape} {view.dtype}; it must stay {(T, width)} float32")
            src[...] = view
            return 0
        except BaseException as e:  # noqa: BLE001 — re-raised by _call once the C call returns
            self._hook_exc = e
            return 1

    def _add_hooks(self, hooks):
        """Registers {(point, layer): fn} (layer None or -1 = every layer); returns the ids."""
        if hooks is None:
            return []
        if not isinstance(hooks, dict):
            raise TypeError("hooks must be a dict {(point, layer): fn}")
        L, ids = _lib.lib(), []
        try:
            for key, fn in hooks.items():
                if not (isinstance(key, tuple) and len(key) == 2):
                    raise TypeError(f"a hook key is (point, layer), got {key!r}")
                point, layer = self._point(key[0]), self._layer(key[1])
                if not callable(fn):
                    raise TypeError(f"the hook for {key!r} is not callable")
                try:
                    n_req = sum(1 for p in inspect.signature(fn).parameters.values()
                                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
                except (TypeError, ValueError):
                    n_req = 1
                slot = max(self._hook_fns, default=0) + 1
                self._hook_fns[slot] = (fn, n_req >= 2, key)
                hid = ctypes.c_int()
                st = L.nl_api_hook_add(self._h, point.encode(), layer, self._tramp, ctypes.c_void_p(slot), ctypes.byref(hid))
                if st != 0:
                    del self._hook_fns[slot]
                    self._check(st)
                ids.append((hid.value, slot))
        except BaseException:
            self._remove_hooks(ids)
            raise
        return ids

    def _remove_hooks(self, ids):
        L = _lib.lib()
        for hid, slot in ids:
            L.nl_api_hook_remove(self._h, hid)
            self._hook_fns.pop(slot, None)

    def _call(self, hooks, fn, *args):
        """Runs one C entry point with hooks registered for its duration."""
        ids = self._add_hooks(hooks)
        self._hook_exc = None
        try:
            st = fn(self._handle(), *args)
        finally:
            self._remove_hooks(ids)
        if self._hook_exc is not None:
            e, self._hook_exc = self._hook_exc, None
            raise e
        self._check(st)

    # ---- tokenizer --------------------------------------------------------------------------

    def tokenize(self, text, special=True):
        """Token ids (int32) of text; special=True wraps it in the template (BOS …) as datasets do."""
        if not isinstance(text, str):
            raise TypeError("tokenize takes a str")
        L, b = _lib.lib(), text.encode()
        cap, n = len(b) + 16, ctypes.c_int()
        while True:
            out = np.empty(cap, dtype=np.int32)
            self._check(L.nl_api_tokenize(self._handle(), b, len(b), int(bool(special)),
                                          out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), cap, ctypes.byref(n)))
            if n.value <= cap:
                return out[:n.value].copy()
            cap = n.value

    def decode(self, ids, skip_special=False):
        """The text of token ids."""
        a = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int32)
        L, cap, n = _lib.lib(), 4 * a.size + 64, ctypes.c_size_t()
        while True:
            buf = ctypes.create_string_buffer(cap)
            self._check(L.nl_api_decode(self._handle(), a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), a.size,
                                        int(bool(skip_special)), buf, cap, ctypes.byref(n)))
            if n.value < cap:
                return buf.raw[:n.value].decode(errors="replace")
            cap = n.value + 1

    # ---- running ----------------------------------------------------------------------------

    def run(self, tokens, hooks=None):
        """Logits (T, V) float32 of tokens (a new sequence). hooks: {(point, layer): fn}; fn(view)
        gets a writable float32 (T, width) array and may change it in place (or return a new array
        of the same shape and dtype); fn(view, info) also gets HookInfo(point, layer, pos0)."""
        t = self._tokens(tokens)
        out = np.empty((t.size, self.vocab_size), dtype=np.float32)
        self._call(hooks, _lib.lib().nl_api_run, t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), t.size,
                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out

    def nll(self, tokens, hooks=None):
        """(T-1,) float64: nll[t] = -log p(tokens[t+1] | tokens[:t+1]) in nats."""
        t = self._tokens(tokens, 2)
        out = np.empty(t.size - 1, dtype=np.float64)
        self._call(hooks, _lib.lib().nl_api_nll, t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), t.size,
                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        return out

    def dataset(self, path):
        """A JSONL dataset read as the CLI reads it (Dataset: .docs with tokens, label, …)."""
        return Dataset(self, path)

    def ppl(self, dataset, stride=0, hooks=None):
        """Perplexity of a dataset (path or Dataset) exactly as `neuronlab ppl` computes it
        (sliding windows of ctx, stride 0 = ctx/2), with the hooks and the pruned neurons."""
        ds = dataset if isinstance(dataset, Dataset) else Dataset(self, dataset)
        n = len(ds)
        nll, cnt = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.int64)
        self._call(hooks, _lib.lib().nl_api_ppl, ds._h, int(stride), nll.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                   cnt.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)))
        tot_nll, tot_n, by = 0.0, 0, {}
        for d, x, k in zip(ds.docs, nll.tolist(), cnt.tolist()):  # summed in document order, as the CLI does
            tot_nll += x
            tot_n += k
            s = by.setdefault(d.label, [0.0, 0])
            s[0] += x
            s[1] += k
        mean = lambda a, b: a / b if b else float("nan")
        by_label = {lab: {"ppl": math.exp(mean(a, b)), "nll": mean(a, b), "tokens": b} for lab, (a, b) in by.items()}
        return PplResult(math.exp(mean(tot_nll, tot_n)), mean(tot_nll, tot_n), tot_n, by_label, nll, cnt)

    def record(self, tokens, layers=None, point="ffn_act", hooks=None):
        """Values of a hook point while running tokens: float32 (len(layers), T, width)
        (layers None = every layer; an int gives (T, width))."""
        t = self._tokens(tokens)
        single = isinstance(layers, (int, np.integer)) and not isinstance(layers, bool)
        ls = list(range(self.n_layers)) if layers is None else [layers] if single else list(layers)
        if not ls:
            raise ValueError("no layers to record")
        ls = [self._layer(x, False) for x in ls]
        self._point(point)
        width = self.point_width(point, ls[0])
        out = np.empty((len(ls), t.size, width), dtype=np.float32)
        arr = (ctypes.c_int * len(ls))(*ls)
        self._call(hooks, _lib.lib().nl_api_record, point.encode(), t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), t.size,
                   arr, len(ls), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out[0] if single else out

    def patch(self, tokens_a, tokens_b, point="resid", layers=None, positions=None):
        """Activation patching: runs A and keeps point's values at layers, then runs B with those
        values substituted at positions (None = every position; A and B then need the same
        length) and returns B's logits (T_b, V)."""
        a, b = self._tokens(tokens_a), self._tokens(tokens_b)
        single = isinstance(layers, (int, np.integer)) and not isinstance(layers, bool)
        ls = list(range(self.n_layers)) if layers is None else [layers] if single else list(layers)
        ls = [self._layer(x, False) for x in ls]
        if positions is None:
            if a.size != b.size:
                raise ValueError(f"patching every position needs sequences of one length (A has {a.size}, B {b.size}); give positions=")
            pos = np.arange(b.size)
        else:
            pos = np.asarray(positions, dtype=np.int64).reshape(-1)
            if pos.size and (pos.min() < 0 or pos.max() >= min(a.size, b.size)):
                raise IndexError(f"positions must be in 0..{min(a.size, b.size) - 1}")
        kept = {l: v for l, v in zip(ls, self.record(a, ls, point))}

        def substitute(view, info):
            if info.layer in kept:
                rows = pos[(pos >= info.pos0) & (pos < info.pos0 + view.shape[0])]
                view[rows - info.pos0] = kept[info.layer][rows]

        return self.run(b, hooks={(point, None): substitute})

    def prune(self, neurons):
        """Zeroes FFN neurons in every later run, like `neuronlab prune --neurons`: neurons is
        [(layer, neuron), …], an (n, 2) array or {layer: [neuron, …]}; None or [] prunes nothing.
        Replaces the previous set."""
        if neurons is None:
            pairs = np.zeros((0, 2), dtype=np.int64)
        elif isinstance(neurons, dict):
            pairs = np.array([(l, i) for l, ns in neurons.items() for i in ns], dtype=np.int64).reshape(-1, 2)
        else:
            pairs = np.asarray(list(neurons) if not isinstance(neurons, np.ndarray) else neurons)
            if pairs.size == 0:
                pairs = np.zeros((0, 2), dtype=np.int64)
            if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
                raise ValueError("neurons must be (layer, neuron) integer pairs")
        for l, i in pairs.tolist():
            self._layer(l, False)
            if not 0 <= i < self.d_ff:
                raise IndexError(f"neuron {i} is outside 0..{self.d_ff - 1}")
        ls = np.ascontiguousarray(pairs[:, 0], dtype=np.int32)
        ns = np.ascontiguousarray(pairs[:, 1], dtype=np.int32)
        self._check(_lib.lib().nl_api_prune(self._handle(), ls.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                                            ns.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), len(ls)))
        self.pruned = [tuple(p) for p in pairs.tolist()]

    # ---- weights ----------------------------------------------------------------------------

    def weight(self, name, layer=None):
        """A weight in float32: "w_out" (D, F) (column i = neuron i's output direction), "w_up"
        (F, D), "w_gate" (F, D), "b_up" (F,), "lm_head" (V, D) = W_U, "final_norm" (D,)."""
        L, h = _lib.lib(), self._handle()
        lay = -1 if layer is None else self._layer(layer, False)
        r, c = ctypes.c_int64(), ctypes.c_int64()
        self._check(L.nl_api_weight_shape(h, name.encode(), lay, ctypes.byref(r), ctypes.byref(c)))
        out = np.empty((r.value, c.value), dtype=np.float32)
        self._check(L.nl_api_weight(h, name.encode(), lay, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size))
        return out[0] if r.value == 1 else out

    def w_out(self, layer):
        return self.weight("w_out", layer)

    @property
    def w_u(self):
        """The unembedding W_U (V, D)."""
        return self.weight("lm_head")
