"""``Optimizer``: parameter groups, flat buffers, ``zero_grad``, ``step``, ``state_dict``.

Parameter groups work as in PyTorch: pass a list of Parameters, or a list of dicts
``{"params": [...], "lr": ..., ...}`` whose keys override the constructor's defaults;
``opt.param_groups[i]["lr"] = x`` changes a group's learning rate (what schedulers do).

Flat buffers (the speed trick). The parameters of a group that share a device and dtype
(a "bucket") are copied into ONE contiguous array, and each ``p.data`` is re-pointed to a
view into it (the Parameter objects stay the same). The optimizer owns the gradients too:
each parameter gets a view into one flat gradient array as its grad storage
(``p.set_grad_storage(view)``), so ``backward()`` writes every gradient straight into that
array. The update is then a dozen in-place NumPy/CuPy calls over the whole bucket instead of
a dozen per parameter. The gradient arrays of all groups that share a device and dtype are
consecutive slices of one array, so :meth:`Optimizer.grad_buffers` hands out every gradient
as one array (what data-parallel training averages across processes in one call).

* ``zero_grad()`` (``set_to_none=True``, PyTorch's default) sets every ``p.grad`` to None, as
  in PyTorch; the next ``backward()`` copies each gradient into the flat array (no zeroing pass).
* ``zero_grad(set_to_none=False)`` zeroes the flat array with one call and keeps the views.
* A gradient that is not a view (assigned by hand, or from before the optimizer existed) is
  copied into the flat array by ``step()``.
* A parameter whose ``.grad`` is None at ``step()`` is skipped, as in PyTorch (no decay, no
  moment update, its step count stays); parameters then update one by one (still vectorised).

Create the optimizer after ``model.to(device)``, as PyTorch recommends: a parameter moved to
another device or dtype afterwards is reported by ``step()`` with a clear error. (One whose
``.data`` was replaced by an array of the same device/dtype/shape is taken back in silently.)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..tensor import Tensor

__all__ = ["Optimizer"]

#: elements per chunk of the fused CPU update: small enough that a chunk's half a dozen
#: arrays stay in cache across the dozen passes of the update (see docs/nn.md, measured)
CPU_CHUNK = 1 << 15


class _Bucket:
    """Parameters of one group sharing a device and dtype, laid out in one flat buffer.

    ``data``/``grad``/``tmp`` and each ``state[name]`` are 1-D arrays of the bucket's total
    size; parameter ``i`` owns the slice ``slices[i]`` of each.
    """

    def __init__(self, params, state_names, flat: bool):
        p0 = params[0]
        self.params, self.device, self.dtype = params, p0.device, p0.dtype
        xp = self.xp = p0.xp
        sizes = [p.size for p in params]
        self.slices, off = [], 0
        for s in sizes:
            self.slices.append(slice(off, off + s))
            off += s
        self.numel = off
        if not flat and p0.data.flags.c_contiguous:  # one parameter: its own array is the buffer
            self.data = p0.data.reshape(-1)
            self.data_views = [p0.data]
        else:
            self.data = xp.empty(off, dtype=self.dtype)
            self.data_views = []
            for p, sl in zip(params, self.slices):
                view = self.data[sl].reshape(p.shape)
                view[...] = p.data
                p.data = view  # same Parameter object, its values now live in the flat buffer
                self.data_views.append(view)
        self.grad, self.grad_views = None, []
        self.use_grad(xp.zeros(off, dtype=self.dtype))
        self.tmp = xp.empty(min(off, CPU_CHUNK) if self.device == "cpu" else off, dtype=self.dtype)
        self.state = {name: xp.zeros(off, dtype=self.dtype) for name in state_names}
        self.steps = [0] * len(params)

    def use_grad(self, flat):
        """Make ``flat`` (1-D, the bucket's size) the bucket's gradient array: the current
        gradients are copied into it, and each parameter's grad storage (and a ``.grad`` that
        was the old view) becomes a view of it, so backward writes straight into ``flat``."""
        if self.grad is not None:
            flat[...] = self.grad
        views = [flat[sl].reshape(p.shape) for p, sl in zip(self.params, self.slices)]
        for p, old, view in zip(self.params, self.grad_views or [None] * len(views), views):
            p.set_grad_storage(view)
            if old is not None and p.grad is old:
                p.grad = view
        self.grad, self.grad_views = flat, views

    def chunks(self, lo: int, hi: int):
        """(start, stop) pieces of [lo, hi) no longer than the scratch buffer."""
        n = len(self.tmp)
        if n == 0:
            return
        for a in range(lo, hi, n):
            yield a, min(a + n, hi)


class Optimizer:
    """Base class: subclasses set ``state_names(group)`` and write ``_update(...)`` on raw arrays."""

    def __init__(self, params, defaults: dict, flat: bool = True):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or dicts, got a single Tensor "
                            "(wrap it in a list)")
        if isinstance(params, (set, frozenset)):
            raise TypeError("params must be an ordered iterable (a list), not a set: "
                            "its order decides the state_dict layout")
        self._check_hyper(defaults, "defaults")
        self.defaults = dict(defaults)
        self.flat = bool(flat)
        self.param_groups: list[dict] = []
        self._buckets: list[list[_Bucket]] = []
        self._grads: dict = {}      # (device, dtype) -> the one gradient array of all its buckets
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ subclass API
    def state_names(self, group: dict) -> tuple:
        return ()

    def _check_hyper(self, group: dict, where: str):
        """Raise ValueError for bad hyperparameters (subclasses extend)."""
        lr = group.get("lr")
        if lr is not None and not (isinstance(lr, numbers.Real) and lr >= 0):
            raise ValueError(f"invalid learning rate in {where}: {lr!r} (expected a number >= 0)")

    def _update(self, xp, p, g, tmp, state: dict, step: int, group: dict):  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict):
        """Add a group: ``{"params": [...], **overrides}``; missing options take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("a parameter group needs a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("a group's params must be an ordered iterable (a list), not a set")
        params = list(params)
        where = f"parameter group {len(self.param_groups)}"
        if not params:
            raise ValueError(f"{where} has no parameters")
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{where}: item {i} is a {type(p).__name__}, the optimizer can only "
                                "optimise Tensors (Parameters)")
            if not p.requires_grad:
                raise ValueError(f"{where}: parameter {i} (shape {p.shape}) does not require grad; "
                                 "leave it out or call requires_grad_()")
            if p.grad_fn is not None:
                raise ValueError(f"{where}: parameter {i} (shape {p.shape}) is not a leaf tensor "
                                 "(it was computed by an op); optimise the leaf it came from")
            if id(p) in seen:
                raise ValueError(f"{where}: parameter {i} (shape {p.shape}) appears twice in the group")
            seen.add(id(p))
        for g in self.param_groups:
            if any(id(p) in seen for p in g["params"]):
                raise ValueError("some parameters appear in more than one parameter group")
        group = dict(param_group)
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_hyper(group, where)
        self.param_groups.append(group)
        self._buckets.append(self._make_buckets(group))
        self._share_grads()

    def _kinds(self) -> dict:
        """(device, dtype) -> the buckets of that kind, in group order."""
        kinds: dict = {}
        for buckets in self._buckets:
            for b in buckets:
                kinds.setdefault((b.device, b.dtype.str), []).append(b)
        return kinds

    def _share_grads(self):
        """Lay the gradient arrays of all buckets of one device and dtype end to end in one
        array (again after a group is added), so that one call covers every gradient."""
        if not self.flat:
            return
        for kind, bs in self._kinds().items():
            total = sum(b.numel for b in bs)
            if kind in self._grads and self._grads[kind].size == total:
                continue                          # no bucket of this kind was added
            if len(bs) == 1:
                self._grads[kind] = bs[0].grad
                continue
            shared = bs[0].xp.zeros(total, dtype=bs[0].dtype)
            off = 0
            for b in bs:
                b.use_grad(shared[off:off + b.numel])
                off += b.numel
            self._grads[kind] = shared

    def _make_buckets(self, group):
        names = self.state_names(group)
        if not self.flat:
            return [_Bucket([p], names, flat=False) for p in group["params"]]
        by_kind: dict = {}
        for p in group["params"]:
            by_kind.setdefault((p.device, p.dtype.str), []).append(p)
        return [_Bucket(ps, names, flat=True) for ps in by_kind.values()]

    # ------------------------------------------------------------------ grads
    def zero_grad(self, set_to_none: bool = True):
        """Drop every gradient (``set_to_none``, the default, as PyTorch) or zero them in place.

        Either way the next ``backward()`` puts the gradients straight into the flat buffer:
        after ``set_to_none`` it copies the first one in (the parameters' grad storage),
        after ``set_to_none=False`` (one fill per buffer) it adds into the zeros.
        """
        for buckets in self._buckets:
            for b in buckets:
                if set_to_none:
                    for p in b.params:
                        p.grad = None
                    continue
                b.grad.fill(0)
                for p, view in zip(b.params, b.grad_views):
                    if p.grad is not None:  # a grad that is None stays None, as in PyTorch
                        p.grad = view

    def grad_buffers(self) -> list:
        """The arrays that hold every gradient, one per device and dtype (with ``flat=False``
        one per parameter): what data-parallel training averages across processes, in place,
        between ``backward()`` and ``step()``.

        A gradient that is not yet in them (assigned by hand) is copied in first, and the
        slice of a parameter whose ``.grad`` is None is zeroed, so the arrays hold exactly the
        current gradients (such a parameter keeps ``.grad = None``, and ``step`` skips it)."""
        for buckets in self._buckets:
            for b in buckets:
                for has, view in zip(self._gather(b), b.grad_views):
                    if not has:
                        view.fill(0)
        if not self.flat:
            return [b.grad for buckets in self._buckets for b in buckets]
        return list(self._grads.values())

    def _gather(self, b: _Bucket) -> list:
        """Make each parameter's grad live in the bucket's flat grad array; which have one."""
        has = []
        for i, p in enumerate(b.params):
            if p.data is not b.data_views[i]:
                self._take_back(b, i, p)
            g = p.grad
            if g is None:
                has.append(False)
                continue
            view = b.grad_views[i]
            if g is not view:
                if tuple(g.shape) != p.shape:
                    raise RuntimeError(f"a parameter of shape {p.shape} has a gradient of shape {tuple(g.shape)}")
                if backend.device_of_array(g) != b.device:
                    raise RuntimeError(f"a parameter on {b.device} has its gradient on "
                                       f"{backend.device_of_array(g)}")
                view[...] = g
                p.grad = view
            has.append(True)
        return has

    def _take_back(self, b: _Bucket, i: int, p):
        """``p.data`` was replaced since the optimizer was built: copy it back into the bucket."""
        if p.device != b.device or p.dtype != b.dtype:
            raise RuntimeError(
                f"a parameter (shape {p.shape}) moved from {b.device}/{b.dtype} to {p.device}/{p.dtype} "
                "after the optimizer was created; create the optimizer after model.to(...)")
        if p.shape != b.data_views[i].shape:
            raise RuntimeError(f"a parameter changed shape from {b.data_views[i].shape} to {p.shape} "
                               "after the optimizer was created")
        b.data_views[i][...] = p.data
        p.data = b.data_views[i]

    # ------------------------------------------------------------------ the step
    def step(self, closure=None, *, found_inf=None):
        """Update every parameter that has a gradient; returns ``closure()`` if one is given.

        ``found_inf``: None, or a 0-d array or Tensor on the parameters' device that is nonzero
        when this step must not be taken (the training loop's check for a NaN or inf loss or
        gradient norm). On the CPU it is read and the step skipped; on a GPU the update is made
        conditional on it there, so nothing waits for the device: a skipped step leaves the
        parameters and the optimizer's state as they were, only the step counts advance.
        """
        loss = closure() if closure is not None else None
        flag = found_inf.data if isinstance(found_inf, Tensor) else found_inf
        for group, buckets in zip(self.param_groups, self._buckets):
            self._check_hyper(group, "a parameter group")
            for b in buckets:
                skip = None
                if flag is not None:
                    if backend.device_of_array(flag) != b.device:
                        raise backend.DeviceError(f"step: found_inf is on {backend.device_of_array(flag)!r}, "
                                                  f"the parameters on {b.device!r}")
                    if b.device == "cpu":
                        if bool(flag):
                            continue
                    else:
                        skip = flag
                has = self._gather(b)
                if all(has) and all(s == b.steps[0] for s in b.steps):
                    step = b.steps[0] + 1
                    self._update_range(b, 0, b.numel, step, group, skip)  # the fused path
                    b.steps = [step] * len(b.steps)
                else:
                    for i, sl in enumerate(b.slices):
                        if has[i]:
                            b.steps[i] += 1
                            self._update_range(b, sl.start, sl.stop, b.steps[i], group, skip)
                for p, h in zip(b.params, has):
                    if h:
                        p.bump_version()  # an in-place change: stale graphs that saved p now raise
        return loss

    def _update_range(self, b: _Bucket, lo: int, hi: int, step: int, group: dict, skip=None):
        """Update elements [lo, hi) of bucket ``b``; where ``skip`` (a 0-d device array) is
        nonzero, put back what they held (a copy, the update, a masked copy back)."""
        kept = None
        if skip is not None:
            kept = [(a[lo:hi], a[lo:hi].copy()) for a in (b.data, *b.state.values())]
        for a, z in b.chunks(lo, hi):
            n = z - a
            state = {k: v[a:z] for k, v in b.state.items()}
            self._update(b.xp, b.data[a:z], b.grad[a:z], b.tmp[:n], state, step, group)
        if kept is not None:
            for now, before in kept:
                b.xp.copyto(now, before, where=skip.astype(bool))

    # ------------------------------------------------------------------ state dict
    def _all_params(self):
        """(global index, parameter, bucket, index in bucket) for every parameter, in group order."""
        index = {}
        for buckets in self._buckets:
            for b in buckets:
                for i, p in enumerate(b.params):
                    index[id(p)] = (b, i)
        k = 0
        for group in self.param_groups:
            for p in group["params"]:
                b, i = index[id(p)]
                yield k, p, b, i
                k += 1

    def state_dict(self) -> dict:
        """``{"state": {index: {"step": int, name: numpy array}}, "param_groups": [...]}``.

        Arrays are host copies in each parameter's shape; everything else is plain Python,
        so it can be pickled or written with ``tinygrad_llm.safetensors``. Parameters that
        have never been updated have no entry, as in PyTorch.
        """
        state = {}
        for k, p, b, i in self._all_params():
            if b.steps[i] == 0:
                continue
            entry = {"step": int(b.steps[i])}
            for name, arr in b.state.items():
                entry[name] = backend.to_numpy(arr[b.slices[i]]).reshape(p.shape)
            state[k] = entry
        groups, k = [], 0
        for group in self.param_groups:
            g = {key: (list(v) if isinstance(v, tuple) else v) for key, v in group.items() if key != "params"}
            g["params"] = list(range(k, k + len(group["params"])))
            k += len(group["params"])
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore what :meth:`state_dict` returned (for the same parameters, in the same groups).

        Checks the number of groups, of parameters per group and every array's shape before
        changing anything; hyperparameters (lr, betas, ...) are taken from the saved groups.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the state_dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for gi, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"parameter group {gi}: the state_dict has {len(sg['params'])} parameters, "
                                 f"this optimizer has {len(g['params'])}")
        params = list(self._all_params())
        state = {int(k): v for k, v in state_dict["state"].items()}
        for k, entry in state.items():
            if not 0 <= k < len(params):
                raise ValueError(f"state for parameter index {k}, but there are only {len(params)} parameters")
            _, p, b, _ = params[k]
            names = set(b.state)
            if set(entry) - {"step"} != names:
                raise ValueError(f"state for parameter {k} has entries {sorted(set(entry) - {'step'})}, "
                                 f"expected {sorted(names)}")
            for name in names:
                shape = tuple(np.shape(entry[name]))
                if shape != p.shape:
                    raise ValueError(f"state {name!r} for parameter {k} has shape {shape}, the parameter has {p.shape}")
            if not isinstance(entry.get("step"), (int, np.integer)) or entry["step"] < 1:
                raise ValueError(f"state for parameter {k}: 'step' must be a positive integer, got {entry.get('step')!r}")
        for sg, g in zip(saved_groups, self.param_groups):
            for key, v in sg.items():
                if key != "params":
                    g[key] = tuple(v) if key == "betas" else v
        for k, p, b, i in params:
            sl, entry = b.slices[i], state.get(k)
            b.steps[i] = int(entry["step"]) if entry else 0
            for name, arr in b.state.items():
                if entry is None:
                    arr[sl] = 0
                else:
                    arr[sl] = _on_device(entry[name], b.device).reshape(-1)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _on_device(value, device):
    """A Tensor / numpy / cupy array / list as an array on ``device``."""
    if isinstance(value, Tensor):
        value = value.data
    return backend.as_array(value, device)


def check_range(name, value, lo, hi, where, hi_open=True):
    """ValueError unless lo <= value < hi (or <= hi)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and lo <= value and (
        value < hi if hi_open else value <= hi)
    if not ok or math.isnan(value):
        bracket = ")" if hi_open else "]"
        raise ValueError(f"invalid {name} in {where}: {value!r} (expected a number in [{lo}, {hi}{bracket})")
