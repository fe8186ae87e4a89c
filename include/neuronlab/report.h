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
 * never drawn from partial data (so is one whose query finds no rows, or names a table the
 * database does not have).
 *
 * Heatmaps (template "heatmap"): the SQL returns (panel TEXT, row TEXT, col TEXT, value REAL)
 * instead, and each panel is pivoted into a matrix CSV: header `<xlabel>,col1,col2,…`, then
 * one line `rowname,v1,v2,…` per row, rows and columns in order of first appearance in the
 * query (its ORDER BY decides), NaN for a cell without a row (or with a NULL value); a later
 * row for the same cell replaces an earlier one. In CSV names (series, rows, columns, the
 * xlabel) a comma becomes ';', a double quote an apostrophe, a line break a space. NAME.gp gets
 * cbmin/cbmax, the smallest and largest finite value over all cells of all panels (one colour
 * scale per figure: diverging and centred at 0 when the values have both signs, sequential
 * from 0 otherwise), and the panels' sizes. ylabel labels the colour box, xlabel the columns;
 * style is the printf format of the cell annotations (one conversion of e, f or g, e.g.
 * "%.1f"; NULL → "%.2f"); logx, logy and xrange are unused.
 * Checked by tests/report.sh (every file exists, every gnuplot call exits 0, heatmap CSVs).
 */
#ifndef NEURONLAB_REPORT_H
#define NEURONLAB_REPORT_H

#include "neuronlab/results.h"

typedef struct {
    const char *name;     /* file stem in the output directory */
    const char *kind;     /* analysis kind (runs.kind) whose run it draws */
    const char *title;    /* heading in index.html */
    const char *caption;  /* what the figure shows, for index.html */
    const char *sql;      /* rows (panel, series, x, y) for run ?1, ordered as they should appear;
                             heatmap: rows (panel, row, col, value) */
    const char *template; /* plots/<template>.gp: "lines" or "heatmap" */
    const char *xlabel, *ylabel; /* heatmap: label of the columns, of the colour box */
    int logx, logy;
    const char *style;    /* lines, linespoints, histeps (a histogram of bin centres);
                             heatmap: printf format of the cell annotations, "%.1f" */
    const char *xrange;   /* gnuplot range "0:1", or NULL for automatic */
    const char *key;      /* lines: gnuplot key placement ("outside right top vertical"); NULL → the template's */
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
 * template, a heatmap style that is not a one-number printf format, gnuplot not installed or
 * failing (the message quotes its first error line). */
nl_status nl_report_write(nl_ctx *ctx, nl_results *db, const nl_report_opts *opts, nl_report_summary *sum);

#endif
