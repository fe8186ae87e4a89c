#!/usr/bin/python3
"""moe_native.py DB... — the README tables of the mixture-of-experts zoo models from the databases
notebooks-data/zoo/moe_native.sh writes (tables expert_routing, expert_load, expert_ability,
expert_prune of one `experts` run and the `prune --experts` runs). Prints Markdown."""
import os
import sqlite3
import statistics
import sys


def one(c, q, *a):
    r = c.execute(q, a).fetchone()
    return r[0] if r else None


def main(dbs):
    for path in dbs:
        c = sqlite3.connect(path)
        name = os.path.splitext(os.path.basename(path))[0]
        run = one(c, "SELECT max(id) FROM runs WHERE kind = 'experts' AND status = 'complete'")
        model = one(c, "SELECT model FROM runs WHERE id = ?", run)
        print(f"### {name} ({model}; experts run {run}, {path})\n")
        labels = [r[0] for r in c.execute("SELECT DISTINCT label FROM expert_routing WHERE run_id = ? AND label NOT IN ('', '*') "
                                          "ORDER BY label", (run,))]
        layers = [r[0] for r in c.execute("SELECT DISTINCT layer FROM expert_routing WHERE run_id = ? ORDER BY layer", (run,))]
        E = one(c, "SELECT count(DISTINCT expert) FROM expert_load WHERE run_id = ? AND expert >= 0", run)  # -1 = shared
        k = one(c, "SELECT round(sum(tokens) * 1.0 / (SELECT tokens FROM expert_routing WHERE run_id = ?1 AND layer = ?2 "
                   "AND label = ?3)) FROM expert_load WHERE run_id = ?1 AND layer = ?2 AND label = ?3 AND expert >= 0", run, layers[0], labels[0])
        # 1. routing peakedness by layer (all labels)
        print("Routing by layer (all documents): entropy of the router's softmax over the "
              f"{E} experts (maximum ln {E} = {one(c, 'SELECT entropy_max FROM expert_routing WHERE run_id = ? LIMIT 1', run):.3f}), "
              "mean top-1 − top-2 probability margin, and the largest share of one ability's tokens that a single expert takes "
              f"(uniform routing: {int(k)}/{E} = {k / E:.3f}).\n")
        print("| layer | entropy | margin | " + " | ".join(f"max share {l}" for l in labels) + " |")
        print("|---|---|---|" + "---|" * len(labels))
        for l in layers:
            ent, mar = c.execute("SELECT sum(entropy * tokens) / sum(tokens), sum(margin * tokens) / sum(tokens) FROM expert_routing "
                                 "WHERE run_id = ? AND layer = ? AND label NOT IN ('', '*')", (run, l)).fetchone()
            shares = []
            for lab in labels:
                sh = one(c, "SELECT max(token_frac) FROM expert_load WHERE run_id = ? AND layer = ? AND label = ? AND expert >= 0", run, l, lab)
                shares.append(f"{sh:.3f}")
            print(f"| {l} | {ent:.3f} | {mar:.3f} | " + " | ".join(shares) + " |")
        print()
        # 2. expert ability AP
        print("Expert ability scores: AP of each document's mean routing weight per expert against the label (baseline = the "
              "label's share of the documents); the best expert of each ability, its AP with shuffled labels, and the median "
              "over all experts.\n")
        print("| ability | best expert (layer:expert) | AP | shuffled AP | baseline | median AP of all experts |")
        print("|---|---|---|---|---|---|")
        for lab in labels:
            l, e, ap, sh, base = c.execute("SELECT layer, expert, ap, shuffled_ap, baseline FROM expert_ability WHERE run_id = ? "
                                           "AND ability = ? AND expert >= 0 ORDER BY ap DESC LIMIT 1", (run, lab)).fetchone()
            aps = [r[0] for r in c.execute("SELECT ap FROM expert_ability WHERE run_id = ? AND ability = ? AND expert >= 0",
                                           (run, lab))]
            print(f"| {lab} | {l}:{e} | {ap:.3f} | {sh:.3f} | {base:.3f} | {statistics.median(aps):.3f} |")
        print()
        # 3. removing each ability's best expert per layer
        prow = c.execute("SELECT DISTINCT run_id FROM expert_prune WHERE removed LIKE 'top:%'").fetchall()
        if prow:
            print("Removing an ability's best expert in every layer (`prune --experts top:ABILITY:1`, chosen on the scored "
                  "documents, perplexity on 10 other documents per ability; the router's choice is excluded and the token takes "
                  "its next-best expert): relative perplexity change on the ability's own documents and on the others (mean), "
                  "beside the same number of random experts per layer (mean of 3 seeds).\n")
            print("| removed | own ability | other abilities | random experts, own | random experts, others |")
            print("|---|---|---|---|---|")
            for lab in labels:
                nm = f"top:{lab}:1"
                own = one(c, "SELECT rel_change FROM expert_prune WHERE removed = ? AND control = 'expert' AND label = ?", nm, lab)
                oth = one(c, "SELECT avg(rel_change) FROM expert_prune WHERE removed = ? AND control = 'expert' AND label NOT IN "
                             "(?, '')", nm, lab)
                rown = one(c, "SELECT avg(rel_change) FROM expert_prune WHERE removed = ? AND control = 'random' AND label = ?", nm, lab)
                roth = one(c, "SELECT avg(rel_change) FROM expert_prune WHERE removed = ? AND control = 'random' AND label NOT IN "
                              "(?, '')", nm, lab)
                if own is None: continue
                print(f"| {nm} | {100 * own:+.1f} % | {100 * oth:+.1f} % | {100 * rown:+.1f} % | {100 * roth:+.1f} % |")
            print()
        # 4. one expert at a time, and the shared experts
        single = [r for r in c.execute("SELECT removed, rel_change FROM expert_prune WHERE control = 'expert' AND label = '' AND "
                                        "removed NOT LIKE 'top:%'")]
        if single:
            v = sorted(x for _, x in single)
            worst = max(single, key=lambda r: r[1])
            print(f"One routed expert removed at a time ({len(v)} experts, `prune --experts all`): overall perplexity change "
                  f"min {100 * v[0]:+.2f} %, median {100 * statistics.median(v):+.2f} %, max {100 * v[-1]:+.2f} % "
                  f"(expert {worst[0]}).\n")
        shared = [r for r in c.execute("SELECT removed, label, rel_change FROM expert_prune WHERE control = 'shared' ORDER BY removed")]
        if shared:
            print("Shared expert of one layer removed (its gated output subtracted): relative perplexity change per ability.\n")
            names = sorted({r[0] for r in shared}, key=lambda s: int(s.split(":")[0]))
            print("| removed | all | " + " | ".join(labels) + " |")
            print("|---|---|" + "---|" * len(labels))
            for nm in names:
                d = {lab: x for n2, lab, x in shared if n2 == nm}
                print(f"| {nm} | {100 * d['']:+.1f} % | " + " | ".join(f"{100 * d[lab]:+.1f} %" for lab in labels) + " |")
            print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
