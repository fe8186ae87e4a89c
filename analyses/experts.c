/* experts.c — expert load, routing entropy and margin, co-selection and expert ability scores of
 * a native mixture-of-experts model, from a ROUTING observer while the model runs over a dataset
 * (definitions and tables in experts.h). The AP is ability.c's nl_ability_ap. */
#include "analyses/experts.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/ability.h"
#include "neuronlab/rng.h"
#include "neuronlab/walk.h"

typedef struct {
    int d, start, new_from; /* current document and chunk */
    int nm, E, k, nl;       /* MoE layers, experts, chosen per token, labels (+1 slot for "*") */
    int *lidx;              /* (L) model layer → MoE index, -1 for dense layers */
    int *mlayer;            /* (nm) MoE index → model layer */
    int *doc_lab;           /* (Dc) label index, -1 when unlabelled */
    const nl_dataset *ds;
    double *ntok, *ent, *marg, *shg; /* (nm, nl+1) */
    double *tok, *wsum;              /* (nm, nl+1, E) */
    int64_t *cos;                    /* (nm, E, E) */
    double *docw;                    /* (Dc, nm, E) Σ w over prompt tokens */
    int shared;                      /* the layers have a shared expert */
    nl_progress *progress;
} ex_state;

static void add_slot(ex_state *s, int m, int slot, const nl_moe_routing *r, int t) {
    const int E = s->E, k = s->k;
    const size_t ms = (size_t)m * (s->nl + 1) + (size_t)slot;
    const float *p = r->probs + (size_t)t * E;
    double h = 0, p1 = -1, p2 = -1;
    for (int e = 0; e < E; e++) {
        if (p[e] > 0) h -= (double)p[e] * log((double)p[e]);
        if (p[e] > p1) p2 = p1, p1 = p[e];
        else if (p[e] > p2) p2 = p[e];
    }
    s->ntok[ms] += 1;
    s->ent[ms] += h;
    s->marg[ms] += E > 1 ? p1 - p2 : 1.0;
    if (r->shared_gate) s->shg[ms] += r->shared_gate[t];
    for (int j = 0; j < k; j++) {
        const int e = r->experts[(size_t)t * k + j];
        s->tok[ms * E + (size_t)e] += 1;
        s->wsum[ms * E + (size_t)e] += r->weights[(size_t)t * k + j];
    }
}

static nl_status on_routing(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)x;
    ex_state *s = user;
    const nl_moe_routing *r = info->moe;
    const int m = s->lidx[info->layer];
    if (m < 0 || !r || !r->weights || !r->probs)
        return r && !r->weights && m >= 0 ? nl_errorf(ctx, NL_EINVAL, "layer %d: the routing has no weights", info->layer) : NL_OK;
    const int skip = s->new_from > s->start ? s->new_from - s->start : 0, E = s->E, k = s->k;
    const nl_doc *doc = &s->ds->docs[s->d];
    const int lab = s->doc_lab[s->d];
    for (int t = skip; t < info->T; t++) {
        if (lab >= 0) add_slot(s, m, lab, r, t);
        add_slot(s, m, s->nl, r, t);
        const int32_t *S = r->experts + (size_t)t * k;
        int64_t *c = s->cos + (size_t)m * E * E;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) {
                const int ea = S[a], eb = S[b];
                if (ea <= eb) c[(size_t)ea * E + eb]++;
            }
        if (s->start + t < doc->prompt_len) {
            double *dw = s->docw + ((size_t)s->d * s->nm + m) * E;
            for (int j = 0; j < k; j++) dw[S[j]] += r->weights[(size_t)t * k + j];
        }
    }
    return NL_OK;
}

static nl_status ex_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    ex_state *s = user;
    s->start = start, s->new_from = new_from;
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    int skip = new_from > start ? new_from - start : 0;
    if (st == NL_OK && s->progress && skip < T) nl_progress_add(s->progress, T - skip);
    return st;
}

