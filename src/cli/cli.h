/* cli.h — the command registry and small helpers shared by the subcommands.
 * Each subcommand lives in its own file cmd_<name>.c and exports one nl_command.
 * Only this directory turns statuses into exit codes and prints to stdout/stderr. */
#ifndef NEURONLAB_CLI_H
#define NEURONLAB_CLI_H

#include <stdio.h>

#include "neuronlab/common.h"

/* One row of a command's options table: what `neuronlab CMD --help` prints and what its usage
 * line is built from (main.c). A table ends with a row whose name is NULL. */
typedef struct {
    const char *name;    /* "--top"; aliases "-o, --output" (the first is the usage line's); a positional "MODEL" */
    const char *arg;     /* the value's placeholder ("F", "LIST"), NULL for a flag or a positional */
    int required;        /* 1: in the usage line without [ ] */
    const char *meaning; /* one line */
    const char *dflt;    /* the default as the user would write or read it; NULL: none (flags: off) */
} nl_cli_option;

typedef struct {
    const char *name;
    const char *usage; /* one line: arguments; NULL when built from options (nl_cli_usage_line) */
    const char *help;  /* one line: what it does */
    int (*run)(nl_ctx *ctx, int argc, char **argv); /* argv[0] is the command name; returns exit code */
} nl_command;

/* The options table of every command, by name (help_tables.c): a command file defines its own
 * as `const nl_cli_option nl_cli_opts_<name>[]` beside its nl_command, or help_tables.c holds
 * it. NULL for an unknown name. */
const nl_cli_option *nl_cli_help_table(const char *name);
/* nl_cli_help_table(cmd->name). */
const nl_cli_option *nl_cli_options(const nl_command *cmd);
/* The usage line of cmd (after "neuronlab CMD "), built from its options table: positionals and
 * required options as they are, the rest in [ ]. Static buffer. */
const char *nl_cli_usage_line(const nl_command *cmd);
/* `neuronlab CMD --help` and `neuronlab help CMD`: usage line, what it does, every option with
 * its meaning and default, then the options every command accepts (--quiet, --help). */
void nl_cli_print_help(FILE *out, const nl_command *cmd);

/* The options every command that runs a model over a dataset shares (run.c parses them). */
#define NL_CLI_RUN_OPTIONS                                                                                                    \
    {"MODEL", NULL, 1, "a Hugging Face folder (config.json + *.safetensors), a GGUF file or a llama2.c .bin checkpoint", NULL}, \
        {"DATA.jsonl", NULL, 1, "the dataset: {\"tokens\"}, {\"text\"} or {\"prompt\",\"response\"} rows, each with an optional \"label\"", \
         NULL},                                                                                                           \
        {"--batch", "N", 0, "tokens per forward call (results do not depend on it)", "512"},                               \
        {"--ctx", "N", 0, "context length; longer documents are scored in sliding windows", "the model's context"},       \
        {"--stride", "N", 0, "step between sliding windows", "ctx/2"},                                                    \
        {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},                                                   \
        {"--pipeline", "P", 0, "MPI build, ppl/perturb/prune (record refuses it): P ranks (mpirun -np P) each hold a "   \
         "block of layers", "off: ranks split the documents"},                                                          \
        {"--tokenizer", "PATH", 0, "tokenizer for \"text\" and \"prompt\"/\"response\" rows", "the model's own"},         \
        {"--hidden-act", "NAME", 0, "FFN activation of a GGUF model (llama.cpp's files do not store it)",                  \
         "config.json beside the file, else its neuronlab.hidden_act, else silu"},                                        \
        {"--compute", "f32|bf16", 0, "number format of the matrix products: bf16 (AVX512-BF16, f32 accumulation) is "     \
         "faster and approximate (perplexity within ~1e-3 relative); activations stay f32", "f32"}

/* Prints "neuronlab: <ctx->msg>" (or the status name) to stderr; returns 1. When the message is
 * one an option of the running command fixes (a label the data does not have → --abilities),
 * the message ends with a hint naming that option. */
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
/* A JSON number with printf format fmt ("%.6f"), or null when v is not finite (JSON has no
 * NaN/Infinity); returns 1 when it wrote null, so a command can warn once. */
