"""The fast tier on NVIDIA GPUs (CuPy): the transformer's elementwise and row-wise work fused
into CUDA kernels, a few launches where the reference tier makes dozens of CuPy calls.

Registered for the "cuda" device kind (``tiers.register``), each a subclass of the reference
op of the same name with the same ``forward``/``backward``:

* ``GELU``, ``Dropout``: one elementwise kernel forward, one backward;
* ``LayerNorm``: one kernel per row forward; backward one per row for dx and two for the
  weight and bias gradients (partial sums per block of rows, then added in a fixed order:
  no atomics, the same result every run), written straight into the optimizer's buffer;
* ``CrossEntropy`` (class-index targets without class weights or label smoothing; other
  forms run the reference): one kernel per row and one for the sum, forward; one backward;
* ``CausalSelfAttention`` (the GPT's attention node): q, k and v laid out once so that
  CuPy's batched matrix products read them in place, and the softmax with its causal mask,
  scale and dropout in one kernel per row, forward and backward;
* the AdamW update over an optimizer's flat buffer (:func:`adamw_update`, called by
  optim/adamw.py): one kernel per buffer, which skips the step on the device when the
  training loop's NaN/inf flag is set;
* ``Linear`` and ``Embedding``: no kernels; the CPU tier's Linear (array code for either
  library) and an Embedding that scatter-adds straight into the optimizer's buffer.

The kernels work on float32; other dtypes run the reference. Nothing here is trusted blindly:

1. ``tests/test_cuda_kernels.py`` compiles every source in :data:`SOURCES` for sm_90 with
   NVRTC (the ``nvidia-cuda-nvrtc-cu12`` wheel, no GPU needed): a compile error fails CI.
2. On its first use on a device each fused op runs itself on small random inputs next to the
   reference tier (output and every gradient, :func:`ready`). If its kernels do not build or
   its results disagree, it falls back to the reference tier on that device, with one
   warning; when no kernel can be built there at all (no NVRTC; the NumPy-backed CuPy
   stand-in used for testing), one warning says so for all of them.

Floating-point atomics: CuPy's ``scatter_add`` (the embedding backward) adds in no fixed
order, so two GPU runs agree to float32 rounding, not bit for bit.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import backend, tiers
from ..ops import activation, cross_entropy, dropout, embedding, linear, norm, self_attention
from . import cpu

__all__ = ["SOURCES", "COMPILE_OPTIONS", "FUSED_OPS", "ready", "status", "reset", "launch", "disagreement",
           "adamw_update"]

COMPILE_OPTIONS = ("--std=c++14",)

_COMMON = r"""
#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)
// The sum (max) of v over the block; blockDim.x a multiple of 32; sh holds 33 floats.
struct SumOp { __device__ float operator()(float a, float b) const { return a + b; } };
struct MaxOp { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
template <class Op> __device__ __forceinline__ float warp_reduce(float v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
template <class Op> __device__ float block_reduce(float v, float* sh, float identity, Op op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < warps ? sh[lane] : identity;
        t = warp_reduce(t, op);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    return sh[32];
}
__device__ float block_sum(float v, float* sh) { return block_reduce(v, sh, 0.0f, SumOp()); }
__device__ float block_max(float v, float* sh) { return block_reduce(v, sh, NEG_INF, MaxOp()); }
#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)blockDim.x * gridDim.x)
"""

# the reference's constants, as float literals (ops/activation.py)
_GELU_CONST = (f"#define SQRT_2_OVER_PI {activation.SQRT_2_OVER_PI!r}f\n#define GELU_A {activation.GELU_A!r}f\n"
               f"#define INV_SQRT_2 {activation.INV_SQRT_2!r}f\n#define INV_SQRT_2PI {activation.INV_SQRT_2PI!r}f\n")

#: CUDA C source of each group of kernels (one module each), by name
SOURCES = {
    "gelu": _COMMON + _GELU_CONST + r"""
// y = x * s: s = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + a x^3) (tanh form), or s = cdf (exact form)
extern "C" __global__ void gelu_forward(const float* x, float* y, float* saved, long long n, int tanh_form) {
    GRID_STRIDE(i, n) {
        const float xi = x[i];
        float s;
        if (tanh_form) {
            const float u = SQRT_2_OVER_PI * (xi + GELU_A * (xi * xi * xi));
            s = 1.0f / (1.0f + expf(-2.0f * u));
        } else {
            s = 0.5f * (1.0f + erff(xi * INV_SQRT_2));
        }
        saved[i] = s;
        y[i] = xi * s;
    }
}
// dx = g * s * (1 + x (1 - s) 2 du) (tanh form), or g * (cdf + x pdf) (exact form)
extern "C" __global__ void gelu_backward(const float* x, const float* saved, const float* g, float* dx,
                                         long long n, int tanh_form) {
    GRID_STRIDE(i, n) {
        const float xi = x[i], s = saved[i];
        float d;
        if (tanh_form) {
            const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_A * xi * xi);
            d = s * (1.0f + xi * (1.0f - s) * 2.0f * du);
        } else {
            d = s + xi * (expf(-0.5f * xi * xi) * INV_SQRT_2PI);
        }
        dx[i] = g[i] * d;
    }
}
""",
    "dropout": _COMMON + r"""
// keep = u >= p;  y = x * keep * scale  (the reference's products, in its order)
extern "C" __global__ void dropout_forward(const float* x, const float* u, float* y, bool* keep, long long n,
                                           float p, float scale) {
    GRID_STRIDE(i, n) {
        const bool k = u[i] >= p;
        keep[i] = k;
        y[i] = x[i] * (float)k * scale;
    }
}
extern "C" __global__ void dropout_backward(const float* g, const bool* keep, float* dx, long long n, float scale) {
    GRID_STRIDE(i, n) { dx[i] = g[i] * (float)keep[i] * scale; }
}
""",
    "layer_norm": _COMMON + r"""
// one block per row of x (N, D): mean, var (two passes), rstd, xhat, y = xhat * w + b
extern "C" __global__ void layer_norm_forward(const float* x, const float* w, const float* b, float* y,
                                              float* xhat, float* rstd, int D, float eps, int has_w, int has_b) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    const float* xr = x + row * D;
    float s = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += xr[j];
    const float mean = block_sum(s, sh) / D;
    float v = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) { const float d = xr[j] - mean; v += d * d; }
    const float r = 1.0f / sqrtf(block_sum(v, sh) / D + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float h = (xr[j] - mean) * r;
        float out = h;
        if (has_w) out = out * w[j];
        if (has_b) out = out + b[j];
        xhat[row * D + j] = h;
        y[row * D + j] = out;
    }
}
// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = g * w
extern "C" __global__ void layer_norm_backward_dx(const float* g, const float* xhat, const float* rstd,
                                                  const float* w, float* dx, int D, int has_w) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    const float* gr = g + row * D;
    const float* hr = xhat + row * D;
    float s1 = 0.0f, s2 = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float d = has_w ? gr[j] * w[j] : gr[j];
        s1 += d;
        s2 += d * hr[j];
    }
    const float mean_d = block_sum(s1, sh) / D;
    const float mean_dh = block_sum(s2, sh) / D;
    const float r = rstd[row];
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float d = has_w ? gr[j] * w[j] : gr[j];
        dx[row * D + j] = r * (d - mean_d - hr[j] * mean_dh);
    }
}
// partial column sums of g * xhat and g over a block of rows: part (gridDim.y, 2, D); block (32, 8)
extern "C" __global__ void layer_norm_backward_partial(const float* g, const float* xhat, float* part,
                                                       long long N, int D, int rows_per_block) {
    __shared__ float sw[8][33], sb[8][33];
    const int col = blockIdx.x * 32 + threadIdx.x;
    const long long r0 = (long long)blockIdx.y * rows_per_block;
    const long long r1 = min(N, r0 + rows_per_block);
    float acc_w = 0.0f, acc_b = 0.0f;
    if (col < D)
        for (long long r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
            const float gv = g[r * D + col];
            acc_w += gv * xhat[r * D + col];
            acc_b += gv;
        }
    sw[threadIdx.y][threadIdx.x] = acc_w;
    sb[threadIdx.y][threadIdx.x] = acc_b;
    __syncthreads();
    if (threadIdx.y == 0 && col < D) {
        float tw = 0.0f, tb = 0.0f;
        for (int k = 0; k < blockDim.y; ++k) { tw += sw[k][threadIdx.x]; tb += sb[k][threadIdx.x]; }
        part[((long long)blockIdx.y * 2) * D + col] = tw;
        part[((long long)blockIdx.y * 2 + 1) * D + col] = tb;
    }
}
// dw = (add ? dw : 0) + sum of the partials, in order (likewise db)
extern "C" __global__ void layer_norm_backward_final(const float* part, float* dw, float* db, int G, int D,
                                                     int has_w, int has_b, int add_w, int add_b) {
    GRID_STRIDE(col, D) {
        float tw = 0.0f, tb = 0.0f;
        for (int k = 0; k < G; ++k) { tw += part[(2LL * k) * D + col]; tb += part[(2LL * k + 1) * D + col]; }
        if (has_w) dw[col] = add_w ? dw[col] + tw : tw;
        if (has_b) db[col] = add_b ? db[col] + tb : tb;
    }
}
""",
    "cross_entropy": _COMMON + r"""
