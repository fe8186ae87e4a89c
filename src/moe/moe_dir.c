/* moe_dir.c — the MoE folder (moe.h "MOE_DIR"): nl_moe_save writes manifest.json and
 * experts.safetensors into a temporary folder beside the target and renames it into place
 * (an existing MoE folder is replaced only with force); nl_moe_open reads them back and checks
 * everything a later run relies on (format, version, shapes, permutations, balanced offsets,
 * finite values, the base model's FFN checksum), each failure one message naming the file.
 * The MLP router (layers.{l}.router.mlp.w1/w2, manifest "routers" and "router_mlp") is optional:
 * folders written before it (no "routers") open as sim-only folders.
 * Checked by tests/test_moe.c (round trip, corrupt and foreign folders) and tests/moe_cli.sh. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/moe_internal.h"
#include "neuronlab/atomic_file.h"
#include "neuronlab/safetensors.h"
#include "neuronlab/st_writer.h"

#define MANIFEST "manifest.json"
#define TENSORS "experts.safetensors"

static json_t *checksum_json(uint64_t h) {
    char s[40];
    snprintf(s, sizeof s, "fnv1a64:%016llx", (unsigned long long)h);
    return json_string(s);
}

static int parse_checksum(const char *s, uint64_t *h) {
    unsigned long long v;
    int n = 0;
    if (!s || sscanf(s, "fnv1a64:%16llx%n", &v, &n) != 1 || n != 24 || s[n]) return 0;
    *h = v;
    return 1;
}

static char *manifest_text(const nl_moe *moe) {
    const nl_moe_info *in = &moe->info;
    json_t *j = json_object(), *layers = json_array(), *cal = json_object();
    json_object_set_new(j, "format", json_string(NL_MOE_FORMAT));
    json_object_set_new(j, "version", json_integer(NL_MOE_VERSION));
    json_object_set_new(j, "model", json_string(in->model));
    json_object_set_new(j, "ffn_checksum", checksum_json(in->ffn_checksum));
    json_object_set_new(j, "n_layers", json_integer(in->n_layers));
    json_object_set_new(j, "d_model", json_integer(in->d_model));
    json_object_set_new(j, "d_ff", json_integer(in->d_ff));
    for (int i = 0; i < moe->n_moe; i++) json_array_append_new(layers, json_integer(moe->layer_ids[i]));
    json_object_set_new(j, "layers", layers);
    json_object_set_new(j, "experts", json_integer(in->E));
    json_object_set_new(j, "shared", json_integer(in->n_shared));
    json_object_set_new(j, "split", json_string(nl_moe_split_name(in->split)));
    json_object_set_new(j, "feature", json_string(nl_moe_feature_name(in->feature)));
    json_object_set_new(j, "router", json_string(nl_moe_router_name(in->router)));
    json_t *routers = json_array();
    json_array_append_new(routers, json_string("sim"));
    if (in->has_mlp) json_array_append_new(routers, json_string("mlp"));
    json_object_set_new(j, "routers", routers);
    if (in->has_mlp) {
        json_t *r = json_object(), *rl = json_array();
        json_object_set_new(r, "epochs", json_integer(in->mlp.epochs));
        json_object_set_new(r, "lr", json_real(in->mlp.lr));
        json_object_set_new(r, "batch", json_integer(in->mlp.batch));
        json_object_set_new(r, "holdout", json_real(in->mlp.holdout));
        json_object_set_new(r, "split", json_string("by token, shuffled from seed"));
        json_object_set_new(r, "fill", json_string(nl_moe_fill_name(in->mlp_fill)));
        json_object_set_new(r, "max_tokens", json_integer(in->mlp_max_tokens));
        json_object_set_new(r, "optimizer", json_string("adam(0.9, 0.999, 1e-8)"));
        json_object_set_new(r, "loss", json_string("bce_with_logits, target s_e / max over the batch"));
        for (int i = 0; i < moe->n_moe; i++) {
            const nl_moe_mlp_report *q = &moe->layers[i].mlp;
            json_t *o = json_object();
            json_object_set_new(o, "layer", json_integer(moe->layer_ids[i]));
            json_object_set_new(o, "train_tokens", json_integer(q->n_train));
            json_object_set_new(o, "heldout_tokens", json_integer(q->n_held));
            json_object_set_new(o, "initial_heldout_loss", json_real(q->init_held_loss));
            json_object_set_new(o, "train_loss", json_real(q->train_loss));
            json_object_set_new(o, "heldout_loss", json_real(q->held_loss));
            json_object_set_new(o, "k25", json_integer(q->K25));
            json_object_set_new(o, "heldout_recall_sim_k25", json_real(q->recall_sim25));
            json_object_set_new(o, "heldout_recall_mlp_k25", json_real(q->recall_mlp25));
            if (q->K) {
                json_object_set_new(o, "k", json_integer(q->K));
                json_object_set_new(o, "heldout_recall_sim_k", json_real(q->recall_sim_k));
                json_object_set_new(o, "heldout_recall_mlp_k", json_real(q->recall_mlp_k));
            }
            json_array_append_new(rl, o);
        }
        json_object_set_new(r, "layers", rl);
        json_object_set_new(j, "router_mlp", r);
    }
    if (in->seed <= (uint64_t)INT64_MAX) json_object_set_new(j, "seed", json_integer((json_int_t)in->seed));
    else {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)in->seed);
        json_object_set_new(j, "seed", json_string(s));
    }
    json_object_set_new(j, "kmeans_iters", json_integer(in->kmeans_iters));
    json_object_set_new(j, "kmeans_restarts", json_integer(in->kmeans_restarts));
    json_object_set_new(j, "active_top", json_real(NL_MOE_ACTIVE_TOP));
    json_object_set_new(cal, "path", json_string(in->calib_path));
    json_object_set_new(cal, "checksum", checksum_json(in->calib_checksum));
    json_object_set_new(cal, "documents", json_integer(in->calib_docs));
    json_object_set_new(cal, "tokens", json_integer(in->calib_tokens));
    json_object_set_new(j, "calibration", cal);
    json_object_set_new(j, "tensors", json_string(TENSORS));
    json_object_set_new(j, "created_by", json_string(in->created_by));
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

static nl_status add(nl_ctx *ctx, nl_st_writer *w, int l, const char *what, int ndim, int64_t a, int64_t b, const float *data) {
    char name[96];
    snprintf(name, sizeof name, "layers.%d.%s", l, what);
    int64_t shape[2] = {a, b};
    return nl_st_writer_add(ctx, w, name, NL_DT_F32, ndim, shape, data);
}

static int is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

nl_status nl_moe_save(nl_ctx *ctx, const nl_moe *moe, const char *dir, int force) {
    const nl_moe_info *in = &moe->info;
    const int F = in->d_ff, D = in->d_model, E = in->E;
    char mpath[8400], tmpl[4200], old[4200];
    struct stat sb;
    if (strlen(dir) > 4000) return nl_errorf(ctx, NL_EINVAL, "MoE folder path is too long (%zu bytes)", strlen(dir));
    int exists = stat(dir, &sb) == 0;
    if (exists) {
        snprintf(mpath, sizeof mpath, "%s/" MANIFEST, dir);
        if (!force) return nl_errorf(ctx, NL_EINVAL, "'%s' exists (--force replaces an MoE folder)", dir);
        if (!is_dir(dir) || access(mpath, F_OK) != 0)
            return nl_errorf(ctx, NL_EINVAL, "'%s' exists and is not an MoE folder (no %s): not replacing it", dir, MANIFEST);
    }
    snprintf(tmpl, sizeof tmpl, "%s.tmp.XXXXXX", dir);
    if (!mkdtemp(tmpl)) return nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", dir, strerror(errno));
    nl_status st = NL_OK;
    nl_st_writer *w = NULL;
    /* perm and offset as exact integers in F32; the writer borrows them until it writes */
    float *ints = malloc((size_t)(moe->n_moe ? moe->n_moe : 1) * ((size_t)F + E + 1) * sizeof(float));
    char *text = manifest_text(moe);
    if (!ints || !text) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto fail; }
    if ((st = nl_st_writer_create(ctx, &w)) != NL_OK) goto fail;
    if ((st = nl_st_writer_meta(ctx, w, "format", NL_MOE_FORMAT)) != NL_OK) goto fail;
    for (int i = 0; i < moe->n_moe && st == NL_OK; i++) {
        const nl_moe_layer *y = &moe->layers[i];
        const int l = y->layer;
        float *pf = ints + (size_t)i * ((size_t)F + E + 1), *of = pf + F;
        for (int k = 0; k < F; k++) pf[k] = (float)y->perm[k];
        for (int k = 0; k <= E; k++) of[k] = (float)y->offset[k];
        st = add(ctx, w, l, "perm", 1, F, 0, pf);
        if (st == NL_OK) st = add(ctx, w, l, "offset", 1, E + 1, 0, of);
        if (st == NL_OK) st = add(ctx, w, l, "mu", 1, F, 0, y->mu);
        if (st == NL_OK) st = add(ctx, w, l, "freq", 1, F, 0, y->freq);
        if (st == NL_OK) st = add(ctx, w, l, "static", 2, E, D, y->stat);
        if (st == NL_OK) st = add(ctx, w, l, "static_sum", 1, D, 0, y->stat_sum);
        if (st == NL_OK) st = add(ctx, w, l, "router.sim", 2, E, D, y->router_sim);
        if (st == NL_OK && in->has_mlp) st = add(ctx, w, l, "router.mlp.w1", 2, E, D, y->mlp_w1);
        if (st == NL_OK && in->has_mlp) st = add(ctx, w, l, "router.mlp.w2", 2, E, E, y->mlp_w2);
    }
    if (st == NL_OK) {
        snprintf(mpath, sizeof mpath, "%s/" TENSORS, tmpl);
        st = nl_st_writer_write(ctx, w, mpath);
    }
    if (st == NL_OK) {
        snprintf(mpath, sizeof mpath, "%s/" MANIFEST, tmpl);
        size_t n = strlen(text);
        text[n] = '\n';
        st = nl_write_file_atomic(ctx, mpath, text, n + 1);
        text[n] = 0;
    }
    if (st != NL_OK) goto fail;
    if (exists) {
        snprintf(old, sizeof old, "%s.old.XXXXXX", dir);
        if (!mkdtemp(old) || rmdir(old) != 0 || rename(dir, old) != 0) {
            st = nl_errorf(ctx, NL_EIO, "cannot replace '%s': %s", dir, strerror(errno));
            goto fail;
        }
    }
    if (rename(tmpl, dir) != 0) {
        st = nl_errorf(ctx, NL_EIO, "cannot write '%s': %s", dir, strerror(errno));
        if (exists) rename(old, dir);
        goto fail;
    }
    if (exists) {
        snprintf(mpath, sizeof mpath, "%s/" MANIFEST, old);
        unlink(mpath);
        snprintf(mpath, sizeof mpath, "%s/" TENSORS, old);
        unlink(mpath);
        rmdir(old);
    }
    goto done;
