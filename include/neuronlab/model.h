/* model.h — a loaded checkpoint: configuration, stored tensors, f32 layer views.
 *
 * Rules: weights stay memory-mapped in their stored dtype. nl_model_layer() hands out
 * one layer in f32: stored-f32 tensors are borrowed straight from the mapping (no copy),
 * f16/bf16 and GGUF's quantised tensors are converted into a per-model slot that holds one
 * layer, so peak memory is about file size + one layer in f32. Every loader (llama2.c,
 * Hugging Face, GGUF) fills the same private struct (src/model/model_internal.h) and shares the
 * conversion code in src/model/model.c. A mixture-of-experts layer's slot holds all its
 * experts (like a dense layer's FFN); the forward pass then computes only the selected ones.
 * Checked by tests/test_model.c, tests/test_forward.c and tests/test_moe_models.c (PyTorch
 * fixtures).
 */
#ifndef NEURONLAB_MODEL_H
#define NEURONLAB_MODEL_H

#include "neuronlab/common.h"

/* Stored element types. A dtype stores its elements in blocks: block_elems elements in
 * block_bytes bytes (1 element per block for F32/F16/BF16; GGUF's quantised types such as
 * Q8_0 = 32 elements in 34 bytes, Q4_K = 256 in 144: src/model/quant.h). Ranges handed to
 * to_f32 start on a block boundary and span whole blocks; a quantised tensor's rows are
 * whole blocks. */
typedef enum {
    NL_DT_F32 = 0, NL_DT_F16, NL_DT_BF16,
    NL_DT_Q4_0, NL_DT_Q4_1, NL_DT_Q5_0, NL_DT_Q5_1, NL_DT_Q8_0, /* GGUF, 32-element blocks */
    NL_DT_Q2_K, NL_DT_Q3_K, NL_DT_Q4_K, NL_DT_Q5_K, NL_DT_Q6_K, /* GGUF, 256-element super-blocks */
    NL_DT_COUNT
} nl_dtype;

typedef struct {
    const char *name;   /* "f32", "f16", "bf16", "q8_0", "q4_k" … */
    int block_bytes;    /* bytes of one block */
    int block_elems;    /* elements of one block */
    /* dst (n) = src decoded; src holds n / block_elems blocks (n a multiple of block_elems).
     * src may be unaligned for its element type. */
    void (*to_f32)(const void *src, float *dst, int64_t n);
} nl_dtype_info;

/* The table row of dt (every nl_dtype below NL_DT_COUNT has one). Borrowed, static. */
const nl_dtype_info *nl_dtype_info_of(nl_dtype dt);
const char *nl_dtype_name(nl_dtype dt); /* "?" for values outside the table */
/* Bytes per element of a dtype with one element per block (block types: 0). */
size_t nl_dtype_size(nl_dtype dt);
/* Bytes of n elements (n a multiple of the block size): n / block_elems * block_bytes. */
size_t nl_dtype_bytes(nl_dtype dt, int64_t n);

/* Borrowed view of a stored tensor (row-major, usually inside an mmap). data == NULL
 * means "absent". */
typedef struct {
    const void *data;
    nl_dtype dtype;
    int ndim;
    int64_t shape[4];
} nl_tensor;

int64_t nl_tensor_numel(const nl_tensor *t);

typedef enum {
    NL_ARCH_LLAMA = 0, /* llama2.c files and HF model_type "llama" */
    NL_ARCH_MISTRAL,
    NL_ARCH_QWEN2,
    NL_ARCH_GPT2,
    NL_ARCH_GPT_NEOX,
    NL_ARCH_PHI,
    NL_ARCH_QWEN3,     /* Qwen2 attention without q/k/v bias, with per-head q/k RMSNorm */
    NL_ARCH_MIXTRAL,   /* Mistral with a routed-expert FFN in every layer */
    NL_ARCH_QWEN2_MOE, /* Qwen2 with routed experts + a sigmoid-gated shared expert */
    NL_ARCH_QWEN3_MOE, /* Qwen3 with routed experts */
} nl_arch;
const char *nl_arch_name(nl_arch a); /* "llama", "gpt_neox" … */

typedef enum {
    NL_ACT_SILU = 0,
    NL_ACT_GELU,      /* exact: 0.5 x (1 + erf(x/√2)) — HF "gelu" */
    NL_ACT_GELU_TANH, /* tanh approximation — HF "gelu_new", "gelu_pytorch_tanh", "gelu_fast" */
    NL_ACT_RELU,
    NL_ACT_RELU2,     /* relu(x)² */
} nl_act;
const char *nl_act_name(nl_act a);
/* Parses an HF hidden_act string; returns -1 when unknown. */
int nl_act_parse(const char *s);

