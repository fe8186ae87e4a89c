/* test_capi.c — the C API of capi.h on the PyTorch fixture tests/fixtures/hf/llama: logits and
 * recorded ffn_act equal the fixture's reference values, a hook zeroing a neuron equals
 * nl_api_prune, hooks run in order and see what they should, and every argument a caller can get
 * wrong is NL_EINVAL with a message (never an abort). */
#include "neuronlab/capi.h"

#include "neuronlab/common.h"
#include "testutil.h"

#define FIX "tests/fixtures/hf/llama"
static const int32_t toks[11] = {1, 15, 200, 37, 99, 249, 3, 128, 77, 5, 42};
enum { T = 11, V = 256, L = 2, F = 128, D = 64 };

static nl_api *open_fixture(void) {
    nl_api *h = NULL;
    int st = nl_api_open(FIX, NULL, NULL, 0, 0, &h);
    cr_assert_eq(st, NL_OK, "%s", nl_api_errmsg(h));
    nl_api_set_threads(h, 1);
    return h;
}

Test(capi, logits_and_record_equal_the_reference) {
    nl_api *h = open_fixture();
    cr_assert_eq(nl_api_dim(h, "n_layers"), L);
    cr_assert_eq(nl_api_dim(h, "d_ff"), F);
    cr_assert_eq(nl_api_dim(h, "vocab_size"), V);
    cr_assert_str_eq(nl_api_str(h, "arch"), "llama");
    size_t n;
    float *ref = nl_read_all(FIX "/logits.f32", &n), *act = nl_read_all(FIX "/ffn_act.f32", &n);
    float logits[T * V], rec[L * T * F];
    cr_assert_eq(nl_api_run(h, toks, T, logits), NL_OK, "%s", nl_api_errmsg(h));
    nl_check_close(logits, ref, T * V, 1e-4);
    const int layers[2] = {0, 1};
    cr_assert_eq(nl_api_record(h, "ffn_act", toks, T, layers, 2, rec), NL_OK, "%s", nl_api_errmsg(h));
    nl_check_close(rec, act, L * T * F, 1e-4);
    double nll[T - 1];
    cr_assert_eq(nl_api_nll(h, toks, T, nll), NL_OK);
    for (int t = 0; t < T - 1; t++) { /* -log softmax(logits[t])[toks[t+1]] */
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, logits[t * V + v]);
        for (int v = 0; v < V; v++) s += exp(logits[t * V + v] - mx);
        cr_assert_float_eq(nll[t], mx + log(s) - logits[t * V + toks[t + 1]], 1e-4);
    }
    free(ref);
    free(act);
    nl_api_close(h);
}

typedef struct {
    int calls, last_layer, order[8];
} trace;

static int zero_7(void *user, const char *point, int layer, int pos0, int T_, int width, float *x) {
    trace *tr = user;
    if (tr) tr->order[tr->calls++ % 8] = 1;
    for (int t = 0; t < T_; t++) x[t * width + 7] = 0;
    return 0;
}
static int check_zero(void *user, const char *point, int layer, int pos0, int T_, int width, float *x) {
    trace *tr = user;
    tr->order[tr->calls++ % 8] = 2;
    tr->last_layer = layer;
    for (int t = 0; t < T_; t++)
        if (x[t * width + 7] != 0) return 5; /* the earlier hook (or the prune set) must have zeroed it */
    return 0;
}

Test(capi, hook_zeroing_equals_prune_and_hooks_run_in_order) {
    nl_api *h = open_fixture();
    float a[T * V], b[T * V], base[T * V];
    cr_assert_eq(nl_api_run(h, toks, T, base), NL_OK);
    trace tr = {0};
    int id1, id2;
    cr_assert_eq(nl_api_hook_add(h, "ffn_act", 1, zero_7, &tr, &id1), NL_OK);
    cr_assert_eq(nl_api_hook_add(h, "ffn_act", 1, check_zero, &tr, &id2), NL_OK);
    cr_assert_eq(nl_api_run(h, toks, T, a), NL_OK, "%s", nl_api_errmsg(h));
    cr_assert_eq(tr.calls, 2);
    cr_assert(tr.order[0] == 1 && tr.order[1] == 2 && tr.last_layer == 1);
    cr_assert_eq(nl_api_hook_remove(h, id1), NL_OK);
    cr_assert_eq(nl_api_hook_remove(h, id1), NL_EINVAL);
    /* check_zero alone fails: the stop is an error with a message */
    cr_assert_eq(nl_api_run(h, toks, T, b), NL_EINVAL);
    cr_assert(strstr(nl_api_errmsg(h), "hook on 'ffn_act' layer 1 stopped the run (it returned 5)"), "%s", nl_api_errmsg(h));
    const int32_t pl[1] = {1}, pn[1] = {7};
    cr_assert_eq(nl_api_prune(h, pl, pn, 1), NL_OK);
    cr_assert_eq(nl_api_run(h, toks, T, b), NL_OK, "%s", nl_api_errmsg(h)); /* the prune set runs before the hooks */
    cr_assert(memcmp(a, b, sizeof a) == 0);
    cr_assert(memcmp(a, base, sizeof a) != 0);
    nl_api_hook_clear(h);
    cr_assert_eq(nl_api_prune(h, NULL, NULL, 0), NL_OK);
    cr_assert_eq(nl_api_run(h, toks, T, b), NL_OK);
    cr_assert(memcmp(b, base, sizeof b) == 0);
    nl_api_close(h);
}

