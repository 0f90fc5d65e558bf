"""The process group a stage joins (DeepSpeed wants one even alone): on a GPU, NCCL bound to the
rank's device; left at exit once the stage has succeeded, so that NCCL does not warn of leaked
resources; after a failure left alone (destroying it could block on a rank still in a
collective). Kept until the process exits: another stage may follow in the same process, in
the same group, and DeepSpeed's own groups are made from it. A stage's process that succeeded
in a group ends without the interpreter's teardown (``end_process``)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rlhf.config import DistributedConfig
from rlhf.training import distributed

# The start of a process that joins a group of one (gloo) and says when the group is destroyed.
TELLS_DESTROY = textwrap.dedent("""
    import torch, torch.distributed as dist
    from rlhf.config import DistributedConfig
    from rlhf.training import distributed

    destroy = dist.destroy_process_group
    def told(*args, **kwargs):
        print("group destroyed", flush=True)
        destroy(*args, **kwargs)
    dist.destroy_process_group = told
""")

# A stage joining the group through run_tracked, twice.
STAGE_PROCESS = TELLS_DESTROY + textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    from rlhf.stages.tracked_run import run_tracked

    def run(config, inputs, outputs, tracker):
        distributed.start(DistributedConfig(), torch.device("cpu"), need_group=True)
        if sys.argv[1] == "fail":
            raise RuntimeError("the stage failed")
        return {"loss": 1.0}

    spec = SimpleNamespace(name="sft", help="test stage", summary=(), load_run=lambda: run)
    for _ in range(2):  # a second stage in the same process finds the group still there
        run_tracked(spec, None, None, None, None, "x", False)
        print("group kept until exit:", dist.is_initialized(), flush=True)
""")


LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def _run(script: str, argument: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh Python process of its own: a group of one, not a launch's rank."""
    env = {**os.environ, "PYTHONPATH": str(Path(distributed.__file__).parents[2])}
    for name in LAUNCH_VARIABLES:
        env.pop(name, None)
    return subprocess.run([sys.executable, "-c", script, argument], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_the_group_is_left_at_exit_after_success_and_alone_after_failure(outcome):
    done = _run(STAGE_PROCESS, outcome)
    lines = done.stdout.splitlines()
    if outcome == "succeed":
        assert done.returncode == 0, done.stderr[-3000:]
        assert lines == ["group kept until exit: True"] * 2 + ["group destroyed"]
    else:
        assert done.returncode == 1 and "the stage failed" in done.stderr
        assert lines == []  # not destroyed


# A stage's process in a group of one, ended by end_process with the status given: what the
# interpreter does before exiting (a non-daemon thread, an exit handler, unflushed output)
# must still happen; its teardown (a global's finaliser) must not, after a success.
ENDING_PROCESS = TELLS_DESTROY + textwrap.dedent("""
    import atexit, sys, threading, time

    class Finalised:
        def __del__(self):
            print("interpreter teardown", flush=True)
    kept = Finalised()

    distributed.start(DistributedConfig(), torch.device("cpu"), need_group=True)
    distributed.leave_at_exit()
    atexit.register(print, "exit handler ran")
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished"))).start()
    print("unflushed", end="")
    distributed.end_process(int(sys.argv[1]))
""")


@pytest.mark.parametrize("status", [0, 3])
def test_a_successful_process_in_a_group_ends_without_the_interpreters_teardown(status):
    done = _run(ENDING_PROCESS, str(status))
    assert done.returncode == status, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "thread finished" in lines[0]  # joined before the exit handlers
    assert "unflushed" in done.stdout
    if status == 0:
        assert lines[1:] == ["exit handler ran", "group destroyed"]
    else:  # a plain exit: the interpreter torn down
        assert lines[1:] == ["exit handler ran", "group destroyed", "interpreter teardown"]


@pytest.mark.parametrize(
    ("device", "bound"),
    [("cpu", None), ("cuda:1", torch.device("cuda", 1))],
)
def test_nccl_is_bound_to_the_ranks_gpu_and_gloo_to_nothing(device, bound, monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)  # whatever tests ran before
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    distributed.start(DistributedConfig(), torch.device(device), need_group=True)
    (kwargs,) = calls
    assert kwargs["backend"] == ("gloo" if bound is None else "nccl")
    assert kwargs.get("device_id") == bound


@pytest.mark.parametrize(
    ("configured", "expected"),
    [("auto", "cuda:1"), ("cuda", "cuda:1"), ("cuda:0", "cuda:0"), ("cpu", "cpu")],
)
def test_each_rank_takes_its_own_gpu_and_makes_it_current(configured, expected, monkeypatch):
    """Under torchrun, ``device: cuda`` must not put every rank on GPU 0; the chosen GPU is the
    current one, where NCCL's object collectives put their buffers."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    world = distributed.World(rank=1, size=2, local_rank=1)
    assert distributed.device_for(world, configured) == torch.device(expected)
    assert current == ([] if expected == "cpu" else [torch.device(expected)])


@pytest.mark.parametrize(("backend", "expected"), [("gloo", "cpu"), ("nccl", "cuda:1")])
def test_counts_and_means_are_reduced_on_the_device_the_backend_reduces(
    backend, expected, monkeypatch
):
    """NCCL has no backend for CPU tensors: the ranks' stats go through the current GPU."""
    monkeypatch.setattr(dist, "get_backend", lambda: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert distributed._collective_device() == torch.device(expected)
