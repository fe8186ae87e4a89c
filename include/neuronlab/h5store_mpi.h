/* h5store_mpi.h — the activation file (h5store.h, schema v1) written collectively by the MPI
 * ranks of one job: parallel HDF5 over MPI-IO (H5Pset_fapl_mpio). MPI build only (`make mpi`,
 * -DNL_MPI); the code is src/store/h5store_mpi.inc, part of h5store.c there, so the serial
 * build has neither the functions nor any change of its writer.
 *
 * The file every rank writes into is the one a single process writes, dataset for dataset and
 * attribute for attribute (tests/mpi.sh compares them with h5py): each rank writes its own rows
 * straight into the shared datasets, at row offsets its caller computes (an exscan of the ranks'
 * token and document counts), and no rank ever holds more than its appenders' one chunk per
 * dataset. How (h5store_mpi.inc):
 *  1. rank 0 alone lays the file out under a temporary name ("PATH.tmp-PID", PID of rank 0) with
 *     the serial writer's code: the root attributes, every group and dataset at its final extent
 *     (N tokens, D documents) with every chunk allocated at creation, and the w_out_norm
 *     datasets; then closes it.
 *  2. every rank opens it through MPI-IO and opens every dataset in the same order (collective);
 *     from then on its writes are independent H5Dwrite calls into storage that exists, which
 *     change no metadata. Rows of variable-length strings (doc_labels) stay in memory: parallel
 *     HDF5 1.10 does not write variable-length data.
 *  3. nl_h5_writer_close (collective): every rank writes its buffered rows, the ranks agree
 *     (nl_mpi_agree) and close the file together; rank 0 gathers the labels, reopens the file
 *     alone, writes doc_labels, /vocab (nl_h5_writer_put_vocab keeps its arguments until then)
 *     and complete = 1, and renames it to PATH.
 * PATH therefore appears whole or not at all: there are no commits (end_doc never flushes;
 * nl_h5_writer_flush only writes buffered rows), and a failure on any rank, an interrupt, or
 * close with complete = 0 removes the temporary file (a killed job leaves it behind, never PATH).
 * What must be shared: the folder of PATH, one filesystem every rank reaches (MPI-IO writes
 * into it from every rank; NFS needs its MPI-IO locking options, a parallel filesystem none).
 * Checked by tests/mpi.sh. */
#ifndef NEURONLAB_H5STORE_MPI_H
#define NEURONLAB_H5STORE_MPI_H

#include "neuronlab/h5store.h"

/* This rank's part of the file. Every field but tok0, doc0, docs, layer_lo/hi and w_out_norm is
 * the same on every rank. */
typedef struct {
    int64_t n_tokens;       /* N: rows of /tokens and of every per-token dataset */
    int64_t n_docs;         /* D: documents of the whole file */
    int64_t tok0, doc0;     /* this rank's first token row and first document */
    int docs;               /* 1: this rank writes /tokens, doc_offsets, doc_labels and prompt_len of the
                             * documents it ends; 0: another rank does (it counts them only) */
    int layer_lo, layer_hi; /* this rank writes the rows of the recorded layers in [layer_lo, layer_hi) */
    int w_out_norm;         /* 1: this rank writes w_out_norm of its layers (others ignore theirs) */
} nl_h5_part;

/* Collective (every rank of MPI_COMM_WORLD, the same path and meta). Creates the writer of
 * this rank's part: afterwards the usual calls (begin_doc … end_doc, put_w_out_norm,
 * put_vocab) fill it, the rows of this rank's documents and layers only — its first document
 * is the file's document doc0, its first token row tok0; layers outside [layer_lo, layer_hi)
 * are not recorded by this writer (nl_h5_writer_has_layer is 0), so a hook may forward every
 * layer. nl_h5_writer_docs counts this rank's documents. nl_h5_writer_close is collective too
 * and returns the same status on every rank: NL_OK with PATH written (complete = 1 requires
 * every rank's documents: the ranks together must have ended D documents of N tokens), or
 * the first failing rank's error (nothing written); complete = 0 writes nothing and returns
 * NL_OK. Errors of create (the same on every rank): NL_EINVAL (bad meta or part), NL_EIO
 * ("cannot create 'PATH': …"), NL_ENOMEM. On success *out is owned by the caller. */
nl_status nl_h5_writer_create_mpi(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, const nl_h5_part *part,
                                  nl_h5_writer **out);

#endif
