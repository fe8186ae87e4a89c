/* adamw.h — the optimizer of the trainer: AdamW exactly as torch.optim.AdamW (single-tensor
 * path of PyTorch 1.13, amsgrad off), global-norm gradient clipping exactly as
 * torch.nn.utils.clip_grad_norm_, and the learning-rate schedule.
 *
 * AdamW, per element, at step t (1-based, counted by nl_adamw_begin_step):
 *   p ← p · (1 − lr·wd)                      decoupled weight decay
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
 * in f32 with the scalar factors computed in double, as torch does.
 * Clipping: norm = ‖g‖₂ over all gradients; coef = max_norm / (norm + 1e-6); when coef < 1 every
 * gradient is multiplied by coef. max_norm ≤ 0 turns clipping off (the norm is still returned).
 * Schedule (step s = 1 … steps, the optimizer step being taken):
 *   s ≤ warmup:  lr · s / warmup                                   (linear from 0)
 *   s > warmup:  min_lr + ½ (lr − min_lr)(1 + cos(π (s − warmup) / (steps − warmup)))
 * so the first step uses lr/warmup, step `warmup` uses lr and step `steps` uses min_lr.
 * Checked by tests/test_train_model.c (one and three steps against torch.optim.AdamW and
 * clip_grad_norm_ from the PyTorch fixtures) and tests/test_adamw.c.
 */
#ifndef NEURONLAB_ADAMW_H
#define NEURONLAB_ADAMW_H

#include "neuronlab/common.h"

typedef struct {
    double beta1, beta2, eps, weight_decay;
} nl_adamw_hparams;

/* Caller-owned optimizer state: _init allocates the moments (zeros), _release frees them. */
typedef struct {
    int64_t n;   /* parameters */
    int64_t t;   /* steps taken (torch's state["step"]) */
    float *m;    /* (n) first moment */
    float *v;    /* (n) second moment */
} nl_adamw;

nl_status nl_adamw_init(nl_ctx *ctx, nl_adamw *o, int64_t n);
void nl_adamw_release(nl_adamw *o);

/* Starts a step: t ← t + 1. Then update every parameter segment once with nl_adamw_update. */
void nl_adamw_begin_step(nl_adamw *o);
/* Updates p[off .. off+n) from g[off .. off+n) with the learning rate lr; decay selects whether
 * weight decay applies to this segment. */
void nl_adamw_update(nl_adamw *o, float *p, const float *g, int64_t off, int64_t n, double lr, int decay,
                     const nl_adamw_hparams *hp);

/* Global L2 norm of g (n); clips as above when max_norm > 0. Returns the norm before clipping
 * (inf or NaN when a gradient is not finite; then nothing is scaled). */
double nl_clip_grad_norm(float *g, int64_t n, double max_norm);

/* Learning rate of optimizer step s (1-based) as above. */
double nl_lr_at(int64_t s, int64_t steps, int64_t warmup, double lr, double min_lr);

#endif
