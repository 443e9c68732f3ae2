"""tinygrad_llm.safetensors: round trips, compatibility with the reference package, corrupt files."""
import json
import os
import tempfile

import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_llm import Tensor
from tinygrad_llm import safetensors as stf
from tinygrad_llm.nn import Module, Parameter
from tinygrad_llm.safetensors import SafetensorsFile, load_file, save_file

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def _sample():
    rng = np.random.default_rng(0)
    out = {}
    for i, dt in enumerate(DTYPES):
        shape = [(2, 3), (4,), (), (0,), (1, 2, 3), (3, 0, 2)][i % 6]
        a = np.asarray(rng.standard_normal(shape) * 50)
        out[f"t{i}_{np.dtype(dt).name}"] = (a > 0) if dt is np.bool_ else a.astype(dt)
    return out


def _check_equal(got, want):
    assert set(got) == set(want)
    for k, a in want.items():
        b = got[k]
        assert b.dtype == a.dtype and b.shape == a.shape, k
        np.testing.assert_array_equal(b, a, err_msg=k)


@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip_dtypes_and_shapes(tmp_path, mmap):
    arrays = _sample()
    path = tmp_path / "x.safetensors"
    save_file(arrays, path, metadata={"format": "np", "step": "7"})
    got = load_file(path, mmap=mmap)
    _check_equal(got, arrays)
    assert SafetensorsFile(path).metadata() == {"format": "np", "step": "7"}
    writable = [a.flags.writeable for a in got.values() if a.size]
    assert all(writable) if not mmap else not any(writable)


def test_tensors_and_non_contiguous_and_big_endian_inputs(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    src = {"tensor": Tensor(a), "transposed": a.T, "strided": a[:, ::2],
           "big_endian": a.astype(">f4"), "scalar": np.float64(2.5)}
    save_file(src, tmp_path / "x.safetensors")
    got = load_file(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(got["tensor"], a)
    np.testing.assert_array_equal(got["transposed"], a.T)
    np.testing.assert_array_equal(got["strided"], a[:, ::2])
    np.testing.assert_array_equal(got["big_endian"], a)
    assert got["big_endian"].dtype == np.float32
    assert got["scalar"].shape == () and got["scalar"] == 2.5


def test_layout_header_padding_and_alignment(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"b": np.ones(3, np.uint8), "a": np.ones(2, np.float64), "c": np.ones(1, np.float32)}, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    # larger dtypes first, so every tensor is aligned to its item size
    assert header["a"]["data_offsets"] == [0, 16]
    assert header["c"]["data_offsets"] == [16, 20]
    assert header["b"]["data_offsets"] == [20, 23]
    assert len(raw) == 8 + n + 23
    assert "__metadata__" not in header


def test_lazy_file_access(tmp_path):
    path = tmp_path / "x.safetensors"
    w = np.arange(20, dtype=np.float32).reshape(4, 5)
    save_file({"w": w, "b": np.zeros(5, np.float16)}, path)
    with SafetensorsFile(path) as f:
        assert sorted(f.keys()) == ["b", "w"] and "w" in f and len(f) == 2
        assert f.shape("w") == (4, 5) and f.dtype("b") == "F16"
        got = f.get("w")
        assert isinstance(got, np.ndarray) and not got.flags.writeable and not got.flags.owndata
        np.testing.assert_array_equal(got, w)
        with pytest.raises(KeyError, match="'nope'"):
            f.get("nope")
    np.testing.assert_array_equal(got, w)  # still valid after close
    assert "2 tensors" in repr(SafetensorsFile(path))


def test_module_state_dict_round_trip(tmp_path):
    class M(Module):
        def __init__(self, v):
            super().__init__()
            self.w = Parameter(np.full((2, 3), v, np.float32))
            self.register_buffer("n", Tensor(np.array(v, np.int64)))

    path = tmp_path / "m.safetensors"
    save_file(dict(M(3).state_dict()), path)
    m = M(0)
    m.load_state_dict(load_file(path))
    assert m.w.numpy().tolist() == [[3] * 3] * 2 and m.n.item() == 3


def test_load_to_device(tmp_path, device):
    path = tmp_path / "x.safetensors"
    save_file({"a": np.arange(4, dtype=np.float32)}, path)
    got = load_file(path, device=device)
    np.testing.assert_array_equal(to_np(got["a"]), np.arange(4))
    save_file({"a": Tensor(np.ones(2, np.float32), device=device)}, path)  # GPU arrays go via the host
    np.testing.assert_array_equal(load_file(path)["a"], [1, 1])


@given(st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
        lambda k: k != "__metadata__"),
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=4))
def test_round_trip_property(arrays):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        save_file(arrays, path)
        got = load_file(path)
    assert set(got) == set(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape
        np.testing.assert_array_equal(got[k], a)


# ---------------------------------------------------------------------------- BF16

def _write_raw(path, header, data: bytes, pad=True):
    head = json.dumps(header).encode()
    if pad:
        head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + data)


