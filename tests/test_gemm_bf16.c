/* test_gemm_bf16.c — the bf16 matrix product (gemm_bf16.h) against nl_matmul_ref on the same
 * inputs rounded to bf16: the only difference left is the order of the f32 accumulation, so
 * each output must be within (n_in + 2)·2⁻²⁴·Σ|x·w| of the double-precision reference.
 * Awkward shapes: T = 1, 3, 17, 64, 150 (more than one row block), n_out not a multiple of 16
 * or 32, odd n_in, both storage orders, bias or not, row strides wider than the rows, and a
 * call from inside a parallel region. Skipped when the CPU has no AVX512-BF16. */
#include <omp.h>

#include "neuronlab/gemm_bf16.h"
#include "neuronlab/ops.h"
#include "testutil.h"

static float frand(unsigned *s) { *s = *s * 1103515245u + 12345u; return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f; }
static float round_bf16(float v) { return nl_bf16_to_f32(nl_f32_to_bf16(v)); }

static void skip_without_bf16(void) {
    if (!nl_bf16_supported()) cr_skip_test("this CPU has no AVX512-BF16 (or NL_BF16_FORCE_FALLBACK is set): skipping the bf16 kernel tests");
}

/* One product of shape (T, nin) · (nout, nin)ᵀ checked against the reference; returns the worst
 * error relative to its bound. */
static double check_shape(int T, int nout, int nin, int trans, int bias, unsigned seed) {
    unsigned s = seed;
    const int ld = (trans ? nout : nin) + 3, ldx = nin + 5, ldy = nout + 2;
    const int rows = trans ? nin : nout;
    float *w = malloc(sizeof(float) * (size_t)rows * ld), *wr = malloc(sizeof(float) * (size_t)rows * ld);
    float *x = malloc(sizeof(float) * (size_t)T * ldx), *xr = malloc(sizeof(float) * (size_t)T * ldx);
    float *b = malloc(sizeof(float) * nout);
    float *y = malloc(sizeof(float) * (size_t)T * ldy), *yref = malloc(sizeof(float) * (size_t)T * ldy);
    for (int i = 0; i < rows * ld; i++) w[i] = frand(&s), wr[i] = round_bf16(w[i]);
    for (int i = 0; i < T * ldx; i++) x[i] = frand(&s) * 3.0f, xr[i] = round_bf16(x[i]);
    for (int i = 0; i < nout; i++) b[i] = frand(&s);
    for (int i = 0; i < T * ldy; i++) y[i] = yref[i] = 1234.5f; /* the padding columns must stay */
    nl_mat m = {w, nout, nin, trans, ld, NULL}, mr = {wr, nout, nin, trans, ld, NULL};
    uint16_t *p = aligned_alloc(64, (nl_bf16_pack_elems(nout, nin) * 2 + 63) / 64 * 64);
    struct nl_bf16_mat pk;
    nl_bf16_pack(&pk, p, &m);
    m.bf16 = &pk;
    nl_matmul(y, ldy, x, ldx, T, &m, bias ? b : NULL); /* dispatches to nl_matmul_bf16 */
    nl_matmul_ref(yref, ldy, xr, ldx, T, &mr, bias ? b : NULL);
    double worst = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < ldy; o++) {
            const size_t i = (size_t)t * ldy + o;
            if (o >= nout) {
                cr_assert(y[i] == 1234.5f, "T=%d nout=%d nin=%d trans=%d: column %d beyond n_out was written", T, nout, nin,
                          trans, o);
                continue;
            }
            double abs_sum = bias ? fabs(b[o]) : 0;
            for (int k = 0; k < nin; k++)
                abs_sum += fabs((double)xr[(size_t)t * ldx + k] *
                                (trans ? wr[(size_t)k * ld + o] : wr[(size_t)o * ld + k]));
            const double bound = (nin + 2) * ldexp(1.0, -24) * abs_sum + 1e-30;
            const double e = fabs((double)y[i] - yref[i]) / bound;
            cr_assert(e <= 1.0, "T=%d nout=%d nin=%d trans=%d bias=%d: y[%d][%d] = %.9g, reference %.9g (bound %.3g)", T,
                      nout, nin, trans, bias, t, o, y[i], yref[i], bound);
            if (e > worst) worst = e;
        }
    free(w); free(wr); free(x); free(xr); free(b); free(y); free(yref); free(p);
    return worst;
}

