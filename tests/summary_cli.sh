#!/usr/bin/env bash
# summary_cli.sh — `record --stats` end to end on the fixture model: the summary file h5py
# reads with the documented schema, whose statistics equal numpy's over a full dump of the
# same run (moments, extremes, frequencies, pooled values, top-K by argsort); sparsity and
# ability from the summary print the same tables as from the dump (CETT left out, stated);
# usage errors exit 2; a dump where a summary is needed (--resume --stats) and CETT or a
# missing threshold asked of a summary exit 1 naming what is missing; a run interrupted
# after a commit keeps a readable incomplete summary that --resume completes to the same
# statistics. Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_summary.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf/llama
export OMP_NUM_THREADS=1

if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP summary checks: python3-h5py is not installed"; exit 0; fi

$py - "$tmp" <<'PY'
import json, random, sys
random.seed(5)
labels = ["code", "math", "", "prose"]
with open(sys.argv[1] + "/d.jsonl", "w") as f:
    for d in range(30):
        n = random.randrange(8, 90)
        f.write(json.dumps({"tokens": [random.randrange(0, 256) for _ in range(n)], "label": labels[d % 4]}) + "\n")
PY

# 1. the summary and the dump of the same run; h5py's view of both
"$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" --pool --ctx 32 --batch 8 > /dev/null 2>&1 &&
"$nl" record $fx "$tmp/d.jsonl" -o "$tmp/s.h5" --stats --top-k 7 --ctx 32 --batch 8 > /dev/null 2> "$tmp/err" &&
$py - "$tmp/s.h5" "$tmp/a.h5" > "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sys
s, a = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
at = s.attrs
assert at["format"] == "neuronlab.summary" and at["kind"] == "summary" and at["version"] == 1, dict(at)
assert at["complete"] == 1 and at["top_k"] == 7 and list(at["thresholds"]) == [0, 0.01, 0.1, 0.2]
for k in ["model", "arch", "ffn_kind", "act_fn", "dataset", "dataset_checksum", "d_ff", "n_layers", "d_model", "layers"]:
    assert k in at, k
assert at["n_tokens"] == len(a["tokens"]) and at["n_docs"] == len(a["doc_labels"])
assert (s["doc_offsets"][:] == a["doc_offsets"][:]).all() and (s["prompt_len"][:] == a["prompt_len"][:]).all()
assert len(s["bins/r_edges"]) == 866 and s["bins/r_edges"][-1] == 1 and len(s["bins/abs_edges"]) == 82
off = a["doc_offsets"][:]
dl = [x.decode() if isinstance(x, bytes) else x for x in a["doc_labels"][:]]
gl = [x.decode() if isinstance(x, bytes) else x for x in s["groups/labels"][:]]
assert gl == sorted(set(dl)), gl
tg = np.zeros(off[-1], int)
for d in range(len(dl)): tg[off[d]:off[d + 1]] = gl.index(dl[d])
docs = np.searchsorted(off, np.arange(off[-1]), side="right") - 1
K = 7
for l in at["layers"]:
    A = a[f"layers/{l}/ffn_act"][:]
    L = s[f"layers/{l}"]
    wn = a[f"layers/{l}/w_out_norm"][:]
    assert (L["w_out_norm"][:] == wn).all()
    assert (s[f"pooled/{l}/mean_abs"][:] == a[f"pooled/{l}/mean_abs"][:]).all()
    for g in range(len(gl)):
        X = A[tg == g]
        if not len(X): continue
        X64 = X.astype(np.float64)
        assert np.allclose(L["mean"][g], X64.mean(0), rtol=1e-9, atol=1e-12)
        assert np.allclose(L["m2"][g] / len(X), X64.var(0), rtol=1e-8, atol=1e-12)
        assert (L["min"][g] == X.min(0)).all() and (L["max"][g] == X.max(0)).all()
        v = np.abs(X); mx = v.max(1, keepdims=True); r = np.where(mx > 0, v / np.where(mx > 0, mx, 1), 0).astype(np.float32)
        for k, tau in enumerate(at["thresholds"]):
            assert (L["freq"][g, k] == (r.astype(np.float64) > tau).sum(0)).all(), (l, g, tau)
        assert (L["max_r"][g] == r.max(0)).all()
        assert L["r_hist"][g, 0].sum() == X.size and L["r_hist"][g, 0, 0] == (r == 0).sum()
    key = np.abs(A)
    for i in range(A.shape[1]):
        order = np.lexsort((np.arange(len(A)), -key[:, i]))[:K]
        assert (L["top_value"][i] == A[order, i]).all() and (L["top_doc"][i] == docs[order]).all()
        assert (L["top_pos"][i] == order - off[docs[order]]).all()
    assert (L["abs_hist"][:].sum(1) == len(A)).all()
