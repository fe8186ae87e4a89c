/* test_results.c — the SQLite results store: schema creation and checks, runs, transactions,
 * every bad-database message, nl_results_finish_run (the one end-of-run block), stale runs. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "neuronlab/results.h"
#include "testutil.h"

static char dir[] = "/tmp/nl_results_XXXXXX";

static const char *path_of(const char *name) {
    static char p[256];
    static int made; /* mkdtemp once per test process (a generated name may end in 'X') */
    if (!made) { cr_assert(mkdtemp(dir)); made = 1; }
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static int64_t count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

Test(results, creates_schema_and_records_runs) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    const char *p = path_of("a.db");
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    nl_run_info info = {.kind = "sparsity", .model = "m", .dataset = "d.jsonl", .source = "a.h5", .params = "{\"x\":1}"};
    int64_t id1, id2;
    cr_assert_eq(nl_results_begin_run(&ctx, r, &info, &id1), NL_OK, "%s", ctx.msg);
    cr_assert_eq(count(nl_results_db(r), "SELECT count(*) FROM runs WHERE status = 'running'"), 1);
    cr_assert_eq(nl_results_exec(&ctx, r, "CREATE TABLE IF NOT EXISTS t(run_id INTEGER REFERENCES runs(id), v REAL)"), NL_OK);
    cr_assert_eq(nl_results_begin(&ctx, r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_results_exec(&ctx, r, "INSERT INTO t VALUES(1, 2.5)"), NL_OK);
    cr_assert_eq(nl_results_commit(&ctx, r), NL_OK, "%s", ctx.msg);
    cr_assert_eq(nl_results_end_run(&ctx, r, id1, "complete", NULL), NL_OK, "%s", ctx.msg);
    /* a second run whose transaction is abandoned leaves the first intact */
    cr_assert_eq(nl_results_begin_run(&ctx, r, &info, &id2), NL_OK);
    cr_assert_eq(id2, id1 + 1);
    cr_assert_eq(nl_results_begin(&ctx, r), NL_OK);
    cr_assert_eq(nl_results_exec(&ctx, r, "INSERT INTO t VALUES(2, 9.0)"), NL_OK);
    cr_assert_eq(nl_results_end_run(&ctx, r, id2, "interrupted", "stopped by the user"), NL_OK, "%s", ctx.msg);
    /* foreign keys are on: a row for a run that does not exist is refused */
    cr_assert_neq(nl_results_exec(&ctx, r, "INSERT INTO t VALUES(99, 1.0)"), NL_OK);
    nl_results_close(r);

    cr_assert_eq(nl_results_open(&ctx, p, 1, &r), NL_OK, "%s", ctx.msg);
    sqlite3 *db = nl_results_db(r);
    cr_assert_eq(count(db, "SELECT count(*) FROM t"), 1, "the abandoned transaction's row is gone");
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE status = 'complete' AND ended_at IS NOT NULL AND tool_version LIKE 'neuronlab %'"), 1);
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE status = 'interrupted' AND message = 'stopped by the user'"), 1);
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE started_at LIKE '____-__-__T__:__:__.___Z'"), 2);
    cr_assert_eq(count(db, "SELECT schema_version FROM (SELECT CAST(value AS INTEGER) AS schema_version FROM meta WHERE key = 'schema_version')"),
                 NL_RESULTS_VERSION);
    /* read-only connections cannot write */
    cr_assert_neq(nl_results_exec(&ctx, r, "INSERT INTO t VALUES(1, 0)"), NL_OK);
    nl_results_close(r);
}

static void expect_open_error(const char *p, int readonly, nl_status want, const char *needle) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r = (void *)1;
    nl_status st = nl_results_open(&ctx, p, readonly, &r);
    cr_assert_eq(st, want, "%s: status %d '%s'", p, st, ctx.msg);
    cr_assert_null(r);
    cr_assert(strstr(ctx.msg, p), "message does not name the file: %s", ctx.msg);
    cr_assert(strstr(ctx.msg, needle), "message '%s' lacks '%s'", ctx.msg, needle);
    cr_assert_null(strchr(ctx.msg, '\n'));
}

