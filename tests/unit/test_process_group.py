"""The process group a stage joins (DeepSpeed wants one even alone): on a GPU, NCCL bound to the
rank's device; left when the stage has succeeded, so that NCCL does not warn of leaked
resources at exit; after a failure left alone (destroying it could block on a rank still in a
collective)."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from rlhf.config import DistributedConfig
from rlhf.stages.tracked_run import run_tracked
from rlhf.training import distributed


def _spec(run):
    return SimpleNamespace(name="sft", help="test stage", summary=(), load_run=lambda: run)


def _joins_a_group(fail: bool):
    def run(config, inputs, outputs, tracker):
        distributed.start(DistributedConfig(), torch.device("cpu"), need_group=True)
        assert dist.is_initialized()
        if fail:
            raise RuntimeError("the stage failed")
        return {"loss": 1.0}

    return run


def test_the_group_a_stage_joined_is_left_when_it_succeeds(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    metrics = run_tracked(_spec(_joins_a_group(False)), None, None, None, None, "x", False)
    assert metrics == {"loss": 1.0}
    assert not dist.is_initialized()


def test_a_failed_stage_leaves_its_group_alone(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    try:
        with pytest.raises(RuntimeError, match="the stage failed"):
            run_tracked(_spec(_joins_a_group(True)), None, None, None, None, "x", False)
        assert dist.is_initialized()
    finally:
        distributed.end()


@pytest.mark.parametrize(
    ("device", "bound"),
    [("cpu", None), ("cuda:1", torch.device("cuda", 1))],
)
def test_nccl_is_bound_to_the_ranks_gpu_and_gloo_to_nothing(device, bound, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    distributed.start(DistributedConfig(), torch.device(device), need_group=True)
    (kwargs,) = calls
    assert kwargs["backend"] == ("gloo" if bound is None else "nccl")
    assert kwargs.get("device_id") == bound
