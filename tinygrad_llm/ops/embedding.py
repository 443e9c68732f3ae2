"""Embedding lookup as one graph node: out = weight[ids]."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..function import Function


def scatter_add_rows(xp, ids, g, num_rows):
    """dW (num_rows, D) with dW[v] = sum of the rows g[i] where ids[i] == v.  ids (N,), g (N, D).

    Repeated ids must add up, so ``dW[ids] += g`` is wrong (it keeps one of them). On CPU
    we sort the ids, so equal ids sit next to each other, and add each run of rows with
    one ``np.add.reduceat``. Measured on 2 CPU cores, float32 (ms; ids (12,64) | (64,256)):

        D, V            np.add.at      sort + reduceat
        128, 65         ...            ...
    On GPU, CuPy's atomic scatter-add (``backend.scatter_add``) is used.
    """
    dW = xp.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    if xp is not np:
        return backend.scatter_add(xp, dW, ids, g)
    if ids.size == 0:
        return dW
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    dW[sorted_ids[starts]] = np.add.reduceat(g[order], starts, axis=0)
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
