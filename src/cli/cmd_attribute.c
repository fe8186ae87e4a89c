/* cmd_attribute.c — `neuronlab attribute MODEL (--layer L --neuron I | --ability-run RUN|latest
 * [--per-ability K]) [--top 20] [--norm-weight] [--tokenizer PATH] [--db results.db]`: direct logit
 * attribution (analyses/attribution.h): the tokens a neuron's output direction W_U·W_out[:, i]
 * promotes and suppresses, decoded; with --ability-run, the K best-scoring neurons of each ability
 * of an ability run (its top sets, ranked by score). Rows go to neuron_attribution with --db.
 * Bad values are usage errors (exit 2); a layer, neuron or run the model or database does not
 * have is one line and exit 1. Checked by tests/lens_cli.sh. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyses/ability.h"
#include "analyses/attribution.h"
#include "cli/cli.h"
#include "neuronlab/tokenizer.h"

static int run(nl_ctx *ctx, int argc, char **argv);

/* The token's text mid-text (as record's /vocab): special tokens their own text. */
static char *token_text(void *user, int id) {
    const nl_tokenizer *tok = user;
    if (!tok || id >= nl_tokenizer_vocab_size(tok)) return NULL;
    size_t n = 0, rn;
    if (nl_tokenizer_is_special(tok, id)) {
        const char *p = nl_tokenizer_token(tok, id, &n);
        return nl_utf8_repair(p ? p : "", p ? n : 0, &rn);
    }
    char small[256];
    n = nl_tokenizer_piece(tok, id, id, small, sizeof small);
    if (n <= sizeof small) return nl_utf8_repair(small, n, &rn);
    char *big = malloc(n);
    if (!big) return NULL;
    nl_tokenizer_piece(tok, id, id, big, n);
    char *r = nl_utf8_repair(big, n, &rn);
    free(big);
    return r;
}

