"""Ready-made recipes, and turning ``--field value`` flags into config overrides.

``cpu``: nanoGPT's CPU recipe for Tiny Shakespeare (a laptop learns it in minutes).
``gpu``: nanoGPT's shakespeare_char recipe (6 layers, 6 heads, 384 wide, block 256).
Both keep GPTConfig's bias=True (GPT-2's layout). nanoGPT's train.py defaults to no
biases; docs/benchmarks.md has the measured validation loss of both choices.
"""
from __future__ import annotations

import dataclasses
import typing

from .model import GPTConfig
from .train import TrainConfig

__all__ = ["PRESETS", "preset", "apply_overrides", "config_fields"]

_COMMON_TRAIN = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99,
                     weight_decay=0.1, grad_clip=1.0, eval_interval=250, log_interval=10)

PRESETS = {
    "cpu": {"model": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
            "train": dict(_COMMON_TRAIN, batch_size=12, max_iters=2000, lr_decay_iters=2000, eval_iters=20)},
    "gpu": {"model": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
            "train": dict(_COMMON_TRAIN, batch_size=64, max_iters=5000, lr_decay_iters=5000, eval_iters=200)},
}


def preset(name: str) -> tuple[dict, dict]:
    """(model fields, train fields) of a preset; ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])


def config_fields() -> dict:
    """Every overridable field name -> ("model" | "train", type)."""
    out = {}
    for kind, cls in (("model", GPTConfig), ("train", TrainConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (kind, hints[f.name])
    return out


def _convert(name: str, value: str, typ):
    if typ is bool:
        v = value.lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{name} expects true or false, got {value!r}")
    if typing.get_origin(typ) is typing.Union:  # Optional[float]
        if value.lower() == "none":
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    try:
        return typ(value)
    except ValueError:
        raise ValueError(f"--{name} expects a {typ.__name__}, got {value!r}") from None


def apply_overrides(args: list[str], model: dict, train: dict) -> tuple[dict, dict]:
    """Apply ``--field value`` / ``--field=value`` flags (dashes or underscores) to the two dicts."""
    fields = config_fields()
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r}; config overrides look like --n_layer 6")
        key, eq, value = a[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown option --{key}; config fields are: {', '.join(sorted(fields))}")
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"--{key} needs a value")
            i += 1
            value = args[i]
        kind, typ = fields[key]
        (model if kind == "model" else train)[key] = _convert(key, value, typ)
        i += 1
    return model, train
