/* report.c — figures from the results database (see report.h): per figure, the SQL rows are
 * pivoted into panel CSVs (line figures: x against series; heatmaps: row against column, with
 * a spread matrix and the cell annotations when the query gives a spread), a NAME.gp
 * (settings: the shared y range, the series of each panel, the colour range + compiled-in
 * template) is written, and gnuplot draws NAME.png and
 * NAME.pdf; index.html lists every figure with its caption, its run's provenance and links to
 * the data. A figure that cannot be drawn (gnuplot fails, its query fails) is skipped and
 * listed with its cause; the others are still drawn. Data strings are cleaned before they
 * reach gnuplot or a CSV (no line breaks or control characters, valid UTF-8, no ',' or '"' in
 * CSV fields) and non-finite values become missing cells. Checked by tests/report.sh and
 * tests/report_degenerate.sh. */
#include "neuronlab/report.h"

#include "neuronlab/atomic_file.h"
#include "neuronlab/h5store.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
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
    double e;               /* heatmap: the cell's spread (fifth column), NaN if none */
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

/* A gnuplot double-quoted string: backslash, quote and line breaks escaped. */
static void gp_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", f);
        else if (*s == '\r') fputs("\\r", f);
        else {
            if (*s == '"' || *s == '\\') fputc('\\', f);
            fputc(*s, f);
        }
    }
    fputc('"', f);
}

