"""Tokenizer files: JSON (Hugging Face `tokenizers` for BPE), the older text format, and
import of GPT-2 and tiktoken files.

BPE tokenizers are saved as a Hugging Face ``tokenizer.json``: ``tokenizers.Tokenizer.from_file``
loads it and encodes every text to the same ids as :class:`BPETokenizer` (a byte-level BPE
model with the merges that rank-based encoding implies, ``ignore_merges`` for tiktoken's
whole-chunk rule, a ``Split`` pre-tokenizer with our pattern, then ``ByteLevel``).
Character tokenizers are saved as a small JSON object of our own:

    {"tinygrad_llm_tokenizer": 2, "kind": "char", "chars": ["\\n", " ", ...], "sha256": "..."}

Files of format 1 (before JSON) still load. That format is UTF-8 text, one item per line,
each line `key value` where the value is JSON:

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
A tokenizer's fingerprint is still the checksum of this text (see ``serialize``), so it
does not depend on the file format. Files are written to a temporary file in the same
folder, then renamed over the target, so a reader never sees half a file.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from ..atomic import write_bytes_atomic
from .patterns import GPT2_DIGITS_SPLIT_PATTERN, GPT2_SPLIT_PATTERN, from_hf_pattern, to_hf_pattern

MAGIC = "tinygrad_llm-tokenizer"
VERSION = 1
JSON_KEY = "tinygrad_llm_tokenizer"      # the key that marks our own JSON files
JSON_VERSION = 2
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


def _legacy_contents(kind: str, fields: dict, rows: list, where: str) -> dict:
    """The rows and fields of a format-1 file as the constructor's arguments."""
    if kind == "char":
        for n, (i, c) in enumerate(rows):
            if i != n:
                raise TokenizerFileError(f"{where}: row {n} has id {i}, expected {n}")
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerFileError(f"{where}: id {i} should be a single character, got {c!r}")
        return {"chars": [c for _, c in rows]}
    pattern = get_field(fields, "pattern", str, where)
    specials = get_field(fields, "special_tokens", dict, where)
    ranks = {}
    for r, v in rows:
        try:
            t = token_from_json(v)
        except ValueError as e:
            raise TokenizerFileError(f"{where}: rank {r}: {e}") from None
        if t in ranks:
            raise TokenizerFileError(f"{where}: token {t!r} appears twice (ranks {ranks[t]} and {r})")
        ranks[t] = r
    return {"mergeable_ranks": ranks, "pattern": pattern, "special_tokens": specials}


def read_file(path, expected_kind: str | None = None) -> tuple[str, dict]:
    """Read and check any of our tokenizer files (JSON or format 1).

    Returns (kind, contents): kind is "bpe" or "char"; contents are the keyword arguments of
    that tokenizer's constructor (``mergeable_ranks``, ``pattern``, ``special_tokens``; or
    ``chars``). TokenizerFileError says what is wrong and where.
    """
    path = Path(path)
    where = repr(str(path))
    if path.is_dir():
        raise TokenizerFileError(f"{where} is a folder, expected a tokenizer file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {where} does not exist") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerFileError(f"{where}: not a tinygrad_llm tokenizer file "
                                 f"(not UTF-8 text: {e})") from None
    if text.lstrip()[:1] in ("{", "["):
        kind, contents = parse_json(text, where)
    else:
        kind, fields, rows, _ = parse(text, where)
        contents = _legacy_contents(kind, fields, rows, where)
    if expected_kind is not None and kind != expected_kind:
        raise TokenizerFileError(f"{where} holds a {kind!r} tokenizer, expected {expected_kind!r} "
                                 "(load_tokenizer() loads either kind)")
    return kind, contents


def get_field(fields: dict, key: str, typ, where: str):
    """fields[key], checked to be of type typ."""
    if key not in fields:
        raise TokenizerFileError(f"{where}: missing field {key!r}")
    v = fields[key]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise TokenizerFileError(f"{where}: field {key!r} should be {typ.__name__}, got {v!r}")
    return v


# ---------------------------------------------------------------- JSON files

def _dumps(obj) -> str:
    """JSON text; readable non-ASCII, with escapes only where UTF-8 cannot hold a character."""
    s = json.dumps(obj, ensure_ascii=False, indent=1)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        s = json.dumps(obj, ensure_ascii=True, indent=1)
    return s + "\n"


def char_json_text(chars: list) -> str:
    """Our JSON file of a character tokenizer, with the sha256 of its character list."""
    body = json.dumps(chars, ensure_ascii=True)
    return _dumps({JSON_KEY: JSON_VERSION, "kind": "char", "chars": chars,
                   "sha256": hashlib.sha256(body.encode("ascii")).hexdigest()})


