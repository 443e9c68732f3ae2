"""Movement ops: reshape/view, transpose/permute/swapaxes/.T, expand/broadcast_to, squeeze,
unsqueeze, flatten, __getitem__ (basic and advanced indexing), cat, stack, split, chunk.
Forward against NumPy, gradients against finite differences (float64), bad input. No op
here has a fast kernel."""
import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from helper_op import helper_test_op
from strategies import arrays, shape_broadcasting_to, shapes, with_fixtures

import tinygrad_llm as tg
from tinygrad_llm import Tensor, gradcheck


def leaf(a, device, requires_grad=True):
    return Tensor(a, device=device, requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_np(actual), expected, rtol=rtol, atol=atol)


def check(device, x_np, fn, np_fn):
    """fn(Tensor) agrees with np_fn(array) and has correct gradients."""
    out, _ = helper_test_op([x_np], fn, np_fn, device=device)
    assert out.shape == np.shape(np_fn(x_np))
    return leaf(x_np, device)


# ------------------------------------------------------------------------------ reshape family
@with_fixtures
@given(shape=shapes(), data=st.data())
def test_reshape_and_view(device, shape, data):
    x_np = data.draw(arrays(shape))
    size = x_np.size
    # a random factorisation of the size, with one -1
    target = list(data.draw(st.permutations(list(shape) + [1])))
    if target and data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    check(device, x_np, lambda t: t.reshape(*target), lambda a: a.reshape(target))
    check(device, x_np, lambda t: t.view(tuple(target)), lambda a: a.reshape(target))
    check(device, x_np, lambda t: t.reshape(size), lambda a: a.reshape(size))


def test_reshape_errors_name_both_shapes(device):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        leaf(np.zeros((2, 3)), device).reshape(4, 2)


@with_fixtures
@given(shape=shapes(min_dims=1), data=st.data())
def test_permute_and_transpose(device, shape, data):
    x_np = data.draw(arrays(shape))
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)))
    neg = tuple(p - nd if data.draw(st.booleans()) else p for p in perm)
    check(device, x_np, lambda t: t.permute(*neg), lambda a: np.transpose(a, perm))
    check(device, x_np, lambda t: t.permute(neg), lambda a: np.transpose(a, perm))
    check(device, x_np, lambda t: t.transpose(), lambda a: a.transpose())
    check(device, x_np, lambda t: t.T, lambda a: a.T)
    if nd != 2:        # a full permutation, NumPy's transpose(*axes)
        check(device, x_np, lambda t: t.transpose(*perm), lambda a: np.transpose(a, perm))
    i, j = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    check(device, x_np, lambda t: t.swapaxes(i, j), lambda a: np.swapaxes(a, i, j))


def test_transpose_two_axes_swaps_them(device):
    x_np = np.arange(24.0).reshape(2, 3, 4)
    check(device, x_np, lambda t: t.transpose(0, 2), lambda a: np.swapaxes(a, 0, 2))
    check(device, x_np, lambda t: t.transpose(-1, -2), lambda a: np.swapaxes(a, -1, -2))
    check(device, x_np[0], lambda t: t.transpose(1, 0), lambda a: a.T)
    check(device, x_np[0], lambda t: t.transpose(0, 1), lambda a: a.T)      # 2-D too: a swap, as PyTorch
    check(device, x_np[0], lambda t: t.transpose(dim0=1, dim1=0), lambda a: a.T)
    check(device, x_np, lambda t: t.transpose(1, 1), lambda a: a)


def test_axes_out_of_range(device):
    x = leaf(np.zeros((2, 3, 4)), device)
    with pytest.raises(IndexError, match="out of range"):
        x.permute(0, 1, 5)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 1, 1)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 1)
    with pytest.raises(IndexError, match="axis 3"):
        x.swapaxes(0, 3)
    with pytest.raises(IndexError):
        x.transpose(0, -4)
    with pytest.raises(IndexError):
        x.flatten(0, 3)
    with pytest.raises(IndexError):
        x.unsqueeze(4)
    with pytest.raises(IndexError):
        x.split(1, axis=3)
    with pytest.raises(IndexError):
        tg.cat([x, x], axis=3)
    with pytest.raises(IndexError):
        tg.stack([x, x], axis=-5)


