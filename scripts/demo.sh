#!/usr/bin/env bash
# demo.sh — the main job on the bundled default model and dataset: inspect the model,
# score the dataset, record every FFN activation to HDF5. Outputs go to build/demo/.
# Until the model zoo lands, the default model is stories260K from ../shared (a real
# pretrained llama2.c checkpoint) or, without ../shared, the tiny random-weight Llama
# fixture in tests/fixtures/hf/llama.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
out=build/demo
mkdir -p "$out"
if [ -f ../shared/models/stories260K/stories260K.bin ]; then
  model=../shared/models/stories260K/stories260K.bin
  data=../shared/models/stories260K/tokens.jsonl
else
  echo "demo: ../shared is absent; using the tiny random-weight fixture model" >&2
  model=tests/fixtures/hf/llama
  data=$out/random_tokens.jsonl
  awk 'BEGIN { srand(1); for (d = 0; d < 8; d++) { printf "{\"tokens\": [1"; for (i = 0; i < 63; i++) printf ", %d", 2 + int(rand() * 250); print "]}" } }' > "$data"
fi
echo "== neuronlab info $model"
"$build/neuronlab" info "$model"
echo
echo "== neuronlab ppl $model $data"
"$build/neuronlab" ppl "$model" "$data"
echo
echo "== neuronlab record $model $data -o $out/acts.h5 --pool"
"$build/neuronlab" record "$model" "$data" -o "$out/acts.h5" --pool
echo
echo "demo outputs: $out/acts.h5 (open with h5py: h5py.File('$out/acts.h5')['layers/0/ffn_act'])"
