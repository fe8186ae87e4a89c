/* tokenizer_json.c — Hugging Face tokenizer.json (model type BPE) and GPT-2 vocab.json +
 * merges.txt (encoder.json + vocab.bpe) loaders, parsed with jansson.
 *
 * Supported components (anything else is refused with a message listing these):
 *   model          BPE (vocab, merges as "a b" strings or ["a", "b"] pairs, unk_token, fuse_unk,
 *                  byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix;
 *                  dropout must be null or 0)
 *   normalizer     Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Strip, StripAccents, Precompiled
 *   pre_tokenizer  Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit,
 *                  Punctuation, BertPreTokenizer
 *   post_processor TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence
 *   decoder        Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder
 * BOS/EOS come from tokenizer_config.json beside the file when present, else from the template.
 * Checked by tests/test_tokenizer.c and tests/tokenizer_conformance.sh. */
#include "tokenizer/jsonscan.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>

typedef struct {
    nl_ctx *ctx;
    const char *path;
    nl_status st;
} loadctx;

static int fail(loadctx *L, nl_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(loadctx *L, nl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->ctx->msg, sizeof L->ctx->msg, fmt, ap);
    va_end(ap);
    L->st = st;
    return -1;
}
#define FAIL(L, ST, ...) fail((L), (ST), __VA_ARGS__)

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jbool(json_t *o, const char *key, int def) {
    json_t *v = json_object_get(o, key);
    if (json_is_boolean(v)) return json_is_true(v);
    return def;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* byte-level vocabularies: the GPT-2 code points back to bytes (strings with other characters
 * stay as they are), into o (n + 1 bytes of room) */
static char *to_raw_into(const char *s, size_t n, char *o, size_t *out_n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) { /* ASCII printable bytes stand for themselves */
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || c <= 0x20 || c == 0x7F) goto slow;
        o[k++] = (char)c;
    }
    o[k] = 0;
    *out_n = k;
    return o;
slow:
    k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)nl_utf8_next((const unsigned char *)s + i, n - i, &cp);
        int b = nl_bytelevel_byte(cp);
        if (b < 0) { memcpy(o, s, n); o[n] = 0; *out_n = n; return o; }
        o[k++] = (char)b;
    }
    o[k] = 0;
    *out_n = k;
    return o;
}

static char *to_raw(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n + 1);
    return o ? to_raw_into(s, n, o, out_n) : NULL;
}

/* Reads a whole file into *buf (malloc'd), *n bytes; 0, or an errno value. */
static int read_file(const char *path, char **buf, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno ? errno : EIO;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(sz > 0 ? (size_t)sz : 1);
    size_t got = b && sz > 0 ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    if (!b) return ENOMEM;
    if (sz > 0 && got != (size_t)sz) { free(b); return EIO; }
    *buf = b;
    *n = got;
    return 0;
}

/* Parses buf with jansson, except the values at the spans (in order, not overlapping), which
 * are cut down to their first and last byte, so their JSON type stays and they are left to the
 * scanner (jansson's allocations for hundreds of thousands of strings are the slow part of
 * loading). */
static json_t *parse_blanked(const char *buf, size_t n, const js_span *sp, int nsp, json_error_t *err) {
    char *copy = malloc(n ? n : 1);
    if (!copy) {
        snprintf(err->text, sizeof err->text, "out of memory");
        err->line = 0;
        return NULL;
    }
    size_t k = 0, pos = 0;
    for (int i = 0; i < nsp; i++) {
        if (sp[i].b < sp[i].a + 2 || sp[i].a < pos) continue;
        memcpy(copy + k, buf + pos, sp[i].a + 1 - pos);
        k += sp[i].a + 1 - pos;
        copy[k++] = buf[sp[i].b - 1];
        pos = sp[i].b;
    }
    memcpy(copy + k, buf + pos, n - pos);
    k += n - pos;
    json_t *j = json_loadb(copy, k, JSON_ALLOW_NUL, err);
    free(copy);
    return j;
}

/* Iterates the {"token": id, ...} object at span. */
typedef struct { js_scan s; tk_buf key; int started; } vocab_iter;

static void vocab_begin(vocab_iter *it, const char *buf, js_span sp) {
    memset(it, 0, sizeof *it);
    it->s.p = buf + sp.a;
    it->s.end = buf + sp.b;
}

/* 1 with the next entry, 0 at the end, -1 malformed (message set). */
static int vocab_next(loadctx *L, vocab_iter *it, int *id) {
    if (!it->started) {
        it->started = 1;
        if (nl_js_expect(&it->s, '{')) return FAIL(L, NL_EFORMAT, "'%s': \"vocab\" must be an object of token ids", L->path);
        if (nl_js_peek(&it->s) == '}') return 0;
    } else {
        int c = nl_js_peek(&it->s);
        if (c == '}') return 0;
        if (c != ',') return FAIL(L, NL_EFORMAT, "'%s': malformed \"vocab\" object", L->path);
        it->s.p++;
    }
    long long v;
    if (nl_js_string(&it->s, &it->key) || nl_js_expect(&it->s, ':'))
        return FAIL(L, NL_EFORMAT, "'%s': malformed \"vocab\" object", L->path);
    if (nl_js_int(&it->s, &v) || v < 0 || v >= (1 << 28))
        return FAIL(L, NL_EFORMAT, "'%s': vocab entry '%.100s' has no valid id", L->path, it->key.p ? it->key.p : "");
    if (nl_tk_buf_reserve(&it->key, 0)) return FAIL(L, NL_ENOMEM, "out of memory");
    it->key.p[it->key.n] = 0;
    *id = (int)v;
    return 1;
}

