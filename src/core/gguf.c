/* gguf.c — the GGUF container reader (include/neuronlab/gguf.h).
 *
 * One pass over the buffer with a bounds-checked cursor: every length or count read from the
 * file is compared with the bytes left before it sizes an allocation or a loop (a string needs
 * its bytes, an array element at least one byte, a tensor info at least 24 bytes), so a
 * corrupt or hostile header fails with a message instead of a huge allocation. Keys and
 * names are copied into one pool and indexed by an open-addressing hash table; values stay in
 * the buffer. String arrays get an offset table at parse time so element i is O(1).
 * Checked by tests/test_gguf.c and fuzz/fuzz_gguf.c.
 */
#include "neuronlab/gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/atomic_file.h"

/* ---- ggml types --------------------------------------------------------------------------- */

typedef struct { const char *name; int elems, bytes; } ggml_type_row;

/* ids and block layouts as in ggml.h / ggml-common.h; removed ids (4, 5, 31–33, 36–38) stay NULL */
static const ggml_type_row ggml_types[NL_GGML_NTYPES] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},     [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},     [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},
    [10] = {"Q2_K", 256, 84},   [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66}, [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50}, [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110},
    [22] = {"IQ2_S", 256, 82},  [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},       [29] = {"IQ1_M", 256, 56},
    [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},  [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},
};

const char *nl_ggml_type_name(uint32_t type) { return type < NL_GGML_NTYPES ? ggml_types[type].name : NULL; }

int nl_ggml_type_block(uint32_t type, int *block_bytes) {
    if (type >= NL_GGML_NTYPES || !ggml_types[type].name) return 0;
    if (block_bytes) *block_bytes = ggml_types[type].bytes;
    return ggml_types[type].elems;
}

static const char *const vtype_names[NL_GGUF_NTYPES] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                                        "bool", "string", "array", "uint64", "int64", "float64"};
static const int vtype_size[NL_GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *nl_gguf_vtype_name(int t) { return t >= 0 && t < NL_GGUF_NTYPES ? vtype_names[t] : "?"; }

/* ---- the parsed file ------------------------------------------------------------------------ */

struct nl_gguf {
    char *path;
    const uint8_t *buf;
    size_t size;
    uint32_t version, alignment;
    uint64_t data_off;
    int64_t n_kv, n_tensors;
    nl_gguf_kv *kv;
    uint64_t **str_off;      /* per kv: string arrays' element offsets from kv->data, else NULL */
    nl_gguf_tensor *tensors;
    char *pool;              /* keys and names, NUL-terminated */
    int64_t *hash_kv, *hash_t; /* open addressing: index + 1, 0 = empty */
    uint64_t mask_kv, mask_t;
};

typedef struct {
    nl_ctx *ctx;
    nl_gguf *g;
    uint64_t pos;
    char *pool_end;
} cursor;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t left(const cursor *c) { return c->g->size - c->pos; }

static int rd(cursor *c, void *dst, size_t n) {
    if (left(c) < n) return -1;
    memcpy(dst, c->g->buf + c->pos, n);
    c->pos += n;
    return 0;
}

static nl_status truncated(cursor *c, const char *what) {
    return nl_errorf(c->ctx, NL_EFORMAT, "'%s': truncated GGUF file: %s at byte %" PRIu64 " runs past the end (%zu bytes)",
                     c->g->path, what, c->pos, c->g->size);
}

/* A GGUF string into the pool (keys, names): at most left bytes, no NUL inside. */
static nl_status rd_name(cursor *c, const char *what, const char **out) {
    uint64_t n;
    if (rd(c, &n, 8)) return truncated(c, what);
    if (n > left(c))
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': %s at byte %" PRIu64 " has length %" PRIu64 ", more than the %" PRIu64
                         " bytes left in the file", c->g->path, what, c->pos - 8, n, left(c));
    if (n > 65535)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': %s at byte %" PRIu64 " is %" PRIu64 " bytes long (at most 65535)",
                         c->g->path, what, c->pos - 8, n);
    const uint8_t *s = c->g->buf + c->pos;
    if (memchr(s, 0, n))
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': %s at byte %" PRIu64 " contains a NUL byte", c->g->path, what, c->pos - 8);
    memcpy(c->pool_end, s, n);
    c->pool_end[n] = 0;
    *out = c->pool_end;
    c->pool_end += n + 1;
    c->pos += n;
    return NL_OK;
}

