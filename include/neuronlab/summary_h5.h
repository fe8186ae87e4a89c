/* summary_h5.h — the streaming summary of a dataset's FFN activations (`neuronlab record
 * --stats`) and its HDF5 file: what the sparsity and ability analyses need, per layer and
 * neuron, in a size that does not grow with the number of tokens (except the per-document
 * pooled values). The accumulation on the forward pass and the merge live in eval
 * (summary.h); this module holds the data, its file and the file-kind probe.
 *
 * Definitions (token t of document d, layer l, neuron i, a = the FFN activation of
 * h5store.h; group g = the documents with one label, groups in byte order of the label,
 * "" (unlabelled) included; every statistic below is per group, the all-tokens value is
 * their combination):
 *   count         group_tokens[g] (the same for every neuron)
 *   mean, m2      mean of a and Σ (a − mean)² (M2; variance = m2 / count), combined over
 *                 blocks and files with Chan's parallel formula (double)
 *   min, max      of a (signed; +inf / −inf for a group without tokens); max |a| = max(−min, max)
 *   sum_abs       Σ |a| in double, token order (mean |a| = sum_abs / count)
 *   max_r, freq   r = |a_i| / max_j |a_j| of the token (sparsity.h's r_value, the same IEEE
 *                 single quotient; r = 0 for a token whose max is 0): max r over the tokens,
 *                 and freq[g][k][i] = tokens with r > tau[k] (exact float bound as sparsity.h)
 *   r_hist        per layer and group, the sparsity analysis' 866 bins of r_value (slot 0)
 *                 and r_norm (slot 1, x = |a|·‖W_out[:, i]‖₂): bin 0 r = 0, bin 1 (0, 2^-27],
 *                 bin 2 + j (edge(j), edge(j+1)] with edge(j) = 2^-27 … 1, 32 bins per octave
 *   r_below       pairs with r < 0.1 and r < 0.2 (slots [ind][0], [ind][1]); r_sum Σ r
 *                 (per token in double, vectorised partial sums, then in token order)
 *   abs_hist      per neuron over all tokens, |a| in NL_SUMMARY_ABS_BINS bins: bin 0 a = 0,
 *                 bin 1 (0, 2^-24], bin 2 + j (e(j), e(j+1)] with e(j) = 2^(-24 + j/2)
 *                 (j = 0…80, two bins per octave, exact from the float's bits), last bin
 *                 (2^16, ∞] (overflow and non-finite)
 *   pooled        per document, mean |a| over its prompt tokens (float sums in token order
 *                 divided by prompt_len, exactly as `record --pool` computes mean_abs)
 *   top-K         per neuron, the K tokens of largest |a| (ties: lower document, then lower
 *                 position first), each as (a, document, position in the document), best first
 *
 * File (schema v1; h5py reads it without ceremony):
 *   /                        attrs format="neuronlab.summary", kind="summary", version=1,
 *                            model, arch, n_layers, d_model, d_ff, ffn_kind, act_fn,
 *                            dataset, tokenizer, dataset_checksum, created_by,
 *                            compute ("f32"/"bf16"; absent in older files = "f32"),
 *                            layers int32 [R], complete int32 (0 = a committed part of an
 *                            interrupted run: the n_docs documents it holds are whole),
 *                            n_docs int64, n_tokens int64, top_k int32, thresholds f64 [n_tau]
 *   /doc_offsets             int64  [Dc+1]   document d spans tokens [off[d], off[d+1])
 *   /doc_labels              string [Dc]     UTF-8 ("" none)
 *   /prompt_len              int32  [Dc]
 *   /groups/labels           string [G]      byte order
 *   /groups/tokens           int64  [G]
 *   /bins/r_edges            f64    [866]    0, 2^-27 … 1: r_hist bin b ≥ 1 is (r_edges[b-1], r_edges[b]]
 *   /bins/abs_edges          f64    [82]     0, 2^-24 … 2^16: abs_hist bin b in 1..81 likewise,
 *                                            bin 82 is (2^16, ∞], bin 0 is a = 0
 *   /layers/{l}/w_out_norm   f32    [F]
 *   /layers/{l}/mean, m2, sum_abs  f64 [G, F];  min, max, max_r  f32 [G, F]
 *   /layers/{l}/freq         int64  [G, n_tau, F]
 *   /layers/{l}/r_hist       int64  [G, 2, 866];  r_below int64 [G, 2, 2];  r_sum f64 [G, 2]
 *   /layers/{l}/abs_hist     int64  [F, 83]
 *   /layers/{l}/top_value    f32    [F, K];  top_doc, top_pos int32 [F, K] (−1 in unused slots)
 *   /pooled/{l}/mean_abs     f32    [Dc, F]
 * The file is written whole (temporary file beside it, fsync, rename): a reader never sees a
 * half-written summary.
 * Checked by tests/test_summary.c (round trip, bad files) and tests/summary_cli.sh (h5py).
 */
