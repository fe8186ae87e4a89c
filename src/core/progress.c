/* progress.c — progress on stderr (see progress.h): a bar redrawn in place on a TTY, a log
 * line every period seconds and at the end of a run that lasted a period otherwise, nothing when disabled.
 * Checked by tests/test_common.c (progress suite) and tests/help_cli.sh (non-TTY lines). */
#include "neuronlab/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "neuronlab/common.h"

static double log_period(void) {
    const char *e = getenv("NEURONLAB_PROGRESS_SECONDS");
    if (e && *e) {
        char *end;
        double v = strtod(e, &end);
        if (!*end && isfinite(v) && v > 0) return v;
    }
    return NL_PROGRESS_SECONDS;
}

void nl_progress_init(nl_progress *p, const char *what, int64_t total, const char *unit, int enabled) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = nl_now();
    p->active = enabled != 0;
    p->tty = isatty(STDERR_FILENO);
    p->period = p->tty ? 0.2 : log_period();
}

/* rate as "5.1k" */
static void fmt_rate(char *buf, size_t n, double rate) {
    const char *k = rate >= 1e6 ? "M" : rate >= 1e3 ? "k" : "";
    double r = rate >= 1e6 ? rate / 1e6 : rate >= 1e3 ? rate / 1e3 : rate;
    snprintf(buf, n, "%.1f%s", r, k);
}

static void draw(nl_progress *p, double now) {
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    double frac = p->total > 0 ? (double)p->done / p->total : 0;
    if (frac > 1) frac = 1;
    double eta = rate > 0 && p->total > p->done ? (p->total - p->done) / rate : 0;
    char r[32];
    fmt_rate(r, sizeof r, rate);
    if (!p->tty) {
        if (p->total > 0)
            fprintf(stderr, "neuronlab: %s: %lld/%lld %s (%d%%), %s %s/s, ETA %d:%02d\n", p->what, (long long)p->done,
                    (long long)p->total, p->unit, (int)(frac * 100), r, p->unit, (int)(eta / 60), (int)eta % 60);
        else
            fprintf(stderr, "neuronlab: %s: %lld %s, %s %s/s\n", p->what, (long long)p->done, p->unit, r, p->unit);
        fflush(stderr);
        p->lines++;
        return;
    }
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld %s %s %s/s ETA %d:%02d  ", p->what, bar, (int)(frac * 100),
            (long long)p->done, (long long)p->total, p->unit, r, p->unit, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

void nl_progress_add(nl_progress *p, int64_t n) {
    p->done += n;
    if (!p->active) return;
    double now = nl_now();
    if (now - p->last < p->period) return;
    p->last = now;
    draw(p, now);
}

void nl_progress_end(nl_progress *p) {
    if (!p->active) return;
    double now = nl_now();
    /* Log form: the final line only after a run that lasted a period (short runs stay quiet). */
    if (p->tty || p->lines > 0 || now - p->t0 >= p->period) draw(p, now);
    if (p->tty) fputc('\n', stderr);
    p->active = 0;
}
