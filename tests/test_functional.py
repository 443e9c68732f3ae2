"""linear, softmax, log_softmax and cross_entropy (tinygrad_llm.nn.functional): gradients against
finite differences, forwards against plain NumPy, one graph node each, bad inputs.

The other fused ops are in test_functional_norm_act.py and test_functional_embedding_dropout.py;
comparisons with PyTorch are in test_functional_torch.py.
"""
import numpy as np
import pytest
from conftest import to_np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck, no_grad
from tinygrad_llm.ops.cross_entropy import CrossEntropy
from tinygrad_llm.ops.linear import Linear
from tinygrad_llm.ops.softmax import LogSoftmax, Softmax

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def leaf(a, device="cpu"):
    return Tensor(np.asarray(a), requires_grad=True, device=device)


# ============================================================================ linear

@fixture_ok
@given(lead=lead_dims, n_in=st.integers(1, 5), n_out=st.integers(1, 5), bias=st.booleans(), seed=seeds)
def test_linear_gradcheck(device, lead, n_in, n_out, bias, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (n_in,)), device)
    w = leaf(rs.standard_normal((n_out, n_in)), device)
    inputs = [x, w] + ([leaf(rs.standard_normal(n_out), device)] if bias else [])
    gradcheck(lambda *a: F.linear(*a), inputs)


def test_linear_forward_and_grads_match_numpy(device):
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


def test_linear_1d_input_and_no_bias():
    rs = np.random.default_rng(1)
    x, w = leaf(rs.standard_normal(4)), leaf(rs.standard_normal((3, 4)))
    y = F.linear(x, w)
    assert y.shape == (3,)
    np.testing.assert_allclose(y.numpy(), w.numpy() @ x.numpy())
    gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_float32_stays_float32_and_reshape_is_a_view():
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


def test_linear_non_contiguous_input():
    rs = np.random.default_rng(3)
    base = rs.standard_normal((6, 4, 5))
    xt = leaf(base).transpose(1, 0, 2)[:, ::2]               # a strided view (4, 3, 5)
    w = leaf(rs.standard_normal((2, 5)))
    np.testing.assert_allclose(F.linear(xt, w).numpy(), to_np(xt) @ w.numpy().T, rtol=1e-12)
    gradcheck(lambda x, w: F.linear(x.transpose(1, 0, 2)[:, ::2], w), [leaf(base), w])


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


# ============================================================================ softmax / log_softmax

