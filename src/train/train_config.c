/* train_config.c — parsing and validation of the trainer's JSON config (see train_config.h).
 *
 * One table lists every key: its type, where it goes in nl_train_config, its default (or that it
 * is required), its range and its group (run-defining or not). Parsing walks the object once:
 * unknown keys are refused with the nearest known key as a hint; then every table entry is read
 * or defaulted, then the cross-key rules are checked.
 * Checked by tests/test_train_config.c.
 */
#include "neuronlab/train_config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_STR, K_INT, K_I64, K_NUM, K_BOOL, K_ACT, K_DTYPE, K_MOE } key_kind;
enum { G_RUN = 1, G_OTHER = 2 }; /* G_RUN: must match when resuming */

typedef struct {
    const char *name;
    key_kind kind;
    size_t off;
    int required;
    double def;        /* numeric default (K_INT/K_I64/K_NUM/K_BOOL) */
    double lo, hi;     /* inclusive range for numbers */
    int lo_open;       /* 1: the range excludes lo (> lo) */
    int group;
    int hi_open;       /* 1: the range excludes hi (< hi) */
} key_def;

#define OFF(f) offsetof(nl_train_config, f)
#define BIG 1e15
static const key_def keys[] = {
    {"train_data", K_STR, OFF(train_data), 1, 0, 0, 0, 0, G_RUN, 0},
    {"val_data", K_STR, OFF(val_data), 0, 0, 0, 0, 0, G_OTHER, 0},
    {"tokenizer", K_STR, OFF(tokenizer), 0, 0, 0, 0, 0, G_RUN, 0},
    {"d_model", K_INT, OFF(d_model), 1, 0, 1, 65536, 0, G_RUN, 0},
    {"n_layers", K_INT, OFF(n_layers), 1, 0, 1, 1024, 0, G_RUN, 0},
    {"n_heads", K_INT, OFF(n_heads), 1, 0, 1, 4096, 0, G_RUN, 0},
    {"n_kv_heads", K_INT, OFF(n_kv_heads), 0, 0, 1, 4096, 0, G_RUN, 0}, /* default n_heads */
    {"d_ff", K_INT, OFF(d_ff), 0, 0, 1, 1 << 20, 0, G_RUN, 0}, /* required unless moe */
    {"vocab_size", K_INT, OFF(vocab_size), 0, 0, 1, 1 << 24, 0, G_RUN, 0}, /* default: tokenizer's */
    {"max_seq_len", K_INT, OFF(max_seq_len), 0, 0, 1, 1 << 24, 0, G_RUN, 0}, /* default seq_len */
    {"rope_theta", K_NUM, OFF(rope_theta), 0, 10000, 0, BIG, 1, G_RUN, 0},
    {"norm_eps", K_NUM, OFF(norm_eps), 0, 1e-5, 0, 1, 1, G_RUN, 0},
    {"tie_word_embeddings", K_BOOL, OFF(tie_word_embeddings), 0, 0, 0, 1, 0, G_RUN, 0},
    {"hidden_act", K_ACT, OFF(hidden_act), 0, 0, 0, 0, 0, G_RUN, 0},
    {"moe", K_MOE, OFF(moe_type), 0, 0, 0, 0, 0, G_RUN, 0}, /* the object; aux_loss compared as G_OTHER */
    {"seq_len", K_INT, OFF(seq_len), 1, 0, 1, 1 << 16, 0, G_RUN, 0},
    {"batch_size", K_INT, OFF(batch_size), 1, 0, 1, 1 << 20, 0, G_RUN, 0},
    {"grad_accum", K_INT, OFF(grad_accum), 0, 1, 1, 1 << 20, 0, G_RUN, 0},
    {"steps", K_INT, OFF(steps), 1, 0, 1, 1e9, 0, G_OTHER, 0},
    {"lr", K_NUM, OFF(lr), 1, 0, 0, 1e12, 1, G_OTHER, 0},
    {"min_lr", K_NUM, OFF(min_lr), 0, -1, 0, 1e12, 0, G_OTHER, 0}, /* default lr/10 */
    {"warmup_steps", K_INT, OFF(warmup_steps), 0, 0, 0, 1e9, 0, G_OTHER, 0},
    {"weight_decay", K_NUM, OFF(weight_decay), 0, 0.1, 0, 1e6, 0, G_OTHER, 0},
    {"beta1", K_NUM, OFF(beta1), 0, 0.9, 0, 1, 0, G_OTHER, 1},
    {"beta2", K_NUM, OFF(beta2), 0, 0.95, 0, 1, 0, G_OTHER, 1},
    {"eps", K_NUM, OFF(eps), 0, 1e-8, 0, 1, 1, G_OTHER, 0},
    {"grad_clip", K_NUM, OFF(grad_clip), 0, 1.0, 0, BIG, 0, G_OTHER, 0},
    {"seed", K_I64, OFF(seed), 0, 1, 0, 9007199254740992.0, 0, G_RUN, 0},
    {"l1", K_NUM, OFF(l1), 0, 0, 0, BIG, 0, G_OTHER, 0},
    {"out", K_STR, OFF(out), 1, 0, 0, 0, 0, G_OTHER, 0},
    {"eval_every", K_INT, OFF(eval_every), 0, 0, 0, 1e9, 0, G_OTHER, 0},
    {"eval_batches", K_INT, OFF(eval_batches), 0, 0, 0, 1e9, 0, G_OTHER, 0},
    {"checkpoint_every", K_INT, OFF(checkpoint_every), 0, 0, 0, 1e9, 0, G_OTHER, 0},
    {"log_every", K_INT, OFF(log_every), 0, 10, 1, 1e9, 0, G_OTHER, 0},
    {"save_dtype", K_DTYPE, OFF(save_dtype), 0, 0, 0, 0, 0, G_OTHER, 0},
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))
#undef OFF

