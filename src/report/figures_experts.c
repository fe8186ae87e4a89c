/* figures_experts.c — the figures of a native mixture-of-experts model's expert analyses
 * (`neuronlab experts`, kind "experts": analyses/experts.h; `prune --experts`, kind
 * "prune_experts"), as data (see nl_figure in report.h). report.c draws them after nl_figures.
 *
 * Which layer a one-layer figure shows (the label × expert load when the model has more than
 * four MoE layers, the co-selection matrix always): the MoE layer whose labels differ most in
 * their load, spread(l) = mean over (label ≠ '*', expert ≥ 0) of (token_frac(label) −
 * token_frac('*'))²; ties (and a dataset without labels) go to the layer with the largest
 * variance of the all-token load over its experts, then to the lowest layer. The shared expert
 * (expert −1: every token) is left out of the load figures (it would be 100 % in every row);
 * the caption gives its mean gate instead. Checked by tests/report.sh on real runs of the
 * mixtral and qwen2_moe fixtures and on a synthetic 30-layer × 64-expert run. */
#include "neuronlab/report.h"

/* CTE `pick(layer)`: the layer a one-layer figure shows (see above); `nmoe(n)`: the MoE layers */
#define PICK_LAYER                                                                                                     \
    " lab AS (SELECT l.layer AS layer, AVG((l.token_frac - a.token_frac) * (l.token_frac - a.token_frac)) AS v"          \
    "   FROM expert_load l JOIN expert_load a ON a.run_id = l.run_id AND a.layer = l.layer AND a.expert = l.expert"     \
    "   AND a.label = '*' WHERE l.run_id = ?1 AND l.label <> '*' AND l.expert >= 0 GROUP BY l.layer),"                  \
    " imb AS (SELECT layer, AVG(token_frac * token_frac) - AVG(token_frac) * AVG(token_frac) AS v FROM expert_load"     \
    "   WHERE run_id = ?1 AND label = '*' AND expert >= 0 GROUP BY layer),"                                            \
    " pick AS (SELECT i.layer AS layer FROM imb i LEFT JOIN lab l ON l.layer = i.layer"                                 \
    "   ORDER BY COALESCE(l.v, 0) DESC, i.v DESC, i.layer LIMIT 1),"                                                   \
    " nmoe AS (SELECT COUNT(*) AS n FROM imb)"

#define LABEL_NAME(col) "CASE " col " WHEN '*' THEN 'all tokens' WHEN '' THEN '(no label)' ELSE " col " END"

/* "top-2 of 8 routed experts: uniform 25.0 %" from the all-token load (Σ_e token_frac = k) */
#define UNIFORM_LOAD                                                                                                   \
    "(SELECT printf('top-%d of %d routed experts: uniform %.1f %%', CAST(ROUND(SUM(token_frac)) AS INTEGER), COUNT(*),"  \
    "   100.0 * ROUND(SUM(token_frac)) / COUNT(*)) FROM expert_load WHERE run_id = ?1 AND label = '*' AND expert >= 0"   \
    "   AND layer = (SELECT MIN(layer) FROM expert_load WHERE run_id = ?1 AND expert >= 0))"

#define SHARED_NOTE                                                                                                    \
    "SELECT printf('The shared expert (every token; mean gate %.3f over all tokens) is left out.', AVG(weight_frac))"    \
    " FROM expert_load WHERE run_id = ?1 AND expert = -1 AND label = '*' HAVING COUNT(*) > 0"

