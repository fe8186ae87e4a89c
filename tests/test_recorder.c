/* test_recorder.c — `record` end to end on stories260K: the HDF5 file reproduces llama2.c's
 * activations and W2 column norms, pooling equals the mean of the recorded rows, windows
 * record every token once, a layer subset records only those layers, and the --hook streams
 * (resid, attn_out, ffn_in) equal what hooks on a direct forward pass see, window by window. */
#include "neuronlab/recorder.h"
#include "testutil.h"

#include <hdf5.h>

#define STORIES NL_SHARED "/models/stories260K"

static char dir[] = "/tmp/nl_recorder_XXXXXX";

typedef struct { const int *layers; int n_rec; nl_h5_dtype dtype; int ctxlen, batch, stride; unsigned streams; int no_acts; } rec_opts;

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
                       .layers = o.layers, .n_rec = o.n_rec, .pooled = 1, .streams = o.streams, .no_acts = o.no_acts};
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
    nl_h5_reader *r = record("full.h5", (rec_opts){NULL, 0, NL_H5_F32, 512, 100, 0, 0, 0});
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
    nl_h5_reader *r = record("win.h5", (rec_opts){layers, 2, NL_H5_F16, 64, 16, 24, 0, 0});
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_eq(in->n_tokens, 1533);
    cr_assert(nl_h5_reader_has_layer(r, 1) && nl_h5_reader_has_layer(r, 4) && !nl_h5_reader_has_layer(r, 0));
    /* The first 64 tokens of each document see the same context as a full run. */
    nl_h5_reader *full = record("full16.h5", (rec_opts){layers, 2, NL_H5_F16, 512, 512, 0, 0, 0});
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

/* ---- streams: the recorded resid / attn_out / ffn_in rows equal a direct forward pass ---- */

typedef struct {
    float *buf[NL_H5_N_STREAMS + 1]; /* per stream (and ffn_act last): (L, T, width) */
    int T, D, F, L, base, new_from;  /* doc index of the window's row 0; first new row */
} direct_state;

static nl_status grab(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)ctx;
    direct_state *d = user;
    int k = info->point == NL_HOOK_RESID ? 0 : info->point == NL_HOOK_ATTN_OUT ? 1 : info->point == NL_HOOK_FFN_IN ? 2 : 3;
    int w = info->width;
    for (int r = 0; r < info->T; r++) {
        int t = d->base + info->pos0 + r;
        if (t < d->new_from) continue;
        memcpy(d->buf[k] + ((size_t)info->layer * d->T + t) * w, x + (size_t)r * w, (size_t)w * 4);
    }
    return NL_OK;
}

/* Runs document doc of stories260K the way the walker does (windows of C tokens every S
 * tokens, each token taken from the first window where it is new, chunks of B), with
 * observers on the four hook points. */
static direct_state direct(int doc, int C, int S, int B) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_model *m;
    cr_assert_eq(nl_model_open(&ctx, STORIES "/stories260K.bin", &m), NL_OK, "%s", ctx.msg);
    nl_dataset *ds;
    cr_assert_eq(nl_dataset_load(&ctx, STORIES "/tokens.jsonl", NULL, 512, &ds), NL_OK, "%s", ctx.msg);
    nl_forward *f;
    cr_assert_eq(nl_forward_create(&ctx, m, B, C, &f), NL_OK, "%s", ctx.msg);
    const nl_doc *dc = &ds->docs[doc];
    direct_state d = {.T = dc->n_tokens, .D = 64, .F = 172, .L = 5};
    for (int k = 0; k <= NL_H5_N_STREAMS; k++) d.buf[k] = calloc((size_t)d.L * d.T * (k == 3 ? d.F : d.D), 4);
    const nl_hook_point pts[4] = {NL_HOOK_RESID, NL_HOOK_ATTN_OUT, NL_HOOK_FFN_IN, NL_HOOK_FFN_ACT};
    for (int k = 0; k < 4; k++) cr_assert_eq(nl_hooks_add(nl_forward_hooks(f), pts[k], -1, NL_HOOK_OBSERVE, grab, &d), NL_OK);
    for (int w = 0;; w++) {
        int start = w * S, end = start + C < d.T ? start + C : d.T;
        d.base = start;
        d.new_from = w == 0 ? 0 : (w - 1) * S + C;
        nl_forward_reset(f);
        for (int c = start; c < end; c += B) {
            int n = end - c < B ? end - c : B;
            d.base = start; /* pos0 counts from the window start */
            cr_assert_eq(nl_forward_run(f, &ctx, dc->tokens + c, n, NULL), NL_OK, "%s", ctx.msg);
        }
        if (end >= d.T) break;
    }
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    return d;
}

