/* st_writer.h — writes safetensors files (the format read by safetensors.h).
 *
 * Layout: 8-byte little-endian header length n, n bytes of JSON
 *   {"__metadata__": {"format": "pt", …}, "NAME": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, …}
 * padded with spaces so the data section starts at a multiple of 8, then the tensors — the F32
 * ones, then the BF16/F16 ones, each group in the order added, so every tensor starts at a
 * multiple of its element size — each converted from f32 to its dtype (F32, BF16 or F16, round
 * to nearest even). The header lists the tensors in the order added.
 * Rules: the writer borrows the f32 data until nl_st_writer_write; names must be unique. The file
 * is written atomically: PATH.tmp is written, fsync'd and renamed over PATH, so a crash leaves
 * either the old file or the new one, never a torn one.
 * Checked by tests/test_st_writer.c (round trip through the reader) and tests/train.sh.
 */
#ifndef NEURONLAB_ST_WRITER_H
#define NEURONLAB_ST_WRITER_H

#include "neuronlab/model.h"

typedef struct nl_st_writer nl_st_writer;

nl_status nl_st_writer_create(nl_ctx *ctx, nl_st_writer **out);
void nl_st_writer_destroy(nl_st_writer *w); /* NULL is a no-op */

/* Adds a "__metadata__" string entry (copied). */
nl_status nl_st_writer_meta(nl_ctx *ctx, nl_st_writer *w, const char *key, const char *value);
/* Adds tensor `name` (copied) of shape (ndim ≤ 4) from f32 data (borrowed), stored as dtype. */
nl_status nl_st_writer_add(nl_ctx *ctx, nl_st_writer *w, const char *name, nl_dtype dtype, int ndim,
                           const int64_t *shape, const float *data);
/* Writes the file atomically (see above). */
nl_status nl_st_writer_write(nl_ctx *ctx, nl_st_writer *w, const char *path);

#endif
