/* unicode.c — Unicode normalization forms NFC, NFD, NFKC, NFKD over UTF-8 (UAX #15): full
 * decomposition from the generated tables (unicode_tables.c) plus algorithmic Hangul, canonical
 * ordering by combining class, canonical composition. A quick check (per-form sets of characters
 * that may change or reorder, as a BMP bitmap built once) lets already-normalized text through
 * untouched. Checked by tests/test_tokenizer.c (against Python's unicodedata outputs). */
#include "tokenizer/unicode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28,
       NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int in_ranges(const nl_uc_range *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int nl_uc_ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    int lo = 0, hi = nl_uc_n_ccc - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < nl_uc_ccc[mid].lo) hi = mid - 1;
        else if (cp > nl_uc_ccc[mid].hi) lo = mid + 1;
        else return (int)nl_uc_ccc[mid].ccc;
    }
    return 0;
}

/* BMP bitmaps of the "unsafe" sets, one per form, built once. */
static uint8_t unsafe_bmp[4][0x10000 / 8];
static pthread_once_t bmp_once = PTHREAD_ONCE_INIT;

static const nl_uc_range *unsafe_set(int form, int *n) {
    switch (form) {
    case NL_UC_NFC: *n = nl_uc_n_unsafe_nfc; return nl_uc_unsafe_nfc;
    case NL_UC_NFD: *n = nl_uc_n_unsafe_nfd; return nl_uc_unsafe_nfd;
    case NL_UC_NFKC: *n = nl_uc_n_unsafe_nfkc; return nl_uc_unsafe_nfkc;
    default: *n = nl_uc_n_unsafe_nfkd; return nl_uc_unsafe_nfkd;
    }
}

static void build_bitmaps(void) {
    for (int f = 0; f < 4; f++) {
        int n;
        const nl_uc_range *r = unsafe_set(f, &n);
        for (int i = 0; i < n; i++)
            for (uint32_t c = r[i].lo; c <= r[i].hi && c < 0x10000; c++) unsafe_bmp[f][c >> 3] |= (uint8_t)(1u << (c & 7));
    }
}

static int is_unsafe(int form, uint32_t cp) {
    if (cp < 0x10000) return (unsafe_bmp[form][cp >> 3] >> (cp & 7)) & 1;
    int n;
    const nl_uc_range *r = unsafe_set(form, &n);
    return in_ranges(r, n, cp);
}

int nl_uc_is_normalized(int form, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && p[i] < 0x80) i++;
    if (i == n) return 1;
    pthread_once(&bmp_once, build_bitmaps);
    while (i < n) {
        if (p[i] < 0x80) { i++; continue; }
        uint32_t cp;
        i += (size_t)nl_utf8_next(p + i, n - i, &cp);
        if (is_unsafe(form, cp)) return 0;
    }
    return 1;
}

static const nl_uc_decomp *find_decomp(const nl_uc_decomp *t, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < t[mid].cp) hi = mid - 1;
        else if (cp > t[mid].cp) lo = mid + 1;
        else return &t[mid];
    }
    return NULL;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    int lo = 0, hi = nl_uc_n_compose - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const nl_uc_pair *p = &nl_uc_compose[mid];
        if (a < p->a || (a == p->a && b < p->b)) hi = mid - 1;
        else if (a > p->a || b > p->b) lo = mid + 1;
        else return p->c;
    }
    return 0;
}

typedef struct { uint32_t *p; size_t n, cap; } cpbuf;

static int cp_push(cpbuf *b, uint32_t c) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        uint32_t *np = realloc(b->p, nc * sizeof *np);
        if (!np) return -1;
        b->p = np;
        b->cap = nc;
    }
    b->p[b->n++] = c;
    return 0;
}

/* Normalizes s[0, n) fully and appends the UTF-8 to o (room for 4 bytes per code point is
 * made here). */
