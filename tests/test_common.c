/* test_common.c — the core module (common.h, rng.h, progress.h, atomic_file.h) against hand values:
 *   - nl_errorf formatting and truncation to the context's buffer, nl_status_name,
 *   - nl_json_cat escaping (quotes, backslash, control characters) and truncation that never
 *     overflows and always leaves a whole JSON string literal,
 *   - f16 / bf16 conversions: hand values, round to nearest even, inf, nan, subnormals, and the
 *     round trip of every 16-bit pattern,
 *   - nl_malloc / nl_calloc of zero bytes,
 *   - nl_mix64 and the splitmix64 stream (reference values of Steele et al.), nl_rng_below bounds,
 *     FNV-1a test vectors,
 *   - progress: on a TTY (pty) a bar unless disabled; otherwise one log line per period
 *     ($NEURONLAB_PROGRESS_SECONDS, only positive finite numbers) and one at the end, none for a
 *     run shorter than a period or when disabled; the line's text with and without a total,
 *   - nl_json_num: shortest text that reads back to the same double, null for non-finite,
 *   - the atomic file writer: whole replacement on commit, old content and no temporary file
 *     after abort, the error for a missing folder, mode from the umask.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "neuronlab/atomic_file.h"
#include "neuronlab/common.h"
#include "neuronlab/progress.h"
#include "neuronlab/rng.h"
#include "testutil.h"

NL_TEST_TMPDIR("nl_common")

/* ---- messages ------------------------------------------------------------------------- */

Test(common, errorf_formats_and_returns_the_status) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_str_eq(ctx.msg, "");
    cr_assert_eq(nl_errorf(&ctx, NL_EFORMAT, "cannot read '%s': header length %d", "m.safetensors", 9), NL_EFORMAT);
    cr_assert_str_eq(ctx.msg, "cannot read 'm.safetensors': header length 9");
    cr_assert_eq(nl_errorf(&ctx, NL_OK, "%s", ""), NL_OK);
    cr_assert_str_eq(ctx.msg, "");
    /* No context: still returns the status. */
    cr_assert_eq(nl_errorf(NULL, NL_EIO, "x %d", 1), NL_EIO);
}

Test(common, errorf_truncates_to_the_buffer) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memset(&ctx.n_threads, 0x5a, sizeof ctx.n_threads); /* the field after msg must survive */
    int canary = ctx.n_threads;
    cr_assert_eq(nl_errorf(&ctx, NL_EINVAL, "'%s'", big), NL_EINVAL);
    cr_assert_eq(strlen(ctx.msg), sizeof ctx.msg - 1);
    cr_assert_eq(ctx.msg[0], '\'');
    cr_assert_eq(ctx.msg[sizeof ctx.msg - 2], 'a');
    cr_assert_eq(ctx.n_threads, canary);
    cr_assert_eq(ctx.progress, 1);
}

Test(common, status_names) {
    cr_assert_str_eq(nl_status_name(NL_OK), "ok");
    cr_assert_str_eq(nl_status_name(NL_EIO), "i/o error");
    cr_assert_str_eq(nl_status_name(NL_EFORMAT), "bad format");
    cr_assert_str_eq(nl_status_name(NL_EINVAL), "invalid argument");
    cr_assert_str_eq(nl_status_name(NL_ENOMEM), "out of memory");
    cr_assert_str_eq(nl_status_name(NL_EUNSUPPORTED), "unsupported");
    cr_assert_str_eq(nl_status_name(NL_EINTR), "interrupted");
    cr_assert_str_eq(nl_status_name((nl_status)99), "unknown status");
}

/* ---- JSON strings --------------------------------------------------------------------- */

