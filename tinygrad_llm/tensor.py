"""Tensor: an n-dimensional array on a device, plus the graph node that produced it.

``t.data`` is the raw backend array (numpy or cupy). When ``requires_grad`` is True and
grad mode is on, every op records a :class:`~tinygrad_llm.function.Function` node as the
output's ``grad_fn``; ``loss.backward()`` walks those nodes in reverse and adds
d loss / d t into ``t.grad`` of every leaf tensor that requires a gradient.

Gradients accumulate: a second ``backward`` adds to ``.grad`` until it is zeroed
(``t.grad = None`` or ``model.zero_grad()``), as in PyTorch.

In-place ops (``add_``, ``mul_``, ``zero_``, ``fill_``, ``copy_``, ``t[i] = v``) are
offered but never recorded: they are allowed on tensors that require no gradient, or
inside ``no_grad()``. Each bumps the tensor's version counter (shared with its views);
if a tensor that a recorded node used is changed in place, that node's backward raises
instead of using stale values.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .function import is_grad_enabled, run_backward
from .ops import elementwise as E
from .ops import matmul as M
from .ops import movement as V
from .ops import reduce as R

__all__ = ["Tensor"]


def _axis_arg(axis, dim, default=None):
    if dim is not None:
        if axis is not None:
            raise TypeError("give axis or dim, not both")
        return dim
    return default if axis is None else axis


def _check_numeric(dtype, data) -> None:
    """TypeError unless ``dtype`` holds numbers (bool, int, float)."""
    if dtype.kind not in "biuf":
        what = f"{type(data).__name__} {data!r:.60}" if not hasattr(data, "dtype") else f"an array of dtype {dtype}"
        raise TypeError(f"cannot make a tensor from {what}: expected a number, a (nested) list of "
                        "numbers, or a numeric array")


def _ragged_message(data) -> str:
    """Where a nested list is not rectangular, for the error message."""
    def find(x, path):
        if isinstance(x, (list, tuple)):
            lens = [len(e) if isinstance(e, (list, tuple)) else None for e in x]
            if len(set(lens)) > 1:
                return path, lens
            for i, e in enumerate(x):
                r = find(e, path + f"[{i}]")
                if r:
                    return r
        return None
    found = find(data, "")
    if found is None:
        return "cannot make a tensor from this nested list: it is not rectangular"
    path, lens = found
    shown = ", ".join("a number" if n is None else f"{n}" for n in lens[:8]) + (", ..." if len(lens) > 8 else "")
    return (f"cannot make a tensor from a ragged nested list: the items of data{path} have lengths "
            f"[{shown}]; every list at one depth must have the same length")


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "grad_fn", "device", "_vbox", "_grad_storage", "_bounds",
                 "__weakref__")

    # NumPy operands on the left (``np.float32(2) * t``, ``arr @ t``) defer to our reflected
    # ops instead of building an object array of Tensors element by element
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, device: str | None = None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if device is None:
            try:
                device = backend.device_of_array(data)
            except TypeError:
                device = "cpu"
        device = backend.canonical_device(device)
        xp = backend.xp_for(device)
        if dtype is not None:
            dtype = backend.canonical_dtype(dtype)
        if isinstance(data, (np.ndarray, np.generic)) or hasattr(data, "__cuda_array_interface__"):
            _check_numeric(data.dtype, data)
            arr = backend.as_array(data, device, dtype)
        else:  # Python scalars and (nested) lists: floats default to float32, as in PyTorch
            try:
                host = np.asarray(data)
            except ValueError:
                raise ValueError(_ragged_message(data)) from None
            _check_numeric(host.dtype, data)
            if dtype is None and host.dtype.kind == "f":
                dtype = backend.default_dtype
            arr = xp.asarray(host, dtype=dtype)
        self.data = arr
        self.grad = None
        self.grad_fn = None
        self.device = device
        self._vbox = [0]
        self._grad_storage = None
        self._bounds = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def wrap(array, device: str, requires_grad: bool = False) -> "Tensor":
        """A plain Tensor around ``array`` as it is: no copy, no conversion, no checks.

        The package's way to turn an array it made into a tensor (ops' outputs, batches,
        positions): ``device`` must already be the array's canonical device name
        (``"cpu"`` or ``"cuda:N"``) and ``requires_grad`` may be True only for a floating
        array. The tensor gets a version counter of its own. Use ``Tensor(...)`` for
        anything that needs checking or converting.
        """
        t = Tensor.__new__(Tensor)
        t.data, t.grad, t.grad_fn, t.device, t._vbox = array, None, None, device, [0]
        t._grad_storage, t._bounds, t.requires_grad = None, None, requires_grad
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def xp(self):
        return backend.xp_for(self.device)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        """How many times this tensor (or a view sharing its memory) was changed in place."""
        return self._vbox[0]

    def bump_version(self) -> None:
        """Record that ``self.data`` was changed in place by code other than the in-place ops
        below (e.g. an optimizer's update, or a module copying in new values).

        The counter is shared with views, and every recorded node compares it with the
        value at its forward pass, so a backward that would read the old values raises.
        """
        self._vbox[0] += 1

    def set_value_bounds(self, lo, hi) -> "Tensor":
        """Record that every value of this (integer) tensor lies in [lo, hi], as known on the host
        by the code that made it (``get_batch`` from the ids it gathered, the model for its
        positions). Checks of indices against a table (``F.embedding``, ``F.cross_entropy``,
        indexing on a GPU) then need not read the values back from the device. The record
        lapses when the tensor is changed in place. Returns self."""
        self._bounds = (int(lo), int(hi), self._vbox[0])
        return self

    @property
    def value_bounds(self):
        """(lo, hi) recorded by :meth:`set_value_bounds` while still valid, else None."""
        b = self._bounds
        return None if b is None or b[2] != self._vbox[0] else b[:2]

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn={self.grad_fn.name}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        body = np.array2string(backend.to_numpy(self.data), precision=4, separator=", ", threshold=50)
        return f"Tensor({body}, dtype={self.dtype}{dev}{extra})"

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """A host (NumPy) copy of the data."""
        return backend.to_numpy(self.data)

    def item(self):
        """The single element as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device=None, dtype=None):
        """This tensor on another device and/or dtype (differentiable); ``self`` if nothing changes."""
        out = self
        device, dtype = backend.split_to_args(device, dtype)
        if device is not None and device != self.device:
            backend.xp_for(device)  # raise a clear error before anything is copied
            out = E.ToDevice.apply(out, device=device)
        if dtype is not None and dtype != out.dtype:
            out = E.Cast.apply(out, dtype=dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def astype(self, dtype):
        return self.to(dtype=dtype)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def half(self):
        return self.to(dtype=np.float16)

    def detach(self) -> "Tensor":
        """A tensor sharing this data, outside the graph."""
        t = Tensor.wrap(self.data, self.device)
        t._vbox = self._vbox
        return t

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None, retain_graph: bool = False):
        """Accumulate d self / d leaf into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is d loss / d self; it may be left out only for a one-element tensor (seed 1).
        ``retain_graph=True`` keeps the graph so it can be walked again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input required grad, or it was computed under no_grad)")
        xp = self.xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, "
                                   f"this one has shape {self.shape}; pass grad=")
            g = xp.ones(self.shape, dtype=self.dtype)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"backward(grad): grad has shape {tuple(g.shape)}, expected {self.shape}")
            g = g.astype(self.dtype, copy=False)
        run_backward(self, g, retain_graph=retain_graph)

    def zero_grad(self):
        self.grad = None

    @property
    def grad_storage(self):
        """The array backward fills as this leaf's ``.grad`` (see :meth:`set_grad_storage`), or None."""
        return self._grad_storage

    def set_grad_storage(self, array) -> "Tensor":
        """Have backward put this leaf's gradient into ``array``, a preallocated array of its
        shape, dtype and device (``None``: a fresh array each time, the default). Returns self.

        When backward reaches the tensor while ``.grad`` is None, it copies the gradient
        into ``array`` and makes ``.grad`` that array instead of allocating one; while
        ``.grad`` is set, later gradients add into it in place, as always. ``.grad = None``
        and ``zero_grad()`` keep their meaning (no gradient yet), and the same memory is
        filled again by the next backward: keep a copy of a ``.grad`` you want to keep.
        Optimizers use this to own the gradients (views into one flat array; docs/nn.md).
        """
        if array is not None:
            if self.grad_fn is not None or not self.requires_grad:
                raise RuntimeError("set_grad_storage: only a leaf tensor that requires grad receives a .grad")
            shape, dtype = tuple(array.shape), array.dtype
            if shape != self.shape or dtype != self.dtype:
                raise ValueError(f"set_grad_storage: the array has shape {shape} and dtype {dtype}, "
                                 f"the tensor {self.shape} and {self.dtype}")
            if backend.device_of_array(array) != self.device:
                raise backend.DeviceError(f"set_grad_storage: the array is on {backend.device_of_array(array)!r}, "
                                          f"the tensor on {self.device!r}")
        self._grad_storage = array
        return self

    # ------------------------------------------------------------------ helpers
    def _lift(self, other) -> "Tensor":
        """``other`` as a tensor on this device; Python scalars take this tensor's float dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, int, float, np.number)):
            dtype = self.data.dtype
            if dtype.kind != "f":
                if isinstance(other, (float, np.floating)):
                    dtype = backend.default_dtype
                elif isinstance(other, bool) and dtype != np.bool_:
                    dtype = np.int64
            return Tensor.wrap(backend.xp_for(self.device).asarray(other, dtype=dtype), self.device)
        return Tensor(other, device=self.device)

    def _operands(self, o, reverse=False, true_div=False):
        """(self, other) for a binary op (swapped when ``reverse``), ``other`` lifted to a tensor.

        Mixed integer and float operands compute in the float operand's dtype, and true
        division of integers in the default float dtype, as PyTorch does (NumPy would
        promote int64 with float32 to float64).
        """
        a, b = self, self._lift(o)
        fa, fb = a.dtype.kind == "f", b.dtype.kind == "f"
        if fa and not fb:
            b = b.to(dtype=a.dtype)
        elif fb and not fa:
            a = a.to(dtype=b.dtype)
        elif true_div and not fa:
            a, b = a.to(dtype=backend.default_dtype), b.to(dtype=backend.default_dtype)
        return (b, a) if reverse else (a, b)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, o):
        return E.Add.apply(*self._operands(o))

    def __radd__(self, o):
        return E.Add.apply(*self._operands(o, reverse=True))

    def __sub__(self, o):
        return E.Sub.apply(*self._operands(o))

    def __rsub__(self, o):
        return E.Sub.apply(*self._operands(o, reverse=True))

    def __mul__(self, o):
        return E.Mul.apply(*self._operands(o))

    def __rmul__(self, o):
        return E.Mul.apply(*self._operands(o, reverse=True))

    def __truediv__(self, o):
        return E.Div.apply(*self._operands(o, true_div=True))

    def __rtruediv__(self, o):
        return E.Div.apply(*self._operands(o, reverse=True, true_div=True))

    def __pow__(self, o):
        return E.Pow.apply(*self._operands(o))

    def __rpow__(self, o):
        return E.Pow.apply(*self._operands(o, reverse=True))

    def __neg__(self):
        return E.Neg.apply(self)

    def __matmul__(self, o):
        return M.MatMul.apply(self, self._lift(o))

    def __rmatmul__(self, o):
        return M.MatMul.apply(self._lift(o), self)

    add, sub, mul, div, pow, matmul = __add__, __sub__, __mul__, __truediv__, __pow__, __matmul__

    def neg(self):
        return E.Neg.apply(self)

    # comparisons: plain boolean tensors, no gradient
    def _compare(self, o, op):
        o = self._lift(o)
        return Tensor.wrap(self.xp.asarray(op(self.data, o.data)), self.device)

    def __eq__(self, o):  # noqa: D105 (elementwise, as in NumPy / PyTorch)
        return self._compare(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._compare(o, lambda a, b: a != b)

    def __lt__(self, o):
        return self._compare(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._compare(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._compare(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._compare(o, lambda a, b: a >= b)

    __hash__ = object.__hash__

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    # ------------------------------------------------------------------ unary / elementwise
    def exp(self):
        return E.Exp.apply(self)

    def log(self):
        return E.Log.apply(self)

    def sqrt(self):
        return E.Sqrt.apply(self)

    def tanh(self):
        return E.Tanh.apply(self)

    def sigmoid(self):
        return E.Sigmoid.apply(self)

    def relu(self):
        return E.ReLU.apply(self)

    def abs(self):
        return E.Abs.apply(self)

    __abs__ = abs

    def maximum(self, o):
        return E.Maximum.apply(self, self._lift(o))

    def minimum(self, o):
        return E.Minimum.apply(self, self._lift(o))

    def clip(self, min=None, max=None):  # noqa: A002 (PyTorch's names)
        if min is None and max is None:
            raise ValueError("clip needs at least one of min and max")
        return E.Clip.apply(self, lo=min, hi=max)

    clamp = clip

    def where(self, cond, other):
        """``self`` where ``cond`` is True, else ``other`` (PyTorch's ``Tensor.where``)."""
        return where(cond, self, other)

    def masked_fill(self, mask, value):
        """``value`` where ``mask`` is True, else self; mask broadcasts to self's shape."""
        mask = mask if isinstance(mask, Tensor) else Tensor(mask, device=self.device)
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_fill: the mask must be boolean, got {mask.dtype}")
        return E.MaskedFill.apply(self, mask, value=value)

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, dim=None):
        return R.Sum.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, dim=None):
        return R.Mean.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims)

    def max(self, axis=None, keepdims=False, dim=None):
        return R.Max.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims)

    def min(self, axis=None, keepdims=False, dim=None):
        return R.Min.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims)

    def var(self, axis=None, keepdims=False, correction=1, dim=None):
        """Variance; ``correction=1`` (the default, as PyTorch) divides by N - 1, 0 by N."""
        return R.Var.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims, correction=correction)

    def logsumexp(self, axis=None, keepdims=False, dim=None):
        return R.LogSumExp.apply(self, axis=_axis_arg(axis, dim), keepdims=keepdims)

    def argmax(self, axis=None, keepdims=False):
        return Tensor.wrap(self.xp.asarray(self.data.argmax(axis=axis, keepdims=keepdims)), self.device)

    def argmin(self, axis=None, keepdims=False):
        return Tensor.wrap(self.xp.asarray(self.data.argmin(axis=axis, keepdims=keepdims)), self.device)

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        return V.Reshape.apply(self, shape=shape)

    view = reshape

    def permute(self, *axes):
        return V.Permute.apply(self, axes=_shape_arg(axes))

    def transpose(self, *axes):
        """NumPy's rule: no axes reverses them all, else ``axes`` is a full permutation.
        Two axes on a tensor that is not 2-D swap those two (PyTorch's ``transpose(a, b)``)."""
        axes = _shape_arg(axes) if axes else tuple(range(self.ndim))[::-1]
        if len(axes) == 2 and self.ndim != 2:
            return self.swapaxes(*axes)
        return V.Permute.apply(self, axes=axes)

    def swapaxes(self, a: int, b: int):
        axes = list(range(self.ndim))
        a, b = R.normalize_axis(a, self.ndim, "swapaxes"), R.normalize_axis(b, self.ndim, "swapaxes")
        axes[a], axes[b] = axes[b], axes[a]
        return V.Permute.apply(self, axes=tuple(axes))

    @property
    def T(self):  # noqa: N802 (NumPy's name)
        return V.Permute.apply(self, axes=tuple(range(self.ndim))[::-1])

    def expand(self, *shape):
        shape = _shape_arg(shape)
        # PyTorch's -1 = keep this dimension
        nd = len(shape)
        full = (1,) * (nd - self.ndim) + self.shape
        shape = tuple(full[i] if s == -1 else s for i, s in enumerate(shape))
        return V.Expand.apply(self, shape=shape)

    def broadcast_to(self, *shape):
        return V.Expand.apply(self, shape=_shape_arg(shape))

    def squeeze(self, axis=None, dim=None):
        axis = _axis_arg(axis, dim)
        if axis is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            axes = R.normalize_axes(axis, self.ndim)
            shape = tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1))
        return self.reshape(shape)

    def unsqueeze(self, axis=None, dim=None):
        axis = _axis_arg(axis, dim)
        if not -self.ndim - 1 <= axis <= self.ndim:
            raise IndexError(f"unsqueeze: axis {axis} is out of range for {self.ndim + 1} dimensions")
        axis = axis % (self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = R.normalize_axis(start_dim, self.ndim, "flatten"), R.normalize_axis(end_dim, self.ndim, "flatten")
        n = 1
        for d in self.shape[s:e + 1]:
            n *= d
        return self.reshape(self.shape[:s] + (n,) + self.shape[e + 1:])

    def __getitem__(self, index):
        return V.GetItem.apply(self, index=_index_arg(index, self))

    def split(self, split_size_or_sections, axis=None, dim=None):
        """Pieces along an axis: an int gives pieces of that size (the last may be smaller),
        a list gives the size of each piece (PyTorch's rule)."""
        axis = R.normalize_axis(_axis_arg(axis, dim, 0), self.ndim, "split")
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split size must be positive, got {split_size_or_sections}")
            sizes = [min(split_size_or_sections, n - i) for i in range(0, n, split_size_or_sections)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split sizes {sizes} do not add up to {n}, the size of axis {axis}")
        out, start = [], 0
        for s in sizes:
            idx = (slice(None),) * axis + (slice(start, start + s),)
            out.append(self[idx])
            start += s
        return out

    def chunk(self, chunks: int, axis=None, dim=None):
        """``chunks`` pieces of equal size along an axis (the last may be smaller), as PyTorch."""
        axis = _axis_arg(axis, dim, 0)
        if chunks <= 0:
            raise ValueError(f"chunks must be positive, got {chunks}")
        n = self.shape[R.normalize_axis(axis, self.ndim, "chunk")]
        return self.split(max(1, math.ceil(n / chunks)), axis=axis)

    # ------------------------------------------------------------------ in place (not recorded)
    def _inplace_check(self, what):
        if is_grad_enabled() and self.requires_grad:
            raise RuntimeError(f"{what}: in-place ops are not recorded in the graph; on a tensor that "
                               "requires grad use them inside no_grad() (as optimisers do)")
        self.bump_version()

    def _value(self, v):
        """The right-hand side of an in-place op as an operand for ``self.data``: a Tensor's
        data, or host data (a NumPy array, a list) copied to this tensor's GPU (CuPy takes
        only scalars from the host)."""
        if isinstance(v, Tensor):
            return v.data
        if self.device != "cpu" and isinstance(v, (np.ndarray, list, tuple)):
            return backend.as_array(v, self.device)
        return v

    def add_(self, other, alpha=1.0):
        self._inplace_check("add_")
        v = self._value(other)
        self.data += v if alpha == 1.0 else alpha * v
        return self

    def sub_(self, other):
        self._inplace_check("sub_")
        self.data -= self._value(other)
        return self

    def mul_(self, other):
        self._inplace_check("mul_")
        self.data *= self._value(other)
        return self

    def fill_(self, value):
        self._inplace_check("fill_")
        self.data.fill(value)
        return self

    def zero_(self):
        return self.fill_(0)

    def copy_(self, src):
        self._inplace_check("copy_")
        src = src if isinstance(src, Tensor) else Tensor(src, device=self.device)
        if src.device != self.device:
            raise backend.DeviceError(f"copy_: source is on {src.device!r}, destination on {self.device!r}")
        self.data[...] = src.data
        return self

    def __setitem__(self, index, value):
        self._inplace_check("__setitem__")
        self.data[_index_arg(index, self)] = self._value(value)


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _index_arg(index, like):
    """Tensors and lists inside an index become arrays on the tensor's device.

    On a GPU the integer arrays are also checked against the sizes of the axes they index:
    NumPy raises IndexError for an index out of range, CuPy would silently wrap it around.
    Host arrays are checked on the host; device arrays by one read of their min and max,
    unless their bounds are known (``Tensor.set_value_bounds``)."""
    items = index if isinstance(index, tuple) else (index,)
    out, bounds = [], []
    for i in items:
        b = None
        if isinstance(i, Tensor):
            if i.device != like.device:
                raise backend.DeviceError(f"index tensor is on {i.device!r}, the indexed tensor on {like.device!r}")
            b, i = i.value_bounds, i.data
        elif isinstance(i, list):
            i = np.asarray(i)
        out.append(i)
        bounds.append(b)
    if like.device != "cpu":
        _check_index_bounds(out, bounds, like.shape, like.xp)
        out = [like.xp.asarray(i) if isinstance(i, np.ndarray) else i for i in out]
    return tuple(out) if isinstance(index, tuple) else out[0]


def _check_index_bounds(items, bounds, shape, xp):
    """IndexError, as NumPy's, for an integer array in ``items`` with an entry outside its axis."""
    def is_array(i):
        return isinstance(i, (np.ndarray, xp.ndarray))

    consumed = sum(0 if i is None or i is Ellipsis else (i.ndim if is_array(i) and i.dtype == bool else 1)
                   for i in items)
    axis = 0
    for i, b in zip(items, bounds):
        if i is Ellipsis:
            axis += len(shape) - consumed
            continue
        if i is None:
            continue
        if is_array(i) and i.dtype == bool:
            axis += i.ndim
            continue
        if is_array(i) and i.dtype.kind in "iu" and i.size and axis < len(shape):
            n = shape[axis]
            if b is None:
                lo, hi = (int(i.min()), int(i.max())) if isinstance(i, np.ndarray) else \
                    (int(v) for v in backend.to_numpy(xp.stack([i.min(), i.max()])))   # one read
            else:
                lo, hi = b
            if lo < -n or hi >= n:
                raise IndexError(f"index {hi if hi >= n else lo} is out of bounds for axis {axis} with size {n}")
        axis += 1


# ---------------------------------------------------------------------- functions on tensors

def where(cond, a, b):
    """``a`` where ``cond`` else ``b``, broadcasting all three; gradients flow to a and b."""
    ref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if ref is None:
        raise TypeError("where: at least one of a and b must be a Tensor")
    a, b = ref._lift(a), ref._lift(b)
    cond = cond if isinstance(cond, Tensor) else Tensor(cond, device=ref.device)
    return E.Where.apply(cond, a, b)


def maximum(a, b):
    return a.maximum(b) if isinstance(a, Tensor) else b._lift(a).maximum(b)


def minimum(a, b):
    return a.minimum(b) if isinstance(a, Tensor) else b._lift(a).minimum(b)


def cat(tensors, axis=None, dim=None):
    """Concatenate along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    axis = R.normalize_axis(_axis_arg(axis, dim, 0), tensors[0].ndim, "cat")
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
                n != m for i, (n, m) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise ValueError(f"cat along axis {axis}: shapes {tensors[0].shape} and {t.shape} differ off that axis")
    return V.Cat.apply(*tensors, axis=axis)


def stack(tensors, axis=None, dim=None):
    """Join along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all shapes must match, got {tensors[0].shape} and {t.shape}")
    axis = R.normalize_axis(_axis_arg(axis, dim, 0), tensors[0].ndim + 1, "stack")
    return V.Stack.apply(*tensors, axis=axis)
