/* moefy.c — builds the experts of a dense model (nl_moefy_run): calibration passes (calib.c),
 * then per MoE layer the shared expert (the N most often active neurons), the split of the
 * others into E balanced experts (param: kmeans.c; coact: partition.c), the canonical
 * permutation (experts ordered by their lowest neuron, neurons ascending inside), μ, the static
 * vectors m_e and M (summed in double), and the sim router's centroids; with --router mlp a
 * further calibration pass collects the FFN inputs and oracle scores of up to mlp_max_tokens
 * tokens per layer and trains each layer's MLP router (router_mlp.c). See moe.h. Checked by
 * tests/test_moe.c, tests/test_moe_router.c and tests/moe_cli.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe_calib.h"
#include "moe/moe_internal.h"
#include "neuronlab/rng.h"

void nl_moefy_opts_init(nl_moefy_opts *o) {
    memset(o, 0, sizeof *o);
    o->split = NL_MOE_SPLIT_PARAM;
    o->feature = NL_MOE_FEATURE_BOTH;
    o->kmeans_iters = 30;
    o->kmeans_restarts = 4;
    o->router = NL_MOE_ROUTER_SIM;
    nl_moe_mlp_opts_init(&o->mlp);
    o->mlp_fill = NL_MOE_FILL_MEAN;
    o->mlp_max_tokens = 65536;
}

static int by_freq_desc(const void *a, const void *b, void *freq) {
    const double *f = freq;
    int i = *(const int *)a, j = *(const int *)b;
    if (f[i] != f[j]) return f[i] > f[j] ? -1 : 1;
    return i - j;
}

/* Row o of w (n_out, n_in) into dst (n_in), L2-normalised (a zero row stays zero). */
static void unit_row(const nl_mat *w, int o, float *dst) {
    double s = 0;
    for (int i = 0; i < w->n_in; i++) {
        dst[i] = nl_moe_mat_at(w, o, i);
        s += (double)dst[i] * dst[i];
    }
    if (s > 0)
        for (int i = 0; i < w->n_in; i++) dst[i] = (float)(dst[i] / sqrt(s));
}

static void normalise(float *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)v[i] * v[i];
    if (s > 0)
        for (int i = 0; i < n; i++) v[i] = (float)(v[i] / sqrt(s));
}

