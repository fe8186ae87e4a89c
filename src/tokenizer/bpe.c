/* bpe.c — the BPE merge engine for both families (see tok_internal.h).
 *
 * A word is a doubly linked list of symbols (spans of the input) and a binary min-heap of
 * candidate merges keyed (priority, left position): each step pops the best pair, checks it is
 * still current (both symbols alive, adjacent, same sizes as when pushed), merges, and pushes
 * the two new neighbour pairs — O(n log n) per word instead of rescanning.
 *   ranks  (Hugging Face): priority = merge rank (lower first), ties to the leftmost pair; the
 *          initial symbols are characters (bytes for byte-level), with continuing_subword_prefix /
 *          end_of_word_suffix, byte fallback and fuse_unk as tokenizers' BPE::merge_word does.
 *   scores (SentencePiece): priority = score of the concatenated piece (higher first), ties to
 *          the leftmost pair; USER_DEFINED pieces are frozen initial symbols; UNUSED pieces are
 *          resegmented into the pair that produced them; unknown pieces become <0xXX> bytes with
 *          byte_fallback, else one <unk> per run (bpe_model.cc + sentencepiece_processor.cc).
 * Words of the ranks mode go through a per-thread cache (direct-mapped, keyed by the
 * tokenizer's generation number and the word; allocated on a thread's first use, freed when the
 * thread ends): text repeats its words, and a hit skips the merge-table lookups.
 * Checked by tests/test_tokenizer.c and tests/tokenizer_conformance.sh. */
#include <pthread.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

static int reserve_syms(tk_scratch *s, size_t n) {
    if (n <= s->sym_cap) return 0;
    size_t c = s->sym_cap ? s->sym_cap : 256;
    while (c < n) c *= 2;
    tk_sym *p = realloc(s->sym, c * sizeof *p);
    if (!p) return -1;
    s->sym = p;
    s->sym_cap = c;
    return 0;
}

static int heap_push(tk_scratch *s, const tk_ment *e) {
    if (s->heap_n == s->heap_cap) {
        size_t c = s->heap_cap ? s->heap_cap * 2 : 256;
        tk_ment *p = realloc(s->heap, c * sizeof *p);
        if (!p) return -1;
        s->heap = p;
        s->heap_cap = c;
    }
    tk_ment *h = s->heap;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (h[par].key <= e->key) break;
        h[i] = h[par];
        i = par;
    }
    h[i] = *e;
    return 0;
}

static void heap_pop(tk_scratch *s, tk_ment *top) {
    tk_ment *h = s->heap;
    *top = h[0];
    tk_ment last = h[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    if (!n) return;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].key < h[c].key) c++;
        if (h[c].key >= last.key) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
}

static int add_sym(tk_scratch *s, int *nsym, int32_t id, uint32_t start, uint32_t len, int freeze) {
    tk_sym *y = &s->sym[*nsym];
    y->id = id;
    y->start = start;
    y->len = len;
    y->freeze = (uint8_t)freeze;
    y->prev = *nsym - 1;
    y->next = -1;
    if (*nsym > 0) s->sym[*nsym - 1].next = *nsym;
    (*nsym)++;
    return 0;
}

/* Merges symbol r into l (its right neighbour). */
static void merge_into(tk_scratch *s, int l, int r, int32_t new_id) {
    tk_sym *sy = s->sym;
    sy[l].id = new_id;
    sy[l].len += sy[r].len;
    sy[l].next = sy[r].next;
    if (sy[r].next >= 0) sy[sy[r].next].prev = l;
    sy[r].len = 0;
}

static inline int current(const tk_sym *sy, const tk_ment *e) {
    const tk_sym *l = &sy[e->left];
    return l->len && l->next == e->right && sy[e->right].len && l->len + sy[e->right].len == e->size;
}

/* ---- per-thread word cache --------------------------------------------------------------- */
enum { CACHE_BITS = 14, CACHE_WORD = 22, CACHE_IDS = 8 };
typedef struct {
    uint64_t tag;
    uint32_t gen;
    uint8_t wlen, nids;
    char word[CACHE_WORD];
    int32_t ids[CACHE_IDS];
} cache_entry;

