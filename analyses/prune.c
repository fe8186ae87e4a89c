/* prune.c — pruning ability neurons (definitions, random control and tables in prune.h): the
 * fixed-set intervener on ffn_act, the seeded same-size random sets, and the loop over passes
 * (base, each pruned ability, the random passes of each distinct count vector) that scores
 * the dataset with nl_ppl_run and commits each pass's rows at once.
 * Rules: library code (statuses, no printing); uses only the public fields of nl_ability_sets,
 * so hand-built sets work as well as loaded ones.
 * Checked by tests/test_prune.c and tests/prune_cli.sh.
 */
#include "analyses/prune.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/rng.h"

/* ---- the intervener ------------------------------------------------------------------ */

nl_status nl_prune_mask_init(nl_ctx *ctx, nl_prune_mask *m, int L, int F) {
    NL_ASSERT(L > 0 && F > 0);
    memset(m, 0, sizeof *m);
    m->n_layers = L, m->d_ff = F;
    m->count = calloc((size_t)L, sizeof *m->count);
    m->index = malloc((size_t)L * F * sizeof *m->index);
    if (!m->count || !m->index) {
        nl_prune_mask_release(m);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    return NL_OK;
}

void nl_prune_mask_release(nl_prune_mask *m) {
    if (!m) return;
    free(m->count);
    free(m->index);
    memset(m, 0, sizeof *m);
}

void nl_prune_mask_clear(nl_prune_mask *m) { memset(m->count, 0, (size_t)m->n_layers * sizeof *m->count); }

int64_t nl_prune_mask_total(const nl_prune_mask *m) {
    int64_t n = 0;
    for (int l = 0; l < m->n_layers; l++) n += m->count[l];
    return n;
}

void nl_prune_mask_set_layer(nl_prune_mask *m, int l, const uint8_t *flags) {
    NL_ASSERT(l >= 0 && l < m->n_layers);
    int *idx = m->index + (size_t)l * m->d_ff, k = 0;
    for (int i = 0; i < m->d_ff; i++)
        if (flags[i]) idx[k++] = i;
    m->count[l] = k;
}

nl_status nl_prune_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    const nl_prune_mask *m = user;
    NL_ASSERT(info->width == m->d_ff && info->layer >= 0 && info->layer < m->n_layers);
    const int F = m->d_ff, k = m->count[info->layer];
    const int *idx = m->index + (size_t)info->layer * F;
    for (int t = 0; t < info->T; t++) {
        float *row = x + (size_t)t * F;
        for (int j = 0; j < k; j++) row[idx[j]] = 0.0f;
    }
    return NL_OK;
}

void nl_prune_mask_ability(nl_prune_mask *m, const nl_ability_sets *sets, int a) {
    NL_ASSERT(a >= 0 && a < sets->n_abilities && sets->d_ff == m->d_ff);
    const int Lr = sets->n_layers, F = sets->d_ff;
    nl_prune_mask_clear(m);
    for (int j = 0; j < Lr; j++) {
        NL_ASSERT(sets->layers[j] >= 0 && sets->layers[j] < m->n_layers);
        nl_prune_mask_set_layer(m, sets->layers[j], sets->member + ((size_t)a * Lr + j) * F);
    }
}

/* splitmix64's step: a bijective 64-bit mix of z + the golden-ratio increment. */
static inline uint64_t mix64(uint64_t z) { return nl_mix64(z + 0x9e3779b97f4a7c15ULL); }

static inline uint64_t priority(uint64_t seed, int layer, int i) {
    return mix64(seed ^ mix64(((uint64_t)(uint32_t)layer << 32) + (uint64_t)(uint32_t)i));
}

typedef struct {
    uint64_t seed;
    int layer;
} prio_key;

/* (priority, index) ascending. */
static int cmp_priority(const void *a, const void *b, void *user) {
    const prio_key *k = user;
    const int i = *(const int *)a, j = *(const int *)b;
    const uint64_t p = priority(k->seed, k->layer, i), q = priority(k->seed, k->layer, j);
    if (p != q) return p < q ? -1 : 1;
    return (i > j) - (i < j);
}

static int cmp_int(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The chosen indices, ascending, into idx (F); returns how many. */
static int random_indices(uint64_t seed, int layer, int F, const uint8_t *excluded, int k, int *idx) {
    int n = 0;
    for (int i = 0; i < F; i++)
        if (!excluded || !excluded[i]) idx[n++] = i;
    if (k > n) k = n;
    if (k <= 0) return 0;
    prio_key key = {seed, layer};
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_priority, &key);
    qsort(idx, (size_t)k, sizeof *idx, cmp_int);
    return k;
}

int nl_prune_random_layer(uint64_t seed, int layer, int F, const uint8_t *excluded, int k, uint8_t *out) {
    memset(out, 0, (size_t)F);
    int *idx = malloc((size_t)F * sizeof *idx);
    if (!idx) return -1;
    const int n = random_indices(seed, layer, F, excluded, k, idx);
    for (int j = 0; j < n; j++) out[idx[j]] = 1;
    free(idx);
    return n;
}

void nl_prune_mask_random(nl_prune_mask *m, const nl_ability_sets *sets, const int *counts, uint64_t seed) {
    NL_ASSERT(sets->d_ff == m->d_ff);
    const int F = sets->d_ff;
    nl_prune_mask_clear(m);
    for (int j = 0; j < sets->n_layers; j++) {
        const int l = sets->layers[j];
        NL_ASSERT(l >= 0 && l < m->n_layers);
        m->count[l] = random_indices(seed, l, F, sets->excluded ? sets->excluded + (size_t)j * F : NULL, counts[j],
                                     m->index + (size_t)l * F);
    }
}

