/* atomic_file.h — files that appear whole or not at all (core module).
 *
 * A writer gets a FILE* on a temporary file beside the target (PATH.tmp.XXXXXX, made with
 * mkstemp so concurrent writers never share one, mode 0666 & ~umask like fopen), writes,
 * then commits: flush + fsync + close + rename over PATH + fsync of the folder. Until the
 * commit, PATH keeps its old content (or stays absent); on any error or abort the temporary
 * file is removed. Every output that a crash must not leave half-written goes through here
 * (tokenizer.json, safetensors, checkpoints, index.html, logs that are rewritten).
 * Checked by tests/test_common.c.
 */
#ifndef NEURONLAB_ATOMIC_FILE_H
#define NEURONLAB_ATOMIC_FILE_H

#include <stdio.h>

#include "neuronlab/common.h"

/* Caller-owned; zero it or let nl_atomic_open fill it. */
typedef struct {
    FILE *f;    /* write here (owned until commit/abort) */
    char *tmp;  /* temporary path (owned) */
    char *path; /* target path (owned copy) */
} nl_atomic_file;

/* Opens a temporary file beside path. Error: "cannot write 'PATH': <reason>" (NL_EIO). */
nl_status nl_atomic_open(nl_ctx *ctx, const char *path, nl_atomic_file *a);
/* Flushes, syncs and renames over the target; releases a in every case. A write error seen
 * by the FILE (ferror) fails the commit: "cannot write 'PATH': <reason>". */
nl_status nl_atomic_commit(nl_ctx *ctx, nl_atomic_file *a);
/* Closes and removes the temporary file; releases a. No-op on a zeroed struct. */
void nl_atomic_abort(nl_atomic_file *a);

/* Writes n bytes to path atomically (open, fwrite, commit). */
nl_status nl_write_file_atomic(nl_ctx *ctx, const char *path, const void *data, size_t n);

#endif
