/* cmd_sparsity.c — `neuronlab sparsity acts.h5 --db results.db [--model MODEL] [options]`:
 * how sparse the FFN activations are (analyses/sparsity.h has the definitions and tables).
 * The analysis validates its inputs before writing anything, writes one run; prints a per-layer
 * summary (or --json) on stdout. Ctrl-C keeps the finished layers (run 'interrupted', exit
 * 130). Checked by tests/sparsity_cli.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/sparsity.h"
#include "cli/cli.h"
#include "neuronlab/summary_h5.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_sparsity[] = {
    {"acts.h5", NULL, 1, "the activation file (neuronlab record), or a summary (record --stats: no CETT)", NULL},
    {"--db", "results.db", 1, "the results database (created when missing)", NULL},
    {"--model", "MODEL", 0, "the model whose W_out CETT needs (its shape must match the file)", "the model named in the file"},
    {"--no-cett", NULL, 0, "skip CETT (no model needed)", NULL},
    {"--cett", "LIST", 0, "target CETT values, each in (0, 1)", "0.1,0.2"},
    {"--cett-tokens", "N", 0, "evaluate CETT on an evenly spaced sample of N tokens", "every token"},
    {"--thresholds", "LIST", 0, "activation-frequency thresholds on r = value / the token's max, each in [0, 1)", "0,0.01,0.1,0.2"},
    {"--dead", "T", 0, "dead: r never exceeds T", "0.01"},
    {"--resident", "T", 0, "resident: r > T in at least --resident-frac of the tokens", "0.1"},
    {"--resident-frac", "F", 0, "the fraction of tokens for resident", "0.9"},
    {"--no-label-neurons", NULL, 0, "write per-neuron rows for all tokens only, not per label", NULL},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {"--block", "N", 0, "rows of ffn_act read at a time (results do not depend on it)", "about 8 MiB of activations"},
    {"--json", NULL, 0, "print the summary as JSON", NULL},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_sparsity = {
    "sparsity",
    NULL,
    "how sparse the FFN activations are: distribution of |a| and |a|·‖W_out‖ relative to each token's max, neuron "
    "frequencies, dead/resident neurons, sparsity at a target CETT (defaults: --cett 0.1,0.2 --thresholds 0,0.01,0.1,0.2 "
    "--dead 0.01 --resident 0.1 --resident-frac 0.9)",
    run};

/* The allowed range of an option's numbers: lo..hi, each end open or closed. */
typedef struct {
    double lo, hi;
    int lo_open, hi_open;
    const char *what; /* "a CETT target", "a threshold", "a fraction" */
} range;

static const range R_TARGET = {0, 1, 1, 1, "a CETT target"}, R_THRESH = {0, 1, 0, 1, "a threshold"},
                   R_FRAC = {0, 1, 1, 0, "a fraction"};

static int in_range(double v, const range *r) {
    return (r->lo_open ? v > r->lo : v >= r->lo) && (r->hi_open ? v < r->hi : v <= r->hi);
}

/* One number VALUE of option opt in range r; returns 1, or prints the usage error and returns 0. */
static int parse_one(const char *opt, const char *v, const range *r, double *out, int *rc) {
    if (nl_cli_double(v, out) && in_range(*out, r)) return 1;
    *rc = nl_cli_usage(&nl_cmd_sparsity, "%s: '%s' is not %s in %c%g, %g%c", opt, v, r->what, r->lo_open ? '(' : '[', r->lo,
                       r->hi, r->hi_open ? ')' : ']');
    return 0;
}

/* A list "0.1,0.2" of at most max distinct numbers in range r into out; returns the count, or
 * prints the usage error (the item at fault and what is allowed) and returns -1 with *rc = 2. */
static int parse_list(const char *opt, const char *v, const range *r, double *out, int max, int *rc) {
    char item[64];
    int n = 0;
    for (const char *p = v;;) {
        size_t len = strcspn(p, ",");
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item - 1 ? len : sizeof item - 1), p);
        if (n == max) {
            *rc = nl_cli_usage(&nl_cmd_sparsity, "%s: at most %d values", opt, max);
            return -1;
        }
        if (len >= sizeof item) memcpy(item + sizeof item - 4, "...", 4); /* too long for a number: refused as it is */
        if (!parse_one(opt, item, r, &out[n], rc)) return -1;
        for (int j = 0; j < n; j++)
            if (out[j] == out[n]) {
                *rc = nl_cli_usage(&nl_cmd_sparsity, "%s: %g is given twice", opt, out[n]);
                return -1;
            }
        n++;
        if (!p[len]) return n;
        p += len + 1;
    }
}

static void jnum(double v) {
    if (isnan(v) || isinf(v)) fputs("null", stdout);
    else printf("%.9g", v);
}

