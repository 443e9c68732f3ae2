"""matmul / @ with NumPy's semantics: 1-D operands (vector), 2-D, batched N-D and broadcast
batch dims; forward against numpy.matmul, gradients of both sides against finite
differences (float64), and shape errors."""
import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from helper_op import helper_test_op
from strategies import arrays, matmul_shapes, with_fixtures

from tinygrad_llm import Tensor, gradcheck


def leaf(a, device, requires_grad=True):
    return Tensor(a, device=device, requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_np(actual), expected, rtol=rtol, atol=atol)


@with_fixtures
@given(sh=matmul_shapes(), data=st.data())
def test_matmul_property(device, sh, data):
    sa, sb = sh
    a_np, b_np = data.draw(arrays(sa)), data.draw(arrays(sb))
    out, (da, db) = helper_test_op([a_np, b_np], lambda x, y: x @ y, np.matmul, device=device)
    assert out.shape == np.matmul(a_np, b_np).shape
    close(leaf(a_np, device).matmul(leaf(b_np, device)), np.matmul(a_np, b_np))
    assert da.shape == sa and db.shape == sb


def _reference_grads(a, b, g):
    """dL/da, dL/db for L = sum(g * (a @ b)) with a, b of at least 2 dims, by broadcasting
    explicitly and summing over the broadcast batch dims."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    A = np.broadcast_to(a, batch + a.shape[-2:])
    B = np.broadcast_to(b, batch + b.shape[-2:])
    dA = g @ np.swapaxes(B, -1, -2)
    dB = np.swapaxes(A, -1, -2) @ g

    def reduce_to(x, shape):
        x = x.sum(axis=tuple(range(x.ndim - len(shape))))
        return x.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)
    return reduce_to(dA, a.shape), reduce_to(dB, b.shape)


def test_broadcast_batch_dims_4x3_at_1x3x3x3(device):
    """(4, 3) @ (1, 3, 3, 3): NumPy's shape (1, 3, 4, 3); a's gradient is summed over the
    whole batch, b's keeps its size-1 leading dim."""
    rs = np.random.default_rng(0)
    a_np, b_np = rs.standard_normal((4, 3)), rs.standard_normal((1, 3, 3, 3))
    a, b = leaf(a_np, device), leaf(b_np, device)
    out = a @ b
    assert out.shape == (1, 3, 4, 3) == np.matmul(a_np, b_np).shape
    close(out, np.matmul(a_np, b_np))
    g = rs.standard_normal(out.shape)
    out.backward(g)
    da, db = _reference_grads(a_np, b_np, g)
    close(a.grad, da)
    close(b.grad, db)
    assert a.grad.shape == (4, 3) and b.grad.shape == (1, 3, 3, 3)
    gradcheck(lambda x, y: x @ y, [a, b])


@pytest.mark.parametrize("sa, sb", [
    ((3,), (3,)),            # dot product: a 0-d result
    ((3,), (3, 2)),          # vector @ matrix
    ((2, 3), (3,)),          # matrix @ vector
    ((3,), (2, 3, 4)),       # vector @ batch of matrices
    ((2, 5, 3), (3,)),       # batch of matrices @ vector
    ((2, 1, 4, 3), (5, 3, 2)),  # batch dims broadcast both ways
])
def test_matmul_vector_and_batched_cases(device, sa, sb):
    rs = np.random.default_rng(1)
    a_np, b_np = rs.standard_normal(sa), rs.standard_normal(sb)
    a, b = leaf(a_np, device), leaf(b_np, device)
    out = a @ b
    assert out.shape == np.matmul(a_np, b_np).shape
    close(out, np.matmul(a_np, b_np))
    gradcheck(lambda x, y: x @ y, [a, b])


def test_matmul_with_numpy_operand_and_float32(device):
    rs = np.random.default_rng(2)
    a_np = rs.standard_normal((2, 3)).astype(np.float32)
    w_np = rs.standard_normal((3, 4)).astype(np.float32)
    a = leaf(a_np, device)
    out = a @ leaf(w_np, device, requires_grad=False)
    assert out.dtype == np.float32
    close(out, a_np @ w_np, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert a.grad.dtype == np.float32
    close(a.grad, np.ones((2, 4), np.float32) @ w_np.T, rtol=1e-5, atol=1e-6)
    # a NumPy array on the left defers to Tensor.__rmatmul__
    left = np.ones((5, 2), dtype=np.float32) @ a
    assert isinstance(left, Tensor) and left.shape == (5, 3)


def test_gradient_only_where_needed(device):
    a = leaf(np.ones((2, 3)), device)
    b = leaf(np.ones((3, 4)), device, requires_grad=False)
    (a @ b).sum().backward()
    close(a.grad, np.full((2, 3), 4.0))
    assert b.grad is None


def test_matmul_shape_errors(device):
    a = leaf(np.ones((2, 3)), device)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ leaf(np.ones((4, 5)), device)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        a @ leaf(np.array(2.0), device)
    with pytest.raises(ValueError):        # batch dims 2 and 3 do not broadcast
        leaf(np.ones((2, 2, 3)), device) @ leaf(np.ones((3, 3, 4)), device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((4,), (4, 2)), ((2, 3), (3,)), ((4,), (4,)),
                                    ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5))])
def test_matches_torch(dtype, sa, sb):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(len(sa) * 10 + len(sb))
    helper_test_op([rs.standard_normal(sa).astype(dtype), rs.standard_normal(sb).astype(dtype)],
                   lambda a, b: a @ b, torch_fn=torch.matmul)


def test_mixed_dtypes_are_refused_as_pytorch_does(device):
    """float32 @ float64 (or int @ float) raises, naming both dtypes, instead of promoting to
    float64 silently; the error is a TypeError and, as in PyTorch, a RuntimeError."""
    a = leaf(np.ones((2, 3), dtype=np.float32), device)
    for b in (leaf(np.ones((3, 4)), device), Tensor(np.ones((3, 4), dtype=np.int64), device=device)):
        for fn in (lambda: a @ b, lambda: b.T @ a.T, lambda: a.matmul(b)):
            with pytest.raises(TypeError, match=r"float32 and (float64|int64)|(float64|int64) and float32"):
                fn()
            with pytest.raises(RuntimeError):
                fn()
    assert (a @ a.T).dtype == np.float32


def test_dot(device):
    a, b = leaf(np.array([1.0, 2.0, 3.0]), device), leaf(np.array([4.0, -1.0, 0.5]), device)
    out = a.dot(b)
    assert out.shape == ()
    close(out, 3.5)
    out.backward()
    close(a.grad, [4.0, -1.0, 0.5])
    close(b.grad, [1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match="1-D"):
        leaf(np.ones((2, 2)), device).dot(leaf(np.ones((2, 2)), device))
    with pytest.raises(RuntimeError, match="one size"):
        a.dot(leaf(np.ones(2), device))
    with pytest.raises(RuntimeError, match="one dtype"):
        a.dot(leaf(np.ones(3, dtype=np.float32), device))