/* Skips one value of type t (not an array); for strings returns length and start. */
static int skip_value(cursor *c, int t) {
    if (t == NL_GGUF_STRING) {
        uint64_t n;
        if (rd(c, &n, 8) || n > left(c)) return -1;
        c->pos += n;
        return 0;
    }
    if (left(c) < (uint64_t)vtype_size[t]) return -1;
    c->pos += (uint64_t)vtype_size[t];
    return 0;
}

static nl_status rd_kv(cursor *c, int64_t i) {
    nl_gguf *g = c->g;
    nl_gguf_kv *kv = &g->kv[i];
    char what[64];
    snprintf(what, sizeof what, "metadata key %" PRId64, i);
    nl_status st = rd_name(c, what, &kv->key);
    if (st != NL_OK) return st;
    uint32_t t;
    if (rd(c, &t, 4)) return truncated(c, "a metadata value type");
    if (t >= NL_GGUF_NTYPES)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': metadata key '%s' has unknown value type %u", g->path, kv->key, t);
    kv->type = (nl_gguf_vtype)t;
    kv->file_off = c->pos;
    if (t == NL_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (rd(c, &et, 4) || rd(c, &n, 8)) return truncated(c, "an array header");
        if (et >= NL_GGUF_NTYPES || et == NL_GGUF_ARRAY)
            return nl_errorf(c->ctx, NL_EFORMAT, "'%s': metadata key '%s' is an array of %s %u", g->path, kv->key,
                             et == NL_GGUF_ARRAY ? "arrays (not supported), type" : "unknown element type", et);
        uint64_t min_el = et == NL_GGUF_STRING ? 8 : (uint64_t)vtype_size[et];
        if (n > left(c) / min_el)
            return nl_errorf(c->ctx, NL_EFORMAT, "'%s': metadata key '%s' claims %" PRIu64 " %s elements, more than the %"
                             PRIu64 " bytes left in the file hold", g->path, kv->key, n, vtype_names[et], left(c));
        kv->arr_type = (nl_gguf_vtype)et;
        kv->n = n;
        kv->data = g->buf + c->pos;
        uint64_t start = c->pos;
        if (et == NL_GGUF_STRING) {
            if (n && !(g->str_off[i] = malloc(n * sizeof(uint64_t))))
                return nl_errorf(c->ctx, NL_ENOMEM, "'%s': out of memory reading metadata key '%s'", g->path, kv->key);
            for (uint64_t k = 0; k < n; k++) {
                g->str_off[i][k] = c->pos - start;
                if (skip_value(c, NL_GGUF_STRING))
                    return nl_errorf(c->ctx, NL_EFORMAT, "'%s': metadata key '%s': string %" PRIu64 " of %" PRIu64
                                     " runs past the end of the file", g->path, kv->key, k, n);
            }
        } else {
            c->pos += n * (uint64_t)vtype_size[et];
        }
        return NL_OK;
    }
    kv->n = 1;
    if (t == NL_GGUF_STRING) {
        uint64_t n;
        if (rd(c, &n, 8)) return truncated(c, "a string length");
        if (n > left(c))
            return nl_errorf(c->ctx, NL_EFORMAT, "'%s': metadata key '%s' has a string of %" PRIu64 " bytes, more than the %"
                             PRIu64 " left in the file", g->path, kv->key, n, left(c));
        kv->n = n;
        kv->data = g->buf + c->pos;
        c->pos += n;
        return NL_OK;
    }
    kv->data = g->buf + c->pos;
    if (skip_value(c, (int)t)) return truncated(c, "a metadata value");
    return NL_OK;
}

