"""A small, readable training loop for the GPT (not a framework).

Per iteration: set the learning rate from the schedule; every ``eval_interval``
iterations estimate train/val loss and save checkpoints; run ``grad_accum_steps``
forward/backward passes on random batches; clip the gradient norm; take an AdamW step.

Resuming (``resume=True``) restores weights, optimizer, RNG and iteration, so the run
continues exactly as if it had never stopped. Evaluation draws its batches from its own
fixed-seed generator, so it neither disturbs the training stream nor varies between evals.
Ctrl-C finishes the current iteration, saves ``latest`` and returns.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import signal
import time
from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_open
from .checkpoint import load_checkpoint, save_checkpoint
from .config import config_from_dict
from .data import get_batch
from .function import no_grad
from .optim import clip_grad_norm_, get_lr

__all__ = ["TrainConfig", "train", "estimate_loss"]


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (nanoGPT's names)."""

    batch_size: int = 12
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    always_save_checkpoint: bool = True
    seed: int = 1337
    peak_flops: float | None = None

    def __post_init__(self):
        for name in ("batch_size", "max_iters", "grad_accum_steps", "eval_interval", "eval_iters", "log_interval"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "max_iters" else 1):
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return config_from_dict(cls, d)


@no_grad()
def estimate_loss(model, data, batch_size: int, eval_iters: int, seed: int) -> dict:
    """Mean loss over ``eval_iters`` batches of each split, from a generator seeded with ``seed``."""
    was_training = model.training
    model.eval()
    out = {}
    for split, ids in (("train", data.train), ("val", data.val)):
        rng = np.random.default_rng(seed)
        losses = [float(model(*get_batch(ids, batch_size, model.config.block_size, model.device, rng=rng))[1].item())
                  for _ in range(eval_iters)]
        out[split] = float(np.mean(losses))
    model.train(was_training)
    return out


class _StopFlag:
    """First Ctrl-C: ask the loop to stop at the end of the iteration. Second: stop now."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        self.prev = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.prev = None
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\ninterrupt: finishing this iteration, saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False


def _write_history(path: Path, rows: list[dict]):
    fields = ["iter", "train_loss", "val_loss", "val_ppl", "lr", "time_s"]
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, rows: list[dict]):
    try:
        import matplotlib  # noqa: PLC0415 (optional dependency: the plot is skipped without it)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return
    its = [r["iter"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, [r["train_loss"] for r in rows], label="train")
    ax.plot(its, [r["val_loss"] for r in rows], label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def train(model, data, cfg: TrainConfig, out_dir, tokenizer=None, resume: bool = False,
          log=print, extra_config: dict | None = None) -> dict:
    """Train ``model`` on ``data`` (``.train``/``.val`` id arrays). Returns a summary dict
    with ``iter``, ``best_val_loss``, ``history`` (eval rows) and ``interrupted``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    T = model.config.block_size
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n <= T:
            raise ValueError(f"the {split} split has {n} tokens; it needs more than block_size={T} "
                             "for even one batch: use more data or a smaller block_size")
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    iter_num, best_val, history = 0, float("inf"), []
    if resume:
        ckpt = load_checkpoint(out_dir / "latest", device=model.device, model=model)
        ckpt.load_optimizer(optimizer)
        st = ckpt.trainer_state
        iter_num, best_val = int(st["iter"]), float(st["best_val_loss"])
        backend.set_rng_state(st["rng"])
        history = list(st.get("history", []))
        log(f"resumed from {ckpt.path} at iteration {iter_num} (best val loss {best_val:.4f})")
    else:
        backend.manual_seed(cfg.seed)
    train_config = dataclasses.asdict(cfg) | (extra_config or {})
    tokens_per_iter = cfg.batch_size * T * cfg.grad_accum_steps
    eval_seed = cfg.seed + 1_000_003

    def state(it):
        return {"iter": it, "best_val_loss": best_val, "rng": backend.get_rng_state(), "history": history}

    def lr_at(it):
        if not cfg.decay_lr:
            return cfg.learning_rate
        return get_lr(it, lr=cfg.learning_rate, min_lr=cfg.min_lr, warmup_iters=cfg.warmup_iters,
                      lr_decay_iters=cfg.lr_decay_iters)

    model.train()
    t_start = time.perf_counter()
    t_last, it_last = t_start, iter_num
    interrupted = False
    with _StopFlag() as flag:
        it = iter_num
        while True:
            lr = lr_at(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                if not (history and history[-1]["iter"] == it):  # (a resumed run already has it)
                    losses = estimate_loss(model, data, cfg.batch_size, cfg.eval_iters, eval_seed)
                    history.append({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                                    "val_ppl": math.exp(min(losses["val"], 50.0)), "lr": lr,
                                    "time_s": round(time.perf_counter() - t_start, 3)})
                    log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                        f"val ppl {math.exp(min(losses['val'], 50.0)):.2f}")
                    _write_history(out_dir / "history.csv", history)
                    _plot(out_dir / "loss.png", history)
                    if losses["val"] < best_val:
                        best_val = losses["val"]
                        if it > 0:
                            save_checkpoint(out_dir, "best", model, optimizer, state(it), train_config, tokenizer)
                    if it > 0 and cfg.always_save_checkpoint:
                        save_checkpoint(out_dir, "latest", model, optimizer, state(it), train_config, tokenizer)
            if it >= cfg.max_iters or flag.stop:
                interrupted = flag.stop and it < cfg.max_iters
                break
            # ---- one optimisation step
            loss_value = 0.0
            for _ in range(cfg.grad_accum_steps):
                x, y = get_batch(data.train, cfg.batch_size, T, model.device)
                _, loss = model(x, y)
                if cfg.grad_accum_steps > 1:
                    loss = loss * (1.0 / cfg.grad_accum_steps)
                loss.backward()
                loss_value += float(loss.item())
            if cfg.grad_clip > 0:
                clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad()   # the next backward writes into the optimizer's flat buffer
            it += 1
            if it % cfg.log_interval == 0:
                now = time.perf_counter()
                dt = (now - t_last) / max(it - it_last, 1)
                t_last, it_last = now, it
                mfu = model.estimate_mfu(tokens_per_iter, dt, peak_flops=cfg.peak_flops)
                log(f"iter {it}: loss {loss_value:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                    f"{tokens_per_iter / dt:,.0f} tok/s, mfu {mfu * 100:.2f}%, "
                    f"eta {_fmt_eta(dt * (cfg.max_iters - it))}")
    just_saved = cfg.always_save_checkpoint and it > 0 and history and history[-1]["iter"] == it
    if not just_saved:
        save_checkpoint(out_dir, "latest", model, optimizer, state(it), train_config, tokenizer)
    if interrupted:
        log(f"stopped at iteration {it}; resume with --resume")
    return {"iter": it, "best_val_loss": best_val, "history": history, "interrupted": interrupted}
