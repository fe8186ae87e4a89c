/* fuzz_h5.c — libFuzzer harness: the input is an HDF5 activation file (schema v1,
 * include/neuronlab/h5store.h); nl_h5_reader_open validates it, then every dataset is read: all
 * ffn_act rows of every recorded layer in blocks, every w_out_norm, every pooled row, and
 * the token/offset/label arrays of nl_h5_info are walked. Crashes inside libhdf5 itself
 * (not instrumented) show as SEGV with hdf5 frames. Seeds: fuzz/corpus/h5/. See fuzz/README.md. */
#include "fuzz_util.h"
#include "neuronlab/h5store.h"

#include <hdf5.h>

/* HDF5 allocates its global state (and free lists) on first use: do that before fuzzing,
 * so LeakSanitizer does not count it against the first input. HDF5 keeps freed blocks of
 * its internal types on free lists (reachable, so not leaks); they are bounded here to
 * 4 MiB per kind and 1 MiB per list (the library default is 1-16 MiB per kind and no limit
 * per list), which keeps RSS flat while reusing blocks instead of going through ASan's
 * allocator for each (the limits 0 used before made every HDF5 allocation a fresh
 * malloc: 3x slower). Every input must leave no HDF5 id open after
 * nl_h5_reader_close (checked below: an id left open on an error path is a crash). */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_h5_reader *r = NULL;
    static const uint8_t none[1];
    (void)nl_h5_reader_open(&ctx, fuzz_write("acts.h5", none, 0), &r);
    (void)nl_h5_reader_open(&ctx, fuzz_write("acts.h5", none, 1), &r);
    H5set_free_list_limits(4 << 20, 1 << 20, 4 << 20, 1 << 20, 4 << 20, 1 << 20);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_h5_reader *r = NULL;
    if (nl_h5_reader_open(&ctx, fuzz_write("acts.h5", d, n), &r) != NL_OK) {
        if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) abort(); /* an id left open by a failed open */
        return 0;
    }
    const nl_h5_info *in = nl_h5_reader_info(r);
    int64_t sum = 0;
    for (int64_t t = 0; t < in->n_tokens; t++) sum += in->tokens[t];
    for (int64_t k = 0; k < in->n_docs; k++) sum += in->doc_offsets[k + 1] + in->prompt_len[k] + (int64_t)strlen(in->doc_labels[k]);
    (void)sum;
    int F = in->meta.d_ff;
    int rows = F > 0 && F < (1 << 16) ? (1 << 16) / F : 1;
    float *buf = malloc(sizeof(float) * (size_t)rows * (size_t)F);
    for (int i = 0; buf && i < in->meta.n_rec; i++) {
        int l = in->meta.layers[i];
        if (!nl_h5_reader_has_layer(r, l)) abort();
        (void)nl_h5_reader_read_w_out_norm(r, &ctx, l, buf);
        if (!in->meta.no_acts)
            for (int64_t r0 = 0; r0 < in->n_tokens; r0 += rows) {
                int k = in->n_tokens - r0 < rows ? (int)(in->n_tokens - r0) : rows;
                if (nl_h5_reader_read_acts(r, &ctx, l, r0, k, buf) != NL_OK) break;
            }
        if (in->meta.pooled)
            for (int64_t d0 = 0; d0 < in->n_docs; d0 += rows) {
                int k = in->n_docs - d0 < rows ? (int)(in->n_docs - d0) : rows;
                if (nl_h5_reader_read_pooled(r, &ctx, l, d0, k, buf) != NL_OK) break;
            }
    }
    free(buf);
    nl_h5_reader_close(r);
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) abort(); /* an id left open */
    return 0;
}