def derive_merges(ranks: dict) -> list:
    """The merges (a, b) that rank-based BPE implies, in rank order: for each token of more
    than one byte, the two parts that encoding its own bytes with the lower ranks only
    leaves. A token that those ranks do not reduce to two parts gets no merge (rank-based
    encoding makes it only when a whole chunk is that token, as ``ignore_merges`` does)."""
    out = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best:
                    best, at = r, i
            if at < 0:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) == 2 and ranks.get(parts[0], rank) < rank and ranks.get(parts[1], rank) < rank:
            out.append((parts[0], parts[1]))
    return out


def hf_json_text(ranks: dict, pattern: str, special_tokens: dict) -> str:
    """A Hugging Face ``tokenizers`` tokenizer.json for a byte-level BPE tokenizer."""
    b2u = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {spell(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1])]
    obj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": to_hf_pattern(pattern)}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": vocab,
                  "merges": [f"{spell(a)} {spell(b)}" for a, b in derive_merges(ranks)]},
    }
    return _dumps(obj)


def _hf_pattern(pre, where: str) -> str:
    """Our split pattern from a tokenizer.json pre_tokenizer (byte-level BPE layouts only)."""
    def is_type(p, name):
        return isinstance(p, dict) and p.get("type") == name

    def bytelevel_ok(p):
        return is_type(p, "ByteLevel") and not p.get("add_prefix_space", True)

    if bytelevel_ok(pre) and pre.get("use_regex", True):      # GPT-2's own layout
        return GPT2_SPLIT_PATTERN
    if is_type(pre, "Sequence") and isinstance(pre.get("pretokenizers"), list) and len(pre["pretokenizers"]) == 2:
        split, byte_level = pre["pretokenizers"]
        if is_type(split, "Digits") and split.get("individual_digits") is True and bytelevel_ok(byte_level) \
                and byte_level.get("use_regex", True):        # StarCoder's and SmolLM's layout
            return GPT2_DIGITS_SPLIT_PATTERN
        regex_ = split.get("pattern", {}).get("Regex") if is_type(split, "Split") and \
            isinstance(split.get("pattern"), dict) else None
        if isinstance(regex_, str) and split.get("behavior") == "Isolated" and not split.get("invert") \
                and bytelevel_ok(byte_level) and not byte_level.get("use_regex", True):
            return from_hf_pattern(regex_)
    raise TokenizerFileError(
        f"{where}: pre_tokenizer {json.dumps(pre)[:120]} is not one this package reads; expected "
        "ByteLevel(add_prefix_space=false), Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)], or "
        "Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false)]")


def _hf_contents(obj: dict, where: str) -> dict:
    model = obj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise TokenizerFileError(f"{where}: model is {str(model)[:60]}, expected a byte-level BPE model "
                                 "(\"type\": \"BPE\")")
    for key in ("normalizer", "continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        holder = obj if key == "normalizer" else model
        if holder.get(key) not in (None, 0, 0.0):
            raise TokenizerFileError(f"{where}: {key} {holder.get(key)!r} is not supported (expected null)")
    if model.get("byte_fallback"):
        raise TokenizerFileError(f"{where}: byte_fallback is not supported by byte-level BPE")
    pattern = _hf_pattern(obj.get("pre_tokenizer"), where)
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(merges, list):
        raise TokenizerFileError(f"{where}: model.merges should be a list, got {str(merges)[:60]}")
    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(x, str) and x for x in parts)):
            raise TokenizerFileError(f"{where}: merge {i}: expected two tokens, got {m!r:.60}")
        pairs.append((parts[0], parts[1]))
    added = obj.get("added_tokens") or []
    specials = {}
    for t in added:
        if not (isinstance(t, dict) and isinstance(t.get("content"), str) and isinstance(t.get("id"), int)):
            raise TokenizerFileError(f"{where}: bad added_tokens entry {t!r:.80}")
        specials[t["content"]] = t["id"]
    vocab = {s: i for s, i in vocab.items() if s not in specials} if isinstance(vocab, dict) else vocab
    ranks, unmade = ranks_from_vocab(vocab, pairs, f"{where} model.vocab", lambda i: f"{where} merge {i}",
                                     vocab_name="model.vocab")
    # a token no merge makes (rank-based BPE makes it only as a whole chunk, as ignore_merges)
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    for s, i in unmade.items():
        try:
            token = bytes(byte_of[c] for c in s)
        except KeyError as e:
            raise TokenizerFileError(f"{where}: vocab entry {s!r} is neither an added token nor spelled "
                                     f"in GPT-2's byte-to-unicode map (character {e.args[0]!r})") from None
        if token in ranks:
            raise TokenizerFileError(f"{where}: vocab entry {s!r} spells the bytes of another token")
        ranks[token] = i
    return {"mergeable_ranks": ranks, "pattern": pattern, "special_tokens": specials}


