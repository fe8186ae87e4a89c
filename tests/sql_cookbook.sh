#!/usr/bin/env bash
# sql_cookbook.sh — every query of notebooks-data/sql/ returns the right values, against a results
# database built the way `make demo` builds one (record → sparsity → perturb → ability → overlap →
# prune, here on the fixture model tests/fixtures/hf/llama with 12 labelled documents).
# Each query's rows are checked against values computed independently of neuronlab's analyses:
#   sparsity queries   from the activation file itself (h5py/numpy): normalised indicators,
#                      fractions below 0.1, dead/resident counts, per-neuron frequencies, mean and
#                      max |a|, ‖W_out‖, quantiles (within the documented one-bin error), rankings;
#   ability/overlap    average precision recomputed from /pooled (ties as one step), layer
#                      best/mean/5‰ score, the top-5 neurons, the top-5% sets and their overlap;
#   perturb/prune      perplexities of the PyTorch reference (tests/reference/nlref.py) on the same
#                      documents, unmasked, with the lowest 50% |a| (or |a|·‖W_out‖) zeroed per
#                      token, and with each ability's recomputed top sets zeroed; random-control
#                      mean/sd from the seed rows;
#   experts            (a second database) the top expert per layer and label recounted from the
#                      routing `record` stores on the mixtral fixture;
#   moe_sweep          perplexities from `ppl --moe` (and the dense `ppl`) at the same K, router, fill;
#   expert_usage       the most used expert recounted from `record --moe`'s selections;
#   neurons            the top neurons by mean |a|, mean and max |a|, top context value, from the
#                      activation file;
#   runs               the six runs in order, all complete, naming the dataset and the file by
#                      canonical path, with content checksums recomputed here from their
#                      definition (results.h); runs_by_file groups the runs by those checksums.
# A query without a check fails, so a new cookbook query needs one here.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_sql.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(9)
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(30)], "label": ["code", "math"][i % 2]}) + "\n")
PY
if ! { "$nl" record tests/fixtures/hf/llama "$tmp/d.jsonl" -o "$tmp/a.h5" --pool --db "$tmp/r.db" &&
       "$nl" sparsity "$tmp/a.h5" --db "$tmp/r.db" && "$nl" perturb tests/fixtures/hf/llama "$tmp/d.jsonl" --ratios 0,0.5 --db "$tmp/r.db" &&
       "$nl" ability "$tmp/a.h5" --db "$tmp/r.db" && "$nl" overlap --db "$tmp/r.db" --scores latest &&
       "$nl" prune tests/fixtures/hf/llama "$tmp/d.jsonl" --db "$tmp/r.db" --scores latest; } > "$tmp/log" 2>&1; then
  echo "FAIL building the database for the cookbook:"; sed 's/^/    /' "$tmp/log" | tail -5; exit 0
fi
# the MoE and neuron tables go to a second database (the first one's runs are checked one by one):
# experts on the mixtral fixture (with the routing that `record` stores, to recount), a MoEfied
# llama swept and its usage (with `ppl --moe` and `record --moe` to recompute), and neuron pages
mx=tests/fixtures/hf/mixtral m=tests/fixtures/hf/llama
if ! { "$nl" record $mx "$tmp/d.jsonl" -o "$tmp/mx.h5" && "$nl" experts $mx "$tmp/d.jsonl" --db "$tmp/r2.db" &&
       "$nl" moefy $m "$tmp/d.jsonl" --experts 4 -o "$tmp/moe" &&
       "$nl" moe-sweep $m "$tmp/d.jsonl" --moe "$tmp/moe" --db "$tmp/r2.db" --k 1,2 --router sim --fill zero --no-recall &&
       "$nl" moe-usage $m "$tmp/d.jsonl" --moe "$tmp/moe" --db "$tmp/r2.db" --k 1 --router sim --fill mean &&
       "$nl" ppl $m "$tmp/d.jsonl" --json > "$tmp/ppl_dense.json" &&
       for k in 1 2; do "$nl" ppl $m "$tmp/d.jsonl" --moe "$tmp/moe" --k $k --router sim --fill zero --json > "$tmp/ppl_k$k.json" || exit 1; done &&
       "$nl" record $m "$tmp/d.jsonl" --moe "$tmp/moe" --k 1 --router sim --fill mean -o "$tmp/mu.h5" &&
       "$nl" record $m "$tmp/d.jsonl" -o "$tmp/s.h5" --stats --top-k 8 && "$nl" neurons "$tmp/s.h5" --db "$tmp/r2.db" &&
       "$nl" lens $m "$tmp/d.jsonl" --db "$tmp/r2.db" && "$nl" attribute $m --layer 1 --neuron 5 --top 5 --db "$tmp/r2.db"; } > "$tmp/log" 2>&1; then
  echo "FAIL building the MoE and neuron database for the cookbook:"; sed 's/^/    /' "$tmp/log" | tail -5; exit 0
