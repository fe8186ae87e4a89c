/* pretok.c — pre-tokenizers (Split, ByteLevel, Metaspace, Sequence; Digits, Whitespace,
 * WhitespaceSplit and Punctuation are Splits with a fixed pattern) and the PCRE2 wrapper.
 *
 * Patterns are the Hugging Face / JavaScript ones, compiled by PCRE2 in UTF mode without UCP so
 * that \d, \w and \b are ASCII as in JavaScript; \s and \S are rewritten to JavaScript's whitespace
 * set (which, unlike Rust's Oniguruma, contains U+FEFF and not U+0085) and the case-insensitive
 * contraction group (?i:'s|'t|…) to the explicit classes transformers.js uses, so that the splits
 * agree with the reference encoders. \p{L}, \p{N} … use PCRE2's Unicode tables.
 * Split behaviours (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous) and
 * invert follow tokenizers' Rust implementation. Empty matches are skipped (JavaScript matchAll).
 * The public splitter (nl_splitter_*, tokenizer.h) is one Split node (Isolated) with its own
 * scratch, for the BPE trainer: it splits text exactly as an opened tokenizer.json does.
 * Checked by tests/test_tokenizer.c, tests/test_bpe_train.c and tests/tokenizer_conformance.sh. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#include <stdio.h>

#define JS_WS "\\t\\n\\x0B\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"

static const char CONTRACTIONS[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
static const char CONTRACTIONS_JS[] = "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* Rewrites a JavaScript-flavoured pattern for PCRE2 (see the file comment). */
static int translate(const char *pat, size_t n, tk_buf *o) {
    int in_class = 0;
    for (size_t i = 0; i < n;) {
        if (!in_class && n - i >= sizeof CONTRACTIONS - 1 && !memcmp(pat + i, CONTRACTIONS, sizeof CONTRACTIONS - 1)) {
            if (nl_tk_buf_put(o, CONTRACTIONS_JS, sizeof CONTRACTIONS_JS - 1)) return -1;
            i += sizeof CONTRACTIONS - 1;
            continue;
        }
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[i + 1];
            int r = 0;
            if (d == 's') r = nl_tk_buf_put(o, in_class ? JS_WS : "[" JS_WS "]", strlen(in_class ? JS_WS : "[" JS_WS "]"));
            else if (d == 'S' && !in_class) r = nl_tk_buf_put(o, "[^" JS_WS "]", strlen("[^" JS_WS "]"));
            else if (d == 'u' && i + 2 < n && pat[i + 2] == '{') {
                size_t j = i + 3;
                while (j < n && is_hex(pat[j])) j++;
                if (j < n && pat[j] == '}') {
                    r = nl_tk_buf_put(o, "\\x{", 3) || nl_tk_buf_put(o, pat + i + 3, j - (i + 3)) || nl_tk_buf_put(o, "}", 1);
                    if (r) return -1;
                    i = j + 1;
                    continue;
                }
                r = nl_tk_buf_put(o, pat + i, 2);
            } else if (d == 'u' && i + 5 < n + 0 && is_hex(pat[i + 2]) && is_hex(pat[i + 3]) && is_hex(pat[i + 4]) &&
                       is_hex(pat[i + 5])) {
                r = nl_tk_buf_put(o, "\\x{", 3) || nl_tk_buf_put(o, pat + i + 2, 4) || nl_tk_buf_put(o, "}", 1);
                if (r) return -1;
                i += 6;
                continue;
            } else r = nl_tk_buf_put(o, pat + i, 2);
            if (r) return -1;
            i += 2;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            if (nl_tk_buf_put(o, pat + i, 1)) return -1;
            i++;
            if (i < n && pat[i] == '^') { if (nl_tk_buf_put(o, "^", 1)) return -1; i++; }
            continue;
        }
        if (c == ']' && in_class) in_class = 0;
        if (nl_tk_buf_put(o, &c, 1)) return -1;
        i++;
    }
    return 0;
}