static void print_json(const nl_sparsity_result *s, const char *acts, const char *dbp, int64_t rows_read) {
    const nl_h5_info *in = s->info;
    const int64_t run_id = s->run_id;
    const int n = s->n_rows;
    const nl_sparsity_row *rows = s->rows;
    printf("{\"source\":");
    nl_cli_json_str(acts);
    printf(",\"db\":");
    nl_cli_json_str(dbp);
    printf(",\"run_id\":%lld,\"model\":", (long long)run_id);
    if (s->model) nl_cli_json_str(s->model);
    else fputs("null", stdout);
    printf(",\"input\":\"%s\"", s->from_summary ? "summary" : "activations");
    printf(",\"file_complete\":%s,\"tokens\":%lld,\"d_ff\":%d,\"cett\":%s,\"rows_read\":%lld,\"rows\":[",
           in->complete ? "true" : "false", (long long)in->n_tokens, in->meta.d_ff, s->model ? "true" : "false",
           (long long)rows_read);
    static const char *ind[2] = {"value", "norm"};
    for (int i = 0; i < n; i++) {
        const nl_sparsity_row *r = &rows[i];
        printf("%s{\"layer\":%d,\"label\":", i ? "," : "", r->layer);
        nl_cli_json_str(r->label);
        printf(",\"tokens\":%lld,\"neurons\":%lld", (long long)r->tokens, (long long)r->neurons);
        for (int x = 0; x < 2; x++) {
            printf(",\"%s\":{\"mean_r\":", ind[x]);
            jnum(r->ind[x].mean_r);
            printf(",\"frac_zero\":");
            jnum(r->ind[x].frac_zero);
            printf(",\"frac_below_0_1\":");
            jnum(r->ind[x].frac_below_0_1);
            printf(",\"frac_below_0_2\":");
            jnum(r->ind[x].frac_below_0_2);
            printf(",\"quantiles\":{");
            for (int q = 0; q < NL_SPARSITY_N_QUANTILES; q++) {
                printf("%s\"%g\":", q ? "," : "", nl_sparsity_quantiles[q]);
                jnum(r->ind[x].quantile[q]);
            }
            printf("}}");
        }
        printf(",\"dead\":%lld,\"resident\":%lld,\"cett\":[", (long long)r->dead, (long long)r->resident);
        for (int j = 0; j < r->n_cett; j++) {
            printf("%s{\"target\":%g,\"epsilon\":", j ? "," : "", r->cett[j].target);
            jnum(r->cett[j].epsilon);
            printf(",\"sparsity\":");
            jnum(r->cett[j].sparsity);
            printf(",\"cett\":");
            jnum(r->cett[j].cett);
            printf(",\"tokens\":%lld}", (long long)r->cett[j].tokens);
        }
        printf("]}");
    }
    printf("]}\n");
}