print("h5py: schema, moments, extremes, frequencies, pooled values and top-7 equal numpy over the dump")
PY
if [ $? = 0 ]; then echo "PASS record --stats: the summary h5py reads equals numpy over the full dump"; else echo "FAIL record --stats vs the dump"; sed 's/^/    /' "$tmp/why" "$tmp/err" | tail -15; fi

# 2. sparsity and ability: the same tables from the summary and from the dump
"$nl" sparsity "$tmp/a.h5" --db "$tmp/r.db" --no-cett --json > "$tmp/sd.json" 2>/dev/null &&
"$nl" sparsity "$tmp/s.h5" --db "$tmp/r.db" --json > "$tmp/ss.json" 2>/dev/null &&
"$nl" sparsity "$tmp/s.h5" --db "$tmp/r.db" > "$tmp/ss.txt" 2>/dev/null &&
"$nl" ability "$tmp/a.h5" --db "$tmp/r.db" > /dev/null 2>&1 &&
"$nl" ability "$tmp/s.h5" --db "$tmp/r.db" > /dev/null 2>&1 &&
$py - "$tmp/r.db" "$tmp/sd.json" "$tmp/ss.json" "$tmp/ss.txt" > "$tmp/why" 2>&1 <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
d, s = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert d["input"] == "activations" and s["input"] == "summary", (d["input"], s["input"])
assert d["rows"] == s["rows"], "the printed rows differ"
assert "CETT not computed" in open(sys.argv[4]).read() and "within one histogram bin" in open(sys.argv[4]).read()
def rows(t, run):
    cols = [c[1] for c in db.execute(f"pragma table_info({t})") if c[1] != "run_id"]
    return sorted(db.execute(f"select {','.join(cols)} from {t} where run_id = ?", (run,)).fetchall())
for t, r1, r2 in [(t, 1, 2) for t in ["sparsity_layer", "sparsity_hist", "sparsity_cdf", "sparsity_quantile", "neurons", "neuron_freq"]] + \
                 [(t, 4, 5) for t in ["ability_label", "ability_score", "ability_layer", "ability_top", "ability_ties", "ability_docs"]]:
    x, y = rows(t, r1), rows(t, r2)
    assert len(x) == len(y) and x, t
    for u, v in zip(x, y):
        for p, q in zip(u, v):
            assert p == q or (isinstance(p, float) and abs(p - q) <= 1e-12 * max(abs(p), abs(q))), (t, u, v)
kinds = [r[0] for r in db.execute("select params from runs order by id")]
assert '"input":"summary"' in kinds[1] and '"input":"summary"' not in kinds[0]
print("tables equal")
PY
if [ $? = 0 ]; then echo "PASS sparsity and ability from the summary equal those from the dump"; else echo "FAIL sparsity/ability from the summary"; sed 's/^/    /' "$tmp/why" | tail -10; fi

# 3. usage errors (exit 2) and inputs of the wrong kind (exit 1, naming what is missing)
err() { # expected-exit pattern command...
  local want=$1 pat=$2; shift 2
  "$@" > /dev/null 2> "$tmp/e"; local rc=$?
  if [ $rc = "$want" ] && grep -q -- "$pat" "$tmp/e"; then return 0; fi
  echo "exit $rc: $(cat "$tmp/e")" >> "$tmp/why"; return 1
}
: > "$tmp/why"
ok=0
err 2 "--top-k is for --stats" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/x.h5" --top-k 5 || ok=1
err 2 "--top-k needs a count in 1..1024" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/x.h5" --stats --top-k 0 || ok=1
err 2 "--pool is for the activation dump" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/x.h5" --stats --pool || ok=1
err 2 "--dtype is for the activation dump" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/x.h5" --stats --dtype f16 || ok=1
err 2 "--hook is for the activation dump" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/x.h5" --stats --hook ffn_act,resid || ok=1
err 1 "is an activation file (per-token activations), not a summary" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" --stats --resume || ok=1
err 1 "CETT needs the per-token activations of a full activation file" "$nl" sparsity "$tmp/s.h5" --db "$tmp/e.db" --cett 0.2 || ok=1
err 1 "frequencies above 0, 0.01, 0.1, 0.2 only: the frequency threshold 0.3 needs a full activation file" "$nl" sparsity "$tmp/s.h5" --db "$tmp/e.db" --thresholds 0,0.3 || ok=1
err 1 "exists (use --force" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/s.h5" --stats || ok=1
[ ! -e "$tmp/x.h5" ] || { echo "x.h5 was written" >> "$tmp/why"; ok=1; }
if [ $ok = 0 ]; then echo "PASS record --stats usage errors exit 2, a summary/dump of the wrong kind exits 1 naming what is missing"; else echo "FAIL record --stats errors"; sed 's/^/    /' "$tmp/why" | head -10; fi

