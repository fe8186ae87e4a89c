/* capi.c — the stable C API of include/neuronlab/capi.h over the library's own modules.
 *
 * Rules: nothing here computes what another module already does: models, tokenizers, datasets,
 * the forward pass, perplexity and the pruning intervener are the library's (the same calls the
 * CLI makes), this file only checks arguments, owns the objects of one handle and keeps the hook
 * registry in the order the header promises (the prune intervener first, then the caller's hooks
 * in the order they were added; the registry is rebuilt from that list before every run).
 * Nothing prints or exits; every failure leaves its message in the handle's context.
 * Checked by tests/examples.sh and tests/python.sh.
 */
#include "neuronlab/capi.h"

#include <stdlib.h>
#include <string.h>

#include "analyses/prune.h"
#include "neuronlab/common.h"
#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/model.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/tokenizer.h"

#define NL_API_MAX_HOOKS 24 /* of NL_MAX_HOOKS: room for the prune intervener and record's observers */
#define NL_API_MAX_CTX 4096 /* default context cap of a model that claims more */

typedef struct {
    int id;                 /* ≥ 1, 0 = free slot */
    nl_hook_point point;
    int layer;              /* -1 = every layer */
    nl_api_hook_fn fn;
    void *user;
} api_hook;

struct nl_api {
    nl_ctx ctx;
    nl_model *m;
    const nl_config *c;
    nl_tokenizer *tok;
    nl_forward *f;
    int ctx_len, batch;
    api_hook hooks[NL_API_MAX_HOOKS]; /* in the order added */
    int n_hooks, last_id;
    nl_prune_mask mask;
    int64_t n_pruned;
};

struct nl_api_dataset {
    nl_api *h;
    nl_dataset *ds;
};

int nl_api_version(void) { return NL_API_VERSION; }
const char *nl_api_version_string(void) { return NL_VERSION; }

const char *nl_api_errmsg(const nl_api *h) { return h ? h->ctx.msg : "out of memory"; }

static void clear_msg(nl_api *h) { h->ctx.msg[0] = '\0'; }

int nl_api_open(const char *model, const char *tokenizer, const char *hidden_act, int ctx_len, int batch, nl_api **out) {
    nl_api *h = calloc(1, sizeof *h);
    *out = h;
    if (!h) return NL_ENOMEM;
    nl_ctx_init(&h->ctx);
    h->ctx.progress = 0;
    if (!model || !*model) return nl_errorf(&h->ctx, NL_EINVAL, "no model path given");
    if (ctx_len < 0 || batch < 0)
        return nl_errorf(&h->ctx, NL_EINVAL, "ctx (%d) and batch (%d) must be 0 (default) or positive", ctx_len, batch);
    if (hidden_act && nl_act_parse(hidden_act) < 0)
        return nl_errorf(&h->ctx, NL_EINVAL, "unknown hidden_act '%s' (silu, gelu, gelu_new, gelu_pytorch_tanh, relu, relu2 …)",
                         hidden_act);
    nl_model_opts mo = {.hidden_act = hidden_act};
    nl_status st = nl_model_open_opts(&h->ctx, model, &mo, &h->m);
    if (st != NL_OK) return st;
    h->c = nl_model_config(h->m);
    st = tokenizer ? nl_tokenizer_open(&h->ctx, tokenizer, &h->tok) : nl_tokenizer_for_model(&h->ctx, model, &h->tok);
    if (st != NL_OK) return st;
    if (!ctx_len) {
        ctx_len = h->c->max_pos > 0 ? h->c->max_pos : 2048;
        if (ctx_len > NL_API_MAX_CTX) ctx_len = NL_API_MAX_CTX;
    }
    if (h->c->pos == NL_POS_LEARNED && ctx_len > h->c->max_pos)
        return nl_errorf(&h->ctx, NL_EINVAL, "ctx %d exceeds the %d learned positions of '%s'", ctx_len, h->c->max_pos, model);
    if (!batch || batch > ctx_len) batch = ctx_len;
    h->ctx_len = ctx_len, h->batch = batch;
    if ((st = nl_forward_create(&h->ctx, h->m, batch, ctx_len, &h->f)) != NL_OK) return st;
    return nl_prune_mask_init(&h->ctx, &h->mask, h->c->n_layers, h->c->d_ff > 0 ? h->c->d_ff : 1);
}

