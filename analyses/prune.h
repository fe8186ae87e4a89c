/* prune.h — pruning ability neurons: perplexity of every ability with one ability's top set
 * zeroed, against same-size random sets (the engine of `neuronlab prune`).
 *
 * Definition (README "Definitions"): the top sets come from a complete ability run
 * (analyses/ability.h, nl_ability_sets: Lr recorded layers, F neurons per layer).
 *   passes       one unpruned base pass; per pruned ability A one pass with A's top set zeroed:
 *                for every token, at NL_HOOK_FFN_ACT of each recorded layer sets.layers[j],
 *                a[:, i] = 0 for every i with sets.member[(A·Lr + j)·F + i] (the input of the
 *                down projection, so neuron i contributes nothing to the FFN output);
 *                per seed s = 0 … S−1 (S ≥ 1, default 3) one random-control pass.
 *   random sets  the same per-layer counts sets.count[A·Lr + j] drawn uniformly among the
 *                layer's non-excluded neurons (sets.excluded): neuron i of model layer l gets
 *                the priority p(s, l, i) = mix(s ⊕ mix(l·2^32 + i)) (mix = splitmix64's
 *                finaliser, on 64-bit values) and the k eligible neurons with the lowest
 *                priorities are chosen (ties by the lower index). The set depends on
 *                (seed, layer, k, the layer's exclusions) only — never on the ability beyond its
 *                counts — and the sets of one seed are nested across k. Abilities with identical count vectors share their
 *                random passes (with the per-layer scope every ability has the same counts, so S
 *                random passes are made in all); their rows are still written for each ability.
 *   evaluated    the documents scored: all of ds, or with opts.eval_docs only the flagged ones
 *                (nl_prune_heldout flags the documents an ability run's --split held out, so
 *                the neurons are judged on documents they were not selected on); opts.eval
 *                names which for the params: "heldout" (the held-out half), "selection" (the
 *                run has no split: the very documents the sets were chosen on), "file" (another
 *                dataset, opts.eval_file) or "all".
 *   user sets    nl_prune_sets_from_file builds sets from a file of (layer, neuron) pairs
 *                instead of an ability run (run_id 0): every model layer recorded, nothing
 *                excluded, one "ability" per set name; a set need not be a dataset label (its
 *                row then has no own-label column: diag −1).
 *   metric       per (pass, evaluated label): ppl = exp(mean nll) over the predictions of the
 *                documents with that label (perplexity.h; label '' = all documents), and
 *                rel_change = (ppl − ppl_base) / ppl_base against the base pass on the same label.
 *   columns      the evaluated labels: the dataset's non-empty labels in byte order, then ''
 *                (all documents). Each pruned ability needs at least one document labelled
 *                with it; labels that are no ability of the run are evaluated too.
 *   control      per (pruned ability, label): mean, sample sd (n − 1; 0 for one seed), min and
 *                max of rel_change over the random seeds.
 * Zeroing leaves every other value untouched, so an empty set reproduces nl_ppl_run bit for bit.
 * Pass order: base; then for each pruned ability (in the order asked for; default the run's
 * byte order) its pass, followed by the random passes of its count vector when that vector is
 * new. The zeroed sets never depend on the thread count or the batch size (the forward pass's
 * own sums may change in the last digits with the thread count: ~1e-6 relative on stories260K).
 *
 * Tables (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   prune_effect(run_id INTEGER NOT NULL, pruned TEXT NOT NULL ('' for the base pass),
 *       control TEXT NOT NULL ('none' | 'ability' | 'random'), seed INTEGER NOT NULL (-1 unless
 *       random), label TEXT NOT NULL ('' = all documents), neurons INTEGER NOT NULL (neurons
 *       zeroed, summed over layers), tokens INTEGER NOT NULL (predictions), nll REAL (mean, nats;
 *       NULL when tokens = 0), ppl REAL, rel_change REAL (NULL when either ppl is NULL),
 *       PRIMARY KEY (run_id, pruned, control, seed, label))
 *   prune_control(run_id INTEGER NOT NULL, pruned TEXT NOT NULL, label TEXT NOT NULL,
 *       seeds INTEGER NOT NULL, mean REAL, sd REAL, min REAL, max REAL,
 *       PRIMARY KEY (run_id, pruned, label))
 * The run (kind "prune", written by nl_prune_run): model = the model path, dataset = the data
 * path (both from the options, default the model's and the dataset's), source = the scores
 * run's activation file (the neurons file for user sets), params {"scores_run":N|null,
 * "method":M,"symmetric":B,"top":F,"scope":"layer"|"global","seeds":S,"abilities":[…],"ctx":C,
 * "stride":S,"batch":B,"eval":"heldout"|"selection"|"file"|"all","eval_docs":N[,"eval_file":P]
 * [,"neurons":{"file":P,"fnv1a":"16 hex digits of the file's FNV-1a 64","sets":{"name":n,…},
 * "list":[[layer,neuron],…] (only when ≤ 256 neurons in all)}]}.
 * Each pass's rows are committed in their own transaction as soon as it is computed (a random
 * pass: the 'random' rows of every ability sharing its counts); a count vector's prune_control
 * rows are committed when its last seed is done. An interrupted run keeps every finished pass.
 * Checked by tests/test_prune.c (the intervener, random sets, empty sets = ppl bit for bit,
 * tables on the fixture model) and tests/prune_cli.sh (stories260K end to end).
 */
