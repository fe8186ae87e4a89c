/* hf.c — loader for Hugging Face model folders: config.json + model.safetensors, or
 * model.safetensors.index.json and the shards it names.
 *
 * Everything architecture-specific lives in one table, `archs` below: one row per
 * model_type, holding the config.json field names and the HF class defaults used when a
 * field is absent, the structural choices (norm, positions, FFN kind, QKV layout …) and
 * the checkpoint's tensor names per slot. Supporting a new architecture is a new row;
 * the code below the table is generic.
 *
 * Rules: config values follow the HF config class of the model_type (its defaults for
 * absent fields, null = the HF "None" behaviour); the core dimensions (layers, width,
 * heads, FFN width, vocabulary) must be present. Every tensor the row names is looked up,
 * its dtype must be F32/F16/BF16 and its shape must match what config.json implies; the
 * messages name the checkpoint tensor and the file. Tensors the row does not name
 * (attention masks, rotary caches …) are ignored, as HF does. Tensors that the format
 * left unaligned for their dtype are copied into an aligned anonymous mapping owned by
 * the model (m->maps), so model.c may use every view as a typed array.
 * Checked by tests/test_hf.c and the PyTorch fixtures in tests/fixtures/hf.
 */
#include "model/model_internal.h"
#include "neuronlab/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ---- tensor slots ------------------------------------------------------------------- */

/* Dimension symbols of the shapes config.json implies (see common.h glossary). */
typedef enum { DIM_NONE = 0, DIM_D, DIM_F, DIM_V, DIM_Q, DIM_KV, DIM_QKV, DIM_P } dim_sym;

enum { G_TOK_EMB, G_POS_EMB, G_NORM_W, G_NORM_B, G_LM_HEAD, G_LM_HEAD_B, G_COUNT };
enum {
    S_LN1_W, S_LN1_B, S_LN2_W, S_LN2_B, S_WQ, S_WK, S_WV, S_BQ, S_BK, S_BV, S_WQKV, S_BQKV,
    S_WO, S_BO, S_W_GATE, S_W_UP, S_B_UP, S_W_DOWN, S_B_DOWN, S_COUNT
};

typedef struct {
    size_t off;     /* offset of the nl_tensor in nl_model / nl_stored_layer */
    dim_sym d0, d1; /* (n_out, n_in) for matrices, like torch.nn.Linear; swapped when conv1d */
} slot_def;

static const slot_def global_slots[G_COUNT] = {
    [G_TOK_EMB] = {offsetof(nl_model, tok_emb), DIM_V, DIM_D},
    [G_POS_EMB] = {offsetof(nl_model, pos_emb), DIM_P, DIM_D},
    [G_NORM_W] = {offsetof(nl_model, norm_w), DIM_D, DIM_NONE},
    [G_NORM_B] = {offsetof(nl_model, norm_b), DIM_D, DIM_NONE},
    [G_LM_HEAD] = {offsetof(nl_model, lm_head), DIM_V, DIM_D},
    [G_LM_HEAD_B] = {offsetof(nl_model, lm_head_b), DIM_V, DIM_NONE},
};

#define LS(f) offsetof(nl_stored_layer, f)
static const slot_def layer_slots[S_COUNT] = {
    [S_LN1_W] = {LS(ln1_w), DIM_D, DIM_NONE},  [S_LN1_B] = {LS(ln1_b), DIM_D, DIM_NONE},
    [S_LN2_W] = {LS(ln2_w), DIM_D, DIM_NONE},  [S_LN2_B] = {LS(ln2_b), DIM_D, DIM_NONE},
    [S_WQ] = {LS(wq), DIM_Q, DIM_D},           [S_WK] = {LS(wk), DIM_KV, DIM_D},
    [S_WV] = {LS(wv), DIM_KV, DIM_D},          [S_BQ] = {LS(bq), DIM_Q, DIM_NONE},
    [S_BK] = {LS(bk), DIM_KV, DIM_NONE},       [S_BV] = {LS(bv), DIM_KV, DIM_NONE},
    [S_WQKV] = {LS(wqkv), DIM_QKV, DIM_D},     [S_BQKV] = {LS(bqkv), DIM_QKV, DIM_NONE},
    [S_WO] = {LS(wo), DIM_D, DIM_Q},           [S_BO] = {LS(bo), DIM_D, DIM_NONE},
    [S_W_GATE] = {LS(w_gate), DIM_F, DIM_D},   [S_W_UP] = {LS(w_up), DIM_F, DIM_D},
    [S_B_UP] = {LS(b_up), DIM_F, DIM_NONE},    [S_W_DOWN] = {LS(w_down), DIM_D, DIM_F},
    [S_B_DOWN] = {LS(b_down), DIM_D, DIM_NONE},
};
#undef LS

/* When a named tensor is loaded. */
typedef enum {
    T_REQ = 0,   /* always, missing is an error */
    T_OPT,       /* when present */
    T_UNTIED,    /* unless tie_word_embeddings (then the token embedding is the LM head) */
    T_ATTN_BIAS, /* when the config's attention-bias flag (k_attn_bias) is true */
} tflag;

typedef struct {
    const char *name;
    tflag flag;
} tname;

typedef enum { SW_NONE = 0, SW_MISTRAL, SW_QWEN2 } sw_kind;

/* One architecture. Config keys: "a|b" means the first of a, b present wins (HF
 * attribute_map aliases); NULL means the field is not read (the default applies). */
typedef struct {
    const char *model_type;
    nl_arch arch;
    nl_norm norm;
    nl_pos pos;
    int ffn_gated;
    nl_qkv_layout qkv;
    int conv1d;      /* matrices stored (in, out) */
    int shared_norm; /* parallel block with one norm */

    const char *k_layers, *k_hidden, *k_heads, *k_kv_heads, *k_ff, *k_vocab, *k_max_pos, *k_eps, *k_act;
    const char *k_head_dim, *k_rotary, *k_theta, *k_parallel, *k_attn_bias;

    int kv_heads_def;   /* used when k_kv_heads is absent; 0 = n_heads (also for null) */
    int ff_mult;        /* d_ff = ff_mult · d_model when k_ff is absent or null; 0 = k_ff required */
    int max_pos_def;
    double eps_def;
    const char *act_def;
    double rotary_def;  /* fraction of head_dim rotated */
    int parallel_def, tie_def, attn_bias_def, bos_def, eos_def;
    sw_kind sliding;
    struct { const char *key; int bad; } reject[3]; /* boolean fields whose value `bad` we cannot run */

    const char *strip;        /* prefix some checkpoints omit (base-model saves, original gpt2) */
    const char *layer_prefix; /* "{l}" is the layer index */
    tname global[G_COUNT];
    tname layer[S_COUNT];     /* relative to layer_prefix */
} hf_arch;

