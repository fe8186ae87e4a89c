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
} nl_moe_calib;

nl_status nl_moe_calib_init(nl_ctx *ctx, nl_moe_calib *c, int L, int F, const int *layers, int n_layers, int max_T,
                            int want_coact);
void nl_moe_calib_release(nl_moe_calib *c);
/* One pass over ds through f (pass 1 or 2 of n_passes), each token once. */
nl_status nl_moe_calib_pass(nl_ctx *ctx, nl_moe_calib *c, nl_forward *f, const nl_dataset *ds, int stride, int pass,
                            int n_passes);
/* ⌈F·NL_MOE_ACTIVE_TOP⌉: neurons active per token. */
int nl_moe_active_k(int F);
/* out (F) = 1 for the ktop largest |a − r| (ties: lower index), else 0; r may be NULL (0);
 * tmp (F) scratch. */
void nl_moe_active_row(const float *a, const float *r, int F, int ktop, float *tmp, float *out);

#endif
