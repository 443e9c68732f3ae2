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
import tinygrad_llm.nn.functional as F
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


# ------------------------------------------------------------------------------ PyTorch's indexing rule

@st.composite
def torch_style_indices(draw, shape):
    """(index items, as ('int', i) / ('slice', s) / ('array', ints) / ('mask', bools) / ('none',) /
    ('ellipsis',)) for a tensor of ``shape``: ints, slices, None, Ellipsis and index arrays mixed."""
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr_shape = draw(st.sampled_from([(2,), (2, 3), ()]))
    items, dims = [], list(range(len(shape)))
    ellipsis_at = draw(st.integers(-1, len(shape)))          # -1: no Ellipsis
    for d in dims[:draw(st.integers(1, len(shape)))]:
        if d == ellipsis_at:
            items.append(("ellipsis",))
            break
        n = shape[d]
        kind = draw(st.sampled_from(["int", "slice", "array", "array", "mask", "none"]))
        if kind == "int":
            items.append(("int", int(rs.integers(-n, n))))
        elif kind == "slice":
            start, stop = sorted(rs.integers(-n - 1, n + 2, size=2).tolist())
            items.append(("slice", slice(start, stop, int(rs.choice([1, 2])))))     # PyTorch has no negative steps
        elif kind == "array":
            items.append(("array", rs.integers(-n, n, size=arr_shape)))
        elif kind == "mask" and not any(it[0] == "mask" for it in items):
            items.append(("mask", rs.random(n) < 0.6))
        else:
            items.append(("none",))
            items.append(("slice", slice(None)))
    return items


def _index_for(items, make):
    out = []
    for it in items:
        out.append({"int": lambda: it[1], "slice": lambda: it[1], "none": lambda: None,
                    "ellipsis": lambda: Ellipsis}.get(it[0], lambda: make(it[1]))())
    return tuple(out)


@with_fixtures
@given(shape=shapes(min_dims=1, max_dims=4, max_side=4), data=st.data())
def test_getitem_follows_pytorchs_rule(device, shape, data):
    """Any mix of ints, slices, None, Ellipsis, integer index tensors and boolean masks gives
    PyTorch's values, shape and gradient (where NumPy would place the indexed dims first)."""
    torch = pytest.importorskip("torch")
    items = data.draw(torch_style_indices(shape))
    if sum(it[0] in ("array", "mask") for it in items) > 1 and any(it[0] == "mask" for it in items):
        return      # a mask beside other index arrays must broadcast with them: not drawn here
    x_np = data.draw(arrays(shape))
    ours_index = _index_for(items, lambda a: Tensor(a, device=device))
    torch_index = _index_for(items, torch.tensor)
    try:
        expected = torch.tensor(x_np, requires_grad=True)[torch_index]
    except (IndexError, RuntimeError):
        with pytest.raises((IndexError, RuntimeError)):
            leaf(x_np, device)[ours_index]
        return
    helper_test_op([x_np], lambda t: t[ours_index], torch_fn=lambda t: t[torch_index], device=device,
                   check_gradcheck=False)
    assert leaf(x_np, device)[ours_index].shape == tuple(expected.shape)


def test_getitem_pytorch_examples(device):
    """The issue's examples: x[1, :, 3:11:2, d, 0:2], x[[[0]]], and a list holding an index tensor."""
    x_np = np.random.default_rng(0).standard_normal((3, 5, 12, 6, 4))
    d = np.array([[0, 1], [2, 3]])
    x = leaf(x_np, device)
    out = x[1, :, 3:11:2, Tensor(d, device=device), 0:2]
    assert out.shape == (5, 4, 2, 2, 2)                               # NumPy: (2, 2, 5, 4, 2)
    close(out, x_np[1][:, 3:11:2][:, :, d][..., 0:2])
    y_np = np.arange(42.0).reshape(6, 7)
    y = leaf(y_np, device)
    close(y[[[0]]], y_np[[0]])                                        # a list of lists: a tuple, as PyTorch
    t = Tensor(np.array([0, 2]), device=device)
    close(y[[t, 1]], y_np[[0, 2], 1])                                 # a list holding a tensor: a tuple
    close(y[[0, 2]], y_np[[0, 2]])                                    # a plain list: one index array
    close(y[Tensor(np.array(3), device=device), t], y_np[3, [0, 2]])  # a 0-d tensor selects as an int
    y[[t, 1]].sum().backward()
    expected = np.zeros((6, 7))
    expected[[0, 2], 1] = 1.0
    close(y.grad, expected)


