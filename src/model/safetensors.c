/* safetensors.c — validating safetensors reader over caller-mapped bytes.
 *
 * Reads the 8-byte little-endian header length and the JSON header (jansson), checks
 * every entry against the file (see include/neuronlab/safetensors.h for the rules) and
 * keeps a name-sorted index for lookups by binary search. Never copies tensor data.
 * Beyond each entry's own checks, the layout is checked as a whole: the data section ends
 * exactly where the last tensor ends and tensors do not overlap (check_layout).
 * Checked by tests/test_hf.c.
 */
#include "neuronlab/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nl_safetensors {
    char *path;
    int n;
    nl_st_entry *e;   /* (n) sorted by name */
    char **own;       /* (n) per-entry string storage (name, then dtype name) */
    int64_t *shapes;  /* pool of every entry's dims */
};

/* Element sizes in bits of every dtype the format defines (safetensors Dtype enum). */
static const struct {
    const char *name;
    int bits;
    int supported;
    nl_dtype dt;
} dtypes[] = {
    {"F32", 32, 1, NL_DT_F32},  {"F16", 16, 1, NL_DT_F16},  {"BF16", 16, 1, NL_DT_BF16},
    {"F64", 64, 0, NL_DT_F32},  {"I64", 64, 0, NL_DT_F32},  {"U64", 64, 0, NL_DT_F32},
    {"C64", 64, 0, NL_DT_F32},  {"I32", 32, 0, NL_DT_F32},  {"U32", 32, 0, NL_DT_F32},
    {"I16", 16, 0, NL_DT_F32},  {"U16", 16, 0, NL_DT_F32},  {"I8", 8, 0, NL_DT_F32},
    {"U8", 8, 0, NL_DT_F32},    {"BOOL", 8, 0, NL_DT_F32},  {"F8_E5M2", 8, 0, NL_DT_F32},
    {"F8_E4M3", 8, 0, NL_DT_F32}, {"F8_E8M0", 8, 0, NL_DT_F32}, {"F6_E2M3", 6, 0, NL_DT_F32},
    {"F6_E3M2", 6, 0, NL_DT_F32}, {"F4", 4, 0, NL_DT_F32},
};

/* "[a, b, c]" into buf. */
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap - 24; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const nl_st_entry *)a)->name, ((const nl_st_entry *)b)->name);
}

void nl_safetensors_close(nl_safetensors *st) {
    if (!st) return;
    if (st->own)
        for (int i = 0; i < st->n; i++) free(st->own[i]);
    free(st->own);
    free(st->e);
    free(st->shapes);
    free(st->path);
    free(st);
}

