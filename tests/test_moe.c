/* test_moe.c — MoEfication (include/neuronlab/moe.h):
 *   - balanced k-means equals the exhaustive optimum on tiny cases, with exactly balanced sizes;
 *   - METIS partitions are balanced, deterministic, and recover a planted partition;
 *   - the expert FFN equals brute force "compute every neuron, replace the unselected by r_i"
 *     (zero and mean fill, sim, oracle and mlp routers, with and without a shared expert, gated and
 *     plain FFNs), the static-vector path equals summing the unselected m_e explicitly, batch-1
 *     calls equal grouped calls, and router recall equals a recomputation from the activations;
 *     FFN_ACT hooks see the layer's effective activations a' and an intervener's edits reach the
 *     output exactly (batch 1 and grouped);
 *   - the FLOP formula equals multiply-adds counted in a plain loop, and the kernel's count;
 *   - K = E reproduces the dense perplexity (fixtures, stories260K, the zoo SiLU model; sim and
 *     mlp routers); --router mlp on a folder without an mlp router is refused;
 *   - stories260K: one-neuron experts with the oracle router equal the masking perturbation of
 *     expected.json, and a pinned MoEfication perplexity;
 *   - the MLP router's calibration pass keeps evenly spaced tokens' FFN inputs and oracle scores
 *     equal to a dense pass's;
 *   - folders: round trip (with the mlp router; a folder written before it opens as sim-only),
 *     and every bad input refused with a message naming the file.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/moe_calib.h"
#include "moe/moe_internal.h"
#include "neuronlab/moe.h"
#include "neuronlab/ops.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/rng.h"
#include "testutil.h"

#define FIX "tests/fixtures/hf"
#define STORIES NL_SHARED "/models/stories260K"
#define ZOO_SILU "notebooks-data/models/silu"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct {
    nl_ctx ctx;
    nl_model *m;
    nl_forward *f;
    nl_dataset *ds;
    char data[64];
} fx;

/* Opens model; data NULL writes n_docs random-token documents of len tokens. */
static void fx_open(fx *x, const char *model, const char *data, int n_docs, int len, int batch, int ctxlen) {
    memset(x, 0, sizeof *x);
    nl_ctx_init(&x->ctx);
    x->ctx.progress = 0;
    cr_assert_eq(nl_model_open(&x->ctx, model, &x->m), NL_OK, "%s", x->ctx.msg);
    const int V = nl_model_config(x->m)->vocab_size;
    if (!data) {
        strcpy(x->data, "/tmp/nl_moe_calib_XXXXXX.jsonl");
        int fd = mkstemps(x->data, 6);
        cr_assert(fd >= 0);
        FILE *fp = fdopen(fd, "w");
        nl_rng r;
        nl_rng_derive(&r, 7, 1, 0);
        for (int d = 0; d < n_docs; d++) {
            fprintf(fp, "{\"tokens\": [");
            for (int t = 0; t < len; t++) fprintf(fp, "%s%d", t ? "," : "", (int)nl_rng_below(&r, (uint64_t)V));
            fprintf(fp, "], \"label\": \"%s\"}\n", d % 2 ? "odd" : "even");
        }
        fclose(fp);
        data = x->data;
    }
    cr_assert_eq(nl_dataset_load(&x->ctx, data, NULL, V, &x->ds), NL_OK, "%s", x->ctx.msg);
    cr_assert_eq(nl_forward_create(&x->ctx, x->m, batch, ctxlen, &x->f), NL_OK, "%s", x->ctx.msg);
}

static void fx_close(fx *x) {
    nl_forward_destroy(x->f);
    nl_dataset_destroy(x->ds);
    nl_model_close(x->m);
    if (x->data[0]) unlink(x->data);
}

/* Every folder of these tests carries both routers (a short MLP router training). */
static nl_moe *moefy(fx *x, int E, int N, nl_moe_split split) {
    nl_moefy_opts o;
    nl_moefy_opts_init(&o);
    o.E = E, o.n_shared = N, o.split = split, o.seed = 3;
    o.router = NL_MOE_ROUTER_MLP, o.mlp.epochs = 5, o.mlp.batch = 64;
    nl_moe *moe = NULL;
    cr_assert_eq(nl_moefy_run(&x->ctx, &o, x->f, x->ds, &moe), NL_OK, "%s", x->ctx.msg);
    return moe;
}

static double ppl_of(fx *x) {
    nl_ppl_result r;
    cr_assert_eq(nl_ppl_run(&x->ctx, x->f, x->ds, 0, NULL, &r), NL_OK, "%s", x->ctx.msg);
    double p = nl_nll_ppl(r.total);
    nl_ppl_result_release(&r);
    return p;
}

/* ---- balanced k-means --------------------------------------------------------------------- */

/* Exhaustive minimum of the k-means objective over all assignments with balanced sizes. */
static double exhaustive(const float *X, int n, int dim, int E) {
    int a[16] = {0}, cnt[16];
    double best = INFINITY;
    long total = 1;
    for (int i = 0; i < n; i++) total *= E;
    for (long code = 0; code < total; code++) {
        long c = code;
        memset(cnt, 0, sizeof cnt);
        for (int i = 0; i < n; i++) a[i] = (int)(c % E), c /= E, cnt[a[i]]++;
        int ok = 1;
        for (int e = 0; e < E; e++) ok &= cnt[e] == n / E || cnt[e] == n / E + 1;
        if (!ok) continue;
        double o = nl_moe_kmeans_objective(X, n, dim, E, a);
        if (o < best) best = o;
    }
    return best;
}

Test(moe, kmeans_equals_exhaustive_optimum_on_tiny_cases) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const int cases[][3] = {{6, 2, 2}, {6, 3, 3}, {7, 3, 2}, {8, 4, 3}, {8, 2, 4}, {9, 4, 2}, {5, 5, 2}, {7, 1, 3}};
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++)
        for (int rep = 0; rep < 5; rep++) {
            const int n = cases[c][0], E = cases[c][1], dim = cases[c][2];
            float X[64];
            nl_rng r;
            nl_rng_derive(&r, 11, (uint64_t)c, (uint64_t)rep);
            for (int i = 0; i < n * dim; i++) X[i] = (float)nl_rng_normal(&r);
            int a[16];
            double obj;
            cr_assert_eq(nl_moe_kmeans(&ctx, X, n, dim, E, 5, 50, 8, a, &obj), NL_OK);
            int cnt[16] = {0};
            for (int i = 0; i < n; i++) {
                cr_assert(a[i] >= 0 && a[i] < E);
                cnt[a[i]]++;
            }
            for (int e = 0; e < E; e++) cr_assert(cnt[e] == n / E || cnt[e] == n / E + 1, "case %d: part %d has %d", c, e, cnt[e]);
            double want = exhaustive(X, n, dim, E);
            cr_assert(fabs(obj - want) <= 1e-5 * (1 + want), "case %d rep %d (n %d, E %d): objective %.8f, optimum %.8f", c, rep, n, E, obj,
                      want);
            cr_assert(fabs(obj - nl_moe_kmeans_objective(X, n, dim, E, a)) < 1e-9);
        }
}

