/* cmd_experts.c — `neuronlab experts MODEL DATA.jsonl --db results.db [--seed S]`: runs a native
 * mixture-of-experts model over a labelled dataset and writes the expert analyses of
 * analyses/experts.h (expert load per label, routing entropy and top-1 margin by layer, expert
 * co-selection, expert ability AP with the shuffled-label baseline) as a run of kind "experts";
 * prints routing entropy and margin per layer and each label's most loaded expert.
 * Checked by tests/moe_models_cli.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "analyses/experts.h"
#include "cli/cli.h"
#include "neuronlab/results.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_experts = {
    "experts", NULL,
    "expert analyses of a mixture-of-experts model over a labelled dataset: load per label, routing entropy and margin, "
    "co-selection, expert ability AP (tables expert_*)", run};

const nl_cli_option nl_cli_opts_experts[] = {
    NL_CLI_RUN_OPTIONS,
    {"--db", "results.db", 1, "the results database (created when missing)", NULL},
    {"--seed", "S", 0, "seed of the shuffled-label baseline of expert_ability", "0"},
    {NULL, NULL, 0, NULL, NULL}};

static void print_summary(nl_results *db, int64_t run_id) {
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q = NULL;
    printf("layer  entropy (nats, max)  top-1 margin\n");
    if (sqlite3_prepare_v2(h, "SELECT layer, entropy, entropy_max, margin FROM expert_routing WHERE run_id = ? AND label = '*' "
                              "ORDER BY layer", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%5d  %7.4f (%6.4f)     %7.4f\n", sqlite3_column_int(q, 0), sqlite3_column_double(q, 1),
                   sqlite3_column_double(q, 2), sqlite3_column_double(q, 3));
    }
    sqlite3_finalize(q);
    q = NULL;
    printf("label  layer  most loaded expert (token fraction; uniform = k/E)\n");
    if (sqlite3_prepare_v2(h, "SELECT label, layer, expert, max(token_frac) FROM expert_load WHERE run_id = ? AND expert >= 0 "
                              "GROUP BY label, layer ORDER BY label, layer", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%-6s %5d  %d (%.3f)\n", (const char *)sqlite3_column_text(q, 0), sqlite3_column_int(q, 1),
                   sqlite3_column_int(q, 2), sqlite3_column_double(q, 3));
    }
    sqlite3_finalize(q);
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    nl_cli_run r = {0};
    nl_cli_common co = {0};
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(&nl_cmd_experts, &r, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_common_arg(&nl_cmd_experts, ctx, NL_CLI_DB | NL_CLI_SEED, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else return nl_cli_usage(&nl_cmd_experts, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(&nl_cmd_experts, &r)) return 2;
    if (!co.db) return nl_cli_usage(&nl_cmd_experts, "missing --db results.db");
    nl_results *db = NULL;
    int64_t run_id = 0;
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &r);
    const nl_config *c = r.m ? nl_model_config(r.m) : NULL;
    if (st == NL_OK && c->n_experts <= 0)
        st = nl_errorf(ctx, NL_EINVAL, "'%s' has no mixture-of-experts layer (model_type %s)", r.model, c->model_type);
    if (st == NL_OK) {
        char params[256];
        snprintf(params, sizeof params, "{\"seed\":%llu,\"ctx\":%ld,\"stride\":%ld,\"batch\":%ld}",
                 (unsigned long long)co.seed, r.ctx, r.stride ? r.stride : r.ctx / 2, r.batch);
        nl_run_info info = {.kind = "experts", .model = r.model, .dataset = r.data, .params = params,
                            .compute = nl_compute_name(nl_forward_compute(r.f))};
        st = nl_results_begin_run(ctx, db, &info, &run_id);
    }
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "experts", r.ds->n_tokens, "tok", ctx->progress);
        nl_experts_opts o = {co.seed, (int)r.stride};
        st = nl_experts_run(ctx, &o, r.f, r.ds, db, run_id, &prog);
        nl_progress_end(&prog);
    }
    if (db && run_id > 0) st = nl_results_finish_run(ctx, db, run_id, st, NULL);
    if (st == NL_OK) {
        printf("run %lld: %d documents, %lld tokens, %d experts top-%d\n", (long long)run_id, r.ds->n_docs,
               (long long)r.ds->n_tokens, c->n_experts, c->n_experts_per_tok);
        print_summary(db, run_id);
    }
    nl_results_close(db);
    int rc = nl_cli_finish(ctx, st, NULL);
    nl_cli_run_close(&r);
    return rc;
}
