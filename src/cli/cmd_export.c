/* cmd_export.c — `neuronlab export MODEL (--gguf OUT.gguf | --hf OUT_DIR) [--type f32|f16|bf16|q8_0]
 * [--hidden-act NAME] [--force]`: the model written as a GGUF file for llama.cpp or as a Hugging
 * Face folder (include/neuronlab/export.h). An existing GGUF output is replaced only with --force
 * and never when it is the model itself; an existing folder is never replaced. Bad input is one
 * line naming the file. Checked by tests/gguf_cli.sh. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "neuronlab/export.h"
#include "neuronlab/model.h"

static int run(nl_ctx *ctx, int argc, char **argv);

const nl_cli_option nl_cli_opts_export[] = {
    {"MODEL", NULL, 1,
     "a Hugging Face folder, a GGUF file or a llama2.c .bin checkpoint (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, "
     "qwen3_moe)", NULL},
    {"--gguf", "OUT.gguf", 0, "write a GGUF file as llama.cpp's converter does (names, metadata, tokenizer, q/k order)",
     "none (give --gguf or --hf)"},
    {"--hf", "OUT_DIR", 0, "write a Hugging Face folder (config.json, model.safetensors, tokenizer.json)",
     "none (give --gguf or --hf)"},
    {"--type", "f32|f16|bf16|q8_0", 0, "stored type of the 2-D weights (q8_0: GGUF only; norms and biases stay f32 in GGUF)",
     "f16 for --gguf, f32 for --hf"},
    {"--hidden-act", "NAME", 0, "FFN activation of a GGUF model (llama.cpp's files do not store it)",
     "config.json beside the file, else its neuronlab.hidden_act, else silu"},
    {"--force", NULL, 0, "replace an existing GGUF output (never the model itself)", "refuse"},
    {NULL, NULL, 0, NULL, NULL}};

const nl_command nl_cmd_export = {"export", NULL,
                                  "write MODEL as a GGUF file for llama.cpp (--gguf, f32/f16/bf16/q8_0) or as a Hugging Face "
                                  "folder (--hf)",
                                  run};

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *model = NULL, *gguf = NULL, *hf = NULL, *type_s = NULL, *act = NULL, *v;
    int force = 0, k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_opt(argc, argv, &i, "--gguf", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_export, "--gguf needs the file to write");
            gguf = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--hf", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_export, "--hf needs the folder to write");
            hf = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--type", &v))) {
            if (k < 0 || nl_export_type_parse(v) < 0) return nl_cli_usage(&nl_cmd_export, "--type is f32, f16, bf16 or q8_0");
            type_s = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--hidden-act", &v))) {
            if (k < 0 || nl_act_parse(v) < 0) return nl_cli_usage(&nl_cmd_export, "--hidden-act needs an activation name like silu");
            act = v;
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return nl_cli_usage(&nl_cmd_export, "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return nl_cli_usage(&nl_cmd_export, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return nl_cli_usage(&nl_cmd_export, "missing MODEL");
    if (!gguf == !hf) return nl_cli_usage(&nl_cmd_export, "give exactly one of --gguf OUT.gguf and --hf OUT_DIR");
    nl_export_type type = type_s ? (nl_export_type)nl_export_type_parse(type_s) : gguf ? NL_EXPORT_F16 : NL_EXPORT_F32;
    if (hf && type == NL_EXPORT_Q8_0) return nl_cli_usage(&nl_cmd_export, "--hf writes f32, f16 or bf16 (q8_0 is for --gguf)");
    nl_status st = NL_OK;
    struct stat so, sm;
    if (gguf && stat(gguf, &so) == 0) {
        if (stat(model, &sm) == 0 && so.st_dev == sm.st_dev && so.st_ino == sm.st_ino)
            st = nl_errorf(ctx, NL_EINVAL, "refusing to write '%s': it is the model '%s'", gguf, model);
        else if (!force) st = nl_errorf(ctx, NL_EINVAL, "'%s' exists (use --force to replace it)", gguf);
    }
    if (st == NL_OK && hf && stat(hf, &so) == 0) st = nl_errorf(ctx, NL_EINVAL, "'%s' exists: not replacing it", hf);
    nl_model *m = NULL;
    nl_model_opts mo = {act};
    if (st == NL_OK) st = nl_model_open_opts(ctx, model, &mo, &m);
    if (st == NL_OK && gguf) {
        nl_progress prog;
        nl_progress_init(&prog, "export", 0, "tensors", ctx->progress);
        st = nl_export_gguf(ctx, m, model, type, gguf, &prog);
        nl_progress_end(&prog);
    } else if (st == NL_OK) {
        st = nl_export_hf(ctx, m, model, type, hf);
    }
    if (st == NL_OK) fprintf(stderr, "wrote '%s' (%s)\n", gguf ? gguf : hf, type_s ? type_s : gguf ? "f16" : "f32");
    nl_model_close(m);
    return nl_cli_finish(ctx, st, "interrupted: '%s' was not written", gguf ? gguf : hf);
}
