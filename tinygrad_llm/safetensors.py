"""Read and write the safetensors format, with no dependency beyond NumPy.

The format (https://github.com/huggingface/safetensors)::

    8 bytes         N, the header length, unsigned little-endian
    N bytes         JSON: {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
                           ..., "__metadata__": {str: str}}   (padded with spaces)
    rest            the tensors' raw little-endian bytes; offsets are relative to here

The byte buffer must be covered exactly by the tensors' ranges: no gaps, no overlaps.

    save_file({"w": np.ones((2, 3), np.float32)}, "model.safetensors", metadata={"step": "10"})
    arrays = load_file("model.safetensors")             # {"w": array(...)}, memory-mapped
    with SafetensorsFile("model.safetensors") as f:      # lazy: read only what you ask for
        f.keys(); f.metadata(); w = f.get("w")
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from . import backend
from .atomic import atomic_open
from .tensor import Tensor

__all__ = ["save_file", "load_file", "SafetensorsFile", "MAX_HEADER_SIZE"]

#: numpy dtype for each safetensors dtype name ("BF16" is special: stored as uint16)
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items() if k != "BF16"}
#: the same limit as the reference implementation: a header longer than this is refused
MAX_HEADER_SIZE = 100_000_000


# ---------------------------------------------------------------------------- writing

def _host_array(name, value) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if hasattr(value, "__cuda_array_interface__"):
        value = value.get()  # GPU -> host copy
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(f"tensor {name!r}: expected a numpy/cupy array or Tensor, got {type(value).__name__}")
    arr = np.asarray(value)
    little = arr.dtype.newbyteorder("<")
    if little not in _NAMES:
        raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors "
                        f"(supported: {', '.join(sorted(str(d) for d in _NAMES))})")
    return arr.astype(little, order="C", copy=False)  # (np.ascontiguousarray would make 0-d 1-d)


def save_file(tensors: dict, path, metadata: dict | None = None):
    """Write ``{name: array or Tensor}`` to ``path`` atomically (temp file, fsync, rename).

    ``metadata`` is an optional ``{str: str}`` stored under ``"__metadata__"``. GPU arrays are
    copied to the host. If anything fails, an existing file at ``path`` is left untouched.
    """
    if not isinstance(tensors, dict):
        raise TypeError(f"save_file expects a dict of name -> array, got {type(tensors).__name__}")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise TypeError("metadata must be a dict of str -> str")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor names must be non-empty strings other than '__metadata__', got {name!r}")
        arrays[name] = _host_array(name, value)

    # as the reference writer: larger alignment first, then by name, so every tensor is aligned
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": _NAMES[a.dtype],
                        "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # so the data starts 8-byte aligned

    with atomic_open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for name in order:
            a = arrays[name]
            if a.nbytes:
                f.write(a.reshape(-1).view(np.uint8))


# ---------------------------------------------------------------------------- reading

def _read_header(path: str, file_size: int, f) -> tuple[dict, dict, int]:
    """Parse and validate the header: (tensor entries, metadata, start of the data)."""
    def bad(problem):
        return ValueError(f"{path}: not a valid safetensors file: {problem}")

    if file_size < 8:
        raise bad(f"the file is {file_size} bytes, shorter than the 8-byte header length (truncated?)")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_SIZE:
        raise bad(f"the header length is {n} bytes, more than the {MAX_HEADER_SIZE} allowed")
    if 8 + n > file_size:
        raise bad(f"the header length is {n} bytes but only {file_size - 8} bytes follow (truncated?)")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad(f"the header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("'__metadata__' must be an object of string values")

    data_len = file_size - 8 - n
    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise bad(f"tensor {name!r}: expected an object with 'dtype', 'shape' and 'data_offsets'")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise bad(f"tensor {name!r}: unknown or unsupported dtype {dtype!r} "
                      f"(supported: {', '.join(sorted(_DTYPES))})")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise bad(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise bad(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offs!r}")
        if offs[1] > data_len:
            raise bad(f"tensor {name!r}: data_offsets {offs} run past the end of the data "
                      f"({data_len} bytes; truncated?)")
        nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if offs[1] - offs[0] != nbytes:
            raise bad(f"tensor {name!r}: shape {shape} of {dtype} needs {nbytes} bytes, "
                      f"data_offsets {offs} hold {offs[1] - offs[0]}")
        entries[name] = (dtype, tuple(shape), offs[0], offs[1])

    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < end:
            raise bad(f"tensor {name!r}: data_offsets [{begin}, {stop}] overlap the previous tensor's (ending at {end})")
        if begin > end:
            raise bad(f"tensor {name!r}: a gap of {begin - end} bytes before its data at {begin}")
        end = stop
    if end != data_len:
        raise bad(f"the tensors cover {end} bytes of data but {data_len} follow the header")
    return entries, metadata, 8 + n


def _decode(dtype: str, raw: np.ndarray, shape) -> np.ndarray:
    """Raw little-endian bytes (uint8) as an array; BF16 becomes float32 (bits << 16)."""
    if dtype == "BF16":
        out = np.empty(shape, dtype=np.float32)
        out.view(np.uint32)[...] = raw.view("<u2").reshape(shape).astype(np.uint32) << 16
        return out
    return raw.view(_DTYPES[dtype]).reshape(shape)


class SafetensorsFile:
    """Lazy access to a safetensors file: the header is read at once, tensors on ``get``.

    ``get(name)`` returns a read-only NumPy view of the memory-mapped file (no copy; the OS
    pages it in as it is used), except BF16 tensors, which are converted to a new float32
    array. ``mmap=False`` reads each tensor into a new writable array instead.
    """

    def __init__(self, path, mmap: bool = True):
        self.path = os.fspath(path)
        self._mmap_ok = mmap
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._entries, self._metadata, self._data_start = _read_header(self.path, size, f)
        self._map = None

    def keys(self) -> list:
        return list(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self):
        return len(self._entries)

    def metadata(self) -> dict:
        return dict(self._metadata)

    def dtype(self, name: str) -> str:
        """The stored dtype name ("F32", "BF16", ...)."""
        return self._entry(name)[0]

    def shape(self, name: str) -> tuple:
        return self._entry(name)[1]

    def _entry(self, name):
        if name not in self._entries:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return self._entries[name]

    def get(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self._entry(name)
        if not self._mmap_ok:
            with open(self.path, "rb") as f:
                f.seek(self._data_start + begin)
                raw = np.frombuffer(bytearray(f.read(end - begin)), dtype=np.uint8)
            return _decode(dtype, raw, shape)
        if end == begin:
            return np.empty(shape, dtype=np.float32 if dtype == "BF16" else _DTYPES[dtype])
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start = self._data_start + begin
        return _decode(dtype, np.asarray(self._map[start:self._data_start + end]), shape)

    def close(self):
        """Drop this object's reference to the mapping (arrays already returned stay valid)."""
        self._map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"SafetensorsFile({self.path!r}, {len(self._entries)} tensors)"


def load_file(path, device: str = "cpu", mmap: bool = True) -> dict:
    """``{name: array}`` for every tensor in the file (numpy on "cpu", cupy on a GPU).

    On the CPU with ``mmap=True`` the arrays are read-only views of the memory-mapped file;
    ``mmap=False`` gives writable in-memory copies. BF16 tensors come back as float32.
    """
    device = backend.canonical_device(device)
    f = SafetensorsFile(path, mmap=mmap)
    out = {name: f.get(name) for name in f.keys()}
    if device != "cpu":
        xp = backend.xp_for(device)
        out = {k: xp.asarray(v) for k, v in out.items()}
    return out
