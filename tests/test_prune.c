/* test_prune.c — pruning ability neurons (analyses/prune.h):
 *   - the intervener zeroes exactly the listed columns of the listed layers and nothing else;
 *   - random sets: exactly the requested per-layer counts, never an excluded neuron, the same
 *     for the same seed, different across seeds, nested across counts, about uniform;
 *   - empty sets (all counts 0) reproduce nl_ppl_run bit for bit (fixture model and
 *     stories260K from ../shared, skipped when absent);
 *   - hand-built nl_ability_sets on the fixture model tests/fixtures/hf/llama: the ability and
 *     random passes equal a brute-force intervener, the base rows have rel_change 0, random
 *     passes are shared by abilities with equal counts, the tables hold the documented rows,
 *     the control statistics match a recomputation, an interrupted run keeps finished passes;
 *   - the plan's one-line errors (unknown ability, asked twice, no documents, no seeds);
 *   - neurons files (CSV with and without a set column, JSON: the same sets, the params text
 *     with the file's FNV-1a) and their one-line errors naming file and line;
 *   - held-out evaluation: only the flagged documents are scored (= a dataset of just those,
 *     base = ppl), and a dataset that is not the run's is refused.
 */
#include <sqlite3.h>
#include <unistd.h>

#include "analyses/prune.h"
#include "neuronlab/rng.h"
#include "testutil.h"

#define STORIES NL_SHARED "/models/stories260K"
#define FIXTURE "tests/fixtures/hf/llama"

/* ---- hand-built top sets ---------------------------------------------------------------- */

/* Sets for Lr recorded layers (model layers `layers`) of F neurons and A abilities, nothing
 * chosen, nothing excluded. Freed with sets_free (not nl_ability_sets_release: the test owns
 * every field). */
static void sets_make(nl_ability_sets *s, int Lr, const int *layers, int F, int A, const char *const *names) {
    memset(s, 0, sizeof *s);
    s->run_id = 7;
    s->n_layers = Lr, s->d_ff = F, s->n_abilities = A;
    s->layers = malloc(Lr * sizeof(int));
    memcpy(s->layers, layers, Lr * sizeof(int));
    s->abilities = malloc(A * sizeof(char *));
    for (int a = 0; a < A; a++) s->abilities[a] = strdup(names[a]);
    s->top = 0.05;
    s->excluded = calloc((size_t)Lr * F, 1);
    s->member = calloc((size_t)A * Lr * F, 1);
    s->count = calloc((size_t)A * Lr, sizeof(int));
    s->w_out_norm_sum = calloc(Lr, sizeof(double));
    s->source = strdup("acts.h5");
    s->model = strdup("model");
}

static void sets_free(nl_ability_sets *s) {
    for (int a = 0; a < s->n_abilities; a++) free(s->abilities[a]);
    free(s->abilities), free(s->layers), free(s->excluded), free(s->member), free(s->count);
    free(s->w_out_norm_sum), free(s->source), free(s->model);
    memset(s, 0, sizeof *s);
}

/* Puts neuron i of recorded layer j into ability a's set. */
static void sets_add(nl_ability_sets *s, int a, int j, int i) {
    uint8_t *m = s->member + ((size_t)a * s->n_layers + j) * s->d_ff + i;
    cr_assert(!*m);
    *m = 1;
    s->count[a * s->n_layers + j]++;
}

/* ---- the intervener --------------------------------------------------------------------- */

Test(prune, hook_zeroes_exactly_the_listed_columns) {
    enum { L = 3, F = 10, T = 5 };
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_prune_mask m;
    cr_assert_eq(nl_prune_mask_init(&ctx, &m, L, F), NL_OK);
    uint8_t flags[F] = {1, 0, 0, 1, 0, 0, 0, 0, 0, 1};
    nl_prune_mask_set_layer(&m, 1, flags);
    cr_assert_eq(m.count[1], 3);
    cr_assert_eq(m.index[1 * F + 0], 0);
    cr_assert_eq(m.index[1 * F + 1], 3);
    cr_assert_eq(m.index[1 * F + 2], 9);
    cr_assert_eq(nl_prune_mask_total(&m), 3);
    float x[T * F], orig[T * F];
    for (int i = 0; i < T * F; i++) x[i] = orig[i] = (float)(i % 7) - 3.5f + 0.25f * (float)i;
    for (int l = 0; l < L; l++) {
        memcpy(x, orig, sizeof x);
        nl_hook_info info = {NL_HOOK_FFN_ACT, l, T, F, 0, NULL, NULL, 0};
        cr_assert_eq(nl_prune_hook(&m, &ctx, &info, x), NL_OK);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < F; i++) {
                const float want = l == 1 && flags[i] ? 0.0f : orig[t * F + i];
                cr_assert(memcmp(&x[t * F + i], &want, 4) == 0, "layer %d row %d neuron %d: %g, want %g", l, t, i,
                          x[t * F + i], want);
            }
    }
    /* NaN and -0 elsewhere are left alone; listed NaNs become 0 */
    float y[F] = {NAN, -0.0f, NAN, 1, 2, 3, 4, 5, 6, NAN};
    nl_hook_info one = {NL_HOOK_FFN_ACT, 1, 1, F, 0, NULL, NULL, 0};
    nl_prune_hook(&m, &ctx, &one, y);
    cr_assert(y[0] == 0.0f && !signbit(y[0]) && y[9] == 0.0f && isnan(y[2]) && signbit(y[1]));
    nl_prune_mask_clear(&m);
    cr_assert_eq(nl_prune_mask_total(&m), 0);
    nl_prune_mask_release(&m);
    nl_prune_mask_release(&m); /* a zeroed mask is a no-op */
}

