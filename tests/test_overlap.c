/* test_overlap.c — the overlap of the abilities' top sets (analyses/overlap.h):
 *   - nl_overlap_compute on hand-made sets against hand-computed |A∩B|/|A|, Jaccard and the
 *     random baseline E = |A|·|B|/N (per layer with exclusions, over all layers, global scope);
 *   - the same on random sets against a brute-force count over every neuron;
 *   - nl_overlap_run on a hand-written ability run: the overlap rows equal the computed cells,
 *     the run row (kind, dataset, source, params JSON text, status, no message), --scores
 *     latest, a second run adds a run and leaves the first untouched;
 *   - bad inputs (a missing run, a run of another kind, an unfinished ability run, a top
 *     outside (0, 1]): one-line errors and no overlap run begun;
 *   - a database of an older or foreign tool holding a NULL text value (runs kind/status,
 *     ability_run scope/method, ability names): one-line errors naming database, table, run;
 *   - an interrupt before the matrix: NL_EINTR and no run. */
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <unistd.h>

#include "analyses/overlap.h"
#include "neuronlab/rng.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_overlap")
TestSuite(overlap, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir, .timeout = 60);

/* ---- hand-computed cells ------------------------------------------------------------------ */

enum { A3 = 3, L2 = 2, F10 = 10 };

/* a: layer 0 {0,1,2}, layer 3 {0}; b: layer 0 {1,2,3}, layer 3 {5}; c: layer 0 {9}, layer 3 {0,5};
 * layer 3 has neurons 8 and 9 excluded (8 eligible). */
typedef struct {
    uint8_t member[A3 * L2 * F10], excl[L2 * F10];
    int count[A3 * L2];
    int layers[L2];
    char *names[A3];
    nl_ability_sets s;
} hand_sets;

static void hand_make(hand_sets *h) {
    static char n0[] = "a", n1[] = "b", n2[] = "c";
    memset(h, 0, sizeof *h);
    h->layers[0] = 0, h->layers[1] = 3;
    h->names[0] = n0, h->names[1] = n1, h->names[2] = n2;
    const int sets[A3][L2][4] = {{{0, 1, 2, -1}, {0, -1}}, {{1, 2, 3, -1}, {5, -1}}, {{9, -1}, {0, 5, -1}}};
    for (int a = 0; a < A3; a++)
        for (int j = 0; j < L2; j++)
            for (int k = 0; k < 4 && sets[a][j][k] >= 0; k++)
                h->member[(a * L2 + j) * F10 + sets[a][j][k]] = 1, h->count[a * L2 + j]++;
    h->excl[1 * F10 + 8] = h->excl[1 * F10 + 9] = 1;
    h->s = (nl_ability_sets){.n_layers = L2, .layers = h->layers, .d_ff = F10, .n_abilities = A3, .abilities = h->names,
                             .top = 0.2, .excluded = h->excl, .member = h->member, .count = h->count};
}

#define CELL(c, A, Lr, a, b, j) (&(c)[((a) * (A) + (b)) * ((Lr) + 1) + 1 + (j)]) /* j = -1: all layers */

