/* arch.h — the architecture table and the tensor sources the loaders resolve it through
 * (private to src/model).
 *
 * An architecture (nl_arch_desc) says what a model is, independent of any file format: norm
 * kind, positions, FFN kind, block wiring, activation and tied-embedding defaults. Each file
 * format that stores the architecture adds an nl_name_table: the tensor name of every
 * canonical role (token embedding, ln1_w, wq …, w_gate, w_up, w_down) as a printf pattern
 * with one %d for the layer, plus how that format lays the weights out (GPT-2 Conv1D
 * transposition, fused-QKV layout, RoPE pair style). A reader implements nl_tensor_source
 * (lookup by name → borrowed nl_tensor view); nl_arch_resolve fills the model's stored
 * tensors from a name table and a source, checking presence, dtype and shape.
 * Adding a format (GGUF: "blk.%d.attn_q.weight") = one name table per architecture + one
 * tensor source; adding an architecture = one nl_arch_desc row + its name tables.
 * Checked by tests/test_model.c (every architecture's names resolve on the fixtures) and
 * tests/test_hf.c.
 */
#ifndef NEURONLAB_MODEL_ARCH_H
#define NEURONLAB_MODEL_ARCH_H

#include "model/model_internal.h"

/* ---- canonical tensor roles ------------------------------------------------------------ */

/* Dimension symbols of the shapes the config implies (see the nl_config glossary). */
typedef enum {
    NL_DIM_NONE = 0, NL_DIM_D, NL_DIM_F, NL_DIM_V, NL_DIM_Q, NL_DIM_KV, NL_DIM_QKV, NL_DIM_P,
    NL_DIM_DH, /* head_dim */
    NL_DIM_E,  /* n_experts */
    NL_DIM_FE, /* d_expert */
    NL_DIM_FS, /* d_shared */
    NL_DIM_ONE /* 1 */
} nl_dim_sym;

/* Model-wide roles (fields of nl_model). */
typedef enum { NL_G_TOK_EMB, NL_G_POS_EMB, NL_G_NORM_W, NL_G_NORM_B, NL_G_LM_HEAD, NL_G_LM_HEAD_B, NL_G_COUNT } nl_global_role;
/* Per-layer roles (fields of nl_stored_layer). */
typedef enum {
    NL_R_LN1_W, NL_R_LN1_B, NL_R_LN2_W, NL_R_LN2_B, NL_R_WQ, NL_R_WK, NL_R_WV, NL_R_BQ, NL_R_BK, NL_R_BV,
    NL_R_WQKV, NL_R_BQKV, NL_R_WO, NL_R_BO, NL_R_W_GATE, NL_R_W_UP, NL_R_B_UP, NL_R_W_DOWN, NL_R_B_DOWN,
    NL_R_Q_NORM, NL_R_K_NORM,   /* per-head q/k RMSNorm (Dh) */
    NL_R_ROUTER,                /* (E, D) MoE layers */
    NL_R_SH_GATE, NL_R_SH_UP, NL_R_SH_DOWN, NL_R_SH_ROUTER, /* shared expert (Fs, D), (Fs, D), (D, Fs), (1, D) */
    NL_R_COUNT
} nl_layer_role;
/* The dense-FFN roles (W_GATE … B_DOWN) are not loaded on MoE layers (nl_config_is_moe_layer);
 * the routed experts are named by nl_name_table.expert (two %d: layer, expert). */

typedef struct {
    const char *role;  /* "tok_emb", "wq" … */
    size_t off;        /* offset of the nl_tensor in nl_model (global) or nl_stored_layer (layer) */
    nl_dim_sym d0, d1; /* (n_out, n_in) for matrices like torch.nn.Linear; swapped when conv1d */
} nl_role_def;

extern const nl_role_def nl_global_roles[NL_G_COUNT];
extern const nl_role_def nl_layer_roles[NL_R_COUNT];

/* ---- name tables: one per (format, architecture) ---------------------------------------- */

/* When a named tensor is loaded. */
typedef enum {
    NL_TN_REQ = 0,   /* always; missing is an error */
    NL_TN_OPT,       /* when present */
    NL_TN_UNTIED,    /* unless the embeddings are tied (then the token embedding is the LM head) */
    NL_TN_ATTN_BIAS, /* when the config's attention-bias flag is true */
    NL_TN_QK_NORM,   /* when the config has per-head q/k norms (qk_norm) */
    NL_TN_MOE,       /* on mixture-of-experts layers (required there) */
    NL_TN_SHARED,    /* on mixture-of-experts layers when the config has a shared expert */
} nl_tn_flag;

typedef struct {
    const char *name; /* global: the name; layer: a pattern with one %d (the layer index) */
    nl_tn_flag flag;
} nl_tname;

