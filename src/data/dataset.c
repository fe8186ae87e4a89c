/* dataset.c — JSONL dataset loader (see dataset.h). Parses each line with jansson; one row alone
 * through nl_dataset_parse_row (what `neuronlab tokenize` uses for prompt/response rows).
 * Checked by tests/test_dataset.c and tests/text_data.sh. */
#include "neuronlab/dataset.h"
#include "neuronlab/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nl_dataset_destroy(nl_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_docs; i++) {
        free(d->docs[i].tokens);
        free(d->docs[i].label);
    }
    for (int i = 0; i < d->n_labels; i++) free(d->labels[i]);
    free(d->labels);
    free(d->docs);
    free(d);
}

int nl_dataset_label_index(const nl_dataset *d, const char *label) {
    for (int i = 0; i < d->n_labels; i++)
        if (strcmp(d->labels[i], label) == 0) return i;
    return -1;
}

static nl_status add_label(nl_dataset *d, const char *label) {
    if (nl_dataset_label_index(d, label) >= 0) return NL_OK;
    char **nl = realloc(d->labels, (size_t)(d->n_labels + 1) * sizeof *nl);
    if (!nl) return NL_ENOMEM;
    d->labels = nl;
    if (!(d->labels[d->n_labels] = strdup(label))) return NL_ENOMEM;
    d->n_labels++;
    return NL_OK;
}

/* Encodes text (len bytes) without the template; a one-line error naming the file and line. */
static nl_status encode_text(nl_ctx *ctx, const char *path, int line, const nl_tokenizer *tok, const char *text, size_t len,
                             int32_t **ids, int *n) {
    nl_status st = nl_tokenizer_encode(ctx, tok, text, len, NULL, ids, n);
    if (st != NL_OK) {
        char why[sizeof ctx->msg];
        snprintf(why, sizeof why, "%s", ctx->msg);
        return nl_errorf(ctx, st, "'%s' line %d: %s", path, line, why);
    }
    return NL_OK;
}

/* A {"text"} or {"prompt","response"} row. The document is the tokenizer's template around the
 * ids of the whole text — for prompt/response the text prompt + response, tokenized as one string
 * (as the model would read it; lm-evaluation-harness does the same). The prompt is the longest
 * run of leading ids that the prompt alone also encodes to, so a token spanning the boundary
 * counts as response: prompt_len = template-pre + that run, and perplexity counts the response
 * (and template-post ids such as EOS) only. */
static nl_status encode_row(nl_ctx *ctx, const char *path, int line, json_t *o, const nl_tokenizer *tok, int vocab_size,
                            nl_doc *doc) {
    json_t *text = json_object_get(o, "text"), *prompt = json_object_get(o, "prompt"), *resp = json_object_get(o, "response");
    if (text && prompt) return nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: a row has either \"text\" or \"prompt\", not both", path, line);
    if (prompt && !resp) return nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"prompt\" without \"response\"", path, line);
    if ((text && !json_is_string(text)) || (prompt && !json_is_string(prompt)) || (resp && !json_is_string(resp)))
        return nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"%s\" must be a string", path, line,
                         text ? "text" : !json_is_string(prompt) ? "prompt" : "response");
    if (!tok)
        return nl_errorf(ctx, NL_EUNSUPPORTED,
                         "'%s' line %d: text rows need a tokenizer and none was found with the model (give --tokenizer PATH)", path,
                         line);
    const int32_t *pre, *post;
    int n_pre, n_post, n_body = 0, n_prompt = 0;
    nl_tokenizer_template(tok, &pre, &n_pre, &post, &n_post);
    int32_t *body = NULL, *pids = NULL, *ids = NULL;
    nl_status st;
    if (text) {
        st = encode_text(ctx, path, line, tok, json_string_value(text), json_string_length(text), &body, &n_body);
    } else {
        size_t lp = json_string_length(prompt), lr = json_string_length(resp);
        char *whole = malloc(lp + lr + 1);
        if (!whole) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        memcpy(whole, json_string_value(prompt), lp);
        memcpy(whole + lp, json_string_value(resp), lr);
        st = encode_text(ctx, path, line, tok, whole, lp + lr, &body, &n_body);
        free(whole);
        if (st == NL_OK) st = encode_text(ctx, path, line, tok, json_string_value(prompt), lp, &pids, &n_prompt);
        if (st == NL_OK) {
            int k = 0;
            while (k < n_prompt && k < n_body && pids[k] == body[k]) k++;
            n_prompt = k;
            if (n_pre + n_prompt == 0) st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"prompt\" gives no tokens", path, line);
            else if (n_prompt == n_body && n_post == 0)
                st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"response\" gives no tokens", path, line);
        }
    }
    int n = n_pre + n_body + n_post;
    if (st == NL_OK && n == 0) st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"text\" gives no tokens", path, line);
    if (st == NL_OK && !(ids = malloc((size_t)n * sizeof *ids))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) {
        if (n_pre) memcpy(ids, pre, (size_t)n_pre * sizeof *ids);
        if (n_body) memcpy(ids + n_pre, body, (size_t)n_body * sizeof *ids);
        if (n_post) memcpy(ids + n_pre + n_body, post, (size_t)n_post * sizeof *ids);
    }
    for (int i = 0; st == NL_OK && i < n; i++)
        if (vocab_size > 0 && ids[i] >= vocab_size)
            st = nl_errorf(ctx, NL_EINVAL, "'%s' line %d: the tokenizer gave id %d, outside the model's vocabulary (size %d)", path,
                           line, ids[i], vocab_size);
    free(body);
    free(pids);
    if (st != NL_OK) { free(ids); return st; }
    doc->tokens = ids;
    doc->n_tokens = n;
    doc->prompt_len = text ? n : n_pre + n_prompt;
    doc->score_from = text || doc->prompt_len < 1 ? 1 : doc->prompt_len;
    return NL_OK;
}

