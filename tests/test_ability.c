/* test_ability.c — ability scores (analyses/ability.h):
 * AP and predictivity against hand-computed cases (ties included) and brute-force
 * implementations, top-set selection, the analysis on a constructed activation file (pooled
 * and from ffn_act), loading sets back, and every bad input (overlap: tests/test_overlap.c). */
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <unistd.h>

#include "analyses/ability.h"
#include "neuronlab/rng.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_ability")
TestSuite(ability, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir, .timeout = 120);

/* ---------------------------------------------------------------- brute force */

/* AP straight from the definition: every distinct value t, in descending order, is one step
 * with precision #pos(v ≥ t)/#(v ≥ t) and recall gain (#pos(v ≥ t) − #pos(v > t))/P. O(n²). */
static double brute_ap(const float *v, const uint8_t *y, int n) {
    int P = 0;
    for (int d = 0; d < n; d++) P += y[d];
    double ap = 0;
    for (int d = 0; d < n; d++) {
        int first = 1; /* take each distinct value once: at its first occurrence */
        for (int e = 0; e < d; e++)
            if (v[e] == v[d]) first = 0;
        if (!first) continue;
        int ge = 0, pge = 0, pgt = 0;
        for (int e = 0; e < n; e++) {
            ge += v[e] >= v[d];
            pge += y[e] && v[e] >= v[d];
            pgt += y[e] && v[e] > v[d];
        }
        ap += (double)(pge - pgt) / P * ((double)pge / ge);
    }
    return ap;
}

/* Without ties: the mean over the positives of precision at their rank. */
static double rank_ap(const float *v, const uint8_t *y, int n) {
    int P = 0;
    double s = 0;
    for (int d = 0; d < n; d++) {
        if (!y[d]) continue;
        P++;
        int rank = 0, pos = 0; /* documents ranked at or above d */
        for (int e = 0; e < n; e++)
            if (v[e] >= v[d]) rank++, pos += y[e];
        s += (double)pos / rank;
    }
    return s / P;
}

static double brute_pred(const float *v, const uint8_t *y, int n) {
    double mean = 0;
    for (int d = 0; d < n; d++) mean += v[d];
    mean /= n;
    int tp = 0, fn = 0, tn = 0, fp = 0;
    for (int d = 0; d < n; d++) {
        if (v[d] > mean) y[d] ? tp++ : fp++;
        else y[d] ? fn++ : tn++;
    }
    return 0.5 * ((double)tp / (tp + fn) + (double)tn / (tn + fp));
}

/* ---------------------------------------------------------------- scores */

Test(ability, ap_hand_cases) {
    /* ranks 1 and 3 positive: (1/1 + 2/3) / 2 */
    float v1[] = {0.9f, 0.8f, 0.7f, 0.6f};
    uint8_t y1[] = {1, 0, 1, 0};
    cr_assert_float_eq(nl_ability_ap(v1, y1, 4), (1.0 + 2.0 / 3) / 2, 1e-12);
    /* perfect and worst rankings */
    uint8_t y2[] = {1, 1, 0, 0}, y3[] = {0, 0, 1, 1};
    cr_assert_float_eq(nl_ability_ap(v1, y2, 4), 1.0, 1e-12);
    cr_assert_float_eq(nl_ability_ap(v1, y3, 4), (1.0 / 3 + 2.0 / 4) / 2, 1e-12);
    /* a tie between a positive and a negative is one step: precision 1/2, not 1 */
    float v4[] = {1, 1};
    uint8_t y4[] = {0, 1};
    cr_assert_float_eq(nl_ability_ap(v4, y4, 2), 0.5, 1e-12);
    uint8_t y4b[] = {1, 0};
    cr_assert_float_eq(nl_ability_ap(v4, y4b, 2), 0.5, 1e-12);
    /* two tied groups: {1,1} holds one of two positives (P = 1/2, R = 1/2), then all (1/2, 1) */
    float v5[] = {1, 1, 0, 0};
    uint8_t y5[] = {1, 0, 1, 0};
    cr_assert_float_eq(nl_ability_ap(v5, y5, 4), 0.5, 1e-12);
    /* every value tied: the positive rate, the random baseline */
    float v6[] = {3, 3, 3, 3, 3, 3, 3};
    uint8_t y6[] = {0, 1, 0, 0, 1, 0, 0};
    cr_assert_float_eq(nl_ability_ap(v6, y6, 7), 2.0 / 7, 1e-12);
    /* tie at the top with three docs: values 2,2,1 labels 0,1,1 → step {2,2}: P 1/2 R 1/2; step {1}: P 2/3 R 1 */
    float v7[] = {2, 2, 1};
    uint8_t y7[] = {0, 1, 1};
    cr_assert_float_eq(nl_ability_ap(v7, y7, 3), 0.5 * 0.5 + 0.5 * (2.0 / 3), 1e-12);
    /* NaN ranks last; no positive gives NaN */
    float v8[] = {NAN, 1, 0};
    uint8_t y8[] = {1, 0, 0};
    cr_assert_float_eq(nl_ability_ap(v8, y8, 3), 1.0 / 3, 1e-12);
    uint8_t y9[] = {0, 0, 0};
    cr_assert(isnan(nl_ability_ap(v8, y9, 3)));
}

