"""Everything worth checking on a machine with an NVIDIA GPU, in one command and one log:

    python3 benchmarks/gpu_check.py                 # from the repository root; about 5-8 minutes

1. install: the package with its ``gpu`` and ``test`` extras into ``.venv`` (created if
   missing, seeing the system's packages, so that a CuPy or PyTorch already on the machine
   counts, offline too; ``--python`` uses an existing environment instead), and PyTorch (the
   version the ``ref`` extra pins; skipped when one imports) in the background, for part 5;
2. the device: CuPy, CUDA and the GPU as the package sees them;
3. the fused kernels' self-checks: a small GPT's training step on the GPU, then which fused
   ops passed their first-use check against the reference tier (and any fallback warning);
4. the GPU half of the test suite: with ``TINYGRAD_LLM_TEST_DEVICE=gpu``, the tests that
   run on the device (``-k gpu``: the ``device`` fixture's; the rest is CPU-only and runs in CI);
5. ``bench_train_step.py --device gpu`` against PyTorch eager, float32 and TF32: ms/iter,
   tokens/s, MFU, peak memory, on the shakespeare_char model;
6. ``train_shakespeare.py --device gpu --max_iters 300``: the loss lines of a real run.

A part that fails (or runs out of its time) is reported and the next one runs; a summary
ends the log. Each part has a time limit, cut shorter when the whole would pass --budget
seconds. The log goes to stdout and to --log (default gpu_check.log). Tiny Shakespeare is
read from --data, else ../shared/data/tinyshakespeare.txt when present, else downloaded.
Every part runs this checkout's package (``PYTHONPATH`` is the repository), whatever the
environment has installed. Nothing but the standard library is needed to start it.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SELF_CHECK = r"""
import warnings
import numpy as np
import tinygrad_llm as tg
from tinygrad_llm.kernels import cuda
warnings.simplefilter("always")
tg.manual_seed(0)
model = tg.GPT(tg.GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.1)).to("gpu")
opt = model.configure_optimizers(0.1, 1e-3)
ids = np.random.default_rng(0).integers(0, 65, (8, 64))
for _ in range(2):
    _, loss = model(ids, ids)
    loss.backward()
    opt.step()
    opt.zero_grad()
print(f"loss after two steps: {loss.item():.4f}")
status = cuda.status("cuda:0")
bad = 0
for name in cuda.FUSED_OPS:
    st = status.get(name)
    bad += st is not True
    print(f"  {name:<20} " + ("checked against the reference tier: in use" if st is True else
                               "FELL BACK to the reference tier" if st is False else "not used"))
if "unbuildable" in status:
    print("  no kernel could be built: " + status["unbuildable"])
raise SystemExit(1 if bad else 0)
"""

DEVICE = r"""
import tinygrad_llm as tg, cupy as cp
print("CuPy", cp.__version__, "| CUDA runtime", cp.cuda.runtime.runtimeGetVersion(),
      "| driver", cp.cuda.runtime.driverGetVersion())
props = cp.cuda.runtime.getDeviceProperties(0)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
print(name, f"| compute capability {props['major']}.{props['minor']} | {props['multiProcessorCount']} SMs"
      f" | {props['totalGlobalMem'] / 2**30:.0f} GiB")
