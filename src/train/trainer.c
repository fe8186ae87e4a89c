/* trainer.c — the training loop, evaluation, checkpoints and the output folder (see trainer.h).
 *
 * Rules: all state that a resumed run needs is in the checkpoint (parameters, AdamW moments and
 * step, the step number, RNG state, elapsed time, tokens); the batch of a step is recomputed from
 * (seed, step), so a resumed run repeats an uninterrupted one bit for bit (same thread count).
 * Nothing is written for a step whose loss or gradient norm is not finite.
 * Checked by tests/train.sh and the module suites (test_train_model, test_train_config,
 * test_train_data).
 */
#include "neuronlab/trainer.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "neuronlab/adamw.h"
#include "neuronlab/checkpoint.h"
#include "neuronlab/rng.h"
#include "neuronlab/atomic_file.h"
#include "neuronlab/st_writer.h"
#include "neuronlab/token_stream.h"
#include "neuronlab/tokenizer.h"
#include "neuronlab/train_model.h"

struct nl_trainer {
    nl_train_config cfg;
    nl_tokenizer *tok;
    nl_token_stream train, val;
    int has_val;
    nl_train_model *model;
    nl_adamw opt;
    nl_adamw_hparams hp;
    nl_rng rng;
    int Bm;                  /* windows per micro-batch */
    int64_t step;            /* steps done */
    double elapsed0;         /* training seconds of earlier sessions */
    int64_t tokens;          /* training tokens processed (all sessions) */
    int64_t last_ckpt_step;  /* step of the checkpoint on disk, -1 when none */
    int32_t *wins;           /* (batch_size, S+1) */
    int32_t *ev_in, *ev_tg;  /* (Bm, S) */
    char ckpt_path[4200], log_path[4200];
    char tok_name[64];       /* file name of the tokenizer copy, "" when none */
    /* session */
    double step_time;        /* seconds spent in steps this session */
    double run_t0;           /* start of this session's nl_trainer_run (wall clock) */
    double load_time;        /* seconds nl_trainer_create took (tokenizing the splits, init) */
    int64_t session_steps, session_tokens;
    double last_train_loss;  /* mean CE over the last log window */
    double last_val_loss;
    int64_t stop_at;         /* 0 or the step to stop after */
    char resume_note[256];   /* first optimizer/run key changed since the checkpoint */
    int64_t last_val_n, last_val_step;
};

