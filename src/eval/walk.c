/* walk.c — a document through the forward pass in sliding windows and batch-size chunks
 * (contract in walk.h). Checked by tests/test_forward.c (stories260K perplexity) and
 * tests/test_recorder.c (activations of long documents). */
#include "neuronlab/walk.h"

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
