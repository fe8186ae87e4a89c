/* fuzz_tokenizer_gpt2.c — libFuzzer harness: the input is a GPT-2 vocab.json and merges.txt
 * separated by NL_FUZZ_SEP; opens the pair with nl_tokenizer_open(vocab.json) and, when it
 * opens, encodes and decodes (fuzz_tok_common.h). Seeds: fuzz/corpus/tokenizer_gpt2/. */
#include "fuzz_util.h"
#include "fuzz_tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    const uint8_t *p0, *p1;
    size_t n0, n1;
    fuzz_split2(d, n, &p0, &n0, &p1, &n1);
    const char *vocab = fuzz_write("vocab.json", p0, n0);
    fuzz_write("merges.txt", p1, n1);
    fuzz_tokenizer_file(vocab, d, n);
    return 0;
}
