"""Tiled attention with the online softmax (FlashAttention-2's algorithm), forward and backward by hand.

The same function as ops/attention.py, O = softmax(s Q K^T + M) V, without ever holding a
T x S matrix: queries are taken in blocks of ``block_q`` rows, keys and values in blocks
of ``block_k``, and only one (..., block_q, block_k) tile of scores exists at a time.
Shapes as in ops/attention.py: qs = s Q (..., T, D), k (..., S, D), v (..., S, Dv), leading
dims broadcasting; S here is a number of keys when it is a size, the scores otherwise.

    forward, for each query block I, over the key blocks J:          (m = -inf, l = 0, Ot = 0)
        S_IJ  = qs_I K_J^T + M_IJ                  one tile of scores
        m_new = max(m, rowmax(S_IJ))               the running row max
        Pt    = exp(S_IJ - m_new)                  unnormalised probabilities, in (0, 1]
        alpha = exp(m - m_new)                     rescales what was summed under the old max
        l     = alpha l + rowsum(Pt)               the running row sum
        Ot    = alpha Ot + (Pt * keep_IJ / (1 - p)) V_J
        m     = m_new
    then O_I = Ot / l and L_I = m + log(l), the row's log-sum-exp. Saved: O and L (..., T).

    backward, delta = rowsum(dO * O) (..., T); for each key block J, over the query blocks I:
        P     = exp(S_IJ - L_I)                    recomputed, already normalised
        Pd    = P * keep_IJ / (1 - p)
        dV_J += Pd^T dO_I
        dP    = (dO_I V_J^T) * keep_IJ / (1 - p)
        dS    = P * (dP - delta_I)
        dQ_I += s dS K_J,   dK_J += dS^T qs_I

The derivation (and why delta = rowsum(dO * O) equals rowsum(P * dP)) is in docs/backprop.md,
section "Tiled (flash) attention". Masks: ``causal`` (bottom-right aligned, key j visible to
query i when j <= i + S - T; tiles wholly above that diagonal are skipped, not computed),
and optionally ``allowed`` (bool) and ``bias`` (float) arrays broadcastable to (..., T, S),
sliced tile by tile. A row that sees no key gets l = 0: O = 0 and L = +inf, so the recomputed
P = exp(S - L) is 0 there and every gradient of the row is 0: no NaN. Dropout: keep_IJ comes
from ``replay_keep(seed, counter)`` (ops/dropout.py) with each entry's counter its flat index
in the whole (..., T, S) mask, so the backward rebuilds exactly the forward's tiles from the
saved seed. float16 data: the tiles' products run in float16, the statistics (m, l, L,
delta) and the accumulators (Ot, dQ, dK, dV) in float32, as FlashAttention does on a GPU.

Grouped-query attention (``enable_gqa``: q has H heads, k and v KV heads, G = H / KV) needs
nothing new in the core: the node views q (..., H, T, D) as (..., KV, G, T, D) and k, v as
(..., KV, 1, S, D), so each key/value head broadcasts over its group of G query heads like any
other leading dim (:func:`group_heads`); the core's dK, dV come back per query head, and the
group sum dK_kv = sum over its G query heads is the sum over that broadcast axis (unbroadcast).
"""
from __future__ import annotations

import math

import numpy as np

from ..function import Function, unbroadcast
from .dropout import replay_keep, replay_seed

__all__ = ["flash_forward", "flash_backward", "group_heads", "FlashAttention", "FlashCausalSelfAttention",
           "BLOCK_Q", "BLOCK_K"]

#: default tile sizes: larger tiles mean fewer array calls (each costs microseconds of
#: Python, and a kernel launch on a GPU), smaller ones less memory per tile; 64 x 64 is the
#: smallest with flat extra memory, and no larger size was reliably faster on the CPU
#: (docs/benchmarks.md, "Tiled attention")
BLOCK_Q = 64
BLOCK_K = 64


