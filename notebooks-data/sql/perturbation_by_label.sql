-- Relative perplexity increase (PPL_masked − PPL_0) / PPL_0 per ability and ratio, masking by
-- output norm: which abilities suffer first when the long tail is cut?
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'perturb' AND status = 'complete'),
base AS (SELECT label, ppl FROM perturb WHERE run_id = (SELECT id FROM run) AND metric = 'norm' AND ratio = 0)
SELECT CASE WHEN p.label = '' THEN '(all)' ELSE p.label END AS label, p.ratio,
       round((p.ppl - b.ppl) / b.ppl, 4) AS rel_increase
  FROM perturb p JOIN base b ON b.label = p.label
 WHERE p.run_id = (SELECT id FROM run) AND p.metric = 'norm'
 ORDER BY p.label <> '', p.label, p.ratio;
