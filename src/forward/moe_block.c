/* moe_block.c — the native mixture-of-experts FFN (nl_ffn_moe, forward.h) and its top-k.
 *
 * One call routes T tokens: router logits z = x·W_routerᵀ (one GEMM), p = softmax(z) per
 * token, the k largest p (nl_moe_topk, ties as torch.topk on CPU), weights renormalised when
 * the config says so; then the tokens are grouped by expert and each selected expert runs one
 * gated FFN over its own tokens (three GEMMs on the gathered rows); unselected experts cost
 * nothing. Each expert's output rows, times their routing weight, are added to the output of
 * their token in increasing expert order (the order Hugging Face's index_add_ loop uses).
 * Qwen2-MoE's shared expert runs on every token and adds sigmoid(x·w_shared_gate)·FFN_s(x).
 * Hook points: the forward pass fires FFN_IN and FFN_OUT around this block; FFN_PRE, FFN_UP and
 * FFN_ACT are not fired on MoE layers (hooks.h). The block fires ROUTER_LOGITS on the logits
 * before the softmax (interveners may edit them) and, when an observer wants ROUTING, keeps a
 * copy of the logits, scatters each expert's activation rows into (T, k, d_expert) by slot, keeps
 * the shared expert's activations and gate, and fires ROUTING with nl_moe_routing; without such
 * an observer none of these buffers is allocated or written.
 * Checked by tests/test_moe_models.c (PyTorch fixtures for mixtral, qwen2_moe, qwen3_moe,
 * routing identical to the reference, top-k ties against torch.topk).
 */
#include "forward/moe_block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuronlab/forward.h"
#include "neuronlab/ops.h"

struct nl_moe_scratch {
    int max_T, E, k, D, Fmax;
    float *logits; /* (T, E) router logits, then probabilities */
    int *sel;      /* (T, k) chosen experts per token, largest probability first */
    float *wts;    /* (T, k) their weights */
    int *count;    /* (E + 1) rows per expert, then offsets */
    int *rows;     /* (T·k) token of each grouped row, grouped by expert */
    float *rw;     /* (T·k) routing weight of each grouped row */
    float *xg;     /* (T, D) gathered inputs of one expert */
    float *g, *u;  /* (T, Fmax) gate / up (then activation) of one expert or of the shared expert */
    float *y;      /* (T, D) output of one expert or of the shared expert */
    float *sg;     /* (T) shared-expert gate logits */
    int *rslot;    /* (T·k) slot j of each grouped row (experts[t, j]) */
    /* ROUTING observers only, allocated at the first call that has one: */
    float *zc;     /* (T, E) router logits (before the softmax overwrites them) */
    float *act;    /* (T, k, Fe) expert activations by slot */
    float *shact;  /* (T, Fs) shared expert activations */
    float *shg;    /* (T) shared expert gate sigmoid(x·w_shared_gate) */
};

nl_moe_scratch *nl_moe_scratch_create(const nl_config *c, int max_T) {
    nl_moe_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    const size_t T = (size_t)max_T, E = (size_t)c->n_experts, k = (size_t)c->n_experts_per_tok, D = (size_t)c->d_model;
    const int Fmax = c->d_expert > c->d_shared ? c->d_expert : c->d_shared;
    s->max_T = max_T, s->E = c->n_experts, s->k = c->n_experts_per_tok, s->D = c->d_model, s->Fmax = Fmax;
    s->logits = malloc(T * E * sizeof(float));
    s->sel = malloc(T * k * sizeof(int));
    s->wts = malloc(T * k * sizeof(float));
    s->count = malloc((E + 1) * sizeof(int));
    s->rows = malloc(T * k * sizeof(int));
    s->rw = malloc(T * k * sizeof(float));
    s->xg = malloc(T * D * sizeof(float));
    s->g = malloc(T * (size_t)Fmax * sizeof(float));
    s->u = malloc(T * (size_t)Fmax * sizeof(float));
    s->y = malloc(T * D * sizeof(float));
    s->sg = malloc(T * sizeof(float));
    s->rslot = malloc(T * k * sizeof(int));
    if (!s->rslot || !s->logits || !s->sel || !s->wts || !s->count || !s->rows || !s->rw || !s->xg || !s->g || !s->u || !s->y ||
        !s->sg) {
        nl_moe_scratch_destroy(s);
        return NULL;
    }
    return s;
}

