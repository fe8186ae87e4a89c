/* sparsity.c — the sparsity analysis (definitions, tables and method in sparsity.h).
 *
 * Rules: the activation file is streamed in blocks of rows, one layer at a time (a
 * statistics pass, then the CETT walks); nothing scales with N but the per-token FFN norms
 * of the CETT sample (8 bytes per sampled token). Every parallel reduction is exact
 * (integer counts, maxima, 2^-40 fixed-point sums) or done in global token order by one
 * thread, so results are identical for any thread count and block size.
 * Checked by tests/test_sparsity.c and tests/sparsity_cli.sh.
 */
#include "analyses/sparsity.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/model.h"
#include "neuronlab/summary_h5.h"

_Static_assert(NL_SUMMARY_R_BINS == 866, "the summary keeps the sparsity analysis' bins of r");

const double nl_sparsity_quantiles[NL_SPARSITY_N_QUANTILES] = {0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99};

/* ------------------------------------------------------------ histogram of r ∈ [0, 1] */

/* Bin 0: r = 0. Bin 1: (0, 2^-27]. Bin 2 + j, j = 0..863: (edge(j), edge(j+1)] with
 * edge(j) the float whose bits are (3200 + j) << 18: 2^e·(1 + m/32), e = -27..-1, m = 0..31;
 * edge(0) = 2^-27, edge(864) = 1. */
#define NB 866
#define EDGE0 3200u
#define N_CDF 161 /* x = 10^(k/20), k = -160..0 */

