/* perturb.c — masking perturbation (definition, tie-breaking, random control and the perturb
 * table in perturb.h): the mask intervener on ffn_act and the loop over (metric, ratio) that
 * scores the dataset with nl_ppl_run and commits each setting's rows at once.
 * Rules: library code (statuses, no printing); a row's mask depends on that row only.
 * Checked by tests/test_perturb.c and tests/perturb_cli.sh.
 */
#include "analyses/perturb.h"

#include <math.h>
#include <omp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/ops.h"
#include "neuronlab/mpi.h"
#include "neuronlab/rng.h"
#include "neuronlab/walk.h"
#include "neuronlab/model.h"

static const char *METRIC_NAMES[NL_MASK_N_METRICS] = {"value", "norm", "random"};

const char *nl_mask_metric_name(nl_mask_metric m) {
    return m >= 0 && m < NL_MASK_N_METRICS ? METRIC_NAMES[m] : "?";
}

int nl_mask_metric_parse(const char *s) {
    for (int m = 0; m < NL_MASK_N_METRICS; m++)
        if (!strcmp(s, METRIC_NAMES[m])) return m;
    return -1;
}

int nl_mask_count(double ratio, int F) { return (int)floor(ratio * (double)F + 1e-9); }

/* ---- the intervener ------------------------------------------------------------------ */

struct nl_mask {
    int L, F;
    nl_mask_metric metric;
    double ratio;
    int k;              /* neurons masked per row */
    uint64_t seed;
    float *norm;        /* (L, F) ‖W_out[:, i]‖₂, or NULL */
    int64_t *rows;      /* (L) rows seen per layer since the last reset (random stream) */
    uint8_t *only;      /* (L) 1 = mask this layer; NULL = every layer (nl_mask_set_layers) */
    uint64_t *scratch;  /* (n_scratch, F) one key row per thread */
    int n_scratch;
};

static nl_status check_setting(nl_ctx *ctx, const nl_mask *k, nl_mask_metric metric, double ratio) {
    if (metric < 0 || metric >= NL_MASK_N_METRICS) return nl_errorf(ctx, NL_EINVAL, "unknown masking metric %d", (int)metric);
    if (!(ratio >= 0.0 && ratio < 1.0)) return nl_errorf(ctx, NL_EINVAL, "masking ratio %g is outside [0, 1)", ratio);
    if (metric == NL_MASK_NORM && !k->norm)
        return nl_errorf(ctx, NL_EINVAL, "the norm metric needs the W_out column norms");
    return NL_OK;
}

