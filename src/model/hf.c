/* hf.c — loader for Hugging Face model folders: reads config.json into nl_config and
 * resolves the architecture's Hugging Face tensor names (arch.c) through the safetensors
 * tensor source (st_source.c: model.safetensors, or model.safetensors.index.json and the
 * shards it names).
 *
 * What is Hugging Face-specific lives in one table, `hf_configs` below: one row per
 * model_type, holding the config.json field names and the HF config-class defaults used
 * when a field is absent. What the architecture is (norm, positions, FFN kind, block wiring,
 * activation and tying defaults) and its tensor names come from the architecture table
 * (src/model/arch.c). Supporting a new architecture is a row here and one there; the code
 * below the table is generic.
 *
 * Rules: config values follow the HF config class of the model_type (its defaults for
 * absent fields, null = the HF "None" behaviour); the core dimensions (layers, width,
 * heads, FFN width, vocabulary) must be present. Every tensor the name table names is looked
 * up, its dtype must be F32/F16/BF16 and its shape must match what config.json implies; the
 * messages name the checkpoint tensor and the file. Tensors the table does not name
 * (attention masks, rotary caches …) are ignored, as HF does. Tensors that the format
 * left unaligned for their dtype are copied into an aligned anonymous mapping owned by
 * the model (nl_model_realign), so model.c may use every view as a typed array.
 * Checked by tests/test_hf.c, tests/test_model.c and the PyTorch fixtures in tests/fixtures/hf.
 */
#include "model/arch.h"
#include "model/model_internal.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SW_NONE = 0, SW_MISTRAL, SW_QWEN2 } sw_kind;

/* One model_type's config.json. Config keys: "a|b" means the first of a, b present wins
 * (HF attribute_map aliases); NULL means the field is not read (the default applies). */
typedef struct {
    const char *model_type;
    nl_arch arch;    /* the architecture row (structure, tensor names) */

    const char *k_layers, *k_hidden, *k_heads, *k_kv_heads, *k_ff, *k_vocab, *k_max_pos, *k_eps, *k_act;
    const char *k_head_dim, *k_rotary, *k_theta, *k_parallel, *k_attn_bias;

    int kv_heads_def;   /* used when k_kv_heads is absent; 0 = n_heads (also for null) */
    int ff_mult;        /* d_ff = ff_mult · d_model when k_ff is absent or null; 0 = k_ff required */
    int max_pos_def;
    double eps_def;
    int bos_def, eos_def;
    sw_kind sliding;
    struct { const char *key; int bad; } reject[3]; /* boolean fields whose value `bad` we cannot run */
    int head_dim_def;   /* head_dim when k_head_dim is absent; 0 = hidden / heads */
    int qk_norm;        /* per-head q/k RMSNorm (Qwen3) */

    /* Mixture of experts: k_experts == NULL for dense model types. k_d_shared/k_norm_topk/
     * k_sparse_step/k_mlp_only NULL: the default below always applies. */
    const char *k_experts, *k_topk, *k_d_expert, *k_d_shared, *k_norm_topk, *k_sparse_step, *k_mlp_only;
    int experts_def, topk_def, d_expert_def, d_shared_def, norm_topk_def;
} hf_arch;

