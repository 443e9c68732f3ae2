"""Tests for the byte-level BPE tokenizer: training, encoding, special tokens, tiktoken agreement."""
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_llm.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer
from tinygrad_llm.tokenizer.bpe import LONG_CHUNK, fix_surrogates

try:
    import tiktoken
except ImportError:  # only the comparisons with tiktoken are skipped
    tiktoken = None
needs_tiktoken = pytest.mark.skipif(tiktoken is None, reason="tiktoken is not installed (pip install -e '.[test]')")

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
needs_shakespeare = pytest.mark.skipif(
    not SHAKESPEARE.is_file(), reason=f"Tiny Shakespeare not found at {SHAKESPEARE}")

# Text with many scripts, so that training learns multi-byte tokens too.
WORLD = ("The café's naïve émigré said: 'we'll see'. 中文字符和日本語のテキスト、한국어 텍스트. "
         "Ωμέγα Привет мир! 👍👍 🇫🇷🇫🇷 e\u0301e\u0301 12345 3.14159\n\n\t  done.  \r\n") * 20
# Odd pieces that a random string is built from, besides arbitrary text.
PIECES = ["\n", "\r\n", "\t", " ", "  ", "    ", "\u00a0", "\u3000", "e\u0301", "\u0301", "👍",
          "👨\u200d👩\u200d👧", "🇫🇷", "中文", "日本語", "한국어", "'s", "'LL", "'ve", "123456", "١٢٣",
          "Ω", "\x00", "\ufeff", "\u200b", "\U0010ffff", "the", " the", "aaaa", "!!!", "?\n"]
texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(PIECES)), max_size=25).map("".join)
# For comparisons with tiktoken: only characters assigned in Python's Unicode database. A code
# point assigned in a newer Unicode version can have different properties in the `regex`
# package and in tiktoken's Rust regex (see docs/tokenizer.md), so the split differs there.
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))
assigned_texts = st.lists(st.one_of(st.text(ASSIGNED, max_size=12), st.sampled_from(PIECES)),
                          max_size=25).map("".join)
SURROGATES = ["\ud800", "\udfff", "\ud83d", "\ude00", "\ud83d\ude00", "\udc00\ud800"]
texts_with_surrogates = st.lists(
    st.one_of(st.text(ASSIGNED, max_size=6), st.sampled_from(PIECES), st.sampled_from(SURROGATES)),
    max_size=15).map("".join)


def small_text():
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:60_000] + WORLD
    return WORLD * 5


@pytest.fixture(scope="module")
def tok4():
    """GPT-4 pattern, multi-script vocabulary, two special tokens."""
    return BPETokenizer.train(small_text() + "a" * 3000 + " " * 300, 700,
                              special_tokens=["<|endoftext|>", "<|fim|>"])


@pytest.fixture(scope="module")
def tok2():
    """GPT-2 pattern."""
    return BPETokenizer.train(small_text(), 600, pattern="gpt2")


@pytest.fixture(scope="module")
def enc4(tok4):
    if tiktoken is None:
        pytest.skip("tiktoken is not installed (pip install -e '.[test]')")
    return tiktoken.Encoding("t4", pat_str=tok4.pattern, mergeable_ranks=tok4.mergeable_ranks,
                             special_tokens=tok4.special_tokens)


@pytest.fixture(scope="module")
def enc2(tok2):
    if tiktoken is None:
        pytest.skip("tiktoken is not installed (pip install -e '.[test]')")
    return tok2.to_tiktoken("t2")


# ----------------------------------------------------------------------------- training

