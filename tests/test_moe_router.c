/* test_moe_router.c — the MLP router of MoEfication (moe.h "the MLP router", router_mlp.c):
 *   - the gradients of nl_moe_mlp_loss_grad equal central finite differences of its loss;
 *   - loss, gradients and weights after three Adam steps equal PyTorch's
 *     (tests/fixtures/moe/router_mlp.json from tests/reference/gen_router_mlp.py) to 1e-5
 *     relative, including a zero input row and a batch without oracle mass;
 *   - nl_moe_mlp_scores and nl_moe_recall against plain recomputations;
 *   - training: the untrained router (W1 = ĉ, W2 = I) has exactly the sim router's recall; on a
 *     synthetic case whose target is learnable (scores from a hidden MLP router that the sim
 *     centroids do not see) the trained router's held-out recall beats the sim router's and the
 *     held-out loss falls; training is deterministic for a seed and bad options are refused.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/moe.h"
#include "neuronlab/rng.h"
#include "testutil.h"

#define FIXTURE "tests/fixtures/moe/router_mlp.json"

static void randn(nl_rng *r, double *v, size_t n, double s) {
    for (size_t i = 0; i < n; i++) v[i] = s * nl_rng_normal(r);
}

Test(moe_router, gradients_equal_finite_differences) {
    const int D = 7, E = 5, B = 6;
    nl_rng r;
    nl_rng_derive(&r, 3, 1, 0);
    double W1[35], W2[25], g1[35], g2[25];
    float X[42], S[30];
    randn(&r, W1, 35, 0.8);
    randn(&r, W2, 25, 0.8);
    for (int i = 0; i < B * D; i++) X[i] = (float)(2 * nl_rng_normal(&r));
    for (int i = 0; i < B * E; i++) S[i] = (float)pow(nl_rng_uniform(&r), 2) * 3;
    for (int d = 0; d < D; d++) X[2 * D + d] = 0; /* a zero input row */
    double *work = malloc(nl_moe_mlp_work_size(B, D, E) * sizeof(double));
    const double L0 = nl_moe_mlp_loss_grad(W1, W2, D, E, X, S, B, g1, g2, work);
    cr_assert(isfinite(L0) && L0 > 0);
    const double h = 1e-6;
    for (int which = 0; which < 2; which++) {
        double *W = which ? W2 : W1, *g = which ? g2 : g1;
        const int n = which ? E * E : E * D;
        double gmax = 0;
        for (int i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
        cr_assert(gmax > 1e-4, "gradients are not all ~0");
        for (int i = 0; i < n; i++) {
            const double w0 = W[i];
            W[i] = w0 + h;
            const double lp = nl_moe_mlp_loss_grad(W1, W2, D, E, X, S, B, NULL, NULL, work);
            W[i] = w0 - h;
            const double lm = nl_moe_mlp_loss_grad(W1, W2, D, E, X, S, B, NULL, NULL, work);
            W[i] = w0;
            const double fd = (lp - lm) / (2 * h);
            cr_assert(fabs(fd - g[i]) <= 1e-6 * gmax + 1e-6 * fabs(g[i]), "W%d[%d]: analytic %.10g, finite difference %.10g", which + 1, i,
                      g[i], fd);
        }
    }
    /* the loss itself: mean BCE with logits against s / max(s), recomputed plainly */
    double smax = 0, sum = 0;
    for (int i = 0; i < B * E; i++) smax = fmax(smax, S[i]);
    for (int t = 0; t < B; t++) {
        double nn = 0, xh[7], hh[5];
        for (int d = 0; d < D; d++) nn += (double)X[t * D + d] * X[t * D + d];
        for (int d = 0; d < D; d++) xh[d] = nn > 0 ? X[t * D + d] / sqrt(nn) : 0;
        for (int e = 0; e < E; e++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += W1[e * D + d] * xh[d];
            hh[e] = tanh(a);
        }
        for (int e = 0; e < E; e++) {
            double z = 0;
            for (int j = 0; j < E; j++) z += W2[e * E + j] * hh[j];
            const double y = S[t * E + e] / smax, p = 1 / (1 + exp(-z));
            sum += -(y * log(p) + (1 - y) * log(1 - p));
        }
    }
    cr_assert(fabs(sum / (B * E) - L0) < 1e-12, "loss %.15g, recomputed %.15g", L0, sum / (B * E));
    free(work);
}

static double *json_doubles(json_t *a, size_t want) {
    cr_assert(json_is_array(a) && json_array_size(a) == want, "fixture array of %zu values", want);
    double *v = malloc(want * sizeof(double));
    for (size_t i = 0; i < want; i++) v[i] = json_number_value(json_array_get(a, i));
    return v;
}

