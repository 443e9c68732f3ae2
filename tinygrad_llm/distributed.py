"""Data-parallel training: several processes, one model, the numbers of one big batch.

An MPI launcher starts N copies of the training script (``mpiexec -n 2 python
examples/train_shakespeare.py --distributed``); each process, a *rank*, holds the whole model
and optimizer and trains on its own slice of every batch:

    comm = distributed.init("cpu")                 # rank and world size from the launcher
    summary = train(model, data, cfg, "out/run", comm=comm)

What :func:`~tinygrad_llm.train.train` then does on every rank (docs/distributed.md):

* start: rank 0 takes the run folder's lock; a new run takes rank 0's parameters and
  optimizer state (:func:`broadcast_model`, :func:`broadcast_optimizer`); a resumed run has
  every rank load the same checkpoint, then checks that they hold the same numbers;
* every step: each rank draws the same batch of ``world_size * batch_size`` rows from its
  generator (all seeded alike) and keeps its slice (``get_batch(..., rank, world_size)``),
  runs forward and backward, and :func:`allreduce_grads` averages the gradients with ONE
  allreduce over the optimizer's flat gradient buffer; every rank then takes the same step.
  So N ranks with batch B follow one process with batch N * B, to float32 summation order;
* evaluation: each rank its slice of the evaluation batches, the losses averaged;
* only rank 0 logs, writes history.csv, loss.png and the checkpoints.

Two communicators do the work: :class:`MPICommunicator` (mpi4py; host arrays: the CPU) and
:class:`NCCLCommunicator` (``cupy.cuda.nccl``; one GPU per rank, its communicator created from
a unique id that MPI broadcasts from rank 0; scalars and Python objects still go through MPI).
:class:`Communicator` itself is one process alone, whose collectives return at once: the
training loop calls them either way.

Failures. MPI's collectives wait forever (MPI has no timeout for them), and a Python
exception on one rank leaves the others waiting in the next collective, and itself waiting in
MPI_Finalize at exit. So: an error raised on every rank alike (bad input, a checkpoint that
cannot be written: :meth:`Communicator.raise_together` shares it) ends every rank with the
same message, printed once; anything one rank raises alone goes through :func:`guard`, which
prints it and calls MPI_Abort, and the launcher ends the other ranks. A rank killed outright
is seen by the launcher, which ends the others (MPICH's and Open MPI's do). A rank that waits
in one collective longer than ``timeout`` seconds (a peer that hangs) ends the job from a
watchdog thread, with a message saying where it waited.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import threading
import time
import traceback

import numpy as np

from . import backend, cli
from .kernels.parallel import ENV_VAR as THREADS_ENV_VAR
from .kernels.parallel import set_blas_threads

__all__ = ["DistributedError", "Communicator", "MPICommunicator", "NCCLCommunicator", "SINGLE", "init",
           "launcher_env", "together", "raised_together", "guard", "broadcast_model", "broadcast_optimizer",
           "allreduce_grads", "fingerprint", "check_in_sync", "share_cpu", "on_rank0", "DEFAULT_TIMEOUT", "NCCL_API"]

#: seconds a rank may wait in one collective before it ends the job (0 or None: forever)
DEFAULT_TIMEOUT = 600.0
#: seconds between printing why a rank ends the job and MPI_Abort (for the output to get out)
ABORT_GRACE_S = 0.5

#: (rank, size) variables that MPI launchers set: MPICH's Hydra and Intel MPI, Open MPI, PMIx, MVAPICH
_LAUNCHER_VARS = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                  ("PMIX_RANK", None), ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"))

#: what this module uses of ``cupy.cuda.nccl`` (module names; methods of NcclCommunicator with
#: the number of arguments passed) and of ``cupy.cuda``: tests check them against a CuPy
NCCL_API = {"module": ("available", "get_unique_id", "NcclCommunicator", "NCCL_SUM", "NCCL_FLOAT16",
                       "NCCL_FLOAT32", "NCCL_FLOAT64", "NCCL_INT32", "NCCL_INT64"),
            "NcclCommunicator": {"__init__": 3, "allReduce": 6, "bcast": 5, "abort": 0, "check_async_error": 0},
            "cupy.cuda": ("get_current_stream", "Device"), "cupy.cuda.Device": ("pci_bus_id",)}

_TOGETHER = "_raised_on_every_rank"


class DistributedError(RuntimeError):
    """Data-parallel training cannot start or go on (no mpi4py, no launcher, ranks out of step)."""


def launcher_env() -> tuple[int, int | None] | None:
    """(rank, size) that an MPI launcher put in this process's environment (size None where
    the launcher does not say), or None when no launcher started it."""
    for rank_var, size_var in _LAUNCHER_VARS:
        rank = os.environ.get(rank_var, "").strip()
        if rank.isdigit():
            size = os.environ.get(size_var, "").strip() if size_var else ""
            return int(rank), int(size) if size.isdigit() else None
    return None


def together(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised on every rank alike (so :func:`guard` lets it through); returns it."""
    setattr(exc, _TOGETHER, True)
    return exc