def test_setitem_follows_pytorchs_rule(device):
    x = Tensor(np.zeros((2, 3, 4)), device=device)
    x[1, :, Tensor(np.array([0, 3]), device=device)] = Tensor(np.arange(6.0).reshape(3, 2), device=device)
    expected = np.zeros((2, 3, 4))
    expected[1][:, [0, 3]] = np.arange(6.0).reshape(3, 2)
    close(x, expected)


# ------------------------------------------------------------------------------ PyTorch's keyword forms

def test_pytorch_keyword_forms(device):
    x_np = np.arange(6.0).reshape(2, 3)
    check(device, x_np, lambda t: t.reshape(shape=(3, 2)), lambda a: a.reshape(3, 2))
    check(device, x_np, lambda t: t.view(size=(6,)), lambda a: a.reshape(6))
    check(device, x_np, lambda t: t.view((3, 2)), lambda a: a.reshape(3, 2))
    check(device, x_np, lambda t: t.expand(size=(4, 2, 3)), lambda a: np.broadcast_to(a, (4, 2, 3)))
    check(device, x_np, lambda t: t.expand(-1, 3), lambda a: a)
    check(device, x_np, lambda t: t.permute(dims=(1, 0)), lambda a: a.T)
    check(device, x_np, lambda t: t.transpose(dim0=0, dim1=1), lambda a: a.T)
    check(device, x_np, lambda t: t.repeat(repeats=(2, 1)), lambda a: np.tile(a, (2, 1)))
    check(device, x_np, lambda t: t.flip(dims=(0,)), lambda a: a[::-1])
    check(device, x_np, lambda t: t.unflatten(dim=1, sizes=(3, 1)), lambda a: a.reshape(2, 3, 1))
    x = leaf(x_np, device)
    assert x.contiguous() is x and x.T.contiguous().shape == (3, 2)
    close(x.cat(x, dim=1), np.concatenate([x_np, x_np], 1))
    close(tg.cat((x, x), 0), np.concatenate([x_np, x_np], 0))
    with pytest.raises(TypeError, match="positionally or as shape="):
        x.reshape(6, shape=(6,))
    with pytest.raises(TypeError, match="dim0 and dim1"):
        x.transpose(0, dim1=1)


# ------------------------------------------------------------------------------ flip, repeat, unflatten

@with_fixtures
@given(shape=shapes(), data=st.data())
def test_flip(device, shape, data):
    x_np = data.draw(arrays(shape))
    dims = data.draw(st.lists(st.integers(-max(len(shape), 1), max(len(shape), 1) - 1), max_size=3, unique=True)) \
        if shape else []
    dims = [d for i, d in enumerate(dims) if d % len(shape) not in [e % len(shape) for e in dims[:i]]] if shape else []
    out, _ = helper_test_op([x_np], lambda t: t.flip(dims), lambda a: np.flip(a, dims) if dims else a.copy(),
                            device=device)
    x = Tensor(x_np, device=device)
    y = x.flip(0) if shape else x.flip(())
    y.data[...] = 0                                                    # a copy, as PyTorch: x unchanged
    np.testing.assert_array_equal(to_np(x), x_np)


@with_fixtures
@given(shape=shapes(max_dims=3), data=st.data())
def test_repeat(device, shape, data):
    extra = data.draw(st.integers(0, 2))
    reps = tuple(data.draw(st.integers(0, 3)) for _ in range(len(shape) + extra))
    x_np = data.draw(arrays(shape))
    out, (dx,) = helper_test_op([x_np], lambda t: t.repeat(*reps), lambda a: np.tile(a, reps), device=device)
    assert dx.shape == shape