/* ---- the plan --------------------------------------------------------------------------- */

void nl_prune_opts_init(nl_prune_opts *o) {
    memset(o, 0, sizeof *o);
    o->seeds = 3;
}

void nl_prune_result_release(nl_prune_result *r) {
    if (!r) return;
    free(r->ability);
    free(r->diag);
    free(r->col_label);
    free(r->group);
    free(r->neurons);
    free(r->base);
    free(r->pruned_done);
    free(r->pruned);
    free(r->random_done);
    free(r->random);
    memset(r, 0, sizeof *r);
}

int nl_prune_passes(const nl_prune_result *r) { return 1 + r->n_rows + r->n_groups * r->n_seeds; }

const char *nl_prune_col_name(const nl_prune_result *r, const nl_dataset *ds, int c) {
    return r->col_label[c] < 0 ? "" : ds->labels[r->col_label[c]];
}

static int find_ability(const nl_ability_sets *s, const char *name) {
    for (int a = 0; a < s->n_abilities; a++)
        if (!strcmp(s->abilities[a], name)) return a;
    return -1;
}

/* Label indices by the byte order of their names (user: the dataset). */
static int cmp_label(const void *a, const void *b, void *user) {
    const nl_dataset *ds = user;
    return strcmp(ds->labels[*(const int *)a], ds->labels[*(const int *)b]);
}

