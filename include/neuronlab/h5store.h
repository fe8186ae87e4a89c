/* h5store.h — the HDF5 activation file (schema v1, DESIGN §4): a streaming writer used by
 * `neuronlab record` while the forward pass runs, and a reader for the analyses.
 *
 * Layout (h5py opens it without ceremony):
 *   /                     attrs format="neuronlab.activations", version=1, model, arch,
 *                         n_layers, d_model, d_ff, ffn_kind, act_fn, dtype ("float32" or
 *                         "float16", a numpy dtype name), dataset, created_by,
 *                         layers (int32 [n_rec], the recorded layer indices),
 *                         complete (int32: 0 while writing or after an interrupted run,
 *                         1 after nl_h5_writer_close(w, ctx, 1))
 *   /tokens               int32   [N]      token ids of all documents, concatenated
 *   /doc_offsets          int64   [Dc+1]   document d spans tokens[off[d]:off[d+1]]
 *   /doc_labels           string  [Dc]     UTF-8 variable-length ("" when none)
 *   /prompt_len           int32   [Dc]     prompt tokens per document (all when no prompt)
 *   /layers/{l}/ffn_act   f32|f16 [N, F]   neuron activation a (absent when meta.no_acts)
 *   /layers/{l}/resid     f32|f16 [N, D]   residual stream after the block (meta.streams, below)
 *   /layers/{l}/attn_out  f32|f16 [N, D]   attention output after its output projection
 *   /layers/{l}/ffn_in    f32|f16 [N, D]   normalised FFN input (what the gate/up projections read)
 *   /layers/{l}/w_out_norm f32    [F]      ‖W_out[:, i]‖₂
 *   /pooled/{l}/mean_abs  f32     [Dc, F]  mean |a| over the prompt tokens (when meta.pooled)
 * Mixture-of-experts layers (meta.moe_layers, DESIGN §10), instead of ffn_act / w_out_norm / mean_abs:
 *   /layers/{l}/router_logits  f32     [N, E]           router logits before the softmax
 *   /layers/{l}/experts        int16   [N, k]           chosen experts, torch.topk order
 *   /layers/{l}/expert_weights f32     [N, k]           their weights in the block's output
 *   /layers/{l}/expert_act     f32|f16 [N, k, d_expert] slot j = activations of expert experts[t, j]
 *   /layers/{l}/shared_act     f32|f16 [N, d_shared]    shared expert's activations (d_shared > 0)
 *   /layers/{l}/shared_gate    f32     [N]              sigmoid(x·w_shared_gate) (d_shared > 0)
 *   root attrs moe_layers (int32 [n_moe]), n_experts, experts_per_tok, d_expert, d_shared; the
 *   "layers" attribute then lists only the other (dense) recorded layers, so readers of ffn_act
 *   see a file of dense layers.
 * MoEfied layers (meta.moefied_layers, `record --moe DIR`), beside ffn_act:
 *   /layers/{l}/moe_experts    int16   [N, K]           the K selected experts, ascending ids
 *   root attrs moefied_layers (int32), moe_k.
 *   /vocab                string  [V]      optional (nl_h5_writer_put_vocab): UTF-8 variable-length
 *                                          text of token id t at index t (see put_vocab)
 *   /vocab_bytes          vlen u8 [V]      optional: the exact bytes of token id t (a character split
 *                                          over tokens is whole only when the bytes are joined)
 * for every recorded layer l. With meta.attn_layers (`record --attn`):
 *   /attn                 attrs layers (int32 [n_attn]), n_heads (H)
 *   /attn/layer_{l}/doc_{d}  f32 [H, n, n]  attention probabilities of document d (n tokens, one
 *                                          context window): [h, t, j] = weight of query t on key j
 *                                          (0 for j > t); chunked (1, min(n, 64), n), deflate 1
 * Group names are decimal ("0", "1", … "31") and iterate in
 * creation order; every 1-D/2-D dataset is chunked along its first axis and extendible.
 *
 * Rules:
 *  - Nothing is held whole in memory: each appendable dataset keeps one chunk of rows in a
 *    buffer (memory ≈ recorded layers × chunk bytes) and writes whole, chunk-aligned
 *    slabs; f16 is converted while copying into that buffer.
 *  - A document is the unit of commitment. nl_h5_writer_close() cuts every dataset back to the
 *    last ended document, so any closed file — complete or interrupted (complete = 0) —
 *    has consistent lengths: len(tokens) = doc_offsets[-1] = rows of every ffn_act (and
 *    of every resid / attn_out / ffn_in), and
 *    len(doc_labels) = len(prompt_len) = rows of every mean_abs = Dc.
 *  - Crash safety (commit protocol). The superblock is the default one (libver low bound
 *    1.8, not "latest", whose status flags would make a crashed file unopenable without
 *    h5clear). The metadata cache is configured never to evict (so never to write) dirty
 *    metadata; appendable datasets have no raw-data chunk cache, so rows reach the file at
 *    H5Dwrite. A commit writes every buffered row (each extent = the rows of the ended
 *    documents), reserves the file's blocks up to its allocated end (fallocate: a full disk
 *    or `ulimit -f` fails here, before any metadata is written) and calls H5Fflush. Between
 *    commits the metadata on disk is the last commit's and new raw data lies where it does
 *    not point, so a process killed at any moment (SIGKILL, power loss of the process, a
 *    second Ctrl-C) leaves a file h5py opens, holding every document of the last commit.
 *    The only window is a kill inside H5Fflush itself (HDF5 writes the superblock last).
 *    Before its first commit the file has a temporary name (see nl_h5_writer_create).
 *    end_doc commits when meta.commit_seconds (default NL_H5_COMMIT_SECONDS = 2 s) have
 *    passed since the last commit; create, flush, resume and close always commit.
 *    Measured cost (zoo model notebooks-data/models/silu, the first 40 documents of
 *    notebooks-data/eval/code.jsonl = 10494 tokens, all layers, f32, 178 MB, --threads 1,
 *    2 shared cores at load 9-12, two runs each): no commit until close 11.6 / 14.6 s, every
 *    2 s (6-7 commits) 11.9 / 15.8 s, after every document (40 commits) 15.3 / 13.9 s: the
 *    cost of a commit (a partial-chunk write that is not repeated later, one fallocate, a
 *    few KB of metadata) is below the run-to-run noise. The 2 s default bounds what a kill
 *    loses to ~2 s of work; NEURONLAB_COMMIT_SECONDS sets it for `record`.
 *    Filters (deflate) are not crash-safe between commits: a rewritten compressed chunk moves.
 *  - After a failed write (ENOSPC, EFBIG …) nothing more is written: close abandons the file
 *    (HDF5's descriptor is redirected to a scratch file before H5Fclose) so it keeps the last
 *    commit, and the error says how many documents that is:
 *      cannot write 'a.h5': No space left on device (the file keeps the 12 documents committed before)
 *    HDF5's atexit teardown is disabled (H5dont_atexit); every id is closed on every path.
 *  - HDF5's own error-stack printing is silenced; failures become one-line messages in
 *    ctx ("cannot create 'acts.h5': Permission denied").
 *  - The HDF5 library in use is not thread-safe: call this module from one thread at a time.
 *  - The MPI build (`make mpi`) adds a writer the ranks of one job share, writing one file
 *    together through MPI-IO (h5store_mpi.h); the writer calls below apply to it too, with the
 *    differences listed there (no commits: the file takes its name whole at close).
 * Checked by tests/test_h5store.c (round trips, interrupted close, reader errors),
 * tests/test_h5streams.c (/vocab, the streams: round trips, interrupted close, resume) and
 * tests/check_h5.py via tests/h5_schema.sh and tests/h5_hooks.sh (the schema as h5py sees it).
 */
