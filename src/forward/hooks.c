/* hooks.c — the hook registry: interveners first, then observers; handles for removal
 * (see hooks.h). The array stays compact and in registration order.
 * Checked by tests/test_forward.c. */
#include "neuronlab/hooks.h"

#include <limits.h>
#include <string.h>

const char *nl_hook_point_name(nl_hook_point p) {
    static const char *names[NL_HOOK_COUNT] = {"ffn_pre", "ffn_up", "ffn_act", "ffn_out", "attn_out", "resid",
                                                 "ffn_in", "router_logits", "routing", "attn_in",
                                                 "attn_pre_o", "attn_probs"};
    return (p >= 0 && p < NL_HOOK_COUNT) ? names[p] : "?";
}

void nl_hooks_init(nl_hooks *h) { memset(h, 0, sizeof *h); }

nl_status nl_hooks_add_id(nl_hooks *h, nl_hook_point p, int layer, nl_hook_kind kind, nl_hook_fn fn, void *user,
                          nl_hook_id *id) {
    NL_ASSERT(p >= 0 && p < NL_HOOK_COUNT && fn && id);
    *id = 0;
    if (h->n >= NL_MAX_HOOKS) return NL_EINVAL;
    NL_ASSERT(h->last_id < INT_MAX);
    *id = ++h->last_id;
    h->hooks[h->n++] = (nl_hook){p, layer, kind, fn, user, *id};
    return NL_OK;
}

nl_status nl_hooks_add(nl_hooks *h, nl_hook_point p, int layer, nl_hook_kind kind, nl_hook_fn fn, void *user) {
    nl_hook_id id;
    return nl_hooks_add_id(h, p, layer, kind, fn, user, &id);
}

nl_status nl_hooks_remove(nl_hooks *h, nl_hook_id id) {
    if (id <= 0) return NL_EINVAL;
    for (int i = 0; i < h->n; i++)
        if (h->hooks[i].id == id) {
            memmove(&h->hooks[i], &h->hooks[i + 1], (size_t)(h->n - i - 1) * sizeof h->hooks[0]);
            h->n--;
            return NL_OK;
        }
    return NL_EINVAL;
}

int nl_hooks_wants(const nl_hooks *h, nl_hook_point p, int layer) {
    for (int i = 0; i < h->n; i++)
        if (h->hooks[i].point == p && (h->hooks[i].layer < 0 || h->hooks[i].layer == layer)) return 1;
    return 0;
}

nl_status nl_hooks_fire(const nl_hooks *h, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    for (int pass = 0; pass < 2; pass++) {
        nl_hook_kind want = pass == 0 ? NL_HOOK_INTERVENE : NL_HOOK_OBSERVE;
        for (int i = 0; i < h->n; i++) {
            const nl_hook *k = &h->hooks[i];
            if (k->kind != want || k->point != info->point || (k->layer >= 0 && k->layer != info->layer)) continue;
            nl_status st = k->fn(k->user, ctx, info, x);
            if (st != NL_OK) return st;
        }
    }
    return NL_OK;
}
