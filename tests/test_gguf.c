/* test_gguf.c — the GGUF container reader, the dequantisers and the GGUF model loader.
 *
 * 1. ../shared/models/gguf (files made with llama.cpp's converter conventions and ggml's own
 *    quantisation code): every metadata key (type and value), every tensor (type, shape,
 *    offset) and the SHA-256 and sum of every dequantised tensor equal expected.json; the
 *    un-permuted q/k rows of the SiLU zoo model equal its Hugging Face folder's within the
 *    file's quantisation error. SKIPs when ../shared is absent.
 * 2. Every quantised format against values computed element by element from the format's
 *    definition, on blocks of random bytes (also the formats no fixture holds: Q4_1, Q5_1,
 *    Q2_K, Q3_K, Q5_K).
 * 3. The PyTorch fixtures of tests/fixtures/hf (llama, qwen2, gpt2, phi) written as GGUF files
 *    the way convert_hf_to_gguf.py writes them (names, q/k permutation for llama, Conv1D
 *    weights transposed for gpt2), in F32 and F16: logits equal the PyTorch reference.
 * 4. Bad files: one NL_E* status and a one-line message naming the file for each.
 * 5. Mixture of experts: the Mixtral / Qwen2-MoE / Qwen3-MoE fixtures written as llama.cpp's
 *    converter writes them (stacked 3-D experts) load with the folder's config and logits; MoE
 *    exports round-trip; a missing expert tensor, a wrong 3-D shape, expert_used_count >
 *    expert_count and a missing router each fail with one line naming the file.
 */
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "neuronlab/forward.h"
#include "neuronlab/gguf.h"
#include "neuronlab/model.h"
#include "neuronlab/safetensors.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_gguf")
TestSuite(gguf, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir);

#define GG_DIR NL_SHARED "/models/gguf"

/* ---- SHA-256 (FIPS 180-4), for the fixtures' dequant_sha256 ------------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void sha256_hex(const void *data, size_t n, char out[65]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha256_block(h, p + i);
    uint8_t last[128] = {0};
    size_t r = n - i;
    memcpy(last, p + i, r);
    last[r] = 0x80;
    size_t tot = r + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) last[tot - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(h, last);
    if (tot == 128) sha256_block(h, last + 64);
    for (int k = 0; k < 8; k++) sprintf(out + 8 * k, "%08x", h[k]);
}

Test(gguf, sha256_known_answers) {
    char hex[65];
    sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---- ggml type id → nl_dtype ------------------------------------------------------------ */

static int dt_of(uint32_t t) {
    switch (t) {
    case 0: return NL_DT_F32; case 1: return NL_DT_F16; case 30: return NL_DT_BF16; case 2: return NL_DT_Q4_0;
    case 3: return NL_DT_Q4_1; case 6: return NL_DT_Q5_0; case 7: return NL_DT_Q5_1; case 8: return NL_DT_Q8_0;
    case 10: return NL_DT_Q2_K; case 11: return NL_DT_Q3_K; case 12: return NL_DT_Q4_K; case 13: return NL_DT_Q5_K;
    case 14: return NL_DT_Q6_K; default: return -1;
    }
}

/* ---- 1. the shared fixtures --------------------------------------------------------------- */

static const char *const FIXTURES[][2] = {
    {"stories260K", "stories260K-F32.gguf"}, {"stories260K", "stories260K-F16.gguf"},
    {"stories260K", "stories260K-BF16.gguf"}, {"stories260K", "stories260K-Q8_0.gguf"},
    {"stories260K", "stories260K-Q4_0.gguf"}, {"stories260K", "stories260K-Q4_K_M.gguf"},
    {"silu", "silu-Q8_0.gguf"}, {"silu", "silu-Q4_K_M.gguf"},
};

