/* cmd_prune.c — `neuronlab prune MODEL DATA.jsonl --db results.db --scores RUN|latest [--top F]
 * [--neurons FILE] [--eval FILE] [--seeds N] [--abilities a,b,...] [--json]` plus the forward-pass options of ppl and
 * --moe DIR --k K --fill zero|mean --router sim|oracle|mlp (pruning then acts on the MoE layers'
 * effective activations; the run's params carry "moe"): perplexity
 * on every label with one ability's top set (from ability run RUN, or the latest complete one)
 * zeroed, beside same-size random sets (analyses/prune.h). Prints the matrix pruned ability × evaluated label of relative
 * perplexity changes, the random-control matrix and one diagonal / off-diagonal / random line
 * per row; --json the same as JSON. One run (kind "prune") with its rows in the database, each
 * pass committed as computed. Ctrl-C keeps the finished passes (run 'interrupted', exit 130); an
 * error after the run started marks it 'failed'. Bad option values are usage errors (exit 2).
 * Checked by tests/prune_cli.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/experts.h"
#include "analyses/prune.h"
#include "cli/cli.h"
#include "neuronlab/mpi.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_prune = {
    "prune", NL_CLI_RUN_USAGE " --db results.db (--scores RUN|latest [--top F] | --neurons FILE) [--eval FILE] [--seeds N] "
    "[--abilities a,b,...] [--json] [--moe DIR --k K --fill zero|mean --router sim|oracle|mlp] | " NL_CLI_RUN_USAGE
    " --db results.db --experts all|L:E,L:shared,...|top:ABILITY[:N] [--scores RUN|latest] [--eval FILE] [--seeds N] [--seed S]",
    "perplexity on every label with one ability's top neurons zeroed, beside N same-size random sets: relative change per "
    "pruned ability x label. --scores RUN|latest: the ability run whose top sets are pruned (--top F re-chooses them from its "
    "scores, default the run's fraction); --neurons FILE: prune your own neurons instead (CSV header layer,neuron[,set] or a "
    "JSON list of {\"layer\":L,\"neuron\":I[,\"set\":NAME]}; one row per set, default set name 'neurons'); evaluated "
    "documents: by default the documents the scores run held out (ability --split), else all of DATA (for a run without a "
    "split these are the documents the neurons were selected on, and the output says so); --eval FILE: evaluate on another "
    "JSONL instead; --seeds N: random sets per row (default 3); --abilities: prune only these (default all); --json. "
    "On a mixture-of-experts model, --experts removes experts instead (the router's choice is excluded: the token takes its "
    "next-best expert; L:shared subtracts the shared expert): all = every expert in turn and each shared expert, a list = "
    "each in turn, top:ABILITY[:N] = the N best experts per layer by the AP of the experts run --scores RUN|latest; "
    "random-expert control of the same counts (--seeds N, --seed S); --eval FILE measures perplexity on FILE instead of DATA "
    "(choose experts with `experts` on one set, evaluate on another); table expert_prune",
    run};

#define MAX_ABILITIES 256

/* ---- printing ----------------------------------------------------------------------------- */

static double rel_at(const nl_prune_result *r, int row, int c) {
    if (c < 0) return NAN; /* a user set that is no label has no own column */
    return r->pruned_done[row] && r->base_done ? nl_prune_rel(r->pruned[(size_t)row * r->n_cols + c], r->base[c]) : NAN;
}

/* Mean rel_change of row over the non-empty labels other than its own (NaN when none). */
static double off_diagonal(const nl_prune_result *r, int row) {
    double s = 0;
    int n = 0;
    for (int c = 0; c < r->n_cols - 1; c++) {
        if (c == r->diag[row]) continue;
        const double v = rel_at(r, row, c);
        if (!isnan(v)) s += v, n++;
    }
    return n ? s / n : NAN;
}

static const char *col_title(const nl_prune_result *r, const nl_dataset *ds, int c) {
    const char *n = nl_prune_col_name(r, ds, c);
    return n[0] ? n : "all";
}

static void pct(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%+.2f", 100 * v);
}