fi
cat > "$tmp/check.py" <<'PY'
# values of every cookbook query against independent recomputations (see sql_cookbook.sh)
import json, math, os, sqlite3, sys, traceback
root, db, h5, jsonl, tmpdir = sys.argv[1:6]
try:
    import numpy as np
    import h5py
    import torch
except ImportError as e:
    print(f"SKIP sql cookbook values: {e} (needs Debian's python3-numpy, python3-h5py, python3-torch)")
    sys.exit(0)
sys.path.insert(0, os.path.join(root, "tests", "reference"))
import nlref

con = sqlite3.connect(db)
f = h5py.File(h5, "r")
L, F = int(f.attrs["n_layers"]), int(f.attrs["d_ff"])
off = f["doc_offsets"][:]
labels = [x.decode() if isinstance(x, bytes) else x for x in f["doc_labels"][:]]
D = len(labels)
tok_label = np.repeat(np.array(labels, dtype=object), np.diff(off))
act = [f[f"layers/{l}/ffn_act"][:].astype(np.float32) for l in range(L)]
wn = [f[f"layers/{l}/w_out_norm"][:].astype(np.float32) for l in range(L)]
pooled = [f[f"pooled/{l}/mean_abs"][:].astype(np.float64) for l in range(L)]
docs = [json.loads(line) for line in open(jsonl)]
abilities = sorted(set(labels) - {""})

def rnorm(x):  # per token: x / max over the layer's neurons (float32 quotient), 0 when the max is 0
    m = x.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(m > 0, x / np.where(m > 0, m, 1), 0).astype(np.float32)
    return r
rv = [rnorm(np.abs(a)) for a in act]
rn = [rnorm(np.abs(a) * w[None, :]) for a, w in zip(act, wn)]
def sel(l, lab):  # rows of label lab ('' = all)
    m = np.ones(len(tok_label), bool) if lab == "" else tok_label == lab
    return m

def ap(v, y):  # average precision with tied values as one step (analyses/ability.h)
    order = np.argsort(-v, kind="stable"); v, y = v[order], y[order]
    npos = y.sum(); s = 0.0; tp = 0; seen = 0; i = 0
    while i < len(v):
        j = i
        while j < len(v) and v[j] == v[i]: j += 1
        tp_new = tp + y[i:j].sum(); seen = j
        s += (tp_new - tp) / npos * (tp_new / seen); tp = tp_new; i = j
    return s
score = {a: np.array([[ap(pooled[l][:, i], np.array([lb == a for lb in labels], float)) for i in range(F)] for l in range(L)]) for a in abilities}
k_layer = max(1, int(math.floor(0.05 * F + 1e-9)))
M64 = (1 << 64) - 1
def mix64(z):  # splitmix64's finaliser (nl_mix64)
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64; z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)
def tie_hash(seed, l, i): return mix64(seed ^ mix64((l << 32) | i))
def margin(a, l, i):  # the tie-break key (analyses/ability.h): mean v on a's documents - on the others
    y = np.array([lb == a for lb in labels]); k = np.array([lb != "" for lb in labels]); v = pooled[l][:, i]
    return float(np.float32(v[y & k].mean() - v[~y & k].mean()))
def top_sets(a):  # per layer: top k by score desc, then margin desc, then the seeded hash (seed 0)
    key = lambda l, i: (-np.float32(score[a][l][i]), -margin(a, l, i), tie_hash(0, l, i))
    return {(l, int(i)) for l in range(L) for i in sorted(range(F), key=lambda i: key(l, i))[:k_layer]}
tops = {a: top_sets(a) for a in abilities}