typedef struct {
    const char *strip;         /* prefix some files omit: a name is also tried without it; "" none */
    int conv1d;                /* matrices stored (n_in, n_out) (GPT-2 Conv1D) */
    nl_qkv_layout qkv;         /* how the attention input projection is stored */
    int rope_interleaved;      /* 1: rotate adjacent pairs; 0: rotate halves (HF rotate_half) */
    nl_tname global[NL_G_COUNT];
    nl_tname layer[NL_R_COUNT]; /* unnamed roles are absent */
    /* Routed experts of MoE layers: printf patterns with two %d (layer, expert) for the gate
     * (Fe, D), up (Fe, D) and down (D, Fe) projections; NULL when the format has none. */
    const char *expert[3];
} nl_name_table;

/* ---- architectures ---------------------------------------------------------------------- */

typedef enum {
    NL_BLOCK_SEQUENTIAL = 0, /* x += attn(n1(x)); x += ffn(n2(x)) */
    NL_BLOCK_PARALLEL,       /* x + attn(n1(x)) + ffn(n2(x)) (GPT-NeoX; a config may turn it off) */
    NL_BLOCK_SHARED_NORM,    /* x + attn(n1(x)) + ffn(n1(x)) (Phi) */
} nl_block_wiring;

typedef struct {
    nl_arch arch;
    const char *name;        /* nl_arch_name */
    nl_norm norm;
    nl_pos pos;
    int ffn_gated;
    nl_block_wiring block;
    double rotary_def;       /* fraction of head_dim rotated unless the config says otherwise (0: no RoPE) */
    const char *act_def;     /* activation unless the config says otherwise (nl_act_parse name) */
    int tie_def;             /* tied embeddings unless the config says otherwise */
    int attn_bias_def;       /* attention biases unless the config says otherwise */
    const nl_name_table *hf; /* Hugging Face safetensors names */
} nl_arch_desc;

/* Row of a (every nl_arch has one). Borrowed, static. */
const nl_arch_desc *nl_arch_desc_of(nl_arch a);

/* ---- tensor sources --------------------------------------------------------------------- */

typedef struct {
    nl_tensor t;      /* borrowed view (inside the source's mapping; may be unaligned) */
    const char *name; /* the name as stored, borrowed from the source */
    const char *file; /* the file holding it (messages), borrowed from the source */
} nl_source_tensor;

/* A reader's tensors by name. Owned by whoever opened it; close with nl_tensor_source_close
 * (the mappings stay with the model). */
typedef struct nl_tensor_source {
    const char *path; /* names the source in messages (a file, or a sharded checkpoint's index) */
    void *impl;
    /* Looks `name` up: NL_OK with *found = 1 and *out filled; NL_OK with *found = 0 when the
     * source has no such tensor; an error (a dtype the model cannot use …) with the message set. */
    nl_status (*lookup)(nl_ctx *ctx, void *impl, const char *name, nl_source_tensor *out, int *found);
    void (*close)(void *impl);
} nl_tensor_source;

void nl_tensor_source_close(nl_tensor_source *s); /* NULL is a no-op */

/* The safetensors source of a Hugging Face folder: dir/model.safetensors, or
 * dir/model.safetensors.index.json and the shards its weight_map names. Files are mapped
 * into m (nl_model_map). On success *out is owned by the caller. */
nl_status nl_st_source_open(nl_ctx *ctx, nl_model *m, const char *dir, nl_tensor_source **out);

/* ---- resolving names into the model ----------------------------------------------------- */

typedef struct {
    /* in */
    const nl_name_table *names;
    nl_tensor_source *src;
    const char *model_type; /* in missing-tensor messages: "(model_type llama)" */
    const char *cfg_name;   /* in shape messages: "config.json implies [..]" */
    const char *cfg_path;   /* the config file, in layer-count messages; NULL: cfg_name */
    const char *layers_key; /* the config field of the layer count ("num_hidden_layers"); NULL: "n_layers" */
    int attn_bias;          /* for NL_TN_ATTN_BIAS names */
    int want_dt;            /* expected dtype of the layer matrices, or -1: the first one's */
    /* out: dtype agreement of the layer matrices */
    int n_mats, n_odd;      /* matrices seen; those whose dtype differs from want_dt */
    char odd_name[256], odd_file[4096];
    nl_dtype odd_dt;        /* the first odd matrix */
} nl_resolver;

/* Fills m's stored tensors (m->cfg set, m->layers allocated here) from r->names through
 * r->src: every named tensor is looked up (also without names->strip), must have a dtype the
 * model reads and the shape m->cfg implies. Messages name the tensor and the file. Sets
 * m->conv1d and m->qkv_layout from the name table. The model-wide tensors are checked first
 * and the layer count is bounded by the layers the source holds before m->layers is
 * allocated, so no config value sizes an allocation the tensors do not back (the message
 * names r->cfg_path and r->layers_key). */
nl_status nl_arch_resolve(nl_ctx *ctx, nl_model *m, nl_resolver *r);

#endif
