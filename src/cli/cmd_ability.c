/* cmd_ability.c — `neuronlab ability acts.h5 --db results.db [--method ap|predictivity]
 * [--symmetric] [--top F] [--global] [--exclude-resident [--resident-run N]] [--abilities LIST]
 * [--split F] [--seed N] [--threads N] [--json]`: ability neurons (analyses/ability.h has the definitions
 * and tables). One run in the database; a summary per ability (all layers) and the best score
 * per layer on stdout, read back from the run's rows. Checked by tests/ability_cli.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/ability.h"
#include "cli/cli.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_ability = {
    "ability",
    "acts.h5 --db results.db [--method ap|predictivity] [--symmetric] [--top F] [--global] [--exclude-resident] "
    "[--resident-run N] [--abilities a,b,...] [--split F] [--seed N] [--threads N] [--json]",
    "ability neurons: each neuron's score per document label (AP of the per-document mean |a| over the prompt, or "
    "skill-neuron predictivity), per-layer best/top-5 permille/mean beside the random and shuffled-label baselines, and "
    "each ability's top set (default: top 0.05 of every layer) for prune and overlap. --method: ap (default) or "
    "predictivity; --symmetric: max(S(y), S(1-y)); --top F: set fraction in (0, 1], default 0.05; --global: one set over "
    "all layers (default per layer); --exclude-resident: leave out the resident neurons of the file's latest complete "
    "sparsity run (--resident-run N: that run); --abilities: score only these labels (default all); --split F: select "
    "on a seeded fraction F in (0, 1) of each label's documents and hold out the rest for prune (default none: all "
    "documents); --seed N: label shuffling, split and tie hash (default 0); --threads N (default all cores); --json. "
    "Ties at the cut are broken by the mean-|a| margin, then a seeded hash, and reported (ability_ties)",
    run};

#define MAX_ABILITIES 256

static void jnum(double v) {
    if (isnan(v) || isinf(v)) fputs("null", stdout);
    else printf("%.9g", v);
}

static void warn_ties(int inside, int groups) {
    if (inside > 0)
        fprintf(stderr,
                "neuronlab: warning: the cut of %d of %d top sets falls inside a block of equal scores; the tie-break "
                "(margin, then seeded hash) chose among them (see ability_ties)\n",
                inside, groups);
}

/* The ties at the cut (ability_ties): JSON array rows, or text lines for the cuts inside a tie
 * block. Returns how many cuts fall inside a tie block (-1 when the rows cannot be read). */
