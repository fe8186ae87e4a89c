/* fuzz_tokenizer_bin.c — libFuzzer harness: the input is a tokenizer.bin; opens it with
 * nl_tokenizer_open and, when it opens, encodes and decodes (fuzz_tok_common.h).
 * Seeds: fuzz/corpus/tokenizer_bin/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include "fuzz_util.h"
#include "fuzz_tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    fuzz_tokenizer_file(fuzz_write("tokenizer.bin", d, n), d, n);
    return 0;
}