// per row: lse = m + log(sum exp(z - m)),  loss = lse - z[t] (0 where t == ignore_index)
extern "C" __global__ void cross_entropy_forward(const float* z, const long long* t, float* loss, float* lse,
                                                 int C, long long ignore_index) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    const float* zr = z + row * C;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, zr[j]);
    m = block_max(m, sh);
    const float shift = isinf(m) ? 0.0f : m;
    float s = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += expf(zr[j] - shift);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        const float l = shift + logf(s);
        const long long ti = t[row];
        lse[row] = l;
        loss[row] = ti == ignore_index ? 0.0f : l - zr[ti];
    }
}
// out = sum of loss (mean: divided by the rows counted; 0 when none), count = rows counted; one block
extern "C" __global__ void cross_entropy_reduce(const float* loss, const long long* t, float* out, float* count,
                                                long long N, long long ignore_index, int mean) {
    __shared__ float sh[33];
    float s = 0.0f, c = 0.0f;
    for (long long i = threadIdx.x; i < N; i += blockDim.x) {
        s += loss[i];
        c += t[i] == ignore_index ? 0.0f : 1.0f;
    }
    s = block_sum(s, sh);
    c = block_sum(c, sh);
    if (threadIdx.x == 0) {
        out[0] = mean ? (c == 0.0f ? 0.0f : s / c) : s;
        count[0] = c;
    }
}
// dz = (softmax(z) - onehot(t)) * scale_row; scale_row = g_row ("none"), g ("sum"), g / count ("mean"), 0 if ignored
extern "C" __global__ void cross_entropy_backward(const float* z, const long long* t, const float* lse,
                                                  const float* g, const float* count, float* dz, int C,
                                                  long long ignore_index, int mode) {
    const long long row = blockIdx.x;
    const long long ti = t[row];
    float scale;
    if (ti == ignore_index) scale = 0.0f;
    else if (mode == 0) scale = g[row];
    else if (mode == 1) scale = g[0];
    else scale = count[0] == 0.0f ? 0.0f : g[0] / count[0];
    const float l = lse[row];
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const float p = expf(z[row * C + j] - l);
        dz[row * C + j] = (p - (j == ti ? 1.0f : 0.0f)) * scale;
    }
}
""",
    "attention": _COMMON + r"""
