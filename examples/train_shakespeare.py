"""Train a GPT (or a Llama) on Tiny Shakespeare (or your own text), then print a sample.

    .venv/bin/python examples/train_shakespeare.py                      # CPU recipe (nanoGPT's)
    .venv/bin/python examples/train_shakespeare.py --device gpu         # GPU recipe (shakespeare_char)
    .venv/bin/python examples/train_shakespeare.py --max_iters 500 --n_layer 2 --out out/try
    .venv/bin/python examples/train_shakespeare.py --out out/try --resume   # continue where it stopped
    .venv/bin/python examples/train_shakespeare.py --arch llama --n_kv_head 2   # Llama's block, same recipe

Every config field below can be given as --field VALUE. Ctrl-C (or SIGTERM) saves a
checkpoint and --resume continues from it; a second Ctrl-C stops at once. A folder that
already holds a run is never replaced unless --overwrite is given.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from tinygrad_llm import backend, cli, hardware
from tinygrad_llm.architectures import ARCHITECTURES
from tinygrad_llm.checkpoint import CheckpointError, load_checkpoint
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
    and architecture's fields."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--device", default="cpu")
    pre.add_argument("--preset", default=None)
    pre.add_argument("--arch", default=None)
    known, _ = pre.parse_known_args(argv)
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


def _check_memory(cfg, tcfg: TrainConfig, device: str):
    need = training_memory(cfg, tcfg.batch_size)
    free = hardware.available_memory(device)
    if free is not None and need["total"] > free:
        gib = 2 ** 30
        raise MemoryError(
            f"the model is too large for this machine: training it needs at least {need['total'] / gib:.1f} GiB "
            f"({need['n_params'] / 1e6:,.0f}M parameters with gradients and AdamW state: "
            f"{need['params'] / gib:.1f} GiB; activations of batch {tcfg.batch_size} x block {cfg.block_size}: "
            f"{need['activations'] / gib:.1f} GiB), and {device} has {free / gib:.1f} GiB free; "
            "shrink --n_layer, --n_embd, --batch_size or --block_size")


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


def prepare(args, preset_name):
    """Everything before training, in order of cost; raises the errors main reports."""
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
        _check_memory(model_cls.config_class(**{**model_fields, "vocab_size": least_vocab}), tcfg, args.device)
    if args.resume:
        done = int(ckpt.trainer_state.get("iter", 0))
        history = ckpt.trainer_state.get("history") or [{}]
        if done >= tcfg.max_iters and history[-1].get("iter") == done:     # (its last evaluation ran too)
            return None, f"the run in {args.out} is finished: it reached iteration {done} of max_iters " \
                f"{tcfg.max_iters}. To train further, resume with a larger --max_iters, e.g.\n  " \
                + cli.command(SCRIPT, "--out", args.out, "--resume", "--max_iters", 2 * max(done, 1),
                              *(["--device", args.device] if args.device != "cpu" else []))
    elif not args.overwrite:
        check_fresh(args.out)                 # a run is there: refuse now (--overwrite deletes it later)
    data_path = _resume_data(args, ckpt) if args.resume else args.data
    data = load_text_dataset(data_path, tokenizer or args.tokenizer or "char",
                             vocab_size=None if tokenizer else args.vocab_size,
                             block_size=model_fields["block_size"])
    cfg = ckpt.config if args.resume else model_cls.config_class(vocab_size=data.vocab_size, **model_fields)
    _check_memory(cfg, tcfg, args.device)
    prompt = _prompt(args, data) if args.sample_tokens else None
    model = ckpt.model if args.resume else model_cls(cfg).to(args.device)
    if args.resume:
        kind = ckpt.train_config.get("tokenizer") or data.tokenizer.kind
    else:
        kind = "file" if args.tokenizer_file else (args.tokenizer or "char")
    return (data, tcfg, model, prompt, kind), None


def _summary(args, summary, t0):
    out = args.out
    best = summary["best_val_loss"]
    if best is None:
        best_text = ", no best checkpoint yet (none after iteration 0 was evaluated)"
    else:
        at = "" if summary["best_iter"] is None else f" at iteration {summary['best_iter']}"
        best_text = f", best val loss {best:.4f}{at} ({out / 'best'})"
    print(f"\ndone in {time.time() - t0:.0f} s: iteration {summary['iter']}{best_text}")
    print(f"checkpoint: {summary['latest']} (iteration {summary['iter']})")
    device = ["--device", args.device] if args.device != "cpu" else []
    print("sample from it:\n  " + cli.command(SCRIPT.with_name("sample.py"), "--ckpt", out, *device))
    if summary["interrupted"]:
        print("resume it:\n  " + cli.command(SCRIPT, "--out", out, "--resume", *device))
    else:
        print("train it further:\n  " + cli.command(SCRIPT, "--out", out, "--resume", "--max_iters",
                                                    2 * max(summary["iter"], 1), *device))


def run(args, preset_name) -> int:
    try:
        ready, finished = prepare(args, preset_name)
    except (ValueError, DataError, DownloadError, CheckpointError, backend.DeviceError, MemoryError, OSError) as e:
        cli.fail(e)
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
    print(f"training: {tcfg.max_iters} iterations of batch {tcfg.batch_size}, lr {tcfg.learning_rate:g} "
          f"(warmup {tcfg.warmup_iters}, cosine to {tcfg.min_lr:g} at {tcfg.lr_decay_iters}); writing to {args.out}")
    t0 = time.time()
    try:
        summary = train(model, data, tcfg, args.out, tokenizer=data.tokenizer, resume=args.resume,
                        overwrite=args.overwrite,
                        extra_config={"preset": preset_name, "tokenizer": kind,
                                      "data": str(Path(data.path).resolve()), "data_sha256": data.sha256})
    except KeyboardInterrupt:
        cli.error_line(f"stopped at once (second interrupt) without saving; the last checkpoint in {args.out} "
                       "is kept")
        return cli.EXIT_INTERRUPTED
    except (NonFiniteLossError, CheckpointError, RunDirError, MemoryError) as e:
        cli.fail(e)
    if not summary["interrupted"] and prompt is not None:
        print("\n--- sample ---")
        print(prompt, end="")
        generate_text(model, data.tokenizer, prompt, max_new_tokens=args.sample_tokens,
                      temperature=0.8, top_k=200, seed=tcfg.seed, stream=lambda s: print(s, end="", flush=True))
        print("\n--------------")
    _summary(args, summary, t0)
    return cli.EXIT_INTERRUPTED if summary["interrupted"] else 0


def main(argv=None) -> int:
    args, preset_name = parse(sys.argv[1:] if argv is None else argv)
    # a diverging run overflows before its loss turns NaN: that is reported in one line, not NumPy's warnings
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    try:
        with lock_run_dir(args.out):          # before anything else: one run per folder
            return run(args, preset_name)
    except RunDirError as e:
        cli.fail(e)


if __name__ == "__main__":
    tune_allocator()  # glibc keeps freed activations for reuse (cpu preset: ~200 -> ~125 ms/step)
    cli.run(main)
