"""Cross-entropy of logits, log-softmax and NLL fused in one node, against class indices or
class probabilities, with optional per-class weights and label smoothing (PyTorch's rules).

With class-index targets no one-hot matrix is ever built: the forward gathers z[i, t_i]
with fancy indexing, and the backward subtracts at the target positions. Derivation:
docs/backprop.md, section "Log-softmax and cross-entropy", with the same names.
"""
from __future__ import annotations

from ..function import Function
from .reduce import shift_of

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """logits (..., C) float; targets (...) int class indices or (..., C) float class
    probabilities; weight (C,) or None -> loss () or (...) for reduction "none".

    Per row i, with z = logits - (row max), s = sum(exp(z)), log_s = log(s), p = exp(z) / s,
    eps = label_smoothing, w the class weights (all 1 when absent) and q_i the smoothed
    target, (1 - eps) * onehot(t_i) + eps / C (or (1 - eps) * y_i + eps / C):
        loss_i = sum_c w_c q_ic (log_s_i - z_ic)     (0 where t_i == ignore_index)
    "mean" divides the sum by count = sum of w_t over the counted rows (class indices) or by
    the number of rows (probabilities); when that is 0 the loss is 0 with zero gradients.
        dlogits_i = (a_i p_i - w * q_i) * scale_i,   a_i = sum_c w_c q_ic,
        dy_i = -(1 - eps) * w * (z_i - log_s_i) * scale_i   (probability targets),
    scale_i = d loss / d loss_i.
    """

    def forward(self, logits, targets, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        xp, eps = self.xp, label_smoothing
        C = logits.shape[-1]
        z = logits.reshape(-1, C)
        N = z.shape[0]
        z = z - shift_of(xp, z, 1)
        log_s = xp.log(xp.exp(z).sum(axis=1))                        # (N,)
        w = xp.ones(C, dtype=z.dtype) if weight is None else weight
        self.soft = targets.dtype.kind == "f"
        if self.soft:                                                  # q (N, C) given
            y = targets.reshape(N, C)
            wq = w * ((1.0 - eps) * y + eps / C)
            a = wq.sum(axis=1)
            loss = a * log_s - (wq * z).sum(axis=1)
            count = xp.asarray(N, dtype=z.dtype)                       # "mean" averages over rows
            self.wq = wq
        else:                                                          # q_i = (1 - eps) onehot(t_i) + eps / C
            t = targets.reshape(N)
            valid = t != ignore_index
            t = xp.where(valid, t, 0)                  # any class will do on ignored rows: they count 0
            w_t = xp.where(valid, w[t], z.dtype.type(0))              # (N,) the target's weight
            z_t = z[xp.arange(N), t]                                   # gathered: no one-hot anywhere
            a = (1.0 - eps) * w_t + (eps / C) * w.sum() * valid
            loss = (1.0 - eps) * w_t * (log_s - z_t) + (eps / C) * (w.sum() * log_s - z @ w) * valid
            count = w_t.sum()                                          # = counted rows without weights
            self.t, self.w_t, self.valid = t, w_t, valid
        self.z, self.log_s, self.w, self.a, self.eps = z, log_s, w, a, eps
        self.reduction, self.count, self.shape = reduction, count, logits.shape
        if reduction == "none":
            return loss.reshape(logits.shape[:-1])
        if reduction == "sum":
            return loss.sum()
        return xp.where(count == 0, z.dtype.type(0), loss.sum() / xp.where(count == 0, 1, count))

    def backward(self, g):
        xp, z, eps, w = self.xp, self.z, self.eps, self.w
        N, C = z.shape
        if self.reduction == "none":                                   # scale_i = d loss / d loss_i
            scale = g.reshape(N)
        elif self.reduction == "sum":
            scale = xp.broadcast_to(g, (N,))
        else:
            scale = xp.broadcast_to(xp.where(self.count == 0, 0, g / xp.where(self.count == 0, 1, self.count)), (N,))
        scale = scale.astype(z.dtype)[:, None]
        p = xp.exp(z - self.log_s[:, None])                            # softmax
        if self.soft:
            dx = (self.a[:, None] * p - self.wq) * scale
            dy = -(1.0 - eps) * w * (z - self.log_s[:, None]) * scale  # -(1 - eps) w log p
            return dx.reshape(self.shape), dy.reshape(self.shape)
        dx = self.a[:, None] * p - (eps / C) * w * self.valid[:, None]
        dx[xp.arange(N), self.t] -= (1.0 - eps) * self.w_t            # the one-hot part, one entry per row
        return (dx * scale).reshape(self.shape), None
