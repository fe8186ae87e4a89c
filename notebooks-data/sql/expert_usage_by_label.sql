-- MoEfied model (`neuronlab moe-usage`): for each MoE layer and label, the expert the router
-- sends the largest share of the label's tokens to, and how far that is above uniform routing
-- (K/E, from the run's params). Ties: the lowest expert id.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'moe-usage' AND status = 'complete'),
p AS (SELECT json_extract(params, '$.moe.k') AS k, json_extract(params, '$.moe.experts') AS e FROM runs WHERE id = (SELECT id FROM run)),
ranked AS (
  SELECT layer, label, expert, token_frac,
         row_number() OVER (PARTITION BY layer, label ORDER BY token_frac DESC, expert) AS rk
    FROM expert_usage WHERE run_id = (SELECT id FROM run))
SELECT layer, label, expert, round(100 * token_frac, 2) AS share_pct,
       round(100.0 * (SELECT k FROM p) / (SELECT e FROM p), 2) AS uniform_pct,
       round(token_frac * (SELECT e FROM p) / (SELECT k FROM p), 3) AS times_uniform
  FROM ranked WHERE rk = 1
 ORDER BY layer, label;
