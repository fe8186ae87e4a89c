-- Is pruning specific? Per pruned ability: the change on its own documents (diagonal), the
-- mean change on the other abilities (rest of the row), and the random control on its own
-- documents. Specific: diagonal well above both.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'prune' AND status = 'complete'),
     e AS (SELECT * FROM prune_effect WHERE run_id = (SELECT id FROM run) AND control = 'ability' AND label <> '')
SELECT d.pruned,
       round(100 * d.rel_change, 2) AS own_pct,
       round(100 * (SELECT avg(o.rel_change) FROM e o WHERE o.pruned = d.pruned AND o.label <> d.pruned), 2) AS others_pct,
       round(100 * c.mean, 2) AS random_own_pct,
       round(100 * c.sd, 2) AS random_sd_pct
  FROM e d
  LEFT JOIN prune_control c ON c.run_id = d.run_id AND c.pruned = d.pruned AND c.label = d.label
 WHERE d.label = d.pruned
 ORDER BY d.pruned;