static nl_status mkdir_p(nl_ctx *ctx, const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return nl_errorf(ctx, NL_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return nl_errorf(ctx, NL_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return nl_errorf(ctx, NL_EIO, "output '%s' exists and is not a folder", buf);
    return NL_OK;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static nl_train_dims dims_of(const nl_train_config *c) {
    nl_train_dims d = {0};
    d.d_model = c->d_model;
    d.n_layers = c->n_layers;
    d.n_heads = c->n_heads;
    d.n_kv_heads = c->n_kv_heads;
    d.d_ff = c->d_ff;
    d.vocab_size = c->vocab_size;
    d.rope_theta = (float)c->rope_theta;
    d.norm_eps = (float)c->norm_eps;
    d.tie_embeddings = c->tie_word_embeddings;
    d.act = c->hidden_act;
    d.moe = c->moe_type;
    d.n_experts = c->moe_experts;
    d.top_k = c->moe_top_k;
    d.d_expert = c->moe_d_expert;
    d.d_shared = c->moe_shared_d;
    d.norm_topk = c->moe_norm_topk;
    return d;
}

/* Keeps the log rows with "step" ≤ upto (a resumed run rewrites the rest). */
static nl_status trim_log(nl_ctx *ctx, const char *path, int64_t upto) {
    FILE *f = fopen(path, "r");
    if (!f) return NL_OK;
    nl_atomic_file af;
    nl_status st = nl_atomic_open(ctx, path, &af);
    if (st != NL_OK) {
        fclose(f);
        return st;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        json_t *s = r ? json_object_get(r, "step") : NULL;
        if (json_is_integer(s) && json_integer_value(s) <= upto) fputs(line, af.f);
        json_decref(r);
    }
    free(line);
    fclose(f);
    return nl_atomic_commit(ctx, &af);
}

static void append_log(nl_trainer *t, json_t *row) {
    FILE *f = fopen(t->log_path, "a");
    if (!f) return; /* the log is best effort; the checkpoint is what matters */
    char *s = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (s) fprintf(f, "%s\n", s);
    free(s);
    fclose(f);
}

static nl_status load_split(nl_ctx *ctx, nl_trainer *t, const char *path, const char *key, nl_token_stream *s,
                            int need_train_window) {
    nl_status st = nl_token_stream_load(ctx, path, t->tok, t->cfg.vocab_size, s);
    if (st != NL_OK) return st;
    const int S = t->cfg.seq_len;
    if (need_train_window && nl_token_stream_n_windows(s, S) < 1)
        return nl_errorf(ctx, NL_EINVAL, "'%s' (%s of '%s'): %lld tokens are too few for one window of seq_len + 1 = %d",
                         path, key, t->cfg.path, (long long)s->n, S + 1);
    if (!need_train_window && s->n < 2)
        return nl_errorf(ctx, NL_EINVAL, "'%s' (%s of '%s'): %lld token(s), nothing to predict", path, key, t->cfg.path,
                         (long long)s->n);
    return NL_OK;
}

static json_t *tensor_list(const nl_train_model *m) {
    json_t *a = json_array();
    for (int i = 0; i < nl_train_model_n_tensors(m); i++) {
        const nl_train_tensor *x = nl_train_model_tensor(m, i);
        json_array_append_new(a, json_pack("[s,I,I]", x->name, (json_int_t)x->offset, (json_int_t)x->numel));
    }
    return a;
}

nl_status nl_trainer_create(nl_ctx *ctx, const nl_train_config *cfg, int resume, nl_trainer **out) {
    *out = NULL;
    const double t_create = nl_now();
    nl_trainer *t = calloc(1, sizeof *t);
    if (!t) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    t->cfg = *cfg;
    t->last_ckpt_step = -1;
    t->last_val_loss = NAN;
    t->last_train_loss = NAN;
    nl_train_config *c = &t->cfg;
    nl_status st = NL_OK;
    nl_checkpoint ck = {0};

    /* tokenizer and vocabulary */
    if (c->tokenizer[0]) {
        const char *bn = base_name(c->tokenizer);
        size_t bl = strlen(bn);
        if (bl > 6 && !strcmp(bn + bl - 6, ".model")) snprintf(t->tok_name, sizeof t->tok_name, "tokenizer.model");
        else if (bl > 5 && !strcmp(bn + bl - 5, ".json") && strcmp(bn, "vocab.json") && strcmp(bn, "encoder.json"))
            snprintf(t->tok_name, sizeof t->tok_name, "tokenizer.json");
        else {
            st = nl_errorf(ctx, NL_EINVAL, "'%s': tokenizer '%s' must be a tokenizer.json or tokenizer.model file",
                           c->path, c->tokenizer);
            goto fail;
        }
        if ((st = nl_tokenizer_open(ctx, c->tokenizer, &t->tok)) != NL_OK) goto fail;
        const int tv = nl_tokenizer_vocab_size(t->tok);
        if (c->vocab_size == 0) c->vocab_size = tv;
        else if (c->vocab_size < tv) {
            st = nl_errorf(ctx, NL_EINVAL,
                           "'%s': vocab_size %d is smaller than the %d ids of tokenizer '%s' (use at least %d, or leave "
                           "vocab_size out)", c->path, c->vocab_size, tv, c->tokenizer, tv);
            goto fail;
        }
    }
    /* data */
    if ((st = load_split(ctx, t, c->train_data, "train_data", &t->train, 1)) != NL_OK) goto fail;
    if (c->val_data[0]) {
        if ((st = load_split(ctx, t, c->val_data, "val_data", &t->val, 0)) != NL_OK) goto fail;
        t->has_val = 1;
    }
    /* model and optimizer */
    t->Bm = c->batch_size / c->grad_accum;
    nl_train_dims d = dims_of(c);
    if ((st = nl_train_model_create(ctx, &d, t->Bm, c->seq_len, &t->model)) != NL_OK) {
        char m[1024];
        snprintf(m, sizeof m, "%s", ctx->msg);
        st = nl_errorf(ctx, st, "'%s': %s", c->path, m);
        goto fail;
    }
    if ((st = nl_adamw_init(ctx, &t->opt, nl_train_model_n_params(t->model))) != NL_OK) goto fail;
    t->hp = (nl_adamw_hparams){c->beta1, c->beta2, c->eps, c->weight_decay};
    t->wins = malloc((size_t)c->batch_size * (c->seq_len + 1) * sizeof(int32_t));
    t->ev_in = malloc((size_t)t->Bm * c->seq_len * sizeof(int32_t));
    t->ev_tg = malloc((size_t)t->Bm * c->seq_len * sizeof(int32_t));
    if (!t->wins || !t->ev_in || !t->ev_tg) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    nl_rng_derive(&t->rng, (uint64_t)c->seed, 4, 0);
    nl_train_model_init(t->model, (uint64_t)c->seed);

    /* output folder, checkpoint */
    if ((st = mkdir_p(ctx, c->out)) != NL_OK) goto fail;
    snprintf(t->ckpt_path, sizeof t->ckpt_path, "%s/checkpoint.bin", c->out);
    snprintf(t->log_path, sizeof t->log_path, "%s/train_log.jsonl", c->out);
    if (!resume) {
        if (file_exists(t->ckpt_path)) {
            st = nl_errorf(ctx, NL_EINVAL,
                           "'%s' exists: continue it with --resume, or remove it to start over (config '%s')",
                           t->ckpt_path, c->path);
            goto fail;
        }
        FILE *f = fopen(t->log_path, "w");
        if (!f) { st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", t->log_path, strerror(errno)); goto fail; }
        fclose(f);
    } else {
        if (!file_exists(t->ckpt_path)) {
            st = nl_errorf(ctx, NL_EINVAL, "'%s': no checkpoint to resume (run without --resume to start)", t->ckpt_path);
            goto fail;
        }
        if ((st = nl_checkpoint_load(ctx, t->ckpt_path, &ck)) != NL_OK) goto fail;
        nl_train_config old;
        nl_ctx tmp;
        nl_ctx_init(&tmp);
        if (nl_train_config_from_json(&tmp, t->ckpt_path, ck.config, &old) != NL_OK) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': the stored config is invalid: %s", t->ckpt_path, tmp.msg);
            goto fail;
        }
        const char *k = nl_train_config_run_diff(&old, c);
        if (k) {
            st = nl_errorf(ctx, NL_EINVAL,
                           "'%s': key '%s' differs from checkpoint '%s'; a resumed run must keep the model and data keys",
                           c->path, k, t->ckpt_path);
            goto fail;
        }
        const char *ko = nl_train_config_other_diff(&old, c);
        if (ko) snprintf(t->resume_note, sizeof t->resume_note, "; key '%s' (and maybe others) changed since the checkpoint", ko);
        if (ck.data_hash != t->train.hash) {
            st = nl_errorf(ctx, NL_EINVAL, "'%s': the training tokens differ from those of checkpoint '%s' (the data "
                           "or the tokenizer changed)", c->train_data, t->ckpt_path);
            goto fail;
        }
        if (ck.n_params != nl_train_model_n_params(t->model)) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': %lld parameters, the config implies %lld", t->ckpt_path,
                           (long long)ck.n_params, (long long)nl_train_model_n_params(t->model));
            goto fail;
        }
        const size_t nb = (size_t)ck.n_params * sizeof(float);
        memcpy(nl_train_model_params(t->model), ck.params, nb);
        memcpy(t->opt.m, ck.m, nb);
        memcpy(t->opt.v, ck.v, nb);
        t->opt.t = ck.adam_t;
        t->step = ck.step;
        t->elapsed0 = ck.elapsed;
        t->tokens = ck.tokens;
        t->rng = ck.rng;
        t->last_ckpt_step = ck.step;
        if ((st = trim_log(ctx, t->log_path, ck.step)) != NL_OK) goto fail;
    }
    nl_checkpoint_release(&ck);
    t->load_time = nl_now() - t_create;
    *out = t;
    return NL_OK;
fail:
    nl_checkpoint_release(&ck);
    nl_trainer_destroy(t);
    return st;
}

void nl_trainer_destroy(nl_trainer *t) {
    if (!t) return;
    nl_tokenizer_close(t->tok);
    nl_token_stream_release(&t->train);
    nl_token_stream_release(&t->val);
    nl_train_model_destroy(t->model);
    nl_adamw_release(&t->opt);
    free(t->wins);
    free(t->ev_in);
    free(t->ev_tg);
    free(t);
}

void nl_trainer_get_info(const nl_trainer *t, nl_trainer_info *o) {
    memset(o, 0, sizeof *o);
    o->n_params = nl_train_model_n_params(t->model);
    /* a token uses top_k of the E routed experts of each layer */
    o->n_active_params = o->n_params - (int64_t)t->cfg.n_layers * (t->cfg.moe_experts - t->cfg.moe_top_k) * 3 *
                                           t->cfg.moe_d_expert * t->cfg.d_model;
    o->start_step = t->step;
    o->train_tokens = t->train.n;
    o->val_tokens = t->has_val ? t->val.n : 0;
    o->train_windows = nl_token_stream_n_windows(&t->train, t->cfg.seq_len);
    o->vocab_size = t->cfg.vocab_size;
    o->micro_batch = t->Bm;
    o->act_bytes = nl_train_model_act_bytes(t->model);
    o->flops_per_token = nl_train_model_flops_per_window(t->model) / t->cfg.seq_len;
    o->blas_core = openblas_get_corename();
    o->threads = omp_get_max_threads();
}

nl_status nl_trainer_eval(nl_trainer *t, nl_ctx *ctx, double *nll, int64_t *n) {
    if (!t->has_val) return nl_errorf(ctx, NL_EINVAL, "'%s': no val_data to evaluate", t->cfg.path);
    const int S = t->cfg.seq_len;
    int64_t total = nl_token_stream_n_eval_windows(&t->val, S);
    if (t->cfg.eval_batches > 0 && (int64_t)t->cfg.eval_batches * t->Bm < total) total = (int64_t)t->cfg.eval_batches * t->Bm;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t k0 = 0; k0 < total; k0 += t->Bm) {
        int B = total - k0 < t->Bm ? (int)(total - k0) : t->Bm;
        for (int b = 0; b < B; b++)
            nl_token_stream_eval_window(&t->val, S, k0 + b, t->ev_in + (size_t)b * S, t->ev_tg + (size_t)b * S);
        nl_train_model_nll(t->model, t->ev_in, t->ev_tg, B, &sum, &cnt);
    }
    *nll = cnt ? sum / cnt : NAN;
    *n = cnt;
    return NL_OK;
}