Test(moe, kmeans_sizes_exact_and_deterministic) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const int n = 203, dim = 8, E = 7;
    float *X = malloc((size_t)n * dim * sizeof(float));
    nl_rng r;
    nl_rng_derive(&r, 1, 2, 3);
    for (int i = 0; i < n * dim; i++) X[i] = (float)nl_rng_normal(&r);
    int a[203], b[203], cnt[7] = {0};
    cr_assert_eq(nl_moe_kmeans(&ctx, X, n, dim, E, 9, 30, 3, a, NULL), NL_OK);
    cr_assert_eq(nl_moe_kmeans(&ctx, X, n, dim, E, 9, 30, 3, b, NULL), NL_OK);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "same seed, different split");
    for (int i = 0; i < n; i++) cnt[a[i]]++;
    for (int e = 0; e < E; e++) cr_assert_eq(cnt[e], 29);
    cr_assert_eq(nl_moe_kmeans(&ctx, X, n, dim, 0, 9, 30, 3, a, NULL), NL_EINVAL);
    cr_assert_eq(nl_moe_kmeans(&ctx, X, n, dim, n + 1, 9, 30, 3, a, NULL), NL_EINVAL);
    free(X);
}

/* ---- METIS -------------------------------------------------------------------------------- */

Test(moe, metis_balanced_deterministic_and_finds_planted_groups) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const int n = 61, E = 4;
    float *W = calloc((size_t)n * n, sizeof(float));
    nl_rng r;
    nl_rng_derive(&r, 4, 4, 4);
    /* planted: neuron i belongs to group (i·7) mod 4; strong ties inside, weak noise across */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            float w = ((i * 7) % 4 == (j * 7) % 4) ? 20.0f + (float)nl_rng_below(&r, 5) : (float)nl_rng_below(&r, 2);
            W[(size_t)i * n + j] = W[(size_t)j * n + i] = w;
        }
    int a[61], b[61], cnt[4] = {0};
    cr_assert_eq(nl_moe_partition(&ctx, W, n, E, 17, a), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_moe_partition(&ctx, W, n, E, 17, b), NL_OK);
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "same seed, different partition");
    for (int i = 0; i < n; i++) cnt[a[i]]++;
    int big = 0;
    for (int e = 0; e < E; e++) {
        cr_assert(cnt[e] == 15 || cnt[e] == 16, "part %d has %d", e, cnt[e]);
        big += cnt[e] == 16;
    }
    cr_assert_eq(big, 1);
    /* each planted group (16, 15, 15, 15) maps to one part */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if ((i * 7) % 4 == (j * 7) % 4) cr_assert_eq(a[i], a[j], "neurons %d and %d of one group split", i, j);
    /* a graph that METIS leaves unbalanced is rebalanced: one heavy clique of 40 into 4 parts */
    memset(W, 0, (size_t)n * n * sizeof(float));
    for (int i = 0; i < 40; i++)
        for (int j = 0; j < 40; j++)
            if (i != j) W[(size_t)i * n + j] = 5;
    memset(cnt, 0, sizeof cnt);
    cr_assert_eq(nl_moe_partition(&ctx, W, n, E, 1, a), NL_OK);
    for (int i = 0; i < n; i++) cnt[a[i]]++;
    for (int e = 0; e < E; e++) cr_assert(cnt[e] == 15 || cnt[e] == 16);
    /* no edges at all, and E = 1 */
    memset(W, 0, (size_t)n * n * sizeof(float));
    cr_assert_eq(nl_moe_partition(&ctx, W, n, 5, 1, a), NL_OK);
    memset(cnt, 0, sizeof cnt);
    int c5[5] = {0};
    for (int i = 0; i < n; i++) c5[a[i]]++;
    for (int e = 0; e < 5; e++) cr_assert(c5[e] == 12 || c5[e] == 13);
    cr_assert_eq(nl_moe_partition(&ctx, W, n, 1, 1, a), NL_OK);
    for (int i = 0; i < n; i++) cr_assert_eq(a[i], 0);
    cr_assert_eq(nl_moe_partition(&ctx, W, n, 62, 1, a), NL_EINVAL);
    free(W);
}

/* ---- the kernel against brute force -------------------------------------------------------- */

typedef struct {
    nl_layer w;
    nl_ffn_call call;
    nl_hooks hooks;
    float *pre, *up;
} call_fx;

static void make_call(fx *x, int layer, int T, const int32_t *toks, call_fx *c) {
    const nl_config *cfg = nl_model_config(x->m);
    cr_assert_eq(nl_model_layer(&x->ctx, x->m, layer, &c->w), NL_OK);
    nl_hooks_init(&c->hooks);
    c->pre = malloc((size_t)T * cfg->d_ff * sizeof(float));
    c->up = malloc((size_t)T * cfg->d_ff * sizeof(float));
    c->call = (nl_ffn_call){layer, T, cfg->d_model, cfg->d_ff, 0, toks, cfg, &c->w, c->pre, c->up, &c->hooks};
}

/* a (T, F) dense activations in original neuron order, in double via plain loops. */
static void dense_acts(const nl_config *cfg, const nl_layer *w, const float *X, int T, double *a) {
    const int D = cfg->d_model, F = cfg->d_ff;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < F; i++) {
            double g = 0, u = 0;
            for (int d = 0; d < D; d++) {
                if (cfg->ffn_gated) g += (double)X[(size_t)t * D + d] * nl_moe_mat_at(&w->w_gate, i, d);
                u += (double)X[(size_t)t * D + d] * nl_moe_mat_at(&w->w_up, i, d);
            }
            if (cfg->ffn_gated) a[(size_t)t * F + i] = nl_act_scalar((float)g, cfg->act) * u;
            else a[(size_t)t * F + i] = nl_act_scalar((float)(u + (w->b_up ? w->b_up[i] : 0)), cfg->act);
        }
}

/* FFN_ACT hooks on an MoE layer: an observer's copy of a', and an intervener zeroing every
 * third neuron (a hook's user is this struct). */
typedef struct {
    float *seen; /* (T, F) */
    int zero_every;
} act_hook;

static nl_status on_act_observe(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    act_hook *h = user;
    memcpy(h->seen, x, (size_t)info->T * info->width * sizeof(float));
    return NL_OK;
}

static nl_status on_act_zero(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    const act_hook *h = user;
    for (int t = 0; t < info->T; t++)
        for (int i = 0; i < info->width; i += h->zero_every) x[(size_t)t * info->width + i] = 0;
    return NL_OK;
}

