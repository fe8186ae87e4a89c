/* test_moe_sweep.c — analyses/moe_sweep.h:
 *   - whole-model FLOPs per token equal 2 × the multiply-adds counted in plain loops over a tiny
 *     config (gated and plain FFN, grouped-query attention, MoE layers given per layer);
 *   - the mean attended keys of a dataset, by hand for the sliding windows of perplexity.h;
 *   - nl_pca2 against numpy (tests/fixtures/pca/pca.json, tests/reference/gen_pca_fixture.py),
 *     both the covariance and the Gram path;
 *   - usage counting: fractions over experts sum to K; the tables of a hand case: token_frac,
 *     AP rows equal nl_ability_ap of the documents' usage (and a hand value), PCA rows;
 *   - fewer than two labels is refused.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/ability.h"
#include "analyses/moe_sweep.h"
#include "neuronlab/moe.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_moe_sweep")

/* ---- FLOPs -------------------------------------------------------------------------------- */

/* Multiply-adds of one token through the model, counted one by one as a naive forward does. */
static double count_macs(const nl_config *c, const double *ffn_neurons, int keys) {
    double macs = 0;
    const int D = c->d_model, H = c->n_heads, Hk = c->n_kv_heads, Dh = c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        for (int o = 0; o < H * Dh; o++)
            for (int i = 0; i < D; i++) macs++; /* q */
        for (int w = 0; w < 2; w++)
            for (int o = 0; o < Hk * Dh; o++)
                for (int i = 0; i < D; i++) macs++; /* k, v */
        for (int h = 0; h < H; h++)
            for (int p = 0; p < keys; p++)
                for (int j = 0; j < Dh; j++) macs += 2; /* q·k_p and p_p·v_p */
        for (int o = 0; o < D; o++)
            for (int i = 0; i < H * Dh; i++) macs++; /* o */
        const int F = ffn_neurons ? (int)ffn_neurons[l] : c->d_ff;
        for (int n = 0; n < F; n++)
            for (int i = 0; i < D; i++) macs += c->ffn_gated ? 3 : 2; /* gate, up, down (or in, down) */
    }
    for (int v = 0; v < c->vocab_size; v++)
        for (int i = 0; i < D; i++) macs++; /* LM head */
    return macs;
}

Test(moe_sweep, model_flops_count) {
    nl_config c = {0};
    c.n_layers = 3, c.d_model = 8, c.d_ff = 12, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 2, c.vocab_size = 11;
    for (int gated = 0; gated < 2; gated++) {
        c.ffn_gated = gated;
        for (int keys = 1; keys <= 5; keys += 2) {
            const double want = 2.0 * count_macs(&c, NULL, keys);
            cr_assert_eq(nl_model_flops_token(&c, NULL, keys), want, "gated %d keys %d: %g vs %g", gated, keys,
                         nl_model_flops_token(&c, NULL, keys), want);
        }
        /* an MoE layer computing 6 of its 12 neurons (E 4, K 2, no router, no fill) */
        double neurons[3] = {12, 6, 12}, ffn[3];
        for (int l = 0; l < 3; l++) ffn[l] = (gated ? 6.0 : 4.0) * c.d_model * neurons[l];
        ffn[1] = nl_moe_flops_layer(&c, 4, 0, 2, NL_MOE_ROUTER_SIM, NL_MOE_FILL_ZERO) - 2.0 * c.d_model * 4;
        cr_assert_eq(nl_model_flops_token(&c, ffn, 3), 2.0 * count_macs(&c, neurons, 3));
    }
}

Test(moe_sweep, mean_keys_by_hand) {
    int32_t t7[7] = {0}, t3[3] = {0};
    nl_doc docs[2] = {{.tokens = t7, .n_tokens = 7}, {.tokens = t3, .n_tokens = 3}};
    nl_dataset ds = {.docs = docs, .n_docs = 2, .n_tokens = 10};
    /* C 4, S 2: the 7-token document sits at 0,1,2,3 then 2,3 (window 1) then 2 (window 2);
     * keys = position + 1: 1+2+3+4+3+4+3 = 20; the 3-token one 1+2+3 = 6 */
    cr_assert_float_eq(nl_moe_sweep_mean_keys(&ds, 4, 2), 26.0 / 10, 1e-12);
    cr_assert_float_eq(nl_moe_sweep_mean_keys(&ds, 4, 0), 26.0 / 10, 1e-12); /* S ≤ 0: C/2 */
    cr_assert_float_eq(nl_moe_sweep_mean_keys(&ds, 16, 8), (28.0 + 6.0) / 10, 1e-12);
}

