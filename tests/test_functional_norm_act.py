"""layer_norm, rms_norm, gelu (exact and tanh), relu, silu and the erf helper: gradients against
finite differences, forwards against plain NumPy / math.erf, one graph node each, bad inputs."""
import math

import numpy as np
import pytest
from conftest import to_np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck, no_grad
from tinygrad_llm.ops.activation import GELU, ReLU, SiLU
from tinygrad_llm.ops.erf import erf
from tinygrad_llm.ops.norm import LayerNorm, RMSNorm

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def leaf(a, device="cpu"):
    return Tensor(np.asarray(a), requires_grad=True, device=device)


# ============================================================================ layer_norm / rms_norm

def np_layer_norm(x, w, b, eps, k=1):
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_rms_norm(x, w, eps, k=1):
    axes = tuple(range(x.ndim - k, x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return y * (1 if w is None else w)


@fixture_ok
@given(lead=lead_dims, D=st.integers(1, 6), affine=st.sampled_from(["both", "weight", "bias", "none"]),
       shift=st.sampled_from([0.0, 10.0]), seed=seeds)
def test_layer_norm_gradcheck(device, lead, D, affine, shift, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (D,)) + shift, device)
    w = leaf(rs.standard_normal(D), device) if affine in ("both", "weight") else None
    b = leaf(rs.standard_normal(D), device) if affine in ("both", "bias") else None
    params = [p for p in (w, b) if p is not None]

    def fn(x, *ps):
        it = iter(ps)
        return F.layer_norm(x, (D,), next(it) if w is not None else None, next(it) if b is not None else None)
    gradcheck(fn, [x] + params)


@fixture_ok
@given(lead=lead_dims, D=st.integers(1, 6), affine=st.booleans(), seed=seeds)
def test_rms_norm_gradcheck(device, lead, D, affine, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (D,)), device)
    if affine:
        gradcheck(lambda x, w: F.rms_norm(x, (D,), w), [x, leaf(rs.standard_normal(D), device)])
    else:
        gradcheck(lambda x: F.rms_norm(x, D), [x])


