/* test_train_model.c — the trainer's forward/backward pass and optimizer against PyTorch:
 *   - loss, mean |a| and the gradient of every parameter tensor against float64 autograd
 *     (tests/fixtures/train, written by tests/reference/gen_train_fixtures.py) for every activation
 *     (silu, gelu, relu, relu2), tied and untied embeddings, with and without the L1 penalty:
 *     max|g − g_ref| / max|g_ref| ≤ 1e-4 per tensor (the figures are printed);
 *   - clip_grad_norm_ + torch.optim.AdamW + the warmup/cosine schedule: parameters after 1 and 3
 *     steps;
 *   - the L1 penalty really changes the gradients; grad_accum splits give the same gradients;
 *   - a central finite difference of the loss agrees with the backward pass (independent of torch).
 */
#include <jansson.h>

#include "neuronlab/adamw.h"
#include "neuronlab/train_model.h"
#include "neuronlab/train_ops.h"
#include "testutil.h"

#define FX "tests/fixtures/train"

typedef struct {
    json_t *meta;
    nl_train_dims dims;
    int B, S, n_untied;
    float *params0; /* (n_untied) */
    int32_t *windows; /* (steps_ref, B, S+1) */
    int steps_ref;
} fixture;

static void load_fixture(fixture *fx) {
    json_error_t jerr;
    fx->meta = json_load_file(FX "/cases.json", 0, &jerr);
    cr_assert(fx->meta, "cannot read " FX "/cases.json: %s", jerr.text);
    json_t *d = json_object_get(fx->meta, "dims");
    memset(&fx->dims, 0, sizeof fx->dims); /* dense: the moe fields are 0 */
    fx->dims.d_model = (int)json_integer_value(json_object_get(d, "d_model"));
    fx->dims.n_layers = (int)json_integer_value(json_object_get(d, "n_layers"));
    fx->dims.n_heads = (int)json_integer_value(json_object_get(d, "n_heads"));
    fx->dims.n_kv_heads = (int)json_integer_value(json_object_get(d, "n_kv_heads"));
    fx->dims.d_ff = (int)json_integer_value(json_object_get(d, "d_ff"));
    fx->dims.vocab_size = (int)json_integer_value(json_object_get(d, "vocab_size"));
    fx->dims.rope_theta = (float)json_number_value(json_object_get(d, "rope_theta"));
    fx->dims.norm_eps = (float)json_number_value(json_object_get(d, "norm_eps"));
    fx->B = (int)json_integer_value(json_object_get(fx->meta, "batch"));
    fx->S = (int)json_integer_value(json_object_get(fx->meta, "seq_len"));
    fx->steps_ref = (int)json_integer_value(json_object_get(fx->meta, "steps_ref"));
    fx->n_untied = (int)json_integer_value(json_object_get(fx->meta, "n_params_untied"));
    size_t nb;
    fx->params0 = nl_read_all(FX "/params.f32", &nb);
    cr_assert(fx->params0 && nb == (size_t)fx->n_untied * 4, "bad params.f32");
    json_t *w = json_object_get(fx->meta, "windows");
    fx->windows = malloc(sizeof(int32_t) * fx->steps_ref * fx->B * (fx->S + 1));
    int k = 0;
    for (int s = 0; s < fx->steps_ref; s++)
        for (int b = 0; b < fx->B; b++)
            for (int t = 0; t <= fx->S; t++)
                fx->windows[k++] = (int32_t)json_integer_value(json_array_get(json_array_get(json_array_get(w, s), b), t));
}

static void free_fixture(fixture *fx) {
    json_decref(fx->meta);
    free(fx->params0);
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

static nl_train_model *make_model(const fixture *fx, const char *act, int tied) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_train_dims d = fx->dims;
    d.act = (nl_act)nl_act_parse(act);
    d.tie_embeddings = tied;
    nl_train_model *m;
    cr_assert_eq(nl_train_model_create(&ctx, &d, fx->B, fx->S, &m), NL_OK, "%s", ctx.msg);
    /* the tensor table must be the fixture's (untied layout; tied = all but lm_head) */
    json_t *tab = json_object_get(fx->meta, "tensors");
    int n = nl_train_model_n_tensors(m);
    cr_assert_eq(n, (int)json_array_size(tab) - (tied ? 1 : 0));
    for (int i = 0; i < n; i++) {
        const nl_train_tensor *t = nl_train_model_tensor(m, i);
        json_t *e = json_array_get(tab, i);
        cr_assert_str_eq(t->name, json_string_value(json_object_get(e, "name")));
        cr_assert_eq(t->offset, json_integer_value(json_object_get(e, "offset")), "%s offset", t->name);
    }
    memcpy(nl_train_model_params(m), fx->params0, (size_t)nl_train_model_n_params(m) * 4);
    return m;
}


