/* fuzz_config.c — libFuzzer harness: the input is a config.json alone, in a folder with a
 * fixed small valid model.safetensors (a 1-layer Llama written at start-up), so the
 * config parser and its checks against the tensors run on every input.
 * Seeds: fuzz/corpus/config/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include <sys/stat.h>

#include "fuzz_util.h"
#include "fuzz_model_common.h"

/* A 1-layer Llama (D = 8, F = 16, V = 32, 2 heads, 1 KV head), all weights 0.01 in F32. */
static void write_tiny_safetensors(const char *path) {
    struct { const char *name; int r, c; } t[] = {
        {"model.embed_tokens.weight", 32, 8}, {"model.layers.0.input_layernorm.weight", 8, 0},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8}, {"model.layers.0.self_attn.k_proj.weight", 4, 8},
        {"model.layers.0.self_attn.v_proj.weight", 4, 8}, {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.post_attention_layernorm.weight", 8, 0}, {"model.layers.0.mlp.gate_proj.weight", 16, 8},
        {"model.layers.0.mlp.up_proj.weight", 16, 8}, {"model.layers.0.mlp.down_proj.weight", 8, 16},
        {"model.norm.weight", 8, 0}, {"lm_head.weight", 32, 8},
    };
    char hdr[4096];
    size_t off = 0, h = 0;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{");
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t cnt = (size_t)t[i].r * (size_t)(t[i].c ? t[i].c : 1);
        char shape[32];
        if (t[i].c) snprintf(shape, sizeof shape, "[%d, %d]", t[i].r, t[i].c);
        else snprintf(shape, sizeof shape, "[%d]", t[i].r);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h, "%s\"%s\": {\"dtype\": \"F32\", \"shape\": %s, \"data_offsets\": [%zu, %zu]}",
                              i ? ", " : "", t[i].name, shape, off, off + 4 * cnt);
        off += 4 * cnt;
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while (h % 8) hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    uint64_t hl = h;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, h, f);
    float v = 0.01f;
    for (size_t i = 0; i < off / 4; i++) fwrite(&v, 4, 1, f);
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    mkdir(fuzz_path("cfg"), 0700);
    write_tiny_safetensors(fuzz_path("cfg/model.safetensors"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    fuzz_write("cfg/config.json", d, n);
    fuzz_model_path(fuzz_path("cfg"));
    return 0;
}
