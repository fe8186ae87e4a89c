/* train_ops.c — forward/backward kernels of the trainer (see train_ops.h).
 *
 * Backward formulas (y = forward output, dy = its gradient):
 *   linear      y = x·Wᵀ               dx = dy·W,  dW += dyᵀ·x
 *   rmsnorm     y = w ⊙ x·r, r = (Σx²/D + eps)^-½
 *               dx = r·(w ⊙ dy) − x · r³/D · Σ_i w_i dy_i x_i,   dw += Σ_t dy ⊙ x·r
 *   gated act   a = act(g) ⊙ u          dg = da ⊙ u ⊙ act'(g),  du = da ⊙ act(g)
 *   rope        y = R(θ)x (orthogonal)  dx = R(−θ)dy
 *   softmax     p = softmax(s)          ds = p ⊙ (dp − Σ_j p_j dp_j)
 *   attention   s = q·kᵀ/√Dh, o = p·v   dv = pᵀ·do, dp = do·vᵀ, dq = ds·k/√Dh, dk = dsᵀ·q/√Dh
 *   cross-ent.  ℓ = lse(z) − z_y        dz = softmax(z) − onehot(y)
 * Checked by tests/test_train_model.c.
 */
#include "neuronlab/train_ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "neuronlab/ops.h"

void nl_linear_fwd(float *y, const float *x, const float *w, int T, int n_in, int n_out, int accumulate) {
    if (T <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_out, n_in, 1.0f, x, n_in, w, n_in,
                accumulate ? 1.0f : 0.0f, y, n_out);
}

void nl_linear_bwd(float *dx, int dx_accumulate, float *dw, const float *dy, const float *x, const float *w, int T,
                   int n_in, int n_out) {
    if (T <= 0) return;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, n_in, n_out, 1.0f, dy, n_out, w, n_in,
                    dx_accumulate ? 1.0f : 0.0f, dx, n_in);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, T, 1.0f, dy, n_out, x, n_in, 1.0f, dw, n_in);
}

void nl_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *o = y + (size_t)t * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        rstd[t] = r;
        for (int i = 0; i < D; i++) o[i] = w[i] * (xr[i] * r);
    }
}

void nl_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w, int T,
                    int D) {
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D, *g = dy + (size_t)t * D;
        float *o = dx + (size_t)t * D;
        const double r = rstd[t];
        double dot = 0;
        for (int i = 0; i < D; i++) dot += (double)w[i] * g[i] * xr[i];
        const double c = r * r * r * dot / D;
        for (int i = 0; i < D; i++) o[i] += (float)(r * w[i] * g[i] - c * xr[i]);
    }
    /* dw: each thread owns a range of columns and sums its rows in order (thread-count independent). */
#pragma omp parallel if ((int64_t)T * D > NL_PAR_MIN)
    {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int i0 = (int)((int64_t)D * id / nt), i1 = (int)((int64_t)D * (id + 1) / nt);
        for (int i0b = i0; i0b < i1; i0b += 256) {
            const int i1b = i1 - i0b < 256 ? i1 : i0b + 256;
            double acc[256] = {0};
            for (int t = 0; t < T; t++) {
                const float *xr = x + (size_t)t * D, *g = dy + (size_t)t * D;
                const double r = rstd[t];
                for (int i = i0b; i < i1b; i++) acc[i - i0b] += (double)g[i] * xr[i] * r;
            }
            for (int i = i0b; i < i1b; i++) dw[i] += (float)acc[i - i0b];
        }
    }
}

int nl_act_trainable(nl_act act) {
    return act == NL_ACT_SILU || act == NL_ACT_GELU || act == NL_ACT_RELU || act == NL_ACT_RELU2;
}

void nl_gated_act_fwd(float *a, const float *gu, int T, int F, nl_act act) {
#pragma omp parallel for schedule(static) if ((int64_t)T * F > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *g = gu + (size_t)t * 2 * F, *u = g + F;
        float *ar = a + (size_t)t * F;
        memcpy(ar, g, (size_t)F * sizeof(float));
        nl_act_vec(ar, u, F, act);
    }
}

/* act(x) and act'(x) as torch autograd computes them. */
static inline void act_and_grad(float x, nl_act act, float *f, float *df) {
    switch (act) {
    case NL_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        *f = x * s;
        *df = s * (1.0f + x * (1.0f - s));
        return;
    }
    case NL_ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
        *f = x * cdf;
        *df = cdf + x * pdf;
        return;
    }
    case NL_ACT_RELU:
        *f = x > 0 ? x : 0.0f;
        *df = x > 0 ? 1.0f : 0.0f;
        return;
    case NL_ACT_RELU2:
        *f = x > 0 ? x * x : 0.0f;
        *df = x > 0 ? 2.0f * x : 0.0f;
        return;
    default:
        NL_ASSERT(!"activation without a backward pass");
    }
}