/* ---- outputs ------------------------------------------------------------------------------------- */

static nl_status write_config_json(nl_ctx *ctx, nl_trainer *t) {
    const nl_train_config *c = &t->cfg;
    json_t *o = json_object();
    const int moe = c->moe_type;
    json_object_set_new(o, "architectures", json_pack("[s]", moe == NL_TRAIN_MOE_MIXTRAL ? "MixtralForCausalLM"
                                                           : moe == NL_TRAIN_MOE_QWEN2 ? "Qwen2MoeForCausalLM"
                                                                                       : "LlamaForCausalLM"));
    json_object_set_new(o, "model_type", json_string(moe == NL_TRAIN_MOE_MIXTRAL ? "mixtral"
                                                     : moe == NL_TRAIN_MOE_QWEN2 ? "qwen2_moe"
                                                                                 : "llama"));
    json_object_set_new(o, "hidden_size", json_integer(c->d_model));
    /* mixtral: intermediate_size is the experts' width; qwen2_moe: the (unused) dense width, set the same */
    json_object_set_new(o, "intermediate_size", json_integer(moe ? c->moe_d_expert : c->d_ff));
    if (moe == NL_TRAIN_MOE_MIXTRAL) {
        json_object_set_new(o, "num_local_experts", json_integer(c->moe_experts));
        json_object_set_new(o, "num_experts_per_tok", json_integer(c->moe_top_k));
        json_object_set_new(o, "sliding_window", json_null());
        json_object_set_new(o, "router_jitter_noise", json_real(0));
    } else if (moe == NL_TRAIN_MOE_QWEN2) {
        json_object_set_new(o, "num_experts", json_integer(c->moe_experts));
        json_object_set_new(o, "num_experts_per_tok", json_integer(c->moe_top_k));
        json_object_set_new(o, "moe_intermediate_size", json_integer(c->moe_d_expert));
        json_object_set_new(o, "shared_expert_intermediate_size", json_integer(c->moe_shared_d));
        json_object_set_new(o, "norm_topk_prob", json_boolean(c->moe_norm_topk));
        json_object_set_new(o, "decoder_sparse_step", json_integer(1));
        json_object_set_new(o, "mlp_only_layers", json_array());
        json_object_set_new(o, "qkv_bias", json_false());
        json_object_set_new(o, "use_sliding_window", json_false());
    }
    if (moe) {
        json_object_set_new(o, "router_aux_loss_coef", json_real(c->moe_aux_loss));
        json_object_set_new(o, "output_router_logits", json_false());
    }
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->d_model / c->n_heads));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_real(c->norm_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "hidden_act", json_string(nl_act_name(c->hidden_act)));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (!moe) {
        json_object_set_new(o, "attention_bias", json_false());
        json_object_set_new(o, "mlp_bias", json_false());
    }
    json_object_set_new(o, "initializer_range", json_real(0.02));
    const int bos = t->tok ? nl_tokenizer_bos(t->tok) : -1, eos = t->tok ? nl_tokenizer_eos(t->tok) : -1;
    json_object_set_new(o, "bos_token_id", bos >= 0 ? json_integer(bos) : json_null());
    json_object_set_new(o, "eos_token_id", eos >= 0 ? json_integer(eos) : json_null());
    json_object_set_new(o, "torch_dtype", json_string(c->save_dtype == NL_DT_F32    ? "float32"
                                                      : c->save_dtype == NL_DT_BF16 ? "bfloat16"
                                                                                    : "float16"));
    json_object_set_new(o, "use_cache", json_true());
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(o);
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", c->out);
    nl_status st = s ? nl_write_file_atomic(ctx, path, s, strlen(s)) : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    free(s);
    return st;
}

