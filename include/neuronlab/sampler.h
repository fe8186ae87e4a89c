/* sampler.h — choosing the next token from logits, for `neuronlab generate`.
 *
 * temp == 0 is greedy (argmax, the lowest id on ties). Otherwise the logits are divided by
 * temp, softmaxed, and — when 0 < top_p < 1 — cut to the nucleus: the fewest most-probable
 * tokens whose probabilities sum to at least top_p (ties broken by the lower id), renormalised;
 * one token is drawn with the sampler's own generator (xorshift64*), so a seed gives the same
 * text on every machine and thread count.
 * Checked by tests/test_sampler.c.
 */
#ifndef NEURONLAB_SAMPLER_H
#define NEURONLAB_SAMPLER_H

#include "neuronlab/common.h"

typedef struct nl_sampler nl_sampler;

/* vocab: V (logit count). temp ≥ 0, top_p in (0, 1] (1 = no cut). Returns NULL when out of
 * memory or the arguments are out of range. Free with nl_sampler_destroy. */
nl_sampler *nl_sampler_create(int vocab, float temp, float top_p, uint64_t seed);
void nl_sampler_destroy(nl_sampler *s); /* NULL is a no-op */

/* Picks a token from logits (V floats, borrowed, not modified). */
int nl_sample(nl_sampler *s, const float *logits);

/* The generator's next uniform float in [0, 1) (exposed for tests). */
float nl_sampler_uniform(nl_sampler *s);

#endif
