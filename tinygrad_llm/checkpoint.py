"""Training checkpoints: one directory each, written whole or not at all.

    out/latest/  (and out/best/)
        model.safetensors       the weights (a tied lm_head is stored once, as the token embedding)
        config.json             {"format": 1, "arch": "gpt" | "llama", "model": GPTConfig or LlamaConfig,
                                 "train": training settings,
                                 "tokenizer": {"fingerprint", "vocab_size"},
                                 "files": {name: {"bytes", "sha256"}} of every other file}
        optimizer.safetensors   the optimizer's arrays (moments, ...)
        trainer_state.json      iteration, best val loss, RNG state, the optimizer's scalars
        tokenizer.json          the tokenizer (when one is given)

Every file is checked against its size and sha256 when it is read, so a damaged or
truncated file is reported, never used; the tokenizer is checked by what it encodes: it
must have the fingerprint the model was trained with. Weights holding NaN or inf are never written.

A checkpoint is first written to a temporary directory beside the target, then swapped in
with renames, and no sequence of crashes leaves neither the previous nor the new one:

    1. write everything into ``.<name>.tmp-XXXX/`` (fsynced)
    2. settle what an interrupted swap left: if ``<name>/`` is missing, rename
       ``.<name>.old/`` back to it; else discard ``.<name>.old/``
    3. rename ``<name>/`` -> ``.<name>.old/``
    4. rename ``.<name>.tmp-XXXX/`` -> ``<name>/``
    5. discard ``.<name>.old/``

Discarding renames a directory to ``.trash-...`` first and only then deletes it, so a
half-deleted directory never has a name that is read. Between 3 and 4 :func:`load_checkpoint`
finds the previous checkpoint under ``.<name>.old``; :func:`clean_stale` (run by the
training loop at start, while it holds the folder's lock) removes temporary and trash
directories that killed runs left and settles interrupted swaps.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from . import backend, safetensors
from .atomic import default_mode, fsync_dir
from .architectures import model_class
from .hf import load_gpt2, load_gpt2_tokenizer
from .hf_llama import load_llama, load_llama_tokenizer, looks_like_llama
from .model import CausalLM
from .tensor import Tensor
from .tokenizer import load_tokenizer

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "NonFiniteWeightsError", "Checkpoint",
           "clean_stale", "discard", "CHECKPOINT_NAMES", "find_checkpoint", "load_for_sampling", "saved_arch"]

FORMAT = 1


CHECKPOINT_NAMES = ("latest", "best")

#: For tests: called with the name of each step of the swap ("restore old", "discard old",
#: "target -> old", "tmp -> target", "discard replaced", "delete trash") just before it;
#: raising there simulates a crash at that point.
fault_hook = None


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match what it is loaded into."""


class NonFiniteWeightsError(CheckpointError):
    """The weights hold NaN or inf, so they were not written."""