void nl_api_close(nl_api *h) {
    if (!h) return;
    nl_prune_mask_release(&h->mask);
    nl_forward_destroy(h->f);
    nl_tokenizer_close(h->tok);
    nl_model_close(h->m);
    free(h);
}

/* Every call that uses the model checks that the handle opened. */
static int ready(nl_api *h) {
    if (!h) return 0;
    if (!h->f) {
        if (!h->ctx.msg[0]) nl_errorf(&h->ctx, NL_EINVAL, "the model is not open");
        return 0;
    }
    clear_msg(h);
    return 1;
}
#define READY(h)                                         \
    do {                                                 \
        if (!(h)) return NL_ENOMEM;                      \
        if (!ready(h)) return NL_EINVAL;                 \
    } while (0)

int nl_api_set_threads(nl_api *h, int n_threads) {
    READY(h);
    if (n_threads < 0 || n_threads > 1024) return nl_errorf(&h->ctx, NL_EINVAL, "threads %d is outside 0..1024", n_threads);
    h->ctx.n_threads = n_threads;
    nl_ctx_apply_threads(&h->ctx);
    return NL_OK;
}

int nl_api_set_compute(nl_api *h, const char *compute) {
    READY(h);
    if (!compute || (strcmp(compute, "f32") && strcmp(compute, "bf16")))
        return nl_errorf(&h->ctx, NL_EINVAL, "compute must be f32 or bf16 (got '%s')", compute ? compute : "(null)");
    nl_forward_set_compute(h->f, !strcmp(compute, "bf16") ? NL_COMPUTE_BF16 : NL_COMPUTE_F32);
    return NL_OK;
}