Test(common, json_num_is_the_shortest_round_trip) {
    char buf[NL_JSON_NUM_SIZE];
    struct { double v; const char *want; } cases[] = {
        {0.1, "0.1"}, {0.05, "0.05"}, {0.2, "0.2"}, {1, "1"}, {0, "0"}, {-2.5, "-2.5"}, {1e-5, "1e-05"},
        {1e300, "1e+300"}, {1.0 / 3, "0.3333333333333333"}, {0.1 + 0.2, "0.30000000000000004"},
        {5e-324, "4.94065645841247e-324"}, {123456789012345678.0, "1.2345678901234568e+17"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_str_eq(nl_json_num(buf, cases[i].v), cases[i].want);
        cr_assert_eq(strtod(buf, NULL), cases[i].v);
    }
    cr_assert_str_eq(nl_json_num(buf, NAN), "null");
    cr_assert_str_eq(nl_json_num(buf, INFINITY), "null");
    cr_assert_str_eq(nl_json_num(buf, -INFINITY), "null");
    /* Every value reads back exactly, over a spread of magnitudes and mantissas. */
    uint64_t x = 12345;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        double v;
        uint64_t bits = x;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v)) continue;
        nl_json_num(buf, v);
        cr_assert_eq(strtod(buf, NULL), v, "%s", buf);
        cr_assert_lt(strlen(buf), (size_t)NL_JSON_NUM_SIZE);
    }
    char line[128];
    snprintf(line, sizeof line, "{\"top\":%s,\"p\":%s}", NL_JSON_NUM(0.05), NL_JSON_NUM(0.1));
    cr_assert_str_eq(line, "{\"top\":0.05,\"p\":0.1}");
}

Test(common, json_cat_escapes) {
    char buf[128] = "{\"k\":";
    nl_json_cat(buf, sizeof buf, "a\"b\\c\nd\x01\x1f\tz");
    cr_assert_str_eq(buf, "{\"k\":\"a\\\"b\\\\c\\u000ad\\u0001\\u001f\\u0009z\"");
    char u[64] = "";
    nl_json_cat(u, sizeof u, "caf\xc3\xa9 \xe2\x82\xac"); /* UTF-8 passes through */
    cr_assert_str_eq(u, "\"caf\xc3\xa9 \xe2\x82\xac\"");
    char e[8] = "";
    nl_json_cat(e, sizeof e, "");
    cr_assert_str_eq(e, "\"\"");
    /* The escaped text decodes back to the input. */
    char j[256] = "";
    const char *in = "q\"uote\\ back\x02 ctl\r\n";
    nl_json_cat(j, sizeof j, in);
    json_error_t err;
    json_t *v = json_loads(j, JSON_DECODE_ANY, &err);
    cr_assert(v && json_is_string(v), "%s: %s", j, err.text);
    cr_assert_str_eq(json_string_value(v), in);
    json_decref(v);
}

/* For every buffer size: nothing is written past n, the result is NUL-terminated, and whatever
 * was appended is a whole JSON string literal holding a prefix of the input. */
Test(common, json_cat_truncates_without_overflow) {
    const char *in = "ab\"c\\d\x01" "efgh\x1fij\"\"kl\n\nmnopqrstuvwxyz";
    const char *pre = "[";
    for (size_t n = 2; n < 80; n++) {
        char mem[100];
        memset(mem, '#', sizeof mem);
        strcpy(mem, pre);
        nl_json_cat(mem, n, in);
        for (size_t i = n; i < sizeof mem; i++) cr_assert_eq(mem[i], '#', "n = %zu: byte %zu overwritten", n, i);
        size_t len = strnlen(mem, n);
        cr_assert_lt(len, n, "n = %zu: not terminated", n);
        cr_assert_eq(strncmp(mem, pre, strlen(pre)), 0);
        const char *lit = mem + strlen(pre);
        if (!*lit) continue; /* too small to hold even "" : left unchanged */
        json_error_t err;
        json_t *v = json_loads(lit, JSON_DECODE_ANY, &err);
        cr_assert(v && json_is_string(v), "n = %zu: '%s' is not a JSON string: %s", n, lit, err.text);
        const char *s = json_string_value(v);
        cr_assert_eq(strncmp(s, in, strlen(s)), 0, "n = %zu: '%s' is not a prefix", n, s);
        if (n == 79) cr_assert_str_eq(s, in, "a large buffer holds everything");
        json_decref(v);
    }
}