Test(ability, ap_matches_brute_force) {
    nl_rng r;
    nl_rng_derive(&r, 7, 1, 0);
    float v[300];
    uint8_t y[300];
    for (int trial = 0; trial < 200; trial++) {
        int n = 2 + (int)nl_rng_below(&r, 299);
        int levels = trial % 3 == 0 ? 1000000 : 2 + (int)nl_rng_below(&r, 12); /* many ties most of the time */
        int P = 0;
        for (int d = 0; d < n; d++) {
            v[d] = (float)nl_rng_below(&r, (uint64_t)levels) * 0.25f;
            y[d] = nl_rng_uniform(&r) < 0.3;
            P += y[d];
        }
        if (!P) y[0] = 1;
        double got = nl_ability_ap(v, y, n), want = brute_ap(v, y, n);
        cr_assert(fabs(got - want) < 1e-12, "trial %d n %d: %.15g vs %.15g", trial, n, got, want);
        if (levels == 1000000) { /* almost surely no ties: the rank form agrees too */
            int ties = 0;
            for (int d = 0; d < n; d++)
                for (int e = 0; e < d; e++) ties += v[d] == v[e];
            if (!ties) cr_assert(fabs(got - rank_ap(v, y, n)) < 1e-12);
        }
    }
}

Test(ability, predictivity_hand_and_brute) {
    /* mean 1.5: predictions 1,0,1,0; y 1,0,0,0 → TPR 1, TNR 2/3 */
    float v1[] = {3, 1, 2, 0};
    uint8_t y1[] = {1, 0, 0, 0};
    cr_assert_float_eq(nl_ability_predictivity(v1, y1, 4), 0.5 * (1 + 2.0 / 3), 1e-12);
    /* a value equal to the mean is not above it: all tied → nothing predicted → 0.5 */
    float v2[] = {1, 1, 1, 1};
    uint8_t y2[] = {1, 0, 1, 0};
    cr_assert_float_eq(nl_ability_predictivity(v2, y2, 4), 0.5, 1e-12);
    /* mean exactly 1: only the 2 is above */
    float v3[] = {2, 0, 1, 1};
    uint8_t y3[] = {1, 1, 0, 0};
    cr_assert_float_eq(nl_ability_predictivity(v3, y3, 4), 0.5 * (0.5 + 1), 1e-12);
    uint8_t y4[] = {1, 1, 1, 1};
    cr_assert(isnan(nl_ability_predictivity(v3, y4, 4)));
    nl_rng r;
    nl_rng_derive(&r, 9, 1, 0);
    float v[200];
    uint8_t y[200];
    for (int trial = 0; trial < 200; trial++) {
        int n = 2 + (int)nl_rng_below(&r, 199), P = 0;
        for (int d = 0; d < n; d++) v[d] = (float)nl_rng_below(&r, 6), y[d] = d % 3 == 0, P += y[d];
        if (P == n) y[1] = 0;
        cr_assert(fabs(nl_ability_predictivity(v, y, n) - brute_pred(v, y, n)) < 1e-12);
    }
}

/* ---------------------------------------------------------------- top sets */

Test(ability, select_per_layer_global_excluded) {
    /* A = 1, Lr = 2, F = 10; top 0.2 → 2 per layer, 4 overall */
    float sc[20] = {0.1f, 0.9f, 0.5f, 0.9f, 0.2f, 0.3f, 0.0f, 0.4f, 0.8f, 0.6f, /* layer 0 */
                    0.95f, 0.1f, 0.1f, 0.1f, 0.1f, 0.97f, 0.1f, 0.1f, 0.1f, 0.1f};
    uint8_t m[20];
    int cnt[2];
    nl_ability_select(sc, 1, 2, 10, NULL, 0.2, 0, NULL, m, cnt, NULL);
    cr_assert_eq(cnt[0], 2);
    cr_assert_eq(cnt[1], 2);
    cr_assert(m[1] && m[3] && !m[8], "tied 0.9s both in, 0.8 out");
    cr_assert(m[10] && m[15]);
    /* a tie at the cut is broken by the margin (larger first), never by the index */
    float mg[20] = {0};
    mg[1] = 0.1f, mg[3] = 0.5f;
    nl_ability_tiebreak tb = {mg, 0, NULL, 0};
    nl_ability_tie ties[2];
    nl_ability_select(sc, 1, 2, 10, NULL, 0.1, 0, &tb, m, cnt, ties);
    cr_assert(!m[1] && m[3], "the larger margin wins the tie");
    cr_assert_eq(ties[0].tied, 2);
    cr_assert_eq(ties[0].chosen, 1);
    cr_assert_eq(ties[0].broken_by, NL_TIE_MARGIN);
    cr_assert_float_eq(ties[0].cut, 0.9f, 1e-7);
    cr_assert_eq(ties[1].tied, 1, "layer 1: 0.97 alone");
    cr_assert_eq(ties[1].broken_by, NL_TIE_NONE);
    /* symmetric: |margin| */
    mg[1] = -0.9f;
    tb.symmetric = 1;
    nl_ability_select(sc, 1, 2, 10, NULL, 0.1, 0, &tb, m, cnt, NULL);
    cr_assert(m[1] && !m[3], "|-0.9| > 0.5 with --symmetric");
    /* equal margins: the seeded hash of (layer, neuron), lower first */
    mg[1] = mg[3] = 0.5f;
    tb.symmetric = 0;
    for (uint64_t seed = 0; seed < 8; seed++) {
        tb.seed = seed;
        nl_ability_select(sc, 1, 2, 10, NULL, 0.1, 0, &tb, m, cnt, ties);
        const int want = nl_ability_tie_hash(seed, 0, 1) < nl_ability_tie_hash(seed, 0, 3) ? 1 : 3;
        cr_assert(m[want] && !m[4 - want], "seed %llu", (unsigned long long)seed);
        cr_assert_eq(ties[0].broken_by, NL_TIE_HASH);
    }
    /* the model layer numbers are the hash key */
    const int layers[2] = {5, 9};
    tb.layers = layers, tb.seed = 3;
    nl_ability_select(sc, 1, 2, 10, NULL, 0.1, 0, &tb, m, cnt, NULL);
    const int want = nl_ability_tie_hash(3, 5, 1) < nl_ability_tie_hash(3, 5, 3) ? 1 : 3;
    cr_assert(m[want] && !m[4 - want]);
    /* global: 0.97, 0.95, 0.9 (n1), 0.9 (n3) */
    nl_ability_select(sc, 1, 2, 10, NULL, 0.2, 1, NULL, m, cnt, NULL);
    cr_assert_eq(cnt[0], 2);
    cr_assert_eq(cnt[1], 2);
    cr_assert(m[1] && m[3] && m[10] && m[15]);
    /* excluded neurons are never chosen, the size stays */
    uint8_t ex[20] = {0};
    ex[1] = ex[15] = 1;
    nl_ability_select(sc, 1, 2, 10, ex, 0.2, 0, NULL, m, cnt, NULL);
    cr_assert(!m[1] && m[3] && m[8] && !m[15] && m[10]);
    cr_assert_eq(cnt[0], 2);
    cr_assert_eq(cnt[1], 2);
    /* tiny fractions still give one neuron; top 1 gives all */
    nl_ability_select(sc, 1, 2, 10, NULL, 0.001, 0, NULL, m, cnt, NULL);
    cr_assert_eq(cnt[0] + cnt[1], 2);
    nl_ability_select(sc, 1, 2, 10, ex, 1.0, 0, NULL, m, cnt, NULL);
    cr_assert_eq(cnt[0] + cnt[1], 18);
}

