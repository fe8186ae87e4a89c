/* test_forward.c — the forward pass against its references:
 *   - every PyTorch fixture in tests/fixtures/hf/ (logits, FFN activations, residual stream,
 *     FFN pre-activations; max abs error ≤ 1e-4),
 *   - stories260K (../shared): perplexity within 0.05% and activations within 1e-4,
 *   - chunked runs through the KV cache equal one big batch; hooks see and change what they should,
 *   - hook removal by handle, the FFN input hook, FFN replacement (dense fallback bit-identical,
 *     half the neurons by smaller GEMMs equal to masking the other half).
 */
#include <jansson.h>
#include <omp.h>
#include <unistd.h>

#include "neuronlab/forward.h"
#include "neuronlab/ops.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/progress.h"
#include "neuronlab/rng.h"
#include "neuronlab/walk.h"
#include "neuronlab/unigram.h"
#include "testutil.h"

#define STORIES NL_SHARED "/models/stories260K"

typedef struct {
    float *buf;  /* (L, T, width) captured rows */
    int T, width, L;
    int rows_seen; /* per layer: rows filled so far is tracked by pos0 */
} capture;

static nl_status capture_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    capture *c = user;
    cr_assert_eq(info->width, c->width);
    for (int t = 0; t < info->T; t++)
        memcpy(c->buf + ((size_t)info->layer * c->T + info->pos0 + t) * c->width, x + (size_t)t * c->width,
               c->width * sizeof(float));
    return NL_OK;
}

/* Runs one fixture folder and compares everything it stores. */
static void check_fixture(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    json_error_t jerr;
    json_t *e = json_load_file(path, 0, &jerr);
    cr_assert(e, "cannot read %s", path);
    int T = (int)json_integer_value(json_object_get(e, "T"));
    int V = (int)json_integer_value(json_object_get(e, "V"));
    int L = (int)json_integer_value(json_object_get(e, "L"));
    int F = (int)json_integer_value(json_object_get(e, "F"));
    int D = (int)json_integer_value(json_object_get(e, "D"));
    json_t *toks = json_object_get(e, "tokens");
    int32_t *ids = malloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) ids[t] = (int32_t)json_integer_value(json_array_get(toks, t));

    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    nl_status st = nl_model_open(&ctx, dir, &m);
    cr_assert_eq(st, NL_OK, "%s: %s", dir, ctx.msg);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->vocab_size, V);
    cr_assert_eq(c->n_layers, L);
    cr_assert_eq(c->d_ff, F);
    cr_assert_eq(c->d_model, D);

    /* Two runs: one batch of T, then chunks of 3 through the KV cache; both must match. */
    for (int chunk = T; chunk >= 3; chunk = chunk == T ? 3 : 0) {
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, chunk, c->max_pos < 64 ? c->max_pos : 64, &f), NL_OK, "%s", ctx.msg);
        capture act = {calloc((size_t)L * T * F, 4), T, F, L, 0}, pre = {calloc((size_t)L * T * F, 4), T, F, L, 0},
                res = {calloc((size_t)L * T * D, 4), T, D, L, 0};
        nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, capture_fn, &act);
        nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_PRE, -1, NL_HOOK_OBSERVE, capture_fn, &pre);
        nl_hooks_add(nl_forward_hooks(f), NL_HOOK_RESID, -1, NL_HOOK_OBSERVE, capture_fn, &res);
        float *logits = malloc((size_t)T * V * 4);
        for (int t0 = 0; t0 < T; t0 += chunk) {
            int n = T - t0 < chunk ? T - t0 : chunk;
            st = nl_forward_run(f, &ctx, ids + t0, n, logits + (size_t)t0 * V);
            cr_assert_eq(st, NL_OK, "%s: %s", dir, ctx.msg);
        }
        size_t nb;
        snprintf(path, sizeof path, "%s/logits.f32", dir);
        float *want = nl_read_all(path, &nb);
        cr_assert(want && nb == (size_t)T * V * 4, "%s: bad logits.f32", dir);
        nl_check_close(logits, want, (size_t)T * V, 1e-4);
        free(want);
        /* Every fixture written by gen_fixtures.py stores all three tensors; a missing file
         * is a broken fixture, not something to skip. */
        const char *names[3] = {"ffn_act.f32", "ffn_pre.f32", "resid.f32"};
        capture *caps[3] = {&act, &pre, &res};
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[k]);
            want = nl_read_all(path, &nb);
            cr_assert(want, "%s: cannot read %s", dir, names[k]);
            size_t n = (size_t)L * T * caps[k]->width;
            cr_assert_eq(nb, n * 4, "%s: %s has %zu bytes", dir, names[k], nb);
            nl_check_close(caps[k]->buf, want, n, 1e-4);
            free(want);
            free(caps[k]->buf);
        }
        free(logits);
        nl_forward_destroy(f);
    }
    free(ids);
    json_decref(e);
    nl_model_close(m);
}

/* One test per fixture folder written by tests/reference/gen_fixtures.py. */
#define NL_FIXTURE_TEST(name)                                                    \
    Test(forward, fixture_##name) {                                              \
        cr_assert(nl_path_exists("tests/fixtures/hf/" #name "/expected.json"),  \
                  "tests/fixtures/hf/" #name " is missing");                    \
        check_fixture("tests/fixtures/hf/" #name);                              \
    }
NL_FIXTURE_TEST(llama)
NL_FIXTURE_TEST(llama3_rope)
NL_FIXTURE_TEST(llama_bf16)
NL_FIXTURE_TEST(llama_relu)
NL_FIXTURE_TEST(mistral_sharded)
NL_FIXTURE_TEST(qwen2)
NL_FIXTURE_TEST(gpt2)
NL_FIXTURE_TEST(gpt_neox)
NL_FIXTURE_TEST(gpt_neox_seq)
NL_FIXTURE_TEST(phi)

Test(forward, stories260k_perplexity) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    json_t *e = json_load_file(STORIES "/expected.json", 0, NULL);
    double want = json_real_value(json_object_get(e, "ppl"));
    int npred = (int)json_integer_value(json_object_get(e, "n_predicted_tokens"));
    /* Same answer for one batch per document and for small chunks through the KV cache. */
    int batches[2] = {512, 37};
    for (int b = 0; b < 2; b++) {
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, batches[b], 512, &f), NL_OK);
        nl_ppl_result r;
        cr_assert_eq(nl_ppl_run(&ctx, f, ds, 0, NULL, &r), NL_OK, "%s", ctx.msg);
        cr_assert_eq(r.total.n, npred);
        double got = nl_nll_ppl(r.total);
        cr_assert(fabs(got - want) / want < 5e-4, "ppl %.5f vs expected %.5f", got, want);
        nl_ppl_result_release(&r);
        nl_forward_destroy(f);
    }
    json_decref(e);
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

Test(forward, stories260k_windows_count_every_prediction_once) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK);
    int strides[3] = {0, 100, 7};
    for (int k = 0; k < 3; k++) {
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, 16, 100, &f), NL_OK);
        nl_ppl_result r;
        nl_progress prog; /* counts each token once however the windows overlap: ends at 100 % */
        nl_progress_init(&prog, "ppl", ds->n_tokens, "tok", 0);
        cr_assert_eq(nl_ppl_run(&ctx, f, ds, strides[k], &prog, &r), NL_OK, "%s", ctx.msg);
        cr_assert_eq(r.total.n, 1525, "stride %d counted %lld predictions", strides[k], (long long)r.total.n);
        cr_assert_eq(prog.done, ds->n_tokens, "stride %d: progress %lld of %lld tokens", strides[k], (long long)prog.done,
                     (long long)ds->n_tokens);
        nl_progress_end(&prog);
        nl_ppl_result_release(&r);
        nl_forward_destroy(f);
    }
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

