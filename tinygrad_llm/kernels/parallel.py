"""Fast-tier machinery: run row-independent NumPy work on all CPU cores, and tune glibc's
allocator for training.

NumPy runs each elementwise operation on ONE thread (only BLAS uses every core), but it
releases the GIL while it loops over the elements. So when the rows of an op are
independent (an activation's elements, a norm's rows, attention's batch entries, the
optimizer's flat buffer), splitting them into one contiguous chunk per core and running
the chunks in a pool of Python threads uses every core:

    parallel_for(lambda a, b: work(x[a:b], out[a:b]), len(x), xp=xp, work_per_item=x.shape[1])

Each chunk must write only its own rows. Small work (below ``MIN_WORK`` elements per
chunk, see ``kernels/tuning.py``) runs inline, on the calling thread. On GPU (``xp`` not
numpy) everything runs inline as one chunk.

The number of threads is ``os.cpu_count()``; set the environment variable
``TINYGRAD_LLM_NUM_THREADS`` (read on every call) to change it, ``1`` turns threading off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import tuning

__all__ = ["num_threads", "chunk_bounds", "parallel_for", "tune_allocator", "ENV_VAR", "blas_threads",
           "set_blas_threads"]

ENV_VAR = "TINYGRAD_LLM_NUM_THREADS"

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()          # .busy is True inside a chunk run by parallel_for


@functools.cache
def _cpu_count() -> int:
    """os.cpu_count(), looked up once: it reads the system's CPU list on every call (~50 us)."""
    return os.cpu_count() or 1


def num_threads() -> int:
    """Threads used for elementwise work: $TINYGRAD_LLM_NUM_THREADS, else os.cpu_count()."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return _cpu_count()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_VAR} must be a whole number >= 1 (1 = no threads), got {value!r}")
    return n


def chunk_bounds(n_items: int, n_chunks: int) -> list[tuple[int, int]]:
    """``n_chunks`` contiguous (start, stop) pairs that cover range(n_items) once, sizes within 1."""
    n_chunks = max(1, min(n_chunks, n_items))
    edges = [i * n_items // n_chunks for i in range(n_chunks + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n_chunks)]


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinygrad_llm")
            _pool_size = workers
        return _pool


def _run_chunk(fn, start, stop, block):
    """fn on [start, stop), in pieces of at most ``block`` items; marks the thread busy meanwhile."""
    was_busy = getattr(_local, "busy", False)
    _local.busy = True
    try:
        if block is None:
            fn(start, stop)
        else:
            for a in range(start, stop, block):
                fn(a, min(a + block, stop))
    finally:
        _local.busy = was_busy


def parallel_for(fn, n_items: int, *, xp=np, work_per_item: int = 1, min_work: int | None = None,
                 block: int | None = None, threaded: bool = True) -> None:
    """Call ``fn(start, stop)`` on contiguous pieces that cover range(n_items) exactly once.

    range(n_items) is cut into one contiguous chunk per thread, and the chunks run
    concurrently on a thread pool (the caller runs the first) when ``xp`` is numpy,
    several threads are allowed (``num_threads()``), and the total work
    ``n_items * work_per_item`` is at least ``2 * min_work`` elements (default
    ``tuning.MIN_WORK``, looked up at call time); otherwise the whole
    range is one chunk, run inline. ``block`` (CPU only) hands each chunk to ``fn`` in
    pieces of at most ``block`` items, one after the other, so that a piece's temporaries
    stay in cache; when threaded, pieces hold at least ``tuning.MIN_PIECE_WORK`` elements of work.
    ``fn`` must write only its own rows of any output. Calls made from inside a chunk run
    inline. ``threaded=False`` runs inline too (e.g. when fn's GEMMs are big enough for
    BLAS to use every core itself: two threads calling a threaded BLAS slow each other).
    The first exception raised by a chunk is re-raised here, after every chunk has ended.
    """
    if n_items <= 0:
        return
    if xp is not np:
        fn(0, n_items)
        return
    if block is not None:
        block = max(1, int(block))
    min_work = tuning.MIN_WORK if min_work is None else min_work
    n_chunks = min(num_threads(), n_items, (n_items * work_per_item) // max(min_work, 1))
    if n_chunks <= 1 or not threaded or getattr(_local, "busy", False):
        _run_chunk(fn, 0, n_items, block)
        return
    bounds = chunk_bounds(n_items, n_chunks)
    if block is not None:
        block = max(block, -(-tuning.MIN_PIECE_WORK // max(work_per_item, 1)))
    pool = _get_pool(n_chunks - 1)
    futures = [pool.submit(_run_chunk, fn, a, b, block) for a, b in bounds[1:]]
    error = None
    try:
        _run_chunk(fn, *bounds[0], block)
    except BaseException as e:  # noqa: BLE001 - wait for the other chunks before raising
        error = e
    for f in futures:
        try:
            f.result()
        except BaseException as e:  # noqa: BLE001
            error = error or e
    if error is not None:
        raise error


# glibc mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves large blocks (NumPy's activations, 100s of KB to 100s of MB)
    with fresh mmap()s and unmaps them on free, so every training step page-faults its
    whole working set in again (the kernel zeroes each new page). Raising the mmap and
    trim thresholds makes freed blocks stay in the heap, where the next step reuses them.
    This changes the whole process, so only scripts call it (the library never does);
    it costs memory the process keeps after a peak. Returns False (and does nothing)
    where glibc's ``mallopt`` is not available (macOS, Windows, musl).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = 2**31 - 1                         # mallopt takes a C int
    ok = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), limit))
    ok &= mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), limit))
    return bool(ok)


# OpenBLAS's thread-count functions, as NumPy's own wheels (scipy-openblas, 64-bit ints) and
# system builds name them
_BLAS_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                 ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                 ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                 ("openblas_set_num_threads", "openblas_get_num_threads"))


@functools.cache
def _openblas():
    """(set, get) of the OpenBLAS that NumPy loaded, or None (another BLAS, or not Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _BLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def blas_threads() -> int | None:
    """Threads NumPy's BLAS (OpenBLAS) uses now, or None where that cannot be asked."""
    fns = _openblas()
    return None if fns is None else int(fns[1]())


def set_blas_threads(n: int) -> int | None:
    """Make NumPy's BLAS (OpenBLAS) use ``n`` threads from now on; returns the previous count,
    or None (and changes nothing) where the BLAS cannot be told (another BLAS, not Linux).
    Like ``tune_allocator`` this changes the whole process, so only scripts call it."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"BLAS threads must be a whole number >= 1, got {n!r}")
    fns = _openblas()
    if fns is None:
        return None
    before = int(fns[1]())
    fns[0](n)
    return before