/* One line: which documents were scored. */
static void eval_line(const nl_cli_run *cr, const nl_dataset *ds, const nl_prune_opts *o, const nl_ability_sets *sets, FILE *fp) {
    const char *e = o->eval ? o->eval : "all";
    int n = 0;
    for (int d = 0; o->eval_docs && d < cr->ds->n_docs; d++) n += o->eval_docs[d];
    if (!strcmp(e, "heldout"))
        fprintf(fp, "held out: the %d documents of '%s' that scores run %lld did not select on (ability --split)\n", n, cr->data,
                (long long)sets->run_id);
    else if (!strcmp(e, "file")) fprintf(fp, "another dataset: '%s' (%d documents)\n", o->eval_file, ds->n_docs);
    else if (!strcmp(e, "selection"))
        fprintf(fp, "the %d documents of '%s' - the same documents the neurons were selected on: scores run %lld has no "
                    "held-out split (ability --split 0.5 makes one; or --eval FILE)\n",
                ds->n_docs, cr->data, (long long)sets->run_id);
    else fprintf(fp, "all %d documents of '%s'\n", ds->n_docs, cr->data);
}

static void print_text(const nl_cli_run *cr, const nl_dataset *ds, const nl_prune_opts *o, const char *dbpath,
                       const nl_ability_sets *sets, const nl_prune_result *r, int64_t predictions) {
    const int C = r->n_cols, R = r->n_rows, S = r->n_seeds;
    int64_t excluded = 0;
    for (size_t i = 0; i < (size_t)sets->n_layers * sets->d_ff; i++) excluded += sets->excluded[i];
    int64_t toks = 0;
    for (int d = 0; d < ds->n_docs; d++)
        if (!o->eval_docs || o->eval_docs[d]) toks += ds->docs[d].n_tokens;
    int nd = ds->n_docs;
    if (o->eval_docs) {
        nd = 0;
        for (int d = 0; d < ds->n_docs; d++) nd += o->eval_docs[d];
    }
    printf("model    %s\ndataset  %s (%d documents; scored: %d documents, %lld tokens, %lld predictions)\n", cr->model,
           o->eval_file ? o->eval_file : cr->data, ds->n_docs, nd, (long long)toks, (long long)predictions);
    printf("eval on  ");
    eval_line(cr, ds, o, sets, stdout);
    if (sets->run_id > 0)
        printf("scores   run %lld of '%s' ('%s'): top %g %s of %d recorded layers x %d neurons, %lld resident neurons "
               "excluded\n",
               (long long)sets->run_id, dbpath, sets->source, sets->top, sets->global ? "over all layers" : "per layer",
               sets->n_layers, sets->d_ff, (long long)excluded);
    else printf("neurons  '%s': %d set%s over %d layers x %d neurons\n", sets->source, sets->n_abilities,
                sets->n_abilities == 1 ? "" : "s", sets->n_layers, sets->d_ff);
    printf("control  %d same-size random set%s per pruned ability (seeds 0..%d), %d distinct count vector%s\n", S,
           S == 1 ? "" : "s", S - 1, r->n_groups, r->n_groups == 1 ? "" : "s");
    int w = 9, wr = 19, wn = 6;
    for (int c = 0; c < C; c++) {
        int len = (int)strlen(col_title(r, ds, c));
        if (len > w) w = len;
        if (len > wr) wr = len;
    }
    for (int i = 0; i < R; i++) {
        int len = (int)strlen(sets->abilities[r->ability[i]]);
        if (len > wn) wn = len;
    }
    char b[64];
    printf("\nbase perplexity\n%-*s %7s", wn, "", "");
    for (int c = 0; c < C; c++) printf(" %*s", w, col_title(r, ds, c));
    printf("\n%-*s %7s", wn, "", "");
    for (int c = 0; c < C; c++) {
        if (r->base_done && r->base[c].n > 0) snprintf(b, sizeof b, "%.4f", nl_nll_ppl(r->base[c]));
        else snprintf(b, sizeof b, "-");
        printf(" %*s", w, b);
    }
    printf("\n\nrelative perplexity change (%%) with the ability's top set zeroed (rows: pruned ability)\n%-*s %7s", wn,
           "pruned", "neurons");
    for (int c = 0; c < C; c++) printf(" %*s", w, col_title(r, ds, c));
    putchar('\n');
    for (int i = 0; i < R; i++) {
        printf("%-*s %7lld", wn, sets->abilities[r->ability[i]], (long long)r->neurons[i]);
        for (int c = 0; c < C; c++) {
            pct(b, sizeof b, rel_at(r, i, c));
            printf(" %*s", w, b);
        }
        putchar('\n');
    }
    printf("\nrandom control: same-size random sets, relative change (%%), mean ± sd over %d seed%s\n%-*s %7s", S,
           S == 1 ? "" : "s", wn, "pruned", "neurons");
    for (int c = 0; c < C; c++) printf(" %*s", wr, col_title(r, ds, c));
    putchar('\n');
    for (int i = 0; i < R; i++) {
        printf("%-*s %7lld", wn, sets->abilities[r->ability[i]], (long long)r->neurons[i]);
        for (int c = 0; c < C; c++) {
            const nl_prune_stat st = r->base_done ? nl_prune_control(r, i, c) : (nl_prune_stat){0, NAN, NAN, NAN, NAN};
            if (st.n == 0 || isnan(st.mean)) snprintf(b, sizeof b, "-");
            else snprintf(b, sizeof b, "%+.2f ± %.2f", 100 * st.mean, 100 * st.sd);
            printf(" %*s", wr + (int)(strchr(b, 0xc2) ? 1 : 0), b); /* '±' is two bytes */
        }
        putchar('\n');
    }
    printf("\nown label vs other labels vs random sets (relative change, %%)\n");
    for (int i = 0; i < R; i++) {
        const int d = r->diag[i];
        char own[32], off[32], rnd[48];
        if (d < 0) {
            const int all = r->n_cols - 1;
            pct(off, sizeof off, off_diagonal(r, i));
            pct(own, sizeof own, rel_at(r, i, all));
            const nl_prune_stat st = r->base_done ? nl_prune_control(r, i, all) : (nl_prune_stat){0, NAN, NAN, NAN, NAN};
            if (st.n == 0 || isnan(st.mean)) snprintf(rnd, sizeof rnd, "-");
            else snprintf(rnd, sizeof rnd, "%+.2f ± %.2f", 100 * st.mean, 100 * st.sd);
            printf("%-*s  (no label of its own) on the labels (mean) %s, on all documents %s, random sets on all %s\n", wn,
                   sets->abilities[r->ability[i]], off, own, rnd);
            continue;
        }
        pct(own, sizeof own, rel_at(r, i, d));
        pct(off, sizeof off, off_diagonal(r, i));
        const nl_prune_stat st = r->base_done ? nl_prune_control(r, i, d) : (nl_prune_stat){0, NAN, NAN, NAN, NAN};
        if (st.n == 0 || isnan(st.mean)) snprintf(rnd, sizeof rnd, "-");
        else snprintf(rnd, sizeof rnd, "%+.2f ± %.2f", 100 * st.mean, 100 * st.sd);
        printf("%-*s  on '%s' %s, on the other labels (mean) %s, random sets on '%s' %s\n", wn,
               sets->abilities[r->ability[i]], sets->abilities[r->ability[i]], own, off, sets->abilities[r->ability[i]], rnd);
    }
}

