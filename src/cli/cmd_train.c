/* cmd_train.c — `neuronlab train --config FILE [--resume] [--threads N] [--quiet]`: trains a
 * Llama-architecture model from a JSON config (format in include/neuronlab/train_config.h and
 * notebooks-data/zoo/README.md) into a Hugging Face folder (trainer.h).
 * --stop-at STEP ends the session after STEP with a checkpoint (a long run in several sessions).
 * stderr: a live progress line when it is a TTY, else one line per log step / evaluation /
 * checkpoint; stdout: one summary line at the end. Exit 0 when done, 1 on an error (one line),
 * 2 on a usage error, 130 after Ctrl-C (a checkpoint of the last finished step is saved).
 * --quiet is taken out by main.c (every command accepts it) and reaches here as ctx->progress = 0. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "neuronlab/trainer.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_train[] = {
    {"--config", "FILE", 1,
     "the training config (JSON; format in notebooks-data/zoo/README.md); \"moe\": {\"experts\", \"top_k\", \"d_expert\", "
     "\"shared_d\", \"norm_topk\", \"aux_loss\", \"type\": mixtral|qwen2_moe} trains a mixture of experts",
     NULL},
    {"--resume", NULL, 0, "continue from the output folder's checkpoint, bit for bit", NULL},
    {"--stop-at", "STEP", 0, "stop after this step with a checkpoint (continue later with --resume)", "the config's steps"},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_train = {"train", NULL,
                                 "train a Llama-architecture model (dense, or Mixtral / Qwen2-MoE mixture of experts) from a JSON config into a Hugging Face folder (checkpoints, resume, logs)",
                                 run};

typedef struct {
    int tty, quiet, drawn;
    double last; /* time of the last redraw (redrawn at most every 0.2 s) */
} view;

static void fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, cap, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%d:%02d", t / 60, t % 60);
}

static void clear_line(view *v) {
    if (v->drawn) {
        fputs("\r\033[K", stderr);
        v->drawn = 0;
    }
}

