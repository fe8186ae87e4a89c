/* gguf.c — loader for GGUF files (llama.cpp's format): the container is read by
 * neuronlab/gguf.h; this file maps general.architecture onto the architecture table, reads
 * the {arch}.* hyper-parameters into nl_config, and resolves llama.cpp's tensor names
 * (gguf-py constants.py / tensor_mapping.py) through a tensor source over the mapping.
 *
 * Architectures: llama (Mistral-style files too: llama.cpp converts them to `llama`; with
 * llama.expert_count > 0 it is Mixtral), qwen2, qwen3 (blk.N.attn_q_norm / attn_k_norm: per-head
 * q/k RMSNorm), qwen2moe, qwen3moe (mixture of experts: parse_moe, stacked 3-D expert tensors
 * read one expert slice at a time), gpt2, phi2. Tensors stay in the mapping in their stored type (F32, F16, BF16, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q2_K … Q6_K; each tensor its own type, whatever general.file_type says)
 * and model.c dequantises one layer at a time. llama's converter permutes the rows of q/k
 * (and their biases) into llama.cpp's RoPE order (LlamaModel.permute); the model keeps them
 * so and nl_model_layer restores Hugging Face's order, so activations equal the HF folder's.
 * No output.weight means tied embeddings. The FFN activation is not in a llama file: it is
 * opts->hidden_act, else hidden_act of a config.json beside the file, else the file's
 * neuronlab.hidden_act key, else the architecture's (SiLU for llama and qwen2).
 * Messages name the file; an unknown architecture lists the supported ones; a tensor type the
 * reader cannot dequantise is named.
 * Checked by tests/test_gguf.c (../shared/models/gguf fixtures and generated files) and
 * fuzz/fuzz_gguf.c.
 */
#include "model/arch.h"
#include "model/model_internal.h"
#include "neuronlab/gguf.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- name tables (llama.cpp's names) ------------------------------------------------------ */

#define GG_LLAMA_LAYER                                                                          \
    [NL_R_LN1_W] = {"blk.%d.attn_norm.weight", NL_TN_REQ}, [NL_R_LN2_W] = {"blk.%d.ffn_norm.weight", NL_TN_REQ}, \
    [NL_R_WQ] = {"blk.%d.attn_q.weight", NL_TN_REQ}, [NL_R_WK] = {"blk.%d.attn_k.weight", NL_TN_REQ},             \
    [NL_R_WV] = {"blk.%d.attn_v.weight", NL_TN_REQ}, [NL_R_WO] = {"blk.%d.attn_output.weight", NL_TN_REQ},        \
    [NL_R_W_GATE] = {"blk.%d.ffn_gate.weight", NL_TN_REQ}, [NL_R_W_UP] = {"blk.%d.ffn_up.weight", NL_TN_REQ},     \
    [NL_R_W_DOWN] = {"blk.%d.ffn_down.weight", NL_TN_REQ}
#define GG_LLAMA_GLOBAL                                                                         \
    [NL_G_TOK_EMB] = {"token_embd.weight", NL_TN_REQ}, [NL_G_NORM_W] = {"output_norm.weight", NL_TN_REQ}, \
    [NL_G_LM_HEAD] = {"output.weight", NL_TN_UNTIED}

static const nl_name_table gg_llama = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_OPT}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_OPT},
              [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_OPT}, [NL_R_BO] = {"blk.%d.attn_output.bias", NL_TN_OPT}},
};

static const nl_name_table gg_qwen2 = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_REQ}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_REQ},
              [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_REQ}},
};

/* qwen3: qwen2's names without q/k/v biases, with per-head q/k RMSNorm weights (Dh) */
static const nl_name_table gg_qwen3 = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_Q_NORM] = {"blk.%d.attn_q_norm.weight", NL_TN_QK_NORM},
              [NL_R_K_NORM] = {"blk.%d.attn_k_norm.weight", NL_TN_QK_NORM}},
};

/* Mixture-of-experts layers (llama.cpp's names): the router ffn_gate_inp (E, D), the routed
 * experts stacked in one 3-D tensor per projection (ggml ne [D, Fe, E] for gate/up, [Fe, D, E]
 * for down) and, for qwen2moe, the shared expert ffn_{gate,up,down}_shexp with its gate
 * ffn_gate_inp_shexp (a vector [D]). The tensor source hands expert e of a stacked tensor out
 * under the name "<tensor>#e": a 2-D view of its slice, dequantised like any other tensor. */