#define LLAMA_LAYER_NAMES                                                                           \
    [S_LN1_W] = {"input_layernorm.weight", T_REQ}, [S_LN2_W] = {"post_attention_layernorm.weight", T_REQ}, \
    [S_WQ] = {"self_attn.q_proj.weight", T_REQ}, [S_WK] = {"self_attn.k_proj.weight", T_REQ},              \
    [S_WV] = {"self_attn.v_proj.weight", T_REQ}, [S_WO] = {"self_attn.o_proj.weight", T_REQ},              \
    [S_W_GATE] = {"mlp.gate_proj.weight", T_REQ}, [S_W_UP] = {"mlp.up_proj.weight", T_REQ},                \
    [S_W_DOWN] = {"mlp.down_proj.weight", T_REQ}

#define LLAMA_GLOBAL_NAMES                                                                          \
    [G_TOK_EMB] = {"model.embed_tokens.weight", T_REQ}, [G_NORM_W] = {"model.norm.weight", T_REQ},        \
    [G_LM_HEAD] = {"lm_head.weight", T_UNTIED}

static const hf_arch archs[] = {
    {
        .model_type = "llama", .arch = NL_ARCH_LLAMA, .norm = NL_NORM_RMS, .pos = NL_POS_ROPE, .ffn_gated = 1,
        .qkv = NL_QKV_SEPARATE,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta", .k_attn_bias = "attention_bias",
        .max_pos_def = 2048, .eps_def = 1e-6, .act_def = "silu", .rotary_def = 1.0, .tie_def = 0,
        .bos_def = 1, .eos_def = 2,
        .reject = {{"mlp_bias", 1}},
        .strip = "model.", .layer_prefix = "model.layers.{l}.",
        .global = {LLAMA_GLOBAL_NAMES},
        .layer = {LLAMA_LAYER_NAMES,
                  [S_BQ] = {"self_attn.q_proj.bias", T_ATTN_BIAS}, [S_BK] = {"self_attn.k_proj.bias", T_ATTN_BIAS},
                  [S_BV] = {"self_attn.v_proj.bias", T_ATTN_BIAS}, [S_BO] = {"self_attn.o_proj.bias", T_ATTN_BIAS}},
    },
    {
        .model_type = "mistral", .arch = NL_ARCH_MISTRAL, .norm = NL_NORM_RMS, .pos = NL_POS_ROPE, .ffn_gated = 1,
        .qkv = NL_QKV_SEPARATE,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta",
        .kv_heads_def = 8, .max_pos_def = 4096 * 32, .eps_def = 1e-6, .act_def = "silu", .rotary_def = 1.0,
        .tie_def = 0, .bos_def = 1, .eos_def = 2, .sliding = SW_MISTRAL,
        .strip = "model.", .layer_prefix = "model.layers.{l}.",
        .global = {LLAMA_GLOBAL_NAMES},
        .layer = {LLAMA_LAYER_NAMES},
    },
    {
        .model_type = "qwen2", .arch = NL_ARCH_QWEN2, .norm = NL_NORM_RMS, .pos = NL_POS_ROPE, .ffn_gated = 1,
        .qkv = NL_QKV_SEPARATE,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta",
        .kv_heads_def = 32, .max_pos_def = 32768, .eps_def = 1e-6, .act_def = "silu", .rotary_def = 1.0,
        .tie_def = 0, .bos_def = -1, .eos_def = -1, .sliding = SW_QWEN2,
        .strip = "model.", .layer_prefix = "model.layers.{l}.",
        .global = {LLAMA_GLOBAL_NAMES},
        .layer = {LLAMA_LAYER_NAMES,
                  [S_BQ] = {"self_attn.q_proj.bias", T_REQ}, [S_BK] = {"self_attn.k_proj.bias", T_REQ},
                  [S_BV] = {"self_attn.v_proj.bias", T_REQ}},
    },
    {
        .model_type = "gpt2", .arch = NL_ARCH_GPT2, .norm = NL_NORM_LAYER, .pos = NL_POS_LEARNED, .ffn_gated = 0,
        .qkv = NL_QKV_CONCAT, .conv1d = 1,
        .k_layers = "n_layer|num_hidden_layers", .k_hidden = "n_embd|hidden_size",
        .k_heads = "n_head|num_attention_heads", .k_ff = "n_inner", .k_vocab = "vocab_size",
        .k_max_pos = "n_positions|max_position_embeddings", .k_eps = "layer_norm_epsilon",
        .k_act = "activation_function",
        .ff_mult = 4, .max_pos_def = 1024, .eps_def = 1e-5, .act_def = "gelu_new", .rotary_def = 0,
        .tie_def = 1, .bos_def = 50256, .eos_def = 50256,
        .reject = {{"scale_attn_by_inverse_layer_idx", 1}, {"scale_attn_weights", 0}},
        .strip = "transformer.", .layer_prefix = "transformer.h.{l}.",
        .global = {[G_TOK_EMB] = {"transformer.wte.weight", T_REQ}, [G_POS_EMB] = {"transformer.wpe.weight", T_REQ},
                   [G_NORM_W] = {"transformer.ln_f.weight", T_REQ}, [G_NORM_B] = {"transformer.ln_f.bias", T_REQ},
                   [G_LM_HEAD] = {"lm_head.weight", T_UNTIED}},
        .layer = {[S_LN1_W] = {"ln_1.weight", T_REQ}, [S_LN1_B] = {"ln_1.bias", T_REQ},
                  [S_LN2_W] = {"ln_2.weight", T_REQ}, [S_LN2_B] = {"ln_2.bias", T_REQ},
                  [S_WQKV] = {"attn.c_attn.weight", T_REQ}, [S_BQKV] = {"attn.c_attn.bias", T_REQ},
                  [S_WO] = {"attn.c_proj.weight", T_REQ}, [S_BO] = {"attn.c_proj.bias", T_REQ},
                  [S_W_UP] = {"mlp.c_fc.weight", T_REQ}, [S_B_UP] = {"mlp.c_fc.bias", T_REQ},
                  [S_W_DOWN] = {"mlp.c_proj.weight", T_REQ}, [S_B_DOWN] = {"mlp.c_proj.bias", T_REQ}},
    },
    {
        .model_type = "gpt_neox", .arch = NL_ARCH_GPT_NEOX, .norm = NL_NORM_LAYER, .pos = NL_POS_ROPE, .ffn_gated = 0,
        .qkv = NL_QKV_HEAD_INTERLEAVED,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_ff = "intermediate_size", .k_vocab = "vocab_size", .k_max_pos = "max_position_embeddings",
        .k_eps = "layer_norm_eps", .k_act = "hidden_act", .k_rotary = "rotary_pct|partial_rotary_factor",
        .k_theta = "rope_theta|rotary_emb_base", .k_parallel = "use_parallel_residual",
        .k_attn_bias = "attention_bias",
        .max_pos_def = 2048, .eps_def = 1e-5, .act_def = "gelu", .rotary_def = 0.25, .parallel_def = 1,
        .tie_def = 0, .attn_bias_def = 1, .bos_def = 0, .eos_def = 2,
        .strip = "gpt_neox.", .layer_prefix = "gpt_neox.layers.{l}.",
        .global = {[G_TOK_EMB] = {"gpt_neox.embed_in.weight", T_REQ},
                   [G_NORM_W] = {"gpt_neox.final_layer_norm.weight", T_REQ},
                   [G_NORM_B] = {"gpt_neox.final_layer_norm.bias", T_REQ}, [G_LM_HEAD] = {"embed_out.weight", T_UNTIED}},
        .layer = {[S_LN1_W] = {"input_layernorm.weight", T_REQ}, [S_LN1_B] = {"input_layernorm.bias", T_REQ},
                  [S_LN2_W] = {"post_attention_layernorm.weight", T_REQ},
                  [S_LN2_B] = {"post_attention_layernorm.bias", T_REQ},
                  [S_WQKV] = {"attention.query_key_value.weight", T_REQ},
                  [S_BQKV] = {"attention.query_key_value.bias", T_ATTN_BIAS},
                  [S_WO] = {"attention.dense.weight", T_REQ}, [S_BO] = {"attention.dense.bias", T_ATTN_BIAS},
                  [S_W_UP] = {"mlp.dense_h_to_4h.weight", T_REQ}, [S_B_UP] = {"mlp.dense_h_to_4h.bias", T_REQ},
                  [S_W_DOWN] = {"mlp.dense_4h_to_h.weight", T_REQ}, [S_B_DOWN] = {"mlp.dense_4h_to_h.bias", T_REQ}},
    },
    {
        .model_type = "phi", .arch = NL_ARCH_PHI, .norm = NL_NORM_LAYER, .pos = NL_POS_ROPE, .ffn_gated = 0,
        .qkv = NL_QKV_SEPARATE, .shared_norm = 1,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "layer_norm_eps", .k_act = "hidden_act",
        .k_rotary = "partial_rotary_factor", .k_theta = "rope_theta",
        .max_pos_def = 2048, .eps_def = 1e-5, .act_def = "gelu_new", .rotary_def = 0.5, .parallel_def = 1,
        .tie_def = 0, .bos_def = 1, .eos_def = 2,
        .reject = {{"qk_layernorm", 1}},
        .strip = "model.", .layer_prefix = "model.layers.{l}.",
        .global = {[G_TOK_EMB] = {"model.embed_tokens.weight", T_REQ},
                   [G_NORM_W] = {"model.final_layernorm.weight", T_REQ},
                   [G_NORM_B] = {"model.final_layernorm.bias", T_REQ}, [G_LM_HEAD] = {"lm_head.weight", T_UNTIED},
                   [G_LM_HEAD_B] = {"lm_head.bias", T_REQ}},
        .layer = {[S_LN1_W] = {"input_layernorm.weight", T_REQ}, [S_LN1_B] = {"input_layernorm.bias", T_REQ},
                  [S_WQ] = {"self_attn.q_proj.weight", T_REQ}, [S_BQ] = {"self_attn.q_proj.bias", T_REQ},
                  [S_WK] = {"self_attn.k_proj.weight", T_REQ}, [S_BK] = {"self_attn.k_proj.bias", T_REQ},
                  [S_WV] = {"self_attn.v_proj.weight", T_REQ}, [S_BV] = {"self_attn.v_proj.bias", T_REQ},
                  [S_WO] = {"self_attn.dense.weight", T_REQ}, [S_BO] = {"self_attn.dense.bias", T_REQ},
                  [S_W_UP] = {"mlp.fc1.weight", T_REQ}, [S_B_UP] = {"mlp.fc1.bias", T_REQ},
                  [S_W_DOWN] = {"mlp.fc2.weight", T_REQ}, [S_B_DOWN] = {"mlp.fc2.bias", T_REQ}},
    },
};
#define N_ARCHS ((int)(sizeof archs / sizeof archs[0]))

