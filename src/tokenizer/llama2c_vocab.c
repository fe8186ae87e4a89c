/* llama2c_vocab.c — llama2.c tokenizer.bin: int32 max_token_length, then per token float32
 * score, int32 length, bytes (little-endian); the token count is what the file holds.
 *
 * The vocabulary is the SentencePiece one with "▁" written as a space (llama2.c's export), and
 * the encoder is SentencePiece's score BPE, so the file is loaded as a SentencePiece model:
 * spaces become "▁" again, id 0 "<unk>" is the unknown piece, "\n<s>\n" and "\n</s>\n" are the
 * control pieces <s> and </s>, "<0xXX>" pieces are byte pieces (byte fallback when all 256 are
 * there), add_dummy_prefix on, no other normalization. The ids equal SentencePiece's for the same
 * vocabulary. Differences from llama2.c's own encode(): it can merge into control pieces and its
 * byte fallback assumes byte pieces at ids 3–258; neither happens here. A NaN or infinite score
 * is refused, naming the file and the token index.
 * Checked by tests/test_tokenizer.c (ids from python3-sentencepiece). */
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

static int is_byte_piece(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    for (int i = 3; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'))) return 0;
    return 1;
}

nl_status nl_tk_load_llama2c(nl_ctx *ctx, const char *path, nl_tokenizer **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = sz > 0 ? malloc((size_t)sz) : NULL;
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(buf);
        return sz <= 0 ? nl_errorf(ctx, NL_EFORMAT, "'%s': empty tokenizer file", path)
                       : nl_errorf(ctx, NL_EIO, "cannot read '%s'", path);
    }
    fclose(f);
    nl_status st = NL_OK;
    nl_tokenizer *t = NULL;
    char *piece = NULL;
    int32_t maxlen;
    if (sz < 4) { st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated llama2.c tokenizer (no header)", path); goto done; }
    memcpy(&maxlen, buf, 4);
    if (maxlen <= 0 || maxlen > 1 << 20) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': not a llama2.c tokenizer (max token length %d)", path, (int)maxlen);
        goto done;
    }
    /* count the records */
    size_t n = 0, off = 4;
    while (off < (size_t)sz) {
        int32_t len;
        if ((size_t)sz - off < 8) goto trunc;
        memcpy(&len, buf + off + 4, 4);
        if (len < 0 || len > maxlen || (size_t)len > (size_t)sz - off - 8) goto trunc;
        off += 8 + (size_t)len;
        n++;
    }
    if (n == 0 || n > INT32_MAX / 2) { st = nl_errorf(ctx, NL_EFORMAT, "'%s': no tokens", path); goto done; }
    t = nl_tk_new(path);
    piece = malloc((size_t)maxlen * 3 + 8);
    if (!t || !piece || nl_tk_vocab_init(&t->v, (int)n) || !(t->v.score = malloc(n * sizeof(float)))) {
        st = nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", path);
        goto done;
    }
    int n_bytes = 0;
    off = 4;
    for (size_t i = 0; i < n; i++) {
        float score;
        int32_t len;
        memcpy(&score, buf + off, 4);
        memcpy(&len, buf + off + 4, 4);
        if (!isfinite(score)) { /* NaN/Inf would make the BPE merge order meaningless */
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': token %zu has score %s, not a finite number (byte %zu)", path, i,
                           isnan(score) ? "nan" : score > 0 ? "inf" : "-inf", off);
            goto done;
        }
        const char *s = (const char *)buf + off + 8;
        off += 8 + (size_t)len;
        size_t k = 0;
        int type = TK_NORMAL;
        if (i == 0 && len == 5 && !memcmp(s, "<unk>", 5)) type = TK_UNKNOWN;
        if ((len == 5 && !memcmp(s, "\n<s>\n", 5)) || (len == 6 && !memcmp(s, "\n</s>\n", 6))) {
            type = TK_CONTROL;
            s++;
            len -= 2; /* "<s>" / "</s>" as SentencePiece names them */
        }
        if (type == TK_NORMAL && is_byte_piece(s, (size_t)len)) { type = TK_BYTE; n_bytes++; }
        for (int32_t j = 0; j < len; j++) {
            if (s[j] == ' ' && type == TK_NORMAL) { memcpy(piece + k, "\xE2\x96\x81", 3); k += 3; }
            else piece[k++] = s[j];
        }
        if (nl_tk_vocab_set(&t->v, (int)i, piece, k)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
        t->v.score[i] = score;
        t->v.type[i] = (uint8_t)type;
    }
    if (t->v.type[0] != TK_UNKNOWN) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': token 0 is not <unk>: not a llama2.c tokenizer of a SentencePiece vocabulary", path);
        goto done;
    }
    t->byte_fallback = n_bytes == 256;
    if (!t->byte_fallback)
        for (size_t i = 0; i < n; i++)
            if (t->v.type[i] == TK_BYTE) t->v.type[i] = TK_NORMAL;
    t->sp_add_dummy_prefix = 1;
    t->sp_remove_extra_ws = 0;
    t->sp_escape_ws = 1;
    st = nl_tk_spm_build(ctx, t, "<s>", "</s>");
    goto done;
trunc:
    st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated llama2.c tokenizer (record %zu at byte %zu)", path, n, off);
done:
    free(buf);
    free(piece);
    if (st != NL_OK) {
        nl_tokenizer_close(t);
        return st;
    }
    *out = t;
    return NL_OK;
}