/* A plain slow reference of the top sets with ties: neuron x is in its group's set iff fewer
 * than k eligible neurons of the group beat it (higher score; equal score and larger margin
 * key; equal both and lower hash). */
static int beats(const float *sc, const float *mg, int sym, const int *layers, uint64_t seed, int F, int y, int x) {
    float sy = isnan(sc[y]) ? -INFINITY : sc[y], sx = isnan(sc[x]) ? -INFINITY : sc[x];
    if (sy != sx) return sy > sx;
    float my = isnan(mg[y]) ? -INFINITY : sym ? fabsf(mg[y]) : mg[y], mx = isnan(mg[x]) ? -INFINITY : sym ? fabsf(mg[x]) : mg[x];
    if (my != mx) return my > mx;
    uint64_t hy = nl_ability_tie_hash(seed, layers[y / F], y % F), hx = nl_ability_tie_hash(seed, layers[x / F], x % F);
    if (hy != hx) return hy < hx;
    return y < x;
}

Test(ability, select_ties_brute_force) {
    nl_rng r;
    nl_rng_derive(&r, 11, 1, 0);
    enum { A = 2, LR = 3, F = 12 };
    float sc[A * LR * F], mg[A * LR * F];
    uint8_t ex[LR * F], m[A * LR * F];
    int cnt[A * LR];
    nl_ability_tie ties[A * LR];
    const int layers[LR] = {0, 4, 7};
    int saw_margin = 0, saw_hash = 0, saw_cross_layer = 0;
    for (int trial = 0; trial < 400; trial++) {
        for (int x = 0; x < A * LR * F; x++) {
            sc[x] = nl_rng_below(&r, 10) == 0 ? NAN : (float)nl_rng_below(&r, 3) / 2; /* heavy ties */
            mg[x] = nl_rng_below(&r, 12) == 0 ? NAN : (float)nl_rng_below(&r, 3) - 1;
        }
        int use_ex = trial % 3 == 0;
        for (int x = 0; x < LR * F; x++) ex[x] = use_ex && nl_rng_below(&r, 5) == 0;
        const int global = trial % 2, sym = trial % 5 == 0;
        const double top = (1 + nl_rng_below(&r, 6)) / 12.0;
        const uint64_t seed = nl_rng_below(&r, 1000);
        nl_ability_tiebreak tb = {mg, sym, layers, seed};
        nl_ability_select(sc, A, LR, F, use_ex ? ex : NULL, top, global, &tb, m, cnt, ties);
        const int groups = global ? 1 : LR, width = global ? LR * F : F;
        int k0 = (int)floor(top * width + 1e-9);
        if (k0 < 1) k0 = 1;
        for (int a = 0; a < A; a++) {
            const float *s = sc + a * LR * F, *g = mg + a * LR * F;
            for (int gr = 0; gr < groups; gr++) {
                int elig = 0;
                for (int x = gr * F; x < gr * F + width; x++) elig += !ex[x] || !use_ex;
                const int k = k0 < elig ? k0 : elig;
                int last = -1, first_out = -1, tied = 0, chosen = 0;
                for (int x = gr * F; x < gr * F + width; x++) {
                    if (use_ex && ex[x]) {
                        cr_assert(!m[a * LR * F + x]);
                        continue;
                    }
                    int b = 0;
                    for (int y = gr * F; y < gr * F + width; y++)
                        if (y != x && !(use_ex && ex[y]) && beats(s, g, sym, layers, seed, F, y, x)) b++;
                    cr_assert_eq(m[a * LR * F + x], b < k, "trial %d ability %d neuron %d", trial, a, x);
                    if (b == k - 1) last = x;
                    if (b == k) first_out = x;
                }
                float cut = isnan(s[last]) ? -INFINITY : s[last];
                for (int x = gr * F; x < gr * F + width; x++)
                    if (!(use_ex && ex[x]) && (isnan(s[x]) ? -INFINITY : s[x]) == cut) tied++, chosen += m[a * LR * F + x];
                const nl_ability_tie *t = &ties[a * groups + gr];
                cr_assert_eq(t->tied, tied, "trial %d", trial);
                cr_assert_eq(t->chosen, chosen);
                if (chosen == tied) cr_assert_eq(t->broken_by, NL_TIE_NONE);
                else {
                    float kl = isnan(g[last]) ? -INFINITY : sym ? fabsf(g[last]) : g[last];
                    float kf = isnan(g[first_out]) ? -INFINITY : sym ? fabsf(g[first_out]) : g[first_out];
                    cr_assert_eq(t->broken_by, kl != kf ? NL_TIE_MARGIN : NL_TIE_HASH);
                    saw_margin |= kl != kf, saw_hash |= kl == kf;
                }
                if (global) /* a tie block spanning layers is not settled by the layer order */
                    for (int x = 0; x < LR * F; x++)
                        for (int y = x + 1; y < LR * F; y++)
                            if (x / F < y / F && !use_ex && s[x] == s[y] && g[x] == g[y] && !m[a * LR * F + x] && m[a * LR * F + y])
                                saw_cross_layer = 1;
            }
        }
    }
    cr_assert(saw_margin && saw_hash && saw_cross_layer, "the cases exercise both tie-breaks and higher layers winning ties");
}

