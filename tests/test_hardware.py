"""A device's peak FLOP/s (for MFU) from what the machine reports, and None when it cannot be known."""
import types

import pytest

from tinygrad_llm import hardware


def cpuinfo(n, flags, mhz="3000.000", vendor="GenuineIntel", family="6", cores=None):
    rows = []
    for i in range(n):
        row = [f"processor\t: {i}", f"vendor_id\t: {vendor}", f"cpu family\t: {family}", "physical id\t: 0",
               f"core id\t\t: {i if cores is None else i % cores}", f"flags\t\t: {flags}"]
        if mhz is not None:
            row.append(f"cpu MHz\t\t: {mhz}")
        rows.append("\n".join(row))
    return "\n\n".join(rows) + "\n"


@pytest.mark.parametrize("text, allowed, want", [
    (cpuinfo(4, "sse avx avx2 fma avx512f", cores=2), None, 2 * 3.0e9 * 64),       # 2 cores, hyperthreads
    (cpuinfo(2, "sse avx avx2 fma"), None, 2 * 3.0e9 * 32),
    (cpuinfo(2, "sse avx"), None, 2 * 3.0e9 * 16),
    (cpuinfo(2, "avx avx2 fma avx512f", vendor="AuthenticAMD", family="25"), None, 2 * 3.0e9 * 32),  # Zen 4
    (cpuinfo(2, "avx avx2 fma avx512f", vendor="AuthenticAMD", family="26"), None, 2 * 3.0e9 * 64),  # Zen 5
    (cpuinfo(8, "avx avx2 fma"), {0, 1, 2}, 3 * 3.0e9 * 32),                    # only the CPUs it may run on
    (cpuinfo(2, "sse sse2"), None, None),                                       # no known vector unit
    (cpuinfo(2, "avx avx2 fma", mhz=None), None, None),                         # no clock
    ("", None, None),
])
def test_cpu_peak_from_cpuinfo(text, allowed, want):
    got = hardware.cpu_peak_flops(text, allowed=allowed)
    assert got == (None if want is None else pytest.approx(want))


def test_gpu_peak_from_device_properties(monkeypatch):
    props = {"multiProcessorCount": 132, "clockRate": 1_980_000, "major": 9, "minor": 0}   # an H100 SXM
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceProperties=lambda i: props)))
    monkeypatch.setattr(hardware.backend, "xp_for", lambda device: fake)
    assert hardware.gpu_peak_flops("cuda:0") == pytest.approx(66.9e12, rel=1e-3)
    assert hardware.gpu_peak_flops("cuda:0", tf32=True) == pytest.approx(535.3e12, rel=1e-3)   # tensor cores
    props.update(multiProcessorCount=108, clockRate=1_410_000, major=8)                       # an A100
    assert hardware.gpu_peak_flops("cuda:0", tf32=True) == pytest.approx(156e12, rel=1e-2)   # NVIDIA's figure
    props.update(major=7, minor=5)                                                             # Turing: no TF32
    assert hardware.gpu_peak_flops("cuda:0", tf32=True) is None and hardware.gpu_peak_flops("cuda:0") > 0
    props["major"] = 99                                    # an architecture it does not know
    assert hardware.gpu_peak_flops("cuda:0") is None
    del props["clockRate"]                                 # (CUDA 13 dropped it)
    assert hardware.gpu_peak_flops("cuda:0") is None


def test_available_memory_is_a_positive_number_or_unknown():
    free = hardware.available_memory("cpu")
    assert free is None or free > 0


def test_blas_threads_can_be_set_and_restored():
    from tinygrad_llm.kernels.parallel import blas_threads, set_blas_threads
    before = blas_threads()
    if before is None:
        pytest.skip("this NumPy's BLAS does not let its thread count be set")
    try:
        assert set_blas_threads(1) == before and blas_threads() == 1
    finally:
        set_blas_threads(before)
    assert blas_threads() == before
    with pytest.raises(ValueError, match="whole number >= 1"):
        set_blas_threads(0)


def test_sample_uses_one_blas_thread_for_small_models():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("sample", Path(__file__).resolve().parents[1] / "examples/sample.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    assert sample.blas_threads_for(810_000, None) == 1           # the cpu preset
    assert sample.blas_threads_for(124_000_000, None) is None     # GPT-2 small: the BLAS's default
    assert sample.blas_threads_for(810_000, 2) == 2               # --blas-threads wins
