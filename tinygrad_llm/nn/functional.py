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
from ..function import is_grad_enabled
from ..ops.activation import GELU_APPROXIMATIONS, GELU, SiLU
from ..ops.attention import ScaledDotProductAttention
from ..ops.cross_entropy import REDUCTIONS, CrossEntropy
from ..ops.dpo import DPOLoss
from ..ops.dropout import Dropout
from ..ops.elementwise import ReLU
from ..ops.embedding import Embedding
from ..ops.linear import Linear
from ..ops.norm import LayerNorm, RMSNorm
from ..ops.reduce import normalize_axis
from ..ops.self_attention import CausalSelfAttention
from ..ops.softmax import LogSoftmax, Softmax
from ..tensor import Tensor

__all__ = [
    "linear", "softmax", "log_softmax", "cross_entropy", "layer_norm", "rms_norm",
    "gelu", "relu", "silu", "embedding", "dropout", "scaled_dot_product_attention", "causal_self_attention",
    "dpo_loss",
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
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    out_f, in_f = weight.shape
    if input.ndim == 0 or input.shape[-1] != in_f:
        raise ValueError(f"linear: input of shape {input.shape} does not match weight of shape {weight.shape}: "
                         f"expected the last dimension to be in_features={in_f}")
    if bias is not None:
        tensors += (_tensor(bias, "bias"),)
        if bias.shape != (out_f,):
            raise ValueError(f"linear: bias must have shape ({out_f},) to match weight {weight.shape}, "
                             f"got {bias.shape}")
    return Linear.apply(*tensors)


# ----------------------------------------------------------------------------- softmax family

def softmax(input, axis=None, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (``dim`` is an alias; default the last axis).

    A row that is all -inf (fully masked) gives zeros and a zero gradient, where PyTorch
    gives NaN; the same convention as attention's fully masked rows.
    """
    x = _float_tensor(input, "softmax")
    return Softmax.apply(x, axis=normalize_axis(_axis(axis, dim), max(x.ndim, 1), "softmax"))


def log_softmax(input, axis=None, dim=None):
    """x - logsumexp(x) along ``axis`` (``dim`` is an alias; default the last axis).

    A row that is all -inf gives -inf (the log of softmax's zeros) and the gradient g
    (PyTorch: NaN).
    """
    x = _float_tensor(input, "log_softmax")
    return LogSoftmax.apply(x, axis=normalize_axis(_axis(axis, dim), max(x.ndim, 1), "log_softmax"))


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
    logits = _float_tensor(input, "cross_entropy", "logits")
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


# ----------------------------------------------------------------------------- embedding, dropout

def embedding(input, weight):
    """weight[input]: integer ids ``input`` (...) (Tensor, numpy/cupy array or list), weight (V, D) -> (..., D).

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
    return Embedding.apply(ids, weight)


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
                                 scale=None):
    """softmax(scale * query key^T + mask) value, one graph node (PyTorch's signature).

    query (..., T, D), key (..., S, D), value (..., S, Dv) -> (..., T, Dv); the leading
    dims broadcast against each other. ``scale`` defaults to 1/sqrt(D).

    attn_mask: broadcastable to (..., T, S); a Tensor, an array or a nested list, never
    differentiated. Boolean: True = may attend. Floating point: added to the scores
    (use -inf to forbid; cast to the query's dtype).

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
    dQ = scale dS K, dK = scale dS^T Q (docs/backprop.md; the op is ops/attention.py).
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
    try:
        batch = tuple(np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2]))
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
    mask = None if attn_mask is None else _mask_array(attn_mask, query, batch, T, S)
    return ScaledDotProductAttention.apply(query, key, value, attn_mask=mask, is_causal=bool(is_causal),
                                           dropout_p=dropout_p, scale=float(scale))


def causal_self_attention(qkv, n_head: int, dropout_p: float = 0.0):
    """qkv (B, T, 3C) -> (B, T, C): causal attention over ``n_head`` heads, one graph node.

    The GPT's fused attention: ``qkv`` is its ``c_attn`` projection (queries, keys and
    values side by side, each C = n_head * head_dim wide), the output has its heads merged.
    The same as ``scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=...)`` on
    the heads split out of qkv, without the graph nodes that splitting and merging cost.
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
    return CausalSelfAttention.apply(qkv, n_head=int(n_head), dropout_p=dropout_p)


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
