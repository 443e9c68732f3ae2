"""Rotary position embeddings (RoPE), in Hugging Face Llama's "rotate half" layout: one graph node.

A query or key vector x of even size D (one head) at position m is cut into halves
x1 = x[:D/2] and x2 = x[D/2:], and pair i, (x1_i, x2_i), is rotated by the angle
m * inv_freq_i in its plane:

    forward:   y = x * cos + rotate_half(x) * sin,     rotate_half(x) = [-x2, x1]
               (y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin)
    backward:  dx = g * cos - rotate_half(g * sin)     (the rotation by minus the angle)
               (dx1 = g1 cos + g2 sin,  dx2 = g2 cos - g1 sin)

``cos`` and ``sin`` hold each angle twice, [angles, angles] along the last axis, because
rotate_half pairs channel i with channel i + D/2. The derivation is in docs/backprop.md,
section "Rotary position embeddings".

The tables are constants of the node (never differentiated), computed as Hugging Face
computes them (float32, then cast to the activations' dtype): :func:`inv_frequencies`
(with Llama 3's frequency scaling as an option) and :func:`rope_tables` for a range of
positions (``start`` = the KV cache's length when decoding).
"""
from __future__ import annotations

import math

from ..function import Function

__all__ = ["RoPE", "rotate_half", "inv_frequencies", "rope_tables", "ROPE_TYPES"]

#: rope scaling types :func:`inv_frequencies` knows ("default": none)
ROPE_TYPES = ("default", "llama3")


def inv_frequencies(xp, head_dim: int, theta: float = 10000.0, scaling: dict | None = None):
    """inv_freq (head_dim / 2,) float32: theta ** (-2i / head_dim) for i = 0 .. head_dim/2 - 1.

    ``scaling``: None, or Llama 3's ``{"rope_type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}``. With wavelength
    wavelen = 2 pi / inv_freq and the original context L: wavelengths below L /
    high_freq_factor are kept, those above L / low_freq_factor are divided by ``factor``
    (stretched), and those between are interpolated with
    smooth = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor).
    """
    f32 = xp.float32
    inv_freq = 1.0 / (theta ** (xp.arange(0, head_dim, 2, dtype=f32) / f32(head_dim)))
    if scaling is None or scaling.get("rope_type", "default") == "default":
        return inv_freq
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    L = scaling["original_max_position_embeddings"]
    wavelen = (2 * math.pi) / inv_freq
    stretched = xp.where(wavelen > L / lo, inv_freq / factor, inv_freq)
    smooth = (L / wavelen - lo) / (hi - lo)
    between = (1 - smooth) * stretched / factor + smooth * stretched
    medium = (wavelen >= L / hi) & (wavelen <= L / lo)
    return xp.where(medium, between, stretched).astype(f32)


def rope_tables(xp, inv_freq, start: int, length: int, dtype):
    """(cos, sin), each (length, head_dim) in ``dtype``, for positions start .. start + length - 1.

    angles[m, i] = m * inv_freq[i] in float32 (as Hugging Face computes them), written
    twice along the last axis: [angles, angles].
    """
    positions = xp.arange(start, start + length, dtype=xp.float32)
    angles = positions[:, None] * inv_freq.astype(xp.float32, copy=False)[None, :]                    # (length, head_dim / 2)
    angles = xp.concatenate([angles, angles], axis=-1)                   # (length, head_dim)
    return xp.cos(angles).astype(dtype, copy=False), xp.sin(angles).astype(dtype, copy=False)


def rotate_half(xp, x):
    """[-x2, x1] for x = [x1, x2] cut in halves along the last axis."""
    h = x.shape[-1] // 2
    return xp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


class RoPE(Function):
    """y = x * cos + rotate_half(x) * sin.  x (..., D), D even; cos, sin broadcast to x (their
    last dim D). Saved: cos and sin.   dx = g * cos - rotate_half(g * sin)."""

    def forward(self, x, cos=None, sin=None):
        self.cos, self.sin = cos, sin
        return x * cos + rotate_half(self.xp, x) * sin

    def backward(self, g):
        return g * self.cos - rotate_half(self.xp, g * self.sin)
