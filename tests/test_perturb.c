/* test_perturb.c — masking perturbation (analyses/perturb.h):
 *   - the mask intervener on hand-made rows: the k smallest by value and by norm, ties by the
 *     lower index, ratio 0 masks nothing, random masks exactly k distinct neurons, same seed →
 *     same mask, batch size and thread count never change a mask;
 *   - a brute-force full sort agrees with the quickselect on random and adversarial rows;
 *   - stories260K (../shared): every masked perplexity of expected.json within 0.5% (prints the
 *     worst relative error per metric), ratio 0 bit for bit the plain perplexity;
 *   - nl_perturb_run on the fixture model writes one transaction per setting, keeps finished
 *     settings when interrupted.
 */
#include <jansson.h>
#include <omp.h>
#include <sqlite3.h>
#include <unistd.h>

#include "analyses/perturb.h"
#include "neuronlab/recorder.h"
#include "testutil.h"

#define STORIES NL_SHARED "/models/stories260K"

/* Applies mask to rows x (T, F) of layer l through the intervener itself. */
static void apply(nl_mask *k, int l, float *x, int T, int F) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_hook_info info = {NL_HOOK_FFN_ACT, l, T, F, 0, NULL, NULL, 0};
    cr_assert_eq(nl_mask_hook(k, &ctx, &info, x), NL_OK, "%s", ctx.msg);
}

static nl_mask *make(int L, int F, const float *norms, nl_mask_metric m, double ratio, uint64_t seed) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_mask *k;
    cr_assert_eq(nl_mask_create(&ctx, L, F, norms, m, ratio, seed, &k), NL_OK, "%s", ctx.msg);
    return k;
}

/* Which of the F entries are zero after masking, as a bit string "01…". */
static void zeros(const float *x, int F, char *out) {
    for (int i = 0; i < F; i++) out[i] = x[i] == 0.0f ? '1' : '0';
    out[F] = 0;
}

Test(perturb, value_masks_the_k_smallest_ties_by_lower_index) {
    /* |x| = .5 .1 .3 .1 .5 0 2 .1 — the three .1 tie (one of them negative) */
    float x[8] = {0.5f, -0.1f, 0.3f, 0.1f, -0.5f, 0.0f, 2.0f, 0.1f};
    char z[9];
    nl_mask *k = make(1, 8, NULL, NL_MASK_VALUE, 3.0 / 8, 0);
    cr_assert_eq(nl_mask_k(k), 3);
    apply(k, 0, x, 1, 8);
    zeros(x, 8, z);
    cr_assert_str_eq(z, "01010100", "masked %s: want 0 (index 5) and the .1 at indices 1, 3 (not 7)", z);
    cr_assert_eq(x[7], 0.1f);
    cr_assert_eq(x[0], 0.5f);
    /* ratio 0.5 → 4: now index 7 too; the two .5 tie at the top and stay */
    float y[8] = {0.5f, -0.1f, 0.3f, 0.1f, -0.5f, 0.0f, 2.0f, 0.1f};
    nl_mask_set(NULL, k, NL_MASK_VALUE, 0.5);
    apply(k, 0, y, 1, 8);
    zeros(y, 8, z);
    cr_assert_str_eq(z, "01010101", "%s", z);
    /* all equal: the lowest indices go first */
    float e[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    nl_mask_set(NULL, k, NL_MASK_VALUE, 0.6); /* floor(4.8) = 4 */
    apply(k, 0, e, 1, 8);
    zeros(e, 8, z);
    cr_assert_str_eq(z, "11110000", "%s", z);
    nl_mask_destroy(k);
}

Test(perturb, norm_weighs_by_w_out_column_norms_per_layer) {
    /* layer 0 norms flip the order of |a|; layer 1 norms are all equal (= value order) */
    float norms[2 * 4] = {4, 3, 2, 1, 1, 1, 1, 1};
    float x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 4};
    char z[5];
    nl_mask *k = make(2, 4, norms, NL_MASK_NORM, 0.5, 0);
    apply(k, 0, x, 1, 4); /* indicators 4 6 6 4: ties 0/3 and 1/2 → 0 and 3 */
    zeros(x, 4, z);
    cr_assert_str_eq(z, "1001", "%s", z);
    apply(k, 1, y, 1, 4); /* indicators 1 2 3 4 */
    zeros(y, 4, z);
    cr_assert_str_eq(z, "1100", "%s", z);
    nl_mask_destroy(k);
    /* the norm metric needs norms */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_mask_create(&ctx, 2, 4, NULL, NL_MASK_NORM, 0.5, 0, &k), NL_EINVAL);
    cr_assert_null(k);
}

