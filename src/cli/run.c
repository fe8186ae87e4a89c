/* run.c — the MODEL DATA.jsonl arguments and forward-pass options shared by ppl, record
 * and the experiments (see nl_cli_run in cli.h). Under MPI (mpi.h) nl_cli_run_open is where the
 * ranks meet first: an error any rank hit is agreed on, and the ranks check that they read the
 * same model and the same tokenized documents (checksums) before any work is split. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/mpi.h"
#include "neuronlab/rng.h"
#include "neuronlab/tokenizer.h"

int nl_cli_run_arg(const nl_command *cmd, nl_cli_run *r, int argc, char **argv, int *i) {
    static const struct { const char *name; long lo, hi; size_t off; } opts[] = {
        {"--batch", 1, 1 << 20, offsetof(nl_cli_run, batch)},
        {"--ctx", 1, 1 << 24, offsetof(nl_cli_run, ctx)},
        {"--stride", 1, 1 << 24, offsetof(nl_cli_run, stride)},
        {"--threads", 1, 1024, offsetof(nl_cli_run, threads)},
        {"--pipeline", 1, 1 << 16, offsetof(nl_cli_run, pipeline)},
    };
    const char *v;
    int tk = nl_cli_opt(argc, argv, i, "--tokenizer", &v);
    if (tk < 0 || (tk && !*v)) return nl_cli_usage(cmd, "--tokenizer needs a path");
    if (tk) { r->tokenizer = v; return 1; }
    int ha = nl_cli_opt(argc, argv, i, "--hidden-act", &v);
    if (ha < 0 || (ha && nl_act_parse(v) < 0))
        return nl_cli_usage(cmd, "--hidden-act needs one of silu, swish, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, "
                            "gelu_tanh, relu, relu2");
    if (ha) { r->hidden_act = v; return 1; }
    int cp = nl_cli_opt(argc, argv, i, "--compute", &v);
    if (cp < 0 || (cp && strcmp(v, "f32") && strcmp(v, "bf16")))
        return nl_cli_usage(cmd, "--compute must be f32 or bf16 (got '%s')", cp > 0 ? v : "");
    if (cp) { r->compute = !strcmp(v, "bf16") ? NL_COMPUTE_BF16 : NL_COMPUTE_F32; return 1; }
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        int got = nl_cli_opt(argc, argv, i, opts[k].name, &v);
        if (!got) continue;
        if (got < 0 || !nl_cli_int(v, opts[k].lo, opts[k].hi, (long *)((char *)r + opts[k].off)))
            return nl_cli_usage(cmd, "%s needs an integer in %ld..%ld", opts[k].name, opts[k].lo, opts[k].hi);
        return 1;
    }
    if (argv[*i][0] == '-' && argv[*i][1]) return 0;
    if (!r->model) { r->model = argv[*i]; return 1; }
    if (!r->data) { r->data = argv[*i]; return 1; }
    return nl_cli_usage(cmd, "unexpected argument '%s'", argv[*i]);
}

int nl_cli_run_check(const nl_command *cmd, const nl_cli_run *r) {
    if (!r->model) return nl_cli_usage(cmd, "missing MODEL and DATA.jsonl");
    if (!r->data) return nl_cli_usage(cmd, "missing DATA.jsonl");
    return 0;
}

/* What the ranks must agree on: the model (its shape, parameter count and the embedding rows
 * of the first 16 token ids: cheap, and in pipeline mode every rank maps the embedding) and
 * the dataset as tokenized (every document's tokens, label, prompt and scoring start). */
static uint64_t model_checksum(const nl_model *m) {
    const nl_config *c = nl_model_config(m);
    int64_t dims[] = {c->arch, c->n_layers, c->d_model, c->d_ff, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
                      c->act, c->norm, c->pos, c->n_experts, nl_model_n_params(m), nl_model_bytes(m)};
    uint64_t h = nl_fnv1a(NL_FNV_INIT, dims, sizeof dims);
    enum { NT = 16 };
    int32_t ids[NT];
    const int n = c->vocab_size < NT ? c->vocab_size : NT;
    for (int i = 0; i < n; i++) ids[i] = i;
    float *e = malloc((size_t)NT * c->d_model * sizeof(float));
    if (e && n > 0) {
        nl_model_embed(m, ids, n, 0, e);
        h = nl_fnv1a(h, e, (size_t)n * c->d_model * sizeof(float));
    }
    free(e);
    return h;
}

