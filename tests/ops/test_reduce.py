"""Reductions: sum mean max min var std logsumexp with axis = None | int | tuple (negative
too) and keepdims, in NumPy's and PyTorch's spellings; max/min(dim) -> (values, indices);
argmax/argmin; cumsum; forward against NumPy, gradients against finite differences (float64)
and PyTorch; the tie rule of max/min; std where all elements are equal; logsumexp's
stability and its all -inf rows; bad axes. No op here has a fast kernel."""
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


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("correction", [0, 1])
@with_fixtures
@given(shape=shapes(min_dims=1), data=st.data(), keepdims=st.booleans())
def test_var_and_std(device, name, correction, shape, data, keepdims):
    axis = data.draw(axis_args(len(shape)))
    axes = tuple(range(len(shape))) if axis is None else (axis,) if isinstance(axis, int) else axis
    n = int(np.prod([shape[a] for a in axes]))
    if n - correction <= 0:          # a single element with N - 1 = 0: undefined, tested below
        return
    x_np = data.draw(arrays(shape))
    ref = {"var": np.var, "std": np.std}[name]
    helper_test_op([x_np], lambda t: getattr(t, name)(axis=axis, keepdims=keepdims, correction=correction),
                   lambda a: ref(a, axis=axis, ddof=correction, keepdims=keepdims), device=device)


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


# ------------------------------------------------------------------------------ PyTorch's spellings

def test_keepdim_and_dim_spellings(device):
    """Every reduction takes dim= and keepdim= beside axis= and keepdims= (and positional dims)."""
    x_np = np.random.default_rng(1).standard_normal((2, 3, 4))
    x = leaf(x_np, device)
    for name, ref in [("sum", np.sum), ("mean", np.mean), ("amax", np.max), ("amin", np.min),
                      ("var", lambda a, axis, keepdims: np.var(a, axis=axis, ddof=1, keepdims=keepdims)),
                      ("std", lambda a, axis, keepdims: np.std(a, axis=axis, ddof=1, keepdims=keepdims)),
                      ("logsumexp", np_logsumexp)]:
        expected = ref(x_np, axis=(0, 2), keepdims=True)
        fn = getattr(x, name)
        for out in (fn(dim=(0, 2), keepdim=True), fn(axis=(0, 2), keepdims=True), fn((0, 2), keepdim=True),
                    fn(dim=(0, -1), keepdims=True)):
            close(out, expected)
        close(fn(-1), ref(x_np, axis=-1, keepdims=False))
        with pytest.raises(TypeError, match="not both"):
            fn(axis=1, dim=1)
        with pytest.raises(TypeError, match="not both"):
            fn(1, keepdims=True, keepdim=False)
    close(x.var(1, False), np.var(x_np, axis=1))                   # PyTorch's (dim, unbiased) order
    close(x.std(1, unbiased=True, keepdim=True), np.std(x_np, axis=1, ddof=1, keepdims=True))
    close(x.var(1, correction=0), np.var(x_np, axis=1))
    with pytest.raises(TypeError, match="not both"):
        x.var(1, unbiased=True, correction=1)


def test_max_min_with_one_dim_give_values_and_indices(device):
    x_np = np.array([[3.0, 7.0, 7.0, 1.0], [2.0, 2.0, -1.0, 5.0]])
    x = leaf(x_np, device)
    values, indices = x.max(1)
    assert type(x.max(1)).__name__ == "ValuesIndices" and x.max(dim=1).values.shape == (2,)
    close(values, [7.0, 5.0])
    np.testing.assert_array_equal(to_np(indices), [1, 3])           # the first maximum
    assert indices.dtype == np.int64
    values.sum().backward()                                          # the gradient goes to that element alone
    close(x.grad, [[0, 1, 0, 0], [0, 0, 0, 1]])
    v, i = x.min(0, keepdim=True)
    assert v.shape == (1, 4) and i.shape == (1, 4)
    np.testing.assert_array_equal(to_np(i), [[1, 1, 1, 0]])
    close(x.max(), 7.0)                                              # all dims: the value
    close(x.max(axis=1), [7.0, 5.0])                                 # NumPy's spelling: the values
    close(x.max(dim=(0, 1)), 7.0)
    close(x.max(leaf(np.full(4, 4.0), device)), np.maximum(x_np, 4.0))   # max(other): elementwise
    close(x.min(leaf(np.full(4, 4.0), device)), np.minimum(x_np, 4.0))
    s = leaf(np.array(3.0), device)
    v0, i0 = s.max(0)
    close(v0, 3.0)
    assert i0.shape == () and int(i0.item()) == 0
    with pytest.raises(IndexError, match="empty"):
        leaf(np.zeros((2, 0)), device).max(1)


