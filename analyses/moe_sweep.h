/* moe_sweep.h — what `neuronlab moe-sweep` and `neuronlab moe-usage` compute beyond perplexity:
 * whole-model FLOPs per token, expert usage by label and by document, a 2-D PCA of the
 * documents' usage vectors, AP of expert usage against each label, and their SQLite tables.
 * The commands (src/cli/cmd_moe_sweep.c) run the passes; this module holds the pure parts.
 *
 * Definitions (README "Sweeps and expert usage"; a multiply-add = 2 FLOPs, like moe.h):
 *   whole-model FLOPs per token = Σ over layers of [attention projections 2·D·(H·Dh) (q) +
 *     2·2·D·(Hk·Dh) (k, v) + 2·(H·Dh)·D (o) + attention products 4·H·Dh·keys (q·k and the
 *     weighted sum of v over `keys` cached positions) + the layer's FFN] + the LM head 2·D·V.
 *     Norms, RoPE, softmax, biases and activations are not counted (as in nl_moe_flops_dense).
 *   keys of a dataset = the mean over its tokens of (the token's position in the window that
 *     scores it) + 1, for context C and stride S (perplexity.h): token j < C sits at j; a later
 *     one is scored by window k = (j − C)/S + 1 (integer division) at j − k·S.
 *   usage        with the expert FFN attached (router, K, fill), every token of a document is
 *                counted once (the window that scores it, perplexity.h): count[d, l, e] =
 *                tokens of document d whose selection at MoE layer l contains expert e.
 *   token_frac   per label f, layer l, expert e: Σ_{d∈f} count[d, l, e] / Σ_{d∈f} tokens(d) —
 *                the fraction of f's tokens routed to e; Σ_e token_frac = K exactly.
 *   doc vector   u_d = (count[d, l, e] / tokens(d)) over (l, e), layers ascending then experts
 *                (Lm·E values, each layer's sum K).
 *   PCA          of the labelled documents' vectors: centred, the two leading eigenvectors of
 *                the covariance (Xcᵀ·Xc when dims ≤ docs, else through the Gram matrix Xc·Xcᵀ,
 *                same scores), eigenvalues by cyclic Jacobi in double; scores = Xc·v. Sign: each
 *                score column's entry of largest |value| is positive (ties: the lower document).
 *                variance[k] = λ_k / (n − 1).
 *   AP           for each (layer, expert, label): nl_ability_ap of the documents' usage of that
 *                expert (token fraction) against y = 1[label = f] over the labelled documents
 *                (analyses/ability.h: ties form one step); ap_shuffled: the same with y
 *                permuted by nl_rng_permutation(nl_rng_derive(seed, NL_MOE_USAGE_SHUFFLE, f)).
 *                Baseline: the label's share of the documents (ability.h).
 *
 * Tables (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   moe_sweep(run_id, router TEXT ('dense' for the dense baseline), fill TEXT ('none' there),
 *       k INTEGER (E for dense), k_frac REAL (K / E), label TEXT ('' = all documents),
 *       tokens INTEGER (predictions), nll REAL, ppl REAL (NULL when tokens = 0),
 *       ffn_flops REAL (FFN FLOPs per token summed over all layers: dense layers, MoE layers
 *       with router and static adds, nl_moe_flops_layer), ffn_frac REAL (÷ the dense model's),
 *       expert_frac REAL (the shared and selected experts' FLOPs alone, no router and no fill,
 *       ÷ the dense FFN's: where the oracle would sit if its selection were free; 1 for dense),
 *       model_flops REAL, model_frac REAL (whole model per token, above, at the dataset's keys),
 *       tokens_per_s REAL (dataset tokens ÷ wall seconds of the scoring pass), recall REAL
 *       (router recall, mean over the token × MoE-layer rows of the pass; NULL for dense),
 *       dense INTEGER (1: the dense baseline row), cpu_s REAL (CPU seconds of this process during
 *       the scoring pass, all threads: tokens / cpu_s is the throughput per busy core, which a
 *       machine shared with other jobs changes far less than the wall-clock tokens_per_s),
 *       PRIMARY KEY (run_id, router, fill, k, label))
 *   expert_usage(run_id, layer, expert, label, token_frac)      PK (run_id, layer, expert, label)
 *   expert_usage_doc(run_id, doc, layer, expert, frac)          PK (run_id, doc, layer, expert)
 *       doc = the 0-based index of the document in the dataset (labelled documents only)
 *   expert_usage_pca(run_id, doc, label, pc1, pc2)              PK (run_id, doc)
 *   expert_ap(run_id, layer, expert, label, ap, ap_shuffled, baseline) PK (run_id, layer, expert, label)
 *
 * Checked by tests/test_moe_sweep.c (FLOPs against counted multiply-adds, keys, PCA against a
 * numpy fixture, usage fractions, AP rows) and tests/moe_sweep_cli.sh (end to end).
 */
