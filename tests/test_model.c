/* test_model.c — the model module apart from the Hugging Face config parsing (test_hf.c):
 * the dtype table (f16/bf16 decoding against hand-computed values, every row's block sizes),
 * the loader chosen by magic bytes whatever the file is called, W_out column norms against a
 * brute-force computation from the stored weights, nl_model_keep_f32 against streaming, and
 * the embedding of f16/bf16 storage against its f32 conversion, and the architecture table:
 * every architecture's Hugging Face names resolve on its fixture through the safetensors
 * tensor source, the rows are consistent with the structure they declare, and a tensor a
 * source lacks is named in the error. Robustness: a llama2.c header is bounded by the file size
 * before anything is allocated, every loader's config floats are re-checked, and NaN weights
 * make nl_ppl_run fail naming the model, the document and its line.
 */
#include <ftw.h>
#include <stdint.h>
#include <unistd.h>

#include "model/arch.h"
#include "model/model_internal.h"
#include "neuronlab/forward.h"
#include "neuronlab/model.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/safetensors.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_model")
TestSuite(model, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir);

#define FX "tests/fixtures/hf"

static void need_fixture(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (!nl_path_exists(p)) cr_skip_test("fixture %s is absent", dir);
}

/* ---- the dtype table ------------------------------------------------------------------ */

Test(model, dtype_table_rows) {
    for (int dt = 0; dt < NL_DT_COUNT; dt++) {
        const nl_dtype_info *d = nl_dtype_info_of((nl_dtype)dt);
        cr_assert_not_null(d->name);
        cr_assert_str_eq(nl_dtype_name((nl_dtype)dt), d->name);
        cr_assert(d->block_bytes > 0 && d->block_elems > 0, "%s: block %d bytes / %d elements", d->name,
                  d->block_bytes, d->block_elems);
        cr_assert_not_null(d->to_f32, "%s has no decoder", d->name);
        cr_assert_eq(nl_dtype_bytes((nl_dtype)dt, 3 * d->block_elems), (size_t)(3 * d->block_bytes));
        if (d->block_elems == 1) cr_assert_eq(nl_dtype_size((nl_dtype)dt), (size_t)d->block_bytes);
    }
    cr_assert_str_eq(nl_dtype_name(NL_DT_F32), "f32");
    cr_assert_str_eq(nl_dtype_name(NL_DT_F16), "f16");
    cr_assert_str_eq(nl_dtype_name(NL_DT_BF16), "bf16");
    cr_assert_str_eq(nl_dtype_name((nl_dtype)99), "?");
    cr_assert_eq(nl_dtype_size(NL_DT_F32), 4);
    cr_assert_eq(nl_dtype_size(NL_DT_F16), 2);
    cr_assert_eq(nl_dtype_size(NL_DT_BF16), 2);
}

/* Bit patterns with their values worked out by hand from the IEEE layouts. */
static const struct { uint16_t bits; float value; } f16_hand[] = {
    {0x0000, 0.0f},        {0x3c00, 1.0f},       {0xc000, -2.0f},      {0x3555, 0.333251953125f},
    {0x7bff, 65504.0f},    {0x0400, 6.103515625e-05f} /* smallest normal 2^-14 */,
    {0x0001, 5.9604644775390625e-08f} /* smallest subnormal 2^-24 */, {0x03ff, 6.097555160522461e-05f},
    {0xb800, -0.5f},       {0x4248, 3.140625f},
};
static const struct { uint16_t bits; float value; } bf16_hand[] = {
    {0x0000, 0.0f},     {0x3f80, 1.0f},       {0xc000, -2.0f},   {0x3eab, 0.333984375f},
    {0x4049, 3.140625f}, {0x7f7f, 3.3895313892515355e38f}, {0x0080, 1.1754943508222875e-38f},
    {0xbf00, -0.5f},
};

Test(model, f16_bf16_decode_hand_values) {
    const nl_dtype_info *h = nl_dtype_info_of(NL_DT_F16), *b = nl_dtype_info_of(NL_DT_BF16);
    enum { NH = sizeof f16_hand / sizeof f16_hand[0], NB = sizeof bf16_hand / sizeof bf16_hand[0] };
    /* one byte of offset: the decoders must read unaligned views */
    unsigned char raw[1 + 2 * 16];
    float out[16];
    for (int i = 0; i < NH; i++) memcpy(raw + 1 + 2 * i, &f16_hand[i].bits, 2);
    h->to_f32(raw + 1, out, NH);
    for (int i = 0; i < NH; i++)
        cr_assert_eq(out[i], f16_hand[i].value, "f16 0x%04x: %.10g, want %.10g", f16_hand[i].bits, out[i],
                     f16_hand[i].value);
    for (int i = 0; i < NB; i++) memcpy(raw + 1 + 2 * i, &bf16_hand[i].bits, 2);
    b->to_f32(raw + 1, out, NB);
    for (int i = 0; i < NB; i++)
        cr_assert_eq(out[i], bf16_hand[i].value, "bf16 0x%04x: %.10g, want %.10g", bf16_hand[i].bits, out[i],
                     bf16_hand[i].value);
    /* special values */
    uint16_t sp[3] = {0x7c00, 0xfc00, 0x7e00};
    h->to_f32(sp, out, 3);
    cr_assert(isinf(out[0]) && out[0] > 0 && isinf(out[1]) && out[1] < 0 && isnan(out[2]));
}