static int get_pattern(loadctx *L, const char *what, json_t *pat, const char **s, size_t *n, int *is_regex) {
    json_t *v;
    if (json_is_object(pat) && json_is_string(v = json_object_get(pat, "String"))) *is_regex = 0;
    else if (json_is_object(pat) && json_is_string(v = json_object_get(pat, "Regex"))) *is_regex = 1;
    else return FAIL(L, NL_EFORMAT, "'%s': %s: \"pattern\" must be {\"String\": …} or {\"Regex\": …}", L->path, what);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

static int compile(loadctx *L, const char *what, tk_regex *re, const char *s, size_t n, int literal) {
    char err[256];
    if (nl_tk_regex_compile(re, s, n, literal, err, sizeof err))
        return FAIL(L, NL_EFORMAT, "'%s': %s: bad pattern '%.*s': %s", L->path, what, (int)(n > 200 ? 200 : n), s, err);
    return 0;
}

static int base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_n) {
    unsigned char *o = malloc(n / 4 * 3 + 4);
    if (!o) return -1;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+' || c == '-') v = 62;
        else if (c == '/' || c == '_') v = 63;
        else if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
        else { free(o); return -1; }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
        }
    }
    *out = o;
    *out_n = k;
    return 0;
}

/* ---- normalizers ------------------------------------------------------------------------------- */
static const char NORMALIZERS[] = "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Strip, StripAccents, Precompiled";

static int parse_norm(loadctx *L, json_t *j, tk_norm *nm) {
    memset(nm, 0, sizeof *nm);
    const char *type = json_is_object(j) ? jstr(j, "type") : NULL;
    if (!type) return FAIL(L, NL_EFORMAT, "'%s': normalizer without a \"type\"", L->path);
    if (!strcmp(type, "Sequence")) {
        nm->kind = NM_SEQUENCE;
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) return FAIL(L, NL_EFORMAT, "'%s': normalizer Sequence without \"normalizers\"", L->path);
        nm->items = calloc(json_array_size(a) + 1, sizeof *nm->items);
        if (!nm->items) return FAIL(L, NL_ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(a); i++) {
            nm->n_items++;
            if (parse_norm(L, json_array_get(a, i), &nm->items[i])) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        json_t *v = json_object_get(j, "prepend");
        if (!json_is_string(v)) return FAIL(L, NL_EFORMAT, "'%s': normalizer Prepend without \"prepend\"", L->path);
        nm->kind = NM_PREPEND;
        nm->sn = json_string_length(v);
        if (!(nm->s = dupn(json_string_value(v), nm->sn))) return FAIL(L, NL_ENOMEM, "out of memory");
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        const char *p;
        size_t pn;
        int is_re;
        if (get_pattern(L, "normalizer Replace", json_object_get(j, "pattern"), &p, &pn, &is_re)) return -1;
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) return FAIL(L, NL_EFORMAT, "'%s': normalizer Replace without \"content\"", L->path);
        nm->kind = NM_REPLACE;
        nm->repln = json_string_length(c);
        nm->sn = pn;
        if (!(nm->repl = dupn(json_string_value(c), nm->repln)) || !(nm->s = dupn(p, pn))) return FAIL(L, NL_ENOMEM, "out of memory");
        if (is_re && compile(L, "normalizer Replace", &nm->re, p, pn, 0)) return -1;
        return 0;
    }
    static const char *const forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int f = 0; f < 4; f++)
        if (!strcmp(type, forms[f])) {
            nm->kind = NM_UNICODE;
            nm->form = f; /* NL_UC_NFC, NL_UC_NFD, NL_UC_NFKC, NL_UC_NFKD in this order */
            return 0;
        }
    if (!strcmp(type, "Strip")) {
        nm->kind = NM_STRIP;
        nm->left = jbool(j, "strip_left", 1);
        nm->right = jbool(j, "strip_right", 1);
        return 0;
    }
    if (!strcmp(type, "StripAccents")) {
        nm->kind = NM_STRIP_ACCENTS;
        return compile(L, "normalizer StripAccents", &nm->re, "\\p{Mn}", 6, 0);
    }
    if (!strcmp(type, "Precompiled")) {
        nm->kind = NM_PRECOMPILED;
        json_t *v = json_object_get(j, "precompiled_charsmap");
        if (json_is_null(v) || !v) return 0;
        if (!json_is_string(v)) return FAIL(L, NL_EFORMAT, "'%s': normalizer Precompiled: bad \"precompiled_charsmap\"", L->path);
        unsigned char *blob;
        size_t bn;
        if (base64_decode(json_string_value(v), json_string_length(v), &blob, &bn))
            return FAIL(L, NL_EFORMAT, "'%s': normalizer Precompiled: \"precompiled_charsmap\" is not base64", L->path);
        int r = bn ? nl_tk_charsmap_init(&nm->cm, blob, bn) : 0;
        free(blob);
        if (r) return FAIL(L, NL_EFORMAT, "'%s': normalizer Precompiled: malformed charsmap", L->path);
        return 0;
    }
    return FAIL(L, NL_EUNSUPPORTED, "'%s': unsupported normalizer type '%s' (supported: %s)", L->path, type, NORMALIZERS);
}

/* ---- pre-tokenizers --------------------------------------------------------------------------------- */
static const char PRETOKENIZERS[] =
    "Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer";
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PUNCT_PATTERN[] = "[\\p{P}!-/:-@\\[-`{-~]";

static int parse_behavior(loadctx *L, json_t *j, int def, int *out) {
    const char *b = jstr(j, "behavior");
    if (!b) { *out = def; return 0; }
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) { *out = i; return 0; }
    return FAIL(L, NL_EUNSUPPORTED,
                "'%s': unsupported split behavior '%s' (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                "Contiguous)",
                L->path, b);
}

static int split_node(loadctx *L, tk_pretok *pt, const char *what, const char *pat, int literal, int behavior, int invert) {
    pt->kind = PT_SPLIT;
    pt->behavior = behavior;
    pt->invert = invert;
    pt->has_re = 1;
    return compile(L, what, &pt->re, pat, strlen(pat), literal);
}

static int parse_metaspace_common(loadctx *L, json_t *j, char *repl, int *repl_n, int *scheme) {
    const char *r = jstr(j, "replacement");
    if (!r) r = "\xE2\x96\x81";
    size_t n = strlen(r);
    if (n == 0 || n > 7) return FAIL(L, NL_EFORMAT, "'%s': Metaspace replacement must be one character", L->path);
    memcpy(repl, r, n);
    *repl_n = (int)n;
    const char *ps = jstr(j, "prepend_scheme");
    if (ps) {
        if (!strcmp(ps, "always")) *scheme = PS_ALWAYS;
        else if (!strcmp(ps, "first")) *scheme = PS_FIRST;
        else if (!strcmp(ps, "never")) *scheme = PS_NEVER;
        else return FAIL(L, NL_EUNSUPPORTED, "'%s': unsupported Metaspace prepend_scheme '%s' (supported: always, first, never)", L->path, ps);
    } else *scheme = jbool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
    return 0;
}