Test(prune, mask_of_an_ability_maps_recorded_layers_to_model_layers) {
    const int layers[2] = {1, 3};
    const char *names[2] = {"code", "math"};
    nl_ability_sets s;
    sets_make(&s, 2, layers, 8, 2, names);
    sets_add(&s, 1, 0, 2), sets_add(&s, 1, 0, 6), sets_add(&s, 1, 1, 0), sets_add(&s, 0, 1, 5);
    nl_prune_mask m;
    cr_assert_eq(nl_prune_mask_init(NULL, &m, 4, 8), NL_OK);
    nl_prune_mask_ability(&m, &s, 1);
    cr_assert(m.count[0] == 0 && m.count[1] == 2 && m.count[2] == 0 && m.count[3] == 1);
    cr_assert(m.index[8 + 0] == 2 && m.index[8 + 1] == 6 && m.index[24] == 0);
    nl_prune_mask_ability(&m, &s, 0);
    cr_assert(m.count[1] == 0 && m.count[3] == 1 && m.index[24] == 5, "the previous ability's neurons stayed");
    nl_prune_mask_release(&m);
    sets_free(&s);
}

/* ---- random sets ------------------------------------------------------------------------ */

Test(prune, random_sets_have_the_counts_avoid_excluded_and_follow_the_seed) {
    enum { F = 200 };
    uint8_t excl[F] = {0}, a[F], b[F], c[F], d[F];
    for (int i = 0; i < F; i += 3) excl[i] = 1; /* 67 excluded, 133 eligible */
    for (int k = 0; k <= 140; k += 7) {
        int n = nl_prune_random_layer(5, 2, F, excl, k, a);
        int want = k < 133 ? k : 133, got = 0;
        for (int i = 0; i < F; i++) {
            got += a[i];
            cr_assert(!(a[i] && excl[i]), "k %d: excluded neuron %d chosen", k, i);
        }
        cr_assert(n == want && got == want, "k %d: %d chosen (returned %d), want %d", k, got, n, want);
    }
    /* same seed → same set; other seed or other layer → another set; nested across k */
    nl_prune_random_layer(5, 2, F, excl, 20, a);
    nl_prune_random_layer(5, 2, F, excl, 20, b);
    nl_prune_random_layer(6, 2, F, excl, 20, c);
    nl_prune_random_layer(5, 3, F, excl, 20, d);
    cr_assert_eq(memcmp(a, b, F), 0);
    cr_assert_neq(memcmp(a, c, F), 0, "seeds 5 and 6 chose the same set");
    cr_assert_neq(memcmp(a, d, F), 0, "layers 2 and 3 chose the same set");
    nl_prune_random_layer(5, 2, F, excl, 40, b);
    for (int i = 0; i < F; i++) cr_assert(!a[i] || b[i], "not nested: neuron %d", i);
    /* without exclusions every neuron is eligible */
    cr_assert_eq(nl_prune_random_layer(1, 0, F, NULL, F + 5, a), F);
    /* about uniform: over 400 seeds each eligible neuron is chosen ~400·20/133 = 60 times */
    int hits[F] = {0};
    for (int s = 0; s < 400; s++) {
        nl_prune_random_layer((uint64_t)s, 1, F, excl, 20, a);
        for (int i = 0; i < F; i++) hits[i] += a[i];
    }
    for (int i = 0; i < F; i++)
        if (excl[i]) cr_assert_eq(hits[i], 0);
        else cr_assert(hits[i] >= 30 && hits[i] <= 95, "neuron %d chosen %d times of 400, expected ~60", i, hits[i]);
}

