/* safetensors.h — a validating reader for the safetensors format over memory the caller
 * has mapped (usually with nl_model_map).
 *
 * Format: 8-byte little-endian header length n, n bytes of JSON
 *   {"__metadata__": {...}, "NAME": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
 * then the data section; offsets are relative to its start (byte 8 + n of the file).
 *
 * Rules: every entry is checked when the file is opened — header length within the file,
 * the header is a JSON object without duplicate names, each entry has a dtype string, a
 * shape of non-negative integers and data_offsets [b, e] with b ≤ e inside the file, and
 * shape × element size == e − b, b a multiple of the element size (for types of a byte or
 * more); no two tensors share a byte, and the data section ends exactly at the largest e
 * (a file with bytes inserted or appended is refused). "__metadata__" is skipped. Tensors
 * of any dtype the format defines (I64, BOOL, F8_E4M3 …) are accepted and validated,
 * because checkpoints carry buffers nobody reads (GPT-NeoX's attention.bias masks); asking
 * for one of them as an nl_tensor (nl_safetensors_get) fails with NL_EUNSUPPORTED naming
 * the dtype, the tensor and the file. Only F32, F16 and BF16 convert to nl_tensor.
 * Tensor data is not copied: views point into the caller's bytes, which must outlive the
 * reader. Views may still be unaligned in memory (the header length need not be a multiple
 * of 8, so the data section may start anywhere).
 * Checked by tests/test_hf.c.
 */
#ifndef NEURONLAB_SAFETENSORS_H
#define NEURONLAB_SAFETENSORS_H

#include "neuronlab/common.h"
#include "neuronlab/model.h"

/* One entry of the header. Strings and shape are owned by the reader. */
typedef struct {
    const char *name;
    const char *dtype_name; /* as written in the file: "F32", "BF16", "I64" … */
    int supported;          /* 1 when dtype_name is F32, F16 or BF16 (then dtype is valid) */
    nl_dtype dtype;
    int ndim;
    const int64_t *shape;   /* (ndim) */
    const void *data;       /* inside the caller's bytes */
    size_t nbytes;
} nl_st_entry;

typedef struct nl_safetensors nl_safetensors;

/* Parses and validates the safetensors bytes base[0 .. size). `path` names the file in
 * messages (copied). base is borrowed and must outlive *out. On success *out is owned by
 * the caller: release it with nl_safetensors_close. */
nl_status nl_safetensors_open(nl_ctx *ctx, const char *path, const void *base, size_t size, nl_safetensors **out);
void nl_safetensors_close(nl_safetensors *st); /* NULL is a no-op; does not unmap base */

const char *nl_safetensors_path(const nl_safetensors *st);
/* Number of tensors (metadata excluded) and the i-th, sorted by name (0 ≤ i < count). */
int nl_safetensors_count(const nl_safetensors *st);
const nl_st_entry *nl_safetensors_entry(const nl_safetensors *st, int i);
/* Entry by exact name, or NULL when the file has no such tensor. Borrowed. */
const nl_st_entry *nl_safetensors_find(const nl_safetensors *st, const char *name);

/* The tensor `name` as a borrowed nl_tensor view. Errors (message names tensor and file):
 * NL_EFORMAT when absent, NL_EUNSUPPORTED for a dtype other than F32/F16/BF16 or more
 * than 4 dimensions. */
nl_status nl_safetensors_get(nl_ctx *ctx, const nl_safetensors *st, const char *name, nl_tensor *out);
/* Same for an entry already found. */
nl_status nl_safetensors_view(nl_ctx *ctx, const nl_safetensors *st, const nl_st_entry *e, nl_tensor *out);

#endif
