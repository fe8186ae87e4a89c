/* help_tables.c — every command's options table (name, argument, meaning, default) by command
 * name, for `neuronlab CMD --help` and the usage lines (main.c). Most command files define their
 * own (nl_cli_opts_<name>); the tables of ability, prune, perturb, overlap and record are here.
 * A table lists every option the command's parser accepts; tests/help_cli.sh checks that
 * against the cmd_*.c sources. */
#include <string.h>

#include "cli/cli.h"

static const nl_cli_option ability[] = {
    {"acts.h5", NULL, 1, "the activation file with labelled documents (neuronlab record; --pool makes it faster)", NULL},
    {"--db", "results.db", 1, "the results database (created when missing)", NULL},
    {"--method", "ap|predictivity", 0, "ap: average precision of the per-document mean |a|; predictivity: balanced accuracy of a > mean",
     "ap"},
    {"--symmetric", NULL, 0, "score max(S(y), S(1-y)): a neuron that marks \"not this ability\" counts too", NULL},
    {"--top", "F", 0, "fraction of neurons in each ability's top set, in (0, 1]", "0.05"},
    {"--global", NULL, 0, "choose the top set over all layers instead of per layer", NULL},
    {"--exclude-resident", NULL, 0, "leave out resident neurons (of a complete sparsity run of the same file), keeping the set size",
     NULL},
    {"--resident-run", "N", 0, "the sparsity run whose resident neurons --exclude-resident leaves out", "the latest of the file"},
    {"--abilities", "a,b,...", 0, "the labels to score (each must label documents of the file)", "every non-empty label"},
    {"--split", "F", 0,
     "select neurons on this fraction of each label's documents (deterministic by the seed); prune evaluates on the rest",
     "no split (every document)"},
    {"--seed", "N", 0, "seed of the shuffled-label baseline, the split and the tie-break hash", "0"},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {"--json", NULL, 0, "print the summary as JSON", NULL},
    {NULL, NULL, 0, NULL, NULL}};

static const nl_cli_option prune[] = {
    NL_CLI_RUN_OPTIONS,
    {"--db", "results.db", 1, "the results database with the ability run", NULL},
    {"--scores", "RUN|latest", 0, "the ability run whose top sets are pruned (or --neurons)", "none: give --scores or --neurons"},
    {"--neurons", "FILE", 0, "prune your own neurons: CSV layer,neuron[,set] or JSON [{\"layer\":L,\"neuron\":I,\"set\":S}]",
     "the --scores run's top sets"},
    {"--eval", "FILE", 0, "evaluate on this JSONL instead of DATA's held-out documents", "the held-out half of a split run, else DATA"},
    {"--top", "F", 0, "re-choose the top sets from the run's scores at this fraction, in (0, 1]", "the run's own"},
    {"--seeds", "N", 0, "same-size random control sets per pruned ability", "3"},
    {"--abilities", "a,b,...", 0, "the abilities to prune (labels of the run that DATA has)", "every ability of the run"},
    {"--json", NULL, 0, "print the matrix as JSON", NULL},
    NL_CLI_MOE_OPTIONS,
    {"--experts", "SPEC", 0, "mixture-of-experts models: remove experts instead of neurons (router choice excluded, the token "
                             "takes its next-best expert): all, a list like 1:3,1:shared (each in turn), or top:ABILITY[:N] (the N "
                             "best experts per layer of the experts run --scores RUN|latest); table expert_prune", "neurons"},
    {"--seed", "S", 0, "with --experts: seed of the random-expert control", "0"},
    {NULL, NULL, 0, NULL, NULL}};

static const nl_cli_option perturb[] = {
    NL_CLI_RUN_OPTIONS,
    {"--metric, --metrics", "LIST", 0, "indicators of the masked neurons: value |a|, norm |a|*||W_out[:,i]||, random (control)",
     "value,norm,random"},
    {"--ratios", "LIST", 0, "mask ratios in [0, 1): floor(ratio x d_ff) neurons zeroed per token and layer", "0,0.1,...,0.9"},
    {"--seed", "N", 0, "seed of the random control's masks", "0"},
    {"--layers", "LIST", 0, "mask only these layers, like 0,2,5-7", "every layer"},
    {"--db", "results.db", 0, "store a run in this results database", "none (print only)"},
    {"--json", NULL, 0, "print the cells as JSON", NULL},
    NL_CLI_MOE_OPTIONS,
    {NULL, NULL, 0, NULL, NULL}};

