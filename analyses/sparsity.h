/* sparsity.h — how sparse the FFN activations really are: the distribution of the
 * normalised indicators, per-neuron activation frequencies, dead and resident neurons, and
 * the sparsity at a target CETT, per layer, over all layers, and per document label.
 * `neuronlab sparsity acts.h5 --db results.db` (src/cli/cmd_sparsity.c) drives it.
 *
 * Definitions (token t, layer l, neuron i; a = the FFN activation of h5store.h):
 *   value        v_i(t) = |a_i(t)|
 *   output norm  n_i(t) = |a_i(t)| · ‖W_out[:, i]‖₂    (the file's /layers/{l}/w_out_norm)
 *   normalised   r_i(t) = x_i(t) / max_j x_j(t) for x = v (r_value) or x = n (r_norm): each
 *                token's indicator divided by that token's maximum over the layer's F
 *                neurons, so r ∈ [0, 1] and every token has r = 1 at its largest neuron;
 *                r = 0 for every neuron of a token whose maximum is 0. Computed as an IEEE
 *                single-precision quotient; comparisons with a threshold τ are exact
 *                (r < τ, r > τ against the real number τ).
 *   fractions    frac_zero / frac_below_0_1 / frac_below_0_2 = exact fraction of (token,
 *                neuron) pairs with r = 0 / r < 0.1 / r < 0.2; mean_r = their mean r.
 *   histogram    r = 0 in its own bin; (0, 2^-27] one underflow bin; (2^-27, 1] in 864
 *                bins: every power of two split into 32 equal-width bins (lo, hi], so each
 *                bin's width is ≤ 1/32 of its lower edge (≤ 0.0134 decade: ≥ 74 bins per
 *                decade). Binning is exact (read from the float's bits).
 *   CDF          P(r ≤ x) at x = 10^(k/20), k = -160..0 (20 points per decade, 1e-8 … 1):
 *                exact at bin edges, linear within a bin (so off by at most that one bin's
 *                count); quantiles at q = 0.01 … 0.99 interpolate linearly within the bin
 *                holding the q-th pair, so they are within one bin (relative error ≤ 1/32)
 *                of the exact order statistic; 0 when it falls among the zeros.
 *   frequency    freq_τ(i) = fraction of the tokens with r_value_i > τ (τ = 0 means a ≠ 0);
 *                dead: r_value never exceeds dead_threshold (0.01) in any token (of the
 *                label); resident: r_value > resident_threshold (0.1) in at least
 *                resident_frac (90%) of the tokens. Per-neuron mean |a| and max |a|.
 *   CETT         for ε > 0, tail_t(ε) = Σ_{i: n_i(t) < ε} a_i(t)·W_out[:, i] (no bias) and
 *                FFN_t = Σ_i a_i(t)·W_out[:, i] + b_out (b_out when the model has one);
 *                CETT(ε) = mean over tokens of ‖tail_t(ε)‖₂ / ‖FFN_t‖₂ (tokens with
 *                FFN_t = 0 have nothing to truncate and are left out of the mean).
 *                CETT changes only at the distinct values of n, and ε* for a target is
 *                one of them: the largest ε with CETT(ε) ≤ target, found by a monotone
 *                search (exactly that ε when CETT is monotone, which it is in practice;
 *                otherwise an ε where CETT crosses the target: CETT(ε*) ≤ target <
 *                CETT at the next distinct n above ε*). sparsity = fraction of (token, neuron) pairs
 *                with n < ε*. If even CETT(∞) ≤ target, ε* is NULL and sparsity 1.
 *
 * Computation: one streaming pass per layer over blocks of rows (nl_h5_reader_read_acts; memory ≈
 * one block + O(labels × F) accumulators, never a whole ffn_act) for the statistics; then,
 * for CETT, W_out of that layer from the model (nl_model_layer; f16/bf16 converted one layer
 * at a time) and walks over the layer's rows again. The first walk sorts each token's neurons
 * by (n, index), accumulates a_i·W_out[:, i] in that order into a double vector and takes
 * the tail norm wherever the sorted n crosses one of cett_grid evaluation points, equally
 * spaced in float-bit space (quasi-logarithmic) over the layer's range of n; it also stores
 * ‖FFN_t‖ per token (8 bytes per token of the CETT sample). For each (label, target) the
 * bracket [last point with CETT ≤ target, next point] is then split by cett_refine points
 * per walk until it holds two adjacent floats, so ε* is exact: the same as a search over
 * every distinct n (tests/test_sparsity.c and tests/sparsity_check.py check it against
 * brute-force sweeps). Refining walks sum each token's neurons below its first evaluation
 * point neuron-major across chunks of tokens (one pass over W_out per chunk) and walk only
 * the neurons inside the brackets. A walk evaluates only points strictly inside the
 * brackets, so rounding differences between walks (≈ 1e-16) cannot contradict an earlier
 * one. Each token's arithmetic is fixed and per-token ratios are summed in 2^-40 fixed
 * point (exact integer adds), so results do not depend on the thread count or the block
 * size; ε* and the sparsity do not depend on the grid sizes when CETT is monotone. Cost:
 * about three F×D axpy sweeps per token; cett_tokens evaluates CETT on an evenly spaced
 * sample of the tokens instead.
 *
 * Tables (created IF NOT EXISTS in the results database; every row keyed by run_id
 * REFERENCES runs(id); layer -1 = all recorded layers pooled; label '' = all tokens, one
 * row per distinct non-empty document label besides; indicator 'value' | 'norm'):
 *   sparsity_layer(run_id, layer, label, indicator, tokens, neurons, mean_r, frac_zero,
 *       frac_below_0_1, frac_below_0_2, dead, resident)            PK (run_id, layer, label, indicator)
 *       tokens of the label; neurons = F (F × recorded layers for layer -1); dead and resident
 *       are counts of neurons (defined on r_value; NULL on 'norm' rows; summed over layers
 *       for layer -1).
 *   sparsity_hist(run_id, layer, label, indicator, lo, hi, count)  PK (…, indicator, hi)
 *       non-empty bins (lo, hi] of r; the zero bin is lo = hi = 0.
 *   sparsity_cdf(run_id, layer, label, indicator, x, cdf)          PK (…, indicator, x)
 *       P(r ≤ x) on the 20-per-decade grid above.
 *   sparsity_quantile(run_id, layer, label, indicator, q, value)   PK (…, indicator, q)
 *   sparsity_cett(run_id, layer, label, target, epsilon, sparsity, cett, tokens)
 *                                                                  PK (run_id, layer, label, target)
 *       epsilon = ε* (NULL when CETT(∞) ≤ target), sparsity at ε*, cett = CETT(ε*) (≤ target),
 *       tokens = tokens in the CETT mean. Layer -1: the mean over layers of sparsity and cett
 *       (epsilon NULL). Absent with no_cett.
 *   sparsity_cett_curve(run_id, layer, label, epsilon, sparsity, cett)
 *                                                                  PK (run_id, layer, label, epsilon)
 *       about 128 points of the first walk's grid: the sparsity–CETT trade-off for plots.
 *   neurons(run_id, layer, neuron, label, tokens, mean_abs, max_abs, max_r, w_out_norm,
 *       dead, resident)                                            PK (run_id, layer, label, neuron)
 *       max_r = max over tokens of r_value; dead, resident 0/1.
 *   neuron_freq(run_id, layer, neuron, label, threshold, freq)     PK (run_id, layer, label, neuron, threshold)
 * neurons and neuron_freq hold per-label rows unless label_neurons = 0 (then label '' only).
 * All tables are WITHOUT ROWID (the primary key is their only index). Each layer's rows are
 * written in one transaction once the layer is done, so an interrupted run keeps its
 * finished layers (status 'interrupted'); layer -1 rows come last.
 *
 * Checked by tests/test_sparsity.c (closed-form activations, labels, thread/block/grid
 * independence, CETT against brute force, every bad input) and tests/sparsity_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_SPARSITY_H
#define NEURONLAB_ANALYSES_SPARSITY_H

#include "neuronlab/common.h"
#include "neuronlab/h5store.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

#define NL_SPARSITY_MAX_THRESHOLDS 8
#define NL_SPARSITY_MAX_TARGETS 8
#define NL_SPARSITY_N_QUANTILES 9
/* The quantiles reported: 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99. */
extern const double nl_sparsity_quantiles[NL_SPARSITY_N_QUANTILES];

