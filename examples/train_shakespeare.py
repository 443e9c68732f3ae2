"""Train a GPT (or a Llama) on Tiny Shakespeare (or your own text), then print a sample.

    .venv/bin/python examples/train_shakespeare.py                      # CPU recipe (nanoGPT's)
    .venv/bin/python examples/train_shakespeare.py --device gpu         # GPU recipe (shakespeare_char)
    .venv/bin/python examples/train_shakespeare.py --max_iters 500 --n_layer 2 --out out/try
    .venv/bin/python examples/train_shakespeare.py --out out/try --resume   # continue where it stopped
    .venv/bin/python examples/train_shakespeare.py --arch llama --n_kv_head 2   # Llama's block, same recipe
    .venv/bin/mpiexec -n 2 .venv/bin/python examples/train_shakespeare.py --distributed   # 2 processes

Every config field below can be given as --field VALUE. Ctrl-C (or SIGTERM) saves a
checkpoint and --resume continues from it; a second Ctrl-C stops at once. A folder that
already holds a run is never replaced unless --overwrite is given. With --distributed,
under mpiexec, N processes train one model, each on --batch_size rows of every batch of
N x --batch_size (docs/distributed.md); only the first one prints and writes files.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from tinygrad_llm import backend, cli, distributed, hardware
from tinygrad_llm.architectures import ARCHITECTURES
from tinygrad_llm.checkpoint import CheckpointError, load_checkpoint, saved_arch
from tinygrad_llm.data import DataError, DownloadError, load_text_dataset, read_text
from tinygrad_llm.generate import generate_text
from tinygrad_llm.kernels import tune_allocator
from tinygrad_llm.presets import PRESETS, apply_overrides, describe_fields, preset
from tinygrad_llm.rundir import RunDirError, check_fresh, lock_run_dir
from tinygrad_llm.tokenizer import load_tokenizer
from tinygrad_llm.train import NonFiniteLossError, TrainConfig, train, training_memory

SCRIPT = Path(__file__)
NOT_FLAGS = ("vocab_size",)             # set by the tokenizer, not a flag


def _preset_name(argv) -> tuple[str, str, str]:
    """--device, --preset and --arch, read first: the help lists the chosen preset's values
    and architecture's fields. With --resume --out DIR and no --arch, the architecture is
    the run's, so that its model flags (--n_kv_head, ...) are known."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--device", default="cpu")
    pre.add_argument("--preset", default=None)
    pre.add_argument("--arch", default=None)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--out", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.arch is None and known.resume and known.out:
        known.arch = saved_arch(Path(known.out) / "latest")     # the run's (None: checked later)
    try:
        device = backend.canonical_device(known.device)
    except ValueError:
        device = "cpu"
    name = known.preset if known.preset in PRESETS else ("cpu" if device == "cpu" else "gpu")
    return name, device, known.arch if known.arch in ARCHITECTURES else "gpt"


