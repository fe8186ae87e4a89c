/* train_model.c — parameters, init and the fused forward + backward pass of the trainable
 * Llama decoder (see train_model.h for the model, the objective and the layout).
 *
 * Rules: every buffer is allocated once in nl_train_model_create; a pass only reads the windows
 * and writes activations, gradients and scratch. Activations kept per layer for the backward pass:
 * the block input x, rmsnorm₁ output and rstd, q|k|v after RoPE, attention probabilities, head
 * outputs, the residual h after attention, rmsnorm₂ output and rstd, gate|up pre-activations and
 * the FFN activation a. MoE layers keep instead: router probabilities, chosen experts and weights,
 * the grouping of (token, slot) pairs by expert, each pair's gate|up pre-activations, activation and
 * expert output (grouped rows), and the shared expert's pre-activations, activation, output and gate
 * logit. A grouped row r of expert e is token rows[r], slot slot[r] (= t·k + j); experts in order.
 * Checked by tests/test_train_model.c and tests/test_train_moe.c.
 */
#include "neuronlab/train_model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/forward.h"
#include "neuronlab/ops.h"
#include "neuronlab/rng.h"
#include "neuronlab/train_ops.h"

typedef struct {
    float *ln1;  /* (D) */
    float *wqkv; /* (W, D) = [q_proj (Q, D); k_proj (KV, D); v_proj (KV, D)] */
    float *wo;   /* (D, Q) */
    float *ln2;  /* (D) */
    float *wgu;  /* (2F, D) = [gate_proj (F, D); up_proj (F, D)] (dense layers) */
    float *wd;   /* (D, F) */
    /* MoE layers */
    float *router; /* (E, D) */
    float *ex;     /* E blocks of 3·Fe·D: [gate (Fe, D); up (Fe, D); down (D, Fe)] */
    float *sh_gu;  /* (2Fs, D) shared expert gate|up */
    float *sh_d;   /* (D, Fs) */
    float *sh_g;   /* (1, D) shared_expert_gate */
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
    /* mixture of experts (NULL lists for dense models); per layer */
    int Fmax;                    /* max(F, Fe, Fs): rows of da/dgu */
    float **prob;                /* (T, E) router probabilities */
    float **wts;                 /* (T, k) routing weights (renormalised when norm_topk) */
    float **psum;                /* (T) Σ of the k chosen probabilities */
    float **ys;                  /* (T·k, D) expert outputs, grouped rows */
    float **sgu, **sa, **sy;     /* shared expert (T, 2Fs), (T, Fs), (T, D) */
    float **sgl;                 /* (T) shared gate logits */
    int **sel;                   /* (T, k) chosen experts */
    int **off;                   /* (E + 1) first grouped row of each expert */
    int **rows, **slot;          /* (T·k) token and slot of each grouped row */
    float *xg, *dyg, *dxg;       /* (T, D) scratch: gathered rows; dxg is also the forward's MoE output */
    float *dprob;                /* (T, E) */
    float *dw;                   /* (T·k) gradient of each slot's weight */
    double *count;               /* (E) token-slots per expert over all layers (last pass) */
    double *psum_e;              /* (E) Σ of router probabilities per expert over all layers */
    int *iblock;
};

