"""Preference tuning with DPO (direct preference optimization): no reward model, just pairs.

    .venv/bin/python examples/dpo.py --data prefs.jsonl --ckpt out/sft --beta 0.1 --out out/dpo
    .venv/bin/python examples/dpo.py --data prefs.json --hf path/to/gpt2 --lora-rank 8 --lr 1e-5

--data holds records {"instruction": ..., "input": ... (optional), "chosen": ...,
"rejected": ...} as a JSON list or JSON Lines. The policy starts as the given model; a
frozen copy of it is the reference. Per pair the loss is
-log sigmoid(beta * ((log p(chosen) - log p_ref(chosen)) - (log p(rejected) - log p_ref(rejected)))),
the log-probabilities summed over the response tokens (--logprob mean: averaged). Printed
per epoch: loss, the implicit rewards beta * (log p - log p_ref) of chosen and rejected
responses, their margin and the preference accuracy. Writes out/best/, out/latest/ and,
with --lora-rank, out/adapter/. See docs/finetune.md.
"""
from __future__ import annotations

import sys

from tinygrad_llm import cli
from tinygrad_llm.finetune import DPO_FIELDS, DPOConfig, scripts, train_dpo
from tinygrad_llm.finetune.scripts import add_common_arguments, loop_settings, prepare, train_and_save


def parse(argv):
    p = cli.ArgumentParser(description=__doc__)
    add_common_arguments(p, lr_full=1e-6, lr_lora=1e-5, epochs=1, batch_size=4, out="out/dpo")
    p.add_argument("--beta", type=cli.number(min=0, min_open=True), default=0.1,
                   help="how strongly the policy is held to the reference (default 0.1; > 0)")
    p.add_argument("--logprob", choices=["sum", "mean"], default="sum",
                   help="a response's log-probability: the sum over its tokens (DPO's, default) or the mean")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)

    def setup():
        run = prepare(args, DPO_FIELDS, reference=True)
        cfg = DPOConfig(**loop_settings(run), beta=args.beta, average_logprobs=args.logprob == "mean")
        return run, cfg

    def work(state):
        run, cfg = state
        how = "summed" if args.logprob == "sum" else "averaged"
        print(f"training: {cfg.epochs} epoch(s), batch {cfg.batch_size} pairs, lr {cfg.lr:g}, beta {cfg.beta:g}, "
              f"log-probabilities {how} over the response tokens; writing to {args.out}")
        return train_and_save(
            run, "dpo", cfg,
            lambda on_epoch: train_dpo(run.model, run.reference, run.train, run.val, cfg, run.eos_id, on_epoch=on_epoch),
            val_loss=lambda row: row["val"]["loss"] if row["val"] else None, field="chosen")

    return scripts.main(args, setup, work)


if __name__ == "__main__":
    cli.run(main)