static void close_rel(const double *got, const double *want, size_t n, double tol, const char *what, int step) {
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * fmax(fabs(want[i]), 1e-3 * scale), "step %d %s[%zu]: C %.12g, PyTorch %.12g", step, what, i,
                  got[i], want[i]);
}

Test(moe_router, loss_gradients_and_adam_match_pytorch) {
    json_error_t err;
    json_t *j = json_load_file(FIXTURE, 0, &err);
    cr_assert(j, "%s: %s", FIXTURE, err.text);
    const int D = (int)json_integer_value(json_object_get(j, "d")), E = (int)json_integer_value(json_object_get(j, "e"));
    const double lr = json_number_value(json_object_get(j, "lr"));
    json_t *init = json_object_get(j, "init"), *steps = json_object_get(j, "steps");
    double *W1 = json_doubles(json_object_get(init, "w1"), (size_t)E * D), *W2 = json_doubles(json_object_get(init, "w2"), (size_t)E * E);
    double *m1 = calloc((size_t)E * D, sizeof(double)), *v1 = calloc((size_t)E * D, sizeof(double));
    double *m2 = calloc((size_t)E * E, sizeof(double)), *v2 = calloc((size_t)E * E, sizeof(double));
    double *g1 = malloc((size_t)E * D * sizeof(double)), *g2 = malloc((size_t)E * E * sizeof(double));
    cr_assert_eq(json_array_size(steps), 3);
    for (size_t k = 0; k < json_array_size(steps); k++) {
        json_t *s = json_array_get(steps, k);
        const int B = (int)json_integer_value(json_object_get(s, "batch"));
        double *xd = json_doubles(json_object_get(s, "x"), (size_t)B * D), *sd = json_doubles(json_object_get(s, "s"), (size_t)B * E);
        float *X = malloc((size_t)B * D * sizeof(float)), *S = malloc((size_t)B * E * sizeof(float));
        for (int i = 0; i < B * D; i++) {
            X[i] = (float)xd[i];
            cr_assert_eq((double)X[i], xd[i], "fixture inputs are float32 values");
        }
        for (int i = 0; i < B * E; i++) S[i] = (float)sd[i];
        double *work = malloc(nl_moe_mlp_work_size(B, D, E) * sizeof(double));
        const double loss = nl_moe_mlp_loss_grad(W1, W2, D, E, X, S, B, g1, g2, work);
        const double want = json_number_value(json_object_get(s, "loss"));
        cr_assert(fabs(loss - want) <= 1e-5 * fabs(want), "step %zu loss: C %.12g, PyTorch %.12g", k, loss, want);
        double *wg1 = json_doubles(json_object_get(s, "g1"), (size_t)E * D), *wg2 = json_doubles(json_object_get(s, "g2"), (size_t)E * E);
        close_rel(g1, wg1, (size_t)E * D, 1e-5, "g1", (int)k);
        close_rel(g2, wg2, (size_t)E * E, 1e-5, "g2", (int)k);
        nl_moe_adam_step(W1, g1, m1, v1, (size_t)E * D, lr, (int64_t)k + 1);
        nl_moe_adam_step(W2, g2, m2, v2, (size_t)E * E, lr, (int64_t)k + 1);
        double *w1a = json_doubles(json_object_get(s, "w1_after"), (size_t)E * D), *w2a = json_doubles(json_object_get(s, "w2_after"), (size_t)E * E);
        close_rel(W1, w1a, (size_t)E * D, 1e-5, "w1 after Adam", (int)k);
        close_rel(W2, w2a, (size_t)E * E, 1e-5, "w2 after Adam", (int)k);
        free(xd), free(sd), free(X), free(S), free(work), free(wg1), free(wg2), free(w1a), free(w2a);
    }
    free(W1), free(W2), free(m1), free(v1), free(m2), free(v2), free(g1), free(g2);
    json_decref(j);
}