Test(overlap, hand_computed_per_layer_and_overall) {
    hand_sets h;
    hand_make(&h);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_overlap_cell *c;
    int n;
    cr_assert_eq(nl_overlap_compute(&ctx, &h.s, &c, &n), NL_OK, "%s", ctx.msg);
    cr_assert_eq(n, A3 * A3 * (L2 + 1));
    /* order: a, b, then layer -1 followed by the recorded layers */
    for (int a = 0; a < A3; a++)
        for (int b = 0; b < A3; b++) {
            cr_assert_eq(CELL(c, A3, L2, a, b, -1)->layer, -1);
            cr_assert_eq(CELL(c, A3, L2, a, b, 0)->layer, 0);
            cr_assert_eq(CELL(c, A3, L2, a, b, 1)->layer, 3);
            cr_assert(CELL(c, A3, L2, a, b, 0)->a == a && CELL(c, A3, L2, a, b, 0)->b == b);
        }
    /* a vs b, layer 0: {1,2} shared of 3 → 2/3; union {0,1,2,3} → Jaccard 1/2 */
    const nl_overlap_cell *x = CELL(c, A3, L2, 0, 1, 0);
    cr_assert(x->size_a == 3 && x->size_b == 3 && x->inter == 2);
    cr_assert_float_eq(x->frac, 2.0 / 3, 1e-15);
    cr_assert_float_eq(x->jaccard, 0.5, 1e-15);
    /* baseline, layer 0 (N = 10): |B|/N = 0.3; E = 3·3/10 = 0.9; Jaccard 0.9/(3 + 3 − 0.9) */
    cr_assert_float_eq(x->baseline_frac, 0.3, 1e-15);
    cr_assert_float_eq(x->baseline_jaccard, 0.9 / 5.1, 1e-15);
    /* layer 3 (N = 8 eligible): a {0} vs b {5}: nothing shared; c {0,5} vs a {0}: 1 of 2 */
    x = CELL(c, A3, L2, 0, 1, 1);
    cr_assert(x->inter == 0 && x->frac == 0 && x->jaccard == 0);
    cr_assert_float_eq(x->baseline_frac, 1.0 / 8, 1e-15);
    cr_assert_float_eq(x->baseline_jaccard, (1.0 / 8) / (2 - 1.0 / 8), 1e-15);
    x = CELL(c, A3, L2, 2, 0, 1);
    cr_assert(x->size_a == 2 && x->size_b == 1 && x->inter == 1);
    cr_assert_float_eq(x->frac, 0.5, 1e-15);
    cr_assert_float_eq(x->jaccard, 0.5, 1e-15);
    cr_assert_float_eq(x->baseline_frac, 1.0 / 8, 1e-15);
    /* all layers, a vs b: 2 of 4, union 6; E = 3·3/10 + 1·1/8 */
    x = CELL(c, A3, L2, 0, 1, -1);
    cr_assert(x->size_a == 4 && x->size_b == 4 && x->inter == 2);
    cr_assert_float_eq(x->frac, 0.5, 1e-15);
    cr_assert_float_eq(x->jaccard, 2.0 / 6, 1e-15);
    const double e = 0.9 + 1.0 / 8;
    cr_assert_float_eq(x->baseline_frac, e / 4, 1e-15);
    cr_assert_float_eq(x->baseline_jaccard, e / (8 - e), 1e-15);
    /* c vs a over all layers: c = 3 neurons, a = 4, shared {layer 3: 0}: frac not symmetric */
    const nl_overlap_cell *ca = CELL(c, A3, L2, 2, 0, -1), *ac = CELL(c, A3, L2, 0, 2, -1);
    cr_assert(ca->inter == 1 && ac->inter == 1);
    cr_assert_float_eq(ca->frac, 1.0 / 3, 1e-15);
    cr_assert_float_eq(ac->frac, 1.0 / 4, 1e-15);
    cr_assert_float_eq(ca->jaccard, 1.0 / 6, 1e-15);
    cr_assert_eq(ca->jaccard, ac->jaccard);
    /* the diagonal: frac = Jaccard = 1 */
    for (int a = 0; a < A3; a++)
        for (int j = -1; j < L2; j++) {
            x = CELL(c, A3, L2, a, a, j);
            if (x->size_a) cr_assert(x->frac == 1.0 && x->jaccard == 1.0, "ability %d layer index %d", a, j);
        }
    free(c);
    /* global scope: one pool of N = 10 + 8 eligible neurons, E = |A|·|B|/N */
    h.s.global = 1;
    cr_assert_eq(nl_overlap_compute(&ctx, &h.s, &c, &n), NL_OK);
    x = CELL(c, A3, L2, 0, 1, -1);
    cr_assert_float_eq(x->baseline_frac, 4.0 / 18, 1e-15);
    cr_assert_float_eq(x->baseline_jaccard, (16.0 / 18) / (8 - 16.0 / 18), 1e-15);
    cr_assert_eq(x->inter, 2, "the intersection does not depend on the scope");
    free(c);
}

/* ---- random sets against brute force ------------------------------------------------------ */

