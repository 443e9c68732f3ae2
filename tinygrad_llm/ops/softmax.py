"""softmax and log_softmax along one axis, each one graph node, max-subtracted for stability.

Subtracting the row maximum m before exp changes nothing mathematically
(exp(x - m) / sum exp(x - m) = exp(x) / sum exp(x)) but keeps every exp in (0, 1], so
inputs of +-1e4 neither overflow nor lose the largest terms.

One convention for a row whose entries are all -inf (a fully masked row): its softmax is
P = 0 (not NaN), its log-softmax log P = -inf, and its gradients are finite (P = 0 makes
softmax's gradient 0 and log-softmax's g). :func:`softmax` below is the one row-softmax of
the package: ``F.softmax`` and attention both use it. (PyTorch's ``softmax`` gives NaN for
such a row; its ``scaled_dot_product_attention`` gives zeros, as here.)
"""
from __future__ import annotations

import numpy as np

from ..function import Function
from .reduce import shift_of


def softmax(xp, x, axis=-1):
    """P = exp(x - m) / sum(exp(x - m)) along ``axis``, m = the row max; all -inf rows give P = 0.

    float16 rows are computed in float32 (a sum of many terms loses float16's few digits)
    and P is rounded to float16 once, at the end.
    """
    half = x.dtype == np.float16
    if half:
        x = x.astype(np.float32)
    e = xp.exp(x - shift_of(xp, x, axis))
    s = e.sum(axis=axis, keepdims=True)
    P = e / xp.where(s == 0, s.dtype.type(1), s)         # only an all -inf row sums to 0
    return P.astype(np.float16) if half else P


class Softmax(Function):
    """P = softmax(x) along ``axis`` (a non-negative int); x any shape, P the same.

    dx = P * (g - sum(g * P))   (sums along ``axis``).
    """

    def forward(self, x, axis=-1):
        self.shape = x.shape
        if x.ndim == 0:                       # one element: P = 1, dx = 0
            x, axis = x.reshape(1), 0
        self.axis = axis
        self.P = softmax(self.xp, x, axis)
        return self.P.reshape(self.shape)

    def backward(self, g):
        P = self.P
        g = g.reshape(P.shape)
        dx = P * (g - (g * P).sum(axis=self.axis, keepdims=True))
        return dx.reshape(self.shape)


class LogSoftmax(Function):
    """out = z - log(sum(exp(z))), z = x - m (m the row max) along ``axis``; any shape.

    dx = g - exp(out) * sum(g)   (exp(out) is the softmax P; sums along ``axis``).
    An all -inf row gives out = log P = -inf and dx = g.
    """

    def forward(self, x, axis=-1):
        xp = self.xp
        self.shape = x.shape
        if x.ndim == 0:                       # one element: out = 0, dx = 0
            x, axis = x.reshape(1), 0
        self.axis = axis
        z = x - shift_of(xp, x, axis)
        s = xp.exp(z).sum(axis=axis, keepdims=True)
        self.out = z - xp.log(xp.where(s == 0, s.dtype.type(1), s))   # all -inf row: s = 0, out = z = -inf
        return self.out.reshape(self.shape)

    def backward(self, g):
        xp = self.xp
        g = g.reshape(self.out.shape)
        dx = g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)
        return dx.reshape(self.shape)
