/* neurons_html.c — the neuron pages of `report --neurons` (report.h): static HTML from the tables
 * of one `neuronlab neurons` run, browsable from file:// (relative links, no server, no script
 * needed; inline CSS and SVG, nothing fetched).
 *
 * Files: OUT_DIR/neurons/index.html (the run's provenance, a table of layers, the top neurons
 * of every ability — or by max |a| when the run has no ability scores — linking to their
 * sections) and one page per layer, OUT_DIR/neurons/layer-L.html: an overview table of the
 * layer's neurons (mean |a|, max |a|, frequency, best ability, top token) and a section per
 * neuron with the anchor #nI: statistics, frequencies, the |a| histogram as inline SVG,
 * ability scores (★ = in the ability's top set), and the top contexts (the first 5 shown, the
 * rest folded in a <details>), keyword-in-context: the text before right-aligned, the token
 * marked, the text after. So 6 layers × 688 neurons make 7 files, not 4128.
 * Escaping: every database string goes through esc() (& < > " ' as entities); in contexts a
 * line break shows as ↵, a tab as ⇥, a carriage return as ␍ and other control characters
 * as U+FFFD (the texts are valid UTF-8 already: neurons repairs them). Pages are written
 * whole (atomic_file.h). Checked by tests/neurons_cli.sh (escaping, every link resolves). */
#include "neuronlab/atomic_file.h"
#include "neuronlab/report.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHOWN_CONTEXTS 5 /* contexts shown before the fold */
#define TOP_PER_ABILITY 10

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Context text: esc() plus visible white space and no control characters. */
static void esc_ctx(FILE *f, const char *s) {
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') fputs("<span class=\"ws\">\xe2\x86\xb5</span>", f);      /* ↵ */
        else if (c == '\t') fputs("<span class=\"ws\">\xe2\x87\xa5</span>", f); /* ⇥ */
        else if (c == '\r') fputs("<span class=\"ws\">\xe2\x90\x8d</span>", f); /* ␍ */
        else if (c < 0x20 || c == 0x7f) fputs("\xef\xbf\xbd", f);
        else {
            char one[2] = {*s, 0};
            esc(f, one);
        }
    }
}

static const char *col_text(sqlite3_stmt *q, int c) {
    const char *t = (const char *)sqlite3_column_text(q, c);
    return t ? t : "";
}

/* A number for a page: 4 significant digits, "–" for NULL. */
static void num(FILE *f, sqlite3_stmt *q, int c) {
    if (sqlite3_column_type(q, c) == SQLITE_NULL) fputs("\xe2\x80\x93", f);
    else fprintf(f, "%.4g", sqlite3_column_double(q, c));
}

static const char CSS[] =
    "<style>body{font-family:sans-serif;margin:1.5em 2em;color:#222;line-height:1.35}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1.05em;margin:0 0 .3em}"
    "nav{margin:.5em 0 1em}nav a{margin-right:1em}"
    "table{border-collapse:collapse}th,td{padding:.15em .5em;text-align:left;vertical-align:top}"
    "th{border-bottom:1px solid #bbb;font-weight:600}td.r,th.r{text-align:right}"
    "table.ov td,table.ov th{font-size:.85em}table.ov tr:nth-child(even){background:#f6f6f6}"
    "section{border-top:1px solid #ddd;padding:.8em 0;display:grid;grid-template-columns:minmax(0,1fr) 280px;gap:.3em 2em}"
    "section:target{background:#fffbe6}section>.ctxs{grid-column:1/3}"
    ".st{font-size:.88em;color:#333}.st b{font-weight:600}.ab{font-size:.85em;margin-top:.3em}.ab .top{font-weight:700}"
    ".prov{color:#666;font-size:.85em}.note{color:#666;font-size:.85em}"
    "table.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}"
    "table.ctx td{padding:.05em .4em;white-space:pre}table.ctx td.b{text-align:right;color:#444;padding-right:0}"
    "table.ctx td.m{padding:0}table.ctx td.a{color:#444;padding-left:0}table.ctx td.v{text-align:right;color:#06c;font-family:sans-serif}"
    "table.ctx td.d{color:#888;font-family:sans-serif;font-size:.9em}"
    "mark{background:#ffd54a;border-radius:2px;padding:0 1px}mark.neg{background:#9fd3ff}"
    ".ws{color:#bbb}details summary{cursor:pointer;color:#06c;font-size:.85em;margin:.2em 0}"
    "svg text{font-size:10px;fill:#555;font-family:sans-serif}"
    "code.tok{background:#f1ead2;white-space:pre;padding:0 2px;border-radius:2px}</style>\n";

