/* kmeans.c — balanced k-means (the param split of MoEfication): parts of sizes that differ by
 * at most one, k-means++ seeding, restarts, a regret-greedy balanced assignment improved by
 * pair swaps and big→small moves (see moe.h). Distances go through one GEMM per step.
 * Deterministic for (X, seed, iters, restarts) and a given BLAS; no global state. Checked by tests/test_moe.c
 * (exhaustive optima on tiny cases, exact sizes). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/moe.h"
#include "neuronlab/rng.h"

#define PURPOSE_KMEANS 0x6b6d65616e73ULL /* "kmeans" */

double nl_moe_kmeans_objective(const float *X, int n, int dim, int E, const int *assign) {
    double *mean = calloc((size_t)E * dim, sizeof(double));
    int *cnt = calloc((size_t)E, sizeof(int));
    double obj = 0;
    if (!mean || !cnt) { free(mean), free(cnt); return NAN; }
    for (int i = 0; i < n; i++) {
        cnt[assign[i]]++;
        for (int d = 0; d < dim; d++) mean[(size_t)assign[i] * dim + d] += X[(size_t)i * dim + d];
    }
    for (int e = 0; e < E; e++)
        for (int d = 0; d < dim && cnt[e]; d++) mean[(size_t)e * dim + d] /= cnt[e];
    for (int i = 0; i < n; i++)
        for (int d = 0; d < dim; d++) {
            double v = X[(size_t)i * dim + d] - mean[(size_t)assign[i] * dim + d];
            obj += v * v;
        }
    free(mean), free(cnt);
    return obj;
}

typedef struct {
    int n, E, dim;
    int lo, n_big;      /* every part holds lo or lo+1 points, exactly n_big of them lo+1 */
    float *cost;        /* (n, E) squared distance to each centre */
    float *C;           /* (E, dim) centres */
    float *xx;          /* (n) ‖x‖² */
    int *size;          /* (E) */
    int *order;         /* (n) scratch */
    double *key;        /* (n) scratch */
    int *la, *lb;       /* (n) swap candidate lists */
    int *mem;           /* (E, lo+1) members of each part (size[e] of them) */
} km;

/* qsort_r order of indices by key (double *) descending, ties by index. */
static int by_key_desc(const void *a, const void *b, void *key) {
    const double *k = key;
    int i = *(const int *)a, j = *(const int *)b;
    if (k[i] != k[j]) return k[i] > k[j] ? -1 : 1;
    return i - j;
}

static void costs(km *k, const float *X) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k->n, k->E, k->dim, -2.0f, X, k->dim, k->C, k->dim, 0.0f, k->cost, k->E);
    for (int e = 0; e < k->E; e++) {
        double cc = 0;
        for (int d = 0; d < k->dim; d++) cc += (double)k->C[(size_t)e * k->dim + d] * k->C[(size_t)e * k->dim + d];
        for (int i = 0; i < k->n; i++) k->cost[(size_t)i * k->E + e] += (float)(k->xx[i] + cc);
    }
}

