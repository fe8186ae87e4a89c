/* attribution.c — direct logit attribution (definition and table in attribution.h): the
 * neuron's W_out column (optionally times the final norm's weight) through the LM head with one
 * GEMV, then the top and bottom tokens by a partial selection.
 * Rules: library code (statuses, no printing). Checked by tests/test_lens.c and tests/lens_cli.sh. */
#include "analyses/attribution.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/ops.h"

void nl_attribution_opts_init(nl_attribution_opts *o) {
    memset(o, 0, sizeof *o);
    o->top = 20;
}

void nl_attribution_result_release(nl_attribution_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_rows; i++) free(r->rows[i].token);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static nl_status check_neuron(nl_ctx *ctx, nl_model *m, int layer, int neuron) {
    const nl_config *c = nl_model_config(m);
    if (layer < 0 || layer >= c->n_layers)
        return nl_errorf(ctx, NL_EINVAL, "layer %d is outside the %d layers of '%s' (0..%d)", layer, c->n_layers, nl_model_path(m),
                         c->n_layers - 1);
    if (nl_config_is_moe_layer(c, layer))
        return nl_errorf(ctx, NL_EUNSUPPORTED, "layer %d of '%s' is a mixture-of-experts layer: it has no single W_out to attribute",
                         layer, nl_model_path(m));
    if (neuron < 0 || neuron >= c->d_ff)
        return nl_errorf(ctx, NL_EINVAL, "neuron %d is outside the %d neurons of layer %d of '%s' (0..%d)", neuron, c->d_ff, layer,
                         nl_model_path(m), c->d_ff - 1);
    return NL_OK;
}

nl_status nl_attribution_logits(nl_ctx *ctx, nl_model *m, int layer, int neuron, int norm_weight, float *logits) {
    nl_status st = check_neuron(ctx, m, layer, neuron);
    if (st != NL_OK) return st;
    const nl_config *c = nl_model_config(m);
    const int D = c->d_model;
    nl_layer w;
    if ((st = nl_model_layer(ctx, m, layer, &w)) != NL_OK) return st;
    float *col = malloc((size_t)D * sizeof(float)); /* (D) W_out[:, i] */
    if (!col) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    const nl_mat *wd = &w.w_down; /* (D, F) y = a·W_downᵀ: element (d, i) */
    for (int d = 0; d < D; d++)
        col[d] = wd->trans ? wd->w[(size_t)neuron * wd->ld + d] : wd->w[(size_t)d * wd->ld + neuron];
    nl_head h;
    if ((st = nl_model_head(ctx, m, &h)) == NL_OK) {
        if (norm_weight && h.norm_w)
            for (int d = 0; d < D; d++) col[d] *= h.norm_w[d];
        nl_matmul(logits, c->vocab_size, col, D, 1, &h.lm_head, NULL);
    }
    free(col);
    return st;
}

nl_status nl_attribution_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS neuron_attribution(run_id INTEGER NOT NULL REFERENCES runs(id),"
                           " layer INTEGER NOT NULL, neuron INTEGER NOT NULL, rank INTEGER NOT NULL, token_id INTEGER NOT NULL,"
                           " token TEXT, logit REAL NOT NULL, PRIMARY KEY (run_id, layer, neuron, rank)) WITHOUT ROWID;");
}

/* idx (k): the k largest (dir = 1) or smallest (dir = −1) of z (V), in order, ties by lower id.
 * Insertion into a sorted list of k: O(V·k) worst case, O(V) typical for small k. */
static void top_k(const float *z, int V, int k, int dir, int *idx) {
    int n = 0;
    for (int v = 0; v < V; v++) {
        const float x = dir > 0 ? z[v] : -z[v];
        if (n == k && !(x > (dir > 0 ? z[idx[k - 1]] : -z[idx[k - 1]]))) continue;
        int p = n < k ? n++ : k - 1;
        while (p > 0 && x > (dir > 0 ? z[idx[p - 1]] : -z[idx[p - 1]])) idx[p] = idx[p - 1], p--;
        idx[p] = v;
    }
}

