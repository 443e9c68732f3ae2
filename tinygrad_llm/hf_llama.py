"""Hugging Face Llama checkpoints (``LlamaForCausalLM``: SmolLM, TinyLlama, Llama 2/3): read and write.

    from tinygrad_llm import load_llama, save_llama
    from tinygrad_llm.hf_llama import load_llama_tokenizer
    model = load_llama("SmolLM-135M", device="cpu")    # a folder from `huggingface-cli download HuggingFaceTB/SmolLM-135M`
    tok = load_llama_tokenizer("SmolLM-135M")          # its tokenizer.json (byte-level BPE)
    save_llama(model, "out/my-llama", tokenizer=tok)    # transformers.LlamaForCausalLM.from_pretrained reads it

A folder holds ``config.json`` and the weights: ``model.safetensors``, or shards listed in
``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file}}``). The
parameter names are Hugging Face's already (see llama.py), and Llama's linear layers are
stored as (out, in) like ours, so tensors are copied as they are (cast to float32; F16,
BF16 and F64 files are read too). ``lm_head.weight`` is absent when tied to
``model.embed_tokens.weight`` (or present and equal to it); old files' rotary buffers
``...rotary_emb.inv_freq`` are skipped.

config.json keys are mapped to :class:`~tinygrad_llm.llama.LlamaConfig` (:data:`CONFIG_KEYS`),
checked (:data:`FIXED_VALUES`: only the value our model computes), or known not to change
what the model computes (:data:`INFORMATIONAL_KEYS`: token ids, init, dtype, versions).
Any other key is an error that lists it: a setting we do not know could change the
model, so it is never silently ignored. ``rope_theta`` and ``rope_scaling`` are read in
both the layout of transformers 4 and transformers 5's ``rope_parameters``.

Tokenizers: a byte-level BPE ``tokenizer.json`` (GPT-2's layout, or SmolLM's with its
digits split one by one) is read by the package's BPE tokenizer. SentencePiece tokenizers
(``tokenizer.model`` alone, or a tokenizer.json with byte fallback and "▁" for spaces, as
TinyLlama's and Llama 2's) are not supported: that is an error naming what was found.
See docs/llama.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import backend
from .atomic import write_bytes_atomic
from .hf import (HFFormatError, check_tensor, check_tie, copy_tensors, listing, open_safetensors, read_config,
                 read_json, report_problems)
from .llama import Llama, LlamaConfig
from .safetensors import save_file
from .tokenizer import load_tokenizer
from .tokenizer.io import TokenizerFileError

__all__ = ["LlamaFormatError", "load_llama", "save_llama", "load_llama_tokenizer", "config_from_llama",
           "config_to_llama", "looks_like_llama", "CONFIG_KEYS", "FIXED_VALUES", "INFORMATIONAL_KEYS"]

#: Hugging Face's LlamaConfig key -> ours
CONFIG_KEYS = {"vocab_size": "vocab_size", "max_position_embeddings": "block_size",
               "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
               "num_key_value_heads": "n_kv_head", "hidden_size": "n_embd",
               "intermediate_size": "intermediate_size", "attention_dropout": "dropout",
               "rms_norm_eps": "rms_norm_eps", "rope_theta": "rope_theta", "rope_scaling": "rope_scaling",
               "tie_word_embeddings": "tie_weights"}
#: keys whose value must be the one given (null always allowed where listed with None)
FIXED_VALUES = {"model_type": ("llama",), "hidden_act": ("silu",), "rope_interleaved": (False,),
                "is_encoder_decoder": (False,), "add_cross_attention": (False,)}
#: keys that do not change what the model computes
INFORMATIONAL_KEYS = {"architectures", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
                      "use_cache", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
                      "pretraining_tp", "is_llama_config", "tokenizer_class", "output_attentions",
                      "output_hidden_states", "return_dict"}
#: the other keys this module reads: biases, head size, and transformers 5's rope_parameters
OTHER_KEYS = {"attention_bias", "mlp_bias", "head_dim", "rope_parameters"}
#: Hugging Face LlamaConfig's defaults for keys a config.json may leave out
LLAMA_DEFAULTS = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": None, "max_position_embeddings": 2048,
                  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None, "attention_dropout": 0.0,
                  "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "head_dim": None}
#: old checkpoints carry the rotary frequencies as buffers; they are recomputed, not read
IGNORED = re.compile(r".*\.rotary_emb\.inv_freq$")
INDEX = "model.safetensors.index.json"
WEIGHTS = "model.safetensors"
SHARD = "model-{:05d}-of-{:05d}.safetensors"
SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors$")


class LlamaFormatError(HFFormatError):
    """A Llama checkpoint or tokenizer this package cannot read or represent (the message says why)."""


# ---------------------------------------------------------------------------- config
def _rope(hf: dict, problems: list) -> tuple:
    """(rope_theta, rope_scaling) from transformers 4's keys or transformers 5's rope_parameters."""
    theta, scaling = hf.get("rope_theta", LLAMA_DEFAULTS["rope_theta"]), hf.get("rope_scaling")
    params = hf.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict):
            problems.append(f"rope_parameters={params!r} (a JSON object is expected)")
            return theta, None
        params = dict(params)
        theta = params.pop("rope_theta", theta)
        scaling = params if params.get("rope_type", params.get("type", "default")) != "default" else None
        extra = sorted(set(params) - {"rope_type", "type"}) if scaling is None else []
        if extra:
            problems.append(f"rope_parameters has key(s) {extra} that the default rope does not use")
    return theta, scaling


def config_from_llama(hf: dict) -> LlamaConfig:
    """A Hugging Face Llama ``config.json`` (as a dict) -> :class:`LlamaConfig`.

    Raises :class:`LlamaFormatError` listing every key we do not know and every value our
    Llama cannot represent.
    """
    if not isinstance(hf, dict):
        raise LlamaFormatError(f"config.json must hold a JSON object, got {type(hf).__name__}")
    problems = []
    known = set(CONFIG_KEYS) | set(FIXED_VALUES) | INFORMATIONAL_KEYS | OTHER_KEYS
    unknown = sorted(k for k in hf if k not in known)
    if unknown:
        problems.append(f"unsupported key(s) {unknown}: this package does not know what they change, so it "
                        "does not load the model rather than ignore them")
    if "model_type" not in hf:
        problems.append("model_type is missing ('llama' is expected)")
    for key, allowed in FIXED_VALUES.items():
        if key in hf and hf[key] not in allowed:
            problems.append(f"{key}={hf[key]!r} (only {' or '.join(repr(a) for a in allowed)} is supported)")
    c = {**LLAMA_DEFAULTS, **hf}
    theta, scaling = _rope(hf, problems)
    if c["attention_bias"] != c["mlp_bias"]:
        problems.append(f"attention_bias={c['attention_bias']!r} and mlp_bias={c['mlp_bias']!r} differ "
                        "(ours has one bias setting for both)")
    heads, hidden = c["num_attention_heads"], c["hidden_size"]
    if c["head_dim"] is not None and isinstance(heads, int) and heads > 0 and isinstance(hidden, int) \
            and c["head_dim"] != hidden // heads:
        problems.append(f"head_dim={c['head_dim']!r} (ours is hidden_size / num_attention_heads = "
                        f"{hidden // heads})")
    fields = {ours: c[theirs] for theirs, ours in CONFIG_KEYS.items()}
    fields.update(rope_theta=theta, rope_scaling=scaling, bias=c["attention_bias"])
    if problems:
        raise LlamaFormatError("this Llama config cannot be represented by tinygrad_llm's Llama:\n  "
                               + "\n  ".join(problems))
    try:
        return LlamaConfig(**fields)
    except ValueError as e:
        raise LlamaFormatError(f"Llama config: {e}") from None


def config_to_llama(cfg: LlamaConfig, dtype="float32", bos_token_id=None, eos_token_id=None) -> dict:
    """:class:`LlamaConfig` -> a Hugging Face ``config.json`` dict (transformers 4's rope keys,
    which transformers 5 reads too)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_weights,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": str(dtype),
    }


