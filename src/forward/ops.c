/* ops.c — fp32 kernels: GEMM through OpenBLAS, norms, activations, RoPE.
 *
 * Numerics follow the Hugging Face / PyTorch reference: statistics of norms accumulate in
 * double, RoPE angles are computed in f32 as pos · inv_freq (as torch does).
 * Checked by tests/test_ops.c (against plain loops) and tests/test_forward.c (PyTorch).
 */
#include "neuronlab/ops.h"

#include "neuronlab/gemm_bf16.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void nl_matmul(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b) {
    NL_ASSERT(w->w);
    if (T <= 0) return;
    /* --compute bf16 (gemm_bf16.h); a narrowed copy of the view (an FFN replacement taking the
     * leading rows) no longer matches its pack and stays f32 */
    if (w->bf16 && w->bf16->n_out == w->n_out && w->bf16->n_in == w->n_in && nl_matmul_bf16(y, ldy, x, ldx, T, w->bf16, b))
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, w->trans ? CblasNoTrans : CblasTrans, T, w->n_out, w->n_in, 1.0f, x, ldx,
                w->w, w->ld, 0.0f, y, ldy);
    if (b) {
#pragma omp parallel for schedule(static) if ((int64_t)T * w->n_out > NL_PAR_MIN)
        for (int t = 0; t < T; t++) {
            float *row = y + (size_t)t * ldy;
            for (int i = 0; i < w->n_out; i++) row[i] += b[i];
        }
    }
}

void nl_matmul_ref(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b) {
    for (int t = 0; t < T; t++)
        for (int o = 0; o < w->n_out; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < w->n_in; i++) {
                float wv = w->trans ? w->w[(size_t)i * w->ld + o] : w->w[(size_t)o * w->ld + i];
                s += (double)x[(size_t)t * ldx + i] * wv;
            }
            y[(size_t)t * ldy + o] = (float)s;
        }
}

void nl_layernorm(float *out, const float *x, const float *w, const float *b, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = out + (size_t)t * D;
        double mean = 0, var = 0;
        for (int i = 0; i < D; i++) mean += xr[i];
        mean /= D;
        for (int i = 0; i < D; i++) { double d = xr[i] - mean; var += d * d; }
        var /= D;
        float r = (float)(1.0 / sqrt(var + eps));
        for (int i = 0; i < D; i++) o[i] = (float)(xr[i] - mean) * r * w[i] + (b ? b[i] : 0.0f);
    }
}

/* ---- exp and the activations (contract in ops.h) ------------------------------------- */

/* GCC function multiversioning of the hot loops: an AVX-512F, an AVX2 and the baseline
 * version of each, chosen once by the loader (ifunc). -ffp-contract=off (the -std=c11
 * default) keeps the arithmetic identical in all three. Other compilers get the baseline. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NL_CLONES
#endif

/* Eight floats at a time in GCC vector extensions (one AVX register, two SSE ones); casts
 * between the float and int vector types reinterpret the bits. */
#define NL_V8 static inline __attribute__((always_inline))
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

NL_V8 v8f v8_load(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
NL_V8 void v8_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }
NL_V8 v8f v8_set1(float x) { return (v8f){x, x, x, x, x, x, x, x}; }
NL_V8 v8f v8_select(v8i mask, v8f a, v8f b) { return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask)); }

/* exp(x): x = n·ln2 + r (n rounded to nearest by the 1.5·2^23 trick, Cody-Waite split of
 * ln2, |r| ≤ ln2/2), e^r by Cephes' degree-6 polynomial, then 2^n applied in two halves so
 * subnormal results and the overflow to +inf come out right. NaN passes the clamps (the
 * comparisons are false) and poisons the polynomial. */
