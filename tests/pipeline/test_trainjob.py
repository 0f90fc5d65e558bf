"""A multi-node stage's TrainJob: its manifest, checked against the Trainer API's models, and its
lifecycle through the real ``kubernetes`` client against a Kubernetes API server started here
(created, followed with its log, complete, failed, timed out, cancelled, retried)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from k8s_api_server import K8sApiServer
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
from kubernetes import client

import rlhf
from rlhf.pipeline.trainjob import (
    MAX_NAME,
    SPEC_DIGEST,
    EnvRef,
    TrainJobError,
    TrainJobFailed,
    TrainJobSpecError,
    TrainJobTimeout,
    run_trainjob,
    trainjob_manifest,
    trainjob_name,
)

SRC = str(Path(rlhf.__file__).resolve().parents[1])  # this checkout's sources, for subprocesses
RUN = "3f2a9c1e-8b7d-4e2f-9a1b-0c5d6e7f8a9b"  # a KFP run id
NS = "team-a"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _manifest(**overrides):
    """A PPO stage on 2 nodes x 8 GPUs, with every pod setting the cluster config has."""
    args = dict(
        run_id=RUN, stage="ppo", namespace=NS, runtime="torch-distributed",
        image="ghcr.io/rlhf-project/rlhf:0.1.0-cuda",
        command=["torchrun", "-m", "rlhf.cli", "stage", "ppo", "--config", "/tmp/ppo.yaml"],
        num_nodes=2, gpus_per_node=8, cpu_request="32", cpu_limit="64",
        memory_request="256Gi", memory_limit="512Gi",
        env={
            "MLFLOW_EXPERIMENT_NAME": "nightly",
            "AWS_ACCESS_KEY_ID": EnvRef("secret", "rlhf-s3", "AWS_ACCESS_KEY_ID"),
            "MLFLOW_TRACKING_PASSWORD": EnvRef("secret", "rlhf-mlflow", "MLFLOW_TRACKING_PASSWORD",
                                               optional=True),
            "AWS_ENDPOINT_URL": EnvRef("configMap", "rlhf-endpoints", "AWS_ENDPOINT_URL"),
        },
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{**GPU_TOLERATION, "toleration_seconds": None}],
        shm_size="64Gi", service_account="rlhf-trainer",
    )  # fmt: skip
    return trainjob_manifest(**{**args, **overrides})


@pytest.fixture
def k8s():
    with K8sApiServer() as server:
        yield server


def _api(server):
    return client.ApiClient(client.Configuration(host=server.url))


def _run(server, manifest, timeout=20.0):
    lines: list[str] = []
    try:
        run_trainjob(manifest, _api(server), timeout, log=lines.append, poll_seconds=0.05)
    finally:
        print("\n".join(lines))  # shown by pytest when a test fails
    return lines


# -- the manifest -------------------------------------------------------------------------------


def test_two_nodes_of_eight_gpus_is_a_valid_trainjob():
    m = _manifest()
    name = m["metadata"]["name"]
    assert name == trainjob_name(RUN, "ppo") and name.startswith("rlhf-ppo-")
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["namespace"] == NS
    assert m["metadata"]["labels"]["rlhf/stage"] == "ppo"
    assert m["metadata"]["labels"]["rlhf/run"] == RUN
    assert m["metadata"]["labels"]["app.kubernetes.io/component"] == "ppo"
    assert m["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                       "kind": "ClusterTrainingRuntime", "name": "torch-distributed"}  # fmt: skip
    trainer = m["spec"]["trainer"]
    assert trainer["numNodes"] == 2
    assert trainer["image"] == "ghcr.io/rlhf-project/rlhf:0.1.0-cuda"
    assert trainer["command"][:3] == ["torchrun", "-m", "rlhf.cli"]
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
        "limits": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
    }
    assert trainer["env"] == [
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": "nightly"},
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "rlhf-s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "MLFLOW_TRACKING_PASSWORD",
         "valueFrom": {"secretKeyRef": {"name": "rlhf-mlflow", "key": "MLFLOW_TRACKING_PASSWORD",
                                        "optional": True}}},
        {"name": "AWS_ENDPOINT_URL",
         "valueFrom": {"configMapKeyRef": {"name": "rlhf-endpoints", "key": "AWS_ENDPOINT_URL"}}},
    ]  # fmt: skip
    (patch,) = m["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["rlhf/stage"] == "ppo"
    assert pod["spec"] == {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [GPU_TOLERATION],
        "serviceAccountName": "rlhf-trainer",
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}],
        "containers": [{"name": "node",
                        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
    }  # fmt: skip
    # The Trainer API's own models read it back field for field.
    model = TrainerV1alpha1TrainJob.from_dict(m)
    assert model.spec.trainer.num_nodes == 2
    back = model.to_dict()
    assert back["spec"]["trainer"]["resourcesPerNode"] == trainer["resourcesPerNode"]
    assert back["spec"]["runtimePatches"][0]["manager"] == patch["manager"]


def test_no_shm_no_gpus_no_pod_settings():
    m = trainjob_manifest(run_id="r1", stage="sft", namespace="n", runtime="torch-distributed",
                          image="img", command=["python", "-m", "x"], num_nodes=1)  # fmt: skip
    assert m["spec"]["trainer"] == {"image": "img", "command": ["python", "-m", "x"],
                                    "numNodes": 1, "resourcesPerNode": {}}  # fmt: skip
    pod = m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]  # fmt: skip
    assert pod["spec"] == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_nodes": 0}, r"spec\.trainer\.numNodes: must be an integer of at least 1, got 0"),
        ({"gpus_per_node": -1}, r"resourcesPerNode\.limits\[nvidia\.com/gpu\]: .* got -1"),
        ({"memory_limit": "512 GB"}, r"resourcesPerNode\.limits\.memory: not a Kubernetes quan"),
        ({"shm_size": "lots"}, r"emptyDir\.sizeLimit: not a Kubernetes quantity"),
        ({"command": []}, r"spec\.trainer\.command: a non-empty list"),
        ({"runtime": ""}, r"spec\.runtimeRef\.name: required"),
        ({"tolerations": [{"key": "a", "effekt": "NoSchedule"}]}, r"tolerations\[0\]: .*effekt"),
        # Caught by the Trainer API's models: the path of the field, and what it should be.
        ({"node_selector": {"zone": 5}},
         r"spec\.runtimePatches\.0\..*\.nodeSelector\.zone: Input should be a valid string"),
        ({"service_account": ["sa"]}, r"serviceAccountName: Input should be a valid string"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_the_field(overrides, message):
    with pytest.raises(TrainJobSpecError, match=message):
        _manifest(**overrides)


def test_names_are_dns_labels_and_stable():
    assert trainjob_name("run-7", "sft") == "rlhf-sft-run-7"
    assert trainjob_name("Run_7", "Reward Model") == "rlhf-reward-model-run-7"
    long = trainjob_name(RUN, "preference-optimisation")
    assert len(long) <= MAX_NAME and long.startswith("rlhf-preference-")
    assert long == trainjob_name(RUN, "preference-optimisation")  # a retry finds it
    assert long != trainjob_name(RUN.replace("3f", "4f"), "preference-optimisation")
    assert trainjob_name(RUN, "sft") != trainjob_name(RUN, "dpo")
    with pytest.raises(TrainJobSpecError, match="run id and stage are required"):
        trainjob_name("", "sft")


# -- the lifecycle ------------------------------------------------------------------------------


def test_created_followed_and_complete_with_node0_log(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",), ("log", "step 1 loss 2.31"), ("sleep", 0.3),
                            ("log", "step 2 loss 2.05"), ("log", "rank 1 says hi", 1),
                            ("sleep", 0.3), ("complete",)])  # fmt: skip
    lines = _run(k8s, m)

    (create,) = k8s.state.sent("POST", "/trainjobs")
    assert create.path == f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
    assert create.body == m  # sent as built: spec, labels, digest
    pod0 = next(line for line in lines if "step 1" in line).split("]")[0] + "]"
    assert pod0.startswith(f"[{name}-node-0-0-")
    assert f"{pod0} step 1 loss 2.31" in lines and f"{pod0} step 2 loss 2.05" in lines
    assert not any("rank 1 says hi" in line for line in lines)  # node 0's log only
    assert any("Complete=True JobSetCompleted" in line for line in lines)
    assert lines[-1].endswith(f"TrainJob {NS}/{name}: complete")
    assert not k8s.state.sent("DELETE")  # a finished TrainJob is kept (its status, its logs)
    watches = [r for r in k8s.state.sent("GET", "/trainjobs") if r.query.get("watch") == "True"]
    assert watches and watches[0].query["fieldSelector"] == f"metadata.name={name}"
    log_calls = k8s.state.sent("GET", "/log")
    assert log_calls and log_calls[0].query["follow"] == "True"
    assert log_calls[0].query["container"] == "node"


def test_failed_raises_with_reason_and_the_failed_pods_log(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",), ("log", "step 1"), ("log", "CUDA out of memory", 1),
                            ("failed", "JobSetFailed", "jobset failed: node-0 exit code 1", 1)])  # fmt: skip
    with pytest.raises(TrainJobFailed) as failed:
        _run(k8s, m)
    assert str(failed.value) == (
        f"TrainJob {NS}/{name} failed: JobSetFailed: jobset failed: node-0 exit code 1"
    )
    assert k8s.state.trainjob(NS, name) is not None  # left for `kubectl describe`
    assert not k8s.state.sent("DELETE")
    tail = [r for r in k8s.state.sent("GET", "/log") if "tailLines" in r.query]
    assert tail and tail[0].path.split("/")[-2].startswith(f"{name}-node-0-1-")


def test_failed_tail_is_logged(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",), ("log", "CUDA out of memory", 1),
                            ("failed", "JobSetFailed", "rank 1 died", 1)])  # fmt: skip
    lines: list[str] = []
    with pytest.raises(TrainJobFailed, match="rank 1 died"):
        run_trainjob(m, _api(k8s), 20, log=lines.append, poll_seconds=0.05)
    assert any(line.endswith("] CUDA out of memory") and f"[{name}-node-0-1-" in line
               for line in lines), lines  # fmt: skip


def test_timeout_deletes_the_trainjob(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",), ("log", "step 1")])  # and then it never ends
    start = time.monotonic()
    with pytest.raises(TrainJobTimeout, match=r"not finished after 1\.5 s \(the stage's timeout"):
        _run(k8s, m, timeout=1.5)
    assert time.monotonic() - start < 10
    (delete,) = k8s.state.sent("DELETE")
    assert delete.path.endswith(f"/namespaces/{NS}/trainjobs/{name}")
    assert delete.query.get("propagationPolicy") == "Foreground"  # its pods go first
    assert k8s.state.trainjob(NS, name) is None
    assert not [p for p in k8s.state.pods.values() if name in p.name]


def test_deleted_by_someone_else_is_an_error(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",)])
    api = _api(k8s)

    def delete_soon():
        time.sleep(0.5)
        client.CustomObjectsApi(_api(k8s)).delete_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", name
        )

    threading.Thread(target=delete_soon, daemon=True).start()
    with pytest.raises(TrainJobError, match="deleted while the task followed it"):
        run_trainjob(m, api, 20, log=lambda line: None, poll_seconds=0.05)


def test_an_api_refusal_names_the_trainjob(k8s):
    m = _manifest()
    m["metadata"]["name"] = "Not_A_Label"  # what the CRD's CEL rule refuses
    with pytest.raises(TrainJobError, match=r"TrainJob team-a/Not_A_Label: the API refused it: .*"
                                            r"is invalid: metadata.name"):  # fmt: skip
        run_trainjob(m, _api(k8s), 5, log=lambda line: None, poll_seconds=0.05)


# SIGINT as at a terminal: a shell's background job (a CI runner's `make test &`, say) starts
# with SIGINT ignored, and the child would inherit that.
CHILD = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from kubernetes import client
from rlhf.pipeline.trainjob import run_trainjob
manifest = json.loads(sys.argv[2])
api = client.ApiClient(client.Configuration(host=sys.argv[1]))
run_trainjob(manifest, api, 120, log=lambda line: print(line, flush=True), poll_seconds=0.05)
"""


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, None)])
def test_cancelled_task_deletes_its_trainjob(k8s, signum, exit_code):
    """KFP cancels a run by sending SIGTERM to the task's process; Ctrl-C is SIGINT."""
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.script(name, [("running",), ("log", "step 1")])  # runs until stopped
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, k8s.url, json.dumps(m)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # Once node 0's log is being followed, the task is in its steady state.
        k8s.state.wait_for(lambda: any(r.query.get("follow") == "True"
                                       for r in list(k8s.state.requests)), timeout=60)  # fmt: skip
        time.sleep(0.3)
        child.send_signal(signum)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    print(out)
    assert child.returncode != 0
    if exit_code is not None:
        assert child.returncode == exit_code
    assert k8s.state.trainjob(NS, name) is None
    (delete,) = k8s.state.sent("DELETE")
    assert delete.path.endswith(f"/trainjobs/{name}")
    why = "SIGTERM: the run was cancelled" if signum == signal.SIGTERM else "KeyboardInterrupt"
    assert f"TrainJob {NS}/{name}: deleted (" in out and why in out
    assert "step 1" in out


