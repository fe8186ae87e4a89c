/* summary_h5.c — the summary's data and its HDF5 file (schema and definitions in
 * summary_h5.h). The file is written whole into a temporary file beside the target, synced
 * and renamed over it, so no reader ever sees a half-written summary; the reader checks
 * every shape against the root attributes before it allocates from them.
 * Checked by tests/test_summary.c and tests/summary_cli.sh (h5py).
 */
#include "neuronlab/summary_h5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ATTR_STR (1 << 20)

/* ---------------------------------------------------------------- the data */

static char *dupz(const char *s) { return strdup(s ? s : ""); }
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

static void layer_free(nl_summary_layer *y) {
    free(y->w_out_norm), free(y->mean), free(y->m2), free(y->sum_abs), free(y->min), free(y->max), free(y->max_r);
    free(y->freq), free(y->r_hist), free(y->r_below), free(y->r_sum), free(y->abs_hist);
    free(y->top_value), free(y->top_doc), free(y->top_pos), free(y->top_n), free(y->pooled);
}

void nl_summary_destroy(nl_summary *s) {
    if (!s) return;
    free(s->model), free(s->arch), free(s->ffn_kind), free(s->act_fn), free(s->dataset), free(s->tokenizer);
    free(s->dataset_checksum), free(s->created_by), free(s->compute), free(s->layers);
    for (int64_t d = 0; s->doc_labels && d < s->n_docs; d++) free(s->doc_labels[d]);
    free(s->doc_offsets), free(s->doc_labels), free(s->prompt_len), free(s->doc_group);
    for (int g = 0; s->group_labels && g < s->n_groups; g++) free(s->group_labels[g]);
    free(s->group_labels), free(s->group_tokens);
    for (int j = 0; s->lay && j < s->n_rec; j++) layer_free(&s->lay[j]);
    free(s->lay);
    free(s);
}

/* Allocates one layer's arrays at their empty values; 0 on success. */
static int layer_alloc(nl_summary_layer *y, size_t G, size_t F, size_t T, size_t K) {
    y->w_out_norm = calloc(F, sizeof(float));
    y->mean = calloc(G * F, sizeof(double)), y->m2 = calloc(G * F, sizeof(double)), y->sum_abs = calloc(G * F, sizeof(double));
    y->min = malloc(G * F * sizeof(float)), y->max = malloc(G * F * sizeof(float)), y->max_r = calloc(G * F, sizeof(float));
    y->freq = calloc(G * T * F, sizeof(int64_t));
    y->r_hist = calloc(G * 2 * NL_SUMMARY_R_BINS, sizeof(int64_t));
    y->r_below = calloc(G * 4, sizeof(int64_t));
    y->r_sum = calloc(G * 2, sizeof(double));
    y->abs_hist = calloc(F * NL_SUMMARY_ABS_BINS, sizeof(int64_t));
    y->top_value = calloc(F * K, sizeof(float));
    y->top_doc = malloc(F * K * sizeof(int32_t)), y->top_pos = malloc(F * K * sizeof(int32_t));
    y->top_n = calloc(F, sizeof(int32_t));
    if (!y->w_out_norm || !y->mean || !y->m2 || !y->sum_abs || !y->min || !y->max || !y->max_r || !y->freq || !y->r_hist ||
        !y->r_below || !y->r_sum || !y->abs_hist || !y->top_value || !y->top_doc || !y->top_pos || !y->top_n)
        return -1;
    for (size_t x = 0; x < G * F; x++) y->min[x] = INFINITY, y->max[x] = -INFINITY;
    memset(y->top_doc, 0xff, F * K * sizeof(int32_t));
    memset(y->top_pos, 0xff, F * K * sizeof(int32_t));
    return 0;
}