Test(perturb, ratio_zero_masks_nothing_and_bad_ratios_are_refused) {
    float x[5] = {0, -1e-30f, 3, NAN, -2}, want[5];
    memcpy(want, x, sizeof x);
    for (int m = 0; m < NL_MASK_N_METRICS; m++) {
        float norms[5] = {1, 1, 1, 1, 1};
        nl_mask *k = make(1, 5, norms, (nl_mask_metric)m, 0.0, 7);
        cr_assert_eq(nl_mask_k(k), 0);
        apply(k, 0, x, 1, 5);
        cr_assert_eq(memcmp(x, want, sizeof x), 0, "ratio 0 changed the row (%s)", nl_mask_metric_name(m));
        nl_mask_destroy(k);
    }
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    double bad[4] = {1.0, -0.1, NAN, 1.5};
    for (int i = 0; i < 4; i++) {
        nl_mask *k;
        cr_assert_eq(nl_mask_create(&ctx, 1, 5, NULL, NL_MASK_VALUE, bad[i], 0, &k), NL_EINVAL);
        cr_assert(strstr(ctx.msg, "outside [0, 1)"), "%s", ctx.msg);
    }
    cr_assert_eq(nl_mask_count(0.29, 100), 29);
    cr_assert_eq(nl_mask_count(0.7, 172), 120);
    cr_assert_eq(nl_mask_count(0.9, 172), 154);
    cr_assert_eq(nl_mask_count(0.99, 10), 9);
    cr_assert_eq(nl_mask_metric_parse("norm"), NL_MASK_NORM);
    cr_assert_eq(nl_mask_metric_parse("Value"), -1);
}