def test_norms_over_two_trailing_dims():
    rs = np.random.default_rng(0)
    x, w, b = leaf(rs.standard_normal((3, 2, 4))), leaf(rs.standard_normal((2, 4))), leaf(rs.standard_normal((2, 4)))
    np.testing.assert_allclose(F.layer_norm(x, (2, 4), w, b).numpy(),
                               np_layer_norm(x.numpy(), w.numpy(), b.numpy(), 1e-5, k=2), rtol=1e-12)
    np.testing.assert_allclose(F.rms_norm(x, (2, 4), w).numpy(), np_rms_norm(x.numpy(), w.numpy(), 1e-6, k=2),
                               rtol=1e-12)
    gradcheck(lambda x, w, b: F.layer_norm(x, (2, 4), w, b), [x, w, b])
    gradcheck(lambda x, w: F.rms_norm(x, (2, 4), w), [x, w])


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_norm_forward_and_grads_match_numpy(device, dtype, tol):
    rs = np.random.default_rng(1)
    x, w, b = (rs.standard_normal(s).astype(dtype) for s in ((4, 5, 16), (16,), (16,)))
    g = rs.standard_normal((4, 5, 16)).astype(dtype)
    tx, tw, tb = leaf(x, device), leaf(w, device), leaf(b, device)
    y = F.layer_norm(tx, 16, tw, tb)
    assert y.dtype == dtype
    np.testing.assert_allclose(to_np(y), np_layer_norm(x, w, b, 1e-5), rtol=tol, atol=tol)
    y.backward(Tensor(g, device=device))
    # the documented backward, written out in NumPy
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    rstd = 1 / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    xhat = (x64 - x64.mean(-1, keepdims=True)) * rstd
    dxhat = g64 * w64
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(to_np(tx.grad), dx, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(to_np(tw.grad), (g64 * xhat).sum((0, 1)), rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(to_np(tb.grad), g64.sum((0, 1)), rtol=tol * 10, atol=tol * 10)

    tx, tw = leaf(x, device), leaf(w, device)
    y = F.rms_norm(tx, (16,), tw)
    np.testing.assert_allclose(to_np(y), np_rms_norm(x, w, 1e-6), rtol=tol, atol=tol)
    y.backward(Tensor(g, device=device))
    rrms = 1 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-6)
    xhat = x64 * rrms
    dx = rrms * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(to_np(tx.grad), dx, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(to_np(tw.grad), (g64 * xhat).sum((0, 1)), rtol=tol * 10, atol=tol * 10)


def test_layer_norm_large_offset_is_stable():
    # a two-pass variance: a mean of 1e4 does not wipe out a spread of 1 in float32
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32) + 1e4
    y = F.layer_norm(Tensor(x), 64).numpy()
    np.testing.assert_allclose(y, np_layer_norm(x.astype(np.float64), None, None, 1e-5), atol=2e-3)


def test_norm_short_call_forms():
    rs = np.random.default_rng(3)
    x, w, b = Tensor(rs.standard_normal((2, 5))), Tensor(rs.standard_normal(5)), Tensor(rs.standard_normal(5))
    ref = F.layer_norm(x, (5,), w, b, 1e-3).numpy()
    np.testing.assert_array_equal(F.layer_norm(x, w, b, 1e-3).numpy(), ref)
    np.testing.assert_array_equal(F.layer_norm(x, w, b, eps=1e-3).numpy(), ref)
    np.testing.assert_array_equal(F.layer_norm(x, w).numpy(), F.layer_norm(x, 5, w).numpy())
    np.testing.assert_array_equal(F.layer_norm(x).numpy(), F.layer_norm(x, [5]).numpy())
    np.testing.assert_array_equal(F.rms_norm(x, w, 1e-3).numpy(), F.rms_norm(x, (5,), w, 1e-3).numpy())
    np.testing.assert_array_equal(F.rms_norm(x, w).numpy(), F.rms_norm(x, 5, w, eps=1e-6).numpy())
    eps32 = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(F.rms_norm(x, 5, eps=None).numpy(), np_rms_norm(x.numpy(), None, eps32), rtol=1e-12)


def test_norm_bad_inputs():
    x = Tensor(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="trailing dims"):
        F.layer_norm(x, (4,))
    with pytest.raises(ValueError, match="trailing dims"):
        F.rms_norm(x, (2, 5, 1))
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        F.layer_norm(x, 5, Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        F.layer_norm(x, 5, None, Tensor(np.ones((1, 5))))
    with pytest.raises(TypeError, match="floating point"):
        F.layer_norm(Tensor(np.zeros((2, 5), dtype=np.int64)), 5)


# ============================================================================ erf

def test_erf_matches_math_erf_float64():
    xs = np.concatenate([np.linspace(-7, 7, 40001), np.geomspace(1e-300, 1, 500), -np.geomspace(1e-300, 1, 500),
                         [0.84375, 0.99999999, 1.0, 2.0, 3.5, 3.9, 4.0, 5.9, 6.0, 6.1, 27.0, 1e300]])
    ref = np.array([math.erf(v) for v in xs])
    got = erf(xs)
    assert got.dtype == np.float64
    err = np.abs(got - ref)
    assert err.max() <= 1e-15
    assert (err <= 4 * np.spacing(np.abs(ref))).all()       # a few units in the last place
    # near 0 erf(x) ~ 2x/sqrt(pi): the relative error stays small for tiny x
    tiny = np.geomspace(1e-300, 1e-8, 50)
    np.testing.assert_allclose(erf(tiny), tiny * 2 / math.sqrt(math.pi), rtol=1e-15)


def test_erf_matches_math_erf_float32():
    xs = np.concatenate([np.linspace(-5, 5, 20001), np.geomspace(1e-30, 1, 200)]).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in xs])
    got = erf(xs)
    assert got.dtype == np.float32
    ulp32 = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - ref) <= 2 * ulp32).all()
    assert erf(np.float16([0.5, -2.0])).dtype == np.float16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_special_values(dtype):
    got = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype))
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert not np.signbit(got[0]) and np.signbit(got[1])
    assert np.isnan(got[4])
    np.testing.assert_array_equal(erf(np.array([], dtype=dtype)), [])
    with pytest.raises(TypeError, match="floating-point"):
        erf(np.arange(3))


# ============================================================================ gelu / relu / silu

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
       op=st.sampled_from(["gelu", "gelu_tanh", "silu", "relu"]), scale=st.sampled_from([1.0, 4.0]), seed=seeds)