nl_status nl_summary_create(nl_ctx *ctx, const nl_summary_desc *d, nl_summary **out) {
    NL_ASSERT(d && out);
    *out = NULL;
    if (d->n_layers <= 0 || d->n_layers > 65536 || d->d_model <= 0 || d->d_ff <= 0)
        return nl_errorf(ctx, NL_EINVAL, "summary: bad shape (n_layers %d, d_model %d, d_ff %d)", d->n_layers, d->d_model, d->d_ff);
    int K = d->top_k ? d->top_k : 20;
    if (K < 1 || K > NL_SUMMARY_MAX_K) return nl_errorf(ctx, NL_EINVAL, "summary: top-K %d is outside 1..%d", K, NL_SUMMARY_MAX_K);
    static const double def_tau[] = {0, 0.01, 0.1, 0.2};
    const double *tau = d->tau ? d->tau : def_tau;
    int nt = d->tau ? d->n_tau : 4;
    if (nt < 1 || nt > NL_SUMMARY_MAX_TAU)
        return nl_errorf(ctx, NL_EINVAL, "summary: between 1 and %d thresholds, not %d", NL_SUMMARY_MAX_TAU, nt);
    nl_summary *s = calloc(1, sizeof *s);
    if (!s) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    nl_status st = NL_OK;
    s->n_layers = d->n_layers, s->d_model = d->d_model, s->d_ff = d->d_ff, s->top_k = K, s->n_tau = nt;
    memcpy(s->tau, tau, (size_t)nt * sizeof(double));
    for (int a = 1; a < nt; a++) /* sorted ascending (insertion) */
        for (int b = a; b > 0 && s->tau[b] < s->tau[b - 1]; b--) {
            double t = s->tau[b];
            s->tau[b] = s->tau[b - 1], s->tau[b - 1] = t;
        }
    for (int a = 0; a < nt && st == NL_OK; a++)
        if (!(s->tau[a] >= 0 && s->tau[a] < 1) || (a && s->tau[a] == s->tau[a - 1]))
            st = nl_errorf(ctx, NL_EINVAL, "summary: threshold %g is outside [0, 1) or given twice", s->tau[a]);
    s->model = dupz(d->model), s->arch = dupz(d->arch), s->ffn_kind = dupz(d->ffn_kind), s->act_fn = dupz(d->act_fn);
    s->dataset = dupz(d->dataset), s->tokenizer = dupz(d->tokenizer), s->dataset_checksum = dupz(d->dataset_checksum);
    s->created_by = dupz("neuronlab " NL_VERSION);
    s->compute = dupz(d->compute ? d->compute : "f32");
    int R = d->layers && d->n_rec > 0 ? d->n_rec : d->n_layers;
    s->layers = malloc((size_t)R * sizeof(int));
    int G = d->group_labels && d->n_groups > 0 ? d->n_groups : 1;
    s->group_labels = calloc((size_t)G, sizeof(char *));
    s->group_tokens = calloc((size_t)G, sizeof(int64_t));
    s->cap_docs = 16;
    s->doc_offsets = calloc((size_t)s->cap_docs + 1, sizeof(int64_t));
    s->doc_labels = calloc((size_t)s->cap_docs, sizeof(char *));
    s->prompt_len = calloc((size_t)s->cap_docs, sizeof(int32_t));
    s->doc_group = calloc((size_t)s->cap_docs, sizeof(int32_t));
    s->lay = calloc((size_t)R, sizeof(nl_summary_layer));
    if (!s->model || !s->arch || !s->ffn_kind || !s->act_fn || !s->dataset || !s->tokenizer || !s->dataset_checksum ||
        !s->created_by || !s->compute || !s->layers || !s->group_labels || !s->group_tokens || !s->doc_offsets || !s->doc_labels ||
        !s->prompt_len || !s->doc_group || !s->lay) {
        nl_summary_destroy(s);
        return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    }
    s->n_rec = R;
    for (int j = 0; j < R; j++) s->layers[j] = d->layers && d->n_rec > 0 ? d->layers[j] : j;
    qsort(s->layers, (size_t)R, sizeof(int), cmp_int);
    for (int j = 0; j < R && st == NL_OK; j++)
        if (s->layers[j] < 0 || s->layers[j] >= s->n_layers || (j && s->layers[j] == s->layers[j - 1]))
            st = nl_errorf(ctx, NL_EINVAL, "summary: layer %d is outside 0..%d or given twice", s->layers[j], s->n_layers - 1);
    s->n_groups = G;
    for (int g = 0; g < G; g++)
        if (!(s->group_labels[g] = dupz(d->group_labels && d->n_groups > 0 ? d->group_labels[g] : ""))) st = NL_ENOMEM;
    if (st == NL_OK) {
        qsort(s->group_labels, (size_t)G, sizeof(char *), cmp_str);
        for (int g = 1; g < G && st == NL_OK; g++)
            if (!strcmp(s->group_labels[g], s->group_labels[g - 1]))
                st = nl_errorf(ctx, NL_EINVAL, "summary: group '%s' is given twice", s->group_labels[g]);
    }
    for (int j = 0; j < R && st == NL_OK; j++) {
        if (layer_alloc(&s->lay[j], (size_t)G, (size_t)s->d_ff, (size_t)nt, (size_t)K) != 0 ||
            !(s->lay[j].pooled = malloc((size_t)s->cap_docs * (size_t)s->d_ff * sizeof(float))))
            st = nl_errorf(ctx, NL_ENOMEM, "out of memory (summary of %d layers x %d neurons)", R, s->d_ff);
    }
    if (st == NL_ENOMEM && !ctx->msg[0]) st = nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st != NL_OK) {
        nl_summary_destroy(s);
        return st;
    }
    nl_summary_sync_info(s);
    *out = s;
    return NL_OK;
}

/* e(j) = 2^(-24 + j/2) as write_all stores it: the float bits (206 + j) << 22, i.e. 2^k and
 * 1.5·2^k (j = 0 … 80). */
static double abs_edge(int j) {
    uint32_t b = (206u + (uint32_t)j) << 22;
    float x;
    memcpy(&x, &b, 4);
    return x;
}

void nl_summary_abs_bin(int b, double *lo, double *hi) {
    NL_ASSERT(b >= 0 && b < NL_SUMMARY_ABS_BINS);
    if (b == 0) *lo = *hi = 0;
    else if (b == 1) *lo = 0, *hi = abs_edge(0);
    else if (b < NL_SUMMARY_ABS_BINS - 1) *lo = abs_edge(b - 2), *hi = abs_edge(b - 1);
    else *lo = abs_edge(80), *hi = INFINITY;
}

int nl_summary_group(const nl_summary *s, const char *label) {
    int lo = 0, hi = s->n_groups - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->group_labels[mid], label ? label : "");
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int nl_summary_layer_index(const nl_summary *s, int l) {
    for (int j = 0; j < s->n_rec; j++)
        if (s->layers[j] == l) return j;
    return -1;
}

nl_status nl_summary_add_doc(nl_ctx *ctx, nl_summary *s, const char *label, int64_t n_tokens, int prompt_len,
                             const float *pooled) {
    int g = nl_summary_group(s, label);
    if (g < 0) return nl_errorf(ctx, NL_EINVAL, "summary: document label '%s' is not one of its groups", label ? label : "");
    if (n_tokens < 0 || prompt_len > n_tokens || n_tokens > INT32_MAX)
        return nl_errorf(ctx, NL_EINVAL, "summary: document of %lld tokens with prompt %d", (long long)n_tokens, prompt_len);
    const size_t F = (size_t)s->d_ff;
    if (s->n_docs == s->cap_docs) {
        int64_t cap = s->cap_docs * 2;
        int64_t *off = realloc(s->doc_offsets, (size_t)(cap + 1) * sizeof *off);
        if (off) s->doc_offsets = off;
        char **lab = realloc(s->doc_labels, (size_t)cap * sizeof *lab);
        if (lab) s->doc_labels = lab;
        int32_t *pl = realloc(s->prompt_len, (size_t)cap * sizeof *pl);
        if (pl) s->prompt_len = pl;
        int32_t *dg = realloc(s->doc_group, (size_t)cap * sizeof *dg);
        if (dg) s->doc_group = dg;
        if (!off || !lab || !pl || !dg) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
        for (int j = 0; j < s->n_rec; j++) {
            float *p = realloc(s->lay[j].pooled, (size_t)cap * F * sizeof(float));
            if (!p) return nl_errorf(ctx, NL_ENOMEM, "out of memory (pooled values of %lld documents)", (long long)cap);
            s->lay[j].pooled = p;
        }
        s->cap_docs = cap;
    }
    int64_t d = s->n_docs;
    if (!(s->doc_labels[d] = dupz(label))) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    s->doc_offsets[d + 1] = s->doc_offsets[d] + n_tokens;
    s->prompt_len[d] = prompt_len < 0 ? (int32_t)n_tokens : prompt_len;
    s->doc_group[d] = g;
    for (int j = 0; j < s->n_rec; j++) {
        float *row = s->lay[j].pooled + (size_t)d * F;
        if (pooled) memcpy(row, pooled + (size_t)j * F, F * sizeof(float));
        else memset(row, 0, F * sizeof(float));
    }
    s->n_docs++;
    s->n_tokens += n_tokens;
    s->group_tokens[g] += n_tokens;
    nl_summary_sync_info(s);
    return NL_OK;
}