static nl_status write_safetensors(nl_ctx *ctx, nl_trainer *t) {
    nl_st_writer *w;
    nl_status st = nl_st_writer_create(ctx, &w);
    if (st != NL_OK) return st;
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%lld", (long long)t->step);
    nl_st_writer_meta(ctx, w, "producer", "neuronlab train " NL_VERSION);
    nl_st_writer_meta(ctx, w, "step", stepbuf);
    const float *p = nl_train_model_params(t->model);
    for (int i = 0; i < nl_train_model_n_tensors(t->model) && st == NL_OK; i++) {
        const nl_train_tensor *x = nl_train_model_tensor(t->model, i);
        st = nl_st_writer_add(ctx, w, x->name, t->cfg.save_dtype, x->ndim, x->shape, p + x->offset);
    }
    char path[4300];
    snprintf(path, sizeof path, "%s/model.safetensors", t->cfg.out);
    if (st == NL_OK) st = nl_st_writer_write(ctx, w, path);
    nl_st_writer_destroy(w);
    return st;
}

static nl_status copy_tokenizer(nl_ctx *ctx, nl_trainer *t) {
    if (!t->tok_name[0]) return NL_OK;
    FILE *f = fopen(t->cfg.tokenizer, "rb");
    if (!f) return nl_errorf(ctx, NL_EIO, "cannot read tokenizer '%s': %s", t->cfg.tokenizer, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        return nl_errorf(ctx, NL_EIO, "cannot read tokenizer '%s'", t->cfg.tokenizer);
    }
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", t->cfg.out, t->tok_name);
    nl_status st = nl_write_file_atomic(ctx, path, buf, (size_t)n);
    free(buf);
    return st;
}

