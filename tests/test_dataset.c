/* test_dataset.c — JSONL loading: rows, labels, prompt_len, and every bad-row message; one row alone
 * (nl_dataset_parse_row) equals the loader. */
#include "neuronlab/dataset.h"
#include "neuronlab/tokenizer.h"
#include "testutil.h"

static char dir[] = "/tmp/nl_dataset_XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    static int made; /* mkdtemp once per test process (a generated name may end in 'X') */
    if (!made) { cr_assert(mkdtemp(dir)); made = 1; }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

Test(dataset, loads_rows_and_labels) {
    const char *p = write_file("ok.jsonl", "{\"tokens\": [1, 2, 3], \"label\": \"code\"}\n\n"
                                           "{\"tokens\": [4, 5], \"label\": \"math\", \"prompt_len\": 1}\n"
                                           "{\"tokens\": [6]}\n{\"tokens\": [7, 8], \"label\": \"code\"}\n");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_OK, "%s", ctx.msg);
    cr_assert_eq(d->n_docs, 4);
    cr_assert_eq(d->n_tokens, 8);
    cr_assert_eq(d->n_labels, 3);
    cr_assert_str_eq(d->labels[0], "code");
    cr_assert_str_eq(d->labels[2], "");
    cr_assert_eq(d->docs[1].line, 3);
    cr_assert_eq(d->docs[1].prompt_len, 1);
    cr_assert_eq(d->docs[1].score_from, 1);
    cr_assert_eq(d->docs[0].prompt_len, 3);
    cr_assert_eq(d->docs[0].score_from, 1);
    cr_assert_eq(d->docs[3].tokens[1], 8);
    cr_assert_eq(nl_dataset_label_index(d, "math"), 1);
    nl_dataset_destroy(d);
}

static void expect_error(const char *name, const char *text, int vocab, nl_status want, const char *needle) {
    const char *p = write_file(name, text);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d = (void *)1;
    nl_status st = nl_dataset_load(&ctx, p, NULL, vocab, &d);
    cr_assert_eq(st, want, "%s: status %d, message '%s'", name, st, ctx.msg);
    cr_assert_null(d);
    cr_assert(strstr(ctx.msg, name), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, needle), "message '%s' lacks '%s'", ctx.msg, needle);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

Test(dataset, bad_rows_name_file_and_line) {
    expect_error("empty.jsonl", "", 10, NL_EFORMAT, "no documents");
    expect_error("blank.jsonl", "\n  \n", 10, NL_EFORMAT, "no documents");
    expect_error("notjson.jsonl", "{\"tokens\": [1]}\nhello\n", 10, NL_EFORMAT, "line 2: not JSON");
    expect_error("big.jsonl", "{\"tokens\": [1, 2]}\n{\"tokens\": [3, 10]}\n", 10, NL_EINVAL,
                 "line 2: token id 10 is outside the vocabulary (size 10)");
    expect_error("neg.jsonl", "{\"tokens\": [-1]}\n", 10, NL_EINVAL, "line 1: token id -1");
    expect_error("float.jsonl", "{\"tokens\": [1.5]}\n", 10, NL_EFORMAT, "line 1: token 0 is not an integer");
    expect_error("emptytok.jsonl", "{\"tokens\": []}\n", 10, NL_EFORMAT, "line 1: \"tokens\" is empty");
    expect_error("nokey.jsonl", "{\"foo\": 1}\n", 10, NL_EFORMAT, "line 1: row has none of");
    expect_error("array.jsonl", "[1, 2]\n", 10, NL_EFORMAT, "line 1: expected a JSON object");
    expect_error("label.jsonl", "{\"tokens\": [1], \"label\": 3}\n", 10, NL_EFORMAT, "\"label\" must be a string");
    expect_error("plen.jsonl", "{\"tokens\": [1, 2], \"prompt_len\": 3}\n", 10, NL_EFORMAT, "\"prompt_len\" must be");
}

Test(dataset, missing_file) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, "/nonexistent/x.jsonl", NULL, 10, &d), NL_EIO);
    cr_assert(strstr(ctx.msg, "cannot open '/nonexistent/x.jsonl'"), "%s", ctx.msg);
}

/* Text rows through the fixtures' tokenizers (tests/reference/gen_tokenizers.py): with no merges,
 * each character of the byte-level one is its byte, and the SentencePiece-style one maps "▁" to
 * 259 and other characters to their byte-fallback pieces 3 + byte, after BOS (1). */
static nl_tokenizer *fixture_tokenizer(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/hf/%s", name);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_tokenizer *t = NULL;
    cr_assert_eq(nl_tokenizer_for_model(&ctx, path, &t), NL_OK, "%s", ctx.msg);
    cr_assert_not_null(t, "no tokenizer found in %s", path);
    return t;
}

