/* vocab.c — the tokenizer's tables: vocabulary pool (id → string), string → id hash map,
 * uint64-keyed map (merge ranks, trie edges), byte trie for leftmost-longest matching,
 * growable buffers and the per-call scratch arena. Checked by tests/test_tokenizer.c. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- buffers ----------------------------------------------------------------------- */
int nl_tk_buf_reserve(tk_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->n + extra + 1) nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np) return -1;
    b->p = np;
    b->cap = nc;
    return 0;
}

int nl_tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (nl_tk_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int nl_tk_ids_push(tk_ids *v, int32_t id) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        int32_t *np = realloc(v->p, nc * sizeof *np);
        if (!np) return -1;
        v->p = np;
        v->cap = nc;
    }
    v->p[v->n++] = id;
    return 0;
}

/* ---- vocabulary ---------------------------------------------------------------------- */
int nl_tk_vocab_init(tk_vocab *v, int n) {
    memset(v, 0, sizeof *v);
    v->n = n;
    size_t m = n > 0 ? (size_t)n : 1;
    v->off = malloc(m * sizeof *v->off);
    v->len = calloc(m, sizeof *v->len);
    v->type = calloc(m, 1);
    if (!v->off || !v->len || !v->type) return -1;
    for (int i = 0; i < n; i++) v->off[i] = UINT32_MAX;
    return 0;
}

void nl_tk_vocab_release(tk_vocab *v) {
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->type);
    memset(v, 0, sizeof *v);
}

int nl_tk_vocab_set(tk_vocab *v, int id, const char *s, size_t n) {
    if (v->pool_n + n + 1 > v->pool_cap) {
        size_t nc = v->pool_cap ? v->pool_cap * 2 : 1 << 16;
        while (nc < v->pool_n + n + 1) nc *= 2;
        if (nc > UINT32_MAX) return -1;
        char *np = realloc(v->pool, nc);
        if (!np) return -1;
        v->pool = np;
        v->pool_cap = nc;
    }
    memcpy(v->pool + v->pool_n, s, n);
    v->pool[v->pool_n + n] = 0;
    v->off[id] = (uint32_t)v->pool_n;
    v->len[id] = (uint32_t)n;
    v->pool_n += n + 1;
    return 0;
}

/* ---- string map ------------------------------------------------------------------------ */
static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* tables are kept at most 70% full */
static size_t table_size(size_t expect) { return pow2_at_least(expect + expect * 3 / 7 + 16); }

int nl_tk_strmap_init(tk_strmap *m, const tk_vocab *v, size_t expect) {
    memset(m, 0, sizeof *m);
    m->v = v;
    size_t cap = table_size(expect);
    m->slot = calloc(cap, sizeof *m->slot);
    if (!m->slot) return -1;
    m->mask = cap - 1;
    return 0;
}

void nl_tk_strmap_release(tk_strmap *m) {
    free(m->slot);
    m->slot = NULL;
    m->count = 0;
}

static int strmap_grow(tk_strmap *m) {
    size_t cap = (m->mask + 1) * 2;
    tk_strslot *ns = calloc(cap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i <= m->mask; i++) {
        tk_strslot e = m->slot[i];
        if (!e.id1) continue;
        uint64_t j = tk_hash(m->v->pool + e.off, e.len) & (cap - 1);
        while (ns[j].id1) j = (j + 1) & (cap - 1);
        ns[j] = e;
    }
    free(m->slot);
    m->slot = ns;
    m->mask = cap - 1;
    return 0;
}

int nl_tk_strmap_add(tk_strmap *m, int id) {
    if ((m->count + 1) * 10 > (m->mask + 1) * 7 && strmap_grow(m)) return -1;
    size_t n;
    const char *s = tk_piece(m->v, id, &n);
    uint64_t h = tk_hash(s, n);
    uint64_t i = h & m->mask;
    uint32_t tag = (uint32_t)(h >> 32);
    for (;;) {
        tk_strslot *e = &m->slot[i];
        if (!e->id1) break;
        if (e->tag == tag && e->len == n && !memcmp(m->v->pool + e->off, s, n)) return 1;
        i = (i + 1) & m->mask;
    }
    m->slot[i].tag = tag;
    m->slot[i].id1 = (uint32_t)id + 1;
    m->slot[i].off = m->v->off[id];
    m->slot[i].len = (uint32_t)n;
    m->count++;
    return 0;
}

