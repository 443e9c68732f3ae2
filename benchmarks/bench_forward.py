"""Time the GPT's forward pass, and what asking for the attention weights costs.

    python benchmarks/bench_forward.py                  # the 'cpu' preset's model and batch
    python benchmarks/bench_forward.py --preset gpu --batch 8 --iters 5
    mkdir -p /tmp/before && git archive <commit> tinygrad_llm | tar -x -C /tmp/before
    python benchmarks/bench_forward.py --against /tmp/before     # this package vs that copy

Times, as medians over --iters calls after one warm-up call, of:
  train fwd+bwd   model(idx, targets) and loss.backward(), training mode (as a training step)
  eval fwd        model(idx) under no_grad, eval mode (as sampling's first step)
  eval fwd + att  model(idx, return_attention=True) under no_grad (as the demo's Inside tab)
The first two never ask for the read-out: with --against, the same model (same seed) of
another copy of the package (loaded under another name, in this process) is timed call
for call in turn with this one, so drift of the machine's speed hits both alike; the
ratio column is the median of the per-call ratios this / other.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import tinygrad_llm


def load_other(directory) -> object:
    """The package in ``directory``/tinygrad_llm, imported as ``tinygrad_llm_other``."""
    root = Path(directory) / "tinygrad_llm"
    if not (root / "__init__.py").exists():
        sys.exit(f"error: --against {directory}: no tinygrad_llm/__init__.py there")
    spec = importlib.util.spec_from_file_location("tinygrad_llm_other", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class Bench:
    """One package's GPT at a preset's shapes, with its calls to time."""

    def __init__(self, pkg, preset_name: str, batch: int | None, device: str):
        presets = importlib.import_module(pkg.__name__ + ".presets")
        model_kw, train_kw = presets.preset(preset_name)
        self.pkg, self.device = pkg, device
        self.cfg = pkg.GPTConfig(vocab_size=65, **model_kw)
        self.B, self.T = batch or train_kw["batch_size"], self.cfg.block_size
        pkg.manual_seed(0)
        self.model = pkg.GPT(self.cfg).to(device)
        rs = np.random.default_rng(0)
        self.idx = pkg.Tensor(rs.integers(0, 65, (self.B, self.T)), device=device)
        self.tgt = pkg.Tensor(rs.integers(0, 65, (self.B, self.T)), device=device)

    def train_step(self):
        self.model.train()
        _, loss = self.model(self.idx, self.tgt)
        loss.backward()
        self.model.zero_grad()
        loss.item()                                        # waits for a GPU to finish

    def eval_forward(self, **kw):
        self.model.eval()
        with self.pkg.no_grad():
            logits = self.model(self.idx, **kw)[0]
        self.pkg.backend.to_numpy(logits.data[:1, -1, :1])  # waits for a GPU to finish


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: the preset's batch_size")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--against", metavar="DIR", help="a folder holding another copy of tinygrad_llm/")
    args = ap.parse_args()
    this = Bench(tinygrad_llm, args.preset, args.batch, args.device)
    other = Bench(load_other(args.against), args.preset, args.batch, args.device) if args.against else None
    print(f"{platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}; "
          f"this: {Path(tinygrad_llm.__file__).parent}" + (f", other: {args.against}" if other else ""))
    print(f"preset {args.preset}: B={this.B} T={this.T} n_layer={this.cfg.n_layer} n_head={this.cfg.n_head} "
          f"n_embd={this.cfg.n_embd}; medians of {args.iters} calls")
    print(f"  {'':16}{'this':>10}" + (f"{'other':>10}{'this/other':>12}" if other else ""))
    cases = [("train fwd+bwd", lambda b: b.train_step, True), ("eval fwd", lambda b: b.eval_forward, True),
             ("eval fwd + att", lambda b: lambda: b.eval_forward(return_attention=True), False)]
    for name, pick, compare in cases:
        pair = [this, other] if compare and other else [this]
        fns = [pick(b) for b in pair]
        for fn in fns:
            fn()                                           # warm-up: caches, allocator
        times = [[] for _ in pair]
        for i in range(args.iters):
            order = range(len(pair)) if i % 2 == 0 else reversed(range(len(pair)))   # alternate who goes first
            for j in order:
                times[j].append(timed(fns[j]))
        line = f"  {name:16}{1e3 * statistics.median(times[0]):8.2f} ms"
        if len(pair) == 2:
            ratio = statistics.median(a / b for a, b in zip(*times))
            line += f"{1e3 * statistics.median(times[1]):8.2f} ms{ratio:11.3f}x"
        print(line)


if __name__ == "__main__":
    main()