/* Builds one MoE layer y from its statistics. */
static nl_status build_layer(nl_ctx *ctx, const nl_moefy_opts *o, nl_model *m, const nl_moe_calib *c, int li,
                             nl_moe_layer *y) {
    const nl_config *cfg = nl_model_config(m);
    const int F = cfg->d_ff, D = cfg->d_model, E = o->E, N = o->n_shared, nR = F - N;
    nl_layer w;
    nl_status st = nl_model_layer(ctx, m, y->layer, &w);
    if (st != NL_OK) return st;
    int *order = malloc((size_t)F * sizeof(int)), *routed = malloc((size_t)nR * sizeof(int));
    int *assign = malloc((size_t)nR * sizeof(int)), *first = malloc((size_t)E * sizeof(int));
    int *rank = malloc((size_t)E * sizeof(int)), *is_shared = calloc((size_t)F, sizeof(int));
    double *freq = malloc((size_t)F * sizeof(double));
    const int dimf = (cfg->ffn_gated && o->feature == NL_MOE_FEATURE_BOTH) ? 2 * D : D;
    float *X = NULL, *Wsub = NULL;
    double *acc = malloc((size_t)D * sizeof(double));
    if (!order || !routed || !assign || !first || !rank || !is_shared || !freq || !acc) goto oom;
    for (int i = 0; i < F; i++) {
        y->mu[i] = c->mu[(size_t)li * F + i];
        freq[i] = c->n_tokens ? (double)c->freq[(size_t)li * F + i] / (double)c->n_tokens : 0;
        y->freq[i] = (float)freq[i];
        order[i] = i;
    }
    /* shared expert: the N most often active (ties: lower index) */
    qsort_r(order, (size_t)F, sizeof(int), by_freq_desc, freq);
    for (int t = 0; t < N; t++) is_shared[order[t]] = 1;
    for (int i = 0, r = 0; i < F; i++)
        if (!is_shared[i]) routed[r++] = i;
    if (o->split == NL_MOE_SPLIT_PARAM) {
        X = malloc((size_t)nR * dimf * sizeof(float));
        if (!X) goto oom;
        const nl_mat *wa = cfg->ffn_gated && o->feature != NL_MOE_FEATURE_UP ? &w.w_gate : &w.w_up;
        for (int r = 0; r < nR; r++) {
            float *x = X + (size_t)r * dimf;
            unit_row(wa, routed[r], x);
            if (dimf == 2 * D) {
                unit_row(&w.w_up, routed[r], x + D);
                for (int d = 0; d < 2 * D; d++) x[d] *= (float)M_SQRT1_2; /* [ĝ ; û]/√2: unit length */
            }
        }
        st = nl_moe_kmeans(ctx, X, nR, dimf, E, nl_mix64(o->seed ^ (uint64_t)y->layer), o->kmeans_iters, o->kmeans_restarts,
                           assign, NULL);
    } else {
        Wsub = malloc((size_t)nR * nR * sizeof(float));
        if (!Wsub) goto oom;
        const float *C = c->coact + (size_t)li * F * F;
        for (int r = 0; r < nR; r++)
            for (int s = 0; s < nR; s++) Wsub[(size_t)r * nR + s] = C[(size_t)routed[r] * F + routed[s]];
        st = nl_moe_partition(ctx, Wsub, nR, E, o->seed + (uint64_t)y->layer, assign);
    }
    if (st != NL_OK) goto done;
    /* canonical order: experts by their lowest neuron */
    for (int e = 0; e < E; e++) first[e] = -1;
    for (int r = 0; r < nR; r++)
        if (first[assign[r]] < 0) first[assign[r]] = r;
    for (int e = 0, k = 0; e < nR && k < E; e++) /* routed[] ascending: rank experts by first appearance */
        if (first[assign[e]] == e) rank[assign[e]] = k++;
    int p = 0;
    for (int i = 0; i < F; i++)
        if (is_shared[i]) y->perm[p++] = i;
    for (int k = 0; k < E; k++) {
        y->offset[k] = p;
        for (int r = 0; r < nR; r++)
            if (rank[assign[r]] == k) y->perm[p++] = routed[r];
    }
    y->offset[E] = p;
    NL_ASSERT(p == F);
    /* static vectors m_e = Σ μ_i W_out[:, i], M = Σ m_e; sim router: normalised centroid of unit rows */
    const nl_mat *wr = cfg->ffn_gated && o->feature != NL_MOE_FEATURE_UP ? &w.w_gate : &w.w_up;
    float *row = malloc((size_t)D * sizeof(float));
    double *tot = calloc((size_t)D, sizeof(double));
    if (!row || !tot) { free(row), free(tot); goto oom; }
    for (int e = 0; e < E; e++) {
        memset(acc, 0, (size_t)D * sizeof(double));
        for (int q = y->offset[e]; q < y->offset[e + 1]; q++) {
            const int i = y->perm[q];
            for (int d = 0; d < D; d++) acc[d] += (double)y->mu[i] * nl_moe_mat_at(&w.w_down, d, i);
        }
        for (int d = 0; d < D; d++) y->stat[(size_t)e * D + d] = (float)acc[d], tot[d] += acc[d];
        memset(acc, 0, (size_t)D * sizeof(double));
        for (int q = y->offset[e]; q < y->offset[e + 1]; q++) {
            unit_row(wr, y->perm[q], row);
            for (int d = 0; d < D; d++) acc[d] += row[d];
        }
        for (int d = 0; d < D; d++) y->router_sim[(size_t)e * D + d] = (float)acc[d];
        normalise(y->router_sim + (size_t)e * D, D);
    }
    for (int d = 0; d < D; d++) y->stat_sum[d] = (float)tot[d];
    free(row), free(tot);
    goto done;
oom:
    st = nl_errorf(ctx, NL_ENOMEM, "out of memory (experts of layer %d)", y->layer);
done:
    free(order), free(routed), free(assign), free(first), free(rank), free(is_shared), free(freq), free(X), free(Wsub), free(acc);
    return st;
}