static const char *acts[] = {"silu", "gelu", "relu", "relu2"};

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static const key_def *find_key(const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static const char *kind_text(const key_def *k) {
    switch (k->kind) {
    case K_STR: return "a non-empty string";
    case K_INT: case K_I64: return "an integer";
    case K_NUM: return "a number";
    case K_BOOL: return "true or false";
    case K_ACT: return "one of \"silu\", \"gelu\", \"relu\", \"relu2\"";
    case K_DTYPE: return "one of \"f32\", \"bf16\", \"f16\"";
    case K_MOE: return "an object";
    }
    return "?";
}

static void range_text(const key_def *k, char *buf, size_t cap) {
    if (k->hi >= 1e8 && k->lo_open) snprintf(buf, cap, "> %.15g", k->lo);
    else if (k->hi >= 1e8) snprintf(buf, cap, ">= %.15g", k->lo);
    else snprintf(buf, cap, "in %s%.15g, %.15g%s", k->lo_open ? "(" : "[", k->lo, k->hi, k->hi_open ? ")" : "]");
}

static void show_value(json_t *v, char *buf, size_t cap) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(buf, cap, "%.60s%s", s ? s : "?", s && strlen(s) > 60 ? "…" : "");
    free(s);
}

/* The "moe" object (train_config.h): every sub-key checked, unknown ones refused. */
static const char *moe_keys[] = {"type", "experts", "top_k", "d_expert", "shared_d", "norm_topk", "aux_loss"};
#define N_MOE_KEYS ((int)(sizeof moe_keys / sizeof moe_keys[0]))

static int edit_distance(const char *a, const char *b);

static nl_status moe_int(nl_ctx *ctx, const char *path, json_t *o, const char *key, int required, int def, int lo,
                         int hi, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return nl_errorf(ctx, NL_EINVAL, "'%s': missing key 'moe.%s'", path, key);
        *out = def;
        return NL_OK;
    }
    char got[96];
    show_value(v, got, sizeof got);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'moe.%s' must be an integer in [%d, %d], got %s", path, key, lo, hi,
                         got);
    *out = (int)json_integer_value(v);
    return NL_OK;
}

