/* cmd_perturb.c — `neuronlab perturb MODEL DATA.jsonl [--metric value,norm,random]
 * [--ratios 0,0.1,…,0.9] [--layers LIST] [--seed N] [--db results.db] [--json]` plus the forward-pass options
 * of ppl and --moe DIR --k K --fill zero|mean --router sim|oracle|mlp (masking then acts on the MoE
 * layers' effective activations, the run's params carry "moe"): perplexity with the lowest-indicator FFN neurons masked (analyses/perturb.h), a table
 * metric × ratio overall and per label on stdout, one run with its perturb rows in the
 * database. Ctrl-C keeps the finished settings (run 'interrupted', exit 130); an error after the
 * run started marks it 'failed' with the message. Bad option values are usage errors (exit 2).
 * Checked by tests/perturb_cli.sh. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/perturb.h"
#include "cli/cli.h"
#include "neuronlab/mpi.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_perturb = {
    "perturb", NL_CLI_RUN_USAGE " [--metric value,norm,random] [--ratios 0,0.1,...,0.9] [--layers LIST] [--seed N] "
    "[--db results.db] [--json] [--moe DIR --k K --fill zero|mean --router sim|oracle|mlp]",
    "perplexity with the floor(ratio x d_ff) lowest-indicator FFN neurons zeroed per token and layer (value |a|, norm "
    "|a|*||W_out[:,i]||, random control; defaults: all metrics, ratios 0,0.1,...,0.9, seed 0), overall and per label; "
    "--layers 0,2,5: mask only these model layers (default all); --db stores a run",
    run};

#define MAX_RATIOS 256
#define MAX_LAYERS 1024

/* "a,b,c" → ratios in [0, 1), no repeats; returns the count or -1 with why in err. */
static int parse_ratios(const char *s, double *out, char *err, size_t n) {
    int k = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || errno || !(v >= 0.0 && v < 1.0)) {
            size_t len = strcspn(p, ",");
            snprintf(err, n, "--ratios: '%.*s' is not a ratio in [0, 1)", (int)len, p);
            return -1;
        }
        for (int i = 0; i < k; i++)
            if (out[i] == v) {
                snprintf(err, n, "--ratios: %g is given twice", v);
                return -1;
            }
        if (k == MAX_RATIOS) {
            snprintf(err, n, "--ratios: more than %d ratios", MAX_RATIOS);
            return -1;
        }
        out[k++] = v;
        if (!*end) return k;
        p = end + 1;
    }
}

static int parse_metrics(const char *s, nl_mask_metric *out, char *err, size_t n) {
    int k = 0;
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, ",");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(len < 31 ? len : 31), p);
        int m = len < 31 ? nl_mask_metric_parse(name) : -1;
        if (m < 0) {
            snprintf(err, n, "--metric: '%.*s' is not one of value, norm, random", (int)len, p);
            return -1;
        }
        for (int i = 0; i < k; i++)
            if (out[i] == (nl_mask_metric)m) {
                snprintf(err, n, "--metric: '%s' is given twice", name);
                return -1;
            }
        out[k++] = (nl_mask_metric)m;
        if (!p[len]) return k;
        p += len + 1;
    }
}

static void json_sum(const char *key, nl_nll_sum s) {
    if (key) { nl_cli_json_str(key); putchar(':'); }
    if (s.n > 0) {
        printf("{\"tokens\":%lld,\"nll\":", (long long)s.n);
        nl_cli_json_num("%.6f", nl_nll_mean(s));
        printf(",\"ppl\":");
        nl_cli_json_num("%.6f", nl_nll_ppl(s));
        putchar('}');
    }
    else printf("{\"tokens\":0,\"nll\":null,\"ppl\":null}");
}

