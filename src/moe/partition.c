/* partition.c — balanced k-way partition of a co-activation graph (the coact split of
 * MoEfication): METIS_PartGraphKway with a fixed seed and 3 % imbalance, then exact balance by
 * moving each oversized part's most weakly tied neuron to the undersized part it is most tied
 * to (see moe.h). Deterministic for (W, seed). Checked by tests/test_moe.c. */
#include <math.h>
#include <metis.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/moe.h"

double nl_moe_edge_cut(const float *W, int n, const int *assign) {
    double cut = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (assign[i] != assign[j]) cut += W[(size_t)i * n + j];
    return cut;
}

/* Moves neuron i from its part to q, updating the ties. */
static void move(const float *W, int n, int E, int i, int q, int *assign, int *size, double *tie) {
    const int p = assign[i];
    assign[i] = q;
    size[p]--, size[q]++;
    for (int j = 0; j < n; j++) {
        if (j == i) continue;
        const double w = W[(size_t)j * n + i];
        tie[(size_t)j * E + p] -= w;
        tie[(size_t)j * E + q] += w;
    }
}

/* Moves neurons until every part p holds exactly target[p]; tie (n, E) = Σ of W to each part. */
static void rebalance(const float *W, int n, int E, const int *target, int *assign, int *size, double *tie) {
    for (;;) {
        int p = -1;
        for (int e = 0; e < E && p < 0; e++)
            if (size[e] > target[e]) p = e;
        if (p < 0) return;
        int best_i = -1;
        for (int i = 0; i < n; i++)
            if (assign[i] == p && (best_i < 0 || tie[(size_t)i * E + p] < tie[(size_t)best_i * E + p])) best_i = i;
        int q = -1;
        for (int e = 0; e < E; e++)
            if (size[e] < target[e] && (q < 0 || tie[(size_t)best_i * E + e] > tie[(size_t)best_i * E + q])) q = e;
        move(W, n, E, best_i, q, assign, size, tie);
    }
}

/* Lowers the cut while keeping the sizes: pair swaps between parts and moves from a part of
 * lo+1 to one of lo, each applied when it cuts less (Kernighan–Lin style, first improvement). */
static void refine(const float *W, int n, int E, int *assign, int *size, double *tie) {
    const int lo = n / E;
    for (int pass = 0; pass < 50; pass++) {
        int improved = 0;
        for (int i = 0; i < n; i++) {
            const int p = assign[i];
            if (size[p] != lo + 1) continue;
            for (int q = 0; q < E; q++)
                if (size[q] == lo && tie[(size_t)i * E + q] - tie[(size_t)i * E + p] > 1e-9) {
                    move(W, n, E, i, q, assign, size, tie);
                    improved = 1;
                    break;
                }
        }
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) {
                const int p = assign[i], q = assign[j];
                if (p == q) continue;
                const double gain = tie[(size_t)i * E + q] - tie[(size_t)i * E + p] + tie[(size_t)j * E + p] - tie[(size_t)j * E + q] -
                                    2.0 * W[(size_t)i * n + j];
                if (gain > 1e-9) {
                    move(W, n, E, i, q, assign, size, tie);
                    move(W, n, E, j, p, assign, size, tie);
                    improved = 1;
                }
            }
        if (!improved) return;
    }
}

nl_status nl_moe_partition(nl_ctx *ctx, const float *W, int n, int E, uint64_t seed, int *assign) {
    if (E < 1 || E > n) return nl_errorf(ctx, NL_EINVAL, "cannot split %d neurons into %d experts", n, E);
    nl_status st = NL_OK;
    idx_t *xadj = malloc(((size_t)n + 1) * sizeof(idx_t)), *part = malloc((size_t)n * sizeof(idx_t));
    idx_t *adj = NULL, *wgt = NULL;
    int *size = calloc((size_t)E, sizeof(int)), *target = malloc((size_t)E * sizeof(int)), *order = malloc((size_t)E * sizeof(int));
    double *tie = calloc((size_t)n * E, sizeof(double));
    if (!xadj || !part || !size || !target || !order || !tie) goto oom;
    size_t m = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (j != i && lrint(0.5 * ((double)W[(size_t)i * n + j] + W[(size_t)j * n + i])) > 0) m++;
    adj = malloc((m + 1) * sizeof(idx_t)), wgt = malloc((m + 1) * sizeof(idx_t));
    if (!adj || !wgt) goto oom;
    m = 0;
    xadj[0] = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            long w = j != i ? lrint(0.5 * ((double)W[(size_t)i * n + j] + W[(size_t)j * n + i])) : 0;
            if (w > 0) adj[m] = j, wgt[m] = (idx_t)w, m++;
        }
        xadj[i + 1] = (idx_t)m;
    }
    if (E == 1 || m == 0) {
        /* METIS has nothing to cut: start from contiguous blocks, rebalancing is a no-op. */
        int sz[E];
        nl_moe_part_sizes(n, E, sz);
        for (int e = 0, i = 0; e < E; e++)
            for (int t = 0; t < sz[e]; t++) part[i++] = e;
    } else {
        idx_t nv = n, ncon = 1, np = E, obj = 0;
        idx_t opt[METIS_NOPTIONS];
        METIS_SetDefaultOptions(opt);
        opt[METIS_OPTION_SEED] = (idx_t)(seed % 2147483647u);
        opt[METIS_OPTION_UFACTOR] = 30;
        opt[METIS_OPTION_NUMBERING] = 0;
        int rc = METIS_PartGraphKway(&nv, &ncon, xadj, adj, NULL, NULL, wgt, &np, NULL, NULL, opt, &obj, part);
        if (rc != METIS_OK) {
            st = nl_errorf(ctx, rc == METIS_ERROR_MEMORY ? NL_ENOMEM : NL_EINVAL,
                           "METIS could not partition the co-activation graph of %d neurons into %d parts (error %d)", n, E, rc);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) assign[i] = (int)part[i], size[assign[i]]++;
    /* Targets: the n mod E largest parts (ties: lower index) keep one neuron more. */
    for (int e = 0; e < E; e++) order[e] = e;
    for (int a = 1; a < E; a++) { /* insertion sort by size desc, index asc */
        int v = order[a], b = a;
        while (b > 0 && (size[order[b - 1]] < size[v] || (size[order[b - 1]] == size[v] && order[b - 1] > v))) order[b] = order[b - 1], b--;
        order[b] = v;
    }
    for (int r = 0; r < E; r++) target[order[r]] = n / E + (r < n % E);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (j != i) tie[(size_t)i * E + assign[j]] += W[(size_t)i * n + j];
    rebalance(W, n, E, target, assign, size, tie);
    refine(W, n, E, assign, size, tie);
    goto done;
oom:
    st = nl_errorf(ctx, NL_ENOMEM, "out of memory (co-activation graph of %d neurons)", n);
done:
    free(xadj), free(part), free(adj), free(wgt), free(size), free(target), free(order), free(tie);
    return st;
}