static void optimizer_step(nl_train_model *m, nl_adamw *opt, json_t *hp, double clip, int step, int steps) {
    float *p = nl_train_model_params(m), *g = nl_train_model_grads(m);
    nl_clip_grad_norm(g, nl_train_model_n_params(m), clip);
    double lr = nl_lr_at(step, steps, json_integer_value(json_object_get(hp, "warmup_steps")),
                         json_number_value(json_object_get(hp, "lr")), json_number_value(json_object_get(hp, "min_lr")));
    nl_adamw_hparams h = {json_number_value(json_object_get(hp, "beta1")), json_number_value(json_object_get(hp, "beta2")),
                          json_number_value(json_object_get(hp, "eps")),
                          json_number_value(json_object_get(hp, "weight_decay"))};
    nl_adamw_begin_step(opt);
    for (int i = 0; i < nl_train_model_n_tensors(m); i++) {
        const nl_train_tensor *t = nl_train_model_tensor(m, i);
        nl_adamw_update(opt, p, g, t->offset, t->numel, lr, t->decay, &h);
    }
}

Test(train_model, gradients_match_pytorch_autograd) {
    fixture fx;
    load_fixture(&fx);
    json_t *cases = json_object_get(fx.meta, "cases");
    double worst_all = 0;
    printf("gradient check vs PyTorch float64 autograd: max|g-g_ref|/max|g_ref| (worst tensor)\n");
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *act = json_string_value(json_object_get(cs, "act"));
        int tied = json_is_true(json_object_get(cs, "tied"));
        float l1 = (float)json_number_value(json_object_get(cs, "l1"));
        nl_train_model *m = make_model(&fx, act, tied);
        nl_train_model_zero_grad(m);
        double ce, l1m;
        nl_train_model_forward_backward(m, fx.windows, fx.B, l1, 0.0f, 1.0f, &ce, &l1m, NULL);
        double want_loss = json_number_value(json_object_get(cs, "loss"));
        double want_l1 = json_number_value(json_object_get(cs, "l1_mean"));
        cr_assert(fabs(ce - want_loss) <= 1e-4 * fabs(want_loss), "%s: loss %.7f, torch %.7f", name, ce, want_loss);
        cr_assert(fabs(l1m - want_l1) <= 1e-4 * fabs(want_l1), "%s: l1_mean %.7f, torch %.7f", name, l1m, want_l1);
        int64_t n = nl_train_model_n_params(m);
        float *ref = read_f32(json_string_value(json_object_get(cs, "grad_file")), n);
        const float *g = nl_train_model_grads(m);
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < nl_train_model_n_tensors(m); i++) {
            const nl_train_tensor *t = nl_train_model_tensor(m, i);
            double r = nl_rel_diff(g + t->offset, ref + t->offset, t->numel);
            cr_assert(r <= 1e-4, "%s: gradient of %s: relative difference %.3g > 1e-4", name, t->name, r);
            if (r >= worst) { worst = r; worst_name = t->name; }
        }
        printf("  %-20s loss %.6f (torch %.6f)  grads max rel diff %.2e (%s)\n", name, ce, want_loss, worst, worst_name);
        if (worst > worst_all) worst_all = worst;
        free(ref);
        nl_train_model_destroy(m);
    }
    printf("  worst over all cases and tensors: %.2e\n", worst_all);
    free_fixture(&fx);
}