/* The whole check of one (model, folder) pair for every router × fill; counts multiply-adds. */
static void check_kernel(fx *x, const nl_moe *moe, int layer, int K) {
    const nl_config *cfg = nl_model_config(x->m);
    const int D = cfg->d_model, F = cfg->d_ff, T = 9;
    const nl_moe_info *in = nl_moe_get_info(moe);
    const int E = in->E, N = in->n_shared;
    const nl_moe_layer *map = nl_moe_get_layer(moe, layer);
    cr_assert(map);
    float *X = malloc((size_t)T * D * sizeof(float)), *out = malloc((size_t)T * D * sizeof(float));
    float *out1 = malloc((size_t)T * D * sizeof(float)), *outg = malloc((size_t)T * D * sizeof(float));
    double *a = malloc((size_t)T * F * sizeof(double)), *bf = malloc((size_t)D * sizeof(double)), *ex = malloc((size_t)D * sizeof(double));
    int32_t toks[9] = {0};
    nl_rng r;
    nl_rng_derive(&r, 21, (uint64_t)layer, (uint64_t)K);
    for (int i = 0; i < T * D; i++) X[i] = (float)nl_rng_normal(&r);
    call_fx c;
    make_call(x, layer, T, toks, &c);
    dense_acts(cfg, &c.w, X, T, a);
    int *pos_of = malloc((size_t)F * sizeof(int)), *expert_of = malloc((size_t)F * sizeof(int));
    for (int p = 0; p < F; p++) pos_of[map->perm[p]] = p;
    for (int i = 0; i < F; i++) {
        expert_of[i] = -1;
        for (int e = 0; e < E; e++)
            if (pos_of[i] >= map->offset[e] && pos_of[i] < map->offset[e + 1]) expert_of[i] = e;
    }
    cr_assert(map->mlp_w1 && map->mlp_w2, "the folder has an mlp router");
    for (int router = 0; router < 3; router++) /* sim, oracle, mlp (nl_moe_router values) */
        for (int fill = 0; fill < 2; fill++) {
            nl_moe_ffn_opts o = {K, (nl_moe_fill)fill, (nl_moe_router)router, 1};
            nl_moe_ffn *k;
            cr_assert_eq(nl_moe_ffn_create(&x->ctx, moe, x->m, &o, T, &k), NL_OK, "%s", x->ctx.msg);
            cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X, out), NL_OK);
            int Tsel;
            const int32_t *sel = nl_moe_ffn_last_selection(k, layer, &Tsel);
            cr_assert(sel && Tsel == T);
            int32_t *selc = malloc((size_t)T * K * sizeof(int32_t));
            memcpy(selc, sel, (size_t)T * K * sizeof(int32_t));
            nl_moe_ffn_stats st = nl_moe_ffn_get_stats(k);
            double recall = 0, flops_counted = 0;
            for (int t = 0; t < T; t++) {
                const double *at = a + (size_t)t * F;
                /* oracle scores and sim scores, recomputed */
                double s[512], z[512];
                for (int e = 0; e < E; e++) s[e] = 0, z[e] = 0;
                for (int i = 0; i < F; i++) {
                    if (expert_of[i] < 0) continue;
                    double wn = 0;
                    for (int d = 0; d < D; d++) wn += (double)nl_moe_mat_at(&c.w.w_down, d, i) * nl_moe_mat_at(&c.w.w_down, d, i);
                    double v = (at[i] - (fill ? map->mu[i] : 0)) * sqrt(wn);
                    s[expert_of[i]] += v * v;
                }
                if (router == NL_MOE_ROUTER_MLP) { /* W2·tanh(W1·x̂) */
                    double nn = 0, hh[512];
                    for (int d = 0; d < D; d++) nn += (double)X[(size_t)t * D + d] * X[(size_t)t * D + d];
                    for (int e = 0; e < E; e++) {
                        double acc = 0;
                        for (int d = 0; d < D; d++) acc += (double)X[(size_t)t * D + d] / sqrt(nn) * map->mlp_w1[(size_t)e * D + d];
                        hh[e] = tanh(acc);
                    }
                    for (int e = 0; e < E; e++)
                        for (int j = 0; j < E; j++) z[e] += (double)map->mlp_w2[(size_t)e * E + j] * hh[j];
                } else {
                    for (int e = 0; e < E; e++)
                        for (int d = 0; d < D; d++) z[e] += (double)X[(size_t)t * D + d] * map->router_sim[(size_t)e * D + d];
                }
                const double *score = router == NL_MOE_ROUTER_ORACLE ? s : z;
                int chosen[512] = {0}, best[512] = {0};
                for (int kk = 0; kk < K; kk++) {
                    int b = -1, o2 = -1;
                    for (int e = 0; e < E; e++) {
                        if (!chosen[e] && (b < 0 || score[e] > score[b])) b = e;
                        if (!best[e] && (o2 < 0 || s[e] > s[o2])) o2 = e;
                    }
                    chosen[b] = 1, best[o2] = 1;
                }
                double num = 0, den = 0;
                for (int e = 0; e < E; e++) num += chosen[e] ? s[e] : 0, den += best[e] ? s[e] : 0;
                recall += den > 0 ? num / den : 1;
                for (int kk = 0; kk < K; kk++) {
                    cr_assert(chosen[selc[(size_t)t * K + kk]], "router %d token %d: expert %d selected by the kernel, not by the reference",
                              router, t, selc[(size_t)t * K + kk]);
                    if (kk) cr_assert_lt(selc[(size_t)t * K + kk - 1], selc[(size_t)t * K + kk]);
                }
                /* brute force: every neuron computed, unselected ones replaced by r_i; and the
                 * explicit static vectors Σ_{e∉S} m_e; and the multiply-adds of a plain loop */
                double madds = 0;
                for (int d = 0; d < D; d++) bf[d] = ex[d] = c.w.b_down ? c.w.b_down[d] : 0;
                for (int i = 0; i < F; i++) {
                    const int e = expert_of[i];
                    const int on = e < 0 || chosen[e];
                    const double v = on ? at[i] : (fill ? map->mu[i] : 0);
                    for (int d = 0; d < D; d++) bf[d] += v * nl_moe_mat_at(&c.w.w_down, d, i);
                    if (on)
                        for (int d = 0; d < D; d++) ex[d] += at[i] * nl_moe_mat_at(&c.w.w_down, d, i);
                    if (on) madds += (cfg->ffn_gated ? 3.0 : 2.0) * D;
                }
                if (fill)
                    for (int e = 0; e < E; e++)
                        if (!chosen[e])
                            for (int d = 0; d < D; d++) ex[d] += map->stat[(size_t)e * D + d];
                if (router != NL_MOE_ROUTER_ORACLE) madds += (double)E * D;  /* sim router dot products, or W1·x̂ */
                if (router == NL_MOE_ROUTER_MLP) madds += (double)E * E;     /* W2·h */
                flops_counted += 2 * madds + (fill && router != NL_MOE_ROUTER_ORACLE ? (double)D * K : 0); /* + the K vector subtractions */
                double scale = 0;
                for (int d = 0; d < D; d++) scale = fmax(scale, fabs(bf[d]));
                for (int d = 0; d < D; d++) {
                    const double got = out[(size_t)t * D + d];
                    cr_assert(fabs(got - bf[d]) <= 1e-5 * (1 + scale), "router %d fill %d token %d dim %d: kernel %.7g, brute force %.7g",
                              router, fill, t, d, got, bf[d]);
                    cr_assert(fabs(got - ex[d]) <= 1e-5 * (1 + scale), "static-vector path %.7g, explicit %.7g", got, ex[d]);
                }
            }
            cr_assert(fabs(st.recall_sum / st.recall_n - recall / T) < 1e-5, "recall: kernel %.7f, recomputed %.7f",
                      st.recall_sum / st.recall_n, recall / T);
            cr_assert_eq(st.recall_n, T);
            if (router == NL_MOE_ROUTER_ORACLE) cr_assert(fabs(st.recall_sum / st.recall_n - 1) < 1e-6, "the oracle's recall is 1");
            /* FLOPs: the kernel's count equals the counted multiply-adds (sim, mlp), the dense cost (oracle);
             * the analytic formula equals both when experts have equal sizes */
            const double want = router == NL_MOE_ROUTER_ORACLE ? (double)T * nl_moe_flops_dense(cfg) : flops_counted;
            cr_assert(fabs(st.flops - want) < 1e-6 * want, "router %d: kernel counted %.0f FLOPs, the loop %.0f", router, st.flops, want);
            if ((F - N) % E == 0)
                cr_assert(fabs(nl_moe_flops_layer(cfg, E, N, K, (nl_moe_router)router, (nl_moe_fill)fill) * T - want) < 1e-6 * want,
                          "analytic %.0f vs counted %.0f", nl_moe_flops_layer(cfg, E, N, K, (nl_moe_router)router, (nl_moe_fill)fill) * T, want);
            /* batch 1 (gathered blocks) and grouped-by-expert give the same rows */
            for (int t = 0; t < T; t++) {
                c.call.T = 1;
                c.call.tokens = toks;
                cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X + (size_t)t * D, out1 + (size_t)t * D), NL_OK);
                nl_moe_ffn_force_grouped(k, 1);
                cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X + (size_t)t * D, outg + (size_t)t * D), NL_OK);
                nl_moe_ffn_force_grouped(k, 0);
            }
            c.call.T = T;
            nl_check_close(out1, out, (size_t)T * D, 1e-5);
            nl_check_close(outg, out, (size_t)T * D, 1e-5);
            /* FFN_ACT: an observer sees a' (computed for the shared and selected experts' neurons,
             * r_i for the others) and the output is unchanged; an intervener zeroing every third
             * neuron gives b_down + W_out·a'' with those neurons at 0 */
            {
                act_hook h = {malloc((size_t)T * F * sizeof(float)), 3};
                float *outh = malloc((size_t)T * D * sizeof(float));
                nl_hook_id id1 = 0, id2 = 0;
                cr_assert_eq(nl_hooks_add_id(&c.hooks, NL_HOOK_FFN_ACT, layer, NL_HOOK_OBSERVE, on_act_observe, &h, &id1), NL_OK);
                cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X, outh), NL_OK, "%s", x->ctx.msg);
                nl_check_close(outh, out, (size_t)T * D, 1e-6);
                for (int t = 0; t < T; t++)
                    for (int i = 0; i < F; i++) {
                        int on = expert_of[i] < 0;
                        for (int kk = 0; kk < K; kk++) on |= selc[(size_t)t * K + kk] == expert_of[i];
                        const double v = on ? a[(size_t)t * F + i] : (fill ? map->mu[i] : 0);
                        cr_assert(fabs(h.seen[(size_t)t * F + i] - v) <= 1e-5 * (1 + fabs(v)), "a' token %d neuron %d: %.7g, want %.7g",
                                  t, i, h.seen[(size_t)t * F + i], v);
                    }
                cr_assert_eq(nl_hooks_add_id(&c.hooks, NL_HOOK_FFN_ACT, layer, NL_HOOK_INTERVENE, on_act_zero, &h, &id2), NL_OK);
                for (int pass = 0; pass < 2; pass++) { /* as called (grouped for T > 1), then batch 1 */
                    if (pass == 0) cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X, outh), NL_OK, "%s", x->ctx.msg);
                    else {
                        c.call.T = 1;
                        for (int t = 0; t < T; t++) cr_assert_eq(nl_moe_ffn_fn(k, &x->ctx, &c.call, X + (size_t)t * D, outh + (size_t)t * D), NL_OK);
                        c.call.T = T;
                    }
                    for (int t = 0; t < T; t++) {
                        double scale = 0;
                        for (int d = 0; d < D; d++) bf[d] = c.w.b_down ? c.w.b_down[d] : 0;
                        for (int i = 0; i < F; i++) {
                            if (i % 3 == 0) continue;
                            int on = expert_of[i] < 0;
                            for (int kk = 0; kk < K; kk++) on |= selc[(size_t)t * K + kk] == expert_of[i];
                            const double v = on ? a[(size_t)t * F + i] : (fill ? map->mu[i] : 0);
                            for (int d = 0; d < D; d++) bf[d] += v * nl_moe_mat_at(&c.w.w_down, d, i);
                        }
                        for (int d = 0; d < D; d++) scale = fmax(scale, fabs(bf[d]));
                        for (int d = 0; d < D; d++)
                            cr_assert(fabs(outh[(size_t)t * D + d] - bf[d]) <= 1e-5 * (1 + scale),
                                      "masked MoE layer, pass %d token %d dim %d: %.7g, want %.7g", pass, t, d, outh[(size_t)t * D + d], bf[d]);
                    }
                }
                nl_hooks_remove(&c.hooks, id1);
                nl_hooks_remove(&c.hooks, id2);
                free(h.seen), free(outh);
            }
            free(selc);
            nl_moe_ffn_destroy(k);
        }
    free(X), free(out), free(out1), free(outg), free(a), free(bf), free(ex), free(pos_of), free(expert_of), free(c.pre), free(c.up);
}

