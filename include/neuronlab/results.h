/* results.h — the SQLite results store: every analysis result with its provenance.
 *
 * Schema (version NL_RESULTS_VERSION; meta table holds format="neuronlab.results" and
 * schema_version, checked on open):
 *   meta(key TEXT PRIMARY KEY, value TEXT)
 *   runs(id INTEGER PRIMARY KEY, kind TEXT, model TEXT, dataset TEXT, source TEXT,
 *        params TEXT (JSON), tool_version TEXT, started_at TEXT, ended_at TEXT,
 *        status TEXT ('running' | 'complete' | 'interrupted' | 'failed'), message TEXT,
 *        pid INTEGER, host TEXT,  -- the process that ran it (schema version 2)
 *        model_sum TEXT, dataset_sum TEXT, source_sum TEXT)  -- content checksums (version 3)
 * Provenance: nl_results_begin_run stores model / dataset / source as the canonical absolute
 * path (realpath) when the given value names an existing file or folder — as given otherwise
 * (a model name, "ability run 7", an output not written yet) — and the matching *_sum column
 * gets its content checksum (nl_results_content_sum; NULL when it is not a readable file or
 * folder). When a run ends 'complete', a value without a checksum that names a file by then
 * (the activation file record wrote) is made canonical and checksummed the same way. So a run
 * can be matched to its files from any folder, and a moved or copied file by its checksum.
 * Each analysis creates its own tables (CREATE TABLE IF NOT EXISTS) keyed by run_id
 * REFERENCES runs(id), through nl_results_exec. A run is inserted with status 'running'
 * in its own transaction before the work starts and ended with its final status, so an
 * interrupted or failed run is visible as such; results are written in transactions, so
 * rerunning an analysis adds a run and never damages an earlier one.
 * A run whose process died without ending it (SIGKILL, power loss) stays 'running' in the
 * table; readers compute it as stale (nl_run_row.stale: its pid is gone from its host, or now
 * belongs to a process started later) and `neuronlab runs --repair` marks it 'interrupted'.
 * Opening an older database for writing upgrades it in place: version 1 gets the pid/host
 * columns (version 2), version 2 the *_sum columns (version 3; old rows keep NULL); for
 * reading, versions 1 and 2 are read as they are. Schema creation is one BEGIN IMMEDIATE transaction, so processes
 * creating the same new database at once wait for each other instead of failing.
 *
 * Rules: one writer at a time (SQLite's lock; a busy database is waited on for
 * NL_RESULTS_BUSY_MS — or $NEURONLAB_DB_TIMEOUT_MS — then refused with "'x.db' is locked
 * by another process"). Times are
 * UTC ISO-8601. Library code: statuses and one-line messages naming the file.
 * Checked by tests/test_results.c.
 */
#ifndef NEURONLAB_RESULTS_H
#define NEURONLAB_RESULTS_H

#include "neuronlab/common.h"

#define NL_RESULTS_FORMAT "neuronlab.results"
#define NL_RESULTS_VERSION 3
#define NL_RESULTS_BUSY_MS 5000
#define NL_RESULTS_END_MS 60000 /* busy timeout of the final status write of a run
                                  * ($NEURONLAB_DB_END_TIMEOUT_MS overrides it) */

typedef struct nl_results nl_results;
typedef struct sqlite3 sqlite3;

/* Opens (creating when missing, unless readonly) the database at path and checks or creates
 * the schema. readonly = 1 opens for queries only (a report). Errors:
 *   cannot open 'x.db': …                       (NL_EIO: missing directory, permissions)
 *   'x.db' is not an SQLite database            (NL_EFORMAT)
 *   'x.db' is not a neuronlab results database  (NL_EFORMAT: tables but no meta format)
 *   'x.db': results schema version 9 is not supported (this neuronlab reads versions 1 to 3)
 *   'x.db' is read-only / is locked by another process (NL_EIO)
 * On success *out is owned by the caller: nl_results_close. */
nl_status nl_results_open(nl_ctx *ctx, const char *path, int readonly, nl_results **out);
void nl_results_close(nl_results *r); /* NULL is a no-op */

/* The connection, borrowed, for prepared statements of the analyses. */
sqlite3 *nl_results_db(nl_results *r);
const char *nl_results_path(const nl_results *r);

