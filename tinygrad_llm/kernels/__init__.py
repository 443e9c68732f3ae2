"""The fast tier: the ops of ``tinygrad_llm/ops/`` again, with the same signatures and the
same results, written for speed (see ``tinygrad_llm/tiers.py`` for how an op picks its
kernel, and docs/architecture.md, "Two tiers per op").

    cpu.py       NumPy kernels: threads over rows, cache blocking, in-place buffers, shortcuts
    cuda.py      CuPy: fused CUDA kernels, each checked against the reference on first use
    parallel.py  parallel_for (rows over CPU cores) and tune_allocator (glibc, for scripts)
    tuning.py    every tuning constant, in one place

Importing the package registers its kernels (``import tinygrad_llm`` does).
"""
from . import cpu, cuda  # noqa: F401  (registers the CPU and GPU kernels)
from .parallel import num_threads, parallel_for, tune_allocator

__all__ = ["num_threads", "parallel_for", "tune_allocator"]
