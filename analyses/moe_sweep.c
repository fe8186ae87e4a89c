/* moe_sweep.c — whole-model FLOPs, expert usage, the PCA of usage vectors, AP of expert usage
 * against labels, and the tables of moe-sweep / moe-usage (definitions in moe_sweep.h).
 * AP is analyses/ability.c's nl_ability_ap, never rewritten here. Checked by
 * tests/test_moe_sweep.c and tests/moe_sweep_cli.sh. */
#include "analyses/moe_sweep.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/ability.h"
#include "neuronlab/moe.h"
#include "neuronlab/rng.h"

/* ---- FLOPs -------------------------------------------------------------------------------- */

double nl_model_flops_token(const nl_config *c, const double *ffn, double keys) {
    const double D = c->d_model, H = c->n_heads, Hk = c->n_kv_heads > 0 ? c->n_kv_heads : c->n_heads, Dh = c->head_dim;
    double f = 2.0 * D * c->vocab_size; /* LM head */
    for (int l = 0; l < c->n_layers; l++) {
        f += 2.0 * D * H * Dh + 2.0 * 2.0 * D * Hk * Dh + 2.0 * H * Dh * D; /* q, k, v, o */
        f += 4.0 * H * Dh * keys;                                              /* q·k, Σ p·v */
        f += ffn ? ffn[l] : nl_moe_flops_dense(c);
    }
    return f;
}

double nl_moe_sweep_mean_keys(const nl_dataset *ds, int C, int S) {
    if (C < 1) return 0;
    if (S <= 0 || S > C) S = C / 2 > 0 ? C / 2 : 1;
    double sum = 0;
    int64_t n = 0;
    for (int d = 0; d < ds->n_docs; d++) {
        const int64_t T = ds->docs[d].n_tokens;
        for (int64_t j = 0; j < T; j++) {
            int64_t pos = j;
            if (j >= C) pos = j - ((j - C) / S + 1) * (int64_t)S;
            sum += (double)(pos + 1);
        }
        n += T;
    }
    return n ? sum / (double)n : 0;
}

/* ---- PCA ---------------------------------------------------------------------------------- */

/* Eigenvalues (m) and eigenvectors (columns of V (m, m)) of the symmetric A (m, m) by cyclic
 * Jacobi rotations; A is destroyed (its diagonal ends as the eigenvalues). */
static void jacobi(double *A, int m, double *V) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) V[(size_t)i * m + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, tot = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                const double a = A[(size_t)i * m + j] * A[(size_t)i * m + j];
                tot += a;
                if (i != j) off += a;
            }
        if (off <= 1e-30 * tot || off == 0) break;
        for (int p = 0; p < m; p++)
            for (int q = p + 1; q < m; q++) {
                const double apq = A[(size_t)p * m + q];
                if (apq == 0) continue;
                const double app = A[(size_t)p * m + p], aqq = A[(size_t)q * m + q];
                const double theta = (aqq - app) / (2.0 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                const double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                for (int k = 0; k < m; k++) { /* A ← Jᵀ A J: columns p, q then rows p, q */
                    const double akp = A[(size_t)k * m + p], akq = A[(size_t)k * m + q];
                    A[(size_t)k * m + p] = cs * akp - sn * akq;
                    A[(size_t)k * m + q] = sn * akp + cs * akq;
                }
                for (int k = 0; k < m; k++) {
                    const double apk = A[(size_t)p * m + k], aqk = A[(size_t)q * m + k];
                    A[(size_t)p * m + k] = cs * apk - sn * aqk;
                    A[(size_t)q * m + k] = sn * apk + cs * aqk;
                }
                for (int k = 0; k < m; k++) {
                    const double vkp = V[(size_t)k * m + p], vkq = V[(size_t)k * m + q];
                    V[(size_t)k * m + p] = cs * vkp - sn * vkq;
                    V[(size_t)k * m + q] = sn * vkp + cs * vkq;
                }
            }
    }
}