Test(perturb, random_masks_exactly_k_distinct_seeded_nested) {
    enum { T = 64, F = 97 };
    float *a = malloc(T * F * 4), *b = malloc(T * F * 4), *c = malloc(T * F * 4);
    for (int i = 0; i < T * F; i++) a[i] = 1.0f + (float)(i % 13);
    memcpy(b, a, T * F * 4);
    memcpy(c, a, T * F * 4);
    nl_mask *k1 = make(2, F, NULL, NL_MASK_RANDOM, 0.3, 42), *k2 = make(2, F, NULL, NL_MASK_RANDOM, 0.3, 42),
            *k3 = make(2, F, NULL, NL_MASK_RANDOM, 0.3, 43);
    const int k = nl_mask_k(k1);
    cr_assert_eq(k, 29);
    apply(k1, 1, a, T, F);
    for (int t = 0; t < T; t++) apply(k2, 1, b + t * F, 1, F); /* one row at a time: same stream */
    apply(k3, 1, c, T, F);
    cr_assert_eq(memcmp(a, b, T * F * 4), 0, "same seed, other batching: different mask");
    cr_assert_neq(memcmp(a, c, T * F * 4), 0, "another seed gave the same mask");
    int differs = 0;
    for (int t = 0; t < T; t++) {
        int n0 = 0;
        for (int i = 0; i < F; i++) n0 += a[t * F + i] == 0.0f;
        cr_assert_eq(n0, k, "row %d: %d neurons masked, want %d", t, n0, k);
        if (t && memcmp(a + t * F, a + (t - 1) * F, F * 4)) differs = 1;
    }
    cr_assert(differs, "every row got the same random mask");
    /* neurons are hit about uniformly: each neuron is masked in ~T·k/F = 19 of 64 rows */
    for (int i = 0; i < F; i++) {
        int hits = 0;
        for (int t = 0; t < T; t++) hits += a[t * F + i] == 0.0f;
        cr_assert(hits >= 3 && hits <= 40, "neuron %d masked in %d of %d rows", i, hits, T);
    }
    /* nested: the same seed at ratio 0.6 masks a superset on every row; reset restarts */
    float *d = malloc(T * F * 4);
    for (int i = 0; i < T * F; i++) d[i] = 1.0f + (float)(i % 13);
    nl_mask_set(NULL, k2, NL_MASK_RANDOM, 0.6);
    apply(k2, 1, d, T, F);
    for (int i = 0; i < T * F; i++) cr_assert(a[i] != 0.0f || d[i] == 0.0f, "not nested at %d", i);
    /* another layer gets another mask */
    for (int i = 0; i < T * F; i++) b[i] = 1.0f + (float)(i % 13);
    nl_mask_reset(k1);
    apply(k1, 0, b, T, F);
    cr_assert_neq(memcmp(a, b, T * F * 4), 0, "layers 0 and 1 got the same mask");
    nl_mask_destroy(k1);
    nl_mask_destroy(k2);
    nl_mask_destroy(k3);
    free(a), free(b), free(c), free(d);
}

/* Reference: a full sort of (indicator, index) pairs, masking the first k. */
typedef struct { float v; int i; } pair;
static int cmp_pair(const void *x, const void *y) {
    const pair *a = x, *b = y;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    return a->i - b->i;
}
static void mask_ref(float *x, int F, int k, const float *norm) {
    pair *p = malloc(F * sizeof *p);
    for (int i = 0; i < F; i++) p[i] = (pair){fabsf(x[i]) * (norm ? norm[i] : 1.0f), i};
    qsort(p, F, sizeof *p, cmp_pair);
    for (int j = 0; j < k; j++) x[p[j].i] = 0.0f;
    free(p);
}

Test(perturb, quickselect_equals_a_full_sort) {
    const int Fs[4] = {1, 7, 172, 3001};
    unsigned seed = 1;
    for (int fi = 0; fi < 4; fi++) {
        const int F = Fs[fi], T = 6;
        float *norm = malloc(F * 4), *x = malloc(T * F * 4), *got = malloc(T * F * 4), *want = malloc(T * F * 4);
        for (int i = 0; i < F; i++) norm[i] = (float)(rand_r(&seed) % 1000) / 100.0f + 0.01f;
        /* rows: random, many ties (few distinct values), sorted, reverse sorted, all equal, sign pattern */
        for (int t = 0; t < T; t++)
            for (int i = 0; i < F; i++) {
                float v;
                switch (t) {
                case 0: v = (float)rand_r(&seed) / RAND_MAX * 2 - 1; break;
                case 1: v = (float)(rand_r(&seed) % 5) - 2; break;
                case 2: v = (float)i; break;
                case 3: v = (float)(F - i); break;
                case 4: v = 0.25f; break;
                default: v = (i % 2 ? -1.0f : 1.0f) * (float)(i % 17); break;
                }
                x[t * F + i] = v;
            }
        for (int m = 0; m < 2; m++)
            for (double r = 0.0; r < 1.0; r += 0.05) {
                memcpy(got, x, T * F * 4);
                memcpy(want, x, T * F * 4);
                nl_mask *k = make(1, F, norm, (nl_mask_metric)m, r, 0);
                apply(k, 0, got, T, F);
                for (int t = 0; t < T; t++) mask_ref(want + t * F, F, nl_mask_k(k), m == NL_MASK_NORM ? norm : NULL);
                cr_assert_eq(memcmp(got, want, T * F * 4), 0, "F %d metric %s ratio %.2f: quickselect differs from the sort", F,
                             nl_mask_metric_name(m), r);
                nl_mask_destroy(k);
            }
        free(norm), free(x), free(got), free(want);
    }
}

