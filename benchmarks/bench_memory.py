"""Peak memory (and time) of one training step of a GPT (or a Llama): recompute, flash attention, float16.

    python benchmarks/bench_memory.py                                  # layers and batch sweeps
    python benchmarks/bench_memory.py --layers 4 --batches 8 --variants none block block+flash+fp16
    python benchmarks/bench_memory.py --arch llama --n-kv-head 2       # the Llama, grouped-query heads

One step = forward, backward, gradient clipping, AdamW step (as train.py, with autocast and a
GradScaler for float16). Memory: tracemalloc's peak during the step above what was allocated
before it (the weights, AdamW's moments and the flat gradient buffer already exist): the
activations kept for the backward pass plus the step's temporaries. Next to it,
train.training_memory's estimate of the activations. Time: the median of --repeat steps
(without tracemalloc).
"""
from __future__ import annotations

import dataclasses
import platform
import statistics
import time
import tracemalloc

import numpy as np

from tinygrad_llm import cli
import tinygrad_llm as tg
from tinygrad_llm import amp
from tinygrad_llm.architectures import ARCHITECTURES
from tinygrad_llm.kernels import num_threads, tune_allocator
from tinygrad_llm.optim import clip_grad_norm_
from tinygrad_llm.train import training_memory

#: variant name -> (recompute, attention, dtype)
VARIANTS = {
    "none": ("none", "standard", "float32"),
    "mlp": ("mlp", "standard", "float32"),
    "block": ("block", "standard", "float32"),
    "flash": ("none", "flash", "float32"),
    "fp16": ("none", "standard", "float16"),
    "block+flash": ("block", "flash", "float32"),
    "block+flash+fp16": ("block", "flash", "float16"),
}


class Step:
    def __init__(self, cfg, dtype: str):
        tg.manual_seed(0)
        self.model = ARCHITECTURES["llama" if hasattr(cfg, "rope_theta") else "gpt"](cfg)
        self.opt = self.model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
        self.precision = amp.autocast(dtype)
        self.scaler = amp.GradScaler(enabled=dtype == "float16")

    def __call__(self, x, y):
        with self.precision:
            _, loss = self.model(x, y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad()


def measure(base, n_layer: int, batch: int, variant: str, repeat: int):
    recompute, attention, dtype = VARIANTS[variant]
    cfg = dataclasses.replace(base, n_layer=n_layer, recompute=recompute, attention=attention)
    step = Step(cfg, dtype)
    rs = np.random.default_rng(0)
    batches = [(rs.integers(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2 for _ in range(repeat + 1)]
    step(*batches[0])                                   # warm up: the flat gradient buffer fills
    times = []
    for x, y in batches[1:]:
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    base_bytes = tracemalloc.get_traced_memory()[0]
    step(*batches[0])
    peak = tracemalloc.get_traced_memory()[1] - base_bytes
    tracemalloc.stop()
    estimate = training_memory(cfg, batch, dtype)["activations"]
    return statistics.median(times), peak, estimate


def main():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--layers", type=cli.integer(min=1), nargs="+", default=[2, 4, 8])
    p.add_argument("--batches", type=cli.integer(min=1), nargs="+", default=[4, 8, 16])
    p.add_argument("--variants", nargs="+", default=["none", "mlp", "block", "flash", "fp16", "block+flash+fp16"],
                   choices=sorted(VARIANTS))
    p.add_argument("--n-embd", type=cli.integer(min=1), default=128)
    p.add_argument("--n-head", type=cli.integer(min=1), default=4)
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="gpt")
    p.add_argument("--n-kv-head", type=cli.integer(min=1), default=None, help="--arch llama: key/value heads (default n_head)")
    p.add_argument("--block-size", type=cli.integer(min=1), default=256)
    p.add_argument("--vocab-size", type=cli.integer(min=1), default=65)
    p.add_argument("--repeat", type=cli.integer(min=1), default=3)
    args = p.parse_args()
    tuned = tune_allocator()
    sizes = dict(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=1, n_head=args.n_head,
                 n_embd=args.n_embd)
    if args.arch == "llama":
        sizes["n_kv_head"] = args.n_kv_head
    elif args.n_kv_head is not None:
        p.error("--n-kv-head applies to --arch llama only")
    try:
        base = ARCHITECTURES[args.arch].config_class(**sizes)
    except ValueError as e:
        p.error(str(e))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, {num_threads()} threads, allocator {'tuned' if tuned else 'default'}; "
          f"{args.arch} n_embd {args.n_embd}, n_head {args.n_head}, n_kv_head {base.n_kv_head}, "
          f"block {args.block_size}, vocab {args.vocab_size}")
    print(f"{'layers':>6} {'batch':>5} {'variant':>17} {'ms/step':>8} {'peak MiB':>9} {'estimate MiB':>13} "
          f"{'vs none':>8}")
    sweep = [(L, args.batches[len(args.batches) // 2]) for L in args.layers] + \
            [(args.layers[len(args.layers) // 2], B) for B in args.batches]
    seen = set()
    for L, B in sweep:
        if (L, B) in seen:
            continue
        seen.add((L, B))
        ref = None
        for variant in args.variants:
            t, peak, est = measure(base, L, B, variant, args.repeat)
            ref = peak if ref is None else ref
            print(f"{L:>6} {B:>5} {variant:>17} {t * 1e3:8.1f} {peak / 2**20:9.1f} {est / 2**20:13.1f} "
                  f"{peak / ref:7.2f}x")


if __name__ == "__main__":
    main()
