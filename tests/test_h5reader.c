/* test_h5reader.c — the HDF5 reader against files whose bytes lie (the defect classes found
 * by fuzz/fuzz_h5.c): variable-length strings whose global-heap object is larger than the
 * string, lies about its size or sits in a broken collection (libhdf5 1.10.8 copied such
 * objects without bounds: heap overflow); a user block before the superblock (heap
 * addresses are relative to it); filters whose output size is unbounded; chunks larger than
 * what the file stores (libhdf5 allocates a whole chunk per read). Each broken file must
 * give a one-line NL_EFORMAT naming it; files of the writer and of other tools still read.
 * The ASan build (make debug) runs these too. */
#include "neuronlab/h5store.h"

#include <ftw.h>
#include <hdf5.h>
#include <unistd.h>

#include "testutil.h"

static char g_dir[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void mk_dir(void) {
    strcpy(g_dir, "/tmp/nl_h5reader_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void rm_dir(void) {
    if (g_dir[0]) nftw(g_dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}
TestSuite(h5reader, .init = mk_dir, .fini = rm_dir);

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

/* A small valid file of the writer: 2 layers, d_ff 4, documents labelled "x" and "código ✓". */
static void writer_file(const char *p) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_meta m = {.model = "m", .arch = "llama", .n_layers = 2, .d_model = 8, .d_ff = 4, .ffn_kind = "gated", .act_fn = "silu"};
    nl_h5_writer *w;
    cr_assert_eq(nl_h5_writer_create(&ctx, p, &m, &w), NL_OK, "%s", ctx.msg);
    const char *labels[2] = {"x", "código ✓"};
    float a[3 * 4], norms[4] = {1, 2, 3, 4};
    for (int i = 0; i < 12; i++) a[i] = 0.25f * (float)i;
    int32_t ids[3] = {1, 2, 3};
    for (int d = 0; d < 2; d++) {
        cr_assert_eq(nl_h5_writer_begin_doc(w, &ctx, labels[d], -1), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_h5_writer_append_tokens(w, &ctx, ids, 3), NL_OK, "%s", ctx.msg);
        for (int l = 0; l < 2; l++) cr_assert_eq(nl_h5_writer_append_acts(w, &ctx, l, a, 3), NL_OK, "%s", ctx.msg);
        cr_assert_eq(nl_h5_writer_end_doc(w, &ctx), NL_OK, "%s", ctx.msg);
    }
    for (int l = 0; l < 2; l++) cr_assert_eq(nl_h5_writer_put_w_out_norm(w, &ctx, l, norms), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_writer_close(w, &ctx, 1), NL_OK, "%s", ctx.msg);
}

static unsigned char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}
static void spit(const char *p, const unsigned char *b, size_t n) {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Offset of the only occurrence of pat in b (asserts there is exactly one). */
static size_t find_once(const unsigned char *b, size_t n, const void *pat, size_t k) {
    const unsigned char *h = memmem(b, n, pat, k);
    cr_assert_not_null(h, "pattern not found");
    cr_assert_null(memmem(h + 1, n - (size_t)(h - b) - 1, pat, k), "pattern found twice");
    return (size_t)(h - b);
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Opens p and expects NL_EFORMAT with a one-line message naming p and containing sub. */
static void expect_corrupt(const char *p, const char *sub) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r = (nl_h5_reader *)1;
    nl_status s = nl_h5_reader_open(&ctx, p, &r);
    cr_assert_eq(s, NL_EFORMAT, "status %d: %s", s, ctx.msg);
    cr_assert_null(r);
    cr_assert(strstr(ctx.msg, p), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, sub), "message '%s' lacks '%s'", ctx.msg, sub);
    cr_assert_null(strchr(ctx.msg, '\n'), "%s", ctx.msg);
    cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0, "an HDF5 id is left open");
}

/* The global-heap object of a string: its 16-byte header (index u16, refcount u16,
 * reserved u32, size u64) precedes the bytes; the size field is 8 bytes before them. */
static void set_heap_size(const char *p, const char *str, uint64_t size) {
    size_t n;
    unsigned char *b = slurp(p, &n);
    size_t at = find_once(b, n, str, strlen(str));
    cr_assert_eq(b[at - 8], strlen(str), "heap object size field not where expected");
    put_le64(b + at - 8, size);
    spit(p, b, n);
    free(b);
}

