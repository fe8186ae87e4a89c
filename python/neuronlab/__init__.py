"""neuronlab for Python: the models, hooks, perplexity, recording and pruning of the neuronlab
C library (libneuronlab.so, through ctypes; numpy only, nothing compiled at install time).

    import neuronlab
    m = neuronlab.Model("notebooks-data/models/silu")
    ids = m.tokenize("What is 2 + 2?")
    logits = m.run(ids, hooks={("ffn_act", 3): lambda a: a.__setitem__((slice(None), 17), 0)})

See the README's "Python" section. The library is found through $NEURONLAB_LIB, next to this
package, in the source tree's build/, then on the system path (neuronlab._lib).
"""
from .model import Dataset, Doc, Error, HookInfo, Model, PplResult
from ._lib import path as library_path

__all__ = ["Model", "Dataset", "Doc", "Error", "HookInfo", "PplResult", "library_path"]
__version__ = "0.1.0"
