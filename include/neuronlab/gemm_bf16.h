/* gemm_bf16.h — the bf16 matrix product of `--compute bf16`: y = x·Wᵀ with W and x rounded to
 * bfloat16 and the products accumulated in f32 (AVX512-BF16 vdpbf16ps).
 *
 * The weights are packed once per layer (nl_bf16_pack, struct nl_bf16_mat in model.h: panels of
 * NL_BF16_NR columns, input pairs adjacent); the activations are rounded to bf16 per call (round
 * to nearest even, vcvtneps2bf16) into a buffer of the calling thread.
 * Results are approximate (bf16 has 8 significant bits); the f32 path (nl_matmul without a
 * pack) is unchanged. Checked by tests/test_gemm_bf16.c (against nl_matmul_ref on bf16-rounded
 * inputs) and tests/bf16.sh (perplexity within 1e-3 relative of f32).
 */
#ifndef NEURONLAB_GEMM_BF16_H
#define NEURONLAB_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "neuronlab/model.h"

/* 1 when this CPU runs the kernel (AVX512F + AVX512-BF16, checked with cpuid once), 0 when
 * not. The environment variable NL_BF16_FORCE_FALLBACK=1 makes it 0 (used by tests/bf16.sh to
 * check the fallback message on a CPU that has the instructions). */
int nl_bf16_supported(void);

/* y (T, w.n_out; row stride ldy) = bf16(x) (T, w.n_in; row stride ldx) · bf16(W)ᵀ (+ b (n_out)
 * in f32 if b). Requires nl_bf16_supported(). OpenMP over (column panel, row block) tasks
 * unless called inside a parallel region. The rounded activations go to a buffer owned by the
 * calling thread (grown as needed, kept for its next call); returns 0 when that buffer cannot
 * be allocated (y untouched: the caller computes in f32), else 1. */
int nl_matmul_bf16(float *y, int ldy, const float *x, int ldx, int T, const struct nl_bf16_mat *w, const float *b);

#endif