Test(moe, kernel_equals_brute_force_gated) {
    fx x;
    fx_open(&x, FIX "/llama", NULL, 6, 40, 64, 64);
    nl_moe *moe = moefy(&x, 8, 0, NL_MOE_SPLIT_PARAM); /* 128 neurons: experts of 16 */
    for (int K = 1; K <= 8; K += 3) check_kernel(&x, moe, 1, K);
    nl_moe_close(moe);
    moe = moefy(&x, 5, 8, NL_MOE_SPLIT_COACT); /* shared 8, 120 routed: 24 each */
    check_kernel(&x, moe, 0, 2);
    nl_moe_close(moe);
    moe = moefy(&x, 7, 3, NL_MOE_SPLIT_PARAM); /* unequal sizes: 125 = 5·18 + 2·17 */
    check_kernel(&x, moe, 0, 3);
    nl_moe_close(moe);
    fx_close(&x);
}

Test(moe, kernel_equals_brute_force_plain_ffn) {
    fx x;
    fx_open(&x, FIX "/gpt2", NULL, 6, 30, 32, 32); /* Conv1D storage, biases, gelu_new */
    nl_moe *moe = moefy(&x, 16, 0, NL_MOE_SPLIT_PARAM);
    check_kernel(&x, moe, 1, 4);
    nl_moe_close(moe);
    moe = moefy(&x, 6, 16, NL_MOE_SPLIT_COACT);
    check_kernel(&x, moe, 0, 3);
    nl_moe_close(moe);
    fx_close(&x);
}

