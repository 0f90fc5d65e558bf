"""Experiment tracking: the small interface stages call, and its MLflow implementation.

A pipeline run is one MLflow *parent* run; each stage is a *nested* run (tag
``mlflow.parentRunId``) so stages in separate processes or pods still group under one parent.
The tracking URI defaults to ``sqlite:///mlflow.db`` in the working directory
(MLflow 3 refuses a plain file store); ``MLFLOW_TRACKING_URI`` overrides it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.redaction import redact

if TYPE_CHECKING:
    from rlhf.registry import ModelRegistry

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "rlhf"
PIPELINE_RUN_TAG = "rlhf.pipeline_run"


class Tracker:
    """What a stage may record. This base class records in memory (tests and dry runs)."""

    run_id: str | None = None  # the MLflow run, when there is one
    pipeline_run: str | None = None  # the pipeline run this stage belongs to, if any

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.artifacts: list[tuple[str, str | None]] = []
        self.tags: dict[str, str] = {}
        self.tables: dict[str, dict[str, list[Any]]] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(local_dir), artifact_path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_table(self, data: Mapping[str, list[Any]], artifact_file: str) -> None:
        """A table (column -> values) shown as a table in the MLflow UI."""
        self.tables[artifact_file] = {k: list(v) for k, v in data.items()}

    def history(self, key: str) -> list[float]:
        """Every logged value of ``key`` in order (for tests)."""
        return [m[key] for _, m in self.metrics if key in m]

    @property
    def registry(self) -> ModelRegistry | None:
        """The model registry of the tracking server; None when nothing is tracked."""
        return None


class MlflowTracker(Tracker):
    """Writes to one MLflow run through ``MlflowClient`` (no global active-run state)."""

    def __init__(self, client: Any, run_id: str, pipeline_run: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id
        self.pipeline_run = pipeline_run

    @property
    def registry(self) -> ModelRegistry:
        from rlhf.registry import ModelRegistry

        return ModelRegistry(self.client, tracking_uri())

    def log_params(self, params: Mapping[str, Any]) -> None:
        super().log_params(params)
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        super().log_artifacts(local_dir, artifact_path)
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        super().set_tags(tags)
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, redact(str(v)))

    def log_table(self, data: Mapping[str, list[Any]], artifact_file: str) -> None:
        super().log_table(data, artifact_file)
        self.client.log_table(self.run_id, data=dict(data), artifact_file=artifact_file)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def absolute_tracking_uri() -> str:
    """:func:`tracking_uri` with a relative sqlite path made absolute (against the working
    directory): what ``rlhf run`` gives its task subprocesses, so all of them, and a person
    later running ``mlflow`` in the same directory, use one store."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    return uri


def _client():
    import mlflow

    # Artifact transfers print tqdm bars per file into the task logs otherwise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def start_pipeline_run(
    pipeline_run: str, experiment: str = DEFAULT_EXPERIMENT, params: Mapping[str, Any] | None = None
) -> str:
    """Find or create the parent run tagged with ``pipeline_run`` and return its id.

    Stages call this with the same key (the KFP run id, or the id ``rlhf run`` made), so the
    first stage creates the parent and the others find it."""
    client = _client()
    exp_id = _experiment_id(client, experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=pipeline_run, tags={PIPELINE_RUN_TAG: pipeline_run})
    if params:
        MlflowTracker(client, run.info.run_id).log_params(params)
    return run.info.run_id


def finish_pipeline_run(run_id: str, failed: bool = False) -> None:
    _client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")


@contextlib.contextmanager
def stage_run(
    stage: str,
    pipeline_run: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    enabled: bool = True,
) -> Iterator[Tracker]:
    """Open a nested MLflow run for one stage (under the parent of ``pipeline_run``, if given).

    With ``enabled=False`` the stage records in memory only. The run ends FAILED if the stage
    raises, FINISHED otherwise."""
    if not enabled:
        tracker = Tracker()
        tracker.pipeline_run = pipeline_run  # what a stage labels its work with
        yield tracker
        return
    client = _client()
    exp_id = _experiment_id(client, experiment)
    tags = {"rlhf.stage": stage}
    if pipeline_run:
        tags["mlflow.parentRunId"] = start_pipeline_run(pipeline_run, experiment)
        tags["rlhf.in_pipeline_run"] = pipeline_run  # not PIPELINE_RUN_TAG: that marks parents
    run = client.create_run(exp_id, run_name=stage, tags=tags)
    tracker = MlflowTracker(client, run.info.run_id, pipeline_run)
    try:
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def describe_location() -> str:
    """Where a person finds the runs: the server URL, or the sqlite file and the UI command."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :]).resolve()
        return f"{path} (browse with: mlflow ui --backend-store-uri {uri})"
    return redact(uri)
