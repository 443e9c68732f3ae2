"""softmax and log_softmax (ops/softmax.py; no fast kernel): forward and gradients against
NumPy, PyTorch and finite differences, stability, the one convention for rows that are all
-inf, 0-d and zero-size inputs, negative axes, bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, np_log_softmax, np_softmax, seeds
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data(),
       log=st.booleans(), scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_softmax_against_numpy_and_gradcheck(device, shape, data, log, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    fn, ref = (F.log_softmax, np_log_softmax) if log else (F.softmax, np_softmax)
    helper_test_op([x], lambda t: fn(t, axis), lambda a: ref(a, axis), device=device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_softmax_and_log_softmax_match_torch(dtype, dim):
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(1).standard_normal((4, 5, 6)) * 10.0).astype(dtype)
    helper_test_op([x], lambda t: F.softmax(t, dim=dim), torch_fn=lambda t: torch.softmax(t, dim))
    helper_test_op([x], lambda t: F.log_softmax(t, dim=dim), torch_fn=lambda t: torch.log_softmax(t, dim))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_forward_matches_numpy(device, axis):
    x = np.random.default_rng(4).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(to_np(F.softmax(Tensor(x, device=device), axis)), np_softmax(x, axis),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_np(F.log_softmax(Tensor(x, device=device), dim=axis)),
                               np_log_softmax(x, axis), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_inputs(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4, -1e4]], dtype=dtype)
    y, ly = F.softmax(leaf(x)), F.log_softmax(leaf(x))
    assert np.isfinite(y.numpy()).all() and np.isfinite(ly.numpy()).all()
    np.testing.assert_allclose(y.numpy(), np_softmax(x.astype(np.float64), -1), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(ly.numpy(), np_log_softmax(x.astype(np.float64), -1), rtol=1e-6)
    for op in (F.softmax, F.log_softmax):
        t = leaf(x)
        (op(t) * Tensor(np.arange(8.0).reshape(2, 4).astype(dtype))).sum().backward()
        assert np.isfinite(t.grad).all()


def test_softmax_rows_sum_to_one_and_log_softmax_grad_rows_sum_to_zero():
    x = leaf(np.random.default_rng(5).standard_normal((6, 7)) * 5)
    np.testing.assert_allclose(F.softmax(x).numpy().sum(-1), 1.0, rtol=1e-12)
    ly = F.log_softmax(x)
    ly.backward(Tensor(np.random.default_rng(6).standard_normal((6, 7))))
    np.testing.assert_allclose(x.grad.sum(-1), 0.0, atol=1e-12)   # shifting a row changes nothing


def test_fully_masked_rows_give_zeros_and_finite_gradients(device):
    """The package's one convention: a row that is all -inf has softmax 0 (PyTorch: NaN), its
    log-softmax is -inf (log 0), and gradients stay finite; other rows are untouched and
    -inf entries in them get probability 0 and gradient 0."""
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.5, -np.inf, 2.0]])
    g = np.array([[1.0, -2.0, 3.0], [0.3, 0.7, -1.1]])
    t = leaf(x, device)
    y = F.softmax(t)
    y.backward(Tensor(g, device=device))
    p = np_softmax(np.array([0.5, 2.0]), -1)
    np.testing.assert_allclose(to_np(y), [[0, 0, 0], [p[0], 0, p[1]]], rtol=1e-12)
    expect = np.array([[0.0, 0.0, 0.0], [p[0] * (0.3 - p @ [0.3, -1.1]), 0.0, p[1] * (-1.1 - p @ [0.3, -1.1])]])
    np.testing.assert_allclose(to_np(t.grad), expect, rtol=1e-12)
    t = leaf(x, device)
    ly = F.log_softmax(t)
    ly.backward(Tensor(g, device=device))
    out = to_np(ly)
    assert (out[0] == -np.inf).all() and out[1, 1] == -np.inf
    np.testing.assert_allclose(out[1, [0, 2]], np.log(p), rtol=1e-12)
    np.testing.assert_allclose(to_np(t.grad)[0], g[0])             # P = 0: dx = g - 0 * sum(g)
    assert np.isfinite(to_np(t.grad)).all()


def test_0d_and_zero_size(device):
    x = leaf(np.array(3.0), device)
    y = F.softmax(x)
    assert y.shape == () and y.item() == 1.0
    y.backward()
    assert x.grad == 0.0
    assert F.log_softmax(leaf(np.array(3.0), device), -1).item() == 0.0
    for op in (F.softmax, F.log_softmax):
        e = leaf(np.zeros((2, 0)), device)
        out = op(e, 1)
        assert out.shape == (2, 0)
        out.sum().backward()
        assert e.grad.shape == (2, 0)
        assert op(leaf(np.zeros((0, 3)), device)).shape == (0, 3)


def test_softmax_axis_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(IndexError, match="softmax: axis 2 is out of range"):
        F.softmax(x, 2)
    with pytest.raises(IndexError, match="log_softmax: axis -3 is out of range"):
        F.log_softmax(x, -3)
    with pytest.raises(TypeError, match="axis or dim"):
        F.log_softmax(x, axis=0, dim=0)
    with pytest.raises(TypeError, match="axis must be an int"):
        F.softmax(x, 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        F.softmax(Tensor(np.arange(3)))
    with pytest.raises(TypeError, match="must be a Tensor"):
        F.softmax(np.zeros(3))
    gradcheck(lambda t: F.softmax(t, -2), [leaf(np.random.default_rng(0).standard_normal((3, 2)))])


def test_float16_rows_sum_in_float32(device):
    """A float16 row of 70,000 equal scores: the row sum, 70,000, is beyond float16's largest
    number (65,504), so a float16 sum would be inf and P would be 0; in float32 each P is
    1/70,000 (a float16 subnormal, to about 0.5%)."""
    x = Tensor(np.zeros((1, 70_000), dtype=np.float16), device=device)
    P = F.softmax(x, axis=-1)
    assert P.dtype == np.float16
    np.testing.assert_allclose(to_np(P).astype(np.float64), 1 / 70_000, rtol=1e-2)