print("usable by tinygrad_llm:", tg.gpu_available())
from tinygrad_llm import hardware
print(f"peak float32 {hardware.peak_flops('cuda:0') or 0:.3g} FLOP/s, TF32 {hardware.peak_flops('cuda:0', tf32=True) or 0:.3g} FLOP/s")
raise SystemExit(0 if tg.gpu_available() else 1)
"""


class Log:
    def __init__(self, path):
        self.f = open(path, "w", encoding="utf-8")

    def __call__(self, text=""):
        print(text, flush=True)
        self.f.write(text + "\n")
        self.f.flush()


def run(log, cmd, limit, env=None, cwd=REPO) -> str:
    """Run ``cmd``, copying its output into the log; "ok", "FAILED (exit N)" or "TIMED OUT"."""
    log(f"$ {' '.join(str(c) for c in cmd)}   (limit {limit:.0f} s)")
    if limit < 5:
        log("  skipped: no time left")
        return "SKIPPED (no time left)"
    try:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        log(f"  cannot start: {e}")
        return "FAILED (cannot start)"

    def copy():
        for line in proc.stdout:
            log("  " + line.rstrip("\n"))

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        return "TIMED OUT"
    reader.join(timeout=5)
    return "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"


def torch_requirement() -> str:
    """The torch pin of the ``ref`` extra in pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(r'"(torch[^"]*)"', text)
    return m.group(1) if m else "torch"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=None, help="an environment's python to use (default: .venv, created)")
    p.add_argument("--no-install", action="store_true", help="use the environment as it is")
    p.add_argument("--data", default=None, help="Tiny Shakespeare (or any text) for the training run")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default 480)")
    p.add_argument("--log", default="gpu_check.log")
    args = p.parse_args()
    t0 = time.monotonic()
    log = Log(args.log)
    results = []

    scale = min(1.0, args.budget / 480.0)     # the reserves below are sized for the default budget

    def left(reserve):
        return args.budget - (time.monotonic() - t0) - reserve * scale

    def part(title, cmd, limit, reserve, env=None, floor=0.0):
        """Run a part within ``limit`` seconds, leaving ``reserve`` (scaled to the budget) for
        the parts after it; ``floor``: seconds it gets even so, while the budget has them
        (the first, most basic checks are never starved by the later ones)."""
        log(f"\n=== {title}")
        start = time.monotonic()
        outcome = run(log, cmd, min(limit, max(floor, left(reserve)), left(0)), env=env)
        results.append((title, outcome, time.monotonic() - start))
        log(f"--- {title}: {outcome} ({time.monotonic() - start:.0f} s)")
        return outcome

    log(f"gpu_check: {time.strftime('%Y-%m-%d %H:%M:%S')}, repository {REPO}, budget {args.budget:.0f} s")
    git = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=REPO, capture_output=True, text=True)
    log(f"commit: {git.stdout.strip() or 'unknown'}")
    py = Path(args.python) if args.python else REPO / ".venv" / "bin" / "python"
    torch_proc = None
    if not args.no_install:
        if not py.exists():
            part("1a. create .venv", [sys.executable, "-m", "venv", "--system-site-packages", REPO / ".venv"], 60, 400)
        part("1b. install the package with its gpu and test extras", [py, "-m", "pip", "install", "-q", "-e",
                                                                      ".[gpu,test]"], 240, 310)
        log(f"\n=== 1c. install {torch_requirement()} (in the background; needed in part 5)")
        has_torch = py.exists() and subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode == 0
        if has_torch:
            log("  PyTorch is already there")
        else:
            torch_log = open(Path(args.log).with_suffix(".torch-install.log"), "w")
            try:
                torch_proc = subprocess.Popen([str(py), "-m", "pip", "install", "-q", torch_requirement()], cwd=REPO,
                                              stdout=torch_log, stderr=subprocess.STDOUT)
            except OSError as e:
                log(f"  cannot start: {e}")
    if not py.exists():
        py = Path(sys.executable)
        log(f"(no .venv: using {py})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    part("2. the device", [py, "-c", DEVICE], 60, 300, env=env, floor=45)
    part("3. the fused kernels' first-use self-checks", [py, "-c", SELF_CHECK], 90, 270, env=env, floor=60)
    part("4. the GPU half of the test suite (the tests on the device)",
         [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-ra", "-k", "gpu"], 240, 150,
         env=dict(env, TINYGRAD_LLM_TEST_DEVICE="gpu"))
    if torch_proc is not None:
        try:
            torch_proc.wait(timeout=max(1.0, min(90.0, left(150))))
            log(f"\n(torch install finished: exit {torch_proc.returncode}; its output: "
                f"{Path(args.log).with_suffix('.torch-install.log')})")
        except subprocess.TimeoutExpired:
            torch_proc.kill()
            log("\n(torch install did not finish in time: the benchmarks run without PyTorch)")
    for tf32 in ("off", "on"):
        part(f"5. bench_train_step.py --device gpu --tf32 {tf32} (float32{' with TF32 matmuls' if tf32 == 'on' else ''})",
             [py, "benchmarks/bench_train_step.py", "--device", "gpu", "--tf32", tf32, "--iters", "20",
              "--warmup", "3", "--round", "5"], 90, 105 if tf32 == "off" else 60, env=env)
    data = args.data or next((str(c) for c in [REPO.parent / "shared" / "data" / "tinyshakespeare.txt",
                                               REPO / "shared" / "data" / "tinyshakespeare.txt"] if c.exists()), None)
    out = REPO / "out" / "gpu-check"
    part("6. train_shakespeare.py --device gpu, 300 iterations",
         [py, "examples/train_shakespeare.py", "--device", "gpu", "--max_iters", "300", "--out", out,
          "--overwrite", "--sample-tokens", "200"] + (["--data", data] if data else []), 180, 0, env=env)
    log("\n=== summary")
    for title, outcome, secs in results:
        log(f"  {outcome:<24} {secs:5.0f} s  {title}")
    log(f"  total {time.monotonic() - t0:.0f} s; log in {args.log}")
    return 0 if all(o == "ok" for _, o, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
