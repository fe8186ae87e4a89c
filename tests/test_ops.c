/* test_ops.c — each fast kernel against a plain loop or a closed form. */
#include "neuronlab/ops.h"
#include "testutil.h"

static float frand(unsigned *s) { *s = *s * 1103515245u + 12345u; return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f; }

Test(ops, matmul_matches_reference_both_layouts) {
    unsigned s = 7;
    const int T = 13, nin = 37, nout = 29, ld = 41, ldx = 40, ldy = 33;
    float *w = malloc(sizeof(float) * 64 * 64), *x = malloc(sizeof(float) * T * ldx), *b = malloc(sizeof(float) * nout);
    for (int i = 0; i < 64 * 64; i++) w[i] = frand(&s);
    for (int i = 0; i < T * ldx; i++) x[i] = frand(&s);
    for (int i = 0; i < nout; i++) b[i] = frand(&s);
    for (int trans = 0; trans < 2; trans++) {
        nl_mat m = {.w = w, .n_out = nout, .n_in = nin, .trans = trans, .ld = ld};
        float y1[T * ldy], y2[T * ldy];
        memset(y1, 0, sizeof y1);
        memset(y2, 0, sizeof y2);
        nl_matmul(y1, ldy, x, ldx, T, &m, trans ? b : NULL);
        nl_matmul_ref(y2, ldy, x, ldx, T, &m, trans ? b : NULL);
        nl_check_close(y1, y2, (size_t)T * ldy, 1e-5);
    }
    free(w); free(x); free(b);
}

Test(ops, rmsnorm_and_layernorm_closed_form) {
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 1}, b[4] = {0, 1, 0, 0}, y[4];
    nl_rmsnorm(y, x, w, 1, 4, 0.0f);
    float r = 1.0f / sqrtf(7.5f);
    float want[4] = {1 * r, 2 * r, 6 * r, 4 * r};
    nl_check_close(y, want, 4, 1e-6);
    nl_layernorm(y, x, w, b, 1, 4, 0.0f);
    float sd = sqrtf(1.25f);
    float want2[4] = {-1.5f / sd, -0.5f / sd + 1, 2 * 0.5f / sd, 1.5f / sd};
    nl_check_close(y, want2, 4, 1e-6);
}

Test(ops, activations_known_values) {
    cr_assert_float_eq(nl_act_scalar(1.0f, NL_ACT_SILU), 0.7310585786f, 1e-6);
    cr_assert_float_eq(nl_act_scalar(1.0f, NL_ACT_GELU), 0.8413447461f, 1e-6);
    cr_assert_float_eq(nl_act_scalar(1.0f, NL_ACT_GELU_TANH), 0.8411919906f, 1e-6);
    cr_assert_float_eq(nl_act_scalar(-2.0f, NL_ACT_RELU), 0.0f, 0);
    cr_assert_float_eq(nl_act_scalar(3.0f, NL_ACT_RELU2), 9.0f, 0);
    cr_assert_eq(nl_act_parse("gelu_new"), NL_ACT_GELU_TANH);
    cr_assert_eq(nl_act_parse("swish"), NL_ACT_SILU);
    cr_assert_eq(nl_act_parse("tanh"), -1);
}

/* RoPE preserves each rotated pair's norm and rotates by pos·freq. */
Test(ops, rope_rotates_pairs) {
    nl_config c = {0};
    c.rope_theta = 10000.0f;
    c.rotary_dim = 4;
    float inv[2];
    nl_rope_inv_freq(&c, inv);
    cr_assert_float_eq(inv[0], 1.0f, 1e-7);
    cr_assert_float_eq(inv[1], 0.01f, 1e-7);
    /* one head of 6 dims, rotary 4 (partial): dims 4,5 untouched */
    float x[6] = {1, 0, 0, 1, 5, 6}, y[6];
    memcpy(y, x, sizeof x);
    nl_rope(y, 6, 1, 1, 6, 4, 0, 3, inv); /* halves: pairs (0,2) and (1,3) */
    cr_assert_float_eq(y[0], cosf(3.0f), 1e-6);
    cr_assert_float_eq(y[2], sinf(3.0f), 1e-6);
    cr_assert_float_eq(y[1], -sinf(0.03f), 1e-6);
    cr_assert_float_eq(y[3], cosf(0.03f), 1e-6);
    cr_assert_float_eq(y[4], 5.0f, 0);
    memcpy(y, x, sizeof x);
    nl_rope(y, 6, 1, 1, 6, 4, 1, 3, inv); /* interleaved: pairs (0,1) and (2,3) */
    cr_assert_float_eq(y[0], cosf(3.0f), 1e-6);
    cr_assert_float_eq(y[1], sinf(3.0f), 1e-6);
    cr_assert_float_eq(y[2], -sinf(0.03f), 1e-6);
    cr_assert_float_eq(y[3], cosf(0.03f), 1e-6);
}

Test(ops, llama3_scaling_bands) {
    nl_config c = {0};
    c.rope_theta = 500000.0f;
    c.rotary_dim = 128;
    c.rope_scaling = NL_ROPE_SCALING_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_orig_max_pos = 8192;
    float inv[64], base[64];
    nl_rope_inv_freq(&c, inv);
    c.rope_scaling = NL_ROPE_SCALING_NONE;
    nl_rope_inv_freq(&c, base);
    cr_assert_float_eq(inv[0], base[0], 0);            /* high frequency: unchanged */
    cr_assert_float_eq(inv[63], base[63] / 8, 1e-12);  /* low frequency: divided by the factor */
    int mid = 0;
    for (int i = 0; i < 64; i++) mid += inv[i] < base[i] && inv[i] > base[i] / 8;
    cr_assert_gt(mid, 0); /* a smooth band in between */
}

