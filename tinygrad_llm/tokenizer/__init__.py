"""Tokenizers: character-level and byte-level BPE (tiktoken-compatible).

    from tinygrad_llm.tokenizer import BPETokenizer, load_tokenizer
    tok = BPETokenizer.train(text, vocab_size=4096)
    ids = tok.encode("hello world")
    tok.save("tok.json"); tok = load_tokenizer("tok.json")   # a Hugging Face tokenizer.json

See docs/tokenizer.md.
"""
from pathlib import Path

from .bpe import BPETokenizer
from .char import CharTokenizer
from .io import TokenizerFileError, bytes_to_unicode, read_file
from .patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "TokenizerFileError",
    "bytes_to_unicode",
    "load_tokenizer",
]


def load_tokenizer(path):
    """Load a tokenizer saved by either tokenizer's .save() (any format version), or a
    Hugging Face byte-level BPE ``tokenizer.json``.

    A folder holding vocab.json and merges.txt loads as a GPT-2 style
    BPETokenizer (see BPETokenizer.from_pretrained).
    """
    if Path(path).is_dir():
        return BPETokenizer.from_pretrained(path)
    kind, _ = read_file(path)
    return {"bpe": BPETokenizer, "char": CharTokenizer}[kind].load(path)
