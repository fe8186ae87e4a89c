/* cmd_tokenize.c — `neuronlab tokenize TOKENIZER [INPUT.jsonl] [--no-special] [--parse-special]
 * [--decode] [--threads N]`: JSONL dataset rows → token rows in the same order, every other field
 * of a row kept in place (label, ids, metadata):
 *   {"text": …, …}                   → "text" replaced by "tokens": […]
 *   {"prompt": …, "response": …, …}  → "prompt" replaced by "tokens": […], "prompt_len": k and
 *                                      "response" dropped; tokens and prompt_len exactly as the
 *                                      dataset reader computes them (nl_dataset_parse_row: the
 *                                      template, always; --no-special/--parse-special apply to
 *                                      "text" rows only)
 *   {"tokens": […], …}               → unchanged
 * so the output reads back (nl_dataset_load) as the same documents. --decode: "tokens" replaced
 * by "text", the rest kept. Values are rewritten compactly (numbers in their shortest round-trip
 * form); a lone surrogate escape in another field becomes U+FFFD. TOKENIZER is a tokenizer.json, tokenizer.model, tokenizer.bin,
 * vocab.json/encoder.json or a model folder. Default: the post-processor's special tokens are added
 * (HF encode(add_special_tokens=True)); --no-special turns that off (with --decode: special tokens
 * are dropped from the text); --parse-special matches special tokens written in the text.
 * Blank lines are skipped. Invalid UTF-8 in a line becomes U+FFFD before the JSON is read (what
 * Node and Python do when they read the file as text); lone UTF-16 surrogates written as JSON
 * escapes ("\ud800") are tokenized as transformers.js does (nl_encode_opts.lone_surrogates). Rows are encoded in parallel batches and
 * written in input order. A bad row stops with one line naming the file and line; exit 1.
 * Checked by tests/tokenizer_conformance.sh, tests/text_data.sh and tests/cli_errors.sh. */
