"""``Module`` and ``Parameter``: PyTorch-style containers of learnable tensors.

A :class:`Parameter` is a Tensor that requires a gradient. A :class:`Module` registers the
Parameters, sub-Modules and buffers assigned to its attributes, so that::

    class MLP(Module):
        def __init__(self):
            super().__init__()
            self.fc = Linear(4, 8)                                     # a sub-module
            self.scale = Parameter(ones(8))                             # a parameter
            self.register_buffer("mask", ones(8))                       # a buffer (no gradient)

        def forward(self, x):
            return self.fc(x) * self.scale * self.mask

    m = MLP()
    [n for n, _ in m.named_parameters()]    # ['scale', 'fc.weight', 'fc.bias']
    list(m.state_dict())                    # ['scale', 'mask', 'fc.weight', 'fc.bias']

Order follows PyTorch: a module's own parameters, then its buffers, then each child's.
A parameter reachable under two names (tied weights, e.g. GPT's ``lm_head.weight is
wte.weight``) is yielded once by ``named_parameters()`` but appears under both names in
``state_dict()``, as in PyTorch.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..function import no_grad
from ..tensor import Tensor

__all__ = ["Module", "Parameter", "IncompatibleKeys"]


class Parameter(Tensor):
    """A Tensor that is a learnable parameter of a Module: requires grad by default.

    ``Parameter(data)`` takes a Tensor (its array is shared, not copied) or anything
    ``Tensor(...)`` accepts (arrays, lists); ``dtype``/``device`` convert on the way in.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True, device=None, dtype=None):
        if data is None:
            data = np.empty(0, dtype=backend.default_dtype)
        if isinstance(data, Tensor):
            if data.grad_fn is not None:
                data = data.detach()
            if device is not None or dtype is not None:
                data = data.to(device=device, dtype=dtype)
            super().__init__(data.data, requires_grad=False, device=data.device)
        else:
            super().__init__(data, requires_grad=False, device=device, dtype=dtype)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


#: what ``load_state_dict`` returns: the keys it did not find, and the keys it did not use
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _host_or_device_array(value, device, dtype):
    """``value`` (Tensor, numpy/cupy array, list or scalar) as an array on ``device`` of ``dtype``."""
    if isinstance(value, Tensor):
        value = value.data
    return backend.as_array(value, device).astype(dtype, copy=False)


