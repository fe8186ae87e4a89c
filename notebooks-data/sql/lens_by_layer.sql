-- The logit lens by depth: how much of the final prediction each layer's residual stream already
-- holds, for all documents and per label (layer -1 = the embedding; the last layer is the model).
-- loss_gap = the depth's loss minus the model's own loss on the same predictions.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'lens' AND status = 'complete'),
     last AS (SELECT label, loss FROM lens WHERE run_id = (SELECT id FROM run)
               AND layer = (SELECT max(layer) FROM lens WHERE run_id = (SELECT id FROM run)))
SELECT l.label, l.layer, l.tokens, round(l.loss, 5) AS loss, round(l.loss - last.loss, 5) AS loss_gap,
       round(l.top1_agree, 4) AS top1_agree, round(l.kl, 5) AS kl
  FROM lens l JOIN last ON last.label = l.label
 WHERE l.run_id = (SELECT id FROM run)
 ORDER BY l.label, l.layer;
