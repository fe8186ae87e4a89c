-- How sparse is each layer? Fraction of (token, neuron) pairs below 0.1 of the token's maximum
-- (value and output norm), the sparsity at CETT 0.2, dead and resident neurons.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'sparsity' AND status = 'complete')
SELECT v.layer,
       round(v.frac_below_0_1, 4) AS value_below_0_1,
       round(n.frac_below_0_1, 4) AS norm_below_0_1,
       round(c.sparsity, 4)       AS cett_0_2_sparsity,
       v.dead, v.resident, v.neurons
  FROM sparsity_layer v
  JOIN sparsity_layer n ON n.run_id = v.run_id AND n.layer = v.layer AND n.label = v.label AND n.indicator = 'norm'
  LEFT JOIN sparsity_cett c ON c.run_id = v.run_id AND c.layer = v.layer AND c.label = v.label AND abs(c.target - 0.2) < 1e-9
 WHERE v.run_id = (SELECT id FROM run) AND v.label = '' AND v.indicator = 'value'
 ORDER BY v.layer < 0, v.layer;
