"""Write a toy instruction set and preference set: small enough to fine-tune on a CPU in minutes,
regular enough that the result is easy to judge.

    .venv/bin/python examples/make_number_tasks.py --out data/numbers

writes data/numbers/instructions.json (for examples/finetune_instructions.py): for each of
--count 3-digit numbers two records, "Reverse the digits." (382 -> 283) and "Repeat the
number twice." (382 -> 382 382); and data/numbers/preferences.json (for examples/dpo.py):
for other numbers, "Reverse the digits." with the reversal chosen over the number as it
is. Both in the Alpaca layout (instruction, input, output / chosen, rejected); see
docs/finetune.md.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tinygrad_llm import cli
from tinygrad_llm.atomic import write_bytes_atomic

FILES = ("instructions.json", "preferences.json")
TASKS = {"Reverse the digits.": lambda n: n[::-1], "Repeat the number twice.": lambda n: f"{n} {n}"}


def parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="data/numbers", help="folder to write the two files to (default data/numbers)")
    p.add_argument("--count", type=cli.integer(min=1, max=800), default=400,
                   help="numbers in the instruction set (default 400: 800 records); the 200 preference pairs "
                        "use others")
    p.add_argument("--seed", type=cli.integer(), default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the files if they exist")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        cli.fail(f"--out {str(out)!r} is a file, not a folder")
    there = [f for f in FILES if (out / f).exists()]
    if there and not args.overwrite:
        cli.fail(f"{', '.join(str(out / f) for f in there)} already exist(s); pass --overwrite to replace them")
    numbers = [f"{i:03d}" for i in range(1000)]
    random.Random(args.seed).shuffle(numbers)
    sft = [{"instruction": t, "input": n, "output": f(n)} for n in numbers[:args.count] for t, f in TASKS.items()]
    dpo = [{"instruction": "Reverse the digits.", "input": n, "chosen": n[::-1], "rejected": n}
           for n in numbers[args.count:args.count + 200]]
    out.mkdir(parents=True, exist_ok=True)
    for name, records in zip(FILES, (sft, dpo)):
        write_bytes_atomic(out / name, (json.dumps(records, indent=1) + "\n").encode("utf-8"))
        print(f"wrote {out / name} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    cli.run(main)
