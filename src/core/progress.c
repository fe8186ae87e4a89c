/* progress.c — TTY progress bar: "what [#####.....] 45% 1234/2700 tok 5.1k tok/s ETA 0:12". */
#include "neuronlab/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "neuronlab/common.h"

void nl_progress_init(nl_progress *p, const char *what, int64_t total, const char *unit, int enabled) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = nl_now();
    p->active = enabled && isatty(STDERR_FILENO);
}

static void draw(nl_progress *p, double now) {
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    double frac = p->total > 0 ? (double)p->done / p->total : 0;
    if (frac > 1) frac = 1;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    const char *k = rate >= 1e6 ? "M" : rate >= 1e3 ? "k" : "";
    double r = rate >= 1e6 ? rate / 1e6 : rate >= 1e3 ? rate / 1e3 : rate;
    fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld %s %.1f%s %s/s ETA %d:%02d  ", p->what, bar, (int)(frac * 100),
            (long long)p->done, (long long)p->total, p->unit, r, k, p->unit, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

void nl_progress_add(nl_progress *p, int64_t n) {
    p->done += n;
    if (!p->active) return;
    double now = nl_now();
    if (now - p->last < 0.2) return;
    p->last = now;
    draw(p, now);
}

void nl_progress_end(nl_progress *p) {
    if (!p->active) return;
    draw(p, nl_now());
    fputc('\n', stderr);
    p->active = 0;
}
