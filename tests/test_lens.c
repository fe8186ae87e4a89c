/* test_lens.c — the logit lens, direct logit attribution and the attention-probability hook
 * against the fixture model tests/fixtures/hf/llama and the PyTorch values of
 * tests/reference/gen_lens_fixtures.py (tests/fixtures/lens): the lens at the last layer equals
 * the model's own loss (nl_ppl_run) and has KL 0 and agreement 1; every depth and label equals
 * the reference at 1e-4; attribution equals a brute-force sum over the weights and the
 * reference; attention rows sum to 1 and equal the reference, in chunks of any batch size, and
 * observing them leaves the logits bit for bit unchanged; the lens table and run row. */
#include <jansson.h>
#include <sqlite3.h>
#include <unistd.h>

#include "analyses/attribution.h"
#include "analyses/lens.h"
#include "neuronlab/perplexity.h"
#include "testutil.h"

#define MODEL "tests/fixtures/hf/llama"
#define DATA "tests/fixtures/lens/tokens.jsonl"

typedef struct {
    nl_ctx ctx;
    nl_model *m;
    nl_dataset *ds;
    nl_forward *f;
} fx;

static void fx_open(fx *x, int batch) {
    nl_ctx_init(&x->ctx);
    x->ctx.progress = 0;
    cr_assert_eq(nl_model_open(&x->ctx, MODEL, &x->m), NL_OK, "%s", x->ctx.msg);
    cr_assert_eq(nl_dataset_load(&x->ctx, DATA, NULL, nl_model_config(x->m)->vocab_size, &x->ds), NL_OK, "%s", x->ctx.msg);
    cr_assert_eq(nl_forward_create(&x->ctx, x->m, batch, 64, &x->f), NL_OK, "%s", x->ctx.msg);
}

static void fx_close(fx *x) {
    nl_forward_destroy(x->f);
    nl_dataset_destroy(x->ds);
    nl_model_close(x->m);
}

static json_t *expected(void) {
    json_error_t e;
    json_t *j = json_load_file("tests/fixtures/lens/expected.json", 0, &e);
    cr_assert(j, "cannot read expected.json: %s", e.text);
    return j;
}

Test(lens, last_layer_is_the_model_loss_kl_zero) {
    for (int batch = 3; batch <= 64; batch += 61) {
        fx x;
        fx_open(&x, batch);
        nl_lens_result r = {0};
        cr_assert_eq(nl_lens_run(&x.ctx, NULL, x.f, x.ds, NULL, NULL, &r), NL_OK, "%s", x.ctx.msg);
        nl_ppl_result p = {0};
        cr_assert_eq(nl_ppl_run(&x.ctx, x.f, x.ds, 0, NULL, &p), NL_OK, "%s", x.ctx.msg);
        const int L = r.n_layers;
        for (int li = 0; li <= r.n_labels; li++) {
            const nl_lens_sum *c = nl_lens_cell(&r, li, L - 1);
            const nl_nll_sum s = li ? p.by_label[li - 1] : p.total;
            cr_assert_eq(c->tokens, s.n);
            cr_assert_eq(c->loss, s.nll, "batch %d label row %d: lens %.17g vs ppl %.17g", batch, li, c->loss, s.nll);
            cr_assert_eq(c->kl, 0.0);
            cr_assert_eq(c->agree, (double)c->tokens);
        }
        nl_ppl_result_release(&p);
        nl_lens_result_release(&r);
        fx_close(&x);
    }
}

Test(lens, every_depth_equals_pytorch) {
    fx x;
    fx_open(&x, 5);
    nl_lens_result r = {0};
    cr_assert_eq(nl_lens_run(&x.ctx, NULL, x.f, x.ds, NULL, NULL, &r), NL_OK, "%s", x.ctx.msg);
    json_t *j = expected(), *cells = json_object_get(j, "lens");
    cr_assert_eq(json_array_size(cells), (size_t)(r.n_layers + 1) * 3); /* '', a, b */
    size_t i;
    json_t *c;
    json_array_foreach(cells, i, c) {
        const char *label = json_string_value(json_object_get(c, "label"));
        int li = label[0] ? nl_dataset_label_index(x.ds, label) + 1 : 0;
        cr_assert(li >= 0);
        const nl_lens_sum *s = nl_lens_cell(&r, li, (int)json_integer_value(json_object_get(c, "layer")));
        const double n = (double)s->tokens;
        cr_assert_eq(s->tokens, json_integer_value(json_object_get(c, "tokens")));
        cr_assert(fabs(s->loss / n - json_real_value(json_object_get(c, "loss"))) < 1e-4, "label '%s' loss %g", label, s->loss / n);
        cr_assert(fabs(s->agree / n - json_number_value(json_object_get(c, "top1_agree"))) < 1e-4, "label '%s' top1", label);
        cr_assert(fabs(s->kl / n - json_number_value(json_object_get(c, "kl"))) < 1e-4, "label '%s' kl %g", label, s->kl / n);
    }
    /* the embedding is not the model: its KL is well above 0 (the test can fail) */
    cr_assert(nl_lens_cell(&r, 0, -1)->kl > 0.1 * (double)nl_lens_cell(&r, 0, -1)->tokens);
    json_decref(j);
    nl_lens_result_release(&r);
    fx_close(&x);
}

