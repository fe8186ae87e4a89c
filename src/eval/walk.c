/* walk.c — a document through the forward pass in sliding windows and batch-size chunks
 * (contract in walk.h). Checked by tests/test_forward.c (stories260K perplexity) and
 * tests/test_recorder.c (activations of long documents). */
#include "neuronlab/walk.h"

int nl_window_next(nl_window *w, int n, int C, int stride) {
    const int S = stride > 0 && stride <= C ? stride : (C > 1 ? C / 2 : 1);
    if (n <= 0 || w->last) return 0;
    const int prev_end = w->started ? w->wend : 0;
    for (int w0 = w->started ? w->w0 + S : 0;; w0 += S) {
        const int wend = w0 + C < n ? w0 + C : n;
        if (wend <= prev_end) continue; /* window adds nothing new (only when S < C at the end) */
        w->w0 = w0, w->wend = wend, w->new_from = prev_end, w->started = 1, w->last = wend == n;
        return 1;
    }
}

nl_status nl_forward_doc(nl_forward *f, nl_ctx *ctx, const nl_doc *doc, int stride, nl_chunk_fn fn, void *user) {
    const int C = nl_forward_max_P(f), B = nl_forward_max_T(f);
    nl_window w = {0};
    while (nl_window_next(&w, doc->n_tokens, C, stride)) {
        nl_forward_reset(f);
        for (int s = w.w0; s < w.wend; s += B) {
            int T = w.wend - s < B ? w.wend - s : B;
            nl_status st = fn(user, ctx, f, doc, s, T, w.new_from);
            if (st != NL_OK) return st;
        }
    }
    return NL_OK;
}
