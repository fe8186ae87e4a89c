#!/usr/bin/env bash
# stats.sh BUILD — what `record --stats` costs against `ppl` and the full dump (`record --pool`)
# on the zoo SiLU model (notebooks-data/models/silu) with 6 documents per ability of
# notebooks-data/eval/all.jsonl: CPU seconds (user + sys) of each, three runs, --threads 1,
# and the two files' sizes. Part of `make bench`; the README's "Streaming summaries" cost
# paragraph quotes it. Skips with a message when the zoo model is not here.
set -u
cd "$(dirname "$0")/.."
b=${1:-build}; nl=$b/neuronlab
m=notebooks-data/models/silu
[ -f "$m/config.json" ] || { echo "bench stats: $m is not here (train the zoo): skipped"; exit 0; }
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
echo "== record --stats against ppl and the full dump ($(grep -c . "$out/d.jsonl") documents, --threads 1, CPU s of 3 runs)"
p=$(cpu "$nl" ppl "$m" "$out/d.jsonl" --threads 1 --quiet) || exit 0
s=$(cpu "$nl" record "$m" "$out/d.jsonl" -o "$out/s.h5" --force --stats --threads 1 --quiet) || exit 0
d=$(cpu "$nl" record "$m" "$out/d.jsonl" -o "$out/a.h5" --force --pool --threads 1 --quiet) || exit 0
med() { tr ' ' '\n' <<<"$1" | sort -g | sed -n 2p; }
printf 'ppl             %s s\nrecord --stats  %s s\nrecord --pool   %s s\n' "$p" "$s" "$d"
awk -v p="$(med "$p")" -v s="$(med "$s")" -v d="$(med "$d")" \
  'BEGIN { printf "median: stats/ppl %.2f×, stats/dump %.2f× (target: stats ≤ 1.15× ppl)\n", s / p, s / d }'
echo "files: summary $(du -h "$out/s.h5" | cut -f1), dump $(du -h "$out/a.h5" | cut -f1)"
echo "BLAS kernel: OpenBLAS ${OPENBLAS_CORETYPE:-auto-detected core} (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:+set}${OPENBLAS_CORETYPE:-not set})"
