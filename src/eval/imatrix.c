/* imatrix.c — llama.cpp's importance matrix from observer hooks, written as GGUF or as the legacy
 * .dat file and read back (contract and file layouts in imatrix.h). Layouts from llama.cpp's
 * tools/imatrix/imatrix.cpp (save_imatrix, save_imatrix_legacy) and the GGUF container (gguf.h). */
#include "neuronlab/imatrix.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "neuronlab/atomic_file.h"
#include "neuronlab/gguf.h"
#include "neuronlab/walk.h"

/* Slots: the weight matrices of one layer, by the hook point that gives their input. The first
 * slot of a point (UP, Q or QKV) accumulates; the others read the same input (GATE; K, V) and get
 * a copy of its sums after every call, so one input is summed once however many matrices read it. */
enum { S_UP, S_GATE, S_DOWN, S_Q, S_K, S_V, S_QKV, S_O, NS };
static const char *const slot_name[NS] = {"ffn_up", "ffn_gate", "ffn_down", "attn_q",
                                          "attn_k", "attn_v", "attn_qkv", "attn_output"};

struct nl_imatrix {
    nl_imatrix_entry *e;
    int n;
    int n_layers;
    int *ent; /* (n_layers, NS) entry index or -1 */
    int skip;
    nl_hook_id hook[4]; /* FFN_IN, FFN_ACT, ATTN_IN, ATTN_PRE_O */
};

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const nl_imatrix_entry *)a)->name, ((const nl_imatrix_entry *)b)->name);
}

static nl_status alloc_entries(nl_ctx *ctx, nl_imatrix *im, int n) {
    im->e = calloc((size_t)(n > 0 ? n : 1), sizeof *im->e);
    if (!im->e) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

static nl_status init_entry(nl_ctx *ctx, nl_imatrix_entry *e, const char *name, int n_in) {
    snprintf(e->name, sizeof e->name, "%s", name);
    e->n_in = n_in;
    e->in_sum2 = calloc((size_t)n_in, sizeof(double));
    e->in_sum = calloc((size_t)n_in, sizeof(double));
    if (!e->in_sum2 || !e->in_sum) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    return NL_OK;
}

void nl_imatrix_destroy(nl_imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n; i++) free(im->e[i].in_sum2), free(im->e[i].in_sum);
    free(im->e);
    free(im->ent);
    free(im);
}

static nl_status add_entry(nl_ctx *ctx, nl_imatrix *im, int l, int slot, int n_in) {
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s.weight", l, slot_name[slot]);
    return init_entry(ctx, &im->e[im->n++], name, n_in);
}

static nl_status create(nl_ctx *ctx, const nl_config *c, int fused_qkv, nl_imatrix **out) {
    *out = NULL;
    nl_imatrix *im = calloc(1, sizeof *im);
    if (!im) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    const int L = c->n_layers, Q = c->n_heads * c->head_dim;
    im->n_layers = L;
    im->ent = malloc((size_t)(L > 0 ? L : 1) * NS * sizeof(int));
    nl_status st = im->ent ? alloc_entries(ctx, im, NS * L) : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    for (int l = 0; st == NL_OK && l < L; l++) {
        if (fused_qkv) st = add_entry(ctx, im, l, S_QKV, c->d_model);
        else
            for (int s = S_Q; st == NL_OK && s <= S_V; s++) st = add_entry(ctx, im, l, s, c->d_model);
        if (st == NL_OK) st = add_entry(ctx, im, l, S_O, Q);
        if (nl_config_is_moe_layer(c, l)) continue;
        if (st == NL_OK && c->ffn_gated) st = add_entry(ctx, im, l, S_GATE, c->d_model);
        if (st == NL_OK) st = add_entry(ctx, im, l, S_UP, c->d_model);
        if (st == NL_OK) st = add_entry(ctx, im, l, S_DOWN, c->d_ff);
    }
    if (st == NL_OK) {
        qsort(im->e, (size_t)im->n, sizeof *im->e, cmp_entry);
        for (int k = 0; k < L * NS; k++) im->ent[k] = -1;
        for (int i = 0; i < im->n; i++) {
            int l;
            char what[32];
            if (sscanf(im->e[i].name, "blk.%d.%31[a-z_]", &l, what) != 2 || l < 0 || l >= L) continue;
            for (int s = 0; s < NS; s++)
                if (!strcmp(what, slot_name[s])) im->ent[l * NS + s] = i;
        }
    }
    if (st != NL_OK) {
        nl_imatrix_destroy(im);
        return st;
    }
    *out = im;
    return NL_OK;
}

