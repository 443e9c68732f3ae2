"""gelu (exact and tanh forms), silu and swiglu (ops/activation.py, fast kernels in kernels/cpu.py):
forward and gradients against NumPy, PyTorch and finite differences on both tiers, the tiers
against each other, large inputs, dtypes, bad input. leaky_relu, elu and softplus (reference
tier only) the same way. ReLU is in test_elementwise.py."""
import math
import warnings

import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds, tiers_agree
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor


def np_gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_gelu_grad(x, approximate):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       op=st.sampled_from(["gelu", "gelu_tanh", "silu"]), scale=st.sampled_from([1.0, 4.0]), seed=seeds)
def test_activation_against_numpy_and_gradcheck(device, tier, shape, op, scale, seed):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    fn, ref = {"gelu": (F.gelu, lambda x: np_gelu(x, "none")),
               "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: np_gelu(x, "tanh")),
               "silu": (F.silu, lambda x: x / (1 + np.exp(-x)))}[op]
    helper_test_op([a], fn, ref, device=device)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_gelu_forward_and_grad_match_numpy(device, tier, approximate, dtype, tol):
    x = np.concatenate([np.linspace(-8, 8, 801), [0.0, -0.0, 30.0, -30.0]]).astype(dtype)
    t = leaf(x, device)
    y = F.gelu(t, approximate=approximate)
    assert y.dtype == dtype
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(to_np(y), np_gelu(x64, approximate), rtol=tol * 4, atol=tol)
    y.sum().backward()
    np.testing.assert_allclose(to_np(t.grad), np_gelu_grad(x64, approximate), rtol=tol * 4, atol=tol * 4)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_silu_forward_and_grad_match_numpy(device, tier, dtype, tol):
    x = np.concatenate([np.linspace(-100, 100, 401), [-1e4, 1e4, 0.5, -0.5]]).astype(dtype)
    x64 = x.astype(np.float64)
    t = leaf(x, device)
    y = F.silu(t)
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-x64))
    np.testing.assert_allclose(to_np(y), x64 * sig, rtol=tol * 4, atol=tol)
    y.sum().backward()
    np.testing.assert_allclose(to_np(t.grad), sig * (1 + x64 * (1 - sig)), rtol=tol * 4, atol=tol)


def test_activation_bad_inputs():
    x = Tensor(np.zeros(3))
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(x, approximate="sigmoid")
    for name, fn in (("gelu", F.gelu), ("silu", F.silu)):
        with pytest.raises(TypeError, match=f"{name}: input must be a floating-point tensor"):
            fn(Tensor(np.arange(3)))
    with pytest.raises(RuntimeError, match=r"relu\(inplace=True\).*no_grad"):
        F.relu(Tensor(np.zeros(3), requires_grad=True), inplace=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(tier, dtype, approximate):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-9, 9, 721), [0.0, 40.0, -40.0]]).astype(dtype)
    helper_test_op([x], lambda x: F.gelu(x, approximate=approximate),
                   torch_fn=lambda x: torch.nn.functional.gelu(x, approximate=approximate))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_silu_matches_torch(tier, dtype):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-50, 50, 401), [0.5, -0.5]]).astype(dtype)
    helper_test_op([x], F.silu, torch_fn=torch.nn.functional.silu)


@given(shape=st.lists(st.integers(1, 40), min_size=0, max_size=3).map(tuple),
       op=st.sampled_from(["gelu", "gelu_tanh", "silu"]), scale=st.sampled_from([1.0, 10.0, 200.0]),
       dtype=st.sampled_from([np.float64, np.float32, np.float16]), seed=seeds)
def test_activation_fast_tier_equals_reference(shape, op, scale, dtype, seed):
    """The same formulas, evaluated in another order (in place, block by block): equal to float
    rounding (float64 1e-10, float32 1e-5, float16 1e-2 relative)."""
    if dtype == np.float16:
        scale = min(scale, 10.0)        # x * x overflows float16 beyond 255: both tiers give NaN there
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    fn = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu}[op]
    tiers_agree(fn, [x])


