"""LayerNorm and RMSNorm over the trailing dims, each one graph node.

Both work on x viewed as rows: x2 (N, D), where D is the product of the normalised
(trailing) dims and N the product of the others. weight and bias (optional) hold D
values. LayerNorm keeps xhat for its backward (which then needs no pass to rebuild it
from x, the mean and the variance); RMSNorm keeps x and one number per row and rebuilds
xhat = x * rrms, a single pass. On CPU the rows are split into one chunk per core (``parallel.parallel_for``); the
weight and bias gradients are then summed chunk by chunk, in row order.
"""
from __future__ import annotations

import math

import numpy as np

from ..function import Function
from ..parallel import parallel_for
from .softmax import rowdot


def _sum_parts(xp, parts, D, dtype):
    """The (D,) column sums computed chunk by chunk (``{first row: partial sum}``), added in row order."""
    if not parts:                                      # no rows at all
        return xp.zeros(D, dtype=dtype)
    keys = sorted(parts)
    total = parts[keys[0]]
    for k in keys[1:]:
        total += parts[k]
    return total


def _rowsum(xp, a):
    """(N, D) -> (N, 1) row sums. On CPU via einsum: faster than ``a.sum(axis=1)`` over short
    rows, and, unlike a BLAS matrix-vector product, each row's result does not depend on
    how many rows are in the call (so threaded and inline runs agree bit for bit)."""
    if xp is np:
        return np.einsum("ij->i", a)[:, None]
    return a.sum(axis=1, keepdims=True)


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
    The backward reads xhat, kept from the forward (x itself is not needed), so it makes
    no pass to recompute it.
    """

    def forward(self, x, *params, has_weight=True, has_bias=True, eps=1e-5, ndim=1):
        xp = self.xp
        x2, w, b, D = self._setup(x, params, has_weight, has_bias, ndim)
        N = x2.shape[0]
        affine = w is not None or b is not None
        xhat = xp.empty_like(x2)
        y = xp.empty_like(x2) if affine else xhat
        rstd = xp.empty((N, 1), dtype=x2.dtype)

        def rows(lo, hi):
            xr, hr, rr = x2[lo:hi], xhat[lo:hi], rstd[lo:hi]
            mean = _rowsum(xp, xr)
            mean /= D
            xp.subtract(xr, mean, out=hr)              # x - mean
            var = rowdot(xp, hr, hr, 1)
            var /= D
            var += eps
            xp.sqrt(var, out=rr)
            xp.reciprocal(rr, out=rr)                  # (rows, 1)
            hr *= rr                                   # xhat
            if affine:
                yr = y[lo:hi]
                if w is not None:
                    xp.multiply(hr, w, out=yr)
                    if b is not None:
                        yr += b
                else:
                    xp.add(hr, b, out=yr)

        parallel_for(rows, N, xp=xp, work_per_item=D)  # rows are independent: one chunk per core
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return y.reshape(x.shape)

    def backward(self, g):
        xp = self.xp
        xhat, rstd, w = self.xhat, self.rstd, self.w
        need_x, need_w, need_b = (list(self.needs_input_grad) + [False, False])[:3]
        if not self.has_weight:
            need_b, need_w = need_w, False
        g2 = g.reshape(xhat.shape)
        N, D = xhat.shape
        out = xp.empty_like(xhat) if need_x else None  # dx
        dw_parts, db_parts = {}, {}

        def rows(lo, hi):
            gr, hr = g2[lo:hi], xhat[lo:hi]
            if need_w:
                dw_parts[lo] = _colsum_of_product(xp, gr, hr)
            if need_b:
                db_parts[lo] = gr.sum(axis=0)
            if need_x:
                dx = out[lo:hi]
                if w is not None:
                    xp.multiply(gr, w, out=dx)             # dxhat
                else:
                    dx[...] = gr
                mean_dxhat = _rowsum(xp, dx)
                mean_dxhat /= D
                c = rowdot(xp, dx, hr, 1)                  # sum(dxhat * xhat)
                c /= D
                dx -= mean_dxhat                           # dxhat - mean(dxhat)
                dx -= xp.multiply(hr, c)                   #   - xhat * mean(dxhat * xhat)
                dx *= rstd[lo:hi]

        parallel_for(rows, N, xp=xp, work_per_item=D)  # rows are independent: one chunk per core
        dw = _sum_parts(xp, dw_parts, D, xhat.dtype) if need_w else None
        db = _sum_parts(xp, db_parts, D, xhat.dtype) if need_b else None
        return self._grads(out, dw, db)


class RMSNorm(_Norm):
    """y = xhat * weight, xhat = x * rrms, rrms = 1 / sqrt(mean(x^2) + eps) per row.

    x (..., *normalized_shape); weight (*normalized_shape) or absent.
    dxhat = g * weight;  dx = rrms * (dxhat - xhat * mean(dxhat * xhat));  dweight = sum over rows of g * xhat.
    """

    def forward(self, x, *params, has_weight=True, eps=1e-6, ndim=1):
        xp = self.xp
        x2, w, _, D = self._setup(x, params, has_weight, False, ndim)
        N = x2.shape[0]
        y = xp.empty_like(x2)
        rrms = xp.empty((N, 1), dtype=x2.dtype)

        def rows(lo, hi):
            xr, yr, rr = x2[lo:hi], y[lo:hi], rrms[lo:hi]
            ms = rowdot(xp, xr, xr, 1)
            ms /= D
            ms += eps
            xp.sqrt(ms, out=rr)
            xp.reciprocal(rr, out=rr)                  # (rows, 1)
            xp.multiply(xr, rr, out=yr)                # xhat
            if w is not None:
                yr *= w

        parallel_for(rows, N, xp=xp, work_per_item=D)  # rows are independent: one chunk per core
        self.x2, self.rrms, self.w = x2, rrms, w
        return y.reshape(x.shape)

    def backward(self, g):
        xp = self.xp
        x2, rrms, w = self.x2, self.rrms, self.w
        need_x = self.needs_input_grad[0]
        need_w = self.has_weight and self.needs_input_grad[1]
        g2 = g.reshape(x2.shape)
        N, D = x2.shape
        out = xp.empty_like(x2)                        # xhat, then dx
        dw_parts = {}

        def rows(lo, hi):
            gr = g2[lo:hi]
            xhat = xp.multiply(x2[lo:hi], rrms[lo:hi], out=out[lo:hi])
            if need_w:
                dw_parts[lo] = _colsum_of_product(xp, gr, xhat)
            if need_x:
                dxhat = gr * w if w is not None else gr
                mean_dxhat_xhat = rowdot(xp, dxhat, xhat, 1)
                mean_dxhat_xhat /= D
                xhat *= mean_dxhat_xhat
                dx = xp.subtract(dxhat, xhat, out=xhat)
                dx *= rrms[lo:hi]

        parallel_for(rows, N, xp=xp, work_per_item=D)  # rows are independent: one chunk per core
        dw = _sum_parts(xp, dw_parts, D, x2.dtype) if need_w else None
        return self._grads(out if need_x else None, dw, None)
