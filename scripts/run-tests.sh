#!/usr/bin/env bash
# run-tests.sh — runs every Criterion suite in BUILD/tests and every tests/*.sh script,
# then prints one closing line over all of them: "N passed, M failed[, K skipped]".
# Scripts report their own counts by printing lines "PASS name", "FAIL name", "SKIP name".
set -u
build=${1:-build}
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0
failed=()
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  t0=$SECONDS
  out=$("$t" --jobs 1 2>&1); rc=$?
  syn=$(printf '%s\n' "$out" | grep -a 'Synthesis:' | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
  p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn"); p=${p:-0}
  f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn"); f=${f:-0}
  c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn"); c=${c:-0}
  s=$(sed -n 's/.*Skipped: \([0-9]*\).*/\1/p' <<<"$syn"); s=${s:-0}
  if [ -z "$syn" ] && [ $rc -ne 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f + c)); skip=$((skip + s))
  printf '%s\n' "$out" | grep -av '^\[----\]\|^\[====\]' | sed "s/^/  [$name] /" | grep -a -i 'fail\|crash\|skip\|warn\|error' | head -40
  echo "suite $name: $p passed, $((f + c)) failed, $s skipped ($((SECONDS - t0)) s)"
  [ $((f + c)) -gt 0 ] && failed+=("$name")
done
for s in tests/*.sh; do
  [ -f "$s" ] || continue
  name=$(basename "$s")
  t0=$SECONDS
  out=$(NL_BUILD="$build" bash "$s" 2>&1); rc=$?
  p=$(grep -ac '^PASS ' <<<"$out"); f=$(grep -ac '^FAIL ' <<<"$out"); k=$(grep -ac '^SKIP ' <<<"$out")
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "  [$name] exited $rc"; fi
  grep -a '^FAIL \|^SKIP ' <<<"$out" | sed "s/^/  [$name] /"
  [ "$f" -gt 0 ] && { printf '%s\n' "$out" | tail -20 | sed "s/^/  [$name] | /"; failed+=("$name"); }
  echo "script $name: $p passed, $f failed, $k skipped ($((SECONDS - t0)) s)"
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + k))
done
[ ${#failed[@]} -gt 0 ] && echo "failing: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped ($((SECONDS / 60)) min $((SECONDS % 60)) s)"
[ "$fail" -eq 0 ]
