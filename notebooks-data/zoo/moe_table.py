#!/usr/bin/python3
"""moe_table.py [DB...] — the README's MoEfication tables from the moe-sweep runs that
notebooks-data/zoo/moe_table.sh writes (default build/zoo-moe/moe.db): per zoo model, the
overall perplexity of every split x router x fill at each K/E beside the dense model, then the
mean-fill / zero-fill ratio and the held-out router recall that moefy stored in each folder's
manifest (mlp router training report)."""
import json, os, sqlite3, sys

dbs = sys.argv[1:] or ["build/zoo-moe/moe.db"]
by_model = {}
for db in dbs:
    con = sqlite3.connect(db)
    for rid, model, params in con.execute("SELECT id, model, params FROM runs WHERE kind = 'moe-sweep' AND status = 'complete' "
                                          "ORDER BY id").fetchall():
        by_model.setdefault(os.path.basename(model.rstrip("/")), []).append((con, rid, json.loads(params)))
for model in ("silu", "gelu", "relu"):
    if model not in by_model:
        continue
    rows, dense, ks = {}, None, set()
    for con, rid, p in by_model[model]:
        split = p.get("split", "?")
        for router, fill, k, kf, ppl, is_dense in con.execute(
                "SELECT router, fill, k, k_frac, ppl, dense FROM moe_sweep WHERE run_id = ? AND label = ''", (rid,)):
            if is_dense:
                dense = ppl
                continue
            rows[(split, router, fill, kf)] = ppl
            ks.add(kf)
    ks = sorted(ks)
    print(f"\n**{model}** (dense perplexity {dense:.2f}; E = 32 experts of 21–22 neurons per layer)\n")
    print("| split | router | fill | " + " | ".join(f"K/E {100 * k:g} %" for k in ks) + " |")
    print("|---|---|---|" + "---:|" * len(ks))
    for split in ("param", "coact"):
        for router in ("sim", "mlp", "oracle"):
            for fill in ("zero", "mean"):
                vals = [rows.get((split, router, fill, k)) for k in ks]
                if all(v is None for v in vals):
                    continue
                print(f"| {split} | {router} | {fill} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in vals) + " |")
    ratios = [rows[(s, r, "mean", k)] / rows[(s, r, "zero", k)] for s in ("param", "coact") for r in ("sim", "mlp", "oracle")
              for k in ks if (s, r, "mean", k) in rows and (s, r, "zero", k) in rows]
    if ratios:
        wins = sum(x < 1 for x in ratios)
        print(f"\nmean / zero perplexity ratio over the {len(ratios)} cells: min {min(ratios):.3f}, max {max(ratios):.3f}; "
              f"mean fill better in {wins}")
print("\n| folder | held-out recall at K/E 25 %: sim | mlp |")
print("|---|---:|---:|")
top = os.path.dirname(dbs[0]) or "."
for d in sorted(os.listdir(top)):
    m = os.path.join(top, d, "manifest.json")
    if not os.path.exists(m):
        continue
    j = json.load(open(m)).get("router_mlp")
    if not j:
        continue
    layers = j.get("layers", [])
    def mean_of(key):
        v = [x.get(key) for x in layers if isinstance(x, dict) and x.get(key) is not None]
        return sum(v) / len(v) if v else float("nan")
    print(f"| {d} | {mean_of('heldout_recall_sim_k25'):.3f} | {mean_of('heldout_recall_mlp_k25'):.3f} |")
