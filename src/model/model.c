/* model.c — model lifecycle shared by every loader: file mapping, validation of tensor
 * shapes against the config, and f32 views of one layer at a time.
 *
 * Rules: stored-f32 tensors are used in place; tensors of any other dtype are converted into
 * the model's one-layer slot (m->slot), reused for every layer; the head is converted once.
 * Every conversion to f32 goes through the one dtype table below (dtype_table: name, block
 * size, to_f32 per row or range); a new stored type (GGUF's Q8_0, Q4_K …) is a new row.
 * The loader is chosen by the file's first bytes (sniff), not by its name.
 * Checked by tests/test_model.c and tests/test_forward.c.
 */
#include "model/model_internal.h"
#include "model/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes: one row per stored type --------------------------------------------------- */

static void f32_to_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

static void f16_to_f32(const void *src, float *dst, int64_t n) {
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2); /* the view may be unaligned */
        dst[i] = nl_f16_to_f32(h);
    }
}

static void bf16_to_f32(const void *src, float *dst, int64_t n) {
    const unsigned char *s = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = nl_bf16_to_f32(h);
    }
}

static const nl_dtype_info dtype_table[NL_DT_COUNT] = {
    [NL_DT_F32] = {"f32", 4, 1, f32_to_f32},
    [NL_DT_F16] = {"f16", 2, 1, f16_to_f32},
    [NL_DT_BF16] = {"bf16", 2, 1, bf16_to_f32},
    [NL_DT_Q4_0] = {"q4_0", 18, 32, nl_dequant_q4_0},
    [NL_DT_Q4_1] = {"q4_1", 20, 32, nl_dequant_q4_1},
    [NL_DT_Q5_0] = {"q5_0", 22, 32, nl_dequant_q5_0},
    [NL_DT_Q5_1] = {"q5_1", 24, 32, nl_dequant_q5_1},
    [NL_DT_Q8_0] = {"q8_0", 34, 32, nl_dequant_q8_0},
    [NL_DT_Q2_K] = {"q2_k", 84, 256, nl_dequant_q2_k},
    [NL_DT_Q3_K] = {"q3_k", 110, 256, nl_dequant_q3_k},
    [NL_DT_Q4_K] = {"q4_k", 144, 256, nl_dequant_q4_k},
    [NL_DT_Q5_K] = {"q5_k", 176, 256, nl_dequant_q5_k},
    [NL_DT_Q6_K] = {"q6_k", 210, 256, nl_dequant_q6_k},
};

const nl_dtype_info *nl_dtype_info_of(nl_dtype dt) {
    NL_ASSERT((unsigned)dt < NL_DT_COUNT);
    return &dtype_table[dt];
}

const char *nl_dtype_name(nl_dtype dt) { return (unsigned)dt < NL_DT_COUNT ? dtype_table[dt].name : "?"; }

size_t nl_dtype_size(nl_dtype dt) {
    const nl_dtype_info *d = nl_dtype_info_of(dt);
    return d->block_elems == 1 ? (size_t)d->block_bytes : 0;
}

size_t nl_dtype_bytes(nl_dtype dt, int64_t n) {
    const nl_dtype_info *d = nl_dtype_info_of(dt);
    NL_ASSERT(n % d->block_elems == 0);
    return (size_t)(n / d->block_elems) * (size_t)d->block_bytes;
}

/* dst (n) = elements [first, first + n) of a tensor's data of type dt, decoded. */
static void decode_range(nl_dtype dt, const void *data, int64_t first, int64_t n, float *dst) {
    const nl_dtype_info *d = &dtype_table[dt];
    d->to_f32((const char *)data + nl_dtype_bytes(dt, first), dst, n);
}

