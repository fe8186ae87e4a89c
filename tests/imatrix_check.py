"""imatrix_check.py ACTS.h5 OUT.gguf OUT.dat CHUNK DATASET — checks `record --imatrix` against the
activation dump of the same run (record --hook ffn_in,ffn_act) and the two file layouts field by field.

GGUF (tests/gguf_read.py, an independent reader): general.type "imatrix", imatrix.datasets [DATASET],
imatrix.chunk_size = CHUNK, imatrix.chunk_count = N // CHUNK; per layer l, for ffn_gate and ffn_up
in_sum2 = sum over tokens of ffn_in², in_sum = sum of ffn_in, counts = N; for ffn_down the same over
ffn_act; per layer the attention entries attn_q, attn_k, attn_v (d_model columns, identical sums:
one input) and attn_output (one width on every layer), counts N, in_sum2 positive (their values are
checked against PyTorch by tests/imatrix_attn_ref.py; the dump has no attention input); tensors in
sorted name order, each entry in_sum2, counts, in_sum; nothing else.
Legacy .dat: n_entries, (len, name, ncall = ceil(N / CHUNK), nval, in_sum2 / N * ncall) per entry
in sorted order, then chunk_count, len, DATASET, and the end of the file.
Sums compare within 1e-5 relative of the per-column sum of |x|² (float32 output of float64 sums).
Prints PASS/FAIL lines."""
import struct
import sys

import h5py
import numpy as np

sys.path.insert(0, __import__('os').path.dirname(__file__))
import gguf_read  # noqa: E402

acts, gpath, dpath, chunk, dataset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ok = True


def fail(msg):
    global ok
    ok = False
    print('FAIL imatrix: ' + msg)


with h5py.File(acts, 'r') as h:
    layers = [int(x) for x in h.attrs['layers']]
    gated = h.attrs['ffn_kind'] == 'gated' if not isinstance(h.attrs['ffn_kind'], bytes) else h.attrs['ffn_kind'] == b'gated'
    N = int(h['tokens'].shape[0])
    D = int(h.attrs['d_model'])
    want = {}
    attn = {'blk.%d.%s.weight' % (l, w) for l in layers for w in ('attn_q', 'attn_k', 'attn_v', 'attn_output')}
    for l in layers:
        x = h['layers/%d/ffn_in' % l][:].astype(np.float64)
        a = h['layers/%d/ffn_act' % l][:].astype(np.float64)
        for w in (['ffn_gate', 'ffn_up'] if gated else ['ffn_up']):
            want['blk.%d.%s.weight' % (l, w)] = ((x * x).sum(0), x.sum(0))
        want['blk.%d.ffn_down.weight' % l] = ((a * a).sum(0), a.sum(0))
names = sorted(want)
alln = sorted(set(names) | attn)


def close(got, exp, scale):
    return np.all(np.abs(np.asarray(got, np.float64) - exp) <= 1e-5 * scale + 1e-30)


# ---- GGUF
version, kv, ts = gguf_read.read(gpath)
if version != 3:
    fail('GGUF version %d' % version)
if list(kv) != ['general.type', 'imatrix.datasets', 'imatrix.chunk_count', 'imatrix.chunk_size']:
    fail('keys %s' % list(kv))
if kv['general.type'] != (8, b'imatrix'):
    fail('general.type %r' % (kv['general.type'],))
if kv['imatrix.datasets'][1] != [dataset.encode()]:
    fail('datasets %r' % (kv['imatrix.datasets'],))