static const char *vtype_short(const nl_gguf_kv *kv, char *buf) {
    static const char *const s[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
    if (kv->type == NL_GGUF_ARRAY) sprintf(buf, "arr[%s]", s[kv->arr_type]);
    else sprintf(buf, "%s", s[kv->type]);
    return buf;
}

static void check_fixture(const char *folder, const char *file) {
    char path[512], ej[512];
    snprintf(path, sizeof path, GG_DIR "/%s/%s", folder, file);
    snprintf(ej, sizeof ej, GG_DIR "/%s/expected.json", folder);
    if (!nl_path_exists(path)) cr_skip_test("../shared/models/gguf is absent: skipping %s", file);
    json_t *root = json_load_file(ej, 0, NULL);
    cr_assert_not_null(root, "cannot read %s", ej);
    json_t *x = json_object_get(json_object_get(root, "files"), file);
    cr_assert_not_null(x, "%s not in %s", file, ej);
    size_t n;
    void *buf = nl_read_all(path, &n);
    cr_assert_not_null(buf);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_gguf *g = NULL;
    cr_assert_eq(nl_gguf_parse(&ctx, path, buf, n, &g), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_gguf_version(g), 3);
    cr_assert_eq((json_int_t)nl_gguf_n_kv(g), json_integer_value(json_object_get(x, "n_kv")));
    cr_assert_eq((json_int_t)nl_gguf_n_tensors(g), json_integer_value(json_object_get(x, "n_tensors")));
    cr_assert_eq((json_int_t)nl_gguf_data_offset(g), json_integer_value(json_object_get(x, "data_offset")));
    /* metadata, in file order */
    json_t *md = json_object_get(x, "metadata");
    cr_assert_eq((int64_t)json_object_size(md), nl_gguf_n_kv(g));
    int64_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(md, key, v) {
        const nl_gguf_kv *kv = nl_gguf_kv_at(g, i++);
        char ts[32];
        cr_assert_str_eq(kv->key, key, "%s: key %lld", file, (long long)i - 1);
        cr_assert_str_eq(vtype_short(kv, ts), json_string_value(json_object_get(v, "type")), "%s: %s", file, key);
        json_t *val = json_object_get(v, "value");
        if (kv->type == NL_GGUF_ARRAY) {
            cr_assert_eq((json_int_t)kv->n, json_integer_value(json_object_get(v, "n")), "%s: %s", file, key);
        } else if (kv->type == NL_GGUF_STRING) {
            const char *s;
            size_t sn;
            cr_assert_eq(nl_gguf_get_str(&ctx, g, key, &s, &sn, NULL), NL_OK);
            cr_assert(sn == strlen(json_string_value(val)) && !memcmp(s, json_string_value(val), sn), "%s: %s", file, key);
        } else if (kv->type == NL_GGUF_BOOL) {
            int b;
            cr_assert_eq(nl_gguf_get_bool(&ctx, g, key, &b, NULL), NL_OK);
            cr_assert_eq(b, json_is_true(val), "%s: %s", file, key);
        } else {
            double d;
            cr_assert_eq(nl_gguf_get_f64(&ctx, g, key, &d, NULL), NL_OK);
            cr_assert_eq(d, json_number_value(val), "%s: %s = %.17g, expected %.17g", file, key, d, json_number_value(val));
        }
    }
    /* tensors: type, shape, offset; dequantised values bit for bit (SHA-256) and their sum */
    json_t *ts = json_object_get(x, "tensors");
    cr_assert_eq((int64_t)json_array_size(ts), nl_gguf_n_tensors(g));
    size_t k;
    json_t *te;
    json_array_foreach(ts, k, te) {
        const char *name = json_string_value(json_object_get(te, "name"));
        const nl_gguf_tensor *t = nl_gguf_tensor_at(g, (int64_t)k);
        cr_assert_str_eq(t->name, name);
        cr_assert_eq(nl_gguf_find_tensor(g, name), t);
        cr_assert_eq((json_int_t)t->type, json_integer_value(json_object_get(te, "ggml_type")), "%s", name);
        cr_assert_str_eq(nl_ggml_type_name(t->type), json_string_value(json_object_get(te, "type")));
        cr_assert_eq((json_int_t)t->offset, json_integer_value(json_object_get(te, "offset")), "%s", name);
        json_t *ne = json_object_get(te, "ne");
        cr_assert_eq((int)json_array_size(ne), t->n_dims);
        int64_t numel = 1;
        for (int d = 0; d < t->n_dims; d++) {
            cr_assert_eq(t->ne[d], json_integer_value(json_array_get(ne, (size_t)d)), "%s dim %d", name, d);
            numel *= t->ne[d];
        }
        int dt = dt_of(t->type);
        cr_assert(dt >= 0, "%s: type %u has no dequantiser", name, t->type);
        float *y = malloc((size_t)numel * sizeof *y);
        nl_dtype_info_of((nl_dtype)dt)->to_f32(t->data, y, numel);
        char hex[65];
        sha256_hex(y, (size_t)numel * sizeof *y, hex);
        cr_assert_str_eq(hex, json_string_value(json_object_get(te, "dequant_sha256")), "%s: %s (%s)", file, name,
                         nl_ggml_type_name(t->type));
        double sum = 0, want = json_number_value(json_object_get(te, "dequant_sum"));
        for (int64_t e = 0; e < numel; e++) sum += y[e];
        cr_assert(fabs(sum - want) <= 1e-9 * (1 + fabs(want)), "%s: sum %.17g, expected %.17g", name, sum, want);
        free(y);
    }
    nl_gguf_close(g);
    free(buf);
    json_decref(root);
}

Test(gguf, fixture_stories260K_f32) { check_fixture(FIXTURES[0][0], FIXTURES[0][1]); }
Test(gguf, fixture_stories260K_f16) { check_fixture(FIXTURES[1][0], FIXTURES[1][1]); }
Test(gguf, fixture_stories260K_bf16) { check_fixture(FIXTURES[2][0], FIXTURES[2][1]); }
Test(gguf, fixture_stories260K_q8_0) { check_fixture(FIXTURES[3][0], FIXTURES[3][1]); }
Test(gguf, fixture_stories260K_q4_0) { check_fixture(FIXTURES[4][0], FIXTURES[4][1]); }
Test(gguf, fixture_stories260K_q4_k_m) { check_fixture(FIXTURES[5][0], FIXTURES[5][1]); }
Test(gguf, fixture_silu_q8_0) { check_fixture(FIXTURES[6][0], FIXTURES[6][1]); }
Test(gguf, fixture_silu_q4_k_m) { check_fixture(FIXTURES[7][0], FIXTURES[7][1]); }

/* The model's q/k rows (un-permuted from llama.cpp's RoPE order) equal the HF folder's within
 * the file's dequantisation error, and every other layer matrix likewise: a wrong permutation
 * direction would put rows of other heads side by side (errors of the size of the weights). */
static void check_against_folder(const char *file, double tol) {
    char path[512];
    snprintf(path, sizeof path, GG_DIR "/silu/%s", file);
    if (!nl_path_exists(path)) cr_skip_test("../shared/models/gguf is absent");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *gm = NULL, *hm = NULL;
    cr_assert_eq(nl_model_open(&ctx, path, &gm), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_model_open(&ctx, "notebooks-data/models/silu", &hm), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(gm);
    cr_assert_eq(c->n_layers, nl_model_config(hm)->n_layers);
    cr_assert(c->tie_embeddings);
    cr_assert_eq(c->act, NL_ACT_SILU);
    for (int l = 0; l < c->n_layers; l++) {
        nl_layer a, b;
        cr_assert_eq(nl_model_layer(&ctx, gm, l, &a), NL_OK, "%s", ctx.msg);
        /* copy: the next nl_model_layer call on hm reuses its own slot only */
        cr_assert_eq(nl_model_layer(&ctx, hm, l, &b), NL_OK, "%s", ctx.msg);
        const nl_mat *pa[] = {&a.wq, &a.wk, &a.wv, &a.wo, &a.w_gate, &a.w_up, &a.w_down};
        const nl_mat *pb[] = {&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down};
        for (int k = 0; k < 7; k++) {
            cr_assert(pa[k]->n_out == pb[k]->n_out && pa[k]->n_in == pb[k]->n_in && !pa[k]->trans);
            nl_check_close(pa[k]->w, pb[k]->w, (size_t)pa[k]->n_out * pa[k]->n_in, tol);
        }
        nl_check_close(a.ln1_w, b.ln1_w, (size_t)c->d_model, 0);
    }
    nl_model_close(gm);
    nl_model_close(hm);
}

/* the tolerance: the largest |dequantised - original| expected.json lists for the file */
static double file_max_err(const char *file) {
    json_t *root = json_load_file(GG_DIR "/silu/expected.json", 0, NULL);
    if (!root) cr_skip_test("../shared/models/gguf is absent");
    double e = json_number_value(json_object_get(json_object_get(json_object_get(root, "summary"), file), "max_abs_err"));
    json_decref(root);
    cr_assert(e > 0 && e < 0.1, "max_abs_err of %s: %g", file, e);
    return e;
}

Test(gguf, silu_q8_0_equals_folder) { check_against_folder("silu-Q8_0.gguf", file_max_err("silu-Q8_0.gguf")); }
Test(gguf, silu_q4_k_m_equals_folder) { check_against_folder("silu-Q4_K_M.gguf", file_max_err("silu-Q4_K_M.gguf")); }

/* ---- 2. every quantised format from its definition ------------------------------------------ */

static float h(const uint8_t *p) { return nl_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
/* a random finite half with a small exponent, for scales */
static void rand_half(uint8_t *p, unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    uint16_t v = (uint16_t)(((*s >> 16) & 0x83FF) | 0x2000); /* sign, exponent 8..15, mantissa */
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* element e of one block, computed directly from the format definition */
static float ref_elem(nl_dtype dt, const uint8_t *b, int e) {
    switch (dt) {
    case NL_DT_Q4_0: { int q = e < 16 ? b[2 + e] & 15 : b[2 + e - 16] >> 4; return (float)(q - 8) * h(b); }
    case NL_DT_Q4_1: { int q = e < 16 ? b[4 + e] & 15 : b[4 + e - 16] >> 4; return (float)q * h(b) + h(b + 2); }
    case NL_DT_Q5_0: case NL_DT_Q5_1: {
        int o = dt == NL_DT_Q5_0 ? 2 : 4;
        uint32_t qh = (uint32_t)b[o] | (uint32_t)b[o + 1] << 8 | (uint32_t)b[o + 2] << 16 | (uint32_t)b[o + 3] << 24;
        int lo = e < 16 ? b[o + 4 + e] & 15 : b[o + 4 + e - 16] >> 4, q = lo | (int)((qh >> e) & 1) << 4;
        return dt == NL_DT_Q5_0 ? (float)(q - 16) * h(b) : (float)q * h(b) + h(b + 2);
    }
    case NL_DT_Q8_0: return (float)(int8_t)b[2 + e] * h(b);
    case NL_DT_Q2_K: { /* 16 groups of 16; group g: scale byte g; q: 2 bits of qs[32·(g/8) + e%32] at 2·((e%128)/32) */
        int g = e / 16, byte = 32 * (e / 128) + (e % 32), shift = 2 * ((e % 128) / 32);
        int q = (b[16 + byte] >> shift) & 3;
        return h(b + 80) * (float)(b[g] & 15) * (float)q - h(b + 82) * (float)(b[g] >> 4);
    }
    case NL_DT_Q3_K: {
        int g = e / 16, byte = 32 * (e / 128) + (e % 32), shift = 2 * ((e % 128) / 32);
        int lo = g < 8 ? b[96 + g] & 15 : b[96 + g - 8] >> 4, hi = (b[96 + 8 + g % 4] >> (2 * (g / 4))) & 3;
        int sc = (lo | hi << 4) - 32, hbit = (b[e % 32] >> (e / 32)) & 1;
        int q = ((b[32 + byte] >> shift) & 3) - (hbit ? 0 : 4);
        return h(b + 108) * (float)sc * (float)q;
    }
    case NL_DT_Q4_K: case NL_DT_Q5_K: { /* 8 groups of 32; pair of groups per 32 q bytes: low nibbles, high nibbles */
        int g = e / 32;
        const uint8_t *s = b + 4;
        int sc = g < 4 ? s[g] & 63 : (s[g + 4] & 15) | (s[g - 4] >> 6) << 4;
        int mn = g < 4 ? s[g + 4] & 63 : (s[g + 4] >> 4) | (s[g] >> 6) << 4;
        int qo = dt == NL_DT_Q4_K ? 16 : 48, byte = qo + 32 * (g / 2) + e % 32;
        int q = g % 2 ? b[byte] >> 4 : b[byte] & 15;
        if (dt == NL_DT_Q5_K) q += ((b[16 + e % 32] >> g) & 1) << 4;
        return h(b) * (float)sc * (float)q - h(b + 2) * (float)mn;
    }
    case NL_DT_Q6_K: { /* halves of 128; within: 4 quarters of 32 (ql low/high nibble of bytes 0-31 / 32-63, qh bits 2·quarter) */
        int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
        const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
        int low = quarter % 2 ? ql[l + 32] : ql[l];
        low = quarter < 2 ? low & 15 : low >> 4;
        int q = (low | ((qh[l] >> (2 * quarter)) & 3) << 4) - 32;
        int sc = (int8_t)b[192 + 8 * half + 2 * quarter + l / 16];
        return h(b + 208) * (float)sc * (float)q;
    }
    default: return NAN;
    }
}

Test(gguf, dequantisers_follow_the_format_definitions) {
    const nl_dtype dts[] = {NL_DT_Q4_0, NL_DT_Q4_1, NL_DT_Q5_0, NL_DT_Q5_1, NL_DT_Q8_0,
                            NL_DT_Q2_K, NL_DT_Q3_K, NL_DT_Q4_K, NL_DT_Q5_K, NL_DT_Q6_K};
    /* where each format keeps its f16 scale fields */
    const int half_at[][2] = {{0, -1}, {0, 2}, {0, -1}, {0, 2}, {0, -1}, {80, 82}, {108, -1}, {0, 2}, {0, 2}, {208, -1}};
    unsigned seed = 12345;
    for (size_t k = 0; k < sizeof dts / sizeof *dts; k++) {
        const nl_dtype_info *d = nl_dtype_info_of(dts[k]);
        const int nb = 3, n = nb * d->block_elems;
        uint8_t *raw = malloc((size_t)nb * d->block_bytes + 1);
        float *got = malloc((size_t)n * sizeof *got);
        for (int rep = 0; rep < 20; rep++) {
            uint8_t *blk = raw + (rep & 1); /* also unaligned */
            for (int i = 0; i < nb * d->block_bytes; i++) {
                seed = seed * 1103515245u + 12345u;
                blk[i] = (uint8_t)(seed >> 16);
            }
            for (int b = 0; b < nb; b++)
                for (int j = 0; j < 2; j++)
                    if (half_at[k][j] >= 0) rand_half(blk + b * d->block_bytes + half_at[k][j], &seed);
            d->to_f32(blk, got, n);
            for (int e = 0; e < n; e++) {
                float want = ref_elem(dts[k], blk + (e / d->block_elems) * d->block_bytes, e % d->block_elems);
                cr_assert(memcmp(&want, &got[e], 4) == 0, "%s element %d: got %.9g, the definition gives %.9g", d->name, e,
                          got[e], want);
            }
        }
        free(raw);
        free(got);
    }
}

/* ---- a small GGUF writer (the layout of gguf-py's GGUFWriter) ------------------------------- */

typedef struct { uint8_t *p; size_t n, cap; } gbuf;
static void put(gbuf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }

typedef struct {
    char name[96];
    uint32_t type;
    int nd;
    uint64_t ne[4];
    void *data;
    size_t nbytes;
} gtensor;

typedef struct {
    gbuf kv;
    uint64_t n_kv;
    gtensor t[160];
    int n_t;
} gwriter;

static void kv_key(gwriter *w, const char *k, uint32_t type) { put_str(&w->kv, k); put_u32(&w->kv, type); w->n_kv++; }
static void kv_str(gwriter *w, const char *k, const char *v) { kv_key(w, k, NL_GGUF_STRING); put_str(&w->kv, v); }
static void kv_u32(gwriter *w, const char *k, uint32_t v) { kv_key(w, k, NL_GGUF_U32); put_u32(&w->kv, v); }
static void kv_f32(gwriter *w, const char *k, float v) { kv_key(w, k, NL_GGUF_F32); put(&w->kv, &v, 4); }

static void add_tensor(gwriter *w, const char *name, uint32_t type, int nd, const uint64_t *ne, const void *data,
                       size_t nbytes) {
    cr_assert(w->n_t < 160);
    gtensor *t = &w->t[w->n_t++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->nd = nd;
    for (int d = 0; d < nd; d++) t->ne[d] = ne[d];
    t->data = malloc(nbytes ? nbytes : 1);
    memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
}

/* The file's bytes: header, KV, tensor infos, padding to 32, data (each tensor padded to 32). */
static gbuf gw_bytes(gwriter *w, uint32_t version) {
    gbuf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, version);
    put_u64(&b, (uint64_t)w->n_t);
    put_u64(&b, w->n_kv);
    put(&b, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        put_str(&b, w->t[i].name);
        put_u32(&b, (uint32_t)w->t[i].nd);
        for (int d = 0; d < w->t[i].nd; d++) put_u64(&b, w->t[i].ne[d]);
        put_u32(&b, w->t[i].type);
        put_u64(&b, off);
        off += (w->t[i].nbytes + 31) / 32 * 32;
    }
    static const uint8_t zero[32];
    put(&b, zero, (32 - b.n % 32) % 32);
    for (int i = 0; i < w->n_t; i++) {
        put(&b, w->t[i].data, w->t[i].nbytes);
        put(&b, zero, (32 - w->t[i].nbytes % 32) % 32);
    }
    return b;
}

static void gw_free(gwriter *w) {
    for (int i = 0; i < w->n_t; i++) free(w->t[i].data);
    free(w->kv.p);
    memset(w, 0, sizeof *w);
}

static const char *write_bytes(const char *name, const void *p, size_t n) {
    const char *dst = tmp_path(name);
    FILE *f = fopen(dst, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
    return dst;
}

static const char *gw_write(gwriter *w, const char *name) {
    gbuf b = gw_bytes(w, 3);
    const char *p = write_bytes(name, b.p, b.n);
    free(b.p);
    return p;
}

/* ---- 3. the PyTorch fixtures converted as convert_hf_to_gguf.py does ------------------------ */

typedef enum { TX_NONE, TX_PERM_Q, TX_PERM_K, TX_TRANSPOSE } tx_kind;
typedef struct { const char *hf, *gg; tx_kind tx; } name_map;

static const name_map MAP_LLAMA[] = {
    {"model.embed_tokens.weight", "token_embd.weight", TX_NONE}, {"model.norm.weight", "output_norm.weight", TX_NONE},
    {"lm_head.weight", "output.weight", TX_NONE},
    {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight", TX_NONE},
    {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight", TX_NONE},
    {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", TX_PERM_Q},
    {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", TX_PERM_K},
    {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias", TX_PERM_Q},
    {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias", TX_PERM_K},
    {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", TX_NONE},
    {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias", TX_NONE},
    {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight", TX_NONE},
    {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight", TX_NONE},
    {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight", TX_NONE},
    {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight", TX_NONE},
    {NULL, NULL, TX_NONE}};

static const name_map MAP_GPT2[] = {
    {"transformer.wte.weight", "token_embd.weight", TX_NONE}, {"transformer.wpe.weight", "position_embd.weight", TX_NONE},
    {"transformer.ln_f.weight", "output_norm.weight", TX_NONE}, {"transformer.ln_f.bias", "output_norm.bias", TX_NONE},
    {"transformer.h.%d.ln_1.weight", "blk.%d.attn_norm.weight", TX_NONE},
    {"transformer.h.%d.ln_1.bias", "blk.%d.attn_norm.bias", TX_NONE},
    {"transformer.h.%d.ln_2.weight", "blk.%d.ffn_norm.weight", TX_NONE},
    {"transformer.h.%d.ln_2.bias", "blk.%d.ffn_norm.bias", TX_NONE},
    {"transformer.h.%d.attn.c_attn.weight", "blk.%d.attn_qkv.weight", TX_TRANSPOSE},
    {"transformer.h.%d.attn.c_attn.bias", "blk.%d.attn_qkv.bias", TX_NONE},
    {"transformer.h.%d.attn.c_proj.weight", "blk.%d.attn_output.weight", TX_TRANSPOSE},
    {"transformer.h.%d.attn.c_proj.bias", "blk.%d.attn_output.bias", TX_NONE},
    {"transformer.h.%d.mlp.c_fc.weight", "blk.%d.ffn_up.weight", TX_TRANSPOSE},
    {"transformer.h.%d.mlp.c_fc.bias", "blk.%d.ffn_up.bias", TX_NONE},
    {"transformer.h.%d.mlp.c_proj.weight", "blk.%d.ffn_down.weight", TX_TRANSPOSE},
    {"transformer.h.%d.mlp.c_proj.bias", "blk.%d.ffn_down.bias", TX_NONE},
    {NULL, NULL, TX_NONE}};

static const name_map MAP_PHI[] = {
    {"model.embed_tokens.weight", "token_embd.weight", TX_NONE},
    {"model.final_layernorm.weight", "output_norm.weight", TX_NONE},
    {"model.final_layernorm.bias", "output_norm.bias", TX_NONE},
    {"lm_head.weight", "output.weight", TX_NONE}, {"lm_head.bias", "output.bias", TX_NONE},
    {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight", TX_NONE},
    {"model.layers.%d.input_layernorm.bias", "blk.%d.attn_norm.bias", TX_NONE},
    {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", TX_NONE},
    {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias", TX_NONE},
    {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", TX_NONE},
    {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias", TX_NONE},
    {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", TX_NONE},
    {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias", TX_NONE},
    {"model.layers.%d.self_attn.dense.weight", "blk.%d.attn_output.weight", TX_NONE},
    {"model.layers.%d.self_attn.dense.bias", "blk.%d.attn_output.bias", TX_NONE},
    {"model.layers.%d.mlp.fc1.weight", "blk.%d.ffn_up.weight", TX_NONE},
    {"model.layers.%d.mlp.fc1.bias", "blk.%d.ffn_up.bias", TX_NONE},
    {"model.layers.%d.mlp.fc2.weight", "blk.%d.ffn_down.weight", TX_NONE},
    {"model.layers.%d.mlp.fc2.bias", "blk.%d.ffn_down.bias", TX_NONE},
    {NULL, NULL, TX_NONE}};

static json_t *load_json(const char *dir, const char *file) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    json_t *j = json_load_file(p, 0, NULL);
    cr_assert_not_null(j, "cannot read %s", p);
    return j;
}

static int jint(json_t *o, const char *k, int def) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

/* HF fixture folder → GGUF (F32, or F16 for the 2-D weights like the converter's --outtype f16). */
/* q/k/v biases added to every layer (bias != 0): the same values for every architecture,
 * written in llama.cpp's RoPE row order for llama (the converter permutes q_proj.bias and
 * k_proj.bias with the weights). */
static int g_add_bias;

static const char *convert_fixture(const char *dir, const char *arch, const name_map *map, int f16, const char *out) {
    json_t *cfg = load_json(dir, "config.json");
    char stp[512];
    snprintf(stp, sizeof stp, "%s/model.safetensors", dir);
    size_t n;
    void *buf = nl_read_all(stp, &n);
    cr_assert_not_null(buf);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_safetensors *st;
    cr_assert_eq(nl_safetensors_open(&ctx, stp, buf, n, &st), NL_OK, "%s", ctx.msg);
    const int gpt2 = !strcmp(arch, "gpt2");
    int L = jint(cfg, gpt2 ? "n_layer" : "num_hidden_layers", 0), D = jint(cfg, gpt2 ? "n_embd" : "hidden_size", 0),
        H = jint(cfg, gpt2 ? "n_head" : "num_attention_heads", 0), Hk = jint(cfg, "num_key_value_heads", H);
    int F = jint(cfg, gpt2 ? "n_inner" : "intermediate_size", 4 * D);
    gwriter w = {0};
    char key[128];
    kv_str(&w, "general.architecture", arch);
    kv_str(&w, "general.name", "fixture");
#define K(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    kv_u32(&w, K("block_count"), (uint32_t)L);
    kv_u32(&w, K("context_length"), (uint32_t)jint(cfg, gpt2 ? "n_positions" : "max_position_embeddings", 2048));
    kv_u32(&w, K("embedding_length"), (uint32_t)D);
    kv_u32(&w, K("feed_forward_length"), (uint32_t)F);
    kv_u32(&w, K("attention.head_count"), (uint32_t)H);
    kv_u32(&w, K("attention.head_count_kv"), (uint32_t)Hk);
    json_t *th = json_object_get(cfg, "rope_theta");
    if (!gpt2) kv_f32(&w, K("rope.freq_base"), th ? (float)json_number_value(th) : 10000.0f);
    json_t *eps = json_object_get(cfg, gpt2 ? "layer_norm_epsilon" : !strcmp(arch, "phi2") ? "layer_norm_eps" : "rms_norm_eps");
    kv_f32(&w, gpt2 || !strcmp(arch, "phi2") ? K("attention.layer_norm_epsilon") : K("attention.layer_norm_rms_epsilon"),
           eps ? (float)json_number_value(eps) : 1e-5f);
    json_t *prf = json_object_get(cfg, "partial_rotary_factor");
    if (prf) kv_u32(&w, K("rope.dimension_count"), (uint32_t)(json_number_value(prf) * (D / H)));
    if (jint(cfg, "bos_token_id", -1) >= 0) kv_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)jint(cfg, "bos_token_id", 0));
#undef K
    const int hd = D / H;
    for (int l = -1; l < L; l++)
        for (const name_map *m = map; m->hf; m++) {
            int layered = strstr(m->hf, "%d") != NULL;
            if (layered != (l >= 0)) continue;
            char hf[160], gg[160];
            snprintf(hf, sizeof hf, m->hf, l);
            snprintf(gg, sizeof gg, m->gg, l);
            nl_tensor t;
            if (!nl_safetensors_find(st, hf)) continue;
            cr_assert_eq(nl_safetensors_get(&ctx, st, hf, &t), NL_OK, "%s", ctx.msg);
            cr_assert_eq(t.dtype, NL_DT_F32);
            int64_t rows = t.shape[0], cols = t.ndim == 2 ? t.shape[1] : 1;
            const float *src = t.data;
            float *v = malloc((size_t)(rows * cols) * sizeof *v);
            if (m->tx == TX_TRANSPOSE) { /* Conv1D (in, out) → (out, in) */
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++) v[c * rows + r] = src[r * cols + c];
                int64_t x = rows; rows = cols; cols = x;
            } else if ((m->tx == TX_PERM_Q || m->tx == TX_PERM_K) && !strcmp(arch, "llama")) { /* LlamaModel.permute */
                int heads = m->tx == TX_PERM_Q ? H : Hk;
                for (int64_t r = 0; r < rows; r++) {
                    int64_t hh = r / hd, k = r % hd, i = k / 2, j = k % 2; /* GGUF row r = HF row hh·hd + j·hd/2 + i */
                    memcpy(v + r * cols, src + (hh * hd + j * (hd / 2) + i) * cols, (size_t)cols * sizeof *v);
                }
                (void)heads;
            } else {
                memcpy(v, src, (size_t)(rows * cols) * sizeof *v);
            }
            uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
            int nd = t.ndim == 2 ? 2 : 1;
            if (nd == 1) ne[0] = (uint64_t)rows;
            if (f16 && nd == 2) {
                uint16_t *hv = malloc((size_t)(rows * cols) * 2);
                for (int64_t e = 0; e < rows * cols; e++) hv[e] = nl_f32_to_f16(v[e]);
                add_tensor(&w, gg, NL_GGML_F16, nd, ne, hv, (size_t)(rows * cols) * 2);
                free(hv);
            } else {
                add_tensor(&w, gg, NL_GGML_F32, nd, ne, v, (size_t)(rows * cols) * 4);
            }
            free(v);
        }
    for (int l = 0; g_add_bias && l < L; l++) {
        const char *names[3] = {"blk.%d.attn_q.bias", "blk.%d.attn_k.bias", "blk.%d.attn_v.bias"};
        for (int k = 0; k < 3; k++) {
            int rows = (k == 0 ? H : Hk) * hd;
            float *b = malloc((size_t)rows * sizeof *b), *pb = malloc((size_t)rows * sizeof *pb);
            for (int r = 0; r < rows; r++) b[r] = 0.05f * (float)((r * 7 + l * 3 + k) % 11) - 0.25f;
            for (int r = 0; r < rows; r++) { /* GGUF row r = HF row hh·hd + j·hd/2 + i (llama only) */
                int hh = r / hd, kk = r % hd, i = kk / 2, j = kk % 2;
                pb[r] = k < 2 && !strcmp(arch, "llama") ? b[hh * hd + j * (hd / 2) + i] : b[r];
            }
            char nm[64];
            snprintf(nm, sizeof nm, names[k], l);
            uint64_t ne[1] = {(uint64_t)rows};
            add_tensor(&w, nm, NL_GGML_F32, 1, ne, pb, (size_t)rows * 4);
            free(b);
            free(pb);
        }
    }
    if (gpt2) { /* the converter writes output.weight as a copy of the embedding */
        nl_tensor t;
        cr_assert_eq(nl_safetensors_get(&ctx, st, "transformer.wte.weight", &t), NL_OK);
        uint64_t ne[2] = {(uint64_t)t.shape[1], (uint64_t)t.shape[0]};
        add_tensor(&w, "output.weight", NL_GGML_F32, 2, ne, t.data, (size_t)(t.shape[0] * t.shape[1]) * 4);
    }
    const char *p = gw_write(&w, out);
    gw_free(&w);
    nl_safetensors_close(st);
    free(buf);
    json_decref(cfg);
    return p;
}

static void check_fixture_logits(const char *name, const char *arch, const name_map *map) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/hf/%s", name);
    char cp[300];
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    if (!nl_path_exists(cp)) cr_skip_test("fixture %s is absent", dir);
    json_t *ex = load_json(dir, "expected.json");
    json_t *toks = json_object_get(ex, "tokens");
    int T = (int)json_array_size(toks), V = jint(ex, "V", 0);
    double tol = json_number_value(json_object_get(ex, "tolerance"));
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    char lp[300];
    snprintf(lp, sizeof lp, "%s/logits.f32", dir);
    size_t ln;
    float *want = nl_read_all(lp, &ln);
    cr_assert(want && ln == (size_t)T * V * 4);
    for (int f16 = 0; f16 < 2; f16++) {
        char out[64];
        snprintf(out, sizeof out, "%s-%s.gguf", name, f16 ? "f16" : "f32");
        const char *path = convert_fixture(dir, arch, map, f16, out);
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = NULL;
        cr_assert_eq(nl_model_open(&ctx, path, &m), NL_OK, "%s", ctx.msg);
        nl_forward *f = NULL;
        cr_assert_eq(nl_forward_create(&ctx, m, T, T, &f), NL_OK, "%s", ctx.msg);
        float *got = malloc((size_t)T * V * sizeof *got);
        cr_assert_eq(nl_forward_run(f, &ctx, ids, T, got), NL_OK, "%s", ctx.msg);
        /* F16 weights move the logits by about the weights' rounding */
        nl_check_close(got, want, (size_t)T * V, f16 ? 0.02 : tol);
        free(got);
        nl_forward_destroy(f);
        nl_model_close(m);
    }
    free(want);
    free(ids);
    json_decref(ex);
}

/* Attention biases of a llama file come un-permuted with the weights: the llama fixture with q/k/v
 * biases written as llama (rows permuted) and as qwen2 (not permuted) gives the same logits. */
Test(gguf, llama_biases_are_unpermuted_too) {
    const char *dir = "tests/fixtures/hf/llama";
    if (!nl_path_exists("tests/fixtures/hf/llama/config.json")) cr_skip_test("fixture %s is absent", dir);
    json_t *ex = load_json(dir, "expected.json");
    json_t *toks = json_object_get(ex, "tokens");
    int T = (int)json_array_size(toks), V = jint(ex, "V", 0);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    float *lg[2];
    g_add_bias = 1;
    for (int k = 0; k < 2; k++) {
        const char *p = convert_fixture(dir, k ? "qwen2" : "llama", MAP_LLAMA, 0, k ? "bias_qwen2.gguf" : "bias_llama.gguf");
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = NULL;
        nl_forward *f = NULL;
        cr_assert_eq(nl_model_open(&ctx, p, &m), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_forward_create(&ctx, m, T, T, &f), NL_OK, "%s", ctx.msg);
        lg[k] = malloc((size_t)T * V * sizeof(float));
        cr_assert_eq(nl_forward_run(f, &ctx, ids, T, lg[k]), NL_OK, "%s", ctx.msg);
        nl_forward_destroy(f);
        nl_model_close(m);
    }
    g_add_bias = 0;
    nl_check_close(lg[0], lg[1], (size_t)T * V, 1e-5);
    /* and the biases changed something (they are not ignored) */
    size_t ln;
    float *want = nl_read_all("tests/fixtures/hf/llama/logits.f32", &ln);
    cr_assert(nl_max_abs_diff(lg[0], want, (size_t)T * V) > 1e-3);
    free(want);
    free(lg[0]);
    free(lg[1]);
    free(ids);
    json_decref(ex);
}

Test(gguf, fixture_llama_as_gguf) { check_fixture_logits("llama", "llama", MAP_LLAMA); }
Test(gguf, fixture_qwen2_as_gguf) { check_fixture_logits("qwen2", "qwen2", MAP_LLAMA); }
Test(gguf, fixture_gpt2_as_gguf) { check_fixture_logits("gpt2", "gpt2", MAP_GPT2); }
Test(gguf, fixture_phi_as_gguf) { check_fixture_logits("phi", "phi2", MAP_PHI); }

/* ---- 4. bad files ---------------------------------------------------------------------------- */

/* A valid 1-layer llama file to break: D 32, F 64, 2 heads, V 16, all F32. */
static void tiny_llama(gwriter *w, const char *arch) {
    memset(w, 0, sizeof *w);
    kv_str(w, "general.architecture", arch);
    char k[96];
    snprintf(k, sizeof k, "%s.block_count", arch); kv_u32(w, k, 1);
    snprintf(k, sizeof k, "%s.embedding_length", arch); kv_u32(w, k, 32);
    snprintf(k, sizeof k, "%s.feed_forward_length", arch); kv_u32(w, k, 64);
    snprintf(k, sizeof k, "%s.attention.head_count", arch); kv_u32(w, k, 2);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch); kv_f32(w, k, 1e-5f);
    static float z[64 * 32];
    for (int i = 0; i < 64 * 32; i++) z[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    struct { const char *n; uint64_t a, b; } ts[] = {
        {"token_embd.weight", 32, 16}, {"output_norm.weight", 32, 0}, {"blk.0.attn_norm.weight", 32, 0},
        {"blk.0.ffn_norm.weight", 32, 0}, {"blk.0.attn_q.weight", 32, 32}, {"blk.0.attn_k.weight", 32, 32},
        {"blk.0.attn_v.weight", 32, 32}, {"blk.0.attn_output.weight", 32, 32}, {"blk.0.ffn_gate.weight", 32, 64},
        {"blk.0.ffn_up.weight", 32, 64}, {"blk.0.ffn_down.weight", 64, 32}};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        uint64_t ne[2] = {ts[i].a, ts[i].b};
        add_tensor(w, ts[i].n, NL_GGML_F32, ts[i].b ? 2 : 1, ne, z, (size_t)(ts[i].a * (ts[i].b ? ts[i].b : 1)) * 4);
    }
}

static void expect_fail(const char *path, nl_status want, const char *needle) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    nl_status st = nl_model_open(&ctx, path, &m);
    cr_assert_eq(st, want, "%s: status %s, message: %s", path, nl_status_name(st), ctx.msg);
    cr_assert_null(m);
    cr_assert(strstr(ctx.msg, path), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, needle), "message lacks '%s': %s", needle, ctx.msg);
    cr_assert_null(strchr(ctx.msg, '\n'), "message is not one line: %s", ctx.msg);
}

Test(gguf, tiny_llama_loads_and_infers_defaults) {
    gwriter w;
    tiny_llama(&w, "llama");
    const char *p = gw_write(&w, "ok.gguf");
    gw_free(&w);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, p, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    cr_assert(c->n_layers == 1 && c->d_model == 32 && c->d_ff == 64 && c->n_heads == 2 && c->n_kv_heads == 2 &&
              c->head_dim == 16 && c->vocab_size == 16 && c->tie_embeddings && c->rotary_dim == 16);
    cr_assert_float_eq(c->rope_theta, 10000.0f, 0);
    cr_assert_eq(c->act, NL_ACT_SILU);
    cr_assert_str_eq(nl_model_act_source(m), "default");
    nl_model_close(m);
    /* --hidden-act wins, then neuronlab.hidden_act */
    nl_model_opts o = {.hidden_act = "relu"};
    cr_assert_eq(nl_model_open_opts(&ctx, p, &o, &m), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_model_config(m)->act, NL_ACT_RELU);
    cr_assert_str_eq(nl_model_act_source(m), "--hidden-act");
    nl_model_close(m);
    tiny_llama(&w, "llama");
    kv_str(&w, "neuronlab.hidden_act", "gelu");
    p = gw_write(&w, "gelu.gguf");
    gw_free(&w);
    cr_assert_eq(nl_model_open(&ctx, p, &m), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_model_config(m)->act, NL_ACT_GELU);
    cr_assert_str_eq(nl_model_act_source(m), "neuronlab.hidden_act");
    nl_model_close(m);
    o.hidden_act = "tanh";
    cr_assert_eq(nl_model_open_opts(&ctx, p, &o, &m), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "'tanh'") && strstr(ctx.msg, "--hidden-act"), "%s", ctx.msg);
}

Test(gguf, config_json_beside_the_file_sets_the_activation) {
    char sub[300];
    snprintf(sub, sizeof sub, "%s/withcfg", g_dir);
    mkdir(sub, 0700);
    gwriter w;
    tiny_llama(&w, "llama");
    const char *p = gw_write(&w, "withcfg/m.gguf");
    gw_free(&w);
    write_bytes("withcfg/config.json", "{\"hidden_act\": \"relu\"}", 22);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, p, &m), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_model_config(m)->act, NL_ACT_RELU);
    cr_assert_str_eq(nl_model_act_source(m), "config.json beside the file");
    nl_model_close(m);
}

Test(gguf, bad_magic_and_versions) {
    gwriter w;
    tiny_llama(&w, "llama");
    gbuf b = gw_bytes(&w, 3);
    gw_free(&w);
    /* "GGUF" is what routes a file here; a GGUF header with another version: */
    uint32_t v = 1;
    memcpy(b.p + 4, &v, 4);
    expect_fail(write_bytes("v1.gguf", b.p, b.n), NL_EUNSUPPORTED, "unsupported GGUF version 1 (supported: 2, 3)");
    v = 0x03000000;
    memcpy(b.p + 4, &v, 4);
    expect_fail(write_bytes("be.gguf", b.p, b.n), NL_EUNSUPPORTED, "big-endian");
    v = 2; /* version 2 has the same layout */
    memcpy(b.p + 4, &v, 4);
    const char *p2 = write_bytes("v2.gguf", b.p, b.n);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, p2, &m), NL_OK, "%s", ctx.msg);
    nl_model_close(m);
    /* bad magic straight through the parser (the loader never routes it here) */
    nl_gguf *g = NULL;
    memcpy(b.p, "GGUG", 4);
    cr_assert_eq(nl_gguf_parse(&ctx, "x.gguf", b.p, b.n, &g), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "'x.gguf'") && strstr(ctx.msg, "bad magic"), "%s", ctx.msg);
    free(b.p);
}

Test(gguf, tensor_past_the_end) {
    gwriter w;
    tiny_llama(&w, "llama");
    gbuf b = gw_bytes(&w, 3);
    gw_free(&w);
    /* cut the last tensor short */
    expect_fail(write_bytes("cut.gguf", b.p, b.n - 100), NL_EFORMAT, "runs past the end of the file");
    free(b.p);
}

Test(gguf, unknown_and_unsupported_tensor_types) {
    gwriter w;
    tiny_llama(&w, "llama");
    w.t[4].type = 77;
    expect_fail(gw_write(&w, "t77.gguf"), NL_EFORMAT, "unknown tensor type id 77");
    /* a known type without a dequantiser (IQ4_NL: 32 in 18 bytes, like Q4_0) */
    w.t[4].type = 20;
    w.t[4].nbytes = 32 * 32 / 32 * 18;
    expect_fail(gw_write(&w, "iq4.gguf"), NL_EUNSUPPORTED, "tensor 'blk.0.attn_q.weight' has type IQ4_NL");
    gw_free(&w);
}

Test(gguf, unsupported_architecture_lists_the_supported) {
    gwriter w;
    tiny_llama(&w, "mamba");
    expect_fail(gw_write(&w, "mamba.gguf"), NL_EUNSUPPORTED,
                "architecture 'mamba' is not supported (supported: llama, qwen2, qwen3, gpt2, phi2, qwen2moe, qwen3moe)");
    gw_free(&w);
}

Test(gguf, metadata_of_the_wrong_type) {
    gwriter w;
    tiny_llama(&w, "llama");
    kv_str(&w, "llama.context_length", "256");
    expect_fail(gw_write(&w, "ctx.gguf"), NL_EFORMAT, "metadata key 'llama.context_length' is a string, expected an integer");
    gw_free(&w);
    memset(&w, 0, sizeof w);
    kv_u32(&w, "general.architecture", 1);
    expect_fail(gw_write(&w, "arch.gguf"), NL_EFORMAT, "'general.architecture' is a uint32, expected a string");
    gw_free(&w);
    memset(&w, 0, sizeof w);
    kv_str(&w, "general.name", "x");
    expect_fail(gw_write(&w, "noarch.gguf"), NL_EFORMAT, "missing metadata key 'general.architecture'");
    gw_free(&w);
}

Test(gguf, missing_tensor_and_bad_shape) {
    gwriter w;
    tiny_llama(&w, "llama");
    snprintf(w.t[10].name, sizeof w.t[10].name, "blk.0.ffn_down.weightx");
    expect_fail(gw_write(&w, "miss.gguf"), NL_EFORMAT, "missing tensor 'blk.0.ffn_down.weight'");
    gw_free(&w);
    tiny_llama(&w, "llama");
    char k[] = "llama.feed_forward_length";
    kv_u32(&w, k, 48); /* duplicate key */
    expect_fail(gw_write(&w, "dup.gguf"), NL_EFORMAT, "appears twice");
    gw_free(&w);
}

/* Counts and lengths larger than the file fail before anything of that size is allocated. */
Test(gguf, absurd_counts) {
    gwriter w;
    tiny_llama(&w, "llama");
    gbuf b = gw_bytes(&w, 3);
    gw_free(&w);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_gguf *g = NULL;
    uint8_t *c = malloc(b.n);
    const struct { size_t off; uint64_t v; const char *needle; } cases[] = {
        {8, UINT64_MAX / 2, "more than the file's"},       /* n_tensors */
        {16, (uint64_t)1 << 40, "more than the file's"},    /* n_kv */
        {24, (uint64_t)1 << 50, "has length"},              /* first key's length */
        {24 + 8 + 20 + 4, (uint64_t)1 << 45, "more than the"}, /* the architecture string's length */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memcpy(c, b.p, b.n);
        memcpy(c + cases[i].off, &cases[i].v, 8);
        cr_assert_eq(nl_gguf_parse(&ctx, "big.gguf", c, b.n, &g), NL_EFORMAT, "case %zu", i);
        cr_assert(strstr(ctx.msg, "'big.gguf'") && strstr(ctx.msg, cases[i].needle), "case %zu: %s", i, ctx.msg);
    }
    /* an array claiming more elements than the file holds */
    memset(&w, 0, sizeof w);
    kv_key(&w, "tokenizer.ggml.tokens", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, (uint64_t)1 << 40);
    gbuf a = gw_bytes(&w, 3);
    gw_free(&w);
    cr_assert_eq(nl_gguf_parse(&ctx, "arr.gguf", a.p, a.n, &g), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "claims 1099511627776 string elements"), "%s", ctx.msg);
    /* every truncation of a valid file fails cleanly */
    for (size_t n = 0; n < b.n; n += (n < 600 ? 1 : 97)) {
        nl_status st = nl_gguf_parse(&ctx, "t.gguf", b.p, n, &g);
        cr_assert_neq(st, NL_OK, "a file cut to %zu bytes parsed", n);
    }
    cr_assert_eq(nl_gguf_parse(&ctx, "t.gguf", b.p, b.n, &g), NL_OK, "%s", ctx.msg);
    nl_gguf_close(g);
    free(a.p);
    free(c);
    free(b.p);
}

Test(gguf, typed_getters) {
    gwriter w = {0};
    kv_u32(&w, "a.u32", 7);
    kv_f32(&w, "a.f32", 0.5f);
    kv_str(&w, "a.str", "hi");
    kv_key(&w, "a.arr", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_I32);
    put_u64(&w.kv, 3);
    for (int32_t i = -1; i < 2; i++) put(&w.kv, &i, 4);
    kv_key(&w, "a.strs", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, 2);
    put_str(&w.kv, "x");
    put_str(&w.kv, "yz");
    gbuf b = gw_bytes(&w, 3);
    gw_free(&w);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_gguf *g;
    cr_assert_eq(nl_gguf_parse(&ctx, "g.gguf", b.p, b.n, &g), NL_OK, "%s", ctx.msg);
    uint64_t u;
    double d;
    int found;
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "a.u32", &u, NULL), NL_OK);
    cr_assert_eq(u, 7);
    cr_assert_eq(nl_gguf_get_f64(&ctx, g, "a.f32", &d, NULL), NL_OK);
    cr_assert_eq(d, 0.5);
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "a.f32", &u, NULL), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "'a.f32' is a float32, expected an unsigned integer"), "%s", ctx.msg);
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "nope", &u, &found), NL_OK);
    cr_assert_eq(found, 0);
    const nl_gguf_kv *kv;
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "a.arr", NL_GGUF_I32, &kv, NULL), NL_OK);
    cr_assert(kv->n == 3 && nl_gguf_arr_num(kv, 0) == -1 && nl_gguf_arr_num(kv, 2) == 1);
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "a.arr", NL_GGUF_STRING, &kv, NULL), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "is an array of int32, expected an array of string"), "%s", ctx.msg);
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "a.strs", NL_GGUF_STRING, &kv, NULL), NL_OK);
    size_t n;
    const char *s = nl_gguf_arr_str(g, kv, 1, &n);
    cr_assert(n == 2 && !memcmp(s, "yz", 2));
    nl_gguf_close(g);
    free(b.p);
}

