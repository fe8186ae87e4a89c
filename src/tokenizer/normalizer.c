/* normalizer.c — Hugging Face normalizers (Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Strip,
 * StripAccents, Precompiled) and SentencePiece's precompiled charsmap (a Darts-clone double-array
 * trie of rewrite rules, longest match first, as normalizer.cc applies it).
 * Replace with a Regex pattern uses the same PCRE2 translation as the pre-tokenizers; the
 * replacement is literal (as in tokenizers' Rust code). Checked by tests/test_tokenizer.c. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

static int dup_out(const char *s, size_t n, char **out, size_t *out_n) {
    char *o = malloc(n + 1);
    if (!o) return -1;
    memcpy(o, s, n);
    o[n] = 0;
    *out = o;
    *out_n = n;
    return 0;
}

/* Replaces every match of re (or of the literal lit when re is NULL) by repl. */
static int replace_all(const tk_regex *re, const char *lit, size_t litn, const char *repl, size_t repln, const char *s,
                       size_t n, char **out, size_t *out_n) {
    tk_buf b = {0};
    if (nl_tk_buf_reserve(&b, n)) return -1;
    size_t prev = 0;
    if (!re) {
        if (litn == 0) { free(b.p); return dup_out(s, n, out, out_n); }
        for (size_t i = 0; i + litn <= n;) {
            if (!memcmp(s + i, lit, litn)) {
                if (nl_tk_buf_put(&b, s + prev, i - prev) || nl_tk_buf_put(&b, repl, repln)) goto oom;
                i += litn;
                prev = i;
            } else i++;
        }
    } else {
        tk_buf sub = {0};
        const char *subj = nl_tk_match_subject(s, n, &sub);
        pcre2_match_data *md = subj ? pcre2_match_data_create(16, NULL) : NULL;
        if (!md) { free(sub.p); goto oom; }
        size_t pos = 0;
        while (pos <= n) {
            int rc = pcre2_match(re->code, (PCRE2_SPTR)subj, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t a = ov[0], e = ov[1];
            if (e == a) {
                if (a >= n) break;
                pos = a + (size_t)nl_utf8_len((unsigned char)s[a]);
                continue;
            }
            if (nl_tk_buf_put(&b, s + prev, a - prev) || nl_tk_buf_put(&b, repl, repln)) {
                pcre2_match_data_free(md);
                free(sub.p);
                goto oom;
            }
            prev = pos = e;
        }
        pcre2_match_data_free(md);
        free(sub.p);
    }
    if (nl_tk_buf_put(&b, s + prev, n - prev)) goto oom;
    *out = b.p;
    *out_n = b.n;
    return 0;
oom:
    free(b.p);
    return -1;
}

/* ---- precompiled charsmap ------------------------------------------------------------------ */
int nl_tk_charsmap_init(tk_charsmap *cm, const void *blob, size_t n) {
    memset(cm, 0, sizeof *cm);
    if (n <= 4) return -1;
    const unsigned char *b = blob;
    uint32_t trie = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (trie >= n - 4 + 1 || trie % 4) return -1;
    cm->blob = malloc(n - 4 + 1);
    if (!cm->blob) return -1;
    memcpy(cm->blob, b + 4, n - 4);
    cm->blob[n - 4] = 0;
    cm->units = (const uint32_t *)(void *)cm->blob; /* malloc'd: aligned for uint32 */
    cm->n_units = trie / 4;
    cm->normalized = cm->blob + trie;
    cm->normalized_n = n - 4 - trie;
    return 0;
}

void nl_tk_charsmap_release(tk_charsmap *cm) {
    free(cm->blob);
    memset(cm, 0, sizeof *cm);
}

size_t nl_tk_charsmap_match(const tk_charsmap *cm, const char *s, size_t n, const char **rep, size_t *repn) {
    if (!cm->n_units) return 0;
    const uint32_t *a = cm->units;
    size_t best = 0;
    uint32_t best_value = 0;
    size_t pos = 0;
    uint32_t u = a[0];
    pos ^= (size_t)((u >> 10) << ((u & (1u << 9)) >> 6));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        pos ^= c;
        if (pos >= cm->n_units) break;
        u = a[pos];
        if ((u & ((1u << 31) | 0xFF)) != c) break;
        pos ^= (size_t)((u >> 10) << ((u & (1u << 9)) >> 6));
        if (pos >= cm->n_units) break;
        if ((u >> 8) & 1) {
            best = i + 1;
            best_value = a[pos] & ((1u << 31) - 1);
        }
    }
    if (!best || best_value >= cm->normalized_n) return 0;
    *rep = cm->normalized + best_value;
    *repn = strlen(*rep); /* rules are NUL-terminated inside the blob */
    return best;
}

