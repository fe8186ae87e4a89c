/* test_h5store.c — the HDF5 activation store: f32/f16 round trips with uneven appends,
 * layer subsets, pooled rows, interrupted closes, writer misuse and reader errors.
 * The f16 fast path (F16C) is checked value by value against the scalar conversions of
 * common.c. One test also leaves BUILD/test_h5store_schema*.h5 for tests/h5_schema.sh,
 * which runs tests/check_h5.py (h5py's view of the schema) on them. */
#include "neuronlab/h5store.h"

#include <ftw.h>
#include <hdf5.h>
#include <limits.h>
#include <unistd.h>
#include <sys/wait.h>

#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static char g_dir[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void mk_dir(void) {
    strcpy(g_dir, "/tmp/nl_h5store_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void rm_dir(void) {
    if (g_dir[0]) nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}
TestSuite(h5store, .init = mk_dir, .fini = rm_dir);

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

/* Deterministic activation of layer l, global token row, column c: a mix of O(1) values
 * and many near-zero ones, like SiLU/GELU outputs. */
static float act_val(int l, int64_t row, int c) {
    float v = sinf(0.37f * (float)row + 1.31f * (float)c + 0.7f * (float)l) * (1.0f + 0.25f * (float)l);
    return (c % 3 == 0) ? v * 1e-3f : v;
}

typedef struct {
    int n_layers, d_ff;
    const int *rec; /* recorded layers, or NULL = all */
    int n_rec;
    nl_h5_dtype dtype;
    int pooled, no_acts, chunk_rows;
    int flush;            /* nl_h5_writer_flush after every document (partial chunks reopened) */
    int n_docs;
    const int *doc_len;   /* (n_docs) */
    const char **labels;  /* (n_docs) */
    const int *prompt;    /* (n_docs) -1 = all */
} spec;

static int in_rec(const spec *s, int l) {
    if (!s->rec) return 1;
    for (int i = 0; i < s->n_rec; i++)
        if (s->rec[i] == l) return 1;
    return 0;
}

/* Pooled value of layer l, document d: a simple function of (l, d, c). */
static float pool_val(int l, int d, int c) { return 0.01f * (float)(l * 1000 + d * 10) + (float)c * 1e-4f; }

static nl_h5_meta meta_of(const spec *s) {
    nl_h5_meta m = {
        .model = "test-model",
        .arch = "llama",
        .n_layers = s->n_layers,
        .d_model = 16,
        .d_ff = s->d_ff,
        .ffn_kind = "gated",
        .act_fn = "silu",
        .dtype = s->dtype,
        .dataset = "tests/fixtures/docs.jsonl",
        .layers = s->rec,
        .n_rec = s->rec ? s->n_rec : 0,
        .pooled = s->pooled,
        .no_acts = s->no_acts,
        .chunk_rows = s->chunk_rows,
    };
    return m;
}

/* Appends documents [d0, d1) of s, each in uneven pieces; tokens and layers interleaved in
 * varying orders. Every layer of the model is offered (the writer ignores the others). */
static void write_docs(nl_h5_writer *w, nl_ctx *ctx, const spec *s, int d0, int d1, int64_t *row) {
    static const int pieces[] = {3, 8, 1, 13, 5};
    int F = s->d_ff;
    float *a = malloc(sizeof(float) * 64 * (size_t)F);
    int32_t ids[64];
    for (int d = d0; d < d1; d++) {
        cr_assert_eq(nl_h5_writer_begin_doc(w, ctx, s->labels[d], s->prompt[d]), NL_OK, "%s", ctx->msg);
        int len = s->doc_len[d], done = 0, k = d;
        while (done < len) {
            int T = pieces[k++ % 5];
            if (T > len - done) T = len - done;
            for (int t = 0; t < T; t++) ids[t] = (int32_t)((*row + done + t) * 7 % 1000);
            if (k % 2) cr_assert_eq(nl_h5_writer_append_tokens(w, ctx, ids, T), NL_OK, "%s", ctx->msg);
            for (int l = s->n_layers - 1; l >= 0; l--) {
                for (int t = 0; t < T; t++)
                    for (int c = 0; c < F; c++) a[(size_t)t * F + c] = act_val(l, *row + done + t, c);
                cr_assert_eq(nl_h5_writer_append_acts(w, ctx, l, a, T), NL_OK, "%s", ctx->msg);
            }
            if (!(k % 2)) cr_assert_eq(nl_h5_writer_append_tokens(w, ctx, ids, T), NL_OK, "%s", ctx->msg);
            done += T;
        }
        for (int l = 0; l < s->n_layers; l++) {
            for (int c = 0; c < F; c++) a[c] = pool_val(l, d, c);
            cr_assert_eq(nl_h5_writer_append_pooled(w, ctx, l, a), NL_OK, "%s", ctx->msg);
        }
        cr_assert_eq(nl_h5_writer_end_doc(w, ctx), NL_OK, "%s", ctx->msg);
        if (s->flush) cr_assert_eq(nl_h5_writer_flush(w, ctx), NL_OK, "%s", ctx->msg);
        *row += len;
    }
    free(a);
}

static void write_norms(nl_h5_writer *w, nl_ctx *ctx, const spec *s) {
    float *n = malloc(sizeof(float) * (size_t)s->d_ff);
    for (int l = 0; l < s->n_layers; l++) {
        for (int c = 0; c < s->d_ff; c++) n[c] = (float)l + 0.5f * (float)c;
        cr_assert_eq(nl_h5_writer_put_w_out_norm(w, ctx, l, n), NL_OK, "%s", ctx->msg);
    }
    free(n);
}

static void write_file(const char *path, const spec *s) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = meta_of(s);
    nl_h5_writer *w = NULL;
    cr_assert_eq(nl_h5_writer_create(&ctx, path, &m, &w), NL_OK, "%s", ctx.msg);
    int64_t row = 0;
    write_docs(w, &ctx, s, 0, s->n_docs, &row);
    write_norms(w, &ctx, s);
    cr_assert_eq(nl_h5_writer_docs(w), s->n_docs);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
}

