#!/usr/bin/env bash
# repro_robustness.sh — runs each reproduction of issue 17 (../shared/repro/robustness/R*/repro.sh)
# against this build and checks the outcome the issue expects: a one-line error naming the
# file with exit 1 (2 for a usage error), or a correct result, and no sanitizer report where a
# repro runs the ASan build (build/debug/neuronlab, `make debug-cli`; those parts SKIP without
# it). One PASS/FAIL/SKIP line per repro (read by scripts/run-tests.sh); SKIPs everything with
# a message when ../shared is absent. R8, R9 and R10 take minutes (200 rounds of three
# processes; recording the zoo model and a 20 s lock; recording into a 2 MB tmpfs, root only)
# and run with NL_SLOW=1 (make check-slow).
#
# Each repro has a regression test in the project that needs no ../shared:
#   R1  report on an integer colour range        tests/report_degenerate.sh (all-zero/integer overlaps, Ctrl-C → 130)
#   R2  h5 layers attribute [0, 5]               tests/test_h5store.c (reader_rejects_layers_beyond_n_layers, R2)
#   R3  100,000-character label                  tests/test_dataset.c ("label" is N bytes long (at most 256))
#   R4  string attributes stored as arrays       tests/test_h5store.c (R4)
#   R5  NULL text values in a results database   tests/cli_errors.sh + cli_errors_asan.sh (NULL ability name / kind)
#   R6  labels with '#', a newline, _ ^ @        tests/report_degenerate.sh (hostile labels), tests/report.sh
#   R7  record -o one of its inputs              tests/record.sh (5. the output is never an input)
#   R8  three processes create one results.db    tests/runs_cli.sh (concurrent creators)
#   R9  lock held past the busy timeout          tests/test_results.c (R9: the final status waits for the lock),
#                                                tests/runs_cli.sh (stale runs)
#   R10 disk full / ulimit -f during record      tests/record.sh (6. ulimit -f), tests/test_h5store.c (failed writes)
#   R11 rope_theta 1e-300, NaN in JSON           tests/test_hf.c (R11), tests/cli_errors.sh
#   R12 bytes inserted into safetensors data     tests/test_hf.c (R12), tests/cli_errors.sh
#   R13 num_hidden_layers = 2^31-1               tests/test_hf.c (R13), tests/cli_errors.sh
#   R14 NaN in w_out_norm blamed on the db       tests/test_h5store.c (R14), tests/cli_errors.sh (non-finite inputs)
#   R15 n_layers = 2^30, no layers attribute     tests/test_h5store.c (R15)
#   R16 usage errors exiting 1                   tests/cli_errors.sh (expect_usage: --dead nan, --cett -1,
#                                                --resident-frac 5, record --layers 1-0)
set -u
cd "$(dirname "$0")/.."
root=$PWD
build=${NL_BUILD:-build}
rep=${NL_REPRO_DIR:-../shared/repro/robustness}
names="R1 R2 R3 R4 R5 R6 R7 R8 R9 R10 R11 R12 R13 R14 R15 R16"
if [ ! -d "$rep" ]; then
  for r in $names; do echo "SKIP repro $r: $rep is absent (the shared reproductions of issue 17)"; done
  exit 0
fi
if [ "$build" != build ]; then
  # the repro scripts run ./build/neuronlab (and ./build/debug/neuronlab): give them this build
  root=$(mktemp -d /tmp/nl_repro_root.XXXXXX)
  mkdir -p "$root/build"; ln -s "$PWD/$build/neuronlab" "$root/build/neuronlab"
  [ -x build/debug/neuronlab ] && mkdir -p "$root/build/debug" && ln -s "$PWD/build/debug/neuronlab" "$root/build/debug/neuronlab"
  for f in tests notebooks-data; do ln -s "$PWD/$f" "$root/$f"; done
fi
tmp=$(mktemp -d /tmp/nl_repro.XXXXXX)
trap 'rm -rf "$tmp"; [ "$root" != "$PWD" ] && rm -rf "$root"' EXIT
asan=0; [ -x "$root/build/debug/neuronlab" ] && asan=1