def test_activation_fast_tier_equals_reference_across_blocks(monkeypatch):
    """Arrays longer than one cache block (several blocks, a ragged last one)."""
    from tinygrad_llm.kernels import tuning
    monkeypatch.setattr(tuning, "ACTIVATION_BLOCK", 64)
    x = np.random.default_rng(3).standard_normal((7, 45)).astype(np.float32) * 4
    for fn in (F.gelu, lambda x: F.gelu(x, approximate="tanh"), F.silu):
        tiers_agree(fn, [x])


# ----------------------------------------------------------------------------- swiglu

def np_swiglu(gate, up):
    return gate / (1 + np.exp(-gate)) * up


@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       scale=st.sampled_from([1.0, 4.0]), seed=seeds)
def test_swiglu_against_numpy_and_gradcheck(device, tier, shape, scale, seed):
    rs = np.random.default_rng(seed)
    gate, up = rs.standard_normal(shape) * scale, rs.standard_normal(shape)
    helper_test_op([gate, up], F.swiglu, np_swiglu, device=device)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_swiglu_matches_torch(tier, dtype):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(4)
    gate = np.concatenate([np.linspace(-50, 50, 401), [0.5, -0.5]]).astype(dtype)
    up = rs.standard_normal(gate.shape).astype(dtype)
    helper_test_op([gate, up], F.swiglu, torch_fn=lambda g, u: torch.nn.functional.silu(g) * u)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_swiglu_large_gates_and_both_gradients(device, tier, dtype, tol):
    """dgate = g * up * silu'(gate) and dup = g * silu(gate), also where exp(-gate) overflows."""
    gate = np.concatenate([np.linspace(-100, 100, 401), [-1e4, 1e4]]).astype(dtype)
    up = np.linspace(-2, 3, gate.size).astype(dtype)
    tg_, tu = leaf(gate, device), leaf(up, device)
    h = F.swiglu(tg_, tu)
    assert h.grad_fn.name == "SwiGLU" and len(h.grad_fn.inputs) == 2       # one node, both inputs
    g64, u64 = gate.astype(np.float64), up.astype(np.float64)
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-g64))
    np.testing.assert_allclose(to_np(h), g64 * sig * u64, rtol=tol * 4, atol=tol)
    h.sum().backward()
    np.testing.assert_allclose(to_np(tg_.grad), u64 * sig * (1 + g64 * (1 - sig)), rtol=tol * 4, atol=tol * 4)
    np.testing.assert_allclose(to_np(tu.grad), g64 * sig, rtol=tol * 4, atol=tol)


@given(shape=st.lists(st.integers(1, 40), min_size=0, max_size=3).map(tuple),
       scale=st.sampled_from([1.0, 10.0, 200.0]), dtype=st.sampled_from([np.float64, np.float32, np.float16]),
       seed=seeds)
def test_swiglu_fast_tier_equals_reference(shape, scale, dtype, seed):
    rs = np.random.default_rng(seed)
    gate = (rs.standard_normal(shape) * scale).astype(dtype)
    up = rs.standard_normal(shape).astype(dtype)
    tiers_agree(F.swiglu, [gate, up])


def test_swiglu_fast_tier_across_blocks_and_strides(monkeypatch):
    """Several cache blocks (a ragged last one), and inputs that are not contiguous."""
    from tinygrad_llm.kernels import tuning
    monkeypatch.setattr(tuning, "ACTIVATION_BLOCK", 64)
    rs = np.random.default_rng(5)
    gate, up = (rs.standard_normal((7, 45)).astype(np.float32) * 4 for _ in range(2))
    tiers_agree(F.swiglu, [gate, up])
    tiers_agree(lambda g, u: F.swiglu(g.T, u.T), [gate, up])


def test_swiglu_bad_inputs():
    with pytest.raises(ValueError, match=r"swiglu: gate and up must have one shape and dtype"):
        F.swiglu(Tensor(np.zeros(3)), Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"swiglu: gate and up must have one shape and dtype"):
        F.swiglu(Tensor(np.zeros(3)), Tensor(np.zeros(3, dtype=np.float32)))
    with pytest.raises(TypeError, match="swiglu: up must be a floating-point tensor"):
        F.swiglu(Tensor(np.zeros(3)), Tensor(np.arange(3)))


