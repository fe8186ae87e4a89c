/* adamw.c — AdamW, gradient clipping and the learning-rate schedule (see adamw.h).
 * Checked by tests/test_train_model.c and tests/test_adamw.c. */
#include "neuronlab/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/ops.h"
#include "neuronlab/train_ops.h"

nl_status nl_adamw_init(nl_ctx *ctx, nl_adamw *o, int64_t n) {
    memset(o, 0, sizeof *o);
    o->m = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    o->v = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!o->m || !o->v) {
        nl_adamw_release(o);
        return nl_errorf(ctx, NL_ENOMEM, "cannot allocate the optimizer state (%lld parameters): out of memory",
                         (long long)n);
    }
    o->n = n;
    return NL_OK;
}

void nl_adamw_release(nl_adamw *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
    o->n = o->t = 0;
}

void nl_adamw_begin_step(nl_adamw *o) { o->t++; }

void nl_adamw_update(nl_adamw *o, float *p, const float *g, int64_t off, int64_t n, double lr, int decay,
                     const nl_adamw_hparams *hp) {
    NL_ASSERT(o->t >= 1 && off >= 0 && off + n <= o->n);
    const double step = (double)o->t;
    const double bc1 = 1.0 - pow(hp->beta1, step), bc2 = 1.0 - pow(hp->beta2, step);
    const float keep = (float)(1.0 - lr * (decay ? hp->weight_decay : 0.0));
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, a1 = (float)(1.0 - hp->beta1),
                a2 = (float)(1.0 - hp->beta2);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)hp->eps;
    float *pp = p + off, *m = o->m + off, *v = o->v + off;
    const float *gg = g + off;
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float pi = pp[i] * keep;
        const float gi = gg[i];
        float mi = m[i] * b1;
        mi = mi + a1 * gi;
        float vi = v[i] * b2;
        vi = vi + a2 * gi * gi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        pp[i] = pi + (-step_size) * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

double nl_clip_grad_norm(float *g, int64_t n, double max_norm) {
    const double norm = sqrt(nl_sum_sq(g, n));
    if (!isfinite(norm) || !(max_norm > 0)) return norm;
    const float coef = (float)(max_norm / (norm + 1e-6));
    if (coef < 1.0f) {
#pragma omp parallel for schedule(static) if (n > NL_PAR_MIN)
        for (int64_t i = 0; i < n; i++) g[i] *= coef;
    }
    return norm;
}

double nl_lr_at(int64_t s, int64_t steps, int64_t warmup, double lr, double min_lr) {
    if (s <= warmup && warmup > 0) return lr * (double)s / (double)warmup;
    if (steps <= warmup) return lr;
    double prog = (double)(s - warmup) / (double)(steps - warmup);
    if (prog > 1) prog = 1;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * prog));
}
