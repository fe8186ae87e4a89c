/* model_internal.h — the private model struct every loader fills.
 *
 * A loader maps its files (nl_model_map), fills cfg and the stored tensor views below
 * (usually through the architecture table and a tensor source, src/model/arch.h), and
 * returns; model.c does everything else (f32 conversion, embedding, head).
 * Conversion rule: a stored tensor that is f32 is used in place; tensors of other dtypes
 * are converted (through the dtype table) into m->slot (one layer) or m->head_buf (final
 * norm + LM head, once).
 */
#ifndef NEURONLAB_MODEL_INTERNAL_H
#define NEURONLAB_MODEL_INTERNAL_H

#include "neuronlab/model.h"

#define NL_MAX_MAPS 256

typedef struct {
    nl_tensor ln1_w, ln1_b, ln2_w, ln2_b;
    nl_tensor wq, wk, wv, bq, bk, bv; /* NL_QKV_SEPARATE */
    nl_tensor wqkv, bqkv;             /* fused layouts */
    nl_tensor wo, bo;
    nl_tensor w_gate, w_up, b_up, w_down, b_down;  /* dense FFN; absent on MoE layers */
    nl_tensor q_norm, k_norm;                      /* (Dh) qk_norm */
    nl_tensor router;                              /* (E, D) MoE layers */
    nl_tensor sh_gate, sh_up, sh_down, sh_router;  /* shared expert (Fs, D), (Fs, D), (D, Fs), (1, D) */
    nl_tensor *experts;       /* MoE layers: (E, 3) gate (Fe, D), up (Fe, D), down (D, Fe); owned */
    nl_expert_mats *views;    /* MoE layers: (E) f32 views handed out by nl_model_layer; owned */
} nl_stored_layer;

struct nl_model {
    nl_config cfg;
    char path[4096];
    nl_qkv_layout qkv_layout;
    int conv1d;               /* 1: matrices stored (n_in, n_out) (GPT-2 Conv1D) */
    int rope_unpermute;       /* 1: wq/bq rows are in llama.cpp's RoPE order for n_heads heads, wk/bk
                               * for n_kv_heads (GGUF llama); nl_model_layer restores HF's order */
    const char *act_source;   /* where cfg.act came from (static string; NULL: "config") */

    struct { void *base; size_t size; int file; } maps[NL_MAX_MAPS]; /* file: a read-only file mapping (nl_model_map) */
    int n_maps;

    nl_tensor tok_emb;        /* (V, D) */
    nl_tensor pos_emb;        /* (max_pos, D) learned positions or absent */
    nl_tensor norm_w, norm_b; /* (D) final norm */
    nl_tensor lm_head;        /* (V, D) absent when tied */
    nl_tensor lm_head_b;      /* (V) or absent */
    nl_stored_layer *layers;  /* (L) owned */

    float *slot;              /* f32 conversion buffer for one layer, owned */
    size_t slot_cap;          /* floats */
    int slot_layer;           /* layer currently in slot, -1 none */
    float **resident;         /* (n_layers) f32 copies kept by nl_model_keep_f32, owned; NULL: streaming */
    float *head_buf;          /* converted head, owned, or NULL */
    int head_ready;

    /* bf16 packed copies for --compute bf16 (model_bf16.c), owned */
    struct nl_bf16_layer **bf16;     /* (n_layers) kept per layer (nl_model_keep_bf16); NULL: one slot */
    struct nl_bf16_layer *bf16_slot; /* the one-layer slot when not kept */
    int bf16_slot_layer;             /* layer in bf16_slot + 1, 0 none */
    struct nl_bf16_layer *head_bf16; /* the LM head, packed once */
};

/* Frees the bf16 packed copies (model_bf16.c); nl_model_close calls it. */
void nl_model_bf16_free(nl_model *m);

/* Maps a whole file read-only; the mapping is owned by m and released by nl_model_close.
 * On success base and size describe it. Errors name the file. */
nl_status nl_model_map(nl_ctx *ctx, nl_model *m, const char *path, const void **base, size_t *size);

/* Allocates an empty model with path set; cfg zeroed with bos/eos = -1. */
nl_model *nl_model_alloc(const char *path);

/* Validates every tensor's presence and shape against cfg (message names `what`,
 * usually the file). Loaders call it last. */
nl_status nl_model_validate(nl_ctx *ctx, const nl_model *m, const char *what);

/* Copies every stored tensor whose data is not aligned to its element size (formats such
 * as safetensors do not promise alignment) into one aligned anonymous mapping registered in
 * m->maps, so model.c may read every f32 view as a float array. Loaders call it after
 * filling the tensors. */
nl_status nl_model_realign(nl_ctx *ctx, nl_model *m);

/* Loaders. */
nl_status nl_llama2c_open(nl_ctx *ctx, const char *path, nl_model **out);
nl_status nl_hf_open(nl_ctx *ctx, const char *dir, nl_model **out);
nl_status nl_gguf_open(nl_ctx *ctx, const char *path, const nl_model_opts *opts, nl_model **out);

#endif
