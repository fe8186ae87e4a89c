/* h5store.c — the HDF5 activation file (schema v1): streaming writer and validating reader.
 *
 * Rules: see include/neuronlab/h5store.h. In the MPI build, h5store_mpi.inc (included at the
 * end; contract in h5store_mpi.h) adds the writer the ranks of a job share. Every appendable dataset goes through one small
 * "appender" that buffers up to the next chunk boundary and writes whole, chunk-aligned
 * slabs (large f32 appends are written straight from the caller's array), so HDF5 never
 * reads back or re-filters a chunk while recording. nl_h5_writer_close cuts every dataset back to
 * the last ended document. HDF5's error printing is silenced; the innermost message of its
 * error stack (or the OS error it quotes) goes into ctx.
 * The reader treats the file as hostile: every attribute and dataset is checked for type,
 * rank and size, and every size it allocates from is checked first against the others and
 * against the bytes the file stores (ds_stored); values the analyses need finite (w_out_norm,
 * mean_abs) are checked where they are read. libhdf5 1.10.8 itself decodes without bounds
 * checks, so what it would decode unchecked is checked here first: version-1 object headers
 * (oh_check) and variable-length strings, which the reader reads from the global heap
 * itself (vls_read); both with pread on the file.
 * Checked by tests/test_h5store.c (incl. hostile files), tests/check_h5.py (via
 * tests/h5_schema.sh) and fuzz/fuzz_h5.c (libFuzzer, see fuzz/README.md).
 *
 * Chunk and filter choice, by measurement (2 cores, HDF5 1.10.8, ext4 through the page
 * cache). Writer alone: 4 layers, appends of T = 512 rows, values ~ N(0,1) with 60% of
 * them shrunk ×0.003 (near-zero, as after SiLU/GELU); MB/s of f32 input per second of
 * writer wall time incl. f16 conversion (F16C) and close; ranges over 2-4 runs (filtered
 * f16: one run); "x" = size ratio.
 *
 *   F = 2048, 8192 tokens     chunk rows:  256 (2 MiB f32)   1024         4096
 *     f32 no filter                         780-1090          690-835      410-480
 *     f32 deflate 1                         16-23 (1.05x)     16-22        16-23
 *     f32 shuffle+deflate 1                 22-27 (1.13x)     21-23        19-21
 *     f16 no filter                         1700-1720         1370-1720    1110-1170
 *     f16 deflate 1                         30 (1.04x)        41           43
 *     f16 shuffle+deflate 1                 49 (1.10x)        34           43
 *   F = 11008, 4096 tokens    chunk rows:  64     256     1024    4096
 *     f32 no filter                         920-1060  920-970  400-440  360-370
 *     f16 no filter                         1500-1920 1430-1600 1180-1480 700-770
 *   tiny chunks (16 rows × F = 256, 16 KiB): 490-630; dd of the same bytes: 900-2100.
 *
 * Compression costs 20-60× in write speed for a 4-13% smaller file: activations are
 * continuous values whose mantissas do not compress. Chunks of ~0.5-11 MB all run at
 * page-cache speed; ≥ 32 MB chunks are 2× slower, ≤ 16 KiB ones too. HDF5's 1.10 chunk
 * index (libver low = V110) measured the same as the 1.8 B-tree, so files stay readable
 * by HDF5 ≥ 1.8.
 * Choice: no filter by default (NL_H5_FILTER_* stays an option for disk-bound users) and
 * chunks of ≈ 2 MiB (rows = a power of two in [16, 4096], e.g. 256 rows for F = 2048 f32,
 * 64 for F = 11008 f16); the writer buffers one chunk per recorded layer (≤ 2 MiB each).
 *
 * In the forward pass (this project's, T = 256, hook → nl_h5_writer_append_acts, all layers),
 * the forward produced 17-45 MB/s of activations and the writer took 2.4-5.8% of wall
 * time in f32 and 1.5-3.0% in f16 (stories260K; random-weight 15M and 110M Llamas), well
 * under the 20% budget; deflate would have made recording ~1.5-2.5× slower.
 * f16 conversion: the scalar nl_f32_to_f16 costs ~11 ns per value, F16C ~0.5-1 ns (below).
 */
#include "neuronlab/h5store.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef NL_H5_CHUNK_BYTES
#define NL_H5_CHUNK_BYTES (2 << 20) /* target bytes of one ffn_act chunk */
#endif
#ifndef NL_H5_LIBVER_LOW
#define NL_H5_LIBVER_LOW H5F_LIBVER_V18 /* readable by HDF5 ≥ 1.8 (h5py, pandas, MATLAB …) */
#endif

#ifndef NL_H5_COMMIT_SECONDS
#define NL_H5_COMMIT_SECONDS 2.0 /* default seconds between commits (see the measurement in h5store.h) */
#endif

#define TOKENS_CHUNK 16384 /* int32 rows: 64 KiB */
#define DOCS_CHUNK 4096    /* doc_offsets, prompt_len, doc_labels rows */
#define POOLED_CHUNK_BYTES (256 << 10)

/* Reader limits on sizes a file declares (checked before anything is allocated from them). */
#define NL_H5_MAX_LAYERS 65536         /* n_layers: 2^16, far beyond any model */
#define NL_H5_MAX_ATTR_STR (1 << 20)   /* bytes of one fixed-length string attribute */
#define NL_H5_MAX_FILTER_RATIO 1100    /* deflate compresses at most ~1032:1 */

const char *nl_h5_dtype_name(nl_h5_dtype dt) { return dt == NL_H5_F16 ? "float16" : "float32"; }

/* ------------------------------------------------------------------ HDF5 helpers */

typedef struct {
    char *buf;
    size_t n;
} h5_walk_ud;

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *p) {
    h5_walk_ud *ud = p;
    (void)n;
    if (ud->buf[0] || !e->desc || !e->desc[0]) return 0;
    /* POSIX failures are quoted as "... error message = 'No space left on device' ...". */
    const char *q = strstr(e->desc, "error message = '");
    if (q) {
        q += strlen("error message = '");
        const char *end = strchr(q, '\'');
        int len = end ? (int)(end - q) : (int)strlen(q);
        snprintf(ud->buf, ud->n, "%.*s", len, q);
    } else {
        snprintf(ud->buf, ud->n, "%s", e->desc);
    }
    return 0;
}

/* HDF5 clears its error stack on entry to every API call, so a failure must be read
 * before the next call (even an H5Pclose). Instead of printing the stack (HDF5's default),
 * the automatic error handler keeps the innermost message of the last failing call here;
 * h5_err() hands it out. Serial HDF5: one thread at a time anyway. */
static char g_h5_last[512];

static herr_t h5_record(hid_t estack, void *p) {
    (void)p;
    g_h5_last[0] = 0;
    h5_walk_ud ud = {g_h5_last, sizeof g_h5_last};
    H5Ewalk2(estack, H5E_WALK_UPWARD, h5_walk_cb, &ud);
    return 0;
}

/* Silences HDF5's error printing (keeps the last message for h5_err). Also turns off HDF5's
 * own atexit teardown (before the library initialises): every id this module opens is
 * closed on every path, and after a failed write HDF5 may keep free-list blocks it never
 * returns, which made its exit handler loop or crash ("infinite loop closing library",
 * R10); at exit the OS releases what is left. */
static void h5_quiet(void) {
    static int once;
    if (!once) {
        once = 1;
        H5dont_atexit();
    }
    H5Eset_auto2(H5E_DEFAULT, h5_record, NULL);
    g_h5_last[0] = 0;
}

/* The innermost message of the last failing HDF5 call (then forgets it). */
static const char *h5_err(char *buf, size_t n) {
    snprintf(buf, n, "%s", g_h5_last[0] ? g_h5_last : "HDF5 error");
    g_h5_last[0] = 0;
    return buf;
}

/* IEEE binary16, built the way h5py builds its float16 type, so h5py reads it as float16. */
static hid_t h5_half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static hid_t h5_vstr_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int attr_str(hid_t obj, const char *name, const char *v) {
    hid_t t = h5_vstr_type(), s = H5Screate(H5S_SCALAR), a = -1;
    int rc = -1;
    if (t >= 0 && s >= 0) a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, t, &v) >= 0) rc = 0;
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static int attr_ints(hid_t obj, const char *name, const int *v, int n, int scalar) {
    hsize_t dim = (hsize_t)n;
    hid_t s = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL), a = -1;
    int rc = -1;
    if (s >= 0) a = H5Acreate2(obj, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, H5T_NATIVE_INT, v) >= 0) rc = 0;
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    return rc;
}

static int attr_int(hid_t obj, const char *name, int v) { return attr_ints(obj, name, &v, 1, 1); }

/* ------------------------------------------------------------------ appender */

#ifdef NL_MPI
/* An appender of the collective writer (h5store_mpi.inc): mode 0 = serial (extendible, grows
 * with each write); 1 = the extent is final (ext rows) and this rank's rows go to base + disk;
 * 2 = another rank writes these rows, this one only counts them; 3 = as 2, and the strings of
 * a variable-length appender are kept (keep, n_keep) for rank 0 to write at close. */
typedef struct {
    int mode;
    unsigned long long base, ext;
    char **keep;
    size_t n_keep, cap_keep;
} nl_app_mpi;
#endif

/* An extendible dataset chunked along axis 0, written in chunk-aligned slabs. Rows
 * [0, disk) are on disk (= the extent); rows [disk, disk+nbuf) wait in buf, which holds at
 * most up to the next chunk boundary. */
typedef struct {
    hid_t ds;         /* dataset, -1 when unused */
    hid_t mtype;      /* memory type (borrowed) */
    int rank;         /* 1, 2 or 3 */
    hsize_t cols;     /* values per row (1 for rank 1, d1·d2 for rank 3) */
    hsize_t d1, d2;   /* dims after the first (rank 2: cols, 1; rank 3: both) */
    size_t row_bytes; /* bytes per row in memory type */
    hsize_t chunk;    /* rows per chunk */
    hsize_t disk;     /* rows on disk */
    unsigned char *buf; /* (chunk, row_bytes) */
    hsize_t nbuf;
    int vlen;         /* buf holds owned char* (strings) */
#ifdef NL_MPI
    nl_app_mpi m;     /* the collective writer's part of it (h5store_mpi.inc); zero in a serial writer */
#endif
} nl_app;

typedef void (*nl_conv_fn)(void *dst, const float *src, size_t n);

static hsize_t app_rows(const nl_app *a) { return a->disk + a->nbuf; }
#ifdef NL_MPI /* chunk boundaries of the file: a rank's rows start at row base */
static hsize_t app_cap(const nl_app *a) { return a->chunk - (a->m.base + a->disk) % a->chunk; }
static int g_mpi_early; /* 1 while the collective writer's file is laid out: chunks allocated at creation */
static int app_write_mpi(nl_app *a, const void *src, hsize_t n);
#else
static hsize_t app_cap(const nl_app *a) { return a->chunk - a->disk % a->chunk; }
#endif

/* Dataset access of an appendable dataset: no raw-data chunk cache, so every H5Dwrite
 * reaches the file at once and a commit (H5Fflush) has only metadata left to write. */
static hid_t app_dapl(void) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, 0, 0, 1.0) < 0) {
        H5Pclose(dapl);
        return -1;
    }
    return dapl;
}

/* Creates dataset name under loc with rows 0 and maxdims (unlimited, cols). */
static int app_create3(nl_app *a, hid_t loc, const char *name, hid_t ftype, hid_t mtype, size_t elsize,
                       int rank, hsize_t d1, hsize_t d2, hsize_t chunk, nl_h5_filter filter) {
    memset(a, 0, sizeof *a);
    a->ds = -1;
    a->mtype = mtype;
    a->rank = rank;
    a->d1 = rank >= 2 ? d1 : 1;
    a->d2 = rank == 3 ? d2 : 1;
    a->cols = a->d1 * a->d2;
    a->row_bytes = elsize * a->cols;
    a->chunk = chunk;
    a->vlen = H5Tis_variable_str(mtype) > 0;
    a->buf = malloc(chunk * a->row_bytes);
    if (!a->buf) return -1;
    hsize_t dims[3] = {0, a->d1, a->d2}, maxd[3] = {H5S_UNLIMITED, a->d1, a->d2}, ch[3] = {chunk, a->d1, a->d2};
    hid_t s = H5Screate_simple(rank, dims, maxd), p = H5Pcreate(H5P_DATASET_CREATE);
    int rc = -1;
    if (s >= 0 && p >= 0 && H5Pset_chunk(p, rank, ch) >= 0) {
        herr_t e = 0;
        if (filter == NL_H5_FILTER_SHUFFLE_DEFLATE) e = H5Pset_shuffle(p);
        if (e >= 0 && filter != NL_H5_FILTER_NONE) e = H5Pset_deflate(p, 1);
#ifdef NL_MPI
        if (e >= 0 && g_mpi_early) e = H5Pset_alloc_time(p, H5D_ALLOC_TIME_EARLY);
#endif
        hid_t dapl = e >= 0 ? app_dapl() : -1;
        if (dapl >= 0) {
            a->ds = H5Dcreate2(loc, name, ftype, s, H5P_DEFAULT, p, dapl);
            if (a->ds >= 0) rc = 0;
            H5Pclose(dapl);
        }
    }
    if (p >= 0) H5Pclose(p);
    if (s >= 0) H5Sclose(s);
    return rc;
}

static int app_create(nl_app *a, hid_t loc, const char *name, hid_t ftype, hid_t mtype, size_t elsize,
                      int rank, hsize_t cols, hsize_t chunk, nl_h5_filter filter) {
    return app_create3(a, loc, name, ftype, mtype, elsize, rank, cols, 1, chunk, filter);
}

/* Writes n rows from src at row row0 of the dataset's extent. */
static herr_t app_write_at(nl_app *a, const void *src, hsize_t row0, hsize_t n) {
    hid_t fs = H5Dget_space(a->ds);
    hsize_t start[3] = {row0, 0, 0}, count[3] = {n, a->d1, a->d2};
    hid_t ms = H5Screate_simple(a->rank, count, NULL);
    herr_t e = (fs < 0 || ms < 0) ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0) e = H5Dwrite(a->ds, a->mtype, ms, fs, H5P_DEFAULT, src);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return e;
}

/* Writes n rows from src at row `disk`, growing the extent. */
static int app_write(nl_app *a, const void *src, hsize_t n) {
    if (n == 0) return 0;
#ifdef NL_MPI
    if (a->m.mode) return app_write_mpi(a, src, n);
#endif
    hsize_t ext[3] = {a->disk + n, a->d1, a->d2};
    if (H5Dset_extent(a->ds, ext) < 0) return -1;
    if (app_write_at(a, src, a->disk, n) < 0) return -1;
    a->disk += n;
    return 0;
}

static void app_drop(nl_app *a) {
    if (a->vlen)
        for (hsize_t i = 0; i < a->nbuf; i++) free(((char **)a->buf)[i]);
    a->nbuf = 0;
}

static int app_flush(nl_app *a) {
    if (a->nbuf == 0) return 0;
    if (app_write(a, a->buf, a->nbuf) < 0) return -1;
    app_drop(a);
    return 0;
}

/* Appends n rows. conv: NULL (src rows are in the memory type) or a converter from f32. */
static int app_push(nl_app *a, const void *src, hsize_t n, nl_conv_fn conv) {
    const unsigned char *s = src;
    size_t src_row = conv ? a->cols * sizeof(float) : a->row_bytes;
    while (n > 0) {
        hsize_t cap = app_cap(a);
        if (a->nbuf == 0 && !conv && !a->vlen && n >= cap) { /* whole chunks straight from src */
            hsize_t k = cap + (n - cap) / a->chunk * a->chunk;
            if (app_write(a, s, k) < 0) return -1;
            s += k * src_row;
            n -= k;
            continue;
        }
        hsize_t k = cap - a->nbuf;
        if (k > n) k = n;
        unsigned char *d = a->buf + a->nbuf * a->row_bytes;
        if (conv)
            conv(d, (const float *)s, (size_t)(k * a->cols));
        else
            memcpy(d, s, k * a->row_bytes);
        a->nbuf += k;
        s += k * src_row;
        n -= k;
        if (a->nbuf == cap && app_flush(a) < 0) return -1;
    }
    return 0;
}

/* Leaves exactly `rows` rows on disk (rows ≤ app_rows). */
static int app_truncate(nl_app *a, hsize_t rows) {
    int rc = 0;
    if (a->ds < 0) return 0;
    if (rows > a->disk) {
        NL_ASSERT(rows - a->disk <= a->nbuf);
        rc = app_write(a, a->buf, rows - a->disk);
    } else if (rows < a->disk) {
        hsize_t ext[3] = {rows, a->d1, a->d2};
        if (H5Dset_extent(a->ds, ext) < 0) rc = -1;
        else a->disk = rows;
    }
    app_drop(a);
    return rc;
}

static void app_free(nl_app *a) {
    app_drop(a);
    free(a->buf);
    a->buf = NULL;
    if (a->ds >= 0) H5Dclose(a->ds);
    a->ds = -1;
}

/* f32 ↔ f16. The scalar nl_f32_to_f16 costs ~11 ns per value here (branches on the
 * exponent), 20× the F16C instruction, which would make f16 recording slower than f32; so
 * x86 CPUs with F16C (checked at run time: the build targets x86-64-v2) convert 8 values
 * per instruction with round-to-nearest-even — bit-identical to the scalar functions except
 * for NaN payloads. NL_NO_F16C=1 in the environment forces the scalar path.
 * tests/test_h5store.c checks both paths, both directions, against the scalar functions. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(uint16_t *d, const float *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = nl_f32_to_f16(s[i]);
}
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(float *d, const uint16_t *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + i))));
    for (; i < n; i++) d[i] = nl_f16_to_f32(s[i]);
}
static int have_f16c(void) {
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        unsigned a, b, c, d; /* F16C: CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports lacks "f16c") */
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        v = __builtin_cpu_supports("avx") && f16c && !getenv("NL_NO_F16C");
    }
    return v;
}
#else
static int have_f16c(void) { return 0; }
static void f32_to_f16_f16c(uint16_t *d, const float *s, size_t n) { (void)d, (void)s, (void)n; }
static void f16_to_f32_f16c(float *d, const uint16_t *s, size_t n) { (void)d, (void)s, (void)n; }
#endif

static void conv_f16(void *dst, const float *src, size_t n) {
    uint16_t *d = dst;
    if (have_f16c()) f32_to_f16_f16c(d, src, n);
    else
        for (size_t i = 0; i < n; i++) d[i] = nl_f32_to_f16(src[i]);
}

static void f16_to_f32(float *d, const uint16_t *s, size_t n) {
    if (have_f16c()) f16_to_f32_f16c(d, s, n);
    else
        for (size_t i = 0; i < n; i++) d[i] = nl_f16_to_f32(s[i]);
}

/* ------------------------------------------------------------------ writer */