#ifndef NEURONLAB_SUMMARY_H5_H
#define NEURONLAB_SUMMARY_H5_H

#include "neuronlab/common.h"
#include "neuronlab/h5store.h"

#define NL_SUMMARY_FORMAT "neuronlab.summary"
#define NL_SUMMARY_VERSION 1
#define NL_SUMMARY_R_BINS 866   /* the sparsity analysis' bins of r */
#define NL_SUMMARY_ABS_BINS 83  /* zero, (0, 2^-24], 80 half-octaves to 2^16, overflow */
#define NL_SUMMARY_MAX_TAU 8
#define NL_SUMMARY_MAX_K 1024

/* One recorded layer's statistics (G groups, F neurons, K slots; all owned by the summary). */
typedef struct {
    float *w_out_norm;          /* (F) */
    double *mean, *m2, *sum_abs;/* (G, F) */
    float *min, *max, *max_r;   /* (G, F) */
    int64_t *freq;              /* (G, n_tau, F) */
    int64_t *r_hist;            /* (G, 2, NL_SUMMARY_R_BINS) */
    int64_t *r_below;           /* (G, 2, 2) */
    double *r_sum;              /* (G, 2) */
    int64_t *abs_hist;          /* (F, NL_SUMMARY_ABS_BINS) */
    float *top_value;           /* (F, K) best first */
    int32_t *top_doc, *top_pos; /* (F, K) −1 in unused slots */
    int32_t *top_n;             /* (F) slots in use */
    float *pooled;              /* (cap_docs, F), rows [0, n_docs) valid */
} nl_summary_layer;

/* The summary. Every pointer is owned by it (nl_summary_destroy). */
typedef struct {
    /* description (strings never NULL) */
    char *model, *arch, *ffn_kind, *act_fn, *dataset, *tokenizer, *dataset_checksum, *created_by;
    char *compute;                 /* "f32" or "bf16" (nl_compute_name of the forward pass) */
    int n_layers, d_model, d_ff;   /* L, D, F */
    int n_rec;                     /* R */
    int *layers;                   /* (R) ascending */
    int top_k;                     /* K ≥ 1 */
    int n_tau;
    double tau[NL_SUMMARY_MAX_TAU];/* frequency thresholds, ascending, distinct, in [0, 1) */
    int complete;                  /* 1: the whole dataset */
    /* documents */
    int64_t n_docs, n_tokens, cap_docs;
    int64_t *doc_offsets;          /* (Dc+1) */
    char **doc_labels;             /* (Dc) */
    int32_t *prompt_len;           /* (Dc) */
    int32_t *doc_group;            /* (Dc) group of each document */
    /* groups */
    int n_groups;                  /* G ≥ 1 */
    char **group_labels;           /* (G) byte order, distinct */
    int64_t *group_tokens;         /* (G) */
    nl_summary_layer *lay;         /* (R) */
    /* the activation-file view the analyses read (doc_offsets, doc_labels, prompt_len and
     * the meta strings point into the summary; tokens NULL; meta.pooled = 1, meta.no_acts = 1);
     * refreshed by nl_summary_sync_info */
    nl_h5_info info;
} nl_summary;

