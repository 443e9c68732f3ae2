"""Sample text from a trained checkpoint (or a Hugging Face GPT-2 or Llama directory: --hf).

    .venv/bin/python examples/sample.py --ckpt out/shakespeare-char-cpu --prompt "ROMEO:"
    .venv/bin/python examples/sample.py --ckpt out/shakespeare-char-cpu/latest --temperature 0 --max-new-tokens 100
    .venv/bin/python examples/sample.py --ckpt out/numbers-sft --instruction "Reverse the digits." --input 907 --temperature 0

--ckpt is a checkpoint directory, or a training output directory (its 'best' checkpoint is
used, else 'latest'). Text is printed as it is generated; Ctrl-C stops it. --instruction (with
an optional --input) renders the prompt with the Alpaca template that fine-tuning uses
(examples/finetune_instructions.py) and stops at the end-of-text token.
"""
from __future__ import annotations

import sys

from tinygrad_llm import backend, cli
from tinygrad_llm.checkpoint import CheckpointError, load_for_sampling
from tinygrad_llm.finetune import END_OF_TEXT, format_prompt
from tinygrad_llm.generate import generate_text
from tinygrad_llm.kernels.parallel import set_blas_threads

#: Below this many parameters one BLAS thread samples faster than several: each token's
#: GEMMs are too small to share out (docs/benchmarks.md, "Sampling and BLAS threads").
SMALL_MODEL_PARAMS = 50_000_000


def parse(argv):
    p = cli.ArgumentParser(description=__doc__)
    cli.add_model_source(p, "checkpoint directory (or a training output directory)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--prompt", default=None, help="default: a newline, or the first token if the vocabulary has none")
    text.add_argument("--instruction", default=None, help="an instruction, in the fine-tuning prompt template")
    p.add_argument("--input", default="", help="the optional input section of --instruction's template")
    p.add_argument("--max-new-tokens", type=cli.integer(min=0), default=500)
    p.add_argument("--temperature", type=cli.number(min=0), default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=cli.integer(min=1), default=200)
    p.add_argument("--top-p", type=cli.number(min=0, max=1, min_open=True), default=None)
    p.add_argument("--repetition-penalty", type=cli.number(min=0, min_open=True), default=1.0, help="1 = off")
    p.add_argument("--seed", type=cli.integer(min=0), default=None)
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


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        args.device = backend.canonical_device(args.device)
        if args.input and args.instruction is None:
            raise ValueError("--input is the input section of --instruction's template: give --instruction too")
        model, tokenizer, _ = load_for_sampling(ckpt=args.ckpt, hf=args.hf, device=args.device)
        if args.instruction is not None:
            args.prompt = format_prompt(args.instruction, args.input)
            if args.stop is None and END_OF_TEXT in getattr(tokenizer, "special_tokens", {}):
                args.stop = END_OF_TEXT
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
            given = (f"--instruction {args.instruction!r}" + (f" with --input {args.input!r}" if args.input else "")
                     + " (in the fine-tuning template)") if args.instruction is not None else f"--prompt {args.prompt!r}"
            raise ValueError(f"{given} cannot be encoded with this model's tokenizer: {e}") from None
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