nl_status nl_experts_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
        "CREATE TABLE IF NOT EXISTS expert_load(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
        " expert INTEGER NOT NULL, label TEXT NOT NULL, tokens INTEGER, token_frac REAL, weight_sum REAL, weight_frac REAL,"
        " PRIMARY KEY (run_id, layer, expert, label)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS expert_routing(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
        " label TEXT NOT NULL, tokens INTEGER, entropy REAL, entropy_max REAL, margin REAL,"
        " PRIMARY KEY (run_id, layer, label)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS expert_coselect(run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL,"
        " expert_a INTEGER NOT NULL, expert_b INTEGER NOT NULL, tokens INTEGER,"
        " PRIMARY KEY (run_id, layer, expert_a, expert_b)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS expert_ability(run_id INTEGER NOT NULL REFERENCES runs(id), ability TEXT NOT NULL,"
        " layer INTEGER NOT NULL, expert INTEGER NOT NULL, ap REAL, baseline REAL, shuffled_ap REAL,"
        " PRIMARY KEY (run_id, ability, layer, expert)) WITHOUT ROWID;");
}

static int bind_real(sqlite3_stmt *s, int i, double v) { return isnan(v) ? sqlite3_bind_null(s, i) : sqlite3_bind_double(s, i, v); }
static int step(sqlite3_stmt *s) {
    int rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_reset(s);
    return rc;
}

