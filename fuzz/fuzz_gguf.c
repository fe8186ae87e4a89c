/* fuzz_gguf.c — libFuzzer harness: the input is a GGUF file. The container is parsed in memory
 * (nl_gguf_parse) and every metadata value read back through the typed getters and array
 * accessors; then the file is opened as a model (nl_model_open: every layer dequantised, the
 * head, the W_out norms, the embedding of a few ids — fuzz_model_common.h) and as a tokenizer
 * (nl_tokenizer_open on its metadata, fuzz_tok_common.h). Seeds: fuzz/corpus/gguf/ (tiny llama
 * files in F32, F16, BF16 and every quantised type; gpt2 and llama vocabularies), written by
 * fuzz/make-corpus.sh. See fuzz/README.md. */
#include "fuzz_util.h"
#include "fuzz_model_common.h"
#include "fuzz_tok_common.h"
#include "neuronlab/gguf.h"

static void walk_metadata(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_gguf *g = NULL;
    if (nl_gguf_parse(&ctx, "fuzz.gguf", d, n, &g) != NL_OK) return;
    volatile double acc = 0;
    for (int64_t i = 0; i < nl_gguf_n_kv(g); i++) {
        const nl_gguf_kv *kv = nl_gguf_kv_at(g, i);
        uint64_t u;
        int64_t s;
        double f;
        int b;
        const char *str;
        size_t len;
        (void)nl_gguf_get_u64(&ctx, g, kv->key, &u, NULL);
        (void)nl_gguf_get_i64(&ctx, g, kv->key, &s, NULL);
        (void)nl_gguf_get_f64(&ctx, g, kv->key, &f, NULL);
        (void)nl_gguf_get_bool(&ctx, g, kv->key, &b, NULL);
        (void)nl_gguf_get_str(&ctx, g, kv->key, &str, &len, NULL);
        if (kv->type == NL_GGUF_ARRAY)
            for (uint64_t k = 0; k < kv->n && k < 4096; k++) {
                if (kv->arr_type == NL_GGUF_STRING) {
                    const char *p = nl_gguf_arr_str(g, kv, k, &len);
                    if (len) acc += (unsigned char)p[0] + (unsigned char)p[len - 1];
                } else {
                    acc += nl_gguf_arr_num(kv, k);
                }
            }
        if (nl_gguf_find(g, kv->key) != kv) __builtin_trap();
    }
    for (int64_t i = 0; i < nl_gguf_n_tensors(g); i++) {
        const nl_gguf_tensor *t = nl_gguf_tensor_at(g, i);
        if (nl_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (t->nbytes) acc += t->data[0] + t->data[t->nbytes - 1]; /* inside the buffer */
    }
    (void)acc;
    nl_gguf_close(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    walk_metadata(d, n);
    const char *p = fuzz_write("model.gguf", d, n);
    fuzz_model_path(p);
    fuzz_tokenizer_file(p, d, n);
    return 0;
}
