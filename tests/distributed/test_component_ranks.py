"""A KFP task whose pod has several GPUs (cluster config ``gpus: N``) runs its stage as N
ranks under torchrun: the component launches them, rank 0 tracks and publishes, and the
task's metrics are rank 0's. On CPU: 2 gloo ranks under ZeRO-3, compared with one process
(``make test-distributed``); a failing rank fails the task (``make test``)."""

from __future__ import annotations

import pytest
from component_task import Metrics, sft_task
from launch import assert_same_weights

from rlhf.pipeline import component_runner
from rlhf.pipeline.pod_env import PROCESSES_ENV


@pytest.mark.distributed  # a reference run and a 2-rank launch: make test-distributed
def test_a_task_with_two_gpus_runs_its_stage_on_two_ranks(
    prepared, tmp_path, monkeypatch, capfd
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, two = Metrics(), Metrics()
    component_runner.run_component("sft", sft_task(prepared["sft"], str(tmp_path / "one"), one))
    capfd.readouterr()
    monkeypatch.setenv(PROCESSES_ENV, "2")
    component_runner.run_component("sft", sft_task(prepared["sft"], str(tmp_path / "two"), two))
    err = capfd.readouterr().err
    assert "rank 0 of 2" in err and "rank 1 of 2" in err
    assert err.count("==> sft") == 1  # rank 0 alone reports
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert two.logged.keys() == one.logged.keys()
    assert two.logged["steps"] == one.logged["steps"] == 3
    assert two.logged["val_loss"] == pytest.approx(one.logged["val_loss"], abs=1e-4)


def test_a_failing_rank_fails_the_task(prepared, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(PROCESSES_ENV, "2")
    task = sft_task(prepared["sft"], str(tmp_path / "model"), Metrics())
    task["data"].path = str(tmp_path / "missing")
    with pytest.raises(RuntimeError, match=r"sft: torchrun with 2 processes exited with status"):
        component_runner.run_component("sft", task)
    assert not (tmp_path / "model").exists()
