-- The 10 least active neurons of each layer (dead neurons first).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'sparsity' AND status = 'complete'),
ranked AS (
  SELECT f.layer, f.neuron, f.freq, n.max_abs, n.dead,
         row_number() OVER (PARTITION BY f.layer ORDER BY f.freq, n.max_abs, f.neuron) AS rank
    FROM neuron_freq f
    JOIN neurons n ON n.run_id = f.run_id AND n.layer = f.layer AND n.neuron = f.neuron AND n.label = f.label
   WHERE f.run_id = (SELECT id FROM run) AND f.label = '' AND abs(f.threshold - 0.1) < 1e-9)
SELECT layer, rank, neuron, round(freq, 5) AS freq, round(max_abs, 5) AS max_abs, dead
  FROM ranked WHERE rank <= 10 ORDER BY layer, rank;
