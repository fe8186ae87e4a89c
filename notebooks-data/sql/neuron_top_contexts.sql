-- Neuron pages (`neuronlab neurons`): the five neurons of each layer with the largest mean |a|,
-- their largest |a|, the fraction of tokens where they are exactly zero, and the context of
-- their top activation (the token marked with [ ]).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'neurons' AND status = 'complete'),
ranked AS (
  SELECT layer, neuron, mean_abs, max_abs, zero_frac,
         row_number() OVER (PARTITION BY layer ORDER BY mean_abs DESC, neuron) AS rk
    FROM neuron_stat WHERE run_id = (SELECT id FROM run))
SELECT r.layer, r.neuron, round(r.mean_abs, 5) AS mean_abs, round(r.max_abs, 5) AS max_abs,
       round(r.zero_frac, 4) AS zero_frac, c.value AS top_value, c.doc AS top_doc, c.pos AS top_pos,
       c.before || '[' || c.token || ']' || c.after AS top_context
  FROM ranked r
  LEFT JOIN neuron_context c ON c.run_id = (SELECT id FROM run) AND c.layer = r.layer AND c.neuron = r.neuron AND c.rank = 1
 WHERE r.rk <= 5
 ORDER BY r.layer, r.rk;
