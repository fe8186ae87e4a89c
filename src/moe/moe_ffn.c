/* moe_ffn.c — the expert FFN (moe.h): computes only the shared expert and the K experts the
 * router selects per token. At creation every MoE layer's FFN weights are copied in f32 in the
 * expert order of the folder's permutation — gate and up rows (F, D) and the down projection
 * transposed (F, D), so expert e's weights are three contiguous row blocks. A call:
 *   1. routes: sim scores x·ĉ_eᵀ (one GEMM), mlp scores W2·tanh(W1·x̂) (two GEMMs on the
 *      L2-normalised inputs), or the oracle scores s_e of the dense activations (computed only
 *      for the oracle router or when recall is measured); top K per token;
 *   2. starts each output row at b_down (+ M − Σ_{e∈S} m_e for fill mean);
 *   3. adds the shared expert for every token (one GEMM per projection);
 *   4. adds the selected experts: a batch of one token runs GEMVs over the selected experts'
 *      blocks (adjacent selected experts merged into one block); larger batches group the tokens
 *      by expert and run one GEMM per projection per expert over its tokens, scattered back.
 * Hooks: when a hook wants FFN_ACT on the layer, the call also builds the layer's effective
 * activations a' (T, F) in original neuron order — the computed activation for the shared and
 * selected experts' neurons, the representative value r (0 or μ) for the others, so that
 * out = b_down + W_out·a' exactly — and fires FFN_ACT on it (recorders see what the MoE layer
 * uses; interveners may edit it). Every neuron whose value an intervener changed then adds
 * (new − old)·W_out[:, i] to the output, so masking acts on the MoE layer as on the dense one.
 * FFN_PRE and FFN_UP are not fired by MoE layers.
 * Checked by tests/test_moe.c (brute force "compute all, replace unselected by r", K = E equal to
 * the dense FFN, batch-1 vs grouped, FLOPs, recall). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_internal.h"
#include "neuronlab/ops.h"

typedef struct {
    const nl_moe_layer *map;
    float *wg;     /* (F, D) gate rows in expert order (gated FFN) or NULL */
    float *wu;     /* (F, D) up rows (gated) / input rows (plain) in expert order */
    float *bu;     /* (F) input bias in expert order (plain FFN with bias) or NULL */
    float *wd;     /* (F, D) row p = W_out[:, perm[p]] */
    float *wn;     /* (F) ‖W_out[:, perm[p]]‖ */
    float *r;      /* (F) representative value by position: μ (fill mean) or 0 */
    int32_t *sel;  /* (max_T, K) last call's selection */
    int32_t *pos;  /* (F) position of each original neuron (inverse of perm) */
    int last_T;    /* tokens of the last call, -1 before the first */
} rt_layer;

struct nl_moe_ffn {
    const nl_moe *moe;
    nl_moe_ffn_opts o;
    int L, D, F, E, K, N, max_T, gated, max_e;
    nl_act act;
    int *index_of;     /* (L) */
    rt_layer *ly;      /* (n MoE layers) */
    int n;
    float *z;          /* (max_T, E) router scores */
    float *hz;         /* (max_T, E) mlp router hidden layer */
    float *s;          /* (max_T, E) oracle scores */
    float *xg;         /* (max_T, D) gathered inputs */
    float *h, *u;      /* (max(max_T·max(max_e, N), F)) per-expert activations */
    float *y;          /* (max_T, D) per-expert outputs */
    int *cnt;          /* (E) tokens per expert */
    int *list;         /* (E, max_T) tokens of each expert */
    float *tmp;        /* (E) scratch */
    int32_t *best;     /* (K) scratch */
    nl_moe_ffn_stats stats;
    int force_grouped;
    float *act0;       /* (max_T, F) a' before the FFN_ACT hooks, allocated on first use */
};

static void free_layers(nl_moe_ffn *x) {
    for (int i = 0; x->ly && i < x->n; i++) {
        rt_layer *y = &x->ly[i];
        free(y->wg), free(y->wu), free(y->bu), free(y->wd), free(y->wn), free(y->r), free(y->sel), free(y->pos);
    }
    free(x->ly);
}

