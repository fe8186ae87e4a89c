-- Which abilities share neurons? Every pair over all layers, most overlapping first, beside
-- what two unrelated sets of the same sizes would share.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'overlap' AND status = 'complete')
SELECT a, b, inter AS shared, size_a, round(frac, 4) AS shared_of_a, round(jaccard, 4) AS jaccard,
       round(baseline_frac, 4) AS random_shared_of_a, round(baseline_jaccard, 4) AS random_jaccard
  FROM overlap
 WHERE run_id = (SELECT id FROM run) AND layer = -1 AND a < b
 ORDER BY jaccard DESC;
