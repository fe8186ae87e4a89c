/* test_summary.c — record --stats (summary.h, summary_h5.h) against a full dump of the same
 * forward pass: on the fixture model (tests/fixtures/hf/llama, token documents with labels)
 * and, when notebooks-data/models/silu is there, on the zoo SiLU model with a few documents
 * of notebooks-data/eval.
 *   - statistics: counts, min/max, max_r, frequencies, r and |a| histograms (against slow
 *     reference binning), pooled values exactly; mean and M2 within 1e-9 relative of a
 *     two-pass double computation; sum_abs within 1e-12 relative (same order: equal in practice);
 *   - top-K equals a brute-force argsort of the dump (|a| descending, then token order);
 *   - the merge of the summaries of two halves (different label sets) equals the summary of
 *     the whole: exact for counts, histograms, extremes, top-K, pooled; sums within 1e-12;
 *   - write/read round trip is exact; a committed, interrupted run resumed equals the
 *     uninterrupted run exactly;
 *   - sparsity and ability from the summary (and from the merged summary) equal their runs
 *     on the dump, table by table: integers and text exact, reals within 1e-12 relative;
 *   - bad inputs: each kind where the other is needed names what is missing.
 */
#include <ftw.h>
#include <sqlite3.h>

#include "analyses/ability.h"
#include "analyses/sparsity.h"
#include "neuronlab/recorder.h"
#include "neuronlab/summary.h"
#include "neuronlab/tokenizer.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_summary")
TestSuite(summary, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir);

#define FIXTURE "tests/fixtures/hf/llama"
#define ZOO "notebooks-data/models/silu"

/* Writes n labelled token documents (ids < 256, lengths 5..90) to path; doc i has label
 * labels[i % nl]. */
static void write_tokens(const char *path, int first, int n, const char *const *labels, int nl) {
    FILE *f = fopen(path, "w");
    cr_assert(f);
    uint64_t x = 12345;
    for (int i = 0; i < first + n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int len = 5 + (int)((x >> 33) % 86);
        if (i < first) {
            for (int t = 0; t < len; t++) x = x * 6364136223846793005ull + 1;
            continue;
        }
        fprintf(f, "{\"tokens\": [");
        for (int t = 0; t < len; t++) {
            x = x * 6364136223846793005ull + 1;
            fprintf(f, "%s%d", t ? ", " : "", (int)((x >> 40) % 256));
        }
        fprintf(f, "], \"label\": \"%s\"}\n", labels[i % nl]);
    }
    fclose(f);
}

typedef struct {
    nl_model *m;
    nl_tokenizer *tok;
    nl_dataset *ds;
    nl_forward *f;
} runner;

static void runner_open(runner *r, const char *model, const char *data, int with_tok) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    memset(r, 0, sizeof *r);
    cr_assert_eq(nl_model_open(&ctx, model, &r->m), NL_OK, "%s", ctx.msg);
    if (with_tok) cr_assert_eq(nl_tokenizer_for_model(&ctx, model, &r->tok), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_dataset_load(&ctx, data, r->tok, nl_model_config(r->m)->vocab_size, &r->ds), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_forward_create(&ctx, r->m, 8, 32, &r->f), NL_OK, "%s", ctx.msg); /* windows and batches */
}
static void runner_close(runner *r) {
    nl_forward_destroy(r->f);
    nl_dataset_destroy(r->ds);
    nl_tokenizer_close(r->tok);
    nl_model_close(r->m);
}

static nl_summary *summarise(runner *r, const char *model, const nl_summary_commit *cm, nl_status want) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const nl_config *c = nl_model_config(r->m);
    nl_summary_desc d = {.model = model, .arch = "llama", .ffn_kind = "gated", .act_fn = "silu", .dataset = r->ds->path,
                         .n_layers = c->n_layers, .d_model = c->d_model, .d_ff = c->d_ff};
    nl_summary *s;
    cr_assert_eq(nl_summary_create_for(&ctx, &d, r->ds, &s), NL_OK, "%s", ctx.msg);
    nl_status st = nl_summary_run(&ctx, r->f, r->ds, s, 0, NULL, cm);
    cr_assert_eq(st, want, "%s", ctx.msg);
    cr_assert_eq(nl_forward_hooks(r->f)->n, 0, "the summary must remove its hook");
    if (st == NL_OK) s->complete = 1;
    return s;
}