static int charsmap_apply(const tk_charsmap *cm, const char *s, size_t n, char **out, size_t *out_n) {
    tk_buf b = {0};
    if (nl_tk_buf_reserve(&b, n)) return -1;
    for (size_t i = 0; i < n;) {
        const char *rep;
        size_t repn, m = nl_tk_charsmap_match(cm, s + i, n - i, &rep, &repn);
        if (m) {
            if (nl_tk_buf_put(&b, rep, repn)) goto oom;
            i += m;
        } else {
            size_t l = (size_t)nl_utf8_len((unsigned char)s[i]);
            if (l > n - i) l = n - i;
            if (nl_tk_buf_put(&b, s + i, l)) goto oom;
            i += l;
        }
    }
    *out = b.p ? b.p : calloc(1, 1);
    *out_n = b.n;
    return *out ? 0 : -1;
oom:
    free(b.p);
    return -1;
}

int nl_tk_norm_apply(const tk_norm *nm, const char *s, size_t n, char **out, size_t *out_n) {
    switch (nm->kind) {
    case NM_SEQUENCE: {
        char *cur = NULL;
        size_t curn = 0;
        if (dup_out(s, n, &cur, &curn)) return -1;
        for (int i = 0; i < nm->n_items; i++) {
            char *nx;
            size_t nxn;
            if (nl_tk_norm_apply(&nm->items[i], cur, curn, &nx, &nxn)) { free(cur); return -1; }
            free(cur);
            cur = nx;
            curn = nxn;
        }
        *out = cur;
        *out_n = curn;
        return 0;
    }
    case NM_PREPEND: {
        if (n == 0) return dup_out(s, n, out, out_n);
        char *o = malloc(nm->sn + n + 1);
        if (!o) return -1;
        memcpy(o, nm->s, nm->sn);
        memcpy(o + nm->sn, s, n);
        o[nm->sn + n] = 0;
        *out = o;
        *out_n = nm->sn + n;
        return 0;
    }
    case NM_REPLACE:
        return replace_all(nm->re.code ? &nm->re : NULL, nm->s, nm->sn, nm->repl, nm->repln, s, n, out, out_n);
    case NM_STRIP_ACCENTS: return replace_all(&nm->re, NULL, 0, "", 0, s, n, out, out_n);
    case NM_UNICODE: return nl_uc_normalize(nm->form, s, n, out, out_n);
    case NM_STRIP: {
        size_t a = 0, e = n;
        const unsigned char *u = (const unsigned char *)s;
        if (nm->left)
            while (a < e) {
                uint32_t cp;
                int l = nl_utf8_next(u + a, e - a, &cp);
                if (!nl_uc_is_space(cp)) break;
                a += (size_t)l;
            }
        if (nm->right)
            while (e > a) {
                size_t k = e - 1;
                while (k > a && (u[k] & 0xC0) == 0x80) k--;
                uint32_t cp;
                nl_utf8_next(u + k, e - k, &cp);
                if (!nl_uc_is_space(cp)) break;
                e = k;
            }
        return dup_out(s + a, e - a, out, out_n);
    }
    case NM_PRECOMPILED: return charsmap_apply(&nm->cm, s, n, out, out_n);
    }
    return dup_out(s, n, out, out_n);
}

void nl_tk_norm_free(tk_norm *nm) {
    if (!nm) return;
    free(nm->s);
    free(nm->repl);
    nl_tk_regex_release(&nm->re);
    nl_tk_charsmap_release(&nm->cm);
    for (int i = 0; i < nm->n_items; i++) nl_tk_norm_free(&nm->items[i]);
    free(nm->items);
    nm->items = NULL;
    nm->n_items = 0;
}