Test(capi, weights) {
    nl_api *h = open_fixture();
    int64_t r, c;
    cr_assert_eq(nl_api_weight_shape(h, "w_out", 1, &r, &c), NL_OK);
    cr_assert(r == D && c == F);
    cr_assert_eq(nl_api_weight_shape(h, "lm_head", -1, &r, &c), NL_OK);
    cr_assert(r == V && c == D);
    static float w[V * D];
    cr_assert_eq(nl_api_weight(h, "w_out", 0, w, 10), NL_EINVAL);
    cr_assert_eq(nl_api_weight(h, "w_out", 0, w, sizeof w / sizeof w[0]), NL_OK);
    nl_api_close(h);
}

Test(capi, bad_arguments_are_errors_with_messages) {
    nl_api *h = NULL;
    cr_assert_neq(nl_api_open("tests/fixtures/no/such/model", NULL, NULL, 0, 0, &h), NL_OK);
    cr_assert(strstr(nl_api_errmsg(h), "tests/fixtures/no/such/model"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_run(h, toks, T, NULL), NL_EINVAL); /* a handle that did not open */
    nl_api_close(h);
    cr_assert_str_eq(nl_api_errmsg(NULL), "out of memory");
    h = open_fixture();
    int id;
    cr_assert_eq(nl_api_hook_add(h, "ffn_actt", 0, zero_7, NULL, &id), NL_EINVAL);
    cr_assert(strstr(nl_api_errmsg(h), "unknown hook point 'ffn_actt' (known: ffn_pre,"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_hook_add(h, "routing", 0, zero_7, NULL, &id), NL_EINVAL);
    cr_assert_eq(nl_api_hook_add(h, "resid", 2, zero_7, NULL, &id), NL_EINVAL);
    cr_assert(strstr(nl_api_errmsg(h), "layer 2 is outside the model's 0..1"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_hook_add(h, "router_logits", -1, zero_7, NULL, &id), NL_EINVAL);
    cr_assert_eq(nl_api_point_width(h, "attn_pre_o", 0), 64);
    const int32_t bad[2] = {1, 256};
    cr_assert_eq(nl_api_run(h, bad, 2, NULL), NL_EINVAL);
    cr_assert(strstr(nl_api_errmsg(h), "token 256 (position 1) is outside the vocabulary 0..255"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_run(h, toks, 0, NULL), NL_EINVAL);
    int32_t *many = calloc(100000, sizeof *many);
    cr_assert_eq(nl_api_run(h, many, 100000, NULL), NL_EINVAL);
    free(many);
    const int32_t pl[1] = {0}, pn[1] = {F};
    cr_assert_eq(nl_api_prune(h, pl, pn, 1), NL_EINVAL);
    cr_assert(strstr(nl_api_errmsg(h), "neuron 128 is outside 0..127"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_tokenize(h, "hi", 2, 1, NULL, 0, &id), NL_EINVAL); /* the fixture has no tokenizer */
    cr_assert(strstr(nl_api_errmsg(h), "has no tokenizer"), "%s", nl_api_errmsg(h));
    nl_api_dataset *ds = NULL;
    cr_assert_neq(nl_api_dataset_open(h, "tests/fixtures/no.jsonl", &ds), NL_OK);
    cr_assert(ds == NULL && strstr(nl_api_errmsg(h), "no.jsonl"), "%s", nl_api_errmsg(h));
    cr_assert_eq(nl_api_weight_shape(h, "w_q", 0, NULL, NULL), NL_EINVAL);
    nl_api_close(h);
}
