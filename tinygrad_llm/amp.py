"""Mixed precision: ``autocast`` (float16 activations and matrix products) and ``GradScaler``
(dynamic loss scaling), with the names and semantics of ``torch.amp``.

    scaler = GradScaler()                        # initial scale 2**16, growth x2 every 2000 clean steps
    with autocast("float16"):
        logits, loss = model(x, y)               # float16 activations, float32 loss
    scaler.scale(loss).backward()                # float32 gradients of the float32 weights, times the scale
    scaler.unscale_(optimizer)                   # divide by the scale, look for inf / NaN
    clip_grad_norm_(model.parameters(), 1.0)     # on the true gradients
    scaler.step(optimizer)                       # skipped when a gradient overflowed
    scaler.update()                              # halve the scale after an overflow, grow it after 2000 clean steps

**autocast.** The weights stay float32 (the optimizer updates these "master" weights); inside
the block, the public functions (``nn.functional``) cast what they compute with:

* to float16: ``linear`` (input, weight and bias), ``scaled_dot_product_attention`` and
  ``causal_self_attention`` (queries, keys, values; their softmax statistics are float32 inside
  the op), and the output of ``embedding``, so the residual stream is float16;
* to float32: ``softmax``, ``log_softmax`` and ``cross_entropy`` (the loss);
* ``layer_norm`` and ``rms_norm`` take float16 rows, compute their statistics in float32 and
  return float16; elementwise ops (GELU, dropout, adds) follow their inputs.

Each cast is a recorded node, so the gradients come back to the float32 weights as float32.
Only float32 tensors are cast down (float64 stays float64). bfloat16 is not offered: neither
NumPy nor CuPy has a bfloat16 dtype.

**GradScaler.** float16's smallest normal number is 6e-5 (subnormals reach 6e-8): small
gradients underflow to 0 in the float16 parts of the backward pass. Multiplying the loss by
a scale s multiplies every gradient by s (the backward pass is linear in its seed), lifting
them into float16's range; ``unscale_`` divides by s again in float32. s is a power of two,
so both multiplications are exact. Too large an s overflows to inf: then the step is
skipped (weights and optimizer state untouched) and s is halved; after ``growth_interval``
steps without overflow s is doubled. Its state (``state_dict``) goes into training
checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from . import backend
from .function import set_autocast_dtype
from .tensor import Tensor

__all__ = ["autocast", "GradScaler", "AMP_DTYPES", "check_amp_dtype"]

#: the dtypes a run can compute in: float32 (no mixed precision) and float16 (autocast + GradScaler)
AMP_DTYPES = ("float32", "float16")


def check_amp_dtype(dtype, where: str) -> str:
    """``dtype`` as one of AMP_DTYPES; ValueError naming ``where`` otherwise (bfloat16 with its reason)."""
    name = dtype if isinstance(dtype, str) else _dtype_name(dtype)
    if name in ("bfloat16", "bf16"):
        raise ValueError(f"{where}: bfloat16 is not available: neither NumPy nor CuPy has a bfloat16 dtype "
                         "(it would have to be emulated in float32, saving nothing); use float16 or float32")
    if name not in AMP_DTYPES:
        raise ValueError(f"{where} must be one of {AMP_DTYPES}, got {dtype!r}")
    return name


def _dtype_name(value):
    """NumPy's name of a dtype or type (np.float16 -> "float16"), or None for anything else."""
    try:
        return np.dtype(value).name
    except TypeError:
        return None


class autocast(contextlib.ContextDecorator):
    """``with autocast("float16"):`` runs the block in mixed precision (module docstring); also a
    decorator. ``autocast("float32")`` or ``enabled=False`` turns it off inside the block. The
    setting is per thread; the previous one comes back on exit."""

    def __init__(self, dtype="float16", enabled: bool = True):
        name = check_amp_dtype(dtype, "autocast: dtype")
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be True or False, got {enabled!r}")
        self.dtype = np.dtype(np.float16) if enabled and name == "float16" else None
        self._saved = []

    def __enter__(self):
        self._saved.append(set_autocast_dtype(self.dtype))
        return self

    def __exit__(self, *exc):
        set_autocast_dtype(self._saved.pop())
        return False


def _positive(name, value, lo=0.0, lo_open=True, hi=math.inf):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and \
        (value > lo if lo_open else value >= lo) and value < hi
    if not ok:
        raise ValueError(f"GradScaler: {name} must be a finite number {'>' if lo_open else '>='} {lo:g}"
                         + (f" and < {hi:g}" if hi != math.inf else "") + f", got {value!r}")
    return float(value)


