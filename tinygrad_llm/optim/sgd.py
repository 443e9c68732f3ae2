"""SGD with momentum, dampening, weight decay and Nesterov, exactly as ``torch.optim.SGD``.

For each parameter p with gradient g::

    d <- g + weight_decay * p
    b <- d                                   (first step)
    b <- momentum * b + (1 - dampening) * d  (later steps)      # "momentum_buffer"
    d <- d + momentum * b   (nesterov)   or   d <- b   (momentum > 0)
    p <- p - lr * d
"""
from __future__ import annotations

import math

from .optimizer import Optimizer, check_range

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, flat: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov), flat=flat)

    def state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _check_hyper(self, group, where):
        super()._check_hyper(group, where)
        for name in ("momentum", "dampening", "weight_decay"):
            if name in group:
                check_range(name, group[name], 0.0, math.inf, where)
        if group.get("nesterov") and (group.get("momentum", 0) <= 0 or group.get("dampening", 0) != 0):
            raise ValueError(f"nesterov in {where} needs momentum > 0 and dampening = 0")

    def _update(self, xp, p, g, tmp, state, step, group):
        lr, mom, damp, wd = float(group["lr"]), group["momentum"], group["dampening"], group["weight_decay"]
        d = g
        if wd != 0:
            xp.multiply(p, wd, out=tmp)
            tmp += g
            d = tmp
        if mom != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                raise RuntimeError("momentum was 0 when this group was added, so it has no momentum buffer; "
                                   "give the group a non-zero momentum from the start")
            if step == 1:
                buf[...] = d
            else:
                buf *= mom
                buf += d if damp == 0 else (1.0 - damp) * d
            if group["nesterov"]:
                if d is g:
                    xp.multiply(buf, mom, out=tmp)
                    tmp += g
                else:
                    tmp += mom * buf
                d = tmp
            else:
                d = buf
        if d is tmp:
            tmp *= -lr
        else:
            xp.multiply(d, -lr, out=tmp)
        p += tmp