/* ---------------------------------------------------------------- the analysis */

#define L_ 2
#define F_ 8
#define D_ 12
static const char *LABELS[D_] = {"code", "math", "code", "", "prose", "math", "prose", "code", "math", "prose", "code", "math"};
static const int LEN[D_] = {5, 4, 6, 3, 5, 7, 4, 5, 6, 3, 4, 5};
static const int PROMPT[D_] = {3, 4, 2, 3, 5, 1, 4, 5, 2, 3, 4, 5};

/* Activation of (layer, doc, token, neuron): label-dependent signal, quantised (ties). */
static float act(int l, int d, int t, int i) {
    int lab = LABELS[d][0] == 'c' ? 0 : LABELS[d][0] == 'm' ? 1 : 2;
    uint64_t h = (uint64_t)(l * 1000003 + d * 7919 + t * 131 + i) * 0x9E3779B97F4A7C15ULL;
    float noise = (float)((h >> 40) % 8) * 0.25f;
    float sig = (i % 3 == lab) ? 1.5f : 0.0f;
    return ((i + t) % 2 ? -1.0f : 1.0f) * (noise + (i < 2 ? sig : 0.5f * sig));
}

static float g_pool[D_][L_][F_]; /* mean |a| over the prompt, as the recorder computes it */
static int g_nan_doc = -1;       /* ≥ 0: write_acts puts a NaN at (layer 1, this document, token 0, neuron 2) */

static void write_acts(const char *path, int pooled, const float *wn_scale) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.model = "synthetic-model", .arch = "llama", .n_layers = L_, .d_model = 4, .d_ff = F_, .ffn_kind = "gated",
                    .act_fn = "silu", .dataset = "synthetic.jsonl", .pooled = pooled};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    for (int d = 0; d < D_; d++) {
        cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, LABELS[d], PROMPT[d]), NL_OK, "%s", ctx.msg);
        int32_t ids[8];
        for (int t = 0; t < LEN[d]; t++) ids[t] = d + t;
        cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, LEN[d]), NL_OK);
        for (int l = 0; l < L_; l++) {
            float a[8 * F_], acc[F_] = {0};
            for (int t = 0; t < LEN[d]; t++)
                for (int i = 0; i < F_; i++) a[t * F_ + i] = act(l, d, t, i);
            if (d == g_nan_doc && l == 1) a[2] = NAN;
            for (int t = 0; t < PROMPT[d]; t++)
                for (int i = 0; i < F_; i++) acc[i] += fabsf(a[t * F_ + i]);
            for (int i = 0; i < F_; i++) g_pool[d][l][i] = acc[i] / (float)PROMPT[d];
            cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, l, a, LEN[d]), NL_OK);
            cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, l, g_pool[d][l]), NL_OK);
        }
        cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
    }
    for (int l = 0; l < L_; l++) {
        float wn[F_];
        for (int i = 0; i < F_; i++) wn[i] = (1.0f + 0.1f * i + l) * (wn_scale ? *wn_scale : 1.0f);
        cr_assert_eq(nl_h5_writer_put_w_out_norm(w, &ctx, l, wn), NL_OK);
    }
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
}

static const char *ABIL[3] = {"code", "math", "prose"};

/* Values and labels of the scored (labelled) documents for layer l, neuron i, ability a. */
static int column(int l, int i, int a, float *v, uint8_t *y) {
    int n = 0;
    for (int d = 0; d < D_; d++) {
        if (!LABELS[d][0]) continue;
        v[n] = g_pool[d][l][i];
        y[n++] = !strcmp(LABELS[d], ABIL[a]);
    }
    return n;
}

static double db_real(sqlite3 *h, const char *sql) {
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW, "%s", sql);
    double v = sqlite3_column_double(q, 0);
    sqlite3_finalize(q);
    return v;
}

static int64_t run_ability(const char *acts, const char *dbp, const nl_ability_opts *o, nl_status want, char *msg) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    nl_ability_result res = {0};
    nl_status st = nl_ability_run(&ctx, o, acts, db, NULL, &res);
    cr_assert_eq(st, want, "status %d: %s", st, ctx.msg);
    if (msg) strcpy(msg, ctx.msg);
    nl_results_close(db);
    int64_t run = res.run_id;
    nl_ability_result_release(&res);
    return run;
}

