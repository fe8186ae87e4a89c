/* moe_speed.c — the expert-FFN speed bench of bench/moe.sh (built by it against
 * BUILD/libneuronlab.a):
 *   moe_speed MODEL [E] [K] [REPEAT]
 * MODEL is a one-layer random-weight Llama folder of Llama-7B FFN shape (d_model 4096,
 * d_ff 11008; written by bench/sparsity_gen). Layer 0 is MoEfied with a random permutation of
 * the d_ff neurons into E equal experts (default 64, 172 neurons each), a random sim router
 * (unit rows) and random static vectors; K (default E/4) experts per token, fill zero. Times the
 * library's dense FFN (nl_ffn_dense) and the expert FFN (nl_moe_ffn_fn) on the same random
 * inputs at batch 1 and batch 64 (median of REPEAT calls after one warm-up call each) and prints
 * the times, the ratios and the BLAS kernel (OPENBLAS_CORETYPE, openblas_get_corename()).
 * Exit 1 on an error. Not part of the library or the tests. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_internal.h"
#include "neuronlab/common.h"
#include "neuronlab/forward.h"
#include "neuronlab/hooks.h"
#include "neuronlab/model.h"
#include "neuronlab/ops.h"
#include "neuronlab/rng.h"

char *openblas_get_corename(void);
int openblas_get_num_threads(void);

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The dense FFN with one GEMV per projection (batch 1 only): the best dense baseline at T = 1,
 * where nl_ffn_dense runs GEMMs of one row. Gated FFN only (the bench model is Llama). */
static nl_status dense_gemv(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    (void)user, (void)ctx;
    const nl_layer *w = call->w;
    const int D = call->D, F = call->F;
    const nl_mat *g = &w->w_gate, *u = &w->w_up, *d = &w->w_down;
    cblas_sgemv(CblasRowMajor, g->trans ? CblasTrans : CblasNoTrans, g->trans ? D : F, g->trans ? F : D, 1.0f, g->w, g->ld, x, 1, 0.0f, call->pre, 1);
    cblas_sgemv(CblasRowMajor, u->trans ? CblasTrans : CblasNoTrans, u->trans ? D : F, u->trans ? F : D, 1.0f, u->w, u->ld, x, 1, 0.0f, call->up, 1);
    for (int i = 0; i < F; i++) call->pre[i] = nl_act_scalar(call->pre[i], call->config->act) * call->up[i];
    cblas_sgemv(CblasRowMajor, d->trans ? CblasTrans : CblasNoTrans, d->trans ? F : D, d->trans ? D : F, 1.0f, d->w, d->ld, call->pre, 1, 0.0f, out, 1);
    return NL_OK;
}

static nl_ffn_fn fn_of[3] = {nl_ffn_dense, nl_moe_ffn_fn, dense_gemv};

