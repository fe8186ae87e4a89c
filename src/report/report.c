/* report.c — figures from the results database (see report.h): per figure, the SQL rows are
 * pivoted into panel CSVs (line figures: x against series; heatmaps: row against column), a
 * NAME.gp (settings + compiled-in template) is written, and gnuplot draws NAME.png and
 * NAME.pdf; index.html lists every figure with its caption, its run's provenance and links to
 * the data. Checked by tests/report.sh. */
#include "neuronlab/report.h"

#include "neuronlab/atomic_file.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the rows of one figure, pivoted ---------------------------------------------------------- */
typedef struct {
    char **names;
    int n, cap;
} strlist;

static int strlist_index(strlist *l, const char *s, int add) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->names[i], s)) return i;
    if (!add) return -1;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        char **g = realloc(l->names, (size_t)cap * sizeof *g);
        if (!g) return -2;
        l->names = g, l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(s))) return -2;
    return l->n++;
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

typedef struct {
    int panel, series, col; /* heatmap: series = row name, col = column name */
    double x, y;            /* heatmap: y = value */
} row;

static int by_x(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Lower-case letters, digits and '-' for file names. */
static void slug(char *out, size_t n, const char *s) {
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        char c = *s;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) out[k++] = c;
        else if (k && out[k - 1] != '-') out[k++] = '-';
    }
    while (k && out[k - 1] == '-') k--;
    out[k] = 0;
    if (!k) snprintf(out, n, "all");
}

static void gp_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* A name inside a CSV line: a comma would split the header (and shift every series), a quote
 * or a line break would confuse gnuplot's reader. */
static void csv_name(FILE *f, const char *s) {
    for (; *s; s++) fputc(*s == ',' ? ';' : *s == '"' ? '\'' : (*s == '\n' || *s == '\r') ? ' ' : *s, f);
}

