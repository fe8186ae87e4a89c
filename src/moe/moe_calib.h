/* moe_calib.h — calibration statistics of moefy (private to src/moe; calib.c). */
#ifndef NEURONLAB_MOE_CALIB_H
#define NEURONLAB_MOE_CALIB_H

#include "neuronlab/moe.h"

typedef struct {
    int F, n_layers, ktop;
    int *index_of;   /* (L) position among the MoE layers, -1 elsewhere */
    int pass, skip;  /* current pass (1: μ, 2: activity); rows of the current call already counted */
    int64_t n_tokens;/* tokens counted (pass 1) */
    double *sum;     /* (n_layers, F) Σ a */
    float *mu;       /* (n_layers, F) μ after pass 1 */
    int64_t *freq;   /* (n_layers, F) tokens on which each neuron is active (pass 2) */
    float *coact;    /* (n_layers, F, F) tokens on which both are active (pass 2, coact only) or NULL */
    float *B;        /* (max_T, F) scratch: active indicators */
    float *tmp;      /* (F) scratch */
    int max_T;
    int64_t tok;     /* tokens of the current pass counted before the current call */
    /* pass 3 (MLP router data; nl_moe_calib_router_init): per MoE layer, the FFN input x and
     * the oracle scores s_e (moe.h, with r) of `keep` tokens evenly spaced over the pass:
     * token g (0-based, each token once) is kept when ⌊(g+1)·keep/n⌋ > ⌊g·keep/n⌋. */
    int D, E;
    int64_t keep;
    const nl_moe *moe; /* experts (perm, offset) of each MoE layer, in the order of the layers */
    float *r;        /* (n_layers, F) representative value by original neuron */
    float *wn;       /* (n_layers, F) ‖W_out[:, i]‖ by original neuron */
    float *rx;       /* (n_layers, keep, D) */
    float *rs;       /* (n_layers, keep, E) */
    float *xin;      /* (max_T, D) the current call's FFN input */
    int xin_layer;   /* layer of xin, -1 when none */
} nl_moe_calib;

nl_status nl_moe_calib_init(nl_ctx *ctx, nl_moe_calib *c, int L, int F, const int *layers, int n_layers, int max_T,
                            int want_coact);
void nl_moe_calib_release(nl_moe_calib *c);
/* Prepares pass 3: keeps min(n_tokens of pass 1, max_tokens) tokens per layer of moe (built
 * from this calibration), scores with the representative values of fill. */
nl_status nl_moe_calib_router_init(nl_ctx *ctx, nl_moe_calib *c, nl_model *m, const nl_moe *moe, nl_moe_fill fill,
                                   int64_t max_tokens);
/* One pass over ds through f (pass 1: μ, 2: activity, 3: router data), each token once; the
 * progress line says "calibration shown/n_passes". */
nl_status nl_moe_calib_pass(nl_ctx *ctx, nl_moe_calib *c, nl_forward *f, const nl_dataset *ds, int stride, int pass, int shown,
                            int n_passes);
/* ⌈F·NL_MOE_ACTIVE_TOP⌉: neurons active per token. */
int nl_moe_active_k(int F);
/* out (F) = 1 for the ktop largest |a − r| (ties: lower index), else 0; r may be NULL (0);
 * tmp (F) scratch. */
void nl_moe_active_row(const float *a, const float *r, int F, int ktop, float *tmp, float *out);

#endif