Test(model, f16_bf16_round_trip) {
    /* every f16/bf16 bit pattern that is not NaN decodes to a float that encodes back to it */
    const nl_dtype_info *h = nl_dtype_info_of(NL_DT_F16), *b = nl_dtype_info_of(NL_DT_BF16);
    static uint16_t all[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    h->to_f32(all, out, 65536);
    int n_checked = 0;
    for (int i = 0; i < 65536; i++) {
        if (isnan(out[i])) continue;
        cr_assert_eq(nl_f32_to_f16(out[i]), (uint16_t)i, "f16 0x%04x → %g → 0x%04x", i, out[i], nl_f32_to_f16(out[i]));
        n_checked++;
    }
    cr_assert_eq(n_checked, 65536 - 2 * 1023); /* 2 × 1023 NaN patterns */
    b->to_f32(all, out, 65536);
    for (int i = 0; i < 65536; i++) {
        if (isnan(out[i])) continue;
        cr_assert_eq(nl_f32_to_bf16(out[i]), (uint16_t)i, "bf16 0x%04x → %g", i, out[i]);
    }
    float f[4] = {1.5f, -0.0f, 1e-30f, 123456.0f}, g[4];
    nl_dtype_info_of(NL_DT_F32)->to_f32(f, g, 4);
    cr_assert(memcmp(f, g, sizeof f) == 0);
}

/* ---- the loader is chosen by magic bytes ------------------------------------------------ */

/* A valid llama2.c checkpoint (D 8, F 16, 1 layer, 2 heads, vocab 10, seq 4, shared classifier). */
static void write_llama2c(const char *path) {
    const int32_t h[7] = {8, 16, 1, 2, 2, 10, 4};
    const int D = 8, F = 16, L = 1, V = 10, S = 4, Dh = 4;
    long n = (long)V * D + L * D + 4L * L * D * D + L * D + 3L * L * F * D + D + (long)S * Dh;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(h, sizeof h, 1, f);
    for (long i = 0; i < n; i++) {
        float v = (float)((i * 37) % 19 - 9) / 32.0f;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static nl_status open_msg(const char *path, nl_model **m, char *msg, size_t cap) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_status st = nl_model_open(&ctx, path, m);
    snprintf(msg, cap, "%s", ctx.msg);
    if (st != NL_OK) cr_assert_null(*m);
    return st;
}

Test(model, dispatch_gguf_magic_in_a_bin) {
    unsigned char b[64] = "GGUF\x03\0\0\0";
    const char *p = tmp_path("x.bin");
    write_bytes(p, b, sizeof b);
    nl_model *m = NULL;
    char msg[1024];
    /* routed to the GGUF reader by its magic, whatever the name: an empty v3 header */
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EFORMAT, "%s", msg);
    cr_assert(strstr(msg, "missing metadata key 'general.architecture'") && strstr(msg, "x.bin'"), "%s", msg);
}

Test(model, dispatch_llama2c_named_gguf) {
    const char *p = tmp_path("x.gguf");
    write_llama2c(p);
    nl_model *m = NULL;
    char msg[1024];
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_OK, "%s", msg);
    cr_assert_str_eq(nl_model_config(m)->model_type, "llama2c");
    cr_assert_eq(nl_model_config(m)->d_model, 8);
    nl_model_close(m);
    /* and one named like a safetensors file */
    p = tmp_path("model.safetensors");
    write_llama2c(p);
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_OK, "%s", msg);
    nl_model_close(m);
}

Test(model, dispatch_safetensors_magic_in_a_bin) {
    const char hdr[] = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
    unsigned char b[8 + sizeof hdr - 1 + 4] = {0};
    uint64_t n = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n >> (8 * i));
    memcpy(b + 8, hdr, n);
    const char *p = tmp_path("weights.bin");
    write_bytes(p, b, sizeof b);
    nl_model *m = NULL;
    char msg[1024];
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EINVAL, "%s", msg);
    cr_assert(strstr(msg, "pass the model folder (with config.json), not the .safetensors file") &&
              strstr(msg, "weights.bin'"), "%s", msg);
}