static void sql_file(const char *p, const char *sql) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(p, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

Test(results, bad_databases_name_the_file) {
    const char *p = path_of("garbage.db");
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 200; i++) fputs("this is not a database file at all ", f);
    fclose(f);
    expect_open_error(p, 0, NL_EFORMAT, "is not an SQLite database");
    p = path_of("other.db");
    sql_file(p, "CREATE TABLE people(name TEXT)");
    expect_open_error(p, 0, NL_EFORMAT, "is not a neuronlab results database");
    p = path_of("future.db");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    nl_results_close(r);
    sql_file(p, "UPDATE meta SET value = '9' WHERE key = 'schema_version'");
    expect_open_error(p, 0, NL_EUNSUPPORTED, "results schema version 9 is not supported (this neuronlab reads versions 1 to 2)");
    expect_open_error("/nonexistent/dir/r.db", 0, NL_EIO, "cannot open '/nonexistent/dir/r.db'");
    expect_open_error(path_of("missing.db"), 1, NL_EIO, "cannot open");
}

Test(results, locked_database_is_refused_after_the_timeout) {
    setenv("NEURONLAB_DB_TIMEOUT_MS", "200", 1);
    const char *p = path_of("locked.db");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    nl_results_close(r);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(p, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    expect_open_error(p, 0, NL_EIO, "is locked by another process");
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    unsetenv("NEURONLAB_DB_TIMEOUT_MS");
}

/* Holds an exclusive lock on path for `ms` milliseconds from another connection. */
typedef struct { const char *path; int ms; volatile int locked; } lock_holder;
static void *hold_lock(void *arg) {
    lock_holder *h = arg;
    sqlite3 *db;
    sqlite3_open(h->path, &db);
    sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL);
    h->locked = 1;
    usleep((useconds_t)h->ms * 1000);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return NULL;
}

Test(results, final_status_waits_past_the_busy_timeout) {
    /* R9: a lock held longer than the busy timeout made the run fail, then its final status
     * write fail too, leaving it 'running' for good. The end of a run waits NL_RESULTS_END_MS. */
    setenv("NEURONLAB_DB_TIMEOUT_MS", "200", 1);
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r;
    const char *p = path_of("busy.db");
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    nl_run_info info = {.kind = "sparsity"};
    int64_t id;
    cr_assert_eq(nl_results_begin_run(&ctx, r, &info, &id), NL_OK, "%s", ctx.msg);
    lock_holder h = {p, 1500, 0};
    pthread_t th;
    pthread_create(&th, NULL, hold_lock, &h);
    while (!h.locked) usleep(1000);
    /* an ordinary statement gives up after 200 ms and says the database is locked */
    cr_assert_eq(nl_results_begin(&ctx, r), NL_EIO);
    cr_assert(strstr(ctx.msg, "is locked by another process"), "%s", ctx.msg);
    /* the run fails with that message, and its status is written once the lock is gone */
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_EIO, NULL), NL_EIO);
    cr_assert(strstr(ctx.msg, "is locked by another process"), "%s", ctx.msg);
    pthread_join(th, NULL);
    cr_assert_eq(count(nl_results_db(r), "SELECT count(*) FROM runs WHERE status = 'failed' AND message LIKE '%locked%'"), 1);
    nl_results_close(r);
    unsetenv("NEURONLAB_DB_TIMEOUT_MS");
}

Test(results, stale_runs) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    cr_assert_eq(nl_run_is_stale(host, child, "2026-01-01T00:00:00.000Z"), 1); /* gone */
    /* this process, for a run that started after it: alive */
    cr_assert_eq(nl_run_is_stale(host, getpid(), "2099-01-01T00:00:00.000Z"), 0);
    /* the same pid for a run that started before this process existed: the pid was reused */
    cr_assert_eq(nl_run_is_stale(host, getpid(), "2000-01-01T00:00:00.000Z"), 1);
    cr_assert_eq(nl_run_is_stale("another-host", child, "2026-01-01T00:00:00.000Z"), 0);
    cr_assert_eq(nl_run_is_stale(host, 0, "2026-01-01T00:00:00.000Z"), 0);
    cr_assert_eq(nl_run_is_stale(NULL, child, NULL), 0);
}

/* The one end-of-run block: the status its work returned decides the run's end. */
static int64_t run_with(nl_results *r, nl_ctx *ctx) {
    nl_run_info info = {.kind = "test", .params = "{}"};
    int64_t id;
    cr_assert_eq(nl_results_begin_run(ctx, r, &info, &id), NL_OK, "%s", ctx->msg);
    return id;
}

