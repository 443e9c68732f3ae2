"""Activation functions, each one graph node: GELU (exact and tanh forms), ReLU, SiLU."""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ..function import Function
from .erf import erf

GELU_APPROXIMATIONS = ("none", "tanh")

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # Python floats: they keep float32 arrays float32
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_A = 0.044715


def _no_overflow_warning(xp):
    """exp(large) -> inf is expected below (it turns into a correct 0); keep NumPy quiet about it."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()


def _check_float(x, op):
    if x.dtype.kind != "f":
        raise TypeError(f"{op} needs a floating-point tensor, got {x.dtype}")


class GELU(Function):
    """y = x * Phi(x), Phi the standard normal CDF; any shape.

    approximate="none": Phi(x) = cdf = 0.5 * (1 + erf(x / sqrt(2))),  dx = g * (cdf + x * pdf(x)),
        pdf(x) = exp(-x^2 / 2) / sqrt(2 pi).
    approximate="tanh": y = 0.5 * x * (1 + tanh(u)) = x * s,  u = sqrt(2/pi) * (x + 0.044715 x^3),
        s = 0.5 * (1 + tanh(u)) = 1 / (1 + exp(-2u))  (the same number, without 1 + tanh's cancellation),
        dx = g * s * (1 + x * (1 - s) * 2 du/dx),  du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 x^2).
    """

    def forward(self, x, approximate="none"):
        if approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        _check_float(x, "gelu")
        xp = self.xp
        self.shape = x.shape
        x = xp.atleast_1d(x)          # a 0-d view would turn into NumPy scalars, which have no out=
        self.x, self.approximate = x, approximate
        if approximate == "none":
            cdf = erf(x * INV_SQRT_2, xp)
            cdf += 1.0
            cdf *= 0.5
            self.cdf = cdf
            return (x * cdf).reshape(self.shape)
        s = x * x
        s *= -2.0 * SQRT_2_OVER_PI * GELU_A
        s -= 2.0 * SQRT_2_OVER_PI
        s *= x                                   # -2u
        with _no_overflow_warning(xp):
            xp.exp(s, out=s)                     # inf for very negative x: s becomes exactly 0 below
        s += 1.0
        xp.reciprocal(s, out=s)                  # s = 1 / (1 + exp(-2u))
        self.s = s
        return (x * s).reshape(self.shape)

    def backward(self, g):
        xp, x = self.xp, self.x
        d = x * x
        if self.approximate == "none":
            d *= -0.5
            xp.exp(d, out=d)
            d *= INV_SQRT_2PI                    # pdf(x)
            d *= x
            d += self.cdf
        else:
            s = self.s
            d *= 6.0 * SQRT_2_OVER_PI * GELU_A
            d += 2.0 * SQRT_2_OVER_PI
            d *= x                               # x * 2 du/dx
            d *= xp.subtract(1.0, s)
            d += 1.0
            d *= s
        d *= g.reshape(x.shape)
        return d.reshape(self.shape)


class ReLU(Function):
    """y = max(x, 0); any shape.   dx = g where x > 0, else 0 (also 0 at x == 0)."""

    def forward(self, x):
        _check_float(x, "relu")
        self.mask = x > 0
        return self.xp.maximum(x, 0)

    def backward(self, g):
        return g * self.mask


class SiLU(Function):
    """y = x * sig, sig = 1 / (1 + exp(-x)); any shape.   dx = g * sig * (1 + x * (1 - sig))."""

    def forward(self, x):
        _check_float(x, "silu")
        xp = self.xp
        self.shape = x.shape
        x = xp.atleast_1d(x)
        sig = xp.negative(x)
        with _no_overflow_warning(xp):
            xp.exp(sig, out=sig)                 # inf for x < -88 (float32): sig becomes exactly 0
        sig += 1.0
        xp.reciprocal(sig, out=sig)
        self.x, self.sig = x, sig
        return (x * sig).reshape(self.shape)

    def backward(self, g):
        xp, x, sig = self.xp, self.x, self.sig
        d = xp.subtract(1.0, sig)
        d *= x
        d += 1.0
        d *= sig
        d *= g.reshape(x.shape)
        return d.reshape(self.shape)