/* Options; nl_sparsity_opts_init sets the defaults noted. Caller-owned, copied by the run. */
typedef struct {
    const char *model;        /* model for CETT (path); NULL → the file's `model` attribute */
    int no_cett;              /* 1 = skip CETT (no model needed) */
    double thresholds[NL_SPARSITY_MAX_THRESHOLDS]; /* τ of neuron_freq: 0, 0.01, 0.1, 0.2 */
    int n_thresholds;         /* 1..8, each τ in [0, 1) */
    double dead_threshold;    /* 0.01 */
    double resident_threshold;/* 0.1 */
    double resident_frac;     /* 0.9, in (0, 1] */
    double cett_targets[NL_SPARSITY_MAX_TARGETS]; /* 0.1, 0.2, each in (0, 1) */
    int n_cett_targets;       /* 1..8 */
    int64_t cett_tokens;      /* 0 = CETT over every token; else an evenly spaced sample of this many */
    int block_rows;           /* rows per read; 0 → about 8 MiB of activations per block */
    int cett_grid;            /* evaluation points of the first CETT walk (≥ 2); 256 */
    int cett_refine;          /* points per bracket in each refining walk (≥ 1); 4096 */
    int label_neurons;        /* 1: per-label rows in neurons/neuron_freq too (default) */
} nl_sparsity_opts;