static nl_status unknown_ability(nl_ctx *ctx, const nl_ability_sets *sets, const char *name) {
    char list[512];
    size_t o = 0;
    list[0] = 0;
    for (int a = 0; a < sets->n_abilities && o < sizeof list; a++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", a ? ", " : "", sets->abilities[a]);
    return nl_errorf(ctx, NL_EINVAL, "scores run %lld has no ability '%s' (its abilities: %s)", (long long)sets->run_id,
                     name, list);
}

nl_status nl_prune_plan(nl_ctx *ctx, const nl_ability_sets *sets, const nl_dataset *ds, const nl_prune_opts *o,
                        nl_prune_result *r) {
    memset(r, 0, sizeof *r);
    r->run_id = -1;
    if (o->seeds < 1) return nl_errorf(ctx, NL_EINVAL, "the random control needs at least one seed");
    if (sets->n_abilities <= 0) return nl_errorf(ctx, NL_EINVAL, "scores run %lld has no abilities", (long long)sets->run_id);
    const int R = o->abilities ? o->n_abilities : sets->n_abilities, Lr = sets->n_layers, S = o->seeds;
    if (R <= 0) return nl_errorf(ctx, NL_EINVAL, "no ability to prune");
    int C = 1;
    for (int l = 0; l < ds->n_labels; l++) C += ds->labels[l][0] != 0;
    r->n_rows = R, r->n_cols = C, r->n_seeds = S;
    r->ability = malloc((size_t)R * sizeof *r->ability);
    r->diag = malloc((size_t)R * sizeof *r->diag);
    r->group = malloc((size_t)R * sizeof *r->group);
    r->neurons = calloc((size_t)R, sizeof *r->neurons);
    r->col_label = malloc((size_t)C * sizeof *r->col_label);
    r->base = calloc((size_t)C, sizeof *r->base);
    r->pruned_done = calloc((size_t)R, 1);
    r->pruned = calloc((size_t)R * C, sizeof *r->pruned);
    if (!r->ability || !r->diag || !r->group || !r->neurons || !r->col_label || !r->base || !r->pruned_done || !r->pruned)
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    /* columns: non-empty labels in byte order, then all documents */
    int c = 0;
    for (int l = 0; l < ds->n_labels; l++)
        if (ds->labels[l][0]) r->col_label[c++] = l;
    qsort_r(r->col_label, (size_t)c, sizeof *r->col_label, cmp_label, (void *)ds);
    r->col_label[c] = -1;
    /* rows */
    for (int i = 0; i < R; i++) {
        const char *name = o->abilities ? o->abilities[i] : sets->abilities[i];
        const int a = find_ability(sets, name);
        if (a < 0) return unknown_ability(ctx, sets, name);
        for (int j = 0; j < i; j++)
            if (r->ability[j] == a) return nl_errorf(ctx, NL_EINVAL, "ability '%s' is asked for twice", name);
        r->ability[i] = a;
        const int li = nl_dataset_label_index(ds, name);
        r->diag[i] = -1;
        if (sets->run_id <= 0 && (li < 0 || !name[0])) { /* user sets: a set name need not be a label */
            for (int j = 0; j < Lr; j++) r->neurons[i] += sets->count[(size_t)a * Lr + j];
            continue;
        }
        if (li < 0 || !name[0])
            return nl_errorf(ctx, NL_EINVAL, "'%s' has no documents labelled '%s' (an ability of scores run %lld)", ds->path,
                             name, (long long)sets->run_id);
        r->diag[i] = -1;
        for (int k = 0; k < C - 1; k++)
            if (r->col_label[k] == li) r->diag[i] = k;
        NL_ASSERT(r->diag[i] >= 0);
        for (int j = 0; j < Lr; j++) r->neurons[i] += sets->count[(size_t)a * Lr + j];
    }
    /* groups of identical count vectors, numbered in row order */
    for (int i = 0; i < R; i++) {
        r->group[i] = -1;
        for (int j = 0; j < i && r->group[i] < 0; j++)
            if (!memcmp(sets->count + (size_t)r->ability[i] * Lr, sets->count + (size_t)r->ability[j] * Lr,
                        (size_t)Lr * sizeof *sets->count))
                r->group[i] = r->group[j];
        if (r->group[i] < 0) r->group[i] = r->n_groups++;
    }
    const int G = r->n_groups;
    r->random_done = calloc((size_t)G * S, 1);
    r->random = calloc((size_t)G * S * C, sizeof *r->random);
    if (!r->random_done || !r->random) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

/* ---- metrics ---------------------------------------------------------------------------- */

double nl_prune_rel(nl_nll_sum x, nl_nll_sum base) {
    if (x.n <= 0 || base.n <= 0) return NAN;
    const double b = nl_nll_ppl(base);
    return (nl_nll_ppl(x) - b) / b;
}

nl_prune_stat nl_prune_control(const nl_prune_result *r, int row, int col) {
    nl_prune_stat st = {0, NAN, NAN, NAN, NAN};
    const int g = r->group[row], S = r->n_seeds, C = r->n_cols;
    double sum = 0, mn = INFINITY, mx = -INFINITY;
    int n = 0, bad = 0;
    for (int s = 0; s < S; s++) {
        if (!r->random_done[g * S + s]) continue;
        const double v = nl_prune_rel(r->random[((size_t)g * S + s) * C + col], r->base[col]);
        n++;
        if (isnan(v)) bad = 1;
        sum += v;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    st.n = n;
    if (n == 0 || bad) return st;
    st.mean = sum / n, st.min = mn, st.max = mx;
    double ss = 0;
    for (int s = 0; s < S; s++) {
        if (!r->random_done[g * S + s]) continue;
        const double d = nl_prune_rel(r->random[((size_t)g * S + s) * C + col], r->base[col]) - st.mean;
        ss += d * d;
    }
    st.sd = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
    return st;
}

/* ---- tables ----------------------------------------------------------------------------- */

nl_status nl_prune_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS prune_effect("
                           " run_id INTEGER NOT NULL REFERENCES runs(id), pruned TEXT NOT NULL,"
                           " control TEXT NOT NULL CHECK (control IN ('none','ability','random')), seed INTEGER NOT NULL,"
                           " label TEXT NOT NULL, neurons INTEGER NOT NULL, tokens INTEGER NOT NULL,"
                           " nll REAL, ppl REAL, rel_change REAL,"
                           " PRIMARY KEY (run_id, pruned, control, seed, label)) WITHOUT ROWID;"
                           "CREATE TABLE IF NOT EXISTS prune_control("
                           " run_id INTEGER NOT NULL REFERENCES runs(id), pruned TEXT NOT NULL, label TEXT NOT NULL,"
                           " seeds INTEGER NOT NULL, mean REAL, sd REAL, min REAL, max REAL,"
                           " PRIMARY KEY (run_id, pruned, label)) WITHOUT ROWID;");
}

static void put_str(char *buf, size_t n, size_t *o, const char *str) {
#define PUTS(...) (*o += (size_t)snprintf(buf + (*o < n ? *o : n), *o < n ? n - *o : 0, __VA_ARGS__))
    PUTS("\"");
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\') PUTS("\\%c", *p);
        else if (*p < 0x20) PUTS("\\u%04x", *p);
        else PUTS("%c", *p);
    }
    PUTS("\"");
#undef PUTS
}

/* The run's parameters as a JSON object into buf (n bytes). */
static void params_json(const nl_ability_sets *sets, const nl_prune_opts *opt, const nl_prune_result *r, int eval_docs,
                        int ctx_len, int stride, int batch, char *buf, size_t n) {
    size_t o = 0;
#define PUT(...) (o += (size_t)snprintf(buf + (o < n ? o : n), o < n ? n - o : 0, __VA_ARGS__))
    if (sets->run_id > 0) PUT("{\"scores_run\":%lld", (long long)sets->run_id);
    else PUT("{\"scores_run\":null");
    PUT(",\"method\":\"%s\",\"symmetric\":%s,\"top\":%.15g,\"scope\":\"%s\",\"seeds\":%d,\"abilities\":[",
        sets->method[0] ? sets->method : "ap", sets->symmetric ? "true" : "false", sets->top,
        sets->global ? "global" : "layer", r->n_seeds);
    for (int i = 0; i < r->n_rows; i++) {
        if (i) PUT(",");
        put_str(buf, n, &o, sets->abilities[r->ability[i]]);
    }
    PUT("],\"ctx\":%d,\"stride\":%d,\"batch\":%d,\"eval\":\"%s\",\"eval_docs\":%d", ctx_len, stride, batch,
        opt->eval ? opt->eval : "all", eval_docs);
    if (opt->eval_file) {
        PUT(",\"eval_file\":");
        put_str(buf, n, &o, opt->eval_file);
    }
    if (opt->neurons_json) PUT(",\"neurons\":%s", opt->neurons_json);
    if (opt->moe_json) PUT(",\"moe\":%s", opt->moe_json);
    PUT("}");
#undef PUT
}

/* Binds the per-row values 2..6 (pruned, control, seed, label, neurons) and the sum 7..10. */
static int insert_effect(sqlite3_stmt *s, const char *pruned, const char *control, int seed, const char *label,
                         int64_t neurons, nl_nll_sum sum, nl_nll_sum base) {
    int rc = sqlite3_bind_text(s, 2, pruned, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 3, control, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 4, seed);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 5, label, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 6, neurons);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 7, sum.n);
    if (rc == SQLITE_OK) rc = sum.n > 0 ? sqlite3_bind_double(s, 8, nl_nll_mean(sum)) : sqlite3_bind_null(s, 8);
    if (rc == SQLITE_OK) rc = sum.n > 0 ? sqlite3_bind_double(s, 9, nl_nll_ppl(sum)) : sqlite3_bind_null(s, 9);
    const double rel = nl_prune_rel(sum, base);
    if (rc == SQLITE_OK) rc = isnan(rel) ? sqlite3_bind_null(s, 10) : sqlite3_bind_double(s, 10, rel);
    if (rc == SQLITE_OK) rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_reset(s);
    return rc;
}

