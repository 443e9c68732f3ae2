"""Train a byte-level BPE tokenizer on a text file and save it.

    .venv/bin/python examples/train_tokenizer.py --vocab-size 4096 --out tok.json        # Tiny Shakespeare
    .venv/bin/python examples/train_tokenizer.py --data input.txt --vocab-size 512 --out tok.json --pattern gpt2 --special "<|endoftext|>"
    .venv/bin/python examples/train_tokenizer.py --data input.txt --kind char --out chars.json

Prints the training time and the compression on the training text (bytes per token).
A BPE tokenizer is saved as a Hugging Face tokenizer.json (tokenizers.Tokenizer.from_file
loads it and encodes the same); load it with tinygrad_llm.tokenizer.load_tokenizer(path), or
train a GPT with it: examples/train_shakespeare.py --tokenizer-file tok.json.
"""
from __future__ import annotations

import time
from pathlib import Path

from tinygrad_llm import cli
from tinygrad_llm.data import DownloadError, shakespeare_path
from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer
from tinygrad_llm.tokenizer.patterns import resolve_pattern


def parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--data", help="UTF-8 text file to train on (default: Tiny Shakespeare, downloaded once)")
    p.add_argument("--vocab-size", type=cli.integer(min=1),
                   help="number of tokens, with the 256 bytes and the special tokens (bpe)")
    p.add_argument("--out", required=True, help="where to save the tokenizer (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="bpe (default) or char")
    p.add_argument("--pattern", default="gpt4", help="split pattern: gpt4 (default), gpt2, or a regex")
    p.add_argument("--special", action="append", default=[], metavar="TOKEN",
                   help="a special token (repeat for more); they get the last ids")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse(argv):
    p = parser()
    args = p.parse_args(argv)

    if args.kind == "bpe":
        if args.vocab_size is None:
            p.error("--vocab-size is required for --kind bpe")
        need = 256 + len(args.special)
        if args.vocab_size < need:
            p.error(f"--vocab-size {args.vocab_size} is too small: it must be at least {need} "
                    f"(256 byte tokens + {len(args.special)} special token(s))")
        try:
            resolve_pattern(args.pattern)
        except ValueError as e:
            p.error(f"--pattern: {e}")
    elif args.vocab_size is not None or args.special:
        p.error("--vocab-size and --special apply to --kind bpe only")

    out = Path(args.out)
    if not out.parent.is_dir():
        p.error(f"output folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        p.error(f"--out {str(out)!r} is a folder; give a file name such as {str(out / 'tokenizer.json')!r}")
    if out.exists() and not args.overwrite:
        p.error(f"{str(out)!r} already exists; pass --overwrite to replace it, or choose another --out")
    if args.data is None:
        try:
            args.data = str(shakespeare_path())
        except DownloadError as e:
            cli.fail(e)
    data = Path(args.data)
    if not data.is_file():
        p.error(f"data file {str(data)!r} does not exist" if not data.exists()
                else f"data path {str(data)!r} is not a file")
    try:
        args.text = data.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        p.error(f"data file {str(data)!r} is not UTF-8 text ({e})")
    if not args.text:
        p.error(f"data file {str(data)!r} is empty")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    text = args.text
    n_bytes = len(text.encode("utf-8"))
    print(f"data: {args.data} ({n_bytes:,} bytes)")

    t0 = time.perf_counter()
    try:
        if args.kind == "char":
            tok = CharTokenizer.from_text(text)
        else:
            tok = BPETokenizer.train(text, args.vocab_size, pattern=args.pattern, special_tokens=args.special,
                                     progress=None if args.quiet else True)
    except ValueError as e:
        cli.fail(e)
    train_s = time.perf_counter() - t0
    print(f"trained {args.kind} tokenizer: {tok.vocab_size} tokens in {train_s:.2f} s")

    tok.save(args.out)
    print(f"saved to {args.out} (fingerprint {tok.fingerprint()})")

    t0 = time.perf_counter()
    ids = tok.encode(text) if args.kind == "char" else tok.encode(text, allowed_special="all")
    enc_s = time.perf_counter() - t0
    print(f"encoded the data in {enc_s:.2f} s ({n_bytes / enc_s / 1e6:.2f} MB/s): {len(ids):,} tokens, "
          f"{n_bytes / max(len(ids), 1):.2f} bytes per token")
    return 0


if __name__ == "__main__":
    cli.run(main)