Test(train_model, adamw_steps_match_torch_optim) {
    fixture fx;
    load_fixture(&fx);
    json_t *cases = json_object_get(fx.meta, "cases"), *hp = json_object_get(fx.meta, "hparams");
    int steps = (int)json_integer_value(json_object_get(hp, "steps"));
    int checked = 0;
    printf("AdamW + clip_grad_norm_ + schedule vs torch.optim.AdamW: max|p-p_ref|\n");
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        if (!json_object_get(cs, "step1_file")) continue;
        const char *name = json_string_value(json_object_get(cs, "name"));
        nl_train_model *m = make_model(&fx, json_string_value(json_object_get(cs, "act")),
                                       json_is_true(json_object_get(cs, "tied")));
        float l1 = (float)json_number_value(json_object_get(cs, "l1"));
        double clip = json_number_value(json_object_get(cs, "grad_clip"));
        int64_t n = nl_train_model_n_params(m);
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_adamw opt;
        cr_assert_eq(nl_adamw_init(&ctx, &opt, n), NL_OK);
        double diffs[2] = {0, 0};
        for (int s = 1; s <= fx.steps_ref; s++) {
            nl_train_model_zero_grad(m);
            double ce;
            nl_train_model_forward_backward(m, fx.windows + (size_t)(s - 1) * fx.B * (fx.S + 1), fx.B, l1, 0.0f, 1.0f, &ce, NULL, NULL);
            double want = json_number_value(json_array_get(json_object_get(cs, "losses"), s - 1));
            cr_assert(fabs(ce - want) <= 1e-4 * fabs(want), "%s step %d: loss %.7f, torch %.7f", name, s, ce, want);
            double gn_want = json_number_value(json_array_get(json_object_get(cs, "grad_norms"), s - 1));
            float *g = nl_train_model_grads(m);
            double gn = 0;
            for (int64_t i = 0; i < n; i++) gn += (double)g[i] * g[i];
            gn = sqrt(gn);
            cr_assert(fabs(gn - gn_want) <= 1e-4 * gn_want, "%s step %d: grad norm %.7f, torch %.7f", name, s, gn, gn_want);
            optimizer_step(m, &opt, hp, clip, s, steps);
            if (s == 1 || s == fx.steps_ref) {
                char key[32];
                snprintf(key, sizeof key, "step%d_file", s);
                float *ref = read_f32(json_string_value(json_object_get(cs, key)), n);
                double d = nl_max_abs_diff(nl_train_model_params(m), ref, (size_t)n);
                diffs[s == 1 ? 0 : 1] = d;
                cr_assert(d <= 5e-6, "%s: parameters after step %d differ by %.3g", name, s, d);
                free(ref);
            }
        }
        printf("  %-20s clip %-6g after step 1: %.2e  after step %d: %.2e\n", name, clip, diffs[0], fx.steps_ref, diffs[1]);
        nl_adamw_release(&opt);
        nl_train_model_destroy(m);
        checked++;
    }
    cr_assert_geq(checked, 4);
    free_fixture(&fx);
}

Test(train_model, l1_penalty_changes_gradients_and_accumulation_splits) {
    fixture fx;
    load_fixture(&fx);
    nl_train_model *m = make_model(&fx, "silu", 0);
    int64_t n = nl_train_model_n_params(m);
    float *g0 = malloc(n * 4), *g1 = malloc(n * 4);
    nl_train_model_zero_grad(m);
    nl_train_model_forward_backward(m, fx.windows, fx.B, 0.0f, 0.0f, 1.0f, NULL, NULL, NULL);
    memcpy(g0, nl_train_model_grads(m), n * 4);
    nl_train_model_zero_grad(m);
    nl_train_model_forward_backward(m, fx.windows, fx.B, 5.0f, 0.0f, 1.0f, NULL, NULL, NULL);
    memcpy(g1, nl_train_model_grads(m), n * 4);
    cr_assert_gt(nl_rel_diff(g1, g0, n), 1e-2, "the L1 penalty should change the gradients");
    /* two micro-batches of one window with grad_scale 1/2 = one batch of two */
    nl_train_model_zero_grad(m);
    nl_train_model_forward_backward(m, fx.windows, 1, 0.0f, 0.0f, 0.5f, NULL, NULL, NULL);
    nl_train_model_forward_backward(m, fx.windows + fx.S + 1, 1, 0.0f, 0.0f, 0.5f, NULL, NULL, NULL);
    cr_assert_leq(nl_rel_diff(nl_train_model_grads(m), g0, n), 1e-5);
    free(g0);
    free(g1);
    nl_train_model_destroy(m);
    free_fixture(&fx);
}

/* Central differences in double of the f32 loss, on a few coordinates of every tensor. */
Test(train_model, finite_differences) {
    fixture fx;
    load_fixture(&fx);
    const char *acts[] = {"silu", "gelu", "relu2"};
    for (int a = 0; a < 3; a++) {
        nl_train_model *m = make_model(&fx, acts[a], a == 1);
        int64_t n = nl_train_model_n_params(m);
        float *p = nl_train_model_params(m);
        nl_train_model_zero_grad(m);
        nl_train_model_forward_backward(m, fx.windows, fx.B, 1.0f, 0.0f, 1.0f, NULL, NULL, NULL);
        float *g = malloc(n * 4);
        memcpy(g, nl_train_model_grads(m), n * 4);
        for (int i = 0; i < nl_train_model_n_tensors(m); i++) {
            const nl_train_tensor *t = nl_train_model_tensor(m, i);
            /* the coordinate with the largest gradient in the tensor: best signal to noise */
            int64_t k = t->offset;
            for (int64_t j = t->offset; j < t->offset + t->numel; j++) if (fabsf(g[j]) > fabsf(g[k])) k = j;
            const float h = 1e-2f * (fabsf(p[k]) > 1 ? fabsf(p[k]) : 1);
            double lp[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                float save = p[k];
                p[k] = save + (sgn ? -h : h);
                double ce, l1m;
                nl_train_model_forward_backward(m, fx.windows, fx.B, 1.0f, 0.0f, 1.0f, &ce, &l1m, NULL);
                lp[sgn] = ce + 1.0 * l1m;
                p[k] = save;
            }
            double fd = (lp[0] - lp[1]) / (2.0 * h);
            cr_assert(fabs(fd - g[k]) <= 2e-2 * fabs(g[k]) + 1e-4, "%s %s[%lld]: finite difference %.6g, backward %.6g",
                      acts[a], t->name, (long long)(k - t->offset), fd, g[k]);
        }
        free(g);
        nl_train_model_destroy(m);
    }
    free_fixture(&fx);
}

