/* llama2c.c — loader for llama2.c legacy checkpoints (.bin).
 *
 * Format: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; a negative vocab_size means the classifier is stored separately), then f32
 * weights: token embedding (V, D), attention norms (L, D), wq (L, D, D), wk (L, KV, D),
 * wv (L, KV, D), wo (L, D, D), ffn norms (L, D), w1 (L, F, D), w2 (L, D, F), w3 (L, F, D),
 * final norm (D), two RoPE tables (seq_len, Dh/2) that are skipped, classifier (V, D).
 * Matrices are (out, in) like torch.nn.Linear; RoPE rotates adjacent pairs.
 * Rules: the header's dimensions must be plausible and imply exactly the file's size (sizes
 * computed in 64 bits with overflow checks) before anything is allocated; messages name the file.
 * Every weight must be finite: one pass over the mapped floats at open (an exponent-bits test
 * the compiler vectorises; measured 0.05 s of CPU for a 167 MB checkpoint in the page cache,
 * whose pages the first forward pass reads anyway) refuses a NaN or infinity, naming the tensor, the
 * layer and the element, instead of a perplexity of nan. The RoPE tables are not read and not checked.
 * Checked by tests/test_model.c and the stories260K tests.
 */
#include "model/model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nl_tensor f32_tensor(const float **p, int64_t d0, int64_t d1) {
    nl_tensor t = {.data = *p, .dtype = NL_DT_F32, .ndim = d1 > 0 ? 2 : 1, .shape = {d0, d1 > 0 ? d1 : 0}};
    *p += d0 * (d1 > 0 ? d1 : 1);
    return t;
}

/* Index of the first NaN or infinite float of p[0..n) (exponent bits all ones), or -1. Blocks
 * of 4096 are tested branch-free first, so the common all-finite case vectorises. */
static int64_t first_nonfinite(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 4096) {
        const int64_t e = n - i < 4096 ? n : i + 4096;
        uint32_t bad = 0;
        for (int64_t j = i; j < e; j++) {
            uint32_t u;
            memcpy(&u, p + j, 4);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (!bad) continue;
        for (int64_t j = i; j < e; j++)
            if (!isfinite(p[j])) return j;
    }
    return -1;
}