int64_t nl_tensor_numel(const nl_tensor *t) {
    if (!t->data) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

const char *nl_act_name(nl_act a) {
    switch (a) {
    case NL_ACT_SILU: return "silu";
    case NL_ACT_GELU: return "gelu";
    case NL_ACT_GELU_TANH: return "gelu_tanh";
    case NL_ACT_RELU: return "relu";
    case NL_ACT_RELU2: return "relu2";
    }
    return "?";
}

int nl_act_parse(const char *s) {
    static const struct { const char *name; nl_act act; } tab[] = {
        {"silu", NL_ACT_SILU},           {"swish", NL_ACT_SILU},
        {"gelu", NL_ACT_GELU},           {"gelu_new", NL_ACT_GELU_TANH},
        {"gelu_pytorch_tanh", NL_ACT_GELU_TANH}, {"gelu_fast", NL_ACT_GELU_TANH},
        {"gelu_tanh", NL_ACT_GELU_TANH}, {"relu", NL_ACT_RELU},
        {"relu2", NL_ACT_RELU2},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(s, tab[i].name) == 0) return (int)tab[i].act;
    return -1;
}

nl_model *nl_model_alloc(const char *path) {
    nl_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    snprintf(m->path, sizeof m->path, "%s", path);
    m->cfg.bos_id = m->cfg.eos_id = -1;
    m->slot_layer = -1;
    return m;
}

nl_status nl_model_map(nl_ctx *ctx, nl_model *m, const char *path, const void **base, size_t *size) {
    if (m->n_maps >= NL_MAX_MAPS) return nl_errorf(ctx, NL_EUNSUPPORTED, "cannot map '%s': more than %d files", path, NL_MAX_MAPS);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return nl_errorf(ctx, NL_EIO, "cannot read '%s': not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': file is empty", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return nl_errorf(ctx, NL_EIO, "cannot map '%s': %s", path, strerror(errno));
    m->maps[m->n_maps].base = p;
    m->maps[m->n_maps].size = (size_t)st.st_size;
    m->maps[m->n_maps].file = 1;
    m->n_maps++;
    *base = p;
    *size = (size_t)st.st_size;
    return NL_OK;
}

void nl_model_close(nl_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_maps; i++) munmap(m->maps[i].base, m->maps[i].size);
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) {
            free(m->layers[l].experts);
            free(m->layers[l].views);
        }
    free(m->layers);
    free(m->slot);
    if (m->resident)
        for (int l = 0; l < m->cfg.n_layers; l++) free(m->resident[l]);
    free(m->resident);
    free(m->head_buf);
    nl_model_bf16_free(m);
    free(m);
}

/* The loader is chosen by the first bytes of the file, never by its name:
 *   a directory                                  → Hugging Face folder (config.json + safetensors)
 *   "GGUF"                                       → GGUF (gguf.c)
 *   u64 little-endian header length < 2^32, '{'  → a bare safetensors file (the folder is needed)
 *   anything else                                → llama2.c, whose loader validates its header */
typedef enum { NL_FMT_LLAMA2C = 0, NL_FMT_GGUF, NL_FMT_SAFETENSORS } nl_file_format;

static nl_file_format sniff(const unsigned char *b, size_t n) {
    if (n >= 4 && memcmp(b, "GGUF", 4) == 0) return NL_FMT_GGUF;
    /* A llama2.c header read as a u64 has hidden_dim (> 0) in its upper half. */
    if (n >= 9 && b[8] == '{' && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0) return NL_FMT_SAFETENSORS;
    return NL_FMT_LLAMA2C;
}

nl_status nl_model_open(nl_ctx *ctx, const char *path, nl_model **out) { return nl_model_open_opts(ctx, path, NULL, out); }

const char *nl_model_act_source(const nl_model *m) { return m->act_source ? m->act_source : "config"; }

