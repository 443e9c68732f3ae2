"""What the machine offers, as far as it can be known: a device's peak float32 FLOP/s (for
MFU) and its free memory (to refuse a model that cannot fit before building it).

Both return None when they cannot tell; callers then say "n/a" or skip the check.

- CPU peak: physical cores (of those this process may run on) x clock x float32 FLOPs per
  cycle per core, from /proc/cpuinfo (Linux, x86): 64 with AVX-512, 32 with AVX2 and FMA
  (two FMA units of 16 or 8 lanes, 2 FLOPs each), 16 with AVX. AMD before Zen 5 (family
  < 26) runs AVX-512 on 256-bit units, so 32. This is the textbook peak; Intel chips with
  one AVX-512 FMA unit reach half of it. Give ``--peak_flops`` to override.
- GPU peak: streaming multiprocessors x boost clock x float32 cores per SM x 2, from the
  CUDA device properties (cores per SM by compute capability). With ``tf32=True`` (float32
  matrix products on tensor cores, ``backend.set_tf32``): SMs x clock x dense TF32 FLOPs per
  SM per clock (1024 on A100, 512 on the other Ampere and Ada chips, 2048 on Hopper). For
  an H100/H200 SXM that is 535 TFLOP/s at its 1.98 GHz boost clock; NVIDIA quotes 495,
  at a lower clock. Unknown chips: None (MFU "n/a", or give ``--peak_flops``).
- Free memory: MemAvailable from /proc/meminfo, capped by a cgroup limit (Linux); free
  memory on the GPU from CUDA.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from . import backend

__all__ = ["peak_flops", "available_memory", "cpu_peak_flops", "gpu_peak_flops"]

# float32 FLOPs per cycle per core, by the widest vector FMA the CPU has
_CPU_FLOPS_PER_CYCLE = (("avx512f", 64), ("avx2+fma", 32), ("avx", 16))
# float32 cores per streaming multiprocessor, by CUDA compute capability (major, minor)
_CORES_PER_SM = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128,
                 (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}
# dense TF32 tensor-core FLOPs per SM per clock, by compute capability (A100, GA10x, Orin, Ada, Hopper)
_TF32_PER_SM = {(8, 0): 1024, (8, 6): 512, (8, 7): 512, (8, 9): 512, (9, 0): 2048}


def _cpuinfo(text: str) -> list[dict]:
    """/proc/cpuinfo as one dict per logical CPU."""
    cpus, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                cpus.append(cur)
            cur = {}
            continue
        key, _, value = line.partition(":")
        cur[key.strip()] = value.strip()
    if cur:
        cpus.append(cur)
    return cpus


def cpu_peak_flops(cpuinfo: str | None = None, allowed: set | None = None) -> float | None:
    """Peak float32 FLOP/s of the CPU cores this process may use, or None if unknown
    (``cpuinfo``: the text of /proc/cpuinfo; ``allowed``: logical CPU numbers)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    if allowed is None and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
    cpus = [c for c in _cpuinfo(cpuinfo) if "processor" in c
            and (allowed is None or int(c["processor"]) in allowed)]
    if not cpus:
        return None
    flags = set(cpus[0].get("flags", "").split())
    have = set(flags)
    if {"avx2", "fma"} <= flags:
        have.add("avx2+fma")
    per_cycle = next((n for name, n in _CPU_FLOPS_PER_CYCLE if name in have), None)
    if per_cycle is None:
        return None
    if cpus[0].get("vendor_id") == "AuthenticAMD" and cpus[0].get("cpu family", "0").isdigit() \
            and int(cpus[0]["cpu family"]) < 26:
        per_cycle = min(per_cycle, 32)             # Zen 4 and older: 256-bit FMA units
    cores = {(c.get("physical id"), c.get("core id")) for c in cpus}
    n_cores = len(cores) if all(c.get("core id") is not None for c in cpus) else len(cpus)
    try:
        mhz = max(float(c["cpu MHz"]) for c in cpus)
    except (KeyError, ValueError):
        return None
    return n_cores * mhz * 1e6 * per_cycle


def gpu_peak_flops(device: str, tf32: bool = False) -> float | None:
    """Peak float32 FLOP/s of a CUDA device: on its float32 cores, or with ``tf32`` its dense
    TF32 tensor-core rate; None if unknown."""
    try:
        cp = backend.xp_for(device)
        props = cp.cuda.runtime.getDeviceProperties(int(device.split(":")[1]))
        sms, khz = int(props["multiProcessorCount"]), int(props["clockRate"])
        cc = (int(props["major"]), int(props["minor"]))
    except Exception:  # noqa: BLE001 - any missing property or driver call: unknown
        return None
    per_clock = _TF32_PER_SM.get(cc) if tf32 else (2 * _CORES_PER_SM[cc] if cc in _CORES_PER_SM else None)
    if per_clock is None or sms <= 0 or khz <= 0:
        return None
    return sms * khz * 1e3 * per_clock


@functools.lru_cache(maxsize=None)
def peak_flops(device: str, tf32: bool = False) -> float | None:
    """Peak FLOP/s of ``device`` ("cpu" or "cuda:N") for float32 matrix products, on TF32 tensor
    cores when ``tf32`` (GPUs only: the CPU ignores it), or None when it cannot be known."""
    device = backend.canonical_device(device)
    return cpu_peak_flops() if device == "cpu" else gpu_peak_flops(device, tf32)


def _cgroup_limit() -> int | None:
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            limit = int(text)
            usage_file = Path(p).with_name("memory.current" if p.endswith(".max") else "memory.usage_in_bytes")
            try:
                return max(limit - int(usage_file.read_text().strip()), 0)
            except (OSError, ValueError):
                return limit
    return None


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that ``device`` can still allocate, or None when it cannot be known."""
    device = backend.canonical_device(device)
    if device != "cpu":
        try:
            cp = backend.xp_for(device)
            free, _ = cp.cuda.runtime.memGetInfo()
            return int(free)
        except Exception:  # noqa: BLE001
            return None
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            avail = None
    cg = _cgroup_limit()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail
