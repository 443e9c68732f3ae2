"""Data-parallel training (tinygrad_llm.distributed): two processes under ``mpiexec -n 2``,
started from here with subprocess, against one process with twice the batch.

The jobs run tests/distributed_job.py (a tiny GPT on the fox text, 6 AdamW steps at lr 3e-3,
no clipping, no dropout) or the training script. Without mpi4py and an mpiexec (the
``distributed`` extra) those tests skip and say why; the in-process tests of the pieces run
everywhere.

Tolerances, float32: the two ranks sum each gradient over their half of the rows and then
the halves, where one process sums all rows at once, so the numbers agree to float32
rounding, not bit for bit: losses to a relative 1e-6 (seen: 1.8e-7), gradient norms to a
relative 1e-5, weights after the 6 steps to an absolute 1e-5 (seen: 1.5e-6; AdamW divides by
the root of the second moment, which makes the rounding of near-zero gradients visible up to
a fraction of a step of size lr). A run killed and resumed on the same two ranks does the
same arithmetic as the run that was never stopped: that is checked bit for bit.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import distributed_job as job
from conftest import FOX_TEXT, REPO
from tinygrad_llm import distributed
from tinygrad_llm.kernels import parallel
from tinygrad_llm.checkpoint import load_checkpoint
from tinygrad_llm.data import load_text_dataset
from tinygrad_llm.optim.optimizer import Optimizer

LOSS_RTOL, GRAD_NORM_RTOL, WEIGHT_ATOL = 1e-6, 1e-5, 1e-5
JOB = Path(job.__file__)
TRAIN = REPO / "examples" / "train_shakespeare.py"
BESIDE = Path(sys.executable).with_name("mpiexec")
MPIEXEC = str(BESIDE) if BESIDE.exists() else shutil.which("mpiexec")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi4py = pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py: pip install -e '.[distributed]'")
needs_mpi = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC),
                               reason="needs mpi4py and an mpiexec: pip install -e '.[distributed]'")
#: the two runs of the uninterrupted job: per-rank batch, gradient accumulation
RUNS = {"accum1": (4, 1), "accum2": (2, 2)}
STEPS = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of the jobs: the package importable, a cache of their own, one BLAS
    thread per process (two processes share the machine's cores)."""
    root = tmp_path_factory.mktemp("dist")
    (root / "fox.txt").write_text(FOX_TEXT)
    e = dict(os.environ, TINYGRAD_LLM_CACHE=str(root / "cache"), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
             PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return root, e


def launch(args, env, n=2, timeout=120, python=True):
    """mpiexec -n N [python] ARGS; returns (CompletedProcess, seconds)."""
    t = time.perf_counter()
    cmd = [MPIEXEC, "-n", str(n)] + ([sys.executable] if python else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return r, time.perf_counter() - t


def run_job(root, env, name, runs, **spec):
    """The job with SPEC; returns (CompletedProcess, seconds, result or None)."""
    path = root / f"{name}.json"
    result = root / f"{name}-result.json"
    path.write_text(json.dumps({"data": str(root / "fox.txt"), "runs": runs, "result": str(result), **spec}))
    r, dt = launch([JOB, path], env)
    return r, dt, json.loads(result.read_text()) if result.exists() else None


def one_run(out, name, **kw):
    batch, accum = RUNS[name]
    return {"out": str(out), "batch_size": batch, "grad_accum_steps": accum, "max_iters": STEPS, **kw}


@pytest.fixture(scope="module")
def uninterrupted(env):
    root, e = env
    runs = [one_run(root / name, name) for name in RUNS]
    r, _, result = run_job(root, e, "uninterrupted", runs)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, result


def weights(path):
    return {k: v.numpy() for k, v in load_checkpoint(path).model.state_dict().items()}


def losses(history):
    return np.array([[h["train_loss"], h["val_loss"]] for h in history])


# ---------------------------------------------------------------- the same numbers as one big batch

@needs_mpi
@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_train_as_one_process_with_twice_the_batch(uninterrupted, env, name, tmp_path, monkeypatch):
    root, result = uninterrupted
    batch, accum = RUNS[name]
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", env[1]["TINYGRAD_LLM_CACHE"])
    record = job.new_record()
    monkeypatch.setattr(Optimizer, "step", job.wrapped_step(record))
    data = load_text_dataset(root / "fox.txt", "char")
    ref = job.train_run(data, {"out": str(tmp_path / "ref"), "batch_size": 2 * batch, "grad_accum_steps": accum,
                               "max_iters": STEPS}, log=lambda *a: None)
    i = list(RUNS).index(name)
    got = result["summaries"][i]
    assert got["iter"] == ref["iter"] == STEPS
    np.testing.assert_allclose(losses(got["history"]), losses(ref["history"]), rtol=LOSS_RTOL, atol=0)
    np.testing.assert_allclose(result["grad_norms"][i * STEPS:(i + 1) * STEPS], record["grad_norms"],
                               rtol=GRAD_NORM_RTOL, atol=0)
    mine, theirs = weights(root / name / "latest"), weights(tmp_path / "ref" / "latest")
    for k in theirs:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)
    assert load_checkpoint(root / name / "latest").trainer_state["iter"] == STEPS


@needs_mpi
def test_the_parameters_are_identical_on_every_rank_after_every_step(uninterrupted):
    """Checked in the job by a hash allreduce after each optimizer step; the ranks start from
    different weights, so this needs the broadcast as well as the averaged gradients."""
    _, result = uninterrupted
    assert result["world_size"] == 2
    assert result["steps"] == STEPS * len(RUNS)
    assert result["differ"] == []


@needs_mpi
def test_one_allreduce_per_step_over_the_whole_gradient(uninterrupted, env):
    root, result = uninterrupted
    n_params = sum(a.size for k, a in weights(root / "accum1" / "latest").items() if k != "lm_head.weight")
    assert result["allreduces"] == [n_params] * (STEPS * len(RUNS))    # also with gradient accumulation


FAKECUPY = REPO.parent / "shared" / "tools" / "fakecupy"


@needs_mpi
@pytest.mark.skipif(not FAKECUPY.is_dir(), reason=f"needs the CuPy stand-in in {FAKECUPY}")
def test_the_nccl_path_on_stand_in_gpus_trains_as_the_mpi_path(uninterrupted, env):
    """NCCLCommunicator's own code (unique id, pointers, counts, types, streams, the mean) on
    the NumPy-backed CuPy stand-in, with NCCL's calls carried out over MPI by fake_nccl.py:
    no GPU runs here, and nothing of NCCL itself."""
    root, result = uninterrupted
    e = dict(env[1], FAKE_CUPY_DEVICES="2",
             PYTHONPATH=os.pathsep.join([str(FAKECUPY), str(JOB.parent), env[1]["PYTHONPATH"]]))
    r, _, got = run_job(root, e, "nccl", [one_run(root / "nccl", "accum1")], fake_gpus=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert got["backend"] == "nccl" and got["steps"] == STEPS and got["differ"] == []
    n_params = sum(a.size for k, a in weights(root / "nccl" / "latest").items() if k != "lm_head.weight")
    assert [c for c in got["nccl_calls"] if c[0] == "allReduce"] == [["allReduce", n_params, 7]] * STEPS
    assert {c[0] for c in got["nccl_calls"]} == {"allReduce", "bcast"}      # the start: rank 0's weights
    np.testing.assert_allclose(losses(got["summaries"][0]["history"]), losses(result["summaries"][0]["history"]),
                               rtol=LOSS_RTOL, atol=0)
    mine, theirs = weights(root / "nccl" / "latest"), weights(root / "accum1" / "latest")
    for k in theirs:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)


def _gpus() -> int:
    try:
        from cupy.cuda import nccl  # noqa: F401
        import cupy
        return cupy.cuda.runtime.getDeviceCount() if getattr(nccl, "available", False) else 0
    except Exception:  # noqa: BLE001 - no CuPy, no NCCL, no driver
        return 0


@needs_mpi
@pytest.mark.skipif(_gpus() == 0, reason="needs CuPy with NCCL and a CUDA device")
def test_the_nccl_path_on_real_gpus_trains_as_the_mpi_path(uninterrupted, env):
    """The GPU check: NCCL on min(2, GPUs) processes, one GPU each, with the global batch of
    the CPU run (1 GPU: one process with twice the rows, which still runs NCCL's calls).
    GPU float32 (cuBLAS) rounds otherwise than the CPU: looser tolerances."""
    root, result = uninterrupted
    n = min(2, _gpus())
    run = one_run(root / "gpus", "accum1") | {"batch_size": RUNS["accum1"][0] * 2 // n}
    path, out = root / "gpus.json", root / "gpus-result.json"
    path.write_text(json.dumps({"data": str(root / "fox.txt"), "runs": [run], "result": str(out), "device": "gpu"}))
    r, _ = launch([JOB, path], env[1], n=n)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(out.read_text())
    assert got["backend"] == "nccl" and got["differ"] == [] and got["steps"] == STEPS
    np.testing.assert_allclose(losses(got["summaries"][0]["history"]), losses(result["summaries"][0]["history"]),
                               rtol=1e-4)
    mine, theirs = weights(root / "gpus" / "latest"), weights(root / "accum1" / "latest")
    for k in theirs:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=0, atol=1e-4, err_msg=k)


@needs_mpi
def test_a_run_killed_and_resumed_on_two_ranks_reproduces_the_uninterrupted_run(uninterrupted, env):
    root, result = uninterrupted
    e = env[1]
    out = root / "killed"
    # rank 1 is SIGKILLed after its 5th step: after the checkpoint of iteration 4
    r, dt, _ = run_job(root, e, "kill", [one_run(out, "accum1")], kill_at=5)
    assert r.returncode != 0 and dt < 60, r.stdout + r.stderr      # the job ended, no rank kept waiting
    assert load_checkpoint(out / "latest").trainer_state["iter"] == 4
    r, _, resumed = run_job(root, e, "resume", [one_run(out, "accum1", resume=True)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout and resumed["differ"] == [] and resumed["steps"] == 2
    want = result["summaries"][0]
    assert resumed["summaries"][0]["iter"] == want["iter"] == STEPS
    np.testing.assert_array_equal(losses(resumed["summaries"][0]["history"]), losses(want["history"]))
    assert resumed["summaries"][0]["best_val_loss"] == want["best_val_loss"]
    mine, theirs = weights(out / "latest"), weights(root / "accum1" / "latest")
    for k in theirs:
        np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)


# ---------------------------------------------------------------- a rank that fails ends the job

@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_message(env):
    root, e = env
    r, dt, _ = run_job(root, e, "fail", [one_run(root / "fail", "accum1")], fail_at=2)
    assert r.returncode != 0 and dt < 60
    assert "error: rank 1 of 2 failed: RuntimeError: injected failure at step 2; stopping the job" in r.stderr


@needs_mpi
def test_a_rank_that_hangs_ends_the_job_after_the_timeout(env):
    root, e = env
    # (5 s: more than any honest wait of this job, e.g. rank 0's first import of matplotlib)
    r, dt, _ = run_job(root, e, "hang", [one_run(root / "hang", "accum1")], hang_at=3, timeout=5)
    assert r.returncode != 0 and dt < 40, r.stderr                 # rank 1 sleeps for 60 s
    assert "error: rank 0 of 2 waited" in r.stderr and "(the timeout is 5 s): one of them has died or hangs" \
        in r.stderr


# ---------------------------------------------------------------- the training script

@needs_mpi
def test_the_script_trains_on_two_processes_and_prints_once(env):
    root, e = env
    out = root / "script"
    flags = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "8", "--batch_size", "4",
             "--eval_interval", "3", "--eval_iters", "2", "--log_interval", "1", "--sample-tokens", "10"]
    r, _ = launch([TRAIN, "--distributed", "--data", root / "fox.txt", "--out", out, "--max_iters", "3", *flags], e)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("distributed: 2 processes (MPI") == 1 and r.stdout.count("data: ") == 1
    assert "iterations of batch 8 (2 processes x 4)" in r.stdout and r.stdout.count("--- sample ---") == 1
    assert load_checkpoint(out / "latest").trainer_state["iter"] == 3 and r.stderr == ""
    lines = r.stdout.splitlines()
    further = lines[lines.index("train it further:") + 1].split()
    assert further[:3] == [os.path.relpath(MPIEXEC) if not os.path.relpath(MPIEXEC).startswith("..")
                           else MPIEXEC, "-n", "2"] and further[-1] == "--distributed"
    r, _ = launch(further[4:] + ["--sample-tokens", "0"], e)             # as printed (--max_iters 6)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from {out / 'latest'} at iteration 3" in r.stdout
    assert load_checkpoint(out / "latest").trainer_state["iter"] == 6


@needs_mpi
def test_sigterm_to_mpiexec_stops_every_rank_at_one_iteration_and_saves(env):
    """mpiexec passes the signal to every process; they agree to stop after the same
    iteration (a rank that went on alone would wait forever), and rank 0 saves latest/."""
    root, e = env
    out = root / "term"
    flags = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "8", "--eval_interval", "100000",
             "--eval_iters", "1", "--log_interval", "1"]
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, TRAIN, "--distributed", "--data", root / "fox.txt",
                             "--out", out, "--max_iters", "1000000", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)
    try:
        for line in proc.stdout:                       # a few steps in
            if line.startswith("iter 3:"):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "SIGTERM: stopping after this iteration" in stdout and "stopped at iteration" in stdout
    it = load_checkpoint(out / "latest").trainer_state["iter"]
    assert it >= 3 and f"stopped at iteration {it}; continue with --resume" in stdout