# perplexities of the fixture model through the PyTorch reference, FFN activations masked on demand
cfg, tensors = nlref.load_folder(os.path.join(root, "tests/fixtures/hf/llama"))
def ppl_by_label(mask=None):  # mask(l, fa) -> fa; returns {label: ppl} with '' = all
    nll = {}; cnt = {}
    for d, row in zip(labels, docs):
        t = row["tokens"]
        o = nlref.forward(cfg, tensors, t) if mask is None else masked_forward(t, mask)
        lp = torch.log_softmax(o["logits"].double(), dim=-1)
        s = -sum(lp[p, t[p + 1]].item() for p in range(len(t) - 1))
        for key in ("", d):
            nll[key] = nll.get(key, 0.0) + s; cnt[key] = cnt.get(key, 0) + len(t) - 1
    return {k: math.exp(nll[k] / cnt[k]) for k in nll}, cnt
def masked_forward(t, mask):  # nlref's forward with mask(l, a) applied to the down projection's input a
    lin = nlref.linear; state = {"l": 0}
    def patched(x, w, b=None):
        if w.shape[1] == F and w.shape[0] == cfg["hidden_size"]:  # the down projection: x is a (T, F)
            x = mask(state["l"], x); state["l"] += 1
        return lin(x, w, b)
    nlref.linear = patched
    try: return nlref.forward(cfg, tensors, t)
    finally: nlref.linear = lin
def lowest_k(metric, k):
    def m(l, fa):
        ind = fa.abs() if metric == "value" else fa.abs() * torch.tensor(wn[l])
        out = fa.clone()
        for r in range(fa.shape[0]):
            idx = sorted(range(F), key=lambda i: (ind[r, i].item(), i))[:k]
            out[r, idx] = 0
        return out
    return m
def prune(a):
    def m(l, fa):
        out = fa.clone()
        out[:, [i for (ll, i) in tops[a] if ll == l]] = 0
        return out
    return m
base, cnt = ppl_by_label()
kmask = int(math.floor(0.5 * F))
masked = {m: ppl_by_label(lowest_k(m, kmask))[0] for m in ("value", "norm")}
pruned = {a: ppl_by_label(prune(a))[0] for a in abilities}

def close(x, y, tol, what):
    assert x is not None and abs(x - y) <= tol, f"{what}: query {x}, expected {y} (tolerance {tol})"
def rows(q, c=None):
    cur = (c or con).execute(open(q).read()); cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]

def fnv_sum_file(path, h):
    """The documented checksum part of one file (results.h, nl_results_content_sum)."""
    data = open(path, "rb").read()
    S, M = len(data), 1 << 20
    head, tail = min(S, M), max(M, S - M)
    def fnv(h, b):
        for x in b:
            h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return h
    h = fnv(h, S.to_bytes(8, "little"))
    h = fnv(h, data[:head])
    if tail < S: h = fnv(h, data[tail:])
    return h, S
def fnv_sum(path):
    h, size = 0xcbf29ce484222325, 0
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith(".") and (n == "config.json" or n.endswith(".safetensors")))
        for n in names:
            for x in n.encode() + b"\0":
                h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
            h, s = fnv_sum_file(os.path.join(path, n), h)
            size += s
    else:
        h, size = fnv_sum_file(path, h)
    return f"fnv1a64:{h:016x}:{size}"
model_dir = os.path.realpath(os.path.join(root, "tests/fixtures/hf/llama"))
files = {model_dir: fnv_sum(model_dir), os.path.realpath(jsonl): fnv_sum(jsonl), os.path.realpath(h5): fnv_sum(h5)}
def check_runs(R):
    assert [r["kind"] for r in R] == ["record", "sparsity", "perturb", "ability", "overlap", "prune"], [r["kind"] for r in R]
    assert all(r["status"] == "complete" and r["ended_at"] for r in R), "a run is not complete"
    assert R[0]["dataset"] == os.path.realpath(jsonl) and R[0]["source"] == os.path.realpath(h5), (R[0]["dataset"], R[0]["source"])
    assert R[0]["model"] == model_dir, R[0]["model"]
    n = 0
    for r in R:
        for k in ("model", "dataset", "source"):
            if r[k] in files:
                assert r[k + "_sum"] == files[r[k]], f"run {r['id']} {k}_sum {r[k + '_sum']} != {files[r[k]]}"
                n += 1
            else:
                assert r[k + "_sum"] is None, f"run {r['id']} {k} '{r[k]}' is no file but has a checksum"
    assert n >= 9, n
    return f"{len(R)} runs in order, all complete, canonical paths, {n} checksums recomputed"
