/* record_mpi.c — `record` over MPI ranks (contract in record_mpi.h). Each rank records its
 * contiguous block of documents (mpi.h nl_mpi_block) with the single-process code; rank r > 0
 * into a part file beside the output, and rank 0 then appends the parts in rank order. The
 * parts are whole neuronlab files, so what rank 0 appends is read back by the validating
 * reader, and a rank's memory stays one batch of rows. Checked by tests/mpi.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/record_mpi.h"
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

nl_status nl_cli_record_mpi_check(nl_ctx *ctx, int resume, unsigned streams) {
    if (nl_mpi_pipeline() > 1)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --pipeline is not supported (ppl, perturb and prune run pipelined; "
                                               "record splits the documents over the ranks)");
    if (nl_mpi_data_size() <= 1) return NL_OK;
    if (resume)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --resume runs in one process (the file holds its documents in order): "
                                               "run it without mpirun");
    if (streams)
        return nl_errorf(ctx, NL_EUNSUPPORTED, "record --hook resid/attn_out/ffn_in over %d MPI ranks is not supported: "
                                               "record the streams in one process", nl_mpi_size());
    return NL_OK;
}

nl_status nl_cli_record_create(nl_ctx *ctx, const char *outp, const nl_h5_meta *meta, nl_h5_writer **w) {
    if (nl_mpi_data_size() <= 1 || nl_mpi_is_root()) return nl_h5_writer_create(ctx, outp, meta, w);
    char p[4200];
    part_path(p, sizeof p, outp, nl_mpi_rank());
    nl_h5_meta m = *meta;
    m.on_commit = NULL; /* the commit log is the output's */
    return nl_h5_writer_create(ctx, p, &m, w);
}

/* Appends the documents of the part file at path to w (rank 0). buf: (B, d_ff) rows. */
static nl_status append_part(nl_ctx *ctx, nl_h5_writer *w, const char *path, int B, float *buf, nl_progress *progress) {
    nl_h5_reader *r = NULL;
    nl_status st = nl_h5_reader_open(ctx, path, &r);
    if (st != NL_OK) return st;
    const nl_h5_info *in = nl_h5_reader_info(r);
    const nl_h5_meta *m = &in->meta;
    const int L = m->n_layers;
    for (int64_t d = 0; st == NL_OK && d < in->n_docs; d++) {
        const int64_t a = in->doc_offsets[d], n = in->doc_offsets[d + 1] - a;
        if ((st = nl_h5_writer_begin_doc(w, ctx, in->doc_labels[d], in->prompt_len[d])) != NL_OK) break;
        st = nl_h5_writer_append_tokens(w, ctx, in->tokens + a, (int)n);
        for (int l = 0; st == NL_OK && l < L; l++) {
            if (!nl_h5_reader_has_layer(r, l)) continue;
            for (int64_t o = 0; !m->no_acts && st == NL_OK && o < n; o += B) {
                const int k = (int)(n - o < B ? n - o : B);
                if ((st = nl_h5_reader_read_acts(r, ctx, l, a + o, k, buf)) == NL_OK) st = nl_h5_writer_append_acts(w, ctx, l, buf, k);
            }
            if (st == NL_OK && m->pooled && (st = nl_h5_reader_read_pooled(r, ctx, l, d, 1, buf)) == NL_OK)
                st = nl_h5_writer_append_pooled(w, ctx, l, buf);
        }
        if (st == NL_OK) st = nl_h5_writer_end_doc(w, ctx);
        if (st == NL_OK && progress) nl_progress_add(progress, n);
    }
    nl_h5_reader_close(r);
    return st;
}

nl_status nl_cli_record_dump(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_h5_writer **w, int pooled, int stride,
                             nl_progress *progress, const char *outp, nl_record_rows_fn rows, void *rows_user) {
    const int S = nl_mpi_data_size();
    if (S <= 1) return nl_record_run_rows(ctx, f, ds, *w, pooled, stride, progress, rows, rows_user);
    int lo, hi;
    nl_mpi_block(ds->n_docs, &lo, &hi);
    nl_dataset view = block_view(ds, lo, hi);
    nl_status st = nl_record_run_rows(ctx, f, &view, *w, pooled, stride, progress, rows, rows_user);
    if (!nl_mpi_is_root()) { /* the part is whole (complete) or this rank failed */
        nl_ctx c2;
        nl_ctx_init(&c2);
        nl_status cst = nl_h5_writer_close(*w, &c2, st == NL_OK);
        *w = NULL;
        if (st == NL_OK && cst != NL_OK) st = cst, memcpy(ctx->msg, c2.msg, sizeof ctx->msg);
    }
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK && nl_mpi_is_root()) {
        const nl_config *c = nl_model_config(nl_forward_model(f));
        const int B = nl_forward_max_T(f);
        float *buf = malloc((size_t)B * (size_t)c->d_ff * sizeof(float));
        if (!buf) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
        for (int r = 1; st == NL_OK && r < S; r++) {
            char p[4200];
            part_path(p, sizeof p, outp, r);
            st = append_part(ctx, *w, p, B, buf, progress);
        }
        free(buf);
    }
    st = nl_mpi_agree(ctx, st);
    if (!nl_mpi_is_root()) { /* the part is appended (or the run failed): remove it */
        char p[4200];
        part_path(p, sizeof p, outp, nl_mpi_rank());
        unlink(p);
    }
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
