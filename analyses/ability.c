/* ability.c — ability neurons: FuncScore (AP) and predictivity per neuron and ability, layer
 * statistics beside random and shuffled-label baselines, top sets (see ability.h). Checks the
 * values it reads (non-finite w_out_norm, pooled values, activations: named errors) and the text
 * columns of the database (a NULL left by another tool: a named error, never a crash); polls
 * nl_interrupted. Checked by tests/test_ability.c, test_overlap.c, ability_cli.sh, cli_errors.sh. */
#include "analyses/ability.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/model.h"
#include "neuronlab/rng.h"
#include "neuronlab/summary_h5.h"

#define RNG_SHUFFLE 0x61626c /* nl_rng_derive purpose: label shuffling */

const char *nl_ability_method_name(nl_ability_method m) { return m == NL_ABILITY_PREDICTIVITY ? "predictivity" : "ap"; }

int nl_ability_method_parse(const char *s) {
    if (!strcmp(s, "ap")) return NL_ABILITY_AP;
    if (!strcmp(s, "predictivity")) return NL_ABILITY_PREDICTIVITY;
    return -1;
}

uint64_t nl_ability_split_key(uint64_t seed, int doc) {
    return nl_mix64(seed ^ nl_mix64(0x8000000000000000ULL | (uint64_t)(uint32_t)doc));
}

int nl_ability_split_count(double split, int n) {
    int k = (int)floor(split * n + 0.5);
    if (k > n - 1) k = n - 1;
    return k < 1 ? 1 : k;
}

void nl_ability_opts_init(nl_ability_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = NL_ABILITY_AP;
    o->top = 0.05;
}

/* ---- scores ---------------------------------------------------------------------------- */

typedef struct {
    float v;
    int i;
} vpair;

/* Descending by value; NaN was mapped to -inf before, so the order is total. Ties by index
 * (any order gives the same AP; this one makes the sort deterministic). */
