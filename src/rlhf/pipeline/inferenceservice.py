"""The champion policy as a KServe ``InferenceService`` (``serving.kserve.io/v1beta1``): what
its predictor asks of the cluster (:class:`Predictor`, from the cluster config's ``deploy``
stage) and its manifest (:func:`inferenceservice_manifest`, a pure function).

The predictor runs KServe's Hugging Face serving runtime (``modelFormat: huggingface``): a
published policy folder is a plain Hugging Face folder (config, weights, tokenizer), which that
runtime loads as it is, with vLLM on a GPU (the standard transformers backend otherwise) and
OpenAI-compatible endpoints (``/openai/v1/completions``). KServe's storage initializer
downloads ``storageUri`` before the server starts, with the S3 credentials of the predictor's
ServiceAccount (a Secret annotated ``serving.kserve.io/s3-*``): the manifest names the
ServiceAccount, never a credential (docs/serving.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlhf.pipeline.kube_api import QUANTITY_RE
from rlhf.pipeline.pod_env import PREDICTOR_ENV

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
RESOURCE = (GROUP, VERSION, PLURAL)
RUN_LABEL = "rlhf/run"
MODEL_FORMAT = "huggingface"
# Storage schemes KServe's storage initializer downloads from.
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hf://", "https://", "http://")
# KServe names the predictor's Knative service <name>-predictor and its host
# <name>-predictor.<namespace>.<domain>; a DNS label of 63 characters leaves about 45 for the name.
MAX_NAME = 45
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}


class InferenceServiceSpecError(ValueError):
    """An InferenceService manifest the cluster would refuse; the message names the field."""


@dataclasses.dataclass
class Predictor:
    """The predictor's pod: the cluster config's ``deploy`` stage (``cluster.predictor``), fixed
    when the pipeline is compiled and carried to the deploy task in ``RLHF_PREDICTOR``."""

    # The ServiceAccount whose Secret gives KServe's storage initializer the S3 credentials;
    # "" for none (a public bucket, or credentials from the node's IAM role).
    service_account: str = ""
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls) -> Predictor | None:
        """The predictor the cluster config put on this task's pod, or None (not compiled)."""
        text = os.environ.get(PREDICTOR_ENV)
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{PREDICTOR_ENV}: not a predictor ({e}); recompile the pipeline "
                             "with this version of rlhf") from None  # fmt: skip


def inferenceservice_manifest(
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    predictor: Predictor,
    run_id: str = "",
    runtime: str = "",
    args: Sequence[str] = (),
    min_replicas: int = 1,
    max_replicas: int = 1,
) -> dict[str, Any]:
    """The InferenceService serving the policy folder at ``storage_uri`` as model ``name``.

    ``runtime`` names a ServingRuntime ("" lets KServe pick one supporting huggingface);
    ``args`` are extra arguments of the model server (``--max_model_len=2048``); the server
    always gets ``--model_name=<name>``, the model name its OpenAI endpoints answer to.
    ``run_id`` labels it with the pipeline run whose policy it serves.
    """
    what = f"InferenceService {name!r}"
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise InferenceServiceSpecError(
            f"{what}: metadata.name must be a DNS label of at most {MAX_NAME} characters "
            f"(lower-case letters, digits, '-'; a letter first), got {name!r}"
        )
    if not namespace:
        raise InferenceServiceSpecError(f"{what}: metadata.namespace: required")
    if not isinstance(storage_uri, str) or not storage_uri.startswith(STORAGE_SCHEMES):
        raise InferenceServiceSpecError(
            f"{what}: spec.predictor.model.storageUri must start with one of "
            f"{', '.join(STORAGE_SCHEMES)} (the policy's published folder), got {storage_uri!r}"
        )
    for field, value, minimum in (
        ("spec.predictor.minReplicas", min_replicas, 0),
        ("spec.predictor.maxReplicas", max_replicas, 1),
        (f"spec.predictor.model.resources.limits[{predictor.gpu_resource}]", predictor.gpus, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InferenceServiceSpecError(
                f"{what}: {field} must be an integer of at least {minimum}, got {value!r}"
            )
    if max_replicas < min_replicas:
        raise InferenceServiceSpecError(
            f"{what}: spec.predictor.maxReplicas ({max_replicas}) is below minReplicas "
            f"({min_replicas})"
        )
    if not all(isinstance(a, str) for a in args):
        raise InferenceServiceSpecError(f"{what}: model server args must be strings: {args!r}")
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "storageUri": storage_uri,
        "args": [f"--model_name={name}", *args],
    }
    if runtime:
        model["runtime"] = runtime
    resources = _resources(predictor, what)
    if resources:
        model["resources"] = resources
    spec: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if predictor.service_account:
        spec["serviceAccountName"] = predictor.service_account
    if predictor.node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in predictor.node_selector.items()}
    if predictor.tolerations:
        spec["tolerations"] = [_toleration(t, i, what) for i, t in enumerate(predictor.tolerations)]
    if predictor.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in predictor.image_pull_secrets]
    spec["model"] = model
    labels = {
        "app.kubernetes.io/name": "rlhf",
        "app.kubernetes.io/component": "serving",
        "app.kubernetes.io/part-of": "rlhf",
        "app.kubernetes.io/managed-by": "rlhf-pipeline",
    }
    if run_id:
        labels[RUN_LABEL] = re.sub(r"[^A-Za-z0-9._-]", "-", run_id)[:63].strip("-_.")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"predictor": spec},
    }


def _quantity(value: str, field: str, what: str) -> str:
    if not isinstance(value, str) or not QUANTITY_RE.match(value):
        raise InferenceServiceSpecError(
            f"{what}: {field}: not a Kubernetes quantity (like 8, 500m, 24Gi): {value!r}"
        )
    return value


def _resources(p: Predictor, what: str) -> dict[str, dict[str, str]]:
    base = "spec.predictor.model.resources"
    requests = {k: _quantity(v, f"{base}.requests.{k}", what)
                for k, v in (("cpu", p.cpu_request), ("memory", p.memory_request)) if v}  # fmt: skip
    limits = {k: _quantity(v, f"{base}.limits.{k}", what)
              for k, v in (("cpu", p.cpu_limit), ("memory", p.memory_limit)) if v}  # fmt: skip
    if p.gpus:  # an extended resource's request must equal its limit
        requests[p.gpu_resource] = limits[p.gpu_resource] = str(p.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _toleration(toleration: Mapping[str, Any], index: int, what: str) -> dict[str, Any]:
    out = {("tolerationSeconds" if k == "toleration_seconds" else k): v
           for k, v in toleration.items() if v not in (None, "")}  # fmt: skip
    unknown = set(out) - TOLERATION_FIELDS
    if unknown:
        raise InferenceServiceSpecError(
            f"{what}: spec.predictor.tolerations[{index}]: unknown fields {sorted(unknown)}; "
            f"allowed: {sorted(TOLERATION_FIELDS)}"
        )
    return out