#include <errno.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/dataset.h"
#include "neuronlab/tokenizer.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_tokenize[] = {
    {"TOKENIZER", NULL, 1, "a tokenizer.json, tokenizer.model, tokenizer.bin, vocab.json (+ merges.txt) or a model folder", NULL},
    {"INPUT.jsonl", NULL, 0, "the rows to encode (or decode); the output goes to stdout", "stdin"},
    {"--no-special", NULL, 0, "leave out the post-processor's template (BOS/EOS) of \"text\" rows; with --decode: drop special tokens", NULL},
    {"--parse-special", NULL, 0, "match special tokens written in the text (<|endoftext|>) instead of reading them as plain text", NULL},
    {"--decode", NULL, 0, "\"tokens\" rows back to \"text\" rows (the other fields kept)", NULL},
    {"--threads", "N", 0, "worker threads (0 = all cores)", "all cores"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_tokenize = {
    "tokenize", NULL,
    "JSONL dataset rows ({\"text\"} or {\"prompt\",\"response\"}) to {\"tokens\"} rows keeping every other field (or back with --decode) with a tokenizer.json, tokenizer.model, tokenizer.bin or model folder",
    run};

typedef struct {
    char *line;       /* repaired line (owned) */
    size_t len;
    int lineno;
    int32_t *ids;     /* input ids (decode) or output ids (encode) */
    int n;
    char *text;       /* decode output */
    size_t text_len;
    json_t *obj;      /* the parsed row, for its other fields (owned) */
    int kind;         /* ROW_TEXT, ROW_PROMPT, ROW_TOKENS (encode) */
    int prompt_len;   /* ROW_PROMPT */
    int mark;         /* the private-use character standing for lone surrogates, 0 when none */
    nl_status st;
    char msg[1024];
} row;

enum { ROW_TEXT, ROW_PROMPT, ROW_TOKENS };

static void json_text(FILE *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    fputc('"', o);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', o); fputc(c, o); }
        else if (c == '\n') fputs("\\n", o);
        else if (c == '\t') fputs("\\t", o);
        else if (c == '\r') fputs("\\r", o);
        else if (c < 0x20 || c == 0x7F) { fputs("\\u00", o); fputc(hex[c >> 4], o); fputc(hex[c & 15], o); }
        else fputc(c, o);
    }
    fputc('"', o);
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int u_escape(const char *s, size_t n, size_t i) { /* value of \uXXXX at s[i], or -1 */
    if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u') return -1;
    int v = 0;
    for (int k = 2; k < 6; k++) {
        int h = hexval(s[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Calls back for each \uXXXX escape of the line: returns the number of escapes (skipping the
 * other escapes properly), or with fix set, rewrites lone surrogates (a \uD800–\uDFFF escape that
 * is not half of a pair) in place as the escape of code point mark. */
static int scan_escapes(char *s, size_t n, int fix, int mark, int *lone, int *mentions_mark) {
    int count = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        int v = u_escape(s, n, i);
        if (v < 0) { i++; continue; } /* another escape: skip its second character */
        count++;
        if (v == mark) *mentions_mark = 1;
        if (v >= 0xD800 && v <= 0xDBFF) {
            int w = u_escape(s, n, i + 6);
            if (w >= 0xDC00 && w <= 0xDFFF) { i += 11; continue; }
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            (*lone)++;
            if (fix) {
                static const char hex[] = "0123456789ABCDEF";
                char e[7] = {'\\', 'u', hex[(mark >> 12) & 15], hex[(mark >> 8) & 15], hex[(mark >> 4) & 15], hex[mark & 15], 0};
                memcpy(s + i, e, 6);
            }
        }
        i += 5;
    }
    return count;
}

/* Lone surrogates: JSON can name them ("\ud800"), UTF-8 cannot, and jansson refuses them. Each
 * one is rewritten as a private-use character that the line does not use (*mark, 0 when there
 * is none), which the caller turns into the WTF-8 bytes of a surrogate after parsing, for
 * nl_encode_opts.lone_surrogates (the reference, transformers.js, holds them in its strings). */
static void fix_lone_surrogates(char *s, size_t n, int *mark) {
    int lone = 0, dummy = 0;
    *mark = 0;
    scan_escapes(s, n, 0, -1, &lone, &dummy);
    if (!lone) return;
    for (int c = 0xE000; c <= 0xF8FF; c++) {
        char u[3] = {(char)(0xE0 | (c >> 12)), (char)(0x80 | ((c >> 6) & 0x3F)), (char)(0x80 | (c & 0x3F))};
        int mentioned = 0;
        scan_escapes(s, n, 0, c, &lone, &mentioned);
        if (mentioned || memmem(s, n, u, 3)) continue;
        lone = 0;
        scan_escapes(s, n, 1, c, &lone, &mentioned);
        *mark = c;
        return;
    }
    /* every private-use character is taken (!): the surrogates become U+FFFD */
    lone = 0;
    scan_escapes(s, n, 1, 0xFFFD, &lone, &dummy);
}

/* Parses and processes one row; errors go into r->st / r->msg. */
static void process(const nl_tokenizer *t, const char *file, row *r, int decode, const nl_encode_opts *opts, int skip_special) {
    nl_ctx c;
    nl_ctx_init(&c);
    json_error_t err;
    int mark;
    fix_lone_surrogates(r->line, r->len, &mark);
    json_t *o = json_loadb(r->line, r->len, JSON_ALLOW_NUL, &err);
    if (!o) {
        r->st = NL_EFORMAT;
        snprintf(r->msg, sizeof r->msg, "'%s' line %d: not JSON: %s", file, r->lineno, err.text);
        return;
    }
    if (!json_is_object(o)) {
        r->st = NL_EFORMAT;
        snprintf(r->msg, sizeof r->msg, "'%s' line %d: expected a JSON object", file, r->lineno);
        goto done;
    }
    r->mark = mark;
    if (!decode && json_object_get(o, "tokens")) { /* already token ids: kept as they are */
        r->kind = ROW_TOKENS;
    } else if (!decode && (json_object_get(o, "prompt") || json_object_get(o, "response"))) {
        /* the dataset reader's own encoding of a prompt/response row (template, prompt_len) */
        r->kind = ROW_PROMPT;
        nl_doc doc;
        char *z = malloc(r->len + 1);
        if (!z) { r->st = NL_ENOMEM; snprintf(r->msg, sizeof r->msg, "out of memory"); goto done; }
        memcpy(z, r->line, r->len);
        z[r->len] = 0;
        r->st = nl_dataset_parse_row(&c, file, r->lineno, z, t, 0, &doc);
        free(z);
        if (r->st != NL_OK) { snprintf(r->msg, sizeof r->msg, "%s", c.msg); goto done; }
        r->ids = doc.tokens, r->n = doc.n_tokens, r->prompt_len = doc.prompt_len;
        doc.tokens = NULL;
        nl_doc_release(&doc);
        goto done;
    } else if (!decode) {
        r->kind = ROW_TEXT;
        json_t *tx = json_object_get(o, "text");
        if (!json_is_string(tx)) {
            r->st = NL_EFORMAT;
            snprintf(r->msg, sizeof r->msg, "'%s' line %d: expected {\"text\": \"...\"}, {\"prompt\": \"...\", \"response\": \"...\"} or {\"tokens\": [...]}", file, r->lineno);
            goto done;
        }
        if (!mark) r->st = nl_tokenizer_encode(&c, t, json_string_value(tx), json_string_length(tx), opts, &r->ids, &r->n);
        else { /* the marks become WTF-8 surrogates (ED A0 80), same length */
            size_t n = json_string_length(tx);
            char *w = malloc(n + 1), u[3] = {(char)(0xE0 | (mark >> 12)), (char)(0x80 | ((mark >> 6) & 0x3F)), (char)(0x80 | (mark & 0x3F))};
            if (!w) { r->st = NL_ENOMEM; snprintf(r->msg, sizeof r->msg, "out of memory"); goto done; }
            memcpy(w, json_string_value(tx), n);
            for (char *q = w; (q = memmem(q, (size_t)(w + n - q), u, 3)); q += 3) memcpy(q, "\xED\xA0\x80", 3);
            nl_encode_opts o2 = *opts;
            o2.lone_surrogates = 1;
            r->st = nl_tokenizer_encode(&c, t, w, n, &o2, &r->ids, &r->n);
            free(w);
        }
    } else {
        json_t *tk = json_object_get(o, "tokens");
        if (!json_is_array(tk)) {
            r->st = NL_EFORMAT;
            snprintf(r->msg, sizeof r->msg, "'%s' line %d: expected {\"tokens\": [...]}", file, r->lineno);
            goto done;
        }
        size_t n = json_array_size(tk);
        r->ids = malloc((n ? n : 1) * sizeof *r->ids);
        if (!r->ids) { r->st = NL_ENOMEM; snprintf(r->msg, sizeof r->msg, "out of memory"); goto done; }
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(tk, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
                r->st = NL_EFORMAT;
                snprintf(r->msg, sizeof r->msg, "'%s' line %d: token %zu is not a non-negative integer", file, r->lineno, i);
                goto done;
            }
            r->ids[i] = (int32_t)json_integer_value(v);
        }
        r->n = (int)n;
        r->st = nl_tokenizer_decode(&c, t, r->ids, r->n, skip_special, &r->text, &r->text_len);
    }
    if (r->st != NL_OK) snprintf(r->msg, sizeof r->msg, "'%.200s' line %d: %.700s", file, r->lineno, c.msg);
done:
    if (r->st == NL_OK) r->obj = o;
    else json_decref(o);
}

/* A string value of another field: the lone-surrogate mark becomes U+FFFD. */
static void write_string(FILE *out, const char *s, size_t n, int mark) {
    if (!mark) { json_text(out, s, n); return; }
    char u[3] = {(char)(0xE0 | (mark >> 12)), (char)(0x80 | ((mark >> 6) & 0x3F)), (char)(0x80 | (mark & 0x3F))};
    char *w = malloc(n + 1);
    if (!w) { json_text(out, s, n); return; }
    memcpy(w, s, n);
    for (char *q = w; (q = memmem(q, (size_t)(w + n - q), u, 3)); q += 3) memcpy(q, "\xEF\xBF\xBD", 3);
    json_text(out, w, n);
    free(w);
}

/* Any JSON value, compactly; reals in their shortest round-trip form. */
static void write_value(FILE *out, json_t *v, int mark) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        fputc('{', out);
        json_object_foreach(v, k, x) {
            if (!first) fputc(',', out);
            first = 0;
            write_string(out, k, strlen(k), mark);
            fputc(':', out);
            write_value(out, x, mark);
        }
        fputc('}', out);
        break;
    }
    case JSON_ARRAY:
        fputc('[', out);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) fputc(',', out);
            write_value(out, json_array_get(v, i), mark);
        }
        fputc(']', out);
        break;
    case JSON_STRING: write_string(out, json_string_value(v), json_string_length(v), mark); break;
    case JSON_INTEGER: fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: fputs(NL_JSON_NUM(json_real_value(v)), out); break;
    case JSON_TRUE: fputs("true", out); break;
    case JSON_FALSE: fputs("false", out); break;
    default: fputs("null", out); break;
    }
}

