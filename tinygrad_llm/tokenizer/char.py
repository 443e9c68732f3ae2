"""Character-level tokenizer: one token per distinct character of a text."""
from __future__ import annotations

from . import io as tio


class CharTokenizer:
    """Maps each character to an id; the vocabulary is the sorted set of
    characters of the training text (as in nanoGPT's shakespeare_char).

    Any Python character is a token, lone surrogates included, so
    decode(encode(s)) == s for every s made of known characters.
    """

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer needs at least one character")
        seen = {}
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entry {i} is {c!r}, expected a single character")
            if c in seen:
                raise ValueError(f"character {c!r} appears twice in the vocabulary (ids {seen[c]} and {i})")
            seen[c] = i
        self.chars = chars
        self.stoi = seen
        self.itos = dict(enumerate(chars))
        self._fingerprint = None

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The tokenizer whose vocabulary is the sorted distinct characters of text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    train = from_text

    @property
    def vocab_size(self) -> int:
        """Number of tokens (ids are 0 .. vocab_size - 1)."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of text; ValueError for a character not in the vocabulary."""
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            for pos, c in enumerate(text):
                if c not in stoi:
                    raise ValueError(f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in "
                                     f"this tokenizer's vocabulary of {len(stoi)} characters") from None
            raise
        except TypeError:
            raise TypeError(f"text must be a str, got {type(text).__name__}") from None

    def decode(self, ids) -> str:
        """The text of a sequence of ids; ValueError for an unknown id."""
        itos = self.itos
        try:
            return "".join([itos[i] for i in ids])
        except (KeyError, TypeError):
            for pos, i in enumerate(ids):
                if i not in itos:
                    raise ValueError(f"unknown token id {i!r} at position {pos}; expected an int in "
                                     f"0..{len(itos) - 1}") from None
            raise

    def _text(self) -> str:
        return tio.serialize("char", {}, list(enumerate(self.chars)))

    def save(self, path) -> None:
        """Save as a small JSON file (atomically); see :mod:`tinygrad_llm.tokenizer.io`."""
        tio.write_atomic(path, tio.char_json_text(self.chars))

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        """Load a tokenizer written by save() (any format version); clear error if the file is
        corrupt or not a char file."""
        _, contents = tio.read_file(path, expected_kind="char")
        try:
            return cls(contents["chars"])
        except ValueError as e:
            raise tio.TokenizerFileError(f"{str(path)!r}: {e}") from None

    def fingerprint(self) -> str:
        """Short stable identity: the first 16 hex digits of the saved file's sha256."""
        if self._fingerprint is None:
            self._fingerprint = "char-" + tio.checksum(self._text())[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