def test_repeat_and_unflatten_errors(device):
    x = leaf(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match="one per dim"):
        x.repeat(2)
    with pytest.raises(ValueError, match=">= 0"):
        x.repeat(2, -1)
    with pytest.raises(ValueError, match="multiply to 3"):
        x.unflatten(1, (2, 2))
    assert x.unflatten(-1, (-1, 1)).shape == (2, 3, 1) and x.unflatten(0, (1, 2)).shape == (1, 2, 3)


# ------------------------------------------------------------------------------ tril / triu

@pytest.mark.parametrize("op", ["tril", "triu"])
@with_fixtures
@given(shape=shapes(min_dims=2), diagonal=st.integers(-3, 3), data=st.data())
def test_tril_triu(device, op, shape, diagonal, data):
    x_np = data.draw(arrays(shape))
    out, (dx,) = helper_test_op([x_np], lambda t: getattr(t, op)(diagonal), lambda a: getattr(np, op)(a, diagonal),
                                device=device)
    np.testing.assert_array_equal(dx == 0, getattr(np, op)(np.ones(shape), diagonal) == 0)


def test_tril_triu_edge_cases(device):
    x = leaf(np.full((3, 4), np.nan), device)
    np.testing.assert_array_equal(np.isnan(to_np(x.tril())), np.tril(np.ones((3, 4))) == 1)  # zeros, not NaN * 0
    b = Tensor(np.ones((2, 2), dtype=bool), device=device)
    assert x.triu(diagonal=-1).shape == (3, 4) and b.tril().dtype == np.bool_
    assert leaf(np.zeros((0, 3)), device).tril().shape == (0, 3)
    with pytest.raises(ValueError, match="at least 2 dims"):
        leaf(np.zeros(3), device).tril()


# ------------------------------------------------------------------------------ gather / scatter_add

@st.composite
def gather_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    nd = len(shape)
    dim = draw(st.integers(-nd, nd - 1))
    d = dim % nd
    ishape = tuple(draw(st.integers(0 if k == d else 1, 4 if k == d else n)) for k, n in enumerate(shape))
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return shape, dim, rs.integers(0, shape[d], size=ishape)


def np_gather(x, dim, index):
    return np.take_along_axis(x[tuple(slice(0, n) if k != dim % x.ndim else slice(None)
                                      for k, n in enumerate(index.shape))], index, axis=dim)


@with_fixtures
@given(case=gather_case(), data=st.data())
def test_gather(device, case, data):
    """torch.gather's rule, index smaller than x off dim included; repeated indices add up."""
    shape, dim, index = case
    x_np = data.draw(arrays(shape))
    idx = Tensor(index, device=device)
    out, (dx,) = helper_test_op([x_np], lambda t: t.gather(dim, idx), lambda a: np_gather(a, dim, index),
                                device=device)
    assert out.shape == index.shape and dx.shape == shape


@with_fixtures
@given(case=gather_case(), data=st.data())
def test_scatter_add(device, case, data):
    shape, dim, index = case
    x_np = data.draw(arrays(shape))
    src_np = data.draw(arrays(tuple(n + 1 for n in index.shape)))      # larger than index: the rest unused
    idx = Tensor(index, device=device)

    def ref(x, src):
        out = x.copy()
        where = np.indices(index.shape, sparse=True)
        where = tuple(index if k == dim % x.ndim else w for k, w in enumerate(where))
        np.add.at(out, where, src[tuple(slice(0, n) for n in index.shape)])
        return out
    out, (dx, dsrc) = helper_test_op([x_np, src_np], lambda t, s: t.scatter_add(dim, idx, s), ref, device=device)
    assert dx.shape == shape and dsrc.shape == src_np.shape
    assert (dsrc[tuple(slice(n, None) if k == 0 else slice(None) for k, n in enumerate(index.shape))] == 0).all()