static void dump(runner *r, const char *model, const char *path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const nl_config *c = nl_model_config(r->m);
    nl_h5_meta meta = {.model = model, .arch = "llama", .n_layers = c->n_layers, .d_model = c->d_model, .d_ff = c->d_ff,
                       .ffn_kind = "gated", .act_fn = "silu", .dtype = NL_H5_F32, .dataset = r->ds->path, .pooled = 1};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &meta, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_record_run(&ctx, r->f, r->ds, w, 1, 0, NULL), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
}

static int rel_ok(double a, double b, double rel, double abs_) {
    if (a == b) return 1;
    return fabs(a - b) <= rel * fmax(fabs(a), fabs(b)) + abs_;
}

/* Reference bins from the definitions (frexp and double arithmetic, not the float bits):
 * r bins of 1/32 octave above 2^-27, |a| bins of 1/2 octave in (2^-24, 2^16], upper edges
 * inclusive. */
static int ref_bin(double x, int e_lo, int e_hi, int per, int over) {
    if (x == 0) return 0;
    if (x <= ldexp(1.0, e_lo)) return 1;
    if (x > ldexp(1.0, e_hi)) return over;
    int k;
    double f = frexp(x, &k); /* x = f·2^k, f in [0.5, 1) */
    int e = k - 1;           /* 2^e <= x < 2^(e+1) */
    int m;
    if (f == 0.5) e -= 1, m = per - 1; /* x = 2^(e+1): the top edge of the octave below */
    else m = (int)ceil((ldexp(x, -e) - 1.0) * per) - 1;
    return 2 + (e - e_lo) * per + m;
}
static int ref_r_bin(float r) { return ref_bin(r, -27, 0, 32, -1); }
static int ref_abs_bin(float v) { return ref_bin(v, -24, 16, 2, NL_SUMMARY_ABS_BINS - 1); }