static float expect_act(const spec *s, int l, int64_t row, int c) {
    float v = act_val(l, row, c);
    return s->dtype == NL_H5_F16 ? nl_f16_to_f32(nl_f32_to_f16(v)) : v;
}

/* Checks everything a reader sees for the first n_docs documents of s. */
static void check_file(const char *path, const spec *s, int n_docs, int complete) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r = NULL;
    cr_assert_eq(nl_h5_reader_open(&ctx, path, &r), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(r);
    int F = s->d_ff;
    cr_assert_str_eq(in->meta.model, "test-model");
    cr_assert_str_eq(in->meta.arch, "llama");
    cr_assert_str_eq(in->meta.ffn_kind, "gated");
    cr_assert_str_eq(in->meta.act_fn, "silu");
    cr_assert_str_eq(in->meta.dataset, "tests/fixtures/docs.jsonl");
    cr_assert_str_eq(in->meta.created_by, "neuronlab " NL_VERSION);
    cr_assert_eq(in->meta.n_layers, s->n_layers);
    cr_assert_eq(in->meta.d_model, 16);
    cr_assert_eq(in->meta.d_ff, F);
    cr_assert_eq(in->meta.dtype, s->dtype);
    cr_assert_eq(in->meta.pooled, s->pooled);
    cr_assert_eq(in->meta.no_acts, s->no_acts);
    cr_assert_eq(in->version, 1);
    cr_assert_eq(in->complete, complete);
    cr_assert_eq(in->n_docs, n_docs);
    int n_rec = 0;
    for (int l = 0; l < s->n_layers; l++) {
        cr_assert_eq(nl_h5_reader_has_layer(r, l), in_rec(s, l), "layer %d", l);
        if (in_rec(s, l)) cr_assert_eq(in->meta.layers[n_rec++], l, "layers are stored sorted");
    }
    cr_assert_eq(in->meta.n_rec, n_rec);

    int64_t N = 0;
    for (int d = 0; d < n_docs; d++) {
        cr_assert_eq(in->doc_offsets[d], N);
        N += s->doc_len[d];
        cr_assert_str_eq(in->doc_labels[d], s->labels[d]);
        cr_assert_eq(in->prompt_len[d], s->prompt[d] < 0 ? s->doc_len[d] : s->prompt[d]);
    }
    cr_assert_eq(in->doc_offsets[n_docs], N);
    cr_assert_eq(in->n_tokens, N);
    for (int64_t t = 0; t < N; t++) cr_assert_eq(in->tokens[t], (int32_t)(t * 7 % 1000), "token %lld", (long long)t);

    float *got = malloc(sizeof(float) * (size_t)(N ? N : 1) * F), *want = malloc(sizeof(float) * (size_t)(N ? N : 1) * F);
    for (int l = 0; l < s->n_layers; l++) {
        if (!in_rec(s, l)) {
            cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, 0, 0, got), NL_EINVAL);
            cr_assert(strstr(ctx.msg, "not recorded"), "%s", ctx.msg);
            continue;
        }
        if (s->no_acts) {
            cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, 0, 1, got), NL_EINVAL);
        } else {
            for (int64_t t = 0; t < N; t++)
                for (int c = 0; c < F; c++) want[t * F + c] = expect_act(s, l, t, c);
            /* Whole layer, then windows that straddle chunk boundaries. */
            cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, 0, (int)N, got), NL_OK, "%s", ctx.msg);
            cr_assert_eq(memcmp(got, want, sizeof(float) * (size_t)N * F), 0, "layer %d differs", l);
            for (int64_t r0 = 0; r0 < N; r0 += 5) {
                int n = (int)(N - r0 < 11 ? N - r0 : 11);
                cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, r0, n, got), NL_OK, "%s", ctx.msg);
                cr_assert_eq(memcmp(got, want + r0 * F, sizeof(float) * (size_t)n * F), 0, "layer %d rows %lld", l, (long long)r0);
            }
            cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, N - 1, 2, got), NL_EINVAL);
            cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, l, -1, 1, got), NL_EINVAL);
        }
        if (complete) {
            cr_assert_eq(nl_h5_reader_read_w_out_norm(r, &ctx, l, got), NL_OK, "%s", ctx.msg);
            for (int c = 0; c < F; c++) cr_assert_eq(got[c], (float)l + 0.5f * (float)c);
        }
        if (s->pooled) {
            cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, l, 0, n_docs, got), NL_OK, "%s", ctx.msg);
            for (int d = 0; d < n_docs; d++)
                for (int c = 0; c < F; c++) cr_assert_eq(got[(size_t)d * F + c], pool_val(l, d, c));
            if (n_docs > 1) {
                cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, l, 1, 1, got), NL_OK, "%s", ctx.msg);
                cr_assert_eq(got[0], pool_val(l, 1, 0));
            }
            cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, l, n_docs, 1, got), NL_EINVAL);
        } else {
            cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, l, 0, 1, got), NL_EINVAL);
        }
    }
    free(got);
    free(want);
    nl_h5_reader_close(r);
}

static const int k_len[] = {7, 0, 23, 1, 40, 9, 16};
static const char *k_lab[] = {"code", "", "math", "código ✓", "", "code", "story"};
static const int k_prm[] = {-1, -1, 10, 1, -1, 0, 16};

/* ------------------------------------------------------------------ round trips */

