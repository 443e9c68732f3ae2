"""Reductions: sum mean max min var logsumexp with axis = None | int | tuple (negative too)
and keepdims; forward against NumPy, gradients against finite differences (float64); the
tie rule of max/min; logsumexp's stability and its all -inf rows; bad axes. No op here
has a fast kernel."""
import warnings

import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from helper_op import helper_test_op
from strategies import arrays, axis_args, np_axis, shapes, with_fixtures

from tinygrad_llm import Tensor, gradcheck


def leaf(a, device, requires_grad=True):
    return Tensor(a, device=device, requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_np(actual), expected, rtol=rtol, atol=atol)


def np_logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


# name -> (method name, numpy reference(x, axis, keepdims))
REDUCTIONS = {
    "sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
    "mean": lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
    "min": lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims),
    "logsumexp": np_logsumexp,
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@with_fixtures
@given(shape=shapes(), data=st.data(), keepdims=st.booleans())
def test_reduction(device, name, shape, data, keepdims):
    axis = data.draw(axis_args(len(shape)))
    x_np = data.draw(arrays(shape))          # continuous values: no ties for max/min
    expected = REDUCTIONS[name](x_np, np_axis(axis, len(shape)), keepdims)
    out, _ = helper_test_op([x_np], lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
                            lambda a: expected, device=device)
    assert out.shape == np.shape(expected)


@pytest.mark.parametrize("correction", [0, 1])
@with_fixtures
@given(shape=shapes(min_dims=1), data=st.data(), keepdims=st.booleans())
def test_var(device, correction, shape, data, keepdims):
    axis = data.draw(axis_args(len(shape)))
    axes = tuple(range(len(shape))) if axis is None else (axis,) if isinstance(axis, int) else axis
    n = int(np.prod([shape[a] for a in axes]))
    if n - correction <= 0:          # a single element with N - 1 = 0: undefined, tested below
        return
    x_np = data.draw(arrays(shape))
    helper_test_op([x_np], lambda t: t.var(axis=axis, keepdims=keepdims, correction=correction),
                   lambda a: np.var(a, axis=axis, ddof=correction, keepdims=keepdims), device=device)


def test_var_default_is_unbiased_and_single_element_is_nan(device):
    x = leaf(np.array([1.0, 2.0, 4.0]), device)
    close(x.var(), np.var([1.0, 2.0, 4.0], ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # 0 / 0 is quiet
        assert np.isnan(to_np(leaf(np.array([3.0]), device).var()))


def test_dim_alias_and_errors(device):
    x = leaf(np.arange(24.0).reshape(2, 3, 4), device)
    close(x.sum(dim=1), np.arange(24.0).reshape(2, 3, 4).sum(axis=1))
    close(x.mean(dim=(0, -1), keepdims=True), np.arange(24.0).reshape(2, 3, 4).mean(axis=(0, 2), keepdims=True))
    with pytest.raises(TypeError, match="axis or dim"):
        x.sum(axis=0, dim=0)
    with pytest.raises(IndexError, match="axis 3"):
        x.sum(axis=3)
    with pytest.raises(IndexError, match="axis -4"):
        x.max(axis=-4)
    with pytest.raises(ValueError, match="repeated axis"):
        x.mean(axis=(0, -3))
    with pytest.raises(TypeError, match="axis must be"):
        x.sum(axis=1.0)
    with pytest.raises(ValueError, match="empty"):
        leaf(np.zeros((0, 3)), device).max()


def test_reductions_of_0d_tensors(device):
    x = leaf(np.array(2.5), device)
    for name in ["sum", "mean", "max", "min", "logsumexp"]:
        out = getattr(x, name)()
        assert out.shape == ()
        close(out, 2.5)
        out.backward()
        close(x.grad, 1.0)
        x.grad = None


# ------------------------------------------------------------------------------ ties in max / min
def test_max_min_split_the_gradient_evenly_among_ties(device):
    x = leaf(np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]), device)
    x.max(axis=1).backward(np.array([6.0, 8.0]))
    close(x.grad, [[0, 3, 3, 0], [2, 2, 2, 2]])
    x.grad = None
    x.min().backward()                      # the single minimum 1.0 gets all of it
    close(x.grad, [[1, 0, 0, 0], [0, 0, 0, 0]])
    y = leaf(np.array([[0.0, 7.0], [7.0, 7.0]]), device)
    y.max(axis=(0, 1), keepdims=True).backward(np.array([[3.0]]))
    close(y.grad, [[0, 1], [1, 1]])