/* Every statistic of s against the dump at path (brute force). */
static void check_against_dump(const nl_summary *s, const char *path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *rd;
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &rd), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(rd);
    const int F = s->d_ff, G = s->n_groups, K = s->top_k, nt = s->n_tau;
    const int64_t N = in->n_tokens, Dc = in->n_docs;
    cr_assert_eq(s->n_tokens, N);
    cr_assert_eq(s->n_docs, Dc);
    int *tg = malloc(N * sizeof(int)), *tdoc = malloc(N * sizeof(int));
    for (int64_t d = 0; d < Dc; d++) {
        cr_assert_eq(s->doc_offsets[d + 1], in->doc_offsets[d + 1]);
        cr_assert_str_eq(s->doc_labels[d], in->doc_labels[d]);
        cr_assert_eq(s->prompt_len[d], in->prompt_len[d]);
        for (int64_t t = in->doc_offsets[d]; t < in->doc_offsets[d + 1]; t++) tg[t] = nl_summary_group(s, in->doc_labels[d]), tdoc[t] = (int)d;
    }
    float *A = malloc((size_t)N * F * sizeof(float)), *wn = malloc(F * sizeof(float)), *P = malloc((size_t)Dc * F * sizeof(float));
    double *mean = malloc(F * sizeof(double)), *m2 = malloc(F * sizeof(double)), *sa = malloc(F * sizeof(double));
    int64_t *fr = malloc((size_t)nt * F * sizeof(int64_t)), *ah = calloc((size_t)F * NL_SUMMARY_ABS_BINS, sizeof(int64_t));
    int64_t *rh = malloc(2 * NL_SUMMARY_R_BINS * sizeof(int64_t));
    float *mn = malloc(F * sizeof(float)), *mx = malloc(F * sizeof(float)), *mr = malloc(F * sizeof(float));
    for (int j = 0; j < s->n_rec; j++) {
        const int l = s->layers[j];
        const nl_summary_layer *y = &s->lay[j];
        cr_assert_eq(nl_h5_reader_read_acts(rd, &ctx, l, 0, (int)N, A), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_h5_reader_read_w_out_norm(rd, &ctx, l, wn), NL_OK);
        cr_assert_eq(memcmp(wn, y->w_out_norm, F * sizeof(float)), 0, "w_out_norm of layer %d", l);
        cr_assert_eq(nl_h5_reader_read_pooled(rd, &ctx, l, 0, (int)Dc, P), NL_OK);
        cr_assert_eq(memcmp(P, y->pooled, (size_t)Dc * F * sizeof(float)), 0, "pooled values of layer %d", l);
        memset(ah, 0, (size_t)F * NL_SUMMARY_ABS_BINS * sizeof(int64_t));
        for (int g = 0; g < G; g++) {
            int64_t n = 0;
            memset(mean, 0, F * sizeof(double)), memset(m2, 0, F * sizeof(double)), memset(sa, 0, F * sizeof(double));
            memset(fr, 0, (size_t)nt * F * sizeof(int64_t)), memset(rh, 0, 2 * NL_SUMMARY_R_BINS * sizeof(int64_t));
            int64_t below[4] = {0};
            for (int i = 0; i < F; i++) mn[i] = INFINITY, mx[i] = -INFINITY, mr[i] = 0;
            for (int64_t t = 0; t < N; t++) {
                if (tg[t] != g) continue;
                n++;
                const float *a = A + (size_t)t * F;
                float mv = 0, mnn = 0;
                for (int i = 0; i < F; i++) mv = fmaxf(mv, fabsf(a[i])), mnn = fmaxf(mnn, fabsf(a[i]) * wn[i]);
                for (int i = 0; i < F; i++) {
                    float v = fabsf(a[i]), rv = mv > 0 ? v / mv : 0, rn = mnn > 0 ? v * wn[i] / mnn : 0;
                    mean[i] += a[i], sa[i] += v;
                    mn[i] = fminf(mn[i], a[i]), mx[i] = fmaxf(mx[i], a[i]), mr[i] = fmaxf(mr[i], rv);
                    for (int k = 0; k < nt; k++) fr[(size_t)k * F + i] += (double)rv > s->tau[k];
                    rh[ref_r_bin(rv)]++, rh[NL_SUMMARY_R_BINS + ref_r_bin(rn)]++;
                    below[0] += (double)rv < 0.1, below[1] += (double)rv < 0.2, below[2] += (double)rn < 0.1, below[3] += (double)rn < 0.2;
                    ah[(size_t)i * NL_SUMMARY_ABS_BINS + ref_abs_bin(v)]++;
                }
            }
            cr_assert_eq(s->group_tokens[g], n, "tokens of group %d", g);
            for (int i = 0; i < F && n; i++) mean[i] /= (double)n;
            for (int64_t t = 0; t < N; t++)
                if (tg[t] == g)
                    for (int i = 0; i < F; i++) m2[i] += ((double)A[(size_t)t * F + i] - mean[i]) * ((double)A[(size_t)t * F + i] - mean[i]);
            const size_t o = (size_t)g * F;
            for (int i = 0; i < F; i++) {
                cr_assert(rel_ok(y->mean[o + i], mean[i], 1e-9, 1e-12), "mean l%d g%d i%d: %.17g vs %.17g", l, g, i, y->mean[o + i], mean[i]);
                cr_assert(rel_ok(y->m2[o + i], m2[i], 1e-9, 1e-12), "m2 l%d g%d i%d: %.17g vs %.17g", l, g, i, y->m2[o + i], m2[i]);
                cr_assert(rel_ok(y->sum_abs[o + i], sa[i], 1e-12, 0), "sum_abs l%d g%d i%d", l, g, i);
                cr_assert(y->min[o + i] == mn[i] && y->max[o + i] == mx[i] && y->max_r[o + i] == mr[i], "extremes l%d g%d i%d", l, g, i);
            }
            cr_assert_eq(memcmp(fr, y->freq + (size_t)g * nt * F, (size_t)nt * F * sizeof(int64_t)), 0, "freq l%d g%d", l, g);
            cr_assert_eq(memcmp(rh, y->r_hist + (size_t)g * 2 * NL_SUMMARY_R_BINS, 2 * NL_SUMMARY_R_BINS * sizeof(int64_t)), 0,
                         "r_hist l%d g%d", l, g);
            cr_assert_eq(memcmp(below, y->r_below + g * 4, sizeof below), 0, "r_below l%d g%d", l, g);
        }
        cr_assert_eq(memcmp(ah, y->abs_hist, (size_t)F * NL_SUMMARY_ABS_BINS * sizeof(int64_t)), 0, "abs_hist l%d", l);
        /* top-K: argsort by (|a| desc, token asc) */
        int64_t *best = malloc(K * sizeof(int64_t));
        for (int i = 0; i < F; i++) {
            int nb = 0;
            for (int64_t t = 0; t < N; t++) { /* insertion into the brute-force list */
                float v = fabsf(A[(size_t)t * F + i]);
                int p = nb;
                while (p > 0 && fabsf(A[(size_t)best[p - 1] * F + i]) < v) p--;
                if (p >= K) continue;
                for (int q = (nb < K ? nb : K - 1); q > p; q--) best[q] = best[q - 1];
                best[p] = t;
                if (nb < K) nb++;
            }
            cr_assert_eq(y->top_n[i], nb);
            for (int k = 0; k < nb; k++) {
                int64_t t = best[k];
                cr_assert(y->top_value[(size_t)i * K + k] == A[(size_t)t * F + i] && y->top_doc[(size_t)i * K + k] == tdoc[t] &&
                              y->top_pos[(size_t)i * K + k] == t - in->doc_offsets[tdoc[t]],
                          "top-K l%d neuron %d rank %d", l, i, k);
            }
        }
        free(best);
    }
    free(tg), free(tdoc), free(A), free(wn), free(P), free(mean), free(m2), free(sa), free(fr), free(ah), free(rh), free(mn), free(mx), free(mr);
    nl_h5_reader_close(rd);
}

