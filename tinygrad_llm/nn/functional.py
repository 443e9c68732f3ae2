"""The transformer's ops as functions, with PyTorch's signatures (``import tinygrad_llm.nn.functional as F``).

Each function here is one graph node; its forward and hand-written backward live in
``tinygrad_llm/ops/`` (see docs/backprop.md for the derivations), with a fast kernel in
``tinygrad_llm/kernels/`` where one exists. These wrappers are the package's one place
of argument checking for these ops: they sort out PyTorch's call forms, optional
tensors and index arrays, check every argument once (a bad one is a one-line error that
names it), and call ``Op.apply`` with arrays the op can trust.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..function import autocast_dtype, is_grad_enabled
from ..backend import ArgumentError, DtypeError, ShapeError
from ..ops.activation import ELU, GELU_APPROXIMATIONS, GELU, LeakyReLU, SiLU, Softplus, SwiGLU
from ..ops.attention import ScaledDotProductAttention
from ..ops.binary_cross_entropy import BinaryCrossEntropy, BinaryCrossEntropyWithLogits
from ..ops.cross_entropy import REDUCTIONS, CrossEntropy
from ..ops.dpo import DPOLoss
from ..ops.dropout import Dropout
from ..ops.elementwise import ReLU
from ..ops.embedding import Embedding
from ..ops.flash_attention import BLOCK_K, BLOCK_Q, FlashAttention, FlashCausalSelfAttention
from ..ops.linear import Linear
from ..ops.movement import Pad
from ..ops.norm import LayerNorm, RMSNorm
from ..ops.rope import RoPE
from ..ops.self_attention import CausalSelfAttention
from ..tensor import Tensor

__all__ = [
    "linear", "softmax", "log_softmax", "cross_entropy", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "layer_norm", "rms_norm",
    "gelu", "relu", "silu", "swiglu", "leaky_relu", "elu", "softplus", "embedding", "one_hot", "pad", "dropout",
    "scaled_dot_product_attention", "causal_self_attention", "rotary_embedding", "dpo_loss",
]


def _tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    return x


def _float_tensor(x, op, name="input"):
    """``x`` when it is a floating-point Tensor; TypeError naming the op and the argument otherwise."""
    _tensor(x, name)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _probability(p, name, hi_open):
    """``p`` as a float in [0, 1] (or [0, 1) when ``hi_open``); ValueError naming it otherwise."""
    ok = isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= p and (p < 1.0 if hi_open else p <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be a number in [0, {'1)' if hi_open else '1]'}, got {p!r}")
    return float(p)


def _index_tensor(a, device):
    """An integer Tensor on ``device`` from a Tensor, a numpy/cupy array, a list or an int."""
    if isinstance(a, Tensor):
        return a
    return Tensor(a, device=device)


def _at_logits_precision(a, logits):
    """A list / number / array as an array; floating-point values keep the logits' dtype (a
    Python float list would otherwise become float32 and lose digits against float64 logits)."""
    if hasattr(a, "__cuda_array_interface__"):
        return a
    arr = np.asarray(a)
    return arr.astype(logits.dtype) if arr.dtype.kind == "f" and arr.dtype != logits.dtype else arr


def _low(*tensors):
    """Under ``amp.autocast``: each float32 tensor cast to the autocast dtype (float16) by a
    recorded cast, so its gradient comes back as float32; as they are otherwise. For the ops
    that run in float16: linear, attention, embedding's output."""
    dtype = autocast_dtype()
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t is not None and t.dtype == np.float32 else t for t in tensors)


def _high(x):
    """Under ``amp.autocast``: a float16 tensor widened to float32 (a recorded cast); ``x``
    otherwise. For the ops that run in float32: softmax, log-softmax, cross-entropy."""
    if autocast_dtype() is None or x.dtype != np.float16:
        return x
    return x.to(np.float32)


def _axis(axis, dim, default=-1):
    if dim is not None:
        if axis is not None:
            raise TypeError("give axis or dim, not both")
        return dim
    return default if axis is None else axis


# ----------------------------------------------------------------------------- linear

def linear(input, weight, bias=None):
    """y = input @ weight^T + bias.  input (..., in), weight (out, in), bias (out,) or None -> (..., out)."""
    tensors = (_tensor(input, "input"), _tensor(weight, "weight"))
    if weight.ndim != 2:
        raise ShapeError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    out_f, in_f = weight.shape
    if input.ndim == 0 or input.shape[-1] != in_f:
        raise ShapeError(f"linear: input of shape {input.shape} does not match weight of shape {weight.shape}: "
                         f"expected the last dimension to be in_features={in_f}")
    if bias is not None:
        tensors += (_tensor(bias, "bias"),)
        if bias.shape != (out_f,):
            raise ShapeError(f"linear: bias must have shape ({out_f},) to match weight {weight.shape}, "
                             f"got {bias.shape}")
    tensors = _low(*tensors)                                 # under amp.autocast: float16 copies
    if any(t.dtype != tensors[0].dtype for t in tensors[1:]):     # PyTorch refuses mixed dtypes too
        raise DtypeError(f"linear: input, weight and bias must have one dtype, got "
                         f"{', '.join(str(t.dtype) for t in tensors)}; cast with .to(dtype)")
    return Linear.apply(*tensors)