#ifndef NEURONLAB_ANALYSES_PRUNE_H
#define NEURONLAB_ANALYSES_PRUNE_H

#include "analyses/ability.h"
#include "neuronlab/dataset.h"
#include "neuronlab/forward.h"
#include "neuronlab/perplexity.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

/* ---- the pruning intervener ---------------------------------------------------------- */

/* Fixed neurons to zero per layer, for every token. Caller-owned: nl_prune_mask_init /
 * nl_prune_mask_release. */
typedef struct {
    int n_layers; /* L: layers of the model */
    int d_ff;     /* F */
    int *count;   /* (L) neurons zeroed in each layer (0: the layer is left untouched) */
    int *index;   /* (L, F) row l: the count[l] zeroed neurons, ascending, then unused */
} nl_prune_mask;

/* An empty mask for L layers of F neurons. NL_ENOMEM on failure (m is then released). */
nl_status nl_prune_mask_init(nl_ctx *ctx, nl_prune_mask *m, int L, int F);
void nl_prune_mask_release(nl_prune_mask *m); /* zeroes it; a zeroed struct is a no-op */
void nl_prune_mask_clear(nl_prune_mask *m);   /* every count to 0 */
int64_t nl_prune_mask_total(const nl_prune_mask *m); /* Σ_l count[l] */
/* Sets layer l from flags (F) (1 = zero the neuron). */
void nl_prune_mask_set_layer(nl_prune_mask *m, int l, const uint8_t *flags);

/* The intervener (nl_hook_fn): register with
 *   nl_hooks_add(hooks, NL_HOOK_FFN_ACT, -1, NL_HOOK_INTERVENE, nl_prune_hook, mask).
 * x: (T, F) activations of layer info->layer; sets x[t, i] = 0 for the listed i, nothing else.
 * The mask is only read, so one mask may serve several forward passes. */
nl_status nl_prune_hook(void *user, nl_ctx *ctx, const nl_hook_info *info, float *x);

/* The mask of ability a of sets (member rows mapped to the model layers sets->layers[j]);
 * m must have n_layers > every sets->layers[j] and d_ff = sets->d_ff. */
void nl_prune_mask_ability(nl_prune_mask *m, const nl_ability_sets *sets, int a);
/* The random control of seed for counts (Lr) per recorded layer (definition above). */
void nl_prune_mask_random(nl_prune_mask *m, const nl_ability_sets *sets, const int *counts, uint64_t seed);

/* The random set of one layer: out (F) gets flags (1 = chosen) for the min(k, eligible) neurons
 * of model layer `layer` with the lowest priority p(seed, layer, i) among those with
 * excluded[i] == 0 (excluded (F) may be NULL). Returns the number chosen, -1 when out of
 * memory. */
int nl_prune_random_layer(uint64_t seed, int layer, int F, const uint8_t *excluded, int k, uint8_t *out);

/* ---- the evaluated documents and user sets ------------------------------------------- */

/* eval (ds->n_docs) = 1 for the documents the ability run of sets held out (doc_half 1).
 * ds must be the run's dataset: same number of documents, same label on each, else
 *   'd.jsonl' is not the dataset of scores run N: it has 30 documents, the run's activation file 'a.h5' 32
 *   'd.jsonl' is not the dataset of scores run N: line 7 is labelled 'code', document 6 of 'a.h5' 'math'
 * (a run without ability_docs rows has n_docs 0: the first error). */
nl_status nl_prune_heldout(nl_ctx *ctx, const nl_ability_sets *sets, const nl_dataset *ds, uint8_t *eval);

/* Sets from a neurons file for a model of L layers with F neurons each: CSV with the header
 * `layer,neuron` or `layer,neuron,set` (one pair a line; blank lines skipped), or a JSON list
 * of objects {"layer":l,"neuron":i} with an optional "set":"name". Without a set column every
 * pair belongs to the set "neurons"; sets are in byte order of their names. A pair listed
 * twice in one set counts once. Errors (one line, naming the file and the line):
 *   cannot read 'n.csv': …; 'n.csv' line 3: layer 12 is outside the model's 0..5;
 *   'n.csv' line 4: neuron 9000 is outside 0..767; 'n.csv' line 1: the header must be
 *   layer,neuron or layer,neuron,set; 'n.json' line 2: expected … ; 'n.csv' lists no neurons.
 * *out: release with nl_ability_sets_release; *params (owned, free()): the "neurons" object of
 * the run's params (above). */
nl_status nl_prune_sets_from_file(nl_ctx *ctx, const char *path, int L, int F, nl_ability_sets *out, char **params);

/* ---- the analysis -------------------------------------------------------------------- */