Test(prune, random_mask_depends_on_counts_not_on_the_ability) {
    const int layers[3] = {0, 2, 4};
    const char *names[2] = {"a", "b"};
    enum { F = 50 };
    nl_ability_sets s;
    sets_make(&s, 3, layers, F, 2, names);
    for (int i = 0; i < 10; i++) s.excluded[1 * F + i] = 1; /* recorded layer 1 = model layer 2 */
    /* a: counts (3, 5, 0) over neurons 0.., b: the same counts over other neurons */
    for (int i = 0; i < 3; i++) sets_add(&s, 0, 0, i), sets_add(&s, 1, 0, 40 + i);
    for (int i = 0; i < 5; i++) sets_add(&s, 0, 1, 10 + i), sets_add(&s, 1, 1, 20 + i);
    nl_prune_mask m1, m2, m3;
    nl_prune_mask_init(NULL, &m1, 5, F), nl_prune_mask_init(NULL, &m2, 5, F), nl_prune_mask_init(NULL, &m3, 5, F);
    nl_prune_mask_random(&m1, &s, s.count + 0, 1);
    nl_prune_mask_random(&m2, &s, s.count + 3, 1);
    nl_prune_mask_random(&m3, &s, s.count + 0, 2);
    const int want[5] = {3, 0, 5, 0, 0};
    for (int l = 0; l < 5; l++) {
        cr_assert_eq(m1.count[l], want[l], "layer %d: %d neurons, want %d", l, m1.count[l], want[l]);
        cr_assert_eq(m2.count[l], want[l]);
        cr_assert_eq(memcmp(m1.index + l * F, m2.index + l * F, want[l] * sizeof(int)), 0, "layer %d: abilities differ", l);
        for (int j = 1; j < m1.count[l]; j++) cr_assert_lt(m1.index[l * F + j - 1], m1.index[l * F + j], "not ascending");
    }
    for (int j = 0; j < 5; j++) cr_assert_geq(m1.index[2 * F + j], 10, "an excluded neuron was chosen");
    cr_assert(memcmp(m1.index, m3.index, 3 * sizeof(int)) || memcmp(m1.index + 2 * F, m3.index + 2 * F, 5 * sizeof(int)),
              "seeds 1 and 2 gave the same random sets");
    /* the layer's own random set: the same as nl_prune_random_layer with the model layer */
    uint8_t flags[F];
    nl_prune_random_layer(1, 2, F, s.excluded + F, 5, flags);
    for (int j = 0; j < 5; j++) cr_assert(flags[m1.index[2 * F + j]]);
    nl_prune_mask_release(&m1), nl_prune_mask_release(&m2), nl_prune_mask_release(&m3);
    sets_free(&s);
}

/* ---- the analysis on the fixture model -------------------------------------------------- */

typedef struct {
    char dir[64], data[256], db[256];
    nl_model *m;
    nl_dataset *ds;
    nl_forward *f;
} fixture;

/* 8 documents of 41 tokens labelled code, math, prose, '' in turn (vocab 256). */
static void fixture_open(fixture *x) {
    snprintf(x->dir, sizeof x->dir, "/tmp/nl_prune_XXXXXX");
    cr_assert(mkdtemp(x->dir));
    snprintf(x->data, sizeof x->data, "%s/d.jsonl", x->dir);
    snprintf(x->db, sizeof x->db, "%s/r.db", x->dir);
    FILE *fp = fopen(x->data, "w");
    const char *labels[4] = {"math", "code", "prose", ""};
    unsigned seed = 3;
    for (int d = 0; d < 8; d++) {
        fprintf(fp, "{\"label\": \"%s\", \"tokens\": [1", labels[d % 4]);
        for (int t = 0; t < 40; t++) fprintf(fp, ", %u", 2 + rand_r(&seed) % 250);
        fprintf(fp, "]}\n");
    }
    fclose(fp);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_model_open(&ctx, FIXTURE, &x->m), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_dataset_load(&ctx, x->data, NULL, 256, &x->ds), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_forward_create(&ctx, x->m, 16, 128, &x->f), NL_OK);
}

static void fixture_close(fixture *x) {
    nl_forward_destroy(x->f);
    nl_dataset_destroy(x->ds);
    nl_model_close(x->m);
    unlink(x->data);
    unlink(x->db);
    rmdir(x->dir);
}

static int same_sum(nl_nll_sum a, nl_nll_sum b) { return a.n == b.n && memcmp(&a.nll, &b.nll, sizeof a.nll) == 0; }

/* Brute-force intervener: zero every neuron whose flag is set, flags (L, F). */
typedef struct {
    const uint8_t *flags;
    int F;
} brute;
static nl_status brute_zero(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    const brute *b = user;
    for (int t = 0; t < info->T; t++)
        for (int i = 0; i < b->F; i++)
            if (b->flags[info->layer * b->F + i]) x[t * b->F + i] = 0.0f;
    return NL_OK;
}

/* nl_ppl_run with flags (L, F) zeroed through the brute-force intervener. */
static nl_ppl_result brute_ppl(fixture *x, const uint8_t *flags) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    brute b = {flags, nl_model_config(x->m)->d_ff};
    nl_hooks *h = nl_forward_hooks(x->f);
    nl_hook_id id;
    cr_assert_eq(nl_hooks_add_id(h, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, brute_zero, &b, &id), NL_OK);
    nl_ppl_result p;
    cr_assert_eq(nl_ppl_run(&ctx, x->f, x->ds, 0, NULL, &p), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_hooks_remove(h, id), NL_OK);
    return p;
}

static nl_nll_sum col_sum(const nl_ppl_result *p, const nl_prune_result *r, int c) {
    return r->col_label[c] < 0 ? p->total : p->by_label[r->col_label[c]];
}