nl_status nl_mask_create(nl_ctx *ctx, int L, int F, const float *w_out_norm, nl_mask_metric metric, double ratio,
                         uint64_t seed, nl_mask **out) {
    *out = NULL;
    NL_ASSERT(L > 0 && F > 0);
    nl_mask *k = calloc(1, sizeof *k);
    if (!k) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    k->L = L, k->F = F, k->seed = seed;
    k->rows = calloc((size_t)L, sizeof *k->rows);
    if (w_out_norm) {
        k->norm = malloc((size_t)L * F * sizeof(float));
        if (k->norm) memcpy(k->norm, w_out_norm, (size_t)L * F * sizeof(float));
    }
    if (!k->rows || (w_out_norm && !k->norm)) {
        nl_mask_destroy(k);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    nl_status st = nl_mask_set(ctx, k, metric, ratio);
    if (st != NL_OK) {
        nl_mask_destroy(k);
        return st;
    }
    *out = k;
    return NL_OK;
}

nl_status nl_mask_create_for_model(nl_ctx *ctx, nl_model *m, nl_mask_metric metric, double ratio, uint64_t seed,
                                   nl_mask **out) {
    *out = NULL;
    const nl_config *c = nl_model_config(m);
    const int L = c->n_layers, F = c->d_ff;
    float *norms = malloc((size_t)L * F * sizeof(float));
    if (!norms) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = NL_OK;
    for (int l = 0; st == NL_OK && l < L; l++) st = nl_model_w_out_norm(ctx, m, l, norms + (size_t)l * F);
    if (st == NL_OK) st = nl_mask_create(ctx, L, F, norms, metric, ratio, seed, out);
    free(norms);
    return st;
}

void nl_mask_destroy(nl_mask *k) {
    if (!k) return;
    free(k->norm);
    free(k->rows);
    free(k->only);
    free(k->scratch);
    free(k);
}

nl_status nl_mask_set(nl_ctx *ctx, nl_mask *k, nl_mask_metric metric, double ratio) {
    nl_status st = check_setting(ctx, k, metric, ratio);
    if (st != NL_OK) return st;
    k->metric = metric;
    k->ratio = ratio;
    k->k = nl_mask_count(ratio, k->F);
    nl_mask_reset(k);
    return NL_OK;
}

void nl_mask_reset(nl_mask *k) { memset(k->rows, 0, (size_t)k->L * sizeof *k->rows); }
int nl_mask_k(const nl_mask *k) { return k->k; }

/* splitmix64's step: a bijective 64-bit mix of z + the golden-ratio increment. */
static inline uint64_t mix64(uint64_t z) { return nl_mix64(z + 0x9e3779b97f4a7c15ULL); }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Rearranges a (n distinct keys) so that a[0 .. k) are the k smallest (nth_element at k-1):
 * quickselect with median-of-three pivots and a branch-free Lomuto partition (3-4x faster than
 * Hoare's on random keys: no mispredicted branches), O(n) expected; after 2·log2(n) + 8
 * partitions (adversarial input) the remaining range is sorted, so the worst case is O(n log n). */
static void select_smallest(uint64_t *a, int n, int k) {
    if (k <= 0 || k >= n) return;
    int lo = 0, hi = n - 1, budget = 8;
    for (int m = n; m > 1; m >>= 1) budget += 2;
    const int want = k - 1;
    while (hi > lo) {
        if (budget-- == 0) {
            qsort(a + lo, (size_t)(hi - lo + 1), sizeof *a, cmp_u64);
            return;
        }
        const int mid = lo + (hi - lo) / 2;
        const uint64_t x = a[lo], y = a[mid], z = a[hi];
        const int pi = x < y ? (y < z ? mid : (x < z ? hi : lo)) : (x < z ? lo : (y < z ? hi : mid));
        const uint64_t p = a[pi];
        a[pi] = a[hi];
        a[hi] = p;
        int s = lo; /* a[lo, s) < p */
        for (int i = lo; i < hi; i++) {
            const uint64_t v = a[i];
            const int lt = v < p;
            a[i] = a[s];
            a[s] = v;
            s += lt;
        }
        a[hi] = a[s];
        a[s] = p;
        if (want < s) hi = s - 1;
        else if (want > s) lo = s + 1;
        else return;
    }
}

/* Masks one row x (F) that is row `row` of layer l's stream; key: (F) scratch. */
static void mask_row(const nl_mask *k, int l, int64_t row, float *x, uint64_t *key) {
    const int F = k->F;
    switch (k->metric) {
    case NL_MASK_VALUE:
        for (int i = 0; i < F; i++) {
            float v = fabsf(x[i]);
            uint32_t b;
            memcpy(&b, &v, 4);
            key[i] = (uint64_t)b << 32 | (uint32_t)i;
        }
        break;
    case NL_MASK_NORM: {
        const float *nrm = k->norm + (size_t)l * F;
        for (int i = 0; i < F; i++) {
            float v = fabsf(x[i]) * nrm[i];
            uint32_t b;
            memcpy(&b, &v, 4);
            key[i] = (uint64_t)b << 32 | (uint32_t)i;
        }
        break;
    }
    default: {
        const uint64_t s = mix64(k->seed ^ mix64(((uint64_t)l << 40) + (uint64_t)row));
        for (int i = 0; i < F; i++)
            key[i] = (mix64(s + (uint64_t)i * 0xd1b54a32d192ed03ULL) & 0xffffffff00000000ULL) | (uint32_t)i;
        break;
    }
    }
    select_smallest(key, F, k->k);
    for (int j = 0; j < k->k; j++) x[(uint32_t)key[j]] = 0.0f;
}

nl_status nl_mask_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    nl_mask *k = user;
    NL_ASSERT(info->width == k->F && info->layer >= 0 && info->layer < k->L);
    const int T = info->T, F = k->F, l = info->layer;
    const int64_t row0 = k->rows[l];
    k->rows[l] += T;
    if (k->k == 0 || T <= 0 || (k->only && !k->only[l])) return NL_OK;
    int nt = (int64_t)T * F > NL_PAR_MIN ? omp_get_max_threads() : 1;
    if (nt > T) nt = T;
    if (nt > k->n_scratch) {
        uint64_t *s = realloc(k->scratch, (size_t)nt * F * sizeof *s);
        if (!s) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        k->scratch = s;
        k->n_scratch = nt;
    }
#pragma omp parallel for schedule(dynamic, 8) num_threads(nt) if (nt > 1)
    for (int t = 0; t < T; t++)
        mask_row(k, l, row0 + t, x + (size_t)t * F, k->scratch + (size_t)omp_get_thread_num() * F);
    return NL_OK;
}

/* ---- the analysis --------------------------------------------------------------------- */

nl_status nl_perturb_create_tables(nl_ctx *ctx, nl_results *db) {
    return nl_results_exec(ctx, db,
                           "CREATE TABLE IF NOT EXISTS perturb("
                           " run_id INTEGER NOT NULL REFERENCES runs(id),"
                           " metric TEXT NOT NULL, ratio REAL NOT NULL, label TEXT NOT NULL,"
                           " tokens INTEGER NOT NULL, nll REAL, ppl REAL, masked INTEGER NOT NULL);"
                           "CREATE INDEX IF NOT EXISTS perturb_run_id ON perturb(run_id);");
}

static const nl_mask_metric default_metrics[NL_MASK_N_METRICS] = {NL_MASK_VALUE, NL_MASK_NORM, NL_MASK_RANDOM};
static const double default_ratios[10] = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};

