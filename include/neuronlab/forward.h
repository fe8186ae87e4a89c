/* forward.h — the batched, instrumented forward pass.
 *
 * Rules: tokens go through T at a time (one GEMM per weight matrix per call, never a
 * GEMV per token when scoring); every call appends its tokens to the KV cache, so a long
 * sequence is scored in consecutive calls and generation is the T = 1 case. Compute is
 * fp32; GEMMs run in OpenBLAS, attention and element-wise loops in OpenMP threads.
 *
 * Extension points: hooks (hooks.h) at every hook point of every layer, and FFN replacement
 * (nl_forward_set_ffn below): a layer's FFN can be computed by another implementation (a
 * sparse expert FFN, a native MoE block) that computes only what it needs. With no hooks and
 * no replacement the pass computes exactly what it always did (bit-identical logits).
 *
 * Threads: one forward state belongs to one thread at a time. Hooks and replaced FFNs are
 * called on the thread that called nl_forward_run / nl_forward_nll, one layer after another;
 * inside they may use OpenMP and BLAS. Change hooks or FFNs only between runs.
 *
 * Checked by tests/test_forward.c against PyTorch fixtures and stories260K, and by its FFN
 * replacement cases (dense fallback bit-identical, half the neurons by smaller GEMMs equal to
 * masking the other half, FFN input hook).
 */
#ifndef NEURONLAB_FORWARD_H
#define NEURONLAB_FORWARD_H

#include "neuronlab/hooks.h"
#include "neuronlab/model.h"

typedef struct nl_forward nl_forward;

/* max_T: most tokens per call; max_P: KV-cache capacity (context). The model is borrowed
 * and must outlive the forward state. A small f16/bf16 model (all layers in f32 within
 * NL_KEEP_F32_BYTES) keeps its layers converted after their first use (nl_model_keep_f32)
 * instead of converting each layer on every call; larger ones stream one layer at a time. */
#define NL_KEEP_F32_BYTES ((size_t)256 << 20)
nl_status nl_forward_create(nl_ctx *ctx, nl_model *m, int max_T, int max_P, nl_forward **out);
void nl_forward_destroy(nl_forward *f); /* NULL is a no-op */

/* Number format of the matrix products. NL_COMPUTE_F32 (the default): everything in f32.
 * NL_COMPUTE_BF16 (`--compute bf16`, approximate): the attention projections, the dense FFN and
 * the LM head multiply bf16-rounded activations by bf16 packed weights with f32 accumulation
 * (AVX512-BF16, gemm_bf16.h); attention scores/softmax/values, norms, RoPE, activations,
 * MoE experts and every hooked activation stay f32. Approximate: the NLL moved by 1.1e-5 relative
 * on the SiLU zoo model, 2.7e-6 on the bench 100M model, 1.35e-3 on stories260K (tests/bf16.sh). */
typedef enum { NL_COMPUTE_F32 = 0, NL_COMPUTE_BF16 } nl_compute;
/* Layers' bf16 packs are kept after first use when all of them fit in this many bytes
 * (nl_model_keep_bf16), else packed one layer at a time on every call. */
#define NL_KEEP_BF16_BYTES ((size_t)1 << 30)
/* Chooses the compute format for the next calls; returns the one in effect: NL_COMPUTE_F32
 * when bf16 was asked for and the CPU has no AVX512-BF16 (nl_bf16_supported; the caller tells
 * the user). Set it before nl_forward_create_like / running. */
nl_compute nl_forward_set_compute(nl_forward *f, nl_compute c);
nl_compute nl_forward_compute(const nl_forward *f);
/* "f32" or "bf16": the --compute spelling, stored with results (nl_run_info.compute, the
 * activation and summary files' "compute" attribute). */
const char *nl_compute_name(nl_compute c);

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

/* Document-parallel scoring. For a model whose GEMMs are too small to split well over threads
 * (stored weights and f32 layers within NL_KEEP_F32_BYTES), or a larger one whose weights are
 * used as stored (f32, nothing converted) when the extra states fit NL_KEEP_F32_BYTES — split
 * GEMMs synchronise the threads at every product; whole documents per thread do not — with no
 * experts and a plain forward state (no hooks, no replaced FFN, not in MPI pipeline mode), returns how many
 * independent forward states are worth running side by side (omp_get_max_threads()); 1
 * otherwise. Each state then runs its own documents with single-threaded kernels: no barrier
 * inside a document, which is also what keeps a machine shared with other busy processes
 * from stalling the run. */
