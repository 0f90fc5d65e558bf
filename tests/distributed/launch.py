"""Running stage commands the way a user scales them out: ``torchrun --nproc_per_node 2 -m
rlhf <stage> ...`` on the gloo backend, and the same command in one process to compare with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

# Ranks on 2 shared cores: one thread each, or they thrash. A rank that aborts prints its
# Python stacks (faulthandler).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
TIMEOUT_S = 300


def torchrun_command(args: list[str], ranks: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", "-m", "rlhf", *args]  # fmt: skip


def deepspeed_command(args: list[str], ranks: int = 2) -> list[str]:
    """DeepSpeed's own launcher, which passes ``--local_rank=N`` before the command."""
    with socket.socket() as s:  # a free port: its default (29500) may be taken
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = str(Path(sys.executable).parent / "deepspeed")
    return [launcher, f"--num_gpus={ranks}", f"--master_port={port}", "--module", "rlhf", *args]


def run_stage(
    args: list[str],
    ranks: int = 1,
    in_process: bool = False,
    launcher: str = "torchrun",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``rlhf <args>`` in one process (``ranks`` 1) or under ``launcher`` (torchrun or
    deepspeed), with ``env`` (default ``ENV``); fails the test with its output when it fails.
    ``in_process``: one process, this one (the reference runs skip a second start-up of torch
    and transformers; nothing is captured)."""
    if in_process:
        from rlhf.cli import main

        assert ranks == 1
        assert main(args) == 0, f"rlhf {' '.join(args)} failed"
        return subprocess.CompletedProcess(args, 0, "", "")
    if ranks == 1:
        cmd = [sys.executable, "-m", "rlhf", *args]
    elif launcher == "deepspeed":
        cmd = deepspeed_command(args, ranks)
    else:
        cmd = torchrun_command(args, ranks)
    done = subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    return done


def kill_one_rank_after_checkpoint(
    args: list[str], checkpoints: Path, step: int, ranks: int = 2
) -> subprocess.CompletedProcess:
    """Start ``args`` under torchrun, SIGKILL the last rank's process once ``step``'s
    checkpoint is complete, and return torchrun's exit (it must stop every rank, not hang)."""
    proc = subprocess.Popen(
        torchrun_command(args, ranks), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    marker = checkpoints / f"step-{step:08d}" / "meta.json"
    deadline = time.time() + TIMEOUT_S
    try:
        while not marker.exists():
            assert proc.poll() is None, "the run ended before a rank could be killed"
            assert time.time() < deadline, f"no checkpoint {marker} within {TIMEOUT_S} s"
            time.sleep(0.005)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == ranks, f"expected {ranks} rank processes, found {workers}"
        workers[-1].send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # the other rank must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_same_weights(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """The two published folders hold the same tensors, to the stated tolerance."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=rtol, atol=atol, msg=name)