Test(perturb, masks_do_not_depend_on_the_thread_count) {
    enum { T = 200, F = 1000, L = 3 }; /* T·F above the parallel threshold */
    float *norm = malloc(L * F * 4), *x = malloc(T * F * 4), *a = malloc(T * F * 4), *b = malloc(T * F * 4);
    unsigned seed = 5;
    for (int i = 0; i < L * F; i++) norm[i] = (float)rand_r(&seed) / RAND_MAX + 0.1f;
    for (int i = 0; i < T * F; i++) x[i] = (float)rand_r(&seed) / RAND_MAX - 0.5f;
    const int saved = omp_get_max_threads();
    for (int m = 0; m < NL_MASK_N_METRICS; m++) {
        for (int run = 0; run < 2; run++) {
            omp_set_num_threads(run == 0 ? 1 : 4);
            float *o = run == 0 ? a : b;
            memcpy(o, x, T * F * 4);
            nl_mask *k = make(L, F, norm, (nl_mask_metric)m, 0.7, 9);
            apply(k, 2, o, T, F);
            nl_mask_destroy(k);
        }
        cr_assert_eq(memcmp(a, b, T * F * 4), 0, "%s: 1 and 4 threads masked differently", nl_mask_metric_name(m));
    }
    omp_set_num_threads(saved);
    free(norm), free(x), free(a), free(b);
}

/* ---- stories260K: llama2.c's masked perplexities ------------------------------------ */

Test(perturb, stories260k_matches_expected_masked_perplexities) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    json_t *e = json_load_file(STORIES "/expected.json", 0, NULL);
    cr_assert(e, "cannot read expected.json");
    json_t *masked = json_object_get(e, "masked_ppl");
    const char *mname[2] = {"value", "norm"};
    nl_mask_metric metrics[2] = {NL_MASK_VALUE, NL_MASK_NORM};
    double ratios[16];
    double want[2][16];
    int nr = 0;
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(masked, "value"), key, val) {
        cr_assert_lt(nr, 16);
        ratios[nr] = atof(key);
        for (int mi = 0; mi < 2; mi++) {
            json_t *w = json_object_get(json_object_get(masked, mname[mi]), key);
            cr_assert(w, "expected.json has no %s/%s", mname[mi], key);
            want[mi][nr] = json_number_value(w);
        }
        nr++;
    }
    cr_assert_geq(nr, 6, "expected.json lists %d ratios", nr);

    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 512, 512, &f), NL_OK, "%s", ctx.msg);
    nl_ppl_result plain;
    cr_assert_eq(nl_ppl_run(&ctx, f, ds, 0, NULL, &plain), NL_OK, "%s", ctx.msg);
    nl_perturb_opts opt = {.metrics = metrics, .n_metrics = 2, .ratios = ratios, .n_ratios = nr};
    nl_perturb_result res;
    cr_assert_eq(nl_perturb_run(&ctx, &opt, f, ds, NULL, NULL, &res), NL_OK, "%s", ctx.msg);
    const nl_perturb_cell *cells = res.cells;
    cr_assert_eq(res.run_id, -1, "no database, no run");
    cr_assert_eq(res.n_done, 2 * nr);
    cr_assert_eq(nl_forward_hooks(f)->n, 0, "the intervener was left on the forward pass");
    for (int mi = 0; mi < 2; mi++) {
        double worst = 0, worst_r = 0;
        for (int r = 0; r < nr; r++) {
            const nl_perturb_cell *c = &cells[mi * nr + r];
            cr_assert(c->done);
            cr_assert_eq(c->masked, (int)floor(ratios[r] * 172 + 1e-9));
            cr_assert_eq(c->ppl.total.n, 1525);
            double got = nl_nll_ppl(c->ppl.total), rel = fabs(got - want[mi][r]) / want[mi][r];
            cr_assert(rel < 5e-3, "%s ratio %.1f: ppl %.4f, expected %.4f (relative error %.2e)", mname[mi], ratios[r], got,
                      want[mi][r], rel);
            if (rel >= worst) worst = rel, worst_r = ratios[r];
            if (ratios[r] == 0.0)
                cr_assert(c->ppl.total.nll == plain.total.nll && c->ppl.total.n == plain.total.n,
                          "ratio 0 is not bit for bit the plain perplexity (%.17g vs %.17g)", c->ppl.total.nll, plain.total.nll);
        }
        fprintf(stderr, "perturb stories260K: %s metric: worst relative error %.2e (ratio %.1f) over %d ratios\n", mname[mi],
                worst, worst_r, nr);
    }
    nl_perturb_result_release(&res);
    nl_ppl_result_release(&plain);
    /* the random control hurts more than masking the weakest neurons at the same ratio */
    nl_mask_metric rm[2] = {NL_MASK_VALUE, NL_MASK_RANDOM};
    double r5[1] = {0.5};
    nl_perturb_opts o2 = {.metrics = rm, .n_metrics = 2, .ratios = r5, .n_ratios = 1};
    cr_assert_eq(nl_perturb_run(&ctx, &o2, f, ds, NULL, NULL, &res), NL_OK, "%s", ctx.msg);
    cr_assert_gt(nl_nll_ppl(res.cells[1].ppl.total), 1.5 * nl_nll_ppl(res.cells[0].ppl.total), "random %.3f vs value %.3f",
                 nl_nll_ppl(res.cells[1].ppl.total), nl_nll_ppl(res.cells[0].ppl.total));
    nl_perturb_result_release(&res);
    nl_forward_destroy(f);
    json_decref(e);
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