def test_a_retry_adopts_the_running_trainjob(k8s):
    m = _manifest()
    name = m["metadata"]["name"]
    k8s.state.add(m)  # the earlier attempt's TrainJob, still running
    k8s.state.run(NS, name, [("running",), ("sleep", 0.3), ("log", "resumed at step 900"),
                             ("sleep", 0.2), ("complete",)])  # fmt: skip
    lines = _run(k8s, m)
    assert len(k8s.state.sent("POST")) == 1  # answered 409 AlreadyExists
    assert not k8s.state.sent("DELETE")  # nothing lost: the nodes kept training
    assert any("adopted the one an earlier attempt of this task created" in line
               for line in lines)  # fmt: skip
    assert any(line.endswith("] resumed at step 900") for line in lines)


def test_a_retry_after_completion_returns_at_once(k8s):
    m = _manifest()
    k8s.state.add(m, [{"type": "Complete", "status": "True", "reason": "JobSetCompleted",
                       "message": "jobset completed successfully"}])  # fmt: skip
    lines = _run(k8s, m)
    assert not k8s.state.sent("DELETE") and lines[-1].endswith(": complete")


@pytest.mark.parametrize("earlier", ["failed", "other spec"])
def test_a_retry_replaces_a_failed_or_different_trainjob(k8s, earlier):
    m = _manifest()
    name = m["metadata"]["name"]
    old = json.loads(json.dumps(m))
    conditions = []
    if earlier == "failed":
        conditions = [{"type": "Failed", "status": "True", "reason": "JobSetFailed",
                       "message": "node-0 exit code 137"}]  # fmt: skip
    else:
        old["spec"]["trainer"]["numNodes"] = 4
        old["metadata"]["annotations"][SPEC_DIGEST] = "0123456789abcdef"
    k8s.state.add(old, conditions)
    k8s.state.deletion_seconds = 0.4  # foreground deletion: it stays until its pods are gone
    k8s.state.script(name, [("running",), ("log", "resumed"), ("complete",)])
    lines = _run(k8s, m)

    methods = [r.method for r in k8s.state.requests if r.path.endswith("/trainjobs")
               or r.path.endswith(f"/trainjobs/{name}") and r.method != "GET"]  # fmt: skip
    assert methods == ["POST", "DELETE", "POST"]  # refused, deleted, created once gone
    assert k8s.state.trainjob(NS, name)["spec"]["trainer"]["numNodes"] == 2
    why = (
        "an earlier attempt failed (JobSetFailed: node-0 exit code 137)"
        if earlier == "failed"
        else "made from another spec (digest 0123456789abcdef"
    )
    assert any(why in line and "replacing it" in line for line in lines), lines
    assert any(line.endswith("] resumed") for line in lines)
