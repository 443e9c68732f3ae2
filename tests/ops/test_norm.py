"""layer_norm and rms_norm (ops/norm.py, fast kernels in kernels/cpu.py): forward and
gradients against NumPy, PyTorch and finite differences on both tiers, the tiers against
each other, several trailing dims, stability, call forms, bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, seeds, tiers_agree
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


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
def test_layer_norm_against_numpy_and_gradcheck(device, tier, lead, D, affine, shift, seed):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal(lead + (D,)) + shift
    w = rs.standard_normal(D) if affine in ("both", "weight") else None
    b = rs.standard_normal(D) if affine in ("both", "bias") else None
    params = [p for p in (w, b) if p is not None]

    def split(ps):
        it = iter(ps)
        return (next(it) if w is not None else None), (next(it) if b is not None else None)
    helper_test_op([x] + params, lambda x, *ps: F.layer_norm(x, (D,), *split(ps)),
                   lambda x, *ps: np_layer_norm(x, *split(ps), 1e-5), device=device)


@fixture_ok
@given(lead=lead_dims, D=st.integers(1, 6), affine=st.booleans(), seed=seeds)
def test_rms_norm_against_numpy_and_gradcheck(device, tier, lead, D, affine, seed):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal(lead + (D,))
    if affine:
        helper_test_op([x, rs.standard_normal(D)], lambda x, w: F.rms_norm(x, (D,), w),
                       lambda x, w: np_rms_norm(x, w, 1e-6), device=device)
    else:
        helper_test_op([x], lambda x: F.rms_norm(x, D), lambda x: np_rms_norm(x, None, 1e-6), device=device)


def test_norms_over_two_trailing_dims(tier):
    rs = np.random.default_rng(0)
    x, w, b = leaf(rs.standard_normal((3, 2, 4))), leaf(rs.standard_normal((2, 4))), leaf(rs.standard_normal((2, 4)))
    np.testing.assert_allclose(F.layer_norm(x, (2, 4), w, b).numpy(),
                               np_layer_norm(x.numpy(), w.numpy(), b.numpy(), 1e-5, k=2), rtol=1e-12)
    np.testing.assert_allclose(F.rms_norm(x, (2, 4), w).numpy(), np_rms_norm(x.numpy(), w.numpy(), 1e-6, k=2),
                               rtol=1e-12)
    gradcheck(lambda x, w, b: F.layer_norm(x, (2, 4), w, b), [x, w, b])
    gradcheck(lambda x, w: F.rms_norm(x, (2, 4), w), [x, w])


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_norm_forward_and_grads_match_numpy(device, tier, dtype, tol):
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


def test_layer_norm_large_offset_is_stable(tier):
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
    with pytest.raises(TypeError, match="layer_norm: input must be a floating-point tensor"):
        F.layer_norm(Tensor(np.zeros((2, 5), dtype=np.int64)), 5)
    with pytest.raises(TypeError, match="rms_norm: input must be a floating-point tensor"):
        F.rms_norm(Tensor(np.zeros((2, 5), dtype=np.int64)), 5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_matches_torch(tier, dtype, affine):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(4)
    x = (rs.standard_normal((3, 4, 16)) + 2.0).astype(dtype)
    params = {k: rs.standard_normal(16).astype(dtype) for k in ("weight", "bias") if affine in (k, "both")}
    names = list(params)
    helper_test_op([x] + list(params.values()),
                   lambda x, *ps: F.layer_norm(x, (16,), eps=1e-5, **dict(zip(names, ps))),
                   torch_fn=lambda x, *ps: torch.nn.functional.layer_norm(x, (16,), eps=1e-5, **dict(zip(names, ps))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [1e-6, None])
def test_rms_norm_matches_torch(tier, dtype, affine, eps):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(5)
    arrays = [rs.standard_normal((3, 4, 16)).astype(dtype)] + ([rs.standard_normal(16).astype(dtype)] if affine else [])
    helper_test_op(arrays, lambda x, *w: F.rms_norm(x, (16,), *w, eps=eps),
                   torch_fn=lambda x, *w: torch.nn.functional.rms_norm(x, (16,), *w, eps=eps))


@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=2).map(tuple), D=st.integers(1, 9),
       trailing=st.sampled_from([1, 2]), affine=st.sampled_from(["both", "weight", "bias", "none"]),
       rms=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]), scale=st.sampled_from([1.0, 100.0]),
       seed=seeds)
def test_norm_fast_tier_equals_reference(lead, D, trailing, affine, rms, dtype, scale, seed):
    """The fast kernels sum rows with einsum and reuse buffers, the reference with mean():
    equal to float rounding (float64 1e-10, float32 1e-5 relative)."""
    rs = np.random.default_rng(seed)
    shape = lead + (2,) * (trailing - 1) + (D,)
    norm_shape = shape[len(shape) - trailing:]
    x = (rs.standard_normal(shape) * scale + 3.0).astype(dtype)
    w = rs.standard_normal(norm_shape).astype(dtype) if affine in ("both", "weight") else None
    b = rs.standard_normal(norm_shape).astype(dtype) if affine in ("both", "bias") else None
    if rms:
        arrays = [x] + ([w] if w is not None else [])
        tiers_agree(lambda x, *ps: F.rms_norm(x, norm_shape, *ps), arrays)
    else:
        params = [p for p in (w, b) if p is not None]

        def fn(x, *ps):
            it = iter(ps)
            return F.layer_norm(x, norm_shape, next(it) if w is not None else None, next(it) if b is not None else None)
        tiers_agree(fn, [x] + params)


@pytest.mark.parametrize("rms", [False, True])
def test_norm_fast_tier_equals_reference_with_some_inputs_constant(rms):
    """Only some inputs require grad: both tiers skip the same gradients and agree on the rest."""
    rs = np.random.default_rng(9)
    x, w, b = rs.standard_normal((6, 8)), rs.standard_normal(8), rs.standard_normal(8)
    if rms:
        tiers_agree(lambda x, w: F.rms_norm(x, 8, w), [x, w], grad=[False, True])
        tiers_agree(lambda x, w: F.rms_norm(x, 8, w), [x, w], grad=[True, False])
    else:
        tiers_agree(lambda x, w, b: F.layer_norm(x, 8, w, b), [x, w, b], grad=[False, True, False])
        tiers_agree(lambda x, w, b: F.layer_norm(x, 8, w, b), [x, w, b], grad=[True, False, True])


@pytest.mark.parametrize("rms", [False, True])
def test_float16_rows_get_float32_statistics(tier, rms):
    """float16 x with |x| ~ 1000: the mean of squares (1e6) would overflow float16 (max 65504);
    in float32 the output is right to float16 rounding, float16 (also with float32 weights), and
    the weights' gradients are float32."""
    rs = np.random.default_rng(0)
    x64 = rs.standard_normal((4, 16)) * 1000.0
    w64, b64 = rs.standard_normal(16), rs.standard_normal(16)
    x = Tensor(x64.astype(np.float16), requires_grad=True)
    w, b = Tensor(w64.astype(np.float32), requires_grad=True), Tensor(b64.astype(np.float32), requires_grad=True)
    xr = x.numpy().astype(np.float64)
    if rms:
        y, ref = F.rms_norm(x, 16, w), xr / np.sqrt((xr ** 2).mean(-1, keepdims=True) + 1e-6) * w64
    else:
        xhat = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + 1e-5)
        y, ref = F.layer_norm(x, 16, w, b), xhat * w64 + b64
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), ref, rtol=2e-3, atol=5e-3)
    y.backward(Tensor(np.ones((4, 16), dtype=np.float16)))
    assert x.grad.dtype == np.float16 and w.grad.dtype == np.float32 and np.isfinite(x.grad).all()
    np.testing.assert_allclose(w.grad, (ref - (0 if rms else b64)).sum(0) / w64, rtol=1e-2)
