/* hooks.h — hook points of the forward pass: observers and in-place interveners.
 *
 * Every hook receives a whole (T × width) tensor of one layer at one point, so an
 * observer or intervener costs one pass over memory per layer, never a call per neuron.
 * Order at a point: all interveners (registration order) run first and may modify x in
 * place; then all observers (registration order) see the final values. A hook that returns
 * a status other than NL_OK stops the forward pass with that status (its message in ctx).
 *
 * Registration and removal: nl_hooks_add_id gives each hook a handle (nl_hook_id, unique for
 * the life of the registry, never reused), nl_hooks_remove takes exactly that hook out and
 * keeps the registration order of the others. The registry stays compact (hooks[0..n) are the
 * live hooks in registration order), so code that removes everything added after a point by
 * truncating n still works; new code should remove by handle.
 *
 * Threads: the registry is not locked. Add and remove hooks only between forward runs, on the
 * thread that owns the forward state, never from inside a hook or a replaced FFN. Hooks run on
 * the thread that called nl_forward_run (they may use OpenMP/BLAS inside).
 *
 * Replaced FFNs (forward.h, nl_forward_set_ffn): the forward pass itself fires NL_HOOK_FFN_IN
 * before calling the layer's FFN and NL_HOOK_FFN_OUT on its result, whatever the FFN is. The
 * inner points (FFN_PRE, FFN_UP, FFN_ACT) are fired by the dense FFN (nl_ffn_dense); a
 * replacement fires them only if it chooses to (nl_ffn_fire), so an analysis that needs the
 * full (T, F) activation must check that the layer's FFN is dense (nl_forward_get_ffn).
 *
 * Mixture-of-experts layers (model.h n_experts > 0, nl_config_is_moe_layer): FFN_IN (the
 * router's input) and FFN_OUT (the whole block's output: weighted routed experts + gated shared
 * expert) fire as on every layer; FFN_PRE, FFN_UP and FFN_ACT are NOT fired, because there is
 * no single (T, F) activation — each token has k experts of width d_expert. Analyses of dense
 * neurons (sparsity, perturb, prune) therefore refuse MoE layers: nl_model_w_out_norm
 * fails with NL_EUNSUPPORTED naming the layer. Dense layers of an MoE model (Qwen-MoE
 * mlp_only_layers / decoder_sparse_step) fire every point as usual. Instead, MoE layers fire:
 *   ROUTER_LOGITS (T, E)  the router logits z = x·W_routerᵀ before the softmax. Interveners may
 *                         edit them (setting z[t, e] = -INFINITY removes expert e for token t:
 *                         the token takes its next-best expert; `prune --experts` does this);
 *                         the routing is computed from the edited values.
 *   ROUTING              the selection, after the block has computed: x = the routing weights
 *                         (T, k), width = k, and info->moe (nl_moe_routing below) holds every
 *                         part of the selection. Observers only: x and info->moe are read-only,
 *                         an intervener's changes to x have no effect on the output.
 * MoEfied layers (src/moe/moe_ffn.c, `--moe DIR`) fire ROUTING too, with the one observer API:
 * there info->moe->experts holds the K selected experts of each token in ascending order,
 * weights / probs / logits / expert_act / shared_* are NULL (every selected expert counts fully;
 * the effective activations are on FFN_ACT), and x is NULL. They do not fire ROUTER_LOGITS.
 * Cost: the MoE block asks nl_hooks_wants once per call; with no ROUTING observer it copies
 * nothing and its work is exactly what it was (no expert-activation buffer is touched).
 *
 * Every point is fired only when a hook wants it (nl_hooks_wants, one scan of the registry), so
 * a point nobody observes costs nothing; ATTN_IN, ATTN_PROBS and ATTN_PRE_O fire on every layer, MoE or not.
 *
 * Checked by tests/test_forward.c (hook identity, masking through an intervener, FFN input,
 * removal by handle) and tests/test_lens.c (ATTN_PROBS: rows sum to 1, equal PyTorch in chunks of
 * any batch size, observing leaves the logits bit for bit, an intervener's edit changes them).
 */
#ifndef NEURONLAB_HOOKS_H
#define NEURONLAB_HOOKS_H

#include "neuronlab/common.h"

typedef enum {
    NL_HOOK_FFN_PRE = 0, /* (T, F) gated: x·W_gate before act; plain: x·W_in + b_in before act */
    NL_HOOK_FFN_UP,      /* (T, F) gated only: x·W_up */
    NL_HOOK_FFN_ACT,     /* (T, F) the neuron activation a, input of the down projection */
    NL_HOOK_FFN_OUT,     /* (T, D) FFN output a·W_outᵀ (+ b_out) */
    NL_HOOK_ATTN_OUT,    /* (T, D) attention output after the output projection */
    NL_HOOK_RESID,       /* (T, D) residual stream after the block */
    NL_HOOK_FFN_IN,      /* (T, D) normalised FFN input x (what a router reads), before the gate/up
                          * projections; an intervener's changes are what the FFN computes on
                          * (edited in place; with a shared norm (Phi) attention has already
                          * read this buffer, so only the FFN sees the change) */
    NL_HOOK_ROUTER_LOGITS, /* (T, E) MoE layers: router logits before the softmax (see above) */
    NL_HOOK_ROUTING,       /* (T, k) MoE and MoEfied layers: routing weights, and info->moe */
    NL_HOOK_ATTN_IN,       /* (T, D) normalised attention input, what W_q/W_k/W_v (or the fused W_qkv)
                            * read; an intervener's changes are what q, k and v are computed from
                            * (with a shared norm (Phi) the FFN reads the same buffer after them) */
    NL_HOOK_ATTN_PRE_O,    /* (T, H·Dh) attention heads' outputs concatenated (head h in columns
                            * h·Dh … h·Dh+Dh-1), the input of the output projection W_o; an
                            * intervener's changes (e.g. zeroing a head) are what W_o projects */
    NL_HOOK_ATTN_PROBS,    /* (H, T, P) attention probabilities of every head: x[(h·T + t)·P + j] =
                            * softmax weight of query row t (position pos0 + t) on key position j,
                            * P = pos0 + T keys of the cache, 0 for j > pos0 + t and outside a sliding
                            * window; each row sums to 1. info->heads = H, width = P. Interveners'
                            * changes are what the values are mixed with (attention knockout). The
                            * (H, T, P) buffer is allocated at the first call that wants it. */
    NL_HOOK_COUNT
} nl_hook_point;

