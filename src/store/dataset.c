/* dataset.c — JSONL dataset loader (see dataset.h). Parses each line with jansson.
 * Checked by tests/test_dataset.c. */
#include "neuronlab/dataset.h"

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

/* Parses one JSON object into doc. */
static nl_status parse_row(nl_ctx *ctx, const char *path, int line, const char *text, const nl_tokenizer *tok,
                           int vocab_size, nl_doc *doc) {
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
        (void)tok;
        st = nl_errorf(ctx, NL_EUNSUPPORTED,
                       "'%s' line %d: text rows need a tokenizer, which this build cannot load yet; use {\"tokens\": [...]} rows",
                       path, line);
        goto done;
    } else {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' line %d: row has none of \"tokens\", \"text\" or \"prompt\"", path, line);
        goto done;
    }
done:
    json_decref(o);
    return st;
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
        if ((st = parse_row(ctx, path, lineno, line, tok, vocab_size, doc)) != NL_OK) break;
        if (!doc->label || add_label(d, doc->label) != NL_OK) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        d->n_tokens += doc->n_tokens;
    }
    if (st == NL_OK && ferror(fp)) st = nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (st == NL_OK && d->n_docs == 0) st = nl_errorf(ctx, NL_EFORMAT, "'%s': no documents (the file is empty)", path);
    free(line);
    fclose(fp);
    if (st != NL_OK) { nl_dataset_destroy(d); return st; }
    *out = d;
    return NL_OK;
}