int nl_tk_regex_compile(tk_regex *re, const char *pat, size_t n, int is_literal, char *err, size_t errcap) {
    memset(re, 0, sizeof *re);
    tk_buf b = {0};
    const char *src = pat;
    size_t srcn = n;
    uint32_t opts = PCRE2_UTF;
    if (is_literal) opts |= PCRE2_LITERAL;
    else {
        if (translate(pat, n, &b)) { snprintf(err, errcap, "out of memory"); free(b.p); return -1; }
        src = b.p ? b.p : "";
        srcn = b.n;
    }
    int ec;
    PCRE2_SIZE eo;
    re->code = pcre2_compile((PCRE2_SPTR)src, srcn, opts, &ec, &eo, NULL);
    free(b.p);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errcap, "%s at offset %zu", (const char *)msg, (size_t)eo);
        return -1;
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void nl_tk_regex_release(tk_regex *re) {
    if (re->code) pcre2_code_free(re->code);
    re->code = NULL;
}

int nl_tk_spans_push(tk_spans *v, const char *p, size_t n, int first) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        tk_span *np = realloc(v->p, c * sizeof *np);
        if (!np) return -1;
        v->p = np;
        v->cap = c;
    }
    v->p[v->n].p = p;
    v->p[v->n].n = n;
    v->p[v->n].first = first;
    v->n++;
    return 0;
}

static int seg_push(tk_scratch *s, size_t a, size_t b, int m) {
    if (s->seg_n == s->seg_cap) {
        size_t c = s->seg_cap ? s->seg_cap * 2 : 64;
        struct tk_seg *np = realloc(s->seg, c * sizeof *np);
        if (!np) return -1;
        s->seg = np;
        s->seg_cap = c;
    }
    s->seg[s->seg_n].a = a;
    s->seg[s->seg_n].b = b;
    s->seg[s->seg_n].m = m;
    s->seg_n++;
    return 0;
}

/* Segments of p: the non-empty matches of re and the gaps between them. 0, -1 OOM, -2 match error. */
static int find_segments(const tk_regex *re, tk_scratch *s, const char *p, size_t n) {
    s->seg_n = 0;
    if (!(p = nl_tk_match_subject(p, n, &s->tmp))) return -1; /* offsets are the same */
    if (!s->md && !(s->md = pcre2_match_data_create(16, NULL))) return -1;
    size_t prev = 0, pos = 0;
    while (pos <= n) {
        int rc;
        if (re->jit) {
            rc = pcre2_jit_match(re->code, (PCRE2_SPTR)p, n, pos, 0, s->md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match(re->code, (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s->md, NULL);
        } else rc = pcre2_match(re->code, (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -2;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* empty match: skip one character */
            if (a >= n) break;
            pos = a + (size_t)nl_utf8_len((unsigned char)p[a]);
            continue;
        }
        if (a > prev && seg_push(s, prev, a, 0)) return -1;
        if (seg_push(s, a, b, 1)) return -1;
        prev = pos = b;
    }
    if (prev < n && seg_push(s, prev, n, 0)) return -1;
    return 0;
}

/* Literal occurrences of lit in p as segments (Metaspace's split on the replacement). */
static int literal_segments(tk_scratch *s, const char *p, size_t n, const char *lit, size_t ln) {
    s->seg_n = 0;
    size_t prev = 0;
    for (size_t i = 0; i + ln <= n;) {
        if (!memcmp(p + i, lit, ln)) {
            if (i > prev && seg_push(s, prev, i, 0)) return -1;
            if (seg_push(s, i, i + ln, 1)) return -1;
            i += ln;
            prev = i;
        } else i++;
    }
    if (prev < n && seg_push(s, prev, n, 0)) return -1;
    return 0;
}

/* Applies a split behaviour to s->seg (tokenizers' SplitDelimiterBehavior) and emits pieces. */
static int emit_segments(tk_scratch *s, const char *p, int behavior, int invert, int first, tk_spans *out) {
    struct tk_seg *g = s->seg;
    size_t n = s->seg_n, k = 0;
    if (invert)
        for (size_t i = 0; i < n; i++) g[i].m = !g[i].m;
    switch (behavior) {
    case SB_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!g[i].m) g[k++] = g[i];
        break;
    case SB_ISOLATED: k = n; break;
    case SB_MERGED_PREV: {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            int m = g[i].m;
            if (m && !prev_match && k > 0) g[k - 1].b = g[i].b;
            else g[k++] = g[i];
            prev_match = m;
        }
        break;
    }
    case SB_MERGED_NEXT: { /* right to left, then the kept segments are in reverse at the end */
        int prev_match = 0;
        size_t w = n; /* write position from the right */
        for (size_t i = n; i-- > 0;) {
            int m = g[i].m;
            if (m && !prev_match && w < n) g[w].a = g[i].a;
            else g[--w] = g[i];
            prev_match = m;
        }
        for (size_t i = w; i < n; i++) g[k++] = g[i];
        break;
    }
    case SB_CONTIGUOUS: {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            int m = g[i].m;
            if (m == prev_match && k > 0) g[k - 1].b = g[i].b;
            else g[k++] = g[i];
            prev_match = m;
        }
        break;
    }
    }
    int emitted = 0;
    for (size_t i = 0; i < k; i++) {
        if (g[i].b <= g[i].a) continue;
        if (nl_tk_spans_push(out, p + g[i].a, g[i].b - g[i].a, first && !emitted && g[i].a == 0)) return -1;
        emitted = 1;
    }
    return 0;
}