static const hf_arch hf_configs[] = {
    {
        .model_type = "llama", .arch = NL_ARCH_LLAMA,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta", .k_attn_bias = "attention_bias",
        .max_pos_def = 2048, .eps_def = 1e-6, .bos_def = 1, .eos_def = 2,
        .reject = {{"mlp_bias", 1}},
    },
    {
        .model_type = "mistral", .arch = NL_ARCH_MISTRAL,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta",
        .kv_heads_def = 8, .max_pos_def = 4096 * 32, .eps_def = 1e-6, .bos_def = 1, .eos_def = 2,
        .sliding = SW_MISTRAL,
    },
    {
        .model_type = "qwen2", .arch = NL_ARCH_QWEN2,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta",
        .kv_heads_def = 32, .max_pos_def = 32768, .eps_def = 1e-6, .bos_def = -1, .eos_def = -1,
        .sliding = SW_QWEN2,
    },
    {
        .model_type = "gpt2", .arch = NL_ARCH_GPT2,
        .k_layers = "n_layer|num_hidden_layers", .k_hidden = "n_embd|hidden_size",
        .k_heads = "n_head|num_attention_heads", .k_ff = "n_inner", .k_vocab = "vocab_size",
        .k_max_pos = "n_positions|max_position_embeddings", .k_eps = "layer_norm_epsilon",
        .k_act = "activation_function",
        .ff_mult = 4, .max_pos_def = 1024, .eps_def = 1e-5, .bos_def = 50256, .eos_def = 50256,
        .reject = {{"scale_attn_by_inverse_layer_idx", 1}, {"scale_attn_weights", 0}},
    },
    {
        .model_type = "gpt_neox", .arch = NL_ARCH_GPT_NEOX,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_ff = "intermediate_size", .k_vocab = "vocab_size", .k_max_pos = "max_position_embeddings",
        .k_eps = "layer_norm_eps", .k_act = "hidden_act", .k_rotary = "rotary_pct|partial_rotary_factor",
        .k_theta = "rope_theta|rotary_emb_base", .k_parallel = "use_parallel_residual",
        .k_attn_bias = "attention_bias",
        .max_pos_def = 2048, .eps_def = 1e-5, .bos_def = 0, .eos_def = 2,
    },
    {
        .model_type = "phi", .arch = NL_ARCH_PHI,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "layer_norm_eps", .k_act = "hidden_act",
        .k_rotary = "partial_rotary_factor", .k_theta = "rope_theta",
        .max_pos_def = 2048, .eps_def = 1e-5, .bos_def = 1, .eos_def = 2,
        .reject = {{"qk_layernorm", 1}},
    },
    {
        .model_type = "qwen3", .arch = NL_ARCH_QWEN3,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta", .k_attn_bias = "attention_bias",
        .kv_heads_def = 32, .max_pos_def = 32768, .eps_def = 1e-6, .bos_def = -1, .eos_def = -1,
        .sliding = SW_QWEN2, .head_dim_def = 128, .qk_norm = 1,
    },
    {
        .model_type = "mixtral", .arch = NL_ARCH_MIXTRAL,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta",
        .kv_heads_def = 8, .max_pos_def = 4096 * 32, .eps_def = 1e-5, .bos_def = 1, .eos_def = 2,
        .sliding = SW_MISTRAL,
        .k_experts = "num_local_experts", .k_topk = "num_experts_per_tok", .k_d_expert = "intermediate_size",
        .experts_def = 8, .topk_def = 2, .norm_topk_def = 1, /* Mixtral always renormalises */
    },
    {
        .model_type = "qwen2_moe", .arch = NL_ARCH_QWEN2_MOE,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta", .k_attn_bias = "qkv_bias",
        .kv_heads_def = 16, .max_pos_def = 32768, .eps_def = 1e-6, .bos_def = -1, .eos_def = -1,
        .sliding = SW_QWEN2,
        .k_experts = "num_experts", .k_topk = "num_experts_per_tok", .k_d_expert = "moe_intermediate_size",
        .k_d_shared = "shared_expert_intermediate_size", .k_norm_topk = "norm_topk_prob",
        .k_sparse_step = "decoder_sparse_step", .k_mlp_only = "mlp_only_layers",
        .experts_def = 60, .topk_def = 4, .d_expert_def = 1408, .d_shared_def = 5632,
    },
    {
        .model_type = "qwen3_moe", .arch = NL_ARCH_QWEN3_MOE,
        .k_layers = "num_hidden_layers", .k_hidden = "hidden_size", .k_heads = "num_attention_heads",
        .k_kv_heads = "num_key_value_heads", .k_ff = "intermediate_size", .k_vocab = "vocab_size",
        .k_max_pos = "max_position_embeddings", .k_eps = "rms_norm_eps", .k_act = "hidden_act",
        .k_head_dim = "head_dim", .k_theta = "rope_theta", .k_attn_bias = "attention_bias",
        .kv_heads_def = 4, .max_pos_def = 32768, .eps_def = 1e-6, .bos_def = -1, .eos_def = -1,
        .sliding = SW_QWEN2, .qk_norm = 1,
        .k_experts = "num_experts", .k_topk = "num_experts_per_tok", .k_d_expert = "moe_intermediate_size",
        .k_norm_topk = "norm_topk_prob", .k_sparse_step = "decoder_sparse_step", .k_mlp_only = "mlp_only_layers",
        .experts_def = 128, .topk_def = 8, .d_expert_def = 768,
    },
};
#define N_ARCHS ((int)(sizeof hf_configs / sizeof hf_configs[0]))

