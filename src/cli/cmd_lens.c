/* cmd_lens.c — `neuronlab lens MODEL DATA.jsonl [--db results.db] [--json]` plus the forward-pass
 * options of ppl: the logit lens (analyses/lens.h): per depth (layer −1 = the embedding … L−1)
 * and label, the mean loss of the residual stream read out through the final norm and the
 * unembedding, its top-1 agreement with the model's prediction and KL(final ‖ lens). A table on
 * stdout (or --json), one run with its lens rows in the database. Ctrl-C: exit 130, the run
 * 'interrupted' with no rows. Checked by tests/lens_cli.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/lens.h"
#include "cli/cli.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_lens[] = {
    NL_CLI_RUN_OPTIONS,
    {"--db", "results.db", 0, "store a run with its lens rows (one per label and depth) in a results database", "none"},
    {"--json", NULL, 0, "print {model, dataset, run_id, layers: [{layer, label, tokens, loss, top1_agree, kl}]} instead of the table", NULL},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_lens = {
    "lens", NULL,
    "the logit lens: each layer's residual stream (layer -1 = the embedding) through the final norm and the unembedding; per "
    "layer and label the mean next-token loss, top-1 agreement with the model's prediction and KL(final || lens) over the "
    "predicted positions (the last layer's loss is the model's own, as ppl)",
    run};

static void print_mean(const char *fmt, double sum, int64_t n) {
    if (n > 0) printf(fmt, sum / (double)n);
    else printf(" %10s", "-");
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_lens;
    nl_cli_run r = {0};
    nl_cli_common co = {0};
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(cmd, &r, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_JSON, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(cmd, &r)) return 2;
    nl_results *db = NULL;
    nl_lens_result res = {0};
    nl_status st = co.db ? nl_results_open(ctx, co.db, 0, &db) : NL_OK; /* a bad database fails before the model loads */
    if (st == NL_OK && db) st = nl_lens_create_tables(ctx, db);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK) {
        nl_lens_opts o;
        nl_lens_opts_init(&o);
        o.stride = (int)r.stride, o.batch = (int)r.batch, o.model = r.model, o.dataset = r.data;
        nl_progress prog;
        nl_progress_init(&prog, "lens", r.ds->n_tokens, "tok", ctx->progress);
        st = nl_lens_run(ctx, &o, r.f, r.ds, db, &prog, &res);
        nl_progress_end(&prog);
    }
    if (st == NL_OK && co.json) {
        printf("{\"model\":");
        nl_cli_json_str(r.model);
        printf(",\"dataset\":");
        nl_cli_json_str(r.data);
        printf(",\"ctx\":%ld,\"run_id\":", r.ctx);
        if (res.run_id > 0) printf("%lld", (long long)res.run_id);
        else printf("null");
        printf(",\"layers\":[");
        int k = 0;
        for (int li = 0; li <= res.n_labels; li++) {
            if (li > 0 && !r.ds->labels[li - 1][0]) continue;
            for (int l = -1; l < res.n_layers; l++) {
                const nl_lens_sum *c = nl_lens_cell(&res, li, l);
                const double n = (double)c->tokens;
                printf("%s{\"layer\":%d,\"label\":", k++ ? "," : "", l);
                nl_cli_json_str(li ? r.ds->labels[li - 1] : "");
                printf(",\"tokens\":%lld,\"loss\":", (long long)c->tokens);
                nl_cli_json_num("%.9g", c->tokens ? c->loss / n : NAN);
                printf(",\"top1_agree\":");
                nl_cli_json_num("%.9g", c->tokens ? c->agree / n : NAN);
                printf(",\"kl\":");
                nl_cli_json_num("%.9g", c->tokens ? c->kl / n : NAN);
                putchar('}');
            }
        }
        printf("]}\n");
    } else if (st == NL_OK) {
        printf("model    %s\ndataset  %s (%d documents, %lld tokens)\n", r.model, r.data, r.ds->n_docs, (long long)r.ds->n_tokens);
        printf("lens     residual stream after each layer (-1 = embedding) -> final norm -> unembedding (context %ld)\n", r.ctx);
        for (int li = 0; li <= res.n_labels; li++) {
            if (li > 0 && !r.ds->labels[li - 1][0]) continue;
            if (li == 0) printf("\nall documents\n");
            else printf("\nlabel '%s'\n", r.ds->labels[li - 1]);
            printf("%6s %10s %10s %10s %10s\n", "layer", "tokens", "loss", "top1", "kl");
            for (int l = -1; l < res.n_layers; l++) {
                const nl_lens_sum *c = nl_lens_cell(&res, li, l);
                printf("%6d %10lld", l, (long long)c->tokens);
                print_mean(" %10.5f", c->loss, c->tokens);
                print_mean(" %10.4f", c->agree, c->tokens);
                print_mean(" %10.5f", c->kl, c->tokens);
                putchar('\n');
            }
        }
    }
    int rc = nl_cli_finish(ctx, st, "interrupted: no lens rows stored%s", db ? " (run marked interrupted)" : "");
    if (st == NL_OK && db) fprintf(stderr, "wrote run %lld to '%s': %d layers\n", (long long)res.run_id, co.db, res.n_layers + 1);
    nl_lens_result_release(&res);
    nl_results_close(db);
    nl_cli_run_close(&r);
    return rc;
}
