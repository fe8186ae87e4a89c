/* test_tokenizer.c — tokenizers: small tokenizer.json files written here (byte-level and
 * SentencePiece-style BPE) with hand-computed ids, added tokens with and without parse_special,
 * the template post-processor, decoders and round trips, GPT-2 vocab.json + merges.txt, small
 * SentencePiece tokenizer.model and llama2.c tokenizer.bin files built byte by byte, Unicode
 * normalization against Python's unicodedata, invalid UTF-8, every bad-input error, threads, and
 * (when ../shared is there) the real Llama 2 tokenizer.model / tokenizer.bin against ids from
 * python3-sentencepiece. The reference encoders themselves run in tests/tokenizer_conformance.sh. */
#include <pthread.h>

#include "neuronlab/tokenizer.h"
#include "testutil.h"
#include "tokenizer/unicode.h"

static char dir[] = "/tmp/nl_tokenizer_XXXXXX";

static const char *path_of(const char *name) {
    static char path[512];
    static int made; /* mkdtemp once per test process (a generated name may end in 'X') */
    if (!made) { cr_assert(mkdtemp(dir)); made = 1; }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static const char *write_bytes(const char *name, const void *data, size_t n) {
    const char *p = path_of(name);
    if (strchr(name, '/')) { /* one sub-folder */
        char sub[512];
        snprintf(sub, sizeof sub, "%s", p);
        *strrchr(sub, '/') = 0;
        mkdir(sub, 0700);
    }
    FILE *f = fopen(p, "wb");
    cr_assert(f, "cannot write %s", p);
    fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

static const char *write_file(const char *name, const char *text) { return write_bytes(name, text, strlen(text)); }

static nl_tokenizer *open_ok(const char *path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *t = NULL;
    nl_status st = nl_tokenizer_open(&ctx, path, &t);
    cr_assert_eq(st, NL_OK, "open '%s': %s", path, ctx.msg);
    cr_assert_not_null(t);
    return t;
}

static void expect_ids_n(const nl_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                         const int32_t *want, int n_want) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_encode_opts o = {.add_special = add_special, .parse_special = parse_special};
    int32_t *ids;
    int n;
    cr_assert_eq(nl_tokenizer_encode(&ctx, t, text, len, &o, &ids, &n), NL_OK, "%s", ctx.msg);
    char got[1024] = "", exp[1024] = "";
    for (int i = 0; i < n && strlen(got) < 1000; i++) snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
    for (int i = 0; i < n_want && strlen(exp) < 1000; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
    cr_assert(n == n_want && (n == 0 || !memcmp(ids, want, (size_t)n * sizeof *ids)), "'%s': got [%s ], want [%s ]", text, got, exp);
    free(ids);
}

#define EXPECT(t, text, add, parse, ...)                                                           \
    do {                                                                                            \
        const int32_t w_[] = {__VA_ARGS__};                                                         \
        expect_ids_n((t), (text), strlen(text), (add), (parse), w_, (int)(sizeof w_ / sizeof *w_)); \
    } while (0)
#define EXPECT_NONE(t, text, add, parse) expect_ids_n((t), (text), strlen(text), (add), (parse), NULL, 0)

static char *decode(const nl_tokenizer *t, const int32_t *ids, int n, int skip) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char *s;
    size_t len;
    cr_assert_eq(nl_tokenizer_decode(&ctx, t, ids, n, skip, &s, &len), NL_OK, "%s", ctx.msg);
    cr_assert_eq(strlen(s), len);
    return s;
}

static void expect_roundtrip(const nl_tokenizer *t, const char *text) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    int32_t *ids;
    int n;
    cr_assert_eq(nl_tokenizer_encode(&ctx, t, text, strlen(text), NULL, &ids, &n), NL_OK, "%s", ctx.msg);
    char *back = decode(t, ids, n, 0);
    cr_assert_str_eq(back, text);
    free(back);
    free(ids);
}

/* ---- byte-level BPE (GPT-2 / Llama 3 / Qwen style) ---------------------------------------- */
/* Ġ is the space byte in GPT-2's byte-to-unicode table. */
#define BL_VOCAB "\"a\": 0, \"b\": 1, \"c\": 2, \"\xc4\xa0\": 3, \"ab\": 4, \"abc\": 5, \"\xc4\xa0" "a\": 6, \"!\": 7, \"\xc4\xa0" "ab\": 9"

static const char *bytelevel_json(const char *name, const char *merges, int ignore_merges, const char *post) {
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 8, \"content\": \"<|end|>\", \"single_word\": false, "
             "\"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}],"
             "\"normalizer\": null,"
             "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},"
             "\"post_processor\": %s,"
             "\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},"
             "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null,"
             " \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": %s,"
             " \"vocab\": {" BL_VOCAB "}, \"merges\": %s}}",
             post, ignore_merges ? "true" : "false", merges);
    return write_file(name, buf);
}

static const char *TEMPLATE_END = "{\"type\": \"TemplateProcessing\", \"single\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
                                  " {\"SpecialToken\": {\"id\": \"<|end|>\", \"type_id\": 0}}], \"pair\": [],"
                                  " \"special_tokens\": {\"<|end|>\": {\"id\": \"<|end|>\", \"ids\": [8], \"tokens\": [\"<|end|>\"]}}}";

