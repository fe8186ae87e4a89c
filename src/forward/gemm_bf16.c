/* gemm_bf16.c — the AVX512-BF16 matrix product of `--compute bf16` (contract in gemm_bf16.h).
 *
 * Micro-kernel: NL_BF16_MR rows × NL_BF16_NR (32) columns of f32 accumulators (2 zmm per
 * row), over the whole inner dimension: per pair of inputs, two 64-byte loads of the packed
 * panel and one broadcast activation pair (vpbroadcastd) per row, 2·MR vdpbf16ps. The rounded
 * activations are stored in blocks of MR rows interleaved per pair (the MR broadcasts of one
 * step read 48 adjacent bytes; rows 4 KiB apart would alias in L1). Tasks are
 * (column panel, block of NL_BF16_RB rows), panel-major so that a thread keeps its panel in
 * L2 across the row blocks. Only the functions marked NL_BF16_TARGET use AVX-512: the rest of
 * the file is plain x86-64 and decides at run time (nl_bf16_supported).
 */
#include "neuronlab/gemm_bf16.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NL_BF16_HAVE_KERNEL 1
#define NL_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define NL_BF16_HAVE_KERNEL 0
#endif

#define NL_BF16_MR 12   /* rows of the micro-kernel: 24 accumulators + 2 panel registers + 1 broadcast */
#define NL_BF16_RB 96   /* rows of one task (a multiple of NL_BF16_MR) */

int nl_bf16_supported(void) {
    static int cached = -1;
    if (cached < 0) {
        int ok = 0;
#if NL_BF16_HAVE_KERNEL
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#endif
        const char *force = getenv("NL_BF16_FORCE_FALLBACK");
        if (force && *force && strcmp(force, "0")) ok = 0;
        cached = ok;
    }
    return cached;
}

#if NL_BF16_HAVE_KERNEL

/* Row t of the rounded activations: pair k (bf16(x[2k]) low, bf16(x[2k+1]) high, 0 past K) goes
 * to a[k * NL_BF16_MR] with a = the row's place in its block of NL_BF16_MR rows (rows
 * interleaved per pair, so the micro-kernel's broadcasts of one k read one cache line). */
NL_BF16_TARGET static void round_row(uint32_t *a, const float *x, int K) {
    uint32_t tmp[16];
    for (int i = 0; i < K; i += 32) {
        const int n = K - i < 32 ? K - i : 32;
        const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        const __mmask16 m1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + i + 16), _mm512_maskz_loadu_ps(m0, x + i));
        _mm512_storeu_si512((void *)tmp, (__m512i)v); /* zeros past K: the masked loads */
        for (int k = 0; k < (n + 1) / 2; k++) a[(size_t)(i / 2 + k) * NL_BF16_MR] = tmp[k];
    }
}

/* y (mr, ncols ≤ 32) = a (a block: pair k of row r at a[k * NL_BF16_MR + r]) · panel (+ bias) */
NL_BF16_TARGET static inline __attribute__((always_inline)) void
kernel(const int mr, const uint32_t *a, const uint16_t *panel, int kp, float *y, int ldy, int ncols, const float *bias) {
    __m512 c0[NL_BF16_MR], c1[NL_BF16_MR];
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) c0[r] = _mm512_setzero_ps(), c1[r] = _mm512_setzero_ps();
    const uint16_t *b = panel;
    for (int k = 0; k < kp; k++, b += 2 * NL_BF16_NR) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + NL_BF16_NR));
#pragma GCC unroll 12
        for (int r = 0; r < mr; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)k * NL_BF16_MR + r]);
            c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
        }
    }
    const __mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
    const __mmask16 m1 = ncols >= 32 ? 0xffff : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(y + (size_t)r * ldy, m0, _mm512_add_ps(c0[r], bias0));
        _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16, m1, _mm512_add_ps(c1[r], bias1));
    }
}

/* rows [t0, t1) of y for panel pn */
NL_BF16_TARGET static void task(float *y, int ldy, const uint32_t *a, int kp, int t0, int t1, const struct nl_bf16_mat *w,
                                int pn, const float *bias) {
    const uint16_t *panel = w->p + (size_t)pn * kp * NL_BF16_NR * 2;
    const int c0 = pn * NL_BF16_NR, ncols = w->n_out - c0 < NL_BF16_NR ? w->n_out - c0 : NL_BF16_NR;
    const float *bb = bias ? bias + c0 : NULL;
    for (int t = t0; t < t1; t += NL_BF16_MR) {
        const uint32_t *ar = a + (size_t)t * kp; /* t is a multiple of NL_BF16_MR: its block */
        float *yr = y + (size_t)t * ldy + c0;
        switch (t1 - t < NL_BF16_MR ? t1 - t : NL_BF16_MR) {
#define K_(r) case r: kernel(r, ar, panel, kp, yr, ldy, ncols, bb); break;
            K_(1) K_(2) K_(3) K_(4) K_(5) K_(6) K_(7) K_(8) K_(9) K_(10) K_(11)
#undef K_
        default: kernel(NL_BF16_MR, ar, panel, kp, yr, ldy, ncols, bb); break;
        }
    }
}

/* The calling thread's rounded activations (kept between calls; never freed: one per thread). */
static _Thread_local uint32_t *tl_buf;
static _Thread_local size_t tl_cap;

int nl_matmul_bf16(float *y, int ldy, const float *x, int ldx, int T, const struct nl_bf16_mat *w, const float *b) {
    if (T <= 0) return 1;
    const int K = w->n_in, kp = w->kp;
    const size_t need = (size_t)(T + NL_BF16_MR - 1) / NL_BF16_MR * NL_BF16_MR * kp; /* whole blocks */
    if (need > tl_cap) {
        free(tl_buf);
        tl_buf = aligned_alloc(64, (need * sizeof(uint32_t) + 63) / 64 * 64);
        tl_cap = tl_buf ? need : 0;
        if (!tl_buf) return 0;
    }
    uint32_t *a = tl_buf;
    const int panels = (w->n_out + NL_BF16_NR - 1) / NL_BF16_NR, rblocks = (T + NL_BF16_RB - 1) / NL_BF16_RB;
    const int tasks = panels * rblocks;
    const int par = !omp_in_parallel() && omp_get_max_threads() > 1 && (int64_t)T * w->n_out * K > (1 << 18);
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (int t = 0; t < T; t++)
            round_row(a + (size_t)(t / NL_BF16_MR) * NL_BF16_MR * kp + t % NL_BF16_MR, x + (size_t)t * ldx, K);
#pragma omp for schedule(static)
        for (int k = 0; k < tasks; k++) {
            const int pn = k / rblocks, rb = k % rblocks;
            const int t0 = rb * NL_BF16_RB, t1 = t0 + NL_BF16_RB < T ? t0 + NL_BF16_RB : T;
            task(y, ldy, a, kp, t0, t1, w, pn, b);
        }
    }
    return 1;
}

#else

int nl_matmul_bf16(float *y, int ldy, const float *x, int ldx, int T, const struct nl_bf16_mat *w, const float *b) {
    (void)y, (void)ldy, (void)x, (void)ldx, (void)T, (void)w, (void)b;
    return 0;
}

#endif
