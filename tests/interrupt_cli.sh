#!/usr/bin/env bash
# test-runner: alone (timing-, RSS- or process-count-sensitive: run by itself after the parallel lanes)
# interrupt_cli.sh — SIGTERM (as sent by timeout, kill, a batch scheduler) stops `sparsity` and
# `ability` like Ctrl-C: on a large generated activation file, the signal is delivered while the
# run is in progress (the process is stopped with SIGSTOP as soon as its run row says 'running',
# sent SIGTERM, and continued, so the test does not depend on the machine's speed), and the
# command must end within a few seconds with exit 130, its run marked 'interrupted' with an
# 'interrupted after …' message. A second signal exits at once (130).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl=$build/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_interrupt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP interrupt checks: python3-h5py/numpy are not installed"; exit 0; fi
model=tests/fixtures/hf/llama

# A real file for the attributes and W_out norms, then a large one: 2 layers × 160000 tokens,
# 8000 documents of 20 tokens under 40 labels.
printf '{"tokens": [1, 5, 9, 13, 17, 21], "label": "a"}\n{"tokens": [1, 6, 10], "label": "b"}\n' > "$tmp/tiny.jsonl"
if ! "$nl" record $model "$tmp/tiny.jsonl" -o "$tmp/tiny.h5" 2>"$tmp/err"; then echo "FAIL record: $(cat "$tmp/err")"; exit 0; fi
$py - "$tmp/tiny.h5" "$tmp/big.h5" <<'PY'
import sys, h5py, numpy as np
src = h5py.File(sys.argv[1], "r"); N, T = 160000, 20; F = int(src.attrs["d_ff"]); D = N // T
rng = np.random.default_rng(7)
with h5py.File(sys.argv[2], "w") as f:
    for k, v in src.attrs.items(): f.attrs[k] = v
    f["tokens"] = np.ones(N, np.int32); f["doc_offsets"] = np.arange(0, N + 1, T, dtype=np.int64)
    f.create_dataset("doc_labels", data=[f"l{d % 40}" for d in range(D)], dtype=h5py.string_dtype())
    f["prompt_len"] = np.full(D, T, np.int32)
    for l in src["layers"]:
        g = f.create_group(f"layers/{l}")
        g["w_out_norm"] = src[f"layers/{l}/w_out_norm"][:]
        g.create_dataset("ffn_act", data=(rng.standard_normal((N, F)) ** 3).astype(np.float32), chunks=(4096, F))
PY
[ -f "$tmp/big.h5" ] || { echo "FAIL could not write the large activation file"; exit 0; }

# term NAME DB SIGNALS CMD...: start CMD, wait for its 'running' run, SIGSTOP, send SIGNALS, SIGCONT;
# sets rc (exit status), secs (seconds from SIGCONT to exit), status and message of the run.
term() {
  local name=$1 db=$2 sigs=$3; shift 3
  rm -f "$db"
  "$nl" "$@" --db "$db" >"$tmp/out" 2>"$tmp/err" &
  local pid=$! seen=
  for _ in $(seq 3000); do  # up to 10 minutes on a busy machine
    if [ "$(sqlite3 "$db" "SELECT count(*) FROM runs WHERE status = 'running'" 2>/dev/null)" = 1 ]; then seen=1; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
  done
  kill -STOP $pid 2>/dev/null
  for s in $sigs; do kill -$s $pid 2>/dev/null; done
  local t0; t0=$(date +%s.%N)
  kill -CONT $pid 2>/dev/null
  wait $pid; rc=$?
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  status=$(sqlite3 "$db" "SELECT status FROM runs ORDER BY id DESC LIMIT 1" 2>/dev/null)
  message=$(sqlite3 "$db" "SELECT message FROM runs ORDER BY id DESC LIMIT 1" 2>/dev/null)
  [ -n "$seen" ] || echo "  ($name: the run was never seen running; exit $rc: $(head -2 "$tmp/err"))"
}

fast() { [ "$(echo "$1 < 10" | bc)" = 1 ]; }

term sparsity "$tmp/s.db" TERM sparsity "$tmp/big.h5" --threads 1
if [ $rc -eq 130 ] && [ "$status" = interrupted ] && fast "$secs" && [[ "$message" == "interrupted after 0 of 2 layers" ]] &&
   grep -q "run 1 in '$tmp/s.db' keeps its finished layers (marked interrupted)" "$tmp/err"; then
  echo "PASS SIGTERM during sparsity: exit 130 after ${secs}s, run interrupted"
else echo "FAIL SIGTERM during sparsity: exit $rc after ${secs}s, run '$status' ($message): $(cat "$tmp/err")"; fi

term ability "$tmp/a.db" TERM ability "$tmp/big.h5" --threads 1
if [ $rc -eq 130 ] && [ "$status" = interrupted ] && fast "$secs" && [[ "$message" == interrupted* ]] &&
   [ "$(sqlite3 "$tmp/a.db" "SELECT count(*) FROM ability_score")" = 0 ]; then
  echo "PASS SIGTERM during ability: exit 130 after ${secs}s, run interrupted, no rows kept"
else echo "FAIL SIGTERM during ability: exit $rc after ${secs}s, run '$status' ($message): $(cat "$tmp/err")"; fi

term ability-int "$tmp/a2.db" INT ability "$tmp/big.h5" --threads 1
if [ $rc -eq 130 ] && [ "$status" = interrupted ] && fast "$secs"; then
  echo "PASS SIGINT during ability: exit 130 after ${secs}s, run interrupted"
else echo "FAIL SIGINT during ability: exit $rc after ${secs}s, run '$status' ($message): $(cat "$tmp/err")"; fi

# A second signal does not wait for the loops: exit 130 at once.
term sparsity-twice "$tmp/s2.db" "TERM TERM" sparsity "$tmp/big.h5" --threads 1
if [ $rc -eq 130 ] && fast "$secs"; then echo "PASS a second SIGTERM exits 130 at once (${secs}s)"
else echo "FAIL a second SIGTERM: exit $rc after ${secs}s"; fi
exit 0