Test(h5reader, writer_file_reads) {
    const char *p = tmp_path("ok.h5");
    writer_file(p);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_str_eq(in->meta.model, "m");
    cr_assert_str_eq(in->meta.act_fn, "silu");
    cr_assert_str_eq(in->doc_labels[0], "x");
    cr_assert_str_eq(in->doc_labels[1], "código ✓");
    nl_h5_reader_close(r);
    cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

/* The known-open crash of fuzz/crashes/h5/: a heap object far larger than its string. */
Test(h5reader, attr_heap_object_overruns_collection) {
    const char *p = tmp_path("attr_huge.h5");
    writer_file(p);
    set_heap_size(p, "neuronlab.activations", 1ull << 40);
    expect_corrupt(p, "global heap collection");
}

/* Inside the collection, but one byte longer than the string the heap ID announces. */
Test(h5reader, attr_heap_object_size_differs_from_string) {
    const char *p = tmp_path("attr_len.h5");
    writer_file(p);
    set_heap_size(p, "neuronlab.activations", 22);
    expect_corrupt(p, "format attribute is a string of 21 bytes whose global heap object holds 22 bytes");
}

Test(h5reader, label_heap_object_overruns_collection) {
    const char *p = tmp_path("label_huge.h5");
    writer_file(p);
    set_heap_size(p, "código ✓", 1ull << 33);
    /* The attributes' strings share the collection: its first use finds it corrupt. */
    expect_corrupt(p, "points to a corrupt global heap collection");
}

Test(h5reader, label_heap_object_size_differs_from_string) {
    const char *p = tmp_path("label_len.h5");
    writer_file(p);
    set_heap_size(p, "código ✓", 12); /* 11 bytes of UTF-8 */
    expect_corrupt(p, "/doc_labels is a string of 11 bytes whose global heap object holds 12 bytes");
}

/* Collection signature broken / collection size beyond the end of the file. */
Test(h5reader, heap_collection_header_broken) {
    const char *p = tmp_path("gcol.h5");
    writer_file(p);
    size_t n;
    unsigned char *b = slurp(p, &n);
    unsigned char *g = memmem(b, n, "GCOL", 4);
    cr_assert_not_null(g);
    unsigned char *q = b + n;
    for (unsigned char *h = g; h; h = memmem(h + 4, (size_t)(q - h - 4), "GCOL", 4)) h[3] = 'X';
    spit(p, b, n);
    expect_corrupt(p, "is not a global heap collection");
    for (unsigned char *h = g; h; h = memmem(h + 4, (size_t)(q - h - 4), "GCOX", 4)) {
        h[3] = 'L';
        put_le64(h + 8, (uint64_t)n * 2); /* collection size */
    }
    spit(p, b, n);
    expect_corrupt(p, "does not fit in the file");
    free(b);
}

/* A file as another tool writes it with the library defaults (superblock 0, object headers
 * version 1, no checksums): variable-length UTF-8 strings, userblock bytes before the
 * superblock (0 = none), /tokens (3 ids) created with tokens_dcpl (H5P_DEFAULT: contiguous). */
static void raw_file(const char *p, hsize_t userblock, hid_t tokens_dcpl) {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (userblock) H5Pset_userblock(fcpl, userblock);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    H5Pclose(fcpl);
    hid_t vs = H5Tcopy(H5T_C_S1);
    H5Tset_size(vs, H5T_VARIABLE);
    H5Tset_cset(vs, H5T_CSET_UTF8);
    hid_t sc = H5Screate(H5S_SCALAR);
    const char *sattr[4][2] = {{"format", "neuronlab.activations"}, {"model", "m-ü"}, {"ffn_kind", "plain"}, {"dtype", "float32"}};
    for (int i = 0; i < 4; i++) {
        hid_t a = H5Acreate2(f, sattr[i][0], vs, sc, H5P_DEFAULT, H5P_DEFAULT);
        cr_assert_geq(H5Awrite(a, vs, &sattr[i][1]), 0);
        H5Aclose(a);
    }
    const char *iname[4] = {"version", "n_layers", "d_model", "d_ff"};
    int ival[4] = {1, 1, 4, 3};
    for (int i = 0; i < 4; i++) {
        hid_t a = H5Acreate2(f, iname[i], H5T_STD_I32LE, sc, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT, &ival[i]);
        H5Aclose(a);
    }
    H5Sclose(sc);
    int32_t tok[3] = {1, 2, 3}, plen[2] = {1, 2};
    int64_t off[3] = {0, 1, 3};
    const char *lab[2] = {"first", "zweite ✓"};
    float acts[9] = {0};
    struct {
        const char *name;
        hid_t ft, mt;
        int rank;
        hsize_t d0, d1;
        const void *v;
    } ds[5] = {{"tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 3, 0, tok},
               {"doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, 3, 0, off},
               {"doc_labels", vs, vs, 1, 2, 0, lab},
               {"prompt_len", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 2, 0, plen},
               {"layers/0/ffn_act", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, 3, 3, acts}};
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    for (int i = 0; i < 5; i++) {
        hsize_t dims[2] = {ds[i].d0, ds[i].d1};
        hsize_t mx[2] = {H5S_UNLIMITED, ds[i].d1};
        hid_t sp = H5Screate_simple(ds[i].rank, dims, i == 0 && tokens_dcpl != H5P_DEFAULT ? mx : NULL);
        hid_t d = H5Dcreate2(f, ds[i].name, ds[i].ft, sp, lcpl, i == 0 ? tokens_dcpl : H5P_DEFAULT, H5P_DEFAULT);
        cr_assert_geq(d, 0, "%s", ds[i].name);
        cr_assert_geq(H5Dwrite(d, ds[i].mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds[i].v), 0);
        H5Dclose(d);
        H5Sclose(sp);
    }
    H5Pclose(lcpl);
    H5Tclose(vs);
    H5Fclose(f);
}

/* A file with a 512-byte user block (h5py's userblock_size): heap addresses are relative to
 * the superblock, so every string must still read right. */
Test(h5reader, user_block_file_reads_strings) {
    const char *p = tmp_path("ub.h5");
    raw_file(p, 512, H5P_DEFAULT);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    const nl_h5_info *in = nl_h5_reader_info(r);
    cr_assert_str_eq(in->meta.model, "m-ü");
    cr_assert_str_eq(in->meta.ffn_kind, "plain");
    cr_assert_str_eq(in->doc_labels[0], "first");
    cr_assert_str_eq(in->doc_labels[1], "zweite ✓");
    nl_h5_reader_close(r);
}

/* Replaces /tokens of p by the same 6 ids, created with the dataset creation properties dcpl. */
static void rewrite_tokens(const char *p, hid_t dcpl) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    cr_assert_geq(H5Ldelete(f, "tokens", H5P_DEFAULT), 0);
    hsize_t n = 6, mx = H5S_UNLIMITED;
    hid_t sp = H5Screate_simple(1, &n, &mx);
    hid_t d = H5Dcreate2(f, "tokens", H5T_STD_I32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    int32_t ids[6] = {1, 2, 3, 1, 2, 3};
    cr_assert_geq(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

/* Filters whose output is not bounded by their input are refused; deflate and shuffle read. */
Test(h5reader, filters_outside_deflate_shuffle_fletcher32_refused) {
    const char *p = tmp_path("nbit.h5");
    writer_file(p);
    hsize_t ch = 4;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &ch);
    H5Pset_nbit(dcpl);
    rewrite_tokens(p, dcpl);
    H5Pclose(dcpl);
    expect_corrupt(p, "/tokens uses filter 5");

    p = tmp_path("deflate2.h5");
    writer_file(p);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &ch);
    H5Pset_deflate(dcpl, 1);
    H5Pset_deflate(dcpl, 1);
    rewrite_tokens(p, dcpl);
    expect_corrupt(p, "/tokens uses filter 1 twice");
    H5Pclose(dcpl);

    p = tmp_path("shuffle_deflate_fletcher.h5");
    writer_file(p);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &ch);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    H5Pset_fletcher32(dcpl);
    rewrite_tokens(p, dcpl);
    H5Pclose(dcpl);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_h5_reader_info(r)->tokens[5], 3);
    nl_h5_reader_close(r);
}

/* A chunk declared far larger than the bytes stored (its dimension patched in the layout
 * message): libhdf5 would allocate (and cache) whole chunks of that size on every read. */
Test(h5reader, chunk_larger_than_stored_refused) {
    const char *p = tmp_path("bigchunk.h5");
    hsize_t ch = 0x2A5C; /* a pattern to find in the layout message: chunk dims are u32 */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &ch);
    raw_file(p, 0, dcpl);
    H5Pclose(dcpl);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_h5_reader *r;
    cr_assert_eq(nl_h5_reader_open(&ctx, p, &r), NL_OK, "%s", ctx.msg);
    nl_h5_reader_close(r);
    size_t n;
    unsigned char *b = slurp(p, &n);
    const unsigned char pat[8] = {0x5C, 0x2A, 0, 0, 4, 0, 0, 0}; /* chunk dim, then the element size */
    size_t at = find_once(b, n, pat, sizeof pat);
    b[at + 2] = 0x40; /* 0x402A5C rows: 16 MiB chunks, 43 KB stored */
    spit(p, b, n);
    free(b);
    expect_corrupt(p, "/tokens has chunks of 16820592 bytes but the file stores 43376 bytes of it");
}