def test_wikipedia_example():
    tok = BPETokenizer.train("aaabdaaabac", 256 + 3)
    # aa -> Z, then ab -> Y (tie with Za, broken by the smaller pair), then ZY -> X
    assert [tok.token_bytes(i) for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"
    assert tok.vocab_size == 259


def test_tie_break_is_smallest_pair_among_highest_count():
    assert BPETokenizer.train("xyab", 257).token_bytes(256) == b"ab"  # all pairs count 1
    assert BPETokenizer.train("zz zz ab", 257).token_bytes(256) == b"zz"  # count 2 beats 1
    assert BPETokenizer.train("ba ab", 257, pattern="gpt2").token_bytes(256) == b" a"  # (32, 97) smallest


def test_training_is_deterministic():
    text = small_text()[:20_000]
    a = BPETokenizer.train(text, 400)
    b = BPETokenizer.train(text, 400)
    assert a.mergeable_ranks == b.mergeable_ranks
    assert a.fingerprint() == b.fingerprint()


def test_vocab_is_exactly_requested_and_bytes_are_unique(tok4):
    ranks = tok4.mergeable_ranks
    assert tok4.vocab_size == 700
    assert sorted(ranks.values()) == list(range(698))
    assert tok4.special_tokens == {"<|endoftext|>": 698, "<|fim|>": 699}
    assert len(set(ranks)) == len(ranks)
    assert any(len(t.decode("utf-8", "ignore")) == 1 and len(t) > 1 for t in ranks)  # multi-byte chars


def test_training_cuts_out_special_tokens():
    tok = BPETokenizer.train("hello world<|endoftext|>" * 200, 262, special_tokens=["<|endoftext|>"])
    assert not any(b"endoftext" in t or b"<|" in t for t in tok.mergeable_ranks)
    assert tok.encode("hi<|endoftext|>", allowed_special="all")[-1] == 261


def test_training_with_explicit_special_ids():
    tok = BPETokenizer.train(small_text()[:5000], 300, special_tokens={"<|endoftext|>": 1000})
    assert tok.special_tokens == {"<|endoftext|>": 1000}
    assert len(tok.mergeable_ranks) == 299 and tok.vocab_size == 1001


def test_training_warns_when_text_runs_out_of_pairs():
    with pytest.warns(UserWarning, match="stopped at 257 tokens"):
        tok = BPETokenizer.train("ab", 300)
    assert tok.vocab_size == 257


def test_custom_pattern():
    tok = BPETokenizer.train("foo bar foo bar", 260, pattern=r"\S+|\s+")
    assert tok.pattern == r"\S+|\s+"
    assert tok.decode(tok.encode("foo bar")) == "foo bar"
    assert b"foo" in tok.mergeable_ranks


def test_progress_bar(capsys):
    BPETokenizer.train(small_text()[:3000], 300, progress=True)
    out, err = capsys.readouterr()
    assert "BPE merges" in err and "44/44" in err and out == ""
    BPETokenizer.train(small_text()[:3000], 300, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=255), r"vocab_size=255 is too small: it must be at least 256"),
    (dict(vocab_size=257, special_tokens=["<a>", "<b>"]), r"vocab_size=257 .* at least 258 .*2 special"),
    (dict(vocab_size=300, pattern="gpt3"), r"unknown pattern name 'gpt3'.*gpt2.*gpt4"),
    (dict(vocab_size=300, pattern="(["), r"not a valid regex"),
    (dict(vocab_size=300, special_tokens={"<a>": 5}), r"'<a>' has id 5, which collides"),
    (dict(vocab_size=300, special_tokens=["<a>", "<a>"]), r"'<a>' is listed twice"),
    (dict(vocab_size=300, special_tokens=[""]), r"non-empty"),
])
def test_training_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BPETokenizer.train("some text to train on", **kwargs)


def test_training_type_errors():
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer.train("", 300)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        BPETokenizer.train("abc", "300")
    with pytest.raises(TypeError, match="text must be a str"):
        BPETokenizer.train(b"abc", 300)


def test_training_on_long_repeats_is_not_quadratic():
    # CPU time of this process, best of 3: other processes on the machine disturb it little.
    def cost(n):
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                BPETokenizer.train("a" * n, 256 + 20)
            best = min(best, time.process_time() - t0)
        return best
    small, big = cost(5_000), cost(40_000)
    assert big / small < 30, (small, big)  # linear: ~8, quadratic: ~64


# ----------------------------------------------------------------------------- encoding

@given(texts)
def test_roundtrip(tok4, s):
    ids = tok4.encode(s)
    assert tok4.decode(ids) == s
    assert tok4.decode_bytes(ids) == s.encode("utf-8")
    assert all(isinstance(i, int) and 0 <= i < tok4.vocab_size for i in ids)


@given(texts)
def test_roundtrip_gpt2_pattern(tok2, s):
    assert tok2.decode(tok2.encode(s)) == s


def test_roundtrip_edge_cases(tok4):
    for s in ["", " ", "\n", "  \n  \n", "\t" * 50, "👨\u200d👩\u200d👧" * 5, "e\u0301" * 30,
              "\U0010ffff", "\x00\x01\x7f", "'s'S'll'LL", "1234567890" * 3]:
        assert tok4.decode(tok4.encode(s)) == s
    assert tok4.encode("") == []
    assert tok4.decode([]) == ""