/* ---- loader state ------------------------------------------------------------------- */

typedef struct {
    nl_ctx *ctx;
    char dir[4000];          /* model folder without trailing '/' */
    char cfg_path[4096];     /* DIR/config.json */
    char weights_path[4096]; /* DIR/model.safetensors or DIR/model.safetensors.index.json */
    json_t *cfg;
    json_t *rope;            /* rope_scaling or rope_parameters object, or NULL (borrowed from cfg) */
    json_t *rope_params;     /* rope_parameters object, or NULL (borrowed) */
    const hf_arch *a;
    json_t *index;           /* sharded checkpoints: the index JSON */
    json_t *weight_map;      /* borrowed from index */
    nl_safetensors *shards[NL_MAX_MAPS];
    char *shard_names[NL_MAX_MAPS]; /* file names as written in the index */
    int n_shards;
    int attn_bias;
    nl_model *m;
    /* dtype agreement of the layer matrices (see check_dtypes) */
    int n_mats, n_odd;             /* layer matrices seen; those whose dtype differs from want_dt */
    int want_dt;                   /* torch_dtype of config.json, or the first matrix's dtype; -1 unset */
    char odd_name[256], odd_file[4096];
    nl_dtype odd_dt;
} hf_loader;

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- config.json fields ------------------------------------------------------------- */