static int by_value_desc(const void *a, const void *b) {
    const vpair *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static float clean(float v) { return isnan(v) ? -INFINITY : v; }

/* AP of the sorted values vs (n, descending) against labels ys (in the same order), P
 * positives; flip = 1 scores against 1 − y (P is then the number of negatives). */
static double ap_sorted(const vpair *vs, const uint8_t *y, int n, int P, int flip) {
    if (P <= 0) return NAN;
    double ap = 0;
    int tp = 0;
    for (int k = 0; k < n;) {
        int j = k, g = 0;
        while (j < n && vs[j].v == vs[k].v) g += y[vs[j].i] ^ flip, j++;
        tp += g;
        if (g) ap += (double)g / P * ((double)tp / j);
        k = j;
    }
    return ap;
}

double nl_ability_ap(const float *v, const uint8_t *y, int n) {
    if (n <= 0) return NAN;
    vpair *vs = malloc((size_t)n * sizeof *vs);
    if (!vs) return NAN;
    int P = 0;
    for (int d = 0; d < n; d++) vs[d] = (vpair){clean(v[d]), d}, P += y[d] != 0;
    qsort(vs, (size_t)n, sizeof *vs, by_value_desc);
    uint8_t *yy = malloc((size_t)n);
    double r = NAN;
    if (yy) {
        for (int d = 0; d < n; d++) yy[d] = y[d] != 0;
        r = ap_sorted(vs, yy, n, P, 0);
    }
    free(yy);
    free(vs);
    return r;
}

/* Balanced accuracy of 1[v > mean] (mean given) against y. */
static double bacc(const float *v, const uint8_t *y, int n, double mean, int P) {
    int N = n - P, tp = 0, tn = 0;
    if (P <= 0 || N <= 0) return NAN;
    for (int d = 0; d < n; d++) {
        int pred = (double)v[d] > mean;
        if (y[d]) tp += pred;
        else tn += !pred;
    }
    return 0.5 * ((double)tp / P + (double)tn / N);
}

static double mean_of(const float *v, int n) {
    double s = 0;
    for (int d = 0; d < n; d++) s += v[d];
    return n ? s / n : 0;
}

double nl_ability_predictivity(const float *v, const uint8_t *y, int n) {
    if (n <= 0) return NAN;
    int P = 0;
    for (int d = 0; d < n; d++) P += y[d] != 0;
    uint8_t *yy = malloc((size_t)n);
    if (!yy) return NAN;
    for (int d = 0; d < n; d++) yy[d] = y[d] != 0;
    double r = bacc(v, yy, n, mean_of(v, n), P);
    free(yy);
    return r;
}

/* ---- top sets ---------------------------------------------------------------------------- */

typedef struct {
    float s;     /* score (NaN → -inf) */
    float m;     /* tie-break key: margin, |margin| when symmetric (NaN → -inf; 0 without margins) */
    uint64_t h;  /* last resort: nl_ability_tie_hash(seed, layer, neuron) */
    int idx;     /* layer index j * F + neuron */
} spair;

uint64_t nl_ability_tie_hash(uint64_t seed, int layer, int neuron) {
    return nl_mix64(seed ^ nl_mix64(((uint64_t)(uint32_t)layer << 32) | (uint64_t)(uint32_t)neuron));
}

/* score descending, margin key descending, hash ascending, index ascending (the index only
 * separates the 2^-64-rare hash collisions). */
static int by_score_desc(const void *a, const void *b) {
    const spair *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    if (x->m != y->m) return x->m > y->m ? -1 : 1;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int top_k(double top, int64_t n) {
    int64_t k = (int64_t)floor(top * (double)n + 1e-9);
    return (int)(k < 1 ? 1 : k);
}

static float tie_key(const nl_ability_tiebreak *tb, const float *margin, size_t x) {
    if (!tb || !margin) return 0.0f;
    float m = margin[x];
    if (isnan(m)) return -INFINITY;
    return tb->symmetric ? fabsf(m) : m;
}

/* rank (Lr, F) for one ability: 0 = not in the set, else the rank (within the layer for the
 * per-layer scope, over all layers for global). margin: the ability's (Lr, F) margins or NULL.
 * ties (groups) may be NULL. work: (Lr·F) pairs. */
static void select_ranks(const float *scores, const float *margin, int Lr, int F, const uint8_t *excluded, double top,
                         int global, const nl_ability_tiebreak *tb, int *rank, nl_ability_tie *ties, spair *work) {
    memset(rank, 0, (size_t)Lr * F * sizeof *rank);
    int groups = global ? 1 : Lr;
    int64_t width = global ? (int64_t)Lr * F : F;
    for (int g = 0; g < groups; g++) {
        int m = 0;
        for (int64_t x = 0; x < width; x++) {
            int64_t idx = (int64_t)g * F + x;
            if (excluded && excluded[idx]) continue;
            int j = (int)(idx / F), layer = tb && tb->layers ? tb->layers[j] : j;
            work[m++] = (spair){clean(scores[idx]), tie_key(tb, margin, (size_t)idx),
                                nl_ability_tie_hash(tb ? tb->seed : 0, layer, (int)(idx % F)), (int)idx};
        }
        qsort(work, (size_t)m, sizeof *work, by_score_desc);
        int k = top_k(top, width);
        if (k > m) k = m;
        for (int r = 0; r < k; r++) rank[work[r].idx] = r + 1;
        if (!ties) continue;
        nl_ability_tie t = {NAN, 0, 0, NL_TIE_NONE};
        if (k > 0) {
            const float cut = work[k - 1].s;
            t.cut = cut;
            for (int r = 0; r < m; r++)
                if (work[r].s == cut) t.tied++, t.chosen += r < k;
            if (t.chosen < t.tied) t.broken_by = work[k].m != work[k - 1].m ? NL_TIE_MARGIN : NL_TIE_HASH;
        }
        ties[g] = t;
    }
}

const char *nl_ability_tie_name(int broken_by) {
    return broken_by == NL_TIE_MARGIN ? "margin" : broken_by == NL_TIE_HASH ? "hash" : "none";
}

void nl_ability_select(const float *scores, int A, int Lr, int F, const uint8_t *excluded, double top, int global,
                       const nl_ability_tiebreak *tb, uint8_t *member, int *count, nl_ability_tie *ties) {
    size_t LF = (size_t)Lr * F;
    int *rank = malloc(LF * sizeof *rank);
    spair *work = malloc(LF * sizeof *work);
    NL_ASSERT(rank && work);
    const int groups = global ? 1 : Lr;
    for (int a = 0; a < A; a++) {
        select_ranks(scores + a * LF, tb && tb->margin ? tb->margin + a * LF : NULL, Lr, F, excluded, top, global, tb, rank,
                     ties ? ties + (size_t)a * groups : NULL, work);
        for (int j = 0; j < Lr; j++) {
            int c = 0;
            for (int i = 0; i < F; i++) {
                uint8_t in = rank[(size_t)j * F + i] > 0;
                member[a * LF + (size_t)j * F + i] = in;
                c += in;
            }
            count[a * Lr + j] = c;
        }
    }
    free(rank);
    free(work);
}

/* ---- the analysis ------------------------------------------------------------------------- */

static const char *DDL =
    "CREATE TABLE IF NOT EXISTS ability_run(run_id INTEGER PRIMARY KEY REFERENCES runs(id), method TEXT NOT NULL,"
    " symmetric INTEGER NOT NULL, top REAL NOT NULL, scope TEXT NOT NULL, resident_run INTEGER, seed INTEGER NOT NULL,"
    " docs INTEGER NOT NULL, layers INTEGER NOT NULL, d_ff INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ability_label(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " docs INTEGER NOT NULL, positives INTEGER NOT NULL, baseline REAL NOT NULL, PRIMARY KEY (run_id, ability)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_score(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " layer INTEGER NOT NULL, neuron INTEGER NOT NULL, score REAL, margin REAL, PRIMARY KEY (run_id, ability, layer, neuron))"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_layer(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " layer INTEGER NOT NULL, best REAL, top_permille REAL, mean REAL, baseline REAL, shuffled_best REAL,"
    " shuffled_top_permille REAL, shuffled_mean REAL, PRIMARY KEY (run_id, ability, layer)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_top(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " layer INTEGER NOT NULL, neuron INTEGER NOT NULL, rank INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, ability, layer, neuron)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_depth(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " layer INTEGER NOT NULL, neurons INTEGER NOT NULL, share REAL NOT NULL, PRIMARY KEY (run_id, ability, layer)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_excluded(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " neuron INTEGER NOT NULL, PRIMARY KEY (run_id, layer, neuron)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_model(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
    " w_out_norm_sum REAL NOT NULL, PRIMARY KEY (run_id, layer)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_ties(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
    " layer INTEGER NOT NULL, cut REAL, tied INTEGER NOT NULL, chosen INTEGER NOT NULL, broken_by TEXT NOT NULL,"
    " PRIMARY KEY (run_id, ability, layer)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ability_docs(run_id INTEGER NOT NULL REFERENCES runs(id), doc INTEGER NOT NULL,"
    " label TEXT NOT NULL, half TEXT NOT NULL, PRIMARY KEY (run_id, doc)) WITHOUT ROWID;";

typedef struct {
    nl_ability_opts o;
    const char *path;
    nl_h5_reader *r;
    nl_summary *sum;       /* the input is a summary (record --stats): its pooled values */
    const nl_h5_info *in;
    int Lr, F, A, Ds;
    char **names;          /* (A) */
    int *docs;             /* (Ds) file document index of each scored document */
    int8_t *half;          /* (Dc) -1 unlabelled, 0 selection (scored), 1 held out (--split) */
    int n_eval;            /* held-out documents */
    uint8_t *y, *ysh;      /* (A, Ds) labels and shuffled labels */
    int *pos;              /* (A) positives */
    float *vals;           /* (Dc, F) one layer's pooled values */
    float *scores;         /* (A, Lr, F) */
    float *shuf;           /* (A, Lr, F) shuffled-label scores */
    float *margin;         /* (A, Lr, F) mean v over positives − mean v over negatives */
    uint8_t *excluded;     /* (Lr, F) or NULL */
    double *wn_sum;        /* (Lr) */
    int64_t resident_run;
} ab;

static void ab_free(ab *s) {
    for (int a = 0; s->names && a < s->A; a++) free(s->names[a]);
    free(s->names);
    free(s->docs);
    free(s->half);
    free(s->y);
    free(s->ysh);
    free(s->pos);
    free(s->vals);
    free(s->scores);
    free(s->shuf);
    free(s->margin);
    free(s->excluded);
    free(s->wn_sum);
    nl_h5_reader_close(s->r);
    nl_summary_destroy(s->sum);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The abilities and the labels of the scored documents. */
static nl_status setup_labels(nl_ctx *ctx, ab *s) {
    const nl_h5_info *in = s->in;
    int64_t Dc = in->n_docs;
    if (Dc > INT_MAX) return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': %lld documents are too many", s->path, (long long)Dc);
    const char **all = malloc((size_t)(Dc ? Dc : 1) * sizeof *all);
    s->docs = malloc((size_t)(Dc ? Dc : 1) * sizeof *s->docs);
    if (!all || !s->docs) return free(all), nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int n = 0;
    for (int64_t d = 0; d < Dc; d++)
        if (in->doc_labels[d][0]) all[n] = in->doc_labels[d], s->docs[n++] = (int)d;
    s->Ds = n;
    if (n == 0) {
        free(all);
        return nl_errorf(ctx, NL_EINVAL, "'%s' has no labelled documents (ability scores need the documents' labels)", s->path);
    }
    s->half = malloc((size_t)(Dc ? Dc : 1));
    if (!s->half) return free(all), nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int64_t d = 0; d < Dc; d++) s->half[d] = in->doc_labels[d][0] ? 0 : -1;
    if (s->o.split > 0) { /* per label: the documents by split key; the first n_sel are the selection half */
        int *idx = malloc((size_t)n * sizeof *idx);
        uint8_t *done = calloc((size_t)n, 1);
        if (!idx || !done) return free(idx), free(done), free(all), nl_errorf(ctx, NL_ENOMEM, "out of memory");
        nl_status sst = NL_OK;
        for (int i = 0; i < n && sst == NL_OK; i++) {
            if (done[i]) continue;
            int m = 0;
            for (int j = i; j < n; j++)
                if (!done[j] && !strcmp(all[j], all[i])) idx[m++] = j, done[j] = 1;
            if (m < 2) {
                sst = nl_errorf(ctx, NL_EINVAL, "label '%s' has %d document in '%s': --split needs at least 2 per label", all[i], m,
                                s->path);
                break;
            }
            /* insertion sort by (key, document): m is small */
            for (int a = 1; a < m; a++)
                for (int b = a; b > 0 && nl_ability_split_key(s->o.seed, s->docs[idx[b]]) <
                                             nl_ability_split_key(s->o.seed, s->docs[idx[b - 1]]);
                     b--) {
                    int t = idx[b];
                    idx[b] = idx[b - 1], idx[b - 1] = t;
                }
            int sel = nl_ability_split_count(s->o.split, m);
            for (int a = sel; a < m; a++) s->half[s->docs[idx[a]]] = 1;
        }
        free(idx);
        free(done);
        if (sst != NL_OK) return free(all), sst;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (s->half[s->docs[i]] == 0) all[k] = all[i], s->docs[k++] = s->docs[i];
            else s->n_eval++;
        n = s->Ds = k;
    }
    const char **u = malloc((size_t)n * sizeof *u);
    if (!u) return free(all), nl_errorf(ctx, NL_ENOMEM, "out of memory");
    memcpy(u, all, (size_t)n * sizeof *u);
    qsort(u, (size_t)n, sizeof *u, cmp_str);
    int nu = 0;
    for (int i = 0; i < n; i++)
        if (!nu || strcmp(u[i], u[nu - 1])) u[nu++] = u[i];
    nl_status st = NL_OK;
    const char *const *want = s->o.abilities ? s->o.abilities : u;
    int A = s->o.abilities ? s->o.n_abilities : nu;
    if (A <= 0) st = nl_errorf(ctx, NL_EINVAL, "no abilities to score");
    s->names = calloc((size_t)(A > 0 ? A : 1), sizeof *s->names);
    if (st == NL_OK && !s->names) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int a = 0; st == NL_OK && a < A; a++) {
        if (!bsearch(&want[a], u, (size_t)nu, sizeof *u, cmp_str))
            st = nl_errorf(ctx, NL_EINVAL, "'%s' has no document labelled '%s'", s->path, want[a]);
        else if (!(s->names[a] = strdup(want[a])))
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        s->A = a + 1;
    }
    if (st == NL_OK) {
        qsort(s->names, (size_t)A, sizeof *s->names, cmp_str);
        for (int a = 1; a < A; a++)
            if (!strcmp(s->names[a], s->names[a - 1])) st = nl_errorf(ctx, NL_EINVAL, "ability '%s' is given twice", s->names[a]);
    }
    free(u);
    if (st == NL_OK) {
        s->y = malloc((size_t)A * n);
        s->ysh = malloc((size_t)A * n);
        s->pos = calloc((size_t)A, sizeof *s->pos);
        int64_t *perm = malloc((size_t)n * sizeof *perm);
        if (!s->y || !s->ysh || !s->pos || !perm) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        for (int a = 0; st == NL_OK && a < A; a++) {
            uint8_t *y = s->y + (size_t)a * n, *ys = s->ysh + (size_t)a * n;
            for (int d = 0; d < n; d++) y[d] = !strcmp(all[d], s->names[a]), s->pos[a] += y[d];
            if (s->pos[a] == n)
                st = nl_errorf(ctx, NL_EINVAL, "ability '%s' labels every scored document of '%s': nothing to tell it from",
                               s->names[a], s->path);
            nl_rng r;
            nl_rng_derive(&r, s->o.seed, RNG_SHUFFLE, (uint64_t)a);
            nl_rng_permutation(&r, perm, n);
            for (int d = 0; d < n; d++) ys[d] = y[perm[d]];
        }
        free(perm);
    }
    free(all);
    return st;
}

static int same_file(const char *a, const char *b) {
    if (!a || !b) return 0;
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) && realpath(b, rb)) return !strcmp(ra, rb);
    return !strcmp(a, b);
}

/* A text column that must not be NULL: a database written by an older or foreign tool
 * (tables without the NOT NULL constraints) can hold one. Returns the text, or NULL after
 * setting the one-line error "'db': <table> of run R has a NULL <what>". */
static const char *need_text(nl_ctx *ctx, nl_results *db, sqlite3_stmt *q, int c, const char *table, int64_t run,
                             const char *what) {
    const char *v = (const char *)sqlite3_column_text(q, c);
    if (!v) {
        if (!strcmp(table, "runs"))
            nl_errorf(ctx, NL_EFORMAT, "'%s': run %lld has a NULL %s in the runs table", nl_results_path(db), (long long)run, what);
        else nl_errorf(ctx, NL_EFORMAT, "'%s': %s of run %lld has a NULL %s", nl_results_path(db), table, (long long)run, what);
    }
    return v;
}

/* The resident neurons of a complete sparsity run of the same activation file. */
static nl_status load_resident(nl_ctx *ctx, ab *s, nl_results *db) {
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q = NULL;
    int64_t run = -1;
    int exists = sqlite3_prepare_v2(h, "SELECT 1 FROM sqlite_master WHERE name = 'neurons'", -1, &q, NULL) == SQLITE_OK &&
                 sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    if (s->o.resident_run > 0) {
        if (sqlite3_prepare_v2(h, "SELECT kind, status, source FROM runs WHERE id = ?1", -1, &q, NULL) != SQLITE_OK)
            return nl_results_error(ctx, db, "cannot read the runs");
        sqlite3_bind_int64(q, 1, s->o.resident_run);
        nl_status st = NL_OK;
        const char *kind, *status;
        if (sqlite3_step(q) != SQLITE_ROW)
            st = nl_errorf(ctx, NL_EINVAL, "no run %lld in '%s'", (long long)s->o.resident_run, nl_results_path(db));
        else if (!(kind = need_text(ctx, db, q, 0, "runs", s->o.resident_run, "kind")) ||
                 !(status = need_text(ctx, db, q, 1, "runs", s->o.resident_run, "status")))
            st = NL_EFORMAT;
        else if (strcmp(kind, "sparsity") || strcmp(status, "complete") ||
                 !same_file((const char *)sqlite3_column_text(q, 2), s->path))
            st = nl_errorf(ctx, NL_EINVAL, "run %lld of '%s' is not a complete sparsity run of '%s'", (long long)s->o.resident_run,
                           nl_results_path(db), s->path);
        sqlite3_finalize(q);
        if (st != NL_OK) return st;
        run = s->o.resident_run;
    } else {
        if (sqlite3_prepare_v2(h, "SELECT id, source FROM runs WHERE kind = 'sparsity' AND status = 'complete' ORDER BY id DESC",
                               -1, &q, NULL) != SQLITE_OK)
            return nl_results_error(ctx, db, "cannot read the runs");
        while (sqlite3_step(q) == SQLITE_ROW)
            if (same_file((const char *)sqlite3_column_text(q, 1), s->path)) {
                run = sqlite3_column_int64(q, 0);
                break;
            }
        sqlite3_finalize(q);
        if (run < 0)
            return nl_errorf(ctx, NL_EINVAL,
                             "no complete sparsity run of '%s' in '%s' to tell resident neurons (run neuronlab sparsity first)",
                             s->path, nl_results_path(db));
    }
    if (!exists) return nl_errorf(ctx, NL_EFORMAT, "'%s' has no neurons table for run %lld", nl_results_path(db), (long long)run);
    s->resident_run = run;
    s->excluded = calloc((size_t)s->Lr * s->F, 1);
    if (!s->excluded) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (sqlite3_prepare_v2(h, "SELECT layer, neuron, resident FROM neurons WHERE run_id = ?1 AND label = ''", -1, &q, NULL) !=
        SQLITE_OK)
        return nl_results_error(ctx, db, "cannot read the neurons table");
    sqlite3_bind_int64(q, 1, run);
    int *seen = calloc((size_t)s->Lr, sizeof *seen);
    nl_status st = seen ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    while (st == NL_OK && sqlite3_step(q) == SQLITE_ROW) {
        int l = sqlite3_column_int(q, 0), i = sqlite3_column_int(q, 1), j = -1;
        for (int k = 0; k < s->Lr; k++)
            if (s->in->meta.layers[k] == l) j = k;
        if (j < 0 || i < 0 || i >= s->F) continue;
        seen[j]++;
        s->excluded[(size_t)j * s->F + i] = sqlite3_column_int(q, 2) != 0;
    }
    for (int j = 0; st == NL_OK && j < s->Lr; j++)
        if (seen[j] != s->F)
            st = nl_errorf(ctx, NL_EINVAL, "sparsity run %lld of '%s' has %d neuron rows for layer %d, not %d", (long long)run,
                           nl_results_path(db), seen[j], s->in->meta.layers[j], s->F);
    free(seen);
    sqlite3_finalize(q);
    return st;
}

/* One layer's values (Dc, F): the pooled dataset, or means of |a| over the prompt rows. */
static nl_status read_values(nl_ctx *ctx, ab *s, int l) {
    const nl_h5_info *in = s->in;
    int64_t Dc = in->n_docs;
    if (s->sum) { /* a summary's pooled values, checked like a file's mean_abs */
        const float *p = s->sum->lay[nl_summary_layer_index(s->sum, l)].pooled;
        for (int64_t x = 0; x < Dc * s->F; x++)
            if (!(p[x] >= 0 && p[x] <= FLT_MAX))
                return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d mean_abs of document %lld holds a non-finite value", s->path, l,
                                 (long long)(x / s->F));
        memcpy(s->vals, p, (size_t)Dc * s->F * sizeof *s->vals);
        return NL_OK;
    }
    if (in->meta.pooled && !s->o.from_acts) return nl_h5_reader_read_pooled(s->r, ctx, l, 0, (int)Dc, s->vals);
    const int F = s->F, B = 256;
    float *buf = malloc((size_t)B * F * sizeof *buf);
    if (!buf) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = NL_OK;
    for (int64_t d = 0; d < Dc && st == NL_OK; d++) {
        float *acc = s->vals + (size_t)d * F;
        memset(acc, 0, (size_t)F * sizeof *acc);
        if (s->half[d] != 0) continue; /* not scored: unlabelled or held out */
        if (nl_interrupted) {
            st = nl_errorf(ctx, NL_EINTR, "interrupted");
            break;
        }
        int64_t r0 = in->doc_offsets[d];
        int P = in->prompt_len[d];
        for (int t0 = 0; t0 < P && st == NL_OK; t0 += B) {
            int n = P - t0 < B ? P - t0 : B;
            st = nl_h5_reader_read_acts(s->r, ctx, l, r0 + t0, n, buf);
            for (int t = 0; st == NL_OK && t < n; t++)
                for (int i = 0; i < F; i++) acc[i] += fabsf(buf[(size_t)t * F + i]);
        }
        for (int i = 0; P > 0 && i < F; i++) acc[i] /= (float)P;
    }
    free(buf);
    return st;
}

static double baseline_of(const ab *s, int a) {
    if (s->o.method == NL_ABILITY_PREDICTIVITY) return 0.5;
    double p = (double)s->pos[a] / s->Ds;
    return s->o.symmetric && 1 - p > p ? 1 - p : p;
}

/* Scores of every neuron of layer index j (file layer l) against every ability (and shuffled
 * labels). A neuron whose values over the scored documents do not sum to a finite number holds
 * a NaN or an infinity: the layer is refused, naming the first such document. */
static nl_status score_layer(nl_ctx *ctx, ab *s, int j, int l) {
    const int F = s->F, Ds = s->Ds, A = s->A;
    const size_t LF = (size_t)s->Lr * F;
    int fail = 0, stop = 0, bad = INT_MAX; /* bad: the first neuron whose values are not all finite */
#pragma omp parallel
    {
        vpair *vs = malloc((size_t)Ds * sizeof *vs);
        float *col = malloc((size_t)Ds * sizeof *col);
        if (!vs || !col) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(dynamic, 16)
        for (int i = 0; i < F; i++) {
            if (!vs || !col || stop) continue;
            if ((i & 15) == 0 && nl_interrupted) {
#pragma omp atomic write
                stop = 1;
                continue;
            }
            for (int d = 0; d < Ds; d++) col[d] = s->vals[(size_t)s->docs[d] * F + i];
            double mu = mean_of(col, Ds);
            if (!isfinite(mu)) { /* the per-neuron sum catches any NaN or infinity at no extra cost */
#pragma omp critical
                if (i < bad) bad = i;
                continue;
            }
            if (s->o.method == NL_ABILITY_AP) {
                for (int d = 0; d < Ds; d++) vs[d] = (vpair){clean(col[d]), d};
                qsort(vs, (size_t)Ds, sizeof *vs, by_value_desc);
            }
            for (int a = 0; a < A; a++) {
                const uint8_t *ya = s->y + (size_t)a * Ds;
                double sp = 0, sn = 0;
                for (int d = 0; d < Ds; d++) {
                    if (ya[d]) sp += col[d];
                    else sn += col[d];
                }
                const int P = s->pos[a];
                s->margin[a * LF + (size_t)j * F + i] = (float)(sp / P - (Ds > P ? sn / (Ds - P) : 0.0));
            }
            for (int a = 0; a < A; a++)
                for (int sh = 0; sh < 2; sh++) {
                    const uint8_t *y = (sh ? s->ysh : s->y) + (size_t)a * Ds;
                    int P = s->pos[a];
                    double r;
                    if (s->o.method == NL_ABILITY_AP) {
                        r = ap_sorted(vs, y, Ds, P, 0);
                        if (s->o.symmetric) {
                            double r2 = ap_sorted(vs, y, Ds, Ds - P, 1);
                            if (r2 > r) r = r2;
                        }
                    } else {
                        r = bacc(col, y, Ds, mu, P);
                        if (s->o.symmetric && 1 - r > r) r = 1 - r;
                    }
                    (sh ? s->shuf : s->scores)[a * LF + (size_t)j * F + i] = (float)r;
                }
        }
        free(vs);
        free(col);
    }
    if (fail) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (bad < F) {
        int d = 0;
        while (d < Ds - 1 && isfinite(s->vals[(size_t)s->docs[d] * F + bad])) d++;
        const int pooled = s->in->meta.pooled && !s->o.from_acts;
        return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d holds non-finite %s (document %d, neuron %d)", s->path, l,
                         pooled ? "pooled values" : "activations", s->docs[d], bad);
    }
    if (stop) return nl_errorf(ctx, NL_EINTR, "interrupted");
    return NL_OK;
}

