/* train_model.c — parameters, init and the fused forward + backward pass of the trainable
 * Llama decoder (see train_model.h for the model, the objective and the layout).
 *
 * Rules: every buffer is allocated once in nl_train_model_create; a pass only reads the windows
 * and writes activations, gradients and scratch. Activations kept per layer for the backward pass:
 * the block input x, rmsnorm₁ output and rstd, q|k|v after RoPE, attention probabilities, head
 * outputs, the residual h after attention, rmsnorm₂ output and rstd, gate|up pre-activations and
 * the FFN activation a.
 * Checked by tests/test_train_model.c.
 */
#include "neuronlab/train_model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/ops.h"
#include "neuronlab/rng.h"
#include "neuronlab/train_ops.h"

typedef struct {
    float *ln1;  /* (D) */
    float *wqkv; /* (W, D) = [q_proj (Q, D); k_proj (KV, D); v_proj (KV, D)] */
    float *wo;   /* (D, Q) */
    float *ln2;  /* (D) */
    float *wgu;  /* (2F, D) = [gate_proj (F, D); up_proj (F, D)] */
    float *wd;   /* (D, F) */
} layer_view;

struct nl_train_model {
    nl_train_dims d;
    int B, S, T, Dh, Q, KV, W;
    int64_t n_params;
    float *params, *grads;       /* (n_params) */
    nl_train_tensor *tensors;
    int n_tensors;
    int64_t off_embed, off_normf, off_lm, *off_layer;
    /* activations, per layer l (L+1 entries for x: x[L] is the final residual) */
    float **x, **xn1, **rstd1, **qkv, **P, **att, **h, **xn2, **rstd2, **gu, **a;
    float *xnf, *rstdf;          /* (T, D), (T) */
    float *logits;               /* (T, V), then its gradient */
    /* backward scratch */
    float *dx, *dxn;             /* (T, D) */
    float *da;                   /* (T, F) */
    float *dgu;                  /* (T, 2F) */
    float *datt;                 /* (T, Q) */
    float *dqkv;                 /* (T, W) */
    float *dkv;                  /* (T, 2Q) */
    float *dp;                   /* (n_scratch, S, S) */
    int n_scratch;
    double *rowbuf;              /* (T) */
    float *cs, *sn;              /* (S, Dh/2) RoPE tables */
    int32_t *inp, *tgt;          /* (T) */
    float *block;                /* every activation buffer above, one allocation */
    int64_t act_bytes;
};

static layer_view layer_of(const nl_train_model *m, float *base, int l) {
    const int64_t D = m->d.d_model, F = m->d.d_ff;
    layer_view v;
    float *p = base + m->off_layer[l];
    v.ln1 = p; p += D;
    v.wqkv = p; p += (int64_t)m->W * D;
    v.wo = p; p += D * m->Q;
    v.ln2 = p; p += D;
    v.wgu = p; p += 2 * F * D;
    v.wd = p;
    return v;
}

static void add_tensor(nl_train_model *m, const char *name, int64_t *off, int ndim, int64_t s0, int64_t s1,
                       float std) {
    nl_train_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = *off;
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = ndim == 2 ? s1 : 1;
    t->numel = s0 * t->shape[1];
    t->decay = ndim == 2;
    t->init_std = std;
    *off += t->numel;
}

