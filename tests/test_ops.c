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
        nl_mat m = {w, nout, nin, trans, ld};
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
