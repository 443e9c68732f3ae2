"""Tests for tokenizer files: our formats (save/load, corruption), tiktoken and GPT-2 files.
The Hugging Face tokenizer.json that BPETokenizer.save writes is tested in test_tokenizer_hf_json.py."""
import base64
import json
import os
import random

import pytest

from tinygrad_llm.tokenizer import (BPETokenizer, CharTokenizer, TokenizerFileError, bytes_to_unicode,
                                    load_tokenizer)
from tinygrad_llm.tokenizer import io as tio
from tinygrad_llm.tokenizer.train import count_chunks, train_bpe
from tinygrad_llm.tokenizer.patterns import GPT2_SPLIT_PATTERN, compile_pattern

try:
    import tiktoken
    import tiktoken.load
except ImportError:  # only the comparisons with tiktoken are skipped
    tiktoken = None
needs_tiktoken = pytest.mark.skipif(tiktoken is None, reason="tiktoken is not installed (pip install -e '.[test]')")

def make_text(n_words=3000, seed=0):
    """Deterministic text of made-up words, with some non-ASCII."""
    rng = random.Random(seed)
    syllables = ["the", "an", "qu", "ick", "br", "own", "fo", "x", "ju", "mps", "ö", "é", "中", "文", "👍",
                 "la", "zy", "do", "g", "ing", "er", "s", "'s", "12", "3"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    return " ".join(w + rng.choice(["", "", "", ",", ".", "!\n", "\n\n"]) for w in words)


TEXT = make_text()
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, 400, special_tokens=[EOT, "<|pad|>"])