static void on_event(void *user, const nl_train_event *ev) {
    view *v = user;
    if (v->quiet) return;
    char el[32], eta[32];
    fmt_time(el, sizeof el, ev->elapsed);
    fmt_time(eta, sizeof eta, ev->eta);
    switch (ev->kind) {
    case NL_TRAIN_EV_TICK:
        if (!v->tty || (nl_now() - v->last < 0.2 && ev->step != ev->steps)) return;
        v->last = nl_now();
        fprintf(stderr, "\r\033[Ktrain %lld/%lld  loss %.4f", (long long)ev->step, (long long)ev->steps, ev->loss);
        if (!isnan(ev->aux)) fprintf(stderr, "  aux %.3f", ev->aux);
        fprintf(stderr, "  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s", ev->lr, ev->grad_norm, ev->tok_per_s, el,
                eta);
        fflush(stderr);
        v->drawn = 1;
        return;
    case NL_TRAIN_EV_STEP:
        if (v->tty) return;
        if (isnan(ev->aux))
            fprintf(stderr, "step %lld/%lld loss %.4f l1 %.4g lr %.3e grad_norm %.4f tok/s %.0f elapsed %s eta %s\n",
                    (long long)ev->step, (long long)ev->steps, ev->loss, ev->l1_mean, ev->lr, ev->grad_norm,
                    ev->tok_per_s, el, eta);
        else
            fprintf(stderr, "step %lld/%lld loss %.4f aux %.4f lr %.3e grad_norm %.4f tok/s %.0f elapsed %s eta %s\n",
                    (long long)ev->step, (long long)ev->steps, ev->loss, ev->aux, ev->lr, ev->grad_norm, ev->tok_per_s,
                    el, eta);
        return;
    case NL_TRAIN_EV_EVAL:
        clear_line(v);
        fprintf(stderr, "step %lld/%lld val_loss %.4f (%lld predictions) elapsed %s\n", (long long)ev->step,
                (long long)ev->steps, ev->loss, (long long)ev->val_tokens, el);
        return;
    case NL_TRAIN_EV_CHECKPOINT:
    case NL_TRAIN_EV_NOTE:
        clear_line(v);
        fprintf(stderr, "%s\n", ev->note);
        return;
    }
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    const char *config = NULL, *val;
    int resume = 0;
    long threads = 0, stop_at = 0;
    view v = {0};
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_opt(argc, argv, &i, "--config", &val);
        if (k < 0 || (k && !*val)) return nl_cli_usage(&nl_cmd_train, "--config needs a file");
        if (k) { config = val; continue; }
        k = nl_cli_opt(argc, argv, &i, "--threads", &val);
        if (k < 0 || (k && !nl_cli_int(val, 1, 1024, &threads)))
            return nl_cli_usage(&nl_cmd_train, "--threads needs an integer in 1..1024");
        if (k) continue;
        k = nl_cli_opt(argc, argv, &i, "--stop-at", &val);
        if (k < 0 || (k && !nl_cli_int(val, 1, 1000000000L, &stop_at)))
            return nl_cli_usage(&nl_cmd_train, "--stop-at needs a step number >= 1");
        if (k) continue;
        if (!strcmp(argv[i], "--resume")) resume = 1;
        else return nl_cli_usage(&nl_cmd_train, "unexpected argument '%s'", argv[i]);
    }
    if (!config) return nl_cli_usage(&nl_cmd_train, "missing --config FILE");
    if (threads > 0) omp_set_num_threads((int)threads);
    v.quiet = !ctx->progress; /* --quiet (main.c) */
    v.tty = ctx->progress && isatty(STDERR_FILENO);

    nl_train_config cfg;
    nl_status st = nl_train_config_load(ctx, config, &cfg);
    if (st != NL_OK) return nl_cli_fail(ctx, st);
    nl_trainer *t;
    if ((st = nl_trainer_create(ctx, &cfg, resume, &t)) != NL_OK) return nl_cli_fail(ctx, st);
    nl_trainer_info info;
    nl_trainer_get_info(t, &info);
    if (!v.quiet && cfg.moe_type)
        fprintf(stderr, "train %s: %s, %d experts of %d top-%d%s, shared expert %d; %.2fM parameters, %.2fM active per "
                "token\n", cfg.out, cfg.moe_type == NL_TRAIN_MOE_MIXTRAL ? "mixtral" : "qwen2_moe", cfg.moe_experts,
                cfg.moe_d_expert, cfg.moe_top_k, cfg.moe_norm_topk ? " renormalised" : "", cfg.moe_shared_d,
                info.n_params / 1e6, info.n_active_params / 1e6);
    if (!v.quiet)
        fprintf(stderr,
                "train %s: %.2fM parameters (%s, %d layers, d_model %d, %s %d, vocab %d); %lld training tokens "
                "(%lld windows of %d), %lld validation tokens; micro-batch %d x %d, %d steps of %d windows; "
                "activations %.0f MiB; OpenBLAS %s, %d threads\n",
                cfg.out, info.n_params / 1e6, nl_act_name(cfg.hidden_act), cfg.n_layers, cfg.d_model,
                cfg.moe_type ? "d_expert" : "d_ff", cfg.moe_type ? cfg.moe_d_expert : cfg.d_ff,
                info.vocab_size, (long long)info.train_tokens, (long long)info.train_windows, cfg.seq_len + 1,
                (long long)info.val_tokens, info.micro_batch, cfg.seq_len, cfg.steps, cfg.batch_size,
                info.act_bytes / 1048576.0, info.blas_core ? info.blas_core : "?", info.threads);
    if (stop_at > 0) nl_trainer_stop_at(t, stop_at);
    st = nl_trainer_run(t, ctx, on_event, &v);
    clear_line(&v);
    int rc = 0;
    if (st == NL_EINTR) {
        fprintf(stderr, "neuronlab: %s\n", ctx->msg);
        rc = 130;
    } else if (st != NL_OK) {
        rc = nl_cli_fail(ctx, st);
    } else if (stop_at > 0 && stop_at < cfg.steps) {
        printf("stopped %s at step %ld of %d: checkpoint '%s/checkpoint.bin' (continue with --resume)\n", cfg.out,
               stop_at, cfg.steps, cfg.out);
    } else {
        FILE *f;
        char path[4200];
        snprintf(path, sizeof path, "%s/training.json", cfg.out);
        double tps = 0, gf = 0, wall = 0, vl = NAN, tl = NAN;
        if ((f = fopen(path, "r"))) {
            json_t *j = json_loadf(f, 0, NULL);
            fclose(f);
            json_t *r = json_object_get(j, "run"), *fin = json_object_get(j, "final");
            tps = json_number_value(json_object_get(r, "tokens_per_s"));
            gf = json_number_value(json_object_get(r, "gflops"));
            wall = json_number_value(json_object_get(r, "wall_time_s"));
            if (json_is_number(json_object_get(fin, "val_loss"))) vl = json_number_value(json_object_get(fin, "val_loss"));
            if (json_is_number(json_object_get(fin, "train_loss"))) tl = json_number_value(json_object_get(fin, "train_loss"));
            json_decref(j);
        }
        printf("trained %s: %d steps, train loss %.4f, val loss %.4f, %.0f s, %.0f tokens/s (%.1f GFLOP/s)\n", cfg.out,
               cfg.steps, tl, vl, wall, tps, gf);
    }
    nl_trainer_destroy(t);
    return rc;
}