static nl_status rd_tensor(cursor *c, int64_t i) {
    nl_gguf *g = c->g;
    nl_gguf_tensor *t = &g->tensors[i];
    char what[64];
    snprintf(what, sizeof what, "tensor name %" PRId64, i);
    nl_status st = rd_name(c, what, &t->name);
    if (st != NL_OK) return st;
    uint32_t nd;
    if (rd(c, &nd, 4)) return truncated(c, "a tensor's dimension count");
    if (nd < 1 || nd > 4)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': tensor '%s' has %u dimensions (1 to 4 allowed)", g->path, t->name, nd);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if (rd(c, &ne, 8)) return truncated(c, "a tensor's shape");
        if (ne == 0 || ne > (uint64_t)INT64_MAX || numel > (uint64_t)INT64_MAX / ne)
            return nl_errorf(c->ctx, NL_EFORMAT, "'%s': tensor '%s' dimension %u is %" PRIu64 " (must be 1 to 2^63-1 with the"
                             " product in range)", g->path, t->name, d, ne);
        t->ne[d] = (int64_t)ne;
        numel *= ne;
    }
    if (rd(c, &t->type, 4) || rd(c, &t->offset, 8)) return truncated(c, "a tensor's type and offset");
    int bb = 0, be = nl_ggml_type_block(t->type, &bb);
    if (!be)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': tensor '%s' has unknown tensor type id %u", g->path, t->name, t->type);
    if (t->ne[0] % be)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': tensor '%s' is %s, but its row length %" PRId64
                         " is not a multiple of the block size %d", g->path, t->name, ggml_types[t->type].name, t->ne[0], be);
    uint64_t blocks = numel / (uint64_t)be;
    if (blocks > UINT64_MAX / (uint64_t)bb)
        return nl_errorf(c->ctx, NL_EFORMAT, "'%s': tensor '%s' is too large", g->path, t->name);
    t->nbytes = blocks * (uint64_t)bb;
    return NL_OK;
}

static int insert(int64_t *tab, uint64_t mask, const char *key, int64_t idx, const char *(*name_of)(const nl_gguf *, int64_t),
                  const nl_gguf *g) {
    for (uint64_t h = hash_str(key) & mask;; h = (h + 1) & mask) {
        if (!tab[h]) { tab[h] = idx + 1; return 0; }
        if (!strcmp(name_of(g, tab[h] - 1), key)) return -1;
    }
}
static const char *kv_name(const nl_gguf *g, int64_t i) { return g->kv[i].key; }
static const char *t_name(const nl_gguf *g, int64_t i) { return g->tensors[i].name; }

static int64_t *new_table(int64_t n, uint64_t *mask) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    *mask = cap - 1;
    return calloc(cap, sizeof(int64_t));
}

void nl_gguf_close(nl_gguf *g) {
    if (!g) return;
    if (g->str_off)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->str_off[i]);
    free(g->str_off);
    free(g->kv);
    free(g->tensors);
    free(g->pool);
    free(g->hash_kv);
    free(g->hash_t);
    free(g->path);
    free(g);
}

nl_status nl_gguf_parse(nl_ctx *ctx, const char *path, const void *buf, size_t size, nl_gguf **out) {
    *out = NULL;
    nl_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", path);
    }
    g->buf = buf;
    g->size = size;
    cursor c = {ctx, g, 0, NULL};
    nl_status st = NL_OK;
    uint8_t magic[4];
    uint64_t n_tensors, n_kv;
    if (rd(&c, magic, 4) || memcmp(magic, "GGUF", 4)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': not a GGUF file (bad magic)", path);
        goto done;
    }
    if (rd(&c, &g->version, 4)) { st = truncated(&c, "the version"); goto done; }
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version, sw = (v >> 24) | ((v >> 8) & 0xFF00) | ((v << 8) & 0xFF0000) | (v << 24);
        if (sw == 2 || sw == 3)
            st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': big-endian GGUF (version %u) is not supported", path, sw);
        else
            st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': unsupported GGUF version %u (supported: 2, 3)", path, v);
        goto done;
    }
    if (rd(&c, &n_tensors, 8) || rd(&c, &n_kv, 8)) { st = truncated(&c, "the header"); goto done; }
    /* a key is at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8 */
    if (n_kv > left(&c) / 13 || n_tensors > left(&c) / 32) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': header claims %" PRIu64 " tensors and %" PRIu64
                       " metadata keys, more than the file's %zu bytes can hold", path, n_tensors, n_kv, size);
        goto done;
    }
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    /* names and keys: at most the bytes left, plus one NUL each */
    size_t pool_cap = (size_t)left(&c) + (size_t)n_kv + (size_t)n_tensors + 1;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->str_off = calloc(n_kv ? n_kv : 1, sizeof *g->str_off);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    g->pool = malloc(pool_cap);
    g->hash_kv = new_table(g->n_kv, &g->mask_kv);
    g->hash_t = new_table(g->n_tensors, &g->mask_t);
    if (!g->kv || !g->str_off || !g->tensors || !g->pool || !g->hash_kv || !g->hash_t) {
        st = nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", path);
        goto done;
    }
    c.pool_end = g->pool;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if ((st = rd_kv(&c, i)) != NL_OK) goto done;
        if (insert(g->hash_kv, g->mask_kv, g->kv[i].key, i, kv_name, g)) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': metadata key '%s' appears twice", path, g->kv[i].key);
            goto done;
        }
    }
    g->alignment = 32;
    const nl_gguf_kv *al = nl_gguf_find(g, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type != NL_GGUF_U32) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': metadata key 'general.alignment' is a %s, expected uint32", path,
                           nl_gguf_vtype_name(al->type));
            goto done;
        }
        memcpy(&a, al->data, 4);
        if (a == 0 || (a & (a - 1)) || a > (1u << 30)) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': general.alignment %u is not a power of two", path, a);
            goto done;
        }
        g->alignment = a;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((st = rd_tensor(&c, i)) != NL_OK) goto done;
        if (insert(g->hash_t, g->mask_t, g->tensors[i].name, i, t_name, g)) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' appears twice", path, g->tensors[i].name);
            goto done;
        }
    }
    g->data_off = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && g->data_off > size) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': truncated GGUF file: the data section (byte %" PRIu64
                       ") starts past the end of the file (%zu bytes)", path, g->data_off, size);
        goto done;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        nl_gguf_tensor *t = &g->tensors[i];
        uint64_t room = size - g->data_off;
        if (t->offset % g->alignment) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' offset %" PRIu64 " is not a multiple of the alignment %u",
                           path, t->name, t->offset, g->alignment);
            goto done;
        }
        if (t->offset > room || t->nbytes > room - t->offset) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' data (offset %" PRIu64 ", %" PRIu64
                           " bytes) runs past the end of the file (%zu bytes)", path, t->name, g->data_off + t->offset,
                           t->nbytes, size);
            goto done;
        }
        t->data = g->buf + g->data_off + t->offset;
    }
