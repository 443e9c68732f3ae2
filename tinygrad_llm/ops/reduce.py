"""Reductions over one or more axes. ``axis`` is None (all), an int or a tuple of ints
(negative counts from the end); ``keepdims`` keeps reduced axes as size 1.

Every backward first puts the reduced axes back as size 1 (``_expand``), so that ``g``
broadcasts against the input.
"""
from __future__ import annotations

import operator

from ..function import Function


def normalize_axes(axis, ndim: int) -> tuple:
    """A sorted tuple of non-negative axes; every axis for None; IndexError when out of range."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        try:
            a = operator.index(a)   # ints and NumPy integers; not floats
        except TypeError:
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}") from None
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor with {ndim} dimension(s)")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(out)) if ndim else ()


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
    """max / min. Ties: the gradient is split evenly among all tied elements."""

    pick = None  # "max" or "min"

    def forward(self, x, axis=None, keepdims=False):
        if x.size == 0:
            raise ValueError(f"{self.pick}() of an empty tensor (shape {x.shape})")
        self.x, self.keepdims = x, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        self.out = getattr(x, self.pick)(axis=self.axes, keepdims=True)
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        hit = (self.x == self.out)
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
        with self._quiet():
            out = (self.centered * self.centered).sum(axis=self.axes, keepdims=keepdims) / self.denom
        return out

    def backward(self, g):
        g = _expand(g, self.in_shape, self.axes, self.keepdims)
        with self._quiet():
            return g * (2 * self.centered / self.denom)

    def _quiet(self):
        from .elementwise import _quiet  # noqa: PLC0415
        return _quiet(self.xp)


class LogSumExp(Function):
    """out = m + log(sum(exp(x - m))), m = max(x) (stable).   dx = g * exp(x - out) = g * softmax(x)."""

    def forward(self, x, axis=None, keepdims=False):
        xp = self.xp
        self.x, self.keepdims = x, keepdims
        self.axes = normalize_axes(axis, x.ndim)
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, x.dtype.type(0))     # rows of -inf stay -inf, no NaN
        with self._quiet():                                   # log(0) = -inf for those rows
            self.out = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        return self.out if keepdims else self.out.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        xp = self.xp
        g = _expand(g, self.x.shape, self.axes, self.keepdims)
        # a row that is all -inf has out = -inf and x - out = NaN: give it gradient 0 instead
        out = xp.where(xp.isneginf(self.out), self.out.dtype.type(0), self.out)
        return g * xp.exp(self.x - out)

    def _quiet(self):
        from .elementwise import _quiet  # noqa: PLC0415
        return _quiet(self.xp)
