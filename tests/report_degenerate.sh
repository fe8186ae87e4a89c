#!/usr/bin/env bash
# report_degenerate.sh — `neuronlab report` never fails whole and never misdraws on odd data.
# A base database comes from the real commands on the fixture model (record → sparsity,
# perturb, ability, prune, overlap), so its tables have the analyses' real schemas; then
# tests/report_degenerate.py replaces the rows with degenerate ones (all zeros, constants,
# integers, one label, one layer, NaN/±Inf/text values, hostile labels) and checks that every
# figure with data is drawn and the rest listed, that a figure whose gnuplot fails is skipped
# and reported (exit 1, the log where the message says), and that Ctrl-C exits 130.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$PWD/${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_report_odd.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf/llama
if ! command -v gnuplot > /dev/null; then echo "SKIP report on odd data: gnuplot is not installed (apt-get install gnuplot-nox)"; exit 0; fi

$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(24)], "label": ["code", "math", "prose"][i % 3]}) + "\n")
PY
{ "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" --pool && "$nl" sparsity "$tmp/a.h5" --db "$tmp/base.db" \
  && "$nl" perturb $fx "$tmp/d.jsonl" --db "$tmp/base.db" --ratios 0,0.5 && "$nl" ability "$tmp/a.h5" --db "$tmp/base.db" \
  && "$nl" prune $fx "$tmp/d.jsonl" --db "$tmp/base.db" --scores latest --seeds 1 \
  && "$nl" overlap --db "$tmp/base.db" --scores latest; } > "$tmp/why" 2>&1
rc=$?
if [ $rc -eq 0 ]; then echo "PASS base database for the odd-data reports from the real commands"
else echo "FAIL base database for the odd-data reports from the real commands"; sed 's/^/    /' "$tmp/why" | tail -8; exit 0; fi
$py tests/report_degenerate.py "$nl" "$tmp/base.db" "$tmp" || echo "FAIL report_degenerate.py stopped (exit $?)"
exit 0
