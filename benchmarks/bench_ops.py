"""Time forward + backward of each fused op (tinygrad_llm.nn.functional) against PyTorch eager
on the CPU, on GPT-like float32 shapes, alternating the two in one run.

    python benchmarks/bench_ops.py                    # rows 768 and 16384, C 128 and 384
    python benchmarks/bench_ops.py --rows 768 --reps 20 --ops layer_norm gelu_tanh
    python benchmarks/bench_ops.py --embedding-scatter  # compare scatter-add strategies
    python benchmarks/bench_ops.py --gemms              # one cpu-preset step's GEMMs: OpenBLAS vs PyTorch

Prints a Markdown table: best-of-reps milliseconds for ours, PyTorch's with its default
thread count and with 1 thread, and the ratio ours / (the faster PyTorch) (lower is
better). PyTorch's default threads can be very slow on a machine whose cores other jobs
keep busy, hence the 1-thread column. The machine's other load shows up in every column,
so trust the ratio more than the absolute numbers.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor
from tinygrad_llm.nn.functional import causal_self_attention

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the table then has only our column
    torch = TF = None


def cases(N, C, rs):
    """(name, shape text, our fn, torch fn, float inputs that need grad, int inputs)."""
    V = 65
    x = rs.standard_normal((N, C)).astype(np.float32)
    h = rs.standard_normal((N, 4 * C)).astype(np.float32)
    w = (rs.standard_normal((4 * C, C)) / np.sqrt(C)).astype(np.float32)
    b = np.zeros(4 * C, np.float32)
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    logits = rs.standard_normal((N, V)).astype(np.float32)
    targets = rs.integers(0, V, N)
    emb = rs.standard_normal((V, C)).astype(np.float32)
    ids = rs.integers(0, V, N)
    yield "linear", f"({N},{C})->{4 * C}", F.linear, TF and TF.linear, [x, w, b], []
    yield "softmax", f"({N},{C})", F.softmax, TF and (lambda a: TF.softmax(a, -1)), [x], []
    yield "log_softmax", f"({N},{V})", F.log_softmax, TF and (lambda a: TF.log_softmax(a, -1)), [logits], []
    yield "cross_entropy", f"({N},{V})", F.cross_entropy, TF and TF.cross_entropy, [logits], [targets]
    yield ("layer_norm", f"({N},{C})", lambda a, g, bb: F.layer_norm(a, (C,), g, bb),
           TF and (lambda a, g, bb: TF.layer_norm(a, (C,), g, bb)), [x, gamma, beta], [])
    yield ("rms_norm", f"({N},{C})", lambda a, g: F.rms_norm(a, (C,), g, 1e-6),
           TF and (lambda a, g: TF.rms_norm(a, (C,), g, 1e-6)), [x, gamma], [])
    yield ("gelu_tanh", f"({N},{4 * C})", lambda a: F.gelu(a, approximate="tanh"),
           TF and (lambda a: TF.gelu(a, approximate="tanh")), [h], [])
    yield "gelu_exact", f"({N},{4 * C})", F.gelu, TF and TF.gelu, [h], []
    yield "relu", f"({N},{4 * C})", F.relu, TF and TF.relu, [h], []
    yield "silu", f"({N},{4 * C})", F.silu, TF and TF.silu, [h], []
    yield ("embedding", f"{N} ids,V={V},D={C}", lambda w_, i: F.embedding(i, w_),
           TF and (lambda w_, i: TF.embedding(i, w_)), [emb], [ids])
    yield ("dropout", f"({N},{C}) p=0.1", lambda a: F.dropout(a, 0.1),
           TF and (lambda a: TF.dropout(a, 0.1)), [x], [])
    T = 64 if C <= 128 else 256                  # the presets' block sizes; heads of 32 or 64
    if N % T == 0:
        B, H = N // T, C // (32 if C <= 128 else 64)
        qkv = rs.standard_normal((B, T, 3 * C)).astype(np.float32)

        def torch_attention(a):
            q, k, v = (z.view(B, T, H, C // H).transpose(1, 2) for z in a.split(C, dim=2))
            return TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        yield ("causal_self_attention", f"({B},{T},3*{C}) H={H}", lambda a: causal_self_attention(a, H),
               TF and torch_attention, [qkv], [])


def big_vocab_cases(rs):
    N, V, C = 768, 50257, 384
    logits = rs.standard_normal((N, V)).astype(np.float32)
    targets = rs.integers(0, V, N)
    emb = (rs.standard_normal((V, C)) * 0.02).astype(np.float32)
    ids = rs.integers(0, V, N)
    yield "cross_entropy", f"({N},{V})", F.cross_entropy, TF and TF.cross_entropy, [logits], [targets]
    yield ("embedding", f"{N} ids,V={V},D={C}", lambda w_, i: F.embedding(i, w_),
           TF and (lambda w_, i: TF.embedding(i, w_)), [emb], [ids])


def time_ours(fn, floats, ints, reps):
    ts = [Tensor(a, requires_grad=True) for a in floats]
    extra = [Tensor(a) for a in ints]
    best = float("inf")
    for _ in range(reps):
        for t in ts:
            t.grad = None
        t0 = time.perf_counter()
        y = fn(*ts, *extra)
        y.backward(Tensor(np.ones(y.shape, y.dtype)))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def time_torch(fn, floats, ints, reps):
    ts = [torch.tensor(a, requires_grad=True) for a in floats]
    extra = [torch.tensor(a) for a in ints]
    best = float("inf")
    for _ in range(reps):
        for t in ts:
            t.grad = None
        t0 = time.perf_counter()
        y = fn(*ts, *extra)
        y.backward(torch.ones_like(y))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def scatter_strategies(reps):
    """Embedding's backward: ways to add rows of g into dW at (repeated) ids, float32."""
    from tinygrad_llm.kernels.cpu import scatter_add_rows  # noqa: PLC0415 (what Embedding's CPU kernel uses)

    def add_at_2d(ids, g, V):
        dW = np.zeros((V, g.shape[1]), g.dtype)
        np.add.at(dW, ids, g)
        return dW

    def sort_reduceat(ids, g, V):
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        dW = np.zeros((V, g.shape[1]), g.dtype)
        dW[s[starts]] = np.add.reduceat(g[order], starts, axis=0)
        return dW

    def onehot_gemm(ids, g, V):
        oh = np.zeros((V, ids.size), g.dtype)
        oh[ids, np.arange(ids.size)] = 1
        return oh @ g

    def used(ids, g, V):
        return scatter_add_rows(ids, g, V)

    rs = np.random.default_rng(0)
    print("| ids | D | V | np.add.at 2-D | sort + reduceat | one-hot GEMM | 1-D np.add.at (used) |")
    print("|---|---|---|---|---|---|---|")
    for shape in [(12, 64), (64, 256)]:
        for D in (128, 384):
            for V in (65, 50257):
                ids = rs.integers(0, V, shape).reshape(-1)
                g = rs.standard_normal((ids.size, D)).astype(np.float32)
                ref = add_at_2d(ids, g, V)
                row = []
                for f in (add_at_2d, sort_reduceat, onehot_gemm, used):
                    if f is onehot_gemm and V * ids.size > 5e7:
                        row.append("(too big)")
                        continue
                    np.testing.assert_allclose(f(ids, g, V), ref, rtol=1e-4, atol=1e-4)
                    best = float("inf")
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        f(ids, g, V)
                        best = min(best, time.perf_counter() - t0)
                    row.append(f"{best * 1e3:.2f}")
                print(f"| {shape} | {D} | {V} | " + " | ".join(row) + " |", flush=True)


