"""The fully connected layer as one graph node: y = x @ W^T + b, as a single 2-D GEMM."""
from __future__ import annotations

import math

from ..function import Function


def blas_ready(xp, a):
    """``a`` itself when BLAS can read it as a matrix (C or Fortran order), else a C-order copy.

    NumPy's matmul falls back to a slow non-BLAS loop for other strides (e.g. a broadcast
    gradient, whose strides are 0).
    """
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a
    return xp.ascontiguousarray(a)


class Linear(Function):
    """y = x @ weight^T + bias.   x (..., in), weight (out, in), bias (out,) -> y (..., out).

    With the leading dims flattened to N rows (x2 (N, in), g2 (N, out)):
    dx2 = g2 @ weight,  dweight = g2^T @ x2,  dbias = sum of g2 over the N rows.
    """

    def forward(self, x, weight, bias=None):
        xp = self.xp
        if weight.ndim != 2:
            raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
        out_f, in_f = weight.shape
        if x.ndim == 0 or x.shape[-1] != in_f:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {weight.shape}: "
                             f"expected the last dimension to be in_features={in_f}")
        if bias is not None and bias.shape != (out_f,):
            raise ValueError(f"linear: bias must have shape ({out_f},) to match weight {weight.shape}, "
                             f"got {bias.shape}")
        self.x_shape, self.has_bias = x.shape, bias is not None
        self.x2 = blas_ready(xp, x.reshape(math.prod(x.shape[:-1]), in_f))  # a view unless x is oddly strided
        self.weight = weight
        y2 = self.x2 @ weight.T                           # one GEMM (BLAS reads weight.T in place)
        if bias is not None:
            y2 += bias                                    # y2 is ours: add in place
        return y2.reshape(x.shape[:-1] + (out_f,))

    def backward(self, g):
        xp = self.xp
        g2 = blas_ready(xp, g.reshape(self.x2.shape[0], self.weight.shape[0]))
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dx = (g2 @ self.weight).reshape(self.x_shape)
        if self.needs_input_grad[1]:
            dw = g2.T @ self.x2
        if not self.has_bias:
            return dx, dw
        if self.needs_input_grad[2]:
            db = g2.sum(axis=0)
        return dx, dw, db
