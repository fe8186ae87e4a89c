/* test_results.c — the SQLite results store: schema creation and checks, runs, transactions,
 * every bad-database message, nl_results_finish_run (the one end-of-run block), stale runs;
 * provenance: canonical paths and content checksums (recomputed here from the documented
 * definition, for files and model folders), the in-place 2→3 upgrade. */
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
    expect_open_error(p, 0, NL_EUNSUPPORTED, "results schema version 9 is not supported (this neuronlab reads versions 1 to 3)");
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

/* ---- provenance: canonical paths, content checksums, the 2→3 upgrade ------------------- */

#include <sys/stat.h>

#include "neuronlab/rng.h"

static void write_bytes(const char *p, size_t n, unsigned seed) {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "%s", p);
    for (size_t i = 0; i < n; i++) fputc((int)((i * 131 + seed * 7 + (i >> 12)) & 0xff), f);
    fclose(f);
}

/* The documented checksum of a regular file, computed here from the whole content. */
static uint64_t want_file(uint64_t h, const char *p, uint64_t *size) {
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long S = ftell(f);
    rewind(f);
    unsigned char *b = malloc((size_t)S + 1);
    cr_assert_eq(fread(b, 1, (size_t)S, f), (size_t)S);
    fclose(f);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)S >> (8 * i));
    h = nl_fnv1a(h, le, 8);
    const long M = 1 << 20;
    long head = S < M ? S : M, tail = S - M > M ? S - M : M;
    h = nl_fnv1a(h, b, (size_t)head);
    if (tail < S) h = nl_fnv1a(h, b + tail, (size_t)(S - tail));
    free(b);
    *size += (uint64_t)S;
    return h;
}

static void expect_sum(const char *path, uint64_t h, uint64_t size) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char got[NL_RESULTS_SUM_SIZE], want[64];
    cr_assert_eq(nl_results_content_sum(&ctx, path, got), NL_OK, "%s", ctx.msg);
    snprintf(want, sizeof want, "fnv1a64:%016llx:%llu", (unsigned long long)h, (unsigned long long)size);
    cr_assert_str_eq(got, want, "%s", path);
}

Test(results, content_sum_covers_what_it_documents) {
    const char *sizes_name[] = {"empty.bin", "small.bin", "2m.bin", "big.bin"};
    size_t sizes[] = {0, 1000, 2 << 20, (5 << 20) + 123};
    for (int i = 0; i < 4; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s", path_of(sizes_name[i]));
        write_bytes(p, sizes[i], (unsigned)i);
        uint64_t size = 0, h = want_file(NL_FNV_INIT, p, &size);
        expect_sum(p, h, size);
    }
    /* a byte in the middle of a big file is not covered; one in the last MiB is */
    char big[256], s1[NL_RESULTS_SUM_SIZE], s2[NL_RESULTS_SUM_SIZE];
    snprintf(big, sizeof big, "%s", path_of("big.bin"));
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    cr_assert_eq(nl_results_content_sum(&ctx, big, s1), NL_OK);
    FILE *f = fopen(big, "r+b");
    fseek(f, 2 << 20, SEEK_SET);
    fputc(0xAA, f);
    fclose(f);
    cr_assert_eq(nl_results_content_sum(&ctx, big, s2), NL_OK);
    cr_assert_str_eq(s1, s2, "the middle is documented as not covered");
    f = fopen(big, "r+b");
    fseek(f, -10, SEEK_END);
    fputc(0xAA, f);
    fclose(f);
    cr_assert_eq(nl_results_content_sum(&ctx, big, s2), NL_OK);
    cr_assert_str_neq(s1, s2, "the last MiB is covered");

    /* a model folder: config.json and *.safetensors in name order; other files ignored */
    char m[256];
    snprintf(m, sizeof m, "%s", path_of("model"));
    cr_assert_eq(mkdir(m, 0700), 0);
    char cfg[300], st_b[300], st_a[300], tok[300];
    snprintf(cfg, sizeof cfg, "%s/config.json", m);
    snprintf(st_b, sizeof st_b, "%s/model-2.safetensors", m);
    snprintf(st_a, sizeof st_a, "%s/model-1.safetensors", m);
    snprintf(tok, sizeof tok, "%s/tokenizer.json", m);
    write_bytes(cfg, 300, 1), write_bytes(st_b, 3 << 20, 2), write_bytes(st_a, 5000, 3), write_bytes(tok, 77, 4);
    uint64_t size = 0, h = NL_FNV_INIT;
    const char *order[] = {"config.json", "model-1.safetensors", "model-2.safetensors"};
    const char *full[] = {cfg, st_a, st_b};
    for (int i = 0; i < 3; i++) {
        h = nl_fnv1a(h, order[i], strlen(order[i]) + 1);
        h = want_file(h, full[i], &size);
    }
    expect_sum(m, h, size);
    write_bytes(tok, 99, 5); /* not covered */
    expect_sum(m, h, size);
    /* a folder with none of those: every regular file */
    char o[256], x[300];
    snprintf(o, sizeof o, "%s", path_of("other"));
    cr_assert_eq(mkdir(o, 0700), 0);
    snprintf(x, sizeof x, "%s/x.txt", o);
    write_bytes(x, 10, 6);
    size = 0, h = nl_fnv1a(NL_FNV_INIT, "x.txt", 6);
    h = want_file(h, x, &size);
    expect_sum(o, h, size);
    /* errors name the path */
    char none[NL_RESULTS_SUM_SIZE];
    cr_assert_eq(nl_results_content_sum(&ctx, path_of("nope"), none), NL_EIO);
    cr_assert(strstr(ctx.msg, "nope"), "%s", ctx.msg);
}

