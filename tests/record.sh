#!/usr/bin/env bash
# test-runner: alone (timing-, RSS- or process-count-sensitive: run by itself after the parallel lanes)
# record.sh — the CLI end to end: `ppl --json` on stories260K matches llama2.c's perplexity,
# `record` writes a file h5py reads with the whole documented schema, Ctrl-C leaves a valid
# (incomplete) file, the output is never an input and is replaced only with --force, a
# file-size limit is a clean error keeping the committed documents, and peak RSS while
# recording does not grow with the dataset (kills and --resume: tests/record_kill.sh).
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_record.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
st=../shared/models/stories260K

if ! $py -c 'import h5py' 2>/dev/null; then echo "SKIP record checks: python3-h5py is not installed"; exit 0; fi

# 1. ppl --json against expected.json (0.05%).
if [ -f $st/stories260K.bin ]; then
  "$nl" ppl $st/stories260K.bin $st/tokens.jsonl --json > "$tmp/ppl.json" 2>/dev/null
  $py - "$tmp/ppl.json" $st/expected.json <<'PY' && echo "PASS ppl --json on stories260K within 0.05%" || echo "FAIL ppl --json on stories260K"
import json, sys
got = json.load(open(sys.argv[1])); want = json.load(open(sys.argv[2]))
rel = abs(got["ppl"] - want["ppl"]) / want["ppl"]
print(f"ppl {got['ppl']:.5f} expected {want['ppl']:.5f} rel {rel:.2e}; tokens {got['tokens']} expected {want['n_predicted_tokens']}")
sys.exit(0 if rel < 5e-4 and got["tokens"] == want["n_predicted_tokens"] else 1)
PY
else
  echo "SKIP ppl --json on stories260K: ../shared is absent"
fi

# A labelled dataset for the in-repo fixture model (vocab 256): 40 documents of 64 tokens.
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(3)
labels = ["code", "math", "", "prose"]
with open(sys.argv[1] + "/small.jsonl", "w") as f:
    for d in range(40):
        row = {"tokens": [1] + [random.randrange(2, 256) for _ in range(63)], "label": labels[d % 4]}
        if d % 3 == 0: row["prompt_len"] = 20
        f.write(json.dumps(row) + "\n")
with open(sys.argv[1] + "/big.jsonl", "w") as f:
    for d in range(4000):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(127)]}) + "\n")
PY
model=tests/fixtures/hf/llama

# 2. record → the documented schema, as h5py sees it.
for dt in f32 f16; do
  if "$nl" record $model "$tmp/small.jsonl" -o "$tmp/acts_$dt.h5" --dtype $dt --pool 2>"$tmp/err"; then
    if $py tests/check_h5.py "$tmp/acts_$dt.h5" > "$tmp/check" 2>&1; then echo "PASS record --dtype $dt --pool: h5py schema check"
    else echo "FAIL record --dtype $dt --pool: h5py schema check"; cat "$tmp/check"; fi
  else echo "FAIL record --dtype $dt exited non-zero: $(cat "$tmp/err")"; fi
done
"$nl" record $model "$tmp/small.jsonl" -o "$tmp/sub.h5" --layers 1 2>/dev/null
$py - "$tmp/sub.h5" <<'PY' && echo "PASS record --layers 1 records only layer 1" || echo "FAIL record --layers 1"
import h5py, sys
f = h5py.File(sys.argv[1], "r")
sys.exit(0 if list(f["layers"]) == ["1"] and list(f.attrs["layers"]) == [1] and f.attrs["complete"] == 1 else 1)
PY

# 3. Ctrl-C during record: exit 130, a readable file marked incomplete with whole documents.
"$nl" record $model "$tmp/big.jsonl" -o "$tmp/int.h5" 2>"$tmp/int.err" &
pid=$!
sleep 1.5
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
$py - "$tmp/int.h5" <<PY && echo "PASS Ctrl-C during record leaves a valid incomplete file (exit $rc)" || { echo "FAIL Ctrl-C during record (exit $rc)"; cat "$tmp/int.err"; }
import h5py, sys
f = h5py.File(sys.argv[1], "r")
n = len(f["tokens"]); off = f["doc_offsets"][:]
ok = $rc == 130 and f.attrs["complete"] == 0 and 0 < len(off) - 1 < 4000 and off[-1] == n and n % 128 == 0
ok = ok and all(f[f"layers/{l}/ffn_act"].shape[0] == n for l in f["layers"])
print(f"exit $rc, {len(off) - 1} documents kept, {n} tokens, complete={f.attrs['complete']}")
sys.exit(0 if ok else 1)
PY