static nl_status prep(nl_ctx *ctx, nl_results *db, const char *sql, sqlite3_stmt **q) {
    if (sqlite3_prepare_v2(nl_results_db(db), sql, -1, q, NULL) != SQLITE_OK)
        return nl_results_error(ctx, db, "reading the neurons tables");
    return NL_OK;
}

/* The |a| histogram of neuron (l, i) as inline SVG: bars over the non-empty bins above 0
 * (log-spaced, 2 per octave), linear counts; a = 0 is given as a number. */
static void histogram(FILE *f, sqlite3_stmt *q, int64_t run, int l, int i, int64_t tokens) {
    enum { W = 270, H = 64, PAD = 14 };
    int bin[96], n = 0;
    double lo[96], hi[96];
    long long cnt[96], zero = 0, mx = 0;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    while (sqlite3_step(q) == SQLITE_ROW && n < 96) {
        int b = sqlite3_column_int(q, 0);
        long long c = sqlite3_column_int64(q, 3);
        if (b == 0) {
            zero = c;
            continue;
        }
        bin[n] = b, lo[n] = sqlite3_column_double(q, 1);
        hi[n] = sqlite3_column_type(q, 2) == SQLITE_NULL ? INFINITY : sqlite3_column_double(q, 2);
        cnt[n] = c;
        if (c > mx) mx = c;
        n++;
    }
    fprintf(f, "<div><svg width=\"%d\" height=\"%d\" role=\"img\"><title>|a| histogram: %lld tokens", W, H + PAD + 2,
            (long long)tokens);
    if (zero) fprintf(f, ", %lld with a = 0", zero);
    fputs("</title>", f);
    if (n == 0) {
        fprintf(f, "<text x=\"4\" y=\"%d\">no token with a \xe2\x89\xa0 0</text></svg></div>\n", H / 2);
        return;
    }
    const int b0 = bin[0], nb = bin[n - 1] - bin[0] + 1;
    const double bw = (double)(W - 8) / nb;
    fprintf(f, "<path fill=\"#4a7fb5\" d=\"");
    for (int k = 0; k < n; k++) {
        double h = cnt[k] ? fmax(1.0, (double)H * (double)cnt[k] / (double)mx) : 0;
        fprintf(f, "M%.1f %.1fh%.1fv%.1fh%.1fz", 4 + (bin[k] - b0) * bw, (double)H - h, fmax(bw - 0.6, 0.6), h, -fmax(bw - 0.6, 0.6));
    }
    fprintf(f, "\"/><line x1=\"4\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#999\"/>", W - 4, H, H);
    char a[32], b[32];
    snprintf(a, sizeof a, "%.3g", lo[0]);
    if (isinf(hi[n - 1])) snprintf(b, sizeof b, "&gt;%.3g", lo[n - 1]);
    else snprintf(b, sizeof b, "%.3g", hi[n - 1]);
    fprintf(f, "<text x=\"4\" y=\"%d\">%s</text><text x=\"%d\" y=\"%d\" text-anchor=\"middle\">|a|, log scale</text>"
               "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text></svg>",
            H + PAD, a, W / 2, H + PAD, W - 4, H + PAD, b);
    fprintf(f, "<div class=\"note\">peak bin %lld tokens", mx);
    if (zero) fprintf(f, "; a = 0 on %lld", zero);
    fputs("</div></div>\n", f);
}

typedef struct {
    sqlite3_stmt *stat, *freq, *hist, *ctx, *abil, *over;
    sqlite3_stmt *attr; /* NULL when the database has no neuron_attribution table */
} queries;

