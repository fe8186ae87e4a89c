/* perplexity.h — scoring a dataset: loss and perplexity overall, per label and per document.
 *
 * Contract: within a document, token i predicts token i+1 for every i+1 ≥ doc.score_from
 * (all tokens after the first for plain rows; the response for prompt/response rows).
 * Documents longer than the context C are scored in sliding windows of C tokens that
 * start every S tokens (the stride, default C/2): window k covers tokens [kS, kS+C), starts
 * with an empty KV cache, and scores only the predictions not scored by window k-1, so every
 * prediction after the first window sees at least C-S tokens of context, and each is
 * counted exactly once (a window's last token still predicts the next window's first).
 * The number of predictions never depends on C or S; only the context they see does.
 * Within a window, tokens go through the forward pass in chunks of at most the batch size
 * (the KV cache carries the rest).
 * A NaN or infinite loss is an error (NL_EFORMAT naming the model, the document and its
 * line): sums are always finite, though exp() of a huge mean loss may still overflow.
 * Checked by tests/test_forward.c (stories260K perplexity) and tests/test_model.c.
 */
#ifndef NEURONLAB_PERPLEXITY_H
#define NEURONLAB_PERPLEXITY_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/walk.h"
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

/* Scores every document of ds (stride as in nl_forward_doc); fails on a non-finite loss. progress may be NULL. *out is caller-owned: release with
 * nl_ppl_result_release. */
nl_status nl_ppl_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                     nl_ppl_result *out);
void nl_ppl_result_release(nl_ppl_result *r);

/* Hooks of the caller's own per forward state, so that commands whose hooks keep state (perturb's
 * random stream) score documents in parallel too. attach installs this state's hooks on g (a
 * state made like the caller's f, without f's hooks) and sets *state (its data); doc(state, d) is
 * called on g's thread before document d runs through g; detach removes the hooks and frees the
 * data. All three are called on one state at a time; user is passed to attach and detach. */
typedef struct {
    nl_status (*attach)(void *user, nl_ctx *ctx, nl_forward *g, void **state);
    void (*doc)(void *state, int d);
    void (*detach)(void *user, nl_forward *g, void *state);
    void *user;
    int n_hooks;   /* hooks the caller registered on f for the serial loop (attach's counterpart) */
    int own_ffn;   /* 1: f's replaced FFNs are the caller's, and attach installs them on g too */
} nl_ppl_states;

/* nl_ppl_run with the caller's hooks given twice: registered on f (the serial loop runs them),
 * and as ps, which the documents in parallel use when nl_forward_doc_threads_own(f, ps->n_hooks, ps->own_ffn)
 * allows them (f holds no hook but those: any other, e.g. an observer of the caller's caller,
 * keeps the serial loop, so it sees every row).
 * The two must compute the same thing: by_doc (summed in document order) is then the same
 * whichever runs, and the same as with one thread. */
nl_status nl_ppl_run_states(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                            const nl_ppl_states *ps, nl_ppl_result *out);

#endif
