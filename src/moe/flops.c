/* flops.c — analytic FLOPs per token of a dense or MoE FFN layer (DESIGN.md §9; a
 * multiply-add counts 2). Biases and the activation function are not counted, like the dense
 * formula. Checked by tests/test_moe.c against multiply-adds counted in a plain loop. */
#include "neuronlab/moe.h"

/* FLOPs per neuron and token: gated gate + up + down rows, plain in + down. */
static double per_neuron(const nl_config *c) { return (c->ffn_gated ? 6.0 : 4.0) * c->d_model; }

double nl_moe_flops_dense(const nl_config *c) { return per_neuron(c) * c->d_ff; }

double nl_moe_flops_layer(const nl_config *c, int E, int n_shared, int K, nl_moe_router r, nl_moe_fill fill) {
    if (E <= 0 || r == NL_MOE_ROUTER_ORACLE) return nl_moe_flops_dense(c);
    const double D = c->d_model;
    double f = per_neuron(c) * (n_shared + (double)K * (c->d_ff - n_shared) / E);
    f += 2.0 * D * E; /* sim router: x·W_rᵀ; mlp: W1·x̂ */
    if (r == NL_MOE_ROUTER_MLP) f += 2.0 * E * E; /* mlp: W2·h */
    if (fill == NL_MOE_FILL_MEAN) f += D * K;
    return f;
}
