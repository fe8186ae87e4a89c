#!/usr/bin/env bash
# symbols.sh — the library exports only prefixed names (DESIGN §8): every global symbol defined
# in BUILD/libneuronlab.a (functions, data such as the gnuplot templates nl_plot_templates)
# starts with nl_ or NL_, so linking neuronlab into another program cannot clash with its
# names. File-local helpers are static; module-internal ones carry the nl_ prefix too
# (nl_tk_*, nl_js_* in src/tokenizer/). NL_BUILD gives the build folder (default build).
# Prints PASS/FAIL lines (read by scripts/run-tests.sh), each offending symbol with its object.
set -u
cd "$(dirname "$0")/.."
lib=${NL_BUILD:-build}/libneuronlab.a
if [ ! -f "$lib" ]; then echo "FAIL exported symbols: $lib not found (build it first)"; exit 0; fi
if ! out=$(nm -g --defined-only "$lib" 2>&1); then echo "FAIL exported symbols: nm failed on $lib:"; sed 's/^/    /' <<<"$out" | head -5; exit 0; fi
# nm prints "obj.o:" headers and "ADDRESS TYPE NAME" lines; keep (object, name)
pairs=$(awk '/:$/ { obj = substr($0, 1, length($0) - 1); next } NF == 3 { print obj, $3 }' <<<"$out")
total=$(grep -c . <<<"$pairs")
# (a named `#pragma omp critical(nl_x)` is the common symbol .gomp_critical_user_nl_x: our prefix)
bad=$(awk '$2 !~ /^(nl_|NL_|\.gomp_critical_user_nl_)/' <<<"$pairs")
if [ "$total" -lt 50 ]; then
  echo "FAIL exported symbols: only $total global symbols in $lib (nm output not understood?)"
elif [ -n "$bad" ]; then
  echo "FAIL exported symbols: $(grep -c . <<<"$bad") of $total global symbols lack the nl_/NL_ prefix:"
  sed 's/^/    /' <<<"$bad" | head -40
else
  echo "PASS exported symbols: all $total global symbols of $lib start with nl_ or NL_"
fi
exit 0
