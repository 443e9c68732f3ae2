"""Tests for the character-level tokenizer."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_llm.tokenizer import CharTokenizer, TokenizerFileError, load_tokenizer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
ALPHABET = "\n\t \"'\\abcXYZ0é中👍\u0301\ud800"


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_text(ALPHABET * 3)


def test_vocabulary_is_sorted_characters(tok):
    assert tok.chars == sorted(set(ALPHABET))
    assert tok.vocab_size == len(set(ALPHABET))
    assert tok.encode("\t\n") == [0, 1]
    assert CharTokenizer.train("hello").chars == ["e", "h", "l", "o"]


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"Tiny Shakespeare not found at {SHAKESPEARE}")
def test_shakespeare_vocabulary():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65  # as nanoGPT's shakespeare_char
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]


@given(st.text(alphabet=ALPHABET))
def test_roundtrip(tok, s):
    ids = tok.encode(s)
    assert len(ids) == len(s)
    assert tok.decode(ids) == s


def test_unseen_character(tok):
    with pytest.raises(ValueError, match=r"character 'q' \(U\+0071\) at position 3 is not in"):
        tok.encode("abcq")
    with pytest.raises(ValueError, match=r"U\+1F600"):
        tok.encode("😀")


@pytest.mark.parametrize("bad, match", [([0, 999], "unknown token id 999 at position 1"),
                                        ([-1], "unknown token id -1"), (["a"], "unknown token id 'a'")])
def test_unknown_id(tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tok.decode(bad)


def test_numpy_ids(tok):
    ids = tok.encode("abc中")
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "abc中"


def test_save_load(tok, tmp_path):
    path = tmp_path / "chars.json"
    tok.save(path)
    text = path.read_text(encoding="utf-8")
    obj = json.loads(text)                    # a file named .json is JSON
    assert obj["kind"] == "char" and obj["chars"] == tok.chars and obj["tinygrad_llm_tokenizer"] == 2
    assert "\\ud800" in text                  # written as a JSON escape, as UTF-8 cannot hold it
    back = CharTokenizer.load(path)
    assert back.chars == tok.chars  # lone surrogate included
    assert isinstance(load_tokenizer(path), CharTokenizer)
    assert back.fingerprint() == tok.fingerprint()
    assert tok.fingerprint().startswith("char-")
    assert CharTokenizer.from_text("abd").fingerprint() != CharTokenizer.from_text("abc").fingerprint()


def test_legacy_text_file_still_loads(tok, tmp_path):
    path = tmp_path / "chars.txt"
    path.write_text(tok._text(), encoding="utf-8")       # what save() wrote before JSON (format 1)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('tinygrad_llm-tokenizer 1\nkind "char"\nchars 18\n0 "\\t"\n1 "\\n"\n')
    assert '\n16 "\\ud800"\n' in text
    back = CharTokenizer.load(path)
    assert back.chars == tok.chars and back.fingerprint() == tok.fingerprint()
    path.write_text(text.replace('"a"', '"q"'), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="checksum mismatch"):
        CharTokenizer.load(path)


def test_corrupt_file(tok, tmp_path):
    path = tmp_path / "chars.txt"
    tok.save(path)
    path.write_text(path.read_text(encoding="utf-8").replace('"a"', '"q"'), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="checksum mismatch"):
        CharTokenizer.load(path)


def test_constructor_errors():
    with pytest.raises(ValueError, match="'a' appears twice"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="entry 1 is 'bc', expected a single character"):
        CharTokenizer(["a", "bc"])
    with pytest.raises(ValueError, match="at least one character"):
        CharTokenizer([])
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer.from_text("")
