#!/usr/bin/env bash
# sparsity_cli.sh — `neuronlab sparsity` end to end: record on the fixture models → sparsity →
# the tables checked by an independent numpy implementation (tests/sparsity_check.py: exact
# fractions, frequencies, dead/resident, CETT against a brute-force sweep), --json, --no-cett,
# reruns adding runs, Ctrl-C marking the run interrupted, an incomplete file analysed with a
# warning, and every bad input as one line naming the file with exit status 1 (release and,
# when built, the ASan/UBSan binary). Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
build=${NL_BUILD:-build}
nl=$build/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_sparsity.XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP sparsity CLI checks: python3-h5py/numpy are not installed"; exit 0; fi
bins=("$nl")
asan=${NL_ASAN_BIN:-build/debug/neuronlab}  # the sanitizer build (make debug-cli), when present
if [ -x "$asan" ]; then
  if "$asan" sparsity --help >/dev/null 2>&1; then bins+=("$asan")
  else echo "SKIP bad-input checks on the ASan build: $asan predates the sparsity command (make debug-cli)"; fi
fi

# A labelled dataset for the fixture models (vocab 256): 40 documents of 48 tokens.
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(11)
labels = ["code", "math", "", "prose"]
with open(sys.argv[1] + "/small.jsonl", "w") as f:
    for d in range(40):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 250) for _ in range(47)], "label": labels[d % 4]}) + "\n")
PY

# 1. record → sparsity → the numpy reference, on Llama (no bias) and GPT-2 (b_out, Conv1D).
for m in llama gpt2; do
  model=tests/fixtures/hf/$m
  if ! "$nl" record $model "$tmp/small.jsonl" -o "$tmp/$m.h5" 2>"$tmp/err"; then echo "FAIL record on $m: $(cat "$tmp/err")"; continue; fi
  if "$nl" sparsity "$tmp/$m.h5" --db "$tmp/r.db" --cett 0.05,0.1,0.2,0.5 > "$tmp/out" 2>"$tmp/err"; then
    if grep -q '^all ' "$tmp/out" && grep -q "CETT-0.2 sparsity" "$tmp/out"; then echo "PASS sparsity on $m: summary printed"
    else echo "FAIL sparsity on $m: summary"; cat "$tmp/out"; fi
    run=$(sqlite3 "$tmp/r.db" "SELECT max(id) FROM runs")
    $py tests/sparsity_check.py "$tmp/$m.h5" $model "$tmp/r.db" "$run" | sed "s/^\(PASS\|FAIL\) /\1 $m: /"
  else
    echo "FAIL sparsity on $m exited non-zero: $(cat "$tmp/err")"
  fi
done

# 1b. A real pretrained checkpoint (llama2.c layout, f16 activations), when ../shared is there.
st=../shared/models/stories260K
if [ -f $st/stories260K.bin ]; then
  if "$nl" record $st/stories260K.bin $st/tokens.jsonl -o "$tmp/st.h5" --dtype f16 2>/dev/null && \
     "$nl" sparsity "$tmp/st.h5" --db "$tmp/st.db" >/dev/null 2>"$tmp/err"; then
    $py tests/sparsity_check.py "$tmp/st.h5" $st/stories260K.bin "$tmp/st.db" 1 | sed "s/^\(PASS\|FAIL\) /\1 stories260K: /"
  else echo "FAIL sparsity on stories260K: $(cat "$tmp/err")"; fi
else
  echo "SKIP sparsity on stories260K: ../shared is absent"
fi

# 2. --json: one object whose numbers are the database's.
if "$nl" sparsity "$tmp/llama.h5" --db "$tmp/r.db" --json > "$tmp/j.json" 2>"$tmp/err"; then
  $py - "$tmp/j.json" "$tmp/r.db" <<'PY' && echo "PASS --json matches the database" || echo "FAIL --json"
import json, sqlite3, sys
j = json.load(open(sys.argv[1])); db = sqlite3.connect(sys.argv[2])
run = j["run_id"]
ok = j["cett"] and j["tokens"] == 1920 and len(j["rows"]) == 3 * 4
for r in j["rows"]:
    fz = db.execute("SELECT frac_below_0_1 FROM sparsity_layer WHERE run_id=? AND layer=? AND label=? AND indicator='value'",
                    (run, r["layer"], r["label"])).fetchone()[0]
    ok = ok and abs(fz - r["value"]["frac_below_0_1"]) < 1e-9
    c = db.execute("SELECT sparsity FROM sparsity_cett WHERE run_id=? AND layer=? AND label=? AND target=0.2",
                   (run, r["layer"], r["label"])).fetchone()[0]
    ok = ok and abs(c - [x for x in r["cett"] if x["target"] == 0.2][0]["sparsity"]) < 1e-9
    ok = ok and set(r["value"]["quantiles"]) == {"0.01", "0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99"}