nl_status nl_train_model_create(nl_ctx *ctx, const nl_train_dims *d, int B, int S, nl_train_model **out) {
    *out = NULL;
    if (d->d_model <= 0 || d->n_layers <= 0 || d->n_heads <= 0 || d->n_kv_heads <= 0 || d->d_ff <= 0 ||
        d->vocab_size <= 0 || B <= 0 || S <= 0)
        return nl_errorf(ctx, NL_EINVAL, "model dimensions and batch must be positive");
    if (d->d_model % d->n_heads)
        return nl_errorf(ctx, NL_EINVAL, "d_model %d is not divisible by n_heads %d", d->d_model, d->n_heads);
    if (d->n_heads % d->n_kv_heads)
        return nl_errorf(ctx, NL_EINVAL, "n_heads %d is not a multiple of n_kv_heads %d", d->n_heads, d->n_kv_heads);
    if ((d->d_model / d->n_heads) % 2)
        return nl_errorf(ctx, NL_EINVAL, "head dimension d_model/n_heads = %d must be even (RoPE)",
                         d->d_model / d->n_heads);
    if (!nl_act_trainable(d->act))
        return nl_errorf(ctx, NL_EUNSUPPORTED, "hidden_act '%s' has no backward pass (supported: silu, gelu, relu, relu2)",
                         nl_act_name(d->act));
    if (!(d->rope_theta > 0) || !(d->norm_eps >= 0))
        return nl_errorf(ctx, NL_EINVAL, "rope_theta must be positive and norm_eps >= 0");
    nl_train_model *m = calloc(1, sizeof *m);
    if (!m) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    m->d = *d;
    const int L = d->n_layers;
    const int64_t D = d->d_model, F = d->d_ff, V = d->vocab_size;
    m->B = B;
    m->S = S;
    m->T = B * S;
    m->Dh = d->d_model / d->n_heads;
    m->Q = d->n_heads * m->Dh;
    m->KV = d->n_kv_heads * m->Dh;
    m->W = m->Q + 2 * m->KV;
    const int64_t T = m->T, Q = m->Q, KV = m->KV, W = m->W;

    m->tensors = calloc((size_t)(9 * L + 3), sizeof *m->tensors);
    m->off_layer = calloc((size_t)L, sizeof *m->off_layer);
    if (!m->tensors || !m->off_layer) goto oom;
    const float std = 0.02f, std_out = (float)(0.02 / sqrt(2.0 * L));
    int64_t off = 0;
    m->off_embed = off;
    add_tensor(m, "model.embed_tokens.weight", &off, 2, V, D, std);
    for (int l = 0; l < L; l++) {
        char n[96];
        m->off_layer[l] = off;
#define T_(suffix, nd, a, b, s)                                                  \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                      \
    add_tensor(m, n, &off, nd, a, b, s)
        T_("input_layernorm.weight", 1, D, 1, 0.0f);
        T_("self_attn.q_proj.weight", 2, Q, D, std);
        T_("self_attn.k_proj.weight", 2, KV, D, std);
        T_("self_attn.v_proj.weight", 2, KV, D, std);
        T_("self_attn.o_proj.weight", 2, D, Q, std_out);
        T_("post_attention_layernorm.weight", 1, D, 1, 0.0f);
        T_("mlp.gate_proj.weight", 2, F, D, std);
        T_("mlp.up_proj.weight", 2, F, D, std);
        T_("mlp.down_proj.weight", 2, D, F, std_out);
#undef T_
    }
    m->off_normf = off;
    add_tensor(m, "model.norm.weight", &off, 1, D, 1, 0.0f);
    m->off_lm = m->off_embed;
    if (!d->tie_embeddings) {
        m->off_lm = off;
        add_tensor(m, "lm_head.weight", &off, 2, V, D, std);
    }
    m->n_params = off;
    m->params = calloc((size_t)off, sizeof(float));
    m->grads = calloc((size_t)off, sizeof(float));
    if (!m->params || !m->grads) goto oom;

    /* activation block */
    m->n_scratch = omp_get_max_threads();
    if (m->n_scratch < 1) m->n_scratch = 1;
    const int64_t BH = (int64_t)B * d->n_heads, SS = (int64_t)S * S, half = m->Dh / 2;
    const int64_t per_layer = 3 * T * D + 2 * T + T * W + BH * SS + T * Q + T * D + 2 * T * F + T * F;
    const int64_t total = (int64_t)L * per_layer + T * D /* x[L] */ + T * D + T + T * V /* head */ +
                          2 * T * D + T * F + 2 * T * F + T * Q + T * W + 2 * T * Q + m->n_scratch * SS + 2 * S * half;
    m->act_bytes = total * (int64_t)sizeof(float) + T * (int64_t)(sizeof(double) + 2 * sizeof(int32_t));
    m->block = malloc((size_t)total * sizeof(float));
    m->rowbuf = malloc((size_t)T * sizeof(double));
    m->inp = malloc((size_t)T * sizeof(int32_t));
    m->tgt = malloc((size_t)T * sizeof(int32_t));
    float ***lists[] = {&m->x, &m->xn1, &m->rstd1, &m->qkv, &m->P, &m->att, &m->h, &m->xn2, &m->rstd2, &m->gu, &m->a};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (!(*lists[i] = calloc((size_t)L + 1, sizeof(float *)))) goto oom;
    if (!m->block || !m->rowbuf || !m->inp || !m->tgt) goto oom;
    float *p = m->block;
#define TAKE(n) (p += (n), p - (n))
    for (int l = 0; l < L; l++) {
        m->x[l] = TAKE(T * D);
        m->xn1[l] = TAKE(T * D);
        m->rstd1[l] = TAKE(T);
        m->qkv[l] = TAKE(T * W);
        m->P[l] = TAKE(BH * SS);
        m->att[l] = TAKE(T * Q);
        m->h[l] = TAKE(T * D);
        m->xn2[l] = TAKE(T * D);
        m->rstd2[l] = TAKE(T);
        m->gu[l] = TAKE(2 * T * F);
        m->a[l] = TAKE(T * F);
    }
    m->x[L] = TAKE(T * D);
    m->xnf = TAKE(T * D);
    m->rstdf = TAKE(T);
    m->logits = TAKE(T * V);
    m->dx = TAKE(T * D);
    m->dxn = TAKE(T * D);
    m->da = TAKE(T * F);
    m->dgu = TAKE(2 * T * F);
    m->datt = TAKE(T * Q);
    m->dqkv = TAKE(T * W);
    m->dkv = TAKE(2 * T * Q);
    m->dp = TAKE(m->n_scratch * SS);
    m->cs = TAKE(S * half);
    m->sn = TAKE(S * half);
#undef TAKE
    NL_ASSERT(p == m->block + total);
    {
        nl_config c = {0};
        c.rope_theta = d->rope_theta;
        c.rotary_dim = m->Dh;
        c.rope_scaling = NL_ROPE_SCALING_NONE;
        float inv[1024];
        NL_ASSERT(half <= 1024);
        nl_rope_inv_freq(&c, inv);
        nl_rope_table(m->cs, m->sn, S, (int)half, inv);
    }
    *out = m;
    return NL_OK;
oom:
    nl_train_model_destroy(m);
    return nl_errorf(ctx, NL_ENOMEM, "cannot allocate the model (%d layers, d_model %d, batch %d x %d tokens): out of memory",
                     d->n_layers, d->d_model, B, S);
}

