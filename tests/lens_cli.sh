#!/usr/bin/env bash
# lens_cli.sh — `neuronlab lens`, `neuronlab attribute` and `record --attn` end to end:
#   - lens on the fixture model: the lens table (one row per label and depth), its run row, the
#     last layer's loss = `ppl --json` per label, KL 0 and agreement 1 there, --json = the table;
#   - attribute: rows of both signs in neuron_attribution, = numpy W_U·W_out[:, i] from the
#     safetensors file (and with --norm-weight), ranks ordered;
#   - record --attn: /attn/layer_{l}/doc_{d} (heads, n, n) f32, rows sum to 1, causal, deflate;
#     the report draws the lens figures and the attention heatmap;
#   - on the zoo model (when present): attribute --ability-run latest and the neuron pages of
#     `report --neurons` showing the attribution;
#   - bad input, one line each and exit 1: layer out of range, neuron out of range, unknown run,
#     --attn on a layer that does not exist; usage errors exit 2.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=$PWD/${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_lens.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/hf/llama
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" | head -8; fi; }
if ! $py -c 'import h5py, numpy' 2> /dev/null; then echo "SKIP lens checks: python3-h5py / numpy are not installed"; exit 0; fi

$py - "$tmp/d.jsonl" <<'PY'
import json, random, sys
random.seed(11)
with open(sys.argv[1], "w") as f:
    for i in range(9):
        n = random.randrange(5, 60)
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(n)], "label": ["code", "math", "prose"][i % 3]}) + "\n")
PY

# 1. lens: table, run row, last layer = ppl
"$nl" lens $fx "$tmp/d.jsonl" --db "$tmp/r.db" --batch 7 --quiet > "$tmp/lens.txt" 2> "$tmp/why" &&
  "$nl" lens $fx "$tmp/d.jsonl" --batch 16 --json --quiet > "$tmp/lens.json" 2>> "$tmp/why" &&
  "$nl" ppl $fx "$tmp/d.jsonl" --json --quiet > "$tmp/ppl.json" 2>> "$tmp/why" &&
  $py - "$tmp/r.db" "$tmp/lens.json" "$tmp/ppl.json" >> "$tmp/why" 2>&1 <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
run, status, params = db.execute("SELECT id, status, params FROM runs WHERE kind = 'lens'").fetchone()
assert status == "complete", status
assert params == '{"ctx":128,"stride":64,"batch":7,"embedding_layer":-1}', params
rows = db.execute("SELECT label, layer, tokens, loss, top1_agree, kl FROM lens WHERE run_id = ? ORDER BY label, layer", (run,)).fetchall()
assert len(rows) == 4 * 3, len(rows)  # '', code, math, prose x layers -1, 0, 1
assert sorted({r[1] for r in rows}) == [-1, 0, 1]
ppl = json.load(open(sys.argv[3]))
js = json.load(open(sys.argv[2]))
for label, layer, tokens, loss, agree, kl in rows:
    ref = ppl if label == "" else ppl["by_label"][label]
    assert tokens == ref["tokens"], (label, tokens, ref["tokens"])
    if layer == 1:
        assert abs(loss - ref["nll"]) < 2e-6, (label, loss, ref["nll"])
        assert kl == 0.0 and agree == 1.0, (label, kl, agree)
    else:
        assert kl > 0, (label, layer, kl)
    j = [x for x in js["layers"] if x["label"] == label and x["layer"] == layer][0]
    assert abs(j["loss"] - loss) < 1e-6 and abs(j["kl"] - kl) < 1e-6 and abs(j["top1_agree"] - agree) < 1e-9, (j, loss, kl, agree)
PY
ok $? "lens: 12 rows (4 labels x 3 depths), last layer = ppl loss per label, kl 0, --json = table (batch 7 vs 16)"

# 2. attribute: both signs, = numpy from the weights
"$nl" attribute $fx --layer 1 --neuron 17 --top 6 --db "$tmp/r.db" > "$tmp/at.txt" 2> "$tmp/why" &&
  "$nl" attribute $fx --layer 0 --neuron 3 --top 4 --norm-weight --db "$tmp/r.db" > /dev/null 2>> "$tmp/why" &&
  $py - "$tmp/r.db" $fx >> "$tmp/why" 2>&1 <<'PY'