/* Wall-clock seconds of training over all sessions (steps, evaluations, checkpoints). */
static double now_elapsed(const nl_trainer *t) { return t->elapsed0 + (t->run_t0 > 0 ? nl_now() - t->run_t0 : 0); }

static nl_status write_training_json(nl_ctx *ctx, nl_trainer *t, int complete) {
    const nl_train_config *c = &t->cfg;
    nl_trainer_info info;
    nl_trainer_get_info(t, &info);
    json_t *o = json_object();
    json_object_set_new(o, "format", json_string("neuronlab.training"));
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "neuronlab_version", json_string(NL_VERSION));
    json_object_set_new(o, "complete", json_boolean(complete));
    json_object_set_new(o, "step", json_integer(t->step));
    json_object_set_new(o, "steps", json_integer(c->steps));
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_object_set_new(o, "written", json_string(when));
    json_object_set_new(o, "config_file", json_string(c->path));
    json_object_set_new(o, "config", nl_train_config_to_json(c));
    json_t *m = json_object();
    json_object_set_new(m, "n_params", json_integer(info.n_params));
    json_object_set_new(m, "n_active_params", json_integer(info.n_active_params));
    json_object_set_new(m, "flops_per_token", json_real(info.flops_per_token));
    json_object_set_new(o, "model", m);
    json_t *d = json_object();
    json_object_set_new(d, "train", json_pack("{s:s,s:I,s:i,s:I}", "path", c->train_data, "tokens", (json_int_t)t->train.n,
                                              "documents", t->train.n_docs, "windows", (json_int_t)info.train_windows));
    if (t->has_val)
        json_object_set_new(d, "val", json_pack("{s:s,s:I,s:i}", "path", c->val_data, "tokens", (json_int_t)t->val.n,
                                                "documents", t->val.n_docs));
    json_object_set_new(o, "data", d);
    json_t *r = json_object();
    json_object_set_new(r, "wall_time_s", json_real(now_elapsed(t)));
    json_object_set_new(r, "step_time_s", json_real(t->step_time));
    json_object_set_new(r, "load_time_s", json_real(t->load_time));
    json_object_set_new(r, "tokens_seen", json_integer(t->tokens));
    json_object_set_new(r, "epochs", json_real(info.train_windows ? (double)t->tokens / ((double)info.train_windows * c->seq_len) : 0));
    const double tps = t->step_time > 0 ? t->session_tokens / t->step_time : 0;
    json_object_set_new(r, "tokens_per_s", json_real(tps));
    json_object_set_new(r, "gflops", json_real(tps * info.flops_per_token / 1e9));
    json_object_set_new(r, "blas_core", json_string(info.blas_core ? info.blas_core : "?"));
    json_object_set_new(r, "threads", json_integer(info.threads));
    json_object_set_new(r, "micro_batch", json_integer(info.micro_batch));
    json_object_set_new(r, "activation_bytes", json_integer(info.act_bytes));
    json_object_set_new(o, "run", r);
    json_t *fin = json_object();
    json_object_set_new(fin, "train_loss", isfinite(t->last_train_loss) ? json_real(t->last_train_loss) : json_null());
    json_object_set_new(fin, "val_loss", isfinite(t->last_val_loss) ? json_real(t->last_val_loss) : json_null());
    json_object_set_new(fin, "val_predictions", json_integer(t->last_val_n));
    json_object_set_new(fin, "val_step", json_integer(t->last_val_step));
    json_object_set_new(o, "final", fin);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(o);
    char path[4300];
    snprintf(path, sizeof path, "%s/training.json", c->out);
    nl_status st = s ? nl_write_file_atomic(ctx, path, s, strlen(s)) : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    free(s);
    return st;
}