int nl_forward_doc_threads(const nl_forward *f);
/* The same rule for a caller that runs the documents on states made by nl_forward_create_like and
 * installs its own hooks on each of them (perplexity.h nl_ppl_run_states): f may hold the
 * caller's own `own` hooks (which the serial loop runs) and no other (none declared concurrent);
 * own_ffn = 1: f's replaced FFNs are the caller's own too, installed on each state by the caller
 * (else a replaced FFN keeps the serial loop, as in nl_forward_doc_threads). */
int nl_forward_doc_threads_own(const nl_forward *f, int own, int own_ffn);
/* A new forward state over f's model with f's limits and no hooks (caller owns it). Converts
 * every layer and the head first, so the states can then run concurrently (the model's f32
 * layers are only read). */
nl_status nl_forward_create_like(nl_ctx *ctx, nl_forward *f, nl_forward **out);
/* yes = 1 declares that the hooks registered on f only read their user data, so several
 * forward states may run them at once: nl_forward_doc_threads then allows them and
 * nl_forward_create_like copies them. Set it after registering, clear it (0) on removal. */
void nl_forward_hooks_concurrent(nl_forward *f, int yes);

/* Runs tokens (T ≤ max_T) after the cached ones. logits: (T, V) or NULL to skip the head.
 * Fails with NL_EINVAL when a token id is outside [0, V) or the cache would overflow. */
nl_status nl_forward_run(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, int T, float *logits);

/* Like nl_forward_run, but returns per-token negative log-likelihoods instead of logits:
 * nll[t] = -log p(targets[t] | tokens[..t]) for targets[t] ≥ 0, and 0 where targets[t] < 0.
 * The LM head is evaluated in row blocks so memory stays small for large vocabularies. */
nl_status nl_forward_nll(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, const int32_t *targets,
                         int T, double *nll);

/* ---- several windows in one pass ----------------------------------------------------------
 *
 * Scoring a dataset runs many short independent windows (each from position 0). A windows state
 * takes n of them at once, concatenated: every matrix product runs once over all their rows (a
 * GEMM of n·T rows packs each weight matrix once instead of n times), while positions, RoPE and
 * attention stay per window. Each row gets the same nll as its window alone gives.
 *
 * nl_forward_windows_fit: 1 when n_states windows states of n_windows windows each fit in
 * NL_WINDOWS_BYTES, and f allows them: no hooks, no replaced FFN, no MoE layers, no pipeline.
 * nl_forward_create_windows: a state of f's model and compute format for n_windows windows of up
 * to nl_forward_max_T(f) tokens each (a window is one batch: its own max_T and max_P are
 * n_windows · max_T(f)); owned by the caller (nl_forward_destroy). It scores with
 * nl_forward_nll_windows only, and keeps the keys and values of one layer at a time (every
 * pass starts at position 0).
 * nl_forward_nll_windows: windows w = 0 … n_win-1 of lens[w] tokens (1 … max_T(f)), concatenated
 * in tokens and targets (Σ lens ≤ the state's max_T); nll and targets as nl_forward_nll, row by
 * row. NL_EINVAL for a length or token id out of range. */
#define NL_WINDOWS_BYTES ((size_t)512 << 20)
int nl_forward_windows_fit(const nl_forward *f, int n_states, int n_windows);
nl_status nl_forward_create_windows(nl_ctx *ctx, nl_forward *f, int n_windows, nl_forward **out);
nl_status nl_forward_nll_windows(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, const int32_t *targets, const int *lens,
                                 int n_win, double *nll);

/* ---- FFN replacement ----------------------------------------------------------------------
 *
 * Per layer, the forward pass computes
 *     x   = the normalised FFN input (T, D);  fire NL_HOOK_FFN_IN on x (interveners may edit it)
 *     out = FFN_l(x)                           (T, D); the dense FFN or the layer's replacement
 *     fire NL_HOOK_FFN_OUT on out, then add out to the residual stream.
 * FFN_IN and FFN_OUT are fired by the forward pass for every FFN. The dense FFN fires
 * FFN_PRE, FFN_UP and FFN_ACT itself; a replacement may fire them through nl_ffn_fire (rows of
 * the tensors it passes must be the call's T tokens, in order) or not at all. */

/* What a replaced FFN is given; valid only during the call (all pointers borrowed). */
typedef struct {
    int layer;               /* 0 ≤ layer < L */
    int T, D, F;             /* tokens of this call, d_model, d_ff (config) */
    int pos0;                /* sequence position of row 0 */
    const int32_t *tokens;   /* (T) token ids of the rows */
    const nl_config *config; /* ffn_gated, act, … */
    const nl_layer *w;       /* the layer's weights in f32: w_gate (F, D), w_up (F, D), b_up (F),
                              * w_down (D, F), b_down (D); see model.h */
    float *pre, *up;         /* (T, F) each: scratch owned by the forward pass, free for the
                              * callee's use (nl_ffn_dense uses both); contents undefined on entry */
    const nl_hooks *hooks;   /* the forward pass's registry, for nl_ffn_fire */
} nl_ffn_call;