static const char *const KNOWN_KEYS[] = {"tokens", "text", "prompt", "response", "label", "prompt_len"};
#define N_KNOWN (int)(sizeof KNOWN_KEYS / sizeof KNOWN_KEYS[0])

/* Optimal string alignment distance of a and b, capped at 3 (enough to suggest a key). */
static int near_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 32 || m > 32) return 3;
    int d[34][34];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int c = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + c < v) v = d[i - 1][j - 1] + c;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v) v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m] < 3 ? d[n][m] : 3;
}

/* Counts a row with keys outside the format; the first one becomes the dataset's warning. */
static void note_unknown_keys(nl_dataset *d, int line, json_t *o) {
    const char *key;
    json_t *v;
    const char *first = NULL;
    json_object_foreach(o, key, v) {
        int known = 0;
        for (int k = 0; k < N_KNOWN; k++) known |= strcmp(key, KNOWN_KEYS[k]) == 0;
        if (!known) { first = key; break; }
    }
    if (!first) return;
    if (d->n_unknown++ > 0) return;
    const char *best = NULL;
    int bd = 3;
    for (int k = 0; k < N_KNOWN; k++) {
        int dist = near_distance(first, KNOWN_KEYS[k]);
        if (dist < bd) { bd = dist; best = KNOWN_KEYS[k]; }
    }
    char hint[64] = "";
    if (best) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", best);
    snprintf(d->warning, sizeof d->warning, "'%.300s' line %d: unknown key \"%.60s\" ignored%s", d->path, line, first, hint);
}

