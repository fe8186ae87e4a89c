/* test_sparsity.c — the sparsity analysis (analyses/sparsity.h) against closed-form values
 * and brute force: activations built so the fractions, frequencies, dead/resident counts
 * are known by hand (f32 and f16 files), a plain reference of every definition (per label,
 * per layer, pooled), quantiles and CDF within one histogram bin, CETT against an exhaustive
 * sweep over every distinct output norm (Llama and GPT-2 fixtures: no bias / bias and
 * Conv1D layout; a monotone variant must agree exactly for any grid size), the CETT token
 * sample, identical tables for any thread count and block size, and every bad input. */
#include "analyses/sparsity.h"

#include <ftw.h>
#include <hdf5.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "neuronlab/model.h"
#include "neuronlab/recorder.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

NL_TEST_TMPDIR("nl_sparsity")
TestSuite(sparsity, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir, .timeout = 120);

typedef float (*act_fn)(int l, int64_t row, int i, void *u);

typedef struct {
    const char *model; /* attribute */
    int L, D, F;
    int n_docs;
    const int *doc_len;
    const char **labels;
    act_fn act;
    void *u;
    const float *wn;   /* (L, F) or NULL: from model_for_wn */
    nl_model *model_for_wn;
    nl_h5_dtype dtype;
    int complete;      /* close with complete = 1 */
    int no_acts;
} spec;

static int64_t n_tokens(const spec *s) {
    int64_t n = 0;
    for (int d = 0; d < s->n_docs; d++) n += s->doc_len[d];
    return n;
}

static void write_file(const char *path, const spec *s) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.model = s->model, .arch = "llama", .n_layers = s->L, .d_model = s->D, .d_ff = s->F, .ffn_kind = "gated",
                    .act_fn = "silu", .dtype = s->dtype, .dataset = "synthetic.jsonl", .no_acts = s->no_acts,
                    .pooled = s->no_acts};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    float *a = malloc(sizeof(float) * (size_t)s->F * 64);
    int32_t ids[64];
    int64_t row = 0;
    for (int d = 0; d < s->n_docs; d++) {
        cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, s->labels[d], -1), NL_OK, "%s", ctx.msg);
        for (int done = 0; done < s->doc_len[d];) {
            int T = s->doc_len[d] - done < 64 ? s->doc_len[d] - done : 64;
            for (int t = 0; t < T; t++) ids[t] = (int32_t)((row + done + t) % 200);
            cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, T), NL_OK);
            for (int l = 0; l < s->L; l++) {
                for (int t = 0; t < T; t++)
                    for (int i = 0; i < s->F; i++) a[(size_t)t * s->F + i] = s->act(l, row + done + t, i, s->u);
                cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, l, a, T), NL_OK, "%s", ctx.msg);
            }
            done += T;
        }
        if (s->no_acts)
            for (int l = 0; l < s->L; l++) {
                for (int i = 0; i < s->F; i++) a[i] = 1;
                cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, l, a), NL_OK);
            }
        cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
        row += s->doc_len[d];
    }
    for (int l = 0; l < s->L; l++) {
        if (s->wn) memcpy(a, s->wn + (size_t)l * s->F, sizeof(float) * (size_t)s->F);
        else cr_assert_eq(nl_model_w_out_norm(&ctx, s->model_for_wn, l, a), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_h5_writer_put_w_out_norm(w, &ctx, l, a), NL_OK);
    }
    cr_assert_eq(nl_h5_writer_close(w, &ctx, s->complete), NL_OK, "%s", ctx.msg);
    free(a);
}

/* Reads activation (l, row, i) back from a spec (as stored: f16 rounding applied). */
static float stored(const spec *s, int l, int64_t row, int i) {
    float v = s->act(l, row, i, s->u);
    return s->dtype == NL_H5_F16 ? nl_f16_to_f32(nl_f32_to_f16(v)) : v;
}

/* Runs the analysis; returns the status, leaves the result in *out (caller releases). */
static nl_status analyse(const char *acts, const char *db, nl_sparsity_opts *o, int threads, nl_sparsity_result *out,
                         int64_t *run_id, char *msg) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.n_threads = threads;
    ctx.progress = 0;
    nl_sparsity_result res = {0};
    nl_results *r = NULL;
    nl_status st = nl_results_open(&ctx, db, 0, &r);
    res.run_id = -1;
    if (st == NL_OK) st = nl_sparsity_run(&ctx, o, acts, r, NULL, &res);
    if (run_id) *run_id = res.run_id;
    if (msg) strcpy(msg, ctx.msg);
    nl_results_close(r);
    if (out) *out = res;
    else nl_sparsity_result_release(&res);
    return st;
}

static sqlite3 *open_db(const char *p) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    return db;
}
static double qd(sqlite3 *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static double qd(sqlite3 *db, const char *fmt, ...) {
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "no row: %s", sql);
    double v = sqlite3_column_type(s, 0) == SQLITE_NULL ? NAN : sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* Every row of every sparsity table for one run, as text with exact (hex) reals. */
static char *dump_run(sqlite3 *db, int64_t run) {
    static const char *tables[] = {"sparsity_layer", "sparsity_hist", "sparsity_cdf", "sparsity_quantile", "sparsity_cett",
                                   "sparsity_cett_curve", "neurons", "neuron_freq"};
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    out[0] = 0;
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT * FROM %s WHERE run_id = %lld", tables[t], (long long)run); /* PK order */
        sqlite3_stmt *s;
        cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
        while (sqlite3_step(s) == SQLITE_ROW) {
            for (int c = 1; c < sqlite3_column_count(s); c++) {
                char cell[128];
                int ty = sqlite3_column_type(s, c);
                if (ty == SQLITE_FLOAT) snprintf(cell, sizeof cell, "%a|", sqlite3_column_double(s, c));
                else if (ty == SQLITE_NULL) snprintf(cell, sizeof cell, "null|");
                else snprintf(cell, sizeof cell, "%s|", (const char *)sqlite3_column_text(s, c));
                size_t k = strlen(cell);
                if (n + k + 2 >= cap) out = realloc(out, cap *= 2);
                memcpy(out + n, cell, k + 1);
                n += k;
            }
            out[n++] = '\n';
            out[n] = 0;
        }
        sqlite3_finalize(s);
    }
    return out;
}

/* ------------------------------------------------ a plain reference of the definitions */

typedef struct {
    int64_t tokens, pairs, zero, b1, b2;
    double sum_r;
    float *r; /* (pairs) every r, for quantiles and CDF */
} ref_dist;

