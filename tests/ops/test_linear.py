"""linear (ops/linear.py, fast kernel in kernels/cpu.py): forward and gradients against NumPy,
PyTorch and finite differences on both tiers, the tiers against each other, shapes, views,
dtypes and bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds, tiers_agree
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def np_linear(x, w, b=None):
    return x @ w.T + (0 if b is None else b)


@fixture_ok
@given(lead=lead_dims, n_in=st.integers(1, 5), n_out=st.integers(1, 5), bias=st.booleans(), seed=seeds)
def test_linear_against_numpy_and_gradcheck(device, tier, lead, n_in, n_out, bias, seed):
    rs = np.random.default_rng(seed)
    arrays = [rs.standard_normal(lead + (n_in,)), rs.standard_normal((n_out, n_in))]
    arrays += [rs.standard_normal(n_out)] if bias else []
    helper_test_op(arrays, F.linear, np_linear, device=device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(tier, dtype, bias):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(0)
    arrays = [rs.standard_normal((3, 5, 8)), rs.standard_normal((6, 8))] + ([rs.standard_normal(6)] if bias else [])
    helper_test_op([a.astype(dtype) for a in arrays], F.linear, torch_fn=torch.nn.functional.linear)


@given(lead=lead_dims, n_in=st.integers(1, 6), n_out=st.integers(1, 6), bias=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=seeds)
def test_linear_fast_tier_equals_reference(lead, n_in, n_out, bias, dtype, seed):
    """The same GEMMs in the same order: bitwise equal."""
    rs = np.random.default_rng(seed)
    arrays = [rs.standard_normal(lead + (n_in,)), rs.standard_normal((n_out, n_in))]
    arrays += [rs.standard_normal(n_out)] if bias else []
    tiers_agree(F.linear, [a.astype(dtype) for a in arrays], exact=True)


def test_linear_forward_and_grads_match_numpy(device, tier):
    rs = np.random.default_rng(0)
    x, w, b = rs.standard_normal((2, 3, 4)), rs.standard_normal((5, 4)), rs.standard_normal(5)
    g = rs.standard_normal((2, 3, 5))
    tx, tw, tb = leaf(x, device), leaf(w, device), leaf(b, device)
    y = F.linear(tx, tw, tb)
    np.testing.assert_allclose(to_np(y), x @ w.T + b, rtol=1e-12, atol=1e-12)
    y.backward(Tensor(g, device=device))
    g2, x2 = g.reshape(6, 5), x.reshape(6, 4)
    np.testing.assert_allclose(to_np(tx.grad), (g2 @ w).reshape(x.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(tw.grad), g2.T @ x2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(tb.grad), g2.sum(0), rtol=1e-12, atol=1e-12)


def test_linear_1d_input_and_no_bias(tier):
    rs = np.random.default_rng(1)
    x, w = leaf(rs.standard_normal(4)), leaf(rs.standard_normal((3, 4)))
    y = F.linear(x, w)
    assert y.shape == (3,)
    np.testing.assert_allclose(y.numpy(), w.numpy() @ x.numpy())
    gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_float32_stays_float32_and_reshape_is_a_view(tier):
    rs = np.random.default_rng(2)
    x = leaf(rs.standard_normal((4, 8, 16)).astype(np.float32))
    w = leaf(rs.standard_normal((32, 16)).astype(np.float32))
    b = leaf(np.zeros(32, np.float32))
    y = F.linear(x, w, b)
    assert y.dtype == np.float32
    assert np.shares_memory(y.grad_fn.x2, x.data)          # no copy of the input
    y.sum().backward()                                       # the gradient is a broadcast view
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, np.broadcast_to(w.numpy().sum(0), x.shape), rtol=1e-5)
    np.testing.assert_allclose(b.grad, np.full(32, 32.0), rtol=1e-6)


def test_linear_non_contiguous_input(tier):
    rs = np.random.default_rng(3)
    base = rs.standard_normal((6, 4, 5))
    xt = leaf(base).transpose(1, 0, 2)[:, ::2]               # a strided view (4, 3, 5)
    w = leaf(rs.standard_normal((2, 5)))
    np.testing.assert_allclose(F.linear(xt, w).numpy(), to_np(xt) @ w.numpy().T, rtol=1e-12)
    gradcheck(lambda x, w: F.linear(x.transpose(1, 0, 2)[:, ::2], w), [leaf(base), w])


def test_linear_zero_rows(tier):
    x, w, b = leaf(np.zeros((0, 3))), leaf(np.ones((2, 3))), leaf(np.ones(2))
    y = F.linear(x, w, b)
    assert y.shape == (0, 2)
    y.sum().backward()
    assert x.grad.shape == (0, 3) and (w.grad == 0).all() and (b.grad == 0).all()


def test_linear_bad_shapes():
    x = Tensor(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="in_features=3"):
        F.linear(x, Tensor(np.zeros((5, 3))))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        F.linear(x, Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        F.linear(x, Tensor(np.zeros((5, 4))), Tensor(np.zeros(4)))
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        F.linear(x, np.zeros((5, 4)))


@given(lead=lead_dims, n_in=st.integers(1, 6), n_out=st.integers(1, 6), bias=st.booleans(), seed=seeds)
def test_linear_fast_tier_float16_products_in_float32(lead, n_in, n_out, bias, seed):
    """float16: the fast tier multiplies in float32 and rounds (NumPy has no float16 GEMM);
    the reference multiplies in NumPy's float16 loop: equal to float16 rounding."""
    rs = np.random.default_rng(seed)
    arrays = [rs.standard_normal(lead + (n_in,)), rs.standard_normal((n_out, n_in))]
    arrays += [rs.standard_normal(n_out)] if bias else []
    tiers_agree(F.linear, [a.astype(np.float16) for a in arrays], rtol=1e-2, atol=2e-2)


def test_linear_refuses_mixed_dtypes():
    """As PyTorch: float32 input with a float64 weight (or bias) raises instead of promoting."""
    x = Tensor(np.zeros((2, 4), dtype=np.float32))
    for w, b in ((Tensor(np.zeros((5, 4))), None), (Tensor(np.zeros((5, 4), dtype=np.float32)), Tensor(np.zeros(5)))):
        with pytest.raises(TypeError, match="one dtype"):
            F.linear(x, w, b)
        with pytest.raises(RuntimeError, match="one dtype"):
            F.linear(x, w, b)