static void queries_free(queries *Q) {
    sqlite3_finalize(Q->stat), sqlite3_finalize(Q->freq), sqlite3_finalize(Q->hist);
    sqlite3_finalize(Q->ctx), sqlite3_finalize(Q->abil), sqlite3_finalize(Q->over), sqlite3_finalize(Q->attr);
}

static void context_row(FILE *f, sqlite3_stmt *q) {
    double v = sqlite3_column_double(q, 1);
    fprintf(f, "<tr><td class=\"v\">%.3f</td><td class=\"d\" title=\"document %d, token %d\">", v, sqlite3_column_int(q, 2),
            sqlite3_column_int(q, 3));
    fprintf(f, "d%d:%d", sqlite3_column_int(q, 2), sqlite3_column_int(q, 3));
    if (*col_text(q, 4)) fputs(" ", f), esc(f, col_text(q, 4));
    fputs("</td><td class=\"b\">", f);
    esc_ctx(f, col_text(q, 5));
    fprintf(f, "</td><td class=\"m\"><mark%s title=\"token id %d\">", v < 0 ? " class=\"neg\"" : "", sqlite3_column_int(q, 8));
    esc_ctx(f, col_text(q, 6));
    fputs("</mark></td><td class=\"a\">", f);
    esc_ctx(f, col_text(q, 7));
    fputs("</td></tr>\n", f);
}

/* One neuron's section. */
static void neuron_section(FILE *f, queries *Q, int64_t run, int l, int i) {
    sqlite3_stmt *q = Q->stat;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    int64_t tokens = 0;
    fprintf(f, "<section id=\"n%d\"><div><h3>layer %d \xc2\xb7 neuron %d</h3><div class=\"st\">", i, l, i);
    if (sqlite3_step(q) == SQLITE_ROW) {
        tokens = sqlite3_column_int64(q, 0);
        fputs("mean |a| <b>", f), num(f, q, 3), fputs("</b> \xc2\xb7 max |a| <b>", f), num(f, q, 6);
        fputs("</b> (min ", f), num(f, q, 4), fputs(", max ", f), num(f, q, 5), fputs(") \xc2\xb7 mean ", f), num(f, q, 1);
        fputs(" \xc2\xb7 std ", f), num(f, q, 2), fputs(" \xc2\xb7 \xe2\x80\x96W_out[:, i]\xe2\x80\x96 ", f), num(f, q, 7);
        fprintf(f, " \xc2\xb7 %lld tokens", (long long)tokens);
    }
    fputs("<br>frequency (r = |a|/max<sub>j</sub>|a<sub>j</sub>| of the token above):", f);
    q = Q->freq;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    for (int k = 0; sqlite3_step(q) == SQLITE_ROW; k++)
        fprintf(f, "%s r&gt;%g: <b>%.1f%%</b>", k ? " \xc2\xb7" : "", sqlite3_column_double(q, 0), 100 * sqlite3_column_double(q, 1));
    fputs("</div>", f);
    q = Q->abil;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    /* the chance levels: stated once when every ability has the same, else after each score */
    int n_ab = 0, same = 1;
    double chance = NAN;
    while (sqlite3_step(q) == SQLITE_ROW) {
        double c = sqlite3_column_type(q, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 3);
        if (n_ab++ == 0) chance = c;
        else if (!(fabs(c - chance) < 5e-3) && !(isnan(c) && isnan(chance))) same = 0;
    }
    sqlite3_reset(q);
    for (int k = 0; sqlite3_step(q) == SQLITE_ROW; k++) {
        if (!k) fputs("<div class=\"ab\">ability scores (AP): ", f);
        int top = sqlite3_column_int(q, 2);
        fprintf(f, "%s<span%s>", k ? " \xc2\xb7 " : "", top ? " class=\"top\" title=\"in the ability's top set\"" : "");
        esc(f, col_text(q, 0));
        fputs(" ", f), num(f, q, 1);
        if (!same && sqlite3_column_type(q, 3) != SQLITE_NULL)
            fprintf(f, " <span class=\"note\">(chance %.2f)</span>", sqlite3_column_double(q, 3));
        fputs(top ? " \xe2\x98\x85</span>" : "</span>", f);
    }
    if (n_ab && same && !isnan(chance)) fprintf(f, " <span class=\"note\">(chance %.2f for each)</span>", chance);
    /* direct logit attribution (neuronlab attribute): the latest complete run of the same model with rows for it */
    if ((q = Q->attr)) {
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
        int k = 0, side = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            const int rank = sqlite3_column_int(q, 0), s2 = rank > 0 ? 1 : 2;
            if (!k++) fprintf(f, "<div class=\"ab\">logit attribution (W_U\xc2\xb7W_out[:, i], run %lld): ", (long long)sqlite3_column_int64(q, 4));
            if (s2 != side) fputs(s2 == 1 ? "promotes " : " \xc2\xb7 suppresses ", f), side = s2;
            else fputs(", ", f);
            fputs("<code>", f);
            if (sqlite3_column_type(q, 2) == SQLITE_NULL) fprintf(f, "#%d", sqlite3_column_int(q, 1));
            else esc_ctx(f, col_text(q, 2));
            fprintf(f, "</code> %+.3f", sqlite3_column_double(q, 3));
        }
        if (k) fputs("</div>", f);
    }
    fputs(n_ab ? "</div></div>\n" : "</div>\n", f); /* .ab, then the left column */
    histogram(f, Q->hist, run, l, i, tokens);
    q = Q->ctx;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    fputs("<div class=\"ctxs\">", f);
    int k = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (k == 0) fputs("<table class=\"ctx\">\n", f);
        if (k == SHOWN_CONTEXTS) fputs("</table><details><summary>more contexts</summary><table class=\"ctx\">\n", f);
        context_row(f, q);
        k++;
    }
    if (k > SHOWN_CONTEXTS) fputs("</table></details>", f);
    else if (k) fputs("</table>", f);
    else fputs("<p class=\"note\">no contexts stored</p>", f);
    fputs("</div></section>\n", f);
}

