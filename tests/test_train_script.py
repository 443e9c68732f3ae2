"""The scripts as a user runs them: examples/train_shakespeare.py and examples/sample.py.

Bad input gives one `error:` line and exit code 2 before any work; a run is never replaced or
lost; resuming continues the run that was saved; signals save (or stop) cleanly. Most cases
run as subprocesses; the many bad-input cases run in one subprocess each (runpy, as
`python script.py ...` does), which keeps the suite fast.
"""
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FOX_TEXT
from tinygrad_llm.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN, SAMPLE = "examples/train_shakespeare.py", "examples/sample.py"
TEXT = FOX_TEXT
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "4",
        "--eval_interval", "10", "--eval_iters", "2", "--log_interval", "5"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and paths")


def env(cache, **more):
    return {**os.environ, "TINYGRAD_LLM_CACHE": str(cache), "PYTHONUNBUFFERED": "1", **more}


def run(args, cache, timeout=120, **kw):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env(cache), capture_output=True,
                          text=True, timeout=timeout, **kw)


def one_error_line(r, match):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and match in r.stderr, r.stderr


DRIVER = r"""
import contextlib, io, json, os, runpy, sys, traceback
script = sys.argv[1]
results = []
for argv, extra_env in json.loads(sys.stdin.read()):
    saved = {k: os.environ.get(k) for k in extra_env}
    os.environ.update(extra_env)
    sys.argv = [script] + argv
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:
            code, err = "traceback", io.StringIO(traceback.format_exc())
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_many(script, cases, cache):
    """[(exit code, stdout, stderr)] of `python script *argv` for each (argv, env) of cases, in one process."""
    r = subprocess.run([sys.executable, "-c", DRIVER, script], cwd=REPO, env=env(cache), capture_output=True,
                       text=True, timeout=300, input=json.dumps([[list(map(str, a)), e] for a, e in cases]))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


class Lines:
    """A running script whose stdout lines are read by a thread, so every wait has a deadline."""

    def __init__(self, args, cache):
        self.p = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env(cache), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.q, self.seen = queue.Queue(), []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, text, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.q.get(timeout=max(deadline - time.time(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        self.p.kill()
        raise AssertionError(f"no line with {text!r} within {timeout} s; got {''.join(self.seen)[-2000:]}"
                             f"{self.p.stderr.read()[-2000:]}")

    def finish(self, timeout=60):
        """(exit code, the rest of stdout, stderr), waiting at most timeout seconds."""
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise
        rest = []
        while True:
            try:
                line = self.q.get(timeout=10)
            except queue.Empty:
                break
            if line is None:
                break
            rest.append(line)
        return self.p.returncode, "".join(self.seen + rest), self.p.stderr.read()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One finished run (10 iterations) on a text of our own, and its cache."""
    root = tmp_path_factory.mktemp("made")
    (root / "fox.txt").write_text(TEXT)
    r = run([TRAIN, "--data", root / "fox.txt", "--out", root / "run", "--max_iters", "10", *TINY,
             "--sample-tokens", "20"], root / "cache")
    assert r.returncode == 0, r.stderr
    return root, r.stdout


def copy_run(made, tmp_path):
    root, _ = made
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run", root / "cache"


# ---------------------------------------------------------------- bad input: one line, exit 2, no work

