"""gguf_read.py — a minimal independent GGUF reader for the test scripts (numpy only).

read(path) -> (kv, tensors): kv maps key -> (type_id, value) in file order (arrays as lists,
strings as bytes); tensors maps name -> dict(ne, type, data) where data is the raw bytes (F32
tensors also as 'f32', a numpy array in file order). Written from the GGUF layout (gguf.h), not
from neuronlab's reader, so the tests check the writer against a second implementation."""
import struct

import numpy as np

_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FMT = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}
_BLOCK = {0: (1, 4), 1: (1, 2), 8: (32, 34), 30: (1, 2)}


def read(path):
    b = open(path, 'rb').read()
    assert b[:4] == b'GGUF', 'bad magic'
    version, nt, nk = struct.unpack_from('<IQQ', b, 4)
    o = 24

    def s():
        nonlocal o
        n, = struct.unpack_from('<Q', b, o)
        o += 8
        r = b[o:o + n]
        o += n
        return r

    def val(t):
        nonlocal o
        if t == 8:
            return s()
        if t == 9:
            et, n = struct.unpack_from('<IQ', b, o)
            o += 12
            return [val(et) for _ in range(n)]
        r, = struct.unpack_from(_FMT[t], b, o)
        o += _SIZE[t]
        return r

    kv = {}
    for _ in range(nk):
        k = s().decode()
        t, = struct.unpack_from('<I', b, o)
        o += 4
        kv[k] = (t, val(t))
    infos = []
    for _ in range(nt):
        name = s().decode()
        nd, = struct.unpack_from('<I', b, o)
        o += 4
        ne = list(struct.unpack_from('<%dQ' % nd, b, o))
        o += 8 * nd
        ty, off = struct.unpack_from('<IQ', b, o)
        o += 12
        infos.append((name, ne, ty, off))
    align = kv.get('general.alignment', (4, 32))[1]
    base = (o + align - 1) // align * align
    tensors = {}
    for name, ne, ty, off in infos:
        n = int(np.prod(ne))
        be, bb = _BLOCK[ty]
        nbytes = n // be * bb
        assert base + off + nbytes <= len(b), name
        t = {'ne': ne, 'type': ty, 'offset': off, 'data': b[base + off:base + off + nbytes]}
        if ty == 0:
            t['f32'] = np.frombuffer(t['data'], np.float32)
        tensors[name] = t
    return version, kv, tensors
