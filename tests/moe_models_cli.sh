#!/usr/bin/env bash
# moe_models_cli.sh — the mixture-of-experts and Qwen3 model types through the CLI, on the
# fixtures of tests/reference/gen_moe_fixtures.py:
#   - `generate --temp 0` continues "Hello" exactly as the PyTorch reference's greedy decoding
#     (generate.json: the whole sequence recomputed per step) for mixtral, qwen2_moe (BF16),
#     qwen3 and qwen3_moe (F16, sharded);
#   - `info` loads each; bad input is one line naming config.json or the tensor, exit 1:
#     an unknown router option, num_experts_per_tok beyond the experts, a missing expert tensor,
#     an expert tensor of the wrong shape;
#   - `record` stores the routing of MoE layers (router logits, experts, weights, expert and shared
#     activations) equal to the PyTorch reference, read with h5py; --layers, f16, --pool, resume;
#     --stats refuses MoE layers.
# Prints PASS/FAIL/SKIP lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
fx=tests/fixtures/hf
tmp=$(mktemp -d /tmp/nl_moecli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok() { if [ "$1" -eq 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" 2>/dev/null | head -8; fi; }

for m in mixtral qwen2_moe qwen3 qwen3_moe; do
  if [ ! -f "$fx/$m/generate.json" ]; then echo "FAIL $m: $fx/$m/generate.json is missing"; continue; fi
  n=$($py -c "import json,sys; print(len(json.load(open(sys.argv[1]))['greedy']))" "$fx/$m/generate.json")
  "$nl" generate "$fx/$m" --tokenizer "$fx/llama_bf16/tokenizer.json" --prompt Hello -n "$n" --temp 0 --json \
    > "$tmp/g.json" 2> "$tmp/why"
  $py - "$tmp/g.json" "$fx/$m/generate.json" >> "$tmp/why" 2>&1 <<'PY'
import json, sys
g, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert g["prompt_tokens"] == e["prompt_tokens"], (g["prompt_tokens"], e["prompt_tokens"])
assert g["tokens"] == e["greedy"], (g["tokens"], e["greedy"])
PY
  ok $? "generate --temp 0 on $m continues as the PyTorch greedy reference"
  "$nl" info "$fx/$m" > "$tmp/info" 2> "$tmp/why"; ok $? "info $m"
done

grep -q "^experts      6 routed, top-2, width 24; shared expert width 48; 1 of 4 layers$" <("$nl" info "$fx/qwen2_moe" 2>&1) &&
  grep -q "^experts      8 routed, top-2 renormalised, width 32; 2 of 2 layers$" <("$nl" info "$fx/mixtral" 2>&1) &&
  grep -q "head dim 32, q/k RMSNorm per head$" <("$nl" info "$fx/qwen3" 2>&1)
echo "info output differs" > "$tmp/why"; ok $? "info shows the experts (routed, top-k, widths, sparse layers) and q/k norms"

# bad input: a copy of mixtral with one edit; one line on stderr matching the pattern, exit 1
bad() { # what pattern edit-kind args...
  local what=$1 pat=$2; shift 2
  rm -rf "$tmp/b"; mkdir "$tmp/b"; cp "$fx/mixtral/config.json" "$fx/mixtral/model.safetensors" "$tmp/b/"
  $py - "$tmp/b" "$@" <<'PY'
import json, struct, sys
d, kind = sys.argv[1], sys.argv[2]
if kind == "cfg":
    c = json.load(open(d + "/config.json")); c[sys.argv[3]] = json.loads(sys.argv[4])
    json.dump(c, open(d + "/config.json", "w"))
else:  # same-length edit of the safetensors header
    b = bytearray(open(d + "/model.safetensors", "rb").read()); n = struct.unpack("<Q", b[:8])[0]
    h = b[8:8 + n].decode(); a, z = sys.argv[3], sys.argv[4]; assert a in h and len(a) == len(z)
    b[8:8 + n] = h.replace(a, z, 1).encode(); open(d + "/model.safetensors", "wb").write(b)
PY
  "$nl" info "$tmp/b" > /dev/null 2> "$tmp/err"; local rc=$?
  { echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
  [ "$rc" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -Eq -- "$pat" "$tmp/err"
  ok $? "$what: exit 1, one line ($(head -c 150 "$tmp/err"))"
}
bad "unknown router option" "config.json': router option scoring_func = 'sigmoid' is not supported" cfg scoring_func '"sigmoid"'
bad "num_experts_per_tok > num_local_experts" "config.json': num_experts_per_tok = 9 must be in 1\.\.num_local_experts \(8\)" cfg num_experts_per_tok 9
bad "num_experts_per_tok < 1" "num_experts_per_tok = 0 must be in 1\.\.num_local_experts" cfg num_experts_per_tok 0
bad "missing expert tensor" "missing tensor 'model\.layers\.1\.block_sparse_moe\.experts\.6\.w1\.weight'" st \
  '"model.layers.1.block_sparse_moe.experts.6.w1.weight"' '"model.layers.1.block_sparse_moe.experts.6.w0.weight"'
bad "expert tensor of the wrong shape" "tensor 'model\.layers\.0\.block_sparse_moe\.experts\.2\.w3\.weight' has shape \[64, 32\], config\.json implies \[32, 64\]" st \
  '"model.layers.0.block_sparse_moe.experts.2.w3.weight":{"dtype":"F32","shape":[32,64]' \
  '"model.layers.0.block_sparse_moe.experts.2.w3.weight":{"dtype":"F32","shape":[64,32]'

# record on MoE models (DESIGN §10): one document of the fixture's tokens; h5py reads the routing
# datasets and compares them with the PyTorch reference (gen_moe_fixtures.py): router logits and
# expert activations 1e-4, experts identical (torch.topk order), weights 1e-5, shared expert
# activations and gate; qwen2_moe's dense layers keep ffn_act (= ffn_act.f32); check_h5.py passes.
$py -c "import json,sys; print(json.dumps({'tokens': json.load(open(sys.argv[1]))['tokens'], 'label': 'a'}))" \
  "$fx/mixtral/expected.json" > "$tmp/fx.jsonl"
for m in mixtral qwen2_moe qwen3_moe; do
  "$nl" record "$fx/$m" "$tmp/fx.jsonl" -o "$tmp/$m.h5" > /dev/null 2> "$tmp/why" &&
  $py - "$tmp/$m.h5" "$fx/$m" >> "$tmp/why" 2>&1 <<'PY'
import h5py, json, numpy as np, sys
f, d = h5py.File(sys.argv[1], "r"), sys.argv[2]
e = json.load(open(d + "/expected.json"))
T, E, k, nm = e["T"], e["E"], e["k"], len(e["moe_layers"])
assert list(f.attrs["moe_layers"]) == e["moe_layers"], f.attrs["moe_layers"]
assert list(f.attrs["layers"]) == e["dense_layers"], f.attrs["layers"]
Fe = int(f.attrs["d_expert"]); Fs = int(f.attrs["d_shared"])
rd = lambda n, dt="<f4": np.fromfile(f"{d}/{n}", dtype=dt)
z, ex, w = rd("router_logits.f32").reshape(nm, T, E), rd("experts.i32", "<i4").reshape(nm, T, k), rd("expert_weights.f32").reshape(nm, T, k)
act = rd("expert_act.f32").reshape(nm, T, k, Fe)
for i, l in enumerate(e["moe_layers"]):
    g = f[f"layers/{l}"]
    assert "ffn_act" not in g
    assert np.abs(g["router_logits"][...] - z[i]).max() <= 1e-4, "router_logits"
    assert g["experts"].dtype == np.int16 and np.array_equal(g["experts"][...], ex[i]), "experts differ"
    assert np.abs(g["expert_weights"][...] - w[i]).max() <= 1e-5, "expert_weights"
    assert np.abs(g["expert_act"][...] - act[i]).max() <= 1e-4, "expert_act"
    if Fs:
        assert np.abs(g["shared_act"][...] - rd("shared_act.f32").reshape(nm, T, Fs)[i]).max() <= 1e-4, "shared_act"
        assert np.abs(g["shared_gate"][...] - rd("shared_gate.f32").reshape(nm, T)[i]).max() <= 1e-5, "shared_gate"
    else:
        assert "shared_act" not in g and "shared_gate" not in g
if e["dense_layers"]:
    fa = rd("ffn_act.f32").reshape(len(e["dense_layers"]), T, -1)
    for i, l in enumerate(e["dense_layers"]):
        assert np.abs(f[f"layers/{l}/ffn_act"][...] - fa[i]).max() <= 1e-4, f"ffn_act {l}"
PY
  ok $? "record on $m stores router logits, experts, weights, expert and shared activations as the PyTorch reference"
  /usr/bin/python3 tests/check_h5.py "$tmp/$m.h5" > "$tmp/why" 2>&1; ok $? "check_h5.py accepts the $m recording"
done

# --layers picks MoE and dense layers; f16 + --pool over three documents; a cut-short file resumed
# equals the uninterrupted one; --stats refuses MoE layers
printf '{"tokens":[1,15,200,37,99],"label":"a"}\n{"tokens":[3,128,77,5],"label":"b"}\n{"tokens":[3,18,77,5,9,9,100],"label":"a"}\n' > "$tmp/d.jsonl"
"$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/l1.h5" --layers 1 > /dev/null 2> "$tmp/why" &&
  $py -c "import h5py,sys; f=h5py.File(sys.argv[1]); assert list(f.attrs['layers'])==[] and list(f.attrs['moe_layers'])==[1] and list(f['layers'])==['1'], dict(f.attrs)" "$tmp/l1.h5" >> "$tmp/why" 2>&1
ok $? "record --layers 1 on qwen2_moe records only the MoE layer"
"$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/q2.h5" --layers 0,2,3 > /dev/null 2> "$tmp/why" &&
  $py -c "import h5py,sys; f=h5py.File(sys.argv[1]); assert 'moe_layers' not in f.attrs and list(f.attrs['layers'])==[0,2,3]" "$tmp/q2.h5" >> "$tmp/why" 2>&1
ok $? "record --layers 0,2,3 on qwen2_moe records the dense layers as before"
"$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/full.h5" --dtype f16 --pool > /dev/null 2> "$tmp/why" &&
  NEURONLAB_COMMIT_SECONDS=-1 "$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/r.h5" --dtype f16 --pool > /dev/null 2>> "$tmp/why" &&
  $py - "$tmp/r.h5" >> "$tmp/why" 2>&1 <<'PY' &&
import h5py, sys
f = h5py.File(sys.argv[1], "r+")   # as a kill after the first document's commit leaves it (rows past it are cut)
n = int(f["doc_offsets"][1])
def cut(name, o):
    if isinstance(o, h5py.Dataset) and o.maxshape[0] is None:
        o.resize(2 if name == "doc_offsets" else 1 if name.startswith("pooled") or name in ("doc_labels", "prompt_len") else n, axis=0)
f.visititems(cut); f.attrs["complete"] = 0; f.close()
PY
  "$nl" record "$fx/qwen2_moe" "$tmp/d.jsonl" -o "$tmp/r.h5" --dtype f16 --pool --resume > /dev/null 2>> "$tmp/why" &&
  $py - "$tmp/full.h5" "$tmp/r.h5" >> "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sys
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert a["layers/1/expert_act"].dtype == np.float16 and a["layers/1/shared_act"].dtype == np.float16
assert "1" not in a["pooled"] and list(a["pooled"]) == ["0", "2", "3"]
bad = []
a.visititems(lambda n, o: bad.append(n) if isinstance(o, h5py.Dataset) and not np.array_equal(o[...], b[n][...]) else None)
assert not bad and b.attrs["complete"] == 1, bad
PY
ok $? "record --dtype f16 --pool on qwen2_moe, cut after one document and resumed, equals the uninterrupted file"
"$nl" record "$fx/mixtral" "$tmp/d.jsonl" -o "$tmp/s.h5" --stats > /dev/null 2> "$tmp/err"; rc=$?
{ echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
[ "$rc" -eq 1 ] && grep -q "layer 0 of '.*mixtral' is a mixture-of-experts layer (8 experts): --stats" "$tmp/err" && [ ! -e "$tmp/s.h5" ]
ok $? "record --stats refuses MoE layers, writing no file"

# experts: the four tables of analyses/experts.h against a numpy recomputation from `record`'s
# routing datasets (themselves checked against PyTorch above): load per label (tokens, weights,
# the shared expert's gate as expert -1), entropy and margin, co-selection, expert ability AP
cat > "$tmp/lab.jsonl" <<'EOF'
{"tokens":[1,15,200,37,99,249,3],"label":"code"}
{"tokens":[3,128,77,5,42,19,20],"label":"math"}
{"tokens":[1,15,201,37,98,250,3,9],"label":"code"}
{"tokens":[3,129,76,5,41,18,21],"label":"math"}
{"tokens":[7,7,8,9,10],"label":""}
{"tokens":[1,3,5,7,11,13,17,19,23],"label":"code"}
EOF
for m in mixtral qwen2_moe; do
  rm -f "$tmp/e.db"
  "$nl" record "$fx/$m" "$tmp/lab.jsonl" -o "$tmp/lab_$m.h5" > /dev/null 2> "$tmp/why" &&
  "$nl" experts "$fx/$m" "$tmp/lab.jsonl" --db "$tmp/e.db" --seed 5 > "$tmp/out" 2>> "$tmp/why" &&
  $py - "$tmp/lab_$m.h5" "$tmp/e.db" >> "$tmp/why" 2>&1 <<'PY'
import h5py, numpy as np, sqlite3, sys
f, db = h5py.File(sys.argv[1], "r"), sqlite3.connect(sys.argv[2])
off, labs = f["doc_offsets"][...], [x.decode() if isinstance(x, bytes) else x for x in f["doc_labels"][...]]
E, k, Fs = int(f.attrs["n_experts"]), int(f.attrs["experts_per_tok"]), int(f.attrs["d_shared"])
tlab = np.concatenate([[labs[d]] * (off[d + 1] - off[d]) for d in range(len(labs))])
def ap(v, y):   # ties form one step (ability.h)
    P, tp, n, s, prev_r = y.sum(), 0, 0, 0.0, 0.0
    for t in sorted(set(v), reverse=True):
        m = v == t; tp += y[m].sum(); n += m.sum(); r = tp / P; s += (r - prev_r) * tp / n; prev_r = r
    return s
close = lambda a, b: abs(a - b) <= 1e-6 * max(1, abs(b))
for l in f.attrs["moe_layers"]:
    g = f[f"layers/{l}"]
    z, ex, w = g["router_logits"][...].astype(np.float64), g["experts"][...], g["expert_weights"][...].astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    W = np.zeros((len(z), E)); np.put_along_axis(W, ex.astype(np.int64), w, 1)
    for lab in ["*", "code", "math"]:
        sel = np.ones(len(z), bool) if lab == "*" else tlab == lab
        n = sel.sum()
        rows = {e: (t, tf, ws, wf) for e, t, tf, ws, wf in db.execute(
            "SELECT expert, tokens, token_frac, weight_sum, weight_frac FROM expert_load WHERE layer=? AND label=?", (int(l), lab))}
        assert len(rows) == E + (1 if Fs else 0), (lab, len(rows))
        for e in range(E):
            t = int(((ex[sel] == e).any(1)).sum()); ws = W[sel, e].sum()
            assert rows[e][0] == t and close(rows[e][1], t / n) and close(rows[e][2], ws) and close(rows[e][3], ws / W[sel].sum()), (lab, e, rows[e])
        if Fs:
            gs = g["shared_gate"][...][sel].astype(np.float64)
            assert rows[-1][0] == n and close(rows[-1][2], gs.sum()) and close(rows[-1][3], gs.mean()), rows[-1]
        H = -(p[sel] * np.log(p[sel])).sum(1).mean(); srt = -np.sort(-p[sel], 1)
        ent, mar = db.execute("SELECT entropy, margin FROM expert_routing WHERE layer=? AND label=?", (int(l), lab)).fetchone()
        assert close(ent, H) and close(mar, (srt[:, 0] - srt[:, 1]).mean()), (lab, ent, H, mar)
    co = {(a, b): c for a, b, c in db.execute("SELECT expert_a, expert_b, tokens FROM expert_coselect WHERE layer=?", (int(l),))}
    for a in range(E):
        for b in range(a, E):
            c = int(((ex == a).any(1) & (ex == b).any(1)).sum())
            assert co.get((a, b), 0) == c, (a, b, co.get((a, b)), c)
    pl = f["prompt_len"][...]
    lab_docs = [d for d in range(len(labs)) if labs[d]]
    for ab in ("code", "math"):
        y = np.array([labs[d] == ab for d in lab_docs])
        for e in range(E):
            v = np.array([W[off[d]:off[d] + pl[d], e].mean() for d in lab_docs]).astype(np.float32)
            a_db, base = db.execute("SELECT ap, baseline FROM expert_ability WHERE layer=? AND ability=? AND expert=?",
                                    (int(l), ab, e)).fetchone()
            assert close(a_db, ap(v, y)) and close(base, y.mean()), (ab, e, a_db, ap(v, y))
assert db.execute("SELECT count(*) FROM runs WHERE kind='experts' AND status='complete'").fetchone()[0] == 1
PY
  ok $? "experts on $m: load, entropy/margin, co-selection and ability AP equal a numpy recomputation from record"
done
"$nl" experts "$fx/qwen3" "$tmp/lab.jsonl" --db "$tmp/e2.db" > /dev/null 2> "$tmp/err"; rc=$?
{ echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
[ "$rc" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q "has no mixture-of-experts layer" "$tmp/err"
ok $? "experts on a dense model: one line, exit 1"
# record --moe DIR (MoEfied, issue 12): moe_experts int16 [N, K] beside ffn_act = the top-K of the
# sim router's scores x·router_simᵀ (x = the stored ffn_in), ascending ids; K = E gives every expert
$py - "$tmp" <<'PY'
import json, random, sys
random.seed(3)
with open(sys.argv[1] + "/calib.jsonl", "w") as f:
    for d in range(8):
        f.write(json.dumps({"tokens": [1] + [random.randrange(2, 256) for _ in range(39)], "label": "ab"[d % 2]}) + "\n")
PY
"$nl" moefy "$fx/llama" "$tmp/calib.jsonl" --experts 8 -o "$tmp/moe" --quiet > /dev/null 2> "$tmp/why" &&
  "$nl" record "$fx/llama" "$tmp/calib.jsonl" -o "$tmp/mf.h5" --moe "$tmp/moe" --k 3 --hook ffn_act,ffn_in > /dev/null 2>> "$tmp/why" &&
  "$nl" record "$fx/llama" "$tmp/calib.jsonl" -o "$tmp/mf8.h5" --moe "$tmp/moe" --k 8 > /dev/null 2>> "$tmp/why" &&
  $py - "$tmp/mf.h5" "$tmp/mf8.h5" "$tmp/moe/experts.safetensors" >> "$tmp/why" 2>&1 <<'PY'
import h5py, json, numpy as np, struct, sys
f, f8 = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
b = open(sys.argv[3], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
def tensor(name):
    t = h[name]; a, z = t["data_offsets"]; assert t["dtype"] == "F32"
    return np.frombuffer(b[8 + n + a:8 + n + z], dtype="<f4").reshape(t["shape"])
assert list(f.attrs["moefied_layers"]) == [0, 1] and int(f.attrs["moe_k"]) == 3 and "moe_layers" not in f.attrs
for l in (0, 1):
    sel = f[f"layers/{l}/moe_experts"][...]
    assert sel.dtype == np.int16 and sel.shape == (len(f["tokens"]), 3) and f[f"layers/{l}/ffn_act"].shape[0] == len(sel)
    z = f[f"layers/{l}/ffn_in"][...].astype(np.float32) @ tensor(f"layers.{l}.router.sim").T
    want = np.sort(np.argsort(-z, axis=1, kind="stable")[:, :3], axis=1)
    assert np.array_equal(sel, want), (l, np.argwhere(sel != want)[:5])
    assert np.array_equal(f8[f"layers/{l}/moe_experts"][...], np.tile(np.arange(8), (len(sel), 1)))
PY
ok $? "record --moe stores moe_experts: the sim router's top-K (ascending), all experts at K = E"
/usr/bin/python3 tests/check_h5.py "$tmp/mf.h5" > "$tmp/why" 2>&1; ok $? "check_h5.py accepts the MoEfied recording"
# prune --experts: removing routed expert 3 of qwen2_moe's layer 1 (its logit -inf: tokens take
# their next-best expert) and the layer's shared expert give the perplexities of the PyTorch
# reference forward with the same removal (softmax over the other experts; shared down_proj zeroed);
# random-expert control rows; top:ABILITY removes the experts run's best experts; bad input
rm -f "$tmp/p.db"
"$nl" prune "$fx/qwen2_moe" "$tmp/lab.jsonl" --db "$tmp/p.db" --experts 1:3,1:shared --seeds 2 > "$tmp/out" 2> "$tmp/why" &&
  $py - "$fx/qwen2_moe" "$tmp/lab.jsonl" "$tmp/p.db" >> "$tmp/why" 2>&1 <<'PY'
import json, math, sqlite3, sys, types
sys.path.insert(0, "tests/reference")
import torch
import gen_moe_fixtures as gen
import nlref
cfg, tensors = nlref.load_folder(sys.argv[1])
W0 = {k: v.float() for k, v in tensors.items()}
docs = [json.loads(l) for l in open(sys.argv[2])]
db = sqlite3.connect(sys.argv[3])
def ppl(W, drop=None):
    F0 = torch.nn.functional
    def softmax(x, dim=None, dtype=None):
        if drop is not None:
            x = x.clone(); x[:, drop] = -math.inf
        return F0.softmax(x, dim=dim, dtype=dtype)
    gen.F = types.SimpleNamespace(**{k: getattr(F0, k) for k in dir(F0) if not k.startswith("__")})
    gen.F.softmax = softmax
    s, n, by = 0.0, 0, {}
    for d in docs:
        lg = gen.forward(cfg, W, d["tokens"])["logits"].double()
        lp = torch.log_softmax(lg, -1)
        t = torch.tensor(d["tokens"])
        nll = -lp[torch.arange(len(t) - 1), t[1:]]
        s += float(nll.sum()); n += len(t) - 1
        a = by.setdefault(d["label"], [0.0, 0]); a[0] += float(nll.sum()); a[1] += len(t) - 1
    return math.exp(s / n), {k: math.exp(v[0] / v[1]) for k, v in by.items() if k}
def row(removed, control, label=""):
    return db.execute("SELECT ppl, rel_change FROM expert_prune WHERE removed=? AND control=? AND seed=-1 AND label=?",
                      (removed, control, label)).fetchone()
base, bl = ppl(W0)
rm3, rl = ppl(W0, drop=3)
W1 = dict(W0); W1["model.layers.1.mlp.shared_expert.down_proj.weight"] = torch.zeros_like(W0["model.layers.1.mlp.shared_expert.down_proj.weight"])
sh, sl = ppl(W1)
for (name, ctl, want, wl) in (("", "none", base, bl), ("1:3", "expert", rm3, rl), ("1:shared", "shared", sh, sl)):
    got = row(name, ctl)
    assert abs(got[0] - want) <= 1e-4 * want, (name, got, want)
    assert abs(got[1] - (want - base) / base) <= 1e-4, (name, got, want, base)
    for lab, v in wl.items():
        assert abs(row(name, ctl, lab)[0] - v) <= 1e-4 * v, (name, lab)
assert abs(rm3 - base) > 1e-3 * base   # the removal changes something
r = db.execute("SELECT count(*), count(DISTINCT seed) FROM expert_prune WHERE removed='1:3' AND control='random'").fetchone()
assert r == (2 * 3, 2), r    # 2 seeds x (code, math, all)
assert db.execute("SELECT count(*) FROM expert_prune WHERE removed='1:shared' AND control='random'").fetchone()[0] == 0
PY
ok $? "prune --experts 1:3,1:shared on qwen2_moe equals the PyTorch reference with the expert removed (1e-4), random control rows"
"$nl" experts "$fx/qwen2_moe" "$tmp/lab.jsonl" --db "$tmp/p.db" > /dev/null 2> "$tmp/why" &&
  "$nl" prune "$fx/qwen2_moe" "$tmp/lab.jsonl" --db "$tmp/p.db" --experts top:code:2 --seeds 1 > "$tmp/out" 2>> "$tmp/why" &&
  $py - "$tmp/p.db" >> "$tmp/why" 2>&1 <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
er = db.execute("SELECT max(id) FROM runs WHERE kind='experts'").fetchone()[0]
top = db.execute("SELECT expert FROM expert_ability WHERE run_id=? AND ability='code' ORDER BY ap DESC, expert LIMIT 2", (er,)).fetchall()
pr = db.execute("SELECT max(id) FROM runs WHERE kind='prune_experts'").fetchone()[0]
r = db.execute("SELECT experts FROM expert_prune WHERE run_id=? AND removed='top:code:2' AND control='expert' AND label=''", (pr,)).fetchone()
assert r == (2,), r
assert len(top) == 2
PY
ok $? "prune --experts top:code:2 removes the experts run's two best experts for code"
# --eval FILE: perplexity measured on FILE (here the code documents only), as when FILE is DATA
grep '"code"' "$tmp/lab.jsonl" > "$tmp/code.jsonl"
rm -f "$tmp/ev.db" "$tmp/ev2.db"
"$nl" prune "$fx/qwen2_moe" "$tmp/lab.jsonl" --db "$tmp/ev.db" --experts 1:3 --eval "$tmp/code.jsonl" --seeds 1 > /dev/null 2> "$tmp/why" &&
  "$nl" prune "$fx/qwen2_moe" "$tmp/code.jsonl" --db "$tmp/ev2.db" --experts 1:3 --seeds 1 > /dev/null 2>> "$tmp/why" &&
  $py - "$tmp/ev.db" "$tmp/ev2.db" "$tmp/code.jsonl" >> "$tmp/why" 2>&1 <<'PY'
import sqlite3, sys
q = "SELECT removed, control, seed, label, tokens, ppl FROM expert_prune ORDER BY 1, 2, 3, 4"
a, b = (sqlite3.connect(p).execute(q).fetchall() for p in sys.argv[1:3])
assert a == b and len(a) > 0, (a, b)
assert {r[3] for r in a} == {"", "code"}, a
assert sqlite3.connect(sys.argv[1]).execute("SELECT dataset FROM runs WHERE kind='prune_experts'").fetchone()[0] == sys.argv[3]
PY
ok $? "prune --experts --eval FILE measures perplexity on FILE (equal to FILE as DATA), recorded as the run's dataset"
"$nl" prune "$fx/qwen2_moe" "$tmp/lab.jsonl" --db "$tmp/p.db" --experts 1:9 > /dev/null 2> "$tmp/err"; rc=$?
{ echo "exit $rc"; cat "$tmp/err"; } > "$tmp/why"
[ "$rc" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q "expert in 0..5 or 'shared'" "$tmp/err"
ok $? "prune --experts with an expert beyond the layer's: one line, exit 1"
exit 0
