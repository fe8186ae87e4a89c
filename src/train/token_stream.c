/* token_stream.c — splits as token streams, seeded training windows, evaluation windows
 * (see token_stream.h). Checked by tests/test_train_data.c. */
#include "neuronlab/token_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/dataset.h"
#include "neuronlab/rng.h"
#include "neuronlab/tokenizer.h"

static void init_stream(nl_token_stream *s) {
    memset(s, 0, sizeof *s);
    s->perm_epoch = -1;
}

nl_status nl_token_stream_load(nl_ctx *ctx, const char *path, const nl_tokenizer *tok, int vocab_size,
                               nl_token_stream *s) {
    init_stream(s);
    snprintf(s->path, sizeof s->path, "%s", path);
    nl_dataset *ds;
    nl_status st = nl_dataset_load(ctx, path, tok, vocab_size, &ds);
    if (st != NL_OK) return st;
    if (ds->n_text && ds->n_text != ds->n_docs) {
        nl_dataset_destroy(ds);
        return nl_errorf(ctx, NL_EFORMAT, "'%s': mixes {\"tokens\"} rows with text rows; use one kind per file", path);
    }
    int bos = -1, eos = -1, n_pre = 0, n_post = 0;
    if (ds->n_text && tok) {
        const int32_t *pre, *post;
        nl_tokenizer_template(tok, &pre, &n_pre, &post, &n_post);
        bos = nl_tokenizer_bos(tok);
        eos = nl_tokenizer_eos(tok);
        if (n_pre > 0 || bos == eos) bos = -1;
        if (n_post > 0) eos = -1;
        if (vocab_size > 0 && ((bos >= vocab_size) || (eos >= vocab_size))) {
            nl_dataset_destroy(ds);
            return nl_errorf(ctx, NL_EINVAL, "'%s': the tokenizer's BOS/EOS id (%d/%d) is outside the vocabulary (size %d)",
                             path, bos, eos, vocab_size);
        }
    }
    int64_t n = 0;
    for (int d = 0; d < ds->n_docs; d++) n += ds->docs[d].n_tokens + (bos >= 0) + (eos >= 0);
    s->tok = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!s->tok) {
        nl_dataset_destroy(ds);
        return nl_errorf(ctx, NL_ENOMEM, "'%s': out of memory for %lld tokens", path, (long long)n);
    }
    int64_t k = 0;
    for (int d = 0; d < ds->n_docs; d++) {
        if (bos >= 0) s->tok[k++] = bos;
        memcpy(s->tok + k, ds->docs[d].tokens, (size_t)ds->docs[d].n_tokens * sizeof(int32_t));
        k += ds->docs[d].n_tokens;
        if (eos >= 0) s->tok[k++] = eos;
    }
    s->n = n;
    s->n_docs = ds->n_docs;
    s->n_text = ds->n_text;
    s->hash = nl_fnv1a(NL_FNV_INIT, s->tok, (size_t)n * sizeof(int32_t));
    nl_dataset_destroy(ds);
    return NL_OK;
}

nl_status nl_token_stream_from_ids(nl_ctx *ctx, const int32_t *ids, int64_t n, nl_token_stream *s) {
    init_stream(s);
    snprintf(s->path, sizeof s->path, "(memory)");
    s->tok = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!s->tok) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    memcpy(s->tok, ids, (size_t)n * sizeof(int32_t));
    s->n = n;
    s->n_docs = 1;
    s->hash = nl_fnv1a(NL_FNV_INIT, s->tok, (size_t)n * sizeof(int32_t));
    return NL_OK;
}

void nl_token_stream_release(nl_token_stream *s) {
    if (!s) return;
    free(s->tok);
    free(s->perm);
    init_stream(s);
}

int64_t nl_token_stream_n_windows(const nl_token_stream *s, int S) { return s->n > S ? (s->n - 1) / S : 0; }

nl_status nl_token_stream_batch(nl_ctx *ctx, nl_token_stream *s, int S, uint64_t seed, int64_t step, int B,
                                int32_t *out) {
    const int64_t nw = nl_token_stream_n_windows(s, S);
    NL_ASSERT(nw >= 1 && step >= 1);
    if (s->perm_n != nw) {
        free(s->perm);
        s->perm = malloc((size_t)nw * sizeof(int64_t));
        if (!s->perm) return nl_errorf(ctx, NL_ENOMEM, "out of memory for %lld windows", (long long)nw);
        s->perm_n = nw;
        s->perm_epoch = -1;
    }
    const int64_t slack = (s->n - 1) - nw * S;
    for (int b = 0; b < B; b++) {
        const int64_t j = (step - 1) * (int64_t)B + b, e = j / nw, p = j % nw;
        if (e != s->perm_epoch) {
            nl_rng r;
            nl_rng_derive(&r, seed, 2, (uint64_t)e);
            nl_rng_permutation(&r, s->perm, nw);
            nl_rng_derive(&r, seed, 3, (uint64_t)e);
            s->perm_off = (int64_t)nl_rng_below(&r, (uint64_t)slack + 1);
            s->perm_epoch = e;
        }
        const int64_t start = s->perm_off + s->perm[p] * S;
        NL_ASSERT(start + S < s->n);
        memcpy(out + (size_t)b * (S + 1), s->tok + start, (size_t)(S + 1) * sizeof(int32_t));
    }
    return NL_OK;
}

int64_t nl_token_stream_n_eval_windows(const nl_token_stream *s, int S) { return s->n > 1 ? (s->n - 1 + S - 1) / S : 0; }

void nl_token_stream_eval_window(const nl_token_stream *s, int S, int64_t k, int32_t *inputs, int32_t *targets) {
    const int64_t start = k * S;
    for (int i = 0; i < S; i++) {
        const int64_t a = start + i, b = a + 1;
        inputs[i] = a < s->n ? s->tok[a] : 0;
        targets[i] = b < s->n ? s->tok[b] : -1;
    }
}
