/* summary.c — record --stats: the summary accumulated on the forward pass, and the merge
 * of two summaries (contract in summary.h, definitions and file in summary_h5.h).
 * The per-token work mirrors analyses/sparsity.c's statistics pass (the same float
 * quotients, bins and threshold bounds), so counts and histograms from a summary equal the
 * sparsity analysis of a dump of the same run exactly.
 * Checked by tests/test_summary.c and tests/summary_cli.sh. */
#include "neuronlab/summary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "neuronlab/walk.h"

#define NBR NL_SUMMARY_R_BINS
#define NBA NL_SUMMARY_ABS_BINS
#define REDGE0 3200u /* r bins: float bits (3200 + j) << 18 = 2^-27 … 1 (sparsity.c) */
#define AEDGE0 206u  /* |a| bins: float bits (206 + j) << 22 = 2^(-24 + j/2) */

static inline float bitsf(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

nl_status nl_summary_create_for(nl_ctx *ctx, const nl_summary_desc *desc, const nl_dataset *ds, nl_summary **out) {
    const char **labs = malloc((size_t)(ds->n_docs > 0 ? ds->n_docs : 1) * sizeof *labs);
    if (!labs) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int n = 0;
    for (int d = 0; d < ds->n_docs; d++) labs[n++] = ds->docs[d].label ? ds->docs[d].label : "";
    if (n == 0) labs[n++] = "";
    qsort(labs, (size_t)n, sizeof *labs, cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (!u || strcmp(labs[i], labs[u - 1])) labs[u++] = labs[i];
    nl_summary_desc d = *desc;
    d.group_labels = labs, d.n_groups = u;
    nl_status st = nl_summary_create(ctx, &d, out);
    free(labs);
    return st;
}

/* ------------------------------------------------------------------ accumulation */

typedef struct {
    nl_summary *s;
    const nl_doc *doc;
    int d, g;              /* document index and group */
    int start, new_from;   /* doc index of the chunk's row 0; first new row */
    int F, K, nt;
    float c_tau[NL_SUMMARY_MAX_TAU], c1, c2;
    float *thr;            /* (R, F) |a| to beat for the top list (−1 while not full) */
    int64_t *count;        /* (R, G) tokens accumulated per layer and group */
    float *pool;           /* (R, F) this document's Σ|a| over its prompt tokens */
    double *bsum, *bm2;    /* (F) block moments */
    uint16_t *bv, *bn, *ba;/* (F) bins of the current token */
    float *rbuf;           /* (F) r_value of the current token */
    nl_progress *progress;
} acc;

/* Inserts (v, doc, pos) into neuron i's sorted list (best first); the caller checked that
 * it enters. Ties: an earlier (doc, pos) ranks first; the stream is in order, so a new
 * token goes after every entry of equal |a|. */
static void top_insert(nl_summary_layer *y, float *thr, int i, int K, float v, int32_t doc, int32_t pos) {
    float *tv = y->top_value + (size_t)i * K;
    int32_t *td = y->top_doc + (size_t)i * K, *tp = y->top_pos + (size_t)i * K;
    int n = y->top_n[i], p = n < K ? n : K - 1;
    float av = fabsf(v);
    while (p > 0 && fabsf(tv[p - 1]) < av) {
        if (p < K) tv[p] = tv[p - 1], td[p] = td[p - 1], tp[p] = tp[p - 1];
        p--;
    }
    tv[p] = v, td[p] = doc, tp[p] = pos;
    if (n < K) y->top_n[i] = ++n;
    thr[i] = n == K ? fabsf(tv[K - 1]) : -1.0f;
}

static nl_status on_act(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    acc *A = user;
    nl_summary *s = A->s;
    int j = nl_summary_layer_index(s, info->layer);
    if (j < 0) return NL_OK;
    int skip = A->new_from > A->start ? A->new_from - A->start : 0;
    if (skip >= info->T) return NL_OK;
    const int F = A->F, K = A->K, nt = A->nt, G = s->n_groups, g = A->g;
    const float *rows = x + (size_t)skip * F;
    const int n = info->T - skip, pos0 = A->start + skip;
    nl_summary_layer *y = &s->lay[j];
    const float *wn = y->w_out_norm;
    const size_t gF = (size_t)g * F;
    float *max_r = y->max_r + gF, *mn = y->min + gF, *mx = y->max + gF, *thr = A->thr + (size_t)j * F;
    double *sabs = y->sum_abs + gF;
    int64_t *freq = y->freq + (size_t)g * nt * F, *rh = y->r_hist + (size_t)g * 2 * NBR;
    int64_t *below = y->r_below + (size_t)g * 4, *ah = y->abs_hist;
    float *pool = A->pool + (size_t)j * F;
    uint16_t *bv = A->bv, *bn = A->bn, *ba = A->ba;
    const float c1 = A->c1, c2 = A->c2;
    for (int t = 0; t < n; t++) {
        const float *a = rows + (size_t)t * F;
        uint32_t ubv = 0, ubn = 0, ubad = 0;
#pragma omp simd reduction(max : ubv, ubn, ubad)
        for (int i = 0; i < F; i++) {
            float v = fabsf(a[i]), nn = v * wn[i];
            uint32_t xv, xn;
            memcpy(&xv, &v, 4);
            memcpy(&xn, &nn, 4);
            ubad = xv > ubad ? xv : ubad;
            ubad = xn > ubad ? xn : ubad;
            ubv = xv > ubv ? xv : ubv;
            ubn = xn > ubn ? xn : ubn;
        }
        if (ubad > 0x7f7fffffu) {
            int i = 0;
            while (i < F - 1 && isfinite(a[i]) && isfinite(fabsf(a[i]) * wn[i])) i++;
            return nl_errorf(ctx, NL_EFORMAT, "layer %d document %d position %d neuron %d has a non-finite activation (%g)",
                             info->layer, A->d, pos0 + t, i, (double)a[i]);
        }
        const float mv = bitsf(ubv), mnn = bitsf(ubn);
        const float dv = mv > 0 ? mv : 1.0f, dn = mnn > 0 ? mnn : 1.0f;
        double sv = 0, sn = 0;
        int b1v = 0, b2v = 0, b1n = 0, b2n = 0;
        const int in_prompt = pos0 + t < A->doc->prompt_len;
        float *rb = A->rbuf;
#pragma omp simd reduction(+ : sv, sn, b1v, b2v, b1n, b2n)
        for (int i = 0; i < F; i++) {
            float v = fabsf(a[i]), nn = v * wn[i];
            float rv = v / dv, rn = nn / dn;
            uint32_t xv, xn, xa;
            memcpy(&xv, &rv, 4);
            memcpy(&xn, &rn, 4);
            memcpy(&xa, &v, 4);
            int jv = (int)((xv - 1) >> 18) - (int)REDGE0, jn = (int)((xn - 1) >> 18) - (int)REDGE0;
            int ja = (int)((xa - 1) >> 22) - (int)AEDGE0;
            bv[i] = (uint16_t)(rv == 0 ? 0 : jv < 0 ? 1 : 2 + jv);
            bn[i] = (uint16_t)(rn == 0 ? 0 : jn < 0 ? 1 : 2 + jn);
            ba[i] = (uint16_t)(v == 0 ? 0 : ja < 0 ? 1 : ja >= 80 ? NBA - 1 : 2 + ja);
            rb[i] = rv;
            sv += rv, sn += rn;
            b1v += rv < c1, b2v += rv < c2, b1n += rn < c1, b2n += rn < c2;
            max_r[i] = rv > max_r[i] ? rv : max_r[i];
            mn[i] = a[i] < mn[i] ? a[i] : mn[i];
            mx[i] = a[i] > mx[i] ? a[i] : mx[i];
            sabs[i] += (double)v;
        }
        for (int k = 0; k < nt; k++) {
            const float ct = A->c_tau[k];
            int64_t *fk = freq + (size_t)k * F;
#pragma omp simd
            for (int i = 0; i < F; i++) fk[i] += rb[i] > ct;
        }
        for (int i = 0; i < F; i++) rh[bv[i]]++, rh[NBR + bn[i]]++, ah[(size_t)i * NBA + ba[i]]++;
        below[0] += b1v, below[1] += b2v, below[2] += b1n, below[3] += b2n;
        y->r_sum[g * 2] += sv, y->r_sum[g * 2 + 1] += sn;
        if (in_prompt)
            for (int i = 0; i < F; i++) pool[i] += fabsf(a[i]);
        for (int i = 0; i < F; i++)
            if (fabsf(a[i]) > thr[i]) top_insert(y, thr, i, K, a[i], A->d, pos0 + t);
    }
    /* moments of the block, merged into the running ones (Chan) */
    double *bs = A->bsum, *bm = A->bm2;
    memset(bs, 0, (size_t)F * sizeof(double));
    memset(bm, 0, (size_t)F * sizeof(double));
    for (int t = 0; t < n; t++) {
        const float *a = rows + (size_t)t * F;
        for (int i = 0; i < F; i++) bs[i] += (double)a[i];
    }
    const double inv = 1.0 / n;
    for (int i = 0; i < F; i++) bs[i] *= inv; /* block mean */
    for (int t = 0; t < n; t++) {
        const float *a = rows + (size_t)t * F;
        for (int i = 0; i < F; i++) {
            double dd = (double)a[i] - bs[i];
            bm[i] += dd * dd;
        }
    }
    int64_t *cnt = A->count + (size_t)j * G + g;
    const double na = (double)*cnt, nb = (double)n, N = na + nb;
    double *mean = y->mean + gF, *m2 = y->m2 + gF;
    for (int i = 0; i < F; i++) {
        double delta = bs[i] - mean[i];
        mean[i] += delta * (nb / N);
        m2[i] += bm[i] + delta * delta * (na * nb / N);
    }
    *cnt += n;
    return NL_OK;
}

static nl_status sum_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    acc *A = user;
    A->start = start;
    A->new_from = new_from;
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    int skip = new_from > start ? new_from - start : 0;
    if (st == NL_OK && A->progress && skip < T) nl_progress_add(A->progress, T - skip);
    return st;
}

nl_status nl_summary_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_summary *s, int stride, nl_progress *progress,
                         const nl_summary_commit *commit) {
    nl_model *m = nl_forward_model(f);
    const nl_config *c = nl_model_config(m);
    if (c->d_ff != s->d_ff || c->n_layers != s->n_layers || c->d_model != s->d_model)
        return nl_errorf(ctx, NL_EINVAL, "the model's shape (n_layers %d, d_model %d, d_ff %d) is not the summary's (%d, %d, %d)",
                         c->n_layers, c->d_model, c->d_ff, s->n_layers, s->d_model, s->d_ff);
    if (s->n_docs > ds->n_docs)
        return nl_errorf(ctx, NL_EINVAL, "the summary holds %lld documents but the dataset has only %d", (long long)s->n_docs,
                         ds->n_docs);
    for (int d = 0; d < ds->n_docs; d++)
        if (nl_summary_group(s, ds->docs[d].label) < 0)
            return nl_errorf(ctx, NL_EINVAL, "document %d's label '%s' is not a group of the summary", d, ds->docs[d].label);
    const int F = s->d_ff, R = s->n_rec, G = s->n_groups;
    acc A = {.s = s, .F = F, .K = s->top_k, .nt = s->n_tau, .progress = progress};
    for (int k = 0; k < s->n_tau; k++) A.c_tau[k] = nl_float_floor(s->tau[k]);
    A.c1 = nl_float_ceil(0.1), A.c2 = nl_float_ceil(0.2);
    A.thr = malloc((size_t)R * F * sizeof(float));
    A.count = calloc((size_t)R * G, sizeof(int64_t));
    A.pool = malloc((size_t)R * F * sizeof(float));
    A.bsum = malloc((size_t)F * sizeof(double)), A.bm2 = malloc((size_t)F * sizeof(double));
    A.bv = malloc((size_t)F * 2), A.bn = malloc((size_t)F * 2), A.ba = malloc((size_t)F * 2);
    A.rbuf = malloc((size_t)F * sizeof(float));
    float *norms = malloc((size_t)F * sizeof(float));
    nl_status st = NL_OK;
    if (!A.thr || !A.count || !A.pool || !A.bsum || !A.bm2 || !A.bv || !A.bn || !A.ba || !A.rbuf || !norms)
        st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int j = 0; st == NL_OK && j < R; j++) {
        nl_summary_layer *y = &s->lay[j];
        if ((st = nl_model_w_out_norm(ctx, m, s->layers[j], norms)) != NL_OK) break;
        if (s->n_docs > 0 && memcmp(norms, y->w_out_norm, (size_t)F * sizeof(float)))
            st = nl_errorf(ctx, NL_EINVAL, "the model's layer %d W_out norms differ from the summary's: another model", s->layers[j]);
        else memcpy(y->w_out_norm, norms, (size_t)F * sizeof(float));
        for (int i = 0; i < F; i++)
            A.thr[(size_t)j * F + i] = y->top_n[i] == A.K ? fabsf(y->top_value[(size_t)i * A.K + A.K - 1]) : -1.0f;
        for (int g = 0; g < G; g++) A.count[(size_t)j * G + g] = s->group_tokens[g];
    }
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_hook_id hid = 0;
    if (st == NL_OK && nl_hooks_add_id(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, on_act, &A, &hid) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    double last = nl_now(), cost = 0;
    double every = commit ? (commit->seconds == 0 ? 2.0 : commit->seconds) : 0;
    for (int d = (int)s->n_docs; st == NL_OK && d < ds->n_docs; d++) {
        const nl_doc *doc = &ds->docs[d];
        A.doc = doc, A.d = d, A.g = nl_summary_group(s, doc->label);
        memset(A.pool, 0, (size_t)R * F * sizeof(float));
        if ((st = nl_forward_doc(f, ctx, doc, stride, sum_chunk, &A)) != NL_OK) break;
        for (int j = 0; j < R; j++) {
            float *acc_ = A.pool + (size_t)j * F;
            for (int i = 0; i < F; i++) acc_[i] /= (float)doc->prompt_len; /* as recorder.c */
        }
        if ((st = nl_summary_add_doc(ctx, s, doc->label, doc->n_tokens, doc->prompt_len, A.pool)) != NL_OK) break;
        if (commit && commit->fn && d + 1 < ds->n_docs) {
            double t = nl_now(), wait = every > 20 * cost ? every : 20 * cost;
            if (every < 0 || t - last >= wait) {
                st = commit->fn(commit->user, ctx, s);
                last = nl_now();
                cost = last - t;
            }
        }
    }
    if (hid) nl_hooks_remove(hooks, hid);
    free(A.thr), free(A.count), free(A.pool), free(A.bsum), free(A.bm2), free(A.bv), free(A.bn), free(A.ba), free(A.rbuf), free(norms);
    return st;
}