Test(tokenizer, bytelevel_merges_as_strings_and_pairs) {
    const char *a = bytelevel_json("bl1.json", "[\"a b\", \"ab c\", \"\xc4\xa0 a\"]", 0, "null");
    const char *b = bytelevel_json("bl2.json", "[[\"a\", \"b\"], [\"ab\", \"c\"], [\"\xc4\xa0\", \"a\"]]", 0, "null");
    const char *files[] = {a, b};
    for (int k = 0; k < 2; k++) {
        nl_tokenizer *t = open_ok(files[k]);
        /* GPT-2 split: "abc" " ab" "!"; " ab" merges a+b (rank 0) before Ġ+a (rank 2) */
        EXPECT(t, "abc ab!", 0, 0, 5, 3, 4, 7);
        EXPECT(t, "ab", 1, 0, 4); /* no post-processor: add_special adds nothing */
        EXPECT_NONE(t, "", 0, 0);
        expect_roundtrip(t, "abc ab!");
        cr_assert_eq(nl_tokenizer_vocab_size(t), 10);
        nl_tokenizer_close(t);
    }
}

Test(tokenizer, bytelevel_ignore_merges_template_and_special_tokens) {
    nl_tokenizer *t = open_ok(bytelevel_json("bl3.json", "[\"a b\", \"ab c\", \"\xc4\xa0 a\"]", 1, TEMPLATE_END));
    EXPECT(t, "abc ab!", 0, 0, 5, 9, 7); /* " ab" is in the vocabulary: one id */
    EXPECT(t, "abc ab!", 1, 0, 5, 9, 7, 8);
    /* <|end|> in the text: plain characters unless parse_special ('<', '|' … are not in this
     * vocabulary and there is no unk: they vanish, as in tokenizers) */
    EXPECT(t, "ab<|end|>", 0, 1, 4, 8);
    EXPECT(t, "ab<|end|>", 0, 0, 4);
    cr_assert_eq(nl_tokenizer_eos(t), 8);
    int32_t ids[] = {5, 9, 8, 7};
    char *s = decode(t, ids, 4, 0);
    cr_assert_str_eq(s, "abc ab<|end|>!");
    free(s);
    s = decode(t, ids, 4, 1);
    cr_assert_str_eq(s, "abc ab!");
    free(s);
    char buf[16];
    cr_assert_eq(nl_tokenizer_piece(t, 5, 9, buf, sizeof buf), 3);
    cr_assert(!memcmp(buf, " ab", 3));
    cr_assert_eq(nl_tokenizer_piece(t, 9, 8, buf, sizeof buf), 0);
    cr_assert(nl_tokenizer_is_special(t, 8) && !nl_tokenizer_is_special(t, 5));
    nl_tokenizer_close(t);
}

/* ---- SentencePiece-style BPE (Llama 2 / Mistral tokenizer.json) ---------------------------- */
#define SPM_TAIL_VOCAB "\"\xe2\x96\x81\": 259, \"h\": 260, \"i\": 261, \"\xe2\x96\x81h\": 262, \"\xe2\x96\x81hi\": 263"

static const char *spm_json(const char *name, int byte_pieces, const char *pre, const char *norm, const char *extra_added) {
    static char buf[65536];
    size_t k = 0;
    k += (size_t)snprintf(buf + k, sizeof buf - k,
                          "{\"version\": \"1.0\", \"added_tokens\": ["
                          "{\"id\": 0, \"content\": \"<unk>\", \"special\": true, \"normalized\": false},"
                          "{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
                          "{\"id\": 2, \"content\": \"</s>\", \"special\": true, \"normalized\": false}%s],"
                          "\"normalizer\": %s, \"pre_tokenizer\": %s,"
                          "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", "
                          "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": "
                          "{\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},"
                          "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
                          "\"\xe2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": "
                          "\"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
                          "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
                          "\"byte_fallback\": %s, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, ",
                          extra_added, norm, pre, byte_pieces ? "true" : "false");
    for (int b = 0; b < 256 && byte_pieces; b++) k += (size_t)snprintf(buf + k, sizeof buf - k, "\"<0x%02X>\": %d, ", b, 3 + b);
    k += (size_t)snprintf(buf + k, sizeof buf - k, SPM_TAIL_VOCAB "}, \"merges\": [\"\xe2\x96\x81 h\", \"\xe2\x96\x81h i\"]}}");
    return write_file(name, buf);
}

static const char *LLAMA_NORM = "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}, "
                                "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]}";

Test(tokenizer, sentencepiece_style_merges_template_and_decode) {
    nl_tokenizer *t = open_ok(spm_json("spm1.json", 1, "null", LLAMA_NORM, ""));
    /* "▁hi▁hi": ▁+h twice (rank 0, leftmost first), then ▁h+i twice */
    EXPECT(t, "hi hi", 0, 0, 263, 263);
    EXPECT(t, "hi hi", 1, 0, 1, 263, 263);
    cr_assert_eq(nl_tokenizer_bos(t), 1);
    cr_assert_eq(nl_tokenizer_eos(t), 2);
    int32_t ids[] = {1, 263, 263};
    char *s = decode(t, ids, 3, 1);
    cr_assert_str_eq(s, "hi hi");
    free(s);
    s = decode(t, ids, 3, 0);
    cr_assert_str_eq(s, "<s> hi hi");
    free(s);
    /* streaming pieces: the first piece loses its dummy-prefix space */
    char buf[16];
    cr_assert_eq(nl_tokenizer_piece(t, 1, 263, buf, sizeof buf), 2);
    cr_assert(!memcmp(buf, "hi", 2));
    cr_assert_eq(nl_tokenizer_piece(t, 263, 263, buf, sizeof buf), 3);
    cr_assert(!memcmp(buf, " hi", 3));
    cr_assert_eq(nl_tokenizer_piece(t, 263, 3 + 0xC3, buf, sizeof buf), 1);
    cr_assert_eq((unsigned char)buf[0], 0xC3);
    expect_roundtrip(t, "hi hi");
    nl_tokenizer_close(t);
}