def test_bad_input_is_one_error_line_before_any_work(tmp_path, made):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT)
    (tmp_path / "afile").write_text("x")
    unwritable = "/sys/tinygrad-llm-test-out" if os.geteuid() == 0 else tmp_path / "ro" / "out"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    run_dir, _ = copy_run(made, tmp_path)
    damaged = {}
    for name, how in [("optimizer.safetensors", "missing"), ("trainer_state.json", "truncated"),
                      ("tokenizer.json", "missing")]:
        d = tmp_path / f"damaged-{name}"
        shutil.copytree(run_dir, d)
        f = d / "latest" / name
        f.unlink() if how == "missing" else f.write_text(f.read_text()[:20])
        damaged[name] = d
    base = ["--data", data, *TINY]
    cases = [  # (argv, extra env, the message)
        (["--vocab_size", "100", *base], {}, "--vocab-size 100 is too small: a byte-level BPE vocabulary holds "
                                             "the 256 byte tokens"),
        (["--beta1", "2", *base], {}, "TrainConfig.beta1 must be a finite number >= 0 and < 1, got 2.0"),
        (["--learning_rate", "nan", *base], {}, "TrainConfig.learning_rate must be a finite number >= 0"),
        (["--weight_decay", "inf", *base], {}, "TrainConfig.weight_decay must be a finite number >= 0"),
        (["--grad_clip", "nan", *base], {}, "TrainConfig.grad_clip must be a finite number >= 0 (0 turns"),
        (["--warmup_iters", "-5", *base], {}, "TrainConfig.warmup_iters must be an integer >= 0, got -5"),
        (["--seed", "-1", *base], {}, "TrainConfig.seed must be an integer >= 0, got -1"),
        (["--lr_decay_iters", "50", "--warmup_iters", "100", *base], {},
         "warmup_iters (100) must not exceed lr_decay_iters (50)"),
        (["--peak_flops", "fast", *base], {}, "--peak_flops expects a float, got 'fast'"),
        (["--peak_flops", "-1", *base], {}, "TrainConfig.peak_flops must be a finite number > 0"),
        (["--sample-tokens", "-5", *base], {}, "--sample-tokens: expected a whole number >= 0, got '-5'"),
        (["--prompt", "€", *base], {}, "--prompt '€' cannot be encoded with this run's tokenizer: character '€'"),
        (["--out", tmp_path / "afile", *base], {}, "afile' is a file; give a folder"),
        (["--out", unwritable, *base], {}, "cannot be created"),
        ([*base], {"TINYGRAD_LLM_CACHE": str(tmp_path / "afile")}, "afile' is a file (set by $TINYGRAD_LLM_CACHE)"),
        (["--n_layer", "48", "--n_embd", "16384", "--n_head", "16", "--data", data], {},
         "the model is too large for this machine: training it needs at least"),
        (["--data", "/dev/zero"], {}, "data path '/dev/zero' is not a regular file"),
        (["--resume", *base], {}, "nothing to resume"),
        (["--resume", "--overwrite", *base], {}, "give one of them"),
        (["--tokenizer", "char", "--vocab-size", "600", *base], {}, "--vocab-size applies to --tokenizer bpe"),
        (["--out", damaged["optimizer.safetensors"], "--resume", "--max_iters", "20"], {},
         "is damaged: optimizer.safetensors is missing"),
        (["--out", damaged["trainer_state.json"], "--resume", "--max_iters", "20"], {},
         "is damaged: trainer_state.json has 20 bytes"),
        (["--out", damaged["tokenizer.json"], "--resume", "--max_iters", "20"], {},
         "is damaged: tokenizer.json is missing"),
        (["--out", run_dir, "--resume", "--tokenizer", "bpe"], {}, "--tokenizer bpe differs from the checkpoint's "
                                                                  "tokenizer (char, char-"),
    ]
    argvs = [(a if "--out" in a else ["--out", tmp_path / f"o{i}", *a], e) for i, (a, e, _) in enumerate(cases)]
    for (argv, _), (_, _, match), (code, out, err) in zip(argvs, cases, run_many(TRAIN, argvs, tmp_path / "cache")):
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and match in err, (argv, code, err)
        assert "step 0:" not in out and "iter " not in out, (argv, out)
    assert not any((tmp_path / f"o{i}").exists() for i in range(len(cases)))     # not even an empty folder
    assert not Path(unwritable).exists()


