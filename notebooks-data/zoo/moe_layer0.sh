#!/bin/bash
# moe_layer0.sh — the README's layer-0 check: mean vs zero fill with layer 0 left dense (MoE on
# layers 1-5), param split, E = 32, sim router, K = 8 (25 %), on moe_table.sh's 210 documents
# (run moe_table.sh first: it writes build/zoo-moe/eval210.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."
for m in silu gelu relu; do
  d=build/zoo-moe/$m-param-l1to5
  [ -f $d/manifest.json ] || build/neuronlab moefy notebooks-data/models/$m build/corpus/val.jsonl --experts 32 --split param --layers 1-5 --seed 0 -o $d --quiet
  for f in zero mean; do echo "$m layers1-5 $f $(build/neuronlab ppl notebooks-data/models/$m build/zoo-moe/eval210.jsonl --moe $d --k 8 --fill $f --quiet | grep overall)"; done
done