def test_gather_scatter_add_errors_and_0d(device):
    x = leaf(np.arange(6.0).reshape(2, 3), device)
    with pytest.raises(IndexError, match="out of bounds"):
        x.gather(1, Tensor(np.array([[3]]), device=device))
    with pytest.raises(IndexError, match="out of bounds"):
        x.gather(1, Tensor(np.array([[-1]]), device=device))
    with pytest.raises(ValueError, match="dims"):
        x.gather(1, Tensor(np.array([0]), device=device))
    with pytest.raises(TypeError, match="integer"):
        x.gather(0, Tensor(np.array([[0.0]]), device=device))
    with pytest.raises(ValueError, match="larger than self"):
        x.gather(1, Tensor(np.zeros((3, 1), dtype=np.int64), device=device))
    with pytest.raises(TypeError, match="dtype"):
        x.scatter_add(0, Tensor(np.zeros((1, 1), dtype=np.int64), device=device),
                      Tensor(np.ones((1, 1), dtype=np.float32), device=device))
    s = leaf(np.array(5.0), device)
    close(s.gather(0, Tensor(np.array(0), device=device)), 5.0)
    close(s.scatter_add(0, Tensor(np.array(0), device=device), leaf(np.array(2.0), device)), 7.0)
    assert x.gather(0, Tensor(np.zeros((0, 3), dtype=np.int64), device=device)).shape == (0, 3)


# ------------------------------------------------------------------------------ pad (constant)

@with_fixtures
@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_pad(device, shape, data):
    """Constant padding of the last k dims, negative amounts cropping; value any number."""
    k = data.draw(st.integers(1, len(shape)))
    widths = []
    for n in reversed(shape[-k:]):
        b = data.draw(st.integers(-n, 3))
        a = data.draw(st.integers(-(n - max(-b, 0)), 3))
        widths += [b, a]
    value = data.draw(st.sampled_from([0.0, -1.5, 2.0]))
    x_np = data.draw(arrays(shape))

    def ref(a):
        per_dim = [(0, 0)] * (len(shape) - k) + [(widths[2 * j], widths[2 * j + 1]) for j in reversed(range(k))]
        crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for n, (b, e) in zip(shape, per_dim))
        return np.pad(a[crop], [(max(b, 0), max(e, 0)) for b, e in per_dim], constant_values=value)
    helper_test_op([x_np], lambda t: F.pad(t, tuple(widths), value=value), ref, device=device)


def test_pad_errors_and_fill_values(device):
    x = leaf(np.ones((2, 3)), device)
    close(F.pad(x, (1, 0), value=float("-inf")), [[-np.inf, 1, 1, 1]] * 2)
    assert F.pad(x, [0, 0, 1, 1]).shape == (4, 3) and F.pad(x, ()).shape == (2, 3)
    with pytest.raises(ValueError, match="even length"):
        F.pad(x, (1,))
    with pytest.raises(ValueError, match="only 2"):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="negative size"):
        F.pad(x, (-2, -2))
    with pytest.raises(NotImplementedError, match="constant"):
        F.pad(x, (1, 1), mode="reflect")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_new_movement_ops_match_torch(dtype):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rs = np.random.default_rng(9)
    x = rs.standard_normal((3, 4, 5)).astype(dtype)
    idx = rs.integers(0, 4, size=(2, 6, 5))
    for ours, theirs in [
            (lambda t: t.gather(1, Tensor(idx)), lambda t: t.gather(1, torch.tensor(idx))),
            (lambda t: t.tril(-1), lambda t: t.tril(-1)), (lambda t: t.triu(2), lambda t: t.triu(2)),
            (lambda t: t.flip(0, 2), lambda t: t.flip(0, 2)), (lambda t: t.repeat(2, 1, 1, 3), lambda t: t.repeat(2, 1, 1, 3)),
            (lambda t: t.unflatten(1, (2, -1)), lambda t: t.unflatten(1, (2, -1))),
            (lambda t: F.pad(t, (1, 2, -1, 0), value=0.5), lambda t: TF.pad(t, (1, 2, -1, 0), value=0.5)),
            (lambda t: t[1, :, Tensor(idx[0, :2, 0])], lambda t: t[1, :, torch.tensor(idx[0, :2, 0])])]:
        helper_test_op([x], ours, torch_fn=theirs)
    src = rs.standard_normal((2, 3, 5)).astype(dtype)     # index's shape (PyTorch's backward fails for a larger src)
    helper_test_op([x, src], lambda t, s: t.scatter_add(1, Tensor(idx[:, :3]), s),
                   torch_fn=lambda t, s: t.scatter_add(1, torch.tensor(idx[:, :3]), s))