/* ---- loader state ------------------------------------------------------------------- */

typedef struct {
    nl_ctx *ctx;
    char dir[4000];          /* model folder without trailing '/' */
    char cfg_path[4096];     /* DIR/config.json */
    json_t *cfg;
    json_t *rope;            /* rope_scaling or rope_parameters object, or NULL (borrowed from cfg) */
    json_t *rope_params;     /* rope_parameters object, or NULL (borrowed) */
    const hf_arch *a;
    const nl_arch_desc *d;   /* the architecture of a->arch */
    nl_tensor_source *src;   /* the safetensors files, owned */
    int attn_bias;
    nl_model *m;
} hf_loader;

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

/* Number field; *used_out (may be NULL) gets the key read, or the first alternative. */
static nl_status cfg_num_key(hf_loader *L, json_t *obj, const char *keys, int has_def, double def, double *out,
                             char *used_out) {
    char used[128] = "";
    json_t *v = keys ? cfg_lookup(obj, keys, used, sizeof used) : NULL;
    if (used_out) snprintf(used_out, 128, "%s", used[0] ? used : (keys ? keys : "?"));
    if (!v) {
        if (!has_def)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': missing field '%s' (model_type %s)", L->cfg_path, used,
                             L->a->model_type);
        *out = def;
        return NL_OK;
    }
    return num_of(L, v, used, out);
}

static nl_status cfg_num(hf_loader *L, json_t *obj, const char *keys, int has_def, double def, double *out) {
    return cfg_num_key(L, obj, keys, has_def, def, out, NULL);
}

/* v as the single-precision float the model computes with: finite, and not 0 when v is not
 * 0. positive: v > 0, and the float is a normal number (≥ FLT_MIN), so its reciprocal is
 * finite too (RoPE divides by theta's powers). `field` names the config.json key. */
