/* lens.h — the logit lens: every layer's residual stream read out through the model's final
 * norm and unembedding (the engine of `neuronlab lens`).
 *
 * Definitions (README "The logit lens"): for a predicted position t (token t predicts token
 * t+1, counted exactly as perplexity.h counts them: response only for prompt/response rows,
 * sliding windows, each prediction once) and a depth j,
 *   r_j(t)   = the residual stream after block j (hook point NL_HOOK_RESID), j = 0 … L−1;
 *              by convention layer −1 is the embedding output (token embedding, plus the
 *              learned position for GPT-2-style models) before block 0;
 *   z_j(t)   = W_U · norm_f(r_j(t)) + b_U   (V logits; norm_f = the final norm, nl_model_head)
 *   loss_j   = −log softmax(z_j)[token t+1]                     (nats)
 *   agree_j  = 1 when argmax z_j = argmax z_{L−1} (ties: the lower id), else 0
 *   kl_j     = KL(p_{L−1} ‖ p_j) = Σ_v p_{L−1}(v) (log p_{L−1}(v) − log p_j(v)),  p = softmax(z)
 * z_{L−1} is the model's own output, so at the last layer loss equals `ppl`'s loss (the same
 * norm, the same GEMM on blocks of 32 rows, the same log-sum-exp in double: bit for bit), agree
 * = 1 and kl = 0 exactly.
 * Computation: one forward pass; the chunk's residuals (L+1, T, D) are kept, then for each
 * block of 32 predicted rows the final logits (32, V) and one layer's logits (32, V) at a time:
 * memory is (L+1)·B·D + 2·32·V floats besides the forward pass, never T × V per layer. Cost:
 * L+1 unembeddings per token. Results do not depend on the batch size or the threads (each
 * row's numbers depend on that row only; sums are taken in token order). Serial only: under
 * MPI (more than one rank) the run is refused.
 *
 * Table (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   lens(run_id, label, layer, tokens, loss, top1_agree, kl)   PK (run_id, label, layer)
 *       label '' = all documents, else one row set per non-empty label of the dataset;
 *       layer −1 (embedding) … L−1; tokens = predictions counted; loss = mean loss_j, top1_agree
 *       = mean agree_j, kl = mean kl_j over them (NULL when tokens = 0).
 * The run: kind "lens", model / dataset from the options (default the paths), params
 * {"ctx":C,"stride":S,"batch":B,"embedding_layer":-1} (exact text).
 * Rows are written in one transaction at the end: an interrupted run keeps none.
 * Checked by tests/test_lens.c (last layer = nl_ppl_run; kl 0; every layer against PyTorch
 * fixtures of tests/reference/gen_lens_fixtures.py) and tests/lens_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_LENS_H
#define NEURONLAB_ANALYSES_LENS_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

/* Options; nl_lens_opts_init sets the defaults noted. Caller-owned; pointers borrowed. */
typedef struct {
    int stride;                  /* sliding-window stride as in nl_forward_doc (≤ 0: ctx/2) */
    int batch;                   /* provenance: tokens per forward call as asked (≤ 0: nl_forward_max_T) */
    const char *model, *dataset; /* provenance (NULL: the model's path, the dataset's path) */
} nl_lens_opts;
void nl_lens_opts_init(nl_lens_opts *o);

/* Sums of one (label, layer) cell. */
typedef struct {
    int64_t tokens;
    double loss, agree, kl; /* sums over the predictions */
} nl_lens_sum;

/* What a run leaves. Caller-owned: zero-initialise, nl_lens_result_release. */
typedef struct {
    int64_t run_id;     /* -1 without a database or when never begun */
    int n_layers;       /* L: depths are L+1 (index 0 = layer −1, the embedding) */
    int n_labels;       /* labels of the dataset (ds->labels) */
    nl_lens_sum *sums;  /* (n_labels + 1, L + 1) row 0 = all documents, row 1+k = ds->labels[k]; owned */
} nl_lens_result;
void nl_lens_result_release(nl_lens_result *r); /* zeroes it; a zeroed struct is a no-op */
/* The cell of label row li (0 = all, 1+k = label k) and layer l (−1 … L−1). */
const nl_lens_sum *nl_lens_cell(const nl_lens_result *r, int li, int layer);

nl_status nl_lens_create_tables(nl_ctx *ctx, nl_results *db);

/* Runs the lens over ds with f (an observer on NL_HOOK_RESID for the call, removed before
 * returning). db may be NULL (nothing stored). Errors: NL_EUNSUPPORTED under MPI with more than
 * one rank, NL_ENOMEM, the forward pass's errors (a non-finite loss at any layer is NL_EFORMAT
 * naming the layer and the document's line). progress (may be NULL) counts tokens. */
nl_status nl_lens_run(nl_ctx *ctx, const nl_lens_opts *opts, nl_forward *f, const nl_dataset *ds, nl_results *db,
                      nl_progress *progress, nl_lens_result *out);

#endif