Test(lens, table_and_run_row) {
    fx x;
    fx_open(&x, 8);
    char path[] = "/tmp/nl_test_lens_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    nl_results *db = NULL;
    cr_assert_eq(nl_results_open(&x.ctx, path, 0, &db), NL_OK, "%s", x.ctx.msg);
    nl_lens_result r = {0};
    nl_lens_opts o;
    nl_lens_opts_init(&o);
    o.batch = 8;
    cr_assert_eq(nl_lens_run(&x.ctx, &o, x.f, x.ds, db, NULL, &r), NL_OK, "%s", x.ctx.msg);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(nl_results_db(db), "SELECT count(*), sum(tokens) FROM lens WHERE run_id = ?1", -1, &q, NULL), SQLITE_OK);
    sqlite3_bind_int64(q, 1, r.run_id);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(q, 0), 9);
    cr_assert_eq(sqlite3_column_int(q, 1), 3 * 2 * 25); /* every depth: 25 predictions in '' and 25 over a + b */
    sqlite3_finalize(q);
    cr_assert_eq(sqlite3_prepare_v2(nl_results_db(db), "SELECT kind, status, params FROM runs WHERE id = ?1", -1, &q, NULL), SQLITE_OK);
    sqlite3_bind_int64(q, 1, r.run_id);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "lens");
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 1), "complete");
    cr_assert_str_eq((const char *)sqlite3_column_text(q, 2), "{\"ctx\":64,\"stride\":32,\"batch\":8,\"embedding_layer\":-1}");
    sqlite3_finalize(q);
    nl_lens_result_release(&r);
    nl_results_close(db);
    unlink(path);
    fx_close(&x);
}

/* ---- attribution ---- */

Test(attribution, equals_brute_force_and_pytorch) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, MODEL, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int V = c->vocab_size, D = c->d_model;
    float *z = malloc((size_t)V * sizeof(float));
    json_t *j = expected(), *a;
    size_t i;
    json_array_foreach(json_object_get(j, "attribution"), i, a) {
        const int l = (int)json_integer_value(json_object_get(a, "layer")), n = (int)json_integer_value(json_object_get(a, "neuron"));
        const int nw = (int)json_integer_value(json_object_get(a, "norm_weight"));
        cr_assert_eq(nl_attribution_logits(&ctx, m, l, n, nw, z), NL_OK, "%s", ctx.msg);
        /* brute force: Σ_d W_U[v, d] · (g[d]) · W_down[d, n], element by element from the views */
        nl_layer w;
        nl_head h;
        cr_assert_eq(nl_model_layer(&ctx, m, l, &w), NL_OK);
        cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                double wd = w.w_down.trans ? w.w_down.w[(size_t)n * w.w_down.ld + d] : w.w_down.w[(size_t)d * w.w_down.ld + n];
                double wu = h.lm_head.trans ? h.lm_head.w[(size_t)d * h.lm_head.ld + v] : h.lm_head.w[(size_t)v * h.lm_head.ld + d];
                s += wu * wd * (nw ? h.norm_w[d] : 1.0);
            }
            cr_assert(fabs(z[v] - s) < 1e-5, "layer %d neuron %d token %d: %g vs brute force %g", l, n, v, z[v], s);
        }
        /* the run's ranks: the reference's top 5 and bottom 5 ids in order */
        nl_attribution_opts o;
        nl_attribution_opts_init(&o);
        o.top = 5, o.norm_weight = nw;
        nl_neuron_ref ref = {l, n};
        nl_attribution_result r = {0};
        cr_assert_eq(nl_attribution_run(&ctx, &o, m, &ref, 1, NULL, &r), NL_OK, "%s", ctx.msg);
        cr_assert_eq(r.n_rows, 10);
        for (int k = 0; k < 10; k++) {
            json_t *pair = json_array_get(json_object_get(a, k < 5 ? "top" : "bottom"), (size_t)(k % 5));
            cr_assert_eq(r.rows[k].rank, k < 5 ? k + 1 : -(k - 4));
            cr_assert_eq(r.rows[k].token_id, (int)json_integer_value(json_array_get(pair, 0)), "rank %d", r.rows[k].rank);
            cr_assert(fabs(r.rows[k].logit - json_number_value(json_array_get(pair, 1))) < 1e-4);
            cr_assert_null(r.rows[k].token);
        }
        nl_attribution_result_release(&r);
    }
    /* bad neurons: one line naming the range */
    cr_assert_eq(nl_attribution_logits(&ctx, m, c->n_layers, 0, 0, z), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "layer 2 is outside the 2 layers"), "%s", ctx.msg);
    cr_assert_eq(nl_attribution_logits(&ctx, m, 0, c->d_ff, 0, z), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "neuron 128 is outside the 128 neurons of layer 0"), "%s", ctx.msg);
    json_decref(j);
    free(z);
    nl_model_close(m);
}