void nl_moe_scratch_destroy(nl_moe_scratch *s) {
    if (!s) return;
    free(s->logits); free(s->sel); free(s->wts); free(s->count); free(s->rows); free(s->rw);
    free(s->xg); free(s->g); free(s->u); free(s->y); free(s->sg); free(s->rslot);
    free(s->zc); free(s->act); free(s->shact); free(s->shg);
    free(s);
}

/* ---- top-k as torch.topk on CPU ---------------------------------------------------------
 *
 * PyTorch's CPU topk (aten topk_impl_loop) fills a vector of (value, index) pairs and, with the
 * comparator "a before b iff a is NaN and b is not, or a > b", calls std::partial_sort(first,
 * first+k, last) when k·64 ≤ n, else std::nth_element(first, first+k-1, last) followed by
 * std::sort(first, first+k-1). Equal values are thus ordered by whatever those algorithms do,
 * not by index. The functions below follow libstdc++'s algorithms step by step (introselect
 * with median-of-three pivots, introsort with a 16-element insertion-sort threshold, heap
 * select/sort), so ties pick the same experts in the same order as PyTorch built with
 * libstdc++ (Linux wheels and distribution packages). */

typedef struct { float v; int i; } kv;

static int before(kv a, kv b) { return (isnan(a.v) && !isnan(b.v)) || a.v > b.v; }
static void swap_kv(kv *a, kv *b) { kv t = *a; *a = *b; *b = t; }
static int lg2(int n) { int r = 0; while (n >>= 1) r++; return r; }

