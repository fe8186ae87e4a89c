-- Does sparsity differ between abilities? Per label, over all layers: fraction of pairs below
-- 0.1 of the maximum, mean normalised value, and the CETT-0.2 sparsity (mean over layers).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'sparsity' AND status = 'complete')
SELECT CASE WHEN s.label = '' THEN '(all)' ELSE s.label END AS label,
       s.tokens,
       round(s.frac_below_0_1, 4) AS value_below_0_1,
       round(s.mean_r, 4)         AS mean_r,
       round(c.sparsity, 4)       AS cett_0_2_sparsity
  FROM sparsity_layer s
  LEFT JOIN sparsity_cett c ON c.run_id = s.run_id AND c.layer = s.layer AND c.label = s.label AND abs(c.target - 0.2) < 1e-9
 WHERE s.run_id = (SELECT id FROM run) AND s.layer = -1 AND s.indicator = 'value'
 ORDER BY s.label <> '', s.label;
