/* capi.h — the small, stable C API of libneuronlab.so for foreign callers (Python's ctypes,
 * other languages, the programs of examples/).
 *
 * Rules: only plain C types cross this boundary (ints, int32_t/int64_t, float, double, char
 * pointers and one opaque handle per object), so a caller needs neither the library's structs
 * nor its compile flags. Every function that can fail returns an nl_status (common.h: 0 = NL_OK)
 * and leaves a one-line message on the handle (nl_api_errmsg); nothing here prints or exits.
 * Arguments a caller can get wrong (an unknown hook point, a layer or token id out of range, a
 * buffer too small) are NL_EINVAL with a message, never an abort.
 *
 * One handle = one model, its tokenizer (optional) and one forward pass. A handle belongs to one
 * thread at a time; hooks are called on the thread that called nl_api_run / nl_api_nll /
 * nl_api_record / nl_api_ppl. Token sequences always start a new sequence (empty KV cache) and
 * may hold up to `ctx` tokens (nl_api_dim(h, "ctx")); the forward pass runs them in chunks of at
 * most `batch` rows (nl_api_dim(h, "batch"), default = ctx, so a hook sees the whole sequence at
 * once); a hook is called once per chunk with pos0 = the position of the chunk's first row.
 *
 * Built from the library's own modules (nl_model_open, nl_tokenizer_*, nl_forward_*, nl_ppl_run,
 * the prune intervener of analyses/prune.h): it computes what the CLI computes.
 * Checked by tests/examples.sh (the programs of examples/ against the CLI) and tests/python.sh.
 */
#ifndef NEURONLAB_CAPI_H
#define NEURONLAB_CAPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NL_API_VERSION 1 /* bumped when a function of this header changes meaning or signature */

typedef struct nl_api nl_api;                 /* model + tokenizer + forward pass */
typedef struct nl_api_dataset nl_api_dataset; /* a JSONL dataset read with the model's tokenizer */

/* NL_API_VERSION the library was built with, and the project version ("0.1.0", static). */
int nl_api_version(void);
const char *nl_api_version_string(void);

/* Opens a model (a Hugging Face folder, a GGUF file or a llama2.c .bin — whatever the CLI
 * loads) and its tokenizer: tokenizer NULL = the model's own (none is fine: then tokenize and
 * text datasets fail), else a tokenizer path. hidden_act: NULL, or the FFN activation of a GGUF
 * file (as --hidden-act). ctx: tokens per sequence, 0 = the model's context (at most 4096);
 * batch: rows per forward call, 0 = ctx. *out is set even when opening fails (unless memory runs
 * out: then NULL), so the message can be read; free it with nl_api_close in both cases. */
int nl_api_open(const char *model, const char *tokenizer, const char *hidden_act, int ctx, int batch, nl_api **out);
void nl_api_close(nl_api *h); /* NULL is a no-op */
/* The last error message ("" when none); "out of memory" for a NULL handle. Borrowed. */
const char *nl_api_errmsg(const nl_api *h);
/* Worker threads of the forward pass (0 = all cores). */
int nl_api_set_threads(nl_api *h, int n_threads);
/* Number format of the forward pass's matrix products: "f32" (default) or "bf16" (AVX512-BF16,
 * approximate: --compute bf16 of the CLI). On a CPU without AVX512-BF16, "bf16" leaves f32 in
 * effect and returns NL_OK: nl_api_str(h, "compute") says which one runs. */
int nl_api_set_compute(nl_api *h, const char *compute);

/* Integer facts of the model: "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "head_dim",
 * "vocab_size", "max_pos", "n_experts", "gated" (1: gated FFN), "ctx", "batch",
 * "bos", "eos" (the tokenizer's, else the model's; -1 when none), "has_tokenizer".
 * -1 for an unknown name. */
int64_t nl_api_dim(const nl_api *h, const char *name);
/* Strings: "arch", "model_type", "act", "path", "tokenizer" ("" when none), "compute" ("f32" or "bf16"). NULL when unknown.
 * Borrowed until nl_api_close. */
const char *nl_api_str(const nl_api *h, const char *name);

/* ---- tokenizer ------------------------------------------------------------------------------ */

/* Encodes len bytes of UTF-8 text; add_special 1 wraps it in the tokenizer's template (BOS …),
 * as datasets do. Writes min(*n, cap) ids into ids and sets *n to the total: when *n > cap, call
 * again with a larger buffer. */
int nl_api_tokenize(nl_api *h, const char *text, size_t len, int add_special, int32_t *ids, int cap, int *n);
/* Decodes n ids into buf (cap bytes; the text is NUL-terminated when it fits); *len = the
 * text's length in bytes. When *len >= cap, call again with cap > *len. */
int nl_api_decode(nl_api *h, const int32_t *ids, int n, int skip_special, char *buf, size_t cap, size_t *len);

/* ---- hooks ---------------------------------------------------------------------------------- */