def raised_together(exc: BaseException) -> bool:
    """True for an exception that every rank raised alike (see :func:`together`)."""
    return bool(getattr(exc, _TOGETHER, False))


def _say(message: str) -> None:
    cli.error_line(message)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- communicators

class Communicator:
    """One process alone (world size 1): every collective returns its input at once.

    The base of the MPI and NCCL communicators, which override the first six methods; the
    rest are written once on top of them."""

    rank, world_size, local_rank, local_size = 0, 1, 0, 1
    backend = "single"
    timeout = None

    def allreduce_mean_(self, array):
        """Replace ``array`` (contiguous) by its mean over the ranks, in place; returns it."""
        return array

    def broadcast_(self, array, root: int = 0):
        """Replace ``array`` (contiguous) by rank ``root``'s, in place; returns it."""
        return array

    def allreduce_sum(self, values, *, what: str = "an allreduce") -> list[float]:
        """The sums over the ranks of a few Python numbers (in float64)."""
        return [float(v) for v in values]

    def broadcast_object(self, obj, root: int = 0, *, what: str = "a broadcast"):
        """Rank ``root``'s ``obj`` (any picklable object) on every rank."""
        return obj

    def allgather_object(self, obj, *, what: str = "an allgather", watched: bool = True) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def abort(self, code: int, message: str | None = None) -> "NoReturn":  # noqa: F821
        """Print ``message`` (one line) and end the whole job with exit code ``code``."""
        if message:
            _say(message)
        raise SystemExit(code)

    # --- on top of those
    def mean(self, value: float, *, what: str = "an allreduce") -> float:
        """The mean over the ranks of one number."""
        return value if self.world_size == 1 else self.allreduce_sum([value], what=what)[0] / self.world_size

    def any(self, flag: bool, *, what: str = "an allreduce") -> bool:
        """True on every rank when ``flag`` is true on any."""
        return bool(flag) if self.world_size == 1 else self.allreduce_sum([bool(flag)], what=what)[0] > 0

    def raise_together(self, error: BaseException | None, *, what: str = "sharing errors",
                       watched: bool = True) -> None:
        """Every rank calls this with the exception it met (or None). If any rank met one,
        every rank raises that of the lowest such rank (the same type and message, prefixed
        with the rank when it is not rank 0), marked :func:`together`; otherwise it returns.
        ``watched=False``: wait without the timeout (a rank may be busy for long, e.g.
        rank 0 downloading the data the others will read)."""
        if self.world_size == 1:
            if error is not None:
                raise error
            return
        mine = None if error is None else (type(error), str(error))
        errors = self.allgather_object(mine, what=what, watched=watched)
        failed = [(r, e) for r, e in enumerate(errors) if e is not None]
        if not failed:
            return
        rank, (kind, message) = failed[0]
        if rank == self.rank:
            raise together(error)
        text = message if rank == 0 else f"rank {rank} of {self.world_size}: {message}"
        try:
            exc = kind(text)
        except Exception:  # noqa: BLE001 - a type that does not take one message
            exc = DistributedError(f"{kind.__name__}: {text}")
        raise together(exc)

    def __repr__(self):
        return f"{type(self).__name__}(rank {self.rank} of {self.world_size}, {self.backend})"


