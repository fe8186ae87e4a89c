/* test_moe_models.c — the mixture-of-experts and Qwen3 model types (mixtral, qwen2_moe, qwen3,
 * qwen3_moe) against the PyTorch reference written from the Hugging Face equations
 * (tests/reference/gen_moe_fixtures.py, fixtures in tests/fixtures/hf/<type>/):
 *   - logits, per-token NLL, residual stream and FFN/MoE block output of every layer ≤ 1e-4, in
 *     one batch and through the KV cache (chunks of 3 and of 1); the FFN activation of the dense
 *     layers (Qwen2-MoE's mlp_only_layers / decoder_sparse_step) ≤ 1e-4; FFN_ACT never fired on
 *     MoE layers;
 *   - routing: router logits ≤ 1e-4, chosen experts identical (in torch.topk order) and their
 *     weights ≤ 1e-5, recomputed from the router input the FFN_IN hook sees;
 *   - nl_moe_topk equals torch.topk on tie-heavy rows (tests/fixtures/moe_topk.json);
 *   - only the selected experts are computed: NaN weights in experts no token chose change nothing;
 *   - the config fields, FFN replacement defaults (nl_forward_get_ffn gives nl_ffn_moe, NULL
 *     restores it), W_out norms refused on MoE layers;
 *   - bad input, one message each: unknown router option, num_experts_per_tok out of 1..E, a
 *     missing expert tensor (named), an expert tensor of the wrong shape.
 */
#include <ftw.h>
#include <jansson.h>
#include <unistd.h>

#include "neuronlab/forward.h"
#include "neuronlab/model.h"
#include "neuronlab/ops.h"
#include "neuronlab/safetensors.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_moe")
TestSuite(moe, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir);

#define FX "tests/fixtures/hf"

typedef struct {
    json_t *e;
    int T, V, L, D, F, E, k;
    int32_t tokens[64];
    int n_dense, n_moe, dense[16], moe[16];
    int is_moe[16];
} fixture;

static void fixture_load(fixture *x, const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    json_error_t jerr;
    x->e = json_load_file(path, 0, &jerr);
    cr_assert(x->e, "cannot read %s (regenerate with tests/reference/gen_moe_fixtures.py)", path);
#define GETI(f) (int)json_integer_value(json_object_get(x->e, f))
    x->T = GETI("T"), x->V = GETI("V"), x->L = GETI("L"), x->D = GETI("D"), x->F = GETI("F"), x->E = GETI("E"),
    x->k = GETI("k");
#undef GETI
    cr_assert(x->T <= 64 && x->L <= 16);
    for (int t = 0; t < x->T; t++) x->tokens[t] = (int32_t)json_integer_value(json_array_get(json_object_get(x->e, "tokens"), t));
    json_t *a = json_object_get(x->e, "dense_layers"), *b = json_object_get(x->e, "moe_layers");
    x->n_dense = (int)json_array_size(a), x->n_moe = (int)json_array_size(b);
    memset(x->is_moe, 0, sizeof x->is_moe);
    for (int i = 0; i < x->n_dense; i++) x->dense[i] = (int)json_integer_value(json_array_get(a, i));
    for (int i = 0; i < x->n_moe; i++) x->is_moe[x->moe[i] = (int)json_integer_value(json_array_get(b, i))] = 1;
}

static float *read_f32(const char *dir, const char *name, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t nb;
    float *p = nl_read_all(path, &nb);
    cr_assert(p, "cannot read %s", path);
    cr_assert_eq(nb, n * 4, "%s has %zu bytes, want %zu", path, nb, n * 4);
    return p;
}

/* Captures (L, T, width) rows of one hook point; counts calls per layer. */
typedef struct {
    float *buf;
    int T, width, calls[16];
} capture;

static nl_status capture_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    capture *c = user;
    cr_assert_eq(info->width, c->width);
    c->calls[info->layer]++;
    for (int t = 0; t < info->T; t++)
        memcpy(c->buf + ((size_t)info->layer * c->T + info->pos0 + t) * c->width, x + (size_t)t * c->width,
               (size_t)c->width * sizeof(float));
    return NL_OK;
}

