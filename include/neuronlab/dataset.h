/* dataset.h — JSONL datasets: one document per line, tokenised into memory.
 *
 * Rows: {"tokens": [1, 403, …]} used verbatim (no BOS added; optional "prompt_len");
 * {"text": "…"}; {"prompt": "…", "response": "…"}. Any row may carry "label" (the
 * ability, default ""). Text rows need a tokenizer: the text (for prompt/response rows the
 * string prompt + response, tokenized as one text as the model reads it) is encoded without
 * special tokens and wrapped in the tokenizer's template (BOS … EOS, as add_special gives).
 * prompt_len = template-pre + the leading ids the prompt alone also encodes to (a token
 * spanning the boundary counts as response); score_from = prompt_len, so perplexity counts
 * the response only. A text that gives no tokens is an error. Blank lines are skipped.
 * A label is at most NL_LABEL_MAX bytes of UTF-8 (JSON's \u0000 is refused; it is repeated in every result
 * row of its ability). A key other than tokens, text, prompt, response, label and prompt_len
 * is ignored, and the dataset keeps a warning naming the first one (with the known key it
 * was probably meant to be) for the command to print.
 * A bad line is an error naming the file and the line number. The token ids of a dataset are small next to its activations,
 * so they are held in memory; activations never are.
 * Checked by tests/test_dataset.c.
 */
#ifndef NEURONLAB_DATASET_H
#define NEURONLAB_DATASET_H

#include "neuronlab/common.h"

typedef struct nl_tokenizer nl_tokenizer; /* tokenizer.h (text rows) */

#define NL_LABEL_MAX 256 /* bytes of a document label */

typedef struct {
    int32_t *tokens;  /* (n_tokens) owned by the dataset */
    int n_tokens;
    int prompt_len;   /* tokens pooled as the prompt: the prompt of a prompt/response row, else all */
    int score_from;   /* first token index whose prediction counts in perplexity (≥ 1) */
    char *label;      /* owned, "" when none */
    int line;         /* 1-based line in the file */
} nl_doc;

typedef struct {
    nl_doc *docs;     /* (Dc) owned */
    int n_docs;
    int64_t n_tokens; /* N: sum of n_tokens */
    char path[4096];
    char **labels;    /* distinct labels in first-seen order, owned */
    int n_labels;
    int n_text;       /* documents tokenized from "text"/"prompt" rows (0: ids given) */
    int n_unknown;    /* rows with keys that are not part of the format (ignored) */
    char warning[512]; /* "" or one line about the unknown keys, for the command to print */
} nl_dataset;

/* Loads path. vocab_size > 0 checks every id; tok may be NULL (then text rows are an error).
 * On success *out is owned by the caller: nl_dataset_destroy. */
nl_status nl_dataset_load(nl_ctx *ctx, const char *path, const nl_tokenizer *tok, int vocab_size, nl_dataset **out);
void nl_dataset_destroy(nl_dataset *d); /* NULL is a no-op */

/* One row alone, exactly as nl_dataset_load reads it (every row kind, the same checks, the same
 * tokens, prompt_len and score_from; errors name path and line): json is one NUL-terminated
 * line. On success doc->tokens and doc->label are owned by the caller: nl_doc_release (also a
 * no-op after an error). `neuronlab tokenize` turns prompt/response rows into token rows
 * with it, so a tokenized file reads back as the same documents. */
nl_status nl_dataset_parse_row(nl_ctx *ctx, const char *path, int line, const char *json, const nl_tokenizer *tok, int vocab_size,
                               nl_doc *doc);
void nl_doc_release(nl_doc *doc);

/* Index of label in d->labels, or -1. */
int nl_dataset_label_index(const nl_dataset *d, const char *label);

#endif
