/* forward.c — the batched, instrumented forward pass (see forward.h).
 *
 * One call runs T tokens through every layer: norms, one GEMM per projection, causal
 * grouped-query attention against the KV cache (one GEMM for scores and one for values per
 * head), the FFN, and the hook points of hooks.h. Layer weights come from nl_model_layer()
 * one layer at a time. Block wiring per architecture:
 *   sequential:         h = x + attn(n1(x));  x = h + ffn(n2(h))        (Llama, GPT-2, …)
 *   parallel_residual:  x = x + attn(n1(x)) + ffn(n2(x))                (GPT-NeoX)
 *   shared_norm:        x = x + attn(n1(x)) + ffn(n1(x))                (Phi)
 * ffn() is the dense FFN (nl_ffn_dense), or the native MoE block (nl_ffn_moe, moe_block.c) on a
 * mixture-of-experts layer, unless the layer's FFN was replaced (nl_forward_set_ffn);
 * Qwen3-style models RMS-normalise each head's q and k before RoPE;
 * the FFN_IN hooks edit the normalised input in place (attention has already read it); ATTN_IN
 * fires on the normalised attention input before the q/k/v projections, ATTN_PROBS on every
 * head's softmax probabilities (H, T, P) before they mix the values, and ATTN_PRE_O on the
 * concatenated heads before W_o.
 * Pipeline mode of the MPI build (mpi.h): this rank runs only its block of layers; the residual
 * (T, D) comes from the previous rank instead of the embedding and goes to the next one, and
 * nl_forward_nll's losses come from the last rank (no-ops in the serial build).
 * Checked by tests/test_forward.c against PyTorch fixtures and stories260K, and tests/mpi.sh.
 */
#include "neuronlab/forward.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "forward/moe_block.h"
#include "neuronlab/gemm_bf16.h"
#include "neuronlab/mpi.h"
#include "neuronlab/ops.h"

/* Rows of logits nl_forward_nll computes at once: as many as fit NL_HEAD_FLOATS (64 MiB; at least
 * 32, at most the batch), so the LM head's weights are packed by the GEMM once per block of
 * rows rather than once per 32 rows (which cost a fifth of a small model's time). */
#define NL_HEAD_FLOATS ((size_t)16 << 20)
#define NL_ATT_ROWS 64   /* query rows of one attention task */

struct nl_forward {
    nl_model *m;
    const nl_config *c;
    int max_T, max_P, pos;
    nl_hooks hooks;
    float *x;        /* (T, D) residual stream */
    float *xn;       /* (T, D) normalised input of attention (and of the FFN when shared) */
    float *xn2;      /* (T, D) normalised input of the FFN */
    float *qkv;      /* (T, Q + 2 KV) fused projection output */
    float *q;        /* (T, Q) queries */
    float *att;      /* (T, Q) attention output before the output projection */
    float *attn_out; /* (T, D) */
    float *pre;      /* (T, F) FFN pre-activation, then the activation a */
    float *up;       /* (T, F) gated FFN: x·W_up */
    float *ffn_out;  /* (T, D) */
    float *scores;   /* (n_score_bufs, group · NL_ATT_ROWS, P + 2 Dh) attention scores (and the grouped
                        queries and outputs), one block per thread; group = n_heads / n_kv_heads */
    int n_score_bufs; /* threads the score buffer has room for (omp_get_max_threads() at creation) */
    float *probs;    /* (H, T, P) every head's probabilities, allocated when ATTN_PROBS is wanted */
    float *k_cache;  /* (Lc, P, KV) */
    float *v_cache;  /* (Lc, P, KV) */
    int cache_layers; /* Lc: L, or 1 in a windows state (each pass starts at position 0, so a
                       * layer's keys and values are needed only while that layer runs) */
    float *logits;   /* (head_rows, V) */
    int head_rows;   /* rows of logits per LM-head GEMM in nl_forward_nll */
    int hooks_concurrent; /* the hooks only read their user data (nl_forward_hooks_concurrent) */
    float *inv_freq; /* (rotary_dim / 2) */
    nl_ffn_fn *ffn_fn; /* (L) replacement FFN per layer, NULL = dense; nl_ffn_moe on MoE layers */
    void **ffn_user;   /* (L) its user pointer */
    nl_moe_scratch *moe; /* routing and expert buffers of the MoE layers (n_experts > 0), owned */
    nl_compute compute;  /* NL_COMPUTE_BF16: the layers' and the head's GEMMs in bf16 (nl_forward_set_compute) */
    int win_P;           /* > 0: a windows state (nl_forward_create_windows): each window ≤ win_P tokens */
};

static nl_status forward_new(nl_ctx *ctx, nl_model *m, int max_T, int max_P, int cache_layers, nl_forward **out);

nl_status nl_forward_create(nl_ctx *ctx, nl_model *m, int max_T, int max_P, nl_forward **out) {
    *out = NULL;
    const nl_config *c = nl_model_config(m);
    if (max_T <= 0 || max_P <= 0) return nl_errorf(ctx, NL_EINVAL, "batch (%d) and context (%d) must be positive", max_T, max_P);
    if (max_T > max_P) max_T = max_P;
    if (c->pos == NL_POS_LEARNED && max_P > c->max_pos)
        return nl_errorf(ctx, NL_EINVAL, "context %d exceeds the %d learned positions of '%s'", max_P, c->max_pos,
                         nl_model_path(m));
    return forward_new(ctx, m, max_T, max_P, c->n_layers, out);
}