typedef enum { NL_NORM_RMS = 0, NL_NORM_LAYER } nl_norm;

/* Layers whose mlp_only_layers flag nl_config can hold (layer indices 0 … 1023). */
#define NL_MOE_MAX_LAYERS 1024
/* Routed experts per layer a model may have (loaders refuse more). */
#define NL_MOE_MAX_EXPERTS 1024
typedef enum { NL_POS_ROPE = 0, NL_POS_LEARNED } nl_pos;
typedef enum { NL_ROPE_SCALING_NONE = 0, NL_ROPE_SCALING_LLAMA3, NL_ROPE_SCALING_LINEAR } nl_rope_scaling;

/* How the attention input projection is stored. */
typedef enum {
    NL_QKV_SEPARATE = 0,    /* wq, wk, wv */
    NL_QKV_CONCAT,          /* wqkv rows = [q (H*Dh) | k (Hk*Dh) | v (Hk*Dh)] (GPT-2 c_attn) */
    NL_QKV_HEAD_INTERLEAVED /* wqkv rows = per head h: [q_h | k_h | v_h] (GPT-NeoX) */
} nl_qkv_layout;

typedef struct nl_config {
    nl_arch arch;
    char model_type[32];   /* "llama", "gpt2" … ("llama2c" for llama2.c files) */
    int n_layers;          /* L */
    int d_model;           /* D */
    int d_ff;              /* F */
    int n_heads;           /* H */
    int n_kv_heads;        /* Hk (grouped-query when < H) */
    int head_dim;          /* Dh */
    int vocab_size;        /* V */
    int max_pos;           /* context length the model was trained for */
    int ffn_gated;         /* 1: a = act(x·W_gate) ⊙ (x·W_up); 0: a = act(x·W_in + b_in) */
    nl_act act;
    nl_norm norm;
    float norm_eps;
    nl_pos pos;
    float rope_theta;
    int rotary_dim;        /* leading dims of each head that are rotated (≤ Dh; partial rotary) */
    int rope_interleaved;  /* 1: rotate adjacent pairs (llama2.c); 0: rotate halves (HF) */
    nl_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int parallel_residual; /* x + attn(n1(x)) + ffn(n2(x)) (GPT-NeoX) */
    int shared_norm;       /* parallel with one norm: x + attn(n1(x)) + ffn(n1(x)) (Phi) */
    int sliding_window;    /* 0 = full causal attention */
    int tie_embeddings;    /* LM head is the token embedding */
    int bos_id, eos_id;    /* -1 when unknown */
    int qk_norm;           /* 1: RMSNorm over each head's q and k (Dh) before RoPE (Qwen3) */

    /* Mixture of experts (DESIGN §10). n_experts == 0: every layer is dense (d_ff wide).
     * An MoE layer computes, with x the normalised FFN input and z = x·W_routerᵀ (E),
     * p = softmax(z), S = the k largest p (ties as torch.topk on CPU, nl_moe_topk),
     * w_e = p_e (÷ Σ_S p when norm_topk_prob) and
     *     out = Σ_{e∈S} w_e·FFN_e(x) + sigmoid(x·w_shared_gate)·FFN_shared(x)
     * (the shared term only when d_shared > 0). FFN_e is the gated FFN of width d_expert. */
    int n_experts;         /* E routed experts per MoE layer (0: dense model), ≤ NL_MOE_MAX_EXPERTS */
    int n_experts_per_tok; /* k, 1 ≤ k ≤ E */
    int d_expert;          /* Fe: width of one routed expert */
    int d_shared;          /* Fs: width of the shared expert, 0 = none */
    int norm_topk_prob;    /* 1: the k weights are divided by their sum */
    int decoder_sparse_step; /* layer l is MoE when (l + 1) % step == 0 (and not mlp_only) */
    unsigned char mlp_only[NL_MOE_MAX_LAYERS / 8]; /* bit l set: layer l is dense (mlp_only_layers) */
} nl_config;

/* 1 when layer l of c is a mixture-of-experts layer (see the fields above), else 0. */
int nl_config_is_moe_layer(const nl_config *c, int l);