NL_V8 v8f exp8(v8f x) {
    x = v8_select(x < v8_set1(-104.0f), v8_set1(-104.0f), x); /* below: 0 */
    x = v8_select(x > v8_set1(89.0f), v8_set1(89.0f), x);     /* above 88.72: +inf */
    const v8f magic = v8_set1(12582912.0f);
    const v8f t = x * 1.44269504088896341f + magic;
    const v8f fn = t - magic;
    const v8f r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
    v8f p = v8_set1(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const v8f y = p * (r * r) + r + 1.0f;
    const v8i n = ((v8i)t - 0x4B400000) & ~(v8i)(x != x); /* integer n; 0 for NaN */
    const v8i n1 = n >> 1, n2 = n - n1;
    return y * (v8f)((n1 + 127) << 23) * (v8f)((n2 + 127) << 23);
}

NL_V8 v8f silu8(v8f x) { return x / (1.0f + exp8(-x)); }
/* 0.5 x (1 + tanh u) = x · sigmoid(2u), u = √(2/π) (x + 0.044715 x³) */
NL_V8 v8f gelu_tanh8(v8f x) { return x / (1.0f + exp8(-1.5957691216057308f * (x + 0.044715f * x * x * x))); }
NL_V8 v8f relu8(v8f x) { return v8_select(x > 0.0f, x, v8_set1(0.0f)); }
NL_V8 v8f relu2_8(v8f x) { return v8_select(x > 0.0f, x * x, v8_set1(0.0f)); }

float nl_expf(float x) { return exp8(v8_set1(x))[0]; }

float nl_act_scalar(float x, nl_act act) {
    switch (act) {
    case NL_ACT_SILU: return silu8(v8_set1(x))[0];
    case NL_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case NL_ACT_GELU_TANH: return gelu_tanh8(v8_set1(x))[0];
    case NL_ACT_RELU: return x > 0 ? x : 0.0f;
    case NL_ACT_RELU2: return x > 0 ? x * x : 0.0f;
    }
    return x;
}

/* Applies F to g (and multiplies by u) in blocks of 8, the tail through a padded block. */
#define NL_MAP8(F, g, u, n)                                                               \
    do {                                                                                \
        int64_t i_ = 0;                                                                 \
        for (; i_ + 8 <= (n); i_ += 8) {                                                \
            v8f r_ = F(v8_load((g) + i_));                                              \
            if (u) r_ *= v8_load((u) + i_);                                             \
            v8_store((g) + i_, r_);                                                     \
        }                                                                               \
        if (i_ < (n)) {                                                                 \
            float a_[8] = {0}, b_[8] = {0};                                             \
            const int64_t m_ = (n) - i_;                                                \
            memcpy(a_, (g) + i_, (size_t)m_ * sizeof(float));                          \
            if (u) memcpy(b_, (u) + i_, (size_t)m_ * sizeof(float));                   \
            v8f r_ = F(v8_load(a_));                                                    \
            if (u) r_ *= v8_load(b_);                                                   \
            v8_store(a_, r_);                                                           \
            memcpy((g) + i_, a_, (size_t)m_ * sizeof(float));                          \
        }                                                                               \
    } while (0)

NL_CLONES void nl_act_vec(float *g, const float *u, int64_t n, nl_act act) {
    switch (act) {
    case NL_ACT_SILU: NL_MAP8(silu8, g, u, n); return;
    case NL_ACT_GELU_TANH: NL_MAP8(gelu_tanh8, g, u, n); return;
    case NL_ACT_RELU: NL_MAP8(relu8, g, u, n); return;
    case NL_ACT_RELU2: NL_MAP8(relu2_8, g, u, n); return;
    default:
        for (int64_t i = 0; i < n; i++) g[i] = nl_act_scalar(g[i], act) * (u ? u[i] : 1.0f);
    }
}

/* Σ exp(z - shift) over n floats in double; stores the exps into out when out != NULL. */
NL_V8 double exp_sum(const float *z, float *out, int64_t n, float shift) {
    v8d acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const v8f e = exp8(v8_load(z + i) - shift);
        if (out) v8_store(out + i, e);
        acc += __builtin_convertvector(e, v8d);
    }
    double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    if (i < n) {
        float a[8];
        const int64_t m = n - i;
        memcpy(a, z + i, (size_t)m * sizeof(float));
        for (int64_t k = m; k < 8; k++) a[k] = -INFINITY; /* exp(-inf) = 0 */
        const v8f e = exp8(v8_load(a) - shift);
        if (out) for (int64_t k = 0; k < m; k++) out[i + k] = e[k];
        for (int64_t k = 0; k < m; k++) sum += e[k];
    }
    return sum;
}

