"""Two tiers per op: the reference math, and fast kernels beside it; one switch between them.

Every op in ``tinygrad_llm/ops/`` is a :class:`~tinygrad_llm.function.Function` whose
``forward`` and ``backward`` are the plain array math of docs/backprop.md: the
*reference tier*. Speed work (threads, cache blocking, in-place buffers, shortcuts)
lives in ``tinygrad_llm/kernels/``, one module per kind of device, as subclasses of
the reference classes with the same ``forward``/``backward`` signatures: the *fast
tier*. A fast class is registered here for a device kind (``"cpu"`` or ``"cuda"``)::

    @tiers.register(norm.LayerNorm, "cpu")
    class LayerNorm(norm.LayerNorm):
        def forward(self, x, *params, ...): ...     # same arguments, same result

``Function.apply`` asks :func:`kernel_for` which class to run: the fast one for the
inputs' device when one is registered, unless the reference tier is forced. Forcing it:

* the environment variable ``TINYGRAD_LLM_REFERENCE=1`` (read when the package is imported;
  a value other than 1, 0 or empty is a ValueError at the first op, and in the example
  scripts one ``error:`` line before anything runs, see :func:`check_environment`);
* ``tinygrad_llm.use_reference_tier(True)`` (``False`` turns the fast tier back on);
* ``with tinygrad_llm.reference_tier(): ...`` (also a decorator), which restores the
  previous setting on exit; ``reference_tier(False)`` forces the fast tier instead.

The setting is process-wide (not per thread). It is read when a node is made: a node
runs the backward of the tier that ran its forward, whatever the setting is later.
This module imports nothing from the package, so the lowest layers may use it.
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["ENV_VAR", "register", "kernel_for", "fast_kernels", "use_reference_tier", "reference_tier_forced",
           "reference_tier", "check_environment"]

ENV_VAR = "TINYGRAD_LLM_REFERENCE"
DEVICE_KINDS = ("cpu", "cuda")

_fast: dict = {}            # (reference class, device kind) -> fast class


class _BadEnvironment:
    """``_forced`` while the environment variable holds a bad value: truthy, so the one test
    ``kernel_for`` makes on its fast path also catches it, and every op raises the message."""

    def __init__(self, message: str):
        self.message = message


def _env_setting():
    value = os.environ.get(ENV_VAR, "").strip()
    if value not in ("", "0", "1"):     # not raised here: an import error would be a traceback in every script
        return _BadEnvironment(f"{ENV_VAR} must be 1 (run every op on the reference tier) or 0 / unset "
                               f"(use the fast kernels), got {value!r}")
    return value == "1"


_forced = _env_setting()


def check_environment() -> None:
    """Raise ValueError if ``TINYGRAD_LLM_REFERENCE`` held a bad value at import (and no
    explicit :func:`use_reference_tier` has replaced it since)."""
    if isinstance(_forced, _BadEnvironment):
        raise ValueError(_forced.message)


def device_kind(device: str) -> str:
    """"cpu" for "cpu", "cuda" for "cuda:N": the key fast kernels are registered under."""
    return "cpu" if device == "cpu" else "cuda"


def register(reference: type, kind: str = "cpu"):
    """Class decorator: run the decorated subclass of ``reference`` for devices of ``kind``.

    The fast class must subclass the reference class (so ``isinstance`` and the node's
    name stay those of the op) and keep its ``forward``/``backward`` signatures.
    """
    if kind not in DEVICE_KINDS:
        raise ValueError(f"register: device kind must be one of {DEVICE_KINDS}, got {kind!r}")

    def decorate(fast: type) -> type:
        if not (isinstance(fast, type) and issubclass(fast, reference)) or fast is reference:
            raise TypeError(f"register: {fast!r} must be a subclass of {reference.__name__}")
        if fast.__name__ != reference.__name__:
            raise TypeError(f"register: the fast class must keep the op's name {reference.__name__!r} "
                            f"(graph nodes are named after their class), got {fast.__name__!r}")
        if (reference, kind) in _fast:
            raise ValueError(f"register: a fast {kind} kernel for {reference.__name__} is already registered "
                             f"({_fast[reference, kind].__module__})")
        _fast[reference, kind] = fast
        return fast
    return decorate


def kernel_for(op: type, device: str) -> type:
    """The class that runs ``op`` on ``device``: its fast kernel, or ``op`` itself."""
    if _forced or not _fast:
        check_environment()
        return op
    return _fast.get((op, device_kind(device)), op)


def fast_kernels(kind: str = "cpu") -> dict:
    """{reference class: fast class} registered for a device kind."""
    return {ref: fast for (ref, k), fast in _fast.items() if k == kind}


def reference_tier_forced() -> bool:
    """True while every op runs its reference math."""
    check_environment()
    return _forced


def use_reference_tier(on: bool = True) -> None:
    """Run every op on its reference math (``True``) or on the fast kernels where they exist."""
    global _forced
    if not isinstance(on, bool):
        raise TypeError(f"use_reference_tier: expected True or False, got {on!r}")
    _forced = on


class reference_tier(contextlib.ContextDecorator):
    """``with reference_tier():`` runs the block on the reference math; the previous setting
    comes back on exit. ``reference_tier(False)`` runs it on the fast tier instead."""

    def __init__(self, on: bool = True):
        if not isinstance(on, bool):
            raise TypeError(f"reference_tier: expected True or False, got {on!r}")
        self.on = on
        self._saved = []            # a stack, so one instance may be entered again inside itself

    def __enter__(self):
        check_environment()
        self._saved.append(_forced)
        use_reference_tier(self.on)
        return self

    def __exit__(self, *exc):
        use_reference_tier(self._saved.pop())
        return False
