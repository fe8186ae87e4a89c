/* test_dataset.c — JSONL loading: rows, labels, prompt_len, and every bad-row message. */
#include "neuronlab/dataset.h"
#include "testutil.h"

static char dir[] = "/tmp/nl_dataset_XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    if (dir[strlen(dir) - 1] == 'X') cr_assert(mkdtemp(dir));
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
