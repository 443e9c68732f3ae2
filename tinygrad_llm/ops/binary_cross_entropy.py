"""Binary cross-entropy, each one graph node: on probabilities and on logits (PyTorch's formulas).

Elementwise losses, then the reduction: "mean" (over all elements), "sum" or "none". The
per-element gradient ``gl`` is g broadcast back (divided by the count for "mean"). The
derivations are in docs/backprop.md, section "Binary cross-entropy".
"""
from __future__ import annotations

from ..backend import quiet
from ..function import Function

LOG_FLOOR = -100.0     # PyTorch clamps each log at -100, so p = 0 or 1 gives a finite loss
EPS = 1e-12            # PyTorch's floor of p (1 - p) in the gradient


def _reduce(L, reduction):
    if reduction == "none":
        return L
    return L.sum() if reduction == "sum" else L.mean()


def _spread(xp, g, shape, reduction):
    """d loss / d L, of the per-element losses' shape."""
    if reduction == "none":
        return g
    n = 1
    for s in shape:
        n *= s
    return xp.broadcast_to(g / g.dtype.type(n) if reduction == "mean" else g, shape)


class BinaryCrossEntropy(Function):
    """L = -w (t log p + (1 - t) log(1 - p)), each log clamped at -100; p and t of one shape.

    dp = gl * w * (p - t) / max(p (1 - p), 1e-12)     (PyTorch's formula, finite at p = 0, 1)
    dt = gl * w * (log(1 - p) - log p)                 (the clamped logs)
    ``weight`` (broadcasting to p) is a constant.
    """

    def forward(self, p, t, weight=None, reduction="mean"):
        xp = self.xp
        self.p, self.t, self.w, self.reduction = p, t, weight, reduction
        with quiet(xp, divide="ignore"):                           # log(0) = -inf, then clamped
            self.log_p = xp.maximum(xp.log(p), LOG_FLOOR)
            self.log_q = xp.maximum(xp.log1p(-p), LOG_FLOOR)
        L = -(t * self.log_p + (1 - t) * self.log_q)
        if weight is not None:
            L = L * weight
        return _reduce(L, reduction)

    def backward(self, g):
        xp, p, t, w = self.xp, self.p, self.t, self.w
        gl = _spread(xp, g, p.shape, self.reduction)
        if w is not None:
            gl = gl * w
        dp = gl * (p - t) / xp.maximum(p * (1 - p), EPS) if self.needs_input_grad[0] else None
        dt = gl * (self.log_q - self.log_p) if self.needs_input_grad[1] else None
        return dp, dt


class BinaryCrossEntropyWithLogits(Function):
    """L = w ((1 - t) x + c softplus(-x)),  c = 1 + (pos_weight - 1) t  (c = 1 without pos_weight),

    softplus(-x) = log(1 + exp(-x)) = max(-x, 0) + log1p(exp(-|x|)), which never overflows.
    With d softplus(-x) / dx = -sigmoid(-x) = sigmoid(x) - 1:
    dx = gl * w * ((1 - t) + c (sigmoid(x) - 1))   (= gl * w * (sigmoid(x) - t) when c = 1)
    dt = gl * w * (-x + (pos_weight - 1) softplus(-x))
    ``weight`` (broadcasting to x) and ``pos_weight`` (broadcasting along the last axis) are constants.
    """

    def forward(self, x, t, weight=None, pos_weight=None, reduction="mean"):
        xp = self.xp
        self.x, self.t, self.w, self.pw, self.reduction = x, t, weight, pos_weight, reduction
        e = xp.exp(-xp.abs(x))                                      # in (0, 1]
        self.sp = xp.maximum(-x, 0) + xp.log1p(e)                    # softplus(-x)
        self.sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))        # sigmoid(x)
        self.c = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
        L = (1 - t) * x + self.c * self.sp
        if weight is not None:
            L = L * weight
        return _reduce(L, reduction)

    def backward(self, g):
        xp, x, t = self.xp, self.x, self.t
        gl = _spread(xp, g, x.shape, self.reduction)
        if self.w is not None:
            gl = gl * self.w
        dx = gl * ((1 - t) + self.c * (self.sig - 1)) if self.needs_input_grad[0] else None
        dt = None
        if self.needs_input_grad[1]:
            dt = gl * (-x if self.pw is None else -x + (self.pw - 1) * self.sp)
        return dx, dt