done:
    if (st != NL_OK) {
        nl_gguf_close(g);
        return st;
    }
    *out = g;
    return NL_OK;
}

/* ---- accessors ------------------------------------------------------------------------------ */

uint32_t nl_gguf_version(const nl_gguf *g) { return g->version; }
const char *nl_gguf_path(const nl_gguf *g) { return g->path; }
uint32_t nl_gguf_alignment(const nl_gguf *g) { return g->alignment; }
uint64_t nl_gguf_data_offset(const nl_gguf *g) { return g->data_off; }
int64_t nl_gguf_n_kv(const nl_gguf *g) { return g->n_kv; }
const nl_gguf_kv *nl_gguf_kv_at(const nl_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL; }
int64_t nl_gguf_n_tensors(const nl_gguf *g) { return g->n_tensors; }
const nl_gguf_tensor *nl_gguf_tensor_at(const nl_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const nl_gguf_kv *nl_gguf_find(const nl_gguf *g, const char *key) {
    for (uint64_t h = hash_str(key) & g->mask_kv; g->hash_kv[h]; h = (h + 1) & g->mask_kv)
        if (!strcmp(g->kv[g->hash_kv[h] - 1].key, key)) return &g->kv[g->hash_kv[h] - 1];
    return NULL;
}

const nl_gguf_tensor *nl_gguf_find_tensor(const nl_gguf *g, const char *name) {
    for (uint64_t h = hash_str(name) & g->mask_t; g->hash_t[h]; h = (h + 1) & g->mask_t)
        if (!strcmp(g->tensors[g->hash_t[h] - 1].name, name)) return &g->tensors[g->hash_t[h] - 1];
    return NULL;
}

static double num_at(nl_gguf_vtype t, const uint8_t *p) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f; uint64_t u64;
            int64_t i64; double d; } v;
    memcpy(&v, p, (size_t)vtype_size[t]);
    switch (t) {
    case NL_GGUF_U8: case NL_GGUF_BOOL: return v.u8;
    case NL_GGUF_I8: return v.i8;
    case NL_GGUF_U16: return v.u16;
    case NL_GGUF_I16: return v.i16;
    case NL_GGUF_U32: return v.u32;
    case NL_GGUF_I32: return v.i32;
    case NL_GGUF_F32: return v.f;
    case NL_GGUF_U64: return (double)v.u64;
    case NL_GGUF_I64: return (double)v.i64;
    case NL_GGUF_F64: return v.d;
    default: return NAN;
    }
}

