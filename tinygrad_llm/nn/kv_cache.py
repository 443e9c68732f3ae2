"""``KVCache``: the keys and values of every attention layer for the positions seen so far.

    cache = KVCache(model.config, batch=1, device="cpu", dtype=np.float32)
    logits, _ = model(prompt, cache=cache)       # fills positions 0 .. T-1
    logits, _ = model(next_ids, cache=cache)     # attends to them too, and adds position T

Each layer's keys and values live in tensors preallocated for the longest sequence
(``block_size``), so a generation step costs one position's work and no reallocation.
"""
from __future__ import annotations

from .. import backend
from ..function import is_grad_enabled
from ..tensor import Tensor, cat

__all__ = ["KVCache"]


class KVCache:
    """``k[i]``, ``v[i]``: layer i's keys and values, Tensors (B, n_kv_head, block_size, head_dim)
    on the device; ``length``: how many positions are filled (the model advances it;
    filled positions are never written again: start a new cache to start over).

    ``config``: anything with ``n_layer``, ``n_kv_head`` (the key/value heads: fewer than the
    query heads with grouped-query attention, whose groups share them), ``head_dim`` and
    ``block_size`` (a ``GPTConfig`` or ``LlamaConfig``); ``dtype``: the model's (its parameters').
    """

    def __init__(self, config, batch: int, device: str = "cpu", dtype=None):
        device = backend.canonical_device(device)
        dtype = backend.default_dtype if dtype is None else backend.canonical_dtype(dtype)
        xp = backend.xp_for(device)
        shape = (batch, config.n_kv_head, config.block_size, config.head_dim)
        self.k = [Tensor.wrap(xp.zeros(shape, dtype=dtype), device) for _ in range(config.n_layer)]
        self.v = [Tensor.wrap(xp.zeros(shape, dtype=dtype), device) for _ in range(config.n_layer)]
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' keys and values ``k``, ``v`` (B, KV, T, hd) of ``layer`` at
        positions ``length .. length+T-1`` and return all of them, (B, KV, length+T, hd) each.

        With a gradient being recorded for ``k`` or ``v`` the result is
        ``cat([cached, k])``: gradients reach the new positions' keys and values, and the
        cached positions (computed by earlier calls) are constants. Otherwise (generation,
        under ``no_grad``) the result is a view of the cache's memory: no copy.
        """
        K, V = self.k[layer], self.v[layer]
        start, end = self.length, self.length + k.shape[2]
        for name, new, buf in (("k", k, K), ("v", v, V)):
            if new.dtype != buf.dtype or new.device != buf.device or new.ndim != 4 \
                    or new.shape[:2] + new.shape[3:] != buf.shape[:2] + buf.shape[3:]:
                raise ValueError(f"KVCache.update: {name} has shape {new.shape}, dtype {new.dtype} on "
                                 f"{new.device!r}; the cache holds (B, H, positions, hd) = {buf.shape}, "
                                 f"{buf.dtype} on {buf.device!r}")
        if end > K.shape[2] or v.shape[2] != k.shape[2]:
            raise ValueError(f"KVCache.update: {k.shape[2]} new positions (values: {v.shape[2]}) after "
                             f"{start} do not fit the cache's {K.shape[2]}")
        K[:, :, start:end] = k           # in-place writes into tensors that need no gradient
        V[:, :, start:end] = v
        # positions below ``length`` are never written again, so plain views of them stay
        # valid for as long as anything (a recorded node) keeps them
        if is_grad_enabled() and (k.requires_grad or v.requires_grad):
            if start == 0:
                return k, v
            past_k = Tensor.wrap(K.data[:, :, :start], K.device)
            past_v = Tensor.wrap(V.data[:, :, :start], V.device)
            return cat([past_k, k], axis=2), cat([past_v, v], axis=2)
        return Tensor.wrap(K.data[:, :, :end], K.device), Tensor.wrap(V.data[:, :, :end], V.device)
