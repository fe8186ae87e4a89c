-- The pruning matrix in long form: relative perplexity change (%) of each evaluated ability
-- when each ability's top set is zeroed, beside the same-size random control (mean ± sd over
-- seeds); "excess" = pruned − random. eval_set / eval_docs say which documents were scored
-- (from the run's params): 'heldout' = the half the ability run's --split did not select on,
-- 'selection' = the very documents the top sets were chosen on (the ability run had no split:
-- optimistic), 'file' = another dataset (prune --eval FILE, named in eval_file), 'all' = every
-- document (user sets from --neurons).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'prune' AND status = 'complete')
SELECT e.pruned, CASE WHEN e.label = '' THEN 'all' ELSE e.label END AS evaluated,
       round(100 * e.rel_change, 2) AS change_pct,
       round(100 * c.mean, 2) AS random_pct, round(100 * c.sd, 2) AS random_sd_pct,
       round(100 * (e.rel_change - c.mean), 2) AS excess_pct,
       json_extract(r.params, '$.eval') AS eval_set, json_extract(r.params, '$.eval_docs') AS eval_docs,
       json_extract(r.params, '$.eval_file') AS eval_file
  FROM prune_effect e
  JOIN runs r ON r.id = e.run_id
  LEFT JOIN prune_control c ON c.run_id = e.run_id AND c.pruned = e.pruned AND c.label = e.label
 WHERE e.run_id = (SELECT id FROM run) AND e.control = 'ability'
 ORDER BY e.pruned, e.label = '', e.label;
