/* cmd_moe_usage.c — `neuronlab moe-usage MODEL DATA.jsonl --moe MOE_DIR --db results.db [--k K]
 * [--router R] [--fill F] [--seed N]`: one configuration (defaults 25 %, sim, mean): the expert
 * usage of every labelled document, per label and layer, its PCA and the AP of each expert's
 * usage against each label with the shuffled-label baseline (analyses/moe_sweep.h; one run of
 * kind "moe-usage"; tables expert_usage, expert_usage_doc, expert_usage_pca, expert_ap).
 * Checked by tests/moe_sweep_cli.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/moe_sweep_cli.h"
#include "neuronlab/results.h"

static int run_usage(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_moe_usage[] = {
    NL_CLI_RUN_OPTIONS,
    {"--moe", "MOE_DIR", 1, "the expert folder (a `neuronlab moefy` folder of MODEL)", NULL},
    {"--db", "results.db", 1, "the results database (one run of kind moe-usage)", NULL},
    {"--k", "K|P%", 0, "experts per token: a count or a percentage of the folder's experts", "25%"},
    {"--router", "NAME", 0, "the router (sim, oracle, or a router the folder carries)", "sim"},
    {"--fill", "zero|mean", 0, "fill of the unselected experts", "mean"},
    {"--seed", "N", 0, "seed of the shuffled-label AP baseline", "0"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_moe_usage = {
    "moe-usage", NULL,
    "expert usage by label: per MoE layer the share of each label's tokens routed to each expert, a PCA of the documents' "
    "usage vectors and the AP of each expert's usage against each label (with shuffled labels)",
    run_usage};

static int run_usage(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_moe_usage;
    nl_cli_run r = {0};
    nl_cli_moe mo = {0};
    nl_cli_common co = {0};
    mo.fill = NL_MOE_FILL_MEAN;
    int k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_run_arg(cmd, &r, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_moe_arg(cmd, &mo, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_SEED, &co, argc, argv, &i)) == 1) continue;
        if (k) return k;
        return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(cmd, &r)) return 2;
    if (!mo.dir) return nl_cli_usage(cmd, "--moe MOE_DIR is required");
    if (!co.db) return nl_cli_usage(cmd, "--db results.db is required");
    nl_results *db = NULL;
    nl_moe_usage u = {0};
    int64_t run = -1;
    nl_status st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK) st = nl_moe_usage_check_labels(ctx, r.ds);
    if (st == NL_OK) {
        nl_moe *probe = NULL;
        st = nl_moe_open(ctx, mo.dir, r.m, &probe);
        if (st == NL_OK) st = nl_cli_moe_check_router(ctx, probe, mo.dir, mo.router);
        nl_moe_close(probe);
    }
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, r.m, r.f, 0);
    const int Lm = st == NL_OK ? nl_moe_n_layers(mo.moe) : 0;
    if (st == NL_OK) {
        int layers[1024];
        for (int i = 0; i < Lm && i < 1024; i++) layers[i] = nl_moe_layer_index(mo.moe, i);
        st = nl_moe_usage_init(ctx, &u, layers, Lm, nl_moe_get_info(mo.moe)->E, mo.K, r.ds->n_docs);
    }
    if (st == NL_OK) st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) st = nl_moe_sweep_create_tables(ctx, db);
    if (st == NL_OK) {
        char mp[2048], params[3072];
        nl_cli_moe_params(&mo, mp, sizeof mp);
        snprintf(params, sizeof params, "{\"moe\":%s,\"seed\":%llu,\"ctx\":%ld,\"stride\":%ld}", mp, (unsigned long long)co.seed, r.ctx,
                 r.stride > 0 ? r.stride : r.ctx / 2);
        nl_run_info info = {.kind = "moe-usage", .model = r.model, .dataset = r.data, .source = mo.dir, .params = params,
                            .compute = nl_compute_name(nl_forward_compute(r.f))};
        if ((st = nl_results_begin_run(ctx, db, &info, &run)) != NL_OK) run = -1;
    }
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "moe-usage", r.ds->n_tokens, "tok", ctx->progress);
        nl_cli_moe_walk w = {mo.ffn, &u, 0, &prog};
        st = nl_cli_moe_walk_all(ctx, r.f, r.ds, (int)r.stride, &w);
        nl_progress_end(&prog);
    }
    if (st == NL_OK) st = nl_moe_usage_write(ctx, db, run, &u, r.ds, co.seed);
    if (st == NL_OK) { /* summary from the rows just written */
        const int E = u.E;
        printf("model    %s\ndataset  %s (%d documents, %lld tokens)\n", r.model, r.data, r.ds->n_docs, (long long)r.ds->n_tokens);
        printf("moe      %s: %d experts on %d layers, K %d (%.1f%%), router %s, fill %s\n", mo.dir, E, Lm, mo.K, 100.0 * mo.K / E,
               nl_moe_router_name((nl_moe_router)mo.router), nl_moe_fill_name((nl_moe_fill)mo.fill));
        printf("\nper label: the most used expert of each layer (share of the label's tokens; uniform routing gives %.3f),\n"
               "and the best AP of any expert's per-document usage against the label (shuffled labels beside it)\n\n",
               (double)mo.K / E);
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(nl_results_db(db),
                               "SELECT label, layer, expert, token_frac FROM expert_usage u WHERE run_id = ?1 AND token_frac ="
                               " (SELECT MAX(token_frac) FROM expert_usage v WHERE v.run_id = u.run_id AND v.layer = u.layer AND"
                               " v.label = u.label) GROUP BY label, layer ORDER BY label, layer",
                               -1, &q, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, run);
            const char *prev = NULL;
            char last[NL_LABEL_MAX + 1] = "";
            while (sqlite3_step(q) == SQLITE_ROW) {
                const char *lab = (const char *)sqlite3_column_text(q, 0);
                if (!prev || strcmp(last, lab)) {
                    if (prev) putchar('\n');
                    printf("%-14.14s", lab);
                    snprintf(last, sizeof last, "%s", lab);
                    prev = last;
                }
                printf("  L%d e%-3d %.3f", sqlite3_column_int(q, 1), sqlite3_column_int(q, 2), sqlite3_column_double(q, 3));
            }
            if (prev) putchar('\n');
        }
        sqlite3_finalize(q);
        q = NULL;
        if (sqlite3_prepare_v2(nl_results_db(db),
                               "SELECT label, MAX(ap), MAX(ap_shuffled), MAX(baseline) FROM expert_ap WHERE run_id = ?1 GROUP BY label"
                               " ORDER BY label", -1, &q, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, run);
            printf("\n%-14s %8s %13s %9s\n", "label", "best AP", "best shuffled", "baseline");
            while (sqlite3_step(q) == SQLITE_ROW)
                printf("%-14.14s %8.4f %13.4f %9.4f\n", (const char *)sqlite3_column_text(q, 0), sqlite3_column_double(q, 1),
                       sqlite3_column_double(q, 2), sqlite3_column_double(q, 3));
        }
        sqlite3_finalize(q);
        printf("\nrun %lld in %s (tables expert_usage, expert_usage_doc, expert_usage_pca, expert_ap)\n", (long long)run, co.db);
    }
    if (run >= 0) st = nl_results_finish_run(ctx, db, run, st, NULL);
    int rc = nl_cli_finish(ctx, st, "interrupted: nothing of run %lld is kept (marked interrupted)", (long long)run);
    nl_moe_usage_release(&u);
    nl_results_close(db);
    nl_cli_moe_close(&mo, r.f);
    nl_cli_run_close(&r);
    return rc;
}
