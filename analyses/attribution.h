/* attribution.h — direct logit attribution of FFN neurons: the tokens a neuron's output
 * direction promotes and suppresses through the unembedding (the engine of `neuronlab attribute`).
 *
 * Definition (README "Direct logit attribution"): for neuron i of layer l, with W_out[:, i] (D)
 * its output vector (DESIGN §3) and W_U (V, D) the LM head,
 *   logit(v) = Σ_d W_U[v, d] · W_out[d, i]                      (default)
 *   logit(v) = Σ_d W_U[v, d] · g[d] · W_out[d, i]               (norm_weight: g = the final
 *                                                                 norm's weight)
 * the change of the output logits per unit of activation a_i, ignoring the final norm's
 * scaling by the residual's RMS (a per-token constant: it does not change the ranking) and its
 * bias / mean subtraction; norm_weight includes the norm's per-dimension gain. The LM head's
 * bias is not part of it. Promoted: the top tokens by logit, largest first (rank 1, 2, …);
 * suppressed: the bottom ones, most negative first (rank −1, −2, …). Ties: the lower token id.
 * Mixture-of-experts layers have no single W_out: refused (NL_EUNSUPPORTED naming the layer).
 *
 * Table (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   neuron_attribution(run_id, layer, neuron, rank, token_id, token, logit)
 *       PK (run_id, layer, neuron, rank); rank > 0 promoted, rank < 0 suppressed (|rank| ≤ top);
 *       token = the token's text as the tokenizer decodes it mid-text (NULL without a tokenizer).
 * The run: kind "attribute", model from the options (default the model's path), source "ability
 * run N" when the neurons come from an ability run, params {"top":N,"norm_weight":true|false,
 * "neurons":[[l,i],…]} (exact text; "ability_run":N,"per_ability":K added with an ability run).
 * One transaction at the end.
 * Checked by tests/test_lens.c (against a brute-force sum over the stored weights) and
 * tests/lens_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_ATTRIBUTION_H
#define NEURONLAB_ANALYSES_ATTRIBUTION_H

#include "neuronlab/model.h"
#include "neuronlab/results.h"

/* The text of token id (malloc'd, owned by the caller), or NULL when unknown. */
typedef char *(*nl_attribution_decode_fn)(void *user, int id);

typedef struct {
    int top;                 /* promoted and suppressed tokens kept per neuron, ≥ 1; default 20 */
    int norm_weight;         /* multiply by the final norm's weight; default 0 */
    const char *model;       /* provenance (NULL: the model's path) */
    const char *source;      /* provenance: runs.source (NULL: none) */
    const char *extra_params;/* NULL, or JSON members appended to params (",\"ability_run\":3") */
    nl_attribution_decode_fn decode; /* NULL: no token texts (token NULL) */
    void *decode_user;
} nl_attribution_opts;
void nl_attribution_opts_init(nl_attribution_opts *o);

typedef struct {
    int layer, neuron;
} nl_neuron_ref;

typedef struct {
    int layer, neuron, rank, token_id;
    float logit;
    char *token; /* owned; NULL without a tokenizer */
} nl_attribution_row;

typedef struct {
    int64_t run_id;            /* -1 without a database */
    nl_attribution_row *rows;  /* (n_rows) per neuron: ranks 1..top then −1..−top; owned */
    int n_rows;
} nl_attribution_result;
void nl_attribution_result_release(nl_attribution_result *r);

/* logits (V), caller-owned: the definition above for neuron `neuron` of layer `layer`.
 * NL_EINVAL (layer or neuron out of range, naming the model's ranges), NL_EUNSUPPORTED (MoE layer). */
nl_status nl_attribution_logits(nl_ctx *ctx, nl_model *m, int layer, int neuron, int norm_weight, float *logits);

nl_status nl_attribution_create_tables(nl_ctx *ctx, nl_results *db);

/* Attributes n neurons (each checked first: nothing is written for a bad one); opts->decode
 * gives the token texts. db may be NULL. */
nl_status nl_attribution_run(nl_ctx *ctx, const nl_attribution_opts *opts, nl_model *m, const nl_neuron_ref *neurons, int n, nl_results *db, nl_attribution_result *out);

#endif