/* The state of nl_forward_create, limits checked (a windows state's max_P is the rows of all
 * its windows, not a position limit). */
static nl_status forward_new(nl_ctx *ctx, nl_model *m, int max_T, int max_P, int cache_layers, nl_forward **out) {
    const nl_config *c = nl_model_config(m);
    nl_forward *f = calloc(1, sizeof *f);
    if (!f) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    f->m = m;
    f->c = c;
    f->max_T = max_T;
    f->max_P = max_P;
    f->cache_layers = cache_layers;
    nl_hooks_init(&f->hooks);
    const size_t T = (size_t)max_T, D = c->d_model, F = c->d_ff, Q = (size_t)c->n_heads * c->head_dim,
                 KV = (size_t)c->n_kv_heads * c->head_dim, P = (size_t)max_P, L = c->n_layers;
    f->x = malloc(T * D * sizeof(float));
    f->xn = malloc(T * D * sizeof(float));
    f->xn2 = malloc(T * D * sizeof(float));
    f->qkv = malloc(T * (Q + 2 * KV) * sizeof(float));
    f->q = malloc(T * Q * sizeof(float));
    f->att = malloc(T * Q * sizeof(float));
    f->attn_out = malloc(T * D * sizeof(float));
    f->pre = malloc(T * F * sizeof(float));
    f->up = malloc(T * F * sizeof(float));
    f->ffn_out = malloc(T * D * sizeof(float));
    f->n_score_bufs = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    const size_t group = c->n_kv_heads > 0 ? (size_t)(c->n_heads / c->n_kv_heads) : 1;
    f->scores = malloc((size_t)f->n_score_bufs * group * NL_ATT_ROWS * (P + 2 * (size_t)c->head_dim) * sizeof(float));
    f->k_cache = malloc((size_t)cache_layers * P * KV * sizeof(float));
    f->v_cache = malloc((size_t)cache_layers * P * KV * sizeof(float));
    f->head_rows = (int)(NL_HEAD_FLOATS / (size_t)(c->vocab_size > 0 ? c->vocab_size : 1));
    if (f->head_rows < 32) f->head_rows = 32;
    if (f->head_rows > max_T) f->head_rows = max_T;
    f->logits = malloc((size_t)f->head_rows * c->vocab_size * sizeof(float));
    f->inv_freq = malloc((size_t)(c->rotary_dim / 2 + 1) * sizeof(float));
    f->ffn_fn = calloc(L ? L : 1, sizeof *f->ffn_fn);
    f->ffn_user = calloc(L ? L : 1, sizeof *f->ffn_user);
    if (!f->ffn_fn || !f->ffn_user || !f->x || !f->xn || !f->xn2 || !f->qkv || !f->q || !f->att || !f->attn_out || !f->pre || !f->up ||
        !f->ffn_out || !f->scores || !f->k_cache || !f->v_cache || !f->logits || !f->inv_freq) {
        nl_forward_destroy(f);
        return nl_errorf(ctx, NL_ENOMEM, "cannot allocate the forward pass (batch %d, context %d): out of memory", max_T,
                         max_P);
    }
    if (c->n_experts > 0) {
        if (!(f->moe = nl_moe_scratch_create(c, max_T))) {
            nl_forward_destroy(f);
            return nl_errorf(ctx, NL_ENOMEM, "cannot allocate the expert buffers (batch %d): out of memory", max_T);
        }
        for (int l = 0; l < c->n_layers; l++)
            if (nl_config_is_moe_layer(c, l)) f->ffn_fn[l] = nl_ffn_moe, f->ffn_user[l] = f->moe;
    }
    if (c->pos == NL_POS_ROPE) nl_rope_inv_freq(c, f->inv_freq);
    nl_model_keep_f32(m, NL_KEEP_F32_BYTES);
    *out = f;
    return NL_OK;
}

void nl_forward_destroy(nl_forward *f) {
    if (!f) return;
    free(f->x); free(f->xn); free(f->xn2); free(f->qkv); free(f->q); free(f->att); free(f->attn_out);
    free(f->pre); free(f->up); free(f->ffn_out); free(f->scores); free(f->probs); free(f->k_cache); free(f->v_cache);
    free(f->logits); free(f->inv_freq); free(f->ffn_fn); free(f->ffn_user); nl_moe_scratch_destroy(f->moe);
    free(f);
}

nl_hooks *nl_forward_hooks(nl_forward *f) { return &f->hooks; }
void nl_forward_reset(nl_forward *f) { f->pos = 0; }
int nl_forward_pos(const nl_forward *f) { return f->pos; }
int nl_forward_max_T(const nl_forward *f) { return f->max_T; }
int nl_forward_max_P(const nl_forward *f) { return f->max_P; }
nl_model *nl_forward_model(const nl_forward *f) { return f->m; }

nl_compute nl_forward_set_compute(nl_forward *f, nl_compute c) {
    f->compute = c == NL_COMPUTE_BF16 && nl_bf16_supported() ? NL_COMPUTE_BF16 : NL_COMPUTE_F32;
    if (f->compute == NL_COMPUTE_BF16) nl_model_keep_bf16(f->m, NL_KEEP_BF16_BYTES);
    return f->compute;
}

nl_compute nl_forward_compute(const nl_forward *f) { return f->compute; }
const char *nl_compute_name(nl_compute c) { return c == NL_COMPUTE_BF16 ? "bf16" : "f32"; }