/* ---- half precision ------------------------------------------------------------------- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

Test(common, f16_hand_values) {
    cr_assert_eq(nl_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(nl_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(nl_f32_to_f16(0.5f), 0x3800);
    cr_assert_eq(nl_f32_to_f16(0.0f), 0x0000);
    cr_assert_eq(nl_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(nl_f32_to_f16(65504.0f), 0x7bff); /* largest finite */
    cr_assert_eq(nl_f32_to_f16(0.333333343f), 0x3555);
    /* Round to nearest, ties to even. */
    cr_assert_eq(nl_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);            /* tie → even (down) */
    cr_assert_eq(nl_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);        /* tie → even (up) */
    cr_assert_eq(nl_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above the tie */
    cr_assert_eq(nl_f32_to_f16(65519.0f), 0x7bff);                   /* below the tie with 65536 */
    cr_assert_eq(nl_f32_to_f16(65520.0f), 0x7c00);                   /* tie → even = inf */
    cr_assert_eq(nl_f32_to_f16(1e6f), 0x7c00);
    cr_assert_eq(nl_f32_to_f16(-1e6f), 0xfc00);
    /* inf and nan */
    cr_assert_eq(nl_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(nl_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t hn = nl_f32_to_f16(NAN);
    cr_assert((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff), "nan → 0x%04x", hn);
    hn = nl_f32_to_f16(bits_f32(0x7f800001)); /* a nan whose payload is lost in 10 bits */
    cr_assert((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff), "signalling nan → 0x%04x (inf?)", hn);
    cr_assert(isinf(nl_f16_to_f32(0x7c00)) && nl_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(nl_f16_to_f32(0xfc00)) && nl_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(nl_f16_to_f32(0x7e00)));
    cr_assert(isnan(nl_f16_to_f32(0xfc01)));
    /* Subnormals: 2^-24 is the smallest. */
    cr_assert_eq(nl_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(nl_f16_to_f32(0x8001), -0x1p-24f);
    cr_assert_eq(nl_f16_to_f32(0x03ff), 1023 * 0x1p-24f);
    cr_assert_eq(nl_f16_to_f32(0x0400), 0x1p-14f); /* smallest normal */
    cr_assert_eq(nl_f32_to_f16(0x1p-24f), 0x0001);
    cr_assert_eq(nl_f32_to_f16(1023 * 0x1p-24f), 0x03ff);
    cr_assert_eq(nl_f32_to_f16(0x1p-14f), 0x0400);
    cr_assert_eq(nl_f32_to_f16(0x1p-25f), 0x0000);                /* tie with 0 → even */
    cr_assert_eq(nl_f32_to_f16(0x1p-25f * (1 + 0x1p-20f)), 0x0001); /* just above the tie */
    cr_assert_eq(nl_f32_to_f16(3 * 0x1p-25f), 0x0002);            /* 1.5 · 2^-24 → even */
    cr_assert_eq(nl_f32_to_f16(5 * 0x1p-25f), 0x0002);            /* 2.5 · 2^-24 → even */
    cr_assert_eq(nl_f32_to_f16(-0x1p-26f), 0x8000);
    cr_assert_eq(nl_f32_to_f16(1023.5f * 0x1p-24f), 0x0400); /* tie at the top of the subnormals */
    cr_assert_eq(nl_f32_to_f16(0x1p-140f), 0x0000);          /* f32 subnormal */
}

Test(common, f16_round_trips_every_value) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = nl_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            cr_assert(isnan(f), "0x%04x", h);
            continue;
        }
        cr_assert_eq(nl_f32_to_f16(f), h, "0x%04x → %a → 0x%04x", h, f, nl_f32_to_f16(f));
    }
}

