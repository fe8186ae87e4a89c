/* test_hf.c — the safetensors reader and the Hugging Face folder loader.
 *
 * Builds tiny model folders in a temporary directory with a small safetensors writer
 * (below), loads them and checks the config, the tensor values read back through
 * nl_model_layer/nl_model_head, and that every kind of bad input fails with an NL_E*
 * status and a one-line message naming the file — among them config values that break in
 * single precision, layer counts the tensors do not hold and safetensors files whose data
 * section does not match the header. The last case loads every PyTorch fixture folder in
 * tests/fixtures/hf when present.
 */
#include <dirent.h>
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "model/model_internal.h"
#include "neuronlab/model.h"
#include "neuronlab/safetensors.h"
#include "neuronlab/st_writer.h"
#include "testutil.h"

/* ---- a tiny safetensors writer ------------------------------------------------------ */

typedef struct {
    char name[160];
    char dtype[12];
    int ndim;
    int64_t shape[4];
} tspec;

typedef struct {
    tspec t[160];
    int n;
} tset;

static void ts_add(tset *s, const char *dtype, const char *name, int ndim, int64_t d0, int64_t d1) {
    cr_assert(s->n < 160);
    tspec *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
}

static tspec *ts_find(tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

static void ts_remove(tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) {
            s->t[i] = s->t[--s->n];
            return;
        }
    cr_assert_fail("no tensor %s to remove", name);
}

static int64_t ts_numel(const tspec *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static size_t dt_size(const char *dt) {
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32")) return 4;
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) return 2;
    if (!strcmp(dt, "I64")) return 8;
    return 1; /* BOOL, U8 */
}

/* Value of element i of tensor `name`: multiples of 1/16 in [-15/16, 15/16], exact in
 * f16 and bf16, different per tensor. */
static float tval(const char *name, size_t i) {
    unsigned h = 5381;
    for (const char *p = name; *p; p++) h = h * 33 + (unsigned char)*p;
    return (float)((int)((h + i * 7) % 31) - 15) / 16.0f;
}