def parse(argv):
    name, _, arch = _preset_name(argv)
    config_cls = ARCHITECTURES[arch].config_class
    p = cli.ArgumentParser(description=__doc__, epilog=describe_fields(name, exclude=NOT_FLAGS, model_cls=config_cls),
                           allow_abbrev=False)
    p.add_argument("--device", default="cpu", help="cpu (default), gpu, cuda or cuda:N")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe: 'cpu' (nanoGPT's CPU recipe) or 'gpu' (shakespeare_char); default follows --device")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None,
                   help="the model: 'gpt' (GPT-2's block; the default) or 'llama' (RMSNorm, rotary embeddings, "
                   "SwiGLU, grouped-query attention); the preset's sizes apply to either; with --resume: the run's")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default=None, help="char (default) or bpe, trained on the data")
    p.add_argument("--vocab-size", "--vocab_size", dest="vocab_size", type=cli.integer(min=1), default=None,
                   help="BPE vocabulary size, at least 256 (default 512)")
    p.add_argument("--tokenizer-file", default=None, metavar="FILE",
                   help="a tokenizer saved by examples/train_tokenizer.py (instead of --tokenizer)")
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: Tiny Shakespeare, downloaded once; "
                   "with --resume: the file the run was trained on)")
    p.add_argument("--switch-data", action="store_true",
                   help="with --resume: continue on a --data other than the one the run was trained on")
    p.add_argument("--out", default=None, help="output folder (default out/shakespeare-<tokenizer>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start a new run in an --out that holds one (deletes it)")
    p.add_argument("--sample-tokens", type=cli.integer(min=0), default=500,
                   help="length of the sample printed at the end (0: none)")
    p.add_argument("--prompt", default=None, help="prompt of that sample (default: a newline, or the "
                   "data's first character if the vocabulary has no newline)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes mpiexec started, e.g. mpiexec -n 2 "
                   "... --distributed: each trains on --batch_size rows of every batch (docs/distributed.md)")
    p.add_argument("--distributed-timeout", type=cli.number(min=0), default=None, metavar="SECONDS",
                   help=f"with --distributed: a process that waits this long for the others ends the job "
                   f"(default {distributed.DEFAULT_TIMEOUT:g}; 0: wait forever)")
    args, rest = p.parse_known_args(argv)
    try:
        args.device = backend.canonical_device(args.device)
        args.model_flags, args.train_flags = apply_overrides(rest, {}, {}, exclude=NOT_FLAGS, model_cls=config_cls)
    except ValueError as e:
        p.error(str(e))
    if args.resume and args.overwrite:
        p.error("--resume continues the run in --out and --overwrite deletes it: give one of them")
    if args.switch_data and not args.resume:
        p.error("--switch-data applies to --resume only")
    if args.distributed_timeout is not None and not args.distributed:
        p.error("--distributed-timeout applies to --distributed only")
    launched = distributed.launcher_env()
    if not args.distributed and launched is not None and (launched[1] or 1) > 1:
        p.error(f"this is one of the {launched[1]} processes an MPI launcher started: add --distributed to train "
                "one model with all of them (or run the script without mpiexec)")
    if args.tokenizer_file and (args.tokenizer or args.vocab_size):
        p.error("--tokenizer-file gives the tokenizer: leave out --tokenizer and --vocab-size")
    if args.vocab_size is not None:
        if args.tokenizer == "char":
            p.error("--vocab-size applies to --tokenizer bpe (a char vocabulary is the characters of the data)")
        if args.vocab_size < 256:
            p.error(f"--vocab-size {args.vocab_size} is too small: a byte-level BPE vocabulary holds the 256 "
                    "byte tokens, so it must be at least 256")
        args.tokenizer = args.tokenizer or "bpe"
    label = Path(args.tokenizer_file).stem if args.tokenizer_file else (args.tokenizer or "char")
    args.out = Path(args.out or f"out/shakespeare-{label}-{name}" + ("-llama" if args.arch == "llama" else ""))
    args.label = label
    return args, name


# ----------------------------------------------------------------------------- checks before any work

def _resume_settings(args, ckpt):
    """Model and train fields of the checkpoint, with the flags given now; errors for flags
    that would change what the run is."""
    saved = ckpt.config.to_dict()
    if args.arch is not None and args.arch != ckpt.model.arch:
        raise ValueError(f"--arch {args.arch} differs from the checkpoint's architecture ({ckpt.model.arch}); "
                         "a resumed run keeps its model (start a new run in another --out to change it)")
    for k, v in args.model_flags.items():
        if k not in saved:
            raise ValueError(f"--{k} is not a setting of the checkpoint's {type(ckpt.model).__name__} model")
        if saved[k] != v:
            raise ValueError(f"--{k} {v} differs from the checkpoint's {k}={saved[k]}; a resumed run keeps its "
                             "model (start a new run in another --out to change it)")
    tok, was = ckpt.tokenizer, ckpt.train_config.get("tokenizer")
    if tok is None:
        raise CheckpointError(f"{ckpt.path} holds no tokenizer.json, so the run cannot be resumed")
    if args.tokenizer and was and args.tokenizer != was:
        raise ValueError(f"--tokenizer {args.tokenizer} differs from the checkpoint's tokenizer ({was}, "
                         f"{tok.fingerprint()}); a resumed run keeps its tokenizer")
    if args.vocab_size is not None and args.vocab_size != tok.vocab_size:
        raise ValueError(f"--vocab-size {args.vocab_size} differs from the checkpoint's tokenizer "
                         f"({tok.vocab_size} tokens); a resumed run keeps its tokenizer")
    if args.tokenizer_file:
        other = load_tokenizer(args.tokenizer_file)
        if other.fingerprint() != tok.fingerprint():
            raise ValueError(f"--tokenizer-file {args.tokenizer_file} ({other.fingerprint()}) is not the "
                             f"checkpoint's tokenizer ({tok.fingerprint()}); a resumed run keeps its tokenizer")
    model_fields = {k: v for k, v in saved.items() if k != "vocab_size"}
    train_fields = {**{k: v for k, v in ckpt.train_config.items() if k in TrainConfig.__dataclass_fields__},
                    **args.train_flags}
    return model_fields, train_fields, tok


