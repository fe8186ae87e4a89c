/* recorder.c — dataset → forward pass → HDF5 activation file (contract in recorder.h).
 * Documents the writer already holds (a resumed file) are skipped, so a resumed run writes
 * exactly what the uninterrupted one would have (checked by tests/record_kill.sh).
 * Small models record documents in parallel (record_parallel below): each thread runs its own
 * forward state with its own observers, which capture a document's writer calls into a buffer;
 * the buffers are replayed to the writer in document order by one thread at a time, so the
 * writer sees the very calls of the serial loop (checked by tests/record_threads.sh). */
#include "neuronlab/recorder.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/mpi.h"
#include "neuronlab/walk.h"

/* One document's writer calls, captured by a worker thread of record_parallel and replayed in
 * document order: ops in call order, their rows in data (4-byte words: floats, or token ids). */
typedef enum { OP_TOKENS, OP_ACTS, OP_STREAM, OP_POOLED } rec_op_kind;
typedef struct {
    rec_op_kind kind;
    int layer, stream, n; /* n rows (tokens: ids) */
    size_t off;           /* first word in data */
} rec_op;
typedef struct {
    rec_op *ops;
    int n_ops, cap_ops;
    uint32_t *data;       /* (cap) words, reserved for the document's predicted size */
    size_t n, cap;
    size_t bytes;         /* predicted size, counted against the budget */
    int done;             /* the worker has finished the document (st tells how) */
    nl_status st;
    char msg[sizeof ((nl_ctx *)0)->msg];
} rec_capture;

typedef struct {
    nl_h5_writer *w;
    const nl_doc *doc;
    int start, new_from; /* doc index of the current batch's row 0; first new row */
    int pooled, F, L;
    float *pool;         /* (L, F) running sums of |a| over prompt tokens */
    nl_progress *progress;
    nl_record_rows_fn rows;
    void *rows_user;
    rec_capture *cap;    /* NULL: write through to w; else capture (record_parallel) */
} rec_state;

/* Appends an op of n rows of `width` words (copied from x) to s->cap. */
static nl_status capture(rec_state *s, nl_ctx *ctx, rec_op_kind kind, int layer, int stream, const void *x, int n, int width) {
    rec_capture *c = s->cap;
    const size_t words = (size_t)n * (size_t)width;
    if (c->n_ops == c->cap_ops) {
        int cap = c->cap_ops ? 2 * c->cap_ops : 64;
        rec_op *ops = realloc(c->ops, (size_t)cap * sizeof *ops);
        if (!ops) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        c->ops = ops, c->cap_ops = cap;
    }
    if (c->n + words > c->cap) { /* beyond the prediction (not expected): grow */
        size_t cap = 2 * (c->n + words);
        uint32_t *d = realloc(c->data, cap * sizeof *d);
        if (!d) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        c->data = d, c->cap = cap;
    }
    memcpy(c->data + c->n, x, words * sizeof *c->data);
    c->ops[c->n_ops++] = (rec_op){kind, layer, stream, n, c->n};
    c->n += words;
    return NL_OK;
}

static nl_status put_acts(rec_state *s, nl_ctx *ctx, int layer, const float *rows, int n) {
    if (!s->cap) return nl_h5_writer_append_acts(s->w, ctx, layer, rows, n);
    return nl_h5_writer_has_acts(s->w) ? capture(s, ctx, OP_ACTS, layer, 0, rows, n, s->F) : NL_OK;
}
static nl_status put_stream(rec_state *s, nl_ctx *ctx, nl_h5_stream k, int layer, const float *x, int n, int width) {
    if (!s->cap) return nl_h5_writer_append_stream(s->w, ctx, k, layer, x, n);
    return capture(s, ctx, OP_STREAM, layer, (int)k, x, n, width);
}
static nl_status put_tokens(rec_state *s, nl_ctx *ctx, const int32_t *ids, int n) {
    if (!s->cap) return nl_h5_writer_append_tokens(s->w, ctx, ids, n);
    return capture(s, ctx, OP_TOKENS, 0, 0, ids, n, 1);
}
static nl_status put_pooled(rec_state *s, nl_ctx *ctx, int layer, const float *mean_abs) {
    if (!s->cap) return nl_h5_writer_append_pooled(s->w, ctx, layer, mean_abs);
    return capture(s, ctx, OP_POOLED, layer, 0, mean_abs, 1, s->F);
}

