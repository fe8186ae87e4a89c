/* router_mlp.c — the MLP router of MoEfication (moe.h "the MLP router"): score =
 * W2·tanh(W1·x̂), its BCE-with-logits loss and gradients on a batch, Adam, and the training
 * loop (seeded 90/10 split by token, shuffled minibatches, held-out loss and recall against the
 * sim router). Everything is computed in double (BLAS dgemm); the folder stores float. No
 * dependency beyond BLAS. Checked by tests/test_moe_router.c (finite differences, the PyTorch
 * fixture of tests/reference/gen_router_mlp.py, a learnable synthetic case). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_internal.h"
#include "neuronlab/rng.h"

#define RNG_PURPOSE 0x524d4c50ULL /* "RMLP" */

void nl_moe_mlp_opts_init(nl_moe_mlp_opts *o) {
    memset(o, 0, sizeof *o);
    o->epochs = 30;
    o->lr = 1e-2;
    o->batch = 512;
    o->holdout = 0.1;
}

size_t nl_moe_mlp_work_size(int B, int D, int E) { return (size_t)B * D + 4 * (size_t)B * E; }

/* dst (D) = x / ‖x‖ in double (a zero x stays zero). */
static void unit(const float *x, int D, double *dst) {
    double s = 0;
    for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
    const double k = s > 0 ? 1.0 / sqrt(s) : 0.0;
    for (int d = 0; d < D; d++) dst[d] = x[d] * k;
}

double nl_moe_mlp_loss_grad(const double *W1, const double *W2, int D, int E, const float *X, const float *S, int B, double *g1,
                            double *g2, double *work) {
    double *Xn = work, *H = Xn + (size_t)B * D, *Z = H + (size_t)B * E, *dZ = Z + (size_t)B * E, *dA = dZ + (size_t)B * E;
    for (int t = 0; t < B; t++) unit(X + (size_t)t * D, D, Xn + (size_t)t * D);
    /* A = Xn·W1ᵀ, H = tanh(A), Z = H·W2ᵀ */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, E, D, 1.0, Xn, D, W1, D, 0.0, H, E);
    for (size_t i = 0; i < (size_t)B * E; i++) H[i] = tanh(H[i]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, E, E, 1.0, H, E, W2, E, 0.0, Z, E);
    double smax = 0;
    for (size_t i = 0; i < (size_t)B * E; i++)
        if (S[i] > smax) smax = S[i];
    const double inv = smax > 0 ? 1.0 / smax : 0.0, scale = 1.0 / ((double)B * E);
    double loss = 0;
    for (size_t i = 0; i < (size_t)B * E; i++) {
        const double z = Z[i], y = S[i] * inv;
        loss += (z > 0 ? z : 0) - z * y + log1p(exp(-fabs(z)));
        const double sg = z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
        dZ[i] = (sg - y) * scale;
    }
    if (g1 && g2) {
        /* g2 = dZᵀ·H; dH = dZ·W2; dA = dH ⊙ (1 − H²); g1 = dAᵀ·Xn */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, E, E, B, 1.0, dZ, E, H, E, 0.0, g2, E);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, E, E, 1.0, dZ, E, W2, E, 0.0, dA, E);
        for (size_t i = 0; i < (size_t)B * E; i++) dA[i] *= 1.0 - H[i] * H[i];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, E, D, B, 1.0, dA, E, Xn, D, 0.0, g1, D);
    }
    return loss * scale;
}

void nl_moe_adam_step(double *w, const double *g, double *m, double *v, size_t n, double lr, int64_t t) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const double step = lr / bc1, sbc2 = sqrt(bc2);
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        w[i] -= step * m[i] / (sqrt(v[i]) / sbc2 + eps); /* torch: denom = √v/√bc2 + ε, step lr/bc1 */
    }
}

void nl_moe_mlp_scores(const float *W1, const float *W2, int D, int E, const float *X, int n, float *z) {
    double *xn = malloc((size_t)D * sizeof(double)), *h = malloc((size_t)E * sizeof(double));
    if (!xn || !h) { /* no scratch: scores that select nothing in particular */
        for (size_t i = 0; i < (size_t)n * E; i++) z[i] = 0;
        free(xn), free(h);
        return;
    }
    for (int t = 0; t < n; t++) {
        unit(X + (size_t)t * D, D, xn);
        for (int e = 0; e < E; e++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += (double)W1[(size_t)e * D + d] * xn[d];
            h[e] = tanh(a);
        }
        for (int e = 0; e < E; e++) {
            double a = 0;
            for (int j = 0; j < E; j++) a += (double)W2[(size_t)e * E + j] * h[j];
            z[(size_t)t * E + e] = (float)a;
        }
    }
    free(xn), free(h);
}