#ifndef NEURONLAB_H5STORE_H
#define NEURONLAB_H5STORE_H

#include "neuronlab/common.h"

#define NL_H5_FORMAT "neuronlab.activations"
#define NL_H5_VERSION 1

/* Stored dtype of /layers/{l}/ffn_act. */
typedef enum { NL_H5_F32 = 0, NL_H5_F16 } nl_h5_dtype;
const char *nl_h5_dtype_name(nl_h5_dtype dt); /* "float32", "float16" */

/* Filter of ffn_act and mean_abs. NONE is the default: compression slows the writer far
 * more than it saves (measurements in src/store/h5store.c). */
typedef enum {
    NL_H5_FILTER_NONE = 0,
    NL_H5_FILTER_DEFLATE,         /* deflate level 1 */
    NL_H5_FILTER_SHUFFLE_DEFLATE, /* byte shuffle + deflate level 1 */
} nl_h5_filter;

/* What a file describes. Writer: every pointer is borrowed for the nl_h5_writer_create call
 * only (copied); a zeroed struct plus the model fields gives the defaults.
 * Reader: strings and layers are owned by the reader. */
typedef struct {
    const char *model;      /* model name or path; NULL → "" */
    const char *arch;       /* "llama", "gpt2" …; NULL → "" */
    int n_layers;           /* L (> 0) */
    int d_model;            /* D (> 0) */
    int d_ff;               /* F (> 0) */
    const char *ffn_kind;   /* "gated" or "plain" */
    const char *act_fn;     /* "silu", "gelu" …; NULL → "" */
    nl_h5_dtype dtype;      /* of ffn_act */
    const char *dataset;    /* dataset path or name; NULL → "" */
    const char *tokenizer;  /* tokenizer that turned the dataset's text into ids; NULL → "" (ids given) */
    const char *created_by; /* NULL → "neuronlab " NL_VERSION */
    const char *compute;    /* number format of the forward pass's matrix products (nl_compute_name):
                             * "f32" or "bf16" (approximate); NULL → "f32". The reader gives "f32"
                             * for files without the attribute. Checked by resume. */
    const int *layers;      /* (n_rec) recorded layers, distinct, in [0, L); NULL → all.
                             * Stored sorted. */
    int n_rec;              /* entries of layers; 0 → all L layers */
    int pooled;             /* 1 = write /pooled/{l}/mean_abs */
    int no_acts;            /* 1 = no /layers/{l}/ffn_act (pooled-only file, for large models) */
    /* Writer tuning (not stored as attributes): */
    int chunk_rows;         /* rows per ffn_act chunk; 0 → automatic (see h5store.c) */
    nl_h5_filter filter;    /* default NL_H5_FILTER_NONE */
    double commit_seconds;  /* commit when a document ends and this long has passed since the
                             * last commit; 0 → NL_H5_COMMIT_SECONDS (2 s), < 0 → after every
                             * document */
    void (*on_commit)(void *user, int64_t docs); /* NULL, or called after each commit with the
                             * documents the file now keeps */
    void *on_commit_user;
    /* Stored (root attribute dataset_checksum, "" when NULL) and checked by resume: */
    const char *dataset_checksum; /* e.g. "size=1234 fnv1a64=0123456789abcdef" of the dataset file */
    unsigned streams;       /* bit (1u << s) per nl_h5_stream s: /layers/{l}/<name> [N, d_model] of every
                             * recorded layer, same dtype, chunking and filter as ffn_act (chunk rows:
                             * chunk_rows when given, else automatic for d_model); 0 = none.
                             * Writer only (the reader leaves it 0); checked by resume. */
    /* Writer only (checked by resume): native mixture-of-experts layers among the recorded layers
     * (each listed layer must be recorded), with the model's shape; and MoEfied layers. */
    const int *moe_layers;  /* (n_moe) NULL/0 = none */
    int n_moe;
    int moe_E, moe_k, d_expert, d_shared; /* n_experts, experts per token, widths (d_shared 0 = none) */
    const int *moefied_layers; /* (n_moefied) recorded dense layers that get moe_experts [N, moe_K] */
    int n_moefied;
    int moe_K;
    /* Writer only: attention probabilities (`record --attn`), /attn/layer_{l}/doc_{d} for these
     * model layers (any layer, recorded or not); 0 = none. Not resumable (resume refuses them). */
    const int *attn_layers; /* (n_attn) distinct, in [0, L) */
    int n_attn;
    int attn_heads;         /* H (> 0 with n_attn) */
} nl_h5_meta;