#define GG_MOE_ROUTER [NL_R_ROUTER] = {"blk.%d.ffn_gate_inp.weight", NL_TN_MOE}
#define GG_MOE_EXPERTS \
    {"blk.%d.ffn_gate_exps.weight#%d", "blk.%d.ffn_up_exps.weight#%d", "blk.%d.ffn_down_exps.weight#%d"}
static const char *const gg_exps[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};

/* Mixtral as llama.cpp writes it: arch llama with llama.expert_count > 0 */
static const nl_name_table gg_llama_moe = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_OPT}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_OPT},
              [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_OPT}, [NL_R_BO] = {"blk.%d.attn_output.bias", NL_TN_OPT},
              GG_MOE_ROUTER},
    .expert = GG_MOE_EXPERTS,
};

static const nl_name_table gg_qwen2moe = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_OPT}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_OPT},
              [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_OPT}, GG_MOE_ROUTER,
              [NL_R_SH_GATE] = {"blk.%d.ffn_gate_shexp.weight", NL_TN_SHARED},
              [NL_R_SH_UP] = {"blk.%d.ffn_up_shexp.weight", NL_TN_SHARED},
              [NL_R_SH_DOWN] = {"blk.%d.ffn_down_shexp.weight", NL_TN_SHARED},
              [NL_R_SH_ROUTER] = {"blk.%d.ffn_gate_inp_shexp.weight", NL_TN_SHARED}},
    .expert = GG_MOE_EXPERTS,
};

static const nl_name_table gg_qwen3moe = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_LLAMA_GLOBAL},
    .layer = {GG_LLAMA_LAYER, [NL_R_Q_NORM] = {"blk.%d.attn_q_norm.weight", NL_TN_QK_NORM},
              [NL_R_K_NORM] = {"blk.%d.attn_k_norm.weight", NL_TN_QK_NORM}, GG_MOE_ROUTER,
              /* attention_bias = true (transformers' Qwen3-MoE option) */
              [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_OPT}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_OPT},
              [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_OPT}, [NL_R_BO] = {"blk.%d.attn_output.bias", NL_TN_OPT}},
    .expert = GG_MOE_EXPERTS,
};

/* GPT-2: the converter transposes Conv1D weights to (out, in) and writes output.weight as a
 * copy of the embedding. */
static const nl_name_table gg_gpt2 = {
    .strip = "", .qkv = NL_QKV_CONCAT,
    .global = {[NL_G_TOK_EMB] = {"token_embd.weight", NL_TN_REQ}, [NL_G_POS_EMB] = {"position_embd.weight", NL_TN_REQ},
               [NL_G_NORM_W] = {"output_norm.weight", NL_TN_REQ}, [NL_G_NORM_B] = {"output_norm.bias", NL_TN_REQ},
               [NL_G_LM_HEAD] = {"output.weight", NL_TN_UNTIED}},
    .layer = {[NL_R_LN1_W] = {"blk.%d.attn_norm.weight", NL_TN_REQ}, [NL_R_LN1_B] = {"blk.%d.attn_norm.bias", NL_TN_REQ},
              [NL_R_LN2_W] = {"blk.%d.ffn_norm.weight", NL_TN_REQ}, [NL_R_LN2_B] = {"blk.%d.ffn_norm.bias", NL_TN_REQ},
              [NL_R_WQKV] = {"blk.%d.attn_qkv.weight", NL_TN_REQ}, [NL_R_BQKV] = {"blk.%d.attn_qkv.bias", NL_TN_REQ},
              [NL_R_WO] = {"blk.%d.attn_output.weight", NL_TN_REQ}, [NL_R_BO] = {"blk.%d.attn_output.bias", NL_TN_REQ},
              [NL_R_W_UP] = {"blk.%d.ffn_up.weight", NL_TN_REQ}, [NL_R_B_UP] = {"blk.%d.ffn_up.bias", NL_TN_REQ},
              [NL_R_W_DOWN] = {"blk.%d.ffn_down.weight", NL_TN_REQ}, [NL_R_B_DOWN] = {"blk.%d.ffn_down.bias", NL_TN_REQ}},
};

