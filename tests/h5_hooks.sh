#!/usr/bin/env bash
# h5_hooks.sh — what h5py sees of `record`'s token text and hook datasets (issue 16 items 8, 9):
#   - /vocab: variable-length UTF-8 strings (str with .asstr()), one per token id, each the
#     decoder's text of the token (U+FFFD for a piece of a character); /vocab_bytes: joining its
#     bytes over a document's tokens gives the dataset's text back exactly (zoo byte-level BPE);
#     doc_labels read as str with .asstr() (h5py 3 returns bytes for string datasets);
#   - `record --hook ffn_act,resid,attn_out,ffn_in`: /layers/{l}/resid, attn_out, ffn_in of
#     shape [N, d_model] in the file's dtype, and ffn_act equal to a default recording's;
#   - tests/check_h5.py passes on every file (the schema with the optional datasets);
#   - `--hook ffn_in,resid,resid`: no ffn_act, params list each dataset once in file order; sparsity refuses the file naming --hook ffn_act;
#     a bad --hook list is a usage error (exit 2); --db params record the hooks.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/nl_h5hooks.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=notebooks-data/models/gelu
ok() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/err" 2>/dev/null | head -12; fi; }

if ! $py -c 'import h5py, numpy' 2>/dev/null; then echo "SKIP h5 hook/vocab checks: /usr/bin/python3 lacks h5py or numpy"; exit 0; fi
if [ ! -f $model/model.safetensors ]; then echo "SKIP h5 hook/vocab checks: the zoo model $model is absent"; exit 0; fi

# Six documents with labels, non-ASCII text (é, 日本, an emoji) and a prompt/response row.
$py - "$tmp/d.jsonl" <<'PY'
import json, sys
rows = [{"text": "def f(x):\n    return x + 1\n", "label": "code"},
        {"text": "Le café est très chaud, n'est-ce pas ?", "label": "français"},
        {"text": "日本語のテキストと絵文字 🙂 も。", "label": "日本"},
        {"text": "2 + 2 = 4, and 3 × 3 = 9.", "label": "math"},
        {"prompt": "Q: what is the capital of France?", "response": " A: Paris.", "label": "qa"},
        {"text": "   leading spaces\tand a tab", "label": ""}]
with open(sys.argv[1], "w") as f:
    for r in rows: f.write(json.dumps(r, ensure_ascii=False) + "\n")
PY

export OMP_NUM_THREADS=1
"$nl" record $model "$tmp/d.jsonl" -o "$tmp/def.h5" --quiet 2> "$tmp/err"
ok $? "record (default --hook ffn_act) on the zoo model"
"$nl" record $model "$tmp/d.jsonl" -o "$tmp/all.h5" --hook ffn_act,resid,attn_out,ffn_in --dtype f16 --pool \
  --db "$tmp/r.db" --quiet 2> "$tmp/err"
ok $? "record --hook ffn_act,resid,attn_out,ffn_in --dtype f16 --pool --db"
"$nl" record $model "$tmp/d.jsonl" -o "$tmp/resid.h5" --hook ffn_in,resid,resid --layers 1 --db "$tmp/r2.db" --quiet 2> "$tmp/err"
ok $? "record --hook ffn_in,resid,resid --layers 1"

$py - "$tmp" "$tmp/d.jsonl" > "$tmp/err" 2>&1 <<'PY'
import h5py, json, numpy as np, sqlite3, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
f = h5py.File(d + "/def.h5", "r")
vocab = f["vocab"].asstr()[:]
assert vocab.dtype == object and all(isinstance(v, str) for v in vocab[:50]), "vocab is not str"
assert len(vocab) == 8192, len(vocab)
tok, off = f["tokens"][:], f["doc_offsets"][:]
labels = f["doc_labels"].asstr()[:]
assert isinstance(labels[1], str) and list(labels) == [r["label"] for r in rows], list(labels)
assert isinstance(f["doc_labels"][0], bytes)  # what h5py 3 returns without .asstr()
vb = f["vocab_bytes"]
assert len(vb) == len(vocab)
for i, r in enumerate(rows):
    want = r["text"] if "text" in r else r["prompt"] + r["response"]
    ids = tok[off[i]:off[i + 1]]
    exact = b"".join(vb[t].tobytes() for t in ids).decode("utf-8")
    text = "".join(vocab[t] for t in ids)
    assert exact.startswith("<|bos|>") and text.startswith("<|bos|>"), (exact, text)
    assert exact[len("<|bos|>"):] == want, (i, exact, want)
    # /vocab: the same text where every token holds whole characters; a character split over
    # byte-level tokens shows as U+FFFD in each piece (as the decoder shows a lone piece)
    if all(vocab[t] == vb[t].tobytes().decode("utf-8", "replace") for t in ids) and "\ufffd" not in text:
        assert text == exact, (i, text, exact)
    assert all(vocab[t] == vb[t].tobytes().decode("utf-8", "replace") for t in ids if 0 not in vb[t]), i
