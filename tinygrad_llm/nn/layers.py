"""Layers with PyTorch's constructors and initialisation; each forward is one call into
:mod:`tinygrad_llm.nn.functional` (which records one op of ``tinygrad_llm/ops/``, where the
hand-written backward passes live).

Initial values come from the package's seeded generator (``tinygrad_llm.manual_seed``).
"""
from __future__ import annotations

import math

import numbers

from .. import backend
from ..ops.rope import ROPE_TYPES, inv_frequencies, rope_tables
from ..tensor import Tensor
from . import functional as F
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "GELU", "ReLU", "SiLU", "Identity",
           "RotaryEmbedding", "check_rope_scaling"]


def _setup(device, dtype):
    device = backend.canonical_device(device)
    dtype = backend.default_dtype if dtype is None else backend.canonical_dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"layer parameters must be floating point, got dtype {dtype}")
    return device, backend.xp_for(device), dtype


def _uniform(shape, bound, device, dtype) -> Parameter:
    """U(-bound, bound) samples as a Parameter."""
    device, xp, dtype = _setup(device, dtype)
    gen_dtype = dtype if dtype.itemsize >= 4 else backend.default_dtype
    arr = backend.rng(device).random(shape, dtype=gen_dtype)
    arr *= 2.0 * bound
    arr -= bound
    return Parameter(arr.astype(dtype, copy=False), device=device)


def _normal(shape, device, dtype) -> Parameter:
    device, xp, dtype = _setup(device, dtype)
    gen_dtype = dtype if dtype.itemsize >= 4 else backend.default_dtype
    arr = backend.rng(device).standard_normal(shape, dtype=gen_dtype)
    return Parameter(arr.astype(dtype, copy=False), device=device)


def _const(shape, value, device, dtype) -> Parameter:
    device, xp, dtype = _setup(device, dtype)
    return Parameter(xp.full(shape, value, dtype=dtype), device=device)


