"""The Tensor API: construction and dtype inference, properties, conversion, backward's
seeding rules, grad_fn, factories and manual_seed, and the dtype rules for Python scalars."""
import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
from tinygrad_llm import Tensor, backend
from tinygrad_llm.nn import Parameter


# ------------------------------------------------------------------------------ construction
def test_constructor_infers_dtypes(device):
    assert Tensor([1.0, 2.0], device=device).dtype == np.float32     # Python floats -> float32
    assert Tensor([[1, 2], [3, 4]], device=device).dtype == np.int64  # Python ints -> int64
    assert Tensor([True, False], device=device).dtype == np.bool_
    assert Tensor([1, 2.5], device=device).dtype == np.float32        # mixed -> float32
    assert Tensor(2.5, device=device).shape == () and Tensor(2.5, device=device).dtype == np.float32
    assert Tensor(3, device=device).dtype == np.int64
    # NumPy arrays keep their dtype; dtype= converts
    assert Tensor(np.zeros(2, np.float64), device=device).dtype == np.float64
    assert Tensor(np.zeros(2, np.float16), device=device).dtype == np.float16
    assert Tensor(np.zeros(2, np.int32), device=device).dtype == np.int32
    assert Tensor([1, 2], dtype="float64", device=device).dtype == np.float64
    assert Tensor([1.0, 2.0], dtype=np.float16, device=device).dtype == np.float16
    assert Tensor(np.zeros(2), dtype="half", device=device).dtype == np.float16
    np.testing.assert_array_equal(to_np(Tensor([[1, 2], [3, 4]], device=device)), [[1, 2], [3, 4]])
    # from another tensor
    t = Tensor(Tensor([1.0, 2.0], device=device))
    assert t.device == Tensor([0.0], device=device).device and t.dtype == np.float32


def test_constructor_bad_input():
    with pytest.raises(ValueError, match=r"ragged nested list: the items of data have lengths \[2, 1\]"):
        Tensor([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match=r"the items of data\[1\]\[0\] have lengths \[a number, 2\]"):
        Tensor([[[1, 2]], [[3, [4, 5]]]])
    with pytest.raises(TypeError, match="cannot make a tensor"):
        Tensor({"a": 1})
    for text in ("hello", ["a", "b"], [1, "a"], b"xy", np.array(["x"])):   # never an array of strings
        with pytest.raises(TypeError, match="cannot make a tensor from .*expected a number"):
            Tensor(text)
    with pytest.raises(ValueError, match="unknown dtype"):
        Tensor([1.0], dtype="float7")
    with pytest.raises(ValueError, match="unknown device"):
        Tensor([1.0], device="tpu")
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], requires_grad=True)


def test_properties(device):
    x = Tensor(np.zeros((2, 3, 4), np.float32), device=device)
    assert x.shape == (2, 3, 4) and isinstance(x.shape, tuple)
    assert x.ndim == 3 and x.size == 24 and len(x) == 2
    assert x.dtype == np.float32
    assert x.device == ("cpu" if device == "cpu" else "cuda:0")
    assert x.grad is None and x.grad_fn is None and not x.requires_grad and x.is_leaf
    s = Tensor(1.5, device=device)
    assert s.shape == () and s.ndim == 0 and s.size == 1
    with pytest.raises(TypeError, match="0-d"):
        len(s)
    assert "Tensor(" in repr(x) and "float32" in repr(x)
    y = Tensor([1.0], requires_grad=True, device=device)
    assert "requires_grad=True" in repr(y) and "grad_fn=Mul" in repr(y * 2)


def test_numpy_is_a_host_copy(device):
    x = Tensor([1.0, 2.0, 3.0], device=device)
    a = x.numpy()
    assert isinstance(a, np.ndarray)
    a[0] = 100.0
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0, 3.0])
    assert x.tolist() == [1.0, 2.0, 3.0]


def test_item(device):
    assert Tensor(2.5, device=device).item() == 2.5
    assert Tensor([[7]], device=device).item() == 7 and isinstance(Tensor([[7]], device=device).item(), int)
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        Tensor([1.0, 2.0], device=device).item()
    assert bool(Tensor([1.0], device=device)) is True
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor([1.0, 2.0], device=device))