static int parse_pretok(loadctx *L, json_t *j, tk_pretok *pt) {
    memset(pt, 0, sizeof *pt);
    const char *type = json_is_object(j) ? jstr(j, "type") : NULL;
    if (!type) return FAIL(L, NL_EFORMAT, "'%s': pre_tokenizer without a \"type\"", L->path);
    if (!strcmp(type, "Sequence")) {
        pt->kind = PT_SEQUENCE;
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) return FAIL(L, NL_EFORMAT, "'%s': pre_tokenizer Sequence without \"pretokenizers\"", L->path);
        pt->items = calloc(json_array_size(a) + 1, sizeof *pt->items);
        if (!pt->items) return FAIL(L, NL_ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(a); i++) {
            pt->n_items++;
            if (parse_pretok(L, json_array_get(a, i), &pt->items[i])) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        const char *p;
        size_t pn;
        int is_re, beh;
        if (get_pattern(L, "pre_tokenizer Split", json_object_get(j, "pattern"), &p, &pn, &is_re)) return -1;
        if (parse_behavior(L, j, SB_ISOLATED, &beh)) return -1;
        pt->kind = PT_SPLIT;
        pt->behavior = beh;
        pt->invert = jbool(j, "invert", 0);
        pt->has_re = 1;
        return compile(L, "pre_tokenizer Split", &pt->re, p, pn, !is_re);
    }
    if (!strcmp(type, "ByteLevel")) {
        pt->kind = PT_BYTELEVEL;
        pt->add_prefix_space = jbool(j, "add_prefix_space", 1);
        if (jbool(j, "use_regex", 1)) {
            pt->has_re = 1;
            return compile(L, "pre_tokenizer ByteLevel", &pt->re, GPT2_PATTERN, strlen(GPT2_PATTERN), 0);
        }
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        pt->kind = PT_METASPACE;
        pt->split = jbool(j, "split", 1);
        return parse_metaspace_common(L, j, pt->repl, &pt->repl_n, &pt->prepend_scheme);
    }
    if (!strcmp(type, "Digits"))
        return split_node(L, pt, "pre_tokenizer Digits", jbool(j, "individual_digits", 0) ? "[0-9]" : "[0-9]+", 0, SB_ISOLATED, 0);
    if (!strcmp(type, "Whitespace"))
        return split_node(L, pt, "pre_tokenizer Whitespace", "[\\p{L}\\p{N}\\p{M}\\p{Pc}]+|[^\\p{L}\\p{N}\\p{M}\\p{Pc}\\s]+", 0,
                          SB_REMOVED, 1);
    if (!strcmp(type, "WhitespaceSplit")) return split_node(L, pt, "pre_tokenizer WhitespaceSplit", "\\s+", 0, SB_REMOVED, 0);
    if (!strcmp(type, "Punctuation")) {
        int beh;
        if (parse_behavior(L, j, SB_ISOLATED, &beh)) return -1;
        return split_node(L, pt, "pre_tokenizer Punctuation", PUNCT_PATTERN, 0, beh, 0);
    }
    if (!strcmp(type, "BertPreTokenizer")) {
        pt->kind = PT_SEQUENCE;
        pt->items = calloc(2, sizeof *pt->items);
        if (!pt->items) return FAIL(L, NL_ENOMEM, "out of memory");
        pt->n_items = 2;
        if (split_node(L, &pt->items[0], "pre_tokenizer BertPreTokenizer", "\\s+", 0, SB_REMOVED, 0)) return -1;
        return split_node(L, &pt->items[1], "pre_tokenizer BertPreTokenizer", PUNCT_PATTERN, 0, SB_ISOLATED, 0);
    }
    return FAIL(L, NL_EUNSUPPORTED, "'%s': unsupported pre_tokenizer type '%s' (supported: %s)", L->path, type, PRETOKENIZERS);
}

/* ---- decoders ------------------------------------------------------------------------------------------ */
static const char DECODERS[] = "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder";

static int parse_dec(loadctx *L, json_t *j, tk_dec *d, int *dummy_prefix) {
    memset(d, 0, sizeof *d);
    const char *type = json_is_object(j) ? jstr(j, "type") : NULL;
    if (!type) return FAIL(L, NL_EFORMAT, "'%s': decoder without a \"type\"", L->path);
    if (!strcmp(type, "Sequence")) {
        d->kind = DC_SEQUENCE;
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a)) return FAIL(L, NL_EFORMAT, "'%s': decoder Sequence without \"decoders\"", L->path);
        d->items = calloc(json_array_size(a) + 1, sizeof *d->items);
        if (!d->items) return FAIL(L, NL_ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(a); i++) {
            d->n_items++;
            if (parse_dec(L, json_array_get(a, i), &d->items[i], dummy_prefix)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) { d->kind = DC_BYTELEVEL; return 0; }
    if (!strcmp(type, "ByteFallback")) { d->kind = DC_BYTEFALLBACK; return 0; }
    if (!strcmp(type, "Fuse")) { d->kind = DC_FUSE; return 0; }
    if (!strcmp(type, "Replace")) {
        const char *p;
        size_t pn;
        int is_re;
        if (get_pattern(L, "decoder Replace", json_object_get(j, "pattern"), &p, &pn, &is_re)) return -1;
        if (is_re) return FAIL(L, NL_EUNSUPPORTED, "'%s': decoder Replace with a Regex pattern is not supported (String only)", L->path);
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) return FAIL(L, NL_EFORMAT, "'%s': decoder Replace without \"content\"", L->path);
        d->kind = DC_REPLACE;
        d->patn = pn;
        d->contentn = json_string_length(c);
        if (!(d->pat = dupn(p, pn)) || !(d->content = dupn(json_string_value(c), d->contentn)))
            return FAIL(L, NL_ENOMEM, "out of memory");
        return 0;
    }
    if (!strcmp(type, "Strip")) {
        json_t *c = json_object_get(j, "content");
        d->kind = DC_STRIP;
        const char *cs = json_is_string(c) ? json_string_value(c) : " ";
        d->contentn = strlen(cs);
        if (!(d->content = dupn(cs, d->contentn))) return FAIL(L, NL_ENOMEM, "out of memory");
        json_int_t a = json_integer_value(json_object_get(j, "start")), b = json_integer_value(json_object_get(j, "stop"));
        d->start = a < 0 ? 0 : a > 1000 ? 1000 : (int)a;
        d->stop = b < 0 ? 0 : b > 1000 ? 1000 : (int)b;
        if (d->start > 0 && d->contentn == 1 && d->content[0] == ' ') *dummy_prefix = 1;
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        int scheme;
        d->kind = DC_METASPACE;
        if (parse_metaspace_common(L, j, d->repl, &d->repl_n, &scheme)) return -1;
        d->prepend = scheme != PS_NEVER;
        if (d->prepend) *dummy_prefix = 1;
        return 0;
    }
    if (!strcmp(type, "BPEDecoder")) {
        const char *sfx = jstr(j, "suffix");
        if (!sfx) sfx = "</w>";
        d->kind = DC_BPE;
        d->patn = strlen(sfx);
        if (!(d->pat = dupn(sfx, d->patn))) return FAIL(L, NL_ENOMEM, "out of memory");
        return 0;
    }
    return FAIL(L, NL_EUNSUPPORTED, "'%s': unsupported decoder type '%s' (supported: %s)", L->path, type, DECODERS);
}

