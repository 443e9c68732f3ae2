"""Sample text from a trained checkpoint.

    .venv/bin/python examples/sample.py --ckpt out/shakespeare-char-cpu --prompt "ROMEO:"
    .venv/bin/python examples/sample.py --ckpt out/shakespeare-char-cpu/latest --temperature 0 --max-new-tokens 100

--ckpt is a checkpoint directory, or a training output directory (its 'best' checkpoint is
used, else 'latest'). Text is printed as it is generated; Ctrl-C stops it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tinygrad_llm import backend, cli
from tinygrad_llm.checkpoint import CheckpointError, load_checkpoint
from tinygrad_llm.generate import generate_text
from tinygrad_llm.parallel import set_blas_threads

#: Below this many parameters one BLAS thread samples faster than several: each token's
#: GEMMs are too small to share out (docs/benchmarks.md, "Sampling and BLAS threads").
SMALL_MODEL_PARAMS = 50_000_000


def parse(argv):
    p = cli.ArgumentParser(description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint directory (or a training output directory)")
    src.add_argument("--hf", help="a Hugging Face GPT-2 directory (config.json + model.safetensors)")
    p.add_argument("--prompt", default=None, help="default: a newline, or the first token if the vocabulary has none")
    p.add_argument("--max-new-tokens", type=cli.integer(min=0), default=500)
    p.add_argument("--temperature", type=cli.number(min=0), default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=cli.integer(min=1), default=200)
    p.add_argument("--top-p", type=cli.number(min=0, max=1, min_open=True), default=None)
    p.add_argument("--repetition-penalty", type=cli.number(min=0, min_open=True), default=1.0, help="1 = off")
    p.add_argument("--seed", type=cli.integer(), default=None)
    p.add_argument("--stop", default=None, help="stop when this string is generated")
    p.add_argument("--num-samples", type=cli.integer(min=1), default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    p.add_argument("--device", default="cpu")
    p.add_argument("--blas-threads", type=cli.integer(min=1), default=None,
                   help=f"CPU BLAS threads (default: 1 for models under {SMALL_MODEL_PARAMS // 10**6}M parameters, "
                   "where it is faster; else the BLAS's own default)")
    return p.parse_args(argv)


def blas_threads_for(n_params: int, given: int | None) -> int | None:
    """BLAS threads to sample with: ``given``, else 1 for a small model, else None (leave the
    BLAS's default)."""
    if given is not None:
        return given
    return 1 if n_params < SMALL_MODEL_PARAMS else None


def _config_json(folder: Path):
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_ours(meta) -> bool:
    return isinstance(meta, dict) and "format" in meta and "model" in meta


def _load(args):
    if args.hf:
        folder = Path(args.hf)
        if _is_ours(_config_json(folder)) or any(_is_ours(_config_json(folder / n)) for n in ("best", "latest")):
            raise CheckpointError(f"{folder} is a tinygrad_llm checkpoint, not a Hugging Face GPT-2 folder: "
                                  f"use --ckpt {folder}")
        from tinygrad_llm.hf import load_gpt2, load_gpt2_tokenizer  # noqa: PLC0415
        return load_gpt2(args.hf, device=args.device), load_gpt2_tokenizer(args.hf)
    path = Path(args.ckpt)
    meta = _config_json(path)
    if meta is not None and not _is_ours(meta) and ("n_embd" in meta or "model_type" in meta):
        raise CheckpointError(f"{path} is a Hugging Face GPT-2 folder, not a tinygrad_llm checkpoint: use --hf {path}")
    if not (path / "config.json").exists():
        for name in ("best", "latest"):
            if (path / name / "config.json").exists() or (path / f".{name}.old" / "config.json").exists():
                path = path / name
                break
    ckpt = load_checkpoint(path, device=args.device)
    if ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.path} holds no tokenizer.json, so text cannot be encoded")
    return ckpt.model, ckpt.tokenizer


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        args.device = backend.canonical_device(args.device)
        model, tokenizer = _load(args)
        threads = blas_threads_for(model.num_params(), args.blas_threads)
        if args.device == "cpu" and threads is not None:
            set_blas_threads(threads)
        if args.prompt is None:
            try:
                args.prompt = "\n" if tokenizer.encode("\n") else tokenizer.decode([0])
            except (ValueError, KeyError):
                args.prompt = tokenizer.decode([0])
        try:
            if not tokenizer.encode(args.prompt):
                raise ValueError("it encodes to no tokens: give at least one character")
        except ValueError as e:
            raise ValueError(f"--prompt {args.prompt!r} cannot be encoded with this model's tokenizer: {e}") from None
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            print(args.prompt, end="", flush=True)
            generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, seed=seed, stop=args.stop,
                          use_cache=not args.no_cache, stream=lambda s: print(s, end="", flush=True))
            print("\n---------------")
    except (ValueError, CheckpointError, backend.DeviceError, OSError) as e:
        cli.fail(e)
    return 0


if __name__ == "__main__":
    cli.run(main)
