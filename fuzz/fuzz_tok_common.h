/* fuzz_tok_common.h — what the tokenizer harnesses do with a tokenizer that opened:
 * encode a few fixed texts and a slice of the input itself (with and without special
 * tokens), decode the ids back and every id of the vocabulary one by one. */
#ifndef NEURONLAB_FUZZ_TOK_COMMON_H
#define NEURONLAB_FUZZ_TOK_COMMON_H

#include "neuronlab/tokenizer.h"

static void fuzz_exercise_tokenizer(nl_ctx *ctx, const nl_tokenizer *t, const uint8_t *d, size_t n) {
    static const char *texts[] = {"Hello world! 123", " a  b\tc\n", "\xc3\xa9\xe2\x96\x81\xf0\x9f\x98\x80", "<s></s><|endoftext|>", ""};
    const char *extra = (const char *)d;
    size_t extra_n = n > 256 ? 256 : n;
    for (int i = 0; i < 6; i++) {
        const char *s = i < 5 ? texts[i] : extra;
        size_t len = i < 5 ? strlen(texts[i]) : extra_n;
        for (int sp = 0; sp < 2; sp++) {
            nl_encode_opts o = {.add_special = sp, .parse_special = sp, .lone_surrogates = i == 5};
            int32_t *ids = NULL;
            int k = 0;
            if (nl_tokenizer_encode(ctx, t, s, len, &o, &ids, &k) == NL_OK) {
                char *txt = NULL;
                size_t tl = 0;
                if (nl_tokenizer_decode(ctx, t, ids, k, sp, &txt, &tl) == NL_OK) free(txt);
                free(ids);
            }
        }
    }
    int V = nl_tokenizer_vocab_size(t);
    char buf[64];
    for (int id = 0; id < V && id < 4096; id++) {
        size_t len;
        (void)nl_tokenizer_token(t, id, &len);
        (void)nl_tokenizer_is_special(t, id);
        (void)nl_tokenizer_piece(t, id - 1, id, buf, sizeof buf);
    }
    const int32_t *pre, *post;
    int np, npo;
    nl_tokenizer_template(t, &pre, &np, &post, &npo);
}

/* Opens path as a tokenizer and exercises it. */
static void fuzz_tokenizer_file(const char *path, const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_tokenizer *t = NULL;
    if (nl_tokenizer_open(&ctx, path, &t) == NL_OK) {
        fuzz_exercise_tokenizer(&ctx, t, d, n);
        nl_tokenizer_close(t);
    }
}

#endif
