"""Training loop, checkpoints, resume, the scripts' command lines and their errors."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FOX_TEXT
import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, backend
from tinygrad_llm.checkpoint import (CheckpointError, find_checkpoint, load_checkpoint, load_for_sampling,
                                     save_checkpoint)
from tinygrad_llm.data import load_text_dataset
from tinygrad_llm.presets import apply_overrides, preset
from tinygrad_llm.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TEXT = FOX_TEXT


@pytest.fixture
def data(fox_data):
    return fox_data


def small_model(vocab, **kw):
    tg.manual_seed(0)
    cfg = dict(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**cfg, **kw}))


def cfg(**kw):
    base = dict(batch_size=8, max_iters=60, learning_rate=3e-3, min_lr=3e-4, warmup_iters=5,
                lr_decay_iters=60, eval_interval=20, eval_iters=2, log_interval=10, seed=1)
    return TrainConfig(**{**base, **kw})


def test_smoke_loss_falls_on_a_fixed_text(data, tmp_path):
    m = small_model(data.vocab_size)
    logs = []
    out = train(m, data, cfg(), tmp_path / "out", tokenizer=data.tokenizer, log=logs.append)
    first, last = out["history"][0], out["history"][-1]
    assert first["iter"] == 0 and last["iter"] == 60
    assert first["val_loss"] > 3.0 and last["train_loss"] < 1.6, out["history"]
    assert any("ms/iter" in line and "tok/s" in line and "mfu" in line and "eta" in line for line in logs)
    rows = list(csv.DictReader(open(tmp_path / "out" / "history.csv")))
    assert [int(r["iter"]) for r in rows] == [0, 20, 40, 60]
    assert (tmp_path / "out" / "best" / "model.safetensors").exists()
    assert (tmp_path / "out" / "latest" / "tokenizer.json").exists()


def test_resume_gives_the_identical_loss_curve(data, tmp_path, device):
    """With dropout: on a GPU each step's dropout seed comes from the saved CPU generator, so the
    resumed run draws the masks the uninterrupted one drew. A real GPU's embedding backward adds
    with float atomics (in no fixed order), so there the two agree to float32 noise."""
    def losses(history):
        return np.array([(r["iter"], r["train_loss"], r["val_loss"]) for r in history])

    def model():
        return small_model(data.vocab_size, dropout=0.1).to(device)

    run = dict(log=lambda s: None)
    full = train(model(), data, cfg(max_iters=40), tmp_path / "a", **run)
    part = train(model(), data, cfg(max_iters=20), tmp_path / "b", **run)
    assert part["iter"] == 20
    m = model()
    # a fresh process would start with other RNG state: scramble it
    tg.manual_seed(999)
    rest = train(m, data, cfg(max_iters=40), tmp_path / "b", resume=True, **run)
    exact = device == "cpu"
    check = np.testing.assert_array_equal if exact else \
        (lambda a, b, err_msg="": np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=err_msg))
    check(losses(rest["history"]), losses(full["history"]))
    a = load_checkpoint(tmp_path / "a" / "latest").model
    b = load_checkpoint(tmp_path / "b" / "latest").model
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        check(p.numpy(), q.numpy(), err_msg=n)


def test_checkpoint_round_trip_and_errors(data, tmp_path):
    m = small_model(data.vocab_size, tie_weights=True)
    opt = m.configure_optimizers(0.1, 1e-3)
    path = save_checkpoint(tmp_path, "latest", m, opt, {"iter": 3, "best_val_loss": 1.0,
                                                        "rng": backend.get_rng_state()}, {"x": 1}, data.tokenizer)
    ck = load_checkpoint(path)
    assert ck.config == m.config and ck.trainer_state["iter"] == 3 and ck.train_config == {"x": 1}
    assert ck.model.lm_head.weight is ck.model.transformer.wte.weight
    for (n, p), (_, q) in zip(m.named_parameters(), ck.model.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert ck.tokenizer.encode("fox") == data.tokenizer.encode("fox")
    # the optimizer state loads into a fresh optimizer
    ck.load_optimizer(ck.model.configure_optimizers(0.1, 1e-3))
    # mismatched model
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(path, model=small_model(data.vocab_size, n_embd=16))
    # corrupt weights
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path)
    # corrupt config
    (path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_failed_save_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    m = small_model(data.vocab_size)
    tmp_path = tmp_path / "ckpts"
    save_checkpoint(tmp_path, "latest", m, trainer_state={"iter": 1})
    import tinygrad_llm.checkpoint as C

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(C.safetensors, "save_file", boom)
    with pytest.raises(CheckpointError, match="model.safetensors: disk full; the previous checkpoint"):
        save_checkpoint(tmp_path, "latest", m, trainer_state={"iter": 2})
    assert load_checkpoint(tmp_path / "latest").trainer_state["iter"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]   # no temp dirs left behind


def test_train_rejects_data_shorter_than_a_block(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "short.txt"
    f.write_text("x" * 40)
    d = load_text_dataset(f, "char")
    with pytest.raises(ValueError, match="block_size=16"):
        train(small_model(d.vocab_size), d, cfg(), tmp_path / "o")


def test_train_config_and_overrides():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"lr": 1})
    m, t = preset("cpu")
    assert (m["n_layer"], m["n_embd"], m["block_size"], t["batch_size"], t["max_iters"]) == (4, 128, 64, 12, 2000)
    m, t = apply_overrides(["--n_layer", "2", "--learning-rate=3e-4", "--bias", "false"], m, t)
    assert m["n_layer"] == 2 and t["learning_rate"] == 3e-4 and m["bias"] is False
    with pytest.raises(ValueError, match="unknown option --n_layers"):
        apply_overrides(["--n_layers", "2"], m, t)
    with pytest.raises(ValueError, match="expects an int"):
        apply_overrides(["--n_layer", "two"], m, t)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("tpu")


# ---------------------------------------------------------------- the scripts

def run_script(args, tmp_path, timeout=120, **popen):
    env = {**os.environ, "TINYGRAD_LLM_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


TINY_FLAGS = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "4",
              "--eval_interval", "10", "--eval_iters", "2", "--log_interval", "5", "--warmup_iters", "2"]


def test_train_script_end_to_end_then_resume_and_sample(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    r = run_script(["examples/train_shakespeare.py", "--data", str(data), "--out", str(out), "--max_iters", "10",
                    "--lr_decay_iters", "20", *TINY_FLAGS, "--sample-tokens", "20"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step 10: train loss" in r.stdout and "--- sample ---" in r.stdout
    r = run_script(["examples/train_shakespeare.py", "--data", str(data), "--out", str(out), "--resume",
                    "--n_embd", "32"], tmp_path)
    assert r.returncode == 2 and "--n_embd 32 differs from the checkpoint's n_embd=16" in r.stderr, r.stderr
    r = run_script(["examples/train_shakespeare.py", "--data", str(data), "--out", str(out), "--resume",
                    "--max_iters=20", "--sample-tokens", "5"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "step 20: train loss" in r.stdout
    assert json.loads((out / "latest" / "trainer_state.json").read_text())["iter"] == 20
    r = run_script(["examples/sample.py", "--ckpt", str(out), "--prompt", "the ", "--max-new-tokens", "15",
                    "--seed", "1", "--temperature", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the ") and len(r.stdout.splitlines()[0]) >= 15


@pytest.mark.parametrize("args, match", [
    (["--n_layers", "3"], "unknown option --n_layers"),
    (["--preset", "tpu"], "invalid choice: 'tpu'"),
    (["--device", "tpu"], "unknown device"),
    (["--data", "MISSING.txt"], "MISSING.txt"),
])
def test_train_script_bad_input(args, match, tmp_path):
    r = run_script(["examples/train_shakespeare.py", "--out", str(tmp_path / "run"), *args], tmp_path)
    assert r.returncode == 2 and match in r.stderr, r.stderr


def test_train_script_empty_data(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = run_script(["examples/train_shakespeare.py", "--out", str(tmp_path / "run"), "--data", str(empty)], tmp_path)
    assert r.returncode == 2 and "empty" in r.stderr


def test_gpu_without_cupy_is_a_clear_error(tmp_path):
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    r = run_script(["examples/train_shakespeare.py", "--out", str(tmp_path / "run"), "--device", "gpu"], tmp_path)
    assert r.returncode == 2 and ("CuPy" in r.stderr or "CUDA" in r.stderr), r.stderr


def test_sample_script_bad_checkpoint(tmp_path):
    r = run_script(["examples/sample.py", "--ckpt", str(tmp_path / "none")], tmp_path)
    assert r.returncode == 2 and "no checkpoint" in r.stderr


def test_find_checkpoint_takes_a_run_directory_best_then_latest(tmp_path):
    tg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    assert find_checkpoint(tmp_path / "none") == tmp_path / "none"       # load_checkpoint names it
    latest = save_checkpoint(tmp_path, "latest", model)
    assert find_checkpoint(tmp_path) == latest and find_checkpoint(latest) == latest
    best = save_checkpoint(tmp_path, "best", model)
    assert find_checkpoint(tmp_path) == best and find_checkpoint(str(latest)) == latest
    best.rename(tmp_path / ".best.old")                  # what an interrupted save of best/ leaves
    assert find_checkpoint(tmp_path) == best and load_checkpoint(best).path == tmp_path / ".best.old"


def test_load_for_sampling_needs_one_source_and_a_tokenizer(tmp_path):
    tg.manual_seed(0)
    save_checkpoint(tmp_path, "latest", GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)))
    with pytest.raises(ValueError, match="exactly one of ckpt"):
        load_for_sampling(ckpt=tmp_path, hf=tmp_path)
    with pytest.raises(ValueError, match="exactly one of ckpt"):
        load_for_sampling()
    with pytest.raises(CheckpointError, match="holds no tokenizer.json, so text cannot be encoded"):
        load_for_sampling(ckpt=tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_saves_a_checkpoint(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    env = {**os.environ, "TINYGRAD_LLM_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "examples/train_shakespeare.py", "--data", str(data), "--out", str(out),
                          "--max_iters", "100000", *TINY_FLAGS, "--eval_interval", "100000"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in p.stdout:
        if line.startswith("iter ") or time.time() > deadline:
            break
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    st = json.loads((out / "latest" / "trainer_state.json").read_text())
    assert st["iter"] >= 5 and f"stopped at iteration {st['iter']}" in rest


def test_loss_plot_png_when_matplotlib_is_installed(data, tmp_path):
    pytest.importorskip("matplotlib")
    train(small_model(data.vocab_size), data, cfg(max_iters=20, eval_interval=10), tmp_path / "o", log=lambda s: None)
    png = (tmp_path / "o" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