def _resume_data(args, ckpt) -> Path | None:
    """The data file to continue on: the checkpoint's, unless --data (--switch-data to change it)."""
    stored, sha = ckpt.train_config.get("data"), ckpt.train_config.get("data_sha256")
    if args.data is not None:
        if sha is not None and not args.switch_data:
            _, got = read_text(args.data)
            if got != sha:
                raise DataError(f"--data {args.data} is not the data this run was trained on, {stored} "
                                f"(sha256 {sha[:16]}..., this file {got[:16]}...); leave out --data to continue "
                                "on it, or add --switch-data to continue on the new file on purpose")
        return Path(args.data)
    if stored is None:
        return None                         # a checkpoint from before the data was recorded
    path = Path(stored)
    if not path.is_file():
        same = f" (sha256 {sha})" if sha else ""
        raise DataError(f"this run was trained on {stored}, which is no longer there; pass --data FILE with "
                        f"the same contents{same}, or add --switch-data to continue on another text")
    if sha is not None and not args.switch_data:
        _, got = read_text(path)
        if got != sha:
            raise DataError(f"{stored}, the data this run was trained on, has changed since (sha256 "
                            f"{got[:16]}..., was {sha[:16]}...); add --switch-data to continue on its new contents")
    return path


def _check_memory(cfg, tcfg: TrainConfig, device: str, copies: int = 1):
    """MemoryError unless ``copies`` trainings (the ranks on this machine's CPU) fit in memory."""
    need = training_memory(cfg, tcfg.batch_size, tcfg.dtype)
    free = hardware.available_memory(device)
    if free is not None and copies * need["total"] > free:
        gib = 2 ** 30
        each = f" for each of the {copies} processes on this machine" if copies > 1 else ""
        raise MemoryError(
            f"the model is too large for this machine: training it needs at least {need['total'] / gib:.1f} GiB"
            f"{each} ({need['n_params'] / 1e6:,.0f}M parameters with gradients and AdamW state: "
            f"{need['params'] / gib:.1f} GiB; activations of batch {tcfg.batch_size} x block {cfg.block_size}: "
            f"{need['activations'] / gib:.1f} GiB), and {device} has {free / gib:.1f} GiB free; "
            "shrink --n_layer, --n_embd, --batch_size or --block_size, or keep less for the backward pass: "
            "--recompute block, --attention flash, --dtype float16")


def _prompt(args, data) -> str:
    if args.prompt is not None:
        try:
            if not data.tokenizer.encode(args.prompt):
                raise ValueError("it encodes to no tokens: give at least one character")
        except ValueError as e:
            raise ValueError(f"--prompt {args.prompt!r} cannot be encoded with this run's tokenizer: {e}") from None
        return args.prompt
    try:
        if data.tokenizer.encode("\n"):
            return "\n"
    except (ValueError, KeyError):
        pass
    return data.tokenizer.decode([int(data.train[0])])


