#!/usr/bin/env bash
# record_threads.sh — documents in parallel give the results of one thread (issue 18):
#   - `record --pool --hook ffn_act,resid` on the zoo SiLU model with --threads 1 and --threads 2
#     writes the same datasets (every dataset and root attribute compared with h5py, f32 and f16),
#     on documents of different lengths, two of them longer than the context of 256 (windows);
#   - a --threads 2 record interrupted by SIGINT after a commit keeps a prefix of whole documents
#     equal to the full run's, and --resume completes it to the same datasets;
#   - `perturb` with --threads 1 and --threads 2 stores the same perturb rows (value and random
#     masking), and prints the same table; `moe-sweep` stores the same rows but the measured speed.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_record_threads.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=notebooks-data/models/silu
if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP record_threads: /usr/bin/python3 lacks h5py or numpy"; exit 0; fi
if [ ! -f $model/model.safetensors ]; then echo "SKIP record_threads: the zoo model $model is absent"; exit 0; fi

# 8 documents: 408, 128, 426, 517 tokens (code; three over the context), 66, 57 (math), 32, 332 (writing)
{ head -n 4 notebooks-data/eval/code.jsonl; head -n 2 notebooks-data/eval/math.jsonl; head -n 2 notebooks-data/eval/writing.jsonl; } > "$tmp/d.jsonl"

cat > "$tmp/same.py" <<'PY'
import sys, h5py, numpy as np
def load(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
        for k, v in f.attrs.items(): out["@" + k] = v
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b), f"different datasets: {sorted(set(a) ^ set(b))}"
for k in a:
    x, y = a[k], b[k]
    if isinstance(x, np.ndarray) and x.dtype == object:
        same = x.shape == y.shape and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(x.ravel(), y.ravel()))
    else:
        same = np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
    assert same, f"{k} differs"
print(f"{len([k for k in a if not k.startswith('@')])} datasets, {int(a['doc_offsets'][-1])} tokens, {len(a['doc_offsets']) - 1} documents")
PY

for dt in f32 f16; do
  for t in 1 2; do
    "$nl" record $model "$tmp/d.jsonl" -o "$tmp/$dt-$t.h5" --pool --hook ffn_act,resid --dtype $dt --threads $t --quiet 2>"$tmp/err" ||
      { echo "FAIL record --threads $t --dtype $dt: $(cat "$tmp/err")"; continue 2; }
  done
  if out=$($py "$tmp/same.py" "$tmp/$dt-1.h5" "$tmp/$dt-2.h5" 2>&1); then
    echo "PASS record --threads 2 writes the datasets of --threads 1 (--dtype $dt, --pool, resid): $out"
  else echo "FAIL record --threads 2 against 1 (--dtype $dt): $(echo "$out" | tail -1)"; fi
done

# Interrupt a --threads 2 run after its first commit of a document (15 more to go), then resume it.
for i in 1 2; do cat "$tmp/d.jsonl"; done > "$tmp/d16.jsonl"
"$nl" record $model "$tmp/d16.jsonl" -o "$tmp/full.h5" --pool --threads 1 --quiet 2>"$tmp/err" || echo "FAIL record of 16 documents: $(cat "$tmp/err")"
$py - "$nl" $model "$tmp" <<'PY'
import os, signal, subprocess, sys, h5py, numpy as np
nl, model, tmp = sys.argv[1:4]
out = os.path.join(tmp, "int.h5")
env = dict(os.environ, NEURONLAB_COMMIT_LOG="1", NEURONLAB_COMMIT_SECONDS="-1")
p = subprocess.Popen([nl, "record", model, tmp + "/d16.jsonl", "-o", out, "--pool", "--threads", "2", "--quiet"], env=env,
                     stderr=subprocess.PIPE, text=True)
commits = 0
for line in p.stderr:
    if "committed" in line and " 0 documents" not in line:
        commits += 1
        if commits == 1: p.send_signal(signal.SIGINT); break
