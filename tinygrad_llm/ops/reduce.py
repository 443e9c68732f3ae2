"""Reductions over one or more axes. ``axis`` is None (all), an int or a tuple of ints
(negative counts from the end); ``keepdims`` keeps reduced axes as size 1.

Every backward first puts the reduced axes back as size 1 (``_expand``), so that ``g``
broadcasts against the input.
"""
from __future__ import annotations

import operator

from ..backend import ArgumentError, quiet
from ..function import Function


def normalize_axis(axis, ndim: int, op: str | None = None) -> int:
    """One axis as an int in [0, ndim) (negative counts from the end); TypeError for a
    non-integer, IndexError naming ``op`` when it is out of range."""
    where = f"{op}: " if op else ""
    if isinstance(axis, bool):
        raise TypeError(f"{where}axis must be an int, got {axis!r}")
    try:
        axis = operator.index(axis)     # ints and NumPy integers; not floats
    except TypeError:
        raise TypeError(f"{where}axis must be an int, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise IndexError(f"{where}axis {axis} is out of range for a tensor with {ndim} dimension(s)")
    return axis % ndim


def normalize_axes(axis, ndim: int) -> tuple:
    """A sorted tuple of non-negative axes; every axis for None. A 0-d tensor accepts axis
    0 and -1, as in PyTorch (and reduces nothing)."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = [normalize_axis(a, max(ndim, 1)) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(out)) if ndim else ()


def shift_of(xp, x, axes):
    """The max of x over ``axes`` (keepdims), with infinite maxima replaced by 0.

    Subtracted before ``exp`` (softmax, log-softmax, logsumexp), it keeps every exponent
    <= 0. A row that is all -inf (fully masked) then stays -inf and exponentiates to 0
    instead of giving -inf - (-inf) = NaN; a row holding +inf keeps it.
    """
    if x.size == 0:                       # nothing to shift (and max() of nothing would raise)
        return x.sum(axis=axes, keepdims=True)
    m = x.max(axis=axes, keepdims=True)
    return xp.where(xp.isinf(m), x.dtype.type(0), m)


def _expand(g, in_shape, axes, keepdims):
    """Reshape the reduced gradient so it broadcasts against the input."""
    if keepdims:
        return g
    shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
    return g.reshape(shape)


class Sum(Function):
    """out = sum of x over axes.   dx = g broadcast back over the reduced axes."""

    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.keepdims = x.shape, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        return self.xp.broadcast_to(_expand(g, self.in_shape, self.axes, self.keepdims), self.in_shape)


class Mean(Function):
    """out = mean of x over axes (N elements each).   dx = g / N broadcast back."""

    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.keepdims = x.shape, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        self.n = 1
        for a in self.axes:
            self.n *= x.shape[a]
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        g = _expand(g, self.in_shape, self.axes, self.keepdims) / g.dtype.type(self.n)
        return self.xp.broadcast_to(g, self.in_shape)


class _Extreme(Function):
    """max / min. Ties: the gradient is split evenly among all tied elements (a slice holding
    NaN has max NaN: its NaN elements share the gradient, as PyTorch)."""

    pick = None  # "max" or "min"

    def forward(self, x, axis=None, keepdims=False):
        self.x, self.keepdims = x, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        if x.size == 0 and axis is None:       # PyTorch's classes: RuntimeError here, IndexError below
            raise ArgumentError(f"{self.pick}() of an empty tensor (shape {x.shape}): there is no extreme of nothing")
        if any(x.shape[a] == 0 for a in self.axes):
            raise IndexError(f"{self.pick}() over an empty dim (shape {x.shape}, dims {self.axes})")
        self.out = getattr(x, self.pick)(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        xp = self.xp
        hit = (self.x == self.out) | (xp.isnan(self.x) & xp.isnan(self.out))   # a NaN slice: its NaNs
        count = hit.sum(axis=self.axes, keepdims=True)
        g = _expand(g, self.x.shape, self.axes, self.keepdims)
        return hit * (g / count.astype(g.dtype))


class Max(_Extreme):
    """out = max of x over axes.   dx = g at the maximum (split evenly among ties), else 0."""

    pick = "max"


class Min(_Extreme):
    """out = min of x over axes.   dx = g at the minimum (split evenly among ties), else 0."""

    pick = "min"


class Var(Function):
    """out = sum((x - mean)**2) / (N - correction).   dx = g * 2 (x - mean) / (N - correction)."""

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.axes = normalize_axes(axis, x.ndim)
        self.in_shape, self.keepdims = x.shape, keepdims
        n = 1
        for a in self.axes:
            n *= x.shape[a]
        self.denom = x.dtype.type(max(n - correction, 0))
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        with quiet(self.xp, divide="ignore", invalid="ignore"):   # N - correction = 0: inf / nan, as NumPy
            out = (self.centered * self.centered).sum(axis=self.axes, keepdims=keepdims) / self.denom
        return out

    def backward(self, g):
        g = _expand(g, self.in_shape, self.axes, self.keepdims)
        with quiet(self.xp, divide="ignore", invalid="ignore"):
            return g * (2 * self.centered / self.denom)


class LogSumExp(Function):
    """out = m + log(sum(exp(x - m))), m = max(x) (stable).   dx = g * exp(x - out) = g * softmax(x).

    A row that is all -inf gives out = -inf (log of 0, the true value) and gradient 0: the
    package's one convention for fully masked rows, softmax P = 0 (see ops/softmax.py).
    """

    def forward(self, x, axis=None, keepdims=False):
        xp = self.xp
        self.x, self.keepdims = x, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        m = shift_of(xp, x, self.axes)
        with quiet(xp, divide="ignore"):                      # log(0) = -inf for all -inf rows
            self.out = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        xp = self.xp
        g = _expand(g, self.x.shape, self.axes, self.keepdims)
        # a row that is all -inf has out = -inf and x - out = NaN: give it gradient 0 instead
        out = xp.where(xp.isneginf(self.out), self.out.dtype.type(0), self.out)
        return g * xp.exp(self.x - out)


class Std(Var):
    """out = sqrt(var), var as in ``Var``.   dx = Var's backward of dvar = g / (2 out).

    Where out == 0 (every element of the slice equal) std has no derivative (it is the tip
    of a cone, |t| std(v) along any direction v); the backward takes 0 there, the smallest
    of its subgradients. PyTorch gives NaN.
    """

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.out = self.xp.sqrt(super().forward(x, axis, keepdims, correction))
        return self.out

    def backward(self, g):
        xp, out = self.xp, self.out
        flat = out == 0
        dvar = xp.where(flat, g.dtype.type(0), g / (2 * xp.where(flat, out.dtype.type(1), out)))
        return super().backward(dvar)


class CumSum(Function):
    """out[i] = x[0] + x[1] + ... + x[i] along ``axis``.

    Each x[j] is counted in out[j], out[j+1], ..., so dx[j] = g[j] + g[j+1] + ... + g[n-1]:
    the cumulative sum of g taken from the end (flip, cumsum, flip back).
    """

    def forward(self, x, axis=0):
        self.axis = axis
        return self.xp.cumsum(x, axis=axis)

    def backward(self, g):
        xp, axis = self.xp, self.axis
        return xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis)