# ------------------------------------------------------------------------------ leaky_relu, elu, softplus

def np_softplus(x, beta=1.0, threshold=20.0):
    with np.errstate(over="ignore"):
        return np.where(x * beta > threshold, x, np.logaddexp(0.0, beta * x) / beta)


MORE = {   # name -> (ours, numpy reference, torch's, kinks to stay away from in finite differences)
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x),
                   lambda t, x: t.nn.functional.leaky_relu(x, 0.1), [0.0]),
    "elu": (lambda x: F.elu(x, alpha=1.5), lambda x: np.where(x > 0, x, 1.5 * np.expm1(np.minimum(x, 0))),
            lambda t, x: t.nn.functional.elu(x, alpha=1.5), [0.0]),
    "softplus": (F.softplus, np_softplus, lambda t, x: t.nn.functional.softplus(x), []),
    "softplus_beta": (lambda x: F.softplus(x, beta=2.0, threshold=3.0), lambda x: np_softplus(x, 2.0, 3.0),
                      lambda t, x: t.nn.functional.softplus(x, beta=2.0, threshold=3.0), [1.5]),
}


@pytest.mark.parametrize("op", list(MORE))
@fixture_ok
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), seed=seeds)
def test_more_activations_against_numpy_and_gradcheck(device, op, shape, seed):
    ours, ref, _, kinks = MORE[op]
    x = np.random.default_rng(seed).uniform(-4, 4, shape)
    for k in kinks:
        x = np.where(np.abs(x - k) < 0.05, k + 0.1, x)
    out, (dx,) = helper_test_op([x], ours, ref, device=device)
    assert out.shape == shape and dx.shape == shape


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("op", list(MORE))
def test_more_activations_match_torch(op, dtype):
    """Also at the kinks (x = 0: leaky_relu's and elu's gradient is the negative side's, as
    PyTorch) and far out (softplus is x beyond its threshold, exp never overflows)."""
    torch = pytest.importorskip("torch")
    ours, _, theirs, kinks = MORE[op]
    x = np.concatenate([np.linspace(-30, 30, 241), [0.0, 1.5, 1e4, -1e4], kinks]).astype(dtype)
    helper_test_op([x], ours, torch_fn=lambda t: theirs(torch, t), check_gradcheck=False)   # kinks included


def test_more_activations_edge_cases(device):
    x = leaf(np.array([-np.inf, -1e4, 0.0, 1e4, np.inf, np.nan], dtype=np.float32), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no overflow warnings
        sp, el, lr = F.softplus(x), F.elu(x), F.leaky_relu(x)
    np.testing.assert_array_equal(to_np(sp)[:5], [0.0, 0.0, np.log(2.0).astype(np.float32), 1e4, np.inf])
    np.testing.assert_array_equal(to_np(el)[:5], [-1.0, -1.0, 0.0, 1e4, np.inf])
    np.testing.assert_array_equal(to_np(lr)[:5], [-np.inf, -100.0, 0.0, 1e4, np.inf])
    for y in (sp, el, lr):
        assert y.dtype == np.float32 and np.isnan(to_np(y)[5])   # NaN passes through
    half = leaf(np.array([-2.0, 0.5, 30.0], dtype=np.float16), device)
    for fn in (F.softplus, F.elu, F.leaky_relu):
        y = fn(half)
        y.sum().backward()
        assert y.dtype == np.float16 and half.grad.dtype == np.float16
        half.grad = None


def test_more_activations_bad_input():
    x = Tensor(np.zeros(3))
    for fn in (F.leaky_relu, F.elu, F.softplus):
        with pytest.raises(TypeError, match="floating-point"):
            fn(Tensor(np.arange(3)))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        F.softplus(x, beta=0.0)
    with pytest.raises(ValueError, match="negative_slope"):
        F.leaky_relu(x, negative_slope="0.1")
    with pytest.raises(ValueError, match="alpha"):
        F.elu(x, alpha=float("nan"))
    y = Tensor(np.array([-1.0, 2.0]))
    assert F.leaky_relu(y, 0.5, inplace=True) is y and (y.numpy() == [-0.5, 2.0]).all()
