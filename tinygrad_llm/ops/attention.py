"""Scaled dot-product attention: the package's one attention core, and its graph node.

Shapes: q (..., T, D), k (..., Tk, D), v (..., Tk, Dv) -> O (..., T, Dv): T queries and
Tk keys; the leading dims ("...", usually batch and heads) broadcast between q, k and v.
With s the scale (default 1/sqrt(D)) and qs = s Q (scaled once, up front):

    forward                                     backward (dO = gradient of O)
    S  = qs K^T + bias            (..., T, Tk)  dV = Pd^T dO,  dbias = dS (summed to bias's shape)
    S  = -inf where not allowed                 dP = (dO V^T) * keep / (1 - p)
    P  = softmax(S), per row      (..., T, Tk)  delta = rowsum(dP * P) = rowsum(dO * O)
    Pd = P * keep / (1 - p)       (dropout)     dS = P * (dP - delta)
    O  = Pd V                     (..., T, Dv)  dQ = s dS K,  dK = dS^T qs

A row whose keys are all masked has P = 0 (the row-softmax convention, ops/softmax.py),
so O = 0 and all its gradients are 0: no NaN. Masked entries have P = 0 exactly, so
dS = 0 there exactly. The derivation, step by step, is in docs/backprop.md (section
"Masked scaled dot-product attention"); examples/attention_backprop_by_hand.py checks it
numerically.

:func:`attention_forward` and :func:`attention_backward` are the core: both this node
(``F.scaled_dot_product_attention``) and the GPT's fused node (ops/self_attention.py)
call them. The fast tier (kernels/cpu.py) provides the same two functions with the same
signatures, and its subclasses of the two nodes swap them in.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..function import Function, unbroadcast
from .dropout import dropout_mask
from .softmax import softmax

__all__ = ["attention_forward", "attention_backward", "causal_mask", "ScaledDotProductAttention"]

_CAUSAL_CACHE: dict = {}   # (T, Tk, device) -> read-only (T, Tk) bool array


def causal_mask(T: int, Tk: int, device: str = "cpu"):
    """allowed (T, Tk), bool: query i may see key j when j <= i + Tk - T.

    Bottom-right aligned: the last query sits at the last key, as in cached decoding
    (T new queries after Tk - T cached keys). Cached per (T, Tk, device); the array is
    shared, never write to it.
    """
    key = (T, Tk, device)
    allowed = _CAUSAL_CACHE.get(key)
    if allowed is None:
        xp = backend.xp_for(device)
        allowed = xp.tril(xp.ones((T, Tk), dtype=bool), k=Tk - T)
        if xp is np:
            allowed.flags.writeable = False
        if len(_CAUSAL_CACHE) >= 64:
            _CAUSAL_CACHE.clear()
        _CAUSAL_CACHE[key] = allowed
    return allowed


def attention_forward(xp, qs, k, v, allowed=None, bias=None, keep=None, inv_keep=1.0, out=None):
    """(P, O) for qs = s Q (..., T, D), k (..., Tk, D), v (..., Tk, Dv), leading dims broadcasting.

    bias: a float array added to the scores, or None; allowed: a bool array, False where a
    query may not see a key (its score becomes -inf whatever bias holds there), or None;
    both broadcast to (..., T, Tk). keep: the dropout keep-mask (..., T, Tk) or None, with
    inv_keep = 1 / (1 - p). Returns P (..., T, Tk), before dropout, and O (..., T, Dv),
    written into ``out`` when one is given (any strides: e.g. a view with the heads merged).
    """
    S = qs @ k.swapaxes(-1, -2)
    if bias is not None:
        S = S + bias
    if allowed is not None:
        S = xp.where(allowed, S, S.dtype.type(-np.inf))
    P = softmax(xp, S, axis=-1)
    Pd = P if keep is None else P * keep * inv_keep
    O = xp.matmul(Pd, v, out=out)                     # O = Pd V
    return P, O


def attention_backward(dO, P, O, qs, k, v, scale, keep=None, inv_keep=1.0, out=None, dS_out=None):
    """(dQ, dK, dV) from dO (..., T, Dv) and the forward's P, O, qs, k, v (as attention_forward).

    Each gradient has the broadcast leading dims; the caller sums them back to its
    inputs' shapes. dQ is with respect to the unscaled Q. ``out``: three arrays to write
    them into (e.g. views of the thirds of one buffer), or None. ``dS_out``: an array
    (batch..., T, Tk), batch the leading dims of q, k and v broadcast, to write dS into, the gradient of the scores, and so of a float bias added
    to them (a float attn_mask that requires grad), or None.
    """
    Pd = P if keep is None else P * keep * inv_keep
    dV = Pd.swapaxes(-1, -2) @ dO
    dP = dO @ v.swapaxes(-1, -2)
    if keep is not None:
        dP = dP * keep * inv_keep                      # chain through the dropout
    delta = (dO * O).sum(axis=-1, keepdims=True)      # = rowsum(dP * P), as O = Pd V (docs)
    dS = P * (dP - delta)
    if dS_out is not None:
        dS_out[...] = dS
    dQ = scale * (dS @ k)
    dK = dS.swapaxes(-1, -2) @ qs
    if out is None:
        return dQ, dK, dV
    for buffer, d in zip(out, (dQ, dK, dV)):
        buffer[...] = d
    return out


class ScaledDotProductAttention(Function):
    """O = softmax(s q k^T + mask) v, one node with inputs (q, k, v), or (q, k, v, attn_mask)
    when a float mask is to be differentiated; see the module docstring.

    attn_mask: None, a bool array (True = may attend) or a float array of q's dtype (added
    to the scores), broadcastable to (..., T, Tk); is_causal: AND the bottom-right causal
    mask into it. Saved: qs, k, v, P, O and the dropout keep-mask. As a fourth input, the
    float mask gets dS summed back to its shape (where a score was set to -inf, P = 0 and
    so dS = 0).
    """

    core_forward = staticmethod(attention_forward)     # the fast tier swaps in its own core
    core_backward = staticmethod(attention_backward)

    def forward(self, q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, scale=1.0):
        T, Tk = q.shape[-2], k.shape[-2]
        allowed, bias = (attn_mask, None) if attn_mask is not None and attn_mask.dtype == bool else (None, attn_mask)
        if is_causal:
            causal = causal_mask(T, Tk, self.device)
            allowed = causal if allowed is None else allowed & causal
        self.keep, self.inv_keep = None, 1.0
        if dropout_p > 0:
            batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
            self.keep = dropout_mask(self.device, batch + (T, Tk), dropout_p, q.dtype)
            self.inv_keep = 1.0 / (1.0 - dropout_p)
        self.shapes, self.scale = (q.shape, k.shape, v.shape, None if bias is None else bias.shape), scale
        self.qs, self.k, self.v = q * q.dtype.type(scale), k, v
        self.P, self.O = self.core_forward(self.xp, self.qs, k, v, allowed, bias, self.keep, self.inv_keep)
        return self.O

    def backward(self, g):
        xp = self.xp
        q_shape, k_shape, v_shape, bias_shape = self.shapes
        bias_grad = len(self.needs_input_grad) == 4 and self.needs_input_grad[3]
        if bias_grad:                 # dS has the leading dims of q, k and v broadcast (P may have fewer)
            batch = np.broadcast_shapes(q_shape[:-2], k_shape[:-2], v_shape[:-2])
            dS = xp.empty(batch + self.P.shape[-2:], dtype=g.dtype)
        else:
            dS = None
        dq, dk, dv = self.core_backward(g, self.P, self.O, self.qs, self.k, self.v, self.scale,
                                        self.keep, self.inv_keep, dS_out=dS)
        grads = unbroadcast(xp, dq, q_shape), unbroadcast(xp, dk, k_shape), unbroadcast(xp, dv, v_shape)
        return grads + (unbroadcast(xp, dS, bias_shape),) if bias_grad else grads