typedef struct {
    int no_pad;        /* header length ≡ 1 mod 8: every tensor lands unaligned */
    long truncate;     /* drop this many bytes from the end */
    uint64_t fake_len; /* write this header length instead of the real one */
} wopts;

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    cr_assert(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

/* Writes tensors [lo, hi) of s as a safetensors file. */
static void write_st(const char *path, const tset *s, int lo, int hi, const wopts *o) {
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0;
    for (int i = lo; i < hi; i++) {
        const tspec *t = &s->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        size_t nb = (size_t)ts_numel(t) * dt_size(t->dtype);
        json_object_set_new(h, t->name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", t->dtype, "shape", shape, "data_offsets",
                                                  (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *js = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    size_t hl = strlen(js), padded = o && o->no_pad ? (hl + 7) / 8 * 8 + 1 : (hl + 7) / 8 * 8;
    size_t total = 8 + padded + off;
    unsigned char *buf = calloc(1, total);
    uint64_t L = o && o->fake_len ? o->fake_len : padded;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(L >> (8 * i));
    memset(buf + 8, ' ', padded);
    memcpy(buf + 8, js, hl);
    free(js);
    unsigned char *d = buf + 8 + padded;
    for (int i = lo; i < hi; i++) {
        const tspec *t = &s->t[i];
        size_t n = (size_t)ts_numel(t);
        for (size_t k = 0; k < n; k++) {
            float v = tval(t->name, k);
            if (!strcmp(t->dtype, "F32")) memcpy(d, &v, 4);
            else if (!strcmp(t->dtype, "F16")) { uint16_t x = nl_f32_to_f16(v); memcpy(d, &x, 2); }
            else if (!strcmp(t->dtype, "BF16")) { uint16_t x = nl_f32_to_bf16(v); memcpy(d, &x, 2); }
            else if (!strcmp(t->dtype, "I32")) { int32_t x = (int32_t)(v * 16); memcpy(d, &x, 4); }
            else if (!strcmp(t->dtype, "I64")) { int64_t x = (int64_t)(v * 16); memcpy(d, &x, 8); }
            else *d = 1;
            d += dt_size(t->dtype);
        }
    }
    write_bytes(path, buf, total - (o ? (size_t)o->truncate : 0));
    free(buf);
}

/* ---- temporary folders -------------------------------------------------------------- */

static char tmpdir[256];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) { return remove(p); }

static void setup_dir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nl_test_hf_XXXXXX");
    cr_assert(mkdtemp(tmpdir), "mkdtemp failed");
}

static void teardown_dir(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *P(const char *file) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, file);
    return buf[k];
}

/* ---- tiny architectures ------------------------------------------------------------- */

enum { L_ = 2, D_ = 8, F_ = 16, H_ = 2, HK_ = 1, DH_ = 4, V_ = 10 };

static void llama_tensors(tset *s, const char *dt, int tie, int qkv_bias) {
    char n[160];
    ts_add(s, dt, "model.embed_tokens.weight", 2, V_, D_);
    ts_add(s, dt, "model.norm.weight", 1, D_, 0);
    if (!tie) ts_add(s, dt, "lm_head.weight", 2, V_, D_);
    for (int l = 0; l < L_; l++) {
#define A(suffix, nd, a, b) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), ts_add(s, dt, n, nd, a, b))
        A("input_layernorm.weight", 1, D_, 0);
        A("post_attention_layernorm.weight", 1, D_, 0);
        A("self_attn.q_proj.weight", 2, H_ * DH_, D_);
        A("self_attn.k_proj.weight", 2, HK_ * DH_, D_);
        A("self_attn.v_proj.weight", 2, HK_ * DH_, D_);
        A("self_attn.o_proj.weight", 2, D_, H_ * DH_);
        if (qkv_bias) {
            A("self_attn.q_proj.bias", 1, H_ * DH_, 0);
            A("self_attn.k_proj.bias", 1, HK_ * DH_, 0);
            A("self_attn.v_proj.bias", 1, HK_ * DH_, 0);
        }
        A("mlp.gate_proj.weight", 2, F_, D_);
        A("mlp.up_proj.weight", 2, F_, D_);
        A("mlp.down_proj.weight", 2, D_, F_);
#undef A
    }
}

static const char *LLAMA_CFG =
    "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8,"
    " \"intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    " \"vocab_size\": 10, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0,"
    " \"hidden_act\": \"silu\", \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": [2, 3],"
    " \"torch_dtype\": \"float32\", \"rope_scaling\": null}";

static void write_llama(const char *dt) {
    tset s = {0};
    llama_tensors(&s, dt, 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
}

/* Checks n values of f32 array got against tensor `name`. */
static void check_vals(const float *got, const char *name, size_t n) {
    cr_assert(got, "tensor %s absent", name);
    for (size_t i = 0; i < n; i++)
        cr_assert_float_eq(got[i], tval(name, i), 0.0, "%s[%zu]: %g vs %g", name, i, got[i], tval(name, i));
}

static nl_model *open_ok(nl_ctx *ctx, const char *dir) {
    nl_model *m = NULL;
    nl_status st = nl_hf_open(ctx, dir, &m);
    cr_assert_eq(st, NL_OK, "nl_hf_open(%s) failed: %s", dir, ctx->msg);
    cr_assert(m);
    return m;
}

/* Expects failure st with a message containing each of the non-NULL parts. */
static void open_fails(const char *dir, nl_status want, const char *part1, const char *part2) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = (nl_model *)1;
    nl_status st = nl_hf_open(&ctx, dir, &m);
    cr_assert_eq(st, want, "want status %d (%s), got %d: %s", want, nl_status_name(want), st, ctx.msg);
    cr_assert_null(m);
    cr_assert(strchr(ctx.msg, '\n') == NULL, "message is not one line: %s", ctx.msg);
    cr_assert(ctx.msg[0] >= 'a' || ctx.msg[0] == '\'', "message starts upper-case: %s", ctx.msg);
    if (part1) cr_assert(strstr(ctx.msg, part1), "message lacks '%s': %s", part1, ctx.msg);
    if (part2) cr_assert(strstr(ctx.msg, part2), "message lacks '%s': %s", part2, ctx.msg);
}

TestSuite(hf, .init = setup_dir, .fini = teardown_dir);

/* ---- loading ------------------------------------------------------------------------ */

Test(hf, llama_loads) {
    write_llama("F32");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, tmpdir, &m), NL_OK, "%s", ctx.msg); /* the lead's dispatch */
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->arch, NL_ARCH_LLAMA);
    cr_assert_str_eq(c->model_type, "llama");
    cr_assert_eq(c->n_layers, 2);
    cr_assert_eq(c->d_model, 8);
    cr_assert_eq(c->d_ff, 16);
    cr_assert_eq(c->n_heads, 2);
    cr_assert_eq(c->n_kv_heads, 1);
    cr_assert_eq(c->head_dim, 4);
    cr_assert_eq(c->vocab_size, 10);
    cr_assert_eq(c->max_pos, 64);
    cr_assert_eq(c->ffn_gated, 1);
    cr_assert_eq(c->act, NL_ACT_SILU);
    cr_assert_eq(c->norm, NL_NORM_RMS);
    cr_assert_float_eq(c->norm_eps, 1e-5f, 1e-12);
    cr_assert_eq(c->pos, NL_POS_ROPE);
    cr_assert_float_eq(c->rope_theta, 500000.0f, 0);
    cr_assert_eq(c->rotary_dim, 4);
    cr_assert_eq(c->rope_interleaved, 0);
    cr_assert_eq(c->rope_scaling, NL_ROPE_SCALING_NONE);
    cr_assert_eq(c->parallel_residual, 0);
    cr_assert_eq(c->shared_norm, 0);
    cr_assert_eq(c->sliding_window, 0);
    cr_assert_eq(c->tie_embeddings, 0);
    cr_assert_eq(c->bos_id, 1);
    cr_assert_eq(c->eos_id, 2); /* first of the list */
    cr_assert_eq(nl_model_dtype(m), NL_DT_F32);
    cr_assert_eq(m->qkv_layout, NL_QKV_SEPARATE);
    cr_assert_eq(m->conv1d, 0);

    nl_layer w;
    for (int l = 0; l < 2; l++) {
        char n[128];
        cr_assert_eq(nl_model_layer(&ctx, m, l, &w), NL_OK, "%s", ctx.msg);
        cr_assert_eq(w.w_up.n_out, 16);
        cr_assert_eq(w.w_up.n_in, 8);
        cr_assert_eq(w.wk.n_out, 4);
        cr_assert_null(w.bq);
        cr_assert_null(w.ln1_b);
        snprintf(n, sizeof n, "model.layers.%d.mlp.up_proj.weight", l);
        check_vals(w.w_up.w, n, 16 * 8);
        snprintf(n, sizeof n, "model.layers.%d.mlp.gate_proj.weight", l);
        check_vals(w.w_gate.w, n, 16 * 8);
        snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.weight", l);
        check_vals(w.w_down.w, n, 8 * 16);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.k_proj.weight", l);
        check_vals(w.wk.w, n, 4 * 8);
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        check_vals(w.ln2_w, n, 8);
    }
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK, "%s", ctx.msg);
    check_vals(h.lm_head.w, "lm_head.weight", 10 * 8);
    check_vals(h.norm_w, "model.norm.weight", 8);
    float emb[2 * 8];
    int32_t toks[2] = {3, 7};
    nl_model_embed(m, toks, 2, 0, emb);
    for (int j = 0; j < 8; j++) {
        cr_assert_float_eq(emb[j], tval("model.embed_tokens.weight", 3 * 8 + j), 0);
        cr_assert_float_eq(emb[8 + j], tval("model.embed_tokens.weight", 7 * 8 + j), 0);
    }
    nl_model_close(m);
}

Test(hf, trailing_slash_and_tied_head) {
    tset s = {0};
    llama_tensors(&s, "F32", 1, 0);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%s", LLAMA_CFG);
    char *t = strstr(cfg, "\"tie_word_embeddings\": false");
    memcpy(t, "\"tie_word_embeddings\": true ", strlen("\"tie_word_embeddings\": true "));
    write_text(P("config.json"), cfg);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/", tmpdir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, dir);
    cr_assert_eq(nl_model_config(m)->tie_embeddings, 1);
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
    check_vals(h.lm_head.w, "model.embed_tokens.weight", 10 * 8);
    nl_model_close(m);
}