static void check_moe_fixture(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, FX "/%s", name);
    fixture x;
    fixture_load(&x, dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    cr_assert_str_eq(c->model_type, name);
    cr_assert_eq(c->n_layers, x.L);
    cr_assert_eq(c->d_model, x.D);
    cr_assert_eq(c->d_ff, x.F);
    cr_assert_eq(c->n_experts, x.E);
    if (x.E) cr_assert_eq(c->n_experts_per_tok, x.k);
    for (int l = 0; l < x.L; l++) cr_assert_eq(nl_config_is_moe_layer(c, l), x.is_moe[l], "layer %d", l);
    const int T = x.T, V = x.V, L = x.L, D = x.D, F = x.F;
    float *want_logits = read_f32(dir, "logits.f32", (size_t)T * V);
    float *want_resid = read_f32(dir, "resid.f32", (size_t)L * T * D);
    float *want_out = read_f32(dir, "ffn_out.f32", (size_t)L * T * D);
    float *want_act = x.n_dense ? read_f32(dir, "ffn_act.f32", (size_t)x.n_dense * T * F) : NULL;

    /* reference NLL of the next token from the reference logits, in double */
    double want_nll[64];
    int32_t targets[64];
    for (int t = 0; t < T; t++) {
        targets[t] = t + 1 < T ? x.tokens[t + 1] : -1;
        if (targets[t] < 0) { want_nll[t] = 0; continue; }
        const float *z = want_logits + (size_t)t * V;
        double mx = z[0], s = 0;
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int v = 0; v < V; v++) s += exp(z[v] - mx);
        want_nll[t] = log(s) + mx - z[targets[t]];
    }

    const int chunks[3] = {T, 3, 1};
    for (int ci = 0; ci < 3; ci++) {
        const int chunk = chunks[ci];
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, chunk, 64, &f), NL_OK, "%s", ctx.msg);
        capture res = {calloc((size_t)L * T * D, 4), T, D, {0}}, out = {calloc((size_t)L * T * D, 4), T, D, {0}},
                act = {calloc((size_t)L * T * F, 4), T, F, {0}};
        nl_hooks *h = nl_forward_hooks(f);
        nl_hooks_add(h, NL_HOOK_RESID, -1, NL_HOOK_OBSERVE, capture_fn, &res);
        nl_hooks_add(h, NL_HOOK_FFN_OUT, -1, NL_HOOK_OBSERVE, capture_fn, &out);
        nl_hooks_add(h, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, capture_fn, &act);
        float *logits = malloc((size_t)T * V * 4);
        for (int t0 = 0; t0 < T; t0 += chunk) {
            int n = T - t0 < chunk ? T - t0 : chunk;
            cr_assert_eq(nl_forward_run(f, &ctx, x.tokens + t0, n, logits + (size_t)t0 * V), NL_OK, "%s: %s", name,
                         ctx.msg);
        }
        nl_check_close(logits, want_logits, (size_t)T * V, 1e-4);
        nl_check_close(res.buf, want_resid, (size_t)L * T * D, 1e-4);
        nl_check_close(out.buf, want_out, (size_t)L * T * D, 1e-4);
        for (int l = 0; l < L; l++)
            cr_assert_eq(act.calls[l] > 0, !x.is_moe[l], "%s layer %d: FFN_ACT fired %d times (MoE layer: %d)", name, l,
                         act.calls[l], x.is_moe[l]);
        for (int i = 0; i < x.n_dense; i++)
            nl_check_close(act.buf + (size_t)x.dense[i] * T * F, want_act + (size_t)i * T * F, (size_t)T * F, 1e-4);
        /* per-token NLL through nl_forward_nll, in the same chunks */
        nl_forward_reset(f);
        double nll[64];
        for (int t0 = 0; t0 < T; t0 += chunk) {
            int n = T - t0 < chunk ? T - t0 : chunk;
            cr_assert_eq(nl_forward_nll(f, &ctx, x.tokens + t0, targets + t0, n, nll + t0), NL_OK, "%s", ctx.msg);
        }
        for (int t = 0; t < T; t++)
            cr_assert(fabs(nll[t] - want_nll[t]) <= 1e-4, "%s chunk %d: nll[%d] %.7f, reference %.7f", name, chunk, t,
                      nll[t], want_nll[t]);
        free(logits);
        free(res.buf), free(out.buf), free(act.buf);
        nl_forward_destroy(f);
    }
    free(want_logits), free(want_resid), free(want_out), free(want_act);
    json_decref(x.e);
    nl_model_close(m);
}

Test(moe, fixture_mixtral) { check_moe_fixture("mixtral"); }
Test(moe, fixture_qwen2_moe) { check_moe_fixture("qwen2_moe"); }
Test(moe, fixture_qwen3) { check_moe_fixture("qwen3"); }
Test(moe, fixture_qwen3_moe) { check_moe_fixture("qwen3_moe"); }

