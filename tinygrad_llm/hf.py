"""Hugging Face GPT-2 checkpoints: read and write ``config.json`` + ``model.safetensors``.

    from tinygrad_llm.hf import load_gpt2, load_gpt2_tokenizer, save_gpt2
    model = load_gpt2("gpt2", device="cpu")       # a folder from `huggingface-cli download gpt2`
    tok = load_gpt2_tokenizer("gpt2")             # vocab.json + merges.txt in the same folder
    save_gpt2(model, "out/my-gpt2")               # transformers.GPT2LMHeadModel.from_pretrained reads it

The parameter names are GPT-2's already (see ``model.py``); two things differ in the file:

* GPT-2 stores its linear layers as ``Conv1D`` with weight (in, out); ours are ``Linear``
  with weight (out, in). ``c_attn``, ``c_proj`` and ``c_fc`` weights are transposed on the
  way in and out. (Embeddings, norms and biases are stored as they are.)
* Keys may carry a ``transformer.`` prefix (what ``GPT2LMHeadModel.save_pretrained``
  writes) or not (the hub's original ``gpt2`` files: ``h.0.attn.c_attn.weight``,
  ``wte.weight``). The causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` of old
  files are skipped. ``lm_head.weight`` is absent when tied to ``wte`` (or present and
  equal to it).

Loading copies one tensor at a time from the memory-mapped file straight into the
already-allocated parameter (transposing during the copy), so no second state dict is
ever built. See docs/gpt2.md.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import backend
from .atomic import write_bytes_atomic
from .function import no_grad
from .model import GPT, GPTConfig
from .nn.layers import LayerNorm
from .safetensors import SafetensorsFile, save_file
from .tokenizer import BPETokenizer

__all__ = ["HFFormatError", "GPT2FormatError", "load_gpt2", "save_gpt2", "load_gpt2_tokenizer",
           "config_from_gpt2", "config_to_gpt2"]

#: weights GPT-2 keeps as Conv1D (in, out); ours are Linear (out, in)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
#: non-parameter buffers some GPT-2 files carry (the causal mask); skipped on load
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
#: safetensors dtypes we read (cast to the model's float32)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
#: GPT-2 activation names that are the tanh-approximated GELU (ours) or ReLU
ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
#: transformers.GPT2Config's defaults, used for keys a config.json leaves out
GPT2_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                 "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1,
                 "embd_pdrop": 0.1, "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5,
                 "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                 "reorder_and_upcast_attn": False, "add_cross_attention": False,
                 "tie_word_embeddings": True}
#: the epsilon our LayerNorm uses (GPTConfig has no option for it)
LAYER_NORM_EPS = LayerNorm(1).eps

CONVERT_HINT = (
    "convert it once with transformers (on any machine that has it):\n"
    "    from transformers import GPT2LMHeadModel\n"
    "    GPT2LMHeadModel.from_pretrained({d!r}).save_pretrained({d!r}, safe_serialization=True)\n"
    "which writes model.safetensors next to it")


class HFFormatError(ValueError):
    """A Hugging Face checkpoint this package cannot read or represent (the message says why)."""


class GPT2FormatError(HFFormatError):
    """A GPT-2 checkpoint this package cannot read or represent (the message says why)."""


# ---------------------------------------------------------------------------- config
def config_from_gpt2(hf: dict, dropout: float | None = None) -> GPTConfig:
    """A GPT-2 ``config.json`` (as a dict) -> :class:`GPTConfig`.

    Raises :class:`GPT2FormatError` naming every key whose value our GPT cannot represent.
    ``dropout``: our single dropout rate; None takes GPT-2's resid/embd/attn_pdrop (which
    must then agree).
    """
    if not isinstance(hf, dict):
        raise GPT2FormatError(f"config.json must hold a JSON object, got {type(hf).__name__}")
    c = {**GPT2_DEFAULTS, **hf}
    problems = []
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        problems.append(f"model_type={model_type!r} (only 'gpt2' is supported)")
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        v = c[key]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"{key}={v!r} (a positive integer is expected)")
    if not problems:
        if c["n_embd"] % c["n_head"]:
            problems.append(f"n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}")
        if c["n_inner"] is not None and c["n_inner"] != 4 * c["n_embd"]:
            problems.append(f"n_inner={c['n_inner']!r} (ours is fixed at 4 * n_embd = {4 * c['n_embd']})")
        if "n_ctx" in hf and hf["n_ctx"] != c["n_positions"]:
            problems.append(f"n_ctx={hf['n_ctx']!r} differs from n_positions={c['n_positions']}")
    act = c["activation_function"]
    if act not in ACTIVATIONS:
        problems.append(f"activation_function={act!r} (supported: {sorted(ACTIVATIONS)}; "
                        "'gelu' is the exact erf GELU, ours is the tanh approximation)")
    eps = c["layer_norm_epsilon"]
    if not isinstance(eps, (int, float)) or not math.isclose(eps, LAYER_NORM_EPS, rel_tol=1e-9):
        problems.append(f"layer_norm_epsilon={eps!r} (ours is fixed at {LAYER_NORM_EPS})")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("reorder_and_upcast_attn", False), ("add_cross_attention", False),
                      ("is_encoder_decoder", False)):
        if key in c and c[key] != want:
            problems.append(f"{key}={c[key]!r} (only {want} is supported)")
    tie = c["tie_word_embeddings"]
    if not isinstance(tie, bool):
        problems.append(f"tie_word_embeddings={tie!r} (a boolean is expected)")
    if dropout is None:
        rates = {k: c[k] for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
        if len(set(rates.values())) != 1:
            problems.append(f"dropout rates differ ({rates}); ours has one rate: pass dropout= to choose it")
        else:
            dropout = float(rates["resid_pdrop"])
    if problems:
        raise GPT2FormatError("this GPT-2 config cannot be represented by tinygrad_llm's GPT:\n  "
                              + "\n  ".join(problems))
    try:
        return GPTConfig(vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"],
                         n_head=c["n_head"], n_embd=c["n_embd"], dropout=dropout, bias=True,
                         norm="layernorm", prenorm=True, activation=ACTIVATIONS[act], pos="learned",
                         tie_weights=tie)
    except ValueError as e:
        raise GPT2FormatError(f"GPT-2 config: {e}") from None


def config_to_gpt2(cfg: GPTConfig, dtype="float32") -> dict:
    """:class:`GPTConfig` -> a GPT-2 ``config.json`` dict; GPT2FormatError for options GPT-2 lacks."""
    problems = []
    if cfg.norm != "layernorm":
        problems.append(f"norm={cfg.norm!r} (GPT-2 has only LayerNorm)")
    if not cfg.prenorm:
        problems.append("prenorm=False (GPT-2 is Pre-LN only)")
    if cfg.pos != "learned":
        problems.append(f"pos={cfg.pos!r} (GPT-2 has only learned position embeddings)")
    if not cfg.bias:
        problems.append("bias=False (GPT-2's linear layers and LayerNorms always have biases)")
    if problems:
        raise GPT2FormatError("this model cannot be saved in GPT-2's format:\n  " + "\n  ".join(problems))
    # token ids 50256 only make sense in GPT-2's own vocabulary
    special = 50256 if cfg.vocab_size > 50256 else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "activation_function": "gelu_new" if cfg.activation == "gelu" else "relu",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": cfg.tie_weights,
        "use_cache": True,
        "bos_token_id": special,
        "eos_token_id": special,
        "dtype": str(dtype),
    }


# ---------------------------------------------------------------------------- load
def _weights_file(d: Path) -> Path:
    """The model.safetensors of checkpoint folder ``d`` (clear errors for the other layouts)."""
    f = d / "model.safetensors"
    if f.is_file():
        return f
    if (d / "model.safetensors.index.json").is_file():
        raise GPT2FormatError(f"{str(d)!r} holds a sharded checkpoint (model.safetensors.index.json); "
                              "only a single model.safetensors is supported")
    for name in ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt"):
        if (d / name).is_file():
            raise GPT2FormatError(f"{str(d)!r} has {name} (PyTorch pickle) but no model.safetensors; "
                                  + CONVERT_HINT.format(d=str(d)))
    raise FileNotFoundError(f"no model.safetensors in {str(d)!r} (found: {listing(d)})")


def listing(d: Path) -> str:
    """The first names in folder ``d``, for messages."""
    names = sorted(p.name for p in d.iterdir())
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "nothing"


def read_json(f: Path, error=GPT2FormatError):
    """The JSON in file ``f``; ``error`` (an HFFormatError) when it is not valid JSON."""
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{str(f)!r} is not valid JSON ({e})") from None


def read_config(d: Path, what: str = "a GPT-2 checkpoint folder", error=GPT2FormatError) -> dict:
    """The config.json of checkpoint folder ``d`` (FileNotFoundError naming ``what`` needs it)."""
    f = d / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"no config.json in {str(d)!r} (found: {listing(d)}); {what} "
                                "needs config.json and model.safetensors")
    return read_json(f, error)


def _our_name(key: str) -> str:
    """A file key -> our parameter name (adds the ``transformer.`` prefix the hub's files lack)."""
    if key.startswith("transformer.") or key == "lm_head.weight":
        return key
    return "transformer." + key


def open_safetensors(path: Path, error=GPT2FormatError):
    try:
        return SafetensorsFile(path)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise error(f"{str(path)!r} is not a readable safetensors file: {e}") from None


def get_tensor(f, key: str, path: Path, error=GPT2FormatError):
    try:
        return f.get(key)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise error(f"{str(path)!r}: cannot read tensor {key!r}: {e}") from None


def max_difference(a, b, rows: int = 4096) -> float:
    """max |a - b| of two (N, C) arrays (memmaps), a block of rows at a time (no full copies)."""
    worst = 0.0
    for i in range(0, a.shape[0], rows):
        d = np.abs(np.asarray(a[i:i + rows], dtype=np.float64) - np.asarray(b[i:i + rows], dtype=np.float64))
        worst = max(worst, float(d.max(initial=0.0)))
    return worst


def load_gpt2(path, device: str = "cpu", dropout: float | None = None) -> GPT:
    """A :class:`GPT` (float32, eval mode) from a Hugging Face GPT-2 folder.

    ``path`` holds ``config.json`` and ``model.safetensors`` (keys with or without the
    ``transformer.`` prefix). ``dropout`` overrides GPT-2's dropout rates (used only when
    training). Errors: FileNotFoundError for missing files, :class:`GPT2FormatError` for a
    ``pytorch_model.bin`` only (with how to convert it), a config we cannot represent, a
    corrupt file, and missing, unknown or mis-shaped tensors.
    """
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{str(d)!r} is not a folder; expected a GPT-2 checkpoint folder "
                                "holding config.json and model.safetensors")
    device = backend.canonical_device(device)
    cfg = config_from_gpt2(read_config(d), dropout)
    wpath = _weights_file(d)
    f = open_safetensors(wpath)

    model = GPT(cfg).to(device).eval()
    params = model.state_dict(keep_vars=True)          # our name -> Parameter (lm_head too, when tied)
    tied = cfg.tie_weights

    # check every key, shape and dtype before copying anything
    plan, seen, problems = [], {}, []
    for key in f.keys():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        name = _our_name(key)
        if name in seen:
            problems.append(f"{key!r} and {seen[name]!r} are the same tensor (with and without 'transformer.')")
            continue
        seen[name] = key
        if tied and name == "lm_head.weight":
            continue                                   # checked against wte below
        if name not in params:
            problems.append(f"unexpected tensor {key!r}")
            continue
        transpose = name.endswith(CONV1D_WEIGHTS)
        want = params[name].shape
        check_tensor(f, key, want[::-1] if transpose else want, problems)
        plan.append((f, wpath, key, name, transpose))
    report_problems(params, seen, tied, problems, f"{str(wpath)!r}", GPT2FormatError)
    if tied and "lm_head.weight" in seen:
        check_tie((f, wpath, seen["lm_head.weight"]), (f, wpath, seen["transformer.wte.weight"]), "wte.weight",
                  f"{str(wpath)!r}", GPT2FormatError)
        f.close()
    copy_tensors(params, plan, device, GPT2FormatError)
    return model


