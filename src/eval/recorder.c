/* recorder.c — dataset → forward pass → HDF5 activation file (contract in recorder.h).
 * Documents the writer already holds (a resumed file) are skipped, so a resumed run writes
 * exactly what the uninterrupted one would have (checked by tests/record_kill.sh). */
#include "neuronlab/recorder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/walk.h"

typedef struct {
    nl_h5_writer *w;
    const nl_doc *doc;
    int start, new_from; /* doc index of the current batch's row 0; first new row */
    int pooled, F, L;
    float *pool;         /* (L, F) running sums of |a| over prompt tokens */
    nl_progress *progress;
    nl_record_rows_fn rows;
    void *rows_user;
} rec_state;

static nl_status on_act(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    rec_state *s = user;
    if (!nl_h5_writer_has_layer(s->w, info->layer)) return NL_OK;
    int skip = s->new_from > s->start ? s->new_from - s->start : 0;
    if (skip >= info->T) return NL_OK;
    const int F = info->width;
    const float *rows = x + (size_t)skip * F;
    int n = info->T - skip;
    nl_status st = nl_h5_writer_append_acts(s->w, ctx, info->layer, rows, n);
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
    return nl_h5_writer_append_stream(s->w, ctx, rs->stream, info->layer, x + (size_t)skip * info->width, info->T - skip);
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
    if (skip < T) st = nl_h5_writer_append_tokens(s->w, ctx, doc->tokens + start + skip, T - skip);
    if (s->progress && skip < T) nl_progress_add(s->progress, T - skip);
    return st;
}

nl_status nl_record_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                        nl_progress *progress) {
    return nl_record_run_rows(ctx, f, ds, w, pooled, stride, progress, NULL, NULL);
}

nl_status nl_record_run_rows(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                             nl_progress *progress, nl_record_rows_fn rows, void *rows_user) {
    nl_model *m = nl_forward_model(f);
    const nl_config *c = nl_model_config(m);
    const int F = c->d_ff, L = c->n_layers;
    float *norms = malloc((size_t)F * sizeof(float));
    rec_state s = {w, NULL, 0, 0, pooled, F, L, calloc((size_t)L * F, sizeof(float)), progress, rows, rows_user};
    nl_status st = NL_OK;
    if (!norms || !s.pool) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int l = 0; st == NL_OK && l < L; l++) {
        if (!nl_h5_writer_has_layer(w, l) || nl_h5_writer_is_moe_layer(w, l)) continue;
        if ((st = nl_model_w_out_norm(ctx, m, l, norms)) == NL_OK) st = nl_h5_writer_put_w_out_norm(w, ctx, l, norms);
    }
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_hook_id hook_id = 0;
    if (st == NL_OK && nl_hooks_add_id(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_OBSERVE, on_act, &s, &hook_id) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    /* The routing of MoE / MoEfied layers, only when the writer records some (no cost otherwise). */
    nl_hook_id routing_id = 0;
    int any_moe = 0;
    for (int l = 0; l < L; l++) any_moe |= nl_h5_writer_is_moe_layer(w, l) || nl_h5_writer_is_moefied_layer(w, l);
    if (st == NL_OK && any_moe && nl_hooks_add_id(hooks, NL_HOOK_ROUTING, -1, NL_HOOK_OBSERVE, on_routing, &s, &routing_id) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    /* The streams the writer records, each from its hook point (hooks.h). */
    static const nl_hook_point stream_point[NL_H5_N_STREAMS] = {NL_HOOK_RESID, NL_HOOK_ATTN_OUT, NL_HOOK_FFN_IN};
    rec_stream rs[NL_H5_N_STREAMS];
    nl_hook_id stream_id[NL_H5_N_STREAMS] = {0};
    for (int k = 0; st == NL_OK && k < NL_H5_N_STREAMS; k++) {
        if (!((nl_h5_writer_streams(w) >> k) & 1u)) continue;
        rs[k] = (rec_stream){&s, (nl_h5_stream)k};
        if (nl_hooks_add_id(hooks, stream_point[k], -1, NL_HOOK_OBSERVE, on_stream, &rs[k], &stream_id[k]) != NL_OK)
            st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    }
    /* Attention probabilities (record --attn): each document must be one context window. */
    nl_hook_id attn_id = 0;
    int any_attn = 0;
    for (int l = 0; l < L; l++) any_attn |= nl_h5_writer_has_attn(w, l);
    for (int d = 0; st == NL_OK && any_attn && d < ds->n_docs; d++)
        if (ds->docs[d].n_tokens > nl_forward_max_P(f))
            st = nl_errorf(ctx, NL_EINVAL, "'%s': document %d (line %d) has %d tokens, more than the context %d: --attn stores whole "
                           "documents of one window (raise --ctx or shorten the document)", ds->path, d + 1, ds->docs[d].line,
                           ds->docs[d].n_tokens, nl_forward_max_P(f));
    if (st == NL_OK && any_attn && nl_hooks_add_id(hooks, NL_HOOK_ATTN_PROBS, -1, NL_HOOK_OBSERVE, on_attn, &s, &attn_id) != NL_OK)
        st = nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
    int64_t done = nl_h5_writer_docs(w); /* > 0 when resuming a cut-short file */
    if (st == NL_OK && done > ds->n_docs)
        st = nl_errorf(ctx, NL_EINVAL, "the activation file holds %lld documents but the dataset has only %d", (long long)done,
                       ds->n_docs);
    for (int d = (int)done; st == NL_OK && d < ds->n_docs; d++) {
        const nl_doc *doc = &ds->docs[d];
        s.doc = doc;
        memset(s.pool, 0, (size_t)L * F * sizeof(float));
        if ((st = nl_h5_writer_begin_doc(w, ctx, doc->label, doc->prompt_len)) != NL_OK) break;
        if ((st = nl_forward_doc(f, ctx, doc, stride, rec_chunk, &s)) != NL_OK) break;
        if (s.pooled) {
            for (int l = 0; st == NL_OK && l < L; l++) {
                if (!nl_h5_writer_has_layer(w, l) || nl_h5_writer_is_moe_layer(w, l)) continue;
                float *acc = s.pool + (size_t)l * F;
                for (int i = 0; i < F; i++) acc[i] /= (float)doc->prompt_len;
                st = nl_h5_writer_append_pooled(w, ctx, l, acc);
            }
        }
        if (st == NL_OK) st = nl_h5_writer_end_doc(w, ctx);
    }
    nl_hooks_remove(hooks, hook_id); /* remove our observers (removing id 0 is a harmless no-op) */
    nl_hooks_remove(hooks, routing_id);
    nl_hooks_remove(hooks, attn_id);
    for (int k = 0; k < NL_H5_N_STREAMS; k++) nl_hooks_remove(hooks, stream_id[k]);
    free(norms);
    free(s.pool);
    return st;
}