/* ---- 5. the tokenizer from the metadata ------------------------------------------------------- */

#include "tokenizer/tok_internal.h"

/* Every text of the conformance corpus gives the same ids (with and without the template,
 * with special tokens parsed) and decodes to the same text with both tokenizers. */
static void same_tokenizer(const nl_tokenizer *a, const nl_tokenizer *b) {
    FILE *f = fopen("tests/tokenizer/corpus.jsonl", "r");
    if (!f) cr_skip_test("tests/tokenizer/corpus.jsonl is absent");
    cr_assert_eq(nl_tokenizer_vocab_size(a), nl_tokenizer_vocab_size(b));
    cr_assert_eq(nl_tokenizer_bos(a), nl_tokenizer_bos(b));
    cr_assert_eq(nl_tokenizer_eos(a), nl_tokenizer_eos(b));
    char *line = NULL;
    size_t cap = 0;
    int rows = 0;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *tx = json_object_get(j, "text");
        if (!json_is_string(tx)) { json_decref(j); continue; }
        const char *s = json_string_value(tx);
        size_t n = json_string_length(tx);
        const nl_encode_opts opts[] = {{.add_special = 1}, {.add_special = 0}, {.add_special = 1, .parse_special = 1}};
        for (int o = 0; o < 3; o++) {
            int32_t *ia = NULL, *ib = NULL;
            int na = 0, nb = 0;
            cr_assert_eq(nl_tokenizer_encode(&ctx, a, s, n, &opts[o], &ia, &na), NL_OK, "%s", ctx.msg);
            cr_assert_eq(nl_tokenizer_encode(&ctx, b, s, n, &opts[o], &ib, &nb), NL_OK, "%s", ctx.msg);
            cr_assert(na == nb && !memcmp(ia, ib, (size_t)na * sizeof *ia), "row %d (options %d): %d vs %d ids: %s", rows, o,
                      na, nb, s);
            if (o == 0) {
                char *da = NULL, *db = NULL;
                size_t dna = 0, dnb = 0;
                cr_assert_eq(nl_tokenizer_decode(&ctx, a, ia, na, 1, &da, &dna), NL_OK, "%s", ctx.msg);
                cr_assert_eq(nl_tokenizer_decode(&ctx, b, ib, nb, 1, &db, &dnb), NL_OK, "%s", ctx.msg);
                cr_assert(dna == dnb && !memcmp(da, db, dna), "row %d decodes differently", rows);
                free(da);
                free(db);
            }
            free(ia);
            free(ib);
        }
        rows++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    cr_assert(rows > 300, "only %d rows", rows);
}

