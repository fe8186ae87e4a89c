/* perplexity.c — dataset scoring in windows and chunks (contract in perplexity.h).
 * A loss that is NaN or infinite stops the run with NL_EFORMAT naming the model, the
 * document and its line, so no command (ppl, perturb, prune) reports or stores NaN.
 * Checked by tests/test_forward.c and tests/test_model.c (non-finite loss). */
#include "neuronlab/perplexity.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/mpi.h"
#include "neuronlab/walk.h"

/* Windows per pass in windows mode: 2 halves the weight packing per token of 512-token
 * windows (bench/README.md, "windows"). */
#ifndef NL_PPL_WINDOWS
#define NL_PPL_WINDOWS 2
#endif

double nl_nll_mean(nl_nll_sum s) { return s.n > 0 ? s.nll / (double)s.n : NAN; }
double nl_nll_ppl(nl_nll_sum s) { return exp(nl_nll_mean(s)); }

typedef struct {
    int32_t *targets; /* (B) */
    double *nll;      /* (B) */
    nl_nll_sum sum;
    nl_progress *progress;
    int doc_index;    /* the document being scored (messages) */
} ppl_state;

/* The error of a loss v that is not finite at document d (0-based), token `token` (1-based). */
static nl_status not_finite(nl_ctx *ctx, nl_forward *f, double v, int d, int line, int token) {
    return nl_errorf(ctx, NL_EFORMAT,
                     "'%s': the loss is not finite (%s) at document %d (line %d), token %d: the weights or the config give "
                     "NaN/Inf", nl_model_path(nl_forward_model(f)), isnan(v) ? "nan" : "inf", d + 1, line, token);
}

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
        if (s->targets[t] >= 0) {
            if (!isfinite(s->nll[t])) return not_finite(ctx, f, s->nll[t], s->doc_index, doc->line, start + t + 1);
            s->sum.nll += s->nll[t];
            s->sum.n++;
        }
    /* progress counts each token once (windows overlap by their context when stride < length),
     * so a total of ds->n_tokens per pass ends at 100 % */
    int fresh = start + T - (new_from > start ? new_from : start);
    if (s->progress && fresh > 0) {
#pragma omp critical(nl_ppl_progress)
        nl_progress_add(s->progress, fresh);
    }
    return NL_OK;
}

void nl_ppl_result_release(nl_ppl_result *r) {
    if (!r) return;
    free(r->by_label);
    free(r->by_doc);
    memset(r, 0, sizeof *r);
}

/* A worker thread's error my (message in local): the first one in time becomes the run's (st,
 * ctx->msg) and tells the other threads to stop at their next document or bundle. */
static void keep_first_error(nl_ctx *ctx, const nl_ctx *local, nl_status my, volatile int *failed, nl_status *st) {
#pragma omp critical(nl_ppl_error)
    if (!*failed) {
        *failed = 1;
        *st = my;
        memcpy(ctx->msg, local->msg, sizeof ctx->msg);
    }
}

/* ---- windows mode: several windows per forward pass ------------------------------------------
 * Each thread scores bundles of consecutive documents on a windows state (forward.h): their
 * windows in document order, as many per pass as its rows hold. A document's windows all
 * belong to one bundle and are summed in the serial loop's order, so by_doc[d] is the serial
 * loop's (each row's nll is its window's alone). */
typedef struct {
    int32_t *tokens, *targets; /* (rows) the pass's windows, concatenated */
    double *nll;               /* (rows) */
    int *lens, *doc, *w0, *new_from; /* (rows) per window of the pass: length, document, start, first new token */
    int n, used;               /* windows and rows in the pass */
} win_pass;

