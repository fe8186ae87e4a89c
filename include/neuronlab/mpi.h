/* mpi.h — the MPI layer of the second build (`make mpi` → build-mpi/neuronlab, -DNL_MPI,
 * Open MPI + parallel HDF5). Every MPI call of neuronlab goes through this module; in the
 * default (serial) build every function is a no-op that describes one process (rank 0 of 1),
 * so callers need no #ifdef and the serial build behaves as it always did.
 *
 * Two modes (README "Running on a cluster"):
 *  - data parallel (the default under mpirun): documents are split into contiguous blocks,
 *    rank r scores block r (nl_mpi_block); the per-document results are gathered in
 *    document order, so every sum is added in the order of a single process (bit for bit).
 *  - pipeline parallel (nl_mpi_set_pipeline, `--pipeline P`): rank r owns a contiguous block
 *    of layers (nl_mpi_stage); every rank walks every document; the hidden states (T, D) of
 *    each batch go from rank r to r+1 (nl_mpi_send_next / nl_mpi_recv_prev); the last rank
 *    computes the head and broadcasts the per-token results (nl_mpi_bcast_last).
 *
 * Errors. A failure that every rank reaches together is agreed on (nl_mpi_agree): all ranks
 * return the first failing rank's status and message and rank 0 alone prints it (the other
 * ranks' stdout and stderr go to /dev/null from nl_mpi_init on). A rank that fails alone
 * (the others wait in a collective) prints its message itself ("neuronlab: rank R: ...")
 * at nl_mpi_finalize and aborts every rank (MPI_Abort).
 * Checked by tests/mpi.sh. */
#ifndef NEURONLAB_MPI_H
#define NEURONLAB_MPI_H

#include <stddef.h>
#include <stdint.h>

#include "neuronlab/common.h"

/* MPI_Init_thread (funneled) and MPI_COMM_WORLD's rank and size; ranks other than 0 send
 * stdout and stderr to /dev/null (their errors are agreed on, or printed at finalize).
 * Returns 0, or -1 when MPI could not start (message on stderr). Serial build: returns 0. */
int nl_mpi_init(int *argc, char ***argv);
/* Ends MPI with the command's exit code rc and returns it. Every rank meets in a barrier of
 * its own (polled every 20 ms, so a rank that is done does not spin while rank 0 writes), then
 * MPI_Finalize. A failure that was not agreed on waits only 5 s: when the others do not come
 * (they wait in a collective for this rank), it prints ctx->msg on the real stderr with the
 * rank (rank 0 has printed it already) and calls MPI_Abort(rc). */
int nl_mpi_finalize(int rc, const nl_ctx *ctx);

int nl_mpi_rank(void);      /* 0 in the serial build */
int nl_mpi_size(void);      /* 1 in the serial build */
int nl_mpi_is_root(void);   /* rank 0: the one rank that writes SQLite, stdout and the output file */
int nl_mpi_compiled(void);  /* 1 in the MPI build */
void nl_mpi_barrier(void);

/* Collective: every rank passes its status; all return the first failing rank's status with
 * its message copied into ctx ("rank R: " prefixed when R > 0), or NL_OK when none failed. */
nl_status nl_mpi_agree(nl_ctx *ctx, nl_status st);

/* Collective: *h (a checksum of `what`, described by `desc`, e.g. a path) must be the same on
 * every rank; else every rank returns NL_EINVAL with one message naming the first rank that
 * differs from rank 0 ("ranks disagree about the dataset: rank 1 has 'b.jsonl' (fnv1a64 …)
 * but rank 0 has 'a.jsonl' (fnv1a64 …)"). */
nl_status nl_mpi_check_same(nl_ctx *ctx, const char *what, const char *desc, uint64_t h);

/* ---- data parallel ---- */

/* Ranks that split documents: size, or 1 in pipeline mode (every rank walks every document). */
int nl_mpi_data_size(void);
/* This rank's contiguous block [*lo, *hi) of n items: block r of data_size blocks whose sizes
 * differ by at most one (the first n % size blocks hold one more). Serial: [0, n). */
void nl_mpi_block(int n, int *lo, int *hi);
void nl_mpi_block_of(int n, int rank, int size, int *lo, int *hi);
/* Collective: base holds n items of elem bytes, this rank's block (nl_mpi_block) filled in;
 * afterwards every rank holds all n items. No-op with one data rank. */
nl_status nl_mpi_allgather_blocks(nl_ctx *ctx, void *base, size_t elem, int n);

/* Collective sums over every rank: of the ranks below this one (0 on rank 0), and of all. */
int64_t nl_mpi_exscan(int64_t v);
int64_t nl_mpi_sum(int64_t v);
/* Collective: n bytes of buf from rank 0 to every rank (n the same on every rank). */
void nl_mpi_bcast_bytes(void *buf, size_t n);
/* Collective: rank 0 gets the n bytes of every rank, concatenated in rank order, in *all
 * (malloc'd, caller frees; *total bytes); other ranks get NULL and 0. NL_ENOMEM, or NL_EINVAL
 * beyond 2 GiB in all, on every rank alike. Serial: a copy of mine. */
nl_status nl_mpi_gather_bytes(nl_ctx *ctx, const void *mine, size_t n, char **all, size_t *total);

/* ---- pipeline parallel ---- */

/* Pipeline mode over P ranks: P must equal the number of ranks (NL_EINVAL otherwise) and be
 * at most the number of layers L (a split that leaves a rank no layer is refused). Serial
 * build: P must be 1. Call before opening the model. */
nl_status nl_mpi_set_pipeline(nl_ctx *ctx, int P);
/* Checks the split against the model's L layers (NL_EINVAL when a rank gets none). */
nl_status nl_mpi_check_pipeline(nl_ctx *ctx, int n_layers);
int nl_mpi_pipeline(void); /* P (1 when off) */
/* This rank's layers [*lo, *hi) of L: all of them unless in pipeline mode, where rank r owns
 * block r of nl_mpi_block_of(L, r, P). */
void nl_mpi_stage(int L, int *lo, int *hi);
/* Pipeline transport (no-ops unless pipeline mode): the hidden states of a batch. */
void nl_mpi_send_next(const float *x, size_t n);
void nl_mpi_recv_prev(float *x, size_t n);
/* Broadcasts n doubles from the last pipeline rank to every rank. */
void nl_mpi_bcast_last(double *x, size_t n);

#endif