nl_status nl_imatrix_create(nl_ctx *ctx, const nl_config *c, nl_imatrix **out) {
    return create(ctx, c, c->arch == NL_ARCH_GPT2 || c->arch == NL_ARCH_GPT_NEOX, out);
}

nl_status nl_imatrix_create_model(nl_ctx *ctx, nl_model *m, nl_imatrix **out) {
    *out = NULL;
    const nl_config *c = nl_model_config(m);
    int fused = 0;
    if (c->n_layers > 0) {
        nl_layer w;
        nl_status st = nl_model_layer(ctx, m, 0, &w);
        if (st != NL_OK) return st;
        fused = w.qkv_layout != NL_QKV_SEPARATE;
    }
    return create(ctx, c, fused, out);
}

static void accumulate(nl_imatrix_entry *e, const float *x, int T, int width) {
    if (width != e->n_in) return;
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * width;
        for (int j = 0; j < width; j++) {
            const double v = r[j];
            e->in_sum2[j] += v * v;
            e->in_sum[j] += v;
        }
    }
    e->count += T;
}

static void copy_sums(nl_imatrix_entry *dst, const nl_imatrix_entry *src) {
    if (dst->n_in != src->n_in) return;
    memcpy(dst->in_sum2, src->in_sum2, (size_t)src->n_in * sizeof(double));
    memcpy(dst->in_sum, src->in_sum, (size_t)src->n_in * sizeof(double));
    dst->count = src->count;
}

static nl_status on_input(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    nl_imatrix *im = user;
    const int l = info->layer;
    if (l < 0 || l >= im->n_layers) return NL_OK;
    const int skip = im->skip < info->T ? im->skip : info->T;
    const float *rows = x + (size_t)skip * info->width;
    const int T = info->T - skip;
    if (T <= 0) return NL_OK;
    int first, lo, hi; /* the accumulating slot, and the slots [lo, hi) that copy it */
    switch (info->point) {
    case NL_HOOK_FFN_IN: first = S_UP, lo = S_GATE, hi = S_GATE + 1; break;
    case NL_HOOK_FFN_ACT: first = S_DOWN, lo = hi = 0; break;
    case NL_HOOK_ATTN_IN:
        first = im->ent[l * NS + S_QKV] >= 0 ? S_QKV : S_Q, lo = S_K, hi = S_V + 1;
        break;
    case NL_HOOK_ATTN_PRE_O: first = S_O, lo = hi = 0; break;
    default: return NL_OK;
    }
    const int *ent = im->ent + (size_t)l * NS;
    if (ent[first] < 0) return NL_OK;
    accumulate(&im->e[ent[first]], rows, T, info->width);
    for (int s = lo; s < hi; s++)
        if (ent[s] >= 0) copy_sums(&im->e[ent[s]], &im->e[ent[first]]);
    return NL_OK;
}

nl_status nl_imatrix_attach(nl_ctx *ctx, nl_imatrix *im, nl_hooks *hooks) {
    static const nl_hook_point pts[4] = {NL_HOOK_FFN_IN, NL_HOOK_FFN_ACT, NL_HOOK_ATTN_IN, NL_HOOK_ATTN_PRE_O};
    for (int k = 0; k < 4; k++)
        if (nl_hooks_add_id(hooks, pts[k], -1, NL_HOOK_OBSERVE, on_input, im, &im->hook[k]) != NL_OK) {
            nl_imatrix_detach(im, hooks);
            return nl_errorf(ctx, NL_EINVAL, "too many hooks on the forward pass");
        }
    return NL_OK;
}