@needs_mpi
def test_the_script_under_mpiexec_without_distributed_says_what_to_add(env):
    root, e = env
    r, _ = launch([TRAIN, "--data", root / "fox.txt", "--out", root / "nodist"], e)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: this is one of the 2 processes an MPI launcher started: add --distributed to train one model "
        "with all of them (or run the script without mpiexec) (see --help)"]      # one line, not one per process
    assert not (root / "nodist").exists()


def script(args, env):
    return subprocess.run([sys.executable, TRAIN, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env=env)


@needs_mpi4py
def test_the_script_with_distributed_outside_mpiexec_says_how_to_start_it(env):
    root, e = env
    r = script(["--distributed", "--data", root / "fox.txt", "--out", root / "outside"], e)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: this process was not started by an MPI launcher: run it with the mpiexec")
    assert len(r.stderr.splitlines()) == 1


def test_the_script_with_distributed_without_mpi4py_says_what_to_install(env, tmp_path):
    root, e = env
    (tmp_path / "mpi4py").mkdir()
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    e = dict(e, PYTHONPATH=os.pathsep.join([str(tmp_path), e["PYTHONPATH"]]))
    r = script(["--distributed", "--data", root / "fox.txt"], e)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "error: data-parallel training needs mpi4py and an MPI library, which are not installed: pip install " \
           "'tinygrad_llm[distributed]'" in r.stderr


def test_the_script_refuses_a_timeout_without_distributed(env):
    r = script(["--distributed-timeout", "5"], env[1])
    assert r.returncode == 2 and r.stderr == "error: --distributed-timeout applies to --distributed only (see --help)\n"


# ---------------------------------------------------------------- the pieces, in this process

def test_launcher_env_reads_the_launchers_variables(monkeypatch):
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.launcher_env() is None
    monkeypatch.setenv("PMIX_RANK", "3")
    assert distributed.launcher_env() == (3, None)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert distributed.launcher_env() == (1, 4)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert distributed.launcher_env() == (0, 2)


def test_one_process_alone_returns_what_it_is_given():
    c = distributed.SINGLE
    a = np.arange(4.0, dtype=np.float32)
    assert c.allreduce_mean_(a) is a and c.broadcast_(a) is a and a.tolist() == [0, 1, 2, 3]
    assert c.mean(0.1) == 0.1 and c.any(False) is False and c.any(1) is True
    assert c.allreduce_sum([1, 2.5]) == [1.0, 2.5] and c.allgather_object("x") == ["x"]
    c.raise_together(None)
    err = ValueError("bad")
    with pytest.raises(ValueError) as info:
        c.raise_together(err)
    assert info.value is err                      # the exception itself, not a copy
    with pytest.raises(KeyError), distributed.guard(c):
        raise KeyError("passes through with one process")


class FakeRanks(distributed.Communicator):
    """The view of rank ``rank`` of a job in which every rank met ``errors`` (for raise_together)."""

    def __init__(self, rank, errors):
        self.rank, self.world_size, self.errors = rank, len(errors), errors

    def allgather_object(self, obj, *, what="", watched=True):
        assert obj == (None if self.errors[self.rank] is None else
                       (type(self.errors[self.rank]), str(self.errors[self.rank])))
        return [None if e is None else (type(e), str(e)) for e in self.errors]


def test_raise_together_raises_the_first_error_on_every_rank():
    errors = [None, FileNotFoundError("no such file"), ValueError("later")]
    for rank in range(3):
        with pytest.raises(FileNotFoundError) as info:
            FakeRanks(rank, errors).raise_together(errors[rank])
        assert distributed.raised_together(info.value)
        if rank == 1:
            assert info.value is errors[1]                 # its own, with its traceback
        else:
            assert str(info.value) == "rank 1 of 3: no such file"
    with pytest.raises(RuntimeError, match="^later$"):       # rank 0's needs no prefix (it prints it)
        FakeRanks(1, [RuntimeError("later"), None]).raise_together(None)
    FakeRanks(1, [None, None]).raise_together(None)


def test_guard_lets_errors_of_every_rank_through():
    comm = FakeRanks(0, [None, None])
    with pytest.raises(ValueError), distributed.guard(comm):
        raise distributed.together(ValueError("every rank"))
    with pytest.raises(SystemExit), distributed.guard(comm):
        raise SystemExit(0)


def test_guard_ends_the_job_on_an_error_of_one_rank(capsys):
    class Aborting(FakeRanks):
        def abort(self, code, message=None):
            raise RuntimeError(f"abort {code}: {message}")
    comm = Aborting(1, [None, None])
    with pytest.raises(RuntimeError, match=r"abort 1: rank 1 of 2 failed: KeyError: 'x'; stopping the job"), \
            distributed.guard(comm):
        raise KeyError("x")
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="abort 130: rank 1 of 2: interrupted"), distributed.guard(comm):
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError, match=r"abort 2: rank 1 of 2 stopped \(exit code 2\)"), \
            distributed.guard(comm):
        raise SystemExit(2)


