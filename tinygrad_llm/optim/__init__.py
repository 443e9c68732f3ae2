"""Optimizers (``AdamW``, ``SGD``), gradient clipping and the learning-rate schedule.

    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for it in range(max_iters):
        opt.zero_grad()                    # backward then writes into the optimizer's flat buffer
        loss = model(x, y); loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
"""
from ..nn.utils import clip_grad_norm_, grad_norm
from .adamw import AdamW
from .lr_scheduler import CosineWithWarmup, get_lr
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "AdamW", "SGD", "clip_grad_norm_", "grad_norm", "get_lr", "CosineWithWarmup"]
