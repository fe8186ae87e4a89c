/* model_bf16.c — the bf16 packed copies of a model's matrices for `--compute bf16`
 * (nl_model_layer_bf16, nl_model_head_bf16, the packed layout nl_bf16_mat: model.h; the kernel that
 * reads them is nl_matmul_bf16 in src/forward/gemm_bf16.c).
 *
 * Rules: a layer is packed from its f32 view (nl_model_layer: stored f32 in place, f16/bf16 and
 * GGUF's quantised types converted first, so every stored type goes through the same dequant
 * code as the f32 path), once per layer when all layers fit the budget of nl_model_keep_bf16
 * (kept until nl_model_close), else into one per-model slot repacked when the layer changes.
 * Packed: the attention projections (q, k, v or fused qkv, o), the dense FFN (gate, up, down)
 * and the LM head (always kept: packed once). Norms, biases, the MoE router and experts stay
 * f32. Checked by tests/bf16.sh (perplexity and activations against f32).
 */
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

#define NL_BF16_MATS 8

size_t nl_bf16_pack_elems(int n_out, int n_in) {
    const size_t panels = ((size_t)n_out + NL_BF16_NR - 1) / NL_BF16_NR, kp = ((size_t)n_in + 1) / 2;
    return panels * kp * NL_BF16_NR * 2;
}

/* f32 → bf16, round to nearest even (nl_f32_to_bf16 inlined: packing a 100M model calls it 10⁸ times) */
static inline uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* The NaN-free form of to_bf16 over a row, written so that it vectorises (NaN rows take the
 * scalar path). */
static void row_to_bf16(uint16_t *dst, const float *src, int n) {
    int nan = 0;
    for (int i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, src + i, 4);
        nan |= (x & 0x7fffffff) > 0x7f800000;
        dst[i] = (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
    }
    if (nan)
        for (int i = 0; i < n; i++) dst[i] = to_bf16(src[i]);
}

void nl_bf16_pack(struct nl_bf16_mat *out, uint16_t *dst, const nl_mat *w) {
    const int N = w->n_out, K = w->n_in, kp = (K + 1) / 2, panels = (N + NL_BF16_NR - 1) / NL_BF16_NR;
    out->p = dst, out->n_out = N, out->n_in = K, out->kp = kp;
#pragma omp parallel if ((int64_t)N * K > (1 << 16))
    {
        uint16_t *row = w->trans ? NULL : malloc((size_t)2 * kp * sizeof(uint16_t)); /* one output's inputs in bf16 */
#pragma omp for schedule(static)
        for (int pn = 0; pn < panels; pn++) {
            uint16_t *p = dst + (size_t)pn * kp * NL_BF16_NR * 2;
            for (int j = 0; j < NL_BF16_NR; j++) { /* column j of the panel: output o */
                const int o = pn * NL_BF16_NR + j;
                uint32_t *col = (uint32_t *)(void *)p + j; /* pair k at col[k * NL_BF16_NR] */
                if (o >= N) {
                    for (int k = 0; k < kp; k++) col[(size_t)k * NL_BF16_NR] = 0;
                } else if (row) { /* stored (n_out, n_in): row o converted at once, then its pairs placed */
                    row_to_bf16(row, w->w + (size_t)o * w->ld, K);
                    if (K & 1) row[K] = 0;
                    for (int k = 0; k < kp; k++) memcpy(col + (size_t)k * NL_BF16_NR, row + 2 * k, 4);
                } else { /* stored (n_in, n_out), or no memory for the row: element by element */
                    const size_t si = w->trans ? (size_t)w->ld : 1, so = w->trans ? 1 : (size_t)w->ld;
                    const float *wo = w->w + (size_t)o * so; /* input i at wo[i * si] */
                    for (int k = 0; k < kp; k++) {
                        const uint16_t lo = to_bf16(wo[(size_t)(2 * k) * si]);
                        const uint16_t hi = 2 * k + 1 < K ? to_bf16(wo[(size_t)(2 * k + 1) * si]) : 0;
                        col[(size_t)k * NL_BF16_NR] = (uint32_t)lo | (uint32_t)hi << 16;
                    }
                }
            }
        }
        free(row);
    }
}

struct nl_bf16_layer {
    struct nl_bf16_mat mats[NL_BF16_MATS];
    uint16_t *data; /* the packed matrices, each starting on 64 bytes */
    size_t cap;     /* uint16 elements of data */
};

/* The packable matrices of a layer, in a fixed order (absent ones have w == NULL). */
static void layer_mats(nl_layer *w, nl_mat **ms) {
    nl_mat *a[NL_BF16_MATS] = {&w->wq, &w->wk, &w->wv, &w->wqkv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    memcpy(ms, a, sizeof a);
}

static size_t round64(size_t elems) { return (elems + 31) / 32 * 32; } /* uint16 elements → 64 bytes */

/* Packed elements of the stored tensor t (orientation as nl_model_layer's views). */
static size_t stored_elems(const nl_model *m, const nl_tensor *t) {
    if (!t->data || t->ndim < 2) return 0;
    const int trans = m->conv1d;
    return round64(nl_bf16_pack_elems((int)(trans ? t->shape[1] : t->shape[0]), (int)(trans ? t->shape[0] : t->shape[1])));
}

static size_t layer_elems_stored(const nl_model *m, const nl_stored_layer *s) {
    const nl_tensor *ts[NL_BF16_MATS] = {&s->wq, &s->wk, &s->wv, &s->wqkv, &s->wo, &s->w_gate, &s->w_up, &s->w_down};
    size_t n = 0;
    for (int i = 0; i < NL_BF16_MATS; i++) n += stored_elems(m, ts[i]);
    return n;
}

size_t nl_model_bf16_bytes(const nl_model *m) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) n += layer_elems_stored(m, &m->layers[l]);
    return n * sizeof(uint16_t);
}