struct nl_h5_writer {
    char *path;
    hid_t file, half, vstr;
    int n_layers, d_ff, n_rec, pooled, no_acts;
    nl_h5_dtype dtype;
    int *rec;               /* (n_rec) recorded layers, sorted */
    int *slot;              /* (n_layers) index into rec, -1 when not recorded */
    nl_app tokens, offsets, labels, plen;
    nl_app *acts;           /* (n_rec) */
    nl_app *pool;           /* (n_rec) */
    int d_model;
    unsigned streams;       /* meta.streams */
    nl_app *xs;             /* (n_rec, NL_H5_N_STREAMS) stream datasets; ds -1 when not recorded */
    unsigned char *kind;    /* (n_rec) 0 dense, 1 native MoE layer (routing datasets, no ffn_act), 2 MoEfied */
    int n_moe, n_moefied, moe_E, moe_k, d_expert, d_shared, moe_K;
    nl_app *mx;             /* (n_rec, NL_MX) MoE datasets; ds -1 when not recorded */
    int16_t *i16;           /* (i16_cap) int32 → int16 conversion buffer */
    size_t i16_cap;
    unsigned char *wnorm;   /* (n_rec) 1 once w_out_norm is written */
    int in_doc;
    char *label;            /* owned, of the open document */
    int prompt_len;
    int64_t n_docs;         /* ended documents */
    int64_t doc_start;      /* = doc_offsets[n_docs] */
    int failed;
    int64_t committed;      /* documents on disk as of the last commit */
    double commit_s;        /* seconds between commits; < 0: after every document */
    double last_commit;     /* monotonic time of the last commit */
    void (*on_commit)(void *user, int64_t docs);
    void *on_commit_user;
    int n_attn, attn_H;     /* attention layers (meta.attn_layers), heads */
    int *attn_l;            /* (n_attn) their model layers */
    hid_t *attn_ds;         /* (n_attn) the open document's dataset, -1 before its first rows */
    int64_t *attn_rows;     /* (n_attn) rows written to it */
    int attn_n;             /* the open document's size as the first call gave it */
#ifdef NL_MPI
    struct w_mpi *mpi;      /* the collective writer's state (h5store_mpi.inc); NULL for a serial writer */
#endif
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- streams: /layers/{l}/resid, attn_out, ffn_in (meta.streams), one appender each, handled
 * like ffn_act by create, end_doc, commit, close and resume. */

static const char *const stream_names[NL_H5_N_STREAMS] = {"resid", "attn_out", "ffn_in"};

const char *nl_h5_stream_name(nl_h5_stream s) { return (unsigned)s < NL_H5_N_STREAMS ? stream_names[s] : NULL; }

static nl_app *w_stream(nl_h5_writer *w, int slot, int s) { return &w->xs[(size_t)slot * NL_H5_N_STREAMS + (size_t)s]; }

/* ---- MoE datasets (meta.moe_layers / moefied_layers), handled like the streams. */
enum { MX_LOGITS = 0, MX_EXPERTS, MX_WEIGHTS, MX_ACT, MX_SHARED, MX_GATE, MX_SEL, NL_MX };
static const char *const mx_names[NL_MX] = {"router_logits", "experts", "expert_weights", "expert_act",
                                            "shared_act", "shared_gate", "moe_experts"};
static nl_app *w_mx(nl_h5_writer *w, int slot, int j) { return &w->mx[(size_t)slot * NL_MX + (size_t)j]; }

/* Shape of MoE dataset j of this writer: rank and dims after the first; file/memory type; bytes
 * per value. Returns 0 when the dataset is not part of a slot of kind kd. */
static int mx_shape(const nl_h5_writer *w, int kd, int j, int *rank, hsize_t *d1, hsize_t *d2, hid_t *ft, hid_t *mt, size_t *el) {
    const int f16 = w->dtype == NL_H5_F16;
    *d2 = 1;
    if (kd == 2) {
        if (j != MX_SEL) return 0;
        *rank = 2, *d1 = (hsize_t)w->moe_K, *ft = H5T_STD_I16LE, *mt = H5T_NATIVE_INT16, *el = 2;
        return 1;
    }
    if (kd != 1 || j == MX_SEL || ((j == MX_SHARED || j == MX_GATE) && w->d_shared <= 0)) return 0;
    switch (j) {
    case MX_LOGITS: *rank = 2, *d1 = (hsize_t)w->moe_E, *ft = H5T_IEEE_F32LE, *mt = H5T_NATIVE_FLOAT, *el = 4; break;
    case MX_EXPERTS: *rank = 2, *d1 = (hsize_t)w->moe_k, *ft = H5T_STD_I16LE, *mt = H5T_NATIVE_INT16, *el = 2; break;
    case MX_WEIGHTS: *rank = 2, *d1 = (hsize_t)w->moe_k, *ft = H5T_IEEE_F32LE, *mt = H5T_NATIVE_FLOAT, *el = 4; break;
    case MX_ACT:
        *rank = 3, *d1 = (hsize_t)w->moe_k, *d2 = (hsize_t)w->d_expert;
        *ft = f16 ? w->half : H5T_IEEE_F32LE, *mt = f16 ? w->half : H5T_NATIVE_FLOAT, *el = f16 ? 2 : 4;
        break;
    case MX_SHARED:
        *rank = 2, *d1 = (hsize_t)w->d_shared;
        *ft = f16 ? w->half : H5T_IEEE_F32LE, *mt = f16 ? w->half : H5T_NATIVE_FLOAT, *el = f16 ? 2 : 4;
        break;
    default: *rank = 1, *d1 = 1, *ft = H5T_IEEE_F32LE, *mt = H5T_NATIVE_FLOAT, *el = 4; break; /* MX_GATE */
    }
    return 1;
}

/* Creates slot i's MoE datasets in its group g (chunk rows ≈ NL_H5_CHUNK_BYTES as the streams). */
static int w_mx_create(nl_h5_writer *w, hid_t g, int i, const nl_h5_meta *meta) {
    for (int j = 0; j < NL_MX; j++) {
        int rank;
        hsize_t d1, d2;
        hid_t ft, mt;
        size_t el;
        if (!mx_shape(w, w->kind[i], j, &rank, &d1, &d2, &ft, &mt, &el)) continue;
        hsize_t rows = 16;
        while (rows < 4096 && (rows * 2) * d1 * d2 * el <= NL_H5_CHUNK_BYTES) rows *= 2;
        if (meta->chunk_rows > 0) rows = (hsize_t)meta->chunk_rows;
        if (app_create3(w_mx(w, i, j), g, mx_names[j], ft, mt, el, rank, d1, d2, rows, meta->filter) != 0) return -1;
    }
    return 0;
}

/* Creates slot i's stream datasets in its group g. */
static int w_streams_create(nl_h5_writer *w, hid_t g, int i, const nl_h5_meta *meta) {
    size_t el = w->dtype == NL_H5_F16 ? 2 : 4;
    hsize_t rows = 16;
    while (rows < 4096 && (rows * 2) * (size_t)w->d_model * el <= NL_H5_CHUNK_BYTES) rows *= 2;
    if (meta->chunk_rows > 0) rows = (hsize_t)meta->chunk_rows;
    hid_t t = w->dtype == NL_H5_F16 ? w->half : H5T_IEEE_F32LE, mt = w->dtype == NL_H5_F16 ? w->half : H5T_NATIVE_FLOAT;
    for (int s = 0; s < NL_H5_N_STREAMS; s++)
        if ((w->streams >> s) & 1u)
            if (app_create(w_stream(w, i, s), g, stream_names[s], t, mt, el, 2, (hsize_t)w->d_model, rows, meta->filter) != 0)
                return -1;
    return 0;
}

/* Runs op on every stream appender in use: flush (rows < 0) or truncate to rows. */
static int w_streams_each(nl_h5_writer *w, int64_t rows) {
    int rc = 0;
    for (size_t k = 0; w->xs && k < (size_t)w->n_rec * NL_H5_N_STREAMS; k++) {
        if (w->xs[k].ds < 0) continue;
        if ((rows < 0 ? app_flush(&w->xs[k]) : app_truncate(&w->xs[k], (hsize_t)rows)) != 0) rc = -1;
    }
    for (size_t k = 0; w->mx && k < (size_t)w->n_rec * NL_MX; k++) { /* and the MoE datasets */
        if (w->mx[k].ds < 0) continue;
        if ((rows < 0 ? app_flush(&w->mx[k]) : app_truncate(&w->mx[k], (hsize_t)rows)) != 0) rc = -1;
    }
    return rc;
}

static void w_streams_free(nl_h5_writer *w) {
    for (size_t k = 0; w->xs && k < (size_t)w->n_rec * NL_H5_N_STREAMS; k++) app_free(&w->xs[k]);
    for (size_t k = 0; w->mx && k < (size_t)w->n_rec * NL_MX; k++) app_free(&w->mx[k]);
}

/* File access of a writer: the metadata cache never evicts (never writes) dirty metadata
 * on its own; it grows instead and is written only by H5Fflush/H5Fclose, i.e. at a commit.
 * So the metadata on disk is always the last commit's and the raw data written since then
 * lies where that metadata does not point. */
static hid_t writer_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    H5AC_cache_config_t cc;
    memset(&cc, 0, sizeof cc);
    cc.version = H5AC__CURR_CACHE_CONFIG_VERSION;
    herr_t e = H5Pget_mdc_config(fapl, &cc);
    if (e >= 0) {
        cc.evictions_enabled = 0; /* requires every automatic resize mode off */
        cc.incr_mode = H5C_incr__off;
        cc.flash_incr_mode = H5C_flash_incr__off;
        cc.decr_mode = H5C_decr__off;
        cc.set_initial_size = 1;
        cc.initial_size = 16 << 20;
        if (cc.max_size < cc.initial_size) cc.max_size = cc.initial_size;
        if (cc.min_size > cc.initial_size) cc.min_size = cc.initial_size;
        e = H5Pset_mdc_config(fapl, &cc);
    }
    if (e >= 0) e = H5Pset_libver_bounds(fapl, NL_H5_LIBVER_LOW, H5F_LIBVER_LATEST);
    if (e >= 0) e = H5Pset_file_locking(fapl, 1, 1);
    if (e < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* The descriptor HDF5's default (sec2) driver writes through, or -1. */
static int writer_fd(hid_t file) {
    int *fh = NULL;
    if (file < 0 || H5Fget_vfd_handle(file, H5P_DEFAULT, (void **)&fh) < 0 || !fh) return -1;
    return *fh;
}

/* After a failed write the file on disk is the last commit's (metadata is written only by
 * commits); closing normally would write the newer, half-done metadata over it. Instead
 * HDF5's descriptor is pointed at an anonymous scratch file, so H5Fclose releases every
 * id and lock cleanly (nothing left for HDF5's atexit handler) and the real file keeps
 * exactly what the last commit wrote. */
static void writer_abandon(hid_t file) {
    int fd = writer_fd(file);
    if (fd < 0) return;
    const char *dirs[3] = {getenv("TMPDIR"), "/tmp", "/dev/shm"};
    int s = -1;
    for (int i = 0; i < 3 && s < 0; i++)
        if (dirs[i] && dirs[i][0]) s = open(dirs[i], O_TMPFILE | O_RDWR, 0600);
    if (s < 0) s = open("/dev/null", O_RDWR);
    if (s >= 0) {
        dup2(s, fd);
        close(s);
    }
}

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* Rows per ffn_act chunk: ≈ NL_H5_CHUNK_BYTES, a power of two in [16, 4096]. */
static int auto_chunk_rows(int d_ff, size_t elsize) {
    size_t row = (size_t)d_ff * elsize, r = 16;
    while (r < 4096 && (r * 2) * row <= NL_H5_CHUNK_BYTES) r *= 2;
    return (int)r;
}

#ifdef NL_MPI /* the collective writer (h5store_mpi.inc, included at the end of this file) */
static void w_mpi_free(nl_h5_writer *w);
static int64_t w_mpi_tok0(const nl_h5_writer *w);
static nl_status w_mpi_put_w_out_norm(nl_h5_writer *w, nl_ctx *ctx, int slot, const float *norms);
static nl_status w_mpi_put_vocab(nl_h5_writer *w, nl_ctx *ctx, const char *const *pieces, const char *const *raw,
                                 const size_t *raw_len, int n);
static nl_status w_mpi_close(nl_h5_writer *w, nl_ctx *ctx, int complete);
#endif

static void writer_free(nl_h5_writer *w) {
    if (!w) return;
#ifdef NL_MPI
    w_mpi_free(w); /* closes the collective writer's ids (its close has closed the file) */
#endif
    if (w->file >= 0 && w->failed) writer_abandon(w->file); /* before any id is closed */
    app_free(&w->tokens);
    app_free(&w->offsets);
    app_free(&w->labels);
    app_free(&w->plen);
    for (int i = 0; i < w->n_rec; i++) {
        if (w->acts) app_free(&w->acts[i]);
        if (w->pool) app_free(&w->pool[i]);
    }
    w_streams_free(w);
    for (int i = 0; w->attn_ds && i < w->n_attn; i++)
        if (w->attn_ds[i] >= 0) H5Dclose(w->attn_ds[i]);
    if (w->half >= 0) H5Tclose(w->half);
    if (w->vstr >= 0) H5Tclose(w->vstr);
    if (w->file >= 0) H5Fclose(w->file);
    free(w->acts);
    free(w->pool);
    free(w->xs);
    free(w->mx);
    free(w->kind);
    free(w->i16);
    free(w->wnorm);
    free(w->rec);
    free(w->slot);
    free(w->label);
    free(w->path);
    free(w->attn_l);
    free(w->attn_ds);
    free(w->attn_rows);
    free(w);
}

static nl_status w_ioerr_msg(nl_h5_writer *w, nl_ctx *ctx, const char *why) {
    w->failed = 1;
#ifdef NL_MPI
    if (w->mpi) return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", w->path, why); /* it keeps no partial file */
#endif
    return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s (the file keeps the %lld document%s committed before)", w->path,
                     why, (long long)w->committed, w->committed == 1 ? "" : "s");
}

static nl_status w_ioerr(nl_h5_writer *w, nl_ctx *ctx) {
    char m[512];
    return w_ioerr_msg(w, ctx, h5_err(m, sizeof m));
}

/* Writes every buffered row (so each dataset's extent is the rows appended so far). */
static int w_flush_rows(nl_h5_writer *w) {
    int ok = app_flush(&w->tokens) == 0 && app_flush(&w->offsets) == 0 && app_flush(&w->labels) == 0 &&
             app_flush(&w->plen) == 0;
    for (int i = 0; i < w->n_rec && ok; i++) {
        if (!w->no_acts && w->kind[i] != 1) ok = app_flush(&w->acts[i]) == 0;
        if (ok && w->pooled && w->kind[i] != 1) ok = app_flush(&w->pool[i]) == 0;
    }
    if (ok) ok = w_streams_each(w, -1) == 0;
    return ok ? 0 : -1;
}

/* One commit: buffered rows to the file, the file's blocks reserved up to its allocated
 * end (so a full disk or a file-size limit fails here, before any metadata is written,
 * rather than half-way through it), then H5Fflush writes the metadata. */
static int w_commit_raw(nl_h5_writer *w, char *why, size_t n) {
    if (w_flush_rows(w) < 0) {
        h5_err(why, n);
        return -1;
    }
    hsize_t size = 0;
    int fd = writer_fd(w->file);
    if (fd >= 0 && H5Fget_filesize(w->file, &size) >= 0 && size > 0 && fallocate(fd, 0, 0, (off_t)size) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS) {
        snprintf(why, n, "%s", strerror(errno));
        return -1;
    }
    if (H5Fflush(w->file, H5F_SCOPE_LOCAL) < 0) {
        h5_err(why, n);
        return -1;
    }
    return 0;
}

static nl_status w_commit(nl_h5_writer *w, nl_ctx *ctx) {
    char m[512];
    if (w_commit_raw(w, m, sizeof m) < 0) return w_ioerr_msg(w, ctx, m);
    w->committed = w->n_docs;
    w->last_commit = now_s();
    if (w->on_commit) w->on_commit(w->on_commit_user, w->committed);
    return NL_OK;
}

static nl_status check_meta(nl_ctx *ctx, const char *path, const nl_h5_meta *m) {
    if (m->n_layers <= 0 || m->d_model <= 0 || m->d_ff <= 0)
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': n_layers, d_model and d_ff must be positive (got %d, %d, %d)",
                         path, m->n_layers, m->d_model, m->d_ff);
    if (!m->ffn_kind || (strcmp(m->ffn_kind, "gated") && strcmp(m->ffn_kind, "plain")))
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': ffn_kind must be \"gated\" or \"plain\" (got \"%s\")", path,
                         m->ffn_kind ? m->ffn_kind : "(null)");
    if (m->dtype != NL_H5_F32 && m->dtype != NL_H5_F16)
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': unknown activation dtype %d", path, (int)m->dtype);
    if (m->filter < NL_H5_FILTER_NONE || m->filter > NL_H5_FILTER_SHUFFLE_DEFLATE)
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': unknown filter %d", path, (int)m->filter);
    if (m->streams >> NL_H5_N_STREAMS)
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': unknown stream bits 0x%x", path, m->streams);
    if (m->chunk_rows < 0 || m->n_rec < 0 || (m->n_rec > 0 && !m->layers))
        return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': bad chunk_rows or layer list", path);
    for (int i = 0; m->layers && i < m->n_rec; i++)
        if (m->layers[i] < 0 || m->layers[i] >= m->n_layers)
            return nl_errorf(ctx, NL_EINVAL, "cannot create '%s': layer %d is outside 0..%d", path, m->layers[i], m->n_layers - 1);
    return NL_OK;
}

/* The writer state shared by create and resume: meta copied, the recorded layers sorted into
 * rec with their slots. verb ("create"/"resume") names the call in messages. On error *out is
 * NULL and nothing is left allocated. */
static nl_status writer_alloc(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, const char *verb, nl_h5_writer **out) {
    *out = NULL;
    nl_h5_writer *w = calloc(1, sizeof *w);
    if (!w) return nl_errorf(ctx, NL_ENOMEM, "cannot %s '%s': out of memory", verb, path);
    w->file = w->half = w->vstr = -1;
    w->tokens.ds = w->offsets.ds = w->labels.ds = w->plen.ds = -1;
    w->path = strdup(path);
    w->n_layers = meta->n_layers;
    w->d_ff = meta->d_ff;
    w->dtype = meta->dtype;
    w->pooled = meta->pooled != 0;
    w->no_acts = meta->no_acts != 0;
    w->d_model = meta->d_model;
    w->streams = meta->streams & ((1u << NL_H5_N_STREAMS) - 1);
    w->commit_s = meta->commit_seconds != 0 ? meta->commit_seconds : NL_H5_COMMIT_SECONDS;
    w->on_commit = meta->on_commit;
    w->on_commit_user = meta->on_commit_user;
    if (meta->n_attn > 0 && meta->attn_layers) {
        w->n_attn = meta->n_attn, w->attn_H = meta->attn_heads;
        w->attn_l = malloc((size_t)w->n_attn * sizeof(int));
        w->attn_ds = malloc((size_t)w->n_attn * sizeof(hid_t));
        w->attn_rows = calloc((size_t)w->n_attn, sizeof(int64_t));
        if (!w->attn_l || !w->attn_ds || !w->attn_rows) {
            writer_free(w);
            return nl_errorf(ctx, NL_ENOMEM, "cannot %s '%s': out of memory", verb, path);
        }
        for (int i = 0; i < w->n_attn; i++) w->attn_l[i] = meta->attn_layers[i], w->attn_ds[i] = -1;
    }
    int n_rec = (meta->n_rec > 0 && meta->layers) ? meta->n_rec : meta->n_layers;
    w->rec = malloc(sizeof(int) * (size_t)n_rec);
    w->slot = malloc(sizeof(int) * (size_t)meta->n_layers);
    w->acts = calloc((size_t)n_rec, sizeof(nl_app));
    w->pool = calloc((size_t)n_rec, sizeof(nl_app));
    w->wnorm = calloc((size_t)n_rec, 1);
    w->xs = calloc((size_t)n_rec * NL_H5_N_STREAMS, sizeof(nl_app));
    w->mx = calloc((size_t)n_rec * NL_MX, sizeof(nl_app));
    w->kind = calloc((size_t)n_rec, 1);
    w->moe_E = meta->moe_E, w->moe_k = meta->moe_k, w->d_expert = meta->d_expert, w->d_shared = meta->d_shared;
    w->moe_K = meta->moe_K;
    if (!w->path || !w->rec || !w->slot || !w->acts || !w->pool || !w->wnorm || !w->xs || !w->mx || !w->kind) {
        writer_free(w);
        return nl_errorf(ctx, NL_ENOMEM, "cannot %s '%s': out of memory", verb, path);
    }
    for (int i = 0; i < n_rec; i++) {
        w->rec[i] = (meta->n_rec > 0 && meta->layers) ? meta->layers[i] : i;
        w->acts[i].ds = w->pool[i].ds = -1;
        for (int s = 0; s < NL_H5_N_STREAMS; s++) w->xs[(size_t)i * NL_H5_N_STREAMS + (size_t)s].ds = -1;
        for (int j = 0; j < NL_MX; j++) w->mx[(size_t)i * NL_MX + (size_t)j].ds = -1;
    }
    w->n_rec = n_rec;
    qsort(w->rec, (size_t)n_rec, sizeof(int), cmp_int);
    for (int l = 0; l < meta->n_layers; l++) w->slot[l] = -1;
    for (int i = 0; i < n_rec; i++) {
        if (i > 0 && w->rec[i] == w->rec[i - 1]) {
            int dup = w->rec[i];
            writer_free(w);
            return nl_errorf(ctx, NL_EINVAL, "cannot %s '%s': layer %d is listed twice", verb, path, dup);
        }
        w->slot[w->rec[i]] = i;
    }
    /* MoE and MoEfied layers: each must be recorded; the kinds exclude each other */
    for (int pass = 0; pass < 2; pass++) {
        const int *lv = pass ? meta->moefied_layers : meta->moe_layers, n = pass ? meta->n_moefied : meta->n_moe;
        for (int j = 0; lv && j < n; j++) {
            const int l = lv[j], i = l >= 0 && l < meta->n_layers ? w->slot[l] : -1;
            if (i < 0 || w->kind[i]) {
                writer_free(w);
                return nl_errorf(ctx, NL_EINVAL, "cannot %s '%s': %s layer %d is not a recorded layer (or listed twice)", verb,
                                 path, pass ? "MoEfied" : "mixture-of-experts", l);
            }
            w->kind[i] = (unsigned char)(pass + 1);
            if (pass) w->n_moefied++;
            else w->n_moe++;
        }
    }
    if ((w->n_moe && (w->moe_E < 1 || w->moe_k < 1 || w->moe_k > w->moe_E || w->moe_E > 32767 || w->d_expert < 1 ||
                      w->d_shared < 0)) ||
        (w->n_moefied && (w->moe_K < 1 || w->moe_K > 32767))) {
        writer_free(w);
        return nl_errorf(ctx, NL_EINVAL, "cannot %s '%s': bad mixture-of-experts shape", verb, path);
    }
    *out = w;
    return NL_OK;
}