static int64_t count_run(sqlite3 *db, int64_t id, const char *where) {
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM runs WHERE id = %lld AND ended_at IS NOT NULL AND %s", (long long)id, where);
    return count(db, sql);
}

Test(results, finish_run_ends_every_run_by_its_status) {
    setenv("NEURONLAB_DB_TIMEOUT_MS", "100", 1);
    setenv("NEURONLAB_DB_END_TIMEOUT_MS", "300", 1); /* the final status write waits longer (60 s by default) */
    const char *p = path_of("finish.db");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    sqlite3 *db = nl_results_db(r);
    /* complete: no message, NL_OK, ctx untouched */
    int64_t id = run_with(r, &ctx);
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_OK, "ignored note"), NL_OK);
    cr_assert_eq(count_run(db, id, "status = 'complete' AND message IS NULL"), 1);
    /* interrupted: the note, or the default message for NULL and "" */
    id = run_with(r, &ctx);
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_EINTR, "interrupted after 3 of 6 layers"), NL_EINTR);
    cr_assert_eq(count_run(db, id, "status = 'interrupted' AND message = 'interrupted after 3 of 6 layers'"), 1);
    id = run_with(r, &ctx);
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_EINTR, NULL), NL_EINTR);
    cr_assert_eq(count_run(db, id, "status = 'interrupted' AND message = 'interrupted by the user'"), 1);
    id = run_with(r, &ctx);
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_EINTR, ""), NL_EINTR);
    cr_assert_eq(count_run(db, id, "status = 'interrupted' AND message = 'interrupted by the user'"), 1);
    /* failed: the message that stopped the run, kept in ctx; an open transaction is rolled back */
    id = run_with(r, &ctx);
    cr_assert_eq(nl_results_exec(&ctx, r, "CREATE TABLE IF NOT EXISTS t2(run_id INTEGER REFERENCES runs(id), v REAL)"), NL_OK);
    cr_assert_eq(nl_results_begin(&ctx, r), NL_OK);
    cr_assert_eq(nl_results_exec(&ctx, r, "INSERT INTO t2 VALUES(1, 1.0)"), NL_OK);
    nl_errorf(&ctx, NL_EFORMAT, "cannot read 'acts.h5': layer 2 is truncated");
    cr_assert_eq(nl_results_finish_run(&ctx, r, id, NL_EFORMAT, "not used"), NL_EFORMAT);
    cr_assert_str_eq(ctx.msg, "cannot read 'acts.h5': layer 2 is truncated");
    cr_assert_eq(count_run(db, id, "status = 'failed' AND message = 'cannot read ''acts.h5'': layer 2 is truncated'"), 1);
    cr_assert_eq(count(db, "SELECT count(*) FROM t2"), 0, "the failed run's open transaction was rolled back");
    /* none of these runs is left 'running' */
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE status = 'running' OR ended_at IS NULL"), 0);

    /* the status cannot be written (another process holds the lock): a complete or interrupted
     * run reports that error instead of success; a failed one keeps its own status and message */
    const int64_t a = run_with(r, &ctx), b = run_with(r, &ctx), c = run_with(r, &ctx);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(p, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    nl_ctx_init(&ctx);
    nl_status st = nl_results_finish_run(&ctx, r, a, NL_OK, NULL);
    cr_assert_neq(st, NL_OK, "a run whose status was not written reported success");
    cr_assert(strstr(ctx.msg, p), "%s", ctx.msg);
    nl_ctx_init(&ctx);
    st = nl_results_finish_run(&ctx, r, b, NL_EINTR, NULL);
    cr_assert(st != NL_OK && st != NL_EINTR, "status %d", st);
    cr_assert(strstr(ctx.msg, p), "%s", ctx.msg);
    nl_errorf(&ctx, NL_ENOMEM, "out of memory");
    cr_assert_eq(nl_results_finish_run(&ctx, r, c, NL_ENOMEM, NULL), NL_ENOMEM);
    cr_assert_str_eq(ctx.msg, "out of memory");
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    /* once the lock is gone the same call ends the run */
    cr_assert_eq(nl_results_finish_run(&ctx, r, a, NL_OK, NULL), NL_OK, "%s", ctx.msg);
    cr_assert_eq(count_run(db, a, "status = 'complete'"), 1);
    nl_results_close(r);
    unsetenv("NEURONLAB_DB_TIMEOUT_MS");
    unsetenv("NEURONLAB_DB_END_TIMEOUT_MS");
}
