"""Llama: the block of Llama 2/3, Mistral, SmolLM and TinyLlama, with Hugging Face's parameter names.

    from tinygrad_llm import Llama, LlamaConfig
    model = Llama(LlamaConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_kv_head=2, n_embd=128))
    logits, loss = model(idx, targets)          # idx, targets: int (B, T)

Layout (names as ``transformers.LlamaForCausalLM``'s, so checkpoints map one to one)::

    model.embed_tokens            token embedding (vocab_size, n_embd); no position embedding
    model.layers.i                LlamaDecoderLayer (pre-norm, no biases by default):
      input_layernorm               RMSNorm
      self_attn.{q,k,v,o}_proj      q: n_head heads, k and v: n_kv_head heads (grouped-query
                                    attention), rotary embeddings on q and k, causal attention,
                                    o: back to n_embd                          -> residual
      post_attention_layernorm      RMSNorm
      mlp.{gate,up,down}_proj       down(silu(gate(x)) * up(x)), intermediate_size wide -> residual
    model.norm                    final RMSNorm
    model.rotary_emb              the rotary tables (no parameters, not in the state dict)
    lm_head                       (vocab_size, n_embd); the embedding itself when tie_weights

Everything else (the loss, the KV cache, generation, training, checkpoints, fine-tuning)
is shared with the GPT (:class:`~tinygrad_llm.model.CausalLM`). Reading and writing Hugging
Face folders is ``tinygrad_llm.load_llama`` / ``save_llama`` (hf_llama.py); docs/llama.md
compares the block with GPT-2's.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .config import DictConfig
from .model import ATTENTION_IMPLS, RECOMPUTE, CausalLM, attention_weights, check_positive_ints
from .nn import functional as F
from .nn.containers import ModuleList
from .nn.kv_cache import KVCache
from .nn.layers import Embedding, Linear, RMSNorm, RotaryEmbedding, check_rope_scaling
from .nn.module import Module
from .nn.utils import checkpoint
from .tensor import Tensor

__all__ = ["LlamaConfig", "Llama", "default_intermediate_size"]


def default_intermediate_size(n_embd: int) -> int:
    """8/3 n_embd rounded up to a multiple of 32: the MLP of three matrices then has about the
    parameters of GPT's two 4 n_embd ones (SmolLM-135M: 576 -> 1536)."""
    return 32 * math.ceil(8 * n_embd / 3 / 32)


@dataclasses.dataclass
class LlamaConfig(DictConfig):
    """Shape and options of a Llama; the block itself is fixed (RMSNorm, rotary embeddings,
    SwiGLU, grouped-query attention). Unknown keys in :meth:`from_dict` are an error.

    The names are nanoGPT's where GPTConfig has the same thing; Hugging Face's
    ``LlamaConfig`` calls them: block_size = max_position_embeddings, n_layer =
    num_hidden_layers, n_head = num_attention_heads, n_kv_head = num_key_value_heads,
    n_embd = hidden_size, dropout = attention_dropout, bias = attention_bias and mlp_bias,
    tie_weights = tie_word_embeddings. Defaults as Hugging Face's where it has one.
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None           # None: n_head (multi-head attention)
    n_embd: int = 128
    intermediate_size: int | None = None   # None: default_intermediate_size(n_embd)
    dropout: float = 0.0                   # on the attention probabilities (Hugging Face's attention_dropout)
    bias: bool = False                     # biases in the attention and MLP projections
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None       # None, or Llama 3's {"rope_type": "llama3", "factor", ...}
    tie_weights: bool = False              # lm_head.weight is model.embed_tokens.weight
    attention: str = "standard"            # or "flash": tiled attention (as GPTConfig's; not Hugging Face's)
    recompute: str = "none"                # "block" or "mlp": activation checkpointing (as GPTConfig's)

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.intermediate_size is None and isinstance(self.n_embd, (int, np.integer)):
            self.intermediate_size = default_intermediate_size(int(self.n_embd))
        check_positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd",
                                   "intermediate_size"))
        if self.n_head % self.n_kv_head:
            raise ValueError(f"LlamaConfig: n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): "
                             "each key/value head serves a group of n_head / n_kv_head query heads")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: the head size n_embd / n_head = {self.head_dim} must be even "
                             "(rotary embeddings rotate pairs of channels)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LlamaConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"LlamaConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name, lo in (("rms_norm_eps", 0.0), ("rope_theta", None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
                    or (v < lo if lo is not None else v <= 0):
                raise ValueError(f"LlamaConfig.{name} must be a finite number {'>= 0' if lo is not None else '> 0'}, "
                                 f"got {v!r}")
        for name, allowed in (("attention", ATTENTION_IMPLS), ("recompute", RECOMPUTE)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"LlamaConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        try:
            self.rope_scaling = check_rope_scaling(self.rope_scaling)
        except ValueError as e:
            raise ValueError(f"LlamaConfig.{e}") from None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        """The parameter count of ``Llama(self)`` (a tied lm_head once), without building it."""
        C, V, L, Fs = self.n_embd, self.vocab_size, self.n_layer, self.intermediate_size
        kv = self.n_kv_head * self.head_dim
        attention = 2 * C * C + 2 * C * kv + ((2 * C + 2 * kv) if self.bias else 0)   # q, o; k, v
        mlp = 3 * C * Fs + ((2 * Fs + C) if self.bias else 0)                          # gate, up; down
        return V * C * (1 if self.tie_weights else 2) + L * (attention + mlp + 2 * C) + C



class LlamaAttention(Module):
    """Causal self-attention with rotary embeddings and grouped-query heads (``self_attn``)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim, self.dropout = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.dropout
        self.impl = cfg.attention
        C, kv = cfg.n_embd, cfg.n_kv_head * cfg.head_dim
        self.q_proj = Linear(C, C, bias=cfg.bias)
        self.k_proj = Linear(C, kv, bias=cfg.bias)
        self.v_proj = Linear(C, kv, bias=cfg.bias)
        self.o_proj = Linear(C, C, bias=cfg.bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None, layer: int = 0,
                attention: list | None = None) -> Tensor:
        """x (B, T, C); cos, sin (T, 1, head_dim): the rotary tables of the T positions."""
        B, T, C = x.shape
        H, KV, hd = self.n_head, self.n_kv_head, self.head_dim
        q = F.rotary_embedding(self.q_proj(x).reshape(B, T, H, hd), cos, sin).permute(0, 2, 1, 3)   # (B, H, T, hd)
        k = F.rotary_embedding(self.k_proj(x).reshape(B, T, KV, hd), cos, sin).permute(0, 2, 1, 3)  # (B, KV, T, hd)
        v = self.v_proj(x).reshape(B, T, KV, hd).permute(0, 2, 1, 3)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.update(layer, k, v)                                   # (B, KV, start + T, hd)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=True,
                                           impl=self.impl)                    # (B, H, T, hd)
        if attention is not None:
            attention.append(attention_weights(q, k, start))
        return self.o_proj(y.permute(0, 2, 1, 3).reshape(B, T, C))


