/* cmd_ppl.c — `neuronlab ppl MODEL DATA.jsonl [--json] [--batch N] [--ctx N] [--moe DIR --k K
 * --fill zero|mean --router sim|oracle|mlp]`: perplexity overall, per label and per document
 * (contract in perplexity.h); with --moe, of the MoEfied model, with the analytic FFN FLOPs
 * fraction and the router recall against the oracle. --json never
 * writes NaN or Infinity (null and a warning instead). Checked by tests/cli_errors.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/mpi.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/unigram.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_ppl[] = {
    NL_CLI_RUN_OPTIONS,
    {"--json", NULL, 0, "print {tokens, nll, ppl, by_label, docs} as JSON instead of text", NULL},
    {"--unigram", "TRAIN.jsonl", 0, "add the add-one unigram baseline fitted on every token of TRAIN, scored on the same predictions",
     "none"},
    NL_CLI_MOE_OPTIONS,
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_ppl = {"ppl", NULL,
                               "perplexity overall, per label and per document (longer documents: sliding windows of --ctx tokens every --stride, default ctx/2); --unigram adds the add-one unigram baseline fitted on TRAIN", run};

/* JSON has no NaN or Infinity: a non-finite value is written as null and counted, and the
 * command warns once on stderr. nl_ppl_run refuses non-finite losses, so only exp() of a
 * huge mean loss (a perplexity beyond a double) gets here. */
static int n_nonfinite;

static void jnum(double v) { n_nonfinite += nl_cli_json_num("%.6f", v); }

