/* cmd_record.c — `neuronlab record MODEL DATA.jsonl -o acts.h5 [--layers LIST]
 * [--dtype f32|f16] [--pool] [--batch N] [--ctx N] [--stride N]`: streams every FFN
 * neuron activation into the HDF5 activation file (schema in h5store.h) while the forward
 * pass runs. Ctrl-C keeps every finished document and marks the file incomplete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/recorder.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_record = {
    "record", "MODEL DATA.jsonl -o acts.h5 [--layers LIST] [--dtype f32|f16] [--pool] [--batch N] [--ctx N] [--stride N]",
    "stream every FFN neuron's activation into an HDF5 file (LIST like 0,2,5-7; --pool adds per-document mean |a|)", run};

/* Parses "0,2,5-7" into a sorted distinct set of layers < L; returns count, -1 on error. */
static int parse_layers(const char *s, int L, int *out) {
    char *flags = calloc((size_t)L, 1);
    const char *p = s;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p) { free(flags); return -1; }
        p = end;
        if (*p == '-') {
            b = strtol(++p, &end, 10);
            if (end == p) { free(flags); return -1; }
            p = end;
        }
        if (a < 0 || b >= L || a > b) { free(flags); return -1; }
        for (long i = a; i <= b; i++) flags[i] = 1;
        if (*p == ',') p++;
        else if (*p) { free(flags); return -1; }
    }
    int n = 0;
    for (int i = 0; i < L; i++)
        if (flags[i]) out[n++] = i;
    free(flags);
    return n;
}

static const char *arch_name(nl_arch a) {
    static const char *n[] = {"llama", "mistral", "qwen2", "gpt2", "gpt_neox", "phi"};
    return (unsigned)a < sizeof n / sizeof n[0] ? n[a] : "?";
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *paths[2] = {0}, *outp = NULL, *layers_s = NULL, *v;
    int np = 0, pool = 0;
    nl_h5_dtype dtype = NL_H5_F32;
    long batch = 512, clen = 0, stride = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--pool")) pool = 1;
        else if ((r = nl_cli_opt(argc, argv, &i, "-o", &v)) || (r = nl_cli_opt(argc, argv, &i, "--output", &v))) {
            if (r < 0) return nl_cli_usage(&nl_cmd_record, "-o needs a path");
            outp = v;
        } else if ((r = nl_cli_opt(argc, argv, &i, "--layers", &v))) {
            if (r < 0) return nl_cli_usage(&nl_cmd_record, "--layers needs a list like 0,2,5-7");
            layers_s = v;
        } else if ((r = nl_cli_opt(argc, argv, &i, "--dtype", &v))) {
            if (r < 0 || (strcmp(v, "f32") && strcmp(v, "f16"))) return nl_cli_usage(&nl_cmd_record, "--dtype is f32 or f16");
            dtype = strcmp(v, "f16") ? NL_H5_F32 : NL_H5_F16;
        } else if ((r = nl_cli_opt(argc, argv, &i, "--batch", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 20, &batch)) return nl_cli_usage(&nl_cmd_record, "--batch needs a positive integer");
        } else if ((r = nl_cli_opt(argc, argv, &i, "--ctx", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 24, &clen)) return nl_cli_usage(&nl_cmd_record, "--ctx needs a positive integer");
        } else if ((r = nl_cli_opt(argc, argv, &i, "--stride", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 24, &stride)) return nl_cli_usage(&nl_cmd_record, "--stride needs a positive integer");
        } else if (argv[i][0] == '-' && argv[i][1]) return nl_cli_usage(&nl_cmd_record, "unknown option '%s'", argv[i]);
        else if (np < 2) paths[np++] = argv[i];
        else return nl_cli_usage(&nl_cmd_record, "unexpected argument '%s'", argv[i]);
    }
    if (np < 2) return nl_cli_usage(&nl_cmd_record, "missing %s", np == 0 ? "MODEL and DATA.jsonl" : "DATA.jsonl");
    if (!outp) return nl_cli_usage(&nl_cmd_record, "missing -o OUTPUT.h5");

    nl_model *m = NULL;
    nl_dataset *ds = NULL;
    nl_forward *f = NULL;
    nl_h5_writer *w = NULL;
    int *layers = NULL, n_layers = 0;
    nl_status st = nl_model_open(ctx, paths[0], &m);
    if (st == NL_OK) st = nl_dataset_load(ctx, paths[1], NULL, nl_model_config(m)->vocab_size, &ds);
    const nl_config *c = m ? nl_model_config(m) : NULL;
    if (st == NL_OK && layers_s) {
        layers = malloc((size_t)c->n_layers * sizeof(int));
        n_layers = layers ? parse_layers(layers_s, c->n_layers, layers) : -1;
        if (n_layers <= 0)
            st = nl_errorf(ctx, NL_EINVAL, "--layers '%s': expected a list like 0,2,5-7 of layers in 0..%d", layers_s, c->n_layers - 1);
    }
    if (st == NL_OK) {
        if (!clen) clen = c->max_pos > 0 ? c->max_pos : 2048;
        if (c->pos == NL_POS_LEARNED && clen > c->max_pos) clen = c->max_pos;
        if (stride > clen) st = nl_errorf(ctx, NL_EINVAL, "--stride %ld exceeds the context %ld", stride, clen);
    }
    if (st == NL_OK) st = nl_forward_create(ctx, m, (int)(batch < clen ? batch : clen), (int)clen, &f);
    if (st == NL_OK) {
        nl_h5_meta meta = {0};
        meta.model = paths[0];
        meta.arch = arch_name(c->arch);
        meta.n_layers = c->n_layers;
        meta.d_model = c->d_model;
        meta.d_ff = c->d_ff;
        meta.ffn_kind = c->ffn_gated ? "gated" : "plain";
        meta.act_fn = nl_act_name(c->act);
        meta.dtype = dtype;
        meta.dataset = paths[1];
        meta.layers = layers;
        meta.n_rec = n_layers;
        meta.pooled = pool;
        st = nl_h5_create(ctx, outp, &meta, &w);
    }
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "record", ds->n_tokens, "tok", ctx->progress);
        st = nl_record_run(ctx, f, ds, w, pool, (int)stride, &prog);
        nl_progress_end(&prog);
        nl_ctx cctx; /* keep the first error's message */
        nl_ctx_init(&cctx);
        long long kept = (long long)nl_h5_writer_docs(w);
        nl_status cst = nl_h5_close(w, &cctx, st == NL_OK);
        if (st == NL_OK && cst != NL_OK) { st = cst; memcpy(ctx->msg, cctx.msg, sizeof ctx->msg); }
        if (st == NL_EINTR) {
            fprintf(stderr, "neuronlab: interrupted: '%s' keeps the %lld finished documents (marked incomplete)\n", outp, kept);
            nl_dataset_destroy(ds), ds = NULL;
        }
    }
    int rc = st == NL_OK ? 0 : st == NL_EINTR ? 130 : nl_cli_fail(ctx, st);
    if (st == NL_OK) fprintf(stderr, "wrote '%s': %d documents, %lld tokens\n", outp, ds->n_docs, (long long)ds->n_tokens);
    free(layers);
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    return rc;
}
