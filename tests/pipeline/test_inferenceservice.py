"""The deploy stage's InferenceService manifest, checked against KServe's own CRD schema
(tests/data: the v1beta1 openAPIV3Schema of KServe v0.15.2) with the API server's strict field
validation: a field the CRD does not declare is an error, as ``kubectl apply`` reports it."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from kserve_schema import check

from rlhf.pipeline.inferenceservice import (
    InferenceServiceSpecError,
    Predictor,
    inferenceservice_manifest,
)

URI = "s3://rlhf-artifacts/runs/3f2a9c1e/policy"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _predictor(**overrides):
    args = dict(service_account="rlhf-serving", gpus=1, cpu_request="4", cpu_limit="8",
                memory_request="16Gi", memory_limit="32Gi",
                node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
                tolerations=[{**GPU_TOLERATION, "toleration_seconds": None}],
                image_pull_secrets=["registry-creds"])  # fmt: skip
    return Predictor(**{**args, **overrides})


def _manifest(**overrides):
    args = dict(name="rlhf-policy", namespace="team-a", storage_uri=URI, predictor=_predictor(),
                run_id="3f2a9c1e-8b7d", args=["--max_model_len=512"])  # fmt: skip
    return inferenceservice_manifest(**{**args, **overrides})


def test_the_champion_on_one_gpu_is_a_valid_inferenceservice():
    m = _manifest()
    check(m)
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    assert m["metadata"]["name"] == "rlhf-policy" and m["metadata"]["namespace"] == "team-a"
    assert m["metadata"]["labels"]["rlhf/run"] == "3f2a9c1e-8b7d"
    predictor = m["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "rlhf-serving"
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 1
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [GPU_TOLERATION]
    assert predictor["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert predictor["model"] == {
        "modelFormat": {"name": "huggingface"},
        "storageUri": URI,
        "args": ["--model_name=rlhf-policy", "--max_model_len=512"],
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        },
    }


def test_a_cpu_predictor_with_a_named_runtime_and_no_service_account():
    m = _manifest(predictor=Predictor(cpu_request="2", memory_limit="8Gi"), runtime="kserve-hf",
                  run_id="", min_replicas=0, max_replicas=3)  # fmt: skip
    check(m)
    predictor = m["spec"]["predictor"]
    assert "serviceAccountName" not in predictor and "rlhf/run" not in m["metadata"]["labels"]
    assert predictor["model"]["runtime"] == "kserve-hf"
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "8Gi"},
    }
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 3)


def test_no_credential_in_the_manifest(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    text = json.dumps(_manifest())
    for secret in ("AKIAEXAMPLEKEY", "wJalrXUtnFEMI", "AWS_", "secretKeyRef", '"env"'):
        assert secret not in text
    assert '"serviceAccountName": "rlhf-serving"' in text  # the credentials' only reference


@pytest.mark.parametrize(
    "broken, where",
    [
        (lambda m: m["spec"]["predictor"]["model"].update(storageURI=URI), "storageURI"),
        (lambda m: m["spec"]["predictor"].update(minReplicas="1"), "minReplicas"),
        (lambda m: m["spec"]["predictor"]["model"].pop("modelFormat") and
         m["spec"]["predictor"]["model"].update(modelFormat="huggingface"), "modelFormat"),
        (lambda m: m["spec"]["predictor"]["model"]["resources"]["limits"].update(
            {"nvidia.com/gpu": "one"}), "limits"),
        (lambda m: m["spec"]["predictor"]["tolerations"][0].update(tolerationSeconds="60"),
         "tolerationSeconds"),
        (lambda m: m["spec"].update(predictorr=m["spec"].pop("predictor")), "spec"),
    ],
)  # fmt: skip
def test_a_broken_manifest_fails_the_crd_schema(broken, where):
    m = copy.deepcopy(_manifest())
    broken(m)
    with pytest.raises(jsonschema.ValidationError, match=where):
        check(m)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(name="RLHF_policy"), "metadata.name must be a DNS label"),
        (dict(name="p" * 46), "at most 45"),
        (dict(namespace=""), "metadata.namespace: required"),
        (dict(storage_uri=""), "storageUri must start with one of s3://"),
        (dict(storage_uri="/tmp/policy"), "got '/tmp/policy'"),
        (dict(predictor=_predictor(memory_limit="32GB")), "limits.memory: not a Kubernetes"),
        (dict(predictor=_predictor(gpus=-1)), "limits\\[nvidia.com/gpu\\] must be an integer"),
        (dict(predictor=_predictor(tolerations=[{"keys": "x"}])), "unknown fields \\['keys'\\]"),
        (dict(min_replicas=2, max_replicas=1), "maxReplicas \\(1\\) is below minReplicas"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(overrides, message):
    with pytest.raises(InferenceServiceSpecError, match=message):
        _manifest(**overrides)


def test_the_predictor_travels_as_json(monkeypatch):
    predictor = _predictor()
    monkeypatch.setenv("RLHF_PREDICTOR", predictor.to_json())
    assert Predictor.from_env() == predictor
    monkeypatch.setenv("RLHF_PREDICTOR", '{"gpu": 1}')
    with pytest.raises(ValueError, match="RLHF_PREDICTOR: not a predictor.*recompile"):
        Predictor.from_env()
    monkeypatch.delenv("RLHF_PREDICTOR")
    assert Predictor.from_env() is None
