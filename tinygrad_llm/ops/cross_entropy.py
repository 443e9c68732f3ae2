"""Cross-entropy of logits, log-softmax and NLL fused in one node, against class indices or
class probabilities, with optional per-class weights and label smoothing (PyTorch's rules).

With class-index targets no one-hot matrix is ever built: the forward gathers
logits[i, t_i] with fancy indexing, and the backward subtracts at the target positions
with a scatter into the softmax. Probability targets are an (N, C) array already.
"""
from __future__ import annotations

import math

from ..function import Function
from ..parallel import parallel_for

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """Cross-entropy loss. logits (..., C) float; targets (...) int class indices or (..., C)
    float class probabilities -> loss () or (...) for "none".

    With lse_i = log(sum(exp(logits_i))), eps = label_smoothing and per-class weights w
    (all 1 when absent), the smoothed target of row i is q_i = (1 - eps) * onehot(t_i) + eps / C
    (or (1 - eps) * y_i + eps / C for probability targets y), and
        loss_i = sum_c w_c q_ic (lse_i - logits_ic)           (0 where t_i == ignore_index)
    "mean" divides the sum by sum_i w_{t_i} over the counted rows (class indices; the
    number of counted rows without weights) or by the number of rows (probabilities);
    when that is 0 the loss is 0 with zero gradients (PyTorch gives NaN).
    dlogits_i = (a_i p_i - w * q_i) * scale_i,  a_i = sum_c w_c q_ic,  p_i = softmax(logits_i),
    dy_i = -(1 - eps) * w * log p_i * scale_i (probability targets), scale_i = d loss / d loss_i.
    """

    def forward(self, logits, targets, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        xp = self.xp
        soft = targets.dtype.kind == "f"
        self._check(logits, targets, weight, reduction, label_smoothing, soft)
        C = logits.shape[-1]
        N = math.prod(logits.shape[:-1])
        x2 = logits.reshape(N, C)
        eps = float(label_smoothing)
        w = None if weight is None else weight.astype(logits.dtype, copy=False)
        self.eps, self.reduction, self.shape, self.w, self.soft = eps, reduction, logits.shape, w, soft
        if soft:
            if ignore_index >= 0:
                raise ValueError(f"cross_entropy: ignore_index={ignore_index} is not supported with class-"
                                 "probability targets (as in PyTorch); give class indices to ignore rows")
            return self._forward_soft(x2, targets.reshape(N, C).astype(logits.dtype, copy=False))
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
        p = xp.empty_like(x2)                     # z for now; exp(z) below
        z_t, s = xp.empty(N, dtype=x2.dtype), xp.empty(N, dtype=x2.dtype)
        z_w = xp.empty(N, dtype=x2.dtype) if eps else None    # sum_c w_c z_c (w = 1: sum_c z_c)

        def chunk(a, b):
            xa, pa = x2[a:b], p[a:b]
            xp.subtract(xa, xa.max(axis=1, keepdims=True), out=pa)
            z_t[a:b] = pa[rows[:b - a], t[a:b]]   # gathered before exp: no one-hot anywhere
            if eps:
                z_w[a:b] = pa.sum(axis=1) if w is None else pa @ w
            xp.exp(pa, out=pa)                    # p = exp(z): the softmax before normalising
            pa.sum(axis=1, out=s[a:b])            # (rows,)

        parallel_for(chunk, N, xp=xp, work_per_item=C)   # rows are independent: one chunk per core
        log_s = xp.log(s)
        w_t = None if w is None else xp.where(valid, w[t], 0)   # the target's weight, 0 on ignored rows
        loss = log_s - z_t                        # -log softmax at the target
        if w_t is not None:
            loss *= w_t
        if eps:
            loss *= 1.0 - eps
            self.w_sum = C if w is None else float(w.sum())
            loss += (eps / C) * (self.w_sum * log_s - z_w)   # -(1/C) sum_c w_c log softmax_c
        loss = xp.where(valid, loss, 0).astype(logits.dtype, copy=False)

        self.p, self.s, self.t, self.rows, self.valid, self.w_t = p, s, t, rows, valid, w_t
        if reduction == "none":
            return loss.reshape(targets.shape)
        total = loss.sum()
        if reduction == "sum":
            return total
        # the rows "mean" averages over, weighted by their target's weight
        self.count = float(valid.sum()) if w_t is None else float(w_t.sum())
        if self.count == 0:                       # nothing counted (or weights summing to 0):
            return xp.zeros((), dtype=logits.dtype)   # loss 0 and, below, gradient 0 (not NaN)
        return total / self.count

    def _forward_soft(self, x2, y):
        """Probability targets y (N, C): loss_i = sum_c wq_ic (lse_i - x_ic), wq = w * q."""
        xp, eps, w = self.xp, self.eps, self.w
        N, C = x2.shape
        q = y if not eps else (1.0 - eps) * y + eps / C
        wq = q if w is None else q * w
        m = x2.max(axis=1, keepdims=True)
        p = xp.subtract(x2, m)                    # z
        loss = -xp.einsum("ij,ij->i", wq, p)    # -sum_c wq_ic z_ic
        xp.exp(p, out=p)
        s = p.sum(axis=1)
        log_s = xp.log(s)
        a = wq.sum(axis=1)                        # sum_c wq_ic
        loss += a * log_s
        loss = loss.astype(x2.dtype, copy=False)
        self.x2, self.m, self.p, self.s, self.log_s, self.wq, self.a = x2, m, p, s, log_s, wq, a
        if self.reduction == "none":
            return loss.reshape(self.shape[:-1])
        total = loss.sum()
        if self.reduction == "sum":
            return total
        return total / N if N else xp.zeros((), dtype=x2.dtype)    # no rows: 0, not NaN

    def _scale(self, g, n_rows):
        """d loss / d loss_i, (N,)."""
        xp = self.xp
        if self.reduction == "none":
            return g.reshape(-1)
        if self.reduction == "sum":
            return xp.broadcast_to(g.reshape(1), (n_rows,))
        denom = float(n_rows) if self.soft else self.count
        if denom == 0:                            # the forward returned 0: nothing depends on the logits
            return xp.zeros(n_rows, dtype=g.dtype)
        return xp.broadcast_to(g.reshape(1) / denom, (n_rows,))

    def backward(self, g):
        xp = self.xp
        if self.soft:
            return self._backward_soft(g)
        dtype, eps, w = self.p.dtype, self.eps, self.w
        N, C = self.p.shape
        scale = xp.where(self.valid, self._scale(g, N), 0).astype(dtype, copy=False)   # 0 on ignored rows
        w_t = 1.0 if self.w_t is None else self.w_t
        # d_ic = scale_i * (a_i p_ic - (1 - eps) w_t_i onehot_ic - (eps / C) w_c),
        # a_i = (1 - eps) w_t_i + (eps / C) sum_c w_c  (= 1 without weights)
        a = (1.0 - eps) * w_t + (eps / C) * self.w_sum if eps else w_t
        f = (scale * a / self.s)[:, None]               # softmax * scale * a, normalising in the same pass
        d = xp.empty_like(self.p)
        smooth = None
        if eps:
            smooth = (eps / C) * scale[:, None]
            if w is not None:
                smooth = smooth * w                     # (N, C): the weighted uniform part

        def chunk(lo, hi):
            xp.multiply(self.p[lo:hi], f[lo:hi], out=d[lo:hi])
            if smooth is not None:
                d[lo:hi] -= smooth[lo:hi]

        parallel_for(chunk, N, xp=xp, work_per_item=C)   # rows are independent
        d[self.rows, self.t] -= (1.0 - eps) * scale * w_t
        return d.reshape(self.shape), None

    def _backward_soft(self, g):
        xp, eps, w = self.xp, self.eps, self.w
        N, C = self.p.shape
        scale = self._scale(g, N).astype(self.p.dtype, copy=False)[:, None]
        dx = xp.multiply(self.p, (self.a / self.s)[:, None])   # a_i * softmax
        dx -= self.wq
        dx *= scale
        dy = None
        if self.needs_input_grad[1]:
            logp = xp.subtract(self.x2, self.m)
            logp -= self.log_s[:, None]               # log softmax, from the logits (no log(0))
            dy = logp * (-(1.0 - eps))
            if w is not None:
                dy *= w
            dy *= scale
            dy = dy.reshape(self.shape)
        return dx.reshape(self.shape), dy

    @staticmethod
    def _check(logits, targets, weight, reduction, label_smoothing, soft):
        if reduction not in REDUCTIONS:
            raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if isinstance(label_smoothing, bool) or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if logits.dtype.kind != "f":
            raise TypeError(f"cross_entropy: logits must be floating point, got {logits.dtype}")
        if targets.dtype.kind not in "iuf":
            raise TypeError(f"cross_entropy: targets must be integer class indices or floating-point class "
                            f"probabilities, got dtype {targets.dtype}")
        if logits.ndim == 0 or logits.shape[-1] == 0:
            raise ValueError(f"cross_entropy: logits must have shape (..., C) with C >= 1, got {logits.shape}")
        if soft and targets.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape {logits.shape} "
                             f"(one distribution over the C classes per row), got {targets.shape}")
        if not soft and targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                             f"{logits.shape[:-1]} (one class index per row), got {targets.shape}")
        if weight is not None:
            C = logits.shape[-1]
            if weight.shape != (C,):
                raise ValueError(f"cross_entropy: weight must have one value per class, shape ({C},), "
                                 f"got {weight.shape}")
            if weight.dtype.kind != "f":
                raise TypeError(f"cross_entropy: weight must be floating point, got {weight.dtype}")
