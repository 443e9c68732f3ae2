"""LayerNorm and RMSNorm over the trailing dims, each one graph node.

Both work on x viewed as rows: x2 (N, D), where D is the product of the normalised
(trailing) dims and N the product of the others. weight and bias (optional) hold D
values. The backward passes recompute xhat from the saved per-row statistics (two
numbers per row) instead of keeping a second (N, D) array alive between the passes.
"""
from __future__ import annotations

import math

import numpy as np

from ..function import Function
from .softmax import rowdot


def _colsum_of_product(xp, a, b):
    """sum over rows of a * b, (N, D) x (N, D) -> (D,), without the (a * b) temporary."""
    if xp is np:
        return np.einsum("ij,ij->j", a, b)
    return (a * b).sum(axis=0)


class _Norm(Function):
    """Shared plumbing: flatten to rows, unpack the optional weight / bias."""

    def _setup(self, x, params, has_weight, has_bias, ndim):
        if x.dtype.kind != "f":
            raise TypeError(f"{self.name}: input must be floating point, got {x.dtype}")
        if not 1 <= ndim <= x.ndim:
            raise ValueError(f"{self.name}: cannot normalise the last {ndim} dims of a tensor of shape {x.shape}")
        self.shape, self.nd = x.shape, ndim
        D = math.prod(x.shape[x.ndim - ndim:])
        x2 = x.reshape(-1, D) if D else x.reshape(math.prod(x.shape[:x.ndim - ndim]), 0)
        params = list(params)
        w = params.pop(0).reshape(D) if has_weight else None
        b = params.pop(0).reshape(D) if has_bias else None
        self.has_weight, self.has_bias = has_weight, has_bias
        return x2, w, b, D

    def _grads(self, dx, dw, db):
        out = [dx.reshape(self.shape) if dx is not None else None]
        pshape = self.shape[len(self.shape) - self.nd:]
        if self.has_weight:
            out.append(dw.reshape(pshape) if dw is not None else None)
        if self.has_bias:
            out.append(db.reshape(pshape) if db is not None else None)
        return tuple(out)


class LayerNorm(_Norm):
    """y = xhat * weight + bias, xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) per row.

    x (..., *normalized_shape); weight, bias (*normalized_shape) or absent; var is biased (/ D).
    dxhat = g * weight;  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
    dweight = sum over rows of g * xhat;  dbias = sum over rows of g.
    """

    def forward(self, x, *params, has_weight=True, has_bias=True, eps=1e-5, ndim=1):
        xp = self.xp
        x2, w, b, D = self._setup(x, params, has_weight, has_bias, ndim)
        mean = x2.mean(axis=1, keepdims=True)
        y = x2 - mean                                  # (N, D), ours from here on: reused for y
        var = rowdot(xp, y, y, 1)
        var /= D
        var += eps
        rstd = xp.sqrt(var, out=var)
        xp.reciprocal(rstd, out=rstd)                  # (N, 1)
        y *= rstd                                      # xhat
        if w is not None:
            y *= w
        if b is not None:
            y += b
        self.x2, self.mean, self.rstd, self.w = x2, mean, rstd, w
        return y.reshape(x.shape)

    def backward(self, g):
        xp = self.xp
        x2, rstd, w = self.x2, self.rstd, self.w
        need_x, need_w, need_b = (list(self.needs_input_grad) + [False, False])[:3]
        if not self.has_weight:
            need_b, need_w = need_w, False
        g2 = g.reshape(x2.shape)
        xhat = x2 - self.mean
        xhat *= rstd
        dw = _colsum_of_product(xp, g2, xhat) if need_w else None
        db = g2.sum(axis=0) if need_b else None
        dx = None
        if need_x:
            D = x2.shape[1]
            dxhat = g2 * w if w is not None else g2
            mean_dxhat = dxhat.mean(axis=1, keepdims=True)
            mean_dxhat_xhat = rowdot(xp, dxhat, xhat, 1)
            mean_dxhat_xhat /= D
            xhat *= mean_dxhat_xhat                    # xhat's buffer now holds
            xhat += mean_dxhat                         #   mean(dxhat) + xhat * mean(dxhat * xhat)
            dx = xp.subtract(dxhat, xhat, out=xhat)
            dx *= rstd
        return self._grads(dx, dw, db)


class RMSNorm(_Norm):
    """y = xhat * weight, xhat = x * rrms, rrms = 1 / sqrt(mean(x^2) + eps) per row.

    x (..., *normalized_shape); weight (*normalized_shape) or absent.
    dxhat = g * weight;  dx = rrms * (dxhat - xhat * mean(dxhat * xhat));  dweight = sum over rows of g * xhat.
    """

    def forward(self, x, *params, has_weight=True, eps=1e-6, ndim=1):
        xp = self.xp
        x2, w, _, D = self._setup(x, params, has_weight, False, ndim)
        ms = rowdot(xp, x2, x2, 1)
        ms /= D
        ms += eps
        rrms = xp.sqrt(ms, out=ms)
        xp.reciprocal(rrms, out=rrms)                  # (N, 1)
        y = x2 * rrms                                  # xhat
        if w is not None:
            y *= w
        self.x2, self.rrms, self.w = x2, rrms, w
        return y.reshape(x.shape)

    def backward(self, g):
        xp = self.xp
        x2, rrms, w = self.x2, self.rrms, self.w
        need_x = self.needs_input_grad[0]
        need_w = self.has_weight and self.needs_input_grad[1]
        g2 = g.reshape(x2.shape)
        xhat = x2 * rrms
        dw = _colsum_of_product(xp, g2, xhat) if need_w else None
        dx = None
        if need_x:
            dxhat = g2 * w if w is not None else g2
            mean_dxhat_xhat = rowdot(xp, dxhat, xhat, 1)
            mean_dxhat_xhat /= x2.shape[1]
            xhat *= mean_dxhat_xhat
            dx = xp.subtract(dxhat, xhat, out=xhat)
            dx *= rrms
        return self._grads(dx, dw, None)
