"""Instruction and preference data: records -> Alpaca prompts -> token ids -> padded batches.

A record is a JSON object in the Alpaca layout: ``instruction``, an optional ``input``
(missing or "" means none), and the response: ``output`` (instruction tuning) or
``chosen`` and ``rejected`` (preference pairs, DPO). A data file is a JSON list of such
objects or JSON Lines (one object per line).

Each record becomes ``prompt`` ids (the Alpaca template filled in, see :func:`format_prompt`)
and ``response`` ids (the response text, then the end-of-text token). A batch of
sequences ``ids = prompt + response`` is padded to its longest one:

    x[b, t] = ids[t]          for t < len(ids) - 1, else pad_id
    y[b, t] = ids[t + 1]      the next token; IGNORE_INDEX on padding, and on the prompt:
                              y[b, t] = IGNORE_INDEX for t < len(prompt) - 1 when masking

so the loss counts exactly the response tokens and the end-of-text token (the first of
them is predicted from the prompt's last position).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import DataError

__all__ = ["IGNORE_INDEX", "END_OF_TEXT", "SFT_FIELDS", "DPO_FIELDS", "format_prompt", "load_records",
           "encode_records", "split_records", "sft_batch", "pair_batch", "check_lengths"]

#: the targets F.cross_entropy skips (its default ignore_index)
IGNORE_INDEX = -100
#: the end-of-text token's text (GPT-2's)
END_OF_TEXT = "<|endoftext|>"
#: the response fields of each kind of record
SFT_FIELDS = ("output",)
DPO_FIELDS = ("chosen", "rejected")

#: Stanford Alpaca's two prompt templates (without and with an input)
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                     "further context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")


def format_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 (the Alpaca field's name)
    """The Alpaca prompt for ``instruction`` (and ``input`` when not empty), ending where the
    response begins (after "### Response:" and a newline)."""
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def _read_json_or_jsonl(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from None
    if not text.strip():
        raise DataError(f"{path} is empty; expected a JSON list of records or JSON Lines")
    if text.lstrip().startswith("["):       # a JSON list (valid JSON starting with "[" is one)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON: {e}") from None
    data = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not valid JSON ({e}); expected one record per line "
                                "(JSON Lines) or a JSON list") from None
    return data


def load_records(path, fields=SFT_FIELDS) -> list[dict]:
    """The records of a JSON or JSONL file, each checked to have a string ``instruction`` and
    the response ``fields``; ``input`` is optional (missing means ""). DataError otherwise,
    naming the first bad record (counted from 0) and what it lacks."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file {str(path)!r}")
    data = _read_json_or_jsonl(path)
    if not data:
        raise DataError(f"{path} holds no records")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i} is a {type(rec).__name__}, expected an object with keys "
                            f"{['instruction', 'input', *fields]}")
        missing = [k for k in ("instruction", *fields) if k not in rec]
        if missing:
            raise DataError(f"{path}: record {i} lacks the key(s) {missing} (it has {sorted(rec)}); "
                            f"each record needs 'instruction', {', '.join(repr(f) for f in fields)} "
                            "and optionally 'input'")
        rec = {"input": "", **rec}
        for k in ("instruction", "input", *fields):
            if not isinstance(rec[k], str):
                raise DataError(f"{path}: record {i}: {k!r} must be a string, got {type(rec[k]).__name__}")
        if not rec["instruction"].strip():
            raise DataError(f"{path}: record {i} has an empty instruction")
        out.append(rec)
    return out


def _encode(tokenizer, text: str, where: str) -> list[int]:
    try:
        return list(tokenizer.encode(text))
    except ValueError as e:      # a character outside a char vocabulary, a special token's text, ...
        raise DataError(f"{where}: {e}") from None


def encode_records(records, tokenizer, eos_id: int, fields=SFT_FIELDS) -> list[dict]:
    """Token ids of each record: ``{"prompt": ids, f: response ids + [eos_id] for each of fields}``."""
    out = []
    for i, rec in enumerate(records):
        ex = {"prompt": _encode(tokenizer, format_prompt(rec["instruction"], rec["input"]), f"record {i}'s prompt")}
        for f in fields:
            ex[f] = _encode(tokenizer, rec[f], f"record {i}'s {f!r}") + [eos_id]
        out.append(ex)
    return out


def check_lengths(examples, block_size: int, fields=SFT_FIELDS):
    """DataError naming the records whose prompt + response (+ end-of-text) does not fit the
    model: a sequence of L tokens needs L - 1 <= block_size (inputs are all but the last)."""
    too_long = []
    for i, ex in enumerate(examples):
        n = max(len(ex["prompt"]) + len(ex[f]) for f in fields)
        if n - 1 > block_size:
            too_long.append((i, n))
    if too_long:
        shown = ", ".join(f"record {i} ({n} tokens)" for i, n in too_long[:5])
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise DataError(f"{shown}{more}: prompt + response + end-of-text is longer than the model's context "
                        f"allows (at most block_size + 1 = {block_size + 1} tokens); shorten them or leave them out")


def split_records(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of a seeded shuffle of range(n); the validation part has
    round(n * val_fraction) records, at least 1 when val_fraction > 0, and train keeps at least 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise DataError(f"{n} record(s) cannot be split into training and validation data with "
                        f"val_fraction={val_fraction}; give more records or val_fraction=0")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def sft_batch(examples, pad_id: int, mask_prompt: bool = True, field: str = "output"):
    """(x, y) int64 arrays (B, T) for a list of encoded examples, T = the longest sequence - 1.

    y is x shifted by one; IGNORE_INDEX on padding and, with ``mask_prompt``, on every
    position whose next token is still part of the prompt.
    """
    seqs = [(ex["prompt"], ex["prompt"] + ex[field]) for ex in examples]
    T = max(len(ids) for _, ids in seqs) - 1
    x = np.full((len(seqs), T), pad_id, dtype=np.int64)
    y = np.full((len(seqs), T), IGNORE_INDEX, dtype=np.int64)
    for b, (prompt, ids) in enumerate(seqs):      # over the batch's sequences, not over tokens
        n = len(ids) - 1
        x[b, :n] = ids[:-1]
        y[b, :n] = ids[1:]
        if mask_prompt:
            y[b, :len(prompt) - 1] = IGNORE_INDEX
    return x, y


def pair_batch(examples, pad_id: int):
    """(x, y) (2B, T) for preference pairs: the B chosen sequences, then the B rejected ones, each
    with the prompt and padding masked in y (sequence log-probabilities count the response only)."""
    chosen = [{"prompt": ex["prompt"], "output": ex["chosen"]} for ex in examples]
    rejected = [{"prompt": ex["prompt"], "output": ex["rejected"]} for ex in examples]
    return sft_batch(chosen + rejected, pad_id, mask_prompt=True)