static nl_status read_moe(nl_ctx *ctx, const char *path, json_t *o, nl_train_config *c) {
    char got[96];
    show_value(o, got, sizeof got);
    if (!json_is_object(o))
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'moe' must be an object (or null for a dense model), got %s", path,
                         got);
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v) {
        int known = name[0] == '_', bd = 99;
        const char *best = NULL;
        for (int i = 0; i < N_MOE_KEYS && !known; i++) {
            if (!strcmp(name, moe_keys[i])) known = 1;
            int d = edit_distance(name, moe_keys[i]);
            if (d < bd) { bd = d; best = moe_keys[i]; }
        }
        if (known) continue;
        if (best && bd <= 3)
            return nl_errorf(ctx, NL_EINVAL, "'%s': unknown router option 'moe.%s' (did you mean 'moe.%s'?)", path, name,
                             best);
        return nl_errorf(ctx, NL_EINVAL, "'%s': unknown router option 'moe.%s' (known: type, experts, top_k, d_expert, "
                         "shared_d, norm_topk, aux_loss)", path, name);
    }
    nl_status st;
    if ((st = moe_int(ctx, path, o, "experts", 1, 0, 1, NL_MOE_MAX_EXPERTS, &c->moe_experts)) != NL_OK) return st;
    if ((st = moe_int(ctx, path, o, "top_k", 0, 2, 1, NL_MOE_MAX_EXPERTS, &c->moe_top_k)) != NL_OK) return st;
    if (c->moe_top_k > c->moe_experts)
        return nl_errorf(ctx, NL_EINVAL, "'%s': moe.top_k %d exceeds moe.experts %d", path, c->moe_top_k, c->moe_experts);
    if ((st = moe_int(ctx, path, o, "d_expert", 1, 0, 1, 1 << 20, &c->moe_d_expert)) != NL_OK) return st;
    if ((st = moe_int(ctx, path, o, "shared_d", 0, 0, 0, 1 << 20, &c->moe_shared_d)) != NL_OK) return st;
    json_t *ty = json_object_get(o, "type");
    if (!ty || json_is_null(ty)) c->moe_type = c->moe_shared_d > 0 ? NL_TRAIN_MOE_QWEN2 : NL_TRAIN_MOE_MIXTRAL;
    else if (json_is_string(ty) && !strcmp(json_string_value(ty), "mixtral")) c->moe_type = NL_TRAIN_MOE_MIXTRAL;
    else if (json_is_string(ty) && !strcmp(json_string_value(ty), "qwen2_moe")) c->moe_type = NL_TRAIN_MOE_QWEN2;
    else {
        show_value(ty, got, sizeof got);
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'moe.type' must be \"mixtral\" or \"qwen2_moe\", got %s", path, got);
    }
    json_t *nt = json_object_get(o, "norm_topk");
    if (!nt || json_is_null(nt)) c->moe_norm_topk = c->moe_type == NL_TRAIN_MOE_MIXTRAL;
    else if (json_is_boolean(nt)) c->moe_norm_topk = json_is_true(nt);
    else {
        show_value(nt, got, sizeof got);
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'moe.norm_topk' must be true or false, got %s", path, got);
    }
    if (c->moe_type == NL_TRAIN_MOE_MIXTRAL && !c->moe_norm_topk)
        return nl_errorf(ctx, NL_EINVAL, "'%s': moe.norm_topk false is not possible with type mixtral (Mixtral always "
                         "renormalises; use type qwen2_moe)", path);
    if (c->moe_type == NL_TRAIN_MOE_MIXTRAL && c->moe_shared_d > 0)
        return nl_errorf(ctx, NL_EINVAL, "'%s': moe.shared_d %d needs type qwen2_moe (Mixtral has no shared expert)", path,
                         c->moe_shared_d);
    json_t *ax = json_object_get(o, "aux_loss");
    c->moe_aux_loss = 0.01;
    if (ax && !json_is_null(ax)) {
        if (!json_is_number(ax) || !isfinite(json_number_value(ax)) || json_number_value(ax) < 0) {
            show_value(ax, got, sizeof got);
            return nl_errorf(ctx, NL_EINVAL, "'%s': key 'moe.aux_loss' must be a number >= 0, got %s", path, got);
        }
        c->moe_aux_loss = json_number_value(ax);
    }
    return NL_OK;
}