def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data(),
       log=st.booleans(), scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_softmax_gradcheck(device, shape, data, log, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = leaf(np.random.default_rng(seed).standard_normal(shape) * scale, device)
    fn = F.log_softmax if log else F.softmax
    gradcheck(lambda x: fn(x, axis), [x])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_forward_matches_numpy(device, axis):
    x = np.random.default_rng(4).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(to_np(F.softmax(Tensor(x, device=device), axis)), np_softmax(x, axis),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_np(F.log_softmax(Tensor(x, device=device), dim=axis)),
                               np_log_softmax(x, axis), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_inputs(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4, -1e4]], dtype=dtype)
    y, ly = F.softmax(leaf(x)), F.log_softmax(leaf(x))
    assert np.isfinite(y.numpy()).all() and np.isfinite(ly.numpy()).all()
    np.testing.assert_allclose(y.numpy(), np_softmax(x.astype(np.float64), -1), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(ly.numpy(), np_log_softmax(x.astype(np.float64), -1), rtol=1e-6)
    for op in (F.softmax, F.log_softmax):
        t = leaf(x)
        (op(t) * Tensor(np.arange(8.0).reshape(2, 4).astype(dtype))).sum().backward()
        assert np.isfinite(t.grad).all()


def test_softmax_rows_sum_to_one_and_log_softmax_grad_rows_sum_to_zero():
    x = leaf(np.random.default_rng(5).standard_normal((6, 7)) * 5)
    np.testing.assert_allclose(F.softmax(x).numpy().sum(-1), 1.0, rtol=1e-12)
    ly = F.log_softmax(x)
    ly.backward(Tensor(np.random.default_rng(6).standard_normal((6, 7))))
    np.testing.assert_allclose(x.grad.sum(-1), 0.0, atol=1e-12)   # shifting a row changes nothing


def test_softmax_axis_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(IndexError, match="axis 2 is out of range"):
        F.softmax(x, 2)
    with pytest.raises(TypeError, match="axis or dim"):
        F.log_softmax(x, axis=0, dim=0)
    with pytest.raises(TypeError, match="floating-point"):
        F.softmax(Tensor(np.arange(3)))


# ============================================================================ cross_entropy

def np_cross_entropy(x, t, ignore_index=-100, reduction="mean", eps=0.0):
    C = x.shape[-1]
    x2, t2 = x.reshape(-1, C), t.reshape(-1)
    logp = np_log_softmax(x2, -1)
    valid = t2 != ignore_index
    safe = np.where(valid, t2, 0)
    nll = -logp[np.arange(len(t2)), safe]
    smooth = -logp.mean(-1)
    loss = np.where(valid, (1 - eps) * nll + eps * smooth, 0.0)
    if reduction == "none":
        return loss.reshape(t.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(valid.sum(), 1)


def _targets(rs, shape, C, ignore_frac):
    t = rs.integers(0, C, shape)
    t[rs.random(shape) < ignore_frac] = -100
    return t


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), scale=st.sampled_from([1.0, 20.0]), seed=seeds)
def test_cross_entropy_gradcheck(device, lead, C, ignore_frac, reduction, eps, scale, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (C,)) * scale, device)
    t = Tensor(_targets(rs, lead, C, ignore_frac), device=device)
    gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction, label_smoothing=eps), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_forward_and_grad_match_numpy(device, reduction, eps):
    rs = np.random.default_rng(7)
    x, t = rs.standard_normal((3, 4, 6)), _targets(rs, (3, 4), 6, 0.25)
    t[0, 0] = -100
    tx = leaf(x, device)
    loss = F.cross_entropy(tx, t, reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(to_np(loss), np_cross_entropy(x, t, reduction=reduction, eps=eps), rtol=1e-12)
    loss.sum().backward()
    # the documented backward: (softmax - onehot_smoothed) * scale, zero on ignored rows
    p = np_softmax(x, -1)
    target = np.full_like(p, eps / 6)
    valid = t != -100
    target[valid, t[valid]] += 1 - eps
    scale = 1.0 / valid.sum() if reduction == "mean" else 1.0
    expect = np.where(valid[..., None], (p - target) * scale, 0.0)
    np.testing.assert_allclose(to_np(tx.grad), expect, rtol=1e-10, atol=1e-14)


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), seed=seeds)
def test_cross_entropy_class_weights_gradcheck(device, lead, C, ignore_frac, reduction, eps, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (C,)) * 3, device)
    t = Tensor(_targets(rs, lead, C, ignore_frac), device=device)
    w = Tensor(rs.uniform(0.1, 3.0, C), device=device)
    gradcheck(lambda x: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=eps), [x])


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       reduction=st.sampled_from(["mean", "sum", "none"]), eps=st.sampled_from([0.0, 0.2]),
       weighted=st.booleans(), seed=seeds)
def test_cross_entropy_probability_targets_gradcheck(device, lead, C, reduction, eps, weighted, seed):
    """Gradients with respect to both the logits and the (soft) targets."""
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (C,)) * 3, device)
    y = leaf(rs.random(lead + (C,)), device)         # any non-negative weights; need not sum to 1
    w = Tensor(rs.uniform(0.1, 3.0, C), device=device) if weighted else None
    gradcheck(lambda x, y: F.cross_entropy(x, y, w, reduction=reduction, label_smoothing=eps), [x, y])


