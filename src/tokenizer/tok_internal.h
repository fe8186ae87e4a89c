/* tok_internal.h — the insides of nl_tokenizer, shared by the files of src/tokenizer/.
 *
 * One tokenizer = added tokens + normalizer + pre-tokenizer + model + post-processor + decoder
 * (the Hugging Face pipeline). Two model families run on one engine (bpe.c):
 *   TK_RANKS   Hugging Face BPE: explicit merges, lowest rank first (tokenizer.json, vocab.json)
 *   TK_SCORES  SentencePiece BPE: merge the adjacent pair whose concatenation is a piece with the
 *              highest score (tokenizer.model, llama2.c tokenizer.bin)
 * Byte-level tokenizers (a ByteLevel pre-tokenizer) keep their vocabulary as raw bytes: every
 * token string is decoded through GPT-2's byte↔unicode table at load, so the model works on the
 * text's own bytes and decoding is concatenation.
 * Everything here is immutable after open; encode/decode use per-call scratch only. */
#ifndef NEURONLAB_TOKENIZER_INTERNAL_H
#define NEURONLAB_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/tokenizer.h"

/* ---- growable buffers ------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } tk_buf;
typedef struct { int32_t *p; size_t n, cap; } tk_ids;

int nl_tk_buf_reserve(tk_buf *b, size_t extra); /* 0, or -1 out of memory */
int nl_tk_buf_put(tk_buf *b, const void *s, size_t n);
int nl_tk_ids_push(tk_ids *v, int32_t id);

/* ---- hashing ------------------------------------------------------------------------ */
static inline uint64_t tk_hash(const void *data, size_t n) {
    const unsigned char *s = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    return h;
}

static inline uint64_t tk_mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* ---- vocabulary: ids → strings, in one pool ---------------------------------------- */
enum { /* piece types (SentencePiece's, plus the Hugging Face kinds) */
    TK_NORMAL = 1, TK_UNKNOWN = 2, TK_CONTROL = 3, TK_USER = 4, TK_UNUSED = 5, TK_BYTE = 6,
    TK_ADDED = 7,   /* Hugging Face added token, not special */
    TK_SPECIAL = 8, /* Hugging Face added token, special */
};

typedef struct {
    int n;            /* ids are 0 … n-1; a hole has off == UINT32_MAX */
    char *pool;
    size_t pool_n, pool_cap;
    uint32_t *off, *len;
    float *score;     /* TK_SCORES only */
    uint8_t *type;
} tk_vocab;

int nl_tk_vocab_init(tk_vocab *v, int n); /* all holes; -1 out of memory */
void nl_tk_vocab_release(tk_vocab *v);
int nl_tk_vocab_set(tk_vocab *v, int id, const char *s, size_t n); /* -1 out of memory */
static inline const char *tk_piece(const tk_vocab *v, int id, size_t *n) {
    if (id < 0 || id >= v->n || v->off[id] == UINT32_MAX) { *n = 0; return NULL; }
    *n = v->len[id];
    return v->pool + v->off[id];
}

/* string → id over a vocabulary's strings (open addressing, linear probing; a slot holds the
 * hash's high bits and the string's place in the pool, so a probe touches the pool only on a
 * real candidate) */
typedef struct { uint32_t tag, id1, off, len; } tk_strslot; /* id1 = id + 1, 0 = empty */
typedef struct {
    tk_strslot *slot;
    uint64_t mask;
    size_t count;
    const tk_vocab *v;
} tk_strmap;

int nl_tk_strmap_init(tk_strmap *m, const tk_vocab *v, size_t expect);
void nl_tk_strmap_release(tk_strmap *m);
/* Adds id under its vocabulary string; returns 0, 1 when the string is already there
 * (the map keeps the first id), -1 out of memory. */
int nl_tk_strmap_add(tk_strmap *m, int id);
int nl_tk_strmap_get(const tk_strmap *m, const char *s, size_t n); /* -1 when absent */

/* (uint64 key) → two uint32 values (merges: pair → rank, new id; trie edges) */
typedef struct { uint64_t key; uint32_t a, b; } tk_u64slot;
typedef struct {
    tk_u64slot *slot;
    uint64_t mask;
    size_t count;
} tk_u64map;