static const nl_cli_option overlap[] = {
    {"--db", "results.db", 1, "the results database with the ability run", NULL},
    {"--scores", "RUN|latest", 1, "the ability run whose top sets are compared", NULL},
    {"--top", "F", 0, "re-choose the top sets at this fraction, in (0, 1]", "the run's own"},
    {"--json", NULL, 0, "print the pairs as JSON", NULL},
    {NULL, NULL, 0, NULL, NULL}};

static const nl_cli_option record[] = {
    NL_CLI_RUN_OPTIONS,
    {"-o, --output", "acts.h5", 1, "the HDF5 activation file to write (optional with --imatrix)", NULL},
    {"--imatrix", "OUT.gguf|OUT.dat", 0, "also write llama.cpp's importance matrix (attn_q/k/v/output, ffn_gate/up/down inputs' sums of squares "
                                        "and counts) from the same pass: GGUF, or the legacy format for a name ending in .dat", "none"},
    {"--force", NULL, 0, "replace an existing output file (never one of the command's inputs)", "refuse"},
    {"--resume", NULL, 0, "continue a cut-short file (same model, dataset, layers, dtype, pooling) to the content of an uninterrupted run", NULL},
    {"--layers", "LIST", 0, "layers to record, like 0,2,5-7", "every layer"},
    {"--hook", "LIST", 0, "what to store per token and layer, a comma list of ffn_act (neuron activations [N, d_ff]), resid "
                        "(residual stream after the block), attn_out (attention output), ffn_in (normalised FFN input), each "
                        "[N, d_model]; sparsity needs ffn_act stored, --pool is computed from the activations either way", "ffn_act"},
    {"--dtype", "f32|f16", 0, "stored type of ffn_act and the --hook datasets", "f32"},
    {"--attn", "LIST", 0, "also store these layers' attention probabilities, /attn/layer_{l}/doc_{d} f32 [heads, n, n] "
                        "(every document within --ctx; not with --stats or --resume)", "none"},
    {"--pool", NULL, 0, "also store each document's mean |a| over its prompt tokens (/pooled, for ability)", NULL},
    {"--stats", NULL, 0, "write a streaming summary (README \"Streaming summaries\") instead of the per-token dump", NULL},
    {"--top-k", "K", 0, "with --stats: top-activating tokens kept per neuron, 1..1024", "20"},
    {"--db", "results.db", 0, "register the run in a results database", "none"},
    NL_CLI_MOE_OPTIONS,
    {NULL, NULL, 0, NULL, NULL}};

extern const nl_cli_option nl_cli_opts_info[], nl_cli_opts_ppl[], nl_cli_opts_generate[], nl_cli_opts_train[],
    nl_cli_opts_tokenizer_train[], nl_cli_opts_tokenize[], nl_cli_opts_runs[], nl_cli_opts_report[], nl_cli_opts_sparsity[], nl_cli_opts_moefy[], nl_cli_opts_export[], nl_cli_opts_experts[],
    nl_cli_opts_moe_sweep[], nl_cli_opts_moe_usage[], nl_cli_opts_neurons[];
extern const nl_cli_option nl_cli_opts_lens[], nl_cli_opts_attribute[];

const nl_cli_option *nl_cli_help_table(const char *name) {
    static const struct {
        const char *name;
        const nl_cli_option *table;
    } tables[] = {{"ability", ability},
                  {"prune", prune},
                  {"perturb", perturb},
                  {"overlap", overlap},
                  {"record", record},
                  {"info", nl_cli_opts_info},
                  {"ppl", nl_cli_opts_ppl},
                  {"generate", nl_cli_opts_generate},
                  {"train", nl_cli_opts_train},
                  {"tokenizer-train", nl_cli_opts_tokenizer_train},
                  {"tokenize", nl_cli_opts_tokenize},
                  {"runs", nl_cli_opts_runs},
                  {"report", nl_cli_opts_report},
                  {"sparsity", nl_cli_opts_sparsity},
                  {"moefy", nl_cli_opts_moefy},
                  {"export", nl_cli_opts_export},
                  {"experts", nl_cli_opts_experts},
                  {"moe-sweep", nl_cli_opts_moe_sweep},
                  {"moe-usage", nl_cli_opts_moe_usage},
                  {"neurons", nl_cli_opts_neurons},
                  {"lens", nl_cli_opts_lens},
                  {"attribute", nl_cli_opts_attribute}};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (!strcmp(name, tables[i].name)) return tables[i].table;
    return NULL;
}
