"""The package's model architectures by name: what checkpoints record and ``--arch`` chooses.

    ARCHITECTURES            {"gpt": GPT, "llama": Llama}
    model_class("llama")     Llama (its config class: Llama.config_class)
"""
from __future__ import annotations

from .llama import Llama
from .model import GPT

__all__ = ["ARCHITECTURES", "model_class"]

ARCHITECTURES = {GPT.arch: GPT, Llama.arch: Llama}


def model_class(arch: str):
    """The model class named ``arch``; ValueError naming the known ones otherwise."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]