static int by_float_desc(const void *a, const void *b) {
    float x = clean(*(const float *)a), y = clean(*(const float *)b);
    return x > y ? -1 : x < y;
}

/* best, top-5‰ score and mean of n scores (x copied into work). */
static void stats(const float *x, size_t n, float *work, double out[3]) {
    memcpy(work, x, n * sizeof *work);
    qsort(work, n, sizeof *work, by_float_desc);
    size_t r = (size_t)ceil(0.005 * (double)n - 1e-9);
    if (r < 1) r = 1;
    double m = 0;
    for (size_t i = 0; i < n; i++) m += x[i];
    out[0] = work[0], out[1] = work[r - 1], out[2] = m / (double)n;
}

static nl_status step_stmt(nl_ctx *ctx, nl_results *db, sqlite3_stmt *q) {
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? NL_OK : nl_results_error(ctx, db, "cannot write the ability tables");
}

static nl_status write_all(nl_ctx *ctx, ab *s, nl_results *db, int64_t run, nl_ability_result *out) {
    static const char *INS[] = {
        "INSERT INTO ability_run VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        "INSERT INTO ability_label VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO ability_score(run_id, ability, layer, neuron, score, margin) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        "INSERT INTO ability_layer VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        "INSERT INTO ability_top VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO ability_depth VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO ability_excluded VALUES (?1, ?2, ?3)",
        "INSERT INTO ability_model VALUES (?1, ?2, ?3)",
        "INSERT INTO ability_ties VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        "INSERT INTO ability_docs VALUES (?1, ?2, ?3, ?4)",
    };
    enum { N_INS = sizeof INS / sizeof INS[0] };
    sqlite3_stmt *q[N_INS] = {0};
    const int F = s->F, Lr = s->Lr, A = s->A;
    const size_t LF = (size_t)Lr * F;
    const int *layers = s->in->meta.layers;
    int *rank = malloc(LF * sizeof *rank), *grank = malloc(LF * sizeof *grank);
    spair *work = malloc(LF * sizeof *work);
    float *fwork = malloc(LF * sizeof *fwork);
    nl_ability_tie *ties = malloc((size_t)Lr * sizeof *ties);
    nl_status st = rank && grank && work && fwork && ties ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) st = nl_results_begin(ctx, db);
    for (int k = 0; k < N_INS && st == NL_OK; k++)
        if (sqlite3_prepare_v2(nl_results_db(db), INS[k], -1, &q[k], NULL) != SQLITE_OK)
            st = nl_results_error(ctx, db, "cannot prepare the ability tables");
    if (st == NL_OK) {
        sqlite3_stmt *x = q[0];
        sqlite3_bind_int64(x, 1, run);
        sqlite3_bind_text(x, 2, nl_ability_method_name(s->o.method), -1, SQLITE_STATIC);
        sqlite3_bind_int(x, 3, s->o.symmetric);
        sqlite3_bind_double(x, 4, s->o.top);
        sqlite3_bind_text(x, 5, s->o.global ? "global" : "layer", -1, SQLITE_STATIC);
        if (s->excluded) sqlite3_bind_int64(x, 6, s->resident_run);
        else sqlite3_bind_null(x, 6);
        sqlite3_bind_int64(x, 7, (sqlite3_int64)s->o.seed);
        sqlite3_bind_int(x, 8, s->Ds);
        sqlite3_bind_int(x, 9, Lr);
        sqlite3_bind_int(x, 10, F);
        st = step_stmt(ctx, db, x);
    }
    for (int64_t d = 0; d < s->in->n_docs && st == NL_OK; d++) {
        sqlite3_bind_int64(q[9], 1, run);
        sqlite3_bind_int64(q[9], 2, d);
        sqlite3_bind_text(q[9], 3, s->in->doc_labels[d], -1, SQLITE_STATIC);
        sqlite3_bind_text(q[9], 4, s->half[d] < 0 ? "none" : s->half[d] ? "heldout" : "select", -1, SQLITE_STATIC);
        st = step_stmt(ctx, db, q[9]);
    }
    for (int j = 0; j < Lr && st == NL_OK; j++) {
        sqlite3_bind_int64(q[7], 1, run);
        sqlite3_bind_int(q[7], 2, layers[j]);
        sqlite3_bind_double(q[7], 3, s->wn_sum[j]);
        st = step_stmt(ctx, db, q[7]);
        for (int i = 0; s->excluded && i < F && st == NL_OK; i++)
            if (s->excluded[(size_t)j * F + i]) {
                sqlite3_bind_int64(q[6], 1, run);
                sqlite3_bind_int(q[6], 2, layers[j]);
                sqlite3_bind_int(q[6], 3, i);
                st = step_stmt(ctx, db, q[6]);
            }
    }
    for (int a = 0; a < A && st == NL_OK; a++) {
        const char *name = s->names[a];
        const float *sc = s->scores + a * LF, *sh = s->shuf + a * LF;
        sqlite3_bind_int64(q[1], 1, run);
        sqlite3_bind_text(q[1], 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(q[1], 3, s->Ds);
        sqlite3_bind_int(q[1], 4, s->pos[a]);
        sqlite3_bind_double(q[1], 5, baseline_of(s, a));
        st = step_stmt(ctx, db, q[1]);
        for (int j = -1; j < Lr && st == NL_OK; j++) { /* -1: every layer pooled */
            double b[3], c[3];
            size_t off = j < 0 ? 0 : (size_t)j * F, n = j < 0 ? LF : (size_t)F;
            stats(sc + off, n, fwork, b);
            stats(sh + off, n, fwork, c);
            sqlite3_stmt *x = q[3];
            sqlite3_bind_int64(x, 1, run);
            sqlite3_bind_text(x, 2, name, -1, SQLITE_STATIC);
            sqlite3_bind_int(x, 3, j < 0 ? -1 : layers[j]);
            for (int k = 0; k < 3; k++) sqlite3_bind_double(x, 4 + k, b[k]), sqlite3_bind_double(x, 8 + k, c[k]);
            sqlite3_bind_double(x, 7, baseline_of(s, a));
            st = step_stmt(ctx, db, x);
        }
        for (size_t x = 0; x < LF && st == NL_OK; x++) {
            if ((x & 4095) == 4095 && nl_interrupted) {
                st = nl_errorf(ctx, NL_EINTR, "interrupted");
                break;
            }
            sqlite3_bind_int64(q[2], 1, run);
            sqlite3_bind_text(q[2], 2, name, -1, SQLITE_STATIC);
            sqlite3_bind_int(q[2], 3, layers[x / F]);
            sqlite3_bind_int(q[2], 4, (int)(x % F));
            if (isnan(sc[x])) sqlite3_bind_null(q[2], 5);
            else sqlite3_bind_double(q[2], 5, sc[x]);
            const float mg = s->margin[a * LF + x];
            if (isnan(mg)) sqlite3_bind_null(q[2], 6);
            else sqlite3_bind_double(q[2], 6, mg);
            st = step_stmt(ctx, db, q[2]);
        }
        const nl_ability_tiebreak tb = {s->margin, s->o.symmetric, layers, s->o.seed};
        const float *mg = s->margin + a * LF;
        select_ranks(sc, mg, Lr, F, s->excluded, s->o.top, s->o.global, &tb, rank, ties, work);
        select_ranks(sc, mg, Lr, F, s->excluded, s->o.top, 1, &tb, grank, NULL, work);
        for (int g = 0; g < (s->o.global ? 1 : Lr) && st == NL_OK; g++) {
            sqlite3_stmt *x = q[8];
            sqlite3_bind_int64(x, 1, run);
            sqlite3_bind_text(x, 2, name, -1, SQLITE_STATIC);
            sqlite3_bind_int(x, 3, s->o.global ? -1 : layers[g]);
            if (isnan(ties[g].cut) || isinf(ties[g].cut)) sqlite3_bind_null(x, 4);
            else sqlite3_bind_double(x, 4, ties[g].cut);
            sqlite3_bind_int(x, 5, ties[g].tied);
            sqlite3_bind_int(x, 6, ties[g].chosen);
            sqlite3_bind_text(x, 7, nl_ability_tie_name(ties[g].broken_by), -1, SQLITE_STATIC);
            st = step_stmt(ctx, db, x);
            if (ties[g].chosen < ties[g].tied) out->cut_in_tie++;
        }
        for (size_t x = 0; x < LF && st == NL_OK; x++)
            if (rank[x]) {
                sqlite3_bind_int64(q[4], 1, run);
                sqlite3_bind_text(q[4], 2, name, -1, SQLITE_STATIC);
                sqlite3_bind_int(q[4], 3, layers[x / F]);
                sqlite3_bind_int(q[4], 4, (int)(x % F));
                sqlite3_bind_int(q[4], 5, rank[x]);
                st = step_stmt(ctx, db, q[4]);
            }
        int total = 0;
        for (size_t x = 0; x < LF; x++) total += grank[x] > 0;
        for (int j = 0; j < Lr && st == NL_OK; j++) {
            int c = 0;
            for (int i = 0; i < F; i++) c += grank[(size_t)j * F + i] > 0;
            sqlite3_bind_int64(q[5], 1, run);
            sqlite3_bind_text(q[5], 2, name, -1, SQLITE_STATIC);
            sqlite3_bind_int(q[5], 3, layers[j]);
            sqlite3_bind_int(q[5], 4, c);
            sqlite3_bind_double(q[5], 5, total ? (double)c / total : 0);
            st = step_stmt(ctx, db, q[5]);
        }
    }
    for (int k = 0; k < N_INS; k++) sqlite3_finalize(q[k]);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    else nl_results_rollback(db);
    free(rank);
    free(grank);
    free(work);
    free(fwork);
    free(ties);
    return st;
}