static nl_status on_act(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    rec_state *s = user;
    if (!nl_h5_writer_has_layer(s->w, info->layer)) return NL_OK;
    int skip = s->new_from > s->start ? s->new_from - s->start : 0;
    if (skip >= info->T) return NL_OK;
    const int F = info->width;
    const float *rows = x + (size_t)skip * F;
    int n = info->T - skip;
    nl_status st = put_acts(s, ctx, info->layer, rows, n);
    if (st != NL_OK || !s->pooled) return st;
    float *acc = s->pool + (size_t)info->layer * F;
    int first = s->start + skip; /* doc index of rows[0] */
    for (int t = 0; t < n && first + t < s->doc->prompt_len; t++)
        for (int i = 0; i < F; i++) acc[i] += fabsf(rows[(size_t)t * F + i]);
    return NL_OK;
}

/* Observer of resid / attn_out / ffn_in: the same new rows as on_act, into the stream of the
 * hook point (user = the stream's slot in rec_stream). */
typedef struct {
    rec_state *s;
    nl_h5_stream stream;
} rec_stream;

static nl_status on_stream(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    const rec_stream *rs = user;
    rec_state *s = rs->s;
    if (!nl_h5_writer_has_layer(s->w, info->layer)) return NL_OK;
    int skip = s->new_from > s->start ? s->new_from - s->start : 0;
    if (skip >= info->T) return NL_OK;
    return put_stream(s, ctx, rs->stream, info->layer, x + (size_t)skip * info->width, info->T - skip, info->width);
}

/* Observer of ROUTING (hooks.h): the same new rows, into the routing datasets of a native MoE
 * layer or the moe_experts of a MoEfied layer. */
static nl_status on_routing(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    (void)x;
    rec_state *s = user;
    const nl_moe_routing *r = info->moe;
    int skip = s->new_from > s->start ? s->new_from - s->start : 0;
    if (!r || skip >= info->T) return NL_OK;
    const int n = info->T - skip;
    const size_t k = (size_t)r->k, sk = (size_t)skip;
    if (nl_h5_writer_is_moefied_layer(s->w, info->layer))
        return nl_h5_writer_append_moe_experts(s->w, ctx, info->layer, r->experts + sk * k, n);
    if (!nl_h5_writer_is_moe_layer(s->w, info->layer)) return NL_OK;
    return nl_h5_writer_append_routing(s->w, ctx, info->layer, r->experts + sk * k, r->weights + sk * k,
                                       r->logits + sk * (size_t)r->E, r->expert_act + sk * k * (size_t)r->d_expert,
                                       r->shared_act ? r->shared_act + sk * (size_t)r->d_shared : NULL,
                                       r->shared_gate ? r->shared_gate + sk : NULL, n);
}

/* Observer of ATTN_PROBS (hooks.h): the chunk's rows of the document's attention matrix. The
 * document is one window (checked before the run), so the rows are new and row 0 is token start. */
static nl_status on_attn(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    rec_state *s = user;
    if (!nl_h5_writer_has_attn(s->w, info->layer)) return NL_OK;
    return nl_h5_writer_append_attn(s->w, ctx, info->layer, s->doc->n_tokens, s->start, x, info->T, info->width);
}

static nl_status rec_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    rec_state *s = user;
    s->start = start;
    s->new_from = new_from;
    if (s->rows) s->rows(s->rows_user, new_from > start ? new_from - start : 0);
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    if (st != NL_OK) return st;
    int skip = new_from > start ? new_from - start : 0;
    if (skip < T) st = put_tokens(s, ctx, doc->tokens + start + skip, T - skip);
    if (s->progress && skip < T) {
#pragma omp critical(nl_rec_progress)
        nl_progress_add(s->progress, T - skip);
    }
    return st;
}