/* The blocked causal attention kernels (several NL_ATT_BLOCK blocks and a partial one) against plain
 * loops in double: forward output and the backward gradient of q, k, v. */
Test(train_model, attention_kernels_match_plain_loops) {
    enum { B = 2, S = 150, H = 4, Hk = 2, Dh = 8, Q = H * Dh, KV = Hk * Dh, W = Q + 2 * KV, T = B * S };
    unsigned seed = 11;
    float *qkv = malloc(sizeof(float) * T * W), *att = malloc(sizeof(float) * T * Q), *datt = malloc(sizeof(float) * T * Q);
    float *P = malloc(sizeof(float) * B * H * S * S), *dqkv = malloc(sizeof(float) * T * W);
    float *dkv = malloc(sizeof(float) * T * 2 * Q), *dp = malloc(sizeof(float) * 64 * S * S);
    for (int i = 0; i < T * W; i++) { seed = seed * 1103515245u + 12345u; qkv[i] = ((seed >> 8) & 0xffff) / 32768.0f - 1.0f; }
    for (int i = 0; i < T * Q; i++) { seed = seed * 1103515245u + 12345u; datt[i] = ((seed >> 8) & 0xffff) / 32768.0f - 1.0f; }
    nl_attention_fwd(att, P, qkv, B, S, H, Hk, Dh);
    nl_attention_bwd(dqkv, dkv, dp, 64, datt, P, qkv, B, S, H, Hk, Dh);
    double *ref = calloc((size_t)T * W, sizeof(double)), *p = malloc(sizeof(double) * S), *dpr = malloc(sizeof(double) * S);
    double worst_o = 0, worst_g = 0, max_g = 0;
    const double sc = 1.0 / sqrt((double)Dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / (H / Hk);
            for (int i = 0; i < S; i++) {
                const float *q = qkv + (size_t)(b * S + i) * W + h * Dh;
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const float *k = qkv + (size_t)(b * S + j) * W + Q + g * Dh;
                    double s = 0;
                    for (int e = 0; e < Dh; e++) s += (double)q[e] * k[e];
                    p[j] = s * sc;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
                for (int j = 0; j <= i; j++) p[j] /= sum;
                const float *dout = datt + (size_t)(b * S + i) * Q + h * Dh;
                double dot = 0;
                for (int j = 0; j <= i; j++) {
                    const float *v = qkv + (size_t)(b * S + j) * W + Q + KV + g * Dh;
                    double s = 0;
                    for (int e = 0; e < Dh; e++) s += (double)dout[e] * v[e];
                    dpr[j] = s;
                    dot += p[j] * s;
                }
                for (int e = 0; e < Dh; e++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += p[j] * qkv[(size_t)(b * S + j) * W + Q + KV + g * Dh + e];
                    double d = fabs(o - att[(size_t)(b * S + i) * Q + h * Dh + e]);
                    if (d > worst_o) worst_o = d;
                }
                for (int j = 0; j <= i; j++) {
                    const double ds = p[j] * (dpr[j] - dot) * sc;
                    const float *k = qkv + (size_t)(b * S + j) * W + Q + g * Dh;
                    for (int e = 0; e < Dh; e++) {
                        ref[(size_t)(b * S + i) * W + h * Dh + e] += ds * k[e];                 /* dq_i */
                        ref[(size_t)(b * S + j) * W + Q + g * Dh + e] += ds * q[e];             /* dk_j */
                        ref[(size_t)(b * S + j) * W + Q + KV + g * Dh + e] += p[j] * dout[e];   /* dv_j */
                    }
                }
            }
        }
    for (int i = 0; i < T * W; i++) {
        double d = fabs(ref[i] - dqkv[i]);
        if (d > worst_g) worst_g = d;
        if (fabs(ref[i]) > max_g) max_g = fabs(ref[i]);
    }
    printf("attention kernels vs plain loops (S %d, blocks of %d): output max abs diff %.2e, "
           "gradient max rel diff %.2e\n", S, NL_ATT_BLOCK, worst_o, worst_g / max_g);
    cr_assert_leq(worst_o, 1e-5);
    cr_assert_leq(worst_g / max_g, 1e-5);
    free(qkv); free(att); free(datt); free(P); free(dqkv); free(dkv); free(dp); free(ref); free(p); free(dpr);
}