static void push_heap(kv *f, int hole, int top, kv val) {
    int parent = (hole - 1) / 2;
    while (hole > top && before(f[parent], val)) {
        f[hole] = f[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    f[hole] = val;
}

static void adjust_heap(kv *f, int hole, int len, kv val) {
    const int top = hole;
    int child = hole;
    while (child < (len - 1) / 2) {
        child = 2 * (child + 1);
        if (before(f[child], f[child - 1])) child--;
        f[hole] = f[child];
        hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
        child = 2 * (child + 1);
        f[hole] = f[child - 1];
        hole = child - 1;
    }
    push_heap(f, hole, top, val);
}

static void make_heap(kv *f, int len) {
    if (len < 2) return;
    for (int parent = (len - 2) / 2;; parent--) {
        adjust_heap(f, parent, len, f[parent]);
        if (parent == 0) return;
    }
}

static void pop_heap(kv *f, int len, kv *result) {
    kv val = *result;
    *result = f[0];
    adjust_heap(f, 0, len, val);
}

static void heap_select(kv *f, int middle, int last) {
    make_heap(f, middle);
    for (int i = middle; i < last; i++)
        if (before(f[i], f[0])) pop_heap(f, middle, &f[i]);
}

static void sort_heap(kv *f, int len) {
    while (len > 1) {
        len--;
        pop_heap(f, len, &f[len]);
    }
}

static void move_median_to_first(kv *result, kv *a, kv *b, kv *c) {
    if (before(*a, *b)) {
        if (before(*b, *c)) swap_kv(result, b);
        else if (before(*a, *c)) swap_kv(result, c);
        else swap_kv(result, a);
    } else if (before(*a, *c)) swap_kv(result, a);
    else if (before(*b, *c)) swap_kv(result, c);
    else swap_kv(result, b);
}

static kv *unguarded_partition(kv *first, kv *last, const kv *pivot) {
    for (;;) {
        while (before(*first, *pivot)) first++;
        last--;
        while (before(*pivot, *last)) last--;
        if (!(first < last)) return first;
        swap_kv(first, last);
        first++;
    }
}

static kv *partition_pivot(kv *first, kv *last) {
    kv *mid = first + (last - first) / 2;
    move_median_to_first(first, first + 1, mid, last - 1);
    return unguarded_partition(first + 1, last, first);
}

static void unguarded_linear_insert(kv *last) {
    kv val = *last;
    kv *next = last - 1;
    while (before(val, *next)) {
        *last = *next;
        last = next;
        next--;
    }
    *last = val;
}

static void insertion_sort(kv *first, kv *last) {
    if (first == last) return;
    for (kv *i = first + 1; i != last; i++) {
        if (before(*i, *first)) {
            kv val = *i;
            memmove(first + 1, first, (size_t)(i - first) * sizeof *first);
            *first = val;
        } else {
            unguarded_linear_insert(i);
        }
    }
}

static void introselect(kv *first, kv *nth, kv *last, int depth) {
    while (last - first > 3) {
        if (depth == 0) {
            heap_select(first, (int)(nth - first) + 1, (int)(last - first));
            swap_kv(first, nth);
            return;
        }
        depth--;
        kv *cut = partition_pivot(first, last);
        if (cut <= nth) first = cut;
        else last = cut;
    }
    insertion_sort(first, last);
}

static void introsort_loop(kv *first, kv *last, int depth) {
    while (last - first > 16) {
        if (depth == 0) {
            heap_select(first, (int)(last - first), (int)(last - first));
            sort_heap(first, (int)(last - first));
            return;
        }
        depth--;
        kv *cut = partition_pivot(first, last);
        introsort_loop(cut, last, depth);
        last = cut;
    }
}

static void std_sort(kv *first, kv *last) {
    if (first == last) return;
    introsort_loop(first, last, lg2((int)(last - first)) * 2);
    if (last - first > 16) {
        insertion_sort(first, first + 16);
        for (kv *i = first + 16; i != last; i++) unguarded_linear_insert(i);
    } else {
        insertion_sort(first, last);
    }
}

void nl_moe_topk(const float *p, int n, int k, int *idx, float *val) {
    NL_ASSERT(k >= 1 && k <= n && n <= NL_MOE_MAX_EXPERTS);
    kv q[NL_MOE_MAX_EXPERTS];
    for (int j = 0; j < n; j++) q[j] = (kv){p[j], j};
    if ((int64_t)k * 64 <= n) {
        heap_select(q, k, n);
        sort_heap(q, k);
    } else {
        introselect(q, q + k - 1, q + n, lg2(n) * 2);
        std_sort(q, q + k - 1);
    }
    for (int j = 0; j < k; j++) {
        idx[j] = q[j].i;
        if (val) val[j] = q[j].v;
    }
}

/* ---- routing ------------------------------------------------------------------------------ */

void nl_moe_route(const nl_config *c, float *logits, int T, int *sel, float *wts) {
    const int E = c->n_experts, k = c->n_experts_per_tok;
#pragma omp parallel for schedule(static) if ((int64_t)T * E > NL_PAR_MIN)
    for (int t = 0; t < T; t++) {
        float *z = logits + (size_t)t * E;
        float mx = z[0];
        for (int e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
        double sum = 0;
        for (int e = 0; e < E; e++) sum += (double)expf(z[e] - mx);
        const float inv = (float)(1.0 / sum);
        for (int e = 0; e < E; e++) z[e] = expf(z[e] - mx) * inv; /* p = softmax(z), in place */
        float *w = wts + (size_t)t * k;
        nl_moe_topk(z, E, k, sel + (size_t)t * k, w);
        if (c->norm_topk_prob) {
            float s = 0;
            for (int j = 0; j < k; j++) s += w[j];
            for (int j = 0; j < k; j++) w[j] /= s;
        }
    }
}

/* ---- the block ----------------------------------------------------------------------------- */

/* g (n, F) = act(g) ⊙ u */
static void glu(float *g, const float *u, int64_t n, nl_act act) {
    nl_act_glu(g, u, n, act);
}

nl_status nl_ffn_moe(void *user, nl_ctx *ctx, const nl_ffn_call *call, const float *x, float *out) {
    const nl_config *c = call->config;
    const nl_layer *w = call->w;
    const int T = call->T, D = call->D;
    if (!w->moe || !w->experts || c->n_experts <= 0)
        return nl_errorf(ctx, NL_EINVAL, "layer %d is not a mixture-of-experts layer", call->layer);
    nl_moe_scratch *s = user, *own = NULL;
    if (!s || s->max_T < T || s->E != c->n_experts || s->k != c->n_experts_per_tok || s->D != D) {
        if (!(s = own = nl_moe_scratch_create(c, T)))
            return nl_errorf(ctx, NL_ENOMEM, "layer %d: out of memory routing %d tokens", call->layer, T);
    }
    const int E = c->n_experts, k = c->n_experts_per_tok, Fe = c->d_expert, Fs = c->d_shared;

    nl_matmul(s->logits, E, x, D, T, &w->router, NULL);
    nl_status st = NL_OK;
    if (call->hooks && (st = nl_ffn_fire(call, ctx, NL_HOOK_ROUTER_LOGITS, E, s->logits)) != NL_OK) goto done;
    /* a ROUTING observer gets the logits, the expert activations by slot and the shared part */
    const int obs = call->hooks && nl_hooks_wants(call->hooks, NL_HOOK_ROUTING, call->layer);
    if (obs && !s->zc) {
        const size_t mT = (size_t)s->max_T;
        s->zc = malloc(mT * E * sizeof(float));
        s->act = malloc(mT * k * (size_t)(Fe > 0 ? Fe : 1) * sizeof(float));
        s->shact = malloc(mT * (size_t)(Fs > 0 ? Fs : 1) * sizeof(float));
        s->shg = malloc(mT * sizeof(float));
        if (!s->zc || !s->act || !s->shact || !s->shg) {
            free(s->zc), free(s->act), free(s->shact), free(s->shg);
            s->zc = s->act = s->shact = s->shg = NULL;
            st = nl_errorf(ctx, NL_ENOMEM, "layer %d: out of memory keeping the routing of %d tokens", call->layer, T);
            goto done;
        }
    }
    if (obs) memcpy(s->zc, s->logits, (size_t)T * E * sizeof(float));
    nl_moe_route(c, s->logits, T, s->sel, s->wts);

    /* group the (token, slot) pairs by expert: counting sort, tokens ascending within an expert */
    memset(s->count, 0, (size_t)(E + 1) * sizeof(int));
    for (int64_t i = 0; i < (int64_t)T * k; i++) s->count[s->sel[i] + 1]++;
    for (int e = 0; e < E; e++) s->count[e + 1] += s->count[e];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const int e = s->sel[(size_t)t * k + j], r = s->count[e]++;
            s->rows[r] = t;
            s->rw[r] = s->wts[(size_t)t * k + j];
            s->rslot[r] = j;
        }
    for (int e = E; e > 0; e--) s->count[e] = s->count[e - 1]; /* back to offsets: count[e] = first row of e */
    s->count[0] = 0;

    memset(out, 0, (size_t)T * D * sizeof(float));
    for (int e = 0; e < E; e++) {
        const int r0 = s->count[e], n = s->count[e + 1] - r0;
        if (n == 0) continue; /* an expert no token chose costs nothing */
        const nl_expert_mats *ex = &w->experts[e];
        for (int r = 0; r < n; r++) memcpy(s->xg + (size_t)r * D, x + (size_t)s->rows[r0 + r] * D, (size_t)D * sizeof(float));
        nl_matmul(s->g, Fe, s->xg, D, n, &ex->w_gate, NULL);
        nl_matmul(s->u, Fe, s->xg, D, n, &ex->w_up, NULL);
        glu(s->g, s->u, (int64_t)n * Fe, c->act);
        if (obs)
            for (int r = 0; r < n; r++)
                memcpy(s->act + ((size_t)s->rows[r0 + r] * k + (size_t)s->rslot[r0 + r]) * Fe, s->g + (size_t)r * Fe,
                       (size_t)Fe * sizeof(float));
        nl_matmul(s->y, D, s->g, Fe, n, &ex->w_down, NULL);
        /* one row per token within an expert: rows never collide, so the scatter runs in parallel */
#pragma omp parallel for schedule(static) if ((int64_t)n * D > NL_PAR_MIN)
        for (int r = 0; r < n; r++) {
            float *o = out + (size_t)s->rows[r0 + r] * D;
            const float *yr = s->y + (size_t)r * D, wt = s->rw[r0 + r];
            for (int i = 0; i < D; i++) o[i] += yr[i] * wt;
        }
    }
    if (Fs > 0) {
        nl_matmul(s->g, Fs, x, D, T, &w->sh_gate, NULL);
        nl_matmul(s->u, Fs, x, D, T, &w->sh_up, NULL);
        glu(s->g, s->u, (int64_t)T * Fs, c->act);
        if (obs) memcpy(s->shact, s->g, (size_t)T * Fs * sizeof(float));
        nl_matmul(s->y, D, s->g, Fs, T, &w->sh_down, NULL);
        nl_matmul(s->sg, 1, x, D, T, &w->sh_router, NULL);
#pragma omp parallel for schedule(static) if ((int64_t)T * D > NL_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float gate = 1.0f / (1.0f + expf(-s->sg[t]));
            float *o = out + (size_t)t * D;
            const float *yr = s->y + (size_t)t * D;
            for (int i = 0; i < D; i++) o[i] += gate * yr[i];
            if (obs) s->shg[t] = gate;
        }
    }
    if (obs) {
        const nl_moe_routing mr = {E, k, (const int32_t *)s->sel, s->wts, s->zc, s->logits, Fe, s->act,
                                   Fs > 0 ? Fs : 0, Fs > 0 ? s->shact : NULL, Fs > 0 ? s->shg : NULL};
        nl_hook_info info = {NL_HOOK_ROUTING, call->layer, T, k, call->pos0, call->tokens, &mr, 0};
        st = nl_hooks_fire(call->hooks, ctx, &info, s->wts);
    }
done:
    nl_moe_scratch_destroy(own);
    return st;
}
