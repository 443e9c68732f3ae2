"""Graph nodes and reverse-mode differentiation.

A :class:`Function` is one node of the graph. Each op subclasses it and pairs two
methods on raw backend arrays (numpy or cupy, whichever ``self.xp`` is):

* ``forward(self, *arrays, **kwargs) -> array``: compute the output, and keep on
  ``self`` whatever the backward pass will need (the "saved arrays").
* ``backward(self, grad_out) -> tuple``: given dL/d(output), return dL/d(input) for
  each tensor input, in order (``None`` where an input needs no gradient).

``Op.apply(*inputs, **kwargs)`` runs the forward pass and, when any input requires a
gradient and grad mode is on, records the node as the output's ``grad_fn``. The node is
an ``Op``, or the fast kernel registered for ``Op`` on the inputs' device (a subclass of
the same name, see ``tiers.py``) unless the reference tier is forced.

The life of a node: forward -> saved arrays -> backward -> released. After
``loss.backward()`` every node it walked through drops its inputs and saved arrays, so
intermediate tensors can be freed; walking a released node again raises.
"""
from __future__ import annotations

import contextlib
import functools
import threading

from . import backend, tiers

__all__ = ["Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "recorded_nodes",
           "autocast_dtype", "set_autocast_dtype"]

class _GradMode(threading.local):
    enabled = True   # the default in every thread (a class attribute: no per-call getattr fallback)
    recorded = None  # a list that collects every node recorded in this thread, or None (recorded_nodes)
    autocast = None  # the dtype amp.autocast runs the matrix products in (float16), or None


def autocast_dtype():
    """The dtype ``amp.autocast`` runs the matrix products in (NumPy's float16) in this thread, or None."""
    return _state.autocast


def set_autocast_dtype(dtype):
    """Set the autocast dtype of this thread (None: off) and return the previous one; use the
    ``tinygrad_llm.amp.autocast`` context rather than this."""
    previous, _state.autocast = _state.autocast, dtype
    return previous


_state = _GradMode()


def is_grad_enabled() -> bool:
    """False inside ``with no_grad():``."""
    return _state.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager / decorator that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.enabled = self.mode

    def __exit__(self, *exc):
        _state.enabled = self.prev
        return False

    def __call__(self, fn):
        """As a decorator: a fresh context per call, so recursion and threads restore correctly."""
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(set_grad_enabled):
    """``with no_grad():`` (or ``@no_grad()``): ops record no graph nodes."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Turn recording back on inside a ``no_grad`` block."""

    def __init__(self):
        super().__init__(True)


class recorded_nodes:
    """``with recorded_nodes() as nodes:`` collects, in ``nodes``, every node recorded in the block
    (in this thread), in the order they were made. Activation checkpointing uses it to tell
    the nodes its function made from those that existed before (nn/recompute.py)."""

    def __enter__(self):
        self.prev, _state.recorded = _state.recorded, []
        return _state.recorded

    def __exit__(self, *exc):
        _state.recorded = self.prev
        return False


