"""Time one training step (forward + backward + AdamW step) of our GPT, and of the same
model written in PyTorch eager (when torch is installed), alternating the two in one run.

    python benchmarks/bench_train_step.py                      # the 'cpu' preset's model
    python benchmarks/bench_train_step.py --preset gpu --iters 3
    python benchmarks/bench_train_step.py --device gpu --tf32 on   # shakespeare_char on a GPU, TF32 matmuls
    python benchmarks/bench_train_step.py --profile            # where our time goes
    python benchmarks/bench_train_step.py --no-torch --breakdown --torch-breakdown   # both, per op
    python benchmarks/bench_train_step.py --no-torch --dtype float16 --attention flash --recompute block

Prints ms/iter (median), tokens/s, MFU against --peak-flops (default: the device's peak for
the precision used, tinygrad_llm.hardware), and peak memory (on the CPU our traced arrays;
on a GPU the memory pool's high-water mark of a step, and PyTorch's max_memory_allocated),
for each implementation, then the ratio ours / PyTorch. Each step ends by reading the loss,
so a GPU step is timed to its end. PyTorch runs in a process of its own (the two libraries'
thread pools slow each other down in one process); the two take turns in rounds of --round
steps. --device gpu picks the gpu preset unless --preset says otherwise; --tf32 on lets both
use TF32 tensor cores for float32 matrix products (off: full float32, the default).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import platform
import statistics
import time
import tracemalloc

import numpy as np

from tinygrad_llm import cli
import tinygrad_llm as tg
import tinygrad_llm.hardware  # noqa: F401  (tg.hardware: the device's peak FLOP/s)
from tinygrad_llm import GPT, GPTConfig, amp
from tinygrad_llm.optim import clip_grad_norm_
from tinygrad_llm.kernels import num_threads, tune_allocator
from tinygrad_llm.presets import preset


def make_batches(n, B, T, V, seed=0):
    rs = np.random.default_rng(seed)
    return [(rs.integers(0, V, (B, T)), rs.integers(0, V, (B, T))) for _ in range(n)]


class Ours:
    name = "tinygrad_llm"

    def __init__(self, cfg: GPTConfig, device, dtype="float32"):
        tg.manual_seed(0)
        self.model = GPT(cfg).to(device)
        self.opt = self.model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
        self.device = device
        self.precision = amp.autocast(dtype)              # float32: no change (as train.py)
        self.scaler = amp.GradScaler(enabled=dtype == "float16")

    def step(self, x, y):
        with self.precision:
            _, loss = self.model(tg.Tensor(x, device=self.device), tg.Tensor(y, device=self.device))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad()   # as train.py (and PyTorch's default)
        return loss.item()


class Torch:
    """nanoGPT's model, written out here: PyTorch eager with its fused CPU SDPA kernel."""

    name = "pytorch"

    def __init__(self, cfg: GPTConfig, device, tf32=False):
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        torch.manual_seed(0)
        self.torch, self.cfg = torch, cfg
        self.device = "cpu" if device == "cpu" else device.replace("gpu", "cuda")
        if self.device != "cpu":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        C, H = cfg.n_embd, cfg.n_head

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
                self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
                self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
                self.drop = nn.Dropout(cfg.dropout)

            def forward(self, x):
                B, T, _ = x.shape
                q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
                q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                   dropout_p=cfg.dropout if self.training else 0.0)
                x = x + self.drop(self.c_proj(a.transpose(1, 2).contiguous().view(B, T, C)))
                return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte, self.wpe = nn.Embedding(cfg.vocab_size, C), nn.Embedding(cfg.block_size, C)
                self.h = nn.ModuleList([Block() for _ in range(cfg.n_layer)])
                self.ln_f = nn.LayerNorm(C)
                self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
                self.lm_head.weight = self.wte.weight
                self.drop = nn.Dropout(cfg.dropout)

            def forward(self, idx, tgt):
                T = idx.shape[1]
                x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
                for b in self.h:
                    x = b(x)
                logits = self.lm_head(self.ln_f(x))
                return F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1))

        self.model = Model().to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))

    def step(self, x, y):
        torch = self.torch
        loss = self.model(torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def op_breakdown(impl, batches):
    """Wall time inside each op's forward and backward (and the optimizer), summed over
    ``batches``: tells BLAS-heavy ops from elementwise ones and from Python overhead
    (the rest of the step)."""
    import collections
    import functools
    from tinygrad_llm.function import Function
    totals = collections.Counter()

    def timed(fn, key):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                totals[key] += time.perf_counter() - t0
        return wrapper

    classes, stack = [], list(Function.__subclasses__())
    while stack:
        c = stack.pop()
        classes.append(c)
        stack.extend(c.__subclasses__())
    saved = []
    for c in classes:
        for meth in ("forward", "backward"):
            if meth in c.__dict__:
                saved.append((c, meth, c.__dict__[meth]))
                setattr(c, meth, timed(c.__dict__[meth], f"{c.__name__}.{meth}"))
    opt_step = impl.opt.step
    impl.opt.step = timed(opt_step, "optimizer.step")
    t0 = time.perf_counter()
    for x, y in batches:
        impl.step(x, y)
    total = time.perf_counter() - t0
    for c, meth, fn in saved:
        setattr(c, meth, fn)
    impl.opt.step = opt_step
    n = len(batches)
    print(f"\nwhere the time goes ({n} steps, {total / n * 1000:.1f} ms/step):")
    for key, t in totals.most_common():
        if t / total >= 0.005:
            print(f"  {key:<34} {t / n * 1000:7.2f} ms  {t / total * 100:5.1f}%")
    rest = total - sum(totals.values())
    print(f"  {'(everything else: graph, Python)':<34} {rest / n * 1000:7.2f} ms  {rest / total * 100:5.1f}%")


def torch_breakdown(cfg: GPTConfig, device, batches):
    """PyTorch's own view of its step: torch.profiler's self CPU time per op, per step
    (the profiler adds some overhead of its own). Runs in a process of its own, after
    everything else, so that nothing else competes for the cores."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_torch_profile_worker, args=(cfg.to_dict(), device, batches))
    proc.start()
    proc.join()


def _torch_profile_worker(cfg_dict, device, batches):
    from torch.profiler import ProfilerActivity, profile
    impl = Torch(GPTConfig(**cfg_dict), device)
    warm, timed = batches[:3], batches[3:]
    for x, y in warm:
        impl.step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for x, y in timed:
            impl.step(x, y)
        total = time.perf_counter() - t0
    n = len(timed)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    print(f"\nPyTorch, torch.profiler self CPU time ({n} steps, {total / n * 1000:.1f} ms/step while profiled):")
    for e in rows:
        ms = e.self_cpu_time_total / 1000 / n
        if ms / (total * 1000 / n) >= 0.005:
            print(f"  {e.key[:48]:<48} {ms:7.2f} ms  {ms / (total * 10 / n):5.1f}%")


class TorchProcess:
    """The PyTorch model in a process of its own, stepped on request.

    In one process the two libraries' thread pools slow each other down (measured: PyTorch
    took 185 ms per step alternating in-process vs 81 ms alone), so PyTorch runs here and
    the main process (ours) and this one take turns, in rounds of steps.
    """

    name = "pytorch"

    def __init__(self, cfg: GPTConfig, device, batches, tf32=False):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_torch_worker, args=(child, cfg.to_dict(), device, batches, tf32), daemon=True)
        self.proc.start()
        child.close()                     # the worker's end: so that recv() sees the worker die
        self.info = self.conn.recv()      # raises EOFError if the worker failed to start

    def timed_step(self, i):
        self.conn.send(i)
        return self.conn.recv()

    def peak_memory(self):
        """Bytes: max_memory_allocated over one step on a GPU, None on the CPU."""
        self.conn.send("peak")
        return self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.proc.join(timeout=30)


def _torch_worker(conn, cfg_dict, device, batches, tf32=False):
    import torch
    impl = Torch(GPTConfig(**cfg_dict), device, tf32)
    where = f"{torch.get_num_threads()} threads" if impl.device == "cpu" else \
        f"{torch.cuda.get_device_name(0)}, TF32 {'on' if tf32 else 'off'}"
    conn.send(f"torch {torch.__version__}, {where}, own process")
    while (i := conn.recv()) is not None:
        if i == "peak":
            if impl.device == "cpu":
                conn.send(None)
                continue
            torch.cuda.reset_peak_memory_stats()
            impl.step(*batches[0])
            conn.send(torch.cuda.max_memory_allocated())
            continue
        t0 = time.perf_counter()
        impl.step(*batches[i])
        conn.send(time.perf_counter() - t0)


def gpu_pool_peak(step, device):
    """Bytes CuPy's memory pool held after one ``step`` on ``device``, starting from an empty pool:
    the pool keeps every block a step freed, so this is the step's high-water mark."""
    cp = tg.backend.xp_for(device)
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    base = pool.used_bytes()                  # weights, gradients, optimizer state
    step()
    return pool.total_bytes(), base


