/* cmd_ppl.c — `neuronlab ppl MODEL DATA.jsonl [--json] [--batch N] [--ctx N]`:
 * perplexity overall, per label and per document (contract in perplexity.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/perplexity.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_ppl = {"ppl", "MODEL DATA.jsonl [--json] [--batch N] [--ctx N] [--stride N]",
                               "perplexity overall, per label and per document (longer documents: sliding windows of --ctx tokens every --stride, default ctx/2)", run};

static void print_sum(const char *key, nl_nll_sum s) {
    if (key) { nl_cli_json_str(key); putchar(':'); }
    if (s.n > 0) printf("{\"tokens\":%lld,\"nll\":%.6f,\"ppl\":%.6f}", (long long)s.n, nl_nll_mean(s), nl_nll_ppl(s));
    else printf("{\"tokens\":0,\"nll\":null,\"ppl\":null}");
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *paths[2] = {0}, *v;
    int np = 0, json = 0;
    long batch = 512, clen = 0, stride = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((r = nl_cli_opt(argc, argv, &i, "--batch", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 20, &batch)) return nl_cli_usage(&nl_cmd_ppl, "--batch needs a positive integer");
        } else if ((r = nl_cli_opt(argc, argv, &i, "--ctx", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 24, &clen)) return nl_cli_usage(&nl_cmd_ppl, "--ctx needs a positive integer");
        } else if ((r = nl_cli_opt(argc, argv, &i, "--stride", &v))) {
            if (r < 0 || !nl_cli_int(v, 1, 1 << 24, &stride)) return nl_cli_usage(&nl_cmd_ppl, "--stride needs a positive integer");
        } else if (argv[i][0] == '-' && argv[i][1]) return nl_cli_usage(&nl_cmd_ppl, "unknown option '%s'", argv[i]);
        else if (np < 2) paths[np++] = argv[i];
        else return nl_cli_usage(&nl_cmd_ppl, "unexpected argument '%s'", argv[i]);
    }
    if (np < 2) return nl_cli_usage(&nl_cmd_ppl, "missing %s", np == 0 ? "MODEL and DATA.jsonl" : "DATA.jsonl");
    nl_model *m = NULL;
    nl_dataset *ds = NULL;
    nl_forward *f = NULL;
    nl_ppl_result res = {0};
    int rc = 0;
    nl_status st = nl_model_open(ctx, paths[0], &m);
    if (st == NL_OK) st = nl_dataset_load(ctx, paths[1], NULL, nl_model_config(m)->vocab_size, &ds);
    if (st == NL_OK) {
        const nl_config *c = nl_model_config(m);
        if (!clen) clen = c->max_pos > 0 ? c->max_pos : 2048;
        if (c->pos == NL_POS_LEARNED && clen > c->max_pos) clen = c->max_pos;
        if (stride > clen) st = nl_errorf(ctx, NL_EINVAL, "--stride %ld exceeds the context %ld", stride, clen);
        if (st == NL_OK) st = nl_forward_create(ctx, m, (int)(batch < clen ? batch : clen), (int)clen, &f);
    }
    nl_progress prog;
    if (st == NL_OK) {
        nl_progress_init(&prog, "ppl", ds->n_tokens, "tok", ctx->progress);
        st = nl_ppl_run(ctx, f, ds, (int)stride, &prog, &res);
        nl_progress_end(&prog);
    }
    if (st != NL_OK) {
        rc = nl_cli_fail(ctx, st);
    } else if (json) {
        printf("{\"model\":");
        nl_cli_json_str(paths[0]);
        printf(",\"dataset\":");
        nl_cli_json_str(paths[1]);
        printf(",\"ctx\":%ld,\"stride\":%ld,\"tokens\":%lld,\"nll\":%.6f,\"ppl\":%.6f,\"by_label\":{", clen, stride ? stride : clen / 2, (long long)res.total.n,
               nl_nll_mean(res.total), nl_nll_ppl(res.total));
        for (int l = 0, k = 0; l < ds->n_labels; l++) {
            if (!ds->labels[l][0]) continue;
            if (k++) putchar(',');
            print_sum(ds->labels[l], res.by_label[l]);
        }
        printf("},\"docs\":[");
        for (int d = 0; d < ds->n_docs; d++) {
            if (d) putchar(',');
            printf("{\"line\":%d,\"label\":", ds->docs[d].line);
            nl_cli_json_str(ds->docs[d].label);
            printf(",\"n_tokens\":%d,\"score\":", ds->docs[d].n_tokens);
            print_sum(NULL, res.by_doc[d]);
            putchar('}');
        }
        printf("]}\n");
    } else {
        printf("model    %s\ndataset  %s (%d documents, %lld tokens)\n", paths[0], paths[1], ds->n_docs, (long long)ds->n_tokens);
        printf("overall  ppl %.4f  nll %.5f  over %lld predicted tokens (context %ld)\n", nl_nll_ppl(res.total),
               nl_nll_mean(res.total), (long long)res.total.n, clen);
        if (ds->n_labels > 1 || (ds->n_labels == 1 && ds->labels[0][0])) {
            printf("\n%-20s %10s %10s %10s\n", "label", "tokens", "nll", "ppl");
            for (int l = 0; l < ds->n_labels; l++)
                printf("%-20s %10lld %10.5f %10.4f\n", ds->labels[l][0] ? ds->labels[l] : "(none)", (long long)res.by_label[l].n,
                       nl_nll_mean(res.by_label[l]), nl_nll_ppl(res.by_label[l]));
        }
    }
    nl_ppl_result_release(&res);
    nl_forward_destroy(f);
    nl_dataset_destroy(ds);
    nl_model_close(m);
    return rc;
}
