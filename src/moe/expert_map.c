/* expert_map.c — the nl_moe object (expert maps, μ, static vectors, router rows of every MoE
 * layer): names of the options, balanced part sizes, allocation, lookup, and the FFN checksum
 * that ties a folder to its base model. Checked by tests/test_moe.c. */
#include <stdlib.h>
#include <string.h>

#include "moe/moe_internal.h"
#include "neuronlab/rng.h"

static const char *split_names[] = {"param", "coact"};
static const char *feature_names[] = {"both", "gate", "up"};
static const char *router_names[] = {"sim", "oracle", "mlp"};
static const char *fill_names[] = {"zero", "mean"};

static int parse(const char *s, const char **names, int n) {
    for (int i = 0; s && i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

const char *nl_moe_split_name(nl_moe_split s) { return (unsigned)s < 2 ? split_names[s] : "?"; }
const char *nl_moe_feature_name(nl_moe_feature f) { return (unsigned)f < 3 ? feature_names[f] : "?"; }
const char *nl_moe_router_name(nl_moe_router r) { return (unsigned)r < 3 ? router_names[r] : "?"; }
const char *nl_moe_fill_name(nl_moe_fill f) { return (unsigned)f < 2 ? fill_names[f] : "?"; }
int nl_moe_split_parse(const char *s) { return parse(s, split_names, 2); }
int nl_moe_feature_parse(const char *s) { return parse(s, feature_names, 3); }
int nl_moe_router_parse(const char *s) { return parse(s, router_names, 3); }
int nl_moe_fill_parse(const char *s) { return parse(s, fill_names, 2); }

void nl_moe_part_sizes(int n, int E, int *sizes) {
    for (int e = 0; e < E; e++) sizes[e] = n / E + (e < n % E);
}

nl_moe *nl_moe_alloc(int L, int D, int F, int E, const int *layers, int n_layers) {
    nl_moe *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->n_moe = n_layers;
    m->layer_ids = calloc((size_t)n_layers + 1, sizeof(int));
    m->layers = calloc((size_t)n_layers + 1, sizeof(nl_moe_layer));
    m->index_of = malloc((size_t)L * sizeof(int));
    if (!m->layer_ids || !m->layers || !m->index_of) { nl_moe_close(m); return NULL; }
    for (int l = 0; l < L; l++) m->index_of[l] = -1;
    m->info.E = E;
    m->info.n_layers = L, m->info.d_model = D, m->info.d_ff = F;
    for (int i = 0; i < n_layers; i++) {
        nl_moe_layer *y = &m->layers[i];
        m->layer_ids[i] = y->layer = layers[i];
        m->index_of[layers[i]] = i;
        y->perm = calloc((size_t)F, sizeof(int32_t));
        y->offset = calloc((size_t)E + 1, sizeof(int32_t));
        y->mu = calloc((size_t)F, sizeof(float));
        y->freq = calloc((size_t)F, sizeof(float));
        y->stat = calloc((size_t)E * D, sizeof(float));
        y->stat_sum = calloc((size_t)D, sizeof(float));
        y->router_sim = calloc((size_t)E * D, sizeof(float));
        if (!y->perm || !y->offset || !y->mu || !y->freq || !y->stat || !y->stat_sum || !y->router_sim) {
            nl_moe_close(m);
            return NULL;
        }
    }
    return m;
}

void nl_moe_close(nl_moe *m) {
    if (!m) return;
    for (int i = 0; m->layers && i < m->n_moe; i++) {
        nl_moe_layer *y = &m->layers[i];
        free(y->perm), free(y->offset), free(y->mu), free(y->freq), free(y->stat), free(y->stat_sum), free(y->router_sim);
        free(y->mlp_w1), free(y->mlp_w2);
    }
    free(m->layers), free(m->layer_ids), free(m->index_of);
    free(m->info.model), free(m->info.calib_path), free(m->info.created_by);
    free(m);
}

const nl_moe_info *nl_moe_get_info(const nl_moe *m) { return &m->info; }

const nl_moe_layer *nl_moe_get_layer(const nl_moe *m, int l) {
    if (l < 0 || l >= m->info.n_layers || m->index_of[l] < 0) return NULL;
    return &m->layers[m->index_of[l]];
}

int nl_moe_n_layers(const nl_moe *m) { return m->n_moe; }
int nl_moe_layer_index(const nl_moe *m, int i) { return m->layer_ids[i]; }

static uint64_t hash_mat(uint64_t h, const nl_mat *w, float *row) {
    if (!w->w) return nl_fnv1a(h, "-", 1);
    for (int o = 0; o < w->n_out; o++) {
        for (int i = 0; i < w->n_in; i++) row[i] = nl_moe_mat_at(w, o, i);
        h = nl_fnv1a(h, row, (size_t)w->n_in * sizeof(float));
    }
    return h;
}

nl_status nl_moe_ffn_checksum(nl_ctx *ctx, nl_model *m, uint64_t *out) {
    const nl_config *c = nl_model_config(m);
    const int D = c->d_model, F = c->d_ff;
    float *row = malloc((size_t)(D > F ? D : F) * sizeof(float));
    if (!row) return nl_errorf(ctx, NL_ENOMEM, "out of memory");
    uint64_t h = NL_FNV_INIT;
    int dims[3] = {c->n_layers, D, F};
    h = nl_fnv1a(h, dims, sizeof dims);
    for (int l = 0; l < c->n_layers; l++) {
        nl_layer w;
        nl_status st = nl_model_layer(ctx, m, l, &w);
        if (st != NL_OK) { free(row); return st; }
        h = hash_mat(h, &w.w_gate, row);
        h = hash_mat(h, &w.w_up, row);
        if (w.b_up) h = nl_fnv1a(h, w.b_up, (size_t)F * sizeof(float));
        h = hash_mat(h, &w.w_down, row);
        if (w.b_down) h = nl_fnv1a(h, w.b_down, (size_t)D * sizeof(float));
    }
    free(row);
    *out = h;
    return NL_OK;
}
