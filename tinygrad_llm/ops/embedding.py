"""Embedding lookup as one graph node: out = weight[ids]."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..function import Function


def scatter_add_rows(xp, ids, g, num_rows):
    """dW (num_rows, D) with dW[v] = sum of the rows g[i] where ids[i] == v.  ids (N,), g (N, D).

    Repeated ids must add up, so ``dW[ids] += g`` is wrong (each repeat overwrites the
    last). On CPU we scatter single numbers instead of rows: element (i, j) of g goes to
    flat position ids[i] * D + j of dW, and ``np.add.at`` on 1-D arrays is a tight C loop
    in NumPy >= 1.25 (its 2-D form, ``np.add.at(dW, ids, g)``, is several times slower).
    Measured (ms, float32, best of 10, on 2 CPU cores that other jobs kept busy, so the
    numbers are rough; ``python benchmarks/bench_ops.py --embedding-scatter``):

        ids       D    V      np.add.at 2-D   sort + np.add.reduceat   1-D np.add.at (used)
        (12,64)   128  65       2.1             0.3                      0.4
        (12,64)   128  50257   10.3             9.6                      9.0
        (12,64)   384  65       9.9             0.9                      1.3
        (12,64)   384  50257   43              54                       45    (allocating the zeroed (V, D) dW dominates)
        (64,256)  128  65     115              38                       23
        (64,256)  128  50257  108              87                       48
        (64,256)  384  65     191              90                      101
        (64,256)  384  50257  374             285                       88

    A one-hot (V, N) matrix times g through BLAS was erratic on the busy machine (0.4 to
    57 ms for V = 65) and is out of the question for V = 50257. On GPU, CuPy's atomic
    scatter-add (``backend.scatter_add``) is used.
    """
    dW = xp.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    if xp is not np:
        return backend.scatter_add(xp, dW, ids, g)
    D = g.shape[1]
    rows = ids.astype(np.intp, copy=False)[:, None]                # intp: uint8 * D would overflow
    flat_index = (rows * D + np.arange(D)).reshape(-1)             # (N * D,) positions in dW
    np.add.at(dW.reshape(-1), flat_index, g.reshape(-1))
    return dW


class Embedding(Function):
    """out = weight[ids].   ids (...) integers in [0, V), weight (V, D) -> out (..., D).

    dweight = zeros (V, D), then dweight[ids[i]] += g[i] for every position i (repeats add up).
    """

    def forward(self, ids, weight):
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
        if weight.ndim != 2:
            raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
        V = weight.shape[0]
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= V:
                bad = lo if lo < 0 else hi
                raise IndexError(f"embedding: id {bad} is out of range for an embedding table of "
                                 f"{V} rows (valid ids are 0..{V - 1})")
        self.ids, self.V = ids, V
        return weight[ids]

    def backward(self, g):
        if not self.needs_input_grad[1]:
            return None, None
        D = g.shape[-1]
        return None, scatter_add_rows(self.xp, self.ids.reshape(-1), g.reshape(-1, D), self.V)