@given(assigned_texts)
def test_matches_tiktoken_gpt4_pattern(tok4, enc4, s):
    assert tok4.encode_ordinary(s) == enc4.encode_ordinary(s)
    assert tok4.encode(s) == enc4.encode(s)


@given(assigned_texts)
def test_matches_tiktoken_gpt2_pattern(tok2, enc2, s):
    assert tok2.encode_ordinary(s) == enc2.encode_ordinary(s)


@given(texts_with_surrogates)
def test_lone_surrogates_as_tiktoken(tok4, enc4, s):
    ids = tok4.encode(s)
    assert ids == enc4.encode(s)
    assert ids == tok4.encode(fix_surrogates(s))
    assert tok4.decode(ids) == fix_surrogates(s)


def test_lone_surrogates_documented_behaviour(tok4):
    # A lone surrogate becomes U+FFFD; a high+low pair becomes its character.
    assert tok4.encode("a\ud800b") == tok4.encode("a\ufffdb")
    assert tok4.decode(tok4.encode("a\ud800b")) == "a\ufffdb"
    assert tok4.encode("\ud83d\ude00") == tok4.encode("😀")
    assert tok4.decode(tok4.encode("x\udc00\ud800y")) == "x\ufffd\ufffdy"


@needs_shakespeare
@needs_tiktoken
def test_matches_tiktoken_on_shakespeare():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = BPETokenizer.train(text, 512)
    assert tok.vocab_size == 512
    enc = tiktoken.Encoding("shakespeare", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks,
                            special_tokens=tok.special_tokens)
    ids = tok.encode(text)
    assert ids == enc.encode_ordinary(text)
    assert tok.decode(ids) == text
    assert len(text.encode()) / len(ids) > 2.0  # it does compress


def test_long_runs_match_tiktoken(tok4, enc4):
    for s in ["a" * 10_000, " " * 10_000, "中" * 3000, "ab" * 3000, "a" * (LONG_CHUNK + 1)]:
        ids = tok4.encode(s)
        assert ids == enc4.encode(s)
        assert tok4.decode(ids) == s


@given(st.text(alphabet="ab ", min_size=2, max_size=200))
def test_heap_merge_equals_scan_merge(tok4, s):
    b = s.encode()
    if b not in tok4.mergeable_ranks and len(b) <= LONG_CHUNK:
        assert tok4._bpe_long(b) == tok4._bpe(s)


def test_encoding_long_repeats_is_not_quadratic(tok4):
    ranks, pattern = tok4.mergeable_ranks, tok4.pattern

    def cost(n):
        best = float("inf")
        for _ in range(3):
            tok = BPETokenizer(ranks, pattern)  # empty chunk cache
            t0 = time.process_time()
            tok.encode("a" * n)
            best = min(best, time.process_time() - t0)
        return best
    small, big = cost(2_500), cost(20_000)
    assert big / small < 30, (small, big)  # n log n: ~10, quadratic: ~64


def test_decode_replaces_invalid_utf8_and_decode_bytes_is_exact(tok4):
    ids = tok4.encode("é")
    assert tok4.decode_bytes(ids) == "é".encode()
    first = tok4.encode_ordinary("é")
    if len(first) == 1:
        first = [tok4.mergeable_ranks[b"\xc3"]]
    assert tok4.decode([first[0]]) == "\ufffd"
    assert tok4.decode_bytes([tok4.mergeable_ranks[b"\xff"]]) == b"\xff"
    assert tok4.decode([tok4.mergeable_ranks[b"\xff"]]) == "\ufffd"


def test_decode_accepts_numpy_ids(tok4):
    ids = tok4.encode("hello world")
    assert tok4.decode(np.array(ids, dtype=np.uint16)) == "hello world"
    assert tok4.decode(np.array(ids, dtype=np.int64)) == "hello world"


@pytest.mark.parametrize("bad, match", [
    ([5, 99999], r"unknown token id 99999 at position 1"),
    ([-1], r"unknown token id -1 at position 0"),
    ([1.5], r"unknown token id 1.5"),
    (["a"], r"unknown token id 'a'"),
])
def test_decode_unknown_id(tok4, bad, match):
    with pytest.raises(ValueError, match=match):
        tok4.decode(bad)


