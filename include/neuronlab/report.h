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
 * row for the same cell replaces an earlier one. NAME.gp gets
 * cbmin/cbmax, the smallest and largest finite value over all cells of all panels (one colour
 * scale per figure: diverging and centred at 0 when the values have both signs, sequential
 * from 0 otherwise), and the panels' sizes. ylabel labels the colour box, xlabel the columns;
 * style is the printf format of the cell annotations (one conversion of e, f or g, e.g.
 * "%.1f"; NULL → "%.2f"); logx, logy and xrange are unused. A fifth column (optional) is the
 * cell's spread (e.g. the standard deviation over seeds): a panel with any finite spread gets
 * a second matrix CSV `NAME-P-slug-spread.csv` of the same shape, and its cells are annotated
 * "value±spread". The annotations are written by the report, one file per panel
 * (NAME-P.cells: `col,row,value,text`, 0-based, no header), so gnuplot formats no numbers.
 * symlog > 0 maps the colours on a symmetric logarithmic scale, asinh(v / symlog): linear
 * within ±symlog, logarithmic beyond, so one large cell does not wash out the rest (for values
 * of one sign too: the overlap matrix uses it so that 0.04 and 0.09 differ beside a 0.6).
 *
 * Line figures: every panel of a figure shares one y range, the figure's finite values
 * (widened to cover yrange when given) with headroom, so a curve at the edge (a score of 1.0)
 * is not hidden under the border; NAME.gp gets it as ymin/ymax. logy = 1: logarithmic y;
 * symlog > 0: symmetric logarithmic y (asinh(y / symlog), linear within ±symlog, for values of
 * both signs spanning decades; zero and negative values are drawn). xrange fixes which points
 * are drawn (the rest are left out and counted); the axis is fitted to the data drawn.
 * sharedkey: one legend for the whole figure (in an empty panel slot, else above the panels)
 * instead of one per panel. Series styles: colours (Okabe–Ito without black), point types and
 * dash patterns differ per series, so overlapping curves stay distinguishable; a series named
 * "all layers" or "all tokens" is black and thicker (the aggregate), one named "random baseline" is a grey
 * dashed line without points (the chance level).
 *
 * Odd data (the templates must draw it, or the figure is listed as failed, never misdrawn):
 * - Strings from the database (panel titles, series, row and column names) are cleaned before
 *   they reach a CSV or gnuplot: a line break, tab or other control character becomes a space,
 *   an invalid UTF-8 byte U+FFFD; in CSV fields also a comma becomes ';' and a double quote an
 *   apostrophe (so no field needs quoting); a name longer than 60 characters is cut with '…'
 *   (it labels a tick or a legend entry). The CSVs may begin a line with '#': the templates
 *   read them with no comment character, and draw every data string with `noenhanced` (no
 *   markup: `_ ^ @ { } &` are shown as they are). A panel title is cut at 120 characters with
 *   '…' (NAME.titles, one per line).
 * - Values: NULL is a missing value; NaN, ±Inf and text that is not a number are missing too
 *   (NaN in the CSV; an x that is not finite drops its row) and counted in the figure's caption
 *   in index.html ("Left out: …"), as are values ≤ 0 on a logarithmic axis and points outside
 *   a fixed xrange (both left out). A line
 *   panel without any finite value is left out (counted there too); a figure without any
 *   finite value is listed as not drawn, without data.
 * - Numbers written into NAME.gp are floats (cbmin = 0.0), and the templates compute in floats
 *   and guard logarithms, so constant, all-zero, one-cell and integer data draw.
 * - Characters that no installed font has (CJK, emoji on a machine with only DejaVu) are drawn
 *   by cairo as oversized boxes: install fonts that cover the labels (fonts-noto-cjk …).
 * Checked by tests/report.sh (every file exists, every gnuplot call exits 0, heatmap CSVs) and
 * tests/report_degenerate.sh (degenerate data, hostile labels, a failing figure, Ctrl-C).
 */
#ifndef NEURONLAB_REPORT_H
#define NEURONLAB_REPORT_H