/* A weight matrix packed in bf16 for the `--compute bf16` products (the kernel is
 * nl_matmul_bf16, gemm_bf16.h). Column panels of NL_BF16_NR outputs:
 *     p[panel][k/2][NL_BF16_NR columns][2]   (uint16 bf16, round to nearest even)
 * i.e. for each pair of inputs (2k, 2k+1) the panel's 32 columns as adjacent pairs, which is what
 * one vdpbf16ps multiplies against a broadcast pair of activations. Outputs beyond n_out and an
 * odd last input are zero. p is borrowed from whoever packed it (the model's bf16 copies, a test). */
#define NL_BF16_NR 32 /* output columns per panel (two zmm registers of f32) */
struct nl_bf16_mat {
    const uint16_t *p; /* (panels, kp, NL_BF16_NR, 2) */
    int n_out, n_in;
    int kp; /* (n_in + 1) / 2 */
};

/* A weight matrix in f32 for y = x·Wᵀ. trans == 0: stored (n_out, n_in) like torch.nn.Linear;
 * trans == 1: stored (n_in, n_out) like GPT-2's Conv1D. ld is the row stride in floats. */
typedef struct {
    const float *w;
    int n_out, n_in;
    int trans;
    int ld;
    /* The same matrix packed in bf16 (gemm_bf16.h) when the forward pass computes in bf16
     * (nl_forward_set_compute, nl_model_layer_bf16); NULL: nl_matmul computes in f32. A copy
     * narrowed to fewer outputs or inputs no longer matches the pack's shape: f32 again. */
    const struct nl_bf16_mat *bf16;
} nl_mat;

/* One routed expert's gated FFN in f32: a = act(x·W_gateᵀ) ⊙ (x·W_upᵀ), y = a·W_downᵀ. */
typedef struct {
    nl_mat w_gate, w_up; /* (Fe, D) */
    nl_mat w_down;       /* (D, Fe) */
} nl_expert_mats;

/* One layer's weights in f32. Absent tensors are NULL / w == NULL. Borrowed from the model:
 * valid until the next nl_model_layer() call on the same model or nl_model_close(). */
typedef struct {
    const float *ln1_w, *ln1_b; /* (D) attention-input norm (b: LayerNorm only) */
    const float *ln2_w, *ln2_b; /* (D) FFN-input norm; NULL when shared_norm */
    nl_qkv_layout qkv_layout;
    nl_mat wq, wk, wv;          /* (H*Dh, D), (Hk*Dh, D), (Hk*Dh, D) when SEPARATE */
    const float *bq, *bk, *bv;  /* (H*Dh), (Hk*Dh), (Hk*Dh) or NULL */
    nl_mat wqkv;                /* ((H+2Hk)*Dh, D) when fused */
    const float *bqkv;          /* ((H+2Hk)*Dh) or NULL */
    nl_mat wo;                  /* (D, H*Dh) */
    const float *bo;            /* (D) or NULL */
    nl_mat w_gate;              /* (F, D) gated FFN only */
    nl_mat w_up;                /* (F, D) gated: W_up; plain: W_in */
    const float *b_up;          /* (F) plain FFN bias or NULL */
    nl_mat w_down;              /* (D, F) W_out */
    const float *b_down;        /* (D) or NULL */
    const float *q_norm, *k_norm; /* (Dh) per-head q/k RMSNorm weights (qk_norm) or NULL */

    /* Mixture-of-experts layers (moe = 1): w_gate/w_up/w_down above are absent. */
    int moe;
    nl_mat router;              /* (E, D) W_router */
    const nl_expert_mats *experts; /* (E) routed experts */
    nl_mat sh_gate, sh_up;      /* (Fs, D) shared expert; w == NULL when d_shared == 0 */
    nl_mat sh_down;             /* (D, Fs) */
    nl_mat sh_router;           /* (1, D) shared_expert_gate */
} nl_layer;

/* The embedding, final norm and LM head in f32 (borrowed like nl_layer). */
typedef struct {
    const float *norm_w, *norm_b; /* (D) */
    nl_mat lm_head;               /* (V, D) */
    const float *lm_head_b;       /* (V) or NULL */
} nl_head;

typedef struct nl_model nl_model;

/* Opens a checkpoint, choosing the loader by what `path` is, never by its name: a directory
 * is a Hugging Face folder (config.json + safetensors files); a file starting with "GGUF" is
 * a GGUF file (src/model/gguf.c: llama, qwen2, qwen3, gpt2, phi2, qwen2moe, qwen3moe; quantised tensors stay quantised
 * in the mapping and are dequantised one layer at a time); a bare safetensors file (8-byte
 * header length, then '{') fails with NL_EINVAL asking for its folder; any other file is a
 * llama2.c checkpoint, whose header is validated. Messages name the path. On success *out
 * owns the mappings; free with nl_model_close. */