/* ---- attention probabilities ---- */

typedef struct {
    float *m; /* (L, H, n, n) */
    int L, H, n, calls;
} attn_cap;

static nl_status cap_attn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    attn_cap *c = user;
    cr_assert_eq(info->heads, c->H);
    cr_assert_eq(info->width, info->pos0 + info->T);
    for (int h = 0; h < c->H; h++)
        for (int t = 0; t < info->T; t++)
            memcpy(c->m + (((size_t)info->layer * c->H + h) * c->n + info->pos0 + t) * c->n,
                   x + ((size_t)h * info->T + t) * info->width, (size_t)info->width * sizeof(float));
    c->calls++;
    return NL_OK;
}

Test(attn_probs, rows_sum_to_one_and_equal_pytorch) {
    json_t *j = expected();
    const int L = (int)json_integer_value(json_object_get(j, "L")), H = (int)json_integer_value(json_object_get(j, "H"));
    const int n = (int)json_integer_value(json_object_get(j, "n0"));
    json_decref(j);
    size_t bytes = 0;
    FILE *fp = fopen("tests/fixtures/lens/attn.f32", "rb");
    cr_assert(fp);
    float *ref = malloc((size_t)L * H * n * n * sizeof(float));
    bytes = fread(ref, sizeof(float), (size_t)L * H * n * n, fp);
    fclose(fp);
    cr_assert_eq(bytes, (size_t)L * H * n * n);
    for (int batch = 1; batch <= n; batch += 3) { /* chunks: rows see the cached keys */
        fx x;
        fx_open(&x, batch);
        attn_cap c = {calloc((size_t)L * H * n * n, sizeof(float)), L, H, n, 0};
        const nl_doc *doc = &x.ds->docs[0];
        cr_assert_eq(doc->n_tokens, n);
        const int V = nl_model_config(x.m)->vocab_size;
        float *lg0 = malloc((size_t)n * V * sizeof(float)), *lg1 = malloc((size_t)n * V * sizeof(float));
        for (int pass = 0; pass < 2; pass++) {
            nl_hook_id id = 0;
            if (pass) cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_ATTN_PROBS, -1, NL_HOOK_OBSERVE, cap_attn, &c, &id), NL_OK);
            nl_forward_reset(x.f);
            for (int s = 0; s < n; s += batch) {
                int T = n - s < batch ? n - s : batch;
                cr_assert_eq(nl_forward_run(x.f, &x.ctx, doc->tokens + s, T, (pass ? lg1 : lg0) + (size_t)s * V), NL_OK, "%s", x.ctx.msg);
            }
            nl_hooks_remove(nl_forward_hooks(x.f), id);
        }
        cr_assert_eq(memcmp(lg0, lg1, (size_t)n * V * sizeof(float)), 0, "observing the probabilities changed the logits");
        cr_assert_eq(c.calls, L * ((n + batch - 1) / batch));
        for (size_t r = 0; r < (size_t)L * H * n; r++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += c.m[r * n + k];
            cr_assert(fabs(s - 1.0) < 1e-5, "row %zu sums to %g", r, s);
            for (int k = (int)(r % n) + 1; k < n; k++) cr_assert_eq(c.m[r * n + k], 0.0f, "row %zu attends to the future", r);
        }
        nl_check_close(c.m, ref, (size_t)L * H * n * n, 1e-4);
        free(lg0), free(lg1), free(c.m);
        fx_close(&x);
    }
    free(ref);
}

static nl_status knock_out_head0(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)user, (void)ctx;
    memset(x, 0, (size_t)info->T * info->width * sizeof(float)); /* head 0 of this layer mixes nothing */
    return NL_OK;
}

Test(attn_probs, intervener_edits_what_mixes_the_values) {
    fx x;
    fx_open(&x, 16);
    const nl_doc *doc = &x.ds->docs[0];
    const int V = nl_model_config(x.m)->vocab_size, n = doc->n_tokens;
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    cr_assert_eq(nl_forward_run(x.f, &x.ctx, doc->tokens, n, a), NL_OK);
    nl_hook_id id;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_ATTN_PROBS, 1, NL_HOOK_INTERVENE, knock_out_head0, NULL, &id), NL_OK);
    nl_forward_reset(x.f);
    cr_assert_eq(nl_forward_run(x.f, &x.ctx, doc->tokens, n, b), NL_OK);
    cr_assert(nl_max_abs_diff(a, b, (size_t)n * V) > 1e-4, "zeroing a head's probabilities changed nothing");
    nl_hooks_remove(nl_forward_hooks(x.f), id);
    free(a), free(b);
    fx_close(&x);
}
