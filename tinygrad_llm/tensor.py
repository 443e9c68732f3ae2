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
from collections import namedtuple

import numpy as np

from . import backend
from .backend import ArgumentError, DtypeError, ShapeError
from .function import is_grad_enabled, run_backward
from .ops import elementwise as E
from .ops import matmul as M
from .ops import movement as V
from .ops import reduce as R
from .ops import softmax as S
from .ops.einsum import LETTERS, Einsum
from .ops.sampling import multinomial as _multinomial

__all__ = ["Tensor", "ValuesIndices"]

#: what ``max(dim)`` / ``min(dim)`` return, as PyTorch's ``torch.return_types.max``
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _axis_arg(axis, dim, default=None):
    """One axis argument from NumPy's spelling (axis) or PyTorch's (dim)."""
    if dim is not None:
        if axis is not None:
            raise TypeError("give axis or dim, not both")
        return dim
    return default if axis is None else axis


def _keep_arg(keepdims, keepdim) -> bool:
    """keepdims (NumPy's spelling) or keepdim (PyTorch's), default False."""
    if keepdim is None:
        return bool(keepdims)
    if keepdims is not None and bool(keepdims) != bool(keepdim):
        raise TypeError("give keepdims or keepdim, not both")
    return bool(keepdim)


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


def _float_function(op, what):
    """A Tensor method applying the elementwise ``op`` (one node), in the default float dtype
    for an integer or boolean tensor (PyTorch's rule; NumPy would give float64)."""
    def method(self):
        return op.apply(self._floating())
    method.__name__ = op.__name__.lower()
    method.__doc__ = f"{what}, elementwise (one {op.__name__} node); integers compute in the default float dtype."
    return method


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
            raise backend.ArgumentError(f"item() needs a tensor with one element, this one has shape {self.shape}")
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
            raise DtypeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
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
        o = self._lift(o)
        if o.data.dtype != self.data.dtype:
            _dtype_mismatch("matmul", self, o)
        return M.MatMul.apply(self, o)

    def __rmatmul__(self, o):
        o = self._lift(o)
        if o.data.dtype != self.data.dtype:
            _dtype_mismatch("matmul", o, self)
        return M.MatMul.apply(o, self)

    add, sub, mul, div, pow, matmul = __add__, __sub__, __mul__, __truediv__, __pow__, __matmul__

    def dot(self, other):
        """The dot product of two 1-D tensors of one size and dtype, a 0-d tensor (PyTorch's dot)."""
        other = self._lift(other)
        if self.ndim != 1 or other.ndim != 1:
            raise ShapeError(f"dot: 1-D tensors expected, got shapes {self.shape} and {other.shape}")
        if self.shape != other.shape:
            raise ShapeError(f"dot: the tensors must have one size, got {self.shape[0]} and {other.shape[0]}")
        if other.dtype != self.dtype:
            _dtype_mismatch("dot", self, other)
        return M.MatMul.apply(self, other)

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

    # logical / bitwise: boolean (or integer) tensors, no gradient, as the comparisons
    def _bitwise(self, o, fn, name):
        o = self._lift(o)
        for t in (self, o):
            if t.dtype.kind not in "biu":
                raise DtypeError(f"{name}: needs boolean or integer tensors, got {t.dtype}")
        return Tensor.wrap(self.xp.asarray(fn(self.data, o.data)), self.device)

    def __and__(self, o):
        return self._bitwise(o, self.xp.bitwise_and, "&")

    def __or__(self, o):
        return self._bitwise(o, self.xp.bitwise_or, "|")

    def __xor__(self, o):
        return self._bitwise(o, self.xp.bitwise_xor, "^")

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__
    bitwise_and, bitwise_or, bitwise_xor = __and__, __or__, __xor__

    def __invert__(self):
        """``~t``: logical not of a boolean tensor, bitwise not of an integer one."""
        if self.dtype.kind not in "biu":
            raise DtypeError(f"~: needs a boolean or integer tensor, got {self.dtype}")
        return Tensor.wrap(self.xp.asarray(self.xp.invert(self.data)), self.device)

    bitwise_not = __invert__

    def logical_not(self):
        """True where the element is 0 (or False), any dtype; a boolean tensor."""
        return Tensor.wrap(self.xp.asarray(self.xp.logical_not(self.data)), self.device)

    def logical_and(self, o):
        return self._compare(o, self.xp.logical_and)

    def logical_or(self, o):
        return self._compare(o, self.xp.logical_or)

    def logical_xor(self, o):
        return self._compare(o, self.xp.logical_xor)

    def __bool__(self):
        if self.size != 1:
            raise backend.ArgumentError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    # ------------------------------------------------------------------ unary / elementwise
    def _floating(self) -> "Tensor":
        """self, or an integer/boolean tensor as the default float dtype: PyTorch's rule for
        exp, log, sin, ... (NumPy would give float64)."""
        return self if self.dtype.kind == "f" else self.to(dtype=backend.default_dtype)

    exp = _float_function(E.Exp, "e ** x")
    log = _float_function(E.Log, "the natural logarithm")
    sqrt = _float_function(E.Sqrt, "the square root")
    tanh = _float_function(E.Tanh, "the hyperbolic tangent")
    sigmoid = _float_function(E.Sigmoid, "1 / (1 + exp(-x)), without overflow")
    sin = _float_function(E.Sin, "the sine")
    cos = _float_function(E.Cos, "the cosine")
    rsqrt = _float_function(E.Rsqrt, "1 / sqrt(x)")
    log2 = _float_function(E.Log2, "the base-2 logarithm")
    exp2 = _float_function(E.Exp2, "2 ** x")

    def square(self):
        """x * x, one node; integers stay integers."""
        return E.Square.apply(self)

    def sign(self):
        """-1, 0 or 1 by the sign of each element (gradient 0)."""
        return E.Sign.apply(self)

    def _rounding(self, op, **kwargs):
        if self.dtype.kind != "f":          # already whole numbers: a copy, as PyTorch
            return Tensor.wrap(self.data.copy(), self.device)
        return op.apply(self, **kwargs)

    def floor(self):
        """The largest whole number <= x (gradient 0)."""
        return self._rounding(E.Floor)

    def ceil(self):
        """The smallest whole number >= x (gradient 0)."""
        return self._rounding(E.Ceil)

    def round(self, decimals: int = 0):
        """x rounded to ``decimals`` places, halves to even as PyTorch (gradient 0)."""
        if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
            raise TypeError(f"round: decimals must be an int, got {decimals!r}")
        return self._rounding(E.Round, decimals=int(decimals))

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
    # Every reduction takes NumPy's spellings (axis=, keepdims=) and PyTorch's (dim=, keepdim=).
    def sum(self, axis=None, keepdims=None, dim=None, keepdim=None):
        return R.Sum.apply(self, axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim))

    def mean(self, axis=None, keepdims=None, dim=None, keepdim=None):
        """The mean; an integer tensor's is taken in the default float dtype."""
        return R.Mean.apply(self._floating(), axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim))

    def max(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The largest element, or PyTorch's three forms:

        * ``max()``: over everything; ``max(axis=...)`` (NumPy's spelling, one axis or a
          tuple) and ``max(dim=(...))``: the values alone, as ``amax``; tied maxima share
          the gradient evenly;
        * ``max(dim)`` with one int dim: ``(values, indices)`` (``ValuesIndices``), the first
          maximum's index along dim; the gradient goes to that element alone, as PyTorch;
        * ``max(other_tensor)``: the elementwise maximum (``maximum``).
        """
        return self._extreme(R.Max, dim, keepdim, axis, keepdims)

    def min(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The smallest element; the forms of ``max``, with minima."""
        return self._extreme(R.Min, dim, keepdim, axis, keepdims)

    def _extreme(self, op, dim, keepdim, axis, keepdims):
        if isinstance(dim, Tensor):
            return self.maximum(dim) if op is R.Max else self.minimum(dim)
        keep = _keep_arg(keepdims, keepdim)
        if dim is None or axis is not None or isinstance(dim, (tuple, list)):
            return op.apply(self, axis=_axis_arg(axis, dim), keepdims=keep)
        d = R.normalize_axis(dim, max(self.ndim, 1), op.pick)
        if self.ndim == 0:
            return ValuesIndices(self, Tensor.wrap(self.xp.zeros((), dtype=np.int64), self.device))
        if self.shape[d] == 0:
            raise IndexError(f"{op.pick}(dim={dim}): dim {d} of shape {self.shape} is empty")
        pick = self.data.argmax if op is R.Max else self.data.argmin
        at = Tensor.wrap(self.xp.asarray(pick(axis=d, keepdims=True)).astype(np.int64, copy=False), self.device)
        values = V.Gather.apply(self, at, axis=d)
        if not keep:
            values, at = values.squeeze(d), at.squeeze(d)
        return ValuesIndices(values, at)

    def amax(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The largest element over ``dim`` (an int, a tuple, or None for all); tied maxima share the gradient."""
        return R.Max.apply(self, axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim))

    def amin(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The smallest element over ``dim``; tied minima share the gradient."""
        return R.Min.apply(self, axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim))

    def var(self, dim=None, unbiased=None, keepdim=None, correction=None, axis=None, keepdims=None):
        """Variance over ``dim``: sum((x - mean)**2) / (N - correction). ``correction=1`` (the
        default, as PyTorch) divides by N - 1, 0 by N; ``unbiased=True/False`` is PyTorch's
        older spelling of correction 1/0."""
        return R.Var.apply(self._floating(), axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim),
                           correction=_correction_arg(correction, unbiased))

    def std(self, dim=None, unbiased=None, keepdim=None, correction=None, axis=None, keepdims=None):
        """Standard deviation, sqrt(var) (arguments as ``var``), one node. Where every element of
        the reduced slice is equal the gradient is 0 (PyTorch: NaN)."""
        return R.Std.apply(self._floating(), axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim),
                           correction=_correction_arg(correction, unbiased))

    def logsumexp(self, axis=None, keepdims=None, dim=None, keepdim=None):
        return R.LogSumExp.apply(self._floating(), axis=_axis_arg(axis, dim), keepdims=_keep_arg(keepdims, keepdim))

    def argmax(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The index of the (first) largest element, over everything (flattened) or along one dim."""
        return self._arg(self.data.argmax, dim, keepdim, axis, keepdims)

    def argmin(self, dim=None, keepdim=None, axis=None, keepdims=None):
        """The index of the (first) smallest element, over everything (flattened) or along one dim."""
        return self._arg(self.data.argmin, dim, keepdim, axis, keepdims)

    def _arg(self, pick, dim, keepdim, axis, keepdims):
        axis = _axis_arg(axis, dim)
        if axis is not None:
            axis = R.normalize_axis(axis, max(self.ndim, 1), "argmax")
        keep = _keep_arg(keepdims, keepdim)
        if self.ndim == 0:
            return Tensor.wrap(self.xp.zeros((), dtype=np.int64), self.device)
        out = self.xp.asarray(pick(axis=axis, keepdims=keep)).astype(np.int64, copy=False)
        return Tensor.wrap(out, self.device)

    def cumsum(self, dim=None, axis=None):
        """Running sums along ``dim`` (required, as PyTorch): out[i] = x[0] + ... + x[i]; integers
        and booleans are summed as int64."""
        d = _axis_arg(axis, dim)
        if d is None:
            raise TypeError("cumsum: give the dim to sum along")
        d = R.normalize_axis(d, max(self.ndim, 1), "cumsum")
        x = self if self.dtype.kind == "f" else self.to(dtype=np.int64)
        if x.ndim == 0:
            return R.CumSum.apply(x.reshape(1), axis=0).reshape(())
        return R.CumSum.apply(x, axis=d)

    # ------------------------------------------------------------------ softmax family (as F.softmax)
    def softmax(self, dim=None, axis=None):
        """exp(x) / sum(exp(x)) along ``dim`` (default the last). A row that is all -inf gives
        zeros and a zero gradient (PyTorch: NaN). The same op as ``F.softmax``."""
        return S.Softmax.apply(self._float_for("softmax"), axis=self._dim_for("softmax", dim, axis))

    def log_softmax(self, dim=None, axis=None):
        """x - logsumexp(x) along ``dim`` (default the last). A row that is all -inf gives -inf
        and the gradient g (PyTorch: NaN). The same op as ``F.log_softmax``."""
        return S.LogSoftmax.apply(self._float_for("log_softmax"), axis=self._dim_for("log_softmax", dim, axis))

    def cat(self, *others, dim=None, axis=None):
        """``tinygrad_llm.cat((self, *others), dim)`` (tinygrad's spelling)."""
        return cat((self, *others), axis=axis, dim=dim)

    def multinomial(self, num_samples: int, replacement: bool = False):
        """Category indices drawn from this tensor's weights, PyTorch's ``multinomial``:
        ``self`` (C,) or (R, C) holds weights >= 0 (not necessarily summing to 1) -> int64
        (num_samples,) or (R, num_samples). Without replacement a category is drawn at most
        once per row. No gradient. Uses the package's generator (``manual_seed``)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ArgumentError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
        if self.ndim not in (1, 2) or self.shape[-1] == 0:
            raise ShapeError(f"multinomial: weights must be 1-D or 2-D with at least one category, got {self.shape}")
        w = self.data if self.ndim == 2 else self.data[None]
        if w.dtype.kind not in "fiub":
            raise DtypeError(f"multinomial: weights must be numbers, got {w.dtype}")
        xp = self.xp
        positive = (w > 0).sum(axis=1)
        flags = xp.stack([((w < 0) | ~xp.isfinite(w)).any(), (positive == 0).any(), (positive < num_samples).any()])
        bad, empty, too_few = backend.to_numpy(flags).tolist()            # one host sync: the checks are worth it
        if bad or empty:
            raise ArgumentError("multinomial: weights must be finite and >= 0, with a positive sum in every row")
        if not replacement and too_few:
            raise ArgumentError(f"multinomial: cannot draw {num_samples} samples without replacement from "
                                f"rows with fewer categories of positive weight")
        idx = _multinomial(self.device, w, int(num_samples), bool(replacement))
        return Tensor.wrap(idx if self.ndim == 2 else idx[0], self.device)

    def _float_for(self, op):
        if self.dtype.kind != "f":
            raise DtypeError(f"{op}: input must be a floating-point tensor, got dtype {self.dtype}")
        return self

    def _dim_for(self, op, dim, axis):
        return R.normalize_axis(_axis_arg(axis, dim, -1), max(self.ndim, 1), op)

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape, **kw):
        """The same elements in a new shape (one entry may be -1); ``reshape(2, 3)``,
        ``reshape((2, 3))`` or PyTorch's ``reshape(shape=(2, 3))``."""
        shape = _shape_arg(_sizes_kw("reshape", shape, kw, "shape"))
        if shape == self.shape:
            return self
        return V.Reshape.apply(self, shape=shape)

    def view(self, *size, **kw):
        """``reshape`` under PyTorch's other name (keyword ``size=``); every array here may be a view."""
        return self.reshape(*_sizes_kw("view", size, kw, "size"))

    def contiguous(self):
        """``self``: PyTorch needs contiguous memory before ``view``; every op here reads any
        strides (NumPy and CuPy do), so there is nothing to do. Kept so PyTorch code runs as written."""
        return self

    def permute(self, *dims, **kw):
        """The axes in a new order; ``permute(2, 0, 1)``, ``permute((2, 0, 1))`` or ``permute(dims=...)``."""
        return V.Permute.apply(self, axes=_shape_arg(_sizes_kw("permute", dims, kw, "dims")))

    def transpose(self, *axes, dim0=None, dim1=None):
        """PyTorch's ``transpose(dim0, dim1)``: swap two axes (also as keywords). Without
        arguments, all axes reversed; three or more: a full permutation (NumPy's ``transpose``)."""
        if dim0 is not None or dim1 is not None:
            if axes or dim0 is None or dim1 is None:
                raise TypeError("transpose: give both dim0 and dim1, and no other axes")
            axes = (dim0, dim1)
        axes = _shape_arg(axes) if axes else tuple(range(self.ndim))[::-1]
        if len(axes) == 2:
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

    def expand(self, *sizes, **kw):
        """A broadcast view to ``sizes`` (``expand(4, 2, 3)``, ``expand((4, 2, 3))`` or
        ``expand(size=...)``); -1 keeps that dimension, as in PyTorch."""
        shape = _shape_arg(_sizes_kw("expand", sizes, kw, "size"))
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

    def unflatten(self, dim: int, sizes):
        """Axis ``dim`` split into several with ``sizes`` (one may be -1), the inverse of flatten."""
        d = R.normalize_axis(dim, self.ndim, "unflatten")
        sizes = tuple(int(n) for n in sizes)
        if not sizes:
            raise ShapeError("unflatten: sizes must not be empty")
        known = math.prod(n for n in sizes if n != -1)
        if sizes.count(-1) > 1 or (-1 not in sizes and known != self.shape[d]) or (
                -1 in sizes and (known == 0 or self.shape[d] % known)):
            raise ShapeError(f"unflatten: sizes {sizes} do not multiply to {self.shape[d]}, the size of dim {d}")
        return self.reshape(self.shape[:d] + sizes + self.shape[d + 1:])

    def flip(self, *dims, **kw):
        """The elements in reverse order along ``dims`` (``flip(0)``, ``flip(0, 1)``,
        ``flip((0, 1))`` or ``flip(dims=...)``); a copy, as in PyTorch."""
        dims = _shape_arg(_sizes_kw("flip", dims, kw, "dims"))
        return V.Flip.apply(self, axes=R.normalize_axes(dims, self.ndim))

    def repeat(self, *repeats, **kw):
        """The tensor tiled ``repeats[d]`` times along each axis d (PyTorch's repeat, NumPy's
        tile); ``repeats`` may have more entries than dims (new leading axes)."""
        reps = _shape_arg(_sizes_kw("repeat", repeats, kw, "repeats"))
        if len(reps) < self.ndim:
            raise ShapeError(f"repeat: {len(reps)} repeats given for a tensor with {self.ndim} dims; "
                             "give one per dim (or more)")
        if any(r < 0 for r in reps):
            raise ValueError(f"repeat: repeats must be >= 0, got {reps}")
        return V.Repeat.apply(self, reps=reps)

    def tril(self, diagonal: int = 0):
        """The lower triangle of the last two axes: entries (i, j) with j - i <= diagonal, 0 elsewhere."""
        return V.Tril.apply(self._matrices("tril"), diagonal=_int_arg("tril", "diagonal", diagonal))

    def triu(self, diagonal: int = 0):
        """The upper triangle of the last two axes: entries (i, j) with j - i >= diagonal, 0 elsewhere."""
        return V.Triu.apply(self._matrices("triu"), diagonal=_int_arg("triu", "diagonal", diagonal))

    def _matrices(self, op):
        if self.ndim < 2:
            raise ShapeError(f"{op}: needs a tensor of at least 2 dims, got shape {self.shape}")
        return self

    def gather(self, dim: int, index):
        """out[i][j][k] = self[i][index[i][j][k]][k] for dim 1 (likewise any dim), PyTorch's
        gather: ``index`` is an integer tensor with self's number of dims, no larger than self
        on the other dims; out has its shape. The gradient is scattered back (repeats add up)."""
        if self.ndim == 0:                        # one element: as a 1-D tensor of size 1
            return self.reshape(1).gather(dim, _as_tensor(index, self).reshape(1)).reshape(())
        d, index = self._index_along("gather", dim, index, self.shape)
        return V.Gather.apply(self, index, axis=d)

    def scatter_add(self, dim: int, index, src):
        """A copy of self with src[i][j][k] added at self[i][index[i][j][k]][k] for dim 1
        (likewise any dim), for every position of ``index``; repeats add up. PyTorch's rules:
        index no larger than src on every dim, nor than self off ``dim``."""
        if not isinstance(src, Tensor):
            raise TypeError(f"scatter_add: src must be a Tensor, got {type(src).__name__}")
        if src.dtype != self.dtype:
            raise DtypeError(f"scatter_add: src must have self's dtype {self.dtype}, got {src.dtype}")
        if src.ndim != self.ndim:
            raise ShapeError(f"scatter_add: src must have {self.ndim} dims as self, got shape {src.shape}")
        if self.ndim == 0:                        # one element: as a 1-D tensor of size 1
            return self.reshape(1).scatter_add(dim, _as_tensor(index, self).reshape(1), src.reshape(1)).reshape(())
        d, index = self._index_along("scatter_add", dim, index, self.shape)
        if any(i > n for i, n in zip(index.shape, src.shape)):
            raise ShapeError(f"scatter_add: index of shape {index.shape} is larger than src {src.shape}")
        return V.ScatterAdd.apply(self, index, src, axis=d)

    def _index_along(self, op, dim, index, shape):
        """(dim as an int, index as an int64 tensor on self's device) after PyTorch's checks."""
        d = R.normalize_axis(dim, max(self.ndim, 1), op)
        index = _as_tensor(index, self)
        if index.device != self.device:
            raise backend.DeviceError(f"{op}: index is on {index.device!r}, self on {self.device!r}")
        if index.dtype.kind not in "iu":
            raise DtypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
        if index.ndim != self.ndim:
            raise ShapeError(f"{op}: index must have {self.ndim} dims as self, got shape {index.shape}")
        if any(i > n for k, (i, n) in enumerate(zip(index.shape, shape)) if k != d):
            raise ShapeError(f"{op}: index of shape {index.shape} is larger than self {shape} off dim {d}")
        if index.size:
            lo, hi = int(index.data.min()), int(index.data.max())     # host syncs: the check is worth them
            if lo < 0 or hi >= shape[d]:
                raise IndexError(f"{op}: index {lo if lo < 0 else hi} is out of bounds for dim {d} "
                                 f"with size {shape[d]}")
        return d, Tensor.wrap(index.data.astype(np.int64, copy=False), self.device)

    def __getitem__(self, index):
        index, then = _index_arg(index, self)
        return V.GetItem.apply(self, index=index, then=then)

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
        index, then = _index_arg(index, self)
        if then is None:
            self.data[index] = self._value(value)
        else:                                   # self.data[index] is a view: write through it
            self.data[index][then] = self._value(value)


def _sizes_kw(op, args, kw, name):
    """Sizes given positionally (``args``) or as PyTorch's keyword ``name=``, not both."""
    if kw:
        if set(kw) != {name} or args:
            raise TypeError(f"{op}: give the sizes positionally or as {name}=, got {args or ''} {sorted(kw)}")
        return (kw[name],)
    return args


def _int_arg(op, name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return int(value)


def _correction_arg(correction, unbiased) -> int:
    """var/std's divisor N - correction: ``correction`` (default 1), or PyTorch's older
    ``unbiased`` (True: 1, False: 0)."""
    if unbiased is not None:
        if correction is not None:
            raise TypeError("give correction or unbiased, not both")
        return int(bool(unbiased))
    return 1 if correction is None else correction


def _as_tensor(x, like) -> "Tensor":
    return x if isinstance(x, Tensor) else Tensor(x, device=like.device)


def _dtype_mismatch(op, a, b):
    """PyTorch refuses a matrix product of float32 with float64 (or int with float), and so
    do we, instead of promoting silently."""
    raise DtypeError(f"{op}: both operands must have one dtype, got {a.dtype} and {b.dtype}; "
                     "cast one with .to(dtype)")


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _index_item(i, like, bounds: dict):
    """One item of an index as NumPy takes it: a Tensor gives its array (and its known value
    bounds into ``bounds``), a list a host array (``_on_device`` moves it to a GPU)."""
    if isinstance(i, Tensor):
        if i.device != like.device:
            raise backend.DeviceError(f"index tensor is on {i.device!r}, the indexed tensor on {like.device!r}")
        if i.value_bounds is not None:
            bounds[id(i.data)] = i.value_bounds
        return i.data
    if isinstance(i, list):
        return np.asarray(i)
    return i


def _sequence_is_tuple(index: list) -> bool:
    """PyTorch's (and old NumPy's) reading of a list used as an index: a tuple of indices when
    it is shorter than 32 and holds a Tensor, an array, a list or tuple, a slice, Ellipsis or
    None (``x[[t, 1]]`` is ``x[t, 1]``, ``x[[[0]]]`` is ``x[[0]]``); else one index array."""
    return len(index) < 32 and any(
        isinstance(i, (Tensor, np.ndarray, list, tuple, slice)) or i is None or i is Ellipsis
        or hasattr(i, "__cuda_array_interface__") for i in index)


def _is_int(i) -> bool:
    """An int, or a 0-d integer array (a 0-d integer Tensor): PyTorch selects with it."""
    if isinstance(i, (bool, np.bool_)):
        return False
    if isinstance(i, (int, np.integer)):
        return True
    return getattr(i, "ndim", None) == 0 and i.dtype.kind in "iu"


def _index_arg(index, like):
    """``index`` in NumPy's terms with PyTorch's meaning, as ``(index, then)``: the tensor is
    indexed ``x[index]``, then, when ``then`` is not None, ``[then]``.

    The two libraries differ where an int (or a 0-d integer tensor) stands in the same index
    as an index array: NumPy counts the int as one more advanced index (so
    ``x[1, :, t]`` puts t's dims first), PyTorch selects with the int first and then places
    the remaining advanced dims by its usual rule (``x[1, :, t]`` has them last, where t was).
    Such an index is split here into the basic part (ints, slices, None, Ellipsis) and the
    advanced part, applied to the result: NumPy's placement of the advanced part then agrees
    with PyTorch's. A 0-d integer tensor in such a split index is read as a Python int (on a
    GPU, one host sync). Lists are read as PyTorch reads them (``_sequence_is_tuple``).
    """
    if isinstance(index, list) and _sequence_is_tuple(index):
        index = tuple(index)
    bounds = {}                                        # id(array) -> (lo, hi) known on the host
    if not isinstance(index, tuple):
        return _on_device((_index_item(index, like, bounds),), bounds, like.shape, like)[0], None
    items, has_int, has_array = [], False, False
    for i in index:
        if type(i) is int:
            has_int = True
        elif type(i) is not slice and i is not None and i is not Ellipsis:
            i = _index_item(i, like, bounds)
            if _is_int(i):
                has_int = True
            elif getattr(i, "ndim", 0) > 0:
                has_array = True
        items.append(i)
    if not (has_int and has_array):
        return _on_device(items, bounds, like.shape, like), None
    first, then, consumed, ellipsis = [], [], 0, False
    for i in items:
        if _is_int(i):
            first.append(int(i))
            consumed += 1
        elif getattr(i, "ndim", 0) > 0:              # an index array: a full slice now, the array after
            n = i.ndim if i.dtype == np.bool_ else 1
            first += [slice(None)] * n
            then.append(i)
            consumed += n
        elif i is Ellipsis:
            first.append(i)
            then.append(i)
            ellipsis = True
        else:                                          # a slice, None or a Python bool
            first.append(i)
            then.append(slice(None))
            consumed += isinstance(i, slice)
    if ellipsis:                                       # spelled out: the dims it stands for, as full slices
        k = next(j for j, t in enumerate(then) if t is Ellipsis)
        then[k:k + 1] = [slice(None)] * (like.ndim - consumed)
    first = tuple(first)
    mid_shape = np.broadcast_to(np.empty((), np.uint8), like.shape)[first].shape   # a view: no copy
    return first, _on_device(then, bounds, mid_shape, like)


def _on_device(items, bounds, shape, like) -> tuple:
    """``items`` (an index into an array of ``shape``) ready for ``like``'s device: on a GPU,
    integer arrays checked against their axes (``_check_index_bounds``), host arrays copied over."""
    if like.device == "cpu":
        return tuple(items)
    _check_index_bounds(items, [bounds.get(id(i)) for i in items], shape, like.xp)
    return tuple(like.xp.asarray(i) if isinstance(i, np.ndarray) else i for i in items)


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

_NUMBERS = (bool, int, float, np.bool_, np.integer, np.floating)


def where(cond, a, b):
    """``a`` where ``cond`` else ``b``, broadcasting all three; gradients flow to a and b.

    ``a`` and ``b`` may be Tensors or Python numbers; with two numbers the result's dtype is
    PyTorch's: bool for two bools, int64 for ints, the default float dtype if either is a
    float (``where(c, 4, 2)`` is an int64 tensor on cond's device).
    """
    ref = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if ref is None:
        if not isinstance(cond, Tensor):
            raise TypeError(f"where: cond must be a Tensor when a and b are not, got {type(cond).__name__}")
        if not (isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS)):
            raise TypeError(f"where: a and b must be Tensors or numbers, got {type(a).__name__} and "
                            f"{type(b).__name__}")
        bools = isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_))
        floats = isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating))
        dtype = np.bool_ if bools else backend.default_dtype if floats else np.int64
        ref = Tensor.wrap(cond.xp.asarray(a, dtype=dtype), cond.device)
    a, b = ref._lift(a), ref._lift(b)
    cond = cond if isinstance(cond, Tensor) else Tensor(cond, device=ref.device)
    return E.Where.apply(cond, a, b)