class GradScaler:
    """Dynamic loss scaling, as ``torch.amp.GradScaler``: ``scale(loss)``, ``unscale_(optimizer)``,
    ``step(optimizer)``, ``update()``, ``state_dict()`` / ``load_state_dict()``.

    ``enabled=False`` makes every method a pass-through (``scale`` returns the loss, ``step``
    calls ``optimizer.step()``), so one training loop serves float32 and float16.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        if not isinstance(enabled, bool):
            raise TypeError(f"GradScaler: enabled must be True or False, got {enabled!r}")
        self._enabled = enabled
        self._scale = _positive("init_scale", init_scale)
        self._growth_factor = _positive("growth_factor", growth_factor, lo=1.0)
        self._backoff_factor = _positive("backoff_factor", backoff_factor, hi=1.0)
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, numbers.Integral) \
                or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be a positive integer, got {growth_interval!r}")
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._per_optimizer: dict = {}       # id(optimizer) -> {"unscaled": bool, "found_inf": device bool}

    # ------------------------------------------------------------------ queries
    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    # ------------------------------------------------------------------ the four steps
    def scale(self, outputs):
        """``outputs`` (a Tensor, or a list / tuple of them) times the scale: a recorded multiply,
        so ``backward()`` on it gives the gradients times the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a Tensor or a list / tuple of Tensors, got "
                        f"{type(outputs).__name__}")

    def unscale_(self, optimizer):
        """Divide the gradients of ``optimizer``'s parameters by the scale, in place, and record
        whether any is inf or NaN. At most once per optimizer between two ``update()`` calls;
        ``step`` calls it when it was not called. No host sync: the finding stays on the device."""
        if not self._enabled:
            return
        state = self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": None})
        if state["unscaled"]:
            raise RuntimeError("GradScaler.unscale_() has already been called on this optimizer since the last "
                               "update(); call it once per step, before clipping")
        inv = 1.0 / self._scale
        found = None
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                g *= g.dtype.type(inv)
                bad = ~backend.xp_for(p.device).isfinite(g).all()
                found = bad if found is None else found | bad
        state["unscaled"], state["found_inf"] = True, found

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step(*args, **kwargs)`` unless a gradient is inf or NaN (then nothing is
        changed and None is returned). Unscales first if ``unscale_`` was not called."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs or args:
            raise RuntimeError("GradScaler.step does not support a closure")
        state = self._per_optimizer.get(id(optimizer))
        if state is None or not state["unscaled"]:
            self.unscale_(optimizer)
            state = self._per_optimizer[id(optimizer)]
        if state.get("stepped"):
            raise RuntimeError("GradScaler.step() has already been called on this optimizer since the last update()")
        state["stepped"] = True
        return self._maybe_opt_step(optimizer, state)

    # ------------------------------------------------------------------ the skip (one place)
    def _maybe_opt_step(self, optimizer, state):
        """The skip itself (PyTorch's name): ``optimizer.step()`` when the unscaled gradients are
        all finite, else nothing is changed and None is returned."""
        if self._found_inf(state):
            return None
        return optimizer.step()

    @staticmethod
    def _found_inf(state) -> bool:
        """Whether one optimizer's unscaled gradients held an inf or NaN: the one host read of the
        device flag that ``unscale_`` recorded (kept, so ``step`` and ``update`` read it once)."""
        if "found" not in state:
            state["found"] = state["found_inf"] is not None and bool(state["found_inf"])
        return state["found"]

    def update(self, new_scale=None):
        """After the step(s): halve the scale if any stepped optimizer found inf / NaN (and restart
        the count of clean steps), else count a clean step and grow the scale by growth_factor
        after growth_interval of them. ``new_scale`` sets the scale instead."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = _positive("new_scale", float(new_scale.item() if isinstance(new_scale, Tensor)
                                                       else new_scale))
        else:
            states = [s for s in self._per_optimizer.values() if s.get("stepped") or s["unscaled"]]
            if not states:
                raise RuntimeError("GradScaler.update(): no inf checks were recorded since the last update(); "
                                   "call scaler.step(optimizer) (or unscale_) first")
            if any(self._found_inf(s) for s in states):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker
        (plain numbers: JSON-ready); empty when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict):
        """Restore what :meth:`state_dict` returned (checked before anything changes)."""
        if not self._enabled:
            raise RuntimeError("GradScaler.load_state_dict: this scaler is disabled")
        keys = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
        if not isinstance(state_dict, dict) or not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state_dict is empty; it was saved from a disabled "
                               "scaler")
        if set(state_dict) != keys:
            raise ValueError(f"GradScaler.load_state_dict: expected the keys {sorted(keys)}, got {sorted(state_dict)}")
        scale = _positive("scale", state_dict["scale"])
        growth = _positive("growth_factor", state_dict["growth_factor"], lo=1.0)
        backoff = _positive("backoff_factor", state_dict["backoff_factor"], hi=1.0)
        interval, tracker = state_dict["growth_interval"], state_dict["_growth_tracker"]
        for name, v, lo in (("growth_interval", interval, 1), ("_growth_tracker", tracker, 0)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"GradScaler.load_state_dict: {name} must be an integer >= {lo}, got {v!r}")
        self._scale, self._growth_factor, self._backoff_factor = scale, growth, backoff
        self._growth_interval, self._growth_tracker = int(interval), int(tracker)