/* Per-token datasets of width d_model a file can hold beside ffn_act (`record --hook`), named
 * after the hook points of hooks.h they are taken from. */
typedef enum { NL_H5_STREAM_RESID = 0, NL_H5_STREAM_ATTN_OUT, NL_H5_STREAM_FFN_IN, NL_H5_N_STREAMS } nl_h5_stream;
const char *nl_h5_stream_name(nl_h5_stream s); /* "resid", "attn_out", "ffn_in"; NULL outside the enum */

/* ---------------------------------------------------------------- writer */

typedef struct nl_h5_writer nl_h5_writer;

/* Creates path (replacing a file there) with the root attributes, complete = 0 and the empty
 * datasets, as the first commit. The file is written as "PATH.tmp-PID" in the same folder and
 * renamed to path once that commit is on disk, so path is at every moment either absent (or
 * the file it replaces) or a valid file holding every committed document; on an error the
 * temporary file is removed (a process killed inside this call leaves it behind).
 * Errors: NL_EINVAL (bad meta), NL_EIO ("cannot create 'PATH': …"), NL_ENOMEM.
 * On success *out is owned by the caller and must be passed to nl_h5_writer_close. */
nl_status nl_h5_writer_create(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, nl_h5_writer **out);

/* Reopens a cut-short file (killed, interrupted, or a failed run) to continue it: checks
 * that the file was written for the same model (model, arch, n_layers, d_model, d_ff,
 * ffn_kind, act_fn), dataset (dataset path, tokenizer and dataset_checksum), recorded
 * layers, dtype, pooling and presence of ffn_act and of each stream, else NL_EINVAL naming what differs
 * ("cannot resume 'a.h5': its dataset_checksum is '…' but this run's is '…'"); cuts every
 * dataset back to the documents all of them hold whole (the last commit), writes
 * complete = 0 and commits. The writer then continues as one from nl_h5_writer_create:
 * nl_h5_writer_docs tells how many documents to skip. Errors: NL_EIO, NL_EFORMAT, NL_EINVAL. */
