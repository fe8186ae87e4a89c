/* ability.h — ability ("skill") neurons: which FFN neurons tell the documents of one ability
 * from the others, and the top sets that `prune` and `overlap` work on.
 * `neuronlab ability acts.h5 --db results.db` (src/cli/cmd_ability.c) drives it.
 *
 * Definitions (README "Definitions"; layer l, neuron i, document d of the activation file):
 *   value        v_i(d) = mean |a_i| over d's prompt tokens (the file's /pooled/{l}/mean_abs;
 *                computed from /layers/{l}/ffn_act over the first prompt_len[d] rows of d
 *                when the file was recorded without --pool). For rows without a prompt the
 *                prompt is the whole document.
 *   abilities    the distinct non-empty document labels (or the subset asked for); y_f(d) = 1
 *                when d's label is f. Unlabelled documents take no part. Each ability needs
 *                at least one document with and one without its label.
 *   AP           average precision of v_i against y (the FuncScore): sort the documents by v
 *                descending; for each distinct value t (ties form one step, so the order of
 *                tied documents never matters), P(t) = TP(v ≥ t) / #(v ≥ t) and
 *                R(t) = TP(v ≥ t) / #positives; AP = Σ_t (R(t) − R(t⁺)) · P(t), t⁺ the
 *                previous (larger) value, R = 0 before the first. Without ties this is the
 *                mean of precision@k over the ranks k of the positives. A neuron whose value
 *                does not depend on the label scores about the positive rate p = #pos / n
 *                (exactly p when all values tie): the random baseline.
 *   predictivity the skill-neuron test: predict "ability f" when v_i(d) > μ_i, μ_i the mean of
 *                v_i over the scored documents; the score is the balanced accuracy
 *                (TPR + TNR) / 2 (accuracy with both classes weighted equally: one ability
 *                against the six others is 1:6, where plain accuracy gives 0.86 to a neuron
 *                that never fires). Random baseline 0.5.
 *   symmetric    --symmetric scores max(S(y), S(1 − y)) (a neuron that marks "not f" counts
 *                too); baselines become max(p, 1 − p) for AP and 0.5 for predictivity.
 *   layer stats  per (ability, layer): best = max score; top_permille = the score of the
 *                neuron at rank ceil(0.005·F) (5‰ of the layer's neurons score at least it);
 *                mean = mean score; baseline as above; shuffled_* = the same three statistics
 *                for the labels randomly permuted (seeded Fisher–Yates, splitmix64): what the
 *                best of F neurons reaches by chance. Layer -1 = all recorded layers pooled.
 *   top sets     per ability, the neurons ranked by score (descending). Equal scores are
 *                common (with 10 documents per label many neurons reach AP = 1), so ties are
 *                broken by a documented key, never by the index: first the margin
 *                m_f,i = mean v_i over f's documents − mean v_i over the other scored documents
 *                (larger first; |m| with --symmetric; NaN last), then the tie hash
 *                h = mix(seed ⊕ mix(layer·2^32 + neuron)) ascending (mix = splitmix64's
 *                finaliser nl_mix64, layer = the model layer, seed = the run's --seed), so a
 *                tie never favours low indices or low layers. Per layer (default): the top k = max(1,
 *                floor(top·F + 1e-9)) of each layer; global: the top max(1, floor(top·Lr·F +
 *                1e-9)) over all Lr recorded layers. Excluded ("resident") neurons are never
 *                chosen; k is still computed from F (capped at the eligible neurons), so the
 *                sets keep their size. depth: for every ability, how many of its global top
 *                set fall in each layer, whatever the scope.
 *   ties         per (ability, group) (group = a layer, or all layers for global): cut = the
 *                score of the set's last neuron (rank k); tied = eligible neurons with exactly
 *                that score; chosen = how many of them are in the set. The cut falls inside a
 *                tie block when chosen < tied: the tie-break (broken_by 'margin', or 'hash' when
 *                the last chosen and the first left out also have equal margins) decided which
 *                of the tied neurons are in the set. The command warns on stderr then.
 *   split        with split ∈ (0, 1) (--split): the documents of each label are ordered by
 *                k(d) = mix(seed ⊕ mix(2^63 + d)) ascending (d = the document's 0-based index in
 *                the activation file, i.e. its order in the dataset, blank lines skipped; mix =
 *                nl_mix64), and the first n_sel = min(n − 1, max(1, floor(split·n + 0.5))) of
 *                its n documents form the selection half: only they are scored, and the top
 *                sets are chosen on them; the others are held out for `prune` to evaluate on.
 *                Balanced per label by construction; every label needs 2 documents. Without
 *                split every labelled document is scored.
 *   resident     with exclude_resident, the neurons flagged resident (active on ≥ 90% of the
 *                tokens, analyses/sparsity.h) by a complete sparsity run of the same
 *                activation file in the same database (label '' rows of its neurons table).
 *
 * Computation: per layer, the (Dc, F) pooled values are read once; each neuron's documents
 * are sorted once (O(Dc log Dc)) and scored against every ability and its shuffled labels in
 * O(Dc) each; neurons in parallel with OpenMP, results independent of the thread count.
 *
 * Tables (CREATE TABLE IF NOT EXISTS; run_id REFERENCES runs(id); WITHOUT ROWID):
 *   ability_run(run_id PK, method TEXT ('ap' | 'predictivity'), symmetric INTEGER, top REAL,
 *       scope TEXT ('layer' | 'global'), resident_run INTEGER (NULL: no exclusion), seed INTEGER,
 *       docs INTEGER (documents scored), layers INTEGER (recorded), d_ff INTEGER)
 *   ability_label(run_id, ability, docs, positives, baseline)       PK (run_id, ability)
 *   ability_score(run_id, ability, layer, neuron, score, margin)    PK (run_id, ability, layer, neuron)
 *       margin = the tie-break key above (NULL in runs of databases older than the column;
 *       create_tables adds the column to such a database).
 *   ability_layer(run_id, ability, layer, best, top_permille, mean, baseline, shuffled_best,
 *       shuffled_top_permille, shuffled_mean)                       PK (run_id, ability, layer)
 *   ability_top(run_id, ability, layer, neuron, rank)               PK (run_id, ability, layer, neuron)
 *       rank 1 = best of the ability's set (within the layer for the per-layer scope).
 *   ability_depth(run_id, ability, layer, neurons, share)           PK (run_id, ability, layer)
 *       neurons of the ability's global top set in the layer; share = neurons / set size.
 *   ability_excluded(run_id, layer, neuron)                         PK (run_id, layer, neuron)
 *   ability_model(run_id, layer, w_out_norm_sum)                    PK (run_id, layer)
 *       Σ_i ‖W_out[:, i]‖₂ of each recorded layer (from the file): the fingerprint that ties
 *       the run to its model, checked by `prune`.
 *   ability_ties(run_id, ability, layer, cut, tied, chosen, broken_by)   PK (run_id, ability, layer)
 *       one row per ability and layer (layer -1: the one global set with --global); cut NULL
 *       when the set is empty; broken_by 'none' | 'margin' | 'hash' (definition above).
 *   ability_docs(run_id, doc, label, half)                          PK (run_id, doc)
 *       every document of the activation file: doc = its index (0-based), label ('' none),
 *       half 'select' (scored), 'heldout' (left for evaluation by --split) or 'none'
 *       (unlabelled, never scored).
 * The run's params also carry "split": the fraction or null, and "heldout_docs" with a split.
 * Everything is written in one transaction at the end, so a run either has all its rows
 * (status 'complete') or none ('interrupted' / 'failed').
 *
 * Checked by tests/test_ability.c (AP and predictivity against brute force and hand cases
 * with ties, top sets, tables) and tests/ability_cli.sh.
 */
