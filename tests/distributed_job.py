"""A data-parallel training job for tests/test_distributed.py: run under mpiexec, and (as the
single-process reference) in the test's own process.

    mpiexec -n 2 python tests/distributed_job.py SPEC.json

SPEC is a JSON object: ``data`` (a text file), ``runs`` (a list of ``{"out", "batch_size",
"grad_accum_steps", "max_iters", "resume"}``, trained one after the other), ``result`` (a JSON
file rank 0 writes), ``timeout`` (of the collectives, seconds), and optionally ``kill_at``,
``fail_at`` or ``hang_at``: at that optimizer step rank 1 kills itself (SIGKILL), raises, or
sleeps for a minute; ``device``: "gpu" for real GPUs and NCCL; ``fake_gpus``: train on the fake GPUs of ../shared/tools/fakecupy
through NCCLCommunicator, with NCCL played by tests/fake_nccl.py.

Each rank builds its model from a seed of its own (rank 0's is the reference's), so only the
broadcast makes them equal. After every optimizer step the ranks compare a hash of their
parameters with two allreduces (MIN and MAX of the hash: equal when every rank has the same);
the result file lists the number of steps checked, those where the ranks differed, the
norm of the gradient of every step, and the size of every array the communicator averaged.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time

import numpy as np

from tinygrad_llm import GPT, GPTConfig, distributed, manual_seed
from tinygrad_llm.data import load_text_dataset
from tinygrad_llm.optim.optimizer import Optimizer
from tinygrad_llm.train import TrainConfig, train

MODEL_SEED = 11
MPI = None


def model_for(vocab_size: int, rank: int = 0, device: str = "cpu") -> GPT:
    manual_seed(MODEL_SEED + rank)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.0)).to(device)


def config(run: dict) -> TrainConfig:
    return TrainConfig(batch_size=run["batch_size"], grad_accum_steps=run.get("grad_accum_steps", 1),
                       max_iters=run["max_iters"], eval_interval=2, eval_iters=2, log_interval=1,
                       learning_rate=3e-3, min_lr=3e-4, grad_clip=0.0, seed=1)


def train_run(data, run: dict, comm=None, log=print) -> dict:
    rank = 0 if comm is None else comm.rank
    device = getattr(comm, "device", "cpu")
    return train(model_for(data.vocab_size, rank, device), data, config(run), run["out"], tokenizer=data.tokenizer,
                 resume=run.get("resume", False), comm=comm, log=log)


def params_hash(optimizer) -> int:
    h = hashlib.blake2b(digest_size=8)
    for group in optimizer.param_groups:
        for p in group["params"]:
            h.update(p.numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def wrapped_step(record: dict, comm=None, spec: dict | None = None):
    """Optimizer.step, wrapped: it records the norm of the gradient it is given (training runs
    without clipping, so this is the averaged gradient: a sum instead of a mean would double
    it, which the AdamW weights alone would not show); under MPI it then does the injected
    failure, if any, and the hash allreduce."""
    original, spec = Optimizer.step, spec or {}

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        record["grad_norms"].append(float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))))
        out = original(self, closure)
        record["steps"] += 1
        if comm is None:
            return out
        n = record["steps"]
        h = params_hash(self)
        if comm.comm.allreduce(h, op=MPI.MIN) != comm.comm.allreduce(h, op=MPI.MAX):
            record["differ"].append(n)
        # after the check, so that rank 0 next waits in a collective of the training loop
        if comm.rank == 1 and n == spec.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)
        if comm.rank == 1 and n == spec.get("fail_at"):
            raise RuntimeError(f"injected failure at step {n}")
        if comm.rank == 1 and n == spec.get("hang_at"):
            time.sleep(60)
        return out

    return step


def new_record() -> dict:
    return {"steps": 0, "differ": [], "grad_norms": [], "summaries": []}


def fake_gpu_communicator(timeout):
    """NCCLCommunicator on the fake GPUs of ../shared/tools/fakecupy (which must be on the
    path, with FAKE_CUPY_DEVICES set), with NCCL carried out by tests/fake_nccl.py."""
    import cupy
    import fake_nccl
    assert hasattr(cupy, "_stats"), "the fake CuPy of shared/tools/fakecupy is not on the path"
    type(cupy.cuda.get_current_stream()).ptr = 0       # the default stream (the stand-in has no address)
    # every array of the stand-in lives on its device 0: one GPU per process, as CUDA_VISIBLE_DEVICES gives
    return distributed.NCCLCommunicator(MPI.COMM_WORLD, MPI, fake_nccl, "cuda:0", timeout)


def main(path: str) -> int:
    global MPI
    from mpi4py import MPI  # (only under mpiexec: the reference runs in a process without MPI)
    spec = json.loads(open(path, encoding="utf-8").read())
    timeout = spec.get("timeout", distributed.DEFAULT_TIMEOUT)
    if spec.get("fake_gpus"):
        comm = fake_gpu_communicator(timeout)
    else:
        comm = distributed.init(spec.get("device", "cpu"), timeout=timeout)
    record = new_record() | {"world_size": comm.world_size, "backend": comm.backend, "allreduces": []}
    allreduce = comm.allreduce_mean_

    def recorded(array, **kw):                          # the size of every averaged array
        record["allreduces"].append(int(array.size))
        return allreduce(array, **kw)
    comm.allreduce_mean_ = recorded
    Optimizer.step = wrapped_step(record, comm, spec)
    data = load_text_dataset(spec["data"], "char")
    for run in spec["runs"]:
        summary = train_run(data, run, comm)
        record["summaries"].append({k: summary[k] for k in ("iter", "best_val_loss", "history", "interrupted")})
    if spec.get("fake_gpus"):
        import fake_nccl
        record["nccl_calls"] = fake_nccl.calls
    if comm.rank == 0:
        with open(spec["result"], "w", encoding="utf-8") as f:
            json.dump(record, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
