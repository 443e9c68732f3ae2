"""Factories: new tensors on a device, float32 unless ``dtype`` says otherwise."""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["zeros", "ones", "full", "randn", "rand", "randint", "arange", "eye",
           "zeros_like", "ones_like", "full_like", "randn_like", "rand_like"]


def _setup(shape, device, dtype):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    device = backend.canonical_device(device)
    dtype = backend.default_dtype if dtype is None else backend.canonical_dtype(dtype)
    return shape, device, backend.xp_for(device), dtype


def _make(arr, device, requires_grad):
    return Tensor.wrap(arr, device).requires_grad_(requires_grad)   # requires_grad_ checks the dtype


def zeros(*shape, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    shape, device, xp, dtype = _setup(shape, device, dtype)
    return _make(xp.zeros(shape, dtype=dtype), device, requires_grad)


def ones(*shape, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    shape, device, xp, dtype = _setup(shape, device, dtype)
    return _make(xp.ones(shape, dtype=dtype), device, requires_grad)


def full(shape, fill_value, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    """``shape`` filled with ``fill_value``. Without ``dtype`` the fill value decides it, as in
    PyTorch: a bool gives bool, an int int64, a float the default float32."""
    if dtype is None and isinstance(fill_value, (bool, np.bool_)):
        dtype = np.bool_
    elif dtype is None and isinstance(fill_value, (int, np.integer)):
        dtype = np.int64
    shape, device, xp, dtype = _setup((shape,) if isinstance(shape, int) else (tuple(shape),), device, dtype)
    return _make(xp.full(shape, fill_value, dtype=dtype), device, requires_grad)


def _random(kind, shape, device, dtype, requires_grad):
    shape, device, xp, dtype = _setup(shape, device, dtype)
    if dtype.kind != "f":
        raise ValueError(f"{kind} makes floating-point tensors, got dtype {dtype}")
    g = backend.rng(device)
    gen_dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    arr = g.standard_normal(shape, dtype=gen_dtype) if kind == "randn" else g.random(shape, dtype=gen_dtype)
    return _make(arr.astype(dtype, copy=False), device, requires_grad)


def randn(*shape, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the package's seeded generator (see ``manual_seed``)."""
    return _random("randn", shape, device, dtype, requires_grad)


def rand(*shape, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the package's seeded generator."""
    return _random("rand", shape, device, dtype, requires_grad)


def randint(low, high=None, size=None, device="cpu", dtype=None) -> Tensor:
    """Integers drawn uniformly from [low, high) (``randint(high, size)`` means low = 0), PyTorch's
    order of arguments; int64 unless ``dtype`` says otherwise. Uses the package's generator."""
    if size is None:                                   # randint(high, size)
        if high is None:
            raise TypeError("randint needs high and size: randint(high, size) or randint(low, high, size)")
        low, high, size = 0, low, high
    elif high is None:
        raise TypeError("randint needs high: randint(high, size) or randint(low, high, size)")
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"randint: {name} must be an int, got {v!r}")
    if not low < high:
        raise ValueError(f"randint: low must be < high, got low={low}, high={high}")
    shape, device, xp, dtype = _setup((size,) if isinstance(size, int) else (tuple(size),), device,
                                      np.int64 if dtype is None else dtype)
    if dtype.kind not in "iu":
        raise ValueError(f"randint makes integer tensors, got dtype {dtype}")
    arr = backend.rng(device).integers(int(low), int(high), size=shape, dtype=np.int64)
    return _make(xp.asarray(arr).astype(dtype, copy=False), device, False)


def arange(start, stop=None, step=1, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    """Like ``numpy.arange``; integers give int64, any float argument gives float32."""
    if stop is None:
        start, stop = 0, start
    device = backend.canonical_device(device)
    xp = backend.xp_for(device)
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if is_int else backend.default_dtype
    return _make(xp.arange(start, stop, step, dtype=backend.canonical_dtype(dtype)), device, requires_grad)


def eye(n, m=None, device="cpu", dtype=None, requires_grad=False) -> Tensor:
    _, device, xp, dtype = _setup((), device, dtype)
    return _make(xp.eye(n, m, dtype=dtype), device, requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, device=device or t.device, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(t.shape, device=device or t.device, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, device=device or t.device, dtype=dtype or t.dtype,
                requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return randn(t.shape, device=device or t.device, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    return rand(t.shape, device=device or t.device, dtype=dtype or t.dtype, requires_grad=requires_grad)