nl_status nl_model_open_opts(nl_ctx *ctx, const char *path, const nl_model_opts *opts, nl_model **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    const int act_opt = opts && opts->hidden_act;
    if (S_ISDIR(st.st_mode)) {
        if (act_opt)
            return nl_errorf(ctx, NL_EINVAL, "'%s': the FFN activation is set for GGUF files only (config.json names it here)", path);
        return nl_hf_open(ctx, path, out);
    }
    unsigned char magic[16];
    size_t n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    while (n < sizeof magic) {
        ssize_t r = read(fd, magic + n, sizeof magic - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    switch (sniff(magic, n)) {
    case NL_FMT_GGUF: return nl_gguf_open(ctx, path, opts, out);
    case NL_FMT_SAFETENSORS:
        return nl_errorf(ctx, NL_EINVAL, "cannot open '%s': pass the model folder (with config.json), not the .safetensors file", path);
    case NL_FMT_LLAMA2C: break;
    }
    if (act_opt) return nl_errorf(ctx, NL_EINVAL, "'%s': the FFN activation is set for GGUF files only (llama2.c runs SiLU)", path);
    return nl_llama2c_open(ctx, path, out);
}

const nl_config *nl_model_config(const nl_model *m) { return &m->cfg; }
const char *nl_model_path(const nl_model *m) { return m->path; }

nl_dtype nl_model_dtype(const nl_model *m) {
    if (m->cfg.n_layers > 0 && m->layers[0].w_up.data) return m->layers[0].w_up.dtype;
    if (m->cfg.n_layers > 0 && m->layers[0].experts) return m->layers[0].experts[1].dtype; /* expert 0's W_up */
    return m->tok_emb.dtype;
}

int64_t nl_model_bytes(const nl_model *m) {
    int64_t b = 0;
    for (int i = 0; i < m->n_maps; i++) b += (int64_t)m->maps[i].size;
    return b;
}

#define NL_LAYER_TENSORS(X)                                                                   \
    X(ln1_w) X(ln1_b) X(ln2_w) X(ln2_b) X(wq) X(wk) X(wv) X(bq) X(bk) X(bv) X(wqkv) X(bqkv)  \
    X(wo) X(bo) X(w_gate) X(w_up) X(b_up) X(w_down) X(b_down) X(q_norm) X(k_norm) X(router)  \
    X(sh_gate) X(sh_up) X(sh_down) X(sh_router)
#define NL_LAYER_N_TENSORS 26

/* Routed-expert tensors of layer s: (E, 3) or none (dense layer). */
static int64_t n_expert_tensors(const nl_model *m, const nl_stored_layer *s) {
    return s->experts ? 3 * (int64_t)m->cfg.n_experts : 0;
}

int64_t nl_model_n_params(const nl_model *m) {
    int64_t n = nl_tensor_numel(&m->tok_emb) + nl_tensor_numel(&m->pos_emb) + nl_tensor_numel(&m->norm_w) +
                nl_tensor_numel(&m->norm_b) + nl_tensor_numel(&m->lm_head) + nl_tensor_numel(&m->lm_head_b);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const nl_stored_layer *s = &m->layers[l];
#define X(f) n += nl_tensor_numel(&s->f);
        NL_LAYER_TENSORS(X)
#undef X
        for (int64_t e = 0; e < n_expert_tensors(m, s); e++) n += nl_tensor_numel(&s->experts[e]);
    }
    return n;
}

nl_status nl_model_realign(nl_ctx *ctx, nl_model *m) {
    nl_tensor *glob[] = {&m->tok_emb, &m->pos_emb, &m->norm_w, &m->norm_b, &m->lm_head, &m->lm_head_b};
    const int n_glob = (int)(sizeof glob / sizeof glob[0]);
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *dst = NULL;
        if (pass == 1) {
            if (total == 0) return NL_OK;
            if (m->n_maps >= NL_MAX_MAPS)
                return nl_errorf(ctx, NL_EUNSUPPORTED, "cannot open '%s': too many files", m->path);
            void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory aligning %zu bytes of tensors",
                                 m->path, total);
            m->maps[m->n_maps].base = p;
            m->maps[m->n_maps].size = total;
            m->maps[m->n_maps].file = 0;
            m->n_maps++;
            dst = p;
        }
        for (int i = 0; i < n_glob + m->cfg.n_layers; i++) {
            nl_tensor *one[NL_LAYER_N_TENSORS], **ts = one;
            int n = 1;
            int64_t n_exp = 0;
            nl_stored_layer *s = NULL;
            if (i < n_glob) {
                one[0] = glob[i];
            } else {
                s = &m->layers[i - n_glob];
                n = 0;
#define X(f) one[n++] = &s->f;
                NL_LAYER_TENSORS(X)
#undef X
                n_exp = n_expert_tensors(m, s);
            }
            for (int64_t k = 0; k < n + n_exp; k++) {
                nl_tensor *t = k < n ? ts[k] : &s->experts[k - n];
                size_t es = t->data ? nl_dtype_size(t->dtype) : 0; /* block types are read bytewise */
                if (!es || (uintptr_t)t->data % es == 0) continue;
                size_t nb = nl_dtype_bytes(t->dtype, nl_tensor_numel(t)), padded = (nb + 63) & ~(size_t)63;
                if (pass == 0) {
                    total += padded;
                } else {
                    memcpy(dst, t->data, nb);
                    t->data = dst;
                    dst += padded;
                }
            }
        }
    }
    return NL_OK;
}

/* ---- validation --------------------------------------------------------------------- */