/* ---- K = E against the dense model -------------------------------------------------------- */

static void check_k_equals_e(const char *model, const char *data, int E, int N, int batch, int ctxlen) {
    fx x;
    fx_open(&x, model, data, 6, 48, batch, ctxlen);
    const double dense = ppl_of(&x);
    nl_moe *moe = moefy(&x, E, N, N ? NL_MOE_SPLIT_COACT : NL_MOE_SPLIT_PARAM);
    for (int q = 0; q < 4; q++) {
        const int fill = q % 2;
        const nl_moe_router router = q < 2 ? NL_MOE_ROUTER_SIM : NL_MOE_ROUTER_MLP;
        nl_moe_ffn_opts o = {E, (nl_moe_fill)fill, router, 0};
        nl_moe_ffn *k;
        cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &o, nl_forward_max_T(x.f), &k), NL_OK, "%s", x.ctx.msg);
        cr_assert_eq(nl_moe_ffn_attach(k, &x.ctx, x.f), NL_OK);
        const double got = ppl_of(&x);
        nl_moe_ffn_detach(k, x.f);
        nl_moe_ffn_destroy(k);
        cr_assert(fabs(got - dense) <= 1e-5 * dense, "%s fill %d router %s: K = E perplexity %.7f, dense %.7f", model, fill,
                  nl_moe_router_name(router), got, dense);
    }
    /* K < E changes something */
    nl_moe_ffn_opts o = {1, NL_MOE_FILL_ZERO, NL_MOE_ROUTER_SIM, 0};
    nl_moe_ffn *k;
    cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &o, nl_forward_max_T(x.f), &k), NL_OK);
    cr_assert_eq(nl_moe_ffn_attach(k, &x.ctx, x.f), NL_OK);
    cr_assert(fabs(ppl_of(&x) - dense) > 1e-3 * dense, "%s: one expert of %d left the perplexity unchanged", model, E);
    nl_moe_ffn_detach(k, x.f);
    nl_moe_ffn_destroy(k);
    cr_assert(fabs(ppl_of(&x) - dense) <= 1e-12 * dense, "detaching restores the dense model");
    nl_moe_close(moe);
    fx_close(&x);
}

Test(moe, k_equals_e_reproduces_dense_fixtures) {
    check_k_equals_e(FIX "/llama", NULL, 8, 0, 16, 32);
    check_k_equals_e(FIX "/llama_relu", NULL, 10, 4, 64, 64);
    check_k_equals_e(FIX "/gpt2", NULL, 16, 0, 7, 32);
}

Test(moe, k_equals_e_reproduces_dense_stories260k) {
    nl_need_shared();
    check_k_equals_e(STORIES "/stories260K.bin", STORIES "/tokens.jsonl", 4, 0, 512, 512);
}

Test(moe, k_equals_e_reproduces_dense_zoo_silu) {
    if (!nl_path_exists(ZOO_SILU "/model.safetensors")) cr_skip_test("the zoo SiLU model (" ZOO_SILU ") is absent");
    check_k_equals_e(ZOO_SILU, NULL, 16, 0, 128, 128);
}

/* ---- stories260K: masking equivalence and a pinned result ---------------------------------- */

Test(moe, stories260k_one_neuron_experts_equal_masking) {
    nl_need_shared();
    fx x;
    fx_open(&x, STORIES "/stories260K.bin", STORIES "/tokens.jsonl", 0, 0, 512, 512);
    nl_moefy_opts o;
    nl_moefy_opts_init(&o);
    o.E = 172, o.kmeans_iters = 1, o.kmeans_restarts = 1;
    nl_moe *moe;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_OK, "%s", x.ctx.msg);
    json_t *e = json_load_file(STORIES "/expected.json", 0, NULL);
    json_t *norm = json_object_get(json_object_get(e, "masked_ppl"), "norm");
    const char *ps[] = {"0.6", "0.8"};
    for (int i = 0; i < 2; i++) {
        /* the oracle keeps the K neurons of largest (|a_i|·‖W_out[:, i]‖)²: masking the rest */
        const int K = 172 - (int)floor(atof(ps[i]) * 172);
        nl_moe_ffn_opts fo = {K, NL_MOE_FILL_ZERO, NL_MOE_ROUTER_ORACLE, 0};
        nl_moe_ffn *k;
        cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &fo, 512, &k), NL_OK);
        cr_assert_eq(nl_moe_ffn_attach(k, &x.ctx, x.f), NL_OK);
        const double got = ppl_of(&x), want = json_real_value(json_object_get(norm, ps[i]));
        nl_moe_ffn_detach(k, x.f);
        nl_moe_ffn_destroy(k);
        cr_assert(fabs(got - want) < 1e-3 * want, "masking %s: oracle with one-neuron experts %.4f, expected %.4f", ps[i], got, want);
    }
    json_decref(e);
    nl_moe_close(moe);
    fx_close(&x);
}

Test(moe, stories260k_pinned_moefication) {
    nl_need_shared();
    fx x;
    fx_open(&x, STORIES "/stories260K.bin", STORIES "/tokens.jsonl", 0, 0, 512, 512);
    nl_moefy_opts o;
    nl_moefy_opts_init(&o);
    o.E = 4;
    nl_moe *moe;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_OK, "%s", x.ctx.msg);
    /* `neuronlab moefy stories260K.bin tokens.jsonl --experts 4` then `ppl --k 2 --router sim`
     * when this was written: fill zero 4417.8971, fill mean 3272.9586 (dense: 14.4886). A tiny
     * model with 4 coarse experts loses most of its FFN; mean filling recovers part of it. */
    const double want[2] = {4417.8971, 3272.9586};
    for (int fill = 0; fill < 2; fill++) {
        nl_moe_ffn_opts fo = {2, (nl_moe_fill)fill, NL_MOE_ROUTER_SIM, 0};
        nl_moe_ffn *k;
        cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &fo, 512, &k), NL_OK);
        cr_assert_eq(nl_moe_ffn_attach(k, &x.ctx, x.f), NL_OK);
        const double got = ppl_of(&x);
        nl_moe_ffn_detach(k, x.f);
        nl_moe_ffn_destroy(k);
        cr_assert(fabs(got - want[fill]) < 1e-3 * want[fill], "fill %d: %.4f, pinned %.4f", fill, got, want[fill]);
    }
    nl_moe_close(moe);
    fx_close(&x);
}