/* A number gnuplot reads as a float (a bare "0" would be an integer: 1/2 = 0 there). */
static void gp_real(FILE *f, const char *name, double v) {
    char b[64];
    snprintf(b, sizeof b, "%.9g", v);
    fprintf(f, "%s = %s%s\n", name, b, strpbrk(b, ".eEn") ? "" : ".0");
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one. */
static int utf8_len(const unsigned char *s) {
    if (s[0] < 0x80) return 1;
    int n = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!n || (n == 2 && s[0] < 0xc2) || (n == 4 && s[0] > 0xf4)) return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (n == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
    if (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0;
    return n;
}

/* A data string (label, ability, panel title) made safe to print: valid UTF-8 (a bad byte
 * becomes U+FFFD), line breaks, tabs and other control characters become spaces; for a CSV
 * field (csv) a comma becomes ';' and a double quote an apostrophe, so a field never splits
 * or opens a quote; at most maxchars characters (0: no limit), a cut one ending in '…'.
 * Returns a malloc'd string or NULL when out of memory. */
static char *clean(const char *s, int csv, int maxchars) {
    size_t n = strlen(s);
    char *o = malloc(3 * n + 4), *p = o;
    if (!o) return NULL;
    int chars = 0;
    for (const unsigned char *u = (const unsigned char *)s; *u;) {
        if (maxchars && chars == maxchars - 1) {
            /* room for the ellipsis only if more than one character is left */
            int k = utf8_len(u);
            if (u[k ? k : 1]) { memcpy(p, "\xe2\x80\xa6", 3), p += 3; break; }
        }
        int k = utf8_len(u);
        if (!k) { memcpy(p, "\xef\xbf\xbd", 3), p += 3, u++; }
        else if (*u < 0x20 || *u == 0x7f) *p++ = ' ', u++;
        else if (csv && *u == ',') *p++ = ';', u++;
        else if (csv && *u == '"') *p++ = '\'', u++;
        else { memcpy(p, u, (size_t)k), p += k, u += k; }
        chars++;
    }
    *p = 0;
    return o;
}

/* Characters (UTF-8 code points) of s: what the template needs to size margins. */
static int chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

#define NAME_CHARS 60 /* a longer series, row or column name is cut (with '…'): it labels a tick or a key entry */

/* A name inside a CSV line (see clean); returns its characters, -1 when out of memory. */
static int csv_name(FILE *f, const char *s) {
    char *c = clean(s, 1, NAME_CHARS);
    if (!c) return -1;
    fputs(c, f);
    int n = chars(c);
    free(c);
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

/* The cause of a gnuplot failure from its log: the line `"NAME.gp" line N: message` (the last
 * one: earlier ones are warnings), else the last line that is not blank or a caret marker. */
static void log_cause(const char *log, char *out, size_t n) {
    char line[1024], last[1024] = "", err[1024] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (strspn(line, " \t^") == strlen(line)) continue;
            snprintf(last, sizeof last, "%s", line + strspn(line, " \t"));
            const char *l = strstr(line, " line ");
            if (line[0] == '"' && l && strstr(l, ": ") && !strstr(l, ": warning:")) snprintf(err, sizeof err, "%s", line);
        }
        fclose(f);
    }
    snprintf(out, n, "%s", err[0] ? err : last[0] ? last : "no message in its log");
}

/* Runs `gnuplot NAME.gp` in dir, its stdout and stderr to dir/NAME.log (removed on success).
 * Returns NL_OK with why = "" when it drew the figure, NL_OK with why = the cause when gnuplot
 * failed (the log stays, its path in log), NL_EINTR after Ctrl-C (the child is stopped too),
 * NL_EIO when gnuplot cannot be started at all (not installed: every figure would fail). */
static nl_status run_gnuplot(nl_ctx *ctx, const char *prog, const char *dir, const char *name, char *why, size_t nwhy,
                             char *log, size_t nlog) {
    char gp[256];
    why[0] = 0;
    snprintf(gp, sizeof gp, "%s.gp", name);
    snprintf(log, nlog, "%s/%s.log", dir, name);
    int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (lfd < 0) return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", log, strerror(errno));
    int pfd[2]; /* the child writes errno here when exec fails; closed on exec */
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        close(lfd);
        return nl_errorf(ctx, NL_EIO, "cannot start %s: %s", prog, strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(lfd), close(pfd[0]), close(pfd[1]);
        return nl_errorf(ctx, NL_EIO, "cannot start %s: %s", prog, strerror(e));
    }
    if (pid == 0) {
        int e = 0;
        if (chdir(dir) != 0 || dup2(lfd, 1) < 0 || dup2(lfd, 2) < 0) e = errno;
        if (!e) {
            execlp(prog, prog, gp, (char *)NULL);
            e = errno;
        }
        if (write(pfd[1], &e, sizeof e) < 0) _exit(126);
        _exit(127);
    }
    close(lfd), close(pfd[1]);
    int exec_err = 0;
    ssize_t got;
    while ((got = read(pfd[0], &exec_err, sizeof exec_err)) < 0 && errno == EINTR) {}
    close(pfd[0]);
    int status, killed = 0;
    for (;;) {
        if (nl_interrupted && !killed) kill(pid, SIGINT), killed = 1; /* in case Ctrl-C reached only us */
        if (waitpid(pid, &status, 0) >= 0) break;
        if (errno != EINTR) return nl_errorf(ctx, NL_EIO, "cannot wait for %s: %s", prog, strerror(errno));
    }
    if (got == (ssize_t)sizeof exec_err) {
        remove(log);
        return nl_errorf(ctx, NL_EIO, "cannot run '%s' (is gnuplot installed? Debian: apt-get install gnuplot-nox): %s", prog,
                         strerror(exec_err));
    }
    if (nl_interrupted || (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)) {
        nl_interrupted = 1;
        return nl_errorf(ctx, NL_EINTR, "interrupted while gnuplot drew '%s'", name);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        remove(log);
        return NL_OK;
    }
    char cause[1024];
    if (WIFSIGNALED(status)) snprintf(cause, sizeof cause, "killed by signal %d", WTERMSIG(status));
    else log_cause(log, cause, sizeof cause);
    snprintf(why, nwhy, "gnuplot failed on '%s': %s", gp, cause);
    return NL_OK;
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

/* The space-separated list of a figure's CSV files (grows as needed). */
typedef struct {
    char *s;
    size_t n, cap;
} strbuf;

/* What a heatmap's NAME.gp needs besides the CSVs: the colour range and the panels' sizes. */
typedef struct {
    double cbmin, cbmax;                  /* over the finite cells of all panels; NAN if none */
    int rowchars, colchars, annotchars;   /* longest row name, column name, cell annotation */
    int *prows, *pcols, *tchars;          /* per panel: rows, columns, title characters */
    strbuf cells;                         /* the panels' annotation files (NAME-P.cells), space-separated */
} heat_info;

/* How one figure went. */
typedef struct {
    int drawn;        /* PNG and PDF written */
    int failed;       /* not drawn although it has data: why says what failed */
    char why[1400];   /* why it was not drawn; "" = the run has no rows for it */
    char log[4096];   /* gnuplot's log of a failure, else "" */
    long nonfinite;   /* values that were NaN, ±Inf or not numbers: drawn as missing */
    long nonpositive; /* values ≤ 0 left out of a logarithmic axis */
    long outside;     /* points outside the figure's fixed x range, left out */
    int emptypanels;  /* panels left out because none of their values is finite */
    char caption[640]; /* the figure's caption_sql text for this run, "" when none */
} outcome;

/* Appends file to the space-separated list sb (when sb is not NULL: a panel of the figure) and
 * to files (the data files index.html links). */
static nl_status add_csv(nl_ctx *ctx, strbuf *sb, const char *file, strlist *files) {
    size_t k = strlen(file);
    if (sb && sb->n + k + 2 > sb->cap) {
        size_t cap = 2 * (sb->n + k + 2) + 256;
        char *g = realloc(sb->s, cap);
        if (!g) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        sb->s = g, sb->cap = cap;
    }
    if (sb) {
        if (sb->n) sb->s[sb->n++] = ' ';
        memcpy(sb->s + sb->n, file, k + 1);
        sb->n += k;
    }
    if (files && strlist_index(files, file, 1) < 0) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

#define TITLE_CHARS 120 /* a longer panel title is cut (with '…') in the figure */

/* One line of the titles file: the panel's name cleaned ("all" when empty); chars → *nchars. */
static int put_title(FILE *titles, const char *name, int *nchars) {
    char *t = clean(name[0] ? name : "all", 0, TITLE_CHARS);
    if (!t) return -1;
    fprintf(titles, "%s\n", t);
    if (nchars) *nchars = chars(t);
    free(t);
    return 0;
}

/* What a line figure's NAME.gp needs besides the CSVs: which series each panel's columns are
 * (so a series keeps its colour, marker and dashes in every panel and in a shared legend). */
typedef struct {
    int *sidx, nsidx; /* series index (0-based, into the figure's series) of each panel's columns, panel after panel */
    int *soff, npanels; /* per drawn panel: where its columns start in sidx */
} line_info;

/* Line figures: one CSV per panel that has a finite value, header `xlabel,series…`, rows
 * sorted by x. */
static nl_status line_csvs(nl_ctx *ctx, const nl_report_opts *o, const nl_figure *fig, const row *rows, size_t n,
                           const strlist *panels, const strlist *series, const int *pfinite, FILE *titles, strbuf *csvs,
                           strlist *files, line_info *li) {
    char path[4096];
    nl_status st = NL_OK;
    double *xs = malloc(n * sizeof *xs), *cell = NULL;
    if (!xs) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int p = 0; st == NL_OK && p < panels->n; p++) {
        if (!pfinite[p]) continue;
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
        int bad = csv_name(f, fig->xlabel) < 0;
        li->soff[li->npanels++] = li->nsidx;
        for (int j = 0; j < series->n; j++) {
            if (!used[j]) continue;
            fputc(',', f);
            bad |= csv_name(f, series->names[j]) < 0;
            li->sidx[li->nsidx++] = j;
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
        if (bad || put_title(titles, panels->names[p], NULL)) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        st = add_csv(ctx, csvs, file, files);
    }
    free(cell);
    free(xs);
    return st;
}

/* A cell annotation: the value in the figure's printf format, "±spread" when the spread is
 * finite; a value that rounds to zero is shown without a minus sign ("-0.0" → "0.0"). */
static void annotation(char *out, size_t n, const char *fmt, double v, double e) {
    char a[64], b[64];
    snprintf(a, sizeof a, fmt, v);
    /* a nonzero value the format rounds to zero keeps two significant digits (0.0049, not 0.00),
     * so a cell coloured as nonzero never reads as an exact zero */
    if (v != 0 && strspn(a + (a[0] == '-'), "0.") == strlen(a + (a[0] == '-'))) snprintf(a, sizeof a, "%.2g", v);
    if (a[0] == '-' && strspn(a + 1, "0.") == strlen(a + 1)) memmove(a, a + 1, strlen(a));
    if (!isfinite(e)) { snprintf(out, n, "%s", a); return; }
    snprintf(b, sizeof b, fmt, fabs(e));
    snprintf(out, n, "%s±%s", a, b);
}

/* One matrix CSV (header `xlabel,col…`, one line `row,value…` per row); returns nonzero when out
 * of memory, negative on a write error. */
static int write_matrix(FILE *f, const nl_figure *fig, const strlist *rnames, const strlist *cnames, const int *rl, int nr,
                        const int *cl, int nc, const double *cell, heat_info *hi) {
    int bad = csv_name(f, fig->xlabel) < 0, w;
    for (int j = 0; j < nc; j++) {
        fputc(',', f);
        bad |= (w = csv_name(f, cnames->names[cl[j]])) < 0;
        if (hi && w > hi->colchars) hi->colchars = w;
    }
    fputc('\n', f);
    for (int i = 0; i < nr; i++) {
        bad |= (w = csv_name(f, rnames->names[rl[i]])) < 0;
        if (hi && w > hi->rowchars) hi->rowchars = w;
        for (int j = 0; j < nc; j++) {
            double v = cell[(size_t)i * (size_t)nc + (size_t)j];
            if (!isfinite(v)) fputs(",NaN", f);
            else fprintf(f, ",%.9g", v);
        }
        fputc('\n', f);
    }
    return bad;
}

/* Heatmaps: one matrix CSV per panel, header `xlabel,col…`, one line `row,value…` per row,
 * rows and columns in order of first appearance; a second one of the spreads when the panel has
 * any (NAME-P-slug-spread.csv); the annotations (NAME-P.cells: col,row,value,text); fills hi. */
static nl_status heat_csvs(nl_ctx *ctx, const nl_report_opts *o, const nl_figure *fig, const row *rows, size_t n,
                           const strlist *panels, const strlist *rnames, const strlist *cnames, FILE *titles, strbuf *csvs,
                           strlist *files, heat_info *hi) {
    const char *fmt = fig->style ? fig->style : "%.2f";
    char path[4096];
    nl_status st = NL_OK;
    hi->cbmin = hi->cbmax = NAN;
    hi->prows = calloc((size_t)panels->n, sizeof *hi->prows);
    hi->pcols = calloc((size_t)panels->n, sizeof *hi->pcols);
    hi->tchars = calloc((size_t)panels->n, sizeof *hi->tchars);
    int *rl = malloc((size_t)rnames->n * sizeof *rl), *cl = malloc((size_t)cnames->n * sizeof *cl);
    int *ri = malloc((size_t)rnames->n * sizeof *ri), *ci = malloc((size_t)cnames->n * sizeof *ci);
    double *cell = NULL, *spread = NULL;
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
        free(cell), free(spread);
        cell = malloc((size_t)nr * (size_t)nc * sizeof *cell);
        spread = malloc((size_t)nr * (size_t)nc * sizeof *spread);
        if (!cell || !spread) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        for (size_t i = 0; i < (size_t)nr * (size_t)nc; i++) cell[i] = spread[i] = NAN;
        int anyspread = 0;
        for (size_t i = 0; i < n; i++)
            if (rows[i].panel == p) {
                size_t k = (size_t)ri[rows[i].series] * (size_t)nc + (size_t)ci[rows[i].col];
                cell[k] = rows[i].y, spread[k] = rows[i].e;
            }
        for (size_t k = 0; k < (size_t)nr * (size_t)nc; k++) {
            if (!isfinite(cell[k])) spread[k] = NAN; /* no value, no spread */
            anyspread |= isfinite(spread[k]);
        }
        char sl[128], file[512];
        slug(sl, sizeof sl, panels->names[p]);
        snprintf(file, sizeof file, "%s-%d-%s.csv", fig->name, p + 1, sl);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, file);
        FILE *f = fopen(path, "w");
        if (!f) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        int bad = write_matrix(f, fig, rnames, cnames, rl, nr, cl, nc, cell, hi);
        if (fclose(f) != 0) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        if (bad || put_title(titles, panels->names[p], &hi->tchars[p])) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
        hi->prows[p] = nr, hi->pcols[p] = nc;
        if ((st = add_csv(ctx, csvs, file, files)) != NL_OK) break;
        if (anyspread) { /* the spreads beside the values, same shape */
            snprintf(file, sizeof file, "%s-%d-%s-spread.csv", fig->name, p + 1, sl);
            snprintf(path, sizeof path, "%s/%s", o->out_dir, file);
            if (!(f = fopen(path, "w"))) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
            bad = write_matrix(f, fig, rnames, cnames, rl, nr, cl, nc, spread, NULL);
            if (fclose(f) != 0) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
            if (bad) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            if ((st = add_csv(ctx, NULL, file, files)) != NL_OK) break;
        }
        /* the annotations, and the colour range */
        snprintf(file, sizeof file, "%s-%d.cells", fig->name, p + 1);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, file);
        if (!(f = fopen(path, "w"))) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        for (int i = 0; i < nr; i++)
            for (int j = 0; j < nc; j++) {
                size_t k = (size_t)i * (size_t)nc + (size_t)j;
                double v = cell[k];
                if (!isfinite(v)) { fprintf(f, "%d,%d,NaN,–\n", j, i); continue; }
                char a[160];
                annotation(a, sizeof a, fmt, v, spread[k]);
                fprintf(f, "%d,%d,%.9g,%s\n", j, i, v, a);
                if (isnan(hi->cbmin) || v < hi->cbmin) hi->cbmin = v;
                if (isnan(hi->cbmax) || v > hi->cbmax) hi->cbmax = v;
                if (chars(a) > hi->annotchars) hi->annotchars = chars(a);
            }
        if (fclose(f) != 0) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno)); break; }
        if ((st = add_csv(ctx, &hi->cells, file, NULL)) != NL_OK) break;
    }
    free(cell), free(spread);
    free(rl), free(cl), free(ri), free(ci);
    return st;
}