def test_cross_entropy_one_hot_probabilities_equal_class_indices():
    rs = np.random.default_rng(14)
    x, t = rs.standard_normal((5, 4)), rs.integers(0, 4, 5)
    w = rs.uniform(0.5, 2.0, 4)
    for eps in (0.0, 0.3):
        for reduction in ("sum", "none"):      # "mean" divides differently: by weights vs by rows
            a = F.cross_entropy(Tensor(x), t, w, reduction=reduction, label_smoothing=eps).numpy()
            b = F.cross_entropy(Tensor(x), np.eye(4)[t], w, reduction=reduction, label_smoothing=eps).numpy()
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_cross_entropy_weighted_mean_divides_by_the_target_weights():
    x, t, w = np.zeros((3, 2)), np.array([0, 1, 1]), np.array([1.0, 3.0])
    # every row's loss is log 2, weighted by w[t]: (1 + 3 + 3) log 2 / (1 + 3 + 3)
    np.testing.assert_allclose(F.cross_entropy(Tensor(x), t, w).item(), np.log(2.0))
    np.testing.assert_allclose(F.cross_entropy(Tensor(x), t, w, reduction="sum").item(), 7 * np.log(2.0))
    zero = F.cross_entropy(Tensor(x), t, np.zeros(2))       # summed weights 0: loss 0, not NaN
    assert zero.item() == 0.0


@pytest.mark.parametrize("weight, targets, eps", [([0.0, 1.0, 1.0], [0, 0], 0.2),     # smoothing adds mass
                                                  ([1.0, -1.0, 1.0], [0, 1], 0.0)])   # weights cancel
def test_cross_entropy_mean_over_zero_total_weight_is_zero_with_zero_gradient(weight, targets, eps):
    x = leaf(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]))
    loss = F.cross_entropy(x, np.array(targets), np.array(weight), label_smoothing=eps)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    assert F.cross_entropy(x, np.array(targets), np.array(weight), label_smoothing=eps,
                           reduction="sum").item() != 0.0     # the rows themselves do have a loss


def test_cross_entropy_probability_targets_edge_cases():
    x = leaf(np.zeros((0, 3)))
    loss = F.cross_entropy(x, np.zeros((0, 3)))                # no rows: 0, not NaN
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == (0, 3)
    with pytest.raises(ValueError, match="ignore_index=1 is not supported with class-probability"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.full((2, 3), 1 / 3), ignore_index=1)
    # Python float lists keep the logits' precision (float64 here), not float32
    x64 = np.random.default_rng(15).standard_normal((2, 3))
    y = [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]
    w = [0.3, 1.7, 1.1]
    a = F.cross_entropy(Tensor(x64), y, w).item()
    b = F.cross_entropy(Tensor(x64), np.array(y), np.array(w)).item()
    assert a == b


def test_cross_entropy_all_ignored_is_zero_not_nan():
    x = leaf(np.random.default_rng(8).standard_normal((4, 5)))
    for reduction in ("mean", "sum", "none"):
        x.grad = None
        loss = F.cross_entropy(x, np.full(4, -100), reduction=reduction)
        np.testing.assert_array_equal(loss.numpy(), 0.0)
        loss.sum().backward()
        np.testing.assert_array_equal(x.grad, np.zeros((4, 5)))


def test_cross_entropy_custom_ignore_index_and_target_kinds():
    rs = np.random.default_rng(9)
    x = rs.standard_normal((5, 3)).astype(np.float32)
    t = np.array([0, 2, 1, 2, 0])
    ref = np_cross_entropy(x.astype(np.float64), t, ignore_index=2)
    for targets in (t, t.astype(np.int32), t.astype(np.uint8), t.tolist(), Tensor(t)):
        loss = F.cross_entropy(Tensor(x), targets, ignore_index=2)
        assert loss.dtype == np.float32 and loss.shape == ()
        np.testing.assert_allclose(loss.item(), ref, rtol=1e-6)