int nl_model_keep_bf16(nl_model *m, size_t max_bytes) {
    if (m->bf16) return 1;
    if (nl_model_bf16_bytes(m) > max_bytes) return 0;
    m->bf16 = calloc((size_t)m->cfg.n_layers, sizeof *m->bf16);
    return m->bf16 != NULL;
}

/* Packs the present matrices of w into b (grown as needed); attaches nothing. */
static nl_status pack_layer(nl_ctx *ctx, nl_model *m, int l, nl_layer *w, struct nl_bf16_layer *b) {
    nl_mat *ms[NL_BF16_MATS];
    layer_mats(w, ms);
    size_t need = 0;
    for (int i = 0; i < NL_BF16_MATS; i++)
        if (ms[i]->w) need += round64(nl_bf16_pack_elems(ms[i]->n_out, ms[i]->n_in));
    if (need > b->cap) {
        free(b->data);
        b->data = aligned_alloc(64, need * sizeof(uint16_t));
        b->cap = b->data ? need : 0;
        if (!b->data) return nl_errorf(ctx, NL_ENOMEM, "cannot pack layer %d of '%s' in bf16: out of memory", l, m->path);
    }
    uint16_t *p = b->data;
    memset(b->mats, 0, sizeof b->mats);
    for (int i = 0; i < NL_BF16_MATS; i++) {
        if (!ms[i]->w) continue;
        nl_bf16_pack(&b->mats[i], p, ms[i]);
        p += round64(nl_bf16_pack_elems(ms[i]->n_out, ms[i]->n_in));
    }
    return NL_OK;
}

nl_status nl_model_layer_bf16(nl_ctx *ctx, nl_model *m, int l, nl_layer *w) {
    NL_ASSERT(l >= 0 && l < m->cfg.n_layers);
    struct nl_bf16_layer *b;
    nl_status st;
    if (m->bf16) { /* kept: packed on first use */
        if (!m->bf16[l]) {
            if (!(b = calloc(1, sizeof *b))) return nl_errorf(ctx, NL_ENOMEM, "cannot pack layer %d of '%s' in bf16: out of memory", l, m->path);
            if ((st = pack_layer(ctx, m, l, w, b)) != NL_OK) { free(b); return st; }
            m->bf16[l] = b;
        }
        b = m->bf16[l];
    } else { /* one slot, repacked when the layer changes */
        if (!m->bf16_slot && !(m->bf16_slot = calloc(1, sizeof *m->bf16_slot)))
            return nl_errorf(ctx, NL_ENOMEM, "cannot pack layer %d of '%s' in bf16: out of memory", l, m->path);
        b = m->bf16_slot;
        if (m->bf16_slot_layer != l + 1) {
            m->bf16_slot_layer = 0;
            if ((st = pack_layer(ctx, m, l, w, b)) != NL_OK) return st;
            m->bf16_slot_layer = l + 1;
        }
    }
    nl_mat *ms[NL_BF16_MATS];
    layer_mats(w, ms);
    for (int i = 0; i < NL_BF16_MATS; i++)
        if (ms[i]->w) ms[i]->bf16 = &b->mats[i];
    return NL_OK;
}

nl_status nl_model_head_bf16(nl_ctx *ctx, nl_model *m, nl_head *h) {
    if (!m->head_bf16) {
        struct nl_bf16_layer *b = calloc(1, sizeof *b);
        const size_t need = nl_bf16_pack_elems(h->lm_head.n_out, h->lm_head.n_in);
        if (b) b->data = aligned_alloc(64, round64(need) * sizeof(uint16_t));
        if (!b || !b->data) {
            free(b);
            return nl_errorf(ctx, NL_ENOMEM, "cannot pack the LM head of '%s' in bf16: out of memory", m->path);
        }
        b->cap = round64(need);
        nl_bf16_pack(&b->mats[0], b->data, &h->lm_head);
        m->head_bf16 = b;
    }
    h->lm_head.bf16 = &m->head_bf16->mats[0];
    return NL_OK;
}

static void free_layer(struct nl_bf16_layer *b) {
    if (b) free(b->data);
    free(b);
}

void nl_model_bf16_free(nl_model *m) {
    if (m->bf16)
        for (int l = 0; l < m->cfg.n_layers; l++) free_layer(m->bf16[l]);
    free(m->bf16);
    free_layer(m->bf16_slot);
    free_layer(m->head_bf16);
    m->bf16 = NULL, m->bf16_slot = m->head_bf16 = NULL, m->bf16_slot_layer = 0;
}