/* Tokens of label lab ("" = all) under spec s. */
static int in_label(const spec *s, int64_t row, const char *lab) {
    if (!lab[0]) return 1;
    int64_t off = 0;
    for (int d = 0; d < s->n_docs; d++) {
        if (row < off + s->doc_len[d]) return !strcmp(s->labels[d], lab);
        off += s->doc_len[d];
    }
    return 0;
}

/* r of indicator x (0 value, 1 norm) for layer l (-1: all layers) and label. */
static void ref_distribution(const spec *s, const float *wn, int l, const char *lab, int x, ref_dist *rd) {
    memset(rd, 0, sizeof *rd);
    int64_t N = n_tokens(s);
    rd->r = malloc(sizeof(float) * (size_t)(N * s->F * s->L));
    for (int ll = 0; ll < s->L; ll++) {
        if (l >= 0 && ll != l) continue;
        for (int64_t t = 0; t < N; t++) {
            if (!in_label(s, t, lab)) continue;
            if (l >= 0 || ll == 0) rd->tokens++;
            float mx = 0;
            for (int i = 0; i < s->F; i++) {
                float v = fabsf(stored(s, ll, t, i)) * (x ? wn[(size_t)ll * s->F + i] : 1.0f);
                if (v > mx) mx = v;
            }
            for (int i = 0; i < s->F; i++) {
                float v = fabsf(stored(s, ll, t, i)) * (x ? wn[(size_t)ll * s->F + i] : 1.0f);
                float r = mx > 0 ? v / mx : 0.0f;
                rd->r[rd->pairs++] = r;
                rd->zero += r == 0;
                rd->b1 += (double)r < 0.1;
                rd->b2 += (double)r < 0.2;
                rd->sum_r += r;
            }
        }
    }
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The bin (lo, hi] holding r > 0, by frexp (an independent way to the same edges). */
static void ref_bin(double r, double *lo, double *hi) {
    if (r <= ldexp(1, -27)) { *lo = 0, *hi = ldexp(1, -27); return; }
    int e;
    double m = frexp(r, &e); /* r = m 2^e, m in [0.5, 1) */
    double u = m * 64 - 32;  /* position within the octave in 1/32 steps */
    double k = ceil(u) - 1;  /* bin (k, k+1] in those steps */
    *lo = ldexp((32 + k) / 64, e), *hi = ldexp((32 + k + 1) / 64, e);
}

/* Checks one (layer, label, indicator) row of the database against the reference. */
static void check_dist(sqlite3 *db, int64_t run, const spec *s, const float *wn, int l, const char *lab, int x) {
    static const char *ind[2] = {"value", "norm"};
    ref_dist rd;
    ref_distribution(s, wn, l, lab, x, &rd);
    const char *W = "run_id = %lld AND layer = %d AND label = '%s' AND indicator = '%s'";
    char where[256];
    snprintf(where, sizeof where, W, (long long)run, l, lab, ind[x]);
    cr_assert_eq((int64_t)qd(db, "SELECT tokens FROM sparsity_layer WHERE %s", where), rd.tokens, "%s", where);
    double P = (double)rd.pairs;
    cr_assert_eq(qd(db, "SELECT frac_zero FROM sparsity_layer WHERE %s", where), rd.zero / P, "%s", where);
    cr_assert_eq(qd(db, "SELECT frac_below_0_1 FROM sparsity_layer WHERE %s", where), rd.b1 / P, "%s", where);
    cr_assert_eq(qd(db, "SELECT frac_below_0_2 FROM sparsity_layer WHERE %s", where), rd.b2 / P, "%s", where);
    double mr = qd(db, "SELECT mean_r FROM sparsity_layer WHERE %s", where);
    cr_assert(fabs(mr - rd.sum_r / P) <= 1e-12, "%s: mean_r %.17g vs %.17g", where, mr, rd.sum_r / P);
    cr_assert_eq((int64_t)qd(db, "SELECT sum(count) FROM sparsity_hist WHERE %s", where), rd.pairs);
    qsort(rd.r, (size_t)rd.pairs, sizeof(float), cmp_f);
    for (int k = 0; k < NL_SPARSITY_N_QUANTILES; k++) {
        double q = nl_sparsity_quantiles[k];
        int64_t idx = (int64_t)ceil(q * P - 1e-9) - 1; /* smallest v with #(r ≤ v) ≥ qP */
        if (idx < 0) idx = 0;
        double exact = rd.r[idx], got = qd(db, "SELECT value FROM sparsity_quantile WHERE %s AND q = %.17g", where, q);
        if (exact == 0) cr_assert_eq(got, 0.0, "%s q %g", where, q);
        else {
            double lo, hi;
            ref_bin(exact, &lo, &hi);
            cr_assert(got >= lo && got <= hi, "%s q %g: %.9g outside the bin (%.9g, %.9g] of the exact %.9g", where, q, got, lo, hi,
                      exact);
            cr_assert(fabs(got - exact) <= exact / 32 + 1e-15, "%s q %g: %.9g vs %.9g", where, q, got, exact);
        }
    }
    for (int k = -160; k <= 0; k += 7) {
        double xv = k == 0 ? 1.0 : pow(10.0, k / 20.0);
        double got = qd(db, "SELECT cdf FROM sparsity_cdf WHERE %s AND abs(x - %.17g) < 1e-12 * %.17g", where, xv, xv);
        double lo, hi;
        ref_bin(xv, &lo, &hi);
        int64_t nlo = 0, nhi = 0, nx = 0;
        for (int64_t i = 0; i < rd.pairs; i++) nlo += rd.r[i] <= lo, nhi += rd.r[i] <= hi, nx += rd.r[i] <= xv;
        cr_assert(got >= nlo / P - 1e-12 && got <= nhi / P + 1e-12, "%s cdf(%g) = %g outside [%g, %g]", where, xv, got, nlo / P,
                  nhi / P);
        if (nlo == nhi) cr_assert(fabs(got - nx / P) < 1e-12, "%s cdf(%g) exact", where, xv);
    }
    free(rd.r);
}

/* ---------------------------------------------------------- closed-form activations */

/* 16 neurons; token scale s_t = ±2^(t%5 - 2); row 7 all zero. Neuron 15 = s_t (r = 1);
 * 0..9 = s_t·R[(i+t)%10]; 10 = 0; 11 = s_t/128; 12 = s_t/2; 13 = s_t/4 except t%20 == 0
 * (0); 14 = s_t/4 when t%10 < 8 else s_t/16. Layer 1 = layer 0 scaled by 3. */
static const float R10[10] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 1.0f / 64, 1.0f / 128, 1.0f / 256, 0.0f, 1.0f / 1024};
static float act_closed(int l, int64_t t, int i, void *u) {
    (void)u;
    if (t == 7) return 0;
    float st = ldexpf(t % 2 ? -1.0f : 1.0f, (int)(t % 5) - 2) * (l ? 3.0f : 1.0f);
    float r;
    if (i == 15) r = 1;
    else if (i < 10) r = R10[(i + t) % 10];
    else if (i == 10) r = 0;
    else if (i == 11) r = 1.0f / 128;
    else if (i == 12) r = 0.5f;
    else if (i == 13) r = t % 20 ? 0.25f : 0;
    else r = t % 10 < 8 ? 0.25f : 1.0f / 16;
    return st * r;
}

