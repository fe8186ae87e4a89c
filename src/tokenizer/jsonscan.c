/* jsonscan.c — a small, allocation-free JSON scanner for the two big members of a tokenizer
 * file (model.vocab, model.merges: hundreds of thousands of strings, a third of a second in
 * jansson for Llama 3). The loader finds their spans here, hands the rest of the file to
 * jansson with the two values emptied, and walks the spans with the scanner.
 * Strings are decoded fully (escapes, surrogate pairs; a lone surrogate becomes U+FFFD).
 * Checked by tests/test_tokenizer.c and every tokenizer.json the conformance harness loads. */
#include "tokenizer/jsonscan.h"

#include <string.h>

#include "tokenizer/unicode.h"

static void skip_ws(js_scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

int nl_js_peek(js_scan *s) {
    skip_ws(s);
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

int nl_js_expect(js_scan *s, char c) {
    skip_ws(s);
    if (s->p >= s->end || *s->p != c) return -1;
    s->p++;
    return 0;
}

static int hex4(const char *p, uint32_t *v) {
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') x |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') x |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *v = x;
    return 0;
}

int nl_js_string(js_scan *s, tk_buf *out) {
    skip_ws(s);
    out->n = 0;
    if (s->p >= s->end || *s->p != '"') return -1;
    const char *p = ++s->p;
    for (;;) {
        const char *q = p;
        while (q < s->end && *q != '"' && *q != '\\') q++;
        if (q >= s->end) return -1;
        if (nl_tk_buf_put(out, p, (size_t)(q - p))) return -1;
        if (*q == '"') { s->p = q + 1; return 0; }
        if (q + 1 >= s->end) return -1;
        char e = q[1];
        char c;
        p = q + 2;
        switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            uint32_t v, w;
            if (s->end - p < 4 || hex4(p, &v)) return -1;
            p += 4;
            if (v >= 0xD800 && v <= 0xDBFF && s->end - p >= 6 && p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, &w) &&
                w >= 0xDC00 && w <= 0xDFFF) {
                v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
                p += 6;
            } else if (v >= 0xD800 && v <= 0xDFFF) v = 0xFFFD;
            char u[4];
            if (nl_tk_buf_put(out, u, (size_t)nl_utf8_put(v, u))) return -1;
            continue;
        }
        default: return -1;
        }
        if (nl_tk_buf_put(out, &c, 1)) return -1;
    }
}

int nl_js_int(js_scan *s, long long *v) {
    skip_ws(s);
    const char *p = s->p;
    int neg = 0;
    if (p < s->end && *p == '-') { neg = 1; p++; }
    if (p >= s->end || *p < '0' || *p > '9') return -1;
    long long x = 0;
    while (p < s->end && *p >= '0' && *p <= '9') {
        if (x > (1LL << 50)) return -1;
        x = x * 10 + (*p++ - '0');
    }
    if (p < s->end && (*p == '.' || *p == 'e' || *p == 'E')) return -1;
    s->p = p;
    *v = neg ? -x : x;
    return 0;
}

int nl_js_skip(js_scan *s) {
    skip_ws(s);
    if (s->p >= s->end) return -1;
    char c = *s->p;
    if (c == '"') {
        const char *p = s->p + 1;
        while (p < s->end && *p != '"') p += *p == '\\' ? 2 : 1;
        if (p >= s->end) return -1;
        s->p = p + 1;
        return 0;
    }
    if (c == '{' || c == '[') {
        int depth = 0;
        const char *p = s->p;
        while (p < s->end) {
            char d = *p;
            if (d == '"') {
                p++;
                while (p < s->end && *p != '"') p += *p == '\\' ? 2 : 1;
                if (p >= s->end) return -1;
                p++;
                continue;
            }
            if (d == '{' || d == '[') depth++;
            else if (d == '}' || d == ']') {
                if (--depth == 0) { s->p = p + 1; return 0; }
            }
            p++;
        }
        return -1;
    }
    /* number or literal */
    const char *p = s->p;
    while (p < s->end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') p++;
    if (p == s->p) return -1;
    s->p = p;
    return 0;
}

int nl_js_find_model_members(const char *buf, size_t n, js_span *vocab, js_span *merges) {
    js_scan s = {buf, buf + n};
    tk_buf key = {0};
    int rc = -1;
    vocab->a = vocab->b = merges->a = merges->b = 0;
    if (nl_js_expect(&s, '{')) goto done;
    if (nl_js_peek(&s) == '}') { rc = 0; goto done; }
    for (;;) {
        if (nl_js_string(&s, &key) || nl_js_expect(&s, ':')) goto done;
        if (key.n == 5 && !memcmp(key.p, "model", 5) && nl_js_peek(&s) == '{') {
            s.p++;
            if (nl_js_peek(&s) != '}')
                for (;;) {
                    if (nl_js_string(&s, &key) || nl_js_expect(&s, ':')) goto done;
                    int which = key.n == 5 && !memcmp(key.p, "vocab", 5) ? 1 : key.n == 6 && !memcmp(key.p, "merges", 6) ? 2 : 0;
                    nl_js_peek(&s);
                    size_t a = (size_t)(s.p - buf);
                    if (nl_js_skip(&s)) goto done;
                    if (which) {
                        js_span *sp = which == 1 ? vocab : merges;
                        sp->a = a;
                        sp->b = (size_t)(s.p - buf);
                    }
                    int c = nl_js_peek(&s);
                    if (c == ',') { s.p++; continue; }
                    if (c == '}') { s.p++; break; }
                    goto done;
                }
            else s.p++;
        } else if (nl_js_skip(&s)) goto done;
        int c = nl_js_peek(&s);
        if (c == ',') { s.p++; continue; }
        if (c == '}') break;
        goto done;
    }
    rc = 0;
done:
    free(key.p);
    return rc;
}