static json_t *moe_to_json(const nl_train_config *c) {
    if (c->moe_type == NL_TRAIN_MOE_NONE) return json_null();
    return json_pack("{s:s,s:i,s:i,s:i,s:i,s:b,s:f}", "type", c->moe_type == NL_TRAIN_MOE_MIXTRAL ? "mixtral" : "qwen2_moe",
                     "experts", c->moe_experts, "top_k", c->moe_top_k, "d_expert", c->moe_d_expert, "shared_d",
                     c->moe_shared_d, "norm_topk", c->moe_norm_topk, "aux_loss", c->moe_aux_loss);
}

static nl_status read_key(nl_ctx *ctx, const char *path, const key_def *k, json_t *v, nl_train_config *c) {
    void *dst = (char *)c + k->off;
    char got[96];
    show_value(v, got, sizeof got);
    switch (k->kind) {
    case K_MOE: return read_moe(ctx, path, v, c);
    case K_STR:
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= 4096)
            return nl_errorf(ctx, NL_EINVAL, "'%s': key '%s' must be %s, got %s", path, k->name, kind_text(k), got);
        snprintf((char *)dst, 4096, "%s", json_string_value(v));
        return NL_OK;
    case K_BOOL:
        if (!json_is_boolean(v))
            return nl_errorf(ctx, NL_EINVAL, "'%s': key '%s' must be true or false, got %s", path, k->name, got);
        *(int *)dst = json_is_true(v);
        return NL_OK;
    case K_ACT: {
        if (json_is_string(v))
            for (int i = 0; i < 4; i++)
                if (!strcmp(json_string_value(v), acts[i])) {
                    *(nl_act *)dst = (nl_act)nl_act_parse(acts[i]);
                    return NL_OK;
                }
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': hidden_act %s is not supported (supported: silu, gelu, relu, relu2)",
                         path, got);
    }
    case K_DTYPE: {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (!strcmp(s, "f32") || !strcmp(s, "float32")) *(nl_dtype *)dst = NL_DT_F32;
        else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *(nl_dtype *)dst = NL_DT_BF16;
        else if (!strcmp(s, "f16") || !strcmp(s, "float16")) *(nl_dtype *)dst = NL_DT_F16;
        else return nl_errorf(ctx, NL_EINVAL, "'%s': key 'save_dtype' must be %s, got %s", path, kind_text(k), got);
        return NL_OK;
    }
    case K_INT: case K_I64: case K_NUM: {
        double d;
        if (json_is_integer(v)) d = (double)json_integer_value(v);
        else if (json_is_real(v)) d = json_real_value(v);
        else return nl_errorf(ctx, NL_EINVAL, "'%s': key '%s' must be %s, got %s", path, k->name, kind_text(k), got);
        if (k->kind != K_NUM && (!json_is_integer(v) && floor(d) != d))
            return nl_errorf(ctx, NL_EINVAL, "'%s': key '%s' must be an integer, got %s", path, k->name, got);
        if (!isfinite(d) || d < k->lo || d > k->hi || (k->lo_open && d == k->lo) || (k->hi_open && d == k->hi)) {
            char r[64];
            range_text(k, r, sizeof r);
            return nl_errorf(ctx, NL_EINVAL, "'%s': key '%s' must be %s %s, got %s", path, k->name,
                             k->kind == K_NUM ? "a number" : "an integer", r, got);
        }
        if (k->kind == K_INT) *(int *)dst = (int)d;
        else if (k->kind == K_I64) *(int64_t *)dst = json_is_integer(v) ? (int64_t)json_integer_value(v) : (int64_t)d;
        else *(double *)dst = d;
        return NL_OK;
    }
    }
    return NL_OK;
}

static void set_default(const key_def *k, nl_train_config *c) {
    void *dst = (char *)c + k->off;
    switch (k->kind) {
    case K_STR: ((char *)dst)[0] = 0; break;
    case K_INT: case K_BOOL: *(int *)dst = (int)k->def; break;
    case K_I64: *(int64_t *)dst = (int64_t)k->def; break;
    case K_NUM: *(double *)dst = k->def; break;
    case K_ACT: *(nl_act *)dst = NL_ACT_SILU; break;
    case K_DTYPE: *(nl_dtype *)dst = NL_DT_F32; break;
    case K_MOE: c->moe_type = NL_TRAIN_MOE_NONE; break;
    }
}

