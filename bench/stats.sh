#!/usr/bin/env bash
# stats.sh BUILD — what `record --stats` costs against `ppl` and the full dump (`record --pool`)
# on the zoo SiLU model (notebooks-data/models/silu) with 6 documents per ability of
# notebooks-data/eval/all.jsonl: CPU seconds (user + sys) of each, three runs, --threads 1,
# and the two files' sizes; then `ppl` against `record --stats` on the bench 100M model
# (BUILD/bench/llama100m, made once by bench/make_model.py as bench.py makes it; 4 documents of
# 512 tokens), where the target stats ≤ 1.15× ppl is set. Part of `make bench`; the README's
# "Streaming summaries" cost paragraph quotes it. Skips the zoo part with a message when the zoo
# model is not here.
set -u
cd "$(dirname "$0")/.."
b=${1:-build}; nl=$b/neuronlab
m=notebooks-data/models/silu
out=$b/bench/stats; mkdir -p "$out"
awk -F'"label": *"' '{ split($2, a, "\""); if (n[a[1]]++ < 6) print }' notebooks-data/eval/all.jsonl > "$out/d.jsonl"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cpu() { # label command… → prints the CPU seconds of each of 3 runs
  local t=()
  for r in 1 2 3; do
    /usr/bin/time -f "%U %S" -o "$out/t" "$@" > /dev/null 2>&1 || { echo "bench stats: $1 failed"; return 1; }
    t+=("$(awk '{ printf "%.2f", $1 + $2 }' "$out/t")")
  done
  echo "${t[*]}"
}
zoo() {
[ -f "$m/config.json" ] || { echo "bench stats: $m is not here (train the zoo): skipped"; return 0; }
echo "== record --stats against ppl and the full dump ($(grep -c . "$out/d.jsonl") documents, --threads 1, CPU s of 3 runs)"
p=$(cpu "$nl" ppl "$m" "$out/d.jsonl" --threads 1 --quiet) || return 0
s=$(cpu "$nl" record "$m" "$out/d.jsonl" -o "$out/s.h5" --force --stats --threads 1 --quiet) || return 0
d=$(cpu "$nl" record "$m" "$out/d.jsonl" -o "$out/a.h5" --force --pool --threads 1 --quiet) || return 0
printf 'ppl             %s s\nrecord --stats  %s s\nrecord --pool   %s s\n' "$p" "$s" "$d"
awk -v p="$(med "$p")" -v s="$(med "$s")" -v d="$(med "$d")" \
  'BEGIN { printf "median: stats/ppl %.2f×, stats/dump %.2f× (target: stats ≤ 1.15× ppl)\n", s / p, s / d }'
echo "files: summary $(du -h "$out/s.h5" | cut -f1), dump $(du -h "$out/a.h5" | cut -f1)"
}
big() {
local w=$b/bench
if [ ! -f "$w/llama100m/model.safetensors" ]; then
  /usr/bin/python3 bench/make_model.py "$w" --docs 4 > "$out/gen.log" 2>&1 || { echo "bench stats: make_model.py failed"; return 0; }
fi
echo "== record --stats against ppl on the bench 100M model (4 x 512 tokens, --threads 1, CPU s of 3 runs)"
p=$(cpu "$nl" ppl "$w/llama100m" "$w/data_4.jsonl" --threads 1 --quiet) || return 0
s=$(cpu "$nl" record "$w/llama100m" "$w/data_4.jsonl" -o "$out/s100m.h5" --force --stats --threads 1 --quiet) || return 0
printf 'ppl             %s s\nrecord --stats  %s s\n' "$p" "$s"
awk -v p="$(med "$p")" -v s="$(med "$s")" 'BEGIN { printf "median: stats/ppl %.2f× (target ≤ 1.15×): %s\n", s / p, s / p <= 1.15 ? "PASS" : "FAIL" }'
}
med() { tr ' ' '\n' <<<"$1" | sort -g | sed -n 2p; }
zoo
big
echo "BLAS kernel: OpenBLAS ${OPENBLAS_CORETYPE:-auto-detected core} (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:+set}${OPENBLAS_CORETYPE:-not set})"