nl_status nl_h5_writer_resume(nl_ctx *ctx, const char *path, const nl_h5_meta *meta, nl_h5_writer **out);

/* The calls below follow this order for each document:
 *   nl_h5_writer_begin_doc → any interleaving of nl_h5_writer_append_tokens / nl_h5_writer_append_acts
 *   (each layer's rows in token order) / nl_h5_writer_append_pooled → nl_h5_writer_end_doc.
 * Calls for data the file does not record (a layer outside meta.layers, ffn_act when
 * meta.no_acts, mean_abs without meta.pooled) are accepted and ignored, so a hook can
 * forward every layer. After an I/O error every call fails with NL_EIO; close anyway.
 * Layer indices outside [0, L) and calls out of order are NL_EINVAL. */

/* Opens a document. label: borrowed, copied ("" or NULL when none). prompt_len: prompt
 * tokens to pool over, or -1 for all tokens of the document. */
nl_status nl_h5_writer_begin_doc(nl_h5_writer *w, nl_ctx *ctx, const char *label, int prompt_len);

/* Appends ids (n) to /tokens for the open document. ids borrowed. */
nl_status nl_h5_writer_append_tokens(nl_h5_writer *w, nl_ctx *ctx, const int32_t *ids, int n);

/* Appends a: (T, F) row-major, borrowed, to /layers/{layer}/ffn_act (converted to f16
 * when meta.dtype is NL_H5_F16). */