int nl_tk_strmap_get(const tk_strmap *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint64_t h = tk_hash(s, n);
    uint64_t i = h & m->mask;
    uint32_t tag = (uint32_t)(h >> 32);
    const char *pool = m->v->pool;
    for (;;) {
        const tk_strslot *e = &m->slot[i];
        if (!e->id1) return -1;
        if (e->tag == tag && e->len == n && !memcmp(pool + e->off, s, n)) return (int)e->id1 - 1;
        i = (i + 1) & m->mask;
    }
}

/* ---- uint64 map ------------------------------------------------------------------------ */
int nl_tk_u64map_init(tk_u64map *m, size_t expect) {
    memset(m, 0, sizeof *m);
    size_t cap = table_size(expect);
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    for (size_t i = 0; i < cap; i++) m->slot[i].key = UINT64_MAX;
    m->mask = cap - 1;
    return 0;
}

void nl_tk_u64map_release(tk_u64map *m) {
    free(m->slot);
    memset(m, 0, sizeof *m);
}

static int u64map_grow(tk_u64map *m) {
    size_t cap = (m->mask + 1) * 2;
    tk_u64slot *ns = malloc(cap * sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < cap; i++) ns[i].key = UINT64_MAX;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slot[i].key == UINT64_MAX) continue;
        uint64_t j = tk_mix64(m->slot[i].key) & (cap - 1);
        while (ns[j].key != UINT64_MAX) j = (j + 1) & (cap - 1);
        ns[j] = m->slot[i];
    }
    free(m->slot);
    m->slot = ns;
    m->mask = cap - 1;
    return 0;
}

int nl_tk_u64map_put(tk_u64map *m, uint64_t key, uint32_t a, uint32_t b) {
    if ((m->count + 1) * 10 > (m->mask + 1) * 7 && u64map_grow(m)) return -1;
    uint64_t i = tk_mix64(key) & m->mask;
    while (m->slot[i].key != UINT64_MAX) {
        if (m->slot[i].key == key) return 1;
        i = (i + 1) & m->mask;
    }
    m->slot[i].key = key;
    m->slot[i].a = a;
    m->slot[i].b = b;
    m->count++;
    return 0;
}

/* ---- trie -------------------------------------------------------------------------------- */
int nl_tk_trie_init(tk_trie *t) {
    memset(t, 0, sizeof *t);
    if (nl_tk_u64map_init(&t->edges, 64)) return -1;
    t->cap = 64;
    t->value = malloc((size_t)t->cap * sizeof *t->value);
    if (!t->value) return -1;
    t->n_nodes = 1;
    t->value[0] = -1;
    return 0;
}

void nl_tk_trie_release(tk_trie *t) {
    nl_tk_u64map_release(&t->edges);
    free(t->value);
    memset(t, 0, sizeof *t);
}

int nl_tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t value) {
    uint32_t node = 0;
    if (n) t->first[(unsigned char)s[0]] |= 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = ((uint64_t)node << 8) | (unsigned char)s[i];
        const tk_u64slot *e = tk_u64map_get(&t->edges, key);
        if (e) { node = e->a; continue; }
        if (t->n_nodes == t->cap) {
            int nc = t->cap * 2;
            int32_t *nv = realloc(t->value, (size_t)nc * sizeof *nv);
            if (!nv) return -1;
            t->value = nv;
            t->cap = nc;
        }
        uint32_t child = (uint32_t)t->n_nodes++;
        t->value[child] = -1;
        if (nl_tk_u64map_put(&t->edges, key, child, 0) < 0) return -1;
        node = child;
    }
    if (t->value[node] < 0) t->value[node] = value; /* the first string added wins */
    return 0;
}

/* ---- scratch ------------------------------------------------------------------------------ */
char *nl_tk_arena_alloc(tk_scratch *s, size_t n) {
    tk_chunk *c = s->arena;
    if (!c || c->cap - c->n < n) {
        size_t cap = n > 65536 ? n : 65536;
        tk_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->next = c;
        nc->n = 0;
        nc->cap = cap;
        s->arena = c = nc;
    }
    char *p = c->data + c->n;
    c->n += n;
    return p;
}

void nl_tk_scratch_release(tk_scratch *s) {
    free(s->sym);
    free(s->heap);
    free(s->spans[0].p);
    free(s->spans[1].p);
    for (tk_chunk *c = s->arena, *nx; c; c = nx) {
        nx = c->next;
        free(c);
    }
    if (s->md) pcre2_match_data_free(s->md);
    free(s->unused);
    free(s->tmp.p);
    free(s->seg);
    memset(s, 0, sizeof *s);
}
