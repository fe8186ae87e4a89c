/* arch.c — the architecture table (one nl_arch_desc per architecture, one name table per
 * format that stores it) and the generic resolver that fills a model's stored tensors from a
 * name table through a tensor source (see arch.h).
 *
 * Rules: the resolver looks every named role up (and, failing that, the name without the
 * table's strip prefix), takes only what the flags ask for (untied LM head, attention biases
 * when the config has them), and checks each tensor's shape against the config; layer
 * matrices must share one dtype (recorded for the loader's message). Roles without a name
 * are absent. Messages keep the form `'FILE': missing tensor 'NAME' (model_type T)` and
 * `'FILE': tensor 'NAME' has shape [..], CONFIG implies [..]`.
 * Checked by tests/test_model.c and tests/test_hf.c.
 */
#include "model/arch.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- roles ---------------------------------------------------------------------------- */

const nl_role_def nl_global_roles[NL_G_COUNT] = {
    [NL_G_TOK_EMB] = {"tok_emb", offsetof(nl_model, tok_emb), NL_DIM_V, NL_DIM_D},
    [NL_G_POS_EMB] = {"pos_emb", offsetof(nl_model, pos_emb), NL_DIM_P, NL_DIM_D},
    [NL_G_NORM_W] = {"norm_w", offsetof(nl_model, norm_w), NL_DIM_D, NL_DIM_NONE},
    [NL_G_NORM_B] = {"norm_b", offsetof(nl_model, norm_b), NL_DIM_D, NL_DIM_NONE},
    [NL_G_LM_HEAD] = {"lm_head", offsetof(nl_model, lm_head), NL_DIM_V, NL_DIM_D},
    [NL_G_LM_HEAD_B] = {"lm_head_b", offsetof(nl_model, lm_head_b), NL_DIM_V, NL_DIM_NONE},
};

#define LS(f) #f, offsetof(nl_stored_layer, f)
const nl_role_def nl_layer_roles[NL_R_COUNT] = {
    [NL_R_LN1_W] = {LS(ln1_w), NL_DIM_D, NL_DIM_NONE},   [NL_R_LN1_B] = {LS(ln1_b), NL_DIM_D, NL_DIM_NONE},
    [NL_R_LN2_W] = {LS(ln2_w), NL_DIM_D, NL_DIM_NONE},   [NL_R_LN2_B] = {LS(ln2_b), NL_DIM_D, NL_DIM_NONE},
    [NL_R_WQ] = {LS(wq), NL_DIM_Q, NL_DIM_D},            [NL_R_WK] = {LS(wk), NL_DIM_KV, NL_DIM_D},
    [NL_R_WV] = {LS(wv), NL_DIM_KV, NL_DIM_D},           [NL_R_BQ] = {LS(bq), NL_DIM_Q, NL_DIM_NONE},
    [NL_R_BK] = {LS(bk), NL_DIM_KV, NL_DIM_NONE},        [NL_R_BV] = {LS(bv), NL_DIM_KV, NL_DIM_NONE},
    [NL_R_WQKV] = {LS(wqkv), NL_DIM_QKV, NL_DIM_D},      [NL_R_BQKV] = {LS(bqkv), NL_DIM_QKV, NL_DIM_NONE},
    [NL_R_WO] = {LS(wo), NL_DIM_D, NL_DIM_Q},            [NL_R_BO] = {LS(bo), NL_DIM_D, NL_DIM_NONE},
    [NL_R_W_GATE] = {LS(w_gate), NL_DIM_F, NL_DIM_D},    [NL_R_W_UP] = {LS(w_up), NL_DIM_F, NL_DIM_D},
    [NL_R_B_UP] = {LS(b_up), NL_DIM_F, NL_DIM_NONE},     [NL_R_W_DOWN] = {LS(w_down), NL_DIM_D, NL_DIM_F},
    [NL_R_B_DOWN] = {LS(b_down), NL_DIM_D, NL_DIM_NONE},
    [NL_R_Q_NORM] = {LS(q_norm), NL_DIM_DH, NL_DIM_NONE},  [NL_R_K_NORM] = {LS(k_norm), NL_DIM_DH, NL_DIM_NONE},
    [NL_R_ROUTER] = {LS(router), NL_DIM_E, NL_DIM_D},
    [NL_R_SH_GATE] = {LS(sh_gate), NL_DIM_FS, NL_DIM_D},   [NL_R_SH_UP] = {LS(sh_up), NL_DIM_FS, NL_DIM_D},
    [NL_R_SH_DOWN] = {LS(sh_down), NL_DIM_D, NL_DIM_FS},   [NL_R_SH_ROUTER] = {LS(sh_router), NL_DIM_ONE, NL_DIM_D},
};
#undef LS