rest = p.stderr.read()
rc = p.wait()
def load(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
        return out, int(f.attrs["complete"])
R, _ = load(tmp + "/full.h5")
A, complete = load(out)
d, n = len(A["doc_offsets"]) - 1, int(A["doc_offsets"][-1])
ok = rc == 130 and complete == 0 and 0 < d < 16 and "interrupted" in rest
for k, v in A.items():
    whole = k.endswith("w_out_norm") or k.startswith("vocab")
    rows = d + 1 if k == "doc_offsets" else d if k in ("doc_labels", "prompt_len") or k.startswith("pooled/") else None if whole else n
    if rows is None and k == "vocab_bytes": ok = ok and all(np.array_equal(u, w) for u, w in zip(v, R[k])); continue
    if rows is None: ok = ok and np.array_equal(v, R[k]); continue
    ok = ok and len(v) == rows and np.array_equal(v, R[k][:rows])
if not ok:
    print(f"FAIL record --threads 2 interrupted: exit {rc}, complete {complete}, {d} documents: {rest.strip()[-300:]}"); sys.exit(0)
r = subprocess.run([nl, "record", model, tmp + "/d16.jsonl", "-o", out, "--pool", "--threads", "2", "--resume", "--quiet"],
                   capture_output=True, text=True)
B, complete = load(out)
eq = lambda x, y: all(np.array_equal(u, w) for u, w in zip(x, y)) if x.dtype == object else np.array_equal(x, y)
same = r.returncode == 0 and complete == 1 and sorted(B) == sorted(R) and all(eq(B[k], R[k]) for k in R)
print(("PASS" if same else "FAIL") + f" record --threads 2: SIGINT after the first commit keeps {d} whole documents equal to the full run's "
      f"(exit {rc}); --resume completes the datasets of the full run (exit {r.returncode}) {r.stderr.strip()[-200:] if not same else ''}")
PY

# perturb: the same rows with one thread and two
for t in 1 2; do
  "$nl" perturb $model "$tmp/d.jsonl" --metric value,random --ratios 0,0.5 --db "$tmp/p$t.db" --threads $t --quiet >"$tmp/p$t.out" 2>"$tmp/err" ||
    echo "FAIL perturb --threads $t: $(cat "$tmp/err")"
done
$py - "$tmp/p1.db" "$tmp/p2.db" <<'PY' && cmp -s "$tmp/p1.out" "$tmp/p2.out" && echo "PASS perturb --threads 2 stores and prints the results of --threads 1" || { echo "FAIL perturb --threads 2 against 1"; diff "$tmp/p1.out" "$tmp/p2.out" | head -5; }
import sqlite3, sys
q = "select metric, ratio, label, tokens, nll, ppl, masked from perturb order by metric, ratio, label"
a, b = (sqlite3.connect(p).execute(q).fetchall() for p in sys.argv[1:3])
assert a == b and len(a) > 0, (a[:3], b[:3])
PY

# moe-sweep: the same rows (but the measured speed) with one thread and two
"$nl" moefy $model "$tmp/d.jsonl" --experts 8 -o "$tmp/moe" --quiet >/dev/null 2>"$tmp/err" || echo "FAIL moefy: $(cat "$tmp/err")"
for t in 1 2; do
  "$nl" moe-sweep $model "$tmp/d.jsonl" --moe "$tmp/moe" --db "$tmp/s$t.db" --k 25% --router sim,oracle --fill zero --no-recall \
    --threads $t --quiet >/dev/null 2>"$tmp/err" || echo "FAIL moe-sweep --threads $t: $(cat "$tmp/err")"
done
$py - "$tmp/s1.db" "$tmp/s2.db" <<'PY' && echo "PASS moe-sweep --threads 2 stores the perplexities and recall of --threads 1" || echo "FAIL moe-sweep --threads 2 against 1"
import sqlite3, sys
q = "select router, fill, k, label, tokens, nll, ppl, ffn_flops, recall, dense from moe_sweep order by 1, 2, 3, 4"
a, b = (sqlite3.connect(p).execute(q).fetchall() for p in sys.argv[1:3])
assert a == b and len(a) == 3 * 4, (len(a), len(b))  # dense + 2 configurations, labels "" code math writing
PY
exit 0