/* Scores the pass's windows and adds their rows with a target to by_doc, in order. */
static nl_status win_flush(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, win_pass *p, nl_nll_sum *by_doc,
                           nl_progress *progress) {
    if (!p->n) return NL_OK;
    nl_status st = nl_forward_nll_windows(f, ctx, p->tokens, p->targets, p->lens, p->n, p->nll);
    for (int w = 0, off = 0; st == NL_OK && w < p->n; off += p->lens[w++]) {
        const nl_doc *doc = &ds->docs[p->doc[w]];
        nl_nll_sum *sum = &by_doc[p->doc[w]];
        for (int t = 0; t < p->lens[w]; t++)
            if (p->targets[off + t] >= 0) {
                const double v = p->nll[off + t];
                if (!isfinite(v)) return not_finite(ctx, f, v, p->doc[w], doc->line, p->w0[w] + t + 1);
                sum->nll += v;
                sum->n++;
            }
        const int fresh = p->w0[w] + p->lens[w] - (p->new_from[w] > p->w0[w] ? p->new_from[w] : p->w0[w]);
        if (progress && fresh > 0) {
#pragma omp critical(nl_ppl_progress)
            nl_progress_add(progress, fresh);
        }
    }
    p->n = p->used = 0;
    return st;
}

/* Documents lo..hi-1 of one bundle through the windows state f (C: the window, stride). */
static nl_status win_bundle(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int C, int stride, int lo, int hi, win_pass *p,
                            nl_nll_sum *by_doc, nl_progress *progress) {
    const int rows = nl_forward_max_T(f);
    nl_status st = NL_OK;
    for (int d = lo; st == NL_OK && d < hi; d++) {
        const nl_doc *doc = &ds->docs[d];
        by_doc[d] = (nl_nll_sum){0, 0};
        nl_window w = {0};
        while (st == NL_OK && nl_window_next(&w, doc->n_tokens, C, stride)) {
            const int T = w.wend - w.w0;
            if (p->used + T > rows && (st = win_flush(ctx, f, ds, p, by_doc, progress)) != NL_OK) break;
            memcpy(p->tokens + p->used, doc->tokens + w.w0, (size_t)T * sizeof(int32_t));
            for (int t = 0; t < T; t++) { /* as ppl_chunk */
                const int j = w.w0 + t + 1;
                p->targets[p->used + t] = (w.w0 + t >= w.new_from && j < doc->n_tokens && j >= doc->score_from) ? doc->tokens[j] : -1;
            }
            p->lens[p->n] = T, p->doc[p->n] = d, p->w0[p->n] = w.w0, p->new_from[p->n] = w.new_from;
            p->n++, p->used += T;
        }
    }
    return st == NL_OK ? win_flush(ctx, f, ds, p, by_doc, progress) : st;
}

/* Bundles of consecutive documents of lo..hi-1 whose windows fill at most `rows` rows (a longer
 * document alone); start[b] … start[b+1]-1 is bundle b. Returns the count; 0 when a window is
 * longer than B (it needs several passes: not for windows mode), -1 without memory. */
static int win_bundles(const nl_dataset *ds, int C, int B, int stride, int lo, int hi, int rows, int **start) {
    int n = 0, acc = 0;
    if (!(*start = malloc((size_t)(hi - lo + 1) * sizeof **start))) return -1;
    for (int d = lo; d < hi; d++) {
        int r = 0;
        nl_window w = {0};
        while (nl_window_next(&w, ds->docs[d].n_tokens, C, stride)) {
            if (w.wend - w.w0 > B) return 0;
            r += w.wend - w.w0;
        }
        if (n == 0 || acc + r > rows) (*start)[n++] = d, acc = 0;
        acc += r;
    }
    (*start)[n] = hi;
    return n;
}

