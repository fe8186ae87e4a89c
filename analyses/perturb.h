/* perturb.h — masking perturbation: perplexity with the lowest-indicator FFN neurons zeroed
 * (the engine of `neuronlab perturb`).
 *
 * Definition (README "Definitions"): for every token and every layer, the k = floor(p·F)
 * neurons with the lowest indicator are set to 0 in the activation a (the input of the down
 * projection, hook point NL_HOOK_FFN_ACT) before W_out is applied. Indicators:
 *   value   |a_i|
 *   norm    |a_i| · ‖W_out[:, i]‖₂          (nl_model_w_out_norm, computed once per layer)
 *   random  a uniformly random k-subset per token and layer (the control): neuron i of the
 *           r-th row that passes layer l gets the priority hash(seed, l, r, i) (splitmix64,
 *           top 32 bits) and the k lowest priorities are masked. Rows are counted per layer
 *           from nl_mask_reset in the order the forward pass sees them (documents, windows,
 *           tokens), so the mask depends on the seed, ctx and stride but not on the batch
 *           size or the number of threads; the masks of one seed are nested across ratios.
 * Ties: the indicator is ranked as the key (float bits of the indicator, neuron index), so
 * equal indicators are broken by the lower neuron index (the lower index is masked first).
 * |a| and the norm product are non-negative floats, whose bit patterns order like their
 * values; a NaN indicator ranks above every number (masked last).
 * k = floor(p·F + 1e-9): the 1e-9 keeps decimal ratios exact (0.29 × 100 → 29, not 28).
 * With a layer list (opts.layers, --layers) only those layers are masked; every other layer
 * is left untouched (its random row counter still advances, so a listed layer's random masks
 * are the same as in an all-layer run).
 * k = 0 (ratio 0) leaves a untouched, so ratio 0 is the unmasked model, bit for bit `ppl`.
 * Selection is O(F) per row (quickselect on the 64-bit keys with a sort fallback after too
 * many bad pivots), rows in parallel with OpenMP; each row's result depends on that row
 * only, so masks never depend on the thread count.
 *
 * Results table (in the results database, results.h), one row per (metric, ratio, label):
 *   perturb(run_id INTEGER NOT NULL REFERENCES runs(id), metric TEXT NOT NULL ('value' |
 *           'norm' | 'random'), ratio REAL NOT NULL, label TEXT NOT NULL ('' = all documents;
 *           otherwise one row per non-empty label of the dataset), tokens INTEGER NOT NULL
 *           (predictions counted), nll REAL (mean negative log-likelihood, nats; NULL when
 *           tokens = 0), ppl REAL (exp(nll)), masked INTEGER NOT NULL (k: neurons masked
 *           per token and layer))
 *   index perturb_run_id ON perturb(run_id)
 * The run: kind "perturb", model and dataset from the options (default the model's and the
 * dataset's paths), params {"metrics":[…],"ratios":[…],"seed":S,"ctx":C,"stride":S,"batch":B[,"layers":[…]]}
 * ("layers" only when a layer list was given).
 * Each (metric, ratio) is committed in its own transaction as soon as it is computed, so an
 * interrupted run keeps every finished setting.
 * Checked by tests/test_perturb.c (hand-made rows against a brute-force sort, stories260K
 * against llama2.c's masked perplexities) and tests/perturb_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_PERTURB_H
#define NEURONLAB_ANALYSES_PERTURB_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

typedef enum { NL_MASK_VALUE = 0, NL_MASK_NORM, NL_MASK_RANDOM, NL_MASK_N_METRICS } nl_mask_metric;

const char *nl_mask_metric_name(nl_mask_metric m); /* "value", "norm", "random" */
int nl_mask_metric_parse(const char *s);            /* the metric, or -1 when unknown */

/* k = floor(ratio·F + 1e-9) for ratio in [0, 1). */
int nl_mask_count(double ratio, int F);

/* ---- the masking intervener --------------------------------------------------------- */

typedef struct nl_mask nl_mask;

/* A mask for L layers of F neurons. w_out_norm: (L, F) ‖W_out[:, i]‖₂ per layer, copied;
 * required for NL_MASK_NORM, may be NULL otherwise. NL_EINVAL when ratio ∉ [0, 1) or the
 * norms are missing. *out is owned by the caller: nl_mask_destroy. */
nl_status nl_mask_create(nl_ctx *ctx, int L, int F, const float *w_out_norm, nl_mask_metric metric, double ratio,
                         uint64_t seed, nl_mask **out);
/* The same for a model's layers (norms from nl_model_w_out_norm, always computed, so the
 * mask can be switched to any metric with nl_mask_set). */
