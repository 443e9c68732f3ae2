"""GPT: a decoder-only transformer with GPT-2's parameter names.

    from tinygrad_llm import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits, loss = model(idx, targets)          # idx, targets: int (B, T)

Layout (names as GPT-2's, so checkpoints map one to one)::

    transformer.wte   token embedding (vocab_size, n_embd)
    transformer.wpe   learned position embedding (block_size, n_embd) [pos="learned"]
    transformer.h.i   Block: ln_1 -> attn (c_attn: fused QKV, c_proj) -> residual,
                             ln_2 -> mlp (c_fc: 4x, activation, c_proj) -> residual
    transformer.ln_f  final norm
    lm_head           (vocab_size, n_embd), tied to wte by default

Attention read-out: ``logits, loss, att = model(idx, return_attention=True)`` also
returns each layer's attention weights, ``att[i]`` of shape (B, n_head, T, T_keys):
row t is the softmax over the keys query t may see (see :func:`attention_weights`).
They are computed only when asked, from the layer's own Q and K, beside the fused
attention node, which is left as it is: the normal forward pays nothing for it.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import backend
from .config import DictConfig
from .function import no_grad
from .nn import functional as F
from .nn.containers import ModuleDict, ModuleList
from .nn.kv_cache import KVCache
from .nn.layers import Dropout, Embedding, LayerNorm, Linear, RMSNorm
from .nn.lora import DEFAULT_TARGETS
from .nn.module import Module
from .nn.utils import checkpoint
from .optim import AdamW
from .tensor import Tensor

__all__ = ["GPTConfig", "GPT", "CausalLM", "KVCache", "PEAK_FLOPS", "attention_weights", "check_positive_ints"]
# KVCache: nn/kv_cache.py

#: Peak float32 FLOP/s used for MFU when the user gives none (documented estimates:
#: 'cpu' is a 2-core AVX2 laptop-class machine, 'cuda' an H100 SXM's dense TF32 rate).
PEAK_FLOPS = {"cpu": 1.0e11, "cuda": 4.95e14}

#: GPTConfig.attention: the two attention implementations of F.scaled_dot_product_attention
ATTENTION_IMPLS = F.ATTENTION_IMPLS
#: GPTConfig.recompute: what activation checkpointing recomputes in the backward pass
#: (nothing; each block's MLP, as llm.c's recompute; each whole block)
RECOMPUTE = ("none", "mlp", "block")


@dataclasses.dataclass
class GPTConfig(DictConfig):
    """Shape and options of a GPT. Unknown keys in :meth:`from_dict` are an error."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"        # or "rmsnorm"
    prenorm: bool = True           # False: Post-LN, as in the original Transformer
    activation: str = "gelu"       # GPT-2's tanh-approximated GELU, or "relu"
    pos: str = "learned"           # or "sinusoidal" (fixed, no parameters)
    tie_weights: bool = True       # lm_head.weight is transformer.wte.weight
    attention: str = "standard"    # or "flash": tiled attention, no (T, T) matrix kept (ops/flash_attention.py)
    recompute: str = "none"        # "block": recompute each block in the backward; "mlp": only the MLPs

    def __post_init__(self):
        check_positive_ints(self, ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        choices = {"norm": ("layernorm", "rmsnorm"), "activation": ("gelu", "relu"),
                   "pos": ("learned", "sinusoidal"), "attention": ATTENTION_IMPLS, "recompute": RECOMPUTE}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def n_kv_head(self) -> int:
        """Key/value heads: as many as query heads (multi-head attention)."""
        return self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        """The parameter count of ``GPT(self)`` (a tied lm_head once), without building it."""
        C, V, L = self.n_embd, self.vocab_size, self.n_layer
        norm = C * (2 if self.norm == "layernorm" and self.bias else 1)      # weight (and bias)
        layer = 12 * C * C + (9 * C if self.bias else 0) + 2 * norm           # c_attn, c_proj, c_fc, c_proj; ln_1, ln_2
        return V * C * (1 if self.tie_weights else 2) + (self.block_size * C if self.pos == "learned" else 0) \
            + L * layer + norm



def check_positive_ints(cfg, names) -> None:
    """ValueError unless each field ``names`` of config ``cfg`` is a positive integer and n_head
    divides n_embd (when both are among them)."""
    kind = type(cfg).__name__
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{kind}.{name} must be a positive integer, got {v!r}")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"{kind}: n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")


def _norm(cfg: GPTConfig):
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd)
    return LayerNorm(cfg.n_embd, bias=cfg.bias)