Test(model, dispatch_directory_and_other_bytes) {
    /* a folder is a Hugging Face model whatever its name */
    nl_model *m = NULL;
    char msg[1024];
    cr_assert_eq(open_msg(g_dir, &m, msg, sizeof msg), NL_EIO, "%s", msg);
    cr_assert(strstr(msg, "config.json"), "%s", msg);
    /* anything else is read as llama2.c and its header is validated */
    const char *p = tmp_path("junk.gguf");
    write_bytes(p, "this is no checkpoint at all, just text", 39);
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EFORMAT, "%s", msg);
    cr_assert(strstr(msg, "junk.gguf' is not a llama2.c checkpoint"), "%s", msg);
    p = tmp_path("tiny.bin");
    write_bytes(p, "GGU", 3); /* too short for the GGUF magic */
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EFORMAT, "%s", msg);
    cr_assert(strstr(msg, "shorter than its header"), "%s", msg);
    cr_assert_eq(open_msg(tmp_path("absent.bin"), &m, msg, sizeof msg), NL_EIO, "%s", msg);
    cr_assert(strstr(msg, "cannot open '") && strstr(msg, "absent.bin'"), "%s", msg);
    if (nl_path_exists(FX "/llama/config.json")) {
        cr_assert_eq(open_msg(FX "/llama", &m, msg, sizeof msg), NL_OK, "%s", msg);
        cr_assert_str_eq(nl_model_config(m)->model_type, "llama");
        nl_model_close(m);
    }
}

/* ---- W_out norms, kept layers, embeddings ----------------------------------------------- */

/* Element i of a stored tensor as f32, decoded by hand (no model code). */
static float raw_at(const nl_tensor *t, int64_t i) {
    uint16_t h;
    float f;
    switch (t->dtype) {
    case NL_DT_F32: memcpy(&f, (const char *)t->data + 4 * i, 4); return f;
    case NL_DT_F16: memcpy(&h, (const char *)t->data + 2 * i, 2); return nl_f16_to_f32(h);
    case NL_DT_BF16: memcpy(&h, (const char *)t->data + 2 * i, 2); return nl_bf16_to_f32(h);
    default: break;
    }
    cr_assert_fail("dtype %d", t->dtype);
    return 0;
}

/* The safetensors file of a single-file fixture, mapped by hand. */
typedef struct {
    void *base;
    size_t size;
    nl_safetensors *st;
} raw_file;

static void raw_open(raw_file *r, const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    r->base = nl_read_all(p, &r->size);
    cr_assert_not_null(r->base, "cannot read %s", p);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_safetensors_open(&ctx, p, r->base, r->size, &r->st), NL_OK, "%s", ctx.msg);
}

static void raw_close(raw_file *r) {
    nl_safetensors_close(r->st);
    free(r->base);
}

static nl_tensor raw_get(raw_file *r, const char *name) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tensor t;
    cr_assert_eq(nl_safetensors_get(&ctx, r->st, name, &t), NL_OK, "%s", ctx.msg);
    return t;
}

static nl_model *open_ok(const char *path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, path, &m), NL_OK, "%s", ctx.msg);
    return m;
}

/* ‖W_out[:, i]‖ by brute force from the file: down (D, F) like torch.nn.Linear, or (F, D)
 * for GPT-2's Conv1D (transposed). */
static void check_w_out_norm(const char *dir, const char *down_fmt, int conv1d) {
    need_fixture(dir);
    nl_model *m = open_ok(dir);
    raw_file r;
    raw_open(&r, dir);
    const nl_config *c = nl_model_config(m);
    float *got = malloc((size_t)c->d_ff * sizeof(float));
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    for (int l = 0; l < c->n_layers; l++) {
        char name[256];
        snprintf(name, sizeof name, down_fmt, l);
        nl_tensor t = raw_get(&r, name);
        cr_assert_eq(t.ndim, 2);
        cr_assert_eq(nl_model_w_out_norm(&ctx, m, l, got), NL_OK, "%s", ctx.msg);
        for (int i = 0; i < c->d_ff; i++) {
            double s = 0;
            for (int j = 0; j < c->d_model; j++) {
                double v = raw_at(&t, conv1d ? (int64_t)i * c->d_model + j : (int64_t)j * c->d_ff + i);
                s += v * v;
            }
            cr_assert(fabs(got[i] - sqrt(s)) <= 1e-6 * sqrt(s) + 1e-12, "%s layer %d neuron %d: %.9g, want %.9g", dir,
                      l, i, got[i], sqrt(s));
        }
    }
    free(got);
    raw_close(&r);
    nl_model_close(m);
}

Test(model, w_out_norm_brute_force) {
    check_w_out_norm(FX "/llama_bf16", "model.layers.%d.mlp.down_proj.weight", 0);
    check_w_out_norm(FX "/llama", "model.layers.%d.mlp.down_proj.weight", 0);
    check_w_out_norm(FX "/gpt2", "transformer.h.%d.mlp.c_proj.weight", 1);
}

