/* gguf_export.c — a loaded model written as a GGUF file or a Hugging Face folder (export.h).
 *
 * Both directions read the model through nl_model_layer / nl_model_head / nl_model_embed, which
 * give every tensor in f32 and in Hugging Face's row order (a GGUF llama file's q/k rows are
 * already un-permuted there; a llama2.c file's rows are in RoPE pair order, rope_interleaved),
 * so the writer only has to apply the permutation the target wants. GGUF tensors are produced
 * one at a time by the writer's fill callback, so a GGUF export holds one tensor in f32 beside
 * the model; the Hugging Face export holds the whole model in f32 (the safetensors writer
 * borrows its tensors until it writes).
 * Names, metadata order and type rules follow llama.cpp's convert_hf_to_gguf.py
 * (TextModel.set_gguf_parameters, LlamaModel, Qwen2Model/Qwen3Model, prepare_tensors) and
 * gguf-py (constants.py names, metadata.py size_label, vocab.py SpecialVocab); see export.h.
 * Checked by tests/test_gguf.c and tests/gguf_cli.sh.
 */
#include "neuronlab/export.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/quant.h"
#include "neuronlab/atomic_file.h"
#include "neuronlab/gguf.h"
#include "neuronlab/st_writer.h"

int nl_export_type_parse(const char *s) {
    if (!strcmp(s, "f32")) return NL_EXPORT_F32;
    if (!strcmp(s, "f16")) return NL_EXPORT_F16;
    if (!strcmp(s, "bf16")) return NL_EXPORT_BF16;
    if (!strcmp(s, "q8_0")) return NL_EXPORT_Q8_0;
    return -1;
}

/* ---- what can be exported ------------------------------------------------------------------- */

typedef enum {
    W_LN1, W_LN2, W_Q, W_K, W_V, W_O, W_BQ, W_BK, W_BV, W_BO, W_QN, W_KN, W_GATE, W_UP, W_DOWN,
    W_ROUTER, W_EGATE, W_EUP, W_EDOWN, W_SHGATE, W_SHUP, W_SHDOWN, W_SHROUTER /* mixture-of-experts layers */
} lwhat;
typedef enum { K_EMB, K_NORM, K_HEAD, K_LAYER } tkind;