/* ---- folders ------------------------------------------------------------------------------ */

static void tmpdir_path(char *buf, size_t n) {
    snprintf(buf, n, "/tmp/nl_moe_dir_%d_%ld", (int)getpid(), (long)random());
}

static void rm_dir(const char *d) {
    char p[512];
    snprintf(p, sizeof p, "%s/manifest.json", d);
    unlink(p);
    snprintf(p, sizeof p, "%s/experts.safetensors", d);
    unlink(p);
    rmdir(d);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

Test(moe, folder_round_trip_and_bad_folders) {
    fx x;
    fx_open(&x, FIX "/llama", NULL, 4, 40, 64, 64);
    nl_moe *moe = moefy(&x, 4, 8, NL_MOE_SPLIT_COACT);
    char dir[256], p[512];
    tmpdir_path(dir, sizeof dir);
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir, 0), NL_OK, "%s", x.ctx.msg);
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir, 0), NL_EINVAL, "an existing folder is refused without force");
    cr_assert(strstr(x.ctx.msg, dir));
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir, 1), NL_OK, "%s", x.ctx.msg);
    nl_moe *back;
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_OK, "%s", x.ctx.msg);
    const nl_config *c = nl_model_config(x.m);
    for (int l = 0; l < c->n_layers; l++) {
        const nl_moe_layer *a = nl_moe_get_layer(moe, l), *b = nl_moe_get_layer(back, l);
        cr_assert_eq(memcmp(a->perm, b->perm, (size_t)c->d_ff * 4), 0);
        cr_assert_eq(memcmp(a->offset, b->offset, 5 * 4), 0);
        cr_assert_eq(memcmp(a->mu, b->mu, (size_t)c->d_ff * 4), 0);
        cr_assert_eq(memcmp(a->stat, b->stat, (size_t)4 * c->d_model * 4), 0);
        cr_assert_eq(memcmp(a->router_sim, b->router_sim, (size_t)4 * c->d_model * 4), 0);
        cr_assert_eq(a->offset[0], 8);
    }
    cr_assert_eq(nl_moe_get_info(back)->n_shared, 8);
    cr_assert_eq(nl_moe_get_info(back)->split, NL_MOE_SPLIT_COACT);
    nl_moe_close(back);

    /* another model with the same shapes: the FFN checksum tells */
    nl_model *other;
    cr_assert_eq(nl_model_open(&x.ctx, FIX "/llama_bf16", &other), NL_OK, "%s", x.ctx.msg);
    nl_status st = nl_moe_open(&x.ctx, dir, other, &back);
    cr_assert_neq(st, NL_OK);
    cr_assert(strstr(x.ctx.msg, "manifest.json") && strstr(x.ctx.msg, "another model"), "%s", x.ctx.msg);
    nl_model_close(other);
    nl_model *gpt2;
    cr_assert_eq(nl_model_open(&x.ctx, FIX "/gpt2", &gpt2), NL_OK);
    cr_assert_neq(nl_moe_open(&x.ctx, dir, gpt2, &back), NL_OK);
    cr_assert(strstr(x.ctx.msg, "another model"), "%s", x.ctx.msg);
    nl_model_close(gpt2);

    /* K outside [1, E] */
    nl_moe_ffn *k;
    nl_moe_ffn_opts o = {5, NL_MOE_FILL_ZERO, NL_MOE_ROUTER_SIM, 0};
    cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &o, 8, &k), NL_EINVAL);
    o.K = 0;
    cr_assert_eq(nl_moe_ffn_create(&x.ctx, moe, x.m, &o, 8, &k), NL_EINVAL);

    /* corrupt manifest, wrong format, missing tensors file, a broken permutation */
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    size_t n = 0;
    char *good = nl_read_all(p, &n);
    cr_assert(good);
    good = realloc(good, n + 1);
    good[n] = 0;
    write_text(p, "{\"format\": \"neuronlab.moe\", \"version\": 1,");
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "manifest.json"), "%s", x.ctx.msg);
    char *bad = strdup(good);
    memcpy(strstr(bad, "neuronlab.moe"), "neuronlab.xyz", 13);
    write_text(p, bad);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "manifest.json"), "%s", x.ctx.msg);
    free(bad);
    bad = strdup(good);
    char *ck = strstr(bad, "fnv1a64:") + 8;
    *ck = *ck == '0' ? '1' : '0';
    write_text(p, bad);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, "another model"), "%s", x.ctx.msg);
    free(bad);
    bad = strdup(good);
    memcpy(strstr(bad, "\"experts\": 4"), "\"experts\": 0", 12);
    write_text(p, bad);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    free(bad);
    write_text(p, good);
    snprintf(p, sizeof p, "%s/experts.safetensors", dir);
    size_t tn = 0;
    unsigned char *tb = nl_read_all(p, &tn);
    cr_assert(tb && tn > 8);
    unlink(p);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EIO);
    cr_assert(strstr(x.ctx.msg, "experts.safetensors"), "%s", x.ctx.msg);
    /* perm of layer 0 duplicated: find the F32 bytes of 1.0 then 2.0 … simply set every byte of the
     * data section's first perm entry to the second's */
    FILE *f = fopen(p, "wb");
    uint64_t hl;
    memcpy(&hl, tb, 8);
    const char *hdr = (const char *)tb + 8;
    const char *e0 = strstr(hdr, "\"layers.0.perm\"");
    cr_assert(e0 && e0 < hdr + hl);
    long b0 = atol(strstr(e0, "data_offsets") + 15);
    unsigned char *d0 = tb + 8 + hl + b0;
    memcpy(d0, d0 + 4, 4);
    fwrite(tb, 1, tn, f);
    fclose(f);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "experts.safetensors") && strstr(x.ctx.msg, "permutation"), "%s", x.ctx.msg);
    f = fopen(p, "wb");
    fwrite(tb, 1, tn / 2, f);
    fclose(f);
    cr_assert_neq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_OK);
    cr_assert(strstr(x.ctx.msg, "experts.safetensors"), "%s", x.ctx.msg);
    free(tb);
    free(good);
    rm_dir(dir);
    snprintf(p, sizeof p, "/tmp/nl_moe_absent_%d", (int)getpid());
    cr_assert_eq(nl_moe_open(&x.ctx, p, x.m, &back), NL_EIO);
    cr_assert(strstr(x.ctx.msg, "manifest.json"), "%s", x.ctx.msg);
    nl_moe_close(moe);
    fx_close(&x);
}

