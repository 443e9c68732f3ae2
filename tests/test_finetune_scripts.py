"""examples/finetune_instructions.py and examples/dpo.py end to end (from our checkpoint and from a
GPT-2 folder made by transformers, with and without LoRA), their outputs loading in
examples/sample.py (--instruction), and every bad input answered with one error line."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, write_tiny_tokenizer
from finetune_data import pairs, records, template_tokenizer, words

from tinygrad_llm import GPT, GPTConfig, manual_seed
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.finetune import DPO_FIELDS, END_OF_TEXT, load_records
from tinygrad_llm.nn import lora
from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer


def script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SFT, DPO, SAMPLE, TASKS = script("finetune_instructions"), script("dpo"), script("sample"), script("make_number_tasks")


def run(mod, args, capsys):
    """(exit code, stdout, stderr) of a script's main(args), run in this process."""
    try:
        code = mod.main([str(a) for a in args])
    except SystemExit as e:              # cli.fail and argparse errors exit
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    ws = words()
    (d / "sft.json").write_text(json.dumps(records(ws[:12])))
    (d / "dpo.jsonl").write_text("\n".join(json.dumps(r) for r in pairs(ws[:12])))
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """One of our checkpoints whose byte-level BPE has no end-of-text token (one is added)."""
    d = tmp_path_factory.mktemp("ckpt")
    tok = template_tokenizer(eos=False)
    manual_seed(0)
    save_checkpoint(d, "latest", GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                                              n_embd=16)), tokenizer=tok)
    return d


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A GPT-2 folder written by transformers, with GPT-2 style vocab.json + merges.txt."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("hf")
    write_tiny_tokenizer(d)
    n = len(json.loads((d / "vocab.json").read_text()))
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=n, n_positions=256, n_embd=16, n_layer=1, n_head=2, bos_token_id=None,
        eos_token_id=None)).save_pretrained(d)
    return d


FAST = ["--epochs", "1", "--batch-size", "4", "--log-interval", "0", "--max-new-tokens", "4", "--show", "1"]


# ---------------------------------------------------------------------------- end to end

