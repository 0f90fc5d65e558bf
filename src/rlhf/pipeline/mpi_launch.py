"""The launcher of a stage's TrainJob on an MPI runtime (Kubeflow Trainer's
``deepspeed-distributed``): ``python3 -m rlhf.pipeline.mpi_launch [--forward A,B] <job.json>``
runs, in the runtime's launcher pod, ``mpirun ... python3 -m rlhf.pipeline.stage_job <job.json>``
over the hosts of the runtime's hostfile.

What the runtime gives the launcher, and what this adds:

* the hostfile (``OMPI_MCA_orte_default_hostfile``, one ``<host> slots=<numProcPerNode>`` line
  per node, the launcher's pod among them): mpirun starts one rank per slot, filling the hosts in
  order (``--map-by slot``), so rank 0 runs on the first host;
* no rendezvous address: torch.distributed's ``env://`` needs ``MASTER_ADDR``, where rank 0
  listens, so that first host is passed to every rank with ``-x MASTER_ADDR`` and
  ``-x MASTER_PORT``;
* the ranks on the other nodes are started over SSH (port 2222 of the node pods' ``sshd``), which
  gives them a login environment, not their pod's: the stage's Secrets and ConfigMaps, ``HOME``,
  ``PATH`` and ``LD_LIBRARY_PATH`` reach them only as ``-x`` copies of the launcher's values
  (``--forward`` names the stage's; the launcher pod has them from ``spec.trainer.env``).

Each rank maps OpenMPI's ``OMPI_COMM_WORLD_*`` to ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
when it starts (``rlhf.training.distributed.adopt_openmpi_env``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("rlhf.pipeline")

HOSTFILE_ENV = "OMPI_MCA_orte_default_hostfile"  # set on the launcher by the runtime
MASTER_PORT = 29500  # torch.distributed's usual port on rank 0's host
# The runtime's user: its pods run as uid 1000 with the SSH keys under /home/mpiuser/.ssh and
# sshd's configuration in /home/mpiuser/.sshd_config (images/cuda.Dockerfile provides both).
MPI_HOME = "/home/mpiuser"
SSHD_PORT = 2222
# What every rank needs of the launcher's environment whatever the stage.
ALWAYS_FORWARDED = ("HOME", "PATH", "LD_LIBRARY_PATH", "PYTHONPATH")


def first_host(hostfile: Path) -> str:
    """The first host of an OpenMPI hostfile (``host slots=N`` lines; ``#`` comments)."""
    try:
        text = hostfile.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{hostfile}: cannot read the MPI hostfile: {e.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if words:
            if any(not w.startswith("slots=") for w in words[1:]):
                raise ValueError(
                    f"{hostfile}, line {number}: expected '<host> slots=<n>', got {line!r}"
                )
            return words[0]
    raise ValueError(f"{hostfile}: the MPI hostfile lists no host")


def mpirun_command(
    job_file: str,
    master_addr: str,
    forward: Sequence[str] = (),
    master_port: int = MASTER_PORT,
    python: str = sys.executable,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """``mpirun`` running the stage job on every slot of the hostfile, rank 0 on the first,
    with the variables of ``forward`` (and :data:`ALWAYS_FORWARDED`) that ``environ``, the
    launcher's environment, has."""
    names = dict.fromkeys([*ALWAYS_FORWARDED, *forward])  # once each, in order
    exported = [arg for name in names if name in environ for arg in ("-x", name)]
    return [
        "mpirun", "--map-by", "slot", "--bind-to", "none",
        "-x", f"MASTER_ADDR={master_addr}", "-x", f"MASTER_PORT={master_port}", *exported,
        python, "-m", "rlhf.pipeline.stage_job", job_file,
    ]  # fmt: skip


def main(argv: Sequence[str]) -> int:
    from rlhf import log_setup

    log_setup.configure()
    parser = argparse.ArgumentParser(prog="python3 -m rlhf.pipeline.mpi_launch")
    parser.add_argument("--forward", default="", help="comma-separated names of env variables")
    parser.add_argument("job_file")
    args = parser.parse_args(list(argv))
    hostfile = os.environ.get(HOSTFILE_ENV)
    if not hostfile:
        raise SystemExit(
            f"{HOSTFILE_ENV} is not set: this runs in the launcher pod of an MPI TrainJob "
            "runtime (deepspeed-distributed), which mounts the hostfile and names it there"
        )
    if shutil.which("mpirun") is None:
        raise SystemExit("mpirun not found: the image needs OpenMPI (images/cuda.Dockerfile)")
    forward = [name for name in args.forward.split(",") if name]
    # The launcher's own MASTER_PORT, where set, else torch's usual one.
    port = int(os.environ.get("MASTER_PORT") or MASTER_PORT)
    command = mpirun_command(args.job_file, first_host(Path(hostfile)), forward, port)
    log.info("mpi launch: %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)  # mpirun's exit status is the launcher's (and the TrainJob's)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