void nl_moe_ffn_destroy(nl_moe_ffn *x) {
    if (!x) return;
    free_layers(x);
    free(x->index_of), free(x->z), free(x->hz), free(x->s), free(x->xg), free(x->h), free(x->u), free(x->y), free(x->cnt), free(x->list);
    free(x->tmp), free(x->best), free(x->act0);
    free(x);
}

nl_status nl_moe_ffn_create(nl_ctx *ctx, const nl_moe *moe, nl_model *m, const nl_moe_ffn_opts *o, int max_T, nl_moe_ffn **out) {
    *out = NULL;
    const nl_config *c = nl_model_config(m);
    const nl_moe_info *in = nl_moe_get_info(moe);
    if (c->d_ff != in->d_ff || c->d_model != in->d_model || c->n_layers != in->n_layers)
        return nl_errorf(ctx, NL_EINVAL, "the MoE folder does not fit '%s'", nl_model_path(m));
    if (o->K < 1 || o->K > in->E)
        return nl_errorf(ctx, NL_EINVAL, "--k %d is outside 1..%d (the folder has %d experts)", o->K, in->E, in->E);
    if (max_T < 1) return nl_errorf(ctx, NL_EINVAL, "batch must be positive");
    nl_moe_ffn *x = calloc(1, sizeof *x);
    if (!x) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    x->moe = moe, x->o = *o, x->L = c->n_layers, x->D = c->d_model, x->F = c->d_ff, x->E = in->E, x->K = o->K;
    x->N = in->n_shared, x->max_T = max_T, x->gated = c->ffn_gated, x->act = c->act;
    x->max_e = (x->F - x->N + x->E - 1) / x->E;
    const int D = x->D, F = x->F, E = x->E, W = x->max_e > x->N ? x->max_e : x->N;
    x->n = nl_moe_n_layers(moe);
    x->index_of = malloc((size_t)x->L * sizeof(int));
    x->ly = calloc((size_t)x->n + 1, sizeof(rt_layer));
    x->z = malloc((size_t)max_T * E * sizeof(float));
    x->hz = malloc((size_t)max_T * E * sizeof(float));
    x->s = malloc((size_t)max_T * E * sizeof(float));
    x->xg = malloc((size_t)max_T * D * sizeof(float));
    /* batch 1 merges adjacent selected experts into one block of up to F neurons */
    const size_t hw = (size_t)max_T * W > (size_t)F ? (size_t)max_T * W : (size_t)F;
    x->h = malloc(hw * sizeof(float));
    x->u = malloc(hw * sizeof(float));
    x->y = malloc((size_t)max_T * D * sizeof(float));
    x->cnt = malloc((size_t)E * sizeof(int));
    x->list = malloc((size_t)E * max_T * sizeof(int));
    x->tmp = malloc((size_t)E * sizeof(float));
    x->best = malloc((size_t)x->K * sizeof(int32_t));
    nl_status st = NL_OK;
    if (!x->index_of || !x->ly || !x->z || !x->hz || !x->s || !x->xg || !x->h || !x->u || !x->y || !x->cnt || !x->list || !x->tmp || !x->best)
        goto oom;
    for (int l = 0; l < x->L; l++) x->index_of[l] = -1;
    for (int i = 0; i < x->n; i++) {
        const int l = nl_moe_layer_index(moe, i);
        rt_layer *y = &x->ly[i];
        y->map = nl_moe_get_layer(moe, l);
        y->last_T = -1;
        if (o->router == NL_MOE_ROUTER_MLP && (!y->map->mlp_w1 || !y->map->mlp_w2)) {
            st = nl_errorf(ctx, NL_EINVAL, "--router mlp: the MoE folder has no mlp router (it was made by moefy --router sim)");
            goto fail;
        }
        x->index_of[l] = i;
        nl_layer w;
        if ((st = nl_model_layer(ctx, m, l, &w)) != NL_OK) goto fail;
        if (x->gated) y->wg = malloc((size_t)F * D * sizeof(float));
        y->wu = malloc((size_t)F * D * sizeof(float));
        if (w.b_up) y->bu = malloc((size_t)F * sizeof(float));
        y->wd = malloc((size_t)F * D * sizeof(float));
        y->wn = malloc((size_t)F * sizeof(float));
        y->r = calloc((size_t)F, sizeof(float));
        y->sel = malloc((size_t)max_T * x->K * sizeof(int32_t));
        y->pos = malloc((size_t)F * sizeof(int32_t));
        if ((x->gated && !y->wg) || !y->wu || (w.b_up && !y->bu) || !y->wd || !y->wn || !y->r || !y->sel || !y->pos) goto oom;
        for (int p = 0; p < F; p++) y->pos[y->map->perm[p]] = p;
        for (int p = 0; p < F; p++) {
            const int i0 = y->map->perm[p];
            double nn = 0;
            for (int d = 0; d < D; d++) {
                if (x->gated) y->wg[(size_t)p * D + d] = nl_moe_mat_at(&w.w_gate, i0, d);
                y->wu[(size_t)p * D + d] = nl_moe_mat_at(&w.w_up, i0, d);
                float v = nl_moe_mat_at(&w.w_down, d, i0);
                y->wd[(size_t)p * D + d] = v;
                nn += (double)v * v;
            }
            y->wn[p] = (float)sqrt(nn);
            if (y->bu) y->bu[p] = w.b_up[i0];
            if (o->fill == NL_MOE_FILL_MEAN) y->r[p] = y->map->mu[i0];
        }
    }
    *out = x;
    return NL_OK;
oom:
    st = nl_errorf(ctx, NL_ENOMEM, "out of memory (expert weights)");
fail:
    nl_moe_ffn_destroy(x);
    return st;
}