def test_sft_from_our_checkpoint_then_sample_with_instruction(ckpt, data, tmp_path, capsys):
    out = tmp_path / "sft"
    code, stdout, err = run(SFT, ["--data", data / "sft.json", "--ckpt", ckpt, "--out", out, "--lr", "1e-3",
                                  "--val-fraction", "0.25", *FAST], capsys)
    assert code == 0, err
    assert "epoch 1: train loss" in stdout and ", val loss " in stdout and "--- held-out instructions ---" in stdout
    for name in ("best", "latest"):
        c = load_checkpoint(out / name)
        assert c.tokenizer.special_tokens[END_OF_TEXT] == c.config.vocab_size - 1   # added, model grown
        assert c.train_config["finetune"] == "sft" and c.train_config["mask_prompt"] is True
    assert not (out / "adapter").exists()
    code, stdout, err = run(SAMPLE, ["--ckpt", out, "--instruction", "Reverse the word.", "--input", "CDE",
                                     "--temperature", "0", "--max-new-tokens", "5"], capsys)
    assert code == 0, err
    assert stdout.startswith("Below is an instruction that describes a task, paired with an input")
    assert "### Input:\nCDE\n\n### Response:\n" in stdout
    # a second run into the same folder is refused, then allowed with --overwrite (and stale best/ goes)
    code, _, err = run(SFT, ["--data", data / "sft.json", "--ckpt", ckpt, "--out", out, *FAST], capsys)
    assert code == 2 and "already holds a run (latest, best)" in err and "--overwrite" in err
    code, _, err = run(SFT, ["--data", data / "sft.json", "--ckpt", ckpt, "--out", out, "--overwrite",
                             "--val-fraction", "0", *FAST], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["latest"]


def test_sft_with_lora_from_a_gpt2_folder_as_a_script(hf_dir, data, tmp_path):
    out = tmp_path / "lora"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "examples/finetune_instructions.py", "--data", str(data / "sft.json"),
                        "--hf", str(hf_dir), "--out", str(out), "--lora-rank", "2", "--lora-targets", "c_attn",
                        "--lr", "1e-2", *FAST], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(LoRA r=2, alpha=4 on 1 layers)" in r.stdout
    cfg = json.loads((out / "adapter" / lora.ADAPTER_CONFIG).read_text())
    assert cfg["r"] == 2 and cfg["target_modules"] == ["c_attn"] and cfg["base_model_name_or_path"] == str(hf_dir)
    # the checkpoint is the base with the adapter merged in: the same as loading the adapter onto the base
    from tinygrad_llm.hf import load_gpt2
    base = load_gpt2(hf_dir)
    lora.load_lora(base, out / "adapter")
    merged = load_checkpoint(out / "latest").model.eval()
    idx = np.arange(20)[None]
    np.testing.assert_allclose(merged(idx)[0].numpy(), base(idx)[0].numpy(), atol=1e-5)
    assert np.abs(merged(idx)[0].numpy() - load_gpt2(hf_dir)(idx)[0].numpy()).max() > 1e-4   # it trained
    r = subprocess.run([sys.executable, "examples/sample.py", "--ckpt", str(out), "--instruction", "Reverse the word.",
                        "--max-new-tokens", "3", "--temperature", "0"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "### Response:\n" in r.stdout, r.stderr


def test_dpo_script_with_lora(ckpt, data, tmp_path, capsys):
    out = tmp_path / "dpo"
    code, stdout, err = run(DPO, ["--data", data / "dpo.jsonl", "--ckpt", ckpt, "--out", out, "--lora-rank", "4",
                                  "--lr", "1e-2", "--val-fraction", "0.25", "--epochs", "2", *FAST[2:]], capsys)
    assert code == 0, err
    assert "epoch 2: train loss" in stdout and "margin" in stdout and "accuracy" in stdout
    assert {"best", "latest", "adapter"} <= {p.name for p in out.iterdir()}
    c = load_checkpoint(out / "latest")
    assert c.train_config["finetune"] == "dpo" and c.train_config["beta"] == 0.1
    assert [h["epoch"] for h in c.trainer_state["history"]] == [1, 2]
    assert c.trainer_state["history"][1]["val"]["margin"] > 0


# ---------------------------------------------------------------------------- bad input: one line, exit 2

def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize("mod, args, match", [
    (SFT, ["--epochs", "0"], "argument --epochs: expected a whole number >= 1, got '0'"),
    (SFT, ["--lora-rank", "0"], "argument --lora-rank: expected a whole number >= 1, got '0'"),
    (SFT, ["--lora-rank", "-3"], "argument --lora-rank: expected a whole number >= 1, got '-3'"),
    (SFT, ["--lora-alpha", "8"], "--lora-alpha given without --lora-rank"),
    (SFT, ["--lora-rank", "2", "--lora-targets", "c_atn"], "target 'c_atn' matches no Linear layer"),
    (SFT, ["--val-fraction", "1"], "argument --val-fraction: expected a finite number >= 0 and < 1, got '1'"),
    (SFT, ["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (SFT, ["--device", "tpu"], "unknown device 'tpu'"),
    (SFT, ["--seed", "-1"], "argument --seed: expected a whole number >= 0, got '-1'"),
    (DPO, ["--seed", "-1"], "argument --seed: expected a whole number >= 0, got '-1'"),
    (DPO, ["--beta", "0"], "argument --beta: expected a finite number > 0, got '0'"),
    (DPO, ["--beta", "-1"], "argument --beta: expected a finite number > 0, got '-1'"),
    (DPO, ["--lora-rank", "0"], "argument --lora-rank: expected a whole number >= 1, got '0'"),
])
def test_bad_flags(mod, args, match, ckpt, data, tmp_path, capsys):
    d = "dpo.jsonl" if mod is DPO else "sft.json"
    code, out, err = run(mod, ["--data", data / d, "--ckpt", ckpt, "--out", tmp_path / "o", *args], capsys)
    assert code == 2 and err.startswith("error: ") and match in err, err
    assert err.count("\n") == 1 and "training:" not in out and not (tmp_path / "o").exists()


def test_bad_data(ckpt, tmp_path, capsys):
    cases = [
        (SFT, write(tmp_path, "missing.json", '[{"instruction": "a", "input": ""}]'),
         "record 0 lacks the key(s) ['output']"),
        (DPO, write(tmp_path, "missing.jsonl", '{"instruction": "a", "chosen": "b"}'),
         "record 0 lacks the key(s) ['rejected']"),
        (SFT, write(tmp_path, "empty.json", ""), "is empty"),
        (DPO, write(tmp_path, "none.json", "[]"), "holds no records"),
        (SFT, tmp_path / "absent.json", "no data file"),
        (SFT, write(tmp_path, "long.json", json.dumps([{"instruction": "Reverse the word.", "output": "CDE " * 20}])),
         "longer than the model's context allows (at most block_size + 1 = 33 tokens)"),
        (DPO, write(tmp_path, "long.jsonl", json.dumps({"instruction": "Reverse the word.", "chosen": "C",
                                                         "rejected": "D" * 40})),
         "longer than the model's context allows"),
    ]
    for mod, path, match in cases:
        code, out, err = run(mod, ["--data", path, "--ckpt", ckpt, "--out", tmp_path / "o", "--val-fraction", "0"],
                             capsys)
        assert code == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1, (path, err)
        assert "training:" not in out and not (tmp_path / "o").exists()


def test_tokenizer_that_does_not_match_the_model(hf_dir, data, tmp_path, capsys):
    bigger = tmp_path / "hf"
    bigger.mkdir()
    for f in hf_dir.iterdir():
        (bigger / f.name).write_bytes(f.read_bytes())
    vocab = json.loads((hf_dir / "vocab.json").read_text())
    vocab["<|extra|>"] = len(vocab)                     # one more token than the model has rows
    (bigger / "vocab.json").write_text(json.dumps(vocab))
    for mod, d in ((SFT, "sft.json"), (DPO, "dpo.jsonl")):
        code, _, err = run(mod, ["--data", data / d, "--hf", bigger, "--out", tmp_path / "o"], capsys)
        assert code == 2 and "do not belong to this model: they have 265 tokens, the model only 264" in err, err
        assert err.count("\n") == 1


def test_a_char_checkpoint_cannot_be_instruction_tuned(data, tmp_path, capsys):
    tok = CharTokenizer.from_text("abcdef")
    save_checkpoint(tmp_path / "c", "latest", GPT(GPTConfig(vocab_size=6, block_size=16, n_layer=1, n_head=2,
                                                            n_embd=16)), tokenizer=tok)
    code, _, err = run(SFT, ["--data", data / "sft.json", "--ckpt", tmp_path / "c", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "char tokenizer has no end-of-text token" in err and err.count("\n") == 1, err


def test_missing_checkpoint_and_missing_tokenizer(data, tmp_path, capsys):
    code, _, err = run(SFT, ["--data", data / "sft.json", "--ckpt", tmp_path / "none", "--out", tmp_path / "o"],
                       capsys)
    assert code == 2 and "no checkpoint at" in err
    save_checkpoint(tmp_path / "nt", "latest", GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2,
                                                             n_embd=16)))
    code, _, err = run(DPO, ["--data", data / "dpo.jsonl", "--ckpt", tmp_path / "nt", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "holds no tokenizer.json" in err


def test_sample_instruction_flags(ckpt, capsys):
    code, _, err = run(SAMPLE, ["--ckpt", ckpt, "--input", "CDE"], capsys)
    assert code == 2 and "give --instruction too" in err
    with pytest.raises(SystemExit):
        SAMPLE.main(["--ckpt", str(ckpt), "--prompt", "x", "--instruction", "y"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_bpe_tokenizer_with_other_special_tokens_keeps_them(tmp_path):
    """with_end_of_text adds <|endoftext|> after the last id, keeping the tokenizer's specials."""
    from tinygrad_llm.finetune import with_end_of_text
    tok = BPETokenizer.train("hello world " * 5, 260, special_tokens={"<|pad|>": 260})
    model = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16))
    m, t, eos = with_end_of_text(model, tok)
    assert eos == 261 and t.special_tokens == {"<|pad|>": 260, END_OF_TEXT: 261}
    assert m is model                                    # a spare row: no growing


def test_make_number_tasks(tmp_path, capsys):
    """The worked example's data: valid records for both scripts, the same every time, never overwritten unasked."""
    out = tmp_path / "numbers"
    code, stdout, err = run(TASKS, ["--out", out, "--count", "5"], capsys)
    assert code == 0, err
    sft, prefs = load_records(out / "instructions.json"), load_records(out / "preferences.json", DPO_FIELDS)
    assert len(sft) == 10 and len(prefs) == 200
    for r in sft:
        assert r["output"] == (r["input"][::-1] if r["instruction"] == "Reverse the digits." else f"{r['input']} {r['input']}")
    assert all(p["chosen"] == p["input"][::-1] and p["rejected"] == p["input"] for p in prefs)
    assert not {r["input"] for r in sft} & {p["input"] for p in prefs}          # different numbers
    first = (out / "instructions.json").read_bytes()
    code, _, err = run(TASKS, ["--out", out, "--count", "5"], capsys)
    assert code == 2 and "already exist" in err and err.count("\n") == 1
    code, _, err = run(TASKS, ["--out", out, "--count", "5", "--overwrite"], capsys)
    assert code == 0 and (out / "instructions.json").read_bytes() == first