/* mark (E) = 1 for the K largest of v (ties to the lower index). */
static void top_mark(const float *v, int E, int K, char *mark) {
    memset(mark, 0, (size_t)E);
    for (int k = 0; k < K; k++) {
        int b = -1;
        for (int e = 0; e < E; e++)
            if (!mark[e] && (b < 0 || v[e] > v[b] || (v[b] != v[b] && v[e] == v[e]))) b = e;
        mark[b] = 1;
    }
}

double nl_moe_recall(const float *z, const float *s, int n, int E, int K) {
    char *a = malloc((size_t)E), *b = malloc((size_t)E);
    if (!a || !b || n <= 0) { free(a), free(b); return NAN; }
    double sum = 0;
    for (int t = 0; t < n; t++) {
        const float *zt = z + (size_t)t * E, *st = s + (size_t)t * E;
        top_mark(zt, E, K, a);
        top_mark(st, E, K, b);
        double num = 0, den = 0;
        for (int e = 0; e < E; e++) num += a[e] ? st[e] : 0, den += b[e] ? st[e] : 0;
        sum += den > 0 ? num / den : 1.0;
    }
    free(a), free(b);
    return sum / n;
}

/* Gathers rows idx[0..B) of X and S into Xb (B, D), Sb (B, E). */
static void gather(const float *X, const float *S, int D, int E, const int64_t *idx, int B, float *Xb, float *Sb) {
    for (int j = 0; j < B; j++) {
        memcpy(Xb + (size_t)j * D, X + (size_t)idx[j] * D, (size_t)D * sizeof(float));
        memcpy(Sb + (size_t)j * E, S + (size_t)idx[j] * E, (size_t)E * sizeof(float));
    }
}

/* Mean loss over the rows idx[0..n) in batches of bs (in order). */
static double split_loss(const double *W1, const double *W2, int D, int E, const float *X, const float *S, const int64_t *idx,
                         int64_t n, int bs, float *Xb, float *Sb, double *work) {
    double sum = 0;
    int nb = 0;
    for (int64_t b0 = 0; b0 < n; b0 += bs, nb++) {
        const int B = (int)(n - b0 < bs ? n - b0 : bs);
        gather(X, S, D, E, idx + b0, B, Xb, Sb);
        sum += nl_moe_mlp_loss_grad(W1, W2, D, E, Xb, Sb, B, NULL, NULL, work);
    }
    return nb ? sum / nb : NAN;
}

