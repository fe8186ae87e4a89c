/* experts.h — expert analyses of a native mixture-of-experts model (DESIGN §10, issue 13 item 3):
 * how the router spreads each ability's tokens over the experts. `neuronlab experts MODEL
 * DATA.jsonl --db results.db` (src/cli/cmd_experts.c) drives it: it runs the model over the
 * dataset itself (an NL_HOOK_ROUTING observer, hooks.h), so no activation file is needed.
 *
 * Definitions (MoE layer l with E experts, k chosen per token; each token of a document counts
 * once, from the first window in which it is new, as `record` and `ppl` count it):
 *   p(t)          softmax of the router logits of token t (E values); S(t) its k chosen experts,
 *                 w_e(t) their weights in the block's output (0 for e ∉ S(t)).
 *   load          per (layer, expert, label): tokens = #{t of the label : e ∈ S(t)},
 *                 token_frac = tokens / #tokens of the label (Σ_e token_frac = k),
 *                 weight_sum = Σ_t w_e(t), weight_frac = weight_sum / Σ_e weight_sum (Σ_e = 1).
 *                 label "*" = every token. The shared expert (Qwen2-MoE) is expert -1: tokens =
 *                 all tokens of the label, weight_sum = Σ_t sigmoid(x·w_shared_gate), and
 *                 weight_frac = its mean gate.
 *   routing       per (layer, label): entropy = mean over tokens of −Σ_e p_e ln p_e (nats; ln E is
 *                 the uniform maximum), margin = mean of p_(1) − p_(2) (top-1 minus second).
 *   co-selection  per layer, tokens choosing both a and b (a < b), and a alone on the diagonal
 *                 (a = b: tokens choosing a); zero counts are not stored.
 *   ability       v_e(d) = mean of w_e(t) over document d's prompt tokens; AP of v_e against
 *                 y_f(d) = [label(d) = f] with nl_ability_ap (ability.h: ties as one step),
 *                 baseline = the positive rate, shuffled_ap = the same AP against the labels
 *                 permuted by a seeded Fisher–Yates shuffle (nl_rng_permutation, --seed): what an
 *                 expert reaches by chance. Abilities = distinct non-empty labels with at least one
 *                 document with and one without it; unlabelled documents take no part.
 * Tables (keyed by the run, results.h):
 *   expert_load(run_id, layer, expert, label, tokens, token_frac, weight_sum, weight_frac)
 *   expert_routing(run_id, layer, label, tokens, entropy, entropy_max, margin)
 *   expert_coselect(run_id, layer, expert_a, expert_b, tokens)
 *   expert_ability(run_id, ability, layer, expert, ap, baseline, shuffled_ap)
 * Checked by tests/test_moe_models.c (the tables against a brute-force recomputation from the
 * ROUTING hook's data on the fixtures) and tests/moe_models_cli.sh (the command).
 */
#ifndef NEURONLAB_ANALYSES_EXPERTS_H
#define NEURONLAB_ANALYSES_EXPERTS_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

typedef struct {
    uint64_t seed; /* the shuffled-label baseline */
    int stride;    /* windows as nl_forward_doc; ≤ 0 = context / 2 */
} nl_experts_opts;

/* Creates the four tables when missing (idempotent). */
nl_status nl_experts_create_tables(nl_ctx *ctx, nl_results *db);

/* Runs ds through f (the model must have mixture-of-experts layers, else NL_EINVAL) and writes
 * the tables above for run_id (already begun by the caller) in one transaction. f gets one
 * observer for the duration of the call. progress may be NULL. */
nl_status nl_experts_run(nl_ctx *ctx, const nl_experts_opts *o, nl_forward *f, const nl_dataset *ds, nl_results *db,
                         int64_t run_id, nl_progress *progress);



/* ---- removing experts (`neuronlab prune --experts`) --------------------------------------------
 *
 * Definition. Removing routed expert e of layer l: its router logit is set to −∞ before the
 * softmax (a ROUTER_LOGITS intervener, hooks.h), for every token. The softmax then runs over the
 * remaining E−1 experts, every token takes its k best remaining experts (a token that had chosen e
 * takes its next-best expert), and their weights are renormalised when the model renormalises
 * (Mixtral, norm_topk_prob) — exactly the model whose router never had row e. Removing the shared
 * expert of layer l (Qwen2-MoE): its gated output sigmoid(x·w_shared_gate)·FFN_shared(x) is
 * subtracted from the block's output (FFN_IN observer + FFN_OUT intervener; equal to the block
 * without it up to float rounding, ~1e-7 relative).
 * Sets. Each removal set is one row: one expert ("1:3"), one shared expert ("1:shared"), or a
 * group (an ability's top experts, named "top:ABILITY"). Random control: for a set with c_l routed
 * experts in layer l, seed s = 0 … S−1 draws c_l experts of layer l uniformly without repetition
 * (seeded Fisher–Yates over the E experts: nl_rng_derive(seed, s, l)); sets with the same counts
 * share their random passes. Shared-expert rows have no random control.
 * Metric as prune.h: per evaluated label (the dataset's non-empty labels, then '' = all), ppl and
 * rel_change = (ppl − ppl_base) / ppl_base.
 * Table:
 *   expert_prune(run_id, removed TEXT ('' base), control TEXT ('none' | 'expert' | 'shared' |
 *       'random'), seed INTEGER (-1 unless random), label TEXT, experts INTEGER (routed experts
 *       removed + shared experts removed), tokens INTEGER, nll REAL, ppl REAL, rel_change REAL,
 *       PRIMARY KEY (run_id, removed, control, seed, label))
 */
typedef struct {
    const char *name;   /* "1:3", "1:shared", "top:code" */
    int n;              /* entries */
    const int *layer;   /* (n) model layers (MoE layers) */
    const int *expert;  /* (n) expert ids, -1 = the layer's shared expert */
} nl_expert_set;

typedef struct {
    int n_sets;
    const nl_expert_set *sets;
    int seeds;      /* random control passes per count vector (≥ 0) */
    uint64_t seed;  /* base seed of the random sets */
    int stride;
} nl_expert_prune_opts;

/* The sets of "every expert in turn" of the model (each routed expert of each MoE layer, then the
 * layer's shared expert when it has one), into *sets (n) with their storage in *store: both
 * caller-owned (free *sets, *store). */
nl_status nl_expert_sets_all(nl_ctx *ctx, const nl_config *c, nl_expert_set **sets, int *n, int **store, char **names);

/* Runs the base pass and one pass per set plus the random passes, writing expert_prune rows of
 * run_id (each pass committed at once). The sets' layers must be MoE layers of f's model. */
nl_status nl_expert_prune_run(nl_ctx *ctx, const nl_expert_prune_opts *o, nl_forward *f, const nl_dataset *ds,
                              nl_results *db, int64_t run_id, nl_progress *progress);
#endif
