"""Tokenizer files: our own format, plus import of GPT-2 and tiktoken files.

Our format is UTF-8 text, one item per line, each line `key value` where the
value is JSON:

    tinygrad_llm-tokenizer 1            <- magic and format version
    kind "bpe"                          <- "bpe" or "char"
    pattern "'s|'t|..."                 <- bpe only
    special_tokens {"<|endoftext|>": 512}   <- bpe only
    ranks 512                           <- table name and row count
    0 [0]                               <- rank, token bytes
    ...
    256 " t"
    sha256 "9f2c..."                    <- hash of every line above

A token is written as a JSON string when its bytes are valid UTF-8, else as a
JSON list of byte values. A char file has a `chars N` table of `id "c"` rows.
Files are written to a temporary file in the same folder, then renamed over
the target, so a reader never sees half a file.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from ..atomic import write_bytes_atomic

MAGIC = "tinygrad_llm-tokenizer"
VERSION = 1
TABLES = {"bpe": "ranks", "char": "chars"}


class TokenizerFileError(ValueError):
    """A tokenizer file is missing, corrupt, or not what was expected."""


# ---------------------------------------------------------------- our format

def _json(value) -> str:
    """JSON on one line; readable non-ASCII, escapes only where UTF-8 can't hold it."""
    s = json.dumps(value, ensure_ascii=False)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        s = json.dumps(value, ensure_ascii=True)
    return s


def token_to_json(b: bytes):
    """Token bytes as a JSON value: text if valid UTF-8, else a list of byte values."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return list(b)


def token_from_json(v) -> bytes:
    """Inverse of token_to_json."""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, list) and all(isinstance(x, int) and 0 <= x < 256 for x in v):
        return bytes(v)
    raise ValueError(f"expected a string or a list of byte values, got {v!r}")


def serialize(kind: str, fields: dict, rows: list) -> str:
    """Build the full file text (with checksum) from header fields and (id, value) rows."""
    lines = [f"{MAGIC} {VERSION}", f"kind {_json(kind)}"]
    lines += [f"{k} {_json(v)}" for k, v in fields.items()]
    lines.append(f"{TABLES[kind]} {len(rows)}")
    lines += [f"{i} {_json(v)}" for i, v in rows]
    body = "\n".join(lines) + "\n"
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return body + f"sha256 {_json(digest)}\n"


def checksum(text: str) -> str:
    """The sha256 hex digest stored on the last line of serialized text."""
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    return json.loads(last[len("sha256 "):])


def write_atomic(path, text: str) -> None:
    """Write text (UTF-8) to path via a temp file in the same folder and os.replace."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save tokenizer to {str(path)!r}: folder {str(folder)!r} does not exist")
    write_bytes_atomic(path, text.encode("utf-8"))


def parse(text: str, where: str = "<text>"):
    """Parse our file text. Returns (kind, fields, rows, sha256).

    Raises TokenizerFileError saying what is wrong and where.
    """
    def fail(msg):
        raise TokenizerFileError(f"{where}: {msg}")

    lines = text.split("\n")
    first = lines[0]
    if not first.startswith(MAGIC):
        fail(f"not a tinygrad_llm tokenizer file (first line is {first[:60]!r}, "
             f"expected {MAGIC!r} and a version)")
    parts = first.split(" ")
    if len(parts) != 2 or parts[0] != MAGIC or not parts[1].isdigit():
        fail(f"bad first line {first[:60]!r}, expected '{MAGIC} {VERSION}'")
    if int(parts[1]) != VERSION:
        fail(f"file format version {parts[1]} is not supported (this code reads version {VERSION})")
    if lines[-1] == "":
        lines.pop()
    if not lines or not lines[-1].startswith("sha256 "):
        fail("corrupt or truncated: the last line should be the sha256 checksum")
    body = "\n".join(lines[:-1]) + "\n"
    try:
        stored = json.loads(lines[-1][len("sha256 "):])
    except json.JSONDecodeError:
        stored = None
    actual = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if stored != actual:
        fail(f"corrupt: checksum mismatch (stored {stored!r}, content hashes to {actual!r}); "
             "the file was changed or damaged")

    kind = None
    fields = {}
    rows = []
    n = len(lines) - 1
    i = 1
    while i < n:
        key, _, value = lines[i].partition(" ")
        if kind is not None and key == TABLES[kind]:
            if not value.isdigit():
                fail(f"line {i + 1}: bad row count {value!r} for table {key!r}")
            count = int(value)
            if i + 1 + count != n:
                fail(f"line {i + 1}: table {key!r} says {count} rows, but {n - i - 1} lines follow")
            for j in range(i + 1, n):
                num, _, value = lines[j].partition(" ")
                try:
                    rows.append((int(num), json.loads(value)))
                except (ValueError, json.JSONDecodeError):
                    fail(f"line {j + 1}: bad row {lines[j][:60]!r}, expected '<id> <json value>'")
            return kind, fields, rows, stored
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            fail(f"line {i + 1}: bad value for {key!r}: {value[:60]!r}")
        if key == "kind":
            if v not in TABLES:
                fail(f"unknown tokenizer kind {v!r}, expected one of {sorted(TABLES)}")
            kind = v
        else:
            fields[key] = v
        i += 1
    fail("no kind line" if kind is None else f"no {TABLES[kind]!r} table")


