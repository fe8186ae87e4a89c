/* hooks.h — hook points of the forward pass: observers and in-place interveners.
 *
 * Every hook receives a whole (T × width) tensor of one layer at one point, so an
 * observer or intervener costs one pass over memory per layer, never a call per neuron.
 * Order at a point: all interveners (registration order) run first and may modify x in
 * place; then all observers (registration order) see the final values. A hook that returns
 * a status other than NL_OK stops the forward pass with that status (its message in ctx).
 * Checked by tests/test_forward.c (hook identity, masking through an intervener).
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
    NL_HOOK_COUNT
} nl_hook_point;

const char *nl_hook_point_name(nl_hook_point p);

typedef enum { NL_HOOK_OBSERVE = 0, NL_HOOK_INTERVENE = 1 } nl_hook_kind;

typedef struct {
    nl_hook_point point;
    int layer;
    int T;                 /* rows of x */
    int width;             /* columns of x */
    int pos0;              /* sequence position of row 0 */
    const int32_t *tokens; /* (T) token ids of the rows */
} nl_hook_info;

/* x: (T, width) row-major. Observers must not write to it. */
typedef nl_status (*nl_hook_fn)(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x);

#define NL_MAX_HOOKS 32

typedef struct {
    nl_hook_point point;
    int layer; /* -1 = every layer */
    nl_hook_kind kind;
    nl_hook_fn fn;
    void *user;
} nl_hook;

/* Caller-owned registry (embed it, zero it with nl_hooks_init). */
typedef struct {
    nl_hook hooks[NL_MAX_HOOKS];
    int n;
} nl_hooks;

void nl_hooks_init(nl_hooks *h);
/* Returns NL_EINVAL when full. user is borrowed and must outlive the forward runs. */
nl_status nl_hooks_add(nl_hooks *h, nl_hook_point p, int layer, nl_hook_kind kind, nl_hook_fn fn,
                       void *user);
/* 1 when any hook wants point p at layer l (lets the forward pass skip work). */
int nl_hooks_wants(const nl_hooks *h, nl_hook_point p, int layer);
/* Runs interveners then observers for (p, info->layer). */
nl_status nl_hooks_fire(const nl_hooks *h, nl_ctx *ctx, const nl_hook_info *info, float *x);

#endif
