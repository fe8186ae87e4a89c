/* record_mpi.c — `record` over MPI ranks (contract in record_mpi.h). The activation dump is
 * one HDF5 file written by every rank together (h5store_mpi.h: parallel HDF5 over MPI-IO):
 * data parallel, rank r records its contiguous block of documents (mpi.h nl_mpi_block) with the
 * single-process code, its rows going straight to their place in the shared datasets (token and
 * document offsets from an exscan of the ranks' counts); pipeline parallel, every rank walks
 * every document and writes the rows of the layers it holds (rank 0 the tokens and documents).
 * A rank's memory stays one batch of rows plus its writer's chunk buffers. --stats: each rank
 * summarises its block and rank 0 merges the summaries (part files beside the output).
 * Checked by tests/mpi.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/record_mpi.h"
#include "neuronlab/h5store_mpi.h"
#include "neuronlab/mpi.h"
#include "neuronlab/recorder.h"

static void part_path(char *buf, size_t n, const char *outp, int rank) { snprintf(buf, n, "%s.part-%d", outp, rank); }

/* The documents [lo, hi) of ds as a dataset (borrowed: never destroyed). */
static nl_dataset block_view(const nl_dataset *ds, int lo, int hi) {
    nl_dataset v = *ds;
    v.docs = ds->docs + lo;
    v.n_docs = hi - lo;
    v.n_tokens = 0;
    for (int d = lo; d < hi; d++) v.n_tokens += ds->docs[d].n_tokens;
    return v;
}

nl_status nl_cli_record_mpi_check(nl_ctx *ctx, int resume, int stats, int imatrix, int attn) {
    if (nl_mpi_size() <= 1) return NL_OK;
    if (attn)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --attn runs in one process (its per-document datasets are made as the "
                                               "documents come, which the collective writer does not do): run it without mpirun");
    if (resume)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --resume runs in one process (the file holds its documents in order): "
                                               "run it without mpirun");
    if (imatrix)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "--imatrix runs in one process (its sums are not merged across MPI ranks yet)");
    if (stats && nl_mpi_pipeline() > 1)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --stats --pipeline is not supported (the summaries merge over documents, "
                                               "not layers): run --stats data parallel, without --pipeline");
    return NL_OK;
}

nl_status nl_cli_record_create(nl_ctx *ctx, const char *outp, const nl_h5_meta *meta, const nl_dataset *ds, nl_h5_writer **w) {
    if (nl_mpi_size() <= 1) return nl_h5_writer_create(ctx, outp, meta, w);
#ifdef NL_MPI
    nl_h5_part part = {0};
    if (nl_mpi_pipeline() > 1) { /* every rank walks every document; rank 0 writes them, each rank its layers */
        part.n_tokens = ds->n_tokens, part.n_docs = ds->n_docs;
        part.docs = nl_mpi_is_root();
        nl_mpi_stage(meta->n_layers, &part.layer_lo, &part.layer_hi);
        part.w_out_norm = 1;
    } else { /* block r of the documents; its offsets are the counts of the blocks before it */
        int lo, hi;
        nl_mpi_block(ds->n_docs, &lo, &hi);
        const int64_t t = block_view(ds, lo, hi).n_tokens, d = hi - lo;
        part.tok0 = nl_mpi_exscan(t), part.doc0 = nl_mpi_exscan(d);
        part.n_tokens = nl_mpi_sum(t), part.n_docs = nl_mpi_sum(d);
        NL_ASSERT(part.doc0 == lo && part.n_docs == ds->n_docs && part.n_tokens == ds->n_tokens);
        part.docs = 1;
        part.layer_lo = 0, part.layer_hi = meta->n_layers;
        part.w_out_norm = nl_mpi_is_root(); /* every rank computes the same norms */
    }
    return nl_h5_writer_create_mpi(ctx, outp, meta, &part, w);
#else
    NL_ASSERT(!"several ranks in the serial build");
    return NL_EUNSUPPORTED;
#endif
}

nl_status nl_cli_record_dump(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer **w, int pooled, int stride,
                             nl_progress *progress, nl_record_rows_fn rows, void *rows_user) {
    if (nl_mpi_size() <= 1) return nl_record_run_rows(ctx, f, ds, *w, pooled, stride, progress, rows, rows_user);
    int lo, hi;
    nl_mpi_block(ds->n_docs, &lo, &hi); /* all of them in pipeline mode */
    nl_dataset view = block_view(ds, lo, hi);
    nl_status st = nl_record_run_rows(ctx, f, &view, *w, pooled, stride, progress, rows, rows_user);
    st = nl_mpi_agree(ctx, st);
    nl_ctx c2; /* keep the run's message when it failed */
    nl_ctx_init(&c2);
    nl_status cst = nl_h5_writer_close(*w, &c2, st == NL_OK); /* collective: the file is renamed into place, or removed */
    *w = NULL;
    if (st == NL_OK && cst != NL_OK) st = cst, memcpy(ctx->msg, c2.msg, sizeof ctx->msg);
    if (st == NL_OK && progress && nl_mpi_data_size() > 1) nl_progress_add(progress, ds->n_tokens - view.n_tokens); /* the other ranks' share */
    return st;
}

nl_status nl_cli_record_summary(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_summary *s, int stride,
                                nl_progress *progress, const nl_summary_commit *commit, const char *outp) {
    const int S = nl_mpi_data_size();
    if (S <= 1) return nl_summary_run(ctx, f, ds, s, stride, progress, commit);
    int lo, hi;
    nl_mpi_block(ds->n_docs, &lo, &hi);
    nl_dataset view = block_view(ds, lo, hi);
    nl_status st = nl_summary_run(ctx, f, &view, s, stride, progress, NULL);
    char p[4200];
    part_path(p, sizeof p, outp, nl_mpi_rank());
    /* a rank without documents (more ranks than documents) has no part: a summary file holds
     * at least one document */
    if (st == NL_OK && !nl_mpi_is_root() && hi > lo) st = nl_summary_write(ctx, s, p);
    st = nl_mpi_agree(ctx, st);
    for (int r = 1; st == NL_OK && nl_mpi_is_root() && r < S; r++) {
        nl_summary *part = NULL;
        int rlo, rhi;
        nl_mpi_block_of(ds->n_docs, r, S, &rlo, &rhi);
        if (rhi == rlo) continue;
        part_path(p, sizeof p, outp, r);
        if ((st = nl_summary_read(ctx, p, &part)) == NL_OK) st = nl_summary_merge(ctx, s, part);
        nl_summary_destroy(part);
    }
    if (st == NL_OK && nl_mpi_is_root() && progress) {
        int64_t others = ds->n_tokens - view.n_tokens; /* the other ranks' share */
        nl_progress_add(progress, others);
    }
    st = nl_mpi_agree(ctx, st);
    if (!nl_mpi_is_root()) {
        part_path(p, sizeof p, outp, nl_mpi_rank());
        unlink(p);
    }
    return st;
}
