-- The five highest-scoring neurons of each ability over all layers, with how often each is
-- active (from the latest sparsity run of the same activation file — the same content, matched
-- by runs.source_sum, so it does not matter from which folder or under which name each ran; the
-- database needs the sparsity tables: remove the LEFT JOIN when it has none).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'ability' AND status = 'complete'),
     sp AS (SELECT max(s.id) AS id FROM runs s, runs a
             WHERE a.id = (SELECT id FROM run) AND s.kind = 'sparsity' AND s.status = 'complete' AND s.source_sum = a.source_sum),
     ranked AS (SELECT ability, layer, neuron, score,
                       row_number() OVER (PARTITION BY ability ORDER BY score DESC, layer, neuron) AS r
                  FROM ability_score WHERE run_id = (SELECT id FROM run))
SELECT ranked.ability, ranked.r AS rank, ranked.layer, ranked.neuron, round(ranked.score, 4) AS score,
       round(f.freq, 4) AS active_freq_0_1
  FROM ranked
  LEFT JOIN neuron_freq f ON f.run_id = (SELECT id FROM sp) AND f.layer = ranked.layer AND f.neuron = ranked.neuron
                         AND f.label = '' AND abs(f.threshold - 0.1) < 1e-9
 WHERE ranked.r <= 5
 ORDER BY ranked.ability, ranked.r;