/* a and b equal: exact where exact, sums within rel. */
static void check_same(const nl_summary *a, const nl_summary *b, double rel) {
    const int F = a->d_ff, K = a->top_k, nt = a->n_tau;
    cr_assert_eq(a->n_docs, b->n_docs);
    cr_assert_eq(a->n_tokens, b->n_tokens);
    cr_assert_eq(a->n_groups, b->n_groups);
    cr_assert_eq(a->n_rec, b->n_rec);
    for (int g = 0; g < a->n_groups; g++) {
        cr_assert_str_eq(a->group_labels[g], b->group_labels[g]);
        cr_assert_eq(a->group_tokens[g], b->group_tokens[g]);
    }
    cr_assert_eq(memcmp(a->doc_offsets, b->doc_offsets, (a->n_docs + 1) * sizeof(int64_t)), 0);
    cr_assert_eq(memcmp(a->prompt_len, b->prompt_len, a->n_docs * sizeof(int32_t)), 0);
    for (int64_t d = 0; d < a->n_docs; d++) cr_assert_str_eq(a->doc_labels[d], b->doc_labels[d]);
    const size_t GF = (size_t)a->n_groups * F;
    for (int j = 0; j < a->n_rec; j++) {
        const nl_summary_layer *x = &a->lay[j], *y = &b->lay[j];
        cr_assert_eq(memcmp(x->w_out_norm, y->w_out_norm, F * sizeof(float)), 0);
        cr_assert_eq(memcmp(x->min, y->min, GF * sizeof(float)), 0);
        cr_assert_eq(memcmp(x->max, y->max, GF * sizeof(float)), 0);
        cr_assert_eq(memcmp(x->max_r, y->max_r, GF * sizeof(float)), 0);
        cr_assert_eq(memcmp(x->freq, y->freq, GF * nt * sizeof(int64_t)), 0);
        cr_assert_eq(memcmp(x->r_hist, y->r_hist, (size_t)a->n_groups * 2 * NL_SUMMARY_R_BINS * sizeof(int64_t)), 0);
        cr_assert_eq(memcmp(x->r_below, y->r_below, (size_t)a->n_groups * 4 * sizeof(int64_t)), 0);
        cr_assert_eq(memcmp(x->abs_hist, y->abs_hist, (size_t)F * NL_SUMMARY_ABS_BINS * sizeof(int64_t)), 0);
        cr_assert_eq(memcmp(x->top_n, y->top_n, F * sizeof(int32_t)), 0);
        for (int i = 0; i < F; i++) {
            size_t n = (size_t)x->top_n[i];
            cr_assert_eq(memcmp(x->top_value + (size_t)i * K, y->top_value + (size_t)i * K, n * sizeof(float)), 0, "top of neuron %d", i);
            cr_assert_eq(memcmp(x->top_doc + (size_t)i * K, y->top_doc + (size_t)i * K, n * sizeof(int32_t)), 0);
            cr_assert_eq(memcmp(x->top_pos + (size_t)i * K, y->top_pos + (size_t)i * K, n * sizeof(int32_t)), 0);
        }
        cr_assert_eq(memcmp(x->pooled, y->pooled, (size_t)a->n_docs * F * sizeof(float)), 0);
        for (size_t k = 0; k < GF; k++) {
            cr_assert(rel_ok(x->mean[k], y->mean[k], rel * 1e3, 1e-13), "mean %zu: %.17g vs %.17g", k, x->mean[k], y->mean[k]);
            cr_assert(rel_ok(x->m2[k], y->m2[k], rel * 1e3, 1e-13), "m2 %zu: %.17g vs %.17g", k, x->m2[k], y->m2[k]);
            cr_assert(rel_ok(x->sum_abs[k], y->sum_abs[k], rel, 0), "sum_abs %zu", k);
        }
        for (int k = 0; k < 2 * a->n_groups; k++) cr_assert(rel_ok(x->r_sum[k], y->r_sum[k], rel, 0), "r_sum %d", k);
    }
}