/* The value of the first present, non-null key among "a|b|c"; *used gets its name (or the
 * first alternative when none is present). Returns NULL when absent or null. */
static json_t *cfg_lookup(json_t *obj, const char *keys, char *used, size_t used_cap) {
    const char *p = keys;
    used[0] = '\0';
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        char k[128];
        snprintf(k, sizeof k, "%.*s", (int)n, p);
        if (!used[0]) snprintf(used, used_cap, "%s", k);
        json_t *v = json_object_get(obj, k);
        if (v && !json_is_null(v)) {
            snprintf(used, used_cap, "%s", k);
            return v;
        }
        p += n;
        if (*p == '|') p++;
    }
    return NULL;
}

/* Integer field. keys == NULL or absent/null: def when has_def, else "missing field". */
static nl_status cfg_int(hf_loader *L, const char *keys, int has_def, int def, int *out) {
    char used[128] = "";
    json_t *v = keys ? cfg_lookup(L->cfg, keys, used, sizeof used) : NULL;
    if (!v) {
        if (!has_def)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing field '%s' (model_type %s)", L->cfg_path, used,
                             L->a->model_type);
        *out = def;
        return NL_OK;
    }
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v)) d = json_real_value(v); /* 2048.0 */
    else return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be an integer", L->cfg_path, used);
    if (!(d >= INT_MIN && d <= INT_MAX))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' is out of range (%.0f)", L->cfg_path, used, d);
    *out = (int)d;
    return NL_OK;
}

/* A dimension: a positive integer. */
static nl_status cfg_dim(hf_loader *L, const char *keys, int has_def, int def, int *out) {
    nl_status st = cfg_int(L, keys, has_def, def, out);
    if (st != NL_OK) return st;
    if (*out <= 0) {
        char used[128] = "?";
        if (keys) cfg_lookup(L->cfg, keys, used, sizeof used);
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be positive, got %d", L->cfg_path, used, *out);
    }
    return NL_OK;
}

static nl_status num_of(hf_loader *L, json_t *v, const char *what, double *out) {
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return NL_OK;
    }
    return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be a number", L->cfg_path, what);
}

static nl_status cfg_num(hf_loader *L, json_t *obj, const char *keys, int has_def, double def, double *out) {
    char used[128] = "";
    json_t *v = keys ? cfg_lookup(obj, keys, used, sizeof used) : NULL;
    if (!v) {
        if (!has_def)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing field '%s' (model_type %s)", L->cfg_path, used,
                             L->a->model_type);
        *out = def;
        return NL_OK;
    }
    return num_of(L, v, used, out);
}

static nl_status cfg_bool(hf_loader *L, const char *keys, int def, int *out) {
    char used[128] = "";
    json_t *v = keys ? cfg_lookup(L->cfg, keys, used, sizeof used) : NULL;
    if (!v) {
        *out = def;
        return NL_OK;
    }
    if (!json_is_boolean(v))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be true or false", L->cfg_path, used);
    *out = json_is_true(v);
    return NL_OK;
}

/* bos/eos: an integer, a list (the first id is used), or null (-1). */
static nl_status cfg_token(hf_loader *L, const char *key, int def, int *out) {
    json_t *v = json_object_get(L->cfg, key);
    *out = def;
    if (!v) return NL_OK;
    if (json_is_null(v)) { *out = -1; return NL_OK; }
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : json_null();
    if (json_is_null(v)) { *out = -1; return NL_OK; }
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > INT_MAX)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be a token id", L->cfg_path, key);
    *out = (int)json_integer_value(v);
    return NL_OK;
}

/* RoPE: theta, partial rotary and the scaling (rope_scaling, or transformers 5's
 * rope_parameters which also carries rope_theta and partial_rotary_factor). */
static nl_status parse_rope(hf_loader *L, nl_config *c) {
    const hf_arch *a = L->a;
    double theta, frac;
    nl_status st;
    json_t *rp = L->rope_params;
    json_t *v;
    if (rp && (v = json_object_get(rp, "rope_theta")) && !json_is_null(v)) {
        if ((st = num_of(L, v, "rope_parameters.rope_theta", &theta)) != NL_OK) return st;
    } else if ((st = cfg_num(L, L->cfg, a->k_theta, 1, 10000.0, &theta)) != NL_OK) {
        return st;
    }
    if (a->k_rotary && rp && (v = json_object_get(rp, "partial_rotary_factor")) && !json_is_null(v)) {
        if ((st = num_of(L, v, "rope_parameters.partial_rotary_factor", &frac)) != NL_OK) return st;
    } else if ((st = cfg_num(L, L->cfg, a->k_rotary, 1, a->rotary_def, &frac)) != NL_OK) {
        return st;
    }
    if (!(theta > 0))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': rope_theta must be positive, got %g", L->cfg_path, theta);
    if (!(frac > 0 && frac <= 1))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': partial rotary factor must be in (0, 1], got %g", L->cfg_path, frac);
    c->rope_theta = (float)theta;
    c->rotary_dim = (int)(c->head_dim * frac); /* HF: int(head_dim * partial_rotary_factor) */
    if (c->rotary_dim < 2 || c->rotary_dim % 2)
        return nl_errorf(L->ctx, NL_EFORMAT,
                         "'%s': partial rotary factor %g of head dimension %d rotates %d dims, which must be even and >= 2",
                         L->cfg_path, frac, c->head_dim, c->rotary_dim);

    c->rope_scaling = NL_ROPE_SCALING_NONE;
    json_t *r = L->rope;
    if (!r) return NL_OK;
    json_t *t = json_object_get(r, "rope_type");
    if (!t || json_is_null(t)) t = json_object_get(r, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (strcmp(type, "default") == 0) return NL_OK;
    double factor;
    if (strcmp(type, "linear") == 0) {
        if ((st = cfg_num(L, r, "factor", 0, 0, &factor)) != NL_OK) return st;
        c->rope_scaling = NL_ROPE_SCALING_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        double lo, hi, orig;
        if ((st = cfg_num(L, r, "factor", 0, 0, &factor)) != NL_OK ||
            (st = cfg_num(L, r, "low_freq_factor", 0, 0, &lo)) != NL_OK ||
            (st = cfg_num(L, r, "high_freq_factor", 0, 0, &hi)) != NL_OK ||
            (st = cfg_num(L, r, "original_max_position_embeddings", 0, 0, &orig)) != NL_OK)
            return st;
        if (!(lo > 0 && hi > lo && orig >= 1))
            return nl_errorf(L->ctx, NL_EFORMAT,
                             "'%s': llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
                             "original_max_position_embeddings >= 1 (got %g, %g, %g)", L->cfg_path, lo, hi, orig);
        c->rope_scaling = NL_ROPE_SCALING_LLAMA3;
        c->rope_low_freq_factor = (float)lo;
        c->rope_high_freq_factor = (float)hi;
        c->rope_orig_max_pos = (int)orig;
    } else {
        return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                         "'%s': rope scaling type '%s' is not supported (supported: default, linear, llama3)", L->cfg_path,
                         type);
    }
    if (!(factor > 0))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': rope scaling factor must be positive, got %g", L->cfg_path, factor);
    c->rope_factor = (float)factor;
    return NL_OK;
}

