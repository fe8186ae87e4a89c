/* gguf.h — the GGUF container (llama.cpp / ggml's file format), read from memory with every
 * count, length and offset checked against the bytes there are.
 *
 * Layout (little-endian; versions 2 and 3, which differ from 1 in 64-bit counts):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv × (string key, u32 value type, value)         string = u64 length + bytes (no NUL)
 *   n_tensors × (string name, u32 n_dims (1..4), u64 ne[n_dims], u32 ggml type, u64 offset)
 *   zero padding to general.alignment (default 32), then the data section; each tensor's
 *   offset is relative to the data section and a multiple of the alignment.
 * ne[0] is the contiguous (row) length: a tensor with ne = [ne0, ne1] is the row-major matrix
 * of shape (ne1, ne0).
 *
 * This module only reads the container: what the keys mean (architecture, tokenizer) is the
 * business of the model loader (src/model/gguf.c) and the tokenizer (src/tokenizer/gguf_vocab.c).
 * Rules: every count (tensors, keys, array elements, string lengths) is bounded by the bytes
 * left before anything is allocated; keys and tensor names are unique; a value type, array
 * element type or tensor type outside the known ones fails naming the id; tensor data must lie
 * inside the file. Messages name the file: "'F.gguf': tensor 'blk.0.attn_q.weight' data
 * (offset …, … bytes) runs past the end of the file (… bytes)".
 * Checked by tests/test_gguf.c and fuzz/fuzz_gguf.c.
 */
#ifndef NEURONLAB_GGUF_H
#define NEURONLAB_GGUF_H

#include <stdint.h>

#include "neuronlab/common.h"

/* Value types of the metadata (GGUF_TYPE_*). */
typedef enum {
    NL_GGUF_U8 = 0, NL_GGUF_I8 = 1, NL_GGUF_U16 = 2, NL_GGUF_I16 = 3, NL_GGUF_U32 = 4, NL_GGUF_I32 = 5,
    NL_GGUF_F32 = 6, NL_GGUF_BOOL = 7, NL_GGUF_STRING = 8, NL_GGUF_ARRAY = 9, NL_GGUF_U64 = 10, NL_GGUF_I64 = 11,
    NL_GGUF_F64 = 12, NL_GGUF_NTYPES
} nl_gguf_vtype;

/* "uint32", "string", "array" … ("?" outside the enum). */
const char *nl_gguf_vtype_name(int t);

/* ggml tensor types this reader knows the block layout of (ids as in ggml.h). */
enum {
    NL_GGML_F32 = 0, NL_GGML_F16 = 1, NL_GGML_Q4_0 = 2, NL_GGML_Q4_1 = 3, NL_GGML_Q5_0 = 6, NL_GGML_Q5_1 = 7,
    NL_GGML_Q8_0 = 8, NL_GGML_Q8_1 = 9, NL_GGML_Q2_K = 10, NL_GGML_Q3_K = 11, NL_GGML_Q4_K = 12, NL_GGML_Q5_K = 13,
    NL_GGML_Q6_K = 14, NL_GGML_Q8_K = 15, NL_GGML_BF16 = 30, NL_GGML_NTYPES = 40
};
/* Name ("Q4_K") of a ggml type id, or NULL when the id is unknown or a removed type. */
const char *nl_ggml_type_name(uint32_t type);
/* Block layout of a known ggml type: elements and bytes per block; 0 when unknown. */
int nl_ggml_type_block(uint32_t type, int *block_bytes);

typedef struct {
    const char *key;         /* NUL-terminated, owned by the nl_gguf */
    nl_gguf_vtype type;
    nl_gguf_vtype arr_type;  /* arrays: the element type */
    uint64_t n;              /* strings: byte length; arrays: element count; scalars: 1 */
    const uint8_t *data;     /* scalars: the value; strings: the bytes; arrays: the first element
                              * (fixed-size elements back to back; strings: length + bytes each).
                              * Borrowed from the buffer given to nl_gguf_parse, may be unaligned. */
    uint64_t file_off;       /* offset of the value in the file (messages) */
} nl_gguf_kv;