static layer_view layer_of(const nl_train_model *m, float *base, int l) {
    const int64_t D = m->d.d_model, F = m->d.d_ff;
    layer_view v = {0};
    float *p = base + m->off_layer[l];
    v.ln1 = p; p += D;
    v.wqkv = p; p += (int64_t)m->W * D;
    v.wo = p; p += D * m->Q;
    v.ln2 = p; p += D;
    if (!m->d.moe) {
        v.wgu = p; p += 2 * F * D;
        v.wd = p;
        return v;
    }
    const int64_t E = m->d.n_experts, Fe = m->d.d_expert, Fs = m->d.d_shared;
    v.router = p; p += E * D;
    v.ex = p; p += E * 3 * Fe * D;
    if (Fs > 0) {
        v.sh_gu = p; p += 2 * Fs * D;
        v.sh_d = p; p += D * Fs;
        v.sh_g = p;
    }
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
    if (d->d_model <= 0 || d->n_layers <= 0 || d->n_heads <= 0 || d->n_kv_heads <= 0 || (!d->moe && d->d_ff <= 0) ||
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
    if (d->moe && (d->n_experts < 1 || d->n_experts > NL_MOE_MAX_EXPERTS || d->top_k < 1 || d->top_k > d->n_experts ||
                   d->d_expert < 1 || d->d_shared < 0 || (d->d_shared > 0 && d->moe != 2)))
        return nl_errorf(ctx, NL_EINVAL, "bad mixture of experts: %d experts, top_k %d, d_expert %d, shared %d",
                         d->n_experts, d->top_k, d->d_expert, d->d_shared);
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

    const int moe = d->moe, E = moe ? d->n_experts : 0, K = moe ? d->top_k : 0;
    const int64_t Fe = moe ? d->d_expert : 0, Fs = moe ? d->d_shared : 0, FF = moe ? 0 : F;
    m->tensors = calloc((size_t)((11 + 3 * E) * L + 3), sizeof *m->tensors); /* moe: 6 + router + 3E + 4 shared */
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
        if (!moe) {
            T_("mlp.gate_proj.weight", 2, F, D, std);
            T_("mlp.up_proj.weight", 2, F, D, std);
            T_("mlp.down_proj.weight", 2, D, F, std_out);
        } else if (moe == 1) { /* mixtral */
            T_("block_sparse_moe.gate.weight", 2, E, D, std);
            for (int e = 0; e < E; e++) {
                char x[64];
#define X_(suffix, a, b, s_)                                                     \
    snprintf(x, sizeof x, "block_sparse_moe.experts.%d." suffix, e);            \
    T_(x, 2, a, b, s_)
                X_("w1.weight", Fe, D, std);
                X_("w3.weight", Fe, D, std);
                X_("w2.weight", D, Fe, std_out);
#undef X_
            }
        } else { /* qwen2_moe */
            T_("mlp.gate.weight", 2, E, D, std);
            for (int e = 0; e < E; e++) {
                char x[64];
#define X_(suffix, a, b, s_)                                                     \
    snprintf(x, sizeof x, "mlp.experts.%d." suffix, e);                         \
    T_(x, 2, a, b, s_)
                X_("gate_proj.weight", Fe, D, std);
                X_("up_proj.weight", Fe, D, std);
                X_("down_proj.weight", D, Fe, std_out);
#undef X_
            }
            if (Fs > 0) {
                T_("mlp.shared_expert.gate_proj.weight", 2, Fs, D, std);
                T_("mlp.shared_expert.up_proj.weight", 2, Fs, D, std);
                T_("mlp.shared_expert.down_proj.weight", 2, D, Fs, std_out);
                T_("mlp.shared_expert_gate.weight", 2, 1, D, std);
            }
        }
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
    int64_t Fmax = FF > Fe ? FF : Fe;
    if (Fs > Fmax) Fmax = Fs;
    m->Fmax = (int)Fmax;
    const int64_t TK = T * K;
    const int64_t ffn_layer = moe ? T * E + TK + T + TK * (2 * Fe + Fe + D) + (Fs > 0 ? T * (3 * Fs + D + 1) : 0)
                                  : 2 * T * FF + T * FF;
    const int64_t per_layer = 3 * T * D + 2 * T + T * W + BH * SS + T * Q + T * D + ffn_layer;
    const int64_t moe_scratch = moe ? 3 * T * D + T * E + TK : 0;
    const int64_t total = (int64_t)L * per_layer + T * D /* x[L] */ + T * D + T + T * V /* head */ +
                          2 * T * D + T * Fmax + 2 * T * Fmax + T * Q + T * W + 2 * T * Q + m->n_scratch * SS +
                          2 * S * half + moe_scratch;
    const int64_t itotal = moe ? (int64_t)L * (TK + E + 1 + 2 * TK) : 0;
    m->act_bytes = total * (int64_t)sizeof(float) + itotal * (int64_t)sizeof(int) +
                   T * (int64_t)(sizeof(double) + 2 * sizeof(int32_t));
    m->block = malloc((size_t)total * sizeof(float));
    m->rowbuf = malloc((size_t)T * sizeof(double));
    m->inp = malloc((size_t)T * sizeof(int32_t));
    m->tgt = malloc((size_t)T * sizeof(int32_t));
    float ***lists[] = {&m->x, &m->xn1, &m->rstd1, &m->qkv, &m->P, &m->att, &m->h, &m->xn2, &m->rstd2, &m->gu, &m->a};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (!(*lists[i] = calloc((size_t)L + 1, sizeof(float *)))) goto oom;
    if (!m->block || !m->rowbuf || !m->inp || !m->tgt) goto oom;
    if (moe) {
        float ***ml[] = {&m->prob, &m->wts, &m->psum, &m->ys, &m->sgu, &m->sa, &m->sy, &m->sgl};
        for (size_t i = 0; i < sizeof ml / sizeof ml[0]; i++)
            if (!(*ml[i] = calloc((size_t)L, sizeof(float *)))) goto oom;
        int ***il[] = {&m->sel, &m->off, &m->rows, &m->slot};
        for (size_t i = 0; i < sizeof il / sizeof il[0]; i++)
            if (!(*il[i] = calloc((size_t)L, sizeof(int *)))) goto oom;
        m->iblock = malloc((size_t)itotal * sizeof(int));
        m->count = calloc((size_t)E, sizeof(double));
        m->psum_e = calloc((size_t)E, sizeof(double));
        if (!m->iblock || !m->count || !m->psum_e) goto oom;
        int *ip = m->iblock;
        for (int l = 0; l < L; l++) {
            m->sel[l] = ip; ip += TK;
            m->off[l] = ip; ip += E + 1;
            m->rows[l] = ip; ip += TK;
            m->slot[l] = ip; ip += TK;
        }
        NL_ASSERT(ip == m->iblock + itotal);
    }
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
        if (!moe) {
            m->gu[l] = TAKE(2 * T * F);
            m->a[l] = TAKE(T * F);
            continue;
        }
        m->prob[l] = TAKE(T * E);
        m->wts[l] = TAKE(TK);
        m->psum[l] = TAKE(T);
        m->gu[l] = TAKE(TK * 2 * Fe);
        m->a[l] = TAKE(TK * Fe);
        m->ys[l] = TAKE(TK * D);
        if (Fs > 0) {
            m->sgu[l] = TAKE(T * 2 * Fs);
            m->sa[l] = TAKE(T * Fs);
            m->sy[l] = TAKE(T * D);
            m->sgl[l] = TAKE(T);
        }
    }
    m->x[L] = TAKE(T * D);
    m->xnf = TAKE(T * D);
    m->rstdf = TAKE(T);
    m->logits = TAKE(T * V);
    m->dx = TAKE(T * D);
    m->dxn = TAKE(T * D);
    m->da = TAKE(T * Fmax);
    m->dgu = TAKE(2 * T * Fmax);
    m->datt = TAKE(T * Q);
    m->dqkv = TAKE(T * W);
    m->dkv = TAKE(2 * T * Q);
    m->dp = TAKE(m->n_scratch * SS);
    m->cs = TAKE(S * half);
    m->sn = TAKE(S * half);
    if (moe) {
        m->xg = TAKE(T * D);
        m->dyg = TAKE(T * D);
        m->dxg = TAKE(T * D);
        m->dprob = TAKE(T * E);
        m->dw = TAKE(TK);
    }
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
    free(m->prob); free(m->wts); free(m->psum); free(m->ys); free(m->sgu); free(m->sa); free(m->sy); free(m->sgl);
    free(m->sel); free(m->off); free(m->rows); free(m->slot); free(m->iblock); free(m->count); free(m->psum_e);
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
    /* weights in GEMMs per token; an MoE layer counts its router, k experts and the shared expert */
    const double ffn = m->d.moe ? (double)m->d.n_experts * D + m->d.top_k * 3.0 * m->d.d_expert * D +
                                      (m->d.d_shared > 0 ? 3.0 * m->d.d_shared * D + D : 0)
                                : 3 * F * D;
    const double mats = L * (m->W * D + D * m->Q + ffn) + V * D;
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

/* ---- mixture-of-experts FFN ------------------------------------------------------------------ */

/* Forward of MoE layer l over T rows of xn2[l]: routing, grouping, the selected experts and the
 * shared expert; x[l+1] = h + out with out summed as nl_ffn_moe does (experts in increasing order,
 * then the shared expert). Adds the layer's slot counts and probability sums to m->count, m->psum_e. */
static void moe_forward(nl_train_model *m, int l, int T) {
    const nl_train_dims *d = &m->d;
    const int D = d->d_model, E = d->n_experts, k = d->top_k, Fe = d->d_expert, Fs = d->d_shared;
    layer_view w = layer_of(m, m->params, l);
    const float *xn = m->xn2[l];
    float *prob = m->prob[l], *wts = m->wts[l], *psum = m->psum[l], *out = m->dxg;
    int *sel = m->sel[l], *off = m->off[l], *rows = m->rows[l], *slot = m->slot[l];
    nl_linear_fwd(prob, xn, w.router, T, D, E, 0);
#pragma omp parallel for schedule(static) if ((int64_t)T * E > NL_PAR_MIN)
    for (int t = 0; t < T; t++) { /* as nl_moe_route */
        float *z = prob + (size_t)t * E;
        float mx = z[0];
        for (int e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
        double sum = 0;
        for (int e = 0; e < E; e++) sum += (double)expf(z[e] - mx);
        const float inv = (float)(1.0 / sum);
        for (int e = 0; e < E; e++) z[e] = expf(z[e] - mx) * inv;
        float *wt = wts + (size_t)t * k;
        nl_moe_topk(z, E, k, sel + (size_t)t * k, wt);
        float s = 0;
        for (int j = 0; j < k; j++) s += wt[j];
        psum[t] = s;
        if (d->norm_topk)
            for (int j = 0; j < k; j++) wt[j] /= s;
    }
    /* group the (token, slot) pairs by expert: counting sort, tokens ascending within an expert */
    memset(off, 0, (size_t)(E + 1) * sizeof(int));
    for (int64_t i = 0; i < (int64_t)T * k; i++) off[sel[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const int e = sel[(size_t)t * k + j], r = off[e]++;
            rows[r] = t;
            slot[r] = t * k + j;
        }
    for (int e = E; e > 0; e--) off[e] = off[e - 1];
    off[0] = 0;
    for (int e = 0; e < E; e++) m->count[e] += off[e + 1] - off[e];
    for (int e = 0; e < E; e++) {
        double s = 0;
        for (int t = 0; t < T; t++) s += prob[(size_t)t * E + e];
        m->psum_e[e] += s;
    }
    memset(out, 0, (size_t)T * D * sizeof(float));
    for (int e = 0; e < E; e++) {
        const int r0 = off[e], n = off[e + 1] - r0;
        if (n == 0) continue;
        const float *wgu = w.ex + (size_t)e * 3 * Fe * D, *wd = wgu + (size_t)2 * Fe * D;
        float *gu = m->gu[l] + (size_t)r0 * 2 * Fe, *a = m->a[l] + (size_t)r0 * Fe, *y = m->ys[l] + (size_t)r0 * D;
        for (int r = 0; r < n; r++) memcpy(m->xg + (size_t)r * D, xn + (size_t)rows[r0 + r] * D, (size_t)D * sizeof(float));
        nl_linear_fwd(gu, m->xg, wgu, n, D, 2 * Fe, 0);
        nl_gated_act_fwd(a, gu, n, Fe, d->act);
        nl_linear_fwd(y, a, wd, n, Fe, D, 0);
#pragma omp parallel for schedule(static) if ((int64_t)n * D > NL_PAR_MIN)
        for (int r = 0; r < n; r++) { /* one row per token within an expert: no collisions */
            float *o = out + (size_t)rows[r0 + r] * D;
            const float *yr = y + (size_t)r * D, wt = wts[slot[r0 + r]];
            for (int i = 0; i < D; i++) o[i] += yr[i] * wt;
        }
    }
    if (Fs > 0) {
        nl_linear_fwd(m->sgu[l], xn, w.sh_gu, T, D, 2 * Fs, 0);
        nl_gated_act_fwd(m->sa[l], m->sgu[l], T, Fs, d->act);
        nl_linear_fwd(m->sy[l], m->sa[l], w.sh_d, T, Fs, D, 0);
        nl_linear_fwd(m->sgl[l], xn, w.sh_g, T, D, 1, 0);
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float gate = 1.0f / (1.0f + expf(-m->sgl[l][t]));
            float *o = out + (size_t)t * D;
            const float *yr = m->sy[l] + (size_t)t * D;
            for (int i = 0; i < D; i++) o[i] += gate * yr[i];
        }
    }
    float *xo = m->x[l + 1];
    const float *h = m->h[l];
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int64_t i = 0; i < (int64_t)T * D; i++) xo[i] = h[i] + out[i];
}

/* Backward of MoE layer l: m->dx holds ∂/∂out (= ∂/∂x[l+1]); writes ∂/∂xn2 into m->dxn and adds
 * the parameter gradients. aux_g = grad_scale · aux_coef · E / N² (the gradient of the balancing
 * loss w.r.t. p[t, e] is aux_g · C_e). */
static void moe_backward(nl_train_model *m, int l, int T, double aux_g) {
    const nl_train_dims *d = &m->d;
    const int D = d->d_model, E = d->n_experts, k = d->top_k, Fe = d->d_expert, Fs = d->d_shared;
    layer_view w = layer_of(m, m->params, l), g = layer_of(m, m->grads, l);
    const float *xn = m->xn2[l], *dx = m->dx, *prob = m->prob[l], *wts = m->wts[l];
    const int *sel = m->sel[l], *off = m->off[l], *rows = m->rows[l], *slot = m->slot[l];
    float *dxn = m->dxn;
    memset(dxn, 0, (size_t)T * D * sizeof(float));
    if (Fs > 0) {
        /* out += σ(s)·ys:  ∂s = σ(1−σ)·(dx·ys),  ∂ys = σ·dx */
        float *dsg = m->dw; /* (T) ≤ (T·k) */
        const float *sy = m->sy[l], *sgl = m->sgl[l];
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float sg = 1.0f / (1.0f + expf(-sgl[t]));
            const float *dr = dx + (size_t)t * D, *yr = sy + (size_t)t * D;
            float *o = m->dyg + (size_t)t * D;
            double dot = 0;
            for (int i = 0; i < D; i++) {
                dot += (double)dr[i] * yr[i];
                o[i] = sg * dr[i];
            }
            dsg[t] = (float)(dot * sg * (1.0 - sg));
        }
        nl_linear_bwd(m->da, 0, g.sh_d, m->dyg, m->sa[l], w.sh_d, T, Fs, D);
        nl_gated_act_bwd(m->dgu, m->da, m->sgu[l], T, Fs, d->act);
        nl_linear_bwd(dxn, 1, g.sh_gu, m->dgu, xn, w.sh_gu, T, D, 2 * Fs);
        nl_linear_bwd(dxn, 1, g.sh_g, dsg, xn, w.sh_g, T, D, 1);
    }
    float *dw = m->dw;
    for (int e = 0; e < E; e++) {
        const int r0 = off[e], n = off[e + 1] - r0;
        if (n == 0) continue;
        const float *wgu = w.ex + (size_t)e * 3 * Fe * D, *wd = wgu + (size_t)2 * Fe * D;
        float *ggu = g.ex + (size_t)e * 3 * Fe * D, *gd = ggu + (size_t)2 * Fe * D;
        const float *gu = m->gu[l] + (size_t)r0 * 2 * Fe, *a = m->a[l] + (size_t)r0 * Fe, *y = m->ys[l] + (size_t)r0 * D;
        /* out[t] += w·y[r]:  ∂w = dx[t]·y[r],  ∂y[r] = w·dx[t] */
#pragma omp parallel for schedule(static) if ((int64_t)n * D > NL_PAR_MIN)
        for (int r = 0; r < n; r++) {
            const int t = rows[r0 + r], sl = slot[r0 + r];
            const float *dr = dx + (size_t)t * D, *yr = y + (size_t)r * D, wt = wts[sl];
            float *o = m->dyg + (size_t)r * D;
            double dot = 0;
            for (int i = 0; i < D; i++) {
                dot += (double)dr[i] * yr[i];
                o[i] = wt * dr[i];
            }
            dw[sl] = (float)dot;
            memcpy(m->xg + (size_t)r * D, xn + (size_t)t * D, (size_t)D * sizeof(float));
        }
        nl_linear_bwd(m->da, 0, gd, m->dyg, a, wd, n, Fe, D);
        nl_gated_act_bwd(m->dgu, m->da, gu, n, Fe, d->act);
        nl_linear_bwd(m->dxg, 0, ggu, m->dgu, m->xg, wgu, n, D, 2 * Fe);
#pragma omp parallel for schedule(static) if ((int64_t)n * D > NL_PAR_MIN)
        for (int r = 0; r < n; r++) {
            float *o = dxn + (size_t)rows[r0 + r] * D;
            const float *src = m->dxg + (size_t)r * D;
            for (int i = 0; i < D; i++) o[i] += src[i];
        }
    }
    /* weights → probabilities (renormalisation), balancing loss, softmax → logits */
    float *dp = m->dprob;
#pragma omp parallel for schedule(static) if ((int64_t)T * E > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        float *dr = dp + (size_t)t * E;
        const float *pr = prob + (size_t)t * E, *wt = wts + (size_t)t * k, *dwt = dw + (size_t)t * k;
        const int *st = sel + (size_t)t * k;
        for (int e = 0; e < E; e++) dr[e] = (float)(aux_g * m->count[e]);
        if (d->norm_topk) { /* w_j = p_j / s:  ∂p_j = (∂w_j − Σ_i ∂w_i·w_i) / s */
            double dot = 0;
            for (int j = 0; j < k; j++) dot += (double)dwt[j] * wt[j];
            const double s = m->psum[l][t];
            for (int j = 0; j < k; j++) dr[st[j]] += (float)((dwt[j] - dot) / s);
        } else {
            for (int j = 0; j < k; j++) dr[st[j]] += dwt[j];
        }
        double dot = 0;
        for (int e = 0; e < E; e++) dot += (double)pr[e] * dr[e];
        for (int e = 0; e < E; e++) dr[e] = (float)(pr[e] * (dr[e] - dot));
    }
    nl_linear_bwd(dxn, 1, g.router, dp, xn, w.router, T, D, E);
}