Test(results, runs_store_canonical_paths_and_checksums) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    char data[256], src[256], want_data[4096], want_src[4096];
    snprintf(data, sizeof data, "%s", path_of("d.jsonl"));
    snprintf(src, sizeof src, "%s", path_of("acts.h5"));
    write_bytes(data, 100, 7), write_bytes(src, 200, 8);
    cr_assert(realpath(data, want_data) && realpath(src, want_src));
    /* the dataset given by a relative path with "..": stored canonical */
    char cwd[4096], rel[4096];
    cr_assert(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    snprintf(rel, sizeof rel, "../%s/./d.jsonl", strrchr(dir, '/') + 1);
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, "prov.db", 0, &r), NL_OK, "%s", ctx.msg);
    nl_run_info info = {.kind = "sparsity", .model = "some-model-name", .dataset = rel, .source = "acts.h5", .params = "{}"};
    int64_t id;
    cr_assert_eq(nl_results_begin_run(&ctx, r, &info, &id), NL_OK, "%s", ctx.msg);
    char ds_sum[NL_RESULTS_SUM_SIZE], src_sum[NL_RESULTS_SUM_SIZE];
    cr_assert_eq(nl_results_content_sum(&ctx, want_data, ds_sum), NL_OK);
    cr_assert_eq(nl_results_content_sum(&ctx, want_src, src_sum), NL_OK);
    char q[16384];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM runs WHERE id = %lld AND model = 'some-model-name' AND model_sum IS NULL AND dataset = '%s'"
             " AND dataset_sum = '%s' AND source = '%s' AND source_sum = '%s'",
             (long long)id, want_data, ds_sum, want_src, src_sum);
    cr_assert_eq(count(nl_results_db(r), q), 1, "%s", q);
    nl_run_row *rows;
    int n;
    cr_assert_eq(nl_results_runs(&ctx, r, &rows, &n), NL_OK);
    cr_assert_eq(n, 1);
    cr_assert_null(rows[0].model_sum);
    cr_assert_str_eq(rows[0].dataset_sum, ds_sum);
    cr_assert_str_eq(rows[0].source, want_src);
    nl_results_runs_free(rows, n);
    nl_results_close(r);
    cr_assert_eq(chdir(cwd), 0);
}

Test(results, version_2_is_read_as_is_and_upgraded_for_writing) {
    const char *p = path_of("v2.db");
    sql_file(p, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE runs(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, model TEXT, dataset TEXT, source TEXT,"
                " params TEXT, tool_version TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,"
                " status TEXT NOT NULL CHECK (status IN ('running','complete','interrupted','failed')), message TEXT,"
                " pid INTEGER, host TEXT);"
                "INSERT INTO meta VALUES('format','neuronlab.results'),('schema_version','2');"
                "INSERT INTO runs(kind, model, tool_version, started_at, status, pid, host) VALUES('sparsity', 'm',"
                " 'neuronlab 0.1.0', '2024-01-01T00:00:00.000Z', 'complete', 1, 'h');");
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_results *r;
    cr_assert_eq(nl_results_open(&ctx, p, 1, &r), NL_OK, "%s", ctx.msg);
    nl_run_row *rows;
    int n;
    cr_assert_eq(nl_results_runs(&ctx, r, &rows, &n), NL_OK, "%s", ctx.msg);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rows[0].model, "m");
    cr_assert_null(rows[0].model_sum);
    nl_results_runs_free(rows, n);
    cr_assert_eq(count(nl_results_db(r), "SELECT value FROM meta WHERE key = 'schema_version'"), 2, "read-only: left as is");
    nl_results_close(r);
    cr_assert_eq(nl_results_open(&ctx, p, 0, &r), NL_OK, "%s", ctx.msg);
    sqlite3 *db = nl_results_db(r);
    cr_assert_eq(count(db, "SELECT value FROM meta WHERE key = 'schema_version'"), 3);
    cr_assert_eq(count(db, "SELECT count(*) FROM pragma_table_info('runs') WHERE name IN ('model_sum','dataset_sum','source_sum')"), 3);
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE model = 'm' AND model_sum IS NULL"), 1, "old rows keep NULL");
    nl_run_info info = {.kind = "k", .model = p, .params = "{}"};
    int64_t id;
    cr_assert_eq(nl_results_begin_run(&ctx, r, &info, &id), NL_OK, "%s", ctx.msg);
    cr_assert_eq(count(db, "SELECT count(*) FROM runs WHERE model_sum LIKE 'fnv1a64:________________:%'"), 1);
    nl_results_close(r);
}
