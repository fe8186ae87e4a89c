/* cmd_moe_sweep.c — `neuronlab moe-sweep MODEL DATA.jsonl --moe MOE_DIR --db results.db [--k LIST]
 * [--router LIST] [--fill LIST] [--no-recall]`: the dense model once, then every K × router × fill of the folder: perplexity overall
 * and per label (nl_ppl_run, as `ppl`), FFN and whole-model FLOPs per token (analytic, moe.h and
 * analyses/moe_sweep.h), tokens/s of the scoring pass (measured, the expert FFN without recall
 * measurement; its CPU seconds beside), and router recall from a second pass with the dense activations computed (skipped
 * by --no-recall; the oracle's recall is 1 by definition, measured in its own pass). K values are
 * counts or percentages of E (rounded like --k of ppl, at least 1; duplicates after rounding are
 * run once). Default routers: sim, the folder's own trained router when it is another, and oracle.
 * One run (kind "moe-sweep") with the moe_sweep table (analyses/moe_sweep.h), each configuration
 * committed when done; a readable table on stdout, progress on stderr.
 *
 * Its companion moe-usage is cmd_moe_usage.c; the helpers they share are moe_sweep_cli.c. Checked by tests/moe_sweep_cli.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/moe_sweep_cli.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/results.h"

#define MAX_LIST 64

static int run_sweep(nl_ctx *ctx, int argc, char **argv);

/* Documents in parallel (perplexity.h nl_ppl_states): each forward state gets its own expert FFN
 * of the configuration; their statistics are summed when they are dropped. */
typedef struct {
    const nl_moe *moe;
    nl_model *m;
    int K, router, fill;
    nl_moe_ffn_stats sum;
} sweep_states;

static nl_status sweep_attach(void *user, nl_ctx *ctx, nl_forward *g, void **state) {
    sweep_states *ss = user;
    nl_moe_ffn *x = NULL;
    nl_status st = nl_cli_moe_make_ffn(ctx, ss->moe, ss->m, g, ss->K, ss->router, ss->fill, 0, &x);
    *state = x;
    return st;
}
static void sweep_detach(void *user, nl_forward *g, void *state) {
    sweep_states *ss = user;
    nl_moe_ffn *x = state;
    nl_moe_ffn_stats s = nl_moe_ffn_get_stats(x);
    ss->sum.tokens += s.tokens, ss->sum.recall_sum += s.recall_sum, ss->sum.recall_n += s.recall_n, ss->sum.flops += s.flops;
    nl_cli_moe_drop_ffn(&x, g);
}

const nl_cli_option nl_cli_opts_moe_sweep[] = {
    NL_CLI_RUN_OPTIONS,
    {"--moe", "MOE_DIR", 1, "the expert folder (a `neuronlab moefy` folder of MODEL)", NULL},
    {"--db", "results.db", 1, "the results database (one run of kind moe-sweep)", NULL},
    {"--k", "LIST", 0, "experts per token: counts or percentages of the folder's experts, comma separated", "12.5%,25%,50%,100%"},
    {"--router", "LIST", 0, "routers, comma separated (sim, oracle, or a router the folder carries)", "the folder's routers and oracle"},
    {"--fill", "LIST", 0, "fills of the unselected experts, comma separated (zero, mean)", "zero,mean"},
    {"--no-recall", NULL, 0, "skip the router-recall passes (one pass per configuration instead of two)", NULL},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_moe_sweep = {
    "moe-sweep", NULL,
    "perplexity per label, FLOPs (FFN and whole model), tokens/s and router recall of an MoEfied model for every K x router "
    "x fill, beside the dense model; one table in the database",
    run_sweep};


/* ---- lists ---------------------------------------------------------------------------------- */

typedef struct {
    long count;     /* > 0: a count */
    double percent; /* else a percentage in (0, 100] */
} kspec;

/* "12.5%" or "4" → *k; 0 on a malformed value. */
static int parse_k(const char *s, kspec *k) {
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '%') {
        char buf[64];
        double p;
        if (n - 1 >= sizeof buf) return 0;
        snprintf(buf, sizeof buf, "%.*s", (int)(n - 1), s);
        if (!nl_cli_double(buf, &p) || !(p > 0 && p <= 100)) return 0;
        k->count = 0, k->percent = p;
        return 1;
    }
    long c;
    if (!nl_cli_int(s, 1, 1 << 30, &c)) return 0;
    k->count = c, k->percent = 0;
    return 1;
}

static int resolve_k(const kspec *k, int E) {
    if (k->count > 0) return k->count > E ? -1 : (int)k->count;
    int K = (int)lround(k->percent / 100.0 * E);
    return K < 1 ? 1 : K;
}

