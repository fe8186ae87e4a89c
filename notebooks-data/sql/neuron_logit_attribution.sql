-- What does a neuron write into the logits? For every neuron of the latest attribute run, its five
-- most promoted and five most suppressed tokens (W_U . W_out[:, i]) on one line each.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'attribute' AND status = 'complete')
SELECT layer, neuron, CASE WHEN rank > 0 THEN 'promotes' ELSE 'suppresses' END AS direction,
       group_concat(coalesce(token, '#' || token_id) || ' (' || printf('%+.3f', logit) || ')', ', ') AS tokens
  FROM (SELECT * FROM neuron_attribution WHERE run_id = (SELECT id FROM run) AND abs(rank) <= 5
         ORDER BY layer, neuron, rank < 0, abs(rank))
 GROUP BY layer, neuron, rank > 0
 ORDER BY layer, neuron, rank > 0 DESC;
