/* st_writer.c — safetensors writer with atomic replacement (see st_writer.h). Tensors with
 * 4-byte elements are written before 2-byte ones, so each starts aligned to its element size
 * as the reader requires. Checked by tests/test_st_writer.c. */
#include "neuronlab/st_writer.h"

#include "neuronlab/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    nl_dtype dtype;
    int ndim;
    int64_t shape[4];
    const float *data;
    int64_t numel;
    uint64_t off;      /* offset in the data section (set by nl_st_writer_write) */
} st_item;

struct nl_st_writer {
    st_item *items;
    int n, cap;
    json_t *meta;
};

nl_status nl_st_writer_create(nl_ctx *ctx, nl_st_writer **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    (*out)->meta = json_object();
    json_object_set_new((*out)->meta, "format", json_string("pt"));
    return NL_OK;
}

void nl_st_writer_destroy(nl_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->items[i].name);
    free(w->items);
    json_decref(w->meta);
    free(w);
}

nl_status nl_st_writer_meta(nl_ctx *ctx, nl_st_writer *w, const char *key, const char *value) {
    if (json_object_set_new(w->meta, key, json_string(value)))
        return nl_errorf(ctx, NL_EINVAL, "safetensors metadata '%s' is not valid UTF-8", key);
    return NL_OK;
}

nl_status nl_st_writer_add(nl_ctx *ctx, nl_st_writer *w, const char *name, nl_dtype dtype, int ndim,
                           const int64_t *shape, const float *data) {
    NL_ASSERT(ndim >= 0 && ndim <= 4);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->items[i].name, name)) return nl_errorf(ctx, NL_EINVAL, "duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 32;
        st_item *ni = realloc(w->items, (size_t)nc * sizeof *ni);
        if (!ni) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        w->items = ni;
        w->cap = nc;
    }
    st_item *it = &w->items[w->n];
    memset(it, 0, sizeof *it);
    if (!(it->name = strdup(name))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    it->dtype = dtype;
    it->ndim = ndim;
    it->numel = 1;
    for (int i = 0; i < ndim; i++) {
        it->shape[i] = shape[i];
        it->numel *= shape[i];
    }
    it->data = data;
    w->n++;
    return NL_OK;
}

static const char *st_dtype(nl_dtype d) { return d == NL_DT_F32 ? "F32" : d == NL_DT_F16 ? "F16" : "BF16"; }

nl_status nl_st_writer_write(nl_ctx *ctx, nl_st_writer *w, const char *path) {
    /* data: 4-byte tensors, then 2-byte ones, each group in the order added, so every tensor
     * starts at a multiple of its element size (the reader checks it; one dtype: added order) */
    uint64_t off = 0;
    for (size_t es = 4; es >= 2; es -= 2)
        for (int i = 0; i < w->n; i++)
            if (nl_dtype_size(w->items[i].dtype) == es) {
                w->items[i].off = off;
                off += (uint64_t)w->items[i].numel * es;
            }
    /* header: "__metadata__" first, then the tensors in order (jansson keeps insertion order) */
    json_t *h = json_object();
    json_object_set(h, "__metadata__", w->meta);
    for (int i = 0; i < w->n; i++) {
        st_item *it = &w->items[i];
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; d < it->ndim; d++) json_array_append_new(shape, json_integer(it->shape[d]));
        uint64_t nb = (uint64_t)it->numel * nl_dtype_size(it->dtype);
        json_array_append_new(offs, json_integer((json_int_t)it->off));
        json_array_append_new(offs, json_integer((json_int_t)(it->off + nb)));
        json_object_set_new(e, "dtype", json_string(st_dtype(it->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(h, it->name, e);
    }
    char *hj = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!hj) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    size_t hl = strlen(hj), pad = (8 - (8 + hl) % 8) % 8;
    nl_atomic_file af;
    nl_status st = nl_atomic_open(ctx, path, &af);
    if (st != NL_OK) { free(hj); return st; }
    FILE *f = af.f;
    uint64_t n = hl + pad;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hj, 1, hl, f) == hl && fwrite("        ", 1, pad, f) == pad;
    free(hj);
    enum { CH = 1 << 16 };
    static _Thread_local uint16_t half[CH];
    for (int j = 0; ok && j < 2 * w->n; j++) { /* the F32 tensors, then the others (as above) */
        st_item *it = &w->items[j % w->n];
        if ((it->dtype == NL_DT_F32) != (j < w->n)) continue;
        if (it->dtype == NL_DT_F32) {
            ok = fwrite(it->data, sizeof(float), (size_t)it->numel, f) == (size_t)it->numel;
            continue;
        }
        for (int64_t a = 0; ok && a < it->numel; a += CH) {
            int64_t m = it->numel - a < CH ? it->numel - a : CH;
            for (int64_t k = 0; k < m; k++)
                half[k] = it->dtype == NL_DT_BF16 ? nl_f32_to_bf16(it->data[a + k]) : nl_f32_to_f16(it->data[a + k]);
            ok = fwrite(half, 2, (size_t)m, f) == (size_t)m;
        }
    }
    if (!ok) {
        int err = errno;
        nl_atomic_abort(&af);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(err ? err : EIO));
    }
    return nl_atomic_commit(ctx, &af);
}
