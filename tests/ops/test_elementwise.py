"""Elementwise ops (ops/elementwise.py): forward against NumPy (and PyTorch), gradients
against finite differences (float64), broadcasting (gradients summed back to each input's
shape), scalars on either side, the tie / kink rules, the one ReLU (``Tensor.relu`` and
``F.relu``), and bad input. No op here has a fast kernel."""
import warnings

import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from helper_op import helper_test_op
from strategies import (arrays, broadcastable_pairs, shape_broadcasting_to, shapes, signed_magnitudes,
                        with_fixtures)

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck
from tinygrad_llm.ops.elementwise import ReLU


def leaf(a, device, requires_grad=True):
    return Tensor(a, device=device, requires_grad=requires_grad)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_np(actual), expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------ binary arithmetic
# name -> (tinygrad expression, numpy reference, strategy for a's values, for b's values)
BINARY = {
    "add": (lambda a, b: a + b, np.add, lambda s: arrays(s), lambda s: arrays(s)),
    "sub": (lambda a, b: a - b, np.subtract, lambda s: arrays(s), lambda s: arrays(s)),
    "mul": (lambda a, b: a * b, np.multiply, lambda s: arrays(s), lambda s: arrays(s)),
    "div": (lambda a, b: a / b, np.divide, lambda s: arrays(s), lambda s: signed_magnitudes(s, 0.5, 2.0)),
    "pow": (lambda a, b: a ** b, np.power, lambda s: arrays(s, 0.5, 2.0), lambda s: arrays(s, -2.0, 2.0)),
}
# scalars used on the other side of a tensor: fine for every op's domain
SCALARS = {"add": -1.5, "sub": 0.75, "mul": -2.5, "div": 1.25, "pow": 1.5}


@pytest.mark.parametrize("name", list(BINARY))
@with_fixtures
@given(pair=broadcastable_pairs(), data=st.data())
def test_binary_tensor_tensor_broadcast(device, name, pair, data):
    op, ref, dom_a, dom_b = BINARY[name]
    sa, sb = pair
    a_np, b_np = data.draw(dom_a(sa)), data.draw(dom_b(sb))
    out, (da, db) = helper_test_op([a_np, b_np], op, ref, device=device)   # forward, dtypes, gradcheck
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert op(leaf(a_np, device), leaf(b_np, device)).grad_fn.name.lower().startswith(name[:3])
    # the gradient of each input is summed back to that input's own shape
    assert da.shape == sa and db.shape == sb


@pytest.mark.parametrize("name", list(BINARY))
@with_fixtures
@given(shape=shapes(), data=st.data())
def test_binary_with_python_scalar_on_either_side(device, name, shape, data):
    op, ref, dom_a, dom_b = BINARY[name]
    c = SCALARS[name]
    # tensor (op) scalar: the tensor takes the left operand's domain
    a_np = data.draw(dom_a(shape))
    a = leaf(a_np, device)
    close(op(a, c), ref(a_np, c))
    gradcheck(lambda t: op(t, c), [a])
    # scalar (op) tensor: the tensor takes the right operand's domain
    b_np = data.draw(dom_b(shape))
    b = leaf(b_np, device)
    close(op(c, b), ref(c, b_np))
    gradcheck(lambda t: op(c, t), [b])


@with_fixtures
@given(shape=shapes(), data=st.data())
def test_neg(device, shape, data):
    x_np = data.draw(arrays(shape))
    x = leaf(x_np, device)
    close(-x, -x_np)
    close(x.neg(), -x_np)
    gradcheck(lambda t: -t, [x])


@with_fixtures
@given(shape=shapes(), data=st.data(), p=st.sampled_from([2, 3, -1, 0.5]))
def test_pow_scalar_exponent_and_negative_base(device, shape, data, p):
    """x ** p with a constant p: da = p x**(p-1); integer powers work for negative bases."""
    x_np = data.draw(signed_magnitudes(shape, 0.3, 2.0) if isinstance(p, int) else arrays(shape, 0.3, 2.0))
    x = leaf(x_np, device)
    close(x ** p, x_np ** p)
    gradcheck(lambda t: t ** p, [x])