static int apply_one(const tk_pretok *pt, tk_scratch *s, const tk_span *in, tk_spans *out) {
    const char *p = in->p;
    size_t n = in->n;
    switch (pt->kind) {
    case PT_SPLIT: {
        int r = find_segments(&pt->re, s, p, n);
        if (r) return r;
        return emit_segments(s, p, pt->behavior, pt->invert, in->first, out);
    }
    case PT_BYTELEVEL: {
        if (pt->add_prefix_space && (n == 0 || p[0] != ' ')) {
            char *q = nl_tk_arena_alloc(s, n + 1);
            if (!q) return -1;
            q[0] = ' ';
            memcpy(q + 1, p, n);
            p = q;
            n++;
        }
        if (!pt->has_re) return nl_tk_spans_push(out, p, n, in->first);
        int r = find_segments(&pt->re, s, p, n);
        if (r) return r;
        return emit_segments(s, p, SB_ISOLATED, 0, in->first, out);
    }
    case PT_METASPACE: {
        size_t spaces = 0;
        for (size_t i = 0; i < n; i++) spaces += p[i] == ' ';
        int prepend = (pt->prepend_scheme == PS_ALWAYS || (pt->prepend_scheme == PS_FIRST && in->first)) &&
                      !(n >= (size_t)pt->repl_n && !memcmp(p, pt->repl, (size_t)pt->repl_n));
        /* the prefix test sees the text after the spaces are replaced */
        if (pt->prepend_scheme != PS_NEVER && n > 0 && p[0] == ' ') prepend = 0;
        size_t m = n + spaces * ((size_t)pt->repl_n - 1) + (prepend ? (size_t)pt->repl_n : 0);
        char *q = nl_tk_arena_alloc(s, m ? m : 1), *o = q;
        if (!q) return -1;
        if (prepend) { memcpy(o, pt->repl, (size_t)pt->repl_n); o += pt->repl_n; }
        for (size_t i = 0; i < n; i++) {
            if (p[i] == ' ') { memcpy(o, pt->repl, (size_t)pt->repl_n); o += pt->repl_n; }
            else *o++ = p[i];
        }
        if (!pt->split) return nl_tk_spans_push(out, q, m, in->first);
        if (literal_segments(s, q, m, pt->repl, (size_t)pt->repl_n)) return -1;
        return emit_segments(s, q, SB_MERGED_NEXT, 0, in->first, out);
    }
    case PT_SEQUENCE: {
        tk_spans a = {0}, b = {0};
        int r = nl_tk_spans_push(&a, in->p, in->n, in->first);
        for (int i = 0; !r && i < pt->n_items; i++) {
            b.n = 0;
            for (size_t j = 0; !r && j < a.n; j++) r = apply_one(&pt->items[i], s, &a.p[j], &b);
            tk_spans t = a;
            a = b;
            b = t;
        }
        for (size_t j = 0; !r && j < a.n; j++) r = nl_tk_spans_push(out, a.p[j].p, a.p[j].n, a.p[j].first);
        free(a.p);
        free(b.p);
        return r;
    }
    }
    return 0;
}