sys.exit(0 if ok else 1)
PY
else echo "FAIL --json exited non-zero: $(cat "$tmp/err")"; fi

# 3. --no-cett without a model; runs accumulate; the runs table tells them apart.
$py - "$tmp/llama.h5" "$tmp/nomodel.h5" <<'PY'
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f: f.attrs["model"] = "/nonexistent/model"
PY
"$nl" sparsity "$tmp/nomodel.h5" --db "$tmp/r.db" --no-cett > "$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && grep -q "CETT: skipped (--no-cett)" "$tmp/out" && \
   [ "$(sqlite3 "$tmp/r.db" "SELECT count(*) FROM sparsity_cett WHERE run_id = (SELECT max(id) FROM runs)")" = 0 ] && \
   [ "$(sqlite3 "$tmp/r.db" "SELECT count(*) FROM runs WHERE kind = 'sparsity' AND status = 'complete'")" = 4 ]; then
  echo "PASS --no-cett analyses a file whose model is gone and says so; 4 complete runs side by side"
else echo "FAIL --no-cett: $(cat "$tmp/err")"; cat "$tmp/out"; fi
"$nl" sparsity "$tmp/nomodel.h5" --db "$tmp/r.db" --model tests/fixtures/hf/llama >/dev/null 2>"$tmp/err" \
  && echo "PASS --model overrides the file's model attribute" || echo "FAIL --model override: $(cat "$tmp/err")"

# 4. An incomplete file (interrupted record) is analysed with a warning.
$py - "$tmp/llama.h5" "$tmp/inc.h5" <<'PY'
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f: f.attrs["complete"] = 0
PY
if "$nl" sparsity "$tmp/inc.h5" --db "$tmp/r.db" >/dev/null 2>"$tmp/err" && grep -q "warning: '$tmp/inc.h5' is incomplete" "$tmp/err"; then
  echo "PASS incomplete file analysed with a warning"
else echo "FAIL incomplete file: $(cat "$tmp/err")"; fi

# 5. Ctrl-C: exit 130, the run marked 'interrupted', earlier runs untouched.
$py - "$tmp/llama.h5" "$tmp/big.h5" <<'PY'
import sys, h5py, numpy as np
src = h5py.File(sys.argv[1], "r"); N = 60000; F = src.attrs["d_ff"]
rng = np.random.default_rng(1)
with h5py.File(sys.argv[2], "w") as f:
    for k, v in src.attrs.items(): f.attrs[k] = v
    f["tokens"] = np.ones(N, np.int32); f["doc_offsets"] = np.arange(0, N + 1, 500, dtype=np.int64)
    D = N // 500
    f.create_dataset("doc_labels", data=["a"] * D, dtype=h5py.string_dtype()); f["prompt_len"] = np.full(D, 500, np.int32)
    for l in src["layers"]:
        g = f.create_group(f"layers/{l}")
        g["w_out_norm"] = src[f"layers/{l}/w_out_norm"][:]
        g.create_dataset("ffn_act", data=(rng.standard_normal((N, F)) ** 3).astype(np.float32), chunks=(4096, F))
PY
"$nl" sparsity "$tmp/big.h5" --db "$tmp/r.db" --threads 1 >/dev/null 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do  # interrupt as soon as the run is recorded as running
  [ "$(sqlite3 "$tmp/r.db" "SELECT count(*) FROM runs WHERE status = 'running'" 2>/dev/null)" = 1 ] && break
  sleep 0.02
done
sleep 0.1
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
st=$(sqlite3 "$tmp/r.db" "SELECT status FROM runs WHERE id = (SELECT max(id) FROM runs)")
if [ $rc -eq 130 ] && [ "$st" = interrupted ] && grep -q "interrupted" "$tmp/err" && \
   [ "$(sqlite3 "$tmp/r.db" "SELECT count(*) FROM runs WHERE status = 'complete'")" = 6 ]; then
  echo "PASS Ctrl-C: exit 130, run marked interrupted, earlier runs intact"
else echo "FAIL Ctrl-C: exit $rc, status '$st': $(cat "$tmp/err")"; fi