/* Bytes nl_forward_create allocates for one state of f's limits (without the ATTN_PROBS buffer). */
static size_t state_bytes(const nl_forward *f) {
    const nl_config *c = f->c;
    const size_t T = (size_t)f->max_T, P = (size_t)f->max_P, D = c->d_model, F = c->d_ff, Dh = c->head_dim,
                 Q = (size_t)c->n_heads * Dh, KV = (size_t)c->n_kv_heads * Dh;
    const size_t group = c->n_kv_heads > 0 ? (size_t)(c->n_heads / c->n_kv_heads) : 1;
    const size_t floats = T * (5 * D + 2 * Q + Q + 2 * KV + 2 * F) + 2 * (size_t)f->cache_layers * P * KV + (size_t)f->head_rows * c->vocab_size +
                          (size_t)f->n_score_bufs * group * NL_ATT_ROWS * (P + 2 * Dh);
    return floats * sizeof(float);
}

/* own < 0: f's hooks must be none or concurrent; own ≥ 0: exactly own hooks, not concurrent.
 * own_ffn: f's replaced FFNs are the caller's own too (else f must have none). */
static int doc_threads(const nl_forward *f, int own, int own_ffn) {
    const nl_config *c = f->c;
    const int n = omp_get_max_threads();
    const int hooks_ok = own < 0 ? f->hooks.n == 0 || f->hooks_concurrent : f->hooks.n == own && !f->hooks_concurrent;
    if (n <= 1 || omp_in_parallel() || !hooks_ok || c->n_experts > 0 ||
        nl_mpi_pipeline() > 1)
        return 1;
    for (int l = 0; l < c->n_layers && !own_ffn; l++)
        if (f->ffn_fn[l]) return 1;
    const size_t conv = nl_model_f32_layer_bytes(f->m);
    /* Larger models: when their weights are read as stored (f32, nothing converted) and the other
     * states fit NL_KEEP_F32_BYTES. Measured by hand on the bench's 124.7M-parameter f32 Llama
     * (16 documents of 512 tokens, 2 threads): 10.2 s against 11.6 s with each GEMM split over
     * both threads; ppl then also runs several windows per pass (nl_forward_create_windows:
     * 11.15 → 10.13 s, mean of 3 alternating runs). The fraction of the sgemm peak is in
     * make bench's output (bench/README.md). */
    if ((size_t)nl_model_bytes(f->m) > NL_KEEP_F32_BYTES && (conv > 0 || (size_t)(n - 1) * state_bytes(f) > NL_KEEP_F32_BYTES))
        return 1;
    if (conv > NL_KEEP_F32_BYTES || (conv > 0 && !nl_model_keep_f32(f->m, NL_KEEP_F32_BYTES))) return 1;
    if (f->compute == NL_COMPUTE_BF16 && !nl_model_keep_bf16(f->m, NL_KEEP_BF16_BYTES)) return 1;
    return n;
}

int nl_forward_doc_threads(const nl_forward *f) { return doc_threads(f, -1, 0); }
int nl_forward_doc_threads_own(const nl_forward *f, int own, int own_ffn) { return doc_threads(f, own < 0 ? 0 : own, own_ffn); }

/* A state for another thread, of f's model and compute format, max_T × max_P (bf16 packs made
 * here, so the threads only read them). */
static nl_status create_like(nl_ctx *ctx, nl_forward *f, int max_T, int max_P, int cache_layers, nl_forward **out) {
    *out = NULL;
    nl_layer w;
    nl_head h;
    nl_status st;
    const int bf16 = f->compute == NL_COMPUTE_BF16; /* the packs are made here too: then only read */
    for (int l = 0; l < f->c->n_layers; l++)
        if ((st = nl_model_layer(ctx, f->m, l, &w)) != NL_OK || (bf16 && (st = nl_model_layer_bf16(ctx, f->m, l, &w)) != NL_OK))
            return st;
    if ((st = nl_model_head(ctx, f->m, &h)) != NL_OK || (bf16 && (st = nl_model_head_bf16(ctx, f->m, &h)) != NL_OK)) return st;
    if ((st = forward_new(ctx, f->m, max_T, max_P, cache_layers, out)) != NL_OK) return st;
    (*out)->compute = f->compute;
    return NL_OK;
}

nl_status nl_forward_create_like(nl_ctx *ctx, nl_forward *f, nl_forward **out) {
    nl_status st = create_like(ctx, f, f->max_T, f->max_P, f->cache_layers, out);
    if (st == NL_OK && f->hooks_concurrent) (*out)->hooks = f->hooks, (*out)->hooks_concurrent = 1;
    return st;
}

int nl_forward_windows_fit(const nl_forward *f, int n_states, int n_windows) {
    if (n_windows < 2 || f->hooks.n > 0 || f->c->n_experts > 0 || nl_mpi_pipeline() > 1) return 0;
    for (int l = 0; l < f->c->n_layers; l++)
        if (f->ffn_fn[l]) return 0;
    nl_forward big = *f; /* only its limits, for state_bytes */
    big.max_T = big.max_P = f->max_T * n_windows;
    big.cache_layers = 1;
    return (size_t)n_states * state_bytes(&big) <= NL_WINDOWS_BYTES;
}

