/* gguf_vocab.c — the tokenizer stored in a GGUF file's metadata (tokenizer.ggml.*), built on
 * the same engine as the JSON tokenizers.
 *
 *   tokenizer.ggml.model "gpt2"   byte-level BPE: tokens (the vocabulary in GPT-2's byte↔unicode
 *                                 form, decoded to raw bytes as tokenizer.json's are), merges
 *                                 ("a b", lowest index first; a repeated pair takes the later
 *                                 rank as in tokenizers), token_type (3 CONTROL → special added
 *                                 token, 4 USER_DEFINED → added token), the pre-tokenizer regex
 *                                 named by tokenizer.ggml.pre (llama.cpp's names; llama3-family
 *                                 names also set ignore_merges as llama.cpp does);
 *   tokenizer.ggml.model "llama"  SentencePiece BPE: tokens, scores, token_type (SentencePiece's
 *                                 piece types), byte fallback when all 256 <0xXX> byte pieces
 *                                 exist, add_space_prefix (default true),
 *                                 remove_extra_whitespaces (default false), an optional
 *                                 precompiled_charsmap;
 *   "none" / no tokenizer.ggml.model  no tokenizer (*out = NULL; the file's data are token ids).
 * bos/eos/unk ids from tokenizer.ggml.{bos,eos,unknown}_token_id; the template from
 * add_bos_token / add_eos_token (defaults: true / false for "llama", false / false for "gpt2",
 * as llama.cpp). Every array is checked against the token count, every id against the
 * vocabulary, and metadata of the wrong type is refused naming the key; the file name is in
 * every message.
 * Checked by tests/test_gguf.c (equal ids to the model folder's tokenizer on the conformance
 * corpus) and fuzz/fuzz_gguf.c.
 */
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "neuronlab/gguf.h"
#include "tokenizer/unicode.h"

typedef struct {
    nl_ctx *ctx;
    const char *path;
    const nl_gguf *g;
    nl_tokenizer *t;
} gv;

static nl_status oom(gv *G) { return nl_errorf(G->ctx, NL_ENOMEM, "'%s': out of memory building the tokenizer", G->path); }

/* An optional token id key: must name a token. */
static nl_status token_id(gv *G, const char *key, int n, int *out) {
    int64_t v;
    int found;
    *out = -1;
    nl_status st = nl_gguf_get_i64(G->ctx, G->g, key, &v, &found);
    if (st != NL_OK || !found) return st;
    if (v == -1) return NL_OK; /* llama.cpp's "none" */
    if (v < 0 || v >= n)
        return nl_errorf(G->ctx, NL_EFORMAT, "'%s': metadata key '%s' is %lld, not a token id (the vocabulary has %d tokens)",
                         G->path, key, (long long)v, n);
    *out = (int)v;
    return NL_OK;
}

static nl_status opt_bool(gv *G, const char *key, int def, int *out) {
    int found;
    nl_status st = nl_gguf_get_bool(G->ctx, G->g, key, out, &found);
    if (st == NL_OK && !found) *out = def;
    return st;
}

/* An optional per-token array: exactly n elements. */
static nl_status per_token(gv *G, const char *key, nl_gguf_vtype want, int n, const nl_gguf_kv **kv) {
    int found;
    nl_status st = nl_gguf_get_arr(G->ctx, G->g, key, want, kv, &found);
    if (st != NL_OK) return st;
    if (!found) { *kv = NULL; return NL_OK; }
    if ((*kv)->n != (uint64_t)n)
        return nl_errorf(G->ctx, NL_EFORMAT, "'%s': metadata key '%s' has %llu elements, but there are %d tokens", G->path, key,
                         (unsigned long long)(*kv)->n, n);
    return NL_OK;
}

/* Byte-level text (GPT-2's table) → raw bytes into o; text that is not all in the table is kept
 * as it is (like tokenizer.json's added tokens). */
static size_t to_raw(const char *s, size_t n, char *o) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = nl_utf8_next((const unsigned char *)s + i, n - i, &cp);
        int b = len > 0 ? nl_bytelevel_byte(cp) : -1;
        if (b < 0) {
            memcpy(o, s, n);
            return n;
        }
        o[k++] = (char)b;
        i += (size_t)len;
    }
    return k;
}

static nl_status add_template(gv *G, int add_bos, int add_eos) {
    nl_tokenizer *t = G->t;
    free(t->tmpl);
    t->tmpl = NULL;
    t->n_tmpl = 0;
    if (!(add_bos && t->bos_id >= 0) && !(add_eos && t->eos_id >= 0)) return NL_OK;
    if (!(t->tmpl = malloc(3 * sizeof *t->tmpl))) return oom(G);
    if (add_bos && t->bos_id >= 0) t->tmpl[t->n_tmpl++] = t->bos_id;
    t->tmpl[t->n_tmpl++] = -1;
    if (add_eos && t->eos_id >= 0) t->tmpl[t->n_tmpl++] = t->eos_id;
    return NL_OK;
}

