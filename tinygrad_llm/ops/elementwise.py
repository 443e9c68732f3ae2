"""Elementwise ops. Each class is one graph node: forward and hand-written backward.

Notation: ``g`` is dL/d(out); ``unbroadcast`` sums a gradient back down to an input's
shape, the backward of NumPy broadcasting.
"""
from __future__ import annotations

from .. import backend
from ..backend import quiet
from ..function import Function, unbroadcast


class Add(Function):
    """out = a + b.   da = g, db = g (each summed to its input's shape)."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(self.xp, g, self.shapes[0]), unbroadcast(self.xp, g, self.shapes[1])


class Sub(Function):
    """out = a - b.   da = g, db = -g."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        db = unbroadcast(self.xp, -g, self.shapes[1]) if self.needs_input_grad[1] else None
        return unbroadcast(self.xp, g, self.shapes[0]), db


class Mul(Function):
    """out = a * b.   da = g * b, db = g * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        da = unbroadcast(xp, g * b, a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(xp, g * a, b.shape) if self.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """out = a / b.   da = g / b, db = -g * a / b**2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        ga = g / b
        da = unbroadcast(xp, ga, a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(xp, -ga * a / b, b.shape) if self.needs_input_grad[1] else None
        return da, db


class Pow(Function):
    """out = a ** b.   da = g * b * a**(b-1), db = g * out * log(a) (0 where out == 0)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        da = db = None
        if self.needs_input_grad[0]:
            da = unbroadcast(xp, g * b * a ** (b - 1), a.shape)
        if self.needs_input_grad[1]:
            with quiet(xp, divide="ignore", invalid="ignore"):
                logs = xp.where(self.out == 0, 0, xp.log(xp.where(a == 0, 1, a)))
            db = unbroadcast(xp, g * self.out * logs.astype(self.out.dtype), b.shape)
        return da, db


class Neg(Function):
    """out = -x.   dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Exp(Function):
    """out = exp(x).   dx = g * out."""

    def forward(self, x):
        self.out = self.xp.exp(x)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    """out = log(x).   dx = g / x."""

    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    """out = sqrt(x).   dx = g / (2 out)."""

    def forward(self, x):
        self.out = self.xp.sqrt(x)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Tanh(Function):
    """out = tanh(x).   dx = g * (1 - out**2)."""

    def forward(self, x):
        self.out = self.xp.tanh(x)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Sigmoid(Function):
    """out = 1 / (1 + exp(-x)), computed without overflow.   dx = g * out * (1 - out)."""

    def forward(self, x):
        xp = self.xp
        e = xp.exp(-xp.abs(x))                      # in (0, 1]: never overflows
        self.out = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class ReLU(Function):
    """out = max(x, 0), any shape and dtype (integers too, as PyTorch).   dx = g where x > 0,
    else 0 (0 at x == 0; g at NaN, as PyTorch). The package's one ReLU: ``Tensor.relu``,
    ``F.relu`` and ``nn.ReLU``."""

    def forward(self, x):
        self.mask = ~(x <= 0)                       # x > 0, and NaN (whose out is NaN) passes g
        return self.xp.maximum(x, x.dtype.type(0))   # not x * mask: -inf * 0 would be NaN

    def backward(self, g):
        return g * self.mask


def sign(x):
    """-1, 0 or 1 by the sign of x, in x's dtype; 0 for NaN (PyTorch's sign, where NumPy's gives NaN)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


class Abs(Function):
    """out = |x|.   dx = g * sign(x) (0 at x == 0 and at NaN, as PyTorch)."""

    def forward(self, x):
        self.x = x
        return self.xp.abs(x)

    def backward(self, g):
        return g * sign(self.x)


class Maximum(Function):
    """out = maximum(a, b).   The larger input gets g; on a tie each gets g / 2 (where either is
    NaN, out is NaN and both get g, as PyTorch)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, g):
        return _pick_grads(self, g, self.a < self.b, self.b < self.a)


class Minimum(Function):
    """out = minimum(a, b).   The smaller input gets g; on a tie each gets g / 2 (where either is
    NaN, both get g)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.minimum(a, b)

    def backward(self, g):
        return _pick_grads(self, g, self.a > self.b, self.b > self.a)


def _pick_grads(node, g, a_loses, b_loses):
    """Each input's share of g: 0 where it loses, 1/2 on a tie, else 1 (so both get g at a NaN)."""
    xp, a, b = node.xp, node.a, node.b
    tie = a == b
    da = db = None
    if node.needs_input_grad[0]:
        da = unbroadcast(xp, g * xp.where(a_loses, 0.0, xp.where(tie, 0.5, 1.0)).astype(g.dtype), a.shape)
    if node.needs_input_grad[1]:
        db = unbroadcast(xp, g * xp.where(b_loses, 0.0, xp.where(tie, 0.5, 1.0)).astype(g.dtype), b.shape)
    return da, db