Test(moe, moefy_refuses_bad_inputs) {
    fx x;
    fx_open(&x, FIX "/llama", NULL, 2, 20, 64, 64); /* 40 tokens */
    nl_moefy_opts o;
    nl_moefy_opts_init(&o);
    nl_moe *moe = NULL;
    o.E = 129;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, "--experts 129"), "%s", x.ctx.msg);
    o.E = 0;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    o.E = 11; /* 44 > 40 tokens */
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, x.data) && strstr(x.ctx.msg, "4·E"), "%s", x.ctx.msg);
    o.E = 4, o.n_shared = 128;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    o.n_shared = 125; /* 3 routed neurons, 4 experts */
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    o.n_shared = 0;
    int layers[1] = {2};
    o.layers = layers, o.n_layers = 1;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, "out of range"), "%s", x.ctx.msg);
    layers[0] = 1;
    cr_assert_eq(nl_moefy_run(&x.ctx, &o, x.f, x.ds, &moe), NL_OK, "%s", x.ctx.msg);
    cr_assert_null(nl_moe_get_layer(moe, 0));
    cr_assert_not_null(nl_moe_get_layer(moe, 1));
    cr_assert(moe == NULL || nl_moe_n_layers(moe) == 1);
    nl_moe_close(moe);
    fx_close(&x);
}

/* Calibration statistics: μ is the mean activation over every token counted once, whatever the
 * sliding windows and batch. */
typedef struct {
    double sum[128];
    long n;
} act_sum;

static nl_status sum_layer0(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    act_sum *s = user;
    if (info->layer != 0) return NL_OK;
    for (int t = 0; t < info->T; t++)
        for (int i = 0; i < 128; i++) s->sum[i] += x[(size_t)t * 128 + i];
    s->n += info->T;
    return NL_OK;
}

Test(moe, calibration_mean_counts_each_token_once) {
    fx a, b;
    fx_open(&a, FIX "/llama", NULL, 3, 50, 64, 64);
    fx_open(&b, FIX "/llama", a.data, 3, 50, 7, 20); /* windows of 20 every 10 tokens, batches of 7 */
    nl_moe *ma = moefy(&a, 4, 0, NL_MOE_SPLIT_PARAM), *mb = moefy(&b, 4, 0, NL_MOE_SPLIT_PARAM);
    cr_assert_eq(nl_moe_get_info(ma)->calib_tokens, 150);
    cr_assert_eq(nl_moe_get_info(mb)->calib_tokens, 150);
    /* a's context covers each document: μ equals the mean over one dense pass per document */
    act_sum s = {{0}, 0};
    nl_hook_id id;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(a.f), NL_HOOK_FFN_ACT, 0, NL_HOOK_OBSERVE, sum_layer0, &s, &id), NL_OK);
    for (int d = 0; d < a.ds->n_docs; d++) {
        nl_forward_reset(a.f);
        cr_assert_eq(nl_forward_run(a.f, &a.ctx, a.ds->docs[d].tokens, a.ds->docs[d].n_tokens, NULL), NL_OK);
    }
    nl_hooks_remove(nl_forward_hooks(a.f), id);
    cr_assert_eq(s.n, 150);
    const nl_moe_layer *la = nl_moe_get_layer(ma, 0);
    for (int i = 0; i < 128; i++) cr_assert(fabs(la->mu[i] - s.sum[i] / 150) < 1e-5, "mu[%d] %g vs %g", i, la->mu[i], s.sum[i] / 150);
    nl_moe_close(ma), nl_moe_close(mb);
    b.data[0] = 0; /* the file is a's: removed once */
    fx_close(&b);
    fx_close(&a);
}

/* The MLP router in folders: round trip of its weights and training report; a sim-only folder
 * (and one written before the MLP router, without "routers") opens with has_mlp 0 and refuses
 * --router mlp; a manifest listing mlp over tensors without it, a non-finite weight and a router
 * field that contradicts the list are refused naming the file. */
Test(moe, folder_mlp_router_round_trip_and_refusals) {
    fx x;
    fx_open(&x, FIX "/llama", NULL, 4, 40, 64, 64);
    nl_moe *moe = moefy(&x, 4, 0, NL_MOE_SPLIT_PARAM);
    const nl_config *c = nl_model_config(x.m);
    const int D = c->d_model, E = 4;
    cr_assert(nl_moe_get_info(moe)->has_mlp && nl_moe_get_info(moe)->router == NL_MOE_ROUTER_MLP);
    char dir[256], dir2[256], p[512], p2[512];
    tmpdir_path(dir, sizeof dir);
    tmpdir_path(dir2, sizeof dir2);
    strcat(dir2, "_sim");
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir, 0), NL_OK, "%s", x.ctx.msg);
    nl_moe *back;
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_OK, "%s", x.ctx.msg);
    const nl_moe_info *ib = nl_moe_get_info(back);
    cr_assert(ib->has_mlp && ib->router == NL_MOE_ROUTER_MLP && ib->mlp.epochs == 5 && ib->mlp.batch == 64 && ib->mlp_fill == NL_MOE_FILL_MEAN);
    for (int l = 0; l < c->n_layers; l++) {
        const nl_moe_layer *a = nl_moe_get_layer(moe, l), *b = nl_moe_get_layer(back, l);
        cr_assert_eq(memcmp(a->mlp_w1, b->mlp_w1, (size_t)E * D * 4), 0);
        cr_assert_eq(memcmp(a->mlp_w2, b->mlp_w2, (size_t)E * E * 4), 0);
        cr_assert(a->mlp.n_held > 0 && b->mlp.n_held == a->mlp.n_held && fabs(b->mlp.recall_mlp25 - a->mlp.recall_mlp25) < 1e-12);
        cr_assert(memcmp(a->mlp_w1, a->router_sim, (size_t)E * D * 4) != 0, "training moved W1 away from the centroids");
    }
    nl_moe_close(back);
    /* a sim-only folder */
    nl_moe_info *in = (nl_moe_info *)nl_moe_get_info(moe);
    in->has_mlp = 0, in->router = NL_MOE_ROUTER_SIM;
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir2, 0), NL_OK, "%s", x.ctx.msg);
    in->has_mlp = 1, in->router = NL_MOE_ROUTER_MLP;
    cr_assert_eq(nl_moe_open(&x.ctx, dir2, x.m, &back), NL_OK, "%s", x.ctx.msg);
    cr_assert(!nl_moe_get_info(back)->has_mlp && !nl_moe_get_layer(back, 0)->mlp_w1);
    nl_moe_ffn *k;
    nl_moe_ffn_opts o = {2, NL_MOE_FILL_ZERO, NL_MOE_ROUTER_MLP, 0};
    cr_assert_eq(nl_moe_ffn_create(&x.ctx, back, x.m, &o, 8, &k), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, "no mlp router"), "%s", x.ctx.msg);
    o.router = NL_MOE_ROUTER_SIM;
    cr_assert_eq(nl_moe_ffn_create(&x.ctx, back, x.m, &o, 8, &k), NL_OK, "%s", x.ctx.msg);
    nl_moe_ffn_destroy(k);
    nl_moe_close(back);
    /* written before the MLP router: no "routers" key */
    snprintf(p, sizeof p, "%s/manifest.json", dir2);
    size_t n = 0;
    char *txt = nl_read_all(p, &n);
    txt = realloc(txt, n + 1);
    txt[n] = 0;
    char *r0 = strstr(txt, "\"routers\"");
    cr_assert(r0);
    char *r1 = strchr(r0, ']') + 2; /* "],\n" */
    memmove(r0, r1, strlen(r1) + 1);
    write_text(p, txt);
    cr_assert(!strstr(txt, "routers"));
    cr_assert_eq(nl_moe_open(&x.ctx, dir2, x.m, &back), NL_OK, "%s", x.ctx.msg);
    cr_assert(!nl_moe_get_info(back)->has_mlp);
    nl_moe_close(back);
    free(txt);
    /* the mlp manifest over sim-only tensors */
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    snprintf(p2, sizeof p2, "%s/manifest.json", dir2);
    txt = nl_read_all(p, &n);
    txt = realloc(txt, n + 1);
    txt[n] = 0;
    write_text(p2, txt);
    cr_assert_eq(nl_moe_open(&x.ctx, dir2, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "experts.safetensors") && strstr(x.ctx.msg, "router.mlp.w1"), "%s", x.ctx.msg);
    /* "router": "sim" while listing mlp */
    char *bad = strdup(txt);
    memcpy(strstr(bad, "\"router\": \"mlp\""), "\"router\": \"sim\"", 15);
    write_text(p, bad);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "manifest.json") && strstr(x.ctx.msg, "router"), "%s", x.ctx.msg);
    free(bad);
    write_text(p, txt);
    /* a non-finite W2 weight */
    nl_moe_get_layer(moe, 1)->mlp_w2[3] = NAN;
    cr_assert_eq(nl_moe_save(&x.ctx, moe, dir, 1), NL_OK, "%s", x.ctx.msg);
    cr_assert_eq(nl_moe_open(&x.ctx, dir, x.m, &back), NL_EFORMAT);
    cr_assert(strstr(x.ctx.msg, "experts.safetensors") && strstr(x.ctx.msg, "layers.1.router.mlp.w2") && strstr(x.ctx.msg, "non-finite"),
              "%s", x.ctx.msg);
    free(txt);
    rm_dir(dir);
    rm_dir(dir2);
    nl_moe_close(moe);
    fx_close(&x);
}

