"""Tests for examples/train_tokenizer.py (run in-process)."""
import importlib.util
from pathlib import Path

import pytest

from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_tokenizer.py"
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_tokenizer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def test_trains_saves_and_reports(script, data, tmp_path, capsys):
    out = tmp_path / "tok.txt"
    assert script.main(["--data", str(data), "--vocab-size", "300", "--out", str(out), "--quiet",
                        "--special", "<|endoftext|>"]) == 0
    printed = capsys.readouterr().out
    assert "trained bpe tokenizer: 300 tokens in" in printed and "bytes per token" in printed
    tok = load_tokenizer(out)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300
    assert tok.special_tokens == {"<|endoftext|>": 299}
    assert tok.fingerprint() in printed


def test_char_kind(script, data, tmp_path, capsys):
    out = tmp_path / "chars.txt"
    assert script.main(["--data", str(data), "--kind", "char", "--out", str(out)]) == 0
    assert isinstance(load_tokenizer(out), CharTokenizer)
    assert "1.00 bytes per token" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--data", "{tmp}/missing.txt", "--vocab-size", "300"], "data file .*missing.txt' does not exist"),
    (["--data", "{tmp}/empty.txt", "--vocab-size", "300"], "empty.txt' is empty"),
    (["--data", "{tmp}/binary.txt", "--vocab-size", "300"], "is not UTF-8 text"),
    (["--data", "{tmp}/input.txt", "--vocab-size", "100"], "--vocab-size 100 is too small: it must be at least 256"),
    (["--data", "{tmp}/input.txt", "--vocab-size", "256", "--special", "<a>"], "at least 257"),
    (["--data", "{tmp}/input.txt"], "--vocab-size is required"),
    (["--data", "{tmp}/input.txt", "--vocab-size", "many"], "--vocab-size: expected a whole number >= 1, got 'many'"),
    (["--data", "{tmp}/input.txt", "--vocab-size", "300", "--pattern", "gpt3"], "unknown pattern name 'gpt3'"),
])
def test_errors(script, data, tmp_path, capsys, args, match):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\xfa")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--out", str(tmp_path / "o.txt")]
    with pytest.raises(SystemExit) as e:
        code = script.main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    import re
    err = capsys.readouterr().err
    assert re.search(match, err) and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o.txt").exists()


def test_out_is_json_and_an_existing_file_is_kept(script, data, tmp_path, capsys):
    import json
    out = tmp_path / "tok.json"
    assert script.main(["--data", str(data), "--vocab-size", "270", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["model"]["type"] == "BPE"
    before = out.read_bytes()
    with pytest.raises(SystemExit) as e:
        script.main(["--data", str(data), "--vocab-size", "280", "--out", str(out), "--quiet"])
    assert e.value.code == 2 and "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert script.main(["--data", str(data), "--vocab-size", "280", "--out", str(out), "--quiet",
                        "--overwrite"]) == 0
    assert load_tokenizer(out).vocab_size == 280


def test_data_defaults_to_tiny_shakespeare(script, tmp_path, monkeypatch, capsys, shakespeare_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tinyshakespeare.txt").write_bytes(shakespeare_path.read_bytes())
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(cache))
    out = tmp_path / "tok.json"
    assert script.main(["--vocab-size", "258", "--out", str(out), "--quiet"]) == 0
    assert "tinyshakespeare.txt (1,115,394 bytes)" in capsys.readouterr().out
    assert load_tokenizer(out).vocab_size == 258