/* Routing decisions: the router input (FFN_IN) of each MoE layer → router logits → nl_moe_route
 * must choose exactly the reference's experts, in the same order, with the same weights. */
static void check_routing(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, FX "/%s", name);
    fixture x;
    fixture_load(&x, dir);
    cr_assert(x.n_moe > 0);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int T = x.T, D = x.D, E = x.E, k = x.k, L = x.L;
    float *want_logits = read_f32(dir, "router_logits.f32", (size_t)x.n_moe * T * E);
    float *want_w = read_f32(dir, "expert_weights.f32", (size_t)x.n_moe * T * k);
    size_t nb;
    snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/experts.i32");
    int32_t *want_sel = nl_read_all(dir, &nb);
    cr_assert(want_sel && nb == (size_t)x.n_moe * T * k * 4, "bad %s", dir);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, T, 64, &f), NL_OK, "%s", ctx.msg);
    capture in = {calloc((size_t)L * T * D, 4), T, D, {0}};
    nl_hooks_add(nl_forward_hooks(f), NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, capture_fn, &in);
    cr_assert_eq(nl_forward_run(f, &ctx, x.tokens, T, NULL), NL_OK, "%s", ctx.msg);
    float *z = malloc((size_t)T * E * 4), *w = malloc((size_t)T * k * 4);
    int *sel = malloc((size_t)T * k * sizeof(int));
    for (int i = 0; i < x.n_moe; i++) {
        const int l = x.moe[i];
        nl_layer lw;
        cr_assert_eq(nl_model_layer(&ctx, m, l, &lw), NL_OK, "%s", ctx.msg);
        cr_assert(lw.moe && lw.experts && lw.router.w);
        nl_matmul(z, E, in.buf + (size_t)l * T * D, D, T, &lw.router, NULL);
        nl_check_close(z, want_logits + (size_t)i * T * E, (size_t)T * E, 1e-4);
        nl_moe_route(c, z, T, sel, w);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                cr_assert_eq(sel[t * k + j], want_sel[((size_t)i * T + t) * k + j],
                             "%s layer %d token %d slot %d: expert %d, reference %d", name, l, t, j, sel[t * k + j],
                             want_sel[((size_t)i * T + t) * k + j]);
        nl_check_close(w, want_w + (size_t)i * T * k, (size_t)T * k, 1e-5);
    }
    free(z), free(w), free(sel), free(in.buf), free(want_logits), free(want_w), free(want_sel);
    nl_forward_destroy(f);
    json_decref(x.e);
    nl_model_close(m);
}

Test(moe, routing_mixtral) { check_routing("mixtral"); }
Test(moe, routing_qwen2_moe) { check_routing("qwen2_moe"); }
Test(moe, routing_qwen3_moe) { check_routing("qwen3_moe"); }

/* ---- the ROUTING hook (hooks.h): what `record` stores, against the PyTorch reference ---------- */

typedef struct {
    int T, E, k, Fe, Fs, calls;
    int lidx[16];        /* layer → index among the MoE layers */
    float *z, *w, *act, *sh, *sg; /* (n_moe, T, …) */
    int32_t *sel;
} rcap;

static nl_status routing_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    rcap *c = user;
    const nl_moe_routing *r = info->moe;
    cr_assert(r && info->point == NL_HOOK_ROUTING && info->width == c->k && x == r->weights);
    cr_assert(r->E == c->E && r->k == c->k && r->d_expert == c->Fe && r->d_shared == c->Fs);
    cr_assert(r->experts && r->weights && r->logits && r->probs && r->expert_act);
    cr_assert_eq(r->shared_act != NULL, c->Fs > 0);
    c->calls++;
    const int i = c->lidx[info->layer], T = c->T, E = c->E, k = c->k;
    for (int t = 0; t < info->T; t++) {
        const size_t row = (size_t)i * T + info->pos0 + t;
        double ps = 0;
        for (int e = 0; e < E; e++) ps += r->probs[(size_t)t * E + e];
        cr_assert(fabs(ps - 1) < 1e-5, "probabilities sum to %g", ps);
        memcpy(c->z + row * E, r->logits + (size_t)t * E, (size_t)E * 4);
        memcpy(c->w + row * k, r->weights + (size_t)t * k, (size_t)k * 4);
        memcpy(c->sel + row * k, r->experts + (size_t)t * k, (size_t)k * 4);
        memcpy(c->act + row * k * c->Fe, r->expert_act + (size_t)t * k * c->Fe, (size_t)k * c->Fe * 4);
        if (c->Fs) {
            memcpy(c->sh + row * c->Fs, r->shared_act + (size_t)t * c->Fs, (size_t)c->Fs * 4);
            c->sg[row] = r->shared_gate[t];
        }
    }
    return NL_OK;
}