void nl_perturb_opts_init(nl_perturb_opts *o) {
    memset(o, 0, sizeof *o);
    o->metrics = default_metrics, o->n_metrics = NL_MASK_N_METRICS;
    o->ratios = default_ratios, o->n_ratios = 10;
}

/* The run's parameters as a JSON object into buf (n bytes). */
static void params_json(const nl_perturb_opts *opt, int ctx_len, int stride, int batch, char *buf, size_t n) {
    size_t o = 0;
#define PUT(...) (o += (size_t)snprintf(buf + (o < n ? o : n), o < n ? n - o : 0, __VA_ARGS__))
    PUT("{\"metrics\":[");
    for (int m = 0; m < opt->n_metrics; m++) PUT("%s\"%s\"", m ? "," : "", nl_mask_metric_name(opt->metrics[m]));
    PUT("],\"ratios\":[");
    for (int r = 0; r < opt->n_ratios; r++) PUT("%s%.15g", r ? "," : "", opt->ratios[r]);
    PUT("],\"seed\":%llu,\"ctx\":%d,\"stride\":%d,\"batch\":%d", (unsigned long long)opt->seed, ctx_len, stride, batch);
    if (opt->layers) { /* only when given, so the params of an all-layer run keep their text */
        PUT(",\"layers\":[");
        for (int j = 0; j < opt->n_layers; j++) PUT("%s%d", j ? "," : "", opt->layers[j]);
        PUT("]");
    }
    if (opt->moe_json) PUT(",\"moe\":%s", opt->moe_json);
    PUT("}");
#undef PUT
}

int nl_perturb_passes(const nl_perturb_opts *opt, int F) {
    int n = 0, base = 0;
    for (int m = 0; m < opt->n_metrics; m++)
        for (int r = 0; r < opt->n_ratios; r++) {
            if (nl_mask_count(opt->ratios[r], F) == 0) base = 1;
            else n++;
        }
    return n + base;
}

void nl_perturb_result_release(nl_perturb_result *r) {
    if (!r) return;
    for (int i = 0; r->cells && i < r->n_cells; i++) nl_ppl_result_release(&r->cells[i].ppl);
    free(r->cells);
    memset(r, 0, sizeof *r);
    r->run_id = -1;
}

