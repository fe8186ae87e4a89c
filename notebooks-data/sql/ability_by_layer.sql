-- How well the best neurons of each layer tell each ability's documents from the others:
-- best, top-5‰ and mean score per layer beside the random baseline (positive rate for AP)
-- and the best score with shuffled labels (the chance level of the best of many neurons).
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'ability' AND status = 'complete')
SELECT ability, layer,
       round(best, 4) AS best, round(top_permille, 4) AS top_5permille, round(mean, 4) AS mean,
       round(baseline, 4) AS baseline, round(shuffled_best, 4) AS shuffled_best
  FROM ability_layer
 WHERE run_id = (SELECT id FROM run)
 ORDER BY ability, layer;
