"""Finding and loading libneuronlab.so, and the ctypes prototypes of include/neuronlab/capi.h.

Search order (the first that exists wins): $NEURONLAB_LIB (the library file, or a folder
holding libneuronlab.so), libneuronlab.so next to this package, the build/ folder of the
source tree the package sits in (python/neuronlab -> build/), then the system's library
path (after `make install`: ldconfig, or LD_LIBRARY_PATH=$PREFIX/lib).
"""
import ctypes
import ctypes.util
import os
from pathlib import Path

API_VERSION = 1  # NL_API_VERSION of capi.h that this package speaks

_lib = None
_path = None

c_int, c_int32, c_int64, c_size_t = ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t
c_char_p, c_void_p, c_float, c_double = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_double
P = ctypes.POINTER

HOOK_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_char_p, c_int, c_int, c_int, c_int, P(c_float))

_PROTOS = {
    "nl_api_version": (c_int, []),
    "nl_api_version_string": (c_char_p, []),
    "nl_api_open": (c_int, [c_char_p, c_char_p, c_char_p, c_int, c_int, P(c_void_p)]),
    "nl_api_close": (None, [c_void_p]),
    "nl_api_errmsg": (c_char_p, [c_void_p]),
    "nl_api_set_threads": (c_int, [c_void_p, c_int]),
    "nl_api_set_compute": (c_int, [c_void_p, c_char_p]),
    "nl_api_dim": (c_int64, [c_void_p, c_char_p]),
    "nl_api_str": (c_char_p, [c_void_p, c_char_p]),
    "nl_api_tokenize": (c_int, [c_void_p, c_char_p, c_size_t, c_int, P(c_int32), c_int, P(c_int)]),
    "nl_api_decode": (c_int, [c_void_p, P(c_int32), c_int, c_int, c_char_p, c_size_t, P(c_size_t)]),
    "nl_api_n_points": (c_int, []),
    "nl_api_point": (c_char_p, [c_int]),
    "nl_api_point_width": (c_int, [c_void_p, c_char_p, c_int]),
    "nl_api_hook_add": (c_int, [c_void_p, c_char_p, c_int, HOOK_FN, c_void_p, P(c_int)]),
    "nl_api_hook_remove": (c_int, [c_void_p, c_int]),
    "nl_api_hook_clear": (None, [c_void_p]),
    "nl_api_run": (c_int, [c_void_p, P(c_int32), c_int, P(c_float)]),
    "nl_api_nll": (c_int, [c_void_p, P(c_int32), c_int, P(c_double)]),
    "nl_api_record": (c_int, [c_void_p, c_char_p, P(c_int32), c_int, P(c_int), c_int, P(c_float)]),
    "nl_api_prune": (c_int, [c_void_p, P(c_int32), P(c_int32), c_int]),
    "nl_api_dataset_open": (c_int, [c_void_p, c_char_p, P(c_void_p)]),
    "nl_api_dataset_close": (None, [c_void_p]),
    "nl_api_dataset_size": (c_int, [c_void_p]),
    "nl_api_dataset_doc": (c_int, [c_void_p, c_int, P(P(c_int32)), P(c_int), P(c_int), P(c_int), P(c_char_p), P(c_int)]),
    "nl_api_ppl": (c_int, [c_void_p, c_void_p, c_int, P(c_double), P(c_int64)]),
    "nl_api_weight_shape": (c_int, [c_void_p, c_char_p, c_int, P(c_int64), P(c_int64)]),
    "nl_api_weight": (c_int, [c_void_p, c_char_p, c_int, P(c_float), c_size_t]),
    "nl_status_name": (c_char_p, [c_int]),
}


def _candidates():
    env = os.environ.get("NEURONLAB_LIB")
    if env:
        p = Path(env)
        yield (p / "libneuronlab.so") if p.is_dir() else p, True
        return
    here = Path(__file__).resolve().parent
    yield here / "libneuronlab.so", False
    yield here.parent.parent / "build" / "libneuronlab.so", False
    found = ctypes.util.find_library("neuronlab")
    for name in ([found] if found else []) + ["libneuronlab.so.0.1", "libneuronlab.so"]:
        yield name, True


def lib():
    """The loaded library (loaded on first use)."""
    global _lib, _path
    if _lib is not None:
        return _lib
    tried = []
    for cand, must in _candidates():
        cand = str(cand)
        if not must and not os.path.exists(cand):
            tried.append(cand)
            continue
        try:
            handle = ctypes.CDLL(cand)
        except OSError as e:
            if os.environ.get("NEURONLAB_LIB"):
                raise ImportError(f"cannot load NEURONLAB_LIB '{cand}': {e}") from None
            tried.append(f"{cand} ({e})")
            continue
        for name, (res, args) in _PROTOS.items():
            fn = getattr(handle, name)
            fn.restype, fn.argtypes = res, args
        v = handle.nl_api_version()
        if v != API_VERSION:
            raise ImportError(f"'{cand}' speaks C API version {v}, this package version {API_VERSION}: rebuild or reinstall one of them")
        _lib, _path = handle, cand
        return _lib
    raise ImportError("cannot find libneuronlab.so (build it with `make`, or set NEURONLAB_LIB); tried: " + "; ".join(tried))


def path():
    """Where the library was loaded from (loads it if needed)."""
    lib()
    return _path
