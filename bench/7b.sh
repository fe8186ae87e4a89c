#!/usr/bin/env bash
# 7b.sh BUILD [--run] — the 7B-class benchmark (issue 14): a random-weight Llama-2-7B-shaped
# bf16 model in sharded safetensors (13.5 GB, written once by bench/gen_7b.py into
# $NL_BENCH_7B_DIR, default BUILD/bench-7b; never in the repository), then `ppl` and
# `record --stats` on a short dataset ($NL_BENCH_7B_DOCS documents, default 2, x $NL_BENCH_7B_LEN = 512 random ids: the
# CFM document length), and `ppl` on one 2-token document (start-up + the per-document conversion).
# Prints tokens/s, GFLOP/s against the machine's measured sgemm peak (bench/sgemm_peak.c),
# peak RSS against the acceptance bound (file size + 1 GiB: bf16 weights stay mmapped, one
# layer at a time is converted to f32) and the estimated wall time of a CFM-size study
# (7 abilities x 1000 documents x 512 tokens) at the measured record --stats speed.
# Heavy (14 GB of disk, about 15 GB of page cache, tens of minutes on 2 cores): `make bench`
# runs it only with NL_BENCH_7B=1, or call it with --run. bench/README.md quotes one run.
set -u
cd "$(dirname "$0")/.."
b=${1:-build}; nl=$b/neuronlab
if [ "${NL_BENCH_7B:-0}" != 1 ] && [ "${2:-}" != --run ]; then
  echo "bench 7b: skipped (13.5 GB model, long: set NL_BENCH_7B=1 or run bash bench/7b.sh $b --run)"; exit 0
fi
[ -x "$nl" ] || { echo "bench 7b: $nl is not built"; exit 1; }
dir=${NL_BENCH_7B_DIR:-$b/bench-7b}
mkdir -p "$dir/out"
need=$((15 * 1024 * 1024)) # KiB: the model plus headroom
if [ ! -f "$dir/.done" ] && [ "$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')" -lt $need ]; then
  echo "bench 7b: less than 15 GiB free under $dir (set NL_BENCH_7B_DIR): skipped"; exit 0
fi
/usr/bin/python3 bench/gen_7b.py "$dir" --docs "${NL_BENCH_7B_DOCS:-2}" --doc-len "${NL_BENCH_7B_LEN:-512}" || { echo "bench 7b: the generator failed"; exit 1; }
m=$dir/model; data=$dir/data.jsonl
head -c 200 "$data" | /usr/bin/python3 -c 'import json, re, sys; print(json.dumps({"tokens": [int(x) for x in re.findall(r"\d+", sys.stdin.read())[:2]]}))' \
  > "$dir/data_tiny.jsonl"
bytes=$(du -b "$m"/*.safetensors | awk '{ s += $1 } END { printf "%.0f\n", s }')
tokens=$(/usr/bin/python3 -c 'import json, sys; print(sum(len(json.loads(l)["tokens"]) for l in open(sys.argv[1])))' "$data")

# the sgemm peak through the same OpenBLAS (as bench/train.sh builds it)
BLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
${CC:-cc} -O2 -fopenmp bench/sgemm_peak.c -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  "$BLAS_DIR/libopenblas.so.0" -Wl,-rpath,"$BLAS_DIR" -o "$dir/out/sgemm_peak" || { echo "bench 7b: sgemm_peak does not build"; exit 1; }
"$dir/out/sgemm_peak" 2048 6 > "$dir/out/peak.txt"
peak=$(sed -n 's/^gflops_all=//p' "$dir/out/peak.txt"); core=$(sed -n 's/^core=//p' "$dir/out/peak.txt")
threads=$(sed -n 's/^threads=//p' "$dir/out/peak.txt")

# one command under GNU time: wall seconds and max RSS (KiB) into $dir/out/NAME.time
timed() {
  local name=$1; shift
  /usr/bin/time -v -o "$dir/out/$name.time" "$@" > "$dir/out/$name.out" 2> "$dir/out/$name.err" ||
    { echo "bench 7b: $name failed: $(tail -n 2 "$dir/out/$name.err")"; return 1; }
}
wall() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$dir/out/$1.time"; }
rss() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/out/$1.time"; }
fault() { awk -F': ' '/Major .*page faults/ { print $2 }' "$dir/out/$1.time"; }

echo "== 7B-shaped bf16 model: $(( bytes / 1000000 )) MB in $(ls "$m"/*.safetensors | wc -l) shards, $tokens tokens ($(grep -c . "$data") documents), load $(cut -d' ' -f1-3 /proc/loadavg)"
timed tiny "$nl" ppl "$m" "$dir/data_tiny.jsonl" --json --quiet || exit 1
timed ppl "$nl" ppl "$m" "$data" --json --quiet || exit 1
timed stats "$nl" record "$m" "$data" --stats -o "$dir/out/s.h5" --force --quiet || exit 1
/usr/bin/python3 - "$bytes" "$tokens" "$peak" "$threads" "$core" "$(wall ppl)" "$(rss ppl)" "$(wall stats)" "$(rss stats)" \
  "$(fault ppl)" "$(fault stats)" "$(wall tiny)" "$(rss tiny)" "$(grep -c . "$data")" <<'PY'
import sys
B, N, peak, threads, core = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
wp, rp, ws, rs, fp, fs = float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9]), sys.argv[10], sys.argv[11]
wt, rt, ndocs = float(sys.argv[12]), int(sys.argv[13]), int(sys.argv[14])
L, D, F, V, T = 32, 4096, 11008, 32000, N / ndocs
# FLOPs per token as executed: 2 per weight of the projections (attention 4·D², FFN 3·D·F) and of the
# LM head (ppl only), plus causal attention scores and values 2·2·D per earlier position (mean T/2).
layer = 2 * (4 * D * D + 3 * D * F) + 4 * D * (T + 1) / 2
f_ppl, f_stats = L * layer + 2 * D * V, L * layer
bound = B + 2**30
print(f"sgemm peak        {peak:.1f} GFLOP/s ({threads} threads, OpenBLAS {core}, 2048^3)")
print(f"ppl, 2 tokens     {wt:7.1f} s wall: start-up + one pass of bf16 -> f32 conversion of every layer and the head "
      f"(the per-document cost: each document's forward converts every layer again); peak RSS {rt / 1024**2:.2f} GiB")
for name, w, r, f, fl in (("ppl", wp, rp, fp, f_ppl), ("record --stats", ws, rs, fs, f_stats)):
    tps = N / w
    g = tps * fl / 1e9
    ok = r * 1024 <= bound
    print(f"{name:15s}   {w:7.1f} s wall, {tps:6.2f} tokens/s, {g:6.1f} GFLOP/s = {100 * g / peak:4.1f}% of the sgemm peak; "
          f"peak RSS {r / 1024**2:.2f} GiB (file {B / 2**30:.2f} GiB + 1 GiB = {bound / 2**30:.2f}): {'PASS' if ok else 'FAIL'}; "
          f"major faults {f}")
study, docs = 7 * 1000 * 512, 7 * 1000
s = study / (N / ws)
compute = max(ws - ndocs * wt, 1e-9)  # record --stats without the per-document conversion
s2 = docs * wt + study * compute / N
print(f"CFM-size study    7 x 1000 x 512 = {study} tokens: {s / 3600:.0f} h ({s / 86400:.1f} days) at the record --stats "
      f"tokens/s above; {s2 / 3600:.0f} h ({s2 / 86400:.1f} days) as {docs} x the per-document conversion + the tokens at "
      f"{N / compute:.2f} tokens/s of compute, on this machine")
PY