#define GG_PHI2_COMMON                                                                                                 \
    [NL_R_LN1_W] = {"blk.%d.attn_norm.weight", NL_TN_REQ}, [NL_R_LN1_B] = {"blk.%d.attn_norm.bias", NL_TN_REQ},        \
    [NL_R_WO] = {"blk.%d.attn_output.weight", NL_TN_REQ}, [NL_R_BO] = {"blk.%d.attn_output.bias", NL_TN_REQ},          \
    [NL_R_W_UP] = {"blk.%d.ffn_up.weight", NL_TN_REQ}, [NL_R_B_UP] = {"blk.%d.ffn_up.bias", NL_TN_REQ},                \
    [NL_R_W_DOWN] = {"blk.%d.ffn_down.weight", NL_TN_REQ}, [NL_R_B_DOWN] = {"blk.%d.ffn_down.bias", NL_TN_REQ}
#define GG_PHI2_GLOBAL                                                                                                 \
    [NL_G_TOK_EMB] = {"token_embd.weight", NL_TN_REQ}, [NL_G_NORM_W] = {"output_norm.weight", NL_TN_REQ},              \
    [NL_G_NORM_B] = {"output_norm.bias", NL_TN_REQ}, [NL_G_LM_HEAD] = {"output.weight", NL_TN_UNTIED},                 \
    [NL_G_LM_HEAD_B] = {"output.bias", NL_TN_REQ}

/* phi2 from a transformers checkpoint: separate q/k/v (tensor_mapping ATTN_Q …) */
static const nl_name_table gg_phi2 = {
    .strip = "", .qkv = NL_QKV_SEPARATE,
    .global = {GG_PHI2_GLOBAL},
    .layer = {GG_PHI2_COMMON, [NL_R_WQ] = {"blk.%d.attn_q.weight", NL_TN_REQ}, [NL_R_BQ] = {"blk.%d.attn_q.bias", NL_TN_REQ},
              [NL_R_WK] = {"blk.%d.attn_k.weight", NL_TN_REQ}, [NL_R_BK] = {"blk.%d.attn_k.bias", NL_TN_REQ},
              [NL_R_WV] = {"blk.%d.attn_v.weight", NL_TN_REQ}, [NL_R_BV] = {"blk.%d.attn_v.bias", NL_TN_REQ}},
};
/* phi2 from Microsoft's original checkpoint (mixer.Wqkv): fused [q | k | v] */
static const nl_name_table gg_phi2_fused = {
    .strip = "", .qkv = NL_QKV_CONCAT,
    .global = {GG_PHI2_GLOBAL},
    .layer = {GG_PHI2_COMMON, [NL_R_WQKV] = {"blk.%d.attn_qkv.weight", NL_TN_REQ},
              [NL_R_BQKV] = {"blk.%d.attn_qkv.bias", NL_TN_REQ}},
};

typedef struct {
    const char *name;   /* general.architecture */
    nl_arch arch;
    const nl_name_table *names;
    int unpermute;      /* the converter permutes q/k for llama.cpp's RoPE (LlamaModel.permute) */
    const char *eps_key; /* {arch}.<eps_key> */
    const char *act;    /* what llama.cpp runs */
    /* mixture of experts: 0 never, 1 when {arch}.expert_count > 0 (llama: Mixtral), 2 always */
    int moe;
    nl_arch moe_arch;                /* the model's architecture when it has experts */
    const nl_name_table *moe_names;
    int norm_topk;                   /* llama.cpp renormalises the top-k weights (unless
                                      * {arch}.expert_weights_norm says otherwise) */
} gg_arch;

static const gg_arch gg_archs[] = {
    {"llama", NL_ARCH_LLAMA, &gg_llama, 1, "attention.layer_norm_rms_epsilon", "silu", 1, NL_ARCH_MIXTRAL, &gg_llama_moe, 1},
    {"qwen2", NL_ARCH_QWEN2, &gg_qwen2, 0, "attention.layer_norm_rms_epsilon", "silu", 0, 0, NULL, 0},
    {"qwen3", NL_ARCH_QWEN3, &gg_qwen3, 0, "attention.layer_norm_rms_epsilon", "silu", 0, 0, NULL, 0},
    {"gpt2", NL_ARCH_GPT2, &gg_gpt2, 0, "attention.layer_norm_epsilon", "gelu_tanh", 0, 0, NULL, 0},
    {"phi2", NL_ARCH_PHI, &gg_phi2, 0, "attention.layer_norm_epsilon", "gelu_tanh", 0, 0, NULL, 0},
    {"qwen2moe", NL_ARCH_QWEN2_MOE, &gg_qwen2moe, 0, "attention.layer_norm_rms_epsilon", "silu", 2, NL_ARCH_QWEN2_MOE,
     &gg_qwen2moe, 0},
    {"qwen3moe", NL_ARCH_QWEN3_MOE, &gg_qwen3moe, 0, "attention.layer_norm_rms_epsilon", "silu", 2, NL_ARCH_QWEN3_MOE,
     &gg_qwen3moe, 1},
};
#define N_GG ((int)(sizeof gg_archs / sizeof gg_archs[0]))

