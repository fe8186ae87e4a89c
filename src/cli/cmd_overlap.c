/* cmd_overlap.c — `neuronlab overlap --db results.db --scores RUN [--top F] [--json]`: shared
 * neurons between every two abilities' top sets (analyses/overlap.h), per layer and over all
 * layers, with the random baseline; one run of kind "overlap"; the all-layer matrices on
 * stdout. Checked by tests/ability_cli.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/overlap.h"
#include "cli/cli.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_overlap = {
    "overlap", "--db results.db --scores RUN|latest [--top F] [--json]",
    "overlap of the abilities' top sets of an ability run: |A and B|/|A| and Jaccard per layer and over all layers, "
    "beside the random baseline (default --top: the run's own fraction)",
    run};

static void matrix(const nl_ability_sets *s, const nl_overlap_cell *c, int jac) {
    const int A = s->n_abilities, Lr = s->n_layers;
    printf("%-12s", jac ? "Jaccard" : "|AnB|/|A|");
    for (int b = 0; b < A; b++) printf(" %11.11s", s->abilities[b]);
    putchar('\n');
    for (int a = 0; a < A; a++) {
        printf("%-12.12s", s->abilities[a]);
        for (int b = 0; b < A; b++) {
            const nl_overlap_cell *x = &c[((size_t)a * A + b) * (Lr + 1)];
            printf(" %11.3f", jac ? x->jaccard : x->frac);
        }
        putchar('\n');
    }
}

static void print_json(const char *dbp, const nl_overlap_result *r) {
    const nl_ability_sets *s = &r->sets;
    printf("{\"db\":");
    nl_cli_json_str(dbp);
    printf(",\"run_id\":%lld,\"scores_run\":%lld,\"top\":%.9g,\"scope\":\"%s\",\"cells\":[", (long long)r->run_id,
           (long long)s->run_id, s->top, s->global ? "global" : "layer");
    for (int i = 0; i < r->n_cells; i++) {
        const nl_overlap_cell *x = &r->cells[i];
        printf("%s{\"a\":", i ? "," : "");
        nl_cli_json_str(s->abilities[x->a]);
        printf(",\"b\":");
        nl_cli_json_str(s->abilities[x->b]);
        printf(",\"layer\":%d,\"size_a\":%lld,\"size_b\":%lld,\"inter\":%lld,\"frac\":%.6g,\"jaccard\":%.6g,"
               "\"baseline_frac\":%.6g,\"baseline_jaccard\":%.6g}",
               x->layer, (long long)x->size_a, (long long)x->size_b, (long long)x->inter, x->frac, x->jaccard,
               x->baseline_frac, x->baseline_jaccard);
    }
    printf("]}\n");
}

static void print_text(const char *dbp, const nl_overlap_result *r) {
    const nl_ability_sets *s = &r->sets;
    printf("overlap of the top sets of ability run %lld (top %g %s) -> run %lld in '%s'\n\n", (long long)s->run_id, s->top,
           s->global ? "over all layers" : "of each layer", (long long)r->run_id, dbp);
    matrix(s, r->cells, 0);
    putchar('\n');
    matrix(s, r->cells, 1);
    const nl_overlap_cell *x = &r->cells[(s->n_abilities > 1 ? 1 : 0) * (size_t)(s->n_layers + 1)]; /* pair (0, 1) */
    printf("\nrandom baseline over all layers (unrelated sets of the same sizes): |AnB|/|A| %.3f, Jaccard %.3f; "
           "per layer in the overlap table\n",
           x->baseline_frac, x->baseline_jaccard);
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *me = &nl_cmd_overlap;
    nl_cli_common co = {0};
    nl_overlap_opts o;
    nl_overlap_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_common_arg(me, ctx, NL_CLI_DB | NL_CLI_JSON | NL_CLI_TOP | NL_CLI_SCORES, &co, argc, argv, &i);
        if (k == 1) continue;
        return k ? k : nl_cli_positional(me, argv, i, NULL);
    }
    if (!co.db) return nl_cli_usage(me, "missing --db results.db");
    if (!co.scores) return nl_cli_usage(me, "missing --scores RUN (the id of an ability run)");
    if (co.top > 0) o.top = co.top;
    nl_results *db = NULL;
    nl_overlap_result res = {0};
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) st = nl_overlap_run(ctx, &o, co.scores, db, NULL, &res);
    if (st == NL_OK) {
        if (co.json) print_json(co.db, &res);
        else print_text(co.db, &res);
    }
    int rc = nl_cli_finish(ctx, st, NULL);
    nl_overlap_result_release(&res);
    nl_results_close(db);
    return rc;
}