Test(prune, empty_sets_reproduce_ppl_bit_for_bit) {
    fixture x;
    fixture_open(&x);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const int layers[2] = {0, 1};
    const char *names[2] = {"code", "math"};
    nl_ability_sets s;
    sets_make(&s, 2, layers, 128, 2, names);
    nl_prune_opts o;
    nl_prune_opts_init(&o);
    cr_assert_eq(o.seeds, 3);
    nl_prune_result r;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(r.n_groups, 1);
    cr_assert_eq(nl_prune_passes(&r), 1 + 2 + 3);
    nl_prune_result_release(&r);
    cr_assert_eq(nl_prune_run(&ctx, &o, x.f, x.ds, &s, NULL, NULL, &r), NL_OK, "%s", ctx.msg); /* plans again */
    cr_assert_eq(r.run_id, -1, "no database, no run");
    cr_assert_eq(nl_forward_hooks(x.f)->n, 0, "the intervener was left on the forward pass");
    nl_ppl_result p;
    cr_assert_eq(nl_ppl_run(&ctx, x.f, x.ds, 0, NULL, &p), NL_OK);
    for (int c = 0; c < r.n_cols; c++) {
        nl_nll_sum want = col_sum(&p, &r, c);
        cr_assert(same_sum(r.base[c], want), "column %d: base %.17g vs ppl %.17g", c, r.base[c].nll, want.nll);
        for (int i = 0; i < 2; i++) cr_assert(same_sum(r.pruned[i * r.n_cols + c], want));
        for (int k = 0; k < 3; k++) cr_assert(same_sum(r.random[k * r.n_cols + c], want));
        cr_assert_eq(nl_prune_rel(r.pruned[c], r.base[c]), 0.0);
        nl_prune_stat st = nl_prune_control(&r, 1, c);
        cr_assert(st.n == 3 && st.mean == 0.0 && st.sd == 0.0 && st.min == 0.0 && st.max == 0.0);
    }
    nl_ppl_result_release(&p);
    nl_prune_result_release(&r);
    sets_free(&s);
    fixture_close(&x);
}

static int64_t count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

static double real(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "no row for %s", sql);
    double v = sqlite3_column_type(s, 0) == SQLITE_NULL ? NAN : sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* An observer that raises the Ctrl-C flag after n calls. */
static nl_status interrupt_after(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    int *n = user;
    if (--*n == 0) nl_interrupted = 1;
    return NL_OK;
}

/* Abilities code, math (counts 3, 2 per layer: one group) and prose (4, 0: its own group). */
static void three_sets(nl_ability_sets *s) {
    const int layers[2] = {0, 1};
    const char *names[3] = {"code", "math", "prose"};
    sets_make(s, 2, layers, 128, 3, names);
    for (int i = 0; i < 8; i++) s->excluded[i * 5] = 1, s->excluded[128 + i * 7] = 1;
    sets_add(s, 0, 0, 1), sets_add(s, 0, 0, 6), sets_add(s, 0, 0, 100), sets_add(s, 0, 1, 2), sets_add(s, 0, 1, 3);
    sets_add(s, 1, 0, 11), sets_add(s, 1, 0, 12), sets_add(s, 1, 0, 13), sets_add(s, 1, 1, 20), sets_add(s, 1, 1, 127);
    for (int i = 0; i < 4; i++) sets_add(s, 2, 0, 60 + i);
}

