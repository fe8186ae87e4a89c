/* neuron_stats.c — a custom statistic recorded through a hook: per neuron of one layer, the mean
 * |a| and the fraction of tokens with |a| > THRESHOLD, over every document of a dataset.
 *
 *   neuron_stats MODEL DATA.jsonl LAYER [THRESHOLD=0.1] [TOP=5]
 *
 * An observer on "ffn_act" at LAYER accumulates the (T, F) activations of each document as the
 * forward pass produces them (nothing is stored per token), then the TOP neurons by mean |a| are
 * printed. Documents longer than the model's context are cut to it.
 * Build against an installed neuronlab:  cc neuron_stats.c $(pkg-config --cflags --libs neuronlab)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <neuronlab/capi.h>

typedef struct {
    int F;
    float threshold;
    double *sum_abs; /* (F) Σ |a| */
    long *active;    /* (F) tokens with |a| > threshold */
    long tokens;
} stats;

static int accumulate(void *user, const char *point, int layer, int pos0, int T, int width, float *x) {
    stats *s = user;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < width; i++) {
            const float a = fabsf(x[(size_t)t * width + i]);
            s->sum_abs[i] += a;
            s->active[i] += a > s->threshold;
        }
    s->tokens += T;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: neuron_stats MODEL DATA.jsonl LAYER [THRESHOLD] [TOP]\n");
        return 2;
    }
    const int layer = atoi(argv[3]), top = argc > 5 ? atoi(argv[5]) : 5;
    nl_api *h = NULL;
    nl_api_dataset *ds = NULL;
    int id;
    if (nl_api_open(argv[1], NULL, NULL, 0, 0, &h) != 0 || nl_api_set_threads(h, 1) != 0 ||
        nl_api_dataset_open(h, argv[2], &ds) != 0)
        goto fail;
    const int F = nl_api_point_width(h, "ffn_act", layer);
    if (F < 0) goto fail;
    stats s = {F, argc > 4 ? (float)atof(argv[4]) : 0.1f, calloc((size_t)F, sizeof(double)), calloc((size_t)F, sizeof(long)), 0};
    if (!s.sum_abs || !s.active) return 1;
    if (nl_api_hook_add(h, "ffn_act", layer, accumulate, &s, &id) != 0) goto fail;
    const int ctx = (int)nl_api_dim(h, "ctx");
    for (int d = 0; d < nl_api_dataset_size(ds); d++) {
        const int32_t *tok;
        int T;
        nl_api_dataset_doc(ds, d, &tok, &T, NULL, NULL, NULL, NULL);
        if (nl_api_run(h, tok, T < ctx ? T : ctx, NULL) != 0) goto fail;
    }
    printf("layer %d: %ld tokens, %d neurons, threshold %g\n", layer, s.tokens, F, s.threshold);
    for (int k = 0; k < top && k < F; k++) { /* the k-th largest mean |a| (ties: lower index) */
        int best = -1;
        for (int i = 0; i < F; i++)
            if (s.sum_abs[i] >= 0 && (best < 0 || s.sum_abs[i] > s.sum_abs[best])) best = i;
        printf("neuron %d mean_abs %.6f active_frac %.6f\n", best, s.sum_abs[best] / s.tokens, (double)s.active[best] / s.tokens);
        s.sum_abs[best] = -1;
    }
    free(s.sum_abs);
    free(s.active);
    nl_api_dataset_close(ds);
    nl_api_close(h);
    return 0;
fail:
    fprintf(stderr, "neuron_stats: %s\n", nl_api_errmsg(h));
    nl_api_dataset_close(ds);
    nl_api_close(h);
    return 1;
}