Test(ops, half_precision_round_trips) {
    cr_assert_eq(nl_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(nl_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(nl_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(nl_f32_to_f16(1e6f), 0x7c00);
    cr_assert_float_eq(nl_f16_to_f32(0x0001), 5.9604644775390625e-08f, 0);
    cr_assert_eq(nl_f32_to_f16(5.9604644775390625e-08f), 0x0001);
    cr_assert_eq(nl_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    cr_assert_eq(nl_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
    for (uint32_t h = 0; h < 0x7c00; h++) cr_assert_eq(nl_f32_to_f16(nl_f16_to_f32((uint16_t)h)), h);
    cr_assert_eq(nl_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_float_eq(nl_bf16_to_f32(0x4049), 3.140625f, 0);
    cr_assert_eq(nl_f32_to_bf16(nl_bf16_to_f32(0x1234)), 0x1234);
}

/* Our exp against libm's double exp: within 2 ulp on the normal range, within one ulp of the
 * smallest subnormal below it, and the special values. */
Test(ops, expf_polynomial_accuracy) {
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        const float x = -103.0f + (float)i * (191.7f / 2000000.0f); /* [-103, 88.7] */
        const double want = exp((double)x), got = nl_expf(x);
        const double ulp = want >= 1.1754944e-38 ? want * 5.960464477539063e-8 : 1.401298464e-45;
        const double e = fabs(got - want) / ulp;
        if (e > worst) worst = e;
    }
    cr_assert(worst <= 2.0, "exp error %.2f ulp > 2", worst);
    cr_assert_eq(nl_expf(0.0f), 1.0f);
    cr_assert(isinf(nl_expf(89.0f)) && nl_expf(89.0f) > 0);
    cr_assert(isinf(nl_expf(INFINITY)));
    cr_assert_eq(nl_expf(-INFINITY), 0.0f);
    cr_assert_eq(nl_expf(-200.0f), 0.0f);
    cr_assert(isnan(nl_expf(NAN)));
    cr_assert(nl_expf(88.7f) < INFINITY);
}

/* The vector kernels (every length up to 41: the blocks of 8 and the tail) equal the scalar
 * ones, which equal the closed forms to f32 precision. */
Test(ops, vector_activations_match_scalar_and_closed_form) {
    const nl_act acts[] = {NL_ACT_SILU, NL_ACT_GELU, NL_ACT_GELU_TANH, NL_ACT_RELU, NL_ACT_RELU2};
    unsigned s = 11;
    float g[41], u[41], v[41];
    for (int a = 0; a < 5; a++)
        for (int n = 0; n <= 41; n++)
            for (int gated = 0; gated < 2; gated++) {
                for (int i = 0; i < n; i++) g[i] = 8.0f * frand(&s), u[i] = frand(&s);
                memcpy(v, g, sizeof g);
                nl_act_vec(v, gated ? u : NULL, n, acts[a]);
                for (int i = 0; i < n; i++) {
                    const float want = nl_act_scalar(g[i], acts[a]) * (gated ? u[i] : 1.0f);
                    cr_assert_eq(v[i], want, "act %d n %d i %d: %g vs %g", a, n, i, v[i], want);
                    const double x = g[i];
                    double ref = acts[a] == NL_ACT_SILU       ? x / (1 + exp(-x))
                                 : acts[a] == NL_ACT_GELU      ? 0.5 * x * (1 + erf(x / sqrt(2.0)))
                                 : acts[a] == NL_ACT_GELU_TANH ? 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
                                 : acts[a] == NL_ACT_RELU      ? (x > 0 ? x : 0)
                                                               : (x > 0 ? x * x : 0);
                    cr_assert(fabs(nl_act_scalar(g[i], acts[a]) - ref) <= 1e-6 * (1 + fabs(ref)), "act %d x %g: %.9g vs %.9g",
                              a, x, nl_act_scalar(g[i], acts[a]), ref);
                }
            }
    float big[10000];
    for (int i = 0; i < 10000; i++) big[i] = 8.0f * frand(&s);
    float par[10000];
    memcpy(par, big, sizeof big);
    nl_activate(par, 10000, NL_ACT_SILU); /* chunked over threads: the same numbers */
    nl_act_vec(big, NULL, 10000, NL_ACT_SILU);
    cr_assert(memcmp(par, big, sizeof big) == 0);
}

/* Softmax helpers against plain double loops, with a tail and a -inf entry. */
Test(ops, exp_sums_and_max) {
    unsigned s = 5;
    float z[77], e[77];
    for (int n = 1; n <= 77; n++) {
        for (int i = 0; i < n; i++) z[i] = 20.0f * frand(&s);
        if (n > 3) z[2] = -INFINITY;
        float mx = z[0];
        for (int i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
        cr_assert_eq(nl_max_vec(z, n), mx);
        double want = 0;
        for (int i = 0; i < n; i++) want += exp((double)z[i] - mx);
        const double got = nl_sum_exp_shift(z, n, mx);
        cr_assert(fabs(got - want) <= 3e-7 * want, "n %d: %.9g vs %.9g", n, got, want);
        memcpy(e, z, sizeof z);
        cr_assert_eq(nl_exp_shift_sum(e, n, mx), got);
        for (int i = 0; i < n; i++) cr_assert_eq(e[i], nl_expf(z[i] - mx));
    }
}
