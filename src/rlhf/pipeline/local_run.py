"""Run a pipeline on this machine with ``kfp.local`` (no cluster, no Docker).

``SubprocessRunner(use_venv=False)`` runs each lightweight component in a subprocess of this
interpreter, so the tasks use the installed ``rlhf`` package; artifacts land under
``output_root/<pipeline>-<timestamp>/<task>/<output>``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import tracking
from rlhf.console.kfp_output import local_run_console
from rlhf.console.stage_report import StageRecord
from rlhf.pipeline.cluster import LOCAL, build
from rlhf.pipeline.pipelines import PIPELINE_NAME, get_pipeline
from rlhf.pipeline.run_config import pipeline_parameters
from rlhf.storage import is_s3


@dataclass
class LocalRun:
    pipeline_run: str  # the key grouping this run's MLflow runs
    run_dir: Path  # where the task outputs are
    mlflow_parent_run_id: str | None
    experiment: str
    stages: list[StageRecord]  # in the order they finished, with their time and metrics
    seconds: float  # wall time of the whole run


class PipelineFailed(RuntimeError):
    """A task of a local pipeline run failed; its log (printed above) says why."""


def _given_model(model: str) -> str:
    """The collect pipeline's given model as its importer needs it: a local folder made
    absolute (the tasks' working directory may differ), checked before anything runs."""
    if is_s3(model):
        return model
    folder = Path(model).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"pipeline.model: {model!r} is not a model folder (no such directory)")
    return str(folder)


def run_local(
    config: dict[str, Any],
    output_root: str | Path,
    pipeline: str = PIPELINE_NAME,
    verbose: bool = False,
) -> LocalRun:
    """Run ``pipeline`` with kfp.local. Its tasks print their start and summary lines and
    progress; kfp's own output (the executor input JSON, per-task banners) only when
    ``verbose`` (``rlhf.console.kfp_output``)."""
    from kfp import local

    output_root = Path(output_root).resolve()
    output_root.mkdir(parents=True, exist_ok=True)
    # Tasks run in subprocesses: give them an absolute tracking URI so they all write to
    # the same store whatever their working directory.
    os.environ["MLFLOW_TRACKING_URI"] = tracking.absolute_tracking_uri()

    fn = get_pipeline(pipeline)
    args = pipeline_parameters(config, pipeline)
    if args.get("model"):
        args["model"] = _given_model(args["model"])
    pipeline_run = args.pop("pipeline_run", None) or f"local-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment = args.get("mlflow_experiment", "rlhf")
    track = args.get("track", True)
    before = set(output_root.iterdir())
    started = time.time()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_root))
    try:
        with local_run_console(verbose) as console:
            # Cluster settings (retries with backoff, timeouts, Secrets) are for pods, not here.
            build(fn, LOCAL)(**args, pipeline_run=pipeline_run)
    except RuntimeError as e:
        if track:
            tracking.finish_pipeline_run(
                tracking.start_pipeline_run(pipeline_run, experiment), failed=True
            )
        raise PipelineFailed(str(e)) from None
    new = sorted(set(output_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    parent = None
    if track:
        parent = tracking.start_pipeline_run(pipeline_run, experiment)
        tracking.finish_pipeline_run(parent)
    return LocalRun(
        pipeline_run, new[-1] if new else output_root, parent, experiment, console.records,
        time.time() - started,
    )  # fmt: skip