/* a (T, n) = activations of positions [p0, p0+n) on inputs X (T, D) (row stride D); uses b (T, n)
 * as scratch for the gated up projection. Row stride of a and b: lda. */
static void acts(const nl_moe_ffn *x, const rt_layer *y, const float *X, int T, int p0, int n, float *a, float *b, int lda) {
    const int D = x->D;
    if (T == 1) {
        if (x->gated) {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, 1.0f, y->wg + (size_t)p0 * D, D, X, 1, 0.0f, a, 1);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, 1.0f, y->wu + (size_t)p0 * D, D, X, 1, 0.0f, b, 1);
        } else {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, 1.0f, y->wu + (size_t)p0 * D, D, X, 1, 0.0f, a, 1);
        }
    } else if (x->gated) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, D, 1.0f, X, D, y->wg + (size_t)p0 * D, D, 0.0f, a, lda);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, D, 1.0f, X, D, y->wu + (size_t)p0 * D, D, 0.0f, b, lda);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, D, 1.0f, X, D, y->wu + (size_t)p0 * D, D, 0.0f, a, lda);
    }
    for (int t = 0; t < T; t++) {
        float *at = a + (size_t)t * lda;
        const float *bt = b + (size_t)t * lda;
        if (x->gated) {
            nl_act_vec(at, bt, n, x->act);
        } else {
            if (y->bu) for (int i = 0; i < n; i++) at[i] += y->bu[p0 + i];
            nl_act_vec(at, NULL, n, x->act);
        }
    }
}

/* out (T, D) += a (T, n; stride lda) · wd[p0 .. p0+n) */
static void down(const nl_moe_ffn *x, const rt_layer *y, const float *a, int lda, int T, int p0, int n, float *out, int ldo) {
    const int D = x->D;
    if (T == 1) cblas_sgemv(CblasRowMajor, CblasTrans, n, D, 1.0f, y->wd + (size_t)p0 * D, D, a, 1, 1.0f, out, 1);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, n, 1.0f, a, lda, y->wd + (size_t)p0 * D, D, 1.0f, out, ldo);
}

