/* cmd_moefy.c — `neuronlab moefy MODEL CALIB.jsonl --experts E -o MOE_DIR [--split param|coact]
 * [--shared N] [--router sim|mlp [--router-epochs N] [--router-lr LR] [--router-tokens N]
 * [--router-fill zero|mean] [--router-k K]] [--feature both|gate|up] [--layers LIST] [--seed S]
 * [--iters N] [--restarts N] [--force]`: splits every (or every listed) FFN layer into E experts
 * from a calibration set, optionally trains the MLP router, and writes the MoE folder (moe.h)
 * for `ppl --moe`. Per layer the MLP router's losses and held-out recall (sim vs mlp) go to
 * stderr. Checked by tests/moe_cli.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "neuronlab/moe.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_cli_option nl_cli_opts_moefy[] = {
    {"MODEL", NULL, 1, "a Hugging Face folder (config.json + *.safetensors), a GGUF file or a llama2.c .bin checkpoint", NULL},
    {"CALIB.jsonl", NULL, 1, "calibration documents (same row kinds as every dataset): at least 4·E tokens", NULL},
    {"--experts", "E", 1, "routed experts per layer (1 .. d_ff − shared); sizes differ by at most one", NULL},
    {"-o, --output", "MOE_DIR", 1, "the MoE folder to write (manifest.json + experts.safetensors)", NULL},
    {"--split", "param|coact", 0, "balanced k-means of the FFN input rows, or METIS on the co-activation graph", "param"},
    {"--shared", "N", 0, "a shared expert of the N most often active neurons, always computed", "0"},
    {"--router", "sim|mlp", 0, "sim: expert centroids; mlp: also train Linear(d,E)→tanh→Linear(E,E) (the folder then has both); the oracle needs none", "sim"},
    {"--router-epochs", "N", 0, "mlp: epochs of Adam (batch 512, 90/10 split by token from --seed)", "30"},
    {"--router-lr", "LR", 0, "mlp: Adam learning rate", "0.01"},
    {"--router-tokens", "N", 0, "mlp: calibration tokens kept per layer for training, evenly spaced (memory: N·(d + E) floats per layer)", "65536"},
    {"--router-fill", "zero|mean", 0, "mlp: the fill of the oracle scores it learns", "mean"},
    {"--router-k", "K", 0, "mlp: also report held-out recall at this K (always at 25% of E)", "none"},
    {"--feature", "both|gate|up", 0, "gated FFNs: rows clustered by param ([gate ; up], gate or up) and read by sim", "both"},
    {"--layers", "LIST", 0, "layers to split, like 0,2,5-7; the others stay dense", "every layer"},
    {"--seed", "S", 0, "seed of k-means++ and METIS", "0"},
    {"--iters", "N", 0, "k-means steps at most per restart", "30"},
    {"--restarts", "N", 0, "k-means restarts (the lowest objective is kept)", "4"},
    {"--force", NULL, 0, "replace an existing MoE folder", "refuse"},
    {"--batch", "N", 0, "tokens per forward call (results do not depend on it)", "512"},
    {"--ctx", "N", 0, "context length; longer documents are read in sliding windows", "the model's context"},
    {"--stride", "N", 0, "step between sliding windows", "ctx/2"},
    {"--threads", "N", 0, "worker threads (1..1024)", "all cores"},
    {"--pipeline", "P", 0, "shared with ppl (MPI build); moefy runs in one process, so only 1 is accepted", "1"},
    {"--tokenizer", "PATH", 0, "tokenizer for \"text\" and \"prompt\"/\"response\" rows", "the model's own"},
    {"--hidden-act", "NAME", 0, "FFN activation of a GGUF model (llama.cpp's files do not store it)",
     "config.json beside the file, else its neuronlab.hidden_act, else silu"},
    {"--compute", "f32|bf16", 0, "number format of the calibration forward pass's matrix products (bf16: approximate)", "f32"},
    {NULL, NULL, 0, NULL, NULL}};
const nl_command nl_cmd_moefy = {"moefy", NULL,
                                 "MoEfication: split each FFN into E experts from calibration data (param or coact split, optional "
                                 "shared expert, sim or trained mlp router) and write MOE_DIR for ppl --moe",
                                 run};

static int run(nl_ctx *ctx, int argc, char **argv) {
    nl_cli_run r = {0};
    nl_moefy_opts o;
    nl_moefy_opts_init(&o);
    const char *outp = NULL, *layers_s = NULL, *v;
    long E = 0, N = 0, iters = o.kmeans_iters, restarts = o.kmeans_restarts, repochs = o.mlp.epochs, rk = 0;
    long rtok = (long)o.mlp_max_tokens;
    int router_opt = 0;
    int force = 0, have_e = 0, k;
    for (int i = 1; i < argc; i++) {
        if ((k = nl_cli_run_arg(&nl_cmd_moefy, &r, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if ((k = nl_cli_opt(argc, argv, &i, "--experts", &v))) {
            if (k < 0 || !nl_cli_int(v, -(1L << 30), 1L << 30, &E)) return nl_cli_usage(&nl_cmd_moefy, "--experts needs a number of experts");
            have_e = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "-o", &v)) || (k = nl_cli_opt(argc, argv, &i, "--output", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_moefy, "-o needs the MoE folder to write");
            outp = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--split", &v))) {
            if (k < 0 || nl_moe_split_parse(v) < 0) return nl_cli_usage(&nl_cmd_moefy, "--split must be param or coact");
            o.split = nl_moe_split_parse(v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--feature", &v))) {
            if (k < 0 || nl_moe_feature_parse(v) < 0) return nl_cli_usage(&nl_cmd_moefy, "--feature must be both, gate or up");
            o.feature = nl_moe_feature_parse(v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router", &v))) {
            if (k < 0 || (strcmp(v, "sim") && strcmp(v, "mlp")))
                return nl_cli_usage(&nl_cmd_moefy, "--router must be sim or mlp (the oracle needs no weights)");
            o.router = nl_moe_router_parse(v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router-epochs", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 100000, &repochs)) return nl_cli_usage(&nl_cmd_moefy, "--router-epochs needs an integer in 0..100000");
            router_opt = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router-lr", &v))) {
            if (k < 0 || !nl_cli_double(v, &o.mlp.lr) || !(o.mlp.lr > 0 && o.mlp.lr <= 10))
                return nl_cli_usage(&nl_cmd_moefy, "--router-lr needs a learning rate in (0, 10]");
            router_opt = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router-tokens", &v))) {
            if (k < 0 || !nl_cli_int(v, 2, 1L << 30, &rtok)) return nl_cli_usage(&nl_cmd_moefy, "--router-tokens needs an integer of at least 2");
            router_opt = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router-fill", &v))) {
            if (k < 0 || nl_moe_fill_parse(v) < 0) return nl_cli_usage(&nl_cmd_moefy, "--router-fill must be zero or mean");
            o.mlp_fill = nl_moe_fill_parse(v);
            router_opt = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--router-k", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 1L << 30, &rk)) return nl_cli_usage(&nl_cmd_moefy, "--router-k needs a number of experts (at least 1)");
            router_opt = 1;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--shared", &v))) {
            if (k < 0 || !nl_cli_int(v, 0, 1L << 30, &N)) return nl_cli_usage(&nl_cmd_moefy, "--shared needs a number of neurons (0 or more)");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--layers", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_moefy, "--layers needs a list like 0,2,5-7");
            layers_s = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--seed", &v))) {
            if (k < 0 || !nl_cli_u64(v, &o.seed)) return nl_cli_usage(&nl_cmd_moefy, "--seed needs an integer in 0..2^64-1");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--iters", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 100000, &iters)) return nl_cli_usage(&nl_cmd_moefy, "--iters needs an integer in 1..100000");
        } else if ((k = nl_cli_opt(argc, argv, &i, "--restarts", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, 1000, &restarts)) return nl_cli_usage(&nl_cmd_moefy, "--restarts needs an integer in 1..1000");
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else {
            return nl_cli_usage(&nl_cmd_moefy, "unknown option '%s'", argv[i]);
        }
    }
    if (nl_cli_run_check(&nl_cmd_moefy, &r)) return 2;
    if (!have_e) return nl_cli_usage(&nl_cmd_moefy, "missing --experts E");
    if (!outp) return nl_cli_usage(&nl_cmd_moefy, "missing -o MOE_DIR");
    if (router_opt && o.router != NL_MOE_ROUTER_MLP) return nl_cli_usage(&nl_cmd_moefy, "--router-* options need --router mlp");
    if (rk > 0 && have_e && rk > E) return nl_cli_usage(&nl_cmd_moefy, "--router-k %ld is above --experts %ld", rk, E);
    o.mlp.epochs = (int)repochs, o.mlp.K = (int)rk, o.mlp_max_tokens = rtok;
    o.E = (int)(E < -1 ? -1 : E), o.n_shared = (int)N, o.kmeans_iters = (int)iters, o.kmeans_restarts = (int)restarts;
    o.stride = (int)r.stride;
    int *layers = NULL;
    nl_moe *moe = NULL;
    nl_status st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK && layers_s) {
        const int L = nl_model_config(r.m)->n_layers;
        layers = malloc((size_t)L * sizeof(int));
        o.n_layers = layers ? nl_cli_layer_list(layers_s, L, layers) : -1;
        o.layers = layers;
        if (o.n_layers <= 0)
            st = nl_errorf(ctx, NL_EINVAL, "--layers '%s': expected a list like 0,2,5-7 of layers in 0..%d of '%s'", layers_s, L - 1, r.model);
    }
    if (st == NL_OK) {
        o.model_name = r.model, o.calib_name = r.data;
        st = nl_moefy_run(ctx, &o, r.f, r.ds, &moe);
    }
    if (st == NL_OK) st = nl_moe_save(ctx, moe, outp, force);
    if (st == NL_OK && nl_moe_get_info(moe)->has_mlp && ctx->progress) {
        const nl_moe_info *in = nl_moe_get_info(moe);
        fprintf(stderr, "router mlp: %d epochs, lr %g, batch %d, %.0f%% held out by token (seed %llu), targets from fill %s\n",
                in->mlp.epochs, in->mlp.lr, in->mlp.batch, 100 * in->mlp.holdout, (unsigned long long)in->seed,
                nl_moe_fill_name(in->mlp_fill));
        for (int i = 0; i < nl_moe_n_layers(moe); i++) {
            const nl_moe_layer *y = nl_moe_get_layer(moe, nl_moe_layer_index(moe, i));
            const nl_moe_mlp_report *q = &y->mlp;
            fprintf(stderr, "router layer %d: %lld+%lld tok, loss train %.5f held-out %.5f (initial %.5f), held-out recall K=%d sim %.4f mlp %.4f",
                    y->layer, (long long)q->n_train, (long long)q->n_held, q->train_loss, q->held_loss, q->init_held_loss, q->K25,
                    q->recall_sim25, q->recall_mlp25);
            if (q->K) fprintf(stderr, ", K=%d sim %.4f mlp %.4f", q->K, q->recall_sim_k, q->recall_mlp_k);
            fputc('\n', stderr);
        }
    }
    if (st == NL_OK) {
        const nl_moe_info *in = nl_moe_get_info(moe);
        printf("wrote %s: %d experts%s on %d of %d layers, split %s, routers sim%s, %lld calibration tokens\n", outp, in->E,
               in->n_shared ? " + a shared expert" : "", nl_moe_n_layers(moe), in->n_layers, nl_moe_split_name(in->split),
               in->has_mlp ? " + mlp" : "", (long long)in->calib_tokens);
    }
    nl_moe_close(moe);
    free(layers);
    nl_cli_run_close(&r);
    return nl_cli_finish(ctx, st, "interrupted: '%s' was not written", outp);
}