def main():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default=None, choices=["cpu", "gpu"], help="default: 'gpu' on a GPU, else 'cpu'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tf32", choices=["on", "off"], default="off",
                   help="GPU: float32 matrix products on TF32 tensor cores, for both (default off)")
    p.add_argument("--iters", type=cli.integer(min=1), default=30, help="iterations per implementation")
    p.add_argument("--warmup", type=cli.integer(min=0), default=3)
    p.add_argument("--round", type=cli.integer(min=1), default=6, help="steps each implementation runs per turn")
    p.add_argument("--batch-size", type=cli.integer(min=1), default=None)
    p.add_argument("--peak-flops", type=cli.number(min=0, min_open=True), default=None,
                   help="for MFU (default: the device's peak for the precision used, else tinygrad_llm.model.PEAK_FLOPS)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--dtype", default="float32", choices=amp.AMP_DTYPES, help="ours: float16 = mixed precision")
    p.add_argument("--attention", default="standard", choices=["standard", "flash"], help="ours: GPTConfig.attention")
    p.add_argument("--recompute", default="none", choices=["none", "mlp", "block"], help="ours: GPTConfig.recompute")
    p.add_argument("--profile", action="store_true", help="cProfile our step and print the top entries")
    p.add_argument("--breakdown", action="store_true", help="time spent in each op's forward/backward")
    p.add_argument("--torch-breakdown", action="store_true",
                   help="also print PyTorch's torch.profiler breakdown of its step (own process)")
    p.add_argument("--default-allocator", action="store_true",
                   help="skip tinygrad_llm.kernels.tune_allocator() (glibc keeps freed memory for reuse)")
    args = p.parse_args()
    tuned = False if args.default_allocator else tune_allocator()
    args.device = tg.backend.canonical_device(args.device)
    gpu = args.device != "cpu"
    tf32 = gpu and args.tf32 == "on"
    tg.backend.set_tf32(tf32)
    args.preset = args.preset or ("gpu" if gpu else "cpu")

    model_fields, train_fields = preset(args.preset)
    B = args.batch_size or train_fields["batch_size"]
    cfg = GPTConfig(vocab_size=65, **model_fields)
    T = cfg.block_size
    ours = Ours(dataclasses.replace(cfg, attention=args.attention, recompute=args.recompute), args.device, args.dtype)
    batches = make_batches(args.warmup + args.iters, B, T, cfg.vocab_size)
    ref, torch_info = None, "torch skipped"
    if not args.no_torch:
        if importlib.util.find_spec("torch") is None:
            torch_info = "torch not installed"
        else:
            try:
                ref = TorchProcess(cfg, args.device, batches, tf32)
                torch_info = ref.info
            except EOFError:              # its traceback is printed above (e.g. a PyTorch without CUDA)
                torch_info = "torch failed to start"
    print(f"preset {args.preset}: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {T}, "
          f"batch {B}, dropout {cfg.dropout}; {ours.model.num_params() / 1e6:.2f}M params; ours: {args.dtype}, "
          f"attention {args.attention}, recompute {args.recompute}")
    where = f"{num_threads()} threads, allocator {'tuned' if tuned else 'default'}"
    if gpu:
        import cupy  # noqa: PLC0415 (the GPU run needs CuPy)
        try:
            name = cupy.cuda.runtime.getDeviceProperties(int(args.device.split(":")[1]))["name"]
            name = name.decode() if isinstance(name, bytes) else name
        except Exception:  # noqa: BLE001 - only for the label
            name = "unknown GPU"
        where = f"{name}, CuPy {cupy.__version__}, TF32 {'on' if tf32 else 'off'}, fused kernels " + \
            ("off (reference tier)" if tg.reference_tier_forced() else "on where they pass their checks")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, {torch_info}; ours: {where}")
    for i, (x, y) in enumerate(batches[:args.warmup]):
        ours.step(x, y)
        if ref is not None:
            ref.timed_step(i)
    if args.profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for x, y in batches[:3]:
            ours.step(x, y)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    if args.breakdown:
        op_breakdown(ours, batches[:10])
    times = {ours.name: []} | ({} if ref is None else {ref.name: []})
    # Take turns in rounds of --round steps, so both see the same machine over the run. Not
    # step by step: a library's idle worker threads keep spinning for a while after its step
    # (OpenBLAS's and OpenMP's do), which halved PyTorch's speed when the two alternated
    # every step. The first step of each round, which pays for that, is left out.
    timed = range(args.warmup, len(batches))
    for r in range(0, len(timed), args.round):
        block = timed[r:r + args.round]
        for k, i in enumerate(block):
            t0 = time.perf_counter()
            ours.step(*batches[i])
            if k or args.round == 1:
                times[ours.name].append(time.perf_counter() - t0)
        if ref is not None:
            for k, i in enumerate(block):
                t = ref.timed_step(i)
                if k or args.round == 1:
                    times[ref.name].append(t)
    memory = {}
    if ref is not None:
        torch_peak = ref.peak_memory()
        if torch_peak is not None:
            memory[ref.name] = f", peak memory {torch_peak / 2**20:.0f} MiB (max_memory_allocated)"
        ref.close()
    if gpu:
        held, base = gpu_pool_peak(lambda: ours.step(*batches[0]), args.device)
        memory[ours.name] = f", peak memory {held / 2**20:.0f} MiB (CuPy pool; {base / 2**20:.0f} MiB between steps)"
    else:
        tracemalloc.start()
        ours.step(*batches[0])
        memory[ours.name] = f", peak traced arrays {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MiB"
        tracemalloc.stop()
    if gpu:
        st = tg.kernels.cuda.status(args.device)
        print(f"fused kernels on {args.device}: " + (", ".join(f"{k} {'in use' if v is True else 'reference tier' if v is False else v}"
                                                               for k, v in st.items()) or "none used"))
    flops = ours.model.flops_per_token(T) * B * T
    peak_flops = args.peak_flops or tg.hardware.peak_flops(args.device, tf32=tf32) or \
        tg.model.PEAK_FLOPS["cpu" if args.device == "cpu" else "cuda"]
    med = {}
    for name, ts in times.items():
        med[name] = statistics.median(ts)
        print(f"{name:>13}: {med[name] * 1000:8.1f} ms/iter (min {min(ts) * 1000:.1f}), "
              f"{B * T / med[name]:9,.0f} tok/s, MFU {flops / med[name] / peak_flops * 100:5.1f}% "
              f"of {peak_flops:.3g} FLOP/s{memory.get(name, '')}")
    if "pytorch" in med:
        print(f"ratio ours / pytorch: {med['tinygrad_llm'] / med['pytorch']:.2f}x")
    assert math.isfinite(ours.step(*batches[0]))
    if args.torch_breakdown:
        if importlib.util.find_spec("torch") is None:
            print("--torch-breakdown: torch is not installed")
        else:
            if ref is not None:
                ref.close()                   # its process would otherwise keep threads spinning
            torch_breakdown(cfg, args.device, batches[:13])


if __name__ == "__main__":
    main()
