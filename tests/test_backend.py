"""The backend switch: device names, the errors for a missing CuPy / missing CUDA device
(simulated, so they run on any machine), mixing devices, dtypes, scatter_add, RNG state."""
import contextlib
import sys
import types

import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
from tinygrad_llm import Tensor, backend
from tinygrad_llm.backend import DeviceError
from tinygrad_llm.ops import elementwise as E


# ------------------------------------------------------------------------------ device names
@pytest.mark.parametrize("name, canonical", [
    ("cpu", "cpu"), ("CPU", "cpu"), (" cpu ", "cpu"), (None, "cpu"),
    ("gpu", "cuda:0"), ("GPU", "cuda:0"), ("cuda", "cuda:0"),
    ("cuda:0", "cuda:0"), ("cuda:3", "cuda:3"), ("gpu:1", "cuda:1"), ("CUDA:02", "cuda:2"),
])
def test_canonical_device(name, canonical):
    assert backend.canonical_device(name) == canonical


@pytest.mark.parametrize("bad", ["tpu", "", "cuda:", "cuda:-1", "cuda:x", "gpu0", "cpu:0", "mps"])
def test_bad_device_names(bad):
    with pytest.raises(ValueError, match="unknown device.*expected 'cpu', 'gpu', 'cuda' or 'cuda:N'"):
        backend.canonical_device(bad)


def test_device_must_be_a_string():
    with pytest.raises(ValueError, match="must be a string"):
        backend.canonical_device(0)


def test_cpu_is_numpy():
    assert backend.xp_for("cpu") is np
    assert backend.device_of_array(np.zeros(2)) == "cpu"
    with pytest.raises(TypeError, match="numpy or cupy array"):
        backend.device_of_array([1.0])


# ------------------------------------------------------------------------------ no CuPy / no GPU
@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail (None in sys.modules) and forget any cupy already imported;
    monkeypatch puts sys.modules and the backend's cache back afterwards."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", None)
    backend._import_cupy()
    assert backend._cupy is None and isinstance(backend._cupy_error, ImportError)


def _fake_cupy(get_count):
    runtime = types.SimpleNamespace(getDeviceCount=get_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), ndarray=type(None))


@pytest.mark.parametrize("make", [
    lambda: Tensor([1.0], device="gpu"),
    lambda: tg.zeros(2, device="cuda"),
    lambda: tg.randn(2, device="cuda:0"),
    lambda: Tensor([1.0]).to("gpu"),
    lambda: backend.xp_for("cuda:0"),
])
def test_gpu_without_cupy_says_how_to_install_it(no_cupy, make):
    with pytest.raises(DeviceError) as err:
        make()
    msg = str(err.value)
    assert "needs CuPy, which is not installed" in msg
    assert "pip install" in msg and "cupy" in msg and "device='cpu'" in msg


def test_gpu_available_is_false_without_cupy(no_cupy):
    assert tg.gpu_available() is False


