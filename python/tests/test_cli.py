"""The package computes what the CLI computes: ppl, record and prune on stories260K and the
zoo's silu model; a hook zeroing an ability's neurons equals `neuronlab prune --neurons`."""
import json
import sqlite3

import h5py
import numpy as np
import pytest

from conftest import SILU, cli, small_eval


def test_ppl_equals_cli(case):
    m, path, data = case
    out = json.loads(cli("ppl", path, data, "--json"))
    r = m.ppl(data)
    assert r.tokens == out["tokens"]
    assert r.nll == pytest.approx(out["nll"], abs=1e-6)
    assert r.ppl == pytest.approx(out["ppl"], rel=1e-6)
    for lab, s in out["by_label"].items():
        assert r.by_label[lab]["tokens"] == s["tokens"]
        assert r.by_label[lab]["nll"] == pytest.approx(s["nll"], abs=1e-6)
    for d, s in zip(out["docs"], zip(r.doc_nll, r.doc_tokens)):
        assert s[1] == d["score"]["tokens"]
        assert s[0] / s[1] == pytest.approx(d["score"]["nll"], abs=1e-6)


def test_record_equals_cli(case, tmp_path):
    m, path, data = case
    h5 = tmp_path / "acts.h5"
    cli("record", path, data, "-o", h5, "--layers", f"0,{m.n_layers - 1}")
    ds = m.dataset(data)
    with h5py.File(h5, "r") as f:
        off = f["doc_offsets"][:]
        assert np.array_equal(f["tokens"][:], np.concatenate([d.tokens for d in ds]))
        compared = 0
        for i, d in enumerate(ds):
            if len(d.tokens) > m.ctx:  # the CLI records it in sliding windows; the package runs one sequence
                continue
            compared += 1
            py = m.record(d.tokens, layers=[0, m.n_layers - 1])
            for j, l in enumerate([0, m.n_layers - 1]):
                c = f[f"layers/{l}/ffn_act"][off[i]:off[i + 1]]
                np.testing.assert_allclose(py[j], c, rtol=0, atol=1e-6)
        assert compared >= 6


def _cli_prune(path, data, neurons_csv, db):
    cli("prune", path, data, "--db", db, "--neurons", neurons_csv, "--seeds", "1")
    con = sqlite3.connect(db)
    rows = con.execute("SELECT label, nll, tokens FROM prune_effect WHERE control = 'ability'").fetchall()
    con.close()
    return {lab: (nll, n) for lab, nll, n in rows}


def test_prune_equals_cli(case, tmp_path):
    m, path, data = case
    rng = np.random.default_rng(7)
    pairs = sorted({(int(l), int(i)) for l, i in zip(rng.integers(0, m.n_layers, 40), rng.integers(0, m.d_ff, 40))})
    csv = tmp_path / "n.csv"
    csv.write_text("layer,neuron\n" + "".join(f"{l},{i}\n" for l, i in pairs))
    want = _cli_prune(path, data, csv, tmp_path / "r.db")
    base = m.ppl(data)
    m.prune(pairs)
    try:
        r = m.ppl(data)
    finally:
        m.prune(None)
    assert r.nll == pytest.approx(want[""][0], rel=1e-12)
    for lab, s in r.by_label.items():
        assert s["nll"] == pytest.approx(want[lab][0], rel=1e-12) and s["tokens"] == want[lab][1]
    assert r.nll != base.nll
    assert m.ppl(data).nll == base.nll  # prune(None) restores the model


def test_hook_zeroing_ability_neurons_equals_prune(silu, tmp_path):
    """The math neurons of an ability run, zeroed by a Python hook = `neuronlab prune --neurons`."""
    data = small_eval(tmp_path / "abil.jsonl", per_label=6, labels=("code", "ethics", "math", "writing"))
    db, h5 = tmp_path / "a.db", tmp_path / "a.h5"
    cli("record", SILU, data, "-o", h5, "--pool")
    cli("ability", h5, "--db", db)
    con = sqlite3.connect(db)
    top = con.execute("SELECT layer, neuron FROM ability_top WHERE ability = 'math' ORDER BY layer, neuron").fetchall()
    con.close()
    assert len(top) == 34 * silu.n_layers  # top 5% of 688 per layer
    csv = tmp_path / "math.csv"
    csv.write_text("layer,neuron\n" + "".join(f"{l},{i}\n" for l, i in top))
    want = _cli_prune(SILU, data, csv, db)
    by_layer = {}
    for l, i in top:
        by_layer.setdefault(l, []).append(i)

    def zero(view, info):
        view[:, by_layer.get(info.layer, [])] = 0

    r = silu.ppl(data, hooks={("ffn_act", None): zero})
    for lab, s in r.by_label.items():
        assert s["nll"] == pytest.approx(want[lab][0], rel=1e-12), lab
    assert r.by_label["math"]["nll"] > silu.ppl(data).by_label["math"]["nll"] + 0.05  # the math neurons matter for math


@pytest.mark.parametrize("layer,neuron,norm", [(0, 7, False), (5, 448, False), (3, 100, True)])
def test_attribute_equals_numpy(silu, tmp_path, layer, neuron, norm):
    """`neuronlab attribute` = W_U · W_out[:, i] (optionally times the final norm's weight) computed in
    numpy from the weights the package reads: the same top/bottom token ids in order, the same logits."""
    db = tmp_path / "attr.db"
    args = ["attribute", SILU, "--layer", layer, "--neuron", neuron, "--top", 15, "--db", db]
    cli(*(args + (["--norm-weight"] if norm else [])))
    con = sqlite3.connect(db)
    rows = con.execute("SELECT rank, token_id, logit FROM neuron_attribution WHERE layer = ? AND neuron = ? ORDER BY rank",
                       (layer, neuron)).fetchall()
    con.close()
    w = silu.w_out(layer)[:, neuron].astype(np.float64)
    if norm:
        w = w * silu.weight("final_norm").astype(np.float64)
    logits = silu.w_u.astype(np.float64) @ w
    order = np.argsort(-logits, kind="stable")
    up = {r: (t, x) for r, t, x in rows if r > 0}
    down = {-r: (t, x) for r, t, x in rows if r < 0}
    assert len(up) == 15 and len(down) == 15
    for k in range(15):
        for got, want_id in ((up[k + 1], order[k]), (down[k + 1], order[-1 - k])):
            assert got[1] == pytest.approx(logits[want_id], rel=1e-5, abs=1e-6)
            # ids agree unless two logits tie within float32 rounding
            assert got[0] == want_id or abs(logits[got[0]] - logits[want_id]) < 1e-5