static void gp_ints(FILE *f, const char *name, const int *v, int n) {
    fprintf(f, "array %s[%d] = [", name, n);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fputs("]\n", f);
}

/* A value of the query: NULL → NaN (missing); NaN, ±Inf or text that is not a number → NaN,
 * counted in *bad. */
static double value(sqlite3_stmt *s, int c, long *bad) {
    int t = sqlite3_column_type(s, c);
    if (t == SQLITE_NULL) return NAN;
    double v;
    if (t == SQLITE_INTEGER || t == SQLITE_FLOAT) v = sqlite3_column_double(s, c);
    else {
        const char *txt = (const char *)sqlite3_column_text(s, c);
        char *end;
        v = txt ? strtod(txt, &end) : NAN;
        if (!txt || end == txt || *end) v = NAN;
    }
    if (!isfinite(v)) { (*bad)++; return NAN; }
    return v;
}

/* SQLite's progress callback: nonzero stops the running statement (SQLITE_INTERRUPT) after Ctrl-C. */
static int stop_query(void *unused) {
    (void)unused;
    return nl_interrupted != 0;
}

/* A text of run `run` from one of a figure's queries (ylabel_sql, caption_sql): the
 * first column of the first row, cleaned and cut at maxchars, or NULL: no query, no row, an
 * error (the static label is used then) or out of memory. */