/* NL_OK, or NL_EFORMAT naming the file, the tensor (layer l when >= 0) and the element. */
static nl_status check_finite(nl_ctx *ctx, const char *path, const nl_tensor *t, const char *name, int l) {
    const int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
    const int64_t i = first_nonfinite((const float *)t->data, n);
    if (i < 0) return NL_OK;
    const float v = ((const float *)t->data)[i];
    char where[48] = "";
    if (l >= 0) snprintf(where, sizeof where, " of layer %d", l);
    if (t->ndim == 2)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': the %s%s holds %s at [%lld, %lld]: the weights must be finite", path, name, where,
                         isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", (long long)(i / t->shape[1]), (long long)(i % t->shape[1]));
    return nl_errorf(ctx, NL_EFORMAT, "'%s': the %s%s holds %s at [%lld]: the weights must be finite", path, name, where,
                     isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", (long long)i);
}

nl_status nl_llama2c_open(nl_ctx *ctx, const char *path, nl_model **out) {
    *out = NULL;
    nl_model *m = nl_model_alloc(path);
    if (!m) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", path);
    const void *base;
    size_t size;
    nl_status st = nl_model_map(ctx, m, path, &base, &size);
    if (st != NL_OK) goto fail;
    if (size < 28) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a llama2.c checkpoint: %zu bytes is shorter than its header", path, size);
        goto fail;
    }
    int32_t h[7];
    memcpy(h, base, sizeof h);
    int shared = h[5] > 0;
    int64_t D = h[0], F = h[1], L = h[2], H = h[3], Hk = h[4], V = shared ? h[5] : -(int64_t)h[5], S = h[6];
    if (D <= 0 || F <= 0 || L <= 0 || H <= 0 || Hk <= 0 || V <= 0 || S <= 0 || D % H || H % Hk || D > (1 << 20) ||
        F > (1 << 22) || L > 4096 || V > (1 << 24) || S > (1 << 24) || (D / H) % 2) {
        st = nl_errorf(ctx, NL_EFORMAT,
                       "'%s' is not a llama2.c checkpoint: implausible header (dim %d, hidden %d, layers %d, heads %d, "
                       "kv heads %d, vocab %d, seq_len %d)", path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        goto fail;
    }
    int64_t Dh = D / H, KV = Hk * Dh;
    /* Every product in 64 bits with overflow checks (the bounds above keep them far from
     * overflowing; the checks keep that true if the bounds change), and the total must be
     * the file's size before anything is allocated. */
    const int64_t terms[][3] = {{V, D, 1},  {L, D, 1},  {L, D, D},      {L, KV, 2 * D}, {L, D, D},
                                {L, D, 1},  {L, F, 3 * D}, {D, 1, 1},   {S, Dh, 1},     {shared ? 0 : V, D, 1}};
    int64_t floats = 0, bytes = 0;
    int overflow = 0;
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
        int64_t t;
        overflow |= __builtin_mul_overflow(terms[i][0], terms[i][1], &t) || __builtin_mul_overflow(t, terms[i][2], &t) ||
                    __builtin_add_overflow(floats, t, &floats);
    }
    overflow |= __builtin_mul_overflow(floats, (int64_t)4, &bytes) || __builtin_add_overflow(bytes, (int64_t)28, &bytes);
    if (overflow || (uint64_t)bytes != (uint64_t)size) {
        char implied[48];
        if (overflow) snprintf(implied, sizeof implied, "more than 2^63");
        else snprintf(implied, sizeof implied, "%lld", (long long)bytes);
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': file has %zu bytes, its header (dim %lld, layers %lld, vocab %lld%s) implies %s",
                       path, size, (long long)D, (long long)L, (long long)V, shared ? "" : ", separate classifier",
                       implied);
        goto fail;
    }
    nl_config *c = &m->cfg;
    c->arch = NL_ARCH_LLAMA;
    snprintf(c->model_type, sizeof c->model_type, "llama2c");
    c->n_layers = (int)L; c->d_model = (int)D; c->d_ff = (int)F; c->n_heads = (int)H; c->n_kv_heads = (int)Hk;
    c->head_dim = (int)Dh; c->vocab_size = (int)V; c->max_pos = (int)S;
    c->ffn_gated = 1; c->act = NL_ACT_SILU; c->norm = NL_NORM_RMS; c->norm_eps = 1e-5f;
    c->pos = NL_POS_ROPE; c->rope_theta = 10000.0f; c->rotary_dim = (int)Dh; c->rope_interleaved = 1;
    c->tie_embeddings = shared; c->bos_id = 1; c->eos_id = 2;
    m->qkv_layout = NL_QKV_SEPARATE;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) { st = nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", path); goto fail; }

    const float *p = (const float *)((const char *)base + 28);
    m->tok_emb = f32_tensor(&p, V, D);
    for (int l = 0; l < L; l++) m->layers[l].ln1_w = f32_tensor(&p, D, 0);
    for (int l = 0; l < L; l++) m->layers[l].wq = f32_tensor(&p, D, D);
    for (int l = 0; l < L; l++) m->layers[l].wk = f32_tensor(&p, KV, D);
    for (int l = 0; l < L; l++) m->layers[l].wv = f32_tensor(&p, KV, D);
    for (int l = 0; l < L; l++) m->layers[l].wo = f32_tensor(&p, D, D);
    for (int l = 0; l < L; l++) m->layers[l].ln2_w = f32_tensor(&p, D, 0);
    for (int l = 0; l < L; l++) m->layers[l].w_gate = f32_tensor(&p, F, D);
    for (int l = 0; l < L; l++) m->layers[l].w_down = f32_tensor(&p, D, F);
    for (int l = 0; l < L; l++) m->layers[l].w_up = f32_tensor(&p, F, D);
    m->norm_w = f32_tensor(&p, D, 0);
    p += S * Dh; /* freq_cis_real and freq_cis_imag, (S, Dh/2) each: recomputed, not read */
    if (!shared) m->lm_head = f32_tensor(&p, V, D);
    if ((st = nl_model_validate(ctx, m, path)) != NL_OK) goto fail;
    st = check_finite(ctx, path, &m->tok_emb, "token embedding", -1);
    for (int l = 0; l < L && st == NL_OK; l++) {
        const nl_stored_layer *y = &m->layers[l];
        const struct { const nl_tensor *t; const char *name; } ts[] = {
            {&y->ln1_w, "attention norm"}, {&y->wq, "query weight"},   {&y->wk, "key weight"},  {&y->wv, "value weight"},
            {&y->wo, "output weight"},     {&y->ln2_w, "FFN norm"},     {&y->w_gate, "FFN gate weight (w1)"},
            {&y->w_down, "FFN down weight (w2)"}, {&y->w_up, "FFN up weight (w3)"}};
        for (size_t k = 0; k < sizeof ts / sizeof ts[0] && st == NL_OK; k++) st = check_finite(ctx, path, ts[k].t, ts[k].name, l);
    }
    if (st == NL_OK) st = check_finite(ctx, path, &m->norm_w, "final norm", -1);
    if (st == NL_OK && !shared) st = check_finite(ctx, path, &m->lm_head, "classifier", -1);
    if (st != NL_OK) goto fail;
    *out = m;
    return NL_OK;
fail:
    nl_model_close(m);
    return st;
}