static nl_status parse_sliding(hf_loader *L, nl_config *c) {
    nl_status st;
    int w, on;
    c->sliding_window = 0;
    if (L->a->sliding == SW_NONE) return NL_OK;
    if (L->a->sliding == SW_QWEN2) {
        if ((st = cfg_bool(L, "use_sliding_window", 0, &on)) != NL_OK) return st;
        if (!on) return NL_OK;
    }
    json_t *v = json_object_get(L->cfg, "sliding_window");
    if (v && json_is_null(v)) return NL_OK; /* null: full attention */
    if ((st = cfg_int(L, "sliding_window", 1, 4096, &w)) != NL_OK) return st;
    if (w < 0) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field 'sliding_window' must be >= 0, got %d", L->cfg_path, w);
    if (L->a->sliding == SW_MISTRAL) {
        c->sliding_window = w;
        return NL_OK;
    }
    /* Qwen2 with use_sliding_window: only layers >= max_window_layers slide (or as
     * layer_types lists); one window for the whole model is all nl_config holds. */
    int n_slide = 0;
    json_t *lt = json_object_get(L->cfg, "layer_types");
    if (json_is_array(lt)) {
        size_t i;
        json_t *e;
        json_array_foreach(lt, i, e) if (json_is_string(e) && strcmp(json_string_value(e), "sliding_attention") == 0)
            n_slide++;
    } else {
        int mwl;
        if ((st = cfg_int(L, "max_window_layers", 1, 28, &mwl)) != NL_OK) return st;
        n_slide = mwl >= c->n_layers ? 0 : c->n_layers - (mwl < 0 ? 0 : mwl);
    }
    if (n_slide == 0) return NL_OK;
    if (n_slide != c->n_layers)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                         "'%s': sliding-window attention in %d of %d layers is not supported (only all or none)",
                         L->cfg_path, n_slide, c->n_layers);
    c->sliding_window = w;
    return NL_OK;
}