def test_argmax_argmin(device):
    x_np = np.random.default_rng(2).standard_normal((3, 4, 5))
    x = leaf(x_np, device)
    for ours, ref in [(x.argmax(), np.argmax(x_np)), (x.argmin(dim=-1), np.argmin(x_np, axis=-1)),
                      (x.argmax(1, keepdim=True), np.argmax(x_np, axis=1, keepdims=True)),
                      (x.argmin(axis=0, keepdims=True), np.argmin(x_np, axis=0, keepdims=True))]:
        assert ours.dtype == np.int64 and ours.grad_fn is None
        np.testing.assert_array_equal(to_np(ours), ref)
    assert int(leaf(np.array(2.0), device).argmax().item()) == 0
    nan = leaf(np.array([1.0, np.nan, 3.0]), device)
    assert int(nan.argmax().item()) == 1 and np.isnan(to_np(nan.max()))     # NaN propagates, as PyTorch


def test_std_of_equal_elements_has_zero_gradient(device):
    """std is not differentiable where every element is equal (a cone's tip): the gradient is
    0 there (the smallest subgradient), never NaN; other rows are unaffected."""
    x = leaf(np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]), device)
    out = x.std(dim=1)
    close(out, [0.0, np.std([1.0, 2.0, 4.0], ddof=1)])
    out.sum().backward()
    g = to_np(x.grad)
    assert np.isfinite(g).all() and (g[0] == 0).all()
    close(g[1], (np.array([1.0, 2.0, 4.0]) - 7 / 3) / (2 * np.std([1.0, 2.0, 4.0], ddof=1)))


def test_mean_var_std_of_integers_are_float32(device):
    n = Tensor(np.array([1, 2, 4]), device=device)
    for out in (n.mean(), n.var(), n.std()):
        assert out.dtype == np.float32
    close(n.mean(), 7 / 3, rtol=1e-6)


# ------------------------------------------------------------------------------ cumsum

@with_fixtures
@given(shape=shapes(), data=st.data())
def test_cumsum(device, shape, data):
    dim = data.draw(st.integers(-max(len(shape), 1), max(len(shape), 1) - 1))
    x_np = data.draw(arrays(shape))
    ref = (lambda a: np.cumsum(a, axis=dim)) if shape else (lambda a: a)
    out, (dx,) = helper_test_op([x_np], lambda t: t.cumsum(dim), ref, device=device)
    assert out.shape == shape and dx.shape == shape


def test_cumsum_gradient_is_the_reversed_running_sum(device):
    x = leaf(np.zeros((2, 4)), device)
    g = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]])
    x.cumsum(dim=1).backward(g)
    close(x.grad, [[10.0, 9.0, 7.0, 4.0], [1.0, 1.0, 1.0, 1.0]])


def test_cumsum_edge_cases(device):
    n = Tensor(np.array([[True, False], [True, True]]), device=device)
    out = n.cumsum(0)
    assert out.dtype == np.int64 and (to_np(out) == [[1, 0], [2, 1]]).all()
    assert Tensor(np.array([1, 2], dtype=np.int32), device=device).cumsum(0).dtype == np.int64
    assert leaf(np.zeros((0, 3)), device).cumsum(0).shape == (0, 3)
    with np.errstate(invalid="ignore"):                                    # inf + -inf: NaN, as PyTorch
        close(leaf(np.array([1.0, np.inf, -np.inf, 2.0]), device).cumsum(0), [1.0, np.inf, np.nan, np.nan])
    h = leaf(np.ones(3, dtype=np.float16), device)
    assert h.cumsum(0).dtype == np.float16
    with pytest.raises(TypeError, match="dim"):
        h.cumsum()
    with pytest.raises(IndexError):
        h.cumsum(1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_new_reductions_match_torch(dtype):
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(5).standard_normal((3, 4, 5)) * 2).astype(dtype)
    helper_test_op([x], lambda t: t.std(1), torch_fn=lambda t: t.std(1))
    helper_test_op([x], lambda t: t.std(dim=(0, 2), correction=0, keepdim=True),
                   torch_fn=lambda t: t.std(dim=(0, 2), correction=0, keepdim=True))
    helper_test_op([x], lambda t: t.cumsum(-1), torch_fn=lambda t: t.cumsum(-1))
    helper_test_op([x], lambda t: t.cumsum(dim=0), torch_fn=lambda t: t.cumsum(dim=0))
    helper_test_op([x], lambda t: t.max(1).values, torch_fn=lambda t: t.max(1).values)
    helper_test_op([x], lambda t: t.min(2, keepdim=True)[0], torch_fn=lambda t: t.min(2, keepdim=True)[0])
    ours, theirs = Tensor(x).max(1), torch.tensor(x).max(1)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