/* Routed-expert matrices: gate (Fe, D), up (Fe, D), down (D, Fe) (off unused). */
static const nl_role_def expert_roles[3] = {
    {"expert gate", 0, NL_DIM_FE, NL_DIM_D}, {"expert up", 0, NL_DIM_FE, NL_DIM_D}, {"expert down", 0, NL_DIM_D, NL_DIM_FE},
};

int nl_config_is_moe_layer(const nl_config *c, int l) {
    if (c->n_experts <= 0 || l < 0 || l >= c->n_layers) return 0;
    if (l < NL_MOE_MAX_LAYERS && (c->mlp_only[l / 8] >> (l % 8) & 1)) return 0;
    return c->decoder_sparse_step > 0 && (l + 1) % c->decoder_sparse_step == 0;
}

/* ---- Hugging Face names ------------------------------------------------------------------ */

#define HF_LLAMA_LAYER                                                                                   \
    [NL_R_LN1_W] = {"model.layers.%d.input_layernorm.weight", NL_TN_REQ},                                \
    [NL_R_LN2_W] = {"model.layers.%d.post_attention_layernorm.weight", NL_TN_REQ},                       \
    [NL_R_WQ] = {"model.layers.%d.self_attn.q_proj.weight", NL_TN_REQ},                                  \
    [NL_R_WK] = {"model.layers.%d.self_attn.k_proj.weight", NL_TN_REQ},                                  \
    [NL_R_WV] = {"model.layers.%d.self_attn.v_proj.weight", NL_TN_REQ},                                  \
    [NL_R_WO] = {"model.layers.%d.self_attn.o_proj.weight", NL_TN_REQ},                                  \
    [NL_R_W_GATE] = {"model.layers.%d.mlp.gate_proj.weight", NL_TN_REQ},                                 \
    [NL_R_W_UP] = {"model.layers.%d.mlp.up_proj.weight", NL_TN_REQ},                                     \
    [NL_R_W_DOWN] = {"model.layers.%d.mlp.down_proj.weight", NL_TN_REQ}

#define HF_LLAMA_GLOBAL                                                                                  \
    [NL_G_TOK_EMB] = {"model.embed_tokens.weight", NL_TN_REQ}, [NL_G_NORM_W] = {"model.norm.weight", NL_TN_REQ}, \
    [NL_G_LM_HEAD] = {"lm_head.weight", NL_TN_UNTIED}

/* q/k/v/o biases present only when the config says attention_bias (Llama, Qwen3). */
#define HF_ATTN_BIAS_OPT                                                                                  \
    [NL_R_BQ] = {"model.layers.%d.self_attn.q_proj.bias", NL_TN_ATTN_BIAS},                               \
    [NL_R_BK] = {"model.layers.%d.self_attn.k_proj.bias", NL_TN_ATTN_BIAS},                               \
    [NL_R_BV] = {"model.layers.%d.self_attn.v_proj.bias", NL_TN_ATTN_BIAS},                               \
    [NL_R_BO] = {"model.layers.%d.self_attn.o_proj.bias", NL_TN_ATTN_BIAS}

static const nl_name_table hf_llama = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER,
              HF_ATTN_BIAS_OPT},
};

static const nl_name_table hf_mistral = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER},
};

static const nl_name_table hf_qwen2 = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER,
              [NL_R_BQ] = {"model.layers.%d.self_attn.q_proj.bias", NL_TN_REQ},
              [NL_R_BK] = {"model.layers.%d.self_attn.k_proj.bias", NL_TN_REQ},
              [NL_R_BV] = {"model.layers.%d.self_attn.v_proj.bias", NL_TN_REQ}},
};