Test(hf, sharded_index_loads) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    int half = s.n / 2;
    write_st(P("model-00001-of-00002.safetensors"), &s, 0, half, NULL);
    write_st(P("model-00002-of-00002.safetensors"), &s, half, s.n, NULL);
    json_t *wm = json_object();
    for (int i = 0; i < s.n; i++)
        json_object_set_new(wm, s.t[i].name, json_string(i < half ? "model-00001-of-00002.safetensors"
                                                                   : "model-00002-of-00002.safetensors"));
    json_t *idx = json_pack("{s:{s:i},s:o}", "metadata", "total_size", 1234, "weight_map", wm);
    cr_assert_eq(json_dump_file(idx, P("model.safetensors.index.json"), 0), 0);
    json_decref(idx);

    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK);
    check_vals(w.w_down.w, "model.layers.1.mlp.down_proj.weight", 8 * 16);
    cr_assert_eq(nl_model_layer(&ctx, m, 0, &w), NL_OK);
    check_vals(w.wq.w, "model.layers.0.self_attn.q_proj.weight", 8 * 8);
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
    check_vals(h.lm_head.w, "lm_head.weight", 10 * 8);
    cr_assert_eq(m->n_maps, 2);
    nl_model_close(m);

    /* a shard the index names is missing */
    remove(P("model-00002-of-00002.safetensors"));
    open_fails(tmpdir, NL_EIO, "model-00002-of-00002.safetensors", "model.safetensors.index.json");
}

static void dtype_roundtrip(const char *dt, nl_dtype want) {
    write_llama(dt);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_dtype(m), want);
    cr_assert_eq(m->layers[0].w_up.dtype, want);
    cr_assert_eq(m->tok_emb.dtype, want);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK, "%s", ctx.msg);
    check_vals(w.w_up.w, "model.layers.1.mlp.up_proj.weight", 16 * 8);
    check_vals(w.ln1_w, "model.layers.1.input_layernorm.weight", 8);
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
    check_vals(h.lm_head.w, "lm_head.weight", 10 * 8);
    nl_model_close(m);
}

Test(hf, bf16_recognised) { dtype_roundtrip("BF16", NL_DT_BF16); }
Test(hf, f16_recognised) { dtype_roundtrip("F16", NL_DT_F16); }

Test(hf, unaligned_tensors_are_copied) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    wopts o = {.no_pad = 1};
    write_st(P("model.safetensors"), &s, 0, s.n, &o);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    cr_assert_eq((uintptr_t)m->layers[0].w_up.data % 4, 0);
    cr_assert_eq((uintptr_t)m->tok_emb.data % 4, 0);
    cr_assert_eq(m->n_maps, 2, "file + one aligned copy");
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 0, &w), NL_OK);
    check_vals(w.w_up.w, "model.layers.0.mlp.up_proj.weight", 16 * 8);
    nl_model_close(m);
}

Test(hf, llama3_and_linear_rope_scaling) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%.*s, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
             " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}",
             (int)(strstr(LLAMA_CFG, ", \"rope_scaling\"") - LLAMA_CFG), LLAMA_CFG);
    write_text(P("config.json"), cfg);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->rope_scaling, NL_ROPE_SCALING_LLAMA3);
    cr_assert_float_eq(c->rope_factor, 8.0f, 0);
    cr_assert_float_eq(c->rope_low_freq_factor, 1.0f, 0);
    cr_assert_float_eq(c->rope_high_freq_factor, 4.0f, 0);
    cr_assert_eq(c->rope_orig_max_pos, 8192);
    nl_model_close(m);

    snprintf(cfg, sizeof cfg, "%.*s, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}",
             (int)(strstr(LLAMA_CFG, ", \"rope_scaling\"") - LLAMA_CFG), LLAMA_CFG);
    write_text(P("config.json"), cfg);
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->rope_scaling, NL_ROPE_SCALING_LINEAR);
    cr_assert_float_eq(nl_model_config(m)->rope_factor, 2.0f, 0);
    nl_model_close(m);

    /* transformers 5 style: rope_parameters carries theta and the scaling */
    snprintf(cfg, sizeof cfg, "%.*s, \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 4.0, \"rope_theta\": 1234.0}}",
             (int)(strstr(LLAMA_CFG, ", \"rope_theta\"") - LLAMA_CFG), LLAMA_CFG);
    write_text(P("config.json"), cfg);
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->rope_scaling, NL_ROPE_SCALING_LINEAR);
    cr_assert_float_eq(nl_model_config(m)->rope_factor, 4.0f, 0);
    cr_assert_float_eq(nl_model_config(m)->rope_theta, 1234.0f, 0);
    nl_model_close(m);

    snprintf(cfg, sizeof cfg, "%.*s, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}",
             (int)(strstr(LLAMA_CFG, ", \"rope_scaling\"") - LLAMA_CFG), LLAMA_CFG);
    write_text(P("config.json"), cfg);
    open_fails(tmpdir, NL_EUNSUPPORTED, "config.json", "'yarn'");
}

Test(hf, qwen2_biases_defaults_and_sliding) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 1);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    const char *base = "{\"model_type\": \"qwen2\", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 2,"
                       " \"num_attention_heads\": 2, \"vocab_size\": 10%s}";
    char cfg[1024];
    /* HF Qwen2Config's num_key_value_heads default is 32: absent → error naming it */
    snprintf(cfg, sizeof cfg, base, "");
    write_text(P("config.json"), cfg);
    open_fails(tmpdir, NL_EFORMAT, "num_key_value_heads 32", "config.json");

    snprintf(cfg, sizeof cfg, base, ", \"num_key_value_heads\": 1, \"use_sliding_window\": false, \"sliding_window\": 4");
    write_text(P("config.json"), cfg);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->arch, NL_ARCH_QWEN2);
    cr_assert_eq(c->sliding_window, 0);
    cr_assert_eq(c->tie_embeddings, 0);
    cr_assert_eq(c->max_pos, 32768);
    cr_assert_float_eq(c->norm_eps, 1e-6f, 1e-12);
    cr_assert_eq(c->bos_id, -1);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK);
    check_vals(w.bk, "model.layers.1.self_attn.k_proj.bias", 4);
    cr_assert_null(w.bo);
    nl_model_close(m);

    /* all layers slide (max_window_layers 0) → one window */
    snprintf(cfg, sizeof cfg, base,
             ", \"num_key_value_heads\": 1, \"use_sliding_window\": true, \"sliding_window\": 4, \"max_window_layers\": 0");
    write_text(P("config.json"), cfg);
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->sliding_window, 4);
    nl_model_close(m);

    /* some layers slide → unsupported, said so */
    snprintf(cfg, sizeof cfg, base,
             ", \"num_key_value_heads\": 1, \"use_sliding_window\": true, \"sliding_window\": 4, \"max_window_layers\": 1");
    write_text(P("config.json"), cfg);
    open_fails(tmpdir, NL_EUNSUPPORTED, "sliding-window", "config.json");

    /* qwen2 q/k/v biases are required */
    ts_remove(&s, "model.layers.0.self_attn.v_proj.bias");
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    snprintf(cfg, sizeof cfg, base, ", \"num_key_value_heads\": 1");
    write_text(P("config.json"), cfg);
    open_fails(tmpdir, NL_EFORMAT, "missing tensor 'model.layers.0.self_attn.v_proj.bias' (model_type qwen2)",
               "model.safetensors");
}

