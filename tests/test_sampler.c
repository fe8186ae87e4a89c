/* test_sampler.c — greedy, temperature and nucleus sampling against their definitions. */
#include "neuronlab/sampler.h"
#include "testutil.h"

Test(sampler, greedy_is_argmax_lowest_id_on_ties) {
    float l[5] = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
    nl_sampler *s = nl_sampler_create(5, 0.0f, 1.0f, 1);
    for (int i = 0; i < 10; i++) cr_assert_eq(nl_sample(s, l), 1);
    nl_sampler_destroy(s);
}

Test(sampler, rejects_bad_arguments) {
    cr_assert_null(nl_sampler_create(0, 1, 1, 1));
    cr_assert_null(nl_sampler_create(5, -1, 1, 1));
    cr_assert_null(nl_sampler_create(5, 1, 0, 1));
    cr_assert_null(nl_sampler_create(5, 1, 1.5f, 1));
    cr_assert_null(nl_sampler_create(5, NAN, 1, 1));
}

/* Frequencies of n draws against p = softmax(l / temp), cut to the nucleus. */
static void check_freq(const float *l, int V, float temp, float top_p, const double *want, int n) {
    nl_sampler *s = nl_sampler_create(V, temp, top_p, 12345);
    int count[16] = {0};
    for (int i = 0; i < n; i++) count[nl_sample(s, l)]++;
    for (int v = 0; v < V; v++) {
        double f = (double)count[v] / n, sd = sqrt(want[v] * (1 - want[v]) / n);
        cr_assert(fabs(f - want[v]) <= 5 * sd + 1e-12, "token %d: frequency %.4f, expected %.4f (temp %g, top_p %g)", v, f, want[v],
                  temp, top_p);
    }
    nl_sampler_destroy(s);
}

Test(sampler, temperature_draws_follow_softmax) {
    float l[4] = {0.0f, 1.0f, 2.0f, 0.5f};
    for (int k = 0; k < 2; k++) {
        float temp = k ? 2.0f : 1.0f;
        double e[4], z = 0, want[4];
        for (int v = 0; v < 4; v++) z += e[v] = exp(l[v] / temp);
        for (int v = 0; v < 4; v++) want[v] = e[v] / z;
        check_freq(l, 4, temp, 1.0f, want, 200000);
    }
}

Test(sampler, nucleus_keeps_fewest_tokens_reaching_top_p) {
    /* p = 0.5, 0.25, 0.125, 0.125 → top_p 0.7 keeps {0, 1} (0.75), renormalised to 2/3, 1/3 */
    float l[4] = {logf(0.5f), logf(0.25f), logf(0.125f), logf(0.125f)};
    double want[4] = {2.0 / 3, 1.0 / 3, 0, 0};
    check_freq(l, 4, 1.0f, 0.7f, want, 100000);
    /* top_p 0.8 reaches into the tie: the lower id (2) joins */
    double want2[4] = {0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0};
    check_freq(l, 4, 1.0f, 0.8f, want2, 100000);
    /* below the best token's probability: always the best */
    double want3[4] = {1, 0, 0, 0};
    check_freq(l, 4, 1.0f, 0.01f, want3, 1000);
    /* uniform with a tiny top_p (no token above the cut-off bound) */
    float u[10] = {0};
    double want4[10] = {1};
    check_freq(u, 10, 1.0f, 0.01f, want4, 1000);
}

Test(sampler, same_seed_same_draws) {
    float l[6] = {0.3f, 0.1f, 0.9f, 0.2f, 0.5f, 0.4f};
    nl_sampler *a = nl_sampler_create(6, 0.8f, 0.9f, 7), *b = nl_sampler_create(6, 0.8f, 0.9f, 7);
    for (int i = 0; i < 1000; i++) cr_assert_eq(nl_sample(a, l), nl_sample(b, l));
    nl_sampler_destroy(a);
    nl_sampler_destroy(b);
}