void nl_gated_act_bwd(float *dgu, const float *da, const float *gu, int T, int F, nl_act act) {
#pragma omp parallel for schedule(static) if ((int64_t)T * F > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *g = gu + (size_t)t * 2 * F, *u = g + F, *d = da + (size_t)t * F;
        float *dg = dgu + (size_t)t * 2 * F, *du = dg + F;
        for (int i = 0; i < F; i++) {
            float f, df;
            act_and_grad(g[i], act, &f, &df);
            dg[i] = d[i] * u[i] * df;
            du[i] = d[i] * f;
        }
    }
}

void nl_abs_rowsum(double *rowsum, const float *a, int T, int F) {
#pragma omp parallel for schedule(static) if ((int64_t)T * F > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *r = a + (size_t)t * F;
        double s = 0;
        for (int i = 0; i < F; i++) s += fabsf(r[i]);
        rowsum[t] = s;
    }
}

void nl_l1_bwd(float *da, const float *a, int64_t n, float c) {
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
    for (int64_t i = 0; i < n; i++) da[i] += a[i] > 0 ? c : a[i] < 0 ? -c : 0.0f;
}

void nl_rope_table(float *cs, float *sn, int S, int half, const float *inv_freq) {
    for (int t = 0; t < S; t++)
        for (int i = 0; i < half; i++) {
            float a = (float)t * inv_freq[i];
            cs[(size_t)t * half + i] = cosf(a);
            sn[(size_t)t * half + i] = sinf(a);
        }
}

void nl_rope_rows(float *x, int ld, int T, int S, int n_heads, int Dh, const float *cs, const float *sn, int inverse) {
    const int half = Dh / 2;
#pragma omp parallel for schedule(static) if ((int64_t)T * n_heads * Dh > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *c = cs + (size_t)(t % S) * half, *s = sn + (size_t)(t % S) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * ld + (size_t)h * Dh;
            for (int i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half], si = inverse ? -s[i] : s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

/* Causal attention in row blocks of NL_ATT_BLOCK queries: block [r0, r1) only needs keys [0, r1),
 * so the products skip the upper triangle except inside the diagonal blocks (62.5% of the full
 * S×S work at S = 256). */
void nl_attention_fwd(float *att, float *P, const float *qkv, int B, int S, int H, int Hk, int Dh) {
    const int Q = H * Dh, KV = Hk * Dh, W = Q + 2 * KV, group = H / Hk;
    const float scale = 1.0f / sqrtf((float)Dh);
#pragma omp parallel for schedule(dynamic, 1) if ((int64_t)B * H * S * S > NL_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H, g = h / group;
        const float *base = qkv + (size_t)b * S * W;
        const float *q = base + (size_t)h * Dh, *k = base + Q + (size_t)g * Dh, *v = base + Q + KV + (size_t)g * Dh;
        float *p = P + (size_t)bh * S * S;
        for (int r0 = 0; r0 < S; r0 += NL_ATT_BLOCK) {
            const int r1 = S - r0 < NL_ATT_BLOCK ? S : r0 + NL_ATT_BLOCK, m = r1 - r0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r1, Dh, scale, q + (size_t)r0 * W, W, k, W, 0.0f,
                        p + (size_t)r0 * S, S);
            for (int i = r0; i < r1; i++) {
                float *r = p + (size_t)i * S;
                float mx = -INFINITY;
                for (int j = 0; j <= i; j++) mx = r[j] > mx ? r[j] : mx;
                double sum = 0;
                for (int j = 0; j <= i; j++) { r[j] = expf(r[j] - mx); sum += r[j]; }
                const float inv = (float)(1.0 / sum);
                for (int j = 0; j <= i; j++) r[j] *= inv;
                for (int j = i + 1; j < r1; j++) r[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, Dh, r1, 1.0f, p + (size_t)r0 * S, S, v, W, 0.0f,
                        att + ((size_t)b * S + r0) * Q + (size_t)h * Dh, Q);
        }
    }
}