nl_status nl_h5_writer_append_acts(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *a, int T);

/* Appends x: (T, d_model) row-major, borrowed, to /layers/{layer}/<stream name> (converted to
 * f16 when meta.dtype is NL_H5_F16). A stream not in meta.streams, or a layer not recorded, is
 * accepted and ignored; a stream outside the enum is NL_EINVAL. */
nl_status nl_h5_writer_append_stream(nl_h5_writer *w, nl_ctx *ctx, nl_h5_stream s, int layer, const float *x, int T);

/* Appends the routing of T tokens of native MoE layer `layer` (hooks.h nl_moe_routing: experts
 * (T, k) int32 stored as int16, weights (T, k), logits (T, E), expert_act (T, k, d_expert),
 * shared_act (T, d_shared) and shared_gate (T) when d_shared > 0; all borrowed). A layer that is not
 * a recorded MoE layer is accepted and ignored. MoEfied: nl_h5_writer_append_moe_experts appends
 * sel (T, moe_K) to moe_experts of a recorded MoEfied layer (others ignored). */
nl_status nl_h5_writer_append_routing(nl_h5_writer *w, nl_ctx *ctx, int layer, const int32_t *experts, const float *weights,
                                      const float *logits, const float *expert_act, const float *shared_act,
                                      const float *shared_gate, int T);
nl_status nl_h5_writer_append_moe_experts(nl_h5_writer *w, nl_ctx *ctx, int layer, const int32_t *sel, int T);
/* 1 when layer is a recorded native MoE layer / a recorded MoEfied layer of this writer. */
int nl_h5_writer_is_moe_layer(const nl_h5_writer *w, int layer);
int nl_h5_writer_is_moefied_layer(const nl_h5_writer *w, int layer);

/* Writes rows [row0, row0+T) of the open document's /attn/layer_{layer}/doc_{d} (d = the
 * document's index, shape (H, n, n), created at the document's first call for the layer):
 * p (H, T, P) row-major, borrowed, P = keys of those rows (columns P..n−1 stay 0), as the
 * NL_HOOK_ATTN_PROBS point gives them. A layer not in meta.attn_layers is accepted and ignored.
 * NL_EINVAL: rows beyond n, P > n, or n different from the document's first call. end_doc checks
 * that every attention layer got all n rows; close drops the datasets of an open document. */
nl_status nl_h5_writer_append_attn(nl_h5_writer *w, nl_ctx *ctx, int layer, int n, int row0, const float *p, int T, int P);
/* 1 when the writer records layer's attention probabilities. */
int nl_h5_writer_has_attn(const nl_h5_writer *w, int layer);

/* Reads /attn/layer_{layer}/doc_{doc} head `head` of an activation file: *out (n, n) malloc'd,
 * owned by the caller; *n its size. NL_EINVAL when the file has no such dataset ("'a.h5' has no
 * /attn/layer_3/doc_0"), head out of range; NL_EFORMAT for a dataset that is not f32 (H, n, n). */
nl_status nl_h5_read_attn(nl_ctx *ctx, const char *path, int layer, int doc, int head, float **out, int *n, int *heads);

/* Appends the open document's row mean_abs: (F), borrowed, to /pooled/{layer}/mean_abs.
 * At most one row per layer per document. */
nl_status nl_h5_writer_append_pooled(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *mean_abs);

/* Commits the open document: checks that every recorded layer has exactly as many
 * ffn_act rows (and rows of every stream of meta.streams) as there are tokens and (when pooled) one mean_abs row for it, resolves a
 * prompt_len of -1, and appends its offset, label and prompt_len. NL_EINVAL when the
 * lengths disagree or prompt_len exceeds the document's tokens (the document stays open). */
nl_status nl_h5_writer_end_doc(nl_h5_writer *w, nl_ctx *ctx);

/* Writes /layers/{layer}/w_out_norm: norms (F), borrowed. Any time before close; a
 * second call overwrites. */