/* The recorded layers of one kind (0 dense incl. MoEfied, 1 MoE, 2 MoEfied) into out (n_rec); returns the count. */
static int w_layers_of(const nl_h5_writer *w, int kd, int *out) {
    int n = 0;
    for (int i = 0; i < w->n_rec; i++)
        if (kd == 0 ? w->kind[i] != 1 : w->kind[i] == kd) out[n++] = w->rec[i];
    return n;
}

/* Creates (truncates) the file at path with the writer's file access, or -1. */
static hid_t writer_fcreate(const char *path) {
    hid_t fapl = writer_fapl(), fcpl = H5Pcreate(H5P_FILE_CREATE);
    /* Attributes and links iterate in creation order in h5py (format, version, … ; 0, 1, … 10). */
    if (fcpl >= 0) {
        H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
        H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    }
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (fcpl >= 0) H5Pclose(fcpl);
    return file;
}

/* Lays out a new file w->file: the root attributes (complete = 0) and every dataset, empty
 * (the per-layer groups and datasets of meta). Returns 1, or 0 when HDF5 failed (h5_err). */
static int writer_layout(nl_h5_writer *w, const nl_h5_meta *meta) {
    int ok = 1;
    const int n_rec = w->n_rec;
    w->vstr = h5_vstr_type();
    if (w->dtype == NL_H5_F16) w->half = h5_half_type();
    ok = w->vstr >= 0 && (w->dtype != NL_H5_F16 || w->half >= 0);

    /* Root attributes, in the order of DESIGN §4. */
    char created_by[64];
    snprintf(created_by, sizeof created_by, "neuronlab %s", NL_VERSION);
#define S(x) ((x) ? (x) : "")
    ok = ok && attr_str(w->file, "format", NL_H5_FORMAT) == 0 && attr_int(w->file, "version", NL_H5_VERSION) == 0 &&
         attr_str(w->file, "model", S(meta->model)) == 0 && attr_str(w->file, "arch", S(meta->arch)) == 0 &&
         attr_int(w->file, "n_layers", meta->n_layers) == 0 && attr_int(w->file, "d_model", meta->d_model) == 0 &&
         attr_int(w->file, "d_ff", meta->d_ff) == 0 && attr_str(w->file, "ffn_kind", meta->ffn_kind) == 0 &&
         attr_str(w->file, "act_fn", S(meta->act_fn)) == 0 &&
         attr_str(w->file, "dtype", nl_h5_dtype_name(meta->dtype)) == 0 &&
         attr_str(w->file, "dataset", S(meta->dataset)) == 0 && attr_str(w->file, "tokenizer", S(meta->tokenizer)) == 0 &&
         attr_str(w->file, "created_by", meta->created_by ? meta->created_by : created_by) == 0 &&
         attr_str(w->file, "compute", meta->compute ? meta->compute : "f32") == 0 &&
         attr_int(w->file, "complete", 0) == 0 && attr_str(w->file, "dataset_checksum", S(meta->dataset_checksum)) == 0;
#undef S
    /* "layers" lists the recorded layers with ffn_act; MoE layers are listed in "moe_layers" */
    int *lbuf = malloc(sizeof(int) * (size_t)(n_rec ? n_rec : 1));
    ok = ok && lbuf && attr_ints(w->file, "layers", lbuf, w_layers_of(w, 0, lbuf), 0) == 0;
    if (ok && w->n_moe)
        ok = attr_ints(w->file, "moe_layers", lbuf, w_layers_of(w, 1, lbuf), 0) == 0 &&
             attr_int(w->file, "n_experts", w->moe_E) == 0 && attr_int(w->file, "experts_per_tok", w->moe_k) == 0 &&
             attr_int(w->file, "d_expert", w->d_expert) == 0 && attr_int(w->file, "d_shared", w->d_shared) == 0;
    if (ok && w->n_moefied)
        ok = attr_ints(w->file, "moefied_layers", lbuf, w_layers_of(w, 2, lbuf), 0) == 0 && attr_int(w->file, "moe_k", w->moe_K) == 0;
    free(lbuf);

    /* Token and document datasets. */
    ok = ok && app_create(&w->tokens, w->file, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 4, 1, 1, TOKENS_CHUNK, 0) == 0;
    ok = ok && app_create(&w->offsets, w->file, "doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 8, 1, 1, DOCS_CHUNK, 0) == 0;
    ok = ok && app_create(&w->labels, w->file, "doc_labels", w->vstr, w->vstr, sizeof(char *), 1, 1, DOCS_CHUNK, 0) == 0;
    ok = ok && app_create(&w->plen, w->file, "prompt_len", H5T_STD_I32LE, H5T_NATIVE_INT32, 4, 1, 1, DOCS_CHUNK, 0) == 0;
    int64_t zero = 0;
    ok = ok && app_push(&w->offsets, &zero, 1, NULL) == 0;

    /* Per-layer groups. */
    size_t el = w->dtype == NL_H5_F16 ? 2 : 4;
    hsize_t crows = meta->chunk_rows > 0 ? (hsize_t)meta->chunk_rows : (hsize_t)auto_chunk_rows(w->d_ff, el);
    hsize_t prows = POOLED_CHUNK_BYTES / ((size_t)w->d_ff * 4);
    if (prows < 1) prows = 1;
    if (prows > 256) prows = 256;
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl >= 0) H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    for (int pass = 0; pass < 2 && ok; pass++) {
        if (pass == 1 && !w->pooled) break;
        hid_t top = H5Gcreate2(w->file, pass == 0 ? "layers" : "pooled", H5P_DEFAULT, gcpl, H5P_DEFAULT);
        ok = top >= 0;
        for (int i = 0; i < n_rec && ok; i++) {
            char name[16];
            if (pass == 1 && w->kind[i] == 1) continue; /* MoE layers have no mean_abs */
            snprintf(name, sizeof name, "%d", w->rec[i]);
            hid_t g = H5Gcreate2(top, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            ok = g >= 0;
            if (ok && pass == 0) ok = w_mx_create(w, g, i, meta) == 0;
            if (ok && pass == 0 && !w->no_acts && w->kind[i] != 1) {
                hid_t t = w->dtype == NL_H5_F16 ? w->half : H5T_IEEE_F32LE;
                hid_t mt = w->dtype == NL_H5_F16 ? w->half : H5T_NATIVE_FLOAT;
                ok = app_create(&w->acts[i], g, "ffn_act", t, mt, el, 2, (hsize_t)w->d_ff, crows, meta->filter) == 0;
            }
            if (ok && pass == 0) ok = w_streams_create(w, g, i, meta) == 0;
            if (ok && pass == 1)
                ok = app_create(&w->pool[i], g, "mean_abs", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 2, (hsize_t)w->d_ff,
                                prows, meta->filter) == 0;
            if (g >= 0) H5Gclose(g);
        }
        if (top >= 0) H5Gclose(top);
    }
    if (ok && w->n_attn) {
        hid_t g = H5Gcreate2(w->file, "attn", H5P_DEFAULT, gcpl, H5P_DEFAULT);
        ok = g >= 0 && attr_ints(g, "layers", w->attn_l, w->n_attn, 0) == 0 && attr_int(g, "n_heads", w->attn_H) == 0;
        if (g >= 0) H5Gclose(g);
    }
    if (gcpl >= 0) H5Pclose(gcpl);
    return ok;
}

nl_status nl_h5_writer_create(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, nl_h5_writer **out) {
    NL_ASSERT(path && meta && out);
    *out = NULL;
    h5_quiet();
    nl_status st = check_meta(ctx, path, meta);
    if (st != NL_OK) return st;

    nl_h5_writer *w;
    if ((st = writer_alloc(ctx, path, meta, "create", &w)) != NL_OK) return st;

    /* The file is made under a temporary name in the same folder ("PATH.tmp-PID") and renamed
     * to PATH once it holds its first commit, so PATH is never a half-made file: it is absent
     * (or the file it replaces, with --force) until then, and a valid file from then on. A
     * kill inside create leaves only the temporary file; a clean error removes it. */
    char *tmp = malloc(strlen(path) + 32);
    if (!tmp) {
        writer_free(w);
        return nl_errorf(ctx, NL_ENOMEM, "cannot create '%s': out of memory", path);
    }
    sprintf(tmp, "%s.tmp-%ld", path, (long)getpid());
    /* The OS says best why a path cannot be created (missing directory, permissions …). */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        int e = errno;
        writer_free(w);
        free(tmp);
        return nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", path, strerror(e));
    }
    close(fd);

    char m[512];
    w->file = writer_fcreate(tmp);
    if (w->file < 0) {
        nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", path, h5_err(m, sizeof m));
        writer_free(w);
        unlink(tmp); /* no half-made file left behind */
        free(tmp);
        return NL_EIO;
    }
    int ok = writer_layout(w, meta);
    if (!ok) h5_err(m, sizeof m);
    else if (w_commit_raw(w, m, sizeof m) < 0) ok = 0; /* the empty file is the first commit */
    else if (rename(tmp, path) != 0) { /* ... and now takes the final name */
        snprintf(m, sizeof m, "cannot rename '%s' to it: %s", tmp, strerror(errno));
        ok = 0;
    }
    if (!ok) {
        nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", path, m);
        w->failed = 1;
        writer_free(w);
        unlink(tmp);
        free(tmp);
        return NL_EIO;
    }
    free(tmp);
    *out = w;
    return NL_OK;
}

static nl_status w_check(nl_h5_writer *w, nl_ctx *ctx, const char *what, int need_doc) {
    NL_ASSERT(w);
    if (w->failed) return nl_errorf(ctx, NL_EIO, "cannot write '%s': an earlier write failed", w->path);
    if (need_doc && !w->in_doc)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': %s outside a document (call nl_h5_writer_begin_doc first)", w->path, what);
    return NL_OK;
}

static nl_status w_layer(nl_h5_writer *w, nl_ctx *ctx, int layer, int *slot) {
    if (layer < 0 || layer >= w->n_layers)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': layer %d is outside 0..%d", w->path, layer, w->n_layers - 1);
    *slot = w->slot[layer];
    return NL_OK;
}

nl_status nl_h5_writer_begin_doc(nl_h5_writer *w, nl_ctx *ctx, const char *label, int prompt_len) {
    nl_status st = w_check(w, ctx, "begin_doc", 0);
    if (st != NL_OK) return st;
    if (w->in_doc)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld is still open", w->path, (long long)w->n_docs);
    if (prompt_len < -1)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': prompt_len %d is negative", w->path, prompt_len);
    w->label = strdup(label ? label : "");
    if (!w->label) return nl_errorf(ctx, NL_ENOMEM, "cannot write '%s': out of memory", w->path);
    w->prompt_len = prompt_len;
    w->in_doc = 1;
    return NL_OK;
}

nl_status nl_h5_writer_append_tokens(nl_h5_writer *w, nl_ctx *ctx, const int32_t *ids, int n) {
    nl_status st = w_check(w, ctx, "tokens", 1);
    if (st != NL_OK) return st;
    if (n < 0) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': negative token count %d", w->path, n);
    if (n > 0 && app_push(&w->tokens, ids, (hsize_t)n, NULL) < 0) return w_ioerr(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_append_acts(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *a, int T) {
    int s = -1;
    nl_status st = w_check(w, ctx, "activations", 1);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &s);
    if (st != NL_OK) return st;
    if (T < 0) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': negative row count %d", w->path, T);
    if (s < 0 || w->no_acts || w->kind[s] == 1 || T == 0) return NL_OK;
    if (app_push(&w->acts[s], a, (hsize_t)T, w->dtype == NL_H5_F16 ? conv_f16 : NULL) < 0) return w_ioerr(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_append_stream(nl_h5_writer *w, nl_ctx *ctx, nl_h5_stream s, int layer, const float *x, int T) {
    int slot = -1;
    nl_status st = w_check(w, ctx, "stream rows", 1);
    if (st == NL_OK && (unsigned)s >= NL_H5_N_STREAMS)
        st = nl_errorf(ctx, NL_EINVAL, "cannot write '%s': unknown stream %d", w->path, (int)s);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &slot);
    if (st != NL_OK) return st;
    if (T < 0) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': negative row count %d", w->path, T);
    if (slot < 0 || !((w->streams >> s) & 1u) || T == 0) return NL_OK;
    if (app_push(w_stream(w, slot, s), x, (hsize_t)T, w->dtype == NL_H5_F16 ? conv_f16 : NULL) < 0) return w_ioerr(w, ctx);
    return NL_OK;
}

/* int32 → int16 rows into w->i16 (values checked to fit), then pushed. */
static nl_status w_push_i16(nl_h5_writer *w, nl_ctx *ctx, nl_app *a, const int32_t *v, size_t n, int T) {
    if (n > w->i16_cap) {
        int16_t *p = realloc(w->i16, n * sizeof *p);
        if (!p) return nl_errorf(ctx, NL_ENOMEM, "cannot write '%s': out of memory", w->path);
        w->i16 = p, w->i16_cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] < -32768 || v[i] > 32767)
            return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': expert id %d does not fit int16", w->path, (int)v[i]);
        w->i16[i] = (int16_t)v[i];
    }
    if (app_push(a, w->i16, (hsize_t)T, NULL) < 0) return w_ioerr(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_append_routing(nl_h5_writer *w, nl_ctx *ctx, int layer, const int32_t *experts, const float *weights,
                                      const float *logits, const float *expert_act, const float *shared_act,
                                      const float *shared_gate, int T) {
    int slot = -1;
    nl_status st = w_check(w, ctx, "routing rows", 1);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &slot);
    if (st != NL_OK) return st;
    if (T < 0) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': negative row count %d", w->path, T);
    if (slot < 0 || w->kind[slot] != 1 || T == 0) return NL_OK;
    if (!experts || !weights || !logits || !expert_act || (w->d_shared > 0 && (!shared_act || !shared_gate)))
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': layer %d: incomplete routing", w->path, layer);
    nl_conv_fn cv = w->dtype == NL_H5_F16 ? conv_f16 : NULL;
    if ((st = w_push_i16(w, ctx, w_mx(w, slot, MX_EXPERTS), experts, (size_t)T * w->moe_k, T)) != NL_OK) return st;
    if (app_push(w_mx(w, slot, MX_LOGITS), logits, (hsize_t)T, NULL) < 0 ||
        app_push(w_mx(w, slot, MX_WEIGHTS), weights, (hsize_t)T, NULL) < 0 ||
        app_push(w_mx(w, slot, MX_ACT), expert_act, (hsize_t)T, cv) < 0 ||
        (w->d_shared > 0 && (app_push(w_mx(w, slot, MX_SHARED), shared_act, (hsize_t)T, cv) < 0 ||
                             app_push(w_mx(w, slot, MX_GATE), shared_gate, (hsize_t)T, NULL) < 0)))
        return w_ioerr(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_append_moe_experts(nl_h5_writer *w, nl_ctx *ctx, int layer, const int32_t *sel, int T) {
    int slot = -1;
    nl_status st = w_check(w, ctx, "moe_experts rows", 1);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &slot);
    if (st != NL_OK) return st;
    if (T < 0) return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': negative row count %d", w->path, T);
    if (slot < 0 || w->kind[slot] != 2 || T == 0) return NL_OK;
    return w_push_i16(w, ctx, w_mx(w, slot, MX_SEL), sel, (size_t)T * w->moe_K, T);
}

int nl_h5_writer_is_moe_layer(const nl_h5_writer *w, int layer) {
    return nl_h5_writer_has_layer(w, layer) && w->kind[w->slot[layer]] == 1;
}
int nl_h5_writer_is_moefied_layer(const nl_h5_writer *w, int layer) {
    return nl_h5_writer_has_layer(w, layer) && w->kind[w->slot[layer]] == 2;
}

nl_status nl_h5_writer_put_vocab(nl_h5_writer *w, nl_ctx *ctx, const char *const *pieces, const char *const *raw,
                                 const size_t *raw_len, int n) {
    nl_status st = w_check(w, ctx, "vocab", 0);
    if (st != NL_OK) return st;
    if (n < 0 || (n > 0 && !pieces) || (raw && !raw_len))
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': bad vocabulary (%d pieces)", w->path, n);
#ifdef NL_MPI
    if (w->mpi) return w_mpi_put_vocab(w, ctx, pieces, raw, raw_len, n);
#endif
    if (H5Lexists(w->file, "vocab", H5P_DEFAULT) > 0) return NL_OK; /* a resumed file keeps its own */
    const char **v = malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    hvl_t *b = raw ? malloc(sizeof(hvl_t) * (size_t)(n > 0 ? n : 1)) : NULL;
    if (!v || (raw && !b)) {
        free(v), free(b);
        return nl_errorf(ctx, NL_ENOMEM, "cannot write '%s': out of memory", w->path);
    }
    for (int i = 0; i < n; i++) {
        v[i] = pieces[i] ? pieces[i] : "";
        if (b) b[i].len = raw[i] ? raw_len[i] : 0, b[i].p = (void *)(raw[i] ? raw[i] : "");
    }
    hsize_t dim = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t ds = sp < 0 ? -1 : H5Dcreate2(w->file, "vocab", w->vstr, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = ds < 0 ? -1 : (n > 0 ? H5Dwrite(ds, w->vstr, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) : 0);
    if (ds >= 0) H5Dclose(ds);
    if (e >= 0 && b) {
        hid_t ft = H5Tvlen_create(H5T_STD_U8LE), mt = H5Tvlen_create(H5T_NATIVE_UINT8);
        ds = ft < 0 || mt < 0 ? -1 : H5Dcreate2(w->file, "vocab_bytes", ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        e = ds < 0 ? -1 : (n > 0 ? H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) : 0);
        if (ds >= 0) H5Dclose(ds);
        if (ft >= 0) H5Tclose(ft);
        if (mt >= 0) H5Tclose(mt);
    }
    if (sp >= 0) H5Sclose(sp);
    free(v), free(b);
    if (e < 0) return w_ioerr(w, ctx);
    return w_commit(w, ctx);
}

int nl_h5_writer_has_attn(const nl_h5_writer *w, int layer) {
    for (int i = 0; w && i < w->n_attn; i++)
        if (w->attn_l[i] == layer) return 1;
    return 0;
}

#define ATTN_CHUNK_ROWS 64
#define ATTN_CACHE_BYTES ((size_t)256 << 20) /* chunk cache of one open attention dataset, at most */

/* Creates /attn/layer_{l}/doc_{d} (H, n, n) f32, chunks (1, min(n, 64), n), deflate 1. Its
 * chunk cache holds the whole document when that fits ATTN_CACHE_BYTES, so each compressed
 * chunk is normally written once, when the dataset is closed at end_doc. */
static hid_t attn_create(nl_h5_writer *w, int layer, int n) {
    char name[64];
    snprintf(name, sizeof name, "/attn/layer_%d", layer);
    if (H5Lexists(w->file, name, H5P_DEFAULT) <= 0) {
        hid_t g = H5Gcreate2(w->file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) return -1;
        H5Gclose(g);
    }
    snprintf(name, sizeof name, "/attn/layer_%d/doc_%lld", layer, (long long)w->n_docs);
    const hsize_t H = (hsize_t)w->attn_H, N = (hsize_t)n, cr = N < ATTN_CHUNK_ROWS ? N : ATTN_CHUNK_ROWS;
    hsize_t dims[3] = {H, N, N}, ch[3] = {1, cr, N};
    hid_t sp = H5Screate_simple(3, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), dapl = H5Pcreate(H5P_DATASET_ACCESS);
    hid_t ds = -1;
    size_t whole = (size_t)H * N * N * sizeof(float);
    if (sp >= 0 && dcpl >= 0 && dapl >= 0 && H5Pset_chunk(dcpl, 3, ch) >= 0 && H5Pset_deflate(dcpl, 1) >= 0 &&
        H5Pset_chunk_cache(dapl, 10007, whole + 4096 < ATTN_CACHE_BYTES ? whole + 4096 : ATTN_CACHE_BYTES, 1.0) >= 0)
        ds = H5Dcreate2(w->file, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, dapl);
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (dapl >= 0) H5Pclose(dapl);
    return ds;
}

nl_status nl_h5_writer_append_attn(nl_h5_writer *w, nl_ctx *ctx, int layer, int n, int row0, const float *p, int T, int P) {
    nl_status st = w_check(w, ctx, "attention rows", 1);
    if (st != NL_OK) return st;
    int i = 0;
    while (i < w->n_attn && w->attn_l[i] != layer) i++;
    if (i == w->n_attn) return NL_OK;
    if (w->attn_ds[i] < 0 && w->attn_rows[i] == 0) {
        int first = 1;
        for (int j = 0; j < w->n_attn; j++) first &= w->attn_ds[j] < 0;
        if (first) w->attn_n = n;
    }
    if (n != w->attn_n || n <= 0 || row0 < 0 || T <= 0 || row0 + T > n || P <= 0 || P > n)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': attention rows %d..%d with %d keys do not fit document %lld of %d tokens",
                         w->path, row0, row0 + T - 1, P, (long long)w->n_docs, w->attn_n);
    if (w->attn_ds[i] < 0 && (w->attn_ds[i] = attn_create(w, layer, n)) < 0) return w_ioerr(w, ctx);
    hsize_t start[3] = {0, (hsize_t)row0, 0}, count[3] = {(hsize_t)w->attn_H, (hsize_t)T, (hsize_t)P};
    hid_t fs = H5Dget_space(w->attn_ds[i]), ms = H5Screate_simple(3, count, NULL);
    herr_t e = (fs < 0 || ms < 0) ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0) e = H5Dwrite(w->attn_ds[i], H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, p);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (e < 0) return w_ioerr(w, ctx);
    w->attn_rows[i] += T;
    return NL_OK;
}

nl_status nl_h5_read_attn(nl_ctx *ctx, const char *path, int layer, int doc, int head, float **out, int *n, int *heads) {
    *out = NULL, *n = 0, *heads = 0;
    h5_quiet();
    char name[64], m[512];
    snprintf(name, sizeof name, "/attn/layer_%d/doc_%d", layer, doc);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, h5_err(m, sizeof m));
    nl_status st = NL_OK;
    hid_t ds = -1, sp = -1, ty = -1;
    if (H5Lexists(f, "attn", H5P_DEFAULT) <= 0 || H5Lexists(f, name, H5P_DEFAULT) <= 0 ||
        (ds = H5Dopen2(f, name, H5P_DEFAULT)) < 0)
        st = nl_errorf(ctx, NL_EINVAL, "'%s' has no %s", path, name);
    hsize_t d[3] = {0, 0, 0};
    if (st == NL_OK) {
        sp = H5Dget_space(ds), ty = H5Dget_type(ds);
        if (sp < 0 || ty < 0 || H5Sget_simple_extent_ndims(sp) != 3 || H5Sget_simple_extent_dims(sp, d, NULL) != 3 ||
            H5Tget_class(ty) != H5T_FLOAT || H5Tget_size(ty) != 4 || d[1] != d[2] || d[0] < 1 || d[1] < 1 || d[1] > (1u << 20))
            st = nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: %s is not f32 (heads, n, n)", path, name);
    }
    if (st == NL_OK && (head < 0 || (hsize_t)head >= d[0]))
        st = nl_errorf(ctx, NL_EINVAL, "head %d is outside the %llu heads of %s in '%s'", head, (unsigned long long)d[0], name, path);
    float *buf = NULL;
    if (st == NL_OK && !(buf = malloc((size_t)d[1] * d[2] * sizeof(float)))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) {
        hsize_t start[3] = {(hsize_t)head, 0, 0}, count[3] = {1, d[1], d[2]};
        hid_t ms = H5Screate_simple(3, count, NULL);
        herr_t e = ms < 0 ? -1 : H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
        if (e >= 0) e = H5Dread(ds, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, buf);
        if (ms >= 0) H5Sclose(ms);
        if (e < 0) st = nl_errorf(ctx, NL_EIO, "cannot read %s of '%s': %s", name, path, h5_err(m, sizeof m));
    }
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    H5Fclose(f);
    if (st != NL_OK) {
        free(buf);
        return st;
    }
    *out = buf, *n = (int)d[1], *heads = (int)d[0];
    return NL_OK;
}

