"""The transformer's ops as functions, with PyTorch's signatures (``import tinygrad_llm.nn.functional as F``).

Each function here is one graph node; its forward and hand-written backward live in
``tinygrad_llm/ops/`` (see docs/backprop.md for the derivations). These wrappers only
sort out arguments (PyTorch's call forms, optional tensors, index arrays) and call
``Op.apply``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..function import is_grad_enabled
from ..ops.activation import GELU, ReLU, SiLU
from ..ops.cross_entropy import CrossEntropy
from ..ops.dropout import Dropout, check_p
from ..ops.embedding import Embedding
from ..ops.linear import Linear
from ..ops.norm import LayerNorm, RMSNorm
from ..ops.softmax import LogSoftmax, Softmax
from ..tensor import Tensor

__all__ = [
    "linear", "softmax", "log_softmax", "cross_entropy", "layer_norm", "rms_norm",
    "gelu", "relu", "silu", "embedding", "dropout",
]


def _tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    return x


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
    if bias is not None:
        tensors += (_tensor(bias, "bias"),)
    return Linear.apply(*tensors)


# ----------------------------------------------------------------------------- softmax family

def softmax(input, axis=None, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (``dim`` is an alias; default the last axis)."""
    return Softmax.apply(_tensor(input, "input"), axis=_axis(axis, dim))


def log_softmax(input, axis=None, dim=None):
    """x - logsumexp(x) along ``axis`` (``dim`` is an alias; default the last axis)."""
    return LogSoftmax.apply(_tensor(input, "input"), axis=_axis(axis, dim))


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
    logits = _tensor(input, "input")
    targets = target if isinstance(target, Tensor) else Tensor(_at_logits_precision(target, logits), device=logits.device)
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
    return CrossEntropy.apply(logits, targets, weight=w, ignore_index=int(ignore_index), reduction=reduction,
                              label_smoothing=label_smoothing)


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
    x = _tensor(input, "input")
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
    x = _tensor(input, "input")
    if isinstance(normalized_shape, Tensor):                 # short form: (x, weight, eps)
        if weight is not None and not isinstance(weight, Tensor):
            eps, weight = weight, None
        normalized_shape, weight = None, normalized_shape
    nd = _normalized_ndim(x, normalized_shape, (weight,), "rms_norm")
    if eps is None:
        eps = float(np.finfo(x.dtype).eps) if x.dtype.kind == "f" else 0.0
    params = (_tensor(weight, "weight"),) if weight is not None else ()
    return RMSNorm.apply(x, *params, has_weight=weight is not None, eps=float(eps), ndim=nd)


# ----------------------------------------------------------------------------- activations

def gelu(input, approximate="none"):
    """x * Phi(x): ``approximate="none"`` (exact, with erf; PyTorch's default) or "tanh" (GPT-2's)."""
    return GELU.apply(_tensor(input, "input"), approximate=approximate)


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
    """max(x, 0). ``inplace=True`` overwrites ``input`` (only where no gradient is recorded)."""
    x = _tensor(input, "input")
    return _in_place(x, ReLU.apply(x), "relu") if inplace else ReLU.apply(x)


def silu(input, inplace=False):
    """x * sigmoid(x). ``inplace=True`` overwrites ``input`` (only where no gradient is recorded)."""
    x = _tensor(input, "input")
    return _in_place(x, SiLU.apply(x), "silu") if inplace else SiLU.apply(x)


# ----------------------------------------------------------------------------- embedding, dropout

def embedding(input, weight):
    """weight[input]: integer ids ``input`` (...) (Tensor, numpy/cupy array or list), weight (V, D) -> (..., D)."""
    weight = _tensor(weight, "weight")
    return Embedding.apply(_index_tensor(input, weight.device), weight)


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability p and scale the rest by 1 / (1 - p).

    With ``training=False`` or ``p == 0`` the input tensor itself is returned (no graph node).
    The mask uses the package's seeded generator (``manual_seed``). p = 1 gives zeros.
    ``inplace=True`` overwrites ``input`` (only where no gradient is recorded).
    """
    x = _tensor(input, "input")
    p = check_p(p)
    if not training or p == 0.0:
        return x
    return _in_place(x, Dropout.apply(x, p=p), "dropout") if inplace else Dropout.apply(x, p=p)


# ----------------------------------------------------------------------------- attention
# attention: see ops/attention.py (scaled_dot_product_attention is added below this line)
from ..ops.attention import scaled_dot_product_attention  # noqa: E402,F401


# ----------------------------------------------------------------------------- DPO loss
from ..ops.dpo import DPOLoss  # noqa: E402

DPO_REDUCTIONS = ("mean", "sum", "none")
__all__ += ["dpo_loss"]


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