/* ---- dtypes ------------------------------------------------------------------------------- */

static int dtype_of_ggml(uint32_t t) {
    switch (t) {
    case NL_GGML_F32: return NL_DT_F32;
    case NL_GGML_F16: return NL_DT_F16;
    case NL_GGML_BF16: return NL_DT_BF16;
    case NL_GGML_Q4_0: return NL_DT_Q4_0;
    case NL_GGML_Q4_1: return NL_DT_Q4_1;
    case NL_GGML_Q5_0: return NL_DT_Q5_0;
    case NL_GGML_Q5_1: return NL_DT_Q5_1;
    case NL_GGML_Q8_0: return NL_DT_Q8_0;
    case NL_GGML_Q2_K: return NL_DT_Q2_K;
    case NL_GGML_Q3_K: return NL_DT_Q3_K;
    case NL_GGML_Q4_K: return NL_DT_Q4_K;
    case NL_GGML_Q5_K: return NL_DT_Q5_K;
    case NL_GGML_Q6_K: return NL_DT_Q6_K;
    default: return -1;
    }
}

/* ---- the tensor source ---------------------------------------------------------------------- */

typedef struct {
    const nl_gguf *g;
    const char *path;
} gg_source;

static nl_status gg_lookup(nl_ctx *ctx, void *impl, const char *name, nl_source_tensor *out, int *found) {
    gg_source *S = impl;
    char base[256];
    long expert = -1;
    const char *hash = strchr(name, '#'); /* "<stacked experts>#e": expert e's slice */
    if (hash) {
        expert = strtol(hash + 1, NULL, 10);
        snprintf(base, sizeof base, "%.*s", (int)(hash - name < 250 ? hash - name : 250), name);
        name = base;
    }
    const nl_gguf_tensor *t = nl_gguf_find_tensor(S->g, name);
    memset(out, 0, sizeof *out);
    *found = t != NULL;
    if (!t) return NL_OK;
    out->name = t->name;
    out->file = S->path;
    int dt = dtype_of_ggml(t->type);
    if (dt < 0)
        return nl_errorf(ctx, NL_EUNSUPPORTED,
                         "'%s': tensor '%s' has type %s, which neuronlab cannot dequantise (supported: F32, F16, BF16, "
                         "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", S->path, name,
                         nl_ggml_type_name(t->type));
    out->t.data = t->data;
    out->t.dtype = (nl_dtype)dt;
    out->t.ndim = t->n_dims;
    for (int d = 0; d < t->n_dims; d++) out->t.shape[d] = t->ne[t->n_dims - 1 - d];
    if (expert >= 0) { /* checked by check_experts: 3-D with more than `expert` experts */
        if (t->n_dims != 3 || expert >= t->ne[2])
            return nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' has no expert %ld", S->path, name, expert);
        out->t.data = t->data + (size_t)expert * nl_dtype_bytes((nl_dtype)dt, t->ne[0] * t->ne[1]);
        out->t.ndim = 2;
        out->t.shape[0] = t->ne[1];
        out->t.shape[1] = t->ne[0];
    } else if (t->n_dims == 1 && strstr(name, "ffn_gate_inp_shexp")) { /* the shared gate: a vector, HF's (1, D) */
        out->t.ndim = 2;
        out->t.shape[0] = 1;
        out->t.shape[1] = t->ne[0];
    }
    return NL_OK;
}

/* ---- hyper-parameters ------------------------------------------------------------------------ */

typedef struct {
    nl_ctx *ctx;
    const char *path;
    const nl_gguf *g;
    const char *arch;   /* general.architecture, NUL-terminated copy */
} gg_loader;

/* {arch}.suffix as a positive int (required unless def > 0). */
static nl_status hp_dim(gg_loader *L, const char *suffix, int def, int *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    int64_t v;
    int found;
    nl_status st = nl_gguf_get_i64(L->ctx, L->g, key, &v, def > 0 ? &found : NULL);
    if (st != NL_OK) return st;
    if (def > 0 && !found) {
        *out = def;
        return NL_OK;
    }
    if (v <= 0 || v > INT_MAX)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key '%s' is %lld, expected 1 to %d", L->path, key, (long long)v,
                         INT_MAX);
    *out = (int)v;
    return NL_OK;
}