class TwinMPI:
    """mpi4py's names that MPICommunicator uses, for a world of two ranks that hold the same
    values (every sum doubles), in this process."""
    IN_PLACE, SUM, COMM_TYPE_SHARED = object(), "sum", 0

    class COMM:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

        def Split_type(self, kind):
            return self

        def Free(self):
            pass

        def Allreduce(self, send, recv, op):
            assert send is TwinMPI.IN_PLACE and op == "sum"
            recv *= 2

        def Bcast(self, buf, root):
            pass

        def allgather(self, obj):
            return [obj, obj]


def test_the_mpi_communicator_averages_host_arrays_and_refuses_device_arrays():
    comm = distributed.MPICommunicator(TwinMPI.COMM(), TwinMPI, timeout=None)
    assert (comm.rank, comm.world_size, comm.local_size) == (0, 2, 2)
    a = np.array([1.0, -3.0, 0.25], np.float32)
    assert comm.allreduce_mean_(a) is a and a.tolist() == [1.0, -3.0, 0.25] and a.dtype == np.float32
    assert comm.allreduce_sum([1.5, True]) == [3.0, 2.0]
    assert comm.mean(0.75) == 0.75 and comm.any(True) and not comm.any(False)
    comm.raise_together(None)

    class DeviceArray:
        pass
    for call in (comm.allreduce_mean_, comm.broadcast_):
        with pytest.raises(distributed.DistributedError, match="exchanges host .NumPy. arrays.*init.'gpu'.") as info:
            call(DeviceArray())
        assert distributed.raised_together(info.value)