nl_status nl_train_config_from_json(nl_ctx *ctx, const char *path, json_t *obj, nl_train_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    if (!json_is_object(obj)) return nl_errorf(ctx, NL_EFORMAT, "'%s': the config must be a JSON object", path);
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        if (name[0] == '_' || find_key(name)) continue;
        const char *best = NULL;
        int bd = 99;
        for (int i = 0; i < N_KEYS; i++) {
            int d = edit_distance(name, keys[i].name);
            if (d < bd) { bd = d; best = keys[i].name; }
        }
        if (best && bd <= 3)
            return nl_errorf(ctx, NL_EINVAL, "'%s': unknown key '%s' (did you mean '%s'?)", path, name, best);
        return nl_errorf(ctx, NL_EINVAL, "'%s': unknown key '%s'", path, name);
    }
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        json_t *kv = json_object_get(obj, k->name);
        if (!kv || json_is_null(kv)) {
            if (k->required) return nl_errorf(ctx, NL_EINVAL, "'%s': missing key '%s'", path, k->name);
            set_default(k, c);
            continue;
        }
        nl_status st = read_key(ctx, path, k, kv, c);
        if (st != NL_OK) return st;
    }
    /* defaults that depend on other keys, then cross-key rules */
    if (!json_object_get(obj, "n_kv_heads") || json_is_null(json_object_get(obj, "n_kv_heads"))) c->n_kv_heads = c->n_heads;
    if (!json_object_get(obj, "max_seq_len") || json_is_null(json_object_get(obj, "max_seq_len"))) c->max_seq_len = c->seq_len;
    if (c->min_lr < 0) c->min_lr = c->lr / 10;
    if (c->moe_type == NL_TRAIN_MOE_NONE && c->d_ff == 0)
        return nl_errorf(ctx, NL_EINVAL, "'%s': missing key 'd_ff'", path);
    if (c->moe_type != NL_TRAIN_MOE_NONE && c->d_ff != 0)
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'd_ff' must be left out with 'moe' (the experts' width is "
                         "moe.d_expert, the shared expert's moe.shared_d)", path);
    if (c->moe_type != NL_TRAIN_MOE_NONE && c->l1 != 0)
        return nl_errorf(ctx, NL_EINVAL, "'%s': key 'l1' must be 0 with 'moe' (the L1 penalty is defined on dense FFNs)",
                         path);
    if (c->d_model % c->n_heads)
        return nl_errorf(ctx, NL_EINVAL, "'%s': d_model %d is not divisible by n_heads %d", path, c->d_model, c->n_heads);
    if ((c->d_model / c->n_heads) % 2)
        return nl_errorf(ctx, NL_EINVAL, "'%s': head dimension d_model/n_heads = %d must be even (RoPE)", path,
                         c->d_model / c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return nl_errorf(ctx, NL_EINVAL, "'%s': n_heads %d is not a multiple of n_kv_heads %d", path, c->n_heads,
                         c->n_kv_heads);
    if (c->max_seq_len < c->seq_len)
        return nl_errorf(ctx, NL_EINVAL, "'%s': max_seq_len %d is smaller than seq_len %d", path, c->max_seq_len,
                         c->seq_len);
    if (c->batch_size % c->grad_accum)
        return nl_errorf(ctx, NL_EINVAL, "'%s': grad_accum %d does not divide batch_size %d", path, c->grad_accum,
                         c->batch_size);
    if (c->warmup_steps > c->steps)
        return nl_errorf(ctx, NL_EINVAL, "'%s': warmup_steps %d exceeds steps %d", path, c->warmup_steps, c->steps);
    if (c->min_lr > c->lr)
        return nl_errorf(ctx, NL_EINVAL, "'%s': min_lr %g exceeds lr %g", path, c->min_lr, c->lr);
    if (!c->tokenizer[0] && !c->vocab_size)
        return nl_errorf(ctx, NL_EINVAL, "'%s': give 'tokenizer' (or 'vocab_size' when every data row is {\"tokens\"})",
                         path);
    return NL_OK;
}