fail:
    snprintf(mpath, sizeof mpath, "%s/" MANIFEST, tmpl);
    unlink(mpath);
    snprintf(mpath, sizeof mpath, "%s/" TENSORS, tmpl);
    unlink(mpath);
    rmdir(tmpl);
done:
    nl_st_writer_destroy(w);
    free(ints);
    free(text);
    return st;
}

/* Reads a whole file into memory (owned). */
static void *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(sz > 0 ? (size_t)sz : 1))) {
            if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); buf = NULL; }
            else *n = (size_t)sz;
        }
    }
    fclose(f);
    return buf;
}

static int get_int(json_t *j, const char *key, long lo, long hi, long *out) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return 0;
    *out = (long)x;
    return 1;
}

static const char *get_str(json_t *j, const char *key) {
    json_t *v = json_object_get(j, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Copies tensor layers.{l}.what of the expected shape (b = 0: 1-D) into dst, all finite. */
static nl_status load_tensor(nl_ctx *ctx, const nl_safetensors *st, const char *path, int l, const char *what, int64_t a, int64_t b,
                             float *dst) {
    char name[96];
    snprintf(name, sizeof name, "layers.%d.%s", l, what);
    const nl_st_entry *e = nl_safetensors_find(st, name);
    if (!e) return nl_errorf(ctx, NL_EFORMAT, "'%s' has no tensor '%s'", path, name);
    const int ndim = b ? 2 : 1;
    if (!e->supported || e->dtype != NL_DT_F32 || e->ndim != ndim || e->shape[0] != a || (b && e->shape[1] != b))
        return nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' is not F32 of shape (%lld%s%lld)", path, name, (long long)a, b ? ", " : "",
                         b ? (long long)b : 0LL);
    const size_t n = (size_t)a * (b ? (size_t)b : 1);
    memcpy(dst, e->data, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return nl_errorf(ctx, NL_EFORMAT, "'%s': tensor '%s' has a non-finite value at %zu", path, name, i);
    return NL_OK;
}

static nl_status load_layer(nl_ctx *ctx, const nl_safetensors *st, const char *path, const nl_moe_info *in, nl_moe_layer *y) {
    const int F = in->d_ff, D = in->d_model, E = in->E, l = y->layer;
    float *tmp = malloc(((size_t)F + E + 1) * sizeof(float));
    char *seen = calloc((size_t)F, 1);
    nl_status s = tmp && seen ? NL_OK : nl_errorf(ctx, NL_ENOMEM, "out of memory");
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "perm", F, 0, tmp);
    for (int i = 0; s == NL_OK && i < F; i++) {
        if (tmp[i] != floorf(tmp[i]) || tmp[i] < 0 || tmp[i] >= F || seen[(int)tmp[i]])
            s = nl_errorf(ctx, NL_EFORMAT, "'%s': layers.%d.perm is not a permutation of 0..%d (position %d)", path, l, F - 1, i);
        else seen[(int)tmp[i]] = 1, y->perm[i] = (int32_t)tmp[i];
    }
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "offset", E + 1, 0, tmp);
    if (s == NL_OK) {
        const int nR = F - in->n_shared, lo = nR / E;
        int ok = tmp[0] == in->n_shared && tmp[E] == F;
        for (int e = 0; ok && e < E; e++) {
            float sz = tmp[e + 1] - tmp[e];
            ok = tmp[e] == floorf(tmp[e]) && (sz == lo || (sz == lo + 1 && nR % E));
        }
        if (!ok)
            s = nl_errorf(ctx, NL_EFORMAT, "'%s': layers.%d.offset does not split positions %d..%d into %d experts of %d or %d neurons",
                          path, l, in->n_shared, F, E, lo, lo + 1);
        for (int e = 0; s == NL_OK && e <= E; e++) y->offset[e] = (int32_t)tmp[e];
    }
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "mu", F, 0, y->mu);
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "freq", F, 0, y->freq);
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "static", E, D, y->stat);
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "static_sum", D, 0, y->stat_sum);
    if (s == NL_OK) s = load_tensor(ctx, st, path, l, "router.sim", E, D, y->router_sim);
    if (s == NL_OK && in->has_mlp) s = load_tensor(ctx, st, path, l, "router.mlp.w1", E, D, y->mlp_w1);
    if (s == NL_OK && in->has_mlp) s = load_tensor(ctx, st, path, l, "router.mlp.w2", E, E, y->mlp_w2);
    free(tmp), free(seen);
    return s;
}