/* The inputs fuzz/fuzz_h5.c crashed libhdf5 with (fuzz/crashes/h5/, replayed under ASan by
 * tests/fuzz_smoke.sh): each is now refused before libhdf5 decodes the lying bytes. */
Test(h5reader, fuzz_crash_inputs_refused) {
    static const char *cases[][2] = {
        {"hdf5_attr_data_overruns_message.h5", "its root group has an attribute of 4194304 bytes in a message of 64"},
        {"hdf5_chunk_4gib_leaks_chunk_cache.h5", "/doc_labels has chunks of 4 GiB or more"},
        {"hdf5_chunk_dimension_zero.h5", "/doc_offsets has a chunk dimension of 0"},
        {"hdf5_header_continuation_to_superblock_leak.h5", "its root group has an object header chunk of 0 bytes at 0"},
        {"hdf5_root_header_chunk_4gib.h5", "object header chunk of 4294967280 bytes past the end of the file"},
        {"hdf5_vlen_attr_global_heap_memcpy.h5", "format attribute points to a corrupt global heap collection"},
        {"hdf5_vlen_attr_type_size_too_small.h5", "variable-length string type of 1 bytes (heap IDs take 16)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "fuzz/crashes/h5/%s", cases[i][0]);
        cr_assert_eq(access(p, R_OK), 0, "%s missing (tests run from the project root)", p);
        expect_corrupt(p, cases[i][1]);
    }
}
