/* sentencepiece.c — SentencePiece tokenizer.model reader: a bounds-checked protobuf wire-format
 * parser for the ModelProto fields the encoder needs (no protobuf library):
 *   ModelProto     pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2, normalizer_spec = 3
 *   TrainerSpec    model_type = 3 (BPE = 2 only), treat_whitespace_as_suffix = 24, byte_fallback = 35,
 *                  unk_piece = 45, bos_piece = 46, eos_piece = 47
 *   NormalizerSpec name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3,
 *                  remove_extra_whitespaces = 4, escape_whitespaces = 5 (defaults true, true, true)
 * Normalization: whatever rule the name stands for (identity, nmt_nfkc, nfkc, nmt_nfkc_cf, …) is
 * compiled into precompiled_charsmap, which is applied as SentencePiece does; the
 * denormalizer_spec is ignored. Unigram, word and char models are refused.
 * Checked by tests/test_tokenizer.c (ids from python3-sentencepiece) and the conformance harness. */
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <stdio.h>

typedef struct { const unsigned char *p, *end, *start; } pb;

static int pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -1;
}

static int pb_key(pb *r, uint32_t *field, uint32_t *wire) {
    uint64_t k;
    if (pb_varint(r, &k)) return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (uint32_t)(k & 7);
    return 0;
}