static nl_status hp_num(gg_loader *L, const char *suffix, double def, int has_def, double *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    int found;
    nl_status st = nl_gguf_get_f64(L->ctx, L->g, key, out, has_def ? &found : NULL);
    if (st != NL_OK) return st;
    if (has_def && !found) *out = def;
    if (!isfinite(*out) || *out < 0 || *out > FLT_MAX)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key '%s' is %g, expected a finite float >= 0", L->path, key, *out);
    return NL_OK;
}

/* The FFN activation: opts, config.json beside the file, neuronlab.hidden_act, the default. */
static nl_status pick_act(gg_loader *L, const nl_model_opts *opts, const gg_arch *a, nl_model *m) {
    const char *act = a->act, *src = "default";
    char buf[128];
    json_t *cfg = NULL;
    if (opts && opts->hidden_act) {
        act = opts->hidden_act;
        src = "--hidden-act";
    } else {
        const char *slash = strrchr(L->path, '/');
        char cp[4200];
        if (slash) snprintf(cp, sizeof cp, "%.*s/config.json", (int)(slash - L->path), L->path);
        else snprintf(cp, sizeof cp, "config.json");
        cfg = json_load_file(cp, 0, NULL);
        json_t *h = json_is_object(cfg) ? json_object_get(cfg, "hidden_act") : NULL;
        if (json_is_string(h)) {
            snprintf(buf, sizeof buf, "%s", json_string_value(h));
            act = buf;
            src = "config.json beside the file";
        } else {
            const char *s;
            size_t n;
            int found;
            nl_status st = nl_gguf_get_str(L->ctx, L->g, "neuronlab.hidden_act", &s, &n, &found);
            if (st != NL_OK) return st;
            if (found) {
                snprintf(buf, sizeof buf, "%.*s", (int)(n < 100 ? n : 100), s);
                act = buf;
                src = "neuronlab.hidden_act";
            }
        }
    }
    int ai = nl_act_parse(act);
    json_decref(cfg);
    if (ai < 0)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                         "'%s': activation '%s' (from %s) is not supported (supported: silu, swish, gelu, gelu_new, "
                         "gelu_pytorch_tanh, gelu_fast, gelu_tanh, relu, relu2)", L->path, act, src);
    m->cfg.act = (nl_act)ai;
    m->act_source = src;
    return NL_OK;
}

