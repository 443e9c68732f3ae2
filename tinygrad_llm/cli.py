"""What the example scripts share: bad input is one ``error: ...`` line on stderr and exit
code 2, before any long work starts; Ctrl-C ends with one line and exit code 130; commands
to run next are printed so that they can be pasted as they are.

    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--temperature", type=cli.number(min=0), default=0.8)
    p.add_argument("--num-samples", type=cli.integer(min=1), default=1)
    args = p.parse_args(argv)
    ...
    cli.fail(f"--prompt {args.prompt!r} ...")          # prints the line, exits 2

    if __name__ == "__main__":
        cli.run(main)                                  # sys.exit(main()), Ctrl-C included
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from . import tiers

__all__ = ["ArgumentParser", "fail", "error_line", "number", "integer", "run", "command", "add_model_source",
           "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_ERROR = 2            # bad input, or a failure the message explains
EXIT_INTERRUPTED = 130    # Ctrl-C (128 + SIGINT), as shells report it


def error_line(message) -> None:
    """Print ``error: message`` (one line) on stderr."""
    text = " ".join(str(message).split("\n"))
    print(f"error: {text}", file=sys.stderr, flush=True)


def fail(message) -> "NoReturn":  # noqa: F821
    """Print ``error: message`` on stderr and exit with code 2."""
    error_line(message)
    raise SystemExit(EXIT_ERROR)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a bad argument gives one line, ``error: ... (see
    --help)``, and exit code 2, instead of the usage block and the program name."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        fail(f"{message} (see --help)")


def _bound_text(lo, hi, lo_open, hi_open) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


HF_FOLDERS = ("a Hugging Face GPT-2 directory (config.json, model.safetensors, vocab.json, merges.txt) "
              "or Llama directory (config.json, model.safetensors, tokenizer.json)")


def add_model_source(p: argparse.ArgumentParser, ckpt_help: str, purpose: str = "") -> None:
    """The required choice between ``--ckpt DIR`` (one of our checkpoints) and ``--hf DIR`` (a
    Hugging Face folder) that the sampling, demo and fine-tuning scripts share; ``purpose``
    ends both helps (e.g. " to start from")."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help=ckpt_help + purpose)
    src.add_argument("--hf", help=HF_FOLDERS + purpose)


def number(min: float | None = None, max: float | None = None, *, min_open: bool = False,
           max_open: bool = False):
    """An argparse ``type`` for a finite float within the bounds (open or closed). NaN and
    infinities are refused."""
    want = " ".join(x for x in ("a finite number", _bound_text(min, max, min_open, max_open)) if x)

    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        bad = not math.isfinite(v) or (min is not None and (v <= min if min_open else v < min)) \
            or (max is not None and (v >= max if max_open else v > max))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return v
    convert.__name__ = "number"
    return convert


def integer(min: int | None = None, max: int | None = None):
    """An argparse ``type`` for a whole number within [min, max]."""
    want = " ".join(x for x in ("a whole number", _bound_text(min, max, False, False)) if x)

    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if (min is not None and v < min) or (max is not None and v > max):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return v
    convert.__name__ = "integer"
    return convert


def run(main, argv=None) -> "NoReturn":  # noqa: F821
    """``sys.exit(main(argv))``, with Ctrl-C (KeyboardInterrupt) ending in one line on stderr
    and exit code 130 instead of a traceback. A bad setting of the package's environment
    variables is one ``error:`` line and exit code 2 before ``main`` runs."""
    try:
        tiers.check_environment()
    except ValueError as e:
        fail(e)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:                      # e.g. `... | head`: nobody reads any more
        try:
            sys.stdout = open(os.devnull, "w")   # noqa: SIM115 - stop the exit-time flush from failing
        except OSError:
            pass
        code = 0
    sys.exit(code)


def command(script, *args, launcher=()) -> str:
    """A shell command that runs ``script`` with ``args`` under this Python, as one would type
    it from the current folder (paths inside it relative to it), quoted where needed.
    ``launcher``: a program and its arguments to put first (``("path/mpiexec", "-n", 2)``)."""
    def rel(p) -> str:
        p = os.path.abspath(p)
        try:
            r = os.path.relpath(p)
        except ValueError:                       # another drive (Windows)
            return p
        return p if r.startswith("..") else r

    def program(p) -> str:
        if os.sep not in str(p):                 # a name looked up on the PATH
            return str(p)
        p = rel(p)
        return p if os.sep in p else os.path.join(".", p)
    py = rel(sys.executable) if sys.executable else "python"
    if os.sep not in py:
        py = os.path.join(".", py)
    parts = [program(launcher[0]), *(str(a) for a in launcher[1:])] if launcher else []
    parts += [py, rel(Path(script))] + [str(a) for a in args]
    return " ".join(shlex.quote(p) for p in parts)
