"""The fast tier on the CPU (NumPy): the same ops as ``tinygrad_llm/ops/``, faster.

Each class here subclasses the reference op of the same name, keeps its ``forward`` /
``backward`` signatures and is registered for the "cpu" device kind (``tiers.register``);
tests/ops check that it gives the reference's numbers. What makes them faster, measured
in docs/benchmarks.md:

* rows are independent, so they are split into one chunk per core (``parallel_for``: NumPy
  runs each elementwise operation on one thread but releases the GIL while it loops);
* elementwise chains run on cache-sized blocks (the activations) or pieces (attention),
  so a block stays in cache from one NumPy pass to the next;
* outputs and temporaries are written in place (``out=``), with no extra allocations;
* row sums use ``einsum`` or a BLAS matrix-vector product instead of ``sum(axis=-1)``;
* attention skips subtracting the row max when Cauchy-Schwarz bounds every score;
* float16 matrix products run in float32 (``gemm``, ``widened``): NumPy has no float16 GEMM.

Tuning constants are in ``tuning.py``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import tiers
from ..ops import activation, attention, cross_entropy, embedding, linear, norm, self_attention
from ..ops import flash_attention as flash
from ..ops.erf import erf
from . import tuning
from .parallel import parallel_for

# ----------------------------------------------------------------------------- helpers


def row_sums(a):
    """(N, D) -> (N, 1) row sums, by einsum: faster than ``a.sum(axis=1)`` over short rows and,
    unlike a BLAS matrix-vector product, each row's sum does not depend on how many rows are
    in the call (so threaded and inline runs agree bit for bit)."""
    return np.einsum("ij->i", a)[:, None]


def row_dots(a, b):
    """sum(a * b, axis=-1, keepdims=True) without the (a * b) temporary."""
    return np.einsum("...i,...i->...", a, b)[..., None]


def col_dots(a, b):
    """sum over rows of a * b, (N, D) x (N, D) -> (D,), without the (a * b) temporary."""
    return np.einsum("ij,ij->j", a, b)


def sum_parts(parts, D, dtype):
    """The (D,) column sums computed chunk by chunk (``{first row: partial sum}``), added in row order."""
    if not parts:                                      # no rows at all
        return np.zeros(D, dtype=dtype)
    keys = sorted(parts)
    total = parts[keys[0]]
    for k in keys[1:]:
        total += parts[k]
    return total


def blas_ready(a, xp=np):
    """``a`` itself when BLAS can read it as a matrix (C or Fortran order), else a C-order copy.

    NumPy's matmul falls back to a slow non-BLAS loop for other strides (e.g. a broadcast
    gradient, whose strides are 0); CuPy's would copy too.
    """
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a
    return xp.ascontiguousarray(a)


def blas_matrices(a):
    """``a`` (..., m, n) itself when BLAS can read each of its matrices in place (rows of unit
    stride, one after the other; any strides between matrices), else a C-order copy."""
    if a.strides[-1] == a.itemsize and a.strides[-2] >= a.shape[-1] * a.itemsize:
        return a
    return np.ascontiguousarray(a)


def gemm(xp, a, b, out=None):
    """a @ b (into ``out`` when given). float16 NumPy operands are multiplied in float32 and the
    product is rounded to float16: NumPy has no float16 GEMM (its float16 matmul is a plain
    loop, about 100x slower than BLAS), and a GPU's float16 GEMM, which CuPy arrays get as
    they are, accumulates in float32 as well."""
    if xp is np and a.dtype == np.float16:
        c = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
        if out is None:
            return c
        out[...] = c
        return out
    return a @ b if out is None else xp.matmul(a, b, out=out)


def widened(*arrays):
    """float16 arrays as float32 copies; anything else (None, bool masks, other dtypes) as it is."""
    return tuple(a.astype(np.float32) if a is not None and a.dtype == np.float16 else a for a in arrays)


def in_float32(block_fn, inputs, outputs):
    """``block_fn(*inputs, *outputs)``, which fills the output blocks in place; for float16 blocks
    it runs on float32 copies of the inputs and into float32 outputs, then rounds those into
    ``outputs`` (NumPy's float16 arithmetic converts element by element: several times slower)."""
    if inputs[0].dtype != np.float16:
        return block_fn(*inputs, *outputs)
    wide = [np.empty(o.shape, np.float32) for o in outputs]
    block_fn(*widened(*inputs), *wide)
    for o, w in zip(outputs, wide):
        o[...] = w


def rounded(arrays, out=None):
    """float32 results back to float16: written into ``out`` (arrays of the caller's) when given."""
    if out is None:
        return tuple(a.astype(np.float16) for a in arrays)
    for o, a in zip(out, arrays):
        o[...] = a
    return tuple(out)


# ----------------------------------------------------------------------------- linear, embedding


@tiers.register(linear.Linear)
class Linear(linear.Linear):
    """The reference's one GEMM, with operands BLAS can read in place and the bias added in place;
    the weight and bias gradients are written straight into the parameters' gradient storage
    (an optimizer's flat buffer) when they have one (``Function.grad_buffer``). Array code for
    either library: the GPU tier (cuda.py) runs it too."""

    def forward(self, x, weight, bias=None):
        self.x_shape, self.has_bias = x.shape, bias is not None
        self.x2 = blas_ready(x.reshape(math.prod(x.shape[:-1]), x.shape[-1]), self.xp)
        self.weight = weight
        y2 = gemm(self.xp, self.x2, weight.T)             # BLAS reads weight.T in place
        if bias is not None:
            y2 += bias                                    # y2 is ours: add in place
        return y2.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        xp = self.xp
        g2 = blas_ready(g.reshape(self.x2.shape[0], self.weight.shape[0]), xp)
        dx = dw = db = None
        if self.needs_input_grad[0]:
            dx = gemm(xp, g2, self.weight).reshape(self.x_shape)
        if self.needs_input_grad[1]:
            buf, add = self.grad_buffer(1, g2.dtype)
            dw = gemm(xp, g2.T, self.x2, out=None if add else buf)     # dW = g2^T x2
            if add:
                buf += dw
                dw = buf
        if not self.has_bias:
            return dx, dw
        if self.needs_input_grad[2]:
            buf, add = self.grad_buffer(2, g2.dtype)
            db = g2.sum(axis=0, out=None if add else buf)
            if add:
                buf += db
                db = buf
        return dx, dw, db


def scatter_add_rows(ids, g, num_rows, out=None):
    """dW (num_rows, D) with dW[v] += the rows g[i] where ids[i] == v.  ids (N,), g (N, D).

    Into ``out`` (C-contiguous, added to) when given, else into zeros. Scatters single numbers
    instead of rows: element (i, j) of g goes to flat position ids[i] * D + j of dW, and
    ``np.add.at`` on 1-D arrays is a tight C loop in NumPy >= 1.25 (its 2-D form, the
    reference's ``np.add.at(dW, ids, g)``, is several times slower; measured in
    docs/benchmarks.md with ``benchmarks/bench_ops.py --embedding-scatter``).
    """
    D = g.shape[1]
    dW = np.zeros((num_rows, D), dtype=g.dtype) if out is None else out
    rows = ids.astype(np.intp, copy=False)[:, None]                # intp: uint8 * D would overflow
    flat_index = (rows * D + np.arange(D)).reshape(-1)             # (N * D,) positions in dW
    np.add.at(dW.reshape(-1), flat_index, g.reshape(-1))
    return dW


@tiers.register(embedding.Embedding)
class Embedding(embedding.Embedding):
    """The reference's scatter-add, one element at a time (``scatter_add_rows``), straight into
    the weight's gradient storage when it has one (``Function.grad_buffer``; not with a
    ``padding_idx``, whose row is zeroed in a gradient of its own)."""

    def backward(self, g):
        if not self.needs_input_grad[1]:
            return None, None
        D = g.shape[-1]
        if self.padding_idx is not None:              # its row gets no gradient: made apart
            dweight = scatter_add_rows(self.ids.reshape(-1), g.reshape(-1, D), self.V)
            dweight[self.padding_idx] = 0
            return None, dweight
        buf, add = self.grad_buffer(1, g.dtype)
        if buf is not None and not add:
            buf.fill(0)
        return None, scatter_add_rows(self.ids.reshape(-1), g.reshape(-1, D), self.V, out=buf)


# ----------------------------------------------------------------------------- norms


@tiers.register(norm.LayerNorm)
class LayerNorm(norm.LayerNorm):
    """Rows in one chunk per core; xhat, y and dx built in place; row sums by einsum. The
    weight and bias gradients are summed chunk by chunk, in row order."""

    def forward(self, x, *params, has_weight=True, has_bias=True, eps=1e-5, ndim=1):
        x2, w, b = self._rows(x, params, has_weight, has_bias, ndim)
        N, D = x2.shape
        affine = w is not None or b is not None
        xhat = np.empty_like(x2)
        y = np.empty_like(x2) if affine else xhat
        rstd = np.empty((N, 1), dtype=x2.dtype)

        def rows(lo, hi):
            xr, hr, rr = x2[lo:hi], xhat[lo:hi], rstd[lo:hi]
            mean = row_sums(xr)
            mean /= D
            np.subtract(xr, mean, out=hr)              # x - mean
            var = row_dots(hr, hr)
            var /= D
            var += eps
            np.sqrt(var, out=rr)
            np.reciprocal(rr, out=rr)                  # rstd (rows, 1)
            hr *= rr                                   # xhat
            if affine:
                yr = y[lo:hi]
                if w is not None:
                    np.multiply(hr, w, out=yr)
                    if b is not None:
                        yr += b
                else:
                    np.add(hr, b, out=yr)

        parallel_for(rows, N, work_per_item=D)
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return self._out(y)

    def backward(self, g):
        xhat, rstd, w = self.xhat, self.rstd, self.w
        need_x, need_w, need_b = self._needs()
        g2 = self._rows_of(g, xhat)
        N, D = xhat.shape
        dx = np.empty_like(xhat) if need_x else None
        dw_parts, db_parts = {}, {}

        def rows(lo, hi):
            gr, hr = g2[lo:hi], xhat[lo:hi]
            if need_w:
                dw_parts[lo] = col_dots(gr, hr)
            if need_b:
                db_parts[lo] = gr.sum(axis=0)
            if need_x:
                dxr = dx[lo:hi]
                if w is not None:
                    np.multiply(gr, w, out=dxr)             # dxhat
                else:
                    dxr[...] = gr
                mean_dxhat = row_sums(dxr)
                mean_dxhat /= D
                mean_dxhat_xhat = row_dots(dxr, hr)
                mean_dxhat_xhat /= D
                dxr -= mean_dxhat                           # dxhat - mean_dxhat
                dxr -= np.multiply(hr, mean_dxhat_xhat)     #   - xhat * mean_dxhat_xhat
                dxr *= rstd[lo:hi]

        parallel_for(rows, N, work_per_item=D)
        dw = sum_parts(dw_parts, D, xhat.dtype) if need_w else None
        db = sum_parts(db_parts, D, xhat.dtype) if need_b else None
        return self._grads(dx, dw, db)


@tiers.register(norm.RMSNorm)
class RMSNorm(norm.RMSNorm):
    """Rows in one chunk per core; y, xhat and dx built in place; row sums by einsum."""

    def forward(self, x, *params, has_weight=True, eps=1e-6, ndim=1):
        x2, w, _ = self._rows(x, params, has_weight, False, ndim)
        N, D = x2.shape
        y = np.empty_like(x2)
        rrms = np.empty((N, 1), dtype=x2.dtype)

        def rows(lo, hi):
            xr, yr, rr = x2[lo:hi], y[lo:hi], rrms[lo:hi]
            ms = row_dots(xr, xr)
            ms /= D
            ms += eps
            np.sqrt(ms, out=rr)
            np.reciprocal(rr, out=rr)                  # rrms (rows, 1)
            np.multiply(xr, rr, out=yr)                # xhat
            if w is not None:
                yr *= w

        parallel_for(rows, N, work_per_item=D)
        self.x2, self.rrms, self.w = x2, rrms, w
        return self._out(y)

    def backward(self, g):
        x2, rrms, w = self.x2, self.rrms, self.w
        need_x, need_w, _ = self._needs()
        g2 = self._rows_of(g, x2)
        N, D = x2.shape
        out = np.empty_like(x2)                        # xhat, then dx
        dw_parts = {}

        def rows(lo, hi):
            gr = g2[lo:hi]
            xhat = np.multiply(x2[lo:hi], rrms[lo:hi], out=out[lo:hi])
            if need_w:
                dw_parts[lo] = col_dots(gr, xhat)
            if need_x:
                dxhat = gr * w if w is not None else gr
                mean_dxhat_xhat = row_dots(dxhat, xhat)
                mean_dxhat_xhat /= D
                xhat *= mean_dxhat_xhat
                dx = np.subtract(dxhat, xhat, out=xhat)
                dx *= rrms[lo:hi]

        parallel_for(rows, N, work_per_item=D)
        dw = sum_parts(dw_parts, D, x2.dtype) if need_w else None
        return self._grads(out if need_x else None, dw, None)


# ----------------------------------------------------------------------------- activations


class _Blockwise:
    """y = f(x) elementwise, computed in cache-sized blocks (``tuning.ACTIVATION_BLOCK``), one
    chunk of blocks per core. Subclasses write ``forward_block(x, saved, y)`` and
    ``backward_block(x, saved, g, d)``, which fill the output blocks in place (``saved`` is
    the one array the backward needs besides x). float16 blocks are computed in float32
    (NumPy's float16 arithmetic converts element by element: several times slower) and
    rounded back."""

    def _forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(-1)                          # a view when x is contiguous
        self.saved, y = np.empty_like(self.x), np.empty_like(self.x)

        def run(lo, hi):
            with np.errstate(over="ignore"):            # here: NumPy's error state is per thread
                in_float32(self.forward_block, (self.x[lo:hi],), (self.saved[lo:hi], y[lo:hi]))

        parallel_for(run, self.x.size, block=tuning.ACTIVATION_BLOCK)
        return y.reshape(self.shape)

    def backward(self, g):
        g = g.reshape(-1)
        d = np.empty_like(self.x)

        def run(lo, hi):
            in_float32(self.backward_block, (self.x[lo:hi], self.saved[lo:hi], g[lo:hi]), (d[lo:hi],))

        parallel_for(run, d.size, block=tuning.ACTIVATION_BLOCK)
        return d.reshape(self.shape)


@tiers.register(activation.GELU)
class GELU(_Blockwise, activation.GELU):
    """The reference's formulas, block by block, in place (``saved`` is cdf or s)."""

    def forward(self, x, approximate="none"):
        self.approximate = approximate
        return self._forward(x)

    def forward_block(self, x, saved, y):
        if self.approximate == "none":
            cdf = saved
            cdf[...] = erf(x * activation.INV_SQRT_2, np)
            cdf += 1.0
            cdf *= 0.5
            np.multiply(x, cdf, out=y)
            return
        s, c, a = saved, activation.SQRT_2_OVER_PI, activation.GELU_A
        np.multiply(x, x, out=s)
        s *= -2.0 * c * a
        s -= 2.0 * c
        s *= x                                   # -2u
        np.exp(s, out=s)                         # inf for very negative x: s becomes exactly 0 below
        s += 1.0
        np.reciprocal(s, out=s)                  # s = 1 / (1 + exp(-2u))
        np.multiply(x, s, out=y)

    def backward_block(self, x, saved, g, d):
        np.multiply(x, x, out=d)
        if self.approximate == "none":
            cdf = saved
            d *= -0.5
            np.exp(d, out=d)
            d *= activation.INV_SQRT_2PI         # pdf
            d *= x
            d += cdf
        else:
            s, c, a = saved, activation.SQRT_2_OVER_PI, activation.GELU_A
            d *= 6.0 * c * a
            d += 2.0 * c
            d *= x                               # x * 2 du
            d *= np.subtract(1.0, s)
            d += 1.0
            d *= s
        d *= g


def silu_block(x, sig, y):
    """sig = sigmoid(x) and y = x * sig, in place."""
    np.negative(x, out=sig)
    np.exp(sig, out=sig)                         # inf for x < -88 (float32): sig becomes exactly 0
    sig += 1.0
    np.reciprocal(sig, out=sig)
    np.multiply(x, sig, out=y)


def silu_slope_block(x, sig, d):
    """d = sig * (1 + x * (1 - sig)) (d silu / dx), in place."""
    np.subtract(1.0, sig, out=d)
    d *= x
    d += 1.0
    d *= sig


@tiers.register(activation.SiLU)
class SiLU(_Blockwise, activation.SiLU):
    """The reference's formulas, block by block, in place (``saved`` is sig)."""

    def forward(self, x):
        return self._forward(x)

    def forward_block(self, x, sig, y):
        silu_block(x, sig, y)

    def backward_block(self, x, sig, g, d):
        silu_slope_block(x, sig, d)
        d *= g


@tiers.register(activation.SwiGLU)
class SwiGLU(activation.SwiGLU):
    """The reference's formulas on cache-sized blocks, in place, one chunk of blocks per core
    (``tuning.ACTIVATION_BLOCK``); dgate and dup in one pass over each block; float16 blocks
    in float32 (``in_float32``)."""

    def forward(self, gate, up):
        self.shape = gate.shape
        self.gate, self.up = gate.reshape(-1), up.reshape(-1)     # views when contiguous
        self.sig, h = np.empty_like(self.gate), np.empty_like(self.gate)

        def block(gate, up, sig, hb):
            with np.errstate(over="ignore"):         # here: NumPy's error state is per thread
                silu_block(gate, sig, hb)
            hb *= up

        def run(lo, hi):
            in_float32(block, (self.gate[lo:hi], self.up[lo:hi]), (self.sig[lo:hi], h[lo:hi]))

        parallel_for(run, h.size, block=tuning.ACTIVATION_BLOCK)
        return h.reshape(self.shape)

    def backward(self, g):
        g = g.reshape(-1)
        dgate, dup = np.empty_like(self.gate), np.empty_like(self.gate)

        def block(gate, sig, up, gr, dg, du):
            np.multiply(gate, sig, out=du)
            du *= gr                                 # dup = g * silu(gate)
            silu_slope_block(gate, sig, dg)
            dg *= gr
            dg *= up                                 # dgate = g * up * silu'(gate)

        def run(lo, hi):
            in_float32(block, (self.gate[lo:hi], self.sig[lo:hi], self.up[lo:hi], g[lo:hi]), (dgate[lo:hi], dup[lo:hi]))

        parallel_for(run, g.size, block=tuning.ACTIVATION_BLOCK)
        return dgate.reshape(self.shape), dup.reshape(self.shape)


# ----------------------------------------------------------------------------- cross-entropy


@tiers.register(cross_entropy.CrossEntropy)
class CrossEntropy(cross_entropy.CrossEntropy):
    """Class-index targets: rows in one chunk per core, in place; the forward keeps the
    unnormalised exp(z), and the backward folds 1 / s into its per-row factor. Probability
    targets run the reference."""

    def forward(self, logits, targets, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        if targets.dtype.kind == "f":
            return super().forward(logits, targets, weight, ignore_index, reduction, label_smoothing)
        self.soft = False
        C = logits.shape[-1]
        N = math.prod(logits.shape[:-1])
        x2 = logits.reshape(N, C)
        eps = float(label_smoothing)
        w = weight
        t = targets.reshape(N)
        valid = t != ignore_index
        t = np.where(valid, t, 0)
        rows = np.arange(N)
        p = np.empty_like(x2)                     # z, then exp(z)
        z_t, s = np.empty(N, dtype=x2.dtype), np.empty(N, dtype=x2.dtype)
        z_w = np.empty(N, dtype=x2.dtype) if eps else None    # sum_c w_c z_c (w = 1: sum_c z_c)

        def chunk(a, b):
            xa, pa = x2[a:b], p[a:b]
            np.subtract(xa, xa.max(axis=1, keepdims=True), out=pa)
            z_t[a:b] = pa[rows[:b - a], t[a:b]]   # gathered before exp
            if eps:
                z_w[a:b] = pa.sum(axis=1) if w is None else pa @ w
            np.exp(pa, out=pa)
            pa.sum(axis=1, out=s[a:b])

        parallel_for(chunk, N, work_per_item=C)
        log_s = np.log(s)
        w_t = None if w is None else np.where(valid, w[t], 0)
        loss = log_s - z_t
        if w_t is not None:
            loss *= w_t
        if eps:
            loss *= 1.0 - eps
            self.w_sum = C if w is None else float(w.sum())
            loss += (eps / C) * (self.w_sum * log_s - z_w)
        loss = np.where(valid, loss, 0).astype(logits.dtype, copy=False)
        self.p, self.s, self.t, self.rows, self.valid, self.w_t = p, s, t, rows, valid, w_t
        self.eps, self.w, self.reduction, self.shape = eps, w, reduction, logits.shape
        if reduction == "none":
            return loss.reshape(targets.shape)
        total = loss.sum()
        if reduction == "sum":
            return total
        self.count = float(valid.sum()) if w_t is None else float(w_t.sum())
        if self.count == 0:
            return np.zeros((), dtype=logits.dtype)
        return total / self.count

    def backward(self, g):
        if self.soft:
            return super().backward(g)
        dtype, eps, w = self.p.dtype, self.eps, self.w
        N, C = self.p.shape
        if self.reduction == "none":                 # scale_i = d loss / d loss_i
            scale = g.reshape(-1)
        elif self.reduction == "sum":
            scale = np.broadcast_to(g.reshape(1), (N,))
        elif self.count == 0:                        # the forward returned 0: nothing depends on the logits
            scale = np.zeros(N, dtype=dtype)
        else:
            scale = np.broadcast_to(g.reshape(1) / self.count, (N,))
        scale = np.where(self.valid, scale, 0).astype(dtype, copy=False)
        w_t = 1.0 if self.w_t is None else self.w_t
        # d_ic = scale_i * (a_i p_ic - (1 - eps) w_t_i onehot_ic - (eps / C) w_c),
        # a_i = (1 - eps) w_t_i + (eps / C) sum_c w_c  (= 1 without weights); p = exp(z) / s
        a = (1.0 - eps) * w_t + (eps / C) * self.w_sum if eps else w_t
        f = (scale * a / self.s)[:, None]
        d = np.empty_like(self.p)
        smooth = None
        if eps:
            smooth = (eps / C) * scale[:, None]
            if w is not None:
                smooth = smooth * w

        def chunk(lo, hi):
            np.multiply(self.p[lo:hi], f[lo:hi], out=d[lo:hi])
            if smooth is not None:
                d[lo:hi] -= smooth[lo:hi]

        parallel_for(chunk, N, work_per_item=C)
        d[self.rows, self.t] -= (1.0 - eps) * scale * w_t
        return d.reshape(self.shape), None


# ----------------------------------------------------------------------------- attention


def scores_are_small(qs, k) -> bool:
    """True when |qs_i . k_j| <= NO_SHIFT_LIMIT for every query row i and key row j.

    qs (..., T, D) already scaled, k (..., Tk, D). By Cauchy-Schwarz
    |qs_i . k_j| <= |qs_i| |k_j| <= max_i |qs_i| * max_j |k_j|: two cheap passes.
    float16 is never trusted with the shortcut.
    """
    if qs.dtype.itemsize < 4 or qs.size == 0 or k.size == 0:
        return False
    q2 = float(np.einsum("...td,...td->...t", qs, qs).max())   # max_i |qs_i|^2
    k2 = float(np.einsum("...sd,...sd->...s", k, k).max())     # max_j |k_j|^2
    return q2 * k2 <= tuning.NO_SHIFT_LIMIT ** 2


def softmax_rows_(P, shift: bool, ones):
    """P (n, ..., T, Tk) contiguous scores, -inf where masked -> softmax over the last axis, in place.

    The reference's row-softmax (``ops.softmax.softmax``) with its convention (an all -inf
    row gives zeros), faster: ``shift=False`` skips subtracting the row max (only when
    ``scores_are_small``), and the row sums are one (T, Tk) @ ones(Tk) BLAS product per
    matrix, several times faster than ``P.sum(-1)`` over a short last axis; the same call
    whatever the batch size, so results do not depend on how the batch was cut into chunks.
    """
    T, Tk = P.shape[-2:]
    if shift:
        m = P.max(axis=-1, keepdims=True)       # -inf on fully masked rows
        m[np.isinf(m)] = 0                      # so those rows stay -inf -> exp -> 0
        P -= m
    np.exp(P, out=P)                            # masked entries: exp(-inf) = 0 exactly
    P3 = P.reshape(math.prod(P.shape[:-2]), T, Tk)     # P is contiguous: a view
    denom = np.matmul(P3, ones)[..., None]      # (n, T, 1)
    denom[denom == 0] = 1                       # only fully masked rows sum to 0
    np.reciprocal(denom, out=denom)
    P3 *= denom


_ADDITIVE: dict = {}    # id of a read-only `allowed` mask -> (the mask, its additive 0 / -inf form)


def _masked_form(allowed, dtype):
    """(additive 0 / -inf form of ``allowed``, its negation); the additive form is cached
    for read-only masks (the cached causal masks), which never change."""
    key = (id(allowed), np.dtype(dtype).str)
    hit = _ADDITIVE.get(key)
    if hit is not None and hit[0] is allowed:
        return hit[1], hit[2]
    masked = ~allowed
    additive = np.where(masked, dtype.type(-np.inf), dtype.type(0))
    if not allowed.flags.writeable:
        if len(_ADDITIVE) >= 64:
            _ADDITIVE.clear()
        _ADDITIVE[key] = (allowed, additive, masked)
    return additive, masked


def _batched(a, batch, tail):
    """``a`` broadcast to batch + tail (a view), with a leading axis of 1 when there is no batch."""
    if a.shape != batch + tail:
        a = np.broadcast_to(a, batch + tail)          # ~5 us: only when something broadcasts
    return a if batch else a[None]


def _pieces(batch, per_item_bytes, T, Tk, width):
    """parallel_for keywords for work cut along the first leading axis."""
    return dict(work_per_item=max(1, math.prod(batch[1:]) * T * Tk), block=max(1, tuning.ATTENTION_PIECE_BYTES // max(
        per_item_bytes, 1)), threaded=T * Tk * width <= tuning.BLAS_THREADED_MNK)


def attention_forward(xp, qs, k, v, allowed=None, bias=None, keep=None, inv_keep=1.0, out=None):
    """The reference's ``attention_forward``, same arguments (``xp`` is numpy here) and results.

    The first leading axis is cut into one chunk per core (unless the GEMMs are big enough
    for BLAS to thread them itself), each chunk worked in pieces whose scores stay in cache;
    the scores buffer becomes P in place; k and v are read in place whatever their strides.
    Without a float bias, the mask is added as 0 / -inf (exact when every score is finite);
    with one, masked scores are set to -inf after it is added. float16 runs in float32 and P
    and O are rounded to float16 (``gemm``).
    """
    if qs.dtype == np.float16:
        P, O = attention_forward(xp, *widened(qs, k, v), allowed, *widened(bias), keep, inv_keep)
        return rounded((P,))[0], rounded((O,), None if out is None else (out,))[0]
    batch = tuple(np.broadcast_shapes(qs.shape[:-2], k.shape[:-2], v.shape[:-2]))
    (T, D), (Tk, Dv) = qs.shape[-2:], v.shape[-2:]
    dt = qs.dtype
    q_, k_, v_ = (_batched(blas_matrices(a), batch, tail) for a, tail in ((qs, (T, D)), (k, (Tk, D)), (v, (Tk, Dv))))
    P = np.empty(q_.shape[:-2] + (T, Tk), dtype=dt)
    O = np.empty(q_.shape[:-2] + (T, Dv), dtype=dt) if out is None else (out if batch else out[None])
    Pd = P if keep is None else np.empty_like(P)
    keep_ = None if keep is None else _batched(keep, batch, (T, Tk))
    bias_ = None if bias is None else _batched(bias, batch, (T, Tk))
    additive = masked = None
    if allowed is not None:
        additive, masked = _masked_form(allowed, dt)
        additive, masked = _batched(additive, batch, (T, Tk)), _batched(masked, batch, (T, Tk))
    # a float bias may add anything to the scores: then the row max is always subtracted
    shift = bool(P.size) and (bias is not None or not scores_are_small(qs, k))
    ones = np.ones(Tk, dtype=dt)

    def piece(a, z):
        Sa = P[a:z]
        np.matmul(q_[a:z], k_[a:z].swapaxes(-1, -2), out=Sa)          # S
        if bias_ is not None:
            Sa += bias_[a:z]
            if masked is not None:
                np.copyto(Sa, dt.type(-np.inf), where=masked[a:z])
        elif additive is not None:
            Sa += additive[a:z]
        softmax_rows_(Sa, shift, ones)                                 # P
        if keep_ is not None:
            np.multiply(Sa, keep_[a:z], out=Pd[a:z])
            Pd[a:z] *= inv_keep
        np.matmul(Pd[a:z], v_[a:z], out=O[a:z])                        # O

    parallel_for(piece, P.shape[0], **_pieces(q_.shape[:-2], P[:1].nbytes, T, Tk, max(D, Dv)))
    return (P, O) if batch else (P[0], O[0])


def attention_backward(dO, P, O, qs, k, v, scale, keep=None, inv_keep=1.0, out=None, dS_out=None):
    """The reference's ``attention_backward``, same arguments and results.

    Cut into chunks and pieces as the forward; dS is built in place in the buffer of dO V^T,
    and delta = rowsum(dO * O) by einsum. float16 runs in float32, as the forward.
    """
    if P.dtype == np.float16:
        return rounded(attention_backward(*widened(dO, P, O, qs, k, v), scale, keep, inv_keep), out)
    batch = P.shape[:-2]
    (T, Tk), D, Dv = P.shape[-2:], qs.shape[-1], v.shape[-1]
    dt = P.dtype
    P_, O_ = _batched(P, batch, (T, Tk)), _batched(O, batch, (T, Dv))
    dO_ = _batched(blas_matrices(dO), batch, (T, Dv))
    q_, k_, v_ = (_batched(blas_matrices(a), batch, tail) for a, tail in ((qs, (T, D)), (k, (Tk, D)), (v, (Tk, Dv))))
    keep_ = None if keep is None else _batched(keep, batch, (T, Tk))
    dS_ = None if dS_out is None else _batched(dS_out, batch, (T, Tk))
    lead = P_.shape[:-2]
    if out is None:
        dq, dk, dv = (np.empty(lead + tail, dtype=dt) for tail in ((T, D), (Tk, D), (Tk, Dv)))
    else:
        dq, dk, dv = out if batch else (o[None] for o in out)

    def piece(a, z):
        Pa = P_[a:z]
        Pd = Pa if keep_ is None else np.multiply(Pa, keep_[a:z]) * dt.type(inv_keep)
        np.matmul(Pd.swapaxes(-1, -2), dO_[a:z], out=dv[a:z])         # dV
        dS = np.matmul(dO_[a:z], v_[a:z].swapaxes(-1, -2))             # dP (w.r.t. Pd with dropout)
        if keep_ is not None:
            dS *= keep_[a:z]                                            # chain through the dropout
            dS *= dt.type(inv_keep)
        dS -= row_dots(dO_[a:z], O_[a:z])                               # - delta
        dS *= Pa                                                        # dS = P * (dP - delta)
        if dS_ is not None:
            dS_[a:z] = dS                                               # a float bias's gradient
        np.matmul(dS, k_[a:z], out=dq[a:z])
        dq[a:z] *= dt.type(scale)                                       # dQ = s dS K
        np.matmul(dS.swapaxes(-1, -2), q_[a:z], out=dk[a:z])           # dK = dS^T qs

    parallel_for(piece, lead[0], **_pieces(lead, P_[:1].nbytes, T, Tk, max(D, Dv)))
    if out is not None:
        return out
    return (dq, dk, dv) if batch else (dq[0], dk[0], dv[0])


@tiers.register(attention.ScaledDotProductAttention)
class ScaledDotProductAttention(attention.ScaledDotProductAttention):
    """The reference node on the fast attention core."""

    core_forward = staticmethod(attention_forward)
    core_backward = staticmethod(attention_backward)


@tiers.register(self_attention.CausalSelfAttention)
class CausalSelfAttention(self_attention.CausalSelfAttention):
    """The reference node on the fast attention core."""

    core_forward = staticmethod(attention_forward)
    core_backward = staticmethod(attention_backward)


# ----------------------------------------------------------------------------- tiled (flash) attention


def _tiles_threaded(block_q, block_k, qs, v) -> bool:
    """Chunks on several threads only while a tile's products are small enough that BLAS runs
    them on one thread (two Python threads each calling a threaded BLAS slow each other down)."""
    return block_q * block_k * max(qs.shape[-1], v.shape[-1]) <= tuning.BLAS_THREADED_MNK


def flash_forward(xp, qs, k, v, allowed=None, bias=None, causal=False, dropout_p=0.0, seed=0,
                  block_q=flash.BLOCK_Q, block_k=flash.BLOCK_K, out=None, first=0):
    """The reference's ``flash_forward``, same arguments and results. The first leading axis is
    cut into one chunk per core, each running the reference's tile loops (its dropout counters
    counting from its first problem); the operands are laid out so that BLAS reads them in place
    (``blas_matrices``: NumPy multiplies other strides in a plain loop); float16 runs in float32."""
    if qs.dtype == np.float16:
        L, O = flash_forward(xp, *widened(qs, k, v), allowed, *widened(bias), causal, dropout_p, seed, block_q,
                             block_k, first=first)
        return L, rounded((O,), None if out is None else (out,))[0]
    batch = tuple(np.broadcast_shapes(qs.shape[:-2], k.shape[:-2], v.shape[:-2]))
    T, S, Dv = qs.shape[-2], k.shape[-2], v.shape[-1]
    q_, k_, v_ = (_batched(blas_matrices(a), batch, a.shape[-2:]) for a in (qs, k, v))
    masks = [None if m is None else _batched(m, batch, (T, S)) for m in (allowed, bias)]
    O = np.empty(q_.shape[:-2] + (T, Dv), dtype=qs.dtype) if out is None else (out if batch else out[None])
    L = np.empty(q_.shape[:-2] + (T,), dtype=flash.stat_dtype(qs.dtype))
    per = math.prod(q_.shape[1:-2])                     # problems per item of the first axis

    def chunk(a, z):
        L[a:z] = flash.flash_forward(np, q_[a:z], k_[a:z], v_[a:z], *(None if m is None else m[a:z] for m in masks),
                                     causal, dropout_p, seed, block_q, block_k, out=O[a:z], first=first + a * per)[0]

    parallel_for(chunk, q_.shape[0], work_per_item=max(1, per * T * S),
                 threaded=_tiles_threaded(block_q, block_k, qs, v))
    return (L, O) if batch else (L[0], O[0])


def flash_backward(xp, dO, L, O, qs, k, v, scale, allowed=None, bias=None, causal=False, dropout_p=0.0, seed=0,
                   block_q=flash.BLOCK_Q, block_k=flash.BLOCK_K, out=None, first=0):
    """The reference's ``flash_backward``, same arguments and results, cut and laid out as the forward."""
    if dO.dtype == np.float16:
        grads = flash_backward(xp, *widened(dO), L, *widened(O, qs, k, v), scale, allowed, *widened(bias), causal,
                               dropout_p, seed, block_q, block_k, first=first)
        return rounded(grads, out)
    batch = tuple(np.broadcast_shapes(qs.shape[:-2], k.shape[:-2], v.shape[:-2]))
    (T, D), (S, Dv) = qs.shape[-2:], v.shape[-2:]
    dO_, O_, q_, k_, v_ = (_batched(blas_matrices(a), batch, a.shape[-2:]) for a in (dO, O, qs, k, v))
    L_ = L if batch else L[None]
    masks = [None if m is None else _batched(m, batch, (T, S)) for m in (allowed, bias)]
    lead = q_.shape[:-2]
    if out is None:
        dq, dk, dv = (np.empty(lead + tail, dtype=qs.dtype) for tail in ((T, D), (S, D), (S, Dv)))
    else:
        dq, dk, dv = out if batch else (o[None] for o in out)
    per = math.prod(lead[1:])

    def chunk(a, z):
        flash.flash_backward(np, dO_[a:z], L_[a:z], O_[a:z], q_[a:z], k_[a:z], v_[a:z], scale,
                             *(None if m is None else m[a:z] for m in masks), causal, dropout_p, seed, block_q, block_k,
                             out=(dq[a:z], dk[a:z], dv[a:z]), first=first + a * per)

    parallel_for(chunk, lead[0], work_per_item=max(1, per * T * S), threaded=_tiles_threaded(block_q, block_k, qs, v))
    if out is not None:
        return out
    return (dq, dk, dv) if batch else (dq[0], dk[0], dv[0])


class _FastTiles:
    """Swaps the fast tiled core into a reference node."""

    core_forward = staticmethod(flash_forward)
    core_backward = staticmethod(flash_backward)


@tiers.register(flash.FlashAttention)
class FlashAttention(_FastTiles, flash.FlashAttention):
    """The reference node on the fast tiled core."""


@tiers.register(flash.FlashCausalSelfAttention)
class FlashCausalSelfAttention(_FastTiles, flash.FlashCausalSelfAttention):
    """The reference node on the fast tiled core."""
