"""Time our BPE tokenizer beside tiktoken and Hugging Face tokenizers, in one run.

    python benchmarks/bench_tokenizer.py                       # Tiny Shakespeare, vocab 512 and 4096
    python benchmarks/bench_tokenizer.py --data input.txt --vocab-sizes 1024 --repeat 5
    python benchmarks/bench_tokenizer.py --profile             # cProfile of our training and encoding

Training: ours and Hugging Face's (if installed), each on the whole text.
Encoding one string (the whole text) with the largest vocabulary: ours with an
empty chunk cache ("cold") and again ("warm"), tiktoken built from our ranks
and pattern (its ids are checked to be ours), and Hugging Face with the
vocabulary it trained. Times are the best of --repeat runs (wall clock; ours
also in CPU seconds of this process, which a busy machine disturbs less).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import sys
import time
from pathlib import Path

from tinygrad_llm.tokenizer import BPETokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def best_of(fn, repeat):
    """(best wall seconds, best CPU seconds, last result) over repeat calls."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def hf_train(text, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return tok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="UTF-8 text file (default: Tiny Shakespeare)")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--pattern", default="gpt4", help="split pattern for ours (default gpt4)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    p.add_argument("--profile", action="store_true", help="print a cProfile of our training and encoding")
    args = p.parse_args(argv)

    path = Path(args.data)
    if not path.is_file():
        p.error(f"data file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    mb = len(text.encode("utf-8")) / 1e6

    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    try:
        import tokenizers
    except ImportError:
        tokenizers = None

    print(f"date {datetime.date.today()}  python {platform.python_version()}  {platform.machine()}  "
          f"cores {os.cpu_count()}  load avg {os.getloadavg()[0]:.2f}")
    print(f"data {path} ({mb:.2f} MB), pattern {args.pattern}, best of {args.repeat}")
    print(f"tiktoken {getattr(tiktoken, '__version__', 'not installed')}, "
          f"tokenizers {getattr(tokenizers, '__version__', 'not installed')} "
          f"(TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')})")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        tok = BPETokenizer.train(text, max(args.vocab_sizes), args.pattern)
        tok.encode_ordinary(text)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return 0

    print("\ntraining (seconds; cpu = CPU time of this process, all threads)")
    print(f"{'vocab':>6}  {'ours wall':>9}  {'ours cpu':>8}  {'HF wall':>7}  {'HF cpu':>6}  {'ours/HF wall':>12}")
    ours = {}
    for n in args.vocab_sizes:
        w, c, ours[n] = best_of(lambda: BPETokenizer.train(text, n, args.pattern), args.repeat)
        line = f"{n:>6}  {w:>9.2f}  {c:>8.2f}"
        if tokenizers is not None:
            hw, hc, _ = best_of(lambda: hf_train(text, n), args.repeat)
            line += f"  {hw:>7.2f}  {hc:>6.2f}  {w / hw:>11.1f}x"
        print(line)

    n = max(args.vocab_sizes)
    tok = ours[n]

    def cold():
        fresh = BPETokenizer(tok.mergeable_ranks, tok.pattern, tok.special_tokens)
        return fresh.encode_ordinary(text)

    print(f"\nencoding one string of {mb:.2f} MB, vocab {n}")
    print(f"{'who':<26}  {'wall s':>6}  {'MB/s':>6}  {'cpu MB/s':>8}  {'bytes/token':>11}  {'speed / ours cold':>17}")
    w, c, ids = best_of(cold, args.repeat)
    base = mb / w
    rows = [("ours, empty cache", w, c, ids)]
    tok.encode_ordinary(text)
    w, c, ids_warm = best_of(lambda: tok.encode_ordinary(text), args.repeat)
    assert ids_warm == ids
    rows.append(("ours, warm cache", w, c, ids))
    if tiktoken is not None:
        enc = tok.to_tiktoken()
        w, c, tids = best_of(lambda: enc.encode_ordinary(text), args.repeat)
        if tids != ids:
            print("ERROR: tiktoken's ids differ from ours", file=sys.stderr)
            return 1
        rows.append(("tiktoken, same ranks", w, c, tids))
    if tokenizers is not None:
        hf = hf_train(text, n)
        w, c, enc_out = best_of(lambda: hf.encode(text), args.repeat)
        rows.append(("HF tokenizers, own vocab", w, c, enc_out.ids))
    for name, w, c, got in rows:
        print(f"{name:<26}  {w:>6.3f}  {mb / w:>6.2f}  {mb / c:>8.2f}  {mb * 1e6 / len(got):>11.2f}  "
              f"{mb / w / base:>16.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
