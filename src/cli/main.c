/* main.c — the neuronlab command line: dispatches to the subcommands through one registry, and
 * prints every command's help from its options table (usage line, each option's meaning and
 * default: `neuronlab CMD --help` = `neuronlab help CMD`). Options every command accepts:
 * --quiet (no progress on stderr: ctx->progress = 0) and -h/--help.
 * Signals: SIGINT (Ctrl-C) and SIGTERM are handled alike. The first sets nl_interrupted: the
 * long loops of the library poll it and return NL_EINTR, the command keeps what was finished
 * (runs end 'interrupted') and exits 130; a second signal exits 130 at once.
 * Checked by tests/interrupt_cli.sh, sparsity_cli.sh, perturb_cli.sh and help_cli.sh. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "neuronlab/mpi.h"

extern const nl_command nl_cmd_info, nl_cmd_ppl, nl_cmd_record, nl_cmd_tokenize, nl_cmd_generate, nl_cmd_tokenizer_train, nl_cmd_train, nl_cmd_report, nl_cmd_perturb, nl_cmd_sparsity, nl_cmd_ability, nl_cmd_overlap, nl_cmd_prune, nl_cmd_runs, nl_cmd_moefy, nl_cmd_export, nl_cmd_experts, nl_cmd_moe_sweep, nl_cmd_moe_usage, nl_cmd_neurons;
extern const nl_command nl_cmd_lens, nl_cmd_attribute;

static const nl_command *commands[] = {&nl_cmd_info, &nl_cmd_ppl, &nl_cmd_record, &nl_cmd_tokenize, &nl_cmd_generate,
                                          &nl_cmd_tokenizer_train, &nl_cmd_train, &nl_cmd_report, &nl_cmd_perturb, &nl_cmd_sparsity, &nl_cmd_ability, &nl_cmd_overlap, &nl_cmd_prune, &nl_cmd_runs, &nl_cmd_moefy, &nl_cmd_export, &nl_cmd_experts, &nl_cmd_moe_sweep,
                                          &nl_cmd_moe_usage, &nl_cmd_neurons,
                                          &nl_cmd_lens, &nl_cmd_attribute};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const nl_command *running; /* the command being run, for the hints of nl_cli_fail */

/* Errors that an option of the command fixes: when the message holds `needle` and the running
 * command has `option`, the hint is added to the message. */
static const struct {
    const char *needle, *option, *hint;
} hints[] = {
    {"has no document labelled '", "--abilities", "use --abilities to choose labels that the data has"},
    {"has no documents labelled '", "--abilities", "use --abilities to choose labels that the data has"},
};

/* 1 when cmd's options table has option (as a name or an alias). */
static int has_option(const nl_command *cmd, const char *option) {
    const nl_cli_option *o = nl_cli_options(cmd);
    for (; o && o->name; o++) {
        const char *p = o->name;
        size_t n = strlen(option);
        while ((p = strstr(p, option))) {
            if ((p == o->name || p[-1] == ' ') && (p[n] == 0 || p[n] == ',')) return 1;
            p += n;
        }
    }
    return 0;
}

int nl_cli_fail(nl_ctx *ctx, nl_status st) {
    const char *hint = NULL;
    for (size_t i = 0; ctx->msg[0] && running && i < sizeof hints / sizeof hints[0]; i++)
        if (strstr(ctx->msg, hints[i].needle) && has_option(running, hints[i].option) && !strstr(ctx->msg, hints[i].hint))
            hint = hints[i].hint;
    if (hint) fprintf(stderr, "neuronlab: %s (%s)\n", ctx->msg, hint);
    else fprintf(stderr, "neuronlab: %s\n", ctx->msg[0] ? ctx->msg : nl_status_name(st));
    return 1;
}

int nl_cli_usage(const nl_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "neuronlab %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nusage: neuronlab %s %s\n", cmd->name, nl_cli_usage_line(cmd));
    va_end(ap);
    return 2;
}

const nl_cli_option *nl_cli_options(const nl_command *cmd) {
    return nl_cli_help_table(cmd->name);
}

/* The first name of an option row ("-o" of "-o, --output"), into buf. */
static const char *first_name(const nl_cli_option *o, char *buf, size_t n) {
    size_t k = strcspn(o->name, ",");
    snprintf(buf, n, "%.*s", (int)k, o->name);
    return buf;
}

const char *nl_cli_usage_line(const nl_command *cmd) {
    static char line[2048];
    const nl_cli_option *o = nl_cli_options(cmd);
    if (!o) return cmd->usage ? cmd->usage : "";
    line[0] = 0;
    size_t k = 0;
    for (; o->name; o++) {
        char name[64];
        first_name(o, name, sizeof name);
        const char *open = o->required ? "" : "[", *close = o->required ? "" : "]";
        k += (size_t)snprintf(line + k, k < sizeof line ? sizeof line - k : 0, "%s%s%s%s%s%s", k ? " " : "", open, name,
                              o->arg ? " " : "", o->arg ? o->arg : "", close);
        if (k >= sizeof line) break;
    }
    return line;
}