static void write_ids(FILE *out, const int32_t *ids, int n) {
    fputc('[', out);
    char num[16];
    for (int k = 0; k < n; k++) {
        char *e = num + sizeof num, *q = e;
        uint32_t v = (uint32_t)ids[k];
        do { *--q = (char)('0' + v % 10); v /= 10; } while (v);
        if (k) *--q = ',';
        fwrite(q, 1, (size_t)(e - q), out);
    }
    fputc(']', out);
}

/* The output row: the input's fields in their order, the encoded/decoded field in place of the
 * one it replaces (see the top of the file). */
static void write_row(FILE *out, const row *r, int decode) {
    if (!decode && r->kind == ROW_TOKENS) {
        write_value(out, r->obj, r->mark);
        fputc('\n', out);
        return;
    }
    const char *k;
    json_t *x;
    int first = 1;
    fputc('{', out);
    json_object_foreach(r->obj, k, x) {
        if (!decode && r->kind == ROW_PROMPT && (!strcmp(k, "response") || !strcmp(k, "prompt_len"))) continue;
        if (!first) fputc(',', out);
        first = 0;
        if (decode && !strcmp(k, "tokens")) {
            fputs("\"text\":", out);
            json_text(out, r->text, r->text_len);
        } else if (!decode && r->kind == ROW_TEXT && !strcmp(k, "text")) {
            fputs("\"tokens\":", out);
            write_ids(out, r->ids, r->n);
        } else if (!decode && r->kind == ROW_PROMPT && !strcmp(k, "prompt")) {
            fputs("\"tokens\":", out);
            write_ids(out, r->ids, r->n);
            fprintf(out, ",\"prompt_len\":%d", r->prompt_len);
        } else {
            write_string(out, k, strlen(k), r->mark);
            fputc(':', out);
            write_value(out, x, r->mark);
        }
    }
    fputs("}\n", out);
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *tok_path = NULL, *in_path = NULL, *val;
    int no_special = 0, parse_special = 0, decode = 0;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        int k;
        if (!strcmp(argv[i], "--no-special")) no_special = 1;
        else if (!strcmp(argv[i], "--parse-special")) parse_special = 1;
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else if ((k = nl_cli_opt(argc, argv, &i, "--threads", &val)) != 0) {
            if (k < 0 || !nl_cli_int(val, 0, 4096, &threads)) return nl_cli_usage(&nl_cmd_tokenize, "--threads needs a count (0 = all cores)");
        } else if (argv[i][0] == '-' && argv[i][1]) return nl_cli_usage(&nl_cmd_tokenize, "unknown option '%s'", argv[i]);
        else if (!tok_path) tok_path = argv[i];
        else if (!in_path) in_path = argv[i];
        else return nl_cli_usage(&nl_cmd_tokenize, "unexpected argument '%s'", argv[i]);
    }
    if (!tok_path) return nl_cli_usage(&nl_cmd_tokenize, "missing TOKENIZER");
    nl_tokenizer *t;
    nl_status st = nl_tokenizer_open(ctx, tok_path, &t);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    if (nl_tokenizer_warning(t)[0]) fprintf(stderr, "neuronlab: warning: %s\n", nl_tokenizer_warning(t));
    const char *file = in_path && strcmp(in_path, "-") ? in_path : "<stdin>";
    FILE *in = stdin;
    if (in_path && strcmp(in_path, "-")) {
        in = fopen(in_path, "rb");
        if (!in) {
            nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", in_path, strerror(errno));
            nl_tokenizer_close(t);
            return nl_cli_fail(ctx, NL_EIO);
        }
    }
    if (threads > 0) omp_set_num_threads((int)threads);
    nl_encode_opts opts = {.add_special = !no_special, .parse_special = parse_special};
    enum { BATCH_ROWS = 2048, BATCH_BYTES = 4 << 20 };
    row *rows = calloc(BATCH_ROWS, sizeof *rows);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0, eof = 0;
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    if (!rows) { nl_errorf(ctx, NL_ENOMEM, "out of memory"); rc = nl_cli_fail(ctx, NL_ENOMEM); eof = 1; }
    while (!eof && !rc) {
        int n = 0;
        size_t bytes = 0;
        while (n < BATCH_ROWS && bytes < BATCH_BYTES) {
            ssize_t got = getline(&line, &cap, in);
            if (got < 0) { eof = 1; break; }
            lineno++;
            size_t len = (size_t)got;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
            size_t k = 0;
            while (k < len && (line[k] == ' ' || line[k] == '\t')) k++;
            if (k == len) continue;
            row *r = &rows[n];
            memset(r, 0, sizeof *r);
            r->lineno = lineno;
            r->line = nl_utf8_repair(line, len, &r->len);
            if (!r->line) { nl_errorf(ctx, NL_ENOMEM, "out of memory"); rc = nl_cli_fail(ctx, NL_ENOMEM); break; }
            bytes += len;
            n++;
        }
        if (rc) { n = 0; }
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
        for (int i = 0; i < n; i++) process(t, file, &rows[i], decode, &opts, no_special);
        for (int i = 0; i < n; i++) {
            row *r = &rows[i];
            if (!rc && r->st != NL_OK) {
                snprintf(ctx->msg, sizeof ctx->msg, "%s", r->msg);
                rc = nl_cli_fail(ctx, r->st);
            }
            if (!rc) write_row(stdout, r, decode);
            json_decref(r->obj);
            free(r->line);
            free(r->ids);
            free(r->text);
        }
        if (nl_interrupted && !rc) { nl_errorf(ctx, NL_EINTR, "interrupted"); rc = nl_cli_fail(ctx, NL_EINTR); }
    }
    if (!rc && ferror(in)) { nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", file, strerror(errno)); rc = nl_cli_fail(ctx, NL_EIO); }
    if (fflush(stdout) != 0 && !rc) { nl_errorf(ctx, NL_EIO, "cannot write the output: %s", strerror(errno)); rc = nl_cli_fail(ctx, NL_EIO); }
    free(line);
    free(rows);
    if (in != stdin) fclose(in);
    nl_tokenizer_close(t);
    return rc;
}