static nl_status check_shape(nl_ctx *ctx, const char *what, const char *name, int l, const nl_tensor *t,
                             int required, int64_t d0, int64_t d1) {
    char full[96];
    if (l >= 0) snprintf(full, sizeof full, "layer %d %s", l, name);
    else snprintf(full, sizeof full, "%s", name);
    if (!t->data) {
        if (required) return nl_errorf(ctx, NL_EFORMAT, "'%s': missing tensor %s", what, full);
        return NL_OK;
    }
    int nd = d1 < 0 ? 1 : 2;
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char got[64] = "", want[64];
        int k = 0;
        for (int i = 0; i < t->ndim && k < (int)sizeof got - 24; i++)
            k += snprintf(got + k, sizeof got - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (nd == 2) snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        else snprintf(want, sizeof want, "%lld", (long long)d0);
        return nl_errorf(ctx, NL_EFORMAT, "'%s': tensor %s has shape [%s], the config implies [%s]", what, full, got,
                         want);
    }
    return NL_OK;
}

nl_status nl_model_validate(nl_ctx *ctx, const nl_model *m, const char *what) {
    const nl_config *c = &m->cfg;
    if (c->n_layers <= 0 || c->d_model <= 0 || c->d_ff <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->vocab_size <= 0)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': config has a non-positive dimension", what);
    if (c->n_heads % c->n_kv_heads != 0)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': %d heads is not a multiple of %d key/value heads", what, c->n_heads,
                         c->n_kv_heads);
    if (c->pos == NL_POS_ROPE && (c->rotary_dim <= 0 || c->rotary_dim > c->head_dim || c->rotary_dim % 2))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': rotary dimension %d is invalid for head dimension %d", what,
                         c->rotary_dim, c->head_dim);
    if (c->pos == NL_POS_ROPE && c->rotary_dim > 1024) /* nl_rope's per-token tables hold 512 pairs */
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': rotary dimension %d is not supported (at most 1024)", what,
                         c->rotary_dim);
    /* every loader's last line of defence; config.json values are checked by name in hf.c */
    if (!isfinite(c->norm_eps) || c->norm_eps < 0)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': norm epsilon %g is not a finite float >= 0", what, (double)c->norm_eps);
    if (c->pos == NL_POS_ROPE && !(isfinite(c->rope_theta) && c->rope_theta >= FLT_MIN))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': rope theta %g is not a positive finite float", what, (double)c->rope_theta);
    if (c->pos == NL_POS_ROPE && c->rope_scaling != NL_ROPE_SCALING_NONE &&
        !(isfinite(c->rope_factor) && c->rope_factor >= FLT_MIN))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': rope scaling factor %g is not a positive finite float", what,
                         (double)c->rope_factor);
    if (c->pos == NL_POS_ROPE && c->rope_scaling == NL_ROPE_SCALING_LLAMA3 &&
        !(isfinite(c->rope_high_freq_factor) && c->rope_low_freq_factor >= FLT_MIN &&
          c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_orig_max_pos >= 1))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': llama3 rope scaling (low %g, high %g, original context %d) is invalid",
                         what, (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    const int64_t D = c->d_model, F = c->d_ff, V = c->vocab_size, Q = (int64_t)c->n_heads * c->head_dim,
                  KV = (int64_t)c->n_kv_heads * c->head_dim;
    if (c->n_experts > 0 && (c->n_experts_per_tok < 1 || c->n_experts_per_tok > c->n_experts || c->d_expert <= 0 ||
                             c->d_shared < 0 || c->decoder_sparse_step < 1))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': mixture of experts with %d experts, %d per token, expert width %d, "
                         "shared width %d, sparse step %d is invalid", what, c->n_experts, c->n_experts_per_tok,
                         c->d_expert, c->d_shared, c->decoder_sparse_step);
    if (Q + 2 * KV > INT_MAX) /* matrix widths are int (nl_mat) */
        return nl_errorf(ctx, NL_EFORMAT, "'%s': %d heads of dimension %d are too many for a matrix row count", what,
                         c->n_heads, c->head_dim);
    const int lnb = c->norm == NL_NORM_LAYER;
    nl_status st;