# ---------------------------------------------------------------------------- load
def _weight_files(d: Path) -> dict:
    """{tensor name: file} of checkpoint folder ``d``: model.safetensors, or the shards its index names."""
    single, index = d / WEIGHTS, d / INDEX
    if single.is_file():
        return {key: single for key in open_safetensors(single, LlamaFormatError).keys()}
    if index.is_file():
        weight_map = read_json(index, LlamaFormatError)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise LlamaFormatError(f"{str(index)!r} has no \"weight_map\" of tensor name -> shard file")
        missing = sorted({f for f in weight_map.values() if not (d / f).is_file()})
        if missing:
            raise LlamaFormatError(f"{str(index)!r} lists shard(s) that are not in the folder: {missing}")
        return {key: d / f for key, f in weight_map.items()}
    for name in ("pytorch_model.bin", "pytorch_model.bin.index.json", "consolidated.00.pth"):
        if (d / name).is_file():
            raise LlamaFormatError(
                f"{str(d)!r} has {name} (PyTorch pickle) but no model.safetensors; convert it once with "
                "transformers: LlamaForCausalLM.from_pretrained(d).save_pretrained(d, safe_serialization=True)")
    raise FileNotFoundError(f"no {WEIGHTS} or {INDEX} in {str(d)!r} (found: {listing(d)})")


