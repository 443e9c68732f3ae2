"""Graph mechanics: deep chains, fan-out, accumulation, release after backward, retain_graph,
no_grad, version counters and the in-place policy."""
import gc
import sys
import weakref

import numpy as np
import pytest
from conftest import to_np

from tinygrad_llm import Function, Tensor, enable_grad, gradcheck, is_grad_enabled, manual_seed, nn, no_grad, \
    reference_tier, set_grad_enabled
from tinygrad_llm.nn import functional as F
from tinygrad_llm.optim import AdamW


def leaf(a, device, requires_grad=True):
    return Tensor(a, device=device, requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_np(actual), expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------ structure
def test_chain_of_100k_ops_backpropagates_without_recursion(device):
    limit = sys.getrecursionlimit()
    x = leaf(np.array([1.0, 2.0]), device)
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    y.sum().backward()
    assert sys.getrecursionlimit() == limit          # nothing raised it behind our back
    close(x.grad, np.full(2, 1.00001 ** 100_000), rtol=1e-9)


def test_a_tensor_used_several_times_gets_the_sum_of_its_gradients(device):
    x = leaf(np.array([1.0, 2.0, 3.0]), device)
    (x * x * x + x + x).sum().backward()            # 3 x^2 + 2
    close(x.grad, 3 * np.array([1.0, 4.0, 9.0]) + 2)
    x.grad = None
    a = x.exp()                                      # a diamond: a feeds two branches
    ((a * 2) + (a * 3)).sum().backward()
    close(x.grad, 5 * np.exp([1.0, 2.0, 3.0]))


def test_a_node_runs_after_all_its_consumers(device):
    """``a`` feeds the root directly and through a 30-op chain: its node must wait for both."""
    def f(x):
        a = x * 2.0
        b = a
        for _ in range(30):
            b = (b * 0.9).tanh()
        return (a * b + a).sum()
    x = leaf(np.array([0.3, -0.7]), device)
    gradcheck(f, [x])


def test_intermediate_tensors_get_no_grad_and_leaves_without_requires_grad_neither(device):
    x = leaf(np.array([1.0, 2.0]), device)
    c = leaf(np.array([3.0, 4.0]), device, requires_grad=False)
    h = x * c
    h.sum().backward()
    assert h.grad is None and c.grad is None
    close(x.grad, [3.0, 4.0])


def test_backward_from_a_leaf(device):
    x = leaf(np.array([2.0]), device)
    x.backward()
    close(x.grad, [1.0])


# ------------------------------------------------------------------------------ accumulation
def test_gradients_accumulate_across_backward_calls_until_zeroed(device):
    x = leaf(np.array([1.0, 2.0]), device)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    close(x.grad, [3.0 + 2.0, 3.0 + 4.0])
    x.grad = None
    (x * 3).sum().backward()
    close(x.grad, [3.0, 3.0])
    x.zero_grad()
    assert x.grad is None


def test_grad_is_a_private_copy(device):
    """The seed / upstream array is never the .grad array itself (it is added to in place)."""
    x = leaf(np.array([1.0, 2.0]), device)
    seed = np.array([1.0, 1.0])
    x.backward(seed)
    x.backward(seed)
    close(x.grad, [2.0, 2.0])
    np.testing.assert_array_equal(seed, [1.0, 1.0])


def test_grad_storage_is_filled_when_grad_is_none_and_added_to_after(device):
    w = leaf(np.array([1.0, 2.0]), device)
    storage = w.xp.full(2, 99.0)                    # stale contents must not leak into .grad
    assert w.set_grad_storage(storage) is w and w.grad_storage is storage
    (w * w).sum().backward()
    assert w.grad is storage
    close(storage, [2.0, 4.0])
    (w * w).sum().backward()                         # accumulates in place, as always
    assert w.grad is storage
    close(storage, [4.0, 8.0])
    w.zero_grad()                                    # None again: the next gradient is copied in
    (w * 3.0).sum().backward()
    assert w.grad is storage
    close(storage, [3.0, 3.0])
    w.set_grad_storage(None)
    w.grad = None
    (w * 5.0).sum().backward()                       # back to a fresh array
    assert w.grad is not storage
    close(w.grad, [5.0, 5.0])
    close(storage, [3.0, 3.0])


def test_grad_storage_must_match_a_leaf_that_requires_grad(device):
    w = leaf(np.zeros((2, 3)), device)
    xp = w.xp
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*\(2, 3\)"):
        w.set_grad_storage(xp.zeros((3, 2)))
    with pytest.raises(ValueError, match="float32"):
        w.set_grad_storage(xp.zeros((2, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        (w * 2).set_grad_storage(xp.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf(np.zeros(2), device, requires_grad=False).set_grad_storage(xp.zeros(2))
    assert w.grad_storage is None


# ------------------------------------------------------------------------------ release
def test_graph_is_released_after_backward(device):
    x = leaf(np.ones(1000), device)
    h = x.exp()                       # Exp saves its output array
    h2 = h * 2.0
    loss = h2.sum()
    exp_node = h.grad_fn
    try:
        saved = weakref.ref(exp_node.out)
    except TypeError:                  # an array type without weakref support: check the node only
        saved = lambda: None  # noqa: E731
    refs = [weakref.ref(h), weakref.ref(h2)]
    del h, h2
    gc.collect()
    assert all(r() is not None for r in refs)      # the graph keeps them alive before backward
    loss.backward()
    gc.collect()
    assert all(r() is None for r in refs), "intermediate tensors survived backward"
    assert saved() is None, "a saved array survived backward"
    assert exp_node.released and exp_node.inputs == () and "released" in repr(exp_node)
    assert loss.grad_fn.released


class StopGradient(Function):
    """out = x, but backward returns None: nothing flows into x's producer."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return None


def test_nodes_that_receive_no_gradient_are_released_too(device):
    x = leaf(np.array([1.0, 2.0]), device)
    y = x.exp()
    loss = (StopGradient.apply(y) * x).sum()
    loss.backward()
    close(x.grad, np.exp([1.0, 2.0]))              # only through the direct path
    assert y.grad_fn.released and y.grad_fn.inputs == ()


def test_second_backward_through_a_released_graph_raises(device):
    x = leaf(np.array([1.0, 2.0]), device)
    y = x.exp()
    loss = (y * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already released.*retain_graph=True"):
        loss.backward()
    # another root that reaches the released part of the graph
    with pytest.raises(RuntimeError, match=r"already released \(node Exp\)"):
        (y + 1).sum().backward()


def test_retain_graph_allows_a_second_backward(device):
    x = leaf(np.array([1.0, 2.0]), device)
    loss = (x.exp() * 2).sum()
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    close(x.grad, 4 * np.exp([1.0, 2.0]))
    loss.backward()
    close(x.grad, 6 * np.exp([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="already released"):
        loss.backward()


# ------------------------------------------------------------------------------ no_grad
def test_no_grad_records_nothing(device):
    x = leaf(np.array([1.0, 2.0]), device)
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2).exp().sum()
        assert y.grad_fn is None and not y.requires_grad
        with enable_grad():
            z = x * 2
            assert z.grad_fn is not None and z.requires_grad
        assert not is_grad_enabled() and (x * 2).grad_fn is None    # the outer mode is back
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert (x * 2).grad_fn is not None
    with set_grad_enabled(False):
        assert (x * 2).grad_fn is None


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_no_grad_as_a_decorator(device):
    x = leaf(np.array([1.0]), device)

    @no_grad()
    def f(t, depth):
        assert not is_grad_enabled()
        return f(t, depth - 1) if depth else t * 2     # recursion: each call restores its own mode

    y = f(x, 3)
    assert y.grad_fn is None and not y.requires_grad
    assert is_grad_enabled()
    assert f.__name__ == "f"


# ------------------------------------------------------------------------------ versions and in place
def test_in_place_change_of_a_saved_input_is_detected(device):
    a = leaf(np.array([1.0, 2.0]), device, requires_grad=False)
    w = leaf(np.array([3.0, 4.0]), device)
    loss = (a * w).sum()             # Mul saved a for dw = g * a
    a.add_(1.0)
    assert a._version == 1
    with pytest.raises(RuntimeError, match=r"input of Mul.*modified in place.*version 0 -> 1"):
        loss.backward()


def test_bump_version_marks_a_change_made_outside_the_in_place_ops(device):
    a = leaf(np.array([[1.0, 2.0], [3.0, 4.0]]), device, requires_grad=False)
    w = leaf(np.ones((2, 2)), device)
    loss = (a * w).sum()
    view = a.reshape(4)              # shares a's memory and version counter
    view.data[0] = 5.0               # a raw write (what an optimizer's update is) ...
    view.bump_version()              # ... announced through the view
    assert a._version == view._version == 1
    with pytest.raises(RuntimeError, match=r"input of Mul.*modified in place.*version 0 -> 1"):
        loss.backward()


def test_in_place_change_of_a_saved_output_is_detected(device):
    w = leaf(np.array([1.0, 2.0]), device)
    y = w.exp()                      # Exp saved its output for dw = g * out
    with no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match="output of Exp.*modified in place"):
        y.sum().backward()


def test_in_place_ops_on_a_tensor_that_requires_grad_raise_in_grad_mode(device):
    w = leaf(np.array([1.0, 2.0]), device)
    for op in [lambda: w.add_(1.0), lambda: w.sub_(1.0), lambda: w.mul_(2.0), lambda: w.fill_(0.0),
               lambda: w.zero_(), lambda: w.copy_(Tensor([5.0, 6.0], device=device)),
               lambda: w.__setitem__(0, 3.0)]:
        with pytest.raises(RuntimeError, match="in-place ops are not recorded.*no_grad"):
            op()
    # inside no_grad they are allowed (that is how optimisers update parameters)
    with no_grad():
        w.add_(Tensor([1.0, 1.0], device=device), alpha=0.5)
        w.mul_(2.0)
        w[1] = 10.0
    close(w, [3.0, 10.0])
    assert w._version == 3            # the refused attempts did not even bump the counter


def test_in_place_ops_work_on_plain_tensors(device):
    t = Tensor([1.0, 2.0, 3.0], device=device)
    t.add_(1.0)
    t.sub_(Tensor([1.0, 1.0, 1.0], device=device))
    t.mul_(3.0)
    close(t, [3.0, 6.0, 9.0])
    t[0] = 0.0
    t.copy_([7.0, 8.0, 9.0])
    close(t, [7.0, 8.0, 9.0])
    t.zero_()
    close(t, [0.0, 0.0, 0.0])
    assert t._version == 6


def test_host_arrays_go_into_a_tensor_on_any_device(device):
    """NumPy arrays and lists as the right-hand side of in-place writes: CuPy takes only scalars
    from the host, so on a GPU they are copied to the device first."""
    t = Tensor(np.zeros((3, 2), np.float32), device=device)
    t[0:2] = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    t[2] = [5.0, 6.0]
    t.add_(np.ones((3, 2), np.float32))
    t.mul_(np.full(2, 2.0, np.float32))
    t.sub_([[1.0, 1.0]])
    close(t, [[3.0, 5.0], [7.0, 9.0], [11.0, 13.0]])
    t[Tensor([0, 2], device=device)] = np.zeros((2, 2), np.float32)
    close(t, [[0.0, 0.0], [7.0, 9.0], [0.0, 0.0]])


@pytest.mark.parametrize("index", [
    lambda d: [0, 3], lambda d: np.array([3]), lambda d: Tensor([-4], device=d), lambda d: (slice(None), [0, 2]),
    lambda d: (Ellipsis, np.array([5])), lambda d: (None, [1, 3]),
    lambda d: Tensor([0, 3], device=d).set_value_bounds(0, 3),
    lambda d: (1, [0, 2]), lambda d: (Tensor(0, device=d), Tensor([0, -3], device=d)),   # PyTorch's split index
])
def test_out_of_range_integer_indices_raise_on_every_device(device, index):
    """NumPy raises for an index out of range; CuPy would wrap it around, so the GPU path checks."""
    t = Tensor(np.arange(6.0).reshape(3, 2), device=device)
    with pytest.raises(IndexError, match=r"index -?\d+ is out of bounds for axis \d with size [23]"):
        t[index(device)]
    with pytest.raises(IndexError, match="out of bounds"):
        t[index(device)] = 1.0
    close(t[Tensor([-3, 2], device=device)], [[0.0, 1.0], [4.0, 5.0]])      # negative indices count from the end
    close(t[..., [-1]], [[1.0], [3.0], [5.0]])


def test_value_bounds_lapse_when_the_tensor_changes(device):
    ids = Tensor([1, 2], device=device).set_value_bounds(1, 2)
    assert ids.value_bounds == (1, 2)
    ids.reshape(2, 1)[0] = 0          # through a view: the record no longer holds
    assert ids.value_bounds is None
    assert float(Tensor([2.5], device=device)) == 2.5 and int(Tensor(3, device=device)) == 3


@pytest.mark.parametrize("make_view", [
    lambda a: a[0:2], lambda a: a.reshape(2, 2), lambda a: a.T, lambda a: a.detach(),
    lambda a: a[None], lambda a: a.unsqueeze(0).squeeze(0),
])
def test_views_share_the_version_counter(device, make_view):
    a = leaf(np.array([[1.0, 2.0], [3.0, 4.0]]), device, requires_grad=False)
    w = leaf(np.ones((2, 2)), device)
    loss = (a * w).sum()
    v = make_view(a)
    v.add_(1.0)                       # writes through the view into a
    assert a._version == v._version == 1
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_a_copy_does_not_share_the_version_counter(device):
    a = leaf(np.arange(4.0), device, requires_grad=False)
    w = leaf(np.ones(4), device)
    loss = (a * w).sum()
    c = a * 1.0                       # a new array, not a view
    c.add_(1.0)
    assert a._version == 0
    loss.backward()
    close(w.grad, np.arange(4.0))


# ------------------------------------------------------------------------------ gradients written in place

def _tied_model_grads(device, with_optimizer, backwards=2):
    """Gradients of a token embedding tied to an output layer (GPT's wte / lm_head), with a
    bias and a LayerNorm, after ``backwards`` backward passes (gradients accumulate)."""
    manual_seed(0)
    emb, ln, head = nn.Embedding(7, 5, device=device), nn.LayerNorm(5, device=device), \
        nn.Linear(5, 7, device=device)
    head.weight = emb.weight
    params = [emb.weight, ln.weight, ln.bias, head.bias]
    if with_optimizer:
        AdamW(params)                 # gives every parameter a view of its flat buffer to fill
    ids = Tensor(np.array([[1, 3, 3, 6]]), device=device)
    for _ in range(backwards):
        y = head(ln(emb(ids)))
        (y * Tensor(np.linspace(-1, 1, 28).reshape(1, 4, 7).astype(np.float32), device=device)).sum().backward()
    return [to_np(p.grad) for p in params]


def test_weight_gradients_written_in_place_are_the_gradients(device, tier):
    """The fast kernels write weight gradients straight into a parameter's grad storage (the
    optimizer's flat buffer), or add them into its .grad (a tied weight's second use, a second
    backward); the gradients are those backward computes without storage, on the reference tier."""
    with reference_tier():
        expected = _tied_model_grads(device, with_optimizer=False)
    for got, want in zip(_tied_model_grads(device, with_optimizer=True), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(_tied_model_grads(device, True, backwards=1),
                         _tied_model_grads(device, False, backwards=1)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_leaf_given_twice_to_one_op_gets_both_gradients(device, tier):
    w = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3) / 10, requires_grad=True, device=device)
    AdamW([w])
    F.linear(w, w).sum().backward()                # y = w w^T: dW = (g + g^T) w with g all ones
    expected = 2 * np.ones((2, 2)) @ (np.arange(6).reshape(2, 3) / 10)
    np.testing.assert_allclose(to_np(w.grad), expected, rtol=1e-6)