#define CK(name, l, t, req, a, b)                                                            \
    if ((st = check_shape(ctx, what, name, l, t, req, a, b)) != NL_OK) return st;
    CK("token embedding", -1, &m->tok_emb, 1, V, D);
    if (c->pos == NL_POS_LEARNED) CK("position embedding", -1, &m->pos_emb, 1, c->max_pos, D);
    CK("final norm weight", -1, &m->norm_w, 1, D, -1);
    CK("final norm bias", -1, &m->norm_b, 0, D, -1);
    CK("lm head", -1, &m->lm_head, !c->tie_embeddings, V, D);
    CK("lm head bias", -1, &m->lm_head_b, 0, V, -1);
    for (int l = 0; l < c->n_layers; l++) {
        const nl_stored_layer *s = &m->layers[l];
        const int tr = m->conv1d;
        CK("attention norm weight", l, &s->ln1_w, 1, D, -1);
        CK("attention norm bias", l, &s->ln1_b, lnb, D, -1);
        CK("ffn norm weight", l, &s->ln2_w, !c->shared_norm, D, -1);
        CK("ffn norm bias", l, &s->ln2_b, lnb && !c->shared_norm, D, -1);
        if (m->qkv_layout == NL_QKV_SEPARATE) {
            CK("q projection", l, &s->wq, 1, tr ? D : Q, tr ? Q : D);
            CK("k projection", l, &s->wk, 1, tr ? D : KV, tr ? KV : D);
            CK("v projection", l, &s->wv, 1, tr ? D : KV, tr ? KV : D);
            CK("q bias", l, &s->bq, 0, Q, -1);
            CK("k bias", l, &s->bk, 0, KV, -1);
            CK("v bias", l, &s->bv, 0, KV, -1);
        } else {
            CK("qkv projection", l, &s->wqkv, 1, tr ? D : Q + 2 * KV, tr ? Q + 2 * KV : D);
            CK("qkv bias", l, &s->bqkv, 0, Q + 2 * KV, -1);
        }
        CK("attention output projection", l, &s->wo, 1, tr ? Q : D, tr ? D : Q);
        CK("attention output bias", l, &s->bo, 0, D, -1);
        CK("q norm weight", l, &s->q_norm, c->qk_norm, c->head_dim, -1);
        CK("k norm weight", l, &s->k_norm, c->qk_norm, c->head_dim, -1);
        if (!nl_config_is_moe_layer(c, l)) {
            CK("ffn gate projection", l, &s->w_gate, c->ffn_gated, tr ? D : F, tr ? F : D);
            CK("ffn up projection", l, &s->w_up, 1, tr ? D : F, tr ? F : D);
            CK("ffn up bias", l, &s->b_up, 0, F, -1);
            CK("ffn down projection", l, &s->w_down, 1, tr ? F : D, tr ? D : F);
            CK("ffn down bias", l, &s->b_down, 0, D, -1);
            continue;
        }
        /* MoE layer: routed experts always gated, stored like torch.nn.Linear */
        const int64_t E = c->n_experts, Fe = c->d_expert, Fs = c->d_shared;
        if (s->w_up.data || s->w_down.data || tr || !c->ffn_gated || !s->experts || !s->views)
            return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d is a mixture-of-experts layer with a dense ffn or "
                             "no experts", what, l);
        CK("router", l, &s->router, 1, E, D);
        for (int64_t e = 0; e < E; e++) {
            char nm[64];
            snprintf(nm, sizeof nm, "expert %lld gate projection", (long long)e);
            CK(nm, l, &s->experts[3 * e], 1, Fe, D);
            snprintf(nm, sizeof nm, "expert %lld up projection", (long long)e);
            CK(nm, l, &s->experts[3 * e + 1], 1, Fe, D);
            snprintf(nm, sizeof nm, "expert %lld down projection", (long long)e);
            CK(nm, l, &s->experts[3 * e + 2], 1, D, Fe);
        }
        CK("shared expert gate projection", l, &s->sh_gate, Fs > 0, Fs, D);
        CK("shared expert up projection", l, &s->sh_up, Fs > 0, Fs, D);
        CK("shared expert down projection", l, &s->sh_down, Fs > 0, D, Fs);
        CK("shared expert gate", l, &s->sh_router, Fs > 0, 1, D);
    }
#undef CK
    return NL_OK;
}

/* ---- f32 views ----------------------------------------------------------------------- */