#ifndef NEURONLAB_ANALYSES_ABILITY_H
#define NEURONLAB_ANALYSES_ABILITY_H

#include "neuronlab/common.h"
#include "neuronlab/h5store.h"
#include "neuronlab/model.h"
#include "neuronlab/progress.h"
#include "neuronlab/results.h"

typedef enum { NL_ABILITY_AP = 0, NL_ABILITY_PREDICTIVITY } nl_ability_method;
const char *nl_ability_method_name(nl_ability_method m); /* "ap", "predictivity" */
int nl_ability_method_parse(const char *s);               /* the method, or -1 */

/* ---- the scores, one neuron at a time (exact definitions above) ------------------------ */

/* AP of v (n) against y (n, 0/1). NAN when y has no positive, n ≤ 0 or memory runs out. */
double nl_ability_ap(const float *v, const uint8_t *y, int n);
/* Balanced accuracy of 1[v > mean(v)] against y. NAN when y lacks positives or negatives. */
double nl_ability_predictivity(const float *v, const uint8_t *y, int n);

/* ---- the analysis ---------------------------------------------------------------------- */

typedef struct {
    nl_ability_method method; /* default NL_ABILITY_AP */
    int symmetric;            /* max(S(y), S(1-y)) */
    double top;               /* top fraction, in (0, 1]; default 0.05 */
    int global;               /* 1: one top set over all layers; 0: per layer (default) */
    int exclude_resident;     /* 1: leave out resident neurons (needs a sparsity run) */
    int64_t resident_run;     /* that run; ≤ 0 → the latest complete sparsity run of the file */
    const char *const *abilities; /* NULL → every non-empty label; else n_abilities labels */
    int n_abilities;
    uint64_t seed;            /* label shuffling of the shuffled_* baseline; default 0 */
    int from_acts;            /* 1: means of |a| from ffn_act even when the file has mean_abs
                               * (files recorded without --pool use ffn_act anyway) */
    double split;             /* 0 = score every labelled document (default); in (0, 1): the
                               * selection fraction of each label's documents (split above) */
} nl_ability_opts;

