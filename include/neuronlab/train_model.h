/* train_model.h — a trainable Llama-architecture decoder: parameters, gradients, and one fused
 * forward + backward pass over a micro-batch of token windows.
 *
 * The model is Hugging Face LlamaForCausalLM without biases (and neuronlab's forward pass):
 *   x = embed[tokens]
 *   per layer: h = x + o_proj(attn(rope(q), rope(k), v)) with q, k, v projections of rmsnorm₁(x);
 *              x = h + down(act(gate(n)) ⊙ up(n)), n = rmsnorm₂(h)
 *   logits = lm_head(rmsnorm_f(x))      (lm_head is the embedding when tie_embeddings)
 * RMSNorm with weight and eps; RoPE rotate-half with rope_theta, positions 0..S-1 in every window;
 * causal attention with grouped-query heads (H a multiple of Hk); head_dim = D / H.
 *
 * Objective of a micro-batch of B windows of S+1 tokens (inputs w[0..S), targets w[1..S]):
 *   loss = mean over the B·S predictions of cross-entropy
 *        + l1 · mean over layers, tokens and neurons of |a|     (a = act(gate) ⊙ up, the FFN activation)
 * nl_train_model_forward_backward adds grad_scale · ∇loss to the gradients, so grad_accum
 * micro-batches with grad_scale = 1/grad_accum give the gradient of the mean over the whole step.
 *
 * Parameters live in one f32 vector in the order of the tensor table (HF names): the embedding;
 * per layer input_layernorm, q_proj, k_proj, v_proj, o_proj, post_attention_layernorm, gate_proj,
 * up_proj, down_proj; model.norm; lm_head unless tied. q|k|v and gate|up are adjacent, so each pair
 * of projections runs as one GEMM. Weight decay applies to matrices (2-D tensors: projections,
 * embedding, lm_head), not to norm weights.
 *
 * Init (nl_train_model_init): every matrix N(0, 0.02²), except o_proj and down_proj N(0, (0.02/√(2L))²)
 * (GPT-2's scaling of the projections that write into the residual stream); norm weights 1. Each
 * tensor draws from its own stream nl_rng_derive(seed, 1, tensor index), in row-major order.
 *
 * Mixture of experts (moe != 0; DESIGN.md §10, Hugging Face MixtralSparseMoeBlock / Qwen2MoeSparseMoeBlock):
 * every layer's FFN is  out = Σ_{e∈S} w_e·FFN_e(n) [+ sigmoid(n·w_sg)·FFN_shared(n)],  n = rmsnorm₂(h),
 * with router logits z = n·W_routerᵀ (E), p = softmax(z) (as nl_moe_route: f32, sum in double),
 * S = the top_k of p (nl_moe_topk: ties as torch.topk), w_e = p_e / Σ_S p (norm_topk) or p_e. Tokens are
 * grouped by expert and each expert runs one GEMM over its own tokens; unselected experts cost nothing.
 * Gradients flow through the selected experts, the weights (renormalisation), the softmax into the
 * router, the shared expert and its sigmoid gate; the selection itself has no gradient (as in PyTorch).
 * Load-balancing loss (HF load_balancing_loss_func with the router probabilities of all layers
 * concatenated, N = L·T rows): aux = E · Σ_e (C_e / N) · (Σ_rows p_e / N), C_e = token-slots routed to
 * e over all layers (Σ_e C_e = k·N); the objective adds aux_coef · aux (per micro-batch).
 * Tensor names: mixtral  model.layers.N.block_sparse_moe.gate.weight (E, D),
 *               model.layers.N.block_sparse_moe.experts.E.{w1,w3,w2}.weight (gate, up, down);
 *               qwen2_moe model.layers.N.mlp.gate.weight, model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight,
 *               model.layers.N.mlp.shared_expert.{gate,up,down}_proj.weight, model.layers.N.mlp.shared_expert_gate.weight (1, D).
 * Init: router, expert gate/up and the shared gate N(0, 0.02²); expert and shared down N(0, (0.02/√(2L))²).
 *
 * Activations needed by the backward pass are kept in buffers sized once at create for B windows of
 * S tokens: about L·(7·T·D + 2·T·W + 3·T·F + B·H·S²) + T·V floats (see nl_train_model_act_bytes).
 * Checked by tests/test_train_model.c (PyTorch autograd fixtures, every activation, tied and untied,
 * with and without the L1 penalty) and tests/train.sh (the saved model under `neuronlab ppl`).
 */