static int is_int_type(nl_gguf_vtype t) {
    return t == NL_GGUF_U8 || t == NL_GGUF_I8 || t == NL_GGUF_U16 || t == NL_GGUF_I16 || t == NL_GGUF_U32 ||
           t == NL_GGUF_I32 || t == NL_GGUF_U64 || t == NL_GGUF_I64;
}

static const char *type_desc(const nl_gguf_kv *kv, char *buf, size_t cap) {
    if (kv->type == NL_GGUF_ARRAY) snprintf(buf, cap, "array of %s", vtype_names[kv->arr_type]);
    else snprintf(buf, cap, "%s", vtype_names[kv->type]);
    return buf;
}

static nl_status lookup(nl_ctx *ctx, const nl_gguf *g, const char *key, int *found, const nl_gguf_kv **kv) {
    *kv = nl_gguf_find(g, key);
    if (found) *found = *kv != NULL;
    if (!*kv && !found) return nl_errorf(ctx, NL_EFORMAT, "'%s': missing metadata key '%s'", g->path, key);
    return NL_OK;
}

static nl_status wrong(nl_ctx *ctx, const nl_gguf *g, const nl_gguf_kv *kv, const char *want) {
    char d[64];
    return nl_errorf(ctx, NL_EFORMAT, "'%s': metadata key '%s' is a%s %s, expected %s", g->path, kv->key,
                     kv->type == NL_GGUF_ARRAY || kv->type == NL_GGUF_I8 || kv->type == NL_GGUF_I16 ||
                     kv->type == NL_GGUF_I32 || kv->type == NL_GGUF_I64 ? "n" : "",
                     type_desc(kv, d, sizeof d), want);
}

nl_status nl_gguf_get_u64(nl_ctx *ctx, const nl_gguf *g, const char *key, uint64_t *out, int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    if (!is_int_type(kv->type)) return wrong(ctx, g, kv, "an unsigned integer");
    if (kv->type == NL_GGUF_U64) { memcpy(out, kv->data, 8); return NL_OK; }
    int64_t v;
    if (kv->type == NL_GGUF_I64) memcpy(&v, kv->data, 8);
    else v = (int64_t)num_at(kv->type, kv->data);
    if (v < 0) return nl_errorf(ctx, NL_EFORMAT, "'%s': metadata key '%s' is %" PRId64 ", expected >= 0", g->path, key, v);
    *out = (uint64_t)v;
    return NL_OK;
}

nl_status nl_gguf_get_i64(nl_ctx *ctx, const nl_gguf *g, const char *key, int64_t *out, int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    if (!is_int_type(kv->type)) return wrong(ctx, g, kv, "an integer");
    if (kv->type == NL_GGUF_I64) { memcpy(out, kv->data, 8); return NL_OK; }
    if (kv->type == NL_GGUF_U64) {
        uint64_t u;
        memcpy(&u, kv->data, 8);
        if (u > (uint64_t)INT64_MAX) return nl_errorf(ctx, NL_EFORMAT, "'%s': metadata key '%s' is out of range", g->path, key);
        *out = (int64_t)u;
        return NL_OK;
    }
    *out = (int64_t)num_at(kv->type, kv->data);
    return NL_OK;
}

nl_status nl_gguf_get_f64(nl_ctx *ctx, const nl_gguf *g, const char *key, double *out, int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    if (kv->type != NL_GGUF_F32 && kv->type != NL_GGUF_F64 && !is_int_type(kv->type)) return wrong(ctx, g, kv, "a number");
    *out = num_at(kv->type, kv->data);
    return NL_OK;
}

nl_status nl_gguf_get_bool(nl_ctx *ctx, const nl_gguf *g, const char *key, int *out, int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    if (kv->type != NL_GGUF_BOOL) return wrong(ctx, g, kv, "a bool");
    *out = kv->data[0] != 0;
    return NL_OK;
}

nl_status nl_gguf_get_str(nl_ctx *ctx, const nl_gguf *g, const char *key, const char **s, size_t *n, int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    if (kv->type != NL_GGUF_STRING) return wrong(ctx, g, kv, "a string");
    *s = (const char *)kv->data;
    *n = (size_t)kv->n;
    return NL_OK;
}