nl_status nl_train_config_parse(nl_ctx *ctx, const char *path, const char *text, nl_train_config *c) {
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': not valid JSON (%s, line %d column %d)", path, jerr.text, jerr.line,
                         jerr.column);
    nl_status st = nl_train_config_from_json(ctx, path, obj, c);
    json_decref(obj);
    return st;
}

nl_status nl_train_config_load(nl_ctx *ctx, const char *path, nl_train_config *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot open config '%s': %m", path);
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 4096 > cap) {
            char *nb = realloc(buf, cap = cap * 2 + 8192);
            if (!nb) { free(buf); fclose(f); return nl_errorf(ctx, NL_ENOMEM, "out of memory"); }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return nl_errorf(ctx, NL_EIO, "cannot read config '%s'", path); }
    buf[n] = 0;
    nl_status st = nl_train_config_parse(ctx, path, buf, c);
    free(buf);
    return st;
}

json_t *nl_train_config_to_json(const nl_train_config *c) {
    json_t *o = json_object();
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        const void *src = (const char *)c + k->off;
        json_t *v = NULL;
        switch (k->kind) {
        case K_STR: v = ((const char *)src)[0] ? json_string((const char *)src) : json_null(); break;
        case K_INT: /* vocab_size 0 = "the tokenizer's", d_ff 0 (moe) are written as null (absent) */
            v = (!strcmp(k->name, "vocab_size") || !strcmp(k->name, "d_ff")) && *(const int *)src == 0
                    ? json_null()
                    : json_integer(*(const int *)src);
            break;
        case K_I64: v = json_integer(*(const int64_t *)src); break;
        case K_NUM: v = json_real(*(const double *)src); break;
        case K_BOOL: v = json_boolean(*(const int *)src); break;
        case K_ACT: v = json_string(nl_act_name(*(const nl_act *)src)); break;
        case K_DTYPE: {
            nl_dtype d = *(const nl_dtype *)src;
            v = json_string(d == NL_DT_F32 ? "f32" : d == NL_DT_BF16 ? "bf16" : "f16");
            break;
        }
        case K_MOE: v = moe_to_json(c); break;
        }
        json_object_set_new(o, k->name, v);
    }
    return o;
}

static int key_equal(const key_def *k, const nl_train_config *a, const nl_train_config *b) {
    const void *x = (const char *)a + k->off, *y = (const char *)b + k->off;
    switch (k->kind) {
    case K_STR: return strcmp((const char *)x, (const char *)y) == 0;
    case K_INT: case K_BOOL: return *(const int *)x == *(const int *)y;
    case K_I64: return *(const int64_t *)x == *(const int64_t *)y;
    case K_NUM: return *(const double *)x == *(const double *)y;
    case K_ACT: return *(const nl_act *)x == *(const nl_act *)y;
    case K_DTYPE: return *(const nl_dtype *)x == *(const nl_dtype *)y;
    case K_MOE:
        return a->moe_type == b->moe_type && a->moe_experts == b->moe_experts && a->moe_top_k == b->moe_top_k &&
               a->moe_d_expert == b->moe_d_expert && a->moe_shared_d == b->moe_shared_d &&
               a->moe_norm_topk == b->moe_norm_topk;
    }
    return 0;
}

const char *nl_train_config_run_diff(const nl_train_config *a, const nl_train_config *b) {
    for (int i = 0; i < N_KEYS; i++)
        if (keys[i].group == G_RUN && !key_equal(&keys[i], a, b)) return keys[i].name;
    return NULL;
}

const char *nl_train_config_other_diff(const nl_train_config *a, const nl_train_config *b) {
    for (int i = 0; i < N_KEYS; i++)
        if (keys[i].group == G_OTHER && !key_equal(&keys[i], a, b)) return keys[i].name;
    if (a->moe_aux_loss != b->moe_aux_loss) return "moe.aux_loss";
    return NULL;
}