/* Rows of table t of runs r1 and r2 (ordered by every column but run_id) equal: integers and
 * text exactly, reals within rel. */
static void check_tables_equal(const char *dbp, int64_t r1, int64_t r2, const char *t, double rel) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(dbp, &db), SQLITE_OK);
    char cols[1024] = "", sql[2048];
    sqlite3_stmt *q;
    snprintf(sql, sizeof sql, "SELECT name, type FROM pragma_table_info('%s') WHERE name <> 'run_id'", t);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    int nc = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(q, 0), *type = (const char *)sqlite3_column_text(q, 1);
        /* order by the key-like columns (not REAL ones): rows pair up whatever the values */
        if (strcmp(type, "REAL")) snprintf(cols + strlen(cols), sizeof cols - strlen(cols), "%s%s", cols[0] ? "," : "", name);
        nc++;
    }
    sqlite3_finalize(q);
    sqlite3_stmt *a, *b;
    snprintf(sql, sizeof sql, "SELECT * FROM %s WHERE run_id = ?1 ORDER BY %s", t, cols);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &a, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &b, NULL), SQLITE_OK);
    sqlite3_bind_int64(a, 1, r1), sqlite3_bind_int64(b, 1, r2);
    int rows = 0;
    for (;;) {
        int ra = sqlite3_step(a), rb = sqlite3_step(b);
        cr_assert_eq(ra, rb, "%s: runs %lld and %lld have different row counts", t, (long long)r1, (long long)r2);
        if (ra != SQLITE_ROW) break;
        rows++;
        for (int c = 0; c <= nc; c++) {
            const char *cn = sqlite3_column_name(a, c);
            if (!strcmp(cn, "run_id")) continue;
            int ta = sqlite3_column_type(a, c), tb = sqlite3_column_type(b, c);
            cr_assert_eq(ta, tb, "%s.%s: types differ", t, cn);
            if (ta == SQLITE_FLOAT) {
                double x = sqlite3_column_double(a, c), y = sqlite3_column_double(b, c);
                cr_assert(rel_ok(x, y, rel, 0), "%s.%s row %d: %.17g vs %.17g", t, cn, rows, x, y);
            } else if (ta != SQLITE_NULL) {
                cr_assert_str_eq((const char *)sqlite3_column_text(a, c), (const char *)sqlite3_column_text(b, c), "%s.%s row %d", t, cn, rows);
            }
        }
    }
    cr_assert_gt(rows, 0, "%s has no rows for run %lld", t, (long long)r1);
    sqlite3_finalize(a), sqlite3_finalize(b);
    sqlite3_close(db);
}