int nl_tk_u64map_init(tk_u64map *m, size_t expect);
void nl_tk_u64map_release(tk_u64map *m);
int nl_tk_u64map_put(tk_u64map *m, uint64_t key, uint32_t a, uint32_t b); /* 1 when the key was there (kept) */
static inline const tk_u64slot *tk_u64map_get(const tk_u64map *m, uint64_t key) {
    if (!m->slot) return NULL;
    uint64_t i = tk_mix64(key) & m->mask;
    for (;;) {
        const tk_u64slot *s = &m->slot[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & m->mask;
    }
}

/* ---- byte-at-a-time trie for leftmost-longest matching of a string set ---------------- */
typedef struct {
    tk_u64map edges;    /* (node << 8 | byte) → child */
    int32_t *value;     /* per node: index of the string ending here, or -1 */
    int n_nodes, cap;
    uint8_t first[256]; /* bit 0: some string starts with this byte; bit 1: some non-special one */
} tk_trie;

int nl_tk_trie_init(tk_trie *t);
void nl_tk_trie_release(tk_trie *t);
int nl_tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t value);

/* ---- regular expressions (PCRE2, JavaScript semantics for \s \S \d \w) --------------- */
typedef struct {
    pcre2_code *code;
    int jit;
} tk_regex;

/* Compiles a Hugging Face / JavaScript pattern (literal when is_literal). On failure returns -1
 * and writes PCRE2's message into err. */
int nl_tk_regex_compile(tk_regex *re, const char *pat, size_t n, int is_literal, char *err, size_t errcap);
void nl_tk_regex_release(tk_regex *re);