nl_status nl_forward_create_windows(nl_ctx *ctx, nl_forward *f, int n_windows, nl_forward **out) {
    *out = NULL;
    if (n_windows < 1 || f->hooks.n > 0) return nl_errorf(ctx, NL_EINVAL, "a windows state needs a state without hooks");
    nl_status st = create_like(ctx, f, f->max_T * n_windows, f->max_T * n_windows, 1, out);
    if (st == NL_OK) (*out)->win_P = f->max_T;
    return st;
}

void nl_forward_hooks_concurrent(nl_forward *f, int yes) { f->hooks_concurrent = yes; }

nl_status nl_forward_set_ffn(nl_forward *f, nl_ctx *ctx, int layer, nl_ffn_fn fn, void *user) {
    const int L = f->c->n_layers;
    if (layer < -1 || layer >= L)
        return nl_errorf(ctx, NL_EINVAL, "cannot replace the ffn of layer %d: the model has layers 0..%d (-1 = all)",
                         layer, L - 1);
    for (int l = layer < 0 ? 0 : layer; l < (layer < 0 ? L : layer + 1); l++) {
        const int moe = !fn && nl_config_is_moe_layer(f->c, l); /* restore the layer's own FFN */
        f->ffn_fn[l] = moe ? nl_ffn_moe : fn;
        f->ffn_user[l] = moe ? (void *)f->moe : fn ? user : NULL;
    }
    return NL_OK;
}

nl_ffn_fn nl_forward_get_ffn(const nl_forward *f, int layer, void **user) {
    NL_ASSERT(layer >= 0 && layer < f->c->n_layers);
    if (user) *user = f->ffn_user[layer];
    return f->ffn_fn[layer];
}

static void norm(const nl_config *c, float *out, const float *x, const float *w, const float *b, int T) {
    if (c->norm == NL_NORM_RMS) nl_rmsnorm(out, x, w, T, c->d_model, c->norm_eps);
    else nl_layernorm(out, x, w, b, T, c->d_model, c->norm_eps);
}

static nl_status fire(nl_forward *f, nl_ctx *ctx, nl_hook_point p, int l, int T, int width, const int32_t *tokens,
                      float *x) {
    if (!nl_hooks_wants(&f->hooks, p, l)) return NL_OK;
    nl_hook_info info = {p, l, T, width, f->pos, tokens, NULL, 0};
    return nl_hooks_fire(&f->hooks, ctx, &info, x);
}

/* The slot of layer l in the KV cache (f->cache_layers). */
static size_t cache_layer(const nl_forward *f, int l) { return f->cache_layers > 1 ? (size_t)l : 0; }

/* Projects xn into queries (f->q) and this call's rows of the KV cache for layer l. */
static void qkv_project(nl_forward *f, const nl_layer *w, int l, int T) {
    const nl_config *c = f->c;
    const int D = c->d_model, Dh = c->head_dim, H = c->n_heads, Hk = c->n_kv_heads;
    const int Q = H * Dh, KV = Hk * Dh;
    float *kc = f->k_cache + (cache_layer(f, l) * f->max_P + f->pos) * KV;
    float *vc = f->v_cache + (cache_layer(f, l) * f->max_P + f->pos) * KV;
    if (w->qkv_layout == NL_QKV_SEPARATE) {
        nl_matmul(f->q, Q, f->xn, D, T, &w->wq, w->bq);
        nl_matmul(kc, KV, f->xn, D, T, &w->wk, w->bk);
        nl_matmul(vc, KV, f->xn, D, T, &w->wv, w->bv);
        return;
    }
    const int W = Q + 2 * KV;
    nl_matmul(f->qkv, W, f->xn, D, T, &w->wqkv, w->bqkv);
#pragma omp parallel for schedule(static) if ((int64_t)T * W > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *r = f->qkv + (size_t)t * W;
        float *qr = f->q + (size_t)t * Q, *kr = kc + (size_t)t * KV, *vr = vc + (size_t)t * KV;
        if (w->qkv_layout == NL_QKV_CONCAT) {
            memcpy(qr, r, Q * sizeof(float));
            memcpy(kr, r + Q, KV * sizeof(float));
            memcpy(vr, r + Q + KV, KV * sizeof(float));
        } else { /* per head [q_h | k_h | v_h]; this layout has Hk == H */
            for (int h = 0; h < H; h++) {
                memcpy(qr + h * Dh, r + (size_t)h * 3 * Dh, Dh * sizeof(float));
                memcpy(kr + h * Dh, r + (size_t)h * 3 * Dh + Dh, Dh * sizeof(float));
                memcpy(vr + h * Dh, r + (size_t)h * 3 * Dh + 2 * Dh, Dh * sizeof(float));
            }
        }
    }
}

/* Softmax of the scores s[0..nk) of the query at position p over keys k_lo + j: the keys it sees
 * (causal, within the sliding window win) normalised, the others set to 0. */
static void causal_softmax_row(float *s, int p, int win, int k_lo, int nk) {
    const int lo = (win > 0 && p - win + 1 > 0 ? p - win + 1 : 0) - k_lo, hi = p - k_lo; /* [lo, hi] */
    const float mx = nl_max_vec(s + lo, hi - lo + 1);
    const float inv = (float)(1.0 / nl_exp_shift_sum(s + lo, hi - lo + 1, mx));
    for (int j = 0; j < lo; j++) s[j] = 0.0f;
    for (int j = lo; j <= hi; j++) s[j] *= inv;
    for (int j = hi + 1; j < nk; j++) s[j] = 0.0f;
}

