/* moe.h — MoEfication and G-MoEfication of a dense model's FFNs: expert splits, the expert
 * folder (MOE_DIR), and the expert FFN that computes only the experts a router selects.
 *
 * Definitions (DESIGN.md §3, §9; README "MoEfication"):
 *   Experts of a layer: a permutation of its F neurons. Positions [0, N) are the shared expert
 *   (always computed): the N neurons most often active on the calibration tokens (ties: the
 *   lower index). Positions [N, F) are E routed experts of equal size (sizes differ by at most
 *   one); expert e is positions [offset[e], offset[e+1]). Experts are numbered by their lowest
 *   neuron, and inside each part neurons are in ascending original index.
 *   Active: neuron i is active on a token when |a_i − μ_i| is among the ⌈F/10⌉ largest of the
 *   layer on that token (ties: the lower index). μ_i = mean activation over the calibration
 *   tokens, so telling active neurons needs μ first: moefy makes a second pass over the
 *   calibration tokens when the co-activation split or a shared expert asks for it.
 *   Representative value r_i: 0 for fill zero, μ_i for fill mean.
 *   Static vectors (fill mean): m_e = Σ_{i∈e} μ_i·W_out[:, i], M = Σ_e m_e over the routed
 *   experts; a token with selected set S gets M − Σ_{e∈S} m_e (K vector subtractions).
 *   Oracle score: s_e = Σ_{i∈e} ((a_i − r_i)·‖W_out[:, i]‖)²; the oracle router takes the top K.
 *   Sim router: score_e = x·ĉ_e, ĉ_e the L2-normalised centroid of the expert's L2-normalised
 *   router feature rows (W_gate rows for gated FFNs unless --feature up, W_in rows for plain).
 *   MLP router (moefy --router mlp; the section "the MLP router" below): score = W2·tanh(W1·x̂),
 *   x̂ = x/‖x‖, trained on the calibration tokens' FFN inputs against their oracle scores (with
 *   the fill it was told, mean by default), W1 from ĉ, W2 from the identity.
 *   Top K: the K largest scores, ties to the lower expert index.
 *   Router recall on a token = Σ_{e∈S_router} s_e / Σ_{e∈S_oracle} s_e (1 when the oracle
 *   mass is 0); reported as the mean over tokens and MoE layers.
 *   FLOPs per token and layer (multiply-add = 2): dense gated 6·D·F, plain 4·D·F; MoE: the
 *   shared and the selected experts' neurons at the same rate per neuron, router 2·D·E (sim) or
 *   2·D·E + 2·E² (mlp; the normalisation of x is not counted), fill mean D·K; the oracle costs
 *   the dense FFN (it ranks the dense activations).
 *
 * Splits:
 *   param: balanced k-means on L2-normalised feature rows (gated: [gate row ; up row] by
 *     default, or gate / up alone; plain: W_in rows), squared Euclidean distance to the cluster
 *     means, k-means++ seeding from the seed, restarts keep the lowest objective. Each step
 *     assigns with exactly balanced capacities: points in decreasing order of regret (second
 *     best minus best cost) take their nearest cluster with room, then improving pair swaps
 *     between every two clusters until none is left; stops at convergence or after iters steps.
 *     The best restart then gets an exact swap refinement of the objective (kmeans.c).
 *   coact: graph of the routed neurons, edge weight = calibration tokens on which both are
 *     active; METIS_PartGraphKway (seeded, 3 % imbalance), then while a part is larger than its
 *     size, its neuron with the weakest tie to the part (sum of edge weights) moves to the
 *     undersized part it is most tied to (ties: lower index), then cut-lowering swaps. Memory: the counts of every MoE
 *     layer are held at once, F² floats per layer (counts are exact below 2^24 tokens): the zoo
 *     (F 688, 6 layers) needs 11 MB; above NL_MOE_COACT_MAX_BYTES moefy refuses and asks for
 *     --layers.
 *
 * MOE_DIR (written atomically: a temporary folder beside it renamed into place):
 *   manifest.json  {"format":"neuronlab.moe","version":1, "model", "ffn_checksum" (FNV-1a 64
 *                  of every layer's FFN weights in f32), "arch", "n_layers", "d_model", "d_ff",
 *                  "layers" [..], "experts", "shared", "split", "feature", "router" ("sim" or
 *                  "mlp": the best router it carries), "routers" (["sim"] or ["sim", "mlp"];
 *                  absent in folders written before the MLP router: sim only), "router_mlp"
 *                  (with mlp: {"epochs", "lr", "batch", "holdout", "split", "fill", "max_tokens",
 *                  "optimizer", "loss", "layers": [{"layer", "train_tokens", "heldout_tokens",
 *                  "initial_heldout_loss", "train_loss", "heldout_loss", "k25",
 *                  "heldout_recall_sim_k25", "heldout_recall_mlp_k25" [, "k",
 *                  "heldout_recall_sim_k", "heldout_recall_mlp_k"]}]}), "seed",
 *                  "kmeans_iters", "kmeans_restarts", "active_top", "calibration" {"path",
 *                  "checksum", "documents", "tokens"}, "tensors", "created_by"}
 *   experts.safetensors, per MoE layer l (all F32; integer tensors hold exact integers):
 *     layers.{l}.perm (F)  original neuron at each position    layers.{l}.offset (E+1)
 *     layers.{l}.mu (F)    μ by original neuron                layers.{l}.freq (F) active fraction
 *     layers.{l}.static (E, D) m_e                             layers.{l}.static_sum (D) M
 *     layers.{l}.router.sim (E, D) ĉ_e
 *     layers.{l}.router.mlp.w1 (E, D), layers.{l}.router.mlp.w2 (E, E)   only with "mlp" in routers
 *   The FFN weights are not copied: the expert FFN permutes them at load (nl_moe_ffn_create)
 *   into contiguous per-expert blocks, after checking the model's FFN checksum.
 *
 * Checked by tests/test_moe.c (k-means against exhaustive optima, METIS balance and
 * determinism, the kernel against brute force, K = E against the dense model, FLOPs, recall,
 * bad folders), tests/test_moe_router.c (the MLP router) and tests/moe_cli.sh.
 */
