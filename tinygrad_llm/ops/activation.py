"""Activation functions, each one graph node: GELU (exact and tanh forms), SiLU, SwiGLU
(``silu(gate) * up``, Llama's MLP activation, two inputs), leaky ReLU, ELU and softplus;
any shape.

ReLU is the elementwise primitive ``ReLU`` in ops/elementwise.py (``Tensor.relu`` and
``F.relu`` both run it). Derivations: docs/backprop.md, sections "GELU", "SwiGLU" and
"More activations". The fast CPU kernels (threaded, cache-blocked, in place) are in
``kernels/cpu.py``.
"""
from __future__ import annotations

import math

from ..backend import quiet
from ..function import Function
from .erf import erf

GELU_APPROXIMATIONS = ("none", "tanh")

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # Python floats: they keep float32 arrays float32
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_A = 0.044715


class GELU(Function):
    """y = x * Phi(x), Phi the standard normal CDF. Saved: x and cdf (or s).

    approximate="none": cdf = 0.5 * (1 + erf(x / sqrt(2))),  y = x * cdf,
        dx = g * (cdf + x * pdf),  pdf = exp(-x^2 / 2) / sqrt(2 pi).
    approximate="tanh": u = sqrt(2/pi) * (x + 0.044715 x^3),  s = 1 / (1 + exp(-2u))
        (= 0.5 * (1 + tanh(u)), without 1 + tanh's cancellation),  y = x * s,
        dx = g * s * (1 + x * (1 - s) * 2 du),  du = sqrt(2/pi) * (1 + 3 * 0.044715 x^2).
    """

    def forward(self, x, approximate="none"):
        xp = self.xp
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            with quiet(xp, over="ignore"):    # u or exp(-2u) = inf for large |x|: s = 1 or 0, right
                u = SQRT_2_OVER_PI * (x + GELU_A * x ** 3)
                self.s = 1.0 / (1.0 + xp.exp(-2.0 * u))
            return x * self.s
        self.cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2, xp))
        return x * self.cdf

    def backward(self, g):
        xp, x = self.xp, self.x
        if self.approximate == "tanh":
            s = self.s
            du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_A * x * x)
            return g * s * (1.0 + x * (1.0 - s) * 2.0 * du)
        pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI
        return g * (self.cdf + x * pdf)


def sigmoid(xp, x):
    """sig = 1 / (1 + exp(-x)); exp(-x) = inf for x < -88 (float32) gives sig = 0, rightly."""
    with quiet(xp, over="ignore"):
        return 1.0 / (1.0 + xp.exp(-x))


def silu_slope(x, sig):
    """d silu(x) / dx = sig * (1 + x * (1 - sig)), from sig' = sig * (1 - sig)."""
    return sig * (1.0 + x * (1.0 - sig))


class SiLU(Function):
    """y = x * sig, sig = 1 / (1 + exp(-x)). Saved: x and sig.   dx = g * sig * (1 + x * (1 - sig))."""

    def forward(self, x):
        self.sig = sigmoid(self.xp, x)
        self.x = x
        return x * self.sig

    def backward(self, g):
        return g * silu_slope(self.x, self.sig)


class SwiGLU(Function):
    """h = silu(gate) * up = gate * sig * up, sig = 1 / (1 + exp(-gate)); gate and up of one shape.
    Saved: gate, up and sig. Both gradients in one backward:

        dgate = g * up * sig * (1 + gate * (1 - sig)),    dup = g * gate * sig (= g * silu(gate))
    """

    def forward(self, gate, up):
        self.sig = sigmoid(self.xp, gate)
        self.gate, self.up = gate, up
        return gate * self.sig * up

    def backward(self, g):
        gate, up, sig = self.gate, self.up, self.sig
        dgate = g * up * silu_slope(gate, sig)
        dup = g * gate * sig
        return dgate, dup


class LeakyReLU(Function):
    """out = x where x > 0, else slope * x.   dx = g where x > 0, else slope * g (slope at x == 0,
    as PyTorch)."""

    def forward(self, x, negative_slope=0.01):
        self.positive, self.slope = x > 0, negative_slope
        return self.xp.where(self.positive, x, x * negative_slope)

    def backward(self, g):
        return self.xp.where(self.positive, g, g * self.slope)


class ELU(Function):
    """out = x where x > 0, else alpha * (exp(x) - 1).   dx = g where x > 0, else g * alpha * exp(x)
    = g * (out + alpha). Saved: the mask and out."""

    def forward(self, x, alpha=1.0):
        xp = self.xp
        self.positive, self.alpha = ~(x <= 0), alpha      # x > 0, and NaN (out NaN, g passes: PyTorch)
        self.out = xp.where(self.positive, x, alpha * xp.expm1(xp.minimum(x, 0)))   # expm1 of <= 0: no overflow
        return self.out

    def backward(self, g):
        return self.xp.where(self.positive, g, g * (self.out + self.alpha))


class Softplus(Function):
    """out = log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule).

    Computed as (max(z, 0) + log1p(exp(-|z|))) / beta with z = beta x: exp never overflows.
    dx = g * sigmoid(z) (g where z > threshold).
    """

    def forward(self, x, beta=1.0, threshold=20.0):
        xp = self.xp
        self.z, self.linear = x * beta, x * beta > threshold
        soft = (xp.maximum(self.z, 0) + xp.log1p(xp.exp(-xp.abs(self.z)))) / beta
        return xp.where(self.linear, x, soft)

    def backward(self, g):
        return self.xp.where(self.linear, g, g * sigmoid(self.xp, self.z))
