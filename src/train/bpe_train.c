/* bpe_train.c — byte-level BPE training (see bpe_train.h); saving hands the vocabulary and the
 * merges to the tokenizer module's tokenizer.json writer.
 *
 * Reading: a JSONL file is read whole and cut into batches of lines; the lines of a batch are
 * parsed (jansson) and pre-tokenized in parallel, each thread counting words in its own hash map;
 * the maps are summed at the end. The pre-tokenizer is the tokenizer module's public splitter
 * (nl_splitter_split: the Split node an opened tokenizer.json runs, PCRE2 with the JavaScript class
 * rewrites), built from nl_bpe_split_pattern, the pattern the written file declares, so training
 * and encoding split text identically. The file itself is written by the tokenizer module
 * (nl_tokenizer_json_write); this module uses the tokenizer only through tokenizer.h.
 *
 * Training (the fast path): every distinct word is an array of token ids, at first its bytes.
 * A pair table maps (left, right) to its count over all word occurrences and to the list of
 * words it was ever seen in (appended, never pruned: a word that no longer holds the pair just
 * yields no change). A max-heap holds (count, pair) entries; counts only fall after a pair is
 * pushed, except in the step that creates its newer token, after which it is (re)pushed — so a
 * popped entry whose count differs from the table is stale and is re-pushed with the current
 * count (lazy invalidation), and the first current entry is the best pair. Merging rewrites only
 * the words on the pair's list, left to right, and applies the pair-count deltas as it goes.
 * Ties: larger count first, then smaller (left id, right id).
 *
 * Why the encoder agrees: merges are applied to every word in rank order, all occurrences left
 * to right; a merge k only creates pairs that contain its new token, whose merges all have ranks
 * above k, so a rank-order encoder (lowest rank first, leftmost first) replays exactly the
 * trainer's steps — provided no merge re-creates an existing token, which is why such pairs are
 * skipped. tests/test_bpe_train.c checks this on real text, and the merges against a plain
 * trainer that recounts every pair at every step.
 * Checked by tests/test_bpe_train.c and tests/bpe_train_conformance.sh. */
#include "neuronlab/bpe_train.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "neuronlab/progress.h"
#include "neuronlab/rng.h"
#include "neuronlab/tokenizer.h"

const char nl_bpe_split_pattern[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *const SPECIAL[NL_BPE_N_SPECIAL] = {"<|bos|>", "<|eos|>"};

/* ---- small containers ------------------------------------------------------------------------ */
typedef struct { char *p; size_t n, cap; } sbuf;      /* growable bytes */
typedef struct { int32_t *p; size_t n, cap; } ibuf;   /* growable ids */

static int sbuf_put(sbuf *b, const void *s, size_t n) { /* 0, -1 out of memory */
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n) c *= 2;
        char *np = realloc(b->p, c);
        if (!np) return -1;
        b->p = np;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int ibuf_push(ibuf *v, int32_t id) { /* 0, -1 out of memory */
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        int32_t *np = realloc(v->p, c * sizeof *np);
        if (!np) return -1;
        v->p = np;
        v->cap = c;
    }
    v->p[v->n++] = id;
    return 0;
}

/* Hash of a byte string: 8 bytes at a time through the core mixer. */
static uint64_t str_hash(const void *data, size_t n) {
    const unsigned char *s = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = nl_mix64(h ^ w);
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return nl_mix64(h ^ w ^ 0xc4ceb9fe1a85ec53ull);
}

/* (left, right) → rank of the merge, for segment (open addressing; keys never UINT64_MAX) */
typedef struct { uint64_t *key; uint32_t *rank; size_t mask; } rankmap;

static int rankmap_init(rankmap *m, const int32_t *left, const int32_t *right, int n) { /* 0, -1 out of memory */
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->mask = cap - 1;
    if (!m->key || !m->rank) return -1;
    memset(m->key, 0xff, cap * sizeof *m->key);
    for (int k = 0; k < n; k++) {
        uint64_t key = (uint64_t)(uint32_t)left[k] << 32 | (uint32_t)right[k];
        size_t i = nl_mix64(key) & m->mask;
        while (m->key[i] != UINT64_MAX && m->key[i] != key) i = (i + 1) & m->mask;
        if (m->key[i] == key) continue; /* the first rank wins (pairs are never merged twice) */
        m->key[i] = key;
        m->rank[i] = (uint32_t)k;
    }
    return 0;
}

static void rankmap_release(rankmap *m) {
    free(m->key);
    free(m->rank);
    memset(m, 0, sizeof *m);
}

static int64_t rankmap_get(const rankmap *m, uint64_t key) { /* rank, -1 when absent */
    for (size_t i = nl_mix64(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == key) return m->rank[i];
        if (m->key[i] == UINT64_MAX) return -1;
    }
}

/* ---- word counts: distinct pre-token → occurrences ---------------------------------------- */
typedef struct {
    uint64_t h, off; /* hash, place in the pool */
    uint32_t len;
    int32_t idx;     /* word index after training, -1 before */
    int64_t count;   /* 0 = empty slot */
} wslot;

typedef struct {
    wslot *slot;
    size_t mask, n;
    sbuf pool;
} wmap;

static int wmap_init(wmap *m, size_t cap) {
    memset(m, 0, sizeof *m);
    if (!(m->slot = calloc(cap, sizeof *m->slot))) return -1;
    m->mask = cap - 1;
    return 0;
}