class LlamaMLP(Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)): C -> intermediate_size (twice) -> C (``mlp``)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        C, Fs = cfg.n_embd, cfg.intermediate_size
        self.gate_proj = Linear(C, Fs, bias=cfg.bias)
        self.up_proj = Linear(C, Fs, bias=cfg.bias)
        self.down_proj = Linear(Fs, C, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.swiglu(self.gate_proj(x), self.up_proj(x)))


class LlamaDecoderLayer(Module):
    """x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).

    ``recompute`` (LlamaConfig) as the GPT's Block: "block" recomputes the whole layer in the
    backward pass, "mlp" the MLP alone (``nn.utils.checkpoint``); not while caching or reading
    attention out.
    """

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.recompute = cfg.recompute
        self.input_layernorm = RMSNorm(cfg.n_embd, eps=cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None, layer: int = 0,
                attention: list | None = None) -> Tensor:
        if self.recompute == "block" and cache is None and attention is None:
            return checkpoint(self._forward, x, cos, sin)
        return self._forward(x, cos, sin, cache, layer, attention)

    def _forward(self, x, cos, sin, cache=None, layer=0, attention=None):
        mlp = self.mlp if self.recompute != "mlp" or cache is not None else (lambda h: checkpoint(self.mlp, h))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, attention)
        return x + mlp(self.post_attention_layernorm(x))


class LlamaModel(Module):
    """The body (``model``): embed_tokens, layers, norm, and the rotary tables."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.n_embd, eps=cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)


class Llama(CausalLM):
    """A Llama language model. ``model(idx, targets=None) -> (logits, loss)``, as :class:`GPT`."""

    arch = "llama"
    config_class = LlamaConfig
    embedding_name = "model.embed_tokens.weight"
    residual_projections = ("o_proj.weight", "down_proj.weight")
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if isinstance(config, dict):
            config = LlamaConfig.from_dict(config)
        self.config = cfg = config
        self.model = LlamaModel(cfg)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self) -> Embedding:
        return self.model.embed_tokens

    def hidden_states(self, idx: Tensor, start: int, cache, attention):
        m, T = self.model, idx.shape[1]
        x = m.embed_tokens(idx)                                               # (B, T, C)
        cos, sin = m.rotary_emb(start, T, dtype=x.dtype)                      # (T, head_dim)
        cos, sin = cos.reshape(T, 1, -1), sin.reshape(T, 1, -1)               # broadcast over the heads
        for i, layer in enumerate(m.layers):
            x = layer(x, cos, sin, cache, i, attention)
        return m.norm(x)