void nl_ability_opts_init(nl_ability_opts *o);

/* What a run leaves for printing (the rows themselves are in the database). Caller-owned:
 * zero-initialise; nl_ability_result_release (nothing is allocated today; call it anyway). */
typedef struct {
    int64_t run_id;  /* the run; -1 when it was never begun */
    int docs;        /* documents scored */
    int n_abilities; /* abilities scored */
    int n_layers;    /* recorded layers */
    int d_ff;        /* F */
    int cut_in_tie;  /* (ability, group) sets whose cut falls inside a tie block (ability_ties) */
    int heldout;     /* documents held out by the split (0 without) */
} nl_ability_result;
void nl_ability_result_release(nl_ability_result *r);

/* Creates the tables above when missing (idempotent). */
nl_status nl_ability_create_tables(nl_ctx *ctx, nl_results *db);

/* Runs the analysis of the activation file at acts_path into db as a run of kind "ability"
 * (opts NULL → defaults; model, dataset from the file; source = acts_path). Errors, one line
 * each, nothing written before the inputs are validated:
 *   top outside (0, 1]; split outside (0, 1) (0 = none); label 'x' has 1 document in 'acts.h5':
 *   --split needs at least 2 per label; 'acts.h5' has no document labelled 'x' (an asked-for ability);
 *   'acts.h5' has no labelled documents / ability 'x' labels every scored document;
 *   the activation file's own errors (h5store.h); neither mean_abs nor ffn_act;
 *   no complete sparsity run of 'acts.h5' in 'r.db' / run N is not a sparsity run of 'acts.h5'
 *   (exclude_resident; a NULL kind or status of that run: "'r.db': run N has a NULL kind in
 *   the runs table"); 'acts.h5' is corrupt: /layers/L/w_out_norm[i] = nan is not a norm.
 * After the run began (run 'failed' with the message): 'acts.h5': layer L holds non-finite
 * pooled values | activations (document d, neuron i) — caught from each neuron's sum over the
 * scored documents, so a NaN never reaches the database.
 * The run is ended by nl_results_finish_run: NL_EINTR when interrupted (nl_interrupted is polled
 * per document, per 16 neurons and while writing; run 'interrupted', "interrupted after N of M
 * layers (no rows kept)"). prog (may be NULL) counts layers.
 * Threads: ctx->n_threads (0 = all cores).
 * acts_path may be a summary (`record --stats`, summary_h5.h; told by its format attribute):
 * its per-document pooled values are the values v_i(d) — bit for bit the mean_abs of
 * `record --pool` of the same run, so every score, AP and top set equals the dump's; params
 * gain "input":"summary". from_acts with a summary is NL_EINVAL (it has no per-token rows). */
nl_status nl_ability_run(nl_ctx *ctx, const nl_ability_opts *opts, const char *acts_path, nl_results *db,
                         nl_progress *prog, nl_ability_result *out);

/* ---- top sets of a finished run (for prune and overlap) --------------------------------- */