/* ---- post-processors ----------------------------------------------------------------------------------- */
static const char POSTPROCESSORS[] = "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence";

typedef struct { int32_t *p; int n; int has; } tmpl_t;

static int tmpl_push(tmpl_t *t, int32_t v) {
    int32_t *np = realloc(t->p, (size_t)(t->n + 1) * sizeof *np);
    if (!np) return -1;
    t->p = np;
    t->p[t->n++] = v;
    return 0;
}

/* Composes: the result of applying cur then next (next's -1 stands for cur's whole output). */
static int tmpl_compose(tmpl_t *cur, const tmpl_t *next) {
    if (!next->has) return 0;
    if (!cur->has) {
        cur->has = 1;
        for (int i = 0; i < next->n; i++)
            if (tmpl_push(cur, next->p[i])) return -1;
        return 0;
    }
    tmpl_t r = {0};
    r.has = 1;
    for (int i = 0; i < next->n; i++) {
        if (next->p[i] >= 0) { if (tmpl_push(&r, next->p[i])) return -1; continue; }
        for (int k = 0; k < cur->n; k++)
            if (tmpl_push(&r, cur->p[k])) return -1;
    }
    free(cur->p);
    *cur = r;
    return 0;
}

static int token_id(const nl_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].n == n && !memcmp(t->added[i].content, s, n)) return t->added[i].id;
    return nl_tk_strmap_get(&t->vmap, s, n);
}

static int parse_post(loadctx *L, nl_tokenizer *t, json_t *j, tmpl_t *out) {
    const char *type = json_is_object(j) ? jstr(j, "type") : NULL;
    if (!type) return FAIL(L, NL_EFORMAT, "'%s': post_processor without a \"type\"", L->path);
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a)) return FAIL(L, NL_EFORMAT, "'%s': post_processor Sequence without \"processors\"", L->path);
        for (size_t i = 0; i < json_array_size(a); i++) {
            tmpl_t sub = {0};
            int r = parse_post(L, t, json_array_get(a, i), &sub);
            if (!r && tmpl_compose(out, &sub)) r = FAIL(L, NL_ENOMEM, "out of memory");
            free(sub.p);
            if (r) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        json_t *cls = json_object_get(j, "cls"), *sep = json_object_get(j, "sep");
        json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
        if (!json_is_integer(ci) || !json_is_integer(si))
            return FAIL(L, NL_EFORMAT, "'%s': post_processor %s needs \"cls\" and \"sep\" [token, id] pairs", L->path, type);
        out->has = 1;
        if (tmpl_push(out, (int32_t)json_integer_value(ci)) || tmpl_push(out, -1) || tmpl_push(out, (int32_t)json_integer_value(si)))
            return FAIL(L, NL_ENOMEM, "out of memory");
        return 0;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
        if (!json_is_array(single)) return FAIL(L, NL_EFORMAT, "'%s': post_processor TemplateProcessing without \"single\"", L->path);
        out->has = 1;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *it = json_array_get(single, i), *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
            if (sq) {
                const char *sid = jstr(sq, "id");
                if (sid && strcmp(sid, "A") != 0)
                    return FAIL(L, NL_EFORMAT, "'%s': TemplateProcessing \"single\" names sequence '%s' (only A exists)", L->path, sid);
                if (tmpl_push(out, -1)) return FAIL(L, NL_ENOMEM, "out of memory");
                continue;
            }
            const char *name = sp ? jstr(sp, "id") : NULL;
            if (!name) return FAIL(L, NL_EFORMAT, "'%s': TemplateProcessing item %zu is neither SpecialToken nor Sequence", L->path, i);
            json_t *st = json_object_get(specials, name), *ids = json_object_get(st, "ids");
            if (json_is_array(ids) && json_array_size(ids) > 0) {
                for (size_t k = 0; k < json_array_size(ids); k++)
                    if (tmpl_push(out, (int32_t)json_integer_value(json_array_get(ids, k)))) return FAIL(L, NL_ENOMEM, "out of memory");
            } else {
                int id = token_id(t, name);
                if (id < 0) return FAIL(L, NL_EFORMAT, "'%s': TemplateProcessing names unknown special token '%s'", L->path, name);
                if (tmpl_push(out, id)) return FAIL(L, NL_ENOMEM, "out of memory");
            }
        }
        for (int i = 0; i < out->n; i++)
            if (out->p[i] >= t->v.n || (out->p[i] >= 0 && t->v.off[out->p[i]] == UINT32_MAX))
                return FAIL(L, NL_EFORMAT, "'%s': TemplateProcessing uses id %d, outside the vocabulary", L->path, (int)out->p[i]);
        return 0;
    }
    return FAIL(L, NL_EUNSUPPORTED, "'%s': unsupported post_processor type '%s' (supported: %s)", L->path, type, POSTPROCESSORS);
}