/* Every float of a layer's views, in a fixed order, appended to buf; returns the count. */
static size_t layer_floats(const nl_model *m, const nl_layer *w, float *buf) {
    const nl_config *c = nl_model_config(m);
    size_t k = 0;
    const float *vec[] = {w->ln1_w, w->ln1_b, w->ln2_w, w->ln2_b};
    for (int i = 0; i < 4; i++)
        if (vec[i]) { memcpy(buf + k, vec[i], (size_t)c->d_model * 4); k += (size_t)c->d_model; }
    const nl_mat *mats[] = {&w->wq, &w->wk, &w->wv, &w->wqkv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    for (int i = 0; i < 8; i++) {
        if (!mats[i]->w) continue;
        size_t n = (size_t)mats[i]->n_out * (size_t)mats[i]->n_in;
        memcpy(buf + k, mats[i]->w, n * 4);
        k += n;
    }
    return k;
}

Test(model, keep_f32_bit_identical) {
    const char *dirs[] = {FX "/llama_bf16", FX "/mistral_sharded"};
    for (int d = 0; d < 2; d++) {
        need_fixture(dirs[d]);
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *a = open_ok(dirs[d]), *b = open_ok(dirs[d]);
        const nl_config *c = nl_model_config(a);
        cr_assert_neq(nl_model_dtype(a), NL_DT_F32);
        cr_assert_eq(nl_model_keep_f32(b, 0), 0, "a 0-byte budget keeps nothing");
        cr_assert_eq(nl_model_keep_f32(b, (size_t)1 << 30), 1);
        size_t cap = (size_t)nl_model_n_params(a);
        float *fa = malloc(cap * 4), *fb = malloc(cap * 4);
        const float *first_view = NULL;
        for (int pass = 0; pass < 2; pass++)
            for (int l = 0; l < c->n_layers; l++) {
                nl_layer wa, wb;
                cr_assert_eq(nl_model_layer(&ctx, a, l, &wa), NL_OK, "%s", ctx.msg);
                cr_assert_eq(nl_model_layer(&ctx, b, l, &wb), NL_OK, "%s", ctx.msg);
                size_t na = layer_floats(a, &wa, fa), nb = layer_floats(b, &wb, fb);
                cr_assert_eq(na, nb);
                cr_assert(na > 0 && memcmp(fa, fb, na * 4) == 0, "%s layer %d pass %d differs", dirs[d], l, pass);
                if (l == 0 && pass == 0) first_view = wb.w_up.w;
            }
        /* kept layers stay valid: layer 0's view did not move after the other layers */
        nl_layer w0;
        cr_assert_eq(nl_model_layer(&ctx, b, 0, &w0), NL_OK);
        cr_assert_eq(w0.w_up.w, first_view);
        cr_assert_eq(nl_model_keep_f32(a, 0), 0);
        free(fa);
        free(fb);
        nl_model_close(a);
        nl_model_close(b);
    }
    /* a model stored in f32 is used in place: nothing to keep */
    if (nl_path_exists(FX "/llama/config.json")) {
        nl_model *m = open_ok(FX "/llama");
        cr_assert_eq(nl_model_keep_f32(m, (size_t)1 << 30), 0);
        nl_model_close(m);
    }
}

/* A hand-made model holding only embeddings: tok (V, D) and learned positions (P, D). */
static nl_model *embed_model(nl_dtype tok_dt, const void *tok, nl_dtype pos_dt, const void *pos, int V, int D, int P) {
    nl_model *m = nl_model_alloc("embed-test");
    cr_assert_not_null(m);
    m->cfg.d_model = D;
    m->cfg.vocab_size = V;
    m->cfg.max_pos = P;
    m->tok_emb = (nl_tensor){.data = tok, .dtype = tok_dt, .ndim = 2, .shape = {V, D}};
    if (pos) m->pos_emb = (nl_tensor){.data = pos, .dtype = pos_dt, .ndim = 2, .shape = {P, D}};
    return m;
}

Test(model, embed_f16_bf16_equals_f32_conversion) {
    enum { V = 7, D = 5, P = 6, N = 4 };
    float tok32[V * D], pos32[P * D];
    uint16_t tok16[V * D], tokb[V * D], pos16[P * D], posb[P * D];
    for (int i = 0; i < V * D; i++) {
        float v = (float)((i * 29) % 41 - 20) / 7.0f; /* not exact in f16/bf16 */
        tok16[i] = nl_f32_to_f16(v);
        tokb[i] = nl_f32_to_bf16(v);
    }
    for (int i = 0; i < P * D; i++) {
        float v = (float)((i * 13) % 23 - 11) / 3.0f;
        pos16[i] = nl_f32_to_f16(v);
        posb[i] = nl_f32_to_bf16(v);
    }
    const int32_t tokens[N] = {3, 0, 6, 3};
    const int pos0 = 2;
    float got[N * D], want[N * D];
    const struct { nl_dtype dt; const uint16_t *tok, *pos; } cases[] = {{NL_DT_F16, tok16, pos16}, {NL_DT_BF16, tokb, posb}};
    for (int k = 0; k < 2; k++) {
        nl_dtype dt = cases[k].dt;
        for (int i = 0; i < V * D; i++)
            tok32[i] = dt == NL_DT_F16 ? nl_f16_to_f32(cases[k].tok[i]) : nl_bf16_to_f32(cases[k].tok[i]);
        for (int i = 0; i < P * D; i++)
            pos32[i] = dt == NL_DT_F16 ? nl_f16_to_f32(cases[k].pos[i]) : nl_bf16_to_f32(cases[k].pos[i]);
        /* stored half + half positions, half + f32 positions, f32 + half positions, no positions */
        for (int variant = 0; variant < 4; variant++) {
            nl_dtype pdt = variant == 1 ? NL_DT_F32 : dt;
            const void *pos = variant == 3 ? NULL : variant == 1 ? (const void *)pos32 : (const void *)cases[k].pos;
            nl_dtype tdt = variant == 2 ? NL_DT_F32 : dt;
            const void *tok = variant == 2 ? (const void *)tok32 : (const void *)cases[k].tok;
            nl_model *m = embed_model(tdt, tok, pdt, pos, V, D, P);
            nl_model *ref = embed_model(NL_DT_F32, tok32, NL_DT_F32, variant == 3 ? NULL : pos32, V, D, P);
            nl_model_embed(m, tokens, N, pos0, got);
            nl_model_embed(ref, tokens, N, pos0, want);
            cr_assert(memcmp(got, want, sizeof got) == 0, "%s variant %d differs from the f32 conversion",
                      nl_dtype_name(dt), variant);
            for (int i = 0; i < N; i++) /* and the f32 model against the arrays themselves */
                for (int j = 0; j < D; j++) {
                    float w = tok32[tokens[i] * D + j] + (variant == 3 ? 0.0f : pos32[(pos0 + i) * D + j]);
                    cr_assert_eq(want[i * D + j], w);
                }
            nl_model_close(m);
            nl_model_close(ref);
        }
    }
}

Test(model, embed_bf16_fixture_matches_file) {
    need_fixture(FX "/llama_bf16");
    nl_model *m = open_ok(FX "/llama_bf16");
    raw_file r;
    raw_open(&r, FX "/llama_bf16");
    nl_tensor t = raw_get(&r, "model.embed_tokens.weight");
    cr_assert_eq(t.dtype, NL_DT_BF16);
    const nl_config *c = nl_model_config(m);
    int32_t tokens[5] = {0, 1, c->vocab_size - 1, 7 % c->vocab_size, 1};
    float *got = malloc(5 * (size_t)c->d_model * 4);
    nl_model_embed(m, tokens, 5, 0, got);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < c->d_model; j++)
            cr_assert_eq(got[i * c->d_model + j], raw_at(&t, (int64_t)tokens[i] * c->d_model + j));
    free(got);
    raw_close(&r);
    nl_model_close(m);
}