static const int CF_LEN[3] = {40, 24, 16};
static const char *CF_LAB[3] = {"a", "b", ""};
static float CF_WN[2 * 16];

static spec closed_spec(nl_h5_dtype dt) {
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 16; i++) CF_WN[l * 16 + i] = ldexpf(1.0f, i % 3) * (l ? 0.5f : 1.0f);
    spec s = {.model = "", .L = 2, .D = 8, .F = 16, .n_docs = 3, .doc_len = CF_LEN, .labels = CF_LAB, .act = act_closed,
              .wn = CF_WN, .dtype = dt, .complete = 1};
    return s;
}

static void closed_form(nl_h5_dtype dt) {
    spec s = closed_spec(dt);
    const char *acts = tmp_path("closed.h5"), *dbp = tmp_path("closed.db");
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.no_cett = 1;
    char msg[1024];
    int64_t run;
    nl_sparsity_result sp;
    cr_assert_eq(analyse(acts, dbp, &o, 2, &sp, &run, msg), NL_OK, "%s", msg);
    sqlite3 *db = open_db(dbp);
    /* Hand-computed anchors (layer 0, all 80 tokens; see act_closed): r < 0.1 in 747 of 1280
     * pairs; dead = neurons 10, 11; resident = 12, 13, 15. */
    cr_assert_eq(qd(db, "SELECT frac_below_0_1 FROM sparsity_layer WHERE layer = 0 AND label = '' AND indicator = 'value'"),
                 747.0 / 1280);
    cr_assert_eq(qd(db, "SELECT dead FROM sparsity_layer WHERE layer = 0 AND label = '' AND indicator = 'value'"), 2);
    cr_assert_eq(qd(db, "SELECT resident FROM sparsity_layer WHERE layer = 0 AND label = '' AND indicator = 'value'"), 3);
    cr_assert(isnan(qd(db, "SELECT dead FROM sparsity_layer WHERE layer = 0 AND label = '' AND indicator = 'norm'")));
    cr_assert_eq(qd(db, "SELECT group_concat(neuron) FROM neurons WHERE layer = 0 AND label = '' AND dead = 1"), 10);
    cr_assert_eq(qd(db, "SELECT count(*) FROM neurons WHERE layer = 0 AND label = '' AND dead = 1"), 2);
    cr_assert_eq(qd(db, "SELECT sum(neuron) FROM neurons WHERE layer = 1 AND label = '' AND resident = 1"), 12 + 13 + 15);
    cr_assert_eq(qd(db, "SELECT dead FROM sparsity_layer WHERE layer = -1 AND label = '' AND indicator = 'value'"), 4);
    cr_assert_eq(qd(db, "SELECT resident FROM sparsity_layer WHERE layer = -1 AND label = '' AND indicator = 'value'"), 6);
    cr_assert_eq(qd(db, "SELECT neurons FROM sparsity_layer WHERE layer = -1 AND label = '' AND indicator = 'value'"), 32);
    /* frequencies: neuron 10 never ≠ 0; neuron 11 in the 79 non-zero tokens at every τ ≤ 0.0078;
     * neuron 14 > 0.2 in 63 of 80; neuron 3 > 0.1 in 3 of every 10 tokens, minus row 7 (r = 0). */
    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE layer = 0 AND label = '' AND neuron = 10 AND threshold = 0"), 0);
    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE layer = 0 AND label = '' AND neuron = 11 AND threshold = 0"), 79.0 / 80);
    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE layer = 0 AND label = '' AND neuron = 11 AND threshold = 0.01"), 0);
    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE layer = 0 AND label = '' AND neuron = 14 AND threshold = 0.2"), 63.0 / 80);
    cr_assert_eq(qd(db, "SELECT max_r FROM neurons WHERE layer = 0 AND label = '' AND neuron = 11"), 1.0 / 128);
    cr_assert_eq(qd(db, "SELECT max_abs FROM neurons WHERE layer = 1 AND label = '' AND neuron = 15"), 3 * 4.0);
    /* per label: label 'b' = rows 40..63 */
    cr_assert_eq(qd(db, "SELECT tokens FROM sparsity_layer WHERE layer = 0 AND label = 'b' AND indicator = 'value'"), 24);
    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE layer = 0 AND label = 'b' AND neuron = 13 AND threshold = 0.2"), 22.0 / 24); /* rows 40, 60 */
    cr_assert_eq(qd(db, "SELECT count(*) FROM sparsity_layer WHERE label NOT IN ('', 'a', 'b')"), 0, "no row for unlabelled documents");

    /* Everything else against the reference, per layer and label, both indicators. */
    const char *labs[3] = {"", "a", "b"};
    for (int l = -1; l < 2; l++)
        for (int k = 0; k < 3; k++)
            for (int x = 0; x < 2; x++) check_dist(db, run, &s, CF_WN, l, labs[k], x);
    /* per-neuron rows against the reference */
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < 16; i++) {
                double sum = 0, mx = 0;
                int64_t n = 0, above[4] = {0};
                const double tau[4] = {0, 0.01, 0.1, 0.2};
                for (int64_t t = 0; t < 80; t++) {
                    if (!in_label(&s, t, labs[k])) continue;
                    n++;
                    float v = fabsf(stored(&s, l, t, i)), m = 0;
                    for (int j = 0; j < 16; j++) m = fmaxf(m, fabsf(stored(&s, l, t, j)));
                    float r = m > 0 ? v / m : 0;
                    sum += v, mx = fmax(mx, v);
                    for (int j = 0; j < 4; j++) above[j] += (double)r > tau[j];
                }
                char w[128];
                snprintf(w, sizeof w, "layer = %d AND label = '%s' AND neuron = %d", l, labs[k], i);
                cr_assert(fabs(qd(db, "SELECT mean_abs FROM neurons WHERE %s", w) - sum / n) < 1e-12, "%s", w);
                cr_assert_eq(qd(db, "SELECT max_abs FROM neurons WHERE %s", w), mx, "%s", w);
                cr_assert_eq(qd(db, "SELECT w_out_norm FROM neurons WHERE %s", w), CF_WN[l * 16 + i], "%s", w);
                for (int j = 0; j < 4; j++)
                    cr_assert_eq(qd(db, "SELECT freq FROM neuron_freq WHERE %s AND threshold = %.17g", w, tau[j]), (double)above[j] / n,
                                 "%s τ %g", w, tau[j]);
            }
    /* the summary rows agree with the tables */
    const int nr = sp.n_rows;
    const nl_sparsity_row *rows = sp.rows;
    cr_assert_eq(nr, 3 * 3);
    cr_assert_eq(rows[0].layer, 0);
    cr_assert_str_eq(rows[0].label, "");
    cr_assert_str_eq(rows[1].label, "a");
    cr_assert_eq(rows[8].layer, -1);
    cr_assert_eq(rows[0].ind[0].frac_below_0_1, 747.0 / 1280);
    cr_assert_eq(rows[0].n_cett, 0);
    cr_assert_eq(qd(db, "SELECT count(*) FROM runs WHERE status = 'complete' AND kind = 'sparsity' AND params LIKE '%%\"cett\":null%%'"), 1);
    cr_assert_eq(qd(db, "SELECT count(*) FROM sparsity_cett"), 0);
    sqlite3_close(db);
    nl_sparsity_result_release(&sp);
}

