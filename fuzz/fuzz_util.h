/* fuzz_util.h — shared by the libFuzzer harnesses of fuzz/: a private scratch folder per
 * process, writing the input (or parts of it) to files there, and splitting an input into
 * the files of a multi-file format. The parts of an input are separated by the line
 * NL_FUZZ_SEP ("\n--nlfuzz-next-file--\n"); fuzz/make-corpus.sh writes seeds that way.
 * Harnesses get bytes; the APIs take paths, so every input goes through a file. */
#ifndef NEURONLAB_FUZZ_UTIL_H
#define NEURONLAB_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "neuronlab/common.h"

#define NL_FUZZ_SEP "\n--nlfuzz-next-file--\n"

static char g_fuzz_dir[256];

/* The scratch folder (created once; /dev/shm when present: fuzzing writes a file per run). */
__attribute__((unused)) static const char *fuzz_dir(void) {
    if (!g_fuzz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(g_fuzz_dir, sizeof g_fuzz_dir, "%s/nlfuzz_XXXXXX", base);
        if (!mkdtemp(g_fuzz_dir)) abort();
    }
    return g_fuzz_dir;
}

/* Path of name in the scratch folder (static buffer, 4 in rotation). */
__attribute__((unused)) static const char *fuzz_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", fuzz_dir(), name);
    return p;
}

/* Writes n bytes to name in the scratch folder; returns its path. */
__attribute__((unused)) static const char *fuzz_write(const char *name, const uint8_t *d, size_t n) {
    const char *p = fuzz_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
    return p;
}

/* Splits d at the first NL_FUZZ_SEP: part 0 before it, part 1 after it (empty when absent). */
__attribute__((unused)) static void fuzz_split2(const uint8_t *d, size_t n, const uint8_t **p0, size_t *n0, const uint8_t **p1, size_t *n1) {
    size_t k = strlen(NL_FUZZ_SEP);
    const uint8_t *s = n >= k ? memmem(d, n, NL_FUZZ_SEP, k) : NULL;
    *p0 = d;
    *n0 = s ? (size_t)(s - d) : n;
    *p1 = s ? s + k : d + n;
    *n1 = s ? n - *n0 - k : 0;
}

/* A context that never draws progress. */
__attribute__((unused)) static void fuzz_ctx(nl_ctx *ctx) {
    nl_ctx_init(ctx);
    ctx->progress = 0;
    ctx->n_threads = 1;
}

#endif