typedef enum { PASS_BASE, PASS_ABILITY, PASS_RANDOM } pass_kind;

/* One transaction with the rows of one pass: base (row, g, s unused), ability pass of row, or
 * random pass (g, s) for every row of group g — plus, for a random pass that completes its
 * group, the group's prune_control rows. */
static nl_status write_pass(nl_ctx *ctx, nl_results *db, int64_t run_id, const nl_ability_sets *sets,
                            const nl_dataset *ds, const nl_prune_result *r, pass_kind kind, int row, int g, int s) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *e = NULL, *c = NULL;
    const int C = r->n_cols, S = r->n_seeds;
    int rc = sqlite3_prepare_v2(h, "INSERT INTO prune_effect(run_id, pruned, control, seed, label, neurons, tokens, nll, ppl,"
                                   " rel_change) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", -1, &e, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(e, 1, run_id);
    if (kind == PASS_BASE) {
        for (int k = 0; rc == SQLITE_OK && k < C; k++)
            rc = insert_effect(e, "", "none", -1, nl_prune_col_name(r, ds, k), 0, r->base[k], r->base[k]);
    } else if (kind == PASS_ABILITY) {
        for (int k = 0; rc == SQLITE_OK && k < C; k++)
            rc = insert_effect(e, sets->abilities[r->ability[row]], "ability", -1, nl_prune_col_name(r, ds, k),
                               r->neurons[row], r->pruned[(size_t)row * C + k], r->base[k]);
    } else {
        int complete = 1; /* the caller marks seed s done before the call */
        for (int t = 0; t < S; t++) complete &= r->random_done[g * S + t];
        for (int i = 0; rc == SQLITE_OK && i < r->n_rows; i++) {
            if (r->group[i] != g) continue;
            for (int k = 0; rc == SQLITE_OK && k < C; k++)
                rc = insert_effect(e, sets->abilities[r->ability[i]], "random", s, nl_prune_col_name(r, ds, k), r->neurons[i],
                                   r->random[((size_t)g * S + s) * C + k], r->base[k]);
        }
        if (rc == SQLITE_OK && complete) {
            rc = sqlite3_prepare_v2(h, "INSERT INTO prune_control(run_id, pruned, label, seeds, mean, sd, min, max)"
                                       " VALUES(?, ?, ?, ?, ?, ?, ?, ?)", -1, &c, NULL);
            for (int i = 0; rc == SQLITE_OK && i < r->n_rows; i++) {
                if (r->group[i] != g) continue;
                for (int k = 0; rc == SQLITE_OK && k < C; k++) {
                    const nl_prune_stat x = nl_prune_control(r, i, k);
                    const double v[4] = {x.mean, x.sd, x.min, x.max};
                    rc = sqlite3_bind_int64(c, 1, run_id);
                    if (rc == SQLITE_OK) rc = sqlite3_bind_text(c, 2, sets->abilities[r->ability[i]], -1, SQLITE_TRANSIENT);
                    if (rc == SQLITE_OK) rc = sqlite3_bind_text(c, 3, nl_prune_col_name(r, ds, k), -1, SQLITE_TRANSIENT);
                    if (rc == SQLITE_OK) rc = sqlite3_bind_int(c, 4, x.n);
                    for (int q = 0; rc == SQLITE_OK && q < 4; q++)
                        rc = isnan(v[q]) ? sqlite3_bind_null(c, 5 + q) : sqlite3_bind_double(c, 5 + q, v[q]);
                    if (rc == SQLITE_OK) rc = sqlite3_step(c) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
                    sqlite3_reset(c);
                }
            }
        }
    }
    if (rc != SQLITE_OK) st = nl_results_error(ctx, db, "cannot write the prune rows");
    sqlite3_finalize(e);
    sqlite3_finalize(c);
    if (st == NL_OK) return nl_results_commit(ctx, db);
    nl_results_rollback(db);
    return st;
}

/* Scores ds with the current mask into sums (C). */
static nl_status score(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                       const nl_prune_result *r, nl_nll_sum *sums) {
    nl_ppl_result p;
    nl_status st = nl_ppl_run(ctx, f, ds, stride, progress, &p);
    if (st == NL_OK)
        for (int k = 0; k < r->n_cols; k++) sums[k] = r->col_label[k] < 0 ? p.total : p.by_label[r->col_label[k]];
    nl_ppl_result_release(&p); /* releasable on every status */
    return st;
}