Test(gguf, tokenizer_gpt2_equals_the_folder) {
    const char *p = GG_DIR "/silu/silu-Q8_0.gguf";
    if (!nl_path_exists(p)) cr_skip_test("../shared/models/gguf is absent");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *a = NULL, *b = NULL;
    cr_assert_eq(nl_tokenizer_for_model(&ctx, p, &a), NL_OK, "%s", ctx.msg);
    cr_assert_not_null(a);
    cr_assert_eq(nl_tokenizer_open(&ctx, "notebooks-data/models/silu", &b), NL_OK, "%s", ctx.msg);
    same_tokenizer(a, b);
    nl_tokenizer_close(a);
    nl_tokenizer_close(b);
}

/* A "llama" (SentencePiece) vocabulary as the converter writes it
 * (LlamaModel._set_vocab_sentencepiece: tokens, scores, token types, special ids, add_space_prefix,
 * remove_extra_whitespaces), made from ../shared/tokenizers/llama2/tokenizer.model. */
Test(gguf, tokenizer_llama_equals_sentencepiece) {
    const char *sp = NL_SHARED "/tokenizers/llama2/tokenizer.model";
    if (!nl_path_exists(sp)) cr_skip_test("../shared/tokenizers/llama2 is absent");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *b = NULL, *a = NULL;
    cr_assert_eq(nl_tokenizer_open(&ctx, sp, &b), NL_OK, "%s", ctx.msg);
    cr_assert_null(b->sp_cm.blob, "the llama2 model has a charsmap: the test would need to write it");
    gwriter w = {0};
    kv_str(&w, "general.architecture", "llama");
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_str(&w, "tokenizer.ggml.pre", "default");
    int n = b->v.n;
    kv_key(&w, "tokenizer.ggml.tokens", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *s = tk_piece(&b->v, i, &len);
        put_u64(&w.kv, len);
        put(&w.kv, s, len);
    }
    kv_key(&w, "tokenizer.ggml.scores", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_F32);
    put_u64(&w.kv, (uint64_t)n);
    put(&w.kv, b->v.score, (size_t)n * 4);
    kv_key(&w, "tokenizer.ggml.token_type", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_I32);
    put_u64(&w.kv, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        int32_t ty = b->v.type[i];
        put(&w.kv, &ty, 4);
    }
    kv_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)nl_tokenizer_bos(b));
    kv_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)nl_tokenizer_eos(b));
    kv_u32(&w, "tokenizer.ggml.unknown_token_id", (uint32_t)b->unk_id);
    kv_key(&w, "tokenizer.ggml.add_bos_token", NL_GGUF_BOOL);
    put(&w.kv, "\1", 1);
    kv_key(&w, "tokenizer.ggml.add_space_prefix", NL_GGUF_BOOL);
    uint8_t v = (uint8_t)b->sp_add_dummy_prefix;
    put(&w.kv, &v, 1);
    kv_key(&w, "tokenizer.ggml.remove_extra_whitespaces", NL_GGUF_BOOL);
    v = (uint8_t)b->sp_remove_extra_ws;
    put(&w.kv, &v, 1);
    const char *p = gw_write(&w, "spm.gguf");
    gw_free(&w);
    cr_assert_eq(nl_tokenizer_open(&ctx, p, &a), NL_OK, "%s", ctx.msg);
    same_tokenizer(a, b);
    nl_tokenizer_close(a);
    nl_tokenizer_close(b);
}

