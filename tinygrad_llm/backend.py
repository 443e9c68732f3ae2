"""The backend switch: which array library (``xp``) a device uses.

``"cpu"`` -> NumPy. ``"gpu"``, ``"cuda"`` and ``"cuda:N"`` -> CuPy, on CUDA device N.
Everything else in the package is written once against ``xp`` (the array API that
NumPy and CuPy share), and asks this module which one to use::

    xp = backend.xp_for(tensor.device)

Device names are canonicalised: ``"cpu"`` stays ``"cpu"``; the GPU names become
``"cuda:N"`` (``"gpu"`` and ``"cuda"`` mean ``"cuda:0"``).

The first use of a GPU runs a tiny elementwise op, a matrix product (cuBLAS) and a random
draw (cuRAND) there, so that a CuPy without its CUDA libraries is reported at once, as a
``DeviceError`` that says how to fix it, not later as an ImportError deep inside training.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

__all__ = [
    "DeviceError", "ArgumentError", "ShapeError", "DtypeError", "canonical_device", "xp_for", "device_of_array",
    "gpu_available", "manual_seed", "rng", "reseed_from_cpu", "fixed_rng", "get_rng_state", "set_rng_state",
    "rng_replayer", "swap_rng", "to_numpy", "as_array", "scatter_add", "quiet", "data_ptr", "default_dtype",
    "canonical_dtype", "set_tf32", "tf32_enabled", "tf32",
]

#: what to install for a working CuPy (the CUDA 12 wheel with its CUDA libraries)
INSTALL_HINT = "pip install 'tinygrad_llm[gpu]' (CuPy for CUDA 12 with its CUDA libraries: cupy-cuda12x[ctk])"


class DeviceError(RuntimeError):
    """A device was asked for that cannot be used, or two devices were mixed."""


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value that PyTorch refuses with a RuntimeError (an invalid distribution
    for multinomial, a class index out of range for one_hot, ...). A ValueError, and also a
    RuntimeError: ``except ValueError`` and PyTorch users' ``except RuntimeError`` both catch it."""


class ShapeError(ArgumentError):
    """Shapes that do not fit an op (broadcasting, a matrix product, reshape, cat, ...); a
    ValueError and a RuntimeError (PyTorch's class for the same mistake)."""


class DtypeError(TypeError, RuntimeError):
    """Dtypes that an op does not accept together (float32 with float64 in a matrix
    product, a gradient for an integer tensor, ...). A TypeError, and also a RuntimeError,
    the class PyTorch raises for the same mistake."""


_cupy = None          # the cupy module once imported
_cupy_error = None    # why importing it failed, if it did


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy  # noqa: PLC0415 (optional dependency)
            _cupy = cupy
        except Exception as e:  # ImportError, or a broken CUDA install
            _cupy_error = e
    return _cupy


def canonical_device(device) -> str:
    """``"cpu"`` or ``"cuda:N"`` for any accepted device name; ValueError otherwise."""
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'gpu', got {device!r}")
    d = device.strip().lower()
    if d == "cpu":
        return "cpu"
    if d in ("gpu", "cuda"):
        return "cuda:0"
    for prefix in ("cuda:", "gpu:"):
        if d.startswith(prefix) and d[len(prefix):].isdigit():
            return f"cuda:{int(d[len(prefix):])}"
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'gpu', 'cuda' or 'cuda:N'")


def _check_gpu(device: str):
    """Return cupy for a ``cuda:N`` device, or raise a DeviceError saying what is missing."""
    cp = _import_cupy()
    if cp is None:
        raise DeviceError(
            f"device {device!r} needs CuPy, which is not installed ({_cupy_error}). "
            f"Install it with: {INSTALL_HINT}, or the cupy wheel that matches your CUDA; or use device='cpu'.")
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise DeviceError(
            f"device {device!r}: CuPy is installed but no CUDA device could be reached ({e}). "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use device='cpu'.") from None
    index = int(device.split(":")[1])
    if n == 0:
        raise DeviceError(
            f"device {device!r}: CuPy is installed but found no CUDA device. "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use device='cpu'.")
    if index >= n:
        raise DeviceError(f"device {device!r}: only {n} CUDA device(s) present (cuda:0..cuda:{n - 1})")
    _smoke_test(cp, device, index)
    return cp


def _smoke_test(cp, device: str, index: int):
    """Run an elementwise op, a matmul and a random draw on the device once, and wait for them:
    each needs a different part of CUDA (the runtime and NVRTC, cuBLAS, cuRAND), and CuPy loads
    them only when first used."""
    try:
        with cp.cuda.Device(index):
            a = cp.arange(4, dtype=cp.float32).reshape(2, 2) * 2 + 1     # elementwise kernels
            b = a @ a                                                       # cuBLAS
            r = cp.random.default_rng(0).random(4, dtype=cp.float32)        # cuRAND
            cp.asnumpy(b.sum() + r.sum())                                   # wait: report any error here
    except Exception as e:  # ImportError (a CUDA library missing), CUDARuntimeError, CompileException, ...
        raise DeviceError(
            f"device {device!r}: CuPy {getattr(cp, '__version__', '')} is installed but cannot run on it "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}). "
            f"Usually a CUDA library is missing; install CuPy with them: {INSTALL_HINT}; "
            "or use device='cpu'.") from None
    _apply_tf32(cp)


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device answers and runs a first computation."""
    try:
        _check_gpu("cuda:0")
        return True
    except DeviceError:
        return False


_checked_gpus: dict = {}    # device -> the CuPy module that passed the checks on it


def xp_for(device: str):
    """The array module for a canonical device name: numpy for 'cpu', cupy for 'cuda:N'."""
    if device == "cpu":
        return np
    if _checked_gpus.get(device) is not _cupy or _cupy is None:   # checked once per device (and CuPy)
        _check_gpu(device)
        _checked_gpus[device] = _cupy
    cp = _cupy
    index = int(device.split(":")[1])
    if cp.cuda.runtime.getDevice() != index:
        cp.cuda.Device(index).use()
    return cp


def device_of_array(a) -> str:
    """The canonical device an array lives on."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return "cpu"
    cp = _import_cupy()
    if cp is not None and isinstance(a, cp.ndarray):
        return f"cuda:{a.device.id}"
    raise TypeError(f"expected a numpy or cupy array, got {type(a).__name__}")