/* Writes every table of the finished state s. */
static nl_status write_tables(nl_ctx *ctx, ex_state *s, const nl_experts_opts *o, nl_results *db, int64_t run_id) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *ql = NULL, *qr = NULL, *qc = NULL, *qa = NULL;
    int rc = sqlite3_prepare_v2(h, "INSERT INTO expert_load VALUES (?,?,?,?,?,?,?,?)", -1, &ql, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(h, "INSERT INTO expert_routing VALUES (?,?,?,?,?,?,?)", -1, &qr, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(h, "INSERT INTO expert_coselect VALUES (?,?,?,?,?)", -1, &qc, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(h, "INSERT INTO expert_ability VALUES (?,?,?,?,?,?,?)", -1, &qa, NULL);
    const int E = s->E, nm = s->nm, nl = s->nl, Dc = s->ds->n_docs;
    for (int m = 0; rc == SQLITE_OK && m < nm; m++) {
        const int layer = s->mlayer[m];
        for (int slot = 0; rc == SQLITE_OK && slot <= nl; slot++) {
            const size_t ms = (size_t)m * (nl + 1) + (size_t)slot;
            const char *lab = slot == nl ? "*" : s->ds->labels[slot];
            const double n = s->ntok[ms];
            if (n == 0) continue;
            double wt = 0;
            for (int e = 0; e < E; e++) wt += s->wsum[ms * E + (size_t)e];
            for (int e = s->shared ? -1 : 0; rc == SQLITE_OK && e < E; e++) {
                const double tk = e < 0 ? n : s->tok[ms * E + (size_t)e], ws = e < 0 ? s->shg[ms] : s->wsum[ms * E + (size_t)e];
                sqlite3_bind_int64(ql, 1, run_id);
                sqlite3_bind_int(ql, 2, layer);
                sqlite3_bind_int(ql, 3, e);
                sqlite3_bind_text(ql, 4, lab, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(ql, 5, (int64_t)tk);
                sqlite3_bind_double(ql, 6, tk / n);
                sqlite3_bind_double(ql, 7, ws);
                bind_real(ql, 8, e < 0 ? ws / n : wt > 0 ? ws / wt : NAN);
                rc = step(ql);
            }
            if (rc != SQLITE_OK) break;
            sqlite3_bind_int64(qr, 1, run_id);
            sqlite3_bind_int(qr, 2, layer);
            sqlite3_bind_text(qr, 3, lab, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(qr, 4, (int64_t)n);
            sqlite3_bind_double(qr, 5, s->ent[ms] / n);
            sqlite3_bind_double(qr, 6, log((double)E));
            sqlite3_bind_double(qr, 7, s->marg[ms] / n);
            rc = step(qr);
        }
        for (int a = 0; rc == SQLITE_OK && a < E; a++)
            for (int b = a; rc == SQLITE_OK && b < E; b++) {
                const int64_t c = s->cos[((size_t)m * E + a) * E + b];
                if (!c) continue;
                sqlite3_bind_int64(qc, 1, run_id);
                sqlite3_bind_int(qc, 2, layer);
                sqlite3_bind_int(qc, 3, a);
                sqlite3_bind_int(qc, 4, b);
                sqlite3_bind_int64(qc, 5, c);
                rc = step(qc);
            }
    }
    /* ability: labelled documents only; one seeded shuffle of their labels */
    int Ds = 0;
    int *docs = malloc(sizeof(int) * (size_t)(Dc ? Dc : 1)), *shl = malloc(sizeof(int) * (size_t)(Dc ? Dc : 1));
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(Dc ? Dc : 1));
    float *v = malloc(sizeof(float) * (size_t)(Dc ? Dc : 1));
    uint8_t *y = malloc((size_t)(Dc ? Dc : 1)), *ys = malloc((size_t)(Dc ? Dc : 1));
    if (!docs || !shl || !perm || !v || !y || !ys) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int d = 0; st == NL_OK && d < Dc; d++)
        if (s->doc_lab[d] >= 0) docs[Ds++] = d;
    if (st == NL_OK && Ds > 0) {
        nl_rng r;
        nl_rng_derive(&r, o->seed, 0x65787065727473ull /* "experts" */, 0);
        nl_rng_permutation(&r, perm, Ds);
        for (int i = 0; i < Ds; i++) shl[i] = s->doc_lab[docs[perm[i]]];
    }
    for (int f = 0; st == NL_OK && rc == SQLITE_OK && f < nl; f++) {
        int pos = 0;
        for (int i = 0; i < Ds; i++) pos += (y[i] = s->doc_lab[docs[i]] == f), ys[i] = shl[i] == f;
        if (pos == 0 || pos == Ds) continue; /* not an ability of this dataset */
        for (int m = 0; rc == SQLITE_OK && m < nm; m++)
            for (int e = 0; rc == SQLITE_OK && e < E; e++) {
                for (int i = 0; i < Ds; i++) {
                    const nl_doc *doc = &s->ds->docs[docs[i]];
                    v[i] = (float)(s->docw[((size_t)docs[i] * nm + m) * E + e] / (doc->prompt_len > 0 ? doc->prompt_len : 1));
                }
                sqlite3_bind_int64(qa, 1, run_id);
                sqlite3_bind_text(qa, 2, s->ds->labels[f], -1, SQLITE_TRANSIENT);
                sqlite3_bind_int(qa, 3, s->mlayer[m]);
                sqlite3_bind_int(qa, 4, e);
                bind_real(qa, 5, nl_ability_ap(v, y, Ds));
                sqlite3_bind_double(qa, 6, (double)pos / Ds);
                bind_real(qa, 7, nl_ability_ap(v, ys, Ds));
                rc = step(qa);
            }
    }
    free(docs), free(shl), free(perm), free(v), free(y), free(ys);
    if (st == NL_OK && rc != SQLITE_OK) st = nl_results_error(ctx, db, "cannot write the expert rows");
    sqlite3_finalize(ql), sqlite3_finalize(qr), sqlite3_finalize(qc), sqlite3_finalize(qa);
    if (st == NL_OK) return nl_results_commit(ctx, db);
    nl_results_rollback(db);
    return st;
}

nl_status nl_experts_run(nl_ctx *ctx, const nl_experts_opts *o, nl_forward *f, const nl_dataset *ds, nl_results *db,
                         int64_t run_id, nl_progress *progress) {
    const nl_config *c = nl_model_config(nl_forward_model(f));
    const int L = c->n_layers;
    ex_state s = {0};
    s.ds = ds, s.E = c->n_experts, s.k = c->n_experts_per_tok, s.nl = ds->n_labels, s.progress = progress;
    s.shared = c->d_shared > 0;
    s.lidx = malloc(sizeof(int) * (size_t)L);
    s.mlayer = malloc(sizeof(int) * (size_t)L);
    s.doc_lab = malloc(sizeof(int) * (size_t)(ds->n_docs ? ds->n_docs : 1));
    nl_status st = NL_OK;
    if (!s.lidx || !s.mlayer || !s.doc_lab) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int l = 0; st == NL_OK && l < L; l++) {
        s.lidx[l] = -1;
        if (c->n_experts > 0 && nl_config_is_moe_layer(c, l)) s.mlayer[s.lidx[l] = s.nm++] = l;
    }
    if (st == NL_OK && s.nm == 0) st = nl_errorf(ctx, NL_EINVAL, "the model has no mixture-of-experts layer");
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        s.doc_lab[d] = -1;
        for (int i = 0; ds->docs[d].label[0] && i < ds->n_labels; i++)
            if (!strcmp(ds->labels[i], ds->docs[d].label)) s.doc_lab[d] = i;
    }
    if (st == NL_OK) {
        const size_t a = (size_t)s.nm * (s.nl + 1), E = (size_t)s.E;
        s.ntok = calloc(a, sizeof(double)), s.ent = calloc(a, sizeof(double)), s.marg = calloc(a, sizeof(double));
        s.shg = calloc(a, sizeof(double)), s.tok = calloc(a * E, sizeof(double)), s.wsum = calloc(a * E, sizeof(double));
        s.cos = calloc((size_t)s.nm * E * E, sizeof(int64_t));
        s.docw = calloc((size_t)(ds->n_docs ? ds->n_docs : 1) * s.nm * E, sizeof(double));
        if (!s.ntok || !s.ent || !s.marg || !s.shg || !s.tok || !s.wsum || !s.cos || !s.docw)
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    nl_hook_id id = 0;
    if (st == NL_OK && nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_ROUTING, -1, NL_HOOK_OBSERVE, on_routing, &s, &id) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        s.d = d;
        st = nl_forward_doc(f, ctx, &ds->docs[d], o->stride, ex_chunk, &s);
    }
    nl_hooks_remove(nl_forward_hooks(f), id);
    if (st == NL_OK) st = nl_experts_create_tables(ctx, db);
    if (st == NL_OK) st = write_tables(ctx, &s, o, db, run_id);
    free(s.lidx), free(s.mlayer), free(s.doc_lab), free(s.ntok), free(s.ent), free(s.marg), free(s.shg), free(s.tok);
    free(s.wsum), free(s.cos), free(s.docw);
    return st;
}