Test(gguf, tokenizer_absent_or_broken) {
    if (!nl_path_exists(GG_DIR "/stories260K/stories260K-F32.gguf")) cr_skip_test("../shared/models/gguf is absent");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *t = NULL;
    /* "none": the model has no tokenizer (its data are token ids) */
    cr_assert_eq(nl_tokenizer_for_model(&ctx, GG_DIR "/stories260K/stories260K-F32.gguf", &t), NL_OK, "%s", ctx.msg);
    cr_assert_null(t);
    cr_assert_eq(nl_tokenizer_open(&ctx, GG_DIR "/stories260K/stories260K-F32.gguf", &t), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "holds no tokenizer"), "%s", ctx.msg);
    gwriter w = {0};
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_key(&w, "tokenizer.ggml.tokens", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, 2);
    put_str(&w.kv, "a");
    put_str(&w.kv, "b");
    kv_key(&w, "tokenizer.ggml.merges", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, 1);
    put_str(&w.kv, "a b");
    kv_u32(&w, "tokenizer.ggml.bos_token_id", 5);
    const char *p = gw_write(&w, "tok.gguf");
    cr_assert_eq(nl_tokenizer_open(&ctx, p, &t), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, p) && strstr(ctx.msg, "merge 0 ('a b') names a token that is not in the vocabulary"), "%s", ctx.msg);
    gw_free(&w);
    memset(&w, 0, sizeof w);
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_str(&w, "tokenizer.ggml.pre", "klingon");
    kv_key(&w, "tokenizer.ggml.tokens", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, 1);
    put_str(&w.kv, "a");
    kv_key(&w, "tokenizer.ggml.merges", NL_GGUF_ARRAY);
    put_u32(&w.kv, NL_GGUF_STRING);
    put_u64(&w.kv, 0);
    p = gw_write(&w, "pre.gguf");
    cr_assert_eq(nl_tokenizer_open(&ctx, p, &t), NL_EUNSUPPORTED);
    cr_assert(strstr(ctx.msg, "pre-tokenizer 'klingon'") && strstr(ctx.msg, "llama-bpe"), "%s", ctx.msg);
    gw_free(&w);
    memset(&w, 0, sizeof w);
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_str(&w, "tokenizer.ggml.tokens", "abc");
    p = gw_write(&w, "wrong.gguf");
    cr_assert_eq(nl_tokenizer_open(&ctx, p, &t), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "'tokenizer.ggml.tokens' is a string, expected an array of string"), "%s", ctx.msg);
    gw_free(&w);
}

/* ---- 5. the writer, the Q8_0 quantiser, export, the importance matrix (issue 15 items 3–5) ---- */

#include "model/quant.h"
#include "neuronlab/dataset.h"
#include "neuronlab/export.h"
#include "neuronlab/imatrix.h"

static nl_gguf *parse_file(nl_ctx *ctx, const char *p, void **buf) {
    size_t n = 0;
    *buf = nl_read_all(p, &n);
    cr_assert_not_null(*buf, "cannot read %s", p);
    nl_gguf *g = NULL;
    cr_assert_eq(nl_gguf_parse(ctx, p, *buf, n, &g), NL_OK, "%s", ctx->msg);
    return g;
}

static nl_status fill_ramp(void *user, nl_ctx *ctx, int64_t i, void *dst, uint64_t nbytes) {
    (void)ctx, (void)user;
    float x[64];
    for (int k = 0; k < 64; k++) x[k] = (float)(k - 20) * 0.125f + (float)i;
    nl_quant_q8_0(x, dst, 64);
    cr_assert_eq(nbytes, 2 * 34);
    return NL_OK;
}

Test(gguf, writer_round_trip_every_value_type) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_gguf_writer *w = NULL;
    cr_assert_eq(nl_gguf_writer_create(&ctx, 64, &w), NL_OK);
    const char *strs[] = {"a", "", "ünï"};
    const int32_t ints[] = {-3, 0, 7};
    const float fl[] = {0.5f, -2.0f};
    float data[12];
    for (int i = 0; i < 12; i++) data[i] = (float)i * 1.5f - 3.0f;
    int64_t ne[2] = {4, 3}, qne[2] = {64, 1};
    cr_assert_eq(nl_gguf_writer_str(&ctx, w, "s", "hello", 5), NL_OK);
    cr_assert_eq(nl_gguf_writer_u32(&ctx, w, "u", 4000000000u), NL_OK);
    cr_assert_eq(nl_gguf_writer_i32(&ctx, w, "i", -12), NL_OK);
    cr_assert_eq(nl_gguf_writer_f32(&ctx, w, "f", 0.25f), NL_OK);
    cr_assert_eq(nl_gguf_writer_bool(&ctx, w, "b", 1), NL_OK);
    cr_assert_eq(nl_gguf_writer_arr_str(&ctx, w, "as", strs, NULL, 3), NL_OK);
    cr_assert_eq(nl_gguf_writer_arr_i32(&ctx, w, "ai", ints, 3), NL_OK);
    cr_assert_eq(nl_gguf_writer_arr_f32(&ctx, w, "af", fl, 2), NL_OK);
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w, "t.f32", NL_GGML_F32, 2, ne, data, NULL, NULL), NL_OK);
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w, "t.q8", NL_GGML_Q8_0, 2, qne, NULL, fill_ramp, NULL), NL_OK);
    /* refusals: a repeated key or tensor, a Q8_0 row that is not whole blocks */
    cr_assert_eq(nl_gguf_writer_u32(&ctx, w, "u", 1), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "'u' added twice"), "%s", ctx.msg);
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w, "t.f32", NL_GGML_F32, 2, ne, data, NULL, NULL), NL_EINVAL);
    int64_t bad[1] = {33};
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w, "t.bad", NL_GGML_Q8_0, 1, bad, data, NULL, NULL), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "row length 33 is not a multiple of 32"), "%s", ctx.msg);
    const char *p = tmp_path("w.gguf");
    cr_assert_eq(nl_gguf_writer_write(&ctx, w, p), NL_OK, "%s", ctx.msg);
    nl_gguf_writer_destroy(w);
    void *buf;
    nl_gguf *g = parse_file(&ctx, p, &buf);
    cr_assert_eq(nl_gguf_version(g), 3);
    cr_assert_eq(nl_gguf_alignment(g), 64);
    cr_assert_eq(nl_gguf_n_kv(g), 9); /* general.alignment first */
    cr_assert_str_eq(nl_gguf_kv_at(g, 0)->key, "general.alignment");
    const char *s;
    size_t n;
    uint64_t u;
    int64_t i64;
    double d;
    int b;
    cr_assert_eq(nl_gguf_get_str(&ctx, g, "s", &s, &n, NULL), NL_OK);
    cr_assert(n == 5 && !memcmp(s, "hello", 5));
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "u", &u, NULL), NL_OK);
    cr_assert_eq(u, 4000000000u);
    cr_assert_eq(nl_gguf_get_i64(&ctx, g, "i", &i64, NULL), NL_OK);
    cr_assert_eq(i64, -12);
    cr_assert_eq(nl_gguf_get_f64(&ctx, g, "f", &d, NULL), NL_OK);
    cr_assert_eq(d, 0.25);
    cr_assert_eq(nl_gguf_get_bool(&ctx, g, "b", &b, NULL), NL_OK);
    cr_assert_eq(b, 1);
    const nl_gguf_kv *kv;
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "as", NL_GGUF_STRING, &kv, NULL), NL_OK);
    cr_assert_eq(kv->n, 3);
    for (int k = 0; k < 3; k++) {
        s = nl_gguf_arr_str(g, kv, (uint64_t)k, &n);
        cr_assert(n == strlen(strs[k]) && !memcmp(s, strs[k], n));
    }
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "ai", NL_GGUF_I32, &kv, NULL), NL_OK);
    cr_assert(kv->arr_type == NL_GGUF_I32 && nl_gguf_arr_num(kv, 0) == -3 && nl_gguf_arr_num(kv, 2) == 7);
    cr_assert_eq(nl_gguf_get_arr(&ctx, g, "af", NL_GGUF_F32, &kv, NULL), NL_OK);
    cr_assert(nl_gguf_arr_num(kv, 1) == -2.0);
    const nl_gguf_tensor *t = nl_gguf_find_tensor(g, "t.f32");
    cr_assert(t && t->type == NL_GGML_F32 && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 3 && t->offset % 64 == 0);
    cr_assert_eq(memcmp(t->data, data, sizeof data), 0);
    t = nl_gguf_find_tensor(g, "t.q8");
    cr_assert(t && t->type == NL_GGML_Q8_0 && t->nbytes == 68 && t->offset % 64 == 0);
    float x[64], back[64];
    for (int k = 0; k < 64; k++) x[k] = (float)(k - 20) * 0.125f + 1.0f; /* tensor index 1 */
    nl_dequant_q8_0(t->data, back, 64);
    for (int k = 0; k < 64; k++) cr_assert_leq(fabsf(back[k] - x[k]), 0.5f * (6.375f / 127.0f) * 1.01f + 1e-6f, "%d", k);
    /* every entry copied into a new writer (plus the same tensors) gives the same file */
    nl_gguf_writer *w2 = NULL;
    cr_assert_eq(nl_gguf_writer_create(&ctx, 64, &w2), NL_OK);
    for (int64_t k = 1; k < nl_gguf_n_kv(g); k++) cr_assert_eq(nl_gguf_writer_copy(&ctx, w2, g, nl_gguf_kv_at(g, k)), NL_OK);
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w2, "t.f32", NL_GGML_F32, 2, ne, data, NULL, NULL), NL_OK);
    cr_assert_eq(nl_gguf_writer_tensor(&ctx, w2, "t.q8", NL_GGML_Q8_0, 2, qne, NULL, fill_ramp, NULL), NL_OK);
    const char *p2 = tmp_path("w2.gguf");
    cr_assert_eq(nl_gguf_writer_write(&ctx, w2, p2), NL_OK, "%s", ctx.msg);
    nl_gguf_writer_destroy(w2);
    size_t n1 = 0, n2 = 0;
    void *b1 = nl_read_all(p, &n1), *b2 = nl_read_all(p2, &n2);
    cr_assert(n1 == n2 && !memcmp(b1, b2, n1), "copied file differs (%zu vs %zu bytes)", n1, n2);
    free(b1), free(b2);
    nl_gguf_close(g);
    free(buf);
}

Test(gguf, q8_0_quantiser_rounds_as_ggml) {
    /* amax 127 → d = 1, 1/d = 1: halves round away from zero (roundf), the scale is half 1.0 */
    float x[32] = {127.0f, 0.5f, -0.5f, 2.5f, -2.5f, 1.49f, -1.51f, -127.0f, 63.5f};
    uint8_t q[34];
    nl_quant_q8_0(x, q, 32);
    uint16_t h;
    memcpy(&h, q, 2);
    cr_assert_eq(h, 0x3C00);
    const int8_t want[9] = {127, 1, -1, 3, -3, 1, -2, -127, 64};
    for (int j = 0; j < 9; j++) cr_assert_eq((int8_t)q[2 + j], want[j], "element %d: %d", j, (int8_t)q[2 + j]);
    for (int j = 9; j < 32; j++) cr_assert_eq(q[2 + j], 0);
    /* an all-zero block: scale 0, codes 0 */
    float z[32] = {0};
    nl_quant_q8_0(z, q, 32);
    for (int j = 0; j < 34; j++) cr_assert_eq(q[j], 0);
    /* d = amax / 127 in float, codes from x·(1/d), not x / d */
    float r[32];
    for (int j = 0; j < 32; j++) r[j] = sinf((float)j * 0.7f) * 0.031f;
    nl_quant_q8_0(r, q, 32);
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(r[j]));
    const float dd = amax / 127.0f, id = 1.0f / dd;
    memcpy(&h, q, 2);
    cr_assert_eq(h, nl_f32_to_f16(dd));
    for (int j = 0; j < 32; j++) cr_assert_eq((int8_t)q[2 + j], (int8_t)roundf(r[j] * id), "element %d", j);
}

/* Source and exported model: every tensor in f32 (HF row order) equals the type's rounding of
 * the source — exactly for F32, F16, BF16; within the Q8_0 per-block bound for Q8_0 rows (rows
 * that are not whole blocks fall back to F16, exactly). */
typedef struct {
    nl_export_type type;
    double worst; /* Q8_0: largest error / bound seen */
} cmp_state;

