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
# The PyTorch cross-check and the one-layer-at-a-time comparison (silu, param, sim, K = 8) on the
# documents of at most 256 tokens among the first 40 of each ability (140 documents): the token
# ids come from a `record` of those documents, so both sides see the same tokens.
py=/usr/bin/python3; [ -x "$py" ] || py=python3
"$py" - notebooks-data/eval/all.jsonl build/zoo-moe/eval280.jsonl <<'PY'
import collections, json, sys
seen = collections.Counter()
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        label = json.loads(line).get("label", "")
        if seen[label] < 40:
            out.write(line); seen[label] += 1
PY
build/neuronlab record notebooks-data/models/silu build/zoo-moe/eval280.jsonl -o build/zoo-moe/eval280.h5 --layers 0 --hook ffn_in --force --quiet
"$py" - build/zoo-moe/eval280.h5 build/zoo-moe/short140.jsonl <<'PY'
import h5py, json, sys
f = h5py.File(sys.argv[1], "r"); t = f["tokens"][:]; o = f["doc_offsets"][:]; lab = f["doc_labels"][:]
n = 0
with open(sys.argv[2], "w") as out:
    for d in range(len(o) - 1):
        if 2 <= o[d + 1] - o[d] <= 256 and n < 140:
            l = lab[d].decode() if isinstance(lab[d], bytes) else str(lab[d])
            out.write(json.dumps({"tokens": [int(x) for x in t[o[d]:o[d + 1]]], "label": l}) + "\n"); n += 1
PY
d=build/zoo-moe/silu-param
echo "dense: $(build/neuronlab ppl notebooks-data/models/silu build/zoo-moe/short140.jsonl --quiet | grep overall)"
for f in zero mean; do
  echo "ppl --moe $f: $(build/neuronlab ppl notebooks-data/models/silu build/zoo-moe/short140.jsonl --moe $d --k 8 --fill $f --quiet | grep overall)"
  "$py" notebooks-data/zoo/torch_moefy.py notebooks-data/models/silu $d build/zoo-moe/short140.jsonl 8 $f
  for l in 0 1 2 3 4 5; do "$py" notebooks-data/zoo/torch_moefy.py notebooks-data/models/silu $d build/zoo-moe/short140.jsonl 8 $f $l; done
done
