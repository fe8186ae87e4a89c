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
#include "neuronlab/progress.h"

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

/* Options; nl_overlap_opts_init sets the defaults. */
typedef struct {
    double top; /* top fraction of the sets, in (0, 1]; ≤ 0 (default): the scores run's own */
} nl_overlap_opts;
void nl_overlap_opts_init(nl_overlap_opts *o);

/* What a run leaves for printing. Caller-owned: zero-initialise, nl_overlap_result_release
 * (also after an error). */
typedef struct {
    int64_t run_id;          /* the overlap run; -1 when it was never begun */
    nl_ability_sets sets;    /* the sets compared (owned) */
    nl_overlap_cell *cells;  /* (n_cells) as from nl_overlap_compute (owned) */
    int n_cells;
} nl_overlap_result;
void nl_overlap_result_release(nl_overlap_result *r); /* zeroes it; a zeroed struct is a no-op */

/* Creates the overlap table when missing (idempotent). */
nl_status nl_overlap_create_tables(nl_ctx *ctx, nl_results *db);

/* Computes the overlap of ability run scores_run's sets (≤ 0: the latest complete ability
 * run) and writes it as a run of kind "overlap", ended by nl_results_finish_run. Errors:
 * those of nl_ability_sets_load (nothing written). prog (may be NULL) counts one step. */
nl_status nl_overlap_run(nl_ctx *ctx, const nl_overlap_opts *opts, int64_t scores_run, nl_results *db, nl_progress *prog,
                         nl_overlap_result *out);

#endif