static nl_status parse_config(gg_loader *L, const gg_arch *a, const nl_model_opts *opts, nl_model *m) {
    const nl_arch_desc *d = nl_arch_desc_of(a->arch);
    nl_config *c = &m->cfg;
    nl_status st;
    c->arch = a->arch;
    snprintf(c->model_type, sizeof c->model_type, "gguf:%s", a->name);
    c->norm = d->norm;
    c->pos = d->pos;
    c->ffn_gated = d->ffn_gated;
    c->shared_norm = d->block == NL_BLOCK_SHARED_NORM;
    c->qk_norm = a->arch == NL_ARCH_QWEN3 || a->arch == NL_ARCH_QWEN3_MOE;
    c->parallel_residual = d->block != NL_BLOCK_SEQUENTIAL;
    if ((st = hp_dim(L, "block_count", 0, &c->n_layers)) != NL_OK) return st;
    if ((st = hp_dim(L, "embedding_length", 0, &c->d_model)) != NL_OK) return st;
    if ((st = hp_dim(L, "feed_forward_length", 0, &c->d_ff)) != NL_OK) return st;
    if ((st = hp_dim(L, "attention.head_count", 0, &c->n_heads)) != NL_OK) return st;
    if ((st = hp_dim(L, "attention.head_count_kv", c->n_heads, &c->n_kv_heads)) != NL_OK) return st;
    if ((st = hp_dim(L, "context_length", 2048, &c->max_pos)) != NL_OK) return st;
    char kl[160];
    snprintf(kl, sizeof kl, "%s.attention.key_length", L->arch);
    if (c->d_model % c->n_heads && !nl_gguf_find(L->g, kl))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': embedding_length %d is not a multiple of head_count %d", L->path,
                         c->d_model, c->n_heads);
    if ((st = hp_dim(L, "attention.key_length", c->d_model / c->n_heads > 0 ? c->d_model / c->n_heads : 1,
                     &c->head_dim)) != NL_OK)
        return st;
    int vlen;
    if ((st = hp_dim(L, "attention.value_length", c->head_dim, &vlen)) != NL_OK) return st;
    if (vlen != c->head_dim)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': key_length %d differs from value_length %d (not supported)", L->path,
                         c->head_dim, vlen);
    if (c->n_heads % c->n_kv_heads)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': head_count %d is not a multiple of head_count_kv %d", L->path,
                         c->n_heads, c->n_kv_heads);
    /* vocabulary: {arch}.vocab_size, else the token embedding's rows */
    const nl_gguf_tensor *emb = nl_gguf_find_tensor(L->g, "token_embd.weight");
    int vdef = emb && emb->n_dims == 2 && emb->ne[1] <= INT_MAX ? (int)emb->ne[1] : 0;
    if (!vdef) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing tensor 'token_embd.weight' (a 2-D token embedding)", L->path);
    if ((st = hp_dim(L, "vocab_size", vdef, &c->vocab_size)) != NL_OK) return st;
    double eps, theta;
    if ((st = hp_num(L, a->eps_key, 0, 0, &eps)) != NL_OK) return st;
    c->norm_eps = (float)eps;
    if (c->pos == NL_POS_ROPE) {
        if ((st = hp_num(L, "rope.freq_base", 10000.0, 1, &theta)) != NL_OK) return st;
        c->rope_theta = (float)theta;
        int rd_def = (int)(d->rotary_def * c->head_dim);
        if ((st = hp_dim(L, "rope.dimension_count", rd_def > 0 ? rd_def : c->head_dim, &c->rotary_dim)) != NL_OK) return st;
        c->rope_interleaved = 0; /* llama's rows are un-permuted by the model; the others are NeoX-style */
        char key[160];
        snprintf(key, sizeof key, "%s.rope.scaling.type", L->arch);
        const char *s;
        size_t n;
        int found;
        if ((st = nl_gguf_get_str(L->ctx, L->g, key, &s, &n, &found)) != NL_OK) return st;
        if (found && !(n == 4 && !memcmp(s, "none", 4))) {
            if (!(n == 6 && !memcmp(s, "linear", 6)))
                return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': rope scaling '%.*s' is not supported (supported: none, linear)",
                                 L->path, (int)(n < 40 ? n : 40), s);
            double f;
            if ((st = hp_num(L, "rope.scaling.factor", 1.0, 1, &f)) != NL_OK) return st;
            if (!(f > 0)) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': rope scaling factor %g is not positive", L->path, f);
            c->rope_scaling = NL_ROPE_SCALING_LINEAR;
            c->rope_factor = (float)f;
        }
        if (nl_gguf_find_tensor(L->g, "rope_freqs.weight"))
            return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                             "'%s': per-dimension RoPE frequency factors (rope_freqs.weight, llama3-style scaling) are not "
                             "supported; use the Hugging Face folder", L->path);
    }
    c->tie_embeddings = nl_gguf_find_tensor(L->g, "output.weight") == NULL;
    int64_t id;
    int found;
    if ((st = nl_gguf_get_i64(L->ctx, L->g, "tokenizer.ggml.bos_token_id", &id, &found)) != NL_OK) return st;
    c->bos_id = found && id >= 0 && id < c->vocab_size ? (int)id : -1;
    if ((st = nl_gguf_get_i64(L->ctx, L->g, "tokenizer.ggml.eos_token_id", &id, &found)) != NL_OK) return st;
    c->eos_id = found && id >= 0 && id < c->vocab_size ? (int)id : -1;
    return pick_act(L, opts, a, m);
}

/* ---- mixture of experts ------------------------------------------------------------------------ */

/* The MoE hyper-parameters (DESIGN §10) as llama.cpp reads them: {arch}.expert_count (E; llama:
 * optional, 0 = dense), expert_used_count (k, 1..E), expert_feed_forward_length (Fe; default
 * feed_forward_length for llama, feed_forward_length / k for the qwen MoE archs, as llama.cpp),
 * expert_shared_feed_forward_length (qwen2moe: Fs, default feed_forward_length), and
 * expert_weights_norm (renormalised top-k; default the arch's). Routing other than softmax
 * (expert_gating_func) or scaled weights (expert_weights_scale) is refused. Which layers are
 * sparse: every layer, unless neuronlab.decoder_sparse_step / neuronlab.mlp_only_layers (written
 * by the exporter for Qwen2-MoE models with dense layers) say otherwise. */
