"""Gradient utilities: ``clip_grad_norm_`` (as ``torch.nn.utils.clip_grad_norm_``), and
activation checkpointing, ``checkpoint`` (nn/recompute.py; ``torch.utils.checkpoint``'s name)."""
from __future__ import annotations

import math

from .. import backend
from ..tensor import Tensor
from .recompute import checkpoint

__all__ = ["clip_grad_norm_", "grad_norm", "checkpoint"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def grad_norm(parameters, norm_type: float = 2.0) -> float:
    """The ``norm_type``-norm of all gradients taken together (as if concatenated into one vector)."""
    return _total_norm(_grads(parameters), norm_type)


def _total_norm(grads, norm_type) -> float:
    norm_type = float(norm_type)
    if not norm_type >= 0:
        raise ValueError(f"norm_type must be >= 0 or inf, got {norm_type!r}")
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        return max(float(abs(g).max()) if g.size else 0.0 for g in grads)
    total = 0.0
    for g in grads:  # one vectorised reduction per gradient; a device sync per gradient on GPU
        xp = backend.xp_for(backend.device_of_array(g))
        flat = g.reshape(-1)
        if norm_type == 2.0:
            total += float(xp.dot(flat, flat))      # BLAS: fast and multi-threaded
        elif norm_type == 1.0:
            total += float(xp.abs(flat).sum())
        elif norm_type == 0.0:
            total += float(xp.count_nonzero(flat))
        else:
            total += float((xp.abs(flat) ** norm_type).sum())
    if norm_type == 0.0 or norm_type == 1.0:
        return total
    return total ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so their joint norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: total = ||concat(grads)||, and each grad is
    multiplied by ``max_norm / (total + 1e-6)`` when that factor is below 1.
    """
    max_norm = float(max_norm)
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"max_norm must be >= 0, got {max_norm!r}")
    grads = _grads(parameters)
    total = _total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total}, so they "
                           "cannot be clipped; pass error_if_nonfinite=False to skip this check")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return total