Test(h5store, roundtrip_f32) {
    /* chunk_rows 8: many chunk boundaries, pieces larger than a chunk take the direct path. */
    spec s = {.n_layers = 3, .d_ff = 37, .dtype = NL_H5_F32, .pooled = 1, .chunk_rows = 8,
              .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("f32.h5");
    write_file(p, &s);
    check_file(p, &s, 7, 1);
}

Test(h5store, roundtrip_f16_auto_chunks) {
    spec s = {.n_layers = 2, .d_ff = 45, .dtype = NL_H5_F16, .pooled = 1,
              .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("f16.h5");
    write_file(p, &s);
    check_file(p, &s, 7, 1);
}

Test(h5store, roundtrip_f16_scalar_path) {
    setenv("NL_NO_F16C", "1", 1); /* read once per process: Criterion runs each test in its own */
    spec s = {.n_layers = 2, .d_ff = 19, .dtype = NL_H5_F16, .chunk_rows = 4, .flush = 1,
              .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("f16s.h5");
    write_file(p, &s);
    check_file(p, &s, 7, 1);
}

Test(h5store, subset_of_layers) {
    static const int rec[] = {3, 1}; /* unsorted on purpose */
    spec s = {.n_layers = 5, .d_ff = 8, .rec = rec, .n_rec = 2, .dtype = NL_H5_F32, .pooled = 1, .chunk_rows = 16,
              .flush = 1, .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("subset.h5");
    write_file(p, &s);
    check_file(p, &s, 7, 1);
}

Test(h5store, pooled_only) {
    spec s = {.n_layers = 2, .d_ff = 12, .dtype = NL_H5_F16, .pooled = 1, .no_acts = 1,
              .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("pooled.h5");
    write_file(p, &s);
    check_file(p, &s, 7, 1);
}

Test(h5store, no_documents) {
    spec s = {.n_layers = 2, .d_ff = 5, .dtype = NL_H5_F32, .pooled = 1, .n_docs = 0,
              .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    const char *p = tmp_path("empty.h5");
    write_file(p, &s);
    check_file(p, &s, 0, 1);
}

/* Every half value (but NaNs) survives f32 → f16 → f32 exactly, and rounding of values
 * between halves (ties, subnormals, overflow) matches nl_f32_to_f16, on whichever
 * conversion path this CPU takes. */
Test(h5store, f16_conversion_matches_scalar) {
    enum { F = 64 };
    int n = 0, cap = 65536 + 4 * 65536;
    float *v = malloc(sizeof(float) * (size_t)cap);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nl_f16_to_f32((uint16_t)h);
        if (f == f) v[n++] = f;
    }
    uint32_t x = 12345;
    for (uint32_t h = 0; h < 65535; h++) { /* midpoints and near-midpoints between neighbours */
        float a = nl_f16_to_f32((uint16_t)h), b = nl_f16_to_f32((uint16_t)(h + 1));
        if (a != a || b != b || isinf(a) || isinf(b) || (h & 0x7fff) == 0x7fff) continue;
        float mid = (float)(((double)a + (double)b) / 2);
        v[n++] = mid;
        v[n++] = nextafterf(mid, INFINITY);
        v[n++] = nextafterf(mid, -INFINITY);
        x = x * 1103515245u + 12345u;
        v[n++] = a + (b - a) * (float)(x >> 8) / 16777216.0f;
    }
    v[n++] = 65519.0f;
    v[n++] = 65520.0f;
    v[n++] = 1e30f;
    v[n++] = -1e-30f;
    while (n % F) v[n++] = 0.0f;
    int T = n / F;

    const char *p = tmp_path("conv.h5");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.n_layers = 1, .d_model = 1, .d_ff = F, .ffn_kind = "plain", .dtype = NL_H5_F16};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int32_t *ids = calloc((size_t)T, sizeof(int32_t));
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, NULL, -1), NL_OK);
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, T), NL_OK);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 0, v, T), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);

    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    float *got = malloc(sizeof(float) * (size_t)n);
    cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, 0, 0, T, got), NL_OK, "%s", ctx.msg);
    for (int i = 0; i < n; i++) {
        float want = nl_f16_to_f32(nl_f32_to_f16(v[i]));
        uint32_t gb, wb;
        memcpy(&gb, &got[i], 4);
        memcpy(&wb, &want, 4);
        cr_assert_eq(gb, wb, "value %d: %a stored as %a, scalar path gives %a", i, (double)v[i], (double)got[i], (double)want);
    }
    nl_h5_reader_close(r);
    free(got);
    free(ids);
    free(v);
}

/* ------------------------------------------------------------------ interrupted runs */

/* Two whole documents, then a third one cut off mid-way (tokens beyond a chunk boundary
 * already on disk, layers unevenly advanced): close(w, 0) keeps the two. */
Test(h5store, interrupted_close_is_consistent) {
    spec s = {.n_layers = 3, .d_ff = 10, .dtype = NL_H5_F16, .pooled = 1, .chunk_rows = 4,
              .n_docs = 3, .doc_len = (const int[]){9, 5, 30}, .labels = (const char *[]){"a", "b", "c"},
              .prompt = (const int[]){-1, 2, -1}};
    const char *p = tmp_path("interrupted.h5");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = meta_of(&s);
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int64_t row = 0;
    write_docs(w, &ctx, &s, 0, 2, &row);
    cr_assert_eq(nl_h5_writer_flush(w, &ctx), NL_OK, "%s", ctx.msg);
    /* Document 3: 17 tokens, layer 0 gets 17 rows, layer 1 gets 6, layer 2 none; one pooled row. */
    int32_t ids[17] = {0};
    float a[17 * 10] = {0};
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "c", -1), NL_OK);
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 17), NL_OK);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 0, a, 17), NL_OK);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 1, a, 6), NL_OK);
    cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, 0, a), NL_OK);
    cr_assert_eq(nl_h5_writer_tokens(w), 14 + 17);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    check_file(p, &s, 2, 0);
}

/* A writer killed without close (here: a child that _exits) after a commit made inside an
 * open document: the file opens, holds the committed documents (rows past the last one are
 * ignored) and nl_h5_writer_resume continues it to the same content as an uninterrupted run;
 * a resume with another dtype is refused. */