/* ---- the architecture table -------------------------------------------------------------- */

/* One fixture per architecture. */
static const struct { nl_arch arch; const char *dir; } arch_fixtures[] = {
    {NL_ARCH_LLAMA, FX "/llama"},   {NL_ARCH_MISTRAL, FX "/mistral_sharded"}, {NL_ARCH_QWEN2, FX "/qwen2"},
    {NL_ARCH_GPT2, FX "/gpt2"},     {NL_ARCH_GPT_NEOX, FX "/gpt_neox"},       {NL_ARCH_PHI, FX "/phi"},
};
#define N_ARCH_FIXTURES ((int)(sizeof arch_fixtures / sizeof arch_fixtures[0]))

Test(model, arch_rows_match_their_structure) {
    for (int i = 0; i < N_ARCH_FIXTURES; i++) {
        const nl_arch_desc *d = nl_arch_desc_of(arch_fixtures[i].arch);
        const nl_name_table *t = d->hf;
        cr_assert_eq(d->arch, arch_fixtures[i].arch);
        cr_assert_str_eq(nl_arch_name(d->arch), d->name);
        cr_assert_not_null(t, "%s has no Hugging Face names", d->name);
        cr_assert(nl_act_parse(d->act_def) >= 0, "%s: activation '%s'", d->name, d->act_def);
        cr_assert_not_null(t->global[NL_G_TOK_EMB].name);
        cr_assert_not_null(t->global[NL_G_NORM_W].name);
        cr_assert_eq(t->global[NL_G_NORM_B].name != NULL, d->norm == NL_NORM_LAYER, "%s: final norm bias", d->name);
        cr_assert_eq(t->global[NL_G_POS_EMB].name != NULL, d->pos == NL_POS_LEARNED, "%s: positions", d->name);
        cr_assert_eq(t->global[NL_G_LM_HEAD].flag, NL_TN_UNTIED, "%s: the LM head is skipped when tied", d->name);
        cr_assert_eq(d->pos == NL_POS_ROPE, d->rotary_def > 0 && d->rotary_def <= 1, "%s: rotary fraction", d->name);
        cr_assert_eq(t->layer[NL_R_W_GATE].name != NULL, d->ffn_gated, "%s: gate", d->name);
        cr_assert_not_null(t->layer[NL_R_W_UP].name);
        cr_assert_not_null(t->layer[NL_R_W_DOWN].name);
        cr_assert_not_null(t->layer[NL_R_WO].name);
        cr_assert_eq(t->layer[NL_R_LN2_W].name == NULL, d->block == NL_BLOCK_SHARED_NORM, "%s: ffn norm", d->name);
        cr_assert_eq(t->layer[NL_R_LN1_B].name != NULL, d->norm == NL_NORM_LAYER, "%s: norm bias", d->name);
        int sep = t->qkv == NL_QKV_SEPARATE;
        cr_assert(sep ? t->layer[NL_R_WQ].name && t->layer[NL_R_WK].name && t->layer[NL_R_WV].name &&
                            !t->layer[NL_R_WQKV].name
                      : t->layer[NL_R_WQKV].name && !t->layer[NL_R_WQ].name,
                  "%s: qkv layout", d->name);
        for (int r = 0; r < NL_R_COUNT; r++) { /* every layer pattern takes the layer index once */
            const char *n = t->layer[r].name;
            if (!n) continue;
            const char *pc = strchr(n, '%');
            cr_assert(pc && pc[1] == 'd' && !strchr(pc + 1, '%'), "%s: pattern '%s'", d->name, n);
        }
        for (int g = 0; g < NL_G_COUNT; g++) cr_assert(!t->global[g].name || !strchr(t->global[g].name, '%'));
    }
    /* every architecture has a fixture above */
    for (int a = 0; a <= NL_ARCH_PHI; a++) {
        int seen = 0;
        for (int i = 0; i < N_ARCH_FIXTURES; i++) seen |= arch_fixtures[i].arch == (nl_arch)a;
        cr_assert(seen, "architecture %s has no fixture in this test", nl_arch_name((nl_arch)a));
    }
}