nl_status nl_ability_create_tables(nl_ctx *ctx, nl_results *db) {
    nl_status st = nl_results_exec(ctx, db, DDL);
    if (st != NL_OK) return st;
    /* databases written before the tie-break column: add it (older runs keep NULL margins) */
    sqlite3_stmt *q = NULL;
    int has = sqlite3_prepare_v2(nl_results_db(db), "SELECT margin FROM ability_score LIMIT 0", -1, &q, NULL) == SQLITE_OK;
    sqlite3_finalize(q);
    return has ? NL_OK : nl_results_exec(ctx, db, "ALTER TABLE ability_score ADD COLUMN margin REAL");
}

void nl_ability_result_release(nl_ability_result *r) {
    if (r) memset(r, 0, sizeof *r), r->run_id = -1;
}

nl_status nl_ability_run(nl_ctx *ctx, const nl_ability_opts *opts, const char *acts_path, nl_results *db, nl_progress *prog,
                         nl_ability_result *out) {
    NL_ASSERT(acts_path && db && out);
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_ability_opts def;
    if (!opts) nl_ability_opts_init(&def), opts = &def;
    nl_ctx_apply_threads(ctx);
    ab s = {.o = *opts, .path = acts_path};
    if (!(opts->top > 0 && opts->top <= 1))
        return nl_errorf(ctx, NL_EINVAL, "top fraction %g is outside (0, 1]", opts->top);
    if (!(opts->split == 0 || (opts->split > 0 && opts->split < 1)))
        return nl_errorf(ctx, NL_EINVAL, "split fraction %g is outside (0, 1)", opts->split);
    nl_status st;
    if (nl_h5_file_kind(acts_path) == NL_H5_KIND_SUMMARY) {
        if (opts->from_acts)
            return nl_errorf(ctx, NL_EINVAL,
                             "'%s' is a summary (record --stats): it holds the pooled values, not the per-token activations "
                             "--from-acts needs (record without --stats)",
                             acts_path);
        if ((st = nl_summary_read(ctx, acts_path, &s.sum)) != NL_OK) return st;
        s.in = &s.sum->info;
    } else {
        if ((st = nl_h5_reader_open(ctx, acts_path, &s.r)) != NL_OK) return st;
        s.in = nl_h5_reader_info(s.r);
    }
    s.Lr = s.in->meta.n_rec, s.F = s.in->meta.d_ff;
    if (s.Lr <= 0) st = nl_errorf(ctx, NL_EFORMAT, "'%s' records no layers", acts_path);
    else if (!s.in->meta.pooled && s.in->meta.no_acts)
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' has neither /pooled mean_abs nor ffn_act to score (recorded with --hook without "
                       "ffn_act: record with --hook ffn_act or --pool)", acts_path);
    else if (s.o.from_acts && s.in->meta.no_acts)
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' has no ffn_act (recorded pooled-only or with --hook without ffn_act)", acts_path);
    if (st == NL_OK) st = setup_labels(ctx, &s);
    if (st == NL_OK && s.o.exclude_resident) st = load_resident(ctx, &s, db);
    const size_t LF = (size_t)s.Lr * s.F;
    if (st == NL_OK) {
        s.vals = malloc((size_t)(s.in->n_docs ? s.in->n_docs : 1) * s.F * sizeof *s.vals);
        s.scores = malloc((size_t)s.A * LF * sizeof *s.scores);
        s.shuf = malloc((size_t)s.A * LF * sizeof *s.shuf);
        s.margin = malloc((size_t)s.A * LF * sizeof *s.margin);
        s.wn_sum = calloc((size_t)s.Lr, sizeof *s.wn_sum);
        if (!s.vals || !s.scores || !s.shuf || !s.margin || !s.wn_sum) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    float *wn = st == NL_OK ? malloc((size_t)s.F * sizeof *wn) : NULL;
    if (st == NL_OK && !wn) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int j = 0; j < s.Lr && st == NL_OK; j++) {
        if (s.sum) memcpy(wn, s.sum->lay[j].w_out_norm, (size_t)s.F * sizeof *wn); /* layers in the same order */
        else st = nl_h5_reader_read_w_out_norm(s.r, ctx, s.in->meta.layers[j], wn);
        for (int i = 0; st == NL_OK && i < s.F; i++) s.wn_sum[j] += wn[i];
        if (st == NL_OK && !isfinite(s.wn_sum[j])) { /* the sum is finite only when every norm is */
            int i = 0;
            while (i < s.F - 1 && isfinite(wn[i])) i++;
            st = nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: /layers/%d/w_out_norm[%d] = %g is not a norm", acts_path,
                           s.in->meta.layers[j], i, (double)wn[i]);
        }
    }
    free(wn);
    if (st == NL_OK) st = nl_ability_create_tables(ctx, db);
    if (st != NL_OK) {
        ab_free(&s);
        return st;
    }
    char p[16384] = "{\"method\":";
    nl_json_cat(p, sizeof p, nl_ability_method_name(s.o.method));
    snprintf(p + strlen(p), sizeof p - strlen(p), ",\"symmetric\":%s,\"top\":%s,\"scope\":\"%s\",\"seed\":%llu,\"abilities\":[",
             s.o.symmetric ? "true" : "false", NL_JSON_NUM(s.o.top), s.o.global ? "global" : "layer", (unsigned long long)s.o.seed);
    for (int a = 0; a < s.A; a++) {
        if (a) strncat(p, ",", sizeof p - strlen(p) - 1);
        nl_json_cat(p, sizeof p, s.names[a]);
    }
    snprintf(p + strlen(p), sizeof p - strlen(p), "],\"resident_run\":");
    if (s.excluded) snprintf(p + strlen(p), sizeof p - strlen(p), "%lld", (long long)s.resident_run);
    else strncat(p, "null", sizeof p - strlen(p) - 1);
    snprintf(p + strlen(p), sizeof p - strlen(p), ",\"values\":\"%s\",\"docs\":%d,\"file_complete\":%d,\"split\":",
             s.in->meta.pooled && !s.o.from_acts ? "pooled" : "ffn_act", s.Ds, s.in->complete);
    if (s.o.split > 0) snprintf(p + strlen(p), sizeof p - strlen(p), "%.17g,\"heldout_docs\":%d}", s.o.split, s.n_eval);
    else strncat(p, "null}", sizeof p - strlen(p) - 1);
    if (s.sum) snprintf(p + strlen(p) - 1, sizeof p - strlen(p) + 1, ",\"input\":\"summary\"}");
    /* activations recorded with --compute bf16 make this an approximate run too */
    nl_run_info info = {"ability", s.in->meta.model, s.in->meta.dataset, acts_path, p, s.in->meta.compute};
    int64_t run;
    st = nl_results_begin_run(ctx, db, &info, &run);
    if (st != NL_OK) {
        ab_free(&s);
        return st;
    }
    out->run_id = run;
    out->docs = s.Ds, out->n_abilities = s.A, out->n_layers = s.Lr, out->d_ff = s.F, out->heldout = s.n_eval;
    if (prog) prog->total = s.Lr;
    int done = 0;
    for (int j = 0; j < s.Lr && st == NL_OK; j++) {
        if (nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
        if (st == NL_OK) st = read_values(ctx, &s, s.in->meta.layers[j]);
        if (st == NL_OK) st = score_layer(ctx, &s, j, s.in->meta.layers[j]);
        if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
        if (st == NL_OK) done++;
        if (prog && st == NL_OK) nl_progress_add(prog, 1);
    }
    if (st == NL_OK) st = write_all(ctx, &s, db, run, out);
    char note[128];
    if (done < s.Lr) snprintf(note, sizeof note, "interrupted after %d of %d layers (no rows kept)", done, s.Lr);
    else snprintf(note, sizeof note, "interrupted while writing the scores of %d layers (no rows kept)", s.Lr);
    st = nl_results_finish_run(ctx, db, run, st, note);
    ab_free(&s);
    return st;
}