Test(common, bf16_hand_values) {
    cr_assert_eq(nl_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(nl_f32_to_bf16(-2.0f), 0xc000);
    cr_assert_eq(nl_f32_to_bf16(-0.0f), 0x8000);
    cr_assert_eq(nl_f32_to_bf16(3.140625f), 0x4049);
    cr_assert_eq(nl_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);            /* tie → even (down) */
    cr_assert_eq(nl_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);        /* tie → even (up) */
    cr_assert_eq(nl_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
    cr_assert_eq(nl_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(nl_f32_to_bf16(-INFINITY), 0xff80);
    cr_assert_eq(nl_f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    cr_assert_eq(nl_f32_to_bf16(bits_f32(0x7f7f7fff)), 0x7f7f); /* below the tie */
    cr_assert_eq(nl_f32_to_bf16(NAN) & 0x7fc0, 0x7fc0);
    uint16_t bn = nl_f32_to_bf16(bits_f32(0x7f800001)); /* must stay a nan, not become inf */
    cr_assert((bn & 0x7f80) == 0x7f80 && (bn & 0x7f), "signalling nan → 0x%04x", bn);
    cr_assert(isnan(nl_bf16_to_f32(0x7fc0)));
    cr_assert(isinf(nl_bf16_to_f32(0xff80)) && nl_bf16_to_f32(0xff80) < 0);
    /* f32 subnormals round like everything else. */
    cr_assert_eq(nl_f32_to_bf16(bits_f32(0x00008000)), 0x0000); /* tie → even */
    cr_assert_eq(nl_f32_to_bf16(bits_f32(0x00018000)), 0x0002); /* tie → even */
    cr_assert_eq(nl_f32_to_bf16(bits_f32(0x00008001)), 0x0001);
    cr_assert_eq(f32_bits(nl_bf16_to_f32(0x0001)), 0x00010000u);
    cr_assert_eq(nl_bf16_to_f32(0x0080), 0x1p-126f);
}

Test(common, bf16_round_trips_every_value) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = nl_bf16_to_f32((uint16_t)h);
        cr_assert_eq(f32_bits(f), h << 16);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) {
            cr_assert(isnan(f));
            continue;
        }
        cr_assert_eq(nl_f32_to_bf16(f), h, "0x%04x", h);
    }
}

/* ---- allocation ----------------------------------------------------------------------- */

Test(common, malloc_of_zero_bytes) {
    /* Zero-byte requests give a real, freeable pointer, so NULL always means out of memory. */
    void *p = nl_malloc(0);
    cr_assert_not_null(p);
    free(p);
    int *z = nl_calloc(0, sizeof(int));
    cr_assert_not_null(z);
    free(z);
    z = nl_calloc(5, 0);
    cr_assert_not_null(z);
    free(z);
    z = nl_calloc(7, sizeof(int));
    cr_assert_not_null(z);
    for (int i = 0; i < 7; i++) cr_assert_eq(z[i], 0);
    free(z);
    double t0 = nl_now(), t1 = nl_now();
    cr_assert(t1 >= t0 && t0 > 0);
}

/* ---- random numbers and hashes -------------------------------------------------------- */

Test(rng, mix64_and_splitmix64_reference_values) {
    cr_assert_eq(nl_mix64(0), 0ULL);
    cr_assert_eq(nl_mix64(1), 0x5692161d100b05e5ULL);
    cr_assert_eq(nl_mix64(UINT64_MAX), 0xb4d055fcf2cbbd7bULL);
    /* SplitMix64 seeded with 0 (the reference sequence of Steele, Lea and Flood). */
    nl_rng r = {0};
    cr_assert_eq(nl_rng_next(&r), 0xe220a8397b1dcdafULL);
    cr_assert_eq(nl_rng_next(&r), 0x6e789e6aa1b965f4ULL);
    cr_assert_eq(nl_rng_next(&r), 0x06c45d188009454fULL);
    cr_assert_eq(nl_rng_next(&r), 0xf88bb8a8724c81ecULL);
    cr_assert_eq(nl_mix64(0x9e3779b97f4a7c15ULL), 0xe220a8397b1dcdafULL);
}

Test(rng, below_stays_in_bounds_and_covers_them) {
    nl_rng r;
    nl_rng_derive(&r, 42, 7, 0);
    for (int i = 0; i < 1000; i++) cr_assert_eq(nl_rng_below(&r, 1), 0u);
    int counts[7] = {0};
    const int n = 70000;
    for (int i = 0; i < n; i++) {
        uint64_t v = nl_rng_below(&r, 7);
        cr_assert_lt(v, 7u);
        counts[v]++;
    }
    for (int k = 0; k < 7; k++) cr_assert(abs(counts[k] - n / 7) < n / 70, "value %d drawn %d times", k, counts[k]);
    /* Huge bounds, including one where half the raw draws are rejected. */
    const uint64_t big[3] = {UINT64_MAX, (1ULL << 63) + 1, (1ULL << 63)};
    for (int b = 0; b < 3; b++) {
        int high = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t v = nl_rng_below(&r, big[b]);
            cr_assert_lt(v, big[b]);
            high += v >= big[b] / 2;
        }
        cr_assert(high > 800 && high < 1200, "bound %llu: %d of 2000 in the upper half", (unsigned long long)big[b], high);
    }
    /* Same seed, same stream; another purpose or index, another stream. */
    nl_rng a, b, c;
    nl_rng_derive(&a, 1, 2, 3);
    nl_rng_derive(&b, 1, 2, 3);
    nl_rng_derive(&c, 1, 2, 4);
    uint64_t x = nl_rng_next(&a);
    cr_assert_eq(x, nl_rng_next(&b));
    cr_assert_neq(x, nl_rng_next(&c));
    for (int i = 0; i < 1000; i++) {
        double u = nl_rng_uniform(&a);
        cr_assert(u >= 0 && u < 1);
    }
}