def test_to_device_and_dtype(device):
    x = Tensor([1.0, 2.0], requires_grad=True, device=device)
    assert x.to(device) is x                     # nothing to do: the same tensor
    assert x.to(x.device, dtype=np.float32) is x
    y = x.to("float64")
    assert y.dtype == np.float64 and y.grad_fn.name == "Cast"
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32            # the gradient comes back in x's dtype
    np.testing.assert_allclose(to_np(x.grad), [2.0, 4.0])
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.to(dtype=np.float16).float().dtype == np.float32
    assert Tensor([1, 2], device=device).astype("float32").dtype == np.float32
    assert x.cpu().device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        x.to("tpu:0")


def test_to_moves_a_cpu_tensor_to_the_device_and_back(device):
    """A CPU tensor moved to ``device`` (and one moved back) is a node: its data is the other
    device's array, and the gradient comes back to each side's own device."""
    dev = backend.canonical_device(device)
    x = Tensor([[1.0, 2.0, 3.0]], requires_grad=True)              # on the CPU
    y = x.to(device)
    assert y.device == dev and isinstance(y.data, backend.xp_for(dev).ndarray)
    z = (y * y).to("cpu")
    assert z.device == "cpu" and isinstance(z.data, np.ndarray)
    z.sum().backward()
    assert isinstance(x.grad, np.ndarray)
    np.testing.assert_allclose(x.grad, [[2.0, 4.0, 6.0]])
    w = Tensor([1.0, 2.0], device=device, requires_grad=True)
    w.cpu().sum().backward()                                      # from the device to the CPU
    assert backend.device_of_array(w.grad) == dev
    np.testing.assert_allclose(to_np(w.grad), [1.0, 1.0])


def test_detach_and_requires_grad_(device):
    x = Tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x * 2
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(to_np(d), [2.0, 4.0])
    assert d.data is y.data                       # shares memory (and the version counter)
    z = Tensor([1.0], device=device)
    assert z.requires_grad_() is z and z.requires_grad
    assert z.requires_grad_(False) is z and not z.requires_grad
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad_(False)
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], device=device).requires_grad_()


def test_wrap_makes_a_plain_tensor_around_the_array_as_it_is(device):
    like = Tensor([0.0], device=device)
    arr = like.xp.arange(6, dtype=np.float64).reshape(2, 3)
    t = Tensor.wrap(arr, like.device)
    assert t.data is arr and t.dtype == np.float64 and t.device == like.device
    assert type(t) is Tensor and t.is_leaf and not t.requires_grad and t.grad is None and t._version == 0
    assert Tensor.wrap(arr, like.device, requires_grad=True).requires_grad
    # op outputs are made by wrap: plain Tensors, also from a Parameter input
    p = Parameter(np.ones(3, np.float32), device=device)
    assert type(p * 2) is Tensor and type(p.sum()) is Tensor


# ------------------------------------------------------------------------------ backward
def test_backward_seeds_one_for_a_scalar(device):
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    (x * x).sum().backward()
    np.testing.assert_allclose(to_np(x.grad), [2.0, 4.0, 6.0])
    w = Tensor([[3.0]], requires_grad=True, device=device)    # one element, any shape
    (w * 2).backward()
    np.testing.assert_allclose(to_np(w.grad), [[2.0]])


def test_backward_of_a_non_scalar_needs_a_gradient(device):
    x = Tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x * 3
    with pytest.raises(RuntimeError, match=r"one-element.*\(2,\).*grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2,\)"):
        y.backward(np.ones(3))
    y.backward(Tensor([1.0, 10.0], device=device))
    np.testing.assert_allclose(to_np(x.grad), [3.0, 30.0])


def test_backward_without_grad_is_an_error(device):
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0], device=device).sum().backward()