static void print_text(const nl_sparsity_result *s, const char *acts, const char *dbp, const nl_sparsity_opts *o) {
    const nl_h5_info *in = s->info;
    const int64_t run_id = s->run_id;
    const int n = s->n_rows;
    const nl_sparsity_row *rows = s->rows;
    int n_labels = 0;
    for (int i = 0; i < n && rows[i].layer == rows[0].layer; i++) n_labels += rows[i].label[0] != 0;
    printf("sparsity of '%s': %lld tokens, %d layer%s x %d neurons%s -> run %lld in '%s'\n", acts, (long long)in->n_tokens,
           in->meta.n_rec, in->meta.n_rec == 1 ? "" : "s", in->meta.d_ff,
           n_labels ? " (per-label rows too)" : "", (long long)run_id, dbp);
    /* The CETT target shown: 0.2 when asked for, else the last one. */
    int cj = -1;
    double ct = 0;
    if (s->model) {
        cj = o->n_cett_targets - 1;
        for (int j = 0; j < o->n_cett_targets; j++)
            if (fabs(o->cett_targets[j] - 0.2) < 1e-12) cj = j;
        ct = o->cett_targets[cj];
    }
    char h1[32], h2[32];
    snprintf(h1, sizeof h1, "CETT-%g sparsity", ct);
    snprintf(h2, sizeof h2, "eps*(%g)", ct);
    printf("%-6s %12s %12s %18s %11s %8s %9s\n", "layer", "value<0.1max", "norm<0.1max", cj >= 0 ? h1 : "CETT", cj >= 0 ? h2 : "",
           "dead", "resident");
    for (int i = 0; i < n; i++) {
        const nl_sparsity_row *r = &rows[i];
        if (r->label[0]) continue;
        char lay[16], sp[32] = "-", ep[32] = "";
        if (r->layer < 0) snprintf(lay, sizeof lay, "all");
        else snprintf(lay, sizeof lay, "%d", r->layer);
        if (cj >= 0 && cj < r->n_cett) {
            snprintf(sp, sizeof sp, "%.4f", r->cett[cj].sparsity);
            if (isnan(r->cett[cj].epsilon)) snprintf(ep, sizeof ep, r->layer < 0 ? "" : "inf");
            else snprintf(ep, sizeof ep, "%.3e", r->cett[cj].epsilon);
        }
        printf("%-6s %12.4f %12.4f %18s %11s %8lld %9lld\n", lay, r->ind[0].frac_below_0_1, r->ind[1].frac_below_0_1, sp, ep,
               (long long)r->dead, (long long)r->resident);
    }
    if (s->from_summary)
        printf("from a summary (record --stats): counts, fractions, histograms, frequencies, dead/resident exact; means up to "
               "summation order; quantiles within one histogram bin (<= 1/32 relative) as from a dump; CETT not computed (it "
               "needs the per-token activations of a full dump)\n");
    else if (!s->model) printf("CETT: skipped (--no-cett)\n");
    printf("value/norm<0.1max: fraction of (token, neuron) pairs with |a| (|a|*||W_out[:,i]||) below 0.1 x the token's max; "
           "dead: r never > %g; resident: r > %g in >= %g%% of tokens\n",
           o->dead_threshold, o->resident_threshold, 100 * o->resident_frac);
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *me = &nl_cmd_sparsity;
    const char *acts = NULL, *v;
    int k, rc = 2, cett_asked = 0;
    long block = 0, ctok = 0;
    nl_cli_common co = {0};
    nl_sparsity_opts o;
    nl_sparsity_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_common_arg(me, ctx, NL_CLI_DB | NL_CLI_JSON | NL_CLI_THREADS, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if (!strcmp(argv[i], "--no-cett")) o.no_cett = 1;
        else if (!strcmp(argv[i], "--no-label-neurons")) o.label_neurons = 0;
        else if ((k = nl_cli_opt(argc, argv, &i, "--model", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(me, "--model needs a path");
            o.model = v;
            cett_asked = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--cett", &v))) {
            if (k < 0) return nl_cli_usage(me, "--cett needs a list like 0.1,0.2 (at most %d targets)", NL_SPARSITY_MAX_TARGETS);
            cett_asked = 1;
            if ((o.n_cett_targets = parse_list("--cett", v, &R_TARGET, o.cett_targets, NL_SPARSITY_MAX_TARGETS, &rc)) < 0)
                return rc;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--thresholds", &v))) {
            if (k < 0) return nl_cli_usage(me, "--thresholds needs a list like 0,0.01,0.1,0.2 (at most %d)", NL_SPARSITY_MAX_THRESHOLDS);
            if ((o.n_thresholds = parse_list("--thresholds", v, &R_THRESH, o.thresholds, NL_SPARSITY_MAX_THRESHOLDS, &rc)) < 0)
                return rc;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--dead", &v))) {
            if (k < 0) return nl_cli_usage(me, "--dead needs a threshold in [0, 1) like 0.01");
            if (!parse_one("--dead", v, &R_THRESH, &o.dead_threshold, &rc)) return rc;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--resident-frac", &v))) {
            if (k < 0) return nl_cli_usage(me, "--resident-frac needs a fraction in (0, 1] like 0.9");
            if (!parse_one("--resident-frac", v, &R_FRAC, &o.resident_frac, &rc)) return rc;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--resident", &v))) {
            if (k < 0) return nl_cli_usage(me, "--resident needs a threshold in [0, 1) like 0.1");
            if (!parse_one("--resident", v, &R_THRESH, &o.resident_threshold, &rc)) return rc;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--cett-tokens", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, (long)4e18, &ctok))
                return nl_cli_usage(me, "--cett-tokens needs a token count in 1..4e18");
            o.cett_tokens = ctok;
            cett_asked = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--block", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 1 << 24, &block)) return nl_cli_usage(me, "--block needs a row count in 1..%d", 1 << 24);
            o.block_rows = (int)block;
        } else if ((k = nl_cli_positional(me, argv, i, &acts)) != 1) {
            return k;
        }
    }
    if (!acts) return nl_cli_usage(me, "missing the activation file (acts.h5)");
    if (!co.db) return nl_cli_usage(me, "missing --db results.db");
    if (o.no_cett && o.model) return nl_cli_usage(me, "--model is for CETT: drop it or --no-cett");

    /* a summary has no per-token rows: CETT is left out unless asked for (then refused, naming why) */
    if (!cett_asked && nl_h5_file_kind(acts) == NL_H5_KIND_SUMMARY) o.no_cett = 1;
    nl_sparsity_result res = {0};
    nl_results *db = NULL;
    nl_progress prog;
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) {
        nl_progress_init(&prog, "sparsity", 0, "rows", ctx->progress);
        st = nl_sparsity_run(ctx, &o, acts, db, &prog, &res);
        nl_progress_end(&prog);
    }
    if (res.info && !res.info->complete)
        fprintf(stderr, "neuronlab: warning: '%s' is incomplete (its recording was interrupted): analysed its %lld finished documents\n",
                acts, (long long)res.info->n_docs);
    if (st == NL_OK) {
        /* prog.done: rows of ffn_act read, over all layers and passes */
        if (co.json) print_json(&res, acts, co.db, prog.done);
        else print_text(&res, acts, co.db, &o);
    }
    rc = nl_cli_finish(ctx, st, "interrupted: run %lld in '%s' keeps its finished layers (marked interrupted)",
                           (long long)res.run_id, co.db);
    nl_results_close(db);
    nl_sparsity_result_release(&res);
    return rc;
}
