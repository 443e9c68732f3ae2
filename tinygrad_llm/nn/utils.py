"""Gradient utilities: ``clip_grad_norm_`` (as ``torch.nn.utils.clip_grad_norm_``), and
activation checkpointing, ``checkpoint`` (nn/recompute.py; ``torch.utils.checkpoint``'s name).

Both gradient functions work on the device the gradients live on and read nothing back
from a GPU: the norm is a 0-d array there, and clipping scales by
``min(max_norm / (norm + 1e-6), 1)`` computed there too. Gradients that are views lying side
by side in one flat buffer (an optimizer's: docs/nn.md) are reduced and scaled as that one
buffer, a call or two instead of one per parameter.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor
from .recompute import checkpoint

__all__ = ["clip_grad_norm_", "grad_norm", "checkpoint"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _tiles(base, views) -> bool:
    """True when the C-contiguous ``views`` lie side by side in ``base`` and cover all of it."""
    if sum(v.size for v in views) != base.size or not all(v.flags.c_contiguous for v in views):
        return False
    spans = sorted((backend.data_ptr(v), v.nbytes) for v in views)
    pos = backend.data_ptr(base)
    for start, nbytes in spans:
        if start != pos:
            return False
        pos += nbytes
    return pos == backend.data_ptr(base) + base.nbytes


def _pieces(grads) -> list:
    """The arrays to reduce and scale: a flat buffer once where the gradients are views that
    tile it exactly, every other gradient as itself (each array once)."""
    by_base, out = {}, []
    for g in grads:
        base = g.base
        if base is not None and base.ndim == 1 and base.flags.c_contiguous:      # keyed by memory, not by
            key = (backend.data_ptr(base), base.nbytes)                          # object: CuPy may give a new
            by_base.setdefault(key, (base, {}))[1][id(g)] = g                   # .base object each time
    covered = set()
    for base, views in by_base.values():
        if _tiles(base, list(views.values())):
            out.append(base)
            covered.update(views)
    seen = set(covered)
    for g in grads:
        if id(g) not in seen:
            seen.add(id(g))
            out.append(g)
    return out


def _norm_on_device(pieces, norm_type: float):
    """The norm of all ``pieces`` taken together, as a 0-d array on their device (one device)."""
    xp = backend.xp_for(backend.device_of_array(pieces[0]))
    partial = []
    for g in pieces:
        flat = g.reshape(-1)
        if flat.size == 0:
            continue
        if math.isinf(norm_type):
            partial.append(xp.abs(flat).max())
        elif norm_type == 2.0:
            partial.append(xp.dot(flat, flat))          # BLAS: one call
        elif norm_type == 1.0:
            partial.append(xp.abs(flat).sum())
        elif norm_type == 0.0:
            partial.append(xp.asarray(xp.count_nonzero(flat), dtype=flat.dtype))
        else:
            partial.append((xp.abs(flat) ** norm_type).sum())
    if not partial:
        return xp.zeros((), dtype=pieces[0].dtype)
    total = partial[0]
    for p in partial[1:]:
        total = xp.maximum(total, p) if math.isinf(norm_type) else total + p
    if norm_type not in (0.0, 1.0) and not math.isinf(norm_type):
        total = total ** (1.0 / norm_type)
    return xp.asarray(total)                              # NumPy reductions give scalars


def _total_norm(grads, norm_type) -> Tensor:
    """The norm as a 0-d Tensor on the gradients' device (on the CPU if they are on several)."""
    norm_type = float(norm_type)
    if not norm_type >= 0:
        raise ValueError(f"norm_type must be >= 0 or inf, got {norm_type!r}")
    if not grads:
        return Tensor(np.zeros((), dtype=backend.default_dtype))
    by_device = {}
    for g in _pieces(grads):
        by_device.setdefault(backend.device_of_array(g), []).append(g)
    if len(by_device) == 1:
        (device, pieces), = by_device.items()
        return Tensor.wrap(_norm_on_device(pieces, norm_type), device)
    # several devices (rare): combine each device's norm on the host
    parts = [backend.to_numpy(_norm_on_device(p, norm_type)).astype(np.float64) for p in by_device.values()]
    if math.isinf(norm_type):
        total = max(parts)
    elif norm_type in (0.0, 1.0):
        total = sum(parts)
    else:
        total = sum(p ** norm_type for p in parts) ** (1.0 / norm_type)
    return Tensor(np.asarray(total, dtype=grads[0].dtype))


def grad_norm(parameters, norm_type: float = 2.0) -> float:
    """The ``norm_type``-norm of all gradients taken together (as if concatenated into one vector),
    as a Python float (on a GPU this waits for the device)."""
    return float(_total_norm(_grads(parameters), norm_type).item())


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients in place so their joint norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: total = ||concat(grads)||, and each grad is
    multiplied by ``max_norm / (total + 1e-6)`` when that factor is below 1. The norm comes
    back as a 0-d Tensor on the gradients' device (``float(norm)`` reads it), so on a GPU
    nothing waits: the factor is computed and applied there. ``error_if_nonfinite=True``
    reads the norm (a wait on a GPU) and raises if it is NaN or inf.
    """
    max_norm = float(max_norm)
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"max_norm must be >= 0, got {max_norm!r}")
    grads = _grads(parameters)
    total = _total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {float(total)}, so they "
                           "cannot be clipped; pass error_if_nonfinite=False to skip this check")
    if not grads:
        return total
    pieces = _pieces(grads)
    if total.device == "cpu":
        coef = max_norm / (float(total) + 1e-6)           # on the host: free, and scale only when needed
        if coef < 1.0:
            for g in pieces:
                g *= g.dtype.type(coef)
        return total
    xp = total.xp
    coef = xp.minimum(max_norm / (total.data + 1e-6), 1.0)  # on the device: no wait (NaN stays NaN)
    for g in pieces:
        g *= coef.astype(g.dtype, copy=False)
    return total