Test(sparsity, closed_form_f32) { closed_form(NL_H5_F32); }
Test(sparsity, closed_form_f16) { closed_form(NL_H5_F16); }

/* ---------------------------------------------------------- CETT brute force */

typedef struct {
    uint64_t seed;
    int nonneg;
    int zero_every;
} rnd_u;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL, x ^= x >> 33;
    return x;
}
/* Log-uniform magnitudes over ~6 decades, random signs (unless nonneg), some exact zeros. */
static float act_rand(int l, int64_t t, int i, void *u) {
    const rnd_u *r = u;
    uint64_t h = mix(r->seed ^ mix((uint64_t)t * 1000003u + (uint64_t)i * 7919u + (uint64_t)l * 104729u));
    if (r->zero_every && (h >> 40) % (uint64_t)r->zero_every == 0) return 0;
    double e = -6.0 * (double)(h & 0xffffff) / 16777216.0;
    float v = (float)pow(10.0, e) * (1.0f + (float)((h >> 24) & 0xff) / 256.0f);
    return (!r->nonneg && (h >> 32) & 1) ? -v : v;
}

typedef struct {
    double n;
    double delta;
} cev;
static int cmp_ev(const void *a, const void *b) {
    double x = ((const cev *)a)->n, y = ((const cev *)b)->n;
    return x < y ? -1 : x > y;
}
typedef struct {
    float n;
    int i;
} nid;
static int cmp_nid(const void *a, const void *b) {
    const nid *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return x->i - y->i;
}

typedef struct {
    int nc;            /* distinct candidates */
    double *c;         /* (nc) ascending */
    double *cett;      /* (nc) CETT(c) */
    int64_t *below;    /* (nc) pairs with n < c */
    double cett_inf;
    int64_t ntok, pairs;
} brute;

/* Exhaustive CETT at every distinct n of layer l over the tokens of label lab (sampled
 * when S < N): per token the ratio after each neuron in (n, index) order, then one sweep
 * over all (token, neuron) events sorted by n. */
static void brute_cett(const spec *s, nl_model *m, int l, const char *lab, int64_t S, brute *b) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_layer ly;
    cr_assert_eq(nl_model_layer(&ctx, m, l, &ly), NL_OK);
    const nl_mat *w = &ly.w_down;
    const int F = s->F, D = s->D;
    int64_t N = n_tokens(s);
    float *wn = malloc(sizeof(float) * F);
    cr_assert_eq(nl_model_w_out_norm(&ctx, m, l, wn), NL_OK);
    cev *ev = malloc(sizeof(cev) * (size_t)(N * F));
    int64_t ne = 0, zeros = 0;
    memset(b, 0, sizeof *b);
    double *y = malloc(sizeof(double) * D), *ratio = malloc(sizeof(double) * (F + 1));
    nid *ord = malloc(sizeof(nid) * F);
    float *a = malloc(sizeof(float) * F);
    for (int64_t t = 0; t < N; t++) {
        if (!in_label(s, t, lab)) continue;
        if ((t + 1) * S / N == t * S / N) continue; /* not in the CETT sample */
        b->pairs += F;
        for (int i = 0; i < F; i++) a[i] = stored(s, l, t, i);
        double ff = 0; /* ‖W a + b‖ in index order */
        for (int d = 0; d < D; d++) {
            double acc = ly.b_down ? ly.b_down[d] : 0;
            for (int i = 0; i < F; i++) acc += (double)a[i] * (w->trans ? w->w[(size_t)i * w->ld + d] : w->w[(size_t)d * w->ld + i]);
            ff += acc * acc;
        }
        ff = sqrt(ff);
        int mpos = 0;
        for (int i = 0; i < F; i++) {
            float n = fabsf(a[i]) * wn[i];
            if (n > 0) ord[mpos].n = n, ord[mpos].i = i, mpos++;
            else zeros++;
        }
        qsort(ord, mpos, sizeof(nid), cmp_nid);
        memset(y, 0, sizeof(double) * D);
        ratio[0] = 0;
        for (int k = 0; k < mpos; k++) {
            int i = ord[k].i;
            double nn = 0;
            for (int d = 0; d < D; d++) {
                y[d] += (double)a[i] * (w->trans ? w->w[(size_t)i * w->ld + d] : w->w[(size_t)d * w->ld + i]);
                nn += y[d] * y[d];
            }
            ratio[k + 1] = ff > 0 ? sqrt(nn) / ff : 0;
        }
        if (ff > 0) b->ntok++;
        for (int k = 0; k < mpos; k++) ev[ne].n = ord[k].n, ev[ne].delta = ratio[k + 1] - ratio[k], ne++;
    }
    qsort(ev, (size_t)ne, sizeof(cev), cmp_ev);
    b->c = malloc(sizeof(double) * (size_t)(ne + 1));
    b->cett = malloc(sizeof(double) * (size_t)(ne + 1));
    b->below = malloc(sizeof(int64_t) * (size_t)(ne + 1));
    double acc = 0;
    for (int64_t k = 0; k < ne; k++) {
        if (k == 0 || ev[k].n != ev[k - 1].n) {
            b->c[b->nc] = ev[k].n;
            b->cett[b->nc] = acc / (double)b->ntok;
            b->below[b->nc] = zeros + k;
            b->nc++;
        }
        acc += ev[k].delta;
    }
    b->cett_inf = acc / (double)b->ntok;
    free(ev), free(y), free(ratio), free(ord), free(a), free(wn);
}
static void brute_free(brute *b) { free(b->c), free(b->cett), free(b->below); }