static void print_option(FILE *out, const char *name, const char *arg, const char *meaning, const char *dflt) {
    char left[128];
    snprintf(left, sizeof left, "%s%s%s", name, arg ? " " : "", arg ? arg : "");
    if (strlen(left) > 22) fprintf(out, "  %s\n  %-24s ", left, ""); /* at least two spaces before the meaning */
    else fprintf(out, "  %-24s ", left);
    fprintf(out, "%s", meaning);
    if (dflt) fprintf(out, " (default: %s)", dflt);
    fputc('\n', out);
}

void nl_cli_print_help(FILE *out, const nl_command *cmd) {
    fprintf(out, "usage: neuronlab %s %s\n\n%s\n", cmd->name, nl_cli_usage_line(cmd), cmd->help);
    const nl_cli_option *o = nl_cli_options(cmd);
    if (o && o->name) {
        fprintf(out, "\narguments and options:\n");
        for (; o->name; o++) print_option(out, o->name, o->arg, o->meaning, o->required ? NULL : o->dflt);
    }
    fprintf(out, "\nevery command:\n");
    print_option(out, "--quiet", NULL, "no progress on stderr (progress: a bar on a terminal, else a line every "
                                       "$NEURONLAB_PROGRESS_SECONDS seconds of a long run)", "progress on, 10 s");
    print_option(out, "-h, --help", NULL, "this help", NULL);
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

static void on_signal(int sig) { /* SIGINT or SIGTERM */
    (void)sig;
    if (nl_interrupted) _exit(130); /* the second signal: stop now */
    nl_interrupted = 1;
}

static void usage(FILE *out) {
    fprintf(out, "neuronlab %s — neuron-level analysis of transformer language models\n\nusage: neuronlab COMMAND [ARGS]\n\n",
            NL_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-8s %s\n           %s\n", commands[i]->name, nl_cli_usage_line(commands[i]), commands[i]->help);
    fprintf(out, "\nneuronlab COMMAND --help (or neuronlab help COMMAND) lists a command's options with their meaning and "
                 "default.\n");
}

static const nl_command *find(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(name, commands[i]->name)) return commands[i];
    return NULL;
}

/* OpenMP wait policy (bench/README.md "Threads under load"). libgomp reads it when it is
 * loaded, before main: by default a worker that waits for the next parallel region (or for
 * OpenBLAS's threads, which are the same pool) spins 300000 rounds first, which on a machine
 * shared with other busy processes takes the CPU from the thread that has the work (measured:
 * record 4x slower than with a short spin). Unless the user chose a policy (OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT), the program runs itself again once, at once, with GOMP_SPINCOUNT=1000
 * (tens of microseconds: back-to-back regions still find their workers awake). */
static void omp_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("GOMP_SPINCOUNT"); /* no /proc: run with libgomp's default */
}

int main(int argc, char **argv) {
    omp_wait_policy(argv);
    if (argc >= 3 && !strcmp(argv[1], "help")) {
        const nl_command *c = find(argv[2]);
        if (!c) {
            fprintf(stderr, "neuronlab: unknown command '%s'\n", argv[2]);
            usage(stderr);
            return 2;
        }
        nl_cli_print_help(stdout, c);
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("neuronlab %s\n", NL_VERSION); return 0; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN); /* past `ulimit -f` write() fails with EFBIG: a clean error, not a silent kill */
    const nl_command *c = find(argv[1]);
    if (c) {
        for (int a = 2; a < argc; a++)
            if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
                nl_cli_print_help(stdout, c);
                return 0;
            }
        nl_ctx ctx;
        nl_ctx_init(&ctx);
        /* --quiet, accepted by every command, is taken out here */
        int n = 2;
        for (int a = 2; a < argc; a++) {
            if (!strcmp(argv[a], "--quiet")) ctx.progress = 0;
            else argv[n++] = argv[a];
        }
        argv[n] = NULL;
        running = c;
        /* the MPI build: the commands that split work over ranks run under MPI (one rank
         * without mpirun); ranks > 0 are silent (mpi.h). The serial build: no-ops. */
        const int par = c == &nl_cmd_record || c == &nl_cmd_ppl || c == &nl_cmd_perturb || c == &nl_cmd_prune;
        if (par && nl_mpi_init(NULL, NULL) != 0) return 1;
        if (!nl_mpi_is_root()) ctx.progress = 0;
        return nl_mpi_finalize(c->run(&ctx, n - 1, argv + 1), &ctx);
    }
    fprintf(stderr, "neuronlab: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