def test_the_watchdog_fires_after_the_timeout_and_only_then():
    fired = []
    done = threading.Event()
    dog = distributed._Watchdog(0.2, lambda what, waited: (fired.append((what, waited)), done.set()))
    with dog.watch("a quick allreduce"):
        pass
    with dog.watch("a long one", watched=False):
        time.sleep(0.4)
    assert fired == []
    with dog.watch("a broadcast"):
        assert done.wait(5)
    assert fired[0][0] == "a broadcast" and fired[0][1] > 0.2


def test_init_refuses_bad_arguments_before_starting_mpi():
    with pytest.raises(distributed.DistributedError, match="each rank takes the GPU of its rank.*give 'gpu'"):
        distributed.init("cuda:1")
    for bad in (-1, math.nan, "10", True):
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            distributed.init("cpu", timeout=bad)


def test_fingerprint_sees_values_dtypes_and_shapes():
    a = np.arange(6, dtype=np.float32)
    same = distributed.fingerprint([a.copy()])
    assert distributed.fingerprint([a]) == same
    b = a.copy()
    b[3] = np.nextafter(b[3], 10, dtype=np.float32)
    assert distributed.fingerprint([b]) != same
    assert distributed.fingerprint([a.astype(np.float64)]) != same
    assert distributed.fingerprint([a.reshape(2, 3)]) != same