/* sparsity (no CETT) and ability of acts and of sum into one database: the same tables. */
static void check_analyses(const char *acts, const char *sum, const char *dbp, double rel) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, dbp, 0, &db), NL_OK, "%s", ctx.msg);
    nl_sparsity_opts so;
    nl_sparsity_opts_init(&so);
    so.no_cett = 1;
    int64_t run[4];
    const char *src[2] = {acts, sum};
    for (int k = 0; k < 2; k++) {
        nl_sparsity_result res = {0};
        cr_assert_eq(nl_sparsity_run(&ctx, &so, src[k], db, NULL, &res), NL_OK, "%s", ctx.msg);
        cr_assert_eq(res.from_summary, k);
        run[k] = res.run_id;
        nl_sparsity_result_release(&res);
    }
    for (int k = 0; k < 2; k++) {
        nl_ability_result res = {0};
        cr_assert_eq(nl_ability_run(&ctx, NULL, src[k], db, NULL, &res), NL_OK, "%s", ctx.msg);
        run[2 + k] = res.run_id;
    }
    nl_results_close(db);
    static const char *sp[] = {"sparsity_layer", "sparsity_hist", "sparsity_cdf", "sparsity_quantile", "neurons", "neuron_freq"};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) check_tables_equal(dbp, run[0], run[1], sp[i], rel);
    static const char *ab[] = {"ability_run", "ability_label", "ability_score", "ability_layer", "ability_top",
                               "ability_depth", "ability_model", "ability_ties", "ability_docs"};
    for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++) check_tables_equal(dbp, run[2], run[3], ab[i], 0);
}

static const char *LABELS[] = {"code", "math", "", "writing", "math"};

Test(summary, fixture_equals_dump_topk_and_analyses) {
    write_tokens(tmp_path("all.jsonl"), 0, 14, LABELS, 5);
    runner r;
    runner_open(&r, FIXTURE, tmp_path("all.jsonl"), 0);
    dump(&r, FIXTURE, tmp_path("acts.h5"));
    nl_summary *s = summarise(&r, FIXTURE, NULL, NL_OK);
    check_against_dump(s, tmp_path("acts.h5"));
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_summary_write(&ctx, s, tmp_path("sum.h5")), NL_OK, "%s", ctx.msg);
    nl_summary *back;
    cr_assert_eq(nl_summary_read(&ctx, tmp_path("sum.h5"), &back), NL_OK, "%s", ctx.msg);
    check_same(s, back, 0);
    cr_assert_eq(back->complete, 1);
    cr_assert_eq(back->top_k, 20);
    check_analyses(tmp_path("acts.h5"), tmp_path("sum.h5"), tmp_path("r.db"), 1e-12);
    nl_summary_destroy(back);
    nl_summary_destroy(s);
    runner_close(&r);
}

Test(summary, merge_of_halves_equals_whole) {
    write_tokens(tmp_path("whole.jsonl"), 0, 14, LABELS, 5);
    write_tokens(tmp_path("h1.jsonl"), 0, 3, LABELS, 5);
    write_tokens(tmp_path("h2.jsonl"), 3, 11, LABELS, 5);
    runner w, a, b;
    runner_open(&w, FIXTURE, tmp_path("whole.jsonl"), 0);
    runner_open(&a, FIXTURE, tmp_path("h1.jsonl"), 0);
    runner_open(&b, FIXTURE, tmp_path("h2.jsonl"), 0);
    nl_summary *sw = summarise(&w, FIXTURE, NULL, NL_OK), *sa = summarise(&a, FIXTURE, NULL, NL_OK), *sb = summarise(&b, FIXTURE, NULL, NL_OK);
    cr_assert_eq(nl_summary_group(sa, "writing"), -1, "the halves must have different label sets");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_summary_merge(&ctx, sa, sb), NL_OK, "%s", ctx.msg);
    check_same(sw, sa, 1e-12);
    cr_assert(strstr(sa->dataset, "h1.jsonl + ") && strstr(sa->dataset, "h2.jsonl"), "%s", sa->dataset);
    /* the analyses of the merged summary equal those of the whole dump */
    dump(&w, FIXTURE, tmp_path("whole.h5"));
    cr_assert_eq(nl_summary_write(&ctx, sa, tmp_path("merged.h5")), NL_OK, "%s", ctx.msg);
    check_analyses(tmp_path("whole.h5"), tmp_path("merged.h5"), tmp_path("m.db"), 1e-12);
    nl_summary_destroy(sw), nl_summary_destroy(sa), nl_summary_destroy(sb);
    runner_close(&w), runner_close(&a), runner_close(&b);
}

/* A commit callback that writes the summary and interrupts after the third commit. */
typedef struct { const char *path; int n, stop_after; } committer;
static nl_status commit_cb(void *user, nl_ctx *ctx, const nl_summary *s) {
    committer *c = user;
    nl_status st = nl_summary_write(ctx, s, c->path);
    if (st != NL_OK) return st;
    if (++c->n == c->stop_after) return nl_errorf(ctx, NL_EINTR, "interrupted");
    return NL_OK;
}