Test(h5store, killed_writer_file_reads_and_resumes) {
    spec s = {.n_layers = 3, .d_ff = 10, .dtype = NL_H5_F32, .pooled = 1, .chunk_rows = 4,
              .n_docs = 5, .doc_len = (const int[]){9, 5, 30, 7, 11}, .labels = (const char *[]){"a", "b", "", "d", "e"},
              .prompt = (const int[]){-1, 2, -1, 3, -1}};
    const char *p = tmp_path("killed.h5");
    nl_h5_meta m = meta_of(&s);
    m.commit_seconds = -1; /* commit after every document */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        nl_h5_writer *w;
        if (nl_h5_writer_create(&ctx, p, &m, &w) != NL_OK) _exit(2);
        write_norms(w, &ctx, &s);
        int64_t row = 0;
        write_docs(w, &ctx, &s, 0, 3, &row);
        int32_t ids[5] = {0};
        float a[5 * 10] = {0};
        if (nl_h5_writer_begin_doc(w, &ctx, "x", -1) != NL_OK || nl_h5_writer_append_tokens(w, &ctx, ids, 5) != NL_OK ||
            nl_h5_writer_append_acts(w, &ctx, 0, a, 5) != NL_OK || nl_h5_writer_flush(w, &ctx) != NL_OK)
            _exit(3);
        _exit(0); /* no close: as if killed */
    }
    int wst = 0;
    waitpid(pid, &wst, 0);
    cr_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "child status %d", wst);
    check_file(p, &s, 3, 0);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_writer *w = NULL;
    nl_h5_meta m16 = m;
    m16.dtype = NL_H5_F16;
    cr_assert_eq(nl_h5_writer_resume(&ctx, p, &m16, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "its dtype is 'float32' but this run's is 'float16'"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_resume(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_docs(w), 3);
    cr_assert_eq(nl_h5_writer_tokens(w), 9 + 5 + 30);
    int64_t row = 9 + 5 + 30;
    write_docs(w, &ctx, &s, 3, 5, &row);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
    check_file(p, &s, 5, 1);
}

Test(h5store, complete_close_with_open_document_is_an_error) {
    spec s = {.n_layers = 1, .d_ff = 4, .dtype = NL_H5_F32, .n_docs = 2, .doc_len = (const int[]){3, 4},
              .labels = (const char *[]){"x", "y"}, .prompt = (const int[]){-1, -1}};
    const char *p = tmp_path("open.h5");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = meta_of(&s);
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int64_t row = 0;
    write_docs(w, &ctx, &s, 0, 1, &row);
    write_norms(w, &ctx, &s);
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "y", -1), NL_OK);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "still open"), "%s", ctx.msg);
    check_file(p, &s, 1, 0);
}

Test(h5store, complete_close_without_w_out_norm_is_an_error) {
    spec s = {.n_layers = 2, .d_ff = 4, .dtype = NL_H5_F32, .n_docs = 1, .doc_len = (const int[]){3},
              .labels = (const char *[]){"x"}, .prompt = (const int[]){-1}};
    const char *p = tmp_path("nonorm.h5");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = meta_of(&s);
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int64_t row = 0;
    write_docs(w, &ctx, &s, 0, 1, &row);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "w_out_norm"), "%s", ctx.msg);
    check_file(p, &s, 1, 0);
    nl_h5_reader *r;
    float out[4];
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_read_w_out_norm(r, &ctx, 0, out), NL_EFORMAT);
    nl_h5_reader_close(r);
}

/* ------------------------------------------------------------------ writer misuse */

Test(h5store, writer_rejects_misuse) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("misuse.h5");
    nl_h5_meta m = {.model = "m", .n_layers = 2, .d_model = 4, .d_ff = 3, .ffn_kind = "gated", .pooled = 1};
    nl_h5_writer *w;

    nl_h5_meta bad = m;
    bad.ffn_kind = "moe";
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &bad, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "ffn_kind"), "%s", ctx.msg);
    bad = m;
    bad.layers = (const int[]){0, 2};
    bad.n_rec = 2;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &bad, &w), NL_EINVAL);
    bad.layers = (const int[]){1, 1};
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &bad, &w), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "twice"), "%s", ctx.msg);

    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int32_t ids[4] = {1, 2, 3, 4};
    float a[12] = {0};
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 4), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "outside a document"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_EINVAL);
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "x", 5), NL_OK);
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "x", 5), NL_EINVAL);
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 4), NL_OK);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 2, a, 4), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "layer 2 is outside 0..1"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 0, a, 4), NL_OK);
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_EINVAL); /* layer 1 lacks rows */
    cr_assert(strstr(ctx.msg, "layer 1 has 0 activation rows but there are 4 tokens"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 1, a, 4), NL_OK);
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_EINVAL); /* no pooled rows */
    cr_assert(strstr(ctx.msg, "no pooled row"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, 0, a), NL_OK);
    cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, 0, a), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "already has a pooled row"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_append_pooled(w, &ctx, 1, a), NL_OK);
    cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_EINVAL); /* prompt_len 5 > 4 tokens */
    cr_assert(strstr(ctx.msg, "prompt_len 5 exceeds its 4 tokens"), "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);

    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_info(r)->n_docs, 0);
    cr_assert_eq(nl_h5_reader_info(r)->n_tokens, 0);
    nl_h5_reader_close(r);

    cr_assert_eq(nl_h5_writer_close(NULL, &ctx, 1), NL_OK);
    nl_h5_reader_close(NULL);
}

Test(h5store, unwritable_path) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.n_layers = 1, .d_model = 4, .d_ff = 3, .ffn_kind = "plain"};
    nl_h5_writer *w = (nl_h5_writer *)1;
    cr_assert_eq(nl_h5_writer_create(&ctx, "/nonexistent-dir/acts.h5", &m, &w), NL_EIO);
    cr_assert_null(w);
    cr_assert_str_eq(ctx.msg, "cannot create '/nonexistent-dir/acts.h5': No such file or directory");
    cr_assert_eq(nl_h5_writer_create(&ctx, g_dir, &m, &w), NL_EIO);
    cr_assert(strstr(ctx.msg, "cannot create '") == ctx.msg && strstr(ctx.msg, "Is a directory"), "%s", ctx.msg);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

/* ------------------------------------------------------------------ reader errors */

