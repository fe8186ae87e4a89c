/* decoder.c — Hugging Face decoders over a list of token strings: ByteLevel, Replace,
 * ByteFallback, Fuse, Strip, Metaspace, BPEDecoder, Sequence (tokenizers' decode_chain).
 * Bytes that do not form UTF-8 become U+FFFD (maximal subparts, as TextDecoder and
 * from_utf8_lossy do). Checked by tests/test_tokenizer.c. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

typedef struct { tk_buf b; tk_ids len; } toklist;

static int tl_add(toklist *l, const char *s, size_t n) {
    if (nl_tk_buf_put(&l->b, s, n) || nl_tk_ids_push(&l->len, (int32_t)n)) return -1;
    return 0;
}

static void tl_free(toklist *l) {
    free(l->b.p);
    free(l->len.p);
}

/* Appends the lossy UTF-8 reading of s to o. */
static int put_repaired(tk_buf *o, const char *s, size_t n) {
    if (nl_utf8_valid(s, n)) return nl_tk_buf_put(o, s, n);
    size_t rn;
    char *r = nl_tk_utf8_repair(s, n, 0, TK_SUR_INVALID, &rn);
    if (!r) return -1;
    int rc = nl_tk_buf_put(o, r, rn);
    free(r);
    return rc;
}

static int is_byte_token(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v *= 16;
        if (c >= '0' && c <= '9') v += c - '0';
        else if (c >= 'A' && c <= 'F') v += c - 'A' + 10;
        else if (c >= 'a' && c <= 'f') v += c - 'a' + 10;
        else return 0;
    }
    *byte = v;
    return 1;
}

