-- The long tail in numbers: quantiles of r = |a_i| / max_j |a_j| per layer (one column per q).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'sparsity' AND status = 'complete')
SELECT layer,
       max(CASE WHEN abs(q - 0.1) < 1e-9 THEN round(value, 6) END) AS q10,
       max(CASE WHEN abs(q - 0.25) < 1e-9 THEN round(value, 6) END) AS q25,
       max(CASE WHEN abs(q - 0.5) < 1e-9 THEN round(value, 6) END) AS median,
       max(CASE WHEN abs(q - 0.9) < 1e-9 THEN round(value, 6) END) AS q90,
       max(CASE WHEN abs(q - 0.99) < 1e-9 THEN round(value, 6) END) AS q99
  FROM sparsity_quantile
 WHERE run_id = (SELECT id FROM run) AND label = '' AND indicator = 'value'
 GROUP BY layer ORDER BY layer < 0, layer;