nl_status nl_h5_writer_append_pooled(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *mean_abs) {
    int s = -1;
    nl_status st = w_check(w, ctx, "pooled row", 1);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &s);
    if (st != NL_OK) return st;
    if (s < 0 || !w->pooled || w->kind[s] == 1) return NL_OK;
    if ((int64_t)app_rows(&w->pool[s]) > w->n_docs)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': layer %d already has a pooled row for document %lld", w->path,
                         layer, (long long)w->n_docs);
    if (app_push(&w->pool[s], mean_abs, 1, NULL) < 0) return w_ioerr(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_end_doc(nl_h5_writer *w, nl_ctx *ctx) {
    nl_status st = w_check(w, ctx, "end_doc", 1);
    if (st != NL_OK) return st;
    int64_t n_tok = (int64_t)app_rows(&w->tokens), len = n_tok - w->doc_start;
    for (int i = 0; i < w->n_rec; i++)
        for (int j = 0; j < NL_MX; j++)
            if (w_mx(w, i, j)->ds >= 0 && (int64_t)app_rows(w_mx(w, i, j)) != n_tok)
                return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld: layer %d has %lld %s rows but there are %lld tokens",
                                 w->path, (long long)w->n_docs, w->rec[i], (long long)app_rows(w_mx(w, i, j)), mx_names[j],
                                 (long long)n_tok);
    for (int i = 0; i < w->n_rec && !w->no_acts; i++)
        if (w->kind[i] != 1 && (int64_t)app_rows(&w->acts[i]) != n_tok)
            return nl_errorf(ctx, NL_EINVAL,
                             "cannot write '%s': document %lld: layer %d has %lld activation rows but there are %lld tokens",
                             w->path, (long long)w->n_docs, w->rec[i], (long long)app_rows(&w->acts[i]), (long long)n_tok);
    for (int i = 0; i < w->n_rec; i++)
        for (int s = 0; s < NL_H5_N_STREAMS; s++)
            if (w_stream(w, i, s)->ds >= 0 && (int64_t)app_rows(w_stream(w, i, s)) != n_tok)
                return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld: layer %d has %lld %s rows but there are %lld tokens",
                                 w->path, (long long)w->n_docs, w->rec[i], (long long)app_rows(w_stream(w, i, s)),
                                 stream_names[s], (long long)n_tok);
    for (int i = 0; i < w->n_rec; i++) {
        if (w->pooled && w->kind[i] != 1 && (int64_t)app_rows(&w->pool[i]) != w->n_docs + 1)
            return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld: layer %d has no pooled row", w->path,
                             (long long)w->n_docs, w->rec[i]);
    }
    for (int i = 0; i < w->n_attn; i++)
        if (w->attn_rows[i] != len)
            return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld: layer %d has %lld attention rows but there are %lld tokens",
                             w->path, (long long)w->n_docs, w->attn_l[i], (long long)w->attn_rows[i], (long long)len);
    for (int i = 0; i < w->n_attn; i++) {
        if (H5Dclose(w->attn_ds[i]) < 0) return w_ioerr(w, ctx);
        w->attn_ds[i] = -1, w->attn_rows[i] = 0;
    }
    int32_t pl = w->prompt_len < 0 ? (int32_t)len : w->prompt_len;
    if (pl > len)
        return nl_errorf(ctx, NL_EINVAL, "cannot write '%s': document %lld: prompt_len %d exceeds its %lld tokens", w->path,
                         (long long)w->n_docs, pl, (long long)len);
    int64_t end = n_tok; /* doc_offsets[n_docs + 1] */
#ifdef NL_MPI
    if (w->mpi) end += w_mpi_tok0(w); /* a rank's tokens start at its token offset */
#endif
    if (app_push(&w->offsets, &end, 1, NULL) < 0) return w_ioerr(w, ctx);
    char *label = w->label;
    w->label = NULL; /* the labels appender owns it from here, even when its write fails */
    if (app_push(&w->labels, &label, 1, NULL) < 0 || app_push(&w->plen, &pl, 1, NULL) < 0) return w_ioerr(w, ctx);
    w->n_docs++;
    w->doc_start = n_tok;
    w->in_doc = 0;
#ifdef NL_MPI
    if (w->mpi) return NL_OK; /* no commits: the file takes its name whole at close */
#endif
    if (w->commit_s < 0 || now_s() - w->last_commit >= w->commit_s) return w_commit(w, ctx);
    return NL_OK;
}

nl_status nl_h5_writer_put_w_out_norm(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *norms) {
    int s = -1;
    nl_status st = w_check(w, ctx, "w_out_norm", 0);
    if (st == NL_OK) st = w_layer(w, ctx, layer, &s);
    if (st != NL_OK || s < 0 || w->kind[s] == 1) return st;
#ifdef NL_MPI
    if (w->mpi) return w_mpi_put_w_out_norm(w, ctx, s, norms);
#endif
    char name[64];
    snprintf(name, sizeof name, "/layers/%d/w_out_norm", layer);
    hid_t ds;
    if (w->wnorm[s]) {
        ds = H5Dopen2(w->file, name, H5P_DEFAULT);
    } else {
        hsize_t dim = (hsize_t)w->d_ff;
        hid_t sp = H5Screate_simple(1, &dim, NULL);
        ds = sp < 0 ? -1 : H5Dcreate2(w->file, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sp >= 0) H5Sclose(sp);
    }
    herr_t e = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, norms);
    if (ds >= 0) H5Dclose(ds);
    if (e < 0) return w_ioerr(w, ctx);
    w->wnorm[s] = 1;
    return NL_OK;
}

nl_status nl_h5_writer_flush(nl_h5_writer *w, nl_ctx *ctx) {
    nl_status st = w_check(w, ctx, "flush", 0);
    if (st != NL_OK) return st;
#ifdef NL_MPI
    if (w->mpi) return w_flush_rows(w) == 0 ? NL_OK : w_ioerr(w, ctx); /* H5Fflush would be collective */
#endif
    return w_commit(w, ctx);
}

nl_status nl_h5_writer_close(nl_h5_writer *w, nl_ctx *ctx, int complete) {
    if (!w) return NL_OK;
#ifdef NL_MPI
    if (w->mpi) return w_mpi_close(w, ctx, complete); /* collective */
#endif
    nl_status st = NL_OK;
    char m[512];
    if (w->failed) { /* the file keeps the last commit; write nothing more */
        st = nl_errorf(ctx, NL_EIO, "cannot write '%s': an earlier write failed (the file keeps the %lld document%s committed before)",
                       w->path, (long long)w->committed, w->committed == 1 ? "" : "s");
        writer_free(w); /* abandons the file: see writer_abandon */
        return st;
    }
    if (complete && w->in_doc) {
        st = nl_errorf(ctx, NL_EINVAL, "'%s' left incomplete: document %lld was still open at close", w->path,
                       (long long)w->n_docs);
        complete = 0;
    }
    for (int i = 0; complete && i < w->n_rec; i++)
        if (!w->wnorm[i] && w->kind[i] != 1) {
            st = nl_errorf(ctx, NL_EINVAL, "'%s' left incomplete: layer %d has no w_out_norm", w->path, w->rec[i]);
            complete = 0;
        }
    /* The open document's attention datasets go (they are not in any commit yet). */
    for (int i = 0; i < w->n_attn; i++)
        if (w->attn_ds[i] >= 0) {
            char name[64];
            snprintf(name, sizeof name, "/attn/layer_%d/doc_%lld", w->attn_l[i], (long long)w->n_docs);
            H5Dclose(w->attn_ds[i]);
            w->attn_ds[i] = -1;
            H5Ldelete(w->file, name, H5P_DEFAULT);
        }
    /* Cut back to the last ended document so every length agrees, and commit that. */
    hsize_t N = (hsize_t)w->doc_start, D = (hsize_t)w->n_docs;
    int ok = app_truncate(&w->tokens, N) == 0 && app_truncate(&w->offsets, D + 1) == 0 &&
             app_truncate(&w->labels, D) == 0 && app_truncate(&w->plen, D) == 0;
    for (int i = 0; i < w->n_rec; i++) {
        if (!w->no_acts && w->kind[i] != 1 && app_truncate(&w->acts[i], N) != 0) ok = 0;
        if (w->pooled && w->kind[i] != 1 && app_truncate(&w->pool[i], D) != 0) ok = 0;
    }
    if (w_streams_each(w, (int64_t)N) != 0) ok = 0;
    if (!ok) h5_err(m, sizeof m);
    else if (w_commit_raw(w, m, sizeof m) < 0) ok = 0;
    if (!ok) {
        nl_status e = w_ioerr_msg(w, ctx, m);
        writer_free(w);
        return st == NL_OK ? e : st;
    }
    w->committed = w->n_docs;
    /* Then the flag: rewritten in place, so a failure here leaves the committed file. */
    hid_t a = H5Aopen(w->file, "complete", H5P_DEFAULT);
    int c = complete ? 1 : 0;
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT, &c) < 0) ok = 0;
    if (a >= 0) H5Aclose(a);
    if (ok) h5_err(m, sizeof m); /* clear */
    else if (st == NL_OK) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", w->path, h5_err(m, sizeof m));
    /* Close datasets first, then the file; a failing H5Fclose means the file is not intact. */
    app_free(&w->tokens);
    app_free(&w->offsets);
    app_free(&w->labels);
    app_free(&w->plen);
    for (int i = 0; i < w->n_rec; i++) {
        app_free(&w->acts[i]);
        app_free(&w->pool[i]);
    }
    w_streams_free(w);
    if (H5Fclose(w->file) < 0) {
        if (st == NL_OK) st = nl_errorf(ctx, NL_EIO, "cannot close '%s': %s", w->path, h5_err(m, sizeof m));
        w->failed = 1;
        writer_free(w);
        return st;
    }
    w->file = -1;
    writer_free(w);
    return st;
}

int64_t nl_h5_writer_docs(const nl_h5_writer *w) { return w ? w->n_docs : 0; }
int64_t nl_h5_writer_tokens(const nl_h5_writer *w) { return w ? (int64_t)app_rows(&w->tokens) : 0; }
int nl_h5_writer_has_layer(const nl_h5_writer *w, int layer) {
    return layer >= 0 && layer < w->n_layers && w->slot[layer] >= 0;
}
unsigned nl_h5_writer_streams(const nl_h5_writer *w) { return w->streams; }
int nl_h5_writer_has_acts(const nl_h5_writer *w) { return !w->no_acts; }

/* ------------------------------------------------------------------ reader */

struct vl_heap_s;
static void vlh_close(struct vl_heap_s *h);
struct oh_file_s;
static void oh_free(struct oh_file_s *o);

struct nl_h5_reader {
    char *path;
    hid_t file, half;
    nl_h5_info info;
    char *strs[8];          /* owned meta strings */
    int *layers;            /* (n_rec) */
    int *slot;              /* (n_layers) */
    int32_t *tokens;        /* (N) */
    int64_t *offsets;       /* (Dc+1) */
    char **labels;          /* (Dc) */
    int32_t *plen;          /* (Dc) */
    hid_t *acts, *pool;     /* (n_rec) datasets or -1 */
    int acts_f16;
    void *scratch;
    size_t scratch_n;
    struct vl_heap_s *heap; /* variable-length strings of the file, NULL until open needs it */
    struct oh_file_s *oh;   /* version-1 object headers checked before libhdf5 reads them */
};

void nl_h5_reader_close(nl_h5_reader *r) {
    if (!r) return;
    for (int i = 0; i < r->info.meta.n_rec; i++) {
        if (r->acts && r->acts[i] >= 0) H5Dclose(r->acts[i]);
        if (r->pool && r->pool[i] >= 0) H5Dclose(r->pool[i]);
    }
    if (r->half >= 0) H5Tclose(r->half);
    if (r->file >= 0) H5Fclose(r->file);
    for (int i = 0; i < 8; i++) free(r->strs[i]);
    if (r->labels)
        for (int64_t d = 0; d < r->info.n_docs; d++) free(r->labels[d]);
    free(r->labels);
    free(r->layers);
    free(r->slot);
    free(r->tokens);
    free(r->offsets);
    free(r->plen);
    free(r->acts);
    free(r->pool);
    free(r->scratch);
    free(r->path);
    if (r->heap) {
        vlh_close(r->heap);
        free(r->heap);
    }
    oh_free(r->oh);
    free(r);
}

/* ---- variable-length strings, read without libhdf5's global-heap code
 *
 * A variable-length string is stored as a heap ID (u32 length, collection address of
 * sizeof_addr bytes, u32 object index) that points into a global heap collection ("GCOL",
 * version 1, reserved[3], collection size; then objects: index u16, refcount u16, reserved
 * u32, size of sizeof_size bytes, data padded to 8 bytes; index 0 is the free space, last).
 * libhdf5 1.10.8 trusts all of it: H5HG_read copies the heap object's size into a buffer of
 * the ID's length (heap overflow, R4 and fuzz/crashes/h5/), its collection loader walks
 * lying object sizes out of the collection and allocates whatever collection size the file
 * states. So the reader never lets libhdf5 convert a variable-length string: a soft
 * conversion (vlraw_conv) from any variable-length string to an opaque type tagged
 * NL_H5_VLRAW_TAG of the same size hands out the raw heap IDs (H5Aread/H5Dread do no
 * heap access for it), and vlh_get reads each string itself with pread, checking that the
 * collection lies inside the file, that every object walked before the wanted one lies
 * inside the collection, and that the object's size equals the ID's length. Files keep
 * variable-length UTF-8 strings (h5py reads str). The conversion is registered only for
 * the duration of one read (H5Tregister/H5Tunregister), which also drops the conversion
 * paths HDF5 caches per open file for variable-length types. */
#define NL_H5_VLRAW_TAG "neuronlab.vlstring.raw"

static herr_t vlraw_conv(hid_t src, hid_t dst, H5T_cdata_t *cd, size_t nelmts, size_t buf_stride, size_t bkg_stride,
                         void *buf, void *bkg, hid_t dxpl) {
    (void)nelmts, (void)buf_stride, (void)bkg_stride, (void)buf, (void)bkg, (void)dxpl;
    if (cd->command == H5T_CONV_INIT) {
        if (H5Tis_variable_str(src) <= 0 || H5Tget_class(dst) != H5T_OPAQUE || H5Tget_size(src) != H5Tget_size(dst))
            return -1;
        char *tag = H5Tget_tag(dst);
        int ok = tag && strcmp(tag, NL_H5_VLRAW_TAG) == 0;
        H5free_memory(tag);
        if (!ok) return -1;
        cd->need_bkg = H5T_BKG_NO;
    }
    /* H5T_CONV_CONV: same size, converted in place: the raw heap IDs stay as they are. */
    return 0;
}

/* The file of a heap read: its own descriptor, size and address encoding, and one cached
 * collection with its objects sorted by index. */
