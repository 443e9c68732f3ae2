"""Writing files whole or not at all: a temp file beside the target, then a rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_open", "write_bytes_atomic", "default_mode", "fsync_dir"]


def _umask() -> int:
    try:  # Linux 4.7+: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permissions ``open()`` (or ``mkdir``) would give a new file (directory): 0o666
    (0o777) less the umask. Temp files start private (0o600); they get this before the rename."""
    return (0o777 if directory else 0o666) & ~_umask()


def fsync_dir(path) -> None:
    """Make renames inside the directory ``path`` durable (POSIX; a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Yield a file open on a temp file in ``path``'s folder. On a clean exit it is flushed,
    fsynced and renamed over ``path`` (with the permissions a plain ``open()`` would give);
    on an error it is deleted and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)