int64_t nl_api_dim(const nl_api *h, const char *name) {
    if (!h || !h->f || !name) return -1;
    const nl_config *c = h->c;
    const struct { const char *name; int64_t v; } dims[] = {
        {"n_layers", c->n_layers}, {"d_model", c->d_model}, {"d_ff", c->d_ff}, {"n_heads", c->n_heads},
        {"n_kv_heads", c->n_kv_heads}, {"head_dim", c->head_dim}, {"vocab_size", c->vocab_size},
        {"max_pos", c->max_pos}, {"n_experts", c->n_experts}, {"gated", c->ffn_gated}, {"ctx", h->ctx_len},
        {"batch", h->batch}, {"has_tokenizer", h->tok != NULL},
        {"bos", h->tok && nl_tokenizer_bos(h->tok) >= 0 ? nl_tokenizer_bos(h->tok) : c->bos_id},
        {"eos", h->tok && nl_tokenizer_eos(h->tok) >= 0 ? nl_tokenizer_eos(h->tok) : c->eos_id},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (!strcmp(name, dims[i].name)) return dims[i].v;
    return -1;
}

const char *nl_api_str(const nl_api *h, const char *name) {
    if (!h || !h->f || !name) return NULL;
    if (!strcmp(name, "arch")) return nl_arch_name(h->c->arch);
    if (!strcmp(name, "model_type")) return h->c->model_type;
    if (!strcmp(name, "act")) return nl_act_name(h->c->act);
    if (!strcmp(name, "path")) return nl_model_path(h->m);
    if (!strcmp(name, "tokenizer")) return h->tok ? nl_tokenizer_path(h->tok) : "";
    if (!strcmp(name, "compute")) return nl_forward_compute(h->f) == NL_COMPUTE_BF16 ? "bf16" : "f32";
    return NULL;
}

/* ---- tokenizer ------------------------------------------------------------------------------ */

static int need_tokenizer(nl_api *h) {
    if (h->tok) return NL_OK;
    return nl_errorf(&h->ctx, NL_EINVAL, "model '%s' has no tokenizer (open it with a tokenizer path)", nl_model_path(h->m));
}

int nl_api_tokenize(nl_api *h, const char *text, size_t len, int add_special, int32_t *ids, int cap, int *n) {
    READY(h);
    if (!n || cap < 0 || (cap > 0 && !ids) || (len > 0 && !text)) return nl_errorf(&h->ctx, NL_EINVAL, "tokenize: bad arguments");
    *n = 0;
    nl_status st = need_tokenizer(h);
    if (st != NL_OK) return st;
    /* The dataset reader's way: the text without special tokens, then the template around it. */
    int32_t *body = NULL;
    int nb = 0;
    nl_encode_opts eo = {0};
    if ((st = nl_tokenizer_encode(&h->ctx, h->tok, text ? text : "", len, &eo, &body, &nb)) != NL_OK) return st;
    const int32_t *pre = NULL, *post = NULL;
    int n_pre = 0, n_post = 0;
    if (add_special) nl_tokenizer_template(h->tok, &pre, &n_pre, &post, &n_post);
    const int total = n_pre + nb + n_post;
    for (int i = 0; i < total && i < cap; i++)
        ids[i] = i < n_pre ? pre[i] : i < n_pre + nb ? body[i - n_pre] : post[i - n_pre - nb];
    free(body);
    *n = total;
    return NL_OK;
}

int nl_api_decode(nl_api *h, const int32_t *ids, int n, int skip_special, char *buf, size_t cap, size_t *len) {
    READY(h);
    if (!len || n < 0 || (n > 0 && !ids) || (cap > 0 && !buf)) return nl_errorf(&h->ctx, NL_EINVAL, "decode: bad arguments");
    *len = 0;
    nl_status st = need_tokenizer(h);
    if (st != NL_OK) return st;
    char *text = NULL;
    size_t tl = 0;
    if ((st = nl_tokenizer_decode(&h->ctx, h->tok, ids, n, skip_special, &text, &tl)) != NL_OK) return st;
    if (cap > 0) {
        size_t k = tl < cap - 1 ? tl : cap - 1;
        memcpy(buf, text, k);
        buf[k] = '\0';
    }
    free(text);
    *len = tl;
    return NL_OK;
}

/* ---- hook points ------------------------------------------------------------------------------ */

int nl_api_n_points(void) { return NL_HOOK_COUNT - 1; /* every point but "routing" (no tensor) */ }

static nl_hook_point point_at(int i) { return (nl_hook_point)(i < NL_HOOK_ROUTING ? i : i + 1); }

const char *nl_api_point(int i) {
    if (i < 0 || i >= nl_api_n_points()) return NULL;
    return nl_hook_point_name(point_at(i));
}

static nl_status parse_point(nl_api *h, const char *name, nl_hook_point *p) {
    for (int i = 0; name && i < nl_api_n_points(); i++)
        if (!strcmp(name, nl_api_point(i))) return *p = point_at(i), NL_OK;
    char known[512] = "";
    for (int i = 0; i < nl_api_n_points(); i++) {
        if (i) strcat(known, ", ");
        strcat(known, nl_api_point(i));
    }
    return nl_errorf(&h->ctx, NL_EINVAL, "unknown hook point '%s' (known: %s)", name ? name : "(null)", known);
}

static nl_status check_layer(nl_api *h, int layer, int allow_all) {
    if ((allow_all && layer == -1) || (layer >= 0 && layer < h->c->n_layers)) return NL_OK;
    return nl_errorf(&h->ctx, NL_EINVAL, "layer %d is outside the model's 0..%d", layer, h->c->n_layers - 1);
}

/* Width of p at layer l, or -1 with a message when the point does not fire there. */
static int point_width(nl_api *h, nl_hook_point p, int l) {
    const nl_config *c = h->c;
    const int moe = nl_config_is_moe_layer(c, l);
    switch (p) {
    case NL_HOOK_FFN_PRE:
    case NL_HOOK_FFN_UP:
    case NL_HOOK_FFN_ACT:
        if (moe) {
            nl_errorf(&h->ctx, NL_EINVAL, "hook point '%s' does not fire on layer %d: it is a mixture-of-experts layer",
                      nl_hook_point_name(p), l);
            return -1;
        }
        if (p == NL_HOOK_FFN_UP && !c->ffn_gated) {
            nl_errorf(&h->ctx, NL_EINVAL, "hook point 'ffn_up' exists only in gated FFNs ('%s' has a plain FFN)", nl_model_path(h->m));
            return -1;
        }
        return c->d_ff;
    case NL_HOOK_ROUTER_LOGITS:
        if (!moe) {
            nl_errorf(&h->ctx, NL_EINVAL, "hook point 'router_logits' fires only on mixture-of-experts layers, not layer %d", l);
            return -1;
        }
        return c->n_experts;
    case NL_HOOK_ATTN_PRE_O: return c->n_heads * c->head_dim;
    case NL_HOOK_ROUTING: nl_errorf(&h->ctx, NL_EINVAL, "hook point 'routing' has no tensor to hand out"); return -1;
    default: return c->d_model;
    }
}

int nl_api_point_width(nl_api *h, const char *point, int layer) {
    if (!h || !ready(h)) return -1;
    nl_hook_point p;
    if (parse_point(h, point, &p) != NL_OK || check_layer(h, layer, 0) != NL_OK) return -1;
    return point_width(h, p, layer);
}

int nl_api_hook_add(nl_api *h, const char *point, int layer, nl_api_hook_fn fn, void *user, int *id) {
    READY(h);
    if (id) *id = 0;
    if (!fn || !id) return nl_errorf(&h->ctx, NL_EINVAL, "hook_add: no function or no id pointer");
    nl_hook_point p;
    nl_status st = parse_point(h, point, &p);
    if (st == NL_OK) st = check_layer(h, layer, 1);
    if (st != NL_OK) return st;
    /* The point must exist on the layer (on some layer for -1). */
    int ok = 0;
    for (int l = layer < 0 ? 0 : layer; l < (layer < 0 ? h->c->n_layers : layer + 1) && !ok; l++) ok = point_width(h, p, l) > 0;
    if (!ok) return NL_EINVAL; /* point_width's message */
    clear_msg(h);
    if (h->n_hooks >= NL_API_MAX_HOOKS) return nl_errorf(&h->ctx, NL_EINVAL, "too many hooks (at most %d)", NL_API_MAX_HOOKS);
    h->hooks[h->n_hooks++] = (api_hook){++h->last_id, p, layer, fn, user};
    *id = h->last_id;
    return NL_OK;
}

int nl_api_hook_remove(nl_api *h, int id) {
    READY(h);
    for (int i = 0; i < h->n_hooks; i++)
        if (h->hooks[i].id == id) {
            memmove(h->hooks + i, h->hooks + i + 1, (size_t)(h->n_hooks - i - 1) * sizeof h->hooks[0]);
            h->n_hooks--;
            return NL_OK;
        }
    return nl_errorf(&h->ctx, NL_EINVAL, "no hook has id %d", id);
}

void nl_api_hook_clear(nl_api *h) {
    if (h) h->n_hooks = 0;
}

/* The library hook that calls a caller's hook. */
static nl_status call_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    const api_hook *k = user;
    const char *name = nl_hook_point_name(info->point);
    int rc = k->fn(k->user, name, info->layer, info->pos0, info->T, info->width, x);
    if (rc == 0) return NL_OK;
    return nl_errorf(ctx, NL_EINVAL, "the hook on '%s' layer %d stopped the run (it returned %d)", name, info->layer, rc);
}