Test(tokenizer, byte_fallback_and_fuse_unk) {
    nl_tokenizer *t = open_ok(spm_json("spm2.json", 1, "null", LLAMA_NORM, ""));
    /* é (C3 A9) is not in the vocabulary: its bytes */
    EXPECT(t, "h\xc3\xa9", 0, 0, 262, 3 + 0xC3, 3 + 0xA9);
    expect_roundtrip(t, "h\xc3\xa9 hi");
    nl_tokenizer_close(t);
    t = open_ok(spm_json("spm3.json", 0, "null", LLAMA_NORM, ""));
    /* no byte pieces: a run of unknown characters is one <unk> */
    EXPECT(t, "h\xc3\xa9\xc3\xa9", 0, 0, 262, 0);
    EXPECT(t, "h\xc3\xa9i\xc3\xa9", 0, 0, 262, 0, 261, 0);
    nl_tokenizer_close(t);
}

Test(tokenizer, added_tokens_with_and_without_parse_special) {
    const char *extra = ", {\"id\": 264, \"content\": \"<x>\", \"special\": false, \"normalized\": false}";
    nl_tokenizer *t = open_ok(spm_json("spm4.json", 1, "null", LLAMA_NORM, extra));
    /* special <s> matched only with parse_special; each section gets its own ▁ */
    EXPECT(t, "hi<s>hi", 0, 1, 263, 1, 263);
    EXPECT(t, "hi<s>hi", 0, 0, 263, 3 + '<', 3 + 's', 3 + '>', 260, 261);
    /* non-special <x> always */
    EXPECT(t, "hi<x>hi", 0, 0, 263, 264, 263);
    EXPECT(t, "<x>", 1, 0, 1, 264);
    int32_t ids[] = {263, 264, 263};
    char *s = decode(t, ids, 3, 1);
    cr_assert_str_eq(s, "hi<x> hi");
    free(s);
    nl_tokenizer_close(t);
}

Test(tokenizer, metaspace_pretokenizer_splits_and_prepends) {
    const char *pre = "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": true}";
    nl_tokenizer *t = open_ok(spm_json("spm5.json", 1, pre, "null", ""));
    /* "hi  hi" → "▁hi▁▁hi" → pieces "▁hi", "▁", "▁hi" (merged with the next, tokenizers' MergedWithNext) */
    EXPECT(t, "hi  hi", 0, 0, 263, 259, 263);
    nl_tokenizer_close(t);
}

/* ---- GPT-2 vocab.json + merges.txt --------------------------------------------------------- */
Test(tokenizer, gpt2_vocab_and_merges_files) {
    write_file("gpt2/vocab.json", "{\"a\": 0, \"b\": 1, \"c\": 2, \"\xc4\xa0\": 3, \"ab\": 4, \"abc\": 5, \"\xc4\xa0" "a\": 6, \"!\": 7, "
                                  "\"<|endoftext|>\": 8}");
    write_file("gpt2/merges.txt", "#version: 0.2\na b\nab c\n\xc4\xa0 a\n");
    nl_tokenizer *t = open_ok(path_of("gpt2/vocab.json"));
    EXPECT(t, "abc ab!", 0, 0, 5, 3, 4, 7);
    EXPECT(t, "ab<|endoftext|>", 0, 1, 4, 8);
    cr_assert_eq(nl_tokenizer_eos(t), 8);
    expect_roundtrip(t, "abc ab!");
    nl_tokenizer_close(t);
    /* the folder finds it too */
    t = open_ok(path_of("gpt2"));
    EXPECT(t, "abc", 0, 0, 5);
    nl_tokenizer_close(t);
}

/* ---- SentencePiece tokenizer.model and llama2.c tokenizer.bin, built here ---------------- */
typedef struct { unsigned char b[4096]; size_t n; } pbuf;