print("vocab_bytes decodes", len(rows), "documents exactly; /vocab of the CJK one:", repr("".join(vocab[t] for t in tok[off[2]:off[3]]))[:60])
print("vocab of the French one:", repr("".join(vocab[t] for t in tok[off[1]:off[2]])))
g = h5py.File(d + "/all.h5", "r")
L, D, F, N = g.attrs["n_layers"], g.attrs["d_model"], g.attrs["d_ff"], len(g["tokens"])
for l in range(L):
    for name in ("resid", "attn_out", "ffn_in"):
        x = g[f"layers/{l}/{name}"]
        assert x.shape == (N, D) and x.dtype == np.float16, (name, x.shape, x.dtype)
        assert np.isfinite(x[:]).all() and np.abs(x[:]).max() > 0, name
    a16, a32 = g[f"layers/{l}/ffn_act"][:].astype(np.float32), f[f"layers/{l}/ffn_act"][:]
    assert a16.shape == (N, F) and np.allclose(a16, a32, rtol=2e-3, atol=2e-3), l
# resid after the last block differs from the one after the first; ffn_in is normalised (RMS ~ weights)
assert not np.allclose(g["layers/0/resid"][:], g[f"layers/{L-1}/resid"][:])
h = h5py.File(d + "/resid.h5", "r")
assert list(h["layers"].keys()) == ["1"] and "ffn_act" not in h["layers/1"] and "attn_out" not in h["layers/1"]
assert h["layers/1/resid"].shape == (N, D) and h["layers/1/ffn_in"].shape == (N, D)
assert np.allclose(h["layers/1/resid"][:], g["layers/1/resid"][:].astype(np.float32), rtol=4e-3, atol=4e-3)
p = json.loads(sqlite3.connect(d + "/r.db").execute("SELECT params FROM runs WHERE kind = 'record'").fetchone()[0])
assert p["hooks"] == ["ffn_act", "resid", "attn_out", "ffn_in"], p
p2 = json.loads(sqlite3.connect(d + "/r2.db").execute("SELECT params FROM runs WHERE kind = 'record'").fetchone()[0])
assert p2["hooks"] == ["resid", "ffn_in"], p2  # file order, each once
print("shapes", (N, D), (N, F), "hooks", p["hooks"], p2["hooks"])
PY
ok $? "h5py: vocab text round-trips, labels as str, hook datasets [N, d_model] f16, a file without ffn_act, params hooks"
sed 's/^/    /' "$tmp/err" | head -3

for h in def all resid; do
  $py tests/check_h5.py "$tmp/$h.h5" > "$tmp/err" 2>&1
  ok $? "tests/check_h5.py (the documented schema, with /vocab and the --hook datasets) on $h.h5: $(grep -c '^PASS' "$tmp/err") checks"
done

"$nl" sparsity "$tmp/resid.h5" --db "$tmp/s.db" --no-cett > /dev/null 2> "$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "holds no activations.*--hook ffn_act" "$tmp/err"
ok $? "sparsity on a --hook resid file: exit 1 naming --hook ffn_act ($(head -c 120 "$tmp/err"))"

"$nl" record $model "$tmp/d.jsonl" -o "$tmp/bad.h5" --hook resid,logits > /dev/null 2> "$tmp/err"
rc=$?
[ $rc = 2 ] && grep -q "\-\-hook is a comma list" "$tmp/err" && [ ! -e "$tmp/bad.h5" ]
ok $? "record --hook resid,logits: usage error, exit 2, no file"
"$nl" record $model "$tmp/d.jsonl" -o "$tmp/bad.h5" --hook resid, > /dev/null 2> "$tmp/err"
[ $? = 2 ]
ok $? "record --hook 'resid,': usage error"
