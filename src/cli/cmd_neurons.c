/* cmd_neurons.c — `neuronlab neurons SUMMARY.h5 --db results.db [--data DATA.jsonl]
 * [--tokenizer PATH] [--layers LIST] [--top N] [--before N] [--after N] [--scores RUN|latest]`:
 * the per-neuron tables behind the neuron pages (`report --neurons`): every neuron's top-K
 * activating contexts of a `record --stats` summary with the decoded text around the token,
 * its statistics, |a| histogram, frequencies, and its ability scores when the database holds
 * an ability run of the same model. One run of kind "neurons" (results.h provenance).
 *
 * Decoding: the summary stores (document, position, value) per context, not token ids; the
 * ids come from the dataset the summary was recorded on (--data, default the path stored in
 * the summary), which must have the same content (its "size fnv1a64" checksum equals the
 * summary's dataset_checksum) and document lengths. Text rows are tokenised again with
 * --tokenizer, else the summary's tokenizer, else the model's own. A context is three texts:
 * `before` = the up to --before tokens before the token, `token`, `after` = the up to
 * --after tokens after it, each the bytes the tokens add when decoded in sequence
 * (nl_tokenizer_piece after the real previous token, so a SentencePiece "▁" is a space and a
 * first token of a document loses it as the decoder does), special tokens as their own text
 * ("<s>"), each part repaired to valid UTF-8 on its own (a character split across two parts
 * becomes U+FFFD in both). Without any tokenizer the texts are the ids as "⟨id⟩".
 *
 * Tables (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   neuron_run(run_id PK, summary, ability_run (NULL: none), top, before, after, docs, tokens,
 *       layers, d_ff, thresholds TEXT (JSON array))
 *   neuron_stat(run_id, layer, neuron, tokens, mean, std, mean_abs, min, max, max_abs,
 *       w_out_norm, zero_frac)                                   PK (run_id, layer, neuron)
 *       over all tokens of the summary (groups combined by Chan's formula); std = sqrt(M2/N)
 *   neuron_frequency(run_id, layer, neuron, threshold, freq)    PK (run_id, layer, neuron, threshold)
 *       freq = fraction of tokens with r = |a_i| / max_j |a_j| > threshold (summary_h5.h)
 *   neuron_hist(run_id, layer, neuron, bin, lo, hi, count)       PK (run_id, layer, neuron, bin)
 *       the summary's |a| histogram, non-empty bins only: bin 0 is a = 0 (lo = hi = 0), bin b
 *       covers (lo, hi], hi NULL for the overflow bin (2^16, inf)
 *   neuron_context(run_id, layer, neuron, rank, doc, pos, label, value, token_id, before,
 *       token, after)                                            PK (run_id, layer, neuron, rank)
 *       rank 1 = largest |a| (ties: lower document, then lower position); value is signed
 *   neuron_ability(run_id, layer, neuron, ability, score, in_top) PK (run_id, layer, neuron, ability)
 *       copied from ability_score / ability_top of neuron_run.ability_run
 * The ability run: --scores RUN, or the latest complete ability run whose ability_model
 * fingerprint (Σ‖W_out[:, i]‖ per layer) equals the summary's w_out_norm sums on every layer
 * both hold (relative 1e-4, as prune checks it); none → no scores (a note on stderr).
 * --scores RUN of another model is an error. All rows are written in one transaction.
 * Checked by tests/neurons_cli.sh (contexts against an argsort of a full dump, escaping,
 * report links). */
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/results.h"
#include "neuronlab/rng.h"
#include "neuronlab/summary_h5.h"
#include "neuronlab/tokenizer.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_neurons[] = {
    {"SUMMARY.h5", NULL, 1, "a summary file (neuronlab record --stats)", NULL},
    {"--db", "results.db", 1, "the results database (created when missing)", NULL},
    {"--data", "DATA.jsonl", 0, "the dataset the summary was recorded on (same checksum), to decode the contexts",
     "the path stored in the summary"},
    {"--tokenizer", "PATH", 0, "tokenizer for text rows and for decoding", "the summary's, else the model's own"},
    {"--layers", "LIST", 0, "layers to write, like 0,2,5-7 (recorded in the summary)", "every recorded layer"},
    {"--top", "N", 0, "contexts per neuron (at most the summary's top-K)", "the summary's top-K"},
    {"--before", "N", 0, "tokens of context before the token (0..256)", "12"},
    {"--after", "N", 0, "tokens of context after the token (0..256)", "4"},
    {"--scores", "RUN|latest", 0, "the ability run whose scores go with the neurons",
     "the latest complete ability run of the same model, if any"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_neurons = {"neurons", NULL,
                                   "write each neuron's top activating contexts (decoded, token marked), statistics, |a| "
                                   "histogram and ability scores from a record --stats summary into the results database",
                                   run};

/* ---- decoding ------------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_put(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return -1;
        b->p = q, b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* Appends the bytes token ids[j] adds after ids[j - 1] (nothing before j = 0). */
static int put_token(buf *b, const nl_tokenizer *tok, const int32_t *ids, int j) {
    const int id = ids[j];
    char small[256];
    if (!tok || id < 0 || id >= nl_tokenizer_vocab_size(tok)) {
        int n = snprintf(small, sizeof small, "\xe2\x9f\xa8%d\xe2\x9f\xa9", id); /* ⟨id⟩ */
        return buf_put(b, small, (size_t)n);
    }
    if (nl_tokenizer_is_special(tok, id)) {
        size_t n = 0;
        const char *t = nl_tokenizer_token(tok, id, &n);
        return buf_put(b, t ? t : "", t ? n : 0);
    }
    const int prev = j > 0 ? ids[j - 1] : -1;
    size_t n = nl_tokenizer_piece(tok, prev, id, small, sizeof small);
    if (n <= sizeof small) return buf_put(b, small, n);
    char *big = malloc(n);
    if (!big) return -1;
    nl_tokenizer_piece(tok, prev, id, big, n);
    int r = buf_put(b, big, n);
    free(big);
    return r;
}

/* Tokens [a, e) of a document as text, repaired to valid UTF-8; malloc'd, NULL when out of memory. */
static char *span_text(const nl_tokenizer *tok, const int32_t *ids, int a, int e) {
    buf b = {0};
    if (buf_put(&b, "", 0)) return NULL;
    for (int j = a; j < e; j++)
        if (put_token(&b, tok, ids, j)) {
            free(b.p);
            return NULL;
        }
    size_t n;
    char *r = nl_utf8_repair(b.p, b.n, &n);
    free(b.p);
    return r;
}

/* "size=N fnv1a64=HEX" of a file's bytes, as record stores it in the summary. */
static nl_status data_checksum(nl_ctx *ctx, const char *path, char *out, size_t n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    static unsigned char chunk[1 << 16];
    uint64_t h = NL_FNV_INIT;
    long long size = 0;
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, fp)) > 0) h = nl_fnv1a(h, chunk, k), size += (long long)k;
    int err = ferror(fp);
    fclose(fp);
    if (err) return nl_errorf(ctx, NL_EIO, "cannot read '%s': read error", path);
    snprintf(out, n, "size=%lld fnv1a64=%016llx", size, (unsigned long long)h);
    return NL_OK;
}

