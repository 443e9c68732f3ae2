"""The fused ops against torch.nn.functional: forwards and gradients, in float64 (to ~1e-10) and
float32 (to ~1e-5 of PyTorch's float64 answer). Skipped when PyTorch is not installed."""
import numpy as np
import pytest

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])


def run_both(ours, theirs, arrays, grad_mask=None, seed=0):
    """Call both on the same arrays (ints pass through); compare outputs and gradients.

    PyTorch always runs in float64 here (float32 inputs are widened exactly), so our float32
    results are held to float32 accuracy against the float64 answer, not to PyTorch's own
    float32 rounding. A random cotangent makes every output element matter.
    """
    grad_mask = grad_mask or [a.dtype.kind == "f" for a in arrays]
    ts = [Tensor(a, requires_grad=m) for a, m in zip(arrays, grad_mask)]
    ps = [torch.tensor(a.astype(np.float64) if m else a, requires_grad=bool(m)) for a, m in zip(arrays, grad_mask)]
    y, yt = ours(*ts), theirs(*ps)
    assert y.dtype == next(a.dtype for a, m in zip(arrays, grad_mask) if m)
    tol = TOL[np.dtype(y.dtype).type]
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **tol)
    cot = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    y.backward(Tensor(cot))
    yt.backward(torch.tensor(cot.astype(np.float64)))
    for t, p, m in zip(ts, ps, grad_mask):
        if m:
            assert t.grad.dtype == t.dtype
            np.testing.assert_allclose(t.grad, p.grad.numpy(), **tol)


def rand(rs, shape, dtype, scale=1.0):
    return (rs.standard_normal(shape) * scale).astype(dtype)


@dtypes
@pytest.mark.parametrize("bias", [True, False])
def test_linear(dtype, bias):
    rs = np.random.default_rng(0)
    arrays = [rand(rs, (3, 5, 8), dtype), rand(rs, (6, 8), dtype)] + ([rand(rs, 6, dtype)] if bias else [])
    run_both(F.linear, TF.linear, arrays)


@dtypes
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_softmax_and_log_softmax(dtype, dim):
    rs = np.random.default_rng(1)
    x = rand(rs, (4, 5, 6), dtype, scale=10.0)
    run_both(lambda x: F.softmax(x, dim=dim), lambda x: TF.softmax(x, dim=dim), [x])
    run_both(lambda x: F.log_softmax(x, dim=dim), lambda x: TF.log_softmax(x, dim=dim), [x])


@dtypes
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.4])
def test_cross_entropy(dtype, reduction, eps, ignore_frac):
    rs = np.random.default_rng(2)
    x = rand(rs, (24, 11), dtype, scale=3.0)
    t = rs.integers(0, 11, 24)
    t[rs.random(24) < ignore_frac] = -100
    run_both(lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=eps),
             lambda x, t: TF.cross_entropy(x, t, reduction=reduction, label_smoothing=eps), [x, t])


@dtypes
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.4])
def test_cross_entropy_class_weights(dtype, reduction, eps, ignore_frac):
    rs = np.random.default_rng(12)
    x = rand(rs, (24, 7), dtype, scale=3.0)
    t = rs.integers(0, 7, 24)
    t[rs.random(24) < ignore_frac] = -100
    w = rs.uniform(0.1, 3.0, 7)
    run_both(lambda x, t: F.cross_entropy(x, t, w.astype(dtype), reduction=reduction, label_smoothing=eps),
             lambda x, t: TF.cross_entropy(x, t, torch.tensor(w), reduction=reduction, label_smoothing=eps), [x, t])


@dtypes
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets_and_their_gradient(dtype, reduction, eps, weighted):
    rs = np.random.default_rng(13)
    x = rand(rs, (9, 6), dtype, scale=3.0)
    y = rs.random((9, 6))
    y = (y / y.sum(-1, keepdims=True)).astype(dtype)
    w = rs.uniform(0.1, 3.0, 6) if weighted else None
    ours_w = None if w is None else w.astype(dtype)
    theirs_w = None if w is None else torch.tensor(w)
    run_both(lambda x, y: F.cross_entropy(x, y, ours_w, reduction=reduction, label_smoothing=eps),
             lambda x, y: TF.cross_entropy(x, y, theirs_w, reduction=reduction, label_smoothing=eps), [x, y])


def test_cross_entropy_3d_logits_match_flattened_torch():
    # our classes are on the last axis, (B, T, V) as GPT has them; PyTorch wants (B*T, V)
    rs = np.random.default_rng(3)
    x, t = rand(rs, (2, 5, 7), np.float64), rs.integers(0, 7, (2, 5))
    run_both(lambda x, t: F.cross_entropy(x, t, ignore_index=3),
             lambda x, t: TF.cross_entropy(x.reshape(10, 7), t.reshape(10), ignore_index=3), [x, t])


@dtypes
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm(dtype, affine):
    rs = np.random.default_rng(4)
    x = rand(rs, (3, 4, 16), dtype) + 2.0
    params = {k: rand(rs, 16, dtype) for k in ("weight", "bias") if affine in (k, "both")}
    names = list(params)

    def ours(x, *ps):
        return F.layer_norm(x, (16,), eps=1e-5, **dict(zip(names, ps)))

    def theirs(x, *ps):
        return TF.layer_norm(x, (16,), eps=1e-5, **dict(zip(names, ps)))
    run_both(ours, theirs, [x] + list(params.values()))


@dtypes
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [1e-6, None])
def test_rms_norm(dtype, affine, eps):
    rs = np.random.default_rng(5)
    x = rand(rs, (3, 4, 16), dtype)
    arrays = [x] + ([rand(rs, 16, dtype)] if affine else [])
    run_both(lambda x, *w: F.rms_norm(x, (16,), *w, eps=eps), lambda x, *w: TF.rms_norm(x, (16,), *w, eps=eps),
             arrays)


@dtypes
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(dtype, approximate):
    x = np.concatenate([np.linspace(-9, 9, 721), [0.0, 40.0, -40.0]]).astype(dtype)
    run_both(lambda x: F.gelu(x, approximate=approximate), lambda x: TF.gelu(x, approximate=approximate), [x])


@dtypes
def test_relu_silu(dtype):
    x = np.concatenate([np.linspace(-50, 50, 401), [0.5, -0.5]]).astype(dtype)
    run_both(F.relu, TF.relu, [x])
    run_both(F.silu, TF.silu, [x])


@dtypes
def test_embedding(dtype):
    rs = np.random.default_rng(6)
    ids = rs.integers(0, 9, (4, 13))
    run_both(lambda i, w: F.embedding(i, w), lambda i, w: TF.embedding(i, w), [ids, rand(rs, (9, 5), dtype)])