static void small_file(const char *p) {
    spec s = {.n_layers = 2, .d_ff = 4, .dtype = NL_H5_F32, .pooled = 1, .n_docs = 2, .doc_len = (const int[]){3, 2},
              .labels = (const char *[]){"x", ""}, .prompt = (const int[]){-1, 1}};
    write_file(p, &s);
}

static void set_int_attr(const char *p, const char *name, int v) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_INT, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
}

Test(h5store, reader_missing_file) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r = (nl_h5_reader *)1;
    const char *p = tmp_path("nope.h5");
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EIO);
    cr_assert_null(r);
    char want[512];
    snprintf(want, sizeof want, "cannot open '%s': No such file or directory", p);
    cr_assert_str_eq(ctx.msg, want);
}

Test(h5store, reader_not_hdf5) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("text.h5");
    FILE *f = fopen(p, "w");
    fputs("{\"text\": \"not an HDF5 file\"}\n", f);
    fclose(f);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EFORMAT);
    char want[512];
    snprintf(want, sizeof want, "'%s' is not an HDF5 file", p);
    cr_assert_str_eq(ctx.msg, want);
}

Test(h5store, reader_other_hdf5_format) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("other.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 4;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t ds = H5Dcreate2(f, "x", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EFORMAT);
    char want[512];
    snprintf(want, sizeof want, "'%s' is not a neuronlab activation file (format attribute missing)", p);
    cr_assert_str_eq(ctx.msg, want);

    /* A format attribute naming something else. */
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 9);
    sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "other.v1");
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "is not a neuronlab activation file (format is 'other.v1'"), "%s", ctx.msg);
}

Test(h5store, reader_version_2) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("v2.h5");
    small_file(p);
    set_int_attr(p, "version", 2);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EUNSUPPORTED);
    char want[512];
    snprintf(want, sizeof want, "'%s': activation file version 2 is not supported (this neuronlab reads version 1)", p);
    cr_assert_str_eq(ctx.msg, want);
}

Test(h5store, reader_inconsistent_lengths) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("short.h5");
    small_file(p);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "layers/1/ffn_act", H5P_DEFAULT);
    hsize_t ext[2] = {4, 4};
    cr_assert_geq(H5Dset_extent(ds, ext), 0);
    H5Dclose(ds);
    H5Fclose(f);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "is corrupt: /layers/1/ffn_act has shape (4, 4), expected (5, 4)"), "%s", ctx.msg);
}

Test(h5store, reader_truncated_file) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("trunc.h5");
    small_file(p);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(truncate(p, st.st_size / 2), 0);
    nl_h5_reader *r;
    nl_status s = nl_h5_reader_open(&ctx, p, &r);
    cr_assert(s == NL_EIO || s == NL_EFORMAT, "status %d: %s", s, ctx.msg);
    cr_assert(strstr(ctx.msg, p), "%s", ctx.msg);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

/* A schema-v1 file as another tool may write it (h5py with numpy defaults): fixed-length
 * NULLPAD strings, int64 attributes, no "layers" or "complete" attribute, contiguous
 * datasets, h5py's float16 type. */
static void put_fixed_str_attr(hid_t f, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v));
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}
static void put_i64_attr(hid_t f, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(sp);
}
static void put_ds(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank, hsize_t d0, hsize_t d1, const void *v) {
    hsize_t dims[2] = {d0, d1};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(loc, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "%s", name);
    cr_assert_geq(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0, "%s", name);
    H5Dclose(ds);
    H5Pclose(lcpl);
    H5Sclose(sp);
}

Test(h5store, reader_accepts_files_from_other_tools) {
    const char *p = tmp_path("foreign.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    put_fixed_str_attr(f, "format", "neuronlab.activations");
    put_i64_attr(f, "version", 1);
    put_fixed_str_attr(f, "model", "gpt2");
    put_fixed_str_attr(f, "arch", "gpt2");
    put_i64_attr(f, "n_layers", 2);
    put_i64_attr(f, "d_model", 4);
    put_i64_attr(f, "d_ff", 3);
    put_fixed_str_attr(f, "ffn_kind", "plain");
    put_fixed_str_attr(f, "act_fn", "gelu");
    put_fixed_str_attr(f, "dtype", "float16");
    int32_t tok[5] = {5, 6, 7, 8, 9};
    int64_t off[3] = {0, 2, 5};
    int64_t plen[2] = {2, 1};
    char labels[2][4] = {"ab", "xyz"}; /* NULLPAD: "xyz" fills all 3 bytes, no NUL stored */
    put_ds(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 5, 0, tok);
    put_ds(f, "doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, 3, 0, off);
    put_ds(f, "prompt_len", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, 2, 0, plen);
    hid_t lt = H5Tcopy(H5T_C_S1);
    H5Tset_size(lt, 3);
    H5Tset_strpad(lt, H5T_STR_NULLPAD);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, 4);
    put_ds(f, "doc_labels", lt, mt, 1, 2, 0, labels);
    H5Tclose(lt);
    H5Tclose(mt);
    hid_t half = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(half, 15, 10, 5, 0, 10);
    H5Tset_size(half, 2);
    H5Tset_ebias(half, 15);
    float a[2][15];
    for (int l = 0; l < 2; l++) {
        char name[32];
        for (int i = 0; i < 15; i++) a[l][i] = 0.5f * (float)i + (float)l;
        snprintf(name, sizeof name, "layers/%d/ffn_act", l);
        put_ds(f, name, half, H5T_NATIVE_FLOAT, 2, 5, 3, a[l]);
    }
    H5Tclose(half);
    H5Fclose(f);

    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_str_eq(in->meta.model, "gpt2");
    cr_assert_str_eq(in->meta.ffn_kind, "plain");
    cr_assert_str_eq(in->meta.created_by, "");
    cr_assert_eq(in->meta.dtype, NL_H5_F16);
    cr_assert_eq(in->meta.n_rec, 2);
    cr_assert_eq(in->complete, 1);
    cr_assert_eq(in->n_tokens, 5);
    cr_assert_eq(in->n_docs, 2);
    cr_assert_str_eq(in->doc_labels[0], "ab");
    cr_assert_str_eq(in->doc_labels[1], "xyz");
    cr_assert_eq(in->prompt_len[1], 1);
    float out[15];
    cr_assert_eq(nl_h5_reader_read_acts(r, &ctx, 1, 0, 5, out), NL_OK, "%s", ctx.msg);
    nl_check_close(out, a[1], 15, 0.0);
    nl_h5_reader_close(r);
}

/* ------------------------------------------------------------------ hostile files
 * Each case breaks one size, type or value of a valid small_file() and expects a one-line
 * NL_EFORMAT naming the file, before anything is allocated from the broken size. The ASan
 * build (make debug) runs them too: R2 read freed memory, R4 overflowed a string buffer. */

/* Opens p and expects status want with a one-line message naming p and containing sub. */
static void expect_open_fails(const char *p, nl_status want, const char *sub) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r = (nl_h5_reader *)1;
    nl_status s = nl_h5_reader_open(&ctx, p, &r);
    cr_assert_eq(s, want, "status %d, want %d: %s", s, want, ctx.msg);
    cr_assert_null(r);
    cr_assert(strstr(ctx.msg, p), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, sub), "message '%s' lacks '%s'", ctx.msg, sub);
    cr_assert_null(strchr(ctx.msg, '\n'), "%s", ctx.msg);
}