static _Thread_local cache_entry *tls_cache;
static _Thread_local int tls_cache_failed;
static pthread_key_t cache_key; /* frees a thread's cache when the thread ends */
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static void cache_key_init(void) { cache_key_ok = pthread_key_create(&cache_key, free) == 0; }

static cache_entry *cache_slot(const nl_tokenizer *t, const char *w, size_t n, uint64_t *tag) {
    if (!tls_cache) {
        if (tls_cache_failed) return NULL;
        pthread_once(&cache_once, cache_key_init);
        tls_cache = cache_key_ok ? calloc((size_t)1 << CACHE_BITS, sizeof *tls_cache) : NULL;
        if (!tls_cache || pthread_setspecific(cache_key, tls_cache)) {
            free(tls_cache);
            tls_cache = NULL;
            tls_cache_failed = 1;
            return NULL;
        }
    }
    *tag = tk_hash(w, n) ^ ((uint64_t)t->gen * 0x9E3779B97F4A7C15ull);
    return &tls_cache[*tag & (((uint64_t)1 << CACHE_BITS) - 1)];
}

/* ---- Hugging Face ranks ------------------------------------------------------------------- */
static int push_rank(const nl_tokenizer *t, tk_scratch *s, int l, int r) {
    const tk_sym *sy = s->sym;
    const tk_u64slot *m = tk_u64map_get(&t->merges, ((uint64_t)(uint32_t)sy[l].id << 32) | (uint32_t)sy[r].id);
    if (!m) return 0;
    tk_ment e = {((uint64_t)m->a << 32) | (uint32_t)l, l, r, (int32_t)m->b, sy[l].len + sy[r].len};
    return heap_push(s, &e);
}

static int bpe_ranks(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out);

int nl_tk_bpe_ranks(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out) {
    if (n == 0) return 0;
    if (n > CACHE_WORD) return bpe_ranks(t, s, w, n, out);
    uint64_t tag;
    cache_entry *e = cache_slot(t, w, n, &tag);
    if (!e) return bpe_ranks(t, s, w, n, out);
    if (e->tag == tag && e->gen == t->gen && e->wlen == n && !memcmp(e->word, w, n)) {
        for (int k = 0; k < e->nids; k++)
            if (nl_tk_ids_push(out, e->ids[k])) return -1;
        return 0;
    }
    size_t before = out->n;
    if (bpe_ranks(t, s, w, n, out)) return -1;
    size_t m = out->n - before;
    if (m <= CACHE_IDS) {
        e->tag = tag;
        e->gen = t->gen;
        e->wlen = (uint8_t)n;
        e->nids = (uint8_t)m;
        memcpy(e->word, w, n);
        if (m) memcpy(e->ids, out->p + before, m * sizeof(int32_t)); /* m == 0: out->p may be NULL */
    }
    return 0;
}