def load_llama(path, device: str = "cpu", dropout: float | None = None) -> Llama:
    """A :class:`~tinygrad_llm.llama.Llama` (float32, eval mode) from a Hugging Face Llama folder.

    ``path`` holds config.json and model.safetensors (or a sharded checkpoint with its
    index). ``dropout`` overrides attention_dropout (used only when training). Errors:
    FileNotFoundError for missing files, :class:`LlamaFormatError` for a config we cannot
    represent (every unsupported key listed), PyTorch pickles only, a corrupt file, and
    missing, unknown or mis-shaped tensors (all of them, before anything is copied).
    """
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{str(d)!r} is not a folder; expected a Hugging Face Llama folder holding "
                                "config.json and model.safetensors")
    device = backend.canonical_device(device)
    hf = read_config(d, "a Hugging Face Llama folder", LlamaFormatError)
    if dropout is not None and isinstance(hf, dict):
        hf = {**hf, "attention_dropout": dropout}
    cfg = config_from_llama(hf)
    files = _weight_files(d)
    opened = {f: open_safetensors(f, LlamaFormatError) for f in sorted(set(files.values()))}

    model = Llama(cfg).to(device).eval()
    params = model.state_dict(keep_vars=True)          # our name -> Parameter (lm_head too, when tied)
    tied, plan, problems = cfg.tie_weights, [], []
    for key, path_ in files.items():
        f = opened[path_]
        if key not in f:
            problems.append(f"{key!r} is listed for {path_.name} but is not in it")
        elif IGNORED.match(key) or (tied and key == "lm_head.weight"):
            continue                                   # (a tied lm_head is checked against the embedding below)
        elif key not in params:
            problems.append(f"unexpected tensor {key!r}")
        elif check_tensor(f, key, params[key].shape, problems):
            plan.append((f, path_, key, key, False))
    report_problems(params, files, tied, problems, f"the weights in {str(d)!r}", LlamaFormatError)
    if tied and "lm_head.weight" in files:
        emb, lm = Llama.embedding_name, "lm_head.weight"
        check_tie((opened[files[lm]], files[lm], lm), (opened[files[emb]], files[emb], emb), emb, f"{str(d)!r}",
                  LlamaFormatError)
    for f in opened.values():
        f.close()
    copy_tensors(params, plan, device, LlamaFormatError)
    return model


# ---------------------------------------------------------------------------- save
def _shards(tensors: dict, max_bytes: int | None) -> list:
    """The tensors cut into consecutive groups of at most ``max_bytes`` (a larger tensor alone)."""
    groups, size = [[]], 0
    for name, arr in tensors.items():
        if max_bytes is not None and groups[-1] and size + arr.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += arr.nbytes
    return groups