int nl_cli_json_num(const char *fmt, double v);

/* Option values (options.c): the whole string must be the number. nl_cli_u64: a decimal in
 * 0..2^64-1 (no sign, range checked); nl_cli_double: a finite number. 1 on success, else 0. */
int nl_cli_u64(const char *s, uint64_t *out);
int nl_cli_double(const char *s, double *out);

/* "a,b,c" → out[0..n) pointing into buf, which is split in place (commas become NULs).
 * Returns n, or -1 for an empty list, an empty name or more than max names. */
int nl_cli_names(char *buf, const char **out, int max);
/* "0,2,5-7" → the sorted distinct layers (each in 0..L-1) in out (L ints); returns the count, or
 * -1 for a malformed list or a layer out of range. */
int nl_cli_layer_list(const char *s, int L, int *out);

/* ---- the options the analysis commands share (options.c) ---------------------------- */

enum {
    NL_CLI_DB = 1,      /* --db PATH (non-empty) */
    NL_CLI_JSON = 2,    /* --json */
    NL_CLI_THREADS = 4, /* --threads N (1..1024) → ctx->n_threads (the library applies it) */
    NL_CLI_TOP = 8,     /* --top F, F in (0, 1] */
    NL_CLI_SCORES = 16, /* --scores RUN | latest (an ability run) */
    NL_CLI_SEED = 32,   /* --seed N, N in 0..2^64-1 */
};

/* Values of the shared options; zero-initialise (0 / NULL = not given). */
typedef struct {
    const char *db;
    int json;
    double top;     /* 0 = not given */
    int64_t scores; /* > 0 a run id, -1 = latest, 0 = not given */
    uint64_t seed;
    int have_seed;
} nl_cli_common;

/* Consumes argv[*i] when it is one of the options selected by `which` (NL_CLI_* bits).
 * Returns 1 when consumed, 0 when not, or 2 after printing a usage error. */
int nl_cli_common_arg(const nl_command *cmd, nl_ctx *ctx, unsigned which, nl_cli_common *c, int argc, char **argv, int *i);
/* A positional argument argv[i] into *slot when it is still NULL: returns 1; an unknown
 * option ("-x…") or a surplus argument prints the usage error and returns 2. */
int nl_cli_positional(const nl_command *cmd, char **argv, int i, const char **slot);
/* The exit code of a command's final status: 0 for NL_OK; for NL_EINTR prints
 * "neuronlab: <interrupted_fmt…>" (when not NULL) to stderr and returns 130; otherwise
 * nl_cli_fail. */
