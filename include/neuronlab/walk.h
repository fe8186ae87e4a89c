/* walk.h — the document walker: runs one document through the forward pass in sliding
 * windows of the context and chunks of the batch size (evaluation code: perplexity.h and
 * recorder.h walk documents with it; the analyses that run the model do too).
 *
 * Contract: within a document, window k covers tokens [kS, kS+C) (C = the forward pass's
 * context, S the stride, default C/2), starts with an empty KV cache, and its rows before
 * new_from were already covered by window k-1 (context only). See perplexity.h for how
 * scoring counts each prediction once. Checked by tests/test_forward.c.
 */
#ifndef NEURONLAB_WALK_H
#define NEURONLAB_WALK_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"

/* Called for each chunk of a document: the callback hands rows doc->tokens[start .. start+T)
 * to the forward pass itself (it chooses run or nll). Rows with index < new_from were
 * already covered by the previous window (context only): skip them when counting. */
typedef nl_status (*nl_chunk_fn)(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T,
                                 int new_from);

/* Walks doc in sliding windows of the forward pass's context (stride as above; stride ≤ 0
 * means C/2) and chunks of its batch size, resetting the KV cache at each window start. */
nl_status nl_forward_doc(nl_forward *f, nl_ctx *ctx, const nl_doc *doc, int stride, nl_chunk_fn fn, void *user);

/* The windows nl_forward_doc walks, one at a time: tokens [w0, wend) of a document of n tokens,
 * those before new_from already scored by the previous window. Start from a zeroed struct;
 * nl_window_next returns 0 after the last window (at once when n ≤ 0). */
typedef struct {
    int w0, wend, new_from;
    int started, last; /* private */
} nl_window;
int nl_window_next(nl_window *w, int n, int C, int stride);

#endif