/* Row block b of KV head g for all G query heads that read it (heads g·G .. g·G+G-1): the
 * queries gathered into qg (G·n, Dh), scores (G·n, nk) = qg · k_gᵀ · scale as one GEMM, the
 * causal softmax of each row, out (G·n, Dh) = scores · v_g, scattered to each head's columns of
 * att. The same values, softmax and GEMM shapes along k as the per-head path: a row's result does
 * not depend on how many rows share the GEMM. own holds G·NL_ATT_ROWS·(max_P + 2 Dh) floats. */
static void attention_group(const float *q, const float *kc, const float *vc, float *att, float *own, int b, int g, int T,
                            int pos, int win, int G, int Dh, int Q, int KV, int max_P, float scale) {
    const int t0 = b * NL_ATT_ROWS, n = T - t0 < NL_ATT_ROWS ? T - t0 : NL_ATT_ROWS;
    const int k_hi = pos + t0 + n;
    const int k_lo = win > 0 && pos + t0 - win + 1 > 0 ? pos + t0 - win + 1 : 0;
    const int nk = k_hi - k_lo, M = G * n;
    float *qg = own;                                           /* (G·n, Dh) */
    float *sc = qg + (size_t)G * NL_ATT_ROWS * Dh;             /* (G·n, nk) */
    float *og = sc + (size_t)G * NL_ATT_ROWS * max_P;          /* (G·n, Dh) */
    for (int j = 0; j < G; j++)
        for (int i = 0; i < n; i++)
            memcpy(qg + ((size_t)j * n + i) * Dh, q + (size_t)(t0 + i) * Q + (size_t)(g * G + j) * Dh, Dh * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, Dh, scale, qg, Dh, kc + (size_t)k_lo * KV + g * Dh, KV,
                0.0f, sc, nk);
    for (int r = 0; r < M; r++) {
        causal_softmax_row(sc + (size_t)r * nk, pos + t0 + r % n, win, k_lo, nk);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Dh, nk, 1.0f, sc, nk, vc + (size_t)k_lo * KV + g * Dh, KV,
                0.0f, og, Dh);
    for (int j = 0; j < G; j++)
        for (int i = 0; i < n; i++)
            memcpy(att + (size_t)(t0 + i) * Q + (size_t)(g * G + j) * Dh, og + ((size_t)j * n + i) * Dh, Dh * sizeof(float));
}

/* Causal grouped-query attention of this call's T queries against the P = pos+T cached keys.
 * One OpenMP region for the whole layer: tasks of (head, block of NL_ATT_ROWS query rows),
 * the blocks with the most keys first, each on the calling thread's own score rows with
 * single-threaded GEMMs (OpenBLAS runs serially inside a parallel region). A block reads only
 * the keys its rows can see (causal, and the sliding window).
 * With an ATTN_PROBS hook, each block's probabilities are written into f->probs (H, T, P) instead
 * (zero outside the keys the row sees), the hook fires on all of them, then a second region mixes
 * the values with the (possibly edited) probabilities, block by block with the same GEMM shapes:
 * an observer leaves the output bit for bit as without it; an intervener's edits outside a
 * block's keys [k_lo, k_hi) are not read (those keys are masked for every row of the block). */
/* Attention of layer l for the T rows from row `off` of f->q / f->att, whose keys and values
 * are rows off … of the layer's cache, at positions pos … pos+T-1 (f->pos, or 0 for each window
 * of a windows state, whose windows lie one after another in the cache). */
