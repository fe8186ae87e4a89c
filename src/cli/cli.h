/* cli.h — the command registry and small helpers shared by the subcommands.
 * Each subcommand lives in its own file cmd_<name>.c and exports one nl_command.
 * Only this directory turns statuses into exit codes and prints to stdout/stderr. */
#ifndef NEURONLAB_CLI_H
#define NEURONLAB_CLI_H

#include "neuronlab/common.h"

typedef struct {
    const char *name;
    const char *usage; /* one line: arguments */
    const char *help;  /* one line: what it does */
    int (*run)(nl_ctx *ctx, int argc, char **argv); /* argv[0] is the command name; returns exit code */
} nl_command;

/* Prints "neuronlab: <ctx->msg>" (or the status name) to stderr; returns 1. */
int nl_cli_fail(nl_ctx *ctx, nl_status st);
/* Prints "neuronlab CMD: msg" for a usage problem; returns 2. */
int nl_cli_usage(const nl_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option parsing: returns 1 and sets *val when argv[*i] is `name VALUE` or `name=VALUE`
 * (advancing *i); 0 when it is another argument; -1 when VALUE is missing. */
int nl_cli_opt(int argc, char **argv, int *i, const char *name, const char **val);
/* Parses a positive int option value; returns 0 on error. */
int nl_cli_int(const char *s, long lo, long hi, long *out);

/* JSON string escaping to stdout. */
void nl_cli_json_str(const char *s);

#endif