Test(forward, stories260k_activations) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK);
    const nl_doc *doc = &ds->docs[0];
    const int T = doc->n_tokens, L = 5, F = 172;
    capture act = {calloc((size_t)L * T * F, 4), T, F, L, 0};
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 64, 512, &f), NL_OK);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, capture_fn, &act);
    for (int t0 = 0; t0 < T; t0 += 64)
        cr_assert_eq(nl_forward_run(f, &ctx, doc->tokens + t0, T - t0 < 64 ? T - t0 : 64, NULL), NL_OK);
    size_t nb = 0;
    float *want = nl_read_all(STORIES "/acts_first1.f32", &nb); /* (T, L, F) */
    cr_assert_eq(nb, (size_t)T * L * F * 4);
    float *got = malloc(nb);
    for (int t = 0; t < T; t++)
        for (int l = 0; l < L; l++) memcpy(got + ((size_t)t * L + l) * F, act.buf + ((size_t)l * T + t) * F, F * 4);
    nl_check_close(got, want, (size_t)T * L * F, 1e-4);
    free(got);
    free(want);
    free(act.buf);
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

/* An intervener that zeroes every FFN activation: the FFN output must then be exactly
 * the down-projection bias (0 for Llama), and observers must see the zeros. */
static nl_status zero_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    memset(x, 0, (size_t)info->T * info->width * sizeof(float));
    return NL_OK;
}
static nl_status max_abs_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    float *mx = user;
    for (size_t i = 0; i < (size_t)info->T * info->width; i++) *mx = fabsf(x[i]) > *mx ? fabsf(x[i]) : *mx;
    return NL_OK;
}
static nl_status stop_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    return nl_errorf(ctx, NL_EINTR, "stopped by hook at layer %d", info->layer);
}

Test(forward, interveners_run_before_observers) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 8, 64, &f), NL_OK);
    float seen_act = -1, seen_out = -1;
    /* Observer registered first must still see the intervened values. */
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, 2, NL_HOOK_OBSERVE, max_abs_fn, &seen_act);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_OUT, 2, NL_HOOK_OBSERVE, max_abs_fn, &seen_out);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, 2, NL_HOOK_INTERVENE, zero_fn, NULL);
    int32_t toks[5] = {1, 306, 463, 462, 458};
    float logits_a[5 * 512], logits_b[5 * 512];
    cr_assert_eq(nl_forward_run(f, &ctx, toks, 5, logits_a), NL_OK);
    cr_assert_eq(seen_act, 0.0f);
    cr_assert_eq(seen_out, 0.0f);
    nl_forward_destroy(f);
    /* Without the intervener the logits differ. */
    cr_assert_eq(nl_forward_create(&ctx, m, 8, 64, &f), NL_OK);
    cr_assert_eq(nl_forward_run(f, &ctx, toks, 5, logits_b), NL_OK);
    cr_assert_gt(nl_max_abs_diff(logits_a, logits_b, 5 * 512), 1e-3);
    /* A hook's error stops the pass with its status and message. */
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_RESID, 3, NL_HOOK_OBSERVE, stop_fn, NULL);
    nl_forward_reset(f);
    cr_assert_eq(nl_forward_run(f, &ctx, toks, 5, NULL), NL_EINTR);
    cr_assert_str_eq(ctx.msg, "stopped by hook at layer 3");
    nl_forward_destroy(f);
    nl_model_close(m);
}

Test(forward, rejects_bad_tokens_and_overflow) {
    nl_need_shared();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 4, 6, &f), NL_OK);
    int32_t bad[2] = {1, 512};
    cr_assert_eq(nl_forward_run(f, &ctx, bad, 2, NULL), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "token id 512"), "%s", ctx.msg);
    int32_t ok[4] = {1, 2, 3, 4};
    cr_assert_eq(nl_forward_run(f, &ctx, ok, 4, NULL), NL_OK);
    cr_assert_eq(nl_forward_run(f, &ctx, ok, 4, NULL), NL_EINVAL); /* 8 > context 6 */
    cr_assert(strstr(ctx.msg, "context full"), "%s", ctx.msg);
    nl_forward_destroy(f);
    nl_model_close(m);
}

/* The unigram baseline by hand: train ids {0, 1, 1, 2} over V = 4 → p = (c + 1) / (4 + 4) =
 * 2/8, 3/8, 2/8, 1/8; scored rows count token j ≥ max(1, score_from). */