/* A tensor source that hides one name of another source (to check missing-tensor messages). */
typedef struct {
    nl_tensor_source *inner;
    const char *hide;
    int n_lookups;
} hiding_source;

static nl_status hide_lookup(nl_ctx *ctx, void *impl, const char *name, nl_source_tensor *out, int *found) {
    hiding_source *h = impl;
    h->n_lookups++;
    if (h->hide && strcmp(name, h->hide) == 0) {
        *found = 0;
        return NL_OK;
    }
    return h->inner->lookup(ctx, h->inner->impl, name, out, found);
}

static int same_tensor(const nl_tensor *a, const nl_tensor *b) {
    if (!a->data || !b->data) return !a->data && !b->data;
    if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return memcmp(a->data, b->data, nl_dtype_bytes(a->dtype, nl_tensor_numel(a))) == 0;
}

/* Resolves the fixture's HF names into a fresh model with cfg copied from ref; hide: a name
 * the source pretends not to have. */
static nl_status resolve_fixture(const nl_model *ref, const char *dir, const char *hide, nl_model **out, char *msg,
                                 size_t cap, int *n_lookups) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = nl_model_alloc(dir);
    cr_assert_not_null(m);
    m->cfg = ref->cfg;
    nl_tensor_source *st = NULL;
    cr_assert_eq(nl_st_source_open(&ctx, m, dir, &st), NL_OK, "%s", ctx.msg);
    hiding_source h = {st, hide, 0};
    nl_tensor_source src = {.path = st->path, .impl = &h, .lookup = hide_lookup};
    const nl_arch_desc *d = nl_arch_desc_of(ref->cfg.arch);
    nl_resolver r = {.names = d->hf, .src = &src, .model_type = ref->cfg.model_type, .cfg_name = "config.json",
                     .attn_bias = ref->layers[0].bq.data || ref->layers[0].bqkv.data || ref->layers[0].bo.data,
                     .want_dt = -1};
    nl_status s = nl_arch_resolve(&ctx, m, &r);
    snprintf(msg, cap, "%s", ctx.msg);
    if (n_lookups) *n_lookups = h.n_lookups;
    if (s == NL_OK) cr_assert_eq(r.n_odd, 0);
    nl_tensor_source_close(st);
    *out = m;
    return s;
}