def stat_dtype(dtype) -> np.dtype:
    """The dtype of the softmax statistics and accumulators: float32 for float16 data, else the data's."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def tile_scores(xp, qs, k, rows, cols, offset, causal, allowed, bias, acc):
    """S_IJ (..., i1 - i0, j1 - j0) in dtype ``acc`` for rows = (i0, i1), cols = (j0, j1), -inf where
    not allowed; None when the causal mask hides the whole tile (it is above the diagonal)."""
    (i0, i1), (j0, j1) = rows, cols
    if causal and j0 > i1 - 1 + offset:
        return None
    S = (qs[..., i0:i1, :] @ k[..., j0:j1, :].swapaxes(-1, -2)).astype(acc, copy=False)
    if bias is not None:
        S = S + bias[..., i0:i1, j0:j1]
    if allowed is not None:
        S = xp.where(allowed[..., i0:i1, j0:j1], S, acc.type(-np.inf))
    if causal and j1 - 1 > i0 + offset:                   # the tile crosses the diagonal
        visible = xp.arange(j0, j1)[None, :] <= xp.arange(i0, i1)[:, None] + offset
        S = xp.where(visible, S, acc.type(-np.inf))
    return S


def tile_keep(xp, seed, p, base, n_keys, rows, cols):
    """The dropout keep-mask of one tile: entry (b, i, j) has the counter b * T * S + i * S + j
    (``base`` holds b * T * S, shaped (..., 1, 1)), as if the whole mask were drawn at once."""
    (i0, i1), (j0, j1) = rows, cols
    u64 = xp.uint64
    counter = base + (xp.arange(i0, i1, dtype=u64)[:, None] * u64(n_keys) + xp.arange(j0, j1, dtype=u64)[None, :])
    return replay_keep(xp, seed, counter, p)


def _prepare(xp, qs, k, v, allowed, bias, dropout_p, first):
    """The broadcast batch shape, the inputs and masks as (broadcast) views of it, the
    counters' base (dropout only; problem b of this call is problem first + b of the whole
    batch) and the two dtypes."""
    batch = tuple(np.broadcast_shapes(qs.shape[:-2], k.shape[:-2], v.shape[:-2]))
    T, S = qs.shape[-2], k.shape[-2]
    qs, k, v = (xp.broadcast_to(a, batch + a.shape[-2:]) for a in (qs, k, v))
    allowed, bias = (None if a is None else xp.broadcast_to(a, batch + (T, S)) for a in (allowed, bias))
    base = None
    if dropout_p > 0:
        base = ((xp.arange(math.prod(batch), dtype=xp.uint64) + xp.uint64(first)) * xp.uint64(T * S)).reshape(
            batch + (1, 1))
    return batch, qs, k, v, allowed, bias, base, qs.dtype, stat_dtype(qs.dtype)


def flash_forward(xp, qs, k, v, allowed=None, bias=None, causal=False, dropout_p=0.0, seed=0,
                  block_q=BLOCK_Q, block_k=BLOCK_K, out=None, first=0):
    """(L, O): L (..., T) the rows' log-sum-exp (+inf for a row that sees no key), O (..., T, Dv),
    written into ``out`` when one is given (any strides). Arguments as in the module docstring;
    ``first``: for a caller that runs the batch in pieces, the flat index of this piece's first
    problem in the whole batch (the dropout counters count from it)."""
    batch, qs, k, v, allowed, bias, base, dtype, acc = _prepare(xp, qs, k, v, allowed, bias, dropout_p, first)
    T, S, Dv = qs.shape[-2], k.shape[-2], v.shape[-1]
    O = xp.empty(batch + (T, Dv), dtype=dtype) if out is None else out
    L = xp.empty(batch + (T,), dtype=acc)
    inv_keep = acc.type(1.0 / (1.0 - dropout_p))
    for i0 in range(0, T, block_q):
        rows = (i0, min(i0 + block_q, T))
        n = rows[1] - i0
        m = xp.full(batch + (n, 1), -np.inf, dtype=acc)
        l = xp.zeros(batch + (n, 1), dtype=acc)
        Ot = xp.zeros(batch + (n, Dv), dtype=acc)
        for j0 in range(0, S, block_k):
            cols = (j0, min(j0 + block_k, S))
            S_IJ = tile_scores(xp, qs, k, rows, cols, S - T, causal, allowed, bias, acc)
            if S_IJ is None:
                break                                     # so are all the tiles to its right
            m_new = xp.maximum(m, S_IJ.max(axis=-1, keepdims=True))
            m_new = xp.where(xp.isinf(m_new), acc.type(0), m_new)   # no key seen yet: exp(-inf - 0) = 0
            Pt = xp.exp(S_IJ - m_new)
            alpha = xp.exp(m - m_new)
            l = alpha * l + Pt.sum(axis=-1, keepdims=True)
            if dropout_p > 0:
                Pt = Pt * tile_keep(xp, seed, dropout_p, base, S, rows, cols) * inv_keep
            Ot = alpha * Ot + (Pt.astype(dtype, copy=False) @ v[..., cols[0]:cols[1], :])
            m = m_new
        seen = l > 0                                      # False: the row sees no key at all
        l_safe = xp.where(seen, l, acc.type(1))
        O[..., i0:rows[1], :] = Ot / l_safe
        L[..., i0:rows[1]] = xp.where(seen, m + xp.log(l_safe), acc.type(np.inf))[..., 0]
    return L, O


def flash_backward(xp, dO, L, O, qs, k, v, scale, allowed=None, bias=None, causal=False, dropout_p=0.0, seed=0,
                   block_q=BLOCK_Q, block_k=BLOCK_K, out=None, first=0):
    """(dQ, dK, dV) from dO (..., T, Dv) and the forward's L and O (the other arguments as
    flash_forward's). Each has the broadcast leading dims; dQ is with respect to the unscaled
    Q. ``out``: three arrays to write them into, or None."""
    batch, qs, k, v, allowed, bias, base, dtype, acc = _prepare(xp, qs, k, v, allowed, bias, dropout_p, first)
    T, S, D, Dv = qs.shape[-2], k.shape[-2], qs.shape[-1], v.shape[-1]
    delta = (dO.astype(acc, copy=False) * O.astype(acc, copy=False)).sum(axis=-1, keepdims=True)   # (..., T, 1)
    L = L[..., None]
    inv_keep = acc.type(1.0 / (1.0 - dropout_p))
    dQ = xp.zeros(batch + (T, D), dtype=acc)
    dK, dV = (xp.empty(batch + (S, D), dtype=dtype), xp.empty(batch + (S, Dv), dtype=dtype)) if out is None \
        else out[1:]
    for j0 in range(0, S, block_k):
        cols = (j0, min(j0 + block_k, S))
        K_J, V_J = k[..., j0:cols[1], :], v[..., j0:cols[1], :]
        dK_J = xp.zeros(batch + (cols[1] - j0, D), dtype=acc)
        dV_J = xp.zeros(batch + (cols[1] - j0, Dv), dtype=acc)
        for i0 in range(0, T, block_q):
            rows = (i0, min(i0 + block_q, T))
            S_IJ = tile_scores(xp, qs, k, rows, cols, S - T, causal, allowed, bias, acc)
            if S_IJ is None:
                continue                                  # above the diagonal: nothing flows
            P = xp.exp(S_IJ - L[..., i0:rows[1], :])
            Pd = P
            if dropout_p > 0:
                keep = tile_keep(xp, seed, dropout_p, base, S, rows, cols) * inv_keep
                Pd = P * keep
            dO_I = dO[..., i0:rows[1], :]
            dV_J += Pd.astype(dtype, copy=False).swapaxes(-1, -2) @ dO_I
            dP = (dO_I @ V_J.swapaxes(-1, -2)).astype(acc, copy=False)
            if dropout_p > 0:
                dP = dP * keep                            # chain through the dropout
            dS = (P * (dP - delta[..., i0:rows[1], :])).astype(dtype, copy=False)
            dQ[..., i0:rows[1], :] += dS @ K_J
            dK_J += dS.swapaxes(-1, -2) @ qs[..., i0:rows[1], :]
        dK[..., j0:cols[1], :] = dK_J
        dV[..., j0:cols[1], :] = dV_J
    dQ *= acc.type(scale)
    if out is None:
        return dQ.astype(dtype, copy=False), dK, dV
    out[0][...] = dQ
    return out


def group_heads(q, k, v, mask, G: int):
    """Grouped-query attention as broadcasting: q (..., H, T, D) -> (..., H / G, G, T, D), k and v
    (..., KV, S, E) -> (..., KV, 1, S, E), all views; query head h = kv * G + g is [kv, g]. A mask
    with a head dim of H is split the same way; one shared by the heads (head dim 1, or none)
    gets a group axis of 1."""
    q = q.reshape(q.shape[:-3] + (q.shape[-3] // G, G) + q.shape[-2:])
    k, v = (a[..., None, :, :] for a in (k, v))
    if mask is not None and mask.ndim >= 3:
        heads = mask.shape[-3]
        mask = mask.reshape(mask.shape[:-3] + ((heads // G, G) if heads > 1 else (1, 1)) + mask.shape[-2:])
    return q, k, v, mask


class FlashAttention(Function):
    """O = softmax(s q k^T + mask) v by tiles: the function of ScaledDotProductAttention (same
    arguments, plus the tile sizes), one node with inputs (q, k, v). Saved: qs, k, v, O, L and the
    dropout seed: no (..., T, S) array. enable_gqa: the heads grouped by :func:`group_heads`."""

    core_forward = staticmethod(flash_forward)         # the fast tier swaps in its own core
    core_backward = staticmethod(flash_backward)

    def forward(self, q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, scale=1.0, enable_gqa=False,
                block_q=BLOCK_Q, block_k=BLOCK_K):
        self.shapes, self.scale = (q.shape, k.shape, v.shape), scale
        G = q.shape[-3] // k.shape[-3] if enable_gqa else 1
        if G > 1:
            q, k, v, attn_mask = group_heads(q, k, v, attn_mask, G)
        self.grouped_shapes = (q.shape, k.shape, v.shape)
        is_bool = attn_mask is not None and attn_mask.dtype == bool
        self.options = dict(allowed=attn_mask if is_bool else None, bias=None if is_bool else attn_mask,
                            causal=is_causal, dropout_p=dropout_p, seed=replay_seed() if dropout_p > 0 else 0,
                            block_q=block_q, block_k=block_k)
        self.qs, self.k, self.v = q * q.dtype.type(scale), k, v
        self.L, self.O = self.core_forward(self.xp, self.qs, k, v, **self.options)
        if G == 1:
            return self.O
        return self.O.reshape(self.O.shape[:-4] + (self.O.shape[-4] * G,) + self.O.shape[-2:])   # heads merged

    def backward(self, g):
        xp = self.xp
        dq, dk, dv = self.core_backward(xp, g.reshape(self.O.shape), self.L, self.O, self.qs, self.k, self.v,
                                        self.scale, **self.options)
        # summed over what broadcast (with enable_gqa: the group axis of k and v), then as the inputs
        return tuple(unbroadcast(xp, d, grouped).reshape(shape)
                     for d, grouped, shape in zip((dq, dk, dv), self.grouped_shapes, self.shapes))


class FlashCausalSelfAttention(Function):
    """qkv (B, T, 3C) -> y (B, T, C) by tiles: the function of ops/self_attention.py's
    CausalSelfAttention (the GPT's fused node), with the heads split out of qkv as views, O
    written into the merged output and dQ, dK, dV into the thirds of one dqkv buffer."""

    core_forward = staticmethod(flash_forward)         # the fast tier swaps in its own core
    core_backward = staticmethod(flash_backward)

    def forward(self, qkv, n_head=1, dropout_p=0.0, block_q=BLOCK_Q, block_k=BLOCK_K):
        B, T, C3 = qkv.shape
        H, hd = n_head, C3 // 3 // n_head
        q, k, v = qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)     # split heads: (B, H, T, hd) views
        self.scale = 1.0 / math.sqrt(hd)
        self.options = dict(causal=True, dropout_p=dropout_p, seed=replay_seed() if dropout_p > 0 else 0,
                            block_q=block_q, block_k=block_k)
        self.qs, self.k, self.v = q * qkv.dtype.type(self.scale), k, v
        y = self.xp.empty((B, T, H, hd), dtype=qkv.dtype)
        self.L, self.O = self.core_forward(self.xp, self.qs, k, v, out=y.transpose(0, 2, 1, 3), **self.options)
        return y.reshape(B, T, C3 // 3)                                     # heads merged

    def backward(self, g):
        B, H, T, hd = self.qs.shape
        dO = g.reshape(B, T, H, hd).transpose(0, 2, 1, 3)                   # split heads
        dqkv = self.xp.empty((B, T, 3, H, hd), dtype=g.dtype)               # the layout of qkv
        self.core_backward(self.xp, dO, self.L, self.O, self.qs, self.k, self.v, self.scale,
                           out=tuple(dqkv.transpose(2, 0, 3, 1, 4)), **self.options)
        return dqkv.reshape(B, T, 3 * H * hd)