static int pb_bytes(pb *r, pb *sub) {
    uint64_t n;
    if (pb_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
    sub->start = r->start;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static int pb_skip(pb *r, uint32_t wire) {
    uint64_t v;
    pb sub;
    switch (wire) {
    case 0: return pb_varint(r, &v);
    case 1: if (r->end - r->p < 8) return -1; r->p += 8; return 0;
    case 2: return pb_bytes(r, &sub);
    case 5: if (r->end - r->p < 4) return -1; r->p += 4; return 0;
    default: return -1;
    }
}

static int pb_float(pb *r, float *f) {
    if (r->end - r->p < 4) return -1;
    uint32_t u = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    memcpy(f, &u, 4);
    r->p += 4;
    return 0;
}

typedef struct { const char *s; size_t n; float score; int type; } spiece;

nl_status nl_tk_spm_build(nl_ctx *ctx, nl_tokenizer *t, const char *bos_piece, const char *eos_piece) {
    t->family = TK_SCORES;
    if (nl_tk_strmap_init(&t->vmap, &t->v, (size_t)t->v.n) || nl_tk_strmap_init(&t->rmap, &t->v, 1024) ||
        nl_tk_trie_init(&t->sp_user) || nl_tk_trie_init(&t->sp_ctrl))
        return nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", t->path);
    int unk = -1;
    for (int id = 0; id < t->v.n; id++) {
        int ty = t->v.type[id];
        int normal = ty == TK_NORMAL || ty == TK_USER || ty == TK_UNUSED;
        size_t n;
        const char *s = tk_piece(&t->v, id, &n);
        if (!s || n == 0) return nl_errorf(ctx, NL_EFORMAT, "'%s': piece %d is empty", t->path, id);
        if (memchr(s, 0, n)) return nl_errorf(ctx, NL_EFORMAT, "'%s': piece %d contains a NUL byte", t->path, id);
        int r = nl_tk_strmap_add(normal ? &t->vmap : &t->rmap, id);
        if (r < 0) return nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", t->path);
        if (r > 0) return nl_errorf(ctx, NL_EFORMAT, "'%s': piece '%.*s' (id %d) is defined twice", t->path, (int)n, s, id);
        if (ty == TK_USER) {
            if (nl_tk_trie_add(&t->sp_user, s, n, id)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
            t->has_sp_user = 1;
        }
        if ((ty == TK_CONTROL || ty == TK_UNKNOWN) && nl_tk_trie_add(&t->sp_ctrl, s, n, id))
            return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (ty == TK_UNKNOWN) {
            if (unk >= 0) return nl_errorf(ctx, NL_EFORMAT, "'%s': two unknown pieces (ids %d and %d)", t->path, unk, id);
            unk = id;
        }
        if (ty == TK_BYTE && !t->byte_fallback)
            return nl_errorf(ctx, NL_EFORMAT, "'%s': byte piece '%.*s' although byte_fallback is false", t->path, (int)n, s);
    }
    if (unk < 0) return nl_errorf(ctx, NL_EFORMAT, "'%s': no unknown piece (<unk>) is defined", t->path);
    t->unk_id = unk;
    int b = nl_tk_strmap_get(&t->rmap, bos_piece, strlen(bos_piece));
    t->bos_id = b >= 0 && t->v.type[b] == TK_CONTROL ? b : -1;
    int e = nl_tk_strmap_get(&t->rmap, eos_piece, strlen(eos_piece));
    t->eos_id = e >= 0 && t->v.type[e] == TK_CONTROL ? e : -1;
    if (t->bos_id >= 0) {
        t->tmpl = malloc(2 * sizeof *t->tmpl);
        if (!t->tmpl) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        t->tmpl[0] = t->bos_id;
        t->tmpl[1] = -1;
        t->n_tmpl = 2;
    }
    t->dummy_prefix = t->sp_add_dummy_prefix;
    nl_status st = nl_tk_finish(ctx, t);
    if (st != NL_OK) return st;
    if (t->byte_fallback && !t->has_all_bytes)
        return nl_errorf(ctx, NL_EFORMAT, "'%s': byte_fallback is set but not all 256 <0xXX> byte pieces exist", t->path);
    return NL_OK;
}

nl_status nl_tk_load_spm(nl_ctx *ctx, const char *path, nl_tokenizer **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz <= 0) { fclose(f); return nl_errorf(ctx, NL_EFORMAT, "'%s': empty SentencePiece model", path); }
    unsigned char *buf = malloc((size_t)sz);
    if (!buf) { fclose(f); return nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", path); }
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) { free(buf); return nl_errorf(ctx, NL_EIO, "cannot read '%s'", path); }

    spiece *pieces = NULL;
    size_t np = 0, cap = 0;
    int seen_trainer = 0, model_type = 1, byte_fallback = 0, ws_suffix = 0, add_dummy = 1, remove_ws = 1, escape_ws = 1;
    const unsigned char *cm = NULL;
    size_t cm_n = 0;
    char name[64] = "";
    char bos_piece[64] = "<s>", eos_piece[64] = "</s>";
    nl_status st = NL_OK;
    nl_tokenizer *t = NULL;
    pb r = {buf, buf + sz, buf};
    while (r.p < r.end) {
        uint32_t field, wire;
        if (pb_key(&r, &field, &wire)) goto bad;
        if (field == 1 && wire == 2) {
            pb m;
            if (pb_bytes(&r, &m)) goto bad;
            spiece p = {NULL, 0, 0.0f, TK_NORMAL};
            while (m.p < m.end) {
                uint32_t f2, w2;
                if (pb_key(&m, &f2, &w2)) goto bad;
                if (f2 == 1 && w2 == 2) {
                    pb s;
                    if (pb_bytes(&m, &s)) goto bad;
                    p.s = (const char *)s.p;
                    p.n = (size_t)(s.end - s.p);
                } else if (f2 == 2 && w2 == 5) {
                    if (pb_float(&m, &p.score)) goto bad;
                } else if (f2 == 3 && w2 == 0) {
                    uint64_t v;
                    if (pb_varint(&m, &v)) goto bad;
                    if (v < 1 || v > 6) {
                        st = nl_errorf(ctx, NL_EFORMAT, "'%s': piece %zu has unknown type %llu", path, np, (unsigned long long)v);
                        goto done;
                    }
                    p.type = (int)v;
                } else if (pb_skip(&m, w2)) goto bad;
            }
            if (!p.s) { st = nl_errorf(ctx, NL_EFORMAT, "'%s': piece %zu has no string", path, np); goto done; }
            if (np == cap) {
                cap = cap ? cap * 2 : 1024;
                spiece *nps = realloc(pieces, cap * sizeof *nps);
                if (!nps) { st = nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", path); goto done; }
                pieces = nps;
            }
            pieces[np++] = p;
        } else if (field == 2 && wire == 2) {
            pb m;
            if (pb_bytes(&r, &m)) goto bad;
            seen_trainer = 1;
            while (m.p < m.end) {
                uint32_t f2, w2;
                uint64_t v;
                if (pb_key(&m, &f2, &w2)) goto bad;
                if (w2 == 0 && (f2 == 3 || f2 == 24 || f2 == 35)) {
                    if (pb_varint(&m, &v)) goto bad;
                    if (f2 == 3) model_type = (int)v;
                    else if (f2 == 24) ws_suffix = v != 0;
                    else byte_fallback = v != 0;
                } else if (w2 == 2 && (f2 == 46 || f2 == 47)) {
                    pb s;
                    if (pb_bytes(&m, &s)) goto bad;
                    size_t n = (size_t)(s.end - s.p);
                    char *dst = f2 == 46 ? bos_piece : eos_piece;
                    if (n > 0 && n < 64) { memcpy(dst, s.p, n); dst[n] = 0; }
                } else if (pb_skip(&m, w2)) goto bad;
            }
        } else if (field == 3 && wire == 2) {
            pb m;
            if (pb_bytes(&r, &m)) goto bad;
            while (m.p < m.end) {
                uint32_t f2, w2;
                uint64_t v;
                if (pb_key(&m, &f2, &w2)) goto bad;
                if (f2 == 1 && w2 == 2) {
                    pb s;
                    if (pb_bytes(&m, &s)) goto bad;
                    size_t n = (size_t)(s.end - s.p);
                    if (n >= sizeof name) n = sizeof name - 1;
                    memcpy(name, s.p, n);
                    name[n] = 0;
                } else if (f2 == 2 && w2 == 2) {
                    pb s;
                    if (pb_bytes(&m, &s)) goto bad;
                    cm = s.p;
                    cm_n = (size_t)(s.end - s.p);
                } else if (w2 == 0 && f2 >= 3 && f2 <= 5) {
                    if (pb_varint(&m, &v)) goto bad;
                    if (f2 == 3) add_dummy = v != 0;
                    else if (f2 == 4) remove_ws = v != 0;
                    else escape_ws = v != 0;
                } else if (pb_skip(&m, w2)) goto bad;
            }
        } else if (pb_skip(&r, wire)) goto bad;
    }
    if (np == 0) { st = nl_errorf(ctx, NL_EFORMAT, "'%s': no pieces: not a SentencePiece model", path); goto done; }
    if (!seen_trainer) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated or malformed SentencePiece model (no trainer_spec after %zu pieces)",
                       path, np);
        goto done;
    }
    if (model_type != 2) {
        static const char *const names[] = {"?", "unigram", "bpe", "word", "char"};
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': unsupported SentencePiece model type '%s' (supported: bpe)", path,
                       model_type >= 1 && model_type <= 4 ? names[model_type] : "unknown");
        goto done;
    }
    if (np > INT32_MAX / 2) goto bad;
    t = nl_tk_new(path);
    if (!t || nl_tk_vocab_init(&t->v, (int)np) || !(t->v.score = malloc(np * sizeof(float)))) {
        st = nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        if (nl_tk_vocab_set(&t->v, (int)i, pieces[i].s, pieces[i].n)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
        t->v.score[i] = pieces[i].score;
        t->v.type[i] = (uint8_t)pieces[i].type;
    }
    t->byte_fallback = byte_fallback;
    t->sp_add_dummy_prefix = add_dummy;
    t->sp_remove_extra_ws = remove_ws;
    t->sp_escape_ws = escape_ws;
    t->sp_ws_suffix = ws_suffix;
    if (cm_n && nl_tk_charsmap_init(&t->sp_cm, cm, cm_n)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': malformed precompiled_charsmap of normalizer '%s'", path, name);
        goto done;
    }
    st = nl_tk_spm_build(ctx, t, bos_piece, eos_piece);
    goto done;
bad:
    st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated or malformed SentencePiece model (at byte %zu of %ld)", path,
                   (size_t)(r.p - buf), sz);
done:
    free(pieces);
    free(buf);
    if (st != NL_OK) {
        nl_tokenizer_close(t);
        return st;
    }
    *out = t;
    return NL_OK;
}