/* dst = t in f32, in chunks of whole blocks shared among the OpenMP threads. */
static void convert(const nl_tensor *t, float *dst) {
    const int64_t n = nl_tensor_numel(t), be = dtype_table[t->dtype].block_elems;
    const int64_t chunk = (16384 + be - 1) / be * be, n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t first = c * chunk, len = n - first < chunk ? n - first : chunk;
        decode_range(t->dtype, t->data, first, len, dst + first);
    }
}

/* dst = t in f32 with its rows (shape[0] of them) un-permuted from llama.cpp's RoPE order:
 * row h·Dh + j·Dh/2 + i of the result is stored row h·Dh + 2i + j (h < heads, i < Dh/2,
 * j < 2), the inverse of the permutation llama.cpp's converter applies to q/k projections. */
static void convert_unpermute(const nl_tensor *t, int heads, float *dst) {
    const int64_t rows = t->shape[0], len = t->ndim > 1 ? nl_tensor_numel(t) / rows : 1, hd = rows / heads;
#pragma omp parallel for schedule(static) if (rows * len > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t h = r / hd, k = r % hd, j = k / (hd / 2), i = k % (hd / 2), src = h * hd + 2 * i + j;
        decode_range(t->dtype, t->data, src * len, len, dst + r * len);
    }
}

/* After t was converted into the slot: its stored bytes are not needed until the next
 * conversion, so the whole pages they span in a file mapping are dropped from the process
 * (MADV_DONTNEED; the kernel's page cache keeps them, so the next conversion refaults them
 * without reading the disk). Without this a 7B bf16 model has every mapped page resident
 * next to the f32 slot and head: peak RSS = file + slot + head > file + 1 GiB (bench/7b.sh).
 * Only file mappings: on the anonymous realignment copy DONTNEED would zero the data. */
static void drop_source(const nl_model *m, const nl_tensor *t) {
    if (!t->data || t->dtype == NL_DT_F32) return;
    const uintptr_t a = (uintptr_t)t->data, e = a + nl_dtype_bytes(t->dtype, nl_tensor_numel(t));
    for (int i = 0; i < m->n_maps; i++) {
        const uintptr_t b = (uintptr_t)m->maps[i].base;
        if (!m->maps[i].file || a < b || e > b + m->maps[i].size) continue;
        const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (a + pg - 1) / pg * pg, hi = e / pg * pg;
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
        return;
    }
}

/* Floats needed in the slot for t (0 when it can be used in place). */
static size_t slot_need_p(const nl_tensor *t, int perm) {
    return (t->data && (t->dtype != NL_DT_F32 || perm)) ? (size_t)nl_tensor_numel(t) : 0;
}
static size_t slot_need(const nl_tensor *t) { return slot_need_p(t, 0); }

/* Walks tensors in a fixed order through a conversion buffer: returns an f32 pointer for t
 * (in place when stored f32, else the next span of *cur, converted when do_convert). */
typedef struct { float *cur; int do_convert; } nl_walk;

/* perm > 0: t's rows are in llama.cpp's RoPE order for perm heads (convert_unpermute). */
static const float *view_p(nl_walk *w, const nl_tensor *t, int perm) {
    if (!t->data) return NULL;
    if (t->dtype == NL_DT_F32 && !perm) return t->data;
    float *dst = w->cur;
    if (w->do_convert) {
        if (perm) convert_unpermute(t, perm, dst);
        else convert(t, dst);
    }
    w->cur += nl_tensor_numel(t);
    return dst;
}
static const float *view(nl_walk *w, const nl_tensor *t) { return view_p(w, t, 0); }

static nl_mat mat_p(nl_walk *w, const nl_tensor *t, int trans, int perm) {
    nl_mat r = {0};
    r.w = view_p(w, t, perm);
    if (!r.w) return r;
    r.trans = trans;
    if (trans) { r.n_in = (int)t->shape[0]; r.n_out = (int)t->shape[1]; r.ld = r.n_out; }
    else { r.n_out = (int)t->shape[0]; r.n_in = (int)t->shape[1]; r.ld = r.n_in; }
    return r;
}
static nl_mat mat(nl_walk *w, const nl_tensor *t, int trans) { return mat_p(w, t, trans, 0); }

/* Heads of the RoPE row permutation of a layer tensor (0: none). */
#define PERM_Q(m) ((m)->rope_unpermute ? (m)->cfg.n_heads : 0)
#define PERM_K(m) ((m)->rope_unpermute ? (m)->cfg.n_kv_heads : 0)

