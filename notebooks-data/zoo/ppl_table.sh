#!/usr/bin/env bash
# ppl_table.sh [MODEL_DIR...] — the zoo's perplexity table for the README: each model's
# perplexity (`neuronlab ppl`) on every ability's eval set (notebooks-data/eval/all.jsonl,
# prompt/response rows scored on the response), beside the add-one unigram model fitted on the
# training tokens (`ppl --unigram build/corpus/train.jsonl`, the same predictions), and checks
# the issue's bar: on every set, model ppl ≤ ½ unigram ppl. Prints a Markdown table and one
# PASS/FAIL line per model; exits 1 when a model misses the bar.
# Default models: every notebooks-data/models/*/ with a config.json (a Hugging Face folder) or a
# model-*.gguf (the MoE zoo models, committed as Q8_0 GGUF); rows are named by the folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
nl=build/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
train=build/corpus/train.jsonl
[ -f "$train" ] || { echo "ppl_table: $train is missing: run notebooks-data/corpus/build.sh" >&2; exit 1; }
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  for d in notebooks-data/models/*/; do
    if [ -f "$d/config.json" ]; then models+=("${d%/}")
    else for g in "$d"model-*.gguf; do [ -f "$g" ] && models+=("$g"); done; fi
  done
fi
[ ${#models[@]} -gt 0 ] || { echo "ppl_table: no models in notebooks-data/models/" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for m in "${models[@]}"; do
  name=$(basename "$m"); [ -f "$m" ] && name=$(basename "$(dirname "$m")")
  "$nl" ppl "$m" notebooks-data/eval/all.jsonl --unigram "$train" --json > "$tmp/$name.json"
done
"$py" - "$tmp" "${models[@]}" <<'PY'
import json, os, sys
tmp, models = sys.argv[1], sys.argv[2:]
name = lambda m: os.path.basename(os.path.dirname(m)) if os.path.isfile(m) else os.path.basename(m)
rows = {name(m): json.load(open(os.path.join(tmp, name(m) + ".json"))) for m in models}
labels = sorted(next(iter(rows.values()))["by_label"])
print("| model | " + " | ".join(labels) + " | all |")
print("|---|" + "---|" * (len(labels) + 1))
bad = []
for name, r in rows.items():
    cells = []
    for l in labels:
        p, u = r["by_label"][l]["ppl"], r["unigram"]["by_label"][l]["ppl"]
        cells.append(f"{p:.2f} ({u:.0f})")
        if p > u / 2: bad.append((name, l, p, u))
    cells.append(f"{r['ppl']:.2f} ({r['unigram']['ppl']:.0f})")
    print(f"| {name} | " + " | ".join(cells) + " |")
print()
print("model perplexity (add-one unigram perplexity on the same predictions, fitted on the "
      f"{next(iter(rows.values()))['unigram']['train_tokens']} training tokens)")
for name in rows:
    fails = [b for b in bad if b[0] == name]
    if fails:
        print(f"FAIL {name}: ppl above half the unigram's on " + ", ".join(f"{l} ({p:.1f} vs {u:.1f})" for _, l, p, u in fails))
    else:
        print(f"PASS {name}: ppl at most half the unigram's on every eval set")
sys.exit(1 if bad else 0)
PY