def check_runs_by_file(R):
    want = {}
    for rid, kind, *v in con.execute("SELECT id, kind, model, dataset, source FROM runs ORDER BY id"):
        for role, p in sorted(zip(("model", "dataset", "source"), v), key=lambda x: x[0]):
            if p in files: want.setdefault(files[p], []).append(f"{rid}:{kind}:{role}")
    got = {r["checksum"]: r for r in R}
    assert set(got) == set(want) and len(want) == 3, (sorted(got), sorted(want))
    for c, uses in want.items():
        assert sorted(got[c]["runs"].split()) == sorted(uses), (c, got[c]["runs"], uses)
        assert got[c]["uses"] == len(uses) and got[c]["paths"] == 1 and files[got[c]["path"]] == c, got[c]
    return f"{len(R)} files (model, dataset, activations) with their runs, checksums recomputed"
def frac_below(r, m): return float((r[m] < np.float32(0.1)).mean())
def check_layer_sparsity(R):
    assert [r["layer"] for r in R] == list(range(L)) + [-1]
    for r in R:
        ls = range(L) if r["layer"] < 0 else [r["layer"]]
        m = sel(0, "")
        v = np.concatenate([rv[l][m] for l in ls]); n = np.concatenate([rn[l][m] for l in ls])
        close(r["value_below_0_1"], float((v < np.float32(0.1)).mean()), 6e-5, f"layer {r['layer']} value_below_0_1")
        close(r["norm_below_0_1"], float((n < np.float32(0.1)).mean()), 6e-5, f"layer {r['layer']} norm_below_0_1")
        assert r["neurons"] == F * len(ls), r["neurons"]
        dead = sum(int((rv[l].max(axis=0) <= 0.01).sum()) for l in ls)
        res = sum(int(((rv[l] > np.float32(0.1)).mean(axis=0) >= 0.9).sum()) for l in ls)
        assert (r["dead"], r["resident"]) == (dead, res), f"layer {r['layer']} dead/resident {r['dead']},{r['resident']} != {dead},{res}"
        assert r["cett_0_2_sparsity"] is not None and 0 <= r["cett_0_2_sparsity"] <= 1
    return f"{len(R)} layers: fractions, dead, resident recomputed from the HDF5 file"
def check_label_sparsity(R):
    assert [r["label"] for r in R] == ["(all)"] + abilities, [r["label"] for r in R]
    for r in R:
        lab = "" if r["label"] == "(all)" else r["label"]; m = sel(0, lab)
        assert r["tokens"] == int(m.sum()), (r["tokens"], int(m.sum()))
        v = np.concatenate([rv[l][m] for l in range(L)])
        close(r["value_below_0_1"], float((v < np.float32(0.1)).mean()), 6e-5, f"{r['label']} value_below_0_1")
        close(r["mean_r"], float(v.astype(np.float64).mean()), 6e-5, f"{r['label']} mean_r")
    return f"{len(R)} labels: token counts and fractions recomputed"
def check_quantiles(R):
    assert [r["layer"] for r in R] == list(range(L)) + [-1]
    for r in R:
        ls = range(L) if r["layer"] < 0 else [r["layer"]]
        v = np.sort(np.concatenate([rv[l].ravel() for l in ls]).astype(np.float64))
        for col, q in (("q10", .1), ("q25", .25), ("median", .5), ("q90", .9), ("q99", .99)):
            exact = v[min(len(v) - 1, max(0, int(math.ceil(q * len(v))) - 1))]
            close(r[col], exact, exact / 32 + 2e-6, f"layer {r['layer']} {col}")
    return f"{len(R)} layers x 5 quantiles within one histogram bin of the exact order statistic"
def freq(l): return (rv[l] > np.float32(0.1)).mean(axis=0)
def check_most_active(R):
    for l in range(L):
        fr = freq(l); want = sorted(range(F), key=lambda i: (-fr[i], i))[:10]
        got = [r for r in R if r["layer"] == l]
        assert [r["neuron"] for r in got] == want, f"layer {l}: neurons {[r['neuron'] for r in got]} != {want}"
        for r in got:
            i = r["neuron"]
            close(r["freq"], fr[i], 6e-5, f"layer {l} neuron {i} freq")
            close(r["mean_abs"], float(np.abs(act[l][:, i]).astype(np.float64).mean()), 1e-5 + 1e-4 * abs(r["mean_abs"]), f"layer {l} neuron {i} mean_abs")
            close(r["w_out_norm"], float(wn[l][i]), 6e-5, f"layer {l} neuron {i} w_out_norm")
            assert r["resident"] == int(fr[i] >= 0.9)
    return f"{len(R)} rows: ranking, frequencies, mean |a|, ||W_out|| recomputed"
