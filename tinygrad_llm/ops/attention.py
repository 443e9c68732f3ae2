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

Grouped-query attention (``enable_gqa``): q has H heads, k and v KV heads (dim -3), KV
dividing H; query head h reads key/value head h // G, G = H / KV. The node stacks the G
query heads of each K/V head as rows of one query matrix, q (..., KV, G*T, D)
(:func:`group_queries`; the masks' rows likewise), and runs the core unchanged: each K/V
head meets its G*T query rows in one matrix product, and the group sum of the backward,
dK_kv = sum over its query heads of their dK, is the sum over rows inside dK = dS^T qs
(likewise dV = Pd^T dO).

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

__all__ = ["attention_forward", "attention_backward", "causal_mask", "group_queries", "ScaledDotProductAttention"]

_CAUSAL_CACHE: dict = {}   # (T, Tk, device, groups) -> read-only (groups * T, Tk) bool array


def causal_mask(T: int, Tk: int, device: str = "cpu", groups: int = 1):
    """allowed (T, Tk), bool: query i may see key j when j <= i + Tk - T.

    Bottom-right aligned: the last query sits at the last key, as in cached decoding
    (T new queries after Tk - T cached keys). ``groups`` > 1: the (T, Tk) mask repeated
    down the rows that many times, (groups * T, Tk), for queries stacked by
    :func:`group_queries`. Cached per (T, Tk, device, groups); the array is shared, never
    write to it.
    """
    key = (T, Tk, device, groups)
    allowed = _CAUSAL_CACHE.get(key)
    if allowed is None:
        xp = backend.xp_for(device)
        allowed = xp.tril(xp.ones((T, Tk), dtype=bool), k=Tk - T)
        if groups > 1:
            allowed = xp.concatenate([allowed] * groups, axis=0)
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


def group_queries(xp, q, mask, G: int):
    """Grouped-query attention's layout: q (..., H, T, D) -> (..., H / G, G * T, D), the G query
    heads that share a key/value head stacked as rows (query head h = kv * G + g is rows
    g * T .. g * T + T - 1 of group kv = h // G). A mask for (..., H, T, Tk) becomes one for
    (..., H / G, G * T, Tk): a head dim of H is split the same way; a mask shared by all
    heads (head dim 1, or none) has its rows repeated G times."""
    *lead, H, T, D = q.shape
    q = q.reshape(*lead, H // G, G * T, D)
    if mask is not None:
        lead_m, heads = (mask.shape[:-3], mask.shape[-3]) if mask.ndim >= 3 else ((), 1)
        Tk = mask.shape[-1]
        full = xp.broadcast_to(mask, lead_m + (heads, T, Tk))
        if heads == H:
            mask = full.reshape(lead_m + (H // G, G * T, Tk))
        else:
            mask = xp.broadcast_to(full[..., None, :, :], lead_m + (heads, G, T, Tk)).reshape(
                lead_m + (heads, G * T, Tk))
    return q, mask


class ScaledDotProductAttention(Function):
    """O = softmax(s q k^T + mask) v, one node with inputs (q, k, v), or (q, k, v, attn_mask)
    when a float mask is to be differentiated; see the module docstring.

    attn_mask: None, a bool array (True = may attend) or a float array of q's dtype (added
    to the scores), broadcastable to (..., T, Tk); is_causal: AND the bottom-right causal
    mask into it; enable_gqa: q's H heads share k's and v's KV heads in groups of G = H / KV
    (:func:`group_queries`). Saved: qs, k, v, P, O and the dropout keep-mask. As a fourth
    input, the float mask gets dS (its heads unstacked again with enable_gqa) summed back to
    its shape; where a score was set to -inf, P = 0 and so dS = 0.
    """

    core_forward = staticmethod(attention_forward)     # the fast tier swaps in its own core
    core_backward = staticmethod(attention_backward)

    def forward(self, q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, scale=1.0, enable_gqa=False):
        self.shapes, Tq, Tk = (q.shape, k.shape, v.shape), q.shape[-2], k.shape[-2]
        self.mask_shape = None if attn_mask is None or attn_mask.dtype == bool else attn_mask.shape
        G = q.shape[-3] // k.shape[-3] if enable_gqa else 1
        self.G = G
        if G > 1:
            q, attn_mask = group_queries(self.xp, q, attn_mask, G)     # (..., KV, G * Tq, D)
        self.q_shape = q.shape
        T = q.shape[-2]
        allowed, bias = (attn_mask, None) if attn_mask is not None and attn_mask.dtype == bool else (None, attn_mask)
        if is_causal:
            causal = causal_mask(Tq, Tk, self.device, groups=G)
            allowed = causal if allowed is None else allowed & causal
        self.keep, self.inv_keep = None, 1.0
        if dropout_p > 0:
            batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
            self.keep = dropout_mask(self.device, batch + (T, Tk), dropout_p, q.dtype)
            self.inv_keep = 1.0 / (1.0 - dropout_p)
        self.scale = scale
        self.qs, self.k, self.v = q * q.dtype.type(scale), k, v
        self.P, self.O = self.core_forward(self.xp, self.qs, k, v, allowed, bias, self.keep, self.inv_keep)
        if G == 1:
            return self.O
        return self.O.reshape(self.O.shape[:-3] + (self.O.shape[-3] * G, Tq, self.O.shape[-1]))   # heads unstacked

    def backward(self, g):
        xp = self.xp
        dO = g.reshape(self.O.shape)                   # with enable_gqa: each group's heads stacked again
        q_shape, k_shape, v_shape = self.shapes
        mask_grad = len(self.needs_input_grad) == 4 and self.needs_input_grad[3]
        dS = None
        if mask_grad:                  # dS has the leading dims of q, k and v broadcast (P may have fewer)
            batch = np.broadcast_shapes(self.q_shape[:-2], k_shape[:-2], v_shape[:-2])
            dS = xp.empty(batch + self.P.shape[-2:], dtype=g.dtype)
        dq, dk, dv = self.core_backward(dO, self.P, self.O, self.qs, self.k, self.v, self.scale,
                                        self.keep, self.inv_keep, dS_out=dS)
        dq = unbroadcast(xp, dq, self.q_shape).reshape(q_shape)
        grads = dq, unbroadcast(xp, dk, k_shape), unbroadcast(xp, dv, v_shape)
        if not mask_grad:
            return grads
        if self.G > 1:                 # the groups' heads unstacked: (..., KV, G * T, Tk) -> (..., H, T, Tk)
            dS = dS.reshape(dS.shape[:-3] + (dS.shape[-3] * self.G, q_shape[-2], dS.shape[-1]))
        return grads + (unbroadcast(xp, dS, self.mask_shape),)