nl_status nl_mask_create_for_model(nl_ctx *ctx, nl_model *m, nl_mask_metric metric, double ratio, uint64_t seed,
                                   nl_mask **out);
void nl_mask_destroy(nl_mask *k); /* NULL is a no-op */

/* Switches metric and ratio (same validation as create) and restarts the random stream. */
nl_status nl_mask_set(nl_ctx *ctx, nl_mask *k, nl_mask_metric metric, double ratio);
/* Masks only the n listed model layers (each in 0 … L−1, no repeats; else NL_EINVAL:
 * "layer 9 is outside the model's 0..5", "layer 2 is given twice", "no layers to mask"). */
nl_status nl_mask_set_layers(nl_ctx *ctx, nl_mask *k, const int *layers, int n);
/* Restarts the random stream: row counters of every layer back to 0. */
void nl_mask_reset(nl_mask *k);
int nl_mask_k(const nl_mask *k); /* neurons masked per row */

/* The intervener (nl_hook_fn): register with
 *   nl_hooks_add(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_mask_hook, mask).
 * x: (T, F) activations of layer info->layer; zeroes k entries per row. Advances the layer's
 * row counter by T. */
nl_status nl_mask_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x);

/* ---- the analysis ------------------------------------------------------------------- */

/* Options; nl_perturb_opts_init sets the defaults noted. Caller-owned; arrays borrowed. */
typedef struct {
    const nl_mask_metric *metrics; /* (n_metrics); default value, norm, random */
    int n_metrics;
    const double *ratios;          /* (n_ratios), each in [0, 1); default 0, 0.1, …, 0.9 */
    int n_ratios;
    uint64_t seed;                 /* random control; default 0 */
    int stride;                    /* sliding-window stride as in nl_forward_doc (≤ 0: ctx/2) */
    int batch;                     /* provenance: tokens per forward call as asked, written to the
                                    * params (≤ 0: the forward pass's nl_forward_max_T) */
    const char *model, *dataset;   /* provenance: runs.model / runs.dataset (NULL: the model's
                                    * path, the dataset's path) */
    const int *layers;             /* (n_layers) model layers to mask; NULL = every layer (default) */
    int n_layers;
    const char *moe_json;          /* params "moe": a JSON object describing the forward pass's expert
                                    * FFN (the CLI's --moe), or NULL for the dense model (default) */
} nl_perturb_opts;

void nl_perturb_opts_init(nl_perturb_opts *o);

/* One (metric, ratio) setting's result. */
typedef struct {
    nl_mask_metric metric;
    double ratio;
    int masked;        /* k */
    int done;          /* 1 once computed (and committed when there is a database) */
    nl_ppl_result ppl; /* owned when done */
} nl_perturb_cell;

/* What a run leaves for printing. Caller-owned: zero-initialise, nl_perturb_result_release
 * (also after an error). */
typedef struct {
    int64_t run_id;        /* the run; -1 without a database or when it was never begun */
    nl_perturb_cell *cells; /* (n_metrics × n_ratios): cells[m * n_ratios + r] for metrics[m],
                            * ratios[r]; finished ones have done = 1 (owned) */
    int n_cells;
    int n_done;            /* finished settings */
    int passes;            /* forward passes the options need (nl_perturb_passes) */
} nl_perturb_result;
void nl_perturb_result_release(nl_perturb_result *r); /* zeroes it; a zeroed struct is a no-op */

/* Creates the perturb table and its index when missing (idempotent). */
nl_status nl_perturb_create_tables(nl_ctx *ctx, nl_results *db);

/* Scores ds once per (metric, ratio) with the mask intervener on f (registered for the call
 * and removed before returning). Settings with k = 0 share one unmasked pass. Order: the
 * unmasked pass first, then metric by metric, ratio by ratio. Options are validated first
 * (NL_EINVAL: no metric or ratio, a ratio outside [0, 1), an unknown metric), before anything
 * is written. db may be NULL (nothing stored); otherwise the run (above) is begun, each
 * finished setting's rows (label '' and every non-empty label) are committed at once, and
 * the run is ended by nl_results_finish_run (an interrupted run keeps its finished settings).
 * progress (may be NULL) counts tokens over all passes (its total is set here). Threads:
 * ctx->n_threads (0 = all cores). */
nl_status nl_perturb_run(nl_ctx *ctx, const nl_perturb_opts *opts, nl_forward *f, const nl_dataset *ds, nl_results *db,
                         nl_progress *progress, nl_perturb_result *out);
/* Forward passes nl_perturb_run makes for opt (to size a progress bar). */
int nl_perturb_passes(const nl_perturb_opts *opt, int F);

#endif
