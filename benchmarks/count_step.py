"""Count what one training step of the shakespeare_char model asks of CuPy: calls, kernel
launches (including the copies CuPy's batched matmul makes) and host syncs, by op. Runs on
fakecupy, a NumPy-backed stand-in for CuPy that counts them (no GPU needed).

    PYTHONPATH=../shared/tools/fakecupy:. python benchmarks/count_step.py             # as the stand-in runs it
    PYTHONPATH=../shared/tools/fakecupy:. python benchmarks/count_step.py --fused     # as a GPU runs it
    PYTHONPATH=../shared/tools/fakecupy:. python benchmarks/count_step.py --reference # the reference tier
    PYTHONPATH=../shared/tools/fakecupy:. python benchmarks/count_step.py --fused --arch llama --n-kv-head 2

It drives ``tinygrad_llm.train.train`` itself (the loop of train.py, not a copy) on the gpu
preset's model (6 layers, 384 wide, block 256, dropout 0.2; ``--arch llama`` the same shape
with Llama's block, as ``train_shakespeare.py --arch llama``; ``--batch-size``, default 8:
the counts do not depend on it) and counts each iteration from one step's start to the next
(``backend.reseed_from_cpu`` marks them). The first iteration (first-use checks) and the last
(evaluation and checkpoint) are left out; log_interval is 2, so every second iteration counted
includes the loss read. Evaluation is replaced by a constant (it is not part of a step).

The stand-in runs no CUDA source, so there the fused kernels fail their first-use check and
the ops fall back to the reference tier (the default mode counts that). ``--fused`` counts
the step as a GPU runs it once the kernels pass their checks: each kernel launch is counted
and computes nothing (the loss printed is then meaningless; the counts do not depend on
values, since the step reads nothing back to decide anything). ``--json FILE`` writes the
counts in the stand-in's format (its report.py reads it).
"""
from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import types
import warnings

import numpy as np

from tinygrad_llm import cli
import tinygrad_llm as tg
import tinygrad_llm.train as train_mod
from tinygrad_llm import backend
from tinygrad_llm.function import Function
from tinygrad_llm.kernels import cuda
from tinygrad_llm.architectures import ARCHITECTURES, model_class
from tinygrad_llm.presets import preset

PKG = os.path.dirname(os.path.abspath(tg.__file__)) + os.sep
_ops = []                                   # (op name, "fwd" | "bwd") of the ops running now

# where calls are attributed outside an op: the innermost package file that is not plumbing
_PLACES = [("optim/", "optimizer step", "opt"), ("nn/utils.py", "clip_grad_norm_", "opt"),
           ("data.py", "get_batch", "fwd"), ("model.py", "model (positions)", "fwd"),
           ("train.py", "train loop", "loop"), ("tensor.py", "tensor (backward's seed)", "bwd"),
           ("function.py", "autograd (gradient sums, outputs)", "bwd")]
_PLUMBING = ("kernels/cuda.py", "backend.py", "kernels/parallel.py")


def where():
    """(op or place, phase, file:line) of the current CuPy call (replaces the stand-in's own)."""
    f = sys._getframe(2)
    loc = None
    while f is not None:
        fn = f.f_code.co_filename
        if fn.startswith(PKG):
            rel = fn[len(PKG):]
            if not rel.endswith(_PLUMBING):
                loc = f"{rel}:{f.f_lineno}"
                if _ops:
                    return _ops[-1][0], _ops[-1][1], loc
                for prefix, name, phase in _PLACES:
                    if rel.startswith(prefix):
                        return name, phase, loc
                return "other", "-", loc
        f = f.f_back
    return (_ops[-1][0], _ops[-1][1], "?") if _ops else ("other", "-", "?")


def _track_ops():
    """Wrap every op's forward and backward so that calls inside are attributed to it."""
    def wrap(fn, name, phase):
        def wrapper(self, *a, **k):
            _ops.append((name, phase))
            try:
                return fn(self, *a, **k)
            finally:
                _ops.pop()
        return wrapper

    stack, seen = list(Function.__subclasses__()), set()
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        stack.extend(c.__subclasses__())
        for meth, phase in (("forward", "fwd"), ("backward", "bwd")):
            if meth in c.__dict__:
                setattr(c, meth, wrap(c.__dict__[meth], c.__name__, phase))


