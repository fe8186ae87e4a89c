#!/usr/bin/env bash
# run.sh FUZZ_BUILD SECONDS NAME… — runs each harness FUZZ_BUILD/fuzz/fuzz_NAME for SECONDS
# with libFuzzer from the seeds of fuzz/corpus/NAME/ (new inputs go to FUZZ_BUILD/corpus/NAME/,
# crash inputs to FUZZ_BUILD/crashes/NAME/; -fork keeps going after a crash so one run finds
# several). Prints one line per harness: executions, corpus size, crashes. Used by `make fuzz`.
set -u
cd "$(dirname "$0")/.."
b=$1; secs=$2; shift 2
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
for n in "$@"; do
  exe=$b/fuzz/fuzz_$n
  [ -x "$exe" ] || { echo "fuzz $n: $exe missing (make fuzz-build)"; continue; }
  mkdir -p "$b/corpus/$n" "$b/crashes/$n"
  log=$b/fuzz_$n.log
  "$exe" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 -max_total_time="$secs" -timeout=20 -print_final_stats=1 \
         -rss_limit_mb=2048 -max_len=262144 -artifact_prefix="$b/crashes/$n/" "$b/corpus/$n" "fuzz/corpus/$n" >"$log" 2>&1
  execs=$(grep -a -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  crashes=$(ls "$b/crashes/$n" | wc -l)
  echo "fuzz $n: ${secs}s, ${execs:-?} executions, corpus $(ls "$b/corpus/$n" | wc -l), $crashes crash/oom/timeout inputs in $b/crashes/$n (log $log)"
done