/* Random masks do not depend on the batch size either (ppl identical for batch 512 and 37). */
Test(perturb, stories260k_random_independent_of_batch) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    nl_mask_metric rm[1] = {NL_MASK_RANDOM};
    double r[1] = {0.5};
    nl_perturb_opts o = {.metrics = rm, .n_metrics = 1, .ratios = r, .n_ratios = 1, .seed = 3};
    double got[2];
    int batches[2] = {512, 37};
    for (int b = 0; b < 2; b++) {
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, batches[b], 512, &f), NL_OK);
        nl_perturb_result c;
        cr_assert_eq(nl_perturb_run(&ctx, &o, f, ds, NULL, NULL, &c), NL_OK, "%s", ctx.msg);
        got[b] = nl_nll_ppl(c.cells[0].ppl.total);
        nl_perturb_result_release(&c);
        nl_forward_destroy(f);
    }
    cr_assert(fabs(got[0] - got[1]) / got[0] < 1e-5, "batch 512: %.6f, batch 37: %.6f", got[0], got[1]);
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

/* ---- the results table on the in-repo fixture model ---------------------------------- */

static int64_t count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* An observer that raises the Ctrl-C flag after n calls. */
static nl_status interrupt_after(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    int *n = user;
    if (--*n == 0) nl_interrupted = 1;
    return NL_OK;
}

