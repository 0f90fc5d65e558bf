"""One stage run as every entry point runs it (``rlhf <stage>``, a KFP component, each rank of a
launch): rank 0 between the stage's start and summary lines and inside its MLflow run; any
other rank of a ``torchrun`` launch trains its share quietly, untracked."""

from __future__ import annotations

from typing import Any

from rlhf import tracking
from rlhf.console.stage_report import reporting
from rlhf.stages.specs import StageSpec
from rlhf.training import distributed


def run_tracked(
    spec: StageSpec,
    config: Any,
    inputs: Any,
    outputs: Any,
    pipeline_run: str | None,
    experiment: str,
    track: bool,
    tags: dict[str, str] | None = None,
) -> dict[str, float]:
    """Run ``spec``'s stage; its metrics (on ranks other than 0: that rank's own, which nobody
    reports). ``tags`` are set on the stage's MLflow run."""
    run = spec.load_run()
    if not distributed.is_main_process():
        metrics = run(config, inputs, outputs, tracking.Tracker())
    else:
        with (
            reporting(spec.name, spec.help, spec.summary) as record,
            tracking.stage_run(spec.name, pipeline_run, experiment, track) as tracker,
        ):
            if tags:
                tracker.set_tags(tags)
            record.metrics = run(config, inputs, outputs, tracker)
        metrics = record.metrics
    distributed.leave_at_exit()  # the group the stage joined (DeepSpeed, torchrun)
    return metrics