Test(rng, fnv1a_test_vectors) {
    cr_assert_eq(nl_fnv1a(NL_FNV_INIT, "", 0), 0xcbf29ce484222325ULL);
    cr_assert_eq(nl_fnv1a(NL_FNV_INIT, "a", 1), 0xaf63dc4c8601ec8cULL);
    cr_assert_eq(nl_fnv1a(NL_FNV_INIT, "foobar", 6), 0x85944171f73967e8ULL);
    /* Continuing from a previous hash equals hashing the concatenation. */
    cr_assert_eq(nl_fnv1a(nl_fnv1a(NL_FNV_INIT, "foo", 3), "bar", 3), 0x85944171f73967e8ULL);
}

/* ---- progress ------------------------------------------------------------------------- */

/* Runs a bar to completion with stderr on fd; returns the bytes written there (in out). */
static size_t run_progress(int fd, int enabled, int *active, char *out, size_t cap, int rfd) {
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    nl_progress p;
    nl_progress_init(&p, "ppl", 100, "tok", enabled);
    *active = p.active;
    nl_progress_add(&p, 40);
    p.last -= 1.0; /* as if the last redraw were a second ago */
    nl_progress_add(&p, 60);
    cr_assert_eq(p.done, 100);
    nl_progress_end(&p);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = 0, k;
    while ((size_t)n < cap - 1 && (k = read(rfd, out + n, cap - 1 - (size_t)n)) > 0) n += k;
    out[n > 0 ? n : 0] = 0;
    return n > 0 ? (size_t)n : 0;
}

/* Runs fn with stderr redirected to a file; returns what it wrote there (static buffer). */
static const char *capture_stderr(void (*fn)(void *), void *arg) {
    static char out[2048];
    const char *path = tmp_path("err.txt");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    int rfd = open(path, O_RDONLY);
    ssize_t n = 0, k;
    while ((size_t)n < sizeof out - 1 && (k = read(rfd, out + n, sizeof out - 1 - (size_t)n)) > 0) n += k;
    close(rfd);
    out[n > 0 ? n : 0] = 0;
    return out;
}

typedef struct {
    int enabled;
    int64_t total;
    int active; /* out: p.active after init */
    double period; /* out */
} log_run;

/* 40 units, then 60 more "a period later", then 0 more at once, then the end. */
static void log_progress(void *arg) {
    log_run *a = arg;
    nl_progress p;
    nl_progress_init(&p, "ppl", a->total, "tok", a->enabled);
    a->active = p.active, a->period = p.period;
    nl_progress_add(&p, 40); /* less than a period since the start: no line */
    p.last -= p.period + 1;  /* as if the last line were a period ago */
    p.t0 -= p.period + 1;
    nl_progress_add(&p, 60); /* a line */
    nl_progress_add(&p, 0);  /* just after it: no line */
    cr_assert_eq(p.done, 100);
    nl_progress_end(&p); /* the final line */
}

