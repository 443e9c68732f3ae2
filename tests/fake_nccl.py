"""The part of ``cupy.cuda.nccl`` that NCCLCommunicator uses, carried out with MPI on host
memory, for running the NCCL code path without GPUs (tests/distributed_job.py, with the
NumPy-backed CuPy stand-in ../shared/tools/fakecupy, whose arrays' ``.data.ptr`` is the
address of their host memory).

It follows CuPy's API as CuPy 14 defines it (cupy_backends/cuda/libs/nccl.pyx): buffers as
integer addresses plus an element count and an NCCL type code, the stream as an address,
``NcclCommunicator(ndev, commId, rank)`` with the 128-byte unique id as a tuple. The calls
happen at once instead of on the stream. test_distributed.py checks that these signatures
and the real CuPy's agree with what NCCLCommunicator passes (tinygrad_llm.distributed.NCCL_API).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

available = True
NCCL_SUM = 0
NCCL_INT32, NCCL_INT64, NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 2, 4, 6, 7, 8
_TYPES = {NCCL_INT32: np.int32, NCCL_INT64: np.int64, NCCL_FLOAT16: np.float16, NCCL_FLOAT32: np.float32,
          NCCL_FLOAT64: np.float64}
calls: list = []            # (name, count, type) of every collective, for the job's record


def get_unique_id() -> tuple:
    return tuple(int(b) - 128 for b in os.urandom(128))       # chars, as CuPy returns them


def _at(ptr: int, count: int, datatype: int) -> np.ndarray:
    """The ``count`` elements of NCCL type ``datatype`` at address ``ptr``, as a NumPy view."""
    kind = np.dtype(_TYPES[datatype])
    return np.frombuffer((ctypes.c_char * (count * kind.itemsize)).from_address(ptr), dtype=kind)


class NcclCommunicator:
    def __init__(self, ndev: int, commId: tuple, rank: int):
        from mpi4py import MPI  # (here: importing this module must not start MPI)
        self.MPI = MPI
        assert isinstance(commId, tuple) and len(commId) == 128
        self.comm = MPI.COMM_WORLD.Dup()
        assert (ndev, rank) == (self.comm.Get_size(), self.comm.Get_rank())
        assert len(set(self.comm.allgather(commId))) == 1, "the ranks were given different unique ids"

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int):
        assert op == NCCL_SUM and isinstance(stream, int)
        calls.append(("allReduce", count, datatype))
        recv = _at(recvbuf, count, datatype)
        send = self.MPI.IN_PLACE if sendbuf == recvbuf else _at(sendbuf, count, datatype)
        self.comm.Allreduce(send, recv, op=self.MPI.SUM)

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int):
        assert isinstance(stream, int)
        calls.append(("bcast", count, datatype))
        self.comm.Bcast(_at(buff, count, datatype), root=root)

    def abort(self):
        pass

    def check_async_error(self):
        pass