Test(moe_router, scores_and_recall_against_recomputation) {
    const int D = 5, E = 6, n = 40;
    nl_rng r;
    nl_rng_derive(&r, 5, 5, 5);
    float W1[30], W2[36], X[200], z[240], S[240];
    for (int i = 0; i < 30; i++) W1[i] = (float)nl_rng_normal(&r);
    for (int i = 0; i < 36; i++) W2[i] = (float)nl_rng_normal(&r);
    for (int i = 0; i < n * D; i++) X[i] = (float)nl_rng_normal(&r);
    for (int i = 0; i < n * E; i++) S[i] = (float)nl_rng_uniform(&r);
    for (int e = 0; e < E; e++) S[3 * E + e] = 0; /* no oracle mass: recall 1 */
    nl_moe_mlp_scores(W1, W2, D, E, X, n, z);
    double rec = 0;
    for (int t = 0; t < n; t++) {
        double nn = 0, h[6];
        for (int d = 0; d < D; d++) nn += (double)X[t * D + d] * X[t * D + d];
        for (int e = 0; e < E; e++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += (double)W1[e * D + d] * X[t * D + d] / sqrt(nn);
            h[e] = tanh(a);
        }
        for (int e = 0; e < E; e++) {
            double a = 0;
            for (int k = 0; k < E; k++) a += (double)W2[e * E + k] * h[k];
            cr_assert(fabs(a - z[t * E + e]) < 1e-5 * (1 + fabs(a)), "score %d %d: %g vs %g", t, e, z[t * E + e], a);
        }
        /* recall at K = 2 by sorting */
        int a1 = 0, a2 = -1, o1 = 0, o2 = -1;
        for (int e = 1; e < E; e++) if (z[t * E + e] > z[t * E + a1]) a1 = e;
        for (int e = 0; e < E; e++) if (e != a1 && (a2 < 0 || z[t * E + e] > z[t * E + a2])) a2 = e;
        for (int e = 1; e < E; e++) if (S[t * E + e] > S[t * E + o1]) o1 = e;
        for (int e = 0; e < E; e++) if (e != o1 && (o2 < 0 || S[t * E + e] > S[t * E + o2])) o2 = e;
        const double den = (double)S[t * E + o1] + S[t * E + o2];
        rec += den > 0 ? ((double)S[t * E + a1] + S[t * E + a2]) / den : 1;
    }
    cr_assert(fabs(nl_moe_recall(z, S, n, E, 2) - rec / n) < 1e-12, "recall %.12f vs %.12f", nl_moe_recall(z, S, n, E, 2), rec / n);
    cr_assert(fabs(nl_moe_recall(S, S, n, E, 3) - 1) < 1e-12, "the oracle's own recall is 1");
    cr_assert(fabs(nl_moe_recall(z, S, n, E, E) - 1) < 1e-12, "K = E recalls everything");
}

/* A synthetic layer: X (n, D) normal; a hidden router (V1, V2) gives the oracle scores
 * s = 10⁻³·exp(1.5·V2·tanh(V1·x̂)); the sim centroids are unrelated unit rows. */
typedef struct {
    int D, E;
    int64_t n;
    float *X, *S, *sim;
} synth;

static synth make_synth(int D, int E, int64_t n, uint64_t seed) {
    synth s = {D, E, n, malloc((size_t)n * D * sizeof(float)), malloc((size_t)n * E * sizeof(float)), malloc((size_t)E * D * sizeof(float))};
    nl_rng r;
    nl_rng_derive(&r, seed, 9, 0);
    float *V1 = malloc((size_t)E * D * sizeof(float)), *V2 = malloc((size_t)E * E * sizeof(float));
    for (int i = 0; i < E * D; i++) V1[i] = (float)(1.5 * nl_rng_normal(&r));
    for (int i = 0; i < E * E; i++) V2[i] = (float)((i / E == i % E) + 0.5 * nl_rng_normal(&r));
    for (int64_t i = 0; i < n * D; i++) s.X[i] = (float)nl_rng_normal(&r);
    nl_moe_mlp_scores(V1, V2, D, E, s.X, (int)n, s.S);
    for (int64_t i = 0; i < n * E; i++) s.S[i] = expf(1.5f * s.S[i]) * 1e-3f;
    for (int e = 0; e < E; e++) {
        double nn = 0;
        for (int d = 0; d < D; d++) s.sim[e * D + d] = (float)nl_rng_normal(&r), nn += (double)s.sim[e * D + d] * s.sim[e * D + d];
        for (int d = 0; d < D; d++) s.sim[e * D + d] = (float)(s.sim[e * D + d] / sqrt(nn));
    }
    free(V1), free(V2);
    return s;
}

static void free_synth(synth *s) { free(s->X), free(s->S), free(s->sim); }

