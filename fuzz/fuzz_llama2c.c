/* fuzz_llama2c.c — libFuzzer harness: the input is a llama2.c checkpoint (.bin: 7-int
 * header and f32 weights); nl_model_open loads it, then every layer, the head and the
 * W_out norms are read (fuzz_model_common.h). The tokenizer.bin beside such checkpoints is
 * fuzzed by fuzz_tokenizer_bin. Seeds: fuzz/corpus/llama2c/. See fuzz/README.md. */
#include "fuzz_util.h"
#include "fuzz_model_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    fuzz_model_path(fuzz_write("model.bin", d, n));
    return 0;
}