/* Characters (UTF-8 code points) of s: what the template needs to size margins. */
static int chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static void html(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

static const char *template_text(const char *name) {
    for (int i = 0; i < nl_n_plot_templates; i++)
        if (!strcmp(nl_plot_templates[i].name, name)) return nl_plot_templates[i].text;
    return NULL;
}

/* Runs `gnuplot NAME.gp` in dir, stderr to NAME.log; on failure the message quotes its first line. */
static nl_status run_gnuplot(nl_ctx *ctx, const char *prog, const char *dir, const char *name) {
    char gp[512], log[512];
    snprintf(gp, sizeof gp, "%s.gp", name);
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return nl_errorf(ctx, NL_EIO, "cannot start %s: %s", prog, strerror(errno));
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(126);
        FILE *e = freopen(log, "w", stderr);
        (void)e;
        execlp(prog, prog, gp, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return nl_errorf(ctx, NL_EIO, "cannot wait for %s: %s", prog, strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        remove(log);
        return NL_OK;
    }
    char first[300] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        while (fgets(first, sizeof first, f))
            if (strspn(first, " \t\r\n^") != strlen(first)) break;
        fclose(f);
        first[strcspn(first, "\r\n")] = 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return nl_errorf(ctx, NL_EIO, "cannot run '%s' (is gnuplot installed? Debian: apt-get install gnuplot-nox): %s", prog, first);
    return nl_errorf(ctx, NL_EIO, "gnuplot failed on '%s/%s.gp' (see %s): %s", dir, name, log, first);
}

static int64_t latest_run(sqlite3 *db, const char *kind) {
    sqlite3_stmt *s;
    int64_t id = -1;
    if (sqlite3_prepare_v2(db, "SELECT id FROM runs WHERE kind = ?1 AND status = 'complete' ORDER BY id DESC LIMIT 1", -1, &s,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return id;
}

/* Is fmt a printf format of exactly one number (e, f or g conversion), like "%.1f"? ("%%" allowed.) */
static int number_format(const char *fmt) {
    int conv = 0;
    for (const char *c = fmt; *c; c++) {
        if (*c != '%') continue;
        if (c[1] == '%') { c++; continue; }
        c++;
        c += strspn(c, "-+ #0");
        size_t w = strspn(c, "0123456789");
        if (w > 2) return 0;
        c += w;
        if (*c == '.') {
            c++;
            if ((w = strspn(c, "0123456789")) > 2) return 0;
            c += w;
        }
        if (!*c || !strchr("eEfgG", *c)) return 0;
        conv++;
    }
    return conv == 1;
}

/* What a heatmap's NAME.gp needs besides the CSVs: the colour range and the panels' sizes. */
typedef struct {
    double cbmin, cbmax;                  /* over the finite cells of all panels; NAN if none */
    int rowchars, colchars, annotchars;   /* longest row name, column name, cell annotation */
    int *prows, *pcols, *tchars;          /* per panel: rows, columns, title characters */
} heat_info;

/* Adds file to the space-separated list csvs (n bytes) and to files. */
static nl_status add_csv(nl_ctx *ctx, const nl_figure *fig, char *csvs, size_t n, const char *file, strlist *files) {
    if (strlen(csvs) + strlen(file) + 2 > n) return nl_errorf(ctx, NL_EINVAL, "figure '%s' has too many panels", fig->name);
    if (csvs[0]) strcat(csvs, " ");
    strcat(csvs, file);
    if (strlist_index(files, file, 1) < 0) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

/* Line figures: one CSV per panel, header `xlabel,series…`, rows sorted by x. */
static nl_status line_csvs(nl_ctx *ctx, const nl_report_opts *o, const nl_figure *fig, const row *rows, size_t n,
                           const strlist *panels, const strlist *series, FILE *titles, char *csvs, size_t ncsvs, strlist *files) {
    char path[4096];
    nl_status st = NL_OK;
    double *xs = malloc(n * sizeof *xs), *cell = NULL;
    if (!xs) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int p = 0; st == NL_OK && p < panels->n; p++) {
        /* distinct x of the panel, sorted; which series appear in it */
        size_t nx = 0;
        int *used = calloc((size_t)series->n, sizeof *used);
        if (!used) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        for (size_t i = 0; i < n; i++)
            if (rows[i].panel == p) { xs[nx++] = rows[i].x; used[rows[i].series] = 1; }
        qsort(xs, nx, sizeof *xs, by_x);
        size_t k = 0;
        for (size_t i = 0; i < nx; i++)
            if (!k || xs[i] != xs[k - 1]) xs[k++] = xs[i];
        nx = k;
        free(cell);
        cell = malloc(nx * (size_t)series->n * sizeof *cell);
        if (!cell) { free(used); st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        for (size_t i = 0; i < nx * (size_t)series->n; i++) cell[i] = NAN;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].panel != p) continue;
            double *hit = bsearch(&rows[i].x, xs, nx, sizeof *xs, by_x);
            cell[(size_t)(hit - xs) * (size_t)series->n + (size_t)rows[i].series] = rows[i].y;
        }
        char sl[128], file[512];
        slug(sl, sizeof sl, panels->names[p]);
        snprintf(file, sizeof file, "%s-%d-%s.csv", fig->name, p + 1, sl);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, file);
        FILE *f = fopen(path, "w");
        if (!f) { free(used); st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        csv_name(f, fig->xlabel);
        for (int j = 0; j < series->n; j++) {
            if (!used[j]) continue;
            fputc(',', f);
            csv_name(f, series->names[j]);
        }
        fputc('\n', f);
        for (size_t i = 0; i < nx; i++) {
            fprintf(f, "%.9g", xs[i]);
            for (int j = 0; j < series->n; j++)
                if (used[j]) {
                    double v = cell[i * (size_t)series->n + (size_t)j];
                    if (isnan(v)) fputs(",NaN", f);
                    else fprintf(f, ",%.9g", v);
                }
            fputc('\n', f);
        }
        free(used);
        if (fclose(f) != 0) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        fprintf(titles, "%s\n", panels->names[p][0] ? panels->names[p] : "all");
        st = add_csv(ctx, fig, csvs, ncsvs, file, files);
    }
    free(cell);
    free(xs);
    return st;
}

/* Heatmaps: one matrix CSV per panel, header `xlabel,col…`, one line `row,value…` per row,
 * rows and columns in order of first appearance; fills hi. */
static nl_status heat_csvs(nl_ctx *ctx, const nl_report_opts *o, const nl_figure *fig, const row *rows, size_t n,
                           const strlist *panels, const strlist *rnames, const strlist *cnames, FILE *titles, char *csvs,
                           size_t ncsvs, strlist *files, heat_info *hi) {
    const char *fmt = fig->style ? fig->style : "%.2f";
    char path[4096];
    nl_status st = NL_OK;
    hi->cbmin = hi->cbmax = NAN;
    hi->prows = calloc((size_t)panels->n, sizeof *hi->prows);
    hi->pcols = calloc((size_t)panels->n, sizeof *hi->pcols);
    hi->tchars = calloc((size_t)panels->n, sizeof *hi->tchars);
    int *rl = malloc((size_t)rnames->n * sizeof *rl), *cl = malloc((size_t)cnames->n * sizeof *cl);
    int *ri = malloc((size_t)rnames->n * sizeof *ri), *ci = malloc((size_t)cnames->n * sizeof *ci);
    double *cell = NULL;
    if (!hi->prows || !hi->pcols || !hi->tchars || !rl || !cl || !ri || !ci) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int p = 0; st == NL_OK && p < panels->n; p++) {
        /* the panel's rows and columns in order of first appearance: rl/cl local → global, ri/ci global → local */
        int nr = 0, nc = 0;
        for (int i = 0; i < rnames->n; i++) ri[i] = -1;
        for (int i = 0; i < cnames->n; i++) ci[i] = -1;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].panel != p) continue;
            if (ri[rows[i].series] < 0) ri[rows[i].series] = nr, rl[nr++] = rows[i].series;
            if (ci[rows[i].col] < 0) ci[rows[i].col] = nc, cl[nc++] = rows[i].col;
        }
        free(cell);
        if (!(cell = malloc((size_t)nr * (size_t)nc * sizeof *cell))) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        for (size_t i = 0; i < (size_t)nr * (size_t)nc; i++) cell[i] = NAN;
        for (size_t i = 0; i < n; i++)
            if (rows[i].panel == p) cell[(size_t)ri[rows[i].series] * (size_t)nc + (size_t)ci[rows[i].col]] = rows[i].y;
        char sl[128], file[512];
        slug(sl, sizeof sl, panels->names[p]);
        snprintf(file, sizeof file, "%s-%d-%s.csv", fig->name, p + 1, sl);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, file);
        FILE *f = fopen(path, "w");
        if (!f) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        csv_name(f, fig->xlabel);
        for (int j = 0; j < nc; j++) {
            fputc(',', f);
            csv_name(f, cnames->names[cl[j]]);
            if (chars(cnames->names[cl[j]]) > hi->colchars) hi->colchars = chars(cnames->names[cl[j]]);
        }
        fputc('\n', f);
        for (int i = 0; i < nr; i++) {
            csv_name(f, rnames->names[rl[i]]);
            if (chars(rnames->names[rl[i]]) > hi->rowchars) hi->rowchars = chars(rnames->names[rl[i]]);
            for (int j = 0; j < nc; j++) {
                double v = cell[(size_t)i * (size_t)nc + (size_t)j];
                if (!isfinite(v)) {
                    fputs(",NaN", f);
                    continue;
                }
                fprintf(f, ",%.9g", v);
                if (isnan(hi->cbmin) || v < hi->cbmin) hi->cbmin = v;
                if (isnan(hi->cbmax) || v > hi->cbmax) hi->cbmax = v;
                char a[64];
                int w = snprintf(a, sizeof a, fmt, v);
                if (w > hi->annotchars) hi->annotchars = w;
            }
            fputc('\n', f);
        }
        if (fclose(f) != 0) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        const char *t = panels->names[p][0] ? panels->names[p] : "all";
        fprintf(titles, "%s\n", t);
        hi->prows[p] = nr, hi->pcols[p] = nc, hi->tchars[p] = chars(t);
        st = add_csv(ctx, fig, csvs, ncsvs, file, files);
    }
    free(cell);
    free(rl), free(cl), free(ri), free(ci);
    return st;
}