nl_status nl_gguf_get_arr(nl_ctx *ctx, const nl_gguf *g, const char *key, nl_gguf_vtype want, const nl_gguf_kv **out,
                          int *found) {
    const nl_gguf_kv *kv;
    nl_status st = lookup(ctx, g, key, found, &kv);
    if (st != NL_OK || !kv) return st;
    int ok = kv->type == NL_GGUF_ARRAY &&
             (kv->arr_type == want || (want != NL_GGUF_STRING && want != NL_GGUF_BOOL && is_int_type(want) &&
                                       is_int_type(kv->arr_type)) ||
              (want == NL_GGUF_F32 && kv->arr_type == NL_GGUF_F64));
    if (!ok) {
        char w[64];
        snprintf(w, sizeof w, "an array of %s", vtype_names[want]);
        return wrong(ctx, g, kv, w);
    }
    *out = kv;
    return NL_OK;
}

double nl_gguf_arr_num(const nl_gguf_kv *kv, uint64_t i) {
    if (kv->type != NL_GGUF_ARRAY || i >= kv->n || kv->arr_type == NL_GGUF_STRING) return NAN;
    return num_at(kv->arr_type, kv->data + i * (uint64_t)vtype_size[kv->arr_type]);
}

const char *nl_gguf_arr_str(const nl_gguf *g, const nl_gguf_kv *kv, uint64_t i, size_t *n) {
    *n = 0;
    if (kv->type != NL_GGUF_ARRAY || kv->arr_type != NL_GGUF_STRING || i >= kv->n) return NULL;
    int64_t idx = kv - g->kv;
    const uint8_t *p = kv->data + g->str_off[idx][i];
    uint64_t len;
    memcpy(&len, p, 8);
    *n = (size_t)len;
    return (const char *)p + 8;
}

/* ---- writer (gguf.h "writer") ----------------------------------------------------------------- */


typedef struct {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    uint64_t nbytes, offset;
    const void *data;
    nl_gguf_fill_fn fill;
    void *user;
} gw_tensor;

struct nl_gguf_writer {
    uint32_t alignment;
    uint8_t *kv;             /* serialised key/value pairs */
    size_t kv_n, kv_cap;
    int64_t n_kv;
    char **keys;             /* for the uniqueness check */
    int64_t keys_cap;
    gw_tensor *t;
    int64_t n_t, t_cap;
};

nl_status nl_gguf_writer_create(nl_ctx *ctx, uint32_t alignment, nl_gguf_writer **out) {
    *out = NULL;
    if (alignment == 0) alignment = 32;
    if (alignment & (alignment - 1))
        return nl_errorf(ctx, NL_EINVAL, "GGUF alignment %u is not a power of two", alignment);
    nl_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    w->alignment = alignment;
    *out = w;
    if (alignment != 32) return nl_gguf_writer_u32(ctx, w, "general.alignment", alignment);
    return NL_OK;
}

void nl_gguf_writer_destroy(nl_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->keys);
    free(w->kv);
    free(w->t);
    free(w);
}

static int gw_put(nl_gguf_writer *w, const void *p, size_t n) {
    if (w->kv_n + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_n + n) cap *= 2;
        uint8_t *q = realloc(w->kv, cap);
        if (!q) return -1;
        w->kv = q;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_n, p, n);
    w->kv_n += n;
    return 0;
}

static int gw_str(nl_gguf_writer *w, const char *s, size_t n) {
    uint64_t len = n;
    return gw_put(w, &len, 8) || gw_put(w, s, n);
}

/* Starts key/value pair `key` of value type t: checks uniqueness, writes key and type. */
static nl_status gw_key(nl_ctx *ctx, nl_gguf_writer *w, const char *key, uint32_t t) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: metadata key '%s' added twice", key);
    if (w->n_kv == w->keys_cap) {
        int64_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (!k) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        w->keys = k;
        w->keys_cap = cap;
    }
    if (!(w->keys[w->n_kv] = strdup(key)) || gw_str(w, key, strlen(key)) || gw_put(w, &t, 4))
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    w->n_kv++;
    return NL_OK;
}