def data_ptr(a) -> int:
    """The address of a numpy or cupy array's first element (to tell how views lie in a buffer)."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return a.data.ptr


def to_numpy(a) -> np.ndarray:
    """A host (NumPy) copy of a numpy or cupy array (or of a NumPy scalar, as a 0-d array)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np.array(a)
    return a.get()


def as_array(value, device: str, dtype=None):
    """``value`` (a numpy or cupy array, a NumPy scalar, a list, a Python number) as an array
    on ``device`` (a canonical name), converted to ``dtype`` when one is given: a host copy
    of a CuPy array for "cpu", a device copy of host data for "cuda:N", the array itself
    when it is already there (and of that dtype)."""
    if device == "cpu":
        if not isinstance(value, (np.ndarray, np.generic)) and hasattr(value, "__cuda_array_interface__"):
            value = value.get()
        return np.asarray(value, dtype=dtype)
    return xp_for(device).asarray(value, dtype=dtype)


def quiet(xp, **kinds):
    """A context that silences NumPy's floating-point warnings in a block: all of them, or the
    kinds given (``quiet(xp, over="ignore")``). For the overflows and 0/0s that a formula
    expects and turns into the right value; CuPy warns about none, so there it does nothing."""
    if xp is np:
        return np.errstate(**(kinds or {"all": "ignore"}))
    return contextlib.nullcontext()


def scatter_add(xp, target, index, values):
    """``target[index] += values`` with repeated indices summed (unbuffered), in place."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx  # noqa: PLC0415 (optional dependency: CuPy, only on a GPU device)
        cupyx.scatter_add(target, index, values)
    return target


# ----------------------------------------------------------------------------- dtypes

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
           "half": np.float16, "float": np.float32, "double": np.float64,
           "int32": np.int32, "int64": np.int64, "long": np.int64, "bool": np.bool_,
           "uint8": np.uint8, "int8": np.int8, "int16": np.int16}

default_dtype = np.dtype(np.float32)


def canonical_dtype(dtype) -> np.dtype:
    """A numpy dtype from a dtype, a type or a name ('float32', 'half', ...)."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
        return np.dtype(_DTYPES[dtype])
    try:
        return np.dtype(dtype)
    except TypeError:
        raise ValueError(f"unknown dtype {dtype!r}") from None


def split_to_args(device, dtype):
    """The arguments of ``.to(x)`` as (canonical device or None, dtype or None): ``x`` may be
    a device name or a dtype (``t.to("cuda")``, ``t.to("float16")``, ``t.to(np.float64)``)."""
    if isinstance(device, (np.dtype, type)) or (isinstance(device, str) and dtype is None
                                                and device.lower() in _DTYPES):
        device, dtype = None, device
    device = None if device is None else canonical_device(device)
    dtype = None if dtype is None else canonical_dtype(dtype)
    return device, dtype


# ----------------------------------------------------------------------------- random state

_rngs: dict[str, object] = {}
_seed = None


def manual_seed(seed: int):
    """Seed every random generator the package uses (CPU, and each GPU when used)."""
    global _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _rngs.clear()


def rng(device: str = "cpu"):
    """The package's random generator for a device (numpy / cupy ``Generator``)."""
    g = _rngs.get(device)
    if g is None:
        if device == "cpu":
            g = np.random.default_rng(_seed)
        else:
            # a distinct but reproducible stream per GPU
            g = _device_generator(device, None if _seed is None else _seed + 1 + int(device.split(":")[1]))
        _rngs[device] = g
    return g


def _device_generator(device: str, seed):
    """A CuPy Generator on ``device``: Philox (its state is set up by one cheap kernel, so a new
    one per training step costs nothing), or CuPy's default where there is no Philox (the
    NumPy-backed stand-in used for testing)."""
    cp = xp_for(device)
    try:
        bits = cp.random.Philox4x3210(seed)
    except (AttributeError, NotImplementedError):
        return cp.random.default_rng(seed)
    return cp.random.Generator(bits)


