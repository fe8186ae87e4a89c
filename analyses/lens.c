/* lens.c — the logit lens (definitions, memory bound and table in lens.h): an observer on the
 * residual stream keeps one chunk's (L+1, T, D) residuals, then each block of 32 predicted rows
 * is unembedded at the last layer and at every depth in turn, and the sums per label and depth
 * are stored in one transaction.
 * Rules: library code (statuses, no printing); the last layer reuses the code path of
 * nl_forward_nll (norm, GEMM, nl_sum_exp_shift in double), so it equals `ppl` exactly.
 * Checked by tests/test_lens.c and tests/lens_cli.sh. */
#include "analyses/lens.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/mpi.h"
#include "neuronlab/ops.h"
#include "neuronlab/walk.h"

#define LENS_BLOCK 32 /* rows unembedded at once: the block of nl_forward_nll */

void nl_lens_opts_init(nl_lens_opts *o) { memset(o, 0, sizeof *o); }

void nl_lens_result_release(nl_lens_result *r) {
    if (!r) return;
    free(r->sums);
    memset(r, 0, sizeof *r);
}

const nl_lens_sum *nl_lens_cell(const nl_lens_result *r, int li, int layer) {
    NL_ASSERT(li >= 0 && li <= r->n_labels && layer >= -1 && layer < r->n_layers);
    return &r->sums[(size_t)li * (r->n_layers + 1) + (size_t)(layer + 1)];
}

nl_status nl_lens_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS lens(run_id INTEGER NOT NULL REFERENCES runs(id), label TEXT NOT NULL,"
                           " layer INTEGER NOT NULL, tokens INTEGER NOT NULL, loss REAL, top1_agree REAL, kl REAL,"
                           " PRIMARY KEY (run_id, label, layer)) WITHOUT ROWID;");
}

typedef struct {
    nl_model *m;
    const nl_config *c;
    nl_head head;
    int L, D, V, B;
    float *resid;     /* (L+1, B, D) residual of each depth for the current chunk */
    float *xn;        /* (B, D) normalised rows */
    float *zf, *zl;   /* (LENS_BLOCK, V) final logits, one depth's logits */
    double *lse_f;    /* (LENS_BLOCK) log-sum-exp of the final logits */
    int *arg_f;       /* (LENS_BLOCK) argmax of the final logits */
    double row_loss[LENS_BLOCK], row_kl[LENS_BLOCK]; /* one depth's per-row values */
    int row_agree[LENS_BLOCK];
    int32_t *targets; /* (B) */
    nl_lens_sum *doc; /* (L+1) sums of the current document */
    nl_progress *progress;
    int doc_index;
} lens_state;

static nl_status on_resid(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    lens_state *s = user;
    memcpy(s->resid + ((size_t)(info->layer + 1) * s->B) * s->D, x, (size_t)info->T * s->D * sizeof(float));
    return NL_OK;
}

/* z (n, V) = head(norm_f(r)) for rows r (n, D). */
static void unembed(lens_state *s, const float *r, int n, float *z) {
    const nl_config *c = s->c;
    if (c->norm == NL_NORM_RMS) nl_rmsnorm(s->xn, r, s->head.norm_w, n, s->D, c->norm_eps);
    else nl_layernorm(s->xn, r, s->head.norm_w, s->head.norm_b, n, s->D, c->norm_eps);
    nl_matmul(z, s->V, s->xn, s->D, n, &s->head.lm_head, s->head.lm_head_b);
}

/* log Σ exp(z) as nl_forward_nll computes it; *arg = argmax (the lower id on ties). */
static double lse_arg(const float *z, int V, int *arg) {
    float mx = z[0];
    int a = 0;
    for (int v = 1; v < V; v++)
        if (z[v] > mx) mx = z[v], a = v;
    *arg = a;
    return log(nl_sum_exp_shift(z, V, mx)) + mx; /* the sum nl_forward_nll takes (ops.h) */
}