static void cmp_values(cmp_state *S, const char *what, const float *src, const float *got, int64_t rows, int64_t cols,
                       int two_d) {
    for (int64_t r = 0; r < rows; r++) {
        const float *a = src + r * cols, *b = got + r * cols;
        int q8 = two_d && S->type == NL_EXPORT_Q8_0 && cols % 32 == 0;
        for (int64_t k = 0; k < cols; k++) {
            float want = a[k];
            if (two_d && !q8 && S->type != NL_EXPORT_F32)
                want = S->type == NL_EXPORT_BF16 ? nl_bf16_to_f32(nl_f32_to_bf16(a[k])) : nl_f16_to_f32(nl_f32_to_f16(a[k]));
            if (!q8) {
                cr_assert(memcmp(&want, &b[k], 4) == 0, "%s [%lld, %lld]: %.9g, want %.9g", what, (long long)r, (long long)k,
                          b[k], want);
                continue;
            }
            if (k % 32 == 0) { /* the block's bound: d/2 + 127·|d − half(d)| */
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(a[k + j]));
                const float d = amax / 127.0f, d16 = nl_f16_to_f32(nl_f32_to_f16(d));
                const double bound = 0.5 * d * (1 + 1e-6) + 127.0 * fabs((double)d - d16) + 1e-7 * amax;
                for (int j = 0; j < 32; j++) {
                    double e = fabs((double)b[k + j] - a[k + j]);
                    cr_assert(e <= bound, "%s [%lld, %lld]: error %g > Q8_0 bound %g", what, (long long)r, (long long)(k + j),
                              e, bound);
                    if (bound > 0 && e / bound > S->worst) S->worst = e / bound;
                }
            }
        }
    }
}

static float *mat_copy(const nl_mat *w) {
    float *o = malloc((size_t)w->n_out * w->n_in * sizeof(float));
    for (int r = 0; r < w->n_out; r++)
        for (int k = 0; k < w->n_in; k++) o[(size_t)r * w->n_in + k] = w->trans ? w->w[(size_t)k * w->ld + r] : w->w[(size_t)r * w->ld + k];
    return o;
}

/* heads > 0: a's rows are in RoPE pair order (llama2.c), b's in HF's: compare in HF's. */
static void cmp_mat_h(cmp_state *S, const char *what, int l, const nl_mat *a, const nl_mat *b, int heads) {
    if (!a->w) { cr_assert_null(b->w, "%s of layer %d appeared", what, l); return; }
    cr_assert(b->w && a->n_out == b->n_out && a->n_in == b->n_in, "%s of layer %d: shape", what, l);
    float *x = mat_copy(a), *y = mat_copy(b);
    if (heads) {
        const int dh = a->n_out / heads, half = dh / 2, n = a->n_in;
        float *t = malloc((size_t)a->n_out * n * sizeof(float));
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    memcpy(t + (size_t)(h * dh + j * half + i) * n, x + (size_t)(h * dh + 2 * i + j) * n, (size_t)n * sizeof(float));
        free(x);
        x = t;
    }
    char name[64];
    snprintf(name, sizeof name, "layer %d %s", l, what);
    cmp_values(S, name, x, y, a->n_out, a->n_in, 1);
    free(x), free(y);
}
static void cmp_mat(cmp_state *S, const char *what, int l, const nl_mat *a, const nl_mat *b) { cmp_mat_h(S, what, l, a, b, 0); }

static void cmp_vec(cmp_state *S, const char *what, int l, const float *a, const float *b, int n) {
    if (!a) { cr_assert_null(b, "%s of layer %d appeared", what, l); return; }
    cr_assert_not_null(b, "%s of layer %d is missing", what, l);
    char name[64];
    snprintf(name, sizeof name, "layer %d %s", l, what);
    cmp_values(S, name, a, b, 1, n, 0);
}

static void same_moe_config(const nl_config *a, const nl_config *b);

/* f32 in both (GGUF keeps the router and the shared expert's gate F32) */
static void cmp_mat_f32(cmp_state *S, const char *what, int l, const nl_mat *a, const nl_mat *b) {
    if (!a->w) { cr_assert_null(b->w, "%s of layer %d appeared", what, l); return; }
    cr_assert(b->w && a->n_out == b->n_out && a->n_in == b->n_in, "%s of layer %d: shape", what, l);
    float *x = mat_copy(a), *y = mat_copy(b);
    char name[64];
    snprintf(name, sizeof name, "layer %d %s", l, what);
    cmp_values(S, name, x, y, a->n_out, a->n_in, 0);
    free(x), free(y);
}

/* Compares every tensor of models a (source) and b (exported). */
static double cmp_models(nl_model *a, nl_model *b, nl_export_type type) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const nl_config *ca = nl_model_config(a), *cb = nl_model_config(b);
    cr_assert(ca->n_layers == cb->n_layers && ca->d_model == cb->d_model && ca->d_ff == cb->d_ff && ca->n_heads == cb->n_heads &&
              ca->n_kv_heads == cb->n_kv_heads && ca->head_dim == cb->head_dim && ca->vocab_size == cb->vocab_size &&
              ca->act == cb->act && ca->norm_eps == cb->norm_eps && ca->rope_theta == cb->rope_theta &&
              ca->tie_embeddings == cb->tie_embeddings && ca->qk_norm == cb->qk_norm && ca->max_pos == cb->max_pos);
    cmp_state S = {type, 0};
    const int D = ca->d_model, V = ca->vocab_size;
    float *ea = malloc((size_t)V * D * sizeof(float)), *eb = malloc((size_t)V * D * sizeof(float));
    int32_t *ids = malloc((size_t)V * sizeof(int32_t));
    for (int i = 0; i < V; i++) ids[i] = i;
    nl_model_embed(a, ids, V, 0, ea);
    nl_model_embed(b, ids, V, 0, eb);
    cmp_values(&S, "token embedding", ea, eb, V, D, 1);
    free(ea), free(eb), free(ids);
    const int Dh = ca->head_dim, H = ca->n_heads, Hk = ca->n_kv_heads;
    for (int l = 0; l < ca->n_layers; l++) {
        nl_layer x, y;
        /* two models: each has its own slot, so both views stay valid */
        cr_assert_eq(nl_model_layer(&ctx, a, l, &x), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_model_layer(&ctx, b, l, &y), NL_OK, "%s", ctx.msg);
        cmp_vec(&S, "ln1", l, x.ln1_w, y.ln1_w, D);
        cmp_vec(&S, "ln2", l, x.ln2_w, y.ln2_w, D);
        const int pair = ca->rope_interleaved && !cb->rope_interleaved; /* llama2.c source */
        cmp_mat_h(&S, "wq", l, &x.wq, &y.wq, pair ? H : 0);
        cmp_mat_h(&S, "wk", l, &x.wk, &y.wk, pair ? Hk : 0);
        cmp_mat(&S, "wv", l, &x.wv, &y.wv);
        cmp_mat(&S, "wo", l, &x.wo, &y.wo);
        cmp_vec(&S, "bq", l, x.bq, y.bq, H * Dh);
        cmp_vec(&S, "bk", l, x.bk, y.bk, Hk * Dh);
        cmp_vec(&S, "bv", l, x.bv, y.bv, Hk * Dh);
        cmp_vec(&S, "bo", l, x.bo, y.bo, D);
        cmp_vec(&S, "q_norm", l, x.q_norm, y.q_norm, Dh);
        cmp_vec(&S, "k_norm", l, x.k_norm, y.k_norm, Dh);
        cmp_mat(&S, "w_gate", l, &x.w_gate, &y.w_gate);
        cmp_mat(&S, "w_up", l, &x.w_up, &y.w_up);
        cmp_mat(&S, "w_down", l, &x.w_down, &y.w_down);
        cr_assert_eq(x.moe, y.moe, "layer %d: mixture of experts in one model only", l);
        if (!x.moe) continue;
        cmp_mat_f32(&S, "router", l, &x.router, &y.router);
        for (int e = 0; e < ca->n_experts; e++) {
            char nm[48];
            snprintf(nm, sizeof nm, "expert %d gate", e);
            cmp_mat(&S, nm, l, &x.experts[e].w_gate, &y.experts[e].w_gate);
            snprintf(nm, sizeof nm, "expert %d up", e);
            cmp_mat(&S, nm, l, &x.experts[e].w_up, &y.experts[e].w_up);
            snprintf(nm, sizeof nm, "expert %d down", e);
            cmp_mat(&S, nm, l, &x.experts[e].w_down, &y.experts[e].w_down);
        }
        cmp_mat(&S, "shared gate_proj", l, &x.sh_gate, &y.sh_gate);
        cmp_mat(&S, "shared up_proj", l, &x.sh_up, &y.sh_up);
        cmp_mat(&S, "shared down_proj", l, &x.sh_down, &y.sh_down);
        cmp_mat_f32(&S, "shared expert gate", l, &x.sh_router, &y.sh_router);
    }
    if (ca->n_experts > 0 || cb->n_experts > 0) same_moe_config(ca, cb);
    nl_head ha, hb;
    cr_assert_eq(nl_model_head(&ctx, a, &ha), NL_OK);
    cr_assert_eq(nl_model_head(&ctx, b, &hb), NL_OK);
    cmp_values(&S, "final norm", ha.norm_w, hb.norm_w, 1, D, 0);
    if (!ca->tie_embeddings) {
        float *x = mat_copy(&ha.lm_head), *y = mat_copy(&hb.lm_head);
        cmp_values(&S, "lm_head", x, y, V, D, 1);
        free(x), free(y);
    }
    return S.worst;
}

static void export_round_trip(const char *src) {
    if (!nl_path_exists(src)) cr_skip_test("%s is absent", src);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, src, &m), NL_OK, "%s", ctx.msg);
    static const char *tn[] = {"f32", "f16", "bf16", "q8_0"};
    for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "rt-%s.gguf", tn[t]);
        const char *p = tmp_path(name);
        cr_assert_eq(nl_export_gguf(&ctx, m, src, (nl_export_type)t, p, NULL), NL_OK, "%s: %s", tn[t], ctx.msg);
        nl_model *g = NULL;
        cr_assert_eq(nl_model_open(&ctx, p, &g), NL_OK, "%s", ctx.msg);
        double worst = cmp_models(m, g, (nl_export_type)t);
        if (t == NL_EXPORT_Q8_0) cr_assert_gt(worst, 0.3, "Q8_0 errors are suspiciously small (%g of the bound)", worst);
        if (t == NL_EXPORT_F32) { /* → Hugging Face folder → the same f32 values */
            snprintf(name, sizeof name, "rt-hf");
            const char *dir = tmp_path(name);
            cr_assert_eq(nl_export_hf(&ctx, g, p, NL_EXPORT_F32, dir), NL_OK, "%s", ctx.msg);
            nl_model *h = NULL;
            cr_assert_eq(nl_model_open(&ctx, dir, &h), NL_OK, "%s", ctx.msg);
            cmp_models(m, h, NL_EXPORT_F32);
            nl_model_close(h);
            cr_assert_eq(nl_export_hf(&ctx, g, p, NL_EXPORT_F32, dir), NL_EINVAL); /* never replaced */
            char cmd[600];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
            cr_assert_eq(system(cmd), 0);
        }
        nl_model_close(g);
    }
    nl_model_close(m);
}

Test(gguf, export_llama_fixture_round_trips) { export_round_trip("tests/fixtures/hf/llama"); }
Test(gguf, export_llama_relu_fixture_round_trips) { export_round_trip("tests/fixtures/hf/llama_relu"); }
Test(gguf, export_qwen2_fixture_round_trips) { export_round_trip("tests/fixtures/hf/qwen2"); }
Test(gguf, export_qwen3_fixture_round_trips) { export_round_trip("tests/fixtures/hf/qwen3"); }
Test(gguf, export_silu_zoo_round_trips) { export_round_trip("notebooks-data/models/silu"); }
Test(gguf, export_stories260K_bin_round_trips) { export_round_trip(NL_SHARED "/models/stories260K/stories260K.bin"); }

Test(gguf, export_refuses_what_it_cannot_write) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    static const struct { const char *dir, *needle; } cases[] = {
        {"tests/fixtures/hf/gpt2", "architecture 'gpt2' cannot be exported (supported: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe)"},
        {"tests/fixtures/hf/llama3_rope", "cannot export a model with llama3-style RoPE scaling"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nl_model *m = NULL;
        cr_assert_eq(nl_model_open(&ctx, cases[i].dir, &m), NL_OK, "%s", ctx.msg);
        const char *p = tmp_path("no.gguf");
        nl_status st = nl_export_gguf(&ctx, m, cases[i].dir, NL_EXPORT_F32, p, NULL);
        cr_assert_eq(st, NL_EUNSUPPORTED, "%s: %s", cases[i].dir, ctx.msg);
        cr_assert(strstr(ctx.msg, cases[i].needle) && strstr(ctx.msg, cases[i].dir), "%s", ctx.msg);
        cr_assert(!nl_path_exists(p), "a refused export left a file");
        nl_model_close(m);
    }
}

/* record --imatrix's engine: per-column sums equal a brute-force pass over the hooks' rows (FFN
 * and attention inputs), the file round trips in both formats, and the GGUF form is a GGUF file
 * our reader opens. */
typedef struct {
    double *s2[64];
    int64_t n[64];
} brute_state;
static nl_status brute(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    brute_state *b = user;
    int slot = info->layer * 4 + (info->point == NL_HOOK_FFN_ACT ? 1 : info->point == NL_HOOK_ATTN_IN ? 2
                                  : info->point == NL_HOOK_ATTN_PRE_O ? 3 : 0);
    for (int t = 0; t < info->T; t++)
        for (int j = 0; j < info->width; j++) b->s2[slot][j] += (double)x[(size_t)t * info->width + j] * x[(size_t)t * info->width + j];
    b->n[slot] += info->T;
    return NL_OK;
}

