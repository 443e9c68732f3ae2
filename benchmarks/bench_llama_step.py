"""Time one forward + backward pass of a Llama of SmolLM-135M's shape: ours, and transformers'
LlamaForCausalLM in PyTorch eager (its default SDPA attention) with the same weights.

    python benchmarks/bench_llama_step.py                       # batch 1 x 256 tokens, 5 timed steps each
    python benchmarks/bench_llama_step.py --batch-size 4 --seq 128 --iters 3
    python benchmarks/bench_llama_step.py --small                # a 4-layer model of the same widths (quick)

SmolLM-135M: 30 layers, 576 wide, 9 query heads and 3 key/value heads of 64, SwiGLU MLP
1536 wide, vocabulary 49152, tied embeddings (134.5M parameters). Random weights: the time
does not depend on them. PyTorch runs in a process of its own (the two libraries' thread
pools slow each other down in one process), loading our weights from a folder written by
save_llama, so the first losses of the two are printed side by side as a check. The two
take turns, one step each; each step is seconds long, so a library's idle threads do not
disturb the other's next step. Prints the median (and min) seconds per step, tokens/s,
the ratio ours / PyTorch, and our peak traced array memory.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import tempfile
import time
import tracemalloc

import numpy as np

import tinygrad_llm as tg
from tinygrad_llm import Llama, LlamaConfig
from tinygrad_llm.kernels import num_threads, tune_allocator

#: HuggingFaceTB/SmolLM-135M's config.json, in our names
SMOLLM_135M = dict(vocab_size=49152, block_size=2048, n_layer=30, n_head=9, n_kv_head=3, n_embd=576,
                   intermediate_size=1536, rms_norm_eps=1e-5, rope_theta=10000.0, tie_weights=True)


def _torch_worker(conn, folder, batches):
    import torch
    import transformers
    model = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa").float().train()
    conn.send(f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
              f"{transformers.__version__}, sdpa attention, own process")
    while (i := conn.recv()) is not None:
        x, y = (torch.from_numpy(a) for a in batches[i])
        t0 = time.perf_counter()
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)
        conn.send((time.perf_counter() - t0, loss.item()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--iters", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--small", action="store_true", help="4 layers instead of 30 (a quick look)")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args()
    tuned = tune_allocator()
    cfg = LlamaConfig(**{**SMOLLM_135M, **({"n_layer": 4} if args.small else {})})
    B, T = args.batch_size, args.seq
    tg.manual_seed(0)
    model = Llama(cfg).train()
    rs = np.random.default_rng(0)
    batches = [(rs.integers(0, cfg.vocab_size, (B, T)), rs.integers(0, cfg.vocab_size, (B, T)))
               for _ in range(args.warmup + args.iters)]

    def ours_step(i):
        x, y = batches[i]
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - t0, loss.item()

    ref, torch_info, folder = None, "torch skipped", None
    if not args.no_torch:
        if importlib.util.find_spec("transformers") is None:
            torch_info = "transformers not installed"
        else:
            import multiprocessing as mp
            folder = tempfile.TemporaryDirectory(prefix="bench-llama-")
            tg.save_llama(model, folder.name)
            ctx = mp.get_context("spawn")
            ref, child = ctx.Pipe()
            proc = ctx.Process(target=_torch_worker, args=(child, folder.name, batches), daemon=True)
            proc.start()
            torch_info = ref.recv()
    print(f"Llama of SmolLM-135M's shape{' (4 layers)' if args.small else ''}: {cfg.n_layer} layers, {cfg.n_embd} "
          f"wide, {cfg.n_head} heads / {cfg.n_kv_head} key-value, MLP {cfg.intermediate_size}, vocab "
          f"{cfg.vocab_size}; {model.num_params() / 1e6:.1f}M params; batch {B} x {T} tokens; forward + backward")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, {torch_info}; ours: {num_threads()} threads, "
          f"allocator {'tuned' if tuned else 'default'}")
    times, losses = {"tinygrad_llm": [], "pytorch": []}, {}
    for i in range(len(batches)):
        t, loss = ours_step(i)
        losses.setdefault("tinygrad_llm", loss)
        if i >= args.warmup:
            times["tinygrad_llm"].append(t)
        if ref is not None:
            ref.send(i)
            t, loss = ref.recv()
            losses.setdefault("pytorch", loss)
            if i >= args.warmup:
                times["pytorch"].append(t)
    if ref is not None:
        ref.send(None)
        proc.join(timeout=60)
        folder.cleanup()
    print("first loss: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))
    tracemalloc.start()
    ours_step(0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    med = {}
    for name, ts in times.items():
        if not ts:
            continue
        med[name] = statistics.median(ts)
        extra = f", peak traced arrays {peak / 2**20:.0f} MiB" if name == "tinygrad_llm" else ""
        print(f"{name:>13}: {med[name]:7.2f} s/step (min {min(ts):.2f}), {B * T / med[name]:7,.0f} tok/s{extra}")
    if "pytorch" in med:
        print(f"ratio ours / pytorch: {med['tinygrad_llm'] / med['pytorch']:.2f}x")


if __name__ == "__main__":
    main()