@with_fixtures
@given(target=shapes(), data=st.data())
def test_expand_and_broadcast_to(device, target, data):
    src = data.draw(shape_broadcasting_to(target))
    x_np = data.draw(arrays(src))
    check(device, x_np, lambda t: t.broadcast_to(target), lambda a: np.broadcast_to(a, target))
    check(device, x_np, lambda t: t.expand(*target), lambda a: np.broadcast_to(a, target))
    # PyTorch's -1: keep that (existing) dimension
    keep = tuple(-1 if i >= len(target) - len(src) and src[i - len(target) + len(src)] == n else n
                 for i, n in enumerate(target))
    check(device, x_np, lambda t: t.expand(keep), lambda a: np.broadcast_to(a, target))


def test_expand_error(device):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 3\)"):
        leaf(np.zeros((2, 3)), device).expand(4, 3)


@with_fixtures
@given(shape=shapes(max_side=2), data=st.data())
def test_squeeze_unsqueeze_flatten(device, shape, data):
    x_np = data.draw(arrays(shape))
    nd = len(shape)
    check(device, x_np, lambda t: t.squeeze(), lambda a: np.squeeze(a))
    if nd:
        ax = data.draw(st.integers(-nd, nd - 1))
        # squeezing an axis that is not size 1 leaves it alone (PyTorch's rule)
        np_sq = (lambda a: np.squeeze(a, axis=ax)) if shape[ax] == 1 else (lambda a: a)
        check(device, x_np, lambda t: t.squeeze(ax), np_sq)
        check(device, x_np, lambda t: t.squeeze(dim=ax), np_sq)
        s, e = sorted(data.draw(st.lists(st.integers(0, nd - 1), min_size=2, max_size=2)))
        check(device, x_np, lambda t: t.flatten(s, e),
              lambda a: a.reshape(shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]))
    ua = data.draw(st.integers(-nd - 1, nd))
    check(device, x_np, lambda t: t.unsqueeze(ua), lambda a: np.expand_dims(a, ua))
    check(device, x_np, lambda t: t.flatten(), lambda a: a.reshape(-1))


# ------------------------------------------------------------------------------ __getitem__
@with_fixtures
@given(shape=shapes(min_dims=1, max_side=5), data=st.data())
def test_getitem_basic_indices(device, shape, data):
    """ints, slices with any step (negative too), None and Ellipsis."""
    x_np = data.draw(arrays(shape))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    check(device, x_np, lambda t: t[index], lambda a: a[index])


@with_fixtures
@given(shape=shapes(min_dims=1, max_side=5), data=st.data())
def test_getitem_integer_arrays(device, shape, data):
    """Integer-array gather; indices repeat often, and backward scatter-adds them."""
    x_np = data.draw(arrays(shape))
    index = data.draw(hnp.integer_array_indices(
        shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=6)))
    t_index = tuple(Tensor(i, device=device) for i in index)     # index tensors on the same device
    x = check(device, x_np, lambda t: t[t_index], lambda a: a[index])
    # the gradient counts how often each element was picked
    x.grad = None
    x[t_index].sum().backward()
    counts = np.zeros(shape)
    np.add.at(counts, index, 1.0)
    close(x.grad, counts)
    # lists work as indices too, and on the CPU plain NumPy arrays
    close(x[[0, 0, -1]], x_np[[0, 0, -1]])
    if device == "cpu":
        close(x[index], x_np[index])


def test_getitem_repeated_indices_scatter_add(device):
    x = leaf(np.arange(5.0), device)
    out = x[Tensor(np.array([1, 3, 1, 1, 4]), device=device)]
    close(out, [1.0, 3.0, 1.0, 1.0, 4.0])
    out.backward(np.array([1.0, 10.0, 100.0, 1000.0, 5.0]))
    close(x.grad, [0.0, 1101.0, 0.0, 10.0, 5.0])


def test_getitem_mixed_and_boolean(device):
    x_np = np.arange(60.0).reshape(3, 4, 5)
    idx = np.array([[0, 2], [2, 2]])
    t_idx = Tensor(idx, device=device)
    check(device, x_np, lambda t: t[t_idx, 1:3], lambda a: a[idx, 1:3])
    check(device, x_np, lambda t: t[..., t_idx], lambda a: a[..., idx])
    # an int beside an index array: PyTorch selects with the int first (NumPy would put idx's dims first)
    check(device, x_np, lambda t: t[1, ::-2, t_idx[0]], lambda a: a[1][::-2][:, idx[0]])
    rs = np.random.default_rng(0)
    mask = rs.random((3, 4, 5)) < 0.4
    x = check(device, x_np, lambda t: t[Tensor(mask, device=device)], lambda a: a[mask])
    x.grad = None
    x[Tensor(mask, device=device)].sum().backward()
    close(x.grad, mask.astype(np.float64))
    row_mask = np.array([True, False, True])
    check(device, x_np, lambda t: t[Tensor(row_mask, device=device)], lambda a: a[row_mask])
    check(device, x_np, lambda t: t[t > 30.5], lambda a: a[a > 30.5])     # a mask made from the tensor