/* Balanced assignment for the current costs: regret-greedy, then improving swaps and moves. */
static void assign_balanced(km *k, int *a) {
    const int n = k->n, E = k->E;
    for (int i = 0; i < n; i++) {
        const float *c = k->cost + (size_t)i * E;
        double b1 = DBL_MAX, b2 = DBL_MAX;
        for (int e = 0; e < E; e++) {
            if (c[e] < b1) b2 = b1, b1 = c[e];
            else if (c[e] < b2) b2 = c[e];
        }
        k->key[i] = E > 1 ? b2 - b1 : 0;
        k->order[i] = i;
    }
    qsort_r(k->order, (size_t)n, sizeof(int), by_key_desc, k->key);
    memset(k->size, 0, (size_t)E * sizeof(int));
    int big = 0;
    for (int r = 0; r < n; r++) {
        const int i = k->order[r];
        const float *c = k->cost + (size_t)i * E;
        int best = -1;
        for (int e = 0; e < E; e++) {
            int room = k->size[e] < k->lo || (k->size[e] == k->lo && big < k->n_big);
            if (room && (best < 0 || c[e] < c[best])) best = e;
        }
        if (k->size[best] == k->lo) big++;
        k->size[best]++;
        a[i] = best;
    }
    /* Local search: for each pair of parts, the best pair swaps (largest gains first), and
     * moves of a point from a part of lo+1 to a part of lo (keeps the multiset of sizes). */
    const int cap = k->lo + 1;
    memset(k->size, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < n; i++) k->mem[(size_t)a[i] * cap + k->size[a[i]]++] = i;
    for (int pass = 0; pass < 100; pass++) {
        int changed = 0;
        for (int A = 0; A < E; A++)
            for (int B = 0; B < E; B++) {
                if (A == B) continue;
                int *ma = k->mem + (size_t)A * cap, *mb = k->mem + (size_t)B * cap;
                const int na = k->size[A], nb = k->size[B];
                /* gain of moving a point of A to B, and of B to A */
                for (int t = 0; t < na; t++) {
                    const int i = ma[t];
                    k->la[t] = i, k->key[i] = (double)k->cost[(size_t)i * E + A] - k->cost[(size_t)i * E + B];
                }
                for (int t = 0; t < nb; t++) {
                    const int i = mb[t];
                    k->lb[t] = i, k->key[i] = (double)k->cost[(size_t)i * E + B] - k->cost[(size_t)i * E + A];
                }
                qsort_r(k->la, (size_t)na, sizeof(int), by_key_desc, k->key);
                qsort_r(k->lb, (size_t)nb, sizeof(int), by_key_desc, k->key);
                int t = 0, u = 0;
                if (na == k->lo + 1 && nb == k->lo && na && k->key[k->la[0]] > 1e-7) { /* an improving move */
                    a[k->la[0]] = B, t = 1, changed = 1;
                }
                for (; t < na && u < nb && k->key[k->la[t]] + k->key[k->lb[u]] > 1e-7; t++, u++) {
                    a[k->la[t]] = B, a[k->lb[u]] = A;
                    changed = 1;
                }
                if (t || u) { /* rebuild the two member lists */
                    int ca = 0, cb = 0;
                    for (int q = 0; q < na + nb; q++) {
                        const int i = q < na ? k->la[q] : k->lb[q - na];
                        if (a[i] == A) ma[ca++] = i;
                        else mb[cb++] = i;
                    }
                    k->size[A] = ca, k->size[B] = cb;
                }
            }
        if (!changed) break;
    }
}

static void centres(km *k, const float *X, const int *a) {
    double *acc = calloc((size_t)k->E * k->dim, sizeof(double));
    if (!acc) return; /* keeps the previous centres: still a valid (if slower) step */
    for (int i = 0; i < k->n; i++)
        for (int d = 0; d < k->dim; d++) acc[(size_t)a[i] * k->dim + d] += X[(size_t)i * k->dim + d];
    for (int e = 0; e < k->E; e++)
        for (int d = 0; d < k->dim; d++) k->C[(size_t)e * k->dim + d] = (float)(acc[(size_t)e * k->dim + d] / k->size[e]);
    free(acc);
}

/* k-means++: first centre uniform, then each next with probability ∝ squared distance to the
 * nearest centre so far. */
static void seed_centres(km *k, const float *X, nl_rng *r) {
    const int n = k->n, dim = k->dim;
    double *dmin = k->key;
    int first = (int)nl_rng_below(r, (uint64_t)n);
    memcpy(k->C, X + (size_t)first * dim, (size_t)dim * sizeof(float));
    for (int i = 0; i < n; i++) dmin[i] = DBL_MAX;
    for (int e = 1; e < k->E; e++) {
        const float *c = k->C + (size_t)(e - 1) * dim;
        double tot = 0;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int d = 0; d < dim; d++) {
                double v = X[(size_t)i * dim + d] - c[d];
                s += v * v;
            }
            if (s < dmin[i]) dmin[i] = s;
            tot += dmin[i];
        }
        int pick = n - 1;
        if (tot > 0) {
            double u = nl_rng_uniform(r) * tot;
            for (int i = 0; i < n; i++) {
                u -= dmin[i];
                if (u < 0) { pick = i; break; }
            }
        } else {
            pick = (int)nl_rng_below(r, (uint64_t)n);
        }
        memcpy(k->C + (size_t)e * dim, X + (size_t)pick * dim, (size_t)dim * sizeof(float));
    }
}