#ifndef NEURONLAB_TRAIN_MODEL_H
#define NEURONLAB_TRAIN_MODEL_H

#include "neuronlab/model.h"

typedef struct {
    int d_model;    /* D */
    int n_layers;   /* L */
    int n_heads;    /* H */
    int n_kv_heads; /* Hk, divides H */
    int d_ff;       /* F */
    int vocab_size; /* V */
    float rope_theta, norm_eps;
    int tie_embeddings;
    nl_act act;     /* silu, gelu, relu, relu2 */
    /* mixture of experts (d_ff unused when moe != 0) */
    int moe;        /* nl_train_moe_type (train_config.h): 0 dense, 1 mixtral, 2 qwen2_moe */
    int n_experts;  /* E */
    int top_k;      /* k ≤ E */
    int d_expert;   /* Fe */
    int d_shared;   /* Fs, 0 = no shared expert (qwen2_moe only) */
    int norm_topk;  /* renormalise the k weights */
} nl_train_dims;

/* One named tensor inside the parameter vector. */
typedef struct {
    char name[96];    /* Hugging Face name, e.g. "model.layers.0.mlp.gate_proj.weight" */
    int64_t offset;   /* first float in the parameter (and gradient) vector */
    int64_t numel;
    int ndim;         /* 1 (norm weight) or 2 (matrix) */
    int64_t shape[2]; /* (n_out, n_in) for matrices, as torch.nn.Linear */
    int decay;        /* weight decay applies */
    float init_std;   /* 0: ones (norm weight) */
} nl_train_tensor;

typedef struct nl_train_model nl_train_model;

/* Checks the dimensions (D divisible by H, H by Hk, even head_dim, trainable act) and allocates
 * parameters, gradients and the activation buffers for micro-batches of up to B windows of S
 * tokens. Parameters are zero until nl_train_model_init. *out is caller-owned. */
nl_status nl_train_model_create(nl_ctx *ctx, const nl_train_dims *d, int B, int S, nl_train_model **out);
void nl_train_model_destroy(nl_train_model *m); /* NULL is a no-op */

const nl_train_dims *nl_train_model_dims(const nl_train_model *m);
int64_t nl_train_model_n_params(const nl_train_model *m);
float *nl_train_model_params(nl_train_model *m); /* (n_params) borrowed */
float *nl_train_model_grads(nl_train_model *m);  /* (n_params) borrowed */
int nl_train_model_n_tensors(const nl_train_model *m);
const nl_train_tensor *nl_train_model_tensor(const nl_train_model *m, int i);
const nl_train_tensor *nl_train_model_find(const nl_train_model *m, const char *name); /* NULL when absent */
/* Bytes of the activation and scratch buffers. */
int64_t nl_train_model_act_bytes(const nl_train_model *m);
/* Floating-point operations of one forward + backward over one window of S tokens, counting the GEMMs
 * as executed (attention computes full S×S blocks): divide by seconds per window for FLOP/s. */
double nl_train_model_flops_per_window(const nl_train_model *m);

void nl_train_model_init(nl_train_model *m, uint64_t seed);
void nl_train_model_zero_grad(nl_train_model *m);

/* Forward and backward over B ≤ the create-time B windows (B, S+1) token ids in [0, V).
 * Adds grad_scale · ∇loss (objective above, with aux_coef · aux for MoE models) to the gradients.
 * *ce gets the mean cross-entropy, *l1_mean the mean |a| (before the l1 coefficient; 0 for MoE),
 * *aux the load-balancing loss (before aux_coef; 0 for dense models); any may be NULL. */
void nl_train_model_forward_backward(nl_train_model *m, const int32_t *windows, int B, float l1, float aux_coef,
                                     float grad_scale, double *ce, double *l1_mean, double *aux);

/* Routing of layer l in the last pass (MoE only, else NULL): sel (T, k) the chosen experts, largest
 * probability first, and wts (T, k) their weights; borrowed, valid until the next pass. */
const int *nl_train_model_routing(const nl_train_model *m, int l, const float **wts);

/* Forward only: inputs (B, S) in [0, V), targets (B, S) (< 0: not counted). Adds the summed
 * cross-entropy (nats, double) to *nll and the number of counted targets to *n. */
void nl_train_model_nll(nl_train_model *m, const int32_t *inputs, const int32_t *targets, int B, double *nll,
                        int64_t *n);

#endif
