"""LayerNorm and RMSNorm over the trailing dims, each one graph node.

Both work on x viewed as rows: x2 (N, D), where D is the product of the normalised
(trailing) dims and N the product of the others; weight and bias (optional) hold D
values. Derivations: docs/backprop.md, sections "LayerNorm" and "RMSNorm", with the
same names. The fast CPU kernels are in ``kernels/cpu.py``.

float16 input: the rows are widened to float32, so the statistics (a mean of squares
overflows float16 beyond |x| = 256) and all the row math are float32, and the output is
rounded back to float16 (also with float32 weights: mixed precision, amp.autocast).
"""
from __future__ import annotations

import math

import numpy as np

from ..function import Function


class _Norm(Function):
    """Shared plumbing: flatten to rows, unpack the optional weight / bias, shape the gradients."""

    def _rows(self, x, params, has_weight, has_bias, ndim):
        """x as rows x2 (N, D), and weight / bias as (D,) arrays or None."""
        self.shape, self.nd = x.shape, ndim
        D = math.prod(x.shape[x.ndim - ndim:])
        x2 = x.reshape(math.prod(x.shape[:x.ndim - ndim]), D)
        self.half = x.dtype == np.float16
        if self.half:                                  # float16: the statistics in float32
            x2 = x2.astype(np.float32)
        params = list(params)
        w = params.pop(0).reshape(D) if has_weight else None
        b = params.pop(0).reshape(D) if has_bias else None
        self.has_weight, self.has_bias = has_weight, has_bias
        return x2, w, b

    def _out(self, y):
        """y in the input's shape; rounded back to float16 for a float16 input."""
        y = y.reshape(self.shape)
        return y.astype(np.float16) if self.half else y

    def _rows_of(self, g, like):
        """The incoming gradient as rows of ``like``'s shape; widened to float32 for a float16 input."""
        g2 = g.reshape(like.shape)
        return g2.astype(np.float32) if self.half else g2

    def _grads(self, dx, dw, db):
        """(dx, dweight, dbias) in the inputs' shapes, leaving out the absent parameters."""
        out = [dx.reshape(self.shape) if dx is not None else None]
        pshape = self.shape[len(self.shape) - self.nd:]
        if self.has_weight:
            out.append(dw.reshape(pshape) if dw is not None else None)
        if self.has_bias:
            out.append(db.reshape(pshape) if db is not None else None)
        return tuple(out)

    def _needs(self):
        """(need dx, need dweight, need dbias), whichever parameters are present."""
        need = list(self.needs_input_grad)
        need_x = need.pop(0)
        need_w = need.pop(0) if self.has_weight else False
        need_b = need.pop(0) if self.has_bias else False
        return need_x, need_w, need_b


class LayerNorm(_Norm):
    """y = xhat * weight + bias,  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps), per row.

    x (..., *normalized_shape), weight and bias (*normalized_shape) or absent; the last
    ``ndim`` dims are normalised. var is biased (/ D). Saved: xhat (N, D), rstd (N, 1).
    dxhat = g * weight;  dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat),
    mean_dxhat = mean(dxhat), mean_dxhat_xhat = mean(dxhat * xhat) per row;
    dweight = sum over rows of g * xhat;  dbias = sum over rows of g.
    """

    def forward(self, x, *params, has_weight=True, has_bias=True, eps=1e-5, ndim=1):
        x2, w, b = self._rows(x, params, has_weight, has_bias, ndim)
        mean = x2.mean(axis=1, keepdims=True)
        var = ((x2 - mean) ** 2).mean(axis=1, keepdims=True)      # two passes: no cancellation
        rstd = 1.0 / self.xp.sqrt(var + eps)                        # (N, 1)
        xhat = (x2 - mean) * rstd
        y = xhat
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return self._out(y)

    def backward(self, g):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        need_x, need_w, need_b = self._needs()
        g2 = self._rows_of(g, xhat)
        dx = dw = db = None
        if need_x:
            dxhat = g2 * w if w is not None else g2
            mean_dxhat = dxhat.mean(axis=1, keepdims=True)
            mean_dxhat_xhat = (dxhat * xhat).mean(axis=1, keepdims=True)
            dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)
        if need_w:
            dw = (g2 * xhat).sum(axis=0)
        if need_b:
            db = g2.sum(axis=0)
        return self._grads(dx, dw, db)


class RMSNorm(_Norm):
    """y = xhat * weight,  xhat = x * rrms,  rrms = 1 / sqrt(mean(x^2) + eps), per row.

    x (..., *normalized_shape), weight (*normalized_shape) or absent. Saved: x2 (N, D)
    and rrms (N, 1); xhat is rebuilt from them in the backward.
    dxhat = g * weight;  dx = rrms * (dxhat - xhat * mean_dxhat_xhat),
    mean_dxhat_xhat = mean(dxhat * xhat) per row;  dweight = sum over rows of g * xhat.
    """

    def forward(self, x, *params, has_weight=True, eps=1e-6, ndim=1):
        x2, w, _ = self._rows(x, params, has_weight, False, ndim)
        ms = (x2 * x2).mean(axis=1, keepdims=True)
        rrms = 1.0 / self.xp.sqrt(ms + eps)                         # (N, 1)
        xhat = x2 * rrms
        y = xhat * w if w is not None else xhat
        self.x2, self.rrms, self.w = x2, rrms, w
        return self._out(y)

    def backward(self, g):
        x2, rrms, w = self.x2, self.rrms, self.w
        need_x, need_w, _ = self._needs()
        g2 = self._rows_of(g, x2)
        xhat = x2 * rrms
        dx = dw = None
        if need_x:
            dxhat = g2 * w if w is not None else g2
            mean_dxhat_xhat = (dxhat * xhat).mean(axis=1, keepdims=True)
            dx = rrms * (dxhat - xhat * mean_dxhat_xhat)
        if need_w:
            dw = (g2 * xhat).sum(axis=0)
        return self._grads(dx, dw, None)