/* ------------------------------------------------------------------ merge */

/* 1 when (va, da, pa) ranks before (vb, db, pb): larger |v|, then lower doc, then lower pos. */
static int top_before(float va, int32_t da, int32_t pa, float vb, int32_t db, int32_t pb) {
    float x = fabsf(va), y = fabsf(vb);
    if (x != y) return x > y;
    if (da != db) return da < db;
    return pa < pb;
}

/* dst ← dst followed by src; dst's groups include src's; same shapes (checked by the caller). */
static nl_status absorb(nl_ctx *ctx, nl_summary *dst, const nl_summary *src) {
    const int F = dst->d_ff, K = dst->top_k, nt = dst->n_tau, Gs = src->n_groups, Gd = dst->n_groups;
    const int64_t shift = dst->n_docs;
    if (shift + src->n_docs > INT32_MAX) return nl_errorf(ctx, NL_EINVAL, "merge: more than %d documents", INT32_MAX);
    int *gmap = malloc((size_t)Gs * sizeof(int));
    int64_t *na = malloc((size_t)Gd * sizeof(int64_t));
    float *tv = malloc((size_t)K * sizeof(float));
    int32_t *td = malloc((size_t)K * sizeof(int32_t)), *tp = malloc((size_t)K * sizeof(int32_t));
    nl_status st = NL_OK;
    if (!gmap || !na || !tv || !td || !tp) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int g = 0; st == NL_OK && g < Gs; g++) gmap[g] = nl_summary_group(dst, src->group_labels[g]);
    if (st == NL_OK) memcpy(na, dst->group_tokens, (size_t)Gd * sizeof(int64_t));
    for (int64_t d = 0; st == NL_OK && d < src->n_docs; d++) {
        st = nl_summary_add_doc(ctx, dst, src->doc_labels[d], src->doc_offsets[d + 1] - src->doc_offsets[d], src->prompt_len[d],
                                NULL);
        for (int j = 0; st == NL_OK && j < dst->n_rec; j++)
            memcpy(dst->lay[j].pooled + (size_t)(shift + d) * F, src->lay[j].pooled + (size_t)d * F, (size_t)F * sizeof(float));
    }
    for (int j = 0; st == NL_OK && j < dst->n_rec; j++) {
        nl_summary_layer *y = &dst->lay[j];
        const nl_summary_layer *x = &src->lay[j];
        for (int g = 0; g < Gs; g++) {
            const int h = gmap[g];
            const double a = (double)na[h], b = (double)src->group_tokens[g];
            const size_t xo = (size_t)g * F, yo = (size_t)h * F;
            if (b > 0)
                for (int i = 0; i < F; i++) {
                    double delta = x->mean[xo + i] - y->mean[yo + i], n = a + b;
                    y->mean[yo + i] += delta * (b / n);
                    y->m2[yo + i] += x->m2[xo + i] + delta * delta * (a * b / n);
                }
            for (int i = 0; i < F; i++) {
                y->sum_abs[yo + i] += x->sum_abs[xo + i];
                y->min[yo + i] = fminf(y->min[yo + i], x->min[xo + i]);
                y->max[yo + i] = fmaxf(y->max[yo + i], x->max[xo + i]);
                y->max_r[yo + i] = fmaxf(y->max_r[yo + i], x->max_r[xo + i]);
            }
            for (size_t k = 0; k < (size_t)nt * F; k++) y->freq[(size_t)h * nt * F + k] += x->freq[(size_t)g * nt * F + k];
            for (int k = 0; k < 2 * NBR; k++) y->r_hist[(size_t)h * 2 * NBR + k] += x->r_hist[(size_t)g * 2 * NBR + k];
            for (int k = 0; k < 4; k++) y->r_below[h * 4 + k] += x->r_below[g * 4 + k];
            y->r_sum[h * 2] += x->r_sum[g * 2], y->r_sum[h * 2 + 1] += x->r_sum[g * 2 + 1];
        }
        for (size_t k = 0; k < (size_t)F * NBA; k++) y->abs_hist[k] += x->abs_hist[k];
        for (int i = 0; i < F; i++) { /* merge two sorted lists */
            const size_t o = (size_t)i * K;
            int p = 0, q = 0, n = 0, nx = x->top_n[i], ny = y->top_n[i];
            while (n < K && (p < ny || q < nx)) {
                int take_y = q >= nx || (p < ny && top_before(y->top_value[o + p], y->top_doc[o + p], y->top_pos[o + p], x->top_value[o + q],
                                                              (int32_t)(x->top_doc[o + q] + shift), x->top_pos[o + q]));
                if (take_y) tv[n] = y->top_value[o + p], td[n] = y->top_doc[o + p], tp[n] = y->top_pos[o + p], p++;
                else tv[n] = x->top_value[o + q], td[n] = (int32_t)(x->top_doc[o + q] + shift), tp[n] = x->top_pos[o + q], q++;
                n++;
            }
            memcpy(y->top_value + o, tv, (size_t)n * sizeof(float));
            memcpy(y->top_doc + o, td, (size_t)n * sizeof(int32_t));
            memcpy(y->top_pos + o, tp, (size_t)n * sizeof(int32_t));
            y->top_n[i] = n;
        }
    }
    free(gmap), free(na), free(tv), free(td), free(tp);
    return st;
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 4;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s + %s", a, b);
    return p;
}

