"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr`` (nanoGPT's)."""
from __future__ import annotations

import math

__all__ = ["get_lr", "CosineWithWarmup"]


def get_lr(it: int, *, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """The learning rate at iteration ``it`` (0-based), as in nanoGPT's train.py::

        it <  warmup_iters:                    lr * (it + 1) / (warmup_iters + 1)
        warmup_iters <= it <= lr_decay_iters:  min_lr + (lr - min_lr) * (1 + cos(pi * r)) / 2,
                                               r = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        it >  lr_decay_iters:                  min_lr

    When ``lr_decay_iters == warmup_iters`` there is no decay phase: ``min_lr`` from then on.
    """
    if it < 0:
        raise ValueError(f"iteration must be >= 0, got {it}")
    if not lr >= 0 or not min_lr >= 0:
        raise ValueError(f"lr and min_lr must be >= 0, got lr={lr!r}, min_lr={min_lr!r}")
    if warmup_iters < 0 or lr_decay_iters < warmup_iters:
        raise ValueError(f"need 0 <= warmup_iters <= lr_decay_iters, got warmup_iters={warmup_iters}, "
                         f"lr_decay_iters={lr_decay_iters}")
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


class CosineWithWarmup:
    """Sets every group's lr from :func:`get_lr` at ``.step(it)``, proportionally to its base lr.

    Each group's base lr is its ``lr`` when the scheduler is built (kept in the group as
    ``"initial_lr"``, as PyTorch does). A group with base lr ``b`` gets
    ``get_lr(it, lr=b, min_lr=b * min_lr_ratio, ...)``. Give either ``min_lr_ratio`` or
    ``min_lr`` (absolute, for a group whose base lr is the optimizer's default ``lr``).
    """

    def __init__(self, optimizer, *, warmup_iters: int, lr_decay_iters: int,
                 min_lr: float | None = None, min_lr_ratio: float | None = None):
        if (min_lr is None) == (min_lr_ratio is None):
            raise ValueError("give exactly one of min_lr and min_lr_ratio")
        if min_lr is not None:
            base = optimizer.defaults["lr"]
            if base <= 0:
                raise ValueError("min_lr needs the optimizer's default lr > 0; give min_lr_ratio instead")
            min_lr_ratio = min_lr / base
        if not min_lr_ratio >= 0:
            raise ValueError(f"min_lr_ratio must be >= 0, got {min_lr_ratio!r}")
        get_lr(0, lr=1.0, min_lr=min_lr_ratio, warmup_iters=warmup_iters, lr_decay_iters=lr_decay_iters)
        self.optimizer = optimizer
        self.warmup_iters, self.lr_decay_iters, self.min_lr_ratio = warmup_iters, lr_decay_iters, min_lr_ratio
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_it = None

    def lr_at(self, it: int) -> list:
        """Every group's lr at iteration ``it`` (without setting it)."""
        return [get_lr(it, lr=b, min_lr=b * self.min_lr_ratio, warmup_iters=self.warmup_iters,
                       lr_decay_iters=self.lr_decay_iters) for b in self.base_lrs]

    def step(self, it: int) -> float:
        """Set each group's lr for iteration ``it``; return group 0's."""
        lrs = self.lr_at(it)
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self.last_it = it
        return lrs[0]

    def get_last_lr(self) -> list:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_it": self.last_it, "warmup_iters": self.warmup_iters,
                "lr_decay_iters": self.lr_decay_iters, "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, state: dict):
        self.base_lrs = list(state["base_lrs"])
        self.warmup_iters, self.lr_decay_iters = state["warmup_iters"], state["lr_decay_iters"]
        self.min_lr_ratio, self.last_it = state["min_lr_ratio"], state["last_it"]