/* ---- loading a run's top sets -------------------------------------------------------------- */

void nl_ability_sets_release(nl_ability_sets *s) {
    if (!s) return;
    for (int a = 0; s->abilities && a < s->n_abilities; a++) free(s->abilities[a]);
    free(s->abilities);
    free(s->layers);
    free(s->excluded);
    free(s->member);
    free(s->count);
    free(s->w_out_norm_sum);
    free(s->source);
    free(s->model);
    for (int d = 0; s->doc_label && d < s->n_docs; d++) free(s->doc_label[d]);
    free(s->doc_label);
    free(s->doc_half);
    memset(s, 0, sizeof *s);
}

int nl_ability_sets_find(const nl_ability_sets *s, const char *ability) {
    for (int a = 0; a < s->n_abilities; a++)
        if (!strcmp(s->abilities[a], ability)) return a;
    return -1;
}

static int layer_index(const nl_ability_sets *s, int layer) {
    for (int j = 0; j < s->n_layers; j++)
        if (s->layers[j] == layer) return j;
    return -1;
}

static char *dup_col(sqlite3_stmt *q, int c) {
    const char *v = (const char *)sqlite3_column_text(q, c);
    return strdup(v ? v : "");
}

nl_status nl_ability_sets_load(nl_ctx *ctx, nl_results *db, int64_t run_id, double top, nl_ability_sets *out) {
    memset(out, 0, sizeof *out);
    out->run_id = run_id;
    if (!(top <= 0 || (top > 0 && top <= 1)) || isnan(top))
        return nl_errorf(ctx, NL_EINVAL, "top fraction %g is outside (0, 1]", top);
    sqlite3 *h = nl_results_db(db);
    const char *path = nl_results_path(db);
    sqlite3_stmt *q = NULL;
    nl_status st = NL_OK;
    if (run_id <= 0) { /* the latest complete ability run */
        if (sqlite3_prepare_v2(h, "SELECT id FROM runs WHERE kind = 'ability' AND status = 'complete' ORDER BY id DESC LIMIT 1",
                               -1, &q, NULL) != SQLITE_OK)
            return nl_results_error(ctx, db, "cannot read the runs");
        if (sqlite3_step(q) == SQLITE_ROW) run_id = out->run_id = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (run_id <= 0)
            return nl_errorf(ctx, NL_EINVAL, "'%s' has no complete ability run (run neuronlab ability first)", path);
    }
    if (sqlite3_prepare_v2(h, "SELECT kind, status, source, model FROM runs WHERE id = ?1", -1, &q, NULL) != SQLITE_OK)
        return nl_results_error(ctx, db, "cannot read the runs");
    sqlite3_bind_int64(q, 1, run_id);
    const char *kind, *status;
    if (sqlite3_step(q) != SQLITE_ROW) st = nl_errorf(ctx, NL_EINVAL, "no run %lld in '%s'", (long long)run_id, path);
    else if (!(kind = need_text(ctx, db, q, 0, "runs", run_id, "kind"))) st = NL_EFORMAT;
    else if (strcmp(kind, "ability"))
        st = nl_errorf(ctx, NL_EINVAL, "run %lld of '%s' is a '%s' run, not an ability run", (long long)run_id, path, kind);
    else if (!(status = need_text(ctx, db, q, 1, "runs", run_id, "status"))) st = NL_EFORMAT;
    else if (strcmp(status, "complete"))
        st = nl_errorf(ctx, NL_EINVAL, "ability run %lld of '%s' is '%s' (only complete runs have scores)", (long long)run_id,
                       path, status);
    else {
        out->source = dup_col(q, 2);
        out->model = dup_col(q, 3);
    }
    sqlite3_finalize(q);
    if (st != NL_OK) return st;
    double run_top = 0;
    if (sqlite3_prepare_v2(h, "SELECT top, scope, layers, d_ff, method, symmetric, seed FROM ability_run WHERE run_id = ?1", -1, &q,
                           NULL) != SQLITE_OK) {
        st = nl_results_error(ctx, db, "cannot read the ability tables");
        nl_ability_sets_release(out); /* source and model are set by now */
        return st;
    }
    sqlite3_bind_int64(q, 1, run_id);
    if (sqlite3_step(q) == SQLITE_ROW) {
        const char *scope = need_text(ctx, db, q, 1, "ability_run", run_id, "scope"), *method;
        if (!scope || !(method = need_text(ctx, db, q, 4, "ability_run", run_id, "method"))) st = NL_EFORMAT;
        else {
            run_top = sqlite3_column_double(q, 0);
            out->global = !strcmp(scope, "global");
            out->n_layers = sqlite3_column_int(q, 2);
            out->d_ff = sqlite3_column_int(q, 3);
            snprintf(out->method, sizeof out->method, "%s", method);
            out->symmetric = sqlite3_column_int(q, 5);
            out->seed = (uint64_t)sqlite3_column_int64(q, 6);
        }
    } else st = nl_errorf(ctx, NL_EFORMAT, "ability run %lld of '%s' has no parameters row", (long long)run_id, path);
    sqlite3_finalize(q);
    if (st == NL_OK && (out->n_layers <= 0 || out->d_ff <= 0))
        st = nl_errorf(ctx, NL_EFORMAT, "ability run %lld of '%s' has no layers", (long long)run_id, path);
    const int Lr = out->n_layers, F = out->d_ff;
    const size_t LF = (size_t)Lr * F;
    out->top = top > 0 ? top : run_top;
    /* abilities */
    if (st == NL_OK && sqlite3_prepare_v2(h, "SELECT ability FROM ability_label WHERE run_id = ?1 ORDER BY ability", -1, &q,
                                          NULL) != SQLITE_OK)
        st = nl_results_error(ctx, db, "cannot read the ability tables");
    if (st == NL_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while (st == NL_OK && sqlite3_step(q) == SQLITE_ROW) {
            if (!need_text(ctx, db, q, 0, "ability_label", run_id, "ability name")) {
                st = NL_EFORMAT;
                break;
            }
            char **g = realloc(out->abilities, (size_t)(out->n_abilities + 1) * sizeof *g);
            if (!g || !(g[out->n_abilities] = dup_col(q, 0))) {
                if (g) out->abilities = g;
                st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
            } else out->abilities = g, out->n_abilities++;
        }
        sqlite3_finalize(q);
        if (st == NL_OK && !out->n_abilities)
            st = nl_errorf(ctx, NL_EFORMAT, "ability run %lld of '%s' has no abilities", (long long)run_id, path);
    }
    const int A = out->n_abilities;
    if (st == NL_OK) {
        out->layers = calloc((size_t)Lr, sizeof *out->layers);
        out->w_out_norm_sum = calloc((size_t)Lr, sizeof *out->w_out_norm_sum);
        out->excluded = calloc(LF, 1);
        out->member = calloc((size_t)A * LF, 1);
        out->count = calloc((size_t)A * Lr, sizeof *out->count);
        if (!out->layers || !out->w_out_norm_sum || !out->excluded || !out->member || !out->count)
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    if (st == NL_OK &&
        sqlite3_prepare_v2(h, "SELECT layer, w_out_norm_sum FROM ability_model WHERE run_id = ?1 ORDER BY layer", -1, &q, NULL) !=
            SQLITE_OK)
        st = nl_results_error(ctx, db, "cannot read the ability tables");
    if (st == NL_OK) {
        int n = 0;
        sqlite3_bind_int64(q, 1, run_id);
        while (sqlite3_step(q) == SQLITE_ROW && n < Lr)
            out->layers[n] = sqlite3_column_int(q, 0), out->w_out_norm_sum[n++] = sqlite3_column_double(q, 1);
        sqlite3_finalize(q);
        if (n != Lr) st = nl_errorf(ctx, NL_EFORMAT, "ability run %lld of '%s' lacks its layers", (long long)run_id, path);
    }
    if (st == NL_OK &&
        sqlite3_prepare_v2(h, "SELECT layer, neuron FROM ability_excluded WHERE run_id = ?1", -1, &q, NULL) != SQLITE_OK)
        st = nl_results_error(ctx, db, "cannot read the ability tables");
    if (st == NL_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while (sqlite3_step(q) == SQLITE_ROW) {
            int j = layer_index(out, sqlite3_column_int(q, 0)), i = sqlite3_column_int(q, 1);
            if (j >= 0 && i >= 0 && i < F) out->excluded[(size_t)j * F + i] = 1;
        }
        sqlite3_finalize(q);
    }
    int stored = top <= 0 || fabs(top - run_top) < 1e-12;
    if (st == NL_OK && stored) {
        if (sqlite3_prepare_v2(h, "SELECT ability, layer, neuron FROM ability_top WHERE run_id = ?1", -1, &q, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, db, "cannot read the ability tables");
        else {
            sqlite3_bind_int64(q, 1, run_id);
            for (int64_t row = 0; st == NL_OK && sqlite3_step(q) == SQLITE_ROW; row++) {
                if ((row & 4095) == 4095 && nl_interrupted) {
                    st = nl_errorf(ctx, NL_EINTR, "interrupted");
                    break;
                }
                const char *name = need_text(ctx, db, q, 0, "ability_top", run_id, "ability name");
                if (!name) {
                    st = NL_EFORMAT;
                    break;
                }
                int a = nl_ability_sets_find(out, name);
                int j = layer_index(out, sqlite3_column_int(q, 1)), i = sqlite3_column_int(q, 2);
                if (a < 0 || j < 0 || i < 0 || i >= F) continue;
                out->member[a * LF + (size_t)j * F + i] = 1;
            }
            sqlite3_finalize(q);
            for (int a = 0; st == NL_OK && a < A; a++)
                for (int j = 0; j < Lr; j++) {
                    int c = 0;
                    for (int i = 0; i < F; i++) c += out->member[a * LF + (size_t)j * F + i];
                    out->count[a * Lr + j] = c;
                }
        }
    } else if (st == NL_OK) {
        float *sc = malloc((size_t)A * LF * sizeof *sc), *mg = malloc((size_t)A * LF * sizeof *mg);
        if (!sc || !mg) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else {
            for (size_t x = 0; x < (size_t)A * LF; x++) sc[x] = NAN, mg[x] = NAN;
            /* margins: NULL in runs written before the tie-break column */
            if (sqlite3_prepare_v2(h, "SELECT ability, layer, neuron, score, margin FROM ability_score WHERE run_id = ?1", -1, &q,
                                   NULL) != SQLITE_OK &&
                sqlite3_prepare_v2(h, "SELECT ability, layer, neuron, score, NULL FROM ability_score WHERE run_id = ?1", -1, &q,
                                   NULL) != SQLITE_OK)
                st = nl_results_error(ctx, db, "cannot read the ability tables");
            else {
                sqlite3_bind_int64(q, 1, run_id);
                for (int64_t row = 0; st == NL_OK && sqlite3_step(q) == SQLITE_ROW; row++) {
                    if ((row & 4095) == 4095 && nl_interrupted) {
                        st = nl_errorf(ctx, NL_EINTR, "interrupted");
                        break;
                    }
                    const char *name = need_text(ctx, db, q, 0, "ability_score", run_id, "ability name");
                    if (!name) {
                        st = NL_EFORMAT;
                        break;
                    }
                    int a = nl_ability_sets_find(out, name);
                    int j = layer_index(out, sqlite3_column_int(q, 1)), i = sqlite3_column_int(q, 2);
                    if (a < 0 || j < 0 || i < 0 || i >= F || sqlite3_column_type(q, 3) == SQLITE_NULL) continue;
                    sc[a * LF + (size_t)j * F + i] = (float)sqlite3_column_double(q, 3);
                    if (sqlite3_column_type(q, 4) != SQLITE_NULL) mg[a * LF + (size_t)j * F + i] = (float)sqlite3_column_double(q, 4);
                }
                sqlite3_finalize(q);
                const nl_ability_tiebreak tb = {mg, out->symmetric, out->layers, out->seed};
                if (st == NL_OK)
                    nl_ability_select(sc, A, Lr, F, out->excluded, out->top, out->global, &tb, out->member, out->count, NULL);
            }
        }
        free(sc);
        free(mg);
    }
    /* the documents (runs before ability_docs have none) */
    if (st == NL_OK && sqlite3_prepare_v2(h, "SELECT doc, label, half FROM ability_docs WHERE run_id = ?1 ORDER BY doc", -1, &q,
                                          NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while (st == NL_OK && sqlite3_step(q) == SQLITE_ROW) {
            const int d = sqlite3_column_int(q, 0);
            const char *lab = (const char *)sqlite3_column_text(q, 1), *half = (const char *)sqlite3_column_text(q, 2);
            if (d != out->n_docs || !lab || !half) {
                st = nl_errorf(ctx, NL_EFORMAT, "'%s': ability_docs of run %lld is not one row per document", path, (long long)run_id);
                break;
            }
            char **dl = realloc(out->doc_label, (size_t)(d + 1) * sizeof *dl);
            if (dl) out->doc_label = dl;
            int8_t *dh = realloc(out->doc_half, (size_t)(d + 1));
            if (dh) out->doc_half = dh;
            if (!dl || !dh || !(dl[d] = strdup(lab))) {
                st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
                break;
            }
            dh[d] = !strcmp(half, "heldout") ? 1 : !strcmp(half, "select") ? 0 : -1;
            out->n_heldout += dh[d] == 1;
            out->n_docs++;
        }
        sqlite3_finalize(q);
    }
    if (st != NL_OK) nl_ability_sets_release(out);
    return st;
}

nl_status nl_ability_sets_check_model(nl_ctx *ctx, const nl_ability_sets *s, nl_model *m, const char *model_path) {
    const nl_config *c = nl_model_config(m);
    float *wn = malloc((size_t)(c->d_ff > 0 ? c->d_ff : 1) * sizeof *wn);
    if (!wn) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = NL_OK;
    for (int j = 0; j < s->n_layers && st == NL_OK; j++) {
        int l = s->layers[j];
        if (l >= c->n_layers || c->d_ff != s->d_ff) {
            st = nl_errorf(ctx, NL_EINVAL, "scores run %lld ('%s') is from another model than '%s': %s", (long long)s->run_id,
                           s->source, model_path, l >= c->n_layers ? "it has more layers" : "d_ff differs");
            break;
        }
        if ((st = nl_model_w_out_norm(ctx, m, l, wn)) != NL_OK) break;
        double sum = 0;
        for (int i = 0; i < c->d_ff; i++) sum += wn[i];
        if (!(fabs(sum - s->w_out_norm_sum[j]) <= 1e-4 * fabs(s->w_out_norm_sum[j])))
            st = nl_errorf(ctx, NL_EINVAL, "scores run %lld ('%s') is from another model than '%s': layer %d W_out norms differ",
                           (long long)s->run_id, s->source, model_path, l);
    }
    free(wn);
    return st;
}
