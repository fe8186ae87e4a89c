/* train_ops.h — the forward and backward kernels of the trainer (fp32), on whole tensors.
 *
 * Rules: no allocation (callers pass every buffer, sized once); matrix products go to OpenBLAS
 * cblas_sgemm (forward y = x·Wᵀ, backward dx = dy·W and dW += dyᵀ·x); attention runs one
 * OpenMP task per (window, head), each with single-threaded sgemm calls; element-wise loops are
 * OpenMP-parallel above NL_PAR_MIN elements. Every reduction has a fixed order (per row or per
 * column, never across threads), so results do not depend on the thread count except through
 * OpenBLAS's own partitioning, and a run repeats bit for bit with the same thread count.
 * Forward numerics equal the inference kernels of ops.h (nl_rmsnorm, nl_act_scalar, nl_rope),
 * so the trainer's evaluation matches `neuronlab ppl` on the saved model.
 *
 * Dimension letters (besides common.h): B windows in a micro-batch, S tokens per window
 * (seq_len), T = B·S rows, Q = H·Dh, KV = Hk·Dh, W = Q + 2·KV (fused q|k|v row).
 * Checked by tests/test_train_model.c (PyTorch autograd fixtures and finite differences).
 */
#ifndef NEURONLAB_TRAIN_OPS_H
#define NEURONLAB_TRAIN_OPS_H

#include "neuronlab/model.h"

/* y (T, n_out) = x (T, n_in) · Wᵀ (+ y when accumulate), W (n_out, n_in) as torch.nn.Linear. */
void nl_linear_fwd(float *y, const float *x, const float *w, int T, int n_in, int n_out, int accumulate);
/* dx (T, n_in) = dy (T, n_out) · W (added to dx when dx_accumulate; skipped when dx is NULL);
 * dw (n_out, n_in) += dyᵀ · x. */
void nl_linear_bwd(float *dx, int dx_accumulate, float *dw, const float *dy, const float *x, const float *w, int T,
                   int n_in, int n_out);

/* y (T, D) = w ⊙ x · rstd, rstd (T) = 1/sqrt(mean(x²) + eps) (sum in double, as nl_rmsnorm). */
void nl_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int T, int D, float eps);
/* dx (T, D) += ∂/∂x, dw (D) += ∂/∂w of Σ dy ⊙ y, with rstd from the forward. */
void nl_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w, int T,
                    int D);

/* Gated FFN activation: gu (T, 2F) rows [g | u] (the fused gate|up projection);
 * a (T, F) = act(g) ⊙ u. */
void nl_gated_act_fwd(float *a, const float *gu, int T, int F, nl_act act);
/* dgu (T, 2F) = [da ⊙ u ⊙ act'(g) | da ⊙ act(g)]. act ∈ silu, gelu (erf), relu, relu2 (derivatives as
 * torch autograd: relu'(0) = 0). */
void nl_gated_act_bwd(float *dgu, const float *da, const float *gu, int T, int F, nl_act act);
/* 1 when the trainer has a backward pass for act. */
int nl_act_trainable(nl_act act);

/* L1 penalty: rowsum (T) = Σ_i |a[t, i]| per row (double); da (T, F) += c · sign(a) (sign(0) = 0,
 * as torch.abs's gradient). */
void nl_abs_rowsum(double *rowsum, const float *a, int T, int F);
void nl_l1_bwd(float *da, const float *a, int64_t n, float c);

/* RoPE tables cs, sn (S, half) = cos, sin of pos · inv_freq[i] computed in f32 (as torch and nl_rope). */
void nl_rope_table(float *cs, float *sn, int S, int half, const float *inv_freq);
/* Rotates (HF rotate-half pairing i, i + Dh/2) the first n_heads·Dh columns of x (T, ld), row t at
 * position t mod S; inverse = 1 rotates by −angle (the backward pass of the rotation). */
void nl_rope_rows(float *x, int ld, int T, int S, int n_heads, int Dh, const float *cs, const float *sn, int inverse);

/* Query rows per block of the causal attention products (block [r0, r1) reads keys [0, r1) only). */
#define NL_ATT_BLOCK 64

/* Causal grouped-query attention over B windows of S tokens. qkv (T, W) post-RoPE rows [q | k | v];
 * query head h reads kv head h / (H/Hk). P (B·H, S, S) gets the softmax probabilities of row i in
 * columns [0, r1) of its block (zero for j > i; columns ≥ r1 are not written), att (T, Q) the head
 * outputs. Scores are (q·kᵀ)·Dh^-½. */
void nl_attention_fwd(float *att, float *P, const float *qkv, int B, int S, int H, int Hk, int Dh);
/* dqkv (T, W) = gradient of Σ datt ⊙ att w.r.t. qkv (overwritten). dkv (T, 2Q) and dp (n_scratch,
 * S, S) are scratch; n_scratch ≥ the OpenMP threads used (the call uses at most n_scratch). */
void nl_attention_bwd(float *dqkv, float *dkv, float *dp, int n_scratch, const float *datt, const float *P,
                      const float *qkv, int B, int S, int H, int Hk, int Dh);

/* Cross-entropy over logits (T, V) and targets (T) (targets < 0 are ignored: loss 0, no gradient).
 * loss (T) = logsumexp(z) − z[target] per row (double). When grad_scale != 0 the logits are
 * replaced by grad_scale · (softmax(z) − onehot(target)) (zero rows for ignored targets). */
void nl_cross_entropy(float *logits, double *loss, const int32_t *targets, int T, int V, float grad_scale);

/* Σ x[i]² over n floats in double, in fixed-size chunks (same result for any thread count). */
double nl_sum_sq(const float *x, int64_t n);

#endif
