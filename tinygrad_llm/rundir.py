"""A training run's output folder: one run writes to it at a time, and a new run never
replaces an old one without being asked.

    with lock_run_dir("out/run"):          # a second process gets RunDirError until this ends
        check_fresh("out/run", overwrite=False)   # RunExistsError if a run is there already

The lock is an OS file lock (``flock``) on ``<out>/.lock``: the OS releases it when the
process ends, however it ends, so a crashed or killed run never leaves it stuck. The file
holds the pid and start time of the holder, for the message. Within one process the lock
is re-entrant (the script takes it before loading data, the training loop again).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

from .checkpoint import CHECKPOINT_NAMES, discard

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["RunDirError", "RunExistsError", "lock_run_dir", "check_fresh", "run_files"]

LOCK_NAME = ".lock"
RUN_FILES = ("history.csv", "loss.png")


class RunDirError(ValueError):
    """The output folder cannot be used: not a folder, not writable, or in use."""


class RunExistsError(RunDirError):
    """The output folder already holds a run, and neither resuming nor overwriting was asked."""


_held: dict = {}          # resolved folder -> [open lock file, depth]


def _try_lock(f) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _unlock(f) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        else:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    except OSError:
        pass


def _usable_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output folder {str(out)!r} is a file; give a folder (it is created if needed)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"output folder {str(out)!r} cannot be created: a part of the path is a file") from None
    except OSError as e:
        raise RunDirError(f"output folder {str(out)!r} cannot be created: {e.strerror or e}") from None


class lock_run_dir:
    """Context manager: hold the run lock of ``out_dir`` (created if needed, and removed again
    if nothing but the lock was put in it). RunDirError if the folder is not usable or another
    process holds the lock."""

    def __init__(self, out_dir):
        self.out = Path(out_dir)
        self.key = None

    def __enter__(self):
        self.created = not self.out.exists()
        _usable_folder(self.out)
        key = os.path.realpath(self.out)
        if key in _held:
            _held[key][1] += 1
            self.key = key
            return self
        path = self.out / LOCK_NAME
        try:
            f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        except OSError as e:
            raise RunDirError(f"cannot write to output folder {str(self.out)!r}: {e.strerror or e}") from None
        if not _try_lock(f):
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise RunDirError(f"output folder {str(self.out)!r} is in use by another training ({holder}); "
                              "wait for it to finish, stop it, or choose another output folder")
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
                    f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
            f.flush()
        except OSError as e:
            _unlock(f)
            f.close()
            raise RunDirError(f"cannot write to output folder {str(self.out)!r}: {e.strerror or e}") from None
        _held[key] = [f, 1]
        self.key = key
        return self

    def __exit__(self, *exc):
        entry = _held.get(self.key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.key]
                _unlock(entry[0])
                entry[0].close()
                self._remove_if_unused()
        return False

    def _remove_if_unused(self):
        """A folder this lock created and nothing else used (the run stopped on bad input)
        is removed again."""
        try:
            if self.created and os.listdir(self.out) == [LOCK_NAME]:
                (self.out / LOCK_NAME).unlink()
                self.out.rmdir()
        except OSError:
            pass


def run_files(out_dir) -> list[str]:
    """The names of a previous run's files in ``out_dir`` (checkpoints, history, plot)."""
    out = Path(out_dir)
    names = [n for n in CHECKPOINT_NAMES if (out / n).exists() or (out / f".{n}.old").exists()]
    return names + [n for n in RUN_FILES if (out / n).exists()]


def _describe(out: Path, names: list) -> str:
    parts = []
    for n in names:
        if n in CHECKPOINT_NAMES:
            try:  # just the iteration, without loading the weights
                st = json.loads((out / n / "trainer_state.json").read_text(encoding="utf-8"))
                parts.append(f"{n}/ at iteration {int(st['iter'])}")
                continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
            parts.append(f"{n}/")
        else:
            parts.append(n)
    return ", ".join(parts)


def check_fresh(out_dir, overwrite: bool = False) -> list[str]:
    """Before a new (not resumed) run: RunExistsError if ``out_dir`` holds a previous run's
    files, unless ``overwrite``, in which case they are deleted. Returns what was deleted."""
    out = Path(out_dir)
    names = run_files(out)
    if not names:
        return []
    if not overwrite:
        raise RunExistsError(
            f"{str(out)!r} already holds a training run ({_describe(out, names)}); nothing was changed. "
            "Continue it with --resume, start over with --overwrite (deletes it), or choose another --out")
    for n in names:
        for p in (out / n, out / f".{n}.old"):
            if p.is_dir():
                discard(p)
            elif p.exists():
                p.unlink()
    return names