static inline uint32_t fbits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}
static inline float bitsf(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static double edge(int j) { return (double)bitsf((EDGE0 + (uint32_t)j) << 18); }
static void bin_range(int b, double *lo, double *hi) {
    if (b == 0) *lo = *hi = 0;
    else if (b == 1) *lo = 0, *hi = edge(0);
    else *lo = edge(b - 2), *hi = edge(b - 1);
}

/* P(r ≤ x) from a histogram of total pairs: exact at edges, linear inside a bin. */
static double hist_cdf(const int64_t *h, int64_t total, double x) {
    if (total <= 0) return NAN;
    double c = (double)h[0];
    for (int b = 1; b < NB; b++) {
        double lo, hi;
        bin_range(b, &lo, &hi);
        if (hi <= x) c += (double)h[b];
        else {
            if (x > lo) c += (double)h[b] * (x - lo) / (hi - lo);
            break;
        }
    }
    return c / (double)total;
}

/* The q-quantile: 0 among the zeros, else linear inside the bin holding the q·total-th pair. */
static double hist_quantile(const int64_t *h, int64_t total, double q) {
    if (total <= 0) return NAN;
    double want = q * (double)total, cum = (double)h[0];
    if (want <= cum) return 0;
    for (int b = 1; b < NB; b++) {
        if (!h[b]) continue;
        if (cum + (double)h[b] >= want) {
            double lo, hi;
            bin_range(b, &lo, &hi);
            return lo + (hi - lo) * (want - cum) / (double)h[b];
        }
        cum += (double)h[b];
    }
    return 1.0;
}


/* ------------------------------------------------------------------------ state */

#define FIX_ONE 1099511627776.0 /* 2^40: CETT ratios are summed in this fixed point */
#define RATIO_CAP 4194304.0     /* 2^22: a per-token ratio above this is clamped (bias ≈ -W a) */

typedef __int128 i128;

typedef struct {
    int64_t hist[2][NB];
    int64_t below[2][2]; /* [indicator][r < 0.1, r < 0.2] */
    double sum_r[2];
} ind_acc;

typedef struct { /* per (output group, target): the CETT search */
    int active, resolved, infinite;
    uint32_t lo, hi;        /* float bits: CETT(lo) ≤ target < CETT(hi) */
    double cett_lo;         /* CETT(lo) */
    int64_t cnt_lo;         /* pairs with n < lo */
    uint32_t *pts;          /* this pass's interior points (bits, ascending) */
    int npts;
} bracket;

typedef struct { /* per thread, per CETT walk */
    uint32_t *key, *idx, *key2, *idx2; /* (F) */
    double *y;                          /* (D) */
    double *ybase;                      /* (tb, D) per-token sums below the first point */
    int *nbase;                         /* (tb) */
    int *ch_e;                          /* (F + 1) */
    double *ch_t;
    int64_t *ch_c;
} walker;

struct nl_sparsity {
    nl_sparsity_opts o;
    char *path, *model_path;
    nl_h5_reader *r;
    const nl_h5_info *in;
    nl_summary *sum;   /* the input is a summary (record --stats): statistics read, not computed */
    int *kgroup;       /* (K) summary group of each internal group */
    int tau_idx[NL_SPARSITY_MAX_THRESHOLDS], res_idx; /* summary threshold of each τ / the resident one */
    nl_model *m;
    int L, D, F, n_rec, nt, ntau;
    int tb;            /* tokens per CETT task: TB × D doubles stay in L2 */
    int64_t N;
    /* label groups: K internal groups (distinct document labels, byte order), n_out output
     * groups (0 = all tokens; o ≥ 1 = internal group out_k[o], a non-empty label with tokens) */
    int K, n_out;
    char **klabel;     /* (K) */
    int64_t *ktok;     /* (K) tokens */
    int *doc_k;        /* (Dc) */
    int *out_k;        /* (n_out) out_k[0] = -1 */
    int64_t *otok;     /* (n_out) tokens */
    /* CETT sample */
    int64_t n_samp;
    int64_t *ksamp;    /* (K) sampled tokens */
    /* thresholds as exact float bounds */
    float c_below[2], c_tau[NL_SPARSITY_MAX_THRESHOLDS], c_dead, c_res;
    /* per-layer accumulators */
    ind_acc *acc;      /* (K) */
    int64_t *th_hist;  /* (nt, K, 2, NB) */
    int64_t *th_below; /* (nt, K, 2, 2) */
    uint16_t *th_bins; /* (nt, 2, F) bin of each neuron's r for the current token */
    int64_t *cnt;      /* (K, ntau, F) tokens with r_value > τ */
    int64_t *cnt_res;  /* (K, F) tokens with r_value > resident_threshold */
    float *max_r;      /* (K, F) */
    float *max_abs;    /* (K, F) */
    double *sum_abs;   /* (K, F) */
    float *wn;         /* (F) */
    float n_lo, n_hi;  /* smallest positive and largest n over the CETT sample */
    /* block buffers */
    int brows;
    float *blk;        /* (brows, F) */
    float *maxv, *maxn;/* (brows) */
    double *srv, *srn; /* (brows) per-token Σ r */
    int *tk;           /* (brows) internal group */
    int64_t *sidx;     /* (brows) index in the CETT sample, -1 when not sampled */
    /* CETT */
    float *Wt;         /* (F, D) row i = W_out[:, i] */
    float *bias;       /* (D) or NULL */
    double *ffn;       /* (n_samp) ‖FFN_t‖ of the current layer */
    walker *wk;        /* (nt) */
    /* overall (layer -1) per output group */
    ind_acc *all;      /* (n_out) */
    int64_t *all_dead, *all_res;
    double *all_sp, *all_ce;   /* (n_out, targets) sums over layers */
    int *all_nc;               /* (n_out, targets) layers with a result */
    /* rows */
    nl_sparsity_row *rows;
    int n_rows, cap_rows;
    /* this layer's CETT results and curve, for writing */
    nl_sparsity_row *cur;      /* (n_out) rows of the current layer */
    double *curve;             /* (n_out, curve_max, 3) epsilon, sparsity, cett */
    int *n_curve;              /* (n_out) */
    int curve_max;
    /* database */
    nl_results *db;
    int64_t run_id;
    sqlite3_stmt *st[8];
};

static void pick_kernels(void);

enum { S_LAYER, S_HIST, S_CDF, S_Q, S_CETT, S_CURVE, S_NEURON, S_FREQ };

void nl_sparsity_opts_init(nl_sparsity_opts *o) {
    memset(o, 0, sizeof *o);
    static const double th[] = {0, 0.01, 0.1, 0.2};
    memcpy(o->thresholds, th, sizeof th);
    o->n_thresholds = 4;
    o->dead_threshold = 0.01;
    o->resident_threshold = 0.1;
    o->resident_frac = 0.9;
    o->cett_targets[0] = 0.1;
    o->cett_targets[1] = 0.2;
    o->n_cett_targets = 2;
    o->cett_grid = 256;
    o->cett_refine = 4096;
    o->label_neurons = 1;
}

static void sparsity_close(nl_sparsity *s) {
    if (!s) return;
    for (int i = 0; i < 8; i++) sqlite3_finalize(s->st[i]);
    nl_h5_reader_close(s->r);
    nl_summary_destroy(s->sum);
    free(s->kgroup);
    nl_model_close(s->m);
    if (s->klabel)
        for (int k = 0; k < s->K; k++) free(s->klabel[k]);
    free(s->klabel), free(s->ktok), free(s->doc_k), free(s->out_k), free(s->otok), free(s->ksamp);
    free(s->acc), free(s->th_hist), free(s->th_below), free(s->th_bins), free(s->cnt), free(s->cnt_res), free(s->max_r);
    free(s->max_abs), free(s->sum_abs), free(s->wn);
    free(s->blk), free(s->maxv), free(s->maxn), free(s->srv), free(s->srn), free(s->tk), free(s->sidx);
    free(s->Wt), free(s->bias), free(s->ffn);
    if (s->wk)
        for (int t = 0; t < s->nt; t++) {
            walker *w = &s->wk[t];
            free(w->key), free(w->idx), free(w->key2), free(w->idx2), free(w->y), free(w->ybase), free(w->nbase), free(w->ch_e), free(w->ch_t), free(w->ch_c);
        }
    free(s->wk);
    free(s->all), free(s->all_dead), free(s->all_res), free(s->all_sp), free(s->all_ce), free(s->all_nc);
    free(s->rows), free(s->cur), free(s->curve), free(s->n_curve);
    free(s->path), free(s->model_path);
    free(s);
}

/* --------------------------------------------------------------------- open */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static nl_status check_opts(nl_ctx *ctx, const nl_sparsity_opts *o) {
    if (o->n_thresholds < 1 || o->n_thresholds > NL_SPARSITY_MAX_THRESHOLDS)
        return nl_errorf(ctx, NL_EINVAL, "sparsity: between 1 and %d frequency thresholds, not %d", NL_SPARSITY_MAX_THRESHOLDS,
                         o->n_thresholds);
    for (int j = 0; j < o->n_thresholds; j++) {
        if (!(o->thresholds[j] >= 0 && o->thresholds[j] < 1))
            return nl_errorf(ctx, NL_EINVAL, "sparsity: frequency threshold %g is outside [0, 1)", o->thresholds[j]);
        for (int i = 0; i < j; i++)
            if (o->thresholds[i] == o->thresholds[j])
                return nl_errorf(ctx, NL_EINVAL, "sparsity: frequency threshold %g is given twice", o->thresholds[j]);
    }
    if (!(o->dead_threshold >= 0 && o->dead_threshold < 1))
        return nl_errorf(ctx, NL_EINVAL, "sparsity: dead threshold %g is outside [0, 1)", o->dead_threshold);
    if (!(o->resident_threshold >= 0 && o->resident_threshold < 1))
        return nl_errorf(ctx, NL_EINVAL, "sparsity: resident threshold %g is outside [0, 1)", o->resident_threshold);
    if (!(o->resident_frac > 0 && o->resident_frac <= 1))
        return nl_errorf(ctx, NL_EINVAL, "sparsity: resident fraction %g is outside (0, 1]", o->resident_frac);
    if (!o->no_cett) {
        if (o->n_cett_targets < 1 || o->n_cett_targets > NL_SPARSITY_MAX_TARGETS)
            return nl_errorf(ctx, NL_EINVAL, "sparsity: between 1 and %d CETT targets, not %d", NL_SPARSITY_MAX_TARGETS,
                             o->n_cett_targets);
        for (int j = 0; j < o->n_cett_targets; j++) {
            if (!(o->cett_targets[j] > 0 && o->cett_targets[j] < 1))
                return nl_errorf(ctx, NL_EINVAL, "sparsity: CETT target %g is outside (0, 1)", o->cett_targets[j]);
            for (int i = 0; i < j; i++)
                if (o->cett_targets[i] == o->cett_targets[j])
                    return nl_errorf(ctx, NL_EINVAL, "sparsity: CETT target %g is given twice", o->cett_targets[j]);
        }
        if (o->cett_grid < 2 || o->cett_refine < 1)
            return nl_errorf(ctx, NL_EINVAL, "sparsity: CETT grid %d / refine %d too small", o->cett_grid, o->cett_refine);
        if (o->cett_tokens < 0) return nl_errorf(ctx, NL_EINVAL, "sparsity: CETT token sample %lld is negative", (long long)o->cett_tokens);
    }
    if (o->block_rows < 0) return nl_errorf(ctx, NL_EINVAL, "sparsity: block of %d rows", o->block_rows);
    return NL_OK;
}

/* Compares the model's W_out column norms with the file's w_out_norm of layer l. */
static nl_status check_norms(nl_ctx *ctx, nl_sparsity *s, int l, const float *file_wn) {
    float *mn = malloc(sizeof(float) * (size_t)s->F);
    if (!mn) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = nl_model_w_out_norm(ctx, s->m, l, mn);
    float big = 0;
    for (int i = 0; st == NL_OK && i < s->F; i++) big = fmaxf(big, fabsf(file_wn[i]));
    for (int i = 0; st == NL_OK && i < s->F; i++) {
        float tol = 1e-4f * fmaxf(fabsf(file_wn[i]), 1e-3f * big) + 1e-30f;
        if (!(fabsf(mn[i] - file_wn[i]) <= tol))
            st = nl_errorf(ctx, NL_EFORMAT,
                           "model '%s' does not match '%s': layer %d W_out column %d has norm %.6g, the file's w_out_norm says %.6g",
                           s->model_path, s->path, l, i, (double)mn[i], (double)file_wn[i]);
    }
    free(mn);
    return st;
}

static nl_status open_model(nl_ctx *ctx, nl_sparsity *s) {
    const nl_h5_meta *me = &s->in->meta;
    const char *mp = s->o.model ? s->o.model : me->model;
    if (!mp || !*mp)
        return nl_errorf(ctx, NL_EINVAL, "'%s' names no model (its 'model' attribute is empty): pass --model MODEL, or --no-cett",
                         s->path);
    s->model_path = strdup(mp);
    if (!s->model_path) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = nl_model_open(ctx, mp, &s->m);
    if (st != NL_OK) {
        if (!s->o.model) {
            size_t n = strlen(ctx->msg);
            snprintf(ctx->msg + n, sizeof ctx->msg - n, " (the model named by '%s'; pass --model MODEL, or --no-cett)", s->path);
        }
        return st;
    }
    const nl_config *c = nl_model_config(s->m);
    const char *what[3] = {"n_layers", "d_model", "d_ff"};
    int mv[3] = {c->n_layers, c->d_model, c->d_ff}, fv[3] = {me->n_layers, me->d_model, me->d_ff};
    for (int i = 0; i < 3; i++)
        if (mv[i] != fv[i])
            return nl_errorf(ctx, NL_EFORMAT, "model '%s' does not match '%s': %s is %d in the model, %d in the activation file", mp,
                             s->path, what[i], mv[i], fv[i]);
    /* Same shapes: a quick look at the first recorded layer's W_out catches another checkpoint. */
    int l0 = me->layers[0];
    float *wn = malloc(sizeof(float) * (size_t)s->F);
    if (!wn) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_ctx c2;
    nl_ctx_init(&c2);
    if (nl_h5_reader_read_w_out_norm(s->r, &c2, l0, wn) == NL_OK) st = check_norms(ctx, s, l0, wn);
    free(wn);
    return st;
}

/* The input is a summary (record --stats): reads it and checks that it holds what the options
 * ask for — no CETT (it needs every token's activations), every frequency threshold and the
 * resident threshold among the summary's. */
static nl_status summary_open(nl_ctx *ctx, nl_sparsity *s, const char *path) {
    if (!s->o.no_cett)
        return nl_errorf(ctx, NL_EINVAL,
                         "'%s' is a summary (record --stats): CETT needs the per-token activations of a full activation file "
                         "(record without --stats); pass --no-cett",
                         path);
    nl_status st = nl_summary_read(ctx, path, &s->sum);
    if (st != NL_OK) return st;
    char have[160] = "";
    for (int k = 0; k < s->sum->n_tau; k++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%g", k ? ", " : "", s->sum->tau[k]);
    for (int j = 0; j <= s->o.n_thresholds; j++) {
        double t = j < s->o.n_thresholds ? s->o.thresholds[j] : s->o.resident_threshold;
        int idx = -1;
        for (int k = 0; k < s->sum->n_tau; k++)
            if (s->sum->tau[k] == t) idx = k;
        if (idx < 0)
            return nl_errorf(ctx, NL_EINVAL,
                             "'%s' is a summary with frequencies above %s only: the %s threshold %g needs a full activation file",
                             path, have, j < s->o.n_thresholds ? "frequency" : "resident", t);
        if (j < s->o.n_thresholds) s->tau_idx[j] = idx;
        else s->res_idx = idx;
    }
    s->in = &s->sum->info;
    return NL_OK;
}

/* Validates the inputs and allocates the state; nothing is written anywhere. */
static nl_status sparsity_open(nl_ctx *ctx, const char *acts_path, const nl_sparsity_opts *opts, nl_sparsity **out) {
    NL_ASSERT(acts_path && out);
    *out = NULL;
    nl_sparsity_opts def;
    if (!opts) {
        nl_sparsity_opts_init(&def);
        opts = &def;
    }
    nl_status st = check_opts(ctx, opts);
    if (st != NL_OK) return st;
    pick_kernels();
    nl_sparsity *s = calloc(1, sizeof *s);
    if (!s) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    s->o = *opts;
    s->o.model = NULL; /* not kept: borrowed */
    s->run_id = -1;
    s->path = strdup(acts_path);
    if (!s->path) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    if (nl_h5_file_kind(acts_path) == NL_H5_KIND_SUMMARY) {
        if ((st = summary_open(ctx, s, acts_path)) != NL_OK) goto fail;
    } else {
        if ((st = nl_h5_reader_open(ctx, acts_path, &s->r)) != NL_OK) goto fail;
        s->in = nl_h5_reader_info(s->r);
    }
    const nl_h5_meta *me = &s->in->meta;
    if (me->n_rec == 0) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' records no layers", acts_path); goto fail; }
    if (me->no_acts && !s->sum) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' holds no activations (no /layers/{l}/ffn_act: recorded pooled-only or with --hook "
                       "without ffn_act): sparsity needs ffn_act (record with --hook ffn_act, the default)",
                       acts_path);
        goto fail;
    }
    if (s->in->n_tokens == 0) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' holds no tokens", acts_path); goto fail; }
    s->L = me->n_layers, s->D = me->d_model, s->F = me->d_ff, s->n_rec = me->n_rec, s->N = s->in->n_tokens;
    s->ntau = s->o.n_thresholds;
    s->nt = ctx->n_threads > 0 ? ctx->n_threads : omp_get_max_threads();
    if (s->nt < 1) s->nt = 1;
    if (!opts->no_cett) {
        s->o.model = opts->model;
        st = open_model(ctx, s);
        s->o.model = NULL;
        if (st != NL_OK) goto fail;
    }

    /* Label groups. */
    int64_t Dc = s->in->n_docs;
    char **sorted = malloc(sizeof(char *) * (size_t)(Dc > 0 ? Dc : 1));
    s->doc_k = malloc(sizeof(int) * (size_t)(Dc > 0 ? Dc : 1));
    if (!sorted || !s->doc_k) { free(sorted); st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    for (int64_t d = 0; d < Dc; d++) sorted[d] = (char *)s->in->doc_labels[d];
    qsort(sorted, (size_t)Dc, sizeof(char *), cmp_str);
    s->klabel = calloc((size_t)(Dc > 0 ? Dc : 1), sizeof(char *));
    for (int64_t d = 0; s->klabel && d < Dc; d++)
        if (d == 0 || strcmp(sorted[d], sorted[d - 1])) s->klabel[s->K++] = strdup(sorted[d]);
    free(sorted);
    if (!s->klabel) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    s->ktok = calloc((size_t)s->K, sizeof(int64_t));
    s->ksamp = calloc((size_t)s->K, sizeof(int64_t));
    s->out_k = malloc(sizeof(int) * (size_t)(s->K + 1));
    s->otok = calloc((size_t)(s->K + 1), sizeof(int64_t));
    if (!s->ktok || !s->ksamp || !s->out_k || !s->otok) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    for (int k = 0; k < s->K; k++)
        if (!s->klabel[k]) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    for (int64_t d = 0; d < Dc; d++) {
        int lo = 0, hi = s->K - 1; /* binary search of the label */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (strcmp(s->klabel[mid], s->in->doc_labels[d]) < 0) lo = mid + 1;
            else hi = mid;
        }
        s->doc_k[d] = lo;
        s->ktok[lo] += s->in->doc_offsets[d + 1] - s->in->doc_offsets[d];
    }
    /* CETT sample: token t is in it when floor((t+1)S/N) > floor(tS/N); its index is floor(tS/N). */
    s->n_samp = (s->o.cett_tokens > 0 && s->o.cett_tokens < s->N) ? s->o.cett_tokens : s->N;
    /* The tokens of document d in it: Σ_t [floor((t+1)S/N) > floor(tS/N)] over its span [a, b), a
     * telescoping sum of steps of 0 or 1 (S ≤ N) = floor(bS/N) − floor(aS/N): O(1) per document. */
    for (int64_t d = 0; d < Dc; d++) {
        unsigned __int128 S = (uint64_t)s->n_samp, N = (uint64_t)s->N;
        uint64_t a = (uint64_t)s->in->doc_offsets[d], b = (uint64_t)s->in->doc_offsets[d + 1];
        s->ksamp[s->doc_k[d]] += (int64_t)((b * S) / N - (a * S) / N);
    }
    if (s->sum) {
        s->kgroup = malloc(sizeof(int) * (size_t)(s->K > 0 ? s->K : 1));
        if (!s->kgroup) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
        for (int k = 0; k < s->K; k++)
            if ((s->kgroup[k] = nl_summary_group(s->sum, s->klabel[k])) < 0) {
                st = nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: label '%s' has no group", acts_path, s->klabel[k]);
                goto fail;
            }
    }
    s->out_k[0] = -1;
    s->otok[0] = s->N;
    s->n_out = 1;
    for (int k = 0; k < s->K; k++)
        if (s->klabel[k][0] && s->ktok[k] > 0) {
            s->otok[s->n_out] = s->ktok[k];
            s->out_k[s->n_out++] = k;
        }

    s->c_below[0] = nl_float_ceil(0.1);
    s->c_below[1] = nl_float_ceil(0.2);
    for (int j = 0; j < s->ntau; j++) s->c_tau[j] = nl_float_floor(s->o.thresholds[j]);
    s->c_dead = nl_float_floor(s->o.dead_threshold);
    s->c_res = nl_float_floor(s->o.resident_threshold);

    /* Buffers. */
    size_t F = (size_t)s->F, K = (size_t)s->K, D = (size_t)s->D;
    int64_t br = s->o.block_rows > 0 ? s->o.block_rows : (int64_t)((8u << 20) / (F * sizeof(float)));
    if (br < 1) br = 1;
    if (br > s->N) br = s->N;
    if (br > (1 << 30) / (int64_t)F) br = (1 << 30) / (int64_t)F > 0 ? (1 << 30) / (int64_t)F : 1;
    s->brows = (int)br;
    size_t B = (size_t)s->brows;
    s->acc = calloc(K, sizeof(ind_acc));
    s->th_hist = calloc((size_t)s->nt * K * 2 * NB, sizeof(int64_t));
    s->th_below = calloc((size_t)s->nt * K * 4, sizeof(int64_t));
    s->th_bins = malloc((size_t)s->nt * 2 * F * sizeof(uint16_t));
    s->cnt = calloc(K * (size_t)s->ntau * F, sizeof(int64_t));
    s->cnt_res = calloc(K * F, sizeof(int64_t));
    s->max_r = calloc(K * F, sizeof(float));
    s->max_abs = calloc(K * F, sizeof(float));
    s->sum_abs = calloc(K * F, sizeof(double));
    s->wn = malloc(F * sizeof(float));
    s->blk = malloc(B * F * sizeof(float));
    s->maxv = malloc(B * sizeof(float));
    s->maxn = malloc(B * sizeof(float));
    s->srv = malloc(B * sizeof(double));
    s->srn = malloc(B * sizeof(double));
    s->tk = malloc(B * sizeof(int));
    s->sidx = malloc(B * sizeof(int64_t));
    size_t no = (size_t)s->n_out, nc = (size_t)(s->o.no_cett ? 1 : s->o.n_cett_targets);
    s->all = calloc(no, sizeof(ind_acc));
    s->all_dead = calloc(no, sizeof(int64_t));
    s->all_res = calloc(no, sizeof(int64_t));
    s->all_sp = calloc(no * nc, sizeof(double));
    s->all_ce = calloc(no * nc, sizeof(double));
    s->all_nc = calloc(no * nc, sizeof(int));
    s->cur = calloc(no, sizeof(nl_sparsity_row));
    s->curve_max = 160;
    s->curve = malloc(no * (size_t)s->curve_max * 3 * sizeof(double));
    s->n_curve = calloc(no, sizeof(int));
    int ok = s->acc && s->th_hist && s->th_below && s->th_bins && s->cnt && s->cnt_res && s->max_r && s->max_abs && s->sum_abs && s->wn &&
             s->blk && s->maxv && s->maxn && s->srv && s->srn && s->tk && s->sidx && s->all && s->all_dead && s->all_res &&
             s->all_sp && s->all_ce && s->all_nc && s->cur && s->curve && s->n_curve;
    if (ok && !s->o.no_cett) {
        s->tb = (int)(32768 / D); /* 256 KiB of doubles */
        if (s->tb > 64) s->tb = 64;
        if (s->tb < 1) s->tb = 1;
        s->Wt = malloc(F * D * sizeof(float));
        s->ffn = malloc((size_t)s->n_samp * sizeof(double));
        s->wk = calloc((size_t)s->nt, sizeof(walker));
        ok = s->Wt && s->ffn && s->wk;
        for (int t = 0; ok && t < s->nt; t++) {
            walker *w = &s->wk[t];
            w->key = malloc(F * 4), w->idx = malloc(F * 4), w->key2 = malloc(F * 4), w->idx2 = malloc(F * 4);
            w->y = malloc(D * sizeof(double));
            w->ybase = malloc((size_t)s->tb * D * sizeof(double));
            w->nbase = malloc((size_t)s->tb * sizeof(int));
            w->ch_e = malloc((F + 1) * sizeof(int)), w->ch_t = malloc((F + 1) * sizeof(double));
            w->ch_c = malloc((F + 1) * sizeof(int64_t));
            ok = w->key && w->idx && w->key2 && w->idx2 && w->y && w->ybase && w->nbase && w->ch_e && w->ch_t && w->ch_c;
        }
    }
    if (!ok) {
        st = nl_errorf(ctx, NL_ENOMEM, "cannot analyse '%s': out of memory (d_ff %d, %d labels)", acts_path, s->F, s->K);
        goto fail;
    }
    *out = s;
    return NL_OK;
fail:
    sparsity_close(s);
    return st;
}