static nl_status lens_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    lens_state *s = user;
    const int L = s->L, D = s->D, V = s->V;
    int any = 0;
    for (int t = 0; t < T; t++) {
        int j = start + t + 1;
        s->targets[t] = (start + t >= new_from && j < doc->n_tokens && j >= doc->score_from) ? doc->tokens[j] : -1;
        any |= s->targets[t] >= 0;
    }
    nl_model_embed(s->m, doc->tokens + start, T, nl_forward_pos(f), s->resid); /* depth −1 */
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    if (st != NL_OK) return st;
    int fresh = start + T - (new_from > start ? new_from : start);
    if (s->progress && fresh > 0) nl_progress_add(s->progress, fresh);
    if (!any) return NL_OK;
    for (int t0 = 0; t0 < T; t0 += LENS_BLOCK) {
        const int n = T - t0 < LENS_BLOCK ? T - t0 : LENS_BLOCK;
        int blk = 0;
        for (int t = t0; t < t0 + n; t++) blk |= s->targets[t] >= 0;
        if (!blk) continue;
        unembed(s, s->resid + ((size_t)L * s->B + t0) * D, n, s->zf);
#pragma omp parallel for schedule(static) if ((int64_t)n * V > NL_PAR_MIN)
        for (int i = 0; i < n; i++) s->lse_f[i] = lse_arg(s->zf + (size_t)i * V, V, &s->arg_f[i]);
        for (int d = 0; d <= L; d++) {
            if (nl_interrupted) return nl_errorf(ctx, NL_EINTR, "interrupted");
            const float *z = s->zf;
            if (d < L) {
                unembed(s, s->resid + ((size_t)d * s->B + t0) * D, n, s->zl);
                z = s->zl;
            }
#pragma omp parallel for schedule(static) if ((int64_t)n * V > NL_PAR_MIN)
            for (int i = 0; i < n; i++) {
                const int tg = s->targets[t0 + i];
                if (tg < 0) continue;
                const float *zi = z + (size_t)i * V, *zfi = s->zf + (size_t)i * V;
                int arg = s->arg_f[i];
                const double lse = d < L ? lse_arg(zi, V, &arg) : s->lse_f[i];
                double k = 0;
                if (d < L)
                    for (int v = 0; v < V; v++) {
                        const double lpf = (double)zfi[v] - s->lse_f[i];
                        k += exp(lpf) * (lpf - ((double)zi[v] - lse));
                    }
                s->row_loss[i] = lse - zi[tg];
                s->row_kl[i] = k;
                s->row_agree[i] = arg == s->arg_f[i];
            }
            /* sums in token order, as nl_ppl_run adds its losses: independent of the threads */
            for (int i = 0; i < n; i++) {
                if (s->targets[t0 + i] < 0) continue;
                if (!isfinite(s->row_loss[i]) || !isfinite(s->row_kl[i]))
                    return nl_errorf(ctx, NL_EFORMAT, "'%s': the lens loss is not finite at layer %d of document %d (line %d), token %d",
                                     nl_model_path(s->m), d - 1, s->doc_index + 1, doc->line, start + t0 + i + 1);
                nl_lens_sum *c = &s->doc[d];
                c->loss += s->row_loss[i], c->kl += s->row_kl[i], c->agree += s->row_agree[i], c->tokens++;
            }
        }
    }
    return NL_OK;
}

static nl_status store(nl_ctx *ctx, nl_results *db, int64_t run_id, const nl_dataset *ds, const nl_lens_result *r) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(nl_results_db(db), "INSERT INTO lens VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &q, NULL);
    for (int li = 0; rc == SQLITE_OK && li <= r->n_labels; li++) {
        if (li > 0 && !ds->labels[li - 1][0]) continue; /* unlabelled documents count in '' only */
        for (int l = -1; rc == SQLITE_OK && l < r->n_layers; l++) {
            const nl_lens_sum *c = nl_lens_cell(r, li, l);
            sqlite3_reset(q);
            rc = sqlite3_bind_int64(q, 1, run_id);
            if (rc == SQLITE_OK) rc = sqlite3_bind_text(q, 2, li ? ds->labels[li - 1] : "", -1, SQLITE_STATIC);
            if (rc == SQLITE_OK) rc = sqlite3_bind_int(q, 3, l);
            if (rc == SQLITE_OK) rc = sqlite3_bind_int64(q, 4, c->tokens);
            const double n = (double)c->tokens;
            if (rc == SQLITE_OK) rc = c->tokens ? sqlite3_bind_double(q, 5, c->loss / n) : sqlite3_bind_null(q, 5);
            if (rc == SQLITE_OK) rc = c->tokens ? sqlite3_bind_double(q, 6, c->agree / n) : sqlite3_bind_null(q, 6);
            if (rc == SQLITE_OK) rc = c->tokens ? sqlite3_bind_double(q, 7, c->kl / n) : sqlite3_bind_null(q, 7);
            if (rc == SQLITE_OK && sqlite3_step(q) != SQLITE_DONE) rc = SQLITE_ERROR;
        }
    }
    if (rc != SQLITE_OK) st = nl_results_error(ctx, db, "cannot write the lens rows");
    sqlite3_finalize(q);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    if (st != NL_OK) nl_results_rollback(db);
    return st;
}

