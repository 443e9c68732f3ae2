"""Sampling text from a language model (GPT or Llama).

    ids = generate(model, prompt_ids, max_new_tokens=200, temperature=0.8, top_k=200, seed=1)

Each step turns the last position's logits into a distribution: repetition penalty
(CTRL's rule: divide positive logits of already-seen tokens by the penalty, multiply
negative ones), temperature (0 = greedy), top-k, then top-p (the smallest set of
tokens whose probability reaches p), and draws from it with a generator seeded by
``seed``. With ``use_cache`` (the default) keys and values of earlier positions are
kept, so each new token costs one position's work. A context longer than block_size is
cropped from the left; past that point, positions shift, so the cache is refilled from
the cropped context each step, which gives exactly the tokens uncached generation gives.
"""
from __future__ import annotations

import codecs
import math

import numpy as np

from . import backend
from .function import no_grad
from .nn.kv_cache import KVCache
from .tensor import Tensor

__all__ = ["generate", "sample_next", "generate_text"]


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                repetition_penalty: float = 1.0, seen=None) -> np.ndarray:
    """logits (B, V) float on the host -> next token ids (B,) int64."""
    logits = np.array(logits, dtype=np.float64)
    B, V = logits.shape
    if repetition_penalty != 1.0 and seen is not None:
        for b in range(B):  # over the (few) sequences of a batch, not over tokens
            ids = np.unique(seen[b])
            sel = logits[b, ids]
            logits[b, ids] = np.where(sel > 0, sel / repetition_penalty, sel * repetition_penalty)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits /= temperature
    if top_k is not None and top_k < V:
        kth = np.partition(logits, V - top_k, axis=-1)[:, V - top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p   # mass of strictly more likely tokens
        drop = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    u = rng.random((B, 1))
    return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), V - 1)


def _check(temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None, got {seed!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):       # NaN would sample nothing sensible
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:          # (also False for NaN)
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = off), got {repetition_penalty}")


@no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
             use_cache: bool = True, on_token=None, should_stop=None) -> np.ndarray:
    """Extend ``idx`` (B, T) int by ``max_new_tokens`` tokens; returns (B, T + new) int64 on the host.

    ``on_token(ids)`` is called with each new column (B,) as it is drawn (for streaming);
    ``should_stop(all_ids)`` may end generation early by returning True.
    """
    _check(temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed)
    ids = backend.as_array(idx.data if isinstance(idx, Tensor) else idx, "cpu", np.int64)   # also CuPy ids
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate needs a non-empty prompt of shape (B, T), got shape {ids.shape}")
    V = model.config.vocab_size
    if ids.min() < 0 or ids.max() >= V:
        raise ValueError(f"prompt token ids must be in [0, {V}), got min {ids.min()} and max {ids.max()}")
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    T_max, device = model.config.block_size, model.device
    xp = backend.xp_for(device)
    cache = None
    try:
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache.length < T_max:
                step_in = ids[:, -1:]                       # one new position
            else:
                step_in = ids[:, -T_max:]                   # (re)fill from the cropped context
                cache = KVCache(model.config, ids.shape[0], device, model.dtype) if use_cache else None
            step_ids = Tensor.wrap(xp.asarray(step_in), device).set_value_bounds(0, V - 1)   # all checked < V
            logits, _ = model(step_ids, cache=cache)
            last = backend.to_numpy(logits.data[:, -1, :])
            nxt = sample_next(last, rng, temperature, top_k, top_p, repetition_penalty, seen=ids)
            ids = np.concatenate([ids, nxt[:, None]], axis=1)
            if on_token is not None:
                on_token(nxt)
            if should_stop is not None and should_stop(ids):
                break
    finally:
        model.train(was_training)
    return ids


class _Continuation:
    """The generated text, decoded token by token (each token once: linear in its length),
    with the stop-string search and streaming.

    Tokenizers with ``decode_bytes`` (byte-level BPE) go through an incremental UTF-8
    decoder, which holds back a character split across tokens until it is complete.
    With a stop string, the last len(stop) - 1 characters are held back too, so that
    nothing is streamed that may turn out to be the start of the stop string.
    """

    def __init__(self, tokenizer, stop: str | None, stream):
        self.tokenizer, self.stop, self.stream = tokenizer, stop or "", stream
        self.utf8 = (codecs.getincrementaldecoder("utf-8")(errors="replace")
                     if hasattr(tokenizer, "decode_bytes") else None)
        self.pieces: list[str] = []      # final text, in order (already streamed)
        self.pending = ""                # decoded, but held back
        self.stopped = False

    def add(self, ids, final: bool = False) -> bool:
        """Append the text of ``ids``; True once the stop string has appeared."""
        if self.stopped:
            return True
        if self.utf8 is not None:
            text = self.utf8.decode(self.tokenizer.decode_bytes(ids), final=final)
        else:
            text = self.tokenizer.decode(ids)
        self.pending += text
        hit = self.pending.find(self.stop) if self.stop else -1
        if hit >= 0:
            self.stopped = True
            self._emit(self.pending[:hit])
            self.pending = ""
        elif final or not self.stop:
            self._emit(self.pending)
            self.pending = ""
        else:                            # keep what may be the start of the stop string
            keep = len(self.stop) - 1
            cut = max(len(self.pending) - keep, 0)
            self._emit(self.pending[:cut])
            self.pending = self.pending[cut:]
        return self.stopped

    def _emit(self, text: str):
        if text:
            self.pieces.append(text)
            if self.stream is not None:
                self.stream(text)

    def text(self) -> str:
        return "".join(self.pieces)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 200, stop: str | None = None,
                  stream=None, **kwargs) -> str:
    """Generate a continuation of ``prompt`` and return it (without the prompt).

    ``stop``: end as soon as this string appears in the continuation (it is cut there).
    ``stream(text)``: called with each new piece of text as it is produced; the pieces
    add up to the returned text. Other keyword arguments go to :func:`generate`.
    """
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens: give at least one character")
    out = _Continuation(tokenizer, stop, stream)
    seen = [len(prompt_ids)]             # ids already handed to `out`

    def should_stop(all_ids):
        new = all_ids[0, seen[0]:].tolist()
        seen[0] += len(new)
        return out.add(new)

    ids = generate(model, np.asarray([prompt_ids]), max_new_tokens, should_stop=should_stop, **kwargs)
    out.add(ids[0, seen[0]:].tolist(), final=True)   # nothing new unless generation was not run
    return out.text()
