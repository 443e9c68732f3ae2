"""Peak memory and time of attention's forward + backward: standard vs tiled (flash).

    python benchmarks/bench_flash_attention.py                       # T = 256, 1024, 4096, causal
    python benchmarks/bench_flash_attention.py --T 1024 --blocks 32 64 128 256 --repeat 5
    python benchmarks/bench_flash_attention.py --groups 4       # grouped-query: 4 query heads per K/V head

For each T: F.scaled_dot_product_attention on (B, H, T, D) float32 queries, keys and values
(B * H chosen so that the standard node's P stays near --budget-mib), one forward and one
backward. Memory: tracemalloc's peak during the call, less the inputs and the four arrays
every implementation returns (O, dQ, dK, dV): the extra memory of the implementation.
--groups G: grouped-query attention (enable_gqa), B * H query heads on B * H / G key/value heads.
Time: the median of --repeat runs, without tracemalloc (it slows allocation down).
"""
from __future__ import annotations

import platform
import statistics
import time
import tracemalloc

import numpy as np

from tinygrad_llm import cli
import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor
from tinygrad_llm.kernels import num_threads, tune_allocator


def run(q, k, v, g, impl, block, causal):
    ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ts, is_causal=causal, impl=impl, enable_gqa=k.shape[0] < q.shape[0],
                                         block_size=block if impl == "flash" else None)
    out.backward(g)


def measure(T, BH, D, impl, block, causal, repeat, groups=1):
    rs = np.random.default_rng(0)
    q = rs.standard_normal((BH, T, D)).astype(np.float32)
    k, v = (rs.standard_normal((BH // groups, T, D)).astype(np.float32) for _ in range(2))
    g = Tensor(rs.standard_normal((BH, T, D)).astype(np.float32))
    run(q, k, v, g, impl, block, causal)                         # warm up (allocator, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(q, k, v, g, impl, block, causal)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run(q, k, v, g, impl, block, causal)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return statistics.median(times), peak - 2 * (q.nbytes + k.nbytes)


def main():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--T", type=cli.integer(min=1), nargs="+", default=[256, 1024, 4096])
    p.add_argument("--D", type=cli.integer(min=1), default=64, help="head size")
    p.add_argument("--blocks", type=cli.integer(min=1), nargs="+", default=[64, 128, 256], help="flash tile sizes to try")
    p.add_argument("--budget-mib", type=cli.number(min=0, min_open=True), default=256, help="B * H is chosen so one T x T P is about this big")
    p.add_argument("--max-bh", type=cli.integer(min=1), default=16, help="at most this many (batch, head) pairs")
    p.add_argument("--repeat", type=cli.integer(min=1), default=3)
    p.add_argument("--no-causal", action="store_true")
    p.add_argument("--groups", type=cli.integer(min=1), default=1, help="query heads per key/value head (enable_gqa); 1: none")
    args = p.parse_args()
    tuned = tune_allocator()
    causal = not args.no_causal
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, {num_threads()} threads, allocator {'tuned' if tuned else 'default'}; "
          f"float32, D={args.D}, {'causal' if causal else 'no mask'}, forward + backward"
          + (f", {args.groups} query heads per key/value head" if args.groups > 1 else ""))
    print(f"{'T':>6} {'B*H':>4} {'impl':>14} {'time ms':>9} {'extra MiB':>10} {'vs standard':>12}")
    for T in args.T:
        BH = max(1, min(args.max_bh, int(args.budget_mib * 2**20 // (4 * T * T))))
        BH = max(args.groups, BH // args.groups * args.groups)
        t_std, m_std = measure(T, BH, args.D, "standard", None, causal, args.repeat, args.groups)
        print(f"{T:>6} {BH:>4} {'standard':>14} {t_std * 1e3:9.1f} {m_std / 2**20:10.1f}")
        for block in args.blocks:
            t, m = measure(T, BH, args.D, "flash", block, causal, args.repeat, args.groups)
            print(f"{T:>6} {BH:>4} {f'flash {block}':>14} {t * 1e3:9.1f} {m / 2**20:10.1f} "
                  f"{t / t_std:6.2f}x time, {m / m_std:5.3f}x memory")


if __name__ == "__main__":
    main()