static void print_sum(const char *key, nl_nll_sum s) {
    if (key) { nl_cli_json_str(key); putchar(':'); }
    if (s.n > 0) {
        printf("{\"tokens\":%lld,\"nll\":", (long long)s.n);
        jnum(nl_nll_mean(s));
        printf(",\"ppl\":");
        jnum(nl_nll_ppl(s));
        putchar('}');
    } else {
        printf("{\"tokens\":0,\"nll\":null,\"ppl\":null}");
    }
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    nl_cli_run r = {0};
    int json = 0;
    const char *unigram = NULL, *v;
    nl_cli_moe mo = {0};
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(&nl_cmd_ppl, &r, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_moe_arg(&nl_cmd_ppl, &mo, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_opt(argc, argv, &i, "--unigram", &v)) != 0) {
            if (k < 0) return nl_cli_usage(&nl_cmd_ppl, "--unigram needs a training JSONL file");
            unigram = v;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else return nl_cli_usage(&nl_cmd_ppl, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(&nl_cmd_ppl, &r) || nl_cli_moe_check(&nl_cmd_ppl, &mo)) return 2;
    nl_ppl_result res = {0}, uni = {0};
    nl_dataset *train = NULL;
    double *logp = NULL;
    int rc = 0;
    nl_status st = nl_cli_run_open(ctx, &r);
    const nl_dataset *ds = r.ds;
    const char *paths[2] = {r.model, r.data};
    const long clen = r.ctx, stride = r.stride;
    /* the router recall is counted where the MoE layers run: with one process only (mpi.h) */
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, r.m, r.f, nl_mpi_size() == 1);
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "ppl", ds->n_tokens, "tok", ctx->progress);
        st = nl_ppl_run(ctx, r.f, ds, (int)stride, &prog, &res);
        nl_progress_end(&prog);
    }
    if (st == NL_OK && unigram) {
        const int V = nl_model_config(r.m)->vocab_size;
        st = nl_dataset_load(ctx, unigram, r.tok, V, &train);
        if (st == NL_OK) st = nl_unigram_fit(ctx, train, V, &logp);
        if (st == NL_OK) st = nl_unigram_score(ctx, ds, logp, V, &uni);
    }
    if (st != NL_OK) {
        rc = nl_cli_fail(ctx, st);
    } else if (json) {
        printf("{\"model\":");
        nl_cli_json_str(paths[0]);
        printf(",\"dataset\":");
        nl_cli_json_str(paths[1]);
        printf(",\"ctx\":%ld,\"stride\":%ld,\"tokens\":%lld,\"nll\":", clen, stride ? stride : clen / 2, (long long)res.total.n);
        jnum(nl_nll_mean(res.total));
        printf(",\"ppl\":");
        jnum(nl_nll_ppl(res.total));
        printf(",\"by_label\":{");
        for (int l = 0, k = 0; l < ds->n_labels; l++) {
            if (!ds->labels[l][0]) continue;
            if (k++) putchar(',');
            print_sum(ds->labels[l], res.by_label[l]);
        }
        printf("}");
        if (mo.moe) {
            const nl_config *c = nl_model_config(r.m);
            const nl_moe_info *in = nl_moe_get_info(mo.moe);
            const int nm = nl_moe_n_layers(mo.moe), L = c->n_layers;
            const double dense = nl_moe_flops_dense(c);
            const double lay = nl_moe_flops_layer(c, in->E, in->n_shared, mo.K, (nl_moe_router)mo.router, (nl_moe_fill)mo.fill);
            nl_moe_ffn_stats s = nl_moe_ffn_get_stats(mo.ffn);
            printf(",\"moe\":{\"dir\":");
            nl_cli_json_str(mo.dir);
            printf(",\"experts\":%d,\"shared\":%d,\"layers\":%d,\"k\":%d,\"router\":\"%s\",\"fill\":\"%s\",\"ffn_flops_fraction\":", in->E,
                   in->n_shared, nm, mo.K, nl_moe_router_name((nl_moe_router)mo.router), nl_moe_fill_name((nl_moe_fill)mo.fill));
            jnum(((L - nm) * dense + nm * lay) / (L * dense));
            printf(",\"router_recall\":");
            jnum(s.recall_n ? s.recall_sum / s.recall_n : NAN);
            putchar('}');
        }
        if (unigram) {
            printf(",\"unigram\":{\"train\":");
            nl_cli_json_str(unigram);
            printf(",\"train_tokens\":%lld,\"tokens\":%lld,\"nll\":", (long long)train->n_tokens, (long long)uni.total.n);
            jnum(nl_nll_mean(uni.total));
            printf(",\"ppl\":");
            jnum(nl_nll_ppl(uni.total));
            printf(",\"by_label\":{");
            for (int l = 0, k = 0; l < ds->n_labels; l++) {
                if (!ds->labels[l][0]) continue;
                if (k++) putchar(',');
                print_sum(ds->labels[l], uni.by_label[l]);
            }
            printf("}}");
        }
        printf(",\"docs\":[");
        for (int d = 0; d < ds->n_docs; d++) {
            if (d) putchar(',');
            printf("{\"line\":%d,\"label\":", ds->docs[d].line);
            nl_cli_json_str(ds->docs[d].label);
            printf(",\"n_tokens\":%d,\"score\":", ds->docs[d].n_tokens);
            print_sum(NULL, res.by_doc[d]);
            putchar('}');
        }
        printf("]}\n");
        if (n_nonfinite)
            fprintf(stderr, "neuronlab ppl: warning: %d values are not finite (a perplexity beyond the range of a double) "
                            "and are written as null\n", n_nonfinite);
    } else {
        printf("model    %s\ndataset  %s (%d documents, %lld tokens)\n", paths[0], paths[1], ds->n_docs, (long long)ds->n_tokens);
        printf("overall  ppl %.4f  nll %.5f  over %lld predicted tokens (context %ld)\n", nl_nll_ppl(res.total),
               nl_nll_mean(res.total), (long long)res.total.n, clen);
        nl_cli_moe_print(stdout, &mo, nl_model_config(r.m));
        if (unigram)
            printf("unigram  ppl %.4f  nll %.5f  (add-one unigram fitted on %lld tokens of %s)\n", nl_nll_ppl(uni.total),
                   nl_nll_mean(uni.total), (long long)train->n_tokens, unigram);
        if (ds->n_labels > 1 || (ds->n_labels == 1 && ds->labels[0][0])) {
            printf("\n%-20s %10s %10s %10s", "label", "tokens", "nll", "ppl");
            printf(unigram ? " %12s %8s\n" : "\n", "unigram ppl", "ratio");
            for (int l = 0; l < ds->n_labels; l++) {
                printf("%-20s %10lld %10.5f %10.4f", ds->labels[l][0] ? ds->labels[l] : "(none)", (long long)res.by_label[l].n,
                       nl_nll_mean(res.by_label[l]), nl_nll_ppl(res.by_label[l]));
                if (unigram)
                    printf(" %12.4f %8.3f", nl_nll_ppl(uni.by_label[l]), nl_nll_ppl(res.by_label[l]) / nl_nll_ppl(uni.by_label[l]));
                putchar('\n');
            }
        }
    }
    nl_ppl_result_release(&res);
    nl_ppl_result_release(&uni);
    nl_dataset_destroy(train);
    free(logp);
    nl_cli_moe_close(&mo, r.f);
    nl_cli_run_close(&r);
    return rc;
}
