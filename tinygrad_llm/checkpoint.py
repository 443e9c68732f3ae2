"""Training checkpoints: one directory each, written whole or not at all.

    out/latest/  (and out/best/)
        model.safetensors       the weights (a tied lm_head is stored once, as wte)
        config.json             {"format": 1, "model": GPTConfig, "train": training settings}
        optimizer.safetensors   the optimizer's arrays (moments, ...)
        trainer_state.json      iteration, best val loss, RNG state, the optimizer's scalars
        tokenizer.json          the tokenizer (when one is given)

A checkpoint is first written to a temporary directory beside the target, then swapped
in with renames, so an interruption never leaves a half-written checkpoint: at worst
the previous one survives under ``.<name>.old`` and :func:`load_checkpoint` finds it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import backend, safetensors
from .model import GPT, GPTConfig

__all__ = ["save_checkpoint", "load_checkpoint", "find_checkpoint", "CheckpointError", "Checkpoint"]

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match what it is loaded into."""


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__")


def _split_arrays(obj, arrays: dict, path: str = "s"):
    """Replace arrays in a nested dict/list by {"__array__": key}; collect them in ``arrays``."""
    from .tensor import Tensor  # noqa: PLC0415
    if isinstance(obj, Tensor):
        obj = obj.data
    if _is_array(obj):
        arrays[path] = backend.to_numpy(obj)
        return {"__array__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[_split_arrays(k, arrays, f"{path}.k{i}"), _split_arrays(v, arrays, f"{path}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split_arrays(v, arrays, f"{path}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def _join_arrays(obj, arrays: dict):
    if isinstance(obj, dict):
        if "__array__" in obj:
            key = obj["__array__"]
            if key not in arrays:
                raise CheckpointError(f"optimizer state refers to array {key!r}, which is missing")
            return np.array(arrays[key])
        if "__dict__" in obj:
            return {_join_arrays(k, arrays): _join_arrays(v, arrays) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_join_arrays(v, arrays) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def _write_json(path: Path, obj):
    """A plain write: it goes into the temporary checkpoint directory, swapped in whole later."""
    path.write_text(json.dumps(obj, indent=2))


def model_weights(model: GPT) -> dict:
    """The state dict as host arrays, with a tied lm_head left out (it is wte)."""
    sd = {k: backend.to_numpy(v.data) for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        sd.pop("lm_head.weight", None)
    return sd


def save_checkpoint(out_dir, name: str, model: GPT, optimizer=None, trainer_state: dict | None = None,
                    train_config: dict | None = None, tokenizer=None) -> Path:
    """Write ``out_dir/name/`` atomically and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        safetensors.save_file(model_weights(model), tmp / "model.safetensors", metadata={"format": "tinygrad_llm"})
        _write_json(tmp / "config.json", {"format": FORMAT, "model": model.config.to_dict(),
                                           "train": train_config or {}})
        state = dict(trainer_state or {})
        if optimizer is not None:
            arrays: dict = {}
            state["optimizer"] = _split_arrays(optimizer.state_dict(), arrays)
            safetensors.save_file(arrays, tmp / "optimizer.safetensors")
        _write_json(tmp / "trainer_state.json", state)
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        for f in tmp.iterdir():  # make the contents durable before the swap
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = out_dir / f".{name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class Checkpoint:
    """What :func:`load_checkpoint` returns: the model, and what is needed to resume."""

    def __init__(self, path, model, config, train_config, trainer_state, tokenizer):
        self.path, self.model, self.config = path, model, config
        self.train_config, self.trainer_state, self.tokenizer = train_config, trainer_state, tokenizer

    def load_optimizer(self, optimizer):
        """Restore the optimizer's state into ``optimizer`` (built for the same model)."""
        state = self.trainer_state.get("optimizer")
        if state is None:
            raise CheckpointError(f"{self.path} holds no optimizer state")
        f = self.path / "optimizer.safetensors"
        try:
            arrays = safetensors.load_file(f, mmap=False) if f.exists() else {}
        except ValueError as e:
            raise CheckpointError(f"optimizer state in {f} is corrupt: {e}") from None
        try:
            optimizer.load_state_dict(_join_arrays(state, arrays))
        except (ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"optimizer state in {self.path} does not match this optimizer: {e}") from None


def _resolve(path: Path) -> Path:
    if (path / "config.json").exists():
        return path
    old = path.parent / f".{path.name}.old"  # an interrupted swap left the previous one here
    if (old / "config.json").exists():
        return old
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected a directory with config.json "
                              "and model.safetensors, as written by save_checkpoint)")
    raise CheckpointError(f"{path} is not a checkpoint: config.json is missing")


def find_checkpoint(path) -> Path:
    """``path`` if it is a checkpoint directory, else a training output directory's ``best/``
    checkpoint, else its ``latest/`` (what sampling from "a run" means); else ``path``
    unchanged, so that :func:`load_checkpoint` names what is missing."""
    path = Path(path)
    if not (path / "config.json").exists():
        for name in ("best", "latest"):
            if (path / name / "config.json").exists():
                return path / name
    return path


def load_checkpoint(path, device: str = "cpu", model: GPT | None = None) -> Checkpoint:
    """Read a checkpoint directory. Builds the GPT from its config (or loads into ``model``,
    which must have the same config) and places it on ``device``."""
    path = _resolve(Path(path))
    try:
        meta = json.loads((path / "config.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
            raise CheckpointError(f"{path}/config.json: not a tinygrad_llm checkpoint config "
                                  f"(format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT})")
        config = GPTConfig.from_dict(meta["model"])
        trainer_state = json.loads((path / "trainer_state.json").read_text()) \
            if (path / "trainer_state.json").exists() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt JSON in checkpoint {path}: {e}") from None
    if model is None:
        model = GPT(config)
    elif model.config != config:
        raise CheckpointError(f"checkpoint {path} was saved for config {config.to_dict()}, "
                              f"not this model's {model.config.to_dict()}")
    try:
        weights = safetensors.load_file(path / "model.safetensors", mmap=False)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"weights in {path}/model.safetensors cannot be read: {e}") from None
    if config.tie_weights and "lm_head.weight" not in weights and "transformer.wte.weight" in weights:
        weights["lm_head.weight"] = weights["transformer.wte.weight"]
    try:
        model.load_state_dict(weights, strict=True)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"weights in {path} do not match the model: {e}") from None
    model.to(device)
    tokenizer = None
    if (path / "tokenizer.json").exists():
        from .tokenizer import load_tokenizer  # noqa: PLC0415
        tokenizer = load_tokenizer(path / "tokenizer.json")
    return Checkpoint(path, model, config, meta.get("train", {}), trainer_state, tokenizer)