/* The model of f must hold the sets' layers with F neurons each. */
static nl_status check_model(nl_ctx *ctx, nl_forward *f, const nl_ability_sets *sets) {
    const nl_config *cfg = nl_model_config(nl_forward_model(f));
    if (sets->d_ff != cfg->d_ff)
        return nl_errorf(ctx, NL_EINVAL, "scores run %lld has %d neurons per layer, the model %d", (long long)sets->run_id,
                         sets->d_ff, cfg->d_ff);
    for (int j = 0; j < sets->n_layers; j++)
        if (sets->layers[j] < 0 || sets->layers[j] >= cfg->n_layers)
            return nl_errorf(ctx, NL_EINVAL, "scores run %lld has layer %d, the model %d layers", (long long)sets->run_id,
                             sets->layers[j], cfg->n_layers);
    return NL_OK;
}

/* The passes of plan r (model checked), rows under run_id when db. */
static nl_status run_passes(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, const nl_ability_sets *sets,
                            const nl_prune_opts *o, nl_results *db, int64_t run_id, nl_progress *progress, nl_prune_result *r) {
    const nl_config *cfg = nl_model_config(nl_forward_model(f));
    const int L = cfg->n_layers, F = cfg->d_ff, Lr = sets->n_layers, C = r->n_cols, S = r->n_seeds;
    nl_prune_mask mask = {0};
    nl_status st = nl_prune_mask_init(ctx, &mask, L, F);
    if (st != NL_OK) return st;
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_hook_id hook_id = 0;
    if (nl_hooks_add_id(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_prune_hook, &mask, &hook_id) != NL_OK) {
        nl_prune_mask_release(&mask);
        return nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    }
    nl_forward_hooks_concurrent(f, 1); /* nl_prune_hook only reads the mask: documents may run in parallel */
    /* base: the empty mask */
    st = score(ctx, f, ds, o->stride, progress, r, r->base);
    if (st == NL_OK && db) st = write_pass(ctx, db, run_id, sets, ds, r, PASS_BASE, 0, 0, 0);
    if (st == NL_OK) r->base_done = 1;
    int *seen = calloc((size_t)r->n_groups, sizeof *seen);
    if (st == NL_OK && !seen) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int i = 0; st == NL_OK && i < r->n_rows; i++) {
        const int a = r->ability[i], g = r->group[i];
        nl_prune_mask_ability(&mask, sets, a);
        st = score(ctx, f, ds, o->stride, progress, r, r->pruned + (size_t)i * C);
        if (st == NL_OK && db) st = write_pass(ctx, db, run_id, sets, ds, r, PASS_ABILITY, i, 0, 0);
        if (st != NL_OK) break;
        r->pruned_done[i] = 1;
        if (seen[g]) continue;
        seen[g] = 1;
        for (int s = 0; st == NL_OK && s < S; s++) {
            nl_prune_mask_random(&mask, sets, sets->count + (size_t)a * Lr, (uint64_t)s);
            st = score(ctx, f, ds, o->stride, progress, r, r->random + ((size_t)g * S + s) * C);
            if (st != NL_OK) break;
            r->random_done[g * S + s] = 1; /* counted in the control statistics write_pass writes */
            if (db && (st = write_pass(ctx, db, run_id, sets, ds, r, PASS_RANDOM, i, g, s)) != NL_OK)
                r->random_done[g * S + s] = 0;
        }
    }
    free(seen);
    nl_hooks_remove(hooks, hook_id); /* remove our intervener */
    nl_forward_hooks_concurrent(f, 0);
    nl_prune_mask_release(&mask);
    return st;
}

static nl_status prune_run(nl_ctx *ctx, const nl_prune_opts *opts, nl_forward *f, const nl_dataset *ds,
                           const nl_ability_sets *sets, nl_results *db, nl_progress *progress, nl_prune_result *r);

nl_status nl_prune_heldout(nl_ctx *ctx, const nl_ability_sets *sets, const nl_dataset *ds, uint8_t *eval) {
    if (sets->n_docs != ds->n_docs)
        return nl_errorf(ctx, NL_EINVAL,
                         "'%s' is not the dataset of scores run %lld: it has %d documents, the run's activation file '%s' %d",
                         ds->path, (long long)sets->run_id, ds->n_docs, sets->source, sets->n_docs);
    for (int d = 0; d < ds->n_docs; d++) {
        if (strcmp(ds->docs[d].label, sets->doc_label[d]))
            return nl_errorf(ctx, NL_EINVAL,
                             "'%s' is not the dataset of scores run %lld: line %d is labelled '%s', document %d of '%s' '%s'",
                             ds->path, (long long)sets->run_id, ds->docs[d].line, ds->docs[d].label, d, sets->source,
                             sets->doc_label[d]);
        eval[d] = sets->doc_half[d] == 1;
    }
    return NL_OK;
}

