"""Data-parallel training speed: steps/s and tokens/s of the training step on 1 or N ranks,
and how much of the step the gradient allreduce takes.

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_distributed.py    # 2 ranks, cores shared out
    .venv/bin/mpiexec -n 1 .venv/bin/python benchmarks/bench_distributed.py    # 1 rank, all cores
    .venv/bin/python benchmarks/bench_distributed.py                           # 1 process, no MPI
    ... --batch-size 6          # rows per rank (default: the preset's batch, 12 for 'cpu')

Each step is the training loop's (train.py): a shard of the batch drawn by all ranks
(``get_batch(..., rank, world_size)``), forward, backward, the gradients averaged over the
ranks in one allreduce, the loss averaged, the stop flag agreed, clipping, AdamW. Each rank
gets its share of the cores (``distributed.share_cpu``: 1 thread each for 2 ranks on 2
cores), as ``train_shakespeare.py --distributed`` does. Rank 0 prints: median ms per step,
steps/s, tokens/s of all ranks together; the time inside the gradients' allreduce during
the steps (which includes waiting for the slower rank) and its share of the step; and the
allreduce alone, timed back to back after the steps with the ranks lined up by a barrier.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, distributed
from tinygrad_llm.data import get_batch
from tinygrad_llm.optim import clip_grad_norm_
from tinygrad_llm.kernels.parallel import blas_threads, num_threads, tune_allocator
from tinygrad_llm.presets import preset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="rows per rank (default: the preset's)")
    p.add_argument("--iters", type=int, default=40, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--allreduce-iters", type=int, default=50)
    args = p.parse_args(argv)

    comm = distributed.init("cpu") if distributed.launcher_env() is not None else distributed.SINGLE
    distributed.share_cpu(comm)
    tune_allocator()
    model_fields, train_fields = preset(args.preset)
    B = args.batch_size or train_fields["batch_size"]
    T = model_fields["block_size"]
    tg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, **model_fields))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    distributed.broadcast_model(comm, model)
    ids = np.random.default_rng(0).integers(0, 65, size=1_000_000).astype(np.uint16)
    tg.manual_seed(1)

    step_s, allreduce_s, scalars_s = [], [], []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        x, y = get_batch(ids, B, T, rank=comm.rank, world_size=comm.world_size)
        _, loss = model(x, y)
        loss.backward()
        loss_value = float(loss.item())
        t1 = time.perf_counter()
        distributed.allreduce_grads(comm, optimizer)
        t2 = time.perf_counter()
        comm.mean(loss_value)
        comm.any(False)
        t3 = time.perf_counter()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        t4 = time.perf_counter()
        if i >= args.warmup:
            step_s.append(t4 - t0)
            allreduce_s.append(t2 - t1)
            scalars_s.append(t3 - t2)

    alone = []                                   # the allreduce by itself, the ranks lined up
    if comm.world_size > 1:
        bufs = optimizer.grad_buffers()
        for _ in range(args.allreduce_iters):
            comm.comm.Barrier()
            t0 = time.perf_counter()
            for buf in bufs:
                comm.allreduce_mean_(buf)
            alone.append(time.perf_counter() - t0)

    # every rank's medians, reported by rank 0 (the step ends together, the parts may not)
    mine = [statistics.median(v) for v in (step_s, allreduce_s, scalars_s)] + \
        [statistics.median(alone) if alone else 0.0]
    every = comm.allgather_object(mine)
    if comm.rank != 0:
        return 0
    step, allreduce, scalars, alone_s = (max(r[k] for r in every) for k in range(4))
    n_params = sum(p.size for p in model.parameters())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    print(f"preset {args.preset}: {n_params / 1e6:.2f}M parameters, block {T}; {comm.world_size} rank(s) "
          f"({comm.backend}), {num_threads()} thread(s) and {blas_threads()} BLAS thread(s) each; batch {B} per "
          f"rank, {B * comm.world_size} in all")
    tokens = B * T * comm.world_size
    print(f"step: {step * 1000:.1f} ms (median of {args.iters}, slowest rank), {1 / step:.2f} steps/s, "
          f"{tokens / step:,.0f} tokens/s")
    if comm.world_size > 1:
        grad_mb = n_params * 4 / 2 ** 20
        print(f"gradient allreduce in the step ({grad_mb:.1f} MiB, one call): {allreduce * 1000:.2f} ms "
              f"({allreduce / step * 100:.1f}% of the step, waiting for the other rank included)")
        print(f"loss and stop allreduces: {scalars * 1000:.3f} ms ({scalars / step * 100:.2f}%)")
        print(f"gradient allreduce alone (median of {args.allreduce_iters}, after a barrier): "
              f"{alone_s * 1000:.2f} ms ({alone_s / step * 100:.1f}% of the step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