def test_rpow_and_pow_exponent_gradient(device):
    x = leaf(np.array([-1.0, 0.0, 0.5, 2.0]), device)
    close(2.0 ** x, 2.0 ** to_np(x))
    gradcheck(lambda t: 2.0 ** t, [x])
    # d/db a**b = a**b log a; where a**b == 0 the gradient is 0 (not NaN from log 0)
    a = leaf(np.array([0.0, 1.5]), device, requires_grad=False)
    b = leaf(np.array([2.0, 2.0]), device)
    (a ** b).sum().backward()
    close(b.grad, [0.0, 1.5 ** 2 * np.log(1.5)])


# ------------------------------------------------------------------------------ comparisons
COMPARISONS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
               "eq": np.equal, "ne": np.not_equal}


@pytest.mark.parametrize("name", list(COMPARISONS))
@with_fixtures
@given(pair=broadcastable_pairs(), data=st.data())
def test_comparisons_are_boolean_and_record_no_graph(device, name, pair, data):
    ref = COMPARISONS[name]
    # small integers as floats, so that equal elements actually occur
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a_np = rs.integers(-2, 3, size=pair[0]).astype(np.float64)
    b_np = rs.integers(-2, 3, size=pair[1]).astype(np.float64)
    a, b = leaf(a_np, device), leaf(b_np, device)
    op = getattr(Tensor, f"__{name}__")
    for out, expected in [(op(a, b), ref(a_np, b_np)), (op(a, 1.0), ref(a_np, 1.0))]:
        assert out.dtype == np.bool_
        assert out.grad_fn is None and not out.requires_grad
        np.testing.assert_array_equal(to_np(out), expected)


def test_comparison_with_scalar_on_the_left(device):
    x = leaf(np.array([0.0, 1.0, 2.0]), device)
    np.testing.assert_array_equal(to_np(1.0 < x), [False, False, True])
    np.testing.assert_array_equal(to_np(1.0 >= x), [True, True, False])
    out = np.array([1.0, 1.0, 1.0]) < x         # NumPy defers to Tensor.__gt__
    assert isinstance(out, Tensor)
    np.testing.assert_array_equal(to_np(out), [False, False, True])


# ------------------------------------------------------------------------------ unary ops
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (tinygrad expression, numpy reference, strategy for x's values given a shape)
UNARY = {
    "exp": (Tensor.exp, np.exp, lambda s: arrays(s, -3.0, 3.0)),
    "log": (Tensor.log, np.log, lambda s: arrays(s, 0.1, 3.0)),
    "sqrt": (Tensor.sqrt, np.sqrt, lambda s: arrays(s, 0.1, 3.0)),
    "tanh": (Tensor.tanh, np.tanh, lambda s: arrays(s, -3.0, 3.0)),
    "sigmoid": (Tensor.sigmoid, _sigmoid, lambda s: arrays(s, -6.0, 6.0)),
    "relu": (Tensor.relu, lambda x: np.maximum(x, 0.0), lambda s: arrays(s, away_from=[0.0])),
    "abs": (Tensor.abs, np.abs, lambda s: arrays(s, away_from=[0.0])),
    "clip_both": (lambda t: t.clip(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
                  lambda s: arrays(s, away_from=[-0.5, 0.7])),
    "clip_min": (lambda t: t.clip(min=-0.2), lambda x: np.maximum(x, -0.2),
                 lambda s: arrays(s, away_from=[-0.2])),
    "clip_max": (lambda t: t.clamp(max=0.3), lambda x: np.minimum(x, 0.3),
                 lambda s: arrays(s, away_from=[0.3])),
    "sin": (Tensor.sin, np.sin, lambda s: arrays(s, -4.0, 4.0)),
    "cos": (Tensor.cos, np.cos, lambda s: arrays(s, -4.0, 4.0)),
    "square": (Tensor.square, np.square, lambda s: arrays(s)),
    "rsqrt": (Tensor.rsqrt, lambda x: 1 / np.sqrt(x), lambda s: arrays(s, 0.2, 3.0)),
    "log2": (Tensor.log2, np.log2, lambda s: arrays(s, 0.1, 3.0)),
    "exp2": (Tensor.exp2, np.exp2, lambda s: arrays(s, -3.0, 3.0)),
    # piecewise constant: gradient 0, checked away from the jumps
    "sign": (Tensor.sign, np.sign, lambda s: arrays(s, away_from=[0.0])),
    "floor": (Tensor.floor, np.floor, lambda s: arrays(s, -3.0, 3.0, away_from=range(-3, 4))),
    "ceil": (Tensor.ceil, np.ceil, lambda s: arrays(s, -3.0, 3.0, away_from=range(-3, 4))),
    "round": (Tensor.round, np.round, lambda s: arrays(s, -3.0, 3.0, away_from=np.arange(-3.5, 4))),
    "round_2": (lambda t: t.round(decimals=2), lambda x: np.round(x, 2),
                lambda s: arrays(s, away_from=np.arange(-2.005, 2.01, 0.01), margin=0.001)),
}


@pytest.mark.parametrize("name", list(UNARY))
@with_fixtures
@given(shape=shapes(), data=st.data())
def test_unary(device, name, shape, data):
    op, ref, dom = UNARY[name]
    x_np = data.draw(dom(shape))
    out, _ = helper_test_op([x_np], op, ref, device=device)
    assert out.shape == shape


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "sin", "cos", "square",
                                  "rsqrt", "log2", "exp2", "sign", "floor", "ceil", "round"])