def _step(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__")


def _split_arrays(obj, arrays: dict, path: str = "s"):
    """Replace arrays in a nested dict/list by {"__array__": key}; collect them in ``arrays``."""
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
    """A plain write: it goes into the temporary checkpoint directory, swapped in whole later.
    Strict JSON: NaN and infinities are an error (store None instead)."""
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except ValueError as e:
        raise CheckpointError(f"cannot write {path.name}: {e} (store None instead)") from None
    path.write_text(text)


def _file_record(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def model_weights(model: CausalLM) -> dict:
    """The state dict as host arrays, with a tied lm_head left out (it is the token embedding)."""
    sd = {k: backend.to_numpy(v.data) for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        sd.pop("lm_head.weight", None)
    return sd


def _check_finite(weights: dict, target: Path) -> None:
    for k, a in weights.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise NonFiniteWeightsError(
                f"not saving {target}: the weights hold NaN or inf (first in {k}); "
                f"{_kept(target)}")


def _kept(target: Path) -> str:
    return (f"the previous checkpoint {target} is kept" if (target / "config.json").exists()
            or (target.parent / f".{target.name}.old" / "config.json").exists() else "nothing was saved")


def discard(path: Path) -> None:
    """Delete a directory so that it never exists half-deleted under its own name: rename it
    to ``.trash-...`` in the same folder, then delete that."""
    trash = path.parent / f".trash-{path.name.lstrip('.')}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    _step("delete trash")
    shutil.rmtree(trash, ignore_errors=True)


def _settle(out_dir: Path, name: str) -> None:
    """Finish what an interrupted swap of ``out_dir/name`` left (step 2 of the swap)."""
    target, old = out_dir / name, out_dir / f".{name}.old"
    if not old.exists():
        return
    if not target.exists() and (old / "config.json").exists():
        _step("restore old")
        os.replace(old, target)
    else:
        _step("discard old")
        discard(old)


def _is_stale(name: str) -> bool:
    return name.startswith(".") and (".tmp-" in name or name.endswith(".tmp") or name.startswith(".trash-"))


def clean_stale(out_dir) -> list:
    """Remove what killed runs left in ``out_dir`` (temporary and trash directories, temporary
    files of atomic writes) and settle interrupted checkpoint swaps. Only call it while no
    other process writes there (the training loop holds the folder's lock). Returns the
    names removed."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.is_dir():
        return removed
    for p in sorted(out_dir.iterdir()):
        if _is_stale(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    for p in sorted(out_dir.iterdir()):
        if p.name.startswith(".") and p.name.endswith(".old") and p.is_dir():
            _settle(out_dir, p.name[1:-len(".old")])
    return removed


def _io_error(e: OSError, what: Path, target: Path) -> CheckpointError:
    reason = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    return CheckpointError(f"cannot write {what}: {reason}; {_kept(target)}")


def save_checkpoint(out_dir, name: str, model: CausalLM, optimizer=None, trainer_state: dict | None = None,
                    train_config: dict | None = None, tokenizer=None) -> Path:
    """Write ``out_dir/name/`` atomically and return its path.

    Raises NonFiniteWeightsError (weights with NaN/inf) or CheckpointError (a file cannot be
    written, e.g. a full disk), and then the previous checkpoint is left as it was."""
    out_dir = Path(out_dir)
    target = out_dir / name
    weights = model_weights(model)
    _check_finite(weights, target)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    except OSError as e:
        raise _io_error(e, out_dir, target) from None
    current = target
    try:
        os.chmod(tmp, default_mode(directory=True))       # as a directory made by mkdir
        current = target / "model.safetensors"
        safetensors.save_file(weights, tmp / "model.safetensors", metadata={"format": "tinygrad_llm"})
        state = dict(trainer_state or {})
        if optimizer is not None:
            arrays: dict = {}
            state["optimizer"] = _split_arrays(optimizer.state_dict(), arrays)
            current = target / "optimizer.safetensors"
            safetensors.save_file(arrays, tmp / "optimizer.safetensors")
        current = target / "trainer_state.json"
        _write_json(tmp / "trainer_state.json", state)
        meta = {"format": FORMAT, "arch": model.arch, "model": model.config.to_dict(), "train": train_config or {}}
        if tokenizer is not None:
            current = target / "tokenizer.json"
            tokenizer.save(tmp / "tokenizer.json")
            meta["tokenizer"] = {"fingerprint": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size}
        meta["files"] = {f.name: _file_record(f) for f in sorted(tmp.iterdir())}
        current = target / "config.json"
        _write_json(tmp / "config.json", meta)
        for f in tmp.iterdir():  # make the contents durable before the swap
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        current = target
        _settle(out_dir, name)
        old = out_dir / f".{name}.old"
        if target.exists():
            _step("target -> old")
            os.replace(target, old)
        _step("tmp -> target")
        os.replace(tmp, target)
        fsync_dir(out_dir)
        if old.exists():
            _step("discard replaced")
            discard(old)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _io_error(e, current, target) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class Checkpoint:
    """What :func:`load_checkpoint` returns: the model, and what is needed to resume."""

    def __init__(self, path, model, config, train_config, trainer_state, tokenizer, meta=None):
        self.path, self.model, self.config = path, model, config
        self.train_config, self.trainer_state, self.tokenizer = train_config, trainer_state, tokenizer
        self.meta = meta or {}

    def load_optimizer(self, optimizer):
        """Restore the optimizer's state into ``optimizer`` (built for the same model)."""
        state = self.trainer_state.get("optimizer")
        if state is None:
            raise CheckpointError(f"{self.path} holds no optimizer state (trainer_state.json has none), "
                                  "so training cannot resume from it")
        f = self.path / "optimizer.safetensors"
        listed = "optimizer.safetensors" in self.meta.get("files", {})
        if listed or f.exists():
            _verify(self.path, "optimizer.safetensors", self.meta)
        try:
            arrays = safetensors.load_file(f, mmap=False) if f.exists() else {}
        except (ValueError, OSError) as e:
            raise CheckpointError(f"optimizer state in {f} is corrupt: {e}") from None
        try:
            optimizer.load_state_dict(_join_arrays(state, arrays))
        except (ValueError, KeyError, IndexError, TypeError) as e:
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
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint: it is a file, expected a directory "
                              "with config.json and model.safetensors")
    raise CheckpointError(f"{path} is not a checkpoint: config.json is missing")


def _verify(path: Path, name: str, meta: dict) -> None:
    """CheckpointError unless ``path/name`` has the size and sha256 that config.json lists
    (files of checkpoints from before the list are only checked to exist)."""
    f = path / name
    rec = meta.get("files", {}).get(name)
    if not f.is_file():
        raise CheckpointError(f"checkpoint {path} is damaged: {name} is missing")
    if rec is None:
        return
    got = _file_record(f)
    if got["bytes"] != rec.get("bytes"):
        raise CheckpointError(f"checkpoint {path} is damaged: {name} has {got['bytes']:,} bytes, "
                              f"{rec.get('bytes'):,} were written (truncated or changed)")
    if got["sha256"] != rec.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged: {name} does not match its sha256 "
                              f"(changed or corrupted since it was written)")


def _read_json(path: Path, name: str, meta: dict):
    _verify(path, name, meta)
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in checkpoint {path}/{name}: {e}") from None


def load_checkpoint(path, device: str = "cpu", model: CausalLM | None = None) -> Checkpoint:
    """Read a checkpoint directory. Builds the model (a GPT, or the architecture its config.json
    names under "arch") from its config (or loads into ``model``, which must have the same
    architecture and config) and places it on ``device``. Every file read is
    checked against the size and sha256 in config.json; the tokenizer against the
    fingerprint the model was trained with."""
    path = _resolve(Path(path))
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in checkpoint {path}/config.json: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        looks_hf = isinstance(meta, dict) and ("n_embd" in meta or "model_type" in meta)
        hint = (" (it looks like a Hugging Face folder: load it with tinygrad_llm.load_gpt2 or "
                "tinygrad_llm.load_llama)") if looks_hf else ""
        raise CheckpointError(f"{path}/config.json: not a tinygrad_llm checkpoint config "
                              f"(format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT}){hint}")
    files = meta.get("files", {})
    try:
        cls = model_class(meta.get("arch", "gpt"))      # checkpoints from before "arch" hold a GPT
        config = cls.config_class.from_dict(meta["model"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}/config.json: {e}") from None
    trainer_state = _read_json(path, "trainer_state.json", meta) \
        if "trainer_state.json" in files or (path / "trainer_state.json").exists() else {}
    if not isinstance(trainer_state, dict):
        raise CheckpointError(f"{path}/trainer_state.json: expected a JSON object")
    if model is None:
        model = cls(config)
    elif type(model) is not cls or model.config != config:
        raise CheckpointError(f"checkpoint {path} was saved for {cls.__name__} config {config.to_dict()}, "
                              f"not this model's {model.config.to_dict()}")
    _verify(path, "model.safetensors", meta)
    try:
        weights = safetensors.load_file(path / "model.safetensors", mmap=False)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"weights in {path}/model.safetensors cannot be read: {e}") from None
    if config.tie_weights and "lm_head.weight" not in weights and cls.embedding_name in weights:
        weights["lm_head.weight"] = weights[cls.embedding_name]
    try:
        model.load_state_dict(weights, strict=True)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"weights in {path} do not match the model: {e}") from None
    model.to(device)
    tokenizer = None
    if "tokenizer.json" in files or (path / "tokenizer.json").exists():
        if not (path / "tokenizer.json").is_file():
            raise CheckpointError(f"checkpoint {path} is damaged: tokenizer.json is missing")
        # checked by its fingerprint (what it encodes), not its bytes
        try:
            tokenizer = load_tokenizer(path / "tokenizer.json")
        except ValueError as e:
            raise CheckpointError(f"tokenizer of checkpoint {path} cannot be read: {e}") from None
        _check_tokenizer(path, tokenizer, meta, config)
    return Checkpoint(path, model, config, meta.get("train", {}), trainer_state, tokenizer, meta)


