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

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *me = &nl_cmd_overlap;
    const char *dbp = NULL, *v;
    long scores = 0;
    double top = 0;
    int json = 0, k;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((k = nl_cli_opt(argc, argv, &i, "--db", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(me, "--db needs a path");
            dbp = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--scores", &v))) {
            if (k > 0 && !strcmp(v, "latest")) scores = -1;
            else if (k < 0 || !nl_cli_int(v, 1, 0x7fffffffL, &scores))
                return nl_cli_usage(me, "--scores needs an ability run id (or latest)");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--top", &v))) {
            char *end;
            top = k > 0 ? strtod(v, &end) : NAN;
            if (k < 0 || !*v || *end || !(top > 0 && top <= 1))
                return nl_cli_usage(me, "--top: '%s' is not a fraction in (0, 1]", k > 0 ? v : "");
        } else return nl_cli_usage(me, "unexpected argument '%s'", argv[i]);
    }
    if (!dbp) return nl_cli_usage(me, "missing --db results.db");
    if (!scores) return nl_cli_usage(me, "missing --scores RUN (the id of an ability run)");
    nl_results *db = NULL;
    nl_ability_sets s = {0};
    nl_overlap_cell *c = NULL;
    int n = 0;
    int64_t run_id = -1;
    nl_status st = nl_results_open(ctx, dbp, 0, &db);
    if (st == NL_OK) st = nl_overlap_run(ctx, db, scores, top, &run_id, &s, &c, &n);
    int rc = 0;
    if (st != NL_OK) rc = nl_cli_fail(ctx, st);
    else if (json) {
        printf("{\"db\":");
        nl_cli_json_str(dbp);
        printf(",\"run_id\":%lld,\"scores_run\":%lld,\"top\":%.9g,\"scope\":\"%s\",\"cells\":[", (long long)run_id, (long long)s.run_id, s.top,
               s.global ? "global" : "layer");
        for (int i = 0; i < n; i++) {
            const nl_overlap_cell *x = &c[i];
            printf("%s{\"a\":", i ? "," : "");
            nl_cli_json_str(s.abilities[x->a]);
            printf(",\"b\":");
            nl_cli_json_str(s.abilities[x->b]);
            printf(",\"layer\":%d,\"size_a\":%lld,\"size_b\":%lld,\"inter\":%lld,\"frac\":%.6g,\"jaccard\":%.6g,"
                   "\"baseline_frac\":%.6g,\"baseline_jaccard\":%.6g}",
                   x->layer, (long long)x->size_a, (long long)x->size_b, (long long)x->inter, x->frac, x->jaccard,
                   x->baseline_frac, x->baseline_jaccard);
        }
        printf("]}\n");
    } else {
        printf("overlap of the top sets of ability run %lld (top %g %s) -> run %lld in '%s'\n\n", (long long)s.run_id, s.top,
               s.global ? "over all layers" : "of each layer", (long long)run_id, dbp);
        matrix(&s, c, 0);
        putchar('\n');
        matrix(&s, c, 1);
        const nl_overlap_cell *x = &c[(s.n_abilities > 1 ? 1 : 0) * (size_t)(s.n_layers + 1)]; /* pair (0, 1) */
        printf("\nrandom baseline over all layers (unrelated sets of the same sizes): |AnB|/|A| %.3f, Jaccard %.3f; "
               "per layer in the overlap table\n",
               x->baseline_frac, x->baseline_jaccard);
    }
    free(c);
    nl_ability_sets_release(&s);
    nl_results_close(db);
    return rc;
}