#include <stdio.h>

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
    const char *yrange;   /* lines: "lo:hi" the shared y axis always covers (e.g. "0:1"), or NULL */
    int sharedkey;        /* lines: one legend for all panels */
    double symlog;        /* > 0: symmetric log y axis (lines) or colour scale (heatmap), linear within ±symlog */
    const char *ylabel_sql; /* optional: a query of run ?1 whose first text replaces ylabel (e.g. the
                               scoring method the run used); NULL, no row or an error → ylabel */
    const char *caption_sql; /* optional: a query of run ?1 whose first text is appended to the caption in
                                index.html (what this run did, e.g. the evaluated documents) */
} nl_figure;

/* The templates compiled in from the .gp files of plots/ (generated build/gen/plots.c). */
typedef struct {
    const char *name; /* file stem: "lines" */
    const char *text;
} nl_plot_template;
extern const nl_plot_template nl_plot_templates[];
extern const int nl_n_plot_templates;

/* The figures neuronlab draws, in report order (report.c): nl_figures (figures.c), then the
 * expert figures of a native mixture-of-experts model (figures_experts.c: kinds "experts" and
 * "prune_experts"). */
extern const nl_figure nl_figures[];
extern const int nl_n_figures;
extern const nl_figure nl_expert_figures[];
extern const int nl_n_expert_figures;

typedef struct {
    const char *out_dir;   /* created if missing */
    const char *gnuplot;   /* program, default "gnuplot" */
    const int64_t *runs;   /* optional: run id per figure kind, looked up by kind via kinds */
    const char *const *kinds;
    int n_runs;
    int neurons;           /* 1: also write the neuron pages (nl_report_neurons) of the latest complete
                              "neurons" run, or the run given for kind "neurons" */
} nl_report_opts;

typedef struct {
    const char *figure; /* nl_figures[i].name (static) */
    char *why;          /* owned: one line, what failed ("gnuplot failed on 'overlap.gp': \"overlap.gp\" line 91:
                           undefined value"); NULL when out of memory */
    char *log;          /* owned: gnuplot's output, OUT_DIR/NAME.log (a path valid from the caller's working
                           directory), or NULL when gnuplot did not run */
} nl_report_failure;

typedef struct {
    int drawn;   /* figures written (PNG + PDF + CSV) */
    int missing; /* figures without data: no complete run, no rows, or no finite value in them */
    int failed;  /* figures with data that could not be drawn; the causes in failures[0..failed) */
    nl_report_failure *failures; /* owned: nl_report_summary_release */
} nl_report_summary;

/* Writes the report: every figure it can draw, and index.html listing every figure — drawn,
 * without data (and why), or failed (the cause, a link to gnuplot's log; failures are also
 * listed at the top). A figure whose query or gnuplot call fails does not stop the others:
 * it is counted in sum->failed and NL_OK is returned (the caller decides the exit status:
 * the CLI exits 1). The log of a failed figure is kept as OUT_DIR/NAME.log; on success it is
 * removed, and a failed figure leaves no NAME.png or NAME.pdf behind.
 * Errors that stop the report (index.html is not written): the database (results.h), an
 * unwritable directory, gnuplot not installed (no figure could be drawn), out of memory.
 * NL_EINTR when nl_interrupted is set (Ctrl-C): the figure being drawn is stopped, index.html
 * is written with the figures drawn so far and the rest listed as interrupted.
 * Release sum with nl_report_summary_release in every case. */
nl_status nl_report_write(nl_ctx *ctx, nl_results *db, const nl_report_opts *opts, nl_report_summary *sum);
void nl_report_summary_release(nl_report_summary *sum); /* NULL or zeroed: no-op */

/* The neuron pages (src/report/neurons_html.c) of run `run` (kind "neurons"; < 0: none, which
 * index.html states): OUT_DIR/neurons/index.html and OUT_DIR/neurons/layer-L.html per layer, a
 * section with the anchor #nI per neuron (statistics, frequencies, |a| histogram as inline SVG,
 * ability scores, the top contexts with the token marked, every database string HTML-escaped);
 * writes into idx the section of index.html that links them. Pages are written whole.
 * Errors: the database (a run that is not a neurons run), an unwritable directory, NL_EINTR. */
nl_status nl_report_neurons(nl_ctx *ctx, nl_results *db, const char *out_dir, int64_t run, FILE *idx);

#endif
