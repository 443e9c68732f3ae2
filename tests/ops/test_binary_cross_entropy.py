"""binary_cross_entropy and binary_cross_entropy_with_logits (ops/binary_cross_entropy.py):
losses and gradients (input and target) against NumPy, finite differences and PyTorch, with
weight, pos_weight and every reduction; p = 0 or 1 and huge logits stay finite; bad input.
No fast kernel."""
import warnings

import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor


def np_bce(p, t, w=None, reduction="mean"):
    L = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    L = L if w is None else L * w
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](L)


def np_bce_logits(x, t, w=None, pw=None, reduction="mean"):
    log_sig, log_1m_sig = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    L = -((1.0 if pw is None else pw) * t * log_sig + (1 - t) * log_1m_sig)
    L = L if w is None else L * w
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](L)


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), seed=seeds)
def test_bce_against_numpy_and_gradcheck(device, shape, reduction, weighted, seed):
    rs = np.random.default_rng(seed)
    p, t = rs.uniform(0.05, 0.95, shape), rs.uniform(0, 1, shape)
    w = rs.uniform(0.5, 2, shape[-1:]) if weighted else None
    out, (dp, dt) = helper_test_op([p, t], lambda a, b: F.binary_cross_entropy(a, b, weight=w, reduction=reduction),
                                   lambda a, b: np_bce(a, b, w, reduction), device=device)
    assert dp.shape == shape and dt.shape == shape


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), pos=st.booleans(), seed=seeds)
def test_bce_with_logits_against_numpy_and_gradcheck(device, shape, reduction, weighted, pos, seed):
    rs = np.random.default_rng(seed)
    x, t = rs.standard_normal(shape) * 3, rs.uniform(0, 1, shape)
    w = rs.uniform(0.5, 2, shape) if weighted else None
    pw = rs.uniform(0.5, 3, shape[-1:]) if pos else None
    helper_test_op([x, t], lambda a, b: F.binary_cross_entropy_with_logits(a, b, w, reduction, pos_weight=pw),
                   lambda a, b: np_bce_logits(a, b, w, pw, reduction), device=device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_torch(dtype, reduction):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rs = np.random.default_rng(1)
    p = np.concatenate([rs.uniform(0.01, 0.99, 20), [0.0, 1.0, 0.5, 1e-30]]).reshape(4, 6).astype(dtype)
    t = np.concatenate([rs.uniform(0, 1, 20), [0.0, 1.0, 1.0, 0.0]]).reshape(4, 6).astype(dtype)
    w = rs.uniform(0.5, 2, 6).astype(dtype)
    for grad in ([True, True], [True, False]):
        # the target's gradient, log(1 - p) - log(p), is PyTorch's only where p is not 0 or 1: PyTorch
        # gives +-inf there (unclamped logs), we the derivative of the clamped loss (+-100)
        pp = p if grad[1] is False else np.clip(p, 1e-6, 1 - 1e-6)
        helper_test_op([pp, t], lambda a, b: F.binary_cross_entropy(a, b, weight=Tensor(w), reduction=reduction),
                       torch_fn=lambda a, b: TF.binary_cross_entropy(a, b.to(a.dtype), weight=torch.tensor(w, dtype=a.dtype),
                                                                     reduction=reduction),
                       grad=grad, check_gradcheck=False)
    x = (np.concatenate([rs.standard_normal(20) * 4, [0.0, 50.0, -50.0, 800.0]])).reshape(4, 6).astype(dtype)
    pw = rs.uniform(0.5, 3, 6).astype(dtype)
    helper_test_op([x, t], lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=reduction, pos_weight=pw),
                   torch_fn=lambda a, b: TF.binary_cross_entropy_with_logits(
                       a, b, reduction=reduction, pos_weight=torch.tensor(pw, dtype=a.dtype)))


def test_bce_edges_are_finite(device):
    """p exactly 0 or 1 (the logs clamp at -100) and logits of +-1e4 (no overflow) stay finite."""
    p = leaf(np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32), device)
    t = Tensor(np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.binary_cross_entropy(p, t, reduction="none")
        loss.sum().backward()
        x = leaf(np.array([-1e4, 1e4, 0.0], dtype=np.float32), device)
        lx = F.binary_cross_entropy_with_logits(x, Tensor(np.array([1.0, 0.0, 0.5], dtype=np.float32), device=device),
                                                reduction="sum")
        lx.backward()
    np.testing.assert_array_equal(to_np(loss), [0.0, 0.0, 100.0, 100.0])
    assert np.isfinite(to_np(p.grad)).all() and loss.dtype == np.float32
    np.testing.assert_allclose(to_np(lx), 2e4 + np.log(2), rtol=1e-6)
    np.testing.assert_allclose(to_np(x.grad), [-1.0, 1.0, 0.0], atol=1e-7)
    nan = F.binary_cross_entropy_with_logits(leaf(np.array([np.nan, 1.0]), device), Tensor(np.ones(2), device=device),
                                             reduction="none")
    assert np.isnan(to_np(nan)[0]) and np.isfinite(to_np(nan)[1])           # NaN propagates, elementwise


def test_bce_bad_input():
    p = Tensor(np.full(3, 0.5))
    # values outside [0, 1], NaN included, are refused in the input and in the target (as PyTorch)
    for x, t, match in [([0.5, 1.5, 0.2], [0.5] * 3, r"input values must be in \[0, 1\] \(probabilities\), got 1.5"),
                        ([0.5, np.nan, 0.2], [0.5] * 3, r"input values must be in \[0, 1\].*got nan"),
                        ([0.5] * 3, [0.0, -0.5, 1.0], r"target values must be in \[0, 1\].*got -0.5"),
                        ([0.5] * 3, [0.0, np.nan, 1.0], r"target values must be in \[0, 1\].*got nan")]:
        with pytest.raises(RuntimeError, match=match):
            F.binary_cross_entropy(Tensor(np.array(x)), Tensor(np.array(t)))
    # a target Tensor of another float dtype: refused (PyTorch's BCE), cast in the logits form (PyTorch promotes)
    with pytest.raises(TypeError, match="target is float64 but the input is float32"):
        F.binary_cross_entropy(Tensor(np.full(3, 0.5, np.float32)), p)
    assert F.binary_cross_entropy_with_logits(Tensor(np.zeros(3, np.float32)), p).dtype == np.float32
    with pytest.raises(ValueError, match="target of shape"):
        F.binary_cross_entropy(p, Tensor(np.full(2, 0.5)))
    with pytest.raises(TypeError, match="floating point"):
        F.binary_cross_entropy(p, Tensor(np.array([0, 1, 1])))
    with pytest.raises(ValueError, match="reduction"):
        F.binary_cross_entropy_with_logits(p, p, reduction="avg")
    with pytest.raises(ValueError, match="does not broadcast"):
        F.binary_cross_entropy_with_logits(p, p, weight=np.ones(4))
    with pytest.raises(ValueError, match="pos_weight.*does not broadcast"):
        F.binary_cross_entropy_with_logits(Tensor(np.zeros((2, 3))), Tensor(np.zeros((2, 3))), pos_weight=np.ones(2))
    with pytest.raises(ValueError, match="constant"):
        F.binary_cross_entropy(p, p, weight=Tensor(np.ones(3), requires_grad=True))
    assert F.binary_cross_entropy(p, [0.0, 1.0, 1.0]).shape == ()             # a list target