def check_tensor(f, key: str, shape: tuple, problems: list) -> bool:
    """Whether tensor ``key`` of SafetensorsFile ``f`` is floating point of ``shape``; if not, a
    line saying why is appended to ``problems``."""
    stored = tuple(f.shape(key))
    if stored != tuple(shape):
        problems.append(f"{key!r} has shape {stored}, the config implies {tuple(shape)}")
    elif f.dtype(key) not in FLOAT_DTYPES:
        problems.append(f"{key!r} has dtype {f.dtype(key)}, a floating-point tensor is expected")
    else:
        return True
    return False


def report_problems(params: dict, found, tied: bool, problems: list, where: str, error=GPT2FormatError) -> None:
    """``error`` listing ``problems`` and the parameters not ``found`` in the file (a tied lm_head
    need not be), if there are any."""
    missing = [n for n in params if n not in found and not (tied and n == "lm_head.weight")]
    if missing:
        problems.append("missing tensors: " + ", ".join(repr(n) for n in missing))
    if problems:
        raise error(f"{where} does not match its config.json:\n  " + "\n  ".join(problems))


def check_tie(lm_head: tuple, embedding: tuple, embedding_name: str, where: str, error=GPT2FormatError) -> None:
    """``error`` unless the lm_head and embedding tensors, each (SafetensorsFile, path, key), are
    equal (compared a block of rows at a time, without full copies)."""
    (fl, pl, kl), (fe, pe, ke) = lm_head, embedding
    if fl.shape(kl) != fe.shape(ke) or max_difference(get_tensor(fl, kl, pl, error), get_tensor(fe, ke, pe, error)) > 0:
        raise error(f"{where}: config.json says tie_word_embeddings=true but lm_head.weight differs from "
                    f"{embedding_name}; set \"tie_word_embeddings\": false to load them untied")


