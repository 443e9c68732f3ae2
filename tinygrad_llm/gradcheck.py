"""gradcheck: compare hand-written backward passes with central finite differences.

    from tinygrad_llm import Tensor, gradcheck
    x = Tensor(np.random.randn(3, 4), requires_grad=True)   # float64 is best
    gradcheck(lambda x: (x * x).sum(axis=1), [x])

The check runs in float64 (inputs are copied to float64 first). ``fn`` may return a
tensor of any shape; a fixed random cotangent ``v`` turns it into the scalar
``L = sum(v * fn(inputs))``.

* Small problems (inputs and output of at most ``max_full`` elements each): the whole
  Jacobian is built twice, once by backward passes (one per output element) and once by
  finite differences (one pair of forward passes per input element), and compared.
* Larger ones: dL/dx from one backward pass is compared, element by element, with
  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps) on ``n_samples`` random elements of each
  input, and along ``n_directions`` random directions through all inputs at once.

An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``. On failure
a :class:`GradcheckError` names the input, the element and both values.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .function import enable_grad
from .tensor import Tensor

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, max_full=64, n_samples=24,
              n_directions=3, seed=0, raise_exception=True) -> bool:
    """Check ``fn``'s gradients with respect to every input that requires grad.

    Returns True when all agree; otherwise raises :class:`GradcheckError` (or returns
    False when ``raise_exception=False``). Non-tensor inputs and inputs that do not
    require grad are passed through unchanged.
    """
    if isinstance(inputs, Tensor):
        inputs = [inputs]
    inputs = list(inputs)
    rs = np.random.default_rng(seed)
    xs, checked = [], []
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad:
            x = Tensor(t.data.astype(np.float64, copy=True), requires_grad=True, device=t.device)
            checked.append(i)
        else:
            x = t
        xs.append(x)
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")

    def run():
        with enable_grad():
            out = fn(*xs)
        if not isinstance(out, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
        return out

    out = run()
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype} for float64 inputs; "
                        "finite differences need float64 all the way through")
    xp = out.xp
    n_in = sum(xs[i].size for i in checked)
    try:
        if n_in <= max_full and out.size <= max_full:
            _full_jacobian(run, xs, checked, out, xp, eps, atol, rtol)
        else:
            v = xp.asarray(rs.standard_normal(out.shape))
            _sampled(run, xs, checked, v, xp, rs, eps, atol, rtol, n_samples, n_directions)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _loss(run, v, xp):
    return float(xp.sum(run().data * v))


def _backward(run, xs, checked, cot, xp):
    for i in checked:
        xs[i].grad = None
    out = run()
    if not out.requires_grad:  # fn ignores its inputs: all gradients are zero
        return [xp.zeros(xs[i].shape) for i in checked]
    out.backward(cot)
    return [xp.zeros(xs[i].shape) if xs[i].grad is None else xs[i].grad.copy() for i in checked]


def _numeric(run, x, flat_index, eps, value_of):
    """Central difference of ``value_of(run())`` in element ``flat_index`` of x (in place)."""
    flat = x.data.reshape(-1)
    old = float(flat[flat_index])
    flat[flat_index] = old + eps
    plus = value_of(run())
    flat[flat_index] = old - eps
    minus = value_of(run())
    flat[flat_index] = old
    return (plus - minus) / (2 * eps)


def _index(flat, shape):
    return tuple(int(k) for k in np.unravel_index(flat, shape)) if shape else ()


def _fail(what, i, elem, analytic, numeric):
    raise GradcheckError(
        f"gradcheck failed for input {i} {what}element {elem}: "
        f"analytic {analytic!r} vs numeric {numeric!r} (difference {abs(analytic - numeric):.3g})")


def _close(a, n, atol, rtol):
    return abs(a - n) <= atol + rtol * abs(n) and np.isfinite(a) == np.isfinite(n)


def _full_jacobian(run, xs, checked, out, xp, eps, atol, rtol):
    n_out = out.size
    # analytic: row j of the Jacobian is the gradient for a one-hot cotangent on output j
    rows = []
    for j in range(n_out):
        cot = xp.zeros(out.shape)
        cot.reshape(-1)[j] = 1.0
        rows.append(_backward(run, xs, checked, cot, xp))
    for k, i in enumerate(checked):
        x = xs[i]
        for e in range(x.size):
            numeric = _numeric(run, x, e, eps, lambda o: backend.to_numpy(o.data).reshape(-1))
            for j in range(n_out):
                a = float(rows[j][k].reshape(-1)[e])
                if not _close(a, float(numeric[j]), atol, rtol):
                    _fail(f"output {_index(j, out.shape)} / ", i, _index(e, x.shape), a, float(numeric[j]))


def _sampled(run, xs, checked, v, xp, rs, eps, atol, rtol, n_samples, n_directions):
    grads = _backward(run, xs, checked, v, xp)
    for k, i in enumerate(checked):
        x = xs[i]
        picks = range(x.size) if x.size <= n_samples else rs.choice(x.size, n_samples, replace=False)
        for e in picks:
            numeric = _numeric(run, x, int(e), eps, lambda o: float(xp.sum(o.data * v)))
            a = float(grads[k].reshape(-1)[int(e)])
            if not _close(a, numeric, atol, rtol):
                _fail("", i, _index(int(e), x.shape), a, numeric)
    # random directions through all checked inputs together
    for d in range(n_directions):
        us = [xp.asarray(rs.standard_normal(xs[i].shape)) for i in checked]
        olds = [xs[i].data.copy() for i in checked]
        for u, i in zip(us, checked):
            xs[i].data += eps * u
        plus = _loss(run, v, xp)
        for u, i, o in zip(us, checked, olds):
            xs[i].data[...] = o - eps * u
        minus = _loss(run, v, xp)
        for i, o in zip(checked, olds):
            xs[i].data[...] = o
        numeric = (plus - minus) / (2 * eps)
        analytic = float(sum(float(xp.sum(g * u)) for g, u in zip(grads, us)))
        if not _close(analytic, numeric, atol * 10, rtol):
            raise GradcheckError(
                f"gradcheck failed along random direction {d} through inputs {checked}: "
                f"analytic {analytic!r} vs numeric {numeric!r}")