/* Qwen3: q/k/v/o biases only with attention_bias; RMSNorm over each head's q and k. */
#define HF_QWEN3_ATTN                                                                                     \
    HF_ATTN_BIAS_OPT,                                                                                     \
    [NL_R_Q_NORM] = {"model.layers.%d.self_attn.q_norm.weight", NL_TN_QK_NORM},                           \
    [NL_R_K_NORM] = {"model.layers.%d.self_attn.k_norm.weight", NL_TN_QK_NORM}

static const nl_name_table hf_qwen3 = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER, HF_QWEN3_ATTN},
};

/* Mixtral: every layer is MoE; block_sparse_moe.gate is the router, experts.E.w1/w3/w2 are
 * gate/up/down. */
static const nl_name_table hf_mixtral = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER, [NL_R_ROUTER] = {"model.layers.%d.block_sparse_moe.gate.weight", NL_TN_MOE}},
    .expert = {"model.layers.%d.block_sparse_moe.experts.%d.w1.weight",
               "model.layers.%d.block_sparse_moe.experts.%d.w3.weight",
               "model.layers.%d.block_sparse_moe.experts.%d.w2.weight"},
};

#define HF_QWEN_MOE_EXPERTS                                                                               \
    {"model.layers.%d.mlp.experts.%d.gate_proj.weight", "model.layers.%d.mlp.experts.%d.up_proj.weight",   \
     "model.layers.%d.mlp.experts.%d.down_proj.weight"}

/* Qwen2-MoE: Qwen2 attention (q/k/v bias with qkv_bias); MoE layers mlp.gate + experts + a
 * shared expert gated by sigmoid(mlp.shared_expert_gate · x); other layers a dense mlp. */
static const nl_name_table hf_qwen2_moe = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER,
              [NL_R_BQ] = {"model.layers.%d.self_attn.q_proj.bias", NL_TN_ATTN_BIAS},
              [NL_R_BK] = {"model.layers.%d.self_attn.k_proj.bias", NL_TN_ATTN_BIAS},
              [NL_R_BV] = {"model.layers.%d.self_attn.v_proj.bias", NL_TN_ATTN_BIAS},
              [NL_R_ROUTER] = {"model.layers.%d.mlp.gate.weight", NL_TN_MOE},
              [NL_R_SH_GATE] = {"model.layers.%d.mlp.shared_expert.gate_proj.weight", NL_TN_SHARED},
              [NL_R_SH_UP] = {"model.layers.%d.mlp.shared_expert.up_proj.weight", NL_TN_SHARED},
              [NL_R_SH_DOWN] = {"model.layers.%d.mlp.shared_expert.down_proj.weight", NL_TN_SHARED},
              [NL_R_SH_ROUTER] = {"model.layers.%d.mlp.shared_expert_gate.weight", NL_TN_SHARED}},
    .expert = HF_QWEN_MOE_EXPERTS,
};

static const nl_name_table hf_qwen3_moe = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {HF_LLAMA_GLOBAL},
    .layer = {HF_LLAMA_LAYER, HF_QWEN3_ATTN, [NL_R_ROUTER] = {"model.layers.%d.mlp.gate.weight", NL_TN_MOE}},
    .expert = HF_QWEN_MOE_EXPERTS,
};