def test_cross_entropy_single_row_and_huge_logits():
    x = leaf(np.array([1e4, -1e4, 0.0]))
    loss = F.cross_entropy(x, 1)                      # logits (C,), target ()
    np.testing.assert_allclose(loss.item(), 2e4)
    loss.backward()
    np.testing.assert_allclose(x.grad, [1.0, -1.0, 0.0])
    x32 = leaf(np.array([[1e4, -1e4, 1e4]], dtype=np.float32))
    loss = F.cross_entropy(x32, np.array([0]))
    np.testing.assert_allclose(loss.item(), np.log(2.0), rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(x32.grad, [[-0.5, 0.0, 0.5]], atol=1e-7)


def test_cross_entropy_bad_inputs():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"target 4 is out of range.*\[0, 3\]"):
        F.cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        F.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"probability targets must have the logits' shape \(3, 4\)"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer class indices or floating-point"):
        F.cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"need targets of shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"need targets of shape \(3,\)"):
        F.cross_entropy(x, np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="logits must be floating point"):
        F.cross_entropy(Tensor(np.zeros((3, 4), dtype=np.int64)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"weight must have one value per class, shape \(4,\)"):
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(3)))
    with pytest.raises(TypeError, match="weight must be floating point"):
        F.cross_entropy(x, np.array([0, 1, 2]), np.ones(4, dtype=np.int64))
    with pytest.raises(ValueError, match="weight is a constant"):
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(4), requires_grad=True))
    with no_grad():   # no gradient asked for: a weight that requires grad is fine
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(4), requires_grad=True))


# ============================================================================ one graph node each

def test_each_op_is_one_graph_node():
    rs = np.random.default_rng(10)
    x, w, b = leaf(rs.standard_normal((2, 3, 4))), leaf(rs.standard_normal((5, 4))), leaf(rs.standard_normal(5))
    t = Tensor(rs.integers(0, 4, (2, 3)))
    cases = [
        (F.linear(x, w, b), Linear, (x, w, b)),
        (F.linear(x, w), Linear, (x, w)),
        (F.softmax(x, 1), Softmax, (x,)),
        (F.log_softmax(x), LogSoftmax, (x,)),
        (F.cross_entropy(x, t), CrossEntropy, (x, t)),
    ]
    for out, cls, inputs in cases:
        assert type(out.grad_fn) is cls
        assert len(out.grad_fn.inputs) == len(inputs)
        assert all(a is e for a, e in zip(out.grad_fn.inputs, inputs))
        # the node's inputs are leaves: no primitive ops were recorded in between
        assert all(i.grad_fn is None for i in out.grad_fn.inputs)


def test_no_node_is_recorded_under_no_grad():
    x = leaf(np.ones((2, 3)))
    with no_grad():
        assert F.softmax(x).grad_fn is None
        assert F.cross_entropy(x, [0, 1]).grad_fn is None


def test_float32_in_float32_out_for_every_op():
    """No silent float64 up-casts: outputs and every gradient stay float32."""
    rs = np.random.default_rng(11)

    def f32(*shape):
        return leaf(rs.standard_normal(shape).astype(np.float32))
    x, w, b, g4, b4 = f32(2, 3, 4), f32(5, 4), f32(5), f32(4), f32(4)
    runs = [
        (lambda: F.linear(x, w, b), [x, w, b]),
        (lambda: F.softmax(x), [x]),
        (lambda: F.log_softmax(x, 0), [x]),
        (lambda: F.cross_entropy(x, np.array([[0, 1, -100], [3, 2, 1]]), label_smoothing=0.1), [x]),
        (lambda: F.layer_norm(x, 4, g4, b4), [x, g4, b4]),
        (lambda: F.rms_norm(x, 4, g4), [x, g4]),
        (lambda: F.gelu(x), [x]),
        (lambda: F.gelu(x, approximate="tanh"), [x]),
        (lambda: F.relu(x), [x]),
        (lambda: F.silu(x), [x]),
        (lambda: F.embedding(np.array([[0, 4], [4, 1]]), w), [w]),
        (lambda: F.dropout(x, 0.5), [x]),
    ]
    for run, params in runs:
        y = run()
        assert y.dtype == np.float32, y.grad_fn.name
        # ask the node itself: run_backward would cast a float64 gradient back and hide it
        grads = y.grad_fn.backward(np.ones(y.shape, np.float32))
        grads = [gr for gr in (grads if isinstance(grads, tuple) else (grads,)) if gr is not None]
        assert len(grads) == len(params), y.grad_fn.name
        assert all(gr.dtype == np.float32 for gr in grads), y.grad_fn.name