static nl_status parse_moe(gg_loader *L, const gg_arch *a, nl_model *m) {
    nl_config *c = &m->cfg;
    nl_status st;
    char key[160];
    int64_t v;
    int found;
    if (!a->moe) return NL_OK;
    snprintf(key, sizeof key, "%s.expert_count", L->arch);
    if ((st = nl_gguf_get_i64(L->ctx, L->g, key, &v, a->moe == 1 ? &found : NULL)) != NL_OK) return st;
    if (a->moe == 1 && (!found || v == 0)) return NL_OK; /* a dense llama */
    if (v <= 0 || v > NL_MOE_MAX_EXPERTS)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key '%s' is %lld, expected 1 to %d", L->path, key, (long long)v,
                         NL_MOE_MAX_EXPERTS);
    c->n_experts = (int)v;
    c->arch = a->moe_arch;
    if ((st = hp_dim(L, "expert_used_count", 0, &c->n_experts_per_tok)) != NL_OK) return st;
    if (c->n_experts_per_tok > c->n_experts)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key '%s.expert_used_count' is %d, more than expert_count %d",
                         L->path, L->arch, c->n_experts_per_tok, c->n_experts);
    if (c->n_layers > NL_MOE_MAX_LAYERS)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': %d layers with experts are not supported (at most %d)", L->path,
                         c->n_layers, NL_MOE_MAX_LAYERS);
    int fe_def = a->moe == 1 ? c->d_ff : c->d_ff / c->n_experts_per_tok;
    if ((st = hp_dim(L, "expert_feed_forward_length", fe_def > 0 ? fe_def : 0, &c->d_expert)) != NL_OK) return st;
    if (a->moe_arch == NL_ARCH_QWEN2_MOE) {
        snprintf(key, sizeof key, "%s.expert_shared_feed_forward_length", L->arch);
        if ((st = nl_gguf_get_i64(L->ctx, L->g, key, &v, &found)) != NL_OK) return st;
        if (!found) v = c->d_ff;
        if (v < 0 || v > INT_MAX)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key '%s' is %lld, expected 0 to %d", L->path, key,
                             (long long)v, INT_MAX);
        c->d_shared = (int)v;
    }
    snprintf(key, sizeof key, "%s.expert_weights_norm", L->arch);
    if ((st = nl_gguf_get_bool(L->ctx, L->g, key, &c->norm_topk_prob, &found)) != NL_OK) return st;
    if (!found) c->norm_topk_prob = a->norm_topk;
    snprintf(key, sizeof key, "%s.expert_gating_func", L->arch);
    if ((st = nl_gguf_get_i64(L->ctx, L->g, key, &v, &found)) != NL_OK) return st;
    if (found && v != 1) /* llama.cpp: 1 softmax, 2 sigmoid, 3 softmax over the selected */
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': metadata key '%s' is %lld; only softmax routing (1) is supported",
                         L->path, key, (long long)v);
    double scale;
    if ((st = hp_num(L, "expert_weights_scale", 1.0, 1, &scale)) != NL_OK) return st;
    if (scale != 1.0)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': metadata key '%s.expert_weights_scale' is %g; only 1 is supported",
                         L->path, L->arch, scale);
    c->decoder_sparse_step = 1;
    if ((st = nl_gguf_get_i64(L->ctx, L->g, "neuronlab.decoder_sparse_step", &v, &found)) != NL_OK) return st;
    if (found) {
        if (v < 1 || v > INT_MAX)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': metadata key 'neuronlab.decoder_sparse_step' is %lld, expected "
                             "a positive step", L->path, (long long)v);
        c->decoder_sparse_step = (int)v;
    }
    const nl_gguf_kv *mo;
    if ((st = nl_gguf_get_arr(L->ctx, L->g, "neuronlab.mlp_only_layers", NL_GGUF_I32, &mo, &found)) != NL_OK) return st;
    for (uint64_t i = 0; found && i < mo->n; i++) {
        double l = nl_gguf_arr_num(mo, i);
        if (l >= 0 && l < c->n_layers) c->mlp_only[(int)l / 8] |= (unsigned char)(1u << ((int)l % 8));
    }
    return NL_OK;
}

/* Every MoE layer's stacked expert tensors exist with the shape the metadata implies (before
 * the resolver reads their slices). Shapes in messages are in Hugging Face order ([E, Fe, D]). */
