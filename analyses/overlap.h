/* overlap.h — how much the abilities' top sets share: `neuronlab overlap --db results.db
 * --scores RUN [--top F]` (src/cli/cmd_overlap.c).
 *
 * Definitions (A, B: two abilities' top sets of ability run RUN, analyses/ability.h; per
 * recorded layer l and over all layers, where a set is the union of its layers' neurons):
 *   frac      |A ∩ B| / |A|            (row A, column B: not symmetric when sizes differ)
 *   jaccard   |A ∩ B| / |A ∪ B|
 *   baseline  what two unrelated sets of the same sizes give: B drawn uniformly among the
 *             layer's N_l eligible (not excluded) neurons has E|A_l ∩ B_l| = |A_l|·|B_l| / N_l,
 *             so baseline_frac = |B_l| / N_l (= the top fraction for the default per-layer
 *             sets) and baseline_jaccard = E / (|A_l| + |B_l| − E) (the Jaccard of the
 *             expected intersection; f/(2−f) for two sets of fraction f). Over all layers
 *             E = Σ_l |A_l|·|B_l| / N_l for per-layer sets and |A|·|B| / N for global sets
 *             (N = every eligible neuron of the recorded layers).
 *   Every ordered pair (a, b) is stored, a = b included (frac = jaccard = 1).
 *
 * Table (CREATE TABLE IF NOT EXISTS; WITHOUT ROWID):
 *   overlap(run_id INTEGER NOT NULL REFERENCES runs(id), a TEXT NOT NULL, b TEXT NOT NULL,
 *       layer INTEGER NOT NULL (-1 = all recorded layers), size_a INTEGER, size_b INTEGER,
 *       inter INTEGER, frac REAL, jaccard REAL, baseline_frac REAL, baseline_jaccard REAL,
 *       PRIMARY KEY (run_id, a, b, layer))
 * A run of kind "overlap" (model and source from the scores run; params
 * {"scores_run":N,"top":F,"scope":…}) written in one transaction.
 * Checked by tests/test_overlap.c (constructed sets) and tests/ability_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_OVERLAP_H
#define NEURONLAB_ANALYSES_OVERLAP_H

#include "analyses/ability.h"

/* One pair at one layer (layer -1: all). */
typedef struct {
    int a, b, layer;
    int64_t size_a, size_b, inter;
    double frac, jaccard, baseline_frac, baseline_jaccard;
} nl_overlap_cell;

/* All pairs of s: cells (A·A·(Lr+1)), ordered a, b, then layer -1 followed by the recorded
 * layers ascending (index ((a·A + b)·(Lr+1) + 1 + j) for layer index j). *out malloc'd,
 * caller frees. Pure. */
nl_status nl_overlap_compute(nl_ctx *ctx, const nl_ability_sets *s, nl_overlap_cell **out, int *n);

/* Computes the overlap of ability run scores_run's sets (top ≤ 0: the run's fraction) and
 * writes it as a run of kind "overlap". Errors: those of nl_ability_sets_load. *run_id gets
 * the new run (or -1). cells/n as from nl_overlap_compute when not NULL (caller frees). */
nl_status nl_overlap_run(nl_ctx *ctx, nl_results *db, int64_t scores_run, double top, int64_t *run_id,
                         nl_ability_sets *sets, nl_overlap_cell **cells, int *n);

#endif