/* ap (T', F) rows of a' in original order: row lt[j] (or j when lt is NULL) gets h row j (n
 * values, stride ldh) at the neurons of positions [p0, p0+n). */
static void scatter(const rt_layer *y, float *ap, int F, const float *h, int ldh, int nrows, const int *lt, int p0, int n) {
    for (int j = 0; j < nrows; j++) {
        float *row = ap + (size_t)(lt ? lt[j] : j) * F;
        const float *hj = h + (size_t)j * ldh;
        for (int i = 0; i < n; i++) row[y->map->perm[p0 + i]] = hj[i];
    }
}

/* best (K) = the K largest of v (E), ties to the lower index, sorted ascending. */
static void top_k(const float *v, int E, int K, float *tmp, int32_t *best) {
    memcpy(tmp, v, (size_t)E * sizeof(float));
    for (int k = 0; k < K; k++) {
        int b = -1;
        for (int e = 0; e < E; e++)
            if (tmp[e] != -INFINITY && (b < 0 || tmp[e] > tmp[b] || (tmp[b] != tmp[b] && tmp[e] == tmp[e]))) b = e;
        best[k] = b;
        tmp[b] = -INFINITY;
    }
    for (int a = 1; a < K; a++) { /* insertion sort */
        int32_t v0 = best[a];
        int b = a;
        while (b > 0 && best[b - 1] > v0) best[b] = best[b - 1], b--;
        best[b] = v0;
    }
}