static void pb_varint(pbuf *p, uint64_t v) {
    do {
        unsigned char c = v & 0x7F;
        v >>= 7;
        p->b[p->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void pb_key(pbuf *p, int field, int wire) { pb_varint(p, (uint64_t)(field << 3 | wire)); }
static void pb_bytes(pbuf *p, int field, const void *s, size_t n) {
    pb_key(p, field, 2);
    pb_varint(p, n);
    memcpy(p->b + p->n, s, n);
    p->n += n;
}
static void pb_float(pbuf *p, int field, float f) {
    pb_key(p, field, 5);
    memcpy(p->b + p->n, &f, 4);
    p->n += 4;
}
static void pb_int(pbuf *p, int field, uint64_t v) {
    pb_key(p, field, 0);
    pb_varint(p, v);
}

static const struct { const char *piece; float score; int type; } MINI[] = {
    {"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"\xe2\x96\x81", -1, 1}, {"a", -2, 1},
    {"b", -3, 1}, {"ab", -4, 1}, {"\xe2\x96\x81" "a", -5, 1}, {"\xe2\x96\x81" "ab", -6, 1},
};
#define N_MINI (sizeof MINI / sizeof *MINI)

static size_t mini_model(unsigned char *out, int model_type) {
    pbuf m = {.n = 0};
    for (size_t i = 0; i < N_MINI; i++) {
        pbuf p = {.n = 0};
        pb_bytes(&p, 1, MINI[i].piece, strlen(MINI[i].piece));
        pb_float(&p, 2, MINI[i].score);
        if (MINI[i].type != 1) pb_int(&p, 3, (uint64_t)MINI[i].type);
        pb_bytes(&m, 1, p.b, p.n);
    }
    pbuf tr = {.n = 0};
    pb_int(&tr, 3, (uint64_t)model_type);
    pb_int(&tr, 4, N_MINI);
    pb_bytes(&m, 2, tr.b, tr.n);
    pbuf ns = {.n = 0};
    pb_bytes(&ns, 1, "identity", 8);
    pb_int(&ns, 3, 1);
    pb_int(&ns, 4, 0);
    pb_bytes(&m, 3, ns.b, ns.n);
    memcpy(out, m.b, m.n);
    return m.n;
}

static size_t mini_bin(unsigned char *out) {
    size_t n = 0;
    int32_t maxlen = 8;
    memcpy(out, &maxlen, 4);
    n = 4;
    for (size_t i = 0; i < N_MINI; i++) {
        char piece[16];
        const char *p = MINI[i].piece;
        if (i == 1) p = "\n<s>\n";
        else if (i == 2) p = "\n</s>\n";
        size_t k = 0;
        for (size_t j = 0; p[j];) { /* llama2.c writes ▁ as a space */
            if (!strncmp(p + j, "\xe2\x96\x81", 3)) { piece[k++] = ' '; j += 3; }
            else piece[k++] = p[j++];
        }
        int32_t len = (int32_t)k;
        memcpy(out + n, &MINI[i].score, 4);
        memcpy(out + n + 4, &len, 4);
        memcpy(out + n + 8, piece, k);
        n += 8 + k;
    }
    return n;
}

Test(tokenizer, sentencepiece_model_and_llama2c_bin) {
    unsigned char buf[4096];
    size_t n = mini_model(buf, 2);
    const char *model = write_bytes("mini.model", buf, n);
    n = mini_bin(buf);
    const char *bin = write_bytes("mini.bin", buf, n);
    const char *files[] = {model, bin};
    for (int k = 0; k < 2; k++) {
        nl_tokenizer *t = open_ok(files[k]);
        /* "▁ab▁ab": a+b (score -4) at both places, leftmost first, then ▁+ab (-6) */
        EXPECT(t, "ab ab", 0, 0, 8, 8);
        EXPECT(t, "ab ab", 1, 0, 1, 8, 8);
        EXPECT(t, "ba", 0, 0, 3, 5, 4);
        EXPECT(t, "c", 0, 0, 3, 0);
        EXPECT(t, "cc", 0, 0, 3, 0);   /* a run of unknown pieces is one <unk> */
        EXPECT(t, "<s>a", 0, 1, 1, 7); /* parse_special: the control piece, then "▁a" */
        EXPECT_NONE(t, "", 0, 0);
        cr_assert_eq(nl_tokenizer_bos(t), 1);
        cr_assert_eq(nl_tokenizer_eos(t), 2);
        int32_t ids[] = {1, 8, 8, 0};
        char *s = decode(t, ids, 4, 0);
        cr_assert_str_eq(s, "ab ab \xe2\x81\x87 "); /* <s> vanishes, <unk> is " ⁇ " as in SentencePiece */
        free(s);
        expect_roundtrip(t, "ab ab");
        nl_tokenizer_close(t);
    }
}

/* The message must name the file (its base name) and contain needle. */
static void expect_open_error_in(const char *path, const char *file, nl_status want, const char *needle) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *t = (void *)1;
    nl_status st = nl_tokenizer_open(&ctx, path, &t);
    cr_assert_eq(st, want, "'%s': status %d, message '%s'", path, st, ctx.msg);
    cr_assert_null(t);
    const char *base = file ? file : strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    cr_assert(strstr(ctx.msg, base), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, needle), "message '%s' lacks '%s'", ctx.msg, needle);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

static void expect_open_error(const char *path, nl_status want, const char *needle) {
    expect_open_error_in(path, NULL, want, needle);
}

/* Damaged vocabularies (the mutants of issue 17): an error naming the file where the tokenizer
 * would encode wrongly, a warning (nl_tokenizer_warning) where it works as the reference does. */
Test(tokenizer, damaged_vocabularies_are_refused_or_warned) {
    /* tokenizer.bin: a NaN or infinite score (token 0's score is at byte 4) */
    unsigned char buf[4096];
    size_t n = mini_bin(buf);
    const float bad[2] = {NAN, -INFINITY};
    const char *want[2] = {"token 0 has score nan, not a finite number", "token 0 has score -inf"};
    for (int k = 0; k < 2; k++) {
        unsigned char b[4096];
        memcpy(b, buf, n);
        memcpy(b + 4, &bad[k], 4);
        expect_open_error(write_bytes(k ? "inf.bin" : "nan.bin", b, n), NL_EFORMAT, want[k]);
    }
    /* tokenizer.json and vocab.json: two strings with one id */
    expect_open_error(write_file("dup.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 1}, \"merges\": []}}"),
                      NL_EFORMAT, "token id 1 is given to two strings, 'b' and 'ab'");
    write_file("gpt2dup/vocab.json", "{\"a\": 0, \"b\": 0}");
    write_file("gpt2dup/merges.txt", "#version: 0.2\n");
    expect_open_error_in(path_of("gpt2dup/vocab.json"), "vocab.json", NL_EFORMAT, "token id 0 is given to two strings");
    /* byte_fallback with a byte piece deleted */
    static char j[16384];
    size_t k = (size_t)snprintf(j, sizeof j, "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0");
    for (int b = 0; b < 256; b++)
        if (b != 0x41) k += (size_t)snprintf(j + k, sizeof j - k, ", \"<0x%02X>\": %d", b, 1 + b);
    snprintf(j + k, sizeof j - k, "}, \"merges\": []}}");
    expect_open_error(write_file("nobyte.json", j), NL_EFORMAT, "byte_fallback is on but the byte piece <0x41> is missing");
    /* holes in the ids: usable, with a warning */
    nl_tokenizer *t = open_ok(write_file("holes.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 5}, \"merges\": [\"a b\"]}}"));
    cr_assert(strstr(nl_tokenizer_warning(t), "holes.json': 3 of the ids 0..5 name no token (the first is 2)"), "%s", nl_tokenizer_warning(t));
    EXPECT(t, "ab", 0, 0, 5);
    nl_tokenizer_close(t);
    /* a byte-level vocabulary without every byte: usable (those bytes vanish, as in tokenizers), with a warning */
    t = open_ok(bytelevel_json("blw.json", "[\"a b\", \"ab c\", \"\xc4\xa0 a\"]", 0, "null"));
    cr_assert(strstr(nl_tokenizer_warning(t), "blw.json': the byte-level vocabulary has no piece for 251 of the 256 bytes (the first is 0x00)"),
              "%s", nl_tokenizer_warning(t));
    nl_tokenizer_close(t);
    /* complete vocabularies: no warning */
    t = open_ok(spm_json("spmw.json", 1, "null", LLAMA_NORM, ""));
    cr_assert_str_eq(nl_tokenizer_warning(t), "");
    nl_tokenizer_close(t);
}

Test(tokenizer, bad_input_errors_name_the_file) {
    unsigned char buf[4096];
    size_t n = mini_model(buf, 2);
    expect_open_error(write_bytes("trunc.model", buf, n / 2), NL_EFORMAT, "truncated");
    expect_open_error(write_bytes("trunc1.model", buf, 7), NL_EFORMAT, "truncated");
    n = mini_model(buf, 1);
    expect_open_error(write_bytes("unigram.model", buf, n), NL_EUNSUPPORTED, "unsupported SentencePiece model type 'unigram' (supported: bpe)");
    n = mini_bin(buf);
    expect_open_error(write_bytes("trunc.bin", buf, n - 3), NL_EFORMAT, "truncated llama2.c tokenizer");
    expect_open_error(write_file("nomodel.json", "{\"version\": \"1.0\", \"added_tokens\": []}"), NL_EFORMAT, "no \"model\"");
    expect_open_error(write_file("notjson.json", "{\"model\": "), NL_EFORMAT, "not JSON");
    expect_open_error(write_file("wp.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}"), NL_EUNSUPPORTED,
                      "unsupported model type 'WordPiece' (supported: BPE)");
    expect_open_error(write_file("uni.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}"), NL_EUNSUPPORTED,
                      "unsupported model type 'Unigram' (supported: BPE)");
    const char *bpe = "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}";
    char j[1024];
    snprintf(j, sizeof j, "{\"pre_tokenizer\": {\"type\": \"CharDelimiterSplit\", \"delimiter\": \" \"}, %s}", bpe);
    expect_open_error(write_file("pre.json", j), NL_EUNSUPPORTED, "unsupported pre_tokenizer type 'CharDelimiterSplit' (supported: Sequence, Split, ByteLevel");
    snprintf(j, sizeof j, "{\"normalizer\": {\"type\": \"Lowercase\"}, %s}", bpe);
    expect_open_error(write_file("norm.json", j), NL_EUNSUPPORTED, "unsupported normalizer type 'Lowercase' (supported: Sequence, Prepend");
    snprintf(j, sizeof j, "{\"decoder\": {\"type\": \"CTC\"}, %s}", bpe);
    expect_open_error(write_file("dec.json", j), NL_EUNSUPPORTED, "unsupported decoder type 'CTC' (supported: Sequence, ByteLevel");
    snprintf(j, sizeof j, "{\"post_processor\": {\"type\": \"Nope\"}, %s}", bpe);
    expect_open_error(write_file("post.json", j), NL_EUNSUPPORTED, "unsupported post_processor type 'Nope' (supported: TemplateProcessing");
    snprintf(j, sizeof j, "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, \"behavior\": \"Isolated\"}, %s}", bpe);
    expect_open_error(write_file("regex.json", j), NL_EFORMAT, "bad pattern '(a'");
    expect_open_error(write_file("merge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"ab\": 2}, \"merges\": [\"a b\"]}}"),
                      NL_EFORMAT, "merge 0 ('a' 'b') names the token 'b', which is not in the vocabulary");
    expect_open_error(write_file("merge2.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}"),
                      NL_EFORMAT, "names the token 'ab', which is not in the vocabulary");
    expect_open_error(write_file("merge3.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}"),
                      NL_EFORMAT, "merge 0 'a' is not two tokens");
    expect_open_error(write_file("gpt2bad/vocab.json", "{\"a\": 0, \"b\": 1}"), NL_EIO, "merges.txt");
    write_file("gpt2bad2/vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    write_file("gpt2bad2/merges.txt", "#version: 0.2\na c\n");
    expect_open_error_in(path_of("gpt2bad2/vocab.json"), "merges.txt", NL_EFORMAT, "merges.txt': merge 0 ('a' 'c') names the token 'c'");
    mkdir(path_of("empty"), 0700);
    expect_open_error(path_of("empty"), NL_EIO, "no tokenizer in");
    expect_open_error(path_of("missing.json"), NL_EIO, "cannot");

    /* decoding an id outside the vocabulary */
    nl_tokenizer *t = open_ok(write_file("ok.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}"));
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    int32_t ids[] = {2, 3};
    char *s;
    size_t len;
    cr_assert_eq(nl_tokenizer_decode(&ctx, t, ids, 2, 0, &s, &len), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "token id 3 is outside the vocabulary"), "%s", ctx.msg);
    EXPECT(t, "ab", 0, 0, 2);
    nl_tokenizer_close(t);
}

/* ---- invalid UTF-8 ------------------------------------------------------------------------- */
Test(tokenizer, invalid_utf8_becomes_replacement_characters) {
    static const struct { const char *in, *out; } cases[] = {
        {"a\xff" "b", "a\xef\xbf\xbd" "b"},
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},                            /* truncated 4-byte: one */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                    /* overlong: two */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},    /* encoded surrogate: three */
        {"\xe2\x82" "x", "\xef\xbf\xbd" "x"},
        {"ok \xc3\xa9", "ok \xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n;
        char *r = nl_utf8_repair(cases[i].in, strlen(cases[i].in), &n);
        cr_assert_str_eq(r, cases[i].out, "case %zu", i);
        cr_assert_eq(n, strlen(cases[i].out));
        free(r);
    }
    /* encode sees the repaired text */
    nl_tokenizer *t = open_ok(spm_json("spm6.json", 1, "null", LLAMA_NORM, ""));
    EXPECT(t, "h\xff", 0, 0, 262, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD);
    /* an encoded surrogate is three invalid bytes, unless the text is WTF-8 with lone surrogates:
     * then one unknown character whose byte fallback is U+FFFD's bytes (as transformers.js) */
    EXPECT(t, "h\xed\xa0\x80", 0, 0, 262, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_encode_opts o = {.lone_surrogates = 1};
    int32_t *ids, want[] = {262, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD, 263};
    int n;
    cr_assert_eq(nl_tokenizer_encode(&ctx, t, "h\xed\xa0\x80 hi", 7, &o, &ids, &n), NL_OK);
    cr_assert(n == 5 && !memcmp(ids, want, sizeof want));
    free(ids);
    nl_tokenizer_close(t);
}

/* ---- Unicode normalization (expected strings from Python's unicodedata) -------------------- */
Test(tokenizer, unicode_normalization_forms) {
    static const struct { int form; const char *in, *out; } cases[] = {
        {NL_UC_NFC, "e\xcc\x81", "\xc3\xa9"},                                  /* e + acute → é */
        {NL_UC_NFD, "\xc3\xa9", "e\xcc\x81"},
        {NL_UC_NFC, "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81"},    /* jamo → 각 */
        {NL_UC_NFD, "\xea\xb0\x81", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"},
        {NL_UC_NFC, "a\xcc\xa3\xcc\x87", "\xe1\xba\xa1\xcc\x87"},               /* dot below sorts first, composes */
        {NL_UC_NFC, "a\xcc\x87\xcc\xa3", "\xe1\xba\xa1\xcc\x87"},
        {NL_UC_NFC, "\xe2\x84\xab", "\xc3\x85"},                               /* Ångström sign (singleton) */
        {NL_UC_NFKC, "\xef\xac\x81", "fi"},                                    /* ligature */
        {NL_UC_NFKC, "\xef\xbc\xa1\xc2\xb2", "A2"},                            /* full-width A, superscript 2 */
        {NL_UC_NFC, "\xef\xac\x81", "\xef\xac\x81"},
        {NL_UC_NFKD, "\xe1\xba\x9b\xcc\xa3", "s\xcc\xa3\xcc\x87"},              /* ẛ̣ (UAX 15 example) */
        {NL_UC_NFC, "\xe0\xa4\x95\xe0\xa4\xbc", "\xe0\xa4\x95\xe0\xa4\xbc"},    /* composition exclusion stays */
        {NL_UC_NFC, "plain ascii", "plain ascii"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *o;
        size_t n;
        cr_assert_eq(nl_uc_normalize(cases[i].form, cases[i].in, strlen(cases[i].in), &o, &n), 0);
        cr_assert_eq(n, strlen(cases[i].out), "case %zu: got '%s'", i, o);
        cr_assert_str_eq(o, cases[i].out, "case %zu", i);
        free(o);
    }
}

/* ---- model folders ---------------------------------------------------------------------------- */
Test(tokenizer, tokenizer_for_model_finds_the_folder_files) {
    write_file("model/config.json", "{}");
    write_file("model/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *t;
    cr_assert_eq(nl_tokenizer_for_model(&ctx, path_of("model"), &t), NL_OK, "%s", ctx.msg);
    cr_assert_not_null(t);
    EXPECT(t, "ab", 0, 0, 2);
    nl_tokenizer_close(t);
    write_file("bare/config.json", "{}");
    cr_assert_eq(nl_tokenizer_for_model(&ctx, path_of("bare"), &t), NL_OK);
    cr_assert_null(t);
    /* a llama2.c checkpoint with tokenizer.bin beside it */
    unsigned char buf[4096];
    size_t n = mini_bin(buf);
    write_bytes("l2c/tokenizer.bin", buf, n);
    write_file("l2c/model.bin", "x");
    cr_assert_eq(nl_tokenizer_for_model(&ctx, path_of("l2c/model.bin"), &t), NL_OK, "%s", ctx.msg);
    cr_assert_not_null(t);
    EXPECT(t, "ab ab", 0, 0, 8, 8);
    nl_tokenizer_close(t);
    nl_tokenizer_close(NULL);
}

/* ---- threads share one tokenizer ------------------------------------------------------------ */
typedef struct { const nl_tokenizer *t; int ok; } thread_arg;

static void *encode_many(void *p) {
    thread_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 300; i++) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        int32_t *ids;
        int n;
        char text[64];
        snprintf(text, sizeof text, "hi hi h\xc3\xa9 %d hi", i);
        if (nl_tokenizer_encode(&ctx, a->t, text, strlen(text), NULL, &ids, &n) != NL_OK || n < 6 || ids[0] != 263 ||
            ids[1] != 263)
            a->ok = 0;
        else free(ids);
    }
    return NULL;
}

Test(tokenizer, encode_from_many_threads) {
    nl_tokenizer *t = open_ok(spm_json("spm7.json", 1, "null", LLAMA_NORM, ""));
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].t = t;
        pthread_create(&th[i], NULL, encode_many, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert(args[i].ok, "thread %d", i);
    }
    nl_tokenizer_close(t);
}

/* ---- the real Llama 2 tokenizer (../shared), ids from python3-sentencepiece 0.1.97 ---------- */
Test(tokenizer, llama2_model_and_bin_match_sentencepiece) {
    const char *model = NL_SHARED "/tokenizers/llama2/tokenizer.model", *bin = NL_SHARED "/tokenizers/llama2/tokenizer.bin";
    if (!nl_path_exists(model) || !nl_path_exists(bin)) cr_skip_test("../shared is absent: skipping the Llama 2 tokenizer check");
    const char *files[] = {model, bin};
    for (int k = 0; k < 2; k++) {
        nl_tokenizer *t = open_ok(files[k]);
        cr_assert_eq(nl_tokenizer_vocab_size(t), 32000);
        EXPECT(t, "Hello, world!", 0, 0, 15043, 29892, 3186, 29991);
        EXPECT(t, "Hello, world!", 1, 0, 1, 15043, 29892, 3186, 29991);
        EXPECT(t, " leading and  double  spaces ", 0, 0, 29871, 8236, 322, 29871, 3765, 29871, 8162, 29871);
        EXPECT(t, "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa4\x96", 0, 0, 1055, 30085, 345, 274,
               28059, 29871, 30325, 30346, 30968, 29871, 243, 162, 167, 153);
        EXPECT(t, "tab\there\nnewline", 0, 0, 4434, 12, 4150, 13, 1482, 1220);
        EXPECT(t, "12345 678", 0, 0, 29871, 29896, 29906, 29941, 29946, 29945, 29871, 29953, 29955, 29947);
        EXPECT(t, "<s> not special", 0, 0, 529, 29879, 29958, 451, 4266);
        EXPECT(t, "x\xcc\x81\xef\xac\x81", 0, 0, 921, 30103, 31017);
        EXPECT_NONE(t, "", 0, 0);
        expect_roundtrip(t, "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa4\x96");
        expect_roundtrip(t, " leading and  double  spaces ");
        nl_tokenizer_close(t);
    }
}

/* ---- the trainer's building blocks: byte-level table, splitter, tokenizer.json writer ---------- */
Test(tokenizer, bytelevel_table_is_a_bijection) {
    int seen[324] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = nl_bytelevel_char(b);
        cr_assert_lt(cp, 324u, "byte %d -> U+%04X", b, cp);
        cr_assert_eq(seen[cp]++, 0, "U+%04X stands for two bytes", cp);
        cr_assert_eq(nl_bytelevel_byte(cp), b);
    }
    cr_assert_eq(nl_bytelevel_char(' '), 0x120u); /* 'Ġ' */
    cr_assert_eq(nl_bytelevel_char('\n'), 0x10Au); /* 'Ċ' */
    cr_assert_eq(nl_bytelevel_char('a'), (uint32_t)'a');
    cr_assert_eq(nl_bytelevel_byte(0x144), -1);
    cr_assert_eq(nl_bytelevel_byte(0x7F), -1); /* DEL is not printable: it is U+0121 */
}

Test(tokenizer, splitter_cuts_matches_and_gaps) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_splitter *sp;
    cr_assert_eq(nl_splitter_create(&ctx, "\\s?\\p{L}+|\\p{N}{1,3}", &sp), NL_OK, "%s", ctx.msg);
    cr_assert_str_eq(nl_splitter_pattern(sp), "\\s?\\p{L}+|\\p{N}{1,3}");
    nl_split_scratch *s = nl_split_scratch_create();
    const char *text = "héllo world12345!!";
    const nl_text_piece *pc;
    size_t n;
    cr_assert_eq(nl_splitter_split(sp, s, text, strlen(text), &pc, &n), NL_OK);
    const char *want[] = {"héllo", " world", "123", "45", "!!"};
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(pc[i].n, strlen(want[i]), "piece %zu", i);
        cr_assert(!memcmp(pc[i].p, want[i], pc[i].n), "piece %zu: '%.*s'", i, (int)pc[i].n, pc[i].p);
    }
    cr_assert_eq(nl_splitter_split(sp, s, "", 0, &pc, &n), NL_OK);
    cr_assert_eq(n, 0);
    nl_split_scratch_destroy(s);
    nl_splitter_destroy(sp);
    nl_splitter *bad = (nl_splitter *)1;
    cr_assert_eq(nl_splitter_create(&ctx, "(unclosed", &bad), NL_EINVAL);
    cr_assert_null(bad);
    cr_assert(strstr(ctx.msg, "'(unclosed'"), "%s", ctx.msg);
}