Test(perplexity, unigram_baseline_by_hand) {
    int32_t t0[] = {0, 1, 1, 2}, t1[] = {3, 1}, t2[] = {2, 0, 3};
    nl_doc docs[3] = {{t0, 4, 4, 1, "a", 1}, {t1, 2, 2, 1, "b", 2}, {t2, 3, 2, 2, "a", 3}};
    char *labels[2] = {"a", "b"};
    nl_dataset ds = {docs, 3, 9, "mem", labels, 2, 0};
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    double *lp;
    nl_dataset train = {docs, 1, 4, "mem", labels, 1, 0};
    cr_assert_eq(nl_unigram_fit(&ctx, &train, 4, &lp), NL_OK, "%s", ctx.msg);
    cr_assert_float_eq(exp(lp[1]), 3.0 / 8, 1e-12);
    cr_assert_float_eq(exp(lp[3]), 1.0 / 8, 1e-12);
    nl_ppl_result r;
    cr_assert_eq(nl_unigram_score(&ctx, &ds, lp, 4, &r), NL_OK, "%s", ctx.msg);
    /* doc0 scores 1,1,2; doc1 scores 1; doc2 (score_from 2) scores 3 */
    double want_a = -(2 * log(3.0 / 8) + log(2.0 / 8)) - log(1.0 / 8), want_b = -log(3.0 / 8);
    cr_assert_eq(r.total.n, 5);
    cr_assert_eq(r.by_label[0].n, 4);
    cr_assert_float_eq(r.by_label[0].nll, want_a, 1e-12);
    cr_assert_float_eq(r.by_label[1].nll, want_b, 1e-12);
    cr_assert_eq(r.by_doc[2].n, 1);
    nl_ppl_result_release(&r);
    free(lp);
    int32_t bad[] = {7};
    nl_doc bd = {bad, 1, 1, 1, "", 5};
    nl_dataset bds = {&bd, 1, 1, "bad.jsonl", labels, 1, 0};
    cr_assert_eq(nl_unigram_fit(&ctx, &bds, 4, &lp), NL_EINVAL);
    cr_assert_null(lp);
    cr_assert(strstr(ctx.msg, "'bad.jsonl' line 5: token id 7 is outside the vocabulary (size 4)"), "%s", ctx.msg);
}

/* ---- hook removal by handle ------------------------------------------------------------ */

static int g_order[NL_MAX_HOOKS + 8], g_norder;
static nl_status order_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    g_order[g_norder++] = (int)(intptr_t)user;
    return NL_OK;
}
/* Fires FFN_ACT at layer 0 on a dummy tensor and returns how many hooks ran (tags in g_order). */
static int fire_order(const nl_hooks *h) {
    float x[4] = {0};
    nl_hook_info info = {NL_HOOK_FFN_ACT, 0, 1, 4, 0, NULL, NULL, 0};
    g_norder = 0;
    cr_assert_eq(nl_hooks_fire(h, NULL, &info, x), NL_OK);
    return g_norder;
}

Test(hooks, remove_by_handle_keeps_order_and_refills) {
    nl_hooks h;
    nl_hooks_init(&h);
    nl_hook_id a, b, c;
    cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, (void *)1, &a), NL_OK);
    cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, 0, NL_HOOK_OBSERVE, order_fn, (void *)2, &b), NL_OK);
    cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, (void *)3, &c), NL_OK);
    cr_assert(a > 0 && b > 0 && c > 0 && a != b && b != c && a != c, "ids %d %d %d", a, b, c);
    cr_assert_eq(fire_order(&h), 3);
    cr_assert(g_order[0] == 1 && g_order[1] == 2 && g_order[2] == 3);

    /* Remove the middle one: the others still fire, in registration order. */
    cr_assert_eq(nl_hooks_remove(&h, b), NL_OK);
    cr_assert_eq(h.n, 2);
    cr_assert_eq(fire_order(&h), 2);
    cr_assert(g_order[0] == 1 && g_order[1] == 3, "order %d %d", g_order[0], g_order[1]);
    cr_assert_eq(nl_hooks_wants(&h, NL_HOOK_FFN_ACT, 5), 1);

    /* Unknown ids (removed twice, 0, never given) are NL_EINVAL and change nothing. */
    cr_assert_eq(nl_hooks_remove(&h, b), NL_EINVAL);
    cr_assert_eq(nl_hooks_remove(&h, 0), NL_EINVAL);
    cr_assert_eq(nl_hooks_remove(&h, -3), NL_EINVAL);
    cr_assert_eq(nl_hooks_remove(&h, c + 100), NL_EINVAL);
    cr_assert_eq(h.n, 2);
    cr_assert_eq(fire_order(&h), 2);

    /* Refill to capacity: the next add fails with id 0; a removal makes room again, and a new
     * hook goes after the existing ones with an id never given before. */
    nl_hook_id ids[NL_MAX_HOOKS];
    int k = 0;
    while (h.n < NL_MAX_HOOKS) {
        cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, (void *)(intptr_t)(10 + k),
                                     &ids[k]),
                     NL_OK);
        cr_assert(ids[k] != a && ids[k] != b && ids[k] != c);
        k++;
    }
    nl_hook_id full = 77;
    cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, NULL, &full), NL_EINVAL);
    cr_assert_eq(full, 0);
    cr_assert_eq(nl_hooks_add(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, NULL), NL_EINVAL);
    cr_assert_eq(nl_hooks_remove(&h, a), NL_OK);
    cr_assert_eq(nl_hooks_remove(&h, ids[0]), NL_OK);
    nl_hook_id d;
    cr_assert_eq(nl_hooks_add_id(&h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, order_fn, (void *)99, &d), NL_OK);
    cr_assert_gt(d, ids[k - 1]);
    cr_assert_eq(fire_order(&h), NL_MAX_HOOKS - 1);
    cr_assert_eq(g_order[0], 3);
    for (int i = 1; i < k; i++) cr_assert_eq(g_order[i], 10 + i);
    cr_assert_eq(g_order[k], 99);
    /* Removing everything by handle empties the registry. */
    cr_assert_eq(nl_hooks_remove(&h, c), NL_OK);
    cr_assert_eq(nl_hooks_remove(&h, d), NL_OK);
    for (int i = 1; i < k; i++) cr_assert_eq(nl_hooks_remove(&h, ids[i]), NL_OK);
    cr_assert_eq(h.n, 0);
    cr_assert_eq(fire_order(&h), 0);
    cr_assert_eq(nl_hooks_wants(&h, NL_HOOK_FFN_ACT, 0), 0);
}

