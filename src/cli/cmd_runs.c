/* cmd_runs.c — `neuronlab runs --db results.db [--repair] [--json]`: the runs of a results
 * database with their status, computing 'stale' for a run left 'running' by a process that
 * is gone (SIGKILL, power loss); --repair marks those runs 'interrupted'. --json adds the
 * provenance: canonical paths and content checksums (model_sum, dataset_sum, source_sum).
 * Checked by tests/runs_cli.sh. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/results.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_runs[] = {
    {"--db", "results.db", 1, "the results database", NULL},
    {"--repair", NULL, 0, "mark runs whose process died (shown as stale) as interrupted", NULL},
    {"--json", NULL, 0, "print the runs as a JSON array, with their content checksums", NULL},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_runs = {"runs", NULL,
                                "list the runs of a results database (status, times, provenance); --repair marks runs whose "
                                "process died as interrupted",
                                run};

static void json_field(const char *key, const char *v, int comma) {
    printf("%s\"%s\":", comma ? "," : "", key);
    if (v) nl_cli_json_str(v);
    else printf("null");
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *dbpath = NULL, *v;
    int json = 0, repair = 0, k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_opt(argc, argv, &i, "--db", &v)) != 0) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_runs, "--db needs a path");
            dbpath = v;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--repair")) repair = 1;
        else if (argv[i][0] == '-') return nl_cli_usage(&nl_cmd_runs, "unknown option '%s'", argv[i]);
        else return nl_cli_usage(&nl_cmd_runs, "unexpected argument '%s'", argv[i]);
    }
    if (!dbpath) return nl_cli_usage(&nl_cmd_runs, "missing --db results.db");
    nl_results *db;
    nl_status st = nl_results_open(ctx, dbpath, !repair, &db);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    int repaired = 0;
    if (repair && (st = nl_results_repair(ctx, db, &repaired)) != NL_OK) {
        nl_results_close(db);
        return nl_cli_fail(ctx, st);
    }
    nl_run_row *rows;
    int n;
    if ((st = nl_results_runs(ctx, db, &rows, &n)) != NL_OK) {
        nl_results_close(db);
        return nl_cli_fail(ctx, st);
    }
    if (json) printf("[");
    else printf("%-5s %-9s %-12s %-24s %-24s %s\n", "id", "kind", "status", "started", "ended", "message / provenance");
    for (int i = 0; i < n; i++) {
        const nl_run_row *w = &rows[i];
        const char *status = w->stale ? "stale" : w->status;
        if (json) {
            printf("%s{\"id\":%lld", i ? "," : "", (long long)w->id);
            json_field("kind", w->kind, 1), json_field("status", status, 1), json_field("stored_status", w->status, 1);
            json_field("started_at", w->started_at, 1), json_field("ended_at", w->ended_at, 1);
            json_field("model", w->model, 1), json_field("dataset", w->dataset, 1), json_field("source", w->source, 1);
            json_field("model_sum", w->model_sum, 1), json_field("dataset_sum", w->dataset_sum, 1);
            json_field("source_sum", w->source_sum, 1);
            json_field("message", w->message, 1), json_field("host", w->host, 1);
            printf(",\"pid\":%lld}", (long long)w->pid);
        } else {
            printf("%-5lld %-9s %-12s %-24s %-24s ", (long long)w->id, w->kind ? w->kind : "?", status ? status : "?",
                   w->started_at ? w->started_at : "", w->ended_at ? w->ended_at : "");
            if (w->stale) printf("process %lld on %s is gone (neuronlab runs --repair marks it interrupted)", (long long)w->pid, w->host);
            else if (w->message) printf("%s", w->message);
            else printf("%s%s%s", w->model ? w->model : "", w->dataset ? " " : "", w->dataset ? w->dataset : "");
            printf("\n");
        }
    }
    if (json) printf("]\n");
    if (repair) fprintf(stderr, "neuronlab: marked %d stale run%s interrupted in '%s'\n", repaired, repaired == 1 ? "" : "s", dbpath);
    nl_results_runs_free(rows, n);
    nl_results_close(db);
    return 0;
}