static void jnum(double v, const char *fmt) {
    if (isnan(v) || isinf(v)) fputs("null", stdout);
    else printf(fmt, v);
}

static void json_sum(nl_nll_sum s, nl_nll_sum base, int with_rel) {
    printf("{\"tokens\":%lld,\"nll\":", (long long)s.n);
    jnum(nl_nll_mean(s), "%.9g");
    printf(",\"ppl\":");
    jnum(nl_nll_ppl(s), "%.9g");
    if (with_rel) {
        printf(",\"rel_change\":");
        jnum(nl_prune_rel(s, base), "%.9g");
    }
    putchar('}');
}

static void print_json(const nl_cli_run *cr, const nl_dataset *ds, const nl_prune_opts *o, const nl_ability_sets *sets,
                       const nl_prune_result *r, int64_t run_id, const char *status) {
    const int C = r->n_cols, S = r->n_seeds;
    printf("{\"model\":");
    nl_cli_json_str(cr->model);
    printf(",\"dataset\":");
    nl_cli_json_str(cr->data);
    if (sets->run_id > 0) printf(",\"scores_run\":%lld,\"neurons\":null,\"source\":", (long long)sets->run_id);
    else {
        printf(",\"scores_run\":null,\"neurons\":");
        nl_cli_json_str(sets->source);
        printf(",\"source\":");
    }
    nl_cli_json_str(sets->source);
    int n = ds->n_docs;
    if (o->eval_docs) {
        n = 0;
        for (int d = 0; d < ds->n_docs; d++) n += o->eval_docs[d];
    }
    printf(",\"eval\":\"%s\",\"eval_docs\":%d,\"eval_file\":", o->eval ? o->eval : "all", n);
    if (o->eval_file) nl_cli_json_str(o->eval_file);
    else printf("null");
    printf(",\"top\":%.15g,\"scope\":\"%s\",\"seeds\":%d,\"ctx\":%ld,\"stride\":%ld,\"run_id\":", sets->top,
           sets->global ? "global" : "layer", S, cr->ctx, cr->stride ? cr->stride : cr->ctx / 2);
    if (run_id > 0) printf("%lld", (long long)run_id);
    else printf("null");
    printf(",\"status\":\"%s\",\"labels\":[", status);
    for (int c = 0; c < C; c++) {
        if (c) putchar(',');
        nl_cli_json_str(nl_prune_col_name(r, ds, c));
    }
    printf("],\"base\":");
    if (r->base_done) {
        putchar('{');
        for (int c = 0; c < C; c++) {
            if (c) putchar(',');
            nl_cli_json_str(nl_prune_col_name(r, ds, c));
            putchar(':');
            json_sum(r->base[c], r->base[c], 0);
        }
        putchar('}');
    } else printf("null");
    printf(",\"rows\":[");
    for (int i = 0; i < r->n_rows; i++) {
        const int g = r->group[i];
        if (i) putchar(',');
        printf("{\"pruned\":");
        nl_cli_json_str(sets->abilities[r->ability[i]]);
        printf(",\"neurons\":%lld,\"effect\":", (long long)r->neurons[i]);
        if (r->pruned_done[i] && r->base_done) {
            putchar('{');
            for (int c = 0; c < C; c++) {
                if (c) putchar(',');
                nl_cli_json_str(nl_prune_col_name(r, ds, c));
                putchar(':');
                json_sum(r->pruned[(size_t)i * C + c], r->base[c], 1);
            }
            putchar('}');
        } else printf("null");
        printf(",\"random\":{");
        for (int c = 0; r->base_done && c < C; c++) {
            const nl_prune_stat st = nl_prune_control(r, i, c);
            if (c) putchar(',');
            nl_cli_json_str(nl_prune_col_name(r, ds, c));
            printf(":{\"seeds\":%d,\"mean\":", st.n);
            jnum(st.mean, "%.9g");
            printf(",\"sd\":");
            jnum(st.sd, "%.9g");
            printf(",\"min\":");
            jnum(st.min, "%.9g");
            printf(",\"max\":");
            jnum(st.max, "%.9g");
            printf(",\"rel_change\":[");
            for (int s = 0, k = 0; s < S; s++) {
                if (!r->random_done[g * S + s]) continue;
                if (k++) putchar(',');
                jnum(nl_prune_rel(r->random[((size_t)g * S + s) * C + c], r->base[c]), "%.9g");
            }
            printf("]}");
        }
        printf("},\"diagonal\":");
        jnum(rel_at(r, i, r->diag[i]), "%.9g");
        printf(",\"off_diagonal_mean\":");
        jnum(off_diagonal(r, i), "%.9g");
        printf(",\"random_mean\":");
        jnum(r->base_done && r->diag[i] >= 0 ? nl_prune_control(r, i, r->diag[i]).mean : NAN, "%.9g");
        putchar('}');
    }
    printf("]}\n");
}