nl_status nl_moe_ffn_fn(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *xin, float *out) {
    nl_moe_ffn *x = user;
    const int li = call->layer >= 0 && call->layer < x->L ? x->index_of[call->layer] : -1;
    if (li < 0) return nl_ffn_dense(NULL, ctx, call, xin, out);
    if (call->T > x->max_T)
        return nl_errorf(ctx, NL_EINVAL, "expert FFN called with %d tokens, more than the %d it was made for", call->T, x->max_T);
    rt_layer *y = &x->ly[li];
    const nl_moe_layer *map = y->map;
    const int T = call->T, D = x->D, F = x->F, E = x->E, K = x->K, N = x->N;
    const int oracle = x->o.router == NL_MOE_ROUTER_ORACLE, dense = oracle || x->o.recall;
    float *A = call->pre; /* (T, F) dense activations in expert order, when needed */
    const int fire = call->hooks && nl_hooks_wants(call->hooks, NL_HOOK_FFN_ACT, call->layer);
    float *AP = fire ? call->up : NULL; /* (T, F) a' in original order, for the FFN_ACT hooks */
    if (fire && !x->act0 && !(x->act0 = malloc((size_t)x->max_T * F * sizeof(float))))
        return nl_errorf(ctx, NL_ENOMEM, "out of memory (expert FFN activations)");
    if (dense) {
        acts(x, y, xin, T, 0, F, A, call->up, F);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) {
                double s = 0;
                for (int p = map->offset[e]; p < map->offset[e + 1]; p++) {
                    double v = ((double)A[(size_t)t * F + p] - y->r[p]) * y->wn[p];
                    s += v * v;
                }
                x->s[(size_t)t * E + e] = (float)s;
            }
    }
    const float *z = x->s;
    if (x->o.router == NL_MOE_ROUTER_MLP) { /* x̂ into xg (free until step 4), h = tanh(x̂·W1ᵀ), z = h·W2ᵀ */
        for (int t = 0; t < T; t++) {
            const float *xt = xin + (size_t)t * D;
            float *xn = x->xg + (size_t)t * D;
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)xt[d] * xt[d];
            const double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
            for (int d = 0; d < D; d++) xn[d] = (float)(xt[d] * inv);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, E, D, 1.0f, x->xg, D, map->mlp_w1, D, 0.0f, x->hz, E);
        for (size_t i = 0; i < (size_t)T * E; i++) x->hz[i] = tanhf(x->hz[i]);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, E, E, 1.0f, x->hz, E, map->mlp_w2, E, 0.0f, x->z, E);
        z = x->z;
    } else if (!oracle) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, E, D, 1.0f, xin, D, map->router_sim, D, 0.0f, x->z, E);
        z = x->z;
    }
    for (int t = 0; t < T; t++) top_k(z + (size_t)t * E, E, K, x->tmp, y->sel + (size_t)t * K);
    y->last_T = T;
    if (dense) {
        for (int t = 0; t < T; t++) {
            const float *st = x->s + (size_t)t * E;
            double num = 0, den = 0;
            for (int k = 0; k < K; k++) num += st[y->sel[(size_t)t * K + k]];
            top_k(st, E, K, x->tmp, x->best);
            for (int k = 0; k < K; k++) den += st[x->best[k]];
            x->stats.recall_sum += den > 0 ? num / den : 1.0;
            x->stats.recall_n++;
        }
    }
    if (fire)
        for (int t = 0; t < T; t++)
            for (int p = 0; p < F; p++) AP[(size_t)t * F + map->perm[p]] = y->r[p];
    /* 2. bias and fill */
    const float *bd = call->w ? call->w->b_down : NULL;
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * D;
        if (bd) memcpy(o, bd, (size_t)D * sizeof(float));
        else memset(o, 0, (size_t)D * sizeof(float));
        if (x->o.fill == NL_MOE_FILL_MEAN) {
            for (int d = 0; d < D; d++) o[d] += map->stat_sum[d];
            for (int k = 0; k < K; k++) {
                const float *me = map->stat + (size_t)y->sel[(size_t)t * K + k] * D;
                for (int d = 0; d < D; d++) o[d] -= me[d];
            }
        }
    }
    /* 3. shared expert */
    if (N > 0) {
        if (dense) {
            down(x, y, A, F, T, 0, N, out, D);
            if (fire) scatter(y, AP, F, A, F, T, NULL, 0, N);
        } else {
            acts(x, y, xin, T, 0, N, x->h, x->u, N);
            down(x, y, x->h, N, T, 0, N, out, D);
            if (fire) scatter(y, AP, F, x->h, N, T, NULL, 0, N);
        }
    }
    /* 4. routed experts */
    double neurons = 0;
    if (T == 1 && !x->force_grouped) {
        const int32_t *sel = y->sel;
        for (int k = 0; k < K;) {
            int k2 = k + 1;
            while (k2 < K && sel[k2] == sel[k2 - 1] + 1) k2++;
            const int p0 = map->offset[sel[k]], n = map->offset[sel[k2 - 1] + 1] - p0;
            if (dense) {
                down(x, y, A + p0, F, 1, p0, n, out, D);
                if (fire) scatter(y, AP, F, A + p0, F, 1, NULL, p0, n);
            } else {
                acts(x, y, xin, 1, p0, n, x->h, x->u, n);
                down(x, y, x->h, n, 1, p0, n, out, D);
                if (fire) scatter(y, AP, F, x->h, n, 1, NULL, p0, n);
            }
            neurons += n;
            k = k2;
        }
    } else {
        memset(x->cnt, 0, (size_t)E * sizeof(int));
        for (int t = 0; t < T; t++)
            for (int k = 0; k < K; k++) {
                const int e = y->sel[(size_t)t * K + k];
                x->list[(size_t)e * x->max_T + x->cnt[e]++] = t;
            }
        for (int e = 0; e < E; e++) {
            const int ne = x->cnt[e], p0 = map->offset[e], n = map->offset[e + 1] - p0;
            if (!ne) continue;
            const int *lt = x->list + (size_t)e * x->max_T;
            if (dense) {
                for (int j = 0; j < ne; j++) memcpy(x->h + (size_t)j * n, A + (size_t)lt[j] * F + p0, (size_t)n * sizeof(float));
            } else {
                for (int j = 0; j < ne; j++) memcpy(x->xg + (size_t)j * D, xin + (size_t)lt[j] * D, (size_t)D * sizeof(float));
                acts(x, y, x->xg, ne, p0, n, x->h, x->u, n);
            }
            if (fire) scatter(y, AP, F, x->h, n, ne, lt, p0, n);
            if (ne == 1) {
                memset(x->y, 0, (size_t)D * sizeof(float));
                down(x, y, x->h, n, 1, p0, n, x->y, D);
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ne, D, n, 1.0f, x->h, n, y->wd + (size_t)p0 * D, D, 0.0f, x->y, D);
            }
            for (int j = 0; j < ne; j++) {
                float *o = out + (size_t)lt[j] * D;
                const float *yy = x->y + (size_t)j * D;
                for (int d = 0; d < D; d++) o[d] += yy[d];
            }
            neurons += (double)ne * n;
        }
    }
    /* 5. FFN_ACT hooks on a'; changed neurons correct the output */
    if (fire) {
        memcpy(x->act0, AP, (size_t)T * F * sizeof(float));
        nl_status st = nl_ffn_fire(call, ctx, NL_HOOK_FFN_ACT, F, AP);
        if (st != NL_OK) return st;
        for (int t = 0; t < T; t++) {
            const float *a0 = x->act0 + (size_t)t * F, *a1 = AP + (size_t)t * F;
            float *o = out + (size_t)t * D;
            for (int i = 0; i < F; i++) {
                if (a1[i] == a0[i] || (a1[i] != a1[i] && a0[i] != a0[i])) continue;
                const float dlt = a1[i] - a0[i];
                const float *wrow = y->wd + (size_t)y->pos[i] * D;
                for (int d = 0; d < D; d++) o[d] += dlt * wrow[d];
            }
        }
    }
    const double rate = (x->gated ? 6.0 : 4.0) * D;
    x->stats.tokens += T;
    if (oracle) x->stats.flops += (double)T * rate * F;
    else x->stats.flops += rate * (neurons + (double)T * N) + (double)T * 2.0 * D * E + (x->o.fill == NL_MOE_FILL_MEAN ? (double)T * D * K : 0) +
                           (x->o.router == NL_MOE_ROUTER_MLP ? (double)T * 2.0 * E * E : 0);
    /* 6. ROUTING observers (hooks.h): the selection (T, K), ascending ids; no weights */
    if (call->hooks && nl_hooks_wants(call->hooks, NL_HOOK_ROUTING, call->layer)) {
        const nl_moe_routing mr = {E, K, y->sel, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL};
        nl_hook_info info = {NL_HOOK_ROUTING, call->layer, T, K, call->pos0, call->tokens, &mr, 0};
        return nl_hooks_fire(call->hooks, ctx, &info, NULL);
    }
    return NL_OK;
}