static uint64_t file_checksum(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    uint64_t h = NL_FNV_INIT;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0) h = nl_fnv1a(h, buf, n);
    fclose(fp);
    return h;
}

nl_status nl_moefy_run(nl_ctx *ctx, const nl_moefy_opts *o, nl_forward *f, const nl_dataset *calib, nl_moe **out) {
    *out = NULL;
    nl_model *m = nl_forward_model(f);
    const nl_config *cfg = nl_model_config(m);
    const int L = cfg->n_layers, F = cfg->d_ff, D = cfg->d_model;
    if (o->n_shared < 0 || o->n_shared >= F)
        return nl_errorf(ctx, NL_EINVAL, "--shared %d: a shared expert needs 0..%d of the %d neurons of '%s'", o->n_shared, F - 1, F,
                         nl_model_path(m));
    if (o->E < 1 || o->E > F - o->n_shared)
        return nl_errorf(ctx, NL_EINVAL, "--experts %d: '%s' has %d routed neurons per layer (d_ff %d, %d shared), so E must be in 1..%d",
                         o->E, nl_model_path(m), F - o->n_shared, F, o->n_shared, F - o->n_shared);
    if (calib->n_tokens < 4 * (int64_t)o->E)
        return nl_errorf(ctx, NL_EINVAL, "calibration set '%s' has %lld tokens, fewer than 4·E = %d", calib->path,
                         (long long)calib->n_tokens, 4 * o->E);
    int *layers = malloc((size_t)L * sizeof(int));
    if (!layers) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int nl = 0;
    if (o->layers) {
        for (int i = 0; i < o->n_layers; i++) {
            if (o->layers[i] < 0 || o->layers[i] >= L) {
                free(layers);
                return nl_errorf(ctx, NL_EINVAL, "--layers: layer %d is out of range: '%s' has layers 0..%d", o->layers[i],
                                 nl_model_path(m), L - 1);
            }
            if (i && o->layers[i] <= o->layers[i - 1]) {
                free(layers);
                return nl_errorf(ctx, NL_EINVAL, "--layers: the list must be ascending and distinct");
            }
            layers[nl++] = o->layers[i];
        }
    } else {
        for (int l = 0; l < L; l++) layers[nl++] = l;
    }
    for (int i = 0; i < nl; i++)
        if (nl_forward_get_ffn(f, layers[i], NULL)) {
            const int bad = layers[i];
            free(layers);
            return nl_errorf(ctx, NL_EINVAL, "layer %d of '%s' does not run the dense FFN: moefy needs the dense model", bad,
                             nl_model_path(m));
        }
    if (o->router != NL_MOE_ROUTER_SIM && o->router != NL_MOE_ROUTER_MLP) {
        free(layers);
        return nl_errorf(ctx, NL_EINVAL, "--router %s: moefy trains sim or mlp (the oracle needs no weights)", nl_moe_router_name(o->router));
    }
    const int mlp = o->router == NL_MOE_ROUTER_MLP;
    if (mlp && (o->mlp_max_tokens < 2 || o->mlp.K < 0 || o->mlp.K > o->E)) {
        free(layers);
        return nl_errorf(ctx, NL_EINVAL, "--router-tokens must be at least 2 and --router-k in 1..E (%d)", o->E);
    }
    const int coact = o->split == NL_MOE_SPLIT_COACT, pass2 = coact || o->n_shared > 0, n_passes = 1 + pass2 + mlp;
    if (coact && (size_t)nl * F * F * sizeof(float) > NL_MOE_COACT_MAX_BYTES) {
        free(layers);
        return nl_errorf(ctx, NL_EINVAL, "the co-activation counts of %d layers of %d neurons need %.1f GiB (limit %.0f GiB): "
                         "split fewer layers at a time with --layers", nl, F, (double)nl * F * F * 4 / (1 << 30),
                         (double)NL_MOE_COACT_MAX_BYTES / (1 << 30));
    }
    if (coact && calib->n_tokens >= (1 << 24)) {
        free(layers);
        return nl_errorf(ctx, NL_EINVAL, "calibration set '%s' has %lld tokens: co-activation counts are exact below 2^24 tokens",
                         calib->path, (long long)calib->n_tokens);
    }
    nl_moe_calib c;
    nl_status st = nl_moe_calib_init(ctx, &c, L, F, layers, nl, nl_forward_max_T(f), coact);
    nl_moe *moe = NULL;
    if (st == NL_OK) st = nl_moe_calib_pass(ctx, &c, f, calib, o->stride, 1, 1, n_passes);
    if (st == NL_OK && pass2) st = nl_moe_calib_pass(ctx, &c, f, calib, o->stride, 2, 2, n_passes);
    if (st == NL_OK && !(moe = nl_moe_alloc(L, D, F, o->E, layers, nl))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "experts", nl, "layer", ctx->progress);
        for (int i = 0; i < nl && st == NL_OK; i++) {
            st = build_layer(ctx, o, m, &c, i, &moe->layers[i]);
            nl_progress_add(&prog, 1);
            if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
        }
        nl_progress_end(&prog);
    }
    nl_moe_mlp_opts mo = o->mlp;
    mo.seed = o->seed;
    if (st == NL_OK && mlp) {
        if (nl_moe_alloc_mlp(moe) != 0) st = nl_errorf(ctx, NL_ENOMEM, "out of memory (MLP routers)");
        if (st == NL_OK) st = nl_moe_calib_router_init(ctx, &c, m, moe, o->mlp_fill, o->mlp_max_tokens);
        if (st == NL_OK) st = nl_moe_calib_pass(ctx, &c, f, calib, o->stride, 3, n_passes, n_passes);
        for (int i = 0; i < nl && st == NL_OK; i++) {
            nl_moe_layer *y = &moe->layers[i];
            char what[32];
            snprintf(what, sizeof what, "router layer %d", y->layer);
            st = nl_moe_mlp_train(ctx, &mo, D, o->E, c.keep, c.rx + (size_t)i * c.keep * D, c.rs + (size_t)i * c.keep * o->E,
                                  y->router_sim, what, y->mlp_w1, y->mlp_w2, &y->mlp);
        }
    }
    if (st == NL_OK) {
        nl_moe_info *in = &moe->info;
        in->n_shared = o->n_shared, in->split = o->split, in->feature = o->feature, in->router = NL_MOE_ROUTER_SIM;
        in->seed = o->seed, in->kmeans_iters = o->kmeans_iters, in->kmeans_restarts = o->kmeans_restarts;
        if (mlp) in->router = NL_MOE_ROUTER_MLP, in->has_mlp = 1, in->mlp = mo, in->mlp_fill = o->mlp_fill, in->mlp_max_tokens = o->mlp_max_tokens;
        in->model = strdup(o->model_name ? o->model_name : nl_model_path(m));
        in->calib_path = strdup(o->calib_name ? o->calib_name : calib->path);
        in->calib_checksum = file_checksum(calib->path);
        in->calib_docs = calib->n_docs, in->calib_tokens = c.n_tokens;
        char v[64];
        snprintf(v, sizeof v, "neuronlab %s", NL_VERSION);
        in->created_by = strdup(v);
        if (!in->model || !in->calib_path || !in->created_by) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    if (st == NL_OK) st = nl_moe_ffn_checksum(ctx, m, &moe->info.ffn_checksum);
    nl_moe_calib_release(&c);
    free(layers);
    if (st != NL_OK) { nl_moe_close(moe); return st; }
    *out = moe;
    return NL_OK;
}
