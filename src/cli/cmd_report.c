/* cmd_report.c — `neuronlab report --db results.db -o report/ [--run KIND=ID]… [--gnuplot PROG]
 * [--neurons]`: draws every figure of the results database as PNG + PDF with its CSV and gnuplot
 * script, and writes index.html (contract in report.h); --neurons adds the neuron pages of a
 * `neuronlab neurons` run (report/neurons/, nl_report_neurons).
 * Exit status: 0 when every figure that has data was drawn (figures without data are listed in
 * index.html and do not count); 1 when a figure with data could not be drawn — the others are
 * still drawn, index.html is written and lists the failure, and stderr gets one line per failed
 * figure (`neuronlab report: figure 'NAME' not drawn: CAUSE (see DIR/NAME.log)`), so scripts
 * notice; 1 with one line on stderr and no index.html when nothing can be drawn (the database
 * cannot be read, the directory cannot be written, gnuplot is not installed); 130 after
 * Ctrl-C (index.html lists what was drawn before); 2 on a usage error.
 * Checked by tests/report.sh and tests/report_degenerate.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/report.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_report[] = {
    {"--db", "results.db", 1, "the results database (opened read-only)", NULL},
    {"-o, --out", "DIR", 1, "output folder: NAME.png, NAME.pdf, NAME-<panel>.csv, NAME.gp and index.html", NULL},
    {"--run", "KIND=ID", 0, "draw run ID for the analysis KIND (sparsity=3); repeat for several kinds", "the latest complete run of each kind"},
    {"--gnuplot", "PROG", 0, "the gnuplot program to run", "gnuplot"},
    {"--neurons", NULL, 0, "also write the neuron pages (DIR/neurons/) of a `neuronlab neurons` run, linked from index.html",
     "off; --run neurons=ID picks the run, else the latest"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_report = {"report", NULL,
                                  "draw the figures of a results database (PNG, PDF, CSV, gnuplot script) and an index.html", run};

#define MAX_RUNS 32

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_report;
    const char *db_path = NULL, *out = NULL, *gnuplot = NULL, *v;
    const char *kinds[MAX_RUNS];
    char kind_buf[MAX_RUNS][64];
    int64_t runs[MAX_RUNS];
    int n_runs = 0, k, neurons = 0;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_opt(argc, argv, &i, "--db", &v)) != 0) {
            if (k < 0) return nl_cli_usage(cmd, "--db needs a database path");
            db_path = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "-o", &v)) != 0 || (k = nl_cli_opt(argc, argv, &i, "--out", &v)) != 0) {
            if (k < 0) return nl_cli_usage(cmd, "-o needs a directory");
            out = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--gnuplot", &v)) != 0) {
            if (k < 0) return nl_cli_usage(cmd, "--gnuplot needs a program");
            gnuplot = v;
        } else if (!strcmp(argv[i], "--neurons")) {
            neurons = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--run", &v)) != 0) {
            const char *eq = k > 0 ? strchr(v, '=') : NULL;
            long id;
            if (!eq || eq == v || (size_t)(eq - v) >= sizeof kind_buf[0] || !nl_cli_int(eq + 1, 1, 1L << 62, &id))
                return nl_cli_usage(cmd, "--run needs KIND=ID, e.g. --run sparsity=3");
            if (n_runs == MAX_RUNS) return nl_cli_usage(cmd, "at most %d --run options", MAX_RUNS);
            snprintf(kind_buf[n_runs], sizeof kind_buf[0], "%.*s", (int)(eq - v), v);
            kinds[n_runs] = kind_buf[n_runs];
            runs[n_runs++] = id;
        } else {
            return nl_cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!db_path) return nl_cli_usage(cmd, "missing --db results.db");
    if (!out) return nl_cli_usage(cmd, "missing -o DIR");
    nl_results *db;
    nl_status st = nl_results_open(ctx, db_path, 1, &db);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    nl_report_opts o = {.out_dir = out, .gnuplot = gnuplot, .runs = runs, .kinds = kinds, .n_runs = n_runs, .neurons = neurons};
    nl_report_summary sum;
    st = nl_report_write(ctx, db, &o, &sum);
    nl_results_close(db);
    for (int i = 0; i < sum.failed; i++) {
        const nl_report_failure *f = &sum.failures[i];
        fprintf(stderr, "neuronlab report: figure '%s' not drawn: %s", f->figure, f->why ? f->why : "out of memory");
        if (f->log) fprintf(stderr, " (see %s)", f->log);
        fputc('\n', stderr);
    }
    int rc;
    if (st == NL_EINTR) {
        fprintf(stderr, "neuronlab: %s\n", ctx->msg);
        rc = 130;
    } else if (st != NL_OK) {
        rc = nl_cli_fail(ctx, st);
    } else {
        printf("report: %s/index.html (%d figures drawn, %d without data", out, sum.drawn, sum.missing);
        if (sum.failed) printf(", %d failed", sum.failed);
        printf(")\n");
        rc = sum.failed ? 1 : 0;
    }
    nl_report_summary_release(&sum);
    return rc;
}
