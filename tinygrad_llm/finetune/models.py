"""The model a fine-tuning run trains: the end-of-text token, the frozen reference, what is written.

The model (a GPT or a Llama) and tokenizer come from ``checkpoint.load_for_sampling`` (one of
our checkpoints with its tokenizer, a Hugging Face GPT-2 folder with vocab.json + merges.txt,
or a Llama folder with a byte-level BPE tokenizer.json).

* :func:`with_end_of_text`: the id of ``<|endoftext|>``. GPT-2's tokenizer has it; a byte-level
  BPE of ours without it gets it as a new special token after its last id, and the model
  grows by one vocabulary row when it has no spare one (new rows start at the mean of the
  existing ones, so the new token's logit starts typical). A character tokenizer cannot
  take one: that is an error (it usually cannot spell the template's "#" either).
* :func:`save_finetuned`: a checkpoint ``examples/sample.py`` loads; with LoRA adapters the
  adapters are folded into a plain copy (the model being trained is left as it is).

Each works on any :class:`~tinygrad_llm.model.CausalLM` (the token embedding is named by
the model's ``embedding_name``).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from ..checkpoint import save_checkpoint
from ..function import no_grad
from ..model import CausalLM
from ..nn import lora
from ..tokenizer import BPETokenizer
from .data import END_OF_TEXT

__all__ = ["with_end_of_text", "grow_vocab", "frozen_copy", "save_finetuned"]


def grow_vocab(model: CausalLM, vocab_size: int) -> CausalLM:
    """A copy of ``model`` with ``vocab_size`` rows in its token embedding (and lm_head); the old
    rows are kept, new ones start at the mean of the old ones."""
    cfg = model.config
    if vocab_size < cfg.vocab_size:
        raise ValueError(f"grow_vocab: {vocab_size} is fewer rows than the model's {cfg.vocab_size}")
    new = type(model)(dataclasses.replace(cfg, vocab_size=vocab_size)).to(model.device)
    new.train(model.training)
    state = {}
    for k, v in model.state_dict().items():
        a = v.data
        if k in (model.embedding_name, "lm_head.weight"):
            xp = v.xp
            extra = xp.broadcast_to(a.mean(axis=0, keepdims=True), (vocab_size - a.shape[0], a.shape[1]))
            a = xp.concatenate([a, extra.astype(a.dtype)])
        state[k] = a
    new.load_state_dict(state)
    return new


def with_end_of_text(model: CausalLM, tokenizer):
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


def frozen_copy(model: CausalLM) -> CausalLM:
    """A copy of ``model`` in eval mode with no parameter requiring grad (DPO's reference)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def save_finetuned(out, name: str, model: CausalLM, tokenizer, train_config: dict, trainer_state: dict) -> Path:
    """Write checkpoint ``out/name`` (a plain model: adapters merged into a copy when present)."""
    if lora.lora_layers(model):
        plain = type(model)(model.config).to(model.device)
        with no_grad():
            plain.load_state_dict(lora.merged_state_dict(model))
        model = plain
    return save_checkpoint(out, name, model, trainer_state=trainer_state, train_config=train_config,
                           tokenizer=tokenizer)
