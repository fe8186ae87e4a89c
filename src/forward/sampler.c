/* sampler.c — greedy, temperature and nucleus (top-p) sampling (see sampler.h). */
#include "neuronlab/sampler.h"

#include <math.h>
#include <stdlib.h>

struct nl_sampler {
    int V;
    float temp, top_p;
    uint64_t state;
    float *prob; /* (V) softmax of logits / temp */
    int *order;  /* (V) token ids, most probable first (nucleus only) */
};

nl_sampler *nl_sampler_create(int vocab, float temp, float top_p, uint64_t seed) {
    if (vocab <= 0 || !(temp >= 0) || !(top_p > 0 && top_p <= 1)) return NULL;
    nl_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->V = vocab, s->temp = temp, s->top_p = top_p;
    s->state = seed ? seed : 0x9e3779b97f4a7c15ull; /* xorshift needs a non-zero state */
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    s->order = malloc((size_t)vocab * sizeof *s->order);
    if (!s->prob || !s->order) { nl_sampler_destroy(s); return NULL; }
    return s;
}

void nl_sampler_destroy(nl_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->order);
    free(s);
}

float nl_sampler_uniform(nl_sampler *s) {
    s->state ^= s->state >> 12;
    s->state ^= s->state << 25;
    s->state ^= s->state >> 27;
    return (float)((s->state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f; /* 24 bits */
}

static const float *sort_prob; /* qsort has no context argument; sampling is single-threaded */
static int by_prob_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_prob[i] != sort_prob[j]) return sort_prob[i] > sort_prob[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

int nl_sample(nl_sampler *s, const float *logits) {
    const int V = s->V;
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temp == 0) return best;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += s->prob[i] = expf((logits[i] - logits[best]) / s->temp);
    float r = nl_sampler_uniform(s);
    if (s->top_p >= 1) {
        double acc = 0, target = r * sum;
        for (int i = 0; i < V; i++)
            if ((acc += s->prob[i]) > target) return i;
        return best; /* rounding left r·sum beyond the last sum */
    }
    /* Nucleus: only tokens above (1 - top_p)/(V - 1) of the mass can be in it (any token in the
     * nucleus but the first has p ≥ that bound would fail otherwise, as in llama2.c); sort those. */
    const double cutoff = (1.0 - s->top_p) / (V > 1 ? V - 1 : 1) * sum;
    int n = 0;
    for (int i = 0; i < V; i++)
        if (s->prob[i] >= cutoff) s->order[n++] = i;
    if (n == 0) return best; /* top_p below the best token's probability: the nucleus is that token */
    sort_prob = s->prob;
    qsort(s->order, (size_t)n, sizeof *s->order, by_prob_desc);
    double mass = 0;
    int last = n - 1;
    for (int k = 0; k < n; k++) {
        mass += s->prob[s->order[k]];
        if (mass >= s->top_p * sum) { last = k; break; }
    }
    double acc = 0, target = r * mass;
    for (int k = 0; k <= last; k++)
        if ((acc += s->prob[s->order[k]]) > target) return s->order[k];
    return s->order[last];
}
