/* cmd_info.c — `neuronlab info MODEL [--json]`: architecture, dimensions, parameters, dtypes.
 * --json never writes NaN or Infinity. Checked by tests/cli_errors.sh. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/model.h"

static int run(nl_ctx *ctx, int argc, char **argv);

/* JSON has no NaN or Infinity: a non-finite value (the loaders refuse them, so never in
 * practice) is written as null with a warning. */
static void jnum(const char *key, double v) {
    printf(",\"%s\":", key);
    if (isfinite(v)) printf("%g", v);
    else {
        fputs("null", stdout);
        fprintf(stderr, "neuronlab info: warning: %s is %g, written as null\n", key, v);
    }
}

const nl_cli_option nl_cli_opts_info[] = {
    {"MODEL", NULL, 1, "a Hugging Face folder (config.json + *.safetensors) or a llama2.c .bin checkpoint", NULL},
    {"--json", NULL, 0, "print one JSON object instead of text", NULL},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_info = {"info", NULL, "show a checkpoint's architecture, dimensions, parameter count and dtypes", run};

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') return nl_cli_usage(&nl_cmd_info, "unknown option '%s'", argv[i]);
        else if (!path) path = argv[i];
        else return nl_cli_usage(&nl_cmd_info, "unexpected argument '%s'", argv[i]);
    }
    if (!path) return nl_cli_usage(&nl_cmd_info, "missing MODEL");
    nl_model *m;
    nl_status st = nl_model_open(ctx, path, &m);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    const nl_config *c = nl_model_config(m);
    long long np = (long long)nl_model_n_params(m), bytes = (long long)nl_model_bytes(m);
    const char *rs = c->rope_scaling == NL_ROPE_SCALING_LLAMA3 ? "llama3" : c->rope_scaling == NL_ROPE_SCALING_LINEAR ? "linear" : "none";
    if (json) {
        printf("{\"path\":");
        nl_cli_json_str(path);
        printf(",\"model_type\":\"%s\",\"arch\":\"%s\",\"n_layers\":%d,\"d_model\":%d,\"d_ff\":%d,\"n_heads\":%d,"
               "\"n_kv_heads\":%d,\"head_dim\":%d,\"vocab_size\":%d,\"max_pos\":%d,\"ffn_kind\":\"%s\",\"act_fn\":\"%s\","
               "\"norm\":\"%s\"",
               c->model_type, nl_arch_name(c->arch), c->n_layers, c->d_model, c->d_ff, c->n_heads, c->n_kv_heads, c->head_dim,
               c->vocab_size, c->max_pos, c->ffn_gated ? "gated" : "plain", nl_act_name(c->act),
               c->norm == NL_NORM_RMS ? "rmsnorm" : "layernorm");
        jnum("norm_eps", c->norm_eps);
        printf(",\"position\":\"%s\"", c->pos == NL_POS_ROPE ? "rope" : "learned");
        jnum("rope_theta", c->rope_theta);
        printf(",\"rotary_dim\":%d,\"rope_scaling\":\"%s\","
               "\"parallel_residual\":%s,\"sliding_window\":%d,\"tie_embeddings\":%s,\"n_params\":%lld,\"dtype\":\"%s\",\"bytes\":%lld}\n",
               c->rotary_dim, rs, (c->parallel_residual || c->shared_norm) ? "true" : "false",
               c->sliding_window, c->tie_embeddings ? "true" : "false", np, nl_dtype_name(nl_model_dtype(m)), bytes);
    } else {
        printf("model        %s\n", path);
        printf("architecture %s (model_type %s)\n", nl_arch_name(c->arch), c->model_type);
        printf("layers       %d\nd_model      %d\nd_ff         %d (%s FFN, %s)\n", c->n_layers, c->d_model, c->d_ff,
               c->ffn_gated ? "gated" : "plain", nl_act_name(c->act));
        printf("heads        %d query, %d key/value, head dim %d%s\n", c->n_heads, c->n_kv_heads, c->head_dim,
               c->qk_norm ? ", q/k RMSNorm per head" : "");
        if (c->n_experts > 0) {
            int n_moe = 0;
            for (int l = 0; l < c->n_layers; l++) n_moe += nl_config_is_moe_layer(c, l);
            printf("experts      %d routed, top-%d%s, width %d; ", c->n_experts, c->n_experts_per_tok,
                   c->norm_topk_prob ? " renormalised" : "", c->d_expert);
            if (c->d_shared > 0) printf("shared expert width %d; ", c->d_shared);
            printf("%d of %d layers\n", n_moe, c->n_layers);
        }
        printf("vocabulary   %d\ncontext      %d\n", c->vocab_size, c->max_pos);
        printf("norm         %s, eps %g\n", c->norm == NL_NORM_RMS ? "rmsnorm" : "layernorm", c->norm_eps);
        if (c->pos == NL_POS_ROPE)
            printf("positions    rope, theta %g, %d of %d dims rotated, scaling %s\n", c->rope_theta, c->rotary_dim, c->head_dim, rs);
        else
            printf("positions    learned\n");
        printf("residual     %s\n", c->shared_norm ? "parallel, one norm" : c->parallel_residual ? "parallel" : "sequential");
        printf("embeddings   %s\n", c->tie_embeddings ? "tied" : "separate LM head");
        printf("parameters   %lld (%.2f M)\n", np, np / 1e6);
        printf("dtype        %s, %.1f MB on disk\n", nl_dtype_name(nl_model_dtype(m)), bytes / 1e6);
    }
    nl_model_close(m);
    return 0;
}