def test_sample_bad_input_is_one_error_line(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    stranger = tmp_path / "stranger"
    shutil.copytree(run_dir / "latest", stranger)
    from tinygrad_llm.tokenizer import CharTokenizer
    CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz !").save(stranger / "tokenizer.json")   # 28 chars too
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir / "latest", corrupt)
    w = bytearray((corrupt / "model.safetensors").read_bytes())
    w[-3] ^= 0x40
    (corrupt / "model.safetensors").write_bytes(bytes(w))
    cases = [
        (["--ckpt", run_dir, "--temperature", "nan"], "--temperature: expected a finite number >= 0, got 'nan'"),
        (["--ckpt", run_dir, "--repetition-penalty", "nan"], "--repetition-penalty: expected a finite number > 0"),
        (["--ckpt", run_dir, "--num-samples", "0"], "--num-samples: expected a whole number >= 1, got '0'"),
        (["--ckpt", run_dir, "--seed", "-1"], "--seed: expected a whole number >= 0, got '-1'"),
        (["--ckpt", run_dir, "--top-p", "1.5"], "--top-p: expected a finite number > 0 and <= 1"),
        (["--hf", run_dir], f"{run_dir} is a tinygrad_llm checkpoint, not a Hugging Face GPT-2 or Llama folder: use --ckpt"),
        (["--ckpt", hf], f"{hf} is a Hugging Face GPT-2 folder, not a tinygrad_llm checkpoint: use --hf"),
        (["--ckpt", stranger], "tokenizer.json does not belong to this model: it is char-"),
        (["--ckpt", corrupt], "is damaged: model.safetensors does not match its sha256"),
        (["--ckpt", run_dir, "--prompt", "€"], "--prompt '€' cannot be encoded with this model's tokenizer"),
        (["--ckpt", run_dir, "--instruction", "€"], "--instruction '€' (in the fine-tuning template) cannot be encoded"),
    ]
    for (argv, match), (code, out, err) in zip(cases, run_many(SAMPLE, [(a, {}) for a, _ in cases], cache)):
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and match in err, (argv, code, err)
        assert out == "", (argv, out)


def test_help_lists_every_field_with_type_default_and_preset_value(tmp_path):
    from tinygrad_llm.presets import config_fields
    (cpu, out_cpu, _), (gpu, out_gpu, _) = run_many(TRAIN, [(["--help"], {}), (["--preset", "gpu", "--help"], {})],
                                                    tmp_path / "cache")
    assert cpu == gpu == 0
    assert "model (GPTConfig)" in out_cpu and "training (TrainConfig)" in out_cpu
    for name, (kind, typ) in config_fields().items():
        if name != "vocab_size":
            assert f"  --{name} " in out_cpu, name
    rows = {line.split()[0]: line.split() for line in out_gpu.splitlines() if line.startswith("  --")}
    assert rows["--n_layer"][1:4] == ["int", "6", "4"]            # type, preset gpu, GPTConfig default
    assert rows["--batch_size"][1:4] == ["int", "64", "12"]
    assert rows["--lr_decay_iters"][1:5] == ["int|none", "5000", "(auto)", "None"]
    assert rows["--peak_flops"][1] == "float|none" and "preset gpu" in out_gpu


# ---------------------------------------------------------------- never lose or silently replace work

def test_a_fresh_run_into_a_folder_with_a_run_is_refused(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    r = run([TRAIN, "--out", run_dir, "--data", made[0] / "fox.txt", *TINY, "--max_iters", "5"], cache)
    one_error_line(r, f"'{run_dir}' already holds a training run (latest/ at iteration 10, best/ at iteration 10,"
                      " history.csv")
    assert "--resume" in r.stderr and "--overwrite" in r.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_second_training_into_the_same_folder_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    first = Lines([TRAIN, "--out", run_dir, "--resume", "--max_iters", "100000", "--sample-tokens", "0"], cache)
    try:
        first.wait_for("iter ")
        r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "100000"], cache)
        one_error_line(r, f"is in use by another training (pid {first.p.pid} on ")
    finally:
        first.p.kill()                                       # kill -9: no chance to clean up
        first.p.wait(timeout=30)
    r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "20", "--sample-tokens", "0"], cache)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(run_dir / "latest").trainer_state["iter"] == 20