#: this process alone
SINGLE = Communicator()


class _Watchdog:
    """Ends the job when this rank has waited in one collective for longer than ``timeout``
    seconds (MPI's collectives have no timeout): a daemon thread looks once a second."""

    def __init__(self, timeout, on_expiry):
        self.timeout, self.on_expiry = timeout, on_expiry
        self.current = None                 # (what, since) while in a collective
        self.thread = None

    @contextlib.contextmanager
    def watch(self, what: str, watched: bool = True):
        if not self.timeout or not watched:
            yield
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="tinygrad_llm-watchdog", daemon=True)
            self.thread.start()
        self.current = (what, time.monotonic())
        try:
            yield
        finally:
            self.current = None

    def _run(self):
        poll = min(1.0, self.timeout / 4)
        while True:
            time.sleep(poll)
            current = self.current
            if current is not None and time.monotonic() - current[1] > self.timeout:
                self.on_expiry(current[0], time.monotonic() - current[1])
                return


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (mpi4py), for host (NumPy) arrays."""

    backend = "mpi"

    def __init__(self, comm, mpi, timeout: float | None = DEFAULT_TIMEOUT):
        self.comm, self.MPI = comm, mpi
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(mpi.COMM_TYPE_SHARED)        # the ranks on this machine
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = timeout or None
        self._watchdog = _Watchdog(self.timeout, self._expired)

    def _watch(self, what: str, watched: bool = True):
        return self._watchdog.watch(what, watched)

    def _expired(self, what: str, waited: float):
        self.abort(cli.EXIT_ERROR, f"rank {self.rank} of {self.world_size} waited {waited:.0f} s for the other "
                   f"ranks in {what} (the timeout is {self.timeout:g} s): one of them has died or hangs. "
                   "Stopping the job")

    @staticmethod
    def _host(array):
        if not isinstance(array, np.ndarray):    # (MPI would need to be built CUDA-aware)
            raise together(DistributedError(
                f"the MPI communicator exchanges host (NumPy) arrays, got a {type(array).__module__}."
                f"{type(array).__name__}: for a model on GPUs use distributed.init('gpu') (NCCL)"))
        return array

    def allreduce_mean_(self, array, *, what: str = "the gradients' allreduce"):
        with self._watch(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, self._host(array), op=self.MPI.SUM)
        array *= array.dtype.type(1.0 / self.world_size)
        return array

    def broadcast_(self, array, root: int = 0, *, what: str = "a broadcast of the parameters"):
        with self._watch(what):
            self.comm.Bcast(self._host(array), root=root)
        return array

    def allreduce_sum(self, values, *, what: str = "an allreduce") -> list[float]:
        buf = np.array([float(v) for v in values], dtype=np.float64)
        with self._watch(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf.tolist()

    def broadcast_object(self, obj, root: int = 0, *, what: str = "a broadcast"):
        with self._watch(what):
            return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj, *, what: str = "an allgather", watched: bool = True) -> list:
        with self._watch(what, watched):
            return self.comm.allgather(obj)

    def abort(self, code: int, message: str | None = None) -> "NoReturn":  # noqa: F821
        if message:
            _say(message)
        sys.stderr.flush()
        # the launcher forwards what the processes print, and stops forwarding once it has
        # ended them: give it a moment to pass the message on first
        time.sleep(ABORT_GRACE_S)
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)                   # MPI_Abort does not return; should it, end this rank


class NCCLCommunicator(MPICommunicator):
    """One GPU per rank: device arrays go through NCCL (``cupy.cuda.nccl``), on the current
    stream; host arrays, scalars and objects through MPI. The NCCL communicator is made from
    a unique id that rank 0 draws and MPI broadcasts."""

    backend = "nccl"

    def __init__(self, comm, mpi, nccl, device: str, timeout: float | None = DEFAULT_TIMEOUT):
        super().__init__(comm, mpi, timeout)
        self.device, self.nccl = device, nccl
        self.cp = backend.xp_for(device)                    # makes the rank's GPU the current one
        uid = self.broadcast_object(nccl.get_unique_id() if self.rank == 0 else None,
                                    what="broadcasting the NCCL unique id")
        with self._watch("creating the NCCL communicator"):
            self.nccl_comm = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                      np.dtype(np.int64): nccl.NCCL_INT64}

    def _nccl_args(self, array):
        """(pointer, count, NCCL type) of a contiguous device array."""
        if not array.flags.c_contiguous:
            raise ValueError("NCCL needs a contiguous array")
        kind = self.types.get(np.dtype(array.dtype))
        if kind is None:
            raise ValueError(f"NCCL: no type for {array.dtype}")
        return array.data.ptr, array.size, kind

    def _run(self, what: str, call):
        """Enqueue ``call(stream pointer)`` and wait for it (inside the watchdog, so that a
        peer that never joins is reported); then raise what NCCL reported meanwhile."""
        stream = self.cp.cuda.get_current_stream()
        with self._watch(what):
            call(stream.ptr)
            stream.synchronize()
        self.nccl_comm.check_async_error()

    def allreduce_mean_(self, array, *, what: str = "the gradients' allreduce"):
        if isinstance(array, np.ndarray):
            return super().allreduce_mean_(array, what=what)
        ptr, n, kind = self._nccl_args(array)
        self._run(what, lambda s: self.nccl_comm.allReduce(ptr, ptr, n, kind, self.nccl.NCCL_SUM, s))
        array *= array.dtype.type(1.0 / self.world_size)
        return array

    def broadcast_(self, array, root: int = 0, *, what: str = "a broadcast of the parameters"):
        if isinstance(array, np.ndarray):
            return super().broadcast_(array, root, what=what)
        ptr, n, kind = self._nccl_args(array)
        self._run(what, lambda s: self.nccl_comm.bcast(ptr, n, kind, root, s))
        return array

    def abort(self, code: int, message: str | None = None) -> "NoReturn":  # noqa: F821
        with contextlib.suppress(Exception):  # (NCCL kernels that wait for a dead peer are stopped)
            self.nccl_comm.abort()
        super().abort(code, message)


# ----------------------------------------------------------------------------- starting

def init(device: str = "cpu", timeout: float | None = DEFAULT_TIMEOUT) -> Communicator:
    """This process's communicator in the job an MPI launcher started (``mpiexec -n N``).

    ``device``: ``"cpu"`` (MPI) or a GPU (``"gpu"``/``"cuda"``: each rank takes the GPU of its
    rank on its machine, ``cuda:<local rank>``, or ``cuda:0`` where each process sees one GPU
    of its own; through NCCL). ``timeout``: seconds a rank may
    wait in one collective before it ends the job (None or 0: forever). The communicator's
    ``device`` is the device this rank trains on. DistributedError (a clear message) without
    mpi4py, outside a launcher, or when the launcher and mpi4py's MPI do not match."""
    device = backend.canonical_device(device)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 (0 or None: no timeout), got {timeout!r}")
    if device not in ("cpu", "cuda:0"):
        raise DistributedError(f"device {device!r}: in data-parallel training each rank takes the GPU of its "
                               "rank on its machine; give 'gpu' (and choose the GPUs with CUDA_VISIBLE_DEVICES)")
    try:
        import mpi4py  # noqa: F401, PLC0415 (optional dependency: only data-parallel training needs it)
    except ImportError:
        raise DistributedError("data-parallel training needs mpi4py and an MPI library, which are not installed: "
                               "pip install 'tinygrad_llm[distributed]' (mpi4py and MPICH), or mpi4py built "
                               "against your cluster's MPI (docs/distributed.md)") from None
    from mpi4py import MPI  # noqa: PLC0415 (optional dependency; initialises MPI)
    world = MPI.COMM_WORLD
    env = launcher_env()
    if env is None and world.Get_size() == 1:
        raise DistributedError("this process was not started by an MPI launcher: run it with the mpiexec that "
                               "comes with mpi4py's MPI, e.g. mpiexec -n 2 python ... (for one process, leave "
                               "out the distributed option)")
    if env is not None and env[1] is not None and env[1] != world.Get_size():
        raise DistributedError(f"the launcher started {env[1]} processes but mpi4py's MPI sees {world.Get_size()}: "
                               "the mpiexec on the PATH belongs to another MPI than mpi4py's "
                               f"({MPI.Get_library_version().splitlines()[0].strip()}); use that MPI's mpiexec")
    mpi = MPICommunicator(world, MPI, timeout)
    if device == "cpu":
        return mpi
    device, nccl = _rank_gpu(mpi)
    return NCCLCommunicator(world, MPI, nccl, device, timeout)


