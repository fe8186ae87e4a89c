/* calib.c — the calibration statistics of moefy: an FFN_ACT observer over the calibration
 * documents (each token counted once, whatever the sliding windows) that sums each neuron's
 * activation (pass 1: μ), then counts how often each neuron is active and, for the coact
 * split, how often every two are active together (pass 2; active as in moe.h, counts through
 * one SYRK per layer and call); pass 3 (moefy --router mlp) keeps, for evenly spaced tokens, the
 * FFN input x (an FFN_IN observer) and the oracle scores s_e of the built experts, the MLP
 * router's training data. Private to src/moe (moe_calib.h). Checked by tests/test_moe.c and
 * tests/test_moe_router.c. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_calib.h"
#include "moe/moe_internal.h"
#include "neuronlab/walk.h"

static void swapf(float *a, float *b) { float t = *a; *a = *b; *b = t; }

/* The k-th largest (k ≥ 1) of v (n), reordering v. */
static float kth_largest(float *v, int n, int k) {
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = v[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) swapf(&v[i], &v[j]), i++, j--;
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

void nl_moe_active_row(const float *a, const float *r, int F, int ktop, float *tmp, float *out) {
    for (int i = 0; i < F; i++) tmp[i] = fabsf(a[i] - (r ? r[i] : 0.0f));
    for (int i = 0; i < F; i++) out[i] = tmp[i];
    float v = kth_largest(tmp, F, ktop);
    int n_above = 0;
    for (int i = 0; i < F; i++) n_above += out[i] > v;
    int room = ktop - n_above;
    for (int i = 0; i < F; i++) {
        float d = out[i];
        out[i] = d > v ? 1.0f : (d == v && room > 0 ? (room--, 1.0f) : 0.0f);
    }
}

int nl_moe_active_k(int F) { return (int)ceil(NL_MOE_ACTIVE_TOP * F - 1e-9); }

/* Slot of calibration token g among the kept ones, or -1. */
static int64_t kept_slot(const nl_moe_calib *c, int64_t g) {
    const int64_t n = c->n_tokens;
    if (n <= c->keep) return g < n ? g : -1;
    const int64_t a = (int64_t)((__int128)g * c->keep / n), b = (int64_t)((__int128)(g + 1) * c->keep / n);
    return b > a ? b - 1 : -1;
}

static nl_status observe_in(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    nl_moe_calib *c = user;
    if (c->index_of[info->layer] < 0) return NL_OK;
    memcpy(c->xin, x, (size_t)info->T * c->D * sizeof(float));
    c->xin_layer = info->layer;
    return NL_OK;
}

/* Pass 3 on layer li's activations a (rows after skip): x and s_e of the kept tokens. */
static nl_status router_rows(nl_moe_calib *c, nl_ctx *ctx, int layer, int li, const float *a, int rows) {
    if (c->xin_layer != layer)
        return nl_errorf(ctx, NL_EINVAL, "internal: layer %d's FFN input was not seen before its activations", layer);
    const nl_moe_layer *y = nl_moe_get_layer(c->moe, layer);
    const int F = c->F, D = c->D, E = c->E;
    const float *r = c->r + (size_t)li * F, *wn = c->wn + (size_t)li * F;
    for (int t = 0; t < rows; t++) {
        const int64_t slot = kept_slot(c, c->tok + t);
        if (slot < 0) continue;
        memcpy(c->rx + ((size_t)li * c->keep + slot) * D, c->xin + (size_t)(c->skip + t) * D, (size_t)D * sizeof(float));
        float *s = c->rs + ((size_t)li * c->keep + slot) * E;
        const float *at = a + (size_t)t * F;
        for (int e = 0; e < E; e++) {
            double sum = 0;
            for (int p = y->offset[e]; p < y->offset[e + 1]; p++) {
                const int i = y->perm[p];
                const double v = ((double)at[i] - r[i]) * wn[i];
                sum += v * v;
            }
            s[e] = (float)sum;
        }
    }
    return NL_OK;
}

static nl_status observe(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    nl_moe_calib *c = user;
    const int li = c->index_of[info->layer];
    if (li < 0) return NL_OK;
    const int F = c->F, rows = info->T - c->skip;
    if (rows <= 0) return NL_OK;
    const float *a = x + (size_t)c->skip * F;
    if (c->pass == 3) return router_rows(c, ctx, info->layer, li, a, rows);
    if (c->pass == 1) {
        double *s = c->sum + (size_t)li * F;
        for (int t = 0; t < rows; t++)
            for (int i = 0; i < F; i++) s[i] += a[(size_t)t * F + i];
        return NL_OK;
    }
    const float *mu = c->mu + (size_t)li * F;
    int64_t *cnt = c->freq + (size_t)li * F;
    for (int t = 0; t < rows; t++) {
        float *b = c->B + (size_t)t * F;
        nl_moe_active_row(a + (size_t)t * F, mu, F, c->ktop, c->tmp, b);
        for (int i = 0; i < F; i++) cnt[i] += b[i] != 0;
    }
    if (c->coact)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, F, rows, 1.0f, c->B, F, 1.0f, c->coact + (size_t)li * F * F, F);
    return NL_OK;
}