/* ------------------------------------------------------------ block iteration */

/* Fills tk (internal group) and sidx (CETT sample index or -1) for rows [r0, r0+T). */
static void block_groups(nl_sparsity *s, int64_t r0, int T) {
    const int64_t *off = s->in->doc_offsets;
    int64_t lo = 0, hi = s->in->n_docs - 1; /* last document with off[d] <= r0 */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (off[mid] <= r0) lo = mid;
        else hi = mid - 1;
    }
    int64_t d = lo;
    uint64_t S = (uint64_t)s->n_samp, N = (uint64_t)s->N;
    for (int t = 0; t < T; t++) {
        int64_t row = r0 + t;
        while (off[d + 1] <= row) d++;
        s->tk[t] = s->doc_k[d];
        unsigned __int128 a = (unsigned __int128)row * S, b = a + S;
        s->sidx[t] = b / N > a / N ? (int64_t)(a / N) : -1;
    }
}

static nl_status read_block(nl_ctx *ctx, nl_sparsity *s, int l, int64_t r0, int T) {
    if (nl_interrupted) return nl_errorf(ctx, NL_EINTR, "interrupted");
    nl_status st = nl_h5_reader_read_acts(s->r, ctx, l, r0, T, s->blk);
    if (st == NL_OK) block_groups(s, r0, T);
    return st;
}

/* --------------------------------------------------------- statistics pass */

static void reset_layer(nl_sparsity *s) {
    size_t F = (size_t)s->F, K = (size_t)s->K;
    memset(s->acc, 0, K * sizeof(ind_acc));
    memset(s->th_hist, 0, (size_t)s->nt * K * 2 * NB * sizeof(int64_t));
    memset(s->th_below, 0, (size_t)s->nt * K * 4 * sizeof(int64_t));
    memset(s->cnt, 0, K * (size_t)s->ntau * F * sizeof(int64_t));
    memset(s->cnt_res, 0, K * F * sizeof(int64_t));
    memset(s->max_r, 0, K * F * sizeof(float));
    memset(s->max_abs, 0, K * F * sizeof(float));
    memset(s->sum_abs, 0, K * F * sizeof(double));
    s->n_lo = INFINITY;
    s->n_hi = 0;
}

/* Per token (parallel over tokens): maxima, histograms, exact fractions, Σ r; the CETT
 * range of n. Returns the first row with a non-finite activation or -1. The inner loops
 * are `omp simd` (vectorised divisions; the per-token sums' order is fixed by the code). */
static int64_t stats_tokens(nl_sparsity *s, int T) {
    const int F = s->F, K = s->K;
    int64_t bad = INT64_MAX;
    float glo = INFINITY, ghi = 0;
    const float c1 = s->c_below[0], c2 = s->c_below[1];
#pragma omp parallel num_threads(s->nt)
    {
        int tid = omp_get_thread_num();
        int64_t *hist = s->th_hist + (size_t)tid * K * 2 * NB, *below = s->th_below + (size_t)tid * K * 4;
        uint16_t *bv = s->th_bins + (size_t)tid * 2 * F, *bn = bv + F;
        int64_t mybad = INT64_MAX;
        float lo = INFINITY, hi = 0;
        const float *wn = s->wn;
#pragma omp for schedule(static)
        for (int t = 0; t < T; t++) {
            const float *a = s->blk + (size_t)t * F;
            /* maxima on the float bits (non-negative floats order like their bits): integer
             * max/min vectorise without a latency chain; bits above +FLT_MAX are inf/NaN or a
             * negative product. The smallest positive n is min(bits(n) - 1) + 1 (0 wraps). */
            uint32_t ubv = 0, ubn = 0, uln = UINT32_MAX, ubad = 0;
#pragma omp simd reduction(max : ubv, ubn, ubad) reduction(min : uln)
            for (int i = 0; i < F; i++) {
                float v = fabsf(a[i]), n = v * wn[i];
                uint32_t xv, xn;
                memcpy(&xv, &v, 4);
                memcpy(&xn, &n, 4);
                ubad = xv > ubad ? xv : ubad;
                ubad = xn > ubad ? xn : ubad;
                ubv = xv > ubv ? xv : ubv;
                ubn = xn > ubn ? xn : ubn;
                uln = xn - 1 < uln ? xn - 1 : uln;
            }
            if (ubad > 0x7f7fffffu) {
                if (t < mybad) mybad = t;
                continue;
            }
            float mv = bitsf(ubv), mn = bitsf(ubn);
            s->maxv[t] = mv, s->maxn[t] = mn;
            int k = s->tk[t];
            int64_t *hv = hist + ((size_t)k * 2) * NB, *hn = hv + NB;
            double sv = 0, sn = 0;
            int b1v = 0, b2v = 0, b1n = 0, b2n = 0;
            /* r = x / max, or 0 for every neuron when max = 0 (dividing by 1 then gives 0 too) */
            const float dv = mv > 0 ? mv : 1.0f, dn = mn > 0 ? mn : 1.0f;
#pragma omp simd reduction(+ : sv, sn, b1v, b2v, b1n, b2n)
            for (int i = 0; i < F; i++) {
                float v = fabsf(a[i]), n = v * wn[i];
                float rv = v / dv, rn = n / dn;
                uint32_t xv, xn;
                memcpy(&xv, &rv, 4);
                memcpy(&xn, &rn, 4);
                int jv = (int)((xv - 1) >> 18) - (int)EDGE0, jn = (int)((xn - 1) >> 18) - (int)EDGE0;
                bv[i] = (uint16_t)(rv == 0 ? 0 : jv < 0 ? 1 : 2 + jv);
                bn[i] = (uint16_t)(rn == 0 ? 0 : jn < 0 ? 1 : 2 + jn);
                sv += rv, sn += rn;
                b1v += rv < c1, b2v += rv < c2, b1n += rn < c1, b2n += rn < c2;
            }
            for (int i = 0; i < F; i++) hv[bv[i]]++, hn[bn[i]]++;
            s->srv[t] = sv, s->srn[t] = sn;
            int64_t *bl = below + (size_t)k * 4;
            bl[0] += b1v, bl[1] += b2v, bl[2] += b1n, bl[3] += b2n;
            if (s->sidx[t] >= 0 && mn > 0) {
                hi = mn > hi ? mn : hi;
                float l2 = bitsf(uln + 1);
                lo = l2 < lo ? l2 : lo;
            }
        }
#pragma omp critical
        {
            if (mybad < bad) bad = mybad;
            if (lo < glo) glo = lo;
            if (hi > ghi) ghi = hi;
        }
    }
    if (bad != INT64_MAX) return bad;
    if (glo < s->n_lo) s->n_lo = glo;
    if (ghi > s->n_hi) s->n_hi = ghi;
    for (int t = 0; t < T; t++) { /* Σ r in global token order: deterministic */
        ind_acc *ac = &s->acc[s->tk[t]];
        ac->sum_r[0] += s->srv[t];
        ac->sum_r[1] += s->srn[t];
    }
    return -1;
}