def test_unary_keeps_float32_and_float16(device, name):
    op, ref, _ = UNARY[name]
    x_np = np.array([0.3, 1.7, 2.5])
    for dt, tol in [(np.float32, 1e-6), (np.float16, 2e-3)]:
        x = leaf(x_np.astype(dt), device)
        out = op(x)
        assert out.dtype == dt
        out.sum().backward()
        assert x.grad.dtype == dt
        close(out, ref(x_np), rtol=tol, atol=tol)


def test_sigmoid_is_stable_for_large_inputs(device):
    x = leaf(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no overflow warnings from exp
        out = x.sigmoid()
        out.sum().backward()
    close(out, [0.0, _sigmoid(-50.0), 0.5, 1.0, 1.0], rtol=1e-6, atol=1e-30)
    assert np.all(np.isfinite(to_np(x.grad)))
    close(x.grad, [0.0, _sigmoid(-50.0), 0.25, 0.0, 0.0], rtol=1e-5, atol=1e-30)


def test_relu_of_infinities(device):
    x = leaf(np.array([-np.inf, -1.0, 2.0, np.inf]), device)
    out = x.relu()
    close(out, [0.0, 0.0, 2.0, np.inf])
    out.backward(np.ones(4))
    close(x.grad, [0.0, 0.0, 1.0, 1.0])


# ------------------------------------------------------------------------------ kinks and ties
def test_kink_rules_relu_abs_clip(device):
    """At a kink the gradient is: relu'(0) = 0, abs'(0) = 0, clip passes g on the bounds."""
    x = leaf(np.array([-1.0, 0.0, 1.0]), device)
    x.relu().sum().backward()
    close(x.grad, [0.0, 0.0, 1.0])
    x.grad = None
    x.abs().sum().backward()
    close(x.grad, [-1.0, 0.0, 1.0])
    y = leaf(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), device)
    y.clip(-1.0, 1.0).sum().backward()
    close(y.grad, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_maximum_minimum_split_ties_evenly(device):
    a = leaf(np.array([1.0, 2.0, 3.0]), device)
    b = leaf(np.array([3.0, 2.0, 1.0]), device)
    tg.maximum(a, b).backward(np.array([1.0, 10.0, 100.0]))
    close(a.grad, [0.0, 5.0, 100.0])
    close(b.grad, [1.0, 5.0, 0.0])
    a.grad = b.grad = None
    tg.minimum(a, b).backward(np.array([1.0, 10.0, 100.0]))
    close(a.grad, [1.0, 5.0, 0.0])
    close(b.grad, [0.0, 5.0, 100.0])


def test_maximum_tie_with_broadcast_scalar_tensor(device):
    """A 0-d b ties with two elements of a: it gets half of each of those gradients."""
    a = leaf(np.array([0.0, 1.0, 1.0, 2.0]), device)
    b = leaf(np.array(1.0), device)
    a.maximum(b).sum().backward()
    close(a.grad, [0.0, 0.5, 0.5, 1.0])
    close(b.grad, 2.0)          # 1 (from the 0 it beat) + 0.5 + 0.5
    assert b.grad.shape == ()


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@with_fixtures
@given(pair=broadcastable_pairs(), data=st.data())
def test_maximum_minimum_without_ties(device, name, pair, data):
    a_np, b_np = data.draw(arrays(pair[0])), data.draw(arrays(pair[1]))
    a, b = leaf(a_np, device), leaf(b_np, device)
    op = getattr(tg, name)
    close(op(a, b), getattr(np, name)(a_np, b_np))
    gradcheck(op, [a, b])
    # with a Python scalar on either side
    close(op(a, 0.25), getattr(np, name)(a_np, 0.25))
    close(op(0.25, a), getattr(np, name)(a_np, 0.25))
    gradcheck(lambda t: op(0.25, t), [leaf(data.draw(arrays(pair[0], away_from=[0.25])), device)])


# ------------------------------------------------------------------------------ where / masked_fill
@with_fixtures
@given(sh=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=4, max_side=4), data=st.data())
def test_where(device, sh, data):
    sc, sa, sb = sh.input_shapes
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cond_np = rs.random(sc) < 0.5
    a_np, b_np = data.draw(arrays(sa)), data.draw(arrays(sb))
    cond, a, b = Tensor(cond_np, device=device), leaf(a_np, device), leaf(b_np, device)
    out = tg.where(cond, a, b)
    assert out.shape == sh.result_shape
    close(out, np.where(cond_np, a_np, b_np))
    gradcheck(lambda x, y: tg.where(cond, x, y), [a, b])
    # a Python scalar as one branch, and the method form a.where(cond, other)
    close(tg.where(cond, a, 0.5), np.where(cond_np, a_np, 0.5))
    close(a.where(cond, b), np.where(cond_np, a_np, b_np))
    gradcheck(lambda x: tg.where(cond, -1.0, x), [b])


