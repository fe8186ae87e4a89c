/* imatrix.h — llama.cpp's importance matrix, collected from the forward pass by observer hooks
 * (the engine of `neuronlab record --imatrix`).
 *
 * For every weight matrix W whose input the forward pass exposes, llama.cpp's tools/imatrix keeps
 * per input column j the sum of squared inputs in_sum2[j] = Σ_rows x[row][j]², the plain sum
 * in_sum[j] = Σ x[row][j] and the number of rows (count). Covered here, per layer l (GGUF names):
 *   blk.l.attn_q.weight, blk.l.attn_k.weight,    input = the normalised attention input
 *   blk.l.attn_v.weight                          (NL_HOOK_ATTN_IN, D): one entry per matrix with
 *                                                the same sums, as llama.cpp stores them; fused
 *                                                layouts (GPT-2, GPT-NeoX, Phi's Wqkv) have one
 *                                                blk.l.attn_qkv.weight instead
 *   blk.l.attn_output.weight                     input = the heads' concatenated output before W_o
 *                                                (NL_HOOK_ATTN_PRE_O, H·Dh)
 * and, on dense (non-MoE) layers:
 *   blk.l.ffn_gate.weight, blk.l.ffn_up.weight   input x = the normalised FFN input (NL_HOOK_FFN_IN, D)
 *                                                (gated FFNs have both, plain ones only ffn_up)
 *   blk.l.ffn_down.weight                        input a = the FFN activation (NL_HOOK_FFN_ACT, F)
 * Not covered: output.weight (llama.cpp skips it by default) and the expert matrices of
 * mixture-of-experts layers (3-D, and FFN_ACT does not fire there; their attention entries are
 * covered). Rows: every token once — the forward driver says before each run how many leading
 * rows were already counted in the previous sliding window (nl_imatrix_set_skip), so the sums
 * equal the ones over the activation dump of the same run. llama.cpp also counts batches of any
 * size here, where its collector ignores matrix products of fewer than 16 rows.
 * Sums are kept in double and written as f32.
 *
 * Files (nl_imatrix_write, by the output's name):
 *   GGUF (default; what current tools/imatrix writes): general.type "imatrix",
 *     imatrix.datasets [dataset], imatrix.chunk_count (u32, full chunks of chunk_size tokens seen),
 *     imatrix.chunk_size (u32), then per entry in name order the F32 tensors NAME.in_sum2 [n_in],
 *     NAME.counts [1], NAME.in_sum [n_in];
 *   legacy .dat (a name ending in ".dat"): int32 n_entries; per entry (name order) int32 len, the
 *     name, int32 ncall = ceil(count / chunk_size), int32 nval, nval f32 values in_sum2/count·ncall;
 *     then int32 chunk_count, int32 len and the dataset name. Entries without rows are left out.
 * Both are read by llama-quantize --imatrix. Checked by tests/imatrix.sh (sums against the
 * activation dump, both files read back field by field).
 */
#ifndef NEURONLAB_IMATRIX_H
#define NEURONLAB_IMATRIX_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/progress.h"

typedef struct nl_imatrix nl_imatrix;

/* One entry (a weight matrix). */
typedef struct {
    char name[64];      /* "blk.3.ffn_down.weight" */
    int n_in;           /* input columns */
    double *in_sum2;    /* (n_in) */
    double *in_sum;     /* (n_in) */
    int64_t count;      /* rows */
} nl_imatrix_entry;

/* An empty matrix for the layers of configuration c; the q/k/v entries are named by the
 * architecture (attn_qkv for GPT-2 and GPT-NeoX, separate otherwise). *out owned
 * (nl_imatrix_destroy). */
nl_status nl_imatrix_create(nl_ctx *ctx, const nl_config *c, nl_imatrix **out);
/* The same for model m, naming the q/k/v entries by its own layout (layer 0's qkv_layout: a fused
 * one, e.g. a Phi-2 GGUF from the original Wqkv checkpoint, gives attn_qkv). Loads layer 0. */
nl_status nl_imatrix_create_model(nl_ctx *ctx, nl_model *m, nl_imatrix **out);
void nl_imatrix_destroy(nl_imatrix *im); /* NULL is a no-op */

/* Registers the observers on hooks (removed by nl_imatrix_detach; both between forward runs). */
nl_status nl_imatrix_attach(nl_ctx *ctx, nl_imatrix *im, nl_hooks *hooks);
void nl_imatrix_detach(nl_imatrix *im, nl_hooks *hooks);
/* The next forward run's first `skip` rows are context only (already counted). */
void nl_imatrix_set_skip(nl_imatrix *im, int skip);

/* A forward pass over every document of ds (sliding windows as nl_forward_doc, stride ≤ 0 = C/2)
 * with the observers attached for the duration; progress may be NULL. */
nl_status nl_imatrix_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_imatrix *im, int stride,
                         nl_progress *progress);

/* Entries in name order (borrowed from im). */
int nl_imatrix_n_entries(const nl_imatrix *im);
const nl_imatrix_entry *nl_imatrix_entry_at(const nl_imatrix *im, int i);

/* Writes path atomically: the legacy format when it ends in ".dat", else GGUF (see above).
 * dataset: the name recorded in the file; chunk_size > 0: tokens per chunk (the context). */
nl_status nl_imatrix_write(nl_ctx *ctx, const nl_imatrix *im, const char *path, const char *dataset, int chunk_size);

/* Reads a file of either format back (the format by its magic): entries with n_in values of
 * in_sum2 / count — GGUF: in_sum2, in_sum (zeros when absent) and count as stored; .dat: the
 * stored values as in_sum2 with count = ncall (llama-quantize reads them so). *out owned. */
nl_status nl_imatrix_read(nl_ctx *ctx, const char *path, nl_imatrix **out);

#endif
