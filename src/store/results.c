/* results.c — the SQLite results store (see results.h): open/create with schema checks, runs
 * with provenance, transactions. Checked by tests/test_results.c. */
#include "neuronlab/results.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct nl_results {
    sqlite3 *db;
    char path[4096];
    int readonly;
};

static const char SCHEMA[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE runs("
    " id INTEGER PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " model TEXT, dataset TEXT, source TEXT,"
    " params TEXT,"
    " tool_version TEXT NOT NULL,"
    " started_at TEXT NOT NULL, ended_at TEXT,"
    " status TEXT NOT NULL CHECK (status IN ('running','complete','interrupted','failed')),"
    " message TEXT);";

nl_status nl_results_error(nl_ctx *ctx, nl_results *r, const char *what) {
    int code = sqlite3_extended_errcode(r->db) & 0xff;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return nl_errorf(ctx, NL_EIO, "'%s' is locked by another process (%s)", r->path, what);
    if (code == SQLITE_READONLY) return nl_errorf(ctx, NL_EIO, "'%s' is read-only (%s)", r->path, what);
    if (code == SQLITE_NOTADB) return nl_errorf(ctx, NL_EFORMAT, "'%s' is not an SQLite database", r->path);
    if (code == SQLITE_CORRUPT) return nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: %s", r->path, sqlite3_errmsg(r->db));
    if (code == SQLITE_FULL || code == SQLITE_IOERR)
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s: %s", r->path, what, sqlite3_errmsg(r->db));
    return nl_errorf(ctx, NL_EIO, "'%s': %s: %s", r->path, what, sqlite3_errmsg(r->db));
}

nl_status nl_results_exec(nl_ctx *ctx, nl_results *r, const char *sql) {
    if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) return nl_results_error(ctx, r, "cannot execute SQL");
    return NL_OK;
}

nl_status nl_results_begin(nl_ctx *ctx, nl_results *r) {
    if (sqlite3_exec(r->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return nl_results_error(ctx, r, "cannot start a transaction");
    return NL_OK;
}

nl_status nl_results_commit(nl_ctx *ctx, nl_results *r) {
    if (sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        nl_status st = nl_results_error(ctx, r, "cannot commit");
        nl_results_rollback(r);
        return st;
    }
    return NL_OK;
}

void nl_results_rollback(nl_results *r) {
    if (!sqlite3_get_autocommit(r->db)) sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
}

/* One text value of a single-row query, or NULL (and *rc the step result). Caller frees. */
static char *query_text(sqlite3 *db, const char *sql, int *rc) {
    sqlite3_stmt *s;
    char *out = NULL;
    *rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (*rc != SQLITE_OK) return NULL;
    *rc = sqlite3_step(s);
    if (*rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        out = strdup(t ? (const char *)t : "");
        *rc = SQLITE_OK;
    } else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return out;
}

static nl_status check_schema(nl_ctx *ctx, nl_results *r) {
    int rc;
    char *n = query_text(r->db, "SELECT count(*) FROM sqlite_master", &rc);
    if (rc != SQLITE_OK) { free(n); return nl_results_error(ctx, r, "cannot read the schema"); }
    int n_tables = n ? atoi(n) : 0;
    free(n);
    if (n_tables == 0) {
        if (r->readonly) return nl_errorf(ctx, NL_EFORMAT, "'%s' is empty (no neuronlab results in it)", r->path);
        char sql[2048];
        snprintf(sql, sizeof sql,
                 "BEGIN IMMEDIATE;%sINSERT INTO meta VALUES('format','%s'),('schema_version','%d'),('created_by','neuronlab %s');"
                 "COMMIT;",
                 SCHEMA, NL_RESULTS_FORMAT, NL_RESULTS_VERSION, NL_VERSION);
        if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            nl_status st = nl_results_error(ctx, r, "cannot create the schema");
            nl_results_rollback(r);
            return st;
        }
        return NL_OK;
    }
    char *fmt = query_text(r->db, "SELECT value FROM meta WHERE key = 'format'", &rc);
    if (rc != SQLITE_OK || !fmt || strcmp(fmt, NL_RESULTS_FORMAT) != 0) {
        free(fmt);
        if ((sqlite3_extended_errcode(r->db) & 0xff) == SQLITE_BUSY) return nl_results_error(ctx, r, "cannot read the schema");
        return nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab results database (no meta format '%s')", r->path,
                         NL_RESULTS_FORMAT);
    }
    free(fmt);
    char *ver = query_text(r->db, "SELECT value FROM meta WHERE key = 'schema_version'", &rc);
    int v = ver ? atoi(ver) : 0;
    free(ver);
    if (v != NL_RESULTS_VERSION)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': results schema version %d is not supported (this neuronlab reads version %d)",
                         r->path, v, NL_RESULTS_VERSION);
    return NL_OK;
}