nl_status nl_pca2(nl_ctx *ctx, const double *X, int n, int p, double *scores, double *variance) {
    if (n < 2 || p < 1) return nl_errorf(ctx, NL_EINVAL, "PCA needs at least 2 rows and 1 column (got %d × %d)", n, p);
    const int gram = p > n, m = gram ? n : p;
    if (m > NL_PCA_MAX_DIM) return nl_errorf(ctx, NL_EINVAL, "PCA of %d × %d: min(rows, columns) exceeds %d", n, p, NL_PCA_MAX_DIM);
    double *Xc = malloc((size_t)n * p * sizeof *Xc), *A = calloc((size_t)m * m, sizeof *A), *V = malloc((size_t)m * m * sizeof *V);
    if (!Xc || !A || !V) {
        free(Xc), free(A), free(V);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    for (int j = 0; j < p; j++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += X[(size_t)i * p + j];
        mean /= n;
        for (int i = 0; i < n; i++) Xc[(size_t)i * p + j] = X[(size_t)i * p + j] - mean;
    }
    if (gram) { /* Xc·Xcᵀ (n, n) */
        for (int a = 0; a < n; a++)
            for (int b = a; b < n; b++) {
                double s = 0;
                for (int j = 0; j < p; j++) s += Xc[(size_t)a * p + j] * Xc[(size_t)b * p + j];
                A[(size_t)a * n + b] = A[(size_t)b * n + a] = s;
            }
    } else { /* Xcᵀ·Xc (p, p) */
        for (int i = 0; i < n; i++) {
            const double *r = Xc + (size_t)i * p;
            for (int a = 0; a < p; a++)
                if (r[a] != 0)
                    for (int b = a; b < p; b++) A[(size_t)a * p + b] += r[a] * r[b];
        }
        for (int a = 0; a < p; a++)
            for (int b = 0; b < a; b++) A[(size_t)a * p + b] = A[(size_t)b * p + a];
    }
    jacobi(A, m, V);
    int top[2] = {-1, -1};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < m; i++) {
            if (i == top[0]) continue;
            if (top[k] < 0 || A[(size_t)i * m + i] > A[(size_t)top[k] * m + top[k]]) top[k] = i;
        }
    for (int k = 0; k < 2; k++) {
        const int c = top[k];
        const double lam = c >= 0 && A[(size_t)c * m + c] > 0 ? A[(size_t)c * m + c] : 0;
        if (variance) variance[k] = lam / (n - 1);
        for (int i = 0; i < n; i++) {
            double s = 0;
            if (c >= 0 && lam > 0) {
                if (gram) s = V[(size_t)i * m + c] * sqrt(lam);
                else
                    for (int j = 0; j < p; j++) s += Xc[(size_t)i * p + j] * V[(size_t)j * m + c];
            }
            scores[(size_t)i * 2 + k] = s;
        }
        int big = 0; /* sign: the entry of largest |score| is positive */
        for (int i = 1; i < n; i++)
            if (fabs(scores[(size_t)i * 2 + k]) > fabs(scores[(size_t)big * 2 + k])) big = i;
        if (scores[(size_t)big * 2 + k] < 0)
            for (int i = 0; i < n; i++) scores[(size_t)i * 2 + k] = -scores[(size_t)i * 2 + k];
    }
    free(Xc), free(A), free(V);
    return NL_OK;
}

/* ---- usage -------------------------------------------------------------------------------- */

