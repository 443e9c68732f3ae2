"""Instruction fine-tuning (SFT): next-token cross-entropy on the response tokens, and the
greedy responses used to judge it.

    examples = encode_records(records, tokenizer, eos_id)            # see finetune.data
    history = train_sft(model, examples, val_examples, SFTConfig(epochs=3), pad_id=eos_id)
    generate_responses(model, tokenizer, records[:3], eos_id)        # ["...", ...]

The loss of a batch is ``GPT.forward``'s mean cross-entropy over the targets that are not
IGNORE_INDEX: the response tokens and the end-of-text token (and the prompt's too, when
``mask_prompt`` is off). The validation loss is the same mean over every counted token of
the validation set.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..function import no_grad
from ..generate import generate
from ..nn import functional as F
from .data import IGNORE_INDEX, format_prompt, sft_batch
from .loop import FinetuneConfig, batch_indices, optimizer_step, to_device

__all__ = ["SFTConfig", "train_sft", "evaluate_loss", "generate_responses", "exact_match"]


@dataclasses.dataclass
class SFTConfig(FinetuneConfig):
    """:class:`FinetuneConfig` plus ``mask_prompt``: the loss counts the response tokens only
    (True, the default) or the whole text (False)."""

    mask_prompt: bool = True


@no_grad()
def evaluate_loss(model, examples, batch_size: int, pad_id: int, mask_prompt: bool = True) -> float:
    """Mean cross-entropy per counted token over ``examples`` (eval mode: no dropout)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for idx in batch_indices(len(examples), batch_size):
        x, y = sft_batch([examples[i] for i in idx], pad_id, mask_prompt)
        logits, _ = model(to_device([x], model.device)[0])
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum")
        total += float(loss.item())
        count += int((y != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


def train_sft(model, train_examples, val_examples, cfg: SFTConfig, pad_id: int, log=print, on_epoch=None) -> list:
    """Fine-tune ``model`` in place; returns one row per epoch: {"epoch", "train_loss",
    "val_loss" (None without validation examples), "time_s"}.

    Only parameters that require grad are trained (all of them, or only LoRA adapters).
    ``on_epoch(history)`` is called after each epoch with the rows so far (e.g. to save a
    checkpoint).
    """
    if not train_examples:
        raise ValueError("train_sft: no training examples")
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    history, step, t0 = [], 0, time.perf_counter()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for idx in batch_indices(len(train_examples), cfg.batch_size, rng):
            x, y = to_device(sft_batch([train_examples[i] for i in idx], pad_id, cfg.mask_prompt), model.device)
            _, loss = model(x, y)
            loss.backward()
            optimizer_step(model, optimizer, cfg.grad_clip)
            losses.append(float(loss.item()))
            step += 1
            if cfg.log_interval and step % cfg.log_interval == 0:
                log(f"epoch {epoch} step {step}: loss {losses[-1]:.4f}")
        val = evaluate_loss(model, val_examples, cfg.batch_size, pad_id, cfg.mask_prompt) if val_examples else None
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val,
               "time_s": round(time.perf_counter() - t0, 3)}
        history.append(row)
        log(f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            + (f", val loss {val:.4f}" if val is not None else "") + f" ({row['time_s']:.0f} s)")
        if on_epoch is not None:
            on_epoch(history)
    return history


def _first_eos(row, eos_id):
    hits = np.flatnonzero(row == eos_id)
    return row[:hits[0]] if hits.size else row


@no_grad()
def generate_responses(model, tokenizer, records, eos_id: int, max_new_tokens: int = 64,
                       batch_size: int = 16) -> list[str]:
    """Greedy responses to each record's prompt (its instruction and input in the template),
    each cut at the end-of-text token. Prompts of equal token length run as one batch."""
    prompts = [tokenizer.encode(format_prompt(r["instruction"], r.get("input", ""))) for r in records]
    out = [""] * len(records)
    by_length = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for T, members in by_length.items():
        for k in range(0, len(members), batch_size):
            group = members[k:k + batch_size]
            ids = np.asarray([prompts[i] for i in group], dtype=np.int64)
            done = lambda a, T=T: bool((a[:, T:] == eos_id).any(axis=1).all())   # noqa: E731
            gen = generate(model, ids, max_new_tokens, temperature=0.0, should_stop=done)
            for i, row in zip(group, gen[:, T:]):
                out[i] = tokenizer.decode(_first_eos(row, eos_id).tolist())
    return out


def exact_match(model, tokenizer, records, eos_id: int, field: str = "output", max_new_tokens: int = 64) -> float:
    """Fraction of records whose greedy response equals ``record[field]`` (both stripped of
    surrounding whitespace)."""
    if not records:
        raise ValueError("exact_match: no records")
    responses = generate_responses(model, tokenizer, records, eos_id, max_new_tokens)
    return float(np.mean([r.strip() == rec[field].strip() for r, rec in zip(responses, records)]))