def _check_tokenizer(path: Path, tokenizer, meta: dict, config) -> None:
    """The tokenizer must be the one the model was trained with."""
    want = meta.get("tokenizer", {}).get("fingerprint")
    got = tokenizer.fingerprint()
    if want is not None and got != want:
        raise CheckpointError(f"{path}/tokenizer.json does not belong to this model: it is {got}, the model "
                              f"was trained with {want}; copy back the tokenizer.json saved with it")
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path}/tokenizer.json does not belong to this model: it has "
                              f"{tokenizer.vocab_size} tokens, the model only {config.vocab_size}")


# ---------------------------------------------------------------------------- for sampling
def _config_json(folder: Path):
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_ours(meta) -> bool:
    return isinstance(meta, dict) and "format" in meta and "model" in meta


def saved_arch(path) -> str | None:
    """The architecture name ("gpt", "llama") of the checkpoint at ``path`` (or of the copy an
    interrupted swap left beside it), read from its config.json alone; None when there is no
    checkpoint of ours to read there (load_checkpoint then says what is wrong)."""
    try:
        meta = _config_json(_resolve(Path(path)))
    except CheckpointError:
        return None
    return meta.get("arch", "gpt") if _is_ours(meta) else None      # before "arch": a GPT


def find_checkpoint(path) -> Path:
    """``path`` if it holds a checkpoint; else a training output folder's ``best/``, else its
    ``latest/`` (either also when only the copy an interrupted save keeps, ``.best.old``,
    is left); else ``path`` unchanged, so that :func:`load_checkpoint` names what is missing."""
    path = Path(path)
    if not (path / "config.json").exists():
        for name in ("best", "latest"):
            if (path / name / "config.json").exists() or (path / f".{name}.old" / "config.json").exists():
                return path / name
    return path