static nl_status build_bpe(gv *G, const nl_gguf_kv *tokens, int n) {
    nl_tokenizer *t = G->t;
    nl_status st;
    const nl_gguf_kv *types, *merges;
    if ((st = per_token(G, "tokenizer.ggml.token_type", NL_GGUF_I32, n, &types)) != NL_OK) return st;
    int found;
    if ((st = nl_gguf_get_arr(G->ctx, G->g, "tokenizer.ggml.merges", NL_GGUF_STRING, &merges, &found)) != NL_OK) return st;
    if (!found) return nl_errorf(G->ctx, NL_EFORMAT, "'%s': a \"gpt2\" tokenizer needs tokenizer.ggml.merges", G->path);
    /* pre-tokenizer */
    const char *pre = "default";
    size_t pn = 7;
    if ((st = nl_gguf_get_str(G->ctx, G->g, "tokenizer.ggml.pre", &pre, &pn, &found)) != NL_OK) return st;
    if (!found) { pre = "default"; pn = 7; }
    const nl_gguf_pretok *P = nl_gguf_pretok_find(pre, pn);
    if (!P) {
        char list[400];
        size_t k = 0;
        int np;
        const nl_gguf_pretok *all = nl_gguf_pretoks(&np);
        for (int i = 0; i < np; i++) k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", all[i].name);
        return nl_errorf(G->ctx, NL_EUNSUPPORTED, "'%s': pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported (supported: %s)",
                         G->path, (int)(pn < 60 ? pn : 60), pre, list);
    }
    t->family = TK_RANKS;
    t->byte_level = 1;
    t->ignore_merges = P->ignore_merges;
    int n_special = 0;
    for (int id = 0; types && id < n; id++) {
        int ty = (int)nl_gguf_arr_num(types, (uint64_t)id);
        n_special += ty == 3 || ty == 4;
    }
    if (nl_tk_vocab_init(&t->v, n) || nl_tk_strmap_init(&t->vmap, &t->v, (size_t)n) ||
        !(t->pretok = calloc(1, sizeof *t->pretok)) || !(t->dec = calloc(1, sizeof *t->dec)) ||
        !(t->added = calloc((size_t)n_special + 1, sizeof *t->added)))
        return oom(G);
    t->pretok->kind = PT_BYTELEVEL;
    t->pretok->has_re = 1;
    char err[256];
    if (nl_tk_regex_compile(&t->pretok->re, P->re, strlen(P->re), 0, err, sizeof err))
        return nl_errorf(G->ctx, NL_EFORMAT, "'%s': pre-tokenizer pattern: %s", G->path, err);
    t->dec->kind = DC_BYTELEVEL;
    char stack[512];
    for (int id = 0; id < n; id++) {
        size_t sn;
        const char *s = nl_gguf_arr_str(G->g, tokens, (uint64_t)id, &sn);
        char *o = sn < sizeof stack ? stack : malloc(sn + 1);
        if (!o) return oom(G);
        size_t on = to_raw(s, sn, o);
        int rc = nl_tk_vocab_set(&t->v, id, o, on);
        if (o != stack) free(o);
        if (rc) return oom(G);
        int ty = types ? (int)nl_gguf_arr_num(types, (uint64_t)id) : 1;
        t->v.type[id] = TK_NORMAL;
        if (ty == 3 || ty == 4) { /* CONTROL → special added token; USER_DEFINED → added token */
            tk_added *a = &t->added[t->n_added++];
            a->id = id;
            a->n = on;
            if (!(a->content = malloc(on + 1))) return oom(G);
            size_t pn2;
            const char *p = tk_piece(&t->v, id, &pn2);
            memcpy(a->content, p, pn2);
            a->content[pn2] = 0;
            a->special = ty == 3;
            t->v.type[id] = ty == 3 ? TK_SPECIAL : TK_ADDED;
        }
        if (nl_tk_strmap_add(&t->vmap, id) < 0) return oom(G);
    }
    /* merges */
    if (nl_tk_u64map_init(&t->merges, (size_t)merges->n * 2 + 16)) return oom(G);
    for (uint64_t r = 0; r < merges->n; r++) {
        size_t mn;
        const char *m = nl_gguf_arr_str(G->g, merges, r, &mn);
        const char *sp = memchr(m, ' ', mn);
        if (!sp || sp == m || sp == m + mn - 1)
            return nl_errorf(G->ctx, NL_EFORMAT, "'%s': merge %llu is not two tokens separated by a space", G->path,
                             (unsigned long long)r);
        size_t an = (size_t)(sp - m), bn = mn - an - 1;
        char *buf = malloc(2 * mn + 2);
        if (!buf) return oom(G);
        size_t ra = to_raw(m, an, buf), rb = to_raw(sp + 1, bn, buf + ra);
        int ia = nl_tk_strmap_get(&t->vmap, buf, ra), ib = nl_tk_strmap_get(&t->vmap, buf + ra, rb),
            im = nl_tk_strmap_get(&t->vmap, buf, ra + rb);
        free(buf);
        if (ia < 0 || ib < 0 || im < 0)
            return nl_errorf(G->ctx, NL_EFORMAT, "'%s': merge %llu ('%.*s') names a token that is not in the vocabulary",
                             G->path, (unsigned long long)r, (int)(mn < 80 ? mn : 80), m);
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        int rc = nl_tk_u64map_put(&t->merges, key, (uint32_t)r, (uint32_t)im);
        if (rc < 0) return oom(G);
        if (rc > 0) { /* a repeated pair: the later rank wins */
            tk_u64slot *s = (tk_u64slot *)tk_u64map_get(&t->merges, key);
            s->a = (uint32_t)r;
            s->b = (uint32_t)im;
        }
    }
    int add_bos, add_eos;
    if ((st = token_id(G, "tokenizer.ggml.bos_token_id", n, &t->bos_id)) != NL_OK) return st;
    if ((st = token_id(G, "tokenizer.ggml.eos_token_id", n, &t->eos_id)) != NL_OK) return st;
    if ((st = token_id(G, "tokenizer.ggml.unknown_token_id", n, &t->unk_id)) != NL_OK) return st;
    if ((st = opt_bool(G, "tokenizer.ggml.add_bos_token", 0, &add_bos)) != NL_OK) return st;
    if ((st = opt_bool(G, "tokenizer.ggml.add_eos_token", 0, &add_eos)) != NL_OK) return st;
    if ((st = add_template(G, add_bos, add_eos)) != NL_OK) return st;
    return nl_tk_finish(G->ctx, t);
}

