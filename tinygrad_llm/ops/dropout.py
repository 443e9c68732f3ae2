"""Inverted dropout as one graph node: zero each element with probability p, scale the rest."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..function import Function


def check_p(p):
    """p as a float in [0, 1], or ValueError."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be a number in [0, 1], got {p!r}")
    return float(p)


class Dropout(Function):
    """y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element; any shape.   dx = g * keep / (1 - p).

    The mask comes from ``backend.rng(device)``, so ``manual_seed`` makes it reproducible.
    p = 1 drops everything: y = 0 and dx = 0 (as PyTorch).
    """

    def forward(self, x, p=0.5):
        p = check_p(p)
        if x.dtype.kind != "f":
            raise TypeError(f"dropout needs a floating-point tensor, got {x.dtype}")
        self.shape = x.shape
        x = self.xp.atleast_1d(x)             # 0-d arrays would turn into NumPy scalars
        self.scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
        u = backend.rng(self.device).random(x.shape, dtype=x.dtype if x.dtype == np.float64 else np.float32)
        self.keep = u >= p                     # P(u >= p) = 1 - p for u uniform in [0, 1)
        y = x * self.keep
        y *= self.scale
        return y.reshape(self.shape)

    def backward(self, g):
        d = g.reshape(self.keep.shape) * self.keep
        d *= self.scale
        return d.reshape(self.shape)