/* The first context's token of a neuron, escaped, for overview tables. */
static void top_token(FILE *f, sqlite3_stmt *q, int64_t run, int l, int i) {
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l), sqlite3_bind_int(q, 3, i);
    if (sqlite3_step(q) == SQLITE_ROW) {
        fputs("<code class=\"tok\">", f);
        esc_ctx(f, col_text(q, 6));
        fputs("</code>", f);
    }
}

static nl_status layer_page(nl_ctx *ctx, nl_results *db, queries *Q, const char *dir, int64_t run, int l, int prev, int next,
                            int F) {
    char path[4200];
    snprintf(path, sizeof path, "%s/layer-%d.html", dir, l);
    nl_atomic_file af;
    nl_status st = nl_atomic_open(ctx, path, &af);
    if (st != NL_OK) return st;
    FILE *f = af.f;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>layer %d \xe2\x80\x94 neurons</title>\n", l);
    fputs(CSS, f);
    fputs("</head><body>\n<nav><a href=\"index.html\">\xe2\x86\x91 all layers</a>", f);
    if (prev >= 0) fprintf(f, "<a href=\"layer-%d.html\">\xe2\x86\x90 layer %d</a>", prev, prev);
    if (next >= 0) fprintf(f, "<a href=\"layer-%d.html\">layer %d \xe2\x86\x92</a>", next, next);
    fputs("<a href=\"../index.html\">report</a></nav>\n", f);
    fprintf(f, "<h1>Layer %d: %d neurons</h1>\n<p class=\"note\">Overview: one row per neuron (click a neuron for its section). "
               "Frequency = share of tokens with r = |a|/max<sub>j</sub>|a<sub>j</sub>| &gt; 0.1; best ability = the highest "
               "ability score (AP) of the neuron; top token = the token of its largest |a|. In the contexts the token is marked "
               "<mark>yellow</mark> when a &gt; 0 and <mark class=\"neg\">blue</mark> when a &lt; 0; \xe2\x86\xb5 is a line "
               "break, \xe2\x87\xa5 a tab; \xe2\x98\x85 = in the ability's top set.</p>\n",
            l, F);
    fputs("<table class=\"ov\"><tr><th>neuron</th><th class=\"r\">mean |a|</th><th class=\"r\">max |a|</th><th class=\"r\">freq r&gt;0.1</th>"
          "<th>best ability</th><th>top token</th></tr>\n", f);
    sqlite3_stmt *q = Q->over;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, run), sqlite3_bind_int(q, 2, l);
    while (sqlite3_step(q) == SQLITE_ROW) {
        int i = sqlite3_column_int(q, 0);
        fprintf(f, "<tr><td><a href=\"#n%d\">%d</a></td><td class=\"r\">", i, i);
        num(f, q, 1), fputs("</td><td class=\"r\">", f), num(f, q, 2), fputs("</td><td class=\"r\">", f);
        if (sqlite3_column_type(q, 3) != SQLITE_NULL) fprintf(f, "%.1f%%", 100 * sqlite3_column_double(q, 3));
        fputs("</td><td>", f);
        if (sqlite3_column_type(q, 4) != SQLITE_NULL) esc(f, col_text(q, 4)), fputs(" ", f), num(f, q, 5);
        fputs("</td><td>", f);
        top_token(f, Q->ctx, run, l, i);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    for (int i = 0; i < F && !nl_interrupted; i++) neuron_section(f, Q, run, l, i);
    fputs("</body></html>\n", f);
    if (nl_interrupted) {
        nl_atomic_abort(&af);
        return nl_errorf(ctx, NL_EINTR, "interrupted");
    }
    return nl_atomic_commit(ctx, &af);
}

