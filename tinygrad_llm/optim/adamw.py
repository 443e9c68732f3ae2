"""AdamW: Adam with decoupled weight decay, exactly as ``torch.optim.AdamW``.

For each parameter p with gradient g, at step t (starting at 1)::

    p  <- p * (1 - lr * weight_decay)                  # decoupled weight decay
    m  <- beta1 * m + (1 - beta1) * g                  # first moment  ("exp_avg")
    v  <- beta2 * v + (1 - beta2) * g * g              # second moment ("exp_avg_sq")
    p  <- p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .. import backend, tiers
from ..kernels import cuda
from ..kernels.parallel import parallel_for
from .optimizer import Optimizer, check_range

__all__ = ["AdamW"]

_scratch = threading.local()      # each thread's own scratch array for the CPU update


def _thread_scratch(n: int, dtype) -> np.ndarray:
    """A scratch array of n elements that belongs to the calling thread (reused across steps)."""
    bufs = _scratch.__dict__.setdefault("bufs", {})
    buf = bufs.get(dtype)
    if buf is None or buf.size < n:
        buf = bufs[dtype] = np.empty(n, dtype=dtype)
    return buf[:n]


class AdamW(Optimizer):
    """``AdamW(params_or_groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)``.

    ``flat=False`` keeps one buffer per parameter (slower; for comparison).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, *, flat: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay), flat=flat)

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _check_hyper(self, group, where):
        super()._check_hyper(group, where)
        betas = group.get("betas")
        if betas is not None:
            if len(betas) != 2:
                raise ValueError(f"betas in {where} must be a pair (beta1, beta2), got {betas!r}")
            check_range("beta1", betas[0], 0.0, 1.0, where)
            check_range("beta2", betas[1], 0.0, 1.0, where)
        if "eps" in group:
            check_range("eps", group["eps"], 0.0, math.inf, where)
        if "weight_decay" in group:
            check_range("weight_decay", group["weight_decay"], 0.0, math.inf, where)

    def _update_range(self, b, lo, hi, step, group, skip=None):
        if b.xp is not np and b.dtype == np.float32 and not tiers.reference_tier_forced() and \
                cuda.ready("AdamW", b.device, self._check_fused):                   # the GPU's fused update
            lr, (beta1, beta2) = float(group["lr"]), group["betas"]
            st = b.state
            cuda.adamw_update(b.device, b.data[lo:hi], b.grad[lo:hi], st["exp_avg"][lo:hi], st["exp_avg_sq"][lo:hi],
                              lr=lr, beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                              step=step, skip=skip)
            return
        if b.xp is not np or not len(b.tmp):
            return super()._update_range(b, lo, hi, step, group, skip)

        def piece(a, z):
            a, z = lo + a, lo + z
            state = {k: v[a:z] for k, v in b.state.items()}
            self._update(np, b.data[a:z], b.grad[a:z], _thread_scratch(z - a, b.dtype), state, step, group)

        # elements are independent: one chunk per core, each updated in cache-sized pieces
        parallel_for(piece, hi - lo, block=len(b.tmp))

    def _check_fused(self, device) -> str | None:
        """The fused GPU update (kernels/cuda.py) next to :meth:`_update` on random buffers, and
        with its skip flag set; None when they agree."""
        xp, rs = backend.xp_for(device), np.random.default_rng(0)
        group = {"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
        p, g, m = (rs.standard_normal(1000).astype(np.float32) for _ in range(3))
        v = rs.random(1000).astype(np.float32)
        fused = [xp.asarray(a) for a in (p, g, m, v)]
        cuda.adamw_update(device, *fused, lr=3e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=3)
        ref = [xp.asarray(a) for a in (p, g, m, v)]
        self._update(xp, ref[0], ref[1], xp.empty_like(ref[0]), {"exp_avg": ref[2], "exp_avg_sq": ref[3]}, 3, group)
        skipped = [xp.asarray(a) for a in (p, g, m, v)]
        cuda.adamw_update(device, *skipped, lr=3e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=3,
                          skip=xp.ones((), dtype=bool))
        problems = [cuda.disagreement(name, a, b) for name, a, b in zip(("p", "exp_avg", "exp_avg_sq"),
                                                                         (fused[0], *fused[2:]), (ref[0], *ref[2:]))]
        problems += [cuda.disagreement(f"{name} with the step skipped", a, xp.asarray(b))
                     for name, a, b in zip(("p", "exp_avg", "exp_avg_sq"), (skipped[0], *skipped[2:]), (p, m, v))]
        problems = [x for x in problems if x is not None]
        return None if not problems else "disagrees with the reference update: " + "; ".join(problems)

    def _update(self, xp, p, g, tmp, state, step, group):
        """One AdamW step on matching 1-D arrays, in place, with ``tmp`` as the only scratch."""
        lr, (beta1, beta2), eps, wd = float(group["lr"]), group["betas"], group["eps"], group["weight_decay"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if wd != 0:
            p *= 1.0 - lr * wd
        xp.subtract(g, m, out=tmp)            # m += (1 - beta1) * (g - m), PyTorch's lerp form
        tmp *= 1.0 - beta1
        m += tmp
        v *= beta2                            # v = beta2 * v + (1 - beta2) * g * g
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        # m / (sqrt(v)/c2 + eps) == c2 * m / (sqrt(v) + eps * c2), with c2 = sqrt(1 - beta2**t)
        c2 = math.sqrt(1.0 - beta2 ** step)
        xp.sqrt(v, out=tmp)
        tmp += eps * c2
        xp.divide(m, tmp, out=tmp)
        tmp *= -lr * c2 / (1.0 - beta1 ** step)
        p += tmp
