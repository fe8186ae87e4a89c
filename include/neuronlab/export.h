/* export.h — a loaded model written out as a GGUF file (llama.cpp) or a Hugging Face folder.
 *
 * GGUF (nl_export_gguf), as llama.cpp's convert_hf_to_gguf.py writes it:
 *   architectures  llama (also Mistral without an active sliding window, and the zoo's GELU/ReLU
 *                  llama-style models, whose activation goes to `neuronlab.hidden_act` because
 *                  llama.cpp always runs SiLU), qwen2, qwen3, and the mixture-of-experts types:
 *                  mixtral (as llama), qwen2_moe (qwen2moe), qwen3_moe (qwen3moe); anything else is
 *                  refused listing these;
 *   experts        per MoE layer blk.N.ffn_gate_inp (router, F32 at every type), the experts
 *                  stacked as 3-D blk.N.ffn_{down,gate,up}_exps (ggml ne [Fe, D, E] / [D, Fe, E]),
 *                  qwen2moe's shared expert ffn_{gate,up,down}_shexp and its gate ffn_gate_inp_shexp
 *                  (a vector, F32); keys {arch}.expert_count, expert_used_count (+ qwen:
 *                  expert_feed_forward_length, expert_shared_feed_forward_length),
 *                  {arch}.expert_weights_norm when the renormalisation differs from what llama.cpp
 *                  runs for the arch, neuronlab.decoder_sparse_step / neuronlab.mlp_only_layers when
 *                  some layers are dense; general.size_label "E x N" (gguf-py);
 *   metadata       general.architecture, general.type, general.name (the folder's name, title-cased
 *                  when all lower case), general.size_label, {arch}.block_count, context_length,
 *                  embedding_length, feed_forward_length, attention.head_count(_kv), rope.freq_base,
 *                  attention.layer_norm_rms_epsilon, attention.key_length/value_length,
 *                  general.file_type, (llama: vocab_size, rope.dimension_count),
 *                  general.quantization_version = 2, then the tokenizer;
 *   tensors        token_embd, per layer attn_norm, attn_q/k/v (+ bias), attn_q_norm/attn_k_norm
 *                  (qwen3), attn_output, ffn_norm, ffn_gate/up/down, then output_norm and output
 *                  (absent when the embeddings are tied); llama's attn_q/attn_k rows (and biases)
 *                  permuted into llama.cpp's RoPE order (HF rows reshaped (heads, 2, Dh/2) → swap);
 *   types          1-D tensors F32; 2-D weights the --type: F32, F16, BF16 (round to nearest even) or
 *                  Q8_0 (quant.h nl_quant_q8_0, bit-exact with ggml); a Q8_0 weight whose rows are
 *                  not a multiple of 32 falls back to F16 as the converter does;
 *   tokenizer      a byte-level BPE tokenizer.json of the folder → tokenizer.ggml.model "gpt2" with
 *                  tokens (byte-level text), token_type (3 special added token, 4 other added token,
 *                  5 ids the vocabulary lacks, 1 otherwise), merges "a b", pre (llama-bpe, qwen2 or
 *                  gpt2 from the split pattern), bos/eos ids from the model config, add_bos_token /
 *                  add_sep_token from a TemplateProcessing post-processor; a GGUF source's
 *                  tokenizer.* keys are copied; no tokenizer → tokenizer.ggml.model "none".
 * Hugging Face (nl_export_hf): config.json, generation_config.json, model.safetensors (F32, F16 or
 *   BF16) with llama/qwen2/qwen3 names (MoE: the config's expert keys and one tensor per expert,
 *   mixtral's block_sparse_moe.* or Qwen-MoE's mlp.experts.E.*) and Hugging Face's q/k row order, and tokenizer.json when
 *   the model has a "gpt2" GGUF tokenizer or a tokenizer.json (copied). The folder is made under a
 *   temporary name beside OUT_DIR and renamed into place; an existing OUT_DIR is refused.
 * Messages name the file. Checked by tests/test_gguf.c and tests/gguf_cli.sh (round trips).
 */
#ifndef NEURONLAB_EXPORT_H
#define NEURONLAB_EXPORT_H

#include "neuronlab/model.h"
#include "neuronlab/progress.h"

typedef enum { NL_EXPORT_F32 = 0, NL_EXPORT_F16, NL_EXPORT_BF16, NL_EXPORT_Q8_0 } nl_export_type;

/* "f32", "f16", "bf16", "q8_0" → the type; -1 when unknown. */
int nl_export_type_parse(const char *s);

/* Writes m (opened from model_path: a folder, a GGUF file …) to out as GGUF, atomically.
 * progress may be NULL (counts tensors). */
nl_status nl_export_gguf(nl_ctx *ctx, nl_model *m, const char *model_path, nl_export_type type, const char *out,
                         nl_progress *progress);

/* Writes m (opened from model_path) as a Hugging Face folder out_dir (type: f32, f16 or bf16). */
nl_status nl_export_hf(nl_ctx *ctx, nl_model *m, const char *model_path, nl_export_type type, const char *out_dir);

#endif