/* A run shorter than the period. */
static void short_progress(void *arg) {
    log_run *a = arg;
    nl_progress p;
    nl_progress_init(&p, "ppl", a->total, "tok", a->enabled);
    a->active = p.active, a->period = p.period;
    nl_progress_add(&p, 100);
    nl_progress_end(&p);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

Test(progress, not_a_tty_logs_a_line_every_period_and_at_the_end, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    setenv("NEURONLAB_PROGRESS_SECONDS", "0.5", 1);
    log_run a = {1, 100, 0, 0};
    const char *out = capture_stderr(log_progress, &a);
    cr_assert_eq(a.active, 1);
    cr_assert_float_eq(a.period, 0.5, 1e-12);
    cr_assert_eq(count_lines(out), 2, "wrote '%s'", out);
    cr_assert(strncmp(out, "neuronlab: ppl: 100/100 tok (100%), ", 36) == 0, "wrote '%s'", out);
    cr_assert(strstr(out, " tok/s, ETA 0:00\n"), "wrote '%s'", out);
    cr_assert_null(strchr(out, '\r'), "no carriage returns in a log: '%s'", out);
    /* Unknown total: the count and the rate only. */
    a.total = 0;
    out = capture_stderr(log_progress, &a);
    cr_assert(strncmp(out, "neuronlab: ppl: 100 tok, ", 25) == 0, "wrote '%s'", out);
    cr_assert_null(strstr(out, "ETA"), "wrote '%s'", out);
    cr_assert_null(strstr(out, "%"), "wrote '%s'", out);
    unsetenv("NEURONLAB_PROGRESS_SECONDS");
}

Test(progress, not_a_tty_quiet_when_disabled_or_short, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    setenv("NEURONLAB_PROGRESS_SECONDS", "0.5", 1);
    log_run a = {0, 100, 1, 0};
    const char *out = capture_stderr(log_progress, &a);
    cr_assert_eq(a.active, 0);
    cr_assert_str_eq(out, "");
    unsetenv("NEURONLAB_PROGRESS_SECONDS");
    a.enabled = 1;
    out = capture_stderr(short_progress, &a); /* shorter than the default 10 s */
    cr_assert_eq(a.active, 1);
    cr_assert_float_eq(a.period, NL_PROGRESS_SECONDS, 1e-12);
    cr_assert_str_eq(out, "");
}

Test(progress, period_from_the_environment_only_when_positive, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    const char *bad[] = {"", "abc", "-1", "0", "2s", "nan", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("NEURONLAB_PROGRESS_SECONDS", bad[i], 1);
        log_run a = {1, 100, 0, 0};
        capture_stderr(short_progress, &a);
        cr_assert_float_eq(a.period, NL_PROGRESS_SECONDS, 1e-12, "'%s' gave %g", bad[i], a.period);
    }
    setenv("NEURONLAB_PROGRESS_SECONDS", "2.5", 1);
    log_run a = {1, 100, 0, 0};
    capture_stderr(short_progress, &a);
    cr_assert_float_eq(a.period, 2.5, 1e-12);
    unsetenv("NEURONLAB_PROGRESS_SECONDS");
}

Test(progress, draws_on_a_tty_unless_disabled) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0) cr_skip_test("no pseudo-terminal available");
    cr_assert_eq(grantpt(m), 0);
    cr_assert_eq(unlockpt(m), 0);
    int s = open(ptsname(m), O_RDWR | O_NOCTTY);
    cr_assert_geq(s, 0);
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    int active;
    char out[1024];
    run_progress(s, 1, &active, out, sizeof out, m);
    cr_assert_eq(active, 1);
    cr_assert(strstr(out, "ppl [##############################] 100% 100/100 tok"), "drew '%s'", out);
    cr_assert(strchr(out, '\n') || strchr(out, '\r'), "'%s'", out);
    size_t n = run_progress(s, 0, &active, out, sizeof out, m);
    cr_assert_eq(active, 0);
    cr_assert_eq(n, 0u, "disabled bar drew '%s'", out);
    close(s);
    close(m);
}

/* ---- atomic files --------------------------------------------------------------------- */