static nl_status parse_config(hf_loader *L) {
    const hf_arch *a = L->a;
    nl_config *c = &L->m->cfg;
    nl_status st;
    c->arch = a->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", a->model_type);
    c->norm = a->norm;
    c->pos = a->pos;
    c->ffn_gated = a->ffn_gated;
    c->shared_norm = a->shared_norm;
    c->rope_interleaved = 0; /* HF rotate_half */

    for (int i = 0; i < 3 && a->reject[i].key; i++) {
        json_t *v = json_object_get(L->cfg, a->reject[i].key);
        if (json_is_boolean(v) && json_is_true(v) == a->reject[i].bad)
            return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': %s = %s is not supported (model_type %s)", L->cfg_path,
                             a->reject[i].key, a->reject[i].bad ? "true" : "false", a->model_type);
    }

    if ((st = cfg_dim(L, a->k_layers, 0, 0, &c->n_layers)) != NL_OK) return st;
    if ((st = cfg_dim(L, a->k_hidden, 0, 0, &c->d_model)) != NL_OK) return st;
    if ((st = cfg_dim(L, a->k_heads, 0, 0, &c->n_heads)) != NL_OK) return st;
    if ((st = cfg_dim(L, a->k_vocab, 0, 0, &c->vocab_size)) != NL_OK) return st;
    if (a->ff_mult) {
        if ((long long)a->ff_mult * c->d_model > INT_MAX)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': d_model %d is too large", L->cfg_path, c->d_model);
        st = cfg_dim(L, a->k_ff, 1, a->ff_mult * c->d_model, &c->d_ff);
    } else {
        st = cfg_dim(L, a->k_ff, 0, 0, &c->d_ff);
    }
    if (st != NL_OK) return st;
    if ((st = cfg_dim(L, a->k_kv_heads, 1, a->kv_heads_def ? a->kv_heads_def : c->n_heads, &c->n_kv_heads)) != NL_OK)
        return st;
    /* HF treats an explicit null as "same as the query heads". */
    if (a->k_kv_heads && json_is_null(json_object_get(L->cfg, a->k_kv_heads))) c->n_kv_heads = c->n_heads;
    if (a->k_head_dim && cfg_lookup(L->cfg, a->k_head_dim, (char[128]){0}, 128)) {
        if ((st = cfg_dim(L, a->k_head_dim, 0, 0, &c->head_dim)) != NL_OK) return st;
    } else {
        char kh[128], kn[128];
        cfg_lookup(L->cfg, a->k_hidden, kh, sizeof kh);
        cfg_lookup(L->cfg, a->k_heads, kn, sizeof kn);
        if (c->d_model % c->n_heads)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': %s %d is not divisible by %s %d", L->cfg_path, kh, c->d_model,
                             kn, c->n_heads);
        c->head_dim = c->d_model / c->n_heads;
    }
    if (c->n_heads % c->n_kv_heads) {
        char kn[128], kk[128] = "key/value heads";
        cfg_lookup(L->cfg, a->k_heads, kn, sizeof kn);
        if (a->k_kv_heads) cfg_lookup(L->cfg, a->k_kv_heads, kk, sizeof kk);
        int absent = !a->k_kv_heads || !json_object_get(L->cfg, a->k_kv_heads);
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': %s %d is not a multiple of %s %d%s", L->cfg_path, kn, c->n_heads, kk,
                         c->n_kv_heads, absent ? " (the HF default when the field is absent)" : "");
    }
    if ((st = cfg_dim(L, a->k_max_pos, 1, a->max_pos_def, &c->max_pos)) != NL_OK) return st;

    double eps;
    if ((st = cfg_num(L, L->cfg, a->k_eps, 1, a->eps_def, &eps)) != NL_OK) return st;
    if (!(eps >= 0)) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': norm epsilon must be >= 0, got %g", L->cfg_path, eps);
    c->norm_eps = (float)eps;

    const char *act = a->act_def;
    char used[128];
    json_t *v = cfg_lookup(L->cfg, a->k_act, used, sizeof used);
    if (v) {
        if (!json_is_string(v))
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be a string", L->cfg_path, used);
        act = json_string_value(v);
    }
    int ai = nl_act_parse(act);
    if (ai < 0)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                         "'%s': %s '%s' is not supported (supported: silu, swish, gelu, gelu_new, gelu_pytorch_tanh, "
                         "gelu_fast, relu, relu2)", L->cfg_path, used, act);
    c->act = (nl_act)ai;

    json_t *rs = json_object_get(L->cfg, "rope_scaling"), *rp = json_object_get(L->cfg, "rope_parameters");
    if (rs && !json_is_null(rs) && !json_is_object(rs))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field 'rope_scaling' must be an object or null", L->cfg_path);
    if (rp && !json_is_null(rp) && !json_is_object(rp))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field 'rope_parameters' must be an object or null", L->cfg_path);
    L->rope_params = json_is_object(rp) ? rp : NULL;
    L->rope = json_is_object(rs) ? rs : L->rope_params;
    if (c->pos == NL_POS_ROPE) {
        if ((st = parse_rope(L, c)) != NL_OK) return st;
    } else {
        c->rope_theta = 0;
        c->rotary_dim = 0;
    }

    if ((st = cfg_bool(L, a->k_parallel, a->parallel_def, &c->parallel_residual)) != NL_OK) return st;
    if ((st = cfg_bool(L, "tie_word_embeddings", a->tie_def, &c->tie_embeddings)) != NL_OK) return st;
    if ((st = cfg_bool(L, a->k_attn_bias, a->attn_bias_def, &L->attn_bias)) != NL_OK) return st;
    if ((st = parse_sliding(L, c)) != NL_OK) return st;
    if ((st = cfg_token(L, "bos_token_id", a->bos_def, &c->bos_id)) != NL_OK) return st;
    if ((st = cfg_token(L, "eos_token_id", a->eos_def, &c->eos_id)) != NL_OK) return st;
    L->m->qkv_layout = a->qkv;
    L->m->conv1d = a->conv1d;
    return NL_OK;
}

/* ---- weights ------------------------------------------------------------------------ */

static nl_status add_shard(hf_loader *L, const char *file, const char *named_by) {
    char path[4096 + 256];
    if (L->n_shards >= NL_MAX_MAPS - 1)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': more than %d shards", L->weights_path, NL_MAX_MAPS - 1);
    snprintf(path, sizeof path, "%s/%s", L->dir, file);
    if (named_by) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return nl_errorf(L->ctx, NL_EIO, "cannot open shard '%s' named by '%s': %s", path, named_by,
                             strerror(errno));
    }
    const void *base;
    size_t size;
    nl_status st = nl_model_map(L->ctx, L->m, path, &base, &size);
    if (st != NL_OK) return st;
    if ((st = nl_safetensors_open(L->ctx, path, base, size, &L->shards[L->n_shards])) != NL_OK) return st;
    if (!(L->shard_names[L->n_shards] = strdup(file))) {
        nl_safetensors_close(L->shards[L->n_shards]);
        return nl_errorf(L->ctx, NL_ENOMEM, "cannot open '%s': out of memory", path);
    }
    L->n_shards++;
    return NL_OK;
}

static nl_status open_weights(hf_loader *L) {
    snprintf(L->weights_path, sizeof L->weights_path, "%s/model.safetensors", L->dir);
    if (file_exists(L->weights_path)) return add_shard(L, "model.safetensors", NULL);
    snprintf(L->weights_path, sizeof L->weights_path, "%s/model.safetensors.index.json", L->dir);
    if (!file_exists(L->weights_path)) {
        char bin[4096 + 64];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", L->dir);
        int has_bin = file_exists(bin);
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin.index.json", L->dir);
        has_bin |= file_exists(bin);
        if (has_bin)
            return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                             "cannot open '%s': PyTorch .bin weights are not supported, only safetensors (convert the "
                             "folder, e.g. with save_pretrained(..., safe_serialization=True))", L->dir);
        return nl_errorf(L->ctx, NL_EIO, "cannot open '%s': no model.safetensors or model.safetensors.index.json",
                         L->dir);
    }
    json_error_t jerr;
    L->index = json_load_file(L->weights_path, 0, &jerr);
    if (!L->index)
        return nl_errorf(L->ctx, NL_EFORMAT, "cannot read '%s': not valid JSON (%s, line %d column %d)",
                         L->weights_path, jerr.text, jerr.line, jerr.column);
    L->weight_map = json_is_object(L->index) ? json_object_get(L->index, "weight_map") : NULL;
    if (!json_is_object(L->weight_map))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing object 'weight_map'", L->weights_path);
    const char *key;
    json_t *val;
    json_object_foreach(L->weight_map, key, val) {
        if (!json_is_string(val) || !json_string_length(val))
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': weight_map entry '%s' is not a file name", L->weights_path, key);
        const char *f = json_string_value(val);
        if (f[0] == '/' || strstr(f, "..") || strlen(f) > 255)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': shard name '%s' is not a file inside the model folder",
                             L->weights_path, f);
        int seen = 0;
        for (int i = 0; i < L->n_shards && !seen; i++) seen = strcmp(L->shard_names[i], f) == 0;
        if (seen) continue;
        nl_status st = add_shard(L, f, L->weights_path);
        if (st != NL_OK) return st;
    }
    if (L->n_shards == 0) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': weight_map is empty", L->weights_path);
    return NL_OK;
}