def test_activation_gradcheck(device, shape, op, scale, seed):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    if op == "relu":
        a = np.where(np.abs(a) < 1e-3, 0.5, a)          # keep finite differences off the kink
    fn = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "relu": F.relu}[op]
    gradcheck(fn, [leaf(a, device)])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_gelu_forward_and_grad_match_numpy(device, approximate, dtype, tol):
    x = np.concatenate([np.linspace(-8, 8, 801), [0.0, -0.0, 30.0, -30.0]]).astype(dtype)
    t = leaf(x, device)
    y = F.gelu(t, approximate=approximate)
    assert y.dtype == dtype
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(to_np(y), np_gelu(x64, approximate), rtol=tol * 4, atol=tol)
    y.sum().backward()
    np.testing.assert_allclose(to_np(t.grad), np_gelu_grad(x64, approximate), rtol=tol * 4, atol=tol * 4)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_relu_silu_forward_and_grad_match_numpy(device, dtype, tol):
    x = np.concatenate([np.linspace(-100, 100, 401), [-1e4, 1e4, 0.5, -0.5]]).astype(dtype)
    x64 = x.astype(np.float64)
    t = leaf(x, device)
    y = F.relu(t)
    np.testing.assert_array_equal(to_np(y), np.maximum(x, 0))
    y.sum().backward()
    np.testing.assert_array_equal(to_np(t.grad), (x > 0).astype(dtype))
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
    for fn in (F.gelu, F.relu, F.silu):
        with pytest.raises(TypeError, match="floating-point"):
            fn(Tensor(np.arange(3)))
    with pytest.raises(RuntimeError, match=r"relu\(inplace=True\).*no_grad"):
        F.relu(Tensor(np.zeros(3), requires_grad=True), inplace=True)


@pytest.mark.parametrize("name", ["relu", "silu", "dropout"])
def test_inplace_activations_overwrite_the_input(name):
    import tinygrad_llm as tg
    rs = np.random.default_rng(16)
    a = rs.standard_normal((4, 5))

    def call(t, inplace):
        tg.manual_seed(3)                                  # the same dropout mask both times
        if name == "dropout":
            return F.dropout(t, 0.4, inplace=inplace)
        return getattr(F, name)(t, inplace=inplace)
    expect = call(Tensor(a), False).numpy()
    x = Tensor(a.copy())
    version = x._version
    out = call(x, True)
    assert out is x and x._version == version + 1
    np.testing.assert_array_equal(x.numpy(), expect)
    # a tensor that requires grad: fine inside no_grad(), refused while recording
    w = Tensor(a.copy(), requires_grad=True)
    with no_grad():
        call(w, True)
    np.testing.assert_array_equal(w.numpy(), expect)
    with pytest.raises(RuntimeError, match="in-place ops are not recorded"):
        call(Tensor(a.copy(), requires_grad=True), True)


def test_inplace_on_a_tensor_a_recorded_node_saved_stops_its_backward():
    w = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    x = Tensor(np.array([-1.0, 2.0, -3.0]))              # requires no grad itself
    y = (w * x).sum()                                    # the Mul node saved x
    F.relu(x, inplace=True)
    with pytest.raises(RuntimeError, match="modified"):
        y.backward()


def test_inplace_modules():
    from tinygrad_llm import nn
    x = Tensor(np.array([-1.0, 2.0]))
    assert nn.ReLU(inplace=True)(x) is x and x.numpy().tolist() == [0.0, 2.0]
    assert "inplace=True" in repr(nn.ReLU(inplace=True)) and "inplace" not in repr(nn.SiLU())
    x = Tensor(np.ones(1000))
    assert nn.Dropout(0.5, inplace=True)(x) is x and set(np.unique(x.numpy())) <= {0.0, 2.0}


# ============================================================================ one graph node each

def test_each_op_is_one_graph_node():
    rs = np.random.default_rng(4)
    x, w, b = leaf(rs.standard_normal((2, 3, 4))), leaf(rs.standard_normal(4)), leaf(rs.standard_normal(4))
    cases = [
        (F.layer_norm(x, 4, w, b), LayerNorm, (x, w, b)),
        (F.layer_norm(x, 4, None, b), LayerNorm, (x, b)),
        (F.layer_norm(x, 4), LayerNorm, (x,)),
        (F.rms_norm(x, 4, w), RMSNorm, (x, w)),
        (F.rms_norm(x, 4), RMSNorm, (x,)),
        (F.gelu(x), GELU, (x,)),
        (F.gelu(x, approximate="tanh"), GELU, (x,)),
        (F.relu(x), ReLU, (x,)),
        (F.silu(x), SiLU, (x,)),
    ]
    for out, cls, inputs in cases:
        assert type(out.grad_fn) is cls
        assert len(out.grad_fn.inputs) == len(inputs)
        assert all(a is e for a, e in zip(out.grad_fn.inputs, inputs))