typedef struct vl_heap_s {
    int fd;
    uint64_t fsize, base;   /* bytes of the file; base address (user block) */
    unsigned sa, ss;        /* sizeof_addr, sizeof_size of the file */
    uint64_t caddr;         /* address of the cached collection, 0 = none */
    unsigned char *cbuf;    /* (ccap) holds the cached collection */
    uint64_t csize, ccap;   /* its size; bytes allocated */
    struct vlh_obj { uint32_t idx, off; } *obj; /* (nobj) the collection's objects, sorted by idx */
    size_t nobj, cap;
} vl_heap;

static int vlh_obj_cmp(const void *a, const void *b) {
    const struct vlh_obj *x = a, *y = b;
    return x->idx != y->idx ? (x->idx > y->idx ? 1 : -1) : (x->off > y->off) - (x->off < y->off);
}

static uint64_t le_get(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

static void vlh_close(struct vl_heap_s *h) {
    if (h->fd >= 0) close(h->fd);
    free(h->cbuf);
    free(h->obj);
    memset(h, 0, sizeof *h);
    h->fd = -1;
}

/* Sets up h for the file of obj (any id in it). -1 with why on failure. */
static int vlh_open(vl_heap *h, hid_t obj, char *why, size_t nwhy) {
    memset(h, 0, sizeof *h);
    h->fd = -1;
    hid_t file = H5Iget_file_id(obj);
    hid_t fcpl = file >= 0 ? H5Fget_create_plist(file) : -1;
    size_t sa = 0, ss = 0;
    hsize_t ub = 0;
    char name[4096];
    ssize_t nn = file >= 0 ? H5Fget_name(file, name, sizeof name) : -1;
    int ok = fcpl >= 0 && H5Pget_sizes(fcpl, &sa, &ss) >= 0 && H5Pget_userblock(fcpl, &ub) >= 0 && nn > 0 &&
             (size_t)nn < sizeof name;
    if (fcpl >= 0) H5Pclose(fcpl);
    if (file >= 0) H5Fclose(file);
    if (!ok) {
        snprintf(why, nwhy, "cannot be located in the file");
        return -1;
    }
    if (sa < 2 || sa > 8 || ss < 2 || ss > 8) {
        snprintf(why, nwhy, "uses %zu-byte addresses and %zu-byte lengths (neuronlab reads 2 to 8)", sa, ss);
        return -1;
    }
    struct stat sb;
    h->fd = open(name, O_RDONLY | O_CLOEXEC);
    if (h->fd < 0 || fstat(h->fd, &sb) != 0) {
        snprintf(why, nwhy, "cannot be read: %s", strerror(errno));
        vlh_close(h);
        return -1;
    }
    h->fsize = (uint64_t)sb.st_size;
    h->base = ub;
    h->sa = (unsigned)sa;
    h->ss = (unsigned)ss;
    return 0;
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            return -1;
        }
        p += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

#define VLH_ALIGN(x) (((x) + 7) & ~(uint64_t)7)

/* Loads (and indexes) the collection at addr into h. -1 with why when it is not a valid
 * collection inside the file. */
static int vlh_load(vl_heap *h, uint64_t addr, char *why, size_t nwhy) {
    if (h->caddr == addr && h->cbuf) return 0;
    h->caddr = 0;
    h->nobj = 0;
    uint64_t hdr = VLH_ALIGN(8 + h->ss), ohdr = VLH_ALIGN(8 + h->ss), off;
    unsigned char hb[32];
    if (__builtin_add_overflow(addr, h->base, &off) || off > h->fsize || h->fsize - off < hdr ||
        pread_all(h->fd, hb, (size_t)hdr, off) != 0) {
        snprintf(why, nwhy, "points to a global heap at %llu, outside the file", (unsigned long long)addr);
        return -1;
    }
    uint64_t cs = le_get(hb + 8, h->ss);
    if (memcmp(hb, "GCOL", 4) != 0 || hb[4] != 1) {
        snprintf(why, nwhy, "points to %llu, which is not a global heap collection", (unsigned long long)addr);
        return -1;
    }
    if (cs < hdr || cs > h->fsize - off || cs > UINT32_MAX) {
        snprintf(why, nwhy, "points to a global heap collection of %llu bytes at %llu that does not fit in the file",
                 (unsigned long long)cs, (unsigned long long)addr);
        return -1;
    }
    if (cs > h->ccap || !h->cbuf) {
        free(h->cbuf);
        h->cbuf = malloc((size_t)cs);
        h->ccap = h->cbuf ? cs : 0;
    }
    if (!h->cbuf) {
        snprintf(why, nwhy, "cannot be read: out of memory");
        return -1;
    }
    if (pread_all(h->fd, h->cbuf, (size_t)cs, off) != 0) {
        snprintf(why, nwhy, "cannot be read: %s", errno ? strerror(errno) : "short read");
        return -1;
    }
    /* Walk the objects; each must lie inside the collection (the free space, index 0, ends it). */
    for (uint64_t p = hdr; p + ohdr <= cs;) {
        unsigned idx = (unsigned)le_get(h->cbuf + p, 2);
        uint64_t osz = le_get(h->cbuf + p + 8, h->ss);
        if (idx == 0) break;
        if (osz > cs - p - ohdr) {
            snprintf(why, nwhy, "points to a corrupt global heap collection at %llu (object %u of %llu bytes overruns it)",
                     (unsigned long long)addr, idx, (unsigned long long)osz);
            return -1;
        }
        if (h->nobj == h->cap) {
            size_t nc = h->cap ? 2 * h->cap : 64;
            void *q = realloc(h->obj, nc * sizeof *h->obj);
            if (!q) {
                snprintf(why, nwhy, "cannot be read: out of memory");
                return -1;
            }
            h->obj = q;
            h->cap = nc;
        }
        h->obj[h->nobj].idx = idx;
        h->obj[h->nobj++].off = (uint32_t)p;
        p += ohdr + VLH_ALIGN(osz);
    }
    if (h->nobj) qsort(h->obj, h->nobj, sizeof *h->obj, vlh_obj_cmp); /* the first of equal indices wins */
    h->caddr = addr;
    h->csize = cs;
    return 0;
}

/* Resolves one heap ID (raw bytes as stored) into an owned string. A null ID (address 0)
 * is the empty string. -1 with why when the ID or its collection is corrupt. */
static int vlh_get(vl_heap *h, const unsigned char *id, char **out, char *why, size_t nwhy) {
    *out = NULL;
    uint64_t len = le_get(id, 4), addr = le_get(id + 4, h->sa), idx = le_get(id + 4 + h->sa, 4);
    if (addr == 0) {
        *out = strdup("");
    } else {
        if (idx == 0 || idx > 65535) {
            snprintf(why, nwhy, "refers to global heap object %llu (valid: 1 to 65535)", (unsigned long long)idx);
            return -1;
        }
        if (vlh_load(h, addr, why, nwhy) != 0) return -1;
        size_t lo = 0, hi = h->nobj; /* first entry with index >= idx */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (h->obj[mid].idx < idx) lo = mid + 1;
            else hi = mid;
        }
        if (lo == h->nobj || h->obj[lo].idx != idx) {
            snprintf(why, nwhy, "refers to global heap object %llu, absent from its collection at %llu", (unsigned long long)idx,
                     (unsigned long long)addr);
            return -1;
        }
        uint64_t p = h->obj[lo].off;
        uint64_t osz = le_get(h->cbuf + p + 8, h->ss);
        if (osz != len) {
            snprintf(why, nwhy, "is a string of %llu bytes whose global heap object holds %llu bytes", (unsigned long long)len,
                     (unsigned long long)osz);
            return -1;
        }
        char *s = malloc((size_t)len + 1);
        if (s) {
            memcpy(s, h->cbuf + p + VLH_ALIGN(8 + h->ss), (size_t)len);
            s[len] = 0;
        }
        *out = s;
    }
    if (!*out) snprintf(why, nwhy, "cannot be read: out of memory");
    return *out ? 0 : -1;
}

/* Reads n variable-length strings of obj (an attribute when ms < 0, else a dataset with the
 * memory and file selections ms, fs) through the raw conversion, and resolves them into
 * out (n owned strings; on failure every entry is NULL). -1 with why on failure. */
static int vls_read(vl_heap *h, hid_t obj, hid_t ms, hid_t fs, size_t n, char **out, char *why, size_t nwhy) {
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    size_t idsz = 8 + h->sa;
    unsigned char *raw = malloc(n ? n * idsz : 1);
    hid_t src = h5_vstr_type(), op = H5Tcreate(H5T_OPAQUE, idsz);
    int reg = 0, rc = -1;
    snprintf(why, nwhy, "cannot be read");
    if (raw && src >= 0 && op >= 0 && H5Tset_tag(op, NL_H5_VLRAW_TAG) >= 0 &&
        H5Tregister(H5T_PERS_SOFT, "nl_vlraw", src, op, vlraw_conv) >= 0) {
        reg = 1;
        /* A conversion buffer of the size read (HDF5 callocs 1 MiB by default, per read). */
        hid_t dx = ms < 0 ? -1 : H5Pcreate(H5P_DATASET_XFER);
        size_t tb = n * idsz < 4096 ? 4096 : n * idsz < (1 << 20) ? n * idsz : (1 << 20);
        if (dx >= 0) H5Pset_buffer(dx, tb, NULL, NULL);
        herr_t e = ms < 0 ? H5Aread(obj, op, raw) : H5Dread(obj, op, ms, fs, dx >= 0 ? dx : H5P_DEFAULT, raw);
        if (dx >= 0) H5Pclose(dx);
        if (e >= 0) rc = 0;
        else h5_err(why, nwhy);
    }
    if (reg) H5Tunregister(H5T_PERS_SOFT, "nl_vlraw", -1, -1, vlraw_conv);
    if (op >= 0) H5Tclose(op);
    if (src >= 0) H5Tclose(src);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (vlh_get(h, raw + i * idsz, &out[i], why, nwhy) != 0) rc = -1;
    if (rc != 0)
        for (size_t i = 0; i < n; i++) free(out[i]), out[i] = NULL;
    free(raw);
    return rc;
}
/* ---- object headers of version 1, checked before libhdf5 decodes them
 *
 * Version-1 object headers (files of the library defaults: h5py, other tools) carry no
 * checksum, and libhdf5 1.10.8 decodes their messages without bounds checks: an attribute
 * message whose data overruns it is copied anyway (heap overflow, found by fuzz/fuzz_h5.c at
 * H5Aexists), a zero chunk dimension divides by zero in H5Dopen, a header chunk of 4 GiB is
 * allocated before it is read. So before libhdf5 opens the file, and before it opens any
 * object of the schema, oh_check reads that object's header with pread and checks: chunks
 * (and continuation chunks) inside the file, every message inside its chunk, and the
 * messages libhdf5 decodes when the reader opens or reads the object — dataspace,
 * datatype, fill value, layout, filter pipeline, attribute, link, symbol table, times,
 * comment — against their own sizes. Datatypes are limited to what the schema needs
 * (integers of 1-8 bytes, floats of 2/4/8 bytes with sane bit fields, fixed and
 * variable-length strings); shared messages (committed datatypes) and external storage are
 * refused. Version-2 headers ("OHDR", from the writer: libver ≥ 1.8) are checksummed and
 * verified by libhdf5 before it decodes anything, so they are not parsed here. */
typedef struct oh_file_s {
    int fd;
    uint64_t fsize, base;
    unsigned sa, ss;      /* 0: not a file with version-1 headers, nothing to check */
    uint64_t sb_end;      /* file offset of the end of the superblock */
    uint64_t seen[64];   /* headers already checked */
    int nseen;
} oh_file;

#define OH_FAIL(...) do { snprintf(why, nwhy, __VA_ARGS__); return -1; } while (0)

/* Encoded length of a datatype at p (n bytes available) into *len; -1 when it is not one
 * the reader accepts or does not fit. depth: VL string base types. */
static int oh_dtype(const unsigned char *p, uint64_t n, uint64_t *len, int depth, unsigned sa, char *why, size_t nwhy) {
    if (n < 8) OH_FAIL("has a truncated datatype");
    unsigned cls = p[0] & 15, ver = p[0] >> 4;
    uint64_t size = le_get(p + 4, 4);
    if (ver < 1 || ver > 3) OH_FAIL("has a datatype of version %u", ver);
    if (cls == 0 || cls == 1) { /* fixed-point, floating-point */
        uint64_t need = cls == 0 ? 12 : 20;
        if (n < need) OH_FAIL("has a truncated datatype");
        unsigned off = (unsigned)le_get(p + 8, 2), prec = (unsigned)le_get(p + 10, 2);
        if (cls == 0 && size != 1 && size != 2 && size != 4 && size != 8) OH_FAIL("has an integer type of %llu bytes", (unsigned long long)size);
        if (cls == 1 && size != 2 && size != 4 && size != 8) OH_FAIL("has a float type of %llu bytes", (unsigned long long)size);
        if (prec == 0 || off + prec > 8 * size) OH_FAIL("has a number type with %u bits at offset %u in %llu bytes", prec, off, (unsigned long long)size);
        if (cls == 1) {
            unsigned epos = p[12], esz = p[13], mpos = p[14], msz = p[15];
            if (esz == 0 || esz > 16 || msz == 0 || msz > 64 || epos + esz > off + prec || mpos + msz > off + prec)
                OH_FAIL("has a float type with bad exponent/mantissa fields");
        }
        *len = need;
        return 0;
    }
    if (cls == 3) { /* string */
        if (size == 0 || size > NL_H5_MAX_ATTR_STR) OH_FAIL("has a string type of %llu bytes", (unsigned long long)size);
        *len = 8;
        return 0;
    }
    if (cls == 9 && depth == 0 && (p[1] & 15) == 1) { /* variable-length string: base type follows */
        uint64_t bl;
        /* libhdf5 sizes an attribute's buffer by this size but reads heap IDs of 4 + sa + 4 bytes */
        if (size < 8ull + sa) OH_FAIL("has a variable-length string type of %llu bytes (heap IDs take %u)", (unsigned long long)size, 8 + sa);
        if (oh_dtype(p + 8, n - 8, &bl, 1, sa, why, nwhy) != 0) return -1;
        if (le_get(p + 8 + 4, 4) != 1) OH_FAIL("has a variable-length string of %llu-byte characters", (unsigned long long)le_get(p + 12, 4));
        *len = 8 + bl;
        return 0;
    }
    OH_FAIL("has a datatype of class %u (neuronlab reads numbers and strings)", cls);
}

/* Dataspace at p (n bytes): encoded length and number of elements. */
static int oh_dspace(const oh_file *o, const unsigned char *p, uint64_t n, uint64_t *len, uint64_t *npts, char *why, size_t nwhy) {
    if (n < 4) OH_FAIL("has a truncated dataspace");
    unsigned ver = p[0], rank = p[1], flags = p[2];
    if (ver != 1 && ver != 2) OH_FAIL("has a dataspace of version %u", ver);
    if (rank > 32) OH_FAIL("has a dataspace of rank %u", rank);
    uint64_t hdr = ver == 1 ? 8 : 4, per = (uint64_t)o->ss * ((flags & 1) ? 2 : 1) + ((ver == 1 && (flags & 2)) ? o->ss : 0);
    if (ver == 2 && p[3] > 2) OH_FAIL("has a dataspace of type %u", p[3]);
    *len = hdr + per * rank;
    if (*len > n) OH_FAIL("has a dataspace longer than its message");
    uint64_t k = ver == 2 && p[3] == 2 ? 0 : 1; /* null dataspace: no element */
    for (unsigned i = 0; i < rank; i++)
        if (__builtin_mul_overflow(k, le_get(p + hdr + (uint64_t)i * o->ss, o->ss), &k)) OH_FAIL("has a dataspace of more than 2^64 elements");
    *npts = k;
    return 0;
}

/* One message (type t, flags fl, n bytes at p) of a version-1 header. */
static int oh_msg(const oh_file *o, unsigned t, unsigned fl, const unsigned char *p, uint64_t n, char *why, size_t nwhy) {
    uint64_t a, b, c;
    if ((fl & 2) && (t == 1 || t == 3 || t == 5 || t == 11 || t == 12 || t == 4))
        OH_FAIL("holds a shared message of type %u (committed datatypes are not read)", t);
    switch (t) {
    case 1: return oh_dspace(o, p, n, &a, &b, why, nwhy);
    case 3:
        if (oh_dtype(p, n, &a, 0, o->sa, why, nwhy) != 0) return -1;
        if (a > n) OH_FAIL("has a datatype longer than its message");
        return 0;
    case 4:
        if (n < 4 || le_get(p, 4) > n - 4) OH_FAIL("has a fill value longer than its message");
        return 0;
    case 5: {
        if (n < 2) OH_FAIL("has a truncated fill value message");
        unsigned ver = p[0];
        if (ver < 1 || ver > 3 || (ver < 3 && n < 4)) OH_FAIL("has a corrupt fill value message (version %u)", ver);
        int has = ver == 3 ? (p[1] & 0x20) != 0 : (ver == 1 || p[3]);
        uint64_t at = ver == 3 ? 2 : 4;
        if (has && (n < at + 4 || le_get(p + at, 4) > n - at - 4)) OH_FAIL("has a fill value longer than its message");
        return 0;
    }
    case 7: OH_FAIL("keeps its data outside the file (external storage)");
    case 8: {
        if (n < 2) OH_FAIL("has a truncated layout message");
        unsigned ver = p[0];
        if (ver != 3) {
            if (ver != 1 && ver != 2) OH_FAIL("has a layout message of version %u", ver);
            if (n < 8) OH_FAIL("has a truncated layout message");
            unsigned rank = p[1], cls = p[2];
            uint64_t need = 8 + (cls != 0 ? o->sa : 0) + 4ull * rank + (cls == 0 ? 4 : 0);
            if (rank == 0 || rank > 33 || cls > 2 || need > n) OH_FAIL("has a corrupt layout message");
            if (cls == 0 && le_get(p + 8 + 4ull * rank, 4) > n - need) OH_FAIL("has compact data longer than its message");
            uint64_t cb = 1;
            for (unsigned i = 0; cls == 2 && i < rank; i++) {
                uint64_t d = le_get(p + 8 + o->sa + 4ull * i, 4);
                if (d == 0) OH_FAIL("has a chunk dimension of 0");
                if (__builtin_mul_overflow(cb, d, &cb) || cb >= (1ull << 32)) OH_FAIL("has chunks of 4 GiB or more");
            }
            return 0;
        }
        unsigned cls = p[1];
        if (cls == 0) {
            if (n < 4 || le_get(p + 2, 2) > n - 4) OH_FAIL("has compact data longer than its message");
        } else if (cls == 1) {
            if (n < 2 + o->sa + o->ss) OH_FAIL("has a truncated layout message");
        } else if (cls == 2) {
            if (n < 3) OH_FAIL("has a truncated layout message");
            unsigned rank = p[2];
            if (rank < 2 || rank > 33 || n < 3 + o->sa + 4ull * rank) OH_FAIL("has a corrupt chunked layout");
            uint64_t cb = 1; /* the last dimension is the element size */
            for (unsigned i = 0; i < rank; i++) {
                uint64_t d = le_get(p + 3 + o->sa + 4ull * i, 4);
                if (d == 0) OH_FAIL("has a chunk dimension of 0");
                if (__builtin_mul_overflow(cb, d, &cb) || cb >= (1ull << 32)) OH_FAIL("has chunks of 4 GiB or more"); /* libhdf5 leaks its chunk cache on this error */
            }
        } else {
            OH_FAIL("has a layout of class %u (virtual or unknown)", cls);
        }
        return 0;
    }
    case 11: {
        if (n < 2) OH_FAIL("has a truncated filter pipeline");
        unsigned ver = p[0], nf = p[1];
        if ((ver != 1 && ver != 2) || nf > 32) OH_FAIL("has a corrupt filter pipeline");
        uint64_t at = ver == 1 ? 8 : 2;
        for (unsigned i = 0; i < nf; i++) {
            if (at + 6 > n) OH_FAIL("has a truncated filter pipeline");
            unsigned id = (unsigned)le_get(p + at, 2);
            int named = ver == 1 || id >= 256;
            if (named && at + 8 > n) OH_FAIL("has a truncated filter pipeline");
            uint64_t nl = named ? le_get(p + at + 2, 2) : 0, ncd = le_get(p + at + (named ? 6 : 4), 2);
            at += named ? 8 : 6;
            if (ver == 1 && nl % 8) OH_FAIL("has a corrupt filter name");
            if (nl > n - at || (nl && !memchr(p + at, 0, (size_t)nl))) OH_FAIL("has a corrupt filter name");
            at += nl;
            uint64_t cd = 4 * ncd + (ver == 1 && (ncd & 1) ? 4 : 0);
            if (cd > n - at) OH_FAIL("has filter parameters longer than its message");
            at += cd;
        }
        return 0;
    }
    case 12: {
        if (n < 8) OH_FAIL("has a truncated attribute");
        unsigned ver = p[0];
        if (ver < 1 || ver > 3) OH_FAIL("has an attribute of version %u", ver);
        if (ver >= 2 && (p[1] & 3)) OH_FAIL("has an attribute with a shared datatype or dataspace");
        uint64_t nn = le_get(p + 2, 2), dn = le_get(p + 4, 2), sn = le_get(p + 6, 2), at = ver == 3 ? 9 : 8;
#define PAD(x) (ver == 1 ? VLH_ALIGN(x) : (x))
        if (nn == 0 || PAD(nn) > n - at || p[at + nn - 1] != 0 || memchr(p + at, 0, (size_t)nn) != p + at + nn - 1)
            OH_FAIL("has an attribute with a corrupt name");
        at += PAD(nn);
        if (PAD(dn) > n - at || oh_dtype(p + at, dn, &a, 0, o->sa, why, nwhy) != 0) {
            if (PAD(dn) > n - at) OH_FAIL("has an attribute whose datatype overruns it");
            return -1;
        }
        uint64_t tsize = le_get(p + at + 4, 4); /* what libhdf5 copies per element (≥ a heap ID for strings) */
        at += PAD(dn);
        if (PAD(sn) > n - at || oh_dspace(o, p + at, sn, &b, &c, why, nwhy) != 0) {
            if (PAD(sn) > n - at) OH_FAIL("has an attribute whose dataspace overruns it");
            return -1;
        }
        at += PAD(sn);
#undef PAD
        uint64_t data;
        if (__builtin_mul_overflow(c, tsize, &data) || data > n - at)
            OH_FAIL("has an attribute of %llu bytes in a message of %llu", (unsigned long long)c * tsize, (unsigned long long)n);
        return 0;
    }
    case 17: { /* symbol table: B-tree, local heap ("HEAP", version 0, data size, free list, data address) */
        if (n < 2ull * o->sa) OH_FAIL("has a truncated symbol table message");
        uint64_t ha = le_get(p + o->sa, o->sa), off, hl = 8 + 2ull * o->ss + o->sa;
        unsigned char hb[40];
        if (__builtin_add_overflow(ha, o->base, &off) || off > o->fsize || o->fsize - off < hl || pread_all(o->fd, hb, (size_t)hl, off) != 0 ||
            memcmp(hb, "HEAP", 4) != 0 || hb[4] != 0)
            OH_FAIL("has its group's local heap at %llu, not a local heap inside the file", (unsigned long long)ha);
        uint64_t dsz = le_get(hb + 8, o->ss), da = le_get(hb + 8 + 2ull * o->ss, o->sa);
        if (__builtin_add_overflow(da, o->base, &off) || off > o->fsize || dsz > o->fsize - off)
            OH_FAIL("has a local heap of %llu bytes past the end of the file", (unsigned long long)dsz);
        return 0;
    }
    case 13:
        if (!memchr(p, 0, (size_t)n)) OH_FAIL("has an unterminated comment");
        return 0;
    case 14:
        if (n < 14) OH_FAIL("has a truncated modification time");
        return 0;
    case 18:
        if (n < 8) OH_FAIL("has a truncated modification time");
        return 0;
    default:
        return 0; /* NIL, continuation (checked by the caller), unknown (libhdf5 skips them) */
    }
}