static nl_status as_float(hf_loader *L, const char *field, double v, int positive, float *out) {
    const float f = (float)v;
    if (positive && !(v > 0))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be positive, got %g", L->cfg_path, field, v);
    if (!isfinite(f))
        return nl_errorf(L->ctx, NL_EFORMAT,
                         "'%s': field '%s' is %g, beyond the largest single-precision float (%g) the model computes with",
                         L->cfg_path, field, v, (double)FLT_MAX);
    if (v != 0 && (f == 0 || (positive && !(f >= FLT_MIN))))
        return nl_errorf(L->ctx, NL_EFORMAT,
                         "'%s': field '%s' is %g, which becomes %s as the single-precision float the model computes with",
                         L->cfg_path, field, v, f == 0 ? "0" : "a denormal number");
    *out = f;
    return NL_OK;
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
    char theta_key[128] = "rope_parameters.rope_theta";
    if (rp && (v = json_object_get(rp, "rope_theta")) && !json_is_null(v)) {
        if ((st = num_of(L, v, "rope_parameters.rope_theta", &theta)) != NL_OK) return st;
    } else if ((st = cfg_num_key(L, L->cfg, a->k_theta, 1, 10000.0, &theta, theta_key)) != NL_OK) {
        return st;
    }
    if (a->k_rotary && rp && (v = json_object_get(rp, "partial_rotary_factor")) && !json_is_null(v)) {
        if ((st = num_of(L, v, "rope_parameters.partial_rotary_factor", &frac)) != NL_OK) return st;
    } else if ((st = cfg_num(L, L->cfg, a->k_rotary, 1, L->d->rotary_def, &frac)) != NL_OK) {
        return st;
    }
    if (!(theta > 0))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': rope_theta must be positive, got %g", L->cfg_path, theta);
    if (!(frac > 0 && frac <= 1))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': partial rotary factor must be in (0, 1], got %g", L->cfg_path, frac);
    if ((st = as_float(L, theta_key, theta, 1, &c->rope_theta)) != NL_OK) return st;
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
    const char *obj = json_is_object(json_object_get(L->cfg, "rope_scaling")) ? "rope_scaling" : "rope_parameters";
    char k_factor[64], k_lo[64], k_hi[64];
    snprintf(k_factor, sizeof k_factor, "%s.factor", obj);
    snprintf(k_lo, sizeof k_lo, "%s.low_freq_factor", obj);
    snprintf(k_hi, sizeof k_hi, "%s.high_freq_factor", obj);
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
        if (!(lo > 0 && hi > lo && orig >= 1 && orig <= INT_MAX))
            return nl_errorf(L->ctx, NL_EFORMAT,
                             "'%s': llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
                             "original_max_position_embeddings in [1, %d] (got %g, %g, %g)", L->cfg_path,
                             INT_MAX, lo, hi, orig);
        if ((st = as_float(L, k_lo, lo, 1, &c->rope_low_freq_factor)) != NL_OK ||
            (st = as_float(L, k_hi, hi, 1, &c->rope_high_freq_factor)) != NL_OK)
            return st;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor)) /* their difference divides */
            return nl_errorf(L->ctx, NL_EFORMAT,
                             "'%s': llama3 rope scaling low_freq_factor %g and high_freq_factor %g are equal as "
                             "single-precision floats", L->cfg_path, lo, hi);
        c->rope_scaling = NL_ROPE_SCALING_LLAMA3;
        c->rope_orig_max_pos = (int)orig;
    } else {
        return nl_errorf(L->ctx, NL_EUNSUPPORTED,
                         "'%s': rope scaling type '%s' is not supported (supported: default, linear, llama3)", L->cfg_path,
                         type);
    }
    if (!(factor > 0))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': rope scaling factor must be positive, got %g", L->cfg_path, factor);
    return as_float(L, k_factor, factor, 1, &c->rope_factor);
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

/* Router options of other MoE families (DeepSeek, …) that change the routing rule: a
 * config that sets one to anything but the value these model types compute is refused. */
static nl_status check_router_options(hf_loader *L) {
    static const struct { const char *key, *want; } strs[] = {{"scoring_func", "softmax"}, {"topk_method", "greedy"}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        json_t *v = json_object_get(L->cfg, strs[i].key);
        if (!v || json_is_null(v)) continue;
        if (!json_is_string(v) || strcmp(json_string_value(v), strs[i].want) != 0)
            return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': router option %s = %s%s%s is not supported (model_type %s "
                             "routes by %s)", L->cfg_path, strs[i].key, json_is_string(v) ? "'" : "",
                             json_is_string(v) ? json_string_value(v) : "a non-string", json_is_string(v) ? "'" : "",
                             L->a->model_type, strs[i].want);
    }
    static const struct { const char *key; double want; } nums[] = {
        {"routed_scaling_factor", 1.0}, {"n_group", 1.0}, {"topk_group", 1.0}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        json_t *v = json_object_get(L->cfg, nums[i].key);
        if (!v || json_is_null(v)) continue;
        if (!json_is_number(v) || json_number_value(v) != nums[i].want)
            return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': router option %s = %s is not supported (model_type %s "
                             "needs %g or no such field)", L->cfg_path, nums[i].key,
                             json_is_number(v) ? "a value other than 1" : "a non-number", L->a->model_type, nums[i].want);
    }
    return NL_OK;
}

/* The mixture-of-experts fields (DESIGN §10): experts, top-k, widths, renormalisation,
 * which layers are sparse. */
