/* perplexity.c — dataset scoring in windows and chunks (contract in perplexity.h). */
#include "neuronlab/perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double nl_nll_mean(nl_nll_sum s) { return s.n > 0 ? s.nll / (double)s.n : NAN; }
double nl_nll_ppl(nl_nll_sum s) { return exp(nl_nll_mean(s)); }

nl_status nl_forward_doc(nl_forward *f, nl_ctx *ctx, const nl_doc *doc, int stride, nl_chunk_fn fn, void *user) {
    const int C = nl_forward_max_P(f), B = nl_forward_max_T(f), n = doc->n_tokens;
    const int S = stride > 0 && stride <= C ? stride : (C > 1 ? C / 2 : 1);
    int prev_end = 0;
    for (int w0 = 0;; w0 += S) {
        int wend = w0 + C < n ? w0 + C : n;
        if (wend <= prev_end) continue; /* window adds nothing new (only when S < C at the end) */
        nl_forward_reset(f);
        for (int s = w0; s < wend; s += B) {
            int T = wend - s < B ? wend - s : B;
            nl_status st = fn(user, ctx, f, doc, s, T, prev_end);
            if (st != NL_OK) return st;
        }
        prev_end = wend;
        if (wend == n) break;
    }
    return NL_OK;
}

typedef struct {
    int32_t *targets; /* (B) */
    double *nll;      /* (B) */
    nl_nll_sum sum;
    nl_progress *progress;
} ppl_state;

static nl_status ppl_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T,
                           int new_from) {
    ppl_state *s = user;
    for (int t = 0; t < T; t++) {
        int j = start + t + 1; /* index of the predicted token */
        s->targets[t] = (start + t >= new_from && j < doc->n_tokens && j >= doc->score_from) ? doc->tokens[j] : -1;
    }
    nl_status st = nl_forward_nll(f, ctx, doc->tokens + start, s->targets, T, s->nll);
    if (st != NL_OK) return st;
    for (int t = 0; t < T; t++)
        if (s->targets[t] >= 0) { s->sum.nll += s->nll[t]; s->sum.n++; }
    if (s->progress) nl_progress_add(s->progress, T);
    return NL_OK;
}

void nl_ppl_result_release(nl_ppl_result *r) {
    if (!r) return;
    free(r->by_label);
    free(r->by_doc);
    memset(r, 0, sizeof *r);
}

nl_status nl_ppl_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                     nl_ppl_result *out) {
    memset(out, 0, sizeof *out);
    const int B = nl_forward_max_T(f);
    ppl_state s = {malloc((size_t)B * sizeof(int32_t)), malloc((size_t)B * sizeof(double)), {0, 0}, progress};
    out->by_label = calloc((size_t)ds->n_labels + 1, sizeof(nl_nll_sum));
    out->by_doc = calloc((size_t)ds->n_docs, sizeof(nl_nll_sum));
    out->n_labels = ds->n_labels;
    out->n_docs = ds->n_docs;
    nl_status st = NL_OK;
    if (!s.targets || !s.nll || !out->by_label || !out->by_doc) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        s.sum = (nl_nll_sum){0, 0};
        st = nl_forward_doc(f, ctx, &ds->docs[d], stride, ppl_chunk, &s);
        if (st != NL_OK) break;
        out->by_doc[d] = s.sum;
        int li = nl_dataset_label_index(ds, ds->docs[d].label);
        out->by_label[li].nll += s.sum.nll;
        out->by_label[li].n += s.sum.n;
        out->total.nll += s.sum.nll;
        out->total.n += s.sum.n;
    }
    free(s.targets);
    free(s.nll);
    if (st != NL_OK) nl_ppl_result_release(out);
    return st;
}

nl_status nl_unigram_fit(nl_ctx *ctx, const nl_dataset *train, int V, double **logp) {
    *logp = NULL;
    int64_t *count = calloc((size_t)V, sizeof *count);
    double *lp = malloc((size_t)V * sizeof *lp);
    if (!count || !lp) {
        free(count);
        free(lp);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    int64_t N = 0;
    for (int d = 0; d < train->n_docs; d++)
        for (int j = 0; j < train->docs[d].n_tokens; j++) {
            int32_t v = train->docs[d].tokens[j];
            if (v < 0 || v >= V) {
                free(count);
                free(lp);
                return nl_errorf(ctx, NL_EINVAL, "'%s' line %d: token id %d is outside the vocabulary (size %d)", train->path,
                                 train->docs[d].line, v, V);
            }
            count[v]++;
            N++;
        }
    for (int v = 0; v < V; v++) lp[v] = log((double)(count[v] + 1) / (double)(N + V));
    free(count);
    *logp = lp;
    return NL_OK;
}

nl_status nl_unigram_score(nl_ctx *ctx, const nl_dataset *ds, const double *logp, int V, nl_ppl_result *out) {
    memset(out, 0, sizeof *out);
    out->by_label = calloc((size_t)ds->n_labels + 1, sizeof(nl_nll_sum));
    out->by_doc = calloc((size_t)ds->n_docs, sizeof(nl_nll_sum));
    out->n_labels = ds->n_labels;
    out->n_docs = ds->n_docs;
    if (!out->by_label || !out->by_doc) {
        nl_ppl_result_release(out);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    for (int d = 0; d < ds->n_docs; d++) {
        const nl_doc *doc = &ds->docs[d];
        nl_nll_sum sum = {0, 0};
        for (int j = doc->score_from > 1 ? doc->score_from : 1; j < doc->n_tokens; j++) {
            int32_t v = doc->tokens[j];
            if (v < 0 || v >= V) {
                nl_ppl_result_release(out);
                return nl_errorf(ctx, NL_EINVAL, "'%s' line %d: token id %d is outside the vocabulary (size %d)", ds->path, doc->line,
                                 v, V);
            }
            sum.nll -= logp[v];
            sum.n++;
        }
        out->by_doc[d] = sum;
        int li = nl_dataset_label_index(ds, doc->label);
        out->by_label[li].nll += sum.nll;
        out->by_label[li].n += sum.n;
        out->total.nll += sum.nll;
        out->total.n += sum.n;
    }
    return NL_OK;
}