def _rank_gpu(mpi: MPICommunicator) -> tuple:
    """(this rank's GPU, cupy.cuda.nccl): GPU number <local rank> when the machine's ranks see
    at least one GPU each, GPU 0 when each sees one (CUDA_VISIBLE_DEVICES set per process);
    an error shared by all ranks when CuPy, a GPU or NCCL is missing, or two ranks would
    share a GPU (which NCCL refuses)."""
    device = nccl = error = None
    try:
        cp = backend.xp_for("cuda:0")                        # CuPy and a GPU at all
        n = cp.cuda.runtime.getDeviceCount()
        if n >= mpi.local_size:
            device = f"cuda:{mpi.local_rank}"
        elif n == 1:
            device = "cuda:0"
        else:
            raise DistributedError(f"{mpi.local_size} processes on this machine and {n} GPUs: start at most one "
                                   "process per GPU")
        backend.xp_for(device)
        from cupy.cuda import nccl  # noqa: PLC0415 (optional dependency: CuPy, on GPUs only)
        if not getattr(nccl, "available", False):
            raise DistributedError("this CuPy cannot load NCCL, which data-parallel training on GPUs needs: "
                                   "pip install nvidia-nccl-cu12 (or the NCCL of your CUDA)")
        gpu = (mpi.MPI.Get_processor_name(), cp.cuda.Device(int(device.split(":")[1])).pci_bus_id)
    except (backend.DeviceError, DistributedError, ImportError) as e:
        error, gpu = e, None
    mpi.raise_together(error, what="checking the GPUs")
    gpus = mpi.allgather_object(gpu, what="comparing the GPUs")
    if len(set(gpus)) < len(gpus):
        shared = sorted({g for g in gpus if gpus.count(g) > 1})
        raise together(DistributedError(f"ranks {[r for r, g in enumerate(gpus) if g in shared]} would share a "
                                        f"GPU ({shared[0][1]} on {shared[0][0]}), which NCCL refuses: give each "
                                        "process its own GPU"))
    return device, nccl