int nl_tk_pretok_apply(const tk_pretok *pt, tk_scratch *s, const tk_spans *in, tk_spans *out) {
    for (size_t i = 0; i < in->n; i++) {
        int r = apply_one(pt, s, &in->p[i], out);
        if (r) return r;
    }
    return 0;
}

int nl_tk_pretok_has_bytelevel(const tk_pretok *pt) {
    if (!pt) return 0;
    if (pt->kind == PT_BYTELEVEL) return 1;
    for (int i = 0; i < pt->n_items; i++)
        if (nl_tk_pretok_has_bytelevel(&pt->items[i])) return 1;
    return 0;
}

void nl_tk_pretok_free(tk_pretok *pt) {
    if (!pt) return;
    nl_tk_regex_release(&pt->re);
    for (int i = 0; i < pt->n_items; i++) nl_tk_pretok_free(&pt->items[i]);
    free(pt->items);
    pt->items = NULL;
    pt->n_items = 0;
}

/* ---- public splitter (tokenizer.h) ---------------------------------------------------------------- */
struct nl_splitter {
    tk_pretok node; /* PT_SPLIT, SB_ISOLATED, invert 0 */
    char *pattern;
};

struct nl_split_scratch {
    tk_scratch s;
    tk_spans in, out;
    nl_text_piece *pieces;
    size_t cap;
};


nl_status nl_splitter_create(nl_ctx *ctx, const char *pattern, nl_splitter **out) {
    *out = NULL;
    nl_splitter *sp = calloc(1, sizeof *sp);
    if (!sp || !(sp->pattern = strdup(pattern))) {
        free(sp);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    sp->node.kind = PT_SPLIT;
    sp->node.behavior = SB_ISOLATED;
    sp->node.invert = 0;
    sp->node.has_re = 1;
    char err[256];
    if (nl_tk_regex_compile(&sp->node.re, pattern, strlen(pattern), 0, err, sizeof err)) {
        nl_status st = nl_errorf(ctx, NL_EINVAL, "cannot compile the pre-tokenizer pattern '%s': %s", pattern, err);
        nl_splitter_destroy(sp);
        return st;
    }
    *out = sp;
    return NL_OK;
}

void nl_splitter_destroy(nl_splitter *sp) {
    if (!sp) return;
    nl_tk_pretok_free(&sp->node);
    free(sp->pattern);
    free(sp);
}

const char *nl_splitter_pattern(const nl_splitter *sp) { return sp->pattern; }

nl_split_scratch *nl_split_scratch_create(void) { return calloc(1, sizeof(nl_split_scratch)); }

void nl_split_scratch_destroy(nl_split_scratch *s) {
    if (!s) return;
    nl_tk_scratch_release(&s->s);
    free(s->in.p);
    free(s->out.p);
    free(s->pieces);
    free(s);
}

nl_status nl_splitter_split(const nl_splitter *sp, nl_split_scratch *s, const char *text, size_t len,
                            const nl_text_piece **pieces, size_t *n) {
    *pieces = s->pieces;
    *n = 0;
    s->in.n = s->out.n = 0;
    if (!len) return NL_OK;
    if (nl_tk_spans_push(&s->in, text, len, 1)) return NL_ENOMEM;
    int rc = nl_tk_pretok_apply(&sp->node, &s->s, &s->in, &s->out);
    if (rc) return rc == -2 ? NL_EINVAL : NL_ENOMEM;
    if (s->out.n > s->cap) {
        size_t c = s->out.n + s->out.n / 2 + 16;
        nl_text_piece *np = realloc(s->pieces, c * sizeof *np);
        if (!np) return NL_ENOMEM;
        s->pieces = np;
        s->cap = c;
    }
    for (size_t i = 0; i < s->out.n; i++) s->pieces[i] = (nl_text_piece){s->out.p[i].p, s->out.p[i].n};
    *pieces = s->pieces;
    *n = s->out.n;
    return NL_OK;
}
