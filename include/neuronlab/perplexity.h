/* perplexity.h — scoring a dataset: loss and perplexity overall, per label and per document.
 *
 * Contract: within a document, token i predicts token i+1 for every i+1 ≥ doc.score_from
 * (all tokens after the first for plain rows; the response for prompt/response rows).
 * Documents longer than the context C are cut into consecutive, non-overlapping windows
 * of C tokens; each window starts with an empty KV cache, and its last token still
 * predicts the first token of the next window. So the number of predictions never depends
 * on C; only the context each prediction sees does. Within a window, tokens go through
 * the forward pass in chunks of at most the batch size (the KV cache carries the rest).
 * Checked by tests/test_forward.c (stories260K perplexity).
 */
#ifndef NEURONLAB_PERPLEXITY_H
#define NEURONLAB_PERPLEXITY_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/progress.h"

typedef struct {
    double nll;  /* summed negative log-likelihood (nats) */
    int64_t n;   /* predictions */
} nl_nll_sum;

typedef struct {
    nl_nll_sum total;
    nl_nll_sum *by_label; /* (n_labels of the dataset) owned */
    nl_nll_sum *by_doc;   /* (Dc) owned */
    int n_labels, n_docs;
} nl_ppl_result;

double nl_nll_mean(nl_nll_sum s); /* nll / n (NaN when n == 0) */
double nl_nll_ppl(nl_nll_sum s);  /* exp(mean) */

/* Called for each chunk of a document: rows doc->tokens[start .. start+T) have just been
 * handed to the forward pass by the callback itself (it chooses run or nll). */
typedef nl_status (*nl_chunk_fn)(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T);

/* Walks doc in windows of the forward pass's context and chunks of its batch size,
 * resetting the KV cache at each window start, and calls fn per chunk. */
nl_status nl_forward_doc(nl_forward *f, nl_ctx *ctx, const nl_doc *doc, nl_chunk_fn fn, void *user);

/* Scores every document of ds. progress may be NULL. *out is caller-owned: release with
 * nl_ppl_result_release. */
nl_status nl_ppl_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_progress *progress, nl_ppl_result *out);
void nl_ppl_result_release(nl_ppl_result *r);

#endif
