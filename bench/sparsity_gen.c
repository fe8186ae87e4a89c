/* sparsity_gen.c — data for bench/sparsity.sh (built by it against BUILD/libneuronlab.a):
 *   sparsity_gen model DIR D F L       a random-weight Llama Hugging Face folder (vocab 256,
 *                                      4 heads, 2 KV heads, f32, N(0, 0.02) weights, fixed seed)
 *   sparsity_gen acts MODEL OUT.h5 N   an activation file of N tokens for every layer of MODEL:
 *                                      documents of 512 tokens labelled code/math/prose in turn,
 *                                      a = ±u⁴·s with u uniform (0, 1] and a per-token scale s,
 *                                      w_out_norm from the model — written through the
 *                                      h5store writer, so the file is what `record` produces.
 * Prints nothing but errors. Not part of the library or the tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "neuronlab/h5store.h"
#include "neuronlab/model.h"
#include "neuronlab/recorder.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static inline uint64_t next(void) { /* xorshift64* */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}
static inline float unif(void) { return (float)((next() >> 40) + 1) * (1.0f / 16777216.0f); } /* (0, 1] */
static float gauss(void) {
    float u = unif(), v = unif();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static int write_model(const char *dir, int D, int F, int L) {
    const int V = 256, H = 4, Hk = 2, Dh = D / H;
    mkdir(dir, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) { perror(p); return 1; }
    fprintf(f,
            "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
            "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
            "\"vocab_size\": %d, \"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
            "\"hidden_act\": \"silu\", \"tie_word_embeddings\": false, \"torch_dtype\": \"float32\", \"bos_token_id\": 1, "
            "\"eos_token_id\": 2}\n",
            D, F, L, H, Hk, V);
    fclose(f);
    /* tensors: name, rows, cols (cols 0 = 1-D) */
    typedef struct { char name[96]; int r, c; } T;
    int nt = 0, cap = 4 + 9 * L;
    T *t = calloc((size_t)cap, sizeof(T));
#define ADD(n, rr, cc) (snprintf(t[nt].name, sizeof t[nt].name, "%s", n), t[nt].r = rr, t[nt].c = cc, nt++)
    char nm[96];
    ADD("model.embed_tokens.weight", V, D);
    for (int l = 0; l < L; l++) {
        const char *s[9] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                            "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                            "mlp.up_proj.weight", "mlp.down_proj.weight"};
        int r[9] = {D, H * Dh, Hk * Dh, Hk * Dh, D, D, F, F, D}, c[9] = {0, D, D, D, H * Dh, 0, D, D, F};
        for (int k = 0; k < 9; k++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s[k]);
            ADD(nm, r[k], c[k]);
        }
    }
    ADD("model.norm.weight", D, 0);
    ADD("lm_head.weight", V, D);
    size_t hcap = 256 + (size_t)nt * 160, off = 0;
    char *hdr = malloc(hcap);
    size_t hn = (size_t)snprintf(hdr, hcap, "{");
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)t[i].r * (t[i].c ? (size_t)t[i].c : 1) * 4;
        if (t[i].c) hn += (size_t)snprintf(hdr + hn, hcap - hn, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}", i ? "," : "", t[i].name, t[i].r, t[i].c, off, off + n);
        else hn += (size_t)snprintf(hdr + hn, hcap - hn, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}", i ? "," : "", t[i].name, t[i].r, off, off + n);
        off += n;
    }
    hn += (size_t)snprintf(hdr + hn, hcap - hn, "}");
    while (hn % 8) hdr[hn++] = ' ';
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    f = fopen(p, "wb");
    if (!f) { perror(p); return 1; }
    uint64_t hl = hn;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, hn, f);
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)t[i].r * (t[i].c ? (size_t)t[i].c : 1);
        float *w = malloc(n * 4);
        for (size_t k = 0; k < n; k++) w[k] = t[i].c ? 0.02f * gauss() : 1.0f + 0.02f * gauss();
        fwrite(w, 4, n, f);
        free(w);
    }
    int bad = ferror(f);
    fclose(f);
    free(hdr);
    free(t);
    return bad;
}

static int write_acts(const char *model, const char *out, int64_t N) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    if (nl_model_open(&ctx, model, &m) != NL_OK) { fprintf(stderr, "%s\n", ctx.msg); return 1; }
    const nl_config *c = nl_model_config(m);
    const int F = c->d_ff, L = c->n_layers, DOC = 512;
    nl_h5_meta meta = {.model = model, .arch = "llama", .n_layers = L, .d_model = c->d_model, .d_ff = F, .ffn_kind = "gated",
                       .act_fn = "silu", .dtype = NL_H5_F32, .dataset = "synthetic (bench/sparsity_gen.c)"};
    nl_h5_writer *w;
    if (nl_h5_writer_create(&ctx, out, &meta, &w) != NL_OK) { fprintf(stderr, "%s\n", ctx.msg); return 1; }
    float *a = malloc(sizeof(float) * (size_t)DOC * F);
    int32_t *ids = malloc(sizeof(int32_t) * DOC);
    static const char *labels[3] = {"code", "math", "prose"};
    nl_status st = NL_OK;
    for (int l = 0; st == NL_OK && l < L; l++) {
        st = nl_model_w_out_norm(&ctx, m, l, a);
        if (st == NL_OK) st = nl_h5_writer_put_w_out_norm(w, &ctx, l, a);
    }
    for (int64_t t0 = 0, d = 0; st == NL_OK && t0 < N; t0 += DOC, d++) {
        int T = N - t0 < DOC ? (int)(N - t0) : DOC;
        st = nl_h5_writer_begin_doc(w, &ctx, labels[d % 3], -1);
        for (int t = 0; t < T; t++) ids[t] = (int32_t)(next() % 256);
        if (st == NL_OK) st = nl_h5_writer_append_tokens(w, &ctx, ids, T);
        for (int l = 0; st == NL_OK && l < L; l++) {
            for (int t = 0; t < T; t++) {
                float s = 0.05f + unif();
                for (int i = 0; i < F; i++) {
                    uint64_t r = next();
                    float u = (float)((r >> 40) + 1) * (1.0f / 16777216.0f), u2 = u * u;
                    a[(size_t)t * F + i] = (r & 1 ? -s : s) * u2 * u2;
                }
            }
            st = nl_h5_writer_append_acts(w, &ctx, l, a, T);
        }
        if (st == NL_OK) st = nl_h5_writer_end_doc(w, &ctx);
    }
    if (st != NL_OK) fprintf(stderr, "%s\n", ctx.msg);
    nl_status cst = nl_h5_writer_close(w, &ctx, st == NL_OK);
    if (st == NL_OK && cst != NL_OK) { fprintf(stderr, "%s\n", ctx.msg); st = cst; }
    free(a), free(ids);
    nl_model_close(m);
    return st != NL_OK;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "model")) return write_model(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc == 5 && !strcmp(argv[1], "acts")) return write_acts(argv[2], argv[3], atoll(argv[4]));
    fprintf(stderr, "usage: sparsity_gen model DIR D F L | sparsity_gen acts MODEL OUT.h5 N\n");
    return 2;
}