typedef struct {
    int64_t run_id;
    int n_layers;         /* Lr: recorded layers of the run */
    int *layers;          /* (Lr) model layer index of each, ascending */
    int d_ff;             /* F */
    int n_abilities;      /* A */
    char **abilities;     /* (A) names, in byte order */
    double top;           /* fraction the sets were chosen with */
    int global;           /* scope */
    char method[16];      /* "ap" or "predictivity" */
    int symmetric;        /* the run scored max(S(y), S(1 − y)) */
    uint64_t seed;        /* the run's seed (the tie hash) */
    uint8_t *excluded;    /* (Lr, F) 1 = never chosen (resident) */
    uint8_t *member;      /* (A, Lr, F) 1 = in the ability's top set */
    int *count;           /* (A, Lr) set size per layer */
    double *w_out_norm_sum; /* (Lr) fingerprint of the model (ability_model) */
    char *source;         /* the activation file the run read */
    char *model;          /* its model */
    int n_docs;           /* documents of the activation file in ability_docs (0: a run older
                           * than the table, or hand-built sets) */
    char **doc_label;     /* (n_docs) each document's label (owned) */
    int8_t *doc_half;     /* (n_docs) 0 selection, 1 held out, -1 unlabelled */
    int n_heldout;        /* documents held out by the run's split (0: no split) */
} nl_ability_sets;

/* Loads the top sets of ability run run_id (≤ 0: the latest complete ability run) from db: the stored ability_top rows when top ≤ 0
 * or equal to the run's fraction, else chosen again from ability_score with the run's scope
 * and exclusions. Errors (one line): no run N in 'r.db'; run N of 'r.db' is a 'sparsity' run,
 * not an ability run; run N is 'failed' (only complete runs); top outside (0, 1]; a NULL text
 * value left by an older or foreign tool (NL_EFORMAT): "'r.db': run N has a NULL kind in the
 * runs table", "'r.db': ability_top of run N has a NULL ability name" (ability_label,
 * ability_score; ability_run scope, method); NL_EINTR when interrupted while reading the rows.
 * Release with nl_ability_sets_release. */
nl_status nl_ability_sets_load(nl_ctx *ctx, nl_results *db, int64_t run_id, double top, nl_ability_sets *out);
void nl_ability_sets_release(nl_ability_sets *s); /* zeroes it; a zeroed struct is a no-op */
/* Index of an ability, or -1. */
int nl_ability_sets_find(const nl_ability_sets *s, const char *ability);

/* Checks that model m is the model the run's activation file came from: every recorded layer
 * exists in m with d_ff = F and Σ_i ‖W_out[:, i]‖₂ within relative 1e-4 of the run's; else
 *   scores run N ('acts.h5') is from another model than 'MODEL': layer 2 W_out norms differ */
nl_status nl_ability_sets_check_model(nl_ctx *ctx, const nl_ability_sets *s, nl_model *m, const char *model_path);

/* The tie-break of the top sets (definition above). Borrowed pointers. */
typedef struct {
    const float *margin; /* (A, Lr, F) margins; NULL: every margin ties (the hash decides) */
    int symmetric;       /* rank by |margin| */
    const int *layers;   /* (Lr) model layer of each recorded layer (hash key); NULL: 0 … Lr−1 */
    uint64_t seed;       /* the run's seed */
} nl_ability_tiebreak;

enum { NL_TIE_NONE = 0, NL_TIE_MARGIN, NL_TIE_HASH };
const char *nl_ability_tie_name(int broken_by); /* "none", "margin", "hash" */

/* The tie at the cut of one set (definition above). */
typedef struct {
    float cut;     /* score of the last chosen neuron; NaN for an empty set */
    int tied;      /* eligible neurons scoring exactly cut */
    int chosen;    /* of them, in the set (chosen < tied: the cut falls inside the tie block) */
    int broken_by; /* NL_TIE_* */
} nl_ability_tie;

/* The split key k(d) and the selection count n_sel of a label with n ≥ 2 documents (above). */
uint64_t nl_ability_split_key(uint64_t seed, int doc);
int nl_ability_split_count(double split, int n);

/* h = mix(seed ⊕ mix(layer·2^32 + neuron)): the last-resort tie-break (lower first). */
uint64_t nl_ability_tie_hash(uint64_t seed, int layer, int neuron);

/* Chooses top sets from scores (A, Lr, F) (NaN ranks last) into member (A, Lr, F) and count
 * (A, Lr) per the rules above; excluded (Lr, F) may be NULL; tb NULL = no margins, seed 0,
 * layers 0 … Lr−1. ties (A, global ? 1 : Lr) may be NULL. Pure, for tests and for load. */
void nl_ability_select(const float *scores, int A, int Lr, int F, const uint8_t *excluded, double top, int global,
                       const nl_ability_tiebreak *tb, uint8_t *member, int *count, nl_ability_tie *ties);

#endif
