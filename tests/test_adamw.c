/* test_adamw.c — the learning-rate schedule, clip_grad_norm_ semantics and one AdamW element in
 * closed form (the PyTorch comparison itself is in test_train_model.c). */
#include "neuronlab/adamw.h"
#include "testutil.h"

Test(adamw, schedule) {
    /* warmup 4, steps 14, lr 1, min 0.1 */
    cr_assert_float_eq(nl_lr_at(1, 14, 4, 1.0, 0.1), 0.25, 1e-12);
    cr_assert_float_eq(nl_lr_at(4, 14, 4, 1.0, 0.1), 1.0, 1e-12);
    cr_assert_float_eq(nl_lr_at(9, 14, 4, 1.0, 0.1), 0.55, 1e-12); /* half way: (1 + 0.1) / 2 */
    cr_assert_float_eq(nl_lr_at(14, 14, 4, 1.0, 0.1), 0.1, 1e-12);
    cr_assert_float_eq(nl_lr_at(1, 10, 0, 2.0, 0.0), 0.5 * 2.0 * (1 + cos(M_PI * 0.1)), 1e-12);
    cr_assert_float_eq(nl_lr_at(5, 5, 5, 1.0, 0.1), 1.0, 1e-12);
}

Test(adamw, clip_like_torch) {
    float g[2] = {3, 4};
    cr_assert_float_eq(nl_clip_grad_norm(g, 2, 10.0), 5.0, 1e-12);
    cr_assert(g[0] == 3 && g[1] == 4, "no clipping below the threshold");
    cr_assert_float_eq(nl_clip_grad_norm(g, 2, 1.0), 5.0, 1e-12);
    cr_assert_float_eq(g[0], 3 / (5 + 1e-6), 1e-6);
    cr_assert_float_eq(g[1], 4 / (5 + 1e-6), 1e-6);
    float h[2] = {3, 4};
    cr_assert_float_eq(nl_clip_grad_norm(h, 2, 0.0), 5.0, 1e-12); /* 0 = off */
    cr_assert(h[0] == 3);
    float bad[2] = {NAN, 1};
    cr_assert(isnan(nl_clip_grad_norm(bad, 2, 1.0)));
}

Test(adamw, closed_form) {
    nl_ctx ctx;
    nl_ctx_init(&ctx);
    nl_adamw o;
    cr_assert_eq(nl_adamw_init(&ctx, &o, 2), NL_OK);
    nl_adamw_hparams hp = {0.9, 0.99, 1e-8, 0.1};
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -0.25f};
    double pd[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
    for (int t = 1; t <= 3; t++) {
        nl_adamw_begin_step(&o);
        nl_adamw_update(&o, p, g, 0, 1, 0.01, 1, &hp);
        nl_adamw_update(&o, p, g, 1, 1, 0.01, 0, &hp);
        for (int i = 0; i < 2; i++) {
            pd[i] *= 1 - 0.01 * (i == 0 ? 0.1 : 0.0);
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
            double mh = m[i] / (1 - pow(0.9, t)), vh = v[i] / (1 - pow(0.99, t));
            pd[i] -= 0.01 * mh / (sqrt(vh) + 1e-8);
        }
        cr_assert_float_eq(p[0], pd[0], 1e-6);
        cr_assert_float_eq(p[1], pd[1], 1e-6);
    }
    cr_assert_eq(o.t, 3);
    nl_adamw_release(&o);
}
