-- Native mixture-of-experts model (`neuronlab experts`): for each MoE layer and label, the routed
-- expert that takes the largest share of the label's tokens, beside that expert's share of all
-- tokens; "lift" = label share / all-token share (> 1: the label prefers the expert). Uniform
-- routing gives k/E to every expert. Ties: the lowest expert id.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'experts' AND status = 'complete'),
ranked AS (
  SELECT l.layer, l.label, l.expert, l.tokens, l.token_frac, a.token_frac AS all_frac,
         row_number() OVER (PARTITION BY l.layer, l.label ORDER BY l.token_frac DESC, l.expert) AS rk
    FROM expert_load l
    JOIN expert_load a ON a.run_id = l.run_id AND a.layer = l.layer AND a.expert = l.expert AND a.label = '*'
   WHERE l.run_id = (SELECT id FROM run) AND l.label <> '*' AND l.expert >= 0)
SELECT layer, label, expert, tokens, round(100 * token_frac, 2) AS share_pct, round(100 * all_frac, 2) AS all_tokens_pct,
       round(token_frac / all_frac, 3) AS lift
  FROM ranked WHERE rk = 1
 ORDER BY layer, label;