static void replace_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int rank, hsize_t n, const void *v) {
    if (H5Aexists(obj, name) > 0) cr_assert_geq(H5Adelete(obj, name), 0, "%s", name);
    hid_t sp = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0, "%s", name);
    cr_assert_geq(H5Awrite(a, mtype, v), 0, "%s", name);
    H5Aclose(a);
    H5Sclose(sp);
}

static void set_layers_attr(const char *p, const int *v, int n) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    replace_attr(f, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, 1, (hsize_t)n, v);
    H5Fclose(f);
}

/* Overwrites the whole dataset name (same length) with v in memory type mt. */
static void overwrite_ds(const char *p, const char *name, hid_t mt, const void *v) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "%s", name);
    cr_assert_geq(H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0, "%s", name);
    H5Dclose(ds);
    H5Fclose(f);
}

static void resize_ds(const char *p, const char *name, hsize_t d0, hsize_t d1) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    hsize_t ext[2] = {d0, d1};
    cr_assert_geq(H5Dset_extent(ds, ext), 0, "%s", name);
    H5Dclose(ds);
    H5Fclose(f);
}

/* R2: a layers attribute [0, 5] with n_layers = 2 (the message used to read the freed list). */
Test(h5store, reader_layers_attr_outside_n_layers) {
    const char *p = tmp_path("layers05.h5");
    small_file(p);
    set_layers_attr(p, (const int[]){0, 5}, 2);
    expect_open_fails(p, NL_EFORMAT, "is corrupt: attribute 'layers' lists layer 5 but n_layers is 2");
    set_layers_attr(p, (const int[]){-1}, 1);
    expect_open_fails(p, NL_EFORMAT, "attribute 'layers' lists layer -1 but n_layers is 2");
    set_layers_attr(p, (const int[]){1, 1}, 2);
    expect_open_fails(p, NL_EFORMAT, "attribute 'layers' lists layer 1 twice");
    set_layers_attr(p, (const int[]){0, 1, 0}, 3);
    expect_open_fails(p, NL_EFORMAT, "attribute 'layers' lists more layers than n_layers = 2");
    set_layers_attr(p, (const int[]){1, 0}, 2); /* unsorted is fine */
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_info(r)->meta.n_rec, 2);
    nl_h5_reader_close(r);
}

/* R4: string attributes stored as arrays (variable- and fixed-length) are refused; one
 * fixed-length string, ASCII or UTF-8, NULLTERM or NULLPAD, and ASCII variable-length
 * strings are read. */
Test(h5store, reader_string_attr_arrays_and_fixed_strings) {
    const char *p = tmp_path("strattr.h5");
    small_file(p);
    hid_t vstr = H5Tcopy(H5T_C_S1);
    H5Tset_size(vstr, H5T_VARIABLE);
    H5Tset_cset(vstr, H5T_CSET_UTF8);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    const char *two[2] = {"silu", "gelu"};
    replace_attr(f, "act_fn", vstr, vstr, 1, 2, two);
    H5Fclose(f);
    expect_open_fails(p, NL_EFORMAT, "is corrupt: attribute 'act_fn' is an array of 2 strings, expected one string");

    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    replace_attr(f, "act_fn", vstr, vstr, 0, 1, &two[0]);
    static char many[4000][8]; /* 4000 fixed-length strings of 8 bytes */
    for (int i = 0; i < 4000; i++) snprintf(many[i], 8, "m%u", (unsigned)i % 10000u);
    hid_t fx = H5Tcopy(H5T_C_S1);
    H5Tset_size(fx, 8);
    replace_attr(f, "model", fx, fx, 1, 4000, many);
    H5Fclose(f);
    expect_open_fails(p, NL_EFORMAT, "attribute 'model' is an array of 4000 strings, expected one string");

    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    const char *fmts[3] = {"neuronlab.activations", "x", "y"};
    replace_attr(f, "format", vstr, vstr, 1, 3, fmts);
    H5Fclose(f);
    expect_open_fails(p, NL_EFORMAT, "is not a neuronlab activation file (format attribute is an array of 3 strings");

    /* Accepted: fixed-length scalars in UTF-8 (NULLPAD, full width) and ASCII (NULLTERM),
     * an ASCII variable-length string, a one-element array. */
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    replace_attr(f, "format", vstr, vstr, 0, 1, &fmts[0]);
    const char *model = "gpt2-\xc3\xbc"; /* "gpt2-ü": 7 bytes */
    hid_t u8 = H5Tcopy(H5T_C_S1);
    H5Tset_size(u8, 7);
    H5Tset_strpad(u8, H5T_STR_NULLPAD);
    H5Tset_cset(u8, H5T_CSET_UTF8);
    replace_attr(f, "model", u8, u8, 0, 1, model);
    hid_t asc = H5Tcopy(H5T_C_S1);
    H5Tset_size(asc, 6);
    replace_attr(f, "arch", asc, asc, 0, 1, "llama");
    hid_t vasc = H5Tcopy(H5T_C_S1);
    H5Tset_size(vasc, H5T_VARIABLE);
    const char *ds = "docs.jsonl";
    replace_attr(f, "dataset", vasc, vasc, 0, 1, &ds);
    const char *ffk[1] = {"gated"};
    replace_attr(f, "ffn_kind", vstr, vstr, 1, 1, ffk);
    H5Fclose(f);
    H5Tclose(u8);
    H5Tclose(asc);
    H5Tclose(vasc);
    H5Tclose(fx);
    H5Tclose(vstr);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_str_eq(in->meta.model, model);
    cr_assert_str_eq(in->meta.arch, "llama");
    cr_assert_str_eq(in->meta.dataset, "docs.jsonl");
    cr_assert_str_eq(in->meta.ffn_kind, "gated");
    cr_assert_str_eq(in->meta.act_fn, "silu");
    nl_h5_reader_close(r);
}