class Module:
    """Base class of every layer and model; subclasses write ``__init__`` and ``forward``.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it;
    any other value (ints, plain Tensors, functions) is a plain attribute.
    ``module(x)`` calls ``module.forward(x)``.
    """

    training: bool

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers"] = set()
        d["_modules"] = OrderedDict()

    # ------------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ registration
    def _check_init(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() is called "
                                 f"(call super().__init__() first in {type(self).__name__}.__init__)")

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            self._check_init("parameters")
            self._discard(name)
            d["_parameters"][name] = value
        elif isinstance(value, Module):
            self._check_init("sub-modules")
            self._discard(name)
            d["_modules"][name] = value
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} "
                                "(a Parameter or None is expected)")
            d["_parameters"][name] = None
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to sub-module {name!r} "
                                "(a Module or None is expected)")
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r} "
                                "(a Tensor or None is expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def _discard(self, name):
        d = self.__dict__
        d.pop(name, None)
        for key in ("_parameters", "_modules", "_buffers"):
            d[key].pop(name, None)
        d["_non_persistent_buffers"].discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails; guard so half-built objects (copy, pickle) work
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            reg = d.get(key)
            if reg is not None and name in reg:
                return reg[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if name in d.get(key, ()):
                del d[key][name]
                d["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    def register_parameter(self, name: str, param: Parameter | None):
        """Add a parameter (or ``None``: a declared but absent parameter, like a disabled bias)."""
        self._check_init("parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, "
                            f"got {type(param).__name__}")
        _check_name(name, self, "_parameters")
        self._discard(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True):
        """Add a buffer: a tensor that is state but not a parameter (in state_dict when persistent)."""
        self._check_init("buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        _check_name(name, self, "_buffers")
        self._discard(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None):
        self._check_init("sub-modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got {type(module).__name__}")
        _check_name(name, self, "_modules")
        self._discard(name)
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, module) for this module and every descendant, each module once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, v in m.__dict__[registry].items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs; a shared (tied) parameter appears once, under its first name."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalars in the (distinct) parameters."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def get_submodule(self, target: str) -> Module:
        """The sub-module at a dotted path (``"h.0.attn"``); ``""`` is this module."""
        mod = self
        for part in target.split(".") if target else []:
            child = mod._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(mod).__name__} has no sub-module {part!r} (looking up {target!r})")
            mod = child
        return mod

    def apply(self, fn):
        """Call ``fn(m)`` on every child (recursively), then on ``self``; returns self (for init)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes, devices, grads
    def train(self, mode: bool = True):
        """Set ``training`` on this module and all descendants (Dropout looks at it); returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True):
        """Drop (``set_to_none``) or zero in place every parameter's gradient."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.fill(0)

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to ``device`` and/or cast floating ones to ``dtype``, in place.

        The Parameter objects stay the same (their ``.data``/``.grad`` are replaced), so tied
        weights stay tied. Create optimizers after moving the model, as in PyTorch.
        """
        device, dtype = backend.split_to_args(device, dtype)
        if device is not None:
            backend.xp_for(device)  # a clear error before anything moves

        def convert(arr):
            if arr is None:
                return None
            if device is not None:
                arr = _host_or_device_array(arr, device, arr.dtype)
            if dtype is not None and arr.dtype.kind == "f":
                arr = arr.astype(dtype, copy=False)
            return arr

        done = set()
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None or id(t) in done:
                    continue
                done.add(id(t))
                new = convert(t.data)
                if new is not t.data:
                    t.data = new
                    t.grad = convert(t.grad)
                    t.set_grad_storage(None)   # an optimizer's buffer stays on the old device/dtype
                    t.bump_version()
                    if device is not None:
                        t.device = device
        return self

    def cpu(self):
        return self.to("cpu")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def half(self):
        return self.to(dtype=np.float16)

    # ------------------------------------------------------------------ state dict
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """Ordered name -> Tensor of every parameter and persistent buffer.

        Values share memory with the module (detached views, or the Parameters themselves
        with ``keep_vars=True``); tied parameters appear under each of their names.
        """
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values (Tensors or numpy/cupy arrays) into the existing parameters and buffers.

        Values are cast to each parameter's dtype and moved to its device; the Parameter
        objects are kept. Everything is checked before anything is copied: a shape mismatch
        is always an error, missing/unexpected keys are errors when ``strict``. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"load_state_dict expects a mapping of name -> tensor, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        mismatched = []
        for k, target in own.items():
            if k in state_dict:
                shape = _shape_of(state_dict[k])
                if shape != target.shape:
                    mismatched.append(f"{k!r}: checkpoint has shape {shape}, the model has {target.shape}")
        problems = []
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(map(repr, missing)))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(map(repr, unexpected)))
        if problems:
            raise RuntimeError(f"error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        with no_grad():
            for k, target in own.items():
                if k in state_dict:
                    target.data[...] = _host_or_device_array(state_dict[k], target.device, target.dtype)
                    target.bump_version()
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (subclasses override)."""
        return ""

    def __repr__(self):
        extra = [line for line in self.extra_repr().split("\n") if line]
        children = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        if not children and len(extra) <= 1:
            return f"{type(self).__name__}({''.join(extra)})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(extra + children) + "\n)"


def _check_name(name, module, registry):
    """register_*(name, ...): a valid name that is not already a plain attribute or method."""
    if not isinstance(name, str) or not name:
        raise KeyError(f"names must be non-empty strings, got {name!r}")
    if "." in name:
        raise KeyError(f"name {name!r} must not contain '.'")
    if hasattr(module, name) and name not in module.__dict__[registry]:
        raise KeyError(f"attribute {name!r} already exists on {type(module).__name__}")


def _shape_of(value) -> tuple:
    if isinstance(value, Tensor):
        return value.shape
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    return tuple(int(s) for s in shape)