static void wmap_release(wmap *m) {
    free(m->slot);
    free(m->pool.p);
    memset(m, 0, sizeof *m);
}

static int wmap_grow(wmap *m) {
    size_t cap = (m->mask + 1) * 2;
    wslot *ns = calloc(cap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i <= m->mask; i++) {
        if (!m->slot[i].count) continue;
        size_t j = m->slot[i].h & (cap - 1);
        while (ns[j].count) j = (j + 1) & (cap - 1);
        ns[j] = m->slot[i];
    }
    free(m->slot);
    m->slot = ns;
    m->mask = cap - 1;
    return 0;
}

/* Adds count occurrences of s (n ≥ 1 bytes, hash h). 0, -1 out of memory. */
static int wmap_add(wmap *m, const char *s, size_t n, uint64_t h, int64_t count) {
    if ((m->n + 1) * 10 > (m->mask + 1) * 7 && wmap_grow(m)) return -1;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        wslot *e = &m->slot[i];
        if (!e->count) {
            if (sbuf_put(&m->pool, s, n)) return -1;
            e->h = h;
            e->off = m->pool.n - n;
            e->len = (uint32_t)n;
            e->idx = -1;
            e->count = count;
            m->n++;
            return 0;
        }
        if (e->h == h && e->len == n && !memcmp(m->pool.p + e->off, s, n)) {
            e->count += count;
            return 0;
        }
    }
}

static const wslot *wmap_find(const wmap *m, const char *s, size_t n) {
    if (!m->slot) return NULL;
    uint64_t h = str_hash(s, n);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const wslot *e = &m->slot[i];
        if (!e->count) return NULL;
        if (e->h == h && e->len == n && !memcmp(m->pool.p + e->off, s, n)) return e;
    }
}

/* ---- one reading thread: its word counts and pre-tokenizer scratch ------------------------ */
typedef struct {
    wmap words;
    nl_split_scratch *s;
    int64_t n_texts, n_bytes, n_pretokens;
} reader;

static int reader_init(reader *r) {
    memset(r, 0, sizeof *r);
    if (!(r->s = nl_split_scratch_create())) return -1;
    return wmap_init(&r->words, 1 << 12);
}

static void reader_release(reader *r) {
    wmap_release(&r->words);
    nl_split_scratch_destroy(r->s);
    r->s = NULL;
}

/* Splits text (repaired, valid UTF-8) into *pieces (borrowed from s). 0, -1 out of memory,
 * -2 PCRE2 failure. */
static int pretokenize(const nl_splitter *sp, nl_split_scratch *s, const char *text, size_t len, const nl_text_piece **pieces,
                       size_t *n) {
    nl_status st = nl_splitter_split(sp, s, text, len, pieces, n);
    return st == NL_OK ? 0 : st == NL_ENOMEM ? -1 : -2;
}

/* Counts the words of one text. 0, -1 out of memory, -2 PCRE2 failure, -3 a word over 4 GB. */
static int count_text(const nl_splitter *sp, reader *r, const char *text, size_t len) {
    char *fixed = NULL;
    if (!nl_utf8_valid(text, len)) { /* as nl_tokenizer_encode repairs it */
        if (!(fixed = nl_utf8_repair(text, len, &len))) return -1;
        text = fixed;
    }
    r->n_texts++;
    r->n_bytes += (int64_t)len;
    const nl_text_piece *pc;
    size_t np;
    int rc = pretokenize(sp, r->s, text, len, &pc, &np);
    for (size_t i = 0; !rc && i < np; i++) {
        if (pc[i].n > UINT32_MAX) rc = -3;
        else rc = wmap_add(&r->words, pc[i].p, pc[i].n, str_hash(pc[i].p, pc[i].n), 1);
        r->n_pretokens++;
    }
    free(fixed);
    return rc;
}

/* ---- the trainer ---------------------------------------------------------------------------- */
struct nl_bpe_trainer {
    nl_splitter *split;
    reader main;            /* add_text counts here; add_jsonl adds its threads' counts here */
    char source[256];       /* the first corpus file, for messages ("" when none) */
    int n_sources;
    nl_bpe_train_stats st;
    int trained;
    /* words (after training): symbols of word w are sym[sym_off[w] … + sym_n[w]) */
    int32_t n_words;
    int64_t *w_count;
    uint64_t *sym_off;
    uint32_t *sym_n;
    int32_t *sym;
    /* vocabulary: raw bytes of id i are tpool.p[t_off[i] … + t_len[i]) */
    sbuf tpool;
    uint64_t *t_off;
    uint32_t *t_len;
    int n_tok, tok_cap;
    uint32_t *tset;         /* string → id + 1 (0 empty), open addressing */
    size_t tset_mask;
    int32_t *m_left, *m_right;
    int n_merges;
    rankmap ranks;          /* (left << 32 | right) → rank (the merge makes id 258 + rank), for segment */
};

