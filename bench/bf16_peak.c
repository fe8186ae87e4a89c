/* bf16_peak.c — GFLOP/s of the bf16 matrix products against cblas_sgemm on this machine:
 * C (n×n) = A (n×n)·Bᵀ, best of several repeats, all threads and one thread.
 *   sgemm  : cblas_sgemm in f32 (the f32 path of the forward pass)
 *   own    : neuronlab's AVX512-BF16 kernel (nl_matmul_bf16: weights packed once, the f32
 *            activations rounded to bf16 inside every call, f32 output)
 *   onednn : (built with -DNL_WITH_DNNL, bench/README "bf16") oneDNN's dnnl_matmul, bf16 src and
 *            weights (weights reordered once into the layout the primitive asks for), f32 dst;
 *            the activations are already bf16, so its time leaves out the rounding
 * Built and run by bench/bf16.sh:  bf16_peak [n] [repeats] [sgemm|own|onednn (only that one)]
 * Output: key=value lines (threads, n, <kernel>_all, <kernel>_1 in GFLOP/s, onednn_impl). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "neuronlab/common.h"
#include "neuronlab/gemm_bf16.h"
#include "neuronlab/ops.h"

#ifdef NL_WITH_DNNL
#include <dnnl.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct {
    int n;
    float *a, *b, *c;
    nl_mat w;
#ifdef NL_WITH_DNNL
    dnnl_primitive_t mm;
    dnnl_stream_t stream;
    dnnl_memory_t ma, mb, mc;
#endif
} bench;

static void run(bench *s, int kind) {
    const int n = s->n;
    if (kind == 0) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, s->a, n, s->b, n, 0.0f, s->c, n);
    else if (kind == 1) nl_matmul(s->c, n, s->a, n, n, &s->w, NULL);
#ifdef NL_WITH_DNNL
    else {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, s->ma}, {DNNL_ARG_WEIGHTS, s->mb}, {DNNL_ARG_DST, s->mc}};
        if (dnnl_primitive_execute(s->mm, s->stream, 3, args) != dnnl_success) { fprintf(stderr, "bf16_peak: dnnl_primitive_execute failed\n"); exit(1); }
        dnnl_stream_wait(s->stream);
    }
#endif
}

static double best_gflops(bench *s, int kind, int reps) {
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        run(s, kind);
        double dt = now() - t0, g = 2.0 * s->n * s->n * (double)s->n / dt / 1e9;
        if (g > best) best = g;
    }
    return best;
}

#ifdef NL_WITH_DNNL
#define DN(call) do { if ((call) != dnnl_success) { fprintf(stderr, "bf16_peak: %s failed\n", #call); exit(1); } } while (0)
static const char *dnnl_setup(bench *s) {
    const int n = s->n;
    dnnl_engine_t eng;
    DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&s->stream, eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t a_md, b_plain, b_any, c_md;
    dnnl_dims_t ad = {n, n}, bd = {n, n}, cd = {n, n};
    DN(dnnl_memory_desc_init_by_tag(&a_md, 2, ad, dnnl_bf16, dnnl_ab));
    DN(dnnl_memory_desc_init_by_tag(&b_plain, 2, bd, dnnl_bf16, dnnl_ba)); /* (K, N) read from Bᵀ stored (N, K) */
    DN(dnnl_memory_desc_init_by_tag(&b_any, 2, bd, dnnl_bf16, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    DN(dnnl_matmul_desc_init(&md, &a_md, &b_any, NULL, &c_md));
    dnnl_primitive_desc_t pd;
    DN(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
    const dnnl_memory_desc_t *b_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    DN(dnnl_primitive_create(&s->mm, pd));
    /* bf16 copies of A and B (round to nearest even), B reordered once into the primitive's layout */
    uint16_t *a16 = malloc(sizeof(uint16_t) * n * n), *b16 = malloc(sizeof(uint16_t) * n * n);
    for (long i = 0; i < (long)n * n; i++) a16[i] = nl_f32_to_bf16(s->a[i]), b16[i] = nl_f32_to_bf16(s->b[i]);
    dnnl_memory_t b_src;
    DN(dnnl_memory_create(&s->ma, &a_md, eng, a16));
    DN(dnnl_memory_create(&b_src, &b_plain, eng, b16));
    DN(dnnl_memory_create(&s->mb, b_md, eng, DNNL_MEMORY_ALLOCATE));
    DN(dnnl_memory_create(&s->mc, &c_md, eng, s->c));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t re;
    DN(dnnl_reorder_primitive_desc_create(&rpd, &b_plain, eng, b_md, eng, NULL));
    DN(dnnl_primitive_create(&re, rpd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, b_src}, {DNNL_ARG_TO, s->mb}};
    DN(dnnl_primitive_execute(re, s->stream, 2, args));
    dnnl_stream_wait(s->stream);
    const char *impl = NULL;
    DN(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    return impl;
}
#endif

int main(int argc, char **argv) {
    bench s = {0};
    const int n = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 5;
    s.n = n;
    s.a = malloc(sizeof(float) * n * n), s.b = malloc(sizeof(float) * n * n), s.c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) { s.a[i] = (float)(i % 13) * 0.01f; s.b[i] = (float)(i % 7) * 0.02f; s.c[i] = 0; }
    s.w = (nl_mat){s.b, n, n, 0, n, NULL};
    const int have = nl_bf16_supported();
    struct nl_bf16_mat pk;
    uint16_t *p = aligned_alloc(64, (nl_bf16_pack_elems(n, n) * 2 + 63) / 64 * 64);
    if (have) nl_bf16_pack(&pk, p, &s.w), s.w.bf16 = &pk;
    const char *names[] = {"sgemm", "own", "onednn"};
    int kinds = 2;
#ifdef NL_WITH_DNNL
    printf("onednn_impl=%s\n", have ? dnnl_setup(&s) : "none");
    kinds = 3;
#endif
    const int nt = omp_get_max_threads();
    printf("threads=%d\nn=%d\nbf16_cpu=%d\n", nt, n, have);
    for (int k = 0; k < kinds; k++) {
        if ((k > 0 && !have) || (argc > 3 && strcmp(argv[3], names[k]))) continue;
        omp_set_num_threads(nt);
        best_gflops(&s, k, 1); /* warm up: thread pool, page faults */
        double all = best_gflops(&s, k, reps);
        omp_set_num_threads(1);
        double one = best_gflops(&s, k, reps);
        printf("%s_all=%.1f\n%s_1=%.1f\n", names[k], all, names[k], one);
    }
    free(s.a); free(s.b); free(s.c); free(p);
    return 0;
}
