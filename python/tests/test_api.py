"""Hooks, patching, tokenizer and the error cases of the Python package."""
import numpy as np
import pytest

import neuronlab
from conftest import SILU


def test_tokenize_decode_roundtrip(silu):
    ids = silu.tokenize("Compute 12 + 30.")
    assert ids.dtype == np.int32 and ids[0] == silu.bos
    assert silu.decode(ids, skip_special=True) == "Compute 12 + 30."
    assert list(silu.tokenize("Compute 12 + 30.", special=False)) == list(ids[1:])


def test_hook_sees_and_changes_the_forward(silu):
    ids = silu.tokenize("The cat sat on the mat because it was warm.")
    base = silu.run(ids)
    seen = {}

    def observe(view, info):
        seen[info.layer] = view.copy()

    same = silu.run(ids, hooks={("ffn_act", None): observe})
    assert np.array_equal(same, base)  # an untouched view changes nothing
    assert sorted(seen) == list(range(silu.n_layers)) and seen[2].shape == (len(ids), silu.d_ff)
    np.testing.assert_array_equal(silu.record(ids, layers=2), seen[2])

    def kill(view):
        view[:, 17] = 0

    changed = silu.run(ids, hooks={("ffn_act", 2): kill})
    assert not np.array_equal(changed, base)
    silu.prune([(2, 17)])
    try:
        assert np.array_equal(silu.run(ids), changed)  # a hook zeroing a neuron = prune
    finally:
        silu.prune([])
    # returning a new array works too
    doubled = silu.run(ids, hooks={("resid", 5): lambda v: v * np.float32(2)})
    assert not np.array_equal(doubled, base)


def test_nll_matches_logits(silu):
    ids = silu.tokenize("Write a short poem about rain.")
    lg = silu.run(ids).astype(np.float64)
    lp = lg - np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1, keepdims=True)) - lg.max(1, keepdims=True)
    want = -lp[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(silu.nll(ids), want, atol=1e-4)


def test_patch_full_residual_reproduces_a(silu):
    a = silu.tokenize("What is 7 times 8?")
    b = silu.tokenize("Name a color of sky.")
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    la, lb = silu.run(a), silu.run(b)
    assert not np.array_equal(la, lb)
    assert np.array_equal(silu.patch(a, b, "resid"), la)  # every layer, every position
    assert np.array_equal(silu.patch(a, b, "resid", layers=[silu.n_layers - 1]), la)
    part = silu.patch(a, b, "resid", layers=[0], positions=[n - 1])
    assert np.array_equal(part[: n - 1], lb[: n - 1]) and not np.array_equal(part[n - 1], lb[n - 1])


def test_errors(silu, tmp_path):
    ids = silu.tokenize("hello there")
    with pytest.raises(ValueError, match="unknown hook point 'ffn_actt'"):
        silu.run(ids, hooks={("ffn_actt", 0): lambda v: None})
    with pytest.raises(IndexError, match="layer 6 is outside the model's 0..5"):
        silu.run(ids, hooks={("ffn_act", 6): lambda v: None})
    with pytest.raises(ValueError, match=r"returned shape \(3, 3\)"):
        silu.run(ids, hooks={("ffn_act", 0): lambda v: np.zeros((3, 3), np.float32)})
    with pytest.raises(TypeError, match="returned dtype float64"):
        silu.run(ids, hooks={("ffn_act", 0): lambda v: v.astype(np.float64)})
    with pytest.raises(TypeError, match="returned list"):
        silu.run(ids, hooks={("resid", 1): lambda v: [1.0]})

    def bad_assign(v):
        v[:] = np.ones((2, 5), np.float32)

    with pytest.raises(ValueError, match="could not broadcast"):
        silu.run(ids, hooks={("ffn_act", 0): bad_assign})

    def boom(v):
        raise KeyError("from the hook")

    with pytest.raises(KeyError, match="from the hook"):
        silu.run(ids, hooks={("attn_out", 3): boom})
    with pytest.raises(TypeError, match="not callable"):
        silu.run(ids, hooks={("resid", 0): 3})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        silu.run([0, 99999])
    with pytest.raises(ValueError, match="exceed the context"):
        silu.run(np.zeros(silu.ctx + 1, dtype=np.int64))
    with pytest.raises(IndexError, match="neuron 688 is outside"):
        silu.prune([(0, 688)])
    with pytest.raises(neuronlab.Error, match="exists only in gated FFNs|mixture-of-experts|router_logits"):
        silu.record(ids, layers=[0], point="router_logits")
    with pytest.raises(neuronlab.Error, match="missing.jsonl"):
        silu.ppl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": [1, 2]}\n{"tokens": [1, 2\n')
    with pytest.raises(neuronlab.Error, match="bad.jsonl.*line 2|line 2.*bad.jsonl"):
        silu.ppl(bad)
    with pytest.raises(neuronlab.Error, match="unknown weight 'w_q'"):
        silu.weight("w_q", 0)
    with pytest.raises(neuronlab.Error, match="nowhere"):
        neuronlab.Model(tmp_path / "nowhere")
    # the model still works after every error, with no hook left behind
    assert np.array_equal(silu.run(ids), silu.run(ids, hooks={}))
    assert silu.ppl.__self__ is silu


def test_weights(silu):
    w = silu.w_out(3)
    assert w.shape == (silu.d_model, silu.d_ff) and w.dtype == np.float32
    assert silu.w_u.shape == (silu.vocab_size, silu.d_model)
    # ffn_out = a · W_outᵀ (the definition of a neuron's output vector)
    ids = silu.tokenize("A small test.")
    a = silu.record(ids, layers=3)
    out = silu.record(ids, layers=3, point="ffn_out")
    np.testing.assert_allclose(a @ w.T, out, atol=1e-4)


def test_compute_bf16_is_close_to_f32():
    """compute="bf16": the same NLLs within bf16's precision (f32 accumulation), not identical;
    on a CPU without AVX512-BF16 a warning and exactly f32."""
    f32 = neuronlab.Model(SILU)
    try:
        ids = f32.tokenize("The quick brown fox jumps over the lazy dog, then runs into the forest.")
        want = f32.nll(ids)
    finally:
        f32.close()
    cpu = open("/proc/cpuinfo").read().split()
    if "avx512_bf16" in cpu:
        m = neuronlab.Model(SILU, compute="bf16")
    else:
        with pytest.warns(UserWarning, match="no AVX512-BF16"):
            m = neuronlab.Model(SILU, compute="bf16")
    try:
        got = m.nll(ids)
        if m.compute == "bf16":
            assert not np.array_equal(got, want)
            assert abs(got.mean() - want.mean()) <= 1e-2 * abs(want.mean())
            np.testing.assert_allclose(got, want, atol=0.05)
        else:
            assert np.array_equal(got, want)
    finally:
        m.close()
    with pytest.raises(neuronlab.Error, match="compute must be f32 or bf16"):
        neuronlab.Model(SILU, compute="fp8")
