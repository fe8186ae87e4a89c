/* rng.h — the seeded random numbers of the trainer and the analyses (core module): splitmix64 streams, uniform and normal draws.
 *
 * Rules: everything random in a training run is a pure function of the config's seed, so a run
 * repeats bit for bit on any machine and thread count. A stream is one 64-bit state (caller-owned
 * struct, no allocation); nl_rng_derive gives independent streams for (seed, purpose, index)
 * (one per parameter tensor at init, one per epoch for the data order) so that adding a tensor or
 * resuming at a step never shifts the draws of another.
 *   next:    splitmix64 (Steele, Lea, Flood 2014), the 64-bit output mixer of Java's SplittableRandom
 *   uniform: (next >> 11) · 2^-53, in [0, 1)
 *   normal:  Box–Muller in double on u1 = 1 − uniform ∈ (0, 1], u2 = uniform: sqrt(−2 ln u1)·cos(2π u2),
 *            then sqrt(−2 ln u1)·sin(2π u2) as the next draw.
 * Checked by tests/test_train_data.c (fixed values, permutation properties).
 */
#ifndef NEURONLAB_RNG_H
#define NEURONLAB_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s;        /* splitmix64 state */
    double spare;      /* second Box–Muller draw */
    int has_spare;
} nl_rng;

/* splitmix64's output finaliser: a bijective 64-bit mix (hashes a key into a priority). */
uint64_t nl_mix64(uint64_t z);

/* A stream seeded from (seed, purpose, index); purpose is a small constant per use. */
void nl_rng_derive(nl_rng *r, uint64_t seed, uint64_t purpose, uint64_t index);
uint64_t nl_rng_next(nl_rng *r);
double nl_rng_uniform(nl_rng *r);
double nl_rng_normal(nl_rng *r);
/* Uniform integer in [0, n) (n ≥ 1), without modulo bias. */
uint64_t nl_rng_below(nl_rng *r, uint64_t n);
/* perm (n) = a uniformly random permutation of 0..n-1 (Fisher–Yates, from the back). */
void nl_rng_permutation(nl_rng *r, int64_t *perm, int64_t n);

/* FNV-1a, 64-bit, over n bytes, continuing from h (start with NL_FNV_INIT). */
#define NL_FNV_INIT 0xcbf29ce484222325ULL
uint64_t nl_fnv1a(uint64_t h, const void *data, size_t n);

#endif
