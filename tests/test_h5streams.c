/* test_h5streams.c — the writer's optional datasets: /vocab (token text, variable-length UTF-8
 * strings) and the per-layer streams of `record --hook` (/layers/{l}/resid, attn_out, ffn_in):
 * values round-trip in f32 and f16, every stream is cut back with the documents on an
 * interrupted close, end_doc refuses a stream short of rows, resume checks the streams and
 * continues them, and the reader still opens the files. Read back with HDF5 directly, as h5py
 * does (tests/h5_hooks.sh checks h5py itself). */
#include <hdf5.h>
#include <unistd.h>

#include "neuronlab/h5store.h"
#include "testutil.h"

static char dir[] = "/tmp/nl_h5streams_XXXXXX";
static void mk_dir(void) { cr_assert(mkdtemp(dir)); }
static void rm_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
TestSuite(h5streams, .init = mk_dir, .fini = rm_dir);

enum { L = 3, D = 4, F = 6 };

static nl_h5_meta meta_of(unsigned streams, nl_h5_dtype dt, int no_acts) {
    static const int layers[2] = {0, 2};
    nl_h5_meta m = {.model = "m", .arch = "llama", .n_layers = L, .d_model = D, .d_ff = F, .ffn_kind = "gated",
                    .act_fn = "silu", .dtype = dt, .dataset = "d.jsonl", .layers = layers, .n_rec = 2,
                    .chunk_rows = 4, .streams = streams, .no_acts = no_acts, .commit_seconds = -1};
    return m;
}

/* Value of stream s (3 = ffn_act) at layer l, token t, column c: exact in f16 too. */
static float val(int s, int l, int t, int c) { return (float)(s * 64 + l * 20 + t) + 0.25f * (float)c; /* < 256, steps of 0.25: exact in f16 (t < 20) */ }

/* Appends document d of n tokens starting at token t0 with every stream in `streams`. */
static void add_doc(nl_h5_writer *w, unsigned streams, int t0, int n, int end) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "lab", -1), NL_OK, "%s", ctx.msg);
    int32_t ids[64];
    for (int t = 0; t < n; t++) ids[t] = t0 + t;
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, n), NL_OK, "%s", ctx.msg);
    float x[64 * F];
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < n; t++)
            for (int c = 0; c < F; c++) x[t * F + c] = val(3, l, t0 + t, c);
        cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, l, x, n), NL_OK, "%s", ctx.msg);
        for (int s = 0; s < NL_H5_N_STREAMS; s++) {
            for (int t = 0; t < n; t++)
                for (int c = 0; c < D; c++) x[t * D + c] = val(s, l, t0 + t, c);
            /* every stream is offered; the writer keeps those of meta.streams */
            cr_assert_eq(nl_h5_writer_append_stream(w, &ctx, (nl_h5_stream)s, l, x, n), NL_OK, "%s", ctx.msg);
            (void)streams;
        }
    }
    if (end) cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
}

static void put_norms(nl_h5_writer *w) {
    float n[F] = {1, 2, 3, 4, 5, 6};
    cr_assert_eq(nl_h5_writer_put_w_out_norm(w, NULL, 0, n), NL_OK);
    cr_assert_eq(nl_h5_writer_put_w_out_norm(w, NULL, 2, n), NL_OK);
}

/* Checks every stream dataset of path: present exactly for `streams`, N rows, the values. */
static void check_file(const char *path, unsigned streams, int N) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    float got[64 * D];
    for (int l = 0; l < L; l += 2)
        for (int s = 0; s < NL_H5_N_STREAMS; s++) {
            char name[64];
            snprintf(name, sizeof name, "layers/%d/%s", l, nl_h5_stream_name((nl_h5_stream)s));
            int want = (streams >> s) & 1u;
            cr_assert_eq(H5Lexists(f, name, H5P_DEFAULT) > 0, want, "%s present: %d", name, !want);
            if (!want) continue;
            hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(ds);
            hsize_t dims[2];
            H5Sget_simple_extent_dims(sp, dims, NULL);
            cr_assert(dims[0] == (hsize_t)N && dims[1] == D, "%s has shape (%llu, %llu)", name, (unsigned long long)dims[0],
                      (unsigned long long)dims[1]);
            cr_assert(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0);
            for (int t = 0; t < N; t++)
                for (int c = 0; c < D; c++)
                    cr_assert_float_eq(got[t * D + c], val(s, l, t, c), 0, "%s[%d, %d]", name, t, c);
            H5Sclose(sp), H5Dclose(ds);
        }
    cr_assert_eq(H5Lexists(f, "layers/1", H5P_DEFAULT), 0, "layer 1 is not recorded");
    H5Fclose(f);
}