static nl_status save_all(nl_ctx *ctx, nl_trainer *t, int complete) {
    nl_checkpoint ck = {0};
    ck.step = t->step;
    ck.adam_t = t->opt.t;
    ck.n_params = nl_train_model_n_params(t->model);
    ck.params = nl_train_model_params(t->model);
    ck.m = t->opt.m;
    ck.v = t->opt.v;
    ck.elapsed = now_elapsed(t);
    ck.tokens = t->tokens;
    ck.data_hash = t->train.hash;
    ck.rng = t->rng;
    ck.config = nl_train_config_to_json(&t->cfg);
    ck.tensors = tensor_list(t->model);
    nl_status st = nl_checkpoint_save(ctx, t->ckpt_path, &ck);
    json_decref(ck.config);
    json_decref(ck.tensors);
    if (st != NL_OK) return st;
    t->last_ckpt_step = t->step;
    if ((st = write_safetensors(ctx, t)) != NL_OK) return st;
    if ((st = write_config_json(ctx, t)) != NL_OK) return st;
    if ((st = copy_tokenizer(ctx, t)) != NL_OK) return st;
    return write_training_json(ctx, t, complete);
}

static void emit(nl_train_cb cb, void *user, nl_train_event *ev) {
    if (cb) cb(user, ev);
}

