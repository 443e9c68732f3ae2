"""Matrix product with NumPy's ``matmul`` semantics (1-D, 2-D, batched, broadcast)."""
from __future__ import annotations

from ..backend import ShapeError
from ..function import Function, unbroadcast


class MatMul(Function):
    """out = a @ b.   da = g @ b^T, db = a^T @ g (summed over broadcast batch dims).

    A 1-D ``a`` is treated as a row (1, n) and a 1-D ``b`` as a column (n, 1); the added
    axis is removed from ``out`` and from the gradients, exactly as NumPy does.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        self.a, self.b = a, b
        return self.xp.matmul(a, b)

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g = g.reshape(1, 1)
        elif a.ndim == 1:
            g = xp.expand_dims(g, -2)
        elif b.ndim == 1:
            g = xp.expand_dims(g, -1)
        da = db = None
        if self.needs_input_grad[0]:
            da = unbroadcast(xp, xp.matmul(g, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            db = unbroadcast(xp, xp.matmul(xp.swapaxes(a2, -1, -2), g), b2.shape).reshape(b.shape)
        return da, db
