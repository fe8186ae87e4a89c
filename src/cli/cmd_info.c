/* cmd_info.c — `neuronlab info MODEL [--json] [--hidden-act NAME]`: architecture, dimensions,
 * parameters, dtypes; for a GGUF file also where the FFN activation came from, the metadata
 * (arrays of more than 16 elements by length only) and the tensor types with their counts.
 * --json never writes NaN or Infinity. Checked by tests/cli_errors.sh and tests/gguf_cli.sh. */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "neuronlab/gguf.h"
#include "neuronlab/model.h"

/* Arrays up to this many elements are printed whole. */
#define SHOW_ARRAY 16

/* One metadata value as JSON (strings escaped; long arrays as {"type", "n"}). */
static void gguf_json_value(const nl_gguf *g, const nl_gguf_kv *kv) {
    if (kv->type == NL_GGUF_STRING) {
        char *s = malloc(kv->n + 1);
        if (!s) { fputs("null", stdout); return; }
        memcpy(s, kv->data, kv->n);
        s[kv->n] = 0;
        nl_cli_json_str(s);
        free(s);
    } else if (kv->type == NL_GGUF_ARRAY) {
        if (kv->n > SHOW_ARRAY) {
            printf("{\"type\":\"%s\",\"n\":%" PRIu64 "}", nl_gguf_vtype_name(kv->arr_type), kv->n);
            return;
        }
        putchar('[');
        for (uint64_t i = 0; i < kv->n; i++) {
            if (i) putchar(',');
            if (kv->arr_type == NL_GGUF_STRING) {
                size_t n;
                const char *p = nl_gguf_arr_str(g, kv, i, &n);
                char *s = malloc(n + 1);
                if (!s) { fputs("null", stdout); continue; }
                memcpy(s, p, n);
                s[n] = 0;
                nl_cli_json_str(s);
                free(s);
            } else if (kv->arr_type == NL_GGUF_BOOL) {
                fputs(nl_gguf_arr_num(kv, i) != 0 ? "true" : "false", stdout);
            } else {
                fputs(NL_JSON_NUM(nl_gguf_arr_num(kv, i)), stdout);
            }
        }
        putchar(']');
    } else if (kv->type == NL_GGUF_BOOL) {
        fputs(kv->data[0] ? "true" : "false", stdout);
    } else {
        double v = 0;
        nl_ctx c;
        nl_ctx_init(&c);
        if (kv->type == NL_GGUF_U64 || kv->type == NL_GGUF_I64) { /* exact beyond 2^53 */
            int64_t i64;
            uint64_t u64;
            memcpy(&u64, kv->data, 8);
            memcpy(&i64, kv->data, 8);
            if (kv->type == NL_GGUF_U64) printf("%" PRIu64, u64);
            else printf("%" PRId64, i64);
            return;
        }
        (void)nl_gguf_get_f64(&c, g, kv->key, &v, NULL);
        fputs(NL_JSON_NUM(v), stdout);
    }
}

/* One metadata value as text: strings quoted up to 80 bytes, long arrays by length. */
static void gguf_text_value(const nl_gguf *g, const nl_gguf_kv *kv) {
    if (kv->type == NL_GGUF_STRING) {
        printf("\"%.*s\"%s", (int)(kv->n > 80 ? 80 : kv->n), (const char *)kv->data, kv->n > 80 ? "…" : "");
    } else if (kv->type == NL_GGUF_ARRAY && kv->n > SHOW_ARRAY) {
        printf("[%" PRIu64 " × %s]", kv->n, nl_gguf_vtype_name(kv->arr_type));
    } else {
        gguf_json_value(g, kv);
    }
}