/* Exact local search on the objective itself (Hartigan-style): pair swaps between parts and
 * moves from a part of lo+1 points to one of lo, each applied when it lowers Σ SSE, with each
 * part's SSE = Σ‖x‖² − ‖Σx‖²/|part| kept from sufficient statistics. With the Gram matrix
 * G = X·Xᵀ and P[i][e] = x_i·Σ_e every candidate costs O(1) and an applied one O(n). Lloyd
 * steps stop in points where such a swap still helps; this removes them. Runs on the best
 * restart, at most 20 passes, when n ≤ NL_KM_REFINE_MAX_N (G is n² doubles). Returns 0 when
 * skipped or out of memory (no change). */
#define NL_KM_REFINE_MAX_N 4096
static int refine(const float *X, int n, int dim, int E, int lo, int *a) {
    if (n > NL_KM_REFINE_MAX_N) return 0;
    double *Xd = malloc((size_t)n * dim * sizeof(double)), *G = malloc((size_t)n * n * sizeof(double));
    double *P = calloc((size_t)n * E, sizeof(double)), *Q = calloc((size_t)E, sizeof(double)), *SS = calloc((size_t)E, sizeof(double));
    int *cnt = calloc((size_t)E, sizeof(int));
    int ok = Xd && G && P && Q && SS && cnt;
    if (ok) {
        for (size_t i = 0; i < (size_t)n * dim; i++) Xd[i] = X[i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dim, 1.0, Xd, dim, Xd, dim, 0.0, G, n);
        for (int i = 0; i < n; i++) Q[a[i]] += G[(size_t)i * n + i], cnt[a[i]]++;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) P[(size_t)i * E + a[j]] += G[(size_t)i * n + j];
        for (int i = 0; i < n; i++) SS[a[i]] += P[(size_t)i * E + a[i]];
        double total = 0;
        for (int e = 0; e < E; e++) total += Q[e] - SS[e] / cnt[e];
        const double eps = 1e-12 * (1 + fabs(total));
        for (int pass = 0; pass < 20; pass++) {
            int improved = 0;
            for (int i = 0; i < n; i++)
                for (int j = i + 1; j < n; j++) {
                    const int A = a[i], B = a[j];
                    if (A == B) continue;
                    /* swap: Σ_A += x_j − x_i, Σ_B −= x_j − x_i */
                    const double sad = P[(size_t)j * E + A] - P[(size_t)i * E + A], sbd = P[(size_t)j * E + B] - P[(size_t)i * E + B];
                    const double dd = G[(size_t)i * n + i] + G[(size_t)j * n + j] - 2 * G[(size_t)i * n + j];
                    const double ssa = SS[A] + 2 * sad + dd, ssb = SS[B] - 2 * sbd + dd;
                    const double delta = (SS[A] - ssa) / cnt[A] + (SS[B] - ssb) / cnt[B]; /* the Σ‖x‖² terms cancel */
                    if (delta < -eps) {
                        for (int k = 0; k < n; k++) {
                            const double v = G[(size_t)k * n + j] - G[(size_t)k * n + i];
                            P[(size_t)k * E + A] += v, P[(size_t)k * E + B] -= v;
                        }
                        Q[A] += G[(size_t)j * n + j] - G[(size_t)i * n + i], Q[B] -= G[(size_t)j * n + j] - G[(size_t)i * n + i];
                        SS[A] = ssa, SS[B] = ssb;
                        a[i] = B, a[j] = A;
                        improved = 1;
                    }
                }
            for (int i = 0; i < n; i++) {
                const int A = a[i];
                if (cnt[A] != lo + 1) continue;
                const double xx = G[(size_t)i * n + i];
                for (int B = 0; B < E; B++) {
                    if (cnt[B] != lo) continue;
                    const double ssa = SS[A] - 2 * P[(size_t)i * E + A] + xx, ssb = SS[B] + 2 * P[(size_t)i * E + B] + xx;
                    const double before = Q[A] - SS[A] / cnt[A] + Q[B] - SS[B] / cnt[B];
                    const double after = (Q[A] - xx) - ssa / (cnt[A] - 1) + (Q[B] + xx) - ssb / (cnt[B] + 1);
                    if (after - before < -eps) {
                        for (int k = 0; k < n; k++) {
                            const double v = G[(size_t)k * n + i];
                            P[(size_t)k * E + A] -= v, P[(size_t)k * E + B] += v;
                        }
                        Q[A] -= xx, Q[B] += xx, SS[A] = ssa, SS[B] = ssb, cnt[A]--, cnt[B]++;
                        a[i] = B;
                        improved = 1;
                        break;
                    }
                }
            }
            if (!improved) break;
        }
    }
    free(Xd), free(G), free(P), free(Q), free(SS), free(cnt);
    return ok;
}