Test(model, arch_names_resolve_on_fixtures) {
    for (int i = 0; i < N_ARCH_FIXTURES; i++) {
        const char *dir = arch_fixtures[i].dir;
        if (!nl_path_exists(dir)) continue;
        nl_model *ref = open_ok(dir);
        cr_assert_eq(ref->cfg.arch, arch_fixtures[i].arch, "%s", dir);
        nl_model *m = NULL;
        char msg[1024];
        int n_lookups = 0;
        cr_assert_eq(resolve_fixture(ref, dir, NULL, &m, msg, sizeof msg, &n_lookups), NL_OK, "%s: %s", dir, msg);
        cr_assert(n_lookups > 0);
        cr_assert_eq(m->conv1d, nl_arch_desc_of(ref->cfg.arch)->hf->conv1d);
        cr_assert_eq(m->qkv_layout, nl_arch_desc_of(ref->cfg.arch)->hf->qkv);
        /* the same tensors as the loader found, role by role */
        for (int g = 0; g < NL_G_COUNT; g++) {
            const nl_tensor *a = (const nl_tensor *)((const char *)m + nl_global_roles[g].off),
                            *b = (const nl_tensor *)((const char *)ref + nl_global_roles[g].off);
            cr_assert(same_tensor(a, b), "%s: role %s differs", dir, nl_global_roles[g].role);
        }
        int n_present = 0;
        for (int l = 0; l < ref->cfg.n_layers; l++)
            for (int r = 0; r < NL_R_COUNT; r++) {
                const nl_tensor *a = (const nl_tensor *)((const char *)&m->layers[l] + nl_layer_roles[r].off),
                                *b = (const nl_tensor *)((const char *)&ref->layers[l] + nl_layer_roles[r].off);
                cr_assert(same_tensor(a, b), "%s: layer %d role %s differs", dir, l, nl_layer_roles[r].role);
                n_present += a->data != NULL;
            }
        cr_assert(n_present >= 7 * ref->cfg.n_layers, "%s: only %d layer tensors", dir, n_present);
        cr_assert_eq(nl_model_validate(&(nl_ctx){0}, m, dir), NL_OK);
        nl_model_close(m);
        nl_model_close(ref);
    }
}

Test(model, arch_missing_tensor_is_named) {
    int n_checked = 0;
    for (int i = 0; i < N_ARCH_FIXTURES; i++) {
        const char *dir = arch_fixtures[i].dir;
        if (!nl_path_exists(dir)) continue;
        nl_model *ref = open_ok(dir);
        const nl_name_table *t = nl_arch_desc_of(ref->cfg.arch)->hf;
        const int last = ref->cfg.n_layers - 1;
        for (int r = 0; r < NL_R_COUNT; r++) { /* every required role of the last layer, hidden in turn */
            if (!t->layer[r].name || t->layer[r].flag != NL_TN_REQ) continue;
            char name[256], msg[1024];
            snprintf(name, sizeof name, t->layer[r].name, last);
            nl_model *m = NULL;
            cr_assert_eq(resolve_fixture(ref, dir, name, &m, msg, sizeof msg, NULL), NL_EFORMAT, "%s without %s", dir,
                         name);
            char want[512];
            snprintf(want, sizeof want, "missing tensor '%s' (model_type %s)", name, ref->cfg.model_type);
            cr_assert(strstr(msg, want), "%s: got '%s', want '%s'", dir, msg, want);
            cr_assert(strstr(msg, ".safetensors"), "the message names the file: %s", msg);
            nl_model_close(m);
            n_checked++;
        }
        if (!ref->cfg.tie_embeddings) { /* an untied head is required too */
            char msg[1024];
            nl_model *m = NULL;
            cr_assert_eq(resolve_fixture(ref, dir, t->global[NL_G_LM_HEAD].name, &m, msg, sizeof msg, NULL), NL_EFORMAT);
            cr_assert(strstr(msg, t->global[NL_G_LM_HEAD].name), "%s", msg);
            nl_model_close(m);
        }
        nl_model_close(ref);
    }
    if (n_checked == 0) cr_skip_test("no fixtures");
    cr_assert(n_checked >= 30, "%d", n_checked);
}

/* ---- robustness: headers bounded by the file, non-finite numbers ------------------------ */

Test(model, llama2c_header_bounded_by_file_size) {
    /* dims within the plausibility bounds whose weights would need petabytes: refused from
     * the file size alone (nothing of that size is allocated) */
    const int32_t h[7] = {1 << 20, 1 << 22, 4096, 16, 16, 1 << 24, 1 << 24};
    unsigned char b[28 + 64] = {0};
    memcpy(b, h, sizeof h);
    const char *p = tmp_path("huge.bin");
    write_bytes(p, b, sizeof b);
    nl_model *m = NULL;
    char msg[1024];
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EFORMAT, "%s", msg);
    cr_assert(strstr(msg, "huge.bin': file has 92 bytes, its header (dim 1048576, layers 4096, vocab 16777216) implies "),
              "%s", msg);
    /* one float short of a valid file */
    p = tmp_path("short.bin");
    write_llama2c(p);
    cr_assert_eq(truncate(p, 28 + 4 * 10), 0);
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_EFORMAT, "%s", msg);
    cr_assert(strstr(msg, "short.bin': file has 68 bytes"), "%s", msg);
}

