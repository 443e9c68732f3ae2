"""The GPU tier's fused kernels (tinygrad_llm/kernels/cuda.py).

* Every CUDA source compiles for sm_90 with NVRTC, on any machine: NVRTC comes as a wheel
  (nvidia-cuda-nvrtc-cu12, in the ``test`` extra) and needs no GPU. Without it these tests
  skip, unless TINYGRAD_LLM_REQUIRE_NVRTC=1 (CI sets it: there a compile error must fail).
* The first-use self-check's rules (``cuda.ready``), on any machine.
* On a GPU (the ``device`` fixture's "gpu"): each fused op checks itself on first use and
  is then used, or falls back with one warning (on the NumPy-backed CuPy stand-in, which
  runs no CUDA source, it must fall back, cleanly); and each agrees with the reference tier.
"""
import ctypes
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from helper_op import tiers_agree

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, backend
from tinygrad_llm.kernels import cuda
from tinygrad_llm.optim import AdamW

REQUIRED = os.environ.get("TINYGRAD_LLM_REQUIRE_NVRTC") == "1"


def _load_nvrtc():
    """libnvrtc from the nvidia-cuda-nvrtc-cu12 wheel (or the system's), or None."""
    candidates = []
    try:
        import nvidia.cuda_nvrtc as wheel
        candidates += [Path(p) / "lib" / "libnvrtc.so.12" for p in wheel.__path__]
    except ImportError:
        pass
    candidates += ["libnvrtc.so.12", "libnvrtc.so"]
    for c in candidates:
        try:
            return ctypes.CDLL(str(c))
        except OSError:
            continue
    return None


NVRTC = _load_nvrtc()


@pytest.fixture
def nvrtc():
    if NVRTC is None:
        if REQUIRED:
            pytest.fail("TINYGRAD_LLM_REQUIRE_NVRTC=1 but NVRTC cannot be loaded: pip install nvidia-cuda-nvrtc-cu12")
        pytest.skip("NVRTC not installed (pip install nvidia-cuda-nvrtc-cu12, part of the test extra)")
    return NVRTC


