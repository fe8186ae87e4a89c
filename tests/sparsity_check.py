#!/usr/bin/env python3
"""sparsity_check.py ACTS.h5 MODEL_DIR RESULTS.db RUN_ID — an independent numpy reimplementation
of `neuronlab sparsity` (definitions in analyses/sparsity.h) checked against one run's tables.

For every layer and label ('' = all tokens): exact fractions r < 0.1 / r < 0.2 / r = 0, mean r,
the per-neuron frequencies, mean and max |a|, dead and resident counts, the pooled layer -1
rows, and CETT: ε* against an exhaustive sweep over every distinct output norm (per token the
ratio ‖tail‖/‖FFN‖ after each neuron in (n, index) order, then all events sorted by n).
Needs h5py and numpy (Debian: python3-h5py). Prints PASS/FAIL lines; exit status 1 on failure.
"""
import json
import sqlite3
import struct
import sys

import h5py
import numpy as np

acts, model, dbp, run = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fails = []


def check(ok, what):
    if not ok:
        fails.append(what)


def down_proj(model_dir, layer):
    """W_out (D, F) float32 and b_out or None, from a Llama or GPT-2 safetensors folder or a
    llama2.c checkpoint (.bin: header of 7 int32, then the f32 tensors in a fixed order)."""
    if model_dir.endswith(".bin"):
        raw = open(model_dir, "rb").read()
        D, F, L, H, Hk, V, _ = struct.unpack("7i", raw[:28])
        V, Dh = abs(V), D // H
        w = np.frombuffer(raw[28:], dtype=np.float32)
        off = V * D + L * D + L * D * H * Dh + 2 * L * D * Hk * Dh + L * H * Dh * D + L * D + L * F * D  # … w1, then w2
        return w[off + layer * D * F: off + (layer + 1) * D * F].reshape(D, F), None
    raw = open(f"{model_dir}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    base = 8 + n

    def get(name):
        if name not in hdr:
            return None
        t = hdr[name]
        o0, o1 = t["data_offsets"]
        assert t["dtype"] == "F32"
        return np.frombuffer(raw[base + o0:base + o1], dtype=np.float32).reshape(t["shape"])

    w = get(f"model.layers.{layer}.mlp.down_proj.weight")
    if w is not None:
        return w, get(f"model.layers.{layer}.mlp.down_proj.bias")
    w = get(f"transformer.h.{layer}.mlp.c_proj.weight")  # GPT-2 Conv1D: (F, D)
    return w.T, get(f"transformer.h.{layer}.mlp.c_proj.bias")


f = h5py.File(acts, "r")
off = f["doc_offsets"][:]
labels = [x.decode() if isinstance(x, bytes) else x for x in f["doc_labels"][:]]
N = int(off[-1])
tok_label = np.empty(N, dtype=object)
for d in range(len(labels)):
    tok_label[off[d]:off[d + 1]] = labels[d]
groups = {"": np.ones(N, bool)}
for lab in sorted(set(labels)):
    if lab:
        groups[lab] = tok_label == lab
layers = sorted(int(x) for x in f["layers"])

db = sqlite3.connect(dbp)
params = json.loads(db.execute("SELECT params FROM runs WHERE id = ?", (run,)).fetchone()[0])
taus = params["thresholds"]
targets = params["cett"] or []


def q1(sql, *args):
    r = db.execute(sql, args).fetchone()
    return None if r is None else r[0]


pooled = {g: {"value": [0, 0, 0, 0, 0.0], "norm": [0, 0, 0, 0, 0.0]} for g in groups}  # pairs, zero, <.1, <.2, Σr
dead_all = {g: 0 for g in groups}
res_all = {g: 0 for g in groups}
cett_cases = cett_global = 0
for l in layers:
    a = f[f"layers/{l}/ffn_act"][:].astype(np.float32)
    wn = f[f"layers/{l}/w_out_norm"][:].astype(np.float32)
    v = np.abs(a)
    n = v * wn[None, :]  # float32 products, as the C code
    r = {}
    for name, x in (("value", v), ("norm", n)):
        mx = x.max(axis=1, keepdims=True)
        r[name] = np.where(mx > 0, x / np.where(mx > 0, mx, np.float32(1)), np.float32(0)).astype(np.float32)
    for g, sel in groups.items():
        T = int(sel.sum())
        for name in ("value", "norm"):
            rr = r[name][sel].astype(np.float64)
            P = rr.size
            row = db.execute("SELECT tokens, frac_zero, frac_below_0_1, frac_below_0_2, mean_r, dead, resident FROM sparsity_layer "
                             "WHERE run_id = ? AND layer = ? AND label = ? AND indicator = ?", (run, l, g, name)).fetchone()
            check(row is not None, f"layer {l} label '{g}' {name}: row missing")
            if row is None:
                continue
            check(row[0] == T, f"layer {l} '{g}' {name}: tokens {row[0]} vs {T}")
            check(row[1] == (rr == 0).sum() / P, f"layer {l} '{g}' {name}: frac_zero")
            check(row[2] == (rr < 0.1).sum() / P, f"layer {l} '{g}' {name}: frac_below_0_1 {row[2]} vs {(rr < 0.1).sum() / P}")
            check(row[3] == (rr < 0.2).sum() / P, f"layer {l} '{g}' {name}: frac_below_0_2")
            check(abs(row[4] - rr.mean()) < 1e-9, f"layer {l} '{g}' {name}: mean_r {row[4]} vs {rr.mean()}")
            p = pooled[g][name]
            p[0] += P; p[1] += (rr == 0).sum(); p[2] += (rr < 0.1).sum(); p[3] += (rr < 0.2).sum(); p[4] += rr.sum()
        # neurons (value indicator)
        rv = r["value"][sel].astype(np.float64)
        dead = rv.max(axis=0) <= params["dead_threshold"]
        resident = (rv > params["resident_threshold"]).sum(axis=0) / T >= params["resident_frac"] - 1e-12
        dead_all[g] += int(dead.sum())
        res_all[g] += int(resident.sum())
        check(q1("SELECT dead FROM sparsity_layer WHERE run_id = ? AND layer = ? AND label = ? AND indicator = 'value'", run, l, g)
              == dead.sum(), f"layer {l} '{g}': dead")
        check(q1("SELECT resident FROM sparsity_layer WHERE run_id = ? AND layer = ? AND label = ? AND indicator = 'value'", run, l, g)
              == resident.sum(), f"layer {l} '{g}': resident")
        rows = db.execute("SELECT neuron, mean_abs, max_abs, dead, resident FROM neurons WHERE run_id = ? AND layer = ? AND label = ? "
                          "ORDER BY neuron", (run, l, g)).fetchall()
        if rows:
            got = np.array(rows, dtype=np.float64)
            va = v[sel].astype(np.float64)
            check(np.allclose(got[:, 1], va.mean(axis=0), rtol=1e-12, atol=0), f"layer {l} '{g}': mean_abs")
            check(np.array_equal(got[:, 2], va.max(axis=0)), f"layer {l} '{g}': max_abs")
            check(np.array_equal(got[:, 3], dead) and np.array_equal(got[:, 4], resident), f"layer {l} '{g}': neuron flags")
            for tau in taus:
                fq = np.array([x[0] for x in db.execute(
                    "SELECT freq FROM neuron_freq WHERE run_id = ? AND layer = ? AND label = ? AND threshold = ? ORDER BY neuron",
                    (run, l, g, tau))])
                check(np.array_equal(fq, (rv > tau).sum(axis=0) / T), f"layer {l} '{g}': freq at {tau}")
    # CETT brute force
    if not targets:
        continue
    W, b = down_proj(model, l)
    W = W.astype(np.float64)
    ffn = a.astype(np.float64) @ W.T + (b.astype(np.float64) if b is not None else 0)
    ffn_norm = np.linalg.norm(ffn, axis=1)
    ev_n, ev_d, ev_tok = [], [], []
    for t in range(N):
        pos = np.nonzero(n[t] > 0)[0]
        order = pos[np.lexsort((pos, n[t][pos]))]
        contrib = a[t, order].astype(np.float64)[:, None] * W[:, order].T
        tails = np.linalg.norm(np.cumsum(contrib, axis=0), axis=1)
        ratio = np.concatenate([[0.0], tails / ffn_norm[t]]) if ffn_norm[t] > 0 else np.zeros(len(order) + 1)
        ev_n.append(n[t][order]); ev_d.append(np.diff(ratio)); ev_tok.append(np.full(len(order), t))
    ev_n = np.concatenate(ev_n).astype(np.float64); ev_d = np.concatenate(ev_d); ev_tok = np.concatenate(ev_tok)
    for g, sel in groups.items():
        m = sel[ev_tok]
        en, ed = ev_n[m], ev_d[m]
        o = np.argsort(en, kind="stable")
        en, ed = en[o], ed[o]
        ntok = int((ffn_norm[sel] > 0).sum())
        cand, first = np.unique(en, return_index=True)
        csum = np.concatenate([[0.0], np.cumsum(ed)])
        cett_at = csum[first] / ntok  # CETT(c): events with n < c
        cett_inf = csum[-1] / ntok
        zeros = int((n[sel] == 0).sum())
        pairs = int(sel.sum()) * n.shape[1]
        for tgt in targets:
            row = db.execute("SELECT epsilon, sparsity, cett, tokens FROM sparsity_cett WHERE run_id = ? AND layer = ? AND label = ? "
                             "AND abs(target - ?) < 1e-12", (run, l, g, tgt)).fetchone()
            check(row is not None, f"layer {l} '{g}' CETT {tgt}: row missing")
            if row is None:
                continue
            eps, sp, ce, tk = row
            cett_cases += 1
            check(tk == ntok, f"layer {l} '{g}' CETT {tgt}: tokens")
            ok_idx = np.nonzero(cett_at <= tgt)[0]
            if cett_inf <= tgt:
                check(eps is None and sp == 1.0, f"layer {l} '{g}' CETT {tgt}: CETT(inf) <= target")
                cett_global += 1
                continue
            k = np.searchsorted(cand, eps)
            if k >= len(cand) or cand[k] != eps:
                check(False, f"layer {l} '{g}' CETT {tgt}: epsilon {eps} is not a distinct output norm")
                continue
            nxt = cett_at[k + 1] if k + 1 < len(cand) else cett_inf
            check(abs(cett_at[k] - ce) < 1e-9, f"layer {l} '{g}' CETT {tgt}: CETT {ce} vs brute force {cett_at[k]}")
            check(cett_at[k] <= tgt + 1e-9 and nxt > tgt - 1e-9, f"layer {l} '{g}' CETT {tgt}: not a crossing")
            check(sp == (zeros + first[k]) / pairs, f"layer {l} '{g}' CETT {tgt}: sparsity {sp} vs {(zeros + first[k]) / pairs}")
            cett_global += int(ok_idx.size > 0 and ok_idx[-1] == k)

# layer -1
for g in groups:
    for name in ("value", "norm"):
        p = pooled[g][name]
        row = db.execute("SELECT frac_zero, frac_below_0_1, frac_below_0_2, mean_r, dead, resident, neurons FROM sparsity_layer "
                         "WHERE run_id = ? AND layer = -1 AND label = ? AND indicator = ?", (run, g, name)).fetchone()
        check(row is not None and row[0] == p[1] / p[0] and row[1] == p[2] / p[0] and row[2] == p[3] / p[0]
              and abs(row[3] - p[4] / p[0]) < 1e-9, f"layer -1 '{g}' {name}")
        if name == "value" and row is not None:
            check(row[4] == dead_all[g] and row[5] == res_all[g] and row[6] == len(layers) * f.attrs["d_ff"], f"layer -1 '{g}' counts")

name = f"{len(layers)} layers x {len(groups)} labels"
if fails:
    print(f"FAIL numpy reference ({name}): {len(fails)} mismatches")
    for x in fails[:15]:
        print("   ", x)
    sys.exit(1)
print(f"PASS numpy reference agrees on fractions, mean r, frequencies, dead/resident, pooled rows ({name})")
if targets:
    print(f"PASS numpy brute-force CETT: {cett_cases} (layer, label, target) cases are crossings with matching CETT and sparsity; "
          f"{cett_global} equal the largest distinct n with CETT <= target")
