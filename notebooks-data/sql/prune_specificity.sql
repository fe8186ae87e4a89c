-- Is pruning specific? Per pruned ability: the change on its own documents (diagonal), the
-- mean change on the other abilities (rest of the row), and the random control on its own
-- documents. Specific: diagonal well above both. eval_set / eval_docs: which documents were
-- scored (see prune_matrix.sql; 'selection' means the same documents the neurons were chosen on).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'prune' AND status = 'complete'),
     e AS (SELECT * FROM prune_effect WHERE run_id = (SELECT id FROM run) AND control = 'ability' AND label <> '')
SELECT d.pruned,
       round(100 * d.rel_change, 2) AS own_pct,
       round(100 * (SELECT avg(o.rel_change) FROM e o WHERE o.pruned = d.pruned AND o.label <> d.pruned), 2) AS others_pct,
       round(100 * c.mean, 2) AS random_own_pct,
       round(100 * c.sd, 2) AS random_sd_pct,
       json_extract(r.params, '$.eval') AS eval_set, json_extract(r.params, '$.eval_docs') AS eval_docs
  FROM e d
  JOIN runs r ON r.id = d.run_id
  LEFT JOIN prune_control c ON c.run_id = d.run_id AND c.pruned = d.pruned AND c.label = d.label
 WHERE d.label = d.pruned
 ORDER BY d.pruned;
