"""Byte-level BPE tokenizer: rank-based encoding (as tiktoken), training, files.

Encoding a chunk: start from its bytes; while some adjacent pair of parts
joins into bytes that have a rank, merge the pair with the lowest rank (the
leftmost one if several pairs share it). A chunk that is itself a token is
one token at once. Given the same ranks and split pattern this gives the same
ids as tiktoken.

Lone surrogates (which UTF-8 cannot hold) are handled as tiktoken does: the
text goes through UTF-16 with 'surrogatepass' and back with 'replace', so a
valid high+low surrogate pair becomes its character and any other surrogate
becomes U+FFFD. decode(encode(s)) == s for every s without lone surrogates.
"""
from __future__ import annotations

import heapq
from itertools import chain
from pathlib import Path

import regex

from . import io as tio
from .patterns import compile_ascii_pattern, compile_pattern, iter_blocks, resolve_pattern
from .train import count_chunks, train_bpe

# Chunks longer than this many bytes are merged with a heap (n log n) instead
# of the simple scan (n^2, but faster for short chunks).
LONG_CHUNK = 256
# The chunk cache is cleared when it would grow past this many entries.
CACHE_SIZE = 200_000
_NO_RANK = 1 << 62


def fix_surrogates(text: str) -> str:
    """Join surrogate pairs and turn lone surrogates into U+FFFD (as tiktoken does)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class BPETokenizer:
    """Byte-level BPE with a regex pre-split and optional special tokens.

    mergeable_ranks: {token bytes: rank}; the rank is also the token id and the
    merge priority (lower merges first). All 256 single bytes must be present.
    pattern: "gpt2", "gpt4" (= "cl100k") or a regex string.
    special_tokens: {string: id}, ids distinct from the ranks.
    """

    kind = "bpe"

    def __init__(self, mergeable_ranks: dict, pattern: str = "gpt4", special_tokens: dict | None = None,
                 *, cache_size: int = CACHE_SIZE):
        if not isinstance(mergeable_ranks, dict):
            raise TypeError(f"mergeable_ranks must be a dict of bytes -> int, got {type(mergeable_ranks).__name__}")
        ranks = {}
        owner = {}
        for t, r in mergeable_ranks.items():
            if not isinstance(t, (bytes, bytearray)) or not t:
                raise ValueError(f"mergeable_ranks key {t!r} should be non-empty bytes")
            if not _is_int(r) or r < 0:
                raise ValueError(f"rank of token {bytes(t)!r} is {r!r}, expected an int >= 0")
            if r in owner:
                raise ValueError(f"rank {r} is given to two tokens, {owner[r]!r} and {bytes(t)!r}")
            owner[r] = bytes(t)
            ranks[bytes(t)] = r
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"mergeable_ranks lacks {len(missing)} single-byte token(s), e.g. byte {missing[0]}; "
                             "byte-level BPE needs all 256")
        specials = self._check_specials(special_tokens, owner)

        self._pattern = resolve_pattern(pattern)
        self._split = compile_pattern(self._pattern)
        # None for a user pattern: then every text goes through self._split.
        self._split_ascii = compile_ascii_pattern(self._pattern)
        self._ranks = ranks
        # The same ranks keyed by latin-1 strings (byte i <-> chr(i)), for _bpe.
        self._str_ranks = {t.decode("latin-1"): r for t, r in ranks.items()}
        self._specials = specials
        self._decoder = {r: t for t, r in ranks.items()}
        for s, i in specials.items():
            self._decoder[i] = s.encode("utf-8")
        self._special_res = {}
        self._cache = {}
        self._cache_size = cache_size
        self._fingerprint = None
        self.vocab_size = max(self._decoder) + 1

    @staticmethod
    def _check_specials(special_tokens, rank_owner) -> dict:
        if special_tokens is None:
            return {}
        if not isinstance(special_tokens, dict):
            raise TypeError(f"special_tokens must be a dict of str -> int, got {type(special_tokens).__name__}")
        used = {}
        for s, i in special_tokens.items():
            if not isinstance(s, str) or not s:
                raise ValueError(f"special token {s!r} should be a non-empty str")
            if not _is_int(i) or i < 0:
                raise ValueError(f"special token {s!r} has id {i!r}, expected an int >= 0")
            if i in rank_owner:
                raise ValueError(f"special token {s!r} has id {i}, which collides with the BPE token "
                                 f"{rank_owner[i]!r}")
            if i in used:
                raise ValueError(f"special tokens {used[i]!r} and {s!r} share the id {i}")
            used[i] = s
        return dict(special_tokens)

    # ------------------------------------------------------------ properties

    @property
    def mergeable_ranks(self) -> dict:
        """A copy of {token bytes: rank} (for tiktoken.Encoding)."""
        return dict(self._ranks)

    @property
    def pattern(self) -> str:
        """The split regex string."""
        return self._pattern

    @property
    def special_tokens(self) -> dict:
        """A copy of {special token string: id}."""
        return dict(self._specials)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token id."""
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise ValueError(f"unknown token id {token_id!r}; expected one of this tokenizer's "
                             f"ids in 0..{self.vocab_size - 1}") from None

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, bpe_tokens={len(self._ranks)}, "
                f"special_tokens={len(self._specials)})")

    # ------------------------------------------------------------ training

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = "gpt4", special_tokens=None,
              *, progress: bool | None = None) -> "BPETokenizer":
        """Learn a tokenizer of vocab_size tokens from text.

        special_tokens: None, a list of strings (given the last ids), or a dict
        {string: id}. Special token strings are cut out of the text before
        counting. vocab_size counts the 256 bytes and the special tokens.
        progress: True/False, or None for a bar only on a terminal and only
        once training has run for a second.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot train a tokenizer on empty text")
        if isinstance(special_tokens, (str, bytes)):
            raise TypeError(f"special_tokens must be a list or dict of strings, got {special_tokens!r}")
        if special_tokens is None:
            names = []
        else:
            names = list(special_tokens)
            if len(set(names)) != len(names):
                dup = next(s for s in names if names.count(s) > 1)
                raise ValueError(f"special token {dup!r} is listed twice")
            for s in names:
                if not isinstance(s, str) or not s:
                    raise ValueError(f"special token {s!r} should be a non-empty str")
        if not _is_int(vocab_size):
            raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
        need = 256 + len(names)
        if vocab_size < need:
            raise ValueError(f"vocab_size={vocab_size} is too small: it must be at least {need} "
                             f"(256 byte tokens + {len(names)} special token(s))")
        pat = resolve_pattern(pattern)
        n_bpe = vocab_size - len(names)
        if isinstance(special_tokens, dict):
            for s, i in special_tokens.items():
                if _is_int(i) and 0 <= i < n_bpe:
                    raise ValueError(f"special token {s!r} has id {i}, which collides with the BPE token ids "
                                     f"0..{n_bpe - 1}; use ids >= {n_bpe} (or pass a list to number them "
                                     "after the BPE tokens)")

        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = fix_surrogates(text)
        counts = count_chunks(text, compile_pattern(pat), names)
        vocab, _ = train_bpe(counts, n_bpe, progress=progress)
        ranks = {t: i for i, t in enumerate(vocab)}
        if isinstance(special_tokens, dict):
            specials = dict(special_tokens)
        else:
            specials = {s: len(vocab) + k for k, s in enumerate(names)}
        return cls(ranks, pat, specials)

    # ------------------------------------------------------------ encoding

    def _bpe(self, chunk: str) -> list:
        """Token ids of one chunk (rank-based merging)."""
        # Work on latin-1 strings (one char per byte, see _str_ranks): list(s)
        # and joining short strs are cheaper than the same on bytes. An ASCII
        # chunk is its own latin-1 string.
        s = chunk if chunk.isascii() else chunk.encode("utf-8").decode("latin-1")
        get = self._str_ranks.get
        r = get(s)
        if r is not None:  # fast path: the chunk is one token (1 in 7 unique Shakespeare chunks at 4096)
            return [r]
        if len(s) > LONG_CHUNK:
            return self._bpe_long(s.encode("latin-1"))
        big = _NO_RANK
        parts = list(s)
        # pr[i]: rank of parts[i] + parts[i + 1], or big if that is not a token.
        # After a merge only the two pairs beside it change.
        pr = [get(a + b, big) for a, b in zip(s, s[1:])]
        m = min(pr)
        while m != big:
            i = pr.index(m)  # leftmost lowest rank
            parts[i] += parts.pop(i + 1)
            del pr[i]
            if i:
                pr[i - 1] = get(parts[i - 1] + parts[i], big)
            if i < len(pr):
                pr[i] = get(parts[i] + parts[i + 1], big)
            elif not pr:
                break
            m = min(pr)
        return list(map(self._str_ranks.__getitem__, parts))

    def _bpe_long(self, b: bytes) -> list:
        """Same result as the scan in _bpe, in O(n log n): a heap of
        (rank, left start, right start, right end) with stale entries skipped."""
        get = self._ranks.get
        n = len(b)
        end = list(range(1, n + 1))   # end[i]: end of the part starting at i
        prev = list(range(-1, n - 1))  # prev[i]: start of the part before it
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = get(b[i:i + 2])
            if r is not None:
                heap.append((r, i, i + 1, i + 2))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            _, left, mid, right = pop(heap)
            if not alive[left] or end[left] != mid or end[mid] != right:
                continue
            alive[mid] = False
            end[left] = right
            if right < n:
                prev[right] = left
                r = get(b[left:end[right]])
                if r is not None:
                    push(heap, (r, left, right, end[right]))
            p = prev[left]
            if p >= 0:
                r = get(b[p:right])
                if r is not None:
                    push(heap, (r, p, left, right))
        out = []
        i = 0
        while i < n:
            out.append(self._ranks[b[i:end[i]]])
            i = end[i]
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of text, with special token strings treated as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            blocks = iter_blocks(text, self._pattern)
            out = self._encode_block(next(blocks))
            for block in blocks:
                out += self._encode_block(block)
            return out
        except UnicodeEncodeError:  # a lone surrogate reached utf-8 encoding
            return self.encode_ordinary(fix_surrogates(text))

    def _encode_block(self, text: str) -> list[int]:
        # Pure-ASCII text (str.isascii() is O(1)) is split by the faster `re`
        # twin of the pattern; the chunks are the same.
        if self._split_ascii is not None and text.isascii():
            chunks = self._split_ascii.findall(text)
        else:
            chunks = self._split.findall(text)
        cache = self._cache
        missing = set(chunks).difference(cache)
        if missing:
            if len(cache) + len(missing) > self._cache_size:
                cache.clear()
            cache.update(zip(missing, map(self._bpe, missing)))
        try:
            return list(chain.from_iterable(map(cache.__getitem__, chunks)))
        except KeyError:  # the cache was cleared meanwhile (another thread)
            bpe = self._bpe
            return [i for c in chunks for i in (cache.get(c) or bpe(c))]

    def _special_re(self, names) -> regex.Pattern:
        key = frozenset(names)
        r = self._special_res.get(key)
        if r is None:
            alts = sorted(key, key=lambda s: (-len(s), s))
            r = regex.compile("|".join(regex.escape(s) for s in alts))
            self._special_res[key] = r
        return r

    def _allowed(self, allowed_special) -> set:
        if allowed_special == "all":
            return set(self._specials)
        if isinstance(allowed_special, (str, bytes)):
            raise ValueError(f"allowed_special must be 'all' or a collection of special token strings, "
                             f"got {allowed_special!r}")
        allowed = set(allowed_special)
        for s in allowed:
            if s not in self._specials:
                raise ValueError(f"allowed_special names {s!r}, which is not a special token of this "
                                 f"tokenizer (its special tokens: {sorted(self._specials)})")
        return allowed

    def _disallowed(self, disallowed_special, allowed: set) -> set:
        if disallowed_special == "all":
            return set(self._specials) - allowed
        if isinstance(disallowed_special, (str, bytes)):
            raise ValueError(f"disallowed_special must be 'all' or a collection of strings, "
                             f"got {disallowed_special!r}")
        out = set(disallowed_special)
        for s in out:
            if not isinstance(s, str) or not s:
                raise ValueError(f"disallowed_special entry {s!r} should be a non-empty str")
        return out

    def encode(self, text: str, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """Ids of text, with tiktoken's rules for special tokens.

        allowed_special: "all" or a set of special token strings that are
        encoded as their special id where they appear in text.
        disallowed_special: "all" (every special token not allowed) or a set of
        strings; if text contains one, ValueError. Pass () to encode special
        token strings as plain text.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        disallowed = self._disallowed(disallowed_special, allowed)
        if disallowed:
            m = self._special_re(disallowed).search(text)
            if m:
                raise ValueError(
                    f"text contains the special token {m.group()!r} at position {m.start()}, which is "
                    f"disallowed. Pass allowed_special={{{m.group()!r}}} (or 'all') to encode it as a special "
                    "token, or disallowed_special=() to encode it as plain text")
        if not allowed:
            return self.encode_ordinary(text)
        out = []
        pos = 0
        specials = self._specials
        for m in self._special_re(allowed).finditer(text):
            out += self.encode_ordinary(text[pos:m.start()])
            out.append(specials[m.group()])
            pos = m.end()
        out += self.encode_ordinary(text[pos:])
        return out

    def encode_batch(self, texts, allowed_special=frozenset(), disallowed_special="all") -> list[list[int]]:
        """encode() of each string (one shared chunk cache)."""
        return [self.encode(t, allowed_special, disallowed_special) for t in texts]

    def encode_ordinary_batch(self, texts) -> list[list[int]]:
        """encode_ordinary() of each string."""
        return [self.encode_ordinary(t) for t in texts]

    # ------------------------------------------------------------ decoding

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes of ids; ValueError for an unknown id."""
        dec = self._decoder
        try:
            return b"".join(map(dec.__getitem__, ids))
        except (KeyError, TypeError):
            for pos, i in enumerate(ids):
                try:
                    known = i in dec
                except TypeError:
                    known = False
                if not known:
                    raise ValueError(f"unknown token id {i!r} at position {pos}; expected an id in "
                                     f"0..{self.vocab_size - 1} known to this tokenizer") from None
            raise

    def decode(self, ids) -> str:
        """The text of ids; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_batch(self, batch) -> list[str]:
        """decode() of each sequence."""
        return [self.decode(ids) for ids in batch]

    # ------------------------------------------------------------ files

    def _text(self) -> str:
        fields = {"pattern": self._pattern,
                  "special_tokens": dict(sorted(self._specials.items(), key=lambda kv: kv[1]))}
        rows = [(r, tio.token_to_json(t)) for t, r in sorted(self._ranks.items(), key=lambda kv: kv[1])]
        return tio.serialize("bpe", fields, rows)

    def save(self, path) -> None:
        """Save as a Hugging Face ``tokenizer.json`` (atomically): ``tokenizers.Tokenizer.from_file``
        loads it and encodes to the same ids; :meth:`load` reads it back exactly."""
        tio.write_atomic(path, tio.hf_json_text(self._ranks, self._pattern, self._specials))

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        """Load a file written by save() (or by an older version, or a Hugging Face byte-level
        BPE tokenizer.json); clear error if it is corrupt or of another kind."""
        _, contents = tio.read_file(path, expected_kind="bpe")
        try:
            return cls(**contents)
        except (ValueError, TypeError) as e:
            raise tio.TokenizerFileError(f"{str(path)!r}: {e}") from None

    def fingerprint(self) -> str:
        """Short stable identity: the first 16 hex digits of the saved file's sha256."""
        if self._fingerprint is None:
            self._fingerprint = "bpe-" + tio.checksum(self._text())[:16]
        return self._fingerprint

    @classmethod
    def from_tiktoken_file(cls, path, pattern: str = "gpt4", special_tokens: dict | None = None) -> "BPETokenizer":
        """Load a `.tiktoken` rank file; the pattern and special tokens are not in
        such files, so give them (e.g. "gpt4" and {"<|endoftext|>": 100257})."""
        return cls(tio.read_tiktoken_file(path), pattern, special_tokens)

    def save_tiktoken(self, path) -> None:
        """Write the ranks as a `.tiktoken` file (pattern and special tokens are not stored)."""
        tio.write_atomic(path, tio.tiktoken_text(self._ranks))

    @classmethod
    def from_gpt2_files(cls, vocab_json, merges_txt, pattern: str = "gpt2") -> "BPETokenizer":
        """Load Hugging Face GPT-2 style vocab.json + merges.txt (ids kept; entries
        not made by merges, like <|endoftext|> = 50256, become special tokens)."""
        ranks, specials = tio.read_gpt2_files(vocab_json, merges_txt)
        return cls(ranks, pattern, specials)

    @classmethod
    def from_pretrained(cls, directory, pattern: str = "gpt2") -> "BPETokenizer":
        """Load from a folder holding vocab.json and merges.txt (e.g. Hugging Face's gpt2)."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"{str(d)!r} is not a folder; expected one holding vocab.json and merges.txt")
        for name in ("vocab.json", "merges.txt"):
            if not (d / name).is_file():
                raise FileNotFoundError(f"no {name} in {str(d)!r}; expected vocab.json and merges.txt "
                                        "(the GPT-2 tokenizer files)")
        return cls.from_gpt2_files(d / "vocab.json", d / "merges.txt", pattern)

    def to_tiktoken(self, name: str = "tinygrad_llm"):
        """A tiktoken.Encoding with the same ranks, pattern and special tokens (needs tiktoken)."""
        try:
            import tiktoken  # noqa: PLC0415 (optional dependency, only for this conversion)
        except ImportError:
            raise ImportError("to_tiktoken() needs the tiktoken package (pip install tiktoken)") from None
        return tiktoken.Encoding(name, pat_str=self._pattern, mergeable_ranks=self.mergeable_ranks,
                                 special_tokens=self.special_tokens)