static void roundtrip(nl_h5_dtype dt) {
    char path[256];
    snprintf(path, sizeof path, "%s/rt%d.h5", dir, (int)dt);
    const unsigned st = (1u << NL_H5_STREAM_RESID) | (1u << NL_H5_STREAM_FFN_IN);
    nl_h5_meta m = meta_of(st, dt, 0);
    nl_h5_writer *w;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_streams(w), st);
    put_norms(w);
    add_doc(w, st, 0, 3, 1);
    add_doc(w, st, 3, 9, 1); /* crosses the 4-row chunks */
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    check_file(path, st, 12);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &r), NL_OK, "%s", ctx.msg);
    float a[F];
    cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, 2, 11, 1, a), NL_OK, "%s", ctx.msg);
    cr_assert_float_eq(a[5], val(3, 2, 11, 5), 0);
    nl_h5_reader_close(r);
}

Test(h5streams, roundtrip_f32) { roundtrip(NL_H5_F32); }
Test(h5streams, roundtrip_f16) { roundtrip(NL_H5_F16); }

Test(h5streams, streams_without_ffn_act_and_bad_stream) {
    char path[256];
    snprintf(path, sizeof path, "%s/noacts.h5", dir);
    const unsigned st = 1u << NL_H5_STREAM_ATTN_OUT;
    nl_h5_meta m = meta_of(st, NL_H5_F32, 1);
    nl_h5_writer *w;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    put_norms(w);
    add_doc(w, st, 0, 5, 1);
    float x[D] = {0};
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "", -1), NL_OK);
    cr_assert_eq(nl_h5_writer_append_stream(w, &ctx, (nl_h5_stream)7, 0, x, 1), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "unknown stream 7"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    check_file(path, st, 5);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &r), NL_OK, "%s", ctx.msg);
    cr_assert(nl_h5_reader_info(r)->meta.no_acts, "a file with streams but no ffn_act has no activations");
    nl_h5_reader_close(r);
    /* unknown stream bits are refused at create */
    m.streams = 1u << NL_H5_N_STREAMS;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "unknown stream bits"), "%s", ctx.msg);
}

Test(h5streams, end_doc_refuses_a_short_stream) {
    char path[256];
    snprintf(path, sizeof path, "%s/short.h5", dir);
    const unsigned st = 1u << NL_H5_STREAM_RESID;
    nl_h5_meta m = meta_of(st, NL_H5_F32, 0);
    nl_h5_writer *w;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "", -1), NL_OK);
    int32_t ids[2] = {1, 2};
    float a[2 * F] = {0}, x[2 * D] = {0};
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 2), NL_OK);
    for (int l = 0; l < L; l++) cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, l, a, 2), NL_OK);
    cr_assert_eq(nl_h5_writer_append_stream(w, &ctx, NL_H5_STREAM_RESID, 0, x, 2), NL_OK);
    cr_assert_eq(nl_h5_writer_append_stream(w, &ctx, NL_H5_STREAM_RESID, 2, x, 1), NL_OK); /* one row short */
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "layer 2 has 1 resid rows but there are 2 tokens"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    check_file(path, st, 0);
}