/* ---- added tokens -------------------------------------------------------------------- */
typedef struct {
    int32_t id;
    char *content;
    size_t n;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* ---- normalizers, pre-tokenizers, decoders (trees of nodes) ------------------------------ */
enum { NM_SEQUENCE, NM_PREPEND, NM_REPLACE, NM_UNICODE, NM_STRIP, NM_STRIP_ACCENTS, NM_PRECOMPILED };

typedef struct tk_charsmap { /* SentencePiece precompiled charsmap: a Darts double-array trie */
    const uint32_t *units;
    size_t n_units;
    const char *normalized;
    size_t normalized_n;
    char *blob; /* owned copy */
} tk_charsmap;

typedef struct tk_norm {
    int kind;
    int form;               /* NM_UNICODE: NL_UC_* */
    char *s, *repl;         /* PREPEND: s; REPLACE: pattern s (literal) or re, replacement repl */
    size_t sn, repln;
    tk_regex re;
    int left, right;        /* STRIP */
    tk_charsmap cm;         /* PRECOMPILED */
    struct tk_norm *items;  /* SEQUENCE */
    int n_items;
} tk_norm;

enum { PT_SEQUENCE, PT_SPLIT, PT_BYTELEVEL, PT_METASPACE };
enum { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };

typedef struct tk_pretok {
    int kind;
    tk_regex re;            /* SPLIT, BYTELEVEL (use_regex), METASPACE (split on the replacement) */
    int has_re;
    int behavior, invert;   /* SPLIT */
    int add_prefix_space;   /* BYTELEVEL */
    char repl[8];           /* METASPACE */
    int repl_n, prepend_scheme, split;
    struct tk_pretok *items;
    int n_items;
} tk_pretok;

enum { DC_SEQUENCE, DC_BYTELEVEL, DC_REPLACE, DC_BYTEFALLBACK, DC_FUSE, DC_STRIP, DC_METASPACE, DC_BPE };

typedef struct tk_dec {
    int kind;
    char *pat, *content;    /* REPLACE: literal pattern → content; STRIP: content (one char); BPE: suffix in pat */
    size_t patn, contentn;
    int start, stop;        /* STRIP */
    char repl[8];           /* METASPACE */
    int repl_n, prepend;
    struct tk_dec *items;
    int n_items;
} tk_dec;

/* ---- the tokenizer ---------------------------------------------------------------------- */
enum { TK_RANKS = 1, TK_SCORES = 2 };

struct nl_tokenizer {
    char *path;
    uint32_t gen;           /* unique per opened tokenizer: the key of the per-thread word cache */
    int family;
    tk_vocab v;
    tk_strmap vmap;         /* model strings → id (SentencePiece: NORMAL, USER_DEFINED, UNUSED pieces) */
    tk_strmap rmap;         /* SentencePiece reserved pieces (CONTROL, UNKNOWN, BYTE) */
    tk_u64map merges;       /* TK_RANKS: (left id << 32 | right id) → (rank, merged id) */
    int32_t byte_ids[256];  /* byte-level: raw byte → id; otherwise <0xXX> byte-fallback ids (-1 none) */
    int32_t *bmp_ids;       /* TK_RANKS, not byte-level: BMP code point → id of that one character */
    int byte_level, byte_fallback, fuse_unk, ignore_merges, has_all_bytes;
    char warning[320];  /* "" or one line about a usable but doubtful vocabulary (nl_tokenizer_warning) */
    char *cs_prefix, *eow_suffix; /* continuing_subword_prefix, end_of_word_suffix (NULL: none) */
    size_t cs_prefix_n, eow_suffix_n;
    int unk_id, bos_id, eos_id;

    tk_added *added;
    int n_added;
    tk_trie trie_raw, trie_norm;  /* added tokens matched in raw text / in normalized text */
    int has_raw, has_norm;

    tk_norm *norm;          /* NULL: none */
    tk_pretok *pretok;      /* NULL: none */
    int32_t *tmpl;          /* post-processor template, -1 = the sequence; NULL: none */
    int n_tmpl;
    tk_dec *dec;            /* NULL: none */
    int dummy_prefix;       /* decoding drops the first token's leading space (SentencePiece-style) */

    /* SentencePiece normalizer (TK_SCORES) */
    int sp_add_dummy_prefix, sp_remove_extra_ws, sp_escape_ws, sp_ws_suffix;
    tk_charsmap sp_cm;
    tk_trie sp_user;        /* USER_DEFINED pieces: matched whole, never merged, never normalized */
    int has_sp_user;
    tk_trie sp_ctrl;        /* CONTROL/UNKNOWN pieces, matched in text only with parse_special */
};

/* ---- per-call scratch -------------------------------------------------------------------- */
typedef struct { int32_t id, prev, next; uint32_t start, len; uint8_t freeze; } tk_sym;
typedef struct { uint64_t key; int32_t left, right, new_id; uint32_t size; } tk_ment;
typedef struct { const char *p; size_t n; int first; } tk_span;
typedef struct { tk_span *p; size_t n, cap; } tk_spans;

typedef struct tk_chunk { struct tk_chunk *next; size_t n, cap; char data[]; } tk_chunk;

typedef struct {
    tk_sym *sym;
    size_t sym_cap;
    tk_ment *heap;
    size_t heap_n, heap_cap;
    tk_spans spans[2];
    tk_chunk *arena;        /* strings made by pre-tokenizers, freed at the end of the call */
    pcre2_match_data *md;
    struct { int32_t id; uint32_t ls, ll, rs, rl; } *unused; /* SentencePiece UNUSED resegmentation */
    size_t n_unused, unused_cap;
    tk_buf tmp;
    struct tk_seg { size_t a, b; int m; } *seg; /* pre-tokenizer split segments */
    size_t seg_n, seg_cap;
} tk_scratch;

void nl_tk_scratch_release(tk_scratch *s);
char *nl_tk_arena_alloc(tk_scratch *s, size_t n); /* NULL out of memory */

/* ---- engine entry points -------------------------------------------------------------- */
/* bpe.c: one pre-token (TK_RANKS) or one normalized text (TK_SCORES) → ids appended to out.
 * Return 0, or -1 out of memory. */
int nl_tk_bpe_ranks(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out);
int nl_tk_bpe_scores(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out);

/* normalizer.c */
int nl_tk_norm_apply(const tk_norm *nm, const char *s, size_t n, char **out, size_t *out_n); /* -1 OOM */
void nl_tk_norm_free(tk_norm *nm);
int nl_tk_charsmap_init(tk_charsmap *cm, const void *blob, size_t n); /* -1 malformed or OOM */
void nl_tk_charsmap_release(tk_charsmap *cm);
/* Longest charsmap rule at s: returns the matched input length (0 none), *rep the replacement. */
size_t nl_tk_charsmap_match(const tk_charsmap *cm, const char *s, size_t n, const char **rep, size_t *repn);

/* pretok.c: splits each span of in into out (spans may point into s->arena). 0 / -1 OOM. */
int nl_tk_pretok_apply(const tk_pretok *pt, tk_scratch *s, const tk_spans *in, tk_spans *out);
void nl_tk_pretok_free(tk_pretok *pt);
int nl_tk_spans_push(tk_spans *v, const char *p, size_t n, int first);
int nl_tk_pretok_has_bytelevel(const tk_pretok *pt);

/* decoder.c */
int nl_tk_decode_tokens(const nl_tokenizer *t, const tk_dec *d, tk_buf *toks, tk_ids *lens, tk_buf *out); /* -1 OOM */
void nl_tk_dec_free(tk_dec *d);

/* GPT-2's byte ↔ unicode table: nl_bytelevel_char, nl_bytelevel_byte (tokenizer.h). */

/* tokenizer.c helpers for the loaders */
nl_tokenizer *nl_tk_new(const char *path);
int nl_tk_finish(nl_ctx *ctx, nl_tokenizer *t); /* builds derived tables (tries, byte ids); nl_status */

/* loaders (tokenizer_json.c, sentencepiece.c, llama2c_vocab.c) */
nl_status nl_tk_load_hf_json(nl_ctx *ctx, const char *path, nl_tokenizer **out);
nl_status nl_tk_load_gpt2(nl_ctx *ctx, const char *vocab_path, const char *merges_path, nl_tokenizer **out);
nl_status nl_tk_load_spm(nl_ctx *ctx, const char *path, nl_tokenizer **out);
nl_status nl_tk_load_llama2c(nl_ctx *ctx, const char *path, nl_tokenizer **out);
/* gguf_vocab.c: the tokenizer in a GGUF file's metadata. A file without one (tokenizer.ggml.model
 * "none" or absent) is an error when required, else *out = NULL. nl_tk_is_gguf: 1 when the file
 * starts with "GGUF". */
nl_status nl_tk_load_gguf(nl_ctx *ctx, const char *path, int required, nl_tokenizer **out);
int nl_tk_is_gguf(const char *path);
/* sentencepiece.c: after t->v (strings, scores, types) and the sp_* flags are set, builds the
 * piece maps, tries, BOS/EOS/UNK ids and the BOS template (bos_piece/eos_piece name them). */
nl_status nl_tk_spm_build(nl_ctx *ctx, nl_tokenizer *t, const char *bos_piece, const char *eos_piece);

/* nl_utf8_valid (tokenizer.h): 1 when s is valid UTF-8. */
/* nl_utf8_repair with choices: per_byte = 1 gives one U+FFFD per invalid byte (SentencePiece's
 * decoder), 0 one per maximal invalid subpart (WHATWG, Python, Rust); sur says what becomes of
 * an encoded surrogate ED A0..BF xx: TK_SUR_INVALID (invalid bytes), TK_SUR_FFFD (one U+FFFD),
 * TK_SUR_KEEP (kept: a lone surrogate, see nl_encode_opts). */
enum { TK_SUR_INVALID, TK_SUR_FFFD, TK_SUR_KEEP };
char *nl_tk_utf8_repair(const char *s, size_t n, int per_byte, int sur, size_t *out_n);
/* 1 when s holds an encoded surrogate (ED A0..BF xx). */
int nl_tk_has_surrogate(const char *s, size_t n);
/* s itself, or (when it holds encoded surrogates) a copy in tmp with each one replaced by
 * U+FFFD, same length: PCRE2 only matches valid UTF-8. */
const char *nl_tk_match_subject(const char *s, size_t n, tk_buf *tmp);

#endif