/* What nl_summary_create needs; pointers borrowed for the call (copied). */
typedef struct {
    const char *model, *arch, *ffn_kind, *act_fn, *dataset, *tokenizer, *dataset_checksum; /* NULL → "" */
    int n_layers, d_model, d_ff;
    const int *layers;             /* (n_rec) distinct in [0, L); NULL → all */
    int n_rec;
    int top_k;                     /* 1 … NL_SUMMARY_MAX_K; 0 → 20 */
    const double *tau;             /* (n_tau) distinct in [0, 1); NULL → 0, 0.01, 0.1, 0.2 */
    int n_tau;
    const char *const *group_labels; /* (n_groups) distinct; sorted and copied; NULL → {""} */
    int n_groups;
    const char *compute;           /* NULL → "f32" */
} nl_summary_desc;

/* An empty summary (no documents): counts 0, min +inf, max −inf, max_r 0, w_out_norm 0.
 * Errors: NL_EINVAL naming the bad field, NL_ENOMEM. */
nl_status nl_summary_create(nl_ctx *ctx, const nl_summary_desc *desc, nl_summary **out);
void nl_summary_destroy(nl_summary *s); /* NULL is a no-op */

/* The range of abs_hist bin b (0 … NL_SUMMARY_ABS_BINS − 1), as /bins/abs_edges states it:
 * bin 0 is a = 0 (*lo = *hi = 0), bin b in 1 … 81 is (*lo, *hi], bin 82 is (2^16, +inf]. */
void nl_summary_abs_bin(int b, double *lo, double *hi);
/* Index of the group labelled label, or −1. */
int nl_summary_group(const nl_summary *s, const char *label);
/* Index in s->layers of model layer l, or −1. */
int nl_summary_layer_index(const nl_summary *s, int l);
/* Appends a document (label must be one of the groups) with n_tokens tokens and prompt_len
 * (−1 = all) and its pooled rows pooled (R, F) (NULL: zeros, to be filled by the caller).
 * Only the document tables: the caller adds the token statistics. */
nl_status nl_summary_add_doc(nl_ctx *ctx, nl_summary *s, const char *label, int64_t n_tokens, int prompt_len,
                             const float *pooled);
/* Refreshes s->info from the fields above (after any change). */
void nl_summary_sync_info(nl_summary *s);

/* Writes s to path whole (temporary file beside it, fsync, rename over path). The file
 * stores complete = s->complete. Errors: "cannot write 'PATH': <reason>" (NL_EIO). */
nl_status nl_summary_write(nl_ctx *ctx, const nl_summary *s, const char *path);

/* Reads a summary file, validating the format, version and every shape against the
 * attributes before allocating from them. Errors (NL_EIO unreadable, NL_EFORMAT otherwise):
 *   'x.h5' is an activation file (per-token activations), not a summary (record --stats)
 *   'x.h5' is corrupt: /layers/2/freq has shape (3, 4, 64), expected (3, 4, 128) (groups, thresholds, d_ff)
 *   'x.h5' is corrupt: /layers/2/top_doc[5] names document 99 position 3 outside the file
 *   'x.h5' is corrupt: /layers/2/sum_abs[0, 7] holds an impossible value (NaN, negative;
 *   likewise m2, max_r outside [0, 1], r_sum, counts outside 0..the group's tokens)
 * On success *out is owned by the caller. */
nl_status nl_summary_read(nl_ctx *ctx, const char *path, nl_summary **out);

/* What an HDF5 file of neuronlab holds, by its format attribute. */
typedef enum { NL_H5_KIND_OTHER = 0, NL_H5_KIND_ACTIVATIONS, NL_H5_KIND_SUMMARY } nl_h5_kind;
/* The kind of path (NL_H5_KIND_OTHER for a missing, non-HDF5 or foreign file: the reader
 * of the expected kind then gives the precise error). Never fails. */
nl_h5_kind nl_h5_file_kind(const char *path);

#endif