def copy_tensors(params: dict, plan: list, device: str, error=GPT2FormatError) -> None:
    """Copy each tensor of ``plan``, (SafetensorsFile, its path, key, our parameter name,
    transpose), from the memory-mapped file straight into the parameter (transposing and
    casting during the copy), one at a time: the file is unmapped after each, so only one
    tensor's pages are ever resident and no second state dict is built."""
    xp = backend.xp_for(device)
    with no_grad():
        for f, path, key, name, transpose in plan:
            arr = get_tensor(f, key, path, error)      # a view of the memory-mapped file
            if device != "cpu":
                arr = xp.asarray(arr)                  # one tensor on the device at a time
            params[name][...] = arr.T if transpose else arr   # transposing copy + cast, in place
            del arr
            f.close()


# ---------------------------------------------------------------------------- save
def save_gpt2(model: GPT, path) -> None:
    """Write ``config.json`` + ``model.safetensors`` in GPT-2's format to folder ``path``.

    Keys are ``transformer.*`` (as ``GPT2LMHeadModel.save_pretrained`` writes them),
    Conv1D weights (in, out), a tied ``lm_head`` stored once (as ``wte``). Each file is
    written to a temporary name and renamed into place. GPT2FormatError for options
    GPT-2 lacks (RMSNorm, Post-LN, sinusoidal positions, bias=False).
    """
    cfg = model.config
    state = model.state_dict()
    dtype = state["transformer.wte.weight"].dtype
    hf_config = config_to_gpt2(cfg, dtype=np.dtype(dtype).name)
    tensors = {}
    for name, t in state.items():
        if cfg.tie_weights and name == "lm_head.weight":
            continue
        arr = backend.to_numpy(t.data)
        tensors[name] = np.ascontiguousarray(arr.T) if name.endswith(CONV1D_WEIGHTS) else arr
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})     # atomic itself
    text = json.dumps(hf_config, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(d / "config.json", text.encode("utf-8"))


# ---------------------------------------------------------------------------- tokenizer
def load_gpt2_tokenizer(path):
    """The GPT-2 BPE tokenizer from ``vocab.json`` + ``merges.txt`` in folder ``path``."""
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{str(d)!r} is not a folder; expected one holding vocab.json and merges.txt")
    absent = [n for n in ("vocab.json", "merges.txt") if not (d / n).is_file()]
    if absent:
        raise FileNotFoundError(f"no {' or '.join(absent)} in {str(d)!r} (found: {listing(d)}); the GPT-2 "
                                "tokenizer needs vocab.json and merges.txt (they come with "
                                "`huggingface-cli download gpt2`)")
    return BPETokenizer.from_gpt2_files(d / "vocab.json", d / "merges.txt")
