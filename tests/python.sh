#!/usr/bin/env bash
# python.sh — the Python package (python/neuronlab, ctypes over BUILD/libneuronlab.so): pytest over
# python/tests/ — the package equals the CLI on ppl, record and prune (zoo model silu, and
# stories260K from ../shared when present), a hook zeroing the math neurons of an ability run
# equals `neuronlab prune --neurons`, patching the full residual stream of A into B gives A's
# logits exactly, and every error case is a clear Python exception. Skips with a message when
# /usr/bin/python3 lacks numpy, pytest or h5py (Debian: python3-numpy python3-pytest python3-h5py).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh). NL_BUILD gives the build folder.
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
py=/usr/bin/python3
for mod in numpy pytest h5py; do
  if ! $py -c "import $mod" 2>/dev/null; then echo "SKIP python package: $py has no $mod (apt-get install python3-$mod)"; exit 0; fi
done
if [ ! -e "$build/libneuronlab.so" ]; then echo "FAIL python package: $build/libneuronlab.so not found (make)"; exit 0; fi
export NL_BUILD=$build NEURONLAB_LIB=$(realpath "$build/libneuronlab.so") OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1
out=$($py -m pytest -q -rA -p no:cacheprovider python/tests 2>&1); rc=$?
# one line per test from pytest's summary: PASS/FAIL/SKIP (skips with their reason)
printf '%s\n' "$out" | sed -n -e 's/^PASSED \(.*\)/PASS python \1/p' -e 's/^\(FAILED\|ERROR\) \(.*\)/FAIL python \2/p' \
                              -e 's/^SKIPPED \[[0-9]*\] [^ ]* \(.*\)/SKIP python \1/p'
[ $rc -eq 0 ] || printf '%s\n' "$out" | grep -v '^\(PASSED\|SKIPPED\) ' | tail -40 | sed 's/^/  | /'
[ $rc -eq 0 ] || [ $rc -eq 1 ] || echo "FAIL python pytest exited $rc"
printf '%s\n' "$out" | tail -1
exit 0
