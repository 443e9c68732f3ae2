"""What the instruction-tuning and DPO loops share: their settings, the batch order, the step."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..optim import clip_grad_norm_
from ..tensor import Tensor

__all__ = ["FinetuneConfig", "batch_indices", "to_device", "optimizer_step"]


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _number(name, v, low, low_open=False):
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if not ok or v < low or (low_open and v == low):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, got {v!r}")


@dataclasses.dataclass
class FinetuneConfig:
    """Settings of a fine-tuning loop: ``epochs`` passes over the training records in shuffled
    batches of ``batch_size``, AdamW at a constant ``lr`` (decay on matrices only, as
    ``GPT.configure_optimizers``), gradients clipped to ``grad_clip`` (0: off)."""

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 1337
    log_interval: int = 10        # steps between progress lines (0: none)

    def __post_init__(self):
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _number("lr", self.lr, 0.0, low_open=True)
        _number("weight_decay", self.weight_decay, 0.0)
        _number("grad_clip", self.grad_clip, 0.0)
        for name in ("log_interval", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None):
    """Index arrays of the batches of one pass over range(n): shuffled by ``rng``, in order without."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def to_device(arrays, device: str):
    """Host int arrays as Tensors on ``device``."""
    return [Tensor(a, device=device) for a in arrays]


def optimizer_step(model, optimizer, grad_clip: float):
    """Clip the trainable parameters' gradient norm, take the step, zero the gradients."""
    if grad_clip > 0:
        clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    optimizer.zero_grad()   # the next backward writes into the optimizer's flat buffer
