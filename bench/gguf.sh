#!/usr/bin/env bash
# gguf.sh BUILD — `ppl` on the SiLU zoo model's GGUF files (../shared/models/gguf/silu: Q8_0,
# Q4_K_M) against the f16 Hugging Face folder (notebooks-data/models/silu), same tokens,
# --threads 1: CPU seconds (user + sys, median of 3), the ratio (target ≤ 1.3×) and peak RSS.
# Part of `make bench`; skips with a message when ../shared or the zoo model is absent.
set -u
cd "$(dirname "$0")/.."
b=${1:-build}; nl=$b/neuronlab
g=../shared/models/gguf/silu; m=notebooks-data/models/silu
[ -f "$g/tokens.jsonl" ] && [ -f "$m/config.json" ] || { echo "bench gguf: $g or $m is not here: skipped"; exit 0; }
out=$b/bench/gguf; mkdir -p "$out"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
run() { # model → "median-cpu-s peak-rss-MB ppl"
  local t=() rss=0 ppl
  for r in 1 2 3; do
    /usr/bin/time -f "%U %S %M" -o "$out/t" "$nl" ppl "$1" "$g/tokens.jsonl" --threads 1 --quiet --json > "$out/p.json" 2>/dev/null \
      || { echo "fail"; return; }
    t+=("$(awk '{ printf "%.2f", $1 + $2 }' "$out/t")"); rss=$(awk -v r="$rss" '{ print ($3 > r ? $3 : r) }' "$out/t")
  done
  ppl=$(/usr/bin/python3 -c 'import json,sys; print("%.6f" % json.load(open(sys.argv[1]))["ppl"])' "$out/p.json" 2>/dev/null)
  echo "$(printf '%s\n' "${t[@]}" | sort -g | sed -n 2p) $((rss / 1024)) ${ppl:-?}"
}
echo "== ppl on GGUF files against the f16 folder (silu zoo model, --threads 1, CPU s median of 3)"
read -r base brss bppl <<<"$(run "$m")"
[ "$base" = fail ] && { echo "bench gguf: ppl on $m failed"; exit 0; }
printf '%-28s %7s s  %5s MB  ppl %s\n' "f16 folder" "$base" "$brss" "$bppl"
for f in silu-Q8_0.gguf silu-Q4_K_M.gguf; do
  read -r s rss ppl <<<"$(run "$g/$f")"
  [ "$s" = fail ] && { echo "bench gguf: ppl on $g/$f failed"; continue; }
  printf '%-28s %7s s  %5s MB  ppl %s  %s× the folder (target ≤ 1.3×)\n' "$f" "$s" "$rss" "$ppl" "$(awk -v a="$s" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
done
echo "BLAS kernel: OpenBLAS (OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-not set})"