nl_status nl_results_open(nl_ctx *ctx, const char *path, int readonly, nl_results **out) {
    *out = NULL;
    nl_results *r = calloc(1, sizeof *r);
    if (!r) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    snprintf(r->path, sizeof r->path, "%s", path);
    r->readonly = readonly;
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &r->db, flags, NULL) != SQLITE_OK) {
        nl_status st = nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, r->db ? sqlite3_errmsg(r->db) : "out of memory");
        nl_results_close(r);
        return st;
    }
    sqlite3_extended_result_codes(r->db, 1);
    const char *ms = getenv("NEURONLAB_DB_TIMEOUT_MS");
    sqlite3_busy_timeout(r->db, ms && *ms ? atoi(ms) : NL_RESULTS_BUSY_MS);
    nl_status st = NL_OK;
    if (!readonly && sqlite3_db_readonly(r->db, "main") == 1) st = nl_errorf(ctx, NL_EIO, "'%s' is read-only", path);
    if (st == NL_OK) st = nl_results_exec(ctx, r, "PRAGMA foreign_keys = ON");
    if (st == NL_OK) st = check_schema(ctx, r);
    if (st != NL_OK) {
        nl_results_close(r);
        return st;
    }
    *out = r;
    return NL_OK;
}

void nl_results_close(nl_results *r) {
    if (!r) return;
    if (r->db) {
        nl_results_rollback(r);
        sqlite3_close_v2(r->db);
    }
    free(r);
}

sqlite3 *nl_results_db(nl_results *r) { return r->db; }
const char *nl_results_path(const nl_results *r) { return r->path; }

static void now_utc(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
    if (t) sqlite3_bind_text(s, i, t, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(s, i);
}

nl_status nl_results_begin_run(nl_ctx *ctx, nl_results *r, const nl_run_info *info, int64_t *run_id) {
    sqlite3_stmt *s;
    char t[40], ver[64];
    now_utc(t, sizeof t);
    snprintf(ver, sizeof ver, "neuronlab %s", NL_VERSION);
    if (sqlite3_prepare_v2(r->db,
                           "INSERT INTO runs(kind, model, dataset, source, params, tool_version, started_at, status)"
                           " VALUES(?, ?, ?, ?, ?, ?, ?, 'running')",
                           -1, &s, NULL) != SQLITE_OK)
        return nl_results_error(ctx, r, "cannot record the run");
    bind_text(s, 1, info->kind);
    bind_text(s, 2, info->model);
    bind_text(s, 3, info->dataset);
    bind_text(s, 4, info->source);
    bind_text(s, 5, info->params);
    bind_text(s, 6, ver);
    bind_text(s, 7, t);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return nl_results_error(ctx, r, "cannot record the run");
    *run_id = sqlite3_last_insert_rowid(r->db);
    return NL_OK;
}

nl_status nl_results_end_run(nl_ctx *ctx, nl_results *r, int64_t run_id, const char *status, const char *message) {
    sqlite3_stmt *s;
    char t[40];
    now_utc(t, sizeof t);
    nl_results_rollback(r); /* a failed analysis may have left its transaction open */
    if (sqlite3_prepare_v2(r->db, "UPDATE runs SET status = ?, ended_at = ?, message = ? WHERE id = ?", -1, &s, NULL) != SQLITE_OK)
        return nl_results_error(ctx, r, "cannot end the run");
    bind_text(s, 1, status);
    bind_text(s, 2, t);
    bind_text(s, 3, message && *message ? message : NULL);
    sqlite3_bind_int64(s, 4, run_id);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return nl_results_error(ctx, r, "cannot end the run");
    return NL_OK;
}

nl_status nl_results_finish_run(nl_ctx *ctx, nl_results *r, int64_t run_id, nl_status st, const char *note) {
    const char *status = st == NL_OK ? "complete" : st == NL_EINTR ? "interrupted" : "failed";
    char msg[sizeof ctx->msg];
    if (st == NL_OK) msg[0] = 0;
    else if (st == NL_EINTR) snprintf(msg, sizeof msg, "%s", note && *note ? note : "interrupted by the user");
    else snprintf(msg, sizeof msg, "%s", ctx->msg);
    nl_ctx ectx; /* keeps the run's own message in ctx */
    nl_ctx_init(&ectx);
    nl_status est = nl_results_end_run(&ectx, r, run_id, status, msg);
    if (est != NL_OK && (st == NL_OK || st == NL_EINTR)) {
        memcpy(ctx->msg, ectx.msg, sizeof ctx->msg);
        return est;
    }
    return st;
}
