"""Ranks under ``mpirun`` (Kubeflow Trainer's MPI runtime, ``deepspeed-distributed``): the launcher
module reads the runtime's hostfile and starts the ranks with the rendezvous address, each rank
reads OpenMPI's variables as torch.distributed's and joins a gloo group. A real ``mpirun``
(Debian's openmpi-bin, installed by the Makefile), two ranks on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import rlhf
from rlhf.pipeline import mpi_launch
from rlhf.training.distributed import adopt_openmpi_env

SRC = str(Path(rlhf.__file__).resolve().parents[1])
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun (make)")

# What each rank reports: its place as this project reads it, and a sum over the group.
RANK_PROBE = """
import json, sys, torch, torch.distributed as dist
from rlhf.training.distributed import start, launched_world
from rlhf.config import DistributedConfig
world = start(DistributedConfig(), torch.device("cpu"))
t = torch.tensor([float(world.rank + 1)])
dist.all_reduce(t)
print("PROBE " + json.dumps({"rank": world.rank, "size": world.size, "local": world.local_rank,
      "sum": t.item(), "backend": dist.get_backend()}), flush=True)
dist.destroy_process_group()
"""


def mpi_env(tmp_path: Path, slots: int = 2) -> dict[str, str]:
    """The launcher pod's environment, here: the runtime's hostfile of one host and OpenMPI's
    permission to run as root (CI runs as root; the runtime's pods run as uid 1000)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"# written by the runtime\nlocalhost slots={slots}\n")
    return {
        **os.environ, mpi_launch.HOSTFILE_ENV: str(hostfile), "PYTHONPATH": SRC,
        "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
    }  # fmt: skip


@needs_mpirun
def test_mpirun_ranks_join_one_group_as_torch_ranks(tmp_path) -> None:
    env = {**mpi_env(tmp_path), "STAGE_SECRET": "s3cret"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = mpi_launch.mpirun_command(
        "job.json", "127.0.0.1", ["STAGE_SECRET", "UNSET_HERE"], port, environ=env
    )
    # The program mpirun starts is the stage job; here a probe in its place.
    program = command.index(sys.executable)
    assert command[program:] == [sys.executable, "-m", "rlhf.pipeline.stage_job", "job.json"]
    exported = [command[i + 1] for i, arg in enumerate(command) if arg == "-x"]
    assert exported[:2] == ["MASTER_ADDR=127.0.0.1", f"MASTER_PORT={port}"]
    assert "STAGE_SECRET" in exported and "PYTHONPATH" in exported
    assert "UNSET_HERE" not in exported  # mpirun would warn about it
    probe = [*command[:program], sys.executable, "-c", RANK_PROBE]
    done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # mpirun forwards each rank's output as it reads it, so two ranks' lines can run together.
    reports = sorted(
        (json.loads(m) for m in re.findall(r"PROBE (\{[^}]*\})", done.stdout)),
        key=lambda r: r["rank"],
    )
    # Hand-worked: ranks 0 and 1 of 2, local ranks 0 and 1 (one host), 1 + 2 = 3 on both.
    assert reports == [
        {"rank": 0, "size": 2, "local": 0, "sum": 3.0, "backend": "gloo"},
        {"rank": 1, "size": 2, "local": 1, "sum": 3.0, "backend": "gloo"},
    ]


def test_openmpi_variables_become_torch_ones() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16",
           "OMPI_COMM_WORLD_LOCAL_RANK": "5", "OMPI_COMM_WORLD_LOCAL_SIZE": "8",
           "MASTER_ADDR": "job-node-0-0.job", "MASTER_PORT": "29500"}  # fmt: skip
    assert adopt_openmpi_env(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == (
        "5", "16", "5", "8",
    )  # fmt: skip
    assert not adopt_openmpi_env({"RANK": "1", "WORLD_SIZE": "2"})  # torchrun's: left alone
    # Values every rank inherited from the launcher's environment give way to OpenMPI's.
    stale = {**env, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    assert adopt_openmpi_env(stale)
    assert (stale["RANK"], stale["LOCAL_RANK"], stale["WORLD_SIZE"]) == ("5", "5", "16")
    with pytest.raises(RuntimeError, match="rank 1 of 2 without MASTER_ADDR and MASTER_PORT"):
        adopt_openmpi_env({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"})


def test_the_launcher_takes_rank_0_s_host_from_the_hostfile(tmp_path) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(
        "# the runtime's hostfile\n\nj-node-0-0.j slots=8\nj-launcher-0-0.j slots=8\n"
    )
    assert mpi_launch.first_host(hostfile) == "j-node-0-0.j"
    hostfile.write_text("j-node-0-0.j cpus=8\n")
    with pytest.raises(ValueError, match=r"hostfile, line 1: expected '<host> slots=<n>'"):
        mpi_launch.first_host(hostfile)
    hostfile.write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no host"):
        mpi_launch.first_host(hostfile)
    with pytest.raises(ValueError, match="cannot read the MPI hostfile"):
        mpi_launch.first_host(tmp_path / "missing")


def test_the_launcher_refuses_to_run_outside_an_mpi_runtime(monkeypatch) -> None:
    monkeypatch.delenv(mpi_launch.HOSTFILE_ENV, raising=False)
    with pytest.raises(SystemExit, match="OMPI_MCA_orte_default_hostfile is not set"):
        mpi_launch.main(["s3://b/job.json"])