Test(hf, mistral_sliding_window) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    const char *base = "{\"model_type\": \"mistral\", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 2,"
                       " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10%s}";
    char cfg[1024];
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    snprintf(cfg, sizeof cfg, base, "");
    write_text(P("config.json"), cfg);
    nl_model *m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->sliding_window, 4096); /* HF MistralConfig default */
    cr_assert_eq(nl_model_config(m)->arch, NL_ARCH_MISTRAL);
    nl_model_close(m);
    snprintf(cfg, sizeof cfg, base, ", \"sliding_window\": null");
    write_text(P("config.json"), cfg);
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->sliding_window, 0);
    nl_model_close(m);
    snprintf(cfg, sizeof cfg, base, ", \"sliding_window\": 3, \"head_dim\": null");
    write_text(P("config.json"), cfg);
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->sliding_window, 3);
    cr_assert_eq(nl_model_config(m)->head_dim, 4);
    nl_model_close(m);
}

/* Real gpt2 checkpoints: names without "transformer.", Conv1D (in, out) matrices, the
 * attn.bias mask buffers, no lm_head (tied by default). */
Test(hf, gpt2_unprefixed_conv1d) {
    tset s = {0};
    char n[160];
    const int P_ = 12;
    ts_add(&s, "F32", "wte.weight", 2, V_, D_);
    ts_add(&s, "F32", "wpe.weight", 2, P_, D_);
    ts_add(&s, "F32", "ln_f.weight", 1, D_, 0);
    ts_add(&s, "F32", "ln_f.bias", 1, D_, 0);
    for (int l = 0; l < L_; l++) {
#define A(suffix, nd, a, b) (snprintf(n, sizeof n, "h.%d.%s", l, suffix), ts_add(&s, "F32", n, nd, a, b))
        A("ln_1.weight", 1, D_, 0);
        A("ln_1.bias", 1, D_, 0);
        A("ln_2.weight", 1, D_, 0);
        A("ln_2.bias", 1, D_, 0);
        A("attn.c_attn.weight", 2, D_, 3 * D_);
        A("attn.c_attn.bias", 1, 3 * D_, 0);
        A("attn.c_proj.weight", 2, D_, D_);
        A("attn.c_proj.bias", 1, D_, 0);
        A("mlp.c_fc.weight", 2, D_, 4 * D_);
        A("mlp.c_fc.bias", 1, 4 * D_, 0);
        A("mlp.c_proj.weight", 2, 4 * D_, D_);
        A("mlp.c_proj.bias", 1, D_, 0);
        snprintf(n, sizeof n, "h.%d.attn.bias", l);
        tspec *t = &s.t[s.n];
        ts_add(&s, "F32", n, 2, P_, P_);
        t->ndim = 4, t->shape[0] = 1, t->shape[1] = 1, t->shape[2] = P_, t->shape[3] = P_;
#undef A
    }
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    write_text(P("config.json"), "{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 2, \"n_head\": 2, \"n_positions\": 12,"
                                 " \"n_ctx\": 12, \"vocab_size\": 10, \"n_inner\": null, \"activation_function\": \"gelu_new\"}");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->arch, NL_ARCH_GPT2);
    cr_assert_eq(c->d_ff, 32);
    cr_assert_eq(c->max_pos, 12);
    cr_assert_eq(c->pos, NL_POS_LEARNED);
    cr_assert_eq(c->norm, NL_NORM_LAYER);
    cr_assert_eq(c->act, NL_ACT_GELU_TANH);
    cr_assert_eq(c->ffn_gated, 0);
    cr_assert_eq(c->tie_embeddings, 1);
    cr_assert_eq(c->bos_id, 50256);
    cr_assert_float_eq(c->norm_eps, 1e-5f, 1e-12);
    cr_assert_eq(m->conv1d, 1);
    cr_assert_eq(m->qkv_layout, NL_QKV_CONCAT);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK);
    cr_assert_eq(w.wqkv.trans, 1);
    cr_assert_eq(w.wqkv.n_out, 24);
    cr_assert_eq(w.wqkv.n_in, 8);
    check_vals(w.wqkv.w, "h.1.attn.c_attn.weight", 8 * 24);
    check_vals(w.b_up, "h.1.mlp.c_fc.bias", 32);
    float e[8];
    int32_t tok = 4;
    nl_model_embed(m, &tok, 1, 5, e);
    for (int j = 0; j < 8; j++)
        cr_assert_float_eq(e[j], tval("wte.weight", 4 * 8 + j) + tval("wpe.weight", 5 * 8 + j), 1e-6);
    nl_model_close(m);

    /* GPT-2 variants we cannot run are refused by name */
    write_text(P("config.json"), "{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 2, \"n_head\": 2, \"n_positions\": 12,"
                                 " \"vocab_size\": 10, \"scale_attn_by_inverse_layer_idx\": true}");
    open_fails(tmpdir, NL_EUNSUPPORTED, "scale_attn_by_inverse_layer_idx", "config.json");
}

