/* main.c — the neuronlab command line: dispatches to the subcommands through one registry. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

extern const nl_command nl_cmd_info, nl_cmd_ppl, nl_cmd_record, nl_cmd_tokenize, nl_cmd_generate, nl_cmd_tokenizer_train, nl_cmd_train, nl_cmd_report, nl_cmd_perturb, nl_cmd_sparsity, nl_cmd_ability, nl_cmd_overlap, nl_cmd_prune, nl_cmd_runs;

static const nl_command *commands[] = {&nl_cmd_info, &nl_cmd_ppl, &nl_cmd_record, &nl_cmd_tokenize, &nl_cmd_generate,
                                          &nl_cmd_tokenizer_train, &nl_cmd_train, &nl_cmd_report, &nl_cmd_perturb, &nl_cmd_sparsity, &nl_cmd_ability, &nl_cmd_overlap, &nl_cmd_prune, &nl_cmd_runs};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

int nl_cli_fail(nl_ctx *ctx, nl_status st) {
    fprintf(stderr, "neuronlab: %s\n", ctx->msg[0] ? ctx->msg : nl_status_name(st));
    return 1;
}

int nl_cli_usage(const nl_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "neuronlab %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nusage: neuronlab %s %s\n", cmd->name, cmd->usage);
    va_end(ap);
    return 2;
}

int nl_cli_opt(int argc, char **argv, int *i, const char *name, const char **val) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') { *val = a + n + 1; return 1; }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) return -1;
    *val = argv[++*i];
    return 1;
}

int nl_cli_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

void nl_cli_json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void on_sigint(int sig) {
    (void)sig;
    if (nl_interrupted) _exit(130); /* second Ctrl-C: stop now */
    nl_interrupted = 1;
}

static void usage(FILE *out) {
    fprintf(out, "neuronlab %s — neuron-level analysis of transformer language models\n\nusage: neuronlab COMMAND [ARGS]\n\n",
            NL_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n           %s\n", commands[i]->name, commands[i]->usage, commands[i]->help);
    fprintf(out, "\nneuronlab COMMAND --help shows a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("neuronlab %s\n", NL_VERSION); return 0; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN); /* past `ulimit -f` write() fails with EFBIG: a clean error, not a silent kill */
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i]->name) != 0) continue;
        for (int a = 2; a < argc; a++)
            if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
                printf("usage: neuronlab %s %s\n%s\n", commands[i]->name, commands[i]->usage, commands[i]->help);
                return 0;
            }
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        return commands[i]->run(&ctx, argc - 1, argv + 1);
    }
    fprintf(stderr, "neuronlab: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