const nl_cli_option nl_cli_opts_attribute[] = {
    {"MODEL", NULL, 1, "a Hugging Face folder, a GGUF file or a llama2.c .bin checkpoint", NULL},
    {"--layer", "L", 0, "the neuron's layer (with --neuron)", "none: required without --ability-run"},
    {"--neuron", "I", 0, "the neuron's index in the layer, 0..d_ff-1 (with --layer)", "none: required without --ability-run"},
    {"--ability-run", "RUN|latest", 0, "instead of --layer/--neuron: the top neurons of an ability run of --db", "none"},
    {"--per-ability", "K", 0, "with --ability-run: neurons per ability, the K highest scores of its top set", "3"},
    {"--top", "N", 0, "promoted and suppressed tokens listed and stored per neuron", "20"},
    {"--norm-weight", NULL, 0, "multiply W_out[:, i] elementwise by the final norm's weight before the unembedding", NULL},
    {"--tokenizer", "PATH", 0, "tokenizer that decodes the tokens", "the model's own (ids only when it has none)"},
    {"--db", "results.db", 0, "store a run with its neuron_attribution rows (required with --ability-run)", "none"},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_attribute = {
    "attribute", NULL,
    "direct logit attribution of FFN neurons: the tokens W_U . W_out[:, i] promotes and suppresses most (--norm-weight: "
    "times the final norm's weight), decoded; one neuron or the top neurons of an ability run; --db stores them",
    run};

/* The K highest-scoring neurons of each ability's top set of the run (distinct pairs). */
static nl_status ability_neurons(nl_ctx *ctx, nl_results *db, const nl_ability_sets *sets, int K, nl_neuron_ref **out, int *n) {
    *out = NULL, *n = 0;
    size_t cap = (size_t)sets->n_abilities * K + 1;
    nl_neuron_ref *v = malloc(cap * sizeof *v);
    if (!v) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(nl_results_db(db),
                                "SELECT t.layer, t.neuron FROM ability_top t JOIN ability_score s ON s.run_id = t.run_id AND "
                                "s.ability = t.ability AND s.layer = t.layer AND s.neuron = t.neuron WHERE t.run_id = ?1 AND "
                                "t.ability = ?2 ORDER BY s.score DESC, t.layer, t.neuron LIMIT ?3",
                                -1, &q, NULL);
    for (int a = 0; rc == SQLITE_OK && a < sets->n_abilities; a++) {
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, sets->run_id);
        sqlite3_bind_text(q, 2, sets->abilities[a], -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 3, K);
        int s;
        while ((s = sqlite3_step(q)) == SQLITE_ROW) {
            nl_neuron_ref r = {sqlite3_column_int(q, 0), sqlite3_column_int(q, 1)};
            int dup = 0;
            for (int j = 0; j < *n; j++) dup |= v[j].layer == r.layer && v[j].neuron == r.neuron;
            if (!dup) v[(*n)++] = r;
        }
        if (s != SQLITE_DONE) rc = s;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        free(v);
        *n = 0;
        return nl_results_error(ctx, db, "cannot read the ability run's top neurons");
    }
    if (*n == 0) {
        free(v);
        return nl_errorf(ctx, NL_EINVAL, "ability run %lld of '%s' has no top neurons", (long long)sets->run_id, nl_results_path(db));
    }
    *out = v;
    return NL_OK;
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_attribute;
    const char *model = NULL, *tokp = NULL, *v;
    long layer = -1, neuron = -1, top = 20, per = 3;
    int64_t arun = 0;
    int norm_w = 0, have_l = 0, have_n = 0;
    nl_cli_common co = {0};
    for (int i = 1; i < argc; i++) {
        int k;
        if ((k = nl_cli_common_arg(cmd, ctx, NL_CLI_DB | NL_CLI_THREADS, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--layer", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 1 << 20, &layer)) return nl_cli_usage(cmd, "--layer needs a layer number (0 or more)");
            have_l = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--neuron", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 1 << 30, &neuron)) return nl_cli_usage(cmd, "--neuron needs a neuron index (0 or more)");
            have_n = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--top", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 100000, &top)) return nl_cli_usage(cmd, "--top needs a count in 1..100000");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--per-ability", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 100000, &per)) return nl_cli_usage(cmd, "--per-ability needs a count in 1..100000");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--ability-run", &v))) {
            long id;
            if (k > 0 && !strcmp(v, "latest")) arun = -1;
            else if (k > 0 && nl_cli_int(v, 1, 1L << 62, &id)) arun = id;
            else return nl_cli_usage(cmd, "--ability-run needs a run id or 'latest'");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--tokenizer", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(cmd, "--tokenizer needs a path");
            tokp = v;
        } else if (!strcmp(argv[i], "--norm-weight")) norm_w = 1;
        else if ((k = nl_cli_positional(cmd, argv, i, &model)) != 1) return k;
    }
    if (!model) return nl_cli_usage(cmd, "missing MODEL");
    if (arun && (have_l || have_n)) return nl_cli_usage(cmd, "--ability-run and --layer/--neuron exclude each other");
    if (!arun && !(have_l && have_n)) return nl_cli_usage(cmd, "give --layer L and --neuron I, or --ability-run RUN|latest");
    if (arun && !co.db) return nl_cli_usage(cmd, "--ability-run needs --db (the database that holds the run)");
    nl_results *db = NULL;
    nl_model *m = NULL;
    nl_tokenizer *tok = NULL;
    nl_ability_sets sets = {0};
    nl_neuron_ref one = {(int)layer, (int)neuron}, *list = &one;
    int n = 1;
    nl_attribution_result res = {0};
    char extra[96] = "", source[64] = "";
    nl_ctx_apply_threads(ctx);
    nl_status st = co.db ? nl_results_open(ctx, co.db, 0, &db) : NL_OK;
    if (st == NL_OK && arun) st = nl_ability_sets_load(ctx, db, arun, 0, &sets);
    if (st == NL_OK) st = nl_model_open(ctx, model, &m);
    if (st == NL_OK && arun) st = nl_ability_sets_check_model(ctx, &sets, m, model);
    if (st == NL_OK && arun) {
        st = ability_neurons(ctx, db, &sets, (int)per, &list, &n);
        snprintf(extra, sizeof extra, ",\"ability_run\":%lld,\"per_ability\":%ld", (long long)sets.run_id, per);
        snprintf(source, sizeof source, "ability run %lld", (long long)sets.run_id);
    }
    if (st == NL_OK) st = tokp ? nl_tokenizer_open(ctx, tokp, &tok) : nl_tokenizer_for_model(ctx, model, &tok);
    if (st == NL_OK) {
        nl_attribution_opts o;
        nl_attribution_opts_init(&o);
        o.top = (int)top, o.norm_weight = norm_w, o.model = model;
        if (arun) o.source = source, o.extra_params = extra;
        o.decode = tok ? token_text : NULL, o.decode_user = tok;
        st = nl_attribution_run(ctx, &o, m, list, n, db, &res);
    }
    if (st == NL_OK) {
        printf("model    %s\nlogit    W_U . %sW_out[:, i] (direct effect per unit of activation)\n", model,
               norm_w ? "diag(final norm weight) . " : "");
        for (int r = 0; r < res.n_rows; r++) {
            const nl_attribution_row *x = &res.rows[r];
            if (x->rank == 1) printf("\nlayer %d neuron %d\n  promoted\n", x->layer, x->neuron);
            if (x->rank == -1) printf("  suppressed\n");
            printf("  %6d %8d %+12.5f  ", x->rank, x->token_id, x->logit);
            if (x->token) nl_cli_json_str(x->token);
            putchar('\n');
        }
    }
    int rc = nl_cli_finish(ctx, st, NULL);
    if (st == NL_OK && db) fprintf(stderr, "wrote run %lld to '%s': %d neurons\n", (long long)res.run_id, co.db, n);
    nl_attribution_result_release(&res);
    if (list != &one) free(list);
    nl_ability_sets_release(&sets);
    nl_tokenizer_close(tok);
    nl_model_close(m);
    nl_results_close(db);
    return rc;
}