/* Median seconds of rep calls of fn on (T, D) inputs X. */
static int time_fn(nl_ctx *ctx, int which, void *user, nl_ffn_call *call, const float *X, float *out, int rep, double *med) {
    double *t = malloc((size_t)rep * sizeof(double));
    if (!t) return 1;
    if (fn_of[which](user, ctx, call, X, out) != NL_OK) { free(t); return 1; }
    for (int r = 0; r < rep; r++) {
        const double t0 = nl_now();
        if (fn_of[which](user, ctx, call, X, out) != NL_OK) { free(t); return 1; }
        t[r] = nl_now() - t0;
    }
    qsort(t, (size_t)rep, sizeof(double), cmp_d);
    *med = t[rep / 2];
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: moe_speed MODEL [E] [K] [REPEAT]\n");
        return 2;
    }
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    if (nl_model_open(&ctx, argv[1], &m) != NL_OK) { fprintf(stderr, "moe_speed: %s\n", ctx.msg); return 1; }
    const nl_config *c = nl_model_config(m);
    const int D = c->d_model, F = c->d_ff, L = c->n_layers;
    const int E = argc > 2 ? atoi(argv[2]) : 64;
    const int K = argc > 3 ? atoi(argv[3]) : E / 4;
    const int rep = argc > 4 ? atoi(argv[4]) : 9;
    if (E < 1 || E > F || K < 1 || K > E || rep < 1) { fprintf(stderr, "moe_speed: bad E, K or REPEAT\n"); return 2; }
    const int layer0 = 0;
    nl_moe *moe = nl_moe_alloc(L, D, F, E, &layer0, 1);
    if (!moe) { fprintf(stderr, "moe_speed: out of memory\n"); return 1; }
    nl_moe_layer *y = &moe->layers[0];
    nl_rng r;
    nl_rng_derive(&r, 7, 1, 0);
    for (int i = 0; i < F; i++) y->perm[i] = i;
    for (int i = F - 1; i > 0; i--) { /* Fisher–Yates: a random split of the neurons */
        const int j = (int)(nl_rng_uniform(&r) * (i + 1)) % (i + 1);
        const int32_t v = y->perm[i];
        y->perm[i] = y->perm[j], y->perm[j] = v;
    }
    int sizes[4096];
    if (E > 4096) return 2;
    nl_moe_part_sizes(F, E, sizes);
    y->offset[0] = 0;
    for (int e = 0; e < E; e++) y->offset[e + 1] = y->offset[e] + sizes[e];
    for (int e = 0; e < E; e++) { /* ascending original index inside each expert, as moefy does */
        int32_t *p = y->perm + y->offset[e];
        const int n = sizes[e];
        for (int a = 1; a < n; a++) {
            int32_t v = p[a];
            int b = a;
            while (b > 0 && p[b - 1] > v) p[b] = p[b - 1], b--;
            p[b] = v;
        }
    }
    for (int i = 0; i < F; i++) y->mu[i] = 0.01f * (float)nl_rng_normal(&r);
    for (int e = 0; e < E; e++) {
        double nn = 0;
        for (int d = 0; d < D; d++) {
            const float v = (float)nl_rng_normal(&r);
            y->router_sim[(size_t)e * D + d] = v, nn += (double)v * v;
            y->stat[(size_t)e * D + d] = 0.01f * (float)nl_rng_normal(&r);
        }
        for (int d = 0; d < D; d++) y->router_sim[(size_t)e * D + d] /= (float)sqrt(nn);
    }
    for (int e = 0; e < E; e++)
        for (int d = 0; d < D; d++) y->stat_sum[d] += y->stat[(size_t)e * D + d];

    const int Tmax = 64;
    nl_moe_ffn_opts fo = {K, NL_MOE_FILL_ZERO, NL_MOE_ROUTER_SIM, 0};
    nl_moe_ffn *x = NULL;
    if (nl_moe_ffn_create(&ctx, moe, m, &fo, Tmax, &x) != NL_OK) { fprintf(stderr, "moe_speed: %s\n", ctx.msg); return 1; }
    nl_layer w;
    if (nl_model_layer(&ctx, m, 0, &w) != NL_OK) { fprintf(stderr, "moe_speed: %s\n", ctx.msg); return 1; }
    nl_hooks hooks;
    nl_hooks_init(&hooks);
    float *X = malloc((size_t)Tmax * D * sizeof(float)), *out = malloc((size_t)Tmax * D * sizeof(float));
    float *pre = malloc((size_t)Tmax * F * sizeof(float)), *up = malloc((size_t)Tmax * F * sizeof(float));
    int32_t toks[64] = {0};
    if (!X || !out || !pre || !up) { fprintf(stderr, "moe_speed: out of memory\n"); return 1; }
    for (int i = 0; i < Tmax * D; i++) X[i] = (float)nl_rng_normal(&r);

    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("expert FFN speed: d_model %d, d_ff %d, %s FFN, f32; E %d experts of %d neurons (random permutation split), "
           "K %d (%.1f%%), router sim, fill zero\n",
           D, F, c->ffn_gated ? "gated" : "plain", E, sizes[0], K, 100.0 * K / E);
    printf("BLAS: OpenBLAS %s kernel, OPENBLAS_CORETYPE %s, %d thread(s); load %s", openblas_get_corename(),
           ct ? ct : "(not set)", openblas_get_num_threads(), "");
    FILE *la = fopen("/proc/loadavg", "r");
    char lbuf[64] = "?";
    if (la) { if (!fgets(lbuf, sizeof lbuf, la)) strcpy(lbuf, "?\n"); fclose(la); }
    printf("%s", lbuf);
    printf("%-6s %12s %12s %12s %9s %11s\n", "batch", "dense ms", "dense-gemv", "MoE ms", "speedup", "FLOP ratio");
    const int batches[2] = {1, 64};
    int bad = 0;
    for (int b = 0; b < 2; b++) {
        const int T = batches[b];
        nl_ffn_call call = {0, T, D, F, 0, toks, c, &w, pre, up, &hooks};
        double td = 0, tm = 0, tv = -1;
        const int rp = T == 1 ? rep * 4 : rep;
        if (time_fn(&ctx, 0, NULL, &call, X, out, rp, &td) || time_fn(&ctx, 1, x, &call, X, out, rp, &tm) ||
            (T == 1 && c->ffn_gated && time_fn(&ctx, 2, NULL, &call, X, out, rp, &tv))) {
            fprintf(stderr, "moe_speed: %s\n", ctx.msg);
            return 1;
        }
        const double fl = nl_moe_flops_dense(c) / nl_moe_flops_layer(c, E, 0, K, NL_MOE_ROUTER_SIM, NL_MOE_FILL_ZERO);
        const double target = T == 1 ? 2.5 : 2.0, best = tv > 0 && tv < td ? tv : td;
        char vb[32] = "-";
        if (tv > 0) snprintf(vb, sizeof vb, "%.3f", tv * 1e3);
        printf("%-6d %12.3f %12s %12.3f %8.2fx %10.2fx   target >= %.1fx: %s\n", T, td * 1e3, vb, tm * 1e3, best / tm, fl, target,
               best / tm >= target ? "met" : "NOT met");
        bad |= best / tm < target;
    }
    printf("dense: nl_ffn_dense (what the forward pass runs); dense-gemv: the same layer with one GEMV per projection;\n"
           "speedup: the faster dense time / MoE time.\n");
    printf("times: median of %d (batch 1) / %d (batch 64) calls after one warm-up call; same inputs for both.\n", rep * 4, rep);
    nl_moe_ffn_destroy(x);
    nl_moe_close(moe);
    nl_model_close(m);
    free(X), free(out), free(pre), free(up);
    (void)bad;
    return 0;
}