/* The forward pass's registry = the prune intervener (when neurons are pruned), then the
 * caller's hooks in order. Observers added by record come after (nl_hooks_add). */
static nl_status build_hooks(nl_api *h) {
    nl_hooks *reg = nl_forward_hooks(h->f);
    nl_hooks_init(reg);
    if (h->n_pruned > 0 && nl_hooks_add(reg, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_prune_hook, &h->mask) != NL_OK)
        return nl_errorf(&h->ctx, NL_EINVAL, "too many hooks");
    for (int i = 0; i < h->n_hooks; i++)
        if (nl_hooks_add(reg, h->hooks[i].point, h->hooks[i].layer, NL_HOOK_INTERVENE, call_hook, &h->hooks[i]) != NL_OK)
            return nl_errorf(&h->ctx, NL_EINVAL, "too many hooks");
    return NL_OK;
}

/* ---- running -------------------------------------------------------------------------------- */

static nl_status check_tokens(nl_api *h, const int32_t *tokens, int T, int min_T) {
    if (!tokens || T < min_T || T > h->ctx_len)
        return nl_errorf(&h->ctx, NL_EINVAL, "%d tokens: a sequence holds %d to %d tokens (ctx)", T, min_T, h->ctx_len);
    const int V = h->c->vocab_size;
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return nl_errorf(&h->ctx, NL_EINVAL, "token %d (position %d) is outside the vocabulary 0..%d", tokens[t], t, V - 1);
    return NL_OK;
}

