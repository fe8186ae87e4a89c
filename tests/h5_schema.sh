#!/usr/bin/env bash
# h5_schema.sh — runs tests/check_h5.py (h5py's view of schema v1) on the activation files
# that tests/test_h5store.c leaves in $NL_BUILD (a complete f16 file with a layer subset
# and pooled rows, and an interrupted f32 file). One "PASS/FAIL/SKIP h5_schema <file>"
# line per file; check_h5.py's own lines follow indented. Skips when the files or
# python3-h5py are missing (run the Criterion suite first: scripts/run-tests.sh does).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
py=/usr/bin/python3
if ! "$py" -c 'import h5py' 2>/dev/null; then
  echo "SKIP h5_schema: python3-h5py is not installed for $py"
  exit 0
fi
for f in test_h5store_schema.h5 test_h5store_schema_interrupted.h5; do
  p="$build/$f"
  if [ ! -f "$p" ]; then
    echo "SKIP h5_schema $f: $p is missing (written by $build/tests/test_h5store)"
    continue
  fi
  out=$("$py" tests/check_h5.py "$p" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then
    echo "PASS h5_schema $f ($(grep -c '^PASS ' <<<"$out") checks)"
  else
    printf '%s\n' "$out" | grep -v '^PASS ' | sed 's/^/  /'
    echo "FAIL h5_schema $f"
  fi
done