/* The ROUTING observer sees the reference's router logits, experts (same order), weights, expert
 * activations by slot and the shared expert's activations and gate, in one batch and by chunks of
 * 3 (rows through the KV cache); the logits of the forward pass are unchanged by observing. */
static void check_routing_hook(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, FX "/%s", name);
    fixture x;
    fixture_load(&x, dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int T = x.T, E = x.E, k = x.k, Fe = c->d_expert, Fs = c->d_shared, nm = x.n_moe;
    float *want_z = read_f32(dir, "router_logits.f32", (size_t)nm * T * E);
    float *want_w = read_f32(dir, "expert_weights.f32", (size_t)nm * T * k);
    float *want_act = read_f32(dir, "expert_act.f32", (size_t)nm * T * k * Fe);
    float *want_sh = Fs ? read_f32(dir, "shared_act.f32", (size_t)nm * T * Fs) : NULL;
    float *want_sg = Fs ? read_f32(dir, "shared_gate.f32", (size_t)nm * T) : NULL;
    char p[512];
    size_t nb;
    snprintf(p, sizeof p, "%s/experts.i32", dir);
    int32_t *want_sel = nl_read_all(p, &nb);
    cr_assert(want_sel && nb == (size_t)nm * T * k * 4);
    const int chunks[2] = {T, 3};
    float *plain = malloc((size_t)T * x.V * 4), *seen = malloc((size_t)T * x.V * 4);
    for (int ci = 0; ci < 2; ci++) {
        rcap rc = {T, E, k, Fe, Fs, 0, {0}, calloc((size_t)nm * T * E, 4), calloc((size_t)nm * T * k, 4),
                   calloc((size_t)nm * T * k * Fe, 4), calloc((size_t)nm * T * (Fs ? Fs : 1), 4), calloc((size_t)nm * T, 4),
                   calloc((size_t)nm * T * k, 4)};
        for (int i = 0; i < nm; i++) rc.lidx[x.moe[i]] = i;
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, chunks[ci], 64, &f), NL_OK, "%s", ctx.msg);
        for (int pass = 0; pass < 2; pass++) { /* 0: no observer; 1: with the ROUTING observer */
            nl_hook_id id = 0;
            if (pass) cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_ROUTING, -1, NL_HOOK_OBSERVE, routing_fn, &rc, &id), NL_OK);
            nl_forward_reset(f);
            for (int t0 = 0; t0 < T; t0 += chunks[ci]) {
                const int n = T - t0 < chunks[ci] ? T - t0 : chunks[ci];
                cr_assert_eq(nl_forward_run(f, &ctx, x.tokens + t0, n, (pass ? seen : plain) + (size_t)t0 * x.V), NL_OK, "%s", ctx.msg);
            }
            if (pass) nl_hooks_remove(nl_forward_hooks(f), id);
        }
        cr_assert(!memcmp(plain, seen, (size_t)T * x.V * 4), "%s: observing the routing changed the logits", name);
        cr_assert_eq(rc.calls, nm * ((T + chunks[ci] - 1) / chunks[ci]));
        nl_check_close(rc.z, want_z, (size_t)nm * T * E, 1e-4);
        cr_assert(!memcmp(rc.sel, want_sel, (size_t)nm * T * k * 4), "%s: routing differs from the reference", name);
        nl_check_close(rc.w, want_w, (size_t)nm * T * k, 1e-5);
        nl_check_close(rc.act, want_act, (size_t)nm * T * k * Fe, 1e-4);
        if (Fs) {
            nl_check_close(rc.sh, want_sh, (size_t)nm * T * Fs, 1e-4);
            nl_check_close(rc.sg, want_sg, (size_t)nm * T, 1e-5);
        }
        free(rc.z), free(rc.w), free(rc.act), free(rc.sh), free(rc.sg), free(rc.sel);
        nl_forward_destroy(f);
    }
    free(plain), free(seen), free(want_z), free(want_w), free(want_act), free(want_sh), free(want_sg), free(want_sel);
    json_decref(x.e);
    nl_model_close(m);
}