def test_encode_type_error(tok4):
    with pytest.raises(TypeError, match="text must be a str"):
        tok4.encode(b"bytes")


def test_batch(tok4):
    batch = ["hello", "", "world <|endoftext|>", "中文"]
    with pytest.raises(ValueError, match="endoftext"):
        tok4.encode_batch(batch)
    out = tok4.encode_batch(batch, allowed_special="all")
    assert out == [tok4.encode(s, allowed_special="all") for s in batch]
    assert tok4.encode_ordinary_batch(batch) == [tok4.encode_ordinary(s) for s in batch]
    assert tok4.decode_batch(out) == batch


def test_chunk_cache_is_bounded(tok4):
    tok = BPETokenizer(tok4.mergeable_ranks, tok4.pattern, cache_size=10)
    text = " ".join(f"w{i}" for i in range(100))
    assert tok.encode(text) == tok4.encode(text)
    assert tok.encode("a b c") == tok4.encode("a b c")
    assert len(tok._cache) <= 10


# ----------------------------------------------------------------------------- special tokens

EOT, FIM = "<|endoftext|>", "<|fim|>"


@pytest.mark.parametrize("s", [f"hi{EOT}there", f"{FIM}x{EOT}", f"a{EOT}{EOT}b{FIM}", "plain"])
@pytest.mark.parametrize("kwargs", [
    dict(allowed_special="all"),
    dict(allowed_special={EOT}, disallowed_special=()),
    dict(allowed_special={EOT, FIM}),
    dict(disallowed_special=()),
    dict(),
    dict(allowed_special={EOT}),
])
def test_special_rules_match_tiktoken(tok4, enc4, s, kwargs):
    try:
        expected = enc4.encode(s, **kwargs)
    except ValueError:
        with pytest.raises(ValueError, match="disallowed"):
            tok4.encode(s, **kwargs)
    else:
        assert tok4.encode(s, **kwargs) == expected


def test_special_rules(tok4):
    eot, fim = tok4.special_tokens[EOT], tok4.special_tokens[FIM]
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at position 2"):
        tok4.encode(f"hi{EOT}")
    assert tok4.encode(f"hi{EOT}", allowed_special="all")[-1] == eot
    assert tok4.encode(f"{FIM}", allowed_special={FIM}) == [fim]
    with pytest.raises(ValueError, match="fim"):
        tok4.encode(f"{EOT}{FIM}", allowed_special={EOT})
    plain = tok4.encode(f"hi{EOT}", disallowed_special=())
    assert eot not in plain and plain == tok4.encode_ordinary(f"hi{EOT}")
    assert tok4.decode([eot]) == EOT
    assert tok4.decode(tok4.encode(f"x{EOT}y", allowed_special="all")) == f"x{EOT}y"


def test_special_argument_errors(tok4):
    with pytest.raises(ValueError, match=r"'<\|nope\|>', which is not a special token"):
        tok4.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special must be 'all' or a collection"):
        tok4.encode("x", allowed_special=EOT)
    with pytest.raises(ValueError, match="disallowed_special must be 'all' or a collection"):
        tok4.encode("x", disallowed_special=EOT)
    # any strings may be disallowed
    with pytest.raises(ValueError, match="'secret'"):
        tok4.encode("my secret", disallowed_special={"secret"})


def test_constructor_checks(tok4):
    ranks = tok4.mergeable_ranks
    with pytest.raises(ValueError, match=r"'<x>' has id 0, which collides with the BPE token b'\\x00'"):
        BPETokenizer(ranks, special_tokens={"<x>": 0})
    with pytest.raises(ValueError, match="share the id 5000"):
        BPETokenizer(ranks, special_tokens={"<x>": 5000, "<y>": 5000})
    with pytest.raises(ValueError, match="lacks 1 single-byte token.*byte 7"):
        BPETokenizer({t: r for t, r in ranks.items() if t != b"\x07"})
    with pytest.raises(ValueError, match="rank 1 is given to two tokens"):
        BPETokenizer({**ranks, b"zzzz": 1})
    with pytest.raises(ValueError, match="rank of token b'zz' is -3"):
        BPETokenizer({**ranks, b"zz": -3})
    with pytest.raises(ValueError, match="unknown pattern name 'gpt5'"):
        BPETokenizer(ranks, pattern="gpt5")