def _check_positive_int(name, value, allow_zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {what} integer, got {value!r}")


def _normalized_shape(shape) -> tuple:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    for s in shape:
        _check_positive_int("normalized_shape entries", s)
    if not shape:
        raise ValueError("normalized_shape must name at least one dimension")
    return shape


class Linear(Module):
    """y = x @ weight.T + bias.   x: (..., in_features) -> y: (..., out_features).

    weight: (out_features, in_features), bias: (out_features,); both start as
    U(-1/sqrt(in_features), 1/sqrt(in_features)), as in PyTorch.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        _check_positive_int("in_features", in_features, allow_zero=True)
        _check_positive_int("out_features", out_features, allow_zero=True)
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = _uniform((out_features, in_features), bound, device, dtype)
        if bias:
            self.bias = _uniform((out_features,), bound, device, dtype)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expected input with last dimension in_features={self.in_features}, "
                             f"got shape {x.shape}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """out = weight[ids].   ids: integer tensor (...) -> out: (..., embedding_dim); weight ~ N(0, 1).

    ``padding_idx`` (as PyTorch): that row starts at zeros and gets no gradient, so it stays
    what it is (a padding token's embedding)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, device=None, dtype=None):
        super().__init__()
        _check_positive_int("num_embeddings", num_embeddings)
        _check_positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) \
                    or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be an int in [{-num_embeddings}, {num_embeddings - 1}], "
                                 f"got {padding_idx!r}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = _normal((num_embeddings, embedding_dim), device, dtype)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}" + (
            "" if self.padding_idx is None else f", padding_idx={self.padding_idx}")


class LayerNorm(Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last ``len(normalized_shape)`` dims.

    weight starts at 1 and bias at 0 (when ``elementwise_affine``; ``bias=False`` drops the bias).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.eps, self.elementwise_affine, self._bias = float(eps), elementwise_affine, bool(bias)
        if elementwise_affine:
            self.weight = _const(self.normalized_shape, 1.0, device, dtype)
            if bias:
                self.bias = _const(self.normalized_shape, 0.0, device, dtype)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self._bias}")


class RMSNorm(Module):
    """x / sqrt(mean(x**2) + eps) * weight over the last ``len(normalized_shape)`` dims; weight starts at 1."""

    def __init__(self, normalized_shape, eps: float = 1e-6, elementwise_affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.eps, self.elementwise_affine = float(eps), elementwise_affine
        if elementwise_affine:
            self.weight = _const(self.normalized_shape, 1.0, device, dtype)
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    """Zero each element with probability p and scale the rest by 1/(1-p), in training mode only."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be between 0 and 1, got {p!r}")
        self.p, self.inplace = float(p), bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, training=True, inplace=self.inplace)

    def extra_repr(self):
        return f"p={self.p}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    """x * Phi(x) (``approximate="none"``) or the tanh approximation (``"tanh"``, GPT-2's)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class _InplaceActivation(Module):
    """An activation module with PyTorch's ``inplace`` flag: calls ``function(x, inplace=...)``.
    ``inplace=True`` overwrites the input (only where no gradient is recorded)."""

    function = None   # set by each subclass (a staticmethod of nn.functional)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_InplaceActivation):
    """max(x, 0)."""

    function = staticmethod(F.relu)


class SiLU(_InplaceActivation):
    """x * sigmoid(x)."""

    function = staticmethod(F.silu)


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as in PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


#: the keys of Llama 3's rope scaling (besides "rope_type": "llama3")
LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_rope_scaling(scaling) -> dict | None:
    """``scaling`` (None, or Llama 3's dict) checked; None for no scaling. ValueError naming the
    bad key or value."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be None or a dict, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling: rope_type {kind!r} is not supported (supported: {list(ROPE_TYPES)})")
    if kind == "default":
        return None
    unknown = sorted(set(scaling) - set(LLAMA3_SCALING_KEYS) - {"rope_type", "type"})
    missing = [k for k in LLAMA3_SCALING_KEYS if k not in scaling]
    if unknown or missing:
        raise ValueError("rope_scaling (llama3): " + "; ".join(
            ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])))
    out = {"rope_type": "llama3"}
    for k in LLAMA3_SCALING_KEYS:
        v = scaling[k]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
            raise ValueError(f"rope_scaling: {k} must be a finite number > 0, got {v!r}")
        out[k] = v
    if out["factor"] < 1:
        raise ValueError(f"rope_scaling: factor must be >= 1, got {out['factor']!r}")
    if out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ValueError(f"rope_scaling: high_freq_factor ({out['high_freq_factor']}) must exceed "
                         f"low_freq_factor ({out['low_freq_factor']})")
    return out


class RotaryEmbedding(Module):
    """The cos / sin tables of rotary position embeddings (Hugging Face's ``LlamaRotaryEmbedding``);
    no parameters.

        rope = RotaryEmbedding(head_dim=64, theta=10000.0)
        cos, sin = rope(start, T)          # (T, head_dim) each: positions start .. start + T - 1
        q = F.rotary_embedding(q, cos, sin)

    ``theta``: the base of the frequencies theta ** (-2i / head_dim); ``scaling``: None, or
    Llama 3's frequency scaling ``{"rope_type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}``. The frequencies are the
    buffer ``inv_freq`` (not in the state dict); the tables are computed in float32, as
    Hugging Face does, and returned in ``dtype``.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: dict | None = None, device=None):
        super().__init__()
        _check_positive_int("head_dim", head_dim)
        if head_dim % 2:
            raise ValueError(f"head_dim must be even (pairs of channels are rotated), got {head_dim}")
        if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or not 0 < theta < math.inf:
            raise ValueError(f"theta must be a finite number > 0, got {theta!r}")
        self.head_dim, self.theta, self.scaling = head_dim, float(theta), check_rope_scaling(scaling)
        device = backend.canonical_device(device)
        xp = backend.xp_for(device)
        self.register_buffer("inv_freq", Tensor.wrap(inv_frequencies(xp, head_dim, self.theta, self.scaling), device),
                             persistent=False)

    def forward(self, start: int, length: int, dtype=None):
        """(cos, sin): Tensors (length, head_dim) of positions start .. start + length - 1."""
        inv_freq = self.inv_freq
        dtype = backend.default_dtype if dtype is None else backend.canonical_dtype(dtype)
        cos, sin = rope_tables(inv_freq.xp, inv_freq.data, start, length, dtype)
        return Tensor.wrap(cos, inv_freq.device), Tensor.wrap(sin, inv_freq.device)

    def extra_repr(self):
        return f"head_dim={self.head_dim}, theta={self.theta}" + (f", scaling={self.scaling}" if self.scaling else "")
