/* unicode.h — UTF-8 helpers and Unicode normalization (NFC, NFD, NFKC, NFKD) for the tokenizers.
 * Internal to src/tokenizer/. The data tables are generated (unicode_tables.c, see
 * gen_unicode_tables.py); the algorithms (full decomposition, canonical ordering, canonical
 * composition with algorithmic Hangul) are in unicode.c. Checked by tests/test_tokenizer.c. */
#ifndef NEURONLAB_TOKENIZER_UNICODE_H
#define NEURONLAB_TOKENIZER_UNICODE_H

#include <stddef.h>
#include <stdint.h>

typedef struct { uint32_t lo, hi; } nl_uc_range;
typedef struct { uint32_t lo, hi, ccc; } nl_uc_range8;
typedef struct { uint32_t cp, off, n; } nl_uc_decomp;
typedef struct { uint32_t a, b, c; } nl_uc_pair;

extern const char nl_uc_version[];
extern const nl_uc_range8 nl_uc_ccc[];
extern const int nl_uc_n_ccc;
extern const nl_uc_decomp nl_uc_canon[], nl_uc_compat[];
extern const int nl_uc_canon_n, nl_uc_compat_n;
extern const uint32_t *const nl_uc_canon_seq, *const nl_uc_compat_seq;
extern const nl_uc_pair nl_uc_compose[];
extern const int nl_uc_n_compose;
extern const nl_uc_range nl_uc_unsafe_nfc[], nl_uc_unsafe_nfd[], nl_uc_unsafe_nfkc[], nl_uc_unsafe_nfkd[];
extern const int nl_uc_n_unsafe_nfc, nl_uc_n_unsafe_nfd, nl_uc_n_unsafe_nfkc, nl_uc_n_unsafe_nfkd;

enum { NL_UC_NFC, NL_UC_NFD, NL_UC_NFKC, NL_UC_NFKD };

/* Decodes one character of valid UTF-8 at s (n > 0 bytes available); returns its length
 * (1 for a stray byte, which then stands for itself). */
static inline int nl_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80 || n < 2) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (c < 0xF0 || n < 4) {
        if (n < 3) { *cp = c; return 1; }
        *cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

/* Length of the UTF-8 character starting with byte c (SentencePiece's OneCharLen). */
static inline int nl_utf8_len(unsigned char c) {
    static const unsigned char t[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return t[c >> 4];
}

/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
static inline int nl_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = 0xC0 | (cp >> 6); o[1] = 0x80 | (cp & 0x3F); return 2; }
    if (cp < 0x10000) { o[0] = 0xE0 | (cp >> 12); o[1] = 0x80 | ((cp >> 6) & 0x3F); o[2] = 0x80 | (cp & 0x3F); return 3; }
    o[0] = 0xF0 | (cp >> 18); o[1] = 0x80 | ((cp >> 12) & 0x3F); o[2] = 0x80 | ((cp >> 6) & 0x3F); o[3] = 0x80 | (cp & 0x3F);
    return 4;
}

/* JavaScript's whitespace set (the \s of ECMAScript regular expressions, String.trim):
 * TAB LF VT FF CR SPACE U+00A0 U+1680 U+2000–U+200A U+2028 U+2029 U+202F U+205F U+3000 U+FEFF. */
static inline int nl_uc_is_space(uint32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
    return c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

/* Canonical combining class of cp. */
int nl_uc_ccc_of(uint32_t cp);

/* Returns 1 when s (valid UTF-8) is certainly already in the form (quick check). */
int nl_uc_is_normalized(int form, const char *s, size_t n);

/* Normalizes valid UTF-8 s into *out (malloc'd, NUL-terminated), *out_n bytes.
 * Returns 0, or -1 when out of memory. */
int nl_uc_normalize(int form, const char *s, size_t n, char **out, size_t *out_n);

#endif