nl_status nl_record_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                        nl_progress *progress) {
    return nl_record_run_rows(ctx, f, ds, w, pooled, stride, progress, NULL, NULL);
}

/* The observers of one forward state: its rec_state and the hooks that feed it. */
typedef struct {
    rec_state s;
    rec_stream rs[NL_H5_N_STREAMS];
    nl_hook_id act_id, routing_id, attn_id, stream_id[NL_H5_N_STREAMS];
} rec_obs;

/* Registers o's observers on f's hooks (o must not move until obs_remove). */
static nl_status obs_add(nl_ctx *ctx, nl_forward *f, rec_obs *o, int any_moe, int any_attn) {
    static const nl_hook_point stream_point[NL_H5_N_STREAMS] = {NL_HOOK_RESID, NL_HOOK_ATTN_OUT, NL_HOOK_FFN_IN};
    nl_hooks *hooks = nl_forward_hooks(f);
    if (nl_hooks_add_id(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, on_act, &o->s, &o->act_id) != NL_OK) goto full;
    /* The routing of MoE / MoEfied layers, only when the writer records some (no cost otherwise). */
    if (any_moe && nl_hooks_add_id(hooks, NL_HOOK_ROUTING, -1, NL_HOOK_OBSERVE, on_routing, &o->s, &o->routing_id) != NL_OK)
        goto full;
    /* The streams the writer records, each from its hook point (hooks.h). */
    for (int k = 0; k < NL_H5_N_STREAMS; k++) {
        if (!((nl_h5_writer_streams(o->s.w) >> k) & 1u)) continue;
        o->rs[k] = (rec_stream){&o->s, (nl_h5_stream)k};
        if (nl_hooks_add_id(hooks, stream_point[k], -1, NL_HOOK_OBSERVE, on_stream, &o->rs[k], &o->stream_id[k]) != NL_OK)
            goto full;
    }
    if (any_attn && nl_hooks_add_id(hooks, NL_HOOK_ATTN_PROBS, -1, NL_HOOK_OBSERVE, on_attn, &o->s, &o->attn_id) != NL_OK)
        goto full;
    return NL_OK;
full:
    return nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
}

static void obs_remove(nl_forward *f, rec_obs *o) {
    nl_hooks *hooks = nl_forward_hooks(f); /* removing id 0 (never added) is a harmless no-op */
    nl_hooks_remove(hooks, o->act_id);
    nl_hooks_remove(hooks, o->routing_id);
    nl_hooks_remove(hooks, o->attn_id);
    for (int k = 0; k < NL_H5_N_STREAMS; k++) nl_hooks_remove(hooks, o->stream_id[k]);
}

/* Runs document doc through f (whose observers feed s), then its pooled rows. */
static nl_status record_doc(rec_state *s, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int stride) {
    s->doc = doc;
    memset(s->pool, 0, (size_t)s->L * s->F * sizeof(float));
    nl_status st = nl_forward_doc(f, ctx, doc, stride, rec_chunk, s);
    for (int l = 0; st == NL_OK && s->pooled && l < s->L; l++) {
        if (!nl_h5_writer_has_layer(s->w, l) || nl_h5_writer_is_moe_layer(s->w, l)) continue;
        float *acc = s->pool + (size_t)l * s->F;
        for (int i = 0; i < s->F; i++) acc[i] /= (float)doc->prompt_len;
        st = put_pooled(s, ctx, l, acc);
    }
    return st;
}