nl_status nl_summary_merge(nl_ctx *ctx, nl_summary *a, const nl_summary *b) {
    const char *what = NULL;
    if (a->n_layers != b->n_layers || a->d_model != b->d_model || a->d_ff != b->d_ff) what = "shape (n_layers, d_model, d_ff)";
    else if (strcmp(a->model, b->model) || strcmp(a->arch, b->arch) || strcmp(a->ffn_kind, b->ffn_kind) || strcmp(a->act_fn, b->act_fn))
        what = "model";
    else if (a->n_rec != b->n_rec || memcmp(a->layers, b->layers, (size_t)a->n_rec * sizeof(int))) what = "recorded layers";
    else if (strcmp(a->compute, b->compute)) what = "compute formats (f32/bf16)";
    else if (a->top_k != b->top_k) what = "top-K";
    else if (a->n_tau != b->n_tau || memcmp(a->tau, b->tau, (size_t)a->n_tau * sizeof(double))) what = "thresholds";
    for (int j = 0; !what && j < a->n_rec; j++)
        if (a->n_docs > 0 && b->n_docs > 0 && memcmp(a->lay[j].w_out_norm, b->lay[j].w_out_norm, (size_t)a->d_ff * sizeof(float)))
            what = "W_out norms";
    if (what) return nl_errorf(ctx, NL_EINVAL, "cannot merge the summaries: their %s differ", what);
    /* the united groups */
    char **u = malloc((size_t)(a->n_groups + b->n_groups) * sizeof *u);
    if (!u) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int n = 0;
    for (int g = 0; g < a->n_groups; g++) u[n++] = a->group_labels[g];
    for (int g = 0; g < b->n_groups; g++)
        if (nl_summary_group(a, b->group_labels[g]) < 0) u[n++] = b->group_labels[g];
    nl_summary_desc d = {a->model, a->arch, a->ffn_kind, a->act_fn, a->dataset, a->tokenizer, a->dataset_checksum,
                         a->n_layers, a->d_model, a->d_ff, a->layers, a->n_rec, a->top_k, a->tau, a->n_tau,
                         (const char *const *)u, n, a->compute};
    nl_summary *m = NULL;
    nl_status st = nl_summary_create(ctx, &d, &m);
    free(u);
    if (st != NL_OK) return st;
    const nl_summary *wsrc = a->n_docs > 0 || b->n_docs == 0 ? a : b;
    for (int j = 0; j < m->n_rec; j++) memcpy(m->lay[j].w_out_norm, wsrc->lay[j].w_out_norm, (size_t)m->d_ff * sizeof(float));
    if ((st = absorb(ctx, m, a)) == NL_OK) st = absorb(ctx, m, b);
    if (st == NL_OK && (strcmp(a->dataset, b->dataset) || strcmp(a->dataset_checksum, b->dataset_checksum))) {
        char *ds = strcmp(a->dataset, b->dataset) ? join(a->dataset, b->dataset) : strdup(a->dataset), *ck = strdup("");
        if (!ds || !ck) {
            free(ds), free(ck);
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        } else {
            free(m->dataset), free(m->dataset_checksum);
            m->dataset = ds, m->dataset_checksum = ck;
        }
    }
    if (st != NL_OK) {
        nl_summary_destroy(m);
        return st;
    }
    m->complete = a->complete && b->complete;
    free(m->created_by);
    m->created_by = a->created_by, a->created_by = NULL;
    nl_summary tmp = *a; /* swap the contents: a takes m's, m (with a's old ones) is destroyed */
    *a = *m;
    *m = tmp;
    nl_summary_destroy(m);
    nl_summary_sync_info(a);
    return NL_OK;
}
