/* trainer.h — `neuronlab train`: trains a Llama-architecture decoder from a JSON config
 * (train_config.h) and writes a Hugging Face model folder that every neuronlab command loads.
 *
 * With "moe" in the config the model is a mixture of experts (train_model.h) saved as a Hugging Face
 * mixtral or qwen2_moe folder, and the log rows carry "aux" (the load-balancing loss) instead of "l1".
 *
 * A run: load the tokenizer and the splits as token streams (token_stream.h), build the model
 * (train_model.h, init from the seed) and AdamW (adamw.h), then for each step s = start+1 … steps:
 * the batch of step s (batch_size windows of seq_len+1 tokens, deterministic in (seed, s)) in
 * grad_accum micro-batches → forward/backward → stop if the loss or the gradient norm is not finite
 * → clip → AdamW with the scheduled learning rate. Evaluation on the validation windows every
 * eval_every steps and at the end; a checkpoint every checkpoint_every steps and at the end.
 *
 * Output folder `out` (created with its parents):
 *   checkpoint.bin     resumable state (checkpoint.h), replaced atomically
 *   config.json        LlamaForCausalLM config (model_type "llama", torch_dtype of save_dtype); with moe
 *                      MixtralForCausalLM ("mixtral") or Qwen2MoeForCausalLM ("qwen2_moe")
 *   model.safetensors  HF tensor names (lm_head.weight only when untied), save_dtype, atomic
 *   tokenizer.json     copy of the config's tokenizer (tokenizer.model for a SentencePiece model)
 *   train_log.jsonl    one row per log step {"step","loss","l1","lr","grad_norm","tokens_per_s",
 *                      "elapsed"} and per evaluation {"step","val_loss","val_tokens","elapsed"}
 *   training.json      self-description: config, neuronlab version, BLAS, threads, parameters,
 *                      data sizes, wall time (all sessions), step time and tokens/s (this session),
 *                      achieved GFLOP/s, final losses, "complete"
 * The model files and training.json are written at every checkpoint too ("complete": false until
 * the last step), so a long run's folder is usable while it trains.
 *
 * Resume (resume = 1): out/checkpoint.bin must exist; its config must agree on every model and data
 * key (train_config.h) and its training-token hash must equal the data's; the log keeps its rows up
 * to the checkpoint's step. Without resume an existing checkpoint is refused (never overwritten).
 * Errors stop the run with a one-line message and leave the last good checkpoint in place:
 * an empty or too short corpus, vocab_size below the tokenizer's ids or a data id ≥ vocab_size,
 * an unknown activation (at config load), a non-finite loss or gradient norm (naming the step; no
 * checkpoint or model file is written for it). nl_interrupted (Ctrl-C) saves a checkpoint of the
 * last finished step and returns NL_EINTR.
 * Checked by tests/train.sh (resume equals an uninterrupted run, ppl of the saved folder equals the
 * trainer's evaluation, bad inputs, Ctrl-C) and the unit suites of the modules above.
 */
#ifndef NEURONLAB_TRAINER_H
#define NEURONLAB_TRAINER_H

#include "neuronlab/train_config.h"

typedef enum {
    NL_TRAIN_EV_STEP = 0,  /* a log step */
    NL_TRAIN_EV_EVAL,      /* an evaluation */
    NL_TRAIN_EV_CHECKPOINT,/* a checkpoint was written */
    NL_TRAIN_EV_NOTE,      /* an informational line (resume, changed keys) */
    NL_TRAIN_EV_TICK,      /* every step (for a live progress line) */
} nl_train_ev_kind;

typedef struct {
    nl_train_ev_kind kind;
    int64_t step, steps;
    double loss;        /* STEP/TICK: mean cross-entropy of the step; EVAL: validation loss */
    double l1_mean;     /* mean |a| of the step */
    double aux;         /* STEP/TICK of an MoE model: the load-balancing loss (before its coefficient); else NaN */
    double lr, grad_norm;
    double tok_per_s;   /* training tokens per second of this session (steps only) */
    double elapsed;     /* wall-clock seconds of training over all sessions (evaluations included) */
    double eta;         /* seconds to the last step at the current speed */
    int64_t val_tokens; /* EVAL: predictions counted */
    const char *note;   /* NOTE/CHECKPOINT: the text */
} nl_train_event;

typedef void (*nl_train_cb)(void *user, const nl_train_event *ev);

typedef struct {
    int64_t n_params, start_step;
    int64_t n_active_params;  /* parameters a token uses: n_params minus the unselected experts (= n_params dense) */
    int64_t train_tokens, val_tokens, train_windows;
    int vocab_size;           /* V (resolved: the tokenizer's when the config leaves it out) */
    int micro_batch;          /* windows per forward/backward */
    int64_t act_bytes;        /* activation buffers */
    double flops_per_token;   /* as executed (nl_train_model_flops_per_window / seq_len) */
    const char *blas_core;    /* openblas_get_corename() */
    int threads;
} nl_trainer_info;

typedef struct nl_trainer nl_trainer;

/* Prepares a run of cfg (borrowed; copied). resume as above. *out is caller-owned. */
nl_status nl_trainer_create(nl_ctx *ctx, const nl_train_config *cfg, int resume, nl_trainer **out);
void nl_trainer_destroy(nl_trainer *t); /* NULL is a no-op */
void nl_trainer_get_info(const nl_trainer *t, nl_trainer_info *out);

/* Stops the next nl_trainer_run after step `step` (< cfg.steps) with a checkpoint and the model files
 * ("complete": false), returning NL_OK: a long run split into sessions (`--stop-at`). 0 = no stop. */
void nl_trainer_stop_at(nl_trainer *t, int64_t step);

/* Trains to cfg.steps (or the stop step) and writes the outputs; cb (may be NULL) sees progress events. */
nl_status nl_trainer_run(nl_trainer *t, nl_ctx *ctx, nl_train_cb cb, void *user);

/* Validation loss of the current parameters over eval_batches micro-batches (0 = all windows):
 * *nll = mean cross-entropy, *n = predictions. NL_EINVAL when the config has no val_data. */
nl_status nl_trainer_eval(nl_trainer *t, nl_ctx *ctx, double *nll, int64_t *n);

#endif