#ifndef NEURONLAB_MOE_H
#define NEURONLAB_MOE_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/model.h"
#include "neuronlab/progress.h"

#define NL_MOE_FORMAT "neuronlab.moe"
#define NL_MOE_VERSION 1
#define NL_MOE_ACTIVE_TOP 0.10                    /* fraction of a layer's neurons active per token */
#define NL_MOE_COACT_MAX_BYTES ((size_t)4 << 30) /* co-activation counts held by moefy */

typedef enum { NL_MOE_SPLIT_PARAM = 0, NL_MOE_SPLIT_COACT } nl_moe_split;
typedef enum { NL_MOE_FEATURE_BOTH = 0, NL_MOE_FEATURE_GATE, NL_MOE_FEATURE_UP } nl_moe_feature;
typedef enum { NL_MOE_ROUTER_SIM = 0, NL_MOE_ROUTER_ORACLE = 1, NL_MOE_ROUTER_MLP = 2 } nl_moe_router;
typedef enum { NL_MOE_FILL_ZERO = 0, NL_MOE_FILL_MEAN } nl_moe_fill;

const char *nl_moe_split_name(nl_moe_split s);     /* "param", "coact" */
const char *nl_moe_feature_name(nl_moe_feature f); /* "both", "gate", "up" */
const char *nl_moe_router_name(nl_moe_router r);   /* "sim", "oracle", "mlp" */
const char *nl_moe_fill_name(nl_moe_fill f);       /* "zero", "mean" */
/* Name → value; -1 when unknown. */
int nl_moe_split_parse(const char *s);
int nl_moe_feature_parse(const char *s);
int nl_moe_router_parse(const char *s);
int nl_moe_fill_parse(const char *s);

/* ---- splits (pure functions of their inputs) -------------------------------------------- */

/* sizes (E) of n items in E balanced parts: n/E each, the first n mod E one more. */
void nl_moe_part_sizes(int n, int E, int *sizes);

/* Balanced k-means of the rows of X (n, dim) (used as given: normalise before if wanted) into
 * E parts of n/E or n/E + 1 rows (exactly n mod E of the larger). assign (n) receives the part of each row. iters ≥ 1 steps
 * at most per restart, restarts ≥ 1; *objective (may be NULL) = Σ ‖x − mean of its part‖².
 * Deterministic for (X, seed, iters, restarts). NL_EINVAL when E < 1 or E > n. */
nl_status nl_moe_kmeans(nl_ctx *ctx, const float *X, int n, int dim, int E, uint64_t seed, int iters, int restarts,
                        int *assign, double *objective);
/* Σ over rows of ‖x − mean of its part‖² (the k-means objective), for tests and reports. */
double nl_moe_kmeans_objective(const float *X, int n, int dim, int E, const int *assign);