/* R15: n_layers = 2^30 without a layers attribute used to allocate 4 GB and probe 2^30
 * group names. A moderate n_layers is fine: the /layers group is listed instead. */
Test(h5store, reader_huge_n_layers, .timeout = 20) {
    const char *p = tmp_path("hugeL.h5");
    small_file(p);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Adelete(f, "layers"), 0);
    H5Fclose(f);
    set_int_attr(p, "n_layers", 1 << 30);
    expect_open_fails(p, NL_EFORMAT, "is corrupt: attribute n_layers = 1073741824 (more than 65536)");

    set_int_attr(p, "n_layers", 60000);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_info(r)->meta.n_rec, 2);
    cr_assert_eq(nl_h5_reader_info(r)->meta.layers[1], 1);
    cr_assert(nl_h5_reader_has_layer(r, 1));
    cr_assert(!nl_h5_reader_has_layer(r, 2));
    nl_h5_reader_close(r);

    /* A group /layers/7 in a file of 2 layers, and a non-decimal name (ignored). */
    set_int_attr(p, "n_layers", 2);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "layers/notes", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(g);
    H5Fclose(f);
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_info(r)->meta.n_rec, 2);
    nl_h5_reader_close(r);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gcreate2(f, "layers/7", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(g);
    H5Fclose(f);
    expect_open_fails(p, NL_EFORMAT, "is corrupt: group /layers/7 exists but n_layers is 2");
}

/* R15: every other size against the datasets present: offsets, prompt lengths, labels,
 * shapes of w_out_norm and mean_abs, d_ff, and datasets declaring more than the file holds. */
