-- MoEfication sweep (`neuronlab moe-sweep`): perplexity on all documents for each router, fill
-- and K, its change against the dense model (%), and the FFN compute per token as a fraction of
-- the dense FFN's (analytic FLOPs; the oracle's real cost is the dense FFN, expert_frac is its
-- selected experts alone). The compute-quality trade-off of the paper table.
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'moe-sweep' AND status = 'complete'),
dense AS (SELECT ppl FROM moe_sweep WHERE run_id = (SELECT id FROM run) AND dense AND label = '')
SELECT router, fill, k, round(100 * k_frac, 1) AS k_pct, round(ppl, 4) AS ppl,
       round(100 * (ppl / (SELECT ppl FROM dense) - 1), 2) AS change_vs_dense_pct,
       round(ffn_frac, 4) AS ffn_frac, round(expert_frac, 4) AS expert_frac
  FROM moe_sweep
 WHERE run_id = (SELECT id FROM run) AND NOT dense AND label = ''
 ORDER BY router, fill, k;