Test(prune, hand_built_sets_on_the_fixture_model) {
    fixture x;
    fixture_open(&x);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_ability_sets s;
    three_sets(&s);
    nl_prune_opts o;
    nl_prune_opts_init(&o);
    o.seeds = 2;
    nl_prune_result r;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_OK, "%s", ctx.msg);
    /* columns: code, math, prose (byte order), then all; rows: the run's order */
    cr_assert_eq(r.n_cols, 4);
    cr_assert_str_eq(nl_prune_col_name(&r, x.ds, 0), "code");
    cr_assert_str_eq(nl_prune_col_name(&r, x.ds, 1), "math");
    cr_assert_str_eq(nl_prune_col_name(&r, x.ds, 2), "prose");
    cr_assert_str_eq(nl_prune_col_name(&r, x.ds, 3), "");
    cr_assert(r.diag[0] == 0 && r.diag[1] == 1 && r.diag[2] == 2);
    cr_assert(r.n_groups == 2 && r.group[0] == 0 && r.group[1] == 0 && r.group[2] == 1);
    cr_assert(r.neurons[0] == 5 && r.neurons[1] == 5 && r.neurons[2] == 4);
    cr_assert_eq(nl_prune_passes(&r), 1 + 3 + 2 * 2);

    nl_results *db;
    cr_assert_eq(nl_results_open(&ctx, x.db, 0, &db), NL_OK, "%s", ctx.msg);
    nl_prune_result_release(&r);
    o.model = FIXTURE;
    cr_assert_eq(nl_prune_run(&ctx, &o, x.f, x.ds, &s, db, NULL, &r), NL_OK, "%s", ctx.msg);
    const int64_t id1 = r.run_id;
    cr_assert_gt(id1, 0);
    {
        char q[1024];
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM runs WHERE id = %lld AND kind = 'prune' AND model = '%s' AND dataset = '%s' AND source = "
                 "'acts.h5' AND status = 'complete' AND message IS NULL AND params = '{\"scores_run\":7,\"method\":\"ap\","
                 "\"symmetric\":false,\"top\":0.05,\"scope\":\"layer\",\"seeds\":2,\"abilities\":[\"code\",\"math\","
                 "\"prose\"],\"ctx\":128,\"stride\":64,\"batch\":16,\"eval\":\"all\",\"eval_docs\":8}'",
                 (long long)id1, realpath(FIXTURE, (char[4096]){0}), x.data); /* runs store canonical paths */
        cr_assert_eq(count(nl_results_db(db), q), 1, "the run row: %s", q);
    }
    cr_assert_eq(nl_forward_hooks(x.f)->n, 0);
    cr_assert(r.base_done && r.pruned_done[0] && r.pruned_done[1] && r.pruned_done[2]);
    for (int i = 0; i < 4; i++) cr_assert(r.random_done[i]);

    /* every pass equals the brute-force intervener, bit for bit */
    const int C = r.n_cols;
    uint8_t flags[2 * 128];
    for (int a = 0; a < 3; a++) {
        memcpy(flags, s.member + a * 2 * 128, sizeof flags);
        nl_ppl_result p = brute_ppl(&x, flags);
        for (int c = 0; c < C; c++) cr_assert(same_sum(r.pruned[a * C + c], col_sum(&p, &r, c)), "ability %d column %d", a, c);
        nl_ppl_result_release(&p);
    }
    for (int g = 0; g < 2; g++)
        for (int sd = 0; sd < 2; sd++) {
            const int *counts = s.count + (g == 0 ? 0 : 2 * 2);
            for (int l = 0; l < 2; l++)
                cr_assert_eq(nl_prune_random_layer((uint64_t)sd, l, 128, s.excluded + l * 128, counts[l], flags + l * 128),
                             counts[l]);
            nl_ppl_result p = brute_ppl(&x, flags);
            for (int c = 0; c < C; c++)
                cr_assert(same_sum(r.random[(g * 2 + sd) * C + c], col_sum(&p, &r, c)), "group %d seed %d column %d", g, sd, c);
            nl_ppl_result_release(&p);
        }
    /* pruning changes the loss (random weights: either way), seeds differ */
    for (int a = 0; a < 3; a++) cr_assert(!same_sum(r.pruned[a * C + 3], r.base[3]), "ability %d changed nothing", a);
    cr_assert(!same_sum(r.random[0 * C + 3], r.random[1 * C + 3]), "seeds 0 and 1 gave the same perplexity");

    /* the tables */
    sqlite3 *h = nl_results_db(db);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect"), 4 + 3 * 4 + 3 * 2 * 4);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect WHERE pruned = '' AND control = 'none' AND seed = -1"
                          " AND neurons = 0 AND rel_change = 0"), 4, "base rows: rel_change exactly 0");
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect WHERE control = 'ability' AND seed = -1"), 12);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect WHERE control = 'random' AND seed IN (0, 1)"), 24);
    cr_assert_eq(count(h, "SELECT sum(neurons) FROM prune_effect WHERE control <> 'none' AND label = ''"), 3 * (5 + 5 + 4));
    cr_assert_eq(count(h, "SELECT sum(tokens) FROM prune_effect WHERE label <> '' AND pruned = 'math' AND control = 'ability'"),
                 6 * 40);
    cr_assert_eq(count(h, "SELECT tokens FROM prune_effect WHERE label = '' AND pruned = ''"), 8 * 40);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect WHERE abs(ppl - exp(nll)) > 1e-9 * ppl"), 0);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect e JOIN prune_effect b ON b.run_id = e.run_id AND b.pruned = ''"
                          " AND b.label = e.label WHERE abs(e.rel_change - (e.ppl - b.ppl) / b.ppl) > 1e-12"), 0);
    /* code and math share their random passes: identical random rows */
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect a JOIN prune_effect b ON a.seed = b.seed AND a.label = b.label"
                          " WHERE a.pruned = 'code' AND b.pruned = 'math' AND a.control = 'random' AND b.control = 'random'"
                          " AND a.nll = b.nll"), 2 * 4);
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_control WHERE seeds = 2"), 3 * 4);
    double rel[2];
    for (int sd = 0; sd < 2; sd++) rel[sd] = nl_prune_rel(r.random[(2 + sd) * C + 1], r.base[1]);
    const double mean = (rel[0] + rel[1]) / 2, sdv = fabs(rel[0] - rel[1]) / sqrt(2.0);
    cr_assert_lt(fabs(real(h, "SELECT mean FROM prune_control WHERE pruned = 'prose' AND label = 'math'") - mean), 1e-15);
    cr_assert_lt(fabs(real(h, "SELECT sd FROM prune_control WHERE pruned = 'prose' AND label = 'math'") - sdv), 1e-15);
    cr_assert_eq(real(h, "SELECT min FROM prune_control WHERE pruned = 'prose' AND label = 'math'"), fmin(rel[0], rel[1]));
    cr_assert_eq(real(h, "SELECT max FROM prune_control WHERE pruned = 'prose' AND label = 'math'"), fmax(rel[0], rel[1]));
    nl_prune_stat st = nl_prune_control(&r, 2, 1);
    cr_assert(st.n == 2 && fabs(st.mean - mean) < 1e-15 && fabs(st.sd - sdv) < 1e-15);
    nl_prune_result_release(&r);

    /* Interrupted inside the fourth pass (base, code, random 0 done): those rows stay. */
    int left = 3 * 8 * 3 * 2 + 1; /* 3 passes × 8 docs × 3 chunks (41 tokens / 16) × 2 layers, then 1 more */
    nl_hook_id obs;
    nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, interrupt_after, &left, &obs);
    nl_status rc = nl_prune_run(&ctx, &o, x.f, x.ds, &s, db, NULL, &r);
    nl_interrupted = 0;
    cr_assert_eq(rc, NL_EINTR, "%s", ctx.msg);
    const int64_t id = r.run_id;
    cr_assert_eq(id, id1 + 1);
    cr_assert(r.base_done && r.pruned_done[0] && !r.pruned_done[1] && r.random_done[0] && !r.random_done[1]);
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM prune_effect WHERE run_id = %lld", (long long)id);
    cr_assert_eq(count(h, q), 4 + 4 + 2 * 4, "base, code's pass and seed 0 for code and math");
    snprintf(q, sizeof q, "SELECT count(*) FROM prune_control WHERE run_id = %lld", (long long)id);
    cr_assert_eq(count(h, q), 0, "no control rows before the last seed");
    cr_assert_eq(count(h, "SELECT count(*) FROM prune_effect WHERE run_id = 1"), 40, "the first run's rows are untouched");
    snprintf(q, sizeof q, "SELECT count(*) FROM runs WHERE id = %lld AND status = 'interrupted' AND message = 'interrupted by the user'",
             (long long)id);
    cr_assert_eq(count(h, q), 1, "the run ends 'interrupted' with the default message");
    cr_assert_eq(nl_forward_hooks(x.f)->n, 1, "only the test's observer is left");
    cr_assert_eq(nl_hooks_remove(nl_forward_hooks(x.f), obs), NL_OK);
    nl_prune_result_release(&r);
    nl_results_close(db);
    sets_free(&s);
    fixture_close(&x);
}

