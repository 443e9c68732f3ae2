"""Embedding lookup as one graph node: out = weight[ids]."""
from __future__ import annotations

from .. import backend
from ..function import Function


class Embedding(Function):
    """out = weight[ids].   ids (...) integers in [0, V), weight (V, D) -> out (..., D).

    dweight = zeros (V, D), then dweight[ids[i]] += g[i] for every position i (repeats add
    up: an unbuffered scatter-add, ``backend.scatter_add``). ids get no gradient.
    ``padding_idx`` (a row in [0, V), or None): that row gets no gradient, dweight[padding_idx] = 0.
    """

    def forward(self, ids, weight, padding_idx=None):
        self.ids, self.V, self.padding_idx = ids, weight.shape[0], padding_idx
        return weight[ids]

    def backward(self, g):
        D = g.shape[-1]
        dweight = self.xp.zeros((self.V, D), dtype=g.dtype)
        backend.scatter_add(self.xp, dweight, self.ids.reshape(-1), g.reshape(-1, D))
        if self.padding_idx is not None:
            dweight[self.padding_idx] = 0
        return None, dweight
