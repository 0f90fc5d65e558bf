"""The deploy stage: the policy a run published, served as a KServe InferenceService.

``run(config, inputs, outputs, tracker)`` like every stage (``rlhf deploy``, the ``deploy``
component): the InferenceService's manifest (``inferenceservice.py``) from the config and the
predictor the cluster config sizes, then the roll-out (``rollout.py``): create or update, wait
for ``Ready``, one smoke request, rollback to the previous spec on a failure. It lives beside
the TrainJob code rather than in ``stages/``: it trains nothing and talks to the cluster.

In the pipelines it is an optional last step (``deploy_enabled``) that runs only when the
evaluation's champion gate promoted the candidate, serving ``<publish_to>/<run>/policy``.
"""

from __future__ import annotations

import logging
import time

import yaml

from rlhf import storage
from rlhf.config import DeployConfig, flat_dict
from rlhf.pipeline import cluster
from rlhf.pipeline.inferenceservice import Predictor, inferenceservice_manifest
from rlhf.pipeline.kube_api import kubernetes_api
from rlhf.pipeline.rollout import SmokeRequest, roll_out
from rlhf.stages.specs import DeployInputs, DeployOutputs
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.deploy")

POLL_SECONDS = 5.0  # longest wait between two looks at the InferenceService (a watch wakes it)


def predictor_for(config: DeployConfig) -> Predictor:
    """The predictor the compiled pipeline put on this pod, else the cluster config's
    (``config.cluster_config``, or the defaults)."""
    compiled = Predictor.from_env()
    if compiled is not None:
        return compiled
    return cluster.predictor(cluster.load_cluster_config(config.cluster_config or None))


def run(
    config: DeployConfig,
    inputs: DeployInputs,
    outputs: DeployOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    tracker = tracker or Tracker()
    if not config.storage_uri:
        raise ValueError(
            "deploy: storage_uri: required: the policy's published folder (s3://...); a "
            "pipeline sets it from publish_to, so set the pipeline's publish_to"
        )
    predictor = predictor_for(config)
    api_client, namespace = kubernetes_api()
    manifest = inferenceservice_manifest(
        name=config.name, namespace=config.namespace or namespace,
        storage_uri=config.storage_uri, predictor=predictor,
        run_id=tracker.pipeline_run or "", runtime=config.runtime, args=config.server_args,
        min_replicas=config.min_replicas, max_replicas=config.max_replicas,
    )  # fmt: skip
    tracker.log_params({f"deploy.{k}": v for k, v in flat_dict(config).items()})
    smoke = None
    if config.smoke_request:
        smoke = SmokeRequest(prompt=config.smoke_prompt, max_tokens=config.smoke_max_tokens,
                             path=config.smoke_path, url=config.smoke_url)  # fmt: skip
    started = time.monotonic()
    result = roll_out(manifest, api_client, config.ready_timeout_seconds, smoke,
                      log=lambda line: log.info("%s", line), poll_seconds=POLL_SECONDS)  # fmt: skip
    storage.atomic_write_text(outputs.service, yaml.safe_dump(manifest, sort_keys=False))
    tracker.set_tags({"rlhf.deploy.service": f"{result.namespace}/{result.name}",
                      "rlhf.deploy.storage_uri": config.storage_uri})  # fmt: skip
    log.info("deploy: %s/%s serves %s%s", result.namespace, result.name, config.storage_uri,
             f" at {result.url}" if result.url else "")  # fmt: skip
    return {
        "ready_seconds": result.ready_seconds,
        "smoke_seconds": result.smoke_seconds,
        "created": float(result.created),
        "total_seconds": time.monotonic() - started,
    }
