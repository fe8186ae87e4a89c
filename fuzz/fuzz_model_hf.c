/* fuzz_model_hf.c — libFuzzer harness: the input is config.json and model.safetensors
 * separated by NL_FUZZ_SEP, written to a folder that nl_model_open loads as a Hugging Face
 * checkpoint; then every layer, the head and the W_out norms are read (fuzz_model_common.h).
 * Seeds: fuzz/corpus/model_hf/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include <sys/stat.h>

#include "fuzz_util.h"
#include "fuzz_model_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    const uint8_t *p0, *p1;
    size_t n0, n1;
    fuzz_split2(d, n, &p0, &n0, &p1, &n1);
    const char *dir = fuzz_path("hf");
    mkdir(dir, 0700);
    fuzz_write("hf/config.json", p0, n0);
    fuzz_write("hf/model.safetensors", p1, n1);
    fuzz_model_path(dir);
    return 0;
}
