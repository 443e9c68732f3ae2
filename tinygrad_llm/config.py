"""What the package's dataclass configs (``GPTConfig``, ``LlamaConfig``, ``TrainConfig``) share.

    cfg = config_from_dict(TrainConfig, {"batch_size": 8})   # unknown keys are an error
    class GPTConfig(DictConfig): ...                          # from_dict, to_dict, to_json
"""
from __future__ import annotations

import dataclasses
import json

__all__ = ["config_from_dict", "DictConfig"]


def config_from_dict(cls, d: dict):
    """Build dataclass ``cls`` from ``d``; unknown keys are an error that lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**d)


class DictConfig:
    """``from_dict`` (unknown keys are an error), ``to_dict`` and ``to_json`` for a dataclass config."""

    @classmethod
    def from_dict(cls, d: dict):
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