if kv['imatrix.chunk_size'] != (4, chunk) or kv['imatrix.chunk_count'] != (4, N // chunk):
    fail('chunk_size/count %r %r (N=%d)' % (kv['imatrix.chunk_size'], kv['imatrix.chunk_count'], N))
order = [n + s for n in alln for s in ('.in_sum2', '.counts', '.in_sum')]
if list(ts) != order:
    fail('tensor order %s ... expected %s ...' % (list(ts)[:4], order[:4]))
for n in names:
    s2, s1 = want[n]
    t2, tc, t1 = ts.get(n + '.in_sum2'), ts.get(n + '.counts'), ts.get(n + '.in_sum')
    if t2 is None or tc is None or t1 is None:
        continue
    if t2['type'] != 0 or t2['ne'] != [len(s2)] or tc['ne'] != [1] or t1['ne'] != [len(s2)]:
        fail('%s shapes %s %s %s' % (n, t2['ne'], tc['ne'], t1['ne']))
        continue
    if not close(t2['f32'], s2, s2):
        fail('%s in_sum2 differs from the dump by %g' % (n, np.abs(t2['f32'] - s2).max()))
    if not close(t1['f32'], s1, (s2 * N) ** 0.5):
        fail('%s in_sum differs from the dump by %g' % (n, np.abs(t1['f32'] - s1).max()))
    if tc['f32'][0] != N:
        fail('%s counts %g, expected %d' % (n, tc['f32'][0], N))
o_width = set()
for l in layers:
    q = ['blk.%d.%s.weight' % (l, w) for w in ('attn_q', 'attn_k', 'attn_v')]
    o = 'blk.%d.attn_output.weight' % l
    if any(n + '.in_sum2' not in ts for n in q + [o]):
        fail('layer %d lacks attention entries' % l)
        continue
    t = [ts[n + '.in_sum2'] for n in q]
    if any(x['ne'] != [D] for x in t) or any(ts[n + '.counts']['f32'][0] != N for n in q + [o]):
        fail('layer %d attention q/k/v widths %s or counts' % (l, [x['ne'] for x in t]))
    elif any(x['data'] != t[0]['data'] or ts[n + '.in_sum']['data'] != ts[q[0] + '.in_sum']['data']
             for x, n in zip(t, q)):
        fail('layer %d attn_q/k/v sums differ (one input)' % l)
    if not (np.all(t[0]['f32'] > 0) and np.all(ts[o + '.in_sum2']['f32'] > 0)):
        fail('layer %d attention in_sum2 not positive' % l)
    o_width.add(ts[o + '.in_sum2']['ne'][0])
if len(o_width) != 1:
    fail('attn_output widths %s' % o_width)
if ok:
    print('PASS imatrix GGUF: %d entries (%s) equal the sums over the dump of %d tokens, %d attention entries (%s) '
          'one input for q/k/v, layout as llama.cpp writes it'
          % (len(names), ', '.join(sorted({n.split('.')[2] for n in names})), N, len(attn),
             ', '.join(sorted({n.split('.')[2] for n in attn}))))

# ---- legacy .dat
ok_before = ok
b = open(dpath, 'rb').read()
o = 0


def rd(fmt):
    global o
    v = struct.unpack_from(fmt, b, o)
    o += struct.calcsize(fmt)
    return v


try:
    n, = rd('<i')
    if n != len(alln):
        fail('.dat has %d entries, expected %d' % (n, len(alln)))
    ncall_want = -(-N // chunk)
    for i in range(n):
        ln, = rd('<i')
        name = b[o:o + ln].decode()
        o += ln
        ncall, nval = rd('<ii')
        vals = np.array(rd('<%df' % nval), np.float64)
        if name != alln[i]:
            fail('.dat entry %d is %s, expected %s' % (i, name, alln[i]))
            continue
        if name in attn:  # against the GGUF of the same pass
            s2 = np.asarray(ts[name + '.in_sum2']['f32'], np.float64)
        else:
            s2 = want[name][0]
        if ncall != ncall_want or nval != len(s2):
            fail('.dat %s ncall %d nval %d, expected %d %d' % (name, ncall, nval, ncall_want, len(s2)))
            continue
        exp = s2 / N * ncall
        if not close(vals, exp, exp):
            fail('.dat %s values differ by %g' % (name, np.abs(vals - exp).max()))
    last, dl = rd('<ii')
    ds = b[o:o + dl].decode()
    o += dl
    if last != N // chunk or ds != dataset or o != len(b):
        fail('.dat tail: chunk_count %d dataset %r, %d bytes left' % (last, ds, len(b) - o))
except struct.error as e:
    fail('.dat truncated: %s' % e)
if ok and ok_before:
    print('PASS imatrix legacy .dat: %d entries field by field (ncall %d, values in_sum2/count*ncall), dataset name and end'
          % (len(alln), -(-N // chunk)))
