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
from ..parallel import BLAS_THREADED_MNK, parallel_for
from .attention import causal_mask
from .softmax import rowdot

PIECE_BYTES = 1 << 19       # a piece's (H, T, T) scores: about half a core's L2 cache

class CausalSelfAttention(Function):
    """qkv (B, T, 3C) -> y (B, T, C) with ``n_head`` heads of size hd = C / n_head.

    The batch entries are independent: on CPU they are split into one chunk per core
    (``parallel.parallel_for``), each chunk worked in pieces whose (H, T, T) scores stay in
    cache. K and V are read in place from qkv (NumPy's matmul takes their row stride).
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
        q = xp.empty((B, H, T, hd), dtype=dt)
        att = xp.empty((B, H, T, T), dtype=dt)
        y = xp.empty((B, T, H, hd), dtype=dt)
        mask = causal_mask(T, T, self.device, dt)   # 0 / -inf, cached
        self.keep = None
        if dropout_p > 0.0:            # drawn up front, in one call: the same stream as ever
            self.keep = backend.rng(self.device).random(att.shape, dtype=dt) >= dropout_p
        pd = att if self.keep is None else xp.empty_like(att)
        inv_keep = dt.type(1.0 / (1.0 - dropout_p))

        def rows(a, z):
            qa, pa = q[a:z], att[a:z]
            xp.multiply(heads[0, a:z], scale, out=qa)                          # q = s * Q
            xp.matmul(qa, k[a:z].transpose(0, 1, 3, 2), out=pa)                # (b, H, T, T)
            pa += mask
            pa -= pa.max(axis=-1, keepdims=True)
            xp.exp(pa, out=pa)
            pa /= pa.sum(axis=-1, keepdims=True)                               # P
            if self.keep is not None:
                xp.multiply(pa, self.keep[a:z], out=pd[a:z])
                pd[a:z] *= inv_keep
            xp.matmul(pd[a:z], v[a:z], out=y[a:z].transpose(0, 2, 1, 3))      # Y, merged heads

        # batch entries are independent: one chunk per core, in cache-sized pieces
        parallel_for(rows, B, xp=xp, work_per_item=H * T * T, block=_piece(H * T * T * dt.itemsize),
                     threaded=T * T * hd <= BLAS_THREADED_MNK)   # else BLAS threads each GEMM itself
        self.q, self.k, self.v, self.p, self.pd = q, k, v, att, pd
        self.scale, self.inv_keep, self.shape = scale, inv_keep, (B, T, C, H, hd)
        return y.reshape(B, T, C)

    def backward(self, g):
        xp = self.xp
        B, T, C, H, hd = self.shape
        dy = xp.ascontiguousarray(g).reshape(B, T, H, hd).transpose(0, 2, 1, 3)   # (B, H, T, hd) view
        dqkv = xp.empty((B, T, 3, H, hd), dtype=g.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                             # (B, H, T, hd) views
        q, k, v, p, pd, keep = self.q, self.k, self.v, self.p, self.pd, self.keep

        def rows(a, z):
            dya, pa = dy[a:z], p[a:z]
            xp.matmul(pd[a:z].transpose(0, 1, 3, 2), dya, out=dv[a:z])         # dV = Pd^T dY
            ds = xp.matmul(dya, v[a:z].transpose(0, 1, 3, 2))                  # dPd
            if keep is not None:
                ds *= keep[a:z]
                ds *= self.inv_keep                                            # dP
            ds -= rowdot(xp, ds, pa, -1)
            ds *= pa                                                           # dS = P * (dP - rowsum(dP * P))
            xp.matmul(ds, k[a:z], out=dq[a:z])
            dq[a:z] *= self.scale
            xp.matmul(ds.transpose(0, 1, 3, 2), q[a:z], out=dk[a:z])

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