// one block per row of the raw scores S = q k^T (rows, Tk); row r is query i = r % T. Keys j > i + Tk - T
// are masked when causal. P = softmax(scale * S) over the allowed keys (a row with none: zeros);
// with dropout (u given): keep = u >= p, Pd = P * keep * inv_keep.
extern "C" __global__ void softmax_forward(const float* S, const float* u, float* P, float* Pd, bool* keep,
                                           int T, int Tk, float scale, float p, float inv_keep, int causal,
                                           int dropout) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    const int last = causal ? (int)(row % T) + Tk - T : Tk - 1;
    const float* s = S + row * Tk;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < Tk && j <= last; j += blockDim.x) m = fmaxf(m, s[j] * scale);
    m = block_max(m, sh);
    const float shift = isinf(m) ? 0.0f : m;
    float z = 0.0f;
    for (int j = threadIdx.x; j < Tk && j <= last; j += blockDim.x) z += expf(s[j] * scale - shift);
    z = block_sum(z, sh);
    const float denom = z == 0.0f ? 1.0f : z;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        const float pv = j <= last ? expf(s[j] * scale - shift) / denom : 0.0f;
        const long long at = row * Tk + j;
        P[at] = pv;
        if (dropout) {
            const bool k = u[at] >= p;
            keep[at] = k;
            Pd[at] = pv * (float)k * inv_keep;
        }
    }
}
// dP = dPd * keep * inv_keep (or dPd), delta = rowsum(dP * P), dS = scale * P * (dP - delta)
extern "C" __global__ void softmax_backward(const float* dPd, const float* P, const bool* keep, float* dS,
                                            int Tk, float scale, float inv_keep, int dropout) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    float d = 0.0f;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        const long long at = row * Tk + j;
        const float dp = dropout ? dPd[at] * (float)keep[at] * inv_keep : dPd[at];
        d += dp * P[at];
    }
    const float delta = block_sum(d, sh);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        const long long at = row * Tk + j;
        const float dp = dropout ? dPd[at] * (float)keep[at] * inv_keep : dPd[at];
        dS[at] = scale * (P[at] * (dp - delta));
    }
}
""",
    "adamw": _COMMON + r"""