/* ---- removing experts ------------------------------------------------------------------------ */

#include "neuronlab/ops.h"
#include "neuronlab/perplexity.h"

typedef struct {
    int L, E, D, Fs, maxT;
    uint8_t *rm;      /* (L, E) 1 = routed expert removed */
    uint8_t *rm_sh;   /* (L) 1 = shared expert removed */
    nl_model *m;
    float *xin;       /* (maxT, D) FFN input of the current layer (shared removal) */
    float *g, *u, *y, *sg; /* shared expert scratch */
} rm_state;

static nl_status rm_logits(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    const rm_state *s = user;
    const uint8_t *r = s->rm + (size_t)info->layer * s->E;
    for (int e = 0; e < info->width; e++)
        if (r[e])
            for (int t = 0; t < info->T; t++) x[(size_t)t * info->width + e] = -INFINITY;
    return NL_OK;
}

static nl_status rm_in(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    rm_state *s = user;
    if (s->rm_sh[info->layer]) memcpy(s->xin, x, (size_t)info->T * s->D * sizeof(float));
    return NL_OK;
}

/* out -= sigmoid(x·w_sg) · FFN_shared(x) for a layer whose shared expert is removed */
static nl_status rm_out(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    rm_state *s = user;
    if (!s->rm_sh[info->layer]) return NL_OK;
    nl_layer w;
    nl_status st = nl_model_layer(ctx, s->m, info->layer, &w);
    if (st != NL_OK) return st;
    const nl_config *c = nl_model_config(s->m);
    const int T = info->T, D = s->D, Fs = s->Fs;
    nl_matmul(s->g, Fs, s->xin, D, T, &w.sh_gate, NULL);
    nl_matmul(s->u, Fs, s->xin, D, T, &w.sh_up, NULL);
    nl_act_glu(s->g, s->u, (int64_t)T * Fs, c->act);
    nl_matmul(s->y, D, s->g, Fs, T, &w.sh_down, NULL);
    nl_matmul(s->sg, 1, s->xin, D, T, &w.sh_router, NULL);
    for (int t = 0; t < T; t++) {
        const float gate = 1.0f / (1.0f + expf(-s->sg[t]));
        for (int i = 0; i < D; i++) x[(size_t)t * D + i] -= gate * s->y[(size_t)t * D + i];
    }
    return NL_OK;
}

