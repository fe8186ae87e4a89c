/* unigram.c — the add-one unigram baseline (contract in unigram.h).
 * Checked by tests/test_forward.c and tests/text_data.sh (ppl --unigram). */
#include "neuronlab/unigram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
