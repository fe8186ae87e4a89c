/* forward.h — the batched, instrumented forward pass.
 *
 * Rules: tokens go through T at a time (one GEMM per weight matrix per call, never a
 * GEMV per token when scoring); every call appends its tokens to the KV cache, so a long
 * sequence is scored in consecutive calls and generation is the T = 1 case. Compute is
 * fp32; GEMMs run in OpenBLAS, attention and element-wise loops in OpenMP threads.
 * Checked by tests/test_forward.c against PyTorch fixtures and stories260K.
 */
#ifndef NEURONLAB_FORWARD_H
#define NEURONLAB_FORWARD_H

#include "neuronlab/hooks.h"
#include "neuronlab/model.h"

typedef struct nl_forward nl_forward;

/* max_T: most tokens per call; max_P: KV-cache capacity (context). The model is borrowed
 * and must outlive the forward state. */
nl_status nl_forward_create(nl_ctx *ctx, nl_model *m, int max_T, int max_P, nl_forward **out);
void nl_forward_destroy(nl_forward *f); /* NULL is a no-op */

/* Hook registry (borrowed; add hooks before running). */
nl_hooks *nl_forward_hooks(nl_forward *f);

/* Starts a new sequence (empties the KV cache). */
void nl_forward_reset(nl_forward *f);
/* Tokens currently in the KV cache. */
int nl_forward_pos(const nl_forward *f);
/* Limits given at creation: tokens per call, KV-cache capacity. */
int nl_forward_max_T(const nl_forward *f);
int nl_forward_max_P(const nl_forward *f);
nl_model *nl_forward_model(const nl_forward *f);

/* Runs tokens (T ≤ max_T) after the cached ones. logits: (T, V) or NULL to skip the head.
 * Fails with NL_EINVAL when a token id is outside [0, V) or the cache would overflow. */
nl_status nl_forward_run(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, int T, float *logits);

/* Like nl_forward_run, but returns per-token negative log-likelihoods instead of logits:
 * nll[t] = -log p(targets[t] | tokens[..t]) for targets[t] ≥ 0, and 0 where targets[t] < 0.
 * The LM head is evaluated in row blocks so memory stays small for large vocabularies. */
nl_status nl_forward_nll(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, const int32_t *targets,
                         int T, double *nll);

#endif