class Clip(Function):
    """out = min(max(x, lo), hi).   dx = g where lo <= x <= hi, else 0 (bounds may be None)."""

    def forward(self, x, lo=None, hi=None):
        xp = self.xp
        keep = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            keep &= x >= lo
        if hi is not None:
            keep &= x <= hi
        self.keep = keep
        out = x
        if lo is not None:
            out = xp.maximum(out, xp.asarray(lo, dtype=x.dtype))
        if hi is not None:
            out = xp.minimum(out, xp.asarray(hi, dtype=x.dtype))
        return out if out is not x else x.copy()

    def backward(self, g):
        return g * self.keep


class Where(Function):
    """out = a where cond else b.   da = g where cond, db = g where not cond."""

    def forward(self, cond, a, b):
        self.cond, self.shapes = cond.astype(bool, copy=False), (a.shape, b.shape)
        return self.xp.where(self.cond, a, b)

    def backward(self, g):
        xp, zero = self.xp, g.dtype.type(0)
        da = unbroadcast(xp, xp.where(self.cond, g, zero), self.shapes[0]) if self.needs_input_grad[1] else None
        db = unbroadcast(xp, xp.where(self.cond, zero, g), self.shapes[1]) if self.needs_input_grad[2] else None
        return None, da, db


class MaskedFill(Function):
    """out = value where mask else x (mask broadcasts to x).   dx = g where not mask."""

    def forward(self, x, mask, value=0.0):
        xp = self.xp
        if xp.broadcast_shapes(x.shape, mask.shape) != x.shape:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to "
                             f"the input's shape {x.shape}")
        self.mask = mask.astype(bool, copy=False)
        return xp.where(self.mask, xp.asarray(value, dtype=x.dtype), x)

    def backward(self, g):
        return self.xp.where(self.mask, g.dtype.type(0), g), None


class Cast(Function):
    """out = x converted to another dtype.   dx = g converted back to x's dtype."""

    def forward(self, x, dtype=None):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


class ToDevice(Function):
    """out = x copied to another device.   dx = g copied back."""

    def forward(self, x, device=None):
        self.out_device = device
        if device == "cpu":
            return backend.to_numpy(x)
        xp = backend.xp_for(device)
        return xp.asarray(x)

    def backward(self, g):
        if self.device == "cpu":
            return backend.to_numpy(g)
        return backend.xp_for(self.device).asarray(g)


class Sin(Function):
    """out = sin(x).   dx = g * cos(x)."""

    def forward(self, x):
        self.x = x
        return self.xp.sin(x)

    def backward(self, g):
        return g * self.xp.cos(self.x)


class Cos(Function):
    """out = cos(x).   dx = -g * sin(x)."""

    def forward(self, x):
        self.x = x
        return self.xp.cos(x)

    def backward(self, g):
        return -g * self.xp.sin(self.x)


class Square(Function):
    """out = x * x.   dx = 2 g x."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return 2 * g * self.x


class Rsqrt(Function):
    """out = 1 / sqrt(x).   dx = -g * out**3 / 2 (d x^(-1/2) = -x^(-3/2) / 2)."""

    def forward(self, x):
        with quiet(self.xp, divide="ignore"):        # rsqrt(0) = inf, as PyTorch
            self.out = 1 / self.xp.sqrt(x)
        return self.out

    def backward(self, g):
        return -0.5 * g * self.out * self.out * self.out


LN2 = 0.6931471805599453     # log(2), a Python float: keeps float32 arrays float32


class Log2(Function):
    """out = log2(x).   dx = g / (x log 2)."""

    def forward(self, x):
        self.x = x
        return self.xp.log2(x)

    def backward(self, g):
        return g / (self.x * LN2)


class Exp2(Function):
    """out = 2**x.   dx = g * out * log 2."""

    def forward(self, x):
        self.out = self.xp.exp2(x)
        return self.out

    def backward(self, g):
        return g * self.out * LN2


class _Steps(Function):
    """An op that is piecewise constant (sign, floor, ceil, round): its derivative is 0 wherever
    it exists, and the backward gives 0 everywhere, the jumps included (PyTorch's choice)."""

    def backward(self, g):
        return self.xp.zeros_like(g)


class Sign(_Steps):
    """out = -1, 0 or 1 by the sign of x (0 for NaN, as PyTorch).   dx = 0."""

    def forward(self, x):
        return sign(x)


class Floor(_Steps):
    """out = the largest integer <= x.   dx = 0."""

    def forward(self, x):
        return self.xp.floor(x)


class Ceil(_Steps):
    """out = the smallest integer >= x.   dx = 0."""

    def forward(self, x):
        return self.xp.ceil(x)


class Round(_Steps):
    """out = x rounded to ``decimals`` places, halves to even (as PyTorch and NumPy).   dx = 0."""

    def forward(self, x, decimals=0):
        return self.xp.round(x, decimals)
