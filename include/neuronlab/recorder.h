/* recorder.h — streams a dataset's FFN activations into an HDF5 activation file while the
 * forward pass runs (the engine of `neuronlab record`).
 *
 * Rules: an observer on the ffn_act hook point appends each batch's rows as they are
 * computed, so nothing is held whole in memory: memory is the forward pass plus the
 * writer's one chunk per recorded layer plus one (F) pooling accumulator per layer.
 * Documents are walked like perplexity.h does (sliding windows, batches); each token's
 * activation is taken from the first window in which it appears as a new token.
 * On an interrupt (NL_EINTR) or error the caller closes the writer with complete = 0;
 * every document ended so far stays in the file; a writer opened with nl_h5_writer_resume
 * continues after the documents it holds.
 * Threads: a small model (nl_forward_doc_threads) records documents side by side, each thread on
 * its own forward state (nl_forward_create_like) with its own observers; a document's rows are
 * captured in memory and written in document order by one thread at a time, so the file holds
 * exactly the datasets of the serial run, whatever the thread count. Captures in flight are at
 * most 2 documents and 64 MiB per thread; a dataset with a document whose rows exceed 64 MiB,
 * a rows callback, routing or attention datasets, and MPI ranks use the serial loop, which
 * streams each batch's rows (its GEMMs use the threads).
 * Checked by tests/test_recorder.c (stories260K activations, w_out_norm, pooling) and
 * tests/record_threads.sh (--threads 1 and 2 write the same datasets).
 * Mixture-of-experts: the writer's native MoE layers (meta.moe_layers) get their routing datasets
 * from an NL_HOOK_ROUTING observer (router_logits, experts, expert_weights, expert_act, shared_act,
 * shared_gate; no ffn_act, w_out_norm or mean_abs: pooling skips them), its MoEfied layers
 * moe_experts beside ffn_act; the same rows as ffn_act. Checked by tests/moe_models_cli.sh.
 */
#ifndef NEURONLAB_RECORDER_H
#define NEURONLAB_RECORDER_H

#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/h5store.h"
#include "neuronlab/progress.h"

/* Writes w_out_norm for every recorded layer, then every document of ds: ffn_act from the
 * NL_HOOK_FFN_ACT point and each stream the writer records (nl_h5_writer_streams) from its
 * point — resid from NL_HOOK_RESID, attn_out from NL_HOOK_ATTN_OUT, ffn_in from
 * NL_HOOK_FFN_IN — with the same rows (each token once, from its first window); pooled = 1 adds
 * each document's mean |a| over its prompt tokens (the writer must have meta.pooled).
 * Layers the writer records attention of (nl_h5_writer_has_attn) get their (H, n, n) matrix per
 * document from NL_HOOK_ATTN_PROBS; every document must then fit one window (n ≤ the forward
 * pass's context), else NL_EINVAL naming the document and its line before anything is run.
 * f's hooks get one observer for the duration of the call (removed before returning).
 * stride as in nl_forward_doc. progress may be NULL. w stays owned by the caller.
 * Starts at document nl_h5_writer_docs(w): a writer from nl_h5_writer_resume continues where
 * the cut-short file ends (NL_EINVAL when it holds more documents than ds). */
nl_status nl_record_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                        nl_progress *progress);

/* nl_record_run that also calls rows(rows_user, skip) before each forward run, skip = the leading
 * rows of that run which are context only (recorded from the previous window), so other
 * observers of the same pass (record --imatrix, imatrix.h) count every token once as the dump does. */
typedef void (*nl_record_rows_fn)(void *user, int skip);
nl_status nl_record_run_rows(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer *w, int pooled, int stride,
                             nl_progress *progress, nl_record_rows_fn rows, void *rows_user);

#endif