class Function:
    """One node of the graph: an op's forward and hand-written backward.

    Attributes a student can walk by hand: ``name`` (the op's name), ``inputs`` (the
    input tensors, in order), ``released`` (True once backward has freed it).
    """

    #: an op whose output lives on another device than its inputs sets this in forward
    out_device = None

    def __init__(self, device: str, xp):
        self.device = device
        self.xp = xp
        self.inputs = ()
        self.released = False
        self.needs_input_grad = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        if self.released:
            return f"<{self.name} (released)>"
        shapes = ", ".join(str(t.shape) for t in self.inputs)
        return f"<{self.name} inputs=({shapes})>"

    # ------------------------------------------------------------------ subclass API
    def forward(self, *arrays, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def grad_buffer(self, i: int, dtype):
        """``(array, add)``: where the backward may put input ``i``'s gradient itself, saving
        the copy (or the addition) that backward would otherwise make. Fast kernels use it for
        weight gradients; the reference ops never do.

        For a leaf that requires grad and appears once among the inputs: its ``.grad`` with
        ``add=True`` when it has one (add the gradient into it), else its grad storage (an
        optimizer's flat buffer, ``Tensor.set_grad_storage``) with ``add=False`` (overwrite it);
        otherwise, or when the array is not C-contiguous or not of ``dtype``, ``(None, False)``. A backward that
        uses the array returns that same array as the input's gradient.
        """
        if i >= len(self.inputs):                  # a node that was not recorded (a kernel's self-check)
            return None, False
        t = self.inputs[i]
        if t.grad_fn is not None or not self.needs_input_grad[i] or \
                any(u is t for j, u in enumerate(self.inputs) if j != i):
            return None, False
        buf, add = (t.grad, True) if t.grad is not None else (t.grad_storage, False)
        if buf is None or buf.dtype != dtype or not buf.flags.c_contiguous:
            return None, False
        return buf, add

    # ------------------------------------------------------------------ running a node
    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on Tensors; record it in the graph when a gradient is needed.

        This module never imports ``Tensor`` (tensor.py imports it): the output is made by
        the inputs' own ``Tensor.wrap``.
        """
        device = inputs[0].device
        for t in inputs[1:]:
            if t.device != device:
                raise backend.DeviceError(
                    f"{cls.__name__}: inputs are on different devices, {device!r} and {t.device!r}; "
                    "move one with .to(device)")
        xp = backend.xp_for(device)
        node = tiers.kernel_for(cls, device)(device, xp)   # the fast kernel, unless the reference tier is forced
        try:
            out = node.forward(*[t.data for t in inputs], **kwargs)
        except ValueError as e:   # NumPy's "could not be broadcast": the class PyTorch raises is RuntimeError
            if type(e) is ValueError and "broadcast" in str(e):
                raise backend.ShapeError(f"{cls.__name__}: {e}") from None
            raise
        out_device = node.out_device or device            # another device only for a copy (ToDevice)
        out_xp = xp if out_device == device else backend.xp_for(out_device)
        if not isinstance(out, out_xp.ndarray):  # numpy reductions may return scalars
            out = out_xp.asarray(out)
        needs = tuple([t.requires_grad for t in inputs])
        record = True in needs and _state.enabled
        result = inputs[0].wrap(out, out_device, requires_grad=record)
        # a view shares its base's version counter, so in-place writes through either are seen
        for t in inputs:
            if out_device == device and (out is t.data or (out.base is not None and xp.may_share_memory(out, t.data))):
                result._vbox = t._vbox
                break
        if record:
            node.inputs = inputs
            node.needs_input_grad = needs
            node.versions = tuple([t._vbox[0] for t in inputs])
            # many nodes save their output too (exp, sqrt, tanh, max, ...): watch it as well
            node.out_vbox, node.out_version = result._vbox, result._vbox[0]
            result.grad_fn = node
            if _state.recorded is not None:
                _state.recorded.append(node)
        return result

    def release(self):
        """Drop inputs and saved arrays; keep only the name and the released flag."""
        self.__dict__.clear()
        self.inputs = ()
        self.released = True


def _topo_order(root: Function):
    """Nodes reachable from ``root`` with every node after all nodes that consume it.

    Iterative depth-first post-order (no recursion, so 100k-deep chains are fine);
    the list is returned reversed: root first, leaves' producers last.
    """
    order, seen = [], {root}   # nodes hash by identity
    stack = [(root, iter(root.inputs))]
    while stack:
        node, it = stack[-1]
        for t in it:
            fn = t.grad_fn
            if fn is not None and fn not in seen:
                seen.add(fn)
                if fn.released:
                    raise RuntimeError(
                        f"backward through a graph that was already released (node {fn.name}); "
                        "call backward(retain_graph=True) the first time to walk it again")
                stack.append((fn, iter(fn.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order


def run_backward(root_tensor, grad, retain_graph: bool = False):
    """Propagate ``grad`` (d loss / d root_tensor) to every leaf that requires grad."""
    root = root_tensor.grad_fn
    if root is None:  # a leaf: its gradient is the seed itself
        _accumulate_leaf(root_tensor, grad)
        return
    if root.released:
        raise RuntimeError(
            f"backward through a graph that was already released (node {root.name}); "
            "call backward(retain_graph=True) the first time to walk it again")
    order = _topo_order(root)
    pending = {root: grad}     # node -> d loss / d (its output), summed over consumers
    for node in order:
        g = pending.pop(node, None)
        if g is None:  # nothing flowed into this node (e.g. its output's grad was None)
            if not retain_graph:
                node.release()
            continue
        for t, v in zip(node.inputs, node.versions):
            if t._vbox[0] != v:
                raise RuntimeError(
                    f"an input of {node.name} (shape {t.shape}) was modified in place after the "
                    f"forward pass (version {v} -> {t._vbox[0]}); its saved values are stale")
        if node.out_vbox[0] != node.out_version:
            raise RuntimeError(
                f"the output of {node.name} (shape {tuple(g.shape)}) was modified in place after the "
                f"forward pass (version {node.out_version} -> {node.out_vbox[0]}); its saved values are stale")
        grads = node.backward(g)
        if not isinstance(grads, tuple):
            grads = (grads,)
        for t, gi, need in zip(node.inputs, grads, node.needs_input_grad):
            if gi is None or not need:
                continue
            data = t.data
            if gi.shape != data.shape:
                raise RuntimeError(f"{node.name}.backward returned a gradient of shape {gi.shape} "
                                   f"for an input of shape {t.shape}")
            if gi.dtype != data.dtype:
                gi = gi.astype(data.dtype)
            fn = t.grad_fn
            if fn is None:
                if gi is t.grad or (t.grad is None and gi is t.grad_storage):
                    t.grad = gi             # the backward wrote it in place (Function.grad_buffer)
                else:
                    _accumulate_leaf(t, gi)
            else:
                prev = pending.get(fn)
                pending[fn] = gi if prev is None else prev + gi
        if not retain_graph:
            node.release()


def _accumulate_leaf(t, g):
    """Add ``g`` into ``t.grad`` (gradients accumulate until zeroed, as in PyTorch)."""
    if not t.requires_grad:
        return
    if t.grad is None:
        # a copy: the same array may also flow to other nodes, and .grad is added to in place
        storage = t.grad_storage
        if storage is None:
            # xp.array, not g.astype: NumPy math on 0-d arrays returns scalars, .grad is an array
            t.grad = backend.xp_for(t.device).array(g, dtype=t.dtype)
        else:                       # memory the tensor was given (an optimizer's flat buffer)
            storage[...] = g
            t.grad = storage
    else:
        t.grad += g


def unbroadcast(xp, grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    g = grad.sum(axis=axes, keepdims=True) if axes else grad
    if extra:
        g = g.reshape(g.shape[extra:])
    return g.reshape(shape)