Test(hooks, point_names) {
    const char *want[NL_HOOK_COUNT] = {"ffn_pre", "ffn_up", "ffn_act", "ffn_out", "attn_out", "resid", "ffn_in",
                                        "router_logits", "routing", "attn_in", "attn_pre_o", "attn_probs"};
    for (int p = 0; p < NL_HOOK_COUNT; p++) cr_assert_str_eq(nl_hook_point_name((nl_hook_point)p), want[p]);
    cr_assert_str_eq(nl_hook_point_name(NL_HOOK_COUNT), "?");
    cr_assert_str_eq(nl_hook_point_name(NL_HOOK_FFN_IN), "ffn_in");
    cr_assert_str_eq(nl_hook_point_name(NL_HOOK_ATTN_IN), "attn_in");
    cr_assert_str_eq(nl_hook_point_name(NL_HOOK_ATTN_PRE_O), "attn_pre_o");
}

/* ---- the attention hook points ----------------------------------------------------------- */

/* Phi (shared norm): ATTN_IN and FFN_IN are the same normalised input, bit for bit, on every
 * layer; widths are D and H·Dh. */
Test(hooks, attn_in_equals_ffn_in_with_a_shared_norm) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, "tests/fixtures/hf/phi", &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    cr_assert(c->shared_norm);
    const int T = 7, L = c->n_layers, D = c->d_model, Q = c->n_heads * c->head_dim;
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, T, 16, &f), NL_OK, "%s", ctx.msg);
    capture ain = {calloc((size_t)L * T * D, 4), T, D, L, 0}, fin = {calloc((size_t)L * T * D, 4), T, D, L, 0},
            pre_o = {calloc((size_t)L * T * Q, 4), T, Q, L, 0};
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ATTN_IN, -1, NL_HOOK_OBSERVE, capture_fn, &ain);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, capture_fn, &fin);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ATTN_PRE_O, -1, NL_HOOK_OBSERVE, capture_fn, &pre_o);
    int32_t toks[7] = {3, 17, 99, 4, 250, 8, 60};
    cr_assert_eq(nl_forward_run(f, &ctx, toks, T, NULL), NL_OK, "%s", ctx.msg);
    cr_assert_eq(memcmp(ain.buf, fin.buf, (size_t)L * T * D * 4), 0);
    float zero = 0;
    cr_assert_gt(nl_max_abs_diff(pre_o.buf, &zero, 1) + nl_max_abs_diff(pre_o.buf + (size_t)L * T * Q - 1, &zero, 1), 0.0);
    free(ain.buf), free(fin.buf), free(pre_o.buf);
    nl_forward_destroy(f);
    nl_model_close(m);
}

/* Llama (no q/k/v/o biases): zeroing ATTN_IN of layer 0 zeroes q, k and v, so the heads' output
 * (ATTN_PRE_O) is exactly 0; zeroing ATTN_PRE_O of layer 1 makes the attention output exactly 0;
 * both change the logits. */
Test(hooks, attention_interveners_act_on_q_k_v_and_w_o) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, "tests/fixtures/hf/llama", &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int T = 6, V = c->vocab_size;
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, T, 16, &f), NL_OK, "%s", ctx.msg);
    int32_t toks[6] = {1, 15, 200, 37, 99, 249};
    float *base = malloc((size_t)T * V * 4), *lg = malloc((size_t)T * V * 4);
    cr_assert_eq(nl_forward_run(f, &ctx, toks, T, base), NL_OK, "%s", ctx.msg);
    float seen_pre_o = -1, seen_out = -1;
    nl_hook_id a, b;
    nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_ATTN_PRE_O, 0, NL_HOOK_OBSERVE, max_abs_fn, &seen_pre_o, &a);
    nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_ATTN_IN, 0, NL_HOOK_INTERVENE, zero_fn, NULL, &b);
    nl_forward_reset(f);
    cr_assert_eq(nl_forward_run(f, &ctx, toks, T, lg), NL_OK, "%s", ctx.msg);
    cr_assert_eq(seen_pre_o, 0.0f);
    cr_assert_gt(nl_max_abs_diff(base, lg, (size_t)T * V), 1e-4);
    nl_hooks_remove(nl_forward_hooks(f), a), nl_hooks_remove(nl_forward_hooks(f), b);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ATTN_OUT, 1, NL_HOOK_OBSERVE, max_abs_fn, &seen_out);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ATTN_PRE_O, 1, NL_HOOK_INTERVENE, zero_fn, NULL);
    nl_forward_reset(f);
    cr_assert_eq(nl_forward_run(f, &ctx, toks, T, lg), NL_OK, "%s", ctx.msg);
    cr_assert_eq(seen_out, 0.0f);
    cr_assert_gt(nl_max_abs_diff(base, lg, (size_t)T * V), 1e-4);
    free(base), free(lg);
    nl_forward_destroy(f);
    nl_model_close(m);
}

/* ---- FFN input hook and FFN replacement, on the PyTorch fixtures ------------------------ */

typedef struct {
    nl_ctx ctx;
    nl_model *m;
    nl_forward *f;
    const nl_config *c;
    int32_t *ids;
    int T, V, L, D, F;
} fixture;

static void fixture_open(fixture *x, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    json_t *e = json_load_file(path, 0, NULL);
    cr_assert(e, "cannot read %s", path);
    x->T = (int)json_integer_value(json_object_get(e, "T"));
    x->ids = malloc(x->T * sizeof(int32_t));
    for (int t = 0; t < x->T; t++) x->ids[t] = (int32_t)json_integer_value(json_array_get(json_object_get(e, "tokens"), t));
    json_decref(e);
    nl_ctx_init(&x->ctx);
    cr_assert_eq(nl_model_open(&x->ctx, dir, &x->m), NL_OK, "%s", x->ctx.msg);
    x->c = nl_model_config(x->m);
    x->V = x->c->vocab_size, x->L = x->c->n_layers, x->D = x->c->d_model, x->F = x->c->d_ff;
    int P = x->c->max_pos < 64 ? x->c->max_pos : 64;
    cr_assert_eq(nl_forward_create(&x->ctx, x->m, x->T, P, &x->f), NL_OK, "%s", x->ctx.msg);
}

static void fixture_close(fixture *x) {
    nl_forward_destroy(x->f);
    nl_model_close(x->m);
    free(x->ids);
}

/* Logits (T, V) of the fixture's tokens from a fresh sequence (caller frees). */
static float *fixture_logits(fixture *x) {
    float *lg = malloc((size_t)x->T * x->V * sizeof(float));
    nl_forward_reset(x->f);
    cr_assert_eq(nl_forward_run(x->f, &x->ctx, x->ids, x->T, lg), NL_OK, "%s", x->ctx.msg);
    return lg;
}

