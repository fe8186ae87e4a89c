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

/* y (T, w.n_out; row stride ldy) = x (T, w.n_in; row stride ldx) · Wᵀ (+ b (n_out) if b). */
void nl_matmul(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b);
/* Plain triple loop version of nl_matmul (the slow reference for tests). */
void nl_matmul_ref(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b);

/* out (T, D) = RMSNorm(x) ⊙ w.  out may alias x. */
void nl_rmsnorm(float *out, const float *x, const float *w, int T, int D, float eps);
/* out (T, D) = LayerNorm(x) ⊙ w + b (b may be NULL).  out may alias x. */
void nl_layernorm(float *out, const float *x, const float *w, const float *b, int T, int D, float eps);

/* In place on n floats. */
void nl_activate(float *x, int64_t n, nl_act act);
float nl_act_scalar(float x, nl_act act);

/* Rotary position embedding, in place on x (T, n_heads * Dh) (row stride ld) for positions
 * pos0 … pos0+T-1, over the first rotary_dim dims of each head. inv_freq (rotary_dim/2). */
void nl_rope(float *x, int ld, int T, int n_heads, int Dh, int rotary_dim, int interleaved, int pos0,
             const float *inv_freq);
/* Fills inv_freq (rotary_dim/2) from the config (base, llama3/linear scaling). */
void nl_rope_inv_freq(const nl_config *c, float *inv_freq);

#endif
