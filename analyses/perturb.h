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
/* Restarts the random stream: row counters of every layer back to 0. */
void nl_mask_reset(nl_mask *k);
int nl_mask_k(const nl_mask *k); /* neurons masked per row */

/* The intervener (nl_hook_fn): register with
 *   nl_hooks_add(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_mask_hook, mask).
 * x: (T, F) activations of layer info->layer; zeroes k entries per row. Advances the layer's
 * row counter by T. */
nl_status nl_mask_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x);

/* ---- the analysis ------------------------------------------------------------------- */

typedef struct {
    const nl_mask_metric *metrics; /* (n_metrics) */
    int n_metrics;
    const double *ratios;          /* (n_ratios), each in [0, 1) */
    int n_ratios;
    uint64_t seed;                 /* random control */
    int stride;                    /* sliding-window stride as in nl_forward_doc (≤ 0: ctx/2) */
} nl_perturb_options;

/* One (metric, ratio) setting's result. */
typedef struct {
    nl_mask_metric metric;
    double ratio;
    int masked;        /* k */
    int done;          /* 1 once computed (and committed when there is a database) */
    nl_ppl_result ppl; /* owned when done */
} nl_perturb_cell;

/* Creates the perturb table and its index when missing (idempotent). */
nl_status nl_perturb_tables(nl_ctx *ctx, nl_results *db);

/* The run's parameters as a JSON object into buf (n bytes):
 * {"metrics":[…],"ratios":[…],"seed":S,"ctx":C,"stride":S,"batch":B}. */
void nl_perturb_params_json(const nl_perturb_options *opt, int ctx_len, int stride, int batch, char *buf, size_t n);

/* Scores ds once per (metric, ratio) with the mask intervener on f (registered for the call
 * and removed before returning): cells[m * n_ratios + r] for metrics[m], ratios[r] (caller
 * allocates n_metrics × n_ratios cells, release with nl_perturb_cells_release). Settings with
 * k = 0 share one unmasked pass. Order: the unmasked pass first, then metric by metric, ratio
 * by ratio. db may be NULL; otherwise each finished setting's rows (label '' and every
 * non-empty label) are committed under run_id at once. progress (may be NULL) counts tokens
 * over all passes. On NL_EINTR or an error the finished cells stay done (and in the database);
 * the caller ends the run. */
nl_status nl_perturb_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, const nl_perturb_options *opt,
                         nl_results *db, int64_t run_id, nl_progress *progress, nl_perturb_cell *cells);
/* Forward passes nl_perturb_run makes for opt (to size a progress bar). */
int nl_perturb_passes(const nl_perturb_options *opt, int F);
void nl_perturb_cells_release(nl_perturb_cell *cells, int n);

#endif