typedef struct {
    nl_moe_calib *c;
    nl_progress *prog;
} walk_state;

static nl_status chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    walk_state *w = user;
    w->c->skip = new_from > start ? new_from - start : 0;
    if (w->c->skip > T) w->c->skip = T;
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    if (st == NL_OK && w->c->pass == 1) w->c->n_tokens += T - w->c->skip;
    w->c->tok += T - w->c->skip;
    nl_progress_add(w->prog, T - w->c->skip);
    if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
    return st;
}

nl_status nl_moe_calib_pass(nl_ctx *ctx, nl_moe_calib *c, nl_forward *f, const nl_dataset *ds, int stride, int pass, int shown,
                            int n_passes) {
    c->pass = pass, c->tok = 0, c->xin_layer = -1;
    nl_hook_id id = 0, id_in = 0;
    if (pass == 3 && !c->rx) return nl_errorf(ctx, NL_EINVAL, "internal: calibration pass 3 without nl_moe_calib_router_init");
    nl_status st = nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, observe, c, &id);
    if (st == NL_OK && pass == 3) {
        st = nl_hooks_add_id(nl_forward_hooks(f), NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, observe_in, c, &id_in);
        if (st != NL_OK) nl_hooks_remove(nl_forward_hooks(f), id);
    }
    if (st != NL_OK) return nl_errorf(ctx, st, "too many hooks on the forward pass");
    char what[32];
    snprintf(what, sizeof what, "calibration %d/%d", shown, n_passes);
    nl_progress prog;
    nl_progress_init(&prog, what, ds->n_tokens, "tok", ctx->progress);
    walk_state w = {c, &prog};
    for (int d = 0; d < ds->n_docs && st == NL_OK; d++) st = nl_forward_doc(f, ctx, &ds->docs[d], stride, chunk, &w);
    nl_progress_end(&prog);
    nl_hooks_remove(nl_forward_hooks(f), id);
    if (id_in) nl_hooks_remove(nl_forward_hooks(f), id_in);
    if (st == NL_OK && pass == 3 && c->tok != c->n_tokens)
        st = nl_errorf(ctx, NL_EINVAL, "internal: calibration pass 3 saw %lld tokens, pass 1 %lld", (long long)c->tok,
                       (long long)c->n_tokens);
    if (st == NL_OK && pass == 1) {
        for (int li = 0; li < c->n_layers; li++)
            for (int i = 0; i < c->F; i++)
                c->mu[(size_t)li * c->F + i] = c->n_tokens ? (float)(c->sum[(size_t)li * c->F + i] / (double)c->n_tokens) : 0.0f;
    }
    if (st == NL_OK && pass == 2 && c->coact) { /* SYRK filled the upper triangle: mirror it */
        const int F = c->F;
        for (int li = 0; li < c->n_layers; li++) {
            float *C = c->coact + (size_t)li * F * F;
            for (int i = 0; i < F; i++)
                for (int j = 0; j < i; j++) C[(size_t)i * F + j] = C[(size_t)j * F + i];
        }
    }
    return st;
}

