"""Activation checkpointing: ``checkpoint(fn, *inputs)`` keeps fn's inputs, not its activations,
and runs fn again in the backward pass (exposed as ``tinygrad_llm.nn.utils.checkpoint``, the
name PyTorch users know; it has nothing to do with training checkpoints, checkpoint.py).

Memory for time: a function's intermediate results (what its nodes save for their backward)
are dropped as soon as its forward returns, and rebuilt by running it a second time when the
backward pass reaches it, which costs one more forward of fn. How, step by step:

1. **Forward.** fn runs once on detached views of its tensor inputs with recording on, only
   to learn which leaf tensors (parameters) its graph reaches; that graph is then dropped,
   and one ``Checkpoint`` node is recorded instead, whose inputs are fn's tensor inputs and
   those leaves and whose output is fn's output. The random generators are snapshotted first.
2. **Backward** (``Checkpoint.backward(g)``). fn runs again, on fresh leaves holding the saved
   inputs, with the generators replaying the snapshot, so its dropout draws the same masks;
   then ``out.backward(g)`` walks that new graph: the fresh leaves receive the inputs'
   gradients, which the node returns, and the parameters accumulate theirs in ``.grad``
   directly, as they would have without checkpointing. fn runs under the autocast dtype
   (``amp.autocast``) of the forward, whatever holds when the backward runs (as PyTorch).

Because the parameters are inputs of the node, their version counters are checked: changing
a parameter or an input in place between the forward and the backward (an optimizer step
too early) raises, instead of recomputing from other values. fn must not change its inputs
in place, and a tensor that fn uses and that was computed outside it with a gradient must be
passed as an input (else its gradient could not reach it): both are errors.
"""
from __future__ import annotations

from .. import backend
from ..function import Function, autocast_dtype, enable_grad, is_grad_enabled, recorded_nodes, set_autocast_dtype
from ..tensor import Tensor

__all__ = ["checkpoint"]


class Checkpoint(Function):
    """The node of :func:`checkpoint`: inputs (fn's tensor inputs..., the leaves fn reaches...);
    output fn's output, computed before the node was made (``out``). Saved: fn, how to call it
    again (``args``, with None where a tensor input goes), the generators' replays and the
    autocast dtype."""

    def forward(self, *arrays, fn=None, args=(), out=None, replays=None, n_inputs=0, autocast=None):
        self.fn, self.args, self.replays, self.n_inputs, self.autocast = fn, args, replays, n_inputs, autocast
        return out

    def backward(self, g):
        n = self.n_inputs
        fresh = [Tensor.wrap(t.data, t.device, requires_grad=need)
                 for t, need in zip(self.inputs[:n], self.needs_input_grad[:n])]
        out = _call(self.fn, self.args, fresh, self.replays, self.autocast)
        if not isinstance(out, Tensor) or out.shape != tuple(g.shape) or out.dtype != g.dtype:
            raise RuntimeError("checkpoint: running the function again gave another result than in the forward "
                               f"pass (a {type(out).__name__} of shape {getattr(out, 'shape', None)}); it must "
                               "compute the same thing each time")
        if out.requires_grad:
            out.backward(g)             # the leaves' gradients are accumulated into their .grad here
        return tuple(t.grad for t in fresh) + (None,) * (len(self.inputs) - n)


def _call(fn, args, tensors, replays, autocast):
    """fn(*args) with ``tensors`` put where args holds None, recording on, under the autocast dtype
    ``autocast``, each device's generator replaced by its replay while fn runs (all put back after)."""
    it = iter(tensors)
    full = [next(it) if a is None else a for a in args]
    previous = {device: backend.swap_rng(device, replay()) for device, replay in replays.items()}
    previous_autocast = set_autocast_dtype(autocast)
    try:
        with enable_grad():
            return fn(*full)
    finally:
        set_autocast_dtype(previous_autocast)
        for device, generator in previous.items():
            backend.swap_rng(device, generator)


def checkpoint(fn, *inputs, preserve_rng_state: bool = True):
    """``fn(*inputs)``, keeping only the inputs for the backward pass and running fn again there.

    ``inputs``: tensors and any other arguments (passed through as they are). fn must return
    one Tensor and compute the same function each time it is called. Gradients flow to the
    tensor inputs and to every leaf tensor that fn uses (its parameters) exactly as without
    checkpointing; dropout inside fn draws the same masks in the recomputation, because the
    generators of the CPU and of the inputs' device are snapshotted and replayed
    (``preserve_rng_state``, as in PyTorch; False skips that, and the recomputed masks differ).
    On a GPU the device generator cannot be snapshotted; it is reseeded instead
    (``backend.rng_replayer``). Without grad mode (``no_grad``) this is just ``fn(*inputs)``.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable, got {type(fn).__name__}")
    if not is_grad_enabled():
        return fn(*inputs)
    tensors = [a for a in inputs if isinstance(a, Tensor)]
    devices = {"cpu"} | {t.device for t in tensors}
    # a GPU's replayer draws its seed from the CPU generator: so the GPUs first, and the CPU's
    # snapshot after that draw (fn's own CPU draws, e.g. tiled attention's dropout seed, replay)
    order = sorted(devices, key=lambda d: (d == "cpu", d))
    replays = {device: backend.rng_replayer(device) for device in order} if preserve_rng_state else {}
    detached = [t.detach() for t in tensors]     # share t's version counter: an in-place change inside fn shows
    versions = [t._version for t in tensors]
    args = [None if isinstance(a, Tensor) else a for a in inputs]
    it = iter(detached)
    with recorded_nodes() as nodes:
        out = fn(*[next(it) if a is None else a for a in args])
    if not isinstance(out, Tensor):
        raise TypeError(f"checkpoint: fn must return one Tensor, got {type(out).__name__}")
    for i, (t, v) in enumerate(zip(tensors, versions)):
        if t._version != v:
            raise RuntimeError(f"checkpoint: fn changed its tensor input {i} (shape {t.shape}) in place; a "
                               "checkpointed function must leave its inputs as they are (it runs again on them)")
    leaves = _leaves_reached(nodes, detached)
    if not leaves and not any(t.requires_grad for t in tensors):
        return out                      # nothing in it needs a gradient: there is nothing to recompute
    return Checkpoint.apply(*tensors, *leaves, fn=fn, args=args, out=out.data, replays=replays,
                            n_inputs=len(tensors), autocast=autocast_dtype())


def _leaves_reached(nodes, detached) -> list:
    """The leaf tensors that require grad among the inputs of ``nodes`` (fn's graph), other
    than fn's own inputs; an error for a non-leaf tensor made before fn ran."""
    made = set(nodes)
    own = {id(d) for d in detached}
    leaves, seen = [], set()
    for node in nodes:
        for t in node.inputs:
            if id(t) in own or id(t) in seen or not t.requires_grad:
                continue
            if t.grad_fn is None:
                leaves.append(t)
                seen.add(id(t))
            elif t.grad_fn not in made:
                raise RuntimeError(f"checkpoint: fn uses a tensor of shape {t.shape} that was computed outside it "
                                   "and requires grad; pass it to checkpoint as an input so that its gradient "
                                   "can reach it")
    return leaves
