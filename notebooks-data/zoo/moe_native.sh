#!/usr/bin/env bash
# moe_native.sh [MODEL...] — the expert analyses of the trained mixture-of-experts zoo models that
# the README quotes ("Mixture-of-experts zoo models"). For each model (default: the committed
# notebooks-data/models/moe_mixtral/model-Q8_0.gguf and moe_qwen/model-Q8_0.gguf):
#   1. `experts` on 40 documents of each ability (280; build/zoo/native/score.jsonl): expert load
#      per label, routing entropy and top-1 margin, co-selection, expert ability AP + shuffled;
#   2. `prune --experts all` evaluated on 10 other documents of each ability (70;
#      build/zoo/native/hold.jsonl): every routed expert and every shared expert removed in turn
#      (no random control: every expert is measured);
#   3. `prune --experts top:ABILITY:1` for each ability: its best expert of every layer (chosen
#      on score.jsonl) removed at once, evaluated on hold.jsonl, beside random experts;
#   4. `report` into build/zoo/native/<name>-report/, then notebooks-data/zoo/moe_native.py
#      prints the README tables from the databases (build/zoo/native/<name>.db).
# Needs build/neuronlab (make) and the eval sets (committed). Takes ~15 min per model on a loaded
# 2-core machine. NL_THREADS=N passes --threads N to every run (default: neuronlab's own).
set -euo pipefail
cd "$(dirname "$0")/../.."
nl=build/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(notebooks-data/models/moe_mixtral/model-Q8_0.gguf notebooks-data/models/moe_qwen/model-Q8_0.gguf)
out=build/zoo/native
mkdir -p "$out"
"$py" - notebooks-data/eval/all.jsonl "$out/score.jsonl" "$out/hold.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows: by.setdefault(r["label"], []).append(r)
with open(sys.argv[2], "w") as s, open(sys.argv[3], "w") as h:
    for lab in by:
        for r in by[lab][:40]: s.write(json.dumps(r) + "\n")
        for r in by[lab][100:110]: h.write(json.dumps(r) + "\n")
PY
abilities=$("$py" -c 'import json,sys; print(" ".join(sorted({json.loads(l)["label"] for l in open(sys.argv[1])})))' "$out/score.jsonl")
thr=(); [ -n "${NL_THREADS:-}" ] && thr=(--threads "$NL_THREADS")
dbs=()
for m in "${models[@]}"; do
  name=$(basename "$(dirname "$m")"); [ -d "$m" ] && name=$(basename "$m")
  db=$out/$name.db
  rm -f "$db" "$db-wal" "$db-shm"
  echo "moe_native: $name: experts" >&2
  "$nl" experts "$m" "$out/score.jsonl" "${thr[@]}" --db "$db" --quiet > "$out/$name-experts.txt"
  run=$(sqlite3 "$db" "SELECT max(id) FROM runs WHERE kind = 'experts' AND status = 'complete'")
  echo "moe_native: $name: prune --experts all" >&2
  "$nl" prune "$m" "$out/score.jsonl" --db "$db" --experts all --eval "$out/hold.jsonl" --seeds 0 "${thr[@]}" --quiet >/dev/null
  for a in $abilities; do
    echo "moe_native: $name: prune --experts top:$a:1" >&2
    "$nl" prune "$m" "$out/score.jsonl" --db "$db" --experts "top:$a:1" --scores "$run" --eval "$out/hold.jsonl" --seeds 3 "${thr[@]}" --quiet >/dev/null
  done
  "$nl" report --db "$db" -o "$out/$name-report" --quiet
  dbs+=("$db")
done
"$py" notebooks-data/zoo/moe_native.py "${dbs[@]}"