static void check_scores(sqlite3 *h, int64_t run, int method) {
    sqlite3_stmt *q;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT ability, layer, neuron, score FROM ability_score WHERE run_id = %lld", (long long)run);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *ab = (const char *)sqlite3_column_text(q, 0);
        int a = !strcmp(ab, "code") ? 0 : !strcmp(ab, "math") ? 1 : 2;
        float v[D_];
        uint8_t y[D_];
        int n = column(sqlite3_column_int(q, 1), sqlite3_column_int(q, 2), a, v, y);
        double want = method == NL_ABILITY_AP ? brute_ap(v, y, n) : brute_pred(v, y, n);
        cr_assert(fabs(sqlite3_column_double(q, 3) - want) < 1e-6, "%s l%d n%d: %g vs %g", ab, sqlite3_column_int(q, 1),
                  sqlite3_column_int(q, 2), sqlite3_column_double(q, 3), want);
        rows++;
    }
    sqlite3_finalize(q);
    cr_assert_eq(rows, 3 * L_ * F_);
}

Test(ability, run_on_a_constructed_file) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 1, NULL);
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    o.top = 0.25; /* 2 of 8 per layer */
    int64_t r1 = run_ability(acts, dbp, &o, NL_OK, NULL);
    o.from_acts = 1;
    int64_t r2 = run_ability(acts, dbp, &o, NL_OK, NULL);
    o.from_acts = 0;
    o.method = NL_ABILITY_PREDICTIVITY;
    int64_t r3 = run_ability(acts, dbp, &o, NL_OK, NULL);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    check_scores(h, r1, NL_ABILITY_AP);
    check_scores(h, r2, NL_ABILITY_AP); /* the means of |a| over the prompt rows give the same scores */
    check_scores(h, r3, NL_ABILITY_PREDICTIVITY);
    char sql[512];
    /* 11 labelled documents, 4 code: baseline 4/11 */
    snprintf(sql, sizeof sql, "SELECT baseline FROM ability_label WHERE run_id = %lld AND ability = 'code'", (long long)r1);
    cr_assert_float_eq(db_real(h, sql), 4.0 / 11, 1e-12);
    snprintf(sql, sizeof sql, "SELECT docs FROM ability_run WHERE run_id = %lld", (long long)r1);
    cr_assert_eq((int)db_real(h, sql), 11);
    /* layer stats agree with the score rows */
    snprintf(sql, sizeof sql,
             "SELECT MAX(ABS(l.best - (SELECT MAX(score) FROM ability_score s WHERE s.run_id = l.run_id AND s.ability = l.ability"
             " AND (l.layer < 0 OR s.layer = l.layer))) + ABS(l.mean - (SELECT AVG(score) FROM ability_score s WHERE"
             " s.run_id = l.run_id AND s.ability = l.ability AND (l.layer < 0 OR s.layer = l.layer)))) FROM ability_layer l"
             " WHERE run_id = %lld",
             (long long)r1);
    cr_assert(db_real(h, sql) < 1e-6);
    /* top_permille with 8 neurons is rank 1 = best; over 16 neurons rank 1 too */
    snprintf(sql, sizeof sql, "SELECT MAX(ABS(best - top_permille)) FROM ability_layer WHERE run_id = %lld", (long long)r1);
    cr_assert(db_real(h, sql) < 1e-12);
    /* top sets: 2 per layer per ability, the best-scoring ones */
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM ability_top WHERE run_id = %lld", (long long)r1);
    cr_assert_eq((int)db_real(h, sql), 3 * L_ * 2);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM ability_top t JOIN ability_score s USING (run_id, ability, layer, neuron) WHERE t.run_id = %lld"
             " AND s.score < (SELECT MAX(score) FROM ability_score x LEFT JOIN ability_top u USING (run_id, ability, layer, neuron)"
             "   WHERE x.run_id = t.run_id AND x.ability = t.ability AND x.layer = t.layer AND u.rank IS NULL)",
             (long long)r1);
    cr_assert_eq((int)db_real(h, sql), 0, "a top neuron scores below a neuron left out");
    /* depth shares sum to 1 per ability */
    snprintf(sql, sizeof sql, "SELECT MAX(ABS(s - 1)) FROM (SELECT SUM(share) s FROM ability_depth WHERE run_id = %lld GROUP BY ability)",
             (long long)r1);
    cr_assert(db_real(h, sql) < 1e-12);
    /* neurons 0 and 3 carry the code signal in full (i % 3 == 0, i < 2 for 0): code's best is 1 */
    snprintf(sql, sizeof sql, "SELECT best FROM ability_layer WHERE run_id = %lld AND ability = 'code' AND layer = -1", (long long)r1);
    cr_assert_float_eq(db_real(h, sql), 1.0, 1e-9);
    snprintf(sql, sizeof sql, "SELECT status FROM runs WHERE id = %lld", (long long)r1);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(h, sql, -1, &q, NULL);
    sqlite3_step(q);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "complete");
    sqlite3_finalize(q);
    sqlite3_close(h);

    /* the sets load back as stored, and again from the scores for another fraction */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK);
    nl_ability_sets s = {0}, t = {0};
    cr_assert_eq(nl_ability_sets_load(&ctx, db, r1, 0, &s), NL_OK, "%s", ctx.msg);
    cr_assert_eq(s.n_abilities, 3);
    cr_assert_str_eq(s.abilities[2], "prose");
    cr_assert_eq(s.n_layers, L_);
    cr_assert_eq(s.d_ff, F_);
    for (int x = 0; x < 3 * L_; x++) cr_assert_eq(s.count[x], 2);
    cr_assert_eq(nl_ability_sets_load(&ctx, db, r1, 0.25, &t), NL_OK, "%s", ctx.msg);
    cr_assert_eq(memcmp(s.member, t.member, 3 * L_ * F_), 0, "recomputed sets differ from the stored ones");
    nl_ability_sets_release(&t);
    cr_assert_eq(nl_ability_sets_load(&ctx, db, r1, 0.5, &t), NL_OK, "%s", ctx.msg);
    for (int x = 0; x < 3 * L_; x++) cr_assert_eq(t.count[x], 4);
    for (int x = 0; x < 3 * L_ * F_; x++) cr_assert(!s.member[x] || t.member[x], "a 25%% set is not inside the 50%% set");
    nl_ability_sets_release(&t);
    nl_ability_sets_release(&s);
    /* bad loads */
    cr_assert_eq(nl_ability_sets_load(&ctx, db, 999, 0, &t), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "no run 999"), "%s", ctx.msg);
    cr_assert_eq(nl_ability_sets_load(&ctx, db, r1, 1.5, &t), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "outside (0, 1]"), "%s", ctx.msg);
    int64_t other;
    nl_run_info info = {"sparsity", "m", "d", acts, "{}"};
    cr_assert_eq(nl_results_begin_run(&ctx, db, &info, &other), NL_OK);
    cr_assert_eq(nl_results_end_run(&ctx, db, other, "complete", NULL), NL_OK);
    cr_assert_eq(nl_ability_sets_load(&ctx, db, other, 0, &t), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "is a 'sparsity' run, not an ability run"), "%s", ctx.msg);
    nl_results_close(db);
}