def prepare(args, preset_name, comm=distributed.SINGLE):
    """Everything before training, in order of cost; raises the errors main reports."""
    copies = comm.local_size if args.device == "cpu" else 1
    backend.xp_for(args.device)  # a clear error now if CuPy or the GPU is missing
    model_cls = ARCHITECTURES[args.arch or "gpt"]
    model_fields, train_fields = preset(preset_name)
    model_fields.update(args.model_flags)
    train_fields.update(args.train_flags)
    ckpt = tokenizer = None
    if args.resume:
        if not (args.out / "latest").exists() and not (args.out / ".latest.old").exists():
            raise CheckpointError(f"nothing to resume: {args.out} holds no latest/ checkpoint "
                                  "(leave out --resume to start a new run there)")
        ckpt = load_checkpoint(args.out / "latest", device=args.device)
        model_fields, train_fields, tokenizer = _resume_settings(args, ckpt)
    elif args.tokenizer_file:
        tokenizer = load_tokenizer(args.tokenizer_file)
    tcfg = TrainConfig(**train_fields)
    if not args.resume:   # the other fields now, and the memory with a vocabulary no larger than the real one
        least_vocab = tokenizer.vocab_size if tokenizer else (args.vocab_size or 256 if args.tokenizer == "bpe" else 1)
        _check_memory(model_cls.config_class(**{**model_fields, "vocab_size": least_vocab}), tcfg, args.device, copies)
    if args.resume:
        done = int(ckpt.trainer_state.get("iter", 0))
        history = ckpt.trainer_state.get("history") or [{}]
        if done >= tcfg.max_iters and history[-1].get("iter") == done:     # (its last evaluation ran too)
            return None, f"the run in {args.out} is finished: it reached iteration {done} of max_iters " \
                f"{tcfg.max_iters}. To train further, resume with a larger --max_iters, e.g.\n  " \
                + _command(args, comm, "--out", args.out, "--resume", "--max_iters", 2 * max(done, 1))
    elif not args.overwrite and comm.rank == 0:
        check_fresh(args.out)                 # a run is there: refuse now (--overwrite deletes it later)
    data_path = _resume_data(args, ckpt) if args.resume else args.data
    data = load_text_dataset(data_path, tokenizer or args.tokenizer or "char",
                             vocab_size=None if tokenizer else args.vocab_size,
                             block_size=model_fields["block_size"])
    cfg = ckpt.config if args.resume else model_cls.config_class(vocab_size=data.vocab_size, **model_fields)
    _check_memory(cfg, tcfg, args.device, copies)
    prompt = _prompt(args, data) if args.sample_tokens else None
    if not args.resume:
        backend.manual_seed(tcfg.seed)        # --seed covers the initial weights too (train() seeds again)
    model = ckpt.model if args.resume else model_cls(cfg).to(args.device)
    if args.resume:
        kind = ckpt.train_config.get("tokenizer") or data.tokenizer.kind
    else:
        kind = "file" if args.tokenizer_file else (args.tokenizer or "char")
    return (data, tcfg, model, prompt, kind), None