nl_status nl_expert_sets_all(nl_ctx *ctx, const nl_config *c, nl_expert_set **sets, int *n, int **store, char **names) {
    int cnt = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (c->n_experts > 0 && nl_config_is_moe_layer(c, l)) cnt += c->n_experts + (c->d_shared > 0);
    *sets = calloc((size_t)(cnt ? cnt : 1), sizeof **sets);
    *store = malloc(sizeof(int) * 2 * (size_t)(cnt ? cnt : 1));
    *names = malloc(32 * (size_t)(cnt ? cnt : 1));
    if (!*sets || !*store || !*names) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int i = 0; /* per MoE layer: its routed experts, then its shared expert */
    for (int l = 0; l < c->n_layers; l++) {
        if (!(c->n_experts > 0 && nl_config_is_moe_layer(c, l))) continue;
        for (int e = 0; e <= c->n_experts; e++) {
            if (e == c->n_experts && c->d_shared <= 0) break;
            const int ex = e == c->n_experts ? -1 : e;
            (*store)[2 * i] = l, (*store)[2 * i + 1] = ex;
            char *nm = *names + 32 * (size_t)i;
            if (ex < 0) snprintf(nm, 32, "%d:shared", l);
            else snprintf(nm, 32, "%d:%d", l, ex);
            (*sets)[i] = (nl_expert_set){nm, 1, &(*store)[2 * i], &(*store)[2 * i + 1]};
            i++;
        }
    }
    *n = i;
    return NL_OK;
}

static nl_status insert_rows(nl_ctx *ctx, nl_results *db, int64_t run_id, const char *removed, const char *control, int seed,
                             int experts, const nl_ppl_result *p, const nl_ppl_result *base, const nl_dataset *ds) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(nl_results_db(db), "INSERT INTO expert_prune VALUES (?,?,?,?,?,?,?,?,?,?)", -1, &q, NULL);
    for (int k = 0; rc == SQLITE_OK && k <= ds->n_labels; k++) {
        if (k < ds->n_labels && !ds->labels[k][0]) continue;
        const nl_nll_sum sm = k < ds->n_labels ? p->by_label[k] : p->total;
        const nl_nll_sum sb = k < ds->n_labels ? base->by_label[k] : base->total;
        const double ppl = nl_nll_ppl(sm), pb = nl_nll_ppl(sb);
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_text(q, 2, removed, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 3, control, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, seed);
        sqlite3_bind_text(q, 5, k < ds->n_labels ? ds->labels[k] : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(q, 6, experts);
        sqlite3_bind_int64(q, 7, sm.n);
        bind_real(q, 8, sm.n > 0 ? nl_nll_mean(sm) : NAN);
        bind_real(q, 9, sm.n > 0 ? ppl : NAN);
        bind_real(q, 10, sm.n > 0 && sb.n > 0 ? (ppl - pb) / pb : NAN);
        rc = step(q);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        st = nl_results_error(ctx, db, "cannot write the expert_prune rows");
        nl_results_rollback(db);
        return st;
    }
    return nl_results_commit(ctx, db);
}

