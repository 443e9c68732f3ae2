"""Sample text from a trained checkpoint.

    python examples/sample.py --ckpt out/shakespeare-char-cpu --prompt "ROMEO:"
    python examples/sample.py --ckpt out/shakespeare-char-cpu/latest --temperature 0 --max-new-tokens 100
    python examples/sample.py --ckpt out/finetune --instruction "Name three primary colors." --temperature 0

--ckpt is a checkpoint directory, or a training output directory (its 'best' checkpoint is
used, else 'latest'). Text is printed as it is generated. --instruction (with an optional
--input) renders the prompt with the Alpaca template that fine-tuning uses
(examples/finetune_instructions.py) and stops at the end-of-text token.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinygrad_llm import backend
from tinygrad_llm.checkpoint import CheckpointError, load_checkpoint
from tinygrad_llm.finetune import END_OF_TEXT, format_prompt
from tinygrad_llm.generate import generate_text


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint directory (or a training output directory)")
    src.add_argument("--hf", help="a Hugging Face GPT-2 directory (config.json + model.safetensors)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--prompt", default="\n")
    text.add_argument("--instruction", default=None, help="an instruction, in the fine-tuning prompt template")
    p.add_argument("--input", default="", help="the optional input section of --instruction's template")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", default=None, help="stop when this string is generated")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _load(args):
    if args.hf:
        from tinygrad_llm.hf import load_gpt2, load_gpt2_tokenizer  # noqa: PLC0415
        return load_gpt2(args.hf, device=args.device), load_gpt2_tokenizer(args.hf)
    path = Path(args.ckpt)
    if not (path / "config.json").exists():
        for name in ("best", "latest"):
            if (path / name / "config.json").exists():
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
        if args.input and args.instruction is None:
            raise ValueError("--input is the input section of --instruction's template: give --instruction too")
        model, tokenizer = _load(args)
        if args.instruction is not None:
            args.prompt = format_prompt(args.instruction, args.input)
            if args.stop is None and END_OF_TEXT in getattr(tokenizer, "special_tokens", {}):
                args.stop = END_OF_TEXT
        for i in range(args.num_samples):
            seed = None if args.seed is None else args.seed + i
            print(args.prompt, end="", flush=True)
            generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          repetition_penalty=args.repetition_penalty, seed=seed, stop=args.stop,
                          use_cache=not args.no_cache, stream=lambda s: print(s, end="", flush=True))
            print("\n---------------")
    except (ValueError, CheckpointError, backend.DeviceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