typedef struct {
    int cases, exact_global, local_ok;
    double max_cett_diff;
} agreement;

/* Checks the run's sparsity_cett rows of every (layer, label, target) against brute force:
 * ε* is a distinct n with CETT(ε*) ≤ target < CETT(next distinct n) (a crossing), its CETT
 * and sparsity match; exact_global counts agreement with the largest such candidate. */
static void check_cett(sqlite3 *db, int64_t run, const spec *s, nl_model *m, const char *const *labs, int n_labs,
                       const double *targets, int nt, int64_t S, int must_be_global, agreement *ag) {
    for (int l = 0; l < s->L; l++)
        for (int k = 0; k < n_labs; k++) {
            brute b;
            brute_cett(s, m, l, labs[k], S, &b);
            for (int j = 0; j < nt; j++) {
                double tgt = targets[j];
                char w[160];
                snprintf(w, sizeof w, "run_id = %lld AND layer = %d AND label = '%s' AND abs(target - %.17g) < 1e-12",
                         (long long)run, l, labs[k], tgt);
                double eps = qd(db, "SELECT epsilon FROM sparsity_cett WHERE %s", w);
                double sp = qd(db, "SELECT sparsity FROM sparsity_cett WHERE %s", w);
                double ce = qd(db, "SELECT cett FROM sparsity_cett WHERE %s", w);
                cr_assert_eq((int64_t)qd(db, "SELECT tokens FROM sparsity_cett WHERE %s", w), b.ntok, "%s", w);
                int glob = -1;
                for (int c = 0; c < b.nc; c++)
                    if (b.cett[c] <= tgt) glob = c;
                ag->cases++;
                if (b.cett_inf <= tgt) {
                    cr_assert(isnan(eps) && sp == 1.0, "%s: CETT(inf) %g <= target", w, b.cett_inf);
                    ag->exact_global++, ag->local_ok++;
                    continue;
                }
                int c = 0;
                while (c < b.nc && b.c[c] != eps) c++;
                cr_assert(c < b.nc, "%s: epsilon %.9g is not a distinct output norm", w, eps);
                double next = c + 1 < b.nc ? b.cett[c + 1] : b.cett_inf;
                double diff = fabs(b.cett[c] - ce);
                if (diff > ag->max_cett_diff) ag->max_cett_diff = diff;
                cr_assert(diff <= 1e-9, "%s: CETT(eps*) %.15g vs brute force %.15g", w, ce, b.cett[c]);
                cr_assert(ce <= tgt, "%s: CETT %.15g > target", w, ce);
                cr_assert(b.cett[c] <= tgt + 1e-9 && next > tgt - 1e-9, "%s: not a crossing: CETT %.12g, next %.12g", w, b.cett[c], next);
                cr_assert_eq(sp, (double)b.below[c] / (double)b.pairs, "%s: sparsity", w);
                ag->local_ok++;
                if (c == glob) ag->exact_global++;
                else if (must_be_global)
                    cr_assert_fail("%s: eps* %.9g (CETT %.12g) but the largest candidate with CETT <= target is %.9g (CETT %.12g)", w,
                                   eps, ce, b.c[glob], b.cett[glob]);
            }
            brute_free(&b);
        }
}

static const char *LLAMA = "tests/fixtures/hf/llama";
static const char *GPT2 = "tests/fixtures/hf/gpt2";
static const int R_LEN[3] = {70, 50, 40};
static const char *R_LAB[3] = {"x", "y", "x"};

static spec rand_spec(const char *model, nl_model *m, rnd_u *u) {
    const nl_config *c = nl_model_config(m);
    spec s = {.model = model, .L = c->n_layers, .D = c->d_model, .F = c->d_ff, .n_docs = 3, .doc_len = R_LEN, .labels = R_LAB,
              .act = act_rand, .u = u, .model_for_wn = m, .dtype = NL_H5_F32, .complete = 1};
    return s;
}

static void cett_case(const char *model, int nonneg, int64_t sample, const char *name) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, model, &m), NL_OK, "%s", ctx.msg);
    rnd_u u = {.seed = 12345, .nonneg = nonneg, .zero_every = 9};
    spec s = rand_spec(model, m, &u);
    char acts[256], dbp[256];
    snprintf(acts, sizeof acts, "%s", tmp_path("rand.h5"));
    snprintf(dbp, sizeof dbp, "%s", tmp_path("rand.db"));
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.cett_targets[0] = 0.05, o.cett_targets[1] = 0.1, o.cett_targets[2] = 0.2, o.cett_targets[3] = 0.5;
    o.n_cett_targets = 4;
    o.cett_tokens = sample;
    char msg[1024];
    int64_t run;
    cr_assert_eq(analyse(acts, dbp, &o, 2, NULL, &run, msg), NL_OK, "%s", msg);
    sqlite3 *db = open_db(dbp);
    const char *labs[3] = {"", "x", "y"};
    agreement ag = {0};
    int64_t S = sample ? sample : n_tokens(&s);
    check_cett(db, run, &s, m, labs, 3, o.cett_targets, 4, S, 0, &ag);
    cr_log_info("%s: CETT brute force: %d (layer, label, target) cases, %d crossings verified, %d equal to the largest "
                "candidate with CETT <= target, max |CETT - brute| = %.2e",
                name, ag.cases, ag.local_ok, ag.exact_global, ag.max_cett_diff);
    fprintf(stderr, "[%s] CETT brute force: %d cases, %d crossings verified, %d = global largest, max |dCETT| = %.2e\n", name,
            ag.cases, ag.local_ok, ag.exact_global, ag.max_cett_diff);
    cr_assert_eq(ag.local_ok, ag.cases);
    /* layer -1: the mean over layers */
    double m01 = qd(db, "SELECT avg(sparsity) FROM sparsity_cett WHERE layer >= 0 AND label = '' AND target = 0.2");
    cr_assert(fabs(qd(db, "SELECT sparsity FROM sparsity_cett WHERE layer = -1 AND label = '' AND target = 0.2") - m01) < 1e-12);
    cr_assert(isnan(qd(db, "SELECT epsilon FROM sparsity_cett WHERE layer = -1 AND label = '' AND target = 0.2")));
    cr_assert(qd(db, "SELECT count(*) FROM sparsity_cett_curve WHERE layer = 0 AND label = ''") >= 100);
    sqlite3_close(db);
    nl_model_close(m);
}

