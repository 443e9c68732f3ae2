"""The shared checks of the op tests, in the spirit of early tinygrad's ``helper_test_op``.

    helper_test_op(arrays, ours, numpy_fn=..., torch_fn=...)
        one op on the same inputs, checked three ways: its forward against NumPy and/or
        PyTorch, its gradients against PyTorch's, and (float64 inputs) its gradients against
        central finite differences (``tinygrad_llm.gradcheck``);
    tiers_agree(fn, arrays)
        the fast tier's forward and gradients against the reference tier's, and that the
        two really ran different code.

Floating-point arrays become leaf tensors that require grad (``grad=`` picks which);
other arrays (class indices, ids) become plain tensors. PyTorch always runs in float64
(float32 inputs are widened exactly), so float32 results are held to float32 accuracy
against the float64 answer, not to PyTorch's own float32 rounding.
"""
import numpy as np
from conftest import to_np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import tinygrad_llm as tg
from tinygrad_llm import Tensor, gradcheck, reference_tier

#: for @given tests that also take function-scoped fixtures (device, tier)
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
seeds = st.integers(0, 2**32 - 1)


def leaf(a, device="cpu"):
    """A tensor that requires grad."""
    return Tensor(np.asarray(a), requires_grad=True, device=device)


def np_softmax(x, axis):
    """The NumPy reference of softmax (row max subtracted)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis):
    """The NumPy reference of log-softmax."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


#: (rtol, atol) per dtype: float64 near its rounding, float32 near its own, float16 about
#: five units in its last place (a chain of a few float16 roundings)
TOLERANCE = {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-5, 1e-6),
             np.dtype(np.float16): (1e-2, 1e-2)}


def _leaves(arrays, grad, device):
    grad = [np.asarray(a).dtype.kind == "f" for a in arrays] if grad is None else list(grad)
    return [Tensor(a, requires_grad=g, device=device) for a, g in zip(arrays, grad)], grad


def _cotangent(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_op(ours, arrays, grad=None, device="cpu", seed=0, cotangent_seed=1):
    """(output, [gradient of each input that requires grad]) as NumPy arrays, after one
    backward of a fixed random cotangent; ``tg.manual_seed(seed)`` first (dropout masks)."""
    ts, grad = _leaves(arrays, grad, device)
    tg.manual_seed(seed)
    y = ours(*ts)
    if y.requires_grad:
        y.backward(Tensor(_cotangent(y.shape, y.dtype, cotangent_seed), device=device))
    return y, [to_np(t.grad) if t.grad is not None else None for t, g in zip(ts, grad) if g]


def helper_test_op(arrays, ours, numpy_fn=None, torch_fn=None, *, grad=None, device="cpu", rtol=None, atol=None,
                   check_gradcheck=None, seed=0):
    """Check ``ours`` (Tensors -> Tensor) on ``arrays``; returns (output, gradients) as NumPy.

    numpy_fn(*arrays) -> the expected output; torch_fn(*torch tensors) -> PyTorch's output,
    whose gradients ours must match too. Tolerances default to the dtype of the first
    floating-point input (``TOLERANCE``). Finite differences run when every input that
    requires grad is float64 (``check_gradcheck`` forces it on or off).
    """
    leaves, grad = _leaves(arrays, grad, device)
    dtype = next(np.asarray(a).dtype for a, g in zip(arrays, grad) if g) if any(grad) else \
        np.asarray(arrays[0]).dtype
    r, a = TOLERANCE.get(np.dtype(dtype), TOLERANCE[np.dtype(np.float64)])
    rtol, atol = (r if rtol is None else rtol), (a if atol is None else atol)
    y, grads = run_op(ours, arrays, grad, device, seed)
    out = to_np(y)
    if any(grad):
        assert y.dtype == dtype, f"output dtype {y.dtype}, inputs {dtype}"
        assert all(gr is not None and gr.dtype == dtype for gr in grads), "a gradient is missing or of another dtype"
    if numpy_fn is not None:
        np.testing.assert_allclose(out, numpy_fn(*arrays), rtol=rtol, atol=atol, equal_nan=False)
    if torch_fn is not None:
        import torch
        ps = [torch.tensor(np.asarray(x, dtype=np.float64) if g else np.asarray(x), requires_grad=bool(g))
              for x, g in zip(arrays, grad)]
        yt = torch_fn(*ps)
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=rtol, atol=atol, equal_nan=False)
        if any(grad):
            yt.backward(torch.tensor(_cotangent(y.shape, dtype, 1).astype(np.float64)))
            for ours_g, p in zip(grads, [p for p, g in zip(ps, grad) if g]):
                np.testing.assert_allclose(ours_g, p.grad.numpy(), rtol=rtol, atol=atol, equal_nan=False)
    float64 = all(np.asarray(x).dtype == np.float64 for x, g in zip(arrays, grad) if g)
    if any(grad) and (check_gradcheck if check_gradcheck is not None else float64):
        def fn(*differentiated):
            it = iter(differentiated)
            tg.manual_seed(seed)              # the same dropout mask on every evaluation
            return ours(*[next(it) if g else t for t, g in zip(leaves, grad)])
        gradcheck(fn, [t for t, g in zip(leaves, grad) if g])
    return out, grads


def tiers_agree(ours, arrays, *, grad=None, exact=False, rtol=None, atol=None, scaled_atol=False, device="cpu",
                seed=0):
    """The fast tier's output and gradients equal the reference tier's: bitwise when
    ``exact`` (the same arithmetic in the same order), else to ``rtol``/``atol`` (default:
    ``TOLERANCE`` of the inputs' dtype); ``scaled_atol`` multiplies atol by each array's
    largest magnitude (rounding noise of sums whose terms cancel scales with the terms).
    Also checks that a fast kernel ran."""
    runs = []
    for reference in (True, False):
        with reference_tier(reference):
            y, grads = run_op(ours, arrays, grad, device, seed)
        runs.append((y, grads))
    (y_ref, g_ref), (y_fast, g_fast) = runs
    assert y_ref.grad_fn is not None and type(y_fast.grad_fn) is not type(y_ref.grad_fn), \
        f"no fast kernel ran for {y_ref.grad_fn and y_ref.grad_fn.name}"
    assert y_fast.grad_fn.name == y_ref.grad_fn.name and isinstance(y_fast.grad_fn, type(y_ref.grad_fn))
    dtype = np.dtype(y_ref.dtype)
    r, a = TOLERANCE.get(dtype, TOLERANCE[np.dtype(np.float64)])
    rtol, atol = (r if rtol is None else rtol), (a if atol is None else atol)
    for ref, fast in zip([to_np(y_ref)] + g_ref, [to_np(y_fast)] + g_fast):
        if exact:
            np.testing.assert_array_equal(fast, ref)
        else:
            scale = float(np.abs(ref).max(initial=1.0)) if scaled_atol else 1.0
            np.testing.assert_allclose(fast, ref, rtol=rtol, atol=atol * scale, equal_nan=False)
