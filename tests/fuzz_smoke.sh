#!/usr/bin/env bash
# fuzz_smoke.sh — the fuzzing harnesses of fuzz/ as a test: builds them with clang/libFuzzer
# (make fuzz-build, into build/fuzz/), replays every saved crash input of fuzz/crashes/<name>/
# and every seed of fuzz/corpus/<name>/ (each must run clean under ASan/UBSan), then fuzzes
# each harness NL_FUZZ_SMOKE_SECONDS (default 2; at most NL_FUZZ_SMOKE_RUNS inputs, default
# 20000, with a fixed seed; the long campaigns are `make fuzz`). The saved inputs of a harness
# are replayed in one process, and one by one only when that fails. One "PASS/FAIL fuzz_smoke <name>" line per
# harness; crash inputs listed in fuzz/crashes/<name>/known-open.txt (found, reported, not yet
# fixed in their module; "FILE match=PLACE stack top…") are replayed too but print SKIP while
# they still crash (a note asks to remove the line once they do not), and so does fuzzing that
# crashes at a known PLACE. SKIPs everything with a message when clang or libFuzzer is
# missing (scripts/install-deps.sh installs them).
set -u
cd "$(dirname "$0")/.."
secs=${NL_FUZZ_SMOKE_SECONDS:-2}
names=$(ls fuzz/fuzz_*.c | sed 's|fuzz/fuzz_\(.*\)\.c|\1|')
skip_all() { for n in $names; do echo "SKIP fuzz_smoke $n: $1"; done; exit 0; }
command -v clang >/dev/null || skip_all "clang is not installed (apt-get install clang libclang-rt-14-dev)"
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' > "$t/x.c"
clang -fsanitize=fuzzer,address,undefined "$t/x.c" -o "$t/x" 2>"$t/err" || skip_all "clang cannot link libFuzzer ($(head -1 "$t/err"))"
if ! make --no-print-directory -j2 fuzz-build >"$t/build.log" 2>&1; then
  tail -5 "$t/build.log"
  for n in $names; do echo "FAIL fuzz_smoke $n: make fuzz-build failed"; done
  exit 0
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
# known_place LOG: 0 (and kn = the place) when LOG crashed at a place listed in $known.
known_place() {
  kn=""
  [ -f "$known" ] || return 1
  for pat in $(sed -n 's/^[^ ]* match=\([^ ]*\).*/\1/p' "$known"); do grep -aqF "$pat" "$1" && kn=$pat; done
  [ -n "$kn" ]
}
for n in $names; do
  exe=build/fuzz/fuzz/fuzz_$n
  known=fuzz/crashes/$n/known-open.txt; kn=""
  ok=1; why=""; skipped=0
  files=()
  for f in fuzz/crashes/"$n"/* fuzz/corpus/"$n"/*; do
    [ -f "$f" ] || continue
    case "$f" in *.txt|*.md) continue;; esac
    files+=("$f")
  done
  # every input in one process first (one start-up instead of one per file); only when that
  # fails is each replayed alone, to name the one that crashes and honour known-open.txt
  if [ ${#files[@]} -gt 0 ] && timeout 300 "$exe" -rss_limit_mb=2048 -timeout=60 "${files[@]}" >"$t/replay.log" 2>&1; then
    for f in "${files[@]}"; do
      grep -qs "^$(basename "$f")\b" "$known" 2>/dev/null && echo "  note: $f no longer crashes: remove it from $known"
    done
    files=()
  fi
  for f in "${files[@]}"; do
    if timeout 120 "$exe" -rss_limit_mb=2048 -timeout=60 "$f" >"$t/replay.log" 2>&1; then
      grep -qs "^$(basename "$f")\b" "$known" 2>/dev/null && echo "  note: $f no longer crashes: remove it from $known"
    elif grep -qs "^$(basename "$f")\b" "$known" 2>/dev/null || known_place "$t/replay.log"; then
      echo "SKIP fuzz_smoke $n/$(basename "$f"): known open crash at ${kn:-$(grep "^$(basename "$f")" "$known" | cut -c1-160)}"
      skipped=$((skipped + 1))
    else
      ok=0; why="$f crashes: $(grep -a -m1 'ERROR\|SUMMARY\|runtime error' "$t/replay.log" | cut -c1-200)"
      grep -a -A12 'ERROR' "$t/replay.log" | head -14 | sed 's/^/  | /'
    fi
  done
  if [ $ok = 1 ]; then
    mkdir -p "$t/c/$n" "$t/a/$n"
    timeout $((secs + 60)) "$exe" -seed=1 -runs="${NL_FUZZ_SMOKE_RUNS:-20000}" -max_total_time="$secs" -timeout=20 -print_final_stats=1 -rss_limit_mb=2048 -max_len=262144 \
      -artifact_prefix="$t/a/$n/" "$t/c/$n" "fuzz/corpus/$n" >"$t/run.log" 2>&1
    rc=$?
    execs=$(grep -a 'stat::number_of_executed_units' "$t/run.log" | tail -1 | awk '{print $2}')
    if [ $rc -ne 0 ] && known_place "$t/run.log"; then
      echo "SKIP fuzz_smoke $n fuzzing: ran into the known open crash at $kn (fuzz/crashes/$n/known-open.txt)"
      skipped=$((skipped + 1))
    elif [ $rc -ne 0 ]; then
      ok=0; why="fuzzing found a crash in ${secs}s: $(grep -a -m1 'ERROR\|runtime error' "$t/run.log" | cut -c1-200) (input kept in build/fuzz/smoke-crashes/$n/)"
      mkdir -p build/fuzz/smoke-crashes/$n; cp "$t/a/$n/"* build/fuzz/smoke-crashes/$n/ 2>/dev/null
    fi
  fi
  if [ $ok = 1 ]; then echo "PASS fuzz_smoke $n (replayed crashes and seeds, ${secs}s fuzzing: ${execs:-?} executions)"
  else echo "FAIL fuzz_smoke $n: $why"; fi
done