def test_cupy_with_zero_devices(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", _fake_cupy(lambda: 0))
    monkeypatch.setattr(backend, "_cupy_error", None)
    with pytest.raises(DeviceError, match="CuPy is installed but found no CUDA device"):
        Tensor([1.0], device="gpu")
    assert tg.gpu_available() is False


def test_cupy_whose_runtime_raises(monkeypatch):
    def broken():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    monkeypatch.setattr(backend, "_cupy", _fake_cupy(broken))
    monkeypatch.setattr(backend, "_cupy_error", None)
    with pytest.raises(DeviceError, match="no CUDA device could be reached.*cudaErrorNoDevice"):
        backend.xp_for("cuda:0")
    assert tg.gpu_available() is False


def test_cuda_index_beyond_the_devices_present(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", _fake_cupy(lambda: 1))
    monkeypatch.setattr(backend, "_cupy_error", None)
    with pytest.raises(DeviceError, match=r"only 1 CUDA device\(s\) present \(cuda:0..cuda:0\)"):
        backend.xp_for("cuda:1")


class _Lacking:
    """A device array whose matrix product fails as CuPy's does when cuBLAS is not installed."""

    def __init__(self, a):
        self.a = a

    def reshape(self, *shape):
        return _Lacking(self.a.reshape(*shape))

    def __mul__(self, o):
        return _Lacking(self.a * o)

    def __add__(self, o):
        return _Lacking(self.a + o)

    def __matmul__(self, o):
        raise ImportError("libcublasLt.so.12: cannot open shared object file: No such file or directory")


def _working_cupy(arange=np.arange, default_rng=np.random.default_rng):
    """A stand-in for CuPy with one device that runs the first-use checks (on NumPy)."""
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0)
    return types.SimpleNamespace(
        __version__="14.0-test", cuda=types.SimpleNamespace(runtime=runtime, Device=lambda i: contextlib.nullcontext()),
        arange=arange, float32=np.float32, asnumpy=np.asarray, ndarray=type(None),
        random=types.SimpleNamespace(default_rng=default_rng))


@pytest.mark.parametrize("cupy, missing", [
    (_working_cupy(arange=lambda *a, **k: _Lacking(np.arange(*a, **k))), "libcublasLt"),
    (_working_cupy(default_rng=lambda seed: (_ for _ in ()).throw(ImportError("libcurand.so.10: cannot open"))),
     "libcurand"),
])
def test_cupy_without_its_cuda_libraries_says_how_to_install_them(monkeypatch, cupy, missing):
    """CuPy 14 imports without cuBLAS/cuRAND and fails at their first use: the device check runs a
    matmul and a random draw, so that failure comes at once, with the fix."""
    monkeypatch.setattr(backend, "_cupy", cupy)
    monkeypatch.setattr(backend, "_cupy_error", None)
    with pytest.raises(DeviceError) as err:
        Tensor([1.0], device="gpu")
    msg = str(err.value)
    assert "CuPy 14.0-test is installed but cannot run on it (ImportError: " + missing in msg
    assert "pip install 'tinygrad_llm[gpu]'" in msg and "cupy-cuda12x[ctk]" in msg and "device='cpu'" in msg
    assert tg.gpu_available() is False


def test_the_device_check_is_remembered_per_cupy_module(monkeypatch):
    """A device that passed its check once is not checked again, unless CuPy itself changed (the
    fakes above must stay reachable after a real GPU was used in the same process)."""
    calls = []
    good = _working_cupy()
    good.cuda.runtime.getDeviceCount = lambda: calls.append(1) or 1
    monkeypatch.setattr(backend, "_cupy", good)
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(backend, "_checked_gpus", {})
    assert backend.xp_for("cuda:0") is good and backend.xp_for("cuda:0") is good
    assert len(calls) == 1
    monkeypatch.setattr(backend, "_cupy", _fake_cupy(lambda: 0))
    with pytest.raises(DeviceError, match="found no CUDA device"):
        backend.xp_for("cuda:0")


def test_module_state_is_restored_after_the_fakes():
    """Runs after the tests above: the real import state is back (cupy absent or real)."""
    assert sys.modules.get("cupy", "absent") is not None
    assert not isinstance(backend._cupy, types.SimpleNamespace)


# ------------------------------------------------------------------------------ mixing devices
@pytest.fixture
def fake_second_device(monkeypatch):
    """A tensor that claims to live on 'cuda:1' (its data is NumPy); xp_for answers numpy for
    any device, so only the device check itself can complain."""
    monkeypatch.setattr(backend, "xp_for", lambda device: np)
    t = Tensor([1.0, 2.0], requires_grad=True)
    t.device = "cuda:1"
    return t


def test_mixing_devices_in_one_op_names_both(fake_second_device):
    x = Tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(DeviceError, match=r"Add: inputs are on different devices, 'cpu' and 'cuda:1'"):
        x + fake_second_device
    with pytest.raises(DeviceError, match=r"'cuda:1' and 'cpu'"):
        E.Mul.apply(fake_second_device, x)
    with pytest.raises(DeviceError, match=r"'cpu' and 'cuda:1'"):
        x @ fake_second_device
    with pytest.raises(DeviceError, match=r"'cpu' and 'cuda:1'"):
        tg.cat([x, fake_second_device])
    with pytest.raises(DeviceError, match=r"'cuda:1'.*'cpu'"):
        Tensor([0.0, 0.0]).copy_(fake_second_device)
    with pytest.raises(DeviceError, match=r"'cuda:1'.*'cpu'"):
        x[Tensor.wrap(np.array([0]), "cuda:1")]


def test_same_device_passes_the_check(fake_second_device):
    other = Tensor([1.0, 1.0])
    other.device = "cuda:1"
    out = fake_second_device + other
    assert out.device == "cuda:1"


# ------------------------------------------------------------------------------ dtypes and helpers
@pytest.mark.parametrize("name, dt", [
    ("float32", np.float32), ("float", np.float32), ("half", np.float16), ("float16", np.float16),
    ("double", np.float64), ("int64", np.int64), ("long", np.int64), ("bool", np.bool_),
    (np.float64, np.float64), (np.dtype("int32"), np.int32),
])
def test_canonical_dtype(name, dt):
    assert backend.canonical_dtype(name) == np.dtype(dt)


def test_bad_dtype_names():
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        backend.canonical_dtype("float7")
    with pytest.raises(ValueError, match="unknown dtype"):
        backend.canonical_dtype("complex")
    assert backend.default_dtype == np.float32


def test_scatter_add_sums_repeated_indices(device):
    xp = Tensor([0.0], device=device).xp
    target = xp.zeros(4)
    backend.scatter_add(xp, target, xp.asarray([0, 2, 0, 0]), xp.asarray([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(to_np(target), [8.0, 0.0, 2.0, 0.0])
    rows = xp.zeros((3, 2))
    backend.scatter_add(xp, rows, xp.asarray([1, 1]), xp.ones((2, 2)))
    np.testing.assert_array_equal(to_np(rows), [[0, 0], [2, 2], [0, 0]])


def test_to_numpy_is_a_copy(device):
    t = Tensor([1.0, 2.0], device=device)
    a = backend.to_numpy(t.data)
    a[0] = 9.0
    assert to_np(t)[0] == 1.0


def test_rng_state_round_trip():
    tg.manual_seed(7)
    tg.randn(3)
    state = backend.get_rng_state()
    a = tg.randn(4).numpy()
    tg.randn(10)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(tg.randn(4).numpy(), a)
    with pytest.raises(ValueError, match="get_rng_state"):
        backend.set_rng_state({"seed": 1})


def test_a_gpu_generator_follows_the_saved_cpu_state(device):
    """reseed_from_cpu: each training step's GPU seed is derived from the CPU generator's state,
    which a checkpoint saves, so restoring that state restores the GPU's draws; nothing is drawn
    from the CPU generator (a GPU run gets the batches a CPU run gets); "cpu" is left alone."""
    dev = backend.canonical_device(device)
    tg.manual_seed(3)
    state = backend.get_rng_state()
    backend.reseed_from_cpu(dev)
    assert backend.get_rng_state() == state
    a = backend.to_numpy(backend.rng(dev).random(5, dtype=np.float32))
    backend.rng("cpu").integers(0, 10, size=4)           # a step's batch moves the CPU generator on
    backend.reseed_from_cpu(dev)
    b = backend.to_numpy(backend.rng(dev).random(5, dtype=np.float32))
    assert not np.array_equal(a, b)
    backend.set_rng_state(state)
    backend.reseed_from_cpu(dev)
    np.testing.assert_array_equal(backend.to_numpy(backend.rng(dev).random(5, dtype=np.float32)), a)


def test_tf32_is_an_explicit_switch():
    assert backend.tf32_enabled() is False
    with backend.tf32(True):
        assert backend.tf32_enabled() is True
        with backend.tf32(False):
            assert backend.tf32_enabled() is False
        assert backend.tf32_enabled() is True
    assert backend.tf32_enabled() is False
    with pytest.raises(TypeError, match="True or False"):
        backend.set_tf32("yes")
