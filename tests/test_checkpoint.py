"""Checkpoints: the crash-safe swap, cleanup of what killed runs leave, checksums, strict JSON,
permissions, and refusing to write weights that hold NaN or inf."""
import errno
import json
import os
import shutil
import stat

import numpy as np
import pytest

import tinygrad_llm as tg
import tinygrad_llm.checkpoint as C
from tinygrad_llm import GPT, GPTConfig
from tinygrad_llm.checkpoint import CheckpointError, NonFiniteWeightsError, clean_stale, load_checkpoint, \
    save_checkpoint
from tinygrad_llm.tokenizer import CharTokenizer

STEPS = ["restore old", "discard old", "target -> old", "tmp -> target", "discard replaced", "delete trash"]


class Crash(BaseException):
    """A kill at a step of the swap (BaseException: nothing may catch it)."""


@pytest.fixture
def model():
    tg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4))


def save_or_crash(root, model, it, point, snapshot, monkeypatch):
    """save_checkpoint(iter=it) into root; if the swap reaches `point`, copy root to `snapshot`
    there (what the disk holds when the process is killed at that point) and stop.
    Returns the folder that holds the state afterwards."""
    def hook(name):
        if name == point:
            shutil.copytree(root, snapshot, symlinks=True)
            raise Crash
    monkeypatch.setattr(C, "fault_hook", hook)
    try:
        save_checkpoint(root, "latest", model, trainer_state={"iter": it})
    except Crash:
        return snapshot
    finally:
        monkeypatch.setattr(C, "fault_hook", None)
    return root


def loaded_iter(root):
    return load_checkpoint(root / "latest").trainer_state["iter"]


def test_no_two_crashes_in_a_row_leave_no_loadable_checkpoint(model, tmp_path, monkeypatch):
    base = tmp_path / "base"
    save_checkpoint(base, "latest", model, trainer_state={"iter": 1})
    for i, p1 in enumerate(STEPS + [None]):
        first = tmp_path / f"a{i}"
        shutil.copytree(base, first)
        after1 = save_or_crash(first, model, 2, p1, tmp_path / f"a{i}-killed", monkeypatch)
        it1 = loaded_iter(after1)
        assert it1 in (1, 2), (p1, it1)
        for j, p2 in enumerate(STEPS + [None]):
            second = tmp_path / f"b{i}-{j}"
            shutil.copytree(after1, second)
            after2 = save_or_crash(second, model, 3, p2, tmp_path / f"b{i}-{j}-killed", monkeypatch)
            it2 = loaded_iter(after2)
            assert it2 in (it1, 3), (p1, p2, it1, it2)
            clean_stale(after2)                      # the next start
            assert loaded_iter(after2) == it2 and sorted(os.listdir(after2)) == ["latest"], (p1, p2)
            if p2 is None:
                assert it2 == 3


def test_stale_temporary_files_are_removed_on_the_next_start(model, tmp_path):
    save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 5})
    save_checkpoint(tmp_path, "best", model, trainer_state={"iter": 4})
    (tmp_path / ".latest.tmp-k1ll3d").mkdir()
    (tmp_path / ".latest.tmp-k1ll3d" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".trash-best-12345678").mkdir()
    (tmp_path / ".history.csv.abc123.tmp").write_text("iter,")
    shutil.copytree(tmp_path / "best", tmp_path / ".best.old")     # a swap killed after its rename
    (tmp_path / "notes.txt").write_text("mine")                    # the user's own file stays
    removed = clean_stale(tmp_path)
    assert sorted(removed) == [".history.csv.abc123.tmp", ".latest.tmp-k1ll3d", ".trash-best-12345678"]
    assert sorted(os.listdir(tmp_path)) == ["best", "latest", "notes.txt"]
    assert loaded_iter(tmp_path) == 5