Test(h5streams, interrupted_close_and_resume) {
    char path[256];
    snprintf(path, sizeof path, "%s/resume.h5", dir);
    const unsigned st = (1u << NL_H5_STREAM_RESID) | (1u << NL_H5_STREAM_ATTN_OUT) | (1u << NL_H5_STREAM_FFN_IN);
    nl_h5_meta m = meta_of(st, NL_H5_F16, 0);
    nl_h5_writer *w;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    put_norms(w);
    add_doc(w, st, 0, 6, 1);
    add_doc(w, st, 6, 3, 0); /* open: dropped by the interrupted close */
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    check_file(path, st, 6);
    /* resume with other streams: refused, naming the dataset */
    nl_h5_meta m2 = meta_of(st & ~(1u << NL_H5_STREAM_ATTN_OUT), NL_H5_F16, 0);
    cr_assert_eq(nl_h5_writer_resume(&ctx, path, &m2, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "/layers/0/attn_out is present"), "%s", ctx.msg);
    m2 = meta_of(st | 0, NL_H5_F16, 0);
    m2.streams = 1u << NL_H5_STREAM_RESID;
    cr_assert_eq(nl_h5_writer_resume(&ctx, path, &m2, &w), NL_EINVAL);
    /* the same streams: continues after the committed document */
    cr_assert_eq(nl_h5_writer_resume(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_docs(w), 1);
    add_doc(w, st, 6, 5, 1);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    check_file(path, st, 11);
    /* a file recorded without streams cannot be resumed with one */
    snprintf(path, sizeof path, "%s/plain.h5", dir);
    nl_h5_meta m3 = meta_of(0, NL_H5_F32, 0);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m3, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    m3.streams = 1u << NL_H5_STREAM_FFN_IN;
    cr_assert_eq(nl_h5_writer_resume(&ctx, path, &m3, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "/layers/0/ffn_in is missing"), "%s", ctx.msg);
}

Test(h5streams, vocab_roundtrip_utf8) {
    char path[256];
    snprintf(path, sizeof path, "%s/vocab.h5", dir);
    nl_h5_meta m = meta_of(0, NL_H5_F32, 0);
    nl_h5_writer *w;
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    const char *pieces[6] = {"<s>", " the", "", NULL, "\xE2\x96\x81" "caf\xC3\xA9", "\xEF\xBF\xBD"};
    const char *raw[6] = {"<s>", " the", "\0", NULL, "\xE2\x96\x81" "caf\xC3\xA9", "\xE6\x97"};
    const size_t raw_len[6] = {3, 4, 1, 0, 8, 2};
    cr_assert_eq(nl_h5_writer_put_vocab(w, &ctx, NULL, NULL, NULL, -1), NL_EINVAL);
    cr_assert_eq(nl_h5_writer_put_vocab(w, &ctx, pieces, raw, raw_len, 6), NL_OK, "%s", ctx.msg);
    const char *other[1] = {"x"};
    cr_assert_eq(nl_h5_writer_put_vocab(w, &ctx, other, NULL, NULL, 1), NL_OK, "%s", ctx.msg); /* kept: the first one stays */
    put_norms(w);
    add_doc(w, 0, 0, 2, 1);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "vocab", H5P_DEFAULT), t = H5Dget_type(ds), sp = H5Dget_space(ds);
    cr_assert_eq(H5Tget_class(t), H5T_STRING);
    cr_assert(H5Tis_variable_str(t) > 0);
    cr_assert_eq(H5Tget_cset(t), H5T_CSET_UTF8);
    hsize_t n;
    cr_assert_eq(H5Sget_simple_extent_ndims(sp), 1);
    H5Sget_simple_extent_dims(sp, &n, NULL);
    cr_assert_eq(n, 6);
    char *got[6];
    cr_assert(H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0);
    for (int i = 0; i < 6; i++) {
        cr_assert_str_eq(got[i], pieces[i] ? pieces[i] : "", "vocab[%d]", i);
        H5free_memory(got[i]);
    }
    H5Sclose(sp), H5Tclose(t), H5Dclose(ds);
    /* /vocab_bytes: the exact bytes, NUL and a split character included */
    ds = H5Dopen2(f, "vocab_bytes", H5P_DEFAULT);
    cr_assert(ds >= 0);
    hid_t mt = H5Tvlen_create(H5T_NATIVE_UINT8);
    hvl_t b[6];
    cr_assert(H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(b[i].len, raw_len[i], "vocab_bytes[%d] has %zu bytes", i, b[i].len);
        cr_assert(raw_len[i] == 0 || !memcmp(b[i].p, raw[i], raw_len[i]), "vocab_bytes[%d]", i);
    }
    sp = H5Dget_space(ds);
    H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, b);
    H5Sclose(sp), H5Tclose(mt), H5Dclose(ds), H5Fclose(f);
    nl_h5_reader *r; /* the reader accepts the extra datasets */
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &r), NL_OK, "%s", ctx.msg);
    nl_h5_reader_close(r);
}