NL_CLONES double nl_exp_shift_sum(float *s, int64_t n, float shift) { return exp_sum(s, s, n, shift); }
NL_CLONES double nl_sum_exp_shift(const float *z, int64_t n, float shift) { return exp_sum(z, NULL, n, shift); }

NL_CLONES float nl_max_vec(const float *z, int64_t n) {
    float mx = z[0];
    int64_t i = 0;
    if (n >= 8) {
        v8f m = v8_load(z);
        for (i = 8; i + 8 <= n; i += 8) {
            const v8f v = v8_load(z + i);
            m = v8_select(v > m, v, m);
        }
        for (int k = 0; k < 8; k++) mx = m[k] > mx ? m[k] : mx;
    }
    for (; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    return mx;
}

/* One row of RMSNorm: Σ x² in double over eight lanes (summed pairwise at the end), then
 * o = w · (x · r). */
NL_CLONES static void rms_row(float *o, const float *x, const float *w, int D, float eps) {
    v8d acc = {0};
    int i = 0;
    for (; i + 8 <= D; i += 8) {
        const v8d v = __builtin_convertvector(v8_load(x + i), v8d);
        acc += v * v;
    }
    double ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < D; i++) ss += (double)x[i] * x[i];
    const float r = (float)(1.0 / sqrt(ss / D + eps));
    for (i = 0; i < D; i++) o[i] = w[i] * (x[i] * r);
}

void nl_rmsnorm(float *out, const float *x, const float *w, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) rms_row(out + (size_t)t * D, x + (size_t)t * D, w, D, eps);
}

#define NL_ACT_CHUNK 4096 /* elements per OpenMP task of the activation loops */

void nl_activate(float *x, int64_t n, nl_act act) { nl_act_glu(x, NULL, n, act); }

void nl_act_glu(float *g, const float *u, int64_t n, nl_act act) {
    const int64_t chunks = (n + NL_ACT_CHUNK - 1) / NL_ACT_CHUNK;
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t lo = c * NL_ACT_CHUNK, len = n - lo < NL_ACT_CHUNK ? n - lo : NL_ACT_CHUNK;
        nl_act_vec(g + lo, u ? u + lo : NULL, len, act);
    }
}

void nl_rope_inv_freq(const nl_config *c, float *inv_freq) {
    const int half = c->rotary_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rotary_dim);
        if (c->rope_scaling == NL_ROPE_SCALING_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_scaling == NL_ROPE_SCALING_LLAMA3) {
            const float orig = (float)c->rope_orig_max_pos;
            const float low_wl = orig / c->rope_low_freq_factor, high_wl = orig / c->rope_high_freq_factor;
            const float wl = 2.0f * (float)M_PI / f;
            if (wl > low_wl) {
                f = f / c->rope_factor;
            } else if (!(wl < high_wl)) {
                float smooth = (orig / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

void nl_rope(float *x, int ld, int T, int n_heads, int Dh, int rotary_dim, int interleaved, int pos0,
             const float *inv_freq) {
    const int half = rotary_dim / 2;
#pragma omp parallel for schedule(static) if ((int64_t)T * n_heads * rotary_dim > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        float cs[512], sn[512];
        NL_ASSERT(half <= 512);
        const float pos = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float a = pos * inv_freq[i];
            cs[i] = cosf(a);
            sn[i] = sinf(a);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * ld + (size_t)h * Dh;
            if (interleaved) {
                for (int i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * cs[i] - b * sn[i];
                    v[2 * i + 1] = a * sn[i] + b * cs[i];
                }
            } else {
                for (int i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * cs[i] - b * sn[i];
                    v[i + half] = b * cs[i] + a * sn[i];
                }
            }
        }
    }
}