/* ---- BOS / EOS ----------------------------------------------------------------------------------------- */
static const char *config_token(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return jstr(v, "content");
    return NULL;
}

static void find_bos_eos(nl_tokenizer *t) {
    char *cfgp = NULL;
    const char *slash = strrchr(t->path, '/');
    size_t dn = slash ? (size_t)(slash - t->path + 1) : 0;
    if ((cfgp = malloc(dn + 32))) {
        memcpy(cfgp, t->path, dn);
        strcpy(cfgp + dn, "tokenizer_config.json");
        json_t *cfg = json_load_file(cfgp, 0, NULL);
        free(cfgp);
        if (cfg) {
            const char *b = config_token(cfg, "bos_token"), *e = config_token(cfg, "eos_token");
            if (b) t->bos_id = token_id(t, b);
            if (e) t->eos_id = token_id(t, e);
            json_decref(cfg);
            if (t->bos_id >= 0 || t->eos_id >= 0) return;
        }
    }
    if (t->tmpl && t->n_tmpl > 1 && t->tmpl[0] >= 0) t->bos_id = t->tmpl[0];
    if (t->tmpl && t->n_tmpl > 1 && t->tmpl[t->n_tmpl - 1] >= 0) t->eos_id = t->tmpl[t->n_tmpl - 1];
    static const char *const bos[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|bos|>"};
    static const char *const eos[] = {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", "<|im_end|>", "<|eos|>"};
    for (size_t i = 0; t->bos_id < 0 && i < sizeof bos / sizeof *bos; i++) t->bos_id = token_id(t, bos[i]);
    for (size_t i = 0; t->eos_id < 0 && i < sizeof eos / sizeof *eos; i++) t->eos_id = token_id(t, eos[i]);
}

/* ---- the model ------------------------------------------------------------------------------------------- */
/* Stores one model-vocabulary string (raw bytes for byte-level tokenizers). */
static int set_vocab_string(loadctx *L, nl_tokenizer *t, int id, const char *s, size_t n) {
    if (t->byte_level) {
        char stack[256], *r = n < sizeof stack ? stack : malloc(n + 1);
        size_t rn;
        if (!r) return FAIL(L, NL_ENOMEM, "out of memory");
        to_raw_into(s, n, r, &rn);
        int rc = nl_tk_vocab_set(&t->v, id, r, rn);
        if (r != stack) free(r);
        if (rc) return FAIL(L, NL_ENOMEM, "out of memory");
        return 0;
    }
    if (nl_tk_vocab_set(&t->v, id, s, n)) return FAIL(L, NL_ENOMEM, "out of memory");
    return 0;
}

static int lookup_merge_part(loadctx *L, nl_tokenizer *t, size_t rank, const char *s, size_t n, const char *a, size_t an,
                             const char *b, size_t bn) {
    int id;
    if (t->byte_level) {
        char stack[256], *r = n < sizeof stack ? stack : malloc(n + 1);
        size_t rn;
        if (!r) return FAIL(L, NL_ENOMEM, "out of memory");
        to_raw_into(s, n, r, &rn);
        id = nl_tk_strmap_get(&t->vmap, r, rn);
        if (r != stack) free(r);
    } else id = nl_tk_strmap_get(&t->vmap, s, n);
    if (id < 0)
        FAIL(L, NL_EFORMAT, "'%s': merge %zu ('%.*s' '%.*s') names the token '%.*s', which is not in the vocabulary", L->path, rank,
             (int)an, a, (int)bn, b, (int)(n > 100 ? 100 : n), s);
    return id;
}

static int add_merge(loadctx *L, nl_tokenizer *t, size_t rank, const char *a, size_t an, const char *b, size_t bn) {
    int ia = lookup_merge_part(L, t, rank, a, an, a, an, b, bn);
    if (ia < 0) return -1;
    int ib = lookup_merge_part(L, t, rank, b, bn, a, an, b, bn);
    if (ib < 0) return -1;
    size_t skip = t->cs_prefix_n && bn >= t->cs_prefix_n && !memcmp(b, t->cs_prefix, t->cs_prefix_n) ? t->cs_prefix_n : 0;
    char stack[512], *m = an + bn < sizeof stack ? stack : malloc(an + bn + 1);
    if (!m) return FAIL(L, NL_ENOMEM, "out of memory");
    memcpy(m, a, an);
    memcpy(m + an, b + skip, bn - skip);
    int im = lookup_merge_part(L, t, rank, m, an + bn - skip, a, an, b, bn);
    if (m != stack) free(m);
    if (im < 0) return -1;
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    int r = nl_tk_u64map_put(&t->merges, key, (uint32_t)rank, (uint32_t)im);
    if (r < 0) return FAIL(L, NL_ENOMEM, "out of memory");
    if (r > 0) { /* a repeated pair: the later rank wins, as in tokenizers and transformers.js */
        tk_u64slot *sl = (tk_u64slot *)tk_u64map_get(&t->merges, key);
        sl->a = (uint32_t)rank;
        sl->b = (uint32_t)im;
    }
    return 0;
}

static int parse_added(loadctx *L, nl_tokenizer *t, json_t *arr) {
    size_t n = json_array_size(arr);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added) return FAIL(L, NL_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(arr, i), *c = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (!json_is_string(c) || !json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= t->v.n)
            return FAIL(L, NL_EFORMAT, "'%s': added_tokens[%zu] needs a string \"content\" and an integer \"id\"", L->path, i);
        tk_added *x = &t->added[t->n_added++];
        x->id = (int32_t)json_integer_value(id);
        x->n = json_string_length(c);
        if (!(x->content = dupn(json_string_value(c), x->n))) return FAIL(L, NL_ENOMEM, "out of memory");
        x->special = (uint8_t)jbool(a, "special", 0);
        x->lstrip = (uint8_t)jbool(a, "lstrip", 0);
        x->rstrip = (uint8_t)jbool(a, "rstrip", 0);
        x->single_word = (uint8_t)jbool(a, "single_word", 0);
        x->normalized = (uint8_t)jbool(a, "normalized", !x->special);
        size_t pn;
        const char *cur = tk_piece(&t->v, x->id, &pn);
        /* the added content names the id, unless the model vocabulary already has another string there */
        if (!cur && nl_tk_vocab_set(&t->v, x->id, x->content, x->n)) return FAIL(L, NL_ENOMEM, "out of memory");
        t->v.type[x->id] = x->special ? TK_SPECIAL : TK_ADDED;
    }
    return 0;
}

static int json_int_id(json_t *v, int *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= (1 << 28)) return -1;
    *out = (int)x;
    return 0;
}