static int bpe_ranks(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out) {
    if (t->ignore_merges) {
        int id = nl_tk_strmap_get(&t->vmap, w, n);
        if (id >= 0) return nl_tk_ids_push(out, id);
    }
    if (reserve_syms(s, n)) return -1;
    int nsym = 0;
    int32_t unk = -1;   /* pending unknown symbol: start, length */
    uint32_t unk_start = 0, unk_len = 0;
    const unsigned char *u = (const unsigned char *)w;
    int plain = !t->cs_prefix && !t->eow_suffix;
    for (size_t i = 0; i < n;) {
        size_t cl;
        int32_t id;
        uint32_t cp = 0;
        if (t->byte_level) cl = 1;
        else cl = (size_t)nl_utf8_next(u + i, n - i, &cp);
        const char *str = w + i;
        size_t strn = cl;
        if (plain) {
            if (t->byte_level) id = t->byte_ids[u[i]];
            else if (cp < 0x10000 && t->bmp_ids) id = t->bmp_ids[cp];
            else id = nl_tk_strmap_get(&t->vmap, str, strn);
        } else {
            s->tmp.n = 0;
            if (i > 0 && t->cs_prefix && nl_tk_buf_put(&s->tmp, t->cs_prefix, t->cs_prefix_n)) return -1;
            if (nl_tk_buf_put(&s->tmp, w + i, cl)) return -1;
            if (i + cl == n && t->eow_suffix && nl_tk_buf_put(&s->tmp, t->eow_suffix, t->eow_suffix_n)) return -1;
            str = s->tmp.p;
            strn = s->tmp.n;
            id = nl_tk_strmap_get(&t->vmap, str, strn);
        }
        if (id >= 0) {
            if (unk >= 0) { add_sym(s, &nsym, unk, unk_start, unk_len, 0); unk = -1; }
            add_sym(s, &nsym, id, (uint32_t)i, (uint32_t)cl, 0);
        } else {
            int done = 0;
            if (t->byte_fallback) {
                /* a lone surrogate (ED A0..BF xx, see nl_encode_opts) falls back to U+FFFD's bytes,
                 * as transformers.js's TextEncoder writes it */
                const char *fb = str;
                if (strn == 3 && (unsigned char)str[0] == 0xED && (unsigned char)str[1] >= 0xA0) fb = "\xEF\xBF\xBD";
                int ok = 1;
                for (size_t k = 0; k < strn; k++)
                    if (t->byte_ids[(unsigned char)fb[k]] < 0) ok = 0;
                if (ok) {
                    if (unk >= 0) { add_sym(s, &nsym, unk, unk_start, unk_len, 0); unk = -1; }
                    if (reserve_syms(s, (size_t)nsym + strn + (n - i))) return -1;
                    for (size_t k = 0; k < strn; k++) add_sym(s, &nsym, t->byte_ids[(unsigned char)fb[k]], (uint32_t)i, 1, 0);
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk) unk_len++;
                else {
                    if (unk >= 0) add_sym(s, &nsym, unk, unk_start, unk_len, 0);
                    unk = t->unk_id;
                    unk_start = (uint32_t)i;
                    unk_len = (uint32_t)cl;
                }
            }
        }
        i += cl;
    }
    if (unk >= 0) add_sym(s, &nsym, unk, unk_start, unk_len, 0);
    if (nsym == 0) return 0;
    /* ranks mode never looks at the spans: every initial symbol counts as length 1, so the
     * lengths only serve the staleness test of current() */
    for (int k = 0; k < nsym; k++) s->sym[k].len = 1;
    s->heap_n = 0;
    for (int k = 0; k + 1 < nsym; k++)
        if (push_rank(t, s, k, k + 1)) return -1;
    while (s->heap_n) {
        tk_ment e;
        heap_pop(s, &e);
        if (!current(s->sym, &e)) continue;
        merge_into(s, e.left, e.right, e.new_id);
        int l = e.left;
        if (s->sym[l].prev >= 0 && push_rank(t, s, s->sym[l].prev, l)) return -1;
        if (s->sym[l].next >= 0 && push_rank(t, s, l, s->sym[l].next)) return -1;
    }
    for (int k = 0; k >= 0; k = s->sym[k].next)
        if (nl_tk_ids_push(out, s->sym[k].id)) return -1;
    return 0;
}

