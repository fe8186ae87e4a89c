/* moe_sweep_cli.c — what moe-sweep and moe-usage share (moe_sweep_cli.h): the router check
 * against a folder, and a walk over a dataset without the LM head that counts expert usage and
 * progress. Checked by tests/moe_sweep_cli.sh. */
#include "cli/moe_sweep_cli.h"

#include <string.h>

#include "neuronlab/walk.h"

/* The folder has router r: the oracle always, sim always (every folder stores ĉ_e), any other
 * only when it is the folder's trained router. */
int nl_cli_moe_has_router(const nl_moe *moe, int r) {
    return r == NL_MOE_ROUTER_ORACLE || r == NL_MOE_ROUTER_SIM || r == (int)nl_moe_get_info(moe)->router;
}

nl_status nl_cli_moe_check_router(nl_ctx *ctx, const nl_moe *moe, const char *dir, int r) {
    if (nl_cli_moe_has_router(moe, r)) return NL_OK;
    return nl_errorf(ctx, NL_EINVAL, "'%s/manifest.json' carries no '%s' router (it has %s; oracle is always available)", dir,
                     nl_moe_router_name((nl_moe_router)r), nl_moe_router_name(nl_moe_get_info(moe)->router));
}

static nl_status walk_chunk(void *user, nl_ctx *ctx, nl_forward *f, const nl_doc *doc, int start, int T, int new_from) {
    (void)doc;
    nl_cli_moe_walk *w = user;
    nl_status st = nl_forward_run(f, ctx, doc->tokens + start, T, NULL);
    if (st != NL_OK) return st;
    const int from = new_from > start ? new_from - start : 0;
    if (w->usage && from < T) {
        for (int li = 0; li < w->usage->n_layers; li++) {
            int Tl = 0;
            const int32_t *sel = nl_moe_ffn_last_selection(w->ffn, w->usage->layers[li], &Tl);
            if (!sel || Tl != T) return nl_errorf(ctx, NL_EINVAL, "no expert selection of layer %d after a forward call", w->usage->layers[li]);
            nl_moe_usage_add(w->usage, w->d, li, sel, T, from);
        }
        nl_moe_usage_add_tokens(w->usage, w->d, T - from);
    }
    if (w->prog && T - from > 0) nl_progress_add(w->prog, T - from);
    return NL_OK;
}

nl_status nl_cli_moe_walk_all(nl_ctx *ctx, nl_forward *f, const nl_dataset *ds, int stride, nl_cli_moe_walk *w) {
    nl_status st = NL_OK;
    for (int d = 0; st == NL_OK && d < ds->n_docs; d++) {
        w->d = d;
        st = nl_forward_doc(f, ctx, &ds->docs[d], stride, walk_chunk, w);
    }
    return st;
}

nl_status nl_cli_moe_make_ffn(nl_ctx *ctx, const nl_moe *moe, nl_model *m, nl_forward *f, int K, int router, int fill, int recall,
                          nl_moe_ffn **out) {
    nl_moe_ffn_opts fo = {K, (nl_moe_fill)fill, (nl_moe_router)router, recall};
    nl_status st = nl_moe_ffn_create(ctx, moe, m, &fo, nl_forward_max_T(f), out);
    if (st == NL_OK && (st = nl_moe_ffn_attach(*out, ctx, f)) != NL_OK) {
        nl_moe_ffn_destroy(*out);
        *out = NULL;
    }
    return st;
}

void nl_cli_moe_drop_ffn(nl_moe_ffn **x, nl_forward *f) {
    if (!*x) return;
    nl_moe_ffn_detach(*x, f);
    nl_moe_ffn_destroy(*x);
    *x = NULL;
}