Test(perturb, writes_rows_per_setting_and_keeps_them_when_interrupted) {
    char dir[] = "/tmp/nl_perturb_XXXXXX", data[256], dbp[256];
    cr_assert(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    snprintf(dbp, sizeof dbp, "%s/r.db", dir);
    FILE *fp = fopen(data, "w");
    const char *labels[3] = {"code", "math", ""};
    unsigned seed = 2;
    for (int d = 0; d < 6; d++) {
        fprintf(fp, "{\"label\": \"%s\", \"tokens\": [1", labels[d % 3]);
        for (int t = 0; t < 40; t++) fprintf(fp, ", %u", 2 + rand_r(&seed) % 250);
        fprintf(fp, "]}\n");
    }
    fclose(fp);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, "tests/fixtures/hf/llama", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, data, NULL, 256, &ds), NL_OK, "%s", ctx.msg);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 16, 128, &f), NL_OK);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    nl_mask_metric ms[3] = {NL_MASK_VALUE, NL_MASK_NORM, NL_MASK_RANDOM};
    double rs[3] = {0, 0.5, 0.9};
    nl_perturb_opts opt;
    nl_perturb_opts_init(&opt);
    cr_assert_eq(opt.n_metrics, 3);
    cr_assert_eq(opt.n_ratios, 10);
    cr_assert(opt.ratios[9] == 0.9 && opt.metrics[2] == NL_MASK_RANDOM && opt.seed == 0 && opt.stride == 0);
    opt.ratios = rs, opt.n_ratios = 3, opt.metrics = ms, opt.model = "m";
    cr_assert_eq(nl_perturb_passes(&opt, 128), 7);
    nl_perturb_result res;
    cr_assert_eq(nl_perturb_run(&ctx, &opt, f, ds, db, NULL, &res), NL_OK, "%s", ctx.msg);
    const int64_t id1 = res.run_id;
    cr_assert_gt(id1, 0);
    sqlite3 *h = nl_results_db(db);
    char q[512];
    /* the run: params JSON text as the CLI always wrote it, ended 'complete' without a message */
    snprintf(q, sizeof q,
             "SELECT count(*) FROM runs WHERE id = %lld AND kind = 'perturb' AND model = 'm' AND dataset = '%s' AND status = "
             "'complete' AND message IS NULL AND params = '{\"metrics\":[\"value\",\"norm\",\"random\"],\"ratios\":[0,0.5,0.9],"
             "\"seed\":0,\"ctx\":128,\"stride\":64,\"batch\":16}'",
             (long long)id1, data);
    cr_assert_eq(count(h, q), 1, "%s", q);
    cr_assert_eq(count(h, "SELECT count(*) FROM perturb"), 9 * 3, "a row for '' and each of the 2 labels per setting");
    cr_assert_eq(count(h, "SELECT count(DISTINCT ppl) FROM perturb WHERE ratio = 0 AND label = ''"), 1);
    cr_assert_eq(count(h, "SELECT count(*) FROM perturb WHERE ratio = 0.9 AND masked = 115"), 9);
    cr_assert_eq(count(h, "SELECT sum(tokens) FROM perturb WHERE label <> '' AND metric = 'norm' AND ratio = 0.5"), 4 * 40);
    cr_assert_eq(count(h, "SELECT count(*) FROM sqlite_master WHERE name = 'perturb_run_id'"), 1);
    cr_assert_eq(res.n_cells, 9);
    cr_assert_eq(res.n_done, 9);
    for (int i = 0; i < 9; i++) cr_assert(res.cells[i].done);
    double want_code = nl_nll_ppl(res.cells[4].ppl.by_label[0]); /* norm 0.5, label code */
    snprintf(q, sizeof q, "SELECT count(*) FROM perturb WHERE metric='norm' AND ratio=0.5 AND label='code' AND abs(ppl - %.17g) < 1e-9",
             want_code);
    cr_assert_eq(count(h, q), 1);
    nl_perturb_result_release(&res);

    /* Interrupted inside the fourth masked pass: the unmasked pass and three settings stay. */
    int left = 4 * 6 * 3 * 2 + 1; /* 4 passes × 6 docs × 3 chunks (41 tokens / 16) × 2 layers, then 1 more */
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, interrupt_after, &left);
    nl_status st = nl_perturb_run(&ctx, &opt, f, ds, db, NULL, &res);
    nl_interrupted = 0;
    cr_assert_eq(st, NL_EINTR, "%s", ctx.msg);
    const int64_t id = res.run_id;
    cr_assert_eq(id, id1 + 1);
    cr_assert_eq(res.n_done, 3 + 3, "3 unmasked settings + 3 masked ones finished, got %d", res.n_done);
    snprintf(q, sizeof q, "SELECT count(*) FROM perturb WHERE run_id = %lld", (long long)id);
    cr_assert_eq(count(h, q), 6 * 3);
    snprintf(q, sizeof q, "SELECT count(*) FROM runs WHERE id = %lld AND status = 'interrupted' AND message = 'interrupted by the user'",
             (long long)id);
    cr_assert_eq(count(h, q), 1, "the run ends 'interrupted' with the default message");
    cr_assert_eq(count(h, "SELECT count(*) FROM perturb"), 27 + 18, "the first run's rows are untouched");
    cr_assert_eq(nl_forward_hooks(f)->n, 1, "only the test's observer is left");
    nl_perturb_result_release(&res);
    /* options out of range are refused before a run begins */
    double bad[1] = {1.0};
    opt.ratios = bad, opt.n_ratios = 1;
    cr_assert_eq(nl_perturb_run(&ctx, &opt, f, ds, db, NULL, &res), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "outside [0, 1)"), "%s", ctx.msg);
    cr_assert_eq(res.run_id, -1);
    cr_assert_eq(count(h, "SELECT count(*) FROM runs"), 2, "a refused run is not begun");
    nl_perturb_result_release(&res);
    nl_results_close(db);
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    unlink(data);
    unlink(dbp);
    rmdir(dir);
}