Test(hf, gpt_neox_defaults_and_mask_buffers) {
    tset s = {0};
    char n[160];
    const int Hn = 2, Dh = 4, D = 8, F = 32;
    ts_add(&s, "F16", "gpt_neox.embed_in.weight", 2, V_, D);
    ts_add(&s, "F16", "gpt_neox.final_layer_norm.weight", 1, D, 0);
    ts_add(&s, "F16", "gpt_neox.final_layer_norm.bias", 1, D, 0);
    ts_add(&s, "F16", "embed_out.weight", 2, V_, D);
    for (int l = 0; l < L_; l++) {
#define A(dt, suffix, nd, a, b) (snprintf(n, sizeof n, "gpt_neox.layers.%d.%s", l, suffix), ts_add(&s, dt, n, nd, a, b))
        A("F16", "input_layernorm.weight", 1, D, 0);
        A("F16", "input_layernorm.bias", 1, D, 0);
        A("F16", "post_attention_layernorm.weight", 1, D, 0);
        A("F16", "post_attention_layernorm.bias", 1, D, 0);
        A("F16", "attention.query_key_value.weight", 2, 3 * Hn * Dh, D);
        A("F16", "attention.query_key_value.bias", 1, 3 * Hn * Dh, 0);
        A("F16", "attention.dense.weight", 2, D, D);
        A("F16", "attention.dense.bias", 1, D, 0);
        A("F16", "mlp.dense_h_to_4h.weight", 2, F, D);
        A("F16", "mlp.dense_h_to_4h.bias", 1, F, 0);
        A("F16", "mlp.dense_4h_to_h.weight", 2, D, F);
        A("F16", "mlp.dense_4h_to_h.bias", 1, D, 0);
        A("BOOL", "attention.bias", 2, 16, 16);          /* causal-mask buffer: ignored */
        A("F32", "attention.masked_bias", 0, 0, 0);
        A("F32", "attention.rotary_emb.inv_freq", 1, 2, 0);
#undef A
    }
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    write_text(P("config.json"), "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"intermediate_size\": 32,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10,"
                                 " \"rotary_pct\": 0.5, \"rotary_emb_base\": 10000, \"max_position_embeddings\": 16}");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->arch, NL_ARCH_GPT_NEOX);
    cr_assert_eq(c->rotary_dim, 2);
    cr_assert_float_eq(c->rope_theta, 10000.0f, 0);
    cr_assert_eq(c->parallel_residual, 1);
    cr_assert_eq(c->tie_embeddings, 0);
    cr_assert_eq(c->act, NL_ACT_GELU);
    cr_assert_eq(c->bos_id, 0);
    cr_assert_eq(m->qkv_layout, NL_QKV_HEAD_INTERLEAVED);
    cr_assert_eq(nl_model_dtype(m), NL_DT_F16);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 0, &w), NL_OK);
    check_vals(w.wqkv.w, "gpt_neox.layers.0.attention.query_key_value.weight", 24 * 8);
    check_vals(w.bqkv, "gpt_neox.layers.0.attention.query_key_value.bias", 24);
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
    check_vals(h.lm_head.w, "embed_out.weight", 10 * 8);
    nl_model_close(m);

    write_text(P("config.json"), "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"intermediate_size\": 32,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 1, \"vocab_size\": 10,"
                                 " \"use_parallel_residual\": false, \"rope_theta\": 500}");
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->parallel_residual, 0);
    cr_assert_eq(nl_model_config(m)->rotary_dim, 2); /* default rotary_pct 0.25 of head_dim 8 */
    cr_assert_float_eq(nl_model_config(m)->rope_theta, 500.0f, 0);
    nl_model_close(m);

    /* rotary_pct 0.25 of head_dim 4 rotates one dim: refused, naming config.json */
    write_text(P("config.json"), "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"intermediate_size\": 32,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10}");
    open_fails(tmpdir, NL_EFORMAT, "config.json", "rotates 1 dims");
}

Test(hf, phi_shared_norm_and_head_bias) {
    tset s = {0};
    char n[160];
    const int D = 8, F = 32;
    ts_add(&s, "BF16", "model.embed_tokens.weight", 2, V_, D);
    ts_add(&s, "BF16", "model.final_layernorm.weight", 1, D, 0);
    ts_add(&s, "BF16", "model.final_layernorm.bias", 1, D, 0);
    ts_add(&s, "BF16", "lm_head.weight", 2, V_, D);
    ts_add(&s, "BF16", "lm_head.bias", 1, V_, 0);
    for (int l = 0; l < L_; l++) {
#define A(suffix, nd, a, b) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), ts_add(&s, "BF16", n, nd, a, b))
        A("input_layernorm.weight", 1, D, 0);
        A("input_layernorm.bias", 1, D, 0);
        A("self_attn.q_proj.weight", 2, D, D);
        A("self_attn.q_proj.bias", 1, D, 0);
        A("self_attn.k_proj.weight", 2, D, D);
        A("self_attn.k_proj.bias", 1, D, 0);
        A("self_attn.v_proj.weight", 2, D, D);
        A("self_attn.v_proj.bias", 1, D, 0);
        A("self_attn.dense.weight", 2, D, D);
        A("self_attn.dense.bias", 1, D, 0);
        A("mlp.fc1.weight", 2, F, D);
        A("mlp.fc1.bias", 1, F, 0);
        A("mlp.fc2.weight", 2, D, F);
        A("mlp.fc2.bias", 1, D, 0);
#undef A
    }
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    write_text(P("config.json"), "{\"model_type\": \"phi\", \"hidden_size\": 8, \"intermediate_size\": 32,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10,"
                                 " \"partial_rotary_factor\": 0.5, \"hidden_act\": \"gelu_new\"}");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = open_ok(&ctx, tmpdir);
    const nl_config *c = nl_model_config(m);
    cr_assert_eq(c->arch, NL_ARCH_PHI);
    cr_assert_eq(c->shared_norm, 1);
    cr_assert_eq(c->rotary_dim, 2);
    cr_assert_eq(c->n_kv_heads, 2);
    cr_assert_eq(c->norm, NL_NORM_LAYER);
    nl_head h;
    cr_assert_eq(nl_model_head(&ctx, m, &h), NL_OK);
    check_vals(h.lm_head_b, "lm_head.bias", 10);
    nl_layer w;
    cr_assert_eq(nl_model_layer(&ctx, m, 1, &w), NL_OK);
    cr_assert_null(w.ln2_w);
    check_vals(w.bo, "model.layers.1.self_attn.dense.bias", 8);
    check_vals(w.w_down.w, "model.layers.1.mlp.fc2.weight", 8 * 32);
    nl_model_close(m);
}

/* ---- bad inputs --------------------------------------------------------------------- */

Test(hf, truncated_safetensors) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    wopts o = {.truncate = 10};
    write_st(P("model.safetensors"), &s, 0, s.n, &o);
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "truncated");
}

Test(hf, header_length_beyond_file) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    wopts o = {.fake_len = 9000000000000000000ull};
    write_st(P("model.safetensors"), &s, 0, s.n, &o);
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "header length 9000000000000000000 exceeds file size");
    write_bytes(P("model.safetensors"), "\x01\x02", 2);
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "too short");
}

/* A file whose header is exactly `json` (no data). */
static void write_raw_header(const char *path, const char *json) {
    size_t hl = strlen(json);
    unsigned char *b = calloc(1, 8 + hl);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    write_bytes(path, b, 8 + hl);
    free(b);
}

Test(hf, garbage_json_header) {
    write_text(P("config.json"), LLAMA_CFG);
    write_raw_header(P("model.safetensors"), "{\"a\": [1, 2,,  }");
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "not valid JSON");
    write_raw_header(P("model.safetensors"), "\x01\x02garbage\xff");
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "not valid JSON");
    write_raw_header(P("model.safetensors"), "[1, 2]  ");
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors", "not a JSON object");
}