Test(overlap, random_sets_match_brute_force) {
    enum { A = 4, Lr = 3, F = 37 };
    uint8_t member[A * Lr * F], excl[Lr * F];
    int count[A * Lr], layers[Lr] = {1, 4, 6};
    char nb[A][4];
    char *names[A];
    nl_rng rng;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    for (int trial = 0; trial < 20; trial++) {
        nl_rng_derive(&rng, 100 + (uint64_t)trial, 0, 0);
        for (int i = 0; i < Lr * F; i++) excl[i] = nl_rng_below(&rng, 9) == 0;
        for (int a = 0; a < A; a++) {
            snprintf(nb[a], sizeof nb[a], "f%d", a);
            names[a] = nb[a];
            for (int j = 0; j < Lr; j++) {
                count[a * Lr + j] = 0;
                for (int i = 0; i < F; i++) {
                    uint8_t m = !excl[j * F + i] && nl_rng_below(&rng, 4) == 0;
                    member[(a * Lr + j) * F + i] = m;
                    count[a * Lr + j] += m;
                }
            }
        }
        nl_ability_sets s = {.n_layers = Lr, .layers = layers, .d_ff = F, .n_abilities = A, .abilities = names, .top = 0.25,
                             .global = trial % 2, .excluded = excl, .member = member, .count = count};
        nl_overlap_cell *c;
        int n;
        cr_assert_eq(nl_overlap_compute(&ctx, &s, &c, &n), NL_OK, "%s", ctx.msg);
        cr_assert_eq(n, A * A * (Lr + 1));
        int64_t Nall = 0;
        for (int i = 0; i < Lr * F; i++) Nall += !excl[i];
        for (int a = 0; a < A; a++)
            for (int b = 0; b < A; b++) {
                int64_t sa = 0, sb = 0, in = 0, un = 0;
                double e_all = 0;
                for (int j = 0; j < Lr; j++) {
                    int64_t la = 0, lb = 0, li = 0, lu = 0, N = 0;
                    for (int i = 0; i < F; i++) {
                        const int x = member[(a * Lr + j) * F + i], y = member[(b * Lr + j) * F + i];
                        la += x, lb += y, li += x && y, lu += x || y, N += !excl[j * F + i];
                    }
                    const nl_overlap_cell *cl = CELL(c, A, Lr, a, b, j);
                    cr_assert_eq(cl->layer, layers[j]);
                    cr_assert(cl->size_a == la && cl->size_b == lb && cl->inter == li, "trial %d (%d,%d) layer %d", trial, a, b, j);
                    cr_assert_float_eq(cl->frac, la ? (double)li / la : 0, 1e-15);
                    cr_assert_float_eq(cl->jaccard, lu ? (double)li / lu : 0, 1e-15);
                    const double e = (double)la * lb / N;
                    cr_assert_float_eq(cl->baseline_frac, la ? e / la : 0, 1e-15, "trial %d", trial);
                    cr_assert_float_eq(cl->baseline_jaccard, la + lb - e > 0 ? e / (la + lb - e) : 0, 1e-15);
                    sa += la, sb += lb, in += li, un += lu, e_all += e;
                }
                if (s.global) e_all = (double)sa * sb / Nall;
                const nl_overlap_cell *al = CELL(c, A, Lr, a, b, -1);
                cr_assert(al->size_a == sa && al->size_b == sb && al->inter == in);
                cr_assert_float_eq(al->frac, sa ? (double)in / sa : 0, 1e-15);
                cr_assert_float_eq(al->jaccard, un ? (double)in / un : 0, 1e-15);
                cr_assert_float_eq(al->baseline_frac, sa ? e_all / sa : 0, 1e-12, "trial %d (%d,%d)", trial, a, b);
                cr_assert_float_eq(al->baseline_jaccard, sa + sb - e_all > 0 ? e_all / (sa + sb - e_all) : 0, 1e-12);
            }
        free(c);
    }
}

/* ---- the run ---------------------------------------------------------------------------- */