/* Reads a non-negative JSON integer (integral reals accepted); 0 on failure. */
static int json_nonneg(const json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0) return 0;
        *out = (int64_t)x;
        return 1;
    }
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const nl_st_entry *x = *(const nl_st_entry *const *)a, *y = *(const nl_st_entry *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* The data section holds the tensors and nothing else: it ends where the last tensor ends
 * (bytes inserted into or appended to the file shift or hide data), and no two tensors
 * share a byte. */
static nl_status check_layout(nl_ctx *ctx, const nl_safetensors *st, const unsigned char *data, size_t data_size,
                              uint64_t data_end) {
    if (data_size != data_end)
        return nl_errorf(ctx, NL_EFORMAT,
                         "cannot read '%s': the data section has %zu bytes but the last tensor ends at byte %llu "
                         "(bytes inserted or appended?)", st->path, data_size, (unsigned long long)data_end);
    const nl_st_entry **by = malloc((size_t)(st->n ? st->n : 1) * sizeof *by);
    if (!by) return nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", st->path);
    int k = 0;
    for (int i = 0; i < st->n; i++)
        if (st->e[i].nbytes) by[k++] = &st->e[i]; /* empty tensors occupy no bytes */
    qsort(by, (size_t)k, sizeof *by, cmp_by_offset);
    nl_status status = NL_OK;
    for (int i = 1; i < k && status == NL_OK; i++) {
        const unsigned char *prev_end = (const unsigned char *)by[i - 1]->data + by[i - 1]->nbytes;
        if ((const unsigned char *)by[i]->data < prev_end)
            status = nl_errorf(ctx, NL_EFORMAT,
                               "cannot read '%s': tensor '%s' (bytes %lld..%lld of the data section) overlaps tensor "
                               "'%s' (bytes %lld..%lld)", st->path, by[i]->name,
                               (long long)((const unsigned char *)by[i]->data - data),
                               (long long)((const unsigned char *)by[i]->data - data + (long long)by[i]->nbytes),
                               by[i - 1]->name, (long long)((const unsigned char *)by[i - 1]->data - data),
                               (long long)(prev_end - data));
    }
    free(by);
    return status;
}

nl_status nl_safetensors_open(nl_ctx *ctx, const char *path, const void *base, size_t size, nl_safetensors **out) {
    *out = NULL;
    const unsigned char *b = base;
    if (size < 8)
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': %zu bytes is too short for a safetensors file", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > size - 8)
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': header length %llu exceeds file size %zu", path,
                         (unsigned long long)hlen, size);
    if (hlen < 2)
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': header length %llu is too short for a JSON header", path,
                         (unsigned long long)hlen);
    const char *hdr = (const char *)b + 8;
    size_t hn = (size_t)hlen;
    while (hn > 0 && hdr[hn - 1] == '\0') hn--; /* tolerate NUL padding as well as spaces */
    const unsigned char *data = b + 8 + hlen;
    const size_t data_size = size - 8 - (size_t)hlen;

    json_error_t jerr;
    json_t *root = json_loadb(hdr, hn, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': header is not valid JSON (%s, at byte %d)", path, jerr.text,
                         jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': header is not a JSON object", path);
    }

    nl_status status = NL_OK;
    nl_safetensors *st = calloc(1, sizeof *st);
    size_t cap = json_object_size(root), total_dims = 0;
    if (!st || !(st->path = strdup(path)) || !(st->e = calloc(cap ? cap : 1, sizeof *st->e)) ||
        !(st->own = calloc(cap ? cap : 1, sizeof *st->own))) {
        status = nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", path);
        goto done;
    }
    const char *key;
    json_t *val;
    /* Pass 1: count dims so shapes live in one pool. */
    json_object_foreach(root, key, val) {
        json_t *sh = json_is_object(val) ? json_object_get(val, "shape") : NULL;
        if (json_is_array(sh)) total_dims += json_array_size(sh);
    }
    if (!(st->shapes = calloc(total_dims ? total_dims : 1, sizeof *st->shapes))) {
        status = nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", path);
        goto done;
    }
    size_t dim_at = 0;
    uint64_t data_end = 0; /* the largest end offset */
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (!json_is_object(val)) {
            status = nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': header entry '%s' is not an object", path, key);
            goto done;
        }
        json_t *jdt = json_object_get(val, "dtype"), *jsh = json_object_get(val, "shape"),
               *jof = json_object_get(val, "data_offsets");
        if (!json_is_string(jdt)) {
            status = nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': tensor '%s' has no dtype string", path, key);
            goto done;
        }
        if (!json_is_array(jsh)) {
            status = nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': tensor '%s' has no shape array", path, key);
            goto done;
        }
        int64_t ob, oe;
        if (!json_is_array(jof) || json_array_size(jof) != 2 || !json_nonneg(json_array_get(jof, 0), &ob) ||
            !json_nonneg(json_array_get(jof, 1), &oe) || ob > oe) {
            status = nl_errorf(ctx, NL_EFORMAT,
                               "cannot read '%s': tensor '%s' has invalid data_offsets (want [begin, end] with 0 <= begin <= end)",
                               path, key);
            goto done;
        }
        nl_st_entry *e = &st->e[st->n];
        const char *dname = json_string_value(jdt);
        size_t kl = strlen(key), dl = strlen(dname);
        char *own = malloc(kl + dl + 2);
        if (!own) {
            status = nl_errorf(ctx, NL_ENOMEM, "cannot read '%s': out of memory", path);
            goto done;
        }
        memcpy(own, key, kl + 1);
        memcpy(own + kl + 1, dname, dl + 1);
        st->own[st->n++] = own;
        e->name = own;
        e->dtype_name = own + kl + 1;
        e->ndim = (int)json_array_size(jsh);
        e->shape = st->shapes + dim_at;
        int64_t numel = 1;
        int overflow = 0;
        for (int i = 0; i < e->ndim; i++) {
            int64_t d;
            if (!json_nonneg(json_array_get(jsh, (size_t)i), &d)) {
                status = nl_errorf(ctx, NL_EFORMAT,
                                   "cannot read '%s': tensor '%s' has an invalid shape (dimension %d is not a non-negative integer)",
                                   path, key, i);
                goto done;
            }
            st->shapes[dim_at + (size_t)i] = d;
            if (__builtin_mul_overflow(numel, d, &numel)) overflow = 1;
        }
        dim_at += (size_t)e->ndim;
        char sbuf[160];
        if (overflow) {
            status = nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': tensor '%s' has shape %s, too large", path, key,
                               shape_str(sbuf, sizeof sbuf, e->ndim, e->shape));
            goto done;
        }
        if ((uint64_t)oe > data_size) {
            status = nl_errorf(ctx, NL_EFORMAT,
                               "cannot read '%s': tensor '%s' ends at byte %lld of the data section, but only %zu bytes "
                               "follow the header (truncated file?)", path, key, (long long)oe, data_size);
            goto done;
        }
        int bits = 0;
        for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
            if (strcmp(dname, dtypes[i].name) == 0) {
                bits = dtypes[i].bits;
                e->supported = dtypes[i].supported;
                e->dtype = dtypes[i].dt;
            }
        if (bits > 0) { /* unknown dtype names: only the bounds above can be checked */
            int64_t nbits;
            if (__builtin_mul_overflow(numel, (int64_t)bits, &nbits) || nbits % 8 != 0 || nbits / 8 != oe - ob) {
                status = nl_errorf(ctx, NL_EFORMAT,
                                   "cannot read '%s': tensor '%s' has shape %s of %s (%lld bytes) but its data_offsets "
                                   "span %lld bytes", path, key, shape_str(sbuf, sizeof sbuf, e->ndim, e->shape), dname,
                                   (long long)(numel * bits / 8), (long long)(oe - ob));
                goto done;
            }
        }
        if (bits >= 8 && ob % (bits / 8) != 0) {
            status = nl_errorf(ctx, NL_EFORMAT,
                               "cannot read '%s': tensor '%s' of %s starts at byte %lld of the data section, which is not "
                               "a multiple of its %d-byte element size", path, key, dname, (long long)ob, bits / 8);
            goto done;
        }
        e->data = data + ob;
        e->nbytes = (size_t)(oe - ob);
        if ((uint64_t)oe > data_end) data_end = (uint64_t)oe;
    }
    if ((status = check_layout(ctx, st, data, data_size, data_end)) != NL_OK) goto done;
    qsort(st->e, (size_t)st->n, sizeof *st->e, cmp_entry);