@pytest.fixture
def no_tiktoken_cache(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken reads local files directly


# ----------------------------------------------------------------------------- our format

def test_bpe_save_load_roundtrip(tok, tmp_path):
    path = tmp_path / "tok.txt"
    tok.save(path)
    back = BPETokenizer.load(path)
    assert back.mergeable_ranks == tok.mergeable_ranks
    assert back.pattern == tok.pattern and back.special_tokens == tok.special_tokens
    assert back.vocab_size == tok.vocab_size == 400
    s = f"Hello 中文 world{EOT}"
    assert back.encode(s, allowed_special="all") == tok.encode(s, allowed_special="all")
    assert back.fingerprint() == tok.fingerprint()
    assert isinstance(load_tokenizer(path), BPETokenizer)
    assert isinstance(load_tokenizer(str(path)), BPETokenizer)


def write_legacy(tok, path):
    """The file that save() wrote before tokenizer files became JSON (format 1)."""
    path.write_text(tok._text(), encoding="utf-8")


def test_legacy_text_file_still_loads(tok, tmp_path):
    path = tmp_path / "tok.txt"
    write_legacy(tok, path)
    back = load_tokenizer(path)
    assert back.mergeable_ranks == tok.mergeable_ranks and back.special_tokens == tok.special_tokens
    assert back.fingerprint() == tok.fingerprint()
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "tinygrad_llm-tokenizer 1"
    assert lines[1] == 'kind "bpe"'
    assert lines[2].startswith("pattern ")
    assert lines[3] == 'special_tokens {"<|endoftext|>": 398, "<|pad|>": 399}'
    assert lines[4] == "ranks 398"
    assert lines[5] == '0 "\\u0000"' and lines[5 + 10] == '10 "\\n"' and lines[5 + 97] == '97 "a"' and lines[5 + 255] == "255 [255]"
    assert any(line.endswith(' " the"') for line in lines)  # merged tokens read as text
    assert lines[-2].startswith("sha256 ") and lines[-1] == ""
    assert tok.fingerprint() == "bpe-" + json.loads(lines[-2][7:])[:16]


def test_save_is_atomic(tok, tmp_path, monkeypatch):
    path = tmp_path / "tok.txt"
    tok.save(path)
    before = path.read_bytes()
    tok.save(path)  # overwrite
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["tok.txt"]  # no temp file left

    def broken_replace(src, dst):
        raise OSError("disk on fire")
    monkeypatch.setattr(os, "replace", broken_replace)
    other = BPETokenizer.train(TEXT, 300)
    with pytest.raises(OSError, match="disk on fire"):
        other.save(path)
    assert path.read_bytes() == before  # old file untouched
    assert sorted(os.listdir(tmp_path)) == ["tok.txt"]


def test_save_to_missing_folder(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tok.save(tmp_path / "nope" / "tok.txt")


def corrupt(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("damage, match", [
    (lambda p: corrupt(p, '97 "a"', '97 "b"'), "checksum mismatch"),
    (lambda p: corrupt(p, "ranks 398", "ranks 399"), "checksum mismatch"),
    (lambda p: p.write_text("\n".join(p.read_text().split("\n")[:100])), "corrupt or truncated"),
    (lambda p: p.write_text("garbage"), "not a tinygrad_llm tokenizer file"),
    (lambda p: p.write_text(""), "not a tinygrad_llm tokenizer file"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00junk"), "not UTF-8"),
    (lambda p: corrupt(p, "tinygrad_llm-tokenizer 1", "tinygrad_llm-tokenizer 99"),
     "version 99 is not supported"),
    (lambda p: corrupt(p, "tinygrad_llm-tokenizer 1", "tinygrad_llm-tokenizer one"), "bad first line"),
])
def test_corrupt_legacy_files(tok, tmp_path, damage, match):
    path = tmp_path / "tok.txt"
    write_legacy(tok, path)
    damage(path)
    for loader in (BPETokenizer.load, load_tokenizer):
        with pytest.raises(TokenizerFileError, match=match):
            loader(path)
    with pytest.raises(ValueError):  # TokenizerFileError is a ValueError
        load_tokenizer(path)


def write_valid(path, kind, fields, rows):
    """A file with a correct checksum but the given (possibly wrong) content."""
    path.write_text(tio.serialize(kind, fields, rows), encoding="utf-8")


BYTES = [(i, tio.token_to_json(bytes([i]))) for i in range(256)]


@pytest.mark.parametrize("fields, rows, match", [
    ({"pattern": "gpt4", "special_tokens": {}}, BYTES + [(256, "ab"), (257, "ab")], "appears twice"),
    ({"pattern": "gpt4", "special_tokens": {}}, BYTES[1:], "lacks 1 single-byte token"),
    ({"special_tokens": {}}, BYTES, "missing field 'pattern'"),
    ({"pattern": 5, "special_tokens": {}}, BYTES, "field 'pattern' should be str"),
    ({"pattern": "gpt4", "special_tokens": {"<x>": 3}}, BYTES, "collides"),
    ({"pattern": "gpt4", "special_tokens": {}}, BYTES + [(256, {"x": 1})], "rank 256: expected a string"),
    ({"pattern": "nonsense", "special_tokens": {}}, BYTES, "unknown pattern name"),
])
def test_wrong_content_with_valid_checksum(tmp_path, fields, rows, match):
    path = tmp_path / "tok.txt"
    write_valid(path, "bpe", fields, rows)
    with pytest.raises(TokenizerFileError, match=match):
        BPETokenizer.load(path)


def test_unknown_kind_and_kind_mismatch(tok, tmp_path):
    path = tmp_path / "tok.txt"
    text = tio.serialize("char", {}, [(0, "a")]).replace('kind "char"', 'kind "wordpiece"')
    body = text.rsplit("sha256 ", 1)[0]
    import hashlib
    path.write_text(body + f'sha256 "{hashlib.sha256(body.encode()).hexdigest()}"\n')
    with pytest.raises(TokenizerFileError, match="unknown tokenizer kind 'wordpiece'"):
        load_tokenizer(path)
    tok.save(path)
    with pytest.raises(TokenizerFileError, match="holds a 'bpe' tokenizer, expected 'char'"):
        CharTokenizer.load(path)
    CharTokenizer.from_text("abc").save(path)
    with pytest.raises(TokenizerFileError, match="holds a 'char' tokenizer, expected 'bpe'"):
        BPETokenizer.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.*does not exist"):
        load_tokenizer(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="no vocab.json"):
        load_tokenizer(tmp_path)  # a folder is read as GPT-2 files
    with pytest.raises(TokenizerFileError, match="is a folder"):
        BPETokenizer.load(tmp_path)


def test_fingerprint(tok, tmp_path):
    fp = tok.fingerprint()
    assert fp.startswith("bpe-") and len(fp) == 20
    assert fp == tok.fingerprint()
    other = BPETokenizer.train(TEXT, 401, special_tokens=[EOT, "<|pad|>"])
    assert other.fingerprint() != fp
    same_ranks_other_pattern = BPETokenizer(tok.mergeable_ranks, "gpt2", tok.special_tokens)
    assert same_ranks_other_pattern.fingerprint() != fp
    tok.save(tmp_path / "t")
    assert load_tokenizer(tmp_path / "t").fingerprint() == fp


# ----------------------------------------------------------------------------- tiktoken files

@needs_tiktoken
def test_tiktoken_file_both_ways(tok, tmp_path, no_tiktoken_cache):
    ours = tmp_path / "ours.tiktoken"
    tok.save_tiktoken(ours)
    assert tiktoken.load.load_tiktoken_bpe(str(ours)) == tok.mergeable_ranks
    theirs = tmp_path / "theirs.tiktoken"  # as tiktoken writes them: base64, space, rank
    theirs.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n"
                                for t, r in sorted(tok.mergeable_ranks.items(), key=lambda kv: kv[1])))
    back = BPETokenizer.from_tiktoken_file(theirs, pattern=tok.pattern, special_tokens=tok.special_tokens)
    assert back.mergeable_ranks == tok.mergeable_ranks
    enc = tiktoken.Encoding("x", pat_str=back.pattern, mergeable_ranks=tiktoken.load.load_tiktoken_bpe(
        str(theirs)), special_tokens=back.special_tokens)
    s = f"The café {EOT} 中文 👍👍"
    assert back.encode(s, allowed_special="all") == enc.encode(s, allowed_special="all")


def test_tiktoken_file_errors(tmp_path):
    p = tmp_path / "bad.tiktoken"
    p.write_bytes(b"IQ== 0\nnot-base64! 1\n")
    with pytest.raises(TokenizerFileError, match="line 2: expected '<base64 token> <rank>'"):
        BPETokenizer.from_tiktoken_file(p)
    p.write_bytes(b"IQ== 0\nIQ== 1\n")
    with pytest.raises(TokenizerFileError, match="line 2: token b'!' appears twice"):
        BPETokenizer.from_tiktoken_file(p)
    p.write_bytes(b"\n")
    with pytest.raises(TokenizerFileError, match="empty tiktoken rank file"):
        BPETokenizer.from_tiktoken_file(p)
    p.write_bytes(b"IQ== 0\n")
    with pytest.raises(ValueError, match="lacks 255 single-byte token"):
        BPETokenizer.from_tiktoken_file(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.from_tiktoken_file(tmp_path / "missing.tiktoken")


# ----------------------------------------------------------------------------- GPT-2 files

def test_bytes_to_unicode_is_gpt2s():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert table[0] == chr(256) and table[0xAD] == chr(323)


def write_gpt2_files(folder, text, vocab_size):
    """vocab.json + merges.txt laid out as GPT-2's: byte tokens first (ids in the order of
    their characters, so 'Ġ' is 220 as in GPT-2), then one token per merge, then <|endoftext|>."""
    b2u = bytes_to_unicode()
    vocab_bytes, merges = train_bpe(count_chunks(text, compile_pattern(GPT2_SPLIT_PATTERN)), vocab_size)
    vocab = {c: i for i, c in enumerate(sorted(b2u.values()))}
    merge_lines = ["#version: 0.2"]
    made = set()
    for a, b, z in merges:
        if z in made:
            continue
        made.add(z)
        left, right = ("".join(b2u[x] for x in vocab_bytes[t]) for t in (a, b))
        merge_lines.append(f"{left} {right}")
        vocab[left + right] = len(vocab)
    vocab[EOT] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    return vocab


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    write_gpt2_files(d, TEXT, 380)
    return d


SAMPLES = ["Hello world!", "The quick brown fox, the lazy dog.", "  spaces   and\ttabs\n\nnew lines ",
           "café naïve 中文 日本語 👍", "it's we'll they've I'M", "1234 56.78", ""]


@needs_tiktoken
def test_gpt2_import_matches_tiktoken(gpt2_dir, no_tiktoken_cache):
    tok = BPETokenizer.from_pretrained(gpt2_dir)
    assert tok.mergeable_ranks[b" "] == 220 and tok.mergeable_ranks[b"!"] == 0
    n = len(tok.mergeable_ranks)
    assert tok.special_tokens == {EOT: n} and tok.vocab_size == n + 1
    assert tok.pattern == GPT2_SPLIT_PATTERN
    # tiktoken's own reader of GPT-2 files (merges = "vocab.bpe", vocab = "encoder.json")
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(gpt2_dir / "merges.txt"),
                                                          str(gpt2_dir / "vocab.json"))
    assert ranks == tok.mergeable_ranks
    enc = tiktoken.Encoding("gpt2-small", pat_str=tok.pattern, mergeable_ranks=ranks,
                            special_tokens={EOT: n})
    for s in SAMPLES + [TEXT, f"a{EOT}b"]:
        assert tok.encode(s, allowed_special="all") == enc.encode(s, allowed_special="all")
        assert tok.decode(tok.encode(s, allowed_special="all")) == s
    assert isinstance(load_tokenizer(gpt2_dir), BPETokenizer)


def test_gpt2_import_matches_hugging_face(gpt2_dir):
    hf = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers
    t = hf.Tokenizer(models.BPE.from_file(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    tok = BPETokenizer.from_gpt2_files(gpt2_dir / "vocab.json", gpt2_dir / "merges.txt")
    for s in SAMPLES + [TEXT]:
        assert tok.encode(s) == t.encode(s).ids


def test_gpt2_import_errors(tmp_path):
    vocab = write_gpt2_files(tmp_path, TEXT, 270)
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")
    vpath, mpath = tmp_path / "vocab.json", tmp_path / "merges.txt"

    def load_with(merge_lines=None, vocab_obj=None):
        mpath.write_text("\n".join(merge_lines if merge_lines is not None else merges), encoding="utf-8")
        vpath.write_text(json.dumps(vocab_obj if vocab_obj is not None else vocab), encoding="utf-8")
        return BPETokenizer.from_gpt2_files(vpath, mpath)

    with pytest.raises(TokenizerFileError, match="line 2: token 'zzq' is not in vocab.json"):
        load_with(merge_lines=[merges[0], "zzq e"] + merges[2:])
    with pytest.raises(TokenizerFileError, match="line 2: expected two tokens"):
        load_with(merge_lines=[merges[0], "a b c"] + merges[2:])
    with pytest.raises(TokenizerFileError, match="line 2: merged token 'Ġ~' is not in vocab.json"):
        load_with(merge_lines=[merges[0], "Ġ ~"] + merges[2:])
    with pytest.raises(TokenizerFileError, match="not above the id .* merge order"):
        load_with(merge_lines=[merges[0], merges[2], merges[1]] + merges[3:])
    with pytest.raises(TokenizerFileError, match="single-byte token 'Ġ' .*byte 32.* is missing"):
        load_with(vocab_obj={k: v for k, v in vocab.items() if k != "Ġ"})
    with pytest.raises(TokenizerFileError, match="token string -> int id"):
        load_with(vocab_obj=["not", "a", "dict"])
    vpath.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        BPETokenizer.from_gpt2_files(vpath, mpath)
    with pytest.raises(FileNotFoundError, match="missing.json.*does not exist"):
        BPETokenizer.from_gpt2_files(tmp_path / "missing.json", mpath)
    mpath.unlink()
    with pytest.raises(FileNotFoundError, match="no merges.txt in"):
        BPETokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        BPETokenizer.from_pretrained(tmp_path / "nope")
