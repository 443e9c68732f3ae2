"""What examples/finetune_instructions.py and examples/dpo.py share: their common flags, the
checks and loading done before any training (every bad input is found there; the scripts
answer it with one ``error:`` line and exit code 2, see ``tinygrad_llm.cli``), and the outputs.

    out/best/      the checkpoint of the epoch with the lowest validation loss (with validation data)
    out/latest/    the checkpoint after the last epoch (both load in examples/sample.py;
                   with LoRA the adapters are merged into their weights)
    out/adapter/   with LoRA: the final adapter alone (adapter_model.safetensors + adapter_config.json)

The output folder is a run folder (``tinygrad_llm.rundir``): locked while a run writes to
it, and one that holds a run is refused unless ``--overwrite`` (which deletes that run first).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .. import backend, cli
from ..backend import DeviceError
from ..checkpoint import CheckpointError, discard, load_for_sampling
from ..llama import Llama
from ..nn import lora
from ..rundir import RunDirError, RunExistsError, check_fresh, lock_run_dir, run_files
from .data import check_lengths, encode_records, load_records, split_records
from .models import frozen_copy, save_finetuned, with_end_of_text
from .sft import generate_responses

__all__ = ["add_common_arguments", "prepare", "main", "Run", "loop_settings", "train_and_save", "save_outputs",
           "show_responses", "base_train_config", "best_saver", "check_out_dir", "clear_out_dir", "ADAPTER_DIR"]

#: the folder inside --out that holds the final LoRA adapter
ADAPTER_DIR = "adapter"


def add_common_arguments(p: argparse.ArgumentParser, lr_full: float, lr_lora: float, epochs: int,
                         batch_size: int, out: str):
    cli.add_model_source(p, "our checkpoint directory (or a training output directory)", " to start from")
    p.add_argument("--data", required=True, help="JSON list or JSON Lines file of records")
    p.add_argument("--epochs", type=cli.integer(min=1), default=epochs,
                   help=f"passes over the training records (default {epochs})")
    p.add_argument("--lr", type=cli.number(min=0, min_open=True), default=None,
                   help=f"AdamW learning rate, constant (default {lr_full}, or {lr_lora} with --lora-rank)")
    p.add_argument("--batch-size", type=cli.integer(min=1), default=batch_size,
                   help=f"records per step (default {batch_size})")
    p.add_argument("--val-fraction", type=cli.number(min=0, max=1, max_open=True), default=0.1,
                   help="share of the records held out for validation and the samples shown at the end "
                        "(default 0.1; 0: none)")
    p.add_argument("--weight-decay", type=cli.number(min=0), default=0.0,
                   help="AdamW weight decay on matrices (default 0)")
    p.add_argument("--grad-clip", type=cli.number(min=0), default=1.0, help="gradient norm clip (default 1; 0: off)")
    p.add_argument("--seed", type=cli.integer(min=0), default=1337, help="seeds the split, the batch order and LoRA's init")
    p.add_argument("--out", default=out, help=f"output directory (default {out})")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run (deletes it)")
    p.add_argument("--device", default="cpu", help="cpu (default), gpu, cuda or cuda:N")
    p.add_argument("--log-interval", type=cli.integer(min=0), default=10, help="steps between progress lines (0: none)")
    p.add_argument("--show", type=cli.integer(min=0), default=3,
                   help="held-out records whose generated response is printed at the end (default 3)")
    p.add_argument("--max-new-tokens", type=cli.integer(min=1), default=64,
                   help="length limit of those responses (default 64)")
    g = p.add_argument_group("LoRA (train low-rank adapters instead of every weight)")
    g.add_argument("--lora-rank", type=cli.integer(min=1), default=None, help="adapter rank r; turns LoRA on")
    g.add_argument("--lora-alpha", type=cli.number(min=0, min_open=True), default=None,
                   help="scale alpha (the update is alpha/r B A; default 2 * rank)")
    g.add_argument("--lora-targets", default=None,
                   help=f"comma-separated Linear layer names (default: every projection of the blocks: "
                        f"{','.join(lora.DEFAULT_TARGETS)} for a GPT, {','.join(Llama.lora_targets)} for a Llama)")
    g.add_argument("--lora-dropout", type=cli.number(min=0, max=1, max_open=True), default=None,
                   help="dropout on the adapter's input (default 0)")
    p.set_defaults(lr_full=lr_full, lr_lora=lr_lora)


def _lora_config(args):
    """The LoRAConfig the flags ask for, or None; ValueError for LoRA flags without --lora-rank."""
    if args.lora_rank is None:
        given = [f for f, v in (("--lora-alpha", args.lora_alpha), ("--lora-targets", args.lora_targets),
                                ("--lora-dropout", args.lora_dropout)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} given without --lora-rank (which turns LoRA on)")
        return None
    targets = lora.DEFAULT_TARGETS if args.lora_targets is None else \
        tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if not targets:
        raise ValueError(f"--lora-targets names no layer: {args.lora_targets!r}")
    alpha = 2.0 * args.lora_rank if args.lora_alpha is None else args.lora_alpha
    return lora.LoRAConfig(args.lora_rank, alpha, args.lora_dropout or 0.0, targets)


def check_out_dir(out, overwrite: bool):
    """RunExistsError if ``out`` holds a run (checkpoints, history, an adapter), unless ``overwrite``."""
    out = Path(out)
    names = run_files(out) + ([ADAPTER_DIR] if (out / ADAPTER_DIR).exists() else [])
    if names and not overwrite:
        raise RunExistsError(f"{str(out)!r} already holds a run ({', '.join(names)}); nothing was changed. "
                             "Start over with --overwrite (deletes it), or choose another --out")


def clear_out_dir(out):
    """Delete the run in ``out`` (what --overwrite asked for), once every input has been checked."""
    check_fresh(out, overwrite=True)
    if (Path(out) / ADAPTER_DIR).exists():
        discard(Path(out) / ADAPTER_DIR)


def main(args, setup, work) -> int:
    """``work(setup())`` with ``args.out`` locked for this run (``rundir.lock_run_dir``). Bad input
    found by ``setup`` (ValueError, OSError, DeviceError), a busy or unusable output folder, and a
    checkpoint that cannot be written during ``work`` end in one ``error:`` line and exit code 2
    (``cli.fail``); Ctrl-C is ``cli.run``'s."""
    try:
        with lock_run_dir(args.out):
            try:
                state = setup()
            except (ValueError, OSError, DeviceError) as e:
                cli.fail(e)
            return work(state)
    except (CheckpointError, RunDirError, OSError) as e:
        cli.fail(e)