nl_status nl_bpe_trainer_create(nl_ctx *ctx, nl_bpe_trainer **out) {
    *out = NULL;
    nl_bpe_trainer *t = calloc(1, sizeof *t);
    if (!t || reader_init(&t->main)) {
        if (t) reader_release(&t->main);
        free(t);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    nl_status st = nl_splitter_create(ctx, nl_bpe_split_pattern, &t->split);
    if (st != NL_OK) { /* out of memory (the pattern is fixed) */
        nl_bpe_trainer_destroy(t);
        return st;
    }
    *out = t;
    return NL_OK;
}

void nl_bpe_trainer_destroy(nl_bpe_trainer *t) {
    if (!t) return;
    nl_splitter_destroy(t->split);
    reader_release(&t->main);
    free(t->w_count);
    free(t->sym_off);
    free(t->sym_n);
    free(t->sym);
    free(t->tpool.p);
    free(t->t_off);
    free(t->t_len);
    free(t->tset);
    free(t->m_left);
    free(t->m_right);
    rankmap_release(&t->ranks);
    free(t);
}

const nl_bpe_train_stats *nl_bpe_trainer_stats(const nl_bpe_trainer *t) { return &t->st; }

/* "'file': " (or "" without a file) for messages about the whole corpus */
static const char *corpus_name(const nl_bpe_trainer *t, char *buf, size_t cap) {
    if (!t->n_sources) buf[0] = 0;
    else if (t->n_sources == 1) snprintf(buf, cap, "'%s': ", t->source);
    else snprintf(buf, cap, "'%s' and %d more file%s: ", t->source, t->n_sources - 1, t->n_sources > 2 ? "s" : "");
    return buf;
}

static void sync_stats(nl_bpe_trainer *t) {
    t->st.n_texts = t->main.n_texts;
    t->st.n_bytes = t->main.n_bytes;
    t->st.n_pretokens = t->main.n_pretokens;
    t->st.n_words = (int64_t)t->main.words.n;
}

nl_status nl_bpe_trainer_add_text(nl_ctx *ctx, nl_bpe_trainer *t, const char *text, size_t len) {
    if (t->trained) return nl_errorf(ctx, NL_EINVAL, "texts can only be added before training");
    int rc = count_text(t->split, &t->main, text, len);
    sync_stats(t);
    if (rc == -1) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (rc == -2) return nl_errorf(ctx, NL_EINVAL, "the pre-tokenizer pattern failed to match (PCRE2 limit)");
    if (rc == -3) return nl_errorf(ctx, NL_EINVAL, "a pre-token is longer than 4 GB");
    return NL_OK;
}

/* ---- JSONL ---------------------------------------------------------------------------------- */
typedef struct {
    const char *p;
    size_t n;
    int lineno;
    nl_status st;
    char *msg; /* malloc'd on error */
} row;

static void row_fail(row *rw, nl_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void row_fail(row *rw, nl_status st, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    rw->st = st;
    rw->msg = strdup(buf);
}

static void parse_row(const nl_splitter *pt, reader *r, const char *path, row *rw) {
    size_t n = rw->n;
    char *fixed = NULL;
    const char *line = rw->p;
    if (!nl_utf8_valid(line, n)) { /* as `tokenize` and the reference readers see the line */
        if (!(fixed = nl_utf8_repair(line, n, &n))) { row_fail(rw, NL_ENOMEM, "out of memory"); return; }
        line = fixed;
    }
    json_error_t err;
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    free(fixed);
    if (!o) { row_fail(rw, NL_EFORMAT, "'%s' line %d: not JSON: %s", path, rw->lineno, err.text); return; }
    json_t *text = json_object_get(o, "text"), *prompt = json_object_get(o, "prompt"), *resp = json_object_get(o, "response");
    if (!json_is_object(o)) row_fail(rw, NL_EFORMAT, "'%s' line %d: expected a JSON object", path, rw->lineno);
    else if (text && prompt)
        row_fail(rw, NL_EFORMAT, "'%s' line %d: a row has either \"text\" or \"prompt\", not both", path, rw->lineno);
    else if (prompt && !resp) row_fail(rw, NL_EFORMAT, "'%s' line %d: \"prompt\" without \"response\"", path, rw->lineno);
    else if (!text && !prompt && json_object_get(o, "tokens"))
        row_fail(rw, NL_EFORMAT, "'%s' line %d: a {\"tokens\"} row has no text to train a tokenizer on", path, rw->lineno);
    else if (!text && !prompt)
        row_fail(rw, NL_EFORMAT, "'%s' line %d: row has neither \"text\" nor \"prompt\" and \"response\"", path, rw->lineno);
    else if ((text && !json_is_string(text)) || (prompt && !json_is_string(prompt)) || (prompt && !json_is_string(resp)))
        row_fail(rw, NL_EFORMAT, "'%s' line %d: \"%s\" must be a string", path, rw->lineno,
                 text ? "text" : !json_is_string(prompt) ? "prompt" : "response");
    else {
        int rc;
        if (text) rc = count_text(pt, r, json_string_value(text), json_string_length(text));
        else {
            size_t lp = json_string_length(prompt), lr = json_string_length(resp);
            char *whole = malloc(lp + lr + 1);
            if (!whole) rc = -1;
            else {
                memcpy(whole, json_string_value(prompt), lp);
                memcpy(whole + lp, json_string_value(resp), lr);
                rc = count_text(pt, r, whole, lp + lr);
                free(whole);
            }
        }
        if (rc == -1) row_fail(rw, NL_ENOMEM, "'%s' line %d: out of memory", path, rw->lineno);
        else if (rc == -2) row_fail(rw, NL_EINVAL, "'%s' line %d: the pre-tokenizer pattern failed to match (PCRE2 limit)", path, rw->lineno);
        else if (rc == -3) row_fail(rw, NL_EINVAL, "'%s' line %d: a pre-token is longer than 4 GB", path, rw->lineno);
    }
    json_decref(o);
}

nl_status nl_bpe_trainer_add_jsonl(nl_ctx *ctx, nl_bpe_trainer *t, const char *path) {
    if (t->trained) return nl_errorf(ctx, NL_EINVAL, "texts can only be added before training");
    double t0 = nl_now();
    FILE *f = fopen(path, "rb");
    struct stat sb;
    int e = !f ? errno : fstat(fileno(f), &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? EISDIR : 0;
    if (e) {
        if (f) fclose(f);
        return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(e));
    }
    if (!t->n_sources++) snprintf(t->source, sizeof t->source, "%s", path);
    int nth = ctx->n_threads > 0 ? ctx->n_threads : omp_get_max_threads();
    if (nth < 1) nth = 1;
    /* the file is read in chunks of whole lines (a line longer than the buffer grows it) */
    enum { BATCH_ROWS = 8192 };
    size_t cap = 16 << 20, have = 0;
    char *buf = malloc(cap);
    reader *rd = calloc((size_t)nth, sizeof *rd);
    row *rows = calloc(BATCH_ROWS, sizeof *rows);
    nl_status st = NL_OK;
    int ok = buf && rd && rows, eof = 0, lineno = 0;
    for (int i = 0; ok && i < nth; i++) ok = reader_init(&rd[i]) == 0;
    if (!ok) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_progress pg;
    nl_progress_init(&pg, "read", S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : 0, "B", ctx->progress);
    while (st == NL_OK) {
        while (!eof && have < cap) {
            size_t got = fread(buf + have, 1, cap - have, f);
            have += got;
            if (got == 0) {
                if (ferror(f)) st = nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno ? errno : EIO));
                eof = 1;
            }
        }
        if (st != NL_OK || (eof && have == 0)) break;
        size_t pos = 0;
        int nr = 0;
        while (nr < BATCH_ROWS && pos < have) {
            const char *p = buf + pos, *nl = memchr(p, '\n', have - pos);
            if (!nl && !eof) break; /* the rest of this line is still in the file */
            size_t len = nl ? (size_t)(nl - p) : have - pos;
            pos += len + (nl != NULL);
            lineno++;
            while (len && p[len - 1] == '\r') len--;
            size_t k = 0;
            while (k < len && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
            if (k == len) continue; /* blank line */
            rows[nr] = (row){p, len, lineno, NL_OK, NULL};
            nr++;
        }
        if (pos == 0) { /* one line fills the buffer: grow it */
            char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) { st = nl_errorf(ctx, NL_ENOMEM, "'%s' line %d: out of memory (a line of %zu bytes)", path, lineno + 1, have); break; }
            buf = nb;
            cap *= 2;
            continue;
        }
#pragma omp parallel for schedule(dynamic, 16) num_threads(nth) if (nr > 64 && nth > 1)
        for (int i = 0; i < nr; i++) parse_row(t->split, &rd[omp_get_thread_num()], path, &rows[i]);
        for (int i = 0; i < nr; i++) { /* the first bad line */
            if (rows[i].st != NL_OK && st == NL_OK) st = nl_errorf(ctx, rows[i].st, "%s", rows[i].msg ? rows[i].msg : "out of memory");
            free(rows[i].msg);
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        nl_progress_add(&pg, (int64_t)pos);
        if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
    }
    nl_progress_end(&pg);
    fclose(f);
    free(buf);
    /* the threads' counts into the trainer's */
    for (int i = 0; rd && i < nth; i++) {
        reader *r = &rd[i];
        for (size_t k = 0; st == NL_OK && r->words.slot && k <= r->words.mask; k++) {
            const wslot *w = &r->words.slot[k];
            if (w->count && wmap_add(&t->main.words, r->words.pool.p + w->off, w->len, w->h, w->count))
                st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        }
        t->main.n_texts += r->n_texts;
        t->main.n_bytes += r->n_bytes;
        t->main.n_pretokens += r->n_pretokens;
        reader_release(r);
    }
    free(rd);
    free(rows);
    sync_stats(t);
    t->st.sec_read += nl_now() - t0;
    return st;
}

/* ---- vocabulary ------------------------------------------------------------------------------- */
static const char *tok_str(const nl_bpe_trainer *t, int id, size_t *n) {
    *n = t->t_len[id];
    return t->tpool.p + t->t_off[id];
}

static int tset_find(const nl_bpe_trainer *t, const char *s, size_t n) {
    for (size_t i = str_hash(s, n) & t->tset_mask;; i = (i + 1) & t->tset_mask) {
        uint32_t v = t->tset[i];
        if (!v) return -1;
        size_t m;
        const char *p = tok_str(t, (int)v - 1, &m);
        if (m == n && !memcmp(p, s, n)) return (int)v - 1;
    }
}

/* Appends a token (its string not present yet). 0, -1 out of memory. */
static int add_token(nl_bpe_trainer *t, const char *s, size_t n) {
    if (t->n_tok == t->tok_cap) {
        int c = t->tok_cap ? t->tok_cap * 2 : 1024;
        uint64_t *no = realloc(t->t_off, (size_t)c * sizeof *no);
        if (!no) return -1;
        t->t_off = no;
        uint32_t *nn = realloc(t->t_len, (size_t)c * sizeof *nn);
        if (!nn) return -1;
        t->t_len = nn;
        t->tok_cap = c;
    }
    if ((size_t)(t->n_tok + 1) * 2 > t->tset_mask + 1) { /* keep the set at most half full */
        size_t cap = t->tset_mask ? (t->tset_mask + 1) * 2 : 4096;
        uint32_t *ns = calloc(cap, sizeof *ns);
        if (!ns) return -1;
        for (int id = 0; id < t->n_tok; id++) {
            size_t m;
            const char *p = tok_str(t, id, &m);
            size_t j = str_hash(p, m) & (cap - 1);
            while (ns[j]) j = (j + 1) & (cap - 1);
            ns[j] = (uint32_t)id + 1;
        }
        free(t->tset);
        t->tset = ns;
        t->tset_mask = cap - 1;
    }
    if (sbuf_put(&t->tpool, s, n)) return -1;
    int id = t->n_tok++;
    t->t_off[id] = t->tpool.n - n;
    t->t_len[id] = (uint32_t)n;
    size_t j = str_hash(s, n) & t->tset_mask;
    while (t->tset[j]) j = (j + 1) & t->tset_mask;
    t->tset[j] = (uint32_t)id + 1;
    return 0;
}

int nl_bpe_trainer_vocab_size(const nl_bpe_trainer *t) { return t->trained ? t->n_tok : 0; }

const char *nl_bpe_trainer_token(const nl_bpe_trainer *t, int id, size_t *len) {
    if (!t->trained || id < 0 || id >= t->n_tok) { *len = 0; return NULL; }
    return tok_str(t, id, len);
}

int nl_bpe_trainer_n_merges(const nl_bpe_trainer *t) { return t->trained ? t->n_merges : 0; }

void nl_bpe_trainer_merge(const nl_bpe_trainer *t, int k, int32_t *left, int32_t *right) {
    NL_ASSERT(t->trained && k >= 0 && k < t->n_merges);
    *left = t->m_left[k];
    *right = t->m_right[k];
}

/* ---- pair table and heap ---------------------------------------------------------------------- */
typedef struct {
    uint64_t key;     /* left << 32 | right */
    int64_t count;    /* occurrences over all words (× word counts) */
    int32_t *w;       /* words the pair was seen in (may hold words that lost it) */
    uint32_t wn, wcap;
    int32_t touched;  /* last step that added to it */
    uint8_t forbidden;
} prec;

typedef struct {
    prec *r;
    size_t n, cap;
    uint32_t *slot; /* record index + 1, 0 empty */
    size_t mask;
} ptab;

static int ptab_grow_slots(ptab *p) {
    size_t cap = p->slot ? (p->mask + 1) * 2 : 1 << 16;
    uint32_t *ns = calloc(cap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < p->n; i++) {
        size_t j = nl_mix64(p->r[i].key) & (cap - 1);
        while (ns[j]) j = (j + 1) & (cap - 1);
        ns[j] = (uint32_t)i + 1;
    }
    free(p->slot);
    p->slot = ns;
    p->mask = cap - 1;
    return 0;
}

static inline int64_t ptab_find(const ptab *p, uint64_t key) {
    for (size_t i = nl_mix64(key) & p->mask;; i = (i + 1) & p->mask) {
        uint32_t v = p->slot[i];
        if (!v) return -1;
        if (p->r[v - 1].key == key) return (int64_t)v - 1;
    }
}

/* Index of key's record, created with count 0 when absent; -1 out of memory. */
static int64_t ptab_get(ptab *p, uint64_t key) {
    size_t i = nl_mix64(key) & p->mask;
    for (;; i = (i + 1) & p->mask) {
        uint32_t v = p->slot[i];
        if (!v) break;
        if (p->r[v - 1].key == key) return (int64_t)v - 1;
    }
    if (p->n >= UINT32_MAX - 1) return -1;
    if (p->n == p->cap) {
        size_t c = p->cap ? p->cap * 2 : 1 << 16;
        prec *nr = realloc(p->r, c * sizeof *nr);
        if (!nr) return -1;
        p->r = nr;
        p->cap = c;
    }
    prec *r = &p->r[p->n];
    memset(r, 0, sizeof *r);
    r->key = key;
    r->touched = -1;
    p->slot[i] = (uint32_t)p->n + 1;
    p->n++;
    if (p->n * 10 > (p->mask + 1) * 7 && ptab_grow_slots(p)) return -1;
    return (int64_t)p->n - 1;
}

static int prec_add_word(prec *r, int32_t w) {
    if (r->wn && r->w[r->wn - 1] == w) return 0;
    if (r->wn == r->wcap) {
        uint32_t c = r->wcap ? r->wcap * 2 : 4;
        int32_t *nw = realloc(r->w, (size_t)c * sizeof *nw);
        if (!nw) return -1;
        r->w = nw;
        r->wcap = c;
    }
    r->w[r->wn++] = w;
    return 0;
}

static void ptab_release(ptab *p) {
    for (size_t i = 0; i < p->n; i++) free(p->r[i].w);
    free(p->r);
    free(p->slot);
    memset(p, 0, sizeof *p);
}

typedef struct { int64_t count; uint64_t key; uint32_t idx; } hent;
typedef struct { hent *h; size_t n, cap; } heap;

static inline int hbetter(const hent *x, const hent *y) { return x->count > y->count || (x->count == y->count && x->key < y->key); }

static void heap_down(heap *q, size_t i) {
    hent e = q->h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n) break;
        if (c + 1 < q->n && hbetter(&q->h[c + 1], &q->h[c])) c++;
        if (!hbetter(&q->h[c], &e)) break;
        q->h[i] = q->h[c];
        i = c;
    }
    q->h[i] = e;
}