/* One block of the text table: ratio rows × metric columns for label li (-1 = all). */
static void print_block(const nl_perturb_opts *o, const nl_perturb_cell *cells, int li) {
    const int NR = o->n_ratios;
    printf("\n%-8s %6s", "ratio", "masked");
    for (int m = 0; m < o->n_metrics; m++) printf(" %12s", nl_mask_metric_name(o->metrics[m]));
    putchar('\n');
    for (int r = 0; r < NR; r++) {
        printf("%-8g %6d", o->ratios[r], cells[r].masked);
        for (int m = 0; m < o->n_metrics; m++) {
            const nl_perturb_cell *c = &cells[m * NR + r];
            nl_nll_sum s = c->done ? (li < 0 ? c->ppl.total : c->ppl.by_label[li]) : (nl_nll_sum){0, 0};
            if (c->done && s.n > 0) printf(" %12.4f", nl_nll_ppl(s));
            else printf(" %12s", "-");
        }
        putchar('\n');
    }
}

static void print_text(const nl_cli_run *r, const nl_perturb_opts *o, const nl_perturb_cell *cells, int64_t tokens) {
    const nl_dataset *ds = r->ds;
    const nl_config *c = nl_model_config(r->m);
    printf("model    %s\ndataset  %s (%d documents, %lld tokens, %lld predictions)\n", r->model, r->data, ds->n_docs,
           (long long)ds->n_tokens, (long long)tokens);
    printf("masking  the floor(ratio x %d) lowest-indicator FFN neurons per token in each of %d layers", c->d_ff,
           o->layers ? o->n_layers : c->n_layers);
    if (o->layers) {
        printf(" (only layers");
        for (int j = 0; j < o->n_layers; j++) printf("%s%d", j ? "," : " ", o->layers[j]);
        printf(" of %d; the others untouched)", c->n_layers);
    }
    printf(" (context %ld", r->ctx);
    for (int m = 0; m < o->n_metrics; m++)
        if (o->metrics[m] == NL_MASK_RANDOM) printf(", random seed %llu", (unsigned long long)o->seed);
    printf(")\n\nperplexity, all documents");
    print_block(o, cells, -1);
    for (int l = 0; l < ds->n_labels; l++) {
        if (!ds->labels[l][0]) continue;
        printf("\nperplexity, label '%s'", ds->labels[l]);
        print_block(o, cells, l);
    }
}

