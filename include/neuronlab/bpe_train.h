/* bpe_train.h — trains a byte-level BPE tokenizer on text and writes it as a Hugging Face
 * tokenizer.json (the format nl_tokenizer_open, Hugging Face tokenizers and transformers.js read).
 * The command is `neuronlab tokenizer-train CORPUS.jsonl... --vocab N -o tokenizer.json`.
 *
 * Written file (fixed layout, V = the vocabulary size):
 *   id 0 = "<|bos|>", id 1 = "<|eos|>"   added_tokens, special: true (also in model.vocab, so
 *                                         every loader gives them these ids)
 *   ids 2 … 257  the 256 bytes, in byte order, as GPT-2's byte-to-unicode characters
 *   ids 258 … V-1 the merged tokens, in merge order (merge k makes id 258 + k)
 *   model          BPE, "merges" as "a b" strings in rank order, ignore_merges false,
 *                  byte_fallback false, unk_token null, dropout null
 *   normalizer     null
 *   pre_tokenizer  Sequence[Split(the Llama 3 / GPT-4 pattern, Isolated, invert false),
 *                  ByteLevel(add_prefix_space false, trim_offsets true, use_regex false)], as in
 *                  Llama 3's own tokenizer.json
 *   post_processor TemplateProcessing: single = <|bos|> $A, pair = <|bos|> $A <|bos|> $B
 *   decoder        ByteLevel
 *   "version": "1.0", truncation and padding null; no other keys.
 * So encoding adds <|bos|> first (add_special), nl_tokenizer_bos = 0, nl_tokenizer_eos = 1, and
 * decode(encode(t)) == t for any valid UTF-8 t.
 *
 * Training: each text is pre-tokenized with the same Split the written file declares (run by the
 * tokenizer module's own PCRE2 pre-tokenizer code), invalid UTF-8 first repaired as the encoder
 * repairs it; the distinct pre-tokens ("words") are counted; then, starting from bytes, the most
 * frequent adjacent pair of tokens (counted over all word occurrences) is merged everywhere, left
 * to right, until the vocabulary has V ids.
 *   Ties: among pairs of equal frequency the smallest (left id, right id) wins (left id first),
 *         so the result does not depend on the order of the texts or on the thread count.
 *   A pair whose concatenation is already a token (made by another pair, or a special token's
 *         text) is never merged: it would add no id, and a second path to one token is the one
 *         thing that could make a rank-order encoder segment a word differently from the trainer.
 *         (With this pre-tokenizer neither seems to happen in practice; the check guarantees it.)
 *         So every merge adds one id.
 *   min_frequency: a pair seen fewer times is never merged.
 * Exactness: encoding a training text with nl_tokenizer_encode on the written file gives, word by
 * word, exactly the tokens the merge loop left in that word (nl_bpe_trainer_segment).
 * Fast path: pair counts are updated incrementally, only in the words that hold the merged pair
 * (an index pair -> words), with a max-heap of pairs and lazy invalidation; reading runs on
 * ctx->n_threads threads (0 = all cores).
 *
 * Errors (NL_* status and a one-line message naming the file): unreadable corpus, a bad JSONL line
 * (file and line), a {"tokens"} row (no text), no text at all, V < 258, V not reachable (the pairs
 * ran out or every remaining pair is rarer than min_frequency: "vocabulary N is larger than the
 * corpus allows (M reachable …)" unless allow_smaller), an output that cannot be written (the file
 * is written to a temporary file beside it and renamed, so a failed or interrupted run never
 * leaves a partial tokenizer.json). Ctrl-C (nl_interrupted) stops with NL_EINTR.
 * Checked by tests/test_bpe_train.c (hand-computed merges, a plain slow trainer, encoder
 * agreement, round trips, errors) and tests/bpe_train_conformance.sh (transformers.js gives the
 * same ids on a trained file).
 */
#ifndef NEURONLAB_BPE_TRAIN_H
#define NEURONLAB_BPE_TRAIN_H

#include "neuronlab/common.h"

#define NL_BPE_N_SPECIAL 2     /* <|bos|>, <|eos|> */
#define NL_BPE_FIRST_MERGE 258 /* id of the first merged token */
#define NL_BPE_MAX_VOCAB (1 << 24)