static int heap_push(heap *q, hent e) {
    if (q->n == q->cap) {
        size_t c = q->cap ? q->cap * 2 : 1 << 16;
        hent *nh = realloc(q->h, c * sizeof *nh);
        if (!nh) return -1;
        q->h = nh;
        q->cap = c;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!hbetter(&e, &q->h[par])) break;
        q->h[i] = q->h[par];
        i = par;
    }
    q->h[i] = e;
    return 0;
}

static hent heap_pop(heap *q) {
    hent top = q->h[0];
    q->h[0] = q->h[--q->n];
    if (q->n) heap_down(q, 0);
    return top;
}

/* ---- the merge loop ---------------------------------------------------------------------------- */
typedef struct {
    ptab P;
    heap Q;
    int32_t *stamp;   /* per word: the last step that rewrote it */
    uint32_t *touched;
    size_t n_touched, touched_cap;
} trainstate;

static inline uint64_t pkey(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* count -= f on an existing pair */
static inline void pair_sub(trainstate *S, int32_t a, int32_t b, int64_t f) {
    int64_t i = ptab_find(&S->P, pkey(a, b));
    NL_ASSERT(i >= 0);
    S->P.r[i].count -= f;
}

/* count += f, word w noted, the pair noted as touched in this step. 0, -1 out of memory. */
static inline int pair_add(trainstate *S, int32_t a, int32_t b, int64_t f, int32_t w, int32_t step) {
    int64_t i = ptab_get(&S->P, pkey(a, b));
    if (i < 0) return -1;
    prec *r = &S->P.r[i];
    r->count += f;
    if (prec_add_word(r, w)) return -1;
    if (r->touched != step) {
        r->touched = step;
        if (S->n_touched == S->touched_cap) {
            size_t c = S->touched_cap ? S->touched_cap * 2 : 1024;
            uint32_t *nt = realloc(S->touched, c * sizeof *nt);
            if (!nt) return -1;
            S->touched = nt;
            S->touched_cap = c;
        }
        S->touched[S->n_touched++] = (uint32_t)i;
    }
    return 0;
}

/* Rewrites (a, b) → c in every word of the list, left to right. 0, -1 out of memory. */
static int apply_merge(nl_bpe_trainer *t, trainstate *S, const int32_t *list, uint32_t ln, int32_t a, int32_t b, int32_t c,
                       int32_t step) {
    for (uint32_t k = 0; k < ln; k++) {
        int32_t w = list[k];
        if (S->stamp[w] == step) continue;
        S->stamp[w] = step;
        int64_t f = t->w_count[w];
        int32_t *s = t->sym + t->sym_off[w];
        uint32_t n = t->sym_n[w], r = 0, o = 0;
        while (r < n) {
            if (r + 1 < n && s[r] == a && s[r + 1] == b) {
                if (o > 0) { /* the left neighbour, already rewritten (it may be c) */
                    pair_sub(S, s[o - 1], a, f);
                    if (pair_add(S, s[o - 1], c, f, w, step)) return -1;
                }
                pair_sub(S, a, b, f);
                if (r + 2 < n) {
                    pair_sub(S, b, s[r + 2], f);
                    if (pair_add(S, c, s[r + 2], f, w, step)) return -1;
                }
                s[o++] = c;
                r += 2;
            } else s[o++] = s[r++];
        }
        t->sym_n[w] = o;
    }
    return 0;
}

static void trainstate_release(trainstate *S) {
    ptab_release(&S->P);
    free(S->Q.h);
    free(S->stamp);
    free(S->touched);
}

nl_status nl_bpe_trainer_train(nl_ctx *ctx, nl_bpe_trainer *t, const nl_bpe_train_opts *opts) {
    char cn[320];
    if (t->trained) return nl_errorf(ctx, NL_EINVAL, "the trainer has already been trained");
    int V = opts->vocab_size;
    if (V < NL_BPE_FIRST_MERGE)
        return nl_errorf(ctx, NL_EINVAL, "vocabulary %d is too small: the 2 special tokens and the 256 bytes need %d ids", V,
                         NL_BPE_FIRST_MERGE);
    if (V > NL_BPE_MAX_VOCAB) return nl_errorf(ctx, NL_EINVAL, "vocabulary %d is too large (at most %d)", V, NL_BPE_MAX_VOCAB);
    wmap *wm = &t->main.words;
    if (wm->n == 0) {
        if (t->main.n_texts)
            return nl_errorf(ctx, NL_EINVAL, "%sno text to train on (%lld texts, all empty)", corpus_name(t, cn, sizeof cn),
                             (long long)t->main.n_texts);
        return nl_errorf(ctx, NL_EINVAL, "%sno text to train on", corpus_name(t, cn, sizeof cn));
    }
    if (wm->n > INT32_MAX) return nl_errorf(ctx, NL_EINVAL, "%smore than 2^31 distinct words", corpus_name(t, cn, sizeof cn));
    double t0 = nl_now();
    int64_t minf = opts->min_frequency > 1 ? opts->min_frequency : 1;
    trainstate S;
    memset(&S, 0, sizeof S);
    nl_status st = NL_OK;
#define OOM()                                                   \
    do {                                                        \
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); \
        goto done;                                              \
    } while (0)
    t->trained = 1;
    /* vocabulary: specials, bytes */
    for (int i = 0; i < NL_BPE_N_SPECIAL; i++)
        if (add_token(t, SPECIAL[i], strlen(SPECIAL[i]))) OOM();
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (add_token(t, &c, 1)) OOM();
    }
    /* words */
    int32_t nw = (int32_t)wm->n;
    uint64_t total = 0;
    t->w_count = malloc((size_t)nw * sizeof *t->w_count);
    t->sym_off = malloc((size_t)nw * sizeof *t->sym_off);
    t->sym_n = malloc((size_t)nw * sizeof *t->sym_n);
    S.stamp = malloc((size_t)nw * sizeof *S.stamp);
    if (!t->w_count || !t->sym_off || !t->sym_n || !S.stamp) OOM();
    int32_t w = 0;
    for (size_t k = 0; k <= wm->mask; k++) {
        wslot *e = &wm->slot[k];
        if (!e->count) continue;
        e->idx = w;
        t->w_count[w] = e->count;
        t->sym_off[w] = total;
        t->sym_n[w] = e->len;
        S.stamp[w] = -1;
        total += e->len;
        w++;
    }
    t->n_words = nw;
    if (!(t->sym = malloc((size_t)(total ? total : 1) * sizeof *t->sym))) OOM();
    for (size_t k = 0; k <= wm->mask; k++) {
        const wslot *e = &wm->slot[k];
        if (!e->count) continue;
        const unsigned char *p = (const unsigned char *)wm->pool.p + e->off;
        int32_t *s = t->sym + t->sym_off[e->idx];
        for (uint32_t i = 0; i < e->len; i++) s[i] = NL_BPE_N_SPECIAL + p[i];
    }
    /* pair counts, word lists, heap */
    if (ptab_grow_slots(&S.P)) OOM();
    for (w = 0; w < nw; w++) {
        const int32_t *s = t->sym + t->sym_off[w];
        for (uint32_t i = 0; i + 1 < t->sym_n[w]; i++) {
            int64_t pi = ptab_get(&S.P, pkey(s[i], s[i + 1]));
            if (pi < 0 || prec_add_word(&S.P.r[pi], w)) OOM();
            S.P.r[pi].count += t->w_count[w];
        }
    }
    for (size_t i = 0; i < S.P.n; i++)
        if (heap_push(&S.Q, (hent){S.P.r[i].count, S.P.r[i].key, (uint32_t)i})) OOM();
    int target = V - NL_BPE_FIRST_MERGE;
    if (!(t->m_left = malloc((size_t)(target ? target : 1) * sizeof *t->m_left)) ||
        !(t->m_right = malloc((size_t)(target ? target : 1) * sizeof *t->m_right)))
        OOM();
    nl_progress pg;
    nl_progress_init(&pg, "merges", target, "merges", ctx->progress);
    sbuf cat = {0};
    t->st.stop = NL_BPE_STOP_VOCAB;
    while (t->n_merges < target) {
        if (nl_interrupted) { st = nl_errorf(ctx, NL_EINTR, "interrupted"); break; }
        if (S.Q.n == 0) { t->st.stop = NL_BPE_STOP_NO_PAIRS; break; }
        hent top = heap_pop(&S.Q);
        prec *r = &S.P.r[top.idx];
        if (r->forbidden) continue;
        if (r->count != top.count) { /* stale: re-queue with the current count */
            if (r->count > 0 && heap_push(&S.Q, (hent){r->count, r->key, top.idx})) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); break; }
            continue;
        }
        if (r->count < minf) { t->st.stop = NL_BPE_STOP_MIN_FREQUENCY; break; }
        int32_t a = (int32_t)(r->key >> 32), b = (int32_t)(r->key & 0xffffffffu);
        size_t an, bn;
        const char *as = tok_str(t, a, &an), *bs = tok_str(t, b, &bn);
        cat.n = 0;
        if (sbuf_put(&cat, as, an) || sbuf_put(&cat, bs, bn)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); break; }
        if (tset_find(t, cat.p, cat.n) >= 0) { /* the token exists: no new id, and encoding could differ */
            r->forbidden = 1;
            t->st.n_skipped++;
            continue;
        }
        int32_t c = t->n_tok, step = t->n_merges;
        if (add_token(t, cat.p, cat.n)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); break; }
        t->m_left[step] = a;
        t->m_right[step] = b;
        t->n_merges++;
        t->st.last_count = r->count;
        int32_t *list = r->w; /* r may move while new pairs are added */
        uint32_t ln = r->wn;
        r->w = NULL;
        r->wn = r->wcap = 0;
        S.n_touched = 0;
        int rc = apply_merge(t, &S, list, ln, a, b, c, step);
        free(list);
        if (rc) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); break; }
        NL_ASSERT(S.P.r[top.idx].count == 0);
        for (size_t i = 0; i < S.n_touched && !rc; i++) {
            const prec *q = &S.P.r[S.touched[i]];
            if (q->count > 0) rc = heap_push(&S.Q, (hent){q->count, q->key, S.touched[i]});
        }
        if (rc) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory while training"); break; }
        nl_progress_add(&pg, 1);
    }
    nl_progress_end(&pg);
    free(cat.p);
    if (st != NL_OK) goto done;
    /* rank map for segment() */
    if (rankmap_init(&t->ranks, t->m_left, t->m_right, t->n_merges)) OOM();
    t->st.n_merges = t->n_merges;
    t->st.vocab_size = t->n_tok;
    if (t->n_tok < V && !opts->allow_smaller) {
        if (t->st.stop == NL_BPE_STOP_MIN_FREQUENCY)
            st = nl_errorf(ctx, NL_EINVAL,
                           "%svocabulary %d is larger than the corpus allows (%d reachable: no pair left that occurs at least "
                           "%lld times; lower the vocabulary or the minimum frequency, or accept a smaller one)",
                           corpus_name(t, cn, sizeof cn), V, t->n_tok, (long long)minf);
        else
            st = nl_errorf(ctx, NL_EINVAL,
                           "%svocabulary %d is larger than the corpus allows (%d reachable: every word is a single token)",
                           corpus_name(t, cn, sizeof cn), V, t->n_tok);
    }