Test(moe, routing_hook_mixtral) { check_routing_hook("mixtral"); }
Test(moe, routing_hook_qwen2_moe) { check_routing_hook("qwen2_moe"); }
Test(moe, routing_hook_qwen3_moe) { check_routing_hook("qwen3_moe"); }

/* Removing expert e through a ROUTER_LOGITS intervener (z[:, e] = -inf): no token chooses e, and
 * each token's experts are the reference's ranking without e (the next-best expert moves in). */
typedef struct { int e; } rm_expert;
static nl_status remove_fn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    const rm_expert *r = user;
    for (int t = 0; t < info->T; t++) x[(size_t)t * info->width + r->e] = -INFINITY;
    return NL_OK;
}

Test(moe, router_logits_intervener_removes_an_expert) {
    const char *name = "mixtral";
    char dir[256];
    snprintf(dir, sizeof dir, FX "/%s", name);
    fixture x;
    fixture_load(&x, dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, dir, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    const int T = x.T, E = x.E, k = x.k, Fe = c->d_expert, nm = x.n_moe, l = x.moe[0];
    float *want_z = read_f32(dir, "router_logits.f32", (size_t)nm * T * E);
    for (int e = 0; e < E; e++) {
        rcap rc = {T, E, k, Fe, 0, 0, {0}, calloc((size_t)nm * T * E, 4), calloc((size_t)nm * T * k, 4),
                   calloc((size_t)nm * T * k * Fe, 4), calloc(1, 4), calloc(1, 4), calloc((size_t)nm * T * k, 4)};
        for (int i = 0; i < nm; i++) rc.lidx[x.moe[i]] = i;
        rm_expert rm = {e};
        nl_forward *f;
        cr_assert_eq(nl_forward_create(&ctx, m, T, 64, &f), NL_OK, "%s", ctx.msg);
        nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ROUTER_LOGITS, l, NL_HOOK_INTERVENE, remove_fn, &rm);
        nl_hooks_add(nl_forward_hooks(f), NL_HOOK_ROUTING, l, NL_HOOK_OBSERVE, routing_fn, &rc);
        cr_assert_eq(nl_forward_run(f, &ctx, x.tokens, T, NULL), NL_OK, "%s", ctx.msg);
        const int i = rc.lidx[l];
        for (int t = 0; t < T; t++) { /* the first layer's input is unchanged: rank the reference logits */
            const float *z = want_z + ((size_t)i * T + t) * E;
            int used[64] = {0};
            used[e] = 1;
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int q = 0; q < E; q++)
                    if (!used[q] && (best < 0 || z[q] > z[best])) best = q;
                used[best] = 1;
                cr_assert_eq(rc.sel[((size_t)i * T + t) * k + j], best, "expert %d removed: token %d slot %d", e, t, j);
            }
            double ws = 0;
            for (int j = 0; j < k; j++) ws += rc.w[((size_t)i * T + t) * k + j];
            cr_assert(fabs(ws - 1) < 1e-5); /* mixtral renormalises over the k chosen */
        }
        free(rc.z), free(rc.w), free(rc.act), free(rc.sh), free(rc.sg), free(rc.sel);
        nl_forward_destroy(f);
    }
    free(want_z);
    json_decref(x.e);
    nl_model_close(m);
}