/* The MLP router's calibration pass keeps evenly spaced tokens (each once, whatever the batch):
 * their FFN inputs and oracle scores (mean fill) equal those of one dense pass per document. */
typedef struct {
    float *x, *a; /* (n, D), (n, F) of layer 1 */
    int D, F, n, n_act;
} io_capture;

static nl_status cap_in(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    io_capture *c = user;
    if (info->layer == 1) memcpy(c->x + (size_t)c->n * c->D, x, (size_t)info->T * c->D * sizeof(float)), c->n += info->T;
    return NL_OK;
}

static nl_status cap_act(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    io_capture *c = user;
    if (info->layer == 1) memcpy(c->a + (size_t)c->n_act * c->F, x, (size_t)info->T * c->F * sizeof(float)), c->n_act += info->T;
    return NL_OK;
}

Test(moe, router_calibration_keeps_evenly_spaced_tokens) {
    fx a, b;
    fx_open(&a, FIX "/llama", NULL, 3, 50, 64, 64);
    fx_open(&b, FIX "/llama", a.data, 3, 50, 7, 64); /* batches of 7 tokens */
    const nl_config *cfg = nl_model_config(a.m);
    const int D = cfg->d_model, F = cfg->d_ff, E = 4, keep = 7;
    nl_moe *moe = moefy(&a, E, 0, NL_MOE_SPLIT_PARAM);
    io_capture cap = {malloc(150 * (size_t)D * sizeof(float)), malloc(150 * (size_t)F * sizeof(float)), D, F, 0, 0};
    nl_hook_id i1, i2;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(a.f), NL_HOOK_FFN_IN, 1, NL_HOOK_OBSERVE, cap_in, &cap, &i1), NL_OK);
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(a.f), NL_HOOK_FFN_ACT, 1, NL_HOOK_OBSERVE, cap_act, &cap, &i2), NL_OK);
    for (int d = 0; d < a.ds->n_docs; d++) {
        nl_forward_reset(a.f);
        cr_assert_eq(nl_forward_run(a.f, &a.ctx, a.ds->docs[d].tokens, a.ds->docs[d].n_tokens, NULL), NL_OK);
    }
    cr_assert_eq(cap.n, 150);
    nl_moe_calib c;
    const int layers[2] = {0, 1};
    cr_assert_eq(nl_moe_calib_init(&b.ctx, &c, cfg->n_layers, F, layers, 2, nl_forward_max_T(b.f), 0), NL_OK);
    cr_assert_eq(nl_moe_calib_pass(&b.ctx, &c, b.f, b.ds, 0, 1, 1, 2), NL_OK, "%s", b.ctx.msg);
    cr_assert_eq(nl_moe_calib_router_init(&b.ctx, &c, b.m, moe, NL_MOE_FILL_MEAN, keep), NL_OK, "%s", b.ctx.msg);
    cr_assert_eq(c.keep, keep);
    cr_assert_eq(nl_moe_calib_pass(&b.ctx, &c, b.f, b.ds, 0, 3, 2, 2), NL_OK, "%s", b.ctx.msg);
    const nl_moe_layer *y = nl_moe_get_layer(moe, 1);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&b.ctx, b.m, 1, &w), NL_OK);
    int seen = 0;
    for (int g = 0; g < 150; g++) {
        if ((g + 1) * keep / 150 == g * keep / 150) continue;
        const int slot = (g + 1) * keep / 150 - 1;
        cr_assert_eq(slot, seen++, "slots in token order");
        nl_check_close(c.rx + ((size_t)keep + slot) * D, cap.x + (size_t)g * D, (size_t)D, 1e-5);
        for (int e = 0; e < E; e++) {
            double s = 0;
            for (int p = y->offset[e]; p < y->offset[e + 1]; p++) {
                const int i = y->perm[p];
                double wn = 0;
                for (int d = 0; d < D; d++) wn += (double)nl_moe_mat_at(&w.w_down, d, i) * nl_moe_mat_at(&w.w_down, d, i);
                const double v = (cap.a[(size_t)g * F + i] - c.mu[(size_t)F + i]) * sqrt(wn);
                s += v * v;
            }
            const double got = c.rs[((size_t)keep + slot) * E + e];
            cr_assert(fabs(got - s) <= 1e-4 * (fabs(s) + 1e-6), "token %d expert %d: score %.7g, recomputed %.7g", g, e, got, s);
        }
    }
    cr_assert_eq(seen, keep);
    nl_moe_calib_release(&c);
    free(cap.x), free(cap.a);
    nl_moe_close(moe);
    b.data[0] = 0;
    fx_close(&b);
    fx_close(&a);
}
