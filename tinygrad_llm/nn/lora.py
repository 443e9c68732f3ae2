"""LoRA: low-rank adapters on ``Linear`` layers (Hu et al., 2021), in PEFT's names and file layout.

    from tinygrad_llm.nn import lora
    lora.apply_lora(model, ["c_attn", "c_proj", "c_fc"], r=8, lora_alpha=16)   # freezes the rest
    ...train: only the lora_A / lora_B weights require grad...
    lora.save_lora(model, "out/adapter")          # adapter_model.safetensors + adapter_config.json
    lora.load_lora(fresh_base_model, "out/adapter")
    lora.merge_lora(model)                        # W += (alpha / r) B A: plain-Linear speed
    lora.unmerge_lora(model)                      # W -= (alpha / r) B A

An adapted layer computes

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,    A (r, in), B (out, r)

with A drawn as a fresh ``Linear(in, r)`` (U(-1/sqrt(in), 1/sqrt(in)), small and random) and
B zero, so training starts from exactly the base model. W and b stay frozen. The adapter
path is two more ``F.linear`` nodes and an add, so its backward is the linear layer's (see
docs/backprop.md); only A and B, and the input, receive gradients.

Layers are chosen by name, as PEFT's ``target_modules``: a target matches a ``Linear`` whose
dotted name equals it or ends with ``"." + target`` (``"c_proj"`` matches both
``transformer.h.0.attn.c_proj`` and ``transformer.h.0.mlp.c_proj``). Saved files use PEFT's
key names (``base_model.model.<layer>.lora_A.weight``) and config keys (``r``,
``lora_alpha``, ``lora_dropout``, ``target_modules``, ...).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from .. import backend, safetensors
from ..function import no_grad
from ..tensor import Tensor
from . import functional as F
from .layers import Dropout, Linear
from .module import Module

__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "lora_layers", "lora_state_dict", "merged_state_dict",
           "merge_lora", "unmerge_lora", "unload_lora", "save_lora", "load_lora", "LoRAError",
           "ADAPTER_WEIGHTS", "ADAPTER_CONFIG"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: what PEFT puts before a layer's name in the keys of adapter_model.safetensors
KEY_PREFIX = "base_model.model."
#: the GPT's linear layers in its blocks (a Llama's default targets are ``Llama.lora_targets``)
DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")


class LoRAError(ValueError):
    """Bad LoRA settings, targets that match nothing, or an adapter that does not fit a model."""


@dataclasses.dataclass
class LoRAConfig:
    """An adapter's settings (adapter_config.json holds them with PEFT's keys)."""

    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple = DEFAULT_TARGETS

    def __post_init__(self):
        r = self.r
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise LoRAError(f"LoRA rank r must be a positive integer, got {r!r}")
        a = self.lora_alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a < math.inf:
            raise LoRAError(f"lora_alpha must be a finite number > 0, got {a!r}")
        d = self.lora_dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
            raise LoRAError(f"lora_dropout must be in [0, 1), got {d!r}")
        targets = (self.target_modules,) if isinstance(self.target_modules, str) else self.target_modules
        targets = tuple(targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoRAError(f"target_modules must be non-empty layer names, got {self.target_modules!r}")
        self.lora_alpha, self.lora_dropout, self.target_modules = float(a), float(d), targets

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def to_json(self, base_model: str | None = None) -> dict:
        """PEFT's adapter_config.json keys."""
        return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.r, "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout, "target_modules": list(self.target_modules),
                "bias": "none", "fan_in_fan_out": True, "base_model_name_or_path": base_model,
                "inference_mode": True}

    @classmethod
    def from_json(cls, d, where: str = "adapter_config.json") -> "LoRAConfig":
        if not isinstance(d, dict):
            raise LoRAError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("peft_type", "LORA") != "LORA":
            raise LoRAError(f"{where}: peft_type is {d.get('peft_type')!r}; only 'LORA' adapters are supported")
        if d.get("bias", "none") != "none":
            raise LoRAError(f"{where}: bias={d.get('bias')!r}; only adapters without trained biases are supported")
        missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in d]
        if missing:
            raise LoRAError(f"{where}: missing key(s) {missing}")
        return cls(d["r"], d["lora_alpha"], d.get("lora_dropout", 0.0), d["target_modules"])


def _init_sharing(layer: Linear, base: Linear):
    """Initialise ``layer`` as a Linear holding ``base``'s own weight and bias Parameters
    (instead of ``Linear.__init__``, which would draw new ones)."""
    Module.__init__(layer)
    layer.in_features, layer.out_features = base.in_features, base.out_features
    layer.weight = base.weight
    if base.bias is None:
        layer.register_parameter("bias", None)
    else:
        layer.bias = base.bias


