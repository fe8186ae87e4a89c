/* results.c — the SQLite results store (see results.h): open/create with schema checks and the
 * in-place upgrades 1→2→3, runs with provenance (canonical paths and content checksums),
 * transactions. Checked by tests/test_results.c. */
#include "neuronlab/results.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "neuronlab/rng.h"

struct nl_results {
    sqlite3 *db;
    char path[4096];
    int readonly;
    int busy_ms;  /* busy timeout of ordinary statements */
    int end_ms;   /* busy timeout of the final status write of a run */
    int has_pid;  /* runs has the pid/host columns (schema ≥ 2) */
    int has_sum;  /* runs has the model_sum/dataset_sum/source_sum columns (schema ≥ 3) */
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
    " message TEXT,"
    " pid INTEGER, host TEXT,"
    " model_sum TEXT, dataset_sum TEXT, source_sum TEXT);";

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

/* Creates the schema of an empty database, or checks format and version and brings an older
 * database to version 3: 1→2 adds runs.pid, runs.host; 2→3 adds runs.model_sum, dataset_sum,
 * source_sum (old rows keep NULL there). A writer does this inside one
 * BEGIN IMMEDIATE transaction, so processes that create the same new database at once wait
 * for each other and the later ones find the schema made (CREATE … IF NOT EXISTS). */
static nl_status check_schema(nl_ctx *ctx, nl_results *r) {
    int rc;
    if (!r->readonly && sqlite3_exec(r->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return nl_results_error(ctx, r, "cannot read the schema");
    nl_status st = NL_OK;
    char *n = query_text(r->db, "SELECT count(*) FROM sqlite_master", &rc);
    int n_tables = n ? atoi(n) : 0;
    free(n);
    if (rc != SQLITE_OK) {
        st = nl_results_error(ctx, r, "cannot read the schema");
    } else if (n_tables == 0) {
        if (r->readonly) return nl_errorf(ctx, NL_EFORMAT, "'%s' is empty (no neuronlab results in it)", r->path);
        char sql[2048];
        snprintf(sql, sizeof sql,
                 "%sINSERT INTO meta VALUES('format','%s'),('schema_version','%d'),('created_by','neuronlab %s');", SCHEMA,
                 NL_RESULTS_FORMAT, NL_RESULTS_VERSION, NL_VERSION);
        if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) st = nl_results_error(ctx, r, "cannot create the schema");
    } else {
        char *fmt = query_text(r->db, "SELECT value FROM meta WHERE key = 'format'", &rc);
        if (rc != SQLITE_OK || !fmt || strcmp(fmt, NL_RESULTS_FORMAT) != 0) {
            if ((sqlite3_extended_errcode(r->db) & 0xff) == SQLITE_BUSY) st = nl_results_error(ctx, r, "cannot read the schema");
            else st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab results database (no meta format '%s')", r->path,
                                NL_RESULTS_FORMAT);
        }
        free(fmt);
        int v = 0;
        if (st == NL_OK) {
            char *ver = query_text(r->db, "SELECT value FROM meta WHERE key = 'schema_version'", &rc);
            v = ver ? atoi(ver) : 0;
            free(ver);
            if (v < 1 || v > NL_RESULTS_VERSION)
                st = nl_errorf(ctx, NL_EUNSUPPORTED,
                               "'%s': results schema version %d is not supported (this neuronlab reads versions 1 to %d)", r->path,
                               v, NL_RESULTS_VERSION);
        }
        if (st == NL_OK && v == 1 && !r->readonly &&
            sqlite3_exec(r->db,
                         "ALTER TABLE runs ADD COLUMN pid INTEGER; ALTER TABLE runs ADD COLUMN host TEXT;"
                         "UPDATE meta SET value = '2' WHERE key = 'schema_version';",
                         NULL, NULL, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, r, "cannot bring the schema to version 2");
        if (st == NL_OK && v <= 2 && !r->readonly &&
            sqlite3_exec(r->db,
                         "ALTER TABLE runs ADD COLUMN model_sum TEXT; ALTER TABLE runs ADD COLUMN dataset_sum TEXT;"
                         "ALTER TABLE runs ADD COLUMN source_sum TEXT;"
                         "UPDATE meta SET value = '3' WHERE key = 'schema_version';",
                         NULL, NULL, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, r, "cannot bring the schema to version 3");
        r->has_pid = v >= 2 || !r->readonly;
        r->has_sum = v >= 3 || !r->readonly;
    }
    if (n_tables == 0) r->has_pid = r->has_sum = 1;
    if (!r->readonly) {
        if (st == NL_OK && sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, r, "cannot create the schema");
        nl_results_rollback(r);
    }
    return st;
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
    r->busy_ms = ms && *ms ? atoi(ms) : NL_RESULTS_BUSY_MS;
    sqlite3_busy_timeout(r->db, r->busy_ms);
    const char *ems = getenv("NEURONLAB_DB_END_TIMEOUT_MS");
    r->end_ms = ems && *ems ? atoi(ems) : NL_RESULTS_END_MS;
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

/* ---- content checksums ---------------------------------------------------------------- */

#define SUM_PART ((off_t)1 << 20) /* 1 MiB from each end */

static uint64_t hash_u64(uint64_t h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return nl_fnv1a(h, b, 8);
}

/* Hashes bytes [off, off + n) of fd into *h; 0 on a read error. */
static int hash_range(int fd, off_t off, off_t n, uint64_t *h, unsigned char *buf, size_t cap) {
    while (n > 0) {
        size_t want = (size_t)(n < (off_t)cap ? n : (off_t)cap);
        ssize_t k = pread(fd, buf, want, off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        *h = nl_fnv1a(*h, buf, (size_t)k);
        off += k, n -= k;
    }
    return 1;
}

/* One regular file: its size (8 bytes, little-endian), its first min(S, 1 MiB) bytes and its
 * bytes [max(1 MiB, S − 1 MiB), S). *size gets S. 0 on an error (errno set). */
static int hash_file(const char *path, uint64_t *h, uint64_t *size, unsigned char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat sb;
    int ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
    if (ok) {
        off_t S = sb.st_size, head = S < SUM_PART ? S : SUM_PART, tail = S - SUM_PART > SUM_PART ? S - SUM_PART : SUM_PART;
        *size = (uint64_t)S;
        *h = hash_u64(*h, (uint64_t)S);
        ok = hash_range(fd, 0, head, h, buf, cap) && (tail >= S || hash_range(fd, tail, S - tail, h, buf, cap));
    }
    close(fd);
    return ok;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A folder: the files named config.json or *.safetensors (or, when it has none, every regular
 * file in it), not recursive, in strcmp order of their names; each as its name with the NUL,
 * then hash_file. *size = the sum of their sizes. */
static int hash_dir(const char *path, uint64_t *h, uint64_t *size, unsigned char *buf, size_t cap) {
    DIR *d = opendir(path);
    if (!d) return 0;
    char **names = NULL;
    size_t n = 0, ncap = 0;
    int ok = 1;
    for (int pass = 0; pass < 2 && ok && n == 0; pass++) {
        rewinddir(d);
        struct dirent *e;
        while (ok && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (pass == 0 && strcmp(e->d_name, "config.json") != 0 && !ends_with(e->d_name, ".safetensors")) continue;
            if (pass == 1) {
                char full[PATH_MAX + 256];
                struct stat sb;
                snprintf(full, sizeof full, "%s/%s", path, e->d_name);
                if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
            }
            if (n == ncap) {
                ncap = ncap ? 2 * ncap : 16;
                char **nn = realloc(names, ncap * sizeof *nn);
                if (!nn) { ok = 0; break; }
                names = nn;
            }
            if (!(names[n] = strdup(e->d_name))) ok = 0;
            else n++;
        }
    }
    closedir(d);
    if (ok) qsort(names, n, sizeof *names, by_name);
    *size = 0;
    for (size_t i = 0; ok && i < n; i++) {
        char full[PATH_MAX + 256];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        *h = nl_fnv1a(*h, names[i], strlen(names[i]) + 1);
        uint64_t fs = 0;
        ok = hash_file(full, h, &fs, buf, cap);
        *size += fs;
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return ok;
}

nl_status nl_results_content_sum(nl_ctx *ctx, const char *path, char out[NL_RESULTS_SUM_SIZE]) {
    out[0] = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    if (!buf) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    uint64_t h = NL_FNV_INIT, size = 0;
    int ok;
    if (S_ISDIR(sb.st_mode)) ok = hash_dir(path, &h, &size, buf, cap);
    else if (S_ISREG(sb.st_mode)) ok = hash_file(path, &h, &size, buf, cap);
    else {
        free(buf);
        return nl_errorf(ctx, NL_EIO, "cannot read '%s': not a file or a folder", path);
    }
    int err = errno;
    free(buf);
    if (!ok) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(err ? err : EIO));
    snprintf(out, NL_RESULTS_SUM_SIZE, "fnv1a64:%016llx:%llu", (unsigned long long)h, (unsigned long long)size);
    return NL_OK;
}

/* A provenance value: the canonical absolute path and its checksum when it names an existing
 * file or folder; as given (and no checksum) otherwise (a model name, "ability run 7", an
 * output not written yet). */
static void resolve(const char *given, char *path, size_t n, char sum[NL_RESULTS_SUM_SIZE], int *has_sum) {
    char real[PATH_MAX];
    *has_sum = 0;
    if (!given) return;
    if (*given && realpath(given, real)) {
        snprintf(path, n, "%s", real);
        nl_ctx quiet;
        nl_ctx_init(&quiet);
        *has_sum = nl_results_content_sum(&quiet, real, sum) == NL_OK;
        return;
    }
    snprintf(path, n, "%s", given);
}

nl_status nl_results_begin_run(nl_ctx *ctx, nl_results *r, const nl_run_info *info, int64_t *run_id) {
    sqlite3_stmt *s;
    char t[40], ver[64];
    now_utc(t, sizeof t);
    snprintf(ver, sizeof ver, "neuronlab %s", NL_VERSION);
    const char *given[3] = {info->model, info->dataset, info->source};
    char paths[3][PATH_MAX + 1], sums[3][NL_RESULTS_SUM_SIZE];
    int has[3];
    for (int i = 0; i < 3; i++) resolve(given[i], paths[i], sizeof paths[i], sums[i], &has[i]);
    if (sqlite3_prepare_v2(r->db,
                           r->has_sum ? "INSERT INTO runs(kind, model, dataset, source, params, tool_version, started_at, status, pid,"
                                        " host, model_sum, dataset_sum, source_sum)"
                                        " VALUES(?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)"
                                      : "INSERT INTO runs(kind, model, dataset, source, params, tool_version, started_at, status, pid,"
                                        " host) VALUES(?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                           -1, &s, NULL) != SQLITE_OK)
        return nl_results_error(ctx, r, "cannot record the run");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    sqlite3_bind_int64(s, 8, (sqlite3_int64)getpid());
    bind_text(s, 9, host);
    bind_text(s, 1, info->kind);
    for (int i = 0; i < 3; i++) {
        bind_text(s, 2 + i, given[i] ? paths[i] : NULL);
        if (r->has_sum) bind_text(s, 10 + i, has[i] ? sums[i] : NULL);
    }
    char *merged = NULL; /* params + "compute" for a run that did not compute in f32 */
    if (info->compute && strcmp(info->compute, "f32")) {
        const char *p = info->params && *info->params ? info->params : "{}";
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\n')) n--;
        if (n < 2 || p[n - 1] != '}') {
            sqlite3_finalize(s);
            return nl_errorf(ctx, NL_EINVAL, "cannot record the run: params are not a JSON object");
        }
        int empty = 1;
        for (size_t i = 1; i + 1 < n; i++) empty &= p[i] == ' ' || p[i] == '\n';
        if (!(merged = malloc(n + strlen(info->compute) + 16))) {
            sqlite3_finalize(s);
            return nl_errorf(ctx, NL_ENOMEM, "cannot record the run: out of memory");
        }
        sprintf(merged, "%.*s%s\"compute\":\"%s\"}", (int)(n - 1), p, empty ? "" : ",", info->compute);
    }
    bind_text(s, 5, merged ? merged : info->params);
    bind_text(s, 6, ver);
    bind_text(s, 7, t);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    free(merged);
    if (rc != SQLITE_DONE) return nl_results_error(ctx, r, "cannot record the run");
    *run_id = sqlite3_last_insert_rowid(r->db);
    return NL_OK;
}

nl_status nl_results_end_run(nl_ctx *ctx, nl_results *r, int64_t run_id, const char *status, const char *message) {
    sqlite3_stmt *s;
    char t[40];
    now_utc(t, sizeof t);
    nl_results_rollback(r); /* a failed analysis may have left its transaction open */
    /* The final status is what tells a reader the run stopped: wait longer for it than for
     * ordinary statements, so a lock held past the busy timeout does not leave it 'running'. */
    sqlite3_busy_timeout(r->db, r->busy_ms > r->end_ms ? r->busy_ms : r->end_ms);
    /* A complete run's outputs exist now: a path without a checksum that names a file by now
     * (the activation file a record run wrote) is made canonical and gets its checksum. */
    char sums[3][NL_RESULTS_SUM_SIZE], paths[3][PATH_MAX + 1];
    int has[3] = {0, 0, 0};
    if (r->has_sum && status && !strcmp(status, "complete") &&
        sqlite3_prepare_v2(r->db, "SELECT model, dataset, source, model_sum, dataset_sum, source_sum FROM runs WHERE id = ?", -1, &s,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, run_id);
        if (sqlite3_step(s) == SQLITE_ROW)
            for (int i = 0; i < 3; i++) {
                const char *p = (const char *)sqlite3_column_text(s, i);
                if (p && sqlite3_column_type(s, 3 + i) == SQLITE_NULL) resolve(p, paths[i], sizeof paths[i], sums[i], &has[i]);
            }
        sqlite3_finalize(s);
    }
    int rc = sqlite3_prepare_v2(r->db,
                                r->has_sum ? "UPDATE runs SET status = ?1, ended_at = ?2, message = ?3, model_sum = coalesce(model_sum, ?5),"
                                             " dataset_sum = coalesce(dataset_sum, ?6), source_sum = coalesce(source_sum, ?7),"
                                             " model = coalesce(?8, model), dataset = coalesce(?9, dataset), source = coalesce(?10, source)"
                                             " WHERE id = ?4"
                                           : "UPDATE runs SET status = ?1, ended_at = ?2, message = ?3 WHERE id = ?4",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        bind_text(s, 1, status);
        bind_text(s, 2, t);
        bind_text(s, 3, message && *message ? message : NULL);
        sqlite3_bind_int64(s, 4, run_id);
        if (r->has_sum)
            for (int i = 0; i < 3; i++) {
                bind_text(s, 5 + i, has[i] ? sums[i] : NULL);
                bind_text(s, 8 + i, has[i] ? paths[i] : NULL);
            }
        rc = sqlite3_step(s);
        sqlite3_finalize(s);
    }
    nl_status st = rc == SQLITE_DONE ? NL_OK : nl_results_error(ctx, r, "cannot end the run");
    sqlite3_busy_timeout(r->db, r->busy_ms);
    return st;
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

/* Seconds since the epoch of an ISO-8601 UTC time "YYYY-MM-DDTHH:MM:SS(.mmm)Z", or -1. */
static double iso_to_epoch(const char *t) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (!t || sscanf(t, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}

/* Start time (epoch seconds) of process pid from /proc, or -1 when it does not exist. */
static double process_start(int64_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long start = 0;
    int field = 2;
    for (const char *q = p + 1; *q && field < 22; q++)
        if (*q == ' ') {
            field++;
            if (field == 22) start = strtoull(q + 1, NULL, 10);
        }
    FILE *s = fopen("/proc/stat", "r");
    if (!s) return -1;
    double btime = -1;
    char line[256];
    while (fgets(line, sizeof line, s))
        if (strncmp(line, "btime ", 6) == 0) btime = atof(line + 6);
    fclose(s);
    long hz = sysconf(_SC_CLK_TCK);
    return btime < 0 || hz <= 0 ? -1 : btime + (double)start / (double)hz;
}

int nl_run_is_stale(const char *host, int64_t pid, const char *started_at) {
    char me[256] = "";
    gethostname(me, sizeof me - 1);
    if (!host || !*host || pid <= 0 || strcmp(host, me) != 0) return 0;
    double began = process_start(pid);
    if (began < 0) return 1; /* no such process */
    double run_start = iso_to_epoch(started_at);
    return run_start >= 0 && began > run_start + 2.0; /* pid reused by a later process (clock ticks, btime in s) */
}

static char *col_dup(sqlite3_stmt *s, int i) {
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

void nl_results_runs_free(nl_run_row *rows, int n) {
    for (int i = 0; rows && i < n; i++) {
        nl_run_row *w = &rows[i];
        free(w->kind), free(w->model), free(w->dataset), free(w->source), free(w->status);
        free(w->started_at), free(w->ended_at), free(w->message), free(w->host);
        free(w->model_sum), free(w->dataset_sum), free(w->source_sum);
    }
    free(rows);
}

nl_status nl_results_runs(nl_ctx *ctx, nl_results *r, nl_run_row **rows, int *n) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s;
    const char *sql = r->has_sum ? "SELECT id, kind, model, dataset, source, status, started_at, ended_at, message, pid, host,"
                                   " model_sum, dataset_sum, source_sum FROM runs ORDER BY id"
                      : r->has_pid ? "SELECT id, kind, model, dataset, source, status, started_at, ended_at, message, pid, host,"
                                     " NULL, NULL, NULL FROM runs ORDER BY id"
                                   : "SELECT id, kind, model, dataset, source, status, started_at, ended_at, message, 0, NULL,"
                                     " NULL, NULL, NULL FROM runs ORDER BY id";
    if (sqlite3_prepare_v2(r->db, sql, -1, &s, NULL) != SQLITE_OK) return nl_results_error(ctx, r, "cannot list the runs");
    int cap = 0, rc;
    nl_status st = NL_OK;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            nl_run_row *nr = realloc(*rows, (size_t)cap * sizeof *nr);
            if (!nr) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); break; }
            *rows = nr;
        }
        nl_run_row *w = &(*rows)[(*n)++];
        w->id = sqlite3_column_int64(s, 0);
        w->kind = col_dup(s, 1), w->model = col_dup(s, 2), w->dataset = col_dup(s, 3), w->source = col_dup(s, 4);
        w->status = col_dup(s, 5), w->started_at = col_dup(s, 6), w->ended_at = col_dup(s, 7), w->message = col_dup(s, 8);
        w->pid = sqlite3_column_int64(s, 9);
        w->host = col_dup(s, 10);
        w->model_sum = col_dup(s, 11), w->dataset_sum = col_dup(s, 12), w->source_sum = col_dup(s, 13);
        w->stale = w->status && strcmp(w->status, "running") == 0 && nl_run_is_stale(w->host, w->pid, w->started_at);
    }
    if (st == NL_OK && rc != SQLITE_DONE) st = nl_results_error(ctx, r, "cannot list the runs");
    sqlite3_finalize(s);
    if (st != NL_OK) {
        nl_results_runs_free(*rows, *n);
        *rows = NULL, *n = 0;
    }
    return st;
}

nl_status nl_results_repair(nl_ctx *ctx, nl_results *r, int *n_repaired) {
    *n_repaired = 0;
    nl_run_row *rows;
    int n;
    nl_status st = nl_results_runs(ctx, r, &rows, &n);
    if (st != NL_OK) return st;
    if ((st = nl_results_begin(ctx, r)) != NL_OK) {
        nl_results_runs_free(rows, n);
        return st;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(r->db, "UPDATE runs SET status = 'interrupted', message = ? WHERE id = ? AND status = 'running'", -1, &s,
                           NULL) != SQLITE_OK)
        st = nl_results_error(ctx, r, "cannot repair the runs");
    for (int i = 0; st == NL_OK && i < n; i++) {
        if (!rows[i].stale) continue;
        char msg[512];
        snprintf(msg, sizeof msg, "stale: process %lld on %.200s ended without closing the run (marked by runs --repair)",
                 (long long)rows[i].pid, rows[i].host);
        sqlite3_reset(s);
        bind_text(s, 1, msg);
        sqlite3_bind_int64(s, 2, rows[i].id);
        if (sqlite3_step(s) != SQLITE_DONE) st = nl_results_error(ctx, r, "cannot repair the runs");
        else *n_repaired += sqlite3_changes(r->db);
    }
    sqlite3_finalize(s);
    nl_results_runs_free(rows, n);
    if (st == NL_OK) return nl_results_commit(ctx, r);
    nl_results_rollback(r);
    return st;
}