/* ---- SentencePiece scores ------------------------------------------------------------------- */
static inline uint32_t float_order(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static int push_score(const nl_tokenizer *t, tk_scratch *s, const char *w, int l, int r) {
    const tk_sym *sy = s->sym;
    if (sy[l].freeze || sy[r].freeze) return 0;
    uint32_t size = sy[l].len + sy[r].len;
    int id = nl_tk_strmap_get(&t->vmap, w + sy[l].start, size);
    if (id < 0) return 0;
    tk_ment e = {((uint64_t)~float_order(t->v.score[id]) << 32) | (uint32_t)l, l, r, id, size};
    if (t->v.type[id] == TK_UNUSED) { /* remember how it was made, for resegmentation */
        size_t k = 0;
        while (k < s->n_unused && s->unused[k].id != id) k++;
        if (k == s->n_unused) {
            if (s->n_unused == s->unused_cap) {
                size_t c = s->unused_cap ? s->unused_cap * 2 : 16;
                void *p = realloc(s->unused, c * sizeof *s->unused);
                if (!p) return -1;
                s->unused = p;
                s->unused_cap = c;
            }
            s->n_unused++;
        }
        s->unused[k].id = id;
        s->unused[k].ls = sy[l].start;
        s->unused[k].ll = sy[l].len;
        s->unused[k].rs = sy[r].start;
        s->unused[k].rl = sy[r].len;
    }
    return heap_push(s, &e);
}

static int piece_to_id(const nl_tokenizer *t, const char *p, size_t n) {
    int id = nl_tk_strmap_get(&t->rmap, p, n);
    if (id < 0) id = nl_tk_strmap_get(&t->vmap, p, n);
    return id < 0 ? t->unk_id : id;
}

static int emit_piece(const nl_tokenizer *t, tk_scratch *s, const char *w, uint32_t start, uint32_t len, int *prev_unk,
                      tk_ids *out, int depth) {
    int id = piece_to_id(t, w + start, len);
    if (id >= 0 && t->v.type[id] == TK_UNUSED && depth < 64) {
        for (size_t k = 0; k < s->n_unused; k++)
            if (s->unused[k].id == id) {
                uint32_t ls = s->unused[k].ls, ll = s->unused[k].ll, rs = s->unused[k].rs, rl = s->unused[k].rl;
                if (emit_piece(t, s, w, ls, ll, prev_unk, out, depth + 1)) return -1;
                return emit_piece(t, s, w, rs, rl, prev_unk, out, depth + 1);
            }
    }
    int is_unk = id >= 0 && t->v.type[id] == TK_UNKNOWN;
    if (is_unk && t->byte_fallback) {
        for (uint32_t k = 0; k < len; k++) {
            int b = t->byte_ids[(unsigned char)w[start + k]];
            if (nl_tk_ids_push(out, b >= 0 ? b : t->unk_id)) return -1;
        }
    } else if (!(is_unk && *prev_unk)) {
        if (nl_tk_ids_push(out, id)) return -1;
    }
    *prev_unk = is_unk;
    return 0;
}

int nl_tk_bpe_scores(const nl_tokenizer *t, tk_scratch *s, const char *w, size_t n, tk_ids *out) {
    if (n == 0) return 0;
    if (reserve_syms(s, n)) return -1;
    int nsym = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 0;
        int freeze = 0;
        if (t->has_sp_user) { /* longest USER_DEFINED piece at i */
            uint32_t node = 0;
            for (size_t j = i; j < n; j++) {
                const tk_u64slot *e = tk_u64map_get(&t->sp_user.edges, ((uint64_t)node << 8) | (unsigned char)w[j]);
                if (!e) break;
                node = e->a;
                if (t->sp_user.value[node] >= 0) len = j + 1 - i;
            }
            freeze = len > 0;
        }
        if (!len) {
            len = (size_t)nl_utf8_len((unsigned char)w[i]);
            if (len > n - i) len = n - i;
        }
        add_sym(s, &nsym, -1, (uint32_t)i, (uint32_t)len, freeze);
        i += len;
    }
    s->heap_n = 0;
    s->n_unused = 0;
    for (int k = 0; k + 1 < nsym; k++)
        if (push_score(t, s, w, k, k + 1)) return -1;
    while (s->heap_n) {
        tk_ment e;
        heap_pop(s, &e);
        if (!current(s->sym, &e)) continue;
        merge_into(s, e.left, e.right, e.new_id);
        int l = e.left;
        if (s->sym[l].prev >= 0 && push_score(t, s, w, s->sym[l].prev, l)) return -1;
        if (s->sym[l].next >= 0 && push_score(t, s, w, l, s->sym[l].next)) return -1;
    }
    int prev_unk = 0;
    for (int k = 0; k >= 0; k = s->sym[k].next)
        if (emit_piece(t, s, w, s->sym[k].start, s->sym[k].len, &prev_unk, out, 0)) return -1;
    return 0;
}