def test_sigterm_saves_like_ctrl_c(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    p = Lines([TRAIN, "--out", run_dir, "--resume", "--max_iters", "100000"], cache)
    p.wait_for("iter ")
    p.p.send_signal(signal.SIGTERM)
    code, out, err = p.finish()
    assert code == 130 and "Traceback" not in err, err
    it = load_checkpoint(run_dir / "latest").trainer_state["iter"]
    assert it > 10 and f"stopped at iteration {it}" in out and "SIGTERM: stopping after this iteration" in out
    assert "resume it:" in out and "--resume" in out


def test_a_second_ctrl_c_stops_at_once_with_one_line(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    # iterations of ~1 s (500 batches each): the second Ctrl-C lands inside the one that is running
    p = Lines([TRAIN, "--out", run_dir, "--resume", "--max_iters", "100000", "--grad_accum_steps", "500",
               "--log_interval", "1"], cache)
    p.wait_for("iter 11:")
    p.p.send_signal(signal.SIGINT)
    p.wait_for("Ctrl-C: stopping after this iteration")
    t0 = time.time()
    p.p.send_signal(signal.SIGINT)
    code, out, err = p.finish(timeout=30)
    assert time.time() - t0 < 10
    assert code == 130 and err == f"error: stopped at once (second interrupt) without saving; the last " \
                                  f"checkpoint in {run_dir} is kept\n", err
    assert load_checkpoint(run_dir / "latest").trainer_state["iter"] == 10        # nothing was saved


def test_ctrl_c_during_a_long_evaluation_stops_it(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    p = Lines([TRAIN, "--out", run_dir, "--resume", "--max_iters", "20", "--eval_iters", "1000000"], cache)
    p.wait_for("evaluating step 20:")          # (the evaluation at 10 is in the resumed history)
    t0 = time.time()
    p.p.send_signal(signal.SIGINT)
    code, out, err = p.finish(timeout=30)
    assert time.time() - t0 < 15 and code == 130 and "Traceback" not in err, err
    assert "stopped at iteration 20" in out
    r = run([TRAIN, "--out", run_dir, "--resume", "--eval_iters", "2", "--sample-tokens", "0"], cache)  # still due
    assert r.returncode == 0 and "step 20: train loss" in r.stdout, r.stdout + r.stderr


def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, made):
    resource = pytest.importorskip("resource")
    run_dir, cache = copy_run(made, tmp_path)

    def small_files():     # writes past 8 KB fail with EFBIG (Python ignores SIGXFSZ), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "20"], cache, preexec_fn=small_files)
    one_error_line(r, f"cannot write {run_dir}/")
    assert re.search(r"cannot write \S+/(loss.png|best/model.safetensors): File too large; the (checkpoints in "
                     r"\S+ are as they were|previous checkpoint \S+/best is kept)", r.stderr), r.stderr
    assert load_checkpoint(run_dir / "latest").trainer_state["iter"] == 10
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "best", "history.csv", "latest", "loss.png"]


def test_a_nan_loss_stops_the_script_with_one_line(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT)
    r = run([TRAIN, "--data", data, "--out", tmp_path / "run", *TINY, "--max_iters", "50", "--learning_rate", "1e30",
             "--grad_clip", "0", "--warmup_iters", "0"], tmp_path / "cache")
    one_error_line(r, "training stopped: the ")
    assert " is nan at iteration " in r.stderr or " is inf at iteration " in r.stderr
    assert "Try a lower learning_rate (now 1e+30) or grad_clip > 0 (now 0: off)" in r.stderr
    assert "best val loss" not in r.stdout


# ---------------------------------------------------------------- resume continues the run that was saved

def test_resume_continues_on_the_checkpoints_data_and_tokenizer(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    fox = made[0] / "fox.txt"
    other = tmp_path / "other.txt"
    other.write_text("the lazy dog jumps over the quick brown fox. " * 50)       # other text, same letters
    r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "20", "--data", other], cache)
    one_error_line(r, f"--data {other} is not the data this run was trained on, {fox}")
    r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "20", "--sample-tokens", "0"], cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"data: {fox} ") and "step 20:" in r.stdout
    ck = load_checkpoint(run_dir / "latest")
    assert ck.trainer_state["iter"] == 20 and ck.train_config["data"] == str(fox)
    times = [r["time_s"] for r in ck.trainer_state["history"]]
    assert all(b > a for a, b in zip(times, times[1:])), times
    r = run([TRAIN, "--out", run_dir, "--resume", "--max_iters", "30", "--data", other, "--switch-data",
             "--sample-tokens", "0"], cache)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(run_dir / "latest").train_config["data"] == str(other)