/* ---- prune --experts SPEC (analyses/experts.h: removal = the router's choice excluded) --------- */

/* The latest complete experts run of db (0 when none). */
static int64_t latest_experts_run(nl_results *db) {
    sqlite3_stmt *q = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(nl_results_db(db), "SELECT max(id) FROM runs WHERE kind = 'experts' AND status = 'complete'", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        id = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return id;
}

/* SPEC: "all" (every expert in turn, and each layer's shared expert), "L:E,L:shared,…" (each in
 * turn), or "top:ABILITY[:N]" (one set: the N experts of each MoE layer with the highest AP for
 * ABILITY in the experts run --scores RUN|latest, ties to the lower expert id; N default 1). */
static int prune_experts(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_prune;
    nl_cli_run cr = {0};
    nl_cli_common co = {0};
    const char *spec = NULL, *v, *eval_file = NULL;
    long seeds = 3;
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(cmd, &cr, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_SCORES | NL_CLI_SEED, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--experts", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(cmd, "--experts needs all, a list like 1:3,1:shared, or top:ABILITY[:N]");
            spec = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--seeds", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 1000, &seeds)) return nl_cli_usage(cmd, "--seeds needs a number of random sets, 0..1000");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--eval", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(cmd, "--eval needs a JSONL dataset");
            eval_file = v;
        } else return nl_cli_usage(cmd, "unknown option '%s' (with --experts)", argv[i]);
    }
    if (nl_cli_run_check(cmd, &cr)) return 2;
    if (!co.db) return nl_cli_usage(cmd, "--db is required");
    nl_results *db = NULL;
    int64_t run_id = 0, scores = 0;
    nl_expert_set *sets = NULL;
    int n_sets = 0, *store = NULL;
    char *names = NULL;
    nl_dataset *eds = NULL; /* --eval FILE: the documents perplexity is measured on (default DATA) */
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &cr);
    const nl_config *c = cr.m ? nl_model_config(cr.m) : NULL;
    if (st == NL_OK && eval_file) st = nl_dataset_load(ctx, eval_file, cr.tok, c->vocab_size, &eds);
    const nl_dataset *eval_ds = eds ? eds : cr.ds;
    if (st == NL_OK && c->n_experts <= 0)
        st = nl_errorf(ctx, NL_EINVAL, "'%s' has no mixture-of-experts layer: --experts needs an MoE model", cr.model);
    if (st == NL_OK && !strcmp(spec, "all")) {
        st = nl_expert_sets_all(ctx, c, &sets, &n_sets, &store, &names);
    } else if (st == NL_OK && !strncmp(spec, "top:", 4)) {
        char ability[256];
        long topn = 1;
        snprintf(ability, sizeof ability, "%s", spec + 4);
        char *colon = strrchr(ability, ':');
        if (colon && nl_cli_int(colon + 1, 1, NL_MOE_MAX_EXPERTS, &topn)) *colon = 0;
        scores = co.scores > 0 ? co.scores : latest_experts_run(db);
        if (scores <= 0) st = nl_errorf(ctx, NL_EINVAL, "'%s' holds no complete experts run (run `neuronlab experts` first)", co.db);
        sqlite3_stmt *q = NULL;
        int cap = c->n_layers * (int)topn;
        store = malloc(sizeof(int) * 2 * (size_t)(cap > 0 ? cap : 1));
        sets = calloc(1, sizeof *sets);
        names = malloc(strlen(spec) + 1);
        if (st == NL_OK && (!store || !sets || !names)) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        if (st == NL_OK &&
            sqlite3_prepare_v2(nl_results_db(db),
                               "SELECT layer, expert FROM (SELECT layer, expert, row_number() OVER (PARTITION BY layer "
                               "ORDER BY ap DESC, expert) AS r FROM expert_ability WHERE run_id = ? AND ability = ? AND ap IS NOT NULL) "
                               "WHERE r <= ? ORDER BY layer, r", -1, &q, NULL) != SQLITE_OK)
            st = nl_results_error(ctx, db, "cannot read the expert_ability rows");
        int n = 0;
        if (st == NL_OK) {
            sqlite3_bind_int64(q, 1, scores);
            sqlite3_bind_text(q, 2, ability, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(q, 3, (int)topn);
            while (sqlite3_step(q) == SQLITE_ROW && n < cap) {
                store[n] = sqlite3_column_int(q, 0), store[cap + n] = sqlite3_column_int(q, 1);
                n++;
            }
        }
        sqlite3_finalize(q);
        if (st == NL_OK && n == 0) st = nl_errorf(ctx, NL_EINVAL, "experts run %lld has no ability '%s'", (long long)scores, ability);
        if (st == NL_OK) {
            strcpy(names, spec);
            sets[0] = (nl_expert_set){names, n, store, store + cap};
            n_sets = 1;
        }
    } else if (st == NL_OK) { /* L:E,L:shared,... each in turn */
        int cap = 1;
        for (const char *p = spec; *p; p++) cap += *p == ',';
        store = malloc(sizeof(int) * 2 * (size_t)cap);
        sets = calloc((size_t)cap, sizeof *sets);
        names = malloc(strlen(spec) + 1);
        if (!store || !sets || !names) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else strcpy(names, spec);
        for (char *tok = st == NL_OK ? strtok(names, ",") : NULL; tok && st == NL_OK; tok = strtok(NULL, ",")) {
            char *colon = strchr(tok, ':');
            long l = -1, e = -1;
            if (!colon) st = nl_errorf(ctx, NL_EINVAL, "--experts '%s': expected LAYER:EXPERT or LAYER:shared", tok);
            else {
                *colon = 0;
                if (!nl_cli_int(tok, 0, c->n_layers - 1, &l) || (strcmp(colon + 1, "shared") && !nl_cli_int(colon + 1, 0, c->n_experts - 1, &e)))
                    st = nl_errorf(ctx, NL_EINVAL, "--experts '%s:%s': layer in 0..%d and expert in 0..%d or 'shared'", tok, colon + 1,
                                   c->n_layers - 1, c->n_experts - 1);
                *colon = ':';
            }
            if (st != NL_OK) break;
            store[2 * n_sets] = (int)l, store[2 * n_sets + 1] = (int)e;
            sets[n_sets] = (nl_expert_set){tok, 1, &store[2 * n_sets], &store[2 * n_sets + 1]};
            n_sets++;
        }
    }
    if (st == NL_OK) {
        char params[512];
        snprintf(params, sizeof params, "{\"experts\":\"%.200s\",\"scores_run\":%lld,\"seeds\":%ld,\"seed\":%llu,\"ctx\":%ld,\"stride\":%ld,\"batch\":%ld}",
                 spec, (long long)scores, seeds, (unsigned long long)co.seed, cr.ctx, cr.stride ? cr.stride : cr.ctx / 2, cr.batch);
        nl_run_info info = {.kind = "prune_experts", .model = cr.model, .dataset = eval_file ? eval_file : cr.data, .params = params,
                            .compute = nl_compute_name(nl_forward_compute(cr.f))};
        st = nl_results_begin_run(ctx, db, &info, &run_id);
    }
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "prune", eval_ds->n_tokens, "tok", ctx->progress);
        nl_expert_prune_opts o = {n_sets, sets, (int)seeds, co.seed, (int)cr.stride};
        st = nl_expert_prune_run(ctx, &o, cr.f, eval_ds, db, run_id, &prog);
        nl_progress_end(&prog);
    }
    if (db && run_id > 0) st = nl_results_finish_run(ctx, db, run_id, st, NULL);
    if (st == NL_OK) { /* the effect on all documents, with the random control's mean */
        sqlite3_stmt *q = NULL;
        printf("run %lld: removed  ppl(all)  rel_change  random mean (%ld seeds)\n", (long long)run_id, seeds);
        if (sqlite3_prepare_v2(nl_results_db(db),
                               "SELECT e.removed, e.ppl, e.rel_change, (SELECT avg(r.rel_change) FROM expert_prune r WHERE "
                               "r.run_id = e.run_id AND r.removed = e.removed AND r.control = 'random' AND r.label = '') "
                               "FROM expert_prune e WHERE e.run_id = ? AND e.label = '' AND e.control != 'random' ORDER BY e.control != 'none', e.removed",
                               -1, &q, NULL) != SQLITE_OK)
            q = NULL;
        if (q) sqlite3_bind_int64(q, 1, run_id);
        while (q && sqlite3_step(q) == SQLITE_ROW) {
            const char *rm = (const char *)sqlite3_column_text(q, 0);
            printf("  %-12s %9.4f  %+9.5f", rm[0] ? rm : "(none)", sqlite3_column_double(q, 1), sqlite3_column_double(q, 2));
            if (sqlite3_column_type(q, 3) != SQLITE_NULL) printf("  %+9.5f", sqlite3_column_double(q, 3));
            printf("\n");
        }
        sqlite3_finalize(q);
    }
    nl_results_close(db);
    nl_dataset_destroy(eds);
    free(sets), free(store), free(names);
    int rc = nl_cli_finish(ctx, st, NULL);
    nl_cli_run_close(&cr);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------------ */