/* Balanced k-way partition of a weighted graph given as a dense symmetric matrix W (n, n)
 * (diagonal ignored, weights ≥ 0, rounded to integers for METIS) into E parts of
 * n/E or n/E + 1 neurons (METIS then rebalancing, see the file comment). assign (n).
 * Deterministic for (W, seed). NL_EINVAL when E < 1 or E > n. */
nl_status nl_moe_partition(nl_ctx *ctx, const float *W, int n, int E, uint64_t seed, int *assign);
/* Σ of W over pairs in different parts (the edge cut), for tests and reports. */
double nl_moe_edge_cut(const float *W, int n, const int *assign);

/* ---- the MLP router (router_mlp.c) ----------------------------------------------------------
 * score = W2·tanh(W1·x̂), x̂ = x/‖x‖₂ (a zero x stays zero), W1 (E, D), W2 (E, E), no bias.
 * Training (nl_moe_mlp_train): W1 starts at the sim router's ĉ rows, W2 at the identity (so the
 * untrained router ranks experts exactly as sim does). The n calibration tokens are shuffled
 * (seed) and the last round(holdout·n) (at least 1, at most n − 1) are held out. Each epoch
 * reshuffles the training tokens and takes minibatches of `batch` rows; a batch's targets are
 * y_te = s_te / max over the batch's (t, e) of s (all 0 when that max is 0), s the oracle
 * scores; the loss is BCE with logits averaged over the batch's B·E entries; one Adam step per
 * batch (β 0.9, 0.999, ε 1e-8, no weight decay: torch.optim.Adam's defaults). Computed in
 * double. Checked by tests/test_moe_router.c (finite differences, a PyTorch fixture
 * tests/fixtures/moe/router_mlp.json from tests/reference/gen_router_mlp.py, a learnable case). */
typedef struct {
    int epochs;       /* 30 */
    double lr;        /* 1e-2 */
    int batch;        /* 512 */
    double holdout;   /* 0.1 */
    uint64_t seed;    /* 0 */
    int K;            /* recall also reported at this K (0: only at K25) */
} nl_moe_mlp_opts;
void nl_moe_mlp_opts_init(nl_moe_mlp_opts *o);

/* What training measured (held-out = the held-out tokens). Losses are means over each split's
 * batches taken in order (targets normalised per batch as in training). */
typedef struct {
    int64_t n_train, n_held;
    double init_held_loss;           /* held-out loss of the initial (sim-equivalent) router */
    double train_loss, held_loss;    /* after the last epoch */
    int K25, K;                      /* K25 = max(1, round(E/4)); K as asked (0: none) */
    double recall_sim25, recall_mlp25, recall_sim_k, recall_mlp_k; /* held-out router recall */
} nl_moe_mlp_report;

/* Doubles of scratch that nl_moe_mlp_loss_grad needs for a batch of B. */
size_t nl_moe_mlp_work_size(int B, int D, int E);
/* Loss of one batch (the mean BCE described above) and, when g1/g2 are non-NULL, its gradients
 * g1 (E, D), g2 (E, E). X (B, D) raw FFN inputs (normalised here), S (B, E) oracle scores;
 * work: nl_moe_mlp_work_size doubles. */
double nl_moe_mlp_loss_grad(const double *W1, const double *W2, int D, int E, const float *X, const float *S, int B, double *g1,
                            double *g2, double *work);
/* One Adam step (torch.optim.Adam defaults, bias-corrected, t ≥ 1 the step number) on n weights. */
void nl_moe_adam_step(double *w, const double *g, double *m, double *v, size_t n, double lr, int64_t t);
/* Scores z (n, E) of the router (W1, W2 as float, like the folder) on X (n, D). */
void nl_moe_mlp_scores(const float *W1, const float *W2, int D, int E, const float *X, int n, float *z);
/* Mean over the n tokens of the router recall of scores z (n, E) against oracle scores s (n, E)
 * at K (top K ties to the lower index; a token with oracle mass 0 counts 1). */
double nl_moe_recall(const float *z, const float *s, int n, int E, int K);
/* Trains the router of one layer on X (n, D), S (n, E) from sim (E, D) into W1 (E, D), W2 (E, E)
 * and fills *rep. NL_EINVAL when n < 2 or an option is out of range; NL_EINTR. Progress on
 * stderr as "router L" when ctx->progress (what names the layer). */
nl_status nl_moe_mlp_train(nl_ctx *ctx, const nl_moe_mlp_opts *o, int D, int E, int64_t n, const float *X, const float *S,
                           const float *sim, const char *what, float *W1, float *W2, nl_moe_mlp_report *rep);