nl_status nl_moe_kmeans(nl_ctx *ctx, const float *X, int n, int dim, int E, uint64_t seed, int iters, int restarts,
                        int *assign, double *objective) {
    if (E < 1 || E > n) return nl_errorf(ctx, NL_EINVAL, "cannot split %d neurons into %d experts", n, E);
    if (iters < 1) iters = 1;
    if (restarts < 1) restarts = 1;
    km k = {.n = n, .E = E, .dim = dim, .lo = n / E, .n_big = n % E};
    k.cost = malloc((size_t)n * E * sizeof(float));
    k.C = malloc((size_t)E * dim * sizeof(float));
    k.xx = malloc((size_t)n * sizeof(float));
    k.size = malloc((size_t)E * sizeof(int));
    k.order = malloc((size_t)n * sizeof(int));
    k.key = malloc((size_t)n * sizeof(double));
    k.la = malloc((size_t)n * sizeof(int));
    k.lb = malloc((size_t)n * sizeof(int));
    k.mem = malloc((size_t)E * (k.lo + 1) * sizeof(int));
    int *a = malloc((size_t)n * sizeof(int)), *prev = malloc((size_t)n * sizeof(int));
    nl_status st = NL_OK;
    if (!k.cost || !k.C || !k.xx || !k.size || !k.order || !k.key || !k.la || !k.lb || !k.mem || !a || !prev) {
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory (k-means of %d rows of %d)", n, dim);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int d = 0; d < dim; d++) s += (double)X[(size_t)i * dim + d] * X[(size_t)i * dim + d];
        k.xx[i] = (float)s;
    }
    double best = INFINITY;
    for (int r = 0; r < restarts; r++) {
        nl_rng rng;
        nl_rng_derive(&rng, seed, PURPOSE_KMEANS, (uint64_t)r);
        seed_centres(&k, X, &rng);
        for (int i = 0; i < n; i++) prev[i] = -1;
        for (int it = 0; it < iters; it++) {
            costs(&k, X);
            assign_balanced(&k, a);
            if (!memcmp(a, prev, (size_t)n * sizeof(int))) break;
            memcpy(prev, a, (size_t)n * sizeof(int));
            centres(&k, X, a);
        }
        double obj = nl_moe_kmeans_objective(X, n, dim, E, a);
        if (r == 0 || obj < best - 1e-9 * best) {
            best = obj;
            memcpy(assign, a, (size_t)n * sizeof(int));
        }
        if (nl_interrupted) { st = nl_errorf(ctx, NL_EINTR, "interrupted"); goto done; }
    }
    if (refine(X, n, dim, E, k.lo, assign))
        best = nl_moe_kmeans_objective(X, n, dim, E, assign);
    if (objective) *objective = best;
done:
    free(k.cost), free(k.C), free(k.xx), free(k.size), free(k.order), free(k.key), free(k.la), free(k.lb), free(k.mem), free(a), free(prev);
    return st;
}