nl_status nl_expert_prune_run(nl_ctx *ctx, const nl_expert_prune_opts *o, nl_forward *f, const nl_dataset *ds,
                              nl_results *db, int64_t run_id, nl_progress *progress) {
    nl_model *m = nl_forward_model(f);
    const nl_config *c = nl_model_config(m);
    const int L = c->n_layers, E = c->n_experts, maxT = nl_forward_max_T(f);
    rm_state s = {L, E, c->d_model, c->d_shared, maxT, NULL, NULL, m, NULL, NULL, NULL, NULL, NULL};
    nl_status st = nl_results_exec(ctx, db,
        "CREATE TABLE IF NOT EXISTS expert_prune(run_id INTEGER NOT NULL REFERENCES runs(id), removed TEXT NOT NULL,"
        " control TEXT NOT NULL CHECK (control IN ('none','expert','shared','random')), seed INTEGER NOT NULL,"
        " label TEXT NOT NULL, experts INTEGER NOT NULL, tokens INTEGER NOT NULL, nll REAL, ppl REAL, rel_change REAL,"
        " PRIMARY KEY (run_id, removed, control, seed, label)) WITHOUT ROWID;");
    if (st != NL_OK) return st;
    if (E <= 0) return nl_errorf(ctx, NL_EINVAL, "the model has no mixture-of-experts layer");
    for (int i = 0; i < o->n_sets; i++)
        for (int j = 0; j < o->sets[i].n; j++) {
            const int l = o->sets[i].layer[j], e = o->sets[i].expert[j];
            if (l < 0 || l >= L || !nl_config_is_moe_layer(c, l))
                return nl_errorf(ctx, NL_EINVAL, "expert set '%s': layer %d is not a mixture-of-experts layer", o->sets[i].name, l);
            if (e >= E || (e < 0 && c->d_shared <= 0))
                return nl_errorf(ctx, NL_EINVAL, "expert set '%s': layer %d has %d experts%s", o->sets[i].name, l, E,
                                 c->d_shared > 0 ? "" : " and no shared expert");
        }
    s.rm = calloc((size_t)L * E, 1), s.rm_sh = calloc((size_t)L, 1);
    const size_t T = (size_t)maxT, Fs = (size_t)(c->d_shared > 0 ? c->d_shared : 1), D = (size_t)c->d_model;
    s.xin = malloc(T * D * 4), s.g = malloc(T * Fs * 4), s.u = malloc(T * Fs * 4), s.y = malloc(T * D * 4), s.sg = malloc(T * 4);
    int *cnt = calloc((size_t)L, sizeof(int)), *perm = malloc(sizeof(int) * (size_t)E);
    /* random passes already made, by count vector: (n_done, L) counts and (n_done, seeds) results */
    int n_done = 0;
    int *done_cnt = malloc(sizeof(int) * (size_t)L * (size_t)(o->n_sets + 1));
    nl_ppl_result *done_res = calloc((size_t)(o->n_sets + 1) * (size_t)(o->seeds > 0 ? o->seeds : 1), sizeof *done_res);
    if (!s.rm || !s.rm_sh || !s.xin || !s.g || !s.u || !s.y || !s.sg || !cnt || !perm || !done_cnt || !done_res)
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_hooks *h = nl_forward_hooks(f);
    nl_hook_id ids[3] = {0, 0, 0};
    if (st == NL_OK && (nl_hooks_add_id(h, NL_HOOK_ROUTER_LOGITS, -1, NL_HOOK_INTERVENE, rm_logits, &s, &ids[0]) != NL_OK ||
                        nl_hooks_add_id(h, NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, rm_in, &s, &ids[1]) != NL_OK ||
                        nl_hooks_add_id(h, NL_HOOK_FFN_OUT, -1, NL_HOOK_INTERVENE, rm_out, &s, &ids[2]) != NL_OK))
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    nl_ppl_result base = {0}, p = {0};
    if (progress) progress->total = (int64_t)(1 + o->n_sets * (1 + (o->seeds > 0 ? o->seeds : 0))) * ds->n_tokens;
    if (st == NL_OK) st = nl_ppl_run(ctx, f, ds, o->stride, progress, &base);
    if (st == NL_OK) st = insert_rows(ctx, db, run_id, "", "none", -1, 0, &base, &base, ds);
    for (int i = 0; st == NL_OK && i < o->n_sets; i++) {
        const nl_expert_set *set = &o->sets[i];
        memset(s.rm, 0, (size_t)L * E), memset(s.rm_sh, 0, (size_t)L), memset(cnt, 0, sizeof(int) * (size_t)L);
        int routed = 0, shared = 0;
        for (int j = 0; j < set->n; j++) {
            const int l = set->layer[j], e = set->expert[j];
            if (e < 0) shared += !s.rm_sh[l], s.rm_sh[l] = 1;
            else if (!s.rm[(size_t)l * E + e]) s.rm[(size_t)l * E + e] = 1, cnt[l]++, routed++;
        }
        for (int l = 0; l < L; l++)
            if (cnt[l] >= E) st = nl_errorf(ctx, NL_EINVAL, "expert set '%s' removes every expert of layer %d", set->name, l);
        if (st == NL_OK) st = nl_ppl_run(ctx, f, ds, o->stride, progress, &p);
        if (st == NL_OK)
            st = insert_rows(ctx, db, run_id, set->name, routed ? "expert" : "shared", -1, routed + shared, &p, &base, ds);
        nl_ppl_result_release(&p);
        if (st != NL_OK || !routed || o->seeds <= 0) continue;
        /* random control: same counts per layer, shared with earlier sets of the same counts */
        int g = -1;
        for (int q = 0; q < n_done && g < 0; q++)
            if (!memcmp(done_cnt + (size_t)q * L, cnt, sizeof(int) * (size_t)L)) g = q;
        if (g < 0) {
            g = n_done++;
            memcpy(done_cnt + (size_t)g * L, cnt, sizeof(int) * (size_t)L);
            for (int sd = 0; st == NL_OK && sd < o->seeds; sd++) {
                memset(s.rm, 0, (size_t)L * E), memset(s.rm_sh, 0, (size_t)L);
                for (int l = 0; l < L; l++) {
                    if (!cnt[l]) continue;
                    nl_rng r;
                    nl_rng_derive(&r, o->seed, (uint64_t)sd, (uint64_t)l);
                    for (int e = 0; e < E; e++) perm[e] = e;
                    for (int j = 0; j < cnt[l]; j++) { /* Fisher–Yates prefix */
                        const int q = j + (int)nl_rng_below(&r, (uint64_t)(E - j));
                        const int tmp = perm[j]; perm[j] = perm[q]; perm[q] = tmp;
                        s.rm[(size_t)l * E + perm[j]] = 1;
                    }
                }
                st = nl_ppl_run(ctx, f, ds, o->stride, progress, &done_res[(size_t)g * o->seeds + sd]);
            }
        }
        for (int sd = 0; st == NL_OK && sd < o->seeds; sd++)
            st = insert_rows(ctx, db, run_id, set->name, "random", sd, routed, &done_res[(size_t)g * o->seeds + sd], &base, ds);
    }
    for (int k = 0; k < 3; k++) nl_hooks_remove(h, ids[k]);
    nl_ppl_result_release(&base);
    for (int q = 0; q < n_done * (o->seeds > 0 ? o->seeds : 0); q++) nl_ppl_result_release(&done_res[q]);
    free(done_res), free(done_cnt), free(cnt), free(perm);
    free(s.rm), free(s.rm_sh), free(s.xin), free(s.g), free(s.u), free(s.y), free(s.sg);
    return st;
}
