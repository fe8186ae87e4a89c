#!/usr/bin/env bash
# run-tests.sh — runs every Criterion suite in BUILD/tests and every tests/*.sh script,
# then prints one closing line over all of them: "N passed, M failed[, K skipped]".
# Scripts report their own counts by printing lines "PASS name", "FAIL name", "SKIP name".
#
# Lanes: NL_TEST_JOBS (default: the number of cores, at most 2) suites/scripts run at once, each
# with OMP_NUM_THREADS=1 unless the caller set it (so the lanes share the cores instead of
# spinning against each other); a script whose header has the line "# test-runner: alone"
# (timing-, RSS- or process-count-sensitive, or already using every core) runs after the others,
# by itself, with the caller's environment. Output is printed in the usual order, one block per
# suite or script, whatever order they finished in.
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
jobs=${NL_TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -gt 2 ] 2>/dev/null && [ -z "${NL_TEST_JOBS:-}" ] && jobs=2
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

run_suite() { # IDX PATH
  local t=$2 name; name=$(basename "$t")
  local t0=$SECONDS out rc syn p f c s
  out=$("$t" --jobs 1 2>&1); rc=$?
  syn=$(printf '%s\n' "$out" | grep -a 'Synthesis:' | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
  p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn"); p=${p:-0}
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn"); f=${f:-0}
  c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn"); c=${c:-0}
  s=$(sed -n 's/.*Skipped: \([0-9]*\).*/\1/p' <<<"$syn"); s=${s:-0}
  if [ -z "$syn" ] && [ $rc -ne 0 ]; then f=1; fi
  {
    printf '%s\n' "$out" | grep -av '^\[----\]\|^\[====\]' | sed "s/^/  [$name] /" | grep -a -i 'fail\|crash\|skip\|warn\|error' | head -40
    echo "suite $name: $p passed, $((f + c)) failed, $s skipped ($((SECONDS - t0)) s)"
  } >"$tmp/$1.out"
  echo "$p $((f + c)) $s $name" >"$tmp/$1.sum"
}

run_script() { # IDX PATH
  local s=$2 name; name=$(basename "$s")
  local t0=$SECONDS out rc p f k
  out=$(NL_BUILD="$build" bash "$s" 2>&1); rc=$?
  p=$(grep -ac '^PASS ' <<<"$out"); f=$(grep -ac '^FAIL ' <<<"$out"); k=$(grep -ac '^SKIP ' <<<"$out")
  {
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "  [$name] exited $rc"; fi
    grep -a '^FAIL \|^SKIP ' <<<"$out" | sed "s/^/  [$name] /"
    [ "$f" -gt 0 ] && printf '%s\n' "$out" | tail -20 | sed "s/^/  [$name] | /"
    echo "script $name: $p passed, $f failed, $k skipped ($((SECONDS - t0)) s)"
  } >"$tmp/$1.out"
  echo "$p $f $k $name" >"$tmp/$1.sum"
}

items=() alone=()
for t in "$build"/tests/test_*; do [ -x "$t" ] && items+=("suite $t"); done
for s in tests/*.sh; do
  [ -f "$s" ] || continue
  if grep -q '^# test-runner: alone' "$s"; then alone+=("script $s"); else items+=("script $s"); fi
done

run_item() { # IDX "KIND PATH"
  local kind=${2%% *} path=${2#* }
  if [ "$kind" = suite ]; then run_suite "$1" "$path"; else run_script "$1" "$path"; fi
}

i=0
if [ "$jobs" -gt 1 ]; then
  lane_omp=0; [ -n "${OMP_NUM_THREADS:-}" ] || lane_omp=1
  running=0
  for it in "${items[@]}"; do
    ( if [ "$lane_omp" = 1 ]; then export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; fi; run_item "$i" "$it" ) &
    i=$((i + 1)); running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  done
  wait
else
  for it in "${items[@]}"; do run_item "$i" "$it"; i=$((i + 1)); done
fi
for it in "${alone[@]}"; do run_item "$i" "$it"; i=$((i + 1)); done

pass=0; fail=0; skip=0; failed=()
for ((j = 0; j < i; j++)); do
  cat "$tmp/$j.out" 2>/dev/null
  if [ -f "$tmp/$j.sum" ]; then
    read -r p f k name <"$tmp/$j.sum"
  else
    p=0 f=1 k=0 name="item $j"; echo "  [$name] produced no result"
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + k))
  [ "$f" -gt 0 ] && failed+=("$name")
done
[ ${#failed[@]} -gt 0 ] && echo "failing: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped ($((SECONDS / 60)) min $((SECONDS % 60)) s, $jobs lanes)"
[ "$fail" -eq 0 ]