Test(model, validate_rechecks_config_floats) {
    const char *p = tmp_path("ok.bin");
    write_llama2c(p);
    nl_model *m = NULL;
    char msg[1024];
    cr_assert_eq(open_msg(p, &m, msg, sizeof msg), NL_OK, "%s", msg);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_model_validate(&ctx, m, p), NL_OK, "%s", ctx.msg);
    const nl_config saved = m->cfg;
    m->cfg.rope_theta = 0;
    cr_assert_eq(nl_model_validate(&ctx, m, p), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "rope theta 0 is not a positive finite float") && strstr(ctx.msg, "ok.bin'"), "%s", ctx.msg);
    m->cfg = saved;
    m->cfg.norm_eps = NAN;
    cr_assert_eq(nl_model_validate(&ctx, m, p), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "norm epsilon nan is not a finite float"), "%s", ctx.msg);
    m->cfg = saved;
    m->cfg.rope_scaling = NL_ROPE_SCALING_LINEAR;
    m->cfg.rope_factor = INFINITY;
    cr_assert_eq(nl_model_validate(&ctx, m, p), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "rope scaling factor inf"), "%s", ctx.msg);
    m->cfg = saved;
    m->cfg.head_dim = 4096; /* nl_rope's tables hold 512 pairs: refused instead of an assertion */
    m->cfg.rotary_dim = 2048;
    cr_assert_eq(nl_model_validate(&ctx, m, p), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "rotary dimension 2048 is not supported (at most 1024)"), "%s", ctx.msg);
    m->cfg = saved;
    nl_model_close(m);
}

/* llama2.c weights with one NaN: refused at open, naming the file, the tensor, the layer and
 * the element. Perplexity's own guard (a non-finite loss fails naming the model, the document
 * and its line, instead of reporting nan; ppl, perturb and prune all score through
 * nl_ppl_run) is checked by writing the NaN into the file after it was opened and checked: the
 * private mapping still shows the file's pages it has not copied. */
Test(model, nan_weights_make_the_loss_an_error) {
    const char *good = tmp_path("good.bin"), *bad = tmp_path("nan.bin"), *late = tmp_path("late.bin");
    write_llama2c(good);
    write_llama2c(bad);
    write_llama2c(late);
    const float nan = NAN;
    const long w_down0 = 28 + 4L * (10 * 8 + 8 + 4 * 8 * 8 + 8 + 16 * 8); /* first element of layer 0's w2 */
    FILE *f = fopen(bad, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, w_down0, SEEK_SET), 0);
    cr_assert_eq(fwrite(&nan, 4, 1, f), 1);
    fclose(f);
    {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = (void *)1;
        cr_assert_eq(nl_model_open(&ctx, bad, &m), NL_EFORMAT, "%s", ctx.msg);
        cr_assert_null(m);
        char want[512];
        snprintf(want, sizeof want, "'%s': the FFN down weight (w2) of layer 0 holds NaN at [0, 0]: the weights must be finite", bad);
        cr_assert_str_eq(ctx.msg, want);
    }

    int32_t t0[] = {1, 2, 3}, t1[] = {4, 5, 6, 7};
    nl_doc docs[2] = {{t0, 3, 3, 1, "", 4}, {t1, 4, 4, 1, "", 7}};
    char *labels[1] = {""};
    nl_dataset ds = {.docs = docs, .n_docs = 2, .n_tokens = 7, .path = "mem", .labels = labels, .n_labels = 1};
    for (int which = 0; which < 2; which++) {
        const char *path = which ? late : good;
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = NULL;
        cr_assert_eq(nl_model_open(&ctx, path, &m), NL_OK, "%s", ctx.msg);
        if (which) { /* the NaN arrives after the check */
            f = fopen(late, "r+b");
            cr_assert_not_null(f);
            cr_assert_eq(fseek(f, w_down0, SEEK_SET), 0);
            cr_assert_eq(fwrite(&nan, 4, 1, f), 1);
            fclose(f);
        }
        nl_forward *fw = NULL;
        cr_assert_eq(nl_forward_create(&ctx, m, 4, 4, &fw), NL_OK, "%s", ctx.msg);
        nl_ppl_result r;
        nl_status st = nl_ppl_run(&ctx, fw, &ds, 0, NULL, &r);
        if (!which) {
            cr_assert_eq(st, NL_OK, "%s", ctx.msg);
            cr_assert(isfinite(r.total.nll) && r.total.n == 5);
            nl_ppl_result_release(&r);
        } else {
            cr_assert_eq(st, NL_EFORMAT, "NaN weights gave a loss: %s", ctx.msg);
            char want[512];
            snprintf(want, sizeof want, "'%s': the loss is not finite (nan) at document 1 (line 4)", late);
            cr_assert(strstr(ctx.msg, want), "got '%s', want '%s'", ctx.msg, want);
            cr_assert(strstr(ctx.msg, "the weights or the config give NaN/Inf"), "%s", ctx.msg);
            cr_assert_null(r.by_doc); /* released on failure */
        }
        nl_forward_destroy(fw);
        nl_model_close(m);
    }
}