static void check_streams(nl_h5_reader *r, const char *path, const direct_state *d, int acts, double tol) {
    /* The reader knows ffn_act; the streams are read with HDF5 directly (as h5py would). */
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_eq(in->doc_offsets[1], d->T);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(file >= 0);
    float *got = malloc((size_t)d->T * d->F * 4), *want = malloc((size_t)d->T * d->F * 4);
    for (int l = 0; l < d->L; l++) {
        for (int k = 0; k < NL_H5_N_STREAMS; k++) {
            char name[64];
            snprintf(name, sizeof name, "layers/%d/%s", l, nl_h5_stream_name((nl_h5_stream)k));
            hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
            cr_assert(ds >= 0, "%s missing", name);
            hid_t sp = H5Dget_space(ds);
            hsize_t dims[2];
            cr_assert_eq(H5Sget_simple_extent_ndims(sp), 2);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            cr_assert_eq(dims[0], (hsize_t)in->n_tokens, "%s has %llu rows", name, (unsigned long long)dims[0]);
            cr_assert_eq(dims[1], (hsize_t)d->D);
            hsize_t start[2] = {0, 0}, count[2] = {(hsize_t)d->T, (hsize_t)d->D};
            hid_t ms = H5Screate_simple(2, count, NULL);
            H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
            cr_assert(H5Dread(ds, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, got) >= 0);
            H5Sclose(ms), H5Sclose(sp), H5Dclose(ds);
            nl_check_close(got, d->buf[k] + (size_t)l * d->T * d->D, (size_t)d->T * d->D, tol);
        }
        if (acts) {
            cr_assert_eq(nl_h5_reader_read_acts(r, NULL, l, 0, d->T, got), NL_OK);
            nl_check_close(got, d->buf[3] + (size_t)l * d->T * d->F, (size_t)d->T * d->F, tol);
        }
    }
    H5Fclose(file);
    free(got), free(want);
}

Test(recorder, streams_equal_direct_forward_hooks) {
    nl_need_shared();
    const unsigned all = (1u << NL_H5_N_STREAMS) - 1;
    /* One window per document (C = 512), chunks of 100 tokens. */
    nl_h5_reader *r = record("streams.h5", (rec_opts){NULL, 0, NL_H5_F32, 512, 100, 0, all, 0});
    direct_state d = direct(0, 512, 256, 100);
    char path[256];
    snprintf(path, sizeof path, "%s/streams.h5", dir);
    check_streams(r, path, &d, 1, 1e-5);
    nl_h5_reader_close(r);
    for (int k = 0; k <= NL_H5_N_STREAMS; k++) free(d.buf[k]);
    /* Sliding windows (C = 64, S = 24, chunks of 16): each token from its first window as new. */
    r = record("streams_win.h5", (rec_opts){NULL, 0, NL_H5_F32, 64, 16, 24, all, 0});
    d = direct(0, 64, 24, 16);
    cr_assert_gt(d.T, 64 + 24, "document 0 must span several windows");
    snprintf(path, sizeof path, "%s/streams_win.h5", dir);
    check_streams(r, path, &d, 1, 1e-5);
    nl_h5_reader_close(r);
    for (int k = 0; k <= NL_H5_N_STREAMS; k++) free(d.buf[k]);
}

Test(recorder, streams_without_ffn_act) {
    nl_need_shared();
    /* --hook resid,ffn_in (no ffn_act) with --pool: no /layers/{l}/ffn_act, the streams, and the
     * pooled rows still computed from the activations. */
    const unsigned two = (1u << NL_H5_STREAM_RESID) | (1u << NL_H5_STREAM_FFN_IN);
    nl_h5_reader *r = record("noacts.h5", (rec_opts){NULL, 0, NL_H5_F16, 512, 100, 0, two, 1});
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert(in->meta.no_acts && in->meta.pooled);
    float row[172];
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, 0, 0, 1, row), NL_EINVAL);
    /* pooled row of document 0 = mean |a| of the direct forward pass's activations */
    direct_state d = direct(0, 512, 256, 100);
    float mean[172] = {0};
    for (int t = 0; t < d.T; t++)
        for (int i = 0; i < 172; i++) mean[i] += fabsf(d.buf[3][((size_t)2 * d.T + t) * 172 + i]) / d.T;
    cr_assert_eq(nl_h5_reader_read_pooled(r, NULL, 2, 0, 1, row), NL_OK);
    nl_check_close(row, mean, 172, 1e-4);
    char path[256];
    snprintf(path, sizeof path, "%s/noacts.h5", dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(H5Lexists(file, "layers/1/resid", H5P_DEFAULT) > 0 && H5Lexists(file, "layers/1/ffn_in", H5P_DEFAULT) > 0);
    cr_assert(H5Lexists(file, "layers/1/attn_out", H5P_DEFAULT) == 0 && H5Lexists(file, "layers/1/ffn_act", H5P_DEFAULT) == 0);
    H5Fclose(file);
    nl_h5_reader_close(r);
    for (int k = 0; k <= NL_H5_N_STREAMS; k++) free(d.buf[k]);
}