Test(gemm_bf16, awkward_shapes_match_reference) {
    skip_without_bf16();
    const int Ts[] = {1, 3, 17, 64, 150}, nouts[] = {1, 7, 16, 33, 50, 100}, nins[] = {1, 2, 5, 63, 130};
    unsigned seed = 1;
    for (size_t a = 0; a < sizeof Ts / sizeof *Ts; a++)
        for (size_t c = 0; c < sizeof nouts / sizeof *nouts; c++)
            for (size_t d = 0; d < sizeof nins / sizeof *nins; d++)
                for (int trans = 0; trans < 2; trans++) check_shape(Ts[a], nouts[c], nins[d], trans, (int)((a + c + d) & 1), seed++);
}

/* Big enough for the OpenMP tasks (more panels and row blocks than threads) and a long inner
 * dimension (the accumulation bound grows with it). */
Test(gemm_bf16, threaded_large_shape) {
    skip_without_bf16();
    check_shape(300, 290, 771, 0, 1, 99);
    check_shape(257, 96, 512, 1, 0, 98);
}

/* Called from inside a parallel region (documents scored in parallel): runs serially per thread,
 * each with its own activation buffer. */
Test(gemm_bf16, inside_parallel_region) {
    skip_without_bf16();
    int bad = 0;
#pragma omp parallel num_threads(2) reduction(+ : bad)
    {
        /* check_shape asserts from this thread; count instead of relying on it */
        bad += check_shape(70 + omp_get_thread_num(), 45, 99, omp_get_thread_num() & 1, 1, 7u + omp_get_thread_num()) > 1.0;
    }
    cr_assert_eq(bad, 0);
}

/* The packed layout: panel-major, input pairs, 32 columns, pair elements adjacent; zero padding. */
Test(gemm_bf16, pack_layout) {
    const int nout = 35, nin = 3;
    float w[35 * 3];
    for (int i = 0; i < nout * nin; i++) w[i] = (float)(i + 1); /* integers: exact in bf16 */
    nl_mat m = {w, nout, nin, 0, nin, NULL};
    cr_assert_eq(nl_bf16_pack_elems(nout, nin), (size_t)2 * 2 * 32 * 2);
    uint16_t p[2 * 2 * 32 * 2];
    struct nl_bf16_mat pk;
    nl_bf16_pack(&pk, p, &m);
    cr_assert_eq(pk.kp, 2);
    for (int pn = 0; pn < 2; pn++)
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 32; j++)
                for (int e = 0; e < 2; e++) {
                    const int o = pn * 32 + j, i = 2 * k + e;
                    const float want = o < nout && i < nin ? w[o * nin + i] : 0.0f;
                    cr_assert_eq(nl_bf16_to_f32(p[((pn * 2 + k) * 32 + j) * 2 + e]), want, "panel %d pair %d col %d elem %d", pn, k, j, e);
                }
}

/* A copy of a packed view narrowed to its leading outputs (how an FFN replacement takes a
 * sub-matrix) no longer matches the pack: nl_matmul computes it in f32, exactly as without the
 * pack, and writes only the narrowed columns. */
Test(gemm_bf16, narrowed_view_stays_f32) {
    skip_without_bf16();
    unsigned s = 3;
    const int T = 9, nout = 40, nin = 24, K = 13;
    float w[40 * 24], x[9 * 24], y1[9 * 16], y2[9 * 16];
    for (int i = 0; i < nout * nin; i++) w[i] = frand(&s);
    for (int i = 0; i < T * nin; i++) x[i] = frand(&s);
    nl_mat m = {w, nout, nin, 0, nin, NULL};
    uint16_t *p = aligned_alloc(64, (nl_bf16_pack_elems(nout, nin) * 2 + 63) / 64 * 64);
    struct nl_bf16_mat pk;
    nl_bf16_pack(&pk, p, &m);
    nl_mat narrow = m, plain = m;
    narrow.bf16 = &pk, narrow.n_out = K, plain.n_out = K;
    for (int i = 0; i < T * 16; i++) y1[i] = y2[i] = -7.0f;
    nl_matmul(y1, 16, x, nin, T, &narrow, NULL);
    nl_matmul(y2, 16, x, nin, T, &plain, NULL);
    cr_assert(memcmp(y1, y2, sizeof y1) == 0, "the narrowed view did not compute exactly as f32");
    for (int t = 0; t < T; t++)
        for (int o = K; o < 16; o++) cr_assert(y1[t * 16 + o] == -7.0f);
    free(p);
}
