/* options.c — the option values and the options every analysis command shares (--db, --json,
 * --threads, --top, --scores, --seed; see nl_cli_common in cli.h), parsed in one place so
 * every command accepts the same spellings and gives the same usage errors.
 * Checked by tests/ability_cli.sh, sparsity_cli.sh, perturb_cli.sh and prune_cli.sh. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int nl_cli_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return 0;
    *out = (uint64_t)v;
    return 1;
}

int nl_cli_double(const char *s, double *out) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

int nl_cli_names(char *buf, const char **out, int max) {
    int n = 0;
    for (char *p = buf;;) {
        size_t len = strcspn(p, ",");
        if (!len || n == max) return -1;
        out[n++] = p;
        if (!p[len]) return n;
        p[len] = 0;
        p += len + 1;
    }
}

int nl_cli_common_arg(const nl_command *cmd, nl_ctx *ctx, unsigned which, nl_cli_common *c, int argc, char **argv, int *i) {
    const char *v;
    int k;
    if ((which & NL_CLI_JSON) && !strcmp(argv[*i], "--json")) {
        c->json = 1;
        return 1;
    }
    if ((which & NL_CLI_DB) && (k = nl_cli_opt(argc, argv, i, "--db", &v))) {
        if (k < 0 || !*v) return nl_cli_usage(cmd, "--db needs a path");
        c->db = v;
        return 1;
    }
    if ((which & NL_CLI_THREADS) && (k = nl_cli_opt(argc, argv, i, "--threads", &v))) {
        long n;
        if (k < 0 || !nl_cli_int(v, 1, 1024, &n)) return nl_cli_usage(cmd, "--threads needs a count in 1..1024");
        ctx->n_threads = (int)n;
        return 1;
    }
    if ((which & NL_CLI_TOP) && (k = nl_cli_opt(argc, argv, i, "--top", &v))) {
        double t;
        if (k < 0 || !nl_cli_double(v, &t) || !(t > 0 && t <= 1))
            return nl_cli_usage(cmd, "--top: '%s' is not a fraction in (0, 1]", k > 0 ? v : "");
        c->top = t;
        return 1;
    }
    if ((which & NL_CLI_SCORES) && (k = nl_cli_opt(argc, argv, i, "--scores", &v))) {
        long r;
        if (k > 0 && !strcmp(v, "latest")) c->scores = -1; /* nl_ability_sets_load: the latest complete ability run */
        else if (k < 0 || !nl_cli_int(v, 1, 0x7fffffffL, &r))
            return nl_cli_usage(cmd, "--scores needs the id of an ability run (or latest)");
        else c->scores = r;
        return 1;
    }
    if ((which & NL_CLI_SEED) && (k = nl_cli_opt(argc, argv, i, "--seed", &v))) {
        if (k < 0 || !nl_cli_u64(v, &c->seed)) return nl_cli_usage(cmd, "--seed needs an integer in 0..2^64-1");
        c->have_seed = 1;
        return 1;
    }
    return 0;
}

int nl_cli_positional(const nl_command *cmd, char **argv, int i, const char **slot) {
    if (argv[i][0] == '-' && argv[i][1]) return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
    if (!slot || *slot) return nl_cli_usage(cmd, "unexpected argument '%s'", argv[i]);
    *slot = argv[i];
    return 1;
}

int nl_cli_finish(nl_ctx *ctx, nl_status st, const char *interrupted_fmt, ...) {
    if (st == NL_OK) return 0;
    if (st != NL_EINTR) return nl_cli_fail(ctx, st);
    if (interrupted_fmt) {
        va_list ap;
        va_start(ap, interrupted_fmt);
        fputs("neuronlab: ", stderr);
        vfprintf(stderr, interrupted_fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    return 130;
}

int nl_cli_json_num(const char *fmt, double v) {
    if (isfinite(v)) {
        printf(fmt, v);
        return 0;
    }
    fputs("null", stdout);
    return 1;
}