typedef struct {
    fixture *x;
    int calls[64]; /* per layer */
    float *seen_x; /* (L, T, D) inputs the replacement received, or NULL */
} ffn_probe;

/* Checks what a replacement is given, records it, counts calls. */
static void probe_call(ffn_probe *p, const nl_ffn_call *call, const float *x) {
    const fixture *fx = p->x;
    cr_assert(call->layer >= 0 && call->layer < fx->L);
    cr_assert_eq(call->T, fx->T);
    cr_assert_eq(call->D, fx->D);
    cr_assert_eq(call->F, fx->F);
    cr_assert_eq(call->pos0, 0);
    cr_assert_eq(call->config, fx->c);
    cr_assert(call->w && call->pre && call->up && call->hooks == nl_forward_hooks(fx->f));
    cr_assert_eq(memcmp(call->tokens, fx->ids, fx->T * sizeof(int32_t)), 0);
    p->calls[call->layer]++;
    if (p->seen_x) memcpy(p->seen_x + (size_t)call->layer * fx->T * fx->D, x, (size_t)fx->T * fx->D * sizeof(float));
}

/* A replacement that falls back to the dense FFN. */
static nl_status ffn_via_dense(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    probe_call(user, call, x);
    return nl_ffn_dense(NULL, ctx, call, x, out);
}

/* A sparse FFN over the first F/2 neurons only, with GEMMs of half the size: the first F/2
 * rows of W_gate / W_up (outputs of x·Wᵀ) and the first F/2 columns of W_down (its inputs).
 * A view of the leading outputs or inputs of an nl_mat keeps its pointer and row stride in
 * both storage orders. This is the shape of MoEfication's expert FFN. */
static nl_status ffn_first_half(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    probe_call(user, call, x);
    const int K = call->F / 2, D = call->D, T = call->T;
    const nl_layer *w = call->w;
    nl_mat gate = w->w_gate, up = w->w_up, down = w->w_down;
    gate.n_out = K, up.n_out = K, down.n_in = K;
    if (call->config->ffn_gated) {
        nl_matmul(call->pre, K, x, D, T, &gate, NULL);
        nl_matmul(call->up, K, x, D, T, &up, NULL);
        for (int64_t i = 0; i < (int64_t)T * K; i++) call->pre[i] = nl_act_scalar(call->pre[i], call->config->act) * call->up[i];
    } else {
        nl_matmul(call->pre, K, x, D, T, &up, w->b_up);
        nl_activate(call->pre, (int64_t)T * K, call->config->act);
    }
    nl_matmul(out, D, call->pre, K, T, &down, w->b_down);
    return NL_OK;
}

static nl_status ffn_fails(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    return nl_errorf(ctx, NL_EUNSUPPORTED, "expert ffn of layer %d is not loaded", call->layer);
}

/* Zeroes neurons F/2 … F-1 of every token: the dense equivalent of ffn_first_half. */
static nl_status zero_second_half(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    for (int t = 0; t < info->T; t++)
        memset(x + (size_t)t * info->width + info->width / 2, 0,
               (size_t)(info->width - info->width / 2) * sizeof(float));
    return NL_OK;
}

static void check_dense_fallback(const char *dir) {
    fixture x;
    fixture_open(&x, dir);
    capture act0 = {calloc((size_t)x.L * x.T * x.F, 4), x.T, x.F, x.L, 0};
    capture act1 = {calloc((size_t)x.L * x.T * x.F, 4), x.T, x.F, x.L, 0};
    nl_hook_id hid;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, capture_fn, &act0, &hid),
                 NL_OK);
    float *base = fixture_logits(&x);
    cr_assert_eq(nl_hooks_remove(nl_forward_hooks(x.f), hid), NL_OK);

    /* Every layer replaced by a wrapper of the dense FFN: bit-identical logits, one call per
     * layer, and the dense FFN still fires the inner hook points. */
    ffn_probe p = {&x, {0}, NULL};
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, -1, ffn_via_dense, &p), NL_OK);
    for (int l = 0; l < x.L; l++) {
        void *u = NULL;
        cr_assert_eq(nl_forward_get_ffn(x.f, l, &u), ffn_via_dense);
        cr_assert_eq(u, &p);
    }
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, capture_fn, &act1, &hid),
                 NL_OK);
    float *got = fixture_logits(&x);
    cr_assert_eq(memcmp(got, base, (size_t)x.T * x.V * sizeof(float)), 0, "%s: logits differ by %g", dir,
                 nl_max_abs_diff(got, base, (size_t)x.T * x.V));
    cr_assert_eq(memcmp(act0.buf, act1.buf, (size_t)x.L * x.T * x.F * 4), 0);
    for (int l = 0; l < x.L; l++) cr_assert_eq(p.calls[l], 1, "layer %d called %d times", l, p.calls[l]);
    cr_assert_eq(nl_hooks_remove(nl_forward_hooks(x.f), hid), NL_OK);
    free(got);

    /* Restoring the dense FFN: no more calls, same logits. */
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, -1, NULL, &p), NL_OK);
    void *u = &p;
    cr_assert_null(nl_forward_get_ffn(x.f, 0, &u));
    cr_assert_null(u);
    memset(p.calls, 0, sizeof p.calls);
    got = fixture_logits(&x);
    cr_assert_eq(memcmp(got, base, (size_t)x.T * x.V * sizeof(float)), 0);
    cr_assert_eq(p.calls[0], 0);
    free(got);

    /* One layer only. */
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, x.L - 1, ffn_via_dense, &p), NL_OK);
    got = fixture_logits(&x);
    cr_assert_eq(memcmp(got, base, (size_t)x.T * x.V * sizeof(float)), 0);
    for (int l = 0; l < x.L; l++) cr_assert_eq(p.calls[l], l == x.L - 1, "layer %d called %d times", l, p.calls[l]);
    free(got);

    /* A failing replacement stops the pass with its status and message; bad layers are refused. */
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, 0, ffn_fails, NULL), NL_OK);
    nl_forward_reset(x.f);
    cr_assert_eq(nl_forward_run(x.f, &x.ctx, x.ids, x.T, NULL), NL_EUNSUPPORTED);
    cr_assert_str_eq(x.ctx.msg, "expert ffn of layer 0 is not loaded");
    cr_assert_eq(nl_forward_pos(x.f), 0);
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, x.L, ffn_via_dense, &p), NL_EINVAL);
    cr_assert(strstr(x.ctx.msg, "layer"), "%s", x.ctx.msg);
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, -2, NULL, NULL), NL_EINVAL);
    free(act0.buf);
    free(act1.buf);
    free(base);
    fixture_close(&x);
}