static const struct { const char *gguf, *hf; } LNAMES[] = {
    [W_LN1] = {"attn_norm.weight", "input_layernorm.weight"},
    [W_LN2] = {"ffn_norm.weight", "post_attention_layernorm.weight"},
    [W_Q] = {"attn_q.weight", "self_attn.q_proj.weight"},
    [W_K] = {"attn_k.weight", "self_attn.k_proj.weight"},
    [W_V] = {"attn_v.weight", "self_attn.v_proj.weight"},
    [W_O] = {"attn_output.weight", "self_attn.o_proj.weight"},
    [W_BQ] = {"attn_q.bias", "self_attn.q_proj.bias"},
    [W_BK] = {"attn_k.bias", "self_attn.k_proj.bias"},
    [W_BV] = {"attn_v.bias", "self_attn.v_proj.bias"},
    [W_BO] = {"attn_output.bias", "self_attn.o_proj.bias"},
    [W_QN] = {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    [W_KN] = {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    [W_GATE] = {"ffn_gate.weight", "mlp.gate_proj.weight"},
    [W_UP] = {"ffn_up.weight", "mlp.up_proj.weight"},
    [W_DOWN] = {"ffn_down.weight", "mlp.down_proj.weight"},
    /* MoE (HF: Qwen-MoE names; Mixtral's are in MIXTRAL_HF) */
    [W_ROUTER] = {"ffn_gate_inp.weight", "mlp.gate.weight"},
    [W_EGATE] = {"ffn_gate_exps.weight", "mlp.experts.%d.gate_proj.weight"},
    [W_EUP] = {"ffn_up_exps.weight", "mlp.experts.%d.up_proj.weight"},
    [W_EDOWN] = {"ffn_down_exps.weight", "mlp.experts.%d.down_proj.weight"},
    [W_SHGATE] = {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"},
    [W_SHUP] = {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"},
    [W_SHDOWN] = {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"},
    [W_SHROUTER] = {"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight"},
};
static const char *const MIXTRAL_HF[] = {
    [W_ROUTER] = "block_sparse_moe.gate.weight", [W_EGATE] = "block_sparse_moe.experts.%d.w1.weight",
    [W_EUP] = "block_sparse_moe.experts.%d.w3.weight", [W_EDOWN] = "block_sparse_moe.experts.%d.w2.weight",
};

typedef struct {
    tkind kind;
    lwhat what;
    int layer;
    int64_t rows, cols;   /* HF shape (rows, cols); 1-D: cols = 0 */
    int perm_heads;       /* > 0: q/k rows to permute between HF and RoPE pair order (heads) */
    int expert;           /* HF: the routed expert of W_EGATE/W_EUP/W_EDOWN */
    int64_t n_exp;        /* GGUF: > 0: the experts stacked, (n_exp, rows, cols) */
    uint32_t gtype;       /* GGUF: stored type */
    char name[128];
} ex_tensor;

typedef struct {
    nl_ctx *ctx;
    nl_model *m;
    const nl_config *c;
    const char *gg_arch;  /* "llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe" */
    const char *hf_type;  /* model_type */
    ex_tensor *t;
    int n;
    float *tmp;           /* one tensor in f32 */
    size_t tmp_cap;
    nl_progress *prog;
} ex_state;

static nl_status oom(nl_ctx *ctx) { return nl_errorf(ctx, NL_ENOMEM, "out of memory"); }

/* Checks that m is a model the export targets hold exactly; sets gg_arch and hf_type. */
static nl_status check_model(ex_state *S, const char *path) {
    const nl_config *c = S->c;
    const char *what = NULL;
    switch (c->arch) {
    case NL_ARCH_LLAMA: S->gg_arch = "llama", S->hf_type = "llama"; break;
    case NL_ARCH_MISTRAL: S->gg_arch = "llama", S->hf_type = "mistral"; break;
    case NL_ARCH_QWEN2: S->gg_arch = "qwen2", S->hf_type = "qwen2"; break;
    case NL_ARCH_QWEN3: S->gg_arch = "qwen3", S->hf_type = "qwen3"; break;
    case NL_ARCH_MIXTRAL: S->gg_arch = "llama", S->hf_type = "mixtral"; break;
    case NL_ARCH_QWEN2_MOE: S->gg_arch = "qwen2moe", S->hf_type = "qwen2_moe"; break;
    case NL_ARCH_QWEN3_MOE: S->gg_arch = "qwen3moe", S->hf_type = "qwen3_moe"; break;
    default:
        return nl_errorf(S->ctx, NL_EUNSUPPORTED,
                         "'%s': architecture '%s' cannot be exported (supported: llama, mistral, qwen2, qwen3, mixtral, "
                         "qwen2_moe, qwen3_moe)", path, nl_arch_name(c->arch));
    }
    const int moe_arch = c->arch == NL_ARCH_MIXTRAL || c->arch == NL_ARCH_QWEN2_MOE || c->arch == NL_ARCH_QWEN3_MOE;
    if (c->n_experts > 0 && !moe_arch) what = "mixture-of-experts layers outside mixtral, qwen2_moe and qwen3_moe";
    else if (c->arch == NL_ARCH_MIXTRAL && (c->n_experts <= 0 || !c->norm_topk_prob || c->d_shared > 0))
        what = "a mixtral configuration other than renormalised top-k experts in every layer";
    else if (c->n_experts > 0 && c->arch != NL_ARCH_QWEN2_MOE && c->d_shared > 0) what = "a shared expert outside qwen2_moe";
    else if (c->norm != NL_NORM_RMS || c->pos != NL_POS_ROPE || !c->ffn_gated || c->parallel_residual || c->shared_norm)
        what = "a block layout other than llama's";
    else if (c->rope_scaling != NL_ROPE_SCALING_NONE && c->rope_scaling != NL_ROPE_SCALING_LINEAR)
        what = "llama3-style RoPE scaling";
    else if (c->rotary_dim != c->head_dim) what = "partial rotary embeddings";
    else if (c->sliding_window > 0 && c->sliding_window < c->max_pos) what = "an active sliding window";
    else if (c->rope_interleaved && c->arch != NL_ARCH_LLAMA) what = "interleaved RoPE outside llama";
    else if (c->head_dim % 2) what = "an odd head dimension";
    if (what) return nl_errorf(S->ctx, NL_EUNSUPPORTED, "'%s': cannot export a model with %s", path, what);
    nl_layer ly;
    nl_status st = nl_model_layer(S->ctx, S->m, 0, &ly);
    if (st != NL_OK) return st;
    if (ly.qkv_layout != NL_QKV_SEPARATE || ly.b_up || ly.b_down || ly.ln1_b || ly.ln2_b)
        return nl_errorf(S->ctx, NL_EUNSUPPORTED, "'%s': cannot export a model with fused q/k/v, FFN biases or LayerNorm biases",
                         path);
    if (c->arch == NL_ARCH_QWEN2 && (!ly.bq || !ly.bk || !ly.bv))
        return nl_errorf(S->ctx, NL_EUNSUPPORTED, "'%s': a qwen2 model without q/k/v biases cannot be written as qwen2", path);
    if ((c->arch == NL_ARCH_QWEN3 || c->arch == NL_ARCH_QWEN3_MOE) && (!ly.q_norm || !ly.k_norm))
        return nl_errorf(S->ctx, NL_EUNSUPPORTED, "'%s': a qwen3 model without q/k norms", path);
    return NL_OK;
}

/* The tensor list in llama.cpp's order; gguf: names and types for GGUF, else HF names. */
static nl_status plan(ex_state *S, int gguf, nl_export_type type) {
    const nl_config *c = S->c;
    const int L = c->n_layers, D = c->d_model, F = c->d_ff, H = c->n_heads, Hk = c->n_kv_heads, Dh = c->head_dim;
    nl_layer ly;
    nl_status st = nl_model_layer(S->ctx, S->m, 0, &ly);
    if (st != NL_OK) return st;
    const int E = c->n_experts, Fe = c->d_expert, Fs = c->d_shared;
    S->t = calloc((size_t)L * (24 + 3 * (size_t)(E > 0 ? E : 0)) + 4, sizeof *S->t);
    if (!S->t) return oom(S->ctx);
    int n = 0;
    /* RoPE pair order: GGUF llama stores it; HF wants halves. A source in pair order
     * (rope_interleaved, llama2.c) needs the permutation for HF, one in HF order for GGUF. */
    const int perm = c->arch == NL_ARCH_LLAMA || c->arch == NL_ARCH_MISTRAL || c->arch == NL_ARCH_MIXTRAL
                         ? (gguf ? !c->rope_interleaved : c->rope_interleaved)
                         : 0;
#define ADD(K, W, LAY, R, C, P)                                                                                           \
    do {                                                                                                              \
        ex_tensor *x = &S->t[n++];                                                                                    \
        x->kind = K, x->what = W, x->layer = LAY, x->rows = R, x->cols = C, x->perm_heads = P, x->expert = -1;       \
    } while (0)
    ADD(K_EMB, 0, -1, c->vocab_size, D, 0);
    snprintf(S->t[n - 1].name, sizeof S->t[0].name, "%s", gguf ? "token_embd.weight" : "model.embed_tokens.weight");
    for (int l = 0; l < L; l++) {
        int first = n;
        ADD(K_LAYER, W_LN1, l, D, 0, 0);
        ADD(K_LAYER, W_Q, l, (int64_t)H * Dh, D, perm ? H : 0);
        if (ly.bq) ADD(K_LAYER, W_BQ, l, (int64_t)H * Dh, 0, perm ? H : 0);
        ADD(K_LAYER, W_K, l, (int64_t)Hk * Dh, D, perm ? Hk : 0);
        if (ly.bk) ADD(K_LAYER, W_BK, l, (int64_t)Hk * Dh, 0, perm ? Hk : 0);
        ADD(K_LAYER, W_V, l, (int64_t)Hk * Dh, D, 0);
        if (ly.bv) ADD(K_LAYER, W_BV, l, (int64_t)Hk * Dh, 0, 0);
        if (ly.q_norm) ADD(K_LAYER, W_QN, l, Dh, 0, 0);
        if (ly.k_norm) ADD(K_LAYER, W_KN, l, Dh, 0, 0);
        ADD(K_LAYER, W_O, l, D, (int64_t)H * Dh, 0);
        if (ly.bo) ADD(K_LAYER, W_BO, l, D, 0, 0);
        ADD(K_LAYER, W_LN2, l, D, 0, 0);
        if (!nl_config_is_moe_layer(c, l)) {
            ADD(K_LAYER, W_GATE, l, F, D, 0);
            ADD(K_LAYER, W_UP, l, F, D, 0);
            ADD(K_LAYER, W_DOWN, l, D, F, 0);
        } else {
            /* the router; the experts stacked (GGUF: down, gate, up as the converter merges them) or one
             * by one (HF); the shared expert and its gate */
            ADD(K_LAYER, W_ROUTER, l, E, D, 0);
            static const lwhat ew[3] = {W_EDOWN, W_EGATE, W_EUP};
            for (int k = 0; k < 3; k++)
                for (int e = 0; e < (gguf ? 1 : E); e++) {
                    ADD(K_LAYER, ew[k], l, ew[k] == W_EDOWN ? D : Fe, ew[k] == W_EDOWN ? Fe : D, 0);
                    S->t[n - 1].expert = gguf ? -1 : e;
                    S->t[n - 1].n_exp = gguf ? E : 0;
                }
            if (Fs > 0) {
                ADD(K_LAYER, W_SHROUTER, l, 1, D, 0);
                ADD(K_LAYER, W_SHGATE, l, Fs, D, 0);
                ADD(K_LAYER, W_SHUP, l, Fs, D, 0);
                ADD(K_LAYER, W_SHDOWN, l, D, Fs, 0);
            }
        }
        for (int i = first; i < n; i++) {
            ex_tensor *x = &S->t[i];
            char hf[96];
            const char *pat = c->arch == NL_ARCH_MIXTRAL && x->what >= W_ROUTER && x->what <= W_EDOWN ? MIXTRAL_HF[x->what]
                                                                                                      : LNAMES[x->what].hf;
            snprintf(hf, sizeof hf, pat, x->expert);
            if (gguf) snprintf(x->name, sizeof x->name, "blk.%d.%s", l, LNAMES[x->what].gguf);
            else snprintf(x->name, sizeof x->name, "model.layers.%d.%s", l, hf);
        }
    }
    ADD(K_NORM, 0, -1, D, 0, 0);
    snprintf(S->t[n - 1].name, sizeof S->t[0].name, "%s", gguf ? "output_norm.weight" : "model.norm.weight");
    if (!c->tie_embeddings) {
        ADD(K_HEAD, 0, -1, c->vocab_size, D, 0);
        snprintf(S->t[n - 1].name, sizeof S->t[0].name, "%s", gguf ? "output.weight" : "lm_head.weight");
    }
#undef ADD
    S->n = n;
    for (int i = 0; gguf && i < n; i++) {
        ex_tensor *x = &S->t[i];
        /* 1-D tensors, norms, the router and the shared expert's gate stay F32 */
        if (!x->cols || x->what == W_ROUTER || x->what == W_SHROUTER) { x->gtype = NL_GGML_F32; continue; }
        switch (type) {
        case NL_EXPORT_F32: x->gtype = NL_GGML_F32; break;
        case NL_EXPORT_F16: x->gtype = NL_GGML_F16; break;
        case NL_EXPORT_BF16: x->gtype = NL_GGML_BF16; break;
        /* the converter's fallback: rows (of each expert) not whole blocks → F16 */
        case NL_EXPORT_Q8_0: x->gtype = x->cols % 32 ? NL_GGML_F16 : NL_GGML_Q8_0; break;
        }
    }
    return NL_OK;
}

/* dst (rows, cols) = mat in f32 (stored (n_out, n_in) or transposed, with a row stride). */
static void copy_mat(const nl_mat *w, float *dst) {
    for (int r = 0; r < w->n_out; r++)
        for (int k = 0; k < w->n_in; k++)
            dst[(size_t)r * w->n_in + k] = w->trans ? w->w[(size_t)k * w->ld + r] : w->w[(size_t)r * w->ld + k];
}

/* Tensor x in f32, HF shape, rows in the source's order, into dst. */
static nl_status get_f32(ex_state *S, const ex_tensor *x, float *dst) {
    nl_ctx *ctx = S->ctx;
    const int64_t cols = x->cols ? x->cols : 1;
    nl_status st;
    if (x->kind == K_EMB) {
        int32_t ids[256];
        for (int64_t r = 0; r < x->rows; r += 256) {
            int k = (int)(x->rows - r < 256 ? x->rows - r : 256);
            for (int i = 0; i < k; i++) ids[i] = (int32_t)(r + i);
            nl_model_embed(S->m, ids, k, 0, dst + (size_t)r * cols);
        }
        return NL_OK;
    }
    if (x->kind == K_NORM || x->kind == K_HEAD) {
        nl_head h;
        if ((st = nl_model_head(ctx, S->m, &h)) != NL_OK) return st;
        if (x->kind == K_NORM) memcpy(dst, h.norm_w, (size_t)x->rows * sizeof(float));
        else copy_mat(&h.lm_head, dst);
        return NL_OK;
    }
    nl_layer ly;
    if ((st = nl_model_layer(ctx, S->m, x->layer, &ly)) != NL_OK) return st;
    const float *v = NULL;
    const nl_mat *w = NULL;
    switch (x->what) {
    case W_LN1: v = ly.ln1_w; break;
    case W_LN2: v = ly.ln2_w; break;
    case W_BQ: v = ly.bq; break;
    case W_BK: v = ly.bk; break;
    case W_BV: v = ly.bv; break;
    case W_BO: v = ly.bo; break;
    case W_QN: v = ly.q_norm; break;
    case W_KN: v = ly.k_norm; break;
    case W_Q: w = &ly.wq; break;
    case W_K: w = &ly.wk; break;
    case W_V: w = &ly.wv; break;
    case W_O: w = &ly.wo; break;
    case W_GATE: w = &ly.w_gate; break;
    case W_UP: w = &ly.w_up; break;
    case W_DOWN: w = &ly.w_down; break;
    case W_ROUTER: w = &ly.router; break;
    case W_SHGATE: w = &ly.sh_gate; break;
    case W_SHUP: w = &ly.sh_up; break;
    case W_SHDOWN: w = &ly.sh_down; break;
    case W_SHROUTER: w = &ly.sh_router; break;
    case W_EGATE: case W_EUP: case W_EDOWN: {
        if (!ly.moe || !ly.experts)
            return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': layer %d has no experts", nl_model_path(S->m), x->layer);
        const int e0 = x->n_exp > 0 ? 0 : x->expert, e1 = x->n_exp > 0 ? (int)x->n_exp : x->expert + 1;
        for (int e = e0; e < e1; e++) {
            const nl_expert_mats *em = &ly.experts[e];
            const nl_mat *ew = x->what == W_EGATE ? &em->w_gate : x->what == W_EUP ? &em->w_up : &em->w_down;
            if (!ew->w || ew->n_out != x->rows || ew->n_in != x->cols)
                return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': layer %d expert %d has no %s of the expected shape (%lld, %lld)",
                                 nl_model_path(S->m), x->layer, e, LNAMES[x->what].gguf, (long long)x->rows,
                                 (long long)x->cols);
            copy_mat(ew, dst + (size_t)(e - e0) * (size_t)x->rows * (size_t)x->cols);
        }
        return NL_OK;
    }
    }
    if (w && w->w && w->n_out == x->rows && w->n_in == x->cols) copy_mat(w, dst);
    else if (!w && v) memcpy(dst, v, (size_t)x->rows * sizeof(float));
    else
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': layer %d has no %s of the expected shape (%lld, %lld)",
                         nl_model_path(S->m), x->layer, LNAMES[x->what].hf, (long long)x->rows, (long long)x->cols);
    return NL_OK;
}

/* Permutes the rows of (rows, cols) src into dst between HF's order and RoPE pair order:
 * to_pairs: dst row h·Dh + 2i + j = src row h·Dh + j·Dh/2 + i (LlamaModel.permute); else the inverse. */
static void permute_rows(const float *src, float *dst, int64_t rows, int64_t cols, int heads, int to_pairs) {
    const int64_t dh = rows / heads, half = dh / 2;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                int64_t pr = (int64_t)h * dh + 2 * i + j, hr = (int64_t)h * dh + j * half + i;
                int64_t d = to_pairs ? pr : hr, s = to_pairs ? hr : pr;
                memcpy(dst + (size_t)d * cols, src + (size_t)s * cols, (size_t)cols * sizeof(float));
            }
}

/* Tensor x in f32 in the target's row order into S->tmp (returned). */
static nl_status target_f32(ex_state *S, const ex_tensor *x, int to_pairs, float **out) {
    const size_t n = (size_t)x->rows * (size_t)(x->cols ? x->cols : 1) * (size_t)(x->n_exp > 0 ? x->n_exp : 1);
    const size_t need = x->perm_heads ? 2 * n : n;
    if (need > S->tmp_cap) {
        free(S->tmp);
        S->tmp_cap = 0;
        if (!(S->tmp = malloc(need * sizeof(float)))) return oom(S->ctx);
        S->tmp_cap = need;
    }
    nl_status st = get_f32(S, x, S->tmp);
    if (st != NL_OK) return st;
    *out = S->tmp;
    if (x->perm_heads) {
        permute_rows(S->tmp, S->tmp + n, x->rows, x->cols ? x->cols : 1, x->perm_heads, to_pairs);
        *out = S->tmp + n;
    }
    return NL_OK;
}

/* ---- GGUF ------------------------------------------------------------------------------------ */

static nl_status fill(void *user, nl_ctx *ctx, int64_t i, void *dst, uint64_t nbytes) {
    ex_state *S = user;
    const ex_tensor *x = &S->t[i];
    float *f;
    nl_status st = target_f32(S, x, 1, &f);
    if (st != NL_OK) return st;
    const int64_t n = x->rows * (x->cols ? x->cols : 1) * (x->n_exp > 0 ? x->n_exp : 1);
    switch (x->gtype) {
    case NL_GGML_F32: memcpy(dst, f, (size_t)n * 4); break;
    case NL_GGML_F16:
        for (int64_t k = 0; k < n; k++) {
            uint16_t h = nl_f32_to_f16(f[k]);
            memcpy((uint8_t *)dst + 2 * k, &h, 2);
        }
        break;
    case NL_GGML_BF16:
        for (int64_t k = 0; k < n; k++) {
            uint16_t h = nl_f32_to_bf16(f[k]);
            memcpy((uint8_t *)dst + 2 * k, &h, 2);
        }
        break;
    case NL_GGML_Q8_0: nl_quant_q8_0(f, dst, n); break;
    default: return nl_errorf(ctx, NL_EINVAL, "GGUF export: type %u", x->gtype);
    }
    (void)nbytes;
    if (S->prog) nl_progress_add(S->prog, 1);
    return NL_OK;
}

/* gguf-py utility.py model_weight_count_rounded_notation (min_digits 2). */
static void size_label(int64_t count, char *out, size_t cap) {
    double x = (double)count;
    const char *suf;
    double s;
    if (x > 1e12) s = x * 1e-12, suf = "T";
    else if (x > 1e9) s = x * 1e-9, suf = "B";
    else if (x > 1e6) s = x * 1e-6, suf = "M";
    else s = x * 1e-3, suf = "K";
    char r[64];
    snprintf(r, sizeof r, "%.0f", nearbyint(s)); /* Python's round: half to even */
    const char *d = r;
    while (*d == '0') d++;
    int fix = 2 - (int)strlen(d);
    if (fix < 0) fix = 0;
    snprintf(out, cap, "%.*f%s", fix, s, suf);
}

/* The model's name: the folder's (or file's, without extension) base name; all lower case →
 * title case, as gguf-py's metadata heuristics name a folder without a model card. */
static void model_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t len = n - b;
    const char *dot = memchr(path + b, '.', len);
    struct stat sb;
    if (dot && !(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) len = (size_t)(dot - (path + b));
    if (len >= cap) len = cap - 1;
    memcpy(out, path + b, len);
    out[len] = 0;
    int lower = 1;
    for (size_t i = 0; i < len; i++)
        if (out[i] >= 'A' && out[i] <= 'Z') lower = 0;
    for (size_t i = 0; lower && i < len; i++)
        if ((i == 0 || out[i - 1] == ' ' || out[i - 1] == '-' || out[i - 1] == '_') && out[i] >= 'a' && out[i] <= 'z')
            out[i] = (char)(out[i] - 'a' + 'A');
}

typedef struct {
    void *base;
    size_t size;
    nl_gguf *g;
} mapped_gguf;

static int is_gguf_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    size_t k = f ? fread(m, 1, 4, f) : 0;
    if (f) fclose(f);
    return k == 4 && !memcmp(m, "GGUF", 4);
}

static nl_status map_gguf(nl_ctx *ctx, const char *path, mapped_gguf *mg) {
    memset(mg, 0, sizeof *mg);
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0) close(fd);
        return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    }
    mg->size = (size_t)sb.st_size;
    mg->base = mmap(NULL, mg->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (mg->base == MAP_FAILED) {
        mg->base = NULL;
        return nl_errorf(ctx, NL_EIO, "cannot map '%s': %s", path, strerror(errno));
    }
    return nl_gguf_parse(ctx, path, mg->base, mg->size, &mg->g);
}