def test_where_cond_gets_no_gradient_and_needs_a_tensor(device):
    cond = Tensor(np.array([True, False]), device=device)
    a = leaf(np.array([1.0, 2.0]), device)
    tg.where(cond, a, 0.0).sum().backward()
    close(a.grad, [1.0, 0.0])
    assert cond.grad is None
    with pytest.raises(TypeError, match="cond must be a Tensor"):
        tg.where([True, False], 1.0, 2.0)
    with pytest.raises(TypeError, match="Tensors or numbers"):
        tg.where(cond, [1.0, 2.0], 2.0)


@pytest.mark.parametrize("a, b, dtype", [(4, 2, np.int64), (4.0, 2, np.float32), (4, 2.5, np.float32),
                                         (True, False, np.bool_), (True, 2, np.int64)])
def test_where_with_two_numbers_is_pytorchs(device, a, b, dtype):
    """``where(cond, 4, 2)`` with two Python numbers: a tensor on cond's device, of PyTorch's dtype."""
    cond = Tensor(np.array([True, False, True]), device=device)
    out = tg.where(cond, a, b)
    assert out.dtype == dtype and out.device == cond.device and not out.requires_grad
    np.testing.assert_array_equal(to_np(out), np.array([a, b, a]).astype(dtype))
    torch = pytest.importorskip("torch")
    expected = torch.where(torch.tensor([True, False, True]), a, b)
    assert str(expected.dtype).replace("torch.", "") == np.dtype(dtype).name