/* Checks of a loaded tokenizer.json / vocab.json vocabulary, after nl_tk_finish:
 *  - byte_fallback with a <0xXX> piece missing is an error (SentencePiece refuses such a
 *    model too; a deleted byte piece silently turns bytes into <unk>);
 *  - ids that no string names (holes in 0..V-1) and a byte-level vocabulary without a piece
 *    for every byte are warnings (nl_tokenizer_warning): the file still works as the
 *    reference loads it (tokenizers accepts both; an id without a string is never produced,
 *    a byte without a piece is dropped), but both are what a deleted entry looks like.
 * Two strings with one id are refused while reading the vocabulary (vocab_dup). */
static nl_status finish_loaded(loadctx *L, nl_tokenizer *t) {
    nl_status st = nl_tk_finish(L->ctx, t);
    if (st != NL_OK) return st;
    if (!t->byte_level && t->byte_fallback && !t->has_all_bytes) {
        int b = 0;
        while (b < 255 && t->byte_ids[b] >= 0) b++;
        return nl_errorf(L->ctx, NL_EFORMAT, "'%s': byte_fallback is on but the byte piece <0x%02X> is missing (all 256 are needed)",
                         L->path, b);
    }
    int holes = 0, first_hole = -1, nobytes = 0, first_nobyte = -1;
    for (int id = 0; id < t->v.n; id++) {
        size_t n;
        if (!tk_piece(&t->v, id, &n)) {
            if (first_hole < 0) first_hole = id;
            holes++;
        }
    }
    if (t->byte_level)
        for (int b = 0; b < 256; b++)
            if (t->byte_ids[b] < 0) {
                if (first_nobyte < 0) first_nobyte = b;
                nobytes++;
            }
    if (holes)
        snprintf(t->warning, sizeof t->warning, "'%.200s': %d of the ids 0..%d name no token (the first is %d)", L->path, holes,
                 t->v.n - 1, first_hole);
    else if (nobytes)
        snprintf(t->warning, sizeof t->warning,
                 "'%.150s': the byte-level vocabulary has no piece for %d of the 256 bytes (the first is 0x%02X): text holding "
                 "them loses those bytes", L->path, nobytes, first_nobyte);
    return NL_OK;
}

/* Two strings of the vocabulary with one id: refused (the second would encode to the first's id). */
static int vocab_dup(loadctx *L, nl_tokenizer *t, int id, const char *s, size_t n) {
    size_t kn;
    const char *k = tk_piece(&t->v, id, &kn);
    return FAIL(L, NL_EFORMAT, "'%s': token id %d is given to two strings, '%.*s' and '%.*s'", L->path, id, (int)(kn > 60 ? 60 : kn),
                k, (int)(n > 60 ? 60 : n), s);
}

