"""Ready-made recipes, and turning ``--field value`` flags into config overrides.

``cpu``: nanoGPT's CPU recipe for Tiny Shakespeare (a laptop learns it in minutes).
``gpu``: nanoGPT's shakespeare_char recipe (6 layers, 6 heads, 384 wide, block 256).
Both keep GPTConfig's bias=True (GPT-2's layout). nanoGPT's train.py defaults to no
biases; docs/benchmarks.md has the measured validation loss of both choices.

A preset's model fields (layers, heads, width, context, dropout) apply to either
architecture: ``model_cls`` (GPTConfig, the default, or LlamaConfig) says which config's
fields the flags may set.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing

from .model import GPTConfig
from .train import TrainConfig

__all__ = ["PRESETS", "preset", "apply_overrides", "config_fields", "describe_fields", "FIELD_HELP"]

# warmup_iters and lr_decay_iters are left to TrainConfig: 100 and max_iters, as nanoGPT's
# recipes set them, and they follow --max_iters when it is changed
_COMMON_TRAIN = dict(learning_rate=1e-3, min_lr=1e-4, beta1=0.9, beta2=0.99,
                     weight_decay=0.1, grad_clip=1.0, eval_interval=250, log_interval=10)

PRESETS = {
    "cpu": {"model": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
            "train": dict(_COMMON_TRAIN, batch_size=12, max_iters=2000, eval_iters=20)},
    "gpu": {"model": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
            "train": dict(_COMMON_TRAIN, batch_size=64, max_iters=5000, eval_iters=200)},
}

#: One line per config field, for --help.
FIELD_HELP = {
    "vocab_size": "number of tokens (set by the tokenizer)",
    "block_size": "context length in tokens",
    "n_layer": "transformer blocks",
    "n_head": "attention heads per block",
    "n_embd": "width of the residual stream (a multiple of n_head)",
    "dropout": "dropout probability in [0, 1) (Llama: on the attention weights only)",
    "bias": "biases in the linear layers (and GPT's LayerNorm)",
    "n_kv_head": "key/value heads, dividing n_head (grouped-query attention); none: n_head",
    "intermediate_size": "width of the SwiGLU MLP; none: 8/3 n_embd, rounded up to a multiple of 32",
    "rms_norm_eps": "epsilon of the RMSNorms",
    "rope_theta": "base of the rotary embedding's frequencies",
    "rope_scaling": "none, or Llama 3's as JSON: {\"rope_type\": \"llama3\", \"factor\": 8, ...}",
    "norm": "layernorm or rmsnorm",
    "prenorm": "norm before attention/MLP (GPT-2); false: after (Post-LN)",
    "activation": "gelu (GPT-2's tanh approximation) or relu",
    "pos": "learned or sinusoidal position embedding",
    "tie_weights": "lm_head shares the token embedding's weights",
    "attention": "standard, or flash (tiled: no T x T matrix kept, memory grows as T)",
    "recompute": "activation checkpointing: none, mlp (each MLP) or block (each block)",
    "batch_size": "sequences per forward/backward pass",
    "max_iters": "optimizer steps in the whole run",
    "learning_rate": "peak learning rate (after warmup)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "linear warmup steps; none: 100, at most a tenth of the run",
    "lr_decay_iters": "step where the cosine reaches min_lr; none: max_iters",
    "decay_lr": "false: constant learning_rate (no warmup, no decay)",
    "weight_decay": "AdamW weight decay (matrices and embeddings only)",
    "beta1": "AdamW beta1, in [0, 1)",
    "beta2": "AdamW beta2, in [0, 1)",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "grad_accum_steps": "batches per step (gradient accumulation)",
    "eval_interval": "evaluate and save every this many steps",
    "eval_iters": "batches per split in each evaluation",
    "log_interval": "print a progress line every this many steps",
    "always_save_checkpoint": "save latest/ at every evaluation (false: best/ only)",
    "seed": "random seed (weights, batches, dropout)",
    "peak_flops": "peak FLOP/s of the device, for MFU; none: from the machine when known",
    "dtype": "float32, or float16 (mixed precision: float16 activations, float32 weights, loss scaling)",
    "tf32": "GPU only: float32 matrix products on TF32 tensor cores (MFU then against their peak)",
}


def preset(name: str) -> tuple[dict, dict]:
    """(model fields, train fields) of a preset; ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])


def config_fields(model_cls=GPTConfig) -> dict:
    """Every overridable field name -> ("model" | "train", type), for a model config class."""
    out = {}
    for kind, cls in (("model", model_cls), ("train", TrainConfig)):
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
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # float | None, Optional[int]
        if value.lower() == "none":
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if typ is dict:
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise ValueError(f"--{name} expects a JSON object or none, got {value!r}")
        return obj
    try:
        return typ(value)
    except ValueError:
        raise ValueError(f"--{name} expects {'an' if typ.__name__[0] in 'aeiou' else 'a'} {typ.__name__}, "
                         f"got {value!r}") from None


def apply_overrides(args: list[str], model: dict, train: dict, exclude=(), model_cls=GPTConfig) -> tuple[dict, dict]:
    """Apply ``--field value`` / ``--field=value`` flags (dashes or underscores) to the two dicts.
    Fields named in ``exclude`` are not accepted; model fields are ``model_cls``'s."""
    fields = {k: v for k, v in config_fields(model_cls).items() if k not in exclude}
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


def _type_name(typ) -> str:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return "|".join("none" if t is type(None) else t.__name__ for t in typing.get_args(typ))
    return typ.__name__


def describe_fields(preset_name: str, exclude=(), model_cls=GPTConfig) -> str:
    """Every config field as a --help table, grouped (model, training): its type, its value
    under the preset, the dataclass default, and what it means."""
    model_fields, train_fields = preset(preset_name)
    resolved = {**model_cls(**{"vocab_size": 65, **model_fields}).to_dict(),
                **dataclasses.asdict(TrainConfig(**train_fields))}
    given = {**model_fields, **train_fields}
    fields = config_fields(model_cls)
    lines = []
    for kind, cls, title in (("model", model_cls, "model"), ("train", TrainConfig, "training")):
        lines.append(f"{title} ({cls.__name__}): --field VALUE, or --field=VALUE")
        lines.append(f"  {'flag':<26} {'type':<10} {'preset ' + preset_name:<12} {'default':<10} meaning")
        for f in dataclasses.fields(cls):
            if f.name in exclude:
                continue
            value = resolved[f.name]
            shown = f"{value}" if f.name in given or value == f.default else f"{value} (auto)"
            lines.append(f"  --{f.name:<24} {_type_name(fields[f.name][1]):<10} {shown:<12} "
                         f"{str(f.default):<10} {FIELD_HELP.get(f.name, '')}")
        lines.append("")
    return "\n".join(lines)