# 6. Bad input: one line naming the file, exit 1. ($pre: a command prefix, e.g. setpriv.)
pre=()
expect() {
  local name=$1 pat=$2; shift 2
  for bin in "${bins[@]}"; do
    local tag=$name; [ "$bin" != "${bins[0]}" ] && tag="$name (asan)"
    ASAN_OPTIONS=detect_leaks=1 NEURONLAB_DB_TIMEOUT_MS=300 "${pre[@]}" "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$? lines; lines=$(wc -l <"$tmp/err")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE -- "$pat" "$tmp/err" && ! grep -q 'Sanitizer\|runtime error' "$tmp/err"; then
      echo "PASS $tag"
    else
      echo "FAIL $tag: exit $rc, $lines stderr lines, wanted /$pat/:"; sed 's/^/    /' "$tmp/err" | head -5
    fi
  done
}
echo "plain text" > "$tmp/text.h5"
$py - "$tmp" "$tmp/llama.h5" <<'PY'
import shutil, sys, h5py
d = sys.argv[1]
with h5py.File(d + "/other.h5", "w") as f: f.attrs["format"] = "something.else"; f["x"] = [1, 2]
shutil.copy(sys.argv[2], d + "/v2.h5")
with h5py.File(d + "/v2.h5", "r+") as f: f.attrs["version"] = 2
shutil.copy(sys.argv[2], d + "/pooled.h5")
with h5py.File(d + "/pooled.h5", "r+") as f:
    for l in list(f["layers"]):
        del f[f"layers/{l}/ffn_act"]
        f.create_dataset(f"pooled/{l}/mean_abs", data=f["doc_labels"].shape and [[0.0] * f.attrs["d_ff"]] * f["doc_labels"].shape[0])
raw = open(sys.argv[2], "rb").read()
open(d + "/trunc.h5", "wb").write(raw[:len(raw) // 3])
PY
expect "missing activation file" "cannot open '$tmp/nope.h5': No such file" sparsity "$tmp/nope.h5" --db "$tmp/e.db"
expect "not an HDF5 file" "'$tmp/text.h5' is not an HDF5 file" sparsity "$tmp/text.h5" --db "$tmp/e.db"
expect "HDF5 file of another format" "'$tmp/other.h5' is not a neuronlab activation file" sparsity "$tmp/other.h5" --db "$tmp/e.db"
expect "activation file version 2" "'$tmp/v2.h5': activation file version 2 is not supported" sparsity "$tmp/v2.h5" --db "$tmp/e.db"
expect "truncated activation file" "'$tmp/trunc.h5'" sparsity "$tmp/trunc.h5" --db "$tmp/e.db"
expect "pooled-only file" "'$tmp/pooled.h5' holds no activations" sparsity "$tmp/pooled.h5" --db "$tmp/e.db" --no-cett
expect "model of another shape" "model 'tests/fixtures/hf/gpt2' does not match '$tmp/llama.h5': d_ff is 256 in the model, 128" \
  sparsity "$tmp/llama.h5" --db "$tmp/e.db" --model tests/fixtures/hf/gpt2
expect "model that is gone" "cannot open '/nonexistent/model'.*pass --model MODEL, or --no-cett" sparsity "$tmp/nomodel.h5" --db "$tmp/e.db"
expect "database in a missing directory" "cannot open '/nonexistent/dir/r.db'" sparsity "$tmp/llama.h5" --db /nonexistent/dir/r.db --no-cett
echo "not a database, just text that is long enough to be read as a header by sqlite" > "$tmp/notdb.db"
expect "database that is not SQLite" "'$tmp/notdb.db' is not an SQLite database" sparsity "$tmp/llama.h5" --db "$tmp/notdb.db" --no-cett
cp "$tmp/r.db" "$tmp/ro.db"; chmod 444 "$tmp/ro.db"; chmod 644 "$tmp/llama.h5"
[ "$(id -u)" = 0 ] && pre=(setpriv --reuid=65534 --regid=65534 --clear-groups --)  # root writes anywhere: run as nobody
expect "read-only database" "'$tmp/ro.db' is read-only" sparsity "$tmp/llama.h5" --db "$tmp/ro.db" --no-cett
pre=()
$py - "$tmp/r.db" > "$tmp/lock.out" 2>&1 <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(4)
PY
lk=$!
for _ in $(seq 50); do grep -q locked "$tmp/lock.out" 2>/dev/null && break; sleep 0.1; done
expect "locked database" "'$tmp/r.db' is locked by another process" sparsity "$tmp/llama.h5" --db "$tmp/r.db" --no-cett
kill $lk 2>/dev/null; wait $lk 2>/dev/null

# 7. Usage errors exit 2.
"$nl" sparsity "$tmp/llama.h5" >/dev/null 2>&1; rc1=$?
"$nl" sparsity "$tmp/llama.h5" --db "$tmp/r.db" --cett 0.1,x >/dev/null 2>&1; rc2=$?
"$nl" sparsity "$tmp/llama.h5" --db "$tmp/r.db" --cett 1.5 >/dev/null 2>"$tmp/err"; rc3=$?
[ $rc1 -eq 2 ] && [ $rc2 -eq 2 ] && [ $rc3 -eq 2 ] && grep -q -- "--cett: '1.5' is not a CETT target in (0, 1)" "$tmp/err" \
  && echo "PASS usage errors exit 2, out-of-range targets too" || echo "FAIL usage errors: $rc1 $rc2 $rc3 $(cat "$tmp/err")"
