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
 * malloc: 3x slower). */
/* Ids of every kind HDF5 hands out; after each input their counts must be back to those
 * after the warm-up (an id left open on some path of the reader is a crash here). Ids stay
 * reachable from HDF5's tables, so LeakSanitizer alone would never see them. */
static const H5I_type_t k_id_types[] = {H5I_FILE, H5I_GROUP, H5I_DATATYPE, H5I_DATASPACE, H5I_DATASET, H5I_ATTR,
                                        H5I_GENPROP_CLS, H5I_GENPROP_LST, H5I_ERROR_STACK};
#define N_ID_TYPES (sizeof k_id_types / sizeof k_id_types[0])
static hsize_t g_ids0[N_ID_TYPES];

static void ids_count(hsize_t *n) {
    for (size_t i = 0; i < N_ID_TYPES; i++) {
        n[i] = 0;
        H5Inmembers(k_id_types[i], &n[i]);
    }
}

static void ids_check(void) {
    hsize_t n[N_ID_TYPES];
    ids_count(n);
    for (size_t i = 0; i < N_ID_TYPES; i++)
        if (n[i] != g_ids0[i]) {
            fprintf(stderr, "fuzz_h5: %llu ids of HDF5 type %d open after the input (%llu before)\n", (unsigned long long)n[i],
                    (int)k_id_types[i], (unsigned long long)g_ids0[i]);
            abort();
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_h5_reader *r = NULL;
    static const uint8_t none[1];
    (void)nl_h5_reader_open(&ctx, fuzz_write("acts.h5", none, 0), &r);
    (void)nl_h5_reader_open(&ctx, fuzz_write("acts.h5", none, 1), &r);
    /* and a valid file of the writer, read whole once (lazily created library state) */
    nl_h5_meta m = {.model = "m", .n_layers = 1, .d_model = 2, .d_ff = 2, .ffn_kind = "gated"};
    nl_h5_writer *w = NULL;
    const char *p = fuzz_path("warm.h5");
    float a[2] = {1, 2};
    int32_t id = 1;
    if (nl_h5_writer_create(&ctx, p, &m, &w) != NL_OK || nl_h5_writer_begin_doc(w, &ctx, "l", -1) != NL_OK ||
        nl_h5_writer_append_tokens(w, &ctx, &id, 1) != NL_OK || nl_h5_writer_append_acts(w, &ctx, 0, a, 1) != NL_OK ||
        nl_h5_writer_end_doc(w, &ctx) != NL_OK || nl_h5_writer_put_w_out_norm(w, &ctx, 0, a) != NL_OK ||
        nl_h5_writer_close(w, &ctx, 1) != NL_OK || nl_h5_reader_open(&ctx, p, &r) != NL_OK)
        abort();
    (void)nl_h5_reader_read_acts(r, &ctx, 0, 0, 1, a);
    nl_h5_reader_close(r);
    unlink(p);
    H5set_free_list_limits(4 << 20, 1 << 20, 4 << 20, 1 << 20, 4 << 20, 1 << 20);
    ids_count(g_ids0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_h5_reader *r = NULL;
    if (nl_h5_reader_open(&ctx, fuzz_write("acts.h5", d, n), &r) != NL_OK) {
        ids_check(); /* an id left open by a failed open */
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
    ids_check();
    return 0;
}