int nl_cli_finish(nl_ctx *ctx, nl_status st, const char *interrupted_fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- what every command that runs a model over a dataset shares (run.c) ------------- */
#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"

/* MODEL DATA.jsonl and the forward-pass options: --batch N (tokens per forward call,
 * default 512), --ctx N (context, default the model's), --stride N (sliding-window step,
 * default ctx/2), --threads N (default all cores), --tokenizer PATH (for "text" and
 * "prompt"/"response" rows; default the model's own, nl_tokenizer_for_model), --hidden-act
 * NAME (GGUF files, which do not store it; nl_model_opts), --compute f32|bf16 (the matrix
 * products' number format, nl_forward_set_compute; without AVX512-BF16 one line on stderr and f32).
 * Zero-initialise, parse, open, close. */
typedef struct {
    const char *model, *data, *tokenizer;
    const char *hidden_act; /* --hidden-act NAME: the FFN activation of a GGUF file (nl_model_opts) */
    nl_tokenizer *tok; /* owned after nl_cli_run_open; NULL when the model has none */
    long batch, ctx, stride, threads;
    long pipeline;   /* --pipeline P (mpi.h): 0 = not given */
    nl_compute compute; /* --compute f32|bf16 (nl_forward_set_compute) */
    nl_model *m;     /* owned after nl_cli_run_open */
    nl_dataset *ds;  /* owned */
    nl_forward *f;   /* owned */
} nl_cli_run;

#define NL_CLI_RUN_USAGE "MODEL DATA.jsonl [--batch N] [--ctx N] [--stride N] [--threads N] [--pipeline P] [--tokenizer PATH] [--compute f32|bf16]"

/* Consumes argv[*i] when it is one of the options above or a positional argument.
 * Returns 1 when consumed, 0 when not, or a usage exit code (2) after printing it. */
int nl_cli_run_arg(const nl_command *cmd, nl_cli_run *r, int argc, char **argv, int *i);
/* After parsing: 0 when MODEL and DATA are there, else prints usage and returns 2. */
int nl_cli_run_check(const nl_command *cmd, const nl_cli_run *r);
/* Opens the model and dataset and creates the forward pass with the resolved context;
 * --threads goes to ctx->n_threads and is applied (nl_ctx_apply_threads). */
nl_status nl_cli_run_open(nl_ctx *ctx, nl_cli_run *r);
void nl_cli_run_close(nl_cli_run *r);

/* ---- MoE options of the forward commands (options.c parses, moe_run.c opens) ---------- */
#include "neuronlab/moe.h"

/* --moe MOE_DIR --k K|P% --fill zero|mean --router sim|oracle|mlp: the experts of a moefy folder
 * replace the FFNs of its layers. Zero-initialise; the defaults are K = 25 %, fill zero, router
 * sim. Any of --k/--fill/--router without --moe is a usage error (nl_cli_moe_check). */
typedef struct {
    const char *dir;       /* NULL: dense model */
    long k;                /* K experts, 0 = from k_percent */
    double k_percent;      /* (0, 100]; used when k == 0 (default 25) */
    int fill, router;      /* nl_moe_fill, nl_moe_router */
    int given;             /* any of --k/--fill/--router was given */
    nl_moe *moe;           /* owned after nl_cli_moe_open */
    nl_moe_ffn *ffn;       /* owned after nl_cli_moe_open, attached to the forward pass */
    int K;                 /* resolved */
} nl_cli_moe;

/* The rows of the options tables for these options. */
#define NL_CLI_MOE_OPTIONS                                                                                                  \
    {"--moe", "MOE_DIR", 0, "replace the FFNs of the folder's layers by its experts (a `neuronlab moefy` folder)", "dense"}, \
        {"--k", "K|P%", 0, "experts per token with --moe: a count or a percentage of the folder's experts", "25%"},    \
        {"--fill", "zero|mean", 0, "with --moe: unselected experts contribute 0 or their neurons' mean (static vectors)", "zero"}, \
        {"--router", "sim|oracle|mlp", 0, "with --moe: centroid similarity, the oracle top-K of the true expert scores, or the trained MLP (moefy --router mlp)", "sim"}

/* Consumes argv[*i] when it is one of the options above: 1 consumed, 0 not, 2 usage error. */
int nl_cli_moe_arg(const nl_command *cmd, nl_cli_moe *o, int argc, char **argv, int *i);
/* 0, or prints the usage error (an option without --moe) and returns 2. */
int nl_cli_moe_check(const nl_command *cmd, const nl_cli_moe *o);
/* With --moe: opens the folder against r's model (checksum), resolves K (outside 1..E is an error
 * naming the folder), builds the expert FFN for f's batch and attaches it; recall = 1 also
 * measures router recall. A no-op without --moe. */
nl_status nl_cli_moe_open(nl_ctx *ctx, nl_cli_moe *o, nl_model *m, nl_forward *f, int recall);
void nl_cli_moe_close(nl_cli_moe *o, nl_forward *f);
/* Text summary of an MoE run: folder, experts, K, fill, router, analytic and counted FFN FLOPs
 * fractions of the whole model, router recall. */
void nl_cli_moe_print(FILE *out, const nl_cli_moe *o, const nl_config *c);
/* The JSON object {"dir","experts","shared","layers","k","router","fill"} of an opened --moe for
 * a run's params (analyses' opts.moe_json), into buf (n bytes); NULL without --moe. */
const char *nl_cli_moe_params(const nl_cli_moe *o, char *buf, size_t n);

#endif