nl_status nl_tk_load_hf_json(nl_ctx *ctx, const char *path, nl_tokenizer **out) {
    *out = NULL;
    loadctx L = {ctx, path, NL_OK};
    json_error_t err;
    char *buf = NULL;
    size_t bufn = 0;
    int ioe = read_file(path, &buf, &bufn);
    if (ioe) return nl_errorf(ctx, ioe == ENOMEM ? NL_ENOMEM : NL_EIO, "cannot read '%s': %s", path, strerror(ioe));
    js_span sp[2] = {{0, 0}, {0, 0}};
    json_t *root = NULL;
    if (nl_js_find_model_members(buf, bufn, &sp[0], &sp[1]) == 0) {
        js_span ord[2] = {sp[0], sp[1]};
        if (ord[0].a > ord[1].a) { ord[0] = sp[1]; ord[1] = sp[0]; }
        root = parse_blanked(buf, bufn, ord, 2, &err);
    }
    else root = json_loadb(buf, bufn, JSON_ALLOW_NUL, &err); /* malformed: jansson says where */
    if (!root) {
        free(buf);
        return nl_errorf(ctx, NL_EFORMAT, "'%s': not JSON: %s (line %d)", path, err.text, err.line);
    }
    nl_tokenizer *t = NULL;
    vocab_iter vi;
    memset(&vi, 0, sizeof vi);
    tk_buf ma = {0}, mb = {0};
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(root) || !json_is_object(model)) {
        FAIL(&L, NL_EFORMAT, "'%s': no \"model\" in the tokenizer file (not a Hugging Face tokenizer.json)", path);
        goto done;
    }
    const char *type = jstr(model, "type");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!type && json_is_object(vocab) && json_is_array(merges)) type = "BPE";
    if (!type || strcmp(type, "BPE") != 0) {
        FAIL(&L, NL_EUNSUPPORTED, "'%s': unsupported model type '%s' (supported: BPE)", path,
             type ? type : json_is_array(vocab) ? "Unigram" : "unknown");
        goto done;
    }
    if (!json_is_object(vocab) || !json_is_array(merges) || sp[0].b == sp[0].a || sp[1].b == sp[1].a) {
        FAIL(&L, NL_EFORMAT, "'%s': BPE model needs a \"vocab\" object and a \"merges\" array", path);
        goto done;
    }
    json_t *drop = json_object_get(model, "dropout");
    if (json_is_number(drop) && json_number_value(drop) > 0) {
        FAIL(&L, NL_EUNSUPPORTED, "'%s': BPE dropout %g is not supported (encoding would be random)", path, json_number_value(drop));
        goto done;
    }
    /* id space: model vocabulary and added tokens */
    int n = 0, id, r, n_entries = 0;
    vocab_begin(&vi, buf, sp[0]);
    while ((r = vocab_next(&L, &vi, &id)) == 1) {
        if (id + 1 > n) n = id + 1;
        n_entries++;
    }
    if (r < 0) goto done;
    json_t *added = json_object_get(root, "added_tokens");
    for (size_t i = 0; i < json_array_size(added); i++) {
        int aid;
        if (!json_int_id(json_object_get(json_array_get(added, i), "id"), &aid) && aid + 1 > n) n = aid + 1;
    }
    t = nl_tk_new(path);
    if (!t || nl_tk_vocab_init(&t->v, n) || nl_tk_strmap_init(&t->vmap, &t->v, (size_t)n_entries)) {
        FAIL(&L, NL_ENOMEM, "'%s': out of memory", path);
        goto done;
    }
    t->family = TK_RANKS;
    /* pre-tokenizer first: it decides whether the vocabulary is byte-level */
    json_t *pj = json_object_get(root, "pre_tokenizer");
    if (pj && !json_is_null(pj)) {
        if (!(t->pretok = calloc(1, sizeof *t->pretok))) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
        if (parse_pretok(&L, pj, t->pretok)) goto done;
        t->byte_level = nl_tk_pretok_has_bytelevel(t->pretok);
    }
    /* model options */
    const char *cp = jstr(model, "continuing_subword_prefix"), *sfx = jstr(model, "end_of_word_suffix");
    if (cp && *cp) {
        t->cs_prefix_n = strlen(cp);
        if (!(t->cs_prefix = dupn(cp, t->cs_prefix_n))) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    }
    if (sfx && *sfx) {
        t->eow_suffix_n = strlen(sfx);
        if (!(t->eow_suffix = dupn(sfx, t->eow_suffix_n))) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    }
    if (t->byte_level) { /* prefix/suffix in the vocabulary's byte form */
        for (int k = 0; k < 2; k++) {
            char **ps = k ? &t->eow_suffix : &t->cs_prefix;
            size_t *psn = k ? &t->eow_suffix_n : &t->cs_prefix_n;
            if (!*ps) continue;
            size_t rn;
            char *raw = to_raw(*ps, *psn, &rn);
            if (!raw) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
            free(*ps);
            *ps = raw;
            *psn = rn;
        }
    }
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    free(vi.key.p);
    vocab_begin(&vi, buf, sp[0]);
    while ((r = vocab_next(&L, &vi, &id)) == 1) {
        size_t kn;
        if (tk_piece(&t->v, id, &kn)) {
            vocab_dup(&L, t, id, vi.key.p, vi.key.n);
            goto done;
        }
        if (set_vocab_string(&L, t, id, vi.key.p, vi.key.n)) goto done;
        t->v.type[id] = TK_NORMAL;
        if (nl_tk_strmap_add(&t->vmap, id) < 0) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    }
    if (r < 0) goto done;
    const char *unk = jstr(model, "unk_token");
    if (unk) {
        t->unk_id = nl_tk_strmap_get(&t->vmap, unk, strlen(unk));
        if (t->unk_id < 0 && t->byte_level) {
            size_t rn;
            char *raw = to_raw(unk, strlen(unk), &rn);
            if (raw) t->unk_id = nl_tk_strmap_get(&t->vmap, raw, rn);
            free(raw);
        }
    }
    /* merges: "a b" strings or ["a", "b"] pairs */
    if (nl_tk_u64map_init(&t->merges, (size_t)n_entries * 2)) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    js_scan ms = {buf + sp[1].a, buf + sp[1].b};
    if (nl_js_expect(&ms, '[')) { FAIL(&L, NL_EFORMAT, "'%s': \"merges\" must be an array", path); goto done; }
    for (size_t rank = 0; nl_js_peek(&ms) != ']'; rank++) {
        if (rank > 0 && nl_js_expect(&ms, ',')) { FAIL(&L, NL_EFORMAT, "'%s': malformed \"merges\" array (merge %zu)", path, rank); goto done; }
        const char *a, *b;
        size_t an, bn;
        if (nl_js_peek(&ms) == '"') {
            if (nl_js_string(&ms, &ma) || nl_tk_buf_reserve(&ma, 0)) { FAIL(&L, NL_EFORMAT, "'%s': malformed merge %zu", path, rank); goto done; }
            ma.p[ma.n] = 0;
            const char *str = ma.p, *spc = memchr(str, ' ', ma.n);
            if (!spc || memchr(spc + 1, ' ', ma.n - (size_t)(spc + 1 - str))) {
                FAIL(&L, NL_EFORMAT, "'%s': merge %zu '%.100s' is not two tokens separated by one space", path, rank, str);
                goto done;
            }
            a = str;
            an = (size_t)(spc - str);
            b = spc + 1;
            bn = ma.n - an - 1;
        } else {
            if (nl_js_expect(&ms, '[') || nl_js_peek(&ms) != '"' || nl_js_string(&ms, &ma) || nl_js_expect(&ms, ',') || nl_js_peek(&ms) != '"' ||
                nl_js_string(&ms, &mb) || nl_js_expect(&ms, ']')) {
                FAIL(&L, NL_EFORMAT, "'%s': merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
                goto done;
            }
            a = ma.p ? ma.p : "";
            an = ma.n;
            b = mb.p ? mb.p : "";
            bn = mb.n;
        }
        if (add_merge(&L, t, rank, a, an, b, bn)) goto done;
    }
    if (json_is_array(added) && parse_added(&L, t, added)) goto done;
    json_t *nj = json_object_get(root, "normalizer");
    if (nj && !json_is_null(nj)) {
        if (!(t->norm = calloc(1, sizeof *t->norm))) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
        if (parse_norm(&L, nj, t->norm)) goto done;
    }
    json_t *dj = json_object_get(root, "decoder");
    if (dj && !json_is_null(dj)) {
        if (!(t->dec = calloc(1, sizeof *t->dec))) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
        if (parse_dec(&L, dj, t->dec, &t->dummy_prefix)) goto done;
    }
    json_t *ppj = json_object_get(root, "post_processor");
    if (ppj && !json_is_null(ppj)) {
        tmpl_t tp = {0};
        if (parse_post(&L, t, ppj, &tp)) { free(tp.p); goto done; }
        if (tp.has) {
            t->tmpl = tp.p;
            t->n_tmpl = tp.n;
        } else free(tp.p);
    }
    find_bos_eos(t);
    L.st = finish_loaded(&L, t);
done:
    json_decref(root);
    free(buf);
    free(vi.key.p);
    free(ma.p);
    free(mb.p);
    if (L.st != NL_OK) {
        nl_tokenizer_close(t);
        return L.st;
    }
    *out = t;
    return NL_OK;
}

