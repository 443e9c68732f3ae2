"""Scaled dot-product attention as ONE graph node, with its backward written out.

    out = scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0,
                                       is_causal=False, scale=None)

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv) -> out (..., T, Dv). The leading
dims ("..."; usually batch and heads) broadcast between q, k and v. With s = scale
(default 1/sqrt(D)) and M the mask (0 where a query may attend a key, -inf where not,
or the additive float mask):

    forward                                   backward (dO = gradient of out)
    S  = s * Q K^T + M        (..., T, S)     dV = P^T dO
    P  = softmax(S), per row  (..., T, S)     dP = dO V^T
    O  = P V                  (..., T, Dv)    dS = P * (dP - rowsum(dP * P))
                                              dQ = s * dS K
                                              dK = s * dS^T Q

A row whose keys are all masked has P = 0, so O = 0 and all its gradients are 0 (no
NaN). Masked entries have P = 0 exactly, so dS = 0 there exactly. With dropout, the
dropped and rescaled Pd = P * keep / (1 - p) replaces P in O = Pd V and in dV, and
dP is chained through the same mask: dP = (dO V^T) * keep / (1 - p).

The derivation, step by step, is in docs/backprop.md (section "Masked scaled
dot-product attention"); examples/attention_backprop_by_hand.py checks it numerically.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..function import Function, unbroadcast
from ..parallel import BLAS_THREADED_MNK, parallel_for

__all__ = ["scaled_dot_product_attention", "ScaledDotProductAttention", "causal_mask", "scores_are_small",
           "softmax_rows_", "attention_backward_"]

_CAUSAL_CACHE: dict = {}   # (T, S, device, dtype) -> read-only (T, S) array

# Softmax is unchanged by subtracting any constant c_i from row i; the usual c_i is the
# row max, so that exp never overflows. Finding the row max is the slowest elementwise
# pass on CPU, so it is skipped (c_i = 0) when Cauchy-Schwarz guarantees every score
# lies in [-_NO_SHIFT_LIMIT, _NO_SHIFT_LIMIT]: there exp neither overflows nor
# underflows in float32 (e^40 ~ 2e17, e^-40 ~ 4e-18) and the result is the same.
_NO_SHIFT_LIMIT = 40.0


def causal_mask(T: int, S: int, device: str = "cpu", dtype=None):
    """Causal (T, S) mask: query i must NOT see key j when j > i + S - T.

    ``dtype=None``: bool, True = masked. A float dtype: the additive form, -inf where
    masked and 0 elsewhere. Bottom-right aligned: the last query sits at the last key,
    as in cached decoding (T new queries after S - T cached keys). Cached per
    (T, S, device, dtype); the array is shared, never write to it.
    """
    key = (T, S, device, None if dtype is None else np.dtype(dtype).str)
    tri = _CAUSAL_CACHE.get(key)
    if tri is None:
        xp = backend.xp_for(device)
        tri = xp.triu(xp.ones((T, S), dtype=bool), k=S - T + 1)
        if dtype is not None:
            tri = xp.where(tri, xp.asarray(-np.inf, dtype=dtype), xp.asarray(0, dtype=dtype))
        if xp is np:
            tri.flags.writeable = False
        if len(_CAUSAL_CACHE) >= 64:
            _CAUSAL_CACHE.clear()
        _CAUSAL_CACHE[key] = tri
    return tri


def scores_are_small(xp, qs, k) -> bool:
    """True when |qs_i . k_j| <= _NO_SHIFT_LIMIT for every query row i and key row j.

    qs (..., T, D) already scaled, k (..., S, D). By Cauchy-Schwarz
    |qs_i . k_j| <= |qs_i| |k_j| <= max_i |qs_i| * max_j |k_j|: two cheap (..., T) passes.
    float16 is never trusted with the shortcut.
    """
    if qs.dtype.itemsize < 4 or qs.size == 0 or k.size == 0:
        return False
    q2 = float(xp.einsum("...td,...td->...t", qs, qs).max())   # max_i |qs_i|^2
    k2 = float(xp.einsum("...sd,...sd->...s", k, k).max())     # max_j |k_j|^2
    return q2 * k2 <= _NO_SHIFT_LIMIT ** 2


def softmax_rows_(xp, P, shift: bool, ones):
    """P (..., T, S) scores, -inf where masked -> softmax over the last axis, in place.

    shift: subtract each row's max first (needed unless ``scores_are_small``). A fully
    masked row (all -inf) becomes zeros, not NaN. ``ones`` is an (S,) array of ones:
    the row sums are matrix-vector products (BLAS), several times faster on CPU than
    ``P.sum(-1)`` over a short last axis.
    """
    T, S = P.shape[-2:]
    if shift:
        m = P.max(axis=-1, keepdims=True)       # -inf on fully masked rows
        m[~xp.isfinite(m)] = 0                  # so those rows stay -inf -> exp -> 0
        P -= m
    xp.exp(P, out=P)                            # masked entries: exp(-inf) = 0 exactly
    # one (T, S) @ (S,) product per matrix: the same BLAS call whatever the batch size, so
    # results do not depend on how the batch was cut into chunks
    P3 = P.reshape(math.prod(P.shape[:-2]), T, S)   # P is contiguous: a view
    denom = xp.matmul(P3, ones)[..., None]      # (n, T, 1)
    denom[denom == 0] = 1                       # only fully masked rows sum to 0
    xp.reciprocal(denom, out=denom)
    P3 *= denom


def attention_backward_(xp, P, dO, O, V, K, qs, scale, keep=None, inv_keep=1.0, dq=None, dk=None, dv=None):
    """The attention backward on raw arrays, writing into dq, dk, dv (any may be None).

    P (..., T, S) probabilities (before dropout), dO and O (..., T, Dv), V (..., S, Dv),
    K (..., S, D), qs = scale * Q (..., T, D); keep (..., T, S) the dropout keep-mask or None.
    dV = Pd^T dO,  dP = (dO V^T) * keep / (1 - p),  dS = P * (dP - rowsum(dP * P)),
    dQ = scale dS K,  dK = dS^T qs.   rowsum(dP * P) = rowsum(dO * O), since
    sum_j (dO_i . V_j) Pd_ij = dO_i . O_i: a (..., T, Dv) pass instead of a (..., T, S) one.
    """
    if dv is not None:
        Pd = P if keep is None else xp.multiply(P, keep) * inv_keep
        xp.matmul(Pd.swapaxes(-1, -2), dO, out=dv)
    if dq is None and dk is None:
        return
    dS = xp.matmul(dO, V.swapaxes(-1, -2))      # dP (w.r.t. Pd with dropout)
    if keep is not None:
        dS *= keep                              # chain through the dropout
        dS *= inv_keep
    dS -= xp.einsum("...td,...td->...t", dO, O)[..., None]
    dS *= P                                     # dS = P * (dP - rowsum(dP * P))
    if dq is not None:
        xp.matmul(dS, K, out=dq)
        dq *= dq.dtype.type(scale)
    if dk is not None:
        xp.matmul(dS.swapaxes(-1, -2), qs, out=dk)


class ScaledDotProductAttention(Function):
    """out = softmax(scale * q k^T + M) v, one node with inputs (q, k, v).

    Backward (P the attention probabilities, dO = g):
    dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = scale dS K,
    dK = scale dS^T Q; each summed back over the leading dims its input broadcast over.

    All heavy work is on (N, T, S) arrays with N = prod(batch dims), by batched
    ``xp.matmul`` and in-place elementwise passes over one scores buffer.
    """

    def forward(self, q, k, v, mask=None, mask_is_bool=True, is_causal=False, dropout_p=0.0,
                scale=1.0, batch=()):
        xp = self.xp
        T, D, S, Dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
        N = math.prod(batch)
        dt = q.dtype.type
        self.shapes = q.shape, k.shape, v.shape
        self.batch, self.scale = batch, scale
        # (N, T, D) contiguous operands; q is pre-multiplied by the scale: scale*q k^T is
        # S without the mask, and dK = dS^T (scale*q) reuses the same array.
        qs = xp.multiply(xp.broadcast_to(q, batch + (T, D)), dt(scale)).reshape(N, T, D)
        k3 = xp.ascontiguousarray(xp.broadcast_to(k, batch + (S, D))).reshape(N, S, D)
        v3 = xp.ascontiguousarray(xp.broadcast_to(v, batch + (S, Dv))).reshape(N, S, Dv)

        # ---- S = scale * Q K^T + M, in one (N, T, S) buffer that becomes P in place
        P = xp.empty((N, T, S), dtype=q.dtype)
        O = xp.empty((N, T, Dv), dtype=q.dtype)
        # a float mask may add anything to the scores: then the row max is always subtracted
        shift = bool(P.size) and (not (mask is None or mask_is_bool) or not scores_are_small(xp, qs, k3))
        ones = xp.ones(S, dtype=q.dtype)
        self.keep = None
        if dropout_p > 0:                          # drawn up front, in one call: reproducible
            u = backend.rng(self.device).random((N, T, S), dtype=xp.float32)
            self.keep = u >= dt(dropout_p)
            self.inv_keep = dt(1.0 / (1.0 - dropout_p))
        Pd = P if self.keep is None else xp.empty_like(P)

        def scores(a, b):
            xp.matmul(qs[a:b], k3[a:b].transpose(0, 2, 1), out=P[a:b])
            if mask is None and is_causal:
                P[a:b] += causal_mask(T, S, self.device, q.dtype)   # 0 / -inf, cached

        def probs(a, b):
            softmax_rows_(xp, P[a:b], shift, ones)  # P = softmax(S); a fully masked row gives P = 0
            # ---- dropout on P (inverted: kept entries scaled by 1/(1-p)), then O = Pd V
            if self.keep is not None:
                xp.multiply(P[a:b], self.keep[a:b], out=Pd[a:b])
                Pd[a:b] *= self.inv_keep
            xp.matmul(Pd[a:b], v3[a:b], out=O[a:b])

        # the N = prod(batch) attention problems are independent: one chunk per core, unless
        # the GEMMs are big enough for BLAS to thread them itself
        threaded = T * S * max(D, Dv) <= BLAS_THREADED_MNK
        if mask is None:
            parallel_for(lambda a, b: (scores(a, b), probs(a, b)), N, xp=xp, work_per_item=T * S,
                         threaded=threaded)
        else:   # the mask broadcasts over the batch dims: added to all the scores at once
            parallel_for(scores, N, xp=xp, work_per_item=T * S, threaded=threaded)
            P4 = P.reshape(batch + (T, S))          # a view, for broadcasting the mask
            if mask_is_bool:                        # bool mask: True = may attend
                masked = ~mask
                if is_causal:
                    masked = xp.logical_or(masked, causal_mask(T, S, self.device))
                xp.copyto(P4, dt(-np.inf), where=masked)
            else:
                P4 += mask                          # additive float mask (-inf = masked)
                if is_causal:
                    P4 += causal_mask(T, S, self.device, q.dtype)
            parallel_for(probs, N, xp=xp, work_per_item=T * S, threaded=threaded)
        self.qs, self.k3, self.v3, self.P, self.O = qs, k3, v3, P, O
        return O.reshape(batch + (T, Dv))

    def backward(self, g):
        xp, P, batch, scale = self.xp, self.P, self.batch, self.scale
        (q_shape, k_shape, v_shape), need = self.shapes, self.needs_input_grad
        N, T, S = P.shape
        D, Dv = q_shape[-1], v_shape[-1]
        dO = xp.ascontiguousarray(g).reshape(N, T, Dv)
        dq3 = xp.empty((N, T, D), dtype=P.dtype) if need[0] else None
        dk3 = xp.empty((N, S, D), dtype=P.dtype) if need[1] else None
        dv3 = xp.empty((N, S, Dv), dtype=P.dtype) if need[2] else None

        def chunk(a, b):
            keep = None if self.keep is None else self.keep[a:b]
            attention_backward_(xp, P[a:b], dO[a:b], self.O[a:b], self.v3[a:b], self.k3[a:b], self.qs[a:b],
                                scale, keep, self.inv_keep if keep is not None else 1.0,
                                dq3[a:b] if need[0] else None, dk3[a:b] if need[1] else None,
                                dv3[a:b] if need[2] else None)

        parallel_for(chunk, N, xp=xp, work_per_item=T * S,   # independent problems: one chunk per core
                     threaded=T * S * max(D, Dv) <= BLAS_THREADED_MNK)
        dq = unbroadcast(xp, dq3.reshape(batch + (T, D)), q_shape) if need[0] else None
        dk = unbroadcast(xp, dk3.reshape(batch + (S, D)), k_shape) if need[1] else None
        dv = unbroadcast(xp, dv3.reshape(batch + (S, Dv)), v_shape) if need[2] else None
        return dq, dk, dv


def _as_mask(attn_mask, device, xp):
    """The raw backend array of a mask given as a Tensor, an array or a nested list."""
    from ..tensor import Tensor  # noqa: PLC0415 (circular)
    if isinstance(attn_mask, Tensor):
        if attn_mask.device != device:
            raise backend.DeviceError(
                f"scaled_dot_product_attention: attn_mask is on {attn_mask.device!r} but the "
                f"inputs are on {device!r}; move it with .to(device)")
        return attn_mask.data
    if isinstance(attn_mask, np.ndarray) or hasattr(attn_mask, "__cuda_array_interface__"):
        if device == "cpu" and not isinstance(attn_mask, np.ndarray):
            return attn_mask.get()
        return xp.asarray(attn_mask)
    return xp.asarray(np.asarray(attn_mask))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None):
    """softmax(scale * query key^T + mask) value, one graph node (PyTorch's signature).

    query (..., T, D), key (..., S, D), value (..., S, Dv) -> (..., T, Dv); the leading
    dims broadcast against each other. ``scale`` defaults to 1/sqrt(D).

    attn_mask: broadcastable to (..., T, S); a Tensor, an array or a nested list, never
    differentiated. Boolean: True = may attend. Floating point: added to the scores
    (use -inf to forbid; cast to the query's dtype).

    is_causal: query i may attend key j only when j <= i + S - T. For T == S that is the
    usual lower triangle. For T != S the LAST query is aligned with the LAST key
    (bottom-right), as cached decoding needs; PyTorch aligns top-left (j <= i), so to
    match PyTorch with T != S pass an explicit mask instead. When T > S the first
    T - S queries see no key at all. Combined with attn_mask: a boolean mask is ANDed
    with the causal one (attend only where both allow); a float mask is added and the
    causal-forbidden entries are then set to -inf.

    A query whose keys are all masked gets an output row of zeros and zero gradients,
    never NaN (as current PyTorch does). Masked entries get exactly zero gradient.

    dropout_p: inverted dropout on the attention probabilities, applied whenever
    dropout_p > 0 (pass 0.0 at eval time, as with PyTorch's function); the mask comes
    from the package generator, so ``tinygrad_llm.manual_seed`` reproduces it.

    Gradient: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)),
    dQ = scale dS K, dK = scale dS^T Q (see the module docstring).
    """
    from ..tensor import Tensor  # noqa: PLC0415 (circular)
    name = "scaled_dot_product_attention"
    for arg, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{name}: {arg} needs at least 2 dims (..., L, E), got shape {t.shape}")
        if t.dtype.kind != "f":
            raise TypeError(f"{name}: {arg} must be floating point, got {t.dtype}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{name}: query, key and value must share one dtype, got "
                        f"{query.dtype}, {key.dtype} and {value.dtype}")
    T, D = query.shape[-2:]
    S, Dk = key.shape[-2:]
    if Dk != D:
        raise ValueError(f"{name}: query and key need the same last dim (head size), got "
                         f"query {query.shape} (D={D}) and key {key.shape} (D={Dk})")
    if value.shape[-2] != S:
        raise ValueError(f"{name}: key and value need the same number of keys (dim -2), got "
                         f"key {key.shape} (S={S}) and value {value.shape} (S={value.shape[-2]})")
    try:
        batch = tuple(np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2]))
    except ValueError:
        raise ValueError(f"{name}: the leading dims of query {query.shape}, key {key.shape} and "
                         f"value {value.shape} do not broadcast") from None
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) \
            or not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"{name}: dropout_p must be a number in [0, 1), got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"{name}: scale must be a finite number or None, got {scale!r}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"{name}: is_causal must be a bool, got {is_causal!r}")

    mask, mask_is_bool = None, True
    if attn_mask is not None:
        mask = _as_mask(attn_mask, query.device, query.xp)
        if mask.dtype == np.bool_:
            mask_is_bool = True
        elif mask.dtype.kind == "f":
            mask_is_bool = False
            mask = mask.astype(query.dtype, copy=False)
        else:
            raise TypeError(f"{name}: attn_mask must be bool (True = may attend) or floating point "
                            f"(added to the scores), got dtype {mask.dtype}")
        full = batch + (T, S)
        try:
            ok = tuple(np.broadcast_shapes(mask.shape, full)) == full
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: attn_mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"(..., T, S) = {full}")
    return ScaledDotProductAttention.apply(
        query, key, value, mask=mask, mask_is_bool=mask_is_bool, is_causal=bool(is_causal),
        dropout_p=float(dropout_p), scale=float(scale), batch=batch)