/* ---- expert maps ------------------------------------------------------------------------- */

/* One MoE layer, as built by moefy and read back from MOE_DIR. Arrays owned by the nl_moe. */
typedef struct {
    int layer;
    int32_t *perm;     /* (F) original neuron at each position */
    int32_t *offset;   /* (E+1) expert e = positions [offset[e], offset[e+1]); offset[0] = N, offset[E] = F */
    float *mu;         /* (F) μ by original neuron */
    float *freq;       /* (F) fraction of calibration tokens on which the neuron is active (0 when not measured) */
    float *stat;       /* (E, D) m_e */
    float *stat_sum;   /* (D) M */
    float *router_sim; /* (E, D) ĉ_e */
    float *mlp_w1;     /* (E, D) MLP router first layer, or NULL when the folder has no mlp router */
    float *mlp_w2;     /* (E, E) MLP router second layer, or NULL */
    nl_moe_mlp_report mlp; /* its training (zeros when absent or not stored) */
} nl_moe_layer;

/* What a folder says about itself (the manifest). Strings owned by the nl_moe. */
typedef struct {
    int E, n_shared;
    nl_moe_split split;
    nl_moe_feature feature;
    nl_moe_router router;   /* the trained router the folder carries: sim, or mlp (then sim too) */
    int has_mlp;            /* 1: every MoE layer has mlp_w1/mlp_w2 */
    nl_moe_mlp_opts mlp;    /* how they were trained (when has_mlp) */
    nl_moe_fill mlp_fill;   /* the fill of the oracle scores the mlp router learned (mean) */
    int64_t mlp_max_tokens; /* calibration tokens per layer kept for training at most */
    uint64_t seed;
    int kmeans_iters, kmeans_restarts;
    int n_layers, d_model, d_ff; /* of the base model */
    char *model;             /* base model path as given to moefy */
    uint64_t ffn_checksum;
    char *calib_path;
    uint64_t calib_checksum;
    int64_t calib_docs, calib_tokens;
    char *created_by;
} nl_moe_info;

typedef struct nl_moe nl_moe;

/* Options of moefy; nl_moefy_opts_init sets the defaults noted. Pointers borrowed. */
typedef struct {
    int E;                  /* ≥ 1 (no default: 0 is refused) */
    int n_shared;           /* 0 */
    nl_moe_split split;     /* param */
    nl_moe_feature feature; /* both */
    uint64_t seed;          /* 0 */
    int kmeans_iters;       /* 30 */
    int kmeans_restarts;    /* 4 */
    const int *layers;      /* the layers to MoEfy, ascending; NULL = every layer */
    int n_layers;
    int stride;             /* sliding-window stride of the calibration walk (0 = ctx/2) */
    const char *model_name, *calib_name; /* provenance in the manifest (NULL: the paths) */
    nl_moe_router router;   /* sim; mlp also trains the MLP router (the folder then has both) */
    nl_moe_mlp_opts mlp;    /* nl_moe_mlp_opts_init defaults; mlp.seed is set from seed */
    nl_moe_fill mlp_fill;   /* mean: the fill of the oracle scores the router learns */
    int64_t mlp_max_tokens; /* 65536: calibration tokens kept per layer for training (evenly spaced) */
} nl_moefy_opts;
void nl_moefy_opts_init(nl_moefy_opts *o);

/* Runs the calibration passes of f (over its model; its MoE layers must run the dense FFN)
 * on calib and builds every MoE layer (router mlp: one more pass keeps min(tokens,
 * mlp_max_tokens) evenly spaced tokens' FFN inputs and oracle scores per layer — memory
 * kept·(D + E) floats per MoE layer — and trains each layer's MLP router on them); *out owns the result (nl_moe_close). Progress of the
 * passes, the splits and the router training on stderr when ctx->progress. Errors: E outside [1, F − N], N
 * outside [0, F), fewer calibration tokens than 4·E (naming the calibration file), a layer out
 * of range, co-activation counts beyond NL_MOE_COACT_MAX_BYTES, NL_EINTR. */
nl_status nl_moefy_run(nl_ctx *ctx, const nl_moefy_opts *o, nl_forward *f, const nl_dataset *calib, nl_moe **out);

/* Writes dir (manifest.json + experts.safetensors) atomically; an existing dir is refused
 * unless force (then replaced as a whole). */
nl_status nl_moe_save(nl_ctx *ctx, const nl_moe *moe, const char *dir, int force);