static const nl_name_table hf_gpt2 = {
    .strip = "transformer.", .conv1d = 1, .qkv = NL_QKV_CONCAT,
    .global = {[NL_G_TOK_EMB] = {"transformer.wte.weight", NL_TN_REQ},
               [NL_G_POS_EMB] = {"transformer.wpe.weight", NL_TN_REQ},
               [NL_G_NORM_W] = {"transformer.ln_f.weight", NL_TN_REQ},
               [NL_G_NORM_B] = {"transformer.ln_f.bias", NL_TN_REQ},
               [NL_G_LM_HEAD] = {"lm_head.weight", NL_TN_UNTIED}},
    .layer = {[NL_R_LN1_W] = {"transformer.h.%d.ln_1.weight", NL_TN_REQ},
              [NL_R_LN1_B] = {"transformer.h.%d.ln_1.bias", NL_TN_REQ},
              [NL_R_LN2_W] = {"transformer.h.%d.ln_2.weight", NL_TN_REQ},
              [NL_R_LN2_B] = {"transformer.h.%d.ln_2.bias", NL_TN_REQ},
              [NL_R_WQKV] = {"transformer.h.%d.attn.c_attn.weight", NL_TN_REQ},
              [NL_R_BQKV] = {"transformer.h.%d.attn.c_attn.bias", NL_TN_REQ},
              [NL_R_WO] = {"transformer.h.%d.attn.c_proj.weight", NL_TN_REQ},
              [NL_R_BO] = {"transformer.h.%d.attn.c_proj.bias", NL_TN_REQ},
              [NL_R_W_UP] = {"transformer.h.%d.mlp.c_fc.weight", NL_TN_REQ},
              [NL_R_B_UP] = {"transformer.h.%d.mlp.c_fc.bias", NL_TN_REQ},
              [NL_R_W_DOWN] = {"transformer.h.%d.mlp.c_proj.weight", NL_TN_REQ},
              [NL_R_B_DOWN] = {"transformer.h.%d.mlp.c_proj.bias", NL_TN_REQ}},
};

static const nl_name_table hf_gpt_neox = {
    .strip = "gpt_neox.", .qkv = NL_QKV_HEAD_INTERLEAVED,
    .global = {[NL_G_TOK_EMB] = {"gpt_neox.embed_in.weight", NL_TN_REQ},
               [NL_G_NORM_W] = {"gpt_neox.final_layer_norm.weight", NL_TN_REQ},
               [NL_G_NORM_B] = {"gpt_neox.final_layer_norm.bias", NL_TN_REQ},
               [NL_G_LM_HEAD] = {"embed_out.weight", NL_TN_UNTIED}},
    .layer = {[NL_R_LN1_W] = {"gpt_neox.layers.%d.input_layernorm.weight", NL_TN_REQ},
              [NL_R_LN1_B] = {"gpt_neox.layers.%d.input_layernorm.bias", NL_TN_REQ},
              [NL_R_LN2_W] = {"gpt_neox.layers.%d.post_attention_layernorm.weight", NL_TN_REQ},
              [NL_R_LN2_B] = {"gpt_neox.layers.%d.post_attention_layernorm.bias", NL_TN_REQ},
              [NL_R_WQKV] = {"gpt_neox.layers.%d.attention.query_key_value.weight", NL_TN_REQ},
              [NL_R_BQKV] = {"gpt_neox.layers.%d.attention.query_key_value.bias", NL_TN_ATTN_BIAS},
              [NL_R_WO] = {"gpt_neox.layers.%d.attention.dense.weight", NL_TN_REQ},
              [NL_R_BO] = {"gpt_neox.layers.%d.attention.dense.bias", NL_TN_ATTN_BIAS},
              [NL_R_W_UP] = {"gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", NL_TN_REQ},
              [NL_R_B_UP] = {"gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", NL_TN_REQ},
              [NL_R_W_DOWN] = {"gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", NL_TN_REQ},
              [NL_R_B_DOWN] = {"gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", NL_TN_REQ}},
};

static const nl_name_table hf_phi = {
    .strip = "model.", .qkv = NL_QKV_SEPARATE,
    .global = {[NL_G_TOK_EMB] = {"model.embed_tokens.weight", NL_TN_REQ},
               [NL_G_NORM_W] = {"model.final_layernorm.weight", NL_TN_REQ},
               [NL_G_NORM_B] = {"model.final_layernorm.bias", NL_TN_REQ},
               [NL_G_LM_HEAD] = {"lm_head.weight", NL_TN_UNTIED}, [NL_G_LM_HEAD_B] = {"lm_head.bias", NL_TN_REQ}},
    .layer = {[NL_R_LN1_W] = {"model.layers.%d.input_layernorm.weight", NL_TN_REQ},
              [NL_R_LN1_B] = {"model.layers.%d.input_layernorm.bias", NL_TN_REQ},
              [NL_R_WQ] = {"model.layers.%d.self_attn.q_proj.weight", NL_TN_REQ},
              [NL_R_BQ] = {"model.layers.%d.self_attn.q_proj.bias", NL_TN_REQ},
              [NL_R_WK] = {"model.layers.%d.self_attn.k_proj.weight", NL_TN_REQ},
              [NL_R_BK] = {"model.layers.%d.self_attn.k_proj.bias", NL_TN_REQ},
              [NL_R_WV] = {"model.layers.%d.self_attn.v_proj.weight", NL_TN_REQ},
              [NL_R_BV] = {"model.layers.%d.self_attn.v_proj.bias", NL_TN_REQ},
              [NL_R_WO] = {"model.layers.%d.self_attn.dense.weight", NL_TN_REQ},
              [NL_R_BO] = {"model.layers.%d.self_attn.dense.bias", NL_TN_REQ},
              [NL_R_W_UP] = {"model.layers.%d.mlp.fc1.weight", NL_TN_REQ},
              [NL_R_B_UP] = {"model.layers.%d.mlp.fc1.bias", NL_TN_REQ},
              [NL_R_W_DOWN] = {"model.layers.%d.mlp.fc2.weight", NL_TN_REQ},
              [NL_R_B_DOWN] = {"model.layers.%d.mlp.fc2.bias", NL_TN_REQ}},
};