Test(hf, shape_contradicts_config) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    ts_find(&s, "model.layers.0.mlp.up_proj.weight")->shape[0] = 12;
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "'%s/model.safetensors': tensor 'model.layers.0.mlp.up_proj.weight' has shape [12, 8], config.json implies [16, 8]",
             tmpdir);
    open_fails(tmpdir, NL_EFORMAT, want, NULL);
}

Test(hf, unsupported_dtype) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    snprintf(ts_find(&s, "model.layers.1.mlp.down_proj.weight")->dtype, 12, "I32");
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    open_fails(tmpdir, NL_EUNSUPPORTED, "'model.layers.1.mlp.down_proj.weight' has dtype I32", "model.safetensors");
}

Test(hf, missing_tensor) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    ts_remove(&s, "model.layers.1.mlp.up_proj.weight");
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "'%s/model.safetensors': missing tensor 'model.layers.1.mlp.up_proj.weight' (model_type llama)", tmpdir);
    open_fails(tmpdir, NL_EFORMAT, want, NULL);
}

Test(hf, missing_shard) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("a.safetensors"), &s, 0, s.n, NULL);
    json_t *wm = json_object();
    for (int i = 0; i < s.n; i++) json_object_set_new(wm, s.t[i].name, json_string(i % 2 ? "a.safetensors" : "b.safetensors"));
    json_t *idx = json_pack("{s:o}", "weight_map", wm);
    json_dump_file(idx, P("model.safetensors.index.json"), 0);
    json_decref(idx);
    open_fails(tmpdir, NL_EIO, "b.safetensors", "model.safetensors.index.json");
}

Test(hf, unknown_model_type) {
    write_text(P("config.json"), "{\"model_type\": \"foo\", \"hidden_size\": 8}");
    char want[512];
    snprintf(want, sizeof want,
             "'%s/config.json': unknown model_type 'foo' (supported: llama, mistral, qwen2, gpt2, gpt_neox, phi, qwen3, mixtral, qwen2_moe, qwen3_moe)", tmpdir);
    open_fails(tmpdir, NL_EUNSUPPORTED, want, NULL);
}

Test(hf, missing_config_json) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    open_fails(tmpdir, NL_EIO, "config.json", tmpdir);
}

Test(hf, config_json_not_json) {
    write_text(P("config.json"), "{\"model_type\": \"llama\", hidden_size: 8}");
    open_fails(tmpdir, NL_EFORMAT, "config.json", "not valid JSON");
    write_text(P("config.json"), "[1, 2, 3]");
    open_fails(tmpdir, NL_EFORMAT, "config.json", "not a JSON object");
}

Test(hf, missing_or_bad_config_fields) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"intermediate_size\": 16, \"num_hidden_layers\": 2,"
                                 " \"num_attention_heads\": 2, \"vocab_size\": 10}");
    open_fails(tmpdir, NL_EFORMAT, "missing field 'hidden_size'", "config.json");
    write_text(P("config.json"), "{\"hidden_size\": 8}");
    open_fails(tmpdir, NL_EFORMAT, "missing field 'model_type'", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": \"8\", \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10}");
    open_fails(tmpdir, NL_EFORMAT, "field 'hidden_size' must be an integer", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 0, \"num_attention_heads\": 2, \"vocab_size\": 10}");
    open_fails(tmpdir, NL_EFORMAT, "field 'num_hidden_layers' must be positive", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 3, \"vocab_size\": 10}");
    open_fails(tmpdir, NL_EFORMAT, "hidden_size 8 is not divisible by num_attention_heads 3", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
                                 " \"vocab_size\": 10, \"hidden_act\": \"xielu\"}");
    open_fails(tmpdir, NL_EUNSUPPORTED, "hidden_act 'xielu' is not supported", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
                                 " \"vocab_size\": 10, \"mlp_bias\": true}");
    open_fails(tmpdir, NL_EUNSUPPORTED, "mlp_bias = true is not supported", "config.json");
    /* attention_bias: true makes the llama biases required */
    write_text(P("config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
                                 " \"vocab_size\": 10, \"attention_bias\": true}");
    open_fails(tmpdir, NL_EFORMAT, "missing tensor 'model.layers.0.self_attn.q_proj.bias'", "model.safetensors");
}

Test(hf, no_weights_file) {
    write_text(P("config.json"), LLAMA_CFG);
    open_fails(tmpdir, NL_EIO, "no model.safetensors", tmpdir);
    write_text(P("pytorch_model.bin"), "x");
    open_fails(tmpdir, NL_EUNSUPPORTED, "PyTorch .bin", tmpdir);
}

/* ---- robustness: config values in float precision, layer counts, shifted data ---------- */

/* Writes LLAMA_CFG with the value of `key` (quoted, as in the JSON) replaced, or the pair
 * appended when LLAMA_CFG lacks it. */
static void write_llama_cfg_with(const char *key, const char *value) {
    char cfg[2048];
    const char *at = strstr(LLAMA_CFG, key);
    if (at) { /* replace the existing value up to the next ',' or '}' */
        const char *colon = strchr(at, ':'), *end = colon + 1;
        int depth = 0;
        while (*end && !(depth == 0 && (*end == ',' || *end == '}'))) {
            if (*end == '{' || *end == '[') depth++;
            if (*end == '}' || *end == ']') depth--;
            end++;
        }
        snprintf(cfg, sizeof cfg, "%.*s: %s%s", (int)(colon - LLAMA_CFG), LLAMA_CFG, value, end);
    } else {
        snprintf(cfg, sizeof cfg, "%.*s, %s: %s}", (int)(strrchr(LLAMA_CFG, '}') - LLAMA_CFG), LLAMA_CFG, key, value);
    }
    write_text(P("config.json"), cfg);
}