static nl_status gw_scalar(nl_ctx *ctx, nl_gguf_writer *w, const char *key, uint32_t t, const void *v, size_t n) {
    nl_status st = gw_key(ctx, w, key, t);
    if (st == NL_OK && gw_put(w, v, n)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}

nl_status nl_gguf_writer_str(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const char *s, size_t n) {
    nl_status st = gw_key(ctx, w, key, NL_GGUF_STRING);
    if (st == NL_OK && gw_str(w, s, n)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}
nl_status nl_gguf_writer_u32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, uint32_t v) {
    return gw_scalar(ctx, w, key, NL_GGUF_U32, &v, 4);
}
nl_status nl_gguf_writer_i32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, int32_t v) {
    return gw_scalar(ctx, w, key, NL_GGUF_I32, &v, 4);
}
nl_status nl_gguf_writer_f32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, float v) {
    return gw_scalar(ctx, w, key, NL_GGUF_F32, &v, 4);
}
nl_status nl_gguf_writer_bool(nl_ctx *ctx, nl_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return gw_scalar(ctx, w, key, NL_GGUF_BOOL, &b, 1);
}

static nl_status gw_arr_head(nl_ctx *ctx, nl_gguf_writer *w, const char *key, uint32_t et, uint64_t n) {
    nl_status st = gw_key(ctx, w, key, NL_GGUF_ARRAY);
    if (st == NL_OK && (gw_put(w, &et, 4) || gw_put(w, &n, 8))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}

nl_status nl_gguf_writer_arr_str(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const char *const *s, const size_t *len,
                                 uint64_t n) {
    nl_status st = gw_arr_head(ctx, w, key, NL_GGUF_STRING, n);
    for (uint64_t i = 0; st == NL_OK && i < n; i++)
        if (gw_str(w, s[i], len ? len[i] : strlen(s[i]))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}
nl_status nl_gguf_writer_arr_i32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    nl_status st = gw_arr_head(ctx, w, key, NL_GGUF_I32, n);
    if (st == NL_OK && n && gw_put(w, v, (size_t)n * 4)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}
nl_status nl_gguf_writer_arr_f32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    nl_status st = gw_arr_head(ctx, w, key, NL_GGUF_F32, n);
    if (st == NL_OK && n && gw_put(w, v, (size_t)n * 4)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return st;
}

nl_status nl_gguf_writer_tensor(nl_ctx *ctx, nl_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                const int64_t *ne, const void *data, nl_gguf_fill_fn fill, void *user) {
    int bb = 0, be = nl_ggml_type_block(type, &bb);
    if (!be) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' has unknown type id %u", name, type);
    if (n_dims < 1 || n_dims > 4) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' has %d dimensions", name, n_dims);
    if (!fill && !data) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' has no data", name);
    uint64_t numel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' dimension %d is %lld", name, d, (long long)ne[d]);
        numel *= (uint64_t)ne[d];
    }
    if (ne[0] % be)
        return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' is %s but its row length %lld is not a multiple of %d", name,
                         ggml_types[type].name, (long long)ne[0], be);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return nl_errorf(ctx, NL_EINVAL, "GGUF writer: tensor '%s' added twice", name);
    if (w->n_t == w->t_cap) {
        int64_t cap = w->t_cap ? w->t_cap * 2 : 64;
        gw_tensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        w->t = t;
        w->t_cap = cap;
    }
    gw_tensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = numel / (uint64_t)be * (uint64_t)bb;
    t->data = data;
    t->fill = fill;
    t->user = user;
    w->n_t++;
    return NL_OK;
}

static int gw_pad(FILE *f, uint64_t pos, uint32_t align) {
    static const uint8_t zero[64] = {0};
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t k = pad < sizeof zero ? (size_t)pad : sizeof zero;
        if (fwrite(zero, 1, k, f) != k) return -1;
        pad -= k;
    }
    return 0;
}