/* Runs tokens from an empty cache in chunks of the batch; logits (T, V) or NULL; nll (T-1) or NULL. */
static nl_status run_chunks(nl_api *h, const int32_t *tokens, int T, float *logits, double *nll) {
    nl_forward_reset(h->f);
    nl_status st = NL_OK;
    int32_t *targets = NULL;
    double *tmp = NULL;
    if (nll) {
        targets = malloc((size_t)T * sizeof *targets);
        tmp = malloc((size_t)T * sizeof *tmp);
        if (!targets || !tmp) st = nl_errorf(&h->ctx, NL_ENOMEM, "out of memory");
        for (int t = 0; st == NL_OK && t < T; t++) targets[t] = t + 1 < T ? tokens[t + 1] : -1;
    }
    const size_t V = (size_t)h->c->vocab_size;
    for (int s = 0; st == NL_OK && s < T; s += h->batch) {
        const int n = T - s < h->batch ? T - s : h->batch;
        if (nll) {
            st = nl_forward_nll(h->f, &h->ctx, tokens + s, targets + s, n, tmp + s);
        } else {
            st = nl_forward_run(h->f, &h->ctx, tokens + s, n, logits ? logits + (size_t)s * V : NULL);
        }
    }
    if (st == NL_OK && nll) memcpy(nll, tmp, (size_t)(T - 1) * sizeof *nll);
    free(targets);
    free(tmp);
    return st;
}

int nl_api_run(nl_api *h, const int32_t *tokens, int T, float *logits) {
    READY(h);
    nl_status st = check_tokens(h, tokens, T, 1);
    if (st == NL_OK) st = build_hooks(h);
    if (st == NL_OK) st = run_chunks(h, tokens, T, logits, NULL);
    return st;
}

int nl_api_nll(nl_api *h, const int32_t *tokens, int T, double *nll) {
    READY(h);
    if (!nll) return nl_errorf(&h->ctx, NL_EINVAL, "nll: no output buffer");
    nl_status st = check_tokens(h, tokens, T, 2);
    if (st == NL_OK) st = build_hooks(h);
    if (st == NL_OK) st = run_chunks(h, tokens, T, NULL, nll);
    return st;
}

typedef struct {
    const int *layers;
    int n_layers, T, width;
    float *out;        /* (n_layers, T, width) */
    unsigned char *seen; /* (n_layers) */
} record_state;

static nl_status record_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x) {
    record_state *r = user;
    for (int j = 0; j < r->n_layers; j++) {
        if (r->layers[j] != info->layer) continue;
        NL_ASSERT(info->width == r->width && info->pos0 + info->T <= r->T);
        memcpy(r->out + ((size_t)j * r->T + info->pos0) * r->width, x, (size_t)info->T * r->width * sizeof(float));
        r->seen[j] = 1;
    }
    return NL_OK;
}

int nl_api_record(nl_api *h, const char *point, const int32_t *tokens, int T, const int *layers, int n_layers, float *out) {
    READY(h);
    nl_hook_point p;
    nl_status st = parse_point(h, point, &p);
    if (st != NL_OK) return st;
    if (!layers || n_layers <= 0 || !out) return nl_errorf(&h->ctx, NL_EINVAL, "record: no layers or no output buffer");
    int width = -1;
    for (int j = 0; j < n_layers; j++) {
        if ((st = check_layer(h, layers[j], 0)) != NL_OK) return st;
        int w = point_width(h, p, layers[j]);
        if (w < 0) return NL_EINVAL;
        if (width >= 0 && w != width)
            return nl_errorf(&h->ctx, NL_EINVAL, "'%s' has %d columns at layer %d but %d at layer %d: record them apart", point, width,
                             layers[0], w, layers[j]);
        width = w;
    }
    if ((st = check_tokens(h, tokens, T, 1)) != NL_OK || (st = build_hooks(h)) != NL_OK) return st;
    unsigned char *seen = calloc((size_t)n_layers, 1);
    if (!seen) return nl_errorf(&h->ctx, NL_ENOMEM, "out of memory");
    record_state r = {layers, n_layers, T, width, out, seen};
    if (nl_hooks_add(nl_forward_hooks(h->f), p, -1, NL_HOOK_OBSERVE, record_hook, &r) != NL_OK)
        st = nl_errorf(&h->ctx, NL_EINVAL, "too many hooks");
    if (st == NL_OK) st = run_chunks(h, tokens, T, NULL, NULL);
    for (int j = 0; st == NL_OK && j < n_layers; j++)
        if (!seen[j]) st = nl_errorf(&h->ctx, NL_EINVAL, "hook point '%s' did not fire on layer %d", point, layers[j]);
    free(seen);
    build_hooks(h); /* drop the observer */
    return st;
}

