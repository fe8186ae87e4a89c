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

/* ---- what every command that runs a model over a dataset shares -------------------- */
#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"

/* MODEL DATA.jsonl and the forward-pass options: --batch N (tokens per forward call,
 * default 512), --ctx N (context, default the model's), --stride N (sliding-window step,
 * default ctx/2), --threads N (default all cores), --tokenizer PATH (for "text" and
 * "prompt"/"response" rows; default the model's own, nl_tokenizer_for_model).
 * Zero-initialise, parse, open, close. */
typedef struct {
    const char *model, *data, *tokenizer;
    nl_tokenizer *tok; /* owned after nl_cli_run_open; NULL when the model has none */
    long batch, ctx, stride, threads;
    nl_model *m;     /* owned after nl_cli_run_open */
    nl_dataset *ds;  /* owned */
    nl_forward *f;   /* owned */
} nl_cli_run;

#define NL_CLI_RUN_USAGE "MODEL DATA.jsonl [--batch N] [--ctx N] [--stride N] [--threads N] [--tokenizer PATH]"

/* Consumes argv[*i] when it is one of the options above or a positional argument.
 * Returns 1 when consumed, 0 when not, or a usage exit code (2) after printing it. */
int nl_cli_run_arg(const nl_command *cmd, nl_cli_run *r, int argc, char **argv, int *i);
/* After parsing: 0 when MODEL and DATA are there, else prints usage and returns 2. */
int nl_cli_run_check(const nl_command *cmd, const nl_cli_run *r);
/* Opens the model and dataset and creates the forward pass with the resolved context. */
nl_status nl_cli_run_open(nl_ctx *ctx, nl_cli_run *r);
void nl_cli_run_close(nl_cli_run *r);
