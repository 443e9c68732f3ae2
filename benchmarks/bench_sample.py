"""Sampling speed (ms per generated token, KV cache on) against the number of BLAS threads.

    .venv/bin/python benchmarks/bench_sample.py                       # cpu and gpu presets, idle
    .venv/bin/python benchmarks/bench_sample.py --load 2              # with 2 busy processes beside it
    .venv/bin/python benchmarks/bench_sample.py --presets cpu --tokens 200 --repeat 5

For each model (a preset's shape, random weights, vocab 65 as Tiny Shakespeare's characters;
--gpt2 adds GPT-2 small's shape)
and each thread count (1, then OpenBLAS's default), generate --tokens tokens from a one-token
prompt --repeat times and report the best and the median ms per token. --load N starts N
processes that spin on the CPU for the whole run (what other jobs on a shared machine do).
examples/sample.py uses one BLAS thread for models below SMALL_MODEL_PARAMS; this is the
measurement behind that choice (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import statistics
import time

import numpy as np

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig
from tinygrad_llm.generate import generate
from tinygrad_llm.kernels.parallel import blas_threads, set_blas_threads
from tinygrad_llm.presets import PRESETS


def _spin(stop):
    x = 0
    while not stop.is_set():
        x += 1


def measure(model, tokens: int, repeat: int) -> list[float]:
    """ms per token of each of ``repeat`` generations (after one warm-up)."""
    prompt = np.zeros((1, 1), dtype=np.int64)
    generate(model, prompt, 8, temperature=1.0, seed=0)
    out = []
    for r in range(repeat):
        t0 = time.perf_counter()
        generate(model, prompt, tokens, temperature=1.0, top_k=200, seed=r)
        out.append((time.perf_counter() - t0) * 1000 / tokens)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["cpu", "gpu"], choices=sorted(PRESETS))
    p.add_argument("--tokens", type=int, default=100, help="tokens per generation")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--load", type=int, default=0, help="busy processes to run beside it")
    p.add_argument("--gpt2", action="store_true", help="also a GPT-2 small shaped model (124M, vocab 50257)")
    args = p.parse_args(argv)

    default = blas_threads()
    if default is None:
        raise SystemExit("this NumPy's BLAS does not let its thread count be set (not OpenBLAS on Linux)")
    print(f"# {datetime.date.today()}  {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}, OpenBLAS default {default} threads, "
          f"{args.load} busy process(es) beside it")
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
    for s in spinners:
        s.start()
    try:
        print(f"{'preset':<8} {'params':>8} {'threads':>7} {'best ms/tok':>12} {'median ms/tok':>14}")
        shapes = [(name, dict(vocab_size=65, **PRESETS[name]["model"])) for name in args.presets]
        if args.gpt2:
            shapes.append(("gpt2", dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)))
        for name, shape in shapes:
            tg.manual_seed(0)
            model = GPT(GPTConfig(**shape))
            for n in sorted({1, default}):
                set_blas_threads(n)
                ms = measure(model, args.tokens, args.repeat)
                print(f"{name:<8} {model.num_params() / 1e6:>7.2f}M {n:>7} {min(ms):>12.2f} "
                      f"{statistics.median(ms):>14.2f}", flush=True)
            set_blas_threads(default)
    finally:
        stop.set()
        for s in spinners:
            s.join()


if __name__ == "__main__":
    main()