static void unmap_gguf(mapped_gguf *mg) {
    nl_gguf_close(mg->g);
    if (mg->base) munmap(mg->base, mg->size);
    memset(mg, 0, sizeof *mg);
}

/* tokenizer.json's merges entry k as "a b" (strings, or [a, b] pairs of newer files). */
static char *merge_text(json_t *e) {
    if (json_is_string(e)) return strdup(json_string_value(e));
    if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
        json_is_string(json_array_get(e, 1))) {
        const char *a = json_string_value(json_array_get(e, 0)), *b = json_string_value(json_array_get(e, 1));
        char *s = malloc(strlen(a) + strlen(b) + 2);
        if (s) sprintf(s, "%s %s", a, b);
        return s;
    }
    return NULL;
}

/* The tokenizer.* keys from a byte-level BPE tokenizer.json (see export.h). */
static nl_status tokenizer_from_json(nl_ctx *ctx, nl_gguf_writer *w, const char *tpath, const nl_config *c) {
    json_error_t je;
    json_t *root = json_load_file(tpath, 0, &je);
    if (!root) return nl_errorf(ctx, NL_EFORMAT, "'%s': %s (line %d)", tpath, je.text, je.line);
    nl_status st = NL_OK;
    const int V = c->vocab_size;
    char **tok = calloc((size_t)V, sizeof *tok);
    int32_t *types = calloc((size_t)V, sizeof *types);
    char **merges = NULL;
    size_t n_merges = 0;
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    json_t *mj = json_object_get(model, "merges"), *pre = json_object_get(root, "pre_tokenizer");
    if (!tok || !types) { st = oom(ctx); goto done; }
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!mt || strcmp(mt, "BPE") || !json_is_object(vocab) || !json_is_array(mj)) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': only byte-level BPE tokenizers can be written to GGUF (model type '%s')", tpath,
                       mt ? mt : "?");
        goto done;
    }
    /* the pre-tokenizer: a Split with one of llama.cpp's patterns + ByteLevel, or ByteLevel alone */
    const char *pre_name = NULL, *re = NULL;
    int byte_level = 0, bl_regex = 0;
    json_t *list = json_object_get(pre, "pretokenizers"), *one = pre;
    size_t np = json_is_array(list) ? json_array_size(list) : 1;
    for (size_t i = 0; i < np; i++) {
        json_t *p = json_is_array(list) ? json_array_get(list, i) : one;
        const char *ty = json_string_value(json_object_get(p, "type"));
        if (!ty) continue;
        if (!strcmp(ty, "ByteLevel")) {
            byte_level = 1;
            json_t *ur = json_object_get(p, "use_regex");
            bl_regex = !ur || json_is_true(ur);
        } else if (!strcmp(ty, "Split")) {
            re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        }
    }
    if (byte_level && re && !bl_regex) {
        int n_pre;
        const nl_gguf_pretok *all = nl_gguf_pretoks(&n_pre);
        for (int i = 0; i < n_pre && !pre_name; i++)
            if (!all[i].gpt2 && !strcmp(all[i].re, re)) pre_name = all[i].name;
    } else if (byte_level && !re && bl_regex) {
        pre_name = "gpt2";
    }
    if (!pre_name) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': the pre-tokenizer is not one llama.cpp names (supported: byte-level BPE "
                       "with the llama-bpe or qwen2 split pattern, or GPT-2's ByteLevel)", tpath);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= V) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': token '%.40s' has id %lld, outside the model's %d tokens", tpath, key,
                           (long long)id, V);
            goto done;
        }
        free(tok[id]);
        if (!(tok[id] = strdup(key))) { st = oom(ctx); goto done; }
        types[id] = 1; /* NORMAL */
    }
    json_t *added = json_object_get(root, "added_tokens");
    size_t ai;
    json_array_foreach(added, ai, val) {
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        const char *content = json_string_value(json_object_get(val, "content"));
        if (!content || id < 0 || id >= V) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': added token %zu has no content or an id outside the model's %d tokens", tpath,
                           ai, V);
            goto done;
        }
        free(tok[id]);
        if (!(tok[id] = strdup(content))) { st = oom(ctx); goto done; }
        types[id] = json_is_true(json_object_get(val, "special")) ? 3 : 4; /* CONTROL : USER_DEFINED */
    }
    for (int id = 0; id < V; id++)
        if (!tok[id]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", id);
            if (!(tok[id] = strdup(pad))) { st = oom(ctx); goto done; }
            types[id] = 5; /* UNUSED */
        }
    n_merges = json_array_size(mj);
    if (!(merges = calloc(n_merges + 1, sizeof *merges))) { st = oom(ctx); goto done; }
    for (size_t k = 0; k < n_merges; k++)
        if (!(merges[k] = merge_text(json_array_get(mj, k)))) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': merge %zu is neither \"a b\" nor [a, b]", tpath, k);
            goto done;
        }
    if ((st = nl_gguf_writer_str(ctx, w, "tokenizer.ggml.model", "gpt2", 4)) != NL_OK) goto done;
    if ((st = nl_gguf_writer_str(ctx, w, "tokenizer.ggml.pre", pre_name, strlen(pre_name))) != NL_OK) goto done;
    if ((st = nl_gguf_writer_arr_str(ctx, w, "tokenizer.ggml.tokens", (const char *const *)tok, NULL, (uint64_t)V)) != NL_OK)
        goto done;
    if ((st = nl_gguf_writer_arr_i32(ctx, w, "tokenizer.ggml.token_type", types, (uint64_t)V)) != NL_OK) goto done;
    if ((st = nl_gguf_writer_arr_str(ctx, w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, n_merges)) != NL_OK)
        goto done;
    if (c->bos_id >= 0 && (st = nl_gguf_writer_u32(ctx, w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id)) != NL_OK)
        goto done;
    if (c->eos_id >= 0 && (st = nl_gguf_writer_u32(ctx, w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id)) != NL_OK)
        goto done;
    /* SpecialVocab: add_bos / add_eos from a TemplateProcessing post-processor */
    json_t *pp = json_object_get(root, "post_processor");
    const char *ppt = json_string_value(json_object_get(pp, "type"));
    if (ppt && !strcmp(ppt, "TemplateProcessing")) {
        json_t *single = json_object_get(pp, "single");
        size_t ns = json_array_size(single);
        json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
        json_t *last = ns > 1 ? json_object_get(json_array_get(single, ns - 1), "SpecialToken") : NULL;
        const char *bos = c->bos_id >= 0 ? tok[c->bos_id] : NULL, *eos = c->eos_id >= 0 ? tok[c->eos_id] : NULL;
        const char *fid = json_string_value(json_object_get(first, "id")), *lid = json_string_value(json_object_get(last, "id"));
        int add_bos = fid && bos && !strcmp(fid, bos), add_eos = lid && eos && !strcmp(lid, eos);
        if ((st = nl_gguf_writer_bool(ctx, w, "tokenizer.ggml.add_bos_token", add_bos)) != NL_OK) goto done;
        if (add_eos && (st = nl_gguf_writer_bool(ctx, w, "tokenizer.ggml.add_eos_token", 1)) != NL_OK) goto done;
        if ((st = nl_gguf_writer_bool(ctx, w, "tokenizer.ggml.add_sep_token", 0)) != NL_OK) goto done;
    }