static int64_t qi(sqlite3 *h, const char *sql) {
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW, "%s", sql);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* Writes the hand-made sets as a complete ability run (top 0.2, per-layer scope). */
static int64_t write_ability_run(nl_ctx *ctx, nl_results *db, const hand_sets *h, const char *status) {
    int64_t id;
    nl_run_info info = {"ability", "model-x", "data.jsonl", "acts.h5", "{}"};
    cr_assert_eq(nl_results_begin_run(ctx, db, &info, &id), NL_OK, "%s", ctx->msg);
    cr_assert_eq(nl_ability_create_tables(ctx, db), NL_OK, "%s", ctx->msg);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO ability_run VALUES (%lld, 'ap', 0, 0.2, 'layer', NULL, 0, 6, %d, %d)", (long long)id,
             L2, F10);
    cr_assert_eq(nl_results_exec(ctx, db, sql), NL_OK, "%s", ctx->msg);
    for (int a = 0; a < A3; a++) {
        snprintf(sql, sizeof sql, "INSERT INTO ability_label VALUES (%lld, '%s', 2, 1, 0.5)", (long long)id, h->names[a]);
        cr_assert_eq(nl_results_exec(ctx, db, sql), NL_OK, "%s", ctx->msg);
        for (int j = 0; j < L2; j++)
            for (int i = 0, r = 1; i < F10; i++)
                if (h->member[(a * L2 + j) * F10 + i]) {
                    snprintf(sql, sizeof sql, "INSERT INTO ability_top VALUES (%lld, '%s', %d, %d, %d)", (long long)id,
                             h->names[a], h->layers[j], i, r++);
                    cr_assert_eq(nl_results_exec(ctx, db, sql), NL_OK, "%s", ctx->msg);
                }
    }
    for (int j = 0; j < L2; j++) {
        snprintf(sql, sizeof sql, "INSERT INTO ability_model VALUES (%lld, %d, 1.5)", (long long)id, h->layers[j]);
        cr_assert_eq(nl_results_exec(ctx, db, sql), NL_OK, "%s", ctx->msg);
        for (int i = 0; i < F10; i++)
            if (h->excl[j * F10 + i]) {
                snprintf(sql, sizeof sql, "INSERT INTO ability_excluded VALUES (%lld, %d, %d)", (long long)id, h->layers[j], i);
                cr_assert_eq(nl_results_exec(ctx, db, sql), NL_OK, "%s", ctx->msg);
            }
    }
    cr_assert_eq(nl_results_end_run(ctx, db, id, status, NULL), NL_OK, "%s", ctx->msg);
    return id;
}

