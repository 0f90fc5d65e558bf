"""The resume-after-kill check every training stage's tests share: run a stage in a child
process, SIGKILL it once a given checkpoint is complete, and compare published weights."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.modeling import preference_logprobs
from rlhf.tracking import Tracker


def kill_after_checkpoint(script: str, args: list[str], checkpoints: Path, step: int) -> None:
    """Run ``python -c script *args`` and SIGKILL it as soon as ``step``'s checkpoint has its
    ``meta.json`` (written last, so the checkpoint is complete). Fails if the run ends first."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args])
    marker = checkpoints / f"step-{step:08d}" / "meta.json"
    deadline = time.time() + 180
    try:
        while not marker.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, f"no checkpoint {marker} within 180 s"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def assert_same_weights(a: Path, b: Path) -> None:
    """The two published model folders hold the same tensors (up to float32 noise)."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def assert_resumes_with_cached_reference(
    script: str,
    config_json: str,
    inputs: list[str],
    run: Callable[[str, Tracker], object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For the stages that cache reference log-probs (DPO, the log_ratio reward model): run
    ``script`` with ``config_json, *inputs, <out>``, kill it after step 4's checkpoint, then
    ``run(out, tracker)`` again. It must resume there without recomputing the reference
    log-probs, and publish the same weights as ``run`` never killed."""
    out = tmp_path / "killed" / "model"
    kill_after_checkpoint(
        script, [config_json, *inputs, str(out)], tmp_path / "killed" / "model.checkpoints", 4
    )
    assert not out.exists()

    def no_recompute(*args: object) -> None:
        raise AssertionError("the cached reference log-probs should have been reused")

    tracker = Tracker()
    with monkeypatch.context() as m:
        m.setattr(preference_logprobs, "reference_logprobs", no_recompute)
        run(str(out), tracker)
    assert int(tracker.tags["resumed_from_step"]) >= 4
    clean = tmp_path / "clean" / "model"
    run(str(clean), Tracker())
    assert_same_weights(out, clean)
