#!/usr/bin/env bash
# corpus.sh — the zoo's labelled corpus (issue 4): the committed eval sets always, and the
# training corpus when build/corpus/ has been built (notebooks-data/corpus/build.sh); checks
# labels, valid UTF-8, ~200 eval documents per ability, no eval document in train/val, the
# manifest's hashes. Prints PASS/FAIL/SKIP lines (notebooks-data/corpus/check.py).
cd "$(dirname "$0")/.."
py=/usr/bin/python3; [ -x "$py" ] || py=python3
exec "$py" notebooks-data/corpus/check.py