nl_status nl_h5_writer_put_w_out_norm(nl_h5_writer *w, nl_ctx *ctx, int layer, const float *norms);

/* Writes /vocab: n strings (pieces[t] = the text of token id t, borrowed; NULL → ""), as a 1-D
 * variable-length UTF-8 string dataset, so h5py prints token text without a tokenizer
 * (`vocab = f["vocab"].asstr()[:]`, `"".join(vocab[t] for t in f["tokens"][a:b])`). The
 * strings must be valid UTF-8 (the caller's choice of text for each id: `record` stores
 * what the tokenizer decodes for the token mid-text, invalid bytes as U+FFFD). When raw is not
 * NULL, also /vocab_bytes: raw[t] (raw_len[t] bytes, borrowed, NUL bytes allowed) as a 1-D
 * variable-length uint8 dataset (h5py: `b"".join(f["vocab_bytes"][t].tobytes() for t in …)`
 * then `.decode()`, exact even where a character is split over tokens). Call it before the
 * first document: it commits, so the vocabulary is in the file from then on. A file that
 * already holds /vocab (a resumed one) keeps it (and its /vocab_bytes) unchanged.
 * Errors: NL_EINVAL (n < 0, pieces NULL with n > 0), NL_EIO. */
nl_status nl_h5_writer_put_vocab(nl_h5_writer *w, nl_ctx *ctx, const char *const *pieces, const char *const *raw,
                                 const size_t *raw_len, int n);

/* Writes every buffered row and asks HDF5 to flush the file (H5Fflush) to the OS. The file
 * is consistent only after nl_h5_writer_close; flush bounds the loss if the process is killed. */
nl_status nl_h5_writer_flush(nl_h5_writer *w, nl_ctx *ctx);

/* Ends the writer. Cuts every dataset back to the last ended document (an open document
 * is dropped), writes complete = (complete && nothing is missing) and closes the file;
 * always frees w, even when it returns an error. complete = 1 with a document still open
 * or a recorded layer without w_out_norm stores complete = 0 and returns NL_EINVAL.
 * Pass complete = 0 after an interrupt or an error: the file stays readable.
 * NULL is a no-op returning NL_OK. */
nl_status nl_h5_writer_close(nl_h5_writer *w, nl_ctx *ctx, int complete);

/* Documents ended so far, and tokens appended so far (including an open document); 0 for NULL. */
int64_t nl_h5_writer_docs(const nl_h5_writer *w);
int64_t nl_h5_writer_tokens(const nl_h5_writer *w);
/* 1 when layer is recorded by this writer. */
int nl_h5_writer_has_layer(const nl_h5_writer *w, int layer);
/* meta.streams of this writer (bit 1u << s per recorded nl_h5_stream s). */
unsigned nl_h5_writer_streams(const nl_h5_writer *w);
/* 1 when the writer stores ffn_act (meta.no_acts was 0), 0 when it ignores nl_h5_writer_append_acts. */
int nl_h5_writer_has_acts(const nl_h5_writer *w);

/* ---------------------------------------------------------------- reader */

typedef struct nl_h5_reader nl_h5_reader;

/* Everything small about a file, loaded at open; all owned by the reader. */
typedef struct {
    nl_h5_meta meta;            /* meta.layers (n_rec) sorted; meta.pooled / meta.no_acts
                                 * describe what the file holds; tuning fields are 0 */
    int version;                /* NL_H5_VERSION */
    int complete;               /* 0: an interrupted run (still consistent); 1: finished */
    int64_t n_tokens;           /* N */
    int64_t n_docs;             /* Dc */
    const int32_t *tokens;      /* (N) */
    const int64_t *doc_offsets; /* (Dc+1) doc_offsets[0] = 0, doc_offsets[Dc] = N */
    const char *const *doc_labels; /* (Dc) UTF-8, "" when none */
    const int32_t *prompt_len;  /* (Dc) */
} nl_h5_info;

