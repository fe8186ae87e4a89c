/* cmd_record.c — `neuronlab record MODEL DATA.jsonl -o acts.h5 [--force] [--layers LIST]
 * [--hook LIST] [--dtype f32|f16] [--pool] [--batch N] [--ctx N] [--stride N] [--db results.db]`:
 * streams every FFN neuron activation (and with --hook resid,attn_out,ffn_in those hook points,
 * or without ffn_act) into the HDF5 activation file (schema in h5store.h) while the forward
 * pass runs; when the model has a tokenizer the file gets /vocab (put_vocab below). Ctrl-C keeps every finished document and marks the file incomplete.
 * The output is never one of the inputs (dataset, --db file, tokenizer, model file or any
 * file of the model folder, compared by device + inode) and an existing output is replaced
 * only with --force; both refusals exit 1 before anything is truncated. The writer makes the
 * file as OUT.tmp-PID and renames it to OUT at its first commit (nl_h5_writer_create), so OUT
 * is never a half-made file, even when the process is killed while creating it.
 * The writer commits every NL_H5_COMMIT_SECONDS (NEURONLAB_COMMIT_SECONDS overrides; < 0 =
 * after every document; NEURONLAB_COMMIT_LOG=1 prints a line per commit), so a killed run
 * leaves a readable file, and `--resume` continues it (same model, dataset checksum,
 * layers, dtype, pooling) to the content of an uninterrupted run; with --db it adds a run.
 * A full disk or `ulimit -f` (SIGXFSZ is ignored in main.c) ends with exit 1 and the run
 * failed. Checked by tests/record.sh, tests/record_kill.sh and tests/h5_hooks.sh (--hook, /vocab).
 * --db registers a run (kind "record", source = the .h5 file, params) in the results database
 * and ends it with nl_results_finish_run (results.h); without --db nothing changes.
 * Checked by tests/record.sh and tests/perturb_cli.sh (--db).
 * --stats [--top-k K] writes the streaming summary of include/neuronlab/summary.h instead of
 * the dump: rewritten whole at document boundaries (complete = 0) and at the end, so Ctrl-C
 * keeps the last commit and --resume continues it. Checked by tests/summary_cli.sh.
 * --moe DIR --k K --fill zero|mean --router sim|oracle|mlp records the MoEfied model: ffn_act of an
 * MoE layer holds its effective activations (the computed value for the shared and selected
 * experts' neurons, the representative value 0 or μ for the others; moe_ffn.c), and the --db
 * run's params carry "moe". Checked by tests/moe_cli.sh.
 * --imatrix OUT writes llama.cpp's importance matrix (imatrix.h; GGUF, or the legacy format when OUT
 * ends in .dat) from the same forward pass as the dump (observers beside the recorder, every token
 * once); without -o only the matrix is computed. Not with --stats, --resume or --moe.
 * Checked by tests/imatrix.sh.
 * --attn LIST stores each listed layer's attention probabilities per document,
 * /attn/layer_{l}/doc_{d} f32 (heads, n, n) (h5store.h; documents must fit one --ctx window; not
 * with --stats or --resume). Checked by tests/lens_cli.sh. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/record_mpi.h"
#include "neuronlab/imatrix.h"
#include "neuronlab/mpi.h"
#include "neuronlab/results.h"
#include "neuronlab/tokenizer.h"
#include "neuronlab/recorder.h"
#include "neuronlab/rng.h"
#include "neuronlab/summary.h"

static int run(nl_ctx *ctx, int argc, char **argv);
const nl_command nl_cmd_record = {
    "record", NL_CLI_RUN_USAGE " -o acts.h5 [--imatrix OUT.gguf|OUT.dat] [--force | --resume] [--layers LIST] [--hook LIST] [--dtype f32|f16] [--attn LIST] [--pool] [--stats [--top-k K]] [--db results.db] [--moe DIR --k K --fill zero|mean --router sim|oracle|mlp]",
    "stream every FFN neuron's activation into an HDF5 file (LIST like 0,2,5-7; --pool adds per-document mean |a|; --db "
    "registers the run in a results database; an existing output is refused without --force, an input never replaced; --resume continues a cut-short file)", run};

/* 1 when a and b name the same file (device and inode). */
static int same_file(const struct stat *a, const char *b) {
    struct stat sb;
    return b && stat(b, &sb) == 0 && a->st_dev == sb.st_dev && a->st_ino == sb.st_ino;
}