/* specials "<s>" and "<q\"x>", the 256 bytes (ids 2 … 257), merges a+b, ab+c, Ġ+ab */
typedef struct { const char *piece[261]; size_t len[261]; char bytes[256]; int32_t l[3], r[3]; } small_bpe;

static void small_bpe_init(small_bpe *v) {
    v->piece[0] = "<s>";
    v->piece[1] = "<q\"x>";
    for (int b = 0; b < 256; b++) {
        v->bytes[b] = (char)b;
        v->piece[2 + b] = &v->bytes[b];
        v->len[2 + b] = 1;
    }
    v->piece[258] = "ab";
    v->piece[259] = "abc";
    v->piece[260] = " ab";
    for (int i = 0; i < 2; i++) v->len[i] = strlen(v->piece[i]);
    for (int i = 258; i < 261; i++) v->len[i] = strlen(v->piece[i]);
    int32_t l[3] = {2 + 'a', 258, 2 + ' '}, r[3] = {2 + 'b', 2 + 'c', 258};
    memcpy(v->l, l, sizeof l);
    memcpy(v->r, r, sizeof r);
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot read %s", path);
    static char buf[1 << 16];
    *n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *c = malloc(*n + 1);
    memcpy(c, buf, *n);
    c[*n] = 0;
    return c;
}