const nl_figure nl_expert_figures[] = {
    {"expert_load", "experts", "Expert load by ability",
     "Share of each label's tokens that the router sends to each routed expert (percent; every token takes its top-k "
     "experts, so a row sums to 100·k %; uniform routing gives 100·k/E % in every cell). Last row: all tokens. One panel "
     "per MoE layer; a model with more than four MoE layers shows the layer whose labels differ most in their load "
     "(mean squared difference between a label's and all tokens' share, over labels and experts), and the next figure "
     "shows every layer. An expert that one label uses far more than the others is specific to it.",
     "WITH" PICK_LAYER
     " SELECT CASE WHEN (SELECT n FROM nmoe) <= 4 THEN printf('layer %d', l.layer)"
     "   ELSE printf('layer %d: of the %d MoE layers, the one whose labels differ most', l.layer, (SELECT n FROM nmoe)) END,"
     "  " LABEL_NAME("l.label") ", printf('%d', l.expert), 100.0 * l.token_frac"
     " FROM expert_load l WHERE l.run_id = ?1 AND l.expert >= 0"
     "   AND ((SELECT n FROM nmoe) <= 4 OR l.layer = (SELECT layer FROM pick))"
     " ORDER BY l.layer, l.label = '*', l.label, l.expert",
     "heatmap", "expert", "share of the label's tokens routed to the expert (%)", 0, 0, "%.0f", NULL, NULL, NULL, 0, 0,
     "SELECT 'share of the label''s tokens routed to the expert (%); ' || " UNIFORM_LOAD, SHARED_NOTE},
    {"expert_load_layers", "experts", "Expert load across layers",
     "Load of each routed expert against uniform routing, one row per MoE layer: 100·(share of all tokens routed to the "
     "expert / (k/E) − 1) percent, so 0 (white) = the uniform share k/E, −100 (dark blue) = an expert no token chose, "
     "+100 = twice its uniform share (red). Load imbalance and rarely used experts at a glance. Colour scale: symmetric "
     "logarithmic (asinh, linear within ±10 %), so a few overloaded experts do not wash out the rest.",
     "SELECT 'all tokens', printf('layer %d', layer), printf('%d', expert),"
     "   100.0 * (token_frac * COUNT(*) OVER w / SUM(token_frac) OVER w - 1) FROM expert_load"
     " WHERE run_id = ?1 AND label = '*' AND expert >= 0 WINDOW w AS (PARTITION BY layer) ORDER BY layer, expert",
     "heatmap", "expert", "load against uniform routing (%)", 0, 0, "%.0f", NULL, NULL, NULL, 0, 10.0,
     "SELECT 'load against uniform routing (%), 0 = the uniform share; ' || " UNIFORM_LOAD, SHARED_NOTE},
    {"expert_routing", "experts", "Router confidence by layer",
     "Left: mean entropy of the router's softmax over the routed experts, divided by its maximum ln E (1 = uniform "
     "over the experts, 0 = all probability on one expert). Right: mean top-1 margin p₍₁₎ − p₍₂₎ between the most and the "
     "second most probable expert (0 = a tie, 1 = certain). One curve per label and all tokens (black); labels whose "
     "curves lie apart are routed with different confidence.",
     "SELECT panel, series, x, y FROM ("
     " SELECT 0 AS k, 'routing entropy / ln E (1 = uniform over the experts)' AS panel, " LABEL_NAME("label") " AS series, label = '*' AS agg, label,"
     "   layer AS x, entropy / entropy_max AS y FROM expert_routing WHERE run_id = ?1 AND entropy_max > 0"
     " UNION ALL"
     " SELECT 1, 'top-1 margin p(1) − p(2) (0 = a tie)', " LABEL_NAME("label") ", label = '*', label, layer, margin"
     "   FROM expert_routing WHERE run_id = ?1)"
     " ORDER BY k, agg DESC, label, x",
     "lines", "layer", "mean over tokens", 0, 0, "linespoints", NULL, NULL, "0:1", 1, 0, NULL,
     "SELECT printf('Entropy in nats = the plotted value × ln E = %.3f (E = %d routed experts); %d tokens.', MAX(entropy_max),"
     " CAST(ROUND(EXP(MAX(entropy_max))) AS INTEGER), MAX(tokens)) FROM expert_routing WHERE run_id = ?1 AND label = '*'"},
    {"expert_coselect", "experts", "Which experts are chosen together",
     "For one MoE layer: of the tokens routed to the row expert, the share (percent) that also chose the column expert "
     "(a row sums to 100·(k−1) %; independent uniform routing gives 100·(k−1)/(E−1) % in every cell; the diagonal is "
     "left blank). The layer is the one whose labels differ most in their load (as in the load figure). Bright pairs "
     "are experts that work together; a row of an expert that no token chose stays grey.",
     "WITH" PICK_LAYER ","
     " ex AS (SELECT expert FROM expert_load WHERE run_id = ?1 AND label = '*' AND expert >= 0 AND layer = (SELECT layer FROM pick)),"
     " cs AS (SELECT expert_a AS a, expert_b AS b, tokens FROM expert_coselect WHERE run_id = ?1 AND layer = (SELECT layer FROM pick)),"
     " pr AS (SELECT a, b, tokens FROM cs WHERE a < b UNION ALL SELECT b, a, tokens FROM cs WHERE a < b)"
     " SELECT printf('layer %d%s', (SELECT layer FROM pick), CASE WHEN (SELECT n FROM nmoe) > 1"
     "   THEN printf(' (of %d MoE layers: the one whose labels differ most)', (SELECT n FROM nmoe)) ELSE '' END),"
     "  printf('%d', x.expert), printf('%d', y.expert),"
     "  CASE WHEN x.expert = y.expert OR COALESCE(d.tokens, 0) = 0 THEN NULL ELSE 100.0 * COALESCE(p.tokens, 0) / d.tokens END"
     " FROM ex x CROSS JOIN ex y LEFT JOIN cs d ON d.a = x.expert AND d.b = x.expert"
     "   LEFT JOIN pr p ON p.a = x.expert AND p.b = y.expert"
     " ORDER BY x.expert, y.expert",
     "heatmap", "expert also chosen (column)", "share of the row expert's tokens (%)", 0, 0, "%.0f", NULL, NULL, NULL, 0, 0,
     "SELECT printf('share of the row expert''s tokens that also chose the column expert (%%); top-%d of %d: uniform %.1f %%',"
     " k, e, CASE WHEN e > 1 THEN 100.0 * (k - 1) / (e - 1) ELSE 0 END) FROM (SELECT CAST(ROUND(SUM(token_frac)) AS INTEGER) AS k,"
     " COUNT(*) AS e FROM expert_load WHERE run_id = ?1 AND label = '*' AND expert >= 0"
     " AND layer = (SELECT MIN(layer) FROM expert_load WHERE run_id = ?1 AND expert >= 0))",
     NULL},
    {"expert_prune", "prune_experts", "Removing experts: which abilities suffer",
     "Relative change of perplexity against the model with every expert (percent; red = worse, blue = better) when "
     "one expert is removed from the router's choice (rows; the token takes its next-best expert; removing a "
     "shared expert subtracts its output), per label of the documents (columns; 'all' = every document). "
     "Left: the row's expert removed. Middle: as many random experts of the same layers removed, mean ± standard "
     "deviation over the random seeds — the chance level (shared experts have none). Right: the difference (percentage "
     "points). Colour scale: symmetric logarithmic (asinh, linear within ±1), shared by the panels; the numbers in the "
     "cells are exact. A run with more than 48 removals shows the 48 with the largest effect on all documents.",
     "WITH e AS (SELECT removed, label, rel_change FROM expert_prune WHERE run_id = ?1 AND control IN ('expert', 'shared')),"
     " nset AS (SELECT COUNT(*) AS n FROM e WHERE label = ''),"
     " keep AS (SELECT removed FROM e WHERE label = '' ORDER BY ABS(rel_change) DESC, removed LIMIT 48),"
     " r AS (SELECT removed, label, COUNT(*) AS n, AVG(rel_change) AS m, SUM(rel_change * rel_change) AS s2"
     "   FROM expert_prune WHERE run_id = ?1 AND control = 'random' GROUP BY removed, label),"
     " rs AS (SELECT removed, label, n, m, CASE WHEN n > 1 THEN sqrt(MAX(s2 - n * m * m, 0) / (n - 1)) END AS sd FROM r),"
     " ord AS (SELECT removed, removed LIKE 'top:%' AS grp,"
     "   CAST(substr(removed, 1, instr(removed, ':') - 1) AS INTEGER) AS l,"
     "   CASE WHEN substr(removed, instr(removed, ':') + 1) = 'shared' THEN 1000000000"
     "     ELSE CAST(substr(removed, instr(removed, ':') + 1) AS INTEGER) END AS x FROM keep)"
     " SELECT panel, CASE WHEN grp OR instr(rowname, ':') = 0 THEN rowname WHEN x = 1000000000 THEN printf('layer %d · shared', l)"
     "   ELSE printf('layer %d · expert %d', l, x) END, CASE c WHEN '' THEN 'all' ELSE c END, v, sd FROM ("
     " SELECT 0 AS k, CASE WHEN (SELECT n FROM nset) > 48 THEN printf('expert removed (the 48 of %d removals with the largest '"
     "   || 'effect on all documents)', (SELECT n FROM nset)) ELSE 'expert removed' END AS panel, e.removed AS rowname, e.label AS c,"
     "   100.0 * e.rel_change AS v, NULL AS sd, o.grp, o.l, o.x FROM e JOIN ord o ON o.removed = e.removed"
     " UNION ALL"
     " SELECT 1, (SELECT CASE WHEN MAX(n) > 1 THEN printf('random experts, same layers (mean ± sd, %d seeds)', MAX(n))"
     "   ELSE 'random experts, same layers (one seed)' END FROM rs), e.removed, e.label, 100.0 * rs.m, 100.0 * rs.sd, o.grp, o.l, o.x"
     "   FROM e JOIN ord o ON o.removed = e.removed LEFT JOIN rs ON rs.removed = e.removed AND rs.label = e.label"
     " UNION ALL"
     " SELECT 2, 'expert − random (percentage points)', e.removed, e.label, 100.0 * (e.rel_change - rs.m), NULL, o.grp, o.l, o.x"
     "   FROM e JOIN ord o ON o.removed = e.removed LEFT JOIN rs ON rs.removed = e.removed AND rs.label = e.label)"
     " ORDER BY k, grp, l, x, rowname, c = '', c",
     "heatmap", "evaluated on", "relative perplexity change (%)", 0, 0, "%.1f", NULL, NULL, NULL, 0, 1.0,
     "SELECT printf('relative perplexity change (%%) against the model with every expert (ppl %.2f on all documents)', ppl)"
     " FROM expert_prune WHERE run_id = ?1 AND control = 'none' AND label = ''",
     "SELECT printf('Run %d: %d removal sets of --experts %s, %d random seeds (--seed %d).', id, (SELECT COUNT(*) FROM expert_prune"
     " WHERE run_id = ?1 AND control IN ('expert', 'shared') AND label = ''), json_extract(params, '$.experts'),"
     " json_extract(params, '$.seeds'), json_extract(params, '$.seed')) FROM runs WHERE id = ?1"},
};
const int nl_n_expert_figures = sizeof nl_expert_figures / sizeof nl_expert_figures[0];