static void gp_ints(FILE *f, const char *name, const int *v, int n) {
    fprintf(f, "array %s[%d] = [", name, n);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fputs("]\n", f);
}

/* Draws one figure for run id. *drawn = 0 when the query returns no rows (or reads a table the
 * database does not have: the analysis never wrote such rows). */
static nl_status draw(nl_ctx *ctx, nl_results *db, const nl_report_opts *o, const nl_figure *fig, int64_t run, int *drawn,
                      strlist *files) {
    *drawn = 0;
    const int heat = !strcmp(fig->template, "heatmap");
    if (heat && fig->style && !number_format(fig->style))
        return nl_errorf(ctx, NL_EINVAL, "figure '%s': heatmap style '%s' is not a printf format of one number (like %%.1f)",
                         fig->name, fig->style);
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(h, fig->sql, -1, &s, NULL) != SQLITE_OK) {
        if (!strncmp(sqlite3_errmsg(h), "no such table", 13)) return NL_OK;
        char what[128];
        snprintf(what, sizeof what, "cannot query the data of figure '%s'", fig->name);
        return nl_results_error(ctx, db, what);
    }
    sqlite3_bind_int64(s, 1, run);
    strlist panels = {0}, series = {0}, cols = {0}; /* heatmap: series = row names, cols = column names */
    row *rows = NULL;
    size_t n = 0, cap = 0;
    nl_status st = NL_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(s, 0), *q = (const char *)sqlite3_column_text(s, 1);
        if (!heat && sqlite3_column_type(s, 2) == SQLITE_NULL) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            row *g = realloc(rows, cap * sizeof *g);
            if (!g) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            rows = g;
        }
        int pi = strlist_index(&panels, p ? p : "", 1), si = strlist_index(&series, q ? q : "", 1), ci = 0;
        if (heat) {
            const char *c = (const char *)sqlite3_column_text(s, 2);
            ci = strlist_index(&cols, c ? c : "", 1);
        }
        if (pi < 0 || si < 0 || ci < 0) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        double y = sqlite3_column_type(s, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(s, 3);
        rows[n++] = (row){pi, si, ci, heat ? 0 : sqlite3_column_double(s, 2), y};
    }
    if (st == NL_OK && rc != SQLITE_DONE) {
        char what[128];
        snprintf(what, sizeof what, "cannot read the data of figure '%s'", fig->name);
        st = nl_results_error(ctx, db, what);
    }
    sqlite3_finalize(s);
    char path[4096], csvs[8192] = "";
    FILE *titles = NULL;
    heat_info hi = {0};
    if (st == NL_OK && n > 0) {
        snprintf(path, sizeof path, "%s/%s.titles", o->out_dir, fig->name);
        if (!(titles = fopen(path, "w"))) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
    }
    if (st == NL_OK && n > 0)
        st = heat ? heat_csvs(ctx, o, fig, rows, n, &panels, &series, &cols, titles, csvs, sizeof csvs, files, &hi)
                  : line_csvs(ctx, o, fig, rows, n, &panels, &series, titles, csvs, sizeof csvs, files);
    if (titles && fclose(titles) != 0 && st == NL_OK) st = nl_errorf(ctx, NL_EIO, "cannot write the titles of '%s'", fig->name);
    if (st == NL_OK && n > 0) {
        const char *tpl = template_text(fig->template);
        if (!tpl) st = nl_errorf(ctx, NL_EINVAL, "figure '%s': no template plots/%s.gp in this build", fig->name, fig->template);
        snprintf(path, sizeof path, "%s/%s.gp", o->out_dir, fig->name);
        FILE *f = st == NL_OK ? fopen(path, "w") : NULL;
        if (st == NL_OK && !f) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
        if (f) {
            fprintf(f, "# %s — drawn by neuronlab report from run %lld (kind %s); rerun: gnuplot %s.gp\n", fig->name, (long long)run,
                    fig->kind, fig->name);
            fputs("csvs = ", f), gp_string(f, csvs), fputc('\n', f);
            fprintf(f, "titles = \"%s.titles\"\nout = \"%s\"\n", fig->name, fig->name);
            fputs("xlabel = ", f), gp_string(f, fig->xlabel), fputc('\n', f);
            fputs("ylabel = ", f), gp_string(f, fig->ylabel), fputc('\n', f);
            if (heat) {
                fputs("style = ", f), gp_string(f, fig->style ? fig->style : "%.2f"), fputc('\n', f);
                fputs("# colour range: smallest and largest value over all cells of all panels\n", f);
                fprintf(f, "cbmin = %.9g\ncbmax = %.9g\n", isnan(hi.cbmin) ? 0 : hi.cbmin, isnan(hi.cbmax) ? 0 : hi.cbmax);
                fputs("# sizes for the layout (characters of the longest row name, column name, annotation)\n", f);
                fprintf(f, "rowchars = %d\ncolchars = %d\nannotchars = %d\n", hi.rowchars, hi.colchars, hi.annotchars);
                gp_ints(f, "prows", hi.prows, panels.n);
                gp_ints(f, "pcols", hi.pcols, panels.n);
                gp_ints(f, "tchars", hi.tchars, panels.n);
            } else {
                fprintf(f, "logx = %d\nlogy = %d\nstyle = \"%s\"\n", fig->logx, fig->logy, fig->style ? fig->style : "lines");
                const char *colon = fig->xrange ? strchr(fig->xrange, ':') : NULL;
                if (colon) fprintf(f, "xmin = \"%.*s\"\nxmax = \"%s\"\n", (int)(colon - fig->xrange), fig->xrange, colon + 1);
                if (fig->key) fputs("key = ", f), gp_string(f, fig->key), fputc('\n', f);
            }
            fputc('\n', f);
            fputs(tpl, f);
            if (fclose(f) != 0) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
        }
        if (st == NL_OK) st = run_gnuplot(ctx, o->gnuplot ? o->gnuplot : "gnuplot", o->out_dir, fig->name);
        if (st == NL_OK) *drawn = 1;
    }
    free(hi.prows), free(hi.pcols), free(hi.tchars);
    free(rows);
    strlist_free(&panels);
    strlist_free(&series);
    strlist_free(&cols);
    return st;
}