# 5. The output is never an input (same device + inode), and an existing output needs --force.
cp -r $model "$tmp/m"; cp "$tmp/small.jsonl" "$tmp/d.jsonl"; ln -s d.jsonl "$tmp/dlink.jsonl"
"$nl" record "$tmp/m" "$tmp/small.jsonl" -o "$tmp/r.h5" --db "$tmp/r.db" 2>/dev/null
sum0=$(md5sum "$tmp/m/model.safetensors" "$tmp/m/config.json" "$tmp/d.jsonl" "$tmp/r.db" "$tmp/r.h5" | cut -d' ' -f1 | tr '\n' ' ')
r7() { # description, expected message part, args...
  local what=$1 want=$2; shift 2
  "$nl" record "$@" 2>"$tmp/r7.err"; local rc=$?
  if [ $rc = 1 ] && [ "$(wc -l < "$tmp/r7.err")" = 1 ] && grep -qF -- "$want" "$tmp/r7.err"; then echo "PASS record refuses $what (exit 1: $(cat "$tmp/r7.err"))"
  else echo "FAIL record refuses $what: exit $rc: $(cat "$tmp/r7.err")"; fi
}
r7 "-o the model file" "it is '$tmp/m/model.safetensors' of the model folder" "$tmp/m" "$tmp/small.jsonl" -o "$tmp/m/model.safetensors" --force
r7 "-o config.json" "of the model folder" "$tmp/m" "$tmp/small.jsonl" -o "$tmp/m/config.json" --force
r7 "-o the --db file" "it is the --db database '$tmp/r.db'" "$tmp/m" "$tmp/small.jsonl" -o "$tmp/r.db" --db "$tmp/r.db" --force
r7 "-o the dataset (through a symlink)" "it is the dataset '$tmp/d.jsonl'" "$tmp/m" "$tmp/d.jsonl" -o "$tmp/dlink.jsonl" --force
r7 "an existing output without --force" "'$tmp/r.h5' exists (use --force to replace it)" "$tmp/m" "$tmp/small.jsonl" -o "$tmp/r.h5"
sum1=$(md5sum "$tmp/m/model.safetensors" "$tmp/m/config.json" "$tmp/d.jsonl" "$tmp/r.db" "$tmp/r.h5" | cut -d' ' -f1 | tr '\n' ' ')
[ "$sum0" = "$sum1" ] && echo "PASS refused records leave model, dataset, database and output untouched" || echo "FAIL refused records changed a file"
"$nl" record "$tmp/m" "$tmp/small.jsonl" -o "$tmp/r.h5" --force 2>/dev/null && echo "PASS record --force replaces an existing output" || echo "FAIL record --force"
# The output is made as OUT.tmp-PID and renamed at its first commit: an error there (here OUT is
# a folder, which rename cannot replace) is one message, exit 1, and leaves no temporary file.
mkdir -p "$tmp/outdir/x"
"$nl" record "$tmp/m" "$tmp/small.jsonl" -o "$tmp/outdir" --force 2>"$tmp/od.err"; rc=$?
left=$(ls "$tmp" | grep -c '^outdir\.tmp-')
if [ $rc = 1 ] && [ "$(wc -l < "$tmp/od.err")" = 1 ] && grep -q "cannot create '$tmp/outdir': cannot rename '$tmp/outdir.tmp-[0-9]*' to it" "$tmp/od.err" &&
   [ "$left" = 0 ] && [ -d "$tmp/outdir/x" ]; then echo "PASS record: a failed rename to the output is a clean error and removes the temporary file"
else echo "FAIL record: failed rename: exit $rc, $left temporary files left: $(cat "$tmp/od.err")"; fi
ls "$tmp" | grep -q '\.tmp-' && echo "FAIL record left temporary files: $(ls "$tmp" | grep '\.tmp-')" || echo "PASS record leaves no temporary file behind"

# 6. A file-size limit (like a full disk) is a clean error: exit 1, one message saying what
#    the file keeps, the run failed with it, and h5py reads every committed document.
rm -f "$tmp/lim.h5"
(ulimit -f 20000; NEURONLAB_COMMIT_SECONDS=-1 exec "$nl" record $model "$tmp/big.jsonl" -o "$tmp/lim.h5" --threads 1 --db "$tmp/lim.db" 2>"$tmp/lim.err"); rc=$?
$py - "$tmp/lim.h5" "$tmp/lim.db" "$rc" "$tmp/lim.err" <<'PY' && echo "PASS record past ulimit -f: exit 1, run failed, committed documents readable" || { echo "FAIL record past ulimit -f"; cat "$tmp/lim.err"; }
import h5py, re, sqlite3, sys
path, db, rc, err = sys.argv[1], sys.argv[2], int(sys.argv[3]), open(sys.argv[4]).read().replace("\r", "\n")
msg = [l for l in err.splitlines() if l.startswith("neuronlab:")]
m = re.search(r"cannot write '.*lim.h5': File too large \(the file keeps the (\d+) documents? committed before\)", "\n".join(msg))
st = sqlite3.connect(db).execute("select status, message from runs").fetchall()
f = h5py.File(path, "r"); off = f["doc_offsets"][:]; n = len(f["tokens"])
ok = rc == 1 and len(msg) == 1 and m and int(m.group(1)) == len(off) - 1 > 0 and off[-1] == n
ok = ok and all(f[f"layers/{l}/ffn_act"].shape[0] == n for l in f["layers"]) and f.attrs["complete"] == 0
ok = ok and st == [("failed", msg[0][len("neuronlab: "):])]
f["layers/0/ffn_act"][:]
print(f"exit {rc}; {msg}; {len(off) - 1} documents readable; run {st}")
sys.exit(0 if ok else 1)
PY

# 4. Peak RSS while recording does not grow with the dataset (10x more documents).
head -n 400 "$tmp/big.jsonl" > "$tmp/b400.jsonl"
$py - "$nl" $model "$tmp" <<'PY' && echo "PASS peak RSS of record is flat in dataset size" || echo "FAIL peak RSS of record grows with dataset size"
import resource, subprocess, sys
nl, model, tmp = sys.argv[1:4]
def peak(data):
    p = subprocess.run(["/usr/bin/env", "python3", "-c",
        "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", nl, "record", model, data, "-o", tmp + "/rss.h5", "--force"],
        capture_output=True, text=True, check=True)
    return int(p.stdout) / 1024
small, big = peak(tmp + "/b400.jsonl"), peak(tmp + "/big.jsonl")
print(f"peak RSS: {small:.1f} MB for 400 documents, {big:.1f} MB for 4000 documents (activations written: {4000*128*2*128*4/1e6:.0f} MB)")
sys.exit(0 if big - small < 8 else 1)
PY
exit 0