done:
    for (int id = 0; tok && id < V; id++) free(tok[id]);
    for (size_t k = 0; merges && k < n_merges; k++) free(merges[k]);
    free(tok);
    free(types);
    free(merges);
    json_decref(root);
    return st;
}

nl_status nl_export_gguf(nl_ctx *ctx, nl_model *m, const char *model_path, nl_export_type type, const char *out,
                         nl_progress *progress) {
    ex_state S = {ctx, m, nl_model_config(m), NULL, NULL, NULL, 0, NULL, 0, progress};
    const nl_config *c = S.c;
    nl_gguf_writer *w = NULL;
    mapped_gguf src = {0};
    nl_status st = check_model(&S, model_path);
    if (st == NL_OK) st = plan(&S, 1, type);
    if (st == NL_OK && is_gguf_file(model_path)) st = map_gguf(ctx, model_path, &src);
    if (st == NL_OK) st = nl_gguf_writer_create(ctx, 32, &w);
    if (st != NL_OK) goto done;
    const char *A = S.gg_arch;
    char key[160], buf[256];
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", A, s), key)
#define TRY(x) do { if ((st = (x)) != NL_OK) goto done; } while (0)
    TRY(nl_gguf_writer_str(ctx, w, "general.architecture", A, strlen(A)));
    TRY(nl_gguf_writer_str(ctx, w, "general.type", "model", 5));
    const nl_gguf_kv *nk = src.g ? nl_gguf_find(src.g, "general.name") : NULL;
    if (nk && nk->type == NL_GGUF_STRING) TRY(nl_gguf_writer_copy(ctx, w, src.g, nk));
    else {
        model_name(model_path, buf, sizeof buf);
        TRY(nl_gguf_writer_str(ctx, w, "general.name", buf, strlen(buf)));
    }
    /* gguf-py: size_label(total, shared, expert, E) — "E x (shared + one expert's)" for MoE */
    int64_t params = 0, expert_params = 0;
    for (int i = 0; i < S.n; i++) {
        const int64_t k = S.t[i].rows * (S.t[i].cols ? S.t[i].cols : 1);
        if (S.t[i].n_exp > 0) expert_params += k; /* one expert's share of a stacked tensor */
        else params += k;
    }
    if (c->n_experts > 0) {
        char one[64];
        size_label(params + expert_params, one, sizeof one);
        snprintf(buf, sizeof buf, "%dx%s", c->n_experts, one);
    } else {
        size_label(params, buf, sizeof buf);
    }
    TRY(nl_gguf_writer_str(ctx, w, "general.size_label", buf, strlen(buf)));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("block_count"), (uint32_t)c->n_layers));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("context_length"), (uint32_t)c->max_pos));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("embedding_length"), (uint32_t)c->d_model));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("feed_forward_length"), (uint32_t)c->d_ff));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("attention.head_count"), (uint32_t)c->n_heads));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads));
    TRY(nl_gguf_writer_f32(ctx, w, KEY("rope.freq_base"), c->rope_theta));
    TRY(nl_gguf_writer_f32(ctx, w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps));
    if (c->rope_scaling == NL_ROPE_SCALING_LINEAR) {
        TRY(nl_gguf_writer_str(ctx, w, KEY("rope.scaling.type"), "linear", 6));
        TRY(nl_gguf_writer_f32(ctx, w, KEY("rope.scaling.factor"), c->rope_factor));
    }
    if (c->n_experts > 0) {
        TRY(nl_gguf_writer_u32(ctx, w, KEY("expert_count"), (uint32_t)c->n_experts));
        TRY(nl_gguf_writer_u32(ctx, w, KEY("expert_used_count"), (uint32_t)c->n_experts_per_tok));
    }
    TRY(nl_gguf_writer_u32(ctx, w, KEY("attention.key_length"), (uint32_t)c->head_dim));
    TRY(nl_gguf_writer_u32(ctx, w, KEY("attention.value_length"), (uint32_t)c->head_dim));
    static const uint32_t ftype[] = {[NL_EXPORT_F32] = 0, [NL_EXPORT_F16] = 1, [NL_EXPORT_BF16] = 32, [NL_EXPORT_Q8_0] = 7};
    TRY(nl_gguf_writer_u32(ctx, w, "general.file_type", ftype[type]));
    if (!strcmp(A, "llama")) {
        TRY(nl_gguf_writer_u32(ctx, w, KEY("vocab_size"), (uint32_t)c->vocab_size));
        TRY(nl_gguf_writer_u32(ctx, w, KEY("rope.dimension_count"), (uint32_t)c->rotary_dim));
    }
    if (c->n_experts > 0 && c->arch != NL_ARCH_MIXTRAL) { /* Qwen2MoeModel.set_gguf_parameters */
        TRY(nl_gguf_writer_u32(ctx, w, KEY("expert_feed_forward_length"), (uint32_t)c->d_expert));
        if (c->arch == NL_ARCH_QWEN2_MOE)
            TRY(nl_gguf_writer_u32(ctx, w, KEY("expert_shared_feed_forward_length"), (uint32_t)c->d_shared));
        /* llama.cpp renormalises for qwen3moe, not for qwen2moe; a model that differs says so */
        if (c->norm_topk_prob != (c->arch == NL_ARCH_QWEN3_MOE))
            TRY(nl_gguf_writer_bool(ctx, w, KEY("expert_weights_norm"), c->norm_topk_prob));
    }
    TRY(nl_gguf_writer_u32(ctx, w, "general.quantization_version", 2));
    /* tokenizer: a GGUF source's keys, a folder's tokenizer.json, or none */
    int have_tok = 0;
    if (src.g) {
        for (int64_t i = 0; i < nl_gguf_n_kv(src.g); i++) {
            const nl_gguf_kv *kv = nl_gguf_kv_at(src.g, i);
            if (!strncmp(kv->key, "tokenizer.", 10)) {
                TRY(nl_gguf_writer_copy(ctx, w, src.g, kv));
                have_tok = 1;
            }
        }
    } else {
        struct stat sb;
        char tp[4200];
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_path);
        if (stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode) && stat(tp, &sb) == 0) {
            TRY(tokenizer_from_json(ctx, w, tp, c));
            have_tok = 1;
        }
    }
    if (!have_tok) TRY(nl_gguf_writer_str(ctx, w, "tokenizer.ggml.model", "none", 4));
    if (c->act != NL_ACT_SILU) {
        const char *an = nl_act_name(c->act);
        TRY(nl_gguf_writer_str(ctx, w, "neuronlab.hidden_act", an, strlen(an)));
    }
    /* dense layers among the MoE ones (llama.cpp's qwen2moe has none): which, as the config says */
    if (c->n_experts > 0) {
        int32_t *dense = calloc((size_t)c->n_layers + 1, sizeof *dense);
        int nd = 0;
        if (!dense) TRY(oom(ctx));
        for (int l = 0; l < c->n_layers && l < NL_MOE_MAX_LAYERS; l++)
            if (c->mlp_only[l / 8] >> (l % 8) & 1) dense[nd++] = l;
        if (c->decoder_sparse_step != 1 || nd) {
            st = nl_gguf_writer_u32(ctx, w, "neuronlab.decoder_sparse_step", (uint32_t)c->decoder_sparse_step);
            if (st == NL_OK) st = nl_gguf_writer_arr_i32(ctx, w, "neuronlab.mlp_only_layers", dense, (uint64_t)nd);
        }
        free(dense);
        if (st != NL_OK) goto done;
    }
    for (int i = 0; i < S.n; i++) {
        const ex_tensor *x = &S.t[i];
        int64_t ne[3] = {x->cols ? x->cols : x->rows, x->rows, x->n_exp};
        /* the converter squeezes the shared expert's (1, D) gate to a vector */
        const int nd = x->n_exp > 0 ? 3 : x->cols && x->what != W_SHROUTER ? 2 : 1;
        TRY(nl_gguf_writer_tensor(ctx, w, x->name, x->gtype, nd, ne, NULL, fill, &S));
    }
