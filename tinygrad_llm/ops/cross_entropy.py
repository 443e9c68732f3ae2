"""Cross-entropy of logits against integer class targets: log-softmax and NLL fused in one node.

No one-hot matrix is ever built: the forward gathers logits[i, t_i] with fancy indexing,
and the backward subtracts at the target positions with a scatter into the softmax.
"""
from __future__ import annotations

import math

from ..function import Function
from ..parallel import parallel_for

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """Cross-entropy loss. logits (..., C) float, targets (...) int -> loss () or (...) for "none".

    With p = softmax(logits_i), lse_i = log(sum(exp(logits_i))) and eps = label_smoothing,
        loss_i = (1 - eps) * (lse_i - logits_i[t_i]) + eps * (lse_i - mean(logits_i))
    (0 where t_i == ignore_index); "mean" divides the sum by the number of counted rows.
    dlogits_i = (p - (1 - eps) * onehot(t_i) - eps / C) * scale_i, where scale_i is d loss / d loss_i
    (g / n_counted for "mean", g for "sum", g_i for "none"; 0 on ignored rows).
    """

    def forward(self, logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        xp = self.xp
        self._check(logits, targets, reduction, label_smoothing)
        C = logits.shape[-1]
        N = math.prod(targets.shape)
        x2 = logits.reshape(N, C)
        t = targets.reshape(N)
        valid = t != ignore_index
        bad = valid & ((t < 0) | (t >= C))
        if bool(bad.any()):
            value = int(t[bad][0])
            raise ValueError(f"cross_entropy: target {value} is out of range: class indices must be in "
                             f"[0, {C - 1}] for logits with C={C} classes (or equal ignore_index={ignore_index})")
        t = xp.where(valid, t, 0)             # any class will do on ignored rows: their loss is zeroed
        rows = xp.arange(N)

        # with z = x - m (m the row max): -log softmax(x)[c] = log(sum(exp(z))) - z[c]
        eps = float(label_smoothing)
        p = xp.empty_like(x2)                     # z for now; exp(z) below
        z_t, s = xp.empty(N, dtype=x2.dtype), xp.empty(N, dtype=x2.dtype)
        z_mean = xp.empty(N, dtype=x2.dtype) if eps else None

        def chunk(a, b):
            xa, pa = x2[a:b], p[a:b]
            xp.subtract(xa, xa.max(axis=1, keepdims=True), out=pa)
            z_t[a:b] = pa[rows[:b - a], t[a:b]]   # gathered before exp: no one-hot anywhere
            if eps:
                pa.mean(axis=1, out=z_mean[a:b])
            xp.exp(pa, out=pa)                    # p = exp(z): the softmax before normalising
            pa.sum(axis=1, out=s[a:b])            # (rows,)

        parallel_for(chunk, N, xp=xp, work_per_item=C)   # rows are independent: one chunk per core
        log_s = xp.log(s)
        loss = log_s - z_t                        # -log softmax at the target
        if eps:
            loss *= 1.0 - eps
            loss += eps * (log_s - z_mean)        # -mean over classes of log softmax
        loss = xp.where(valid, loss, 0).astype(logits.dtype, copy=False)

        self.p, self.s, self.t, self.rows, self.valid = p, s, t, rows, valid
        self.eps, self.reduction, self.shape = eps, reduction, logits.shape
        if reduction == "none":
            return loss.reshape(targets.shape)
        total = loss.sum()
        if reduction == "sum":
            return total
        self.count = int(valid.sum())        # the rows "mean" averages over
        return total / max(self.count, 1)    # every row ignored: loss 0, gradient 0 (not NaN)

    def backward(self, g):
        xp = self.xp
        dtype = self.p.dtype
        if self.reduction == "none":
            scale = g.reshape(-1)
        elif self.reduction == "sum":
            scale = g.reshape(1)
        else:
            scale = g.reshape(1) / max(self.count, 1)
        scale = xp.where(self.valid, scale, 0).astype(dtype, copy=False)     # (N,), 0 on ignored rows
        f = (scale / self.s)[:, None]                   # softmax * scale, normalising in the same pass
        d = xp.empty_like(self.p)
        smooth = (self.eps / self.p.shape[1]) * scale[:, None] if self.eps else None

        def chunk(a, b):
            xp.multiply(self.p[a:b], f[a:b], out=d[a:b])
            if smooth is not None:
                d[a:b] -= smooth[a:b]

        parallel_for(chunk, d.shape[0], xp=xp, work_per_item=d.shape[1])   # rows are independent
        d[self.rows, self.t] -= (1.0 - self.eps) * scale
        return d.reshape(self.shape), None

    @staticmethod
    def _check(logits, targets, reduction, label_smoothing):
        if reduction not in REDUCTIONS:
            raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if isinstance(label_smoothing, bool) or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if logits.dtype.kind != "f":
            raise TypeError(f"cross_entropy: logits must be floating point, got {logits.dtype}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype} "
                            "(class-probability targets are not supported)")
        if logits.ndim == 0 or logits.shape[-1] == 0:
            raise ValueError(f"cross_entropy: logits must have shape (..., C) with C >= 1, got {logits.shape}")
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                             f"{logits.shape[:-1]} (one class index per row), got {targets.shape}")