/* Checks the header at addr (relative to the base address) when it is a version-1 header;
 * a version-2 header is left to libhdf5's checksum. */
static int oh_check(oh_file *o, uint64_t addr, char *why, size_t nwhy) {
    for (int i = 0; i < o->nseen; i++)
        if (o->seen[i] == addr) return 0;
    uint64_t off;
    unsigned char pre[16];
    if (__builtin_add_overflow(addr, o->base, &off) || off > o->fsize || o->fsize - off < 16 || pread_all(o->fd, pre, 16, off) != 0)
        OH_FAIL("has its object header at %llu, outside the file", (unsigned long long)addr);
    if (memcmp(pre, "OHDR", 4) == 0) return 0;
    if (pre[0] != 1) OH_FAIL("has an object header of version %u", pre[0]);
    uint64_t cur = off + 16, clen = le_get(pre + 8, 4), nmsg = le_get(pre + 2, 2), seen_msgs = 0;
    uint64_t chunks[16][2];
    int nch = 0, k = 0;
    chunks[nch][0] = cur, chunks[nch++][1] = clen;
    while (k < nch) {
        cur = chunks[k][0], clen = chunks[k++][1];
        if (cur > o->fsize || clen > o->fsize - cur) OH_FAIL("has an object header chunk of %llu bytes past the end of the file", (unsigned long long)clen);
        /* A chunk is at least one message long, after the superblock, and not one already
         * seen (libhdf5 fails on such a chunk, leaking the part read). */
        if (clen < 8 || cur < o->sb_end) OH_FAIL("has an object header chunk of %llu bytes at %llu", (unsigned long long)clen, (unsigned long long)cur);
        for (int i = 0; i < k - 1; i++)
            if (chunks[i][0] == cur) OH_FAIL("has an object header chunk listed twice");
        unsigned char *c = malloc(clen ? (size_t)clen : 1);
        if (!c) OH_FAIL("cannot be checked: out of memory");
        if (pread_all(o->fd, c, (size_t)clen, cur) != 0) {
            free(c);
            OH_FAIL("cannot be read");
        }
        for (uint64_t p = 0; p + 8 <= clen;) {
            unsigned t = (unsigned)le_get(c + p, 2), fl = c[p + 4];
            uint64_t n = le_get(c + p + 2, 2);
            if (n > clen - p - 8) {
                free(c);
                OH_FAIL("has an object header message that overruns its chunk");
            }
            if (++seen_msgs > 65535) {
                free(c);
                OH_FAIL("has too many object header messages");
            }
            int rc = 0;
            if (t == 16) { /* continuation: another chunk */
                if (n < (uint64_t)o->sa + o->ss || nch == 16) {
                    free(c);
                    OH_FAIL("has a corrupt or too long chain of object header chunks");
                }
                uint64_t ca = le_get(c + p + 8, o->sa), cl = le_get(c + p + 8 + o->sa, o->ss);
                if (__builtin_add_overflow(ca, o->base, &chunks[nch][0])) chunks[nch][0] = UINT64_MAX;
                chunks[nch++][1] = cl;
            } else {
                rc = oh_msg(o, t, fl, c + p + 8, n, why, nwhy);
            }
            if (rc != 0) {
                free(c);
                return -1;
            }
            p += 8 + VLH_ALIGN(n);
        }
        free(c);
    }
    (void)nmsg;
    if (o->nseen < 64) o->seen[o->nseen++] = addr;
    return 0;
}

/* Reads the superblock of the file at fd, fills o and returns the root object header's
 * address in *root (any superblock version: a file with a checksummed superblock may still
 * hold version-1 object headers). Returns 1 when there is no superblock libhdf5 would read
 * (it will say why), -1 with why when it is truncated. */
static int oh_open(oh_file *o, int fd, uint64_t fsize, uint64_t *root, char *why, size_t nwhy) {
    memset(o, 0, sizeof *o);
    o->fd = fd;
    o->fsize = fsize;
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[128];
    for (uint64_t at = 0; at + 8 <= fsize; at = at ? at * 2 : 512) {
        if (pread_all(fd, b, 8, at) != 0) break;
        if (memcmp(b, sig, 8) != 0) continue;
        size_t k = fsize - at < sizeof b ? (size_t)(fsize - at) : sizeof b;
        if (pread_all(fd, b, k, at) != 0 || k < 24) OH_FAIL("has a truncated superblock");
        if (b[8] > 3) return 1;
        int v2 = b[8] >= 2;
        unsigned sa = v2 ? b[9] : b[13], ss = v2 ? b[10] : b[14];
        if ((sa != 2 && sa != 4 && sa != 8) || (ss != 2 && ss != 4 && ss != 8)) return 1; /* libhdf5 refuses it */
        /* 0/1: base, free space, EOF, driver addresses, then the root entry (name offset,
         * header address, cache type, reserved, scratch); 2/3: base, extension, EOF, root
         * header addresses, checksum. */
        uint64_t ent = v2 ? 12 + 3ull * sa : 24 + (b[8] == 1 ? 4 : 0) + 5ull * sa;
        if (ent + sa > k) OH_FAIL("has a truncated superblock");
        o->sa = sa, o->ss = ss, o->base = at, o->sb_end = at + ent + sa + (v2 ? 4 : 24);
        *root = le_get(b + ent, sa);
        return 0;
    }
    return 1;
}

static void oh_free(oh_file *o) {
    if (!o) return;
    if (o->fd >= 0) close(o->fd);
    free(o);
}

/* Checks the headers of every object on the path name ("layers/3/ffn_act": /layers,
 * /layers/3, then the dataset), each once; absent objects pass (the caller reports them).
 * Soft and external links are refused: their targets would go unchecked. */
static int r_check(oh_file *o, hid_t file, const char *name, char *why, size_t nwhy) {
    if (!o || !o->sa) return 0;
    char part[128], w[300];
    for (const char *s = name;;) {
        const char *slash = strchr(s, '/');
        int k = slash ? (int)(slash - name) : (int)strlen(name);
        snprintf(part, sizeof part, "%.*s", k, name);
        H5L_info_t li;
        if (H5Lexists(file, part, H5P_DEFAULT) <= 0 || H5Lget_info(file, part, &li, H5P_DEFAULT) < 0) return 0;
        if (li.type != H5L_TYPE_HARD) {
            snprintf(why, nwhy, "/%s is a soft or external link (not followed)", part);
            return -1;
        }
        if (oh_check(o, li.u.address, w, sizeof w) != 0) {
            snprintf(why, nwhy, "/%s %s", part, w);
            return -1;
        }
        if (!slash) return 0;
        s = slash + 1;
    }
}

/* 1 exists, 0 missing. */
static int has_attr(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }
static int has_link(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

/* Reads a string attribute holding one string (scalar, or an array of one element),
 * variable- or fixed-length, ASCII or UTF-8, into an owned string. On failure returns -1
 * and says why in why ("is not a string", "is an array of 2 strings, expected one").
 * hp: the file's heap reader, or NULL for a temporary one. */
static int read_attr_str_h(vl_heap *hp, hid_t obj, const char *name, char **out, char *why, size_t nwhy) {
    *out = NULL;
    snprintf(why, nwhy, "cannot be read");
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a), mt = -1;
    hssize_t k = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    int rc = -1;
    if (t < 0 || s < 0) {
        /* why stays "cannot be read" */
    } else if (H5Tget_class(t) != H5T_STRING) {
        snprintf(why, nwhy, "is not a string");
    } else if (k != 1 || H5Sget_simple_extent_ndims(s) > 1) {
        snprintf(why, nwhy, "is an array of %lld strings, expected one string", (long long)k);
    } else if (H5Tis_variable_str(t) > 0) {
        /* Through vls_read: libhdf5 never reads the global heap (see above). */
        vl_heap h;
        if (hp) rc = vls_read(hp, a, -1, -1, 1, out, why, nwhy);
        else if (vlh_open(&h, a, why, nwhy) == 0) {
            rc = vls_read(&h, a, -1, -1, 1, out, why, nwhy);
            vlh_close(&h);
        }
    } else {
        size_t n = H5Tget_size(t); /* memory type one longer: NULLTERM keeps n chars + NUL */
        char *v = n > 0 && n <= NL_H5_MAX_ATTR_STR ? calloc(n + 1, 1) : NULL;
        if (n > NL_H5_MAX_ATTR_STR) snprintf(why, nwhy, "is a string of %zu bytes (more than %d)", n, NL_H5_MAX_ATTR_STR);
        mt = v ? H5Tcopy(t) : -1;
        if (mt >= 0 && H5Tset_size(mt, n + 1) >= 0 && H5Tset_strpad(mt, H5T_STR_NULLTERM) >= 0 && H5Aread(a, mt, v) >= 0) {
            *out = v;
            v = NULL;
            rc = 0;
        }
        free(v);
    }
    if (mt >= 0) H5Tclose(mt);
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

static int read_attr_str(hid_t obj, const char *name, char **out, char *why, size_t nwhy) {
    return read_attr_str_h(NULL, obj, name, out, why, nwhy);
}

/* Reads an integer attribute of at most max_n elements (scalar or 1-D). Returns the
 * element count, -1 when it is missing or not integer, -2 when it holds more than max_n. */
static int64_t read_attr_ints(hid_t obj, const char *name, int64_t max_n, int64_t **out) {
    *out = NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int64_t n = -1;
    if (t >= 0 && s >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_ndims(s) <= 1) {
        hssize_t k = H5Sget_simple_extent_npoints(s);
        if (k > max_n) {
            n = -2;
        } else {
            int64_t *v = k >= 0 ? malloc(sizeof(int64_t) * (size_t)(k > 0 ? k : 1)) : NULL;
            if (v && H5Aread(a, H5T_NATIVE_INT64, v) >= 0) {
                *out = v;
                v = NULL;
                n = k;
            }
            free(v);
        }
    }
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return n;
}

static int read_attr_int(hid_t obj, const char *name, int64_t *v) {
    int64_t *p;
    int64_t n = read_attr_ints(obj, name, 1, &p);
    if (n != 1) {
        free(p);
        return -1;
    }
    *v = p[0];
    free(p);
    return 0;
}

/* Rank and dims of a dataset; -1 when it cannot be opened. */
static int ds_shape(hid_t ds, hsize_t dims[2]) {
    hid_t s = H5Dget_space(ds);
    if (s < 0) return -1;
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd >= 1 && nd <= 2) H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    return nd;
}

#define CORRUPT(...) do { st = nl_errorf(ctx, NL_EFORMAT, __VA_ARGS__); goto fail; } while (0)

/* Opens a 1-D dataset of class cls and returns it with its length, or fails. */
static hid_t open_1d(hid_t file, const char *name, H5T_class_t cls, hsize_t *n) {
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hsize_t dims[2];
    hid_t t = H5Dget_type(ds);
    int ok = t >= 0 && H5Tget_class(t) == cls && ds_shape(ds, dims) == 1;
    if (t >= 0) H5Tclose(t);
    if (!ok) {
        H5Dclose(ds);
        return -1;
    }
    *n = dims[0];
    return ds;
}

/* 0 when the file stores the data ds declares, else -1 with why. A chunked dataset reads
 * unallocated chunks as fill values and a contiguous one never written reads as zeros, so a
 * small file could declare terabytes; every size the reader allocates from or hands to the
 * analyses is therefore bounded by the bytes actually stored: at least the declared bytes
 * without a filter, at least 1/NL_H5_MAX_FILTER_RATIO of them with one, and never more
 * than the file's size. What libhdf5 allocates when it reads is bounded the same way: a
 * chunk (read whole, or made of fill values when missing) holds at most the bytes stored
 * (×NL_H5_MAX_FILTER_RATIO when filtered: a deflate stream inflates at most ~1032×), and
 * the filters are those of the writer and h5py's defaults (deflate once, shuffle,
 * fletcher32): others (scale-offset, n-bit, szip, plug-ins) are refused, as their output
 * size is not bounded by their input. Data kept in external raw files or virtual datasets
 * is refused (it is not in this file). */
static int ds_stored(hid_t ds, char *why, size_t nwhy) {
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds), file = H5Iget_file_id(ds);
    int rc = -1;
    snprintf(why, nwhy, "cannot be inspected");
    hsize_t fsize = 0;
    if (t >= 0 && sp >= 0 && dcpl >= 0 && file >= 0 && H5Fget_filesize(file, &fsize) >= 0) {
        hssize_t npts = H5Sget_simple_extent_npoints(sp);
        size_t el = H5Tget_size(t);
        H5D_layout_t lay = H5Pget_layout(dcpl);
        int nfilt = lay == H5D_CHUNKED ? H5Pget_nfilters(dcpl) : 0, ndeflate = 0, badf = -1;
        for (int i = 0; i < nfilt; i++) {
            unsigned flags = 0, cfg = 0;
            size_t ncd = 0;
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, NULL, 0, NULL, &cfg);
            if (id == H5Z_FILTER_DEFLATE) ndeflate++;
            if ((id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32) || ndeflate > 1) {
                badf = (int)id;
                break;
            }
        }
        hsize_t ch[H5S_MAX_RANK];
        int crank = lay == H5D_CHUNKED ? H5Pget_chunk(dcpl, H5S_MAX_RANK, ch) : 0;
        unsigned long long need = 0, have = H5Dget_storage_size(ds), cbytes = el, lim;
        for (int i = 0; i < crank; i++)
            if (__builtin_mul_overflow(cbytes, (unsigned long long)ch[i], &cbytes)) cbytes = ULLONG_MAX;
        if (npts < 0 || el == 0 || nfilt < 0 || crank < 0) {
            /* why stays "cannot be inspected" */
        } else if ((lay != H5D_COMPACT && lay != H5D_CONTIGUOUS && lay != H5D_CHUNKED) || H5Pget_external_count(dcpl) != 0) {
            snprintf(why, nwhy, "keeps its data outside the file (external or virtual storage)");
        } else if (badf != -1) {
            snprintf(why, nwhy, "uses filter %d%s (neuronlab reads deflate, shuffle and fletcher32, deflate once)", badf,
                     badf == H5Z_FILTER_DEFLATE ? " twice" : "");
        } else if (__builtin_mul_overflow((unsigned long long)npts, (unsigned long long)el, &need)) {
            snprintf(why, nwhy, "declares more than 2^64 bytes");
        } else if (have > (unsigned long long)fsize) {
            snprintf(why, nwhy, "claims %llu stored bytes but the file has %llu", have, (unsigned long long)fsize);
        } else if (nfilt == 0 ? have < need : have * (unsigned long long)NL_H5_MAX_FILTER_RATIO < need) {
            snprintf(why, nwhy, "declares %llu bytes but the file stores %llu of them", need, have);
        } else if (need > 0 && lay == H5D_CHUNKED &&
                   cbytes > (lim = nfilt == 0 ? have : have * (unsigned long long)NL_H5_MAX_FILTER_RATIO)) {
            snprintf(why, nwhy, "has chunks of %llu bytes but the file stores %llu bytes of it", cbytes, have);
        } else {
            rc = 0;
        }
    }
    if (file >= 0) H5Fclose(file);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* Collects the decimal group names under /layers ("0", "1", … no leading zeros). */
typedef struct {
    int *slot;  /* (L) set to 0 for each layer found */
    int L;
    long long bad; /* first decimal name ≥ L, or -1 */
} layer_scan;

static herr_t layer_scan_cb(hid_t g, const char *name, const H5L_info_t *info, void *p) {
    layer_scan *ls = p;
    (void)g, (void)info;
    if (!name[0] || (name[0] == '0' && name[1]) || strspn(name, "0123456789") != strlen(name)) return 0;
    if (strlen(name) > 9 || atoll(name) >= ls->L) {
        if (ls->bad < 0) ls->bad = strlen(name) > 18 ? LLONG_MAX : atoll(name);
        return 0;
    }
    ls->slot[atoi(name)] = 0;
    return 0;
}

/* Reopens a chunked dataset with a chunk cache that holds a few of its chunks, so row
 * reads of filtered data do not decompress one chunk per call. */
static hid_t reopen_cached(hid_t file, const char *name, hid_t ds) {
    hid_t dcpl = H5Dget_create_plist(ds), t = H5Dget_type(ds);
    hsize_t ch[2] = {0, 0};
    size_t bytes = 0;
    if (dcpl >= 0 && t >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, ch) == 2)
        bytes = (size_t)ch[0] * (size_t)ch[1] * H5Tget_size(t);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (t >= 0) H5Tclose(t);
    if (bytes <= (1 << 19)) return ds;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0) return ds;
    H5Pset_chunk_cache(dapl, 521, 4 * bytes, 1.0);
    hid_t d2 = H5Dopen2(file, name, dapl);
    H5Pclose(dapl);
    if (d2 < 0) return ds;
    H5Dclose(ds);
    return d2;
}

