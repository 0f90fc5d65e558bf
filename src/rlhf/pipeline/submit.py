"""Submit a pipeline to a Kubeflow Pipelines cluster through the KFP client.

One path for ``rlhf submit`` (one run) and ``rlhf schedule`` (recurring runs): compile the
pipeline with the cluster config, find the pipeline or create it (empty), upload the package
as its digest-named version (or reuse that version, when one of the same package exists), find
or create the experiment, then create the run.
Parameters come from the same run config as ``rlhf run``; credentials never travel as
parameters (the pods read them from Kubernetes Secrets, see cluster.py).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.pipeline import cluster
from rlhf.pipeline.compile import compile_package, version_name
from rlhf.pipeline.run_config import pipeline_parameters

log = logging.getLogger("rlhf.submit")

TOKEN_ENV = "KF_PIPELINES_TOKEN"  # a bearer token, kept off the command line (ps, history)
FINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "PAUSED")


@dataclass
class Connection:
    """How to reach the KFP API. ``host`` None: ``KF_PIPELINES_ENDPOINT``, else in a pod the
    in-cluster service with the pod's ServiceAccount token, else the kubeconfig's proxy."""

    host: str | None = None
    existing_token: str | None = None
    verify_ssl: bool = True


def connect(conn: Connection) -> Any:
    import kfp

    kwargs: dict[str, Any] = {
        "host": conn.host,
        "existing_token": conn.existing_token or os.environ.get(TOKEN_ENV) or None,
        "verify_ssl": conn.verify_ssl,
    }
    # No ``namespace=`` here: the client also reads it as the namespace of KFP's own service.
    # The profile namespace goes with each call (experiment, upload, listing) instead.
    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": known
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**kwargs)


@dataclass
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str
    reused: bool  # the version existed already


def _name_filter(name: str) -> str:
    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    return json.dumps({"predicates": [predicate]})


def _create_pipeline(client: Any, pipeline: str, namespace: str | None) -> str:
    """Create pipeline ``pipeline`` with no version (KFP's CreatePipeline, ``POST
    /apis/v2beta1/pipelines``); returns its id. ``client.upload_pipeline`` would also create a
    version named like the pipeline holding the package, beside the digest-named one."""
    import kfp_server_api

    # kfp.Client has no method of its own for this call, but it exposes each generated service
    # API under a public attribute: ``client.pipelines`` is PipelineServiceApi on the client's
    # own (authenticated) ApiClient, so no private attribute is needed.
    body = kfp_server_api.V2beta1Pipeline(display_name=pipeline, namespace=namespace or None)
    return client.pipelines.pipeline_service_create_pipeline(body).pipeline_id


def upload(client: Any, pipeline: str, package: Path, namespace: str | None = None) -> Uploaded:
    """Find or create pipeline ``pipeline``, then the version named after the package's
    digest: the same package is never uploaded twice, a changed one becomes a new version.
    A pipeline this creates has that version only (a pipeline left with none, when the
    version's upload failed, gets it on the next call)."""
    text = package.read_text(encoding="utf-8")
    version = version_name(pipeline, text)
    # Looked up in the namespace too: in multi-user KFP a pipeline created in a namespace is
    # private to it and not among the shared ones.
    found_pipelines = client.list_pipelines(filter=_name_filter(pipeline), namespace=namespace)
    matches = [p for p in found_pipelines.pipelines or [] if p.display_name == pipeline]
    pipeline_id = matches[0].pipeline_id if matches else None
    if pipeline_id is None:
        pipeline_id = _create_pipeline(client, pipeline, namespace)
    found = client.list_pipeline_versions(pipeline_id, filter=_name_filter(version))
    for existing in found.pipeline_versions or []:
        if existing.display_name == version:
            return Uploaded(pipeline_id, existing.pipeline_version_id, version, True)
    created_version = client.upload_pipeline_version(
        str(package), pipeline_version_name=version, pipeline_id=pipeline_id
    )
    return Uploaded(pipeline_id, created_version.pipeline_version_id, version, False)


@dataclass
class Prepared:
    """A pipeline uploaded and an experiment ready: what a run or a schedule starts from."""

    uploaded: Uploaded
    experiment_id: str
    parameters: dict[str, Any]


def prepare(
    client: Any,
    pipeline: str,
    config: dict[str, Any],
    cluster_config: cluster.ClusterConfig,
    experiment: str,
    namespace: str | None = None,
    package: str | Path | None = None,
) -> Prepared:
    """Compile (unless ``package`` names a compiled one), upload or reuse, find the experiment."""
    parameters = pipeline_parameters(config, pipeline)  # unset: the compiled defaults
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(package) if package else Path(tmp) / f"{pipeline}.yaml"
        if not package:
            compile_package(pipeline, path, cluster_config)
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such pipeline package")
        uploaded = upload(client, pipeline, path, namespace)
    exp = client.create_experiment(experiment, namespace=namespace or None)
    return Prepared(uploaded, exp.experiment_id, parameters)


def create_run(client: Any, prepared: Prepared, run_name: str, service_account: str = "") -> str:
    run = client.run_pipeline(
        experiment_id=prepared.experiment_id,
        job_name=run_name,
        params=prepared.parameters,
        pipeline_id=prepared.uploaded.pipeline_id,
        version_id=prepared.uploaded.version_id,
        service_account=service_account or None,
    )
    return run.run_id


def wait(client: Any, run_id: str, timeout_s: float, poll_s: float = 30.0) -> str:
    """Poll the run until it ends; returns its final state (SUCCEEDED, FAILED, ...)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        state = (client.get_run(run_id).state or "").upper()
        if state in FINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {state or 'PENDING'} after {timeout_s:.0f} s")
        time.sleep(poll_s)