def step_gemms(reps, rounds=3, N=768, C=128, n_layer=4, V=65):
    """The GEMMs of one training step of the `cpu` preset (every Linear's forward
    x @ W^T, and backward g @ W and g^T @ x), timed as NumPy (OpenBLAS) and as PyTorch.

    Not interleaved call by call: each library runs all its GEMMs, ``reps`` times, then the
    other does (idle BLAS/OpenMP worker threads spin for a while after a call and slow the
    other library down). Prints per-shape medians of the last round and per-round totals.
    """
    rs = np.random.default_rng(0)
    shapes = [(C, 3 * C, n_layer), (C, C, n_layer), (C, 4 * C, n_layer), (4 * C, C, n_layer), (C, V, 1)]
    arrays = []
    for fan_in, fan_out, count in shapes:
        x = rs.standard_normal((N, fan_in)).astype(np.float32)
        w = rs.standard_normal((fan_out, fan_in)).astype(np.float32)
        g = rs.standard_normal((N, fan_out)).astype(np.float32)
        arrays.append((fan_in, fan_out, count, x, w, g))

    def run(lib):
        per_shape = []
        for fan_in, fan_out, count, x, w, g in arrays:
            if lib == "torch":
                x, w, g = (torch.from_numpy(a) for a in (x, w, g))
            row = []
            for name, f in (("fwd", lambda: x @ w.T), ("dx", lambda: g @ w), ("dW", lambda: g.T @ x)):
                f()
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    f()
                    ts.append(time.perf_counter() - t0)
                row.append(float(np.median(ts)) * 1e3)
            per_shape.append((fan_in, fan_out, count, row))
        return per_shape

    libs = ["numpy"] + (["torch"] if torch else [])
    totals = {lib: [] for lib in libs}
    last = {}
    for _ in range(rounds):
        for lib in libs:
            last[lib] = run(lib)
            totals[lib].append(sum(c * sum(row) for _, _, c, row in last[lib]))
    print(f"GEMMs of one `cpu`-preset training step: (N={N}) x (in -> out); ms per call, medians of {reps}")
    print("| in -> out (count) | " + " | ".join(f"{lib} fwd / dx / dW (GFLOP/s)" for lib in libs) + " |")
    print("|---|" + "---|" * len(libs))
    for i, (fan_in, fan_out, count, _) in enumerate(last["numpy"]):
        cells = []
        for lib in libs:
            row = last[lib][i][3]
            gf = 2 * N * fan_in * fan_out * 3 / (sum(row) * 1e6)
            cells.append(" / ".join(f"{t:.3f}" for t in row) + f" ({gf:.0f})")
        print(f"| {fan_in} -> {fan_out} ({count}) | " + " | ".join(cells) + " |")
    for lib in libs:
        print(f"{lib}: all of a step's GEMMs, per round: " + ", ".join(f"{t:.1f} ms" for t in totals[lib]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[768, 16384], help="B*T rows")
    ap.add_argument("--channels", type=int, nargs="+", default=[128, 384], help="n_embd C")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--ops", nargs="*", help="only these ops")
    ap.add_argument("--no-big-vocab", action="store_true", help="skip the V=50257 cases")
    ap.add_argument("--embedding-scatter", action="store_true", help="only compare scatter-add strategies")
    ap.add_argument("--gemms", action="store_true", help="only time one cpu-preset step's GEMMs, NumPy vs PyTorch")
    args = ap.parse_args()
    if args.gemms:
        step_gemms(max(args.reps, 50))
        return
    if args.embedding_scatter:
        scatter_strategies(args.reps)
        return
    rs = np.random.default_rng(0)
    print(f"torch {torch.__version__ if torch else '(not installed)'}, "
          f"{torch.get_num_threads() if torch else '-'} threads; numpy {np.__version__}; float32, fwd+bwd")
    threads = torch.get_num_threads() if torch else 1
    print(f"| op | shape | ours ms | torch ({threads} threads) ms | torch (1 thread) ms | ours/torch |")
    print("|---|---|---|---|---|---|")
    groups = [cases(N, C, rs) for N in args.rows for C in args.channels]
    if not args.no_big_vocab:
        groups.append(big_vocab_cases(rs))
    for group in groups:
        for name, shape, ours, theirs, floats, ints in group:
            if args.ops and name not in args.ops:
                continue
            a = time_ours(ours, floats, ints, args.reps)
            b = c = float("nan")
            if torch:
                b = time_torch(theirs, floats, ints, args.reps)
                torch.set_num_threads(1)
                c = time_torch(theirs, floats, ints, args.reps)
                torch.set_num_threads(threads)
            print(f"| {name} | {shape} | {a:.2f} | {b:.2f} | {c:.2f} | {a / min(b, c):.2f} |", flush=True)


if __name__ == "__main__":
    main()
