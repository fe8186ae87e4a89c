/* unigram.h — the unigram baseline a trained model must clear (`ppl --unigram`).
 * Checked by tests/test_forward.c and tests/text_data.sh. */
#ifndef NEURONLAB_UNIGRAM_H
#define NEURONLAB_UNIGRAM_H

#include "neuronlab/dataset.h"
#include "neuronlab/perplexity.h"

/* Unigram baseline, the floor a trained model must clear: p(v) = (c(v) + 1) / (N + V), where
 * c(v) counts id v over every token of train (N tokens) — maximum likelihood with add-one
 * smoothing so unseen ids keep a finite loss. *logp: (V) log-probabilities, malloc'd, caller
 * frees. NL_EINVAL when train has an id ≥ V. */
nl_status nl_unigram_fit(nl_ctx *ctx, const nl_dataset *train, int V, double **logp);
/* Scores ds with the unigram: exactly the predictions nl_ppl_run counts (token j of a document
 * for j ≥ max(1, score_from)), nll = -logp[token]. *out as from nl_ppl_run. */
nl_status nl_unigram_score(nl_ctx *ctx, const nl_dataset *ds, const double *logp, int V, nl_ppl_result *out);

#endif