nl_status nl_h5_reader_open(nl_ctx *ctx, const char *path, nl_h5_reader **out) {
    NL_ASSERT(path && out);
    *out = NULL;
    h5_quiet();
    char m[512];
    struct stat sb;
    if (stat(path, &sb) != 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(EISDIR));
    if (access(path, R_OK) != 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    htri_t is = H5Fis_hdf5(path);
    if (is == 0) return nl_errorf(ctx, NL_EFORMAT, "'%s' is not an HDF5 file", path);
    if (is < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, h5_err(m, sizeof m));

    nl_status st = NL_OK;
    nl_h5_reader *r = calloc(1, sizeof *r);
    if (!r) return nl_errorf(ctx, NL_ENOMEM, "cannot open '%s': out of memory", path);
    r->file = r->half = -1;
    r->path = strdup(path);
    /* Version-1 object headers are checked before libhdf5 decodes them (oh_check): the root
     * group's now, every other object of the schema before it is opened. */
    r->oh = calloc(1, sizeof *r->oh);
    if (!r->oh) CORRUPT("cannot open '%s': out of memory", path);
    r->oh->fd = -1;
    r->oh->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->oh->fd < 0) {
        st = nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
        goto fail;
    }
    {
        uint64_t root = 0;
        int fd = r->oh->fd, k = oh_open(r->oh, fd, (uint64_t)sb.st_size, &root, m, sizeof m);
        r->oh->fd = fd;
        if (k < 0) CORRUPT("'%s' is corrupt: it %s", path, m);
        if (k == 0 && oh_check(r->oh, root, m, sizeof m) != 0) CORRUPT("'%s' is corrupt: its root group %s", path, m);
        if (k != 0) r->oh->sa = 0;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) {
        H5Pset_file_locking(fapl, 1, 1);
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (r->file < 0) {
        st = nl_errorf(ctx, NL_EIO, "cannot open '%s': %s (truncated, corrupt, or still being written?)", path,
                       h5_err(m, sizeof m));
        goto fail;
    }
    hid_t f = r->file;
    nl_h5_info *in = &r->info;
    /* The heap reader of variable-length strings; when it cannot be set up, each string
     * read tries again and says why. */
    if ((r->heap = malloc(sizeof *r->heap)) && vlh_open(r->heap, f, m, sizeof m) != 0) {
        free(r->heap);
        r->heap = NULL;
    }
    nl_h5_meta *me = &in->meta;

    /* Format and version first: nothing else is meaningful without them. */
    char *fmt = NULL;
    if (!has_attr(f, "format")) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab activation file (format attribute missing)", path);
        goto fail;
    }
    if (read_attr_str_h(r->heap, f, "format", &fmt, m, sizeof m) != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab activation file (format attribute %s)", path, m);
        goto fail;
    }
    if (strcmp(fmt, NL_H5_FORMAT) != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab activation file (format is '%s', expected '%s')", path, fmt,
                       NL_H5_FORMAT);
        free(fmt);
        goto fail;
    }
    free(fmt);
    int64_t v;
    if (read_attr_int(f, "version", &v) != 0) CORRUPT("'%s' is corrupt: integer attribute 'version' missing", path);
    if (v != NL_H5_VERSION) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED,
                       "'%s': activation file version %lld is not supported (this neuronlab reads version %d)", path,
                       (long long)v, NL_H5_VERSION);
        goto fail;
    }
    in->version = (int)v;

    const char *snames[8] = {"model", "arch", "ffn_kind", "act_fn", "dtype", "dataset", "created_by", "compute"};
    for (int i = 0; i < 8; i++) {
        if (!has_attr(f, snames[i])) {
            /* descriptive; files converted by other tools (or older neuronlab: compute) may lack it */
            r->strs[i] = strdup(i == 7 ? "f32" : "");
        } else if (read_attr_str_h(r->heap, f, snames[i], &r->strs[i], m, sizeof m) != 0) {
            CORRUPT("'%s' is corrupt: attribute '%s' %s", path, snames[i], m);
        }
        if (!r->strs[i]) CORRUPT("cannot open '%s': out of memory", path);
    }
    me->model = r->strs[0];
    me->arch = r->strs[1];
    me->ffn_kind = r->strs[2];
    me->act_fn = r->strs[3];
    me->dataset = r->strs[5];
    me->created_by = r->strs[6];
    me->compute = r->strs[7];
    const char *inames[3] = {"n_layers", "d_model", "d_ff"};
    int *ivals[3] = {&me->n_layers, &me->d_model, &me->d_ff};
    for (int i = 0; i < 3; i++) {
        if (read_attr_int(f, inames[i], &v) != 0) CORRUPT("'%s' is corrupt: integer attribute '%s' missing", path, inames[i]);
        if (v <= 0 || v > (1 << 30)) CORRUPT("'%s' is corrupt: attribute %s = %lld", path, inames[i], (long long)v);
        if (i == 0 && v > NL_H5_MAX_LAYERS)
            CORRUPT("'%s' is corrupt: attribute n_layers = %lld (more than %d)", path, (long long)v, NL_H5_MAX_LAYERS);
        *ivals[i] = (int)v;
    }
    in->complete = 1; /* files written by other tools carry no such flag */
    if (has_attr(f, "complete")) {
        if (read_attr_int(f, "complete", &v) != 0) CORRUPT("'%s' is corrupt: attribute 'complete' is not an integer", path);
        in->complete = v != 0;
    }
    int L = me->n_layers, F = me->d_ff;

#define RCHECK(name)                                                                          \
    do {                                                                                      \
        if (r_check(r->oh, f, name, m, sizeof m) != 0) CORRUPT("'%s' is corrupt: %s", path, m); \
    } while (0)
    RCHECK("layers");
    RCHECK("pooled");
    /* Recorded layers: the "layers" attribute, else every /layers/{l} present. */
    r->slot = malloc(sizeof(int) * (size_t)L);
    r->layers = malloc(sizeof(int) * (size_t)L);
    if (!r->slot || !r->layers) CORRUPT("cannot open '%s': out of memory", path);
    for (int l = 0; l < L; l++) r->slot[l] = -1;
    int n_rec = 0;
    if (has_attr(f, "layers")) {
        int64_t *lv = NULL;
        int64_t n = read_attr_ints(f, "layers", L, &lv);
        if (n == -2) CORRUPT("'%s' is corrupt: attribute 'layers' lists more layers than n_layers = %d", path, L);
        if (n < 0) CORRUPT("'%s' is corrupt: attribute 'layers' is not an integer list", path);
        for (int64_t i = 0; i < n; i++) {
            long long li = (long long)lv[i];
            if (li < 0 || li >= L || r->slot[li] >= 0) {
                free(lv);
                if (li < 0 || li >= L)
                    CORRUPT("'%s' is corrupt: attribute 'layers' lists layer %lld but n_layers is %d", path, li, L);
                CORRUPT("'%s' is corrupt: attribute 'layers' lists layer %lld twice", path, li);
            }
            r->slot[li] = 0;
        }
        free(lv);
    } else if (has_link(f, "layers")) {
        /* Every /layers/{l} group present: iterate the group (its size is what the file
         * holds) rather than probing 0 … n_layers-1. */
        layer_scan ls = {r->slot, L, -1};
        hid_t g = H5Gopen2(f, "layers", H5P_DEFAULT);
        herr_t e = g >= 0 ? H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, layer_scan_cb, &ls) : -1;
        if (g >= 0) H5Gclose(g);
        if (e < 0) CORRUPT("'%s' is corrupt: /layers is not a readable group", path);
        if (ls.bad >= 0) CORRUPT("'%s' is corrupt: group /layers/%lld exists but n_layers is %d", path, ls.bad, L);
    }
    for (int l = 0; l < L; l++)
        if (r->slot[l] >= 0) {
            r->slot[l] = n_rec;
            r->layers[n_rec++] = l;
        }
    me->layers = r->layers;
    me->n_rec = n_rec;

    /* Tokens and documents. */
    hsize_t N, D1, nl, np;
    RCHECK("tokens");
    hid_t ds = open_1d(f, "tokens", H5T_INTEGER, &N);
    if (ds < 0) CORRUPT("'%s' is corrupt: 1-D integer dataset /tokens missing", path);
    if (ds_stored(ds, m, sizeof m) != 0) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /tokens %s", path, m);
    }
    r->tokens = malloc(sizeof(int32_t) * (N ? N : 1));
    herr_t e = r->tokens ? H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, r->tokens) : -1;
    H5Dclose(ds);
    if (e < 0) CORRUPT("'%s' is corrupt: cannot read /tokens: %s", path, h5_err(m, sizeof m));
    in->n_tokens = (int64_t)N;
    in->tokens = r->tokens;

    RCHECK("doc_offsets");
    ds = open_1d(f, "doc_offsets", H5T_INTEGER, &D1);
    if (ds < 0) CORRUPT("'%s' is corrupt: 1-D integer dataset /doc_offsets missing", path);
    if (ds_stored(ds, m, sizeof m) != 0) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /doc_offsets %s", path, m);
    }
    r->offsets = malloc(sizeof(int64_t) * (D1 ? D1 : 1));
    e = r->offsets ? H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, r->offsets) : -1;
    H5Dclose(ds);
    if (e < 0) CORRUPT("'%s' is corrupt: cannot read /doc_offsets: %s", path, h5_err(m, sizeof m));
    if (D1 < 1) CORRUPT("'%s' is corrupt: /doc_offsets is empty (it holds Dc+1 entries)", path);
    int64_t D = (int64_t)D1 - 1;
    in->doc_offsets = r->offsets;
    if (r->offsets[0] != 0) CORRUPT("'%s' is corrupt: doc_offsets[0] = %lld, expected 0", path, (long long)r->offsets[0]);
    for (int64_t d = 0; d < D; d++)
        if (r->offsets[d + 1] < r->offsets[d])
            CORRUPT("'%s' is corrupt: doc_offsets decreases at document %lld", path, (long long)d);
    /* A cut-short file (complete = 0: killed between commits, or a partly flushed commit) may
     * hold rows past its last document; they are ignored. A complete file is exact. */
    const int cut = !in->complete;
    if (cut ? r->offsets[D] > (int64_t)N : r->offsets[D] != (int64_t)N)
        CORRUPT("'%s' is corrupt: doc_offsets[-1] = %lld but /tokens has %lld entries", path, (long long)r->offsets[D],
                (long long)N);
    N = (hsize_t)r->offsets[D];
    in->n_tokens = (int64_t)N;

    RCHECK("doc_labels");
    ds = open_1d(f, "doc_labels", H5T_STRING, &nl);
    if (ds < 0) CORRUPT("'%s' is corrupt: 1-D string dataset /doc_labels missing", path);
    if (cut ? (int64_t)nl < D : (int64_t)nl != D) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /doc_labels has %lld entries but there are %lld documents", path, (long long)nl,
                (long long)D);
    }
    if (ds_stored(ds, m, sizeof m) != 0) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /doc_labels %s", path, m);
    }
    r->labels = calloc((size_t)(D ? D : 1), sizeof(char *));
    in->n_docs = D; /* from here nl_h5_reader_close frees labels[0..D) */
    int lab_why = 0; /* m says why the labels cannot be read */
    {
        hid_t ft = H5Dget_type(ds);
        int vl = ft >= 0 && H5Tis_variable_str(ft) > 0;
        size_t fsz = ft >= 0 ? H5Tget_size(ft) : 0;
        hid_t mt = ft >= 0 ? H5Tcopy(ft) : -1; /* same character set: HDF5 does not convert ASCII <-> UTF-8 */
        hsize_t hd = (hsize_t)D, zero = 0;
        hid_t lfs = H5Dget_space(ds), lms = H5Screate_simple(1, &hd, NULL); /* the first D labels */
        e = (!r->labels || mt < 0 || ft < 0 || lfs < 0 || lms < 0) ? -1 : 0;
        if (e >= 0) e = D > 0 ? H5Sselect_hyperslab(lfs, H5S_SELECT_SET, &zero, NULL, &hd, NULL) : H5Sselect_none(lfs);
        if (e >= 0 && vl) {
            /* Raw heap IDs, resolved by vlh_get: libhdf5 never reads the global heap. */
            vl_heap h, *hp = r->heap;
            e = hp || vlh_open(hp = &h, ds, m, sizeof m) == 0 ? 0 : -1;
            if (e >= 0 && vls_read(hp, ds, lms, lfs, (size_t)D, r->labels, m, sizeof m) != 0) e = -1;
            if (e < 0) lab_why = 1;
            if (hp == &h) vlh_close(&h);
        } else if (e >= 0) {
            char *tmp = calloc((size_t)(D ? D : 1), fsz + 1); /* NULLTERM: fsz chars + NUL */
            e = (tmp && H5Tset_size(mt, fsz + 1) >= 0 && H5Tset_strpad(mt, H5T_STR_NULLTERM) >= 0)
                    ? H5Dread(ds, mt, lms, lfs, H5P_DEFAULT, tmp)
                    : -1;
            for (int64_t d = 0; e >= 0 && d < D; d++) r->labels[d] = strndup(tmp + (size_t)d * (fsz + 1), fsz);
            free(tmp);
        }
        if (lms >= 0) H5Sclose(lms);
        if (lfs >= 0) H5Sclose(lfs);
        if (mt >= 0) H5Tclose(mt);
        if (ft >= 0) H5Tclose(ft);
    }
    H5Dclose(ds);
    if (e < 0 && lab_why) CORRUPT("'%s' is corrupt: /doc_labels %s", path, m);
    if (e < 0) CORRUPT("'%s' is corrupt: cannot read /doc_labels: %s", path, h5_err(m, sizeof m));
    for (int64_t d = 0; d < D; d++)
        if (!r->labels[d]) CORRUPT("cannot open '%s': out of memory", path);
    in->doc_labels = (const char *const *)r->labels;

    RCHECK("prompt_len");
    ds = open_1d(f, "prompt_len", H5T_INTEGER, &np);
    if (ds < 0) CORRUPT("'%s' is corrupt: 1-D integer dataset /prompt_len missing", path);
    if (cut ? (int64_t)np < D : (int64_t)np != D) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /prompt_len has %lld entries but there are %lld documents", path, (long long)np, (long long)D);
    }
    if (ds_stored(ds, m, sizeof m) != 0) {
        H5Dclose(ds);
        CORRUPT("'%s' is corrupt: /prompt_len %s", path, m);
    }
    r->plen = malloc(sizeof(int32_t) * (size_t)(np ? np : 1));
    e = r->plen ? H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, r->plen) : -1;
    H5Dclose(ds);
    if (e < 0) CORRUPT("'%s' is corrupt: cannot read /prompt_len: %s", path, h5_err(m, sizeof m));
    for (int64_t d = 0; d < D; d++)
        if (r->plen[d] < 0 || r->plen[d] > r->offsets[d + 1] - r->offsets[d])
            CORRUPT("'%s' is corrupt: prompt_len[%lld] = %d but the document has %lld tokens", path, (long long)d,
                    r->plen[d], (long long)(r->offsets[d + 1] - r->offsets[d]));
    in->prompt_len = r->plen;

    /* Per-layer datasets. */
    r->acts = malloc(sizeof(hid_t) * (size_t)(n_rec ? n_rec : 1));
    r->pool = malloc(sizeof(hid_t) * (size_t)(n_rec ? n_rec : 1));
    if (!r->acts || !r->pool) CORRUPT("cannot open '%s': out of memory", path);
    for (int i = 0; i < n_rec; i++) r->acts[i] = r->pool[i] = -1;
    me->pooled = has_link(f, "pooled");
    int n_acts = 0, n_f16 = 0;
    for (int i = 0; i < n_rec; i++) {
        int l = r->layers[i];
        char name[64];
        hsize_t dims[2];
        snprintf(name, sizeof name, "layers/%d", l);
        if (!has_link(f, "layers") || !has_link(f, name)) CORRUPT("'%s' is corrupt: group /layers/%d missing", path, l);
        snprintf(name, sizeof name, "layers/%d/ffn_act", l);
        RCHECK(name);
        if (has_link(f, name)) {
            hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
            hid_t t = d >= 0 ? H5Dget_type(d) : -1;
            int okc = t >= 0 && H5Tget_class(t) == H5T_FLOAT && (H5Tget_size(t) == 2 || H5Tget_size(t) == 4);
            if (okc && H5Tget_size(t) == 2) n_f16++;
            if (t >= 0) H5Tclose(t);
            if (d >= 0) r->acts[i] = reopen_cached(f, name, d);
            if (!okc || ds_shape(r->acts[i], dims) != 2)
                CORRUPT("'%s' is corrupt: /%s is not a 2-D float16/float32 dataset", path, name);
            if ((cut ? dims[0] < N : dims[0] != N) || dims[1] != (hsize_t)F)
                CORRUPT("'%s' is corrupt: /%s has shape (%llu, %llu), expected (%llu, %d) (tokens, d_ff)", path, name,
                        (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)N, F);
            if (ds_stored(r->acts[i], m, sizeof m) != 0) CORRUPT("'%s' is corrupt: /%s %s", path, name, m);
            n_acts++;
        }
        snprintf(name, sizeof name, "layers/%d/w_out_norm", l);
        RCHECK(name);
        if (has_link(f, name)) {
            hid_t d = open_1d(f, name, H5T_FLOAT, &nl);
            int stored = d >= 0 && nl == (hsize_t)F && ds_stored(d, m, sizeof m) == 0;
            if (d >= 0) H5Dclose(d);
            if (d < 0 || nl != (hsize_t)F) CORRUPT("'%s' is corrupt: /%s is not a float dataset of d_ff = %d entries", path, name, F);
            if (!stored) CORRUPT("'%s' is corrupt: /%s %s", path, name, m);
        }
        if (me->pooled) {
            snprintf(name, sizeof name, "pooled/%d/mean_abs", l);
            RCHECK(name);
            if (!has_link(f, name)) CORRUPT("'%s' is corrupt: /%s missing", path, name);
            hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
            hid_t t = d >= 0 ? H5Dget_type(d) : -1;
            int okc = t >= 0 && H5Tget_class(t) == H5T_FLOAT;
            if (t >= 0) H5Tclose(t);
            if (d >= 0) r->pool[i] = reopen_cached(f, name, d);
            if (!okc || ds_shape(r->pool[i], dims) != 2 || (cut ? dims[0] < (hsize_t)D : dims[0] != (hsize_t)D) ||
                dims[1] != (hsize_t)F)
                CORRUPT("'%s' is corrupt: /%s is not a float dataset of shape (%lld, %d) (documents, d_ff)", path, name,
                        (long long)D, F);
            if (ds_stored(r->pool[i], m, sizeof m) != 0) CORRUPT("'%s' is corrupt: /%s %s", path, name, m);
        }
    }
    if (n_acts != 0 && n_acts != n_rec) CORRUPT("'%s' is corrupt: only %d of %d recorded layers have ffn_act", path, n_acts, n_rec);
    if (n_f16 != 0 && n_f16 != n_acts) CORRUPT("'%s' is corrupt: ffn_act dtypes differ between layers", path);
    me->no_acts = n_rec > 0 && n_acts == 0;
    r->acts_f16 = n_f16 > 0;
    me->dtype = r->acts_f16 ? NL_H5_F16 : NL_H5_F32;
    const char *dts = r->strs[4];
    if (n_acts > 0 && dts[0] && strcmp(dts, nl_h5_dtype_name(me->dtype)) != 0)
        CORRUPT("'%s' is corrupt: attribute dtype = '%s' but ffn_act is stored as %s", path, dts, nl_h5_dtype_name(me->dtype));
    if (n_acts == 0 && !strcmp(dts, "float16")) me->dtype = NL_H5_F16; /* pooled-only: the attribute tells */
    r->half = h5_half_type();
    if (r->half < 0) CORRUPT("cannot open '%s': %s", path, h5_err(m, sizeof m));
#undef RCHECK
    *out = r;
    return NL_OK;
fail:
    nl_h5_reader_close(r);
    return st;
}

const nl_h5_info *nl_h5_reader_info(const nl_h5_reader *r) { return &r->info; }