void nl_imatrix_detach(nl_imatrix *im, nl_hooks *hooks) {
    for (int k = 0; k < 4; k++) {
        if (im->hook[k]) nl_hooks_remove(hooks, im->hook[k]);
        im->hook[k] = 0;
    }
}

void nl_imatrix_set_skip(nl_imatrix *im, int skip) { im->skip = skip > 0 ? skip : 0; }

typedef struct {
    nl_imatrix *im;
    nl_progress *progress;
} run_state;

static nl_status chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    run_state *s = user;
    int skip = new_from > start ? new_from - start : 0;
    nl_imatrix_set_skip(s->im, skip);
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    if (st == NL_OK && s->progress && skip < T) nl_progress_add(s->progress, T - skip);
    return st;
}

nl_status nl_imatrix_run(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, nl_imatrix *im, int stride,
                         nl_progress *progress) {
    nl_hooks *hooks = nl_forward_hooks(f);
    nl_status st = nl_imatrix_attach(ctx, im, hooks);
    run_state s = {im, progress};
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) st = nl_forward_doc(f, ctx, &ds->docs[d], stride, chunk, &s);
    nl_imatrix_detach(im, hooks);
    nl_imatrix_set_skip(im, 0);
    return st;
}

int nl_imatrix_n_entries(const nl_imatrix *im) { return im->n; }
const nl_imatrix_entry *nl_imatrix_entry_at(const nl_imatrix *im, int i) { return i >= 0 && i < im->n ? &im->e[i] : NULL; }

/* ---- files ----------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static nl_status write_dat(nl_ctx *ctx, const nl_imatrix *im, const char *path, const char *dataset, int chunk_size,
                           int32_t chunks) {
    nl_atomic_file a = {0};
    nl_status st = nl_atomic_open(ctx, path, &a);
    if (st != NL_OK) return st;
    int32_t n = 0;
    for (int i = 0; i < im->n; i++) n += im->e[i].count > 0;
    int ok = fwrite(&n, 4, 1, a.f) == 1;
    float *tmp = NULL;
    for (int i = 0; ok && i < im->n; i++) {
        const nl_imatrix_entry *e = &im->e[i];
        if (e->count <= 0) continue;
        int32_t len = (int32_t)strlen(e->name), nval = e->n_in;
        int32_t ncall = (int32_t)((e->count + chunk_size - 1) / chunk_size);
        float *t = realloc(tmp, (size_t)nval * sizeof(float));
        if (!t) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); ok = 0; break; }
        tmp = t;
        for (int j = 0; j < nval; j++) tmp[j] = (float)(e->in_sum2[j] / (double)e->count * (double)ncall);
        ok = fwrite(&len, 4, 1, a.f) == 1 && fwrite(e->name, 1, (size_t)len, a.f) == (size_t)len &&
             fwrite(&ncall, 4, 1, a.f) == 1 && fwrite(&nval, 4, 1, a.f) == 1 && fwrite(tmp, 4, (size_t)nval, a.f) == (size_t)nval;
    }
    free(tmp);
    int32_t dl = (int32_t)strlen(dataset);
    if (ok) ok = fwrite(&chunks, 4, 1, a.f) == 1 && fwrite(&dl, 4, 1, a.f) == 1 && fwrite(dataset, 1, (size_t)dl, a.f) == (size_t)dl;
    if (!ok) {
        nl_atomic_abort(&a);
        return st != NL_OK ? st : nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
    }
    return nl_atomic_commit(ctx, &a);
}

/* GGUF: the f32 values of the entries, filled at write time (tensor i → entry i / 3, part i % 3). */
static nl_status fill(void *user, nl_ctx *ctx, int64_t i, void *dst, uint64_t nbytes) {
    const nl_imatrix *im = user;
    const nl_imatrix_entry *e = &im->e[i / 3];
    float *o = dst;
    switch (i % 3) {
    case 0: for (int j = 0; j < e->n_in; j++) o[j] = (float)e->in_sum2[j]; break;
    case 1: o[0] = (float)e->count; break;
    case 2: for (int j = 0; j < e->n_in; j++) o[j] = (float)e->in_sum[j]; break;
    }
    (void)ctx, (void)nbytes;
    return NL_OK;
}

