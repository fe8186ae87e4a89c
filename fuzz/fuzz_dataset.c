/* fuzz_dataset.c — libFuzzer harness: the input is a JSONL dataset (include/neuronlab/
 * dataset.h: token rows, text rows, prompt/response rows, labels); nl_dataset_load reads it
 * with a small GPT-2 tokenizer (written at start-up) and vocab_size 64, and the documents are
 * walked. Seeds: fuzz/corpus/dataset/ (fuzz/make-corpus.sh). See fuzz/README.md. */
#include "fuzz_util.h"
#include "neuronlab/dataset.h"
#include "neuronlab/tokenizer.h"

static nl_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *v = "{\"a\": 0, \"b\": 1, \"c\": 2, \"\xc4\xa0\": 3, \"ab\": 4, \"abc\": 5, \"\xc4\xa0" "a\": 6, \"!\": 7, "
                    "\"<|endoftext|>\": 8}";
    const char *m = "#version: 0.2\na b\nab c\n\xc4\xa0 a\n";
    const char *vp = fuzz_write("vocab.json", (const uint8_t *)v, strlen(v));
    fuzz_write("merges.txt", (const uint8_t *)m, strlen(m));
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    if (nl_tokenizer_open(&ctx, vp, &g_tok) != NL_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_dataset *ds = NULL;
    const char *p = fuzz_write("data.jsonl", d, n);
    if (nl_dataset_load(&ctx, p, (n && (d[0] & 1)) ? g_tok : NULL, (n && (d[0] & 2)) ? 64 : 0, &ds) == NL_OK) {
        int64_t sum = 0;
        for (int i = 0; i < ds->n_docs; i++) {
            const nl_doc *doc = &ds->docs[i];
            for (int t = 0; t < doc->n_tokens; t++) sum += doc->tokens[t];
            if (doc->prompt_len < 0 || doc->prompt_len > doc->n_tokens || !doc->label) abort();
            (void)nl_dataset_label_index(ds, doc->label);
        }
        (void)sum;
        nl_dataset_destroy(ds);
    }
    return 0;
}