@with_fixtures
@given(shape=shapes(), data=st.data())
def test_masked_fill(device, shape, data):
    mshape = data.draw(shape_broadcasting_to(shape))
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    m_np = rs.random(mshape) < 0.5
    x_np = data.draw(arrays(shape))
    x, mask = leaf(x_np, device), Tensor(m_np, device=device)
    out = x.masked_fill(mask, -7.0)
    assert out.shape == shape
    close(out, np.where(m_np, -7.0, x_np))
    gradcheck(lambda t: t.masked_fill(mask, -np.inf).exp(), [x])   # -inf fill: gradient exactly 0 there
    x.masked_fill(mask, 3.0).sum().backward()
    close(x.grad, np.broadcast_to(~m_np, shape).astype(np.float64))


def test_masked_fill_bad_masks(device):
    x = leaf(np.zeros((2, 3)), device)
    with pytest.raises(TypeError, match="boolean"):
        x.masked_fill(Tensor(np.ones((2, 3)), device=device), 0.0)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        x.masked_fill(Tensor(np.ones((3, 3), dtype=bool), device=device), 0.0)


def test_clip_needs_a_bound(device):
    with pytest.raises(ValueError, match="min and max"):
        leaf(np.zeros(2), device).clip()


TORCH = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "exp": "exp", "log": "log",
         "sqrt": "sqrt", "tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "abs": "abs", "sin": "sin",
         "cos": "cos", "square": "square", "rsqrt": "rsqrt", "log2": "log2", "exp2": "exp2", "sign": "sign",
         "floor": "floor", "ceil": "ceil", "round": "round"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(TORCH))
def test_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(len(name))
    if name in BINARY:
        op = BINARY[name][0]
        a = rs.uniform(0.5, 2.0, (3, 4)) if name == "pow" else rs.standard_normal((3, 4))
        b = rs.uniform(0.5, 2.0, (4,)) * rs.choice([-1, 1], 4) if name in ("div", "pow") else rs.standard_normal(4)
        arrays_ = [a.astype(dtype), b.astype(dtype)]
    else:
        op = UNARY[name][0]
        x = rs.uniform(0.1, 3.0, (3, 4)) if name in ("log", "sqrt", "rsqrt", "log2") else rs.standard_normal((3, 4)) * 2
        arrays_ = [x.astype(dtype)]
    helper_test_op(arrays_, op, torch_fn=getattr(torch, TORCH[name]))


# ------------------------------------------------------------------------------ the one ReLU

@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_functional_relu_is_the_tensor_relu(device, dtype, tol):
    x = np.concatenate([np.linspace(-100, 100, 401), [-1e4, 1e4, 0.5, -0.5]]).astype(dtype)
    t = leaf(x, device)
    y = F.relu(t)
    assert type(y.grad_fn) is ReLU and type(leaf(x, device).relu().grad_fn) is ReLU
    np.testing.assert_array_equal(to_np(y), np.maximum(x, 0))
    y.sum().backward()
    np.testing.assert_array_equal(to_np(t.grad), (x > 0).astype(dtype))


def test_relu_of_integers_keeps_the_dtype(device):
    """As in PyTorch, relu works on integer tensors too (no gradient: integers never require one)."""
    x = Tensor(np.array([-3, 0, 5], dtype=np.int32), device=device)
    for y in (F.relu(x), x.relu()):
        assert y.dtype == np.int32
        np.testing.assert_array_equal(to_np(y), [0, 0, 5])


def test_binary_shapes_that_do_not_broadcast(device):
    with pytest.raises(ValueError):
        leaf(np.zeros((2, 3)), device) + leaf(np.zeros((4,)), device)


