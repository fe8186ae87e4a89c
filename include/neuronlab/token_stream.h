/* token_stream.h — a training or validation split as one token stream, cut into windows.
 *
 * Stream: the documents of a JSONL file (nl_dataset_load) concatenated in file order.
 *   text and prompt/response rows: the ids the dataset gives (encoded and wrapped in the tokenizer's
 *     post-processor template), then made into BOS + ids + EOS: BOS is prepended when the template
 *     adds nothing before the text and the tokenizer has a BOS different from its EOS; EOS is appended
 *     when the template adds nothing after the text and the tokenizer has an EOS. (GPT-2 style, where
 *     BOS = EOS = <|endoftext|>: one <|endoftext|> after every document.)
 *   {"tokens"} rows: the ids verbatim, nothing added (as everywhere in neuronlab).
 *   A file mixing the two kinds is refused.
 * Training windows: a window is S+1 consecutive tokens (inputs w[0..S), targets w[1..S]).
 *   The stream holds n = ⌊(N−1)/S⌋ windows starting at o_e + k·S (k < n), where the offset
 *   o_e ∈ [0, N−1−n·S] is drawn per epoch e; each epoch visits its n windows in a seeded random order.
 *   Step s (1-based) of batch B takes the windows j = (s−1)·B … s·B−1 of the endless sequence of
 *   epochs (epoch e = j / n, position j mod n). Offsets and orders come from nl_rng_derive(seed, 3, e)
 *   and nl_rng_derive(seed, 2, e), so the batch of step s depends only on (data, S, B, seed, s):
 *   resuming at step k reproduces the batches of an uninterrupted run.
 * Evaluation windows: window k has inputs tokens [k·S, k·S + S) and targets [k·S + 1, k·S + S] (the
 *   last one may be shorter), so the ⌈(N−1)/S⌉ windows score every prediction of the stream exactly
 *   once, each window from an empty context: what `neuronlab ppl MODEL DATA --ctx S --stride S`
 *   computes when DATA holds the stream as one {"tokens"} document.
 * Checked by tests/test_train_data.c.
 */
#ifndef NEURONLAB_TOKEN_STREAM_H
#define NEURONLAB_TOKEN_STREAM_H

#include "neuronlab/common.h"

typedef struct nl_tokenizer nl_tokenizer;

typedef struct {
    int32_t *tok;         /* (N) owned */
    int64_t n;            /* N */
    int n_docs;
    int n_text;           /* documents from text rows */
    uint64_t hash;        /* FNV-1a of the ids (detects a changed file when resuming) */
    char path[4096];
    int64_t *perm;        /* cache: order of the windows of epoch perm_epoch (owned) */
    int64_t perm_n, perm_epoch, perm_off;
} nl_token_stream;

/* Loads path with nl_dataset_load (tok may be NULL when every row is {"tokens"}; vocab_size > 0
 * checks every id) and builds the stream. *s is caller-owned: nl_token_stream_release. */
nl_status nl_token_stream_load(nl_ctx *ctx, const char *path, const nl_tokenizer *tok, int vocab_size,
                               nl_token_stream *s);
/* Builds a stream from ids already in memory (copied). */
nl_status nl_token_stream_from_ids(nl_ctx *ctx, const int32_t *ids, int64_t n, nl_token_stream *s);
void nl_token_stream_release(nl_token_stream *s);

/* Training windows of S+1 tokens per epoch: ⌊(N−1)/S⌋ (0 when the stream is too short). */
int64_t nl_token_stream_n_windows(const nl_token_stream *s, int S);
/* out (B, S+1) = the windows of step (1-based) as described above. Needs n_windows ≥ 1. */
nl_status nl_token_stream_batch(nl_ctx *ctx, nl_token_stream *s, int S, uint64_t seed, int64_t step, int B,
                                int32_t *out);

/* Evaluation windows: ⌈(N−1)/S⌉. */
int64_t nl_token_stream_n_eval_windows(const nl_token_stream *s, int S);
/* Window k: inputs (S) and targets (S); past the end of the stream inputs are 0 and targets −1. */
void nl_token_stream_eval_window(const nl_token_stream *s, int S, int64_t k, int32_t *inputs, int32_t *targets);

#endif