/* Writes a captured document: the serial loop's calls, in its order. */
static nl_status replay(nl_h5_writer *w, nl_ctx *ctx, const nl_doc *doc, const rec_capture *c) {
    nl_status st = nl_h5_writer_begin_doc(w, ctx, doc->label, doc->prompt_len);
    for (int i = 0; st == NL_OK && i < c->n_ops; i++) {
        const rec_op *op = &c->ops[i];
        const void *x = c->data + op->off;
        switch (op->kind) {
        case OP_TOKENS: st = nl_h5_writer_append_tokens(w, ctx, x, op->n); break;
        case OP_ACTS: st = nl_h5_writer_append_acts(w, ctx, op->layer, x, op->n); break;
        case OP_STREAM: st = nl_h5_writer_append_stream(w, ctx, (nl_h5_stream)op->stream, op->layer, x, op->n); break;
        case OP_POOLED: st = nl_h5_writer_append_pooled(w, ctx, op->layer, x); break;
        }
    }
    return st == NL_OK ? nl_h5_writer_end_doc(w, ctx) : st;
}

/* ---- documents in parallel ------------------------------------------------------------------
 *
 * Memory: the captures in flight (computing, or waiting for their turn to be written) are at
 * most 2 per thread and hold at most NL_REC_THREAD_BYTES per thread in all; a document whose
 * capture alone exceeds that
 * sends the whole run to the serial loop (decided from the document lengths before starting),
 * which streams rows as they come. Work is handed out in document order; a thread that ends a
 * document writes, in order, every captured document whose predecessors are written, unless
 * another thread is writing. A failing document (error or interrupt) stops the handing out:
 * the documents before it are written, it and those after are not, and the run returns its
 * status, as the serial loop would (every document ended stays in the file, none half). */
#define NL_REC_THREAD_BYTES ((size_t)64 << 20)

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next_doc;         /* next document to hand out */
    int next_write;       /* next document to write */
    int stop_at;          /* documents ≥ stop_at are not handed out (hi, or one past a failure) */
    int writing, failed;
    size_t inflight, budget; /* predicted bytes of the captures in flight, and their limit */
    int ring;             /* documents in flight at most (2 per thread): next_doc - next_write ≤ ring */
    rec_capture *caps;    /* (ring) document d in caps[d % ring] */
    const size_t *bytes;  /* (n_docs) predicted capture bytes */
    nl_status st;         /* the run's status once failed */
    char msg[sizeof ((nl_ctx *)0)->msg];
} rec_queue;

static void capture_release(rec_capture *c) {
    free(c->ops);
    free(c->data);
    c->ops = NULL, c->data = NULL;
}

/* One thread's share of record_parallel: f with observers o, until the queue is done. */
static void rec_worker(rec_queue *q, nl_ctx *proto, nl_forward *f, rec_obs *o, const nl_dataset *ds, int stride) {
    nl_ctx local = *proto;
    local.msg[0] = 0;
    pthread_mutex_lock(&q->mu);
    while (!q->failed && q->next_write < q->stop_at) {
        const int nw = q->next_write;
        rec_capture *c = &q->caps[nw % q->ring];
        if (!q->writing && c->done) { /* the next document to write is ready: write it */
            q->writing = 1;
            pthread_mutex_unlock(&q->mu);
            nl_status st = c->st;
            if (st == NL_OK) st = replay(o->s.w, &local, &ds->docs[nw], c);
            else memcpy(local.msg, c->msg, sizeof local.msg);
            capture_release(c);
            pthread_mutex_lock(&q->mu);
            q->writing = 0;
            q->inflight -= c->bytes;
            if (st != NL_OK) q->failed = 1, q->st = st, memcpy(q->msg, local.msg, sizeof q->msg);
            else q->next_write++, memset(c, 0, sizeof *c);
            pthread_cond_broadcast(&q->cv);
            continue;
        }
        const int d = q->next_doc;
        if (d < q->stop_at && d - nw < q->ring && (q->inflight == 0 || q->inflight + q->bytes[d] <= q->budget)) {
            c = &q->caps[d % q->ring]; /* take the next document */
            c->bytes = q->bytes[d];
            q->inflight += c->bytes;
            q->next_doc++;
            pthread_mutex_unlock(&q->mu);
            c->cap = c->bytes / sizeof *c->data;
            c->data = c->cap ? malloc(c->cap * sizeof *c->data) : NULL;
            o->s.cap = c;
            local.msg[0] = 0;
            c->st = c->cap && !c->data ? nl_errorf(&local, NL_ENOMEM, "out of memory")
                                       : record_doc(&o->s, &local, f, &ds->docs[d], stride);
            if (c->st != NL_OK) memcpy(c->msg, local.msg, sizeof c->msg);
            pthread_mutex_lock(&q->mu);
            c->done = 1;
            if (c->st != NL_OK && d + 1 < q->stop_at) q->stop_at = d + 1;
            pthread_cond_broadcast(&q->cv);
            continue;
        }
        pthread_cond_wait(&q->cv, &q->mu);
    }
    pthread_mutex_unlock(&q->mu);
}

