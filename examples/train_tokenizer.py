"""Train a byte-level BPE tokenizer on a text file and save it.

    python examples/train_tokenizer.py --data ../shared/data/tinyshakespeare.txt --vocab-size 4096 --out out/shakespeare4096.tok
    python examples/train_tokenizer.py --data input.txt --vocab-size 512 --out tok.txt --pattern gpt2 --special "<|endoftext|>"
    python examples/train_tokenizer.py --data input.txt --kind char --out chars.txt

Prints the training time and the compression on the training text (bytes per
token). Load the result with tinygrad_llm.tokenizer.load_tokenizer(path).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="UTF-8 text file to train on")
    p.add_argument("--vocab-size", type=int, help="number of tokens, with the 256 bytes and the special tokens (bpe)")
    p.add_argument("--out", required=True, help="where to save the tokenizer")
    p.add_argument("--kind", choices=["bpe", "char"], default="bpe", help="bpe (default) or char")
    p.add_argument("--pattern", default="gpt4", help="split pattern: gpt4 (default), gpt2, or a regex")
    p.add_argument("--special", action="append", default=[], metavar="TOKEN",
                   help="a special token (repeat for more); they get the last ids")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    if args.kind == "bpe":
        if args.vocab_size is None:
            p.error("--vocab-size is required for --kind bpe")
        need = 256 + len(args.special)
        if args.vocab_size < need:
            p.error(f"--vocab-size {args.vocab_size} is too small: it must be at least {need} "
                    f"(256 byte tokens + {len(args.special)} special token(s))")
    elif args.vocab_size is not None or args.special:
        p.error("--vocab-size and --special apply to --kind bpe only")

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
    out = Path(args.out)
    if not out.parent.is_dir():
        p.error(f"output folder {str(out.parent)!r} does not exist")
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
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    sys.exit(main())