/* nl_moe_topk against torch.topk on rows full of exact ties (both algorithm branches). */
Test(moe, topk_ties_as_torch) {
    json_error_t jerr;
    json_t *j = json_load_file("tests/fixtures/moe_topk.json", 0, &jerr);
    cr_assert(j, "cannot read tests/fixtures/moe_topk.json");
    json_t *cases = json_object_get(j, "cases");
    size_t i;
    json_t *cs;
    int n_cases = 0, n_not_lowest_first = 0;
    json_array_foreach(cases, i, cs) {
        const int n = (int)json_integer_value(json_object_get(cs, "n")), k = (int)json_integer_value(json_object_get(cs, "k"));
        float p[256];
        int idx[256];
        float val[256];
        cr_assert(n <= 256);
        for (int a = 0; a < n; a++) p[a] = (float)json_real_value(json_array_get(json_object_get(cs, "p"), a));
        nl_moe_topk(p, n, k, idx, val);
        for (int a = 0; a < k; a++) {
            int want = (int)json_integer_value(json_array_get(json_object_get(cs, "idx"), a));
            cr_assert_eq(idx[a], want, "case %zu (n %d, k %d): slot %d is %d, torch.topk %d", i, n, k, a, idx[a], want);
            cr_assert_eq(val[a], p[want]);
            if (a && val[a] == val[a - 1] && idx[a] < idx[a - 1]) n_not_lowest_first++;
        }
        n_cases++;
    }
    cr_assert_gt(n_cases, 100);
    cr_assert_gt(n_not_lowest_first, 0, "the fixture should hold ties torch does not order by index");
    json_decref(j);
    /* the worked examples of forward.h: 8 equal values, k = 2 → 6, 5; 60 equal, k = 4 → 39, 40, 41, 38 */
    float eq[60];
    for (int a = 0; a < 60; a++) eq[a] = 0.5f;
    int got[4];
    nl_moe_topk(eq, 8, 2, got, NULL);
    cr_assert(got[0] == 6 && got[1] == 5, "got %d %d", got[0], got[1]);
    nl_moe_topk(eq, 60, 4, got, NULL);
    cr_assert(got[0] == 39 && got[1] == 40 && got[2] == 41 && got[3] == 38, "got %d %d %d %d", got[0], got[1], got[2],
              got[3]);
}

/* ---- only the selected experts are computed ------------------------------------------------ */

static void copy_file(const char *from, const char *to) {
    size_t n;
    void *b = nl_read_all(from, &n);
    cr_assert(b, "cannot read %s", from);
    FILE *f = fopen(to, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

Test(moe, unselected_experts_are_never_computed) {
    const char *dir = FX "/mixtral";
    fixture x;
    fixture_load(&x, dir);
    const int T = 3; /* the first 3 tokens choose 6 of 8 experts per layer at most */
    size_t nb;
    int32_t *sel = nl_read_all(FX "/mixtral/experts.i32", &nb);
    cr_assert(sel);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unsigned char *buf = nl_read_all(path, &nb);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_safetensors *st;
    cr_assert_eq(nl_safetensors_open(&ctx, path, buf, nb, &st), NL_OK, "%s", ctx.msg);
    int poisoned = 0;
    for (int i = 0; i < x.n_moe; i++) {
        int used[64] = {0};
        for (int t = 0; t < T; t++)
            for (int j = 0; j < x.k; j++) used[sel[((size_t)i * x.T + t) * x.k + j]] = 1;
        for (int e = 0; e < x.E; e++) {
            if (used[e]) continue;
            static const char *w[3] = {"w1", "w2", "w3"};
            for (int q = 0; q < 3; q++) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", x.moe[i], e, w[q]);
                nl_tensor t;
                cr_assert_eq(nl_safetensors_get(&ctx, st, name, &t), NL_OK, "%s", ctx.msg);
                cr_assert_eq(t.dtype, NL_DT_F32);
                float nan = NAN;
                for (int64_t a = 0; a < nl_tensor_numel(&t); a++) memcpy((char *)t.data + 4 * a, &nan, 4);
            }
            poisoned++;
        }
    }
    cr_assert_gt(poisoned, 0);
    nl_safetensors_close(st);
    FILE *f = fopen(tmp_path("model.safetensors"), "wb");
    cr_assert_eq(fwrite(buf, 1, nb, f), nb);
    fclose(f);
    free(buf);
    copy_file(FX "/mixtral/config.json", tmp_path("config.json"));
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, g_dir, &m), NL_OK, "%s", ctx.msg);
    nl_forward *fw;
    cr_assert_eq(nl_forward_create(&ctx, m, T, 16, &fw), NL_OK, "%s", ctx.msg);
    float *logits = malloc((size_t)T * x.V * 4), *want = read_f32(dir, "logits.f32", (size_t)x.T * x.V);
    cr_assert_eq(nl_forward_run(fw, &ctx, x.tokens, T, logits), NL_OK, "%s", ctx.msg);
    nl_check_close(logits, want, (size_t)T * x.V, 1e-4); /* NaN anywhere would fail this */
    free(logits), free(want), free(sel);
    nl_forward_destroy(fw);
    nl_model_close(m);
    json_decref(x.e);
}

/* ---- FFN replacement defaults and dense-neuron analyses -------------------------------------- */