@dataclasses.dataclass
class Run:
    """Everything a script needs after :func:`prepare`."""

    args: argparse.Namespace
    model: object
    tokenizer: object
    eos_id: int
    train: list           # encoded examples
    val: list
    val_records: list
    lora: object          # LoRAConfig or None
    lora_layers: list
    reference: object = None
    lr: float = 0.0
    written: set = dataclasses.field(default_factory=set)   # output names written so far


def prepare(args, fields, log=print, reference: bool = False) -> Run:
    """Check the flags, the output directory, the data, the model and tokenizer, and every
    record's length; then (DPO) copy the frozen reference, apply LoRA, and (--overwrite)
    delete the earlier run in --out. Raises ValueError, OSError or DeviceError on bad input."""
    lcfg = _lora_config(args)
    args.device = backend.canonical_device(args.device)
    backend.xp_for(args.device)                     # a clear error now if CuPy or the GPU is missing
    check_out_dir(args.out, args.overwrite)
    records = load_records(args.data, fields)
    train_idx, val_idx = split_records(len(records), args.val_fraction, args.seed)
    model, tokenizer, _ = load_for_sampling(ckpt=args.ckpt, hf=args.hf, device=args.device)
    model, tokenizer, eos = with_end_of_text(model, tokenizer)
    examples = encode_records(records, tokenizer, eos, fields)
    check_lengths(examples, model.config.block_size, fields)
    backend.manual_seed(args.seed)
    ref = frozen_copy(model) if reference else None
    names = []
    if lcfg is not None:
        if args.lora_targets is None:                  # the model's own default layers
            lcfg = dataclasses.replace(lcfg, target_modules=type(model).lora_targets)
        names = lora.apply_lora(model, lcfg.target_modules, lcfg.r, lcfg.lora_alpha, lcfg.lora_dropout)
    lr = args.lr if args.lr is not None else (args.lr_lora if lcfg is not None else args.lr_full)
    if args.overwrite:
        clear_out_dir(args.out)
    run = Run(args, model, tokenizer, eos, [examples[i] for i in train_idx], [examples[i] for i in val_idx],
              [records[i] for i in val_idx], lcfg, names, ref, lr)
    cfg = model.config
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    log(f"data: {args.data}: {len(run.train)} training and {len(run.val)} validation records")
    log(f"model: {args.ckpt or args.hf}: {cfg.n_layer} layers, {cfg.n_embd} wide, context {cfg.block_size}, "
        f"vocabulary {cfg.vocab_size}, {model.num_params() / 1e6:.2f}M parameters, {trainable:,} trained"
        + (f" (LoRA r={lcfg.r}, alpha={lcfg.lora_alpha:g} on {len(names)} layers)" if lcfg else ""))
    return run


