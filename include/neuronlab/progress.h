/* progress.h — progress of a long loop on stderr, the one place the library writes there.
 *
 * Two forms, chosen by where stderr goes:
 *   a TTY     a bar redrawn in place at most 5 times a second:
 *               what [#####.....] 45% 1234/2700 tok 5.1k tok/s ETA 0:12
 *   otherwise one log line every period seconds (default NL_PROGRESS_SECONDS, or
 *             $NEURONLAB_PROGRESS_SECONDS when it is a positive number) and one at the end
 *             of a run that lasted at least one period (shorter runs write nothing), so the
 *             logs of long runs, CI and notebooks see it:
 *               neuronlab: what: 1234/2700 tok (45%), 5.1k tok/s, ETA 0:12
 *             ("1234 tok" and no percentage or ETA when the total is unknown, i.e. 0).
 * enabled = 0 (ctx->progress = 0: the CLI's --quiet) silences both. Caller-owned struct; no
 * allocation. Checked by tests/test_common.c (progress suite) and tests/help_cli.sh. */
#ifndef NEURONLAB_PROGRESS_H
#define NEURONLAB_PROGRESS_H

#include <stdint.h>

#define NL_PROGRESS_SECONDS 10.0 /* period of the log lines when stderr is not a TTY */

typedef struct {
    char what[32];     /* e.g. "ppl" */
    const char *unit;  /* e.g. "tok" */
    int64_t total, done;
    double t0, last;   /* start time, time of the last redraw / log line */
    int active;        /* 1 when writing anything */
    int tty;           /* 1: redraw a bar in place; 0: log lines */
    double period;     /* seconds between redraws (TTY) or log lines */
    int lines;         /* log lines written */
} nl_progress;

/* enabled = 0 silences it. Reads $NEURONLAB_PROGRESS_SECONDS for the log period. */
void nl_progress_init(nl_progress *p, const char *what, int64_t total, const char *unit, int enabled);
void nl_progress_add(nl_progress *p, int64_t n);
/* Draws the final state and a newline (TTY) or writes the final log line (when active). */
void nl_progress_end(nl_progress *p);

#endif