Test(moe, ffn_defaults_and_w_out_norm) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, FX "/qwen2_moe", &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->n_experts, 6);
    cr_assert_eq(c->n_experts_per_tok, 2);
    cr_assert_eq(c->d_expert, 24);
    cr_assert_eq(c->d_shared, 48);
    cr_assert_eq(c->norm_topk_prob, 0);
    cr_assert_eq(c->decoder_sparse_step, 2);
    cr_assert_eq(nl_model_dtype(m), NL_DT_BF16);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, 4, 16, &f), NL_OK, "%s", ctx.msg);
    void *user = NULL;
    cr_assert_null(nl_forward_get_ffn(f, 0, &user));
    cr_assert_eq(nl_forward_get_ffn(f, 1, &user), nl_ffn_moe);
    cr_assert_not_null(user);
    void *moe_user = user;
    cr_assert_eq(nl_forward_set_ffn(f, &ctx, -1, nl_ffn_dense, NULL), NL_OK);
    cr_assert_eq(nl_forward_get_ffn(f, 1, NULL), nl_ffn_dense);
    cr_assert_eq(nl_forward_set_ffn(f, &ctx, -1, NULL, NULL), NL_OK); /* restores each layer's own FFN */
    cr_assert_null(nl_forward_get_ffn(f, 0, NULL));
    cr_assert_null(nl_forward_get_ffn(f, 3, NULL));
    cr_assert_eq(nl_forward_get_ffn(f, 1, &user), nl_ffn_moe);
    cr_assert_eq(user, moe_user);
    float norms[96];
    cr_assert_eq(nl_model_w_out_norm(&ctx, m, 0, norms), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_model_w_out_norm(&ctx, m, 1, norms), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "layer 1 of") && strstr(ctx.msg, "mixture-of-experts layer (6 experts)"), "%s", ctx.msg);
    /* nl_ffn_moe refuses a dense layer; with no scratch it allocates its own */
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 0, &w), NL_OK);
    float xin[64] = {0}, out[64];
    nl_hooks hooks;
    nl_hooks_init(&hooks);
    int32_t tok = 5;
    nl_ffn_call call = {0, 1, 64, c->d_ff, 0, &tok, c, &w, NULL, NULL, &hooks};
    cr_assert_eq(nl_ffn_moe(NULL, &ctx, &call, xin, out), NL_EINVAL);
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK);
    call.layer = 1;
    for (int i = 0; i < 64; i++) xin[i] = (float)((i * 7) % 11 - 5) / 5.0f;
    float out2[64];
    cr_assert_eq(nl_ffn_moe(NULL, &ctx, &call, xin, out), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_ffn_moe(moe_user, &ctx, &call, xin, out2), NL_OK, "%s", ctx.msg);
    cr_assert(memcmp(out, out2, sizeof out) == 0);
    nl_forward_destroy(f);
    nl_model_close(m);
}

/* ---- bad input ----------------------------------------------------------------------------- */

/* A copy of fixture `name` in the temporary folder with config edits (key, JSON value) and
 * same-length byte replacements in the safetensors header; returns the open status. */
static nl_status open_edited(const char *name, const char *key, const char *json_value, const char *from,
                             const char *to, nl_ctx *ctx) {
    char src[512];
    snprintf(src, sizeof src, FX "/%s/config.json", name);
    json_error_t jerr;
    json_t *cfg = json_load_file(src, 0, &jerr);
    cr_assert(cfg);
    if (key) json_object_set_new(cfg, key, json_loads(json_value, JSON_DECODE_ANY, &jerr));
    cr_assert_eq(json_dump_file(cfg, tmp_path("config.json"), 0), 0);
    json_decref(cfg);
    snprintf(src, sizeof src, FX "/%s/model.safetensors", name);
    size_t n;
    unsigned char *b = nl_read_all(src, &n);
    cr_assert(b);
    if (from) {
        uint64_t hl;
        memcpy(&hl, b, 8);
        cr_assert_eq(strlen(from), strlen(to));
        unsigned char *p = memmem(b + 8, hl, from, strlen(from));
        cr_assert(p, "'%s' not in the header", from);
        memcpy(p, to, strlen(to));
    }
    FILE *f = fopen(tmp_path("model.safetensors"), "wb");
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
    nl_model *m = NULL;
    nl_status st = nl_model_open(ctx, g_dir, &m);
    nl_model_close(m);
    if (st != NL_OK) cr_assert(!strchr(ctx->msg, '\n'), "one line: %s", ctx->msg);
    return st;
}