nl_status nl_moe_mlp_train(nl_ctx *ctx, const nl_moe_mlp_opts *o, int D, int E, int64_t n, const float *X, const float *S,
                           const float *sim, const char *what, float *W1, float *W2, nl_moe_mlp_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (n < 2) return nl_errorf(ctx, NL_EINVAL, "the MLP router needs at least 2 calibration tokens (%lld)", (long long)n);
    if (o->epochs < 0 || !(o->lr > 0) || o->batch < 1 || !(o->holdout > 0 && o->holdout < 1) || o->K < 0 || o->K > E)
        return nl_errorf(ctx, NL_EINVAL, "MLP router options out of range (epochs %d, lr %g, batch %d, holdout %g, K %d of %d)",
                         o->epochs, o->lr, o->batch, o->holdout, o->K, E);
    int64_t n_held = llround(o->holdout * (double)n);
    if (n_held < 1) n_held = 1;
    if (n_held > n - 1) n_held = n - 1;
    const int64_t n_train = n - n_held;
    const int bs = o->batch;
    const size_t n1 = (size_t)E * D, n2 = (size_t)E * E;
    int64_t *idx = malloc((size_t)n * sizeof(int64_t));
    double *w = calloc(3 * (n1 + n2) + n1 + n2, sizeof(double)); /* weights, m, v, grads */
    double *work = malloc(nl_moe_mlp_work_size(bs, D, E) * sizeof(double));
    float *Xb = malloc((size_t)bs * D * sizeof(float)), *Sb = malloc((size_t)bs * E * sizeof(float));
    float *zh = malloc((size_t)n_held * E * sizeof(float)), *sh = malloc((size_t)n_held * E * sizeof(float));
    float *xh = malloc((size_t)n_held * D * sizeof(float));
    nl_status st = NL_OK;
    if (!idx || !w || !work || !Xb || !Sb || !zh || !sh || !xh) {
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory (MLP router training on %lld tokens)", (long long)n);
        goto done;
    }
    double *W1d = w, *W2d = W1d + n1, *m1 = W2d + n2, *m2 = m1 + n1, *v1 = m2 + n2, *v2 = v1 + n1, *g1 = v2 + n2, *g2 = g1 + n1;
    for (size_t i = 0; i < n1; i++) W1d[i] = sim[i];
    for (int e = 0; e < E; e++) W2d[(size_t)e * E + e] = 1.0;
    nl_rng r;
    nl_rng_derive(&r, o->seed, RNG_PURPOSE, 0);
    nl_rng_permutation(&r, idx, n);
    const int64_t *held = idx + n_train;
    rep->n_train = n_train, rep->n_held = n_held;
    rep->init_held_loss = split_loss(W1d, W2d, D, E, X, S, held, n_held, bs, Xb, Sb, work);
    nl_progress prog;
    nl_progress_init(&prog, what ? what : "router", (int64_t)o->epochs * n_train, "tok", ctx->progress);
    int64_t t = 0;
    for (int ep = 0; ep < o->epochs && st == NL_OK; ep++) {
        nl_rng_derive(&r, o->seed, RNG_PURPOSE, (uint64_t)ep + 1);
        /* shuffle the training part in place (Fisher–Yates) */
        for (int64_t i = n_train - 1; i > 0; i--) {
            const int64_t j = (int64_t)nl_rng_below(&r, (uint64_t)i + 1), tmp = idx[i];
            idx[i] = idx[j], idx[j] = tmp;
        }
        for (int64_t b0 = 0; b0 < n_train; b0 += bs) {
            const int B = (int)(n_train - b0 < bs ? n_train - b0 : bs);
            gather(X, S, D, E, idx + b0, B, Xb, Sb);
            nl_moe_mlp_loss_grad(W1d, W2d, D, E, Xb, Sb, B, g1, g2, work);
            ++t;
            nl_moe_adam_step(W1d, g1, m1, v1, n1, o->lr, t);
            nl_moe_adam_step(W2d, g2, m2, v2, n2, o->lr, t);
            nl_progress_add(&prog, B);
        }
        if (nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
    }
    nl_progress_end(&prog);
    if (st != NL_OK) goto done;
    for (size_t i = 0; i < n1; i++) W1[i] = (float)W1d[i];
    for (size_t i = 0; i < n2; i++) W2[i] = (float)W2d[i];
    rep->train_loss = split_loss(W1d, W2d, D, E, X, S, idx, n_train, bs, Xb, Sb, work);
    rep->held_loss = split_loss(W1d, W2d, D, E, X, S, held, n_held, bs, Xb, Sb, work);
    /* held-out recall: mlp (the float weights, as routed) and sim (x·ĉ_e) */
    for (int64_t j = 0; j < n_held; j++) {
        memcpy(xh + (size_t)j * D, X + (size_t)held[j] * D, (size_t)D * sizeof(float));
        memcpy(sh + (size_t)j * E, S + (size_t)held[j] * E, (size_t)E * sizeof(float));
    }
    rep->K25 = (int)lround(E / 4.0);
    if (rep->K25 < 1) rep->K25 = 1;
    rep->K = o->K;
    nl_moe_mlp_scores(W1, W2, D, E, xh, (int)n_held, zh);
    rep->recall_mlp25 = nl_moe_recall(zh, sh, (int)n_held, E, rep->K25);
    if (o->K) rep->recall_mlp_k = nl_moe_recall(zh, sh, (int)n_held, E, o->K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_held, E, D, 1.0f, xh, D, sim, D, 0.0f, zh, E);
    rep->recall_sim25 = nl_moe_recall(zh, sh, (int)n_held, E, rep->K25);
    if (o->K) rep->recall_sim_k = nl_moe_recall(zh, sh, (int)n_held, E, o->K);
done:
    free(idx), free(w), free(work), free(Xb), free(Sb), free(zh), free(sh), free(xh);
    return st;
}

int nl_moe_alloc_mlp(nl_moe *m) {
    const int D = m->info.d_model, E = m->info.E;
    for (int i = 0; i < m->n_moe; i++) {
        nl_moe_layer *y = &m->layers[i];
        if (!y->mlp_w1) y->mlp_w1 = calloc((size_t)E * D, sizeof(float));
        if (!y->mlp_w2) y->mlp_w2 = calloc((size_t)E * E, sizeof(float));
        if (!y->mlp_w1 || !y->mlp_w2) return -1;
    }
    return 0;
}