void nl_sparsity_opts_init(nl_sparsity_opts *o);

/* One summary row (also written to sparsity_layer / sparsity_quantile / sparsity_cett). */
typedef struct {
    int layer;           /* -1 = all recorded layers */
    const char *label;   /* "" = all tokens; owned by the analysis */
    int64_t tokens;      /* tokens of the label */
    int64_t neurons;     /* F, or F × recorded layers */
    struct {
        double mean_r, frac_zero, frac_below_0_1, frac_below_0_2;
        double quantile[NL_SPARSITY_N_QUANTILES]; /* at nl_sparsity_quantiles */
    } ind[2];            /* [0] value, [1] output norm */
    int64_t dead, resident;
    int n_cett;          /* targets with a result (0 when CETT was skipped or undefined) */
    struct {
        double target;
        double epsilon;  /* ε*; NAN when CETT(∞) ≤ target, and for layer -1 */
        double sparsity; /* fraction of pairs with n < ε* */
        double cett;     /* CETT(ε*) */
        int64_t tokens;  /* tokens in the CETT mean */
    } cett[NL_SPARSITY_MAX_TARGETS];
} nl_sparsity_row;

typedef struct nl_sparsity nl_sparsity; /* the analysis state, private to sparsity.c */

/* What a run leaves for printing. Caller-owned: zero-initialise, pass to nl_sparsity_run,
 * then nl_sparsity_result_release (also after an error). Pointers are owned by the result. */
typedef struct {
    int64_t run_id;           /* the run in the database; -1 when it was never begun */
    const nl_h5_info *info;   /* the activation file's description (complete = 0 for an
                               * interrupted record); NULL when the inputs were refused */
    const char *model;        /* the model path used for CETT; NULL with no_cett */
    int from_summary;         /* 1: acts_path was a summary (record --stats), see nl_sparsity_run */
    const nl_sparsity_row *rows; /* (n_rows) the finished layers' summary rows, in order: each
                               * recorded layer ascending, then layer -1; within a layer
                               * label "" first, then the labels in byte order */
    int n_rows;
    nl_sparsity *impl;        /* private: owns everything above */
} nl_sparsity_result;

/* Creates the tables above when missing (idempotent). */
nl_status nl_sparsity_create_tables(nl_ctx *ctx, nl_results *db);

/* Runs the analysis of the activation file at acts_path into db (opts NULL → defaults).
 * First validates the inputs, before anything is written: the activation file (nl_h5_reader_open's
 * errors; a file without ffn_act, without recorded layers or without tokens is refused
 * naming it), and unless no_cett the model (opts->model or the file's attribute), whose
 * n_layers, d_model and d_ff must equal the file's, and whose W_out column norms must match
 * the file's first recorded layer's w_out_norm (relative 1e-4):
 *   'tiny/' does not match 'acts.h5': d_ff 128 vs 100
 * Options out of range, and thresholds or CETT targets given twice, are NL_EINVAL. Then a run
 * of kind "sparsity" (source = the .h5 path, model and dataset from the file, params as JSON)
 * with the tables above, ended by nl_results_finish_run: 'complete', 'interrupted'
 * (nl_interrupted, polled per block of rows and while writing a layer, set: returns NL_EINTR,
 * finished layers kept, message "interrupted after N of M layers") or 'failed' (the error's
 * message, e.g. "'acts.h5': layer 2 token 7 has a non-finite activation" or "'acts.h5' is
 * corrupt: /layers/2/w_out_norm[5] = nan is not a norm": no NaN reaches the database). prog (may be NULL) gets the rows read (several passes per layer with
 * CETT; its total is raised as passes are added). Threads: ctx->n_threads (0 = all cores).
 * acts_path may be a summary (`record --stats`, summary_h5.h; told by its format attribute):
 * the same tables but CETT are read from its accumulators instead of computed from rows —
 * token counts, frac_zero / frac_below_*, histograms (so CDF points and quantiles, which
 * come from the histogram either way), frequencies, max_r, max_abs, dead and resident
 * exactly as from the dump of the same run; mean_r and mean_abs up to the order of the
 * double sums (relative ≤ 1e-12; merged summaries sum per part). Refused (NL_EINVAL, naming
 * what is missing) unless no_cett, and when a frequency or resident threshold is not one
 * of the summary's; params gain "input":"summary". */
nl_status nl_sparsity_run(nl_ctx *ctx, const nl_sparsity_opts *opts, const char *acts_path, nl_results *db,
                          nl_progress *prog, nl_sparsity_result *out);
void nl_sparsity_result_release(nl_sparsity_result *r); /* zeroes it; a zeroed struct is a no-op */

#endif