/* Gated (Llama), plain (GPT-2, Conv1D weights stored transposed), parallel residual (NeoX) and
 * shared norm (Phi). */
Test(forward, ffn_replacement_dense_fallback_is_bit_identical) {
    const char *dirs[] = {"tests/fixtures/hf/llama", "tests/fixtures/hf/gpt2", "tests/fixtures/hf/gpt_neox",
                          "tests/fixtures/hf/phi"};
    for (int i = 0; i < 4; i++) check_dense_fallback(dirs[i]);
}

static void check_first_half(const char *dir) {
    fixture x;
    fixture_open(&x, dir);
    float *dense = fixture_logits(&x);
    nl_hook_id mask;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(x.f), NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, zero_second_half,
                                 NULL, &mask),
                 NL_OK);
    float *masked = fixture_logits(&x);
    cr_assert_eq(nl_hooks_remove(nl_forward_hooks(x.f), mask), NL_OK);
    cr_assert_gt(nl_max_abs_diff(dense, masked, (size_t)x.T * x.V), 1e-3, "%s: masking half the neurons changed nothing",
                 dir);
    ffn_probe p = {&x, {0}, NULL};
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, -1, ffn_first_half, &p), NL_OK);
    float *sparse = fixture_logits(&x);
    for (int l = 0; l < x.L; l++) cr_assert_eq(p.calls[l], 1);
    nl_check_close(sparse, masked, (size_t)x.T * x.V, 1e-5);
    free(dense);
    free(masked);
    free(sparse);
    fixture_close(&x);
}

Test(forward, ffn_replacement_half_the_neurons_equals_masking) {
    check_first_half("tests/fixtures/hf/llama");
    check_first_half("tests/fixtures/hf/gpt2");
}

/* The FFN_IN observer sees exactly norm2(resid_{l-1} + attn_out_l) (Llama wiring), and a
 * replaced FFN is given that same buffer. */
Test(forward, ffn_in_is_the_normalised_ffn_input) {
    fixture x;
    fixture_open(&x, "tests/fixtures/hf/llama");
    cr_assert_geq(x.L, 2);
    const size_t TD = (size_t)x.T * x.D;
    capture res = {calloc((size_t)x.L * TD, 4), x.T, x.D, x.L, 0}, att = {calloc((size_t)x.L * TD, 4), x.T, x.D, x.L, 0},
            in = {calloc((size_t)x.L * TD, 4), x.T, x.D, x.L, 0};
    nl_hooks *h = nl_forward_hooks(x.f);
    nl_hooks_add(h, NL_HOOK_RESID, 0, NL_HOOK_OBSERVE, capture_fn, &res);
    nl_hooks_add(h, NL_HOOK_ATTN_OUT, 1, NL_HOOK_OBSERVE, capture_fn, &att);
    nl_hooks_add(h, NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, capture_fn, &in);
    ffn_probe p = {&x, {0}, calloc((size_t)x.L * TD, 4)};
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, -1, ffn_via_dense, &p), NL_OK);
    free(fixture_logits(&x));
    nl_layer w;
    cr_assert_eq(nl_model_layer(&x.ctx, x.m, 1, &w), NL_OK);
    float *hsum = malloc(TD * 4), *want = malloc(TD * 4);
    for (size_t i = 0; i < TD; i++) hsum[i] = res.buf[i] + att.buf[TD + i];
    nl_rmsnorm(want, hsum, w.ln2_w, x.T, x.D, x.c->norm_eps);
    cr_assert_eq(memcmp(in.buf + TD, want, TD * 4), 0, "ffn_in differs from the norm by %g",
                 nl_max_abs_diff(in.buf + TD, want, TD));
    cr_assert_eq(memcmp(in.buf, p.seen_x, (size_t)x.L * TD * 4), 0, "the replaced ffn got another input");
    free(hsum);
    free(want);
    free(res.buf);
    free(att.buf);
    free(in.buf);
    free(p.seen_x);
    fixture_close(&x);
}

/* An FFN_IN intervener that zeroes x at layer 0: observers (even registered before it) see the
 * zeros, the FFN computes on them — GPT-2's output is then act(b_in)·W_outᵀ + b_out on every
 * row — for the dense FFN and for a replacement alike. */
Test(forward, ffn_in_intervener_changes_what_the_ffn_computes) {
    fixture x;
    fixture_open(&x, "tests/fixtures/hf/gpt2");
    const size_t TD = (size_t)x.T * x.D;
    nl_hooks *h = nl_forward_hooks(x.f);
    float seen_in = -1;
    capture out = {calloc((size_t)x.L * TD, 4), x.T, x.D, x.L, 0};
    nl_hooks_add(h, NL_HOOK_FFN_IN, 0, NL_HOOK_OBSERVE, max_abs_fn, &seen_in);
    nl_hooks_add(h, NL_HOOK_FFN_OUT, 0, NL_HOOK_OBSERVE, capture_fn, &out);
    float *plain = fixture_logits(&x);
    cr_assert_gt(seen_in, 0.0f);
    nl_hooks_add(h, NL_HOOK_FFN_IN, 0, NL_HOOK_INTERVENE, zero_fn, NULL);
    seen_in = -1;
    float *zeroed = fixture_logits(&x);
    cr_assert_eq(seen_in, 0.0f);
    cr_assert_gt(nl_max_abs_diff(plain, zeroed, (size_t)x.T * x.V), 1e-3);

    nl_layer w;
    cr_assert_eq(nl_model_layer(&x.ctx, x.m, 0, &w), NL_OK);
    cr_assert(w.b_up && w.b_down, "the gpt2 fixture has FFN biases");
    float *a = malloc((size_t)x.F * 4), *row = malloc((size_t)x.D * 4);
    memcpy(a, w.b_up, (size_t)x.F * 4);
    nl_activate(a, x.F, x.c->act);
    nl_matmul_ref(row, x.D, a, x.F, 1, &w.w_down, w.b_down);
    for (int t = 0; t < x.T; t++) nl_check_close(out.buf + (size_t)t * x.D, row, x.D, 1e-5);

    ffn_probe p = {&x, {0}, calloc((size_t)x.L * TD, 4)};
    cr_assert_eq(nl_forward_set_ffn(x.f, &x.ctx, 0, ffn_via_dense, &p), NL_OK);
    memset(out.buf, 0xff, TD * 4);
    float *replaced = fixture_logits(&x);
    cr_assert_eq(p.calls[0], 1);
    for (size_t i = 0; i < TD; i++) cr_assert_eq(p.seen_x[i], 0.0f);
    for (int t = 0; t < x.T; t++) nl_check_close(out.buf + (size_t)t * x.D, row, x.D, 1e-5);
    cr_assert_eq(memcmp(replaced, zeroed, (size_t)x.T * x.V * 4), 0);
    free(a);
    free(row);
    free(plain);
    free(zeroed);
    free(replaced);
    free(out.buf);
    free(p.seen_x);
    fixture_close(&x);
}

