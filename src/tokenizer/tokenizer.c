/* tokenizer.c — opening (format detection, model folders), the encode pipeline, decoding,
 * streaming pieces, UTF-8 repair. See tokenizer.h for the contract and tok_internal.h for the
 * data layout.
 *
 * Encode (Hugging Face tokenizer.json, vocab.json + merges.txt):
 *   1. invalid UTF-8 → U+FFFD per maximal subpart (what JavaScript and Python do when the bytes
 *      become a string, before any tokenizer sees them);
 *   2. added tokens are cut out of the raw text, leftmost-longest (non-special ones always, special
 *      ones only with parse_special), honouring lstrip/rstrip/single_word; tokens with
 *      normalized = true are matched in the normalized text instead;
 *   3. each remaining section is normalized, pre-tokenized and run through BPE;
 *   4. with add_special the post-processor's template wraps the ids.
 * Encode (SentencePiece tokenizer.model, llama2.c tokenizer.bin): SentencePiece's normalizer
 * (user-defined pieces kept whole, precompiled charsmap, remove_extra_whitespaces,
 * add_dummy_prefix, escape_whitespaces) then score BPE over the whole text; with parse_special,
 * CONTROL/UNKNOWN piece strings in the text become their ids; add_special prepends BOS.
 * Checked by tests/test_tokenizer.c and tests/tokenizer_conformance.sh. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

/* ---- UTF-8 ---------------------------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s (1–4), or 0 when invalid; *bad gets the length of
 * the maximal invalid subpart (≥ 1) in that case. */
static int utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else { *bad = 1; return 0; }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) { *bad = (size_t)k; return 0; }
        unsigned d = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) { *bad = (size_t)k; return 0; }
    }
    return need + 1;
}

int nl_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            /* 8 ASCII bytes at a time */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, u + i, 8);
                if (w & 0x8080808080808080ull) break;
                i += 8;
            }
            if (i < n && u[i] < 0x80) i++;
            continue;
        }
        size_t bad;
        int l = utf8_seq(u + i, n - i, &bad);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

static int is_surrogate_at(const unsigned char *u, size_t n) {
    return n >= 3 && u[0] == 0xED && u[1] >= 0xA0 && u[1] <= 0xBF && u[2] >= 0x80 && u[2] <= 0xBF;
}

int nl_tk_has_surrogate(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s, *e = u + n;
    while ((u = memchr(u, 0xED, (size_t)(e - u)))) {
        if (is_surrogate_at(u, (size_t)(e - u))) return 1;
        u++;
    }
    return 0;
}

const char *nl_tk_match_subject(const char *s, size_t n, tk_buf *tmp) {
    if (!nl_tk_has_surrogate(s, n)) return s;
    tmp->n = 0;
    if (nl_tk_buf_put(tmp, s, n)) return NULL;
    unsigned char *u = (unsigned char *)tmp->p;
    for (size_t i = 0; i + 3 <= n; i++)
        if (is_surrogate_at(u + i, n - i)) { memcpy(u + i, "\xEF\xBF\xBD", 3); i += 2; }
    return tmp->p;
}

char *nl_tk_utf8_repair(const char *s, size_t n, int per_byte, int sur, size_t *out_n) {
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t bad = 1;
        int l = utf8_seq(u + i, n - i, &bad);
        if (!l && sur != TK_SUR_INVALID && is_surrogate_at(u + i, n - i)) {
            memcpy(o + k, sur == TK_SUR_KEEP ? s + i : "\xEF\xBF\xBD", 3);
            k += 3;
            i += 3;
            continue;
        }
        if (l) {
            memcpy(o + k, s + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i += per_byte ? 1 : bad;
        }
    }
    o[k] = 0;
    *out_n = k;
    return o;
}

char *nl_utf8_repair(const char *s, size_t n, size_t *out_n) { return nl_tk_utf8_repair(s, n, 0, TK_SUR_INVALID, out_n); }

