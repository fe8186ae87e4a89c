/* test_train_moe.c — the trainer's mixture-of-experts models (train_model.h) against PyTorch:
 *   - cross-entropy, load-balancing loss, the chosen experts of every layer and token, and the
 *     gradient of every parameter tensor against float64 autograd of the Hugging Face equations
 *     (tests/fixtures/train_moe, written by tests/reference/gen_train_moe.py): Mixtral-style top-2
 *     renormalised, Qwen2-MoE-style with a sigmoid-gated shared expert (with and without
 *     renormalisation, top-2 and top-3), with and without the auxiliary loss:
 *     max|g − g_ref| / max|g_ref| ≤ 1e-5 per tensor (the figures are printed);
 *   - the auxiliary loss changes the router's gradient and nothing of the experts';
 *   - one expert with top-1 is the dense model: same loss and gradients as the dense path.
 */
#include <jansson.h>

#include "neuronlab/train_model.h"
#include "testutil.h"

#define FX "tests/fixtures/train_moe"
#define TOL 1e-5

typedef struct {
    json_t *meta;
    nl_train_dims dims; /* shared dims; moe fields per case */
    int B, S;
    int32_t *windows;   /* (B, S+1) */
} fixture;

static void load_fixture(fixture *fx) {
    json_error_t jerr;
    fx->meta = json_load_file(FX "/cases.json", 0, &jerr);
    cr_assert(fx->meta, "cannot read " FX "/cases.json: %s", jerr.text);
    json_t *d = json_object_get(fx->meta, "dims");
    memset(&fx->dims, 0, sizeof fx->dims);
    fx->dims.d_model = (int)json_integer_value(json_object_get(d, "d_model"));
    fx->dims.n_layers = (int)json_integer_value(json_object_get(d, "n_layers"));
    fx->dims.n_heads = (int)json_integer_value(json_object_get(d, "n_heads"));
    fx->dims.n_kv_heads = (int)json_integer_value(json_object_get(d, "n_kv_heads"));
    fx->dims.vocab_size = (int)json_integer_value(json_object_get(d, "vocab_size"));
    fx->dims.rope_theta = (float)json_number_value(json_object_get(d, "rope_theta"));
    fx->dims.norm_eps = (float)json_number_value(json_object_get(d, "norm_eps"));
    fx->dims.act = NL_ACT_SILU;
    fx->B = (int)json_integer_value(json_object_get(fx->meta, "batch"));
    fx->S = (int)json_integer_value(json_object_get(fx->meta, "seq_len"));
    json_t *w = json_object_get(fx->meta, "windows");
    fx->windows = malloc(sizeof(int32_t) * fx->B * (fx->S + 1));
    for (int b = 0; b < fx->B; b++)
        for (int t = 0; t <= fx->S; t++)
            fx->windows[b * (fx->S + 1) + t] = (int32_t)json_integer_value(json_array_get(json_array_get(w, b), t));
}

static void free_fixture(fixture *fx) {
    json_decref(fx->meta);
    free(fx->windows);
}

static float *read_f32(const char *name, int64_t n) {
    char path[512];
    snprintf(path, sizeof path, FX "/%s", name);
    size_t nb;
    float *p = nl_read_all(path, &nb);
    cr_assert(p && nb == (size_t)n * 4, "bad %s (%zu bytes, want %lld)", path, nb, (long long)n * 4);
    return p;
}

static json_t *find_case(const fixture *fx, const char *name) {
    json_t *cases = json_object_get(fx->meta, "cases");
    for (size_t i = 0; i < json_array_size(cases); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(cases, i), "name")), name))
            return json_array_get(cases, i);
    cr_assert_fail("no case '%s' in " FX "/cases.json", name);
    return NULL;
}

/* The case's model with the fixture's parameters; the tensor table must be the fixture's. */
static nl_train_model *make_model(const fixture *fx, json_t *cs) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_train_dims d = fx->dims;
    d.moe = !strcmp(json_string_value(json_object_get(cs, "type")), "mixtral") ? 1 : 2;
    d.n_experts = (int)json_integer_value(json_object_get(cs, "experts"));
    d.top_k = (int)json_integer_value(json_object_get(cs, "top_k"));
    d.d_expert = (int)json_integer_value(json_object_get(cs, "d_expert"));
    d.d_shared = (int)json_integer_value(json_object_get(cs, "shared"));
    d.norm_topk = json_is_true(json_object_get(cs, "norm_topk"));
    d.tie_embeddings = json_is_true(json_object_get(cs, "tied"));
    nl_train_model *m;
    cr_assert_eq(nl_train_model_create(&ctx, &d, fx->B, fx->S, &m), NL_OK, "%s", ctx.msg);
    json_t *tab = json_object_get(cs, "tensors");
    const int n = nl_train_model_n_tensors(m);
    cr_assert_eq(n, (int)json_array_size(tab), "%d tensors, fixture %zu", n, json_array_size(tab));
    for (int i = 0; i < n; i++) {
        const nl_train_tensor *t = nl_train_model_tensor(m, i);
        json_t *e = json_array_get(tab, i);
        cr_assert_str_eq(t->name, json_string_value(json_object_get(e, "name")));
        cr_assert_eq(t->offset, json_integer_value(json_object_get(e, "offset")), "%s offset", t->name);
        json_t *shp = json_object_get(e, "shape");
        cr_assert_eq(t->shape[0], json_integer_value(json_array_get(shp, 0)), "%s shape", t->name);
    }
    cr_assert_eq(nl_train_model_n_params(m), json_integer_value(json_object_get(cs, "n_params")));
    float *p0 = read_f32(json_string_value(json_object_get(cs, "params_file")), nl_train_model_n_params(m));
    memcpy(nl_train_model_params(m), p0, (size_t)nl_train_model_n_params(m) * 4);
    free(p0);
    return m;
}