Test(ability, symmetric_and_shuffled) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 1, NULL);
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    o.symmetric = 1;
    int64_t r1 = run_ability(acts, dbp, &o, NL_OK, NULL);
    o.symmetric = 0;
    int64_t r0 = run_ability(acts, dbp, &o, NL_OK, NULL);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    sqlite3_stmt *q;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT ability, layer, neuron, score FROM ability_score WHERE run_id = %lld", (long long)r1);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *ab = (const char *)sqlite3_column_text(q, 0);
        int a = !strcmp(ab, "code") ? 0 : !strcmp(ab, "math") ? 1 : 2;
        float v[D_];
        uint8_t y[D_], ny[D_];
        int n = column(sqlite3_column_int(q, 1), sqlite3_column_int(q, 2), a, v, y);
        for (int d = 0; d < n; d++) ny[d] = !y[d];
        double want = fmax(brute_ap(v, y, n), brute_ap(v, ny, n));
        cr_assert(fabs(sqlite3_column_double(q, 3) - want) < 1e-6);
    }
    sqlite3_finalize(q);
    /* baseline max(p, 1-p) = 7/11 for code; the one-sided run's shuffled mean is near its baseline */
    snprintf(sql, sizeof sql, "SELECT baseline FROM ability_label WHERE run_id = %lld AND ability = 'code'", (long long)r1);
    cr_assert_float_eq(db_real(h, sql), 7.0 / 11, 1e-12);
    snprintf(sql, sizeof sql, "SELECT shuffled_best <= best FROM ability_layer WHERE run_id = %lld AND ability = 'code' AND layer = -1",
             (long long)r0);
    cr_assert_eq((int)db_real(h, sql), 1);
    sqlite3_close(h);
}

Test(ability, symmetric_predictivity_and_interrupt) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 1, NULL);
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    o.method = NL_ABILITY_PREDICTIVITY;
    o.symmetric = 1;
    int64_t r1 = run_ability(acts, dbp, &o, NL_OK, NULL);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    sqlite3_stmt *q;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT ability, layer, neuron, score FROM ability_score WHERE run_id = %lld", (long long)r1);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    int flipped = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *ab = (const char *)sqlite3_column_text(q, 0);
        int a = !strcmp(ab, "code") ? 0 : !strcmp(ab, "math") ? 1 : 2;
        float v[D_];
        uint8_t y[D_];
        int n = column(sqlite3_column_int(q, 1), sqlite3_column_int(q, 2), a, v, y);
        double b = brute_pred(v, y, n);
        flipped += b < 0.5;
        cr_assert(fabs(sqlite3_column_double(q, 3) - fmax(b, 1 - b)) < 1e-6);
    }
    sqlite3_finalize(q);
    cr_assert(flipped > 0, "no neuron below 0.5: the symmetric case is not exercised");
    sqlite3_close(h);
    /* Ctrl-C before the first layer: the run is marked interrupted and keeps no rows */
    o.symmetric = 0;
    nl_interrupted = 1;
    int64_t r2 = run_ability(acts, dbp, &o, NL_EINTR, NULL);
    nl_interrupted = 0;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    snprintf(sql, sizeof sql, "SELECT (SELECT status = 'interrupted' FROM runs WHERE id = %lld) +"
             " (SELECT COUNT(*) FROM ability_score WHERE run_id = %lld)", (long long)r2, (long long)r2);
    cr_assert_eq((int)db_real(h, sql), 1, "interrupted run: status or leftover rows wrong");
    sqlite3_close(h);
}