Test(moe, bad_router_options) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(open_edited("mixtral", NULL, NULL, NULL, NULL, &ctx), NL_OK, "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "scoring_func", "\"sigmoid\"", NULL, NULL, &ctx), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "config.json': router option scoring_func = 'sigmoid' is not supported"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "topk_method", "\"group_limited_greedy\"", NULL, NULL, &ctx), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "router option topk_method"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "routed_scaling_factor", "2.5", NULL, NULL, &ctx), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "router option routed_scaling_factor"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "scoring_func", "\"softmax\"", NULL, NULL, &ctx), NL_OK, "%s", ctx.msg);
}

Test(moe, bad_experts_per_token) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(open_edited("mixtral", "num_experts_per_tok", "9", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "config.json': num_experts_per_tok = 9 must be in 1..num_local_experts (8)"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "num_experts_per_tok", "0", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "num_experts_per_tok = 0 must be in 1..num_local_experts (8)"), "%s", ctx.msg);
    cr_assert_eq(open_edited("qwen2_moe", "num_experts_per_tok", "7", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "num_experts_per_tok = 7 must be in 1..num_experts (6)"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "num_experts_per_tok", "8", NULL, NULL, &ctx), NL_OK, "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "num_local_experts", "1000000000", NULL, NULL, &ctx), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "num_local_experts = 1000000000 is not supported (at most 1024 experts)"), "%s", ctx.msg);
    cr_assert_eq(open_edited("mixtral", "num_local_experts", "-2", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "field 'num_local_experts' must be positive, got -2"), "%s", ctx.msg);
    cr_assert_eq(open_edited("qwen2_moe", "mlp_only_layers", "\"1\"", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "field 'mlp_only_layers' must be a list of layer indices"), "%s", ctx.msg);
    /* num_experts 0: Qwen-MoE without experts is dense everywhere, but the file has experts */
    cr_assert_eq(open_edited("qwen2_moe", "num_experts", "0", NULL, NULL, &ctx), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "missing tensor 'model.layers.1.mlp.gate_proj.weight'"), "%s", ctx.msg);
}

Test(moe, missing_expert_tensor_is_named) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(open_edited("mixtral", NULL, NULL, "\"model.layers.1.block_sparse_moe.experts.3.w2.weight\"",
                             "\"model.layers.1.block_sparse_moe.experts.3.w9.weight\"", &ctx),
                 NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "missing tensor 'model.layers.1.block_sparse_moe.experts.3.w2.weight' (model_type mixtral"),
              "%s", ctx.msg);
    cr_assert_eq(open_edited("qwen2_moe", NULL, NULL, "\"model.layers.1.mlp.shared_expert_gate.weight\"",
                             "\"model.layers.1.mlp.shared_expert_gatX.weight\"", &ctx),
                 NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "missing tensor 'model.layers.1.mlp.shared_expert_gate.weight'"), "%s", ctx.msg);
    /* a dense layer of qwen2_moe needs its dense MLP, not experts */
    cr_assert_eq(open_edited("qwen2_moe", NULL, NULL, "\"model.layers.2.mlp.up_proj.weight\"",
                             "\"model.layers.2.mlp.up_projXweight\"", &ctx),
                 NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "missing tensor 'model.layers.2.mlp.up_proj.weight'"), "%s", ctx.msg);
}

Test(moe, expert_tensor_of_wrong_shape) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    /* Fe = 32, D = 64: w2 is (64, 32); the header says (32, 64) over the same bytes */
    cr_assert_eq(open_edited("mixtral", NULL, NULL,
                             "\"model.layers.0.block_sparse_moe.experts.5.w2.weight\":{\"dtype\":\"F32\",\"shape\":[64,32]",
                             "\"model.layers.0.block_sparse_moe.experts.5.w2.weight\":{\"dtype\":\"F32\",\"shape\":[32,64]",
                             &ctx),
                 NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "tensor 'model.layers.0.block_sparse_moe.experts.5.w2.weight' has shape [32, 64], "
                              "config.json implies [64, 32]"), "%s", ctx.msg);
    /* the router: (E, D) = (8, 64) */
    cr_assert_eq(open_edited("mixtral", NULL, NULL,
                             "\"model.layers.1.block_sparse_moe.gate.weight\":{\"dtype\":\"F32\",\"shape\":[8,64]",
                             "\"model.layers.1.block_sparse_moe.gate.weight\":{\"dtype\":\"F32\",\"shape\":[64,8]",
                             &ctx),
                 NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "gate.weight' has shape [64, 8], config.json implies [8, 64]"), "%s", ctx.msg);
}