nl_status nl_gguf_writer_write(nl_ctx *ctx, nl_gguf_writer *w, const char *path) {
    /* header + kv + tensor infos, in memory; then the data, tensor by tensor */
    size_t kv_keep = w->kv_n;
    uint64_t off = 0;
    nl_status st = NL_OK;
    for (int64_t i = 0; i < w->n_t; i++) {
        gw_tensor *t = &w->t[i];
        uint32_t nd = (uint32_t)t->n_dims;
        uint64_t ne[4];
        for (int d = 0; d < 4; d++) ne[d] = (uint64_t)t->ne[d];
        t->offset = off;
        if (gw_str(w, t->name, strlen(t->name)) || gw_put(w, &nd, 4) || gw_put(w, ne, 8 * nd) || gw_put(w, &t->type, 4) ||
            gw_put(w, &off, 8)) {
            w->kv_n = kv_keep;
            return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        }
        off += (t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
    }
    uint8_t head[24];
    uint32_t version = 3;
    uint64_t nt = (uint64_t)w->n_t, nk = (uint64_t)w->n_kv;
    memcpy(head, "GGUF", 4);
    memcpy(head + 4, &version, 4);
    memcpy(head + 8, &nt, 8);
    memcpy(head + 16, &nk, 8);
    nl_atomic_file a = {0};
    if ((st = nl_atomic_open(ctx, path, &a)) != NL_OK) {
        w->kv_n = kv_keep;
        return st;
    }
    uint64_t pos = 24 + w->kv_n;
    void *buf = NULL;
    uint64_t buf_cap = 0;
    if (fwrite(head, 1, 24, a.f) != 24 || fwrite(w->kv, 1, w->kv_n, a.f) != w->kv_n || gw_pad(a.f, pos, w->alignment))
        st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
    for (int64_t i = 0; st == NL_OK && i < w->n_t; i++) {
        gw_tensor *t = &w->t[i];
        const void *src = t->data;
        if (t->fill) {
            if (t->nbytes > buf_cap) {
                free(buf);
                buf_cap = t->nbytes;
                if (!(buf = malloc((size_t)buf_cap))) {
                    st = nl_errorf(ctx, NL_ENOMEM, "out of memory writing '%s'", path);
                    break;
                }
            }
            memset(buf, 0, (size_t)t->nbytes);
            if ((st = t->fill(t->user, ctx, i, buf, t->nbytes)) != NL_OK) break;
            src = buf;
        }
        if (fwrite(src, 1, (size_t)t->nbytes, a.f) != t->nbytes || gw_pad(a.f, t->nbytes, w->alignment))
            st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
    }
    free(buf);
    w->kv_n = kv_keep; /* the tensor infos are rebuilt by the next write */
    if (st != NL_OK) {
        nl_atomic_abort(&a);
        return st;
    }
    return nl_atomic_commit(ctx, &a);
}

nl_status nl_gguf_writer_copy(nl_ctx *ctx, nl_gguf_writer *w, const nl_gguf *g, const nl_gguf_kv *kv) {
    if (kv->type == NL_GGUF_STRING) return nl_gguf_writer_str(ctx, w, kv->key, (const char *)kv->data, (size_t)kv->n);
    if (kv->type != NL_GGUF_ARRAY) return gw_scalar(ctx, w, kv->key, kv->type, kv->data, (size_t)vtype_size[kv->type]);
    nl_status st = gw_arr_head(ctx, w, kv->key, kv->arr_type, kv->n);
    if (st != NL_OK) return st;
    uint64_t bytes = 0;
    if (kv->arr_type == NL_GGUF_STRING) {
        if (kv->n) {
            size_t n;
            const char *last = nl_gguf_arr_str(g, kv, kv->n - 1, &n);
            bytes = (uint64_t)(last - (const char *)kv->data) + n;
        }
    } else {
        bytes = kv->n * (uint64_t)vtype_size[kv->arr_type];
    }
    if (bytes && gw_put(w, kv->data, (size_t)bytes)) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

/* ---- llama.cpp's pre-tokenizers ----------------------------------------------------------- */

static const char GPT2_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_RE[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const nl_gguf_pretok PRETOKS[] = {
    {"default", GPT2_RE, 1, 0},    {"gpt2", GPT2_RE, 1, 0},        {"gpt-2", GPT2_RE, 1, 0},        {"phi-2", GPT2_RE, 1, 0},
    {"olmo", GPT2_RE, 1, 0},       {"mpt", GPT2_RE, 1, 0},         {"llama-bpe", LLAMA3_RE, 0, 1},  {"llama3", LLAMA3_RE, 0, 1},
    {"llama-v3", LLAMA3_RE, 0, 1}, {"smaug-bpe", LLAMA3_RE, 0, 1}, {"qwen2", QWEN2_RE, 0, 0},       {"stablelm2", QWEN2_RE, 0, 0},
    {"deepseek-r1-qwen", QWEN2_RE, 0, 0},
};

const nl_gguf_pretok *nl_gguf_pretoks(int *n) {
    *n = (int)(sizeof PRETOKS / sizeof *PRETOKS);
    return PRETOKS;
}

const nl_gguf_pretok *nl_gguf_pretok_find(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof PRETOKS / sizeof *PRETOKS; i++)
        if (strlen(PRETOKS[i].name) == n && !memcmp(PRETOKS[i].name, name, n)) return &PRETOKS[i];
    return NULL;
}