Test(hf, config_floats_checked_in_single_precision) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    /* R11: positive as a double, 0 as the float RoPE divides by */
    write_llama_cfg_with("\"rope_theta\"", "1e-300");
    open_fails(tmpdir, NL_EFORMAT, "config.json': field 'rope_theta' is 1e-300, which becomes 0", NULL);
    write_llama_cfg_with("\"rope_theta\"", "1e-39"); /* a denormal float: 1/theta overflows */
    open_fails(tmpdir, NL_EFORMAT, "field 'rope_theta' is 1e-39, which becomes a denormal number", "config.json");
    write_llama_cfg_with("\"rope_theta\"", "1e39");
    open_fails(tmpdir, NL_EFORMAT, "field 'rope_theta' is 1e+39, beyond the largest single-precision float", "config.json");
    write_llama_cfg_with("\"rms_norm_eps\"", "1e-300");
    open_fails(tmpdir, NL_EFORMAT, "field 'rms_norm_eps' is 1e-300, which becomes 0", "config.json");
    write_llama_cfg_with("\"rms_norm_eps\"", "1e300");
    open_fails(tmpdir, NL_EFORMAT, "field 'rms_norm_eps' is 1e+300, beyond", "config.json");
    write_llama_cfg_with("\"rope_scaling\"", "{\"rope_type\": \"linear\", \"factor\": 1e-45}");
    open_fails(tmpdir, NL_EFORMAT, "field 'rope_scaling.factor' is 1e-45", "config.json");
    write_llama_cfg_with("\"rope_scaling\"", "{\"rope_type\": \"linear\", \"factor\": 1e40}");
    open_fails(tmpdir, NL_EFORMAT, "field 'rope_scaling.factor' is 1e+40, beyond", "config.json");
    write_llama_cfg_with("\"rope_scaling\"", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                                            " \"high_freq_factor\": 1.00000001, \"original_max_position_embeddings\": 8192}");
    open_fails(tmpdir, NL_EFORMAT, "are equal as single-precision floats", "config.json");
    write_llama_cfg_with("\"rope_scaling\"", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                                            " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 1e300}");
    open_fails(tmpdir, NL_EFORMAT, "original_max_position_embeddings in [1, 2147483647]", "config.json");
    write_text(P("config.json"), "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"intermediate_size\": 32,"
                                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 1, \"vocab_size\": 10,"
                                 " \"rotary_emb_base\": 1e-300}");
    open_fails(tmpdir, NL_EFORMAT, "field 'rotary_emb_base' is 1e-300", "config.json");

    /* small but representable values still load, unchanged */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    write_llama_cfg_with("\"rope_theta\"", "1e-30");
    nl_model *m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->rope_theta, 1e-30f);
    nl_model_close(m);
    write_llama_cfg_with("\"rms_norm_eps\"", "0");
    m = open_ok(&ctx, tmpdir);
    cr_assert_eq(nl_model_config(m)->norm_eps, 0.0f);
    nl_model_close(m);
    write_llama_cfg_with("\"rms_norm_eps\"", "1e-40"); /* a denormal epsilon is still nonzero */
    m = open_ok(&ctx, tmpdir);
    cr_assert(nl_model_config(m)->norm_eps > 0);
    nl_model_close(m);
}

Test(hf, layer_count_bounded_by_the_tensors) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    /* R13: refused before anything is allocated for 2^31 layers */
    write_llama_cfg_with("\"num_hidden_layers\"", "2147483647");
    char want[1024];
    snprintf(want, sizeof want, "'%s/config.json': num_hidden_layers is 2147483647, but '%s/model.safetensors' holds 2 layers",
             tmpdir, tmpdir);
    open_fails(tmpdir, NL_EFORMAT, want, "missing tensor 'model.layers.2.input_layernorm.weight'");
    write_llama_cfg_with("\"num_hidden_layers\"", "3");
    open_fails(tmpdir, NL_EFORMAT, "num_hidden_layers is 3, but", "holds 2 layers");
    /* GPT-2 spells it n_layer: the message uses the key the file has */
    write_text(P("config.json"), "{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 1000000, \"n_head\": 2,"
                                 " \"vocab_size\": 10, \"n_positions\": 16}");
    tset g = {0};
    ts_add(&g, "F32", "wte.weight", 2, V_, 8);
    ts_add(&g, "F32", "wpe.weight", 2, 16, 8);
    ts_add(&g, "F32", "ln_f.weight", 1, 8, 0);
    ts_add(&g, "F32", "ln_f.bias", 1, 8, 0);
    write_st(P("model.safetensors"), &g, 0, g.n, NULL);
    open_fails(tmpdir, NL_EFORMAT, "config.json': n_layer is 1000000, but", "holds 0 layers");
}

/* Inserts n zero bytes at offset `at` of the data section of the safetensors file `path`. */
static void insert_into_data(const char *path, size_t at, size_t n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(size + n);
    cr_assert(fread(b, 1, size, f) == size);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    size_t k = 8 + (size_t)hl + at;
    cr_assert(k <= size);
    memmove(b + k + n, b + k, size - k);
    memset(b + k, 0, n);
    write_bytes(path, b, size + n);
    free(b);
}

Test(hf, bytes_inserted_into_the_data_section) {
    tset s = {0};
    llama_tensors(&s, "F32", 0, 0);
    write_text(P("config.json"), LLAMA_CFG);
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model_close(open_ok(&ctx, tmpdir));
    /* R12: 2 bytes 1000 bytes in shift every later tensor; the file is 2 bytes too long */
    insert_into_data(P("model.safetensors"), 1000, 2);
    open_fails(tmpdir, NL_EFORMAT, "model.safetensors': the data section has", "but the last tensor ends at byte");
    /* appended bytes too */
    write_st(P("model.safetensors"), &s, 0, s.n, NULL);
    size_t data_end = 0;
    for (int i = 0; i < s.n; i++) data_end += (size_t)ts_numel(&s.t[i]) * 4;
    insert_into_data(P("model.safetensors"), data_end, 1);
    char want[128];
    snprintf(want, sizeof want, "has %zu bytes but the last tensor ends at byte %zu", data_end + 1, data_end);
    open_fails(tmpdir, NL_EFORMAT, want, "model.safetensors");
}

/* ---- the safetensors reader on its own ---------------------------------------------- */

static nl_status st_open_str(nl_ctx *ctx, const char *json, size_t data_bytes, nl_safetensors **out, void **buf) {
    size_t hl = strlen(json), total = 8 + hl + data_bytes;
    unsigned char *b = calloc(1, total);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    *buf = b;
    return nl_safetensors_open(ctx, "x.safetensors", b, total, out);
}