/* Documents lo..ds->n_docs-1 by n forward states side by side (f and n-1 like it, each with
 * the observers obs[i] of o0's settings); bytes: (n_docs) predicted capture of each. */
static nl_status record_parallel(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int lo, int n, int stride,
                                 const rec_state *s0, const size_t *bytes) {
    nl_forward **fs = calloc((size_t)n, sizeof *fs);
    rec_obs *obs = calloc((size_t)n, sizeof *obs);
    rec_queue q = {.next_doc = lo, .next_write = lo, .stop_at = ds->n_docs, .budget = (size_t)n * NL_REC_THREAD_BYTES,
                   .ring = 2 * n, .caps = calloc(2 * (size_t)n, sizeof(rec_capture)), .bytes = bytes};
    nl_status st = fs && obs && q.caps ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int i = 0; st == NL_OK && i < n; i++) {
        if (i > 0 && (st = nl_forward_create_like(ctx, f, &fs[i])) != NL_OK) break;
        if (i == 0) fs[0] = f;
        obs[i].s = *s0;
        obs[i].s.pool = calloc((size_t)s0->L * s0->F, sizeof(float));
        if (!obs[i].s.pool) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else st = obs_add(ctx, fs[i], &obs[i], 0, 0);
    }
    if (st == NL_OK) {
        pthread_mutex_init(&q.mu, NULL);
        pthread_cond_init(&q.cv, NULL);
#pragma omp parallel num_threads(n)
        rec_worker(&q, ctx, fs[omp_get_thread_num()], &obs[omp_get_thread_num()], ds, stride);
        pthread_mutex_destroy(&q.mu);
        pthread_cond_destroy(&q.cv);
        if (q.failed) st = q.st, memcpy(ctx->msg, q.msg, sizeof ctx->msg);
    }
    for (int i = 0; q.caps && i < q.ring; i++) capture_release(&q.caps[i]); /* those not written */
    for (int i = 0; fs && obs && i < n; i++) {
        if (fs[i]) obs_remove(fs[i], &obs[i]);
        free(obs[i].s.pool);
        if (i > 0) nl_forward_destroy(fs[i]);
    }
    free(q.caps);
    free(fs);
    free(obs);
    return st;
}

/* Threads for recording documents lo.. side by side: nl_forward_doc_threads(f) (called before
 * the recorder's own observers are on f) when nothing needs the serial loop — a rows callback
 * (its observers share state), routing or attention datasets, MPI ranks (the shared writer) —
 * and every document's capture fits NL_REC_THREAD_BYTES (bytes: (n_docs), filled); else 1. */