/* Per neuron (parallel over chunks of 64 neurons, tokens in order inside): frequencies,
 * max r, Σ|a|, max|a|. Counters are int32 per block, added to the int64 totals after it. */
static void stats_neurons(nl_sparsity *s, int T) {
    const int F = s->F, ntau = s->ntau, nch = (F + 63) / 64, K = s->K;
    const float cres = s->c_res;
#pragma omp parallel for schedule(static) num_threads(s->nt)
    for (int c = 0; c < nch; c++) {
        int i0 = c * 64, n = F - i0 < 64 ? F - i0 : 64;
        float rr[64], vv[64];
        int32_t cnt[NL_SPARSITY_MAX_THRESHOLDS + 1][64];
        for (int k = 0; k < K; k++) {
            int any = 0;
            memset(cnt, 0, sizeof cnt);
            size_t o = (size_t)k * F + i0;
            float *mr = s->max_r + o, *ma = s->max_abs + o;
            double *sa = s->sum_abs + o;
            for (int t = 0; t < T; t++) {
                float mv = s->maxv[t];
                if (s->tk[t] != k || mv == 0) continue; /* r = 0 everywhere: counts nothing, maxima stay */
                any = 1;
                const float *a = s->blk + (size_t)t * F + i0;
#pragma omp simd
                for (int i = 0; i < n; i++) {
                    vv[i] = fabsf(a[i]);
                    rr[i] = vv[i] / mv;
                    mr[i] = rr[i] > mr[i] ? rr[i] : mr[i];
                    ma[i] = vv[i] > ma[i] ? vv[i] : ma[i];
                    sa[i] += (double)vv[i];
                    cnt[ntau][i] += rr[i] > cres;
                }
                for (int j = 0; j < ntau; j++) {
                    float ct = s->c_tau[j];
#pragma omp simd
                    for (int i = 0; i < n; i++) cnt[j][i] += rr[i] > ct;
                }
            }
            if (!any) continue;
            for (int j = 0; j < ntau; j++) {
                int64_t *cj = s->cnt + ((size_t)k * ntau + j) * F + i0;
                for (int i = 0; i < n; i++) cj[i] += cnt[j][i];
            }
            int64_t *cr = s->cnt_res + o;
            for (int i = 0; i < n; i++) cr[i] += cnt[ntau][i];
        }
    }
}

/* ------------------------------------------------------------------- CETT walk */

static void radix_sort(uint32_t **key, uint32_t **idx, uint32_t **k2, uint32_t **i2, int m) {
    for (int sh = 0; sh < 32; sh += 8) {
        int cnt[257];
        memset(cnt, 0, sizeof cnt);
        uint32_t *k = *key, *x = *idx;
        for (int i = 0; i < m; i++) cnt[((k[i] >> sh) & 255) + 1]++;
        if (m == 0 || cnt[((k[0] >> sh) & 255) + 1] == m) continue; /* one bucket: nothing moves */
        for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
        uint32_t *ko = *k2, *xo = *i2;
        for (int i = 0; i < m; i++) {
            int p = cnt[(k[i] >> sh) & 255]++;
            ko[p] = k[i], xo[p] = x[i];
        }
        *k2 = k, *i2 = x, *key = ko, *idx = xo;
    }
}

/* y += a·w and Σ y², the walk's inner loops. The AVX versions (chosen at run time) give
 * bit-identical results to the plain ones: separate multiply and add (no FMA), and Σ y²
 * always as (s0 + s2) + (s1 + s3) with s_j the sum over d ≡ j (mod 4) in increasing d. */
static void axpy_c(double *y, double a, const float *w, int D) {
    for (int d = 0; d < D; d++) y[d] += a * (double)w[d];
}
static double norm2_c(const double *y, int D) {
    double l[4] = {0, 0, 0, 0};
    int d = 0;
    for (; d + 4 <= D; d += 4)
        for (int j = 0; j < 4; j++) l[j] += y[d + j] * y[d + j];
    for (; d < D; d++) l[d & 3] += y[d] * y[d];
    return (l[0] + l[2]) + (l[1] + l[3]);
}
/* y += (c0·w0 + c1·w1) + (c2·w2 + c3·w3): four neurons per pass over y (a zero c adds an
 * exact zero, so masked-out neurons change nothing). */
static void axpy4_c(double *y, const double *c, const float *const *w, int D) {
    for (int d = 0; d < D; d++)
        y[d] += (c[0] * (double)w[0][d] + c[1] * (double)w[1][d]) + (c[2] * (double)w[2][d] + c[3] * (double)w[3][d]);
}
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx"))) static void axpy4_avx(double *y, const double *c, const float *const *w, int D) {
    __m256d c0 = _mm256_set1_pd(c[0]), c1 = _mm256_set1_pd(c[1]), c2 = _mm256_set1_pd(c[2]), c3 = _mm256_set1_pd(c[3]);
    int d = 0;
    for (; d + 4 <= D; d += 4) {
        __m256d a = _mm256_add_pd(_mm256_mul_pd(c0, _mm256_cvtps_pd(_mm_loadu_ps(w[0] + d))),
                                  _mm256_mul_pd(c1, _mm256_cvtps_pd(_mm_loadu_ps(w[1] + d))));
        __m256d b = _mm256_add_pd(_mm256_mul_pd(c2, _mm256_cvtps_pd(_mm_loadu_ps(w[2] + d))),
                                  _mm256_mul_pd(c3, _mm256_cvtps_pd(_mm_loadu_ps(w[3] + d))));
        _mm256_storeu_pd(y + d, _mm256_add_pd(_mm256_loadu_pd(y + d), _mm256_add_pd(a, b)));
    }
    for (; d < D; d++)
        y[d] += (c[0] * (double)w[0][d] + c[1] * (double)w[1][d]) + (c[2] * (double)w[2][d] + c[3] * (double)w[3][d]);
}
__attribute__((target("avx"))) static void axpy_avx(double *y, double a, const float *w, int D) {
    __m256d va = _mm256_set1_pd(a);
    int d = 0;
    for (; d + 8 <= D; d += 8) {
        __m256d w0 = _mm256_cvtps_pd(_mm_loadu_ps(w + d)), w1 = _mm256_cvtps_pd(_mm_loadu_ps(w + d + 4));
        _mm256_storeu_pd(y + d, _mm256_add_pd(_mm256_loadu_pd(y + d), _mm256_mul_pd(va, w0)));
        _mm256_storeu_pd(y + d + 4, _mm256_add_pd(_mm256_loadu_pd(y + d + 4), _mm256_mul_pd(va, w1)));
    }
    for (; d < D; d++) y[d] += a * (double)w[d];
}
__attribute__((target("avx"))) static double norm2_avx(const double *y, int D) {
    __m256d acc = _mm256_setzero_pd();
    int d = 0;
    for (; d + 4 <= D; d += 4) {
        __m256d v = _mm256_loadu_pd(y + d);
        acc = _mm256_add_pd(acc, _mm256_mul_pd(v, v));
    }
    double l[4];
    _mm256_storeu_pd(l, acc);
    for (; d < D; d++) l[d & 3] += y[d] * y[d];
    return (l[0] + l[2]) + (l[1] + l[3]);
}
#endif
static void (*axpy)(double *, double, const float *, int) = axpy_c;
static void (*axpy4)(double *, const double *, const float *const *, int) = axpy4_c;
static double (*norm2)(const double *, int) = norm2_c;
static void pick_kernels(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx")) axpy = axpy_avx, axpy4 = axpy4_avx, norm2 = norm2_avx;
#endif
}

/* One token of a walk: a (F) activations, E (ne) evaluation points as float bits ascending.
 * first: the walk that also computes ‖FFN_t‖ (stored in *ffn); later walks read it.
 * ybase/nbase (later walks): the sum of a_i·W_out[:, i] over the nbase neurons with
 * 0 < n < E[0], accumulated by the caller in index order, four neurons at a time (axpy4); only the neurons with
 * E[0] ≤ n < E[ne-1] are then sorted and walked. Adds the token's step functions into dS
 * (fixed-point ratio) and dC (pairs below) where they change, and counts the token in
 * *ntok when ‖FFN_t‖ > 0. */