static nl_status attention(nl_forward *f, nl_ctx *ctx, int l, int off, int T, int pos, const int32_t *tokens) {
    const nl_config *c = f->c;
    const int Dh = c->head_dim, H = c->n_heads, Hk = c->n_kv_heads, Q = H * Dh, KV = Hk * Dh;
    const int P = pos + T, group = H / Hk, win = c->sliding_window;
    const float scale = 1.0f / sqrtf((float)Dh);
    const float *kc = f->k_cache + (cache_layer(f, l) * f->max_P + off) * KV;
    const float *vc = f->v_cache + (cache_layer(f, l) * f->max_P + off) * KV;
    const int all = !off && nl_hooks_wants(&f->hooks, NL_HOOK_ATTN_PROBS, l); /* windows states have no hooks */
    if (all && !f->probs && !(f->probs = malloc((size_t)H * f->max_T * f->max_P * sizeof(float))))
        return nl_errorf(ctx, NL_ENOMEM, "cannot allocate the attention probabilities (%d heads, batch %d, context %d): out of memory",
                         H, f->max_T, f->max_P);
    /* Grouped-query models without the probabilities hook: one task per (KV head, row block)
     * computes all `group` query heads that read that KV head as one GEMM of group·n rows. */
    const int grouped = group > 1 && !all;
    const int nb = (T + NL_ATT_ROWS - 1) / NL_ATT_ROWS, tasks = (grouped ? Hk : H) * nb;
    int nthr = omp_get_max_threads();
    if (nthr > f->n_score_bufs) nthr = f->n_score_bufs;
    if (nthr > tasks) nthr = tasks;
    const float *q = f->q + (size_t)off * Q;
    float *att = f->att + (size_t)off * Q, *scores = f->scores, *probs = all ? f->probs : NULL;
    const size_t per_thread = (size_t)group * NL_ATT_ROWS * (f->max_P + 2 * (size_t)Dh);
#pragma omp parallel num_threads(nthr) if (nthr > 1 && (int64_t)T * P * Dh * H > NL_PAR_MIN)
    {
        float *own = scores + (size_t)omp_get_thread_num() * per_thread;
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < tasks; k++) {
            if (grouped) {
                attention_group(q, kc, vc, att, own, nb - 1 - k / Hk, k % Hk, T, pos, win, group, Dh, Q, KV, f->max_P,
                                scale);
                continue;
            }
            const int b = nb - 1 - k / H, h = k % H, g = h / group;
            const int t0 = b * NL_ATT_ROWS, n = T - t0 < NL_ATT_ROWS ? T - t0 : NL_ATT_ROWS;
            const int k_hi = pos + t0 + n; /* keys [k_lo, k_hi) */
            const int k_lo = win > 0 && pos + t0 - win + 1 > 0 ? pos + t0 - win + 1 : 0;
            const int nk = k_hi - k_lo;
            /* the block's scores: own rows (n, nk), or its place in probs (row stride P) */
            float *sc = probs ? probs + ((size_t)h * T + t0) * P + k_lo : own;
            const int ld = probs ? P : nk;
            /* scores (n, nk) = q_h (n, Dh) · k_g (nk, Dh)ᵀ · scale */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nk, Dh, scale, q + (size_t)t0 * Q + h * Dh, Q,
                        kc + (size_t)k_lo * KV + g * Dh, KV, 0.0f, sc, ld);
            for (int i = 0; i < n; i++) {
                causal_softmax_row(sc + (size_t)i * ld, pos + t0 + i, win, k_lo, nk);
                if (probs) { /* the rest of the row: keys the block does not read */
                    float *row = probs + ((size_t)h * T + t0 + i) * P;
                    memset(row, 0, (size_t)k_lo * sizeof(float));
                    memset(row + k_hi, 0, (size_t)(P - k_hi) * sizeof(float));
                }
            }
            /* att_h (n, Dh) = scores (n, nk) · v_g (nk, Dh); with the hook, after it (below) */
            if (!probs)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, Dh, nk, 1.0f, sc, nk,
                            vc + (size_t)k_lo * KV + g * Dh, KV, 0.0f, att + (size_t)t0 * Q + h * Dh, Q);
        }
    }
    if (!all) return NL_OK;
    nl_hook_info info = {NL_HOOK_ATTN_PROBS, l, T, P, pos, tokens, NULL, H};
    nl_status st = nl_hooks_fire(&f->hooks, ctx, &info, f->probs);
    if (st != NL_OK) return st;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr) if (nthr > 1 && (int64_t)T * P * Dh * H > NL_PAR_MIN)
    for (int k = 0; k < tasks; k++) {
        const int b = nb - 1 - k / H, h = k % H, g = h / group;
        const int t0 = b * NL_ATT_ROWS, n = T - t0 < NL_ATT_ROWS ? T - t0 : NL_ATT_ROWS;
        const int k_hi = pos + t0 + n;
        const int k_lo = win > 0 && pos + t0 - win + 1 > 0 ? pos + t0 - win + 1 : 0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, Dh, k_hi - k_lo, 1.0f, probs + ((size_t)h * T + t0) * P + k_lo, P,
                    vc + (size_t)k_lo * KV + g * Dh, KV, 0.0f, att + (size_t)t0 * Q + h * Dh, Q);
    }
    return NL_OK;
}

nl_status nl_ffn_fire(const nl_ffn_call *call, nl_ctx *ctx, nl_hook_point p, int width, float *x) {
    if (!nl_hooks_wants(call->hooks, p, call->layer)) return NL_OK;
    nl_hook_info info = {p, call->layer, call->T, width, call->pos0, call->tokens, NULL, 0};
    return nl_hooks_fire(call->hooks, ctx, &info, x);
}

nl_status nl_ffn_dense(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    (void)user;
    const nl_config *c = call->config;
    const nl_layer *w = call->w;
    const int D = call->D, F = call->F, T = call->T;
    nl_status st;
    if (c->ffn_gated) {
        nl_matmul(call->pre, F, x, D, T, &w->w_gate, NULL);
        if ((st = nl_ffn_fire(call, ctx, NL_HOOK_FFN_PRE, F, call->pre)) != NL_OK) return st;
        nl_matmul(call->up, F, x, D, T, &w->w_up, NULL);
        if ((st = nl_ffn_fire(call, ctx, NL_HOOK_FFN_UP, F, call->up)) != NL_OK) return st;
        nl_act_glu(call->pre, call->up, (int64_t)T * F, c->act);
    } else {
        nl_matmul(call->pre, F, x, D, T, &w->w_up, w->b_up);
        if ((st = nl_ffn_fire(call, ctx, NL_HOOK_FFN_PRE, F, call->pre)) != NL_OK) return st;
        nl_activate(call->pre, (int64_t)T * F, c->act);
    }
    if ((st = nl_ffn_fire(call, ctx, NL_HOOK_FFN_ACT, F, call->pre)) != NL_OK) return st;
    nl_matmul(out, D, call->pre, F, T, &w->w_down, w->b_down);
    return NL_OK;
}

/* FFN of layer l on input xin (T, D) into f->ffn_out: FFN_IN hooks on xin (in place), the
 * layer's FFN (dense or replaced), FFN_OUT hooks. */