Test(overlap, run_writes_the_cells_and_the_run_row) {
    hand_sets h;
    hand_make(&h);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("r.db"), 0, &db), NL_OK, "%s", ctx.msg);
    const int64_t ab = write_ability_run(&ctx, db, &h, "complete");
    nl_overlap_opts o;
    nl_overlap_opts_init(&o);
    cr_assert_eq(o.top, 0, "the default is the scores run's own fraction");
    nl_overlap_result r = {0};
    cr_assert_eq(nl_overlap_run(&ctx, &o, ab, db, NULL, &r), NL_OK, "%s", ctx.msg);
    cr_assert_gt(r.run_id, ab);
    cr_assert_eq(r.sets.run_id, ab);
    cr_assert_float_eq(r.sets.top, 0.2, 1e-15);
    cr_assert_eq(r.n_cells, A3 * A3 * (L2 + 1));
    /* the loaded sets give the cells of the hand-made ones */
    nl_overlap_cell *want;
    int n;
    cr_assert_eq(nl_overlap_compute(&ctx, &h.s, &want, &n), NL_OK);
    cr_assert_eq(n, r.n_cells);
    sqlite3 *q = nl_results_db(db);
    char sql[512];
    for (int i = 0; i < n; i++) {
        const nl_overlap_cell *x = &want[i], *y = &r.cells[i];
        cr_assert(x->inter == y->inter && x->size_a == y->size_a && x->frac == y->frac && x->jaccard == y->jaccard &&
                      x->baseline_frac == y->baseline_frac && x->baseline_jaccard == y->baseline_jaccard,
                  "cell %d", i);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM overlap WHERE run_id = %lld AND a = '%s' AND b = '%s' AND layer = %d AND size_a = %lld"
                 " AND size_b = %lld AND inter = %lld AND frac = %.17g AND jaccard = %.17g AND baseline_frac = %.17g"
                 " AND baseline_jaccard = %.17g",
                 (long long)r.run_id, h.names[x->a], h.names[x->b], x->layer, (long long)x->size_a, (long long)x->size_b,
                 (long long)x->inter, x->frac, x->jaccard, x->baseline_frac, x->baseline_jaccard);
        cr_assert_eq(qi(q, sql), 1, "%s", sql);
    }
    free(want);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM overlap WHERE run_id = %lld", (long long)r.run_id);
    cr_assert_eq(qi(q, sql), n);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM runs WHERE id = %lld AND kind = 'overlap' AND model = 'model-x' AND source = 'acts.h5'"
             " AND dataset = 'ability run %lld' AND status = 'complete' AND message IS NULL AND ended_at IS NOT NULL"
             " AND params = '{\"scores_run\":%lld,\"top\":0.2,\"scope\":\"layer\"}'",
             (long long)r.run_id, (long long)ab, (long long)ab);
    cr_assert_eq(qi(q, sql), 1, "%s", sql);
    const int64_t first = r.run_id;
    nl_overlap_result_release(&r);
    cr_assert_null(r.cells);
    /* --scores latest and another fraction: a second run, the first untouched */
    o.top = 0.5;
    cr_assert_eq(nl_overlap_run(&ctx, &o, -1, db, NULL, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(r.run_id, first + 1);
    cr_assert_eq(r.sets.run_id, ab);
    cr_assert_float_eq(r.sets.top, 0.5, 1e-15);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM overlap WHERE run_id = %lld", (long long)first);
    cr_assert_eq(qi(q, sql), n);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM runs WHERE id = %lld AND params LIKE '%%\"top\":0.5,%%'", (long long)r.run_id);
    cr_assert_eq(qi(q, sql), 1);
    nl_overlap_result_release(&r);
    nl_overlap_result_release(&r); /* a released result is a no-op */
    nl_results_close(db);
}

Test(overlap, bad_inputs_begin_no_run) {
    hand_sets h;
    hand_make(&h);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    const char *dbp = tmp_path("bad.db");
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    nl_overlap_result r = {0};
    /* no ability run at all */
    cr_assert_eq(nl_overlap_run(&ctx, NULL, -1, db, NULL, &r), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "has no complete ability run") && strstr(ctx.msg, dbp), "%s", ctx.msg);
    cr_assert_eq(r.run_id, -1);
    nl_overlap_result_release(&r);
    /* a missing run */
    cr_assert_eq(nl_overlap_run(&ctx, NULL, 99, db, NULL, &r), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "no run 99 in"), "%s", ctx.msg);
    nl_overlap_result_release(&r);
    /* a run of another kind */
    int64_t sp;
    nl_run_info info = {"sparsity", "m", "d", "acts.h5", "{}"};
    cr_assert_eq(nl_results_begin_run(&ctx, db, &info, &sp), NL_OK);
    cr_assert_eq(nl_results_end_run(&ctx, db, sp, "complete", NULL), NL_OK);
    cr_assert_eq(nl_overlap_run(&ctx, NULL, sp, db, NULL, &r), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "is a 'sparsity' run, not an ability run"), "%s", ctx.msg);
    nl_overlap_result_release(&r);
    /* an interrupted ability run has no scores */
    const int64_t ab = write_ability_run(&ctx, db, &h, "interrupted");
    cr_assert_eq(nl_overlap_run(&ctx, NULL, ab, db, NULL, &r), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "is 'interrupted' (only complete runs have scores)"), "%s", ctx.msg);
    nl_overlap_result_release(&r);
    /* a top outside (0, 1] */
    const int64_t ok = write_ability_run(&ctx, db, &h, "complete");
    nl_overlap_opts o;
    nl_overlap_opts_init(&o);
    o.top = 1.5;
    cr_assert_eq(nl_overlap_run(&ctx, &o, ok, db, NULL, &r), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "top fraction 1.5 is outside (0, 1]"), "%s", ctx.msg);
    cr_assert_null(strchr(ctx.msg, '\n'));
    nl_overlap_result_release(&r);
    cr_assert_eq(qi(nl_results_db(db), "SELECT count(*) FROM runs WHERE kind = 'overlap'"), 0, "a refused overlap began a run");
    nl_results_close(db);
}

/* A results database written by an older or foreign tool (tables without NOT NULL) can hold a
 * NULL text value: loading the sets gives a one-line error naming the database, the table and
 * the run, never a crash, and no overlap run is begun. */
static void expect_null_error(const char *dbp, int64_t run, nl_status want, const char *msg) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    nl_overlap_result r = {0};
    cr_assert_eq(nl_overlap_run(&ctx, NULL, run, db, NULL, &r), want, "%s", ctx.msg);
    cr_assert_str_eq(ctx.msg, msg);
    cr_assert_eq(r.run_id, -1);
    nl_overlap_result_release(&r);
    cr_assert_eq(qi(nl_results_db(db), "SELECT count(*) FROM runs WHERE kind = 'overlap'"), 0, "a refused overlap began a run");
    nl_results_close(db);
}

static void exec_sql(const char *dbp, const char *sql) {
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbp, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    sqlite3_close(h);
}