/* ---- architectures ---------------------------------------------------------------------- */

static const nl_arch_desc archs[] = {
    [NL_ARCH_LLAMA] = {NL_ARCH_LLAMA, "llama", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0, "silu", 0, 0,
                       &hf_llama},
    [NL_ARCH_MISTRAL] = {NL_ARCH_MISTRAL, "mistral", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0, "silu", 0,
                         0, &hf_mistral},
    [NL_ARCH_QWEN2] = {NL_ARCH_QWEN2, "qwen2", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0, "silu", 0, 0,
                       &hf_qwen2},
    [NL_ARCH_GPT2] = {NL_ARCH_GPT2, "gpt2", NL_NORM_LAYER, NL_POS_LEARNED, 0, NL_BLOCK_SEQUENTIAL, 0, "gelu_new", 1,
                      0, &hf_gpt2},
    [NL_ARCH_GPT_NEOX] = {NL_ARCH_GPT_NEOX, "gpt_neox", NL_NORM_LAYER, NL_POS_ROPE, 0, NL_BLOCK_PARALLEL, 0.25,
                          "gelu", 0, 1, &hf_gpt_neox},
    [NL_ARCH_PHI] = {NL_ARCH_PHI, "phi", NL_NORM_LAYER, NL_POS_ROPE, 0, NL_BLOCK_SHARED_NORM, 0.5, "gelu_new", 0, 0,
                     &hf_phi},
    [NL_ARCH_QWEN3] = {NL_ARCH_QWEN3, "qwen3", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0, "silu", 0, 0,
                       &hf_qwen3},
    [NL_ARCH_MIXTRAL] = {NL_ARCH_MIXTRAL, "mixtral", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0, "silu", 0,
                         0, &hf_mixtral},
    [NL_ARCH_QWEN2_MOE] = {NL_ARCH_QWEN2_MOE, "qwen2_moe", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0,
                           "silu", 0, 1, &hf_qwen2_moe},
    [NL_ARCH_QWEN3_MOE] = {NL_ARCH_QWEN3_MOE, "qwen3_moe", NL_NORM_RMS, NL_POS_ROPE, 1, NL_BLOCK_SEQUENTIAL, 1.0,
                           "silu", 0, 0, &hf_qwen3_moe},
};
#define N_ARCHS ((int)(sizeof archs / sizeof archs[0]))

const nl_arch_desc *nl_arch_desc_of(nl_arch a) {
    NL_ASSERT((unsigned)a < (unsigned)N_ARCHS && archs[a].name);
    return &archs[a];
}

const char *nl_arch_name(nl_arch a) { return (unsigned)a < (unsigned)N_ARCHS ? archs[a].name : "?"; }

/* ---- tensor sources --------------------------------------------------------------------- */

void nl_tensor_source_close(nl_tensor_source *s) {
    if (s && s->close) s->close(s->impl);
    free(s);
}

/* ---- the resolver ----------------------------------------------------------------------- */