/* Opens path read-only and validates it: format name and version, every attribute and
 * dataset of the schema with consistent shapes. Every size is checked against what the file
 * holds before anything is allocated from it: string attributes hold one string; n_layers
 * ≤ 65536 and every listed or present layer is below it; /tokens, /doc_offsets, labels,
 * prompt lengths, ffn_act [N, F], w_out_norm [F] and mean_abs [Dc, F] agree with each
 * other and with d_ff; doc_offsets run from 0 to N without decreasing; 0 ≤ prompt_len ≤
 * the document's length; and each dataset's declared bytes are stored in the file (not
 * unwritten chunks read as fill values, not external storage), and nothing libhdf5 allocates
 * while reading exceeds what the file stores (chunks, filters: deflate, shuffle, fletcher32
 * only). libhdf5 1.10.8 does not bounds-check what it decodes, so the reader checks first:
 * object headers without checksums (version 1, the library default of other tools) are
 * parsed and checked before libhdf5 opens the object, and variable-length strings are read
 * from the global heap by the reader itself, each heap object checked against its string
 * (h5store.c). Values of ffn_act are not scanned. Errors (NL_EIO for missing/unreadable
 * files, NL_EFORMAT otherwise,
 * NL_EUNSUPPORTED for another version):
 *   cannot open 'x.h5': No such file or directory
 *   'x.h5' is not an HDF5 file
 *   'x.h5' is not a neuronlab activation file (format attribute missing)
 *   'x.h5': activation file version 2 is not supported (this neuronlab reads version 1)
 *   'x.h5' is corrupt: /layers/3/ffn_act has shape (10, 64), expected (12, 64) (tokens, d_ff)
 *   'x.h5' is corrupt: attribute 'layers' lists layer 5 but n_layers is 2
 *   'x.h5' is corrupt: attribute 'model' is an array of 2 strings, expected one string
 *   'x.h5' is corrupt: /tokens declares 4398046511104 bytes but the file stores 65536 of them
 *   'x.h5' is corrupt: its root group has an attribute of 4194304 bytes in a message of 64
 *   'x.h5' is corrupt: /doc_labels is a string of 11 bytes whose global heap object holds 12 bytes
 * On success *out is owned by the caller: nl_h5_reader_close. */
nl_status nl_h5_reader_open(nl_ctx *ctx, const char *path, nl_h5_reader **out);
void nl_h5_reader_close(nl_h5_reader *r); /* NULL is a no-op */

/* Borrowed; valid until nl_h5_reader_close. */
const nl_h5_info *nl_h5_reader_info(const nl_h5_reader *r);
/* 1 when layer is recorded in the file. */
int nl_h5_reader_has_layer(const nl_h5_reader *r, int layer);

/* Reads rows [row0, row0+n) of /layers/{layer}/ffn_act into out: (n, F), caller-owned,
 * converting f16 to f32. NL_EINVAL for a layer not recorded, no ffn_act, or rows out of
 * range; NL_EIO when HDF5 fails. */
nl_status nl_h5_reader_read_acts(nl_h5_reader *r, nl_ctx *ctx, int layer, int64_t row0, int n, float *out);

/* Reads documents [doc0, doc0+n) of /pooled/{layer}/mean_abs into out: (n, F).
 * NL_EFORMAT when a value read is negative or not finite:
 *   'x.h5': layer 3 mean_abs of document 7 holds a non-finite value */
nl_status nl_h5_reader_read_pooled(nl_h5_reader *r, nl_ctx *ctx, int layer, int64_t doc0, int n, float *out);

/* Reads /layers/{layer}/w_out_norm into out: (F). NL_EFORMAT when the file lacks it or a
 * norm is negative or not finite ('x.h5': layer 3 w_out_norm holds a non-finite value). */
nl_status nl_h5_reader_read_w_out_norm(nl_h5_reader *r, nl_ctx *ctx, int layer, float *out);

#endif
