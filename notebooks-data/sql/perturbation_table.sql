-- Perplexity against the fraction of neurons masked per token and layer: value vs output norm
-- vs the random control, over all documents (the table of a sparsity paper).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'perturb' AND status = 'complete')
SELECT ratio, masked,
       round(max(CASE WHEN metric = 'value'  THEN ppl END), 4) AS ppl_value,
       round(max(CASE WHEN metric = 'norm'   THEN ppl END), 4) AS ppl_norm,
       round(max(CASE WHEN metric = 'random' THEN ppl END), 4) AS ppl_random
  FROM perturb
 WHERE run_id = (SELECT id FROM run) AND label = ''
 GROUP BY ratio, masked ORDER BY ratio;