/* R7: refuses an output that is one of the command's inputs — the dataset, the --db file,
 * the tokenizer, the model file or any file of the model folder — compared by device and
 * inode (so symlinks, hard links and other spellings of the path are caught), and an
 * existing output without --force (or --resume). Runs after every input is open and before
 * anything truncates the output. */
static nl_status check_output(nl_ctx *ctx, const char *outp, const char *data, const char *db, const char *tok,
                              const char *model, int force) {
    struct stat so, sm;
    if (stat(outp, &so) != 0) return NL_OK; /* a new file cannot be an input (all inputs exist by now) */
    const char *what[3] = {"the dataset", "the --db database", "the tokenizer"}, *paths[3] = {data, db, tok};
    for (int i = 0; i < 3; i++)
        if (same_file(&so, paths[i]))
            return nl_errorf(ctx, NL_EINVAL, "refusing to write '%s': it is %s '%s' (an input of record)", outp, what[i], paths[i]);
    if (stat(model, &sm) == 0 && S_ISDIR(sm.st_mode)) {
        DIR *d = opendir(model);
        struct dirent *e;
        char p[4096];
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", model, e->d_name);
            if (same_file(&so, p)) {
                closedir(d);
                return nl_errorf(ctx, NL_EINVAL, "refusing to write '%s': it is '%s' of the model folder (an input of record)", outp, p);
            }
        }
        if (d) closedir(d);
    } else if (same_file(&so, model)) {
        return nl_errorf(ctx, NL_EINVAL, "refusing to write '%s': it is the model file '%s' (an input of record)", outp, model);
    }
    if (!force) return nl_errorf(ctx, NL_EINVAL, "'%s' exists (use --force to replace it)", outp);
    return NL_OK;
}

/* "size=N fnv1a64=HEX" of the dataset file's bytes, stored in the file and checked by --resume. */
static nl_status data_checksum(nl_ctx *ctx, const char *path, char *out, size_t n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    static unsigned char buf[1 << 16];
    uint64_t h = NL_FNV_INIT;
    long long size = 0;
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, fp)) > 0) {
        h = nl_fnv1a(h, buf, k);
        size += (long long)k;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) return nl_errorf(ctx, NL_EIO, "cannot read '%s': read error", path);
    snprintf(out, n, "size=%lld fnv1a64=%016llx", size, (unsigned long long)h);
    return NL_OK;
}

/* --hook LIST: "ffn_act,resid,attn_out,ffn_in" (any non-empty subset, any order) → *acts (ffn_act
 * listed) and *streams (bit 1u << s per nl_h5_stream). Returns 0, or -1 on an unknown name. */
static int parse_hooks(const char *s, int *acts, unsigned *streams) {
    *acts = 0, *streams = 0;
    if (!*s) return -1;
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = n == 7 && !strncmp(s, "ffn_act", 7);
        if (found) *acts = 1;
        for (int k = 0; !found && k < NL_H5_N_STREAMS; k++) {
            const char *name = nl_h5_stream_name((nl_h5_stream)k);
            if (n == strlen(name) && !strncmp(s, name, n)) *streams |= 1u << k, found = 1;
        }
        if (!found) return -1;
        s += n;
        if (*s == ',' && *++s == 0) return -1;
    }
    return 0;
}

/* /vocab of the file: for each id, the text the tokenizer's decoder gives the token in the middle
 * of a text (nl_tokenizer_piece after a regular token: SentencePiece's "▁" is a space, kept at
 * the start too; a byte-fallback piece <0xXX> is its byte); special and control tokens, which
 * the decoder drops, their own text ("<s>"). Bytes that are not UTF-8 on their own (a byte-level
 * token holding part of a character) become U+FFFD, as the decoder does (nl_utf8_repair), and a
 * NUL byte ends the string (HDF5 strings are NUL-terminated); /vocab_bytes keeps the exact bytes. */