nl_status nl_prune_run(nl_ctx *ctx, const nl_prune_opts *opts, nl_forward *f, const nl_dataset *ds, const nl_ability_sets *sets,
                       nl_results *db, nl_progress *progress, nl_prune_result *r) {
    NL_ASSERT(f && ds && sets && r);
    nl_prune_opts def;
    if (!opts) nl_prune_opts_init(&def), opts = &def;
    /* the evaluated documents: a view of ds (the documents are borrowed, not copied) */
    nl_dataset view = *ds;
    view.docs = NULL;
    if (opts->eval_docs) {
        view.docs = malloc((size_t)(ds->n_docs ? ds->n_docs : 1) * sizeof *view.docs);
        if (!view.docs) {
            memset(r, 0, sizeof *r), r->run_id = -1;
            return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        }
        view.n_docs = 0, view.n_tokens = 0;
        for (int d = 0; d < ds->n_docs; d++)
            if (opts->eval_docs[d]) view.docs[view.n_docs++] = ds->docs[d], view.n_tokens += ds->docs[d].n_tokens;
        ds = &view;
    }
    nl_status st = prune_run(ctx, opts, f, ds, sets, db, progress, r);
    free(view.docs);
    return st;
}

static nl_status prune_run(nl_ctx *ctx, const nl_prune_opts *opts, nl_forward *f, const nl_dataset *ds,
                           const nl_ability_sets *sets, nl_results *db, nl_progress *progress, nl_prune_result *r) {
    nl_status st = nl_prune_plan(ctx, sets, ds, opts, r); /* zeroes r first */
    r->run_id = -1;
    if (st == NL_OK && ds->n_docs == 0) st = nl_errorf(ctx, NL_EINVAL, "no documents to evaluate in '%s'", ds->path);
    if (st == NL_OK) st = check_model(ctx, f, sets);
    if (st != NL_OK) return st;
    nl_ctx_apply_threads(ctx);
    nl_model *m = nl_forward_model(f);
    if (db) {
        const int ctx_len = nl_forward_max_P(f);
        char params[16384];
        params_json(sets, opts, r, ds->n_docs, ctx_len, opts->stride > 0 ? opts->stride : ctx_len / 2,
                    opts->batch > 0 ? opts->batch : nl_forward_max_T(f), params, sizeof params);
        nl_run_info info = {.kind = "prune",
                            .model = opts->model ? opts->model : nl_model_path(m),
                            .dataset = opts->dataset ? opts->dataset : ds->path,
                            .source = sets->source,
                            .params = params,
                            .compute = nl_compute_name(nl_forward_compute(f))};
        if ((st = nl_prune_create_tables(ctx, db)) != NL_OK) return st;
        if ((st = nl_results_begin_run(ctx, db, &info, &r->run_id)) != NL_OK) return st;
    }
    if (progress) progress->total = (int64_t)nl_prune_passes(r) * ds->n_tokens;
    st = run_passes(ctx, f, ds, sets, opts, db, r->run_id, progress, r);
    return db ? nl_results_finish_run(ctx, db, r->run_id, st, NULL) : st;
}

/* ---- user sets from a neurons file ------------------------------------------------------ */

typedef struct {
    char *set; /* owned */
    int layer, neuron, line;
} upair;

typedef struct {
    nl_ctx *ctx;
    const char *path, *p, *end;
    int line;
    upair *v;
    int n, cap;
    int L, F;
} ureader;

static nl_status uerr(ureader *u, const char *fmt, const char *what) {
    return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: %s%s", u->path, u->line, fmt, what ? what : "");
}

static nl_status upush(ureader *u, const char *set, size_t set_len, long layer, long neuron, int line) {
    if (layer < 0 || layer >= u->L)
        return nl_errorf(u->ctx, NL_EINVAL, "'%s' line %d: layer %ld is outside the model's 0..%d", u->path, line, layer, u->L - 1);
    if (neuron < 0 || neuron >= u->F)
        return nl_errorf(u->ctx, NL_EINVAL, "'%s' line %d: neuron %ld is outside 0..%d", u->path, line, neuron, u->F - 1);
    if (set_len == 0) return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: the set name is empty", u->path, line);
    if (set_len > NL_LABEL_MAX)
        return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: the set name is longer than %d bytes", u->path, line, NL_LABEL_MAX);
    if (u->n == u->cap) {
        int cap = u->cap ? 2 * u->cap : 64;
        upair *v = realloc(u->v, (size_t)cap * sizeof *v);
        if (!v) return nl_errorf(u->ctx, NL_ENOMEM, "out of memory");
        u->v = v, u->cap = cap;
    }
    char *name = malloc(set_len + 1);
    if (!name) return nl_errorf(u->ctx, NL_ENOMEM, "out of memory");
    memcpy(name, set, set_len), name[set_len] = 0;
    u->v[u->n++] = (upair){name, (int)layer, (int)neuron, line};
    return NL_OK;
}

/* A whole-field decimal integer. */
static int parse_long(const char *s, size_t n, long *out) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    if (!n || n > 18) return 0;
    char buf[24];
    memcpy(buf, s, n), buf[n] = 0;
    char *e;
    long v = strtol(buf, &e, 10);
    if (*e) return 0;
    *out = v;
    return 1;
}

