/* report.h — paper-ready figures from the results database: CSV + gnuplot → PNG and PDF,
 * and an index.html with captions.
 *
 * A figure is data, not code: an SQL query over the analysis tables that returns rows
 * (panel TEXT, series TEXT, x REAL, y REAL) for one run (bound as ?1), a gnuplot template
 * under plots/ and its labels. The report pivots the rows into one CSV per panel (header
 * `x,<series>…`, rows sorted by x, NaN where a series has no value) beside the figure, writes
 * NAME.gp (the figure's settings + the template, which is compiled into the binary from
 * plots/), and runs gnuplot (an external program) on it in the output directory, which
 * writes NAME.png and NAME.pdf — so `gnuplot NAME.gp` there redraws a figure after editing.
 * Each figure uses the latest complete run of its analysis kind (or the run given for that
 * kind); a figure whose analysis has no complete run is listed in index.html as missing,
 * never drawn from partial data.
 * Checked by tests/report.sh (every file exists, every gnuplot call exits 0).
 */
#ifndef NEURONLAB_REPORT_H
#define NEURONLAB_REPORT_H

#include "neuronlab/results.h"

typedef struct {
    const char *name;     /* file stem in the output directory */
    const char *kind;     /* analysis kind (runs.kind) whose run it draws */
    const char *title;    /* heading in index.html */
    const char *caption;  /* what the figure shows, for index.html */
    const char *sql;      /* rows (panel, series, x, y) for run ?1, ordered as they should appear */
    const char *template; /* plots/<template>.gp */
    const char *xlabel, *ylabel;
    int logx, logy;
    const char *style;    /* lines, linespoints, histeps (a histogram of bin centres) */
    const char *xrange;   /* gnuplot range "0:1", or NULL for automatic */
} nl_figure;

/* The templates compiled in from the .gp files of plots/ (generated build/gen/plots.c). */
typedef struct {
    const char *name; /* file stem: "lines" */
    const char *text;
} nl_plot_template;
extern const nl_plot_template nl_plot_templates[];
extern const int nl_n_plot_templates;

/* The figures neuronlab draws, in report order (report.c). */
extern const nl_figure nl_figures[];
extern const int nl_n_figures;

typedef struct {
    const char *out_dir;   /* created if missing */
    const char *gnuplot;   /* program, default "gnuplot" */
    const int64_t *runs;   /* optional: run id per figure kind, looked up by kind via kinds */
    const char *const *kinds;
    int n_runs;
} nl_report_opts;

typedef struct {
    int drawn;   /* figures written (PNG + PDF + CSV) */
    int missing; /* figures without a complete run */
} nl_report_summary;

/* Writes the report. Errors: the database (results.h), an unwritable directory, a missing
 * template, gnuplot not installed or failing (the message quotes its first error line). */
nl_status nl_report_write(nl_ctx *ctx, nl_results *db, const nl_report_opts *opts, nl_report_summary *sum);

#endif
