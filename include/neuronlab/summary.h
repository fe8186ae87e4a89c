/* summary.h — the streaming summary of `neuronlab record --stats`: accumulates, on the
 * forward pass's ffn_act hook, everything summary_h5.h defines (moments, extremes, mean |a|,
 * frequencies above the sparsity thresholds, the sparsity analysis' histograms of the
 * normalised indicators, |a| histograms, per-label sums, per-document pooled values and the
 * top-K tokens of every neuron), and merges two summaries of consecutive documents into the
 * summary of both.
 *
 * Rules:
 *  - Memory does not grow with the number of tokens: per recorded layer O(G·F·n_tau +
 *    F·(bins + K)) plus the pooled values (one float per document, layer and neuron).
 *  - Documents are walked as recorder.h walks them (sliding windows, batches; each token
 *    counted once, from the first window where it is new), in dataset order, so per-group
 *    sums run in token order: the same order as the sparsity analysis reading a dump.
 *  - The top-K list of a neuron is kept sorted (best first: larger |a|, then lower document,
 *    then lower position); a token enters only when its |a| beats the K-th, so the list costs
 *    O(K) per entering token and nothing otherwise.
 *  - Moments: per batch, the block mean and M2 in double, merged by Chan's formula.
 *  - A token with a non-finite activation stops the run (NL_EFORMAT naming layer, document,
 *    position): a NaN would poison every statistic of its neuron.
 *  - Commitment: a document is the unit. The statistics are exact at every document boundary,
 *    where the run may hand the summary to a commit callback (which writes it with
 *    complete = 0); an interrupted run (NL_EINTR) leaves the summary holding a partial
 *    document, so the caller must not write it: the last commit stands.
 * Checked by tests/test_summary.c (statistics against a full dump of the same run, merge of
 * two halves, top-K against an argsort, sparsity/ability from a summary) and
 * tests/summary_cli.sh.
 */
#ifndef NEURONLAB_SUMMARY_H
#define NEURONLAB_SUMMARY_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/progress.h"
#include "neuronlab/summary_h5.h"

/* An empty summary for recording ds: desc as summary_h5.h, with the groups taken from the
 * dataset (every distinct document label, "" included when a document has none; desc's
 * group fields are ignored). */
nl_status nl_summary_create_for(nl_ctx *ctx, const nl_summary_desc *desc, const nl_dataset *ds, nl_summary **out);

/* Called at a document boundary (every statistic is exact for the s->n_docs documents):
 * write s somewhere (with complete = 0). A non-OK status stops the run. */
typedef nl_status (*nl_summary_commit_fn)(void *user, nl_ctx *ctx, const nl_summary *s);

typedef struct {
    nl_summary_commit_fn fn; /* NULL: never */
    void *user;
    double seconds;          /* commit when a document ends and max(seconds, 20 × the last
                              * commit's duration) has passed since the last one (the
                              * summary is rewritten whole, so commits cost ≤ 5 % of the run);
                              * 0 → 2 s; < 0 → after every document. Never after the last
                              * document: the caller writes the final file. */
} nl_summary_commit;

/* Runs ds's documents from s->n_docs on (0 for a new summary; a summary read back from a
 * committed file continues after its documents) through f and adds them to s. Sets every
 * recorded layer's w_out_norm from f's model (a resumed summary must hold the same norms:
 * NL_EINVAL otherwise). f's hooks get one observer for the call (removed before returning).
 * stride as in nl_forward_doc; progress may be NULL; commit may be NULL. The dataset's
 * labels must be groups of s (NL_EINVAL). Does not set s->complete. */
nl_status nl_summary_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_summary *s, int stride, nl_progress *progress,
                         const nl_summary_commit *commit);

/* a ← the summary of a's documents followed by b's (b's document indices are shifted by
 * a->n_docs). Counts, histograms, frequencies, extremes and top-K lists merge exactly;
 * mean/M2 by Chan's formula and the sums in double (equal to one pass up to rounding).
 * Groups are united. Requires the same model description, layers, top_k, thresholds and
 * w_out_norm (else NL_EINVAL naming the difference); the datasets, when they differ, are
 * joined as "A + B" and the checksum cleared. complete = both complete. b is unchanged. */
nl_status nl_summary_merge(nl_ctx *ctx, nl_summary *a, const nl_summary *b);

#endif