nl_status nl_model_open(nl_ctx *ctx, const char *path, nl_model **out);

/* Choices a file may leave open. Zero-initialise. */
typedef struct {
    const char *hidden_act; /* FFN activation name (nl_act_parse) for formats that do not store
                             * it (GGUF llama); NULL: config.json beside the file, else the file's
                             * neuronlab.hidden_act key, else SiLU */
} nl_model_opts;
/* nl_model_open with options (NULL = defaults). */
nl_status nl_model_open_opts(nl_ctx *ctx, const char *path, const nl_model_opts *opts, nl_model **out);
/* Where the FFN activation came from: "config.json", "--hidden-act", "the file's metadata",
 * "default" … (static string). */
const char *nl_model_act_source(const nl_model *m);
void nl_model_close(nl_model *m); /* NULL is a no-op */

const nl_config *nl_model_config(const nl_model *m);
const char *nl_model_path(const nl_model *m);
/* Dtype of the bulk of the weights (the first layer's FFN). */
nl_dtype nl_model_dtype(const nl_model *m);
int64_t nl_model_n_params(const nl_model *m);
/* Bytes of the stored weights (mapped files). */
int64_t nl_model_bytes(const nl_model *m);

/* Layer l (0 ≤ l < L) in f32; see nl_layer for lifetime. */
nl_status nl_model_layer(nl_ctx *ctx, nl_model *m, int l, nl_layer *out);
/* For token-by-token work (generation), where converting every layer on every call would
 * dominate: keeps each f16/bf16 layer's f32 conversion after its first use (views then stay
 * valid until nl_model_close), when all layers in f32 need at most max_bytes. Returns 1 when
 * the layers are (or will be) kept, 0 when the model is stored f32 or too large (streaming as
 * before). */
int nl_model_keep_f32(nl_model *m, size_t max_bytes);
/* Bytes all layers take in f32 beyond what is used in place (0 for a model stored in f32). */
size_t nl_model_f32_layer_bytes(const nl_model *m);
/* Final norm and LM head in f32; valid until nl_model_close (converted once if needed). */
nl_status nl_model_head(nl_ctx *ctx, nl_model *m, nl_head *out);
/* bf16 packed copies for `--compute bf16` (model_bf16.c, layout in gemm_bf16.h).
 * nl_model_layer_bf16: given w from nl_model_layer(l), packs its attention and dense-FFN
 * matrices into bf16 (from their f32 views, so every stored type works: quantised GGUF
 * tensors are dequantised to f32 and rounded) and points their nl_mat.bf16 at the packs.
 * Packed once per layer and kept when nl_model_keep_bf16 said so, else one layer at a time
 * (a slot repacked when the layer changes). nl_model_head_bf16 does the same for h->lm_head
 * (packed once). Norms, biases and MoE experts stay f32. */
nl_status nl_model_layer_bf16(nl_ctx *ctx, nl_model *m, int l, nl_layer *w);
nl_status nl_model_head_bf16(nl_ctx *ctx, nl_model *m, nl_head *h);
/* Keeps each layer's bf16 packs after first use when all of them need at most max_bytes;
 * returns 1 when kept (or already), 0 when too large (one layer at a time). */
int nl_model_keep_bf16(nl_model *m, size_t max_bytes);
/* Bytes of all layers' bf16 packs. */
size_t nl_model_bf16_bytes(const nl_model *m);
/* uint16 elements of the packed form of an (n_out, n_in) matrix. */
size_t nl_bf16_pack_elems(int n_out, int n_in);
/* Packs w (f32, either storage order) into dst (nl_bf16_pack_elems of w's shape; 64-byte
 * aligned for speed) and describes it in *out (out->p = dst). OpenMP over panels. */
void nl_bf16_pack(struct nl_bf16_mat *out, uint16_t *dst, const nl_mat *w);

/* Token embedding rows: dst (n, D) = embedding[tokens[i]] in f32 (+ learned position
 * pos0+i when the model has them). Token ids must be checked by the caller. */
void nl_model_embed(const nl_model *m, const int32_t *tokens, int n, int pos0, float *dst);

/* ‖W_out[:, i]‖₂ for layer l: norms (F), caller-owned. A mixture-of-experts layer has no
 * single W_out: NL_EUNSUPPORTED with a message naming the layer and the model (so analyses
 * of dense neurons refuse MoE layers instead of writing wrong data). */
nl_status nl_model_w_out_norm(nl_ctx *ctx, nl_model *m, int l, float *norms);

#endif
