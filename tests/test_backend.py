"""The backend switch: device names, the errors for a missing CuPy / missing CUDA device
(simulated, so they run on any machine), mixing devices, dtypes, scatter_add, RNG state."""
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