static int normalize_full(int form, const char *s, size_t n, char **o, size_t *on, size_t *ocap) {
    int compat = form == NL_UC_NFKC || form == NL_UC_NFKD;
    int compose = form == NL_UC_NFC || form == NL_UC_NFKC;
    cpbuf b = {0};
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)nl_utf8_next(p + i, n - i, &cp);
        if (cp >= SBASE && cp < SBASE + SCOUNT) {
            uint32_t si = cp - SBASE;
            if (cp_push(&b, LBASE + si / NCOUNT) || cp_push(&b, VBASE + (si % NCOUNT) / TCOUNT)) goto oom;
            if (si % TCOUNT && cp_push(&b, TBASE + si % TCOUNT)) goto oom;
            continue;
        }
        const nl_uc_decomp *d = NULL;
        const uint32_t *seq = NULL;
        if (cp >= 0xA0) {
            if (compat && (d = find_decomp(nl_uc_compat, nl_uc_compat_n, cp))) seq = nl_uc_compat_seq;
            else if ((d = find_decomp(nl_uc_canon, nl_uc_canon_n, cp))) seq = nl_uc_canon_seq;
        }
        if (d) {
            for (uint32_t k = 0; k < d->n; k++)
                if (cp_push(&b, seq[d->off + k])) goto oom;
        } else if (cp_push(&b, cp)) goto oom;
    }
    /* canonical ordering: stable insertion sort of each run of non-starters by class */
    for (size_t i = 1; i < b.n; i++) {
        int c = nl_uc_ccc_of(b.p[i]);
        if (!c) continue;
        size_t j = i;
        uint32_t v = b.p[i];
        while (j > 0) {
            int pc = nl_uc_ccc_of(b.p[j - 1]);
            if (pc <= c) break;
            b.p[j] = b.p[j - 1];
            j--;
        }
        b.p[j] = v;
    }
    size_t m = b.n;
    if (compose && m > 0) {
        size_t starter_pos = 0, comp_pos = 1;
        uint32_t starter = b.p[0];
        int last = nl_uc_ccc_of(starter);
        if (last != 0) last = 256;
        for (size_t i = 1; i < m; i++) {
            uint32_t ch = b.p[i];
            int cls = nl_uc_ccc_of(ch);
            uint32_t comp = compose_pair(starter, ch);
            if (comp && (last < cls || last == 0)) {
                b.p[starter_pos] = comp;
                starter = comp;
            } else {
                if (cls == 0) { starter_pos = comp_pos; starter = ch; }
                last = cls;
                b.p[comp_pos++] = ch;
            }
        }
        m = comp_pos;
    }
    if (*on + m * 4 + 1 > *ocap) {
        size_t nc = (*on + m * 4 + 1) * 2;
        char *np = realloc(*o, nc);
        if (!np) goto oom;
        *o = np;
        *ocap = nc;
    }
    for (size_t i = 0; i < m; i++) *on += (size_t)nl_utf8_put(b.p[i], *o + *on);
    free(b.p);
    return 0;
oom:
    free(b.p);
    return -1;
}

static int append(char **o, size_t *on, size_t *ocap, const char *s, size_t n) {
    if (*on + n + 1 > *ocap) {
        size_t nc = (*on + n + 1) * 2;
        char *np = realloc(*o, nc);
        if (!np) return -1;
        *o = np;
        *ocap = nc;
    }
    memcpy(*o + *on, s, n);
    *on += n;
    return 0;
}

/* Only the regions around characters that may change are normalized: a region starts at the
 * last starter before such a character and ends at the next character that can neither change
 * nor combine with what precedes it; the text between regions is copied. */
int nl_uc_normalize(int form, const char *s, size_t n, char **out, size_t *out_n) {
    *out = NULL;
    *out_n = 0;
    pthread_once(&bmp_once, build_bitmaps);
    const unsigned char *p = (const unsigned char *)s;
    char *o = malloc(n + 16);
    size_t on = 0, ocap = n + 16, pos = 0, last_starter = 0, i = 0;
    if (!o) return -1;
    while (i < n) {
        if (p[i] < 0x80) { last_starter = i++; continue; }
        uint32_t cp;
        size_t l = (size_t)nl_utf8_next(p + i, n - i, &cp);
        if (!is_unsafe(form, cp)) { last_starter = i; i += l; continue; }
        size_t rs = last_starter > pos ? last_starter : pos, j = i + l;
        while (j < n) {
            uint32_t c2;
            size_t l2 = (size_t)nl_utf8_next(p + j, n - j, &c2);
            if (!is_unsafe(form, c2)) break;
            j += l2;
        }
        if (append(&o, &on, &ocap, s + pos, rs - pos) || normalize_full(form, s + rs, j - rs, &o, &on, &ocap)) {
            free(o);
            return -1;
        }
        pos = i = j;
    }
    if (append(&o, &on, &ocap, s + pos, n - pos)) { free(o); return -1; }
    o[on] = 0;
    *out = o;
    *out_n = on;
    return 0;
}