int nl_api_prune(nl_api *h, const int32_t *layers, const int32_t *neurons, int n) {
    READY(h);
    if (n < 0 || (n > 0 && (!layers || !neurons))) return nl_errorf(&h->ctx, NL_EINVAL, "prune: bad arguments");
    const int L = h->c->n_layers, F = h->c->d_ff;
    for (int i = 0; i < n; i++) {
        if (layers[i] < 0 || layers[i] >= L)
            return nl_errorf(&h->ctx, NL_EINVAL, "pruned neuron %d: layer %d is outside the model's 0..%d", i, layers[i], L - 1);
        if (nl_config_is_moe_layer(h->c, layers[i]))
            return nl_errorf(&h->ctx, NL_EINVAL, "pruned neuron %d: layer %d is a mixture-of-experts layer", i, layers[i]);
        if (neurons[i] < 0 || neurons[i] >= F)
            return nl_errorf(&h->ctx, NL_EINVAL, "pruned neuron %d: neuron %d is outside 0..%d", i, neurons[i], F - 1);
    }
    uint8_t *flags = calloc((size_t)F, 1);
    if (!flags) return nl_errorf(&h->ctx, NL_ENOMEM, "out of memory");
    nl_prune_mask_clear(&h->mask);
    for (int l = 0; l < L; l++) {
        int any = 0;
        memset(flags, 0, (size_t)F);
        for (int i = 0; i < n; i++)
            if (layers[i] == l) flags[neurons[i]] = 1, any = 1;
        if (any) nl_prune_mask_set_layer(&h->mask, l, flags);
    }
    free(flags);
    h->n_pruned = nl_prune_mask_total(&h->mask);
    return NL_OK;
}

/* ---- datasets and perplexity ------------------------------------------------------------------ */

int nl_api_dataset_open(nl_api *h, const char *path, nl_api_dataset **out) {
    READY(h);
    if (!out) return nl_errorf(&h->ctx, NL_EINVAL, "dataset_open: no output pointer");
    *out = NULL;
    if (!path) return nl_errorf(&h->ctx, NL_EINVAL, "dataset_open: no path");
    nl_api_dataset *d = calloc(1, sizeof *d);
    if (!d) return nl_errorf(&h->ctx, NL_ENOMEM, "out of memory");
    nl_status st = nl_dataset_load(&h->ctx, path, h->tok, h->c->vocab_size, &d->ds);
    if (st != NL_OK) {
        free(d);
        return st;
    }
    d->h = h;
    *out = d;
    return NL_OK;
}

void nl_api_dataset_close(nl_api_dataset *d) {
    if (!d) return;
    nl_dataset_destroy(d->ds);
    free(d);
}

int nl_api_dataset_size(const nl_api_dataset *d) { return d ? d->ds->n_docs : 0; }

int nl_api_dataset_doc(const nl_api_dataset *d, int i, const int32_t **tokens, int *n, int *prompt_len, int *score_from,
                       const char **label, int *line) {
    if (!d || i < 0 || i >= d->ds->n_docs) return NL_EINVAL;
    const nl_doc *x = &d->ds->docs[i];
    if (tokens) *tokens = x->tokens;
    if (n) *n = x->n_tokens;
    if (prompt_len) *prompt_len = x->prompt_len;
    if (score_from) *score_from = x->score_from;
    if (label) *label = x->label;
    if (line) *line = x->line;
    return NL_OK;
}

