/* test_recorder.c — `record` end to end on stories260K: the HDF5 file reproduces llama2.c's
 * activations and W2 column norms, pooling equals the mean of the recorded rows, windows
 * record every token once, and a layer subset records only those layers. */
#include "neuronlab/recorder.h"
#include "testutil.h"

#define STORIES NL_SHARED "/models/stories260K"

static char dir[] = "/tmp/nl_recorder_XXXXXX";

typedef struct { const int *layers; int n_rec; nl_h5_dtype dtype; int ctxlen, batch, stride; } rec_opts;

/* Records stories260K into dir/name and returns the open reader. */
static nl_h5_reader *record(const char *name, rec_opts o) {
    static int made; /* mkdtemp once per test process (a generated name may end in 'X') */
    if (!made) { cr_assert(mkdtemp(dir)); made = 1; }
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, o.batch, o.ctxlen, &f), NL_OK, "%s", ctx.msg);
    nl_h5_meta meta = {.model = "stories260K", .arch = "llama", .n_layers = 5, .d_model = 64, .d_ff = 172,
                       .ffn_kind = "gated", .act_fn = "silu", .dtype = o.dtype, .dataset = "tokens.jsonl",
                       .layers = o.layers, .n_rec = o.n_rec, .pooled = 1};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &meta, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_record_run(&ctx, f, ds, w, 1, o.stride, NULL), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_forward_hooks(f)->n, 0, "the recorder must remove its hook");
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &r), NL_OK, "%s", ctx.msg);
    return r;
}

Test(recorder, stories260k_matches_llama2c) {
    nl_need_shared();
    nl_h5_reader *r = record("full.h5", (rec_opts){NULL, 0, NL_H5_F32, 512, 100, 0});
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_eq(in->n_tokens, 1533);
    cr_assert_eq(in->n_docs, 8);
    cr_assert_eq(in->complete, 1);
    const int L = 5, F = 172, T0 = (int)in->doc_offsets[1];
    size_t nb = 0;
    float *want = nl_read_all(STORIES "/acts_first1.f32", &nb); /* (T0, L, F) */
    cr_assert_eq(nb, (size_t)T0 * L * F * 4);
    float *got = malloc((size_t)T0 * F * 4), *w1 = malloc((size_t)T0 * F * 4);
    for (int l = 0; l < L; l++) {
        cr_assert_eq(nl_h5_reader_read_acts(r, NULL, l, 0, T0, got), NL_OK);
        for (int t = 0; t < T0; t++) memcpy(w1 + (size_t)t * F, want + ((size_t)t * L + l) * F, F * 4);
        nl_check_close(got, w1, (size_t)T0 * F, 1e-4);
    }
    float *norms = nl_read_all(STORIES "/w2_col_norm.f32", &nb); /* (L, F) */
    cr_assert_eq(nb, (size_t)L * F * 4);
    float n[172];
    for (int l = 0; l < L; l++) {
        cr_assert_eq(nl_h5_reader_read_w_out_norm(r, NULL, l, n), NL_OK);
        nl_check_close(n, norms + l * F, F, 1e-5);
    }
    /* Pooled row of document 0 = mean |a| over its (all) prompt tokens. */
    float pooled[172], mean[172] = {0};
    cr_assert_eq(nl_h5_reader_read_pooled(r, NULL, 3, 0, 1, pooled), NL_OK);
    cr_assert_eq(nl_h5_reader_read_acts(r, NULL, 3, 0, T0, got), NL_OK);
    for (int t = 0; t < T0; t++)
        for (int i = 0; i < F; i++) mean[i] += fabsf(got[(size_t)t * F + i]) / T0;
    nl_check_close(pooled, mean, F, 1e-5);
    free(want); free(got); free(w1); free(norms);
    nl_h5_reader_close(r);
}

Test(recorder, windows_record_each_token_once_and_subset) {
    nl_need_shared();
    int layers[2] = {1, 4};
    nl_h5_reader *r = record("win.h5", (rec_opts){layers, 2, NL_H5_F16, 64, 16, 24});
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_eq(in->n_tokens, 1533);
    cr_assert(nl_h5_reader_has_layer(r, 1) && nl_h5_reader_has_layer(r, 4) && !nl_h5_reader_has_layer(r, 0));
    /* The first 64 tokens of each document see the same context as a full run. */
    nl_h5_reader *full = record("full16.h5", (rec_opts){layers, 2, NL_H5_F16, 512, 512, 0});
    float a[64 * 172], b[64 * 172];
    cr_assert_eq(nl_h5_reader_read_acts(r, NULL, 4, 0, 64, a), NL_OK);
    cr_assert_eq(nl_h5_reader_read_acts(full, NULL, 4, 0, 64, b), NL_OK);
    nl_check_close(a, b, 64 * 172, 2e-3); /* f16: batch size changes the last f32 bits */
    /* Later tokens had less context: they differ from the full run. */
    cr_assert_eq(nl_h5_reader_read_acts(r, NULL, 4, 200, 50, a), NL_OK);
    cr_assert_eq(nl_h5_reader_read_acts(full, NULL, 4, 200, 50, b), NL_OK);
    cr_assert_gt(nl_max_abs_diff(a, b, 50 * 172), 1e-3);
    nl_h5_reader_close(full);
    nl_h5_reader_close(r);
}
