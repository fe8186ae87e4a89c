/* rng.c — the seeded random numbers of every module: splitmix64 streams, uniform/normal draws, permutations, FNV-1a (see rng.h).
 * Checked by tests/test_train_data.c. */
#include "neuronlab/rng.h"

#include <math.h>
#include <stddef.h>

uint64_t nl_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void nl_rng_derive(nl_rng *r, uint64_t seed, uint64_t purpose, uint64_t index) {
    r->s = nl_mix64(nl_mix64(nl_mix64(seed + 0x9e3779b97f4a7c15ULL) ^ purpose) + index);
    r->has_spare = 0;
    r->spare = 0;
}

uint64_t nl_rng_next(nl_rng *r) {
    r->s += 0x9e3779b97f4a7c15ULL;
    return nl_mix64(r->s);
}

double nl_rng_uniform(nl_rng *r) { return (double)(nl_rng_next(r) >> 11) * 0x1.0p-53; }

double nl_rng_normal(nl_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = 1.0 - nl_rng_uniform(r), u2 = nl_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

uint64_t nl_rng_below(nl_rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do x = nl_rng_next(r);
    while (x >= lim);
    return x % n;
}

void nl_rng_permutation(nl_rng *r, int64_t *perm, int64_t n) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)nl_rng_below(r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

uint64_t nl_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