static void print_json(const nl_cli_run *r, const nl_perturb_opts *o, const nl_perturb_cell *cells, int64_t run_id,
                       const char *status) {
    const nl_dataset *ds = r->ds;
    const nl_config *c = nl_model_config(r->m);
    printf("{\"model\":");
    nl_cli_json_str(r->model);
    printf(",\"dataset\":");
    nl_cli_json_str(r->data);
    printf(",\"ctx\":%ld,\"stride\":%ld,\"seed\":%llu,\"n_layers\":%d,\"d_ff\":%d,\"run_id\":", r->ctx,
           r->stride ? r->stride : r->ctx / 2, (unsigned long long)o->seed, c->n_layers, c->d_ff);
    if (run_id > 0) printf("%lld", (long long)run_id);
    else printf("null");
    printf(",\"layers\":");
    if (o->layers) {
        for (int j = 0; j < o->n_layers; j++) printf("%s%d", j ? "," : "[", o->layers[j]);
        printf("]");
    } else printf("null");
    printf(",\"status\":\"%s\",\"results\":[", status);
    int k = 0;
    for (int i = 0; i < o->n_metrics * o->n_ratios; i++) {
        const nl_perturb_cell *x = &cells[i];
        if (!x->done) continue;
        if (k++) putchar(',');
        printf("{\"metric\":\"%s\",\"ratio\":%.15g,\"masked\":%d,", nl_mask_metric_name(x->metric), x->ratio, x->masked);
        if (x->ppl.total.n > 0)
        {
            printf("\"tokens\":%lld,\"nll\":", (long long)x->ppl.total.n);
            nl_cli_json_num("%.6f", nl_nll_mean(x->ppl.total));
            printf(",\"ppl\":");
            nl_cli_json_num("%.6f", nl_nll_ppl(x->ppl.total)); /* exp of a mean loss > 709 is inf: null */
        }
        else printf("\"tokens\":0,\"nll\":null,\"ppl\":null");
        printf(",\"by_label\":{");
        for (int l = 0, j = 0; l < ds->n_labels; l++) {
            if (!ds->labels[l][0]) continue;
            if (j++) putchar(',');
            json_sum(ds->labels[l], x->ppl.by_label[l]);
        }
        printf("}}");
    }
    printf("]}\n");
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    nl_cli_run r = {0};
    const nl_command *cmd = &nl_cmd_perturb;
    nl_mask_metric metrics[NL_MASK_N_METRICS];
    double ratios[MAX_RATIOS];
    int layers[MAX_LAYERS];
    nl_perturb_opts opt;
    nl_perturb_opts_init(&opt);
    nl_cli_common co = {0};
    const char *v;
    char err[256], moe_params[8192];
    nl_cli_moe mo = {0};
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(cmd, &r, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_moe_arg(cmd, &mo, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_JSON | NL_CLI_SEED, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--metric", &v)) || (k = nl_cli_opt(argc, argv, &i, "--metrics", &v))) {
            if (k < 0) return nl_cli_usage(cmd, "--metric needs a list like value,norm,random");
            if ((opt.n_metrics = parse_metrics(v, metrics, err, sizeof err)) < 0) return nl_cli_usage(cmd, "%s", err);
            opt.metrics = metrics;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--layers", &v))) {
            char *e;
            opt.n_layers = 0;
            for (const char *q = k > 0 ? v : ""; k > 0;) {
                long l = strtol(q, &e, 10);
                if (e == q || l < 0 || l > 1000000 || (*e && *e != ',') || opt.n_layers == MAX_LAYERS) {
                    k = -1;
                    break;
                }
                layers[opt.n_layers++] = (int)l;
                if (!*e) break;
                q = e + 1;
            }
            if (k < 0) return nl_cli_usage(cmd, "--layers needs a list of layer numbers like 0,2,5");
            opt.layers = layers;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--ratios", &v))) {
            if (k < 0) return nl_cli_usage(cmd, "--ratios needs a list like 0,0.5,0.9");
            if ((opt.n_ratios = parse_ratios(v, ratios, err, sizeof err)) < 0) return nl_cli_usage(cmd, "%s", err);
            opt.ratios = ratios;
        } else return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(cmd, &r) || nl_cli_moe_check(cmd, &mo)) return 2;
    if (co.have_seed) opt.seed = co.seed;

    /* The database first, so a bad one fails before the model is read. */
    nl_results *db = NULL;
    nl_perturb_result res = {0};
    nl_status st = co.db && nl_mpi_is_root() ? nl_results_open(ctx, co.db, 0, &db) : NL_OK; /* MPI: rank 0 writes */
    if (st == NL_OK && db) st = nl_perturb_create_tables(ctx, db);
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, r.m, r.f, 0);
    if (st == NL_OK) {
        opt.moe_json = nl_cli_moe_params(&mo, moe_params, sizeof moe_params);
        opt.stride = (int)r.stride, opt.batch = (int)r.batch, opt.model = r.model, opt.dataset = r.data;
        nl_progress prog;
        nl_progress_init(&prog, "perturb", 0, "tok", ctx->progress);
        st = nl_perturb_run(ctx, &opt, r.f, r.ds, db, &prog, &res);
        nl_progress_end(&prog);
    }
    int64_t predicted = 0;
    for (int i = 0; i < res.n_cells; i++)
        if (res.cells[i].done) predicted = res.cells[i].ppl.total.n;
    if (res.n_done && (st == NL_OK || st == NL_EINTR)) {
        if (co.json) print_json(&r, &opt, res.cells, res.run_id, st == NL_OK ? "complete" : "interrupted");
        else {
            print_text(&r, &opt, res.cells, predicted);
            if (mo.moe) putchar('\n');
            nl_cli_moe_print(stdout, &mo, nl_model_config(r.m));
        }
    }
    int rc;
    if (st == NL_EINTR && !db) rc = nl_cli_finish(ctx, st, "interrupted after %d of %d settings", res.n_done, res.n_cells);
    else rc = nl_cli_finish(ctx, st, "interrupted: '%s' keeps %d of %d settings (run %lld marked interrupted)", co.db, res.n_done,
                            res.n_cells, (long long)res.run_id);
    if (st == NL_OK && db) fprintf(stderr, "wrote run %lld to '%s': %d settings\n", (long long)res.run_id, co.db, res.n_cells);
    nl_perturb_result_release(&res);
    nl_results_close(db);
    nl_cli_moe_close(&mo, r.f);
    nl_cli_run_close(&r);
    return rc;
}
