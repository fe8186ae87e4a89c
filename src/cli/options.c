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

int nl_cli_moe_arg(const nl_command *cmd, nl_cli_moe *o, int argc, char **argv, int *i) {
    const char *v;
    int k;
    if ((k = nl_cli_opt(argc, argv, i, "--moe", &v))) {
        if (k < 0 || !*v) return nl_cli_usage(cmd, "--moe needs an MoE folder (made by neuronlab moefy)");
        o->dir = v;
        return 1;
    }
    if ((k = nl_cli_opt(argc, argv, i, "--k", &v))) {
        size_t n = k > 0 ? strlen(v) : 0;
        o->given = 1;
        if (n > 1 && v[n - 1] == '%') {
            char buf[64];
            double p;
            snprintf(buf, sizeof buf, "%.*s", (int)(n - 1), v);
            if (n - 1 >= sizeof buf || !nl_cli_double(buf, &p) || !(p > 0 && p <= 100))
                return nl_cli_usage(cmd, "--k: '%s' is not a percentage in (0, 100]", v);
            o->k = 0, o->k_percent = p;
            return 1;
        }
        long kk;
        if (k < 0 || !nl_cli_int(v, 1, 1 << 30, &kk))
            return nl_cli_usage(cmd, "--k needs a number of experts (at least 1) or a percentage like 25%%");
        o->k = kk;
        return 1;
    }
    if ((k = nl_cli_opt(argc, argv, i, "--fill", &v))) {
        o->given = 1;
        if (k < 0 || nl_moe_fill_parse(v) < 0) return nl_cli_usage(cmd, "--fill must be zero or mean");
        o->fill = nl_moe_fill_parse(v);
        return 1;
    }
    if ((k = nl_cli_opt(argc, argv, i, "--router", &v))) {
        o->given = 1;
        if (k < 0 || nl_moe_router_parse(v) < 0) return nl_cli_usage(cmd, "--router must be sim, oracle or mlp");
        o->router = nl_moe_router_parse(v);
        return 1;
    }
    return 0;
}

int nl_cli_moe_check(const nl_command *cmd, const nl_cli_moe *o) {
    if (o->given && !o->dir) return nl_cli_usage(cmd, "--k, --fill and --router need --moe MOE_DIR");
    return 0;
}

/* "0,2,5-7" → sorted distinct layers (each < L) in out; count, or -1 when malformed or out of range. */
int nl_cli_layer_list(const char *s, int L, int *out) {
    char *flags = calloc((size_t)(L > 0 ? L : 1), 1);
    if (!flags) return -1;
    const char *p = s;
    int n = 0;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p || *p == '-' || *p == '+') { free(flags); return -1; }
        p = end;
        if (*p == '-') {
            b = strtol(++p, &end, 10);
            if (end == p) { free(flags); return -1; }
            p = end;
        }
        if (a < 0 || b >= L || a > b) { free(flags); return -1; }
        for (long i = a; i <= b; i++) flags[i] = 1;
        if (*p == ',') { if (!*++p) { free(flags); return -1; } }
        else if (*p) { free(flags); return -1; }
    }
    for (int i = 0; i < L; i++)
        if (flags[i]) out[n++] = i;
    free(flags);
    return n;
}