Test(dataset, text_rows_byte_level) {
    nl_tokenizer *t = fixture_tokenizer("gpt2");
    const char *p = write_file("text.jsonl", "{\"text\": \"hi \\u00e9\", \"label\": \"w\"}\n"
                                             "{\"prompt\": \"Q: a\", \"response\": \" b\"}\n"
                                             "{\"tokens\": [7, 8]}\n");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, p, t, 257, &d), NL_OK, "%s", ctx.msg);
    cr_assert_eq(d->n_text, 2);
    int32_t want0[] = {'h', 'i', ' ', 0xc3, 0xa9};
    cr_assert_eq(d->docs[0].n_tokens, 5);
    cr_assert_arr_eq(d->docs[0].tokens, want0, sizeof want0);
    cr_assert_eq(d->docs[0].prompt_len, 5);
    cr_assert_eq(d->docs[0].score_from, 1);
    int32_t want1[] = {'Q', ':', ' ', 'a', ' ', 'b'};
    cr_assert_eq(d->docs[1].n_tokens, 6);
    cr_assert_arr_eq(d->docs[1].tokens, want1, sizeof want1);
    cr_assert_eq(d->docs[1].prompt_len, 4);
    cr_assert_eq(d->docs[1].score_from, 4);
    cr_assert_eq(d->n_tokens, 13);
    nl_dataset_destroy(d);
    /* an id the tokenizer knows but the model does not */
    p = write_file("eot.jsonl", "{\"text\": \"x\"}\n");
    cr_assert_eq(nl_dataset_load(&ctx, p, t, 100, &d), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "line 1: the tokenizer gave id 120, outside the model's vocabulary (size 100)"), "%s", ctx.msg);
    nl_tokenizer_close(t);
}

Test(dataset, text_rows_with_bos_template) {
    nl_tokenizer *t = fixture_tokenizer("llama_bf16");
    /* "a" + " b" is read as one text "▁a▁b"; the prompt alone is "▁a". */
    const char *p = write_file("bos.jsonl", "{\"prompt\": \"a\", \"response\": \" b\"}\n{\"text\": \"\"}\n");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, p, t, 260, &d), NL_OK, "%s", ctx.msg);
    int32_t want[] = {1, 259, 3 + 'a', 259, 3 + 'b'};
    cr_assert_eq(d->docs[0].n_tokens, 5);
    cr_assert_arr_eq(d->docs[0].tokens, want, sizeof want);
    cr_assert_eq(d->docs[0].prompt_len, 3);
    cr_assert_eq(d->docs[0].score_from, 3);
    cr_assert_eq(d->docs[1].n_tokens, 1, "an empty text is BOS alone");
    nl_dataset_destroy(d);
    nl_tokenizer_close(t);
}

static void expect_text_error(nl_tokenizer *t, const char *name, const char *text, const char *needle) {
    const char *p = write_file(name, text);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d = (void *)1;
    cr_assert_neq(nl_dataset_load(&ctx, p, t, 257, &d), NL_OK, "%s loaded", name);
    cr_assert_null(d);
    cr_assert(strstr(ctx.msg, name) && strstr(ctx.msg, needle), "message '%s' lacks '%s'", ctx.msg, needle);
}

Test(dataset, text_row_errors) {
    nl_tokenizer *t = fixture_tokenizer("gpt2");
    expect_text_error(NULL, "notok.jsonl", "{\"text\": \"x\"}\n", "line 1: text rows need a tokenizer");
    expect_text_error(t, "emptytext.jsonl", "{\"tokens\": [1]}\n{\"text\": \"\"}\n", "line 2: \"text\" gives no tokens");
    expect_text_error(t, "noresp.jsonl", "{\"prompt\": \"x\"}\n", "line 1: \"prompt\" without \"response\"");
    expect_text_error(t, "emptyresp.jsonl", "{\"prompt\": \"x\", \"response\": \"\"}\n", "line 1: \"response\" gives no tokens");
    expect_text_error(t, "emptyprompt.jsonl", "{\"prompt\": \"\", \"response\": \"y\"}\n", "line 1: \"prompt\" gives no tokens");
    expect_text_error(t, "both.jsonl", "{\"text\": \"x\", \"prompt\": \"y\", \"response\": \"z\"}\n", "not both");
    expect_text_error(t, "nonstr.jsonl", "{\"text\": 5}\n", "line 1: \"text\" must be a string");
    expect_text_error(t, "nonstr2.jsonl", "{\"prompt\": \"a\", \"response\": [1]}\n", "line 1: \"response\" must be a string");
    nl_tokenizer_close(t);
}

