/* prune.c — pruning ability neurons (definitions, random control and tables in prune.h): the
 * fixed-set intervener on ffn_act, the seeded same-size random sets, and the loop over passes
 * (base, each pruned ability, the random passes of each distinct count vector) that scores
 * the dataset with nl_ppl_run and commits each pass's rows at once.
 * Rules: library code (statuses, no printing); uses only the public fields of nl_ability_sets,
 * so hand-built sets work as well as loaded ones.
 * Checked by tests/test_prune.c and tests/prune_cli.sh.
 */
#include "analyses/prune.h"

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

/* The run's parameters as a JSON object into buf (n bytes). */
static void params_json(const nl_ability_sets *sets, const nl_prune_result *r, int ctx_len, int stride, int batch, char *buf,
                        size_t n) {
    size_t o = 0;
#define PUT(...) (o += (size_t)snprintf(buf + (o < n ? o : n), o < n ? n - o : 0, __VA_ARGS__))
    PUT("{\"scores_run\":%lld,\"method\":\"%s\",\"symmetric\":%s,\"top\":%.15g,\"scope\":\"%s\",\"seeds\":%d,\"abilities\":[",
        (long long)sets->run_id, sets->method[0] ? sets->method : "ap", sets->symmetric ? "true" : "false", sets->top,
        sets->global ? "global" : "layer", r->n_seeds);
    for (int i = 0; i < r->n_rows; i++) {
        PUT("%s\"", i ? "," : "");
        for (const unsigned char *p = (const unsigned char *)sets->abilities[r->ability[i]]; *p; p++) {
            if (*p == '"' || *p == '\\') PUT("\\%c", *p);
            else if (*p < 0x20) PUT("\\u%04x", *p);
            else PUT("%c", *p);
        }
        PUT("\"");
    }
    PUT("],\"ctx\":%d,\"stride\":%d,\"batch\":%d}", ctx_len, stride, batch);
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
    nl_prune_mask_release(&mask);
    return st;
}

nl_status nl_prune_run(nl_ctx *ctx, const nl_prune_opts *opts, nl_forward *f, const nl_dataset *ds, const nl_ability_sets *sets,
                       nl_results *db, nl_progress *progress, nl_prune_result *r) {
    NL_ASSERT(f && ds && sets && r);
    nl_prune_opts def;
    if (!opts) nl_prune_opts_init(&def), opts = &def;
    nl_status st = nl_prune_plan(ctx, sets, ds, opts, r); /* zeroes r first */
    r->run_id = -1;
    if (st == NL_OK) st = check_model(ctx, f, sets);
    if (st != NL_OK) return st;
    nl_ctx_apply_threads(ctx);
    nl_model *m = nl_forward_model(f);
    if (db) {
        const int ctx_len = nl_forward_max_P(f);
        char params[16384];
        params_json(sets, r, ctx_len, opts->stride > 0 ? opts->stride : ctx_len / 2, opts->batch > 0 ? opts->batch : nl_forward_max_T(f),
                    params, sizeof params);
        nl_run_info info = {.kind = "prune",
                            .model = opts->model ? opts->model : nl_model_path(m),
                            .dataset = opts->dataset ? opts->dataset : ds->path,
                            .source = sets->source,
                            .params = params};
        if ((st = nl_prune_create_tables(ctx, db)) != NL_OK) return st;
        if ((st = nl_results_begin_run(ctx, db, &info, &r->run_id)) != NL_OK) return st;
    }
    if (progress) progress->total = (int64_t)nl_prune_passes(r) * ds->n_tokens;
    st = run_passes(ctx, f, ds, sets, opts, db, r->run_id, progress, r);
    return db ? nl_results_finish_run(ctx, db, r->run_id, st, NULL) : st;
}