/* Floats the slot needs for layer s (its tensors, then its routed experts). */
static size_t layer_need(const nl_model *m, const nl_stored_layer *s) {
    size_t need = 0;
#define X(f) need += slot_need(&s->f);
    NL_LAYER_TENSORS(X)
#undef X
    for (int64_t e = 0; e < n_expert_tensors(m, s); e++) need += slot_need(&s->experts[e]);
    if (m->rope_unpermute) /* permuted q/k are copied even when stored f32 */
        need += (s->wq.dtype == NL_DT_F32 ? slot_need_p(&s->wq, 1) : 0) + (s->wk.dtype == NL_DT_F32 ? slot_need_p(&s->wk, 1) : 0) +
                (s->bq.dtype == NL_DT_F32 ? slot_need_p(&s->bq, 1) : 0) + (s->bk.dtype == NL_DT_F32 ? slot_need_p(&s->bk, 1) : 0);
    return need;
}

nl_status nl_model_layer(nl_ctx *ctx, nl_model *m, int l, nl_layer *out) {
    NL_ASSERT(l >= 0 && l < m->cfg.n_layers);
    nl_stored_layer *s = &m->layers[l];
    const size_t need = layer_need(m, s);
    if (need > m->slot_cap) {
        free(m->slot);
        m->slot = malloc(need * sizeof(float));
        m->slot_cap = m->slot ? need : 0;
        m->slot_layer = -1;
        if (!m->slot) return nl_errorf(ctx, NL_ENOMEM, "cannot convert layer %d of '%s' to f32: out of memory", l, m->path);
    }
    nl_walk w = {m->slot, m->slot_layer != l};
    if (m->resident) { /* each layer converted once into its own copy (nl_model_keep_f32) */
        if (need && !m->resident[l]) {
            if (!(m->resident[l] = malloc(need * sizeof(float))))
                return nl_errorf(ctx, NL_ENOMEM, "cannot convert layer %d of '%s' to f32: out of memory", l, m->path);
            w = (nl_walk){m->resident[l], 1};
        } else {
            w = (nl_walk){m->resident[l], 0};
        }
    }
    const int tr = m->conv1d;
    memset(out, 0, sizeof *out);
    out->ln1_w = view(&w, &s->ln1_w); out->ln1_b = view(&w, &s->ln1_b);
    out->ln2_w = view(&w, &s->ln2_w); out->ln2_b = view(&w, &s->ln2_b);
    out->wq = mat_p(&w, &s->wq, tr, PERM_Q(m)); out->wk = mat_p(&w, &s->wk, tr, PERM_K(m)); out->wv = mat(&w, &s->wv, tr);
    out->bq = view_p(&w, &s->bq, PERM_Q(m)); out->bk = view_p(&w, &s->bk, PERM_K(m)); out->bv = view(&w, &s->bv);
    out->wqkv = mat(&w, &s->wqkv, tr); out->bqkv = view(&w, &s->bqkv);
    out->wo = mat(&w, &s->wo, tr); out->bo = view(&w, &s->bo);
    out->w_gate = mat(&w, &s->w_gate, tr); out->w_up = mat(&w, &s->w_up, tr); out->b_up = view(&w, &s->b_up);
    out->w_down = mat(&w, &s->w_down, tr); out->b_down = view(&w, &s->b_down);
    out->q_norm = view(&w, &s->q_norm); out->k_norm = view(&w, &s->k_norm);
    out->router = mat(&w, &s->router, 0);
    out->sh_gate = mat(&w, &s->sh_gate, 0); out->sh_up = mat(&w, &s->sh_up, 0);
    out->sh_down = mat(&w, &s->sh_down, 0); out->sh_router = mat(&w, &s->sh_router, 0);
    if (s->experts) {
        out->moe = 1;
        for (int e = 0; e < m->cfg.n_experts; e++) {
            s->views[e].w_gate = mat(&w, &s->experts[3 * e], 0);
            s->views[e].w_up = mat(&w, &s->experts[3 * e + 1], 0);
            s->views[e].w_down = mat(&w, &s->experts[3 * e + 2], 0);
        }
        out->experts = s->views;
    }
    out->qkv_layout = m->qkv_layout;
    if (!m->resident && w.do_convert) { /* the stored bytes of what was converted leave the process (drop_source) */
#define X(f) drop_source(m, &s->f);
        NL_LAYER_TENSORS(X)
#undef X
        for (int64_t e = 0; e < n_expert_tensors(m, s); e++) drop_source(m, &s->experts[e]);
    }
    if (!m->resident && m->slot_layer != (need ? l : -1)) m->slot_layer = need ? l : -1; /* no write when in place */
    return NL_OK;
}