static char *text_of(nl_results *db, const char *sql, int64_t run, int maxchars) {
    if (!sql) return NULL;
    sqlite3_stmt *s;
    char *l = NULL;
    if (sqlite3_prepare_v2(nl_results_db(db), sql, -1, &s, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_int64(s, 1, run);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0)) l = clean((const char *)sqlite3_column_text(s, 0), 0, maxchars);
    sqlite3_finalize(s);
    return l;
}

/* Draws one figure for run id, filling out. Returns an error only for what stops the whole
 * report (memory, an unwritable output directory, gnuplot missing, Ctrl-C); what stops just
 * this figure (its query, gnuplot on its data) is out->failed with the cause in out->why.
 * A query that returns no rows (or reads a table the database does not have: the analysis
 * never wrote such rows) leaves out->drawn = 0 and out->why = "". */
static nl_status draw(nl_ctx *ctx, nl_results *db, const nl_report_opts *o, const nl_figure *fig, int64_t run, outcome *out,
                      strlist *files) {
    memset(out, 0, sizeof *out);
    const int heat = !strcmp(fig->template, "heatmap");
    const char *tpl = template_text(fig->template);
    if (!tpl) {
        out->failed = 1;
        snprintf(out->why, sizeof out->why, "no template plots/%s.gp in this build", fig->template);
        return NL_OK;
    }
    if (heat && fig->style && !number_format(fig->style)) {
        out->failed = 1;
        snprintf(out->why, sizeof out->why, "heatmap style '%s' is not a printf format of one number (like %%.1f)", fig->style);
        return NL_OK;
    }
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(h, fig->sql, -1, &s, NULL) != SQLITE_OK) {
        if (!strncmp(sqlite3_errmsg(h), "no such table", 13)) return NL_OK;
        out->failed = 1;
        snprintf(out->why, sizeof out->why, "cannot query its data: %s", sqlite3_errmsg(h));
        return NL_OK;
    }
    sqlite3_bind_int64(s, 1, run);
    sqlite3_progress_handler(h, 100000, stop_query, NULL); /* Ctrl-C stops a long query too */
    double xlo = -INFINITY, xhi = INFINITY; /* a fixed x range: a point outside it is not drawn (all outside would stop gnuplot) */
    const char *colon = fig->xrange ? strchr(fig->xrange, ':') : NULL;
    if (!heat && colon) {
        char *end;
        double a = strtod(fig->xrange, &end);
        if (end == colon) xlo = a;
        a = strtod(colon + 1, &end);
        if (end != colon + 1 && !*end) xhi = a;
    }
    strlist panels = {0}, series = {0}, cols = {0}; /* heatmap: series = row names, cols = column names */
    row *rows = NULL;
    size_t n = 0, cap = 0;
    nl_status st = NL_OK;
    int rc;
    long nread = 0; /* rows the query returned */
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        nread++;
        const char *p = (const char *)sqlite3_column_text(s, 0), *q = (const char *)sqlite3_column_text(s, 1);
        double x = 0, y;
        if (!heat) {
            if (sqlite3_column_type(s, 2) == SQLITE_NULL) continue;
            long badx = 0;
            x = value(s, 2, &badx);
            if (badx) { out->nonfinite++; continue; }
            if (fig->logx && x <= 0) { out->nonpositive++; continue; }
            if (x < xlo || x > xhi) { out->outside++; continue; }
        }
        y = value(s, 3, &out->nonfinite);
        if (!heat && fig->logy && y <= 0) { out->nonpositive++; y = NAN; }
        long badspread = 0; /* a spread that is not finite is no spread: the value alone is shown */
        double e = heat && sqlite3_column_count(s) > 4 ? value(s, 4, &badspread) : NAN;
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
        rows[n++] = (row){pi, si, ci, x, y, e};
    }
    if (st == NL_OK && rc == SQLITE_INTERRUPT && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted while reading the data of '%s'", fig->name);
    else if (st == NL_OK && rc != SQLITE_DONE) {
        out->failed = 1;
        snprintf(out->why, sizeof out->why, "cannot read its data: %s", sqlite3_errmsg(h));
    }
    sqlite3_finalize(s);
    sqlite3_progress_handler(h, 0, NULL, NULL);
    /* which panels have a finite value: a panel without one has nothing to draw (a line panel
     * would stop gnuplot), a figure without any is not drawn */
    int *pfinite = n ? calloc((size_t)panels.n, sizeof *pfinite) : NULL;
    if (n && !pfinite && st == NL_OK) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    int any = 0;
    for (size_t i = 0; pfinite && i < n; i++)
        if (!isnan(rows[i].y)) pfinite[rows[i].panel] = 1, any = 1;
    if (st == NL_OK && !out->failed && nread > 0 && !any) {
        /* only the causes that occur, e.g. "(3 without a value)": a value that is NULL in the
           database (the blank diagonal of a one-ability overlap), not a finite number, ≤ 0 on a
           logarithmic axis, or outside a fixed x range */
        long null = nread - out->nonfinite - out->nonpositive - out->outside;
        int wo = snprintf(out->why, sizeof out->why, "none of the run's %ld rows for this figure can be drawn (", nread);
        const char *sep = "";
        const long cnt[4] = {null, out->nonfinite, out->nonpositive, out->outside};
        const char *what[4] = {"without a value (NULL)", "not finite (NaN, ±Inf or text)", "≤ 0 on a logarithmic axis", "outside the x range"};
        for (int k = 0; k < 4; k++)
            if (cnt[k] > 0 && wo < (int)sizeof out->why)
                wo += snprintf(out->why + wo, sizeof out->why - (size_t)wo, "%s%ld %s", sep, cnt[k], what[k]), sep = ", ";
        if (wo < (int)sizeof out->why) snprintf(out->why + wo, sizeof out->why - (size_t)wo, ")");
        n = 0;
    }
    if (!heat)
        for (int p = 0; pfinite && any && p < panels.n; p++) out->emptypanels += !pfinite[p];
    if (out->failed) n = 0;
    char path[4096];
    strbuf csvs = {0};
    FILE *titles = NULL;
    heat_info hi = {0};
    line_info li = {0};
    double ymin = NAN, ymax = NAN; /* line figures: the finite values of all panels (one y range) */
    for (size_t i = 0; !heat && i < n; i++)
        if (isfinite(rows[i].y)) {
            if (isnan(ymin) || rows[i].y < ymin) ymin = rows[i].y;
            if (isnan(ymax) || rows[i].y > ymax) ymax = rows[i].y;
        }
    if (!heat && n > 0 && st == NL_OK) {
        li.sidx = malloc(((size_t)panels.n * (size_t)series.n + 1) * sizeof *li.sidx);
        li.soff = malloc(((size_t)panels.n + 1) * sizeof *li.soff);
        if (!li.sidx || !li.soff) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    char *ylabel = text_of(db, fig->ylabel_sql, run, TITLE_CHARS);
    char *capx = text_of(db, fig->caption_sql, run, 600);
    if (capx) snprintf(out->caption, sizeof out->caption, "%s", capx);
    free(capx);
    if (st == NL_OK && n > 0) {
        snprintf(path, sizeof path, "%s/%s.titles", o->out_dir, fig->name);
        if (!(titles = fopen(path, "w"))) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
    }
    if (st == NL_OK && n > 0)
        st = heat ? heat_csvs(ctx, o, fig, rows, n, &panels, &series, &cols, titles, &csvs, files, &hi)
                  : line_csvs(ctx, o, fig, rows, n, &panels, &series, pfinite, titles, &csvs, files, &li);
    if (titles && fclose(titles) != 0 && st == NL_OK) st = nl_errorf(ctx, NL_EIO, "cannot write the titles of '%s'", fig->name);
    if (st == NL_OK && n > 0) {
        snprintf(path, sizeof path, "%s/%s.gp", o->out_dir, fig->name);
        FILE *f = fopen(path, "w");
        if (!f) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
        if (f) {
            fprintf(f, "# %s — drawn by neuronlab report from run %lld (kind %s); rerun: gnuplot %s.gp\n", fig->name, (long long)run,
                    fig->kind, fig->name);
            fputs("csvs = ", f), gp_string(f, csvs.s ? csvs.s : ""), fputc('\n', f);
            fprintf(f, "titles = \"%s.titles\"\nout = \"%s\"\n", fig->name, fig->name);
            fputs("xlabel = ", f), gp_string(f, fig->xlabel), fputc('\n', f);
            fputs("ylabel = ", f), gp_string(f, ylabel ? ylabel : fig->ylabel), fputc('\n', f);
            gp_real(f, "symlog", fig->symlog > 0 ? fig->symlog : 0);
            if (heat) {
                fputs("style = ", f), gp_string(f, fig->style ? fig->style : "%.2f"), fputc('\n', f);
                fputs("# colour range: smallest and largest value over all cells of all panels\n", f);
                gp_real(f, "cbmin", isnan(hi.cbmin) ? 0 : hi.cbmin);
                gp_real(f, "cbmax", isnan(hi.cbmax) ? 0 : hi.cbmax);
                fputs("cells = ", f), gp_string(f, hi.cells.s ? hi.cells.s : ""), fputs("   # annotations: col,row,value,text\n", f);
                fputs("# sizes for the layout (characters of the longest row name, column name, annotation)\n", f);
                fprintf(f, "rowchars = %d\ncolchars = %d\nannotchars = %d\n", hi.rowchars, hi.colchars, hi.annotchars);
                gp_ints(f, "prows", hi.prows, panels.n);
                gp_ints(f, "pcols", hi.pcols, panels.n);
                gp_ints(f, "tchars", hi.tchars, panels.n);
            } else {
                fprintf(f, "logx = %d\nlogy = %d\nstyle = \"%s\"\n", fig->logx, fig->logy, fig->style ? fig->style : "lines");
                if (fig->key) fputs("key = ", f), gp_string(f, fig->key), fputc('\n', f);
                fputs("# y range of all panels: the smallest and largest finite value of the figure\n", f);
                gp_real(f, "ymin", isnan(ymin) ? 0 : ymin), gp_real(f, "ymax", isnan(ymax) ? 0 : ymax);
                const char *yc = fig->yrange ? strchr(fig->yrange, ':') : NULL;
                if (yc) {
                    fputs("# the y axis covers at least\n", f);
                    gp_real(f, "yfloor", strtod(fig->yrange, NULL)), gp_real(f, "yceil", strtod(yc + 1, NULL));
                }
                fprintf(f, "sharedkey = %d\n", fig->sharedkey);
                fputs("# the series: names (for a shared legend), and which series each panel's columns are\n", f);
                fprintf(f, "array snames[%d]\n", series.n);
                for (int k = 0; k < series.n; k++) {
                    char *c = clean(series.names[k], 1, NAME_CHARS);
                    if (!c) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
                    fprintf(f, "snames[%d] = ", k + 1), gp_string(f, c), fputc('\n', f);
                    free(c);
                }
                for (int k = 0; k < li.nsidx; k++) li.sidx[k]++; /* 1-based for gnuplot */
                gp_ints(f, "sidx", li.sidx, li.nsidx);
                gp_ints(f, "soff", li.soff, li.npanels);
            }
            fputc('\n', f);
            fputs(tpl, f);
            if (fclose(f) != 0 && st == NL_OK) st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
        }
        if (st == NL_OK)
            st = run_gnuplot(ctx, o->gnuplot ? o->gnuplot : "gnuplot", o->out_dir, fig->name, out->why, sizeof out->why, out->log,
                             sizeof out->log);
        if (st == NL_OK && !out->why[0]) out->drawn = 1;
        else if (st == NL_OK) out->failed = 1;
        if (!out->drawn) { /* no half-written picture beside a figure listed as not drawn */
            static const char *const ext[] = {"png", "pdf"};
            for (int e = 0; e < 2; e++) snprintf(path, sizeof path, "%s/%s.%s", o->out_dir, fig->name, ext[e]), remove(path);
        }
    }
    free(csvs.s);
    free(pfinite);
    free(ylabel);
    free(li.sidx), free(li.soff);
    free(hi.prows), free(hi.pcols), free(hi.tchars), free(hi.cells.s);
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

/* What was left out of a drawn figure, for its caption (nothing on clean data). */
static void left_out(FILE *f, const outcome *r) {
    if (!r->nonfinite && !r->nonpositive && !r->outside && !r->emptypanels) return;
    fputs("<br><span class=\"note\">Left out:", f);
    const char *sep = " ";
    if (r->nonfinite)
        fprintf(f, "%s%ld value%s that %s not a finite number (NaN, ±Inf or text in the database), shown as missing (NaN in the CSV)",
                sep, r->nonfinite, r->nonfinite == 1 ? "" : "s", r->nonfinite == 1 ? "is" : "are"), sep = "; ";
    if (r->nonpositive)
        fprintf(f, "%s%ld value%s ≤ 0, which the logarithmic axis cannot show", sep, r->nonpositive, r->nonpositive == 1 ? "" : "s"),
            sep = "; ";
    if (r->outside)
        fprintf(f, "%s%ld point%s outside the x axis range", sep, r->outside, r->outside == 1 ? "" : "s"), sep = "; ";
    if (r->emptypanels)
        fprintf(f, "%s%d panel%s without any finite value", sep, r->emptypanels, r->emptypanels == 1 ? "" : "s");
    fputs(".</span>", f);
}

void nl_report_summary_release(nl_report_summary *sum) {
    if (!sum) return;
    for (int i = 0; i < sum->failed; i++) free(sum->failures[i].why), free(sum->failures[i].log);
    free(sum->failures);
    memset(sum, 0, sizeof *sum);
}

/* The data of the "attention" figure: the record run drawn (the one given for kind "record", else
 * the latest complete one), when its params list --attn layers and its file (runs.source) holds
 * them, gives head 0 of the first listed layer on document 0 as rows (panel, row, col, value) of
 * the temporary table nl_attn_fig (the database is open read-only; temp tables are the
 * connection's own). Without it the table does not exist and the figure is listed as missing. */
static void attn_table(nl_results *db, const nl_report_opts *o) {
    sqlite3 *h = nl_results_db(db);
    int64_t run = -1;
    for (int k = 0; k < o->n_runs; k++)
        if (!strcmp(o->kinds[k], "record")) run = o->runs[k];
    if (run < 0) run = latest_run(h, "record");
    sqlite3_stmt *s;
    if (run < 0 || sqlite3_prepare_v2(h, "SELECT source, json_extract(params, '$.attn[0]') FROM runs WHERE id = ?1", -1, &s, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(s, 1, run);
    char path[4096] = "";
    int layer = -1;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) && sqlite3_column_type(s, 1) == SQLITE_INTEGER) {
        snprintf(path, sizeof path, "%s", (const char *)sqlite3_column_text(s, 0));
        layer = sqlite3_column_int(s, 1);
    }
    sqlite3_finalize(s);
    float *a = NULL;
    int n = 0, heads = 0;
    nl_ctx c;
    nl_ctx_init(&c);
    if (layer < 0 || nl_h5_read_attn(&c, path, layer, 0, 0, &a, &n, &heads) != NL_OK) return;
    if (sqlite3_exec(h, "CREATE TEMP TABLE IF NOT EXISTS nl_attn_fig(panel TEXT, row TEXT, col TEXT, value REAL);"
                        "DELETE FROM temp.nl_attn_fig; BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "INSERT INTO temp.nl_attn_fig VALUES (?1, ?2, ?3, ?4)", -1, &s, NULL) == SQLITE_OK) {
        char panel[128], r[16], col[16];
        snprintf(panel, sizeof panel, "layer %d, head 0 of %d, document 0 (%d tokens)", layer, heads, n);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < n; j++) {
                snprintf(r, sizeof r, "%d", t), snprintf(col, sizeof col, "%d", j);
                sqlite3_reset(s);
                sqlite3_bind_text(s, 1, panel, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, r, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 3, col, -1, SQLITE_TRANSIENT);
                sqlite3_bind_double(s, 4, a[(size_t)t * n + j]);
                sqlite3_step(s);
            }
        sqlite3_finalize(s);
    }
    sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
    free(a);
}

nl_status nl_report_write(nl_ctx *ctx, nl_results *db, const nl_report_opts *o, nl_report_summary *sum) {
    memset(sum, 0, sizeof *sum);
    if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
        return nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", o->out_dir, strerror(errno));
    if (!(sum->failures = calloc((size_t)(nl_n_figures + nl_n_expert_figures) + 1, sizeof *sum->failures))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", o->out_dir);
    nl_atomic_file af;
    nl_status ast = nl_atomic_open(ctx, path, &af);
    if (ast != NL_OK) return ast;
    FILE *idx = af.f;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>neuronlab report</title>\n"
          "<style>body{font-family:sans-serif;margin:2em;color:#222}"
          "h1,h2,p,ul,figcaption{max-width:1100px}"
          "figure{margin:2em 0;border-top:1px solid #ddd;padding-top:1em}"
          /* a figure fits the window; a click shows it at native resolution (scrolling when wider), another fits it again */
          ".plot{overflow-x:auto}.plot img{max-width:100%;display:block;cursor:zoom-in}"
          ".plot img.native{max-width:none;cursor:zoom-out}"
          "figcaption{margin-top:.5em;line-height:1.4}.prov{color:#666;font-size:.85em}"
          ".missing{color:#a33}.failed{color:#a33;font-weight:bold}.note{color:#a60}code{font-size:.9em}</style></head><body>\n",
          idx);
    fprintf(idx, "<h1>neuronlab report</h1>\n<p>Database <code>");
    html(idx, nl_results_path(db));
    fprintf(idx, "</code>, drawn by neuronlab %s. Each figure has its data as CSV and its gnuplot script beside it.</p>\n",
            NL_VERSION);
    if (o->neurons) { /* the neuron pages: a link section at the top of the index */
        int64_t nrun = -1;
        for (int k = 0; k < o->n_runs; k++)
            if (!strcmp(o->kinds[k], "neurons")) nrun = o->runs[k];
        if (nrun < 0) nrun = latest_run(nl_results_db(db), "neurons");
        nl_status nst = nl_report_neurons(ctx, db, o->out_dir, nrun, idx);
        if (nst != NL_OK) {
            nl_atomic_abort(&af);
            return nst;
        }
    }
    attn_table(db, o);
    /* the figures go to memory first: the list of failures goes above them, so it is not overlooked */
    char *body = NULL;
    size_t nbody = 0;
    FILE *b = open_memstream(&body, &nbody);
    nl_status st = b ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    strlist files = {0};
    outcome *r = malloc(sizeof *r);
    if (!r && st == NL_OK) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int i = 0; (st == NL_OK || st == NL_EINTR) && i < nl_n_figures + nl_n_expert_figures; i++) {
        const nl_figure *fig = i < nl_n_figures ? &nl_figures[i] : &nl_expert_figures[i - nl_n_figures];
        int64_t run = -1;
        int before = files.n;
        memset(r, 0, sizeof *r);
        if (st == NL_OK && nl_interrupted) st = nl_errorf(ctx, NL_EINTR, "interrupted");
        if (st == NL_OK) {
            for (int k = 0; k < o->n_runs; k++)
                if (!strcmp(o->kinds[k], fig->kind)) run = o->runs[k];
            if (run < 0) run = latest_run(nl_results_db(db), fig->kind);
            if (run >= 0) st = draw(ctx, db, o, fig, run, r, &files);
            if (st != NL_OK && st != NL_EINTR) break;
        }
        fprintf(b, "<figure id=\"%s\">\n<h2>", fig->name);
        html(b, fig->title);
        fputs("</h2>\n", b);
        if (r->drawn) {
            fprintf(b, "<div class=\"plot\"><img src=\"%s.png\" title=\"click: native resolution / fit to the window\" "
                       "onclick=\"this.classList.toggle('native')\" alt=\"", fig->name);
            html(b, fig->title);
            fputs("\"></div>\n<figcaption>", b);
            html(b, fig->caption);
            if (r->caption[0]) fputs(" ", b), html(b, r->caption);
            left_out(b, r);
            fprintf(b, "<br>Files: <a href=\"%s.png\">PNG</a> · <a href=\"%s.pdf\">PDF</a> · <a href=\"%s.gp\">gnuplot</a>", fig->name,
                    fig->name, fig->name);
            for (int k = before; k < files.n; k++) fprintf(b, " · <a href=\"%s\">%s</a>", files.names[k], files.names[k]);
            fputs("</figcaption>\n", b);
            run_line(b, nl_results_db(db), run);
            sum->drawn++;
        } else {
            if (st == NL_EINTR) {
                fputs("<p class=\"missing\">Not drawn: the report was interrupted (Ctrl-C) before this figure was drawn.</p>\n", b);
            } else if (r->failed) {
                fputs("<p class=\"failed\">Failed: ", b);
                html(b, r->why);
                fputs(".", b);
                if (r->log[0]) fprintf(b, " Log: <a href=\"%s.log\">%s.log</a>.", fig->name, fig->name);
                if (files.n > before) {
                    fprintf(b, " Its data: <a href=\"%s.gp\">gnuplot</a>", fig->name);
                    for (int k = before; k < files.n; k++) fprintf(b, " · <a href=\"%s\">%s</a>", files.names[k], files.names[k]);
                }
                fputs("</p>\n", b);
                nl_report_failure *fl = &sum->failures[sum->failed++];
                fl->figure = fig->name;
                fl->why = strdup(r->why);
                fl->log = r->log[0] ? strdup(r->log) : NULL;
            } else {
                fputs("<p class=\"missing\">Not drawn: ", b);
                html(b, run < 0 ? "the database has no complete run of this analysis"
                         : r->why[0] ? r->why : "the run has no rows for this figure");
                fputs(".</p>\n", b);
                sum->missing++;
            }
            fputs("<figcaption>", b);
            html(b, fig->caption);
            fputs("</figcaption>\n", b);
        }
        fputs("</figure>\n", b);
    }
    free(r);
    if (b && fclose(b) != 0 && st == NL_OK) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (sum->failed) {
        fprintf(idx, "<p class=\"failed\">%d figure%s could not be drawn:</p>\n<ul>\n", sum->failed, sum->failed == 1 ? "" : "s");
        for (int k = 0; k < sum->failed; k++) {
            fprintf(idx, "<li class=\"failed\"><a href=\"#%s\">%s</a>: ", sum->failures[k].figure, sum->failures[k].figure);
            html(idx, sum->failures[k].why ? sum->failures[k].why : "out of memory");
            fputs("</li>\n", idx);
        }
        fputs("</ul>\n", idx);
    }
    if (body) fwrite(body, 1, nbody, idx);
    free(body);
    fputs("</body></html>\n", idx);
    strlist_free(&files);
    if (st != NL_OK && st != NL_EINTR) {
        nl_atomic_abort(&af);
        return st;
    }
    nl_status cst = nl_atomic_commit(ctx, &af);
    if (cst != NL_OK) return cst;
    if (st == NL_EINTR)
        return nl_errorf(ctx, NL_EINTR, "interrupted: '%s' lists the %d figure%s drawn before Ctrl-C", path, sum->drawn,
                         sum->drawn == 1 ? "" : "s");
    return NL_OK;
}