nl_status nl_moe_calib_init(nl_ctx *ctx, nl_moe_calib *c, int L, int F, const int *layers, int n_layers, int max_T,
                            int want_coact) {
    memset(c, 0, sizeof *c);
    c->F = F, c->n_layers = n_layers, c->ktop = nl_moe_active_k(F), c->max_T = max_T, c->xin_layer = -1;
    c->index_of = malloc((size_t)L * sizeof(int));
    c->sum = calloc((size_t)n_layers * F, sizeof(double));
    c->mu = calloc((size_t)n_layers * F, sizeof(float));
    c->freq = calloc((size_t)n_layers * F, sizeof(int64_t));
    c->B = malloc((size_t)max_T * F * sizeof(float));
    c->tmp = malloc((size_t)F * sizeof(float));
    if (want_coact) c->coact = calloc((size_t)n_layers * F * F, sizeof(float));
    if (!c->index_of || !c->sum || !c->mu || !c->freq || !c->B || !c->tmp || (want_coact && !c->coact)) {
        nl_moe_calib_release(c);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory (calibration statistics of %d layers of %d neurons)", n_layers, F);
    }
    for (int l = 0; l < L; l++) c->index_of[l] = -1;
    for (int i = 0; i < n_layers; i++) c->index_of[layers[i]] = i;
    return NL_OK;
}

nl_status nl_moe_calib_router_init(nl_ctx *ctx, nl_moe_calib *c, nl_model *m, const nl_moe *moe, nl_moe_fill fill,
                                   int64_t max_tokens) {
    const nl_config *cfg = nl_model_config(m);
    const int F = c->F, D = cfg->d_model, E = nl_moe_get_info(moe)->E, nl = c->n_layers;
    c->D = D, c->E = E, c->moe = moe;
    c->keep = c->n_tokens < max_tokens ? c->n_tokens : max_tokens;
    c->r = calloc((size_t)nl * F, sizeof(float));
    c->wn = malloc((size_t)nl * F * sizeof(float));
    c->xin = malloc((size_t)c->max_T * D * sizeof(float));
    c->rx = malloc((size_t)nl * (size_t)c->keep * D * sizeof(float));
    c->rs = malloc((size_t)nl * (size_t)c->keep * E * sizeof(float));
    if (!c->r || !c->wn || !c->xin || !c->rx || !c->rs)
        return nl_errorf(ctx, NL_ENOMEM, "out of memory (MLP router data: %lld tokens × %d layers × (%d + %d) floats; lower --router-tokens)",
                         (long long)c->keep, nl, D, E);
    for (int li = 0; li < nl; li++) {
        const int l = nl_moe_layer_index(moe, li);
        if (c->index_of[l] != li) return nl_errorf(ctx, NL_EINVAL, "internal: the MoE layers differ from the calibrated ones");
        nl_layer w;
        nl_status st = nl_model_layer(ctx, m, l, &w);
        if (st != NL_OK) return st;
        for (int i = 0; i < F; i++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                const double v = nl_moe_mat_at(&w.w_down, d, i);
                s += v * v;
            }
            c->wn[(size_t)li * F + i] = (float)sqrt(s);
            if (fill == NL_MOE_FILL_MEAN) c->r[(size_t)li * F + i] = c->mu[(size_t)li * F + i];
        }
    }
    return NL_OK;
}

void nl_moe_calib_release(nl_moe_calib *c) {
    free(c->index_of), free(c->sum), free(c->mu), free(c->freq), free(c->B), free(c->tmp), free(c->coact);
    free(c->r), free(c->wn), free(c->rx), free(c->rs), free(c->xin);
    memset(c, 0, sizeof *c);
}