void nl_train_model_destroy(nl_train_model *m) {
    if (!m) return;
    free(m->params); free(m->grads); free(m->tensors); free(m->off_layer); free(m->block); free(m->rowbuf);
    free(m->inp); free(m->tgt);
    free(m->x); free(m->xn1); free(m->rstd1); free(m->qkv); free(m->P); free(m->att); free(m->h); free(m->xn2);
    free(m->rstd2); free(m->gu); free(m->a);
    free(m);
}

const nl_train_dims *nl_train_model_dims(const nl_train_model *m) { return &m->d; }
int64_t nl_train_model_n_params(const nl_train_model *m) { return m->n_params; }
float *nl_train_model_params(nl_train_model *m) { return m->params; }
float *nl_train_model_grads(nl_train_model *m) { return m->grads; }
int nl_train_model_n_tensors(const nl_train_model *m) { return m->n_tensors; }
const nl_train_tensor *nl_train_model_tensor(const nl_train_model *m, int i) { return &m->tensors[i]; }
int64_t nl_train_model_act_bytes(const nl_train_model *m) { return m->act_bytes; }

const nl_train_tensor *nl_train_model_find(const nl_train_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

double nl_train_model_flops_per_window(const nl_train_model *m) {
    const double S = m->S, D = m->d.d_model, F = m->d.d_ff, V = m->d.vocab_size, L = m->d.n_layers;
    const double mats = L * (m->W * D + D * m->Q + 3 * F * D) + V * D; /* weights in GEMMs */
    double blk = 0; /* Σ over query blocks of rows × keys read (train_ops.h: NL_ATT_BLOCK) */
    for (int r0 = 0; r0 < m->S; r0 += NL_ATT_BLOCK) {
        const int r1 = m->S - r0 < NL_ATT_BLOCK ? m->S : r0 + NL_ATT_BLOCK;
        blk += (double)(r1 - r0) * r1;
    }
    const double attn = L * m->d.n_heads * 2.0 * (blk * m->Dh); /* one attention product, as executed */
    /* forward 2·, backward 4· (dx and dW) per weight; attention backward has 4 products of the same size */
    return S * 6.0 * mats + 2.0 * attn + 4.0 * attn;
}

void nl_train_model_init(nl_train_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_tensors; i++) {
        const nl_train_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->init_std == 0.0f) {
            for (int64_t k = 0; k < t->numel; k++) p[k] = 1.0f;
            continue;
        }
        nl_rng r;
        nl_rng_derive(&r, seed, 1, (uint64_t)i);
        for (int64_t k = 0; k < t->numel; k++) p[k] = (float)(nl_rng_normal(&r) * t->init_std);
    }
}