Test(train_moe, gradients_match_pytorch_autograd) {
    fixture fx;
    load_fixture(&fx);
    json_t *cases = json_object_get(fx.meta, "cases");
    double worst_all = 0;
    printf("MoE gradient check vs PyTorch float64 autograd: max|g-g_ref|/max|g_ref| (worst tensor)\n");
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *name = json_string_value(json_object_get(cs, "name"));
        nl_train_model *m = make_model(&fx, cs);
        const float coef = (float)json_number_value(json_object_get(cs, "aux"));
        nl_train_model_zero_grad(m);
        double ce, l1m, aux;
        nl_train_model_forward_backward(m, fx.windows, fx.B, 0.0f, coef, 1.0f, &ce, &l1m, &aux);
        const double want_ce = json_number_value(json_object_get(cs, "loss"));
        const double want_aux = json_number_value(json_object_get(cs, "aux_value"));
        cr_assert(fabs(ce - want_ce) <= TOL * fabs(want_ce), "%s: loss %.8f, torch %.8f", name, ce, want_ce);
        cr_assert(fabs(aux - want_aux) <= TOL * fabs(want_aux), "%s: aux %.8f, torch %.8f", name, aux, want_aux);
        cr_assert_eq(l1m, 0.0);
        /* routing identical to the reference: same experts in the same order */
        const int k = (int)json_integer_value(json_object_get(cs, "top_k")), T = fx.B * fx.S;
        json_t *sel = json_object_get(cs, "selected");
        for (int l = 0; l < fx.dims.n_layers; l++) {
            const float *w;
            const int *s = nl_train_model_routing(m, l, &w);
            cr_assert(s);
            for (int t = 0; t < T; t++) {
                float wsum = 0;
                for (int j = 0; j < k; j++) {
                    int want = (int)json_integer_value(json_array_get(json_array_get(json_array_get(sel, l), t), j));
                    cr_assert_eq(s[t * k + j], want, "%s: layer %d token %d slot %d: expert %d, torch %d", name, l, t, j,
                                 s[t * k + j], want);
                    wsum += w[t * k + j];
                }
                if (json_is_true(json_object_get(cs, "norm_topk")))
                    cr_assert(fabsf(wsum - 1.0f) < 1e-6f, "%s: renormalised weights sum to %.8f", name, wsum);
            }
        }
        const int64_t n = nl_train_model_n_params(m);
        float *ref = read_f32(json_string_value(json_object_get(cs, "grad_file")), n);
        const float *g = nl_train_model_grads(m);
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < nl_train_model_n_tensors(m); i++) {
            const nl_train_tensor *t = nl_train_model_tensor(m, i);
            double r = nl_rel_diff(g + t->offset, ref + t->offset, t->numel);
            cr_assert(r <= TOL, "%s: gradient of %s: relative difference %.3g > %g", name, t->name, r, TOL);
            if (r >= worst) { worst = r; worst_name = t->name; }
        }
        printf("  %-14s ce %.6f (torch %.6f) aux %.6f (torch %.6f)  grads max rel diff %.2e (%s)\n", name, ce, want_ce,
               aux, want_aux, worst, worst_name);
        if (worst > worst_all) worst_all = worst;
        free(ref);
        nl_train_model_destroy(m);
    }
    printf("  worst over all cases and tensors: %.2e\n", worst_all);
    free_fixture(&fx);
}

/* The balancing loss depends on the experts only through the routing: with and without it the
 * experts' gradients agree, the router's do not. */