static int64_t dim_value(const nl_config *c, nl_dim_sym d) {
    const int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    switch (d) {
    case NL_DIM_D: return c->d_model;
    case NL_DIM_F: return c->d_ff;
    case NL_DIM_V: return c->vocab_size;
    case NL_DIM_Q: return Q;
    case NL_DIM_KV: return KV;
    case NL_DIM_QKV: return Q + 2 * KV;
    case NL_DIM_P: return c->max_pos;
    case NL_DIM_DH: return c->head_dim;
    case NL_DIM_E: return c->n_experts;
    case NL_DIM_FE: return c->d_expert;
    case NL_DIM_FS: return c->d_shared;
    case NL_DIM_ONE: return 1;
    case NL_DIM_NONE: break;
    }
    return -1;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k + 24 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(buf + k, cap - k, "]");
}

/* Finds `name`, or failing that the name without the table's strip prefix. */
static nl_status find(nl_ctx *ctx, nl_resolver *r, const char *name, nl_source_tensor *out, int *found) {
    nl_status st = r->src->lookup(ctx, r->src->impl, name, out, found);
    if (st != NL_OK || *found) return st;
    const char *strip = r->names->strip ? r->names->strip : "";
    size_t n = strlen(strip);
    if (n && strncmp(name, strip, n) == 0) return r->src->lookup(ctx, r->src->impl, name + n, out, found);
    return NL_OK;
}

/* Loads one named tensor into *dst, checking dtype and shape. in_layer: a layer matrix
 * (stored (in, out) when the table says conv1d; embeddings never are). */
static nl_status load_tensor(nl_ctx *ctx, nl_model *m, nl_resolver *r, const char *name, nl_tn_flag flag,
                             const nl_role_def *rd, int in_layer, nl_tensor *dst) {
    const nl_config *c = &m->cfg;
    switch (flag) {
    case NL_TN_UNTIED: if (c->tie_embeddings) return NL_OK; break;
    case NL_TN_ATTN_BIAS: if (!r->attn_bias) return NL_OK; break;
    case NL_TN_QK_NORM: if (!c->qk_norm) return NL_OK; break;
    default: break;
    }
    nl_source_tensor e;
    int found = 0;
    nl_status st = find(ctx, r, name, &e, &found);
    if (st != NL_OK) return st;
    if (!found) {
        if (flag == NL_TN_OPT) return NL_OK;
        return nl_errorf(ctx, NL_EFORMAT, "'%s': missing tensor '%s' (model_type %s%s)", r->src->path, name,
                         r->model_type, flag == NL_TN_MOE || flag == NL_TN_SHARED || in_layer == 2
                                            ? ", a mixture-of-experts layer" : "");
    }
    *dst = e.t;
    int64_t want[2] = {dim_value(c, rd->d0), dim_value(c, rd->d1)};
    int nd = rd->d1 == NL_DIM_NONE ? 1 : 2;
    if (nd == 2 && in_layer && m->conv1d) {
        int64_t t = want[0];
        want[0] = want[1];
        want[1] = t;
    }
    if (nd == 2 && in_layer) {
        if (r->want_dt < 0) r->want_dt = (int)dst->dtype;
        r->n_mats++;
        if ((int)dst->dtype != r->want_dt && r->n_odd++ == 0) {
            snprintf(r->odd_name, sizeof r->odd_name, "%s", e.name);
            snprintf(r->odd_file, sizeof r->odd_file, "%s", e.file);
            r->odd_dt = dst->dtype;
        }
    }
    if (dst->ndim != nd || dst->shape[0] != want[0] || (nd == 2 && dst->shape[1] != want[1])) {
        char got[96], exp[96];
        fmt_shape(got, sizeof got, dst->ndim, dst->shape);
        fmt_shape(exp, sizeof exp, nd, want);
        memset(dst, 0, sizeof *dst);
        return nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' has shape %s, %s implies %s", e.file, e.name, got,
                         r->cfg_name, exp);
    }
    return NL_OK;
}

/* The config's layer count must not exceed the layers the source holds: probes the first
 * always-required layer tensor of the last layer, and on a miss counts the layers present
 * (each probe is one lookup; the count stops at the first missing layer). */
