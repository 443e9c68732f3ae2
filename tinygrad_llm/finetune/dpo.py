"""DPO (direct preference optimization, Rafailov et al., 2023) on preference pairs.

    reference = frozen_copy(model)                    # the starting policy, frozen
    history = train_dpo(model, reference, pairs, val_pairs, DPOConfig(beta=0.1), pad_id=eos_id)

Per batch of B pairs: the B chosen and B rejected sequences go through the policy as one
batch of 2B (and through the reference under ``no_grad``); :func:`sequence_logprobs` turns
the logits into one log-probability per sequence, summed over its response tokens (prompt
and padding masked), or averaged over them with ``average_logprobs``; ``F.dpo_loss`` (one
graph node, see ops/dpo.py) gives the loss. The policy runs without dropout (eval mode),
as TRL does by default, so that before the first step policy and reference agree exactly.

Logged per epoch, for training (averaged over its batches) and validation: ``loss``,
``chosen_reward`` and ``rejected_reward`` (beta * (log p_policy - log p_reference), DPO's
implicit rewards, averaged over pairs), ``margin`` (chosen minus rejected reward) and
``accuracy`` (the fraction of pairs whose chosen reward is the higher).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..function import no_grad
from ..nn import functional as F
from ..tensor import Tensor
from .data import IGNORE_INDEX, pair_batch
from .loop import FinetuneConfig, batch_indices, optimizer_step, to_device

__all__ = ["DPOConfig", "sequence_logprobs", "train_dpo", "evaluate_dpo", "METRICS"]

METRICS = ("loss", "chosen_reward", "rejected_reward", "margin", "accuracy")


@dataclasses.dataclass
class DPOConfig(FinetuneConfig):
    """:class:`FinetuneConfig` plus ``beta`` (> 0; the strength of the pull back to the
    reference) and ``average_logprobs`` (mean instead of sum over the response tokens)."""

    lr: float = 1e-6
    beta: float = 0.1
    average_logprobs: bool = False

    def __post_init__(self):
        super().__post_init__()
        b = self.beta
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 < b < float("inf"):
            raise ValueError(f"beta must be a finite number > 0, got {b!r}")


def sequence_logprobs(logits: Tensor, targets, average: bool = False) -> Tensor:
    """log p(sequence) per row: logits (B, T, V), targets (B, T) int (host array) with
    IGNORE_INDEX where a position does not count -> (B,).

    The sum over counted positions of log softmax(logits[b, t])[targets[b, t]], i.e. minus
    the per-token cross-entropy (one ``F.cross_entropy`` node, reduction "none", which gives
    0 at ignored positions); ``average`` divides each row by its number of counted positions.
    """
    B, T, V = logits.shape
    targets = np.asarray(targets)
    nll = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none")
    logp = -nll.reshape(B, T).sum(axis=1)
    if average:
        counts = np.maximum((targets != IGNORE_INDEX).sum(axis=1), 1).astype(logits.dtype)
        logp = logp / Tensor(counts, device=logits.device)
    return logp


def _batch_logps(model, x, y, average):
    logits, _ = model(x)
    logp = sequence_logprobs(logits, y, average)
    B = logp.shape[0] // 2
    return logp[:B], logp[B:]


def _metrics(loss, pi_c, pi_r, ref_c, ref_r, beta) -> dict:
    chosen = beta * (pi_c - ref_c)
    rejected = beta * (pi_r - ref_r)
    return {"loss": float(loss), "chosen_reward": float(chosen.mean()), "rejected_reward": float(rejected.mean()),
            "margin": float((chosen - rejected).mean()), "accuracy": float((chosen > rejected).mean())}


def _step_values(policy, reference, examples, cfg, pad_id):
    """Policy (chosen, rejected) Tensors, reference ones as arrays, and the host y."""
    x_host, y_host = pair_batch(examples, pad_id)
    x = to_device([x_host], policy.device)[0]
    with no_grad():
        ref_c, ref_r = _batch_logps(reference, x, y_host, cfg.average_logprobs)
    pi_c, pi_r = _batch_logps(policy, x, y_host, cfg.average_logprobs)
    return pi_c, pi_r, ref_c.detach(), ref_r.detach()


def _mean_rows(rows: list, weights: list) -> dict:
    w = np.asarray(weights, dtype=np.float64)
    return {k: float(np.dot([r[k] for r in rows], w) / w.sum()) for k in METRICS}


@no_grad()
def evaluate_dpo(policy, reference, examples, cfg: "DPOConfig", pad_id: int) -> dict:
    """The metrics of :data:`METRICS` over ``examples`` (pairs weighted equally)."""
    rows, sizes = [], []
    for idx in batch_indices(len(examples), cfg.batch_size):
        batch = [examples[i] for i in idx]
        pi_c, pi_r, ref_c, ref_r = _step_values(policy, reference, batch, cfg, pad_id)
        loss = F.dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=cfg.beta)
        rows.append(_metrics(loss.item(), *(t.numpy() for t in (pi_c, pi_r, ref_c, ref_r)), cfg.beta))
        sizes.append(len(batch))
    return _mean_rows(rows, sizes)


def train_dpo(policy, reference, train_examples, val_examples, cfg: DPOConfig, pad_id: int, log=print,
              on_epoch=None) -> list:
    """DPO-train ``policy`` in place against the frozen ``reference``; returns one row per epoch
    with ``epoch``, ``train`` and ``val`` (dicts of :data:`METRICS`; val is None without
    validation pairs) and ``time_s``. ``on_epoch(history)`` is called after each epoch with the
    rows so far."""
    if not train_examples:
        raise ValueError("train_dpo: no training pairs")
    if any(p.requires_grad for p in reference.parameters()):
        raise ValueError("train_dpo: the reference model must be frozen (see frozen_copy)")
    optimizer = policy.configure_optimizers(cfg.weight_decay, cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history, step, t0 = [], 0, time.perf_counter()
    policy.eval()                     # no dropout: policy and reference agree before the first step
    reference.eval()
    for epoch in range(1, cfg.epochs + 1):
        rows, sizes = [], []
        for idx in batch_indices(len(train_examples), cfg.batch_size, rng):
            batch = [train_examples[i] for i in idx]
            pi_c, pi_r, ref_c, ref_r = _step_values(policy, reference, batch, cfg, pad_id)
            loss = F.dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=cfg.beta)
            loss.backward()
            optimizer_step(policy, optimizer, cfg.grad_clip)
            rows.append(_metrics(loss.item(), *(t.numpy() for t in (pi_c, pi_r, ref_c, ref_r)), cfg.beta))
            sizes.append(len(batch))
            step += 1
            if cfg.log_interval and step % cfg.log_interval == 0:
                r = rows[-1]
                log(f"epoch {epoch} step {step}: loss {r['loss']:.4f}, margin {r['margin']:.4f}, "
                    f"accuracy {r['accuracy']:.2f}")
        train = _mean_rows(rows, sizes)
        val = evaluate_dpo(policy, reference, val_examples, cfg, pad_id) if val_examples else None
        row = {"epoch": epoch, "train": train, "val": val, "time_s": round(time.perf_counter() - t0, 3)}
        history.append(row)
        log(f"epoch {epoch}: " + _describe("train", train) + (("; " + _describe("val", val)) if val else "")
            + f" ({row['time_s']:.0f} s)")
        if on_epoch is not None:
            on_epoch(history)
    return history


def _describe(split: str, m: dict) -> str:
    return (f"{split} loss {m['loss']:.4f}, rewards chosen {m['chosen_reward']:+.4f} / rejected "
            f"{m['rejected_reward']:+.4f}, margin {m['margin']:+.4f}, accuracy {m['accuracy']:.2f}")
