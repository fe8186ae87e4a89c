/* record_mpi.h — `record` over MPI ranks (data parallel, mpi.h): each rank records its block
 * of documents; rank 0 writes the one output file. With one rank (and in the serial build)
 * every function is the plain single-process call. */
#ifndef NEURONLAB_CLI_RECORD_MPI_H
#define NEURONLAB_CLI_RECORD_MPI_H

#include "neuronlab/h5store.h"
#include "neuronlab/recorder.h"
#include "neuronlab/summary.h"

/* Refuses what record cannot do over several ranks (NL_EUNSUPPORTED, the same on every rank):
 * --resume, --pipeline and the --hook streams. */
nl_status nl_cli_record_mpi_check(nl_ctx *ctx, int resume, unsigned streams);

/* The activation dump: rank 0 creates outp, rank r > 0 its part file "OUT.part-R" (the
 * shared filesystem holds both). */
nl_status nl_cli_record_create(nl_ctx *ctx, const char *outp, const nl_h5_meta *meta, nl_h5_writer **w);

/* Records this rank's block of ds into *w (nl_record_run_rows, rows/rows_user as there); then rank r > 0 closes its part
 * (*w becomes NULL) and rank 0 appends the parts in rank order, document by document, so
 * outp holds every document in dataset order with the datasets of a single-process run (bit
 * for bit: the same rows, f16 round trips exactly), and removes them. Collective. */
nl_status nl_cli_record_dump(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer **w, int pooled, int stride,
                             nl_progress *progress, const char *outp, nl_record_rows_fn rows, void *rows_user);

/* record --stats: this rank's block into s (nl_summary_run; commits only with one rank);
 * rank r > 0 writes s to "OUT.part-R", rank 0 merges them in rank order (nl_summary_merge:
 * counts, histograms and top-K exact, moments by Chan's formula) and removes them. Only
 * rank 0's s is then the whole summary. Collective. */
nl_status nl_cli_record_summary(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_summary *s, int stride,
                                nl_progress *progress, const nl_summary_commit *commit, const char *outp);

#endif
