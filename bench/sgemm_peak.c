/* sgemm_peak.c — the machine's measured single-precision GEMM peak through the same OpenBLAS
 * the trainer uses: C (n×n) = A (n×n)·B (n×n) with cblas_sgemm, best of several repeats, for the
 * default thread count and for one thread. Prints the OpenBLAS kernel (openblas_get_corename).
 * Built and run by bench/train.sh:  sgemm_peak [n] [repeats]
 * Output: key=value lines (core, threads, n, gflops_all, gflops_1). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double best_gflops(int n, int reps, float *a, float *b, float *c) {
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0, g = 2.0 * n * n * (double)n / dt / 1e9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 5;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) { a[i] = (float)(i % 13) * 0.01f; b[i] = (float)(i % 7) * 0.02f; c[i] = 0; }
    const int nt = omp_get_max_threads();
    best_gflops(n, 1, a, b, c); /* warm up: thread pool, page faults */
    double all = best_gflops(n, reps, a, b, c);
    omp_set_num_threads(1);
    double one = best_gflops(n, reps, a, b, c);
    printf("core=%s\nthreads=%d\nn=%d\ngflops_all=%.1f\ngflops_1=%.1f\n", openblas_get_corename(), nt, n, all, one);
    free(a); free(b); free(c);
    return 0;
}