/* The Split pattern of the pre-tokenizer (Llama 3's, written into the file as is). */
extern const char nl_bpe_split_pattern[];

typedef struct nl_bpe_trainer nl_bpe_trainer;

typedef struct {
    int vocab_size;        /* V, total ids (specials and bytes included): 258 … NL_BPE_MAX_VOCAB */
    int64_t min_frequency; /* pairs seen fewer times are never merged; ≤ 1 = any pair */
    int allow_smaller;     /* 1: when V is not reachable, stop with the smaller vocabulary (NL_OK) */
} nl_bpe_train_opts;

enum { NL_BPE_STOP_VOCAB = 0, NL_BPE_STOP_MIN_FREQUENCY = 1, NL_BPE_STOP_NO_PAIRS = 2 };

typedef struct {
    int64_t n_texts, n_bytes; /* texts added, their bytes (after UTF-8 repair) */
    int64_t n_pretokens;      /* pre-tokens seen (word occurrences) */
    int64_t n_words;          /* distinct pre-tokens */
    int n_merges, vocab_size; /* after training: merges made, ids in the vocabulary */
    int64_t last_count;       /* frequency of the last merged pair (0 when none) */
    int n_skipped;            /* pairs passed over because their concatenation was already a token */
    int stop;                 /* NL_BPE_STOP_*: why training stopped */
    double sec_read, sec_train; /* wall-clock seconds: reading and pre-tokenizing; merging */
} nl_bpe_train_stats;

/* Creates an empty trainer; *out owned by the caller (nl_bpe_trainer_destroy). */
nl_status nl_bpe_trainer_create(nl_ctx *ctx, nl_bpe_trainer **out);
void nl_bpe_trainer_destroy(nl_bpe_trainer *t); /* NULL is a no-op */

/* Adds one text (len bytes, NUL bytes allowed; borrowed). Only before nl_bpe_trainer_train. */
nl_status nl_bpe_trainer_add_text(nl_ctx *ctx, nl_bpe_trainer *t, const char *text, size_t len);

/* Adds every row of a JSONL file: {"text": …} or {"prompt": …, "response": …} (the text is
 * prompt + response); "label" and other keys are ignored; blank lines are skipped; invalid UTF-8
 * in a line is repaired before parsing. A {"tokens": …} row, a row without text, a line that is
 * not a JSON object: NL_EFORMAT "'path' line N: …". Rows are read on ctx->n_threads threads. */
nl_status nl_bpe_trainer_add_jsonl(nl_ctx *ctx, nl_bpe_trainer *t, const char *path);

/* Learns the merges (once per trainer). Errors: no text (NL_EINVAL), V out of range
 * (NL_EINVAL), V not reachable without opts->allow_smaller (NL_EINVAL; the trainer keeps the
 * smaller result), interrupted (NL_EINTR). Draws progress on stderr when ctx->progress. */
nl_status nl_bpe_trainer_train(nl_ctx *ctx, nl_bpe_trainer *t, const nl_bpe_train_opts *opts);

/* Writes the trained tokenizer.json to path atomically (temporary file + rename). */
nl_status nl_bpe_trainer_save(nl_ctx *ctx, const nl_bpe_trainer *t, const char *path);

const nl_bpe_train_stats *nl_bpe_trainer_stats(const nl_bpe_trainer *t);

/* After training: the vocabulary (ids 0 … vocab_size-1) as raw bytes (borrowed; NULL outside),
 * and merge k (0 … n_merges-1) as the ids of its left and right parts (it makes id 258 + k). */
int nl_bpe_trainer_vocab_size(const nl_bpe_trainer *t);
const char *nl_bpe_trainer_token(const nl_bpe_trainer *t, int id, size_t *len);
int nl_bpe_trainer_n_merges(const nl_bpe_trainer *t);
void nl_bpe_trainer_merge(const nl_bpe_trainer *t, int k, int32_t *left, int32_t *right);

/* After training: the trainer's own segmentation of text, pre-tokenized as in training (no
 * special tokens added). A training word gets the tokens the merge loop left in it; any other
 * word gets the merges applied in rank order by a plain loop. *ids malloc'd (caller frees). */
nl_status nl_bpe_trainer_segment(nl_ctx *ctx, const nl_bpe_trainer *t, const char *text, size_t len, int32_t **ids,
                                 int *n);

#endif