const char *nl_hook_point_name(nl_hook_point p);

typedef enum { NL_HOOK_OBSERVE = 0, NL_HOOK_INTERVENE = 1 } nl_hook_kind;

/* The routing of T tokens through one mixture-of-experts layer (NL_HOOK_ROUTING). Pointers are
 * borrowed for the duration of the hook call; rows are the call's T tokens in order. */
typedef struct {
    int E;                    /* routed experts of the layer */
    int k;                    /* experts chosen per token (columns of experts / weights) */
    const int32_t *experts;   /* (T, k) chosen experts: native MoE in torch.topk order (largest
                               * probability first, ties as nl_moe_topk); MoEfied ascending ids */
    const float *weights;     /* (T, k) weight of each chosen expert in the output: p, divided by the
                               * sum of the k when the config renormalises; NULL on MoEfied layers */
    const float *logits;      /* (T, E) router logits (after ROUTER_LOGITS interveners); NULL MoEfied */
    const float *probs;       /* (T, E) softmax of logits; NULL on MoEfied layers */
    int d_expert;             /* width of one routed expert (native); 0 on MoEfied layers */
    const float *expert_act;  /* (T, k, d_expert) slot j of token t = the neuron activations
                               * act(x·W_gateᵀ) ⊙ (x·W_upᵀ) of expert experts[t, j]; NULL MoEfied */
    int d_shared;             /* width of the shared expert, 0 when the layer has none */
    const float *shared_act;  /* (T, d_shared) shared expert's activations, NULL when none */
    const float *shared_gate; /* (T) sigmoid(x·w_shared_gate), NULL when none */
} nl_moe_routing;

typedef struct {
    nl_hook_point point;
    int layer;
    int T;                 /* rows of x */
    int width;             /* columns of x */
    int pos0;              /* sequence position of row 0 */
    const int32_t *tokens; /* (T) token ids of the rows */
    const nl_moe_routing *moe; /* NL_HOOK_ROUTING only: the selection; NULL at every other point */
    int heads;             /* NL_HOOK_ATTN_PROBS: attention heads H (x holds H blocks of T rows); 0 elsewhere */
} nl_hook_info;

/* x: (T, width) row-major. Observers must not write to it. */
typedef nl_status (*nl_hook_fn)(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x);

#define NL_MAX_HOOKS 32

/* Handle of a registered hook: ≥ 1, unique within its registry (ids are never reused). */
typedef int nl_hook_id;

typedef struct {
    nl_hook_point point;
    int layer; /* -1 = every layer */
    nl_hook_kind kind;
    nl_hook_fn fn;
    void *user;
    nl_hook_id id;
} nl_hook;

/* Caller-owned registry (embed it, zero it with nl_hooks_init). hooks[0..n) are the live hooks
 * in registration order; read n, but change the registry only through the functions below. */
typedef struct {
    nl_hook hooks[NL_MAX_HOOKS];
    int n;
    nl_hook_id last_id; /* id given to the most recent registration */
} nl_hooks;

void nl_hooks_init(nl_hooks *h);
/* Registers a hook after the existing ones. Returns NL_EINVAL when NL_MAX_HOOKS are live (no
 * message: the registry has no context). user is borrowed and must outlive the forward runs
 * (or the hook's removal). */
nl_status nl_hooks_add(nl_hooks *h, nl_hook_point p, int layer, nl_hook_kind kind, nl_hook_fn fn,
                       void *user);
/* Same, and *id (not NULL) receives the hook's handle for nl_hooks_remove; *id = 0 on failure. */
nl_status nl_hooks_add_id(nl_hooks *h, nl_hook_point p, int layer, nl_hook_kind kind, nl_hook_fn fn,
                          void *user, nl_hook_id *id);
/* Removes the hook with this handle; the others keep their order and handles, and the freed
 * slot can be reused by the next add. Returns NL_EINVAL and changes nothing when no live hook
 * has this id (never registered, 0, or already removed), so a second removal is harmless. */
nl_status nl_hooks_remove(nl_hooks *h, nl_hook_id id);
/* 1 when any hook wants point p at layer l (lets the forward pass skip work). */
int nl_hooks_wants(const nl_hooks *h, nl_hook_point p, int layer);
/* Runs interveners then observers for (p, info->layer). */
nl_status nl_hooks_fire(const nl_hooks *h, nl_ctx *ctx, const nl_hook_info *info, float *x);

#endif
