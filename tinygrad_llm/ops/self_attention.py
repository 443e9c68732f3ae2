"""Causal multi-head self-attention straight from a fused QKV projection: one graph node.

This is the GPT's training path: it takes ``qkv = c_attn(x)`` of shape (B, T, 3C) and
returns the heads already merged, (B, T, C), so that splitting, reshaping and permuting
heads costs no extra graph nodes (and no zero-filled gradient buffers). It is a thin
adapter around the attention core of ops/attention.py (``attention_forward`` and
``attention_backward``, the same functions ``F.scaled_dot_product_attention`` runs):

    forward:  q, k, v = split heads of qkv          (B, H, T, hd) each, views
              P, O = core forward (s q, k, v, causal mask, dropout)
              y = O with its heads merged            (B, T, C): the core writes O into a view of y
    backward: dO = dy with its heads split;  dq, dk, dv = core backward, written into the
              three thirds of one dqkv buffer        (B, T, 3C)
"""
from __future__ import annotations

import math

from ..function import Function
from .attention import attention_backward, attention_forward, causal_mask
from .dropout import dropout_mask


class CausalSelfAttention(Function):
    """qkv (B, T, 3C) -> y (B, T, C): causal attention over ``n_head`` heads of size hd = C / n_head,
    scale 1/sqrt(hd), inverted dropout ``dropout_p`` on the probabilities. Saved: as the core's."""

    core_forward = staticmethod(attention_forward)     # the fast tier swaps in its own core
    core_backward = staticmethod(attention_backward)

    def forward(self, qkv, n_head=1, dropout_p=0.0):
        B, T, C3 = qkv.shape
        H, hd = n_head, C3 // 3 // n_head
        q, k, v = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)     # split heads: (B, H, T, hd) views
        self.scale = 1.0 / math.sqrt(hd)
        self.keep, self.inv_keep = None, 1.0
        if dropout_p > 0:
            self.keep = dropout_mask(self.device, (B, H, T, T), dropout_p, qkv.dtype)
            self.inv_keep = 1.0 / (1.0 - dropout_p)
        self.qs, self.k, self.v = q * qkv.dtype.type(self.scale), k, v
        y = self.xp.empty((B, T, H, hd), dtype=qkv.dtype)
        self.P, self.O = self.core_forward(self.xp, self.qs, k, v, causal_mask(T, T, self.device), None,
                                           self.keep, self.inv_keep, out=y.transpose(0, 2, 1, 3))
        return y.reshape(B, T, C3 // 3)                                     # heads merged

    def backward(self, g):
        B, H, T, hd = self.qs.shape
        dO = g.reshape(B, T, H, hd).transpose(0, 2, 1, 3)                   # split heads
        dqkv = self.xp.empty((B, T, 3, H, hd), dtype=g.dtype)               # the layout of qkv
        self.core_backward(dO, self.P, self.O, self.qs, self.k, self.v, self.scale,
                           self.keep, self.inv_keep, out=tuple(dqkv.transpose(2, 0, 3, 1, 4)))
        return dqkv.reshape(B, T, 3 * H * hd)
