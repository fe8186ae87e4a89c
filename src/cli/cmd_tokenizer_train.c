/* cmd_tokenizer_train.c — `neuronlab tokenizer-train CORPUS.jsonl... --vocab N -o tokenizer.json
 * [--min-frequency N] [--allow-smaller] [--threads N]`: trains a byte-level BPE tokenizer on the
 * texts of JSONL files ({"text"} rows; {"prompt","response"} rows as prompt + response) and writes
 * a Hugging Face tokenizer.json that `tokenize`, `--tokenizer`, transformers.js and Hugging Face
 * tokenizers load: <|bos|> = 0, <|eos|> = 1, the 256 bytes = 2…257, then the merges in order;
 * Llama 3's pre-tokenizer; <|bos|> added by the template (layout and rules: bpe_train.h).
 *   --vocab N          total ids, specials and bytes included (≥ 258)
 *   --min-frequency N  never merge a pair seen fewer than N times (default 2)
 *   --allow-smaller    when N is not reachable (pairs run out, or all are rarer than
 *                      --min-frequency), write the smaller vocabulary instead of failing
 *   --threads N        reading threads (default all cores)
 * stderr gets a progress bar on a TTY and one summary line (texts, bytes, distinct words,
 * merges, seconds). Errors are one line naming the file (and line), exit 1; usage errors exit 2.
 * The output is written to a temporary file and renamed: never left half-written.
 * Checked by tests/test_bpe_train.c and tests/bpe_train_conformance.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "neuronlab/bpe_train.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_tokenizer_train[] = {
    {"CORPUS.jsonl...", NULL, 1, "training texts: {\"text\"} rows ({\"prompt\",\"response\"} rows as prompt + response)", NULL},
    {"--vocab", "N", 1, "total ids, specials and bytes included (>= 258)", NULL},
    {"-o, --output", "tokenizer.json", 1, "where to write the Hugging Face tokenizer.json", NULL},
    {"--min-frequency", "N", 0, "never merge a pair seen fewer than N times", "2"},
    {"--allow-smaller", NULL, 0, "when N cannot be reached, write the smaller vocabulary instead of failing", NULL},
    {"--threads", "N", 0, "reading threads", "all cores"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_tokenizer_train = {
    "tokenizer-train",
    NULL,
    "train a byte-level BPE tokenizer (Hugging Face tokenizer.json) on the texts of JSONL files", run};

/* The output can be created: its folder exists and it is not a folder itself. */
static nl_status check_output(nl_ctx *ctx, const char *out) {
    struct stat sb;
    if (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", out, strerror(EISDIR));
    size_t n = strlen(out);
    char *dir = malloc(n + 2);
    if (!dir) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    memcpy(dir, out, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int e = 0;
    if (stat(dir, &sb) != 0) e = errno;
    else if (!S_ISDIR(sb.st_mode)) e = ENOTDIR;
    else if (access(dir, W_OK | X_OK) != 0) e = errno;
    free(dir);
    if (e) return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", out, strerror(e));
    return NL_OK;
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_tokenizer_train;
    const char *out = NULL, *val;
    const char **corpus = calloc((size_t)argc, sizeof *corpus);
    int n_corpus = 0, allow_smaller = 0;
    long vocab = -1, minf = 2, threads = 0;
    if (!corpus) { nl_errorf(ctx, NL_ENOMEM, "out of memory"); return nl_cli_fail(ctx, NL_ENOMEM); }
    for (int i = 1; i < argc; i++) {
        int k;
        if (!strcmp(argv[i], "--allow-smaller")) allow_smaller = 1;
        else if ((k = nl_cli_opt(argc, argv, &i, "--vocab", &val)) != 0) {
            if (k < 0 || !nl_cli_int(val, 1, 1L << 30, &vocab)) { free(corpus); return nl_cli_usage(cmd, "--vocab needs a vocabulary size (258 or more)"); }
        } else if ((k = nl_cli_opt(argc, argv, &i, "-o", &val)) != 0 || (k = nl_cli_opt(argc, argv, &i, "--output", &val)) != 0) {
            if (k < 0 || !*val) { free(corpus); return nl_cli_usage(cmd, "-o needs the output path"); }
            out = val;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--min-frequency", &val)) != 0) {
            if (k < 0 || !nl_cli_int(val, 0, 0x7fffffffL, &minf)) {
                free(corpus);
                return nl_cli_usage(cmd, "--min-frequency needs a count (0 or 1 = any pair)");
            }
        } else if ((k = nl_cli_opt(argc, argv, &i, "--threads", &val)) != 0) {
            if (k < 0 || !nl_cli_int(val, 0, 4096, &threads)) { free(corpus); return nl_cli_usage(cmd, "--threads needs a count (0 = all cores)"); }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            free(corpus);
            return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
        } else corpus[n_corpus++] = argv[i];
    }
    int rc = 0;
    if (!n_corpus) rc = nl_cli_usage(cmd, "missing CORPUS.jsonl");
    else if (vocab < 0) rc = nl_cli_usage(cmd, "missing --vocab N");
    else if (!out) rc = nl_cli_usage(cmd, "missing -o tokenizer.json");
    if (rc) { free(corpus); return rc; }
    ctx->n_threads = (int)threads;
    nl_bpe_trainer *t = NULL;
    nl_bpe_train_opts opts = {.vocab_size = (int)vocab, .min_frequency = minf, .allow_smaller = allow_smaller};
    nl_status st = NL_OK;
    if (vocab < NL_BPE_FIRST_MERGE) /* before reading: the library says why */
        st = nl_errorf(ctx, NL_EINVAL, "vocabulary %ld is too small: the 2 special tokens and the 256 bytes need %d ids", vocab,
                       NL_BPE_FIRST_MERGE);
    else if (vocab > NL_BPE_MAX_VOCAB)
        st = nl_errorf(ctx, NL_EINVAL, "vocabulary %ld is too large (at most %d)", vocab, NL_BPE_MAX_VOCAB);
    if (st == NL_OK) st = check_output(ctx, out);
    if (st == NL_OK) st = nl_bpe_trainer_create(ctx, &t);
    for (int i = 0; st == NL_OK && i < n_corpus; i++) st = nl_bpe_trainer_add_jsonl(ctx, t, corpus[i]);
    if (st == NL_OK) st = nl_bpe_trainer_train(ctx, t, &opts);
    if (st == NL_OK) st = nl_bpe_trainer_save(ctx, t, out);
    if (st == NL_OK) {
        const nl_bpe_train_stats *s = nl_bpe_trainer_stats(t);
        if (s->vocab_size < vocab)
            fprintf(stderr, "tokenizer-train: note: vocabulary %d instead of %ld: %s\n", s->vocab_size, vocab,
                    s->stop == NL_BPE_STOP_MIN_FREQUENCY ? "no pair left that occurs --min-frequency times"
                                                         : "every word is a single token");
        char skipped[64] = "";
        if (s->n_skipped) snprintf(skipped, sizeof skipped, ", %d pairs skipped (token already there)", s->n_skipped);
        fprintf(stderr,
                "tokenizer-train: %lld texts, %.1f MB, %lld words (%lld distinct); %d merges (last seen %lld times%s), "
                "vocabulary %d; read %.1f s, merges %.1f s; wrote '%s'\n",
                (long long)s->n_texts, s->n_bytes / 1e6, (long long)s->n_pretokens, (long long)s->n_words, s->n_merges,
                (long long)s->last_count, skipped, s->vocab_size, s->sec_read, s->sec_train, out);
    }
    nl_bpe_trainer_destroy(t);
    free(corpus);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    return 0;
}
