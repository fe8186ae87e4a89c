/* overlap.c — shared neurons between the abilities' top sets and the overlap run (definitions and
 * table in overlap.h). The matrix and the row writing poll nl_interrupted (NL_EINTR).
 * Checked by tests/test_overlap.c, tests/ability_cli.sh and tests/cli_errors.sh. */
#include "analyses/overlap.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void finish(nl_overlap_cell *c, double expect) {
    int64_t uni = c->size_a + c->size_b - c->inter;
    c->frac = c->size_a ? (double)c->inter / (double)c->size_a : 0;
    c->jaccard = uni ? (double)c->inter / (double)uni : 0;
    double eu = (double)c->size_a + (double)c->size_b - expect;
    c->baseline_jaccard = eu > 0 ? expect / eu : 0;
}

nl_status nl_overlap_compute(nl_ctx *ctx, const nl_ability_sets *s, nl_overlap_cell **out, int *n) {
    const int A = s->n_abilities, Lr = s->n_layers, F = s->d_ff;
    const size_t LF = (size_t)Lr * F;
    *out = NULL, *n = 0;
    nl_overlap_cell *c = calloc((size_t)A * A * (Lr + 1), sizeof *c);
    int64_t *elig = calloc((size_t)Lr, sizeof *elig);
    if (!c || !elig) {
        free(c), free(elig);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    int64_t elig_all = 0;
    for (int j = 0; j < Lr; j++) {
        for (int i = 0; i < F; i++) elig[j] += !s->excluded[(size_t)j * F + i];
        elig_all += elig[j];
    }
    for (int a = 0; a < A; a++) {
        if (nl_interrupted) { /* A² · Lr · F steps: stop between rows of the matrix */
            free(c), free(elig);
            return nl_errorf(ctx, NL_EINTR, "interrupted");
        }
        for (int b = 0; b < A; b++) {
            nl_overlap_cell *row = c + ((size_t)a * A + b) * (Lr + 1);
            const uint8_t *ma = s->member + a * LF, *mb = s->member + b * LF;
            nl_overlap_cell *all = &row[0];
            *all = (nl_overlap_cell){a, b, -1, 0, 0, 0, 0, 0, 0, 0};
            double e_all = 0;
            for (int j = 0; j < Lr; j++) {
                nl_overlap_cell *x = &row[1 + j];
                *x = (nl_overlap_cell){a, b, s->layers[j], 0, 0, 0, 0, 0, 0, 0};
                for (int i = 0; i < F; i++) {
                    size_t k = (size_t)j * F + i;
                    x->size_a += ma[k], x->size_b += mb[k], x->inter += ma[k] & mb[k];
                }
                double e = elig[j] ? (double)x->size_a * (double)x->size_b / (double)elig[j] : 0;
                x->baseline_frac = elig[j] ? (double)x->size_b / (double)elig[j] : 0;
                finish(x, e);
                all->size_a += x->size_a, all->size_b += x->size_b, all->inter += x->inter;
                e_all += e;
            }
            if (s->global) {
                e_all = elig_all ? (double)all->size_a * (double)all->size_b / (double)elig_all : 0;
                all->baseline_frac = elig_all ? (double)all->size_b / (double)elig_all : 0;
            } else {
                all->baseline_frac = all->size_a ? e_all / (double)all->size_a : 0;
            }
            finish(all, e_all);
        }
    }
    free(elig);
    *out = c, *n = A * A * (Lr + 1);
    return NL_OK;
}

void nl_overlap_opts_init(nl_overlap_opts *o) {
    memset(o, 0, sizeof *o);
    o->top = 0; /* the scores run's own fraction */
}

void nl_overlap_result_release(nl_overlap_result *r) {
    if (!r) return;
    free(r->cells);
    nl_ability_sets_release(&r->sets);
    memset(r, 0, sizeof *r);
    r->run_id = -1;
}

nl_status nl_overlap_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS overlap(run_id INTEGER NOT NULL REFERENCES runs(id), a TEXT NOT NULL,"
                           " b TEXT NOT NULL, layer INTEGER NOT NULL, size_a INTEGER NOT NULL, size_b INTEGER NOT NULL,"
                           " inter INTEGER NOT NULL, frac REAL, jaccard REAL, baseline_frac REAL, baseline_jaccard REAL,"
                           " PRIMARY KEY (run_id, a, b, layer)) WITHOUT ROWID");
}

/* The overlap rows of run under one transaction. */
static nl_status write_rows(nl_ctx *ctx, nl_results *db, int64_t run, const nl_ability_sets *s, const nl_overlap_cell *c, int n) {
    sqlite3_stmt *q = NULL;
    nl_status st = nl_results_begin(ctx, db);
    if (st == NL_OK && sqlite3_prepare_v2(nl_results_db(db), "INSERT INTO overlap VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)", -1,
                                          &q, NULL) != SQLITE_OK)
        st = nl_results_error(ctx, db, "cannot prepare the overlap table");
    for (int i = 0; i < n && st == NL_OK; i++) {
        if ((i & 4095) == 4095 && nl_interrupted) { /* rolled back: the run ends 'interrupted' */
            st = nl_errorf(ctx, NL_EINTR, "interrupted");
            break;
        }
        const nl_overlap_cell *x = &c[i];
        sqlite3_bind_int64(q, 1, run);
        sqlite3_bind_text(q, 2, s->abilities[x->a], -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, s->abilities[x->b], -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, x->layer);
        sqlite3_bind_int64(q, 5, x->size_a);
        sqlite3_bind_int64(q, 6, x->size_b);
        sqlite3_bind_int64(q, 7, x->inter);
        sqlite3_bind_double(q, 8, x->frac);
        sqlite3_bind_double(q, 9, x->jaccard);
        sqlite3_bind_double(q, 10, x->baseline_frac);
        sqlite3_bind_double(q, 11, x->baseline_jaccard);
        if (sqlite3_step(q) != SQLITE_DONE) st = nl_results_error(ctx, db, "cannot write the overlap table");
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    else nl_results_rollback(db);
    return st;
}

nl_status nl_overlap_run(nl_ctx *ctx, const nl_overlap_opts *opts, int64_t scores_run, nl_results *db, nl_progress *prog,
                         nl_overlap_result *out) {
    NL_ASSERT(db && out);
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_overlap_opts def;
    if (!opts) nl_overlap_opts_init(&def), opts = &def;
    nl_ability_sets *s = &out->sets;
    nl_status st = nl_ability_sets_load(ctx, db, scores_run, opts->top, s);
    if (st == NL_OK) st = nl_overlap_compute(ctx, s, &out->cells, &out->n_cells);
    if (st == NL_OK) st = nl_overlap_create_tables(ctx, db);
    if (st != NL_OK) return st;
    char params[256];
    snprintf(params, sizeof params, "{\"scores_run\":%lld,\"top\":%s,\"scope\":\"%s\"}", (long long)s->run_id, NL_JSON_NUM(s->top),
             s->global ? "global" : "layer");
    char dataset[64];
    snprintf(dataset, sizeof dataset, "ability run %lld", (long long)s->run_id);
    nl_run_info info = {"overlap", s->model, dataset, s->source, params, NULL};
    if ((st = nl_results_begin_run(ctx, db, &info, &out->run_id)) != NL_OK) return st;
    if (prog) prog->total = 1;
    st = write_rows(ctx, db, out->run_id, s, out->cells, out->n_cells);
    if (prog && st == NL_OK) nl_progress_add(prog, 1);
    return nl_results_finish_run(ctx, db, out->run_id, st, NULL);
}
