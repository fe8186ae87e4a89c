/* test_forward.c — the forward pass against its references:
 *   - every PyTorch fixture in tests/fixtures/hf/ (logits, FFN activations, residual stream,
 *     FFN pre-activations; max abs error ≤ 1e-4),
 *   - stories260K (../shared): perplexity within 0.05% and activations within 1e-4,
 *   - chunked runs through the KV cache equal one big batch; hooks see and change what they should.
 */
#include <jansson.h>

#include "neuronlab/forward.h"
#include "neuronlab/perplexity.h"
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
        const char *names[3] = {"ffn_act.f32", "ffn_pre.f32", "resid.f32"};
        capture *caps[3] = {&act, &pre, &res};
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[k]);
            want = nl_read_all(path, &nb);
            if (!want) continue;
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
        cr_assert_eq(nl_ppl_run(&ctx, f, ds, strides[k], NULL, &r), NL_OK, "%s", ctx.msg);
        cr_assert_eq(r.total.n, 1525, "stride %d counted %lld predictions", strides[k], (long long)r.total.n);
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