class LoRALinear(Linear):
    """A ``Linear`` carrying a low-rank adapter; built from an existing layer, whose weight and
    bias Parameters it shares (and freezes).

    Parameters: ``weight``, ``bias`` (the base layer's), ``lora_A.weight`` (r, in),
    ``lora_B.weight`` (out, r). ``merged``: whether the adapter is folded into ``weight``.
    """

    def __init__(self, base: Linear, r: int = 8, lora_alpha: float = 16.0, lora_dropout: float = 0.0):
        cfg = LoRAConfig(r, lora_alpha, lora_dropout)
        _init_sharing(self, base)
        self.requires_grad_(False)
        self.r, self.lora_alpha, self.scaling = cfg.r, cfg.lora_alpha, cfg.scaling
        w = base.weight
        self.lora_dropout = Dropout(cfg.lora_dropout)
        self.lora_A = Linear(self.in_features, cfg.r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = Linear(cfg.r, self.out_features, bias=False, device=w.device, dtype=w.dtype)
        with no_grad():
            self.lora_B.weight.zero_()
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"LoRALinear expected input with last dimension in_features={self.in_features}, "
                             f"got shape {x.shape}")
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        h = self.lora_A(self.lora_dropout(x))                  # (..., r)
        return y + self.lora_B(h * self.scaling)              # scaled on the small side: (..., r)

    def delta_weight(self):
        """(alpha / r) B A, shape (out, in): what merging adds to ``weight`` (a raw array)."""
        return (self.lora_B.weight.data * self.weight.dtype.type(self.scaling)) @ self.lora_A.weight.data

    def merge(self):
        """Fold the adapter into ``weight``: the forward is then one plain linear layer."""
        if not self.merged:
            with no_grad():
                self.weight.add_(self.delta_weight())
            self.merged = True

    def unmerge(self):
        """Take the adapter back out of ``weight`` (equal to before merging up to float rounding)."""
        if self.merged:
            with no_grad():
                self.weight.sub_(self.delta_weight())
            self.merged = False

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"r={self.r}, lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout.p}, merged={self.merged}")


# ----------------------------------------------------------------------------- applying

def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _linears(model: Module) -> dict:
    """{dotted name: Linear} of the layers an adapter can go on (not the adapters' own A and B)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, Linear) and name and not name.endswith((".lora_A", ".lora_B"))}


def lora_layers(model: Module) -> dict:
    """{dotted name: LoRALinear} of every adapted layer."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_submodule(model: Module, name: str, module: Module):
    """Put ``module`` where the sub-module ``name`` is, keeping its place in the order."""
    parent, _, child = name.rpartition(".")
    model.get_submodule(parent)._modules[child] = module


def apply_lora(model: Module, target_modules=None, r: int = 8, lora_alpha: float = 16.0,
               lora_dropout: float = 0.0) -> list:
    """Give each ``Linear`` named by ``target_modules`` an adapter; freeze every other parameter.

    ``target_modules`` None: the model's ``lora_targets`` (every projection in its blocks:
    :data:`DEFAULT_TARGETS` for a GPT), or DEFAULT_TARGETS for a model without them.
    Returns the adapted layers' names. Everything is checked before anything changes:
    a target that matches no ``Linear``, a layer that already has an adapter, or a layer
    whose weight is tied to another parameter (merging would change both) is a LoRAError.
    """
    if target_modules is None:
        target_modules = getattr(model, "lora_targets", DEFAULT_TARGETS)
    cfg = LoRAConfig(r, lora_alpha, lora_dropout, target_modules)
    linears = _linears(model)
    problems = []
    for t in cfg.target_modules:
        if not any(_matches(n, t) for n in linears):
            known = sorted({n.rpartition(".")[2] for n in linears})
            problems.append(f"target {t!r} matches no Linear layer (this model's Linear layers are named {known})")
    chosen = [n for n in linears if any(_matches(n, t) for t in cfg.target_modules)]
    names_of = {}
    for key, p in model.state_dict(keep_vars=True).items():
        names_of.setdefault(id(p), []).append(key)
    for n in chosen:
        if isinstance(linears[n], LoRALinear):
            problems.append(f"{n} already has a LoRA adapter")
        tied = names_of.get(id(linears[n].weight), [])
        if len(tied) > 1:
            problems.append(f"{n}.weight is tied to {[k for k in tied if k != n + '.weight']}; an adapter "
                            "merged into it would change those too: leave it out of the targets")
    if problems:
        raise LoRAError("cannot apply LoRA:\n  " + "\n  ".join(problems))
    model.requires_grad_(False)
    for n in chosen:
        _set_submodule(model, n, LoRALinear(linears[n], cfg.r, cfg.lora_alpha, cfg.lora_dropout))
    for m in lora_layers(model).values():          # adapters of an earlier call stay trainable
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)
    before = getattr(model, "lora_config", None)
    if before is not None and (before.r, before.lora_alpha, before.lora_dropout) == (cfg.r, cfg.lora_alpha,
                                                                                      cfg.lora_dropout):
        cfg = dataclasses.replace(cfg, target_modules=before.target_modules + tuple(
            t for t in cfg.target_modules if t not in before.target_modules))
    model.lora_config = cfg   # what save_lora writes (a second call with other settings: see _config_of)
    return chosen