Test(gguf, imatrix_sums_and_files) {
    const char *src = "tests/fixtures/hf/llama";
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m = NULL;
    cr_assert_eq(nl_model_open(&ctx, src, &m), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(m);
    /* documents no longer than the context: every row is new, so a plain observer sees the same rows */
    FILE *f = fopen(tmp_path("d.jsonl"), "w");
    for (int d = 0; d < 5; d++) {
        fprintf(f, "{\"tokens\": [");
        for (int t = 0; t < 20 + 7 * d; t++) fprintf(f, "%s%d", t ? ", " : "", (t * 31 + d * 17) % c->vocab_size);
        fprintf(f, "]}\n");
    }
    fclose(f);
    nl_dataset *ds = NULL;
    cr_assert_eq(nl_dataset_load(&ctx, tmp_path("d.jsonl"), NULL, c->vocab_size, &ds), NL_OK, "%s", ctx.msg);
    nl_forward *fw = NULL;
    cr_assert_eq(nl_forward_create(&ctx, m, 16, 64, &fw), NL_OK, "%s", ctx.msg);
    brute_state b = {0};
    const int Q = c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++)
        b.s2[4 * l] = calloc((size_t)c->d_model, 8), b.s2[4 * l + 1] = calloc((size_t)c->d_ff, 8),
        b.s2[4 * l + 2] = calloc((size_t)c->d_model, 8), b.s2[4 * l + 3] = calloc((size_t)Q, 8);
    nl_hook_id h1, h2, h3, h4;
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(fw), NL_HOOK_ATTN_IN, -1, NL_HOOK_OBSERVE, brute, &b, &h3), NL_OK);
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(fw), NL_HOOK_ATTN_PRE_O, -1, NL_HOOK_OBSERVE, brute, &b, &h4), NL_OK);
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(fw), NL_HOOK_FFN_IN, -1, NL_HOOK_OBSERVE, brute, &b, &h1), NL_OK);
    cr_assert_eq(nl_hooks_add_id(nl_forward_hooks(fw), NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, brute, &b, &h2), NL_OK);
    nl_imatrix *im = NULL;
    cr_assert_eq(nl_imatrix_create(&ctx, c, &im), NL_OK);
    cr_assert_eq(nl_imatrix_run(&ctx, fw, ds, im, 0, NULL), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_imatrix_n_entries(im), 7 * c->n_layers); /* q k v output gate up down */
    for (int i = 0; i < nl_imatrix_n_entries(im); i++) {
        const nl_imatrix_entry *e = nl_imatrix_entry_at(im, i);
        int l;
        char what[32];
        cr_assert_eq(sscanf(e->name, "blk.%d.%31[a-z_]", &l, what), 2);
        if (i) cr_assert_lt(strcmp(nl_imatrix_entry_at(im, i - 1)->name, e->name), 0, "entries not in name order");
        int slot = 4 * l + (!strcmp(what, "ffn_down") ? 1 : !strcmp(what, "attn_output") ? 3 : !strncmp(what, "attn_", 5) ? 2 : 0);
        cr_assert_eq(e->n_in, slot % 4 == 1 ? c->d_ff : slot % 4 == 3 ? Q : c->d_model, "%s", e->name);
        cr_assert_eq(e->count, ds->n_tokens);
        cr_assert_eq(e->count, b.n[slot]);
        for (int j = 0; j < e->n_in; j++) cr_assert_eq(e->in_sum2[j], b.s2[slot][j], "%s column %d", e->name, j);
    }
    /* GGUF and legacy files, read back */
    const int chunk = 40;
    const char *pg = tmp_path("im.gguf"), *pd = tmp_path("im.dat");
    cr_assert_eq(nl_imatrix_write(&ctx, im, pg, "d.jsonl", chunk), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_imatrix_write(&ctx, im, pd, "d.jsonl", chunk), NL_OK, "%s", ctx.msg);
    void *buf;
    nl_gguf *g = parse_file(&ctx, pg, &buf);
    const char *s;
    size_t n;
    uint64_t u;
    cr_assert_eq(nl_gguf_get_str(&ctx, g, "general.type", &s, &n, NULL), NL_OK);
    cr_assert(n == 7 && !memcmp(s, "imatrix", 7));
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "imatrix.chunk_size", &u, NULL), NL_OK);
    cr_assert_eq(u, (uint64_t)chunk);
    cr_assert_eq(nl_gguf_get_u64(&ctx, g, "imatrix.chunk_count", &u, NULL), NL_OK);
    cr_assert_eq(u, (uint64_t)(ds->n_tokens / chunk));
    cr_assert_eq(nl_gguf_n_tensors(g), 3 * nl_imatrix_n_entries(im));
    nl_gguf_close(g);
    free(buf);
    nl_imatrix *rg = NULL, *rd = NULL;
    cr_assert_eq(nl_imatrix_read(&ctx, pg, &rg), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_imatrix_read(&ctx, pd, &rd), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_imatrix_n_entries(rg), nl_imatrix_n_entries(im));
    cr_assert_eq(nl_imatrix_n_entries(rd), nl_imatrix_n_entries(im));
    const int64_t ncall = (ds->n_tokens + chunk - 1) / chunk;
    for (int i = 0; i < nl_imatrix_n_entries(im); i++) {
        const nl_imatrix_entry *e = nl_imatrix_entry_at(im, i), *a = nl_imatrix_entry_at(rg, i), *d = nl_imatrix_entry_at(rd, i);
        cr_assert_str_eq(a->name, e->name);
        cr_assert_str_eq(d->name, e->name);
        cr_assert(a->n_in == e->n_in && d->n_in == e->n_in && a->count == e->count && d->count == ncall);
        for (int j = 0; j < e->n_in; j++) {
            cr_assert_eq((float)a->in_sum2[j], (float)e->in_sum2[j]);
            cr_assert_eq((float)a->in_sum[j], (float)e->in_sum[j]);
            cr_assert_eq((float)d->in_sum2[j], (float)(e->in_sum2[j] / (double)e->count * (double)ncall));
        }
    }
    /* a file that is neither */
    const char *junk = tmp_path("junk.dat");
    f = fopen(junk, "wb");
    fwrite("\x05\0\0\0\x09\0\0\0abc", 1, 11, f);
    fclose(f);
    nl_imatrix *rj = NULL;
    cr_assert_eq(nl_imatrix_read(&ctx, junk, &rj), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, junk), "%s", ctx.msg);
    nl_imatrix_destroy(rg), nl_imatrix_destroy(rd), nl_imatrix_destroy(im);
    nl_hooks_remove(nl_forward_hooks(fw), h1);
    nl_hooks_remove(nl_forward_hooks(fw), h2);
    nl_hooks_remove(nl_forward_hooks(fw), h3);
    nl_hooks_remove(nl_forward_hooks(fw), h4);
    for (int k = 0; k < 4 * c->n_layers; k++) free(b.s2[k]);
    nl_forward_destroy(fw);
    nl_dataset_destroy(ds);
    nl_model_close(m);
}

/* The q/k/v entries follow the model's layout: fused W_qkv (GPT-NeoX) gives one attn_qkv entry per
 * layer, separate q/k/v (Phi from HF, Llama) three; plain FFNs have no ffn_gate. */
Test(gguf, imatrix_entry_names_follow_the_layout) {
    static const struct { const char *dir; int per_layer; const char *l0[8]; } cases[] = {
        {"tests/fixtures/hf/gpt_neox", 4, {"attn_output", "attn_qkv", "ffn_down", "ffn_up"}},
        {"tests/fixtures/hf/phi", 6, {"attn_k", "attn_output", "attn_q", "attn_v", "ffn_down", "ffn_up"}},
        {"tests/fixtures/hf/llama", 7, {"attn_k", "attn_output", "attn_q", "attn_v", "ffn_down", "ffn_gate", "ffn_up"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_model *m = NULL;
        cr_assert_eq(nl_model_open(&ctx, cases[i].dir, &m), NL_OK, "%s", ctx.msg);
        const nl_config *c = nl_model_config(m);
        nl_imatrix *im = NULL, *ic = NULL;
        cr_assert_eq(nl_imatrix_create_model(&ctx, m, &im), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_imatrix_create(&ctx, c, &ic), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_imatrix_n_entries(im), cases[i].per_layer * c->n_layers, "%s", cases[i].dir);
        cr_assert_eq(nl_imatrix_n_entries(ic), nl_imatrix_n_entries(im), "%s", cases[i].dir);
        for (int k = 0; k < cases[i].per_layer; k++) {
            char want[64];
            snprintf(want, sizeof want, "blk.0.%s.weight", cases[i].l0[k]);
            cr_assert_str_eq(nl_imatrix_entry_at(im, k)->name, want, "%s", cases[i].dir);
            cr_assert_str_eq(nl_imatrix_entry_at(ic, k)->name, want, "%s", cases[i].dir);
        }
        nl_imatrix_destroy(im), nl_imatrix_destroy(ic);
        nl_model_close(m);
    }
}

/* ---- 5. mixture-of-experts files --------------------------------------------------------------- */

/* The MoE fixtures of tests/fixtures/hf written as convert_hf_to_gguf.py writes them, from the
 * Hugging Face load's f32 tensors (this writer is the test's, not the exporter): Mixtral as arch
 * llama (q/k rows permuted, llama.expert_count), Qwen2-MoE as qwen2moe (shared expert, the shared
 * gate a vector), Qwen3-MoE as qwen3moe; experts stacked into blk.N.ffn_{gate,up,down}_exps (ggml
 * ne [D, Fe, E] / [Fe, D, E]); layers a config makes dense keep ffn_gate/up/down and are named by
 * neuronlab.decoder_sparse_step / neuronlab.mlp_only_layers. `bad` breaks one thing. */
enum { MOE_OK, MOE_NO_EXPERT, MOE_BAD_SHAPE, MOE_TOO_MANY_USED, MOE_NO_ROUTER };

static void kv_arr_i32(gwriter *w, const char *k, const int32_t *v, uint64_t n) {
    kv_key(w, k, NL_GGUF_ARRAY);
    put_u32(&w->kv, NL_GGUF_I32);
    put_u64(&w->kv, n);
    put(&w->kv, v, n * 4);
}

static void add_mat(gwriter *w, const char *name, const float *v, int64_t rows, int64_t cols) {
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    add_tensor(w, name, NL_GGML_F32, rows == 1 && strstr(name, "_shexp") ? 1 : 2, ne, v, (size_t)(rows * cols) * 4);
}

static const char *moe_as_gguf(nl_model *m, const char *out, int bad) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const nl_config *c = nl_model_config(m);
    const char *arch = c->arch == NL_ARCH_MIXTRAL ? "llama" : c->arch == NL_ARCH_QWEN2_MOE ? "qwen2moe" : "qwen3moe";
    const int D = c->d_model, V = c->vocab_size, H = c->n_heads, Hk = c->n_kv_heads, Dh = c->head_dim, E = c->n_experts;
    gwriter w = {0};
    char key[128], nm[96];
#define K(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    kv_str(&w, "general.architecture", arch);
    kv_u32(&w, K("block_count"), (uint32_t)c->n_layers);
    kv_u32(&w, K("context_length"), (uint32_t)c->max_pos);
    kv_u32(&w, K("embedding_length"), (uint32_t)D);
    kv_u32(&w, K("feed_forward_length"), (uint32_t)c->d_ff);
    kv_u32(&w, K("attention.head_count"), (uint32_t)H);
    kv_u32(&w, K("attention.head_count_kv"), (uint32_t)Hk);
    kv_f32(&w, K("rope.freq_base"), c->rope_theta);
    kv_f32(&w, K("attention.layer_norm_rms_epsilon"), c->norm_eps);
    kv_u32(&w, K("expert_count"), (uint32_t)E);
    kv_u32(&w, K("expert_used_count"), (uint32_t)(bad == MOE_TOO_MANY_USED ? E + 1 : c->n_experts_per_tok));
    kv_u32(&w, K("attention.key_length"), (uint32_t)Dh);
    kv_u32(&w, K("attention.value_length"), (uint32_t)Dh);
    if (c->arch != NL_ARCH_MIXTRAL) kv_u32(&w, K("expert_feed_forward_length"), (uint32_t)c->d_expert);
    if (c->arch == NL_ARCH_QWEN2_MOE) kv_u32(&w, K("expert_shared_feed_forward_length"), (uint32_t)c->d_shared);
    int32_t dense[64];
    int nd = 0;
    for (int l = 0; l < c->n_layers && l < 64; l++)
        if (c->mlp_only[l / 8] >> (l % 8) & 1) dense[nd++] = l;
    if (c->decoder_sparse_step != 1 || nd) {
        kv_u32(&w, "neuronlab.decoder_sparse_step", (uint32_t)c->decoder_sparse_step);
        kv_arr_i32(&w, "neuronlab.mlp_only_layers", dense, (uint64_t)nd);
    }
#undef K
    float *emb = malloc((size_t)V * D * sizeof(float));
    int32_t *ids = malloc((size_t)V * sizeof(int32_t));
    for (int i = 0; i < V; i++) ids[i] = i;
    nl_model_embed(m, ids, V, 0, emb);
    add_mat(&w, "token_embd.weight", emb, V, D);
    free(emb), free(ids);
    for (int l = 0; l < c->n_layers; l++) {
        nl_layer y;
        cr_assert_eq(nl_model_layer(&ctx, m, l, &y), NL_OK, "%s", ctx.msg);
        struct { const char *n; const nl_mat *w; const float *v; int perm; } ts[] = {
            {"attn_norm.weight", NULL, y.ln1_w, 0}, {"ffn_norm.weight", NULL, y.ln2_w, 0},
            {"attn_q.weight", &y.wq, NULL, H}, {"attn_k.weight", &y.wk, NULL, Hk}, {"attn_v.weight", &y.wv, NULL, 0},
            {"attn_output.weight", &y.wo, NULL, 0}, {"attn_q.bias", NULL, y.bq, 0}, {"attn_k.bias", NULL, y.bk, 0},
            {"attn_v.bias", NULL, y.bv, 0}, {"attn_q_norm.weight", NULL, y.q_norm, 0}, {"attn_k_norm.weight", NULL, y.k_norm, 0},
            {"ffn_gate.weight", &y.w_gate, NULL, 0}, {"ffn_up.weight", &y.w_up, NULL, 0}, {"ffn_down.weight", &y.w_down, NULL, 0},
            {bad == MOE_NO_ROUTER ? "ffn_gate_inpx.weight" : "ffn_gate_inp.weight", &y.router, NULL, 0},
            {"ffn_gate_shexp.weight", &y.sh_gate, NULL, 0}, {"ffn_up_shexp.weight", &y.sh_up, NULL, 0},
            {"ffn_down_shexp.weight", &y.sh_down, NULL, 0}, {"ffn_gate_inp_shexp.weight", &y.sh_router, NULL, 0}};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
            snprintf(nm, sizeof nm, "blk.%d.%s", l, ts[i].n);
            if (ts[i].v) {
                int n = 0;
                if (!strcmp(ts[i].n, "attn_q_norm.weight") || !strcmp(ts[i].n, "attn_k_norm.weight")) n = Dh;
                if (!strcmp(ts[i].n, "attn_q.bias")) n = H * Dh;
                if (!strcmp(ts[i].n, "attn_k.bias") || !strcmp(ts[i].n, "attn_v.bias")) n = Hk * Dh;
                if (!strcmp(ts[i].n, "attn_norm.weight") || !strcmp(ts[i].n, "ffn_norm.weight")) n = D;
                float *v = malloc((size_t)n * sizeof(float));
                for (int r = 0; r < n; r++) { /* llama: bias rows in RoPE pair order like the weights */
                    int hh = r / Dh, kk = r % Dh;
                    int perm = c->arch == NL_ARCH_MIXTRAL && (ts[i].n[5] == 'q' || ts[i].n[5] == 'k') && strstr(ts[i].n, "bias");
                    v[r] = perm ? ts[i].v[hh * Dh + (kk % 2) * (Dh / 2) + kk / 2] : ts[i].v[r];
                }
                uint64_t ne[1] = {(uint64_t)n};
                add_tensor(&w, nm, NL_GGML_F32, 1, ne, v, (size_t)n * 4);
                free(v);
            } else if (ts[i].w && ts[i].w->w) {
                float *x = mat_copy(ts[i].w);
                const int rows = ts[i].w->n_out, cols = ts[i].w->n_in;
                if (ts[i].perm && c->arch == NL_ARCH_MIXTRAL) { /* LlamaModel.permute */
                    float *p = malloc((size_t)rows * cols * sizeof(float));
                    for (int r = 0; r < rows; r++) {
                        int hh = r / Dh, kk = r % Dh;
                        memcpy(p + (size_t)r * cols, x + (size_t)(hh * Dh + (kk % 2) * (Dh / 2) + kk / 2) * cols,
                               (size_t)cols * sizeof(float));
                    }
                    free(x);
                    x = p;
                }
                add_mat(&w, nm, x, rows, cols);
                free(x);
            }
        }
        if (!y.moe) continue;
        static const char *exps[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
        for (int k = 0; k < 3; k++) {
            if (bad == MOE_NO_EXPERT && k == 2) continue;
            const nl_mat *m0 = k == 0 ? &y.experts[0].w_gate : k == 1 ? &y.experts[0].w_up : &y.experts[0].w_down;
            const int64_t rows = m0->n_out, cols = m0->n_in, per = rows * cols;
            float *all = malloc((size_t)(E * per) * sizeof(float));
            for (int e = 0; e < E; e++) {
                float *x = mat_copy(k == 0 ? &y.experts[e].w_gate : k == 1 ? &y.experts[e].w_up : &y.experts[e].w_down);
                memcpy(all + e * per, x, (size_t)per * sizeof(float));
                free(x);
            }
            uint64_t ne[3] = {(uint64_t)cols, (uint64_t)rows, (uint64_t)(bad == MOE_BAD_SHAPE && k == 1 ? E - 1 : E)};
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, exps[k]);
            add_tensor(&w, nm, NL_GGML_F32, 3, ne, all, (size_t)ne[0] * ne[1] * ne[2] * 4);
            free(all);
        }
    }
    nl_head hd;
    cr_assert_eq(nl_model_head(&ctx, m, &hd), NL_OK, "%s", ctx.msg);
    uint64_t ne1[1] = {(uint64_t)D};
    add_tensor(&w, "output_norm.weight", NL_GGML_F32, 1, ne1, hd.norm_w, (size_t)D * 4);
    if (!c->tie_embeddings) {
        float *x = mat_copy(&hd.lm_head);
        add_mat(&w, "output.weight", x, V, D);
        free(x);
    }
    const char *p = gw_write(&w, out);
    gw_free(&w);
    return p;
}