/* ---- GPT-2 byte ↔ unicode table ---------------------------------------------------------------- */
static int printable_byte(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

uint32_t nl_bytelevel_char(int b) {
    if (printable_byte(b)) return (uint32_t)b;
    if (b <= 0x20) return 256u + (uint32_t)b;
    if (b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F);
    return 256u + 67u; /* 0xAD */
}

int nl_bytelevel_byte(uint32_t cp) {
    if (cp < 256) return printable_byte((int)cp) ? (int)cp : -1;
    if (cp > 256 + 67) return -1;
    uint32_t k = cp - 256;
    if (k <= 32) return (int)k;
    if (k <= 66) return (int)(0x7F + k - 33);
    return 0xAD;
}

/* ---- lifecycle ------------------------------------------------------------------------------------- */
nl_tokenizer *nl_tk_new(const char *path) {
    nl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->path = strdup(path);
    if (!t->path) { free(t); return NULL; }
    static atomic_uint next_gen = 1;
    t->gen = atomic_fetch_add(&next_gen, 1);
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int i = 0; i < 256; i++) t->byte_ids[i] = -1;
    return t;
}

void nl_tokenizer_close(nl_tokenizer *t) {
    if (!t) return;
    free(t->path);
    nl_tk_vocab_release(&t->v);
    nl_tk_strmap_release(&t->vmap);
    nl_tk_strmap_release(&t->rmap);
    nl_tk_u64map_release(&t->merges);
    free(t->bmp_ids);
    free(t->cs_prefix);
    free(t->eow_suffix);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    nl_tk_trie_release(&t->trie_raw);
    nl_tk_trie_release(&t->trie_norm);
    nl_tk_norm_free(t->norm);
    free(t->norm);
    nl_tk_pretok_free(t->pretok);
    free(t->pretok);
    free(t->tmpl);
    nl_tk_dec_free(t->dec);
    free(t->dec);
    nl_tk_charsmap_release(&t->sp_cm);
    nl_tk_trie_release(&t->sp_user);
    nl_tk_trie_release(&t->sp_ctrl);
    free(t);
}