static nl_status ffn(nl_forward *f, nl_ctx *ctx, const nl_layer *w, int l, int T, const int32_t *tokens,
                     float *xin) {
    const nl_config *c = f->c;
    nl_status st;
    if ((st = fire(f, ctx, NL_HOOK_FFN_IN, l, T, c->d_model, tokens, xin)) != NL_OK) return st;
    const nl_ffn_call call = {l, T, c->d_model, c->d_ff, f->pos, tokens, c, w, f->pre, f->up, &f->hooks};
    nl_ffn_fn fn = f->ffn_fn[l] ? f->ffn_fn[l] : nl_ffn_dense;
    if ((st = fn(f->ffn_user[l], ctx, &call, xin, f->ffn_out)) != NL_OK) return st;
    return fire(f, ctx, NL_HOOK_FFN_OUT, l, T, c->d_model, tokens, f->ffn_out);
}

/* Runs the blocks; leaves the final residual in f->x. Does not advance f->pos.
 * lens == NULL: the T rows are positions f->pos … of one sequence. Else (a windows state, no
 * hooks, pos 0, all layers) they are n_win windows of lens[w] rows each, every one at positions
 * 0 … lens[w]-1: positions, RoPE and attention per window, everything else row by row for all. */
static nl_status blocks(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, int T, const int *lens, int n_win) {
    const nl_config *c = f->c;
    const int D = c->d_model, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    const int one = T; /* the single window's length */
    if (!lens) lens = &one, n_win = 1;
    int lo, hi;
    nl_mpi_stage(c->n_layers, &lo, &hi); /* all layers unless in pipeline mode */
    if (lo == 0)
        for (int w = 0, off = 0; w < n_win; off += lens[w++])
            nl_model_embed(f->m, tokens + off, lens[w], f->pos, f->x + (size_t)off * D);
    else nl_mpi_recv_prev(f->x, (size_t)T * D);
    for (int l = lo; l < hi; l++) {
        if (nl_interrupted) return nl_errorf(ctx, NL_EINTR, "interrupted");
        nl_layer w;
        nl_status st = nl_model_layer(ctx, f->m, l, &w);
        if (st == NL_OK && f->compute == NL_COMPUTE_BF16) st = nl_model_layer_bf16(ctx, f->m, l, &w);
        if (st != NL_OK) return st;
        norm(c, f->xn, f->x, w.ln1_w, w.ln1_b, T);
        if ((st = fire(f, ctx, NL_HOOK_ATTN_IN, l, T, D, tokens, f->xn)) != NL_OK) return st;
        qkv_project(f, &w, l, T);
        if (w.q_norm) { /* Qwen3: RMSNorm over each head's q and k (rows of Dh), before RoPE */
            float *kc = f->k_cache + (cache_layer(f, l) * f->max_P + f->pos) * KV;
            nl_rmsnorm(f->q, f->q, w.q_norm, T * c->n_heads, c->head_dim, c->norm_eps);
            nl_rmsnorm(kc, kc, w.k_norm, T * c->n_kv_heads, c->head_dim, c->norm_eps);
        }
        for (int s = 0, off = 0; c->pos == NL_POS_ROPE && s < n_win; off += lens[s++]) {
            float *kc = f->k_cache + (cache_layer(f, l) * f->max_P + f->pos + off) * KV;
            nl_rope(f->q + (size_t)off * Q, Q, lens[s], c->n_heads, c->head_dim, c->rotary_dim, c->rope_interleaved, f->pos,
                    f->inv_freq);
            nl_rope(kc, KV, lens[s], c->n_kv_heads, c->head_dim, c->rotary_dim, c->rope_interleaved, f->pos, f->inv_freq);
        }
        for (int s = 0, off = 0; s < n_win; off += lens[s++])
            if ((st = attention(f, ctx, l, off, lens[s], f->pos, tokens + off)) != NL_OK) return st;
        if ((st = fire(f, ctx, NL_HOOK_ATTN_PRE_O, l, T, Q, tokens, f->att)) != NL_OK) return st;
        nl_matmul(f->attn_out, D, f->att, Q, T, &w.wo, w.bo);
        if ((st = fire(f, ctx, NL_HOOK_ATTN_OUT, l, T, D, tokens, f->attn_out)) != NL_OK) return st;
        float *ffn_in;
        if (c->shared_norm) {
            ffn_in = f->xn;
        } else if (c->parallel_residual) {
            norm(c, f->xn2, f->x, w.ln2_w, w.ln2_b, T);
            ffn_in = f->xn2;
        } else {
            for (size_t i = 0; i < (size_t)T * D; i++) f->x[i] += f->attn_out[i];
            norm(c, f->xn2, f->x, w.ln2_w, w.ln2_b, T);
            ffn_in = f->xn2;
        }
        if ((st = ffn(f, ctx, &w, l, T, tokens, ffn_in)) != NL_OK) return st;
        const int par = c->shared_norm || c->parallel_residual;
        float *x = f->x;
        const float *ao = f->attn_out, *fo = f->ffn_out;
        const size_t n = (size_t)T * D;
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
        for (size_t i = 0; i < n; i++) x[i] += (par ? ao[i] : 0.0f) + fo[i];
        if ((st = fire(f, ctx, NL_HOOK_RESID, l, T, D, tokens, f->x)) != NL_OK) return st;
    }
    if (hi < c->n_layers) nl_mpi_send_next(f->x, (size_t)T * D);
    return NL_OK;
}