done:
    json_decref(root);
    if (status != NL_OK) {
        nl_safetensors_close(st);
        return status;
    }
    *out = st;
    return NL_OK;
}

const char *nl_safetensors_path(const nl_safetensors *st) { return st->path; }
int nl_safetensors_count(const nl_safetensors *st) { return st->n; }

const nl_st_entry *nl_safetensors_entry(const nl_safetensors *st, int i) {
    NL_ASSERT(i >= 0 && i < st->n);
    return &st->e[i];
}

const nl_st_entry *nl_safetensors_find(const nl_safetensors *st, const char *name) {
    nl_st_entry k = {.name = name};
    return bsearch(&k, st->e, (size_t)st->n, sizeof *st->e, cmp_entry);
}

nl_status nl_safetensors_view(nl_ctx *ctx, const nl_safetensors *st, const nl_st_entry *e, nl_tensor *out) {
    memset(out, 0, sizeof *out);
    if (!e->supported)
        return nl_errorf(ctx, NL_EUNSUPPORTED,
                         "'%s': tensor '%s' has dtype %s, which is not supported (supported: F32, F16, BF16)", st->path,
                         e->name, e->dtype_name);
    if (e->ndim > 4)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': tensor '%s' has %d dimensions, at most 4 are supported", st->path,
                         e->name, e->ndim);
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    for (int i = 0; i < e->ndim; i++) out->shape[i] = e->shape[i];
    /* A zero-size tensor still gets a non-NULL pointer: data == NULL means "absent". */
    out->data = e->data;
    return NL_OK;
}

nl_status nl_safetensors_get(nl_ctx *ctx, const nl_safetensors *st, const char *name, nl_tensor *out) {
    const nl_st_entry *e = nl_safetensors_find(st, name);
    if (!e) {
        memset(out, 0, sizeof *out);
        return nl_errorf(ctx, NL_EFORMAT, "'%s': missing tensor '%s'", st->path, name);
    }
    return nl_safetensors_view(ctx, st, e, out);
}
