"""Inverted dropout as one graph node, and the one dropout-mask helper of the package."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..function import Function


def dropout_mask(device: str, shape, p: float, dtype):
    """keep: a bool array of ``shape`` on ``device``, each entry True with probability 1 - p.

    Drawn in one call from the package's generator (``backend.rng``), so ``manual_seed``
    reproduces it: uniform numbers in [0, 1), kept where >= p. They are float64 for
    float64 data and float32 otherwise (float32 resolves p to 6e-8; CuPy draws no float16).
    Both ``Dropout`` and attention's dropout (ops/attention.py) draw their masks here.
    """
    draw = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    u = backend.rng(device).random(tuple(shape), dtype=draw)
    return backend.xp_for(device).asarray(u >= draw(p))       # an array also for shape () (NumPy: a scalar)


class Dropout(Function):
    """y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element; any shape.   dx = g * keep / (1 - p).

    p = 1 drops everything: y = 0 and dx = 0 (as PyTorch). Saved: keep and the scale.
    """

    def forward(self, x, p=0.5):
        self.keep = dropout_mask(self.device, x.shape, p, x.dtype)
        self.scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
        return x * self.keep * self.scale

    def backward(self, g):
        return g * self.keep * self.scale
