"""What the package's dataclass configs (``GPTConfig``, ``TrainConfig``) share.

    cfg = config_from_dict(TrainConfig, {"batch_size": 8})   # unknown keys are an error
"""
from __future__ import annotations

import dataclasses

__all__ = ["config_from_dict"]


def config_from_dict(cls, d: dict):
    """Build dataclass ``cls`` from ``d``; unknown keys are an error that lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**d)