Test(perturb, a_layer_list_masks_only_those_layers) {
    enum { L = 3, F = 16, T = 4 };
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    for (int m = 0; m < 3; m++) { /* value, norm, random */
        float norms[L * F];
        for (int i = 0; i < L * F; i++) norms[i] = 1.0f + 0.01f * (float)i;
        nl_mask *all = make(L, F, norms, (nl_mask_metric)m, 0.5, 9), *some = make(L, F, norms, (nl_mask_metric)m, 0.5, 9);
        const int layers[2] = {2, 0};
        cr_assert_eq(nl_mask_set_layers(&ctx, some, layers, 2), NL_OK, "%s", ctx.msg);
        for (int rep = 0; rep < 2; rep++) /* twice: the random stream keeps its rows */
            for (int l = 0; l < L; l++) {
                float x[T * F], a[T * F], b[T * F];
                for (int i = 0; i < T * F; i++) x[i] = (float)((i * 37 + l * 11 + rep * 5) % 23) - 11.0f + 0.5f;
                memcpy(a, x, sizeof x), memcpy(b, x, sizeof x);
                apply(all, l, a, T, F);
                apply(some, l, b, T, F);
                if (l == 1) cr_assert(!memcmp(b, x, sizeof x), "metric %d: layer 1 is not listed and stays untouched", m);
                else cr_assert(!memcmp(b, a, sizeof x), "metric %d: listed layer %d masks as in an all-layer run", m, l);
                if (l != 1) cr_assert(memcmp(b, x, sizeof x), "metric %d layer %d: something is masked", m, l);
            }
        nl_mask_destroy(all);
        nl_mask_destroy(some);
    }
    nl_mask *k = make(L, F, NULL, NL_MASK_VALUE, 0.5, 0);
    const int out[1] = {3}, twice[2] = {1, 1};
    cr_assert_eq(nl_mask_set_layers(&ctx, k, out, 1), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "layer 3 is outside the model's 0..2");
    cr_assert_eq(nl_mask_set_layers(&ctx, k, twice, 2), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "layer 1 is given twice");
    cr_assert_eq(nl_mask_set_layers(&ctx, k, out, 0), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "no layers to mask");
    nl_mask_destroy(k);
}
