-- What has been run on this database, with what, and did it finish?
SELECT id, kind, status, model, dataset, source, started_at, ended_at, params, message
  FROM runs ORDER BY id;
