"""Shared test setup.

Hypothesis profiles (pick with the environment variable TINYGRAD_LLM_PROFILE):
  ci    (default) derandomized and bounded, so CI is repeatable and quick;
  long  many more examples, random seeds: for local runs before a release.

Devices: the ``device`` fixture runs a test on "cpu", and also on "gpu" when CuPy and a
CUDA device are present (skipped cleanly otherwise). TINYGRAD_LLM_TEST_DEVICE=gpu runs
only the GPU half (for the GPU machine); =cpu only the CPU half.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", max_examples=400, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("TINYGRAD_LLM_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
#: a small text for training tests: 28 distinct characters, no newline
FOX_TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def _gpu_ok() -> bool:
    from tinygrad_llm import gpu_available
    return gpu_available()


def _devices():
    only = os.environ.get("TINYGRAD_LLM_TEST_DEVICE", "").lower()
    cpu = pytest.param("cpu", id="cpu")
    gpu = pytest.param("gpu", id="gpu", marks=pytest.mark.skipif(
        not _gpu_ok(), reason="needs CuPy and a CUDA device"))
    if only in ("gpu", "cuda"):
        return [gpu]
    if only == "cpu":
        return [cpu]
    return [cpu, gpu]


@pytest.fixture(params=_devices())
def device(request):
    """The device a test runs on: "cpu", or "gpu" when one is present."""
    return request.param


def to_np(a):
    """A host numpy copy of a numpy/cupy array or Tensor."""
    from tinygrad_llm import Tensor
    if isinstance(a, Tensor):
        return a.numpy()
    return a if isinstance(a, np.ndarray) else a.get()


@pytest.fixture
def shakespeare_path():
    if not SHAKESPEARE.exists():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE}")
    return SHAKESPEARE


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch on one thread for a test module's tiny models: its intra-op threads only spin
    (seconds per step on a busy 2-core machine). Restores the previous count afterwards."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fox_data(tmp_path, monkeypatch):
    """FOX_TEXT as a char-tokenized dataset, with the cache in tmp_path."""
    from tinygrad_llm.data import load_text_dataset
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "fox.txt"
    f.write_text(FOX_TEXT)
    return load_text_dataset(f, "char")


def write_tiny_tokenizer(d):
    """GPT-2 tokenizer files (vocab.json, merges.txt) in folder ``d``: the 256 byte tokens,
    seven merges (hello, world), and <|endoftext|>; 264 tokens."""
    from tinygrad_llm.tokenizer import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("\u0120", "w"), ("o", "r"), ("\u0120w", "or"), ("hell", "o")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


@pytest.fixture(params=["reference", "fast"])
def tier(request):
    """Runs a test on both tiers: "reference" (the plain math of tinygrad_llm/ops/) and
    "fast" (the kernels of tinygrad_llm/kernels/ where one exists for the device)."""
    from tinygrad_llm import reference_tier
    with reference_tier(request.param == "reference"):
        yield request.param