static int run(nl_ctx *ctx, int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--experts")) return prune_experts(ctx, argc, argv);
    nl_cli_run cr = {0};
    const nl_command *cmd = &nl_cmd_prune;
    nl_prune_opts opt;
    nl_prune_opts_init(&opt);
    nl_cli_common co = {0};
    const char *v, *names[MAX_ABILITIES], *neurons = NULL, *eval_file = NULL;
    char *abl = NULL;
    long seeds = opt.seeds;
    int rc = 0;
    nl_cli_moe mo = {0};
    char moe_params[8192];
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(cmd, &cr, argc, argv, &i);
        if (k == 1) continue;
        if (k) { rc = k; goto out; }
        if ((k = nl_cli_moe_arg(cmd, &mo, argc, argv, &i)) == 1) continue;
        if (k) { rc = k; goto out; }
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_JSON | NL_CLI_TOP | NL_CLI_SCORES, &co, argc, argv, &i))) {
            if (k != 1) { rc = k; goto out; }
        } else if ((k = nl_cli_opt(argc, argv, &i, "--seeds", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 100000, &seeds)) {
                rc = nl_cli_usage(cmd, "--seeds needs a number of random sets, at least 1");
                goto out;
            }
        } else if ((k = nl_cli_opt(argc, argv, &i, "--neurons", &v))) {
            if (k < 0 || !*v) {
                rc = nl_cli_usage(cmd, "--neurons needs a CSV or JSON file of layer,neuron pairs");
                goto out;
            }
            neurons = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--eval", &v))) {
            if (k < 0 || !*v) {
                rc = nl_cli_usage(cmd, "--eval needs a JSONL dataset");
                goto out;
            }
            eval_file = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--abilities", &v))) {
            free(abl);
            abl = k > 0 ? strdup(v) : NULL;
            if (k < 0 || !abl || (opt.n_abilities = nl_cli_names(abl, names, MAX_ABILITIES)) < 0) {
                rc = nl_cli_usage(cmd, "--abilities needs a list like code,math");
                goto out;
            }
            opt.abilities = names;
        } else { rc = nl_cli_usage(cmd, "unknown option '%s'", argv[i]); goto out; }
    }
    if (nl_cli_run_check(cmd, &cr) || nl_cli_moe_check(cmd, &mo)) { rc = 2; goto out; }
    if (!co.db) { rc = nl_cli_usage(cmd, "--db is required: the results database with the ability run"); goto out; }
    if (!co.scores && !neurons) {
        rc = nl_cli_usage(cmd, "--scores (the id of an ability run) or --neurons FILE is required");
        goto out;
    }
    if (co.scores && neurons) { rc = nl_cli_usage(cmd, "--scores and --neurons exclude each other"); goto out; }
    if (neurons && co.top > 0) { rc = nl_cli_usage(cmd, "--top re-chooses an ability run's sets: not with --neurons"); goto out; }
    opt.seeds = (int)seeds;

    /* The database and the sets first, so a bad run fails before the model is read. */
    nl_results *db = NULL;
    nl_ability_sets sets = {0};
    nl_prune_result res = {0};
    nl_dataset *eds = NULL;
    uint8_t *heldout = NULL;
    char *nparams = NULL;
    nl_status st = nl_results_open(ctx, co.db, 0, &db);
    if (st == NL_OK && !neurons) st = nl_ability_sets_load(ctx, db, co.scores, co.top, &sets);
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &cr);
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, cr.m, cr.f, 0);
    opt.moe_json = nl_cli_moe_params(&mo, moe_params, sizeof moe_params);
    if (st == NL_OK && neurons) {
        const nl_config *mc = nl_model_config(cr.m);
        st = nl_prune_sets_from_file(ctx, neurons, mc->n_layers, mc->d_ff, &sets, &nparams);
        opt.neurons_json = nparams;
    } else if (st == NL_OK) st = nl_ability_sets_check_model(ctx, &sets, cr.m, cr.model);
    const nl_dataset *eval_ds = cr.ds;
    if (st == NL_OK && eval_file) {
        st = nl_dataset_load(ctx, eval_file, cr.tok, nl_model_config(cr.m)->vocab_size, &eds);
        eval_ds = eds, opt.eval = "file", opt.eval_file = eval_file;
    } else if (st == NL_OK && sets.n_heldout > 0) {
        if (!(heldout = malloc((size_t)(cr.ds->n_docs ? cr.ds->n_docs : 1)))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        else st = nl_prune_heldout(ctx, &sets, cr.ds, heldout);
        opt.eval_docs = heldout, opt.eval = "heldout";
    } else if (st == NL_OK) opt.eval = neurons ? "all" : "selection";
    if (st == NL_OK) {
        opt.stride = (int)cr.stride, opt.batch = (int)cr.batch, opt.model = cr.model, opt.dataset = eval_file ? eval_file : cr.data;
        nl_progress prog;
        nl_progress_init(&prog, "prune", 0, "tok", ctx->progress);
        st = nl_prune_run(ctx, &opt, cr.f, eval_ds, &sets, nl_mpi_is_root() ? db : NULL, &prog, &res); /* MPI: rank 0 writes */
        nl_progress_end(&prog);
    }
    const int passes = nl_prune_passes(&res);
    int done = res.base_done;
    for (int i = 0; i < res.n_rows; i++) done += res.pruned_done[i];
    for (int i = 0; i < res.n_groups * res.n_seeds; i++) done += res.random_done[i];
    if (res.base_done && (st == NL_OK || st == NL_EINTR)) {
        if (co.json) print_json(&cr, eval_ds, &opt, &sets, &res, res.run_id, st == NL_OK ? "complete" : "interrupted");
        else {
            print_text(&cr, eval_ds, &opt, co.db, &sets, &res, res.base[res.n_cols - 1].n);
            nl_cli_moe_print(stdout, &mo, nl_model_config(cr.m));
        }
    }
    rc = nl_cli_finish(ctx, st, "interrupted: '%s' keeps %d of %d passes (run %lld marked interrupted)", co.db, done, passes,
                       (long long)res.run_id);
    if (st == NL_OK)
        fprintf(stderr, "wrote run %lld to '%s': %d passes, %d pruned abilities x %d labels\n", (long long)res.run_id, co.db,
                passes, res.n_rows, res.n_cols);
    nl_prune_result_release(&res);
    nl_ability_sets_release(&sets);
    nl_dataset_destroy(eds);
    free(heldout);
    free(nparams);
    nl_results_close(db);
out:
    free(abl);
    nl_cli_moe_close(&mo, cr.f);
    nl_cli_run_close(&cr);
    return rc;
}