size_t nl_model_f32_layer_bytes(const nl_model *m) {
    size_t total = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) total += layer_need(m, &m->layers[l]);
    return total * sizeof(float);
}

int nl_model_keep_f32(nl_model *m, size_t max_bytes) {
    if (m->resident) return 1;
    size_t total = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) total += layer_need(m, &m->layers[l]);
    if (total == 0 || total * sizeof(float) > max_bytes) return 0;
    m->resident = calloc((size_t)m->cfg.n_layers, sizeof *m->resident);
    return m->resident != NULL;
}

nl_status nl_model_head(nl_ctx *ctx, nl_model *m, nl_head *out) {
    const nl_tensor *lm = m->lm_head.data ? &m->lm_head : &m->tok_emb;
    int first = !m->head_ready;
    if (first) {
        size_t need = slot_need(&m->norm_w) + slot_need(&m->norm_b) + slot_need(lm) + slot_need(&m->lm_head_b);
        if (need && !(m->head_buf = malloc(need * sizeof(float))))
            return nl_errorf(ctx, NL_ENOMEM, "cannot convert the LM head of '%s': out of memory", m->path);
        m->head_ready = 1;
    }
    nl_walk w = {m->head_buf, first};
    out->norm_w = view(&w, &m->norm_w);
    out->norm_b = view(&w, &m->norm_b);
    out->lm_head = mat(&w, lm, 0); /* the LM head and a tied embedding are both (V, D) */
    out->lm_head_b = view(&w, &m->lm_head_b);
    if (first) { /* converted once: the stored head is not read again (drop_source) */
        drop_source(m, &m->norm_w), drop_source(m, &m->norm_b), drop_source(m, &m->lm_head_b);
        if (m->lm_head.data) drop_source(m, &m->lm_head); /* a tied head is the embedding, still read per token */
    }
    return NL_OK;
}

void nl_model_embed(const nl_model *m, const int32_t *tokens, int n, int pos0, float *dst) {
    const int D = m->cfg.d_model;
    float *pos_row = NULL;
    if (m->pos_emb.data && m->pos_emb.dtype != NL_DT_F32) pos_row = malloc((size_t)D * sizeof(float));
    for (int i = 0; i < n; i++) {
        float *row = dst + (size_t)i * D;
        decode_range(m->tok_emb.dtype, m->tok_emb.data, (int64_t)tokens[i] * D, D, row);
        if (m->pos_emb.data) {
            const int64_t po = (int64_t)(pos0 + i) * D;
            const float *p = (const float *)m->pos_emb.data + po;
            if (m->pos_emb.dtype != NL_DT_F32) {
                if (pos_row) decode_range(m->pos_emb.dtype, m->pos_emb.data, po, D, pos_row);
                p = pos_row;
            }
            if (p) for (int j = 0; j < D; j++) row[j] += p[j];
            else for (int j = 0; j < D; j++) { /* no memory for a row: one element at a time */
                float v;
                decode_range(m->pos_emb.dtype, m->pos_emb.data, po + j, 1, &v);
                row[j] += v;
            }
        }
    }
    free(pos_row);
}

nl_status nl_model_w_out_norm(nl_ctx *ctx, nl_model *m, int l, float *norms) {
    nl_layer w;
    if (m->layers[l].experts)
        return nl_errorf(ctx, NL_EUNSUPPORTED,
                         "layer %d of '%s' is a mixture-of-experts layer (%d experts): its neurons belong to experts "
                         "and are not analysed yet (choose dense layers)", l, m->path, m->cfg.n_experts);
    nl_status st = nl_model_layer(ctx, m, l, &w);
    if (st != NL_OK) return st;
    const nl_mat *d = &w.w_down; /* (D, F) as y = a·W_downᵀ: column i of W_out is neuron i */
    const int F = d->n_in, D = d->n_out;
    for (int i = 0; i < F; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            float v = d->trans ? d->w[(size_t)i * d->ld + j] : d->w[(size_t)j * d->ld + i];
            s += (double)v * v;
        }
        norms[i] = (float)sqrt(s);
    }
    return NL_OK;
}