// AdamW on a flat buffer, as optim/adamw.py's update (same products, same order); nothing when *skip
extern "C" __global__ void adamw_update(float* p, const float* g, float* m, float* v, long long n,
                                        float decay, float one_minus_beta1, float beta2, float one_minus_beta2,
                                        float eps_c2, float step_size, const bool* skip, int has_skip) {
    if (has_skip && *skip) return;
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        const float mi = m[i] + (gi - m[i]) * one_minus_beta1;
        const float vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
        const float upd = (mi / (sqrtf(vi) + eps_c2)) * step_size;
        p[i] = p[i] * decay + upd;
        m[i] = mi;
        v[i] = vi;
    }
}
""",
}

# ----------------------------------------------------------------------------- building and launching

_MODULES: dict = {}      # (source name, device) -> compiled CuPy RawModule
_STATUS: dict = {}       # (op name, device) -> True (checked), False (falls back), None (being checked)
_UNBUILDABLE: dict = {}  # device -> why no kernel can be built there
FUSED_OPS = ("GELU", "Dropout", "LayerNorm", "CrossEntropy", "CausalSelfAttention", "AdamW")


def _function(device: str, source: str, kernel: str):
    mod = _MODULES.get((source, device))
    if mod is None:
        cp = backend.xp_for(device)
        mod = cp.RawModule(code=SOURCES[source], options=COMPILE_OPTIONS)
        _MODULES[source, device] = mod
    return mod.get_function(kernel)          # compiles the module on first use


def launch(device: str, source: str, kernel: str, grid, block, args) -> None:
    """Run ``kernel`` of ``SOURCES[source]`` on ``device`` (built there on first use)."""
    _function(device, source, kernel)(grid, block, args)


def _grid(n: int, block: int = 256) -> tuple:
    return (max(1, min((n + block - 1) // block, 4096)),)


def _row_block(cols: int) -> int:
    """Threads per row for the row kernels: a multiple of 32, about half a thread per column."""
    return 32 if cols <= 64 else 64 if cols <= 128 else 128 if cols <= 512 else 256


def ready(name: str, device: str, check) -> bool:
    """Whether the fused kernels of op ``name`` may run on ``device``: True once ``check(device)``
    (run on the first call) found them in agreement with the reference tier; False after it did
    not (a string saying how), or raised (the kernels did not build), with one warning then."""
    key = (name, device)
    state = _STATUS.get(key, "unchecked")
    if state is None or state is True:       # None: the op's own check is running the fused path
        return True
    if state is False:
        return False
    if device in _UNBUILDABLE:
        _STATUS[key] = False
        return False
    _STATUS[key] = None
    try:
        problem = check(device)
    except Exception as e:  # noqa: BLE001 - any failure means: do not use these kernels
        text = str(e).strip().splitlines()
        why = f"{type(e).__name__}: {text[0] if text else 'no message'}"
        if type(e).__name__ != "CompileException":    # nothing can be built here: say so once, for all
            _UNBUILDABLE[device] = why
            _STATUS[key] = False
            warnings.warn(f"tinygrad_llm: the fused CUDA kernels cannot be built on {device} ({why}); "
                          f"{', '.join(FUSED_OPS)} run on the reference tier there", RuntimeWarning, stacklevel=3)
            return False
        problem = f"does not compile ({why})"
    _STATUS[key] = problem is None
    if problem is not None:
        warnings.warn(f"tinygrad_llm: the fused CUDA kernel of {name} {problem} on {device}; {name} runs on the "
                      "reference tier there", RuntimeWarning, stacklevel=3)
    return _STATUS[key]


def status(device: str = "cuda:0") -> dict:
    """{op name: True (fused kernels checked and in use), False (reference tier), or absent
    (not used yet)} on ``device``, and ``"unbuildable"``: why no kernel builds there, if so."""
    out = {name: st for (name, dev), st in _STATUS.items() if dev == device and st is not None}
    if device in _UNBUILDABLE:
        out["unbuildable"] = _UNBUILDABLE[device]
    return out


def reset() -> None:
    """Forget every check and compiled module (the next use checks again)."""
    _MODULES.clear()
    _STATUS.clear()
    _UNBUILDABLE.clear()


def disagreement(name: str, got, want) -> str | None:
    """None when the arrays agree to float32 rounding, else how they differ."""
    if (got is None) != (want is None):
        return f"{name}: one tier gives no array"
    if got is None:
        return None
    got, want = backend.to_numpy(got).astype(np.float64), backend.to_numpy(want).astype(np.float64)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} instead of {want.shape}"
    scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
    if not np.allclose(got, want, rtol=2e-4, atol=2e-5 * scale, equal_nan=True):
        bad = np.abs(got - want)
        return f"{name}: largest difference {np.nanmax(bad):.3g} (values up to {scale:.3g})"
    return None


def _check_node(fast: type, device: str) -> str | None:
    """Run the fast op and its reference on ``fast.examples`` on ``device``: forward, then backward
    with the same random gradient; None when every output and gradient agrees."""
    xp = backend.xp_for(device)
    rs = np.random.default_rng(0)
    for k, (args, kwargs) in enumerate(fast.examples(rs)):
        results = []
        g_host = None
        for cls in (fast, fast.reference):
            node = cls(device, xp)
            node.needs_input_grad = tuple(np.asarray(a).dtype.kind == "f" for a in args)
            with backend.fixed_rng(device, 1234 + k):        # the same dropout masks for both
                y = node.forward(*[xp.asarray(a) for a in args], **kwargs)
            if g_host is None:
                g_host = rs.standard_normal(y.shape).astype(y.dtype)
            grads = node.backward(xp.asarray(g_host))
            results.append((y, grads if isinstance(grads, tuple) else (grads,)))
        (y_f, g_f), (y_r, g_r) = results
        problems = [disagreement(f"output (example {k})", y_f, y_r)]
        problems += [disagreement(f"gradient {i} (example {k})", a, b) for i, (a, b) in enumerate(zip(g_f, g_r))]
        problems = [p for p in problems if p is not None]
        if problems:
            return "disagrees with the reference tier: " + "; ".join(problems)
    return None


class _Fused:
    """Mixin of the fused ops: ``_fused(*arrays)`` says whether the kernels run (float32 inputs,
    and the op passed its self-check on this device); the backward follows the forward's choice."""

    reference: type = None

    def _fused(self, *arrays) -> bool:
        if any(a.dtype != np.float32 for a in arrays):
            return False
        cls = type(self)
        return ready(cls.__name__, self.device, lambda device: _check_node(cls, device))

    @staticmethod
    def examples(rs):  # pragma: no cover - each op gives its own
        raise NotImplementedError