# run R: runs R*/repro.sh (its temporary folders inside $tmp), output in $tmp/R.out.
run() {
  local d; d=$(ls -d "$rep/$1"_* 2>/dev/null | head -1)
  if [ -z "$d" ]; then echo "FAIL repro $1: no folder $rep/$1_*"; return 1; fi
  mkdir -p "$tmp/w$1"
  (cd "$root" && TMPDIR=$tmp/w$1 ROOT=$root OMP_NUM_THREADS=1 timeout -k 10 ${2:-300} sh "$d/repro.sh") >"$tmp/$1.out" 2>&1
  return 0
}
# check R WHAT [+PATTERN | -PATTERN]...: every +PATTERN (grep -E) is in the output, no -PATTERN is.
check() {
  local r=$1 what=$2 miss=""; shift 2
  for p in "$@"; do
    case $p in
      +*) grep -qE -- "${p#+}" "$tmp/$r.out" || miss="$miss; missing /${p#+}/";;
      -*) grep -qE -- "${p#-}" "$tmp/$r.out" && miss="$miss; unexpected /${p#-}/";;
    esac
  done
  if [ -z "$miss" ]; then echo "PASS repro $r: $what"
  else echo "FAIL repro $r: $what${miss}"; sed 's/^/    | /' "$tmp/$r.out" | head -20; fi
}
san='-AddressSanitizer|runtime error|LeakSanitizer'
nodebug=""; [ $asan = 1 ] || nodebug=" (the ASan part skipped: build/debug/neuronlab missing, make debug-cli)"

run R1; check R1 "report on an integer colour range draws its figures (exit 0)" "+^exit 0" "+^rep/index.html" "-gnuplot failed"
run R2
if [ $asan = 1 ]; then check R2 "layers [0, 5]: one-line error, exit 1, no use after free" "+acts.h5' is corrupt: attribute 'layers' lists layer 5 but n_layers is 2" "+^release exit 1" "$san"
else check R2 "layers [0, 5]: one-line error, exit 1$nodebug" "+acts.h5' is corrupt: attribute 'layers' lists layer 5 but n_layers is 2" "+^release exit 1"; fi
run R3; check R3 "a 100,000-character label is refused naming the file and line" "+'d.jsonl' line 1: \"label\" is 100000 bytes long \(at most [0-9]+\)" "+^exit 1"
run R4; check R4 "string attributes stored as arrays: one-line errors, exit 1$nodebug" \
  "+release vlen2.h5: exit 1 neuronlab: 'vlen2.h5' is corrupt: attribute 'act_fn' is an array" \
  "+release vlen2000.h5: exit 1 neuronlab: 'vlen2000.h5' .*array of 2000 strings" \
  "+release fixed.h5: exit 1 neuronlab: 'fixed.h5' " "$san"
run R5; check R5 "NULL text values: errors naming the database, exit 1" \
  "+'a.db': ability_top of run 3 has a NULL ability name" "+top_null.db overlap exit 1" \
  "+'b.db': run 3 has a NULL kind" "+kind_null.db overlap exit 1" "+'c.db': ability_top of run 3 has a NULL" "+top_null.db prune exit 1" \
  "-Segmentation|exit 139"
run R6 600
# four panels, four title lines, each label whole; the '#math' row is data (the repro's cut shows it)
n_titles=$(grep -cE '^(#math|code|new line|x_y\^2@z) \(4 of 16 documents\)\$$' "$tmp/R6.out")
if [ "$n_titles" = 4 ] && grep -q '^#math,' "$tmp/R6.out"; then echo "PASS repro R6: hostile labels: 4 panels with 4 whole titles, '#math' a data row"
else echo "FAIL repro R6: hostile labels: $n_titles of 4 titles whole"; sed 's/^/    | /' "$tmp/R6.out" | head -20; fi
run R7; check R7 "record -o an input is refused (exit 1) and every input survives" \
  "+refusing to write 'm/model.safetensors'" "+1\) -o = the mmapped model: exit 1" \
  "+refusing to write 'results.db': it is the --db database" "+2\) -o = --db: exit 1" "+^6$" \
  "+refusing to write 'd2.jsonl': it is the dataset" "+3\) -o = DATA: exit 1" "+\{   \"   t   o   k" "-Bus error"
