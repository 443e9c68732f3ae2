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
              dS = P * (dP - rowsum(dP * P)),  rowsum(dP * P) = rowsum(dY * Y)
              dQ = s * dS K   dK = dS^T q
"""
from __future__ import annotations

from .. import backend
from ..function import Function
from ..parallel import BLAS_THREADED_MNK, parallel_for
from .attention import attention_backward_, causal_mask, scores_are_small, softmax_rows_

PIECE_BYTES = 1 << 19       # a piece's (H, T, T) scores: about half a core's L2 cache


class CausalSelfAttention(Function):
    """qkv (B, T, 3C) -> y (B, T, C) with ``n_head`` heads of size hd = C / n_head.

    The batch entries are independent: on CPU they are split into one chunk per core
    (``parallel.parallel_for``), each chunk worked in pieces whose (H, T, T) scores stay in
    cache. K and V are read in place from qkv (NumPy's matmul takes their row stride).
    The softmax and the backward are the same array functions that
    :func:`scaled_dot_product_attention` runs (``ops/attention.py``), including its
    shortcut of skipping the row max when Cauchy-Schwarz bounds every score.
    """

    def forward(self, qkv, n_head=1, dropout_p=0.0):
        xp = self.xp
        B, T, C3 = qkv.shape
        if C3 % 3 or (C3 // 3) % n_head:
            raise ValueError(f"causal_self_attention: last dim {C3} must be 3 * n_head * head_dim "
                             f"(n_head={n_head})")
        C, H = C3 // 3, n_head
        hd = C // H
        dt = qkv.dtype
        scale = dt.type(1.0 / hd ** 0.5)
        heads = xp.ascontiguousarray(qkv).reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        k, v = heads[1], heads[2]                                              # views
        q = xp.multiply(heads[0], scale)                                       # q = s * Q, (B, H, T, hd)
        att = xp.empty((B, H, T, T), dtype=dt)
        y = xp.empty((B, T, H, hd), dtype=dt)
        yh = y.transpose(0, 2, 1, 3)                                           # (B, H, T, hd) view
        mask = causal_mask(T, T, self.device, dt)   # 0 / -inf, cached
        shift = bool(att.size) and not scores_are_small(xp, q, k)
        ones = xp.ones(T, dtype=dt)
        self.keep = None
        if dropout_p > 0.0:            # drawn up front, in one call: the same stream as ever
            self.keep = backend.rng(self.device).random(att.shape, dtype=dt) >= dropout_p
        pd = att if self.keep is None else xp.empty_like(att)
        inv_keep = dt.type(1.0 / (1.0 - dropout_p))

        def rows(a, z):
            pa = att[a:z]
            xp.matmul(q[a:z], k[a:z].swapaxes(-1, -2), out=pa)                 # (b, H, T, T)
            pa += mask
            softmax_rows_(xp, pa, shift, ones)                                 # P
            if self.keep is not None:
                xp.multiply(pa, self.keep[a:z], out=pd[a:z])
                pd[a:z] *= inv_keep
            xp.matmul(pd[a:z], v[a:z], out=yh[a:z])                            # Y, merged heads

        # batch entries are independent: one chunk per core, in cache-sized pieces
        parallel_for(rows, B, xp=xp, work_per_item=H * T * T, block=_piece(H * T * T * dt.itemsize),
                     threaded=T * T * hd <= BLAS_THREADED_MNK)   # else BLAS threads each GEMM itself
        self.q, self.k, self.v, self.p, self.yh = q, k, v, att, yh
        self.scale, self.inv_keep, self.shape = scale, inv_keep, (B, T, C, H, hd)
        return y.reshape(B, T, C)

    def backward(self, g):
        xp = self.xp
        B, T, C, H, hd = self.shape
        dy = xp.ascontiguousarray(g).reshape(B, T, H, hd).transpose(0, 2, 1, 3)   # (B, H, T, hd) view
        dqkv = xp.empty((B, T, 3, H, hd), dtype=g.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                             # (B, H, T, hd) views
        keep = self.keep

        def rows(a, z):
            attention_backward_(xp, self.p[a:z], dy[a:z], self.yh[a:z], self.v[a:z], self.k[a:z],
                                self.q[a:z], self.scale, None if keep is None else keep[a:z],
                                self.inv_keep, dq=dq[a:z], dk=dk[a:z], dv=dv[a:z])

        parallel_for(rows, B, xp=xp, work_per_item=H * T * T, block=_piece(H * T * T * g.dtype.itemsize),
                     threaded=T * T * hd <= BLAS_THREADED_MNK)
        return (dqkv.reshape(B, T, 3 * C),)


def _piece(bytes_per_item: int) -> int:
    """Batch entries per piece: enough to fill about half of a core's L2 cache, at least one."""
    return max(1, PIECE_BYTES // max(bytes_per_item, 1))


def causal_self_attention(qkv, n_head: int, dropout_p: float = 0.0):
    """qkv (B, T, 3C) -> (B, T, C): causal attention over ``n_head`` heads, one graph node."""
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    if qkv.ndim != 3:
        raise ValueError(f"causal_self_attention expects qkv of shape (B, T, 3C), got {qkv.shape}")
    return CausalSelfAttention.apply(qkv, n_head=n_head, dropout_p=dropout_p)