Test(tokenizer, json_writer_output_opens_and_encodes) {
    small_bpe v;
    small_bpe_init(&v);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer_json_opts o = {.split_pattern = " ?\\p{L}+| ?[^\\s\\p{L}]+|\\s+", .n_special = 2, .bos_id = 0};
    const char *p1 = path_of("written.json");
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p1, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_OK, "%s", ctx.msg);
    nl_tokenizer *t = open_ok(p1);
    cr_assert_eq(nl_tokenizer_vocab_size(t), 261);
    cr_assert_eq(nl_tokenizer_bos(t), 0);
    EXPECT(t, "abc ab!", 1, 0, 0, 259, 260, 2 + '!'); /* <s> first, then the merges */
    EXPECT(t, "abc ab!", 0, 0, 259, 260, 2 + '!');
    EXPECT(t, "<q\"x>", 0, 1, 1);                     /* the escaped special token is found again */
    expect_roundtrip(t, "abc ab! \xe2\x82\xac\n\"\\");
    size_t n;
    const char *s = nl_tokenizer_token(t, 2 + ' ', &n);
    cr_assert(n == 1 && s[0] == ' ');
    cr_assert(nl_tokenizer_is_special(t, 1));
    nl_tokenizer_close(t);
    /* the same input twice gives the same bytes */
    const char *p2 = path_of("written2.json");
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p2, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_OK, "%s", ctx.msg);
    size_t n1, n2;
    char *a = slurp(p1, &n1), *b = slurp(p2, &n2);
    cr_assert(n1 == n2 && !memcmp(a, b, n1));
    cr_assert(strstr(a, "\"<q\\\"x>\": 1,"), "special tokens are written as is, escaped");
    cr_assert(strstr(a, "\"\xc4\xa0 ab\""), "merge Ġ ab");
    free(a);
    free(b);
    /* no post-processor */
    o.bos_id = -1;
    const char *p3 = path_of("written3.json");
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p3, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_OK, "%s", ctx.msg);
    t = open_ok(p3);
    EXPECT(t, "abc", 1, 0, 259);
    nl_tokenizer_close(t);
}

Test(tokenizer, json_writer_refuses_bad_input_and_writes_nothing) {
    small_bpe v;
    small_bpe_init(&v);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer_json_opts o = {.split_pattern = "\\s+", .n_special = 2, .bos_id = 0};
    const char *p = path_of("refused.json");
    v.r[1] = 261;
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "merge 1") && strstr(ctx.msg, "refused.json"), "%s", ctx.msg);
    v.r[1] = 2 + 'c';
    o.bos_id = 2;
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "bos id 2"), "%s", ctx.msg);
    o.bos_id = 0;
    v.piece[1] = "\xff";
    v.len[1] = 1;
    cr_assert_eq(nl_tokenizer_json_write(&ctx, p, 261, v.piece, v.len, 3, v.l, v.r, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "not valid UTF-8"), "%s", ctx.msg);
    struct stat sb;
    cr_assert_neq(stat(p, &sb), 0, "a refused write left a file");
}