int nl_tk_finish(nl_ctx *ctx, nl_tokenizer *t) {
    /* byte ids: raw bytes for byte-level vocabularies, <0xXX> pieces otherwise */
    int all = 1;
    for (int b = 0; b < 256; b++) {
        int id;
        if (t->byte_level) {
            char c = (char)b;
            id = nl_tk_strmap_get(&t->vmap, &c, 1);
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            id = t->rmap.slot ? nl_tk_strmap_get(&t->rmap, name, 6) : -1;
            if (id < 0) id = nl_tk_strmap_get(&t->vmap, name, 6);
        }
        t->byte_ids[b] = id;
        if (id < 0) all = 0;
    }
    t->has_all_bytes = all;
    if (t->family == TK_RANKS && !t->byte_level) {
        t->bmp_ids = malloc(0x10000 * sizeof *t->bmp_ids);
        if (!t->bmp_ids) return nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", t->path);
        for (int i = 0; i < 0x10000; i++) t->bmp_ids[i] = -1;
        for (int id = 0; id < t->v.n; id++) {
            size_t n;
            const char *s = tk_piece(&t->v, id, &n);
            if (!s || n == 0 || n > 3) continue;
            uint32_t cp;
            if ((size_t)nl_utf8_next((const unsigned char *)s, n, &cp) != n || cp >= 0x10000) continue;
            if (t->bmp_ids[cp] < 0 && nl_tk_strmap_get(&t->vmap, s, n) == id) t->bmp_ids[cp] = id;
        }
    }
    /* added tokens: one trie over raw text, one over normalized text */
    if (t->n_added) {
        if (nl_tk_trie_init(&t->trie_raw) || nl_tk_trie_init(&t->trie_norm)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        for (int i = 0; i < t->n_added; i++) {
            tk_added *a = &t->added[i];
            if (a->n == 0) continue;
            if (a->normalized && t->norm) {
                char *nc;
                size_t nn;
                if (nl_tk_norm_apply(t->norm, a->content, a->n, &nc, &nn)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
                int r = nn ? nl_tk_trie_add(&t->trie_norm, nc, nn, i) : 0;
                if (nn && !a->special) t->trie_norm.first[(unsigned char)nc[0]] |= 2;
                free(nc);
                if (r) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
                t->has_norm = 1;
            } else {
                if (nl_tk_trie_add(&t->trie_raw, a->content, a->n, i)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
                if (!a->special) t->trie_raw.first[(unsigned char)a->content[0]] |= 2;
                t->has_raw = 1;
            }
        }
    }
    return NL_OK;
}

/* ---- opening ------------------------------------------------------------------------------------------ */
static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* dirname of path, malloc'd ("." when none) */
static char *dir_of(const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) return strdup(".");
    size_t n = (size_t)(s - path);
    if (n == 0) n = 1;
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

static nl_status open_gpt2(nl_ctx *ctx, const char *vocab_path, const char *merges_name, nl_tokenizer **out) {
    char *dir = dir_of(vocab_path);
    char *mp = dir ? join(dir, merges_name) : NULL;
    free(dir);
    if (!mp) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (!is_file(mp)) {
        nl_status st = nl_errorf(ctx, NL_EIO, "cannot open '%s': the merges file beside '%s' is missing", mp, vocab_path);
        free(mp);
        return st;
    }
    nl_status st = nl_tk_load_gpt2(ctx, vocab_path, mp, out);
    free(mp);
    return st;
}

static nl_status open_file(nl_ctx *ctx, const char *path, nl_tokenizer **out) {
    const char *b = base_name(path);
    if (!strcmp(b, "vocab.json")) return open_gpt2(ctx, path, "merges.txt", out);
    if (!strcmp(b, "encoder.json")) return open_gpt2(ctx, path, "vocab.bpe", out);
    if (ends_with(b, ".json")) return nl_tk_load_hf_json(ctx, path, out);
    if (ends_with(b, ".model")) return nl_tk_load_spm(ctx, path, out);
    if (ends_with(b, ".bin")) return nl_tk_load_llama2c(ctx, path, out);
    if (nl_tk_is_gguf(path)) return nl_tk_load_gguf(ctx, path, 1, out);
    /* sniff */
    FILE *f = fopen(path, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    int c = fgetc(f);
    while (c == ' ' || c == '\n' || c == '\r' || c == '\t') c = fgetc(f);
    fclose(f);
    if (c == '{') return nl_tk_load_hf_json(ctx, path, out);
    if (c == 0x0A) return nl_tk_load_spm(ctx, path, out);
    return nl_tk_load_llama2c(ctx, path, out);
}

/* The tokenizer files a folder may hold, in order of preference. */
static const char *const FOLDER_FILES[] = {"tokenizer.json", "tokenizer.model", "vocab.json", "encoder.json", "tokenizer.bin"};

static nl_status open_folder(nl_ctx *ctx, const char *dir, nl_tokenizer **out, int quiet_if_none) {
    for (size_t i = 0; i < sizeof FOLDER_FILES / sizeof *FOLDER_FILES; i++) {
        char *p = join(dir, FOLDER_FILES[i]);
        if (!p) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (is_file(p)) {
            nl_status st = open_file(ctx, p, out);
            free(p);
            return st;
        }
        free(p);
    }
    *out = NULL;
    if (quiet_if_none) return NL_OK;
    return nl_errorf(ctx, NL_EIO,
                     "no tokenizer in '%s' (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt, "
                     "encoder.json + vocab.bpe, tokenizer.bin)",
                     dir);
}

nl_status nl_tokenizer_open(nl_ctx *ctx, const char *path, nl_tokenizer **out) {
    *out = NULL;
    if (is_dir(path)) return open_folder(ctx, path, out, 0);
    if (!is_file(path)) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, errno ? strerror(errno) : "not a file");
    return open_file(ctx, path, out);
}

nl_status nl_tokenizer_for_model(nl_ctx *ctx, const char *model_path, nl_tokenizer **out) {
    *out = NULL;
    if (is_dir(model_path)) return open_folder(ctx, model_path, out, 1);
    nl_status gst = nl_tk_is_gguf(model_path) ? nl_tk_load_gguf(ctx, model_path, 0, out) : NL_OK;
    if (gst != NL_OK || *out) return gst; /* a GGUF file's own tokenizer, else one beside the file */
    char *dir = dir_of(model_path);
    if (!dir) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    static const char *const beside[] = {"tokenizer.bin", "tokenizer.model", "tokenizer.json"};
    nl_status st = NL_OK;
    for (size_t i = 0; i < sizeof beside / sizeof *beside; i++) {
        char *p = join(dir, beside[i]);
        if (!p) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        if (is_file(p) && strcmp(p, model_path) != 0) {
            st = open_file(ctx, p, out);
            free(p);
            break;
        }
        free(p);
    }
    free(dir);
    return st;
}

/* ---- accessors ------------------------------------------------------------------------------------------ */
int nl_tokenizer_vocab_size(const nl_tokenizer *t) { return t->v.n; }
int nl_tokenizer_bos(const nl_tokenizer *t) { return t->bos_id; }
int nl_tokenizer_eos(const nl_tokenizer *t) { return t->eos_id; }
const char *nl_tokenizer_path(const nl_tokenizer *t) { return t->path; }
const char *nl_tokenizer_warning(const nl_tokenizer *t) { return t->warning; }

const char *nl_tokenizer_token(const nl_tokenizer *t, int id, size_t *len) {
    size_t n;
    const char *s = tk_piece(&t->v, id, &n);
    if (len) *len = n;
    return s;
}

void nl_tokenizer_template(const nl_tokenizer *t, const int32_t **pre, int *n_pre, const int32_t **post, int *n_post) {
    int k = 0;
    while (k < t->n_tmpl && t->tmpl[k] >= 0) k++; /* the text's slot (-1); none: all before */
    *pre = t->tmpl, *n_pre = k;
    *post = k < t->n_tmpl ? t->tmpl + k + 1 : NULL;
    *n_post = k < t->n_tmpl ? t->n_tmpl - k - 1 : 0;
}

int nl_tokenizer_is_special(const nl_tokenizer *t, int id) {
    if (id < 0 || id >= t->v.n) return 0;
    int ty = t->v.type[id];
    return ty == TK_SPECIAL || ty == TK_CONTROL || ty == TK_UNKNOWN;
}

/* ---- encode ----------------------------------------------------------------------------------------------- */
typedef struct { size_t a, b; int32_t id; } part;
typedef struct { part *p; size_t n, cap; } parts;

static int parts_push(parts *v, size_t a, size_t b, int32_t id) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 16;
        part *np = realloc(v->p, c * sizeof *np);
        if (!np) return -1;
        v->p = np;
        v->cap = c;
    }
    v->p[v->n].a = a;
    v->p[v->n].b = b;
    v->p[v->n].id = id;
    v->n++;
    return 0;
}

static uint32_t char_before(const char *s, size_t start, size_t at, size_t *len) {
    size_t k = at - 1;
    while (k > start && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    nl_utf8_next((const unsigned char *)s + k, at - k, &cp);
    *len = at - k;
    return cp;
}

static int word_char(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    return !nl_uc_is_space(cp);
}

/* Cuts the added tokens of trie (values index t->added; or, with ids = 1, token ids directly)
 * out of s[0, n): text parts get id -1. */
static int split_added(const nl_tokenizer *t, const tk_trie *trie, int by_id, const char *s, size_t n, int parse_special,
                       parts *out) {
    size_t sec = 0, i = 0;
    const unsigned char *u = (const unsigned char *)s;
    const uint8_t mask = by_id || parse_special ? 1 : 2;
    while (i < n) {
        if (!(trie->first[u[i]] & mask)) { i++; continue; }
        uint32_t node = 0;
        size_t end = 0;
        int32_t best = -1;
        for (size_t j = i; j < n; j++) {
            const tk_u64slot *e = tk_u64map_get(&trie->edges, ((uint64_t)node << 8) | u[j]);
            if (!e) break;
            node = e->a;
            int32_t v = trie->value[node];
            if (v < 0) continue;
            if (!by_id) {
                const tk_added *a = &t->added[v];
                if (a->special && !parse_special) continue;
                if (a->single_word) {
                    size_t l;
                    if (i > 0 && word_char(char_before(s, 0, i, &l))) continue;
                    uint32_t cp = 0;
                    if (j + 1 < n) nl_utf8_next(u + j + 1, n - j - 1, &cp);
                    if (j + 1 < n && word_char(cp)) continue;
                }
            }
            best = v;
            end = j + 1;
        }
        if (best < 0) { i++; continue; }
        size_t a = i, b = end;
        int32_t id = by_id ? best : t->added[best].id;
        if (!by_id && t->added[best].lstrip)
            while (a > sec) {
                size_t l;
                if (!nl_uc_is_space(char_before(s, sec, a, &l))) break;
                a -= l;
            }
        if (!by_id && t->added[best].rstrip)
            while (b < n) {
                uint32_t cp;
                int l = nl_utf8_next(u + b, n - b, &cp);
                if (!nl_uc_is_space(cp)) break;
                b += (size_t)l;
            }
        if (a > sec && parts_push(out, sec, a, -1)) return -1;
        if (parts_push(out, a, b, id)) return -1;
        sec = i = b;
    }
    if (sec < n && parts_push(out, sec, n, -1)) return -1;
    return 0;
}

/* Pre-tokenizes and encodes one normalized text. */
static int hf_model(const nl_tokenizer *t, tk_scratch *s, const char *p, size_t n, int first, tk_ids *out) {
    if (!t->pretok) return nl_tk_bpe_ranks(t, s, p, n, out);
    tk_spans *in = &s->spans[0], *sp = &s->spans[1];
    in->n = sp->n = 0;
    if (nl_tk_spans_push(in, p, n, first)) return -1;
    int r = nl_tk_pretok_apply(t->pretok, s, in, sp);
    if (r) return r;
    for (size_t i = 0; i < sp->n; i++)
        if (nl_tk_bpe_ranks(t, s, sp->p[i].p, sp->p[i].n, out)) return -1;
    return 0;
}

static int hf_encode(const nl_tokenizer *t, tk_scratch *s, const char *text, size_t n, int parse_special, tk_ids *out) {
    parts secs = {0}, sub = {0};
    int rc = 0;
    if (t->has_raw) rc = split_added(t, &t->trie_raw, 0, text, n, parse_special, &secs);
    else if (n) rc = parts_push(&secs, 0, n, -1);
    for (size_t k = 0; k < secs.n && !rc; k++) {
        part *q = &secs.p[k];
        if (q->id >= 0) { rc = nl_tk_ids_push(out, q->id); continue; }
        const char *p = text + q->a;
        size_t pn = q->b - q->a;
        char *norm = NULL;
        if (t->norm) {
            if (nl_tk_norm_apply(t->norm, p, pn, &norm, &pn)) { rc = -1; break; }
            p = norm;
        }
        if (pn) {
            if (t->has_norm) {
                sub.n = 0;
                rc = split_added(t, &t->trie_norm, 0, p, pn, parse_special, &sub);
                for (size_t j = 0; j < sub.n && !rc; j++) {
                    if (sub.p[j].id >= 0) rc = nl_tk_ids_push(out, sub.p[j].id);
                    else rc = hf_model(t, s, p + sub.p[j].a, sub.p[j].b - sub.p[j].a, q->a == 0 && sub.p[j].a == 0, out);
                }
            } else rc = hf_model(t, s, p, pn, q->a == 0, out);
        }
        free(norm);
    }
    free(secs.p);
    free(sub.p);
    return rc;
}

/* SentencePiece's Normalizer::Normalize (normalizer.cc) into b. */
static int sp_normalize(const nl_tokenizer *t, const char *s, size_t n, tk_buf *b) {
    static const char WS[] = "\xE2\x96\x81";
    b->n = 0;
    if (nl_tk_buf_reserve(b, n * 3 + 8)) return -1;
    b->p[0] = 0;
    if (n == 0) return 0;
    size_t i = 0;
    /* the next normalized unit at i: user-defined piece (as is), charsmap rule, or one character */
#define NEXT_UNIT(OUTP, OUTN, CONS)                                                                            \
    do {                                                                                                       \
        size_t ulen_ = 0;                                                                                      \
        if (t->has_sp_user) {                                                                                  \
            uint32_t node_ = 0;                                                                                \
            for (size_t j_ = i; j_ < n; j_++) {                                                                \
                const tk_u64slot *e_ = tk_u64map_get(&t->sp_user.edges, ((uint64_t)node_ << 8) | (unsigned char)s[j_]); \
                if (!e_) break;                                                                                \
                node_ = e_->a;                                                                                 \
                if (t->sp_user.value[node_] >= 0) ulen_ = j_ + 1 - i;                                          \
            }                                                                                                  \
        }                                                                                                      \
        if (ulen_) { OUTP = s + i; OUTN = ulen_; CONS = ulen_; }                                              \
        else if ((CONS = nl_tk_charsmap_match(&t->sp_cm, s + i, n - i, &OUTP, &OUTN)) == 0) {                      \
            size_t l_ = (size_t)nl_utf8_len((unsigned char)s[i]);                                              \
            if (l_ > n - i) l_ = n - i;                                                                        \
            OUTP = s + i; OUTN = l_; CONS = l_;                                                                \
        }                                                                                                      \
    } while (0)
    if (t->sp_remove_extra_ws) {
        while (i < n) {
            const char *up;
            size_t un, cons;
            NEXT_UNIT(up, un, cons);
            if (!(un == 1 && up[0] == ' ')) break;
            i += cons;
        }
        if (i == n) return 0;
    }
    if (!t->sp_ws_suffix && t->sp_add_dummy_prefix) {
        if (t->sp_escape_ws) nl_tk_buf_put(b, WS, 3);
        else nl_tk_buf_put(b, " ", 1);
    }
    int prev_space = t->sp_remove_extra_ws;
    while (i < n) {
        const char *up;
        size_t un, cons;
        NEXT_UNIT(up, un, cons);
        while (prev_space && un > 0 && up[0] == ' ') { up++; un--; }
        if (un) {
            for (size_t k = 0; k < un; k++) {
                if (nl_tk_buf_reserve(b, 3)) return -1;
                if (t->sp_escape_ws && up[k] == ' ') { memcpy(b->p + b->n, WS, 3); b->n += 3; }
                else b->p[b->n++] = up[k];
            }
            prev_space = up[un - 1] == ' ';
        }
        i += cons;
        if (!t->sp_remove_extra_ws) prev_space = 0;
    }
#undef NEXT_UNIT
    if (t->sp_remove_extra_ws) {
        const char *sp = t->sp_escape_ws ? WS : " ";
        size_t spn = t->sp_escape_ws ? 3 : 1;
        while (b->n >= spn && !memcmp(b->p + b->n - spn, sp, spn)) b->n -= spn;
    }
    if (t->sp_ws_suffix && t->sp_add_dummy_prefix) {
        if (t->sp_escape_ws) { if (nl_tk_buf_put(b, WS, 3)) return -1; }
        else if (nl_tk_buf_put(b, " ", 1)) return -1;
    }
    if (nl_tk_buf_reserve(b, 0)) return -1;
    b->p[b->n] = 0;
    return 0;
}

static int sp_encode(const nl_tokenizer *t, tk_scratch *s, const char *text, size_t n, int parse_special, tk_ids *out) {
    parts secs = {0};
    tk_buf nb = {0};
    int rc = 0;
    if (parse_special && t->sp_ctrl.value) rc = split_added(t, &t->sp_ctrl, 1, text, n, 1, &secs);
    else if (n) rc = parts_push(&secs, 0, n, -1);
    for (size_t k = 0; k < secs.n && !rc; k++) {
        part *q = &secs.p[k];
        if (q->id >= 0) { rc = nl_tk_ids_push(out, q->id); continue; }
        rc = sp_normalize(t, text + q->a, q->b - q->a, &nb);
        if (!rc) rc = nl_tk_bpe_scores(t, s, nb.p, nb.n, out);
    }
    free(secs.p);
    free(nb.p);
    return rc;
}

nl_status nl_tokenizer_encode(nl_ctx *ctx, const nl_tokenizer *t, const char *text, size_t len, const nl_encode_opts *opts,
                              int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    nl_encode_opts def = {0};
    if (!opts) opts = &def;
    char *fixed = NULL;
    if (!nl_utf8_valid(text, len)) {
        size_t fl;
        /* lone surrogates stay only where they behave unlike U+FFFD: SentencePiece-style BPE */
        int sur = !opts->lone_surrogates ? TK_SUR_INVALID : t->family == TK_RANKS && !t->byte_level ? TK_SUR_KEEP : TK_SUR_FFFD;
        if (!(fixed = nl_tk_utf8_repair(text, len, 0, sur, &fl))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        text = fixed;
        len = fl;
    }
    tk_scratch s;
    memset(&s, 0, sizeof s);
    tk_ids body = {0}, res = {0};
    int rc = t->family == TK_SCORES ? sp_encode(t, &s, text, len, opts->parse_special, &body)
                                    : hf_encode(t, &s, text, len, opts->parse_special, &body);
    nl_tk_scratch_release(&s);
    free(fixed);
    if (!rc && opts->add_special && t->tmpl) {
        for (int i = 0; i < t->n_tmpl && !rc; i++) {
            if (t->tmpl[i] >= 0) rc = nl_tk_ids_push(&res, t->tmpl[i]);
            else
                for (size_t k = 0; k < body.n && !rc; k++) rc = nl_tk_ids_push(&res, body.p[k]);
        }
        free(body.p);
        body = res;
    }
    if (rc) {
        free(body.p);
        if (rc == -2) return nl_errorf(ctx, NL_EINVAL, "'%s': a pre-tokenizer pattern failed to match (PCRE2 limit)", t->path);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory while encoding %zu bytes", len);
    }
    if (body.n > INT32_MAX) { free(body.p); return nl_errorf(ctx, NL_EINVAL, "text too long"); }
    if (!body.p) body.p = malloc(sizeof(int32_t)); /* a valid pointer even for zero ids */
    if (!body.p) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    *ids = body.p;
    *n = (int)body.n;
    return NL_OK;
}

/* ---- decode ------------------------------------------------------------------------------------------------ */
static int check_ids(nl_ctx *ctx, const nl_tokenizer *t, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->v.n || t->v.off[ids[i]] == UINT32_MAX) {
            nl_errorf(ctx, NL_EINVAL, "token id %d is outside the vocabulary of '%s' (size %d)", (int)ids[i], t->path, t->v.n);
            return -1;
        }
    return 0;
}

/* SentencePieceProcessor::Decode: controls vanish, <unk> is " ⁇ ", byte pieces join into UTF-8
 * (U+FFFD per bad byte), ▁ is a space, and the first piece's ▁ goes with add_dummy_prefix. */
static int sp_decode(const nl_tokenizer *t, const int32_t *ids, int n, tk_buf *o) {
    tk_buf bytes = {0};
    int bos_ws = 1, rc = 0;
    for (int i = 0; i <= n && !rc; i++) {
        int id = i < n ? ids[i] : -1;
        int ty = id >= 0 ? t->v.type[id] : 0;
        if (id >= 0 && ty == TK_BYTE) {
            size_t pn;
            const char *p = tk_piece(&t->v, id, &pn);
            int b = 0;
            for (int k = 3; k < 5 && pn == 6; k++) b = b * 16 + (p[k] <= '9' ? p[k] - '0' : (p[k] | 32) - 'a' + 10);
            char c = (char)b;
            rc = nl_tk_buf_put(&bytes, &c, 1);
            continue;
        }
        if (bytes.n) {
            size_t rn;
            char *r = nl_tk_utf8_repair(bytes.p, bytes.n, 1, TK_SUR_INVALID, &rn);
            if (!r) { rc = -1; break; }
            rc = nl_tk_buf_put(o, r, rn);
            free(r);
            bytes.n = 0;
        }
        if (id < 0 || rc) continue;
        if (o->n) bos_ws = 0;
        if (ty == TK_CONTROL) continue;
        size_t pn;
        const char *p = tk_piece(&t->v, id, &pn);
        if (ty == TK_UNKNOWN) { rc = nl_tk_buf_put(o, " \xE2\x81\x87 ", 5); continue; }
        int consumed = 0;
        if (bos_ws && (t->sp_add_dummy_prefix || t->sp_remove_extra_ws) && pn >= 3 && !memcmp(p, "\xE2\x96\x81", 3)) {
            p += 3;
            pn -= 3;
            consumed = !t->sp_remove_extra_ws;
        }
        for (size_t k = 0; k < pn && !rc;) {
            if (k + 3 <= pn && !memcmp(p + k, "\xE2\x96\x81", 3)) { rc = nl_tk_buf_put(o, " ", 1); k += 3; }
            else { rc = nl_tk_buf_put(o, p + k, 1); k++; }
        }
        if (consumed) bos_ws = 0;
    }
    free(bytes.p);
    return rc;
}

nl_status nl_tokenizer_decode(nl_ctx *ctx, const nl_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text,
                              size_t *len) {
    *text = NULL;
    *len = 0;
    if (check_ids(ctx, t, ids, n)) return NL_EINVAL;
    tk_buf o = {0};
    int rc = 0;
    if (nl_tk_buf_reserve(&o, 16)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    o.p[0] = 0;
    if (t->family == TK_SCORES) {
        rc = sp_decode(t, ids, n, &o);
    } else {
        tk_buf toks = {0};
        tk_ids lens = {0};
        rc = nl_tk_buf_reserve(&toks, 16);
        for (int i = 0; i < n && !rc; i++) {
            if (skip_special && t->v.type[ids[i]] == TK_SPECIAL) continue;
            size_t pn;
            const char *p = tk_piece(&t->v, ids[i], &pn);
            rc = nl_tk_buf_put(&toks, p, pn) || nl_tk_ids_push(&lens, (int32_t)pn);
        }
        if (!rc) rc = nl_tk_decode_tokens(t, t->dec, &toks, &lens, &o);
        free(toks.p);
        free(lens.p);
    }
    if (rc) { free(o.p); return nl_errorf(ctx, NL_ENOMEM, "out of memory while decoding"); }
    o.p[o.n] = 0;
    if (!nl_utf8_valid(o.p, o.n)) { /* e.g. byte-level tokens without a ByteLevel decoder */
        size_t rn;
        char *r = nl_utf8_repair(o.p, o.n, &rn);
        free(o.p);
        if (!r) return nl_errorf(ctx, NL_ENOMEM, "out of memory while decoding");
        o.p = r;
        o.n = rn;
    }
    *text = o.p;
    *len = o.n;
    return NL_OK;
}

size_t nl_tokenizer_piece(const nl_tokenizer *t, int prev_id, int id, char *buf, size_t cap) {
    size_t pn;
    const char *p = tk_piece(&t->v, id, &pn);
    if (!p) return 0;
    int ty = t->v.type[id];
    if (ty == TK_SPECIAL || ty == TK_CONTROL) return 0;
    char tmp[8];
    int spm_style = t->family == TK_SCORES || (!t->byte_level && t->byte_fallback) || t->dummy_prefix;
    if (!t->byte_level && spm_style) {
        int b;
        if (pn == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && sscanf(p + 3, "%2x", (unsigned *)&b) == 1) {
            tmp[0] = (char)b;
            p = tmp;
            pn = 1;
        } else {
            int first = prev_id < 0 || (prev_id < t->v.n && (t->v.type[prev_id] == TK_CONTROL || t->v.type[prev_id] == TK_SPECIAL));
            size_t need = 0, k = 0;
            int skip = first && t->dummy_prefix && pn >= 3 && !memcmp(p, "\xE2\x96\x81", 3);
            if (skip) k = 3;
            for (; k < pn;) {
                char c;
                if (k + 3 <= pn && !memcmp(p + k, "\xE2\x96\x81", 3)) { c = ' '; k += 3; }
                else c = p[k++];
                if (need < cap) buf[need] = c;
                need++;
            }
            return need;
        }
    }
    memcpy(buf, p, pn < cap ? pn : cap);
    return pn;
}