int nl_api_ppl(nl_api *h, const nl_api_dataset *d, int stride, double *nll, int64_t *count) {
    READY(h);
    if (!d || !nll || !count) return nl_errorf(&h->ctx, NL_EINVAL, "ppl: no dataset or no output buffers");
    if (d->h != h) return nl_errorf(&h->ctx, NL_EINVAL, "ppl: the dataset was opened with another model handle");
    if (stride > h->ctx_len) return nl_errorf(&h->ctx, NL_EINVAL, "stride %d exceeds the context %d", stride, h->ctx_len);
    nl_status st = build_hooks(h);
    if (st != NL_OK) return st;
    nl_ppl_result r;
    memset(&r, 0, sizeof r);
    if ((st = nl_ppl_run(&h->ctx, h->f, d->ds, stride, NULL, &r)) == NL_OK)
        for (int i = 0; i < d->ds->n_docs; i++) nll[i] = r.by_doc[i].nll, count[i] = r.by_doc[i].n;
    nl_ppl_result_release(&r);
    return st;
}

/* ---- weights ---------------------------------------------------------------------------------- */

typedef struct {
    const float *w; /* matrix (nl_mat) or vector */
    int rows, cols;
    int trans, ld;
} weight_view;

static nl_status find_weight(nl_api *h, const char *name, int layer, weight_view *v) {
    memset(v, 0, sizeof *v);
    if (!name) return nl_errorf(&h->ctx, NL_EINVAL, "no weight name");
    nl_status st;
    if (!strcmp(name, "lm_head") || !strcmp(name, "final_norm")) {
        nl_head hd;
        if ((st = nl_model_head(&h->ctx, h->m, &hd)) != NL_OK) return st;
        if (name[0] == 'l') *v = (weight_view){hd.lm_head.w, hd.lm_head.n_out, hd.lm_head.n_in, hd.lm_head.trans, hd.lm_head.ld};
        else *v = (weight_view){hd.norm_w, 1, h->c->d_model, 0, h->c->d_model};
        return NL_OK;
    }
    if (strcmp(name, "w_out") && strcmp(name, "w_up") && strcmp(name, "w_gate") && strcmp(name, "b_up"))
        return nl_errorf(&h->ctx, NL_EINVAL, "unknown weight '%s' (known: w_out, w_up, w_gate, b_up, lm_head, final_norm)", name);
    if ((st = check_layer(h, layer, 0)) != NL_OK) return st;
    if (nl_config_is_moe_layer(h->c, layer))
        return nl_errorf(&h->ctx, NL_EINVAL, "layer %d is a mixture-of-experts layer: it has no single '%s'", layer, name);
    nl_layer w;
    if ((st = nl_model_layer(&h->ctx, h->m, layer, &w)) != NL_OK) return st;
    const nl_mat *m = !strcmp(name, "w_out") ? &w.w_down : !strcmp(name, "w_up") ? &w.w_up : !strcmp(name, "w_gate") ? &w.w_gate : NULL;
    if (m && m->w) *v = (weight_view){m->w, m->n_out, m->n_in, m->trans, m->ld};
    else if (!m && w.b_up) *v = (weight_view){w.b_up, 1, h->c->d_ff, 0, h->c->d_ff};
    if (!v->w) return nl_errorf(&h->ctx, NL_EINVAL, "'%s' has no weight '%s'", nl_model_path(h->m), name);
    return NL_OK;
}

int nl_api_weight_shape(nl_api *h, const char *name, int layer, int64_t *rows, int64_t *cols) {
    READY(h);
    weight_view v;
    nl_status st = find_weight(h, name, layer, &v);
    if (st != NL_OK) return st;
    if (rows) *rows = v.rows;
    if (cols) *cols = v.cols;
    return NL_OK;
}

int nl_api_weight(nl_api *h, const char *name, int layer, float *out, size_t cap) {
    READY(h);
    weight_view v;
    nl_status st = find_weight(h, name, layer, &v);
    if (st != NL_OK) return st;
    if (!out || cap < (size_t)v.rows * v.cols)
        return nl_errorf(&h->ctx, NL_EINVAL, "weight '%s' needs %lld floats, the buffer holds %zu", name, (long long)v.rows * v.cols, cap);
    for (int r = 0; r < v.rows; r++)
        if (!v.trans) {
            memcpy(out + (size_t)r * v.cols, v.w + (size_t)r * v.ld, (size_t)v.cols * sizeof(float));
        } else {
            for (int c = 0; c < v.cols; c++) out[(size_t)r * v.cols + c] = v.w[(size_t)c * v.ld + r];
        }
    return NL_OK;
}
