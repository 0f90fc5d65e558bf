"""The processes of one training run: which rank this is, the process group, and what ranks
exchange (metrics, flags, a barrier).

``torchrun --nproc_per_node N`` (or DeepSpeed's launcher) starts N copies of a stage command
and tells each its place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``mpirun`` (an MPI
TrainJob runtime) tells it through OpenMPI's ``OMPI_COMM_WORLD_*``, which are read as those.
Without them the run is one process: rank 0 of 1, and every function here is a no-op. Rank 0 alone talks to
MLflow, writes manifests and publishes; every rank trains on its share of each batch.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist

from rlhf.config import DistributedConfig

log = logging.getLogger("rlhf.distributed")

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank within this node: which GPU it drives

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes manifests and publishes."""
        return self.rank == 0

    def on_rank(self) -> str:
        """`` on rank N`` for error messages when there are several ranks, else nothing."""
        return f" on rank {self.rank}" if self.size > 1 else ""


# torch.distributed's names for a rank's place, and OpenMPI's for the same, which is all the
# processes `mpirun` starts carry.
OPENMPI_ENV = {
    "RANK": "OMPI_COMM_WORLD_RANK",
    "WORLD_SIZE": "OMPI_COMM_WORLD_SIZE",
    "LOCAL_RANK": "OMPI_COMM_WORLD_LOCAL_RANK",
    "LOCAL_WORLD_SIZE": "OMPI_COMM_WORLD_LOCAL_SIZE",
}


def adopt_openmpi_env(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Under ``mpirun``: set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``
    from OpenMPI's variables, so that ``init_process_group``, DeepSpeed and this
    module read them as under torchrun. OpenMPI has no rendezvous address: the launcher passes
    ``MASTER_ADDR`` and ``MASTER_PORT`` (``mpirun -x``; ``rlhf.pipeline.mpi_launch``), and their
    absence with several ranks is an error here rather than a hang in the rendezvous. Returns
    whether this process was started by mpirun."""
    if "OMPI_COMM_WORLD_RANK" not in environ:
        return False
    for name, openmpi_name in OPENMPI_ENV.items():
        # OpenMPI's values win: a RANK or LOCAL_RANK the launcher's own environment carried
        # (every rank inherits it) would give two ranks the same number.
        if openmpi_name in environ:
            environ[name] = environ[openmpi_name]
    missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(n)]
    if int(environ.get("WORLD_SIZE", "1")) > 1 and missing:
        raise RuntimeError(
            f"started by mpirun as rank {environ['RANK']} of {environ['WORLD_SIZE']} without "
            f"{' and '.join(missing)}: pass the rank-0 host and a free port to every rank "
            "(mpirun -x MASTER_ADDR=<host> -x MASTER_PORT=<port>; rlhf.pipeline.mpi_launch does)"
        )
    return True


def launched_world() -> World:
    """The world as the launcher's environment describes it (one process when unset); under
    ``mpirun`` OpenMPI's variables are adopted first (:func:`adopt_openmpi_env`)."""
    adopt_openmpi_env()
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def is_main_process() -> bool:
    return launched_world().is_main


def device_for(world: World, configured: str) -> torch.device:
    """``auto`` is this rank's GPU (``cuda:<local_rank>``) when there are GPUs, else the CPU;
    ``cuda`` without an index is this rank's GPU too. A GPU chosen becomes the current one,
    where NCCL's collectives of Python objects put their buffers."""
    if configured == "auto":
        configured = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(configured)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device


def start(config: DistributedConfig, device: torch.device, need_group: bool = False) -> World:
    """Join the run's process group (NCCL on GPUs, gloo on CPUs) when there are several ranks,
    or when ``need_group`` (DeepSpeed wants one even alone: a group of one on a free local
    port). A collective that waits longer than ``config.timeout_minutes`` raises, so a rank
    that died stops the others instead of leaving them waiting forever."""
    world = launched_world()
    if dist.is_initialized() or (world.size == 1 and not need_group):
        return world
    if world.size == 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
    # NCCL bound to this rank's GPU (``device_for`` gives it with its index) from the start: its
    # collectives need not guess the device (torch warns on every barrier otherwise).
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=datetime.timedelta(minutes=config.timeout_minutes),
        **({"device_id": device} if device.type == "cuda" else {}),
    )
    if world.size > 1:
        log.info("rank %d of %d (%s backend)", world.rank, world.size, dist.get_backend())
    return world