static nl_status copy_result(nl_ctx *ctx, const nl_ppl_result *a, nl_ppl_result *b) {
    *b = *a;
    b->by_label = malloc(((size_t)a->n_labels + 1) * sizeof(nl_nll_sum));
    b->by_doc = malloc(((size_t)a->n_docs + 1) * sizeof(nl_nll_sum));
    if (!b->by_label || !b->by_doc) {
        nl_ppl_result_release(b);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    memcpy(b->by_label, a->by_label, ((size_t)a->n_labels + 1) * sizeof(nl_nll_sum));
    memcpy(b->by_doc, a->by_doc, (size_t)a->n_docs * sizeof(nl_nll_sum));
    return NL_OK;
}

static int bind_sum(sqlite3_stmt *s, const char *label, nl_nll_sum sum) {
    int rc = sqlite3_bind_text(s, 4, label, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 5, sum.n);
    if (rc == SQLITE_OK) rc = sum.n > 0 ? sqlite3_bind_double(s, 6, nl_nll_mean(sum)) : sqlite3_bind_null(s, 6);
    if (rc == SQLITE_OK) rc = sum.n > 0 ? sqlite3_bind_double(s, 7, nl_nll_ppl(sum)) : sqlite3_bind_null(s, 7);
    if (rc == SQLITE_OK) rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_reset(s);
    return rc;
}

/* One transaction: the row for all documents and one per non-empty label. */
static nl_status write_cell(nl_ctx *ctx, nl_results *db, int64_t run_id, const nl_dataset *ds, const nl_perturb_cell *c) {
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(h, "INSERT INTO perturb(run_id, metric, ratio, label, tokens, nll, ppl, masked)"
                                   " VALUES(?, ?, ?, ?, ?, ?, ?, ?)", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, 1, run_id);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 2, nl_mask_metric_name(c->metric), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(s, 3, c->ratio);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(s, 8, c->masked);
    if (rc == SQLITE_OK) rc = bind_sum(s, "", c->ppl.total);
    for (int l = 0; rc == SQLITE_OK && l < ds->n_labels; l++)
        if (ds->labels[l][0]) rc = bind_sum(s, ds->labels[l], c->ppl.by_label[l]);
    if (rc != SQLITE_OK) st = nl_results_error(ctx, db, "cannot write the perturb rows");
    sqlite3_finalize(s);
    if (st == NL_OK) return nl_results_commit(ctx, db);
    nl_results_rollback(db);
    return st;
}

/* Marks cell done after committing it (when there is a database); on failure releases it. */
static nl_status finish_cell(nl_ctx *ctx, nl_results *db, int64_t run_id, const nl_dataset *ds, nl_perturb_cell *c) {
    nl_status st = db ? write_cell(ctx, db, run_id, ds, c) : NL_OK;
    if (st == NL_OK) c->done = 1;
    else nl_ppl_result_release(&c->ppl);
    return st;
}

static nl_status check_opts(nl_ctx *ctx, const nl_perturb_opts *opt) {
    if (opt->n_metrics <= 0 || opt->n_ratios <= 0)
        return nl_errorf(ctx, NL_EINVAL, "perturb needs at least one metric and one ratio");
    for (int r = 0; r < opt->n_ratios; r++)
        if (!(opt->ratios[r] >= 0.0 && opt->ratios[r] < 1.0))
            return nl_errorf(ctx, NL_EINVAL, "masking ratio %g is outside [0, 1)", opt->ratios[r]);
    for (int i = 0; i < opt->n_metrics; i++)
        if (opt->metrics[i] < 0 || opt->metrics[i] >= NL_MASK_N_METRICS)
            return nl_errorf(ctx, NL_EINVAL, "unknown masking metric %d", (int)opt->metrics[i]);
    return NL_OK;
}

/* Under MPI (mpi.h) nl_ppl_run scores this rank's block of documents: the random metric's row
 * stream must start where the documents before the block end, as in one process. A walk
 * that only counts the rows the forward pass would see (nothing runs). */
static nl_status count_rows(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    (void)ctx, (void)f, (void)doc, (void)start, (void)new_from;
    *(int64_t *)user += T;
    return NL_OK;
}

/* row0 (n_docs + 1): row0[d] = the rows of the documents before d, where the random stream of
 * document d starts (every document of a one-process run, in order). */
static void rows_before_docs(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, int64_t *row0) {
    row0[0] = 0;
    for (int d = 0; d < ds->n_docs; d++) {
        row0[d + 1] = row0[d];
        nl_forward_doc(f, ctx, &ds->docs[d], stride, count_rows, &row0[d + 1]);
    }
}

/* Documents in parallel (perplexity.h nl_ppl_states): each forward state masks with its own copy
 * of the mask (own row counters and scratch; norms and layer choice shared, read-only), whose
 * random stream restarts at each document's first row, row0[d], as the serial loop reaches it. */
typedef struct {
    const nl_mask *mask;  /* the pass's mask, registered on f for the serial loop */
    const int64_t *row0;  /* (n_docs + 1) */
} mask_states;
typedef struct {
    nl_mask m;            /* shallow copy: rows and scratch its own */
    const int64_t *row0;
    nl_hooks *hooks;
    nl_hook_id id;
} mask_state;

static nl_status mask_attach(void *user, nl_ctx *ctx, nl_forward *g, void **state) {
    const mask_states *ms = user;
    mask_state *s = calloc(1, sizeof *s);
    int64_t *rows = s ? calloc((size_t)ms->mask->L, sizeof *rows) : NULL;
    if (!rows) {
        free(s);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    s->m = *ms->mask;
    s->m.rows = rows, s->m.scratch = NULL, s->m.n_scratch = 0;
    s->row0 = ms->row0;
    s->hooks = nl_forward_hooks(g);
    if (nl_hooks_add_id(s->hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_mask_hook, &s->m, &s->id) != NL_OK) {
        free(rows);
        free(s);
        return nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    }
    *state = s;
    return NL_OK;
}
static void mask_doc(void *state, int d) {
    mask_state *s = state;
    for (int l = 0; l < s->m.L; l++) s->m.rows[l] = s->row0[d];
}
static void mask_detach(void *user, nl_forward *g, void *state) {
    (void)user, (void)g;
    mask_state *s = state;
    nl_hooks_remove(s->hooks, s->id);
    free(s->m.rows);
    free(s->m.scratch);
    free(s);
}

/* The passes of a validated opt into cells (n_metrics × n_ratios), rows under run_id when db. */
static nl_status run_passes(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, const nl_perturb_opts *opt, nl_results *db,
                            int64_t run_id, nl_progress *progress, nl_perturb_cell *cells) {
    nl_model *m = nl_forward_model(f);
    const int F = nl_model_config(m)->d_ff, NR = opt->n_ratios, NC = opt->n_metrics * opt->n_ratios;
    int any_zero = 0;
    for (int i = 0; i < NC; i++) {
        memset(&cells[i], 0, sizeof cells[i]);
        cells[i].metric = opt->metrics[i / NR];
        cells[i].ratio = opt->ratios[i % NR];
        cells[i].masked = nl_mask_count(cells[i].ratio, F);
        if (cells[i].masked == 0) any_zero = 1;
    }
    nl_status st = NL_OK;
    nl_mask *mask = NULL;
    if (st == NL_OK) st = nl_mask_create_for_model(ctx, m, NL_MASK_VALUE, 0.0, opt->seed, &mask);
    if (st == NL_OK && opt->layers) st = nl_mask_set_layers(ctx, mask, opt->layers, opt->n_layers);
    if (st != NL_OK) return st;
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_hook_id hook_id = 0;
    if (nl_hooks_add_id(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_mask_hook, mask, &hook_id) != NL_OK) {
        nl_mask_destroy(mask);
        return nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    }
    int64_t *row0 = malloc(((size_t)ds->n_docs + 1) * sizeof *row0);
    if (!row0) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    else rows_before_docs(ctx, f, ds, opt->stride, row0);
    int lo, hi;
    nl_mpi_block(ds->n_docs, &lo, &hi);
    const mask_states ms = {mask, row0};
    const nl_ppl_states ps = {mask_attach, mask_doc, mask_detach, (void *)&ms, 1, 0};
    /* The unmasked pass (k = 0: the hook leaves a untouched), shared by every k = 0 setting. */
    if (st == NL_OK && any_zero) {
        nl_ppl_result base;
        st = nl_ppl_run_states(ctx, f, ds, opt->stride, progress, &ps, &base);
        for (int i = 0; st == NL_OK && i < NC; i++) {
            if (cells[i].masked != 0) continue;
            if ((st = copy_result(ctx, &base, &cells[i].ppl)) == NL_OK) st = finish_cell(ctx, db, run_id, ds, &cells[i]);
        }
        nl_ppl_result_release(&base); /* nl_ppl_run leaves it releasable on every status */
    }
    for (int i = 0; st == NL_OK && i < NC; i++) {
        if (cells[i].masked == 0) continue;
        if ((st = nl_mask_set(ctx, mask, cells[i].metric, cells[i].ratio)) != NL_OK) break;
        for (int l = 0; l < mask->L; l++) mask->rows[l] = row0[lo]; /* the serial loop: this rank's first document */
        if ((st = nl_ppl_run_states(ctx, f, ds, opt->stride, progress, &ps, &cells[i].ppl)) != NL_OK) break;
        st = finish_cell(ctx, db, run_id, ds, &cells[i]);
    }
    nl_hooks_remove(hooks, hook_id); /* remove our intervener */
    nl_mask_destroy(mask);
    free(row0);
    return st;
}

nl_status nl_mask_set_layers(nl_ctx *ctx, nl_mask *k, const int *layers, int n) {
    uint8_t *only = calloc((size_t)k->L, 1);
    if (!only) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int j = 0; j < n; j++) {
        if (layers[j] < 0 || layers[j] >= k->L) {
            free(only);
            return nl_errorf(ctx, NL_EINVAL, "layer %d is outside the model's 0..%d", layers[j], k->L - 1);
        }
        if (only[layers[j]]) {
            free(only);
            return nl_errorf(ctx, NL_EINVAL, "layer %d is given twice", layers[j]);
        }
        only[layers[j]] = 1;
    }
    if (n <= 0) {
        free(only);
        return nl_errorf(ctx, NL_EINVAL, "no layers to mask");
    }
    free(k->only);
    k->only = only;
    return NL_OK;
}

nl_status nl_perturb_run(nl_ctx *ctx, const nl_perturb_opts *opts, nl_forward *f, const nl_dataset *ds, nl_results *db,
                         nl_progress *progress, nl_perturb_result *out) {
    NL_ASSERT(f && ds && out);
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_perturb_opts def;
    if (!opts) nl_perturb_opts_init(&def), opts = &def;
    nl_status st = check_opts(ctx, opts);
    if (st != NL_OK) return st;
    nl_model *m = nl_forward_model(f);
    if (opts->layers) { /* checked before anything is written */
        nl_mask *probe = NULL;
        const nl_config *c = nl_model_config(m);
        if ((st = nl_mask_create(ctx, c->n_layers, c->d_ff, NULL, NL_MASK_VALUE, 0.0, 0, &probe)) != NL_OK) return st;
        st = nl_mask_set_layers(ctx, probe, opts->layers, opts->n_layers);
        nl_mask_destroy(probe);
        if (st != NL_OK) return st;
    }
    nl_ctx_apply_threads(ctx);
    const int F = nl_model_config(m)->d_ff;
    out->n_cells = opts->n_metrics * opts->n_ratios;
    out->passes = nl_perturb_passes(opts, F);
    if (!(out->cells = calloc((size_t)out->n_cells, sizeof *out->cells))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (db) {
        const int ctx_len = nl_forward_max_P(f);
        char params[8192];
        params_json(opts, ctx_len, opts->stride > 0 ? opts->stride : ctx_len / 2, opts->batch > 0 ? opts->batch : nl_forward_max_T(f),
                    params, sizeof params);
        nl_run_info info = {.kind = "perturb",
                            .model = opts->model ? opts->model : nl_model_path(m),
                            .dataset = opts->dataset ? opts->dataset : ds->path,
                            .params = params,
                            .compute = nl_compute_name(nl_forward_compute(f))};
        if ((st = nl_perturb_create_tables(ctx, db)) != NL_OK) return st;
        if ((st = nl_results_begin_run(ctx, db, &info, &out->run_id)) != NL_OK) return st;
    }
    if (progress) progress->total = (int64_t)out->passes * ds->n_tokens;
    st = run_passes(ctx, f, ds, opts, db, out->run_id, progress, out->cells);
    for (int i = 0; i < out->n_cells; i++) out->n_done += out->cells[i].done;
    return db ? nl_results_finish_run(ctx, db, out->run_id, st, NULL) : st;
}