def check_least_active(R):
    for l in range(L):
        fr = freq(l); mx = np.abs(act[l]).max(axis=0)
        want = sorted(range(F), key=lambda i: (fr[i], mx[i], i))[:10]
        got = [r for r in R if r["layer"] == l]
        assert [r["neuron"] for r in got] == want, f"layer {l}: neurons {[r['neuron'] for r in got]} != {want}"
        for r in got:
            i = r["neuron"]
            close(r["freq"], fr[i], 6e-6, f"layer {l} neuron {i} freq")
            close(r["max_abs"], float(mx[i]), 6e-6 + 1e-5 * float(mx[i]), f"layer {l} neuron {i} max_abs")
            assert r["dead"] == int(rv[l][:, i].max() <= 0.01)
    return f"{len(R)} rows: ranking, frequencies, max |a| recomputed"
def check_ability_by_layer(R):
    assert len(R) == len(abilities) * (L + 1)
    for r in R:
        s = score[r["ability"]]; v = s.ravel() if r["layer"] < 0 else s[r["layer"]]
        n_pos = sum(lb == r["ability"] for lb in labels)
        close(r["baseline"], n_pos / D, 6e-5, f"{r['ability']} baseline")
        close(r["best"], float(v.max()), 6e-5, f"{r['ability']} layer {r['layer']} best")
        close(r["mean"], float(v.mean()), 6e-5, f"{r['ability']} layer {r['layer']} mean")
        close(r["top_5permille"], float(np.sort(v)[::-1][int(math.ceil(0.005 * len(v))) - 1]), 6e-5, f"{r['ability']} layer {r['layer']} top_5permille")
    return f"{len(R)} rows: average precision recomputed from /pooled"
def check_ability_top(R):
    for a in abilities:
        flat = sorted(((-score[a][l][i], l, i) for l in range(L) for i in range(F)))[:5]
        got = [r for r in R if r["ability"] == a]
        assert [(r["layer"], r["neuron"]) for r in got] == [(l, i) for _, l, i in flat], f"{a}: top 5 differ"
        for r, (s, l, i) in zip(got, flat):
            close(r["score"], -s, 6e-5, f"{a} {l}/{i} score")
            close(r["active_freq_0_1"], float(freq(l)[i]), 6e-5, f"{a} {l}/{i} active_freq_0_1")
    return f"{len(R)} rows: ranks, scores, activity recomputed"
def check_overlap(R):
    pairs = [(a, b) for a in abilities for b in abilities if a < b]
    assert sorted((r["a"], r["b"]) for r in R) == pairs, [(r["a"], r["b"]) for r in R]
    for r in R:
        A, B = tops[r["a"]], tops[r["b"]]
        assert (r["shared"], r["size_a"]) == (len(A & B), len(A)), f"{r['a']}/{r['b']}: {r['shared']}/{r['size_a']} != {len(A & B)}/{len(A)}"
        close(r["jaccard"], len(A & B) / len(A | B), 6e-5, "jaccard")
        close(r["random_shared_of_a"], k_layer / F, 6e-5, "baseline")
        e = L * k_layer * k_layer / F
        close(r["random_jaccard"], e / (2 * L * k_layer - e), 6e-5, "baseline jaccard")
    return f"{len(R)} pairs: top-5% sets rebuilt from recomputed scores"
def check_perturb_table(R):
    assert [r["ratio"] for r in R] == [0.0, 0.5]
    r0, r5 = R
    assert (r0["masked"], r5["masked"]) == (0, kmask), (r0["masked"], r5["masked"])
    for m in ("value", "norm", "random"): close(r0["ppl_" + m], base[""], 1e-4 * base[""], f"ratio 0 ppl_{m} vs PyTorch")
    for m in ("value", "norm"): close(r5["ppl_" + m], masked[m][""], 1e-3 * masked[m][""], f"ratio 0.5 ppl_{m} vs PyTorch")
    return f"ppl {base['']:.4f} unmasked, {masked['value']['']:.4f} / {masked['norm']['']:.4f} masked: PyTorch reference"