/* Finds `name` (or, failing that, name without a->strip). *shard is its reader. */
static const nl_st_entry *find1(hf_loader *L, const char *name, const nl_safetensors **shard) {
    if (L->weight_map) {
        json_t *f = json_object_get(L->weight_map, name);
        if (f)
            for (int i = 0; i < L->n_shards; i++)
                if (strcmp(L->shard_names[i], json_string_value(f)) == 0) {
                    const nl_st_entry *e = nl_safetensors_find(L->shards[i], name);
                    if (e) {
                        *shard = L->shards[i];
                        return e;
                    }
                }
    }
    for (int i = 0; i < L->n_shards; i++) { /* single file, or a tensor the index misplaced */
        const nl_st_entry *e = nl_safetensors_find(L->shards[i], name);
        if (e) {
            *shard = L->shards[i];
            return e;
        }
    }
    return NULL;
}

static const nl_st_entry *find(hf_loader *L, const char *name, const nl_safetensors **shard) {
    const nl_st_entry *e = find1(L, name, shard);
    size_t n = strlen(L->a->strip);
    if (!e && strncmp(name, L->a->strip, n) == 0) e = find1(L, name + n, shard);
    return e;
}

static int64_t dim_value(const nl_config *c, dim_sym d) {
    const int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    switch (d) {
    case DIM_D: return c->d_model;
    case DIM_F: return c->d_ff;
    case DIM_V: return c->vocab_size;
    case DIM_Q: return Q;
    case DIM_KV: return KV;
    case DIM_QKV: return Q + 2 * KV;
    case DIM_P: return c->max_pos;
    case DIM_NONE: break;
    }
    return -1;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k + 24 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(buf + k, cap - k, "]");
}

/* Loads one named tensor into *dst, checking dtype and shape. in_layer: a layer matrix
 * (stored (in, out) when the architecture uses Conv1D; embeddings never are). */
static nl_status load_tensor(hf_loader *L, const char *name, tflag flag, const slot_def *sd, int in_layer,
                             nl_tensor *dst) {
    const nl_config *c = &L->m->cfg;
    switch (flag) {
    case T_UNTIED: if (c->tie_embeddings) return NL_OK; break;
    case T_ATTN_BIAS: if (!L->attn_bias) return NL_OK; break;
    default: break;
    }
    const nl_safetensors *shard = NULL;
    const nl_st_entry *e = find(L, name, &shard);
    if (!e) {
        if (flag == T_OPT) return NL_OK;
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing tensor '%s' (model_type %s)", L->weights_path, name,
                         L->a->model_type);
    }
    nl_status st = nl_safetensors_view(L->ctx, shard, e, dst);
    if (st != NL_OK) return st;
    int64_t want[2] = {dim_value(c, sd->d0), dim_value(c, sd->d1)};
    int nd = sd->d1 == DIM_NONE ? 1 : 2;
    if (nd == 2 && in_layer && L->m->conv1d) {
        int64_t t = want[0];
        want[0] = want[1];
        want[1] = t;
    }
    if (nd == 2 && in_layer) {
        if (L->want_dt < 0) L->want_dt = (int)dst->dtype;
        L->n_mats++;
        if ((int)dst->dtype != L->want_dt && L->n_odd++ == 0) {
            snprintf(L->odd_name, sizeof L->odd_name, "%s", e->name);
            snprintf(L->odd_file, sizeof L->odd_file, "%s", nl_safetensors_path(shard));
            L->odd_dt = dst->dtype;
        }
    }
    if (dst->ndim != nd || dst->shape[0] != want[0] || (nd == 2 && dst->shape[1] != want[1])) {
        char got[96], exp[96];
        fmt_shape(got, sizeof got, dst->ndim, dst->shape);
        fmt_shape(exp, sizeof exp, nd, want);
        memset(dst, 0, sizeof *dst);
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' has shape %s, config.json implies %s",
                         nl_safetensors_path(shard), e->name, got, exp);
    }
    return NL_OK;
}

static nl_status load_tensors(hf_loader *L) {
    const hf_arch *a = L->a;
    nl_model *m = L->m;
    nl_status st;
    if (a->pos == NL_POS_LEARNED && !a->global[G_POS_EMB].name)
        NL_ASSERT(!"learned positions need a position-embedding tensor name");
    for (int g = 0; g < G_COUNT; g++) {
        if (!a->global[g].name) continue;
        nl_tensor *dst = (nl_tensor *)((char *)m + global_slots[g].off);
        if ((st = load_tensor(L, a->global[g].name, a->global[g].flag, &global_slots[g], 0, dst)) != NL_OK) return st;
    }
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) return nl_errorf(L->ctx, NL_ENOMEM, "cannot open '%s': out of memory", L->dir);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        char prefix[128], name[512];
        const char *at = strstr(a->layer_prefix, "{l}");
        NL_ASSERT(at);
        snprintf(prefix, sizeof prefix, "%.*s%d%s", (int)(at - a->layer_prefix), a->layer_prefix, l, at + 3);
        for (int s = 0; s < S_COUNT; s++) {
            if (!a->layer[s].name) continue;
            snprintf(name, sizeof name, "%s%s", prefix, a->layer[s].name);
            nl_tensor *dst = (nl_tensor *)((char *)&m->layers[l] + layer_slots[s].off);
            if ((st = load_tensor(L, name, a->layer[s].flag, &layer_slots[s], 1, dst)) != NL_OK) return st;
        }
    }
    return NL_OK;
}