/* ---- GPT-2 vocab.json + merges.txt ------------------------------------------------------------------------- */
nl_status nl_tk_load_gpt2(nl_ctx *ctx, const char *vocab_path, const char *merges_path, nl_tokenizer **out) {
    *out = NULL;
    loadctx L = {ctx, vocab_path, NL_OK};
    char *buf = NULL;
    size_t bufn = 0;
    int ioe = read_file(vocab_path, &buf, &bufn);
    if (ioe) return nl_errorf(ctx, ioe == ENOMEM ? NL_ENOMEM : NL_EIO, "cannot read '%s': %s", vocab_path, strerror(ioe));
    nl_tokenizer *t = NULL;
    char *text = NULL;
    vocab_iter vi;
    js_span whole = {0, bufn};
    int n = 0, id, r, n_entries = 0;
    vocab_begin(&vi, buf, whole);
    while ((r = vocab_next(&L, &vi, &id)) == 1) {
        if (id + 1 > n) n = id + 1;
        n_entries++;
    }
    if (r < 0) goto done;
    {
        js_scan rest = {vi.s.p, buf + bufn};
        if (nl_js_expect(&rest, '}') || nl_js_peek(&rest) != -1) { FAIL(&L, NL_EFORMAT, "'%s': not a JSON object of token ids", vocab_path); goto done; }
    }
    t = nl_tk_new(vocab_path);
    if (!t || nl_tk_vocab_init(&t->v, n) || nl_tk_strmap_init(&t->vmap, &t->v, (size_t)n_entries) ||
        !(t->pretok = calloc(1, sizeof *t->pretok)) || !(t->dec = calloc(1, sizeof *t->dec))) {
        FAIL(&L, NL_ENOMEM, "out of memory");
        goto done;
    }
    t->family = TK_RANKS;
    t->byte_level = 1;
    t->pretok->kind = PT_BYTELEVEL;
    t->pretok->has_re = 1;
    if (compile(&L, "GPT-2 pattern", &t->pretok->re, GPT2_PATTERN, strlen(GPT2_PATTERN), 0)) goto done;
    t->dec->kind = DC_BYTELEVEL;
    free(vi.key.p);
    vocab_begin(&vi, buf, whole);
    while ((r = vocab_next(&L, &vi, &id)) == 1) {
        size_t kn;
        if (tk_piece(&t->v, id, &kn)) {
            vocab_dup(&L, t, id, vi.key.p, vi.key.n);
            goto done;
        }
        if (set_vocab_string(&L, t, id, vi.key.p, vi.key.n)) goto done;
        t->v.type[id] = TK_NORMAL;
        if (nl_tk_strmap_add(&t->vmap, id) < 0) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    }
    if (r < 0) goto done;
    size_t tn;
    FILE *f = fopen(merges_path, "rb");
    if (!f) { FAIL(&L, NL_EIO, "cannot open '%s': %s", merges_path, strerror(errno)); goto done; }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc(sz > 0 ? (size_t)sz + 1 : 1);
    tn = text ? fread(text, 1, sz > 0 ? (size_t)sz : 0, f) : 0;
    fclose(f);
    if (!text) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    text[tn] = 0;
    if (nl_tk_u64map_init(&t->merges, 65536)) { FAIL(&L, NL_ENOMEM, "out of memory"); goto done; }
    L.path = merges_path;
    size_t rank = 0, line = 0;
    for (char *p = text; p < text + tn;) {
        char *e = memchr(p, '\n', (size_t)(text + tn - p));
        if (!e) e = text + tn;
        line++;
        char *q = p;
        p = e + 1;
        size_t len = (size_t)(e - q);
        if (len && q[len - 1] == '\r') len--;
        if (len == 0 || (line == 1 && len >= 8 && !memcmp(q, "#version", 8))) continue;
        /* two tokens separated by whitespace */
        size_t i = 0;
        while (i < len && q[i] != ' ' && q[i] != '\t') i++;
        size_t j = i;
        while (j < len && (q[j] == ' ' || q[j] == '\t')) j++;
        size_t k = j;
        while (k < len && q[k] != ' ' && q[k] != '\t') k++;
        if (i == 0 || j == len || k != len) {
            FAIL(&L, NL_EFORMAT, "'%s' line %zu: a merge is two tokens separated by a space", merges_path, line);
            goto done;
        }
        if (add_merge(&L, t, rank, q, i, q + j, k - j)) goto done;
        rank++;
    }
    L.path = vocab_path;
    /* <|endoftext|> is GPT-2's special token (BOS and EOS) */
    int eot = nl_tk_strmap_get(&t->vmap, "<|endoftext|>", 13);
    if (eot >= 0) {
        if (!(t->added = calloc(1, sizeof *t->added)) || !(t->added[0].content = dupn("<|endoftext|>", 13))) {
            FAIL(&L, NL_ENOMEM, "out of memory");
            goto done;
        }
        t->n_added = 1;
        t->added[0].id = eot;
        t->added[0].n = 13;
        t->added[0].special = 1;
        t->v.type[eot] = TK_SPECIAL;
        t->bos_id = t->eos_id = eot;
    }
    L.st = finish_loaded(&L, t);
done:
    free(buf);
    free(vi.key.p);
    free(text);
    if (L.st != NL_OK) {
        nl_tokenizer_close(t);
        return L.st;
    }
    *out = t;
    return NL_OK;
}