nl_status nl_imatrix_write(nl_ctx *ctx, const nl_imatrix *im, const char *path, const char *dataset, int chunk_size) {
    if (chunk_size <= 0) return nl_errorf(ctx, NL_EINVAL, "imatrix chunk size %d", chunk_size);
    int64_t maxc = 0;
    for (int i = 0; i < im->n; i++) maxc = im->e[i].count > maxc ? im->e[i].count : maxc;
    const int32_t chunks = (int32_t)(maxc / chunk_size);
    if (ends_with(path, ".dat")) return write_dat(ctx, im, path, dataset, chunk_size, chunks);
    nl_gguf_writer *w = NULL;
    nl_status st = nl_gguf_writer_create(ctx, 32, &w);
    const char *ds[1] = {dataset};
    if (st == NL_OK) st = nl_gguf_writer_str(ctx, w, "general.type", "imatrix", 7);
    if (st == NL_OK) st = nl_gguf_writer_arr_str(ctx, w, "imatrix.datasets", ds, NULL, 1);
    if (st == NL_OK) st = nl_gguf_writer_u32(ctx, w, "imatrix.chunk_count", (uint32_t)chunks);
    if (st == NL_OK) st = nl_gguf_writer_u32(ctx, w, "imatrix.chunk_size", (uint32_t)chunk_size);
    char name[96];
    for (int i = 0; st == NL_OK && i < im->n; i++) {
        int64_t ne = im->e[i].n_in, one = 1;
        snprintf(name, sizeof name, "%s.in_sum2", im->e[i].name);
        st = nl_gguf_writer_tensor(ctx, w, name, NL_GGML_F32, 1, &ne, NULL, fill, (void *)im);
        snprintf(name, sizeof name, "%s.counts", im->e[i].name);
        if (st == NL_OK) st = nl_gguf_writer_tensor(ctx, w, name, NL_GGML_F32, 1, &one, NULL, fill, (void *)im);
        snprintf(name, sizeof name, "%s.in_sum", im->e[i].name);
        if (st == NL_OK) st = nl_gguf_writer_tensor(ctx, w, name, NL_GGML_F32, 1, &ne, NULL, fill, (void *)im);
    }
    if (st == NL_OK) st = nl_gguf_writer_write(ctx, w, path);
    nl_gguf_writer_destroy(w);
    return st;
}

/* ---- reading back ---------------------------------------------------------------------------- */

static nl_status bad(nl_ctx *ctx, const char *path, const char *what) {
    return nl_errorf(ctx, NL_EFORMAT, "'%s': not an importance matrix file: %s", path, what);
}