def reseed_from_cpu(device: str) -> None:
    """Give ``device``'s generator a new seed derived from the CPU generator's state (nothing
    for "cpu"), without drawing from it.

    A CuPy generator's state cannot be saved, but the CPU generator's can (checkpoints do):
    the training loop calls this once per step on a GPU, so each step's dropout masks follow
    from the saved CPU state and a resumed run draws the same masks as one that never stopped.
    The CPU generator moves on every step (the batches are drawn from it), so every step gets
    a new seed; and since nothing is drawn here, a GPU run draws the same batches as a CPU run.
    """
    if device == "cpu":
        return
    words = []

    def collect(v):                      # every integer of the (nested) state, in a fixed order
        if isinstance(v, dict):
            for k in sorted(v):
                collect(v[k])
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            words.append(int(v) % (1 << 128))

    collect(rng("cpu").bit_generator.state)
    words.append(int(device.split(":")[1]))
    seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)
    _rngs[device] = _device_generator(device, seed)


@contextlib.contextmanager
def fixed_rng(device: str, seed: int):
    """A block in which ``rng(device)`` is a fresh generator seeded with ``seed``; the generator
    in use before comes back afterwards (the fast kernels' self-checks draw the same dropout
    masks twice this way, without disturbing the run's own stream)."""
    prev = _rngs.get(device)
    _rngs[device] = np.random.default_rng(seed) if device == "cpu" else _device_generator(device, seed)
    try:
        yield
    finally:
        if prev is None:
            _rngs.pop(device, None)
        else:
            _rngs[device] = prev


def get_rng_state() -> dict:
    """A JSON-serialisable snapshot of the CPU generator (for checkpoints; a GPU's generator
    is reseeded from it every training step, see :func:`reseed_from_cpu`)."""
    return {"seed": _seed, "cpu": rng("cpu").bit_generator.state}


def set_rng_state(state: dict):
    """Restore what :func:`get_rng_state` returned."""
    global _seed
    if not isinstance(state, dict) or "cpu" not in state:
        raise ValueError("rng state must be a dict as returned by get_rng_state()")
    _seed = state.get("seed")
    g = np.random.default_rng()
    g.bit_generator.state = state["cpu"]
    _rngs["cpu"] = g


def rng_replayer(device: str):
    """A function that returns, at each call, a new generator yielding what ``rng(device)``
    yields from now on (activation checkpointing replays its dropout masks with it).

    CPU: a copy of the generator's state, nothing is drawn. A GPU: CuPy's generators have no
    state that can be copied, so ``rng(device)`` is replaced now by a fresh generator seeded
    from the CPU generator, and the replays are seeded alike: they agree with it exactly,
    but its stream is not the one the GPU would have drawn without the call.
    """
    if device == "cpu":
        bits = rng("cpu").bit_generator
        state, kind = bits.state, type(bits)

        def replay():
            g = np.random.Generator(kind())
            g.bit_generator.state = state
            return g
        return replay
    seed = int(rng("cpu").integers(0, 2**63))
    _rngs[device] = _device_generator(device, seed)
    return lambda: _device_generator(device, seed)


def swap_rng(device: str, generator):
    """Make ``generator`` the package's generator for ``device``; returns the one it replaces."""
    previous = rng(device)
    _rngs[device] = generator
    return previous


# ----------------------------------------------------------------------------- TF32

_tf32 = False


def set_tf32(enabled: bool) -> None:
    """Let float32 matrix products on GPUs use TF32 tensor cores (10-bit mantissa inputs, float32
    sums; Ampere and newer), or not (the default: full float32). The training loop turns it on
    for GPU training unless ``TrainConfig.tf32`` is false. No effect on the CPU."""
    global _tf32
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_tf32: expected True or False, got {enabled!r}")
    _tf32 = bool(enabled)
    if _cupy is not None:
        _apply_tf32(_cupy)


def tf32_enabled() -> bool:
    """Whether float32 matrix products on GPUs may use TF32 (:func:`set_tf32`)."""
    return _tf32


def _apply_tf32(cp) -> None:
    """Tell CuPy. It reads $CUPY_TF32 only before its first float32 product; after that its
    compute-type switch is the only way (a private module, so the variable is set too)."""
    os.environ["CUPY_TF32"] = "1" if _tf32 else "0"
    try:
        from cupy._core import _routines_linalg as linalg  # noqa: PLC0415 (optional dependency: CuPy)
        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if _tf32 else linalg.COMPUTE_TYPE_DEFAULT)
    except (ImportError, AttributeError):
        pass


class tf32(contextlib.ContextDecorator):
    """``with tf32(True): ...`` runs a block with TF32 matrix products on GPUs (``False``: without);
    the previous setting comes back afterwards."""

    def __init__(self, enabled: bool = True):
        self.enabled, self._saved = enabled, []

    def __enter__(self):
        self._saved.append(_tf32)
        set_tf32(self.enabled)
        return self

    def __exit__(self, *exc):
        set_tf32(self._saved.pop())
        return False