def share_cpu(comm: Communicator) -> int | None:
    """For scripts: give each of the ranks on one machine its share of the cores, unless the
    environment already says how many threads to use ($TINYGRAD_LLM_NUM_THREADS,
    $OMP_NUM_THREADS, $OPENBLAS_NUM_THREADS): N ranks that each start a thread per core slow
    each other down. Sets both the package's threads and NumPy's BLAS threads; returns the
    count, or None where nothing was changed. Changes the whole process, as
    ``kernels.parallel.set_blas_threads`` does."""
    if comm.local_size <= 1 or any(os.environ.get(v) for v in (THREADS_ENV_VAR, "OMP_NUM_THREADS",
                                                                 "OPENBLAS_NUM_THREADS")):
        return None
    n = max(1, (os.cpu_count() or 1) // comm.local_size)
    os.environ[THREADS_ENV_VAR] = str(n)
    set_blas_threads(n)
    return n


# ----------------------------------------------------------------------------- training

def broadcast_model(comm: Communicator, model) -> None:
    """Every rank takes rank 0's parameters and buffers (in place)."""
    if comm.world_size == 1:
        return
    for t in model.state_dict().values():
        comm.broadcast_(t.data)
        t.bump_version()


def broadcast_optimizer(comm: Communicator, optimizer) -> None:
    """Every rank takes rank 0's optimizer state (moments, step counts, hyperparameters)."""
    if comm.world_size == 1:
        return
    state = comm.broadcast_object(optimizer.state_dict() if comm.rank == 0 else None,
                                  what="a broadcast of the optimizer's state")
    if comm.rank != 0:
        optimizer.load_state_dict(state)


def allreduce_grads(comm: Communicator, optimizer) -> None:
    """Average the gradients over the ranks, in place: one allreduce per gradient buffer of
    the optimizer (:meth:`~tinygrad_llm.optim.Optimizer.grad_buffers`: one for a model on one
    device in one dtype). Every rank must have backpropagated into the same parameters (the
    GPT uses all of them at every step)."""
    if comm.world_size == 1:
        return
    for buf in optimizer.grad_buffers():
        comm.allreduce_mean_(buf)


def fingerprint(arrays) -> str:
    """A hash of the dtypes, shapes and bytes of ``arrays`` (host or device arrays)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = backend.to_numpy(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def check_in_sync(comm: Communicator, arrays, what: str) -> None:
    """DistributedError (on every rank) unless every rank holds the same ``arrays`` bit for bit."""
    if comm.world_size == 1:
        return
    prints = comm.allgather_object(fingerprint(arrays), what=f"comparing the {what}")
    differ = [r for r, h in enumerate(prints) if h != prints[0]]
    if differ:
        raise together(DistributedError(f"the ranks hold different {what}: rank(s) {differ} differ from rank 0"))


def on_rank0(comm: Communicator, fn, what: str, *, watched: bool = True):
    """Run ``fn()`` on rank 0 alone (writing files, taking a lock) while the others wait; an
    exception it raises is raised on every rank (:meth:`Communicator.raise_together`)."""
    error = None
    if comm.rank == 0:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - shared with the other ranks, then raised
            error = e
    comm.raise_together(error, what=what, watched=watched)


@contextlib.contextmanager
def guard(comm: Communicator):
    """What this rank raises alone ends the whole job: the exception is printed (a traceback
    for an unexpected one) and MPI_Abort stops every rank, instead of leaving the others waiting
    in their next collective. Exceptions raised on every rank alike (:func:`together`) and
    ``SystemExit(0)`` pass through; so does everything with one rank."""
    try:
        yield
    except BaseException as e:
        if comm.world_size == 1 or raised_together(e):
            raise
        who = f"rank {comm.rank} of {comm.world_size}"
        if isinstance(e, SystemExit):
            if e.code in (0, None):
                raise
            comm.abort(e.code if isinstance(e.code, int) else cli.EXIT_ERROR,
                       f"{who} stopped (exit code {e.code}); stopping the job")
        if isinstance(e, KeyboardInterrupt):
            comm.abort(cli.EXIT_INTERRUPTED, f"{who}: interrupted; stopping the job")
        sys.stderr.write("".join(traceback.format_exception(e)))     # one write: it arrives whole
        comm.abort(1, f"{who} failed: {type(e).__name__}: {e}; stopping the job")
