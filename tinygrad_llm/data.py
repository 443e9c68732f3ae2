"""The data pipeline: a text file -> token ids (tokenized once, cached) -> random (x, y) batches.

    ds = load_text_dataset("input.txt", tokenizer="char")      # or path=None: Tiny Shakespeare
    x, y = ds.get_batch("train", batch_size=12, block_size=64, device="cpu")
    # x, y: int64 Tensors of shape (B, T); y[b, t] == x[b, t + 1] (the next token)

Steps:
  1. read the file's bytes; the text is their strict UTF-8 decoding (no newline translation);
  2. tokenize the whole text once; the ids are cached under :func:`cache_dir` keyed by
     sha256(file bytes) + tokenizer.fingerprint() + FORMAT_VERSION, and every cache file is
     checked (header and payload sha256) before use: a bad one is rebuilt, never trusted;
  3. split the ids like nanoGPT: ``n_train = int(n * (1 - val_fraction))``, train = ids[:n_train],
     val = ids[n_train:];
  4. :func:`get_batch` draws B start offsets from the package RNG (``manual_seed`` makes batches
     reproducible; a checkpoint's RNG state makes a resumed run continue the same stream) and
     gathers all rows with one fancy index, then moves them to the device. In data-parallel
     training each process takes its slice of one batch drawn by all (``rank``, ``world_size``).

With no path, :func:`shakespeare_path` finds Tiny Shakespeare in the cache, or downloads it and
checks its sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import warnings
from pathlib import Path

import numpy as np

from . import backend
from .atomic import write_bytes_atomic
from .tensor import Tensor
from .tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

__all__ = [
    "DataError", "DownloadError", "SHAKESPEARE_URL", "SHAKESPEARE_SHA256", "CACHE_ENV",
    "cache_dir", "shakespeare_path", "read_text", "build_tokenizer", "TOKENIZER_KINDS",
    "TextDataset", "load_text_dataset", "split_ids", "get_batch",
]

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILENAME = "tinyshakespeare.txt"
CACHE_ENV = "TINYGRAD_LLM_CACHE"
DOWNLOAD_TIMEOUT = 30.0           # seconds
FORMAT_VERSION = 1                # of the cached-ids file; bump to invalidate every cache
TOKENIZER_KINDS = ("char", "bpe")
DEFAULT_BPE_VOCAB = 512
_IDS_MAGIC = "tinygrad_llm-ids"


class DataError(ValueError):
    """The data cannot be used: empty, not UTF-8, too short, unknown tokenizer kind..."""


class DownloadError(RuntimeError):
    """Tiny Shakespeare could not be downloaded, or what arrived has the wrong sha256."""


# ----------------------------------------------------------------------------- files

def cache_dir() -> Path:
    """``$TINYGRAD_LLM_CACHE`` if set, else ``~/.cache/tinygrad_llm`` (not created here).
    DataError if that path exists but is not a folder."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "tinygrad_llm"
    if path.exists() and not path.is_dir():
        raise DataError(f"the cache folder {str(path)!r} is a file" + (f" (set by ${CACHE_ENV})" if env else "")
                        + f"; point ${CACHE_ENV} at a folder, or move the file away")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def _fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT) -> bytes:
    """The bytes at url (replaced by tests, which never touch the network)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def shakespeare_path(download: bool = True) -> Path:
    """Path of the cached Tiny Shakespeare, downloading it (and checking its sha256) if needed.

    A cached copy with the wrong sha256 is re-downloaded (with a warning), or reported when
    download=False. Offline with no good copy: DownloadError saying how to pass ``--data``.
    """
    path = cache_dir() / SHAKESPEARE_FILENAME
    how = (f"Pass a text file with --data FILE, or put a copy of Tiny Shakespeare (sha256 "
           f"{SHAKESPEARE_SHA256}) at {str(path)!r} (the cache folder is set by ${CACHE_ENV}).")
    if path.is_file():
        got = _sha256(path.read_bytes())
        if got == SHAKESPEARE_SHA256:
            return path
        msg = (f"cached Tiny Shakespeare {str(path)!r} has sha256 {got}, expected {SHAKESPEARE_SHA256}")
        if not download:
            raise DownloadError(f"{msg}. Delete it, or: {how}")
        warnings.warn(f"{msg}; downloading it again", stacklevel=2)
    elif not download:
        raise DownloadError(f"Tiny Shakespeare is not in the cache and download=False. {how}")

    try:
        data = _fetch(SHAKESPEARE_URL)
    except OSError as e:  # URLError, HTTPError, timeouts, connection resets are all OSErrors
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download Tiny Shakespeare from {SHAKESPEARE_URL} "
                            f"({reason}); are you offline? {how}") from None
    got = _sha256(data)
    if got != SHAKESPEARE_SHA256:  # checked before anything is written or renamed
        raise DownloadError(f"downloaded Tiny Shakespeare from {SHAKESPEARE_URL} has sha256 {got}, "
                            f"expected {SHAKESPEARE_SHA256}; nothing was saved. {how}")
    _write_atomic(path, data)
    return path


def read_text(path) -> tuple[str, str]:
    """(text, sha256 of the file's bytes) of a UTF-8 text file; clear errors for bad files."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data path {str(path)!r} is a folder, expected a UTF-8 text file")
    if path.exists() and not path.is_file():   # a device (/dev/zero never ends), a pipe, a socket
        raise DataError(f"data path {str(path)!r} is not a regular file, expected a UTF-8 text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {str(path)!r} does not exist; expected a UTF-8 text file "
                                "(or leave out --data to use Tiny Shakespeare)") from None
    if not data:
        raise DataError(f"data file {str(path)!r} is empty (0 bytes); expected UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {str(path)!r} is not valid UTF-8: byte {data[e.start]:#04x} at "
                        f"byte offset {e.start} ({e.reason}); expected UTF-8 text") from None
    return text, _sha256(data)


# ----------------------------------------------------------------------------- tokenizers

def build_tokenizer(kind: str, text: str, vocab_size: int | None = None):
    """A tokenizer trained on text: "char" (its sorted characters) or "bpe" (default 512 tokens)."""
    if kind not in TOKENIZER_KINDS:
        raise DataError(f"unknown tokenizer kind {kind!r}: expected one of {', '.join(TOKENIZER_KINDS)}")
    if kind == "char":
        if vocab_size is not None:
            raise DataError(f"vocab_size={vocab_size} was given for the char tokenizer, whose vocabulary "
                            "is the set of characters of the text; vocab_size applies to 'bpe' only")
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size)


