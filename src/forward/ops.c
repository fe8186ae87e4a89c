/* ops.c — fp32 kernels: GEMM through OpenBLAS, norms, activations, RoPE.
 *
 * Numerics follow the Hugging Face / PyTorch reference: statistics of norms accumulate in
 * double, RoPE angles are computed in f32 as pos · inv_freq (as torch does).
 * Checked by tests/test_ops.c (against plain loops) and tests/test_forward.c (PyTorch).
 */
#include "neuronlab/ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void nl_matmul(float *y, int ldy, const float *x, int ldx, int T, const nl_mat *w, const float *b) {
    NL_ASSERT(w->w);
    if (T <= 0) return;
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

void nl_rmsnorm(float *out, const float *x, const float *w, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = out + (size_t)t * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = 0; i < D; i++) o[i] = w[i] * (xr[i] * r);
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

float nl_act_scalar(float x, nl_act act) {
    switch (act) {
    case NL_ACT_SILU: return x / (1.0f + expf(-x));
    case NL_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case NL_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case NL_ACT_RELU: return x > 0 ? x : 0.0f;
    case NL_ACT_RELU2: return x > 0 ? x * x : 0.0f;
    }
    return x;
}

void nl_activate(float *x, int64_t n, nl_act act) {
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = nl_act_scalar(x[i], act);
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
