-- The 10 most frequently active neurons of each layer (active: |a| above 0.1 of the token's
-- largest |a| in the layer), with their mean |a| and output-weight norm.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'sparsity' AND status = 'complete'),
ranked AS (
  SELECT f.layer, f.neuron, f.freq, n.mean_abs, n.w_out_norm, n.resident,
         row_number() OVER (PARTITION BY f.layer ORDER BY f.freq DESC, f.neuron) AS rank
    FROM neuron_freq f
    JOIN neurons n ON n.run_id = f.run_id AND n.layer = f.layer AND n.neuron = f.neuron AND n.label = f.label
   WHERE f.run_id = (SELECT id FROM run) AND f.label = '' AND abs(f.threshold - 0.1) < 1e-9)
SELECT layer, rank, neuron, round(freq, 4) AS freq, round(mean_abs, 5) AS mean_abs,
       round(w_out_norm, 4) AS w_out_norm, resident
  FROM ranked WHERE rank <= 10 ORDER BY layer, rank;
