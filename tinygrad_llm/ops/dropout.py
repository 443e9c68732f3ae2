"""Inverted dropout as one graph node, and the package's two dropout-mask helpers.

``dropout_mask`` draws a mask from the package's generator (``Dropout``, standard
attention). ``replay_keep`` computes one from a seed and each entry's counter, a pure
function that can be evaluated again in any order and in any pieces: tiled (flash)
attention recomputes its mask tile by tile in the backward instead of storing it.
"""
from __future__ import annotations

import math

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


#: splitmix64's constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
#: generators", 2014): the Weyl increment (2^64 / golden ratio) and the two mixing multipliers
_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def replay_seed() -> int:
    """A seed for :func:`replay_keep`: one 63-bit draw from the CPU generator (``backend.rng``).

    Drawn on the host whatever the device (a host integer: no GPU sync), so ``manual_seed``
    and the checkpointed RNG state reproduce it; it does not touch the stream that
    :func:`dropout_mask` draws from on a GPU.
    """
    return int(backend.rng("cpu").integers(0, 2**63))


def replay_keep(xp, seed: int, counter, p: float):
    """keep: True with probability 1 - p for each entry of ``counter``, a pure function of (seed, counter).

    counter: a uint64 array numbering the entries (e.g. each one's flat index in the whole
    mask). Each number is hashed with splitmix64's finaliser, z = mix(seed + counter *
    GAMMA), and the entry is kept when the top 53 bits of z, read as a number in [0, 1),
    are >= p. The same seed and counter always give the same answer, so a mask can be
    rebuilt exactly, in any order and in any pieces (counter-based, as FlashAttention's
    Philox offsets). Plain xp integer math: the same numbers on NumPy and CuPy.
    """
    u64 = xp.uint64
    z = counter.astype(u64, copy=False) * u64(_GAMMA) + u64(seed)      # wraps modulo 2^64
    z = (z ^ (z >> u64(30))) * u64(_MIX1)
    z = (z ^ (z >> u64(27))) * u64(_MIX2)
    z = z ^ (z >> u64(31))
    return (z >> u64(11)) >= u64(math.ceil(p * 2.0**53))                # top 53 bits >= p * 2^53


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
