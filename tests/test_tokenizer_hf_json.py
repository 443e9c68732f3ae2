"""BPETokenizer.save writes a Hugging Face tokenizer.json: JSON that `tokenizers` loads and
that encodes every text to the same ids; load_tokenizer reads it back (and files `tokenizers`
itself wrote)."""
import json
import random

import pytest

from tinygrad_llm.tokenizer import BPETokenizer, TokenizerFileError, load_tokenizer
from tinygrad_llm.tokenizer import io as tio

from test_tokenizer_files import EOT, SAMPLES, make_text, write_gpt2_files
from conftest import SHAKESPEARE

hf = pytest.importorskip("tokenizers", reason="the tokenizers library is in the 'ref' extra")

TEXT = make_text(4000) + "    \n\n   \t  x 1234567 89" * 30


def texts():
    rng = random.Random(3)
    out = [make_text(300, seed) for seed in range(10, 30)] + SAMPLES
    out += [" " * k + "x" + " " * (k // 2) + "\n" * k + "9" * k for k in range(30)]
    out += ["".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF), 10, 32, 9,
                                    rng.randint(0x1F300, 0x1F6FF)])) for _ in range(rng.randint(0, 120)))
            for _ in range(100)]
    if SHAKESPEARE.exists():
        out.append(SHAKESPEARE.read_text(encoding="utf-8")[:200_000])
    return out


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_saved_bpe_is_a_tokenizer_json_that_tokenizers_encodes_identically(tmp_path, pattern):
    tok = BPETokenizer.train(TEXT, 600, pattern=pattern, special_tokens=[EOT, "<|pad|>"])
    path = tmp_path / "tok.json"
    tok.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))        # a file named .json is JSON
    assert obj["model"]["type"] == "BPE" and len(obj["model"]["vocab"]) == 598
    theirs = hf.Tokenizer.from_file(str(path))
    assert theirs.get_vocab_size() == tok.vocab_size == 600
    for s in texts():
        ids = tok.encode(s)
        assert theirs.encode(s).ids == ids, s[:80]
        assert theirs.decode(ids) == tok.decode(ids)
    s = f"one{EOT}two <|pad|>"
    assert theirs.encode(s).ids == tok.encode(s, allowed_special="all")


def test_json_round_trip_keeps_everything(tmp_path):
    tok = BPETokenizer.train(TEXT, 500, special_tokens=[EOT])
    path = tmp_path / "tok.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert isinstance(back, BPETokenizer)
    assert back.mergeable_ranks == tok.mergeable_ranks
    assert back.pattern == tok.pattern            # the original (possessive) pattern, not the file's twin
    assert back.special_tokens == tok.special_tokens and back.fingerprint() == tok.fingerprint()


def test_reads_a_tokenizer_json_that_tokenizers_wrote(tmp_path):
    from tokenizers import decoders, models, pre_tokenizers
    write_gpt2_files(tmp_path, make_text(2000, 1), 380)
    t = hf.Tokenizer(models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([EOT])
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert tok.special_tokens == {EOT: t.token_to_id(EOT)}
    for s in SAMPLES + [make_text(500, 2), f"a{EOT}b"]:
        assert tok.encode(s, allowed_special="all") == t.encode(s).ids


@pytest.mark.parametrize("edit, match", [
    (lambda text: text[: len(text) // 2], "corrupt or truncated JSON"),
    (lambda text: "[1, 2]", "expected a JSON object"),
    (lambda text: text.replace('"type": "BPE"', '"type": "WordPiece"'), "expected a byte-level BPE model"),
    (lambda text: text.replace('"use_regex": false', '"use_regex": true', 1), "pre_tokenizer .* is not one"),
    (lambda text: text.replace('"normalizer": null', '"normalizer": {"type": "NFC"}'), "normalizer"),
    (lambda text: text.replace('"ignore_merges"', '"zz": 1, "ignore_merges"').replace(
        '"merges": [', '"merges": ["q z", ', 1), "merge 0: merged token 'qz' is not in model.vocab"),
])
def test_damaged_json_files(tmp_path, edit, match):
    path = tmp_path / "tok.json"
    BPETokenizer.train(TEXT, 300).save(path)
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=match):
        load_tokenizer(path)


def test_derived_merges_rebuild_every_token():
    tok = BPETokenizer.train(TEXT, 700)
    merges = tio.derive_merges(tok.mergeable_ranks)
    ranks = tok.mergeable_ranks
    assert len(merges) == len(ranks) - 256                   # a trained tokenizer: one merge per token
    assert [ranks[a + b] for a, b in merges] == sorted(r for t, r in ranks.items() if len(t) > 1)


def _digits_tokenizer(tmp_path, vocab_size=420):
    """A tokenizer.json in SmolLM's layout, written by `tokenizers`: special tokens first (ids
    0, 1), then the 256 bytes and the merges; Digits(individual_digits) before ByteLevel."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    t = hf.Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator([TEXT, "x = 12345 + 678.9; 2024-01-02  ", "  42   and\t 7 ", "\u0663\u0664 \u00bd"],
                          trainer)
    path = tmp_path / "tokenizer.json"
    t.save(str(path))
    return t, path


def test_reads_the_digits_then_byte_level_layout_of_smollm(tmp_path):
    """Every digit its own chunk, spaces before a digit kept whole (a digit ends the stretch
    GPT-2's pattern runs on), Unicode digits too: the same ids as `tokenizers`."""
    theirs, path = _digits_tokenizer(tmp_path)
    tok = load_tokenizer(path)
    assert tok.pattern == tio.GPT2_DIGITS_SPLIT_PATTERN
    assert tok.special_tokens == {EOT: 0, "<|im_start|>": 1}
    extra = ["a 1", "a  1", "x\n 1", "12 34", " 1a 2b", "1's", "  \t 9 ", "\u0663\u0664 5\u00bd", "Q4 2024: +3.5%"]
    for s in texts() + extra:
        assert tok.encode(s) == theirs.encode(s).ids, s[:80]
    # and written back (as Split + ByteLevel), `tokenizers` still encodes identically
    tok.save(tmp_path / "again.json")
    again = hf.Tokenizer.from_file(str(tmp_path / "again.json"))
    for s in extra + texts()[:40]:
        assert again.encode(s).ids == theirs.encode(s).ids, s[:80]
