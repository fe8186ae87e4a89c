"""imatrix_attn_ref.py FIXTURE_DIR OUT.gguf OUT.dat CHUNK — the attention entries of `record --imatrix`
against PyTorch (tests/reference/nlref.py, the oracle of the HF fixtures).

The fixture's tokens (expected.json) are run once through nlref's forward pass with its `linear`
and `attention` wrapped: the input of q_proj (Llama, Qwen2, Phi) or of the fused query_key_value
(GPT-NeoX) is the normalised attention input, and attention()'s return value (T, H*hd) is exactly
what o_proj / dense reads (the heads concatenated). Expected per layer l:
  blk.l.attn_q/attn_k/attn_v.weight (or blk.l.attn_qkv.weight): in_sum2 = sum over tokens of
    attn_in^2, in_sum = sum of attn_in, counts = T (q, k and v identical);
  blk.l.attn_output.weight: the same over the o_proj input (n_in = H*hd).
GGUF within 1e-5 relative of the per-column sum of x^2 (in_sum: of sqrt(T * sum x^2)); the legacy
.dat values in_sum2 / T * ceil(T / CHUNK). Prints PASS/FAIL lines."""
import json
import os
import struct
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, 'reference'))
import gguf_read  # noqa: E402
import nlref  # noqa: E402

fixture, gpath, dpath, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
case = os.path.basename(fixture.rstrip('/'))
exp = json.load(open(os.path.join(fixture, 'expected.json')))
tokens = exp['tokens']
T = len(tokens)
cfg, tensors = nlref.load_folder(fixture)
W = nlref._f32(tensors)
L = exp['L']

# which weight's input is the attention input, by the identity of the weight tensor
attn_w = {}
for l in range(L):
    for n in ('model.layers.%d.self_attn.q_proj.weight' % l, 'gpt_neox.layers.%d.attention.query_key_value.weight' % l):
        if n in W:
            attn_w[id(W[n])] = l
if len(attn_w) != L:
    print('FAIL imatrix attention %s: the reference knows the q_proj / query_key_value names of %d of %d layers'
          % (case, len(attn_w), L))
    sys.exit(0)
attn_in = [None] * L
pre_o = []
lin0, att0 = nlref.linear, nlref.attention


def linear(x, w, b=None):
    if id(w) in attn_w:
        attn_in[attn_w[id(w)]] = x.detach().clone()
    return lin0(x, w, b)


def attention(*a, **k):
    o = att0(*a, **k)
    pre_o.append(o.detach().clone())
    return o


nlref.linear, nlref.attention = linear, attention
with torch.no_grad():
    out = nlref.FORWARD[cfg['model_type']](cfg, W, list(tokens))
nlref.linear, nlref.attention = lin0, att0
if len(pre_o) != L or any(x is None for x in attn_in):
    print('FAIL imatrix attention %s: captured %d heads outputs for %d layers' % (case, len(pre_o), L))
    sys.exit(0)
# the captures are the real thing: the wrapped pass still gives the fixture's logits
ref_logits = np.fromfile(os.path.join(fixture, 'logits.f32'), np.float32).reshape(T, -1)
if np.abs(out['logits'].numpy() - ref_logits).max() > 1e-4:
    print('FAIL imatrix attention %s: the wrapped reference pass does not give the fixture logits' % case)
    sys.exit(0)

fused = cfg['model_type'] == 'gpt_neox'
want = {}
for l in range(L):
    x = attn_in[l].double().numpy()
    a = pre_o[l].double().numpy()
    for w in (['attn_qkv'] if fused else ['attn_q', 'attn_k', 'attn_v']):
        want['blk.%d.%s.weight' % (l, w)] = ((x * x).sum(0), x.sum(0))
    want['blk.%d.attn_output.weight' % l] = ((a * a).sum(0), a.sum(0))

ok = True


def fail(msg):
    global ok
    ok = False
    print('FAIL imatrix attention %s: %s' % (case, msg))


def close(got, e, scale):
    return np.all(np.abs(np.asarray(got, np.float64) - e) <= 1e-5 * scale + 1e-30)


_, kv, ts = gguf_read.read(gpath)
for n, (s2, s1) in sorted(want.items()):
    t2, tc, t1 = ts.get(n + '.in_sum2'), ts.get(n + '.counts'), ts.get(n + '.in_sum')
    if t2 is None or tc is None or t1 is None:
        fail('%s missing from the GGUF' % n)
        continue
    if t2['ne'] != [len(s2)] or t1['ne'] != [len(s2)]:
        fail('%s has %s columns, expected %d' % (n, t2['ne'], len(s2)))
        continue
    if not close(t2['f32'], s2, s2):
        fail('%s in_sum2 differs from PyTorch by %g (max %g)' % (n, np.abs(t2['f32'] - s2).max(), s2.max()))
    if not close(t1['f32'], s1, (s2 * T) ** 0.5):
        fail('%s in_sum differs from PyTorch by %g' % (n, np.abs(t1['f32'] - s1).max()))
    if tc['f32'][0] != T:
        fail('%s counts %g, expected %d' % (n, tc['f32'][0], T))
extra = sorted({k.rsplit('.', 1)[0] for k in ts if '.attn_' in k} - set(want))
if extra:
    fail('unexpected attention entries %s' % extra)

# legacy .dat: the attention entries among the others
b = open(dpath, 'rb').read()
o = 4
ncall = -(-T // chunk)
seen = 0
try:
    for _ in range(struct.unpack_from('<i', b, 0)[0]):
        ln, = struct.unpack_from('<i', b, o)
        name = b[o + 4:o + 4 + ln].decode()
        o += 4 + ln
        nc, nval = struct.unpack_from('<ii', b, o)
        o += 8
        vals = np.array(struct.unpack_from('<%df' % nval, b, o), np.float64)
        o += 4 * nval
        if name not in want:
            continue
        seen += 1
        e = want[name][0] / T * ncall
        if nc != ncall or nval != len(e) or not close(vals, e, e):
            fail('.dat %s: ncall %d nval %d, values off by %s' % (name, nc, nval,
                                                                 np.abs(vals - e).max() if nval == len(e) else '?'))
except struct.error as err:
    fail('.dat truncated: %s' % err)
if seen != len(want):
    fail('.dat holds %d of the %d attention entries' % (seen, len(want)))
if ok:
    print('PASS imatrix attention %s: %d entries (%s) equal PyTorch sums of the q/k/v and o_proj inputs over %d tokens, '
          'GGUF and .dat' % (case, len(want), ', '.join(sorted({n.split('.')[2] for n in want})), T))
