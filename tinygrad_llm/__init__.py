"""tinygrad_llm: a from-scratch autograd engine and GPT on NumPy (CPU) or CuPy (GPU).

    from tinygrad_llm import Tensor, no_grad
    x = Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad            # array([[2., 4.]], dtype=float32)

Also here: ``GPT``/``GPTConfig`` (tinygrad_llm.model) and ``Llama``/``LlamaConfig``
(tinygrad_llm.llama); ``load_gpt2``/``save_gpt2`` (tinygrad_llm.hf) and ``load_llama``/
``save_llama`` (tinygrad_llm.hf_llama) to read and write Hugging Face GPT-2 and Llama folders;
``amp`` (mixed precision: ``autocast``, ``GradScaler``).
"""
import numpy as _np

from . import amp
from .backend import ArgumentError, DeviceError, DtypeError, ShapeError, gpu_available, manual_seed
from .creation import (arange, eye, full, full_like, ones, ones_like, rand, rand_like, randint, randn,
                       randn_like, zeros, zeros_like)
from .function import Function, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck
from .hf import load_gpt2, save_gpt2
from .hf_llama import load_llama, save_llama
from .llama import Llama, LlamaConfig
from .model import GPT, GPTConfig
from .tensor import Tensor, ValuesIndices, cat, einsum, maximum, minimum, multinomial, stack, where
from .tiers import reference_tier, reference_tier_forced, use_reference_tier
from . import kernels as _kernels  # noqa: E402,F401  (registers the fast tier's kernels)

float16 = _np.float16
float32 = _np.float32
float64 = _np.float64
int64 = _np.int64
bool_ = _np.bool_

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "GPT", "GPTConfig", "load_gpt2", "save_gpt2", "amp",
    "Llama", "LlamaConfig", "load_llama", "save_llama",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "gradcheck", "GradcheckError", "manual_seed", "gpu_available", "DeviceError",
    "ShapeError", "DtypeError", "ArgumentError",
    "zeros", "ones", "full", "randn", "rand", "randint", "arange", "eye",
    "zeros_like", "ones_like", "full_like", "randn_like", "rand_like",
    "cat", "stack", "where", "maximum", "minimum", "einsum", "multinomial", "ValuesIndices",
    "use_reference_tier", "reference_tier", "reference_tier_forced",
    "float16", "float32", "float64", "int64", "bool_",
]