def read_file(path, expected_kind: str | None = None):
    """Read and check one of our files. Returns (kind, fields, rows, sha256)."""
    path = Path(path)
    if path.is_dir():
        raise TokenizerFileError(f"{str(path)!r} is a folder, expected a tokenizer file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerFileError(f"{str(path)!r}: not a tinygrad_llm tokenizer file "
                                 f"(not UTF-8 text: {e})") from None
    kind, fields, rows, sha = parse(text, repr(str(path)))
    if expected_kind is not None and kind != expected_kind:
        raise TokenizerFileError(f"{str(path)!r} holds a {kind!r} tokenizer, expected {expected_kind!r} "
                                 "(load_tokenizer() loads either kind)")
    return kind, fields, rows, sha


def get_field(fields: dict, key: str, typ, where: str):
    """fields[key], checked to be of type typ."""
    if key not in fields:
        raise TokenizerFileError(f"{where}: missing field {key!r}")
    v = fields[key]
    if not isinstance(v, typ):
        raise TokenizerFileError(f"{where}: field {key!r} should be {typ.__name__}, got {v!r}")
    return v


# ---------------------------------------------------------------- tiktoken

def read_tiktoken_file(path) -> dict:
    """Read a `.tiktoken` rank file (lines of `base64(token) rank`) into {bytes: rank}."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"tiktoken rank file {str(path)!r} does not exist") from None
    ranks = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (ValueError, binascii.Error):
            raise TokenizerFileError(f"{str(path)!r} line {lineno}: expected '<base64 token> <rank>', "
                                     f"got {line[:60]!r}") from None
        if token in ranks:
            raise TokenizerFileError(f"{str(path)!r} line {lineno}: token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise TokenizerFileError(f"{str(path)!r}: empty tiktoken rank file")
    return ranks


def tiktoken_text(ranks: dict) -> str:
    """The `.tiktoken` file text for {bytes: rank}, in rank order."""
    return "".join(f"{base64.b64encode(t).decode('ascii')} {r}\n"
                   for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


# ---------------------------------------------------------------- GPT-2 / Hugging Face

def bytes_to_unicode() -> dict:
    """GPT-2's byte -> character map used in vocab.json and merges.txt.

    Bytes that are printable characters on their own (in Latin-1) map to that
    character; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen...)
    map to chr(256), chr(257), ... in byte order. So space is 'Ġ' (chr(288)).
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_gpt2_files(vocab_path, merges_path):
    """Read Hugging Face GPT-2 style vocab.json + merges.txt.

    Returns (ranks, special_tokens): ranks maps token bytes to the token id of
    vocab.json; entries of vocab.json that are neither a single byte nor made
    by a merge (e.g. <|endoftext|>) become special tokens with their id.
    Rank-based BPE needs ids in merge order, which is checked.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    for p in (vocab_path, merges_path):
        if not p.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file {str(p)!r} does not exist")
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerFileError(f"{str(vocab_path)!r}: not valid JSON ({e})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in vocab.values()):
        raise TokenizerFileError(f"{str(vocab_path)!r}: expected a JSON object of token string -> int id")

    byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(s: str, lineno: int) -> bytes:
        try:
            return bytes(byte_of[c] for c in s)
        except KeyError as e:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: character {e.args[0]!r} in "
                                     f"{s!r} is not in GPT-2's byte-to-unicode map") from None

    ranks = {}
    char_of = bytes_to_unicode()
    for b in range(256):
        c = char_of[b]
        if c not in vocab:
            raise TokenizerFileError(f"{str(vocab_path)!r}: the single-byte token {c!r} (byte {b}) is missing")
        ranks[bytes([b])] = vocab[c]

    made = {char_of[b] for b in range(256)}
    last_id = -1
    lines = merges_path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: expected two tokens "
                                     f"separated by one space, got {line[:60]!r}")
        left, right = parts
        for t in (left, right):
            if t not in vocab:
                raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: token {t!r} is not in vocab.json")
        merged = left + right
        if merged not in vocab:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: merged token {merged!r} "
                                     "is not in vocab.json")
        tid = vocab[merged]
        if tid <= last_id:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: merge {line!r} makes token id "
                                     f"{tid}, not above the id {last_id} of the merge before it; "
                                     "rank-based BPE needs token ids in merge order")
        last_id = tid
        token = to_bytes(merged, lineno)
        if token in ranks:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: merged token {merged!r} "
                                     "is made twice")
        ranks[token] = tid
        made.add(merged)

    specials = {s: i for s, i in vocab.items() if s not in made}
    return ranks, specials