nl_status nl_moe_usage_init(nl_ctx *ctx, nl_moe_usage *u, const int *layers, int n_layers, int E, int K, int n_docs) {
    memset(u, 0, sizeof *u);
    u->n_layers = n_layers, u->E = E, u->K = K, u->n_docs = n_docs;
    u->layers = malloc((size_t)(n_layers > 0 ? n_layers : 1) * sizeof *u->layers);
    u->tokens = calloc((size_t)(n_docs > 0 ? n_docs : 1), sizeof *u->tokens);
    u->count = calloc((size_t)(n_docs > 0 ? n_docs : 1) * (size_t)n_layers * (size_t)E + 1, sizeof *u->count);
    if (!u->layers || !u->tokens || !u->count) {
        nl_moe_usage_release(u);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    memcpy(u->layers, layers, (size_t)n_layers * sizeof *layers);
    return NL_OK;
}

void nl_moe_usage_release(nl_moe_usage *u) {
    if (!u) return;
    free(u->layers), free(u->tokens), free(u->count);
    memset(u, 0, sizeof *u);
}

void nl_moe_usage_add(nl_moe_usage *u, int d, int li, const int32_t *sel, int T, int from) {
    int64_t *c = u->count + ((size_t)d * u->n_layers + (size_t)li) * (size_t)u->E;
    for (int t = from < 0 ? 0 : from; t < T; t++)
        for (int k = 0; k < u->K; k++) c[sel[(size_t)t * u->K + k]]++;
}

void nl_moe_usage_add_tokens(nl_moe_usage *u, int d, int64_t rows) { u->tokens[d] += rows; }

/* ---- tables ------------------------------------------------------------------------------- */

nl_status nl_moe_sweep_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS moe_sweep(run_id INTEGER NOT NULL REFERENCES runs(id), router TEXT NOT NULL,"
                           " fill TEXT NOT NULL, k INTEGER NOT NULL, k_frac REAL, label TEXT NOT NULL, tokens INTEGER NOT NULL,"
                           " nll REAL, ppl REAL, ffn_flops REAL, ffn_frac REAL, expert_frac REAL, model_flops REAL, model_frac REAL, tokens_per_s REAL,"
                           " recall REAL, dense INTEGER NOT NULL, cpu_s REAL, PRIMARY KEY (run_id, router, fill, k, label)) WITHOUT ROWID;"
                           "CREATE TABLE IF NOT EXISTS expert_usage(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
                           " expert INTEGER NOT NULL, label TEXT NOT NULL, token_frac REAL,"
                           " PRIMARY KEY (run_id, layer, expert, label)) WITHOUT ROWID;"
                           "CREATE TABLE IF NOT EXISTS expert_usage_doc(run_id INTEGER NOT NULL REFERENCES runs(id), doc INTEGER NOT NULL,"
                           " layer INTEGER NOT NULL, expert INTEGER NOT NULL, frac REAL,"
                           " PRIMARY KEY (run_id, doc, layer, expert)) WITHOUT ROWID;"
                           "CREATE TABLE IF NOT EXISTS expert_usage_pca(run_id INTEGER NOT NULL REFERENCES runs(id), doc INTEGER NOT NULL,"
                           " label TEXT NOT NULL, pc1 REAL, pc2 REAL, PRIMARY KEY (run_id, doc)) WITHOUT ROWID;"
                           "CREATE TABLE IF NOT EXISTS expert_ap(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
                           " expert INTEGER NOT NULL, label TEXT NOT NULL, ap REAL, ap_shuffled REAL, baseline REAL,"
                           " PRIMARY KEY (run_id, layer, expert, label)) WITHOUT ROWID;");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The distinct non-empty labels of ds in byte order into names (ds->n_labels); returns their count. */
static int sorted_labels(const nl_dataset *ds, const char **names) {
    int n = 0;
    for (int l = 0; l < ds->n_labels; l++)
        if (ds->labels[l][0]) names[n++] = ds->labels[l];
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    return n;
}

nl_status nl_moe_usage_check_labels(nl_ctx *ctx, const nl_dataset *ds) {
    const char **names = malloc((size_t)(ds->n_labels + 1) * sizeof *names);
    if (!names) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    const int A = sorted_labels(ds, names);
    free(names);
    if (A < 2)
        return nl_errorf(ctx, NL_EINVAL, "'%s': expert usage by label needs documents of at least two labels, found %d", ds->path, A);
    return NL_OK;
}

static nl_status step(nl_ctx *ctx, nl_results *db, sqlite3_stmt *q) {
    if (sqlite3_step(q) != SQLITE_DONE) return nl_results_error(ctx, db, "cannot write the expert usage");
    sqlite3_reset(q);
    return NL_OK;
}

nl_status nl_moe_usage_write(nl_ctx *ctx, nl_results *db, int64_t run, const nl_moe_usage *u, const nl_dataset *ds,
                             uint64_t seed) {
    nl_status st = nl_moe_usage_check_labels(ctx, ds);
    if (st != NL_OK) return st;
    const int Lm = u->n_layers, E = u->E, P = Lm * E;
    const char **names = malloc((size_t)(ds->n_labels + 1) * sizeof *names);
    int *docs = malloc((size_t)(ds->n_docs + 1) * sizeof *docs), *lab = malloc((size_t)(ds->n_docs + 1) * sizeof *lab);
    if (!names || !docs || !lab) {
        free(names), free(docs), free(lab);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    const int A = sorted_labels(ds, names);
    int n = 0; /* labelled documents */
    for (int d = 0; d < ds->n_docs; d++) {
        if (!ds->docs[d].label[0]) continue;
        if (u->tokens[d] <= 0) {
            st = nl_errorf(ctx, NL_EINVAL, "'%s': document %d (line %d) has no tokens to count expert usage on", ds->path, d + 1,
                           ds->docs[d].line);
            break;
        }
        docs[n] = d;
        const char **hit = bsearch(&ds->docs[d].label, names, (size_t)A, sizeof *names, cmp_str);
        lab[n++] = (int)(hit - names);
    }
    double *X = st == NL_OK ? malloc((size_t)n * P * sizeof *X) : NULL, *sc = NULL;
    float *v = NULL;
    uint8_t *y = NULL, *ys = NULL;
    int64_t *perm = NULL;
    if (st == NL_OK) {
        sc = malloc((size_t)n * 2 * sizeof *sc);
        v = malloc((size_t)n * sizeof *v);
        y = malloc((size_t)n * A), ys = malloc((size_t)n * A);
        perm = malloc((size_t)n * sizeof *perm);
        if (!X || !sc || !v || !y || !ys || !perm) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    if (st == NL_OK) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < P; j++) X[(size_t)i * P + j] = (double)u->count[(size_t)docs[i] * P + j] / (double)u->tokens[docs[i]];
        st = nl_pca2(ctx, X, n, P, sc, NULL);
    }
    if (st == NL_OK)
        for (int a = 0; a < A; a++) {
            uint8_t *ya = y + (size_t)a * n, *yb = ys + (size_t)a * n;
            for (int i = 0; i < n; i++) ya[i] = lab[i] == a;
            nl_rng r;
            nl_rng_derive(&r, seed, NL_MOE_USAGE_SHUFFLE, (uint64_t)a);
            nl_rng_permutation(&r, perm, n);
            for (int i = 0; i < n; i++) yb[i] = ya[perm[i]];
        }
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *qu = NULL, *qd = NULL, *qp = NULL, *qa = NULL;
    if (st == NL_OK) st = nl_results_begin(ctx, db);
    if (st == NL_OK &&
        (sqlite3_prepare_v2(h, "INSERT INTO expert_usage VALUES (?1, ?2, ?3, ?4, ?5)", -1, &qu, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(h, "INSERT INTO expert_usage_doc VALUES (?1, ?2, ?3, ?4, ?5)", -1, &qd, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(h, "INSERT INTO expert_usage_pca VALUES (?1, ?2, ?3, ?4, ?5)", -1, &qp, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(h, "INSERT INTO expert_ap VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &qa, NULL) != SQLITE_OK))
        st = nl_results_error(ctx, db, "cannot prepare the expert usage rows");
    for (int li = 0; st == NL_OK && li < Lm; li++)
        for (int e = 0; st == NL_OK && e < E; e++)
            for (int a = 0; st == NL_OK && a < A; a++) {
                int64_t c = 0, t = 0;
                for (int i = 0; i < n; i++)
                    if (lab[i] == a) c += u->count[((size_t)docs[i] * Lm + li) * E + e], t += u->tokens[docs[i]];
                sqlite3_bind_int64(qu, 1, run), sqlite3_bind_int(qu, 2, u->layers[li]), sqlite3_bind_int(qu, 3, e);
                sqlite3_bind_text(qu, 4, names[a], -1, SQLITE_STATIC), sqlite3_bind_double(qu, 5, (double)c / (double)t);
                st = step(ctx, db, qu);
                if (st != NL_OK) break;
                for (int i = 0; i < n; i++) v[i] = (float)X[(size_t)i * P + (size_t)li * E + e];
                const double ap = nl_ability_ap(v, y + (size_t)a * n, n), aps = nl_ability_ap(v, ys + (size_t)a * n, n);
                int pos = 0;
                for (int i = 0; i < n; i++) pos += lab[i] == a;
                sqlite3_bind_int64(qa, 1, run), sqlite3_bind_int(qa, 2, u->layers[li]), sqlite3_bind_int(qa, 3, e);
                sqlite3_bind_text(qa, 4, names[a], -1, SQLITE_STATIC);
                if (isfinite(ap)) sqlite3_bind_double(qa, 5, ap); else sqlite3_bind_null(qa, 5);
                if (isfinite(aps)) sqlite3_bind_double(qa, 6, aps); else sqlite3_bind_null(qa, 6);
                sqlite3_bind_double(qa, 7, (double)pos / n);
                st = step(ctx, db, qa);
            }
    for (int i = 0; st == NL_OK && i < n; i++) {
        for (int li = 0; st == NL_OK && li < Lm; li++)
            for (int e = 0; st == NL_OK && e < E; e++) {
                sqlite3_bind_int64(qd, 1, run), sqlite3_bind_int(qd, 2, docs[i]), sqlite3_bind_int(qd, 3, u->layers[li]);
                sqlite3_bind_int(qd, 4, e), sqlite3_bind_double(qd, 5, X[(size_t)i * P + (size_t)li * E + e]);
                st = step(ctx, db, qd);
            }
        if (st != NL_OK) break;
        sqlite3_bind_int64(qp, 1, run), sqlite3_bind_int(qp, 2, docs[i]);
        sqlite3_bind_text(qp, 3, names[lab[i]], -1, SQLITE_STATIC);
        sqlite3_bind_double(qp, 4, sc[(size_t)i * 2]), sqlite3_bind_double(qp, 5, sc[(size_t)i * 2 + 1]);
        st = step(ctx, db, qp);
        if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
    }
    sqlite3_finalize(qu), sqlite3_finalize(qd), sqlite3_finalize(qp), sqlite3_finalize(qa);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    else nl_results_rollback(db);
    free(names), free(docs), free(lab), free(X), free(sc), free(v), free(y), free(ys), free(perm);
    return st;
}
