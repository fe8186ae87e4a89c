-- What has been run on this database, with what, and did it finish? model / dataset / source
-- are canonical absolute paths; the *_sum columns identify their content (NULL for a name that
-- is not a file, and for runs written before results schema 3).
SELECT id, kind, status, model, dataset, source, model_sum, dataset_sum, source_sum, started_at, ended_at, params, message
  FROM runs ORDER BY id;