Test(prune, plan_errors_are_one_line) {
    fixture x;
    fixture_open(&x);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_ability_sets s;
    three_sets(&s);
    nl_prune_opts o;
    nl_prune_opts_init(&o);
    nl_prune_result r;
    const char *unknown[2] = {"math", "poetry"}, *twice[2] = {"math", "math"}, *sub[1] = {"prose"};
    o.abilities = unknown, o.n_abilities = 2;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "scores run 7 has no ability 'poetry' (its abilities: code, math, prose)");
    nl_prune_result_release(&r);
    o.abilities = twice;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "ability 'math' is asked for twice");
    nl_prune_result_release(&r);
    o.abilities = sub, o.n_abilities = 1, o.seeds = 0;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "the random control needs at least one seed");
    nl_prune_result_release(&r);
    o.seeds = 1;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_OK, "%s", ctx.msg);
    cr_assert(r.n_rows == 1 && r.ability[0] == 2 && r.diag[0] == 2 && r.n_groups == 1 && r.neurons[0] == 4);
    nl_prune_result_release(&r);
    /* an ability of the run without documents in the data */
    free(s.abilities[2]);
    s.abilities[2] = strdup("zoology");
    o.abilities = NULL;
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_EINVAL);
    char want[512];
    snprintf(want, sizeof want, "'%s' has no documents labelled 'zoology' (an ability of scores run 7)", x.data);
    cr_assert_str_eq(ctx.msg, want);
    nl_prune_result_release(&r);
    /* sets from a model of another shape: refused by the run */
    nl_prune_opts_init(&o);
    o.abilities = sub, o.n_abilities = 1;
    free(s.abilities[2]);
    s.abilities[2] = strdup("prose");
    cr_assert_eq(nl_prune_plan(&ctx, &s, x.ds, &o, &r), NL_OK);
    nl_prune_result_release(&r);
    s.layers[1] = 2;
    cr_assert_eq(nl_prune_run(&ctx, &o, x.f, x.ds, &s, NULL, NULL, &r), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "scores run 7 has layer 2, the model 2 layers");
    nl_prune_result_release(&r);
    sets_free(&s);
    fixture_close(&x);
}

/* ---- stories260K ------------------------------------------------------------------------ */

Test(prune, stories260k_empty_sets_are_ppl_and_random_sets_hurt) {
    nl_need_shared();
    char dir[] = "/tmp/nl_prune_s_XXXXXX", data[256];
    cr_assert(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    /* tokens.jsonl with labels a, b, c by document index mod 3 */
    size_t n;
    char *text = nl_read_all(STORIES "/tokens.jsonl", &n);
    cr_assert(text);
    FILE *fp = fopen(data, "w");
    int d = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), d++) {
        cr_assert_eq(line[0], '{');
        fprintf(fp, "{\"label\": \"%c\", %s\n", 'a' + d % 3, line + 1);
    }
    fclose(fp);
    free(text);
    cr_assert_eq(d, 8);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, data, NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 512, 512, &f), NL_OK);
    const int layers[5] = {0, 1, 2, 3, 4};
    const char *names[3] = {"a", "b", "c"};
    nl_ability_sets s;
    sets_make(&s, 5, layers, 172, 3, names);
    /* a: nothing; b: 9 neurons in each layer */
    for (int l = 0; l < 5; l++)
        for (int i = 0; i < 9; i++) sets_add(&s, 1, l, (i * 19 + l) % 172);
    nl_prune_opts o;
    nl_prune_opts_init(&o);
    o.seeds = 2;
    nl_prune_result r;
    cr_assert_eq(nl_prune_plan(&ctx, &s, ds, &o, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(r.n_groups, 2);
    nl_prune_result_release(&r);
    cr_assert_eq(nl_prune_run(&ctx, &o, f, ds, &s, NULL, NULL, &r), NL_OK, "%s", ctx.msg);
    nl_ppl_result p;
    cr_assert_eq(nl_ppl_run(&ctx, f, ds, 0, NULL, &p), NL_OK);
    cr_assert_eq(p.total.n, 1525);
    const int C = r.n_cols;
    for (int c = 0; c < C; c++) {
        nl_nll_sum want = col_sum(&p, &r, c);
        cr_assert(same_sum(r.base[c], want) && same_sum(r.pruned[0 * C + c], want) && same_sum(r.random[0 * C + c], want) &&
                      same_sum(r.random[1 * C + c], want) && same_sum(r.pruned[2 * C + c], want),
                  "column %d: an empty set changed the perplexity", c);
    }
    /* 45 of 860 neurons zeroed: perplexity rises for the random sets of both seeds */
    fprintf(stderr, "prune stories260K: base ppl %.4f, b's set %+.3f%%\n", nl_nll_ppl(r.base[3]),
            100 * nl_prune_rel(r.pruned[1 * C + 3], r.base[3]));
    for (int sd = 0; sd < 2; sd++) {
        const double rel = nl_prune_rel(r.random[(2 + sd) * C + 3], r.base[3]);
        fprintf(stderr, "prune stories260K: 9 random neurons per layer zeroed, seed %d: ppl %+.3f%%\n", sd, 100 * rel);
        cr_assert(rel > 0, "seed %d: relative change %g", sd, rel);
    }
    nl_ppl_result_release(&p);
    nl_prune_result_release(&r);
    sets_free(&s);
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    unlink(data);
    rmdir(dir);
}

/* ---- user sets and the held-out documents ------------------------------------------------ */

static void write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    cr_assert(fp);
    fputs(text, fp);
    fclose(fp);
}