def save_llama(model: Llama, path, tokenizer=None, max_shard_size: int | None = None,
               bos_token_id: int | None = None, eos_token_id: int | None = None) -> list:
    """Write ``model`` as a Hugging Face ``LlamaForCausalLM`` folder ``path``; returns the files written.

    config.json, and model.safetensors or, when the weights exceed ``max_shard_size`` bytes,
    shards ``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json``; a
    tied lm_head is stored once (as the embedding). With ``tokenizer`` (a BPE tokenizer) its
    tokenizer.json too. ``bos_token_id``/``eos_token_id`` go into config.json (transformers'
    generate stops at eos). Each file is written to a temporary name and renamed into
    place; weight files of an earlier save in that folder that this one does not write
    (the other layout, surplus shards) are removed afterwards, so the folder holds one model.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"save_llama needs a Llama, got {type(model).__name__} (GPT-2 models: save_gpt2)")
    if max_shard_size is not None and (isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int)
                                       or max_shard_size <= 0):
        raise ValueError(f"max_shard_size must be a positive number of bytes or None, got {max_shard_size!r}")
    cfg = model.config
    tensors = {k: backend.to_numpy(t.data) for k, t in model.state_dict().items()
               if not (cfg.tie_weights and k == "lm_head.weight")}
    dtype = tensors[Llama.embedding_name].dtype
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    groups = _shards(tensors, max_shard_size)
    written = []
    if len(groups) == 1:
        save_file(tensors, d / WEIGHTS, metadata={"format": "pt"})     # atomic itself
        written.append(WEIGHTS)
    else:
        weight_map = {}
        for i, names in enumerate(groups, 1):
            name = SHARD.format(i, len(groups))
            save_file({n: tensors[n] for n in names}, d / name, metadata={"format": "pt"})
            weight_map.update({n: name for n in names})
            written.append(name)
        index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))}, "weight_map": weight_map}
        write_bytes_atomic(d / INDEX, (json.dumps(index, indent=2) + "\n").encode("utf-8"))
        written.append(INDEX)
    hf = config_to_llama(cfg, np.dtype(dtype).name, bos_token_id, eos_token_id)
    write_bytes_atomic(d / "config.json", (json.dumps(hf, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    written.append("config.json")
    if tokenizer is not None:
        tokenizer.save(d / "tokenizer.json")
        written.append("tokenizer.json")
    for p in d.iterdir():                              # an earlier save's other weight files
        if (p.name in (WEIGHTS, INDEX) or SHARD_RE.match(p.name)) and p.name not in written:
            p.unlink()
    return written


# ---------------------------------------------------------------------------- tokenizer
def _sentencepiece_signs(obj: dict) -> list:
    """What marks a tokenizer.json as SentencePiece-style (byte fallback, "▁" for spaces)."""
    text = json.dumps({k: obj.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}, ensure_ascii=False)
    model = obj.get("model") if isinstance(obj.get("model"), dict) else {}
    signs = []
    if model.get("type") not in (None, "BPE"):
        signs.append(f"a {model.get('type')} model")
    if model.get("byte_fallback"):
        signs.append("byte_fallback")
    if "Metaspace" in text or "\u2581" in text:
        signs.append("'\u2581' (Metaspace) for spaces")
    return signs


def load_llama_tokenizer(path):
    """The tokenizer of Llama folder ``path``: its tokenizer.json, a byte-level BPE (as SmolLM's).

    LlamaFormatError for a SentencePiece tokenizer (tokenizer.model only, or a tokenizer.json
    with byte fallback or "▁" for spaces, as TinyLlama's), naming what was found;
    FileNotFoundError when there is no tokenizer at all.
    """
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{str(d)!r} is not a folder; expected a Hugging Face Llama folder with tokenizer.json")
    f = d / "tokenizer.json"
    unsupported = ("only byte-level BPE tokenizers (GPT-2's kind, as SmolLM's tokenizer.json) are supported; "
                   "encode with the tokenizers library and pass token ids, or use another tokenizer")
    if not f.is_file():
        if (d / "tokenizer.model").is_file():
            raise LlamaFormatError(f"{str(d)!r} has a SentencePiece tokenizer.model but no tokenizer.json: "
                                   f"SentencePiece tokenizers are not supported; {unsupported}")
        raise FileNotFoundError(f"no tokenizer.json in {str(d)!r} (found: {listing(d)})")
    obj = read_json(f, LlamaFormatError)
    signs = _sentencepiece_signs(obj) if isinstance(obj, dict) else []
    if signs:
        raise LlamaFormatError(f"{str(f)!r} is a SentencePiece-style tokenizer ({', '.join(signs)}), which is "
                               f"not supported; {unsupported}")
    try:
        return load_tokenizer(f)
    except TokenizerFileError as e:
        raise LlamaFormatError(f"{e}; {unsupported}") from None


def looks_like_llama(config: dict) -> bool:
    """Whether a config.json (as a dict) describes a Llama rather than a GPT-2."""
    return isinstance(config, dict) and (config.get("model_type") == "llama" or any(
        "Llama" in str(a) for a in config.get("architectures") or []))