Test(summary, committed_then_resumed_equals_uninterrupted) {
    write_tokens(tmp_path("all.jsonl"), 0, 10, LABELS, 5);
    runner r;
    runner_open(&r, FIXTURE, tmp_path("all.jsonl"), 0);
    nl_summary *whole = summarise(&r, FIXTURE, NULL, NL_OK);
    committer c = {tmp_path("part.h5"), 0, 3};
    nl_summary_commit cm = {commit_cb, &c, -1}; /* after every document */
    nl_summary *cut = summarise(&r, FIXTURE, &cm, NL_EINTR);
    nl_summary_destroy(cut);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_summary *part;
    cr_assert_eq(nl_summary_read(&ctx, tmp_path("part.h5"), &part), NL_OK, "%s", ctx.msg);
    cr_assert_eq(part->complete, 0);
    cr_assert_eq(part->n_docs, 3, "the file holds the documents of the last commit");
    cr_assert_eq(part->n_tokens, r.ds->docs[0].n_tokens + r.ds->docs[1].n_tokens + r.ds->docs[2].n_tokens);
    cr_assert_eq(nl_summary_run(&ctx, r.f, r.ds, part, 0, NULL, NULL), NL_OK, "%s", ctx.msg);
    part->complete = 1;
    check_same(whole, part, 0); /* the same sums in the same order: exact */
    nl_summary_destroy(part);
    nl_summary_destroy(whole);
    runner_close(&r);
}

Test(summary, each_kind_where_the_other_is_needed_names_what_is_missing) {
    write_tokens(tmp_path("all.jsonl"), 0, 6, LABELS, 5);
    runner r;
    runner_open(&r, FIXTURE, tmp_path("all.jsonl"), 0);
    dump(&r, FIXTURE, tmp_path("acts.h5"));
    nl_summary *s = summarise(&r, FIXTURE, NULL, NL_OK);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_summary_write(&ctx, s, tmp_path("sum.h5")), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_file_kind(tmp_path("sum.h5")), NL_H5_KIND_SUMMARY);
    cr_assert_eq(nl_h5_file_kind(tmp_path("acts.h5")), NL_H5_KIND_ACTIVATIONS);
    cr_assert_eq(nl_h5_file_kind(tmp_path("all.jsonl")), NL_H5_KIND_OTHER);
    cr_assert_eq(nl_h5_file_kind(tmp_path("missing.h5")), NL_H5_KIND_OTHER);
    nl_summary *x = NULL;
    cr_assert_eq(nl_summary_read(&ctx, tmp_path("acts.h5"), &x), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "is an activation file (per-token activations), not a summary (neuronlab record --stats)"), "%s", ctx.msg);
    cr_assert_eq(nl_summary_read(&ctx, tmp_path("all.jsonl"), &x), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "is not an HDF5 file"), "%s", ctx.msg);
    nl_h5_reader *rd = NULL;
    cr_assert_neq(nl_h5_reader_open(&ctx, tmp_path("sum.h5"), &rd), NL_OK);
    cr_assert(strstr(ctx.msg, "summary"), "an activation reader names the summary: %s", ctx.msg);
    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("bad.db"), 0, &db), NL_OK, "%s", ctx.msg);
    nl_sparsity_opts so;
    nl_sparsity_opts_init(&so);
    nl_sparsity_result sres = {0};
    cr_assert_eq(nl_sparsity_run(&ctx, &so, tmp_path("sum.h5"), db, NULL, &sres), NL_EINVAL); /* CETT asked for */
    cr_assert(strstr(ctx.msg, "CETT needs the per-token activations of a full activation file"), "%s", ctx.msg);
    cr_assert_eq(sres.run_id, -1);
    nl_sparsity_result_release(&sres);
    so.no_cett = 1;
    so.thresholds[1] = 0.05;
    cr_assert_eq(nl_sparsity_run(&ctx, &so, tmp_path("sum.h5"), db, NULL, &sres), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "frequencies above 0, 0.01, 0.1, 0.2 only: the frequency threshold 0.05 needs a full activation file"), "%s", ctx.msg);
    nl_sparsity_result_release(&sres);
    nl_sparsity_opts_init(&so);
    so.no_cett = 1;
    so.resident_threshold = 0.3;
    cr_assert_eq(nl_sparsity_run(&ctx, &so, tmp_path("sum.h5"), db, NULL, &sres), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "the resident threshold 0.3"), "%s", ctx.msg);
    nl_sparsity_result_release(&sres);
    nl_ability_opts ao;
    nl_ability_opts_init(&ao);
    ao.from_acts = 1;
    nl_ability_result ares = {0};
    cr_assert_eq(nl_ability_run(&ctx, &ao, tmp_path("sum.h5"), db, NULL, &ares), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "not the per-token activations"), "%s", ctx.msg);
    cr_assert_eq(ares.run_id, -1);
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM runs", -1, &q, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 0, "no run is begun for a refused input");
    sqlite3_finalize(q);
    nl_results_close(db);
    /* a truncated summary */
    size_t n = 0;
    char *bytes = nl_read_all(tmp_path("sum.h5"), &n);
    FILE *f = fopen(tmp_path("cut.h5"), "wb");
    fwrite(bytes, 1, n / 2, f);
    fclose(f);
    free(bytes);
    cr_assert_neq(nl_summary_read(&ctx, tmp_path("cut.h5"), &x), NL_OK);
    cr_assert(strstr(ctx.msg, "cut.h5"), "%s", ctx.msg);
    /* merging summaries of different layers is refused */
    nl_summary_desc d = {.model = FIXTURE, .arch = "llama", .ffn_kind = "gated", .act_fn = "silu", .n_layers = 2, .d_model = 64,
                         .d_ff = 128, .layers = (int[]){1}, .n_rec = 1};
    nl_summary *one;
    cr_assert_eq(nl_summary_create(&ctx, &d, &one), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_summary_merge(&ctx, s, one), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "cannot merge the summaries: their recorded layers differ"), "%s", ctx.msg);
    /* nor an f32 summary and a bf16 one (--compute): approximate statistics stay apart */
    nl_summary *f32, *bf16;
    cr_assert_eq(nl_summary_create(&ctx, &d, &f32), NL_OK, "%s", ctx.msg);
    cr_assert_str_eq(f32->compute, "f32");
    d.compute = "bf16";
    cr_assert_eq(nl_summary_create(&ctx, &d, &bf16), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_summary_merge(&ctx, f32, bf16), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "cannot merge the summaries: their compute formats (f32/bf16) differ"), "%s", ctx.msg);
    nl_summary_destroy(f32);
    nl_summary_destroy(bf16);
    nl_summary_destroy(one);
    nl_summary_destroy(s);
    runner_close(&r);
}

