"""Tokenizers: character-level and byte-level BPE (tiktoken-compatible).

    from tinygrad_llm.tokenizer import BPETokenizer, load_tokenizer
    tok = BPETokenizer.train(text, vocab_size=4096)
    ids = tok.encode("hello world")
    tok.save("tok.json"); tok = load_tokenizer("tok.json")   # a Hugging Face tokenizer.json

See docs/tokenizer.md.
"""
from .bpe import BPETokenizer
from .char import CharTokenizer
from .io import TokenizerFileError, bytes_to_unicode, load_tokenizer
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