/* Documents lo..hi-1 in windows mode on n threads (nl_forward_windows_fit(f, n, nw)). */
static nl_status ppl_windows_parallel(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                                      int nb, const int *bstart, int n, int nw, nl_nll_sum *by_doc) {
    nl_forward **fs = calloc((size_t)n, sizeof *fs);
    if (!fs) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = NL_OK;
    for (int i = 0; i < n && st == NL_OK; i++) st = nl_forward_create_windows(ctx, f, nw, &fs[i]);
    const int C = nl_forward_max_P(f), R = nl_forward_max_T(f) * nw;
    volatile int failed = st != NL_OK;
#pragma omp parallel num_threads(n) if (st == NL_OK)
    {
        nl_ctx local = *ctx;
        local.msg[0] = 0;
        win_pass p = {malloc((size_t)R * sizeof(int32_t)), malloc((size_t)R * sizeof(int32_t)), malloc((size_t)R * sizeof(double)),
                      malloc((size_t)R * sizeof(int)), malloc((size_t)R * sizeof(int)), malloc((size_t)R * sizeof(int)),
                      malloc((size_t)R * sizeof(int)), 0, 0};
        nl_status my = p.tokens && p.targets && p.nll && p.lens && p.doc && p.w0 && p.new_from
                           ? NL_OK : nl_errorf(&local, NL_ENOMEM, "out of memory");
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            if (failed || my != NL_OK) continue;
            my = win_bundle(&local, fs[omp_get_thread_num()], ds, C, stride, bstart[b], bstart[b + 1], &p, by_doc, progress);
        }
        if (my != NL_OK) keep_first_error(ctx, &local, my, &failed, &st);
        free(p.tokens), free(p.targets), free(p.nll), free(p.lens), free(p.doc), free(p.w0), free(p.new_from);
    }
    for (int i = 0; i < n; i++) nl_forward_destroy(fs[i]);
    free(fs);
    return st;
}

/* Documents lo..hi-1 scored by n independent forward states (f and n-1 like it), one per
 * thread, each taking the next document when done (nl_forward_doc_threads). by_doc[d] is what
 * the serial loop computes: each document runs the same kernels, single-threaded. On errors the
 * first one (in time) is reported and the other threads stop at their next document. */
static nl_status ppl_docs_parallel(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                                   int lo, int hi, int n, nl_nll_sum *by_doc, const nl_ppl_states *ps) {
    nl_forward **fs = calloc((size_t)n, sizeof *fs);
    void **state = calloc((size_t)n, sizeof *state);
    if (!fs || !state) {
        free(fs);
        free(state);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    nl_status st = NL_OK;
    fs[0] = ps ? NULL : f; /* with per-state hooks every state is new (f keeps its own hooks) */
    for (int i = ps ? 0 : 1; i < n && st == NL_OK; i++) st = nl_forward_create_like(ctx, f, &fs[i]);
    int attached = 0;
    for (; ps && st == NL_OK && attached < n; attached++)
        if ((st = ps->attach(ps->user, ctx, fs[attached], &state[attached])) != NL_OK) break;
    const int B = nl_forward_max_T(f);
    volatile int failed = st != NL_OK;
#pragma omp parallel num_threads(n) if (st == NL_OK)
    {
        nl_ctx local = *ctx;
        local.msg[0] = 0;
        nl_forward *mine = fs[omp_get_thread_num()];
        void *my_state = state[omp_get_thread_num()];
        ppl_state s = {malloc((size_t)B * sizeof(int32_t)), malloc((size_t)B * sizeof(double)), {0, 0}, progress, 0};
        nl_status my = s.targets && s.nll ? NL_OK : nl_errorf(&local, NL_ENOMEM, "out of memory");
#pragma omp for schedule(dynamic, 1)
        for (int d = lo; d < hi; d++) {
            if (failed || my != NL_OK) continue;
            s.sum = (nl_nll_sum){0, 0};
            s.doc_index = d;
            if (ps && ps->doc) ps->doc(my_state, d);
            if ((my = nl_forward_doc(mine, &local, &ds->docs[d], stride, ppl_chunk, &s)) == NL_OK) by_doc[d] = s.sum;
        }
        if (my != NL_OK) keep_first_error(ctx, &local, my, &failed, &st);
        free(s.targets);
        free(s.nll);
    }
    for (int i = 0; ps && i < attached; i++) ps->detach(ps->user, fs[i], state[i]);
    for (int i = ps ? 0 : 1; i < n; i++) nl_forward_destroy(fs[i]);
    free(fs);
    free(state);
    return st;
}

nl_status nl_ppl_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                     nl_ppl_result *out) {
    return nl_ppl_run_states(ctx, f, ds, stride, progress, NULL, out);
}