/* A hook: x is the (T, width) row-major float32 tensor of point `point` at `layer` for rows
 * pos0 … pos0+T-1 of the sequence; it may be modified in place (what the model then computes
 * with). Return 0 to continue; anything else stops the run with NL_EINVAL. */
typedef int (*nl_api_hook_fn)(void *user, const char *point, int layer, int pos0, int T, int width, float *x);

/* Name of hook point i (0 ≤ i < nl_api_n_points()), NULL outside: "ffn_pre", "ffn_up",
 * "ffn_act", "ffn_out", "attn_out", "resid", "ffn_in", "router_logits", "attn_in",
 * "attn_pre_o" (hooks.h and the README's "Hook points"). */
int nl_api_n_points(void);
const char *nl_api_point(int i);
/* Columns of point at layer (0 ≤ layer < L), or -1 with a message when the point does not exist
 * there (an unknown name, ffn_up of a plain FFN, ffn_act of a mixture-of-experts layer …). */
int nl_api_point_width(nl_api *h, const char *point, int layer);

/* Adds a hook on point at layer (-1: every layer); *id (not NULL) receives its handle (≥ 1).
 * Hooks run in the order they were added, after the pruned neurons are zeroed (nl_api_prune).
 * At most 24 hooks. user is borrowed until the hook is removed. */
int nl_api_hook_add(nl_api *h, const char *point, int layer, nl_api_hook_fn fn, void *user, int *id);
/* Removes one hook (NL_EINVAL when no hook has this id), or all of them. */
int nl_api_hook_remove(nl_api *h, int id);
void nl_api_hook_clear(nl_api *h);

/* ---- running -------------------------------------------------------------------------------- */

/* Runs tokens (1 ≤ T ≤ ctx) from an empty cache with the hooks and the pruned set; logits
 * (T, V) float32, or NULL to skip the LM head. */
int nl_api_run(nl_api *h, const int32_t *tokens, int T, float *logits);
/* nll (T-1): nll[t] = -log p(tokens[t+1] | tokens[0..t]) in nats (2 ≤ T ≤ ctx). */
int nl_api_nll(nl_api *h, const int32_t *tokens, int T, double *nll);
/* Records point (e.g. "ffn_act") at layers[0..n_layers) while running tokens:
 * out (n_layers, T, width) float32, width = nl_api_point_width (the same for every listed layer). */
int nl_api_record(nl_api *h, const char *point, const int32_t *tokens, int T, const int *layers, int n_layers,
                  float *out);

/* Zeroes FFN neurons (the activation a, input of the down projection) in every later run, as
 * `neuronlab prune --neurons` does: the pairs (layers[i], neurons[i]), i < n; replaces the
 * previous set; n = 0 prunes nothing. */
int nl_api_prune(nl_api *h, const int32_t *layers, const int32_t *neurons, int n);

/* ---- datasets and perplexity ------------------------------------------------------------------ */

/* Reads a JSONL dataset as `neuronlab ppl` does (tokens / text / prompt+response rows, labels),
 * with the handle's tokenizer; ids are checked against the vocabulary. *out: nl_api_dataset_close
 * (NULL on failure; the message is on h). */
int nl_api_dataset_open(nl_api *h, const char *path, nl_api_dataset **out);
void nl_api_dataset_close(nl_api_dataset *ds); /* NULL is a no-op */
int nl_api_dataset_size(const nl_api_dataset *ds); /* documents */
/* Document i (0 ≤ i < size; else NL_EINVAL): borrowed tokens (n), prompt_len, score_from (the first
 * token whose prediction counts), label ("" when none), 1-based line. Any output may be NULL. */
int nl_api_dataset_doc(const nl_api_dataset *ds, int i, const int32_t **tokens, int *n, int *prompt_len, int *score_from,
                       const char **label, int *line);
/* Scores every document as `neuronlab ppl` does (sliding windows of ctx with stride, ≤ 0 = ctx/2),
 * with the hooks and the pruned set: nll (Dc) summed nats and count (Dc) predictions per document.
 * The dataset's perplexity is exp(Σ nll / Σ count) over the documents in order. */
int nl_api_ppl(nl_api *h, const nl_api_dataset *ds, int stride, double *nll, int64_t *count);

/* ---- weights ---------------------------------------------------------------------------------- */

/* A weight in float32 as (rows, cols) row-major: "w_out" (D, F) the down projection W_out
 * (column i = neuron i's output direction), "w_up" (F, D) (plain FFN: W_in), "w_gate" (F, D)
 * (gated FFNs), "b_up" (1, F) (plain FFN bias), "lm_head" (V, D) W_U, "final_norm" (1, D) the final
 * norm's weight. layer is ignored for lm_head and final_norm. nl_api_weight_shape gives the shape
 * (NL_EINVAL for an unknown name, a layer out of range, a weight the model does not have);
 * nl_api_weight copies it into out (cap floats, at least rows·cols). */
int nl_api_weight_shape(nl_api *h, const char *name, int layer, int64_t *rows, int64_t *cols);
int nl_api_weight(nl_api *h, const char *name, int layer, float *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