static nl_status bad_step(nl_ctx *ctx, nl_trainer *t, int64_t s, const char *what, double v) {
    char keep[4400];
    if (t->last_ckpt_step >= 0)
        snprintf(keep, sizeof keep, "the last good checkpoint '%s' (step %lld) is kept", t->ckpt_path,
                 (long long)t->last_ckpt_step);
    else
        snprintf(keep, sizeof keep, "no checkpoint was written");
    return nl_errorf(ctx, NL_EINVAL, "'%s': %s is %s at step %lld (lr %.3g); stopped, %s", t->cfg.path, what,
                     isnan(v) ? "nan" : "inf", (long long)s, nl_lr_at(s, t->cfg.steps, t->cfg.warmup_steps, t->cfg.lr,
                                                                    t->cfg.min_lr), keep);
}

void nl_trainer_stop_at(nl_trainer *t, int64_t step) { t->stop_at = step; }

nl_status nl_trainer_run(nl_trainer *t, nl_ctx *ctx, nl_train_cb cb, void *user) {
    const nl_train_config *c = &t->cfg;
    const int S = c->seq_len, accum = c->grad_accum;
    const float gscale = 1.0f / (float)accum;
    const int64_t n = nl_train_model_n_params(t->model);
    nl_status st;
    double win_loss = 0;
    int win_n = 0;
    t->run_t0 = nl_now();
    if (t->step > 0) {
        char note[4800];
        snprintf(note, sizeof note, "resuming from step %lld of %d (checkpoint '%s')%s", (long long)t->step, c->steps,
                 t->ckpt_path, t->resume_note);
        nl_train_event ev = {.kind = NL_TRAIN_EV_NOTE, .step = t->step, .steps = c->steps, .note = note};
        emit(cb, user, &ev);
    }
    const int64_t last = t->stop_at > 0 && t->stop_at < c->steps ? t->stop_at : c->steps;
    for (int64_t s = t->step + 1; s <= last; s++) {
        if (nl_interrupted) break;
        const double t0 = nl_now();
        const double lr = nl_lr_at(s, c->steps, c->warmup_steps, c->lr, c->min_lr);
        if ((st = nl_token_stream_batch(ctx, &t->train, S, (uint64_t)c->seed, s, c->batch_size, t->wins)) != NL_OK)
            return st;
        nl_train_model_zero_grad(t->model);
        double ce = 0, l1m = 0, aux = 0;
        int stopped = 0;
        for (int j = 0; j < accum; j++) {
            if (nl_interrupted) { stopped = 1; break; }
            double ce_j, l1_j, aux_j;
            nl_train_model_forward_backward(t->model, t->wins + (size_t)j * t->Bm * (S + 1), t->Bm, (float)c->l1,
                                            (float)c->moe_aux_loss, gscale, &ce_j, &l1_j, &aux_j);
            ce += ce_j / accum;
            l1m += l1_j / accum;
            aux += aux_j / accum;
        }
        if (stopped) break;
        if (!isfinite(ce)) return bad_step(ctx, t, s, "the loss", ce);
        float *g = nl_train_model_grads(t->model), *p = nl_train_model_params(t->model);
        const double gn = nl_clip_grad_norm(g, n, c->grad_clip);
        if (!isfinite(gn)) return bad_step(ctx, t, s, "the gradient norm", gn);
        nl_adamw_begin_step(&t->opt);
        for (int i = 0; i < nl_train_model_n_tensors(t->model); i++) {
            const nl_train_tensor *x = nl_train_model_tensor(t->model, i);
            nl_adamw_update(&t->opt, p, g, x->offset, x->numel, lr, x->decay, &t->hp);
        }
        t->step = s;
        t->tokens += (int64_t)c->batch_size * S;
        t->session_tokens += (int64_t)c->batch_size * S;
        t->session_steps++;
        t->step_time += nl_now() - t0;
        win_loss += ce;
        win_n++;
        const double tps = t->session_tokens / t->step_time;
        const double eta = (c->steps - s) * (t->step_time / t->session_steps);
        nl_train_event ev = {.kind = NL_TRAIN_EV_TICK, .step = s, .steps = c->steps, .loss = ce, .l1_mean = l1m, .lr = lr,
                             .grad_norm = gn, .tok_per_s = tps, .elapsed = now_elapsed(t), .eta = eta,
                             .aux = c->moe_type ? aux : NAN};
        emit(cb, user, &ev);
        if (s % c->log_every == 0 || s == c->steps || s == 1) {
            t->last_train_loss = win_loss / win_n;
            win_loss = 0;
            win_n = 0;
            ev.kind = NL_TRAIN_EV_STEP;
            emit(cb, user, &ev);
            json_t *row = c->moe_type
                              ? json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "step", (json_int_t)s, "loss", ce, "aux", aux,
                                          "lr", lr, "grad_norm", gn, "tokens_per_s", tps, "elapsed", now_elapsed(t))
                              : json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "step", (json_int_t)s, "loss", ce, "l1", l1m,
                                          "lr", lr, "grad_norm", gn, "tokens_per_s", tps, "elapsed", now_elapsed(t));
            append_log(t, row);
            json_decref(row);
        }
        if (t->has_val && ((c->eval_every > 0 && s % c->eval_every == 0) || s == c->steps)) {
            double vl;
            int64_t vn;
            if ((st = nl_trainer_eval(t, ctx, &vl, &vn)) != NL_OK) return st;
            t->last_val_loss = vl;
            t->last_val_n = vn;
            t->last_val_step = s;
            nl_train_event ee = {.kind = NL_TRAIN_EV_EVAL, .step = s, .steps = c->steps, .loss = vl,
                                 .elapsed = now_elapsed(t), .val_tokens = vn};
            emit(cb, user, &ee);
            json_t *row = json_pack("{s:I,s:f,s:I,s:f}", "step", (json_int_t)s, "val_loss", vl, "val_tokens",
                                    (json_int_t)vn, "elapsed", now_elapsed(t));
            append_log(t, row);
            json_decref(row);
        }
        if (c->checkpoint_every > 0 && s % c->checkpoint_every == 0 && s != c->steps) {
            if ((st = save_all(ctx, t, 0)) != NL_OK) return st;
            char note[4400];
            snprintf(note, sizeof note, "checkpoint '%s' at step %lld", t->ckpt_path, (long long)s);
            nl_train_event ce_ev = {.kind = NL_TRAIN_EV_CHECKPOINT, .step = s, .steps = c->steps, .note = note};
            emit(cb, user, &ce_ev);
        }
    }
    if (win_n) t->last_train_loss = win_loss / win_n;
    if (nl_interrupted) {
        if (t->step != t->last_ckpt_step && (st = save_all(ctx, t, 0)) != NL_OK) return st;
        return nl_errorf(ctx, NL_EINTR, "interrupted: checkpoint '%s' holds step %lld of %d (continue with --resume)",
                         t->ckpt_path, (long long)t->step, c->steps);
    }
    if (t->step < c->steps) { /* stopped early on request */
        if (t->step != t->last_ckpt_step && (st = save_all(ctx, t, 0)) != NL_OK) return st;
        return NL_OK;
    }
    if (t->has_val && t->last_val_step != t->step) { /* resumed at the end: evaluate what is saved */
        if ((st = nl_trainer_eval(t, ctx, &t->last_val_loss, &t->last_val_n)) != NL_OK) return st;
        t->last_val_step = t->step;
    }
    return save_all(ctx, t, 1);
}
