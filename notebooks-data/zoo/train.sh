#!/usr/bin/env bash
# train.sh [ACT...] — (re)builds the zoo from nothing: the corpus (notebooks-data/corpus/build.sh,
# when build/corpus/ is missing), the 8192-id tokenizer (neuronlab tokenizer-train on the
# training split → build/zoo/tokenizer.json, deterministic), then trains each model of
# notebooks-data/zoo/<act>.json (default: silu gelu relu; moe_mixtral moe_qwen for the MoE
# models) one after the other into the config's "out" folder (notebooks-data/models/<act>/ for
# the dense models; build/zoo/moe_*/ for the MoE models, whose f16 folders are too big to commit:
# moe_native.sh exports them as Q8_0 GGUF), resuming from its checkpoint when one is there (a session cut
# short loses nothing). Logs go to build/zoo/<act>.log. Run from anywhere; takes ~35 min per
# model on the 2-core machine when nothing else runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
nl=build/neuronlab
[ -x "$nl" ] || make -j2
[ -f build/corpus/train.jsonl ] || bash notebooks-data/corpus/build.sh
mkdir -p build/zoo
if [ ! -f build/zoo/tokenizer.json ]; then
  "$nl" tokenizer-train build/corpus/train.jsonl --vocab 8192 -o build/zoo/tokenizer.json
fi
acts=("$@")
[ ${#acts[@]} -gt 0 ] || acts=(silu gelu relu)
for act in "${acts[@]}"; do
  cfg=notebooks-data/zoo/$act.json
  out=$(sed -n 's/^ *"out": *"\([^"]*\)".*/\1/p' "$cfg")  # the config's "out" folder
  if [ -f "$out/training.json" ] && grep -Eq '"complete": *(true|1)' "$out/training.json"; then
    echo "zoo: $out is already trained (remove it to retrain)"; continue
  fi
  resume=()
  [ -f "$out/checkpoint.bin" ] && resume=(--resume)
  echo "zoo: training $act ${resume[*]} (log build/zoo/$act.log)"
  "$nl" train --config "$cfg" "${resume[@]}" 2>&1 | tee -a "build/zoo/$act.log"
done