void nl_train_model_zero_grad(nl_train_model *m) { memset(m->grads, 0, (size_t)m->n_params * sizeof(float)); }

/* Forward over B windows of m->inp into logits; keeps the activations. Returns Σ|a| over layers. */
static double forward(nl_train_model *m, int B) {
    const nl_train_dims *d = &m->d;
    const int T = B * m->S, D = d->d_model, F = d->d_ff, L = d->n_layers, Q = m->Q, W = m->W;
    const float *E = m->params + m->off_embed;
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) memcpy(m->x[0] + (size_t)t * D, E + (size_t)m->inp[t] * D, (size_t)D * sizeof(float));
    double abs_sum = 0;
    for (int l = 0; l < L; l++) {
        layer_view w = layer_of(m, m->params, l);
        nl_rmsnorm_fwd(m->xn1[l], m->rstd1[l], m->x[l], w.ln1, T, D, d->norm_eps);
        nl_linear_fwd(m->qkv[l], m->xn1[l], w.wqkv, T, D, W, 0);
        nl_rope_rows(m->qkv[l], W, T, m->S, d->n_heads + d->n_kv_heads, m->Dh, m->cs, m->sn, 0);
        nl_attention_fwd(m->att[l], m->P[l], m->qkv[l], B, m->S, d->n_heads, d->n_kv_heads, m->Dh);
        memcpy(m->h[l], m->x[l], (size_t)T * D * sizeof(float));
        nl_linear_fwd(m->h[l], m->att[l], w.wo, T, Q, D, 1);
        nl_rmsnorm_fwd(m->xn2[l], m->rstd2[l], m->h[l], w.ln2, T, D, d->norm_eps);
        nl_linear_fwd(m->gu[l], m->xn2[l], w.wgu, T, D, 2 * F, 0);
        nl_gated_act_fwd(m->a[l], m->gu[l], T, F, d->act);
        memcpy(m->x[l + 1], m->h[l], (size_t)T * D * sizeof(float));
        nl_linear_fwd(m->x[l + 1], m->a[l], w.wd, T, F, D, 1);
        nl_abs_rowsum(m->rowbuf, m->a[l], T, F);
        for (int t = 0; t < T; t++) abs_sum += m->rowbuf[t];
    }
    nl_rmsnorm_fwd(m->xnf, m->rstdf, m->x[L], m->params + m->off_normf, T, D, d->norm_eps);
    nl_linear_fwd(m->logits, m->xnf, m->params + m->off_lm, T, D, d->vocab_size, 0);
    return abs_sum;
}