#undef KEY
#undef TRY
    st = nl_gguf_writer_write(ctx, w, out);
done:
    nl_gguf_writer_destroy(w);
    unmap_gguf(&src);
    free(S.t);
    free(S.tmp);
    return st;
}

/* ---- Hugging Face ----------------------------------------------------------------------------- */

/* The shortest decimal that reads back as f (as a double for jansson). */
static json_t *json_float(float f) {
    char b[40];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if ((float)strtod(b, NULL) == f) break;
    }
    return json_real(strtod(b, NULL));
}

static const char *hf_act(nl_act a) {
    switch (a) {
    case NL_ACT_SILU: return "silu";
    case NL_ACT_GELU: return "gelu";
    case NL_ACT_GELU_TANH: return "gelu_pytorch_tanh";
    case NL_ACT_RELU: return "relu";
    case NL_ACT_RELU2: return "relu2";
    }
    return "silu";
}

static nl_status write_json(nl_ctx *ctx, json_t *j, const char *path) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (!s) return oom(ctx);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) { free(s); return oom(ctx); }
    t[n] = '\n';
    nl_status st = nl_write_file_atomic(ctx, path, t, n + 1);
    free(t);
    return st;
}

static nl_status write_config(nl_ctx *ctx, const ex_state *S, nl_export_type type, const char *dir) {
    const nl_config *c = S->c;
    static const char *arch_cls[] = {[NL_ARCH_LLAMA] = "LlamaForCausalLM", [NL_ARCH_MISTRAL] = "MistralForCausalLM",
                                     [NL_ARCH_QWEN2] = "Qwen2ForCausalLM", [NL_ARCH_QWEN3] = "Qwen3ForCausalLM",
                                     [NL_ARCH_MIXTRAL] = "MixtralForCausalLM", [NL_ARCH_QWEN2_MOE] = "Qwen2MoeForCausalLM",
                                     [NL_ARCH_QWEN3_MOE] = "Qwen3MoeForCausalLM"};
    json_t *j = json_object(), *archs = json_array();
    json_array_append_new(archs, json_string(arch_cls[c->arch]));
    json_object_set_new(j, "architectures", archs);
    json_object_set_new(j, "model_type", json_string(S->hf_type));
    json_object_set_new(j, "hidden_size", json_integer(c->d_model));
    json_object_set_new(j, "intermediate_size", json_integer(c->d_ff));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_pos));
    json_object_set_new(j, "rms_norm_eps", json_float(c->norm_eps));
    json_object_set_new(j, "rope_theta", json_float(c->rope_theta));
    if (c->rope_scaling == NL_ROPE_SCALING_LINEAR) {
        json_t *rs = json_object();
        json_object_set_new(rs, "type", json_string("linear"));
        json_object_set_new(rs, "rope_type", json_string("linear"));
        json_object_set_new(rs, "factor", json_float(c->rope_factor));
        json_object_set_new(j, "rope_scaling", rs);
    } else {
        json_object_set_new(j, "rope_scaling", json_null());
    }
    json_object_set_new(j, "hidden_act", json_string(hf_act(c->act)));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    if (c->arch == NL_ARCH_LLAMA || c->arch == NL_ARCH_MISTRAL) {
        int bias = 0;
        for (int i = 0; i < S->n; i++) bias |= S->t[i].what == W_BQ && S->t[i].kind == K_LAYER;
        json_object_set_new(j, "attention_bias", json_boolean(bias));
        json_object_set_new(j, "mlp_bias", json_false());
    }
    if (c->arch == NL_ARCH_QWEN3) json_object_set_new(j, "attention_bias", json_false());
    if (c->arch == NL_ARCH_QWEN2 || c->arch == NL_ARCH_QWEN3 || c->arch == NL_ARCH_QWEN2_MOE || c->arch == NL_ARCH_QWEN3_MOE)
        json_object_set_new(j, "use_sliding_window", json_false());
    if (c->arch == NL_ARCH_MIXTRAL) { /* intermediate_size is the experts' width */
        json_object_set_new(j, "intermediate_size", json_integer(c->d_expert));
        json_object_set_new(j, "num_local_experts", json_integer(c->n_experts));
        json_object_set_new(j, "num_experts_per_tok", json_integer(c->n_experts_per_tok));
        json_object_set_new(j, "sliding_window", json_null());
    } else if (c->arch == NL_ARCH_QWEN2_MOE || c->arch == NL_ARCH_QWEN3_MOE) {
        int bias = 0;
        for (int i = 0; i < S->n; i++) bias |= S->t[i].what == W_BQ && S->t[i].kind == K_LAYER;
        json_object_set_new(j, c->arch == NL_ARCH_QWEN2_MOE ? "qkv_bias" : "attention_bias", json_boolean(bias));
        json_object_set_new(j, "num_experts", json_integer(c->n_experts));
        json_object_set_new(j, "num_experts_per_tok", json_integer(c->n_experts_per_tok));
        json_object_set_new(j, "moe_intermediate_size", json_integer(c->d_expert));
        if (c->arch == NL_ARCH_QWEN2_MOE)
            json_object_set_new(j, "shared_expert_intermediate_size", json_integer(c->d_shared));
        json_object_set_new(j, "norm_topk_prob", json_boolean(c->norm_topk_prob));
        json_object_set_new(j, "decoder_sparse_step", json_integer(c->decoder_sparse_step));
        json_t *mo = json_array();
        for (int l = 0; l < c->n_layers && l < NL_MOE_MAX_LAYERS; l++)
            if (c->mlp_only[l / 8] >> (l % 8) & 1) json_array_append_new(mo, json_integer(l));
        json_object_set_new(j, "mlp_only_layers", mo);
    }
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    static const char *dt[] = {[NL_EXPORT_F32] = "float32", [NL_EXPORT_F16] = "float16", [NL_EXPORT_BF16] = "bfloat16",
                               [NL_EXPORT_Q8_0] = "float32"};
    json_object_set_new(j, "torch_dtype", json_string(dt[type]));
    char p[8400];
    snprintf(p, sizeof p, "%s/config.json", dir);
    nl_status st = write_json(ctx, j, p);
    json_decref(j);
    if (st != NL_OK) return st;
    j = json_object();
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    json_object_set_new(j, "do_sample", json_false());
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    st = write_json(ctx, j, p);
    json_decref(j);
    return st;
}