def test_grad_fn_names_and_inputs_walked_by_hand(device):
    """loss = sum((a * b) + exp(a)): walk the graph from loss.grad_fn down to the leaves."""
    a = Tensor([1.0, 2.0], requires_grad=True, device=device)
    b = Tensor([3.0, 4.0], requires_grad=True, device=device)
    prod = a * b
    e = a.exp()
    s = prod + e
    loss = s.sum()
    node = loss.grad_fn
    assert node.name == "Sum" and node.inputs == (s,) and "Sum" in repr(node)
    add = node.inputs[0].grad_fn
    assert add.name == "Add"
    assert add.inputs[0] is prod and add.inputs[1] is e
    mul, exp = add.inputs[0].grad_fn, add.inputs[1].grad_fn
    assert (mul.name, exp.name) == ("Mul", "Exp")
    assert mul.inputs[0] is a and mul.inputs[1] is b and exp.inputs[0] is a
    assert a.grad_fn is None and b.grad_fn is None                  # leaves
    assert mul.needs_input_grad == (True, True)
    c = Tensor([1.0, 1.0], device=device)                           # needs no grad
    assert (a * c).grad_fn.needs_input_grad == (True, False)


# ------------------------------------------------------------------------------ dtype rules
@pytest.mark.parametrize("dt", [np.float32, np.float16, np.float64])
def test_python_scalars_never_promote(device, dt):
    x = Tensor(np.array([1.0, 2.0], dtype=dt), requires_grad=True, device=device)
    results = [x * 2.5, 2.5 - x, x ** 2, x / 3, 3 / x, x + 1, 2.0 ** x, -x, x.maximum(0.5),
               tg.where(x > 1.5, x, 0.0), x.masked_fill(x > 1.5, -1e4 if dt != np.float16 else -1e3),
               x.clip(0.0, 1.5), x * np.float64(2.0), np.float64(2.0) * x]
    for r in results:
        assert r.dtype == dt, r
    sum(r.sum() for r in results).backward()
    assert x.grad.dtype == dt and x.grad.shape == x.shape


@pytest.mark.parametrize("dt", [np.float32, np.float16, np.float64])
def test_grad_has_the_tensors_shape_and_dtype(device, dt):
    x = Tensor(np.ones((2, 1, 3), dtype=dt), requires_grad=True, device=device)
    other = Tensor(np.ones((4, 1), dtype=np.float64), device=device)   # promotes the result
    y = (x * other).sum()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.shape == (2, 1, 3) and x.grad.dtype == dt
    np.testing.assert_allclose(to_np(x.grad).astype(np.float64), np.full((2, 1, 3), 4.0))


def test_default_dtypes_of_ops_and_integer_tensors(device):
    i = Tensor([1, 2, 3], device=device)
    assert (i + 1).dtype == np.int64 and (i * 2).dtype == np.int64
    assert (i + True).dtype == np.int64                                  # a bool scalar counts as an int
    assert (Tensor(np.array([1, 2], np.int32), device=device) * 3).dtype == np.int32
    assert (i > 1).dtype == np.bool_
    assert Tensor([True], device=device).dtype == np.bool_


# ------------------------------------------------------------------------------ factories
def test_factories(device):
    dev = Tensor([0.0], device=device).device
    z = tg.zeros(2, 3, device=device)
    assert z.shape == (2, 3) and z.dtype == np.float32 and z.device == dev and not to_np(z).any()
    assert tg.zeros((2, 3), device=device).shape == (2, 3)
    o = tg.ones(4, dtype="float64", device=device)
    assert o.dtype == np.float64 and (to_np(o) == 1).all()
    f = tg.full((2, 2), 7.5, device=device, dtype=np.float16)
    assert f.dtype == np.float16 and (to_np(f) == 7.5).all()
    assert tg.full(3, 1.0, device=device).shape == (3,)
    e = tg.eye(3, device=device)
    np.testing.assert_array_equal(to_np(e), np.eye(3))
    assert tg.eye(2, 3, device=device).shape == (2, 3)
    a = tg.arange(5, device=device)
    assert a.dtype == np.int64 and to_np(a).tolist() == [0, 1, 2, 3, 4]
    b = tg.arange(0, 1, 0.25, device=device)
    assert b.dtype == np.float32 and to_np(b).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert tg.arange(3, dtype="float64", device=device).dtype == np.float64
    r = tg.randn(3, 4, device=device, requires_grad=True)
    assert r.shape == (3, 4) and r.dtype == np.float32 and r.requires_grad and r.device == dev
    u = tg.rand(1000, device=device, dtype="float64")
    assert u.dtype == np.float64 and 0 <= to_np(u).min() and to_np(u).max() < 1
    assert tg.randn(2, dtype=np.float16, device=device).dtype == np.float16
    with pytest.raises(ValueError, match="negative dimension"):
        tg.zeros(2, -1)
    with pytest.raises(ValueError, match="floating-point"):
        tg.randn(2, dtype="int64")