def _mpiexec() -> str:
    """The mpiexec to print in commands: the one beside this Python (the mpich wheel's), else
    the one on the PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


def _command(args, comm, *rest) -> str:
    """A command that runs this script again with ``rest`` on this device (and, for a
    data-parallel run, under mpiexec with as many processes)."""
    device = ["--device", "gpu" if comm.world_size > 1 else args.device] if args.device != "cpu" else []
    if comm.world_size == 1 and not args.distributed:
        return cli.command(SCRIPT, *rest, *device)
    return cli.command(SCRIPT, *rest, *device, "--distributed", launcher=(_mpiexec(), "-n", comm.world_size))


def _summary(args, summary, t0, comm):
    out = args.out
    best = summary["best_val_loss"]
    if best is None:
        best_text = ", no best checkpoint yet (none after iteration 0 was evaluated)"
    else:
        at = "" if summary["best_iter"] is None else f" at iteration {summary['best_iter']}"
        best_text = f", best val loss {best:.4f}{at} ({out / 'best'})"
    print(f"\ndone in {time.time() - t0:.0f} s: iteration {summary['iter']}{best_text}")
    print(f"checkpoint: {summary['latest']} (iteration {summary['iter']})")
    device = ["--device", "gpu"] if args.device != "cpu" else []
    print("sample from it:\n  " + cli.command(SCRIPT.with_name("sample.py"), "--ckpt", out, *device))
    if summary["interrupted"]:
        print("resume it:\n  " + _command(args, comm, "--out", out, "--resume"))
    else:
        print("train it further:\n  " + _command(args, comm, "--out", out, "--resume", "--max_iters",
                                                  2 * max(summary["iter"], 1)))


def _fail(comm, error) -> "NoReturn":  # noqa: F821
    """An error that every process met alike: the first reports it; all exit with code 2."""
    if comm.rank == 0:
        cli.error_line(error)
    raise distributed.together(SystemExit(cli.EXIT_ERROR))


PREPARE_ERRORS = (ValueError, DataError, DownloadError, CheckpointError, backend.DeviceError, MemoryError, OSError)


def run(args, preset_name, comm=distributed.SINGLE) -> int:
    ready = finished = None
    for first in (True, False):     # rank 0 first: it downloads and caches what the others then read
        error = None
        if (comm.rank == 0) == first:
            try:
                ready, finished = prepare(args, preset_name, comm)
            except PREPARE_ERRORS as e:
                error = e
        try:
            comm.raise_together(error, what="waiting for the data", watched=False)
        except PREPARE_ERRORS as e:
            _fail(comm, e)
    if finished:
        print(finished)
        return 0
    data, tcfg, model, prompt, kind = ready
    cfg = model.config
    print(f"data: {data.path} ({len(data.train):,} train / {len(data.val):,} val tokens, "
          f"{kind} tokenizer {data.tokenizer.fingerprint()}, vocab {data.vocab_size})")
    heads = f"{cfg.n_head} heads" + (f" ({cfg.n_kv_head} key/value)" if cfg.n_kv_head != cfg.n_head else "")
    print(f"model: {type(model).__name__}, {cfg.n_layer} layers, {heads}, {cfg.n_embd} wide, block {cfg.block_size}, "
          f"{model.num_params() / 1e6:.2f}M parameters, on {args.device} (preset {preset_name})")
    batch = f"batch {tcfg.batch_size}" if comm.world_size == 1 else \
        f"batch {tcfg.batch_size * comm.world_size} ({comm.world_size} processes x {tcfg.batch_size})"
    print(f"training: {tcfg.max_iters} iterations of {batch}, lr {tcfg.learning_rate:g} "
          f"(warmup {tcfg.warmup_iters}, cosine to {tcfg.min_lr:g} at {tcfg.lr_decay_iters}); writing to {args.out}")
    t0 = time.time()
    try:
        summary = train(model, data, tcfg, args.out, tokenizer=data.tokenizer, resume=args.resume,
                        overwrite=args.overwrite, comm=comm,
                        extra_config={"preset": preset_name, "tokenizer": kind,
                                      "data": str(Path(data.path).resolve()), "data_sha256": data.sha256})
    except KeyboardInterrupt:
        cli.error_line(f"stopped at once (second interrupt) without saving; the last checkpoint in {args.out} "
                       "is kept")
        return cli.EXIT_INTERRUPTED
    except (NonFiniteLossError, CheckpointError, RunDirError, MemoryError) as e:
        _fail(comm, e)
    if comm.rank == 0 and not summary["interrupted"] and prompt is not None:
        print("\n--- sample ---")
        print(prompt, end="")
        generate_text(model, data.tokenizer, prompt, max_new_tokens=args.sample_tokens,
                      temperature=0.8, top_k=200, seed=tcfg.seed, stream=lambda s: print(s, end="", flush=True))
        print("\n--------------")
    _summary(args, summary, t0, comm)
    return cli.EXIT_INTERRUPTED if summary["interrupted"] else 0


def start_distributed(args) -> distributed.Communicator:
    """The communicator of this process (--distributed), its device and its share of the
    cores. From here on only the first process prints (errors excepted)."""
    timeout = distributed.DEFAULT_TIMEOUT if args.distributed_timeout is None else args.distributed_timeout
    try:
        comm = distributed.init(args.device, timeout=timeout)
    except (distributed.DistributedError, backend.DeviceError) as e:
        cli.fail(e)
    args.device = comm.device if comm.backend == "nccl" else "cpu"
    threads = distributed.share_cpu(comm) if args.device == "cpu" else None
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
    each = f", {threads} thread{'s' * (threads > 1)} each" if threads else ""
    print(f"distributed: {comm.world_size} processes ({comm.backend.upper()}{each})")
    return comm


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    launched = distributed.launcher_env()
    quiet = launched is not None and launched[0] != 0
    # bad arguments and a failed start are the same in every process: only the first reports them
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull) if quiet else contextlib.nullcontext():
        args, preset_name = parse(argv)
        comm = start_distributed(args) if args.distributed else distributed.SINGLE
    # a diverging run overflows before its loss turns NaN: that is reported in one line, not NumPy's warnings
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    with distributed.guard(comm), contextlib.ExitStack() as held:
        try:                                  # before anything else: one run per folder (rank 0 holds it)
            distributed.on_rank0(comm, lambda: held.enter_context(lock_run_dir(args.out)),
                                 what="waiting for rank 0 to lock the run folder")
        except RunDirError as e:
            _fail(comm, e)
        return run(args, preset_name, comm)


if __name__ == "__main__":
    tune_allocator()  # glibc keeps freed activations for reuse (cpu preset: ~200 -> ~125 ms/step)
    cli.run(main)