def maximum(a, b):
    return a.maximum(b) if isinstance(a, Tensor) else b._lift(a).maximum(b)


def minimum(a, b):
    return a.minimum(b) if isinstance(a, Tensor) else b._lift(a).minimum(b)


def cat(tensors, axis=None, dim=None):
    """Concatenate a list or tuple of tensors along an existing axis (``torch.cat(tensors, dim)``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    axis = R.normalize_axis(_axis_arg(axis, dim, 0), tensors[0].ndim, "cat")
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
                n != m for i, (n, m) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise ShapeError(f"cat along axis {axis}: shapes {tensors[0].shape} and {t.shape} differ off that axis")
    return V.Cat.apply(*tensors, axis=axis)


def stack(tensors, axis=None, dim=None):
    """Join along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ShapeError(f"stack: all shapes must match, got {tensors[0].shape} and {t.shape}")
    axis = R.normalize_axis(_axis_arg(axis, dim, 0), tensors[0].ndim + 1, "stack")
    return V.Stack.apply(*tensors, axis=axis)


def multinomial(input, num_samples: int, replacement: bool = False):  # noqa: A002 (PyTorch's name)
    """``input.multinomial(num_samples, replacement)`` (``torch.multinomial``)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial: input must be a Tensor, got {type(input).__name__}")
    return input.multinomial(num_samples, replacement)


def einsum(equation: str, *operands):
    """Einstein summation, PyTorch's ``torch.einsum(equation, *operands)``, one graph node.

    ``"ij,jk->ik"`` is a matrix product, ``"bij,bjk->bik"`` a batched one, ``"ii->i"`` a
    diagonal, ``"i,j->ij"`` an outer product, ``"...ij->...ji"`` a transpose of the last two
    dims; without ``->`` the output is the letters used once, in alphabetical order
    (capitals first). Letters a-z and A-Z, spaces ignored; ``...`` stands for the dims no
    letter names (broadcast between operands, as are dims of size 1). Operands may also be
    passed as one list. Any number of operands; the gradient of each is an einsum of the
    others and the output's gradient (docs/backprop.md, "Einsum").
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum: the equation must be a string, got {type(equation).__name__}")
    for k, t in enumerate(operands):
        if not isinstance(t, Tensor):
            raise TypeError(f"einsum: operand {k} must be a Tensor, got {type(t).__name__}")
    if not operands:
        raise ArgumentError("einsum: give at least one operand")
    if any(t.dtype != operands[0].dtype for t in operands):
        raise DtypeError(f"einsum: operands must share one dtype, got {[str(t.dtype) for t in operands]}")
    terms, out = _einsum_terms(equation.replace(" ", ""), [t.ndim for t in operands])
    sizes = {}
    for k, (term, t) in enumerate(zip(terms, operands)):
        for c in set(term):
            dims = [n for d, n in zip(term, t.shape) if d == c]
            if len(set(dims)) > 1:
                raise ShapeError(f"einsum: subscript {c} is repeated in operand {k} with sizes {dims}, which differ")
        for c, n in zip(term, t.shape):
            if c in sizes and n != sizes[c] and 1 not in (n, sizes[c]):
                raise ShapeError(f"einsum: subscript {c} has size {n} in operand {k}, which does not "
                                 f"broadcast with size {sizes[c]} seen before")
            sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
    return Einsum.apply(*operands, terms=tuple(terms), out=out)