#ifndef NEURONLAB_ANALYSES_MOE_SWEEP_H
#define NEURONLAB_ANALYSES_MOE_SWEEP_H

#include "neuronlab/common.h"
#include "neuronlab/dataset.h"
#include "neuronlab/model.h"
#include "neuronlab/results.h"

#define NL_MOE_USAGE_SHUFFLE 0x6d7573 /* nl_rng_derive purpose: label shuffling of expert_ap */
#define NL_PCA_MAX_DIM 4096           /* min(documents, dims) the Jacobi PCA accepts */

/* Whole-model FLOPs per token (definition above). ffn (L): each layer's FFN FLOPs per token, or
 * NULL for the dense FFN of every layer (nl_moe_flops_dense). */
double nl_model_flops_token(const nl_config *c, const double *ffn, double keys);
/* Attention keys of a dataset's tokens (definition above), C ≥ 1, 1 ≤ S ≤ C (S ≤ 0: C/2). */
double nl_moe_sweep_mean_keys(const nl_dataset *ds, int C, int S);

/* PCA of X (n, p) row-major (definition above): scores (n, 2), variance (2) (may be NULL).
 * Needs n ≥ 2; a third of the components may be 0 (constant data: scores 0). NL_EINVAL when
 * min(n, p) > NL_PCA_MAX_DIM or n < 2; NL_ENOMEM. */
nl_status nl_pca2(nl_ctx *ctx, const double *X, int n, int p, double *scores, double *variance);

/* Expert usage counts of one run (definition above). Caller-owned: nl_moe_usage_init (zeroed
 * counts, documents of ds) / nl_moe_usage_release. */
typedef struct {
    int n_layers;      /* Lm: MoE layers */
    int *layers;       /* (Lm) model layer of each, ascending */
    int E, K;
    int n_docs;        /* Dc: documents of the dataset */
    int64_t *tokens;   /* (Dc) tokens counted per document */
    int64_t *count;    /* (Dc, Lm, E) */
} nl_moe_usage;
nl_status nl_moe_usage_init(nl_ctx *ctx, nl_moe_usage *u, const int *layers, int n_layers, int E, int K, int n_docs);
void nl_moe_usage_release(nl_moe_usage *u);
/* Adds the selections sel (T, K) of MoE layer index li (0 … Lm−1) for rows [from, T) of a call on
 * document d. */
void nl_moe_usage_add(nl_moe_usage *u, int d, int li, const int32_t *sel, int T, int from);
/* Adds rows to document d's token count (once per chunk, not per layer). */
void nl_moe_usage_add_tokens(nl_moe_usage *u, int d, int64_t rows);

/* Tables above (idempotent). */
nl_status nl_moe_sweep_create_tables(nl_ctx *ctx, nl_results *db);

/* Writes expert_usage, expert_usage_doc, expert_usage_pca and expert_ap of run for the usage u
 * of dataset ds (labelled documents only; labels ascending in byte order), in one transaction.
 * Errors: fewer than two distinct non-empty labels ("'DATA': moe-usage needs documents of at
 * least two labels, found N" naming ds->path), a labelled document without tokens counted. */
nl_status nl_moe_usage_write(nl_ctx *ctx, nl_results *db, int64_t run, const nl_moe_usage *u, const nl_dataset *ds,
                             uint64_t seed);
/* The label check of nl_moe_usage_write alone (before any pass runs). */
nl_status nl_moe_usage_check_labels(nl_ctx *ctx, const nl_dataset *ds);

#endif