static nl_status parse_moe(hf_loader *L, nl_config *c) {
    const hf_arch *a = L->a;
    nl_status st;
    if (!a->k_experts) return NL_OK;
    if ((st = check_router_options(L)) != NL_OK) return st;
    if ((st = cfg_int(L, a->k_experts, 1, a->experts_def, &c->n_experts)) != NL_OK) return st;
    if (c->n_experts < 0 || (c->n_experts == 0 && a->arch == NL_ARCH_MIXTRAL))
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be %s, got %d", L->cfg_path, a->k_experts,
                         a->arch == NL_ARCH_MIXTRAL ? "positive" : ">= 0", c->n_experts);
    if (c->n_experts > NL_MOE_MAX_EXPERTS)
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': %s = %d is not supported (at most %d experts)", L->cfg_path,
                         a->k_experts, c->n_experts, NL_MOE_MAX_EXPERTS);
    if (c->n_experts == 0) return NL_OK; /* HF: every layer dense */
    if ((st = cfg_int(L, a->k_topk, 1, a->topk_def, &c->n_experts_per_tok)) != NL_OK) return st;
    if (c->n_experts_per_tok < 1 || c->n_experts_per_tok > c->n_experts)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': %s = %d must be in 1..%s (%d)", L->cfg_path, a->k_topk,
                         c->n_experts_per_tok, a->k_experts, c->n_experts);
    if ((st = cfg_dim(L, a->k_d_expert, a->d_expert_def > 0, a->d_expert_def, &c->d_expert)) != NL_OK) return st;
    c->d_shared = a->d_shared_def;
    if (a->k_d_shared) {
        if ((st = cfg_int(L, a->k_d_shared, 1, a->d_shared_def, &c->d_shared)) != NL_OK) return st;
        if (c->d_shared < 0)
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be >= 0, got %d", L->cfg_path, a->k_d_shared,
                             c->d_shared);
    }
    if ((st = cfg_bool(L, a->k_norm_topk, a->norm_topk_def, &c->norm_topk_prob)) != NL_OK) return st;
    if ((st = cfg_int(L, a->k_sparse_step, 1, 1, &c->decoder_sparse_step)) != NL_OK) return st;
    if (c->decoder_sparse_step < 1)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be positive, got %d", L->cfg_path,
                         a->k_sparse_step, c->decoder_sparse_step);
    json_t *mo = a->k_mlp_only ? json_object_get(L->cfg, a->k_mlp_only) : NULL;
    if (mo && !json_is_null(mo)) {
        if (!json_is_array(mo))
            return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be a list of layer indices", L->cfg_path,
                             a->k_mlp_only);
        size_t i;
        json_t *e;
        json_array_foreach(mo, i, e) {
            if (!json_is_integer(e))
                return nl_errorf(L->ctx, NL_EFORMAT, "'%s': field '%s' must be a list of layer indices (entry %zu)",
                                 L->cfg_path, a->k_mlp_only, i);
            json_int_t l = json_integer_value(e);
            if (l < 0 || l >= c->n_layers) continue; /* HF tests membership: other values change nothing */
            if (l >= NL_MOE_MAX_LAYERS)
                return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': %s entry %lld: layers beyond %d are not supported",
                                 L->cfg_path, a->k_mlp_only, (long long)l, NL_MOE_MAX_LAYERS - 1);
            c->mlp_only[l / 8] |= (unsigned char)(1u << (l % 8));
        }
    }
    return NL_OK;
}

static nl_status parse_config(hf_loader *L) {
    const hf_arch *a = L->a;
    const nl_arch_desc *d = L->d;
    nl_config *c = &L->m->cfg;
    nl_status st;
    c->arch = a->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", a->model_type);
    c->norm = d->norm;
    c->pos = d->pos;
    c->ffn_gated = d->ffn_gated;
    c->shared_norm = d->block == NL_BLOCK_SHARED_NORM;
    c->rope_interleaved = d->hf->rope_interleaved; /* HF: rotate_half */

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
    } else if (a->head_dim_def) {
        c->head_dim = a->head_dim_def;
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
    char eps_key[128];
    if ((st = cfg_num_key(L, L->cfg, a->k_eps, 1, a->eps_def, &eps, eps_key)) != NL_OK) return st;
    if (!(eps >= 0)) return nl_errorf(L->ctx, NL_EFORMAT, "'%s': norm epsilon must be >= 0, got %g", L->cfg_path, eps);
    if ((st = as_float(L, eps_key, eps, 0, &c->norm_eps)) != NL_OK) return st;

    const char *act = d->act_def;
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

    if ((st = cfg_bool(L, a->k_parallel, d->block != NL_BLOCK_SEQUENTIAL, &c->parallel_residual)) != NL_OK) return st;
    if ((st = cfg_bool(L, "tie_word_embeddings", d->tie_def, &c->tie_embeddings)) != NL_OK) return st;
    if ((st = cfg_bool(L, a->k_attn_bias, d->attn_bias_def, &L->attn_bias)) != NL_OK) return st;
    if ((st = parse_sliding(L, c)) != NL_OK) return st;
    if ((st = cfg_token(L, "bos_token_id", a->bos_def, &c->bos_id)) != NL_OK) return st;
    if ((st = cfg_token(L, "eos_token_id", a->eos_def, &c->eos_id)) != NL_OK) return st;
    c->qk_norm = a->qk_norm;
    return parse_moe(L, c);
}