Test(train_moe, aux_loss_reaches_the_router_only) {
    fixture fx;
    load_fixture(&fx);
    json_t *cs = find_case(&fx, "mixtral");
    nl_train_model *a = make_model(&fx, cs), *b = make_model(&fx, cs);
    nl_train_model_zero_grad(a);
    nl_train_model_zero_grad(b);
    double aux_a, aux_b;
    nl_train_model_forward_backward(a, fx.windows, fx.B, 0.0f, 0.5f, 1.0f, NULL, NULL, &aux_a);
    nl_train_model_forward_backward(b, fx.windows, fx.B, 0.0f, 0.0f, 1.0f, NULL, NULL, &aux_b);
    cr_assert_eq(aux_a, aux_b, "the aux value does not depend on its coefficient");
    const float *ga = nl_train_model_grads(a), *gb = nl_train_model_grads(b);
    int routers = 0;
    for (int i = 0; i < nl_train_model_n_tensors(a); i++) {
        const nl_train_tensor *t = nl_train_model_tensor(a, i);
        double r = nl_rel_diff(ga + t->offset, gb + t->offset, t->numel);
        if (strstr(t->name, ".gate.weight")) {
            routers++;
            cr_assert(r > 1e-3, "%s: the aux loss changed the router gradient by only %.3g", t->name, r);
        } else if (strstr(t->name, ".layers.1.block_sparse_moe.experts.")) {
            /* the last layer's experts: nothing downstream of them sees the aux loss */
            cr_assert(r == 0, "%s: gradient changed by the aux loss (%.3g)", t->name, r);
        }
    }
    cr_assert_eq(routers, fx.dims.n_layers);
    nl_train_model_destroy(a);
    nl_train_model_destroy(b);
    free_fixture(&fx);
}

/* One expert, top-1: p = 1 and the weight is exactly 1, so the model is the dense one with the
 * expert as its FFN (loss, gradients) and the router gets no gradient from the cross-entropy. */
Test(train_moe, one_expert_is_the_dense_model) {
    fixture fx;
    load_fixture(&fx);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_train_dims dd = fx.dims, dm = fx.dims;
    dd.d_ff = 20;
    dm.moe = 1, dm.n_experts = 1, dm.top_k = 1, dm.d_expert = 20, dm.norm_topk = 1;
    nl_train_model *dense, *moe;
    cr_assert_eq(nl_train_model_create(&ctx, &dd, fx.B, fx.S, &dense), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_train_model_create(&ctx, &dm, fx.B, fx.S, &moe), NL_OK, "%s", ctx.msg);
    nl_train_model_init(moe, 5);
    /* copy every tensor by name: mlp.{gate,up,down}_proj = block_sparse_moe.experts.0.{w1,w3,w2} */
    for (int i = 0; i < nl_train_model_n_tensors(dense); i++) {
        const nl_train_tensor *t = nl_train_model_tensor(dense, i);
        char name[128];
        snprintf(name, sizeof name, "%s", t->name);
        char *p = strstr(name, "mlp.");
        if (p) {
            const char *w = strstr(p, "gate_proj") ? "w1" : strstr(p, "up_proj") ? "w3" : "w2";
            snprintf(p, sizeof name - (size_t)(p - name), "block_sparse_moe.experts.0.%s.weight", w);
        }
        const nl_train_tensor *u = nl_train_model_find(moe, name);
        cr_assert(u && u->numel == t->numel, "no tensor %s in the MoE model", name);
        memcpy(nl_train_model_params(dense) + t->offset, nl_train_model_params(moe) + u->offset, (size_t)t->numel * 4);
    }
    nl_train_model_zero_grad(dense);
    nl_train_model_zero_grad(moe);
    double ce_d, ce_m, aux;
    nl_train_model_forward_backward(dense, fx.windows, fx.B, 0.0f, 0.0f, 1.0f, &ce_d, NULL, NULL);
    nl_train_model_forward_backward(moe, fx.windows, fx.B, 0.0f, 0.3f, 1.0f, &ce_m, NULL, &aux);
    cr_assert(fabs(ce_d - ce_m) <= 1e-6 * ce_d, "loss %.8f, dense %.8f", ce_m, ce_d);
    cr_assert(fabs(aux - 1.0) < 1e-6, "aux with one expert = E·f·P = 1, got %.8f", aux);
    for (int i = 0; i < nl_train_model_n_tensors(moe); i++) {
        const nl_train_tensor *u = nl_train_model_tensor(moe, i);
        const float *gm = nl_train_model_grads(moe) + u->offset;
        if (strstr(u->name, ".gate.weight")) {
            for (int64_t j = 0; j < u->numel; j++) cr_assert(gm[j] == 0.0f, "%s: router gradient %g", u->name, gm[j]);
            continue;
        }
        char name[128];
        snprintf(name, sizeof name, "%s", u->name);
        char *p = strstr(name, "block_sparse_moe.experts.0.");
        if (p) {
            const char *w = strstr(p, ".w1.") ? "gate_proj" : strstr(p, ".w3.") ? "up_proj" : "down_proj";
            snprintf(p, sizeof name - (size_t)(p - name), "mlp.%s.weight", w);
        }
        const nl_train_tensor *t = nl_train_model_find(dense, name);
        cr_assert(t, "no tensor %s in the dense model", name);
        double r = nl_rel_diff(gm, nl_train_model_grads(dense) + t->offset, t->numel);
        cr_assert(r <= 1e-5, "%s: gradient differs from the dense model's by %.3g", u->name, r);
    }
    nl_train_model_destroy(dense);
    nl_train_model_destroy(moe);
    free_fixture(&fx);
}
