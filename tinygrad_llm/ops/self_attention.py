"""Causal multi-head self-attention straight from a fused QKV projection: one graph node.

This is the GPT's training path: it takes ``qkv = c_attn(x)`` of shape (B, T, 3C) and
returns the heads already merged, (B, T, C), so that splitting, reshaping and permuting
heads costs no extra graph nodes (and no zero-filled gradient buffers). The math is the
same as :func:`scaled_dot_product_attention` with ``is_causal=True``; see
``docs/backprop.md`` for the derivation.

Per head, with s = 1/sqrt(hd), q = s * Q (scaled once, up front):

    forward:  S = q K^T + M   (M = -inf above the diagonal)
              P = softmax(S)  (rows)        Pd = P * keep / (1 - p)   (dropout)
              Y = Pd V
    backward: dV = Pd^T dY
              dPd = dY V^T    dP = dPd * keep / (1 - p)
              dS = P * (dP - rowsum(dP * P))
              dQ = s * dS K   dK = dS^T q
"""
from __future__ import annotations

from .. import backend
from ..function import Function

_masks: dict = {}


def causal_additive_mask(xp, T: int, dtype):
    """A (T, T) array: 0 where key j <= query i, -inf above the diagonal (cached)."""
    key = (xp.__name__, T, dtype.str)
    m = _masks.get(key)
    if m is None:
        m = xp.triu(xp.full((T, T), -xp.inf, dtype=dtype), k=1)
        _masks[key] = m
    return m


class CausalSelfAttention(Function):
    """qkv (B, T, 3C) -> y (B, T, C) with ``n_head`` heads of size hd = C / n_head."""

    def forward(self, qkv, n_head=1, dropout_p=0.0):
        xp = self.xp
        B, T, C3 = qkv.shape
        if C3 % 3 or (C3 // 3) % n_head:
            raise ValueError(f"causal_self_attention: last dim {C3} must be 3 * n_head * head_dim "
                             f"(n_head={n_head})")
        C = C3 // 3
        hd = C // n_head
        scale = qkv.dtype.type(1.0 / hd ** 0.5)
        heads = qkv.reshape(B, T, 3, n_head, hd)
        q = xp.multiply(heads[:, :, 0].transpose(0, 2, 1, 3), scale)          # (B, H, T, hd), contiguous
        k = xp.ascontiguousarray(heads[:, :, 1].transpose(0, 2, 1, 3))
        v = xp.ascontiguousarray(heads[:, :, 2].transpose(0, 2, 1, 3))
        att = xp.matmul(q, k.transpose(0, 1, 3, 2))                            # (B, H, T, T)
        att += causal_additive_mask(xp, T, att.dtype)
        att -= att.max(axis=-1, keepdims=True)
        xp.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)                                 # P
        self.keep = None
        pd = att
        if dropout_p > 0.0:
            self.keep = backend.rng(self.device).random(att.shape, dtype=att.dtype) >= dropout_p
            pd = att * self.keep
            pd *= att.dtype.type(1.0 / (1.0 - dropout_p))
        y = xp.matmul(pd, v)                                                   # (B, H, T, hd)
        self.q, self.k, self.v, self.p, self.pd = q, k, v, att, pd
        self.scale, self.dropout_p, self.shape = scale, dropout_p, (B, T, C, n_head, hd)
        return y.transpose(0, 2, 1, 3).reshape(B, T, C)

    def backward(self, g):
        xp = self.xp
        B, T, C, H, hd = self.shape
        dy = xp.ascontiguousarray(g.reshape(B, T, H, hd).transpose(0, 2, 1, 3))   # (B, H, T, hd)
        dqkv = xp.empty((B, T, 3, H, hd), dtype=g.dtype)
        dv = xp.matmul(self.pd.transpose(0, 1, 3, 2), dy)
        dp = xp.matmul(dy, self.v.transpose(0, 1, 3, 2))                       # dPd
        if self.keep is not None:
            dp *= self.keep
            dp *= dp.dtype.type(1.0 / (1.0 - self.dropout_p))
        dp *= self.p                                                           # P * dP
        dp -= self.p * dp.sum(axis=-1, keepdims=True)                          # dS
        dq = xp.matmul(dp, self.k)
        dq *= self.scale
        dk = xp.matmul(dp.transpose(0, 1, 3, 2), self.q)
        dqkv[:, :, 0] = dq.transpose(0, 2, 1, 3)
        dqkv[:, :, 1] = dk.transpose(0, 2, 1, 3)
        dqkv[:, :, 2] = dv.transpose(0, 2, 1, 3)
        return (dqkv.reshape(B, T, 3 * C),)


def causal_self_attention(qkv, n_head: int, dropout_p: float = 0.0):
    """qkv (B, T, 3C) -> (B, T, C): causal attention over ``n_head`` heads, one graph node."""
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    if qkv.ndim != 3:
        raise ValueError(f"causal_self_attention expects qkv of shape (B, T, 3C), got {qkv.shape}")
    return CausalSelfAttention.apply(qkv, n_head=n_head, dropout_p=dropout_p)