Test(safetensors, index_and_lookup) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_safetensors *st;
    void *buf;
    const char *h = "{\"__metadata__\": {\"format\": \"pt\"}, \"b\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, 12]},"
                    " \"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [12, 24]},"
                    " \"m\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [24, 32]},"
                    " \"q\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [32, 36]},"
                    " \"z\": {\"dtype\": \"NEWTYPE\", \"shape\": [4], \"data_offsets\": [36, 36]}}";
    cr_assert_eq(st_open_str(&ctx, h, 36, &st, &buf), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_safetensors_count(st), 5);
    cr_assert_str_eq(nl_safetensors_entry(st, 0)->name, "a");
    cr_assert_str_eq(nl_safetensors_entry(st, 1)->name, "b");
    cr_assert_null(nl_safetensors_find(st, "__metadata__"));
    const nl_st_entry *e = nl_safetensors_find(st, "b");
    cr_assert(e && e->supported && e->dtype == NL_DT_BF16 && e->ndim == 2 && e->shape[1] == 3 && e->nbytes == 12);
    cr_assert_eq((const char *)e->data, (const char *)buf + 8 + strlen(h));
    nl_tensor t;
    cr_assert_eq(nl_safetensors_get(&ctx, st, "a", &t), NL_OK);
    cr_assert(t.dtype == NL_DT_F32 && t.ndim == 1 && t.shape[0] == 3);
    cr_assert_eq(nl_safetensors_get(&ctx, st, "m", &t), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "'m' has dtype I64") && strstr(ctx.msg, "x.safetensors"), "%s", ctx.msg);
    cr_assert_eq(nl_safetensors_get(&ctx, st, "z", &t), NL_EUNSUPPORTED);
    cr_assert_eq(nl_safetensors_get(&ctx, st, "nope", &t), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "missing tensor 'nope'"));
    nl_safetensors_close(st);
    nl_safetensors_close(NULL);
    free(buf);
}

static void st_bad(const char *h, size_t data_bytes, const char *part) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_safetensors *st = (nl_safetensors *)1;
    void *buf;
    nl_status s = st_open_str(&ctx, h, data_bytes, &st, &buf);
    cr_assert_eq(s, NL_EFORMAT, "accepted %s", h);
    cr_assert_null(st);
    cr_assert(strstr(ctx.msg, part) && strstr(ctx.msg, "'x.safetensors'"), "message '%s' lacks '%s'", ctx.msg, part);
    free(buf);
}

Test(safetensors, rejects_bad_entries) {
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "span 8 bytes");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, "truncated");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, "data_offsets");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, "data_offsets");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "invalid shape");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, "invalid shape");
    st_bad("{\"a\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "no dtype");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, "no shape");
    st_bad("{\"a\": 3}", 0, "not an object");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "not valid JSON");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}", 8,
           "too large");
    st_bad("{}x", 0, "not valid JSON");
    /* the layout as a whole: data beyond the last tensor, overlaps, misaligned starts */
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 10,
           "the data section has 10 bytes but the last tensor ends at byte 8");
    st_bad("{}", 4, "the data section has 4 bytes but the last tensor ends at byte 0");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12,
           "tensor 'b' (bytes 4..12 of the data section) overlaps tensor 'a' (bytes 0..8)");
    st_bad("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "overlaps tensor");
    st_bad("{\"a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [2, 10]}}", 10,
           "tensor 'b' of F32 starts at byte 2 of the data section, which is not a multiple of its 4-byte element size");
}

Test(safetensors, accepts_holes_empty_tensors_and_byte_types) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_safetensors *st;
    void *buf;
    /* an empty tensor may sit anywhere, 1-byte types at any offset, F16 at even offsets */
    const char *h = "{\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
                    " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                    " \"u\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [4, 7]},"
                    " \"h\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [8, 12]}}";
    cr_assert_eq(st_open_str(&ctx, h, 12, &st, &buf), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_safetensors_count(st), 4);
    nl_safetensors_close(st);
    free(buf);
}

/* The writer puts 4-byte tensors first, so a mixed file it writes passes the reader's
 * alignment check whatever order the tensors were added in. */
Test(safetensors, writer_output_is_aligned_for_the_reader) {
    setup_dir();
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_st_writer *w;
    const float v[5] = {1, 2, 3, 4, 5};
    cr_assert_eq(nl_st_writer_create(&ctx, &w), NL_OK);
    cr_assert_eq(nl_st_writer_add(&ctx, w, "h", NL_DT_F16, 1, (int64_t[]){3}, v), NL_OK); /* 6 bytes */
    cr_assert_eq(nl_st_writer_add(&ctx, w, "f", NL_DT_F32, 1, (int64_t[]){5}, v), NL_OK);
    cr_assert_eq(nl_st_writer_add(&ctx, w, "b", NL_DT_BF16, 1, (int64_t[]){1}, v), NL_OK);
    cr_assert_eq(nl_st_writer_write(&ctx, w, P("mixed.safetensors")), NL_OK, "%s", ctx.msg);
    nl_st_writer_destroy(w);
    size_t n;
    unsigned char *buf = nl_read_all(P("mixed.safetensors"), &n);
    cr_assert(buf);
    nl_safetensors *st;
    cr_assert_eq(nl_safetensors_open(&ctx, "mixed.safetensors", buf, n, &st), NL_OK, "%s", ctx.msg);
    nl_tensor t;
    cr_assert_eq(nl_safetensors_get(&ctx, st, "f", &t), NL_OK);
    float got[5];
    memcpy(got, t.data, sizeof got);
    cr_assert_eq(memcmp(got, v, sizeof v), 0);
    cr_assert_eq(nl_safetensors_get(&ctx, st, "h", &t), NL_OK);
    uint16_t u;
    memcpy(&u, (const char *)t.data + 4, 2);
    cr_assert_eq(nl_f16_to_f32(u), 3.0f);
    nl_safetensors_close(st);
    free(buf);
    teardown_dir();
}

/* ---- the PyTorch fixtures ------------------------------------------------------------ */

Test(hf, fixtures_load) {
    const char *root = "tests/fixtures/hf";
    DIR *d = opendir(root);
    if (!d) cr_skip_test("no %s yet", root);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char dir[512], cfg[600];
        snprintf(dir, sizeof dir, "%s/%s", root, de->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        if (!nl_path_exists(cfg)) continue;
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = NULL;
        nl_status st = nl_hf_open(&ctx, dir, &m);
        cr_expect_eq(st, NL_OK, "fixture %s: %s", dir, ctx.msg);
        if (st == NL_OK) {
            nl_layer w;
            cr_expect_eq(nl_model_layer(&ctx, m, 0, &w), NL_OK, "fixture %s: %s", dir, ctx.msg);
            nl_head h;
            cr_expect_eq(nl_model_head(&ctx, m, &h), NL_OK, "fixture %s: %s", dir, ctx.msg);
        }
        nl_model_close(m);
        n++;
    }
    closedir(d);
    if (n == 0) cr_skip_test("no fixture folders in %s yet", root);
}