static nl_status store(nl_ctx *ctx, nl_results *db, int64_t run_id, const nl_attribution_result *r) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(nl_results_db(db), "INSERT INTO neuron_attribution VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &q, NULL);
    for (int i = 0; rc == SQLITE_OK && i < r->n_rows; i++) {
        const nl_attribution_row *x = &r->rows[i];
        sqlite3_reset(q);
        rc = sqlite3_bind_int64(q, 1, run_id);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(q, 2, x->layer);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(q, 3, x->neuron);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(q, 4, x->rank);
        if (rc == SQLITE_OK) rc = sqlite3_bind_int(q, 5, x->token_id);
        if (rc == SQLITE_OK) rc = x->token ? sqlite3_bind_text(q, 6, x->token, -1, SQLITE_STATIC) : sqlite3_bind_null(q, 6);
        if (rc == SQLITE_OK) rc = sqlite3_bind_double(q, 7, x->logit);
        if (rc == SQLITE_OK && sqlite3_step(q) != SQLITE_DONE) rc = SQLITE_ERROR;
    }
    if (rc != SQLITE_OK) st = nl_results_error(ctx, db, "cannot write the neuron_attribution rows");
    sqlite3_finalize(q);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    if (st != NL_OK) nl_results_rollback(db);
    return st;
}

nl_status nl_attribution_run(nl_ctx *ctx, const nl_attribution_opts *opts, nl_model *m, const nl_neuron_ref *neurons, int n, nl_results *db, nl_attribution_result *out) {
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_attribution_opts def;
    if (!opts) nl_attribution_opts_init(&def), opts = &def;
    const int V = nl_model_config(m)->vocab_size;
    if (opts->top < 1) return nl_errorf(ctx, NL_EINVAL, "--top %d: at least one token per direction", opts->top);
    const int k = opts->top < V ? opts->top : V;
    if (n < 1) return nl_errorf(ctx, NL_EINVAL, "no neurons to attribute");
    nl_status st = NL_OK;
    for (int j = 0; j < n && st == NL_OK; j++) st = check_neuron(ctx, m, neurons[j].layer, neurons[j].neuron);
    if (st != NL_OK) return st;
    size_t cap = 256 + (size_t)n * 24 + (opts->extra_params ? strlen(opts->extra_params) : 0);
    char *params = malloc(cap);
    float *z = malloc((size_t)V * sizeof(float));
    int *idx = malloc((size_t)k * sizeof(int));
    out->rows = calloc((size_t)n * 2 * k, sizeof *out->rows);
    if (!params || !z || !idx || !out->rows) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) {
        size_t o = (size_t)snprintf(params, cap, "{\"top\":%d,\"norm_weight\":%s,\"neurons\":[", opts->top,
                                    opts->norm_weight ? "true" : "false");
        for (int j = 0; j < n; j++) o += (size_t)snprintf(params + o, cap - o, "%s[%d,%d]", j ? "," : "", neurons[j].layer, neurons[j].neuron);
        snprintf(params + o, cap - o, "]%s}", opts->extra_params ? opts->extra_params : "");
        nl_run_info info = {"attribute", opts->model ? opts->model : nl_model_path(m), NULL, opts->source, params, NULL};
        if (db && (st = nl_attribution_create_tables(ctx, db)) == NL_OK) st = nl_results_begin_run(ctx, db, &info, &out->run_id);
    }
    for (int j = 0; st == NL_OK && j < n; j++) {
        if ((st = nl_attribution_logits(ctx, m, neurons[j].layer, neurons[j].neuron, opts->norm_weight, z)) != NL_OK) break;
        for (int dir = 1; dir >= -1; dir -= 2) {
            top_k(z, V, k, dir, idx);
            for (int r = 0; r < k; r++) {
                nl_attribution_row *x = &out->rows[out->n_rows++];
                *x = (nl_attribution_row){neurons[j].layer, neurons[j].neuron, dir * (r + 1), idx[r], z[idx[r]], opts->decode ? opts->decode(opts->decode_user, idx[r]) : NULL};
            }
        }
    }
    if (st == NL_OK && db) st = store(ctx, db, out->run_id, out);
    free(params), free(z), free(idx);
    if (out->run_id > 0) return nl_results_finish_run(ctx, db, out->run_id, st, NULL);
    return st;
}