/* ---- PCA ---------------------------------------------------------------------------------- */

Test(moe_sweep, pca_matches_numpy) {
    json_error_t err;
    json_t *root = json_load_file("tests/fixtures/pca/pca.json", 0, &err);
    cr_assert_not_null(root, "tests/fixtures/pca/pca.json: %s", err.text);
    json_t *cases = json_object_get(root, "cases");
    cr_assert(json_array_size(cases) >= 3);
    nl_ctx ctx = {0};
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *cs = json_array_get(cases, ci);
        const int n = (int)json_integer_value(json_object_get(cs, "n")), p = (int)json_integer_value(json_object_get(cs, "p"));
        double *X = malloc((size_t)n * p * sizeof *X), *S = malloc((size_t)n * 2 * sizeof *S), var[2];
        for (int i = 0; i < n * p; i++) X[i] = json_real_value(json_array_get(json_object_get(cs, "X"), (size_t)i));
        cr_assert_eq(nl_pca2(&ctx, X, n, p, S, var), NL_OK, "%s", ctx.msg);
        double scale = 0;
        for (int i = 0; i < n * 2; i++) scale = fmax(scale, fabs(json_real_value(json_array_get(json_object_get(cs, "scores"), (size_t)i))));
        for (int i = 0; i < n * 2; i++) {
            const double want = json_real_value(json_array_get(json_object_get(cs, "scores"), (size_t)i));
            cr_assert(fabs(S[i] - want) <= 1e-9 * scale, "case %zu score %d: %.12g vs numpy %.12g", ci, i, S[i], want);
        }
        for (int k = 0; k < 2; k++) {
            const double want = json_real_value(json_array_get(json_object_get(cs, "variance"), (size_t)k));
            cr_assert(fabs(var[k] - want) <= 1e-9 * fabs(want), "case %zu variance %d: %.12g vs %.12g", ci, k, var[k], want);
        }
        free(X), free(S);
    }
    json_decref(root);
    double one[3] = {1, 2, 3}, s[2];
    cr_assert_eq(nl_pca2(&ctx, one, 1, 3, s, NULL), NL_EINVAL); /* one row */
}

/* ---- usage -------------------------------------------------------------------------------- */

Test(moe_sweep, usage_fractions_sum_to_k) {
    nl_ctx ctx = {0};
    nl_moe_usage u;
    int layers[2] = {1, 3};
    cr_assert_eq(nl_moe_usage_init(&ctx, &u, layers, 2, 5, 2, 1), NL_OK);
    int32_t sel[4 * 2] = {0, 1, 1, 4, 2, 3, 0, 4}; /* 4 tokens, K 2 */
    nl_moe_usage_add(&u, 0, 0, sel, 4, 1);        /* rows 1..3 only (row 0 was context) */
    nl_moe_usage_add(&u, 0, 1, sel, 4, 1);
    nl_moe_usage_add_tokens(&u, 0, 3);
    for (int li = 0; li < 2; li++) {
        int64_t s = 0;
        for (int e = 0; e < 5; e++) s += u.count[(size_t)li * 5 + e];
        cr_assert_eq(s, 2 * 3, "layer %d: Σ counts %lld, want K·tokens", li, (long long)s);
    }
    cr_assert_eq(u.count[0], 1); /* expert 0 only in row 3 */
    cr_assert_eq(u.count[4], 2); /* expert 4 in rows 1 and 3 */
    nl_moe_usage_release(&u);
}

static double q1(sqlite3 *h, const char *sql) {
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW, "%s", sql);
    const double v = sqlite3_column_double(q, 0);
    sqlite3_finalize(q);
    return v;
}

