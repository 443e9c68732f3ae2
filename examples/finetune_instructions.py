"""Instruction fine-tuning (SFT): teach a GPT to follow instructions in the Alpaca format.

    .venv/bin/python examples/finetune_instructions.py --data instructions.json --hf path/to/gpt2 --out out/sft
    .venv/bin/python examples/finetune_instructions.py --data instructions.jsonl --ckpt out/try --lora-rank 8
    .venv/bin/python examples/sample.py --ckpt out/sft --instruction "Name three primary colors." --temperature 0

--data holds records {"instruction": ..., "input": ... (optional), "output": ...} as a JSON
list or JSON Lines. Each becomes the Alpaca prompt followed by the output and an
end-of-text token; the loss counts the output tokens only (--no-mask-prompt: the whole
text). The validation loss is printed after each epoch, and at the end the responses the
model generates (greedy) for a few held-out instructions. Writes out/best/ (lowest
validation loss), out/latest/ (after the last epoch) and, with --lora-rank, out/adapter/.
See docs/finetune.md.
"""
from __future__ import annotations

import argparse
import sys

from tinygrad_llm import cli
from tinygrad_llm.finetune import SFT_FIELDS, SFTConfig, scripts, train_sft
from tinygrad_llm.finetune.scripts import add_common_arguments, loop_settings, prepare, train_and_save


def parse(argv):
    p = cli.ArgumentParser(description=__doc__)
    add_common_arguments(p, lr_full=5e-5, lr_lora=2e-4, epochs=3, batch_size=8, out="out/finetune")
    p.add_argument("--mask-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="count only the response tokens in the loss (default); --no-mask-prompt: the whole text")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)

    def setup():
        run = prepare(args, SFT_FIELDS)
        cfg = SFTConfig(**loop_settings(run), mask_prompt=args.mask_prompt)
        return run, cfg

    def work(state):
        run, cfg = state
        print(f"training: {cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr:g}, "
              f"{'response tokens only' if cfg.mask_prompt else 'the whole text'} in the loss; writing to {args.out}")
        return train_and_save(
            run, "sft", cfg,
            lambda on_epoch: train_sft(run.model, run.train, run.val, cfg, run.eos_id, on_epoch=on_epoch),
            val_loss=lambda row: row["val_loss"], field="output")

    return scripts.main(args, setup, work)


if __name__ == "__main__":
    cli.run(main)