/* An FFN implementation. x: (T, D) input, read-only (it is the buffer the FFN_IN hooks saw);
 * out: (T, D), to be filled completely (it does not alias x). Called on the forward pass's
 * thread; may use OpenMP/BLAS inside; must not run or reconfigure the same forward state.
 * user is the pointer given to nl_forward_set_ffn. A status other than NL_OK (message in ctx
 * via nl_errorf) stops the forward pass with that status, like a failing hook. */
typedef nl_status (*nl_ffn_fn)(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out);

/* The dense FFN the forward pass runs by default: gated act(x·W_gateᵀ) ⊙ (x·W_upᵀ) or plain
 * act(x·W_inᵀ + b_in), then ·W_downᵀ (+ b_down); fires FFN_PRE, FFN_UP (gated) and FFN_ACT on
 * call->pre (call->up as second buffer). user is ignored. A replacement can fall back to it
 * for some calls, or a test can check a replacement against it. */
nl_status nl_ffn_dense(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out);

/* The native mixture-of-experts FFN (model.h, DESIGN §10) that the forward pass runs on every
 * MoE layer of a model with n_experts > 0 (call->w->moe == 1): router GEMM, softmax, top-k
 * (nl_moe_topk), tokens grouped by expert with one gated-FFN GEMM chain per selected expert
 * (unselected experts are never computed), weighted scatter-add in increasing expert order,
 * plus the sigmoid-gated shared expert when d_shared > 0. It fires no inner hook points
 * (FFN_PRE, FFN_UP, FFN_ACT; see hooks.h). user: the forward pass's scratch, as returned by
 * nl_forward_get_ffn for an MoE layer, or NULL (buffers are then allocated per call).
 * NL_EINVAL when the layer is not an MoE layer. */
nl_status nl_ffn_moe(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out);

/* Routing of T tokens: logits (T, E) router logits, replaced by p = softmax per row; sel (T, k)
 * the chosen experts, largest p first; wts (T, k) their p, divided by their sum when
 * c->norm_topk_prob. E = c->n_experts, k = c->n_experts_per_tok. */
void nl_moe_route(const nl_config *c, float *logits, int T, int *sel, float *wts);

/* The k largest of p (n ≤ NL_MOE_MAX_EXPERTS values, 1 ≤ k ≤ n): idx (k) their indices, val (k, or NULL) their values, largest
 * first. Ties are resolved exactly as torch.topk(p, k) does on CPU (PyTorch's topk_impl_loop:
 * std::partial_sort when k·64 ≤ n, else std::nth_element then std::sort of the first k-1, with
 * libstdc++'s algorithms reproduced step by step), which is not "lowest index first": eight
 * equal values with k = 2 give indices 6, 5; sixty with k = 4 give 39, 40, 41, 38. NaN counts
 * as the largest value. */
void nl_moe_topk(const float *p, int n, int k, int *idx, float *val);

/* Fires hook point p (width columns, call->T rows) of call->layer on x, as the forward pass
 * does: interveners then observers, nothing when no hook wants it. For replacements that want
 * to expose FFN_PRE / FFN_UP / FFN_ACT. */
nl_status nl_ffn_fire(const nl_ffn_call *call, nl_ctx *ctx, nl_hook_point p, int width, float *x);

/* Replaces the FFN of one layer (0 ≤ layer < L) or of every layer (layer = -1) by fn, called
 * with user (borrowed: must outlive the runs or the next set). fn = NULL restores the layer's own
 * FFN: the dense FFN, or nl_ffn_moe on a mixture-of-experts layer (user ignored). NL_EINVAL for
 * another layer. Only between runs. */
nl_status nl_forward_set_ffn(nl_forward *f, nl_ctx *ctx, int layer, nl_ffn_fn fn, void *user);
/* The replacement of layer l (0 ≤ l < L) and its user pointer, or NULL when the layer runs
 * the dense FFN (so a wrapper can chain to a previous replacement). user may be NULL. A
 * mixture-of-experts layer that was not replaced returns nl_ffn_moe and its scratch, so code
 * that needs the dense (T, F) activation sees that the layer is not dense. */
nl_ffn_fn nl_forward_get_ffn(const nl_forward *f, int layer, void **user);

#endif