static void walk_token(const nl_sparsity *s, walker *w, const float *a, const uint32_t *E, int ne, int first, double *ffn,
                       const double *ybase, int nbase, i128 *dS, int64_t *dC, int64_t *ntok) {
    const int F = s->F, D = s->D;
    uint32_t *key = w->key, *idx = w->idx, *k2 = w->key2, *i2 = w->idx2;
    int m = 0, z = 0;
    const uint32_t lo_key = first ? 1 : E[0], hi_key = first ? 0xffffffffu : E[ne - 1];
    for (int i = 0; i < F; i++) {
        float n = fabsf(a[i]) * s->wn[i];
        uint32_t kb = fbits(n);
        if (n == 0) z++;
        else if (kb >= lo_key && kb < hi_key) key[m] = kb, idx[m] = (uint32_t)i, m++;
    }
    radix_sort(&key, &idx, &k2, &i2, m);
    double *y = w->y;
    if (ybase) memcpy(y, ybase, sizeof(double) * (size_t)D);
    else memset(y, 0, sizeof(double) * (size_t)D);
    const int zb = z + nbase;
    int p = 0, e = 0, nch = 0;
    w->ch_e[nch] = 0, w->ch_t[nch] = nbase ? sqrt(norm2(y, D)) : 0, w->ch_c[nch] = zb, nch++; /* the tail at E[0] */
    while (p < m && e < ne) {
        uint32_t kb = key[p];
        if (E[e] <= kb) { /* first e' ≥ e with E[e'] > kb */
            int lo = e + 1, hi = ne;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (E[mid] <= kb) lo = mid + 1;
                else hi = mid;
            }
            e = lo;
            if (e == ne) break;
        }
        uint32_t eb = E[e];
        while (p < m && key[p] < eb) {
            uint32_t i = idx[p++];
            axpy(y, (double)a[i], s->Wt + (size_t)i * D, D);
        }
        w->ch_e[nch] = e, w->ch_t[nch] = sqrt(norm2(y, D)), w->ch_c[nch] = zb + p, nch++;
        e++;
    }
    double f;
    if (first) {
        while (p < m) {
            uint32_t i = idx[p++];
            axpy(y, (double)a[i], s->Wt + (size_t)i * D, D);
        }
        if (s->bias)
            for (int d = 0; d < D; d++) y[d] += (double)s->bias[d];
        f = sqrt(norm2(y, D));
        *ffn = f;
    } else {
        f = *ffn;
    }
    int64_t pc = 0, pf = 0;
    for (int c = 0; c < nch; c++) {
        dC[w->ch_e[c]] += w->ch_c[c] - pc;
        pc = w->ch_c[c];
    }
    if (f > 0) {
        (*ntok)++;
        for (int c = 0; c < nch; c++) {
            double r = w->ch_t[c] / f;
            if (r > RATIO_CAP) r = RATIO_CAP;
            int64_t fx = llround(r * FIX_ONE);
            dS[w->ch_e[c]] += (i128)(fx - pf);
            pf = fx;
        }
    }
}

/* Evaluation points of one walk, per internal group k: E[k] (ne[k]) float bits ascending.
 * Results: S[k][j] = Σ over the group's sampled tokens of fix(ratio at E[k][j]),
 * C[k][j] = pairs with n < E[k][j]; ntok[k] tokens with ‖FFN‖ > 0. */
typedef struct {
    uint32_t **E;
    int *ne;
    i128 **S;
    int64_t **C;
    int64_t *ntok;
} evals;

static nl_status walk_pass(nl_ctx *ctx, nl_sparsity *s, int l, evals *ev, int first, nl_progress *prog) {
    const int K = s->K, nt = s->nt;
    size_t tot = 0;
    for (int k = 0; k < K; k++) tot += (size_t)ev->ne[k];
    /* per thread: K blocks of (ne[k]) dS and dC, plus ntok (K) */
    i128 *dS = calloc((size_t)nt * tot, sizeof(i128));
    int64_t *dC = calloc((size_t)nt * tot, sizeof(int64_t));
    int64_t *nk = calloc((size_t)nt * K, sizeof(int64_t));
    size_t *base = malloc(sizeof(size_t) * (size_t)K);
    if (!dS || !dC || !nk || !base) {
        free(dS), free(dC), free(nk), free(base);
        return nl_errorf(ctx, NL_ENOMEM, "CETT: out of memory for %zu evaluation points", tot);
    }
    size_t b = 0;
    for (int k = 0; k < K; k++) base[k] = b, b += (size_t)ev->ne[k];
    nl_status st = NL_OK;
    for (int64_t r0 = 0; st == NL_OK && r0 < s->N; r0 += s->brows) {
        int T = (int)(s->N - r0 < s->brows ? s->N - r0 : s->brows);
        if ((st = read_block(ctx, s, l, r0, T)) != NL_OK) break;
        /* Chunks of TB tokens per task. The first walk sorts and walks every neuron of each
         * token; later walks first sum each token's neurons below its first evaluation point
         * neuron by neuron across the chunk (one pass over W_out for TB tokens, index order
         * per token), then walk only the neurons inside the evaluation range. */
        const int TB = s->tb, nchunk = (T + TB - 1) / TB;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int c = 0; c < nchunk; c++) {
            int tid = omp_get_thread_num();
            walker *w = &s->wk[tid];
            int tl[64], nl = 0;
            for (int t = c * TB; t < T && t < (c + 1) * TB; t++)
                if (s->sidx[t] >= 0 && ev->ne[s->tk[t]] > 0) tl[nl++] = t; /* sampled, and a point of this walk concerns it */
            if (!first) {
                const int F = s->F, D = s->D;
                uint32_t thr[64];
                memset(w->ybase, 0, sizeof(double) * (size_t)nl * D);
                for (int j = 0; j < nl; j++) thr[j] = ev->E[s->tk[tl[j]]][0], w->nbase[j] = 0;
                for (int i0 = 0; i0 < F; i0 += 4) { /* four neurons at a time, see axpy4 */
                    const float *wr[4];
                    for (int q = 0; q < 4; q++) wr[q] = s->Wt + (size_t)(i0 + q < F ? i0 + q : i0) * D;
                    for (int j = 0; j < nl; j++) {
                        const float *aj = s->blk + (size_t)tl[j] * F;
                        double cf[4];
                        int any = 0;
                        for (int q = 0; q < 4; q++) {
                            int i = i0 + q, in = 0;
                            if (i < F) {
                                float n = fabsf(aj[i]) * s->wn[i];
                                in = n > 0 && fbits(n) < thr[j];
                            }
                            cf[q] = in ? (double)aj[i] : 0.0;
                            any += in;
                        }
                        if (any) axpy4(w->ybase + (size_t)j * D, cf, wr, D), w->nbase[j] += any;
                    }
                }
            }
            for (int j = 0; j < nl; j++) {
                int t = tl[j], k = s->tk[t];
                size_t o = (size_t)tid * tot + base[k];
                walk_token(s, w, s->blk + (size_t)t * s->F, ev->E[k], ev->ne[k], first, &s->ffn[s->sidx[t]],
                           first ? NULL : w->ybase + (size_t)j * s->D, first ? 0 : w->nbase[j], dS + o, dC + o,
                           nk + (size_t)tid * K + k);
            }
        }
        if (prog) nl_progress_add(prog, T);
    }
    if (st == NL_OK) {
        for (int k = 0; k < K; k++) {
            i128 *S = ev->S[k];
            int64_t *C = ev->C[k];
            i128 as = 0;
            int64_t ac = 0;
            ev->ntok[k] = 0;
            for (int t = 0; t < nt; t++) ev->ntok[k] += nk[(size_t)t * K + k];
            for (int j = 0; j < ev->ne[k]; j++) {
                for (int t = 0; t < nt; t++) {
                    as += dS[(size_t)t * tot + base[k] + j];
                    ac += dC[(size_t)t * tot + base[k] + j];
                }
                S[j] = as, C[j] = ac;
            }
        }
    }
    free(dS), free(dC), free(nk), free(base);
    return st;
}

/* Value of output group o at point p (bits) after a walk: CETT, pairs below, tokens. */
static int find_pt(const uint32_t *E, int ne, uint32_t p) {
    int lo = 0, hi = ne - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (E[mid] < p) lo = mid + 1;
        else hi = mid;
    }
    NL_ASSERT(ne > 0 && E[lo] == p);
    return lo;
}
/* ntok: tokens with ‖FFN‖ > 0 per internal group (from the first walk). */
static void value_at(const nl_sparsity *s, const evals *ev, const int64_t *ntok, int o, uint32_t p, double *cett, int64_t *cnt) {
    i128 S = 0;
    int64_t C = 0, nt = 0;
    for (int k = 0; k < s->K; k++) {
        if (o > 0 && k != s->out_k[o]) continue;
        if (!s->ksamp[k]) continue;
        int j = find_pt(ev->E[k], ev->ne[k], p);
        S += ev->S[k][j], C += ev->C[k][j], nt += ntok[k];
    }
    *cett = nt > 0 ? (double)((long double)S / FIX_ONE / (long double)nt) : NAN;
    *cnt = C;
}
static int64_t out_ntok(const nl_sparsity *s, const evals *ev, int o) {
    int64_t n = 0;
    for (int k = 0; k < s->K; k++)
        if (o == 0 || k == s->out_k[o]) n += ev->ntok[k];
    return n;
}
static int64_t out_samp(const nl_sparsity *s, int o) {
    int64_t n = 0;
    for (int k = 0; k < s->K; k++)
        if (o == 0 || k == s->out_k[o]) n += s->ksamp[k];
    return n;
}

/* Loads W_out of layer l transposed into s->Wt (F, D) and b_out into s->bias. */
static nl_status load_w_out(nl_ctx *ctx, nl_sparsity *s, int l) {
    nl_layer ly;
    nl_status st = nl_model_layer(ctx, s->m, l, &ly);
    if (st != NL_OK) return st;
    const nl_mat *w = &ly.w_down;
    const int F = s->F, D = s->D;
    if (!w->w || w->n_out != D || w->n_in != F)
        return nl_errorf(ctx, NL_EFORMAT, "model '%s': layer %d W_out is (%d, %d), expected (%d, %d)", s->model_path, l, w->n_out,
                         w->n_in, D, F);
    if (w->trans) {
        for (int i = 0; i < F; i++) memcpy(s->Wt + (size_t)i * D, w->w + (size_t)i * w->ld, sizeof(float) * (size_t)D);
    } else {
        for (int d0 = 0; d0 < D; d0 += 64)
            for (int i0 = 0; i0 < F; i0 += 64)
                for (int d = d0; d < D && d < d0 + 64; d++)
                    for (int i = i0; i < F && i < i0 + 64; i++) s->Wt[(size_t)i * D + d] = w->w[(size_t)d * w->ld + i];
    }
    free(s->bias);
    s->bias = NULL;
    if (ly.b_down) {
        s->bias = malloc(sizeof(float) * (size_t)D);
        if (!s->bias) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        memcpy(s->bias, ly.b_down, sizeof(float) * (size_t)D);
    }
    return NL_OK;
}