done:
#undef OOM
    t->st.n_merges = t->n_merges;
    t->st.vocab_size = t->n_tok;
    t->st.sec_train = nl_now() - t0;
    trainstate_release(&S);
    return st;
}

/* ---- segmentation with the trainer's own state --------------------------------------------------- */
nl_status nl_bpe_trainer_segment(nl_ctx *ctx, const nl_bpe_trainer *t, const char *text, size_t len, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!t->trained || !t->ranks.key) return nl_errorf(ctx, NL_EINVAL, "the trainer has not been trained");
    char *fixed = NULL;
    if (!nl_utf8_valid(text, len)) {
        if (!(fixed = nl_utf8_repair(text, len, &len))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        text = fixed;
    }
    nl_split_scratch *scr = nl_split_scratch_create();
    ibuf out = {0};
    int32_t *tmp = NULL;
    const nl_text_piece *pc = NULL;
    size_t np = 0;
    int rc = scr ? pretokenize(t->split, scr, text, len, &pc, &np) : -1;
    for (size_t i = 0; !rc && i < np; i++) {
        const nl_text_piece *sp = &pc[i];
        const wslot *e = wmap_find(&t->main.words, sp->p, sp->n);
        if (e && e->idx >= 0) { /* a training word: what the merge loop left */
            const int32_t *s = t->sym + t->sym_off[e->idx];
            for (uint32_t k = 0; !rc && k < t->sym_n[e->idx]; k++) rc = ibuf_push(&out, s[k]);
            continue;
        }
        /* another word: lowest rank first, leftmost first */
        int32_t *nt = realloc(tmp, sp->n * sizeof *nt);
        if (!nt) { rc = -1; break; }
        tmp = nt;
        size_t m = sp->n;
        for (size_t k = 0; k < m; k++) tmp[k] = NL_BPE_N_SPECIAL + (unsigned char)sp->p[k];
        for (;;) {
            size_t best = SIZE_MAX;
            int64_t best_rank = INT64_MAX;
            for (size_t k = 0; k + 1 < m; k++) {
                int64_t q = rankmap_get(&t->ranks, pkey(tmp[k], tmp[k + 1]));
                if (q >= 0 && q < best_rank) { best_rank = q; best = k; }
            }
            if (best == SIZE_MAX) break;
            tmp[best] = (int32_t)(NL_BPE_FIRST_MERGE + best_rank);
            memmove(tmp + best + 1, tmp + best + 2, (m - best - 2) * sizeof *tmp);
            m--;
        }
        for (size_t k = 0; !rc && k < m; k++) rc = ibuf_push(&out, tmp[k]);
    }
    free(tmp);
    free(fixed);
    nl_split_scratch_destroy(scr);
    if (rc) {
        free(out.p);
        if (rc == -2) return nl_errorf(ctx, NL_EINVAL, "the pre-tokenizer pattern failed to match (PCRE2 limit)");
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    if (!out.p && !(out.p = malloc(sizeof *out.p))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    *ids = out.p;
    *n = (int)out.n;
    return NL_OK;
}

/* ---- tokenizer.json (written by the tokenizer module) ------------------------------------------- */
nl_status nl_bpe_trainer_save(nl_ctx *ctx, const nl_bpe_trainer *t, const char *path) {
    if (!t->trained || !t->ranks.key) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': the trainer has not been trained", path);
    const char **pieces = malloc((size_t)t->n_tok * sizeof *pieces);
    size_t *len = malloc((size_t)t->n_tok * sizeof *len);
    nl_status st;
    if (!pieces || !len) st = nl_errorf(ctx, NL_ENOMEM, "cannot write '%s': out of memory", path);
    else {
        for (int id = 0; id < t->n_tok; id++) pieces[id] = tok_str(t, id, &len[id]);
        nl_tokenizer_json_opts o = {.split_pattern = nl_bpe_split_pattern, .n_special = NL_BPE_N_SPECIAL, .bos_id = 0};
        st = nl_tokenizer_json_write(ctx, path, t->n_tok, pieces, len, t->n_merges, t->m_left, t->m_right, &o);
    }
    free(pieces);
    free(len);
    return st;
}
