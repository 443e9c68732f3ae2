"""Regex patterns that cut text into chunks before BPE.

BPE never merges across a chunk boundary, so the split pattern decides what a
token can span (for example: never a letter and a digit together).
"""
from __future__ import annotations

import re

import regex

# The split pattern published with GPT-2 (also what Hugging Face's GPT-2 uses).
# tiktoken's "r50k_base" writes it differently (possessive quantifiers) but
# cuts text the same way.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# GPT-2's pattern with every digit a chunk of its own: how Hugging Face's pre-tokenizer
# Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)] cuts text (StarCoder's
# and SmolLM's tokenizers). Digits cuts the text around every digit first, and ByteLevel
# runs GPT-2's pattern on each stretch between them, where a digit ends a run of spaces as
# the end of the text would: so ` ?\p{N}+` becomes `\p{N}`, and `\s+(?!\S)` (spaces that
# give their last one to a following word) becomes `\s+(?![^\s\p{N}])`.
GPT2_DIGITS_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
)

# The split pattern of GPT-4's "cl100k_base" encoding, exactly as tiktoken has it.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# The GPT-4 pattern without its possessive quantifiers, which `regex` runs about
# 20% faster. It splits every text the same way: each possessive part either
# ends its alternative (so the greedy first try is kept anyway) or giving back
# characters cannot help what follows (`[^\r\n\p{L}\p{N}]?` gives back a
# non-letter, before `\p{L}+`; `\s+$` fails after a full run of spaces only if
# a non-space follows it). compile_pattern uses it in place of the original;
# the tokenizer's `pattern` (saved in files, given to tiktoken) stays the original.
_GPT4_PLAIN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_FASTER_TWIN = {GPT4_SPLIT_PATTERN: _GPT4_PLAIN}

# Hugging Face `tokenizers` splits with Oniguruma, where `{n,m}+` is not possessive but
# "then repeat the whole": `\p{N}{1,3}+` would take any run of digits. Without the `+` it
# splits the same as the original here (that part ends its alternative, so the greedy first
# try is kept anyway). Files for `tokenizers` hold the twin; reading one maps it back.
_HF_TWIN = {GPT4_SPLIT_PATTERN: GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")}
_FROM_HF = {v: k for k, v in _HF_TWIN.items()}


def to_hf_pattern(pattern: str) -> str:
    """The split regex to write in a Hugging Face tokenizer.json for ``pattern``."""
    return _HF_TWIN.get(pattern, pattern)


def from_hf_pattern(pattern: str) -> str:
    """Inverse of :func:`to_hf_pattern`."""
    return _FROM_HF.get(pattern, pattern)


PATTERNS = {
    "gpt2": GPT2_SPLIT_PATTERN,
    "gpt4": GPT4_SPLIT_PATTERN,
    "cl100k": GPT4_SPLIT_PATTERN,
}

# The same two patterns for pure-ASCII text, for the standard library's `re`:
# on ASCII, \p{L} is [A-Za-z], \p{N} is [0-9] and `regex`'s \s is
# [\t\n\x0b\x0c\r ] (tests check these classes character by character). `re` splits ASCII text about twice as
# fast as `regex` does, and the split is most of the cost of encoding.
_L, _N, _S = "A-Za-z", "0-9", r"\t\n\x0b\x0c\r "
_ASCII_PATTERNS = {
    GPT2_SPLIT_PATTERN: (
        rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_S}{_L}{_N}]+|[{_S}]+(?![^{_S}])|[{_S}]+"""
    ),
    GPT4_SPLIT_PATTERN: (  # from _GPT4_PLAIN, so Python 3.10's `re` compiles it too
        rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]{{1,3}}| ?[^{_S}{_L}{_N}]+[\r\n]*"""
        rf"""|[{_S}]+$|[{_S}]*[\r\n]|[{_S}]+(?![^{_S}])|[{_S}]"""
    ),
}


def compile_ascii_pattern(pattern: str):
    """A `re` pattern that splits pure-ASCII text exactly as `pattern` does,
    for the built-in patterns (None for any other pattern, or if this
    Python's `re` cannot compile it)."""
    p = _ASCII_PATTERNS.get(pattern)
    if p is None:
        return None
    try:
        return re.compile(p)
    except re.error:
        return None


_NAME_LIKE = regex.compile(r"[A-Za-z0-9_\-]+")


def resolve_pattern(pattern: str) -> str:
    """Return the regex string for a pattern name ("gpt2", "gpt4", "cl100k")
    or check and return a user-given regex string.

    A bare word that is not a known name (e.g. "gpt3") is an error rather than
    a regex that matches that word.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (a name or a regex), got {type(pattern).__name__}")
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if not pattern:
        raise ValueError("pattern is empty; expected one of "
                         f"{sorted(PATTERNS)} or a regex string")
    if _NAME_LIKE.fullmatch(pattern):
        raise ValueError(f"unknown pattern name {pattern!r}; expected one of "
                         f"{sorted(PATTERNS)} or a regex string")
    compile_pattern(pattern)
    return pattern


def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a split pattern with the `regex` package, with a clear error."""
    try:
        return regex.compile(_FASTER_TWIN.get(pattern, pattern))
    except regex.error as e:
        raise ValueError(f"split pattern {pattern!r} is not a valid regex: {e}") from None


# Long texts are split into blocks of about this many characters, so that the
# list of chunks of a 100 MB text is never held at once.
BLOCK_CHARS = 1 << 20
# A cut right after "\n" that follows a non-space and precedes a letter gives
# the same chunks as no cut, for both built-in patterns: no chunk of theirs
# holds "\n" followed by a letter, and the lone "\n" is a chunk either way.
_SAFE_CUT = regex.compile(r"\S\n(?=\p{L})")


def iter_blocks(text: str, pattern: str):
    """Yield pieces of text that split into the same chunks as the whole text.

    Only the built-in patterns are cut; a user pattern gets the text whole.
    """
    n = len(text)
    if n <= BLOCK_CHARS or pattern not in (GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, _GPT4_PLAIN):
        yield text
        return
    start = 0
    while n - start > BLOCK_CHARS:
        m = _SAFE_CUT.search(text, start + BLOCK_CHARS)
        if m is None:
            break
        yield text[start:m.end()]
        start = m.end()
    yield text[start:]