def main():
    p = cli.ArgumentParser(description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fused", action="store_true", help="count the fused kernels as launched (a GPU's step)")
    mode.add_argument("--reference", action="store_true", help="run every op on the reference tier")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="gpt", help="the model's block (default gpt)")
    p.add_argument("--n-kv-head", type=cli.integer(min=1), default=None, help="llama: key/value heads (default: as many as query heads)")
    p.add_argument("--batch-size", type=cli.integer(min=1), default=8)
    p.add_argument("--n-layer", type=cli.integer(min=1), default=None, help="blocks (default: the preset's 6)")
    p.add_argument("--attention", choices=["standard", "flash"], default="standard", help="the model's attention")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="TrainConfig.dtype")
    p.add_argument("--steps", type=cli.integer(min=1), default=2, help="iterations counted (plus a first and a last, not counted)")
    p.add_argument("--json", default=None, help="write the counts of the iteration shown by op (fakecupy's format)")
    args = p.parse_args()

    import cupy                                                       # the stand-in
    stats = getattr(cupy, "_stats", None)
    if stats is None:
        sys.exit("error: this counts with fakecupy: put ../shared/tools/fakecupy first on PYTHONPATH")
    stats.where = where
    _track_ops()
    if args.reference:
        tg.use_reference_tier(True)
    device = "cuda:0"
    if args.fused:
        for name in cuda.FUSED_OPS:
            cuda._STATUS[name, device] = True                        # as if checked on a GPU
        cuda.launch = lambda device, source, kernel, grid, block, args: stats.record(f"kernel {kernel}", k=1)
        read = train_mod._StepWatch.read                             # the read still happens (and is
        train_mod._StepWatch.read = lambda self, it: (read(self, it)[0], None)   # counted); values are garbage

    snapshots = []
    reseed = backend.reseed_from_cpu

    def marked(dev):
        snapshots.append((collections.Counter(stats.calls), collections.Counter(stats.kernels),
                          collections.Counter(stats.syncs)))
        return reseed(dev)

    backend.reseed_from_cpu = marked
    train_mod.estimate_loss = lambda *a, **k: {"train": 4.0, "val": 4.0}

    model_fields, train_fields = preset("gpu")
    tg.manual_seed(1337)
    cls = model_class(args.arch)
    if args.arch == "llama":
        model_fields["n_kv_head"] = args.n_kv_head
    elif args.n_kv_head is not None:
        p.error("--n-kv-head is for --arch llama")
    if args.n_layer is not None:
        model_fields["n_layer"] = args.n_layer
    model_fields["attention"] = args.attention
    train_fields["dtype"] = args.dtype
    try:
        config = cls.config_class(vocab_size=65, **model_fields)
    except ValueError as e:
        p.error(str(e))
    model = cls(config).to(device)
    ids = np.random.default_rng(0).integers(0, 65, size=100_000).astype(np.uint16)
    data = types.SimpleNamespace(train=ids[:90_000], val=ids[90_000:])
    n_iter = args.steps + 2
    cfg = train_mod.TrainConfig(**{**train_fields, "batch_size": args.batch_size, "max_iters": n_iter,
                                   "eval_interval": 1000, "log_interval": 2, "eval_iters": 1})
    logs = []
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        train_mod.train(model, data, cfg, os.path.join(out, "run"), log=logs.append)
    snapshots.append((collections.Counter(stats.calls), collections.Counter(stats.kernels),
                      collections.Counter(stats.syncs)))

    steps = []
    for k in range(1, n_iter - 1):                                    # iterations 2 .. n_iter - 1
        (c0, k0, s0), (c1, k1, s1) = snapshots[k], snapshots[k + 1]
        steps.append((c1 - c0, k1 - k0, s1 - s0, (k + 1) % cfg.log_interval == 0))
    mode_name = "fused kernels counted as launched" if args.fused else \
        "reference tier" if args.reference else "fast tier as the stand-in runs it (fused kernels fall back)"
    print(f"count_step: {args.arch}, gpu preset ({config.n_layer} layers, 384 wide, block 256), {args.attention} "
          f"attention, {args.dtype}, batch {args.batch_size}, {mode_name}")
    for w in warned:
        if "tinygrad_llm" in str(w.message):
            print(f"  warning: {w.message}")
    print(f"  {'iteration':>9}  {'calls':>6}  {'launches':>8}  {'syncs':>5}")
    for i, (c, kk, s, read) in enumerate(steps):
        print(f"  {i + 2:>9}  {sum(c.values()):>6}  {sum(kk.values()):>8}  {sum(s.values()):>5}"
              + ("   (a log iteration: reads the loss)" if read else ""))
    shown = next((i for i, st in enumerate(steps) if not st[3]), 0)
    c, kk, s, _ = steps[shown]
    per_cat = collections.defaultdict(lambda: [0, 0, 0])
    for (cat, phase, api), n in c.items():
        per_cat[cat, phase][0] += n
    for (cat, phase, api), n in kk.items():
        per_cat[cat, phase][1] += n
    for (cat, phase, api, loc), n in s.items():
        per_cat[cat, phase][2] += n
    print(f"\n  by op, iteration {shown + 2} (phase: fwd, bwd, opt = optimizer and clipping, loop = the loop's own):")
    print(f"  {'op':<36} {'phase':<5} {'calls':>6} {'launches':>8} {'syncs':>5}")
    for (cat, phase), (nc, nk, ns) in sorted(per_cat.items(), key=lambda kv: -kv[1][1]):
        print(f"  {cat:<36} {phase:<5} {nc:>6} {nk:>8} {ns:>5}")
    for c_, kk_, s_, read in steps:
        for (cat, phase, api, loc), n in s_.items():
            print(f"  sync in iteration {'with' if read else 'without'} a read: {api} at {loc} ({cat}) x{n}")
    lines = [ln for ln in logs if ln.startswith("iter ")]
    if lines and not args.fused:
        print(f"  last log line: {lines[-1]}")
    if args.json:
        json.dump({"calls": [[list(key), v] for key, v in c.items()],
                   "kernels": [[list(key), v] for key, v in kk.items()],
                   "syncs": [[list(key), v] for key, v in s.items()], "h2d": [], "events": []},
                  open(args.json, "w"))


if __name__ == "__main__":
    main()