/* A hook removed from the forward pass's registry no longer runs. */
Test(forward, removed_hook_does_not_run) {
    fixture x;
    fixture_open(&x, "tests/fixtures/hf/llama");
    float seen = -1;
    nl_hook_id id;
    nl_hooks *h = nl_forward_hooks(x.f);
    cr_assert_eq(nl_hooks_add_id(h, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, zero_fn, NULL, &id), NL_OK);
    nl_hooks_add(h, NL_HOOK_FFN_ACT, 0, NL_HOOK_OBSERVE, max_abs_fn, &seen);
    free(fixture_logits(&x));
    cr_assert_eq(seen, 0.0f);
    cr_assert_eq(nl_hooks_remove(h, id), NL_OK);
    seen = -1;
    free(fixture_logits(&x));
    cr_assert_gt(seen, 0.0f);
    fixture_close(&x);
}

/* ---- documents in parallel (nl_forward_doc_threads) ------------------------------------- */

/* Zeroes neuron 3 of every row (reads nothing but x). */
static nl_status zero_neuron_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    for (int t = 0; t < info->T; t++) x[(size_t)t * info->width + 3] = 0.0f;
    return NL_OK;
}

/* A small bf16 model (layers kept in f32) scores 9 documents, some longer than the context of
 * 16 (windows every 8), with one thread and with two forward states side by side: the same
 * losses per document. A hook turns the document-parallel path off unless declared read-only
 * (nl_forward_hooks_concurrent), when the copies run it as well. */
Test(perplexity, documents_in_parallel_equal_serial) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, "tests/fixtures/hf/llama_bf16", &m), NL_OK, "%s", ctx.msg);
    const int V = nl_model_config(m)->vocab_size;
    int32_t toks[9][40];
    nl_doc docs[9];
    char *labels[1] = {"a"};
    unsigned s = 3;
    int total = 0;
    for (int d = 0; d < 9; d++) {
        const int n = 2 + (d * 7) % 38;
        for (int i = 0; i < n; i++) s = s * 1103515245u + 12345u, toks[d][i] = (int32_t)((s >> 8) % (unsigned)V);
        docs[d] = (nl_doc){toks[d], n, n, 1, "a", d + 1};
        total += n;
    }
    nl_dataset ds = {docs, 9, total, "mem", labels, 1, 0};
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 16, 16, &f), NL_OK, "%s", ctx.msg);
    nl_ppl_result one, two;
    omp_set_num_threads(1);
    cr_assert_eq(nl_forward_doc_threads(f), 1);
    cr_assert_eq(nl_ppl_run(&ctx, f, &ds, 0, NULL, &one), NL_OK, "%s", ctx.msg);
    omp_set_num_threads(2);
    cr_assert_eq(nl_forward_doc_threads(f), 2);
    cr_assert_eq(nl_ppl_run(&ctx, f, &ds, 0, NULL, &two), NL_OK, "%s", ctx.msg);
    cr_assert_eq(one.total.n, two.total.n);
    for (int d = 0; d < 9; d++) {
        cr_assert_eq(one.by_doc[d].n, two.by_doc[d].n);
        cr_assert(fabs(one.by_doc[d].nll - two.by_doc[d].nll) <= 1e-6 * fabs(one.by_doc[d].nll), "doc %d: %.9g vs %.9g", d,
                  one.by_doc[d].nll, two.by_doc[d].nll);
    }
    cr_assert(one.total.nll > 0);
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, zero_neuron_hook, NULL);
    cr_assert_eq(nl_forward_doc_threads(f), 1);
    /* declared read-only: the copies run it too (the losses change, and equal the serial ones) */
    nl_forward_hooks_concurrent(f, 1);
    cr_assert_eq(nl_forward_doc_threads(f), 2);
    nl_ppl_result par, ser;
    cr_assert_eq(nl_ppl_run(&ctx, f, &ds, 0, NULL, &par), NL_OK, "%s", ctx.msg);
    omp_set_num_threads(1);
    cr_assert_eq(nl_ppl_run(&ctx, f, &ds, 0, NULL, &ser), NL_OK, "%s", ctx.msg);
    cr_assert(fabs(par.total.nll - one.total.nll) > 1e-6 * one.total.nll, "the hook changed nothing");
    for (int d = 0; d < 9; d++)
        cr_assert(fabs(par.by_doc[d].nll - ser.by_doc[d].nll) <= 1e-6 * fabs(ser.by_doc[d].nll), "doc %d: %.9g vs %.9g", d,
                  par.by_doc[d].nll, ser.by_doc[d].nll);
    nl_ppl_result_release(&one);
    nl_ppl_result_release(&two);
    nl_ppl_result_release(&par);
    nl_ppl_result_release(&ser);
    nl_forward_destroy(f);
    nl_model_close(m);
}

/* ---- several windows in one pass (forward.h: nl_forward_nll_windows) ------------------------ */

/* Windows of different lengths (1 … B) concatenated give each row the nll of its window alone,
 * on positions from 0 in every window (RoPE, learned positions, sliding window, q/k norms,
 * parallel residual). */