/* The zoo SiLU model on a few documents of notebooks-data/eval (text rows, tokenizer). */
Test(summary, zoo_silu_equals_dump, .timeout = 600) {
    if (!nl_path_exists(ZOO "/model.safetensors") || !nl_path_exists("notebooks-data/eval/code.jsonl"))
        cr_skip_test("notebooks-data/models/silu or notebooks-data/eval is absent: skipping the zoo model check");
    /* two short documents of each of three abilities, prompts cut to keep it quick */
    FILE *out = fopen(tmp_path("zoo.jsonl"), "w");
    static const char *files[] = {"code", "math", "writing"};
    for (int k = 0; k < 3; k++) {
        char p[128], line[1 << 16];
        snprintf(p, sizeof p, "notebooks-data/eval/%s.jsonl", files[k]);
        FILE *in = fopen(p, "r");
        cr_assert(in);
        for (int i = 0; i < 2 && fgets(line, sizeof line, in); i++) fputs(line, out);
        fclose(in);
    }
    fclose(out);
    runner r;
    runner_open(&r, ZOO, tmp_path("zoo.jsonl"), 1);
    nl_forward_destroy(r.f);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_forward_create(&ctx, r.m, 64, 256, &r.f), NL_OK, "%s", ctx.msg);
    dump(&r, ZOO, tmp_path("zoo.h5"));
    nl_summary *s = summarise(&r, ZOO, NULL, NL_OK);
    check_against_dump(s, tmp_path("zoo.h5"));
    cr_assert_eq(nl_summary_write(&ctx, s, tmp_path("zoo_sum.h5")), NL_OK, "%s", ctx.msg);
    check_analyses(tmp_path("zoo.h5"), tmp_path("zoo_sum.h5"), tmp_path("zoo.db"), 1e-12);
    nl_summary_destroy(s);
    runner_close(&r);
}