Test(overlap, null_text_values_are_errors) {
    hand_sets h;
    hand_make(&h);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char sql[512], want[512];
    /* ability_top and ability_label without NOT NULL, made before the analysis' own tables */
    const char *dbp = tmp_path("foreign.db");
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_results_exec(&ctx, db,
                                 "CREATE TABLE ability_top(run_id INTEGER, ability TEXT, layer INTEGER, neuron INTEGER, rank INTEGER);"
                                 "CREATE TABLE ability_run(run_id INTEGER PRIMARY KEY, method TEXT, symmetric INTEGER, top REAL,"
                                 " scope TEXT, resident_run INTEGER, seed INTEGER, docs INTEGER, layers INTEGER, d_ff INTEGER);"
                                 "CREATE TABLE ability_label(run_id INTEGER, ability TEXT, docs INTEGER, positives INTEGER,"
                                 " baseline REAL);"),
                 NL_OK, "%s", ctx.msg);
    const int64_t ab = write_ability_run(&ctx, db, &h, "complete");
    nl_results_close(db);
    nl_overlap_result r = {0};
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_overlap_run(&ctx, NULL, ab, db, NULL, &r), NL_OK, "%s", ctx.msg); /* valid so far */
    nl_overlap_result_release(&r);
    nl_results_close(db);
    exec_sql(dbp, "DELETE FROM runs WHERE kind = 'overlap'");
    snprintf(sql, sizeof sql, "INSERT INTO ability_top VALUES (%lld, NULL, 0, 7, 9)", (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': ability_top of run %lld has a NULL ability name", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
    expect_null_error(dbp, -1, NL_EFORMAT, want); /* --scores latest finds the same run */
    snprintf(sql, sizeof sql, "DELETE FROM ability_top WHERE ability IS NULL; UPDATE ability_run SET scope = NULL WHERE run_id = %lld",
             (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': ability_run of run %lld has a NULL scope", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
    snprintf(sql, sizeof sql, "UPDATE ability_run SET scope = 'layer', method = NULL WHERE run_id = %lld", (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': ability_run of run %lld has a NULL method", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
    snprintf(sql, sizeof sql, "UPDATE ability_run SET method = 'ap' WHERE run_id = %lld; INSERT INTO ability_label VALUES (%lld, NULL, 2, 1, 0.5)",
             (long long)ab, (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': ability_label of run %lld has a NULL ability name", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
    /* a runs table without NOT NULL (rebuilt as an older tool left it) holding a NULL kind, then status */
    snprintf(sql, sizeof sql,
             "DELETE FROM ability_label WHERE ability IS NULL; CREATE TABLE runs2 AS SELECT * FROM runs; DROP TABLE runs;"
             " ALTER TABLE runs2 RENAME TO runs; UPDATE runs SET kind = NULL WHERE id = %lld",
             (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': run %lld has a NULL kind in the runs table", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
    snprintf(sql, sizeof sql, "UPDATE runs SET kind = 'ability', status = NULL WHERE id = %lld", (long long)ab);
    exec_sql(dbp, sql);
    snprintf(want, sizeof want, "'%s': run %lld has a NULL status in the runs table", dbp, (long long)ab);
    expect_null_error(dbp, ab, NL_EFORMAT, want);
}

/* Ctrl-C / SIGTERM before the matrix is computed: NL_EINTR and no overlap run. */
Test(overlap, interrupt_stops_before_a_run) {
    hand_sets h;
    hand_make(&h);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("int.db"), 0, &db), NL_OK, "%s", ctx.msg);
    const int64_t ab = write_ability_run(&ctx, db, &h, "complete");
    nl_overlap_result r = {0};
    nl_interrupted = 1;
    nl_status st = nl_overlap_run(&ctx, NULL, ab, db, NULL, &r);
    nl_interrupted = 0;
    cr_assert_eq(st, NL_EINTR, "%s", ctx.msg);
    cr_assert_eq(r.run_id, -1);
    nl_overlap_result_release(&r);
    cr_assert_eq(qi(nl_results_db(db), "SELECT count(*) FROM runs WHERE kind = 'overlap'"), 0);
    cr_assert_eq(nl_overlap_run(&ctx, NULL, ab, db, NULL, &r), NL_OK, "%s", ctx.msg); /* and then it runs */
    nl_overlap_result_release(&r);
    nl_results_close(db);
}