Test(moe_router, untrained_router_ranks_as_sim) {
    synth s = make_synth(12, 8, 600, 1);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_moe_mlp_opts o;
    nl_moe_mlp_opts_init(&o);
    o.epochs = 0, o.K = 3;
    float W1[96], W2[64];
    nl_moe_mlp_report rep;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, s.D, s.E, s.n, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_OK, "%s", ctx.msg);
    cr_assert_eq(rep.n_held, 60);
    cr_assert_eq(rep.n_train, 540);
    cr_assert_eq(rep.K25, 2);
    cr_assert_eq(memcmp(W1, s.sim, sizeof W1), 0, "W1 starts at the centroids");
    for (int i = 0; i < 64; i++) cr_assert_eq(W2[i], i / 8 == i % 8 ? 1.0f : 0.0f, "W2 starts at the identity");
    cr_assert_eq(rep.recall_mlp25, rep.recall_sim25, "untrained: mlp %.6f, sim %.6f", rep.recall_mlp25, rep.recall_sim25);
    cr_assert_eq(rep.recall_mlp_k, rep.recall_sim_k);
    cr_assert_eq(rep.held_loss, rep.init_held_loss);
    free_synth(&s);
}

Test(moe_router, training_learns_a_learnable_target_and_beats_sim) {
    synth s = make_synth(16, 8, 6000, 2);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_moe_mlp_opts o;
    nl_moe_mlp_opts_init(&o); /* the defaults: 30 epochs, lr 1e-2, batch 512, 10 % held out */
    o.seed = 4, o.K = 4;
    float W1[128], W2[64], W1b[128], W2b[64];
    nl_moe_mlp_report rep, rep2;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, s.D, s.E, s.n, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_OK, "%s", ctx.msg);
    cr_log_info("held-out recall K=2: sim %.4f mlp %.4f; K=4: sim %.4f mlp %.4f; held-out loss %.4f → %.4f; train %.4f", rep.recall_sim25,
                rep.recall_mlp25, rep.recall_sim_k, rep.recall_mlp_k, rep.init_held_loss, rep.held_loss, rep.train_loss);
    cr_assert(rep.recall_mlp25 > rep.recall_sim25 + 0.05, "K=2: mlp %.4f, sim %.4f", rep.recall_mlp25, rep.recall_sim25);
    cr_assert(rep.recall_mlp_k > rep.recall_sim_k + 0.05, "K=4: mlp %.4f, sim %.4f", rep.recall_mlp_k, rep.recall_sim_k);
    cr_assert(rep.recall_mlp25 > 0.8, "K=2: mlp %.4f", rep.recall_mlp25);
    cr_assert(rep.held_loss < rep.init_held_loss, "held-out loss %.5f, initially %.5f", rep.held_loss, rep.init_held_loss);
    /* deterministic for a seed; another seed gives another split and order */
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, s.D, s.E, s.n, s.X, s.S, s.sim, NULL, W1b, W2b, &rep2), NL_OK);
    cr_assert_eq(memcmp(W1, W1b, sizeof W1), 0, "same seed, same weights");
    cr_assert_eq(memcmp(W2, W2b, sizeof W2), 0);
    cr_assert_eq(rep.recall_mlp25, rep2.recall_mlp25);
    o.seed = 5;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, s.D, s.E, s.n, s.X, s.S, s.sim, NULL, W1b, W2b, &rep2), NL_OK);
    cr_assert_neq(memcmp(W1, W1b, sizeof W1), 0, "another seed, another split and order");
    /* the recall over every token (training ones included) is close to the held-out one */
    float *z = malloc((size_t)s.n * s.E * sizeof(float));
    nl_moe_mlp_scores(W1, W2, s.D, s.E, s.X, (int)s.n, z);
    const double all = nl_moe_recall(z, s.S, (int)s.n, s.E, 2);
    cr_assert(fabs(all - rep.recall_mlp25) < 0.05, "recall over every token %.4f, held-out %.4f", all, rep.recall_mlp25);
    free(z);
    free_synth(&s);
}

Test(moe_router, bad_options_refused) {
    synth s = make_synth(4, 3, 10, 3);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_moe_mlp_opts o;
    nl_moe_mlp_opts_init(&o);
    float W1[12], W2[9];
    nl_moe_mlp_report rep;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, 4, 3, 1, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_EINVAL);
    o.lr = 0;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, 4, 3, 10, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_EINVAL);
    nl_moe_mlp_opts_init(&o);
    o.K = 4;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, 4, 3, 10, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_EINVAL);
    nl_moe_mlp_opts_init(&o);
    o.batch = 3, o.epochs = 2;
    cr_assert_eq(nl_moe_mlp_train(&ctx, &o, 4, 3, 10, s.X, s.S, s.sim, NULL, W1, W2, &rep), NL_OK, "%s", ctx.msg);
    cr_assert_eq(rep.n_held, 1);
    free_synth(&s);
}
