#!/usr/bin/env bash
# bench/sparsity.sh BUILD [--sizes "1 2 4"] [--keep] [--threads N] — `neuronlab sparsity` on
# activation files of growing size (GiB, largest ≤ 4 by default). Builds bench/sparsity_gen.c
# against BUILD/libneuronlab.a, writes a random-weight Llama folder (d_model 256, d_ff 1024,
# 4 layers) and, per size, an f32 activation file of size × 65536 tokens (16 KiB per token)
# under BUILD/bench/sparsity/, then runs the statistics alone (--no-cett: one streaming pass)
# and the full analysis (with CETT: one statistics pass + the CETT walks). Prints activations/s,
# GB/s of HDF5 ffn_act read, and peak RSS (from /usr/bin/time), and checks that peak RSS stays
# flat as the file grows (largest ≤ 1.25 × smallest + 16 MiB). Files are read from a warm page
# cache (just written). Deletes each file after its run unless --keep. Checks free disk first
# and drops sizes that do not fit.
set -euo pipefail
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/.."
sizes="1 2 4"
keep=0
threads=()
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --threads) threads=(--threads "$2"); shift 2 ;;
    *) echo "bench/sparsity.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
nl=$BUILD/neuronlab
lib=$BUILD/libneuronlab.a
if [ ! -x "$nl" ] || [ ! -f "$lib" ]; then echo "bench/sparsity: $nl or $lib not found: run 'make' first" >&2; exit 1; fi
dir=$BUILD/bench/sparsity
mkdir -p "$dir"
gen=$dir/sparsity_gen
cc -std=c11 -D_GNU_SOURCE -O2 -march=x86-64-v2 -fopenmp -Iinclude -Isrc -I. -I/usr/include/hdf5/serial \
  bench/sparsity_gen.c -o "$gen" "$lib" -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 \
  /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
  -ljansson -lsqlite3 -lpcre2-8 -lm -lpthread
L=4 F=1024 D=256
[ -f "$dir/model/model.safetensors" ] || "$gen" model "$dir/model" $D $F $L

# Disk: the largest file (all of them with --keep) plus 1 GiB of headroom.
avail=$(df -Pk "$dir" | awk 'NR == 2 { print int($4 / 1048576) }')
ok_sizes=""
need=0
for gb in $sizes; do
  n=$(( keep ? need + gb : (gb > need ? gb : need) ))
  if [ $((n + 1)) -le "$avail" ]; then ok_sizes="$ok_sizes $gb"; need=$n
  else echo "bench/sparsity: skipping $gb GiB: $avail GiB free on $(df -P "$dir" | awk 'NR==2{print $6}')"; fi
done
[ -n "$ok_sizes" ] || { echo "bench/sparsity: no size fits on disk"; exit 1; }

echo "neuronlab sparsity: d_model $D, d_ff $F, $L layers, f32; $(nproc) cores; ${threads[*]:-all threads}; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %8s | %-36s | %-48s\n" "file" "tokens" "statistics only (--no-cett)" "with CETT (targets 0.1, 0.2)"
printf "%-6s %8s | %7s %10s %7s %8s | %7s %10s %7s %6s %8s\n" "GiB" "" "s" "Mact/s" "GB/s" "RSS MiB" "s" "Mact/s" "GB/s" "passes" "RSS MiB"
rss1=() rss2=()
for gb in $ok_sizes; do
  N=$((gb * 1073741824 / (L * F * 4)))
  f=$dir/acts_${gb}g.h5
  db=$dir/results.db
  "$gen" acts "$dir/model" "$f" $N
  acts=$((N * L * F))
  rm -f "$db"
  /usr/bin/time -f "%e %M" -o "$dir/time1" "$nl" sparsity "$f" --db "$db" --no-cett --json "${threads[@]}" > "$dir/out1.json"
  /usr/bin/time -f "%e %M" -o "$dir/time2" "$nl" sparsity "$f" --db "$db" --json "${threads[@]}" > "$dir/out2.json"
  read -r e1 m1 < "$dir/time1"
  read -r e2 m2 < "$dir/time2"
  rows=$(sed -n 's/.*"rows_read":\([0-9]*\).*/\1/p' "$dir/out2.json")
  awk -v gb="$gb" -v N="$N" -v a="$acts" -v e1="$e1" -v m1="$m1" -v e2="$e2" -v m2="$m2" -v rows="$rows" -v F=$F -v L=$L 'BEGIN {
    printf "%-6s %8d | %7.2f %10.1f %7.2f %8.1f | %7.2f %10.1f %7.2f %6.1f %8.1f\n", gb, N, e1, a / e1 / 1e6, a * 4 / e1 / 1e9, m1 / 1024,
      e2, a / e2 / 1e6, rows * F * 4 / e2 / 1e9, rows / (N * L), m2 / 1024 }'
  rss1+=("$m1") rss2+=("$m2")
  [ $keep -eq 1 ] || rm -f "$f"
done
echo "Mact/s: activations (tokens x layers x d_ff) / wall time; GB/s: ffn_act bytes read (all passes) / wall time;"
echo "passes: reads of every layer (1 statistics + CETT walks); RSS: peak resident set (/usr/bin/time)."
# Flat RSS: for each mode, every size's peak within 1.25 x the smallest + 16 MiB.
flat() { # NAME RSS_KB...
  local name=$1; shift
  local min=$1 max=$1 m
  for m in "$@"; do [ "$m" -lt "$min" ] && min=$m; [ "$m" -gt "$max" ] && max=$m; done
  if [ "$max" -le $((min * 5 / 4 + 16384)) ]; then
    echo "PASS peak RSS of $name flat in file size: $((min / 1024))..$((max / 1024)) MiB over $(echo $ok_sizes | tr ' ' ',') GiB"
  else
    echo "FAIL peak RSS of $name grows with file size: $((min / 1024))..$((max / 1024)) MiB over $(echo $ok_sizes | tr ' ' ',') GiB"
  fi
}
flat "the statistics pass" "${rss1[@]}"
flat "the full analysis" "${rss2[@]}"
