/* fuzz_safetensors.c — libFuzzer harness: the input is a .safetensors file (header and
 * data); nl_safetensors_open parses it in memory, then every entry is looked up by name
 * and viewed (nl_safetensors_view: dtype, shape and byte range checks).
 * Seeds: fuzz/corpus/safetensors/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include "fuzz_util.h"
#include "neuronlab/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    /* a private copy: the parser must stay inside [base, base+size) (ASan sees overreads) */
    uint8_t *base = malloc(n ? n : 1);
    if (!base) return 0;
    memcpy(base, d, n);
    nl_safetensors *st = NULL;
    if (nl_safetensors_open(&ctx, "fuzz.safetensors", base, n, &st) == NL_OK) {
        int k = nl_safetensors_count(st);
        for (int i = 0; i < k; i++) {
            const nl_st_entry *e = nl_safetensors_entry(st, i);
            if (!e || nl_safetensors_find(st, e->name) == NULL) abort();
            nl_tensor t;
            if (nl_safetensors_view(&ctx, st, e, &t) == NL_OK) {
                volatile uint8_t sink = 0;
                if (e->nbytes) sink ^= ((const uint8_t *)e->data)[0] ^ ((const uint8_t *)e->data)[e->nbytes - 1];
                (void)sink;
            }
        }
        nl_safetensors_close(st);
    }
    free(base);
    return 0;
}