Test(sparsity, cett_matches_brute_force_llama) { cett_case(LLAMA, 0, 0, "llama"); }
Test(sparsity, cett_matches_brute_force_gpt2_bias_conv1d) { cett_case(GPT2, 0, 0, "gpt2"); }
Test(sparsity, cett_token_sample_matches_brute_force) { cett_case(LLAMA, 0, 37, "llama, 37-token sample"); }

/* A copy of the Llama fixture with W_out = |W_out| (and a ≥ 0): every tail grows in the
 * positive orthant, CETT is monotone, and ε* must be the largest candidate exactly, for
 * any grid and refine size. */
static void abs_down_proj(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    size_t n = 0;
    unsigned char *b = nl_read_all(p, &n);
    cr_assert_not_null(b);
    uint64_t hl;
    memcpy(&hl, b, 8);
    json_t *h = json_loadb((const char *)b + 8, hl, 0, NULL);
    cr_assert_not_null(h);
    const char *key;
    json_t *v;
    int done = 0;
    json_object_foreach(h, key, v) {
        if (!strstr(key, "down_proj.weight")) continue;
        size_t o0 = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
        size_t o1 = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 1));
        float *w = (float *)(b + 8 + hl + o0);
        for (size_t i = 0; i < (o1 - o0) / 4; i++) w[i] = fabsf(w[i]);
        done++;
    }
    json_decref(h);
    cr_assert_eq(done, 2);
    FILE *f = fopen(p, "wb");
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

Test(sparsity, cett_monotone_is_exact_for_any_grid) {
    char dir[300], cmd[700];
    snprintf(dir, sizeof dir, "%s", tmp_path("llama_abs"));
    snprintf(cmd, sizeof cmd, "cp -r %s %s", LLAMA, dir);
    cr_assert_eq(system(cmd), 0);
    abs_down_proj(dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    rnd_u u = {.seed = 777, .nonneg = 1, .zero_every = 5};
    spec s = rand_spec(dir, m, &u);
    char acts[256], dbp[256];
    snprintf(acts, sizeof acts, "%s", tmp_path("mono.h5"));
    snprintf(dbp, sizeof dbp, "%s", tmp_path("mono.db"));
    write_file(acts, &s);
    const int grids[4][2] = {{256, 4096}, {8192, 4096}, {16, 4}, {2, 1}};
    const char *labs[3] = {"", "x", "y"};
    char *first = NULL;
    double first_cett[64];
    for (int g = 0; g < 4; g++) {
        nl_sparsity_opts o;
        nl_sparsity_opts_init(&o);
        o.cett_targets[0] = 0.02, o.cett_targets[1] = 0.1, o.cett_targets[2] = 0.2, o.cett_targets[3] = 0.9;
        o.n_cett_targets = 4;
        o.cett_grid = grids[g][0], o.cett_refine = grids[g][1];
        char msg[1024];
        int64_t run;
        cr_assert_eq(analyse(acts, dbp, &o, g == 1 ? 1 : 2, NULL, &run, msg), NL_OK, "%s", msg);
        sqlite3 *db = open_db(dbp);
        agreement ag = {0};
        check_cett(db, run, &s, m, labs, 3, o.cett_targets, 4, n_tokens(&s), 1, &ag);
        fprintf(stderr, "[monotone grid %d/%d] %d cases, all equal to the largest candidate; max |dCETT| = %.2e\n", grids[g][0],
                grids[g][1], ag.cases, ag.max_cett_diff);
        /* ε* and the sparsity exactly; CETT(ε*) to rounding (walks may sum in other groupings) */
        char sql[256], txt[8192] = "";
        snprintf(sql, sizeof sql, "SELECT epsilon, sparsity, cett FROM sparsity_cett WHERE run_id = %lld", (long long)run);
        sqlite3_stmt *st;
        cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        int nrow = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "%a %a ", sqlite3_column_double(st, 0), sqlite3_column_double(st, 1));
            if (g == 0) first_cett[nrow] = sqlite3_column_double(st, 2);
            else cr_assert(fabs(first_cett[nrow] - sqlite3_column_double(st, 2)) < 1e-12, "grid %d/%d: CETT", grids[g][0], grids[g][1]);
            nrow++;
        }
        cr_assert(nrow >= 24 && nrow <= 64);
        if (!first) first = strdup(txt);
        else cr_assert_str_eq(txt, first, "grid %d/%d changed epsilon or sparsity", grids[g][0], grids[g][1]);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    free(first);
    nl_model_close(m);
}

/* ------------------------------------------------ thread count and block size */

Test(sparsity, same_tables_for_any_threads_and_block_size) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, LLAMA, &m), NL_OK, "%s", ctx.msg);
    rnd_u u = {.seed = 99, .zero_every = 7};
    spec s = rand_spec(LLAMA, m, &u);
    const char *acts = tmp_path("det.h5");
    write_file(acts, &s);
    const int cfg[4][2] = {{1, 0}, {2, 1}, {2, 7}, {3, 64}};
    char *first = NULL;
    for (int c = 0; c < 4; c++) {
        char dbp[300];
        snprintf(dbp, sizeof dbp, "%s/det%d.db", g_dir, c);
        nl_sparsity_opts o;
        nl_sparsity_opts_init(&o);
        o.block_rows = cfg[c][1];
        char msg[1024];
        int64_t run;
        cr_assert_eq(analyse(acts, dbp, &o, cfg[c][0], NULL, &run, msg), NL_OK, "%s", msg);
        sqlite3 *db = open_db(dbp);
        char *d = dump_run(db, run);
        cr_assert(strlen(d) > 10000);
        if (!first) first = d;
        else {
            cr_assert(!strcmp(d, first), "threads %d, block %d: tables differ", cfg[c][0], cfg[c][1]);
            free(d);
        }
        sqlite3_close(db);
    }
    free(first);
    nl_model_close(m);
}

/* ----------------------------------------------------------------- bad input */