nl_status nl_moe_open(nl_ctx *ctx, const char *dir, nl_model *m, nl_moe **out) {
    *out = NULL;
    const nl_config *c = nl_model_config(m);
    char mpath[4200], tpath[4200];
    snprintf(mpath, sizeof mpath, "%s/" MANIFEST, dir);
    snprintf(tpath, sizeof tpath, "%s/" TENSORS, dir);
    size_t n = 0;
    char *text = read_all(mpath, &n);
    if (!text) return nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", mpath, strerror(errno));
    json_error_t jerr;
    json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return nl_errorf(ctx, NL_EFORMAT, "'%s' is not a JSON object (line %d: %s)", mpath, jerr.line, j ? "not an object" : jerr.text);
    }
    nl_status st = NL_OK;
    nl_moe *moe = NULL;
    nl_safetensors *sf = NULL;
    void *bytes = NULL;
    int *layers = NULL;
    const char *fmt = get_str(j, "format");
    long version, L, D, F, E, N, iters = 0, restarts = 0, docs = 0, toks = 0;
    json_t *jl = json_object_get(j, "layers"), *cal = json_object_get(j, "calibration");
    const char *split = get_str(j, "split"), *feature = get_str(j, "feature"), *router = get_str(j, "router");
    uint64_t ffn_sum = 0, cal_sum = 0, seed = 0;
    json_t *js = json_object_get(j, "seed");
    if (!fmt || strcmp(fmt, NL_MOE_FORMAT)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s' is not an MoE manifest (format is not \"%s\")", mpath, NL_MOE_FORMAT);
        goto done;
    }
    if (!get_int(j, "version", 0, 1 << 30, &version) || version != NL_MOE_VERSION) {
        st = nl_errorf(ctx, NL_EUNSUPPORTED, "'%s': version is not %d", mpath, NL_MOE_VERSION);
        goto done;
    }
    if (!get_int(j, "n_layers", 1, 1 << 20, &L) || !get_int(j, "d_model", 1, 1 << 24, &D) || !get_int(j, "d_ff", 1, 1 << 24, &F) ||
        !get_int(j, "experts", 1, F, &E) || !get_int(j, "shared", 0, F - 1, &N) || E > F - N || !json_is_array(jl) ||
        json_array_size(jl) > (size_t)L || !parse_checksum(get_str(j, "ffn_checksum"), &ffn_sum) || !get_str(j, "model") ||
        !split || nl_moe_split_parse(split) < 0 || !feature || nl_moe_feature_parse(feature) < 0 || !router ||
        nl_moe_router_parse(router) < 0 || !(json_is_integer(js) || json_is_string(js)) || !json_is_object(cal) ||
        !get_str(cal, "path") || !parse_checksum(get_str(cal, "checksum"), &cal_sum) || !get_int(cal, "documents", 0, INT32_MAX, &docs) ||
        !get_int(cal, "tokens", 0, LONG_MAX, &toks) || !get_int(j, "kmeans_iters", 0, 1 << 30, &iters) ||
        !get_int(j, "kmeans_restarts", 0, 1 << 30, &restarts)) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': a field is missing or out of range (n_layers, d_model, d_ff, experts, shared, layers, "
                                        "ffn_checksum, model, split, feature, router, seed, calibration, kmeans_*)", mpath);
        goto done;
    }
    /* routers: absent in folders written before the MLP router (sim only) */
    int has_mlp = 0;
    json_t *jr = json_object_get(j, "routers"), *jm = json_object_get(j, "router_mlp");
    long m_epochs = 0, m_batch = 0, m_max = 0;
    double m_lr = 0, m_hold = 0;
    const char *m_fill = NULL;
    if (jr) {
        int ok = json_is_array(jr) && json_array_size(jr) >= 1 && json_array_size(jr) <= 2 &&
                 json_is_string(json_array_get(jr, 0)) && !strcmp(json_string_value(json_array_get(jr, 0)), "sim");
        if (ok && json_array_size(jr) == 2)
            ok = json_is_string(json_array_get(jr, 1)) && !strcmp(json_string_value(json_array_get(jr, 1)), "mlp"), has_mlp = 1;
        if (!ok) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': routers must be [\"sim\"] or [\"sim\", \"mlp\"]", mpath);
            goto done;
        }
    }
    if (nl_moe_router_parse(router) == NL_MOE_ROUTER_ORACLE || (nl_moe_router_parse(router) == NL_MOE_ROUTER_MLP) != has_mlp) {
        st = nl_errorf(ctx, NL_EFORMAT, "'%s': router \"%s\" does not match the routers the folder lists", mpath, router);
        goto done;
    }
    if (has_mlp) {
        json_t *jlr = json_object_get(jm, "lr"), *jho = json_object_get(jm, "holdout");
        if (!json_is_object(jm) || !get_int(jm, "epochs", 0, 1 << 30, &m_epochs) || !get_int(jm, "batch", 1, 1 << 30, &m_batch) ||
            !get_int(jm, "max_tokens", 2, LONG_MAX, &m_max) || !json_is_number(jlr) || !json_is_number(jho) ||
            !(m_fill = get_str(jm, "fill")) || nl_moe_fill_parse(m_fill) < 0) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': router_mlp is missing or a field of it is out of range (epochs, lr, batch, holdout, "
                                            "fill, max_tokens)", mpath);
            goto done;
        }
        m_lr = json_number_value(jlr), m_hold = json_number_value(jho);
    }
    if (json_is_integer(js)) seed = (uint64_t)json_integer_value(js);
    else seed = strtoull(json_string_value(js), NULL, 10);
    if (L != c->n_layers || D != c->d_model || F != c->d_ff) {
        st = nl_errorf(ctx, NL_EINVAL, "'%s' was made from another model: %ld layers, d_model %ld, d_ff %ld, but '%s' has %d, %d, %d", mpath, L,
                       D, F, nl_model_path(m), c->n_layers, c->d_model, c->d_ff);
        goto done;
    }
    const int nl = (int)json_array_size(jl);
    layers = malloc((size_t)(nl ? nl : 1) * sizeof(int));
    if (!layers) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
    for (int i = 0; i < nl; i++) {
        json_t *v = json_array_get(jl, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= L || (i && json_integer_value(v) <= layers[i - 1])) {
            st = nl_errorf(ctx, NL_EFORMAT, "'%s': layers must be ascending layer indices in 0..%ld", mpath, L - 1);
            goto done;
        }
        layers[i] = (int)json_integer_value(v);
    }
    uint64_t have;
    if ((st = nl_moe_ffn_checksum(ctx, m, &have)) != NL_OK) goto done;
    if (have != ffn_sum) {
        st = nl_errorf(ctx, NL_EINVAL, "'%s' was made from another model: FFN checksum fnv1a64:%016llx, but '%s' has fnv1a64:%016llx", mpath,
                       (unsigned long long)ffn_sum, nl_model_path(m), (unsigned long long)have);
        goto done;
    }
    if (!(moe = nl_moe_alloc((int)L, (int)D, (int)F, (int)E, layers, nl))) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
    nl_moe_info *in = &moe->info;
    in->n_shared = (int)N, in->split = nl_moe_split_parse(split), in->feature = nl_moe_feature_parse(feature);
    in->router = nl_moe_router_parse(router), in->seed = seed, in->kmeans_iters = (int)iters, in->kmeans_restarts = (int)restarts;
    in->ffn_checksum = ffn_sum, in->calib_checksum = cal_sum, in->calib_docs = docs, in->calib_tokens = toks;
    if (has_mlp) {
        in->has_mlp = 1, in->mlp_fill = nl_moe_fill_parse(m_fill), in->mlp_max_tokens = m_max;
        nl_moe_mlp_opts_init(&in->mlp);
        in->mlp.epochs = (int)m_epochs, in->mlp.batch = (int)m_batch, in->mlp.lr = m_lr, in->mlp.holdout = m_hold, in->mlp.seed = seed;
        if (nl_moe_alloc_mlp(moe) != 0) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
        json_t *rl = json_object_get(jm, "layers");
        for (size_t i = 0; json_is_array(rl) && i < json_array_size(rl); i++) { /* the training report, as written */
            json_t *o = json_array_get(rl, i);
            const nl_moe_layer *y0 = nl_moe_get_layer(moe, (int)json_integer_value(json_object_get(o, "layer")));
            if (!json_is_integer(json_object_get(o, "layer")) || !y0) continue;
            nl_moe_mlp_report *q = &moe->layers[moe->index_of[y0->layer]].mlp;
            q->n_train = json_integer_value(json_object_get(o, "train_tokens"));
            q->n_held = json_integer_value(json_object_get(o, "heldout_tokens"));
            q->init_held_loss = json_number_value(json_object_get(o, "initial_heldout_loss"));
            q->train_loss = json_number_value(json_object_get(o, "train_loss"));
            q->held_loss = json_number_value(json_object_get(o, "heldout_loss"));
            q->K25 = (int)json_integer_value(json_object_get(o, "k25"));
            q->recall_sim25 = json_number_value(json_object_get(o, "heldout_recall_sim_k25"));
            q->recall_mlp25 = json_number_value(json_object_get(o, "heldout_recall_mlp_k25"));
            q->K = (int)json_integer_value(json_object_get(o, "k"));
            q->recall_sim_k = json_number_value(json_object_get(o, "heldout_recall_sim_k"));
            q->recall_mlp_k = json_number_value(json_object_get(o, "heldout_recall_mlp_k"));
        }
    }
    in->model = strdup(get_str(j, "model"));
    in->calib_path = strdup(get_str(cal, "path"));
    in->created_by = strdup(get_str(j, "created_by") ? get_str(j, "created_by") : "");
    if (!in->model || !in->calib_path || !in->created_by) { st = nl_errorf(ctx, NL_ENOMEM, "out of memory"); goto done; }
    if (!(bytes = read_all(tpath, &n))) { st = nl_errorf(ctx, NL_EIO, "cannot read '%s': %s", tpath, strerror(errno)); goto done; }
    if ((st = nl_safetensors_open(ctx, tpath, bytes, n, &sf)) != NL_OK) goto done;
    for (int i = 0; i < nl && st == NL_OK; i++) st = load_layer(ctx, sf, tpath, in, &moe->layers[i]);
done:
    nl_safetensors_close(sf);
    free(bytes);
    free(layers);
    json_decref(j);
    if (st != NL_OK) { nl_moe_close(moe); return st; }
    *out = moe;
    return NL_OK;
}
