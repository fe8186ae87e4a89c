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
     "lines", "|a_i| / max_j |a_j| (per token and layer)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL, NULL, NULL, 0, 0, NULL, NULL},
    {"sparsity_cdf_norm", "sparsity", "Long tail of the output norm",
     "Cumulative distribution of each neuron's output norm |a_i|·‖W_out[:, i]‖₂ normalised by the largest of its layer "
     "at the same token (log axis), one curve per layer. The output norm measures what a neuron actually adds to the "
     "residual stream; it is the indicator behind CETT.",
     "SELECT 'output norm', CASE WHEN layer < 0 THEN 'all layers' ELSE 'layer ' || layer END, x, cdf FROM sparsity_cdf"
     " WHERE run_id = ?1 AND indicator = 'norm' AND label = '' AND x > 0 ORDER BY layer < 0, layer, x",
     "lines", "|a_i|·‖w_i‖ / max (per token and layer; w_i: column i of W_out)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL, NULL, NULL, 0, 0, NULL, NULL},
    {"activation_frequency", "sparsity", "How often each neuron is active",
     "Histogram of the neurons' activation frequency: the fraction of tokens on which a neuron's value exceeds 0.1 of "
     "its layer's largest at that token, one curve per layer (share of the layer's neurons per bin of width 0.05; the "
     "x axis ends one bin after the last non-empty one). Mass at the left: neurons that rarely fire (dead at 0); at the "
     "right: resident neurons that fire on almost every token.",
     /* every bin from the lowest to one past the highest non-empty one, empty bins as 0 (a step
        histogram over missing bins would bridge them); a frequency below 0 falls in bin -1 (outside
        the x range: left out and counted), so -Inf does not make the list of bins endless */
     "WITH f AS (SELECT layer, MAX(MIN(CAST(freq * 20 AS INTEGER), 19), -1) AS bin FROM neuron_freq"
     "   WHERE run_id = ?1 AND label = '' AND ABS(threshold - 0.1) < 1e-9),"
     " n AS (SELECT layer, COUNT(*) AS total FROM f GROUP BY layer),"
     " bins(b) AS (SELECT (SELECT MIN(bin) FROM f) UNION ALL SELECT b + 1 FROM bins"
     "   WHERE b < (SELECT CASE WHEN MAX(bin) < 0 THEN -1 ELSE MIN(MAX(bin) + 1, 19) END FROM f))"
     " SELECT 'threshold 0.1 of max', 'layer ' || n.layer, bins.b / 20.0 + 0.025,"
     "   (SELECT COUNT(*) FROM f WHERE f.layer = n.layer AND f.bin = bins.b) * 1.0 / n.total"
     " FROM n, bins WHERE bins.b >= 0 OR EXISTS (SELECT 1 FROM f WHERE f.layer = n.layer AND f.bin = bins.b)"
     " ORDER BY n.layer, bins.b",
     "lines", "activation frequency (fraction of tokens with r > 0.1)", "share of the layer's neurons", 0, 0, "histeps", "0:1", NULL, NULL, 0, 0, NULL, NULL},
    {"cett_sparsity", "sparsity", "Sparsity at fixed CETT, by layer",
     "For each layer, the fraction of (token, neuron) pairs whose output norm lies below the threshold ε at which the "
     "cumulative error of tail truncation (CETT: ‖Σ of the truncated neurons' outputs‖ / ‖FFN output‖, averaged over "
     "tokens) reaches the target. Higher means more neurons can be skipped for the same error.",
     "SELECT 'CETT sparsity', 'CETT ' || printf('%g', target), layer, sparsity FROM sparsity_cett"
     " WHERE run_id = ?1 AND label = '' AND layer >= 0 ORDER BY target, layer",
     "lines", "layer", "sparsity (fraction of neurons below ε)", 0, 0, "linespoints", NULL, "outside right top vertical", NULL, 0, 0, NULL, NULL},
    {"perturbation", "perturb", "Perplexity when the lowest-indicator neurons are masked",
     "Change of perplexity against the unmasked model (ratio 0 of the same run; percent, (PPL_masked − PPL_0) / PPL_0, "
     "the perplexity that neuronlab perturb prints) when, for every token and layer, the given fraction of FFN neurons "
     "with the lowest indicator is zeroed: by activation value |a_i|, by output norm |a_i|·‖W_out[:, i]‖, or at random "
     "(the control). One panel per ability (all documents first), one y axis for all panels. The y axis is symmetric "
     "logarithmic: linear within ±0.1 % and logarithmic beyond, so small changes (and improvements, below 0) show "
     "beside the random control's thousands of percent. The gap to the random curve shows how much of the FFN "
     "computation the long tail does not need.",
     "WITH q AS (SELECT p.label, p.metric, p.ratio, p.ppl, COALESCE((SELECT b.ppl FROM perturb b WHERE b.run_id = p.run_id"
     "   AND b.label = p.label AND b.ratio = 0 AND b.metric = p.metric), (SELECT MIN(b.ppl) FROM perturb b"
     "   WHERE b.run_id = p.run_id AND b.label = p.label AND b.ratio = 0)) AS base FROM perturb p WHERE p.run_id = ?1)"
     " SELECT CASE WHEN label = '' THEN 'all documents' ELSE label END || CASE WHEN NOT EXISTS (SELECT 1 FROM perturb z"
     "   WHERE z.run_id = ?1 AND z.label = q.label AND z.ratio = 0) THEN ' (no ratio 0 in the run: no baseline)' ELSE '' END,"
     " CASE metric WHEN 'value' THEN 'lowest value |a_i|' WHEN 'norm' THEN 'lowest output norm' WHEN 'random'"
     "   THEN 'random neurons (control)' ELSE metric END, ratio,"
     " CASE WHEN base = 0 THEN 'NaN' ELSE 100.0 * (ppl / base - 1) END FROM q" /* no change relative to 0: not a number */
     " ORDER BY label <> '', label, CASE metric WHEN 'value' THEN 0 WHEN 'norm' THEN 1 ELSE 2 END, ratio",
     "lines", "fraction of neurons masked per token and layer", "perplexity change vs. unmasked model (%)", 0, 0, "linespoints",
     NULL, NULL, NULL, 1, 0.1, NULL, NULL},
    {"ability_scores", "ability", "Ability neurons: how well single neurons tell an ability's documents apart",
     "For each ability (one panel) and layer, the FuncScore of the layer's FFN neurons: how well a neuron's value on a "
     "document (its mean |activation| over the prompt tokens) separates the documents of that ability from the others, "
     "as average precision (AP) or as predictivity (balanced accuracy of 'value above its mean'): the y axis names the "
     "method of this run. Curves: the best neuron of the layer; the 99.5th percentile of the layer's neurons (the score "
     "of the neuron at rank ceil(0.005·d_ff): the best 0.5 % of the neurons score at least this — not the 5 % top sets "
     "that pruning and overlap use); the mean over all neurons; and the best neuron when the ability labels are "
     "randomly shuffled — what the best of the layer's neurons reaches by chance alone. The random baseline (dashed) is "
     "the score of a neuron that ignores the label (AP: the share of the ability's documents; predictivity: 0.5). All "
     "panels share the y axis and the legend. Neurons are ability-specific where the best and 99.5th-percentile curves "
     "rise clearly above the shuffled curve, not merely above the baseline.",
     "SELECT l.ability || CASE WHEN b.docs IS NULL THEN '' ELSE printf(' (%d of %d documents)', b.positives, b.docs) END,"
     " s.name, l.layer,"
     " CASE s.k WHEN 0 THEN l.best WHEN 1 THEN l.top_permille WHEN 2 THEN l.mean WHEN 3 THEN l.shuffled_best ELSE l.baseline END"
     " FROM ability_layer l"
     " JOIN (SELECT 0 AS k, 'best neuron' AS name UNION ALL SELECT 1, '99.5th percentile (top 0.5 % of neurons)'"
     "   UNION ALL SELECT 2, 'mean over neurons' UNION ALL SELECT 3, 'best neuron (shuffled labels)'"
     "   UNION ALL SELECT 4, 'random baseline') s"
     " LEFT JOIN ability_label b ON b.run_id = l.run_id AND b.ability = l.ability"
     " WHERE l.run_id = ?1 AND l.layer >= 0 ORDER BY l.ability, s.k, l.layer",
     "lines", "layer", "score (AP or predictivity)", 0, 0, "linespoints", NULL, NULL, "0:1", 1, 0,
     "SELECT CASE method WHEN 'ap' THEN 'average precision (AP)' WHEN 'predictivity' THEN 'predictivity (balanced accuracy)'"
     " ELSE method END || CASE WHEN symmetric THEN ', two-sided' ELSE '' END FROM ability_run WHERE run_id = ?1", NULL},
    {"ability_depth", "ability", "Ability neurons: in which layers they sit",
     "Where each ability's neurons lie: for every ability (one curve), the share of its global top set (the "
     "best-scoring neurons over all recorded layers together) that falls in each layer; each curve sums to 1. With "
     "no preference for depth every layer would hold 1 / (number of recorded layers).",
     "SELECT printf('global top set: best %g%% of all recorded neurons', 100.0 * r.top), d.ability, d.layer, d.share"
     " FROM ability_depth d JOIN ability_run r ON r.run_id = d.run_id"
     " WHERE d.run_id = ?1 AND d.layer >= 0 ORDER BY d.ability, d.layer",
     "lines", "layer", "share of the ability's top set in the layer", 0, 0, "linespoints", NULL, "outside right top vertical", NULL, 0, 0, NULL, NULL},
    {"prune_matrix", "prune", "Pruning ability neurons: which abilities suffer",
     "Relative change of perplexity against the unpruned model (percent; 0 = no change, red = worse, blue = better) "
     "when FFN neurons are zeroed at every token. Rows: the ability whose top set (from the ability run) is zeroed; "
     "columns: the documents the model is evaluated on ('all' = every document). Left: the row's ability neurons "
     "zeroed. Middle: the same number of neurons in each layer chosen at random, mean ± standard deviation over the "
     "random seeds — the chance level of removing that many neurons and its spread. Right: the difference (percentage "
     "points). Colour scale: symmetric logarithmic (asinh), linear within ±1 and logarithmic beyond, shared by the "
     "three panels, so one large cell does not wash out the rest; the numbers in the cells are exact. Specific "
     "ability neurons show a red diagonal: their own ability's documents suffer more than the others, and more than "
     "after the random control. Grey cells: no value.",
     "SELECT panel, r, CASE c WHEN '' THEN 'all' ELSE c END, v, e FROM ("
     " SELECT 0 AS k, 'top set of the row''s ability zeroed' AS panel, pruned AS r, label AS c, 100.0 * rel_change AS v,"
     "   NULL AS e FROM prune_effect WHERE run_id = ?1 AND control = 'ability' AND pruned <> ''"
     " UNION ALL"
     " SELECT 1, (SELECT CASE WHEN MAX(seeds) > 1 THEN printf('same-size random neurons (mean ± sd, %d seeds)', MAX(seeds))"
     "   ELSE 'same-size random neurons (one seed)' END FROM prune_control WHERE run_id = ?1), pruned, label, 100.0 * mean,"
     "   CASE WHEN seeds > 1 THEN 100.0 * sd END"
     "  FROM prune_control WHERE run_id = ?1 AND pruned <> ''"
     " UNION ALL"
     " SELECT 2, 'ability − random (percentage points)', e.pruned, e.label, 100.0 * (e.rel_change - c.mean), NULL"
     "  FROM prune_effect e JOIN prune_control c ON c.run_id = e.run_id AND c.pruned = e.pruned AND c.label = e.label"
     "  WHERE e.run_id = ?1 AND e.control = 'ability' AND e.pruned <> '')"
     " ORDER BY k, r, c = '', c",
     "heatmap", "evaluated on", "relative perplexity change (%)", 0, 0, "%.1f", NULL, NULL, NULL, 0, 1.0,
     /* the colour box label (one line under the panels) says which documents were scored, from the
        run's params (eval, eval_docs, eval_file: prune.h) */
     "SELECT 'relative perplexity change (%), ' || CASE json_extract(params, '$.eval')"
     " WHEN 'heldout' THEN printf('on the %d held-out documents (not used to choose the top sets)', json_extract(params, '$.eval_docs'))"
     " WHEN 'selection' THEN printf('on the %d documents the top sets were chosen on (no held-out split)', json_extract(params, '$.eval_docs'))"
     " WHEN 'file' THEN printf('on %d documents of %s (--eval)', json_extract(params, '$.eval_docs'), json_extract(params, '$.eval_file'))"
     " WHEN 'all' THEN printf('on all %d documents', json_extract(params, '$.eval_docs')) END FROM runs WHERE id = ?1",
     "SELECT 'Documents scored in this run: ' || CASE json_extract(params, '$.eval')"
     " WHEN 'heldout' THEN printf('the %d documents the ability run''s --split held out, so the top sets are judged on documents "
     "they were not chosen on.', json_extract(params, '$.eval_docs'))"
     " WHEN 'selection' THEN printf('the same %d documents the top sets were chosen on (the ability run has no --split): the "
     "effects are optimistic; ability --split 0.5 or prune --eval FILE scores held-out documents.', json_extract(params, '$.eval_docs'))"
     " WHEN 'file' THEN printf('the %d documents of another dataset, %s (prune --eval).', json_extract(params, '$.eval_docs'),"
     " json_extract(params, '$.eval_file'))"
     " WHEN 'all' THEN printf('all %d documents of the dataset (user neuron sets, --neurons).', json_extract(params, '$.eval_docs'))"
     " ELSE 'not recorded in the run''s parameters.' END FROM runs WHERE id = ?1"},
    {"overlap", "overlap", "Overlap of the abilities' top sets",
     "How many neurons the top sets of two abilities share, over all recorded layers. Left: |A∩B| / |A|, the share of "
     "the row ability A's neurons that are also in the column ability B's set (not symmetric). Right: Jaccard index "
     "|A∩B| / |A∪B| (symmetric). The panel titles give the chance level: the expected value for random sets of the "
     "same sizes (per layer when the sets were chosen per layer). Values well above it mean the two abilities share "
     "neurons; the diagonal (an ability with itself, always 1) is left blank. Colour scale: one for both panels, "
     "logarithmic (asinh: linear within 0.01, logarithmic beyond), so that small overlaps near the chance level "
     "(0.04 against 0.09) differ in colour beside one or two large ones (0.6) instead of being washed out by them; "
     "the numbers in the cells are exact.",
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
     "heatmap", "B (column ability); A = row ability", "overlap of the top sets", 0, 0, "%.2f", NULL, NULL, NULL, 0, 0.01, NULL,
     NULL},
    {"moe_sweep_ppl", "moe-sweep", "MoEfication: perplexity against FFN compute",
     "Perplexity on all documents of the sweep's dataset against the FFN FLOPs per token as a fraction of the "
     "dense model's (all layers: the experts computed, the router and the static vectors of fill mean; analytic, a "
     "multiply-add = 2), one curve per router and fill, for K/E = the sweep's values; the grey dashed line is the dense "
     "model. The oracle router ranks the experts by their true contribution, which needs the dense FFN (so its real cost is "
     "the dense FFN's): it is drawn at the FLOPs of its selected experts alone, as the upper bound of what a router "
     "could reach at that cost. Fill zero drops the unselected experts (MoEfication); fill mean replaces them by their "
     "neurons' mean activations folded into static vectors (G-MoEfication). One panel per model: the run drawn and "
     "the latest complete sweep of every other model in the database (the zoo side by side).",
     "WITH me AS (SELECT model FROM runs WHERE id = ?1),"
     " r AS (SELECT id, model, params FROM runs WHERE id = ?1 OR id IN (SELECT MAX(id) FROM runs WHERE kind = 'moe-sweep'"
     "   AND status = 'complete' AND model IS NOT (SELECT model FROM me) GROUP BY model)),"
     " p AS (SELECT id, (CASE WHEN instr(model, '/') THEN substr(model, length(rtrim(model, replace(model, '/', ''))) + 1)"
     "   ELSE model END) || printf(' (%d experts per layer, split %s)', json_extract(params, '$.moe.experts'),"
     "   json_extract(params, '$.split')) AS name, id = ?1 AS mine FROM r)"
     " SELECT name, series, x, y FROM ("
     " SELECT p.name AS name, p.mine AS mine, s.router || ' router · ' || s.fill || ' fill' AS series,"
     "   CASE WHEN s.router = 'oracle' THEN s.expert_frac ELSE s.ffn_frac END AS x, s.ppl AS y"
     " FROM moe_sweep s JOIN p ON p.id = s.run_id WHERE s.label = '' AND NOT s.dense"
     " UNION ALL"
     " SELECT p.name, p.mine, 'dense model', x.v, d.ppl FROM moe_sweep d JOIN p ON p.id = d.run_id"
     "   JOIN (SELECT run_id, CASE WHEN router = 'oracle' THEN expert_frac ELSE ffn_frac END AS v FROM moe_sweep WHERE label = '') x"
     "   ON x.run_id = d.run_id WHERE d.dense AND d.label = '')"
     " ORDER BY mine DESC, name, series = 'dense model', series LIKE 'oracle%', series, x",
     "lines", "FFN FLOPs per token / dense (oracle: its experts alone)", "perplexity (all documents)", 0, 0, "linespoints", NULL,
     "top right", NULL, 0, 0, NULL,
     "SELECT printf('Run %d: %s, context %d tokens (stride %d); tokens/s and router recall per configuration are in the moe_sweep "
     "table (neuronlab moe-sweep prints them).', id, dataset, json_extract(params, '$.ctx'), json_extract(params, '$.stride'))"
     " FROM runs WHERE id = ?1"},
    {"moe_sweep_labels", "moe-sweep", "MoEfication: which abilities lose most",
     "Relative perplexity change against the dense model (percent, symmetric logarithmic axis) per label of the dataset "
     "(one panel per router and fill) as K/E grows: abilities whose curve stays high need experts the router does not "
     "give them.",
     "SELECT s.router || ' router · ' || s.fill || ' fill', s.label, 100.0 * s.k_frac, 100.0 * (s.ppl / d.ppl - 1)"
     " FROM moe_sweep s JOIN moe_sweep d ON d.run_id = s.run_id AND d.dense AND d.label = s.label"
     " WHERE s.run_id = ?1 AND NOT s.dense AND s.label <> '' ORDER BY s.router = 'oracle', s.router, s.fill DESC, s.label, s.k",
     "lines", "K/E (% of the experts per token)", "perplexity change vs. dense (%)", 0, 0, "linespoints", NULL, NULL, NULL, 1, 1.0,
     NULL, NULL},
    {"expert_usage", "moe-usage", "Expert usage by ability",
     "For each MoE layer (one panel), the share of each label's tokens routed to each expert (percent; every token "
     "takes K experts, so a row sums to 100·K %; uniform routing gives 100·K/E % in every cell). Experts that one "
     "label uses far more than the others are the ability's experts.",
     "SELECT printf('layer %d', layer), label, expert, 100.0 * token_frac FROM expert_usage WHERE run_id = ?1"
     " ORDER BY layer, label, expert",
     "heatmap", "expert", "share of the label's tokens routed to the expert (%)", 0, 0, "%.0f", NULL, NULL, NULL, 0, 0,
     "SELECT printf('share of the label''s tokens routed to the expert (%%); K = %d of %d experts, router %s, fill %s: uniform %.1f %%',"
     " json_extract(params, '$.moe.k'), json_extract(params, '$.moe.experts'), json_extract(params, '$.moe.router'),"
     " json_extract(params, '$.moe.fill'), 100.0 * json_extract(params, '$.moe.k') / json_extract(params, '$.moe.experts'))"
     " FROM runs WHERE id = ?1", NULL},
    {"expert_usage_pca", "moe-usage", "Documents by their expert usage (PCA)",
     "Each labelled document as its expert-usage vector (the share of its tokens routed to each expert, every MoE layer "
     "concatenated), projected on the two leading principal components of all documents' vectors, coloured by label. "
     "Labels that form separate clusters are routed to different experts (the \"experts by language family\" figure of "
     "MoEfication, here by ability).",
     "SELECT printf('%d documents, %d usage values each', (SELECT COUNT(*) FROM expert_usage_pca WHERE run_id = ?1),"
     "   (SELECT COUNT(*) FROM expert_usage_doc WHERE run_id = ?1 AND doc = (SELECT MIN(doc) FROM expert_usage_doc WHERE run_id = ?1))),"
     " label, pc1, pc2 FROM expert_usage_pca WHERE run_id = ?1 ORDER BY label, doc",
     "lines", "principal component 1", "principal component 2", 0, 0, "points", NULL, "outside right top vertical", NULL, 0, 0,
     NULL, NULL},
    {"expert_ap", "moe-usage", "Expert usage as an ability detector",
     "For each label and MoE layer, the best average precision (AP) over the layer's experts of a document's usage of "
     "the expert (share of its tokens routed there) as a score for 'this document has the label' — the FuncScore of the "
     "ability analysis applied to experts instead of neurons. Left: the real labels; right: the same with the labels "
     "randomly shuffled, what the best of E experts reaches by chance. Chance level of a single expert: the label's "
     "share of the documents.",
     "SELECT CASE k WHEN 0 THEN 'best expert AP' ELSE 'best expert AP, shuffled labels' END, label, printf('%d', layer), v"
     " FROM (SELECT 0 AS k, label, layer, MAX(ap) AS v FROM expert_ap WHERE run_id = ?1 GROUP BY label, layer"
     "   UNION ALL SELECT 1, label, layer, MAX(ap_shuffled) FROM expert_ap WHERE run_id = ?1 GROUP BY label, layer)"
     " ORDER BY k, label, layer",
     "heatmap", "MoE layer", "average precision of the best expert", 0, 0, "%.2f", NULL, NULL, NULL, 0, 0, NULL, NULL},
    /* the logit lens (analyses/lens.h) and the attention probabilities of `record --attn` */
    {"lens_loss", "lens", "The logit lens: next-token loss by depth",
     "The residual stream after each layer (layer -1: the embedding) read out through the model's final norm and "
     "unembedding: the mean next-token loss over the predicted positions, one curve per label (all documents black). "
     "The last layer is the model's own loss; where a curve reaches it early, the later layers add little to the "
     "prediction of that label's tokens. Log y axis: the embedding's read-out is often far above the rest.",
     "SELECT 'mean loss (nats)', CASE WHEN label = '' THEN 'all tokens' ELSE label END, layer, loss FROM lens"
     " WHERE run_id = ?1 ORDER BY label <> '', label, layer",
     "lines", "layer (-1 = embedding)", "lens loss (nats, log scale)", 0, 1, "linespoints", NULL, "outside right top vertical", NULL, 0, 0, NULL, NULL},
    {"lens_kl", "lens", "The logit lens: distance to the final prediction by depth",
     "KL(final ‖ lens): how far each layer's read-out distribution is from the model's output distribution (0 at the "
     "last layer), and the share of positions whose top-1 token already equals the model's, one curve per label (all "
     "documents black).",
     "SELECT p, s, x, y FROM (SELECT 0 AS k, 'KL(final || lens) (nats)' AS p, label, CASE WHEN label = '' THEN 'all tokens'"
     " ELSE label END AS s, layer AS x, kl AS y FROM lens WHERE run_id = ?1 UNION ALL SELECT 1, 'top-1 agreement with the"
     " final layer', label, CASE WHEN label = '' THEN 'all tokens' ELSE label END, layer, top1_agree FROM lens WHERE run_id = ?1)"
     " ORDER BY k, label <> '', label, x",
     "lines", "layer (-1 = embedding)", "nats / share of positions", 0, 0, "linespoints", NULL, NULL, NULL, 1, 0, NULL, NULL},
    {"attention", "record", "Attention pattern of one head",
     "The attention probabilities of head 0 in the first layer stored by `record --attn`, on the first document of the "
     "activation file: row t (query position) holds the weights the token at t puts on each earlier position (columns; "
     "every row sums to 1, the upper triangle is 0 by causality). Read from /attn/layer_{l}/doc_0 of the run's file.",
     "SELECT panel, row, col, value FROM temp.nl_attn_fig ORDER BY rowid",
     "heatmap", "key position", "attention probability", 0, 0, "%.2f", NULL, NULL, NULL, 0, 0, NULL, NULL},
};
const int nl_n_figures = sizeof nl_figures / sizeof nl_figures[0];
