"""Neural-network building blocks: ``functional`` (fused ops with hand-written backward
passes) and modules built on them."""
from . import functional  # noqa: F401
from . import utils  # noqa: F401
from .containers import ModuleDict, ModuleList, Sequential
from .kv_cache import KVCache
from .layers import GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, RMSNorm, RotaryEmbedding, SiLU
from .module import IncompatibleKeys, Module, Parameter

__all__ = [
    "functional", "utils", "Module", "Parameter", "IncompatibleKeys",
    "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "GELU", "ReLU", "SiLU", "Identity",
    "RotaryEmbedding", "Sequential", "ModuleList", "ModuleDict", "KVCache",
]