def compile_cuda(lib, source: str, arch: str):
    """(ok, log, output) of NVRTC compiling ``source`` for ``arch`` (sm_90: a CUBIN, compute_90: PTX)."""
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernels.cu", 0, None, None) == 0
    opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in cuda.COMPILE_OPTIONS]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    result = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    output = b""
    if result == 0:
        get_size, get = (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if arch.startswith("sm_") else \
            (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX)
        get_size(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        get(prog, buf)
        output = buf.raw
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return result == 0, log.value.decode(errors="replace"), output


def _kernels_defined(source: str) -> list:
    return re.findall(r'extern "C" __global__ void (\w+)\(', source)


@pytest.mark.parametrize("name", sorted(cuda.SOURCES))
def test_every_kernel_compiles_for_sm_90_with_nvrtc(nvrtc, name):
    ok, log, cubin = compile_cuda(nvrtc, cuda.SOURCES[name], "sm_90")
    assert ok, f"{name}: NVRTC failed for sm_90:\n{log}"
    assert cubin[:4] == b"\x7fELF"                                  # device code was generated
    ok, log, ptx = compile_cuda(nvrtc, cuda.SOURCES[name], "compute_90")
    assert ok, log
    for kernel in _kernels_defined(cuda.SOURCES[name]):
        assert f".entry {kernel}(".encode() in ptx, f"{name}: no entry point {kernel} in the PTX"


def test_a_syntax_error_fails_the_compile_check(nvrtc):
    """The check above can fail: a broken source is reported with the compiler's message."""
    broken = cuda.SOURCES["gelu"].replace("saved[i] = s;", "saved[i] = s", 1)
    ok, log, _ = compile_cuda(nvrtc, broken, "sm_90")
    assert not ok and "error" in log


def test_every_launch_names_a_kernel_of_its_source():
    text = Path(cuda.__file__).read_text()
    launches = re.findall(r'launch\((?:self\.)?device, "(\w+)", "(\w+)"', text)
    assert len(launches) >= 11
    for source, kernel in launches:
        assert kernel in _kernels_defined(cuda.SOURCES[source]), (source, kernel)


# ---------------------------------------------------------------------------- the self-check's rules

@pytest.fixture
def fresh_checks():
    cuda.reset()
    yield
    cuda.reset()


def test_a_kernel_that_agrees_is_used_and_checked_once(fresh_checks):
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda.ready("GELU", "cuda:0", lambda d: calls.append(d))            # None: they agree
        assert cuda.ready("GELU", "cuda:0", lambda d: calls.append(d))
    assert calls == ["cuda:0"] and cuda.status("cuda:0") == {"GELU": True}


def test_a_kernel_that_disagrees_falls_back_with_one_warning(fresh_checks):
    with pytest.warns(RuntimeWarning, match=r"fused CUDA kernel of LayerNorm disagrees: off by 3 on cuda:0; "
                                             r"LayerNorm runs on the reference tier there") as w:
        assert not cuda.ready("LayerNorm", "cuda:0", lambda d: "disagrees: off by 3")
        assert not cuda.ready("LayerNorm", "cuda:0", lambda d: None)            # not asked again
    assert len(w) == 1 and cuda.status("cuda:0") == {"LayerNorm": False}
    assert cuda.ready("GELU", "cuda:0", lambda d: None)                         # the others are unaffected


def test_a_compile_error_disables_that_op_and_no_build_at_all_disables_every_op(fresh_checks):
    class CompileException(Exception):
        pass

    def broken(device):
        raise CompileException("kernels.cu(12): error: expected a \";\"\nmore")

    def nothing_builds(device):
        raise NotImplementedError("cupy.RawModule is not available")

    with pytest.warns(RuntimeWarning, match=r"kernel of GELU does not compile \(CompileException: kernels.cu\(12\)"):
        assert not cuda.ready("GELU", "cuda:0", broken)
    with pytest.warns(RuntimeWarning, match=r"cannot be built on cuda:0 \(NotImplementedError: cupy.RawModule is not "
                                             r"available\); GELU, Dropout, LayerNorm, .* run on the reference tier") as w:
        assert not cuda.ready("Dropout", "cuda:0", nothing_builds)
        assert not cuda.ready("LayerNorm", "cuda:0", lambda d: None)          # not even tried
    assert len(w) == 1
    assert cuda.status("cuda:0") == {"GELU": False, "Dropout": False, "LayerNorm": False,
                                     "unbuildable": "NotImplementedError: cupy.RawModule is not available"}


# ---------------------------------------------------------------------------- on a GPU

def _gpu(device):
    if device == "cpu":
        pytest.skip("the fused kernels run on GPUs")
    return backend.canonical_device(device)


def _use_every_fused_op(device):
    rs = np.random.default_rng(0)
    x = Tensor(rs.standard_normal((4, 8, 24)).astype(np.float32), requires_grad=True, device=device)
    w = Tensor(np.ones(24, np.float32), requires_grad=True, device=device)
    y = F.layer_norm(x, 24, w)
    y = F.dropout(F.gelu(y, approximate="tanh"), 0.1)
    y = F.causal_self_attention(y, 2, dropout_p=0.1)
    loss = F.cross_entropy(y, Tensor(rs.integers(0, 8, (4, 8)), device=device))
    loss.backward()
    AdamW([x, w]).step()


def test_each_fused_op_checks_itself_on_first_use(device, fresh_checks):
    """On a GPU every op is checked and used (no warning); where no kernel can be built (the
    NumPy-backed stand-in) every op falls back, with exactly one warning, and runs."""
    dev = _gpu(device)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _use_every_fused_op(device)
        _use_every_fused_op(device)
    ours = [str(x.message) for x in w if "tinygrad_llm" in str(x.message)]
    st = cuda.status(dev)
    if "unbuildable" in st:
        assert len(ours) == 1 and "cannot be built" in ours[0], ours
        assert all(st[name] is False for name in cuda.FUSED_OPS), st
    else:
        assert ours == [] and all(st.get(name) is True for name in cuda.FUSED_OPS), st


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_tiers_agree_on_gpu(device, approximate):
    _gpu(device)
    x = np.random.default_rng(1).standard_normal((33, 70)).astype(np.float32) * 3
    tiers_agree(lambda t: F.gelu(t, approximate=approximate), [x], device=device)


def test_dropout_tiers_agree_on_gpu(device):
    _gpu(device)
    x = np.random.default_rng(2).standard_normal((17, 40)).astype(np.float32)
    tiers_agree(lambda t: F.dropout(t, 0.3), [x], device=device, exact=True)


@pytest.mark.parametrize("shape, affine", [((5, 9, 384), (True, True)), ((7, 33), (True, False)), ((3, 20), (False, False))])
def test_layer_norm_tiers_agree_on_gpu(device, shape, affine):
    _gpu(device)
    rs = np.random.default_rng(3)
    D = shape[-1]
    arrays = [rs.standard_normal(shape).astype(np.float32) + 2]
    arrays += [rs.standard_normal(D).astype(np.float32) for on in affine if on]
    w_on, b_on = affine
    fn = (lambda x, w, b: F.layer_norm(x, D, w, b)) if b_on else (lambda x, w: F.layer_norm(x, D, w)) if w_on \
        else (lambda x: F.layer_norm(x, D))
    tiers_agree(fn, arrays, device=device, scaled_atol=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_tiers_agree_on_gpu(device, reduction):
    _gpu(device)
    rs = np.random.default_rng(4)
    t = rs.integers(0, 65, (3, 11))
    t[0, :3] = -100
    tiers_agree(lambda z, t: F.cross_entropy(z, t, reduction=reduction), [rs.standard_normal((3, 11, 65)).astype(
        np.float32) * 3, t], device=device, grad=[True, False])


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_causal_self_attention_tiers_agree_on_gpu(device, p):
    _gpu(device)
    qkv = np.random.default_rng(5).standard_normal((2, 37, 3 * 3 * 8)).astype(np.float32)
    tiers_agree(lambda t: F.causal_self_attention(t, 3, dropout_p=p), [qkv], device=device, scaled_atol=True)


def test_fused_adamw_matches_the_reference_update_on_gpu(device):
    _gpu(device)
    runs = []
    for ref in (True, False):
        tg.manual_seed(0)
        m = tg.nn.Linear(40, 30, device=device)
        opt = AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
        with tg.reference_tier(ref):
            for step in range(3):
                (m(tg.randn(8, 40, device=device)) ** 2).sum().backward()
                opt.step()
                opt.zero_grad()
        runs.append([p.numpy() for p in m.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