Test(prune, neurons_file_csv_json_and_one_line_errors) {
    char dir[] = "/tmp/nl_prune_nXXXXXX";
    cr_assert(mkdtemp(dir));
    char csv[128], js[128], msg[640];
    snprintf(csv, sizeof csv, "%s/n.csv", dir);
    snprintf(js, sizeof js, "%s/n.json", dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_ability_sets s, t;
    char *p = NULL, *q = NULL;
    write_file(csv, "layer, neuron ,set\r\n2,5,b\n0,1,a\n\n2,5,b\n0,3,b\n");
    cr_assert_eq(nl_prune_sets_from_file(&ctx, csv, 3, 8, &s, &p), NL_OK, "%s", ctx.msg);
    cr_assert(s.n_abilities == 2 && !strcmp(s.abilities[0], "a") && !strcmp(s.abilities[1], "b"));
    cr_assert(s.run_id == 0 && s.n_layers == 3 && s.d_ff == 8 && s.layers[2] == 2);
    cr_assert(s.member[0 * 24 + 0 * 8 + 1] && s.member[1 * 24 + 2 * 8 + 5] && s.member[1 * 24 + 0 * 8 + 3]);
    int total = 0;
    for (int x = 0; x < 2 * 24; x++) total += s.member[x];
    cr_assert_eq(total, 3, "the repeated pair counts once");
    cr_assert(s.count[0] == 1 && s.count[3] == 1 && s.count[5] == 1 && s.count[1] == 0);
    char want[512];
    snprintf(want, sizeof want, "{\"file\":\"%s\",\"fnv1a\":\"%016llx\",\"sets\":{\"a\":1,\"b\":2},\"list\":{\"a\":[[0,1]],\"b\":[[0,3],[2,5]]}}",
             csv, (unsigned long long)nl_fnv1a(NL_FNV_INIT, "layer, neuron ,set\r\n2,5,b\n0,1,a\n\n2,5,b\n0,3,b\n", 45));
    cr_assert_str_eq(p, want);
    write_file(js, "[{\"layer\": 2, \"neuron\": 5, \"set\": \"b\"},\n {\"set\": \"a\", \"neuron\": 1, \"layer\": 0},\n"
                   " {\"layer\": 0, \"neuron\": 3, \"set\": \"\\u0062\"}]\n");
    cr_assert_eq(nl_prune_sets_from_file(&ctx, js, 3, 8, &t, &q), NL_OK, "%s", ctx.msg);
    cr_assert(t.n_abilities == 2 && !memcmp(s.member, t.member, 2 * 24) && !memcmp(s.count, t.count, 6 * sizeof(int)));
    nl_ability_sets_release(&s), nl_ability_sets_release(&t);
    free(p), free(q);
    /* no set column: one set "neurons" */
    write_file(csv, "layer,neuron\n1,7\n");
    cr_assert_eq(nl_prune_sets_from_file(&ctx, csv, 3, 8, &s, &p), NL_OK, "%s", ctx.msg);
    cr_assert(s.n_abilities == 1 && !strcmp(s.abilities[0], "neurons") && s.member[8 + 7]);
    nl_ability_sets_release(&s), free(p);
    static const struct {
        const char *text, *err;
    } bad[] = {
        {"layer,neuron\n0,1\n3,0\n", "line 3: layer 3 is outside the model's 0..2"},
        {"layer,neuron\n0,8\n", "line 2: neuron 8 is outside 0..7"},
        {"neuron,layer\n0,1\n", "line 1: the header must be layer,neuron or layer,neuron,set"},
        {"layer,neuron\n0,1,x\n", "line 2: expected 2 comma-separated fields, found 3"},
        {"layer,neuron,set\n0,1,\n", "line 2: the set name is empty"},
        {"layer,neuron\n0,1.5\n", "line 2: the neuron is not an integer"},
        {"", "line 1: the header must be layer,neuron or layer,neuron,set (the file is empty)"},
        {"[{\"layer\": 0, \"neuron\": 1}\n{\"layer\": 0}]", "line 2: expected ',' or ']' in the list"},
        {"[{\"layer\": 0,\n \"neuron\": 1, \"weight\": 2}]", "line 2: unknown key \"weight\" (layer, neuron, set)"},
        {"[\n{\"layer\": 0}]", "line 2: an object without \"neuron\""},
        {"[{\"layer\": 0, \"neuron\": 1}] x", "line 1: text after the list"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_file(csv, bad[k].text);
        p = (char *)1;
        cr_assert_neq(nl_prune_sets_from_file(&ctx, csv, 3, 8, &s, &p), NL_OK, "case %zu", k);
        snprintf(msg, sizeof msg, "'%s' %s", csv, bad[k].err);
        cr_assert_str_eq(ctx.msg, msg, "case %zu", k);
        cr_assert(p == NULL && s.member == NULL, "nothing handed out on an error");
    }
    write_file(csv, "layer,neuron\n");
    cr_assert_eq(nl_prune_sets_from_file(&ctx, csv, 3, 8, &s, &p), NL_EINVAL);
    snprintf(msg, sizeof msg, "'%s' lists no neurons", csv);
    cr_assert_str_eq(ctx.msg, msg);
    unlink(csv), unlink(js), rmdir(dir);
}

Test(prune, heldout_documents_are_the_only_ones_scored) {
    fixture x;
    fixture_open(&x);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_ability_sets s;
    three_sets(&s);
    /* the run's documents: the fixture's 8 (math, code, prose, '' in turn); 0, 1, 2 and 6 held out */
    const int8_t half[8] = {1, 1, 1, -1, 0, 0, 1, -1};
    const char *lab[4] = {"math", "code", "prose", ""};
    s.n_docs = 8;
    s.doc_half = malloc(8);
    s.doc_label = malloc(8 * sizeof(char *));
    for (int d = 0; d < 8; d++) s.doc_half[d] = half[d], s.doc_label[d] = strdup(lab[d % 4]);
    uint8_t ev[8];
    cr_assert_eq(nl_prune_heldout(&ctx, &s, x.ds, ev), NL_OK, "%s", ctx.msg);
    for (int d = 0; d < 8; d++) cr_assert_eq(ev[d], half[d] == 1);
    nl_prune_opts o;
    nl_prune_opts_init(&o);
    o.seeds = 1, o.eval_docs = ev, o.eval = "heldout";
    nl_prune_result r;
    cr_assert_eq(nl_prune_run(&ctx, &o, x.f, x.ds, &s, NULL, NULL, &r), NL_OK, "%s", ctx.msg);
    /* the same passes on a dataset of exactly those documents */
    nl_dataset sub = *x.ds;
    nl_doc docs[8];
    sub.docs = docs, sub.n_docs = 0, sub.n_tokens = 0;
    for (int d = 0; d < 8; d++)
        if (ev[d]) docs[sub.n_docs++] = x.ds->docs[d], sub.n_tokens += x.ds->docs[d].n_tokens;
    cr_assert_eq(sub.n_docs, 4);
    nl_prune_result r2;
    nl_prune_opts_init(&o);
    o.seeds = 1;
    cr_assert_eq(nl_prune_run(&ctx, &o, x.f, &sub, &s, NULL, NULL, &r2), NL_OK, "%s", ctx.msg);
    for (int c = 0; c < r.n_cols; c++) {
        cr_assert(same_sum(r.base[c], r2.base[c]), "column %d", c);
        for (int i = 0; i < r.n_rows; i++) cr_assert(same_sum(r.pruned[i * r.n_cols + c], r2.pruned[i * r.n_cols + c]));
    }
    nl_ppl_result p;
    cr_assert_eq(nl_ppl_run(&ctx, x.f, &sub, 0, NULL, &p), NL_OK);
    cr_assert(same_sum(r.base[r.n_cols - 1], p.total), "the base pass is ppl of the held-out documents");
    nl_ppl_result_release(&p);
    nl_prune_result_release(&r), nl_prune_result_release(&r2);
    /* another dataset than the run's */
    free(s.doc_label[2]);
    s.doc_label[2] = strdup("code");
    cr_assert_eq(nl_prune_heldout(&ctx, &s, x.ds, ev), NL_EINVAL);
    char want[512];
    snprintf(want, sizeof want, "'%s' is not the dataset of scores run 7: line 3 is labelled 'prose', document 2 of 'acts.h5' 'code'",
             x.data);
    cr_assert_str_eq(ctx.msg, want);
    s.n_docs = 7;
    cr_assert_eq(nl_prune_heldout(&ctx, &s, x.ds, ev), NL_EINVAL);
    snprintf(want, sizeof want, "'%s' is not the dataset of scores run 7: it has 8 documents, the run's activation file 'acts.h5' 7",
             x.data);
    cr_assert_str_eq(ctx.msg, want);
    s.n_docs = 8;
    for (int d = 0; d < 8; d++) free(s.doc_label[d]);
    free(s.doc_label), free(s.doc_half);
    sets_free(&s);
    fixture_close(&x);
}