def loop_settings(run: Run) -> dict:
    """The FinetuneConfig fields the flags set (for SFTConfig / DPOConfig)."""
    a = run.args
    return dict(epochs=a.epochs, lr=run.lr, batch_size=a.batch_size, weight_decay=a.weight_decay,
                grad_clip=a.grad_clip, seed=a.seed, log_interval=a.log_interval)


def save_outputs(run: Run, name: str, train_config: dict, trainer_state: dict, final: bool = False) -> list:
    """Write checkpoint ``out/name`` (and, when ``final`` with LoRA, ``out/adapter``); returns
    what the run has written so far."""
    out = Path(run.args.out)
    save_finetuned(out, name, run.model, run.tokenizer, train_config, trainer_state)
    run.written.add(name)
    if final and run.lora is not None:
        lora.save_lora(run.model, out / ADAPTER_DIR, base_model=run.args.ckpt or run.args.hf)
        run.written.add(ADAPTER_DIR)
    return sorted(run.written)


def best_saver(run: Run, train_config: dict, val_loss):
    """An ``on_epoch(history)`` for the training loops: saves ``out/best`` whenever the epoch's
    validation loss (``val_loss(row)``, None without validation data) is the lowest so far."""
    def on_epoch(history):
        losses = [val_loss(r) for r in history]
        if losses[-1] is not None and losses[-1] == min(losses):
            save_outputs(run, "best", train_config, {"epoch": history[-1]["epoch"], "history": history})
    return on_epoch


def base_train_config(run: Run, kind: str, cfg) -> dict:
    """What the checkpoint's config.json records under "train"."""
    a = run.args
    return {"finetune": kind, "data": str(Path(a.data).resolve()), "base": a.ckpt or a.hf,
            "base_format": "tinygrad_llm" if a.ckpt else ("llama" if run.model.arch == "llama" else "gpt2"),
            "val_fraction": a.val_fraction,
            "lora": None if run.lora is None else run.lora.to_json(), **dataclasses.asdict(cfg)}


def show_responses(run: Run, field: str, log=print):
    """Print the generated responses to the first ``--show`` held-out records."""
    recs = run.val_records[:run.args.show]
    if not recs:
        return
    responses = generate_responses(run.model, run.tokenizer, recs, run.eos_id, run.args.max_new_tokens)
    log("\n--- held-out instructions ---")
    for rec, resp in zip(recs, responses):
        log(f"### Instruction: {rec['instruction']}" + (f"\n### Input: {rec['input']}" if rec["input"] else ""))
        log(f"expected ({field}): {rec[field]}\ngenerated: {resp}\n")


def train_and_save(run: Run, kind: str, cfg, train, val_loss, field: str, log=print) -> int:
    """Run ``train(on_epoch)`` (a training loop given the callback that saves ``best/``), then
    save ``latest/`` (and ``adapter/``) and show a few held-out responses. ``kind`` ("sft",
    "dpo") and ``cfg`` go into the checkpoint's config; ``val_loss(row)`` picks an epoch's
    validation loss; ``field`` is the record field shown as the expected response."""
    train_config = base_train_config(run, kind, cfg)
    history = train(best_saver(run, train_config, val_loss))
    written = save_outputs(run, "latest", train_config, {"epoch": cfg.epochs, "history": history}, final=True)
    log(f"wrote {', '.join(f'{run.args.out}/{n}/' for n in written)}")
    show_responses(run, field, log)
    return 0
