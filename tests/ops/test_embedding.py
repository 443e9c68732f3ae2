"""embedding (ops/embedding.py, fast CPU scatter-add in kernels/cpu.py): forward and
gradients against NumPy, PyTorch and finite differences on both tiers, the tiers against
each other, repeated ids, id kinds, bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds, tiers_agree
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor
from tinygrad_llm.kernels.cpu import scatter_add_rows
from tinygrad_llm.ops.embedding import Embedding


@fixture_ok
@given(ids_shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), V=st.integers(1, 5),
       D=st.integers(1, 4), seed=seeds)
def test_embedding_against_numpy_and_gradcheck_with_repeated_ids(device, tier, ids_shape, V, D, seed):
    rs = np.random.default_rng(seed)
    ids = rs.integers(0, V, ids_shape)           # V <= 5: repeats are the rule, not the exception
    helper_test_op([ids, rs.standard_normal((V, D))], lambda i, w: F.embedding(i, w), lambda i, w: w[i], device=device)


def test_embedding_forward_and_grad_match_numpy(device, tier):
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
    np.testing.assert_allclose(scatter_add_rows(ids, g, V), expect, rtol=1e-12, atol=1e-12)


def test_embedding_accepts_arrays_lists_and_int_tensors(tier):
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_embedding_matches_torch(tier, dtype):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(6)
    ids = rs.integers(0, 9, (4, 13))
    helper_test_op([ids, rs.standard_normal((9, 5)).astype(dtype)], lambda i, w: F.embedding(i, w),
                   torch_fn=lambda i, w: torch.nn.functional.embedding(i, w))


@given(ids_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple), V=st.integers(1, 70),
       D=st.integers(1, 5), dtype=st.sampled_from([np.float64, np.float32]),
       id_dtype=st.sampled_from([np.int64, np.int32, np.uint8]), seed=seeds)
def test_embedding_fast_tier_equals_reference(ids_shape, V, D, dtype, id_dtype, seed):
    """The same additions in the same order (row by row, then column by column): bitwise equal."""
    rs = np.random.default_rng(seed)
    ids = rs.integers(0, min(V, 256), ids_shape).astype(id_dtype)
    tiers_agree(lambda i, w: F.embedding(i, w), [ids, rs.standard_normal((V, D)).astype(dtype)], exact=True)


def test_embedding_is_one_node():
    w = leaf(np.zeros((4, 2)))
    ids = Tensor(np.array([1, 2]))
    out = F.embedding(ids, w)
    assert isinstance(out.grad_fn, Embedding) and out.grad_fn.name == "Embedding"
    assert out.grad_fn.inputs[0] is ids and out.grad_fn.inputs[1] is w


# ------------------------------------------------------------------------------ padding_idx

@pytest.mark.parametrize("padding_idx", [0, 3, -1])
def test_padding_idx_row_gets_no_gradient(device, tier, padding_idx):
    rs = np.random.default_rng(5)
    V, D = 5, 3
    ids = np.array([[0, 3, 4], [3, 3, 1]])
    w = leaf(rs.standard_normal((V, D)), device)
    out = F.embedding(Tensor(ids, device=device), w, padding_idx=padding_idx)
    np.testing.assert_array_equal(to_np(out), to_np(w)[ids])          # the lookup itself is unchanged
    g = rs.standard_normal((2, 3, D))
    out.backward(Tensor(g, device=device))
    expect = np.zeros((V, D))
    np.add.at(expect, ids.reshape(-1), g.reshape(-1, D))
    expect[padding_idx] = 0
    np.testing.assert_allclose(to_np(w.grad), expect, rtol=1e-12)


def test_padding_idx_matches_torch_and_the_module():
    torch = pytest.importorskip("torch")
    import tinygrad_llm.nn as nn
    rs = np.random.default_rng(6)
    ids, w = rs.integers(0, 6, (4, 5)), rs.standard_normal((6, 3))
    helper_test_op([ids, w], lambda i, t: F.embedding(i, t, padding_idx=2),
                   torch_fn=lambda i, t: torch.nn.functional.embedding(i, t, padding_idx=2),
                   check_gradcheck=False)          # row 2's gradient is withheld on purpose: not the derivative
    m = nn.Embedding(6, 3, padding_idx=-2)
    assert m.padding_idx == 4 and (m.weight.numpy()[4] == 0).all() and "padding_idx=4" in repr(m)
    m(Tensor(np.array([4, 4, 1]))).sum().backward()
    assert (m.weight.grad[4] == 0).all() and (m.weight.grad[1] == 1).all()
    with pytest.raises(ValueError, match="padding_idx"):
        F.embedding(Tensor(np.array([0])), Tensor(w), padding_idx=6)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(6, 3, padding_idx=-7)
