/* gemm_bf16.h — the bf16 matrix product of `--compute bf16`: y = x·Wᵀ with W and x rounded to
 * bfloat16 and the products accumulated in f32 (AVX512-BF16 vdpbf16ps).
 *
 * The weights are packed once (nl_bf16_pack) into column panels of NL_BF16_NR outputs:
 *     p[panel][k/2][NL_BF16_NR columns][2]   (uint16 bf16, round to nearest even)
 * i.e. for each pair of inputs (2k, 2k+1) the 32 columns of the panel as adjacent pairs, which
 * is what one vdpbf16ps multiplies against a broadcast pair of activations. Outputs beyond
 * n_out and an odd last input are zero. The activations are rounded to bf16 per call (round
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

#define NL_BF16_NR 32 /* output columns per panel (two zmm registers of f32) */

/* A weight matrix packed for nl_matmul_bf16. p is borrowed (owned by whoever packed it: the
 * model's bf16 copy of a layer or of the LM head, or a test). */
struct nl_bf16_mat {
    const uint16_t *p; /* (panels, kp, NL_BF16_NR, 2) */
    int n_out, n_in;
    int kp; /* (n_in + 1) / 2 */
};

/* 1 when this CPU runs the kernel (AVX512F + AVX512-BF16, checked with cpuid once), 0 when
 * not. The environment variable NL_BF16_FORCE_FALLBACK=1 makes it 0 (used by tests/bf16.sh to
 * check the fallback message on a CPU that has the instructions). */
int nl_bf16_supported(void);

/* uint16 elements of the packed form of an (n_out, n_in) matrix. */
size_t nl_bf16_pack_elems(int n_out, int n_in);
/* Packs w (f32, either storage order) into dst (nl_bf16_pack_elems of w's shape, 64-byte
 * aligned for speed) and describes it in *out (out->p = dst). Parallel over panels. */
void nl_bf16_pack(struct nl_bf16_mat *out, uint16_t *dst, const nl_mat *w);

/* y (T, w.n_out; row stride ldy) = bf16(x) (T, w.n_in; row stride ldx) · bf16(W)ᵀ (+ b (n_out)
 * in f32 if b). Requires nl_bf16_supported(). OpenMP over (column panel, row block) tasks
 * unless called inside a parallel region. The rounded activations go to a buffer owned by the
 * calling thread (grown as needed, kept for its next call); returns 0 when that buffer cannot
 * be allocated (y untouched: the caller computes in f32), else 1. */
int nl_matmul_bf16(float *y, int ldy, const float *x, int ldx, int T, const struct nl_bf16_mat *w, const float *b);

#endif