Test(ability, resident_exclusion) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 1, NULL);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK);
    /* without a sparsity run of this file, exclusion is refused */
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    o.exclude_resident = 1;
    nl_ability_result res = {0};
    cr_assert_eq(nl_ability_run(&ctx, &o, acts, db, NULL, &res), NL_EINVAL);
    cr_assert_eq(res.run_id, -1);
    cr_assert(strstr(ctx.msg, "no complete sparsity run of"), "%s", ctx.msg);
    /* a hand-made sparsity run flagging neurons 0 and 3 of layer 0 resident */
    int64_t sp;
    nl_run_info info = {"sparsity", "m", "d", acts, "{}"};
    cr_assert_eq(nl_results_begin_run(&ctx, db, &info, &sp), NL_OK);
    cr_assert_eq(nl_results_exec(&ctx, db,
                                 "CREATE TABLE IF NOT EXISTS neurons(run_id INTEGER, layer INTEGER, neuron INTEGER, label TEXT,"
                                 " tokens INTEGER, mean_abs REAL, max_abs REAL, max_r REAL, w_out_norm REAL, dead INTEGER,"
                                 " resident INTEGER)"),
                 NL_OK, "%s", ctx.msg);
    char sql[256];
    for (int l = 0; l < L_; l++)
        for (int i = 0; i < F_; i++) {
            snprintf(sql, sizeof sql, "INSERT INTO neurons VALUES (%lld, %d, %d, '', 1, 0, 0, 0, 0, 0, %d)", (long long)sp, l, i,
                     l == 0 && (i == 0 || i == 3));
            cr_assert_eq(nl_results_exec(&ctx, db, sql), NL_OK);
        }
    cr_assert_eq(nl_results_end_run(&ctx, db, sp, "complete", NULL), NL_OK);
    o.top = 0.25;
    cr_assert_eq(nl_ability_run(&ctx, &o, acts, db, NULL, &res), NL_OK, "%s", ctx.msg);
    int64_t run = res.run_id;
    cr_assert_eq(res.n_abilities, 3);
    nl_ability_sets s = {0};
    cr_assert_eq(nl_ability_sets_load(&ctx, db, run, 0, &s), NL_OK, "%s", ctx.msg);
    cr_assert(s.excluded[0] && s.excluded[3] && !s.excluded[1]);
    for (int a = 0; a < 3; a++) {
        cr_assert(!s.member[a * L_ * F_ + 0] && !s.member[a * L_ * F_ + 3]);
        cr_assert_eq(s.count[a * L_], 2);
    }
    nl_ability_sets_release(&s);
    /* an explicit run that is not a sparsity run of this file */
    o.resident_run = run;
    cr_assert_eq(nl_ability_run(&ctx, &o, acts, db, NULL, &res), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "is not a complete sparsity run of"), "%s", ctx.msg);
    nl_results_close(db);
}

Test(ability, bad_inputs) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 0, NULL);
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    char msg[1024];
    const char *one[] = {"poetry"};
    o.abilities = one, o.n_abilities = 1;
    run_ability(acts, dbp, &o, NL_EINVAL, msg);
    cr_assert(strstr(msg, "has no document labelled 'poetry'"), "%s", msg);
    o.abilities = NULL, o.n_abilities = 0;
    o.top = 0;
    run_ability(acts, dbp, &o, NL_EINVAL, msg);
    cr_assert(strstr(msg, "outside (0, 1]"), "%s", msg);
    o.top = 1.01;
    run_ability(acts, dbp, &o, NL_EINVAL, msg);
    cr_assert(strstr(msg, "outside (0, 1]"), "%s", msg);
    o.top = 1;
    run_ability(acts, dbp, &o, NL_OK, NULL); /* 1 is allowed: every neuron; from ffn_act (no mean_abs) */
    o.top = 0.05;
    run_ability(tmp_path("missing.h5"), dbp, &o, NL_EIO, msg);
    cr_assert(strstr(msg, "missing.h5"), "%s", msg);
    /* one label only: nothing to tell it from */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.model = "x", .n_layers = 1, .d_model = 2, .d_ff = 2, .ffn_kind = "gated", .pooled = 1, .no_acts = 1};
    nl_h5_writer *w;
    const char *p1 = tmp_path("one.h5");
    cr_assert_eq(nl_h5_writer_create(&ctx, p1, &m, &w), NL_OK, "%s", ctx.msg);
    for (int d = 0; d < 3; d++) {
        float v[2] = {(float)d, 1};
        int32_t id = d;
        nl_h5_writer_begin_doc(w, &ctx, d == 2 ? "" : "code", -1);
        nl_h5_writer_append_tokens(w, &ctx, &id, 1);
        nl_h5_writer_append_pooled(w, &ctx, 0, v);
        cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
    }
    float wn[2] = {1, 1};
    nl_h5_writer_put_w_out_norm(w, &ctx, 0, wn);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    run_ability(p1, dbp, &o, NL_EINVAL, msg);
    cr_assert(strstr(msg, "ability 'code' labels every scored document"), "%s", msg);
}


/* Non-finite inputs are named (file, layer, document, neuron) instead of reaching the database
 * as NULLs ("NOT NULL constraint failed"): NaN in the pooled values, in ffn_act, in w_out_norm. */
Test(ability, non_finite_values_are_named) {
    const char *dbp = tmp_path("nf.db");
    char msg[1024], want[512];
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    g_nan_doc = 4; /* "prose", a scored document */
    const char *pooled = tmp_path("nan_pooled.h5"), *acts = tmp_path("nan_acts.h5");
    write_acts(pooled, 1, NULL);
    write_acts(acts, 0, NULL);
    g_nan_doc = -1;
    int64_t run = run_ability(pooled, dbp, &o, NL_EFORMAT, msg);
    /* the reader checks pooled values as it reads them (h5store.h) */
    snprintf(want, sizeof want, "'%s': layer 1 mean_abs of document 4 holds a non-finite value", pooled);
    cr_assert_str_eq(msg, want);
    run_ability(acts, dbp, &o, NL_EFORMAT, msg);
    snprintf(want, sizeof want, "'%s': layer 1 holds non-finite activations (document 4, neuron 2)", acts);
    cr_assert_str_eq(msg, want);
    /* the runs are marked failed with that message and keep no rows */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    sqlite3 *h = nl_results_db(db);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM runs WHERE status = 'failed' AND message LIKE '%%non-finite%%') * 10 +"
             " (SELECT count(*) FROM ability_score) + (SELECT count(*) FROM ability_run) + (SELECT count(*) FROM runs WHERE id = %lld"
             " AND status = 'failed')",
             (long long)run);
    cr_assert_eq((int)db_real(h, sql), 21, "runs not failed with the message, or rows kept");
    nl_results_close(db);
    /* a NaN w_out_norm (every norm NaN here) */
    float nan_scale = NAN;
    const char *wn = tmp_path("nan_norm.h5");
    write_acts(wn, 1, &nan_scale);
    run_ability(wn, tmp_path("nf2.db"), &o, NL_EFORMAT, msg);
    cr_assert(strstr(msg, wn) && strstr(msg, "w_out_norm") && !strstr(msg, "NOT NULL"), "%s", msg);
    /* the same file without the NaN scores as before */
    write_acts(acts, 0, NULL);
    run_ability(acts, tmp_path("ok.db"), &o, NL_OK, NULL);
}