static nl_status read_gguf(nl_ctx *ctx, const char *path, const void *buf, size_t size, nl_imatrix *im) {
    nl_gguf *g = NULL;
    nl_status st = nl_gguf_parse(ctx, path, buf, size, &g);
    if (st != NL_OK) return st;
    const char *s;
    size_t n;
    if ((st = nl_gguf_get_str(ctx, g, "general.type", &s, &n, NULL)) != NL_OK) goto done;
    if (!(n == 7 && !memcmp(s, "imatrix", 7))) { st = bad(ctx, path, "general.type is not \"imatrix\""); goto done; }
    if ((st = alloc_entries(ctx, im, (int)nl_gguf_n_tensors(g))) != NL_OK) goto done;
    for (int64_t i = 0; i < nl_gguf_n_tensors(g); i++) {
        const nl_gguf_tensor *t = nl_gguf_tensor_at(g, i);
        size_t len = strlen(t->name);
        if (len < 8 || len > 60 + 8 || strcmp(t->name + len - 8, ".in_sum2")) continue;
        char base[64], cn[96], sn[96];
        snprintf(base, sizeof base, "%.*s", (int)(len - 8), t->name);
        snprintf(cn, sizeof cn, "%s.counts", base);
        snprintf(sn, sizeof sn, "%s.in_sum", base);
        const nl_gguf_tensor *c = nl_gguf_find_tensor(g, cn), *su = nl_gguf_find_tensor(g, sn);
        if (!c || t->type != NL_GGML_F32 || c->type != NL_GGML_F32 || t->ne[1] != 1 || c->ne[0] * c->ne[1] != 1 ||
            (su && (su->type != NL_GGML_F32 || su->ne[0] != t->ne[0]))) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': entry '%s' is not one F32 matrix with its counts (experts are not supported)",
                           path, base);
            goto done;
        }
        nl_imatrix_entry *e = &im->e[im->n++];
        if ((st = init_entry(ctx, e, base, (int)t->ne[0])) != NL_OK) goto done;
        float v;
        for (int j = 0; j < e->n_in; j++) {
            memcpy(&v, t->data + 4 * (size_t)j, 4);
            e->in_sum2[j] = v;
            if (su) memcpy(&v, su->data + 4 * (size_t)j, 4), e->in_sum[j] = v;
        }
        memcpy(&v, c->data, 4);
        e->count = (int64_t)v;
    }
done:
    nl_gguf_close(g);
    return st;
}

static nl_status read_dat(nl_ctx *ctx, const char *path, const uint8_t *b, size_t size, nl_imatrix *im) {
    size_t o = 0;
    int32_t n;
#define RD(dst, k) do { if (size - o < (size_t)(k)) return bad(ctx, path, "truncated"); memcpy(dst, b + o, (size_t)(k)); o += (size_t)(k); } while (0)
    RD(&n, 4);
    if (n < 1 || (size_t)n > size / 12) return bad(ctx, path, "entry count out of range");
    nl_status st = alloc_entries(ctx, im, n);
    if (st != NL_OK) return st;
    for (int i = 0; i < n; i++) {
        int32_t len, ncall, nval;
        RD(&len, 4);
        if (len <= 0 || len > 63 || (size_t)len > size - o) return bad(ctx, path, "entry name length out of range");
        char name[64];
        RD(name, len);
        name[len] = 0;
        RD(&ncall, 4);
        RD(&nval, 4);
        if (nval <= 0 || (size_t)nval > (size - o) / 4) return bad(ctx, path, "value count out of range");
        nl_imatrix_entry *e = &im->e[im->n++];
        if ((st = init_entry(ctx, e, name, nval)) != NL_OK) return st;
        for (int j = 0; j < nval; j++) {
            float v;
            RD(&v, 4);
            e->in_sum2[j] = v;
        }
        e->count = ncall;
    }
#undef RD
    return NL_OK;
}

nl_status nl_imatrix_read(nl_ctx *ctx, const char *path, nl_imatrix **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size < 4) {
        if (fd >= 0) close(fd);
        return fd < 0 ? nl_errorf(ctx, NL_EIO, "cannot open '%s': %s", path, strerror(errno)) : bad(ctx, path, "too short");
    }
    void *base = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return nl_errorf(ctx, NL_EIO, "cannot map '%s': %s", path, strerror(errno));
    nl_imatrix *im = calloc(1, sizeof *im);
    nl_status st = im ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (st == NL_OK) {
        if (!memcmp(base, "GGUF", 4)) st = read_gguf(ctx, path, base, (size_t)sb.st_size, im);
        else st = read_dat(ctx, path, base, (size_t)sb.st_size, im);
    }
    munmap(base, (size_t)sb.st_size);
    if (st != NL_OK) {
        nl_imatrix_destroy(im);
        return st;
    }
    *out = im;
    return NL_OK;
}