static nl_status check_input(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, int T) {
    if (T <= 0 || T > f->max_T) return nl_errorf(ctx, NL_EINVAL, "batch of %d tokens is outside 1..%d", T, f->max_T);
    if (f->pos + T > f->max_P)
        return nl_errorf(ctx, NL_EINVAL, "context full: %d cached + %d new tokens exceed %d", f->pos, T, f->max_P);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= f->c->vocab_size)
            return nl_errorf(ctx, NL_EINVAL, "token id %d is outside the vocabulary (size %d)", tokens[t], f->c->vocab_size);
    return NL_OK;
}

/* Final norm into f->xn and the head; returns the head via *h. */
static nl_status final_norm(nl_forward *f, nl_ctx *ctx, int T, nl_head *h) {
    nl_status st = nl_model_head(ctx, f->m, h);
    if (st == NL_OK && f->compute == NL_COMPUTE_BF16) st = nl_model_head_bf16(ctx, f->m, h);
    if (st != NL_OK) return st;
    norm(f->c, f->xn, f->x, h->norm_w, h->norm_b, T);
    return NL_OK;
}

nl_status nl_forward_run(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, int T, float *logits) {
    nl_status st = check_input(f, ctx, tokens, T);
    if (st == NL_OK && f->win_P) st = nl_errorf(ctx, NL_EINVAL, "a windows state scores with nl_forward_nll_windows only");
    if (st == NL_OK) st = blocks(f, ctx, tokens, T, NULL, 0);
    if (st != NL_OK) return st;
    if (logits) {
        nl_head h;
        if ((st = final_norm(f, ctx, T, &h)) != NL_OK) return st;
        nl_matmul(logits, f->c->vocab_size, f->xn, f->c->d_model, T, &h.lm_head, h.lm_head_b);
    }
    f->pos += T;
    return NL_OK;
}

static nl_status check_targets(nl_forward *f, nl_ctx *ctx, const int32_t *targets, int T) {
    for (int t = 0; t < T; t++)
        if (targets[t] >= f->c->vocab_size)
            return nl_errorf(ctx, NL_EINVAL, "token id %d is outside the vocabulary (size %d)", targets[t], f->c->vocab_size);
    return NL_OK;
}

/* nll[t] of the T rows of f->x (the final residual) with a target; 0 elsewhere. */
static nl_status head_nll(nl_forward *f, nl_ctx *ctx, const int32_t *targets, int T, double *nll) {
    const int V = f->c->vocab_size, D = f->c->d_model;
    nl_head h;
    nl_status st;
    if ((st = final_norm(f, ctx, T, &h)) != NL_OK) return st;
    const int HB = f->head_rows;
    /* blocks of up to HB rows, from the next row with a target to the last one with a target
     * (rows without one — the context part of an overlapping window — cost nothing) */
    for (int t0 = 0, n; t0 < T; t0 += n) {
        if (targets[t0] < 0) { nll[t0] = 0; n = 1; continue; }
        n = T - t0 < HB ? T - t0 : HB;
        while (targets[t0 + n - 1] < 0) n--;
        nl_matmul(f->logits, V, f->xn + (size_t)t0 * D, D, n, &h.lm_head, h.lm_head_b);
#pragma omp parallel for schedule(static) if ((int64_t)n * V > NL_PAR_MIN)
        for (int i = 0; i < n; i++) {
            const int tg = targets[t0 + i];
            if (tg < 0) { nll[t0 + i] = 0; continue; }
            const float *z = f->logits + (size_t)i * V;
            const float mx = nl_max_vec(z, V);
            nll[t0 + i] = log(nl_sum_exp_shift(z, V, mx)) + mx - z[tg];
        }
    }
    return NL_OK;
}

nl_status nl_forward_nll_windows(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, const int32_t *targets, const int *lens,
                                 int n_win, double *nll) {
    if (!f->win_P) return nl_errorf(ctx, NL_EINVAL, "nl_forward_nll_windows needs a windows state (nl_forward_create_windows)");
    int T = 0;
    for (int w = 0; w < n_win; w++) {
        if (lens[w] < 1 || lens[w] > f->win_P)
            return nl_errorf(ctx, NL_EINVAL, "window %d has %d tokens, outside 1..%d", w, lens[w], f->win_P);
        T += lens[w];
    }
    f->pos = 0;
    nl_status st = check_input(f, ctx, tokens, T);
    if (st == NL_OK) st = check_targets(f, ctx, targets, T);
    if (st == NL_OK) st = blocks(f, ctx, tokens, T, lens, n_win);
    if (st == NL_OK) st = head_nll(f, ctx, targets, T, nll);
    return st;
}

nl_status nl_forward_nll(nl_forward *f, nl_ctx *ctx, const int32_t *tokens, const int32_t *targets, int T,
                         double *nll) {
    nl_status st = check_input(f, ctx, tokens, T);
    if (st == NL_OK && f->win_P) st = nl_errorf(ctx, NL_EINVAL, "a windows state scores with nl_forward_nll_windows only");
    if (st == NL_OK) st = blocks(f, ctx, tokens, T, NULL, 0);
    if (st == NL_OK) st = check_targets(f, ctx, targets, T);
    if (st != NL_OK) return st;
    int lo, hi;
    nl_mpi_stage(f->c->n_layers, &lo, &hi);
    if (hi < f->c->n_layers) { /* pipeline mode, not the last rank: the losses come from it */
        nl_mpi_bcast_last(nll, (size_t)T);
        f->pos += T;
        return NL_OK;
    }
    if ((st = head_nll(f, ctx, targets, T, nll)) != NL_OK) return st;
    nl_mpi_bcast_last(nll, (size_t)T);
    f->pos += T;
    return NL_OK;
}
