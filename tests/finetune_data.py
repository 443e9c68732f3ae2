"""Generated instruction data and a small tokenizer for the fine-tuning tests (no network).

Words are 3 letters from LETTERS, which the template text never has next to each other,
so a word is always one token per letter; the template's lines (preamble, section headers,
instructions) are each learned as a single BPE token by splitting on lines, so a prompt is
about 14 tokens and a tiny model trains on CPU in seconds.
"""
import itertools
import warnings

import numpy as np

from tinygrad_llm.finetune import END_OF_TEXT
from tinygrad_llm.finetune.data import PROMPT_NO_INPUT, PROMPT_WITH_INPUT
from tinygrad_llm.tokenizer import BPETokenizer

LETTERS = "CDEFGHJK"
TASKS = {"Reverse the word.": lambda w: w[::-1], "Repeat the word twice.": lambda w: f"{w} {w}"}
LINE_PATTERN = r"[^\n]+|\n+"


def words(seed=0):
    """All 3-letter words over LETTERS (512), in a seeded random order."""
    out = ["".join(p) for p in itertools.product(LETTERS, repeat=3)]
    np.random.default_rng(seed).shuffle(out)
    return out


def records(word_list, tasks=TASKS):
    return [{"instruction": t, "input": w, "output": f(w)} for w in word_list for t, f in tasks.items()]


def pairs(word_list):
    """Preference pairs for "Reverse the word.": chosen = the reversal, rejected = a refusal."""
    return [{"instruction": "Reverse the word.", "input": w, "chosen": w[::-1], "rejected": "I cannot."} for w in word_list]


def template_tokenizer(instructions=tuple(TASKS), eos: bool = True) -> BPETokenizer:
    """A byte-level BPE that has each template line (and each instruction) as one token."""
    text = "".join(PROMPT_WITH_INPUT.format(instruction=i, input="") + PROMPT_NO_INPUT.format(instruction=i)
                   for i in instructions) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # it runs out of pairs to merge before 1000 tokens: all lines are whole
        tok = BPETokenizer.train(text, 1000, pattern=LINE_PATTERN)
    if eos:
        tok = BPETokenizer(tok.mergeable_ranks, tok.pattern, {END_OF_TEXT: tok.vocab_size})
    return tok