/* Refused inputs: the status and message, and nothing written (no run begun). */
static void expect_open_err(const char *acts, const nl_sparsity_opts *o, nl_status want, const char *n1, const char *n2) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *db = NULL;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("refused.db"), 0, &db), NL_OK, "%s", ctx.msg);
    nl_sparsity_result res = {0};
    nl_status st = nl_sparsity_run(&ctx, o, acts, db, NULL, &res);
    cr_assert_eq(st, want, "%s: status %d: %s", acts, st, ctx.msg);
    cr_assert_eq(res.run_id, -1);
    cr_assert_null(res.info);
    cr_assert_null(res.impl);
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM runs", -1, &q, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 0, "a refused input began a run");
    sqlite3_finalize(q);
    nl_sparsity_result_release(&res);
    nl_results_close(db);
    cr_assert(strstr(ctx.msg, n1), "message '%s' lacks '%s'", ctx.msg, n1);
    if (n2) cr_assert(strstr(ctx.msg, n2), "message '%s' lacks '%s'", ctx.msg, n2);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

Test(sparsity, bad_activation_files) {
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.no_cett = 1;
    const char *p = tmp_path("nope.h5");
    expect_open_err(p, &o, NL_EIO, p, "No such file");
    p = tmp_path("text.h5");
    FILE *f = fopen(p, "w");
    fputs("not hdf5 at all\n", f);
    fclose(f);
    expect_open_err(p, &o, NL_EFORMAT, p, "is not an HDF5 file");
    /* another HDF5 format */
    p = tmp_path("other.h5");
    hid_t h = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(h);
    expect_open_err(p, &o, NL_EFORMAT, p, "not a neuronlab activation file");
    /* version 2 */
    spec s = closed_spec(NL_H5_F32);
    p = tmp_path("v2.h5");
    write_file(p, &s);
    h = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(h, "version", H5P_DEFAULT);
    int two = 2;
    cr_assert(H5Awrite(a, H5T_NATIVE_INT, &two) >= 0);
    H5Aclose(a);
    H5Fclose(h);
    expect_open_err(p, &o, NL_EUNSUPPORTED, p, "version 2 is not supported");
    /* truncated */
    const char *good = tmp_path("good.h5");
    write_file(good, &s);
    size_t n = 0;
    void *b = nl_read_all(good, &n);
    p = tmp_path("trunc.h5");
    f = fopen(p, "wb");
    fwrite(b, 1, n / 2, f);
    fclose(f);
    free(b);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_sparsity_result sp = {0};
    nl_results *tdb = NULL;
    cr_assert_eq(nl_results_open(&ctx, tmp_path("trunc.db"), 0, &tdb), NL_OK, "%s", ctx.msg);
    cr_assert_neq(nl_sparsity_run(&ctx, &o, p, tdb, NULL, &sp), NL_OK);
    cr_assert(strstr(ctx.msg, p), "%s", ctx.msg);
    nl_sparsity_result_release(&sp);
    nl_results_close(tdb);
    /* pooled-only */
    s.no_acts = 1;
    p = tmp_path("pooled.h5");
    write_file(p, &s);
    expect_open_err(p, &o, NL_EFORMAT, p, "holds no activations");
    /* a non-finite activation fails the run, naming file, layer and token */
    s = closed_spec(NL_H5_F32);
    s.act = act_closed;
    p = tmp_path("nan.h5");
    {
        nl_h5_meta m = {.model = "", .n_layers = 1, .d_model = 8, .d_ff = 4, .ffn_kind = "gated"};
        nl_h5_writer *w;
        cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK);
        float row[3][4] = {{1, 2, 3, 4}, {1, NAN, 0, 0}, {1, 1, 1, 1}};
        int32_t ids[3] = {1, 2, 3};
        nl_h5_writer_begin_doc(w, &ctx, "", -1);
        nl_h5_writer_append_tokens(w, &ctx, ids, 3);
        nl_h5_writer_append_acts(w, &ctx, 0, &row[0][0], 3);
        nl_h5_writer_end_doc(w, &ctx);
        nl_h5_writer_put_w_out_norm(w, &ctx, 0, row[2]);
        cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK);
    }
    char msg[1024];
    cr_assert_eq(analyse(p, tmp_path("nan.db"), &o, 1, NULL, NULL, msg), NL_EFORMAT);
    cr_assert(strstr(msg, p) && strstr(msg, "layer 0 token 1 has a non-finite activation"), "%s", msg);
    sqlite3 *db = open_db(tmp_path("nan.db"));
    cr_assert_eq(qd(db, "SELECT count(*) FROM runs WHERE status = 'failed' AND message LIKE '%%non-finite%%'"), 1);
    sqlite3_close(db);
    /* bad options */
    nl_sparsity_opts bad = o;
    bad.thresholds[0] = 1.5;
    expect_open_err(good, &bad, NL_EINVAL, "threshold 1.5", NULL);
    bad = o;
    bad.no_cett = 0, bad.cett_targets[0] = 0, bad.model = LLAMA;
    expect_open_err(good, &bad, NL_EINVAL, "CETT target 0", NULL);
    /* a value given twice would collide in the tables' primary keys: refused before any run */
    bad = o;
    bad.thresholds[2] = bad.thresholds[1];
    expect_open_err(good, &bad, NL_EINVAL, "frequency threshold 0.01 is given twice", NULL);
    bad = o;
    bad.no_cett = 0, bad.model = LLAMA, bad.cett_targets[1] = bad.cett_targets[0];
    expect_open_err(good, &bad, NL_EINVAL, "CETT target 0.1 is given twice", NULL);
    /* a NaN in w_out_norm is named (file, layer, neuron), not blamed on the database */
    p = tmp_path("nan_norm.h5");
    {
        nl_h5_meta m = {.model = "", .n_layers = 1, .d_model = 8, .d_ff = 4, .ffn_kind = "gated"};
        nl_h5_writer *w;
        cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK);
        float row[2][4] = {{1, 2, 3, 4}, {1, NAN, 1, 1}};
        int32_t ids[1] = {1};
        nl_h5_writer_begin_doc(w, &ctx, "", -1);
        nl_h5_writer_append_tokens(w, &ctx, ids, 1);
        nl_h5_writer_append_acts(w, &ctx, 0, &row[0][0], 1);
        nl_h5_writer_end_doc(w, &ctx);
        nl_h5_writer_put_w_out_norm(w, &ctx, 0, row[1]);
        cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK);
    }
    cr_assert_neq(analyse(p, tmp_path("nan_norm.db"), &o, 1, NULL, NULL, msg), NL_OK);
    cr_assert(strstr(msg, p) && strstr(msg, "w_out_norm") && !strstr(msg, "NOT NULL"), "%s", msg);
}