const int *nl_train_model_routing(const nl_train_model *m, int l, const float **wts) {
    if (!m->d.moe || l < 0 || l >= m->d.n_layers) return NULL;
    if (wts) *wts = m->wts[l];
    return m->sel[l];
}

/* Forward over B windows of m->inp into logits; keeps the activations. Returns Σ|a| over layers. */
static double forward(nl_train_model *m, int B) {
    const nl_train_dims *d = &m->d;
    const int T = B * m->S, D = d->d_model, F = d->d_ff, L = d->n_layers, Q = m->Q, W = m->W;
    const float *E = m->params + m->off_embed;
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
    for (int t = 0; t < T; t++) memcpy(m->x[0] + (size_t)t * D, E + (size_t)m->inp[t] * D, (size_t)D * sizeof(float));
    double abs_sum = 0;
    if (d->moe) {
        memset(m->count, 0, (size_t)d->n_experts * sizeof(double));
        memset(m->psum_e, 0, (size_t)d->n_experts * sizeof(double));
    }
    for (int l = 0; l < L; l++) {
        layer_view w = layer_of(m, m->params, l);
        nl_rmsnorm_fwd(m->xn1[l], m->rstd1[l], m->x[l], w.ln1, T, D, d->norm_eps);
        nl_linear_fwd(m->qkv[l], m->xn1[l], w.wqkv, T, D, W, 0);
        nl_rope_rows(m->qkv[l], W, T, m->S, d->n_heads + d->n_kv_heads, m->Dh, m->cs, m->sn, 0);
        nl_attention_fwd(m->att[l], m->P[l], m->qkv[l], B, m->S, d->n_heads, d->n_kv_heads, m->Dh);
        memcpy(m->h[l], m->x[l], (size_t)T * D * sizeof(float));
        nl_linear_fwd(m->h[l], m->att[l], w.wo, T, Q, D, 1);
        nl_rmsnorm_fwd(m->xn2[l], m->rstd2[l], m->h[l], w.ln2, T, D, d->norm_eps);
        if (d->moe) {
            moe_forward(m, l, T);
            continue;
        }
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

void nl_train_model_forward_backward(nl_train_model *m, const int32_t *windows, int B, float l1, float aux_coef,
                                     float grad_scale, double *ce, double *l1_mean, double *aux) {
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
    if (l1_mean) *l1_mean = F > 0 && !d->moe ? abs_sum / ((double)L * T * F) : 0.0;
    double aux_g = 0;
    if (aux) *aux = 0;
    if (d->moe) { /* balancing loss over the L·T router rows of this micro-batch */
        const double N = (double)L * T, E = d->n_experts;
        double sum = 0;
        for (int e = 0; e < d->n_experts; e++) sum += (m->count[e] / N) * (m->psum_e[e] / N);
        if (aux) *aux = E * sum;
        aux_g = (double)grad_scale * aux_coef * E / (N * N);
    }
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
    const float c1 = l1 != 0.0f && !d->moe ? (float)((double)grad_scale * l1 / ((double)L * T * F)) : 0.0f;
    for (int l = L - 1; l >= 0; l--) {
        layer_view w = layer_of(m, m->params, l), g = layer_of(m, m->grads, l);
        if (d->moe) {
            moe_backward(m, l, T, aux_g); /* dxn = ∂/∂xn2 */
        } else {
            /* x[l+1] = h + a · downᵀ ; dx holds ∂/∂x[l+1] */
            nl_linear_bwd(m->da, 0, g.wd, m->dx, m->a[l], w.wd, T, F, D);
            if (c1 != 0.0f) nl_l1_bwd(m->da, m->a[l], (int64_t)T * F, c1);
            nl_gated_act_bwd(m->dgu, m->da, m->gu[l], T, F, d->act);
            nl_linear_bwd(m->dxn, 0, g.wgu, m->dgu, m->xn2[l], w.wgu, T, D, 2 * F);
        }
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