typedef struct {
    const char *const *abilities; /* NULL → every ability of the sets; else n_abilities names */
    int n_abilities;
    int seeds;                    /* random-control seeds 0 … seeds−1; ≥ 1 (default 3) */
    int stride;                   /* sliding-window stride as in nl_forward_doc (≤ 0: ctx/2) */
    int batch;                    /* provenance: tokens per forward call as asked, written to the
                                   * params (≤ 0: the forward pass's nl_forward_max_T) */
    const char *model, *dataset;  /* provenance: runs.model / runs.dataset (NULL: the model's
                                   * path, the dataset's path) */
    const uint8_t *eval_docs;     /* (ds->n_docs) 1 = evaluate the document; NULL = all */
    const char *eval;             /* params "eval": "heldout" | "selection" | "file" | "all" (NULL) */
    const char *eval_file;        /* params "eval_file" (NULL: none) */
    const char *neurons_json;     /* params "neurons": a JSON object (nl_prune_sets_from_file) or NULL */
    const char *moe_json;         /* params "moe": a JSON object describing the forward pass's expert
                                   * FFN (the CLI's --moe), or NULL for the dense model */
} nl_prune_opts;

void nl_prune_opts_init(nl_prune_opts *o);

/* Layout and results of a prune run (nl_prune_plan fills the layout, nl_prune_run the sums). */
typedef struct {
    int64_t run_id;       /* the run nl_prune_run wrote; -1 without a database or before it began */
    int n_rows;           /* R: pruned abilities */
    int *ability;         /* (R) index of each in sets->abilities */
    int *diag;            /* (R) column of each row's own label */
    int n_cols;           /* C: evaluated labels (non-empty ones in byte order, then all documents) */
    int *col_label;       /* (C) index into ds->labels; -1 for the last column (all documents) */
    int n_seeds;          /* S */
    int n_groups;         /* G: distinct count vectors among the rows */
    int *group;           /* (R) the group of each row (groups numbered in row order) */
    int64_t *neurons;     /* (R) neurons zeroed in the row's passes, summed over layers */
    int base_done;        /* 1 once the base pass is computed (and committed with a database) */
    nl_nll_sum *base;     /* (C) */
    uint8_t *pruned_done; /* (R) */
    nl_nll_sum *pruned;   /* (R, C) ability passes */
    uint8_t *random_done; /* (G, S) */
    nl_nll_sum *random;   /* (G, S, C) random passes */
} nl_prune_result;

/* Validates the request against the sets and the dataset and fills r's layout (all sums
 * zero, nothing done). Errors (one line, NL_EINVAL):
 *   scores run N has no ability 'x' (its abilities: a, b, c)
 *   ability 'x' is asked for twice
 *   'data.jsonl' has no documents labelled 'math' (an ability of scores run N; not for user sets)
 *   the random control needs at least one seed
 * r is caller-owned: nl_prune_result_release (also after an error). */
nl_status nl_prune_plan(nl_ctx *ctx, const nl_ability_sets *sets, const nl_dataset *ds, const nl_prune_opts *o,
                        nl_prune_result *r);
void nl_prune_result_release(nl_prune_result *r); /* zeroes it; a zeroed struct is a no-op */
/* Forward passes of the plan: 1 + R + G·S (to size a progress bar). */
int nl_prune_passes(const nl_prune_result *r);
/* The name of column c ("" for all documents), borrowed from ds. */
const char *nl_prune_col_name(const nl_prune_result *r, const nl_dataset *ds, int c);

/* (ppl(x) − ppl(base)) / ppl(base); NaN when either has no predictions. */
double nl_prune_rel(nl_nll_sum x, nl_nll_sum base);
/* The random control of (row, column) over the finished seeds: n seeds, mean, sample sd
 * (0 for one seed), min, max of rel_change; NaN statistics when n = 0 or the cell has no
 * predictions. */
typedef struct {
    int n;
    double mean, sd, min, max;
} nl_prune_stat;
nl_prune_stat nl_prune_control(const nl_prune_result *r, int row, int col);

/* Creates the prune tables when missing (idempotent). */
nl_status nl_prune_create_tables(nl_ctx *ctx, nl_results *db);

/* The prune analysis with the top sets of a scores run (opts NULL → defaults): plans r
 * (nl_prune_plan's errors) and checks the model of f against the sets (every sets->layers[j]
 * < its layers, d_ff = F, else NL_EINVAL) before anything is written; then, when db is not
 * NULL, begins the run (above), makes the passes with the intervener registered on f (removed
 * before returning), committing rows as described above, and ends the run with
 * nl_results_finish_run (an interrupted run keeps its finished passes). db NULL: the passes
 * only. progress (may be NULL) counts tokens over all passes (its total is set here).
 * r is caller-owned: nl_prune_result_release (also after an error). Threads: ctx->n_threads. */
nl_status nl_prune_run(nl_ctx *ctx, const nl_prune_opts *opts, nl_forward *f, const nl_dataset *ds, const nl_ability_sets *sets,
                       nl_results *db, nl_progress *progress, nl_prune_result *r);

#endif
