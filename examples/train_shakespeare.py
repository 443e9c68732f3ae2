"""Train a GPT on Tiny Shakespeare, then print a sample.

    python examples/train_shakespeare.py                      # CPU recipe (nanoGPT's)
    python examples/train_shakespeare.py --device gpu         # GPU recipe (shakespeare_char)
    python examples/train_shakespeare.py --max_iters 500 --n_layer 2 --out out/try
    python examples/train_shakespeare.py --resume             # continue out/... where it stopped

Any GPTConfig or TrainConfig field can be given as --field value. Ctrl-C saves a checkpoint;
--resume continues from it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tinygrad_llm import backend
from tinygrad_llm.checkpoint import CheckpointError, load_checkpoint
from tinygrad_llm.data import DataError, DownloadError, load_text_dataset
from tinygrad_llm.generate import generate_text
from tinygrad_llm.model import GPT, GPTConfig
from tinygrad_llm.kernels import tune_allocator
from tinygrad_llm.presets import PRESETS, apply_overrides, preset
from tinygrad_llm.train import TrainConfig, train


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Other flags: any GPTConfig / TrainConfig field, e.g. --n_layer 6 --learning_rate 3e-4")
    p.add_argument("--device", default="cpu", help="cpu (default), gpu, cuda or cuda:N")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe: 'cpu' (nanoGPT's CPU recipe) or 'gpu' (shakespeare_char); default follows --device")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 512)")
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: Tiny Shakespeare, downloaded once)")
    p.add_argument("--out", default=None, help="output directory (default out/shakespeare-<tokenizer>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/latest")
    p.add_argument("--sample-tokens", type=int, default=500, help="length of the sample printed at the end")
    p.add_argument("--prompt", default=None, help="prompt of that sample (default: a newline, or the "
                   "data's first character if the vocabulary has no newline)")
    args, rest = p.parse_known_args(argv)
    try:
        args.device = backend.canonical_device(args.device)
        name = args.preset or ("cpu" if args.device == "cpu" else "gpu")
        args.model_flags, args.train_flags = apply_overrides(rest, {}, {})   # what the user gave
    except ValueError as e:
        p.error(str(e))
    args.out = Path(args.out or f"out/shakespeare-{args.tokenizer}-{name}")
    return args, name


def main(argv=None) -> int:
    args, preset_name = parse(sys.argv[1:] if argv is None else argv)
    model_fields, train_fields = preset(preset_name)
    model_fields.update(args.model_flags)
    train_fields.update(args.train_flags)
    try:
        backend.xp_for(args.device)  # a clear error now if CuPy or the GPU is missing
        tokenizer = args.tokenizer
        if args.resume:  # the checkpoint's model and settings, with the flags given now on top
            ckpt = load_checkpoint(args.out / "latest", device=args.device)
            tokenizer = ckpt.tokenizer
            saved = ckpt.config.to_dict()
            for k, v in args.model_flags.items():
                if saved[k] != v:
                    raise ValueError(f"--{k} {v} differs from the checkpoint's {k}={saved[k]}; "
                                     "a resumed run keeps its model")
            model_fields = {k: v for k, v in saved.items() if k != "vocab_size"}
            train_fields = {**{k: v for k, v in ckpt.train_config.items() if k in TrainConfig.__dataclass_fields__},
                            **args.train_flags}
        data = load_text_dataset(args.data, tokenizer, vocab_size=args.vocab_size,
                                 block_size=model_fields["block_size"])
        tcfg = TrainConfig(**train_fields)
        backend.manual_seed(tcfg.seed)
        if args.resume:
            model = ckpt.model
        else:
            model = GPT(GPTConfig(vocab_size=data.vocab_size, **model_fields)).to(args.device)
    except (ValueError, DataError, DownloadError, CheckpointError, backend.DeviceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = model.config
    print(f"data: {data.path} ({len(data.train):,} train / {len(data.val):,} val tokens, "
          f"{args.tokenizer} tokenizer, vocab {data.vocab_size})")
    print(f"model: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {cfg.block_size}, "
          f"{model.num_params() / 1e6:.2f}M parameters, on {args.device} (preset {preset_name})")
    print(f"training: {tcfg.max_iters} iterations of batch {tcfg.batch_size}; writing to {args.out}")
    t0 = time.time()
    summary = train(model, data, tcfg, args.out, tokenizer=data.tokenizer, resume=args.resume,
                    extra_config={"preset": preset_name, "tokenizer": args.tokenizer,
                                  "data": str(data.path)})
    print(f"done in {time.time() - t0:.0f} s: iteration {summary['iter']}, "
          f"best val loss {summary['best_val_loss']:.4f}")
    if summary["interrupted"]:
        return 130
    prompt = args.prompt
    if prompt is None:
        prompt = "\n"
        try:
            data.tokenizer.encode(prompt)
        except (ValueError, KeyError):
            prompt = data.tokenizer.decode([int(data.train[0])])
    print("\n--- sample ---")
    print(prompt, end="")
    generate_text(model, data.tokenizer, prompt, max_new_tokens=args.sample_tokens,
                  temperature=0.8, top_k=200, seed=tcfg.seed, stream=lambda s: print(s, end="", flush=True))
    print("\n--------------")
    return 0


if __name__ == "__main__":
    tune_allocator()  # glibc keeps freed activations for reuse (cpu preset: ~200 -> ~125 ms/step)
    sys.exit(main())