typedef struct {
    const char *name;        /* NUL-terminated, owned by the nl_gguf */
    uint32_t type;           /* ggml type id (known: nl_ggml_type_block > 0) */
    int n_dims;              /* 1..4 */
    int64_t ne[4];           /* ne[0] = row length; unused dims are 1 */
    uint64_t offset;         /* relative to the data section */
    uint64_t nbytes;
    const uint8_t *data;     /* inside the buffer; aligned as the file's alignment allows */
} nl_gguf_tensor;

typedef struct nl_gguf nl_gguf;

/* Parses the GGUF file `path` held in buf (size bytes; usually a read-only mapping, which
 * must outlive *out). Every tensor's data must lie inside buf. On success *out is owned by
 * the caller (nl_gguf_close). Errors name path. */
nl_status nl_gguf_parse(nl_ctx *ctx, const char *path, const void *buf, size_t size, nl_gguf **out);
void nl_gguf_close(nl_gguf *g); /* NULL is a no-op */

uint32_t nl_gguf_version(const nl_gguf *g);
const char *nl_gguf_path(const nl_gguf *g);
uint32_t nl_gguf_alignment(const nl_gguf *g);
uint64_t nl_gguf_data_offset(const nl_gguf *g);
int64_t nl_gguf_n_kv(const nl_gguf *g);
const nl_gguf_kv *nl_gguf_kv_at(const nl_gguf *g, int64_t i);
int64_t nl_gguf_n_tensors(const nl_gguf *g);
const nl_gguf_tensor *nl_gguf_tensor_at(const nl_gguf *g, int64_t i);

/* By name (hash lookup); NULL when absent. */
const nl_gguf_kv *nl_gguf_find(const nl_gguf *g, const char *key);
const nl_gguf_tensor *nl_gguf_find_tensor(const nl_gguf *g, const char *name);

/* Typed getters. Absent key: *found = 0 (found may be NULL when the key is required: then
 * absence is an error "missing key"). A value of another type fails: "'F': metadata key 'K'
 * is a float32, expected an unsigned integer". Integers of any width convert when in range. */
nl_status nl_gguf_get_u64(nl_ctx *ctx, const nl_gguf *g, const char *key, uint64_t *out, int *found);
nl_status nl_gguf_get_i64(nl_ctx *ctx, const nl_gguf *g, const char *key, int64_t *out, int *found);
nl_status nl_gguf_get_f64(nl_ctx *ctx, const nl_gguf *g, const char *key, double *out, int *found); /* f32/f64 (also integers) */
nl_status nl_gguf_get_bool(nl_ctx *ctx, const nl_gguf *g, const char *key, int *out, int *found);
/* String value: *s points into the buffer (not NUL-terminated), *n its length. */
nl_status nl_gguf_get_str(nl_ctx *ctx, const nl_gguf *g, const char *key, const char **s, size_t *n, int *found);
/* Array of element type want (strings: NL_GGUF_STRING); *kv the entry. For an integer want,
 * integer arrays of any width are accepted, and float64 arrays for a float32 want (read the
 * elements with nl_gguf_arr_num); anything else fails naming the key and both types. */
nl_status nl_gguf_get_arr(nl_ctx *ctx, const nl_gguf *g, const char *key, nl_gguf_vtype want, const nl_gguf_kv **kv,
                          int *found);
/* Element i of a numeric array as a double. */
double nl_gguf_arr_num(const nl_gguf_kv *kv, uint64_t i);
/* Element i of a string array (bounds were checked at parse time). O(1). */
const char *nl_gguf_arr_str(const nl_gguf *g, const nl_gguf_kv *kv, uint64_t i, size_t *n);