def test_weights_with_nan_or_inf_are_never_written(model, tmp_path):
    save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 1})
    before = (tmp_path / "latest" / "model.safetensors").read_bytes()
    model.transformer.h[0].mlp.c_fc.weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteWeightsError, match=r"NaN or inf \(first in transformer.h.0.mlp.c_fc.weight\)"
                       r".*previous checkpoint .*latest is kept"):
        save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 2})
    assert (tmp_path / "latest" / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["latest"]


def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(model, tmp_path, monkeypatch):
    save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 1})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(C.safetensors, "save_file", full)
    with pytest.raises(CheckpointError, match=r"cannot write .*latest/model.safetensors: the disk is full; "
                                              r"the previous checkpoint .*latest is kept"):
        save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 2})
    assert loaded_iter(tmp_path) == 1 and sorted(os.listdir(tmp_path)) == ["latest"]


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, match", [
    ("model.safetensors", flip_last_byte, "model.safetensors does not match its sha256"),
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-8]), "model.safetensors has .* bytes"),
    ("trainer_state.json", lambda p: p.unlink(), "trainer_state.json is missing"),
    ("trainer_state.json", lambda p: p.write_text(p.read_text()[:10]), "trainer_state.json has .* bytes"),
    ("tokenizer.json", lambda p: p.unlink(), "tokenizer.json is missing"),
    ("tokenizer.json", lambda p: p.write_text(p.read_text()[:10]), "tokenizer .* cannot be read"),
    ("tokenizer.json", lambda p: CharTokenizer.from_text("abcdefgh").save(p),
     "tokenizer.json does not belong to this model: it is char-.*, the model was trained with char-"),
])
def test_damaged_files_are_reported_on_load(model, tmp_path, name, damage, match):
    save_checkpoint(tmp_path, "latest", model, model.configure_optimizers(0.1, 1e-3), {"iter": 1}, {},
                    CharTokenizer.from_text("hello wd"))
    damage(tmp_path / "latest" / name)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "latest")


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.unlink(), "optimizer.safetensors is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-9]), "optimizer.safetensors has .* bytes, .* were written"),
])
def test_damaged_optimizer_state_is_reported(model, tmp_path, damage, match):
    save_checkpoint(tmp_path, "latest", model, model.configure_optimizers(0.1, 1e-3), {"iter": 1})
    damage(tmp_path / "latest" / "optimizer.safetensors")
    ck = load_checkpoint(tmp_path / "latest")
    with pytest.raises(CheckpointError, match=match):
        ck.load_optimizer(ck.model.configure_optimizers(0.1, 1e-3))


def strict_json(path):
    def refuse(name):
        raise ValueError(f"{path.name} holds {name}, which is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_every_json_file_is_strict_json_and_nan_is_refused(model, tmp_path):
    path = save_checkpoint(tmp_path, "latest", model, model.configure_optimizers(0.1, 1e-3),
                           {"iter": 1, "best_val_loss": None}, {"lr": 1e-3}, CharTokenizer.from_text("hello wd"))
    for f in path.glob("*.json"):
        strict_json(f)
    meta = strict_json(path / "config.json")
    assert sorted(meta["files"]) == ["model.safetensors", "optimizer.safetensors", "tokenizer.json",
                                     "trainer_state.json"]
    assert meta["tokenizer"] == {"fingerprint": CharTokenizer.from_text("hello wd").fingerprint(), "vocab_size": 7}
    with pytest.raises(CheckpointError, match="trainer_state.json.*Out of range float values"):
        save_checkpoint(tmp_path, "latest", model, trainer_state={"iter": 2, "best_val_loss": float("inf")})
    assert loaded_iter(tmp_path) == 1


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_checkpoint_files_all_get_the_same_permissions(model, tmp_path):
    old = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path, "latest", model, model.configure_optimizers(0.1, 1e-3), {"iter": 1}, {},
                               CharTokenizer.from_text("hello wd"))
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()}
    assert set(modes.values()) == {0o640}, modes
    assert stat.S_IMODE(path.stat().st_mode) == 0o750


def test_saved_arch_reads_config_json_alone_and_finds_an_interrupted_swap(tmp_path, model):
    from tinygrad_llm import Llama, LlamaConfig
    llama = Llama(LlamaConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_kv_head=1, n_embd=8))
    C.save_checkpoint(tmp_path, "latest", llama)
    C.save_checkpoint(tmp_path, "best", model)
    assert (C.saved_arch(tmp_path / "latest"), C.saved_arch(tmp_path / "best")) == ("llama", "gpt")
    os.rename(tmp_path / "latest", tmp_path / ".latest.old")       # as a swap killed half way leaves it
    assert C.saved_arch(tmp_path / "latest") == "llama"
    assert C.saved_arch(tmp_path / "nothing") is None
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert C.saved_arch(tmp_path / "hf") is None                    # not a checkpoint of ours