def test_getitem_out_of_range(device):
    with pytest.raises(IndexError):
        leaf(np.zeros((2, 3)), device)[2]


# ------------------------------------------------------------------------------ cat / stack / split / chunk
@with_fixtures
@given(shape=shapes(min_dims=1), n=st.integers(1, 3), data=st.data())
def test_cat(device, shape, n, data):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    pieces = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        pieces.append(data.draw(arrays(tuple(s))))
    xs = [leaf(p, device) for p in pieces]
    out = tg.cat(xs, axis=axis)
    close(out, np.concatenate(pieces, axis=axis))
    close(tg.cat(xs, dim=axis), np.concatenate(pieces, axis=axis))
    gradcheck(lambda *ts: tg.cat(ts, axis=axis), xs)


@with_fixtures
@given(shape=shapes(), n=st.integers(1, 3), data=st.data())
def test_stack(device, shape, n, data):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    pieces = [data.draw(arrays(shape)) for _ in range(n)]
    xs = [leaf(p, device) for p in pieces]
    close(tg.stack(xs, axis=axis), np.stack(pieces, axis=axis))
    gradcheck(lambda *ts: tg.stack(ts, axis=axis), xs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(0)
    x, y = rs.standard_normal((2, 3, 4)).astype(dtype), rs.standard_normal((2, 3, 4)).astype(dtype)
    helper_test_op([x], lambda t: t.reshape(4, 6), torch_fn=lambda t: t.reshape(4, 6))
    helper_test_op([x], lambda t: t.permute(2, 0, 1), torch_fn=lambda t: t.permute(2, 0, 1))
    helper_test_op([x[:, :1]], lambda t: t.expand(2, 5, 4), torch_fn=lambda t: t.expand(2, 5, 4))
    helper_test_op([x], lambda t: t[1:, [0, 2, 2], ::2], torch_fn=lambda t: t[1:, [0, 2, 2], ::2])
    helper_test_op([x, y], lambda a, b: tg.cat([a, b], axis=1), torch_fn=lambda a, b: torch.cat([a, b], 1))
    helper_test_op([x, y], lambda a, b: tg.stack([a, b], axis=-1), torch_fn=lambda a, b: torch.stack([a, b], -1))


def test_cat_stack_errors(device):
    a, b = leaf(np.zeros((2, 3)), device), leaf(np.zeros((2, 4)), device)
    with pytest.raises(ValueError, match="differ"):
        tg.cat([a, b], axis=0)
    with pytest.raises(ValueError, match="shapes must match"):
        tg.stack([a, b])
    with pytest.raises(ValueError, match="at least one"):
        tg.cat([])
    with pytest.raises(ValueError, match="at least one"):
        tg.stack([])


@with_fixtures
@given(shape=shapes(min_dims=1, max_side=6), data=st.data())
def test_split_and_chunk(device, shape, data):
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    n = shape[axis]
    x_np = data.draw(arrays(shape))
    x = leaf(x_np, device)
    size = data.draw(st.integers(1, n + 1))
    pieces = x.split(size, axis=axis)
    bounds = list(range(size, n, size))
    expected = np.split(x_np, bounds, axis=axis)
    assert [p.shape for p in pieces] == [e.shape for e in expected]
    for p, e in zip(pieces, expected):
        close(p, e)
    # a list of sizes
    cut = data.draw(st.integers(0, n))
    sizes = [cut, n - cut]
    for p, e in zip(x.split(sizes, dim=axis), np.split(x_np, [cut], axis=axis)):
        close(p, e)
    # chunk: pieces of size ceil(n / chunks), as PyTorch
    chunks = data.draw(st.integers(1, 4))
    step = -(-n // chunks)
    got = x.chunk(chunks, axis=axis)
    want = np.split(x_np, list(range(step, n, step)), axis=axis)
    assert len(got) == len(want)
    for p, e in zip(got, want):
        close(p, e)
    # gradients: every piece used with a different weight
    gradcheck(lambda t: sum((p * (i + 1.0)).sum() for i, p in enumerate(t.split(size, axis=axis))), [x])


def test_split_errors(device):
    x = leaf(np.zeros((5, 2)), device)
    with pytest.raises(ValueError, match="do not add up to 5"):
        x.split([2, 2])
    with pytest.raises(ValueError, match="positive"):
        x.split(0)
    with pytest.raises(ValueError, match="positive"):
        x.chunk(0)
