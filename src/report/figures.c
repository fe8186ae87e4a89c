/* figures.c — the figures of `neuronlab report`, as data (see nl_figure in report.h): each
 * query returns (panel, series, x, y) rows of one run (?1) of its analysis. Adding a figure is
 * adding an entry here (and a template under plots/ if it needs a new kind of plot). */
#include "neuronlab/report.h"

const nl_figure nl_figures[] = {
    {"sparsity_cdf_value", "sparsity", "Long tail of the activation value",
     "Cumulative distribution of each neuron's activation value |a_i| normalised by the largest |a_j| of its layer "
     "at the same token (log axis), over every token and neuron, one curve per layer. A curve that rises early means "
     "most neurons carry a tiny fraction of the layer's largest activation: the long tail behind activation sparsity.",
     "SELECT 'value', CASE WHEN layer < 0 THEN 'all layers' ELSE 'layer ' || layer END, x, cdf FROM sparsity_cdf"
     " WHERE run_id = ?1 AND indicator = 'value' AND label = '' AND x > 0 ORDER BY layer < 0, layer, x",
     "lines", "|a_i| / max_j |a_j| (per token and layer)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL},
    {"sparsity_cdf_norm", "sparsity", "Long tail of the output norm",
     "Cumulative distribution of each neuron's output norm |a_i|·‖W_out[:, i]‖₂ normalised by the largest of its layer "
     "at the same token (log axis), one curve per layer. The output norm measures what a neuron actually adds to the "
     "residual stream; it is the indicator behind CETT.",
     "SELECT 'output norm', CASE WHEN layer < 0 THEN 'all layers' ELSE 'layer ' || layer END, x, cdf FROM sparsity_cdf"
     " WHERE run_id = ?1 AND indicator = 'norm' AND label = '' AND x > 0 ORDER BY layer < 0, layer, x",
     "lines", "|a_i|·‖w_i‖ / max (per token and layer; w_i: column i of W_out)", "fraction of (token, neuron) pairs ≤ x", 1, 0, "lines", NULL},
    {"activation_frequency", "sparsity", "How often each neuron is active",
     "Histogram of the neurons' activation frequency: the fraction of tokens on which a neuron's value exceeds 0.1 of "
     "its layer's largest at that token, one curve per layer (share of the layer's neurons per bin of width 0.05). Mass "
     "at the left: neurons that rarely fire (dead at 0); at the right: resident neurons that fire on almost every token.",
     "SELECT 'threshold 0.1 of max', 'layer ' || layer, MIN(CAST(freq * 20 AS INTEGER), 19) / 20.0 + 0.025,"
     " COUNT(*) * 1.0 / (SELECT COUNT(*) FROM neuron_freq g WHERE g.run_id = f.run_id AND g.layer = f.layer"
     "   AND g.label = '' AND g.threshold = f.threshold)"
     " FROM neuron_freq f WHERE run_id = ?1 AND label = '' AND ABS(threshold - 0.1) < 1e-9"
     " GROUP BY layer, MIN(CAST(freq * 20 AS INTEGER), 19) ORDER BY layer, 3",
     "lines", "activation frequency (fraction of tokens with r > 0.1)", "share of the layer's neurons", 0, 0, "histeps", "0:1"},
    {"cett_sparsity", "sparsity", "Sparsity at fixed CETT, by layer",
     "For each layer, the fraction of (token, neuron) pairs whose output norm lies below the threshold ε at which the "
     "cumulative error of tail truncation (CETT: ‖Σ of the truncated neurons' outputs‖ / ‖FFN output‖, averaged over "
     "tokens) reaches the target. Higher means more neurons can be skipped for the same error.",
     "SELECT 'CETT sparsity', 'CETT ' || printf('%g', target), layer, sparsity FROM sparsity_cett"
     " WHERE run_id = ?1 AND label = '' AND layer >= 0 ORDER BY target, layer",
     "lines", "layer", "sparsity (fraction of neurons below ε)", 0, 0, "linespoints", NULL},
    {"perturbation", "perturb", "Loss when the lowest-indicator neurons are masked",
     "Loss (mean negative log-likelihood, nats) when, for every token and layer, the given fraction of FFN neurons "
     "with the lowest indicator is zeroed: by activation value, by output norm, or at random (the control). One panel "
     "per ability (all documents first). The gap to the random curve shows how much of the FFN computation the "
     "long tail does not need.",
     "SELECT CASE WHEN label = '' THEN 'all documents' ELSE label END, metric, ratio, nll FROM perturb"
     " WHERE run_id = ?1 ORDER BY label <> '', label, CASE metric WHEN 'value' THEN 0 WHEN 'norm' THEN 1 ELSE 2 END, ratio",
     "lines", "fraction of neurons masked per token and layer", "loss (nats)", 0, 0, "linespoints", NULL},
};
const int nl_n_figures = sizeof nl_figures / sizeof nl_figures[0];