void nl_summary_sync_info(nl_summary *s) {
    nl_h5_info *in = &s->info;
    memset(in, 0, sizeof *in);
    nl_h5_meta *m = &in->meta;
    m->model = s->model, m->arch = s->arch, m->n_layers = s->n_layers, m->d_model = s->d_model, m->d_ff = s->d_ff;
    m->ffn_kind = s->ffn_kind, m->act_fn = s->act_fn, m->dtype = NL_H5_F32, m->dataset = s->dataset;
    m->tokenizer = s->tokenizer, m->created_by = s->created_by, m->compute = s->compute, m->layers = s->layers, m->n_rec = s->n_rec;
    m->pooled = 1, m->no_acts = 1, m->dataset_checksum = s->dataset_checksum;
    in->version = NL_SUMMARY_VERSION;
    in->complete = s->complete;
    in->n_tokens = s->n_tokens;
    in->n_docs = s->n_docs;
    in->tokens = NULL;
    in->doc_offsets = s->doc_offsets;
    in->doc_labels = (const char *const *)s->doc_labels;
    in->prompt_len = s->prompt_len;
}

/* ---------------------------------------------------------------- HDF5 helpers */

static char g_last[512];

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *p) {
    (void)n, (void)p;
    if (g_last[0] || !e->desc || !e->desc[0]) return 0;
    const char *q = strstr(e->desc, "error message = '");
    if (q) {
        q += strlen("error message = '");
        const char *end = strchr(q, '\'');
        snprintf(g_last, sizeof g_last, "%.*s", end ? (int)(end - q) : (int)strlen(q), q);
    } else {
        snprintf(g_last, sizeof g_last, "%s", e->desc);
    }
    return 0;
}
static herr_t record_err(hid_t estack, void *p) {
    (void)p;
    g_last[0] = 0;
    H5Ewalk2(estack, H5E_WALK_UPWARD, walk_cb, NULL);
    return 0;
}
/* HDF5 prints nothing; the innermost message of the last failure is kept for h5msg(). */
static void quiet(void) {
    static int once;
    if (!once) once = 1, H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, record_err, NULL);
    g_last[0] = 0;
}
static const char *h5msg(void) { return g_last[0] ? g_last : "HDF5 error"; }

static hid_t vstr_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) H5Tclose(t), t = -1;
    return t;
}

static int attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n, int scalar, const void *v) {
    hsize_t dim = (hsize_t)n;
    hid_t sp = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL), a = -1;
    int rc = -1;
    if (sp >= 0) a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, mtype, v) >= 0) rc = 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}
static int attr_str(hid_t obj, const char *name, const char *v) {
    hid_t t = vstr_type();
    int rc = t >= 0 ? attr_write(obj, name, t, t, 1, 1, &v) : -1;
    if (t >= 0) H5Tclose(t);
    return rc;
}
static int attr_i32(hid_t obj, const char *name, int v) { return attr_write(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, 1, 1, &v); }
static int attr_i64(hid_t obj, const char *name, int64_t v) {
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 1, 1, &v);
}

/* A dataset of rank ≤ 3 written whole: chunked (≤ 1 MiB per chunk along axis 0) with
 * shuffle + deflate level 1 when it holds more than 4096 numbers (counts and histograms are
 * mostly zeros; the file is written whole, so a filter costs no crash safety), contiguous
 * otherwise and for strings. */
static int put(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims, const void *data) {
    hsize_t n = 1, chunk[3];
    for (int k = 0; k < rank; k++) n *= dims[k], chunk[k] = dims[k] ? dims[k] : 1;
    hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    int rc = -1;
    if (sp < 0 || dcpl < 0) goto out;
    if (n > 4096 && H5Tget_class(ftype) != H5T_STRING) {
        size_t row = H5Tget_size(ftype);
        for (int k = 1; k < rank; k++) row *= (size_t)chunk[k];
        hsize_t rows = row ? (hsize_t)((1u << 20) / row) : 1;
        if (rows < 1) rows = 1;
        if (chunk[0] > rows) chunk[0] = rows;
        if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, 1) < 0) goto out;
    }
    ds = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds >= 0 && (n == 0 || H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0)) rc = 0;
out:
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}
static int put_strs(hid_t loc, const char *name, char *const *v, hsize_t n) {
    hid_t t = vstr_type();
    int rc = t >= 0 ? put(loc, name, t, t, 1, &n, v) : -1;
    if (t >= 0) H5Tclose(t);
    return rc;
}

/* ---------------------------------------------------------------- writer */

