#!/usr/bin/env bash
# cli_errors_asan.sh — the bad-input cases of tests/cli_errors.sh (model and tokenizer loaders,
# sparsity, ability, overlap, prune, perturb, runs, train, report: usage errors, foreign
# databases with NULL text values, non-finite activation files) run with the ASan/UBSan build
# build/debug/neuronlab (`make debug-cli`, done by `make test`): each case fails on any
# sanitizer report (leaks included) as well as on a wrong exit status or message.
# SKIP when the sanitizer build is missing. Prints PASS/FAIL/SKIP lines (scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
NL_CLI_ASAN=1 exec bash tests/cli_errors.sh
