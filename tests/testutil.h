/* testutil.h — helpers shared by the Criterion suites: closeness checks, fixture paths,
 * reading whole files. */
#ifndef NEURONLAB_TESTUTIL_H
#define NEURONLAB_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Max |a[i] - b[i]| over n floats. */
static inline double nl_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

/* Asserts every |a-b| ≤ tol, reporting the worst index. */
#define nl_check_close(a, b, n, tol)                                                         \
    do {                                                                                     \
        size_t nl_worst_ = 0;                                                                \
        double nl_wd_ = 0;                                                                   \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++) {                                        \
            double d_ = fabs((double)(a)[i_] - (double)(b)[i_]);                             \
            if (d_ != d_ || d_ > nl_wd_) { nl_wd_ = d_ != d_ ? INFINITY : d_; nl_worst_ = i_; } \
        }                                                                                    \
        cr_assert(nl_wd_ <= (tol), "max abs diff %g > %g at index %zu (%g vs %g)", nl_wd_,    \
                  (double)(tol), nl_worst_, (double)(a)[nl_worst_], (double)(b)[nl_worst_]); \
    } while (0)

/* ../shared/… resolved from the repository root (tests run from there). */
#define NL_SHARED "../shared"

/* max|a − b| / max|b| over one tensor (max|a − b| when b is all zero); INFINITY on a NaN. */
static inline double nl_rel_diff(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY;
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

static inline int nl_path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Skips the current test with a message when ../shared is absent. */
#define nl_need_shared()                                                                     \
    do {                                                                                     \
        if (!nl_path_exists(NL_SHARED "/models/stories260K/stories260K.bin"))                \
            cr_skip_test("../shared is absent: skipping the stories260K check");            \
    } while (0)

/* Reads a whole file; returns NULL on failure. *n gets the byte count. */
static inline void *nl_read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); buf = NULL; }
    fclose(f);
    if (n) *n = (size_t)sz;
    return buf;
}


/* A per-test temporary directory: NL_TEST_TMPDIR("nl_x") defines g_dir, nl_mk_tmpdir (a fresh
 * /tmp/nl_x_XXXXXX; the suite's .init), nl_rm_tmpdir (removes it with its files; .fini) and
 * tmp_path(name) (g_dir/name; eight rotating buffers). Needs <ftw.h>. */
#define NL_TEST_TMPDIR(prefix)                                                               \
    static char g_dir[64];                                                                   \
    static int nl_rm_cb_(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {  \
        (void)sb, (void)flag, (void)ftw;                                                     \
        return remove(p);                                                                    \
    }                                                                                        \
    static void nl_mk_tmpdir(void) {                                                         \
        snprintf(g_dir, sizeof g_dir, "/tmp/%s_XXXXXX", prefix);                             \
        cr_assert_not_null(mkdtemp(g_dir));                                                  \
    }                                                                                        \
    static void nl_rm_tmpdir(void) {                                                         \
        if (g_dir[0]) nftw(g_dir, nl_rm_cb_, 8, FTW_DEPTH | FTW_PHYS);                      \
    }                                                                                        \
    static const char *tmp_path(const char *name) {                                         \
        static char buf[8][256];                                                             \
        static int k;                                                                        \
        char *p = buf[k++ & 7];                                                              \
        snprintf(p, 256, "%s/%s", g_dir, name);                                              \
        return p;                                                                            \
    }

#endif
