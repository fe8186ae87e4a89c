/* train_config.h — the JSON configuration of `neuronlab train`: parsing, validation, defaults.
 *
 * A config is one JSON object with these keys (paths are relative to the working directory;
 * keys starting with "_" are comments and ignored; any other unknown key is an error, so a typo
 * never passes silently). Required keys are marked *.
 *
 *   data        train_data*    JSONL of {"text"}, {"prompt","response"} or {"tokens"} rows
 *               val_data       JSONL (optional: no evaluation without it)
 *               tokenizer      tokenizer.json (or any tokenizer nl_tokenizer_open reads); copied into
 *                              the output folder. Needed for text rows; optional when every row is
 *                              {"tokens"} and vocab_size is given.
 *   model       d_model*, n_layers*, n_heads*, d_ff* (left out with moe)
 *               n_kv_heads     default n_heads (must divide n_heads)
 *               vocab_size     default the tokenizer's size; smaller than the tokenizer's ids is an error
 *               max_seq_len    max_position_embeddings of the saved model, default seq_len (≥ seq_len)
 *               rope_theta     default 10000
 *               norm_eps       default 1e-5
 *               tie_word_embeddings  default false (as LlamaConfig)
 *               hidden_act     silu (default), gelu (exact erf), relu, relu2
 *               moe            a mixture-of-experts FFN in every layer (absent or null: dense), an object:
 *                 type         "mixtral" (default when shared_d is 0) or "qwen2_moe" (default when
 *                              shared_d > 0): the saved folder's model_type and tensor names
 *                 experts*     E routed experts per layer (1..1024)
 *                 top_k        k experts per token, default 2 (1..E)
 *                 d_expert*    neurons per routed expert
 *                 shared_d     neurons of the shared expert, default 0 (none; > 0 needs qwen2_moe)
 *                 norm_topk    renormalise the k weights to sum 1: mixtral true (required), qwen2_moe
 *                              default false (norm_topk_prob)
 *                 aux_loss     coefficient of the load-balancing loss, default 0.01 (router_aux_loss_coef)
 *               With moe, d_ff must be left out and l1 must be 0. Unknown moe keys are errors.
 *   training    seq_len*       tokens per window (the model sees positions 0..seq_len-1)
 *               batch_size*    windows per optimizer step
 *               grad_accum     micro-batches per step, default 1 (divides batch_size; a micro-batch is
 *                              batch_size/grad_accum windows; the gradient is the same, memory smaller)
 *               steps*         optimizer steps
 *               lr*, min_lr (default lr/10), warmup_steps (default 0): linear warmup, cosine to min_lr
 *               weight_decay   default 0.1, on matrices (projections, embedding, lm_head), not norms
 *               beta1 0.9, beta2 0.95, eps 1e-8     (AdamW)
 *               grad_clip      global L2 norm, default 1.0; 0 = off
 *               seed           default 1: init and data order
 *               l1             default 0: coefficient of the L1 penalty l1 · mean over layers, tokens
 *                              and neurons of |a| (a = act(gate)⊙up, the FFN activation)
 *   run         out*           output folder (a Hugging Face model folder + checkpoint + logs)
 *               eval_every     steps between evaluations, default 0 = only at the end
 *               eval_batches   micro-batches of validation windows per evaluation, default 0 = all
 *               checkpoint_every  steps between checkpoints, default 0 = only at the end (and Ctrl-C)
 *               log_every      steps between log rows, default 10
 *               save_dtype     f32 (default), bf16 or f16 for model.safetensors
 *
 * Rules: every value is type- and range-checked; messages name the config file and the key:
 *   'zoo/silu.json': key 'lr' must be a number > 0, got -1
 * Keys are grouped: model and data keys (and seq_len, batch_size, grad_accum, seed) define the run
 * and must not change when resuming; the optimizer and run keys may (steps, lr, eval_every …).
 * Checked by tests/test_train_config.c.
 */
#ifndef NEURONLAB_TRAIN_CONFIG_H
#define NEURONLAB_TRAIN_CONFIG_H

#include <jansson.h>

#include "neuronlab/model.h"

typedef enum { NL_TRAIN_MOE_NONE = 0, NL_TRAIN_MOE_MIXTRAL, NL_TRAIN_MOE_QWEN2 } nl_train_moe_type;

typedef struct {
    char path[4096];                 /* the config file (named in messages) */
    /* data */
    char train_data[4096], val_data[4096], tokenizer[4096]; /* "" when absent */
    /* model */
    int d_model, n_layers, n_heads, n_kv_heads, d_ff;
    int vocab_size;                  /* 0 = the tokenizer's */
    int max_seq_len;
    double rope_theta, norm_eps;
    int tie_word_embeddings;
    nl_act hidden_act;
    /* mixture of experts: moe_type NL_TRAIN_MOE_NONE = dense (the other moe_* are then 0) */
    int moe_type;                    /* nl_train_moe_type */
    int moe_experts, moe_top_k, moe_d_expert, moe_shared_d, moe_norm_topk;
    double moe_aux_loss;
    /* training */
    int seq_len, batch_size, grad_accum, steps, warmup_steps;
    double lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip, l1;
    int64_t seed;
    /* run */
    char out[4096];
    int eval_every, eval_batches, checkpoint_every, log_every;
    nl_dtype save_dtype;
} nl_train_config;

/* Reads and validates the JSON file at path into *c (caller-owned; nothing to release). */
nl_status nl_train_config_load(nl_ctx *ctx, const char *path, nl_train_config *c);
/* Same for JSON text; path only names the config in messages. */
nl_status nl_train_config_parse(nl_ctx *ctx, const char *path, const char *text, nl_train_config *c);
/* Parses an already-loaded JSON object. */
nl_status nl_train_config_from_json(nl_ctx *ctx, const char *path, json_t *obj, nl_train_config *c);

/* The resolved config as a JSON object with every key (new reference, caller decrefs). */
json_t *nl_train_config_to_json(const nl_train_config *c);

/* Name of the first model or data key whose value differs between a and b, or NULL when the two
 * configs define the same run (optimizer and run keys are not compared). */
const char *nl_train_config_run_diff(const nl_train_config *a, const nl_train_config *b);

/* Name of the first optimizer/run key that differs (for a note when resuming), or NULL. */
const char *nl_train_config_other_diff(const nl_train_config *a, const nl_train_config *b);

#endif