def check_perturb_by_label(R):
    assert len(R) == 2 * (1 + len(abilities))
    for r in R:
        lab = "" if r["label"] == "(all)" else r["label"]
        want = 0.0 if r["ratio"] == 0 else masked["norm"][lab] / base[lab] - 1
        close(r["rel_increase"], want, 2e-4, f"{r['label']} ratio {r['ratio']}")
    return f"{len(R)} rows: relative increase against PyTorch masked perplexities"
def random_stats(a, lab):
    x = [v for (v,) in con.execute("SELECT rel_change FROM prune_effect WHERE run_id = (SELECT max(id) FROM runs WHERE kind = 'prune') AND pruned = ? AND control = 'random' AND label = ?", (a, lab))]
    return float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
def check_prune_matrix(R):
    assert len(R) == len(abilities) * (1 + len(abilities))
    for r in R:
        lab = "" if r["evaluated"] == "all" else r["evaluated"]
        want = pruned[r["pruned"]][lab] / base[lab] - 1
        close(r["change_pct"], 100 * want, 0.02, f"{r['pruned']} on {r['evaluated']} vs PyTorch")
        mu, sd = random_stats(r["pruned"], lab)
        close(r["random_pct"], 100 * mu, 0.006, "random mean"); close(r["random_sd_pct"], 100 * sd, 0.006, "random sd")
        close(r["excess_pct"], r["change_pct"] - r["random_pct"], 0.02, "excess")
        # the ability run has no --split: scored on the documents the sets were chosen on
        assert (r["eval_set"], r["eval_docs"], r["eval_file"]) == ("selection", D, None), (r["eval_set"], r["eval_docs"], r["eval_file"])
    return f"{len(R)} cells: pruned perplexities from PyTorch, random control from its seed rows; eval_set {R[0]['eval_set']} of {R[0]['eval_docs']} documents"
def check_prune_specificity(R):
    assert [r["pruned"] for r in R] == abilities
    for r in R:
        a = r["pruned"]
        close(r["own_pct"], 100 * (pruned[a][a] / base[a] - 1), 0.02, f"{a} own")
        others = [pruned[a][b] / base[b] - 1 for b in abilities if b != a]
        close(r["others_pct"], 100 * float(np.mean(others)), 0.02, f"{a} others")
        mu, sd = random_stats(a, a)
        close(r["random_own_pct"], 100 * mu, 0.006, "random own")
        assert (r["eval_set"], r["eval_docs"]) == ("selection", D), (r["eval_set"], r["eval_docs"])
    return f"{len(R)} abilities: own and others' change from PyTorch"

# ---- the second database: experts, moe_sweep, expert_usage, neurons ----
con2 = sqlite3.connect(os.path.join(tmpdir, "r2.db"))
def tok_labels(g):
    o = g["doc_offsets"][:]; lab = [x.decode() if isinstance(x, bytes) else x for x in g["doc_labels"][:]]
    return np.repeat(np.array(lab, dtype=object), np.diff(o))
def check_expert_load_by_label(R):  # recount from the routing record stores (layers/L/experts: k experts per token)
    g = h5py.File(os.path.join(tmpdir, "mx.h5"), "r"); tl = tok_labels(g); E = int(g.attrs["n_experts"]); n = 0
    for l in range(int(g.attrs["n_layers"])):
        ex = g[f"layers/{l}/experts"][:]
        allc = np.bincount(ex.ravel(), minlength=E)
        for lab in sorted(set(tl) - {""}):
            c = np.bincount(ex[tl == lab].ravel(), minlength=E); e = int(np.argmax(c))  # argmax: the lowest id on ties
            r = [r for r in R if r["layer"] == l and r["label"] == lab]
            assert len(r) == 1 and r[0]["expert"] == e and r[0]["tokens"] == c[e], (l, lab, r, c)
            close(r[0]["share_pct"], 100 * c[e] / (tl == lab).sum(), 0.006, f"layer {l} {lab} share")
            close(r[0]["all_tokens_pct"], 100 * allc[e] / len(tl), 0.006, f"layer {l} {lab} all-token share"); n += 1
    assert n == len(R), (n, len(R))
    return f"{n} rows: the top expert per layer and label and its shares recounted from record's routing"