/* Files in the temporary folder (excluding . and ..). */
static int count_files(void) {
    DIR *d = opendir(g_dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path) {
    size_t n = 0;
    char *b = nl_read_all(path, &n);
    cr_assert_not_null(b, "cannot read %s", path);
    b = realloc(b, n + 1);
    b[n] = 0;
    return b;
}

Test(atomic_file, commit_replaces_the_whole_file, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("out.txt");
    const char *old = "the old content, longer than the new one\n";
    cr_assert_eq(nl_write_file_atomic(&ctx, p, old, strlen(old)), NL_OK, "%s", ctx.msg);
    char *got = slurp(p);
    cr_assert_str_eq(got, old);
    free(got);
    nl_atomic_file a;
    cr_assert_eq(nl_atomic_open(&ctx, p, &a), NL_OK, "%s", ctx.msg);
    cr_assert(a.f && a.tmp && a.path);
    cr_assert_str_eq(a.path, p);
    cr_assert(strncmp(a.tmp, p, strlen(p)) == 0 && strstr(a.tmp, ".tmp."), "temporary '%s'", a.tmp);
    char *tmp = strdup(a.tmp);
    fputs("new\n", a.f);
    fflush(a.f);
    got = slurp(p);
    cr_assert_str_eq(got, old, "the target changed before the commit");
    free(got);
    cr_assert_eq(count_files(), 2);
    cr_assert_eq(nl_atomic_commit(&ctx, &a), NL_OK, "%s", ctx.msg);
    cr_assert(!a.f && !a.tmp && !a.path, "commit releases the struct");
    got = slurp(p);
    cr_assert_str_eq(got, "new\n");
    free(got);
    cr_assert(!nl_path_exists(tmp));
    cr_assert_eq(count_files(), 1);
    free(tmp);
    /* An empty write makes an empty file. */
    cr_assert_eq(nl_write_file_atomic(&ctx, p, NULL, 0), NL_OK);
    size_t n = 1;
    free(nl_read_all(p, &n));
    cr_assert_eq(n, 0u);
}

Test(atomic_file, abort_keeps_the_old_content, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("keep.txt");
    cr_assert_eq(nl_write_file_atomic(&ctx, p, "old", 3), NL_OK);
    nl_atomic_file a;
    cr_assert_eq(nl_atomic_open(&ctx, p, &a), NL_OK);
    fputs("half-written", a.f);
    nl_atomic_abort(&a);
    cr_assert(!a.f && !a.tmp && !a.path);
    char *got = slurp(p);
    cr_assert_str_eq(got, "old");
    free(got);
    cr_assert_eq(count_files(), 1, "the temporary file was left behind");
    nl_atomic_abort(&a); /* released struct: no-op */
    nl_atomic_file z = {0};
    nl_atomic_abort(&z);
    /* Aborting a file that never existed leaves nothing at all. */
    cr_assert_eq(nl_atomic_open(&ctx, tmp_path("new.txt"), &a), NL_OK);
    nl_atomic_abort(&a);
    cr_assert(!nl_path_exists(tmp_path("new.txt")));
    cr_assert_eq(count_files(), 1);
}

Test(atomic_file, errors_name_the_path, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = tmp_path("no/such/dir/x.txt");
    nl_atomic_file a;
    cr_assert_eq(nl_atomic_open(&ctx, p, &a), NL_EIO);
    char want[512];
    snprintf(want, sizeof want, "cannot write '%s': %s", p, strerror(ENOENT));
    cr_assert_str_eq(ctx.msg, want);
    cr_assert(!a.f && !a.tmp && !a.path);
    cr_assert_eq(nl_write_file_atomic(&ctx, p, "x", 1), NL_EIO);
    cr_assert_str_eq(ctx.msg, want);
    /* The rename fails when the target is a non-empty folder: error, temporary file removed. */
    const char *d = tmp_path("adir");
    cr_assert_eq(mkdir(d, 0700), 0);
    char inside[300];
    snprintf(inside, sizeof inside, "%s/f", d);
    cr_assert_eq(nl_write_file_atomic(&ctx, inside, "x", 1), NL_OK);
    cr_assert_eq(nl_write_file_atomic(&ctx, d, "y", 1), NL_EIO);
    cr_assert(strncmp(ctx.msg, "cannot write '", 14) == 0 && strstr(ctx.msg, d), "%s", ctx.msg);
    cr_assert_eq(count_files(), 1, "the temporary file was left behind");
}

Test(atomic_file, mode_follows_the_umask, .init = nl_mk_tmpdir, .fini = nl_rm_tmpdir) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const mode_t masks[3] = {022, 077, 002};
    const mode_t want[3] = {0644, 0600, 0664};
    mode_t saved = umask(0);
    for (int i = 0; i < 3; i++) {
        umask(masks[i]);
        char name[32];
        snprintf(name, sizeof name, "m%d.txt", i);
        cr_assert_eq(nl_write_file_atomic(&ctx, tmp_path(name), "x", 1), NL_OK, "%s", ctx.msg);
        struct stat st;
        cr_assert_eq(stat(tmp_path(name), &st), 0);
        cr_assert_eq(st.st_mode & 0777, want[i], "umask %03o gave %03o", masks[i], st.st_mode & 0777);
    }
    umask(saved);
}
