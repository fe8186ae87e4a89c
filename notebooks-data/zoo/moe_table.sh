#!/usr/bin/env bash
# moe_table.sh [MODEL_DIR...] — the zoo's MoEfication table for the README: every model is
# MoEfied into E = 32 experts per layer by both splits (param: balanced k-means of the FFN
# rows; coact: METIS on the co-activation graph), with the sim router and a trained mlp router,
# calibrated on the corpus's held-out validation text (build/corpus/val.jsonl, never trained on,
# disjoint from the eval sets); then `moe-sweep` measures perplexity on the first 30 documents
# of each ability of notebooks-data/eval/all.jsonl (210 documents) at K/E = 12.5, 25, 50 %
# (K = E equals the dense model: tests/moe_cli.sh and moe_sweep_cli.sh check it to 1e-5)
# for every router (sim, mlp, oracle) and fill (zero, mean). Results: build/zoo-moe/moe.db
# (tables moe_sweep, runs); the held-out router recall of sim and mlp is in each folder's
# manifest.json (router_mlp). moe_table.py prints the README tables from the database.
# NL_MOE_PHASE=moefy stops after the folders; existing folders are kept (delete to redo).
set -euo pipefail
cd "$(dirname "$0")/../.."
nl=build/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
calib=build/corpus/val.jsonl
[ -f "$calib" ] || { echo "moe_table: $calib is missing: run notebooks-data/corpus/build.sh" >&2; exit 1; }
out=build/zoo-moe; mkdir -p "$out"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(notebooks-data/models/silu notebooks-data/models/gelu notebooks-data/models/relu)
eval_set=$out/eval210.jsonl
"$py" - notebooks-data/eval/all.jsonl "$eval_set" <<'PY'
import collections, json, sys
seen = collections.Counter()
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        label = json.loads(line).get("label", "")
        if seen[label] < 30:
            out.write(line); seen[label] += 1
PY
for m in "${models[@]}"; do
  for split in param coact; do
    d=$out/$(basename "$m")-$split
    [ -f "$d/manifest.json" ] || "$nl" moefy "$m" "$calib" --experts 32 --split "$split" --router mlp --seed 0 -o "$d"
  done
done
[ "${NL_MOE_PHASE:-}" = moefy ] && exit 0
for m in "${models[@]}"; do
  for split in param coact; do
    "$nl" moe-sweep "$m" "$eval_set" --moe "$out/$(basename "$m")-$split" --db "$out/moe.db" \
      --k 12.5%,25%,50% --router sim,mlp,oracle --fill zero,mean --no-recall
  done
done
# expert usage by ability (README: "Abilities route to distinct experts"): silu, coact split
"$nl" moe-usage notebooks-data/models/silu "$eval_set" --moe "$out/silu-coact" --db "$out/usage.db" \
  --k 25% --router mlp --fill zero
"$py" notebooks-data/zoo/moe_table.py "$out/moe.db"