/* tokenizer.json from a "gpt2" GGUF tokenizer (see export.h). */
static nl_status tokenizer_to_json(nl_ctx *ctx, const nl_gguf *g, const char *gpath, const char *out) {
    const char *s;
    size_t n;
    int found;
    nl_status st = nl_gguf_get_str(ctx, g, "tokenizer.ggml.model", &s, &n, &found);
    if (st != NL_OK || !found || (n == 4 && !memcmp(s, "none", 4))) return st; /* no tokenizer */
    if (!(n == 4 && !memcmp(s, "gpt2", 4)))
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': tokenizer.ggml.model '%.*s' cannot be written as tokenizer.json yet "
                         "(supported: gpt2, none)", gpath, (int)(n < 40 ? n : 40), s);
    const nl_gguf_kv *tokens, *types = NULL, *merges;
    if ((st = nl_gguf_get_arr(ctx, g, "tokenizer.ggml.tokens", NL_GGUF_STRING, &tokens, NULL)) != NL_OK) return st;
    if ((st = nl_gguf_get_arr(ctx, g, "tokenizer.ggml.merges", NL_GGUF_STRING, &merges, NULL)) != NL_OK) return st;
    if ((st = nl_gguf_get_arr(ctx, g, "tokenizer.ggml.token_type", NL_GGUF_I32, &types, &found)) != NL_OK) return st;
    if (!found) types = NULL;
    if (types && types->n != tokens->n)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': tokenizer.ggml.token_type has %llu elements for %llu tokens", gpath,
                         (unsigned long long)types->n, (unsigned long long)tokens->n);
    const char *pre = "default";
    size_t pn = 7;
    if ((st = nl_gguf_get_str(ctx, g, "tokenizer.ggml.pre", &pre, &pn, &found)) != NL_OK) return st;
    if (!found) pre = "default", pn = 7;
    const nl_gguf_pretok *P = nl_gguf_pretok_find(pre, pn);
    if (!P)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': pre-tokenizer '%.*s' cannot be written as tokenizer.json", gpath,
                         (int)(pn < 40 ? pn : 40), pre);
    int64_t bos = -1, eos = -1;
    int add_bos = 0, add_eos = 0;
    if ((st = nl_gguf_get_i64(ctx, g, "tokenizer.ggml.bos_token_id", &bos, &found)) != NL_OK) return st;
    if (!found) bos = -1;
    if ((st = nl_gguf_get_i64(ctx, g, "tokenizer.ggml.eos_token_id", &eos, &found)) != NL_OK) return st;
    if (!found) eos = -1;
    if ((st = nl_gguf_get_bool(ctx, g, "tokenizer.ggml.add_bos_token", &add_bos, &found)) != NL_OK) return st;
    if ((st = nl_gguf_get_bool(ctx, g, "tokenizer.ggml.add_eos_token", &add_eos, &found)) != NL_OK) return st;
    if (!found) add_eos = 0;
    json_t *j = json_object(), *added = json_array(), *vocab = json_object(), *mj = json_array();
    json_object_set_new(j, "version", json_string("1.0"));
    json_object_set_new(j, "truncation", json_null());
    json_object_set_new(j, "padding", json_null());
    char *tb = NULL;
    size_t tb_cap = 0;
    const char *bos_text = NULL;
    for (uint64_t id = 0; id < tokens->n && st == NL_OK; id++) {
        const char *t = nl_gguf_arr_str(g, tokens, id, &n);
        if (n + 1 > tb_cap) {
            free(tb);
            tb_cap = 2 * n + 64;
            if (!(tb = malloc(tb_cap))) { st = oom(ctx); break; }
        }
        if (memchr(t, 0, n)) { st = nl_errorf(ctx, NL_EFORMAT, "'%s': token %llu contains a NUL byte", gpath, (unsigned long long)id); break; }
        memcpy(tb, t, n);
        tb[n] = 0;
        int ty = types ? (int)nl_gguf_arr_num(types, id) : 1;
        json_t *v = json_object_get(vocab, tb);
        if (v) { /* a repeated text keeps the first id, as tokenizer.json cannot hold both */
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': token %llu ('%.40s') repeats token %lld", gpath, (unsigned long long)id, tb,
                           (long long)json_integer_value(v));
            break;
        }
        json_object_set_new(vocab, tb, json_integer((json_int_t)id));
        if ((int64_t)id == bos) bos_text = json_object_iter_key(json_object_iter_at(vocab, tb));
        if (ty == 3 || ty == 4) {
            json_t *a = json_object();
            json_object_set_new(a, "id", json_integer((json_int_t)id));
            json_object_set_new(a, "content", json_string(tb));
            json_object_set_new(a, "single_word", json_false());
            json_object_set_new(a, "lstrip", json_false());
            json_object_set_new(a, "rstrip", json_false());
            json_object_set_new(a, "normalized", json_false());
            json_object_set_new(a, "special", json_boolean(ty == 3));
            json_array_append_new(added, a);
        }
    }
    for (uint64_t k = 0; k < merges->n && st == NL_OK; k++) {
        const char *t = nl_gguf_arr_str(g, merges, k, &n);
        json_t *v = json_stringn(t, n);
        if (!v) st = nl_errorf(ctx, NL_EFORMAT, "'%s': merge %llu is not UTF-8", gpath, (unsigned long long)k);
        else json_array_append_new(mj, v);
    }
    if (st == NL_OK) {
        json_object_set_new(j, "added_tokens", added);
        added = NULL;
        json_object_set_new(j, "normalizer", json_null());
        json_t *bl = json_object();
        json_object_set_new(bl, "type", json_string("ByteLevel"));
        json_object_set_new(bl, "add_prefix_space", json_false());
        json_object_set_new(bl, "trim_offsets", json_true());
        json_object_set_new(bl, "use_regex", json_boolean(P->gpt2));
        if (!P->gpt2) {
            json_t *seq = json_object(), *list = json_array(), *sp = json_object(), *pat = json_object();
            json_object_set_new(pat, "Regex", json_string(P->re));
            json_object_set_new(sp, "type", json_string("Split"));
            json_object_set_new(sp, "pattern", pat);
            json_object_set_new(sp, "behavior", json_string("Isolated"));
            json_object_set_new(sp, "invert", json_false());
            json_array_append_new(list, sp);
            json_array_append_new(list, bl);
            json_object_set_new(seq, "type", json_string("Sequence"));
            json_object_set_new(seq, "pretokenizers", list);
            json_object_set_new(j, "pre_tokenizer", seq);
        } else {
            json_object_set_new(j, "pre_tokenizer", bl);
        }
        /* post-processor: BOS (and EOS) around a text as add_bos_token / add_eos_token say */
        const char *eos_text = NULL;
        if (eos >= 0 && (uint64_t)eos < tokens->n) {
            const char *t = nl_gguf_arr_str(g, tokens, (uint64_t)eos, &n);
            const char *key;
            json_t *v;
            json_object_foreach(vocab, key, v) if (json_integer_value(v) == eos && strlen(key) == n && !memcmp(key, t, n)) eos_text = key;
        }
        int pb = add_bos && bos_text, pe = add_eos && eos_text;
        if (pb || pe) {
            json_t *pp = json_object(), *single = json_array(), *pair = json_array(), *sp = json_object();
            for (int part = 0; part < 2; part++) {
                json_t *arr = part ? pair : single;
                for (int seqi = 0; seqi <= part; seqi++) {
                    json_t *e;
                    if (pb) {
                        e = json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", bos_text, "type_id", seqi);
                        json_array_append_new(arr, e);
                    }
                    e = json_pack("{s:{s:s,s:i}}", "Sequence", "id", seqi ? "B" : "A", "type_id", seqi);
                    json_array_append_new(arr, e);
                    if (pe) {
                        e = json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", eos_text, "type_id", seqi);
                        json_array_append_new(arr, e);
                    }
                }
            }
            if (pb) json_object_set_new(sp, bos_text, json_pack("{s:s,s:[I],s:[s]}", "id", bos_text, "ids", (json_int_t)bos, "tokens", bos_text));
            if (pe && !(pb && !strcmp(bos_text, eos_text)))
                json_object_set_new(sp, eos_text, json_pack("{s:s,s:[I],s:[s]}", "id", eos_text, "ids", (json_int_t)eos, "tokens", eos_text));
            json_object_set_new(pp, "type", json_string("TemplateProcessing"));
            json_object_set_new(pp, "single", single);
            json_object_set_new(pp, "pair", pair);
            json_object_set_new(pp, "special_tokens", sp);
            json_object_set_new(j, "post_processor", pp);
        } else {
            json_object_set_new(j, "post_processor", json_null());
        }
        json_object_set_new(j, "decoder", json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                                     "trim_offsets", 1, "use_regex", 1));
        json_t *model = json_object();
        json_object_set_new(model, "type", json_string("BPE"));
        json_object_set_new(model, "dropout", json_null());
        json_object_set_new(model, "unk_token", json_null());
        json_object_set_new(model, "continuing_subword_prefix", json_null());
        json_object_set_new(model, "end_of_word_suffix", json_null());
        json_object_set_new(model, "fuse_unk", json_false());
        json_object_set_new(model, "byte_fallback", json_false());
        json_object_set_new(model, "ignore_merges", json_boolean(P->ignore_merges));
        json_object_set_new(model, "vocab", vocab);
        json_object_set_new(model, "merges", mj);
        vocab = mj = NULL;
        json_object_set_new(j, "model", model);
        st = write_json(ctx, j, out);
    }
    free(tb);
    json_decref(j);
    json_decref(added);
    json_decref(vocab);
    json_decref(mj);
    return st;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Copies file src to dst atomically. */