def test_share_cpu_splits_the_cores_between_the_ranks_of_a_machine(monkeypatch):
    for var in (parallel.ENV_VAR, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    two = FakeRanks(0, [None, None])
    two.local_size = 2
    before = parallel.blas_threads()
    try:
        n = distributed.share_cpu(two)
        assert n == max(1, (os.cpu_count() or 1) // 2)
        assert os.environ[parallel.ENV_VAR] == str(n) and parallel.num_threads() == n
        assert parallel.blas_threads() in (n, None)
    finally:
        if before is not None:
            parallel.set_blas_threads(before)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")             # the user said: nothing changes
    assert distributed.share_cpu(two) is None
    assert distributed.share_cpu(distributed.SINGLE) is None


def _n_args(method) -> int:
    return len([p for p in inspect.signature(method).parameters if p != "self"])


def test_the_nccl_stand_in_takes_what_the_communicator_passes():
    """fake_nccl.py (which the stand-in GPU test runs NCCLCommunicator against) has the names
    and the argument counts of NCCL_API; the next test holds NCCL_API against a real CuPy."""
    import fake_nccl
    for name in distributed.NCCL_API["module"]:
        assert hasattr(fake_nccl, name), name
    for method, n_args in distributed.NCCL_API["NcclCommunicator"].items():
        assert _n_args(getattr(fake_nccl.NcclCommunicator, method)) == n_args, method


def test_nccl_calls_match_the_installed_cupy():
    """What NCCLCommunicator uses of cupy.cuda.nccl exists there, and each method takes the
    number of arguments passed (from the signatures in CuPy's docstrings). Needs CuPy with
    NCCL; the communicator itself needs GPUs."""
    try:
        from cupy.cuda import nccl
    except Exception as e:  # noqa: BLE001 - no CuPy, or no CUDA for it
        pytest.skip(f"needs CuPy: {e}")
    if not getattr(nccl, "available", False):
        pytest.skip("needs CuPy with NCCL (pip install nvidia-nccl-cu12)")
    for name in distributed.NCCL_API["module"]:
        assert hasattr(nccl, name), name
    for method, n_args in distributed.NCCL_API["NcclCommunicator"].items():
        doc = getattr(nccl.NcclCommunicator, method).__doc__ if method != "__init__" else nccl.NcclCommunicator.__doc__
        assert doc, method
        if method == "__init__":
            assert "ndev" in doc and "commId" in doc and "rank" in doc
            continue
        sig = doc.split("(", 1)[1].split(")", 1)[0]
        params = [p for p in sig.split(",") if p.strip() and p.strip() != "self"]
        assert len(params) == n_args, (method, sig)
    import cupy
    for name in distributed.NCCL_API["cupy.cuda"]:
        assert hasattr(cupy.cuda, name), name
    for name in distributed.NCCL_API["cupy.cuda.Device"]:
        assert hasattr(cupy.cuda.Device, name), name
    assert len(nccl.get_unique_id()) == 128                # drawn without a GPU