/* ---- the ability run ------------------------------------------------------------------------- */

/* 1 when ability run `run` was computed on this summary's model: same d_ff, at least one layer in
 * common and, on every common layer, its ability_model fingerprint equals Σ w_out_norm. */
static int same_model(sqlite3 *h, int64_t run, const nl_summary *s) {
    sqlite3_stmt *q;
    int common = 0, ok = 1;
    if (sqlite3_prepare_v2(h, "SELECT m.layer, m.w_out_norm_sum, r.d_ff FROM ability_model m JOIN ability_run r USING (run_id)"
                              " WHERE m.run_id = ?1", -1, &q, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(q, 1, run);
    while (ok && sqlite3_step(q) == SQLITE_ROW) {
        int l = sqlite3_column_int(q, 0), j = nl_summary_layer_index(s, l);
        double want = sqlite3_column_double(q, 1);
        if (sqlite3_column_int(q, 2) != s->d_ff) ok = 0;
        if (!ok || j < 0) continue;
        double sum = 0;
        for (int i = 0; i < s->d_ff; i++) sum += s->lay[j].w_out_norm[i];
        if (!(fabs(sum - want) <= 1e-4 * fabs(want))) ok = 0;
        common++;
    }
    sqlite3_finalize(q);
    return ok && common > 0;
}

/* *out = the ability run to copy scores from (0: none). scores > 0 a given run, -1 the latest
 * matching, 0 (not given) the latest matching or none. */
static nl_status pick_ability_run(nl_ctx *ctx, nl_results *db, const nl_summary *s, const char *spath, int64_t scores, int64_t *out) {
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q;
    *out = 0;
    int has = 0;
    if (sqlite3_prepare_v2(h, "SELECT 1 FROM sqlite_master WHERE name = 'ability_model'", -1, &q, NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW, sqlite3_finalize(q);
    if (scores > 0) {
        const char *status = NULL;
        int ok = 0;
        if (sqlite3_prepare_v2(h, "SELECT status, kind FROM runs WHERE id = ?1", -1, &q, NULL) != SQLITE_OK)
            return nl_results_error(ctx, db, "reading runs");
        sqlite3_bind_int64(q, 1, scores);
        if (sqlite3_step(q) == SQLITE_ROW) {
            status = (const char *)sqlite3_column_text(q, 0);
            const char *kind = (const char *)sqlite3_column_text(q, 1);
            ok = kind && !strcmp(kind, "ability") && status && !strcmp(status, "complete");
        }
        sqlite3_finalize(q);
        if (!ok)
            return nl_errorf(ctx, NL_EINVAL, "--scores %lld: '%s' has no complete ability run %lld", (long long)scores,
                             nl_results_path(db), (long long)scores);
        if (!has || !same_model(h, scores, s))
            return nl_errorf(ctx, NL_EINVAL, "--scores %lld: the ability run is from another model than the summary '%s' "
                                             "(W_out norms or d_ff differ, or no layer in common)", (long long)scores, spath);
        *out = scores;
        return NL_OK;
    }
    if (!has) return NL_OK;
    if (sqlite3_prepare_v2(h, "SELECT id FROM runs WHERE kind = 'ability' AND status = 'complete' ORDER BY id DESC", -1, &q, NULL) !=
        SQLITE_OK)
        return nl_results_error(ctx, db, "reading runs");
    while (!*out && sqlite3_step(q) == SQLITE_ROW) {
        int64_t r = sqlite3_column_int64(q, 0);
        if (same_model(h, r, s)) *out = r;
    }
    sqlite3_finalize(q);
    if (!*out && scores < 0)
        return nl_errorf(ctx, NL_EINVAL, "--scores latest: '%s' has no complete ability run of the summary's model",
                         nl_results_path(db));
    return NL_OK;
}

/* ---- tables ---------------------------------------------------------------------------------- */

static const char DDL[] =
    "CREATE TABLE IF NOT EXISTS neuron_run(run_id INTEGER PRIMARY KEY REFERENCES runs(id), summary TEXT NOT NULL,"
    " ability_run INTEGER, top INTEGER NOT NULL, before INTEGER NOT NULL, after INTEGER NOT NULL, docs INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL, layers INTEGER NOT NULL, d_ff INTEGER NOT NULL, thresholds TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS neuron_stat(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, tokens INTEGER NOT NULL, mean REAL, std REAL, mean_abs REAL, min REAL, max REAL, max_abs REAL,"
    " w_out_norm REAL, zero_frac REAL, PRIMARY KEY (run_id, layer, neuron)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neuron_frequency(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, threshold REAL NOT NULL, freq REAL NOT NULL, PRIMARY KEY (run_id, layer, neuron, threshold))"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neuron_hist(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, bin INTEGER NOT NULL, lo REAL NOT NULL, hi REAL, count INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, neuron, bin)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neuron_context(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, rank INTEGER NOT NULL, doc INTEGER NOT NULL, pos INTEGER NOT NULL, label TEXT NOT NULL,"
    " value REAL NOT NULL, token_id INTEGER NOT NULL, before TEXT NOT NULL, token TEXT NOT NULL, after TEXT NOT NULL,"
    " PRIMARY KEY (run_id, layer, neuron, rank)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neuron_ability(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, ability TEXT NOT NULL, score REAL, in_top INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, neuron, ability)) WITHOUT ROWID;";

enum { Q_STAT, Q_FREQ, Q_HIST, Q_CTX, Q_N };
static const char *const INS[Q_N] = {
    "INSERT INTO neuron_stat VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
    "INSERT INTO neuron_frequency VALUES(?,?,?,?,?)",
    "INSERT INTO neuron_hist VALUES(?,?,?,?,?,?,?)",
    "INSERT INTO neuron_context VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
};

static void bind_real(sqlite3_stmt *q, int c, double v) {
    if (isfinite(v)) sqlite3_bind_double(q, c, v);
    else sqlite3_bind_null(q, c);
}

typedef struct {
    const nl_summary *s;
    const nl_dataset *ds;
    const nl_tokenizer *tok;
    const int *layers; /* (n_layers) model layers to write */
    int n_layers, top, before, after;
    int64_t run, ability_run;
    const char *spath;
} job;

/* One neuron's rows. */
static nl_status write_neuron(nl_ctx *ctx, nl_results *db, sqlite3_stmt **q, const job *J, int l, int j, int i) {
    const nl_summary *s = J->s;
    const nl_summary_layer *y = &s->lay[j];
    const int F = s->d_ff, G = s->n_groups, K = s->top_k;
    int64_t N = 0;
    double mean = 0, sum_abs = 0, mn = INFINITY, mx = -INFINITY;
    for (int g = 0; g < G; g++) {
        int64_t n = s->group_tokens[g];
        if (n <= 0) continue;
        N += n;
        mean += (double)n * y->mean[(size_t)g * F + i];
        sum_abs += y->sum_abs[(size_t)g * F + i];
        if (y->min[(size_t)g * F + i] < mn) mn = y->min[(size_t)g * F + i];
        if (y->max[(size_t)g * F + i] > mx) mx = y->max[(size_t)g * F + i];
    }
    mean = N ? mean / (double)N : NAN;
    double m2 = 0;
    for (int g = 0; g < G; g++) {
        int64_t n = s->group_tokens[g];
        if (n <= 0) continue;
        double d = y->mean[(size_t)g * F + i] - mean;
        m2 += y->m2[(size_t)g * F + i] + (double)n * d * d;
    }
    int64_t zeros = y->abs_hist[(size_t)i * NL_SUMMARY_ABS_BINS];
    sqlite3_stmt *st = q[Q_STAT];
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, J->run), sqlite3_bind_int(st, 2, l), sqlite3_bind_int(st, 3, i), sqlite3_bind_int64(st, 4, N);
    bind_real(st, 5, mean), bind_real(st, 6, N ? sqrt(m2 / (double)N) : NAN), bind_real(st, 7, N ? sum_abs / (double)N : NAN);
    bind_real(st, 8, mn), bind_real(st, 9, mx), bind_real(st, 10, N ? fmax(-mn, mx) : NAN), bind_real(st, 11, y->w_out_norm[i]);
    bind_real(st, 12, N ? (double)zeros / (double)N : NAN);
    if (sqlite3_step(st) != SQLITE_DONE) return nl_results_error(ctx, db, "writing neuron_stat");
    for (int k = 0; k < s->n_tau; k++) {
        int64_t c = 0;
        for (int g = 0; g < G; g++) c += y->freq[((size_t)g * s->n_tau + k) * F + i];
        st = q[Q_FREQ];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, J->run), sqlite3_bind_int(st, 2, l), sqlite3_bind_int(st, 3, i);
        sqlite3_bind_double(st, 4, s->tau[k]), sqlite3_bind_double(st, 5, N ? (double)c / (double)N : 0);
        if (sqlite3_step(st) != SQLITE_DONE) return nl_results_error(ctx, db, "writing neuron_frequency");
    }
    for (int b = 0; b < NL_SUMMARY_ABS_BINS; b++) {
        int64_t c = y->abs_hist[(size_t)i * NL_SUMMARY_ABS_BINS + b];
        if (!c) continue;
        double lo, hi;
        nl_summary_abs_bin(b, &lo, &hi);
        st = q[Q_HIST];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, J->run), sqlite3_bind_int(st, 2, l), sqlite3_bind_int(st, 3, i), sqlite3_bind_int(st, 4, b);
        sqlite3_bind_double(st, 5, lo), bind_real(st, 6, hi), sqlite3_bind_int64(st, 7, c);
        if (sqlite3_step(st) != SQLITE_DONE) return nl_results_error(ctx, db, "writing neuron_hist");
    }
    const int n_ctx = y->top_n[i] < J->top ? y->top_n[i] : J->top;
    for (int r = 0; r < n_ctx; r++) {
        const size_t at = (size_t)i * K + r;
        const int d = y->top_doc[at], p = y->top_pos[at];
        const nl_doc *doc = &J->ds->docs[d]; /* d < s->n_docs ≤ ds->n_docs, p < its length: checked on load */
        int a = p - J->before > 0 ? p - J->before : 0, e = p + 1 + J->after < doc->n_tokens ? p + 1 + J->after : doc->n_tokens;
        char *tb = span_text(J->tok, doc->tokens, a, p), *tt = span_text(J->tok, doc->tokens, p, p + 1),
             *ta = span_text(J->tok, doc->tokens, p + 1, e);
        nl_status rs = tb && tt && ta ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (rs == NL_OK) {
            st = q[Q_CTX];
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, J->run), sqlite3_bind_int(st, 2, l), sqlite3_bind_int(st, 3, i), sqlite3_bind_int(st, 4, r + 1);
            sqlite3_bind_int(st, 5, d), sqlite3_bind_int(st, 6, p), sqlite3_bind_text(st, 7, s->doc_labels[d], -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 8, y->top_value[at]), sqlite3_bind_int(st, 9, doc->tokens[p]);
            sqlite3_bind_text(st, 10, tb, -1, SQLITE_STATIC), sqlite3_bind_text(st, 11, tt, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 12, ta, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE) rs = nl_results_error(ctx, db, "writing neuron_context");
        }
        free(tb), free(tt), free(ta);
        if (rs != NL_OK) return rs;
    }
    return NL_OK;
}

static nl_status write_rows(nl_ctx *ctx, nl_results *db, const job *J) {
    const nl_summary *s = J->s;
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q[Q_N] = {0};
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    for (int k = 0; k < Q_N && st == NL_OK; k++)
        if (sqlite3_prepare_v2(h, INS[k], -1, &q[k], NULL) != SQLITE_OK) st = nl_results_error(ctx, db, "preparing inserts");
    if (st == NL_OK) {
        char thr[512];
        int o = snprintf(thr, sizeof thr, "[");
        for (int k = 0; k < s->n_tau; k++) o += snprintf(thr + o, sizeof thr - (size_t)o, "%s%.15g", k ? "," : "", s->tau[k]);
        snprintf(thr + o, sizeof thr - (size_t)o, "]");
        sqlite3_stmt *r;
        if (sqlite3_prepare_v2(h, "INSERT INTO neuron_run VALUES(?,?,?,?,?,?,?,?,?,?,?)", -1, &r, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, db, "writing neuron_run");
        else {
            sqlite3_bind_int64(r, 1, J->run), sqlite3_bind_text(r, 2, J->spath, -1, SQLITE_STATIC);
            if (J->ability_run > 0) sqlite3_bind_int64(r, 3, J->ability_run);
            else sqlite3_bind_null(r, 3);
            sqlite3_bind_int(r, 4, J->top), sqlite3_bind_int(r, 5, J->before), sqlite3_bind_int(r, 6, J->after);
            sqlite3_bind_int64(r, 7, s->n_docs), sqlite3_bind_int64(r, 8, s->n_tokens), sqlite3_bind_int(r, 9, J->n_layers);
            sqlite3_bind_int(r, 10, s->d_ff), sqlite3_bind_text(r, 11, thr, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(r) != SQLITE_DONE) st = nl_results_error(ctx, db, "writing neuron_run");
            sqlite3_finalize(r);
        }
    }
    nl_progress prog;
    nl_progress_init(&prog, "neurons", (int64_t)J->n_layers * s->d_ff, "neurons", ctx->progress);
    for (int jj = 0; jj < J->n_layers && st == NL_OK; jj++) {
        const int l = J->layers[jj], j = nl_summary_layer_index(s, l);
        for (int i = 0; i < s->d_ff && st == NL_OK; i++) {
            if (nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
            else st = write_neuron(ctx, db, q, J, l, j, i);
            nl_progress_add(&prog, 1);
        }
        if (st == NL_OK && J->ability_run > 0) {
            sqlite3_stmt *a;
            if (sqlite3_prepare_v2(h, "INSERT INTO neuron_ability SELECT ?1, sc.layer, sc.neuron, sc.ability, sc.score,"
                                      " EXISTS(SELECT 1 FROM ability_top t WHERE t.run_id = sc.run_id AND t.ability = sc.ability"
                                      " AND t.layer = sc.layer AND t.neuron = sc.neuron)"
                                      " FROM ability_score sc WHERE sc.run_id = ?2 AND sc.layer = ?3", -1, &a, NULL) != SQLITE_OK)
                st = nl_results_error(ctx, db, "copying ability scores");
            else {
                sqlite3_bind_int64(a, 1, J->run), sqlite3_bind_int64(a, 2, J->ability_run), sqlite3_bind_int(a, 3, l);
                if (sqlite3_step(a) != SQLITE_DONE) st = nl_results_error(ctx, db, "copying ability scores");
                sqlite3_finalize(a);
            }
        }
    }
    nl_progress_end(&prog);
    for (int k = 0; k < Q_N; k++) sqlite3_finalize(q[k]);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    if (st != NL_OK) nl_results_rollback(db);
    return st;
}

/* ---- the command ----------------------------------------------------------------------------- */

/* Checks that the dataset holds the summary's documents (same lengths) and that every stored
 * context points inside them. */
static nl_status check_data(nl_ctx *ctx, const nl_summary *s, const nl_dataset *ds, const char *spath, const char *dpath) {
    if (ds->n_docs < s->n_docs)
        return nl_errorf(ctx, NL_EINVAL, "'%s' has %d documents but the summary '%s' holds %lld", dpath, ds->n_docs, spath,
                         (long long)s->n_docs);
    for (int64_t d = 0; d < s->n_docs; d++)
        if (ds->docs[d].n_tokens != s->doc_offsets[d + 1] - s->doc_offsets[d])
            return nl_errorf(ctx, NL_EINVAL, "document %lld (line %d) of '%s' has %d tokens but %lld in the summary '%s' "
                                             "(another tokenizer? give the one it was recorded with: --tokenizer)",
                             (long long)d, ds->docs[d].line, dpath, ds->docs[d].n_tokens,
                             (long long)(s->doc_offsets[d + 1] - s->doc_offsets[d]), spath);
    return NL_OK;
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *me = &nl_cmd_neurons;
    nl_cli_common co = {0};
    const char *spath = NULL, *data = NULL, *tokp = NULL, *layers_s = NULL, *v;
    long top = 0, before = 12, after = 4;
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_common_arg(me, ctx, NL_CLI_DB | NL_CLI_SCORES, &co, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_opt(argc, argv, &i, "--data", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(me, "--data needs a JSONL path");
            data = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--tokenizer", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(me, "--tokenizer needs a path");
            tokp = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--layers", &v))) {
            if (k < 0) return nl_cli_usage(me, "--layers needs a list like 0,2,5-7");
            layers_s = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--top", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, NL_SUMMARY_MAX_K, &top))
                return nl_cli_usage(me, "--top needs a count of contexts in 1..%d", NL_SUMMARY_MAX_K);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--before", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 256, &before))
                return nl_cli_usage(me, "--before needs a count of tokens in 0..256");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--after", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 256, &after))
                return nl_cli_usage(me, "--after needs a count of tokens in 0..256");
        } else if ((k = nl_cli_positional(me, argv, i, &spath)) != 1) return k;
    }
    if (!spath) return nl_cli_usage(me, "missing SUMMARY.h5 (a record --stats file)");
    if (!co.db) return nl_cli_usage(me, "missing --db results.db");

    nl_summary *s = NULL;
    nl_tokenizer *tok = NULL;
    nl_dataset *ds = NULL;
    nl_results *db = NULL;
    int *layers = NULL, n_layers = 0;
    int64_t run_id = 0, ability_run = 0;
    nl_status st;
    if (nl_h5_file_kind(spath) == NL_H5_KIND_ACTIVATIONS)
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is an activation file (per-token activations), not a summary: neurons needs the "
                                        "top-K contexts of `record --stats`", spath);
    else st = nl_summary_read(ctx, spath, &s);
    if (st == NL_OK && !data) {
        data = s->dataset;
        if (!*data) st = nl_errorf(ctx, NL_EINVAL, "'%s' does not name its dataset: give --data", spath);
    }
    if (st == NL_OK) { /* the layers: all recorded, or a subset of them */
        layers = malloc((size_t)(s->n_layers > 0 ? s->n_layers : 1) * sizeof *layers);
        if (!layers) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else if (!layers_s) {
            memcpy(layers, s->layers, (size_t)s->n_rec * sizeof *layers);
            n_layers = s->n_rec;
        } else if ((n_layers = nl_cli_layer_list(layers_s, s->n_layers, layers)) <= 0)
            st = nl_errorf(ctx, NL_EINVAL, "--layers '%s': expected a list like 0,2,5-7 of layers in 0..%d", layers_s, s->n_layers - 1);
        for (int j = 0; st == NL_OK && j < n_layers; j++)
            if (nl_summary_layer_index(s, layers[j]) < 0)
                st = nl_errorf(ctx, NL_EINVAL, "--layers: layer %d is not recorded in '%s'", layers[j], spath);
        if (st == NL_OK && top > s->top_k)
            st = nl_errorf(ctx, NL_EINVAL, "--top %ld: '%s' keeps only the top %d contexts per neuron (record --stats --top-k)", top,
                           spath, s->top_k);
        if (!top && s) top = s->top_k;
    }
    if (st == NL_OK && s->dataset_checksum[0]) {
        char sum[96];
        if ((st = data_checksum(ctx, data, sum, sizeof sum)) == NL_OK && strcmp(sum, s->dataset_checksum))
            st = nl_errorf(ctx, NL_EINVAL, "'%s' is not the dataset the summary '%s' was recorded on (its checksum is '%s', the "
                                           "summary's '%s'): give that file with --data", data, spath, sum, s->dataset_checksum);
    }
    if (st == NL_OK) {
        const char *tp = tokp ? tokp : s->tokenizer;
        if (tp && *tp) st = nl_tokenizer_open(ctx, tp, &tok);
        else if (*s->model) {
            nl_ctx quiet;
            nl_ctx_init(&quiet);
            if (nl_tokenizer_for_model(&quiet, s->model, &tok) != NL_OK) tok = NULL; /* decoding falls back to ids */
        }
    }
    if (st == NL_OK) st = nl_dataset_load(ctx, data, tok, 0, &ds);
    if (st == NL_OK) st = check_data(ctx, s, ds, spath, data);
    if (st == NL_OK && !tok)
        fprintf(stderr, "neuronlab: note: no tokenizer for '%s' (give --tokenizer): contexts are written as token ids\n", spath);
    if (st == NL_OK) st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) st = nl_results_exec(ctx, db, DDL);
    if (st == NL_OK) st = pick_ability_run(ctx, db, s, spath, co.scores, &ability_run);
    if (st == NL_OK) {
        char params[4096];
        int o = snprintf(params, sizeof params, "{\"layers\":");
        if (!layers_s) o += snprintf(params + o, sizeof params - (size_t)o, "\"all\"");
        for (int j = 0; layers_s && j < n_layers && o < (int)sizeof params - 64; j++)
            o += snprintf(params + o, sizeof params - (size_t)o, "%s%d", j ? "," : "[", layers[j]);
        if (layers_s) o += snprintf(params + o, sizeof params - (size_t)o, "]");
        o += snprintf(params + o, sizeof params - (size_t)o, ",\"top\":%ld,\"before\":%ld,\"after\":%ld,\"tokenizer\":", top, before,
                      after);
        const char *tn = tok ? nl_tokenizer_path(tok) : NULL;
        if (tn) {
            o += snprintf(params + o, sizeof params - (size_t)o, "\"");
            for (const char *c = tn; *c && o < (int)sizeof params - 80; c++)
                o += snprintf(params + o, sizeof params - (size_t)o, *c == '"' || *c == '\\' ? "\\%c" : (unsigned char)*c < 0x20 ? "?" : "%c",
                              *c);
            o += snprintf(params + o, sizeof params - (size_t)o, "\"");
        } else o += snprintf(params + o, sizeof params - (size_t)o, "null");
        if (ability_run > 0) snprintf(params + o, sizeof params - (size_t)o, ",\"scores\":%lld}", (long long)ability_run);
        else snprintf(params + o, sizeof params - (size_t)o, ",\"scores\":null}");
        nl_run_info info = {.kind = "neurons", .model = s->model, .dataset = data, .source = spath, .params = params};
        st = nl_results_begin_run(ctx, db, &info, &run_id);
    }
    if (st == NL_OK) {
        job J = {s, ds, tok, layers, n_layers, (int)top, (int)before, (int)after, run_id, ability_run, spath};
        st = write_rows(ctx, db, &J);
    }
    if (db && run_id > 0) st = nl_results_finish_run(ctx, db, run_id, st, NULL);
    int rc = nl_cli_finish(ctx, st, "interrupted: run %lld wrote no rows", (long long)run_id);
    if (st == NL_OK) {
        printf("neurons: run %lld in '%s': %d layers x %d neurons, %ld contexts each (%ld tokens before, %ld after)", (long long)run_id,
               co.db, n_layers, s->d_ff, top, before, after);
        if (ability_run > 0) printf(", ability scores of run %lld\n", (long long)ability_run);
        else printf(", no ability scores (no complete ability run of this model in the database)\n");
        if (!s->complete) fprintf(stderr, "neuronlab: warning: '%s' is incomplete (an interrupted record --stats): its %lld documents only\n",
                                  spath, (long long)s->n_docs);
    }
    nl_results_close(db);
    nl_dataset_destroy(ds);
    nl_tokenizer_close(tok);
    nl_summary_destroy(s);
    free(layers);
    return rc;
}