def test_interop_properties(tok4):
    assert tok4.pattern == GPT4_SPLIT_PATTERN
    assert BPETokenizer(tok4.mergeable_ranks, "gpt2").pattern == GPT2_SPLIT_PATTERN
    assert BPETokenizer(tok4.mergeable_ranks, "cl100k").pattern == GPT4_SPLIT_PATTERN
    ranks = tok4.mergeable_ranks
    assert isinstance(ranks, dict) and all(isinstance(k, bytes) for k in ranks)
    ranks[b"mutating the copy"] = 10 ** 6
    assert b"mutating the copy" not in tok4.mergeable_ranks


# ----------------------------------------------------------------------------- long texts in blocks

CUT_PIECES = ["\n", "\r\n", "a", "Bc", " ", "  ", "x\n", "!\n", " \n", "\t", "'s", "12", "中", "é", "\u00a0", "?"]


@pytest.mark.parametrize("pattern", [GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN])
@given(st.lists(st.sampled_from(CUT_PIECES), max_size=60).map("".join))
def test_block_cuts_give_the_same_chunks(pattern, s):
    from tinygrad_llm.tokenizer import patterns
    split = patterns.compile_pattern(pattern)
    saved = patterns.BLOCK_CHARS
    patterns.BLOCK_CHARS = 1  # cut wherever it is allowed
    try:
        blocks = list(patterns.iter_blocks(s, pattern))
    finally:
        patterns.BLOCK_CHARS = saved
    assert "".join(blocks) == s
    assert [c for b in blocks for c in split.findall(b)] == split.findall(s)


def test_long_text_is_encoded_in_blocks(tok4, enc4):
    from tinygrad_llm.tokenizer import patterns
    text = small_text()[:20_000]
    saved = patterns.BLOCK_CHARS
    patterns.BLOCK_CHARS = 500
    try:
        assert len(list(patterns.iter_blocks(text, tok4.pattern))) > 10
        assert tok4.encode(text) == enc4.encode(text)
        blocked = BPETokenizer.train(text, 400).mergeable_ranks
    finally:
        patterns.BLOCK_CHARS = saved
    assert blocked == BPETokenizer.train(text, 400).mergeable_ranks
    assert len(list(patterns.iter_blocks(text, r"\S+|\s+"))) == 1  # user patterns are never cut


# ----------------------------------------------------------------------------- fast paths of encoding

ASCII_CHARS = "".join(map(chr, range(128)))
ASCII_PIECES = ["'s", "'S", "'ll", "'LL", "'Ve", "'re", "'d", "'m", "'t", "'x", "\r\n", "\n\n", "  ", "    ",
                " \n", "x\n", "123456", " 12", "!!!", " ?!", "the", " the", "A", "z", "\x0b", "\x0c", "\x1c",
                "\x1f", "_", "\x7f", "\x00"]
ascii_texts = st.lists(st.one_of(st.text(ASCII_CHARS, max_size=8), st.sampled_from(ASCII_PIECES)),
                       max_size=30).map("".join)


def test_ascii_classes_match_regex_classes():
    """The `re` twins use [A-Za-z], [0-9] and [\\t\\n\\x0b\\x0c\\r ] for \\p{L}, \\p{N}, \\s on ASCII."""
    import re

    import regex
    from tinygrad_llm.tokenizer import patterns
    for ours, theirs in [(patterns._L, r"\p{L}"), (patterns._N, r"\p{N}"), (patterns._S, r"\s")]:
        for c in ASCII_CHARS:
            assert bool(re.fullmatch(f"[{ours}]", c)) == bool(regex.fullmatch(theirs, c)), (ours, c)


@pytest.mark.parametrize("pattern", [GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN])
def test_ascii_split_equals_regex_split_exhaustively(pattern):
    """Every ASCII string of up to 3 characters from a set with one of each kind."""
    from itertools import product

    from tinygrad_llm.tokenizer.patterns import compile_ascii_pattern, compile_pattern
    fast, slow = compile_ascii_pattern(pattern), compile_pattern(pattern)
    assert fast is not None
    alphabet = " \t\n\r\x0bAzsL0'!_\x1c"
    for n in range(1, 4):
        for t in product(alphabet, repeat=n):
            s = "".join(t)
            assert fast.findall(s) == slow.findall(s), repr(s)


@pytest.mark.parametrize("pattern", [GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN])
@given(s=ascii_texts)
def test_ascii_split_equals_regex_split(pattern, s):
    from tinygrad_llm.tokenizer.patterns import compile_ascii_pattern, compile_pattern
    assert compile_ascii_pattern(pattern).findall(s) == compile_pattern(pattern).findall(s)