def load_for_sampling(ckpt=None, hf=None, device: str = "cpu"):
    """(model, tokenizer, checkpoint) to generate text with, from exactly one of ``ckpt`` (a
    checkpoint, or a training output folder: see :func:`find_checkpoint`) and ``hf`` (a
    Hugging Face GPT-2 folder with vocab.json + merges.txt, or a Llama folder with
    tokenizer.json, told apart by config.json's model_type; ``checkpoint`` is then None).
    CheckpointError for the one given in place of the other, or a checkpoint without a
    tokenizer."""
    if (ckpt is None) == (hf is None):
        raise ValueError("give exactly one of ckpt (a tinygrad_llm checkpoint) and hf (a Hugging Face GPT-2 "
                         "or Llama folder)")
    if hf is not None:
        folder = Path(hf)
        meta = _config_json(folder)
        if _is_ours(meta) or any(_is_ours(_config_json(folder / n)) for n in ("best", "latest")):
            raise CheckpointError(f"{folder} is a tinygrad_llm checkpoint, not a Hugging Face GPT-2 or Llama "
                                  f"folder: use --ckpt {folder}")
        if looks_like_llama(meta):
            model, tokenizer = load_llama(folder, device=device), load_llama_tokenizer(folder)
        else:
            model, tokenizer = load_gpt2(folder, device=device), load_gpt2_tokenizer(folder)
        if tokenizer.vocab_size > model.config.vocab_size:
            raise CheckpointError(f"the tokenizer files in {folder} do not belong to this model: they have "
                                  f"{tokenizer.vocab_size} tokens, the model only {model.config.vocab_size}")
        return model, tokenizer, None
    path = Path(ckpt)
    meta = _config_json(path)
    if meta is not None and not _is_ours(meta) and ("n_embd" in meta or "model_type" in meta):
        kind = "Llama" if looks_like_llama(meta) else "GPT-2"
        raise CheckpointError(f"{path} is a Hugging Face {kind} folder, not a tinygrad_llm checkpoint: use --hf {path}")
    loaded = load_checkpoint(find_checkpoint(path), device=device)
    if loaded.tokenizer is None:
        raise CheckpointError(f"{loaded.path} holds no tokenizer.json, so text cannot be encoded")
    return loaded.model, loaded.tokenizer, loaded