nl_status nl_moe_ffn_attach(nl_moe_ffn *x, nl_ctx *ctx, nl_forward *f) {
    for (int i = 0; i < x->n; i++) {
        nl_status st = nl_forward_set_ffn(f, ctx, nl_moe_layer_index(x->moe, i), nl_moe_ffn_fn, x);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

void nl_moe_ffn_detach(nl_moe_ffn *x, nl_forward *f) {
    nl_ctx c;
    nl_ctx_init(&c);
    for (int i = 0; i < x->n; i++) nl_forward_set_ffn(f, &c, nl_moe_layer_index(x->moe, i), NULL, NULL);
}

nl_moe_ffn_stats nl_moe_ffn_get_stats(const nl_moe_ffn *x) { return x->stats; }
void nl_moe_ffn_reset_stats(nl_moe_ffn *x) { memset(&x->stats, 0, sizeof x->stats); }
void nl_moe_ffn_force_grouped(nl_moe_ffn *x, int on) { x->force_grouped = on; }

const int32_t *nl_moe_ffn_last_selection(const nl_moe_ffn *x, int l, int *T) {
    const int li = l >= 0 && l < x->L ? x->index_of[l] : -1;
    if (li < 0 || x->ly[li].last_T < 0) return NULL;
    *T = x->ly[li].last_T;
    return x->ly[li].sel;
}