def test_bf16_is_decoded_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # these values are exact in bf16
    path = tmp_path / "bf.safetensors"
    _write_raw(path, {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}, bits.tobytes())
    for mmap in (True, False):
        got = load_file(path, mmap=mmap)["x"]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, values)


# ---------------------------------------------------------------------------- the reference package

def test_our_file_loads_in_the_reference_package(tmp_path):
    ref = pytest.importorskip("safetensors.numpy")
    arrays = _sample()
    path = tmp_path / "ours.safetensors"
    save_file(arrays, path, metadata={"who": "us"})
    _check_equal(ref.load_file(str(path)), arrays)
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(path), "np") as f:
        assert f.metadata() == {"who": "us"}


def test_reference_file_loads_in_ours(tmp_path):
    ref = pytest.importorskip("safetensors.numpy")
    arrays = _sample()
    path = tmp_path / "theirs.safetensors"
    ref.save_file(arrays, str(path), metadata={"who": "them"})
    _check_equal(load_file(path), arrays)
    assert SafetensorsFile(path).metadata() == {"who": "them"}


def test_reference_bf16_file_loads_in_ours(tmp_path):
    torch = pytest.importorskip("torch")
    ref = pytest.importorskip("safetensors.torch")
    x = torch.randn(3, 4).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    ref.save_file({"x": x}, str(path))
    np.testing.assert_array_equal(load_file(path)["x"], x.float().numpy())


# ---------------------------------------------------------------------------- corrupt files

def _good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": np.arange(4, dtype=np.float32), "b": np.ones(2, np.int64)}, path)
    return path


def _expect_error(path, match):
    with pytest.raises(ValueError, match=match) as e:
        load_file(path)
    assert str(path) in str(e.value)


def test_truncated_files(tmp_path):
    raw = _good(tmp_path).read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw[:5])
    _expect_error(path, "shorter than the 8-byte header length")
    path.write_bytes(raw[:20])
    _expect_error(path, "header length is .* only 12 bytes follow")
    path.write_bytes(raw[:-3])
    _expect_error(path, "run past the end of the data")
    path.write_bytes(raw + b"\0\0")
    _expect_error(path, "cover 32 bytes of data but 34 follow")


def test_absurd_header_length(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    _expect_error(path, "more than the 100000000 allowed")


@pytest.mark.parametrize("header, data, match", [
    (None, b"", "not valid JSON"),
    ([1, 2], b"", "must be a JSON object"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "expected an object with"),
    ({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown or unsupported dtype 'Q7'"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape must be a list"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "data_offsets must be"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap of 4 bytes"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"k": 1}},
     b"\0" * 4, "__metadata__"),
])
def test_bad_headers(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    if header is None:
        head = b"{not json" + b" " * 7
        path.write_bytes(len(head).to_bytes(8, "little") + head)
    else:
        _write_raw(path, header, data)
    _expect_error(path, match)


def test_header_errors_also_from_the_lazy_reader(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, {"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    with pytest.raises(ValueError, match="F8_E4M3"):
        SafetensorsFile(path)


# ---------------------------------------------------------------------------- atomic writes

def test_failed_replace_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = _good(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(stf.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_file({"a": np.zeros(100, np.float32)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.safetensors"]


def test_unserialisable_value_leaves_the_old_file(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="tensor 'bad': dtype object"):
        save_file({"a": np.zeros(3, np.float32), "bad": np.array([object()])}, path)
    with pytest.raises(TypeError, match="tensor 'bad': dtype complex128"):
        save_file({"bad": np.zeros(2, np.complex128)}, path)
    with pytest.raises(TypeError, match="expected a numpy/cupy array or Tensor"):
        save_file({"bad": [1, 2]}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.safetensors"]


def test_bad_arguments(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="metadata"):
        save_file({"a": np.zeros(1)}, path, metadata={"k": 1})
    with pytest.raises(ValueError, match="__metadata__"):
        save_file({"__metadata__": np.zeros(1)}, path)
    with pytest.raises(ValueError, match="non-empty"):
        save_file({"": np.zeros(1)}, path)
    with pytest.raises(TypeError, match="dict"):
        save_file([np.zeros(1)], path)
    assert not path.exists()