/* CPU seconds of this process (every thread). */
static double cpu_seconds(void) {
    struct timespec t;
    return clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) == 0 ? (double)t.tv_sec + 1e-9 * (double)t.tv_nsec : NAN;
}

/* ---- moe-sweep ------------------------------------------------------------------------------ */

typedef struct {
    int K, router, fill, dense;
    nl_ppl_result res;
    double ffn_flops, expert_flops, model_flops, tps, cpu_s, recall; /* recall NaN: not measured */
} config;

static nl_status write_config(nl_ctx *ctx, nl_results *db, int64_t run, const config *c, const nl_dataset *ds, int E,
                              double dense_ffn, double dense_model) {
    sqlite3_stmt *q = NULL;
    nl_status st = nl_results_begin(ctx, db);
    if (st != NL_OK) return st;
    if (sqlite3_prepare_v2(nl_results_db(db), "INSERT INTO moe_sweep VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?17,?12,?13,?14,?15,?16,?18)",
                           -1, &q, NULL) != SQLITE_OK)
        st = nl_results_error(ctx, db, "cannot prepare the moe_sweep rows");
    for (int l = -1; st == NL_OK && l < ds->n_labels; l++) {
        if (l >= 0 && !ds->labels[l][0]) continue; /* unlabelled documents count in '' only */
        const nl_nll_sum s = l < 0 ? c->res.total : c->res.by_label[l];
        sqlite3_bind_int64(q, 1, run);
        sqlite3_bind_text(q, 2, c->dense ? "dense" : nl_moe_router_name((nl_moe_router)c->router), -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, c->dense ? "none" : nl_moe_fill_name((nl_moe_fill)c->fill), -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 4, c->K);
        sqlite3_bind_double(q, 5, (double)c->K / E);
        sqlite3_bind_text(q, 6, l < 0 ? "" : ds->labels[l], -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 7, s.n);
        if (s.n > 0 && isfinite(nl_nll_ppl(s))) {
            sqlite3_bind_double(q, 8, nl_nll_mean(s));
            sqlite3_bind_double(q, 9, nl_nll_ppl(s));
        } else {
            sqlite3_bind_null(q, 8);
            sqlite3_bind_null(q, 9);
        }
        sqlite3_bind_double(q, 10, c->ffn_flops);
        sqlite3_bind_double(q, 11, c->ffn_flops / dense_ffn);
        sqlite3_bind_double(q, 12, c->model_flops);
        sqlite3_bind_double(q, 13, c->model_flops / dense_model);
        sqlite3_bind_double(q, 14, c->tps);
        if (isfinite(c->recall)) sqlite3_bind_double(q, 15, c->recall);
        else sqlite3_bind_null(q, 15);
        sqlite3_bind_int(q, 16, c->dense);
        sqlite3_bind_double(q, 17, c->expert_flops / dense_ffn);
        sqlite3_bind_double(q, 18, c->cpu_s);
        if (sqlite3_step(q) != SQLITE_DONE) st = nl_results_error(ctx, db, "cannot write the moe_sweep rows");
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (st == NL_OK) st = nl_results_commit(ctx, db);
    else nl_results_rollback(db);
    return st;
}

static void print_header(const nl_dataset *ds) {
    printf("\n%-5s %6s %-7s %-5s %10s %8s %9s %9s %9s %7s", "K", "K/E", "router", "fill", "ppl", "vs dense", "FFN flops",
           "model fl", "tok/s", "recall");
    for (int l = 0; l < ds->n_labels; l++)
        if (ds->labels[l][0]) printf(" %10.10s", ds->labels[l]);
    putchar('\n');
}

static void print_config(const config *c, const nl_dataset *ds, int E, double dense_ppl, double dense_ffn, double dense_model) {
    const double p = nl_nll_ppl(c->res.total);
    printf("%-5d %5.1f%% %-7s %-5s %10.4f %+7.2f%% %9.4f %9.4f %9.0f", c->K, 100.0 * c->K / E,
           c->dense ? "dense" : nl_moe_router_name((nl_moe_router)c->router), c->dense ? "-" : nl_moe_fill_name((nl_moe_fill)c->fill),
           p, 100.0 * (p / dense_ppl - 1), c->ffn_flops / dense_ffn, c->model_flops / dense_model, c->tps);
    if (isfinite(c->recall)) printf(" %7.4f", c->recall);
    else printf(" %7s", "-");
    for (int l = 0; l < ds->n_labels; l++)
        if (ds->labels[l][0]) printf(" %10.4f", nl_nll_ppl(c->res.by_label[l]));
    putchar('\n');
    fflush(stdout);
}

static int run_sweep(nl_ctx *ctx, int argc, char **argv) {
    const nl_command *cmd = &nl_cmd_moe_sweep;
    nl_cli_run r = {0};
    const char *dir = NULL, *db_path = NULL, *v;
    char kbuf[1024] = "12.5%,25%,50%,100%", rbuf[256] = "", fbuf[256] = "zero,mean";
    int recall = 1, k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_run_arg(cmd, &r, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_opt(argc, argv, &i, "--moe", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(cmd, "--moe needs an MoE folder (made by neuronlab moefy)");
            dir = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--db", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(cmd, "--db needs a database path");
            db_path = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--k", &v))) {
            if (k < 0 || strlen(v) >= sizeof kbuf) return nl_cli_usage(cmd, "--k needs a list like 12.5%%,25%%,4");
            snprintf(kbuf, sizeof kbuf, "%s", v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router", &v))) {
            if (k < 0 || strlen(v) >= sizeof rbuf) return nl_cli_usage(cmd, "--router needs a list like sim,oracle");
            snprintf(rbuf, sizeof rbuf, "%s", v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--fill", &v))) {
            if (k < 0 || strlen(v) >= sizeof fbuf) return nl_cli_usage(cmd, "--fill needs a list like zero,mean");
            snprintf(fbuf, sizeof fbuf, "%s", v);
        } else if (!strcmp(argv[i], "--no-recall")) recall = 0;
        else return nl_cli_usage(cmd, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(cmd, &r)) return 2;
    if (!dir) return nl_cli_usage(cmd, "--moe MOE_DIR is required");
    if (!db_path) return nl_cli_usage(cmd, "--db results.db is required");
    /* lists: every value checked before anything is opened */
    const char *names[MAX_LIST];
    kspec ks[MAX_LIST];
    int nk = nl_cli_names(kbuf, names, MAX_LIST), routers[MAX_LIST], nr = 0, fills[MAX_LIST], nf;
    if (nk < 0) return nl_cli_usage(cmd, "--k: '%s' is not a list of counts or percentages", kbuf);
    for (int i = 0; i < nk; i++)
        if (!parse_k(names[i], &ks[i])) return nl_cli_usage(cmd, "--k: '%s' is neither a count ≥ 1 nor a percentage in (0, 100]", names[i]);
    if (rbuf[0]) {
        if ((nr = nl_cli_names(rbuf, names, MAX_LIST)) < 0) return nl_cli_usage(cmd, "--router: '%s' is not a list of routers", rbuf);
        for (int i = 0; i < nr; i++)
            if ((routers[i] = nl_moe_router_parse(names[i])) < 0) return nl_cli_usage(cmd, "--router: unknown router '%s'", names[i]);
    }
    if ((nf = nl_cli_names(fbuf, names, MAX_LIST)) < 0) return nl_cli_usage(cmd, "--fill: '%s' is not a list of fills", fbuf);
    for (int i = 0; i < nf; i++)
        if ((fills[i] = nl_moe_fill_parse(names[i])) < 0) return nl_cli_usage(cmd, "--fill: unknown fill '%s' (zero or mean)", names[i]);

    nl_moe *moe = NULL;
    nl_results *db = NULL;
    int64_t run = -1;
    config *cf = NULL;
    int ncf = 0, Ks[MAX_LIST], nK = 0;
    nl_status st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK) st = nl_moe_open(ctx, dir, r.m, &moe);
    const nl_config *c = st == NL_OK ? nl_model_config(r.m) : NULL;
    const nl_moe_info *in = st == NL_OK ? nl_moe_get_info(moe) : NULL;
    const int E = in ? in->E : 0, L = c ? c->n_layers : 0;
    for (int i = 0; st == NL_OK && i < nk; i++) {
        const int K = resolve_k(&ks[i], E);
        if (K < 1) {
            st = nl_errorf(ctx, NL_EINVAL, "--k %ld is outside 1..%d: '%s/manifest.json' has %d experts per layer", ks[i].count, E, dir, E);
            break;
        }
        int j = 0;
        while (j < nK && Ks[j] != K) j++;
        if (j == nK) Ks[nK++] = K;
    }
    for (int i = 0; i < nK; i++) /* ascending */
        for (int j = i + 1; j < nK; j++)
            if (Ks[j] < Ks[i]) { int t = Ks[i]; Ks[i] = Ks[j]; Ks[j] = t; }
    if (st == NL_OK && !rbuf[0]) { /* sim, the folder's own router, oracle */
        routers[nr++] = NL_MOE_ROUTER_SIM;
        if ((int)in->router != NL_MOE_ROUTER_SIM && (int)in->router != NL_MOE_ROUTER_ORACLE) routers[nr++] = (int)in->router;
        routers[nr++] = NL_MOE_ROUTER_ORACLE;
    }
    for (int i = 0; st == NL_OK && i < nr; i++) st = nl_cli_moe_check_router(ctx, moe, dir, routers[i]);
    const int stride = (int)r.stride;
    const double keys = st == NL_OK ? nl_moe_sweep_mean_keys(r.ds, (int)r.ctx, stride) : 0;
    double *ffn = calloc((size_t)(L > 0 ? L : 1), sizeof *ffn);
    if (st == NL_OK && !ffn) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    const int total = 1 + nK * nr * nf;
    if (st == NL_OK && !(cf = calloc((size_t)total, sizeof *cf))) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) st = nl_results_open(ctx, db_path, 0, &db);
    if (st == NL_OK) st = nl_moe_sweep_create_tables(ctx, db);
    if (st == NL_OK) {
        char params[4096], ktxt[512] = "", rtxt[256] = "", ftxt[64] = "", mp[2048];
        size_t o = 0;
        for (int i = 0; i < nK; i++) o += (size_t)snprintf(ktxt + o, sizeof ktxt - o, "%s%d", i ? "," : "", Ks[i]);
        o = 0;
        for (int i = 0; i < nr; i++) o += (size_t)snprintf(rtxt + o, sizeof rtxt - o, "%s\"%s\"", i ? "," : "", nl_moe_router_name((nl_moe_router)routers[i]));
        o = 0;
        for (int i = 0; i < nf; i++) o += (size_t)snprintf(ftxt + o, sizeof ftxt - o, "%s\"%s\"", i ? "," : "", nl_moe_fill_name((nl_moe_fill)fills[i]));
        nl_cli_moe mo = {.dir = dir, .moe = moe, .K = E};
        nl_cli_moe_params(&mo, mp, sizeof mp);
        char *kk = strstr(mp, ",\"k\":"); /* the sweep's K, routers and fills are lists of their own below */
        if (kk) kk[0] = '}', kk[1] = 0;
        snprintf(params, sizeof params,
                 "{\"moe\":%s,\"split\":\"%s\",\"k\":[%s],\"routers\":[%s],\"fills\":[%s],\"recall\":%s,\"ctx\":%ld,\"stride\":%d,"
                 "\"batch\":%d,\"keys\":%.6g}",
                 mp, nl_moe_split_name(in->split), ktxt, rtxt, ftxt, recall ? "true" : "false", r.ctx, stride > 0 ? stride : (int)r.ctx / 2,
                 nl_forward_max_T(r.f), keys);
        nl_run_info info = {.kind = "moe-sweep", .model = r.model, .dataset = r.data, .source = dir, .params = params,
                            .compute = nl_compute_name(nl_forward_compute(r.f))};
        st = nl_results_begin_run(ctx, db, &info, &run);
        if (st != NL_OK) run = -1;
    }
    double dense_ffn = 0, dense_model = 0, dense_ppl = NAN;
    nl_progress prog;
    int64_t passes = 0;
    for (int i = 0; i < nK; i++)
        for (int j = 0; j < nr; j++) passes += nf * (1 + (recall && routers[j] != NL_MOE_ROUTER_ORACLE));
    if (st == NL_OK) {
        nl_progress_init(&prog, "moe-sweep", (passes + 1) * r.ds->n_tokens, "tok", ctx->progress);
        dense_ffn = L * nl_moe_flops_dense(c);
        dense_model = nl_model_flops_token(c, NULL, keys);
        printf("model    %s\ndataset  %s (%d documents, %lld tokens)\n", r.model, r.data, r.ds->n_docs, (long long)r.ds->n_tokens);
        printf("moe      %s: %d experts%s on %d of %d layers (split %s)\n", dir, E, in->n_shared ? " + shared" : "",
               nl_moe_n_layers(moe), L, nl_moe_split_name(in->split));
        printf("flops    dense model %.4g FLOPs per token (FFN %.4g; attention at %.1f keys, the dataset's mean)\n", dense_model,
               dense_ffn, keys);
        printf("run      %lld in %s\n", (long long)run, db_path);
    }
    nl_moe_ffn *x = NULL;
    for (int ci = 0; st == NL_OK && ci < total; ci++) {
        config *g = &cf[ci];
        g->recall = NAN;
        if (ci == 0) {
            g->dense = 1, g->K = E;
        } else {
            const int t = ci - 1;
            g->K = Ks[t / (nr * nf)], g->router = routers[(t / nf) % nr], g->fill = fills[t % nf];
            st = nl_cli_moe_make_ffn(ctx, moe, r.m, r.f, g->K, g->router, g->fill, 0, &x);
        }
        if (st != NL_OK) break;
        sweep_states ss = {moe, r.m, g->K, g->router, g->fill, {0, 0, 0, 0}};
        const nl_ppl_states ps = {sweep_attach, NULL, sweep_detach, &ss, 0, 1};
        const double t0 = nl_now(), c0 = cpu_seconds();
        st = x ? nl_ppl_run_states(ctx, r.f, r.ds, stride, &prog, &ps, &g->res) : nl_ppl_run(ctx, r.f, r.ds, stride, &prog, &g->res);
        const double secs = nl_now() - t0;
        g->cpu_s = cpu_seconds() - c0;
        g->tps = secs > 0 ? (double)r.ds->n_tokens / secs : NAN;
        if (st == NL_OK && x) { /* the serial loop's FFN or the states' */
            nl_moe_ffn_stats s = nl_moe_ffn_get_stats(x);
            s.recall_sum += ss.sum.recall_sum, s.recall_n += ss.sum.recall_n;
            if (s.recall_n > 0) g->recall = s.recall_sum / s.recall_n;
        }
        nl_cli_moe_drop_ffn(&x, r.f);
        if (st == NL_OK && !g->dense && recall && !isfinite(g->recall)) {
            st = nl_cli_moe_make_ffn(ctx, moe, r.m, r.f, g->K, g->router, g->fill, 1, &x);
            nl_cli_moe_walk w = {x, NULL, 0, &prog};
            if (st == NL_OK) st = nl_cli_moe_walk_all(ctx, r.f, r.ds, stride, &w);
            if (st == NL_OK) {
                nl_moe_ffn_stats s = nl_moe_ffn_get_stats(x);
                if (s.recall_n > 0) g->recall = s.recall_sum / s.recall_n;
            }
            nl_cli_moe_drop_ffn(&x, r.f);
        }
        if (st != NL_OK) break;
        for (int l = 0; l < L; l++)
            ffn[l] = g->dense || !nl_moe_get_layer(moe, l)
                         ? nl_moe_flops_dense(c)
                         : nl_moe_flops_layer(c, E, in->n_shared, g->K, (nl_moe_router)g->router, (nl_moe_fill)g->fill);
        g->ffn_flops = 0;
        for (int l = 0; l < L; l++) g->ffn_flops += ffn[l];
        g->model_flops = nl_model_flops_token(c, ffn, keys);
        g->expert_flops = 0; /* the experts alone: the sim router's layer without its router term */
        for (int l = 0; l < L; l++)
            g->expert_flops += g->dense || !nl_moe_get_layer(moe, l)
                                   ? nl_moe_flops_dense(c)
                                   : nl_moe_flops_layer(c, E, in->n_shared, g->K, NL_MOE_ROUTER_SIM, NL_MOE_FILL_ZERO) - 2.0 * c->d_model * E;
        if (g->dense) {
            dense_ppl = nl_nll_ppl(g->res.total);
            nl_progress_end(&prog);
            print_header(r.ds);
            nl_progress_init(&prog, "moe-sweep", passes * r.ds->n_tokens, "tok", ctx->progress);
        }
        st = write_config(ctx, db, run, g, r.ds, E, dense_ffn, dense_model);
        if (st != NL_OK) break;
        ncf++;
        print_config(g, r.ds, E, dense_ppl, dense_ffn, dense_model);
    }
    if (run >= 0) nl_progress_end(&prog);
    nl_cli_moe_drop_ffn(&x, r.f);
    if (run >= 0) st = nl_results_finish_run(ctx, db, run, st, NULL);
    int rc = 0;
    if (st == NL_OK) printf("\n%d configurations (and the dense model) in run %lld of %s (table moe_sweep)\n", ncf - 1, (long long)run, db_path);
    rc = nl_cli_finish(ctx, st, "interrupted: '%s' keeps %d of %d configurations (run %lld marked interrupted)", db_path, ncf, total,
                       (long long)run);
    for (int i = 0; i < total && cf; i++) nl_ppl_result_release(&cf[i].res);
    free(cf);
    free(ffn);
    nl_results_close(db);
    nl_moe_close(moe);
    nl_cli_run_close(&r);
    return rc;
}