static int write_all(hid_t f, const nl_summary *s) {
    const hsize_t F = (hsize_t)s->d_ff, G = (hsize_t)s->n_groups, T = (hsize_t)s->n_tau, K = (hsize_t)s->top_k;
    const hsize_t Dc = (hsize_t)s->n_docs;
    int e = 0;
    e |= attr_str(f, "format", NL_SUMMARY_FORMAT);
    e |= attr_str(f, "kind", "summary");
    e |= attr_i32(f, "version", NL_SUMMARY_VERSION);
    e |= attr_str(f, "model", s->model);
    e |= attr_str(f, "arch", s->arch);
    e |= attr_i32(f, "n_layers", s->n_layers);
    e |= attr_i32(f, "d_model", s->d_model);
    e |= attr_i32(f, "d_ff", s->d_ff);
    e |= attr_str(f, "ffn_kind", s->ffn_kind);
    e |= attr_str(f, "act_fn", s->act_fn);
    e |= attr_str(f, "dataset", s->dataset);
    e |= attr_str(f, "tokenizer", s->tokenizer);
    e |= attr_str(f, "dataset_checksum", s->dataset_checksum);
    e |= attr_str(f, "created_by", s->created_by);
    e |= attr_str(f, "compute", s->compute);
    e |= attr_write(f, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, s->n_rec, 0, s->layers);
    e |= attr_i32(f, "complete", s->complete);
    e |= attr_i64(f, "n_docs", s->n_docs);
    e |= attr_i64(f, "n_tokens", s->n_tokens);
    e |= attr_i32(f, "top_k", s->top_k);
    e |= attr_write(f, "thresholds", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s->n_tau, 0, s->tau);
    if (e) return -1;
    hsize_t d1 = Dc + 1;
    e |= put(f, "doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d1, s->doc_offsets);
    e |= put_strs(f, "doc_labels", s->doc_labels, Dc);
    e |= put(f, "prompt_len", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &Dc, s->prompt_len);
    hid_t g = H5Gcreate2(f, "groups", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    e |= put_strs(g, "labels", s->group_labels, G);
    e |= put(g, "tokens", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &G, s->group_tokens);
    H5Gclose(g);
    double re[NL_SUMMARY_R_BINS], ae[NL_SUMMARY_ABS_BINS - 1];
    re[0] = 0, ae[0] = 0;
    for (int j = 0; j <= 864; j++) { /* 2^e·(1 + m/32): the float bits (3200 + j) << 18 */
        uint32_t b = (3200u + (uint32_t)j) << 18;
        float x;
        memcpy(&x, &b, 4);
        re[1 + j] = x;
    }
    for (int j = 0; j <= 80; j++) { /* 2^(-24 + j/2) as the float bits (206 + j) << 22 */
        uint32_t b = (206u + (uint32_t)j) << 22;
        float x;
        memcpy(&x, &b, 4);
        ae[1 + j] = x;
    }
    g = H5Gcreate2(f, "bins", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    hsize_t nr = NL_SUMMARY_R_BINS, na = NL_SUMMARY_ABS_BINS - 1;
    e |= put(g, "r_edges", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &nr, re);
    e |= put(g, "abs_edges", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &na, ae);
    H5Gclose(g);
    hid_t gl = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t gp = H5Gcreate2(f, "pooled", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int j = 0; j < s->n_rec && gl >= 0 && gp >= 0 && !e; j++) {
        const nl_summary_layer *y = &s->lay[j];
        char name[16];
        snprintf(name, sizeof name, "%d", s->layers[j]);
        hid_t h = H5Gcreate2(gl, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (h < 0) { e = 1; break; }
        hsize_t gf[2] = {G, F}, gtf[3] = {G, T, F}, gh[3] = {G, 2, NL_SUMMARY_R_BINS}, gb[3] = {G, 2, 2}, gs[2] = {G, 2};
        hsize_t fa[2] = {F, NL_SUMMARY_ABS_BINS}, fk[2] = {F, K};
        e |= put(h, "w_out_norm", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &F, y->w_out_norm);
        e |= put(h, "mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, gf, y->mean);
        e |= put(h, "m2", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, gf, y->m2);
        e |= put(h, "sum_abs", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, gf, y->sum_abs);
        e |= put(h, "min", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, gf, y->min);
        e |= put(h, "max", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, gf, y->max);
        e |= put(h, "max_r", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, gf, y->max_r);
        e |= put(h, "freq", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, gtf, y->freq);
        e |= put(h, "r_hist", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, gh, y->r_hist);
        e |= put(h, "r_below", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, gb, y->r_below);
        e |= put(h, "r_sum", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, gs, y->r_sum);
        e |= put(h, "abs_hist", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, fa, y->abs_hist);
        e |= put(h, "top_value", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, fk, y->top_value);
        e |= put(h, "top_doc", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, fk, y->top_doc);
        e |= put(h, "top_pos", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, fk, y->top_pos);
        H5Gclose(h);
        h = H5Gcreate2(gp, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (h < 0) { e = 1; break; }
        hsize_t df[2] = {Dc, F};
        e |= put(h, "mean_abs", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, df, y->pooled);
        H5Gclose(h);
    }
    if (gl >= 0) H5Gclose(gl);
    else e = 1;
    if (gp >= 0) H5Gclose(gp);
    else e = 1;
    return e ? -1 : 0;
}

static int fsync_path(const char *p, int dir) {
    int fd = open(p, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

nl_status nl_summary_write(nl_ctx *ctx, const nl_summary *s, const char *path) {
    NL_ASSERT(s && path);
    quiet();
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        nl_status st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um);
    close(fd);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    char why[512] = "";
    int ok = f >= 0 && write_all(f, s) == 0;
    if (!ok) snprintf(why, sizeof why, "%s", h5msg());
    if (f >= 0 && H5Fclose(f) < 0 && ok) ok = 0, snprintf(why, sizeof why, "%s", h5msg());
    if (ok && fsync_path(tmp, 0) != 0) ok = 0, snprintf(why, sizeof why, "%s", strerror(errno));
    if (ok && rename(tmp, path) != 0) ok = 0, snprintf(why, sizeof why, "%s", strerror(errno));
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, why);
    }
    char *dir = strdup(path);
    if (dir) {
        char *sl = strrchr(dir, '/');
        if (!sl) strcpy(dir, ".");
        else if (sl == dir) sl[1] = 0;
        else *sl = 0;
        fsync_path(dir, 1);
        free(dir);
    }
    free(tmp);
    return NL_OK;
}

/* ---------------------------------------------------------------- reader */

static int read_str_attr(hid_t obj, const char *name, char **out) {
    *out = NULL;
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a), mt = -1;
    int rc = -1;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(t) > 0) {
            char *v = NULL;
            mt = H5Tcopy(t);
            if (mt >= 0 && H5Aread(a, mt, &v) >= 0) {
                *out = strdup(v ? v : "");
                rc = *out ? 0 : -1;
                H5free_memory(v);
            }
        } else {
            size_t n = H5Tget_size(t);
            char *v = n > 0 && n <= MAX_ATTR_STR ? calloc(n + 1, 1) : NULL;
            mt = v ? H5Tcopy(t) : -1;
            if (mt >= 0 && H5Tset_size(mt, n + 1) >= 0 && H5Tset_strpad(mt, H5T_STR_NULLTERM) >= 0 && H5Aread(a, mt, v) >= 0)
                *out = v, v = NULL, rc = 0;
            free(v);
        }
    }
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

/* Reads a numeric attribute of at most max elements into out (as mtype); returns the count or -1. */
static int64_t read_num_attr(hid_t obj, const char *name, hid_t mtype, H5T_class_t cls, int64_t max, void *out) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int64_t n = -1;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == cls && H5Sget_simple_extent_ndims(sp) <= 1) {
        hssize_t k = H5Sget_simple_extent_npoints(sp);
        if (k >= 0 && k <= max && H5Aread(a, mtype, out) >= 0) n = k;
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return n;
}

typedef struct {
    nl_ctx *ctx;
    const char *path;
    hid_t f;
} rd;

/* Opens name under loc and checks its shape against want (rank dims); returns the dataset
 * or -1 after setting the error ("… has shape (…), expected (…) (what)"). */
static hid_t open_checked(rd *r, hid_t loc, const char *name, const char *full, int rank, const hsize_t *want, const char *what,
                          H5T_class_t cls) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) {
        nl_errorf(r->ctx, NL_EFORMAT, "'%s' is corrupt: %s is missing", r->path, full);
        return -1;
    }
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) {
        nl_errorf(r->ctx, NL_EFORMAT, "'%s' is corrupt: %s cannot be opened (%s)", r->path, full, h5msg());
        return -1;
    }
    hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds);
    hsize_t dims[4] = {0, 0, 0, 0};
    int rk = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rk >= 0 && rk <= 4) H5Sget_simple_extent_dims(sp, dims, NULL);
    int bad_t = t < 0 || H5Tget_class(t) != cls;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    int same = rk == rank;
    for (int k = 0; same && k < rank; k++) same = dims[k] == want[k];
    if (!same || bad_t) {
        char got[96] = "", exp[96] = "";
        for (int k = 0; k < rk && k < 4; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", k ? ", " : "", (unsigned long long)dims[k]);
        for (int k = 0; k < rank; k++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%llu", k ? ", " : "", (unsigned long long)want[k]);
        if (bad_t) nl_errorf(r->ctx, NL_EFORMAT, "'%s' is corrupt: %s has the wrong element type", r->path, full);
        else nl_errorf(r->ctx, NL_EFORMAT, "'%s' is corrupt: %s has shape (%s), expected (%s) (%s)", r->path, full, got, exp, what);
        H5Dclose(ds);
        return -1;
    }
    return ds;
}

static int get(rd *r, hid_t loc, const char *name, const char *full, int rank, const hsize_t *want, const char *what,
               H5T_class_t cls, hid_t mtype, void *out) {
    hid_t ds = open_checked(r, loc, name, full, rank, want, what, cls);
    if (ds < 0) return -1;
    hsize_t n = 1;
    for (int k = 0; k < rank; k++) n *= want[k];
    int rc = n == 0 || H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0 ? 0 : -1;
    if (rc) nl_errorf(r->ctx, NL_EIO, "cannot read '%s': %s: %s", r->path, full, h5msg());
    H5Dclose(ds);
    return rc;
}

/* n strings into owned out[n]. */
static int get_strs(rd *r, hid_t loc, const char *name, const char *full, hsize_t n, char **out) {
    hid_t ds = open_checked(r, loc, name, full, 1, &n, "entries", H5T_STRING);
    if (ds < 0) return -1;
    int rc = 0;
    if (n > 0) {
        hid_t t = vstr_type(), sp = H5Dget_space(ds);
        char **tmp = calloc((size_t)n, sizeof *tmp);
        rc = -1;
        if (t >= 0 && sp >= 0 && tmp && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) >= 0) {
            rc = 0;
            for (hsize_t i = 0; i < n; i++)
                if (!(out[i] = strdup(tmp[i] ? tmp[i] : ""))) rc = -1;
            H5Dvlen_reclaim(t, sp, H5P_DEFAULT, tmp);
        }
        if (rc) nl_errorf(r->ctx, NL_EFORMAT, "'%s' is corrupt: %s cannot be read as strings (%s)", r->path, full, h5msg());
        free(tmp);
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0) H5Tclose(t);
    }
    H5Dclose(ds);
    return rc;
}