static nl_status put_vocab(nl_ctx *ctx, nl_h5_writer *w, const nl_tokenizer *tok) {
    int V = nl_tokenizer_vocab_size(tok);
    size_t nv = (size_t)(V > 0 ? V : 1);
    char **pieces = calloc(nv, sizeof *pieces), **raw = calloc(nv, sizeof *raw);
    size_t *raw_len = calloc(nv, sizeof *raw_len);
    nl_status st = pieces && raw && raw_len ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int id = 0; st == NL_OK && id < V; id++) {
        size_t n = 0;
        const char *p = NULL;
        if (nl_tokenizer_is_special(tok, id)) {
            p = nl_tokenizer_token(tok, id, &n);
            if (!p) p = "", n = 0;
        } else {
            char small[64];
            n = nl_tokenizer_piece(tok, id, id, small, sizeof small);
            raw[id] = malloc(n + 1);
            if (raw[id] && n > sizeof small) nl_tokenizer_piece(tok, id, id, raw[id], n);
            else if (raw[id]) memcpy(raw[id], small, n);
        }
        if (p && (raw[id] = malloc(n + 1))) memcpy(raw[id], p, n);
        size_t rn;
        raw_len[id] = n;
        pieces[id] = raw[id] ? nl_utf8_repair(raw[id], n, &rn) : NULL;
        if (!pieces[id]) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    if (st == NL_OK)
        st = nl_h5_writer_put_vocab(w, ctx, (const char *const *)pieces, (const char *const *)raw, raw_len, V);
    for (int id = 0; pieces && raw && id < V; id++) free(pieces[id]), free(raw[id]);
    free(pieces), free(raw), free(raw_len);
    return st;
}

/* NEURONLAB_COMMIT_LOG=1: one stderr line per commit (what a crash cannot take away). */
static void log_commit(void *user, int64_t docs) {
    fprintf(stderr, "neuronlab: committed %lld documents to '%s'\n", (long long)docs, (const char *)user);
}

/* Parses "0,2,5-7" into a sorted distinct set of layers < L; returns count, -1 on error. */
static int parse_layers(const char *s, int L, int *out) {
    char *flags = calloc((size_t)L, 1);
    const char *p = s;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p) { free(flags); return -1; }
        p = end;
        if (*p == '-') {
            b = strtol(++p, &end, 10);
            if (end == p) { free(flags); return -1; }
            p = end;
        }
        if (a < 0 || b >= L || a > b) { free(flags); return -1; }
        for (long i = a; i <= b; i++) flags[i] = 1;
        if (*p == ',') p++;
        else if (*p) { free(flags); return -1; }
    }
    int n = 0;
    for (int i = 0; i < L; i++)
        if (flags[i]) out[n++] = i;
    free(flags);
    return n;
}

static nl_status record_stats(nl_ctx *ctx, nl_cli_run *r, const char *outp, const int *layers, int n_layers, int top_k,
                              int resume, const char *checksum, double commit_s, int log);

/* ---- --imatrix ---- */

static void imatrix_rows(void *user, int skip) { nl_imatrix_set_skip(user, skip); }

/* record --imatrix OUT without -o: the forward pass over the dataset for the matrix alone. */
static int record_imatrix_only(nl_ctx *ctx, nl_cli_run *r, const char *out, int force) {
    nl_imatrix *im = NULL;
    nl_status st = nl_cli_run_open(ctx, r);
    if (st == NL_OK)
        st = check_output(ctx, out, r->data, NULL, r->tok ? nl_tokenizer_path(r->tok) : r->tokenizer, r->model, force);
    if (st == NL_OK) st = nl_imatrix_create_model(ctx, r->m, &im);
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "imatrix", r->ds->n_tokens, "tok", ctx->progress);
        st = nl_imatrix_run(ctx, r->f, r->ds, im, (int)r->stride, &prog);
        nl_progress_end(&prog);
    }
    if (st == NL_OK) st = nl_imatrix_write(ctx, im, out, r->data, nl_forward_max_P(r->f));
    if (st == NL_OK) fprintf(stderr, "wrote '%s': importance matrix of %d weight matrices\n", out, nl_imatrix_n_entries(im));
    nl_imatrix_destroy(im);
    nl_cli_run_close(r);
    return nl_cli_finish(ctx, st, "interrupted: '%s' was not written", out);
}