static nl_status read_csv(ureader *u) {
    int with_set = -1;
    for (const char *p = u->p; p < u->end;) {
        const char *eol = memchr(p, '\n', (size_t)(u->end - p));
        if (!eol) eol = u->end;
        u->line++;
        size_t n = (size_t)(eol - p);
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n) {
            const char *f[4];
            size_t fl[4];
            int k = 0;
            for (const char *q = p; k < 4;) {
                const char *c = memchr(q, ',', (size_t)(p + n - q));
                f[k] = q, fl[k] = (size_t)((c ? c : p + n) - q), k++;
                if (!c) break;
                q = c + 1;
            }
            for (int j = 0; j < k; j++) { /* trim */
                while (fl[j] && (*f[j] == ' ' || *f[j] == '\t')) f[j]++, fl[j]--;
                while (fl[j] && (f[j][fl[j] - 1] == ' ' || f[j][fl[j] - 1] == '\t')) fl[j]--;
            }
            if (with_set < 0) {
                if (!((k == 2 || k == 3) && fl[0] == 5 && !memcmp(f[0], "layer", 5) && fl[1] == 6 && !memcmp(f[1], "neuron", 6) &&
                      (k == 2 || (fl[2] == 3 && !memcmp(f[2], "set", 3)))))
                    return uerr(u, "the header must be layer,neuron or layer,neuron,set", NULL);
                with_set = k == 3;
            } else {
                long layer, neuron;
                if (k != 2 + with_set)
                    return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: expected %d comma-separated fields, found %d", u->path,
                                     u->line, 2 + with_set, k);
                if (!parse_long(f[0], fl[0], &layer)) return uerr(u, "the layer is not an integer", NULL);
                if (!parse_long(f[1], fl[1], &neuron)) return uerr(u, "the neuron is not an integer", NULL);
                nl_status st = upush(u, with_set ? f[2] : "neurons", with_set ? fl[2] : 7, layer, neuron, u->line);
                if (st != NL_OK) return st;
            }
        }
        p = eol < u->end ? eol + 1 : eol;
    }
    if (with_set < 0) {
        u->line = 1;
        return uerr(u, "the header must be layer,neuron or layer,neuron,set", " (the file is empty)");
    }
    return NL_OK;
}

static void jws(ureader *u) {
    while (u->p < u->end && (*u->p == ' ' || *u->p == '\t' || *u->p == '\r' || *u->p == '\n')) {
        if (*u->p == '\n') u->line++;
        u->p++;
    }
}

static int jeat(ureader *u, char c) {
    jws(u);
    if (u->p < u->end && *u->p == c) return u->p++, 1;
    return 0;
}

/* A JSON string (escapes \" \\ \/ \n \t \r \b \f; \u for ASCII) into buf (cap bytes). */
static nl_status jstring(ureader *u, char *buf, size_t cap, size_t *len) {
    if (!jeat(u, '"')) return uerr(u, "expected a string", NULL);
    size_t n = 0;
    while (u->p < u->end && *u->p != '"') {
        char c = *u->p++;
        if ((unsigned char)c < 0x20) return uerr(u, "a control character in a string", NULL);
        if (c == '\\') {
            if (u->p >= u->end) break;
            char e = *u->p++;
            if (e == 'n') c = '\n';
            else if (e == 't') c = '\t';
            else if (e == 'r') c = '\r';
            else if (e == 'b') c = '\b';
            else if (e == 'f') c = '\f';
            else if (e == '"' || e == '\\' || e == '/') c = e;
            else if (e == 'u' && u->end - u->p >= 4) {
                char h[5] = {u->p[0], u->p[1], u->p[2], u->p[3], 0};
                char *x;
                long v = strtol(h, &x, 16);
                if (*x || v < 1 || v > 0x7f) return uerr(u, "only \\u escapes of ASCII characters are read", NULL);
                c = (char)v, u->p += 4;
            } else return uerr(u, "a bad escape in a string", NULL);
        }
        if (n + 1 >= cap) return uerr(u, "a string is too long", NULL);
        buf[n++] = c;
    }
    if (!jeat(u, '"')) return uerr(u, "an unterminated string", NULL);
    buf[n] = 0, *len = n;
    return NL_OK;
}

static nl_status read_json(ureader *u) {
    if (!jeat(u, '[')) return uerr(u, "expected a JSON list of {\"layer\":…,\"neuron\":…}", NULL);
    if (jeat(u, ']')) goto end;
    for (;;) {
        jws(u);
        const int line = u->line;
        if (!jeat(u, '{')) return uerr(u, "expected an object {\"layer\":…,\"neuron\":…}", NULL);
        long layer = -1, neuron = -1;
        int have_l = 0, have_n = 0;
        char set[NL_LABEL_MAX + 2] = "neurons";
        size_t set_len = 7;
        if (!jeat(u, '}'))
            for (;;) {
                char key[32];
                size_t kl;
                nl_status st = jstring(u, key, sizeof key, &kl);
                if (st != NL_OK) return st;
                if (!jeat(u, ':')) return uerr(u, "expected ':' after a key", NULL);
                jws(u);
                if (!strcmp(key, "set")) {
                    if ((st = jstring(u, set, sizeof set, &set_len)) != NL_OK) return st;
                } else if (!strcmp(key, "layer") || !strcmp(key, "neuron")) {
                    const char *s0 = u->p;
                    while (u->p < u->end && (*u->p == '-' || (*u->p >= '0' && *u->p <= '9'))) u->p++;
                    long v;
                    if (!parse_long(s0, (size_t)(u->p - s0), &v))
                        return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: \"%s\" needs an integer", u->path, u->line, key);
                    if (key[0] == 'l') layer = v, have_l = 1;
                    else neuron = v, have_n = 1;
                } else return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: unknown key \"%s\" (layer, neuron, set)", u->path,
                                        u->line, key);
                if (jeat(u, ',')) continue;
                if (jeat(u, '}')) break;
                return uerr(u, "expected ',' or '}' in an object", NULL);
            }
        if (!have_l || !have_n)
            return nl_errorf(u->ctx, NL_EFORMAT, "'%s' line %d: an object without \"%s\"", u->path, line,
                             have_l ? "neuron" : "layer");
        nl_status st = upush(u, set, set_len, layer, neuron, line);
        if (st != NL_OK) return st;
        if (jeat(u, ',')) continue;
        if (jeat(u, ']')) break;
        return uerr(u, "expected ',' or ']' in the list", NULL);
    }
