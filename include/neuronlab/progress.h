/* progress.h — a progress bar with rate and ETA on stderr, drawn only when stderr is a TTY
 * (quiet otherwise, so logs and CI stay clean). Caller-owned struct; no allocation. */
#ifndef NEURONLAB_PROGRESS_H
#define NEURONLAB_PROGRESS_H

#include <stdint.h>

typedef struct {
    char what[32];     /* e.g. "ppl" */
    const char *unit;  /* e.g. "tok" */
    int64_t total, done;
    double t0, last;   /* start time, time of the last redraw */
    int active;        /* 1 when drawing */
} nl_progress;

/* enabled = 0 silences it even on a TTY. */
void nl_progress_init(nl_progress *p, const char *what, int64_t total, const char *unit, int enabled);
void nl_progress_add(nl_progress *p, int64_t n);
/* Draws the final state and a newline (when active). */
void nl_progress_end(nl_progress *p);

#endif