def _trained_tokenizer(kind: str, text: str, text_sha: str, vocab_size, cache: bool):
    """build_tokenizer, with trained BPE tokenizers kept in the cache (training is the slow part)."""
    if kind != "bpe" or not cache:
        return build_tokenizer(kind, text, vocab_size)
    n = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
    path = cache_dir() / "tokenizers" / f"bpe{n}-{text_sha[:32]}.tok"
    if path.is_file():
        try:
            return load_tokenizer(path)
        except (ValueError, OSError) as e:
            warnings.warn(f"ignoring unreadable cached tokenizer {str(path)!r} ({e}); training it again",
                          stacklevel=3)
    tok = build_tokenizer(kind, text, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


# ----------------------------------------------------------------------------- cached ids

def _ids_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65536, as GPT-2's 50257), else uint32; little-endian."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _ids_cache_path(text_sha: str, fingerprint: str) -> Path:
    key = _sha256(f"{FORMAT_VERSION}\n{text_sha}\n{fingerprint}".encode())
    return cache_dir() / "ids" / f"ids-{key[:32]}.bin"


def _save_ids(path: Path, ids: np.ndarray, text_sha: str, fingerprint: str, vocab_size: int) -> None:
    """One file: a JSON header line (what it holds, payload sha256), then the raw ids."""
    payload = ids.tobytes()
    header = {"magic": _IDS_MAGIC, "version": FORMAT_VERSION, "text_sha256": text_sha,
              "tokenizer": fingerprint, "vocab_size": vocab_size, "dtype": ids.dtype.str,
              "count": int(ids.size), "sha256": _sha256(payload)}
    _write_atomic(path, json.dumps(header).encode() + b"\n" + payload)


def _load_ids(path: Path, text_sha: str, fingerprint: str, vocab_size: int) -> np.ndarray:
    """The ids saved by _save_ids; ValueError saying what is wrong if anything does not check."""
    data = path.read_bytes()
    line, sep, payload = data.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise ValueError("header is not JSON") from None
    expected = {"magic": _IDS_MAGIC, "version": FORMAT_VERSION, "text_sha256": text_sha,
                "tokenizer": fingerprint, "vocab_size": vocab_size,
                "dtype": _ids_dtype(vocab_size).str}
    for k, v in expected.items():
        if not isinstance(header, dict) or header.get(k) != v:
            got = header.get(k) if isinstance(header, dict) else header
            raise ValueError(f"header field {k!r} is {got!r}, expected {v!r}")
    dtype = np.dtype(header["dtype"])
    if not sep or len(payload) != header.get("count", -1) * dtype.itemsize:
        raise ValueError(f"payload has {len(payload)} bytes, header says {header.get('count')} ids")
    if _sha256(payload) != header.get("sha256"):
        raise ValueError("payload sha256 does not match the header (file damaged)")
    return np.frombuffer(payload, dtype=dtype)   # read-only: the ids are never modified


def _encode(text: str, tokenizer, where: str) -> np.ndarray:
    try:
        ids = tokenizer.encode(text)
    except ValueError as e:
        raise DataError(f"data file {where} cannot be encoded with {tokenizer!r}: {e}") from None
    dtype = _ids_dtype(tokenizer.vocab_size)
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= tokenizer.vocab_size):
        raise DataError(f"{tokenizer!r} produced ids outside 0..{tokenizer.vocab_size - 1} for {where}")
    return arr.astype(dtype)


