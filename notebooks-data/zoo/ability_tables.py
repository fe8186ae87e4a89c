#!/usr/bin/env python3
"""ability_tables.py RESULTS.db [TITLE] — the pruning matrix, its random control and the overlap
matrix of the latest complete prune and overlap runs of a neuronlab results database, as
Markdown tables (what the README's zoo section shows for each model after `make demo`).

Pruning cells: relative perplexity change in percent, (PPL_pruned - PPL_base) / PPL_base,
row = the ability whose top set was zeroed, column = the ability evaluated. The random row: the
same number of random neurons per layer, mean ± sd over the seeds (identical for every row when
all top sets have the same size per layer, the default). Needs only Python's sqlite3.
"""
import sqlite3
import sys


def latest(c, kind):
    r = c.execute("SELECT max(id) FROM runs WHERE kind = ? AND status = 'complete'", (kind,)).fetchone()
    return r[0] if r and r[0] is not None else None


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ability_tables.py RESULTS.db [TITLE]")
    c = sqlite3.connect(sys.argv[1])
    title = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    pr, ov = latest(c, "prune"), latest(c, "overlap")
    if pr is None or ov is None:
        sys.exit(f"{sys.argv[1]}: needs a complete prune and overlap run")
    eff = {(p, l): r for p, l, r in c.execute(
        "SELECT pruned, label, rel_change FROM prune_effect WHERE run_id = ? AND control = 'ability'", (pr,))}
    ctl = {(p, l): (m, s) for p, l, m, s in c.execute(
        "SELECT pruned, label, mean, sd FROM prune_control WHERE run_id = ?", (pr,))}
    base = {l: p for l, p in c.execute(
        "SELECT label, ppl FROM prune_effect WHERE run_id = ? AND control = 'none'", (pr,))}
    rows = sorted({p for p, _ in eff})
    cols = sorted({l for _, l in eff if l}) + [""]
    name = lambda l: l if l else "all"
    import json
    p = json.loads(c.execute("SELECT params FROM runs WHERE id = ?", (pr,)).fetchone()[0])
    ev = p.get("eval", "selection")
    where = {"heldout": f"evaluated on the {p.get('eval_docs')} held-out documents the neurons were not selected on",
             "file": f"evaluated on another dataset ({p.get('eval_file')})",
             "selection": "evaluated on the same documents the neurons were selected on (no held-out split)",
             "all": "evaluated on all documents"}.get(ev, ev)
    print(f"**{title}** — prune run {pr} (top {p['top']:g} {'per layer' if p['scope'] == 'layer' else 'over all layers'} "
          f"of ability run {p['scores_run']}, {p['seeds']} random seeds; {where}); cells: relative perplexity change, %\n")
    print("| pruned \\ evaluated | " + " | ".join(name(l) for l in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    print("| (base perplexity) | " + " | ".join(f"{base.get(l, float('nan')):.2f}" for l in cols) + " |")
    for p in rows:
        cells = []
        for l in cols:
            v = eff.get((p, l))
            s = "–" if v is None else f"{100 * v:+.1f}"
            cells.append(f"**{s}**" if l == p else s)
        print(f"| {p} | " + " | ".join(cells) + " |")
    same = all(ctl.get((p, l)) == ctl.get((rows[0], l)) for p in rows for l in cols)
    for p in ([rows[0]] if same else rows):
        label = "random (same size, any row)" if same else f"random ({p})"
        cells = []
        for l in cols:
            m = ctl.get((p, l))
            cells.append("–" if m is None else f"{100 * m[0]:+.1f} ± {100 * m[1]:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    # specificity in numbers
    print("| pruned | own ability | other abilities (mean) | random, own ability |")
    print("|---|---|---|---|")
    for p in rows:
        own = eff.get((p, p))
        others = [eff[(p, l)] for l in cols if l and l != p and (p, l) in eff]
        rnd = ctl.get((p, p))
        fmt = lambda v: "–" if v is None else f"{100 * v:+.1f}"
        print(f"| {p} | {fmt(own)} | {fmt(sum(others) / len(others) if others else None)} | {fmt(rnd[0] if rnd else None)} |")
    print()
    # overlap
    ab = sorted({a for (a,) in c.execute("SELECT DISTINCT a FROM overlap WHERE run_id = ?", (ov,))})
    o = {(a, b): (f, j, bf, bj) for a, b, f, j, bf, bj in c.execute(
        "SELECT a, b, frac, jaccard, baseline_frac, baseline_jaccard FROM overlap WHERE run_id = ? AND layer = -1", (ov,))}
    bf = o[(ab[0], ab[1 % len(ab)])][2]
    bj = o[(ab[0], ab[1 % len(ab)])][3]
    print(f"Overlap of the top sets (overlap run {ov}), all layers: |A∩B| / |A| (row A); random baseline {bf:.3f} "
          f"(Jaccard {bj:.3f})\n")
    print("| A \\ B | " + " | ".join(ab) + " |")
    print("|---" * (len(ab) + 1) + "|")
    for a in ab:
        print(f"| {a} | " + " | ".join("1" if a == b else f"{o[(a, b)][0]:.3f}" for b in ab) + " |")


if __name__ == "__main__":
    main()