static nl_status copy_file(nl_ctx *ctx, const char *src, const char *dst) {
    FILE *f = fopen(src, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", src, strerror(errno));
    nl_atomic_file a = {0};
    nl_status st = nl_atomic_open(ctx, dst, &a);
    char buf[1 << 16];
    size_t k;
    while (st == NL_OK && (k = fread(buf, 1, sizeof buf, f)) > 0)
        if (fwrite(buf, 1, k, a.f) != k) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", dst, strerror(errno));
    if (st == NL_OK && ferror(f)) st = nl_errorf(ctx, NL_EIO, "cannot read '%s': read error", src);
    fclose(f);
    if (st == NL_OK) return nl_atomic_commit(ctx, &a);
    nl_atomic_abort(&a);
    return st;
}

static void remove_tree(const char *dir) {
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"};
    char p[4400];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

nl_status nl_export_hf(nl_ctx *ctx, nl_model *m, const char *model_path, nl_export_type type, const char *out_dir) {
    ex_state S = {ctx, m, nl_model_config(m), NULL, NULL, NULL, 0, NULL, 0, NULL};
    if (type == NL_EXPORT_Q8_0)
        return nl_errorf(ctx, NL_EINVAL, "'%s': a Hugging Face folder is written in f32, f16 or bf16 (not q8_0)", out_dir);
    if (strlen(out_dir) > 4000) return nl_errorf(ctx, NL_EINVAL, "output path is too long");
    struct stat sb;
    if (lstat(out_dir, &sb) == 0) return nl_errorf(ctx, NL_EINVAL, "'%s' exists: not replacing it", out_dir);
    nl_status st = check_model(&S, model_path);
    if (st == NL_OK) st = plan(&S, 0, type);
    if (st != NL_OK) {
        free(S.t);
        return st;
    }
    char tmpl[4200], p[4300];
    snprintf(tmpl, sizeof tmpl, "%s.tmp.XXXXXX", out_dir);
    if (!mkdtemp(tmpl)) {
        free(S.t);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", out_dir, strerror(errno));
    }
    float **data = calloc((size_t)S.n, sizeof *data);
    nl_st_writer *w = NULL;
    mapped_gguf src = {0};
    if (!data) st = oom(ctx);
    if (st == NL_OK) st = nl_st_writer_create(ctx, &w);
    static const nl_dtype dts[] = {[NL_EXPORT_F32] = NL_DT_F32, [NL_EXPORT_F16] = NL_DT_F16, [NL_EXPORT_BF16] = NL_DT_BF16};
    for (int i = 0; st == NL_OK && i < S.n; i++) {
        const ex_tensor *x = &S.t[i];
        const size_t n = (size_t)x->rows * (size_t)(x->cols ? x->cols : 1);
        float *f;
        if (!(data[i] = malloc(n * sizeof(float)))) { st = oom(ctx); break; }
        if ((st = target_f32(&S, x, 0, &f)) != NL_OK) break;
        memcpy(data[i], f, n * sizeof(float));
        int64_t shape[2] = {x->rows, x->cols};
        /* norms and biases stay f32 only when the whole folder is f32; HF stores them in the model dtype */
        st = nl_st_writer_add(ctx, w, x->name, dts[type], x->cols ? 2 : 1, shape, data[i]);
    }
    if (st == NL_OK) st = nl_st_writer_meta(ctx, w, "source", model_path);
    if (st == NL_OK) {
        snprintf(p, sizeof p, "%s/model.safetensors", tmpl);
        st = nl_st_writer_write(ctx, w, p);
    }
    if (st == NL_OK) st = write_config(ctx, &S, type, tmpl);
    if (st == NL_OK) {
        snprintf(p, sizeof p, "%s/tokenizer.json", tmpl);
        char tp[8400];
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_path);
        if (is_gguf_file(model_path)) {
            st = map_gguf(ctx, model_path, &src);
            if (st == NL_OK) st = tokenizer_to_json(ctx, src.g, model_path, p);
        } else if (is_dir(model_path) && stat(tp, &sb) == 0) {
            st = copy_file(ctx, tp, p);
        }
    }
    if (st == NL_OK && rename(tmpl, out_dir) != 0) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", out_dir, strerror(errno));
    if (st != NL_OK) remove_tree(tmpl);
    unmap_gguf(&src);
    nl_st_writer_destroy(w);
    for (int i = 0; data && i < S.n; i++) free(data[i]);
    free(data);
    free(S.t);
    free(S.tmp);
    return st;
}