/* Reads dir and checks it against m: format and version, shapes, every tensor (permutations,
 * offsets of balanced experts, finite values) and the FFN checksum of m. Messages name the
 * file (manifest.json or experts.safetensors) and the problem. *out owned (nl_moe_close). */
nl_status nl_moe_open(nl_ctx *ctx, const char *dir, nl_model *m, nl_moe **out);
void nl_moe_close(nl_moe *moe); /* NULL is a no-op */

const nl_moe_info *nl_moe_get_info(const nl_moe *moe);
/* The MoE layer of model layer l, or NULL when l is dense in this folder. */
const nl_moe_layer *nl_moe_get_layer(const nl_moe *moe, int l);
/* Layers with experts, ascending: count and the i-th. */
int nl_moe_n_layers(const nl_moe *moe);
int nl_moe_layer_index(const nl_moe *moe, int i);

/* FNV-1a 64 over every layer's FFN weights in f32 (gate, up/in, its bias, down, its bias; rows
 * in the logical (n_out, n_in) order whatever the storage), the checksum of the manifest. */
nl_status nl_moe_ffn_checksum(nl_ctx *ctx, nl_model *m, uint64_t *out);

/* ---- FLOPs -------------------------------------------------------------------------------- */

/* Analytic FLOPs per token of one FFN layer (a multiply-add = 2): dense when E == 0; else the
 * MoE layer with n_shared shared neurons, K of E experts over F − n_shared routed neurons
 * (K·(F − N)/E neurons on average), router and fill as in the file comment. */
double nl_moe_flops_dense(const nl_config *c);
double nl_moe_flops_layer(const nl_config *c, int E, int n_shared, int K, nl_moe_router r, nl_moe_fill fill);

/* ---- the expert FFN ----------------------------------------------------------------------- */

typedef struct {
    int K;               /* experts per token, 1 ≤ K ≤ E */
    nl_moe_fill fill;    /* zero */
    nl_moe_router router;/* sim */
    int recall;          /* 1: also compute the dense activations to measure router recall (costs the dense FFN) */
} nl_moe_ffn_opts;

/* Accumulated over calls (nl_moe_ffn_stats); reset with nl_moe_ffn_reset_stats. */
typedef struct {
    int64_t tokens;      /* token × MoE layer rows seen */
    double recall_sum;   /* Σ recall over those rows (when opts.recall or router oracle) */
    int64_t recall_n;
    double flops;        /* FLOPs done by the MoE layers (counted from the selections) */
} nl_moe_ffn_stats;

typedef struct nl_moe_ffn nl_moe_ffn;

/* Builds the permuted f32 weights of every MoE layer of moe (m must be the model moe was
 * opened against; memory: 3·F·D floats per MoE layer) and scratch for max_T tokens per call.
 * NL_EINVAL for K outside [1, E]. *out owned: nl_moe_ffn_destroy (after detaching). */
nl_status nl_moe_ffn_create(nl_ctx *ctx, const nl_moe *moe, nl_model *m, const nl_moe_ffn_opts *o, int max_T,
                            nl_moe_ffn **out);
void nl_moe_ffn_destroy(nl_moe_ffn *x); /* NULL is a no-op */
/* Installs the expert FFN on every MoE layer of f (nl_forward_set_ffn); other layers stay
 * dense. x is borrowed by f until nl_moe_ffn_detach or f's destruction. */
nl_status nl_moe_ffn_attach(nl_moe_ffn *x, nl_ctx *ctx, nl_forward *f);
void nl_moe_ffn_detach(nl_moe_ffn *x, nl_forward *f);
/* The nl_ffn_fn installed by attach (user = the nl_moe_ffn), for tests that call it directly. */
nl_status nl_moe_ffn_fn(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out);
nl_moe_ffn_stats nl_moe_ffn_get_stats(const nl_moe_ffn *x);
void nl_moe_ffn_reset_stats(nl_moe_ffn *x);
/* Selections of the last call on layer l: (T, K) expert ids, ascending per token; *T gets the
 * call's token count. NULL when layer l has not been called. Borrowed until the next call. */
const int32_t *nl_moe_ffn_last_selection(const nl_moe_ffn *x, int l, int *T);
/* Forces the batched (grouped by expert) path even for T = 1 (1) or the default choice (0):
 * batch-1 calls gather the selected experts' blocks, larger calls group tokens by expert. */
void nl_moe_ffn_force_grouped(nl_moe_ffn *x, int on);

#endif