static nl_status check_layer_count(nl_ctx *ctx, const nl_model *m, nl_resolver *r) {
    const nl_name_table *t = r->names;
    const char *pat = NULL;
    for (int s = 0; s < NL_R_COUNT && !pat; s++)
        if (t->layer[s].name && t->layer[s].flag == NL_TN_REQ) pat = t->layer[s].name;
    if (m->cfg.n_layers <= 0)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': %s must be positive, got %d", r->cfg_path ? r->cfg_path : r->cfg_name,
                         r->layers_key ? r->layers_key : "n_layers", m->cfg.n_layers);
    if (!pat) return NL_OK;
    char name[512];
    nl_source_tensor e;
    int found = 0;
    snprintf(name, sizeof name, pat, m->cfg.n_layers - 1);
    nl_status st = find(ctx, r, name, &e, &found);
    if (st != NL_OK || found) return st;
    int have = 0;
    for (; have < m->cfg.n_layers - 1; have++) {
        snprintf(name, sizeof name, pat, have);
        if ((st = find(ctx, r, name, &e, &found)) != NL_OK) return st;
        if (!found) break;
    }
    snprintf(name, sizeof name, pat, have);
    return nl_errorf(ctx, NL_EFORMAT, "'%s': %s is %d, but '%s' holds %d layer%s: missing tensor '%s' (model_type %s)",
                     r->cfg_path ? r->cfg_path : r->cfg_name, r->layers_key ? r->layers_key : "n_layers",
                     m->cfg.n_layers, r->src->path, have, have == 1 ? "" : "s", name, r->model_type);
}

nl_status nl_arch_resolve(nl_ctx *ctx, nl_model *m, nl_resolver *r) {
    const nl_name_table *t = r->names;
    nl_status st;
    m->conv1d = t->conv1d;
    m->qkv_layout = t->qkv;
    if (m->cfg.pos == NL_POS_LEARNED && !t->global[NL_G_POS_EMB].name)
        NL_ASSERT(!"learned positions need a position-embedding tensor name");
    for (int g = 0; g < NL_G_COUNT; g++) {
        if (!t->global[g].name) continue;
        nl_tensor *dst = (nl_tensor *)((char *)m + nl_global_roles[g].off);
        if ((st = load_tensor(ctx, m, r, t->global[g].name, t->global[g].flag, &nl_global_roles[g], 0, dst)) != NL_OK)
            return st;
    }
    if ((st = check_layer_count(ctx, m, r)) != NL_OK) return st;
    if (m->cfg.n_layers <= 0) return NL_EFORMAT; /* message set by check_layer_count */
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", m->path);
    const nl_config *c = &m->cfg;
    if (c->n_experts > 0 && !t->expert[0])
        NL_ASSERT(!"a mixture-of-experts config needs expert tensor names");
    for (int l = 0; l < c->n_layers; l++) {
        const int moe = nl_config_is_moe_layer(c, l);
        for (int s = 0; s < NL_R_COUNT; s++) {
            if (!t->layer[s].name) continue;
            const nl_tn_flag fl = t->layer[s].flag;
            if (moe && s >= NL_R_W_GATE && s <= NL_R_B_DOWN) continue; /* the dense FFN */
            if ((fl == NL_TN_MOE || fl == NL_TN_SHARED) && !moe) continue;
            if (fl == NL_TN_SHARED && c->d_shared <= 0) continue;
            char name[512];
            snprintf(name, sizeof name, t->layer[s].name, l);
            nl_tensor *dst = (nl_tensor *)((char *)&m->layers[l] + nl_layer_roles[s].off);
            if ((st = load_tensor(ctx, m, r, name, fl, &nl_layer_roles[s], 1, dst)) != NL_OK) return st;
        }
        if (!moe) continue;
        nl_stored_layer *sl = &m->layers[l];
        sl->experts = calloc((size_t)c->n_experts * 3, sizeof *sl->experts);
        sl->views = calloc((size_t)c->n_experts, sizeof *sl->views);
        if (!sl->experts || !sl->views) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", m->path);
        for (int e = 0; e < c->n_experts; e++)
            for (int k = 0; k < 3; k++) {
                char name[512];
                snprintf(name, sizeof name, t->expert[k], l, e);
                if ((st = load_tensor(ctx, m, r, name, NL_TN_REQ, &expert_roles[k], 2, &sl->experts[3 * e + k])) !=
                    NL_OK)
                    return st;
            }
    }
    return NL_OK;
}