Test(sparsity, model_mismatch_and_missing_model) {
    spec s = closed_spec(NL_H5_F32); /* d_model 8, d_ff 16, 2 layers: not the fixture's 64/128 */
    s.model = LLAMA;
    const char *p = tmp_path("mismatch.h5");
    write_file(p, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    expect_open_err(p, &o, NL_EFORMAT, LLAMA, p);
    expect_open_err(p, &o, NL_EFORMAT, "does not match", "d_model is 64 in the model, 8 in the activation file");
    o.model = GPT2;
    expect_open_err(p, &o, NL_EFORMAT, GPT2, "does not match");
    /* same shapes, other weights: the file's w_out_norm gives it away */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, LLAMA, &m), NL_OK);
    rnd_u u = {.seed = 5};
    spec r = rand_spec(LLAMA, m, &u);
    float *wn = calloc(2 * 128, sizeof(float));
    for (int i = 0; i < 256; i++) wn[i] = 1.0f;
    r.wn = wn;
    p = tmp_path("othernorms.h5");
    write_file(p, &r);
    o.model = NULL;
    expect_open_err(p, &o, NL_EFORMAT, "does not match", "w_out_norm");
    free(wn);
    /* a model that is not there: named, with the way out */
    r.wn = NULL;
    r.model = "/nonexistent/model";
    p = tmp_path("gone.h5");
    write_file(p, &r);
    expect_open_err(p, &o, NL_EIO, "/nonexistent/model", "--no-cett");
    o.no_cett = 1; /* … which works */
    char msg[1024];
    cr_assert_eq(analyse(p, tmp_path("gone.db"), &o, 2, NULL, NULL, msg), NL_OK, "%s", msg);
    /* --model overrides the attribute */
    o.no_cett = 0;
    o.model = LLAMA;
    cr_assert_eq(analyse(p, tmp_path("gone.db"), &o, 2, NULL, NULL, msg), NL_OK, "%s", msg);
    /* an empty model attribute */
    s.model = "";
    p = tmp_path("nomodel.h5");
    write_file(p, &s);
    o.model = NULL;
    expect_open_err(p, &o, NL_EINVAL, p, "names no model");
    nl_model_close(m);
}

Test(sparsity, locked_database) {
    spec s = closed_spec(NL_H5_F32);
    const char *acts = tmp_path("lk.h5"), *dbp = tmp_path("lk.db");
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.no_cett = 1;
    char msg[1024];
    cr_assert_eq(analyse(acts, dbp, &o, 1, NULL, NULL, msg), NL_OK, "%s", msg);
    setenv("NEURONLAB_DB_TIMEOUT_MS", "200", 1);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(dbp, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(analyse(acts, dbp, &o, 1, NULL, NULL, msg), NL_EIO);
    cr_assert(strstr(msg, dbp) && strstr(msg, "is locked by another process"), "%s", msg);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    /* a writer holding the lock mid-run: the run cannot be recorded */
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(analyse(acts, dbp, &o, 1, NULL, NULL, msg), NL_EIO);
    cr_assert(strstr(msg, dbp) && strstr(msg, "locked"), "%s", msg);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    unsetenv("NEURONLAB_DB_TIMEOUT_MS");
}

Test(sparsity, read_only_database) {
    spec s = closed_spec(NL_H5_F32);
    const char *acts = tmp_path("ro.h5"), *dbp = tmp_path("ro.db");
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.no_cett = 1;
    char msg[1024];
    cr_assert_eq(analyse(acts, dbp, &o, 1, NULL, NULL, msg), NL_OK, "%s", msg);
    chmod(dbp, 0444);
    chmod(g_dir, 0755);
    chmod(acts, 0644);
    /* root writes anywhere: the check runs in a child dropped to nobody (the suite's clean-up
     * stays root's); the child reports its message through a pipe */
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(3);
        nl_status st = analyse(acts, dbp, &o, 1, NULL, NULL, msg);
        ssize_t w = write(fd[1], msg, strlen(msg) + 1);
        (void)w;
        _exit(st == NL_EIO ? 0 : 1);
    }
    close(fd[1]);
    char got[1024] = "";
    ssize_t n = read(fd[0], got, sizeof got - 1);
    got[n > 0 ? n : 0] = 0;
    close(fd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit %d: %s", WEXITSTATUS(status), got);
    cr_assert(strstr(got, dbp) && strstr(got, "read-only"), "%s", got);
}

Test(sparsity, incomplete_file_is_analysed) {
    spec s = closed_spec(NL_H5_F32);
    s.complete = 0;
    const char *acts = tmp_path("inc.h5"), *dbp = tmp_path("inc.db");
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    o.no_cett = 1;
    nl_sparsity_result sp;
    char msg[1024];
    cr_assert_eq(analyse(acts, dbp, &o, 2, &sp, NULL, msg), NL_OK, "%s", msg);
    cr_assert_eq(sp.info->complete, 0);
    nl_sparsity_result_release(&sp);
    sqlite3 *db = open_db(dbp);
    cr_assert_eq(qd(db, "SELECT count(*) FROM runs WHERE params LIKE '%%\"file_complete\":0%%' AND status = 'complete'"), 1);
    sqlite3_close(db);
}

Test(sparsity, interrupt_marks_the_run) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, LLAMA, &m), NL_OK);
    rnd_u u = {.seed = 3};
    spec s = rand_spec(LLAMA, m, &u);
    const char *acts = tmp_path("int.h5"), *dbp = tmp_path("int.db");
    write_file(acts, &s);
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    char msg[1024];
    nl_interrupted = 1;
    nl_status st = analyse(acts, dbp, &o, 2, NULL, NULL, msg);
    nl_interrupted = 0;
    cr_assert_eq(st, NL_EINTR, "%s", msg);
    sqlite3 *db = open_db(dbp);
    cr_assert_eq(qd(db, "SELECT count(*) FROM runs WHERE status = 'interrupted' AND ended_at IS NOT NULL"), 1);
    cr_assert_eq(qd(db, "SELECT count(*) FROM sparsity_layer"), 0);
    sqlite3_close(db);
    /* rerunning adds a complete run beside it */
    cr_assert_eq(analyse(acts, dbp, &o, 2, NULL, NULL, msg), NL_OK, "%s", msg);
    db = open_db(dbp);
    cr_assert_eq(qd(db, "SELECT count(*) FROM runs WHERE status = 'complete'"), 1);
    cr_assert_eq(qd(db, "SELECT count(DISTINCT run_id) FROM sparsity_layer"), 1);
    sqlite3_close(db);
    nl_model_close(m);
}