static nl_status check_experts(gg_loader *L, const nl_model *m, const char *model_type) {
    const nl_config *c = &m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        if (!nl_config_is_moe_layer(c, l)) continue;
        for (int k = 0; k < 3; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, gg_exps[k]);
            const nl_gguf_tensor *t = nl_gguf_find_tensor(L->g, name);
            if (!t)
                return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing tensor '%s' (model_type %s, a mixture-of-experts layer)",
                                 L->path, name, model_type);
            const int64_t want[3] = {c->n_experts, k < 2 ? c->d_expert : c->d_model, k < 2 ? c->d_model : c->d_expert};
            if (t->n_dims != 3 || t->ne[2] != want[0] || t->ne[1] != want[1] || t->ne[0] != want[2]) {
                char got[96];
                size_t n = (size_t)snprintf(got, sizeof got, "[");
                for (int d = t->n_dims - 1; d >= 0; d--)
                    n += (size_t)snprintf(got + n, sizeof got - n, "%lld%s", (long long)t->ne[d], d ? ", " : "]");
                return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' has shape %s, the file's metadata implies [%lld, %lld, "
                                 "%lld] (experts, rows, columns)", L->path, name, got, (long long)want[0],
                                 (long long)want[1], (long long)want[2]);
            }
        }
    }
    return NL_OK;
}

/* ---- entry point ------------------------------------------------------------------------------ */

nl_status nl_gguf_open(nl_ctx *ctx, const char *path, const nl_model_opts *opts, nl_model **out) {
    *out = NULL;
    nl_model *m = nl_model_alloc(path);
    if (!m) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", path);
    nl_gguf *g = NULL;
    const void *base;
    size_t size;
    char arch[64] = "";
    nl_status st = nl_model_map(ctx, m, path, &base, &size);
    if (st != NL_OK) goto done;
    if ((st = nl_gguf_parse(ctx, path, base, size, &g)) != NL_OK) goto done;
    const char *s;
    size_t n;
    if ((st = nl_gguf_get_str(ctx, g, "general.architecture", &s, &n, NULL)) != NL_OK) goto done;
    snprintf(arch, sizeof arch, "%.*s", (int)(n < 60 ? n : 60), s);
    const gg_arch *a = NULL;
    for (int i = 0; i < N_GG; i++)
        if (strlen(gg_archs[i].name) == n && !memcmp(gg_archs[i].name, s, n)) a = &gg_archs[i];
    if (!a) {
        char list[128];
        size_t k = 0;
        for (int i = 0; i < N_GG; i++) k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", gg_archs[i].name);
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': architecture '%s' is not supported (supported: %s)", path, arch, list);
        goto done;
    }
    gg_loader L = {ctx, path, g, arch};
    if ((st = parse_config(&L, a, opts, m)) != NL_OK) goto done;
    if ((st = parse_moe(&L, a, m)) != NL_OK) goto done;
    const nl_name_table *names = m->cfg.n_experts > 0 ? a->moe_names : a->names;
    if (a->arch == NL_ARCH_PHI && nl_gguf_find_tensor(g, "blk.0.attn_qkv.weight")) names = &gg_phi2_fused;
    gg_source S = {g, m->path};
    nl_tensor_source src = {m->path, &S, gg_lookup, NULL};
    char model_type[80], layers_key[96];
    snprintf(model_type, sizeof model_type, "gguf:%s", arch);
    snprintf(layers_key, sizeof layers_key, "%s.block_count", arch);
    if (m->cfg.n_experts > 0 && (st = check_experts(&L, m, model_type)) != NL_OK) goto done;
    nl_resolver r = {.names = names, .src = &src, .model_type = model_type, .cfg_name = "the file's metadata",
                     .cfg_path = m->path, .layers_key = layers_key, .attn_bias = 1, .want_dt = -1};
    if ((st = nl_arch_resolve(ctx, m, &r)) != NL_OK) goto done;
    m->rope_unpermute = a->unpermute;
    if (a->unpermute && (m->cfg.head_dim % 2))
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': head dimension %d is odd, so q/k rows cannot be in RoPE pair order", path,
                       m->cfg.head_dim);
    if (st == NL_OK) st = nl_model_realign(ctx, m);
    if (st == NL_OK) st = nl_model_validate(ctx, m, path);
done:
    nl_gguf_close(g);
    if (st == NL_OK) *out = m;
    else nl_model_close(m);
    return st;
}