static int record_threads(const nl_forward *f, const nl_dataset *ds, int lo, const nl_h5_writer *w, int pooled,
                          int any_moe, int any_attn, int rows_cb, size_t *bytes) {
    if (rows_cb || any_moe || any_attn || nl_mpi_size() > 1 || ds->n_docs - lo < 2) return 1;
    const nl_config *c = nl_model_config(nl_forward_model(f));
    size_t acts = 0, streams = 0; /* words per token */
    for (int l = 0; l < c->n_layers; l++) {
        if (!nl_h5_writer_has_layer(w, l)) continue;
        if (nl_h5_writer_has_acts(w)) acts += (size_t)c->d_ff;
        for (int k = 0; k < NL_H5_N_STREAMS; k++) streams += ((nl_h5_writer_streams(w) >> k) & 1u) * (size_t)c->d_model;
    }
    size_t pool = 0; /* words of a document's pooled rows */
    for (int l = 0; pooled && l < c->n_layers; l++) pool += nl_h5_writer_has_layer(w, l) ? (size_t)c->d_ff : 0;
    for (int d = lo; d < ds->n_docs; d++) {
        bytes[d] = ((size_t)ds->docs[d].n_tokens * (1 + acts + streams) + pool) * sizeof(uint32_t);
        if (bytes[d] > NL_REC_THREAD_BYTES) return 1;
    }
    return nl_forward_doc_threads(f);
}

nl_status nl_record_run_rows(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                             nl_progress *progress, nl_record_rows_fn rows, void *rows_user) {
    nl_model *m = nl_forward_model(f);
    const nl_config *c = nl_model_config(m);
    const int F = c->d_ff, L = c->n_layers;
    float *norms = malloc((size_t)F * sizeof(float));
    size_t *bytes = malloc(((size_t)ds->n_docs + 1) * sizeof *bytes);
    rec_obs o = {.s = {w, NULL, 0, 0, pooled, F, L, calloc((size_t)L * F, sizeof(float)), progress, rows, rows_user, NULL}};
    nl_status st = NL_OK;
    if (!norms || !bytes || !o.s.pool) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int l = 0; st == NL_OK && l < L; l++) {
        if (!nl_h5_writer_has_layer(w, l) || nl_h5_writer_is_moe_layer(w, l)) continue;
        if ((st = nl_model_w_out_norm(ctx, m, l, norms)) == NL_OK) st = nl_h5_writer_put_w_out_norm(w, ctx, l, norms);
    }
    int any_moe = 0, any_attn = 0;
    for (int l = 0; l < L; l++) {
        any_moe |= nl_h5_writer_is_moe_layer(w, l) || nl_h5_writer_is_moefied_layer(w, l);
        any_attn |= nl_h5_writer_has_attn(w, l);
    }
    /* Attention probabilities (record --attn): each document must be one context window. */
    for (int d = 0; st == NL_OK && any_attn && d < ds->n_docs; d++)
        if (ds->docs[d].n_tokens > nl_forward_max_P(f))
            st = nl_errorf(ctx, NL_EINVAL, "'%s': document %d (line %d) has %d tokens, more than the context %d: --attn stores whole "
                           "documents of one window (raise --ctx or shorten the document)", ds->path, d + 1, ds->docs[d].line,
                           ds->docs[d].n_tokens, nl_forward_max_P(f));
    int64_t done = nl_h5_writer_docs(w); /* > 0 when resuming a cut-short file */
    if (st == NL_OK && done > ds->n_docs)
        st = nl_errorf(ctx, NL_EINVAL, "the activation file holds %lld documents but the dataset has only %d", (long long)done,
                       ds->n_docs);
    const int n_par = st == NL_OK ? record_threads(f, ds, (int)done, w, pooled, any_moe, any_attn, rows != NULL, bytes) : 1;
    if (st == NL_OK && n_par > 1) st = record_parallel(ctx, f, ds, (int)done, n_par, stride, &o.s, bytes);
    else if (st == NL_OK) st = obs_add(ctx, f, &o, any_moe, any_attn);
    for (int d = (int)done; n_par <= 1 && st == NL_OK && d < ds->n_docs; d++) {
        const nl_doc *doc = &ds->docs[d];
        if ((st = nl_h5_writer_begin_doc(w, ctx, doc->label, doc->prompt_len)) != NL_OK) break;
        if ((st = record_doc(&o.s, ctx, f, doc, stride)) != NL_OK) break;
        st = nl_h5_writer_end_doc(w, ctx);
    }
    if (n_par <= 1) obs_remove(f, &o); /* remove our observers */
    free(norms);
    free(bytes);
    free(o.s.pool);
    return st;
}