void nl_train_model_forward_backward(nl_train_model *m, const int32_t *windows, int B, float l1, float grad_scale,
                                     double *ce, double *l1_mean) {
    NL_ASSERT(B > 0 && B <= m->B);
    const nl_train_dims *d = &m->d;
    const int S = m->S, T = B * S, D = d->d_model, F = d->d_ff, L = d->n_layers, Q = m->Q, W = m->W,
              V = d->vocab_size;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++) {
            const int32_t in = windows[(size_t)b * (S + 1) + s], tg = windows[(size_t)b * (S + 1) + s + 1];
            NL_ASSERT(in >= 0 && in < V && tg >= 0 && tg < V);
            m->inp[b * S + s] = in;
            m->tgt[b * S + s] = tg;
        }
    const double abs_sum = forward(m, B);
    if (l1_mean) *l1_mean = abs_sum / ((double)L * T * F);
    nl_cross_entropy(m->logits, m->rowbuf, m->tgt, T, V, grad_scale / (float)T);
    if (ce) {
        double s = 0;
        for (int t = 0; t < T; t++) s += m->rowbuf[t];
        *ce = s / T;
    }
    /* head: logits = xnf · lm_headᵀ */
    nl_linear_bwd(m->dxn, 0, m->grads + m->off_lm, m->logits, m->xnf, m->params + m->off_lm, T, D, V);
    memset(m->dx, 0, (size_t)T * D * sizeof(float));
    nl_rmsnorm_bwd(m->dx, m->grads + m->off_normf, m->dxn, m->x[L], m->rstdf, m->params + m->off_normf, T, D);
    const float c1 = l1 != 0.0f ? (float)((double)grad_scale * l1 / ((double)L * T * F)) : 0.0f;
    for (int l = L - 1; l >= 0; l--) {
        layer_view w = layer_of(m, m->params, l), g = layer_of(m, m->grads, l);
        /* x[l+1] = h + a · downᵀ ; dx holds ∂/∂x[l+1] */
        nl_linear_bwd(m->da, 0, g.wd, m->dx, m->a[l], w.wd, T, F, D);
        if (c1 != 0.0f) nl_l1_bwd(m->da, m->a[l], (int64_t)T * F, c1);
        nl_gated_act_bwd(m->dgu, m->da, m->gu[l], T, F, d->act);
        nl_linear_bwd(m->dxn, 0, g.wgu, m->dgu, m->xn2[l], w.wgu, T, D, 2 * F);
        nl_rmsnorm_bwd(m->dx, g.ln2, m->dxn, m->h[l], m->rstd2[l], w.ln2, T, D); /* dx = ∂/∂h */
        /* h = x[l] + att · o_projᵀ */
        nl_linear_bwd(m->datt, 0, g.wo, m->dx, m->att[l], w.wo, T, Q, D);
        nl_attention_bwd(m->dqkv, m->dkv, m->dp, m->n_scratch, m->datt, m->P[l], m->qkv[l], B, S, d->n_heads,
                         d->n_kv_heads, m->Dh);
        nl_rope_rows(m->dqkv, W, T, S, d->n_heads + d->n_kv_heads, m->Dh, m->cs, m->sn, 1);
        nl_linear_bwd(m->dxn, 0, g.wqkv, m->dqkv, m->xn1[l], w.wqkv, T, D, W);
        nl_rmsnorm_bwd(m->dx, g.ln1, m->dxn, m->x[l], m->rstd1[l], w.ln1, T, D); /* dx = ∂/∂x[l] */
    }
    /* embedding rows: columns split over threads, rows summed in order */
    float *gE = m->grads + m->off_embed;
    const float *dx = m->dx;
    const int32_t *inp = m->inp;
#pragma omp parallel if ((int64_t)T * D > NL_PAR_MIN)
    {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int i0 = (int)((int64_t)D * id / nt), i1 = (int)((int64_t)D * (id + 1) / nt);
        for (int t = 0; t < T; t++) {
            float *row = gE + (size_t)inp[t] * D;
            const float *src = dx + (size_t)t * D;
            for (int i = i0; i < i1; i++) row[i] += src[i];
        }
    }
}

void nl_train_model_nll(nl_train_model *m, const int32_t *inputs, const int32_t *targets, int B, double *nll,
                        int64_t *n) {
    NL_ASSERT(B > 0 && B <= m->B);
    const int T = B * m->S, V = m->d.vocab_size;
    for (int t = 0; t < T; t++) {
        NL_ASSERT(inputs[t] >= 0 && inputs[t] < V && targets[t] < V);
        m->inp[t] = inputs[t];
        m->tgt[t] = targets[t];
    }
    forward(m, B);
    nl_cross_entropy(m->logits, m->rowbuf, m->tgt, T, V, 0.0f);
    for (int t = 0; t < T; t++)
        if (m->tgt[t] >= 0) {
            *nll += m->rowbuf[t];
            (*n)++;
        }
}