nl_status nl_lens_run(nl_ctx *ctx, const nl_lens_opts *opts, nl_forward *f, const nl_dataset *ds, nl_results *db,
                      nl_progress *progress, nl_lens_result *out) {
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_lens_opts def;
    if (!opts) nl_lens_opts_init(&def), opts = &def;
    if (nl_mpi_size() > 1)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "lens runs in one process (it was started on %d MPI ranks)", nl_mpi_size());
    nl_ctx_apply_threads(ctx);
    lens_state s = {0};
    s.m = nl_forward_model(f);
    s.c = nl_model_config(s.m);
    s.L = s.c->n_layers, s.D = s.c->d_model, s.V = s.c->vocab_size, s.B = nl_forward_max_T(f);
    s.progress = progress;
    const int L = s.L;
    nl_status st = nl_model_head(ctx, s.m, &s.head);
    if (st != NL_OK) return st;
    out->n_layers = L;
    out->n_labels = ds->n_labels;
    out->sums = calloc((size_t)(ds->n_labels + 1) * (L + 1), sizeof *out->sums);
    s.resid = malloc((size_t)(L + 1) * s.B * s.D * sizeof(float));
    s.xn = malloc((size_t)s.B * s.D * sizeof(float));
    s.zf = malloc((size_t)LENS_BLOCK * s.V * sizeof(float));
    s.zl = malloc((size_t)LENS_BLOCK * s.V * sizeof(float));
    s.lse_f = malloc(LENS_BLOCK * sizeof(double));
    s.arg_f = malloc(LENS_BLOCK * sizeof(int));
    s.targets = malloc((size_t)s.B * sizeof(int32_t));
    s.doc = calloc((size_t)L + 1, sizeof *s.doc);
    if (!out->sums || !s.resid || !s.xn || !s.zf || !s.zl || !s.lse_f || !s.arg_f || !s.targets || !s.doc)
        st = nl_errorf(ctx, NL_ENOMEM, "cannot allocate the lens buffers (%d layers, batch %d, vocabulary %d): out of memory", L, s.B, s.V);
    char params[256];
    const int C = nl_forward_max_P(f);
    snprintf(params, sizeof params, "{\"ctx\":%d,\"stride\":%d,\"batch\":%d,\"embedding_layer\":-1}", C,
             opts->stride > 0 ? opts->stride : (C > 1 ? C / 2 : 1), opts->batch > 0 ? opts->batch : s.B);
    nl_run_info info = {"lens", opts->model ? opts->model : nl_model_path(s.m), opts->dataset ? opts->dataset : ds->path, NULL,
                        params, nl_compute_name(nl_forward_compute(f))};
    if (st == NL_OK && db && (st = nl_lens_create_tables(ctx, db)) == NL_OK) st = nl_results_begin_run(ctx, db, &info, &out->run_id);
    const int began = out->run_id > 0;
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_hook_id hid = 0;
    if (st == NL_OK && nl_hooks_add_id(hooks, NL_HOOK_RESID, -1, NL_HOOK_OBSERVE, on_resid, &s, &hid) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        memset(s.doc, 0, (size_t)(L + 1) * sizeof *s.doc);
        s.doc_index = d;
        if ((st = nl_forward_doc(f, ctx, &ds->docs[d], opts->stride, lens_chunk, &s)) != NL_OK) break;
        const int li = nl_dataset_label_index(ds, ds->docs[d].label);
        for (int j = 0; j <= L; j++)
            for (int row = 0; row < 2; row++) {
                if (row == 1 && li < 0) break;
                nl_lens_sum *c = &out->sums[(size_t)(row ? li + 1 : 0) * (L + 1) + j];
                c->tokens += s.doc[j].tokens, c->loss += s.doc[j].loss, c->agree += s.doc[j].agree, c->kl += s.doc[j].kl;
            }
    }
    nl_hooks_remove(hooks, hid);
    if (st == NL_OK && db) st = store(ctx, db, out->run_id, ds, out);
    free(s.resid), free(s.xn), free(s.zf), free(s.zl), free(s.lse_f), free(s.arg_f), free(s.targets), free(s.doc);
    if (began) return nl_results_finish_run(ctx, db, out->run_id, st, NULL);
    return st;
}