Test(dataset, label_length_is_bounded) {
    char *row = malloc(NL_LABEL_MAX + 64);
    int n = sprintf(row, "{\"tokens\": [1, 2], \"label\": \"");
    for (int i = 0; i < NL_LABEL_MAX; i++) row[n++] = 'x';
    strcpy(row + n, "\"}\n");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, write_file("lab_max.jsonl", row), NULL, 10, &d), NL_OK, "%s", ctx.msg);
    cr_assert_eq(strlen(d->docs[0].label), NL_LABEL_MAX);
    nl_dataset_destroy(d);
    strcpy(row + n, "y\"}\n"); /* one byte more */
    char text[600];
    snprintf(text, sizeof text, "{\"tokens\": [1]}\n%s", row);
    const char *p = write_file("lab_long.jsonl", text);
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_EFORMAT);
    char want[512];
    snprintf(want, sizeof want, "'%s' line 2: \"label\" is %d bytes long (at most %d)", p, NL_LABEL_MAX + 1, NL_LABEL_MAX);
    cr_assert_str_eq(ctx.msg, want);
    free(row);
    p = write_file("lab_nul.jsonl", "{\"tokens\": [1], \"label\": \"a\\u0000b\"}\n");
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_EFORMAT);
    cr_assert(strstr(ctx.msg, "line 1: not JSON: \\u0000 is not allowed"), "%s", ctx.msg); /* jansson refuses NUL */
}

Test(dataset, unknown_keys_are_reported_with_a_suggestion) {
    const char *p = write_file("keys.jsonl", "{\"tokens\": [1, 2], \"label\": \"a\"}\n"
                                             "{\"tokens\": [1, 2], \"lable\": \"b\"}\n"
                                             "{\"tokens\": [3], \"source\": \"web\"}\n");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_OK, "%s", ctx.msg);
    cr_assert_eq(d->n_unknown, 2);
    char want[512];
    snprintf(want, sizeof want,
             "'%s' line 2: unknown key \"lable\" ignored (did you mean \"label\"?); 2 rows have keys that are not part of the format", p);
    cr_assert_str_eq(d->warning, want);
    cr_assert_str_eq(d->docs[1].label, ""); /* the misspelt key is not a label */
    nl_dataset_destroy(d);
    p = write_file("keys1.jsonl", "{\"tokens\": [1, 2], \"source\": \"web\"}\n{\"tokens\": [1], \"label\": \"x\"}\n");
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_OK, "%s", ctx.msg);
    snprintf(want, sizeof want, "'%s' line 1: unknown key \"source\" ignored", p);
    cr_assert_str_eq(d->warning, want);
    nl_dataset_destroy(d);
    p = write_file("keys0.jsonl", "{\"prompt_len\": 1, \"tokens\": [1, 2], \"label\": \"a\"}\n");
    cr_assert_eq(nl_dataset_load(&ctx, p, NULL, 10, &d), NL_OK, "%s", ctx.msg);
    cr_assert_eq(d->n_unknown, 0);
    cr_assert_str_eq(d->warning, "");
    nl_dataset_destroy(d);
}

/* nl_dataset_parse_row: one row alone gives what the loader gives for it, errors included. */
Test(dataset, one_row_alone_equals_the_loader) {
    nl_tokenizer *t = fixture_tokenizer("llama_bf16");
    const char *rows[] = {"{\"prompt\": \"a\", \"response\": \" b\", \"label\": \"m\"}", "{\"text\": \"x y\"}",
                          "{\"tokens\": [1, 5, 9], \"prompt_len\": 2, \"label\": \"t\"}"};
    char all[512] = "";
    for (int i = 0; i < 3; i++) strcat(strcat(all, rows[i]), "\n");
    const char *p = write_file("alone.jsonl", all);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_dataset *d;
    cr_assert_eq(nl_dataset_load(&ctx, p, t, 260, &d), NL_OK, "%s", ctx.msg);
    for (int i = 0; i < 3; i++) {
        nl_doc doc;
        cr_assert_eq(nl_dataset_parse_row(&ctx, "f.jsonl", i + 1, rows[i], t, 260, &doc), NL_OK, "%s", ctx.msg);
        const nl_doc *w = &d->docs[i];
        cr_assert_eq(doc.n_tokens, w->n_tokens, "row %d", i);
        cr_assert_arr_eq(doc.tokens, w->tokens, (size_t)w->n_tokens * sizeof *w->tokens);
        cr_assert_eq(doc.prompt_len, w->prompt_len, "row %d", i);
        cr_assert_eq(doc.score_from, w->score_from, "row %d", i);
        cr_assert_str_eq(doc.label, w->label);
        cr_assert_eq(doc.line, i + 1);
        nl_doc_release(&doc);
        cr_assert_null(doc.tokens);
    }
    cr_assert_eq(d->docs[0].prompt_len, 3); /* BOS ▁ a */
    nl_dataset_destroy(d);
    nl_doc doc;
    cr_assert_eq(nl_dataset_parse_row(&ctx, "f.jsonl", 4, "{\"prompt\": \"a\"}", t, 260, &doc), NL_EFORMAT);
    cr_assert_str_eq(ctx.msg, "'f.jsonl' line 4: \"prompt\" without \"response\"");
    cr_assert_null(doc.tokens);
    nl_doc_release(&doc); /* a no-op after an error */
    cr_assert_eq(nl_dataset_parse_row(&ctx, "f.jsonl", 5, "{\"tokens\": [1, 300]}", t, 260, &doc), NL_EINVAL);
    cr_assert(strstr(ctx.msg, "'f.jsonl' line 5: token id 300"), "%s", ctx.msg);
    nl_tokenizer_close(t);
}