/* ---------------------------------------------------------------- the held-out split */

Test(ability, split_holds_out_a_seeded_part_of_each_label) {
    const char *acts = tmp_path("acts.h5"), *dbp = tmp_path("r.db");
    write_acts(acts, 1, NULL);
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    o.split = 0.5, o.seed = 5;
    const int64_t run = run_ability(acts, dbp, &o, NL_OK, NULL);
    /* the rule, brute force: per label, documents by (split key, index); the first n_sel select */
    int8_t want[D_];
    int held = 0;
    for (int d = 0; d < D_; d++) want[d] = LABELS[d][0] ? 0 : -1;
    for (int a = 0; a < 3; a++) {
        int docs[D_], n = 0;
        for (int d = 0; d < D_; d++)
            if (!strcmp(LABELS[d], ABIL[a])) docs[n++] = d;
        for (int i = 0; i < n; i++) { /* selection sort by key */
            int b = i;
            for (int j = i + 1; j < n; j++)
                if (nl_ability_split_key(5, docs[j]) < nl_ability_split_key(5, docs[b])) b = j;
            int t = docs[i];
            docs[i] = docs[b], docs[b] = t;
        }
        const int sel = nl_ability_split_count(0.5, n);
        cr_assert_eq(sel, n == 3 ? 2 : n / 2);
        for (int i = sel; i < n; i++) want[docs[i]] = 1, held++;
    }
    cr_assert_eq(held, 5, "code 4 → 2, math 4 → 2, prose 3 → 1 held out");
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    char sql[512];
    for (int d = 0; d < D_; d++) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM ability_docs WHERE run_id = %lld AND doc = %d AND label = '%s' AND half = '%s'",
                 (long long)run, d, LABELS[d], want[d] < 0 ? "none" : want[d] ? "heldout" : "select");
        cr_assert_eq(db_real(h, sql), 1, "%s", sql);
    }
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM runs WHERE id = %lld AND params LIKE '%%\"docs\":6,\"file_complete\":1,\"split\":0.5,\"heldout_docs\":5}'",
             (long long)run);
    cr_assert_eq(db_real(h, sql), 1, "params");
    /* scores and margins: from the selection documents only */
    snprintf(sql, sizeof sql, "SELECT ability, layer, neuron, score, margin FROM ability_score WHERE run_id = %lld", (long long)run);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *ab = (const char *)sqlite3_column_text(q, 0);
        const int a = !strcmp(ab, "code") ? 0 : !strcmp(ab, "math") ? 1 : 2, l = sqlite3_column_int(q, 1),
                  i = sqlite3_column_int(q, 2);
        float v[D_];
        uint8_t y[D_];
        int n = 0;
        double sp = 0, sn = 0;
        int np = 0;
        for (int d = 0; d < D_; d++)
            if (want[d] == 0) {
                v[n] = g_pool[d][l][i], y[n] = !strcmp(LABELS[d], ABIL[a]);
                if (y[n]) sp += v[n], np++;
                else sn += v[n];
                n++;
            }
        cr_assert_eq(n, 6);
        cr_assert(fabs(sqlite3_column_double(q, 3) - brute_ap(v, y, n)) < 1e-6, "%s l%d n%d", ab, l, i);
        const double m = sp / np - sn / (n - np);
        cr_assert(fabs(sqlite3_column_double(q, 4) - m) < 1e-5 * (1 + fabs(m)), "margin %s l%d n%d", ab, l, i);
        rows++;
    }
    sqlite3_finalize(q);
    cr_assert_eq(rows, 3 * L_ * F_);
    sqlite3_close(h);
    /* the loaded sets carry the halves */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK);
    nl_ability_sets s;
    cr_assert_eq(nl_ability_sets_load(&ctx, db, run, 0, &s), NL_OK, "%s", ctx.msg);
    cr_assert_eq(s.n_docs, D_);
    cr_assert_eq(s.n_heldout, 5);
    cr_assert_eq(s.seed, 5);
    for (int d = 0; d < D_; d++) cr_assert(s.doc_half[d] == want[d] && !strcmp(s.doc_label[d], LABELS[d]));
    nl_ability_sets_release(&s);
    /* without a split every labelled document is selected */
    nl_ability_opts_init(&o);
    const int64_t r2 = run_ability(acts, dbp, &o, NL_OK, NULL);
    cr_assert_eq(nl_ability_sets_load(&ctx, db, r2, 0, &s), NL_OK, "%s", ctx.msg);
    cr_assert_eq(s.n_heldout, 0);
    for (int d = 0; d < D_; d++) cr_assert_eq(s.doc_half[d], LABELS[d][0] ? 0 : -1);
    nl_ability_sets_release(&s);
    nl_results_close(db);
    /* bad fractions */
    char msg[512];
    o.split = 1.0;
    cr_assert_eq(run_ability(acts, dbp, &o, NL_EINVAL, msg), -1);
    cr_assert_str_eq(msg, "split fraction 1 is outside (0, 1)");
    cr_assert_eq(nl_ability_split_count(0.5, 2), 1);
    cr_assert_eq(nl_ability_split_count(0.01, 10), 1, "at least one selected");
    cr_assert_eq(nl_ability_split_count(0.99, 10), 9, "at least one held out");
}