def split_ids(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) views, as nanoGPT: ``n_train = int(n * (1 - val_fraction))``."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


# ----------------------------------------------------------------------------- dataset

class TextDataset:
    """Token ids of one text file split into ``train`` and ``val`` (1-D uint16/uint32 arrays).

    Attributes: train, val, tokenizer, vocab_size, sha256 (of the file's bytes), path,
    cache_path (None when caching is off), from_cache (whether the ids came from the cache).
    """

    def __init__(self, train, val, tokenizer, sha256: str, path, cache_path=None, from_cache=False):
        self.train, self.val, self.tokenizer = train, val, tokenizer
        self.sha256, self.path = sha256, Path(path)
        self.cache_path, self.from_cache = cache_path, from_cache

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def split(self, name: str) -> np.ndarray:
        """``"train"`` or ``"val"`` ids."""
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {name!r}")
        return self.train if name == "train" else self.val

    def get_batch(self, split: str, batch_size: int, block_size: int, device="cpu", rng=None, *,
                  rank: int = 0, world_size: int = 1):
        """A random (x, y) batch from one split; see :func:`get_batch`."""
        return get_batch(self.split(split), batch_size, block_size, device=device, rng=rng, rank=rank,
                         world_size=world_size)

    def __repr__(self) -> str:
        return (f"TextDataset({str(self.path)!r}, {self.tokenizer!r}, train={len(self.train)}, "
                f"val={len(self.val)} tokens)")