static int run(nl_ctx *ctx, int argc, char **argv) {
    nl_cli_run r = {0};
    int stats = 0;
    long top_k = 20;
    const char *outp = NULL, *layers_s = NULL, *v, *imat_out = NULL, *attn_s = NULL;
    nl_cli_common co = {0};
    int pool = 0, force = 0, resume = 0, hook_acts = 1;
    unsigned hook_streams = 0;
    nl_h5_dtype dtype = NL_H5_F32;
    nl_cli_moe mo = {0};
    char moe_params[4096];
    for (int i = 1; i < argc; i++) {
        int k = nl_cli_run_arg(&nl_cmd_record, &r, argc, argv, &i);
        if (k == 1) continue;
        if (k) return k;
        if ((k = nl_cli_moe_arg(&nl_cmd_record, &mo, argc, argv, &i)) == 1) continue;
        if (k) return k;
        if (!strcmp(argv[i], "--pool")) pool = 1;
        else if (!strcmp(argv[i], "--force")) force = 1;
        else if (!strcmp(argv[i], "--resume")) resume = 1;
        else if (!strcmp(argv[i], "--stats")) stats = 1;
        else if ((k = nl_cli_opt(argc, argv, &i, "--imatrix", &v))) {
            if (k < 0 || !*v) return nl_cli_usage(&nl_cmd_record, "--imatrix needs the file to write (OUT.gguf, or OUT.dat for the legacy format)");
            imat_out = v;
        }
        else if ((k = nl_cli_opt(argc, argv, &i, "--top-k", &v))) {
            if (k < 0 || !nl_cli_int(v, 1, NL_SUMMARY_MAX_K, &top_k))
                return nl_cli_usage(&nl_cmd_record, "--top-k needs a count in 1..%d", NL_SUMMARY_MAX_K);
            stats |= 2; /* given: needs --stats */
        }
        else if ((k = nl_cli_opt(argc, argv, &i, "-o", &v)) || (k = nl_cli_opt(argc, argv, &i, "--output", &v))) {
            if (k < 0) return nl_cli_usage(&nl_cmd_record, "-o needs a path");
            outp = v;
        } else if ((k = nl_cli_common_arg(&nl_cmd_record, ctx, NL_CLI_DB, &co, argc, argv, &i))) {
            if (k != 1) return k;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--layers", &v))) {
            if (k < 0) return nl_cli_usage(&nl_cmd_record, "--layers needs a list like 0,2,5-7");
            layers_s = v;
            /* the syntax (and ranges a ≤ b) is checked now: a usage error; layers beyond the
             * model's count are checked once it is open */
            enum { MAXL = 1 << 16 };
            int *tmp = malloc(MAXL * sizeof *tmp);
            int ok = tmp && parse_layers(v, MAXL, tmp) > 0;
            free(tmp);
            if (!ok) return nl_cli_usage(&nl_cmd_record, "--layers '%s': expected a list like 0,2,5-7 (ranges a-b with a <= b)", v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--attn", &v))) {
            enum { MAXA = 1 << 16 };
            int *tmp = k > 0 ? malloc(MAXA * sizeof *tmp) : NULL;
            int ok = tmp && parse_layers(v, MAXA, tmp) > 0;
            free(tmp);
            if (!ok) return nl_cli_usage(&nl_cmd_record, "--attn needs a list of layers like 0,2,5-7");
            attn_s = v;
        } else if ((k = nl_cli_opt(argc, argv, &i, "--hook", &v))) {
            if (k < 0 || parse_hooks(v, &hook_acts, &hook_streams) != 0)
                return nl_cli_usage(&nl_cmd_record, "--hook is a comma list of ffn_act, resid, attn_out, ffn_in (got '%s')",
                                    k < 0 ? "" : v);
        } else if ((k = nl_cli_opt(argc, argv, &i, "--dtype", &v))) {
            if (k < 0 || (strcmp(v, "f32") && strcmp(v, "f16"))) return nl_cli_usage(&nl_cmd_record, "--dtype is f32 or f16");
            dtype = strcmp(v, "f16") ? NL_H5_F32 : NL_H5_F16;
        } else return nl_cli_usage(&nl_cmd_record, "unknown option '%s'", argv[i]);
    }
    if (nl_cli_run_check(&nl_cmd_record, &r) || nl_cli_moe_check(&nl_cmd_record, &mo)) return 2;
    if (!outp && !imat_out) return nl_cli_usage(&nl_cmd_record, "missing -o OUTPUT.h5");
    if (imat_out && (stats || resume || mo.dir))
        return nl_cli_usage(&nl_cmd_record, "--imatrix is computed with the activation dump or alone, not with --%s",
                            stats ? "stats" : resume ? "resume" : "moe");
    if (imat_out && outp && !strcmp(imat_out, outp)) return nl_cli_usage(&nl_cmd_record, "--imatrix and -o name the same file");
    if (!outp) return record_imatrix_only(ctx, &r, imat_out, force);
    if (force && resume) return nl_cli_usage(&nl_cmd_record, "--force and --resume exclude each other");
    if (resume && mo.dir)
        return nl_cli_usage(&nl_cmd_record, "--resume with --moe: the activation file does not record the MoE setting to check it against");
    if (stats == 2) return nl_cli_usage(&nl_cmd_record, "--top-k is for --stats");
    if (attn_s && (stats || resume))
        return nl_cli_usage(&nl_cmd_record, "--attn is for the activation dump of a new file, not with --%s", stats ? "stats" : "resume");
    if (stats && (pool || dtype != NL_H5_F32))
        return nl_cli_usage(&nl_cmd_record, "--%s is for the activation dump: a --stats summary always holds the pooled values in f32",
                            pool ? "pool" : "dtype");
    if (stats && (hook_streams || !hook_acts))
        return nl_cli_usage(&nl_cmd_record, "--hook is for the activation dump: a --stats summary holds statistics of ffn_act only");
    double commit_s = 0;
    const char *cs = getenv("NEURONLAB_COMMIT_SECONDS");
    if (cs && cs[0] && !nl_cli_double(cs, &commit_s))
        return nl_cli_usage(&nl_cmd_record, "NEURONLAB_COMMIT_SECONDS='%s' is not a number", cs);
    const char *clog = getenv("NEURONLAB_COMMIT_LOG");
    const char *dbpath = nl_mpi_is_root() ? co.db : NULL; /* MPI (record_mpi.h): rank 0 writes the database */
    const char *paths[2] = {r.model, r.data};
    nl_h5_writer *w = NULL;
    int *layers = NULL, n_layers = 0;
    nl_results *db = NULL; /* --db: the run is registered once the inputs are valid */
    int64_t run_id = 0;
    nl_status st = dbpath ? nl_results_open(ctx, dbpath, 0, &db) : NL_OK;
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK) st = nl_cli_run_open(ctx, &r);
    if (st == NL_OK) st = nl_cli_moe_open(ctx, &mo, r.m, r.f, 0);
    nl_dataset *ds = r.ds;
    const nl_config *c = r.m ? nl_model_config(r.m) : NULL;
    if (st == NL_OK && layers_s) {
        layers = malloc((size_t)c->n_layers * sizeof(int));
        n_layers = layers ? parse_layers(layers_s, c->n_layers, layers) : -1;
        if (n_layers <= 0)
            st = nl_errorf(ctx, NL_EINVAL, "--layers '%s': expected a list like 0,2,5-7 of layers in 0..%d", layers_s, c->n_layers - 1);
    }
    /* mixture-of-experts layers have no single (T, F) activation (hooks.h): they record their
     * routing instead (DESIGN §10: router_logits, experts, expert_weights, expert_act, shared_*);
     * MoEfied layers (--moe) record moe_experts beside ffn_act */
    int *attn_l = NULL, n_attn = 0;
    if (st == NL_OK && attn_s) {
        attn_l = malloc((size_t)c->n_layers * sizeof(int));
        n_attn = attn_l ? parse_layers(attn_s, c->n_layers, attn_l) : -1;
        if (n_attn <= 0)
            st = nl_errorf(ctx, NL_EINVAL, "--attn '%s': '%s' has no such layer (its layers are 0..%d)", attn_s, r.model, c->n_layers - 1);
        for (int d = 0; st == NL_OK && d < r.ds->n_docs; d++) /* before the output is made (the recorder checks it too) */
            if (r.ds->docs[d].n_tokens > nl_forward_max_P(r.f))
                st = nl_errorf(ctx, NL_EINVAL, "'%s': document %d (line %d) has %d tokens, more than the context %d: --attn stores whole "
                               "documents of one window (raise --ctx or shorten the document)", r.data, d + 1, r.ds->docs[d].line,
                               r.ds->docs[d].n_tokens, nl_forward_max_P(r.f));
    }
    int *moe_l = NULL, n_moe_l = 0, *moefied_l = NULL, n_moefied_l = 0;
    if (st == NL_OK && c) {
        moe_l = malloc((size_t)c->n_layers * sizeof(int));
        moefied_l = malloc((size_t)c->n_layers * sizeof(int));
        if (!moe_l || !moefied_l) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    for (int j = 0; st == NL_OK && j < (layers_s ? n_layers : c->n_layers); j++) {
        const int l = layers_s ? layers[j] : j;
        if (nl_config_is_moe_layer(c, l)) moe_l[n_moe_l++] = l;
        else if (mo.dir && mo.moe)
            for (int i = 0; i < nl_moe_n_layers(mo.moe); i++)
                if (nl_moe_layer_index(mo.moe, i) == l) moefied_l[n_moefied_l++] = l;
    }
    if (st == NL_OK && stats && n_moe_l)
        st = nl_errorf(ctx, NL_EUNSUPPORTED,
                       "layer %d of '%s' is a mixture-of-experts layer (%d experts): --stats summarises ffn_act of dense "
                       "layers only (record the routing without --stats, or pick dense layers with --layers)",
                       moe_l[0], r.model, c->n_experts);
    if (st == NL_OK) st = nl_cli_record_mpi_check(ctx, resume, stats, imat_out != NULL, attn_s != NULL);
    if (st == NL_OK && nl_mpi_is_root())
        st = check_output(ctx, outp, r.data, dbpath, r.tok ? nl_tokenizer_path(r.tok) : r.tokenizer, r.model, force || resume);
    nl_imatrix *imat = NULL;
    if (st == NL_OK && imat_out)
        st = check_output(ctx, imat_out, r.data, dbpath, r.tok ? nl_tokenizer_path(r.tok) : r.tokenizer, r.model, force);
    if (st == NL_OK && imat_out) st = nl_imatrix_create_model(ctx, r.m, &imat);
    if (st == NL_OK && imat) st = nl_imatrix_attach(ctx, imat, nl_forward_hooks(r.f));
    struct stat so;
    if (st == NL_OK && resume && stat(outp, &so) != 0)
        st = nl_errorf(ctx, NL_EIO, "cannot resume '%s': %s", outp, strerror(errno));
    char checksum[96];
    if (st == NL_OK) st = data_checksum(ctx, r.data, checksum, sizeof checksum);
    if (st == NL_OK && db) {
        char params[4096];
        int o = snprintf(params, sizeof params, "{\"layers\":");
        if (!layers_s) o += snprintf(params + o, sizeof params - (size_t)o, "\"all\"");
        for (int l = 0; l < n_layers && o < (int)sizeof params - 64; l++)
            o += snprintf(params + o, sizeof params - (size_t)o, "%s%d", l ? "," : "[", layers[l]);
        if (layers_s) o += snprintf(params + o, sizeof params - (size_t)o, "]");
        /* the stored datasets in file order (ffn_act, resid, attn_out, ffn_in), each once */
        o += snprintf(params + o, sizeof params - (size_t)o, ",\"hooks\":[%s", hook_acts ? "\"ffn_act\"" : "");
        for (int k = 0, first = !hook_acts; k < NL_H5_N_STREAMS; k++)
            if ((hook_streams >> k) & 1u)
                o += snprintf(params + o, sizeof params - (size_t)o, "%s\"%s\"", first ? "" : ",", nl_h5_stream_name((nl_h5_stream)k)),
                    first = 0;
        o += snprintf(params + o, sizeof params - (size_t)o, "]");
        snprintf(params + o, sizeof params - (size_t)o, ",\"dtype\":\"%s\",\"pool\":%s,\"ctx\":%ld,\"stride\":%ld,\"batch\":%ld}",
                 dtype == NL_H5_F16 ? "f16" : "f32", pool ? "true" : "false", r.ctx, r.stride ? r.stride : r.ctx / 2, r.batch);
        for (int l = 0; l < n_attn && strlen(params) < sizeof params - 64; l++)
            snprintf(params + strlen(params) - 1, sizeof params - strlen(params) + 1, "%s%d%s}", l ? "," : ",\"attn\":[", attn_l[l],
                     l == n_attn - 1 ? "]" : "");
        if (stats) snprintf(params + strlen(params) - 1, sizeof params - strlen(params) + 1, ",\"stats\":true,\"top_k\":%ld}", top_k);
        const char *mj = nl_cli_moe_params(&mo, moe_params, sizeof moe_params);
        if (mj) snprintf(params + strlen(params) - 1, sizeof params - strlen(params) + 1, ",\"moe\":%s}", mj);
        nl_run_info info = {.kind = "record", .model = paths[0], .dataset = paths[1], .source = outp, .params = params,
                            .compute = nl_compute_name(nl_forward_compute(r.f))};
        st = nl_results_begin_run(ctx, db, &info, &run_id);
    }
    st = nl_mpi_agree(ctx, st);
    if (st == NL_OK && stats)
        st = record_stats(ctx, &r, outp, layers, n_layers, (int)top_k, resume, checksum, commit_s, clog && clog[0] && strcmp(clog, "0"));
    else if (st == NL_OK) {
        nl_h5_meta meta = {0};
        meta.model = paths[0];
        meta.arch = nl_arch_name(c->arch);
        meta.n_layers = c->n_layers;
        meta.d_model = c->d_model;
        meta.d_ff = c->d_ff;
        meta.ffn_kind = c->ffn_gated ? "gated" : "plain";
        meta.act_fn = nl_act_name(c->act);
        meta.dtype = dtype;
        meta.dataset = paths[1];
        meta.tokenizer = r.tok && r.ds->n_text ? nl_tokenizer_path(r.tok) : NULL;
        meta.compute = nl_compute_name(nl_forward_compute(r.f));
        meta.layers = layers;
        meta.n_rec = n_layers;
        meta.pooled = pool;
        meta.no_acts = !hook_acts;
        meta.streams = hook_streams;
        meta.moe_layers = moe_l, meta.n_moe = n_moe_l;
        if (n_moe_l)
            meta.moe_E = c->n_experts, meta.moe_k = c->n_experts_per_tok, meta.d_expert = c->d_expert, meta.d_shared = c->d_shared;
        meta.moefied_layers = moefied_l, meta.n_moefied = n_moefied_l, meta.moe_K = mo.K;
        meta.dataset_checksum = checksum;
        meta.attn_layers = attn_l, meta.n_attn = n_attn, meta.attn_heads = c->n_heads;
        meta.commit_seconds = commit_s;
        if (clog && clog[0] && strcmp(clog, "0")) meta.on_commit = log_commit, meta.on_commit_user = (void *)outp;
        st = resume ? nl_h5_writer_resume(ctx, outp, &meta, &w) : nl_cli_record_create(ctx, outp, &meta, ds, &w);
        if (st == NL_OK && r.tok && nl_mpi_is_root()) st = put_vocab(ctx, w, r.tok);
        st = nl_mpi_agree(ctx, st); /* over MPI ranks the writer closes collectively */
        if (st != NL_OK && w) {
            nl_h5_writer_close(w, NULL, 0); /* the file keeps what it had; the vocabulary error is reported */
            w = NULL;
        }
    }
    if (st == NL_OK && !stats) {
        nl_progress prog;
        nl_progress_init(&prog, "record", ds->n_tokens, "tok", ctx->progress);
        long long skipped = (long long)nl_h5_writer_docs(w);
        if (resume) fprintf(stderr, "neuronlab: resuming '%s' after its %lld committed documents\n", outp, skipped);
        if (skipped > 0) nl_progress_add(&prog, nl_h5_writer_tokens(w));
        st = nl_cli_record_dump(ctx, r.f, ds, &w, pool, (int)r.stride, &prog, imat ? imatrix_rows : NULL, imat);
        nl_progress_end(&prog);
        nl_ctx cctx; /* keep the first error's message */
        nl_ctx_init(&cctx);
        long long kept = (long long)nl_h5_writer_docs(w);
        nl_status cst = nl_h5_writer_close(w, &cctx, st == NL_OK);
        if (st == NL_OK && cst != NL_OK) { st = cst; memcpy(ctx->msg, cctx.msg, sizeof ctx->msg); }
        if (st == NL_EINTR && nl_mpi_size() > 1) /* record_mpi.h: the ranks' file is written whole or not at all */
            fprintf(stderr, "neuronlab: interrupted: nothing written to '%s' (a record over MPI ranks keeps no partial file)\n", outp);
        else if (st == NL_EINTR) {
            fprintf(stderr, "neuronlab: interrupted: '%s' keeps the %lld finished documents (marked incomplete)\n", outp, kept);
        }
    }
    if (imat) {
        nl_imatrix_detach(imat, nl_forward_hooks(r.f));
        if (st == NL_OK) st = nl_imatrix_write(ctx, imat, imat_out, r.data, nl_forward_max_P(r.f));
        if (st == NL_OK) fprintf(stderr, "wrote '%s': importance matrix of %d weight matrices\n", imat_out, nl_imatrix_n_entries(imat));
        nl_imatrix_destroy(imat);
    }
    if (db && run_id > 0) st = nl_results_finish_run(ctx, db, run_id, st, NULL);
    nl_results_close(db);
    int rc = nl_cli_finish(ctx, st, NULL); /* the interruption was reported above */
    if (st == NL_OK) fprintf(stderr, "wrote '%s': %d documents, %lld tokens\n", outp, ds->n_docs, (long long)ds->n_tokens);
    free(layers);
    free(moe_l);
    free(moefied_l);
    free(attn_l);
    nl_cli_moe_close(&mo, r.f);
    nl_cli_run_close(&r);
    return rc;
}

/* ---- record --stats: the streaming summary (include/neuronlab/summary.h) ---- */

typedef struct {
    const char *path;
    int log;
} stats_commit;

static nl_status stats_commit_fn(void *user, nl_ctx *ctx, const nl_summary *s) {
    const stats_commit *c = user;
    nl_status st = nl_summary_write(ctx, s, c->path); /* s->complete is 0 until the end */
    if (st == NL_OK && c->log) log_commit((void *)c->path, s->n_docs);
    return st;
}

/* Checks that the summary at outp was written for this model, dataset and layers (--resume). */
static nl_status stats_check_resume(nl_ctx *ctx, const nl_summary *s, const char *outp, const char *model, const nl_config *c,
                                    const char *data, const char *tok, const char *checksum, const char *compute,
                                    const int *layers, int n_layers, int top_k) {
    const char *what = NULL, *was = "", *now = "";
    if (strcmp(s->model, model)) what = "model", was = s->model, now = model;
    else if (s->n_layers != c->n_layers || s->d_model != c->d_model || s->d_ff != c->d_ff) what = "model shape";
    else if (strcmp(s->dataset, data)) what = "dataset", was = s->dataset, now = data;
    else if (strcmp(s->tokenizer, tok ? tok : "")) what = "tokenizer", was = s->tokenizer, now = tok ? tok : "";
    else if (strcmp(s->dataset_checksum, checksum)) what = "dataset_checksum", was = s->dataset_checksum, now = checksum;
    else if (strcmp(s->compute, compute)) what = "compute", was = s->compute, now = compute;
    else if (s->top_k != top_k) what = "top-K";
    else if (n_layers > 0 ? (s->n_rec != n_layers || memcmp(s->layers, layers, (size_t)n_layers * sizeof(int))) : s->n_rec != c->n_layers)
        what = "recorded layers";
    if (!what) return NL_OK;
    return nl_errorf(ctx, NL_EINVAL, "cannot resume '%s': its %s is '%s' but this run's is '%s'", outp, what, was, now);
}

static nl_status record_stats(nl_ctx *ctx, nl_cli_run *r, const char *outp, const int *layers, int n_layers, int top_k,
                              int resume, const char *checksum, double commit_s, int log) {
    const nl_config *c = nl_model_config(r->m);
    const char *tok = r->tok && r->ds->n_text ? nl_tokenizer_path(r->tok) : NULL;
    nl_summary *s = NULL;
    nl_status st;
    if (resume) {
        st = nl_summary_read(ctx, outp, &s);
        if (st == NL_OK)
            st = stats_check_resume(ctx, s, outp, r->model, c, r->data, tok, checksum, nl_compute_name(nl_forward_compute(r->f)),
                                    layers, n_layers, top_k);
    } else {
        nl_summary_desc d = {r->model, nl_arch_name(c->arch), c->ffn_gated ? "gated" : "plain", nl_act_name(c->act), r->data,
                             tok, checksum, c->n_layers, c->d_model, c->d_ff, layers, n_layers, top_k, NULL, 0, NULL, 0,
                             nl_compute_name(nl_forward_compute(r->f))};
        st = nl_summary_create_for(ctx, &d, r->ds, &s);
    }
    if (st == NL_OK) {
        nl_progress prog;
        nl_progress_init(&prog, "record", r->ds->n_tokens, "tok", ctx->progress);
        if (resume) {
            fprintf(stderr, "neuronlab: resuming '%s' after its %lld committed documents\n", outp, (long long)s->n_docs);
            nl_progress_add(&prog, s->n_tokens);
        }
        stats_commit sc = {outp, log};
        nl_summary_commit cm = {stats_commit_fn, &sc, commit_s};
        st = nl_cli_record_summary(ctx, r->f, r->ds, s, (int)r->stride, &prog, &cm, outp);
        nl_progress_end(&prog);
        if (st == NL_OK && nl_mpi_is_root()) {
            s->complete = 1;
            st = nl_summary_write(ctx, s, outp);
        } else if (st == NL_EINTR) {
            nl_ctx c2;
            nl_ctx_init(&c2);
            nl_h5_kind k = nl_h5_file_kind(outp);
            nl_summary *old = NULL;
            if (k == NL_H5_KIND_SUMMARY && nl_summary_read(&c2, outp, &old) == NL_OK && !old->complete)
                fprintf(stderr, "neuronlab: interrupted: '%s' keeps the %lld documents committed before (marked incomplete; --resume continues it)\n",
                        outp, (long long)old->n_docs);
            else fprintf(stderr, "neuronlab: interrupted before the first commit: no summary written to '%s'\n", outp);
            nl_summary_destroy(old);
        }
    }
    nl_summary_destroy(s);
    return st;
}