static int print_ties(sqlite3 *h, int64_t run, int json, int *groups) {
    sqlite3_stmt *q;
    *groups = 0;
    if (sqlite3_prepare_v2(h, "SELECT ability, layer, cut, tied, chosen, broken_by FROM ability_ties WHERE run_id = ?1"
                              " ORDER BY ability, layer", -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(q, 1, run);
    int inside = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(q, 0), *by = (const char *)sqlite3_column_text(q, 5);
        int layer = sqlite3_column_int(q, 1), tied = sqlite3_column_int(q, 3), chosen = sqlite3_column_int(q, 4);
        double cut = sqlite3_column_type(q, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 2);
        if (json) {
            printf("%s{\"ability\":", (*groups)++ ? "," : "");
            nl_cli_json_str(a ? a : "");
            printf(",\"layer\":%d,\"cut\":", layer);
            jnum(cut);
            printf(",\"tied\":%d,\"chosen\":%d,\"broken_by\":\"%s\"}", tied, chosen, by ? by : "");
        } else {
            (*groups)++;
            if (chosen < tied) {
                if (!inside) printf("ties at the cut (the set's last score is shared by neurons left out):\n");
                printf("  %-14.14s layer %3d: %d neurons score %.4f, %d of them in the set (chosen by the %s)\n", a ? a : "",
                       layer, tied, cut, chosen, by && !strcmp(by, "hash") ? "seeded hash: equal margins" : "mean-|a| margin");
            }
        }
        inside += chosen < tied;
    }
    sqlite3_finalize(q);
    return inside;
}

/* Prints the run's rows: a summary per ability and the best score per layer. */
static int print_run(nl_results *db, const char *acts, const char *dbp, int64_t run, const nl_ability_opts *o, int json,
                     const nl_ability_result *res) {
    sqlite3 *h = nl_results_db(db);
    sqlite3_stmt *q;
    const char *sql =
        "SELECT l.ability, b.docs, b.positives, l.layer, l.best, l.top_permille, l.mean, l.baseline, l.shuffled_best,"
        " l.shuffled_top_permille, l.shuffled_mean,"
        " (SELECT COUNT(*) FROM ability_top t WHERE t.run_id = l.run_id AND t.ability = l.ability"
        "   AND (l.layer < 0 OR t.layer = l.layer))"
        " FROM ability_layer l JOIN ability_label b ON b.run_id = l.run_id AND b.ability = l.ability"
        " WHERE l.run_id = ?1 ORDER BY l.ability, l.layer";
    if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) != SQLITE_OK) {
        fprintf(stderr, "neuronlab: cannot read run %lld back from '%s': %s\n", (long long)run, dbp, sqlite3_errmsg(h));
        return 1;
    }
    sqlite3_bind_int64(q, 1, run);
    const char *m = nl_ability_method_name(o->method);
    if (json) {
        printf("{\"source\":");
        nl_cli_json_str(acts);
        printf(",\"db\":");
        nl_cli_json_str(dbp);
        printf(",\"run_id\":%lld,\"method\":\"%s\",\"symmetric\":%s,\"top\":%.9g,\"scope\":\"%s\",\"split\":", (long long)run, m,
               o->symmetric ? "true" : "false", o->top, o->global ? "global" : "layer");
        if (o->split > 0) printf("%.9g", o->split);
        else printf("null");
        printf(",\"docs_scored\":%d,\"docs_heldout\":%d,\"rows\":[", res->docs, res->heldout);
        int k = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
            const char *a = (const char *)sqlite3_column_text(q, 0); /* NOT NULL in the run's own rows */
            printf("%s{\"ability\":", k++ ? "," : "");
            nl_cli_json_str(a ? a : "");
            printf(",\"docs\":%d,\"positives\":%d,\"layer\":%d", sqlite3_column_int(q, 1), sqlite3_column_int(q, 2),
                   sqlite3_column_int(q, 3));
            static const char *keys[] = {"best", "top_permille", "mean", "baseline", "shuffled_best", "shuffled_top_permille",
                                         "shuffled_mean"};
            for (int c = 0; c < 7; c++) {
                printf(",\"%s\":", keys[c]);
                jnum(sqlite3_column_type(q, 4 + c) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 4 + c));
            }
            printf(",\"top_set\":%d}", sqlite3_column_int(q, 11));
        }
        sqlite3_finalize(q);
        printf("],\"ties\":[");
        int groups, inside = print_ties(h, run, 1, &groups);
        printf("],\"cut_in_tie\":%d}\n", inside);
        warn_ties(inside, groups);
        return 0;
    }
    printf("ability scores of '%s' (%s%s) -> run %lld in '%s'\n", acts, m, o->symmetric ? ", symmetric" : ", one-sided",
           (long long)run, dbp);
    if (o->split > 0)
        printf("split: neurons selected on %d documents (fraction %g of each label, seed %llu); %d held out for prune "
               "(ability_docs)\n",
               res->docs, o->split, (unsigned long long)o->seed, res->heldout);
    else printf("no held-out split: prune will evaluate on the documents the neurons are selected on (--split 0.5 holds out half)\n");
    printf("%-14s %5s %5s %8s %7s %7s %7s %9s %10s %8s\n", "ability", "docs", "pos", "baseline", "best", "top5pm", "mean",
           "shuf-best", "best-layer", "top-set");
    /* rows come ability by ability, layer -1 first */
    char cur[256] = "";
    double best_l = -INFINITY;
    int best_layer = -1, have = 0;
    struct { int docs, pos, top; double base, best, tp, mean, shuf; } all = {0};
    for (int more = 1; more;) {
        more = sqlite3_step(q) == SQLITE_ROW;
        const char *a = more ? (const char *)sqlite3_column_text(q, 0) : "";
        if (!a) a = "";
        if (have && (!more || strcmp(a, cur))) {
            printf("%-14.14s %5d %5d %8.4f %7.4f %7.4f %7.4f %9.4f %10d %8d\n", cur, all.docs, all.pos, all.base, all.best, all.tp,
                   all.mean, all.shuf, best_layer, all.top);
            have = 0, best_l = -INFINITY, best_layer = -1;
        }
        if (!more) break;
        snprintf(cur, sizeof cur, "%s", a);
        have = 1;
        int layer = sqlite3_column_int(q, 3);
        if (layer < 0) {
            all.docs = sqlite3_column_int(q, 1), all.pos = sqlite3_column_int(q, 2), all.top = sqlite3_column_int(q, 11);
            all.best = sqlite3_column_double(q, 4), all.tp = sqlite3_column_double(q, 5), all.mean = sqlite3_column_double(q, 6);
            all.base = sqlite3_column_double(q, 7), all.shuf = sqlite3_column_double(q, 8);
        } else if (sqlite3_column_double(q, 4) > best_l) best_l = sqlite3_column_double(q, 4), best_layer = layer;
    }
    sqlite3_finalize(q);
    printf("baseline: the score of a neuron unrelated to the label (%s); shuf-best: the best score with the labels shuffled "
           "(chance level of the best of many neurons); top5pm: score at rank ceil(0.005 x neurons); top-set: neurons in the "
           "ability's top %g%s\n",
           o->method == NL_ABILITY_AP ? "the positive rate" : "0.5", o->top, o->global ? " over all layers" : " of each layer");
    int groups, inside = print_ties(h, run, 0, &groups);
    if (inside == 0) printf("ties at the cut: none (every set's last score differs from the first score left out)\n");
    else if (inside > 0)
        printf("ties are broken by the margin (mean |a| on the ability's documents minus on the others, larger first), "
               "then by a hash of (seed, layer, neuron); ability_ties has every set's cut\n");
    warn_ties(inside, groups);
    return 0;
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *me = &nl_cmd_ability;
    const char *acts = NULL, *v;
    int k;
    static char names_buf[8192];
    static const char *names[MAX_ABILITIES];
    nl_cli_common co = {0};
    nl_ability_opts o;
    nl_ability_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_common_arg(me, ctx, NL_CLI_DB | NL_CLI_JSON | NL_CLI_THREADS | NL_CLI_TOP | NL_CLI_SEED, &co, argc, argv,
                                   &i))) {
            if (k != 1) return k;
        } else if (!strcmp(argv[i], "--symmetric")) o.symmetric = 1;
        else if (!strcmp(argv[i], "--global")) o.global = 1;
        else if (!strcmp(argv[i], "--exclude-resident")) o.exclude_resident = 1;
        else if ((k = nl_cli_opt(argc, argv, &i, "--method", &v))) {
            int mm = k > 0 ? nl_ability_method_parse(v) : -1;
            if (mm < 0) return nl_cli_usage(me, "--method must be ap or predictivity");
            o.method = (nl_ability_method)mm;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--split", &v))) {
            double f;
            if (k < 0 || !nl_cli_double(v, &f) || !(f > 0 && f < 1))
                return nl_cli_usage(me, "--split needs a fraction in (0, 1), e.g. 0.5");
            o.split = f;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--resident-run", &v))) {
            long r;
            if (k < 0 || !nl_cli_int(v, 1, 0x7fffffffL, &r)) return nl_cli_usage(me, "--resident-run needs a run id");
            o.resident_run = r, o.exclude_resident = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--abilities", &v))) {
            if (k < 0 || strlen(v) >= sizeof names_buf) return nl_cli_usage(me, "--abilities needs a list like code,math");
            strcpy(names_buf, v);
            if ((o.n_abilities = nl_cli_names(names_buf, names, MAX_ABILITIES)) < 1)
                return nl_cli_usage(me, "--abilities needs a list like code,math");
            o.abilities = names;
        } else if ((k = nl_cli_positional(me, argv, i, &acts)) != 1) {
            return k;
        }
    }
    if (!acts) return nl_cli_usage(me, "missing the activation file (acts.h5)");
    if (!co.db) return nl_cli_usage(me, "missing --db results.db");
    if (co.top > 0) o.top = co.top;
    if (co.have_seed) o.seed = co.seed;
    nl_results *db = NULL;
    nl_ability_result res = {0};
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "ability", 0, "layers", ctx->progress);
        st = nl_ability_run(ctx, &o, acts, db, &prog, &res);
        nl_progress_end(&prog);
    }
    int rc = st == NL_OK ? print_run(db, acts, co.db, res.run_id, &o, co.json, &res)
                         : nl_cli_finish(ctx, st, "interrupted: run %lld in '%s' marked interrupted (no scores kept)",
                                         (long long)res.run_id, co.db);
    nl_ability_result_release(&res);
    nl_results_close(db);
    return rc;
}
