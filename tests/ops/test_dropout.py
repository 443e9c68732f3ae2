"""dropout (ops/dropout.py; a fast kernel on GPUs only, kernels/cuda.py) and the one dropout-mask helper: the output is
the input times the helper's mask, gradients, seeding, p = 0 and p = 1, float16, bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, manual_seed
from tinygrad_llm.ops.dropout import Dropout, dropout_mask


def test_dropout_identity_cases_record_no_node():
    x = leaf(np.ones((3, 4)))
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, p=0) is x


def test_dropout_is_inverted_and_its_gradient_is_the_same_mask(device):
    manual_seed(0)
    x = leaf(np.full((200, 500), 2.0, dtype=np.float32), device)
    y = F.dropout(x, 0.3)
    assert isinstance(y.grad_fn, Dropout) and y.grad_fn.inputs == (x,) and y.dtype == np.float32
    out = to_np(y)
    kept = out != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01                     # about p of the elements dropped
    np.testing.assert_allclose(out[kept], 2.0 / 0.7, rtol=1e-6)   # the rest scaled by 1 / (1 - p)
    g = np.random.default_rng(1).standard_normal((200, 500)).astype(np.float32)
    y.backward(Tensor(g, device=device))
    np.testing.assert_allclose(to_np(x.grad), np.where(kept, g / 0.7, 0.0), rtol=1e-6)


def test_dropout_is_reproducible_with_manual_seed():
    x = Tensor(np.ones((50, 50)))
    manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    manual_seed(123)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       p=st.sampled_from([0.1, 0.5, 0.9, 1.0]), seed=seeds)
def test_dropout_against_its_mask_and_gradcheck(device, shape, p, seed):
    """The output is x * keep / (1 - p) for the mask the shared helper draws; helper_test_op
    reseeds before every evaluation, so finite differences see the same mask."""
    x = np.random.default_rng(seed).standard_normal(shape)

    def expected(a):
        manual_seed(seed)
        keep = to_np(dropout_mask(device if device == "cpu" else "cuda:0", a.shape, p, a.dtype))
        return a * keep * (0.0 if p == 1.0 else 1.0 / (1.0 - p))
    helper_test_op([x], lambda t: F.dropout(t, p), expected, device=device, seed=seed)


def test_dropout_p_one_gives_zeros_and_zero_grad():
    x = leaf(np.random.default_rng(3).standard_normal((3, 3)))
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.numpy(), np.zeros((3, 3)))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros((3, 3)))


def test_dropout_bad_p():
    x = Tensor(np.ones(3))
    for p in (-0.1, 1.5, float("nan"), "0.5", True, None):
        with pytest.raises(ValueError, match="must be a number in"):
            F.dropout(x, p)
    with pytest.raises(TypeError, match="dropout: input must be a floating-point tensor"):
        F.dropout(Tensor(np.arange(3)), 0.5)


def test_dropout_mask_helper(device):
    dev = "cpu" if device == "cpu" else "cuda:0"
    manual_seed(4)
    a = to_np(dropout_mask(dev, (400, 50), 0.25, np.float32))
    manual_seed(4)
    b = to_np(dropout_mask(dev, (400, 50), 0.25, np.float16))     # float16 data: float32 draws, the same mask
    assert a.dtype == np.bool_ and a.shape == (400, 50)
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean() - 0.75) < 0.01
    assert to_np(dropout_mask(dev, (10,), 0.0, np.float64)).all()
    assert not to_np(dropout_mask(dev, (10,), 1.0, np.float64)).any()


def test_dropout_float16_and_0d(device):
    x = leaf(np.ones((30, 30), dtype=np.float16), device)
    y = F.dropout(x, 0.5)
    assert y.dtype == np.float16 and set(np.unique(to_np(y))) <= {0.0, 2.0}
    y.sum().backward()
    assert x.grad.dtype == np.float16
    z = leaf(np.array(3.0), device)
    manual_seed(0)
    out = F.dropout(z, 0.5)
    assert out.shape == () and out.item() in (0.0, 6.0)
    out.backward()
    assert z.grad.shape == () and float(to_np(z.grad)) == out.item() / 3.0