/* Provenance of a run; strings borrowed (NULL → NULL in the table). params: a JSON object. */
typedef struct {
    const char *kind;    /* analysis name: "sparsity", "perturb" … */
    const char *model;   /* model path or name */
    const char *dataset; /* dataset path */
    const char *source;  /* input file the analysis read (activation file), if any */
    const char *params;  /* JSON text of the parameters */
    const char *compute; /* number format of the forward pass's matrix products (nl_compute_name):
                          * NULL or "f32" stores params as given; otherwise params gain
                          * "compute":<this> (an approximate run says so in the database) */
} nl_run_info;

/* Content checksum of a file or a model folder, "fnv1a64:<16 hex digits>:<bytes>" (at most
 * NL_RESULTS_SUM_SIZE bytes with the NUL). It covers exactly:
 *   a regular file of S bytes: FNV-1a 64 (from NL_FNV_INIT) over S as 8 little-endian bytes,
 *     then bytes [0, min(S, 1 MiB)), then bytes [max(1 MiB, S − 1 MiB), S) — the whole file
 *     up to 2 MiB, its first and last MiB beyond; <bytes> = S;
 *   a folder: its files named config.json or *.safetensors (every regular file in it when it
 *     has none of those), not recursive, in strcmp order of names, each hashed as its name
 *     with the terminating NUL followed by the file's part above; <bytes> = their total size.
 * A change in the middle of a file larger than 2 MiB is not seen; its size, header (the
 * safetensors JSON header, an HDF5 superblock) and end are. Errors: NL_EIO naming the path. */
#define NL_RESULTS_SUM_SIZE 48
nl_status nl_results_content_sum(nl_ctx *ctx, const char *path, char out[NL_RESULTS_SUM_SIZE]);

/* Inserts a run with status 'running' and the start time, committed at once. model, dataset
 * and source are canonicalised and checksummed (see the provenance rule at the top). */
nl_status nl_results_begin_run(nl_ctx *ctx, nl_results *r, const nl_run_info *info, int64_t *run_id);
/* Sets the run's final status ("complete", "interrupted", "failed"), end time and message
 * (NULL or ""), committed at once. */
nl_status nl_results_end_run(nl_ctx *ctx, nl_results *r, int64_t run_id, const char *status, const char *message);

/* Ends a run with the status its work returned — the one end-of-run block of every analysis:
 *   st == NL_OK    → 'complete' (message NULL)
 *   st == NL_EINTR → 'interrupted', message `note` or "interrupted by the user"
 *   otherwise      → 'failed', message ctx->msg (the error that stopped the run)
 * `note` (may be NULL) replaces the default message of an interrupted run (e.g. "interrupted
 * after 3 of 6 layers"). ctx->msg is kept; returns st, except that a run that completed or was
 * interrupted but whose status cannot be written returns that error (message in ctx). */
nl_status nl_results_finish_run(nl_ctx *ctx, nl_results *r, int64_t run_id, nl_status st, const char *note);

/* One row of the runs table, as `neuronlab runs` lists it. Strings owned by the list. */
typedef struct {
    int64_t id, pid;   /* pid 0 when unknown (version-1 rows) */
    char *kind, *model, *dataset, *source, *status, *started_at, *ended_at, *message, *host;
    char *model_sum, *dataset_sum, *source_sum; /* NULL when unknown (rows of schema < 3) */
    int stale;         /* 1: status 'running' but its process is gone (decidable on its own host only) */
} nl_run_row;

/* Every run in id order into *rows (n). Release with nl_results_runs_free. */
nl_status nl_results_runs(nl_ctx *ctx, nl_results *r, nl_run_row **rows, int *n);
void nl_results_runs_free(nl_run_row *rows, int n);
/* Marks every stale run 'interrupted' with a message naming the process that left it;
 * *n_repaired gets their number. One transaction. */
nl_status nl_results_repair(nl_ctx *ctx, nl_results *r, int *n_repaired);
/* 1 when a run started at started_at (ISO-8601 UTC) by pid on host is not running any more:
 * host is this machine and pid is gone or belongs to a process that started later. 0 when it
 * may still run (or is on another host). */
int nl_run_is_stale(const char *host, int64_t pid, const char *started_at);

/* Executes one or more SQL statements without results (DDL, BEGIN/COMMIT). */
nl_status nl_results_exec(nl_ctx *ctx, nl_results *r, const char *sql);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (rollback never fails; it is a no-op outside one). */
nl_status nl_results_begin(nl_ctx *ctx, nl_results *r);
nl_status nl_results_commit(nl_ctx *ctx, nl_results *r);
void nl_results_rollback(nl_results *r);

/* Reports the SQLite error of the last call as "'x.db': <what>: <sqlite message>". */
nl_status nl_results_error(nl_ctx *ctx, nl_results *r, const char *what);

#endif