nl_status nl_report_neurons(nl_ctx *ctx, nl_results *db, const char *out_dir, int64_t run, FILE *idx) {
    sqlite3 *h = nl_results_db(db);
    fputs("<h2 id=\"neurons\">Neuron pages</h2>\n", idx);
    if (run < 0) {
        fputs("<p class=\"missing\">Not written: the database has no complete run of <code>neuronlab neurons</code> "
              "(it writes the contexts from a <code>record --stats</code> summary).</p>\n",
              idx);
        return NL_OK;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/neurons", out_dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return nl_errorf(ctx, NL_EIO, "cannot create '%s': %s", dir, strerror(errno));
    sqlite3_stmt *q;
    nl_status st = prep(ctx, db, "SELECT summary, ability_run, top, before, after, docs, tokens, d_ff FROM neuron_run WHERE run_id = ?1", &q);
    if (st != NL_OK) return st;
    sqlite3_bind_int64(q, 1, run);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return nl_errorf(ctx, NL_EINVAL, "'%s': run %lld is not a neurons run", nl_results_path(db), (long long)run);
    }
    char *summary = strdup(col_text(q, 0));
    int64_t ability_run = sqlite3_column_type(q, 1) == SQLITE_NULL ? 0 : sqlite3_column_int64(q, 1);
    int top = sqlite3_column_int(q, 2), before = sqlite3_column_int(q, 3), after = sqlite3_column_int(q, 4);
    long long docs = sqlite3_column_int64(q, 5), tokens = sqlite3_column_int64(q, 6);
    int F = sqlite3_column_int(q, 7);
    sqlite3_finalize(q);
    if (!summary) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    /* the layers of the run */
    int *layers = NULL, nl = 0, cap = 0;
    if ((st = prep(ctx, db, "SELECT DISTINCT layer FROM neuron_stat WHERE run_id = ?1 ORDER BY layer", &q)) == NL_OK) {
        sqlite3_bind_int64(q, 1, run);
        while (st == NL_OK && sqlite3_step(q) == SQLITE_ROW) {
            if (nl == cap) {
                int *t = realloc(layers, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *t);
                if (!t) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
                else layers = t;
            }
            if (st == NL_OK) layers[nl++] = sqlite3_column_int(q, 0);
        }
        sqlite3_finalize(q);
    }
    queries Q = {0};
    if (st == NL_OK) st = prep(ctx, db, "SELECT tokens, mean, std, mean_abs, min, max, max_abs, w_out_norm FROM neuron_stat"
                                        " WHERE run_id = ?1 AND layer = ?2 AND neuron = ?3", &Q.stat);
    if (st == NL_OK) st = prep(ctx, db, "SELECT threshold, freq FROM neuron_frequency WHERE run_id = ?1 AND layer = ?2 AND neuron = ?3"
                                        " ORDER BY threshold", &Q.freq);
    if (st == NL_OK) st = prep(ctx, db, "SELECT bin, lo, hi, count FROM neuron_hist WHERE run_id = ?1 AND layer = ?2 AND neuron = ?3"
                                        " ORDER BY bin", &Q.hist);
    if (st == NL_OK) st = prep(ctx, db, "SELECT rank, value, doc, pos, label, before, token, after, token_id FROM neuron_context"
                                        " WHERE run_id = ?1 AND layer = ?2 AND neuron = ?3 ORDER BY rank", &Q.ctx);
    /* the chance level of each ability comes from the ability run's own table, when the database still has it */
    int has_label = 0;
    if (st == NL_OK && sqlite3_prepare_v2(h, "SELECT 1 FROM sqlite_master WHERE name = 'ability_label'", -1, &q, NULL) == SQLITE_OK)
        has_label = sqlite3_step(q) == SQLITE_ROW, sqlite3_finalize(q);
    if (st == NL_OK)
        st = prep(ctx, db, has_label ? "SELECT a.ability, a.score, a.in_top, (SELECT baseline FROM ability_label b, neuron_run r"
                                       " WHERE r.run_id = a.run_id AND b.run_id = r.ability_run AND b.ability = a.ability)"
                                       " FROM neuron_ability a WHERE a.run_id = ?1 AND a.layer = ?2 AND a.neuron = ?3"
                                       " ORDER BY a.score DESC, a.ability"
                                     : "SELECT a.ability, a.score, a.in_top, NULL FROM neuron_ability a"
                                       " WHERE a.run_id = ?1 AND a.layer = ?2 AND a.neuron = ?3 ORDER BY a.score DESC, a.ability",
                  &Q.abil);
    if (st == NL_OK)
        st = prep(ctx, db, "SELECT s.neuron, s.mean_abs, s.max_abs,"
                           " (SELECT freq FROM neuron_frequency fq WHERE fq.run_id = s.run_id AND fq.layer = s.layer AND fq.neuron = s.neuron"
                           "   AND abs(fq.threshold - 0.1) < 1e-9),"
                           " (SELECT ability FROM neuron_ability a WHERE a.run_id = s.run_id AND a.layer = s.layer AND a.neuron = s.neuron"
                           "   ORDER BY a.score DESC, a.ability LIMIT 1),"
                           " (SELECT max(score) FROM neuron_ability a WHERE a.run_id = s.run_id AND a.layer = s.layer AND a.neuron = s.neuron)"
                           " FROM neuron_stat s WHERE s.run_id = ?1 AND s.layer = ?2 ORDER BY s.neuron",
                  &Q.over);
    int has_attr = 0;
    if (st == NL_OK && sqlite3_prepare_v2(h, "SELECT 1 FROM sqlite_master WHERE name = 'neuron_attribution'", -1, &q, NULL) == SQLITE_OK)
        has_attr = sqlite3_step(q) == SQLITE_ROW, sqlite3_finalize(q);
    if (st == NL_OK && has_attr)
        st = prep(ctx, db, "SELECT a.rank, a.token_id, a.token, a.logit, a.run_id FROM neuron_attribution a WHERE a.layer = ?2 AND"
                           " a.neuron = ?3 AND ABS(a.rank) <= 8 AND a.run_id = (SELECT MAX(b.run_id) FROM neuron_attribution b"
                           " JOIN runs r ON r.id = b.run_id WHERE r.status = 'complete' AND b.layer = ?2 AND b.neuron = ?3 AND"
                           " r.model IS (SELECT model FROM runs WHERE id = ?1)) ORDER BY a.rank < 0, ABS(a.rank)",
                  &Q.attr);
    for (int k = 0; st == NL_OK && k < nl; k++)
        st = layer_page(ctx, db, &Q, dir, run, layers[k], k ? layers[k - 1] : -1, k + 1 < nl ? layers[k + 1] : -1, F);
    /* neurons/index.html */
    nl_atomic_file af = {0};
    char path[4200];
    snprintf(path, sizeof path, "%s/index.html", dir);
    if (st == NL_OK) st = nl_atomic_open(ctx, path, &af);
    if (st == NL_OK) {
        FILE *f = af.f;
        fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>neuron pages</title>\n", f);
        fputs(CSS, f);
        fputs("</head><body>\n<nav><a href=\"../index.html\">\xe2\x86\x90 report</a></nav>\n<h1>Neuron pages</h1>\n<p>", f);
        fprintf(f, "Run %lld of <code>neuronlab neurons</code> from the summary <code>", (long long)run);
        esc(f, summary);
        fprintf(f, "</code>: %lld documents, %lld tokens, %d neurons per layer; the top %d contexts of every neuron "
                   "(largest |a|, with %d tokens before and %d after). ",
                docs, tokens, F, top, before, after);
        if (ability_run) fprintf(f, "Ability scores from ability run %lld (average precision; chance = the positive rate).", (long long)ability_run);
        else fputs("No ability scores: the database had no complete ability run of this model when the run was made.", f);
        fputs("</p>\n<h2>Layers</h2>\n<table class=\"ov\"><tr><th>layer</th><th class=\"r\">mean |a|</th>"
              "<th class=\"r\">mean freq r&gt;0.1</th><th class=\"r\">max |a|</th></tr>\n", f);
        sqlite3_stmt *lq;
        if ((st = prep(ctx, db, "SELECT s.layer, avg(s.mean_abs), avg(fq.freq), max(s.max_abs) FROM neuron_stat s LEFT JOIN neuron_frequency fq"
                                " ON fq.run_id = s.run_id AND fq.layer = s.layer AND fq.neuron = s.neuron AND abs(fq.threshold - 0.1) < 1e-9"
                                " WHERE s.run_id = ?1 GROUP BY s.layer ORDER BY s.layer", &lq)) == NL_OK) {
            sqlite3_bind_int64(lq, 1, run);
            while (sqlite3_step(lq) == SQLITE_ROW) {
                int l = sqlite3_column_int(lq, 0);
                fprintf(f, "<tr><td><a href=\"layer-%d.html\">layer %d</a></td><td class=\"r\">", l, l);
                num(f, lq, 1), fputs("</td><td class=\"r\">", f);
                if (sqlite3_column_type(lq, 2) != SQLITE_NULL) fprintf(f, "%.1f%%", 100 * sqlite3_column_double(lq, 2));
                fputs("</td><td class=\"r\">", f), num(f, lq, 3), fputs("</td></tr>\n", f);
            }
            sqlite3_finalize(lq);
        }
        fputs("</table>\n", f);
        if (st == NL_OK && ability_run) {
            sqlite3_stmt *aq, *tq;
            st = prep(ctx, db, "SELECT DISTINCT ability FROM neuron_ability WHERE run_id = ?1 ORDER BY ability", &aq);
            if (st == NL_OK && (st = prep(ctx, db, "SELECT layer, neuron, score, in_top FROM neuron_ability WHERE run_id = ?1 AND ability = ?2"
                                                   " ORDER BY score DESC, layer, neuron LIMIT ?3", &tq)) != NL_OK)
                sqlite3_finalize(aq);
            if (st == NL_OK) {
                fprintf(f, "<h2>Top neurons per ability</h2>\n<p class=\"note\">The %d highest ability scores over all written layers "
                           "(\xe2\x98\x85 = in the ability run's top set).</p>\n", TOP_PER_ABILITY);
                sqlite3_bind_int64(aq, 1, run);
                while (sqlite3_step(aq) == SQLITE_ROW) {
                    const char *ab = col_text(aq, 0);
                    fputs("<h3>", f), esc(f, ab), fputs("</h3>\n<table class=\"ov\"><tr><th>neuron</th><th class=\"r\">score</th>"
                                                       "<th>top token</th><th>its context</th></tr>\n", f);
                    sqlite3_reset(tq);
                    sqlite3_bind_int64(tq, 1, run), sqlite3_bind_text(tq, 2, ab, -1, SQLITE_TRANSIENT), sqlite3_bind_int(tq, 3, TOP_PER_ABILITY);
                    while (sqlite3_step(tq) == SQLITE_ROW) {
                        int l = sqlite3_column_int(tq, 0), i = sqlite3_column_int(tq, 1);
                        fprintf(f, "<tr><td><a href=\"layer-%d.html#n%d\">L%d N%d</a>%s</td><td class=\"r\">%.4f</td><td>", l, i, l, i,
                                sqlite3_column_int(tq, 3) ? " \xe2\x98\x85" : "", sqlite3_column_double(tq, 2));
                        top_token(f, Q.ctx, run, l, i);
                        fputs("</td><td><code>", f);
                        sqlite3_reset(Q.ctx);
                        sqlite3_bind_int64(Q.ctx, 1, run), sqlite3_bind_int(Q.ctx, 2, l), sqlite3_bind_int(Q.ctx, 3, i);
                        if (sqlite3_step(Q.ctx) == SQLITE_ROW) {
                            esc_ctx(f, col_text(Q.ctx, 5));
                            fputs("<mark>", f), esc_ctx(f, col_text(Q.ctx, 6)), fputs("</mark>", f);
                            esc_ctx(f, col_text(Q.ctx, 7));
                        }
                        fputs("</code></td></tr>\n", f);
                    }
                    fputs("</table>\n", f);
                }
                sqlite3_finalize(aq), sqlite3_finalize(tq);
            }
        } else if (st == NL_OK) {
            sqlite3_stmt *tq;
            if ((st = prep(ctx, db, "SELECT layer, neuron, max_abs, mean_abs FROM neuron_stat WHERE run_id = ?1"
                                    " ORDER BY max_abs DESC, layer, neuron LIMIT 30", &tq)) == NL_OK) {
                fputs("<h2>Neurons with the largest |a|</h2>\n<table class=\"ov\"><tr><th>neuron</th><th class=\"r\">max |a|</th>"
                      "<th class=\"r\">mean |a|</th><th>top token</th></tr>\n", f);
                sqlite3_bind_int64(tq, 1, run);
                while (sqlite3_step(tq) == SQLITE_ROW) {
                    int l = sqlite3_column_int(tq, 0), i = sqlite3_column_int(tq, 1);
                    fprintf(f, "<tr><td><a href=\"layer-%d.html#n%d\">L%d N%d</a></td><td class=\"r\">", l, i, l, i);
                    num(f, tq, 2), fputs("</td><td class=\"r\">", f), num(f, tq, 3), fputs("</td><td>", f);
                    top_token(f, Q.ctx, run, l, i);
                    fputs("</td></tr>\n", f);
                }
                fputs("</table>\n", f);
                sqlite3_finalize(tq);
            }
        }
        fputs("</body></html>\n", f);
        if (st == NL_OK) st = nl_atomic_commit(ctx, &af);
        else nl_atomic_abort(&af);
    }
    queries_free(&Q);
    if (st == NL_OK) {
        fprintf(idx, "<p><a href=\"neurons/index.html\">Neuron pages</a> of run %lld (summary <code>", (long long)run);
        esc(idx, summary);
        fprintf(idx, "</code>): %d layer%s \xc3\x97 %d neurons, one page per layer:", nl, nl == 1 ? "" : "s", F);
        for (int k = 0; k < nl; k++) fprintf(idx, " <a href=\"neurons/layer-%d.html\">%d</a>", layers[k], layers[k]);
        fputs(".</p>\n", idx);
    }
    free(layers);
    free(summary);
    return st;
}
