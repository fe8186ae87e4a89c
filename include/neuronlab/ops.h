/* ops.h — the numeric kernels of the forward pass (fp32), each on whole (T × width) tensors.
 *
 * Rules: no allocation; GEMMs go to OpenBLAS, element-wise loops are OpenMP-parallel over rows.
 * Checked by tests/test_ops.c against plain reference loops.
 */
#ifndef NEURONLAB_OPS_H
#define NEURONLAB_OPS_H

#include "neuronlab/model.h"

/* Element-wise loops run in OpenMP threads only above this many elements: below it the
 * fork/join costs more than the work (measured on stories260K). */
#define NL_PAR_MIN (1 << 16)

/* y (T, w.n_out; row stride ldy) = x (T, w.n_in; row stride ldx) · Wᵀ (+ b (n_out) if b).
 * When w->bf16 is set the product is computed in bf16 by nl_matmul_bf16 (approximate). */
void nl_matmul(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b);
/* Plain triple loop version of nl_matmul (the slow reference for tests). */
void nl_matmul_ref(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b);

/* out (T, D) = RMSNorm(x) ⊙ w.  out may alias x. */
void nl_rmsnorm(float *out, const float *x, const float *w, int T, int D, float eps);
/* out (T, D) = LayerNorm(x) ⊙ w + b (b may be NULL).  out may alias x. */
void nl_layernorm(float *out, const float *x, const float *w, const float *b, int T, int D, float eps);

/* In place on n floats (OpenMP over chunks above NL_PAR_MIN, each chunk nl_act_vec). */
void nl_activate(float *x, int64_t n, nl_act act);
/* g (n) = act(g) ⊙ u, the gated FFN's activation, in place on g (same threading). */
void nl_act_glu(float *g, const float *u, int64_t n, nl_act act);
/* One element: the same arithmetic as nl_act_vec (SiLU and GELU-tanh through nl_expf). */
float nl_act_scalar(float x, nl_act act);

/* ---- vectorised element-wise kernels ---------------------------------------------------
 * The one implementation of exp and the activations used by the forward pass, the MoE blocks
 * (moe_block.c, moe_ffn.c) and training (train_ops.c). exp is our own polynomial
 * (Cody-Waite reduction, degree-6 minimax, ≤ 1 ulp from the correctly rounded value on
 * [-87, 88], subnormal results, +inf above 88.72, NaN propagates), written so the loops
 * vectorise; they are compiled for AVX-512F, AVX2 and the x86-64-v2 baseline (GCC
 * function multiversioning: the loader picks the best the CPU has; the arithmetic is the same
 * in every version — no FMA contraction — so results do not depend on the CPU).
 * These are serial: callers parallelise over rows. */
float nl_expf(float x);
/* g (n) = act(g) ⊙ u, or act(g) when u is NULL. GELU (erf) stays on libm's erff. */
void nl_act_vec(float *g, const float *u, int64_t n, nl_act act);
/* s[i] = exp(s[i] - shift) for i < n; returns Σ s[i] accumulated in double (softmax). */
double nl_exp_shift_sum(float *s, int64_t n, float shift);
/* Σ exp(z[i] - shift) accumulated in double, z unchanged (log-sum-exp of a logit row). */
double nl_sum_exp_shift(const float *z, int64_t n, float shift);
/* max of z (n ≥ 1). */
float nl_max_vec(const float *z, int64_t n);

/* Rotary position embedding, in place on x (T, n_heads * Dh) (row stride ld) for positions
 * pos0 … pos0+T-1, over the first rotary_dim dims of each head. inv_freq (rotary_dim/2). */
void nl_rope(float *x, int ld, int T, int n_heads, int Dh, int rotary_dim, int interleaved, int pos0,
             const float *inv_freq);
/* Fills inv_freq (rotary_dim/2) from the config (base, llama3/linear scaling). */
void nl_rope_inv_freq(const nl_config *c, float *inv_freq);

#endif