def check_moe_sweep_tradeoff(R):  # the same perplexities from `ppl --moe` and the dense `ppl`
    dense = json.load(open(os.path.join(tmpdir, "ppl_dense.json")))["ppl"]
    assert [(r["router"], r["fill"], r["k"]) for r in R] == [("sim", "zero", 1), ("sim", "zero", 2)], R
    for r in R:
        p = json.load(open(os.path.join(tmpdir, f"ppl_k{r['k']}.json")))["ppl"]
        close(r["ppl"], p, 1e-4 * p, f"k {r['k']} ppl"); close(r["change_vs_dense_pct"], 100 * (p / dense - 1), 0.006, f"k {r['k']} change")
        close(r["k_pct"], 100 * r["k"] / 4, 0.05, "k_pct")
    assert R[0]["ffn_frac"] < R[1]["ffn_frac"] < 1, R
    return f"{len(R)} rows: ppl and change vs dense equal ppl --moe ({R[0]['ppl']}, {R[1]['ppl']}) and dense ppl ({dense:.4f})"
def check_expert_usage_by_label(R):  # recount from record --moe's selections (layers/L/moe_experts)
    g = h5py.File(os.path.join(tmpdir, "mu.h5"), "r"); tl = tok_labels(g); n = 0
    for l in sorted({r["layer"] for r in R}):
        sel = g[f"layers/{l}/moe_experts"][:]
        for lab in sorted(set(tl) - {""}):
            c = np.bincount(sel[tl == lab].ravel(), minlength=4); e = int(np.argmax(c))
            r = [r for r in R if r["layer"] == l and r["label"] == lab]
            assert len(r) == 1 and r[0]["expert"] == e, (l, lab, r, c)
            close(r[0]["share_pct"], 100 * c[e] / (tl == lab).sum(), 0.006, f"layer {l} {lab} share")
            close(r[0]["uniform_pct"], 25.0, 1e-9, "uniform"); n += 1
    assert n == len(R) == L * len(abilities), (n, len(R))
    return f"{n} rows: the most used expert per layer and label recounted from record --moe"
def check_neuron_top_contexts(R):  # mean and max |a| from the activation file, the ranking by mean |a|
    for l in range(L):
        ma = np.abs(act[l]).astype(np.float64).mean(axis=0); mx = np.abs(act[l]).max(axis=0)
        got = [r for r in R if r["layer"] == l]
        want = sorted(range(F), key=lambda i: (-ma[i], i))[:5]
        assert [r["neuron"] for r in got] == want, (l, [r["neuron"] for r in got], want)
        for r in got:
            i = r["neuron"]
            close(r["mean_abs"], ma[i], 1e-5 + 1e-4 * ma[i], f"layer {l} neuron {i} mean_abs")
            close(r["max_abs"], float(mx[i]), 1e-5 + 1e-5 * mx[i], f"layer {l} neuron {i} max_abs")
            close(abs(r["top_value"]), float(mx[i]), 1e-5 + 1e-5 * mx[i], f"layer {l} neuron {i} top context value")
            assert "[" in r["top_context"], r
    return f"{len(R)} rows: the top 5 by mean |a|, mean and max |a| and the top context's value recomputed from the activation file"
