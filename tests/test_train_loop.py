"""The training loop never loses a user's work: a new run does not replace an old one, one run
per folder, cleanup after killed runs, a NaN loss stops the run before the step; its schedule,
timing, MFU and history (in-process; the scripts are tested in test_train_script.py)."""
import math
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import FOX_TEXT
import tinygrad_llm as tg
import tinygrad_llm.train as T
from tinygrad_llm import GPT, GPTConfig
from tinygrad_llm.checkpoint import load_checkpoint
from tinygrad_llm.rundir import RunDirError, RunExistsError
from tinygrad_llm.train import NonFiniteLossError, TrainConfig, estimate_loss, train

TEXT = FOX_TEXT


@pytest.fixture
def data(fox_data):
    return fox_data


def tiny(vocab):
    tg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=2, n_embd=8))


def cfg(**kw):
    base = dict(batch_size=4, max_iters=20, learning_rate=3e-3, min_lr=3e-4, eval_interval=10, eval_iters=2,
                log_interval=5, seed=1)
    return TrainConfig(**{**base, **kw})


def quiet(s):
    pass


# ---------------------------------------------------------------- never lose or replace work

def test_a_new_run_does_not_replace_a_run_unless_asked(data, tmp_path):
    out = tmp_path / "run"
    first = train(tiny(data.vocab_size), data, cfg(), out, tokenizer=data.tokenizer, log=quiet)
    best = (out / "best" / "model.safetensors").read_bytes()
    history = (out / "history.csv").read_bytes()
    with pytest.raises(RunExistsError, match=r"run' already holds a training run \(latest/ at iteration 20, "
                                             r"best/ at iteration 20, history.csv.*--resume.*--overwrite"):
        train(tiny(data.vocab_size), data, cfg(max_iters=10), out, tokenizer=data.tokenizer, log=quiet)
    assert (out / "best" / "model.safetensors").read_bytes() == best
    assert (out / "history.csv").read_bytes() == history
    again = train(tiny(data.vocab_size), data, cfg(max_iters=10), out, tokenizer=data.tokenizer, log=quiet,
                  overwrite=True)
    assert again["iter"] == 10 and first["iter"] == 20
    assert load_checkpoint(out / "best").trainer_state["iter"] == 10          # nothing of the old run is left
    assert [r["iter"] for r in again["history"]] == [0, 10]


def test_stale_temporary_files_of_a_killed_run_are_removed_at_start(data, tmp_path):
    out = tmp_path / "run"
    train(tiny(data.vocab_size), data, cfg(max_iters=10), out, tokenizer=data.tokenizer, log=quiet)
    (out / ".latest.tmp-dead").mkdir()
    (out / ".latest.tmp-dead" / "model.safetensors").write_bytes(b"partial")
    (out / ".history.csv.xyz.tmp").write_text("partial")
    (out / ".trash-best-0000").mkdir()
    train(tiny(data.vocab_size), data, cfg(max_iters=20), out, tokenizer=data.tokenizer, resume=True, log=quiet)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".lock"]


def test_a_second_process_cannot_train_into_a_folder_in_use(data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tinygrad_llm.rundir import lock_run_dir\n"
         "with lock_run_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"in use by another training \(pid {holder.pid} on "):
            train(tiny(data.vocab_size), data, cfg(max_iters=5), out, tokenizer=data.tokenizer, log=quiet)
    finally:
        holder.kill()                       # as kill -9: the lock must not stay stuck
        holder.wait(timeout=30)
    assert train(tiny(data.vocab_size), data, cfg(max_iters=5), out, tokenizer=data.tokenizer, log=quiet)["iter"] == 5


def nan_loss_from_call(model, n):
    """Make the model's training loss NaN from its n-th training forward on."""
    forward, calls = model.forward, [0]

    def patched(idx, targets=None, **kw):
        logits, loss = forward(idx, targets, **kw)
        if model.training:
            calls[0] += 1
            if calls[0] >= n:
                loss = loss * float("nan")
        return logits, loss
    model.forward = patched


def test_a_nan_loss_stops_the_run_before_the_step_and_keeps_the_checkpoints(data, tmp_path, device):
    """On the CPU the run stops at once; on a GPU at its next read of the device (iteration 15
    here, log_interval 5), the NaN steps having been skipped there: the same error either way."""
    out = tmp_path / "run"
    model = tiny(data.vocab_size).to(device)
    nan_loss_from_call(model, 13)
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at iteration 13; nothing from that step was "
                                                 r"saved and the last checkpoint, .*latest \(iteration 10\), is kept"
                                                 r"\. Try a lower learning_rate \(now .*\) or a lower grad_clip "
                                                 r"\(now 1\)"):
        train(model, data, cfg(), out, tokenizer=data.tokenizer, log=quiet)
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())     # the step was not taken
    for name in ("latest", "best"):
        ck = load_checkpoint(out / name)
        assert ck.trainer_state["iter"] == 10
        assert all(np.isfinite(p.numpy()).all() for p in ck.model.parameters())


