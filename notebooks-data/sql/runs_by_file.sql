-- Which runs used the same file, wherever they were run from and whatever it was called? Runs
-- grouped by the content checksum of their model, dataset and source (runs.model_sum,
-- dataset_sum, source_sum: size + FNV-1a 64 of the first and last MiB; README "Results
-- database"), one row per distinct file content with the runs that used it and in which role.
WITH used AS (SELECT id, kind, 'model' AS role, model AS path, model_sum AS checksum FROM runs WHERE model_sum IS NOT NULL
              UNION ALL SELECT id, kind, 'dataset', dataset, dataset_sum FROM runs WHERE dataset_sum IS NOT NULL
              UNION ALL SELECT id, kind, 'source', source, source_sum FROM runs WHERE source_sum IS NOT NULL)
SELECT checksum, min(path) AS path, count(DISTINCT path) AS paths, count(*) AS uses,
       group_concat(id || ':' || kind || ':' || role, ' ') AS runs
  FROM (SELECT * FROM used ORDER BY id, role)
 GROUP BY checksum
 ORDER BY min(id), checksum;