/* The provenance line of a run for index.html. */
static void run_line(FILE *f, sqlite3 *db, int64_t run) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT kind, model, dataset, source, params, tool_version, started_at, ended_at FROM runs WHERE id = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(s, 1, run);
    if (sqlite3_step(s) == SQLITE_ROW) {
        static const char *const what[] = {"kind", "model", "dataset", "source", "parameters", "tool", "started", "ended"};
        fprintf(f, "<p class=\"prov\">run %lld", (long long)run);
        for (int c = 0; c < 8; c++) {
            const char *v = (const char *)sqlite3_column_text(s, c);
            if (!v || !*v) continue;
            fprintf(f, " · %s <code>", what[c]);
            html(f, v);
            fputs("</code>", f);
        }
        fputs("</p>\n", f);
    }
    sqlite3_finalize(s);
}

nl_status nl_report_write(nl_ctx *ctx, nl_results *db, const nl_report_opts *o, nl_report_summary *sum) {
    memset(sum, 0, sizeof *sum);
    if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
        return nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", o->out_dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", o->out_dir);
    nl_atomic_file af;
    nl_status ast = nl_atomic_open(ctx, path, &af);
    if (ast != NL_OK) return ast;
    FILE *idx = af.f;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>neuronlab report</title>\n"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "figure{margin:2em 0;border-top:1px solid #ddd;padding-top:1em}img{max-width:100%}"
          "figcaption{margin-top:.5em;line-height:1.4}.prov{color:#666;font-size:.85em}"
          ".missing{color:#a33}code{font-size:.9em}</style></head><body>\n",
          idx);
    fprintf(idx, "<h1>neuronlab report</h1>\n<p>Database <code>");
    html(idx, nl_results_path(db));
    fprintf(idx, "</code>, drawn by neuronlab %s. Each figure has its data as CSV and its gnuplot script beside it.</p>\n",
            NL_VERSION);
    nl_status st = NL_OK;
    strlist files = {0};
    for (int i = 0; st == NL_OK && i < nl_n_figures; i++) {
        const nl_figure *fig = &nl_figures[i];
        int64_t run = -1;
        for (int k = 0; k < o->n_runs; k++)
            if (!strcmp(o->kinds[k], fig->kind)) run = o->runs[k];
        if (run < 0) run = latest_run(nl_results_db(db), fig->kind);
        int drawn = 0;
        int before = files.n;
        if (run >= 0) st = draw(ctx, db, o, fig, run, &drawn, &files);
        if (st != NL_OK) break;
        fprintf(idx, "<figure id=\"%s\">\n<h2>", fig->name);
        html(idx, fig->title);
        fputs("</h2>\n", idx);
        if (drawn) {
            fprintf(idx, "<a href=\"%s.pdf\"><img src=\"%s.png\" alt=\"", fig->name, fig->name);
            html(idx, fig->title);
            fputs("\"></a>\n<figcaption>", idx);
            html(idx, fig->caption);
            fprintf(idx, "<br>Files: <a href=\"%s.png\">PNG</a> · <a href=\"%s.pdf\">PDF</a> · <a href=\"%s.gp\">gnuplot</a>", fig->name,
                    fig->name, fig->name);
            for (int k = before; k < files.n; k++) fprintf(idx, " · <a href=\"%s\">%s</a>", files.names[k], files.names[k]);
            fputs("</figcaption>\n", idx);
            run_line(idx, nl_results_db(db), run);
            sum->drawn++;
        } else {
            fprintf(idx, "<p class=\"missing\">Not drawn: %s.</p>\n",
                    run < 0 ? "the database has no complete run of this analysis" : "the run has no rows for this figure");
            fputs("<figcaption>", idx);
            html(idx, fig->caption);
            fputs("</figcaption>\n", idx);
            sum->missing++;
        }
        fputs("</figure>\n", idx);
    }
    fputs("</body></html>\n", idx);
    strlist_free(&files);
    if (st != NL_OK) {
        nl_atomic_abort(&af);
        return st;
    }
    return nl_atomic_commit(ctx, &af);
}