static void check_windows(const char *dir) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int B = 12, n_win = 4, lens[4] = {5, 12, 1, 9}, V = c->vocab_size;
    nl_forward *f, *fw;
    cr_assert_eq(nl_forward_create(&ctx, m, B, c->max_pos < 24 ? c->max_pos : 24, &f), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_forward_create_windows(&ctx, f, 3, &fw), NL_OK, "%s", ctx.msg);
    int32_t tok[27], tg[27];
    double want[27], got[27];
    nl_rng r;
    nl_rng_derive(&r, 7, 0, 0);
    for (int t = 0; t < 27; t++) tok[t] = (int32_t)nl_rng_below(&r, (uint64_t)V), tg[t] = t % 4 == 3 ? -1 : (int32_t)nl_rng_below(&r, (uint64_t)V);
    for (int w = 0, off = 0; w < n_win; off += lens[w++]) {
        nl_forward_reset(f);
        cr_assert_eq(nl_forward_nll(f, &ctx, tok + off, tg + off, lens[w], want + off), NL_OK, "%s", ctx.msg);
    }
    cr_assert_eq(nl_forward_nll_windows(fw, &ctx, tok, tg, lens, n_win, got), NL_OK, "%s", ctx.msg);
    for (int t = 0; t < 27; t++) {
        if (tg[t] < 0) cr_assert_eq(got[t], 0.0, "%s row %d", dir, t);
        cr_assert(fabs(got[t] - want[t]) <= 1e-5 * (1 + fabs(want[t])), "%s row %d: windows %.9g, alone %.9g", dir, t, got[t],
                  want[t]);
    }
    /* the same state again gives the same rows (it starts every pass from position 0) */
    double again[27];
    cr_assert_eq(nl_forward_nll_windows(fw, &ctx, tok, tg, lens, n_win, again), NL_OK, "%s", ctx.msg);
    cr_assert_eq(memcmp(again, got, sizeof got), 0, "%s: a second pass differs", dir);
    /* a window longer than the batch, more rows than the state holds, the other scoring calls */
    int long_win[2] = {13, 2}, many[4] = {12, 12, 12, 1};
    cr_assert_eq(nl_forward_nll_windows(fw, &ctx, tok, tg, long_win, 2, got), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "window 0 has 13 tokens, outside 1..12"), "%s", ctx.msg);
    int32_t tok37[37] = {0}, tg37[37];
    for (int t = 0; t < 37; t++) tg37[t] = -1;
    double nll37[37];
    cr_assert_eq(nl_forward_nll_windows(fw, &ctx, tok37, tg37, many, 4, nll37), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "batch of 37 tokens"), "%s", ctx.msg);
    cr_assert_eq(nl_forward_nll(fw, &ctx, tok, tg, 4, got), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "nl_forward_nll_windows only"), "%s", ctx.msg);
    cr_assert_eq(nl_forward_nll_windows(f, &ctx, tok, tg, lens, n_win, got), NL_EINVAL);
    nl_forward_destroy(fw);
    nl_forward_destroy(f);
    nl_model_close(m);
}

Test(forward, windows_score_each_window_as_alone) {
    const char *dirs[] = {"tests/fixtures/hf/llama", "tests/fixtures/hf/gpt2", "tests/fixtures/hf/mistral_sharded",
                          "tests/fixtures/hf/qwen3", "tests/fixtures/hf/phi", "tests/fixtures/hf/gpt_neox",
                          "tests/fixtures/hf/llama_bf16"};
    for (int i = 0; i < 7; i++) check_windows(dirs[i]);
}

/* nl_ppl_run on two threads (windows mode: bundles of documents, several windows per pass)
 * gives every document the serial loop's sums, with overlapping windows (stride 7), one-token
 * documents and documents shorter than a window; the progress ends at 100 %. Within 1e-7
 * relative, not bit for bit: this fixture's matrices are so small that OpenBLAS takes its
 * small-matrix kernels, whose rounding depends on the row count (measured 5e-9). On the zoo and
 * the bench 100M models the ppl JSON is byte-identical to one window per pass. */
Test(perplexity, windows_mode_equals_the_serial_loop) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, "tests/fixtures/hf/llama", &m), NL_OK, "%s", ctx.msg);
    const int V = nl_model_config(m)->vocab_size;
    char path[] = "/tmp/nl_windows_XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    cr_assert_geq(fd, 0);
    FILE *fp = fdopen(fd, "w");
    nl_rng r;
    nl_rng_derive(&r, 11, 0, 0);
    for (int d = 0; d < 40; d++) {
        const int n = d % 9 == 0 ? 1 : 1 + (int)nl_rng_below(&r, 70);
        fprintf(fp, "{\"tokens\": [");
        for (int t = 0; t < n; t++) fprintf(fp, "%s%d", t ? "," : "", (int)nl_rng_below(&r, (uint64_t)V));
        fprintf(fp, "], \"label\": \"%s\"}\n", d % 3 ? "a" : "b");
    }
    fclose(fp);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, path, NULL, V, &ds), NL_OK, "%s", ctx.msg);
    const int strides[2] = {0, 7};
    for (int k = 0; k < 2; k++) {
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, 16, 16, &f), NL_OK, "%s", ctx.msg);
        nl_ppl_result one, two;
        omp_set_num_threads(1);
        cr_assert_eq(nl_ppl_run(&ctx, f, ds, strides[k], NULL, &one), NL_OK, "%s", ctx.msg);
        omp_set_num_threads(2);
        cr_assert(nl_forward_doc_threads(f) == 2 && nl_forward_windows_fit(f, 2, 2), "windows mode is not chosen");
        nl_progress prog;
        nl_progress_init(&prog, "ppl", ds->n_tokens, "tok", 0);
        cr_assert_eq(nl_ppl_run(&ctx, f, ds, strides[k], &prog, &two), NL_OK, "%s", ctx.msg);
        cr_assert_eq(prog.done, ds->n_tokens, "stride %d: progress %lld of %lld", strides[k], (long long)prog.done,
                     (long long)ds->n_tokens);
        nl_progress_end(&prog);
        for (int d = 0; d < ds->n_docs; d++) {
            cr_assert_eq(two.by_doc[d].n, one.by_doc[d].n, "stride %d doc %d", strides[k], d);
            cr_assert(fabs(two.by_doc[d].nll - one.by_doc[d].nll) <= 1e-7 * fabs(one.by_doc[d].nll),
                      "stride %d doc %d: %.17g against the serial %.17g", strides[k], d, two.by_doc[d].nll, one.by_doc[d].nll);
        }
        cr_assert_eq(two.total.n, one.total.n);
        nl_ppl_result_release(&one);
        nl_ppl_result_release(&two);
        nl_forward_destroy(f);
    }
    nl_dataset_destroy(ds);
    unlink(path);
    nl_model_close(m);
}