def load_text_dataset(path=None, tokenizer="char", *, vocab_size: int | None = None,
                      val_fraction: float = 0.1, block_size: int | None = None,
                      cache: bool = True, download: bool = True) -> TextDataset:
    """Load, tokenize (once, cached), and split a UTF-8 text file.

    path: the text file (``--data``); None means Tiny Shakespeare via :func:`shakespeare_path`.
    tokenizer: a tokenizer object, or a kind ("char", "bpe") to train on this text
        (a trained BPE is cached too, keyed by the text's sha256 and vocab_size).
    block_size: if given, both splits must hold at least block_size + 1 tokens (one (x, y) pair);
        in any case each split needs at least 2.
    cache: read and write the cached ids (and trained BPE) under :func:`cache_dir`.
    """
    if path is None:
        path = shakespeare_path(download=download)
    path = Path(path)
    text, text_sha = read_text(path)
    where = repr(str(path))
    if isinstance(tokenizer, str):
        tokenizer = _trained_tokenizer(tokenizer, text, text_sha, vocab_size, cache)
    elif vocab_size is not None:
        raise DataError("vocab_size is only used when tokenizer is a kind to train ('char'/'bpe'), "
                        f"but a {type(tokenizer).__name__} was passed")

    ids = None
    cache_path = None
    if cache:
        fp = tokenizer.fingerprint()
        cache_path = _ids_cache_path(text_sha, fp)
        if cache_path.is_file():
            try:
                ids = _load_ids(cache_path, text_sha, fp, tokenizer.vocab_size)
            except (ValueError, OSError) as e:
                warnings.warn(f"ignoring corrupt token cache {str(cache_path)!r} ({e}); rebuilding it",
                              stacklevel=2)
    from_cache = ids is not None
    if ids is None:
        ids = _encode(text, tokenizer, where)
        if cache:
            _save_ids(cache_path, ids, text_sha, fp, tokenizer.vocab_size)

    train, val = split_ids(ids, val_fraction)
    need = 2 if block_size is None else block_size + 1
    for name, part in (("train", train), ("validation", val)):
        if len(part) < need:
            raise DataError(
                f"data file {where} is too short: {len(ids)} tokens in all, {len(part)} in the {name} "
                f"split ({val_fraction:g} of it is validation), fewer than the {need} needed for one "
                f"(x, y) pair" + ("" if block_size is None else f" with block_size={block_size}") +
                "; use a longer text" + ("" if block_size is None else " or a smaller block size"))
    return TextDataset(train, val, tokenizer, text_sha, path, cache_path, from_cache)


# ----------------------------------------------------------------------------- batches

def get_batch(ids, batch_size: int, block_size: int, device="cpu", rng=None, *, rank: int = 0,
              world_size: int = 1):
    """Random (x, y) int64 Tensors of shape (batch_size, block_size) on device.

    Row b is ``ids[o_b : o_b + T]`` for x and ``ids[o_b + 1 : o_b + T + 1]`` for y, with start
    offsets o_b drawn uniformly from [0, len(ids) - T) by rng (default: the package's CPU
    generator, so ``manual_seed`` makes batches reproducible). One gather on the host builds all
    rows: ``ids[offsets[:, None] + arange(T + 1)]``; then one copy to the device. The rows' min and
    max, taken there on the host, go with x and y (``Tensor.set_value_bounds``), so the model's
    range checks of ids and targets need not read anything back from a GPU.

    Data parallelism: with ``world_size`` > 1, the generator draws the offsets of the whole
    batch of ``batch_size * world_size`` rows (every process draws the same, from generators
    in the same state), and process ``rank`` gets rows ``[rank * batch_size, (rank + 1) *
    batch_size)`` of it: together the processes hold the batch one process would get with
    ``batch_size * world_size``, and their generators stay in step.
    """
    for name, v in (("batch_size", batch_size), ("block_size", block_size), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if len(ids) <= block_size:
        raise ValueError(f"data too short for one block: {len(ids)} tokens, need more than "
                         f"block_size={block_size} (block_size + 1 for x and its shifted target y)")
    device = backend.canonical_device(device)
    if rng is None:
        rng = backend.rng("cpu")
    offsets = rng.integers(0, len(ids) - block_size, size=batch_size * world_size)
    if world_size > 1:
        offsets = offsets[rank * batch_size:(rank + 1) * batch_size]
    rows = ids[offsets[:, None] + np.arange(block_size + 1)]          # (B, T+1), still uint16
    lo, hi = int(rows.min()), int(rows.max())                         # on the host, once
    xp = backend.xp_for(device)
    if xp is not np:
        rows = xp.asarray(rows)                                       # one host -> device copy
    x = xp.ascontiguousarray(rows[:, :-1], dtype=xp.int64)
    y = xp.ascontiguousarray(rows[:, 1:], dtype=xp.int64)
    return Tensor.wrap(x, device).set_value_bounds(lo, hi), Tensor.wrap(y, device).set_value_bounds(lo, hi)