/* logits of m on the fixture's tokens (T × V, caller frees) */
static float *fixture_logits(nl_model *m, json_t *ex, int *T_out) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    json_t *toks = json_object_get(ex, "tokens");
    int T = (int)json_array_size(toks), V = nl_model_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    nl_forward *f = NULL;
    cr_assert_eq(nl_forward_create(&ctx, m, T, T, &f), NL_OK, "%s", ctx.msg);
    float *lg = malloc((size_t)T * V * sizeof(float));
    cr_assert_eq(nl_forward_run(f, &ctx, ids, T, lg), NL_OK, "%s", ctx.msg);
    nl_forward_destroy(f);
    free(ids);
    *T_out = T;
    return lg;
}

static void same_moe_config(const nl_config *a, const nl_config *b) {
    cr_assert(a->arch == b->arch, "arch %s vs %s", nl_arch_name(a->arch), nl_arch_name(b->arch));
    cr_assert(a->n_experts == b->n_experts && a->n_experts_per_tok == b->n_experts_per_tok && a->d_expert == b->d_expert &&
                  a->d_shared == b->d_shared && a->norm_topk_prob == b->norm_topk_prob && a->qk_norm == b->qk_norm,
              "experts %d/%d k %d/%d Fe %d/%d Fs %d/%d norm %d/%d", a->n_experts, b->n_experts, a->n_experts_per_tok,
              b->n_experts_per_tok, a->d_expert, b->d_expert, a->d_shared, b->d_shared, a->norm_topk_prob, b->norm_topk_prob);
    for (int l = 0; l < a->n_layers; l++)
        cr_assert_eq(nl_config_is_moe_layer(a, l), nl_config_is_moe_layer(b, l), "layer %d", l);
}

static void moe_fixture_reads(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/hf/%s", name);
    if (!nl_path_exists(dir)) cr_skip_test("fixture %s is absent", dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *hf = NULL, *g = NULL;
    cr_assert_eq(nl_model_open(&ctx, dir, &hf), NL_OK, "%s", ctx.msg);
    char out[64];
    snprintf(out, sizeof out, "%s-moe.gguf", name);
    const char *p = moe_as_gguf(hf, out, MOE_OK);
    cr_assert_eq(nl_model_open(&ctx, p, &g), NL_OK, "%s", ctx.msg);
    same_moe_config(nl_model_config(hf), nl_model_config(g));
    json_t *ex = load_json(dir, "expected.json");
    int T;
    float *a = fixture_logits(hf, ex, &T), *b = fixture_logits(g, ex, &T);
    const size_t n = (size_t)T * nl_model_config(hf)->vocab_size;
    cr_assert_leq(nl_max_abs_diff(a, b, n), 1e-6, "%s: GGUF logits differ from the folder's by %g", name, nl_max_abs_diff(a, b, n));
    size_t ln;
    char lp[300];
    snprintf(lp, sizeof lp, "%s/logits.f32", dir);
    float *want = nl_read_all(lp, &ln);
    cr_assert(want && ln == n * 4);
    nl_check_close(b, want, n, json_number_value(json_object_get(ex, "tolerance"))); /* the PyTorch reference */
    free(a), free(b), free(want);
    json_decref(ex);
    nl_model_close(g);
    nl_model_close(hf);
}

Test(gguf, moe_mixtral_as_llama_reads) { moe_fixture_reads("mixtral"); }
Test(gguf, moe_qwen2_moe_reads) { moe_fixture_reads("qwen2_moe"); }
Test(gguf, moe_qwen3_moe_reads) { moe_fixture_reads("qwen3_moe"); }

Test(gguf, moe_bad_files_name_the_problem) {
    const char *dir = "tests/fixtures/hf/qwen2_moe";
    if (!nl_path_exists(dir)) cr_skip_test("fixture %s is absent", dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *hf = NULL;
    cr_assert_eq(nl_model_open(&ctx, dir, &hf), NL_OK, "%s", ctx.msg);
    /* the fixture's only MoE layer is layer 1 (decoder_sparse_step 2, mlp_only_layers [3]) */
    expect_fail(moe_as_gguf(hf, "noexp.gguf", MOE_NO_EXPERT), NL_EFORMAT,
                "missing tensor 'blk.1.ffn_down_exps.weight' (model_type gguf:qwen2moe, a mixture-of-experts layer)");
    expect_fail(moe_as_gguf(hf, "shape.gguf", MOE_BAD_SHAPE), NL_EFORMAT,
                "tensor 'blk.1.ffn_up_exps.weight' has shape [5, 24, 64], the file's metadata implies [6, 24, 64]");
    expect_fail(moe_as_gguf(hf, "used.gguf", MOE_TOO_MANY_USED), NL_EFORMAT,
                "metadata key 'qwen2moe.expert_used_count' is 7, more than expert_count 6");
    expect_fail(moe_as_gguf(hf, "norouter.gguf", MOE_NO_ROUTER), NL_EFORMAT, "missing tensor 'blk.1.ffn_gate_inp.weight'");
    nl_model_close(hf);
    gwriter w;
    tiny_llama(&w, "mixtral"); /* llama.cpp writes Mixtral as llama */
    expect_fail(gw_write(&w, "mixtral.gguf"), NL_EUNSUPPORTED, "architecture 'mixtral' is not supported");
    gw_free(&w);
}

/* mean next-token NLL of logits (T × V) on the tokens */
static double mean_nll(const float *lg, json_t *ex, int T, int V) {
    json_t *toks = json_object_get(ex, "tokens");
    double s = 0;
    for (int t = 0; t + 1 < T; t++) {
        const float *z = lg + (size_t)t * V;
        double mx = z[0], se = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
        for (int v = 0; v < V; v++) se += exp(z[v] - mx);
        s += mx + log(se) - z[json_integer_value(json_array_get(toks, (size_t)t + 1))];
    }
    return s / (T - 1);
}

/* HF MoE fixture → export (every type, tensor by tensor, and back to a folder: export_round_trip)
 * → load: f32 logits equal the folder's (≤ 1e-6), q8_0 logits within the quantisation's reach and
 * the NLL close; the MoE configuration (experts, widths, renormalisation, which layers are dense)
 * survives GGUF and GGUF → Hugging Face. */
static void moe_export_round_trip(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/hf/%s", name);
    if (!nl_path_exists(dir)) cr_skip_test("fixture %s is absent", dir);
    export_round_trip(dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *hf = NULL;
    cr_assert_eq(nl_model_open(&ctx, dir, &hf), NL_OK, "%s", ctx.msg);
    const nl_config *c = nl_model_config(hf);
    json_t *ex = load_json(dir, "expected.json");
    int T;
    float *ref = fixture_logits(hf, ex, &T);
    const int V = c->vocab_size;
    const double nll_ref = mean_nll(ref, ex, T, V);
    for (int q = 0; q < 2; q++) {
        char out[64];
        snprintf(out, sizeof out, "%s-%s.gguf", name, q ? "q8_0" : "f32");
        const char *p = tmp_path(out);
        cr_assert_eq(nl_export_gguf(&ctx, hf, dir, q ? NL_EXPORT_Q8_0 : NL_EXPORT_F32, p, NULL), NL_OK, "%s", ctx.msg);
        nl_model *g = NULL;
        cr_assert_eq(nl_model_open(&ctx, p, &g), NL_OK, "%s", ctx.msg);
        const nl_config *cg = nl_model_config(g);
        same_moe_config(c, cg);
        cr_assert(cg->decoder_sparse_step == c->decoder_sparse_step && !memcmp(cg->mlp_only, c->mlp_only, sizeof c->mlp_only),
                  "decoder_sparse_step %d vs %d or mlp_only_layers differ", cg->decoder_sparse_step, c->decoder_sparse_step);
        float *got = fixture_logits(g, ex, &T);
        const double d = nl_max_abs_diff(got, ref, (size_t)T * V), nll = mean_nll(got, ex, T, V);
        cr_log_info("%s %s: max |logit diff| %.3g, NLL %.6f vs %.6f", name, q ? "q8_0" : "f32", d, nll, nll_ref);
        if (!q) cr_assert_leq(d, 1e-6, "%s f32: logits differ by %g", name, d);
        else {
            /* each tensor is within its Q8_0 bound (export_round_trip); a token whose top-k changes
             * under the rounding moves its logits by a step, so the logits get a wider margin */
            cr_assert(d > 0 && d < 0.5, "%s q8_0: logits differ by %g", name, d);
            cr_assert_leq(fabs(nll - nll_ref), 2e-3 * nll_ref, "%s q8_0: NLL %g vs %g", name, nll, nll_ref);
        }
        free(got);
        nl_model_close(g);
    }
    free(ref);
    json_decref(ex);
    nl_model_close(hf);
}

Test(gguf, moe_export_mixtral_round_trips) { moe_export_round_trip("mixtral"); }
Test(gguf, moe_export_qwen2_moe_round_trips) { moe_export_round_trip("qwen2_moe"); }
Test(gguf, moe_export_qwen3_moe_round_trips) { moe_export_round_trip("qwen3_moe"); }