nl_status nl_ppl_run_states(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_progress *progress,
                            const nl_ppl_states *ps, nl_ppl_result *out) {
    memset(out, 0, sizeof *out);
    const int B = nl_forward_max_T(f);
    ppl_state s = {malloc((size_t)B * sizeof(int32_t)), malloc((size_t)B * sizeof(double)), {0, 0}, progress, 0};
    out->by_label = calloc((size_t)ds->n_labels + 1, sizeof(nl_nll_sum));
    out->by_doc = calloc((size_t)ds->n_docs, sizeof(nl_nll_sum));
    out->n_labels = ds->n_labels;
    out->n_docs = ds->n_docs;
    nl_status st = NL_OK;
    if (!s.targets || !s.nll || !out->by_label || !out->by_doc) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    /* Under MPI (mpi.h) this rank scores its block of documents, the blocks are gathered, and
     * every rank sums the per-document results in document order: the sums of one process. */
    int lo = 0, hi = ds->n_docs;
    nl_mpi_block(ds->n_docs, &lo, &hi);
    int n_par = st == NL_OK && hi - lo > 1 ? ps ? nl_forward_doc_threads_own(f, ps->n_hooks, ps->own_ffn) : nl_forward_doc_threads(f) : 1;
    /* a large model's document takes long on one thread: side by side only with at least two
     * documents per state, so the last round does not leave most threads idle */
    if (n_par > 1 && (size_t)nl_model_bytes(nl_forward_model(f)) > NL_KEEP_F32_BYTES && hi - lo < 2 * n_par) n_par = 1;
    /* several windows per pass when the states fit and there are at least two bundles per thread */
    int nw = n_par > 1 && !ps ? NL_PPL_WINDOWS : 1, *bstart = NULL, nb = 0;
    while (nw > 1 && !nl_forward_windows_fit(f, n_par, nw)) nw /= 2;
    if (nw > 1) {
        const int C = nl_forward_max_P(f), Bw = nl_forward_max_T(f);
        if ((nb = win_bundles(ds, C, Bw, stride, lo, hi, Bw * nw, &bstart)) < 2 * n_par) nw = 1;
    }
    if (nw > 1) st = ppl_windows_parallel(ctx, f, ds, stride, progress, nb, bstart, n_par, nw, out->by_doc);
    else if (n_par > 1) st = ppl_docs_parallel(ctx, f, ds, stride, progress, lo, hi, n_par, out->by_doc, ps);
    free(bstart);
    for (int d = lo; n_par <= 1 && st == NL_OK && d < hi; d++) {
        s.sum = (nl_nll_sum){0, 0};
        s.doc_index = d;
        st = nl_forward_doc(f, ctx, &ds->docs[d], stride, ppl_chunk, &s);
        if (st != NL_OK) break;
        out->by_doc[d] = s.sum;
    }
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK) st = nl_mpi_allgather_blocks(ctx, out->by_doc, sizeof *out->by_doc, ds->n_docs);
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        const nl_nll_sum x = out->by_doc[d];
        int li = nl_dataset_label_index(ds, ds->docs[d].label);
        out->by_label[li].nll += x.nll;
        out->by_label[li].n += x.n;
        out->total.nll += x.nll;
        out->total.n += x.n;
        if (progress && (d < lo || d >= hi)) nl_progress_add(progress, ds->docs[d].n_tokens); /* the other ranks' share */
    }
    free(s.targets);
    free(s.nll);
    if (st != NL_OK) nl_ppl_result_release(out);
    return st;
}