# 4. an interrupted run keeps its last commit (complete = 0); --resume completes it to the same statistics
: > "$tmp/why"
NEURONLAB_COMMIT_SECONDS=-1 NEURONLAB_COMMIT_LOG=1 "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/p.h5" --stats --top-k 7 --ctx 32 --batch 8 > /dev/null 2> "$tmp/log" &
pid=$!
for _ in $(seq 1 1500); do grep -q "committed 3 documents" "$tmp/log" 2>/dev/null && break; sleep 0.02; done
kill -INT $pid 2>/dev/null; wait $pid; rc=$?
if [ $rc = 0 ]; then
  echo "SKIP interrupted --stats run: it finished before the interrupt (a fast machine)"
else
  $py - "$tmp/p.h5" >> "$tmp/why" 2>&1 <<'PY'
import h5py, sys
f = h5py.File(sys.argv[1], "r")
assert f.attrs["complete"] == 0 and 3 <= f.attrs["n_docs"] < 30, dict(f.attrs)
print("committed:", f.attrs["n_docs"])
PY
  a=$?
  "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/p.h5" --stats --top-k 7 --ctx 32 --batch 8 --resume > /dev/null 2>> "$tmp/why"; b=$?
  $py - "$tmp/p.h5" "$tmp/s.h5" >> "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sys
p, s = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert p.attrs["complete"] == 1
def walk(name, obj):
    if isinstance(obj, h5py.Dataset):
        x, y = obj[()], s[name][()]
        assert x.shape == y.shape, name
        if x.dtype.kind == "f": assert np.array_equal(x, y, equal_nan=True), name
        else: assert (x == y).all(), name
p.visititems(walk)
print("resumed == uninterrupted")
PY
  c=$?
  grep -q "interrupted: '.*p.h5' keeps the [0-9]* documents committed before" "$tmp/log"; d=$?
  if [ $a = 0 ] && [ $b = 0 ] && [ $c = 0 ] && [ $d = 0 ] && [ $rc = 130 ]; then
    echo "PASS Ctrl-C keeps the last committed summary (complete = 0), --resume completes it to the uninterrupted content"
  else echo "FAIL interrupted --stats run (exit $rc; checks $a $b $c $d)"; sed 's/^/    /' "$tmp/why" "$tmp/log" | tail -10; fi
fi

# 5. a tampered summary: one line naming the file and the dataset at fault, exit 1
: > "$tmp/why"
$py - "$tmp/s.h5" "$tmp" <<'PY' >> "$tmp/why" 2>&1
import h5py, shutil, sys, numpy as np
src, d = sys.argv[1], sys.argv[2]
def mk(name, fn):
    shutil.copy(src, f"{d}/{name}.h5")
    with h5py.File(f"{d}/{name}.h5", "r+") as f: fn(f)
def reshape(f):
    del f["layers/0/freq"]; f["layers/0"].create_dataset("freq", data=np.zeros((2, 2, 2), np.int64))
mk("shape", reshape)
mk("topdoc", lambda f: f["layers/1/top_doc"].__setitem__((0, 0), 99999))
mk("nan", lambda f: f["layers/0/r_sum"].__setitem__((0, 0), np.nan))
mk("count", lambda f: f["layers/1/freq"].__setitem__((1, 0, 3), 10**9))
PY
ok=0
err 1 "shape.h5' is corrupt: /layers/0/freq has shape (2, 2, 2), expected" "$nl" sparsity "$tmp/shape.h5" --db "$tmp/c.db" || ok=1
err 1 "topdoc.h5' is corrupt: /layers/1/top_doc\[0\] names document 99999" "$nl" ability "$tmp/topdoc.h5" --db "$tmp/c.db" || ok=1
err 1 "nan.h5' is corrupt: /layers/0/r_sum holds an impossible value" "$nl" sparsity "$tmp/nan.h5" --db "$tmp/c.db" || ok=1
err 1 "count.h5' is corrupt: /layers/1/freq holds a count outside" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/count.h5" --stats --top-k 7 --resume || ok=1
if [ $ok = 0 ]; then echo "PASS a tampered summary is refused with one line naming the dataset at fault"; else echo "FAIL tampered summaries"; sed 's/^/    /' "$tmp/why" | head -10; fi