@pytest.mark.parametrize("name", ["max", "min"])
@with_fixtures
@given(shape=shapes(min_dims=1), data=st.data(), keepdims=st.booleans())
def test_max_min_ties_property(device, name, shape, data, keepdims):
    """With many ties (values from {0, 1, 2}): dx = g * [x == out] / (number of ties)."""
    axis = data.draw(axis_args(len(shape)))
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x_np = rs.integers(0, 3, size=shape).astype(np.float64)
    x = leaf(x_np, device)
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    g = rs.standard_normal(out.shape)
    out.backward(g)
    m = getattr(np, name)(x_np, axis=axis, keepdims=True)
    hit = x_np == m
    count = hit.sum(axis=axis, keepdims=True)
    g_kept = g if keepdims else np.reshape(g, m.shape)
    close(x.grad, hit * g_kept / count)
    assert x.grad.shape == shape and x.grad.dtype == np.float64


# ------------------------------------------------------------------------------ logsumexp
def test_logsumexp_is_stable_for_large_values(device):
    x_np = np.array([[1000.0, 1000.0, 990.0], [-1000.0, -1000.0, -1010.0]])
    for dt, tol in [(np.float64, 1e-12), (np.float32, 1e-6)]:
        x = leaf(x_np.astype(dt), device)
        with warnings.catch_warnings():
            warnings.simplefilter("error")       # no overflow in exp
            out = x.logsumexp(axis=1)
            out.sum().backward()
        expected = np.array([1000.0, -1000.0]) + np.log(2 + np.exp(-10.0))
        close(out, expected, rtol=tol)
        soft = np.exp(x_np - expected[:, None])
        close(x.grad, soft, rtol=0, atol=50 * tol)   # = softmax of each row
        assert out.dtype == dt and x.grad.dtype == dt


def test_logsumexp_with_minus_inf(device):
    """-inf entries get exactly 0 gradient; an all -inf row gives -inf (no NaN, no warning)
    and, where its cotangent is 0 (a masked-out row), gradient 0 rather than NaN."""
    x_np = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0]])
    x = leaf(x_np, device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = x.logsumexp(axis=-1)
        out.backward(np.array([0.0, 1.0]))
    close(out, [-np.inf, np.log(1 + np.e)])
    e = np.exp([0.0, 1.0]) / (1 + np.e)
    close(x.grad, [[0, 0, 0], [e[0], 0, e[1]]])
    gradcheck(lambda t: t.logsumexp(axis=1), [leaf(np.array([[0.5, -np.inf, 2.0]]), device)])


def test_logsumexp_of_nothing_is_minus_inf(device):
    """An empty reduced axis: log(0) = -inf, as PyTorch (max() of nothing would raise)."""
    out = leaf(np.zeros((2, 0)), device).logsumexp(axis=1)
    np.testing.assert_array_equal(to_np(out), [-np.inf, -np.inf])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(dtype) * 3
    helper_test_op([x], lambda t: t.sum(axis=(0, 2)), torch_fn=lambda t: t.sum(dim=(0, 2)))
    helper_test_op([x], lambda t: t.mean(axis=-1, keepdims=True), torch_fn=lambda t: t.mean(-1, keepdim=True))
    helper_test_op([x], lambda t: t.max(axis=1), torch_fn=lambda t: t.amax(1))
    helper_test_op([x], lambda t: t.min(axis=0), torch_fn=lambda t: t.amin(0))
    helper_test_op([x], lambda t: t.var(axis=2), torch_fn=lambda t: t.var(2))
    helper_test_op([x], lambda t: t.logsumexp(axis=(1, 2)), torch_fn=lambda t: t.logsumexp((1, 2)))