Test(h5store, reader_sizes_against_datasets, .timeout = 30) {
    struct {
        const char *name;
        int what;
        const char *sub;
    } cases[] = {
        {"off_dec", 0, "doc_offsets decreases at document 1"},
        {"off_end", 1, "doc_offsets[-1] = 6 but /tokens has 5 entries"},
        {"off_start", 2, "doc_offsets[0] = 1, expected 0"},
        {"plen_big", 3, "prompt_len[1] = 3 but the document has 2 tokens"},
        {"plen_neg", 4, "prompt_len[0] = -1 but the document has 3 tokens"},
        {"pooled_rows", 5, "/pooled/1/mean_abs is not a float dataset of shape (2, 4) (documents, d_ff)"},
        {"wnorm_len", 6, "/layers/0/w_out_norm is not a float dataset of d_ff = 4 entries"},
        {"d_ff", 7, "/layers/0/ffn_act has shape (5, 4), expected (5, 5) (tokens, d_ff)"},
        {"labels", 8, "/doc_labels has 1 entries but there are 2 documents"},
        {"tokens_huge", 9, "/tokens declares 4398046511104 bytes but the file stores"},
        {"offsets_huge", 10, "/doc_offsets declares"},
        {"wnorm_unstored", 11, "/layers/1/w_out_norm declares 4294967296 bytes but the file stores 0 of them"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "sz_%s.h5", cases[k].name);
        const char *p = tmp_path(nm);
        small_file(p);
        switch (cases[k].what) {
        case 0: overwrite_ds(p, "doc_offsets", H5T_NATIVE_INT64, (const int64_t[]){0, 4, 3}); break;
        case 1: overwrite_ds(p, "doc_offsets", H5T_NATIVE_INT64, (const int64_t[]){0, 3, 6}); break;
        case 2: overwrite_ds(p, "doc_offsets", H5T_NATIVE_INT64, (const int64_t[]){1, 3, 5}); break;
        case 3: overwrite_ds(p, "prompt_len", H5T_NATIVE_INT32, (const int32_t[]){3, 3}); break;
        case 4: overwrite_ds(p, "prompt_len", H5T_NATIVE_INT32, (const int32_t[]){-1, 1}); break;
        case 5: resize_ds(p, "pooled/1/mean_abs", 1, 4); break;
        case 6: {
            hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
            cr_assert_geq(H5Ldelete(f, "layers/0/w_out_norm", H5P_DEFAULT), 0);
            put_ds(f, "layers/0/w_out_norm", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, 3, 0, (const float[]){1, 2, 3});
            H5Fclose(f);
            break;
        }
        case 7: set_int_attr(p, "d_ff", 5); break;
        case 8: resize_ds(p, "doc_labels", 1, 0); break;
        case 9: /* 2^40 int32 tokens in a file of a few KB: chunks never written */
            resize_ds(p, "tokens", 1ull << 40, 0);
            overwrite_ds(p, "doc_offsets", H5T_NATIVE_INT64, (const int64_t[]){0, 3, 1ll << 40});
            break;
        case 10: resize_ds(p, "doc_offsets", 1ull << 33, 0); break;
        case 11: { /* a contiguous w_out_norm of 2^30 floats whose data was never written */
            set_int_attr(p, "d_ff", 1 << 30);
            hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
            H5Ldelete(f, "layers/0/ffn_act", H5P_DEFAULT);
            H5Ldelete(f, "layers/1/ffn_act", H5P_DEFAULT);
            H5Ldelete(f, "pooled", H5P_DEFAULT);
            H5Ldelete(f, "layers/0/w_out_norm", H5P_DEFAULT);
            H5Ldelete(f, "layers/1/w_out_norm", H5P_DEFAULT);
            hsize_t n = 1u << 30;
            hid_t sp = H5Screate_simple(1, &n, NULL);
            for (int l = 0; l < 2; l++) {
                char dn[64];
                snprintf(dn, sizeof dn, "layers/%d/w_out_norm", l);
                hid_t ds = H5Dcreate2(f, dn, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                cr_assert_geq(ds, 0);
                H5Dclose(ds);
                if (l == 0) { /* layer 0: one float written into a chunked copy is still too little */
                    H5Ldelete(f, dn, H5P_DEFAULT);
                    hsize_t ch = 1024;
                    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
                    H5Pset_chunk(dcpl, 1, &ch);
                    ds = H5Dcreate2(f, dn, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
                    H5Pclose(dcpl);
                    cr_assert_geq(ds, 0);
                    H5Dclose(ds);
                }
            }
            H5Sclose(sp);
            H5Fclose(f);
            expect_open_fails(p, NL_EFORMAT, "/layers/0/w_out_norm declares 4294967296 bytes but the file stores 0 of them");
            f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
            H5Ldelete(f, "layers/0/w_out_norm", H5P_DEFAULT);
            H5Fclose(f);
            break;
        }
        }
        expect_open_fails(p, NL_EFORMAT, cases[k].sub);
    }
}

/* R14: a NaN in w_out_norm is reported as such when it is read (not later, as a NULL in a
 * results table); likewise non-finite or negative pooled means. */
Test(h5store, reader_non_finite_values) {
    const char *p = tmp_path("nan.h5");
    small_file(p);
    float norms[4] = {1, NAN, 2, 3};
    overwrite_ds(p, "layers/1/w_out_norm", H5T_NATIVE_FLOAT, norms);
    float pooled[8] = {0, 1, 2, 3, 4, 5, INFINITY, 7};
    overwrite_ds(p, "pooled/0/mean_abs", H5T_NATIVE_FLOAT, pooled);
    float neg[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    neg[2] = -0.5f;
    overwrite_ds(p, "pooled/1/mean_abs", H5T_NATIVE_FLOAT, neg);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg); /* values are checked where they are read */
    float out[8];
    char want[512];
    cr_assert_eq(nl_h5_reader_read_w_out_norm(r, &ctx, 0, out), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_read_w_out_norm(r, &ctx, 1, out), NL_EFORMAT);
    snprintf(want, sizeof want, "'%s': layer 1 w_out_norm holds a non-finite value", p);
    cr_assert_str_eq(ctx.msg, want);
    cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, 0, 0, 1, out), NL_OK, "%s", ctx.msg); /* document 0 is fine */
    cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, 0, 0, 2, out), NL_EFORMAT);
    snprintf(want, sizeof want, "'%s': layer 0 mean_abs of document 1 holds a non-finite value", p);
    cr_assert_str_eq(ctx.msg, want);
    cr_assert_eq(nl_h5_reader_read_pooled(r, &ctx, 1, 0, 2, out), NL_EFORMAT);
    snprintf(want, sizeof want, "'%s': layer 1 mean_abs of document 0 holds a negative value", p);
    cr_assert_str_eq(ctx.msg, want);
    nl_h5_reader_close(r);
    norms[1] = -1;
    overwrite_ds(p, "layers/1/w_out_norm", H5T_NATIVE_FLOAT, norms);
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_read_w_out_norm(r, &ctx, 1, out), NL_EFORMAT);
    snprintf(want, sizeof want, "'%s': layer 1 w_out_norm holds a negative value", p);
    cr_assert_str_eq(ctx.msg, want);
    nl_h5_reader_close(r);
}

/* ------------------------------------------------------------------ files for check_h5.py */

/* BUILD/ from this binary's path (BUILD/tests/test_h5store), else "build" when it exists. */
static int build_dir(char *out, size_t n) {
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *s = strrchr(exe, '/');
        if (s) {
            *s = 0;
            s = strrchr(exe, '/');
            if (s && !strcmp(s + 1, "tests")) {
                *s = 0;
                snprintf(out, n, "%s", exe);
                return 1;
            }
        }
    }
    if (nl_path_exists("build")) {
        snprintf(out, n, "build");
        return 1;
    }
    return 0;
}

Test(h5store, schema_files_for_check_h5) {
    char dir[PATH_MAX], p[PATH_MAX + 64];
    if (!build_dir(dir, sizeof dir)) cr_skip_test("no build directory to leave schema files in");
    static const int rec[] = {0, 2};
    spec s = {.n_layers = 3, .d_ff = 24, .rec = rec, .n_rec = 2, .dtype = NL_H5_F16, .pooled = 1, .chunk_rows = 8,
              .n_docs = 7, .doc_len = k_len, .labels = k_lab, .prompt = k_prm};
    snprintf(p, sizeof p, "%s/test_h5store_schema.h5", dir);
    write_file(p, &s);
    check_file(p, &s, 7, 1);

    spec s2 = s;
    s2.dtype = NL_H5_F32;
    s2.rec = NULL;
    s2.pooled = 0;
    snprintf(p, sizeof p, "%s/test_h5store_schema_interrupted.h5", dir);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = meta_of(&s2);
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    int64_t row = 0;
    write_docs(w, &ctx, &s2, 0, 4, &row);
    int32_t ids[5] = {0};
    float a[5 * 24] = {0};
    cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, "cut", -1), NL_OK);
    cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 5), NL_OK);
    cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, 0, a, 5), NL_OK);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 0), NL_OK, "%s", ctx.msg);
    check_file(p, &s2, 4, 0);
}