static nl_status build_spm(gv *G, const nl_gguf_kv *tokens, int n) {
    nl_tokenizer *t = G->t;
    nl_status st;
    const nl_gguf_kv *types, *scores;
    if ((st = per_token(G, "tokenizer.ggml.token_type", NL_GGUF_I32, n, &types)) != NL_OK) return st;
    if ((st = per_token(G, "tokenizer.ggml.scores", NL_GGUF_F32, n, &scores)) != NL_OK) return st;
    if (!scores) return nl_errorf(G->ctx, NL_EFORMAT, "'%s': a \"llama\" tokenizer needs tokenizer.ggml.scores", G->path);
    if (nl_tk_vocab_init(&t->v, n) || !(t->v.score = malloc((size_t)n * sizeof(float)))) return oom(G);
    int n_bytes = 0;
    for (int id = 0; id < n; id++) {
        size_t sn;
        const char *s = nl_gguf_arr_str(G->g, tokens, (uint64_t)id, &sn);
        if (nl_tk_vocab_set(&t->v, id, s, sn)) return oom(G);
        double sc = nl_gguf_arr_num(scores, (uint64_t)id);
        if (!isfinite(sc))
            return nl_errorf(G->ctx, NL_EFORMAT, "'%s': token %d has score %g, not a finite number", G->path, id, sc);
        t->v.score[id] = (float)sc;
        int ty = types ? (int)nl_gguf_arr_num(types, (uint64_t)id) : TK_NORMAL;
        if (ty < TK_NORMAL || ty > TK_BYTE)
            return nl_errorf(G->ctx, NL_EFORMAT, "'%s': token %d has type %d (SentencePiece types are 1 to 6)", G->path, id, ty);
        t->v.type[id] = (uint8_t)ty;
        n_bytes += ty == TK_BYTE;
    }
    t->byte_fallback = n_bytes == 256;
    if (!t->byte_fallback)
        for (int id = 0; id < n; id++)
            if (t->v.type[id] == TK_BYTE) t->v.type[id] = TK_NORMAL;
    int found;
    if ((st = opt_bool(G, "tokenizer.ggml.add_space_prefix", 1, &t->sp_add_dummy_prefix)) != NL_OK) return st;
    if ((st = opt_bool(G, "tokenizer.ggml.remove_extra_whitespaces", 0, &t->sp_remove_extra_ws)) != NL_OK) return st;
    t->sp_escape_ws = 1;
    const nl_gguf_kv *cm;
    if ((st = nl_gguf_get_arr(G->ctx, G->g, "tokenizer.ggml.precompiled_charsmap", NL_GGUF_U8, &cm, &found)) != NL_OK) return st;
    if (found && cm->n && (cm->arr_type != NL_GGUF_U8 && cm->arr_type != NL_GGUF_I8))
        return nl_errorf(G->ctx, NL_EFORMAT, "'%s': tokenizer.ggml.precompiled_charsmap must be an array of bytes", G->path);
    if (found && cm->n && nl_tk_charsmap_init(&t->sp_cm, cm->data, (size_t)cm->n))
        return nl_errorf(G->ctx, NL_EFORMAT, "'%s': tokenizer.ggml.precompiled_charsmap is malformed", G->path);
    int bos, eos, unk;
    if ((st = token_id(G, "tokenizer.ggml.bos_token_id", n, &bos)) != NL_OK) return st;
    if ((st = token_id(G, "tokenizer.ggml.eos_token_id", n, &eos)) != NL_OK) return st;
    if ((st = token_id(G, "tokenizer.ggml.unknown_token_id", n, &unk)) != NL_OK) return st;
    if (unk >= 0 && t->v.type[unk] == TK_NORMAL) t->v.type[unk] = TK_UNKNOWN;
    char bp[64] = "", ep[64] = "";
    size_t ln;
    const char *p;
    if (bos >= 0 && (p = tk_piece(&t->v, bos, &ln)) && ln < sizeof bp) memcpy(bp, p, ln);
    if (eos >= 0 && (p = tk_piece(&t->v, eos, &ln)) && ln < sizeof ep) memcpy(ep, p, ln);
    if ((st = nl_tk_spm_build(G->ctx, t, bp[0] ? bp : "<s>", ep[0] ? ep : "</s>")) != NL_OK) return st;
    if (bos >= 0) t->bos_id = bos;
    if (eos >= 0) t->eos_id = eos;
    int add_bos, add_eos;
    if ((st = opt_bool(G, "tokenizer.ggml.add_bos_token", 1, &add_bos)) != NL_OK) return st;
    if ((st = opt_bool(G, "tokenizer.ggml.add_eos_token", 0, &add_eos)) != NL_OK) return st;
    return add_template(G, add_bos, add_eos);
}