import json, sqlite3, struct, sys
import numpy as np
db = sqlite3.connect(sys.argv[1])
raw = open(sys.argv[2] + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
def t(name):
    h = hdr[name]; a, b = h["data_offsets"]
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(h["shape"]).astype(np.float64)
WU, g = t("lm_head.weight"), t("model.norm.weight")
runs = db.execute("SELECT id, params FROM runs WHERE kind = 'attribute' ORDER BY id").fetchall()
assert len(runs) == 2
assert runs[0][1] == '{"top":6,"norm_weight":false,"neurons":[[1,17]]}', runs[0][1]
for (run, params), (l, i, top, nw) in zip(runs, [(1, 17, 6, 0), (0, 3, 4, 1)]):
    z = WU @ (t(f"model.layers.{l}.mlp.down_proj.weight")[:, i] * (g if nw else 1))
    order = sorted(range(len(z)), key=lambda v: (-z[v], v))
    rows = db.execute("SELECT rank, token_id, logit, token FROM neuron_attribution WHERE run_id = ? AND layer = ? AND neuron = ? ORDER BY rank",
                      (run, l, i)).fetchall()
    assert len(rows) == 2 * top, len(rows)
    for rank, tid, logit, tok in rows:
        want = order[rank - 1] if rank > 0 else order[rank]
        assert tid == want, (rank, tid, want)
        assert abs(logit - z[tid]) < 1e-5, (rank, logit, z[tid])
        assert tok is None  # the fixture has no tokenizer
PY
ok $? "attribute: ranks 1..N promoted and -1..-N suppressed = numpy W_U.W_out[:, i] (and with --norm-weight)"

# 3. record --attn and the report figures
"$nl" record $fx "$tmp/d.jsonl" -o "$tmp/a.h5" --attn 0,1 --batch 5 --db "$tmp/r.db" --quiet 2> "$tmp/why" &&
  $py - "$tmp/a.h5" >> "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], "r")
off = f["doc_offsets"][:]
assert list(f["attn"].attrs["layers"]) == [0, 1] and int(f["attn"].attrs["n_heads"]) == 4
for l in (0, 1):
    assert sorted(f[f"attn/layer_{l}"].keys(), key=lambda s: int(s[4:])) == [f"doc_{d}" for d in range(len(off) - 1)]
    for d in range(len(off) - 1):
        ds = f[f"attn/layer_{l}/doc_{d}"]
        n = off[d + 1] - off[d]
        assert ds.shape == (4, n, n) and ds.dtype == np.float32 and ds.compression == "gzip", (ds.shape, ds.dtype)
        a = ds[:]
        assert np.abs(a.sum(-1) - 1).max() < 1e-5
        assert np.triu(a, 1).max() == 0
PY
ok $? "record --attn 0,1: /attn/layer_l/doc_d (4, n, n) f32 gzip, rows sum to 1, causal, every document"
if command -v gnuplot > /dev/null; then
  "$nl" report --db "$tmp/r.db" -o "$tmp/rep" > /dev/null 2> "$tmp/why"
  [ -s "$tmp/rep/lens_loss.png" ] && [ -s "$tmp/rep/lens_kl.png" ] && [ -s "$tmp/rep/attention.png" ] &&
    ls "$tmp"/rep/attention-1-*.csv > /dev/null 2>&1 && ! grep -q 'id="attention">.*Not drawn' "$tmp/rep/index.html"
  ok $? "report: lens_loss, lens_kl and the attention heatmap are drawn"
else
  echo "SKIP report figures: gnuplot is not installed"
fi

# 4. the zoo model: attribute --ability-run and the neuron pages
m=notebooks-data/models/silu
if [ -f $m/model.safetensors ] && command -v gnuplot > /dev/null; then
  head -n 6 notebooks-data/eval/code.jsonl > "$tmp/z.jsonl"; head -n 6 notebooks-data/eval/math.jsonl >> "$tmp/z.jsonl"
  "$nl" record $m "$tmp/z.jsonl" -o "$tmp/s.h5" --stats --top-k 4 --ctx 128 --quiet > /dev/null 2> "$tmp/why" &&
    "$nl" ability "$tmp/s.h5" --db "$tmp/z.db" > /dev/null 2>> "$tmp/why" &&
    "$nl" neurons "$tmp/s.h5" --db "$tmp/z.db" --layers 0 --top 3 --quiet > /dev/null 2>> "$tmp/why" &&
    "$nl" attribute $m --ability-run latest --per-ability 2 --top 5 --db "$tmp/z.db" > "$tmp/za.txt" 2>> "$tmp/why" &&
    "$nl" attribute $m --layer 0 --neuron 0 --top 5 --db "$tmp/z.db" > /dev/null 2>> "$tmp/why" &&
    "$nl" report --db "$tmp/z.db" -o "$tmp/zrep" --neurons > /dev/null 2>> "$tmp/why" &&
    [ "$(sqlite3 "$tmp/z.db" "SELECT COUNT(DISTINCT layer || ':' || neuron) FROM neuron_attribution WHERE run_id = (SELECT MIN(id) FROM runs WHERE kind = 'attribute')")" -ge 2 ] &&
    [ "$(sqlite3 "$tmp/z.db" "SELECT COUNT(*) FROM neuron_attribution WHERE token IS NULL")" = 0 ] &&
    sqlite3 "$tmp/z.db" "SELECT source, params FROM runs WHERE kind = 'attribute' ORDER BY id LIMIT 1" | grep -q '^ability run [0-9]*|.*"ability_run":[0-9]*,"per_ability":2}' &&
    grep -q 'logit attribution' "$tmp"/zrep/neurons/layer-0.html 2> /dev/null
  ok $? "zoo model: attribute --ability-run latest (2 per ability, decoded tokens), neuron pages show the attribution"
else
  echo "SKIP zoo attribution: $m or gnuplot is not here"
fi

# 5. bad input: one line naming the problem, exit 1; usage errors exit 2 (the message, then the usage line)
bad() { # expected-exit pattern description cmd...
  local want=$1 pat=$2 what=$3; shift 3
  "$@" > /dev/null 2> "$tmp/err"; local rc=$?
  echo "exit $rc: $(cat "$tmp/err")" > "$tmp/why"
  [ $rc = "$want" ] && { [ $rc = 2 ] || [ "$(wc -l < "$tmp/err")" = 1 ]; } && head -n 1 "$tmp/err" | grep -q -- "$pat"
  ok $? "$what"
}
bad 1 "layer 2 is outside the 2 layers of" "attribute --layer 2 (out of range): one line, exit 1" "$nl" attribute $fx --layer 2 --neuron 0
bad 1 "neuron 128 is outside the 128 neurons of layer 0" "attribute --neuron 128 (out of range): one line, exit 1" "$nl" attribute $fx --layer 0 --neuron 128
bad 1 "no run 99" "attribute --ability-run 99 (unknown run): one line, exit 1" "$nl" attribute $fx --ability-run 99 --db "$tmp/r.db"
bad 1 "is a 'lens' run, not an ability run" "attribute --ability-run of a lens run: one line, exit 1" "$nl" attribute $fx --ability-run 1 --db "$tmp/r.db"
bad 1 "--attn '5': .* has no such layer (its layers are 0..1)" "record --attn 5 (no such layer): one line, exit 1" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/b.h5" --attn 5
bad 1 "more than the context 8: --attn stores whole documents" "record --attn with a document longer than --ctx: one line, exit 1" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/b.h5" --attn 0 --ctx 8
bad 2 "give --layer L and --neuron I" "attribute without a neuron: usage, exit 2" "$nl" attribute $fx --layer 0
bad 2 "needs --db" "attribute --ability-run without --db: usage, exit 2" "$nl" attribute $fx --ability-run latest
bad 2 "--attn needs a list of layers" "record --attn x: usage, exit 2" "$nl" record $fx "$tmp/d.jsonl" -o "$tmp/b.h5" --attn x
bad 2 "unknown option '--bogus'" "lens --bogus: usage, exit 2" "$nl" lens $fx "$tmp/d.jsonl" --bogus
bad 1 "cannot read 'missing.jsonl'\|missing.jsonl" "lens on a missing dataset: one line, exit 1" "$nl" lens $fx missing.jsonl
echo "b.h5: $(ls "$tmp"/b.h5* 2>&1)" > "$tmp/why"; [ ! -e "$tmp/b.h5" ]; ok $? "no activation file left by the refused --attn runs"