def test_resuming_a_finished_run_says_so_and_how_to_continue(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    r = run([TRAIN, "--out", run_dir, "--resume"], cache)
    assert r.returncode == 0, r.stderr
    assert f"the run in {run_dir} is finished: it reached iteration 10 of max_iters 10" in r.stdout
    assert f"--out {run_dir} --resume --max_iters 20" in r.stdout and "step" not in r.stdout


# ---------------------------------------------------------------- what users expect

def test_the_end_says_where_the_checkpoint_is_and_the_printed_commands_run(tmp_path, made):
    root, out = made
    assert f"checkpoint: {root / 'run' / 'latest'} (iteration 10)" in out
    lines = out.splitlines()
    sample_cmd = lines[lines.index("sample from it:") + 1].split()
    further_cmd = lines[lines.index("train it further:") + 1].split()
    assert sample_cmd[:3] == [os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..")
                              else sys.executable, "examples/sample.py", "--ckpt"]
    run_dir, cache = copy_run(made, tmp_path)
    r = run([*sample_cmd[1:3], run_dir, *sample_cmd[4:], "--max-new-tokens", "5"], cache)
    assert r.returncode == 0 and r.stdout.endswith("\n---------------\n"), r.stderr
    assert further_cmd[1:] == [TRAIN, "--out", str(root / "run"), "--resume", "--max_iters", "20"]


def test_train_with_a_tokenizer_file_from_train_tokenizer(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT)
    r = run(["examples/train_tokenizer.py", "--data", data, "--vocab-size", "270", "--out", tmp_path / "tok.json",
             "--quiet"], tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    r = run([TRAIN, "--data", data, "--tokenizer-file", tmp_path / "tok.json", "--out", tmp_path / "run", *TINY,
             "--max_iters", "5", "--sample-tokens", "5"], tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    from tinygrad_llm.tokenizer import load_tokenizer
    ck = load_checkpoint(tmp_path / "run" / "latest")
    assert ck.tokenizer.fingerprint() == load_tokenizer(tmp_path / "tok.json").fingerprint()
    assert ck.config.vocab_size == 270 and ck.train_config["tokenizer"] == "file"
    json.loads((tmp_path / "run" / "latest" / "tokenizer.json").read_text(encoding="utf-8"))


def test_the_same_seed_gives_the_same_run(tmp_path):
    """--seed covers the initial weights, the batches and dropout: two fresh runs with one seed
    end with the same weights, another seed with other weights."""
    from tinygrad_llm.checkpoint import load_checkpoint
    (tmp_path / "fox.txt").write_text(TEXT)
    weights = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        r = run([TRAIN, "--data", tmp_path / "fox.txt", "--out", tmp_path / name, "--max_iters", "2", *TINY,
                 "--dropout", "0.1", "--sample-tokens", "0", "--seed", seed], tmp_path / "cache")
        assert r.returncode == 0, r.stderr
        weights[name] = [p.numpy() for p in load_checkpoint(tmp_path / name / "latest").model.parameters()]
    assert all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["b"]))
    assert not all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["c"]))


def test_sample_ctrl_c_exits_cleanly(tmp_path, made):
    run_dir, cache = copy_run(made, tmp_path)
    p = subprocess.Popen([sys.executable, SAMPLE, "--ckpt", run_dir, "--max-new-tokens", "100000000", "--no-cache"],
                         cwd=REPO, env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while p.stdout.read(1) == b"" and time.time() < deadline and p.poll() is None:
        pass
    p.stdout.read(20)                                                  # it is printing text
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)     # keeps reading stdout: a full pipe would block its final flush
    err = err.decode()
    assert p.returncode == 130 and err == "\ninterrupted\n", err
