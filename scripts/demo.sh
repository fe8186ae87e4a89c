#!/usr/bin/env bash
# demo.sh — the main job on the bundled default model and dataset: inspect the model, score
# the eval sets, record every FFN activation to HDF5, measure sparsity, mask neurons, and draw
# the report. Outputs go to build/demo/ (acts.h5, results.db, report/index.html).
# The default model is the zoo's SiLU model (notebooks-data/models/silu) with the committed
# eval sets (notebooks-data/eval/all.jsonl); while the zoo is not trained in a checkout, it
# falls back to stories260K from ../shared (a real pretrained llama2.c checkpoint), and
# without ../shared to the tiny random-weight Llama fixture.
# NL_DEMO_DOCS (default 40) documents per ability keep the demo within a few minutes.
# The MoEfication step splits every FFN into 16 experts (moefy, calibrated on other documents of
# the eval sets than the ones scored), sweeps K/E 25 % and 50 % with the sim and oracle routers
# and both fills against the dense model (moe-sweep) on NL_DEMO_MOE_DOCS (default 4) documents
# per ability, and measures which experts each ability uses (moe-usage); about half a minute.
# NL_DEMO_MODEL picks another zoo model (gelu, relu) or any model folder; its outputs go to
# build/demo-<name>/ (the default SiLU model's to build/demo/).
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
nl=$build/neuronlab
zoo=${NL_DEMO_MODEL:-silu}
[ -d "$zoo" ] || zoo=notebooks-data/models/$zoo
out=build/demo
[ "$zoo" = notebooks-data/models/silu ] || out=build/demo-$(basename "$zoo")
rm -rf "$out/report" "$out/results.db" "$out/acts.h5"
mkdir -p "$out"
per=${NL_DEMO_DOCS:-40}
if [ -f "$zoo/config.json" ]; then
  model=$zoo
  data=$out/eval.jsonl
  # the first $per documents of each ability's eval set
  for f in notebooks-data/eval/*.jsonl; do [ "$(basename "$f")" = all.jsonl ] || head -n "$per" "$f"; done > "$data"
elif [ -f ../shared/models/stories260K/stories260K.bin ]; then
  echo "demo: the zoo model $zoo is not here; using stories260K from ../shared" >&2
  model=../shared/models/stories260K/stories260K.bin
  data=../shared/models/stories260K/tokens.jsonl
else
  echo "demo: neither the zoo model nor ../shared is here; using the tiny random-weight fixture model" >&2
  model=tests/fixtures/hf/llama
  data=$out/random_tokens.jsonl
  awk 'BEGIN { srand(1); for (d = 0; d < 8; d++) { printf "{\"tokens\": [1"; for (i = 0; i < 63; i++) printf ", %d", 2 + int(rand() * 250); print "], \"label\": \"" (d % 2 ? "a" : "b") "\"}" } }' > "$data"
fi
# each step prints its wall and CPU seconds (bash's time keyword, on stderr)
TIMEFORMAT='(%R s wall, %U s user + %S s sys)'
step() { echo; echo "== neuronlab $*"; time "$nl" "$@"; }
step info "$model"
step ppl "$model" "$data"
step record "$model" "$data" -o "$out/acts.h5" --pool --db "$out/results.db"
step sparsity "$out/acts.h5" --db "$out/results.db"
step perturb "$model" "$data" --db "$out/results.db"
if grep -q '"label": *"[^"]' "$data"; then
  # ability neurons selected on half of each ability's documents (--split 0.5: the other half
  # is held out), how their top sets overlap, and what zeroing each ability's top 5% per layer
  # does to every ability on the held-out documents (with the random control)
  step ability "$out/acts.h5" --db "$out/results.db" --split 0.5
  step overlap --db "$out/results.db" --scores latest
  step prune "$model" "$data" --db "$out/results.db" --scores latest
else
  echo; echo "demo: '$data' has no document labels: skipping ability, overlap and prune"
fi
# MoEfication: experts from other documents than the scored ones (lines 101-110 of each eval set)
moe_per=${NL_DEMO_MOE_DOCS:-4}
if [ -f "$zoo/config.json" ]; then
  for f in notebooks-data/eval/*.jsonl; do [ "$(basename "$f")" = all.jsonl ] || sed -n '101,110p' "$f"; done > "$out/moe_calib.jsonl"
  for f in notebooks-data/eval/*.jsonl; do [ "$(basename "$f")" = all.jsonl ] || head -n "$moe_per" "$f"; done > "$out/moe_eval.jsonl"
else
  cp "$data" "$out/moe_calib.jsonl"
  cp "$data" "$out/moe_eval.jsonl"
fi
step moefy "$model" "$out/moe_calib.jsonl" --experts 16 -o "$out/moe" --force
step moe-sweep "$model" "$out/moe_eval.jsonl" --moe "$out/moe" --db "$out/results.db" --k 25%,50% --router sim,oracle --fill zero,mean
if grep -q '"label": *"[^"]' "$out/moe_eval.jsonl"; then
  step moe-usage "$model" "$out/moe_eval.jsonl" --moe "$out/moe" --db "$out/results.db" --k 25% --router sim --fill mean
else
  echo; echo "demo: '$out/moe_eval.jsonl' has no document labels: skipping moe-usage"
fi
step report --db "$out/results.db" -o "$out/report"
echo
echo "demo outputs:"
echo "  $out/acts.h5      activations (h5py.File('$out/acts.h5')['layers/0/ffn_act'])"
echo "  $out/results.db   results (sqlite3 $out/results.db < notebooks-data/sql/layer_sparsity.sql)"
echo "  $out/moe/         the MoEfied FFNs (16 experts per layer; neuronlab ppl MODEL DATA --moe $out/moe --k 25%)"
echo "  $out/report/index.html   the figures"