# ----------------------------------------------------------------------------- softmax family

def softmax(input, axis=None, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (``dim`` is an alias; default the last axis):
    ``input.softmax(dim)``.

    A row that is all -inf (fully masked) gives zeros and a zero gradient, where PyTorch
    gives NaN; the same convention as attention's fully masked rows.
    """
    return _high(_tensor(input, "input")).softmax(_axis(axis, dim))


def log_softmax(input, axis=None, dim=None):
    """x - logsumexp(x) along ``axis`` (``dim`` is an alias; default the last axis):
    ``input.log_softmax(dim)``.

    A row that is all -inf gives -inf (the log of softmax's zeros) and the gradient g
    (PyTorch: NaN).
    """
    return _high(_tensor(input, "input")).log_softmax(_axis(axis, dim))


def cross_entropy(input, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (..., C) against ``target``, PyTorch's rules.

    ``target``: integer class indices (...) (a Tensor, a numpy/cupy array, a list or an
    int), or floating-point class probabilities with the logits' shape (..., C) (a Tensor
    may require grad: its gradient is computed too). Classes are on the LAST axis (GPT's
    (B, T, V) layout; PyTorch puts them on axis 1 for inputs of more than 2 dims).
    ``weight``: optional (C,) per-class weights, a constant (no gradient flows to it).
    Class-index rows whose target equals ``ignore_index`` count for nothing. ``reduction``
    "mean" divides by the summed weights of the counted rows (their number without
    weights) for class indices, by the number of rows for probabilities; when that is 0
    the loss is 0 with zero gradients (PyTorch gives NaN); "sum"; or "none".
    ``label_smoothing`` as in PyTorch. ``ignore_index`` >= 0 with probability targets is
    an error, as in PyTorch.
    """
    logits = _high(_float_tensor(input, "cross_entropy", "logits"))
    targets = target if isinstance(target, Tensor) else Tensor(_at_logits_precision(target, logits), device=logits.device)
    _check_cross_entropy(logits, targets, ignore_index, reduction, label_smoothing)
    w = None
    if weight is not None:
        if isinstance(weight, Tensor):
            if weight.requires_grad and is_grad_enabled():
                raise ValueError("cross_entropy: weight is a constant here (PyTorch does not differentiate it "
                                 "either); pass weight.detach()")
            if weight.device != logits.device:
                raise backend.DeviceError(f"cross_entropy: weight is on {weight.device!r} but the logits are on "
                                          f"{logits.device!r}; move it with .to(device)")
            w = weight.data
        else:
            w = Tensor(_at_logits_precision(weight, logits), device=logits.device).data
        C = logits.shape[-1]
        if w.shape != (C,):
            raise ValueError(f"cross_entropy: weight must have one value per class, shape ({C},), got {w.shape}")
        if w.dtype.kind != "f":
            raise TypeError(f"cross_entropy: weight must be floating point, got {w.dtype}")
        w = w.astype(logits.dtype, copy=False)
    return CrossEntropy.apply(logits, targets, weight=w, ignore_index=int(ignore_index), reduction=reduction,
                              label_smoothing=float(label_smoothing))


def _check_cross_entropy(logits, targets, ignore_index, reduction, label_smoothing):
    """Every check of cross_entropy's arguments but the weight's (one line each, naming the value)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if targets.dtype.kind not in "iuf":
        raise TypeError(f"cross_entropy: targets must be integer class indices or floating-point class "
                        f"probabilities, got dtype {targets.dtype}")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"cross_entropy: logits must have shape (..., C) with C >= 1, got {logits.shape}")
    if targets.device != logits.device:
        raise backend.DeviceError(f"cross_entropy: targets are on {targets.device!r} but the logits are on "
                                  f"{logits.device!r}; move them with .to(device)")
    C = logits.shape[-1]
    if targets.dtype.kind == "f":
        if targets.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability targets must have the logits' shape {logits.shape} "
                             f"(one distribution over the C classes per row), got {targets.shape}")
        if ignore_index >= 0:
            raise ValueError(f"cross_entropy: ignore_index={ignore_index} is not supported with class-"
                             "probability targets (as in PyTorch); give class indices to ignore rows")
        return
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]} (one class index per row), got {targets.shape}")
    known = targets.value_bounds
    if known is not None and 0 <= known[0] and known[1] < C:
        return                                            # in range, as known on the host: no device read
    t = targets.data
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bool(bad.any()):                                   # one host sync: the check is worth it
        value = int(t[bad].reshape(-1)[0])
        raise ValueError(f"cross_entropy: target {value} is out of range: class indices must be in "
                         f"[0, {C - 1}] for logits with C={C} classes (or equal ignore_index={ignore_index})")


def _bce_checks(op, input, target, weight, reduction, cast_target=True):
    """(input, target as a Tensor of input's dtype, weight as an array or None) after the checks
    binary_cross_entropy and its logits form share. A target Tensor of another float dtype is
    cast (``cast_target``, the logits form, where PyTorch promotes) or refused (as PyTorch's
    binary_cross_entropy does)."""
    x = _float_tensor(input, op)
    t = target if isinstance(target, Tensor) else Tensor(_at_logits_precision(target, x), device=x.device)
    if t.device != x.device:
        raise backend.DeviceError(f"{op}: target is on {t.device!r} but the input is on {x.device!r}")
    if t.dtype.kind != "f":
        raise DtypeError(f"{op}: target must be floating point (probabilities), got {t.dtype}")
    if t.shape != x.shape:
        raise ShapeError(f"{op}: target of shape {t.shape} must have the input's shape {x.shape}")
    if t.dtype != x.dtype:
        if not cast_target:
            raise DtypeError(f"{op}: target is {t.dtype} but the input is {x.dtype}; give both the same dtype")
        t = t.to(dtype=x.dtype)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return x, t, _constant(op, "weight", weight, x)


def _first_outside_unit(a) -> float:
    """The first value of an array that is not in [0, 1] (NaN included), for error messages."""
    flat = a.reshape(-1)
    return float(flat[~((flat >= 0) & (flat <= 1))][0])


def _constant(op, name, value, x, to_shape=None):
    """A weight argument as an array of x's dtype on x's device, broadcasting to ``to_shape``
    (default x's shape); it gets no gradient (as in PyTorch), so one that requires grad is refused."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.requires_grad and is_grad_enabled():
            raise ValueError(f"{op}: {name} is a constant here (no gradient flows to it); pass {name}.detach()")
        if value.device != x.device:
            raise backend.DeviceError(f"{op}: {name} is on {value.device!r} but the input is on {x.device!r}")
        arr = value.data
    else:
        arr = Tensor(_at_logits_precision(value, x), device=x.device).data
    if arr.dtype.kind != "f":
        raise DtypeError(f"{op}: {name} must be floating point, got {arr.dtype}")
    shape = x.shape if to_shape is None else to_shape
    try:
        ok = tuple(np.broadcast_shapes(arr.shape, shape)) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"{op}: {name} of shape {tuple(arr.shape)} does not broadcast to {shape}")
    return arr.astype(x.dtype, copy=False)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-weight * (t log p + (1 - t) log(1 - p)) for probabilities ``input`` p in [0, 1] and
    targets t of the same shape, then ``reduction`` "mean" (over all elements), "sum" or
    "none". Each log is clamped at -100, as PyTorch, so p = 0 or 1 stays finite. ``target``
    may be a Tensor that requires grad (it gets a gradient too); ``weight`` broadcasts to the
    input's shape and is a constant. Inputs or targets outside [0, 1] (NaN included) are an
    error, as in PyTorch, and so is a target of another dtype than the input's."""
    x, t, w = _bce_checks("binary_cross_entropy", input, target, weight, reduction, cast_target=False)
    for name, v, hint in (("input", x, "; for logits use binary_cross_entropy_with_logits"), ("target", t, "")):
        if v.size and not bool(((v.data >= 0) & (v.data <= 1)).all()):   # one host sync each: worth it
            raise ArgumentError(f"binary_cross_entropy: {name} values must be in [0, 1] (probabilities), "
                                f"got {_first_outside_unit(v.data)}{hint}")
    return BinaryCrossEntropy.apply(x, t, weight=w, reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """binary_cross_entropy(sigmoid(input), target, ...) computed from the logits without
    overflow (one node), and more accurate than the two steps. ``pos_weight`` (broadcasting
    along the last dim, e.g. one per class) multiplies the positive term t log sigmoid(x);
    ``weight`` and ``pos_weight`` are constants; ``target`` may require grad."""
    op = "binary_cross_entropy_with_logits"
    x, t, w = _bce_checks(op, input, target, weight, reduction)
    pw = _constant(op, "pos_weight", pos_weight, x, to_shape=x.shape[-1:] if x.ndim else ())
    return BinaryCrossEntropyWithLogits.apply(x, t, weight=w, pos_weight=pw, reduction=reduction)


# ----------------------------------------------------------------------------- normalisation

def _normalized_ndim(x, normalized_shape, params, op):
    """How many trailing dims of ``x`` to normalise, after checking every shape against them."""
    if normalized_shape is None:
        first = next((p for p in params if p is not None), None)
        normalized_shape = first.shape if first is not None else x.shape[-1:]
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(n) for n in normalized_shape)
    k = len(normalized_shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"{op}: normalized_shape {normalized_shape} must be the trailing dims of the "
                         f"input, whose shape is {x.shape}")
    for name, p in zip(("weight", "bias"), params):
        if p is not None and p.shape != normalized_shape:
            raise ValueError(f"{op}: {name} must have shape {normalized_shape}, got {p.shape}")
    return k


def layer_norm(input, normalized_shape=None, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape`` dims.

    PyTorch's form ``layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)``; the
    short form ``layer_norm(x, weight, bias=None, eps=1e-5)`` is also accepted (the
    normalised dims are then weight's shape). weight / bias may be None.
    """
    x = _float_tensor(input, "layer_norm")
    if isinstance(normalized_shape, Tensor):                 # short form: (x, weight, bias, eps)
        if bias is not None and not isinstance(bias, Tensor):
            eps, bias = bias, None
        normalized_shape, weight, bias = None, normalized_shape, weight
    nd = _normalized_ndim(x, normalized_shape, (weight, bias), "layer_norm")
    params = tuple(_tensor(p, n) for p, n in ((weight, "weight"), (bias, "bias")) if p is not None)
    return LayerNorm.apply(x, *params, has_weight=weight is not None, has_bias=bias is not None,
                           eps=float(eps), ndim=nd)


def rms_norm(input, normalized_shape=None, weight=None, eps=1e-6):
    """x / sqrt(mean(x**2) + eps) * weight over the trailing ``normalized_shape`` dims.

    PyTorch's form ``rms_norm(x, normalized_shape, weight=None, eps=None)``, but eps defaults
    to 1e-6 (``eps=None`` means the dtype's machine epsilon, PyTorch's default); the short
    form ``rms_norm(x, weight, eps=1e-6)`` is also accepted.
    """
    x = _float_tensor(input, "rms_norm")
    if isinstance(normalized_shape, Tensor):                 # short form: (x, weight, eps)
        if weight is not None and not isinstance(weight, Tensor):
            eps, weight = weight, None
        normalized_shape, weight = None, normalized_shape
    nd = _normalized_ndim(x, normalized_shape, (weight,), "rms_norm")
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    params = (_tensor(weight, "weight"),) if weight is not None else ()
    return RMSNorm.apply(x, *params, has_weight=weight is not None, eps=float(eps), ndim=nd)


# ----------------------------------------------------------------------------- activations

def gelu(input, approximate="none"):
    """x * Phi(x): ``approximate="none"`` (exact, with erf; PyTorch's default) or "tanh" (GPT-2's)."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(_float_tensor(input, "gelu"), approximate=approximate)


def _in_place(x, out, name):
    """Write ``out`` into ``x`` and return ``x``: the ``inplace=True`` forms.

    As every in-place op here (see Tensor), this is never recorded in the graph: it is
    allowed when no gradient is being recorded for ``x`` (inference, ``no_grad()``, or a
    tensor that does not require grad) and bumps ``x``'s version counter, so a recorded node
    that saved ``x`` refuses to run its backward on the overwritten values.
    """
    x._inplace_check(f"{name}(inplace=True)")
    x.data[...] = out.data
    return x


def relu(input, inplace=False):
    """max(x, 0), any dtype (as PyTorch). ``inplace=True`` overwrites ``input`` (only where no
    gradient is recorded). The same op as ``Tensor.relu``."""
    x = _tensor(input, "input")
    return _in_place(x, ReLU.apply(x), "relu") if inplace else ReLU.apply(x)


def silu(input, inplace=False):
    """x * sigmoid(x). ``inplace=True`` overwrites ``input`` (only where no gradient is recorded)."""
    x = _float_tensor(input, "silu")
    return _in_place(x, SiLU.apply(x), "silu") if inplace else SiLU.apply(x)


def swiglu(gate, up):
    """silu(gate) * up, one graph node (the activation of Llama's MLP: ``down(swiglu(gate(x), up(x)))``).

    gate and up: floating-point tensors of one shape, dtype and device. The backward gives
    both gradients in one pass: dgate = g * up * silu'(gate), dup = g * silu(gate).
    """
    name = "swiglu"
    _float_tensor(gate, name, "gate")
    _float_tensor(up, name, "up")
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"{name}: gate and up must have one shape and dtype, got {gate.shape} {gate.dtype} "
                         f"and {up.shape} {up.dtype}")
    return SwiGLU.apply(gate, up)


def _number(value, op, name, positive=False):
    """``value`` as a float when it is a finite real number (> 0 with ``positive``); ValueError naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ValueError(f"{op}: {name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x (the slope's gradient at x == 0, as PyTorch)."""
    x = _float_tensor(input, "leaky_relu")
    out = LeakyReLU.apply(x, negative_slope=_number(negative_slope, "leaky_relu", "negative_slope"))
    return _in_place(x, out, "leaky_relu") if inplace else out


def elu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x) - 1)."""
    x = _float_tensor(input, "elu")
    out = ELU.apply(x, alpha=_number(alpha, "elu", "alpha"))
    return _in_place(x, out, "elu") if inplace else out


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, smooth relu; x itself where beta x > threshold (PyTorch's rule)."""
    x = _float_tensor(input, "softplus")
    return Softplus.apply(x, beta=_number(beta, "softplus", "beta", positive=True),
                          threshold=_number(threshold, "softplus", "threshold"))


# ----------------------------------------------------------------------------- embedding, dropout

def embedding(input, weight, padding_idx=None):
    """weight[input]: integer ids ``input`` (...) (Tensor, numpy/cupy array or list), weight (V, D) -> (..., D).

    ``padding_idx``: a row (negative counts from the end) that gets no gradient, as PyTorch's.
    Ids out of range raise IndexError. The check reads the ids' min and max back from a GPU,
    unless the ids carry bounds known on the host (``Tensor.set_value_bounds``: batches from
    ``get_batch`` and the model's positions do), which are checked instead."""
    weight = _tensor(weight, "weight")
    ids = _index_tensor(input, weight.device)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    V = weight.shape[0]
    if ids.size:
        known = ids.value_bounds                                 # known on the host: no device read
        lo, hi = known if known is not None else (int(ids.data.min()), int(ids.data.max()))
        if lo < 0 or hi >= V:
            raise IndexError(f"embedding: id {lo if lo < 0 else hi} is out of range for an embedding table of "
                             f"{V} rows (valid ids are 0..{V - 1})")
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) or not -V <= padding_idx < V:
            raise ValueError(f"embedding: padding_idx must be an int in [{-V}, {V - 1}] for {V} rows, "
                             f"got {padding_idx!r}")
        padding_idx = int(padding_idx) % V
    return _low(Embedding.apply(ids, weight, padding_idx=padding_idx))[0]


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each class index of ``tensor`` (...) and 0 elsewhere;
    ``num_classes=-1`` means the largest index + 1. No gradient (PyTorch's one_hot)."""
    ids = _index_tensor(tensor, "cpu") if not isinstance(tensor, Tensor) else tensor
    if ids.dtype.kind not in "iu":
        raise DtypeError(f"one_hot: class indices must be integers, got dtype {ids.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < -1:
        raise ValueError(f"one_hot: num_classes must be a non-negative int or -1, got {num_classes!r}")
    lo, hi = (int(ids.data.min()), int(ids.data.max())) if ids.size else (0, -1)   # host syncs: worth the check
    if lo < 0:
        raise ArgumentError(f"one_hot: class values must be non-negative, got {lo}")
    if num_classes == -1:
        if not ids.size:
            raise ArgumentError("one_hot: cannot infer num_classes from an empty tensor; give num_classes")
        num_classes = hi + 1
    if hi >= num_classes:
        raise ArgumentError(f"one_hot: class value {hi} is not smaller than num_classes={num_classes}")
    xp = ids.xp
    out = ids.data[..., None] == xp.arange(int(num_classes))
    return Tensor.wrap(out.astype(np.int64), ids.device)


def pad(input, pad, mode="constant", value=None):
    """``input`` with ``value`` (default 0) added around it, PyTorch's constant pad: ``pad`` is
    (before, after) for the last dim, then for the one before, ... ((left, right, top,
    bottom) for an image). A negative amount removes that many entries. One graph node."""
    x = _tensor(input, "input")
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is implemented, got mode={mode!r}")
    widths = tuple(pad) if isinstance(pad, (tuple, list)) else None
    if widths is None or len(widths) % 2 or any(isinstance(w, bool) or not isinstance(w, numbers.Integral)
                                                for w in widths):
        raise ValueError(f"pad: pad must be a tuple of ints of even length (before, after per dim), got {pad!r}")
    if len(widths) // 2 > x.ndim:
        raise ShapeError(f"pad: {len(widths) // 2} dims to pad, but the input has only {x.ndim} (shape {x.shape})")
    per_dim = [(0, 0)] * x.ndim
    for k in range(len(widths) // 2):
        per_dim[x.ndim - 1 - k] = (int(widths[2 * k]), int(widths[2 * k + 1]))
    for d, (n, (b, a)) in enumerate(zip(x.shape, per_dim)):
        if n + b + a < 0 or max(-b, 0) + max(-a, 0) > n:
            raise ShapeError(f"pad: padding {(b, a)} of dim {d} (size {n}) would leave a negative size")
    value = 0 if value is None else value
    if not isinstance(value, numbers.Real):
        raise TypeError(f"pad: value must be a number, got {value!r}")
    return Pad.apply(x, widths=tuple(per_dim), value=value)


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability p and scale the rest by 1 / (1 - p).

    With ``training=False`` or ``p == 0`` the input tensor itself is returned (no graph node).
    The mask uses the package's seeded generator (``manual_seed``). p = 1 gives zeros.
    ``inplace=True`` overwrites ``input`` (only where no gradient is recorded).
    """
    p = _probability(p, "dropout probability p", hi_open=False)
    x = _float_tensor(input, "dropout")
    if not training or p == 0.0:
        return x
    return _in_place(x, Dropout.apply(x, p=p), "dropout") if inplace else Dropout.apply(x, p=p)


# ----------------------------------------------------------------------------- attention

#: the two implementations of attention: "standard" (ops/attention.py, the (T, S) matrix P is
#: stored for the backward) and "flash" (ops/flash_attention.py, tiled: no (T, S) array)
ATTENTION_IMPLS = ("standard", "flash")


def _attention_impl(name, impl, block_size):
    """impl checked, and the flash tile sizes {block_q, block_k} ({} for "standard")."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"{name}: impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    if impl == "standard":
        if block_size is not None:
            raise ValueError(f"{name}: block_size applies to impl='flash' only, got block_size={block_size!r}")
        return {}
    sizes = (BLOCK_Q, BLOCK_K) if block_size is None else \
        (block_size, block_size) if isinstance(block_size, numbers.Integral) else tuple(block_size) \
        if isinstance(block_size, (tuple, list)) else None
    if sizes is None or len(sizes) != 2 or not all(
            isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1 for b in sizes):
        raise ValueError(f"{name}: block_size must be a positive integer or a pair (block_q, block_k) of them, "
                         f"got {block_size!r}")
    return {"block_q": int(sizes[0]), "block_k": int(sizes[1])}


def _mask_array(attn_mask, query, batch, T, Tk):
    """attn_mask (a Tensor, an array or a nested list) as an array on query's device: bool as
    given, floating point cast to query's dtype; errors name what is wrong with it."""
    name = "scaled_dot_product_attention"
    if isinstance(attn_mask, Tensor):
        if attn_mask.device != query.device:
            raise backend.DeviceError(f"{name}: attn_mask is on {attn_mask.device!r} but the inputs are on "
                                      f"{query.device!r}; move it with .to(device)")
        mask = attn_mask.data
    else:
        mask = backend.as_array(attn_mask, query.device)
    if mask.dtype.kind == "f":
        mask = mask.astype(query.dtype, copy=False)
    elif mask.dtype != np.bool_:
        raise TypeError(f"{name}: attn_mask must be bool (True = may attend) or floating point "
                        f"(added to the scores), got dtype {mask.dtype}")
    full = batch + (T, Tk)
    try:
        ok = tuple(np.broadcast_shapes(mask.shape, full)) == full
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: attn_mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"(..., T, S) = {full}")
    return mask


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, impl="standard", block_size=None):
    """softmax(scale * query key^T + mask) value, one graph node (PyTorch's signature).

    query (..., T, D), key (..., S, D), value (..., S, Dv) -> (..., T, Dv); the leading
    dims broadcast against each other. ``scale`` defaults to 1/sqrt(D).

    enable_gqa: grouped-query attention, as PyTorch's: query (..., H, T, D) and key, value
    (..., KV, S, D) with KV dividing H; query head h attends with key/value head h // (H / KV),
    and each key/value head's gradient is the sum over the H / KV query heads that share it.

    attn_mask: broadcastable to (..., T, S); a Tensor, an array or a nested list. Boolean:
    True = may attend. Floating point: added to the scores (use -inf to forbid; cast to the
    query's dtype); a float Tensor that requires grad gets its gradient, dS summed over the
    dims it was broadcast along, as in PyTorch (a learned additive bias).

    is_causal: query i may attend key j only when j <= i + S - T. For T == S that is the
    usual lower triangle. For T != S the LAST query is aligned with the LAST key
    (bottom-right), as cached decoding needs; PyTorch aligns top-left (j <= i), so to
    match PyTorch with T != S pass an explicit mask instead. When T > S the first
    T - S queries see no key at all. Combined with attn_mask: a boolean mask is ANDed
    with the causal one (attend only where both allow); a float mask is added and the
    causally forbidden scores are then set to -inf, whatever the mask holds there.

    A query whose keys are all masked gets an output row of zeros and zero gradients,
    never NaN (as current PyTorch does). Masked entries get exactly zero gradient.

    dropout_p: inverted dropout on the attention probabilities, applied whenever
    dropout_p > 0 (pass 0.0 at eval time, as with PyTorch's function); the mask comes
    from the package generator, so ``tinygrad_llm.manual_seed`` reproduces it.

    Gradient: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)),
    dQ = scale dS K, dK = scale dS^T Q, d attn_mask = dS (docs/backprop.md; the op is
    ops/attention.py).

    impl: "standard" (the default) stores the (..., T, S) probabilities for the backward;
    "flash" computes the same function by tiles of ``block_size`` queries x keys (an int,
    or a pair (block_q, block_k); default 64) with the online softmax, stores only the
    output and one log-sum-exp per row, and recomputes the tiles in the backward
    (ops/flash_attention.py): its extra memory grows as T, not T * S. Its dropout mask is
    another draw than the standard one's (it is rebuilt from a saved seed, not stored),
    so with dropout the two agree in distribution, not entry by entry. A float attn_mask
    is added to the scores there too, but is not differentiated (its gradient would be a
    (..., T, S) array, the memory the tiles avoid): one that requires grad is refused.
    """
    name = "scaled_dot_product_attention"
    for arg, t in (("query", query), ("key", key), ("value", value)):
        _float_tensor(t, name, arg)
        if t.ndim < 2:
            raise ValueError(f"{name}: {arg} needs at least 2 dims (..., L, E), got shape {t.shape}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{name}: query, key and value must share one dtype, got "
                        f"{query.dtype}, {key.dtype} and {value.dtype}")
    T, D = query.shape[-2:]
    S, Dk = key.shape[-2:]
    if Dk != D:
        raise ValueError(f"{name}: query and key need the same last dim (head size), got "
                         f"query {query.shape} (D={D}) and key {key.shape} (D={Dk})")
    if value.shape[-2] != S:
        raise ValueError(f"{name}: key and value need the same number of keys (dim -2), got "
                         f"key {key.shape} (S={S}) and value {value.shape} (S={value.shape[-2]})")
    if not isinstance(enable_gqa, (bool, np.bool_)):
        raise TypeError(f"{name}: enable_gqa must be a bool, got {enable_gqa!r}")
    grouped = bool(enable_gqa) and _query_groups(query, key, value, name) > 1
    kv_shapes = [t.shape[:-3] + (query.shape[-3],) if grouped else t.shape[:-2] for t in (key, value)]
    try:
        batch = tuple(np.broadcast_shapes(query.shape[:-2], *kv_shapes))
    except ValueError:
        raise ValueError(f"{name}: the leading dims of query {query.shape}, key {key.shape} and "
                         f"value {value.shape} do not broadcast") from None
    dropout_p = _probability(dropout_p, f"{name}: dropout_p", hi_open=True)
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"{name}: scale must be a finite number or None, got {scale!r}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"{name}: is_causal must be a bool, got {is_causal!r}")
    blocks = _attention_impl(name, impl, block_size)
    query, key, value = _low(query, key, value)
    mask = None if attn_mask is None else _mask_array(attn_mask, query, batch, T, S)
    options = dict(is_causal=bool(is_causal), dropout_p=dropout_p, scale=float(scale), enable_gqa=grouped)
    mask_grad = isinstance(attn_mask, Tensor) and attn_mask.requires_grad and is_grad_enabled()
    if impl == "flash":
        if mask_grad:
            raise ValueError(f"{name}: impl='flash' does not differentiate attn_mask (its gradient is a (..., T, S) "
                             f"array, the memory the tiles avoid); pass attn_mask.detach() or impl='standard'")
        return FlashAttention.apply(query, key, value, attn_mask=mask, **options, **blocks)
    if mask_grad:
        # a float mask to differentiate: a fourth input of the node (in the query's dtype: a Cast node)
        return ScaledDotProductAttention.apply(query, key, value, attn_mask.to(dtype=query.dtype), **options)
    return ScaledDotProductAttention.apply(query, key, value, attn_mask=mask, **options)


def _query_groups(query, key, value, name) -> int:
    """G = H / KV, the query heads per key/value head (dim -3); ValueError unless KV divides H."""
    if min(query.ndim, key.ndim, value.ndim) < 3:
        raise ValueError(f"{name}: enable_gqa needs a heads dim (..., heads, L, E) in query, key and value, "
                         f"got shapes {query.shape}, {key.shape} and {value.shape}")
    H, KV = query.shape[-3], key.shape[-3]
    if value.shape[-3] != KV:
        raise ValueError(f"{name}: key and value need the same number of heads (dim -3), got "
                         f"key {key.shape} and value {value.shape}")
    if KV == 0 or H % KV:
        raise ValueError(f"{name}: enable_gqa needs the key/value heads ({KV}) to divide the query heads "
                         f"({H}), got query {query.shape} and key {key.shape}")
    return H // KV


def causal_self_attention(qkv, n_head: int, dropout_p: float = 0.0, *, impl="standard", block_size=None):
    """qkv (B, T, 3C) -> (B, T, C): causal attention over ``n_head`` heads, one graph node.

    The GPT's fused attention: ``qkv`` is its ``c_attn`` projection (queries, keys and
    values side by side, each C = n_head * head_dim wide), the output has its heads merged.
    The same as ``scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=...)`` on
    the heads split out of qkv, without the graph nodes that splitting and merging cost.
    ``impl`` and ``block_size`` as in scaled_dot_product_attention ("flash": tiled).
    """
    name = "causal_self_attention"
    qkv = _float_tensor(qkv, name, "qkv")
    if qkv.ndim != 3:
        raise ValueError(f"{name}: expects qkv of shape (B, T, 3C), got {qkv.shape}")
    if isinstance(n_head, bool) or not isinstance(n_head, numbers.Integral) or n_head < 1:
        raise ValueError(f"{name}: n_head must be a positive integer, got {n_head!r}")
    C3 = qkv.shape[-1]
    if C3 % 3 or (C3 // 3) % n_head:
        raise ValueError(f"{name}: last dim {C3} must be 3 * n_head * head_dim (n_head={n_head})")
    dropout_p = _probability(dropout_p, f"{name}: dropout_p", hi_open=True)
    blocks = _attention_impl(name, impl, block_size)
    op = FlashCausalSelfAttention if impl == "flash" else CausalSelfAttention
    return op.apply(_low(qkv)[0], n_head=int(n_head), dropout_p=dropout_p, **blocks)


# ----------------------------------------------------------------------------- rotary embeddings

def _table(t, x, name):
    """A cos / sin table (Tensor or array) as an array of x's dtype on x's device."""
    op = "rotary_embedding"
    if isinstance(t, Tensor):
        if t.requires_grad and is_grad_enabled():
            raise ValueError(f"{op}: {name} is a constant table here (no gradient flows to it); pass {name}.detach()")
        if t.device != x.device:
            raise backend.DeviceError(f"{op}: {name} is on {t.device!r} but the input is on {x.device!r}; "
                                      "move it with .to(device)")
        a = t.data
    else:
        a = backend.as_array(t, x.device)
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got dtype {a.dtype}")
    return a.astype(x.dtype, copy=False)


def rotary_embedding(input, cos, sin):
    """Rotary position embeddings in the "rotate half" layout (Hugging Face Llama's), one graph node:
    ``input * cos + rotate_half(input) * sin`` with rotate_half([x1, x2]) = [-x2, x1].

    input (..., D), D even (a head's queries or keys, e.g. (B, H, T, D) or (B, T, H, D));
    cos and sin: the tables of the positions, broadcastable to input with last dim D, e.g.
    (T, D) or (T, 1, D) (``tinygrad_llm.nn.RotaryEmbedding`` makes them), constants (Tensors
    or arrays, cast to input's dtype). The gradient is the rotation by minus the angles:
    dx = g * cos - rotate_half(g * sin) (docs/backprop.md).
    """
    name = "rotary_embedding"
    x = _float_tensor(input, name)
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(f"{name}: the last dim of input must be even (pairs of channels are rotated), "
                         f"got shape {x.shape}")
    cos, sin = _table(cos, x, "cos"), _table(sin, x, "sin")
    for t_name, t in (("cos", cos), ("sin", sin)):
        try:
            ok = t.ndim >= 1 and t.shape[-1] == x.shape[-1] and tuple(np.broadcast_shapes(t.shape, x.shape)) == x.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: {t_name} of shape {tuple(t.shape)} does not broadcast to the input's "
                             f"shape {x.shape} (its last dim must be {x.shape[-1]})")
    return RoPE.apply(x, cos=cos, sin=sin)


# ----------------------------------------------------------------------------- DPO loss
DPO_REDUCTIONS = ("mean", "sum", "none")

def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
             beta=0.1, reduction="mean"):
    """The DPO loss of a batch of preference pairs, one graph node (see ops/dpo.py).

    Each argument holds one sequence log-probability per pair (any shape, the same for all
    four): the policy's and the frozen reference model's, of the chosen and of the
    rejected response. Per pair, ``-log sigmoid(beta * ((policy_chosen - reference_chosen)
    - (policy_rejected - reference_rejected)))``; ``reduction`` "mean" (0 for no pairs),
    "sum" or "none". The policy arguments are Tensors; the reference ones may also be
    arrays or lists (constants). ``beta`` > 0 sets how far the policy may move from the
    reference (DPO's KL weight).
    """
    pi_c = _tensor(policy_chosen_logps, "policy_chosen_logps")
    pi_r = _tensor(policy_rejected_logps, "policy_rejected_logps")
    refs = [r if isinstance(r, Tensor) else Tensor(_at_logits_precision(r, pi_c), device=pi_c.device)
            for r in (reference_chosen_logps, reference_rejected_logps)]
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    for name, t in zip(names, (pi_c, pi_r, *refs)):
        if t.dtype.kind != "f":
            raise TypeError(f"dpo_loss: {name} must be floating point (log-probabilities), got {t.dtype}")
        if t.shape != pi_c.shape:
            raise ValueError(f"dpo_loss: {name} has shape {t.shape}, but policy_chosen_logps has {pi_c.shape}; "
                             "give one log-probability per pair in each argument")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 < float(beta) < float("inf"):
        raise ValueError(f"dpo_loss: beta must be a finite number > 0, got {beta!r}")
    if reduction not in DPO_REDUCTIONS:
        raise ValueError(f"dpo_loss: reduction must be one of {DPO_REDUCTIONS}, got {reduction!r}")
    return DPOLoss.apply(pi_c, pi_r, *refs, beta=float(beta), reduction=reduction)