def leave_at_exit() -> None:
    """Leave the process group, if this process joined one, when the process exits: NCCL warns
    at exit of resources leaked otherwise. Called once a stage has succeeded, not after a
    failure (destroying a group while a collective is pending on another rank can block). Not
    at once: a process may run another stage in the same group (tests, a notebook), and
    DeepSpeed keeps groups of its own made from it."""
    if dist.is_initialized():
        _register_leave()


@functools.cache
def _register_leave() -> None:
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(status: int) -> NoReturn:
    """End a stage's process (``rlhf``, ``rlhf.pipeline.stage_job``) with ``status``. After a
    success in a process group, Python's own exit work is done here (threads joined, exit
    handlers run: the group left, MLflow, logging; streams flushed) and the process then ends
    without the interpreter's teardown. A rank of a finished ZeRO-3 launch aborted once in CI
    at that point ("terminate called without an active exception", SIGABRT), most likely as
    the teardown freed what gloo's worker threads still held; torchrun reports that as a failed
    stage. Any other ending is a plain ``sys.exit``."""
    if status != 0 or not dist.is_initialized():
        sys.exit(status)
    for thread in threading.enumerate():  # what the interpreter waits for before exiting
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 (the interpreter's exit handlers; no public name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shard(items: list[T], world: World) -> list[T]:
    """This rank's share of a batch: items ``rank``, ``rank + size``, ... The shares of all
    ranks together are the batch, so N ranks step on the same global batch as one process."""
    return items[world.rank :: world.size]


def sums_across_ranks(values: list[float]) -> list[float]:
    """Each value summed over the ranks, in one all-reduce (every rank must call it with as
    many values); the values themselves in a single process."""
    if not _several():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def _collective_device() -> torch.device:
    """Where a collective's tensor must be: NCCL reduces GPU tensors only (a CPU tensor has no
    backend in its group), gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(values: dict[str, float], summed: Collection[str] = ()) -> dict[str, float]:
    """Each value averaged over the ranks that report it, those named in ``summed`` (counts)
    summed over them instead. A rank may lack a key another has (a stat of rows it had none
    of): every rank gets the union of the keys. Every rank must call it."""
    if not _several():
        return values
    reported: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(reported, sorted(values))
    keys = sorted({k for ks in reported for k in ks or ()})
    totals = sums_across_ranks([float(values.get(k, 0.0)) for k in keys]
                               + [1.0 if k in values else 0.0 for k in keys])  # fmt: skip
    sums, ranks = totals[: len(keys)], totals[len(keys) :]
    return {k: v if k in summed else v / n for k, v, n in zip(keys, sums, ranks, strict=True)}


def counts_by_rank(count: int) -> list[int]:
    """Every rank's ``count``, in rank order (``[count]`` in one process); every rank must
    call it."""
    if not _several():
        return [count]
    one_hot = [0.0] * dist.get_world_size()
    one_hot[dist.get_rank()] = float(count)
    return [round(c) for c in sums_across_ranks(one_hot)]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank must call it)."""
    return sums_across_ranks([1.0 if flag else 0.0])[0] > 0


def barrier() -> None:
    if _several():
        dist.barrier()


def _several() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then, once it is done, on the other ranks: for work whose result
    rank 0 writes to disk (a cache, a trained tokenizer) and the others then read."""
    world = launched_world()
    result = fn() if world.is_main else None
    barrier()
    if not world.is_main:
        result = fn()
    return result  # type: ignore[return-value]