def _einsum_terms(equation: str, ndims):
    """(one string of letters per operand, the output's letters): each ``...`` replaced by
    letters of its own (right-aligned: an operand's last ellipsis dim gets the last letter),
    an implicit output spelled out. ShapeError/ArgumentError (a ValueError) naming what is wrong."""
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(ndims):
        raise ArgumentError(f"einsum: the equation has {len(inputs)} operand(s), {len(ndims)} were given")
    bad = sorted(set(equation.replace("...", "").replace(",", "").replace("->", "")) - set(LETTERS))
    if bad or "." in (lhs + rhs).replace("...", ""):
        raise ArgumentError(f"einsum: subscripts must be letters a-z or A-Z (and '...'), got {bad or ['.']}")
    spare = [c for c in LETTERS if c not in equation]
    widths = []
    for k, (term, nd) in enumerate(zip(inputs, ndims)):
        named = len(term.replace("...", ""))
        if term.count("...") > 1 or ("..." not in term and named != nd) or named > nd:
            raise ShapeError(f"einsum: operand {k} has {nd} dims, but its subscripts {term!r} name {named}"
                             + ("" if "..." in term else " (and no '...')"))
        widths.append(nd - named if "..." in term else 0)
    width = max(widths, default=0)
    if width > len(spare):
        raise ArgumentError("einsum: too many dims for the 52 letters")
    dots = "".join(spare[:width])
    terms = [t.replace("...", dots[width - w:]) for t, w in zip(inputs, widths)]
    if arrow:
        if rhs.count("...") > 1:
            raise ArgumentError(f"einsum: the output {rhs!r} has '...' more than once")
        out = rhs.replace("...", dots)
        used = set("".join(terms))
        for c in out:
            if c not in used or out.count(c) > 1:
                raise ArgumentError(f"einsum: output subscript {c} " + (
                    "appears more than once" if c in used else "appears in no operand"))
    else:
        letters = "".join(t.replace("...", "") for t in inputs)
        out = dots + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, out