nl_h5_kind nl_h5_file_kind(const char *path) {
    quiet();
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || H5Fis_hdf5(path) <= 0) return NL_H5_KIND_OTHER;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NL_H5_KIND_OTHER;
    char *fmt = NULL;
    nl_h5_kind k = NL_H5_KIND_OTHER;
    if (read_str_attr(f, "format", &fmt) == 0) {
        if (!strcmp(fmt, NL_SUMMARY_FORMAT)) k = NL_H5_KIND_SUMMARY;
        else if (!strcmp(fmt, NL_H5_FORMAT)) k = NL_H5_KIND_ACTIVATIONS;
    }
    free(fmt);
    H5Fclose(f);
    return k;
}

#define FAIL(...) do { st = nl_errorf(ctx, NL_EFORMAT, __VA_ARGS__); goto out; } while (0)

nl_status nl_summary_read(nl_ctx *ctx, const char *path, nl_summary **out) {
    NL_ASSERT(path && out);
    *out = NULL;
    quiet();
    struct stat sb;
    if (stat(path, &sb) != 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return nl_errorf(ctx, NL_EIO, "cannot open '%s': not a regular file", path);
    htri_t is = H5Fis_hdf5(path);
    if (is == 0) return nl_errorf(ctx, NL_EFORMAT, "'%s' is not an HDF5 file", path);
    if (is < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, h5msg());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, h5msg());
    nl_status st = NL_OK;
    nl_summary *s = NULL;
    char *str[8] = {0};
    int *layers = NULL;
    char **glab = NULL;
    hsize_t G = 0;
    rd r = {ctx, path, f};
    char *fmt = NULL;
    if (read_str_attr(f, "format", &fmt) != 0) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab summary (format attribute missing)", path);
        goto out;
    }
    if (!strcmp(fmt, NL_H5_FORMAT)) {
        free(fmt);
        st = nl_errorf(ctx, NL_EFORMAT,
                       "'%s' is an activation file (per-token activations), not a summary (neuronlab record --stats)", path);
        goto out;
    }
    if (strcmp(fmt, NL_SUMMARY_FORMAT)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not a neuronlab summary (format is '%s', expected '%s')", path, fmt, NL_SUMMARY_FORMAT);
        free(fmt);
        goto out;
    }
    free(fmt);
    int32_t iv[8];
    if (read_num_attr(f, "version", H5T_NATIVE_INT32, H5T_INTEGER, 1, iv) != 1) FAIL("'%s' is corrupt: attribute 'version' missing", path);
    if (iv[0] != NL_SUMMARY_VERSION) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': summary version %d is not supported (this neuronlab reads version %d)", path,
                       iv[0], NL_SUMMARY_VERSION);
        goto out;
    }
    static const char *sname[8] = {"model", "arch", "ffn_kind", "act_fn", "dataset", "tokenizer", "dataset_checksum", "created_by"};
    for (int k = 0; k < 8; k++)
        if (read_str_attr(f, sname[k], &str[k]) != 0) FAIL("'%s' is corrupt: string attribute '%s' missing", path, sname[k]);
    int32_t nl, dm, dff, cpl, K;
    int64_t Dc, N;
    double tau[NL_SUMMARY_MAX_TAU];
    if (read_num_attr(f, "n_layers", H5T_NATIVE_INT32, H5T_INTEGER, 1, &nl) != 1 || nl <= 0 || nl > 65536)
        FAIL("'%s' is corrupt: attribute 'n_layers' missing or outside 1..65536", path);
    if (read_num_attr(f, "d_model", H5T_NATIVE_INT32, H5T_INTEGER, 1, &dm) != 1 || dm <= 0)
        FAIL("'%s' is corrupt: attribute 'd_model' missing or not positive", path);
    if (read_num_attr(f, "d_ff", H5T_NATIVE_INT32, H5T_INTEGER, 1, &dff) != 1 || dff <= 0 || dff > (1 << 24))
        FAIL("'%s' is corrupt: attribute 'd_ff' missing or outside 1..%d", path, 1 << 24);
    if (read_num_attr(f, "complete", H5T_NATIVE_INT32, H5T_INTEGER, 1, &cpl) != 1)
        FAIL("'%s' is corrupt: attribute 'complete' missing", path);
    if (read_num_attr(f, "top_k", H5T_NATIVE_INT32, H5T_INTEGER, 1, &K) != 1 || K < 1 || K > NL_SUMMARY_MAX_K)
        FAIL("'%s' is corrupt: attribute 'top_k' missing or outside 1..%d", path, NL_SUMMARY_MAX_K);
    if (read_num_attr(f, "n_docs", H5T_NATIVE_INT64, H5T_INTEGER, 1, &Dc) != 1 || Dc < 0 || Dc > INT32_MAX)
        FAIL("'%s' is corrupt: attribute 'n_docs' missing or out of range", path);
    if (read_num_attr(f, "n_tokens", H5T_NATIVE_INT64, H5T_INTEGER, 1, &N) != 1 || N < 0)
        FAIL("'%s' is corrupt: attribute 'n_tokens' missing or negative", path);
    int64_t nt = read_num_attr(f, "thresholds", H5T_NATIVE_DOUBLE, H5T_FLOAT, NL_SUMMARY_MAX_TAU, tau);
    if (nt < 1) FAIL("'%s' is corrupt: attribute 'thresholds' missing or longer than %d", path, NL_SUMMARY_MAX_TAU);
    layers = malloc((size_t)nl * sizeof(int));
    if (!layers) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto out; }
    int64_t R = read_num_attr(f, "layers", H5T_NATIVE_INT, H5T_INTEGER, nl, layers);
    if (R < 1) FAIL("'%s' is corrupt: attribute 'layers' missing, empty or longer than n_layers", path);
    {
        if (H5Lexists(f, "groups", H5P_DEFAULT) <= 0 || H5Lexists(f, "groups/labels", H5P_DEFAULT) <= 0)
            FAIL("'%s' is corrupt: /groups/labels is missing", path);
        hid_t ds = H5Dopen2(f, "groups/labels", H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hsize_t dims[1] = {0};
        int rk = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (rk == 1) H5Sget_simple_extent_dims(sp, dims, NULL);
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
        if (rk != 1 || dims[0] < 1 || dims[0] > (hsize_t)Dc + 1) FAIL("'%s' is corrupt: /groups/labels is not a list of 1..n_docs+1 labels", path);
        G = dims[0];
    }
    glab = calloc((size_t)G, sizeof(char *));
    if (!glab) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto out; }
    if (get_strs(&r, f, "groups/labels", "/groups/labels", G, glab) != 0) { st = NL_EFORMAT; goto out; }
    nl_summary_desc d = {str[0], str[1], str[2], str[3], str[4], str[5], str[6], nl, dm, dff, layers, (int)R, K, tau, (int)nt,
                         (const char *const *)glab, (int)G, NULL};
    if ((st = nl_summary_create(ctx, &d, &s)) != NL_OK) {
        if (st == NL_EINVAL) {
            char m[sizeof ctx->msg];
            snprintf(m, sizeof m, "%s", ctx->msg + (strncmp(ctx->msg, "summary: ", 9) ? 0 : 9));
            st = nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: %s", path, m);
        }
        goto out;
    }
    for (int g = 0; g < (int)G; g++)
        if (strcmp(s->group_labels[g], glab[g])) FAIL("'%s' is corrupt: /groups/labels is not in byte order", path);
    free(s->created_by);
    s->created_by = str[7], str[7] = NULL;
    if (H5Aexists(f, "compute") > 0) { /* older files lack it: computed in f32 */
        char *cv = NULL;
        if (read_str_attr(f, "compute", &cv) != 0) FAIL("'%s' is corrupt: string attribute 'compute' unreadable", path);
        free(s->compute);
        s->compute = cv;
    }
    s->complete = cpl != 0;
    /* documents: grow the per-document arrays to Dc */
    {
        int64_t cap = Dc > 16 ? Dc : 16;
        const size_t F = (size_t)dff;
        int64_t *off = realloc(s->doc_offsets, (size_t)(cap + 1) * sizeof *off);
        if (off) s->doc_offsets = off;
        char **lab = realloc(s->doc_labels, (size_t)cap * sizeof *lab);
        if (lab) s->doc_labels = lab, memset(lab, 0, (size_t)cap * sizeof *lab);
        int32_t *pl = realloc(s->prompt_len, (size_t)cap * sizeof *pl);
        if (pl) s->prompt_len = pl;
        int32_t *dg = realloc(s->doc_group, (size_t)cap * sizeof *dg);
        if (dg) s->doc_group = dg;
        if (!off || !lab || !pl || !dg) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto out; }
        for (int j = 0; j < s->n_rec; j++) {
            float *p = realloc(s->lay[j].pooled, (size_t)cap * F * sizeof(float));
            if (!p) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory (pooled values of %lld documents)", (long long)Dc); goto out; }
            s->lay[j].pooled = p;
        }
        s->cap_docs = cap;
        hsize_t d1 = (hsize_t)Dc + 1, dd = (hsize_t)Dc;
        if (get(&r, f, "doc_offsets", "/doc_offsets", 1, &d1, "n_docs + 1", H5T_INTEGER, H5T_NATIVE_INT64, s->doc_offsets) ||
            get(&r, f, "prompt_len", "/prompt_len", 1, &dd, "n_docs", H5T_INTEGER, H5T_NATIVE_INT32, s->prompt_len) ||
            get_strs(&r, f, "doc_labels", "/doc_labels", dd, s->doc_labels)) {
            s->n_docs = Dc; /* labels read so far are freed with s */
            if (st == NL_OK) st = NL_EFORMAT;
            goto out;
        }
        s->n_docs = Dc;
        if (s->doc_offsets[0] != 0 || s->doc_offsets[Dc] != N)
            FAIL("'%s' is corrupt: /doc_offsets runs from %lld to %lld, expected 0 to n_tokens %lld", path,
                 (long long)s->doc_offsets[0], (long long)s->doc_offsets[Dc], (long long)N);
        for (int64_t x = 0; x < Dc; x++) {
            int64_t len = s->doc_offsets[x + 1] - s->doc_offsets[x];
            if (len < 0 || len > INT32_MAX) FAIL("'%s' is corrupt: /doc_offsets decreases at document %lld", path, (long long)x);
            if (s->prompt_len[x] < 0 || s->prompt_len[x] > len)
                FAIL("'%s' is corrupt: /prompt_len[%lld] = %d is outside 0..%lld", path, (long long)x, s->prompt_len[x], (long long)len);
            int g = nl_summary_group(s, s->doc_labels[x]);
            if (g < 0) FAIL("'%s' is corrupt: document %lld's label '%s' is not in /groups/labels", path, (long long)x, s->doc_labels[x]);
            s->doc_group[x] = g;
        }
        s->n_tokens = N;
    }
    hsize_t gsz = G;
    if (get(&r, f, "groups/tokens", "/groups/tokens", 1, &gsz, "groups", H5T_INTEGER, H5T_NATIVE_INT64, s->group_tokens)) {
        st = NL_EFORMAT;
        goto out;
    }
    {
        int64_t *want = calloc((size_t)G, sizeof(int64_t));
        if (!want) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto out; }
        for (int64_t x = 0; x < Dc; x++) want[s->doc_group[x]] += s->doc_offsets[x + 1] - s->doc_offsets[x];
        int bad = -1;
        for (int g = 0; g < (int)G && bad < 0; g++)
            if (want[g] != s->group_tokens[g]) bad = g;
        free(want);
        if (bad >= 0) FAIL("'%s' is corrupt: /groups/tokens[%d] disagrees with the documents' tokens", path, bad);
    }
    const hsize_t F = (hsize_t)dff, T = (hsize_t)nt, KK = (hsize_t)K, Dh = (hsize_t)Dc;
    for (int j = 0; j < s->n_rec; j++) {
        nl_summary_layer *y = &s->lay[j];
        char base[32], full[96];
        snprintf(base, sizeof base, "layers/%d", s->layers[j]);
        if (H5Lexists(f, "layers", H5P_DEFAULT) <= 0 || H5Lexists(f, base, H5P_DEFAULT) <= 0) FAIL("'%s' is corrupt: /%s is missing", path, base);
        hid_t h = H5Gopen2(f, base, H5P_DEFAULT);
        if (h < 0) FAIL("'%s' is corrupt: /%s cannot be opened", path, base);
        hsize_t gf[2] = {G, F}, gtf[3] = {G, T, F}, gh[3] = {G, 2, NL_SUMMARY_R_BINS}, gb[3] = {G, 2, 2}, gs[2] = {G, 2};
        hsize_t fa[2] = {F, NL_SUMMARY_ABS_BINS}, fk[2] = {F, KK};
        struct { const char *n; int rank; const hsize_t *dims; const char *what; H5T_class_t cls; hid_t mt; void *p; } it[] = {
            {"w_out_norm", 1, &F, "d_ff", H5T_FLOAT, H5T_NATIVE_FLOAT, y->w_out_norm},
            {"mean", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_DOUBLE, y->mean},
            {"m2", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_DOUBLE, y->m2},
            {"sum_abs", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_DOUBLE, y->sum_abs},
            {"min", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_FLOAT, y->min},
            {"max", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_FLOAT, y->max},
            {"max_r", 2, gf, "groups, d_ff", H5T_FLOAT, H5T_NATIVE_FLOAT, y->max_r},
            {"freq", 3, gtf, "groups, thresholds, d_ff", H5T_INTEGER, H5T_NATIVE_INT64, y->freq},
            {"r_hist", 3, gh, "groups, indicators, bins", H5T_INTEGER, H5T_NATIVE_INT64, y->r_hist},
            {"r_below", 3, gb, "groups, indicators, 2", H5T_INTEGER, H5T_NATIVE_INT64, y->r_below},
            {"r_sum", 2, gs, "groups, indicators", H5T_FLOAT, H5T_NATIVE_DOUBLE, y->r_sum},
            {"abs_hist", 2, fa, "d_ff, bins", H5T_INTEGER, H5T_NATIVE_INT64, y->abs_hist},
            {"top_value", 2, fk, "d_ff, top_k", H5T_FLOAT, H5T_NATIVE_FLOAT, y->top_value},
            {"top_doc", 2, fk, "d_ff, top_k", H5T_INTEGER, H5T_NATIVE_INT32, y->top_doc},
            {"top_pos", 2, fk, "d_ff, top_k", H5T_INTEGER, H5T_NATIVE_INT32, y->top_pos},
        };
        int e = 0;
        for (size_t k = 0; k < sizeof it / sizeof it[0] && !e; k++) {
            snprintf(full, sizeof full, "/%s/%s", base, it[k].n);
            e = get(&r, h, it[k].n, full, it[k].rank, it[k].dims, it[k].what, it[k].cls, it[k].mt, it[k].p);
        }
        H5Gclose(h);
        if (e) { st = NL_EFORMAT; goto out; }
        snprintf(base, sizeof base, "pooled/%d", s->layers[j]);
        snprintf(full, sizeof full, "/%s/mean_abs", base);
        if (H5Lexists(f, "pooled", H5P_DEFAULT) <= 0 || H5Lexists(f, base, H5P_DEFAULT) <= 0) FAIL("'%s' is corrupt: /%s is missing", path, base);
        h = H5Gopen2(f, base, H5P_DEFAULT);
        hsize_t df[2] = {Dh, F};
        e = h < 0 || get(&r, h, "mean_abs", full, 2, df, "n_docs, d_ff", H5T_FLOAT, H5T_NATIVE_FLOAT, y->pooled);
        if (h >= 0) H5Gclose(h);
        if (e) { if (h < 0) nl_errorf(ctx, NL_EFORMAT, "'%s' is corrupt: /%s cannot be opened", path, base); st = NL_EFORMAT; goto out; }
        /* values the analyses divide and compare: no NaN, no negative sums or counts */
        const size_t GF = (size_t)G * F;
        for (size_t x = 0; x < GF; x++) {
            const char *bad = !(y->sum_abs[x] >= 0 && y->sum_abs[x] <= HUGE_VAL) ? "sum_abs"
                              : !(y->max_r[x] >= 0 && y->max_r[x] <= 1)          ? "max_r"
                              : isnan(y->min[x]) || isnan(y->max[x])              ? "min/max"
                              : !isfinite(y->mean[x]) && s->group_tokens[x / F] ? "mean"
                              : !(y->m2[x] >= 0 && y->m2[x] <= HUGE_VAL)          ? "m2" : NULL;
            if (bad) FAIL("'%s' is corrupt: /layers/%d/%s[%zu, %zu] holds an impossible value", path, s->layers[j], bad, (size_t)(x / F), (size_t)(x % F));
        }
        for (size_t x = 0; x < GF * T; x++)
            if (y->freq[x] < 0 || y->freq[x] > s->group_tokens[x / (F * T)])
                FAIL("'%s' is corrupt: /layers/%d/freq holds a count outside 0..the group's tokens", path, s->layers[j]);
        for (size_t x = 0; x < (size_t)G * 2; x++)
            if (!(y->r_sum[x] >= 0 && y->r_sum[x] <= HUGE_VAL))
                FAIL("'%s' is corrupt: /layers/%d/r_sum holds an impossible value", path, s->layers[j]);
        for (size_t x = 0; x < (size_t)G * 2 * NL_SUMMARY_R_BINS; x++)
            if (y->r_hist[x] < 0) FAIL("'%s' is corrupt: /layers/%d/r_hist holds a negative count", path, s->layers[j]);
        /* the top lists: slots in use first, documents and positions inside the file */
        for (hsize_t i = 0; i < F; i++) {
            int n = 0;
            for (hsize_t k = 0; k < KK; k++) {
                int32_t dd = y->top_doc[i * KK + k], pp = y->top_pos[i * KK + k];
                if (dd < 0) continue;
                if (dd >= Dc || pp < 0 || pp >= s->doc_offsets[dd + 1] - s->doc_offsets[dd] || (int)k != n)
                    FAIL("'%s' is corrupt: /layers/%d/top_doc[%llu] names document %d position %d outside the file", path,
                         s->layers[j], (unsigned long long)i, dd, pp);
                n++;
            }
            y->top_n[i] = n;
        }
    }
out:
    for (int k = 0; k < 8; k++) free(str[k]);
    for (hsize_t g = 0; glab && g < G; g++) free(glab[g]);
    free(glab);
    free(layers);
    H5Fclose(f);
    if (st != NL_OK) {
        nl_summary_destroy(s);
        return st;
    }
    nl_summary_sync_info(s);
    *out = s;
    return NL_OK;
}