def test_the_summary_reports_only_a_best_checkpoint_that_was_written(data, tmp_path):
    out = train(tiny(data.vocab_size), data, cfg(max_iters=0), tmp_path / "run", tokenizer=data.tokenizer,
                log=quiet)
    assert out["history"][0]["iter"] == 0 and out["best_val_loss"] is None and out["best_iter"] is None
    assert not (tmp_path / "run" / "best").exists()
    out = train(tiny(data.vocab_size), data, cfg(max_iters=10), tmp_path / "run2", tokenizer=data.tokenizer,
                log=quiet)
    best = load_checkpoint(tmp_path / "run2" / "best").trainer_state
    assert (out["best_iter"], out["best_val_loss"]) == (best["iter"], best["best_val_loss"]) == \
        (10, out["history"][-1]["val_loss"])


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_every_file_of_a_run_gets_the_same_permissions(data, tmp_path):
    old = os.umask(0o027)
    try:
        train(tiny(data.vocab_size), data, cfg(max_iters=10), tmp_path / "run", tokenizer=data.tokenizer, log=quiet)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}, \
        {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}


# ---------------------------------------------------------------- the schedule

def test_the_schedule_follows_max_iters_and_warmup_never_outlasts_the_run(data, tmp_path):
    assert (TrainConfig(max_iters=500).lr_decay_iters, TrainConfig(max_iters=500).warmup_iters) == (500, 50)
    assert (TrainConfig(max_iters=100000).lr_decay_iters, TrainConfig(max_iters=100000).warmup_iters) == (100000, 100)
    assert TrainConfig(max_iters=20).warmup_iters == TrainConfig(max_iters=20, lr_decay_iters=5000).warmup_iters == 2
    out = train(tiny(data.vocab_size), data, cfg(max_iters=20), tmp_path / "run", tokenizer=data.tokenizer, log=quiet)
    assert out["history"][-1]["lr"] == pytest.approx(3e-4)                # the run ends at min_lr


@pytest.mark.parametrize("kw, match", [
    (dict(beta1=2), "beta1 must be a finite number >= 0 and < 1, got 2"),
    (dict(beta2=float("nan")), "beta2 must be a finite number"),
    (dict(learning_rate=float("nan")), "learning_rate must be a finite number >= 0"),
    (dict(weight_decay=float("inf")), "weight_decay must be a finite number"),
    (dict(grad_clip=float("nan")), r"grad_clip must be a finite number >= 0 \(0 turns clipping off\)"),
    (dict(warmup_iters=-5), "warmup_iters must be an integer >= 0, got -5"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(lr_decay_iters=50, warmup_iters=100), r"warmup_iters \(100\) must not exceed lr_decay_iters \(50\)"),
    (dict(max_iters=50, lr_decay_iters=500, warmup_iters=100), r"warmup_iters \(100\) must not exceed max_iters"),
    (dict(peak_flops=0.0), "peak_flops must be a finite number > 0"),
    (dict(peak_flops=float("nan")), "peak_flops must be a finite number > 0"),
    (dict(min_lr=1.0, learning_rate=0.1), r"min_lr \(1\) must not exceed learning_rate"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(decay_lr="yes"), "decay_lr must be true or false"),
])
def test_bad_train_config_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# ---------------------------------------------------------------- what a user sees while it runs

