"""Time the GPT's forward pass, and what asking for the attention weights costs.

    python benchmarks/bench_forward.py                  # the 'cpu' preset's model and batch
    python benchmarks/bench_forward.py --preset gpu --batch 8 --iters 5

Times, as the median over --iters calls after one warm-up call, of:
  train fwd+bwd   model(idx, targets) and loss.backward(), training mode (as a training step)
  eval fwd        model(idx) under no_grad, eval mode (as sampling's first step)
  eval fwd + att  model(idx, return_attention=True) under no_grad (as the demo's Inside tab)
The first two never ask for the read-out, so they measure whether its presence slows the
normal forward: run this script against two versions of the package (PYTHONPATH) and
compare. The last line is printed only where the package has the read-out.
"""
from __future__ import annotations

import argparse
import inspect
import platform
import statistics
import time

import numpy as np

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, Tensor, no_grad
from tinygrad_llm.presets import preset


def median_ms(fn, iters: int) -> float:
    fn()                                                   # warm-up: caches, allocator
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: the preset's batch_size")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model_kw, train_kw = preset(args.preset)
    cfg = GPTConfig(vocab_size=65, **model_kw)
    B, T = args.batch or train_kw["batch_size"], cfg.block_size
    tg.manual_seed(0)
    model = GPT(cfg).to(args.device)
    rs = np.random.default_rng(0)
    idx = Tensor(rs.integers(0, cfg.vocab_size, (B, T)), device=args.device)
    tgt = Tensor(rs.integers(0, cfg.vocab_size, (B, T)), device=args.device)

    def train_step():
        model.train()
        _, loss = model(idx, tgt)
        loss.backward()
        model.zero_grad()
        loss.item()                                        # waits for a GPU to finish

    def eval_forward(**kw):
        model.eval()
        with no_grad():
            logits = model(idx, **kw)[0]
        tg.backend.to_numpy(logits.data[:1, -1, :1])      # waits for a GPU to finish

    print(f"{platform.processor() or platform.machine()}, tinygrad_llm from {tg.__file__}")
    print(f"preset {args.preset}: B={B} T={T} n_layer={cfg.n_layer} n_head={cfg.n_head} "
          f"n_embd={cfg.n_embd}, median of {args.iters}")
    print(f"  train fwd+bwd   {median_ms(train_step, args.iters):8.2f} ms")
    print(f"  eval fwd        {median_ms(eval_forward, args.iters):8.2f} ms")
    if "return_attention" in inspect.signature(model.forward).parameters:
        print(f"  eval fwd + att  {median_ms(lambda: eval_forward(return_attention=True), args.iters):8.2f} ms")


if __name__ == "__main__":
    main()