int nl_h5_reader_has_layer(const nl_h5_reader *r, int layer) {
    return layer >= 0 && layer < r->info.meta.n_layers && r->slot[layer] >= 0;
}

/* Reads rows [row0, row0+n) of a 2-D (rows, F) dataset into out as f32. */
static nl_status read_rows(nl_h5_reader *r, nl_ctx *ctx, hid_t ds, int f16, const char *what, int layer, int64_t row0,
                           int n, int64_t rows, float *out) {
    if (n < 0 || row0 < 0 || row0 + n > rows)
        return nl_errorf(ctx, NL_EINVAL, "cannot read '%s': rows [%lld, %lld) of layer %d %s are outside 0..%lld", r->path,
                         (long long)row0, (long long)row0 + n, layer, what, (long long)rows);
    if (n == 0) return NL_OK;
    hsize_t F = (hsize_t)r->info.meta.d_ff;
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, F};
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(2, count, NULL);
    herr_t e = (fs < 0 || ms < 0) ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    size_t cnt = (size_t)n * F;
    if (e >= 0 && f16) {
        if (r->scratch_n < cnt) {
            void *p = realloc(r->scratch, cnt * 2);
            if (!p) e = -1;
            else {
                r->scratch = p;
                r->scratch_n = cnt;
            }
        }
        if (e >= 0) e = H5Dread(ds, r->half, ms, fs, H5P_DEFAULT, r->scratch);
        if (e >= 0) {
            f16_to_f32(out, r->scratch, cnt);
        }
    } else if (e >= 0) {
        e = H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out);
    }
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (e < 0) {
        char m[512];
        return nl_errorf(ctx, NL_EIO, "cannot read '%s': layer %d %s: %s", r->path, layer, what, h5_err(m, sizeof m));
    }
    return NL_OK;
}

static nl_status r_layer(nl_h5_reader *r, nl_ctx *ctx, int layer, int *slot) {
    if (!nl_h5_reader_has_layer(r, layer))
        return nl_errorf(ctx, NL_EINVAL, "cannot read '%s': layer %d is not recorded in it", r->path, layer);
    *slot = r->slot[layer];
    return NL_OK;
}

nl_status nl_h5_reader_read_acts(nl_h5_reader *r, nl_ctx *ctx, int layer, int64_t row0, int n, float *out) {
    int s = -1;
    nl_status st = r_layer(r, ctx, layer, &s);
    if (st != NL_OK) return st;
    if (r->acts[s] < 0)
        return nl_errorf(ctx, NL_EINVAL, "cannot read '%s': it holds no activations (pooled-only file)", r->path);
    return read_rows(r, ctx, r->acts[s], r->acts_f16, "ffn_act", layer, row0, n, r->info.n_tokens, out);
}

nl_status nl_h5_reader_read_pooled(nl_h5_reader *r, nl_ctx *ctx, int layer, int64_t doc0, int n, float *out) {
    int s = -1;
    nl_status st = r_layer(r, ctx, layer, &s);
    if (st != NL_OK) return st;
    if (r->pool[s] < 0) return nl_errorf(ctx, NL_EINVAL, "cannot read '%s': it holds no pooled activations", r->path);
    st = read_rows(r, ctx, r->pool[s], 0, "mean_abs", layer, doc0, n, r->info.n_docs, out);
    if (st != NL_OK) return st;
    /* Mean |a| is finite and ≥ 0; the analyses rank and store these values as they are. */
    size_t F = (size_t)r->info.meta.d_ff;
    for (size_t i = 0; i < (size_t)n * F; i++)
        if (!(out[i] >= 0) || !isfinite(out[i]))
            return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d mean_abs of document %lld holds %s", r->path, layer,
                             (long long)(doc0 + (int64_t)(i / F)), isfinite(out[i]) ? "a negative value" : "a non-finite value");
    return NL_OK;
}

nl_status nl_h5_reader_read_w_out_norm(nl_h5_reader *r, nl_ctx *ctx, int layer, float *out) {
    int s = -1;
    nl_status st = r_layer(r, ctx, layer, &s);
    if (st != NL_OK) return st;
    char name[64], m[512];
    snprintf(name, sizeof name, "layers/%d/w_out_norm", layer);
    if (!has_link(r->file, name))
        return nl_errorf(ctx, NL_EFORMAT, "cannot read '%s': /%s is missing (recording interrupted?)", r->path, name);
    hid_t ds = H5Dopen2(r->file, name, H5P_DEFAULT);
    herr_t e = ds < 0 ? -1 : H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    if (ds >= 0) H5Dclose(ds);
    if (e < 0) return nl_errorf(ctx, NL_EIO, "cannot read '%s': /%s: %s", r->path, name, h5_err(m, sizeof m));
    /* A norm is finite and ≥ 0; a NaN would otherwise surface much later (as a NULL in a
     * results table). */
    for (int i = 0; i < r->info.meta.d_ff; i++)
        if (!(out[i] >= 0) || !isfinite(out[i]))
            return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d w_out_norm holds %s", r->path, layer,
                             isfinite(out[i]) ? "a negative value" : "a non-finite value");
    return NL_OK;
}

/* ------------------------------------------------------------------ resume */

/* Opens an existing appendable dataset into a: its extent is the rows on disk. */
static int app_open3(nl_app *a, hid_t loc, const char *name, hid_t mtype, size_t elsize, int rank, hsize_t d1, hsize_t d2) {
    memset(a, 0, sizeof *a);
    a->ds = -1;
    a->mtype = mtype;
    a->rank = rank;
    a->d1 = rank >= 2 ? d1 : 1;
    a->d2 = rank == 3 ? d2 : 1;
    a->cols = a->d1 * a->d2;
    a->row_bytes = elsize * a->cols;
    a->vlen = H5Tis_variable_str(mtype) > 0;
    hid_t dapl = app_dapl();
    a->ds = dapl >= 0 ? H5Dopen2(loc, name, dapl) : -1;
    if (dapl >= 0) H5Pclose(dapl);
    if (a->ds < 0) return -1;
    hsize_t dims[3] = {0, 0, 0}, ch[3] = {0, 0, 0};
    hid_t dcpl = H5Dget_create_plist(a->ds), sp = H5Dget_space(a->ds);
    int ok = dcpl >= 0 && sp >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 3, ch) == rank && ch[0] > 0 &&
             H5Sget_simple_extent_ndims(sp) == rank && H5Sget_simple_extent_dims(sp, dims, NULL) == rank &&
             (rank == 1 || dims[1] == a->d1) && (rank < 3 || dims[2] == a->d2);
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (!ok) return -1;
    a->disk = dims[0];
    a->chunk = ch[0];
    a->buf = malloc(a->chunk * a->row_bytes);
    return a->buf ? 0 : -1;
}

static int app_open(nl_app *a, hid_t loc, const char *name, hid_t mtype, size_t elsize, int rank, hsize_t cols) {
    return app_open3(a, loc, name, mtype, elsize, rank, cols, 1);
}

/* Compares a string attribute with what the resumed run would write. */
static nl_status resume_str(nl_ctx *ctx, hid_t f, const char *path, const char *name, const char *want) {
    char *v = NULL, why[128];
    if (!has_attr(f, name)) v = strdup("");
    else if (read_attr_str(f, name, &v, why, sizeof why) != 0)
        return nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': attribute '%s' %s", path, name, why);
    if (!v) return nl_errorf(ctx, NL_ENOMEM, "cannot resume '%s': out of memory", path);
    nl_status st = NL_OK;
    if (strcmp(v, want ? want : "") != 0)
        st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': its %s is '%s' but this run's is '%s'", path, name, v, want ? want : "");
    free(v);
    return st;
}

static nl_status resume_int(nl_ctx *ctx, hid_t f, const char *path, const char *name, int want) {
    int64_t v;
    if (read_attr_int(f, name, &v) != 0) return nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': integer attribute '%s' missing", path, name);
    if (v != want)
        return nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': its %s is %lld but this run's is %d", path, name, (long long)v, want);
    return NL_OK;
}

nl_status nl_h5_writer_resume(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, nl_h5_writer **out) {
    NL_ASSERT(path && meta && out);
    *out = NULL;
    h5_quiet();
    nl_status st = check_meta(ctx, path, meta);
    if (st != NL_OK) return st;
    if (meta->n_attn > 0) return nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': attention probabilities (--attn) are not resumable", path);
    char m[512];
    struct stat sb;
    if (stat(path, &sb) != 0) return nl_errorf(ctx, NL_EIO, "cannot resume '%s': %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0) return nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': not an HDF5 file", path);
    nl_h5_writer *w;
    if ((st = writer_alloc(ctx, path, meta, "resume", &w)) != NL_OK) return st;
    const int n_rec = w->n_rec;
    int64_t *off = NULL, *lv = NULL;

    hid_t fapl = writer_fapl();
    w->file = fapl >= 0 ? H5Fopen(path, H5F_ACC_RDWR, fapl) : -1;
    if (fapl >= 0) H5Pclose(fapl);
    if (w->file < 0) {
        st = nl_errorf(ctx, NL_EIO, "cannot resume '%s': %s", path, h5_err(m, sizeof m));
        goto fail;
    }
    hid_t f = w->file;
#define S(x) ((x) ? (x) : "")
    if ((st = resume_str(ctx, f, path, "format", NL_H5_FORMAT)) != NL_OK) goto fail;
    if ((st = resume_int(ctx, f, path, "version", NL_H5_VERSION)) != NL_OK) goto fail;
    const char *sn[8] = {"model", "arch", "ffn_kind", "act_fn", "dtype", "dataset", "tokenizer", "dataset_checksum"};
    const char *sv[8] = {S(meta->model), S(meta->arch), meta->ffn_kind, S(meta->act_fn), nl_h5_dtype_name(meta->dtype),
                         S(meta->dataset), S(meta->tokenizer), S(meta->dataset_checksum)};
#undef S
    for (int i = 0; i < 8; i++)
        if ((st = resume_str(ctx, f, path, sn[i], sv[i])) != NL_OK) goto fail;
    /* files written before the attribute existed were computed in f32 */
    const char *want_compute = meta->compute ? meta->compute : "f32";
    if (has_attr(f, "compute") ? (st = resume_str(ctx, f, path, "compute", want_compute)) != NL_OK
                               : strcmp(want_compute, "f32") &&
                                     (st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': its compute is 'f32' but this run's is '%s'",
                                                     path, want_compute)) != NL_OK)
        goto fail;
    if ((st = resume_int(ctx, f, path, "n_layers", meta->n_layers)) != NL_OK ||
        (st = resume_int(ctx, f, path, "d_model", meta->d_model)) != NL_OK ||
        (st = resume_int(ctx, f, path, "d_ff", meta->d_ff)) != NL_OK)
        goto fail;
    int *lbuf = malloc(sizeof(int) * (size_t)(n_rec ? n_rec : 1));
    if (!lbuf) {
        st = nl_errorf(ctx, NL_ENOMEM, "cannot resume '%s': out of memory", path);
        goto fail;
    }
    for (int kd = 0; kd < 3; kd++) { /* dense "layers", "moe_layers", "moefied_layers" as this run would write them */
        static const char *an[3] = {"layers", "moe_layers", "moefied_layers"};
        const int n = w_layers_of(w, kd, lbuf);
        int64_t nl = 0;
        free(lv), lv = NULL;
        if (kd == 0 || has_attr(f, an[kd])) nl = read_attr_ints(f, an[kd], meta->n_layers, &lv);
        int same = nl == n;
        for (int i = 0; same && i < n; i++) same = lv[i] == lbuf[i];
        if (!same) {
            free(lbuf);
            st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': it records %lld layers (attribute '%s'), not this run's %d", path,
                           (long long)(nl < 0 ? 0 : nl), an[kd], n);
            goto fail;
        }
    }
    free(lbuf);
    if (w->n_moe && ((st = resume_int(ctx, f, path, "n_experts", w->moe_E)) != NL_OK ||
                     (st = resume_int(ctx, f, path, "experts_per_tok", w->moe_k)) != NL_OK ||
                     (st = resume_int(ctx, f, path, "d_expert", w->d_expert)) != NL_OK ||
                     (st = resume_int(ctx, f, path, "d_shared", w->d_shared)) != NL_OK))
        goto fail;
    if (w->n_moefied && (st = resume_int(ctx, f, path, "moe_k", w->moe_K)) != NL_OK) goto fail;
    if (has_link(f, "pooled") != w->pooled) {
        st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': it was recorded %s --pool, this run %s", path,
                       w->pooled ? "without" : "with", w->pooled ? "has it" : "has not");
        goto fail;
    }
    w->vstr = h5_vstr_type();
    if (w->dtype == NL_H5_F16) w->half = h5_half_type();
    if (w->vstr < 0 || (w->dtype == NL_H5_F16 && w->half < 0)) goto h5fail;
    if (app_open(&w->tokens, f, "tokens", H5T_NATIVE_INT32, 4, 1, 1) < 0 ||
        app_open(&w->offsets, f, "doc_offsets", H5T_NATIVE_INT64, 8, 1, 1) < 0 ||
        app_open(&w->labels, f, "doc_labels", w->vstr, sizeof(char *), 1, 1) < 0 ||
        app_open(&w->plen, f, "prompt_len", H5T_NATIVE_INT32, 4, 1, 1) < 0)
        goto h5fail;
    size_t el = w->dtype == NL_H5_F16 ? 2 : 4;
    /* Committed documents: the longest prefix every dataset holds whole. */
    hsize_t D1 = w->offsets.disk, minN = w->tokens.disk, minD = w->labels.disk < w->plen.disk ? w->labels.disk : w->plen.disk;
    for (int i = 0; i < n_rec; i++) {
        char name[64];
        const int moe = w->kind[i] == 1, no_acts = w->no_acts || moe;
        for (int j = 0; j < NL_MX; j++) {
            int rank;
            hsize_t d1, d2;
            hid_t ft, mt;
            size_t el2;
            if (!mx_shape(w, w->kind[i], j, &rank, &d1, &d2, &ft, &mt, &el2)) continue;
            snprintf(name, sizeof name, "layers/%d/%s", w->rec[i], mx_names[j]);
            nl_app *a = w_mx(w, i, j);
            if (app_open3(a, f, name, mt, el2, rank, d1, d2) < 0) goto h5fail;
            if (a->disk < minN) minN = a->disk;
        }
        snprintf(name, sizeof name, "layers/%d/ffn_act", w->rec[i]);
        if (has_link(f, name) == no_acts) {
            st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': /%s is %s", path, name, no_acts ? "present" : "missing");
            goto fail;
        }
        if (!no_acts) {
            if (app_open(&w->acts[i], f, name, w->dtype == NL_H5_F16 ? w->half : H5T_NATIVE_FLOAT, el, 2, (hsize_t)w->d_ff) < 0)
                goto h5fail;
            if (w->acts[i].disk < minN) minN = w->acts[i].disk;
        }
        for (int s = 0; s < NL_H5_N_STREAMS; s++) {
            int want = (w->streams >> s) & 1u;
            snprintf(name, sizeof name, "layers/%d/%s", w->rec[i], stream_names[s]);
            if (has_link(f, name) != want) {
                st = nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': /%s is %s (this run records --hook %s%s)", path, name,
                               want ? "missing" : "present", want ? "" : "without ", stream_names[s]);
                goto fail;
            }
            if (!want) continue;
            nl_app *a = w_stream(w, i, s);
            if (app_open(a, f, name, w->dtype == NL_H5_F16 ? w->half : H5T_NATIVE_FLOAT, el, 2, (hsize_t)w->d_model) < 0)
                goto h5fail;
            if (a->disk < minN) minN = a->disk;
        }
        if (w->pooled && !moe) {
            snprintf(name, sizeof name, "pooled/%d/mean_abs", w->rec[i]);
            if (app_open(&w->pool[i], f, name, H5T_NATIVE_FLOAT, 4, 2, (hsize_t)w->d_ff) < 0) goto h5fail;
            if (w->pool[i].disk < minD) minD = w->pool[i].disk;
        }
        snprintf(name, sizeof name, "layers/%d/w_out_norm", w->rec[i]);
        w->wnorm[i] = has_link(f, name);
    }
    if (D1 < 1) {
        st = nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': /doc_offsets is empty", path);
        goto fail;
    }
    if (ds_stored(w->offsets.ds, m, sizeof m) != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': /doc_offsets %s", path, m);
        goto fail;
    }
    off = malloc(sizeof(int64_t) * D1);
    if (!off || H5Dread(w->offsets.ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off) < 0) goto h5fail;
    hsize_t D = D1 - 1;
    if (D > minD) D = minD;
    if (off[0] != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': doc_offsets[0] = %lld, expected 0", path, (long long)off[0]);
        goto fail;
    }
    for (hsize_t d = 0; d < D; d++)
        if (off[d + 1] < off[d]) {
            st = nl_errorf(ctx, NL_EFORMAT, "cannot resume '%s': doc_offsets decreases at document %llu", path, (unsigned long long)d);
            goto fail;
        }
    while (D > 0 && (hsize_t)off[D] > minN) D--;
    hsize_t N = (hsize_t)off[D];
    free(off);
    off = NULL;
    /* doc_labels holds references to strings in HDF5's global heap, and HDF5 deletes the
     * string an element referred to before it overwrites the element. Past the last commit
     * the killed run may have written references to heap objects that never reached the
     * file (or that a new heap collection will reuse), so the last, partly committed chunk
     * is rebuilt: its committed labels are read back, the chunk is dropped (extent cut to
     * the chunk boundary) and they are written again into a fresh chunk. */
    int ok = 1;
    hsize_t c0 = D - D % w->labels.chunk;
    if (D > c0 && w->labels.disk < D) ok = 0;
    if (ok && D > c0) {
        hsize_t k = D - c0, start = c0;
        char **tmp = calloc(k, sizeof(char *));
        hid_t fs = H5Dget_space(w->labels.ds), ms = H5Screate_simple(1, &k, NULL);
        herr_t e = (!tmp || fs < 0 || ms < 0) ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &k, NULL);
        if (e >= 0) e = H5Dread(w->labels.ds, w->vstr, ms, fs, H5P_DEFAULT, tmp);
        char **buf = (char **)w->labels.buf;
        for (hsize_t j = 0; e >= 0 && j < k; j++)
            if (!(buf[j] = strdup(tmp[j] ? tmp[j] : ""))) e = -1;
        if (e >= 0 || tmp) {
            for (hsize_t j = 0; j < k; j++) H5free_memory(tmp[j]);
        }
        free(tmp);
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        hsize_t ext = c0;
        if (e >= 0) e = H5Dset_extent(w->labels.ds, &ext);
        if (e >= 0) {
            w->labels.disk = c0;
            w->labels.nbuf = k;
        } else {
            for (hsize_t j = 0; j < k; j++) free(buf[j]), buf[j] = NULL;
            ok = 0;
        }
    }
    ok = ok && app_truncate(&w->tokens, N) == 0 && app_truncate(&w->offsets, D + 1) == 0 &&
         app_truncate(&w->labels, D) == 0 && app_truncate(&w->plen, D) == 0;
    for (int i = 0; ok && i < n_rec; i++) {
        if (!w->no_acts && w->kind[i] != 1) ok = app_truncate(&w->acts[i], N) == 0;
        if (ok && w->pooled && w->kind[i] != 1) ok = app_truncate(&w->pool[i], D) == 0;
    }
    if (ok) ok = w_streams_each(w, (int64_t)N) == 0;
    hid_t a = ok ? H5Aopen(f, "complete", H5P_DEFAULT) : -1;
    int zero = 0;
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT, &zero) < 0) ok = 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) goto h5fail;
    w->n_docs = w->committed = (int64_t)D;
    w->doc_start = (int64_t)N;
    if (w_commit_raw(w, m, sizeof m) < 0) {
        st = nl_errorf(ctx, NL_EIO, "cannot resume '%s': %s", path, m);
        w->failed = 1;
        goto fail;
    }
    free(lv);
    *out = w;
    return NL_OK;
h5fail:
    st = nl_errorf(ctx, NL_EIO, "cannot resume '%s': %s", path, h5_err(m, sizeof m));
fail:
    free(off);
    free(lv);
    w->failed = 1; /* nothing of this attempt reaches the file */
    writer_free(w);
    return st;
}

#ifdef NL_MPI
#include "h5store_mpi.inc"
#endif
