/* figures.c — the figures of `neuronlab report`, as data (see nl_figure in report.h): each
 * query returns (panel, series, x, y) rows of one run (?1) of its analysis, or (panel, row,
 * col, value) for a heatmap. Adding a figure is adding an entry here (and a template under
 * plots/ if it needs a new kind of plot). */
#include "neuronlab/report.h"

const nl_figure nl_figures[] = {
    {"sparsity_cdf_value", "sparsity", "Long tail of the activation value",
     "Cumulative distribution of each neuron's activation value |a_i| normalised by the largest |a_j| of its layer "
     "at the same token (log axis), over every token and neuron, one curve per layer. A curve that rises early means "
     "most neurons carry a tiny fraction of the layer's largest activation: the long tail behind activation sparsity.",
     "SELECT 'value', CASE WHEN layer < 0 THEN 'all layers' ELSE 'layer ' || layer END, x, cdf FROM sparsity_cdf"
     " WHERE run_id = ?1 AND indicator = 'value' AND label = '' AND x > 0 ORDER BY layer < 0, layer, x",
     "lines", "|a_i| / max_j |a_j| (per token and layer)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL, NULL},
    {"sparsity_cdf_norm", "sparsity", "Long tail of the output norm",
     "Cumulative distribution of each neuron's output norm |a_i|·‖W_out[:, i]‖₂ normalised by the largest of its layer "
     "at the same token (log axis), one curve per layer. The output norm measures what a neuron actually adds to the "
     "residual stream; it is the indicator behind CETT.",
     "SELECT 'output norm', CASE WHEN layer < 0 THEN 'all layers' ELSE 'layer ' || layer END, x, cdf FROM sparsity_cdf"
     " WHERE run_id = ?1 AND indicator = 'norm' AND label = '' AND x > 0 ORDER BY layer < 0, layer, x",
     "lines", "|a_i|·‖w_i‖ / max (per token and layer; w_i: column i of W_out)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL, NULL},
    {"activation_frequency", "sparsity", "How often each neuron is active",
     "Histogram of the neurons' activation frequency: the fraction of tokens on which a neuron's value exceeds 0.1 of "
     "its layer's largest at that token, one curve per layer (share of the layer's neurons per bin of width 0.05). Mass "
     "at the left: neurons that rarely fire (dead at 0); at the right: resident neurons that fire on almost every token.",
     "SELECT 'threshold 0.1 of max', 'layer ' || layer, MIN(CAST(freq * 20 AS INTEGER), 19) / 20.0 + 0.025,"
     " COUNT(*) * 1.0 / (SELECT COUNT(*) FROM neuron_freq g WHERE g.run_id = f.run_id AND g.layer = f.layer"
     "   AND g.label = '' AND g.threshold = f.threshold)"
     " FROM neuron_freq f WHERE run_id = ?1 AND label = '' AND ABS(threshold - 0.1) < 1e-9"
     " GROUP BY layer, MIN(CAST(freq * 20 AS INTEGER), 19) ORDER BY layer, 3",
     "lines", "activation frequency (fraction of tokens with r > 0.1)", "share of the layer's neurons", 0, 0, "histeps", "0:1", NULL},
    {"cett_sparsity", "sparsity", "Sparsity at fixed CETT, by layer",
     "For each layer, the fraction of (token, neuron) pairs whose output norm lies below the threshold ε at which the "
     "cumulative error of tail truncation (CETT: ‖Σ of the truncated neurons' outputs‖ / ‖FFN output‖, averaged over "
     "tokens) reaches the target. Higher means more neurons can be skipped for the same error.",
     "SELECT 'CETT sparsity', 'CETT ' || printf('%g', target), layer, sparsity FROM sparsity_cett"
     " WHERE run_id = ?1 AND label = '' AND layer >= 0 ORDER BY target, layer",
     "lines", "layer", "sparsity (fraction of neurons below ε)", 0, 0, "linespoints", NULL, NULL},
    {"perturbation", "perturb", "Loss when the lowest-indicator neurons are masked",
     "Loss (mean negative log-likelihood, nats) when, for every token and layer, the given fraction of FFN neurons "
     "with the lowest indicator is zeroed: by activation value, by output norm, or at random (the control). One panel "
     "per ability (all documents first). The gap to the random curve shows how much of the FFN computation the "
     "long tail does not need.",
     "SELECT CASE WHEN label = '' THEN 'all documents' ELSE label END, metric, ratio, nll FROM perturb"
     " WHERE run_id = ?1 ORDER BY label <> '', label, CASE metric WHEN 'value' THEN 0 WHEN 'norm' THEN 1 ELSE 2 END, ratio",
     "lines", "fraction of neurons masked per token and layer", "loss (nats)", 0, 0, "linespoints", NULL, NULL},
    {"ability_scores", "ability", "Ability neurons: how well single neurons tell an ability's documents apart",
     "For each ability (one panel) and layer, the FuncScore of the layer's FFN neurons: how well a neuron's value on a "
     "document (its mean |activation| over the prompt tokens) separates the documents of that ability from the others, "
     "as average precision (AP) or as predictivity (balanced accuracy of 'value above its mean'), as named in the panel "
     "title and the run's parameters. Curves: the best neuron of the layer, the neuron at rank 5‰ (the best 0.5% of "
     "the layer's neurons score at least this), the mean over all neurons, and the best neuron when the ability labels "
     "are randomly shuffled — what the best of the layer's neurons reaches by chance alone. The random baseline is the "
     "score of a neuron that ignores the label (AP: the share of the ability's documents; predictivity: 0.5). Neurons "
     "are ability-specific where the best and 5‰ curves rise clearly above the shuffled curve, not merely above the "
     "baseline.",
     "SELECT l.ability || CASE WHEN b.docs IS NULL OR r.method IS NULL THEN '' ELSE printf(' (%s; %d of %d documents)',"
     "   CASE r.method WHEN 'ap' THEN 'AP' ELSE r.method END, b.positives, b.docs) END, s.name, l.layer,"
     " CASE s.k WHEN 0 THEN l.best WHEN 1 THEN l.top_permille WHEN 2 THEN l.mean WHEN 3 THEN l.shuffled_best ELSE l.baseline END"
     " FROM ability_layer l"
     " JOIN (SELECT 0 AS k, 'best' AS name UNION ALL SELECT 1, 'top 5‰' UNION ALL SELECT 2, 'mean'"
     "   UNION ALL SELECT 3, 'best (shuffled labels)' UNION ALL SELECT 4, 'random baseline') s"
     " LEFT JOIN ability_run r ON r.run_id = l.run_id"
     " LEFT JOIN ability_label b ON b.run_id = l.run_id AND b.ability = l.ability"
     " WHERE l.run_id = ?1 AND l.layer >= 0 ORDER BY l.ability, s.k, l.layer",
     "lines", "layer", "score (AP or predictivity)", 0, 0, "linespoints", NULL, "outside right top vertical"},
    {"ability_depth", "ability", "Ability neurons: in which layers they sit",
     "Where each ability's neurons lie: for every ability (one curve), the share of its global top set (the "
     "best-scoring neurons over all recorded layers together) that falls in each layer; each curve sums to 1. With "
     "no preference for depth every layer would hold 1 / (number of recorded layers).",
     "SELECT printf('global top set: best %g%% of all recorded neurons', 100.0 * r.top), d.ability, d.layer, d.share"
     " FROM ability_depth d JOIN ability_run r ON r.run_id = d.run_id"
     " WHERE d.run_id = ?1 AND d.layer >= 0 ORDER BY d.ability, d.layer",
     "lines", "layer", "share of the ability's top set in the layer", 0, 0, "linespoints", NULL, NULL},
    {"prune_matrix", "prune", "Pruning ability neurons: which abilities suffer",
     "Relative change of perplexity against the unpruned model (percent; 0 = no change, red = worse, blue = better) "
     "when FFN neurons are zeroed at every token. Rows: the ability whose top set (from the ability run) is zeroed; "
     "columns: the documents the model is evaluated on ('all' = every document). Left: the row's ability neurons "
     "zeroed. Middle: the same number of neurons in each layer chosen at random, mean over the random seeds — the "
     "chance level of removing that many neurons. Right: the difference (percentage points). Specific ability "
     "neurons show a red diagonal: their own ability's documents suffer more than the others, and more than after "
     "the random control. Grey cells: no value.",
     "SELECT panel, r, CASE c WHEN '' THEN 'all' ELSE c END, v FROM ("
     " SELECT 0 AS k, 'top set of the row''s ability zeroed' AS panel, pruned AS r, label AS c, 100.0 * rel_change AS v"
     "  FROM prune_effect WHERE run_id = ?1 AND control = 'ability' AND pruned <> ''"
     " UNION ALL"
     " SELECT 1, printf('same-size random neurons (mean of %d seeds)',"
     "   (SELECT MAX(seeds) FROM prune_control WHERE run_id = ?1)), pruned, label, 100.0 * mean"
     "  FROM prune_control WHERE run_id = ?1 AND pruned <> ''"
     " UNION ALL"
     " SELECT 2, 'ability − random (percentage points)', e.pruned, e.label, 100.0 * (e.rel_change - c.mean)"
     "  FROM prune_effect e JOIN prune_control c ON c.run_id = e.run_id AND c.pruned = e.pruned AND c.label = e.label"
     "  WHERE e.run_id = ?1 AND e.control = 'ability' AND e.pruned <> '')"
     " ORDER BY k, r, c = '', c",
     "heatmap", "evaluated on", "relative perplexity change (%)", 0, 0, "%.1f", NULL, NULL},
    {"overlap", "overlap", "Overlap of the abilities' top sets",
     "How many neurons the top sets of two abilities share, over all recorded layers. Left: |A∩B| / |A|, the share of "
     "the row ability A's neurons that are also in the column ability B's set (not symmetric). Right: Jaccard index "
     "|A∩B| / |A∪B| (symmetric). The panel titles give the chance level: the expected value for random sets of the "
     "same sizes (per layer when the sets were chosen per layer). Values well above it mean the two abilities share "
     "neurons; the diagonal (an ability with itself, always 1) is left blank.",
     "SELECT panel, a, b, v FROM ("
     " SELECT 0 AS k, printf('|A∩B| / |A|, all layers (random: %s)', (SELECT CASE WHEN MAX(baseline_frac) - MIN(baseline_frac)"
     "   < 5e-4 THEN printf('%.3g', AVG(baseline_frac)) ELSE printf('%.3g–%.3g', MIN(baseline_frac), MAX(baseline_frac)) END"
     "   FROM overlap WHERE run_id = ?1 AND layer = -1)) AS panel, a, b, CASE WHEN a = b THEN NULL ELSE frac END AS v"
     "  FROM overlap WHERE run_id = ?1 AND layer = -1"
     " UNION ALL"
     " SELECT 1, printf('Jaccard, all layers (random: %s)', (SELECT CASE WHEN MAX(baseline_jaccard) - MIN(baseline_jaccard)"
     "   < 5e-4 THEN printf('%.3g', AVG(baseline_jaccard)) ELSE printf('%.3g–%.3g', MIN(baseline_jaccard), MAX(baseline_jaccard))"
     "   END FROM overlap WHERE run_id = ?1 AND layer = -1)), a, b, CASE WHEN a = b THEN NULL ELSE jaccard END"
     "  FROM overlap WHERE run_id = ?1 AND layer = -1)"
     " ORDER BY k, a, b",
     "heatmap", "B (column ability); A = row ability", "overlap of the top sets", 0, 0, "%.2f", NULL, NULL},
};
const int nl_n_figures = sizeof nl_figures / sizeof nl_figures[0];