static int step(const nl_tokenizer *t, const tk_dec *d, const toklist *in, toklist *out) {
    size_t off = 0;
    switch (d->kind) {
    case DC_BYTELEVEL: {
        tk_buf raw = {0};
        for (size_t i = 0; i < in->len.n; i++) {
            const char *s = in->b.p + off;
            size_t n = (size_t)in->len.p[i];
            off += n;
            if (t->byte_level) { if (nl_tk_buf_put(&raw, s, n)) goto oom_bl; continue; }
            /* map each character back to its byte; a token with another character stays as is */
            size_t mark = raw.n;
            int ok = 1;
            for (size_t k = 0; k < n && ok;) {
                uint32_t cp;
                k += (size_t)nl_utf8_next((const unsigned char *)s + k, n - k, &cp);
                int b = nl_bytelevel_byte(cp);
                if (b < 0) ok = 0;
                else {
                    char c = (char)b;
                    if (nl_tk_buf_put(&raw, &c, 1)) goto oom_bl;
                }
            }
            if (!ok) {
                raw.n = mark;
                if (nl_tk_buf_put(&raw, s, n)) goto oom_bl;
            }
        }
        {
            tk_buf rep = {0};
            if (put_repaired(&rep, raw.p ? raw.p : "", raw.n) || tl_add(out, rep.p ? rep.p : "", rep.n)) {
                free(rep.p);
                goto oom_bl;
            }
            free(rep.p);
        }
        free(raw.p);
        return 0;
    oom_bl:
        free(raw.p);
        return -1;
    }
    case DC_REPLACE:
    case DC_BPE:
    case DC_METASPACE: {
        const char *pat = d->kind == DC_METASPACE ? d->repl : d->pat;
        size_t pn = d->kind == DC_METASPACE ? (size_t)d->repl_n : d->patn;
        for (size_t i = 0; i < in->len.n; i++) {
            const char *s = in->b.p + off;
            size_t n = (size_t)in->len.p[i];
            off += n;
            const char *rep = d->content;
            size_t repn = d->contentn;
            if (d->kind == DC_BPE) { rep = i + 1 == in->len.n ? "" : " "; repn = strlen(rep); }
            if (d->kind == DC_METASPACE) {
                rep = " ";
                repn = 1;
                if (i == 0 && d->prepend) { rep = ""; repn = 0; } /* tokenizers drops every ▁ of the first token */
            }
            size_t mark = out->b.n;
            for (size_t k = 0; k < n;) {
                if (pn && k + pn <= n && !memcmp(s + k, pat, pn)) {
                    if (nl_tk_buf_put(&out->b, rep, repn)) return -1;
                    k += pn;
                } else {
                    if (nl_tk_buf_put(&out->b, s + k, 1)) return -1;
                    k++;
                }
            }
            if (nl_tk_ids_push(&out->len, (int32_t)(out->b.n - mark))) return -1;
        }
        return 0;
    }
    case DC_BYTEFALLBACK: {
        tk_buf bytes = {0};
        int rc = 0;
        for (size_t i = 0; i <= in->len.n && !rc; i++) {
            const char *s = i < in->len.n ? in->b.p + off : NULL;
            size_t n = i < in->len.n ? (size_t)in->len.p[i] : 0;
            off += n;
            int byte;
            if (s && is_byte_token(s, n, &byte)) {
                char c = (char)byte;
                rc = nl_tk_buf_put(&bytes, &c, 1);
                continue;
            }
            if (bytes.n) {
                tk_buf rep = {0};
                rc = put_repaired(&rep, bytes.p, bytes.n) || tl_add(out, rep.p ? rep.p : "", rep.n);
                free(rep.p);
                bytes.n = 0;
            }
            if (s && !rc) rc = tl_add(out, s, n);
        }
        free(bytes.p);
        return rc ? -1 : 0;
    }
    case DC_FUSE: return tl_add(out, in->b.p ? in->b.p : "", in->b.n);
    case DC_STRIP: {
        size_t cn = d->contentn;
        for (size_t i = 0; i < in->len.n; i++) {
            const char *s = in->b.p + off;
            size_t n = (size_t)in->len.p[i];
            off += n;
            size_t a = 0, e = n;
            for (int k = 0; k < d->start && cn && a + cn <= e && !memcmp(s + a, d->content, cn); k++) a += cn;
            for (int k = 0; k < d->stop && cn && e >= a + cn && !memcmp(s + e - cn, d->content, cn); k++) e -= cn;
            if (tl_add(out, s + a, e - a)) return -1;
        }
        return 0;
    }
    case DC_SEQUENCE: {
        toklist cur = {0}, nxt = {0};
        if (nl_tk_buf_put(&cur.b, in->b.p ? in->b.p : "", in->b.n)) return -1;
        for (size_t i = 0; i < in->len.n; i++)
            if (nl_tk_ids_push(&cur.len, in->len.p[i])) { tl_free(&cur); return -1; }
        for (int i = 0; i < d->n_items; i++) {
            nxt.b.n = 0;
            nxt.len.n = 0;
            if (step(t, &d->items[i], &cur, &nxt)) { tl_free(&cur); tl_free(&nxt); return -1; }
            toklist x = cur;
            cur = nxt;
            nxt = x;
        }
        int rc = 0;
        off = 0;
        for (size_t i = 0; i < cur.len.n && !rc; i++) {
            rc = tl_add(out, cur.b.p + off, (size_t)cur.len.p[i]);
            off += (size_t)cur.len.p[i];
        }
        tl_free(&cur);
        tl_free(&nxt);
        return rc;
    }
    }
    return 0;
}

int nl_tk_decode_tokens(const nl_tokenizer *t, const tk_dec *d, tk_buf *toks, tk_ids *lens, tk_buf *out) {
    toklist in = {*toks, *lens}, res = {0};
    int rc = 0;
    if (!d) { /* no decoder: tokens joined by spaces, as tokenizers does */
        size_t off = 0;
        for (size_t i = 0; i < lens->n && !rc; i++) {
            if (i) rc = nl_tk_buf_put(out, " ", 1);
            if (!rc) rc = nl_tk_buf_put(out, toks->p + off, (size_t)lens->p[i]);
            off += (size_t)lens->p[i];
        }
        return rc;
    }
    if (step(t, d, &in, &res)) { tl_free(&res); return -1; }
    size_t off = 0;
    for (size_t i = 0; i < res.len.n && !rc; i++) {
        rc = nl_tk_buf_put(out, res.b.p + off, (size_t)res.len.p[i]);
        off += (size_t)res.len.p[i];
    }
    tl_free(&res);
    return rc;
}

void nl_tk_dec_free(tk_dec *d) {
    if (!d) return;
    free(d->pat);
    free(d->content);
    for (int i = 0; i < d->n_items; i++) nl_tk_dec_free(&d->items[i]);
    free(d->items);
    d->items = NULL;
    d->n_items = 0;
}