end:
    jws(u);
    if (u->p != u->end) return uerr(u, "text after the list", NULL);
    return NL_OK;
}

static int cmp_upair(const void *a, const void *b) {
    const upair *x = a, *y = b;
    int c = strcmp(x->set, y->set);
    if (c) return c;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return (x->neuron > y->neuron) - (x->neuron < y->neuron);
}

nl_status nl_prune_sets_from_file(nl_ctx *ctx, const char *path, int L, int F, nl_ability_sets *out, char **params) {
    memset(out, 0, sizeof *out);
    *params = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    char *text = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            char *t = realloc(text, cap = 2 * cap + 65536);
            if (!t) {
                fclose(fp), free(text);
                return nl_errorf(ctx, NL_ENOMEM, "out of memory");
            }
            text = t;
        }
        size_t k = fread(text + n, 1, cap - n, fp);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(text);
        return nl_errorf(ctx, NL_EIO, "cannot read '%s': read error", path);
    }
    ureader u = {ctx, path, text, text + n, 1, NULL, 0, 0, L, F};
    const char *q = text;
    while (q < text + n && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) q++;
    nl_status st;
    if (q < text + n && *q == '[') st = read_json(&u);
    else u.line = 0, st = read_csv(&u);
    const uint64_t hash = nl_fnv1a(NL_FNV_INIT, text, n);
    free(text);
    if (st == NL_OK && u.n == 0) st = nl_errorf(ctx, NL_EINVAL, "'%s' lists no neurons", path);
    int A = 0;
    if (st == NL_OK) {
        qsort(u.v, (size_t)u.n, sizeof *u.v, cmp_upair);
        for (int i = 0; i < u.n; i++) A += !i || strcmp(u.v[i].set, u.v[i - 1].set);
        const size_t LF = (size_t)L * F;
        out->n_layers = L, out->d_ff = F, out->n_abilities = A, out->global = 0;
        snprintf(out->method, sizeof out->method, "user");
        out->layers = malloc((size_t)L * sizeof *out->layers);
        out->abilities = calloc((size_t)A, sizeof *out->abilities);
        out->excluded = calloc(LF, 1);
        out->member = calloc((size_t)A * LF, 1);
        out->count = calloc((size_t)A * L, sizeof *out->count);
        out->w_out_norm_sum = calloc((size_t)L, sizeof *out->w_out_norm_sum);
        out->source = strdup(path);
        out->model = strdup("");
        if (!out->layers || !out->abilities || !out->excluded || !out->member || !out->count || !out->w_out_norm_sum ||
            !out->source || !out->model)
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        for (int l = 0; st == NL_OK && l < L; l++) out->layers[l] = l;
        for (int i = 0, a = -1; st == NL_OK && i < u.n; i++) {
            if (!i || strcmp(u.v[i].set, u.v[i - 1].set)) {
                if (!(out->abilities[++a] = strdup(u.v[i].set))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
            }
            uint8_t *m = out->member + a * LF + (size_t)u.v[i].layer * F + u.v[i].neuron;
            if (!*m) *m = 1, out->count[(size_t)a * L + u.v[i].layer]++;
        }
    }
    if (st == NL_OK) { /* the params object */
        size_t pc = 256 + (size_t)u.n * 24 + strlen(path) * 6 + (size_t)A * (NL_LABEL_MAX * 6 + 32), o = 0;
        char *b = malloc(pc);
        if (!b) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else {
#define PUTP(...) (o += (size_t)snprintf(b + (o < pc ? o : pc), o < pc ? pc - o : 0, __VA_ARGS__))
            PUTP("{\"file\":");
            put_str(b, pc, &o, path);
            PUTP(",\"fnv1a\":\"%016llx\",\"sets\":{", (unsigned long long)hash);
            for (int a = 0; a < A; a++) {
                int64_t c = 0;
                for (int l = 0; l < L; l++) c += out->count[(size_t)a * L + l];
                if (a) PUTP(",");
                put_str(b, pc, &o, out->abilities[a]);
                PUTP(":%lld", (long long)c);
            }
            PUTP("}");
            if (u.n <= 256) {
                PUTP(",\"list\":{");
                for (int i = 0; i < u.n; i++) {
                    const int first = !i || strcmp(u.v[i].set, u.v[i - 1].set);
                    if (first) {
                        if (i) PUTP("],");
                        put_str(b, pc, &o, u.v[i].set);
                        PUTP(":[");
                    } else if (u.v[i].layer == u.v[i - 1].layer && u.v[i].neuron == u.v[i - 1].neuron) continue;
                    PUTP("%s[%d,%d]", first ? "" : ",", u.v[i].layer, u.v[i].neuron);
                }
                PUTP("]}");
            }
            PUTP("}");
#undef PUTP
            if (o >= pc) st = nl_errorf(ctx, NL_ENOMEM, "the parameters of '%s' are too long", path), free(b);
            else *params = b;
        }
    }
    for (int i = 0; i < u.n; i++) free(u.v[i].set);
    free(u.v);
    if (st != NL_OK) nl_ability_sets_release(out);
    return st;
}