/* ---- writer --------------------------------------------------------------------------------
 * Builds a GGUF v3 file: metadata in the order added, tensor infos in the order added, zero
 * padding to the alignment, then each tensor's data padded to the alignment (the layout of
 * gguf-py's GGUFWriter and ggml's gguf_write_to_file). general.alignment is written only when
 * the alignment is not the default 32 (nl_gguf_writer_create). Tensor data are produced at
 * write time, one tensor at a time, by a fill callback (or copied from a borrowed buffer), so
 * a writer never holds the whole model. The file is written atomically (atomic_file.h): a
 * crash leaves the old file or none, never a torn one.
 * Rules: keys and tensor names are unique (a repeat is NL_EINVAL naming it); a tensor's type
 * must be known (nl_ggml_type_block) and ne[0] a multiple of its block size.
 * Checked by tests/test_gguf.c (round trips through nl_gguf_parse, the shared fixtures
 * rewritten byte for byte). */
typedef struct nl_gguf_writer nl_gguf_writer;

/* Fills dst (nbytes, the tensor's stored size) with tensor i's data (0-based, order added). */
typedef nl_status (*nl_gguf_fill_fn)(void *user, nl_ctx *ctx, int64_t i, void *dst, uint64_t nbytes);

/* alignment: a power of two (0 = 32). */
nl_status nl_gguf_writer_create(nl_ctx *ctx, uint32_t alignment, nl_gguf_writer **out);
void nl_gguf_writer_destroy(nl_gguf_writer *w); /* NULL is a no-op */
/* Scalar metadata (the value is copied). */
nl_status nl_gguf_writer_str(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const char *s, size_t n);
nl_status nl_gguf_writer_u32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, uint32_t v);
nl_status nl_gguf_writer_i32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, int32_t v);
nl_status nl_gguf_writer_f32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, float v);
nl_status nl_gguf_writer_bool(nl_ctx *ctx, nl_gguf_writer *w, const char *key, int v);
/* Arrays (copied): strings (s[i], len[i] bytes each; len NULL = NUL-terminated), int32, float32. */
nl_status nl_gguf_writer_arr_str(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const char *const *s, const size_t *len,
                                 uint64_t n);
nl_status nl_gguf_writer_arr_i32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
nl_status nl_gguf_writer_arr_f32(nl_ctx *ctx, nl_gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Copies metadata entry kv of the parsed file g (any type, arrays included) under its own key. */
nl_status nl_gguf_writer_copy(nl_ctx *ctx, nl_gguf_writer *w, const nl_gguf *g, const nl_gguf_kv *kv);
/* Adds tensor `name` (copied) of ggml type `type` and shape ne[0..n_dims) (ne[0] the row length).
 * Its bytes come from fill(user, ctx, index, dst, nbytes) at write time, or, when fill is NULL,
 * from data (borrowed until nl_gguf_writer_write, nbytes of the type and shape). */
nl_status nl_gguf_writer_tensor(nl_ctx *ctx, nl_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                const int64_t *ne, const void *data, nl_gguf_fill_fn fill, void *user);
/* Writes everything to path atomically. */
nl_status nl_gguf_writer_write(nl_ctx *ctx, nl_gguf_writer *w, const char *path);

/* llama.cpp's pre-tokenizer names (tokenizer.ggml.pre, src/llama-vocab.cpp) and their split
 * patterns, one table for the reader (src/tokenizer/gguf_vocab.c) and the exporter
 * (src/model/gguf_export.c). gpt2: the pattern is GPT-2's, which tokenizer.json writes as
 * ByteLevel(use_regex = true) without a Split. ignore_merges: a whole word that is a token is
 * taken as is (llama-3). Entries sharing a pattern list the name the exporter writes first. */
typedef struct {
    const char *name;
    const char *re;
    int gpt2;
    int ignore_merges;
} nl_gguf_pretok;
/* The table (count in *n), and the entry named name[0..n) or NULL. */
const nl_gguf_pretok *nl_gguf_pretoks(int *n);
const nl_gguf_pretok *nl_gguf_pretok_find(const char *name, size_t n);

#endif