Test(moe_sweep, tables_hand_case, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    nl_ctx ctx = {0};
    /* 5 documents: a, a, b, b and one unlabelled; one MoE layer (model layer 2), E 2, K 1,
     * 10 tokens each; expert 0 takes 8, 6, 2, 4 (and 5) of them */
    int32_t tok[10] = {0};
    char la[] = "a", lb[] = "b", ln[] = "";
    char *labels[3] = {la, lb, ln};
    nl_doc docs[5] = {{tok, 10, 10, 1, la, 1}, {tok, 10, 10, 1, la, 2}, {tok, 10, 10, 1, lb, 3}, {tok, 10, 10, 1, lb, 4},
                      {tok, 10, 10, 1, ln, 5}};
    nl_dataset ds = {.docs = docs, .n_docs = 5, .n_tokens = 50, .labels = labels, .n_labels = 3};
    snprintf(ds.path, sizeof ds.path, "hand.jsonl");
    nl_moe_usage u;
    int layer = 2;
    cr_assert_eq(nl_moe_usage_init(&ctx, &u, &layer, 1, 2, 1, 5), NL_OK);
    const int e0[5] = {8, 6, 2, 4, 5};
    for (int d = 0; d < 5; d++) {
        int32_t sel[10];
        for (int t = 0; t < 10; t++) sel[t] = t >= e0[d];
        nl_moe_usage_add(&u, d, 0, sel, 10, 0);
        nl_moe_usage_add_tokens(&u, d, 10);
    }
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("r.db"), 0, &db), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_moe_sweep_create_tables(&ctx, db), NL_OK, "%s", ctx.msg);
    int64_t run;
    nl_run_info info = {.kind = "moe-usage", .model = "m", .dataset = "hand.jsonl", .params = "{}"};
    cr_assert_eq(nl_results_begin_run(&ctx, db, &info, &run), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_moe_usage_write(&ctx, db, run, &u, &ds, 0), NL_OK, "%s", ctx.msg);
    sqlite3 *h = nl_results_db(db);
    cr_assert_float_eq(q1(h, "SELECT token_frac FROM expert_usage WHERE layer = 2 AND expert = 0 AND label = 'a'"), 0.7, 1e-12);
    cr_assert_float_eq(q1(h, "SELECT token_frac FROM expert_usage WHERE layer = 2 AND expert = 1 AND label = 'b'"), 0.7, 1e-12);
    cr_assert_float_eq(q1(h, "SELECT MAX(ABS(s - 1)) FROM (SELECT SUM(token_frac) AS s FROM expert_usage GROUP BY layer, label)"), 0, 1e-12);
    /* AP by hand: expert 0's usage .8 .6 .2 .4 ranks the a documents first (AP 1); the b documents
     * sit at ranks 3 and 4: (1/3 + 2/4) / 2 = 5/12 */
    cr_assert_float_eq(q1(h, "SELECT ap FROM expert_ap WHERE expert = 0 AND label = 'a'"), 1.0, 1e-12);
    cr_assert_float_eq(q1(h, "SELECT ap FROM expert_ap WHERE expert = 0 AND label = 'b'"), 5.0 / 12, 1e-12);
    cr_assert_float_eq(q1(h, "SELECT baseline FROM expert_ap WHERE expert = 0 AND label = 'b'"), 0.5, 1e-12);
    float v[4] = {0.8f, 0.6f, 0.2f, 0.4f};
    uint8_t y[4] = {0, 0, 1, 1};
    cr_assert_float_eq(q1(h, "SELECT ap FROM expert_ap WHERE expert = 0 AND label = 'b'"), nl_ability_ap(v, y, 4), 1e-12);
    cr_assert_eq(q1(h, "SELECT COUNT(*) FROM expert_usage_pca"), 4);       /* labelled documents only */
    cr_assert_eq(q1(h, "SELECT COUNT(*) FROM expert_usage_doc"), 4 * 2);
    cr_assert_eq(q1(h, "SELECT COUNT(*) FROM expert_ap WHERE ap_shuffled IS NOT NULL"), 2 * 2);
    /* PC1 separates a from b (usage is one number per document here) */
    cr_assert(q1(h, "SELECT MIN(pc1) FROM expert_usage_pca WHERE label = 'a'") * q1(h, "SELECT MAX(pc1) FROM expert_usage_pca WHERE label = 'b'") < 0);
    cr_assert_eq(nl_results_finish_run(&ctx, db, run, NL_OK, NULL), NL_OK);
    /* one label only: refused */
    ds.n_docs = 2;
    labels[1] = ln, ds.n_labels = 2;
    cr_assert_eq(nl_moe_usage_check_labels(&ctx, &ds), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "at least two labels"), "%s", ctx.msg);
    nl_results_close(db);
    nl_moe_usage_release(&u);
}
