/* fuzz_model_common.h — what the model harnesses do with a model that opened: every
 * layer's weights, the head, the W_out norms and the embedding of a few ids (all
 * dequantised to f32 by the model module), bounded so one input stays fast. */
#ifndef NEURONLAB_FUZZ_MODEL_COMMON_H
#define NEURONLAB_FUZZ_MODEL_COMMON_H

#include "neuronlab/model.h"

static void fuzz_model_path(const char *path) {
    nl_ctx ctx;
    fuzz_ctx(&ctx);
    nl_model *m = NULL;
    if (nl_model_open(&ctx, path, &m) != NL_OK) return;
    const nl_config *c = nl_model_config(m);
    /* weights are bounded by the file; stay small so one run stays fast */
    if ((int64_t)c->d_model * c->d_ff <= (1 << 22) && (int64_t)c->d_model * c->vocab_size <= (1 << 22)) {
        for (int l = 0; l < c->n_layers && l < 8; l++) {
            nl_layer ly;
            (void)nl_model_layer(&ctx, m, l, &ly);
            float *norms = malloc(sizeof(float) * (size_t)(c->d_ff > 0 ? c->d_ff : 1));
            if (norms) (void)nl_model_w_out_norm(&ctx, m, l, norms);
            free(norms);
        }
        nl_head h;
        if (nl_model_head(&ctx, m, &h) == NL_OK && c->vocab_size > 0) {
            int32_t ids[3] = {0, c->vocab_size - 1, c->vocab_size / 2};
            float *x = malloc(sizeof(float) * 3 * (size_t)(c->d_model > 0 ? c->d_model : 1));
            if (x) nl_model_embed(m, ids, 3, 0, x);
            free(x);
        }
    }
    nl_model_close(m);
}

#endif