def parse_json(text: str, where: str) -> tuple[str, dict]:
    """(kind, constructor arguments) of a JSON tokenizer file (ours or Hugging Face's)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerFileError(f"{where}: corrupt or truncated JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TokenizerFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if JSON_KEY in obj:
        if obj[JSON_KEY] != JSON_VERSION:
            raise TokenizerFileError(f"{where}: file format version {obj[JSON_KEY]!r} is not supported "
                                     f"(this code reads version {JSON_VERSION})")
        if obj.get("kind") != "char":
            raise TokenizerFileError(f"{where}: unknown tokenizer kind {obj.get('kind')!r}, expected 'char' "
                                     "(BPE tokenizers are saved as Hugging Face tokenizer.json)")
        chars = obj.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise TokenizerFileError(f"{where}: 'chars' should be a list of single characters")
        digest = hashlib.sha256(json.dumps(chars, ensure_ascii=True).encode("ascii")).hexdigest()
        if obj.get("sha256") != digest:
            raise TokenizerFileError(f"{where}: corrupt: checksum mismatch (stored {obj.get('sha256')!r}, "
                                     f"content hashes to {digest!r}); the file was changed or damaged")
        return "char", {"chars": chars}
    if "model" in obj:
        return "bpe", _hf_contents(obj, where)
    raise TokenizerFileError(f"{where}: not a tokenizer file (a JSON object with neither "
                             f"{JSON_KEY!r} nor a Hugging Face 'model')")


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


def ranks_from_vocab(vocab, merges: list, vocab_where: str, merge_where,
                     vocab_name: str = "vocab.json") -> tuple[dict, dict]:
    """The ranks of a byte-level BPE given as GPT-2 writes it: ``vocab`` maps byte-to-unicode
    spelled tokens to ids, ``merges`` lists (left, right) pairs in order.

    Returns (ranks, unmade): ranks are the ids of ``vocab`` for the 256 bytes and every token
    a merge makes; ``unmade`` holds the other entries of ``vocab`` (e.g. <|endoftext|>).
    Rank-based BPE needs ids in merge order, which is checked. ``merge_where(i)`` names
    merge i in messages.
    """
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in vocab.values()):
        raise TokenizerFileError(f"{vocab_where}: expected a JSON object of token string -> int id")
    char_of = bytes_to_unicode()
    byte_of = {c: b for b, c in char_of.items()}
    ranks = {}
    for b in range(256):
        c = char_of[b]
        if c not in vocab:
            raise TokenizerFileError(f"{vocab_where}: the single-byte token {c!r} (byte {b}) is missing")
        ranks[bytes([b])] = vocab[c]

    made = {char_of[b] for b in range(256)}
    last_id = -1
    for i, (left, right) in enumerate(merges):
        for t in (left, right):
            if t not in vocab:
                raise TokenizerFileError(f"{merge_where(i)}: token {t!r} is not in {vocab_name}")
        merged = left + right
        if merged not in vocab:
            raise TokenizerFileError(f"{merge_where(i)}: merged token {merged!r} is not in {vocab_name}")
        tid = vocab[merged]
        if tid <= last_id:
            raise TokenizerFileError(f"{merge_where(i)}: merge {left + ' ' + right!r} makes token id {tid}, not "
                                     f"above the id {last_id} of the merge before it; rank-based BPE needs "
                                     "token ids in merge order")
        last_id = tid
        try:
            token = bytes(byte_of[c] for c in merged)
        except KeyError as e:
            raise TokenizerFileError(f"{merge_where(i)}: character {e.args[0]!r} in {merged!r} is not in "
                                     "GPT-2's byte-to-unicode map") from None
        if token in ranks:
            raise TokenizerFileError(f"{merge_where(i)}: merged token {merged!r} is made twice")
        ranks[token] = tid
        made.add(merged)
    unmade = {s: i for s, i in vocab.items() if s not in made}
    return ranks, unmade


def read_gpt2_files(vocab_path, merges_path):
    """Read Hugging Face GPT-2 style vocab.json + merges.txt; see :func:`ranks_from_vocab`.

    Returns (ranks, special_tokens): entries of vocab.json that are neither a single byte
    nor made by a merge (e.g. <|endoftext|>) become special tokens with their id.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    for p in (vocab_path, merges_path):
        if not p.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file {str(p)!r} does not exist")
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerFileError(f"{str(vocab_path)!r}: not valid JSON ({e})") from None
    pairs, line_of = [], []
    lines = merges_path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerFileError(f"{str(merges_path)!r} line {lineno}: expected two tokens "
                                     f"separated by one space, got {line[:60]!r}")
        pairs.append((parts[0], parts[1]))
        line_of.append(lineno)
    return ranks_from_vocab(vocab, pairs, repr(str(vocab_path)),
                            lambda i: f"{str(merges_path)!r} line {line_of[i]}")  # (ranks, specials)