@pytest.mark.parametrize("fill, dtype", [(4, np.int64), (4.0, np.float32), (True, np.bool_),
                                         (np.int32(4), np.int64), (np.float64(0.5), np.float32)])
def test_full_infers_the_dtype_from_the_fill_as_pytorch(device, fill, dtype):
    """An int fill gives int64, a bool bool, a float the default float32 (NumPy floats too)."""
    t = tg.full((2, 2), fill, device=device)
    assert t.dtype == dtype and (to_np(t) == fill).all()
    assert tg.full((2, 2), 4, dtype="float64", device=device).dtype == np.float64
    torch = pytest.importorskip("torch")
    if not isinstance(fill, np.generic):
        assert str(torch.full((2, 2), fill).dtype).replace("torch.", "") == np.dtype(dtype).name


def test_randint(device):
    tg.manual_seed(3)
    a = tg.randint(10, (200,), device=device)
    b = tg.randint(-3, 2, size=(4, 50), device=device, dtype="int32")
    assert a.dtype == np.int64 and a.shape == (200,) and b.dtype == np.int32 and b.shape == (4, 50)
    assert set(to_np(a).tolist()) == set(range(10))                    # every value appears in 200 draws
    assert to_np(b).min() == -3 and to_np(b).max() == 1
    tg.manual_seed(3)
    np.testing.assert_array_equal(to_np(tg.randint(10, (200,), device=device)), to_np(a))   # reproducible
    assert tg.randint(5, 6, (3,), device=device).numpy().tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="low must be < high"):
        tg.randint(3, 3, (2,))
    with pytest.raises(TypeError, match="needs high"):
        tg.randint(3)
    with pytest.raises(TypeError, match="high must be an int"):
        tg.randint(0, 2.5, (2,))
    with pytest.raises(ValueError, match="integer"):
        tg.randint(0, 2, (2,), dtype="float32")


def test_like_factories(device):
    x = Tensor(np.zeros((2, 3), np.float64), device=device)
    for fn in [tg.zeros_like, tg.ones_like, tg.randn_like, tg.rand_like]:
        y = fn(x)
        assert y.shape == (2, 3) and y.dtype == np.float64 and y.device == x.device
        assert fn(x, dtype="float32").dtype == np.float32
    assert (to_np(tg.full_like(x, 3.0)) == 3.0).all() and tg.full_like(x, 3.0).dtype == np.float64
    assert tg.zeros_like(x, requires_grad=True).requires_grad


def test_manual_seed_makes_randn_and_rand_reproducible(device):
    tg.manual_seed(1234)
    a, b = tg.randn(5, device=device), tg.rand(3, device=device)
    tg.manual_seed(1234)
    c, d = tg.randn(5, device=device), tg.rand(3, device=device)
    np.testing.assert_array_equal(to_np(a), to_np(c))
    np.testing.assert_array_equal(to_np(b), to_np(d))
    tg.manual_seed(4321)
    assert not np.array_equal(to_np(tg.randn(5, device=device)), to_np(a))
    with pytest.raises(ValueError, match="non-negative integer"):
        tg.manual_seed(-1)


def test_integer_with_float_takes_the_float_dtype(device):
    """PyTorch's promotion rule: no silent float64 from mixing ints with float32/float16."""
    ints = tg.arange(4, device=device)
    assert (ints * 0.5).dtype == np.float32
    assert (0.5 * ints).dtype == np.float32
    assert (ints / 2).dtype == np.float32 and np.allclose(to_np((ints / 2).data), [0, 0.5, 1, 1.5])
    assert (ints + tg.ones(4, device=device, dtype="float16")).dtype == np.float16
    assert (tg.ones(4, device=device, dtype="float64") - ints).dtype == np.float64
    assert (ints * 2).dtype == np.int64 and (ints ** 2).dtype == np.int64
    x = tg.ones(4, device=device, requires_grad=True)
    (x * ints).sum().backward()
    assert x.grad.dtype == np.float32 and np.allclose(to_np(x.grad), [0, 1, 2, 3])