def _config_of(model: Module) -> LoRAConfig:
    layers = lora_layers(model)
    if not layers:
        raise LoRAError("this model has no LoRA adapters (apply_lora or load_lora first)")
    cfg = getattr(model, "lora_config", None)
    if cfg is None:
        raise LoRAError("this model's adapters were not added by apply_lora or load_lora, so their "
                        "target_modules are unknown")
    settings = {(m.r, m.lora_alpha, m.lora_dropout.p) for m in layers.values()}
    if settings != {(cfg.r, cfg.lora_alpha, cfg.lora_dropout)}:
        raise LoRAError(f"the adapters of this model have differing settings {sorted(settings)}; "
                        "one adapter file holds one (r, lora_alpha, lora_dropout)")
    return cfg


def lora_state_dict(model: Module) -> dict:
    """{name: Tensor} of the adapter weights only (``<layer>.lora_A.weight``, ``<layer>.lora_B.weight``)."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


def merged_state_dict(model: Module) -> dict:
    """The state dict of the plain model (no adapter keys) with every adapter folded into its
    weight, as host arrays; the model itself is left as it is."""
    layers = lora_layers(model)
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_A." in k or ".lora_B." in k:
            continue
        layer = layers.get(k[:-len(".weight")]) if k.endswith(".weight") else None
        arr = v.data if layer is None or layer.merged else v.data + layer.delta_weight()
        out[k] = backend.to_numpy(arr)
    return out


def merge_lora(model: Module):
    """Fold every adapter into its layer's weight (for inference at plain-Linear speed)."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge_lora(model: Module):
    """Undo :func:`merge_lora` (weights back to the base's, up to float rounding)."""
    for m in lora_layers(model).values():
        m.unmerge()


def unload_lora(model: Module, merge: bool = True) -> Module:
    """Replace every ``LoRALinear`` by a plain ``Linear`` with the same (merged, when ``merge``)
    weight and bias; the model is then an ordinary one again (PEFT's ``merge_and_unload``)."""
    for name, m in lora_layers(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        plain = Linear.__new__(Linear)
        _init_sharing(plain, m)
        _set_submodule(model, name, plain)
    model.__dict__.pop("lora_config", None)
    return model


# ----------------------------------------------------------------------------- files

def save_lora(model: Module, path, base_model: str | None = None, overwrite: bool = False) -> Path:
    """Write ``path/adapter_model.safetensors`` and ``path/adapter_config.json`` (PEFT's layout).

    The folder is written whole or not at all (a temporary folder, then a rename). An
    existing ``path`` is an error unless ``overwrite``.
    """
    cfg = _config_of(model)
    if any(m.merged for m in lora_layers(model).values()):
        raise LoRAError("the adapters are merged into the weights; unmerge_lora(model) before saving them")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {KEY_PREFIX + k: backend.to_numpy(v.data) for k, v in lora_state_dict(model).items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        safetensors.save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg.to_json(base_model), indent=2) + "\n")
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_lora_config(path) -> LoRAConfig:
    """The :class:`LoRAConfig` of adapter folder ``path``."""
    f = Path(path) / ADAPTER_CONFIG
    if not f.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG} in {str(path)!r}; an adapter folder holds "
                                f"{ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (as written by save_lora)")
    try:
        return LoRAConfig.from_json(json.loads(f.read_text(encoding="utf-8")), str(f))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoRAError(f"{f} is not valid JSON ({e})") from None


def load_lora(model: Module, path) -> list:
    """Apply the adapter saved in folder ``path`` to ``model`` (a base model without adapters)
    and load its weights; returns the adapted layers' names. The file's tensors must be
    exactly the adapters the config implies for this model, with matching shapes; nothing
    is changed when they are not."""
    cfg = read_lora_config(path)
    f = Path(path) / ADAPTER_WEIGHTS
    if not f.is_file():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {str(path)!r}")
    try:
        arrays = safetensors.load_file(f, mmap=False)
    except (ValueError, OSError) as e:
        raise LoRAError(f"{f} cannot be read: {e}") from None
    arrays = {k[len(KEY_PREFIX):] if k.startswith(KEY_PREFIX) else k: v for k, v in arrays.items()}
    # check the file against the layers the config names before changing the model
    linears = _linears(model)
    chosen = [n for n in linears if any(_matches(n, t) for t in cfg.target_modules)]
    want = {}
    for n in chosen:
        want[f"{n}.lora_A.weight"] = (cfg.r, linears[n].in_features)
        want[f"{n}.lora_B.weight"] = (linears[n].out_features, cfg.r)
    problems = [f"missing tensor {k!r}" for k in want if k not in arrays]
    problems += [f"unexpected tensor {k!r}" for k in arrays if k not in want]
    problems += [f"{k!r} has shape {tuple(arrays[k].shape)}, this model needs {s}"
                 for k, s in want.items() if k in arrays and tuple(arrays[k].shape) != s]
    if problems:
        raise LoRAError(f"the adapter in {str(path)!r} does not fit this model:\n  " + "\n  ".join(problems[:10])
                        + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
    names = apply_lora(model, cfg.target_modules, cfg.r, cfg.lora_alpha, cfg.lora_dropout)
    model.load_state_dict(arrays, strict=False)
    return names