if [ "${NL_SLOW:-0}" = 1 ]; then
  run R8 900; check R8 "three processes create one results.db: no failure in 200 rounds" "+schema-creation failures: 0/200"
  if [ -d notebooks-data/models/silu ]; then
    run R9 1800; check R9 "a lock held past the busy timeout: the run ends with a final status, not 'running'" "+sparsity exit" "-\|running\|"
  else echo "SKIP repro R9: notebooks-data/models/silu is missing"; fi
  if [ "$(id -u)" != 0 ]; then echo "SKIP repro R10: mounts a 2 MB tmpfs (root only)"
  elif [ ! -d notebooks-data/models/silu ]; then echo "SKIP repro R10: notebooks-data/models/silu is missing"
  else
    run R10 1800; check R10 "disk full during record: exit 1, one message, run failed, the file readable" \
      "+exit 1   \(expected 1\)" "+cannot write 'full/a.h5': No space left on device \(the file keeps the [0-9]+ documents? committed before\)" \
      "+^failed\|" "-Traceback|Error|Segmentation|exit 139"
  fi
else
  for r in R8 R9 R10; do echo "SKIP repro $r: takes minutes, runs with NL_SLOW=1 (make check-slow); regression test listed at the top of $0"; done
fi
run R11; check R11 "rope_theta 1e-300: an error naming config.json, no NaN, no invalid JSON" \
  "+'m/config.json': field 'rope_theta' is 1e-300, which becomes 0" "+ppl --json exit 1" "-nan|NaN"
run R12; check R12 "2 bytes inserted into the data section: an error naming the file" \
  "+overall  ppl [0-9.]+" "+cannot read 'm/model.safetensors': the data section has 427266 bytes but the last tensor ends at byte 427264" "+^exit 1" "-nan"
run R13
check R13 "num_hidden_layers 2^31-1: an error naming config.json and the field, small memory$nodebug" \
  "+'m/config.json': num_hidden_layers is 2147483647, but 'm/model.safetensors' holds 2 layers" "+^exit 1" "-out of memory" "$san"
rss=$(sed -n 's/^peak RSS \([0-9]*\) KB/\1/p' "$tmp/R13.out")
[ -n "$rss" ] && [ "$rss" -gt 200000 ] && echo "FAIL repro R13: peak RSS $rss KB"
run R14; check R14 "NaN in w_out_norm: the error names the .h5, exit 1, no NOT NULL from the database" \
  "+'acts.h5': layer 1 w_out_norm holds a non-finite value" "+^exit 1" "-NOT NULL"
run R15 120; check R15 "n_layers = 2^30: refused at once, exit 1" "+'acts.h5' is corrupt: attribute n_layers = 1073741824" "+^exit 1" "-exit 137|exit 124"
t15=$(sed -n 's/^\([0-9.]*\) s, peak RSS.*/\1/p' "$tmp/R15.out")
[ -n "$t15" ] && awk -v t="$t15" 'BEGIN { exit !(t > 20) }' && echo "FAIL repro R15: took $t15 s"
run R16
n2=$(grep -c '^exit 2$' "$tmp/R16.out")
if [ "$n2" = 4 ] && ! grep -q '^exit 1$' "$tmp/R16.out" && grep -q "^neuronlab ability: --top: '0' is not a fraction" "$tmp/R16.out"; then
  echo "PASS repro R16: the four bad option values are usage errors (exit 2), like ability --top 0"
else echo "FAIL repro R16: $n2 of 4 usage errors exit 2"; sed 's/^/    | /' "$tmp/R16.out" | head -20; fi
