"""embedding and dropout (tinygrad_llm.nn.functional): gradients, NumPy references, one graph
node each, seeding, bad inputs."""
import numpy as np
import pytest
from conftest import to_np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck, manual_seed
from tinygrad_llm.ops.dropout import Dropout
from tinygrad_llm.ops.embedding import Embedding, scatter_add_rows

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
seeds = st.integers(0, 2**32 - 1)


def leaf(a, device="cpu"):
    return Tensor(np.asarray(a), requires_grad=True, device=device)


# ============================================================================ embedding

@fixture_ok
@given(ids_shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), V=st.integers(1, 5),
       D=st.integers(1, 4), seed=seeds)
def test_embedding_gradcheck_with_repeated_ids(device, ids_shape, V, D, seed):
    rs = np.random.default_rng(seed)
    ids = rs.integers(0, V, ids_shape)           # V <= 5: repeats are the rule, not the exception
    w = leaf(rs.standard_normal((V, D)), device)
    gradcheck(lambda w: F.embedding(ids, w), [w])


def test_embedding_forward_and_grad_match_numpy(device):
    rs = np.random.default_rng(0)
    V, D = 7, 3
    ids = np.array([[1, 1, 6], [0, 1, 1]])
    w = rs.standard_normal((V, D)).astype(np.float32)
    g = rs.standard_normal((2, 3, D)).astype(np.float32)
    tw = leaf(w, device)
    out = F.embedding(Tensor(ids, device=device), tw)
    assert out.shape == (2, 3, D) and out.dtype == np.float32
    np.testing.assert_array_equal(to_np(out), w[ids])
    out.backward(Tensor(g, device=device))
    expect = np.zeros((V, D), np.float32)
    np.add.at(expect, ids.reshape(-1), g.reshape(-1, D))
    np.testing.assert_allclose(to_np(tw.grad), expect, rtol=1e-6)
    assert to_np(tw.grad)[1].tolist() == pytest.approx((g[0, 0] + g[0, 1] + g[1, 1] + g[1, 2]).tolist(), rel=1e-6)


@given(n=st.integers(0, 300), V=st.sampled_from([1, 3, 65, 1000]), D=st.integers(1, 5), seed=seeds)
def test_scatter_add_rows_matches_add_at(n, V, D, seed):
    rs = np.random.default_rng(seed)
    ids = rs.integers(0, V, n)
    g = rs.standard_normal((n, D))
    expect = np.zeros((V, D))
    np.add.at(expect, ids, g)
    np.testing.assert_allclose(scatter_add_rows(np, ids, g, V), expect, rtol=1e-12, atol=1e-12)


def test_embedding_accepts_arrays_lists_and_int_tensors():
    for ids in ([2, 0, 2], np.array([2, 0, 2], dtype=np.int32), np.array([2, 0, 2], dtype=np.uint8),
                Tensor([2, 0, 2])):
        w = Tensor(np.arange(900.0).reshape(3, 300), requires_grad=True)   # 2 * 300 > 255: uint8 must not wrap
        out = F.embedding(ids, w)
        np.testing.assert_array_equal(out.numpy(), w.numpy()[[2, 0, 2]])
        out.sum().backward()
        np.testing.assert_array_equal(w.grad, np.repeat([[1.0], [0.0], [2.0]], 300, axis=1))
    w = Tensor(np.arange(12.0).reshape(4, 3))
    assert F.embedding(3, w).shape == (3,)                 # a scalar id gives one row


def test_embedding_bad_inputs():
    w = Tensor(np.zeros((5, 2)))
    with pytest.raises(IndexError, match=r"id 5 is out of range .* 5 rows \(valid ids are 0..4\)"):
        F.embedding(np.array([0, 5]), w)
    with pytest.raises(IndexError, match="id -1 is out of range"):
        F.embedding(np.array([[0, -1]]), w)
    with pytest.raises(TypeError, match="ids must be integers"):
        F.embedding(np.array([0.0, 1.0]), w)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        F.embedding(np.array([0]), Tensor(np.zeros(5)))


# ============================================================================ dropout

def test_dropout_identity_cases_record_no_node():
    x = leaf(np.ones((3, 4)))
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, p=0) is x


def test_dropout_is_inverted_and_its_gradient_is_the_same_mask(device):
    manual_seed(0)
    x = leaf(np.full((200, 500), 2.0, dtype=np.float32), device)
    y = F.dropout(x, 0.3)
    assert type(y.grad_fn) is Dropout and y.grad_fn.inputs == (x,) and y.dtype == np.float32
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
def test_dropout_gradcheck(device, shape, p, seed):
    x = leaf(np.random.default_rng(seed).standard_normal(shape), device)

    def fn(x):
        manual_seed(seed)                   # the same mask on every call of the finite differences
        return F.dropout(x, p)
    gradcheck(fn, [x])


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
    with pytest.raises(TypeError, match="floating-point"):
        F.dropout(Tensor(np.arange(3)), 0.5)


def test_embedding_and_dropout_are_one_node_each():
    w = leaf(np.zeros((4, 2)))
    ids = Tensor(np.array([1, 2]))
    out = F.embedding(ids, w)
    assert type(out.grad_fn) is Embedding
    assert out.grad_fn.inputs[0] is ids and out.grad_fn.inputs[1] is w
