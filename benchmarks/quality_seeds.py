"""Validation loss of the `cpu` preset at iteration 2000 over several seeds: ours, and
optionally the PyTorch nanoGPT reference (benchmarks/quality_reference.py) with the same seeds.

    python benchmarks/quality_seeds.py --data ../shared/data/tinyshakespeare.txt --seeds 1337 1 2 3 4
    python benchmarks/quality_seeds.py --data ... --seeds 1337 1 --torch      # also the reference
    python benchmarks/quality_seeds.py --data ... --torch --no-ours --reference-args "--bias true --gelu tanh"

One training run of the recipe gives one draw of a noisy number: the seed (initial
weights and batch order) moves the loss at 2000 by a few hundredths. This script trains
the preset once per seed (exactly what `examples/train_shakespeare.py --seed S` runs, with
checkpoints in a temporary directory) and prints, per seed and as mean +- standard
deviation over the seeds, the two numbers docs/benchmarks.md reports: the 20-batch
estimate the training log prints at 2000, and the mean loss over every non-overlapping
64-token block of the validation split ("full").
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinygrad_llm import GPT, GPTConfig, Tensor, manual_seed, no_grad
from tinygrad_llm.data import load_text_dataset
from tinygrad_llm.kernels import tune_allocator
from tinygrad_llm.presets import preset
from tinygrad_llm.train import TrainConfig, train


@no_grad()
def full_val_loss(model, val: np.ndarray, block: int, batch: int = 64) -> float:
    """Mean loss over every non-overlapping ``block``-token window of ``val`` (as quality_reference.py)."""
    model.eval()
    m = (len(val) - 1) // block
    x = val[:m * block].reshape(m, block).astype(np.int64)
    y = val[1:m * block + 1].reshape(m, block).astype(np.int64)
    total = 0.0
    for i in range(0, m, batch):
        _, loss = model(Tensor(x[i:i + batch]), Tensor(y[i:i + batch]))
        total += loss.item() * len(x[i:i + batch])
    return total / m


def run_ours(data, seed: int, iters: int) -> tuple[float, float, float]:
    model_fields, train_fields = preset("cpu")
    cfg = TrainConfig(**(train_fields | {"seed": seed, "max_iters": iters}))
    manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, **model_fields))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        summary = train(model, data, cfg, out, tokenizer=data.tokenizer, log=lambda *a, **k: None)
    last = summary["history"][-1]
    if int(last["iter"]) != iters:
        raise RuntimeError(f"the last evaluation was at iteration {last['iter']}, expected {iters}")
    return float(last["val_loss"]), full_val_loss(model, data.val, model.config.block_size), time.time() - t0


def run_torch(path: str, seed: int, iters: int, extra: list[str]) -> tuple[float, float, float]:
    script = Path(__file__).with_name("quality_reference.py")
    t0 = time.time()
    out = subprocess.run([sys.executable, str(script), "--data", path, "--seed", str(seed), "--iters", str(iters),
                          *extra], capture_output=True, text=True, check=True).stdout
    hit = re.findall(rf"step {iters}: val loss \(20 batches\) ([0-9.]+), full val loss ([0-9.]+)", out)
    if not hit:
        raise RuntimeError(f"no step {iters} line in the reference's output:\n{out}")
    return float(hit[-1][0]), float(hit[-1][1]), time.time() - t0


def summarise(name: str, rows: list[tuple[float, float, float]]):
    est, full = [r[0] for r in rows], [r[1] for r in rows]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
    print(f"{name}: mean over {len(rows)} seeds: 20-batch {statistics.mean(est):.4f} +- {sd(est):.4f}, "
          f"full {statistics.mean(full):.4f} +- {sd(full):.4f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Tiny Shakespeare (or another text file)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2, 3, 4])
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--torch", action="store_true", help="also run benchmarks/quality_reference.py per seed")
    p.add_argument("--reference-args", default="",
                   help='extra arguments for quality_reference.py, e.g. "--bias true --gelu tanh" (our preset\'s model)')
    p.add_argument("--no-ours", action="store_true", help="only the PyTorch reference")
    args = p.parse_args()
    if args.no_ours and not args.torch:
        p.error("--no-ours needs --torch (otherwise there is nothing to run)")
    tune_allocator()
    data = load_text_dataset(args.data, "char", block_size=preset("cpu")[0]["block_size"])
    results = {"ours": [], "pytorch": []}
    for seed in args.seeds:
        runs = [] if args.no_ours else [("ours", lambda: run_ours(data, seed, args.iters))]
        if args.torch:
            runs.append(("pytorch", lambda: run_torch(args.data, seed, args.iters, args.reference_args.split())))
        for name, fn in runs:
            est, full, secs = fn()
            results[name].append((est, full, secs))
            print(f"{name:8s} seed {seed:5d}: val loss at {args.iters}: 20-batch {est:.4f}, full {full:.4f} "
                  f"({secs:.0f} s)", flush=True)
    for name, rows in results.items():
        if rows:
            summarise(name, rows)


if __name__ == "__main__":
    main()