def test_steps_give_zero_gradient_at_their_jumps_and_keep_integers(device):
    """sign/floor/ceil/round: gradient 0 everywhere, the jumps included (PyTorch's choice);
    on integer tensors floor/ceil/round return the same integers, sign keeps the dtype."""
    x = leaf(np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, np.inf, -np.inf]), device)
    for op, ref in [(Tensor.sign, np.sign), (Tensor.floor, np.floor), (Tensor.ceil, np.ceil), (Tensor.round, np.round)]:
        x.grad = None
        y = op(x)
        np.testing.assert_array_equal(to_np(y), ref(to_np(x)))       # halves to even: round(0.5) = 0, round(2.5) = 2
        y.backward(np.ones(9))
        np.testing.assert_array_equal(to_np(x.grad), np.zeros(9))
    n = Tensor(np.array([-3, 0, 4]), device=device)
    for op in (Tensor.floor, Tensor.ceil, Tensor.round):
        assert op(n).dtype == np.int64 and (to_np(op(n)) == [-3, 0, 4]).all()
    assert n.sign().dtype == np.int64 and n.square().dtype == np.int64
    assert (to_np(x.sign()[np.array([7, 8])]) == [1, -1]).all()
    assert (to_np(leaf(np.array([np.nan]), device).sign()) == 0).all()       # PyTorch's sign(NaN) = 0


def test_float_functions_of_integers_give_float32(device):
    """PyTorch's rule (NumPy would give float64): exp, log, sin, ... of an integer tensor are float32."""
    n = Tensor(np.array([1, 2, 3]), device=device)
    for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "sin", "cos", "rsqrt", "log2", "exp2"):
        y = getattr(n, name)()
        assert y.dtype == np.float32, name
        close(y, getattr(leaf(np.array([1.0, 2.0, 3.0]), device), name)().numpy(), rtol=1e-6, atol=1e-7)


def test_rsqrt_and_log2_at_zero_and_infinity(device):
    x = leaf(np.array([0.0, np.inf, 4.0]), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        close(x.rsqrt(), [np.inf, 0.0, 0.5])
    close(leaf(np.array([np.inf, -np.inf]), device).exp2(), [np.inf, 0.0])


# ------------------------------------------------------------------------------ logical and bitwise

@with_fixtures
@given(pair=broadcastable_pairs(), data=st.data())
def test_logical_ops_on_booleans(device, pair, data):
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a_np, b_np = rs.random(pair[0]) < 0.5, rs.random(pair[1]) < 0.5
    a, b = Tensor(a_np, device=device), Tensor(b_np, device=device)
    for out, expected in [(a & b, a_np & b_np), (a | b, a_np | b_np), (a ^ b, a_np ^ b_np), (~a, ~a_np),
                          (a.logical_not(), ~a_np), (a & True, a_np & True), (False | b, False | b_np),
                          (a.logical_and(b), a_np & b_np), (a.logical_or(b), a_np | b_np)]:
        assert out.dtype == np.bool_ and out.grad_fn is None
        np.testing.assert_array_equal(to_np(out), expected)


def test_bitwise_ops_on_integers_and_logical_not_of_any_dtype(device):
    a, b = Tensor(np.array([12, 5, -1]), device=device), Tensor(np.array([10, 3, 7]), device=device)
    np.testing.assert_array_equal(to_np(a & b), [8, 1, 7])
    np.testing.assert_array_equal(to_np(a | b), [14, 7, -1])
    np.testing.assert_array_equal(to_np(~a), [-13, -6, 0])
    x = leaf(np.array([0.0, -2.0, np.nan]), device)
    out = x.logical_not()
    assert out.dtype == np.bool_ and out.grad_fn is None
    np.testing.assert_array_equal(to_np(out), [True, False, False])
    with pytest.raises(TypeError, match="boolean or integer"):
        x & x
    with pytest.raises(TypeError, match="boolean or integer"):
        ~x


def test_logical_ops_match_torch():
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(3)
    a_np, b_np = rs.random((3, 4)) < 0.5, rs.random(4) < 0.5
    a, b, ta, tb = Tensor(a_np), Tensor(b_np), torch.tensor(a_np), torch.tensor(b_np)
    for ours, theirs in [(a & b, ta & tb), (a | b, ta | tb), (a ^ b, ta ^ tb), (~a, ~ta),
                         (a.logical_not(), ta.logical_not())]:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(RuntimeError):           # PyTorch's class, as PyTorch raises for float bitwise ops
        Tensor([1.0]) & Tensor([1.0])