def attention_weights(q: Tensor, k: Tensor, start: int = 0) -> Tensor:
    """softmax(q k^T / sqrt(hd) + causal mask): q (B, H, T, hd), k (B, KV, S, hd) -> (B, H, T, S).

    Query t sits at absolute position ``start + t`` and sees keys 0 .. start + t; later
    keys get weight exactly 0. With KV < H key heads (grouped-query attention) query head h
    reads key head h // (H / KV). Built from public tensor ops.
    """
    B, H, T, hd = q.shape
    KV, S = k.shape[1], k.shape[2]
    future = np.arange(S)[None, :] > np.arange(start, start + T)[:, None]     # (T, S): key after query
    groups = q.reshape(B, KV, H // KV, T, hd)                                 # query heads by their key head
    scores = (groups @ k.reshape(B, KV, 1, S, hd).swapaxes(-1, -2)) * (1.0 / math.sqrt(hd))
    return F.softmax(scores.masked_fill(future, float("-inf")), axis=-1).reshape(B, H, T, S)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention with one fused QKV projection (``c_attn``)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout, self.impl = cfg.n_head, cfg.n_embd, cfg.dropout, cfg.attention
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                attention: list | None = None) -> Tensor:
        """``attention``: a list to append this layer's weights (B, H, T, T_keys) to, or None."""
        B, T, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x)                                          # (B, T, 3C)
        if cache is None:
            p = self.dropout if self.training else 0.0
            y = F.causal_self_attention(qkv, H, dropout_p=p, impl=self.impl)    # (B, T, C)
            if attention is not None:
                heads = qkv.reshape(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)   # (3, B, H, T, hd)
                attention.append(attention_weights(heads[0], heads[1]))
        else:
            qkv = qkv.reshape(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)   # (3, B, H, T, hd)
            start = cache.length
            k, v = cache.update(layer, qkv[1], qkv[2])                      # (B, H, start + T, hd)
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(qkv[0], k, v, dropout_p=p, is_causal=True,
                                               impl=self.impl)                     # (B, H, T, hd)
            y = y.permute(0, 2, 1, 3).reshape(B, T, C)
            if attention is not None:
                attention.append(attention_weights(qkv[0], k, start))
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    """c_fc (C -> 4C), GELU (tanh form, as GPT-2) or ReLU, c_proj (4C -> C), dropout."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.activation = cfg.activation
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        h = F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)
        return self.dropout(self.c_proj(h))


class Block(Module):
    """Pre-LN: x + attn(ln_1(x)), then + mlp(ln_2(x)). Post-LN: ln_1(x + attn(x)), ln_2(x + mlp(x)).

    ``recompute`` (GPTConfig): "block" keeps only the block's input for the backward pass and
    runs the block again there; "mlp" does that for the MLP alone (its 4x-wide activations
    are the block's largest after attention's); both through ``nn.utils.checkpoint``. Not
    while caching keys and values or reading attention out (nothing is recorded for them twice).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.prenorm, self.recompute = cfg.prenorm, cfg.recompute
        self.ln_1 = _norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0,
                attention: list | None = None) -> Tensor:
        if self.recompute == "block" and cache is None and attention is None:
            return checkpoint(self._forward, x)
        return self._forward(x, cache, layer, attention)

    def _forward(self, x, cache=None, layer=0, attention=None):
        mlp = self.mlp if self.recompute != "mlp" or cache is not None else (lambda h: checkpoint(self.mlp, h))
        if self.prenorm:
            x = x + self.attn(self.ln_1(x), cache, layer, attention)
            return x + mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, cache, layer, attention))
        return self.ln_2(x + mlp(x))


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """The Transformer's fixed position encodings: sin on even, cos on odd channels."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    inv = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((n_pos, dim))
    table[:, 0::2] = np.sin(pos * inv)
    table[:, 1::2] = np.cos(pos * inv[: dim // 2])
    return table.astype(np.float32)


class CausalLM(Module):
    """What the package's language models share (``GPT`` here, ``Llama`` in llama.py):
    ``model(idx, targets=None, cache=None, return_attention=False)``, the weight init, the
    parameter and FLOP accounting, and the optimizer.

    A subclass sets ``arch`` (its name in checkpoints), ``config_class``, ``embedding_name`` (the state-dict key
    of the token embedding, which a tied lm_head shares), ``residual_projections`` (weights
    whose init is scaled by 1/sqrt(2 n_layer)) and ``lora_targets`` (the Linear layers
    LoRA adapts by default), builds ``lm_head``, and implements ``get_input_embeddings()``
    and ``hidden_states(idx, start, cache, attention)``: the final norm's output (B, T, C)
    for token ids ``idx`` at positions ``start ..``.
    """

    arch = ""
    config_class = None
    embedding_name = ""
    residual_projections: tuple = ()
    lora_targets: tuple = ()

    # ------------------------------------------------------------------ init
    def _init_weights(self):
        """GPT-2's: N(0, 0.02) for matrices and embeddings, residual projections scaled by
        1/sqrt(2 n_layer), zero biases, unit norm weights."""
        g = backend.rng("cpu")
        std_proj = 0.02 / math.sqrt(2 * self.config.n_layer)
        with no_grad():
            for name, p in self.named_parameters():
                if p.ndim >= 2:
                    std = std_proj if name.endswith(self.residual_projections) else 0.02
                    g.standard_normal(dtype=p.dtype, out=p.data)   # in place: no temporaries
                    p.mul_(p.dtype.type(std))                      # (and the version is bumped)
                elif name.endswith(".bias"):
                    p.zero_()

    def get_input_embeddings(self) -> Embedding:  # pragma: no cover - abstract
        raise NotImplementedError

    def hidden_states(self, idx: Tensor, start: int, cache, attention):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ forward
    def forward(self, idx, targets=None, cache: KVCache | None = None, return_attention: bool = False):
        """idx: int (B, T) with T <= block_size -> logits (B, T, vocab_size), loss or None.

        With ``targets`` (B, T) the loss is the mean cross-entropy (targets of -100 are
        ignored). With a ``cache`` (:class:`~tinygrad_llm.nn.KVCache`) the tokens continue
        the cached ones (generation); gradients then reach the new positions' computation,
        while the cached keys and values, from earlier calls, are constants.
        With ``return_attention`` a third value is returned: a list with each layer's
        attention weights, Tensors (B, n_head, T, T_keys) (T_keys = cached + T), the
        softmax before attention dropout; rows sum to 1, keys after the query get 0.
        """
        cfg, name = self.config, type(self).__name__
        idx = idx if isinstance(idx, Tensor) else Tensor(idx, device=self.device)   # lists, NumPy or CuPy arrays
        if idx.ndim != 2:
            raise ValueError(f"{name} expects token ids of shape (batch, time), got shape {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{name} expects integer token ids, got dtype {idx.dtype}")
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > cfg.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than block_size {cfg.block_size}; "
                             "crop it (generate() crops prompts from the left)")
        attention = [] if return_attention else None
        x = self.hidden_states(idx, start, cache, attention)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            targets = targets if isinstance(targets, Tensor) else Tensor(targets, device=idx.device)
            if targets.shape != (B, T):
                raise ValueError(f"targets must have the shape of idx {(B, T)}, got {targets.shape}")
            loss = F.cross_entropy(logits, targets)        # over the B * T positions (classes on the last axis)
        if return_attention:
            return logits, loss, attention
        return logits, loss

    # ------------------------------------------------------------------ accounting
    @property
    def device(self) -> str:
        return self.get_input_embeddings().weight.device

    @property
    def dtype(self):
        """The dtype of the weights (of the token embedding)."""
        return self.get_input_embeddings().weight.dtype

    def position_params(self) -> int:
        """Parameters of learned position embeddings (none unless the model has them)."""
        return 0

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); ``non_embedding`` leaves out position embeddings."""
        n = sum(p.size for p in self.parameters())
        return n - self.position_params() if non_embedding else n

    def flops_per_token(self, T: int | None = None) -> float:
        """Training FLOPs per token: 6N + 12 * n_layer * n_embd * T (PaLM's estimate)."""
        cfg = self.config
        T = cfg.block_size if T is None else T
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * T

    def estimate_mfu(self, tokens_per_iter: int, dt: float, T: int | None = None,
                     peak_flops: float | None = None) -> float:
        """Model FLOPs utilisation of an iteration of ``dt`` seconds against ``peak_flops``
        (default :data:`PEAK_FLOPS` for this model's device kind)."""
        if peak_flops is None:
            peak_flops = PEAK_FLOPS["cpu" if self.device == "cpu" else "cuda"]
        return self.flops_per_token(T) * tokens_per_iter / dt / peak_flops

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas=(0.9, 0.99),
                             eps: float = 1e-8):
        """AdamW over the parameters that require grad, with weight decay on matrices and embeddings
        (dim >= 2) only."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # a group can be empty when parameters are frozen (LoRA trains only its matrices)
        return AdamW([g for g in groups if g["params"]], lr=learning_rate, betas=betas, eps=eps)


class GPT(CausalLM):
    """A GPT language model. ``model(idx, targets=None) -> (logits, loss)``."""

    arch = "gpt"
    config_class = GPTConfig
    embedding_name = "transformer.wte.weight"
    residual_projections = ("c_proj.weight",)
    lora_targets = DEFAULT_TARGETS

    def __init__(self, config: GPTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        self.config = cfg = config
        parts = {"wte": Embedding(cfg.vocab_size, cfg.n_embd)}
        if cfg.pos == "learned":
            parts["wpe"] = Embedding(cfg.block_size, cfg.n_embd)
        parts["drop"] = Dropout(cfg.dropout)
        parts["h"] = ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        parts["ln_f"] = _norm(cfg)
        self.transformer = ModuleDict(parts)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.pos == "sinusoidal":
            self.register_buffer("pos_table", Tensor(sinusoidal_table(cfg.block_size, cfg.n_embd)),
                                 persistent=False)
        self._init_weights()
        if cfg.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight

    def get_input_embeddings(self) -> Embedding:
        return self.transformer.wte

    def position_params(self) -> int:
        return self.transformer.wpe.weight.size if self.config.pos == "learned" else 0

    def hidden_states(self, idx: Tensor, start: int, cache, attention):
        cfg, tr = self.config, self.transformer
        T = idx.shape[1]
        xp = backend.xp_for(idx.device)
        x = tr.wte(idx)                                                       # (B, T, C)
        if cfg.pos == "learned":
            pos = Tensor.wrap(xp.arange(start, start + T), idx.device).set_value_bounds(start, start + T - 1)
            x = x + tr.wpe(pos)
        else:
            x = x + self.pos_table[start:start + T]
        x = tr.drop(x)
        for i, block in enumerate(tr.h):
            x = block(x, cache, i, attention)
        return tr.ln_f(x)
