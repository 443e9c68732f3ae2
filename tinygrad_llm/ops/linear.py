"""The fully connected layer as one graph node: y = x @ W^T + b, as a single 2-D GEMM."""
from __future__ import annotations

import math

from ..function import Function


class Linear(Function):
    """y = x @ weight^T + bias.   x (..., in), weight (out, in), bias (out,) or absent -> y (..., out).

    With the leading dims flattened to N rows (x2 (N, in), g2 (N, out)):
    dx2 = g2 @ weight,  dweight = g2^T @ x2,  dbias = sum of g2 over the N rows.
    """

    def forward(self, x, weight, bias=None):
        self.x_shape, self.has_bias = x.shape, bias is not None
        self.x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])      # a view when x is contiguous
        self.weight = weight
        y2 = self.x2 @ weight.T                                         # one GEMM for every row
        if bias is not None:
            y2 = y2 + bias
        return y2.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        g2 = g.reshape(self.x2.shape[0], self.weight.shape[0])
        dx = (g2 @ self.weight).reshape(self.x_shape)
        dw = g2.T @ self.x2
        if not self.has_bias:
            return dx, dw
        return dx, dw, g2.sum(axis=0)