/* ---- weights ------------------------------------------------------------------------ */

/* The layer matrices must share config.json's torch_dtype. A checkpoint whose matrices all
 * share one other dtype is only mislabelled and loads (the file is self-consistent); a
 * mix is refused, naming the first matrix that disagrees. */
static int dtype_of_torch(const char *s) {
    if (!strcmp(s, "float32")) return NL_DT_F32;
    if (!strcmp(s, "float16")) return NL_DT_F16;
    if (!strcmp(s, "bfloat16")) return NL_DT_BF16;
    return -1;
}

static nl_status check_dtypes(hf_loader *L, const nl_resolver *r) {
    if (r->n_odd == 0 || r->n_odd == r->n_mats) return NL_OK;
    json_t *td = json_object_get(L->cfg, "torch_dtype");
    const char *tds = json_is_string(td) ? json_string_value(td) : NULL;
    if (tds && dtype_of_torch(tds) >= 0)
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' is %s, but config.json says torch_dtype %s like the other %d matrices",
                         r->odd_file, r->odd_name, nl_dtype_name(r->odd_dt), tds, r->n_mats - r->n_odd);
    return nl_errorf(L->ctx, NL_EFORMAT, "'%s': tensor '%s' is %s, unlike the other layer matrices (%s)", r->odd_file,
                     r->odd_name, nl_dtype_name(r->odd_dt), nl_dtype_name((nl_dtype)r->want_dt));
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
        if (strcmp(json_string_value(mt), hf_configs[i].model_type) == 0) L->a = &hf_configs[i];
    if (!L->a) {
        char list[256];
        size_t k = 0;
        list[0] = '\0';
        for (int i = 0; i < N_ARCHS && k < sizeof list; i++)
            k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", hf_configs[i].model_type);
        return nl_errorf(L->ctx, NL_EUNSUPPORTED, "'%s': unknown model_type '%s' (supported: %s)", L->cfg_path,
                         json_string_value(mt), list);
    }
    L->d = nl_arch_desc_of(L->a->arch);
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
    if ((st = nl_st_source_open(ctx, L->m, L->dir, &L->src)) != NL_OK) goto done;
    json_t *td = json_object_get(L->cfg, "torch_dtype");
    char layers_key[128];
    cfg_lookup(L->cfg, L->a->k_layers, layers_key, sizeof layers_key);
    nl_resolver r = {.names = L->d->hf, .src = L->src, .model_type = L->a->model_type, .cfg_name = "config.json",
                     .cfg_path = L->cfg_path, .layers_key = layers_key, .attn_bias = L->attn_bias,
                     .want_dt = json_is_string(td) ? dtype_of_torch(json_string_value(td)) : -1};
    if ((st = nl_arch_resolve(ctx, L->m, &r)) != NL_OK) goto done;
    if ((st = check_dtypes(L, &r)) != NL_OK) goto done;
    if ((st = nl_model_realign(ctx, L->m)) != NL_OK) goto done;
    st = nl_model_validate(ctx, L->m, L->src->path);
done:
    nl_tensor_source_close(L->src);
    json_decref(L->cfg);
    if (st == NL_OK) *out = L->m;
    else nl_model_close(L->m);
    free(L);
    return st;
}