def _register(reference: type):
    """Register the class for "cuda" devices, remembering its reference (for the self-check)."""
    def decorate(cls):
        cls.reference = reference
        return tiers.register(reference, "cuda")(cls)
    return decorate


def _f32(rs, *shape, scale=1.0):
    return (rs.standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- elementwise

@_register(activation.GELU)
class GELU(_Fused, activation.GELU):
    """One kernel forward (y and s, or cdf), one backward."""

    @staticmethod
    def examples(rs):
        x = _f32(rs, 7, 45, scale=3.0)
        x[0, :4] = [-40.0, 40.0, 0.0, -8.0]
        return [((x,), {"approximate": "tanh"}), ((x,), {"approximate": "none"})]

    def forward(self, x, approximate="none"):
        self.fast = self._fused(x)
        if not self.fast:
            return super().forward(x, approximate)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        y, saved = xp.empty_like(x), xp.empty_like(x)
        self.x, self.saved, self.tanh = x, saved, int(approximate == "tanh")
        launch(self.device, "gelu", "gelu_forward", _grid(x.size), (256,), (x, y, saved, np.int64(x.size),
                                                                           np.int32(self.tanh)))
        return y

    def backward(self, g):
        if not self.fast:
            return super().backward(g)
        g = self.xp.ascontiguousarray(g)
        dx = self.xp.empty_like(self.x)
        launch(self.device, "gelu", "gelu_backward", _grid(dx.size), (256,),
               (self.x, self.saved, g, dx, np.int64(dx.size), np.int32(self.tanh)))
        return dx


@_register(dropout.Dropout)
class Dropout(_Fused, dropout.Dropout):
    """The reference's uniform draw (the same masks), then one kernel: keep and y together."""

    @staticmethod
    def examples(rs):
        return [((_f32(rs, 5, 33),), {"p": 0.3}), ((_f32(rs, 4, 8),), {"p": 1.0})]

    def forward(self, x, p=0.5):
        self.fast = self._fused(x)
        if not self.fast:
            return super().forward(x, p)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        u = backend.rng(self.device).random(x.shape, dtype=np.float32)     # as dropout_mask draws it
        y, self.keep = xp.empty_like(x), xp.empty(x.shape, dtype=bool)
        self.scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
        launch(self.device, "dropout", "dropout_forward", _grid(x.size), (256,),
               (x, u, y, self.keep, np.int64(x.size), np.float32(p), np.float32(self.scale)))
        return y

    def backward(self, g):
        if not self.fast:
            return super().backward(g)
        g = self.xp.ascontiguousarray(g)
        dx = self.xp.empty_like(g)
        launch(self.device, "dropout", "dropout_backward", _grid(g.size), (256,),
               (g, self.keep, dx, np.int64(g.size), np.float32(self.scale)))
        return dx


# ----------------------------------------------------------------------------- rows

@_register(norm.LayerNorm)
class LayerNorm(_Fused, norm.LayerNorm):
    """A block per row forward and for dx; the weight and bias gradients as column sums of
    partial sums over blocks of rows, straight into the optimizer's buffer when there is one."""

    @staticmethod
    def examples(rs):
        x = _f32(rs, 6, 40, scale=2.0) + 3.0
        w, b = _f32(rs, 40), _f32(rs, 40)
        return [((x, w, b), {}), ((_f32(rs, 3, 2, 7), _f32(rs, 2, 7)), {"has_bias": False, "ndim": 2}),
                ((x,), {"has_weight": False, "has_bias": False, "eps": 1e-3})]

    def forward(self, x, *params, has_weight=True, has_bias=True, eps=1e-5, ndim=1):
        self.fast = self._fused(x, *params)
        if not self.fast:
            return super().forward(x, *params, has_weight=has_weight, has_bias=has_bias, eps=eps, ndim=ndim)
        xp = self.xp
        x2, w, b = self._rows(xp.ascontiguousarray(x), params, has_weight, has_bias, ndim)
        N, D = x2.shape
        w = xp.ascontiguousarray(w) if w is not None else x2
        b = xp.ascontiguousarray(b) if b is not None else x2
        y, xhat, rstd = xp.empty_like(x2), xp.empty_like(x2), xp.empty((N, 1), dtype=x2.dtype)
        if N:
            launch(self.device, "layer_norm", "layer_norm_forward", (N,), (_row_block(D),),
                   (x2, w, b, y, xhat, rstd, np.int32(D), np.float32(eps), np.int32(has_weight), np.int32(has_bias)))
        self.xhat, self.rstd, self.w = xhat, rstd, (w if has_weight else None)
        return y.reshape(x.shape)

    def backward(self, g):
        if not self.fast:
            return super().backward(g)
        xp, xhat = self.xp, self.xhat
        N, D = xhat.shape
        need_x, need_w, need_b = self._needs()
        g2 = xp.ascontiguousarray(g).reshape(N, D)
        out = [None]
        if need_x:
            dx = xp.empty_like(xhat)
            if N:
                launch(self.device, "layer_norm", "layer_norm_backward_dx", (N,), (_row_block(D),),
                       (g2, xhat, self.rstd, self.w if self.w is not None else xhat, dx, np.int32(D),
                        np.int32(self.w is not None)))
            out[0] = dx.reshape(self.shape)
        pshape = self.shape[len(self.shape) - self.nd:]
        bufs = []
        for i, need in ((1, need_w), (2, need_b)):
            buf, add = self.grad_buffer(i, xhat.dtype) if need else (None, False)
            bufs.append((buf if buf is not None else xp.empty(pshape, dtype=xhat.dtype), add and buf is not None))
        (dw, add_w), (db, add_b) = bufs
        if need_w or need_b:
            rows = max(8, -(-N // 128))
            G = max(1, -(-N // rows))
            part = xp.empty((G, 2, D), dtype=xhat.dtype)
            if N:
                launch(self.device, "layer_norm", "layer_norm_backward_partial", (-(-D // 32), G), (32, 8),
                       (g2, xhat, part, np.int64(N), np.int32(D), np.int32(rows)))
            else:
                part.fill(0)
            launch(self.device, "layer_norm", "layer_norm_backward_final", _grid(D), (256,),
                   (part, dw, db, np.int32(G), np.int32(D), np.int32(need_w), np.int32(need_b),
                    np.int32(add_w), np.int32(add_b)))
        if self.has_weight:
            out.append(dw if need_w else None)
        if self.has_bias:
            out.append(db if need_b else None)
        return tuple(out)


@_register(cross_entropy.CrossEntropy)
class CrossEntropy(_Fused, cross_entropy.CrossEntropy):
    """Class-index targets without class weights or label smoothing: one kernel per row (the
    log-sum-exp and the loss) and one for the sum, forward; one per row backward. Other forms
    run the reference."""

    @staticmethod
    def examples(rs):
        z = _f32(rs, 9, 11, scale=4.0)
        t = rs.integers(0, 11, 9)
        t[[2, 5]] = -100
        return [((z, t), {"reduction": r}) for r in ("mean", "sum", "none")] + \
            [((z[:3], np.full(3, -100)), {})]                         # nothing counted: 0, zero gradients

    def forward(self, logits, targets, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        self.fast = targets.dtype.kind != "f" and weight is None and label_smoothing == 0.0 and self._fused(logits)
        if not self.fast:
            return super().forward(logits, targets, weight, ignore_index, reduction, label_smoothing)
        xp = self.xp
        C = logits.shape[-1]
        z = xp.ascontiguousarray(logits).reshape(-1, C)
        N = z.shape[0]
        t = xp.ascontiguousarray(targets.reshape(N), dtype=np.int64)
        loss, lse = xp.empty(N, dtype=z.dtype), xp.empty(N, dtype=z.dtype)
        if N:
            launch(self.device, "cross_entropy", "cross_entropy_forward", (N,), (_row_block(C),),
                   (z, t, loss, lse, np.int32(C), np.int64(ignore_index)))
        self.z, self.t, self.lse, self.ignore, self.reduction, self.shape = z, t, lse, ignore_index, reduction, logits.shape
        self.count = xp.zeros((), dtype=z.dtype)
        if reduction == "none":
            return loss.reshape(logits.shape[:-1])
        out = xp.empty((), dtype=z.dtype)
        launch(self.device, "cross_entropy", "cross_entropy_reduce", (1,), (1024,),
               (loss, t, out, self.count, np.int64(N), np.int64(ignore_index), np.int32(reduction == "mean")))
        return out

    def backward(self, g):
        if not self.fast:
            return super().backward(g)
        xp, z = self.xp, self.z
        N, C = z.shape
        dz = xp.empty_like(z)
        mode = {"none": 0, "sum": 1, "mean": 2}[self.reduction]
        if N:
            launch(self.device, "cross_entropy", "cross_entropy_backward", (N,), (_row_block(C),),
                   (z, self.t, self.lse, xp.ascontiguousarray(g, dtype=z.dtype), self.count, dz, np.int32(C),
                    np.int64(self.ignore), np.int32(mode)))
        return dz.reshape(self.shape), None


# ----------------------------------------------------------------------------- attention

@_register(self_attention.CausalSelfAttention)
class CausalSelfAttention(_Fused, self_attention.CausalSelfAttention):
    """The GPT's attention node with its operands laid out for CuPy's batched products (which
    copy any operand that is not C-contiguous): q, k, v split out of qkv by one copy, k^T by
    one more; the softmax with mask, scale and dropout fused, forward and backward.

        forward:  S = q kT;  P, Pd = softmax kernel(S);  O = Pd v;  y = O with heads merged
        backward: dV = Pd^T dO;  dPd = dO v^T;  dS = scale P (dP - delta);  dQ = dS k;  dK = dS^T q
    """

    @staticmethod
    def examples(rs):
        qkv = _f32(rs, 2, 5, 3 * 2 * 4)
        return [((qkv,), {"n_head": 2}), ((qkv,), {"n_head": 2, "dropout_p": 0.25})]

    def forward(self, qkv, n_head=1, dropout_p=0.0):
        self.fast = self._fused(qkv)
        if not self.fast:
            return super().forward(qkv, n_head, dropout_p)
        xp = self.xp
        B, T, C3 = qkv.shape
        H, hd = n_head, C3 // 3 // n_head
        heads = xp.ascontiguousarray(qkv.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4))   # (3, B, H, T, hd)
        q, k, v = heads[0], heads[1], heads[2]
        kT = xp.ascontiguousarray(k.swapaxes(-1, -2))                                         # (B, H, hd, T)
        S = xp.matmul(q, kT)                                                                  # (B, H, T, T)
        P = xp.empty_like(S)
        self.dropout = dropout_p > 0
        self.inv_keep = 1.0 / (1.0 - dropout_p) if self.dropout else 1.0
        if self.dropout:
            u = backend.rng(self.device).random((B, H, T, T), dtype=np.float32)   # as dropout_mask draws it
            Pd, self.keep = xp.empty_like(S), xp.empty(S.shape, dtype=bool)
        else:
            u, Pd, self.keep = S, P, xp.empty(1, dtype=bool)                      # (u, keep unused by the kernel)
        self.scale = 1.0 / math.sqrt(hd)
        launch(self.device, "attention", "softmax_forward", (B * H * T,), (_row_block(T),),
               (S, u, P, Pd, self.keep, np.int32(T), np.int32(T), np.float32(self.scale), np.float32(dropout_p),
                np.float32(self.inv_keep), np.int32(1), np.int32(self.dropout)))
        O = xp.matmul(Pd, v)                                                                  # (B, H, T, hd)
        self.heads, self.P, self.Pd = heads, P, Pd
        return xp.ascontiguousarray(O.transpose(0, 2, 1, 3)).reshape(B, T, H * hd)           # heads merged

    def backward(self, g):
        if not self.fast:
            return super().backward(g)
        xp = self.xp
        _, B, H, T, hd = self.heads.shape
        q, k, v = self.heads[0], self.heads[1], self.heads[2]
        dO = xp.ascontiguousarray(g.reshape(B, T, H, hd).transpose(0, 2, 1, 3))              # (B, H, T, hd)
        d = xp.empty_like(self.heads)                                                         # dq, dk, dv
        xp.matmul(self.Pd.swapaxes(-1, -2), dO, out=d[2])                                     # dV = Pd^T dO
        dPd = xp.matmul(dO, v.swapaxes(-1, -2))                                               # dO v^T
        dS = xp.empty_like(dPd)
        launch(self.device, "attention", "softmax_backward", (B * H * T,), (_row_block(T),),
               (dPd, self.P, self.keep, dS, np.int32(T), np.float32(self.scale), np.float32(self.inv_keep),
                np.int32(self.dropout)))
        xp.matmul(dS, k, out=d[0])                                                            # dQ = dS k
        xp.matmul(dS.swapaxes(-1, -2), q, out=d[1])                                           # dK = dS^T q
        return xp.ascontiguousarray(d.transpose(1, 3, 0, 2, 4)).reshape(B, T, 3 * H * hd)   # the layout of qkv


# ----------------------------------------------------------------------------- no kernels of their own

@tiers.register(linear.Linear, "cuda")
class Linear(cpu.Linear):
    """The CPU tier's Linear, which is array code for either library: weight and bias gradients
    go straight into the optimizer's buffer (a copy per parameter saved)."""


@tiers.register(embedding.Embedding, "cuda")
class Embedding(embedding.Embedding):
    """The reference's scatter-add (CuPy's, with float atomics), straight into the weight's
    gradient storage or .grad when it has one: no zeros of its own, no copy (not with a
    ``padding_idx``, whose row is zeroed in a gradient of its own)."""

    def backward(self, g):
        if not self.needs_input_grad[1]:
            return None, None
        D = g.shape[-1]
        buf, add = self.grad_buffer(1, g.dtype) if self.padding_idx is None else (None, False)
        if buf is None:                  # (a padding row is zeroed in a gradient of its own)
            buf = self.xp.zeros((self.V, D), dtype=g.dtype)
        elif not add:
            buf.fill(0)
        backend.scatter_add(self.xp, buf, self.ids.reshape(-1), g.reshape(-1, D))
        if self.padding_idx is not None:
            buf[self.padding_idx] = 0
        return None, buf


# ----------------------------------------------------------------------------- the AdamW update

def adamw_update(device: str, p, g, m, v, *, lr: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float, step: int, skip=None) -> None:
    """One AdamW step on matching flat float32 arrays, in place, in one kernel (optim/adamw.py's
    ``_update``, the same products in the same order); nothing when ``skip`` (a 0-d array) is set."""
    c2 = math.sqrt(1.0 - beta2 ** step)
    n = p.size
    launch(device, "adamw", "adamw_update", _grid(n), (256,),
           (p, g, m, v, np.int64(n), np.float32(1.0 - lr * weight_decay), np.float32(1.0 - beta1),
            np.float32(beta2), np.float32(1.0 - beta2), np.float32(eps * c2),
            np.float32(-lr * c2 / (1.0 - beta1 ** step)), p if skip is None else skip,
            np.int32(skip is not None)))