int nl_tk_is_gguf(const char *path) {
    char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(m, "GGUF", 4);
}

nl_status nl_tk_load_gguf(nl_ctx *ctx, const char *path, int required, nl_tokenizer **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
        close(fd);
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': not a GGUF file", path);
    }
    void *base = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return nl_errorf(ctx, NL_EIO, "cannot map '%s': %s", path, strerror(errno));
    nl_gguf *g = NULL;
    gv G = {ctx, path, NULL, NULL};
    nl_status st = nl_gguf_parse(ctx, path, base, (size_t)sb.st_size, &g);
    if (st != NL_OK) goto done;
    G.g = g;
    const char *model;
    size_t mn;
    int found;
    if ((st = nl_gguf_get_str(ctx, g, "tokenizer.ggml.model", &model, &mn, &found)) != NL_OK) goto done;
    if (!found || (mn == 4 && !memcmp(model, "none", 4))) { /* no tokenizer: *out stays NULL */
        if (required)
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': the GGUF file holds no tokenizer (tokenizer.ggml.model is %s)", path,
                           found ? "none" : "absent");
        goto done;
    }
    int bpe = mn == 4 && !memcmp(model, "gpt2", 4), spm = mn == 5 && !memcmp(model, "llama", 5);
    if (!bpe && !spm) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': tokenizer.ggml.model '%.*s' is not supported (supported: gpt2, llama, none)",
                       path, (int)(mn < 40 ? mn : 40), model);
        goto done;
    }
    const nl_gguf_kv *tokens;
    if ((st = nl_gguf_get_arr(ctx, g, "tokenizer.ggml.tokens", NL_GGUF_STRING, &tokens, NULL)) != NL_OK) goto done;
    if (tokens->n == 0 || tokens->n > INT32_MAX / 2) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': tokenizer.ggml.tokens has %llu tokens", path, (unsigned long long)tokens->n);
        goto done;
    }
    if (!(G.t = nl_tk_new(path))) {
        st = oom(&G);
        goto done;
    }
    st = bpe ? build_bpe(&G, tokens, (int)tokens->n) : build_spm(&G, tokens, (int)tokens->n);
done:
    nl_gguf_close(g);
    munmap(base, (size_t)sb.st_size);
    if (st != NL_OK) {
        nl_tokenizer_close(G.t);
        return st;
    }
    *out = G.t;
    return NL_OK;
}