@given(ascii_texts)
def test_ascii_texts_match_tiktoken(tok4, enc4, tok2, enc2, s):
    assert tok4._split_ascii is not None and tok2._split_ascii is not None  # the fast path is taken
    assert tok4.encode_ordinary(s) == enc4.encode_ordinary(s)
    assert tok2.encode_ordinary(s) == enc2.encode_ordinary(s)


def test_user_pattern_has_no_ascii_twin():
    from tinygrad_llm.tokenizer.patterns import compile_ascii_pattern
    assert compile_ascii_pattern(r"\S+|\s+") is None
    tok = BPETokenizer.train("foo bar foo bar", 260, pattern=r"\S+|\s+")
    assert tok._split_ascii is None
    assert tok.decode(tok.encode("foo  bar\n")) == "foo  bar\n"


def reference_bpe(ranks: dict, b: bytes) -> list:
    """Plain rank-based BPE: rescan every pair, merge the leftmost lowest-ranked one."""
    parts = [bytes([x]) for x in b]
    while len(parts) > 1:
        pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


@given(assigned_texts)
def test_chunk_merge_equals_reference(tok4, s):
    """_bpe (latin-1 strings, whole-token fast path) against the plain algorithm, chunk by chunk."""
    ranks = tok4.mergeable_ranks
    for c in tok4._split.findall(s):
        assert tok4._bpe(c) == reference_bpe(ranks, c.encode("utf-8")), repr(c)


def test_chunk_merge_edge_cases(tok4):
    ranks = tok4.mergeable_ranks
    whole = next(t for t, r in ranks.items() if len(t) > 3 and t.isascii())

    def is_text(t):
        try:
            return bool(t.decode("utf-8"))
        except UnicodeDecodeError:
            return False
    multi = next(t for t in ranks if len(t) > 2 and not t.isascii() and is_text(t))  # e.g. "中" or " é"
    for c in ["a", " ", "\x00", "\xff", "é", "中", "👍", "\U0010ffff", whole.decode(), whole.decode() + "q",
              "q" + whole.decode(), "aaaa" * 20, "ab" * 40, " " * (LONG_CHUNK - 1)]:
        assert tok4._bpe(c) == reference_bpe(ranks, c.encode("utf-8")), repr(c)
    assert tok4._bpe(whole.decode()) == [ranks[whole]]  # the whole-token fast path
    assert tok4._bpe(multi.decode()) == [ranks[multi]]


def test_no_ascii_twin_without_possessive_quantifiers(monkeypatch, tok4):
    """If this Python's `re` cannot compile the twin, the `regex` split is used for every text."""
    import re

    from tinygrad_llm.tokenizer import patterns

    def old_compile(p, flags=0):
        raise re.error("multiple repeat")
    monkeypatch.setattr(patterns.re, "compile", old_compile)
    assert patterns.compile_ascii_pattern(GPT4_SPLIT_PATTERN) is None
    tok = BPETokenizer(tok4.mergeable_ranks, tok4.pattern, tok4.special_tokens)
    monkeypatch.undo()
    assert tok._split_ascii is None
    s = "Hello, world!  It's 12345 o'clock.\r\n\n  x"
    assert tok.encode(s) == tok4.encode(s)


@given(texts)
def test_gpt4_pattern_without_possessives_splits_the_same(s):
    """compile_pattern runs the GPT-4 pattern without possessive quantifiers (faster in `regex`)."""
    import regex
    from tinygrad_llm.tokenizer.patterns import compile_pattern
    fast = compile_pattern(GPT4_SPLIT_PATTERN)
    assert fast.pattern != GPT4_SPLIT_PATTERN
    assert fast.findall(s) == regex.compile(GPT4_SPLIT_PATTERN).findall(s)


def test_gpt4_pattern_without_possessives_exhaustively():
    from itertools import product

    import regex
    from tinygrad_llm.tokenizer.patterns import compile_pattern
    fast, slow = compile_pattern(GPT4_SPLIT_PATTERN), regex.compile(GPT4_SPLIT_PATTERN)
    alphabet = " \t\n\r\u00a0A\u00e9s1\u0661'!\u0301"
    for n in range(1, 5):
        for t in product(alphabet, repeat=n):
            s = "".join(t)
            assert fast.findall(s) == slow.findall(s), repr(s)