/* The GGUF part of `info`: NULL g prints nothing. */
static void gguf_info(const nl_gguf *g, int json) {
    int counts[NL_GGML_NTYPES] = {0};
    for (int64_t i = 0; i < nl_gguf_n_tensors(g); i++) counts[nl_gguf_tensor_at(g, i)->type]++;
    if (json) {
        printf(",\"gguf\":{\"version\":%u,\"alignment\":%u,\"n_tensors\":%" PRId64 ",\"tensor_types\":{", nl_gguf_version(g),
               nl_gguf_alignment(g), nl_gguf_n_tensors(g));
        int first = 1;
        for (int t = 0; t < NL_GGML_NTYPES; t++)
            if (counts[t]) { printf("%s\"%s\":%d", first ? "" : ",", nl_ggml_type_name((uint32_t)t), counts[t]); first = 0; }
        printf("},\"metadata\":{");
        for (int64_t i = 0; i < nl_gguf_n_kv(g); i++) {
            const nl_gguf_kv *kv = nl_gguf_kv_at(g, i);
            if (i) putchar(',');
            nl_cli_json_str(kv->key);
            putchar(':');
            gguf_json_value(g, kv);
        }
        printf("}}");
        return;
    }
    printf("gguf         version %u, %" PRId64 " tensors, %" PRId64 " metadata keys, alignment %u\n", nl_gguf_version(g),
           nl_gguf_n_tensors(g), nl_gguf_n_kv(g), nl_gguf_alignment(g));
    printf("tensor types");
    int first = 1;
    for (int t = 0; t < NL_GGML_NTYPES; t++)
        if (counts[t]) { printf("%s %s ×%d", first ? "" : ",", nl_ggml_type_name((uint32_t)t), counts[t]); first = 0; }
    printf("\nmetadata\n");
    for (int64_t i = 0; i < nl_gguf_n_kv(g); i++) {
        const nl_gguf_kv *kv = nl_gguf_kv_at(g, i);
        printf("  %-44s %-8s ", kv->key, kv->type == NL_GGUF_ARRAY ? "array" : nl_gguf_vtype_name(kv->type));
        gguf_text_value(g, kv);
        putchar('\n');
    }
}

/* Maps and parses path when it is a GGUF file (the model opened, so it parses); *g NULL otherwise. */
static void gguf_open(nl_ctx *ctx, const char *path, nl_gguf **g, void **base, size_t *size) {
    *g = NULL;
    *base = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 4) return;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return;
    if (memcmp(p, "GGUF", 4) != 0 || nl_gguf_parse(ctx, path, p, (size_t)sb.st_size, g) != NL_OK) {
        munmap(p, (size_t)sb.st_size);
        *g = NULL;
        return;
    }
    *base = p;
    *size = (size_t)sb.st_size;
}

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
    {"MODEL", NULL, 1, "a Hugging Face folder (config.json + *.safetensors), a GGUF file or a llama2.c .bin checkpoint", NULL},
    {"--json", NULL, 0, "print one JSON object instead of text", NULL},
    {"--hidden-act", "NAME", 0, "FFN activation of a GGUF file (llama.cpp's files do not store it): silu, gelu, gelu_tanh, relu …",
     "config.json beside the file, else the file's neuronlab.hidden_act, else silu"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_info = {"info", NULL, "show a checkpoint's architecture, dimensions, parameter count and dtypes", run};

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *path = NULL, *v;
    int json = 0, got;
    nl_model_opts mo = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((got = nl_cli_opt(argc, argv, &i, "--hidden-act", &v)) != 0) {
            if (got < 0 || nl_act_parse(v) < 0)
                return nl_cli_usage(&nl_cmd_info, "--hidden-act needs one of silu, swish, gelu, gelu_new, gelu_pytorch_tanh, "
                                    "gelu_fast, gelu_tanh, relu, relu2");
            mo.hidden_act = v;
        } else if (argv[i][0] == '-') return nl_cli_usage(&nl_cmd_info, "unknown option '%s'", argv[i]);
        else if (!path) path = argv[i];
        else return nl_cli_usage(&nl_cmd_info, "unexpected argument '%s'", argv[i]);
    }
    if (!path) return nl_cli_usage(&nl_cmd_info, "missing MODEL");
    nl_model *m;
    nl_status st = nl_model_open_opts(ctx, path, &mo, &m);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    nl_gguf *g;
    void *gbase;
    size_t gsize = 0;
    gguf_open(ctx, path, &g, &gbase, &gsize);
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
               "\"parallel_residual\":%s,\"sliding_window\":%d,\"tie_embeddings\":%s,\"n_params\":%lld,\"dtype\":\"%s\",\"bytes\":%lld",
               c->rotary_dim, rs, (c->parallel_residual || c->shared_norm) ? "true" : "false",
               c->sliding_window, c->tie_embeddings ? "true" : "false", np, nl_dtype_name(nl_model_dtype(m)), bytes);
        if (g) {
            printf(",\"act_source\":");
            nl_cli_json_str(nl_model_act_source(m));
            gguf_info(g, 1);
        }
        printf("}\n");
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
        if (g) {
            printf("activation   %s, from %s%s\n", nl_act_name(c->act), nl_model_act_source(m),
                   !strcmp(nl_model_act_source(m), "default") ? " (the file does not say; --hidden-act sets it)" : "");
            gguf_info(g, 0);
        }
    }
    nl_gguf_close(g);
    if (gbase) munmap(gbase, gsize);
    nl_model_close(m);
    return 0;
}
