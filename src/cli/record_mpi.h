/* record_mpi.h — `record` over MPI ranks (mpi.h): data parallel, each rank records its block
 * of documents; pipeline parallel (--pipeline P), each rank the layers it holds; the ranks
 * write the one output file together (h5store_mpi.h). With one rank (and in the serial build)
 * every function is the plain single-process call. */
#ifndef NEURONLAB_CLI_RECORD_MPI_H
#define NEURONLAB_CLI_RECORD_MPI_H

#include "neuronlab/h5store.h"
#include "neuronlab/recorder.h"
#include "neuronlab/summary.h"

/* Refuses what record cannot do over several ranks (NL_EUNSUPPORTED, the same on every rank):
 * --resume, --imatrix, --attn, and --stats with --pipeline. */
nl_status nl_cli_record_mpi_check(nl_ctx *ctx, int resume, int stats, int imatrix, int attn);

/* The activation dump's writer: with one rank nl_h5_writer_create; over several ranks, collective,
 * nl_h5_writer_create_mpi (h5store_mpi.h) with this rank's part: data parallel its block of ds
 * (offsets by exscan of the blocks' token and document counts), every layer, rank 0 writing
 * w_out_norm; pipeline parallel every document (rank 0 writes the tokens and documents) and
 * the layers of its stage (nl_mpi_stage). */
nl_status nl_cli_record_create(nl_ctx *ctx, const char *outp, const nl_h5_meta *meta, const nl_dataset *ds, nl_h5_writer **w);

/* Records into *w (nl_record_run_rows, rows/rows_user as there): with one rank all of ds, and
 * the caller closes *w. Over several ranks (collective) this rank's block of documents (data
 * parallel) or every document (pipeline); then the ranks agree and close *w together (*w
 * becomes NULL): on success the output holds the single-process file's datasets and
 * attributes; on any rank's failure or an interrupt no output is written (the temporary file is
 * removed) and every rank returns the first failing rank's status. */
nl_status nl_cli_record_dump(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer **w, int pooled, int stride,
                             nl_progress *progress, nl_record_rows_fn rows, void *rows_user);

/* record --stats: this rank's block into s (nl_summary_run; commits only with one rank);
 * rank r > 0 writes s to "OUT.part-R", rank 0 merges them in rank order (nl_summary_merge:
 * counts, histograms and top-K exact, moments by Chan's formula) and removes them. Only
 * rank 0's s is then the whole summary. Collective. */
nl_status nl_cli_record_summary(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_summary *s, int stride,
                                nl_progress *progress, const nl_summary_commit *commit, const char *outp);

#endif