class Clock:
    """A fake clock: training batches take 50 ms (the first one 10 s: warm-up), eval batches 1 s."""

    def __init__(self, monkeypatch):
        self.t, self.train_calls = 0.0, 0
        real = T.get_batch

        def get_batch(ids, *a, **k):
            if k.get("rng") is not None:
                self.t += 1.0
            else:
                self.train_calls += 1
                self.t += 10.0 if self.train_calls == 1 else 0.05
            return real(ids, *a, **k)
        monkeypatch.setattr(T, "get_batch", get_batch)
        monkeypatch.setattr(T, "_now", lambda: self.t)


def test_ms_per_iter_and_eta_leave_out_the_first_step_and_evaluations(data, tmp_path, monkeypatch):
    Clock(monkeypatch)
    monkeypatch.setattr(T.hardware, "peak_flops", lambda device, tf32=False: None)
    logs = []
    train(tiny(data.vocab_size), data, cfg(max_iters=40, eval_interval=10, eval_iters=20), tmp_path / "run",
          log=logs.append)
    lines = [s for s in logs if s.startswith("iter ")]
    assert [s.split(":")[0] for s in lines] == [f"iter {i}" for i in range(5, 41, 5)]
    assert all(", 50.0 ms/iter, 640 tok/s, mfu n/a, eta " in s for s in lines), lines
    assert lines[0].endswith("eta 0:01") and lines[-1].endswith("eta 0:00")      # 35 and 0 steps of 50 ms


def test_mfu_against_the_given_peak(data, tmp_path, monkeypatch):
    Clock(monkeypatch)
    model = tiny(data.vocab_size)
    logs = []
    train(model, data, cfg(max_iters=10, peak_flops=1e6), tmp_path / "run", log=logs.append)
    mfu = model.estimate_mfu(4 * 8, 0.05, peak_flops=1e6) * 100
    assert any(f"mfu {mfu:.2f}%" in s for s in logs), logs


def test_a_long_evaluation_reports_progress_and_stops_when_asked(data, tmp_path, monkeypatch):
    Clock(monkeypatch)
    monkeypatch.setattr(T, "EVAL_PROGRESS_S", 3.0)
    logs = []
    train(tiny(data.vocab_size), data, cfg(max_iters=0, eval_iters=5), tmp_path / "run", log=logs.append)
    assert [s for s in logs if "evaluating" in s] == ["  evaluating step 0: 3/10 batches",
                                                      "  evaluating step 0: 6/10 batches",
                                                      "  evaluating step 0: 9/10 batches"]
    asked = iter([False, False, True])
    assert estimate_loss(tiny(data.vocab_size), data, 4, 5, 0, should_stop=lambda: next(asked)) is None


def test_history_time_keeps_counting_across_resumes(data, tmp_path, monkeypatch):
    Clock(monkeypatch)
    out = tmp_path / "run"
    train(tiny(data.vocab_size), data, cfg(max_iters=20), out, log=quiet)
    rest = train(tiny(data.vocab_size), data, cfg(max_iters=40), out, resume=True, log=quiet)
    times = [r["time_s"] for r in rest["history"]]
    assert [r["iter"] for r in rest["history"]] == [0, 10, 20, 30, 40]
    assert all(b > a for a, b in zip(times, times[1:])), times


def test_optional_fields_can_be_set_from_the_command_line():
    from tinygrad_llm.presets import apply_overrides
    _, train_fields = apply_overrides(["--peak_flops", "1e12", "--lr_decay_iters", "none", "--warmup_iters=7"], {}, {})
    assert train_fields == {"peak_flops": 1e12, "lr_decay_iters": None, "warmup_iters": 7}
    with pytest.raises(ValueError, match="--peak_flops expects a float, got 'fast'"):
        apply_overrides(["--peak_flops", "fast"], {}, {})
    with pytest.raises(ValueError, match="unknown option --vocab_size"):
        apply_overrides(["--vocab_size", "100"], {}, {}, exclude=("vocab_size",))