static uint64_t data_checksum(const nl_dataset *ds) {
    uint64_t h = nl_fnv1a(NL_FNV_INIT, &ds->n_docs, sizeof ds->n_docs);
    for (int d = 0; d < ds->n_docs; d++) {
        const nl_doc *x = &ds->docs[d];
        int32_t v[3] = {x->n_tokens, x->prompt_len, x->score_from};
        h = nl_fnv1a(h, v, sizeof v);
        h = nl_fnv1a(h, x->tokens, (size_t)x->n_tokens * sizeof(int32_t));
        h = nl_fnv1a(h, x->label, strlen(x->label) + 1);
    }
    return h;
}

static nl_status run_open(nl_ctx *ctx, nl_cli_run *r);

nl_status nl_cli_run_open(nl_ctx *ctx, nl_cli_run *r) {
    nl_status st = r->pipeline > 0 ? nl_mpi_set_pipeline(ctx, (int)r->pipeline) : NL_OK;
    if (st == NL_OK) st = run_open(ctx, r);
    st = nl_mpi_agree(ctx, st); /* every rank gets here: a failure of any of them stops all */
    if (st == NL_OK && nl_mpi_size() > 1) {
        st = nl_mpi_check_same(ctx, "model", r->model, model_checksum(r->m));
        if (st == NL_OK) st = nl_mpi_check_same(ctx, "dataset", r->data, data_checksum(r->ds));
    }
    return st;
}

static nl_status run_open(nl_ctx *ctx, nl_cli_run *r) {
    if (r->threads > 0) ctx->n_threads = (int)r->threads;
    nl_ctx_apply_threads(ctx);
    nl_model_opts mo = {.hidden_act = r->hidden_act};
    nl_status st = nl_model_open_opts(ctx, r->model, &mo, &r->m);
    if (st != NL_OK) return st;
    const nl_config *c = nl_model_config(r->m);
    if (nl_mpi_pipeline() > 1 && (st = nl_mpi_check_pipeline(ctx, c->n_layers)) != NL_OK) return st;
    st = r->tokenizer ? nl_tokenizer_open(ctx, r->tokenizer, &r->tok) : nl_tokenizer_for_model(ctx, r->model, &r->tok);
    if (st != NL_OK) return st;
    if (r->tok && nl_tokenizer_warning(r->tok)[0] && nl_mpi_is_root()) fprintf(stderr, "neuronlab: warning: %s\n", nl_tokenizer_warning(r->tok));
    if ((st = nl_dataset_load(ctx, r->data, r->tok, c->vocab_size, &r->ds)) != NL_OK) return st;
    if (r->ds->warning[0] && nl_mpi_is_root()) fprintf(stderr, "neuronlab: warning: %s\n", r->ds->warning);
    if (!r->batch) r->batch = 512;
    if (!r->ctx) {
        r->ctx = c->max_pos > 0 ? c->max_pos : 2048;
        /* A long-context model (or a config.json claiming 2^31 positions) would allocate its
         * whole KV cache: beyond 128 Ki positions the default is the longest document. */
        if (r->ctx > 131072) {
            long longest = 1;
            for (int d = 0; d < r->ds->n_docs; d++)
                if (r->ds->docs[d].n_tokens > longest) longest = r->ds->docs[d].n_tokens;
            if (longest < r->ctx) r->ctx = longest;
        }
    }
    if (c->pos == NL_POS_LEARNED && r->ctx > c->max_pos) r->ctx = c->max_pos;
    if (r->stride > r->ctx) return nl_errorf(ctx, NL_EINVAL, "--stride %ld exceeds the context %ld", r->stride, r->ctx);
    if ((st = nl_forward_create(ctx, r->m, (int)(r->batch < r->ctx ? r->batch : r->ctx), (int)r->ctx, &r->f)) != NL_OK)
        return st;
    if (r->compute == NL_COMPUTE_BF16 && nl_forward_set_compute(r->f, NL_COMPUTE_BF16) != NL_COMPUTE_BF16 && nl_mpi_is_root())
        fprintf(stderr, "neuronlab: --compute bf16: this CPU has no AVX512-BF16; computing in f32\n");
    return NL_OK;
}

void nl_cli_run_close(nl_cli_run *r) {
    nl_forward_destroy(r->f);
    nl_dataset_destroy(r->ds);
    nl_tokenizer_close(r->tok);
    nl_model_close(r->m);
    r->f = NULL, r->ds = NULL, r->m = NULL, r->tok = NULL;
}
