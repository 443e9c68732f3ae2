"""The model and tokenizer a fine-tuning run starts from, the end-of-text token, and what it writes.

* :func:`load_base`: one of our checkpoints (with its tokenizer.json) or a Hugging Face
  GPT-2 folder (config.json + model.safetensors, tokenizer from vocab.json + merges.txt).
* :func:`with_end_of_text`: the id of ``<|endoftext|>``. GPT-2's tokenizer has it; a byte-level
  BPE of ours without it gets it as a new special token after its last id, and the model
  grows by one vocabulary row when it has no spare one (new rows start at the mean of the
  existing ones, so the new token's logit starts typical). A character tokenizer cannot
  take one: that is an error (it usually cannot spell the template's "#" either).
* :func:`save_finetuned`: a checkpoint ``examples/sample.py`` loads; with LoRA adapters the
  adapters are folded into a plain copy (the model being trained is left as it is).
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..function import no_grad
from ..hf import load_gpt2, load_gpt2_tokenizer
from ..model import GPT
from ..nn import lora
from ..tokenizer import BPETokenizer
from .data import END_OF_TEXT

__all__ = ["load_base", "with_end_of_text", "grow_vocab", "frozen_copy", "save_finetuned", "check_out_dir",
           "remove_stale", "resolve_checkpoint", "OUTPUT_NAMES"]

#: what a fine-tuning run writes inside --out
OUTPUT_NAMES = ("best", "latest", "adapter")


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder, or a run folder's ``best/`` (else ``latest/``) checkpoint."""
    path = Path(path)
    if not (path / "config.json").exists():
        for name in ("best", "latest"):
            if (path / name / "config.json").exists():
                return path / name
    return path


def load_base(ckpt=None, hf=None, device: str = "cpu"):
    """(model, tokenizer) from our checkpoint ``ckpt`` or a Hugging Face GPT-2 folder ``hf``.

    Errors (CheckpointError, FileNotFoundError, ValueError) say what is missing or wrong,
    including a tokenizer with more tokens than the model has rows: they do not belong together.
    """
    if (ckpt is None) == (hf is None):
        raise ValueError("give exactly one of ckpt (our checkpoint) and hf (a Hugging Face GPT-2 folder)")
    if hf is not None:
        tokenizer = load_gpt2_tokenizer(hf)               # first: a missing file is found before the weights load
        model, where = load_gpt2(hf, device=device), f"the GPT-2 folder {str(hf)!r}"
    else:
        c = load_checkpoint(resolve_checkpoint(ckpt), device=device)
        if c.tokenizer is None:
            raise CheckpointError(f"{c.path} holds no tokenizer.json, so the data cannot be encoded")
        model, tokenizer, where = c.model, c.tokenizer, f"the checkpoint {str(c.path)!r}"
    V = model.config.vocab_size
    if tokenizer.vocab_size > V:
        raise ValueError(f"the tokenizer of {where} has {tokenizer.vocab_size} tokens but the model's vocabulary "
                         f"has {V}: they do not belong together")
    return model, tokenizer


def grow_vocab(model: GPT, vocab_size: int) -> GPT:
    """A copy of ``model`` with ``vocab_size`` rows in wte (and lm_head); the old rows are kept,
    new ones start at the mean of the old ones."""
    cfg = model.config
    if vocab_size < cfg.vocab_size:
        raise ValueError(f"grow_vocab: {vocab_size} is fewer rows than the model's {cfg.vocab_size}")
    new = GPT(dataclasses.replace(cfg, vocab_size=vocab_size)).to(model.device)
    new.train(model.training)
    state = {}
    for k, v in model.state_dict().items():
        a = v.data
        if k in ("transformer.wte.weight", "lm_head.weight"):
            xp = v.xp
            extra = xp.broadcast_to(a.mean(axis=0, keepdims=True), (vocab_size - a.shape[0], a.shape[1]))
            a = xp.concatenate([a, extra.astype(a.dtype)])
        state[k] = a
    new.load_state_dict(state)
    return new


def with_end_of_text(model: GPT, tokenizer):
    """(model, tokenizer, eos_id): the end-of-text token's id, added when the tokenizer lacks it."""
    specials = getattr(tokenizer, "special_tokens", None)
    if specials is not None and END_OF_TEXT in specials:
        return model, tokenizer, specials[END_OF_TEXT]
    if not isinstance(tokenizer, BPETokenizer):
        raise ValueError(f"the model's {getattr(tokenizer, 'kind', type(tokenizer).__name__)} tokenizer has no "
                         f"end-of-text token {END_OF_TEXT!r} and cannot take one; fine-tune a model with a "
                         "byte-level BPE tokenizer (train_shakespeare.py --tokenizer bpe) or GPT-2 (--hf)")
    eos = tokenizer.vocab_size
    tokenizer = BPETokenizer(tokenizer.mergeable_ranks, tokenizer.pattern, {**specials, END_OF_TEXT: eos})
    if eos >= model.config.vocab_size:
        model = grow_vocab(model, eos + 1)
    return model, tokenizer, eos


def frozen_copy(model: GPT) -> GPT:
    """A copy of ``model`` in eval mode with no parameter requiring grad (DPO's reference)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def check_out_dir(out, overwrite: bool):
    """ValueError unless ``out`` can take a run's outputs: not a file, and holding no earlier
    run's ``best/``, ``latest/`` or ``adapter/`` unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    held = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if held and not overwrite:
        raise ValueError(f"{str(out)!r} already holds a run ({', '.join(n + '/' for n in held)}); "
                         "choose another --out, or pass --overwrite to replace it")


def remove_stale(out, written):
    """After a run with overwrite: delete what an earlier run left in ``out`` that this one did
    not write (an old ``best/`` would otherwise be what sample.py picks)."""
    for n in OUTPUT_NAMES:
        if n not in written and (Path(out) / n).exists():
            shutil.rmtree(Path(out) / n)


def save_finetuned(out, name: str, model: GPT, tokenizer, train_config: dict, trainer_state: dict) -> Path:
    """Write checkpoint ``out/name`` (a plain GPT: adapters merged into a copy when present)."""
    if lora.lora_layers(model):
        plain = GPT(model.config).to(model.device)
        with no_grad():
            plain.load_state_dict(lora.merged_state_dict(model))
        model = plain
    return save_checkpoint(out, name, model, trainer_state=trainer_state, train_config=train_config,
                           tokenizer=tokenizer)