void nl_attention_bwd(float *dqkv, float *dkv, float *dp, int n_scratch, const float *datt, const float *P,
                      const float *qkv, int B, int S, int H, int Hk, int Dh) {
    const int Q = H * Dh, KV = Hk * Dh, W = Q + 2 * KV, group = H / Hk;
    const float scale = 1.0f / sqrtf((float)Dh);
    int nt = omp_get_max_threads();
    if (nt > n_scratch) nt = n_scratch;
    if (nt < 1) nt = 1;
    /* per query head: dq into dqkv, dk and dv into dkv (T, 2Q) = [dk_h | dv_h] */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if ((int64_t)B * H * S * S > NL_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H, g = h / group;
        const float *base = qkv + (size_t)b * S * W;
        const float *q = base + (size_t)h * Dh, *k = base + Q + (size_t)g * Dh, *v = base + Q + KV + (size_t)g * Dh;
        const float *p = P + (size_t)bh * S * S;
        const float *dout = datt + (size_t)b * S * Q + (size_t)h * Dh;
        float *d = dp + (size_t)omp_get_thread_num() * S * S;
        float *dk = dkv + (size_t)b * S * 2 * Q + (size_t)h * Dh, *dv = dk + Q;
        float *dq = dqkv + (size_t)b * S * W + (size_t)h * Dh;
        for (int i = 0; i < S; i++) {
            memset(dk + (size_t)i * 2 * Q, 0, (size_t)Dh * sizeof(float));
            memset(dv + (size_t)i * 2 * Q, 0, (size_t)Dh * sizeof(float));
        }
        for (int r0 = 0; r0 < S; r0 += NL_ATT_BLOCK) {
            const int r1 = S - r0 < NL_ATT_BLOCK ? S : r0 + NL_ATT_BLOCK, m = r1 - r0;
            const float *pb = p + (size_t)r0 * S, *db = dout + (size_t)r0 * Q;
            float *dsb = d + (size_t)r0 * S;
            /* dv[0, r1) += p[r0:r1, 0:r1]ᵀ · do[r0:r1];  dp[r0:r1, 0:r1] = do[r0:r1] · v[0, r1)ᵀ */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, Dh, m, 1.0f, pb, S, db, Q, 1.0f, dv, 2 * Q);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r1, Dh, 1.0f, db, Q, v, W, 0.0f, dsb, S);
            for (int i = r0; i < r1; i++) {
                const float *pr = p + (size_t)i * S;
                float *dr = d + (size_t)i * S;
                double dot = 0;
                for (int j = 0; j <= i; j++) dot += (double)pr[j] * dr[j];
                const float fd = (float)dot;
                for (int j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - fd) * scale;
                for (int j = i + 1; j < r1; j++) dr[j] = 0.0f;
            }
            /* dq[r0:r1] = ds · k[0, r1);  dk[0, r1) += dsᵀ · q[r0:r1]  (scale folded into ds) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, Dh, r1, 1.0f, dsb, S, k, W, 0.0f,
                        dq + (size_t)r0 * W, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, Dh, m, 1.0f, dsb, S, q + (size_t)r0 * W, W, 1.0f,
                        dk, 2 * Q);
        }
    }
    /* kv head g gets the sum over its query heads, in head order */
    const int T = B * S;
#pragma omp parallel for schedule(static) if ((int64_t)T * W > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *src = dkv + (size_t)t * 2 * Q;
        float *dst = dqkv + (size_t)t * W + Q;
        for (int g = 0; g < Hk; g++) {
            float *dkg = dst + (size_t)g * Dh, *dvg = dst + KV + (size_t)g * Dh;
            for (int i = 0; i < Dh; i++) { dkg[i] = 0.0f; dvg[i] = 0.0f; }
            for (int hh = g * group; hh < (g + 1) * group; hh++) {
                const float *dk = src + (size_t)hh * Dh, *dv = src + Q + (size_t)hh * Dh;
                for (int i = 0; i < Dh; i++) { dkg[i] += dk[i]; dvg[i] += dv[i]; }
            }
        }
    }
}

void nl_cross_entropy(float *logits, double *loss, const int32_t *targets, int T, int V, float grad_scale) {
#pragma omp parallel for schedule(static) if ((int64_t)T * V > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        float *z = logits + (size_t)t * V;
        const int y = targets[t];
        if (y < 0) {
            loss[t] = 0;
            if (grad_scale != 0.0f) memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        const float zy = z[y];
        if (grad_scale == 0.0f) {
            double s = 0;
            for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
            loss[t] = log(s) + mx - zy;
            continue;
        }
        double s = 0;
        for (int v = 0; v < V; v++) {
            z[v] = expf(z[v] - mx);
            s += z[v];
        }
        loss[t] = log(s) + mx - zy;
        const float k = (float)(grad_scale / s);
        for (int v = 0; v < V; v++) z[v] *= k;
        z[y] -= grad_scale;
    }
}

double nl_sum_sq(const float *x, int64_t n) {
    enum { NC = 256 };
    double part[NC];
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
    for (int c = 0; c < NC; c++) {
        const int64_t a = n * c / NC, b = n * (c + 1) / NC;
        double s = 0;
        for (int64_t i = a; i < b; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < NC; c++) s += part[c];
    return s;
}