/* Parses one JSON object into doc. */
static nl_status parse_row(nl_ctx *ctx, nl_dataset *d, const char *path, int line, const char *text, const nl_tokenizer *tok,
                           int vocab_size, nl_doc *doc, int *from_text) {
    json_error_t err;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    nl_status st = NL_OK;
    if (!o) return nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: not JSON: %s", path, line, err.text);
    if (!json_is_object(o)) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: expected a JSON object", path, line); goto done; }
    json_t *lab = json_object_get(o, "label");
    if (lab && !json_is_string(lab) && !json_is_null(lab)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"label\" must be a string", path, line);
        goto done;
    }
    if (lab && json_is_string(lab)) {
        size_t ll = json_string_length(lab);
        if (ll > NL_LABEL_MAX) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"label\" is %zu bytes long (at most %d)", path, line, ll, NL_LABEL_MAX);
            goto done;
        }
    }
    note_unknown_keys(d, line, o);
    doc->label = strdup(lab && json_is_string(lab) ? json_string_value(lab) : "");
    doc->line = line;
    json_t *toks = json_object_get(o, "tokens");
    if (toks) {
        if (!json_is_array(toks)) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"tokens\" must be an array of integers", path, line); goto done; }
        size_t n = json_array_size(toks);
        if (n == 0) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"tokens\" is empty", path, line); goto done; }
        if (n > INT32_MAX / 2) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: too many tokens", path, line); goto done; }
        doc->tokens = malloc(n * sizeof(int32_t));
        if (!doc->tokens) { st = nl_errorf(ctx, NL_ENOMEM, "'%s' line %d: out of memory", path, line); goto done; }
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(toks, i);
            if (!json_is_integer(v)) { st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: token %zu is not an integer", path, line, i); goto done; }
            json_int_t id = json_integer_value(v);
            if (id < 0 || (vocab_size > 0 && id >= vocab_size) || id > INT32_MAX) {
                st = nl_errorf(ctx, NL_EINVAL, "'%s' line %d: token id %lld is outside the vocabulary (size %d)", path, line,
                               (long long)id, vocab_size);
                goto done;
            }
            doc->tokens[i] = (int32_t)id;
        }
        doc->n_tokens = (int)n;
        doc->prompt_len = (int)n;
        doc->score_from = 1;
        json_t *pl = json_object_get(o, "prompt_len");
        if (pl) {
            if (!json_is_integer(pl) || json_integer_value(pl) < 1 || json_integer_value(pl) > (json_int_t)n) {
                st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: \"prompt_len\" must be an integer in 1..%zu", path, line, n);
                goto done;
            }
            doc->prompt_len = (int)json_integer_value(pl);
            if (doc->prompt_len < (int)n) doc->score_from = doc->prompt_len;
        }
    } else if (json_object_get(o, "text") || json_object_get(o, "prompt")) {
        st = encode_row(ctx, path, line, o, tok, vocab_size, doc);
        *from_text = 1;
    } else {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: row has none of \"tokens\", \"text\" or \"prompt\"", path, line);
        goto done;
    }
done:
    json_decref(o);
    return st;
}

nl_status nl_dataset_parse_row(nl_ctx *ctx, const char *path, int line, const char *json, const nl_tokenizer *tok, int vocab_size,
                               nl_doc *doc) {
    memset(doc, 0, sizeof *doc);
    nl_dataset scratch; /* note_unknown_keys writes its warning here; the row's key set is the caller's */
    memset(&scratch, 0, sizeof scratch);
    int from_text = 0;
    nl_status st = parse_row(ctx, &scratch, path, line, json, tok, vocab_size, doc, &from_text);
    if (st == NL_OK && !doc->label) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st != NL_OK) nl_doc_release(doc);
    return st;
}

void nl_doc_release(nl_doc *doc) {
    free(doc->tokens);
    free(doc->label);
    doc->tokens = NULL, doc->label = NULL;
    doc->n_tokens = 0;
}

nl_status nl_dataset_load(nl_ctx *ctx, const char *path, const nl_tokenizer *tok, int vocab_size, nl_dataset **out) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    nl_dataset *d = calloc(1, sizeof *d);
    if (!d) { fclose(fp); return nl_errorf(ctx, NL_ENOMEM, "out of memory"); }
    snprintf(d->path, sizeof d->path, "%s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, cap_docs = 0;
    nl_status st = NL_OK;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        int blank = 1;
        for (ssize_t i = 0; i < len; i++)
            if (line[i] != ' ' && line[i] != '\t' && line[i] != '\n' && line[i] != '\r') { blank = 0; break; }
        if (blank) continue;
        if (d->n_docs == cap_docs) {
            cap_docs = cap_docs ? 2 * cap_docs : 64;
            nl_doc *nd = realloc(d->docs, (size_t)cap_docs * sizeof *nd);
            if (!nd) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            d->docs = nd;
        }
        nl_doc *doc = &d->docs[d->n_docs];
        memset(doc, 0, sizeof *doc);
        d->n_docs++;
        int from_text = 0;
        if ((st = parse_row(ctx, d, path, lineno, line, tok, vocab_size, doc, &from_text)) != NL_OK) break;
        if (!doc->label || add_label(d, doc->label) != NL_OK) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        d->n_tokens += doc->n_tokens;
        d->n_text += from_text;
    }
    if (st == NL_OK && ferror(fp)) st = nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (st == NL_OK && d->n_docs == 0) st = nl_errorf(ctx, NL_EFORMAT, "'%s': no documents (the file is empty)", path);
    if (st == NL_OK && d->n_unknown > 1) {
        size_t k = strlen(d->warning);
        snprintf(d->warning + k, sizeof d->warning - k, "; %d rows have keys that are not part of the format", d->n_unknown);
    }
    free(line);
    fclose(fp);
    if (st != NL_OK) { nl_dataset_destroy(d); return st; }
    *out = d;
    return NL_OK;
}