def check_lens_by_layer(R):
    # the lens recomputed from the PyTorch reference's residual streams (nlref.forward), final norm, lm_head
    cfg, W = nlref.load_folder(os.path.join(root, "tests/fixtures/hf/llama"))
    W = {k: v.float() for k, v in W.items()}
    sums = {}
    for line in open(jsonl):
        d = json.loads(line)
        t = d["tokens"]
        o = nlref.forward(cfg, W, t)
        res = [W["model.embed_tokens.weight"][torch.tensor(t)]] + list(o["resid"])
        z = [nlref.rms_norm(r, W["model.norm.weight"], cfg["rms_norm_eps"]) @ W["lm_head.weight"].T for r in res]
        fin = torch.log_softmax(z[-1].double(), -1)[:-1]
        for j, zj in enumerate(z):
            lp = torch.log_softmax(zj.double(), -1)[:-1]
            nll = -lp.gather(1, torch.tensor(t[1:])[:, None])[:, 0]
            kl = (fin.exp() * (fin - lp)).sum(-1)
            ag = (lp.argmax(-1) == fin.argmax(-1)).double()
            for lab in ("", d["label"]):
                s = sums.setdefault((lab, j - 1), [0, 0.0, 0.0, 0.0])
                s[0] += len(t) - 1; s[1] += nll.sum().item(); s[2] += ag.sum().item(); s[3] += kl.sum().item()
    assert len(R) == len(sums), (len(R), len(sums))
    for r in R:
        n, loss, ag, kl = sums[(r["label"], r["layer"])]
        assert r["tokens"] == n, r
        close(r["loss"], loss / n, 2e-4, f"lens loss {r['label']!r} layer {r['layer']}")
        close(r["kl"], kl / n, 2e-4, f"lens kl {r['label']!r} layer {r['layer']}")
        close(r["top1_agree"], ag / n, 1e-3, f"lens top1 {r['label']!r} layer {r['layer']}")
        if r["layer"] == cfg["num_hidden_layers"] - 1:
            assert r["loss_gap"] == 0 and r["kl"] == 0 and r["top1_agree"] == 1, r
    dense = json.load(open(os.path.join(tmpdir, "ppl_dense.json")))
    last = [r for r in R if r["label"] == "" and r["layer"] == cfg["num_hidden_layers"] - 1][0]
    close(last["loss"], dense["nll"], 2e-5, "lens last layer = ppl")
    return f"{len(R)} rows: loss, KL and top-1 agreement per label and depth recomputed from the PyTorch residual streams; last layer = ppl"

def check_neuron_logit_attribution(R):
    cfg, W = nlref.load_folder(os.path.join(root, "tests/fixtures/hf/llama"))
    z = W["lm_head.weight"].double() @ W["model.layers.1.mlp.down_proj.weight"][:, 5].double()
    order = sorted(range(len(z)), key=lambda v: (-z[v].item(), v))
    assert [(r["layer"], r["neuron"], r["direction"]) for r in R] == [(1, 5, "promotes"), (1, 5, "suppresses")], R
    for r, ids in ((R[0], order[:5]), (R[1], order[::-1][:5])):
        got = [p.split(" (") for p in r["tokens"].split(", ")]
        assert [int(g[0][1:]) for g in got] == ids, (got, ids)
        for g, v in zip(got, ids):
            close(float(g[1].rstrip(")")), z[v].item(), 1e-3, f"attribution logit of token {v}")
    return "2 rows: the top and bottom 5 token ids and logits of layer 1 neuron 5 recomputed from the weights"
second = {"expert_load_by_label", "moe_sweep_tradeoff", "expert_usage_by_label", "neuron_top_contexts", "lens_by_layer",
          "neuron_logit_attribution"}

checks = {"runs": check_runs, "runs_by_file": check_runs_by_file, "layer_sparsity": check_layer_sparsity, "label_sparsity": check_label_sparsity,
          "quantiles": check_quantiles, "most_active_neurons": check_most_active, "least_active_neurons": check_least_active,
          "ability_by_layer": check_ability_by_layer, "ability_top_neurons": check_ability_top, "overlap_pairs": check_overlap,
          "perturbation_table": check_perturb_table, "perturbation_by_label": check_perturb_by_label,
          "prune_matrix": check_prune_matrix, "prune_specificity": check_prune_specificity,
          "expert_load_by_label": check_expert_load_by_label, "moe_sweep_tradeoff": check_moe_sweep_tradeoff,
          "expert_usage_by_label": check_expert_usage_by_label, "neuron_top_contexts": check_neuron_top_contexts,
          "lens_by_layer": check_lens_by_layer, "neuron_logit_attribution": check_neuron_logit_attribution}
for q in sorted(os.listdir(os.path.join(root, "notebooks-data/sql"))):
    if not q.endswith(".sql"): continue
    name = q[:-4]
    try:
        R = rows(os.path.join(root, "notebooks-data/sql", q), con2 if name in second else con)
        assert R, "no rows"
        if name not in checks: raise AssertionError("no value check for this query (add one to tests/sql_cookbook.sh)")
        print(f"PASS sql cookbook {q}: {checks[name](R)}")
    except Exception as e:
        print(f"FAIL sql cookbook {q}: {type(e).__name__}: {e}")
PY
$py "$tmp/check.py" "$PWD" "$tmp/r.db" "$tmp/a.h5" "$tmp/d.jsonl" "$tmp" 2>&1 || echo "FAIL sql cookbook: the checker stopped (exit $?)"
exit 0