/* The layer matrices must share config.json's torch_dtype. A checkpoint whose matrices all
 * share one other dtype is only mislabelled and loads (the file is self-consistent); a
 * mix is refused, naming the first matrix that disagrees. */
static int dtype_of_torch(const char *s) {
    if (!strcmp(s, "float32")) return NL_DT_F32;
    if (!strcmp(s, "float16")) return NL_DT_F16;
    if (!strcmp(s, "bfloat16")) return NL_DT_BF16;
    return -1;
}

static nl_status check_dtypes(hf_loader *L) {
    if (L->n_odd == 0 || L->n_odd == L->n_mats) return NL_OK;
    json_t *td = json_object_get(L->cfg, "torch_dtype");
    const char *tds = json_is_string(td) ? json_string_value(td) : NULL;
    if (tds && dtype_of_torch(tds) >= 0)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' is %s, but config.json says torch_dtype %s like the other %d matrices",
                         L->odd_file, L->odd_name, nl_dtype_name(L->odd_dt), tds, L->n_mats - L->n_odd);
    return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' is %s, unlike the other layer matrices (%s)", L->odd_file,
                     L->odd_name, nl_dtype_name(L->odd_dt), nl_dtype_name((nl_dtype)L->want_dt));
}

/* Copies tensors whose data is not aligned to their element size into one aligned
 * anonymous mapping registered in m->maps (released by nl_model_close). */
static nl_status realign(hf_loader *L) {
    nl_model *m = L->m;
    const int per = G_COUNT + m->cfg.n_layers * S_COUNT;
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *dst = NULL;
        if (pass == 1) {
            if (total == 0) return NL_OK;
            if (m->n_maps >= NL_MAX_MAPS)
                return nl_errorf(L->ctx, NL_EUNSUPPORTED, "cannot open '%s': too many files", L->dir);
            void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return nl_errorf(L->ctx, NL_ENOMEM, "cannot open '%s': out of memory aligning %zu bytes of tensors",
                                 L->dir, total);
            m->maps[m->n_maps].base = p;
            m->maps[m->n_maps].size = total;
            m->n_maps++;
            dst = p;
        }
        for (int i = 0; i < per; i++) {
            nl_tensor *t = i < G_COUNT ? (nl_tensor *)((char *)m + global_slots[i].off)
                                       : (nl_tensor *)((char *)&m->layers[(i - G_COUNT) / S_COUNT] +
                                                       layer_slots[(i - G_COUNT) % S_COUNT].off);
            size_t es = nl_dtype_size(t->dtype);
            if (!t->data || (uintptr_t)t->data % es == 0) continue;
            size_t nb = (size_t)nl_tensor_numel(t) * es, padded = (nb + 63) & ~(size_t)63;
            if (pass == 0) {
                total += padded;
            } else {
                memcpy(dst, t->data, nb);
                t->data = dst;
                dst += padded;
            }
        }
    }
    return NL_OK;
}

/* ---- entry point -------------------------------------------------------------------- */

static nl_status read_config(hf_loader *L) {
    FILE *f = fopen(L->cfg_path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return nl_errorf(L->ctx, NL_EIO, "cannot open '%s': no such file (a Hugging Face model folder needs config.json)",
                             L->cfg_path);
        return nl_errorf(L->ctx, NL_EIO, "cannot open '%s': %s", L->cfg_path, strerror(errno));
    }
    json_error_t jerr;
    L->cfg = json_loadf(f, 0, &jerr);
    fclose(f);
    if (!L->cfg)
        return nl_errorf(L->ctx, NL_EFORMAT, "cannot read '%s': not valid JSON (%s, line %d column %d)", L->cfg_path,
                         jerr.text, jerr.line, jerr.column);
    if (!json_is_object(L->cfg))
        return nl_errorf(L->ctx, NL_EFORMAT, "cannot read '%s': not a JSON object", L->cfg_path);
    json_t *mt = json_object_get(L->cfg, "model_type");
    if (!mt) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing field 'model_type'", L->cfg_path);
    if (!json_is_string(mt)) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field 'model_type' must be a string", L->cfg_path);
    for (int i = 0; i < N_ARCHS; i++)
        if (strcmp(json_string_value(mt), archs[i].model_type) == 0) L->a = &archs[i];
    if (!L->a) {
        char list[256];
        size_t k = 0;
        list[0] = '\0';
        for (int i = 0; i < N_ARCHS && k < sizeof list; i++)
            k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", archs[i].model_type);
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': unknown model_type '%s' (supported: %s)", L->cfg_path,
                         json_string_value(mt), list);
    }
    return NL_OK;
}

nl_status nl_hf_open(nl_ctx *ctx, const char *dir, nl_model **out) {
    *out = NULL;
    hf_loader *L = calloc(1, sizeof *L);
    if (!L) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", dir);
    L->ctx = ctx;
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    nl_status st = NL_OK;
    if (n >= sizeof L->dir) {
        st = nl_errorf(ctx, NL_EINVAL, "cannot open '%s': path too long", dir);
        goto done;
    }
    snprintf(L->dir, sizeof L->dir, "%.*s", (int)n, dir);
    snprintf(L->cfg_path, sizeof L->cfg_path, "%s/config.json", L->dir);
    if (!(L->m = nl_model_alloc(L->dir))) {
        st = nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", dir);
        goto done;
    }
    if ((st = read_config(L)) != NL_OK) goto done;
    if ((st = parse_config(L)) != NL_OK) goto done;
    if ((st = open_weights(L)) != NL_OK) goto done;
    json_t *td = json_object_get(L->cfg, "torch_dtype");
    L->want_dt = json_is_string(td) ? dtype_of_torch(json_string_value(td)) : -1;
    if ((st = load_tensors(L)) != NL_OK) goto done;
    if ((st = check_dtypes(L)) != NL_OK) goto done;
    if ((st = realign(L)) != NL_OK) goto done;
    st = nl_model_validate(ctx, L->m, L->weights_path);
done:
    for (int i = 0; i < L->n_shards; i++) {
        nl_safetensors_close(L->shards[i]);
        free(L->shard_names[i]);
    }
    json_decref(L->index);
    json_decref(L->cfg);
    if (st == NL_OK) *out = L->m;
    else nl_model_close(L->m);
    free(L);
    return st;
}
