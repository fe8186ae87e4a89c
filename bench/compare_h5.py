#!/usr/bin/python3
"""compare_h5.py — compares /layers/{l}/ffn_act of two activation files (neuronlab, torch baseline).

Usage: compare_h5.py A.h5 B.h5. Prints one JSON line: layers compared, rows, max |a-b|, and
max |a-b| / max |b| over all layers; ok when the latter is below 1e-2 (f16 storage rounds
to ~5e-4 relative, so a correct recorder is far below that; a wrong layer or offset is not).
Reads a block of rows at a time so memory stays small.
"""
import json
import sys

import h5py
import numpy as np


def main():
    a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
    la = sorted(int(k) for k in a["layers"].keys() if "ffn_act" in a["layers"][k])
    lb = sorted(int(k) for k in b["layers"].keys())
    common = [l for l in la if l in lb]
    max_abs, max_ref, rows = 0.0, 0.0, None
    for l in common:
        da, db = a[f"layers/{l}/ffn_act"], b[f"layers/{l}/ffn_act"]
        if da.shape != db.shape:
            print(json.dumps({"ok": False, "layers": len(common), "rows": 0, "max_abs": float("nan"),
                              "max_rel": float("nan"), "error": f"layer {l}: shape {da.shape} vs {db.shape}"}))
            return
        rows = da.shape[0]
        for r0 in range(0, rows, 4096):
            x = da[r0:r0 + 4096].astype(np.float32)
            y = db[r0:r0 + 4096].astype(np.float32)
            max_abs = max(max_abs, float(np.abs(x - y).max()))
            max_ref = max(max_ref, float(np.abs(y).max()))
    rel = max_abs / max_ref if max_ref > 0 else float("nan")
    print(json.dumps({"ok": bool(common) and rel < 1e-2, "layers": len(common), "rows": rows or 0,
                      "max_abs": max_abs, "max_rel": rel}))


if __name__ == "__main__":
    main()