static void free_evals(evals *ev, int K, int shared) {
    if (ev->E)
        for (int k = 0; k < K; k++)
            if (!shared || k == 0) free(ev->E[k]);
    if (ev->S)
        for (int k = 0; k < K; k++) free(ev->S[k]);
    if (ev->C)
        for (int k = 0; k < K; k++) free(ev->C[k]);
    free(ev->E), free(ev->ne), free(ev->S), free(ev->C), free(ev->ntok);
    memset(ev, 0, sizeof *ev);
}
static int alloc_evals(evals *ev, int K) {
    ev->E = calloc((size_t)K, sizeof(uint32_t *));
    ev->ne = calloc((size_t)K, sizeof(int));
    ev->S = calloc((size_t)K, sizeof(i128 *));
    ev->C = calloc((size_t)K, sizeof(int64_t *));
    ev->ntok = calloc((size_t)K, sizeof(int64_t));
    return ev->E && ev->ne && ev->S && ev->C && ev->ntok;
}
static int alloc_results(evals *ev, int K) {
    for (int k = 0; k < K; k++) {
        ev->S[k] = malloc(sizeof(i128) * (size_t)(ev->ne[k] ? ev->ne[k] : 1));
        ev->C[k] = malloc(sizeof(int64_t) * (size_t)(ev->ne[k] ? ev->ne[k] : 1));
        if (!ev->S[k] || !ev->C[k]) return 0;
    }
    return 1;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* CETT of layer l: fills s->cur[o].cett and the curve. */
static nl_status cett_layer(nl_ctx *ctx, nl_sparsity *s, int l, nl_progress *prog) {
    const int K = s->K, no = s->n_out, nc = s->o.n_cett_targets, F = s->F;
    for (int o = 0; o < no; o++) s->cur[o].n_cett = 0, s->n_curve[o] = 0;
    if (!(s->n_hi > 0)) { /* no positive output norm in the sample: nothing to truncate */
        for (int o = 0; o < no; o++) {
            if (!out_samp(s, o)) continue;
            for (int j = 0; j < nc; j++) {
                s->cur[o].cett[j].target = s->o.cett_targets[j];
                s->cur[o].cett[j].epsilon = NAN;
                s->cur[o].cett[j].sparsity = 1;
                s->cur[o].cett[j].cett = 0;
                s->cur[o].cett[j].tokens = 0;
            }
            s->cur[o].n_cett = nc;
        }
        return NL_OK;
    }
    nl_status st = load_w_out(ctx, s, l);
    if (st != NL_OK) return st;

    /* Walk 1: the grid. */
    uint32_t b0 = fbits(s->n_lo), b1 = fbits(s->n_hi) + 1;
    int64_t span = (int64_t)b1 - b0;
    int G = span + 1 <= s->o.cett_grid ? (int)span + 1 : s->o.cett_grid;
    uint32_t *grid = malloc(sizeof(uint32_t) * (size_t)G);
    evals ev = {0};
    bracket *br = calloc((size_t)no * nc, sizeof(bracket));
    if (!grid || !br || !alloc_evals(&ev, K)) {
        free(grid), free(br), free_evals(&ev, K, 0);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    for (int j = 0; j < G; j++) grid[j] = b0 + (uint32_t)((span * j + (G - 1) / 2) / (G - 1));
    grid[G - 1] = b1;
    for (int k = 0; k < K; k++) ev.E[k] = grid, ev.ne[k] = G;
    if (!alloc_results(&ev, K)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) st = walk_pass(ctx, s, l, &ev, 1, prog);
    if (st == NL_OK) {
        for (int o = 0; o < no; o++) {
            int64_t nt = out_ntok(s, &ev, o), pairs = out_samp(s, o) * (int64_t)F;
            if (nt == 0) continue;
            /* the curve: about 128 grid points */
            int step = (G + 127) / 128, nck = 0;
            for (int j = 0;; j = j + step < G - 1 ? j + step : G - 1) {
                double ce;
                int64_t cnt;
                value_at(s, &ev, ev.ntok, o, grid[j], &ce, &cnt);
                double *c = s->curve + ((size_t)o * s->curve_max + nck++) * 3;
                c[0] = bitsf(grid[j]), c[1] = (double)cnt / (double)pairs, c[2] = ce;
                if (j == G - 1) break;
            }
            s->n_curve[o] = nck;
            for (int j = 0; j < nc; j++) {
                bracket *b = &br[o * nc + j];
                double tgt = s->o.cett_targets[j];
                b->active = 1;
                int best = 0;
                double bce = 0;
                int64_t bcnt = 0;
                for (int g = 0; g < G; g++) {
                    double ce;
                    int64_t cnt;
                    value_at(s, &ev, ev.ntok, o, grid[g], &ce, &cnt);
                    if (ce <= tgt) best = g, bce = ce, bcnt = cnt;
                }
                b->lo = grid[best], b->cett_lo = bce, b->cnt_lo = bcnt;
                if (best == G - 1) b->infinite = 1, b->resolved = 1;
                else b->hi = grid[best + 1], b->resolved = b->hi == b->lo + 1;
            }
        }
    }
    /* Refining walks until every bracket holds two adjacent floats. */
    for (;;) {
        if (st != NL_OK) break;
        int open = 0;
        for (int i = 0; i < no * nc; i++) open += br[i].active && !br[i].resolved;
        if (!open) break;
        evals e2 = {0};
        if (!alloc_evals(&e2, K)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        size_t M = (size_t)s->o.cett_refine;
        for (int i = 0; i < no * nc && st == NL_OK; i++) {
            bracket *b = &br[i];
            free(b->pts);
            b->pts = NULL, b->npts = 0;
            if (!b->active || b->resolved) continue;
            int64_t gap = (int64_t)b->hi - b->lo;
            int mm = gap - 1 <= (int64_t)M ? (int)(gap - 1) : (int)M;
            b->pts = malloc(sizeof(uint32_t) * (size_t)mm);
            if (!b->pts) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            for (int q = 1; q <= mm; q++) b->pts[q - 1] = b->lo + (uint32_t)((gap * q + (mm + 1) / 2) / (mm + 1));
            b->npts = mm;
        }
        /* per internal group: the union of the points of the brackets it feeds */
        for (int k = 0; k < K && st == NL_OK; k++) {
            size_t n = 0;
            for (int i = 0; i < no * nc; i++) {
                int o = i / nc;
                if (br[i].npts && (o == 0 || s->out_k[o] == k)) n += (size_t)br[i].npts;
            }
            e2.E[k] = malloc(sizeof(uint32_t) * (n ? n : 1));
            if (!e2.E[k]) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            n = 0;
            for (int i = 0; i < no * nc; i++) {
                int o = i / nc;
                if (br[i].npts && (o == 0 || s->out_k[o] == k)) {
                    memcpy(e2.E[k] + n, br[i].pts, sizeof(uint32_t) * (size_t)br[i].npts);
                    n += (size_t)br[i].npts;
                }
            }
            qsort(e2.E[k], n, sizeof(uint32_t), cmp_u32);
            size_t u = 0;
            for (size_t q = 0; q < n; q++)
                if (!u || e2.E[k][q] != e2.E[k][u - 1]) e2.E[k][u++] = e2.E[k][q];
            e2.ne[k] = (int)u;
        }
        if (st == NL_OK && !alloc_results(&e2, K)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (st == NL_OK) {
            st = walk_pass(ctx, s, l, &e2, 0, prog);
        }
        if (st == NL_OK) {
            for (int i = 0; i < no * nc; i++) {
                bracket *b = &br[i];
                if (!b->npts) continue;
                int o = i / nc;
                double tgt = s->o.cett_targets[i % nc];
                int best = -1;
                for (int q = 0; q < b->npts; q++) {
                    double ce;
                    int64_t cnt;
                    value_at(s, &e2, ev.ntok, o, b->pts[q], &ce, &cnt);
                    if (ce <= tgt) best = q, b->cett_lo = ce, b->cnt_lo = cnt;
                }
                if (best >= 0) b->lo = b->pts[best];
                if (best + 1 < b->npts) b->hi = b->pts[best + 1];
                b->resolved = b->hi == b->lo + 1;
            }
        }
        free_evals(&e2, K, 0);
    }
    if (st == NL_OK) {
        for (int o = 0; o < no; o++) {
            int64_t nt = out_ntok(s, &ev, o), pairs = out_samp(s, o) * (int64_t)F;
            if (nt == 0) continue;
            for (int j = 0; j < nc; j++) {
                bracket *b = &br[o * nc + j];
                s->cur[o].cett[j].target = s->o.cett_targets[j];
                s->cur[o].cett[j].tokens = nt;
                if (b->infinite) {
                    s->cur[o].cett[j].epsilon = NAN;
                    s->cur[o].cett[j].sparsity = 1;
                } else {
                    s->cur[o].cett[j].epsilon = bitsf(b->lo);
                    s->cur[o].cett[j].sparsity = (double)b->cnt_lo / (double)pairs;
                }
                s->cur[o].cett[j].cett = b->cett_lo;
            }
            s->cur[o].n_cett = nc;
        }
    }
    for (int i = 0; i < no * nc; i++) free(br[i].pts);
    free(br);
    free_evals(&ev, K, 1);
    return st;
}

/* ------------------------------------------------------------------ results */

static const char DDL[] =
    "CREATE TABLE IF NOT EXISTS sparsity_layer("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL,"
    " indicator TEXT NOT NULL CHECK (indicator IN ('value','norm')), tokens INTEGER NOT NULL, neurons INTEGER NOT NULL,"
    " mean_r REAL, frac_zero REAL, frac_below_0_1 REAL, frac_below_0_2 REAL, dead INTEGER, resident INTEGER,"
    " PRIMARY KEY (run_id, layer, label, indicator)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sparsity_hist("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL, indicator TEXT NOT NULL,"
    " lo REAL NOT NULL, hi REAL NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, indicator, hi)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sparsity_cdf("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL, indicator TEXT NOT NULL,"
    " x REAL NOT NULL, cdf REAL NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, indicator, x)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sparsity_quantile("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL, indicator TEXT NOT NULL,"
    " q REAL NOT NULL, value REAL NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, indicator, q)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sparsity_cett("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL, target REAL NOT NULL,"
    " epsilon REAL, sparsity REAL NOT NULL, cett REAL NOT NULL, tokens INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, target)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sparsity_cett_curve("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, label TEXT NOT NULL,"
    " epsilon REAL NOT NULL, sparsity REAL NOT NULL, cett REAL NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, epsilon)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neurons("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, neuron INTEGER NOT NULL, label TEXT NOT NULL,"
    " tokens INTEGER NOT NULL, mean_abs REAL NOT NULL, max_abs REAL NOT NULL, max_r REAL NOT NULL, w_out_norm REAL NOT NULL,"
    " dead INTEGER NOT NULL, resident INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, neuron)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS neuron_freq("
    " run_id INTEGER NOT NULL REFERENCES runs(id), layer INTEGER NOT NULL, neuron INTEGER NOT NULL, label TEXT NOT NULL,"
    " threshold REAL NOT NULL, freq REAL NOT NULL,"
    " PRIMARY KEY (run_id, layer, label, neuron, threshold)) WITHOUT ROWID;";

static const char *const INS[8] = {
    "INSERT INTO sparsity_layer VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
    "INSERT INTO sparsity_hist VALUES(?,?,?,?,?,?,?)",
    "INSERT INTO sparsity_cdf VALUES(?,?,?,?,?,?)",
    "INSERT INTO sparsity_quantile VALUES(?,?,?,?,?,?)",
    "INSERT INTO sparsity_cett VALUES(?,?,?,?,?,?,?,?)",
    "INSERT INTO sparsity_cett_curve VALUES(?,?,?,?,?,?)",
    "INSERT INTO neurons VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    "INSERT INTO neuron_freq VALUES(?,?,?,?,?,?)",
};

static const char *olabel(const nl_sparsity *s, int o) { return o == 0 ? "" : s->klabel[s->out_k[o]]; }

/* Binds the leading (run_id, layer, label) and then the given values. */
static nl_status step(nl_ctx *ctx, nl_sparsity *s, int which) {
    sqlite3_stmt *q = s->st[which];
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) return nl_results_error(ctx, s->db, "cannot write the sparsity results");
    return NL_OK;
}
static void bind_head(nl_sparsity *s, int which, int layer, const char *label) {
    sqlite3_stmt *q = s->st[which];
    sqlite3_bind_int64(q, 1, s->run_id);
    sqlite3_bind_int(q, 2, layer);
    if (which == S_NEURON || which == S_FREQ) return; /* (run_id, layer, neuron, label …) */
    sqlite3_bind_text(q, 3, label, -1, SQLITE_STATIC);
}
static void bind_real(sqlite3_stmt *q, int i, double v) {
    if (isnan(v)) sqlite3_bind_null(q, i);
    else sqlite3_bind_double(q, i, v);
}

/* Writes the distribution rows (layer, hist, cdf, quantile) of one (layer, label). */
static nl_status write_dist(nl_ctx *ctx, nl_sparsity *s, int layer, const char *label, const ind_acc *a, int64_t tokens,
                            int64_t neurons, int64_t dead, int64_t res, nl_sparsity_row *row) {
    static const char *ind[2] = {"value", "norm"};
    int64_t pairs = tokens * neurons;
    nl_status st = NL_OK;
    row->tokens = tokens, row->neurons = neurons, row->dead = dead, row->resident = res;
    for (int x = 0; x < 2 && st == NL_OK; x++) {
        double mean = a->sum_r[x] / (double)pairs, fz = (double)a->hist[x][0] / (double)pairs;
        double f1 = (double)a->below[x][0] / (double)pairs, f2 = (double)a->below[x][1] / (double)pairs;
        row->ind[x].mean_r = mean, row->ind[x].frac_zero = fz, row->ind[x].frac_below_0_1 = f1, row->ind[x].frac_below_0_2 = f2;
        sqlite3_stmt *q = s->st[S_LAYER];
        bind_head(s, S_LAYER, layer, label);
        sqlite3_bind_text(q, 4, ind[x], -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 5, tokens);
        sqlite3_bind_int64(q, 6, neurons);
        sqlite3_bind_double(q, 7, mean);
        sqlite3_bind_double(q, 8, fz);
        sqlite3_bind_double(q, 9, f1);
        sqlite3_bind_double(q, 10, f2);
        if (x == 0) sqlite3_bind_int64(q, 11, dead), sqlite3_bind_int64(q, 12, res);
        else sqlite3_bind_null(q, 11), sqlite3_bind_null(q, 12);
        st = step(ctx, s, S_LAYER);
        for (int b = 0; b < NB && st == NL_OK; b++) {
            if (!a->hist[x][b]) continue;
            double lo, hi;
            bin_range(b, &lo, &hi);
            q = s->st[S_HIST];
            bind_head(s, S_HIST, layer, label);
            sqlite3_bind_text(q, 4, ind[x], -1, SQLITE_STATIC);
            sqlite3_bind_double(q, 5, lo);
            sqlite3_bind_double(q, 6, hi);
            sqlite3_bind_int64(q, 7, a->hist[x][b]);
            st = step(ctx, s, S_HIST);
        }
        for (int k = 0; k < N_CDF && st == NL_OK; k++) {
            double xv = k == N_CDF - 1 ? 1.0 : pow(10.0, (double)(k - (N_CDF - 1)) / 20.0);
            q = s->st[S_CDF];
            bind_head(s, S_CDF, layer, label);
            sqlite3_bind_text(q, 4, ind[x], -1, SQLITE_STATIC);
            sqlite3_bind_double(q, 5, xv);
            sqlite3_bind_double(q, 6, hist_cdf(a->hist[x], pairs, xv));
            st = step(ctx, s, S_CDF);
        }
        for (int k = 0; k < NL_SPARSITY_N_QUANTILES && st == NL_OK; k++) {
            double v = hist_quantile(a->hist[x], pairs, nl_sparsity_quantiles[k]);
            row->ind[x].quantile[k] = v;
            q = s->st[S_Q];
            bind_head(s, S_Q, layer, label);
            sqlite3_bind_text(q, 4, ind[x], -1, SQLITE_STATIC);
            sqlite3_bind_double(q, 5, nl_sparsity_quantiles[k]);
            sqlite3_bind_double(q, 6, v);
            st = step(ctx, s, S_Q);
        }
    }
    return st;
}

static nl_status write_cett(nl_ctx *ctx, nl_sparsity *s, int layer, const char *label, const nl_sparsity_row *row) {
    nl_status st = NL_OK;
    for (int j = 0; j < row->n_cett && st == NL_OK; j++) {
        sqlite3_stmt *q = s->st[S_CETT];
        bind_head(s, S_CETT, layer, label);
        sqlite3_bind_double(q, 4, row->cett[j].target);
        bind_real(q, 5, row->cett[j].epsilon);
        sqlite3_bind_double(q, 6, row->cett[j].sparsity);
        bind_real(q, 7, row->cett[j].cett);
        sqlite3_bind_int64(q, 8, row->cett[j].tokens);
        st = step(ctx, s, S_CETT);
    }
    return st;
}

static nl_status push_row(nl_ctx *ctx, nl_sparsity *s, const nl_sparsity_row *row) {
    if (s->n_rows == s->cap_rows) {
        int cap = s->cap_rows ? 2 * s->cap_rows : 16;
        nl_sparsity_row *p = realloc(s->rows, sizeof *p * (size_t)cap);
        if (!p) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        s->rows = p, s->cap_rows = cap;
    }
    s->rows[s->n_rows++] = *row;
    return NL_OK;
}

/* Neuron statistics of output group o for neuron i, combined over its internal groups. */
typedef struct {
    int64_t tokens, cnt[NL_SPARSITY_MAX_THRESHOLDS], res;
    double sum_abs;
    float max_abs, max_r;
} neuron_stat;

static void neuron_of(const nl_sparsity *s, int o, int i, neuron_stat *ns) {
    memset(ns, 0, sizeof *ns);
    const size_t F = (size_t)s->F;
    for (int k = 0; k < s->K; k++) {
        if (o > 0 && k != s->out_k[o]) continue;
        size_t x = (size_t)k * F + (size_t)i;
        ns->tokens += s->ktok[k];
        for (int j = 0; j < s->ntau; j++) ns->cnt[j] += s->cnt[((size_t)k * s->ntau + j) * F + i];
        ns->res += s->cnt_res[x];
        ns->sum_abs += s->sum_abs[x];
        if (s->max_abs[x] > ns->max_abs) ns->max_abs = s->max_abs[x];
        if (s->max_r[x] > ns->max_r) ns->max_r = s->max_r[x];
    }
}
static int is_dead(const nl_sparsity *s, const neuron_stat *ns) { return !(ns->max_r > s->c_dead); }
static int is_resident(const nl_sparsity *s, const neuron_stat *ns) {
    return ns->tokens > 0 && (double)ns->res / (double)ns->tokens >= s->o.resident_frac - 1e-12;
}

/* Writes layer l's tables (one transaction) and folds it into the layer -1 accumulators. */
static nl_status write_layer(nl_ctx *ctx, nl_sparsity *s, int l) {
    const int no = s->n_out, F = s->F, nc = s->o.no_cett ? 0 : s->o.n_cett_targets;
    nl_status st = nl_results_begin(ctx, s->db);
    for (int o = 0; o < no && st == NL_OK; o++) {
        const char *lab = olabel(s, o);
        ind_acc a;
        memset(&a, 0, sizeof a);
        for (int k = 0; k < s->K; k++) {
            if (o > 0 && k != s->out_k[o]) continue;
            for (int x = 0; x < 2; x++) {
                for (int b = 0; b < NB; b++) a.hist[x][b] += s->acc[k].hist[x][b];
                a.below[x][0] += s->acc[k].below[x][0], a.below[x][1] += s->acc[k].below[x][1];
                a.sum_r[x] += s->acc[k].sum_r[x];
            }
        }
        int64_t dead = 0, res = 0;
        int per_neuron = o == 0 || s->o.label_neurons;
        for (int i = 0; i < F && st == NL_OK; i++) {
            if ((i & 255) == 255 && nl_interrupted) { /* the layer's transaction is rolled back */
                st = nl_errorf(ctx, NL_EINTR, "interrupted");
                break;
            }
            neuron_stat ns;
            neuron_of(s, o, i, &ns);
            int dd = is_dead(s, &ns), rr = is_resident(s, &ns);
            dead += dd, res += rr;
            if (!per_neuron) continue;
            sqlite3_stmt *q = s->st[S_NEURON];
            bind_head(s, S_NEURON, l, lab);
            sqlite3_bind_int(q, 3, i);
            sqlite3_bind_text(q, 4, lab, -1, SQLITE_STATIC);
            sqlite3_bind_int64(q, 5, ns.tokens);
            sqlite3_bind_double(q, 6, ns.sum_abs / (double)ns.tokens);
            sqlite3_bind_double(q, 7, ns.max_abs);
            sqlite3_bind_double(q, 8, ns.max_r);
            sqlite3_bind_double(q, 9, s->wn[i]);
            sqlite3_bind_int(q, 10, dd);
            sqlite3_bind_int(q, 11, rr);
            st = step(ctx, s, S_NEURON);
            for (int j = 0; j < s->ntau && st == NL_OK; j++) {
                q = s->st[S_FREQ];
                bind_head(s, S_FREQ, l, lab);
                sqlite3_bind_int(q, 3, i);
                sqlite3_bind_text(q, 4, lab, -1, SQLITE_STATIC);
                sqlite3_bind_double(q, 5, s->o.thresholds[j]);
                sqlite3_bind_double(q, 6, (double)ns.cnt[j] / (double)ns.tokens);
                st = step(ctx, s, S_FREQ);
            }
        }
        nl_sparsity_row *row = &s->cur[o];
        row->layer = l, row->label = lab;
        if (st == NL_OK) st = write_dist(ctx, s, l, lab, &a, s->otok[o], F, dead, res, row);
        if (st == NL_OK) st = write_cett(ctx, s, l, lab, row);
        for (int c = 0; c < s->n_curve[o] && st == NL_OK; c++) {
            const double *cv = s->curve + ((size_t)o * s->curve_max + c) * 3;
            sqlite3_stmt *q = s->st[S_CURVE];
            bind_head(s, S_CURVE, l, lab);
            sqlite3_bind_double(q, 4, cv[0]);
            sqlite3_bind_double(q, 5, cv[1]);
            bind_real(q, 6, cv[2]);
            st = step(ctx, s, S_CURVE);
        }
        /* fold into layer -1 */
        for (int x = 0; x < 2; x++) {
            for (int b = 0; b < NB; b++) s->all[o].hist[x][b] += a.hist[x][b];
            s->all[o].below[x][0] += a.below[x][0], s->all[o].below[x][1] += a.below[x][1];
            s->all[o].sum_r[x] += a.sum_r[x];
        }
        s->all_dead[o] += dead, s->all_res[o] += res;
        for (int j = 0; j < nc && j < row->n_cett; j++) {
            s->all_sp[o * nc + j] += row->cett[j].sparsity;
            s->all_ce[o * nc + j] += row->cett[j].cett;
            s->all_nc[o * nc + j]++;
        }
    }
    if (st == NL_OK) st = nl_results_commit(ctx, s->db);
    else nl_results_rollback(s->db);
    for (int o = 0; o < no && st == NL_OK; o++) st = push_row(ctx, s, &s->cur[o]);
    return st;
}

static nl_status write_overall(nl_ctx *ctx, nl_sparsity *s) {
    const int no = s->n_out, nc = s->o.no_cett ? 0 : s->o.n_cett_targets;
    nl_status st = nl_results_begin(ctx, s->db);
    for (int o = 0; o < no && st == NL_OK; o++) {
        nl_sparsity_row row;
        memset(&row, 0, sizeof row);
        row.layer = -1, row.label = olabel(s, o);
        st = write_dist(ctx, s, -1, row.label, &s->all[o], s->otok[o], (int64_t)s->F * s->n_rec, s->all_dead[o], s->all_res[o],
                        &row);
        int ok = nc > 0;
        for (int j = 0; j < nc; j++) ok &= s->all_nc[o * nc + j] == s->n_rec;
        if (ok) {
            row.n_cett = nc;
            for (int j = 0; j < nc; j++) {
                row.cett[j].target = s->o.cett_targets[j];
                row.cett[j].epsilon = NAN;
                row.cett[j].sparsity = s->all_sp[o * nc + j] / s->n_rec;
                row.cett[j].cett = s->all_ce[o * nc + j] / s->n_rec;
                row.cett[j].tokens = s->rows[o].cett[j].tokens; /* same tokens in every layer */
            }
        }
        if (st == NL_OK) st = write_cett(ctx, s, -1, row.label, &row);
        if (st == NL_OK) st = push_row(ctx, s, &row);
    }
    if (st == NL_OK) st = nl_results_commit(ctx, s->db);
    else nl_results_rollback(s->db);
    return st;
}

/* ---------------------------------------------------------------------- run */

/* A layer of a summary: the accumulators are the summary's (per-label statistics, histograms,
 * frequencies at the thresholds it kept), then the same tables as from a dump. */
static nl_status summary_layer(nl_ctx *ctx, nl_sparsity *s, int l, nl_progress *prog) {
    const nl_summary *sm = s->sum;
    const nl_summary_layer *y = &sm->lay[nl_summary_layer_index(sm, l)];
    const size_t F = (size_t)s->F;
    memcpy(s->wn, y->w_out_norm, F * sizeof(float));
    for (size_t i = 0; i < F; i++)
        if (!(s->wn[i] >= 0 && s->wn[i] <= FLT_MAX))
            return nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: /layers/%d/w_out_norm[%zu] = %g is not a norm", s->path, l, i,
                             (double)s->wn[i]);
    reset_layer(s);
    for (int k = 0; k < s->K; k++) {
        const int g = s->kgroup[k];
        ind_acc *a = &s->acc[k];
        for (int x = 0; x < 2; x++) {
            memcpy(a->hist[x], y->r_hist + ((size_t)g * 2 + x) * NB, NB * sizeof(int64_t));
            a->below[x][0] = y->r_below[g * 4 + x * 2], a->below[x][1] = y->r_below[g * 4 + x * 2 + 1];
            a->sum_r[x] = y->r_sum[g * 2 + x];
        }
        for (int j = 0; j < s->ntau; j++)
            memcpy(s->cnt + ((size_t)k * s->ntau + j) * F, y->freq + ((size_t)g * sm->n_tau + s->tau_idx[j]) * F, F * sizeof(int64_t));
        memcpy(s->cnt_res + (size_t)k * F, y->freq + ((size_t)g * sm->n_tau + s->res_idx) * F, F * sizeof(int64_t));
        memcpy(s->max_r + (size_t)k * F, y->max_r + (size_t)g * F, F * sizeof(float));
        memcpy(s->sum_abs + (size_t)k * F, y->sum_abs + (size_t)g * F, F * sizeof(double));
        for (size_t i = 0; i < F; i++)
            s->max_abs[(size_t)k * F + i] = fmaxf(0.0f, fmaxf(-y->min[(size_t)g * F + i], y->max[(size_t)g * F + i]));
    }
    if (prog) nl_progress_add(prog, s->N);
    for (int o = 0; o < s->n_out; o++) memset(&s->cur[o], 0, sizeof s->cur[o]), s->n_curve[o] = 0;
    if (nl_interrupted) return nl_errorf(ctx, NL_EINTR, "interrupted");
    return write_layer(ctx, s, l);
}

static nl_status process_layer(nl_ctx *ctx, nl_sparsity *s, int l, nl_progress *prog) {
    if (s->sum) return summary_layer(ctx, s, l, prog);
    nl_status st = nl_h5_reader_read_w_out_norm(s->r, ctx, l, s->wn);
    if (st == NL_EFORMAT && s->m) st = nl_model_w_out_norm(ctx, s->m, l, s->wn); /* file lacks it: the model's */
    if (st != NL_OK) return st;
    for (int i = 0; i < s->F; i++)
        if (!(s->wn[i] >= 0 && s->wn[i] <= FLT_MAX))
            return nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: /layers/%d/w_out_norm[%d] = %g is not a norm", s->path, l, i,
                             (double)s->wn[i]);
    if (s->m && (st = check_norms(ctx, s, l, s->wn)) != NL_OK) return st;
    reset_layer(s);
    for (int64_t r0 = 0; r0 < s->N; r0 += s->brows) {
        int T = (int)(s->N - r0 < s->brows ? s->N - r0 : s->brows);
        if ((st = read_block(ctx, s, l, r0, T)) != NL_OK) return st;
        int64_t bad = stats_tokens(s, T);
        if (bad >= 0)
            return nl_errorf(ctx, NL_EFORMAT, "'%s': layer %d token %lld has a non-finite activation", s->path, l,
                             (long long)(r0 + bad));
        stats_neurons(s, T);
        if (prog) nl_progress_add(prog, T);
    }
    for (int t = 0; t < s->nt; t++) /* exact integer reductions */
        for (int k = 0; k < s->K; k++) {
            const int64_t *h = s->th_hist + ((size_t)t * s->K + k) * 2 * NB, *b = s->th_below + ((size_t)t * s->K + k) * 4;
            for (int x = 0; x < 2; x++) {
                for (int j = 0; j < NB; j++) s->acc[k].hist[x][j] += h[x * NB + j];
                s->acc[k].below[x][0] += b[x * 2], s->acc[k].below[x][1] += b[x * 2 + 1];
            }
        }
    for (int o = 0; o < s->n_out; o++) memset(&s->cur[o], 0, sizeof s->cur[o]), s->n_curve[o] = 0;
    if (!s->o.no_cett && (st = cett_layer(ctx, s, l, prog)) != NL_OK) return st;
    return write_layer(ctx, s, l);
}

#define JCAT(...) snprintf(p + strlen(p), sizeof p - strlen(p), __VA_ARGS__)

static nl_status run_analysis(nl_ctx *ctx, nl_sparsity *s, nl_results *db, nl_progress *prog) {
    s->db = db;
    char p[8192] = "{\"thresholds\":[";
    for (int j = 0; j < s->ntau; j++) JCAT("%s%s", j ? "," : "", NL_JSON_NUM(s->o.thresholds[j]));
    JCAT("],\"dead_threshold\":%s,\"resident_threshold\":%s,\"resident_frac\":%s,\"cett\":", NL_JSON_NUM(s->o.dead_threshold),
         NL_JSON_NUM(s->o.resident_threshold), NL_JSON_NUM(s->o.resident_frac));
    if (s->o.no_cett) JCAT("null");
    else {
        JCAT("[");
        for (int j = 0; j < s->o.n_cett_targets; j++) JCAT("%s%s", j ? "," : "", NL_JSON_NUM(s->o.cett_targets[j]));
        JCAT("],\"cett_tokens\":%lld,\"cett_model\":", (long long)s->n_samp);
        nl_json_cat(p, sizeof p, s->model_path);
    }
    JCAT(",\"layers\":[");
    for (int i = 0; i < s->n_rec; i++) JCAT("%s%d", i ? "," : "", s->in->meta.layers[i]);
    JCAT("],\"tokens\":%lld,\"file_complete\":%d,\"bins_per_octave\":32", (long long)s->N, s->in->complete);
    JCAT(s->sum ? ",\"input\":\"summary\"}" : "}");
    /* activations recorded with --compute bf16 make this an approximate run too */
    nl_run_info info = {"sparsity", s->m ? s->model_path : s->in->meta.model, s->in->meta.dataset, s->path, p, s->in->meta.compute};
    nl_status st = nl_results_begin_run(ctx, db, &info, &s->run_id);
    if (st != NL_OK) return st;
    st = nl_sparsity_create_tables(ctx, db);
    for (int i = 0; i < 8 && st == NL_OK; i++)
        if (sqlite3_prepare_v2(nl_results_db(db), INS[i], -1, &s->st[i], NULL) != SQLITE_OK)
            st = nl_results_error(ctx, db, "cannot prepare the sparsity tables");
    /* Progress in rows read: a statistics pass per layer and, with CETT, typically three
     * walks; the total follows the passes the last layer actually needed. */
    int64_t per_layer = s->N * (s->o.no_cett ? 1 : 4);
    if (prog) prog->total = (int64_t)s->n_rec * per_layer;
    int done = 0;
    for (int i = 0; i < s->n_rec && st == NL_OK; i++) {
        int64_t before = prog ? prog->done : 0;
        st = process_layer(ctx, s, s->in->meta.layers[i], prog);
        done += st == NL_OK;
        if (prog && st == NL_OK) {
            per_layer = prog->done - before;
            prog->total = prog->done + (int64_t)(s->n_rec - i - 1) * per_layer;
        }
    }
    if (st == NL_OK) st = write_overall(ctx, s);
    for (int i = 0; i < 8; i++) sqlite3_finalize(s->st[i]), s->st[i] = NULL; /* the database may close before s */
    char note[128];
    snprintf(note, sizeof note, "interrupted after %d of %d layers", done, s->n_rec);
    return nl_results_finish_run(ctx, db, s->run_id, st, note);
}

nl_status nl_sparsity_create_tables(nl_ctx *ctx, nl_results *db) { return nl_results_exec(ctx, db, DDL); }

nl_status nl_sparsity_run(nl_ctx *ctx, const nl_sparsity_opts *opts, const char *acts_path, nl_results *db,
                          nl_progress *prog, nl_sparsity_result *out) {
    NL_ASSERT(acts_path && db && out);
    memset(out, 0, sizeof *out);
    out->run_id = -1;
    nl_ctx_apply_threads(ctx);
    nl_sparsity *s = NULL;
    nl_status st = sparsity_open(ctx, acts_path, opts, &s);
    if (st != NL_OK) return st;
    out->impl = s;
    out->info = s->in;
    out->model = s->m ? s->model_path : NULL;
    out->from_summary = s->sum != NULL;
    st = run_analysis(ctx, s, db, prog);
    out->run_id = s->run_id;
    out->rows = s->rows;
    out->n_rows = s->n_rows;
    return st;
}

void nl_sparsity_result_release(nl_sparsity_result *r) {
    if (!r) return;
    sparsity_close(r->impl);
    memset(r, 0, sizeof *r);
}
