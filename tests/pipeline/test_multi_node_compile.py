"""A cluster config with a stage on 8 GPUs of one node and another on 2 nodes of 8 GPUs, compiled:
the first task's pod asks for 8 GPUs and runs 8 ranks, the second task is a small pod that
launches the TrainJob written out for review, and the RBAC that lets it do so is exactly what
its calls need (checked against the calls ``run_trainjob`` makes to a Kubernetes API server
started here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from k8s_api_server import K8sApiServer
from kubernetes import client

from rlhf.pipeline import cluster, k8s_manifests
from rlhf.pipeline.compile import compile_all, compile_trainjobs
from rlhf.pipeline.multi_node import NodeLaunch
from rlhf.pipeline.pod_env import CHECKPOINT_MOUNT, CHECKPOINTS_ENV, PROCESSES_ENV, TRAINJOB_ENV
from rlhf.pipeline.stage_job import torchrun_command
from rlhf.pipeline.trainjob import (
    SPEC_DIGEST,
    TrainJobSpecError,
    TrainJobTimeout,
    run_trainjob,
    spec_digest,
    validate_manifest,
)

DONE_WHEN = {
    "staging": "s3://rlhf-staging/runs",
    "checkpoint_volume": "rlhf-checkpoints",
    "stages": {"sft": {"gpus": 8}, "ppo": {"nodes": 2, "gpus": 8}},
}


def _executors(package: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(package.read_text())
    return spec["deploymentSpec"]["executors"], platform["platforms"]["kubernetes"][
        "deploymentSpec"
    ]["executors"]


def _env(executor: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in executor["container"].get("env", [])}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, cluster.ClusterConfig]:
    out = tmp_path_factory.mktemp("compiled")
    config = cluster.cluster_config_from_dict(json.loads(json.dumps(DONE_WHEN)))
    compile_all(out, config)
    return out, config


def test_eight_gpus_in_one_pod_run_eight_ranks(compiled) -> None:
    out, config = compiled
    executors, platform = _executors(out / "ppo.yaml")
    sft = executors["exec-sft"]["container"]
    accelerator = sft["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "8")
    assert sft["image"] == config.image("cuda")
    env = _env(executors["exec-sft"])
    assert env[PROCESSES_ENV] == "8" and TRAINJOB_ENV not in env
    command = torchrun_command("job.json", int(env[PROCESSES_ENV]))
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert command[-3:] == ["-m", "rlhf.pipeline.stage_job", "job.json"]
    # The checkpoint volume is mounted on the training pod, and the component is told where.
    pvcs = platform["exec-sft"]["pvcMount"]
    assert [(m["mountPath"], m["pvcNameParameter"]["runtimeValue"]["constant"]) for m in pvcs] == [
        (CHECKPOINT_MOUNT, "rlhf-checkpoints")
    ]
    assert env[CHECKPOINTS_ENV] == CHECKPOINT_MOUNT


def test_two_nodes_make_the_task_a_trainjob_launcher(compiled) -> None:
    out, config = compiled
    executors, platform = _executors(out / "ppo.yaml")
    ppo = executors["exec-ppo"]["container"]
    # The task itself: the CPU image, no GPU, not on the GPU nodes; retried like the stage.
    assert ppo["image"] == config.image("cpu")
    assert "accelerator" not in ppo.get("resources", {})
    assert "tolerations" not in platform["exec-ppo"] and "nodeSelector" not in platform["exec-ppo"]
    assert "pvcMount" not in platform["exec-ppo"]
    env = _env(executors["exec-ppo"])
    assert PROCESSES_ENV not in env
    launch = NodeLaunch(**json.loads(env[TRAINJOB_ENV]))
    assert launch == cluster.node_launch(config, "ppo")
    assert (launch.nodes, launch.gpus_per_node, launch.runtime) == (2, 8, "torch-distributed")
    # The stages with one node are unchanged.
    for name in ("prepare", "reward", "evaluate"):
        assert TRAINJOB_ENV not in _env(executors[f"exec-{name}"])


def test_the_trainjob_is_written_for_review_and_valid(compiled) -> None:
    out, config = compiled
    written = sorted(p.name for p in (out / "k8s" / "trainjobs").iterdir())
    assert written == ["ppo-ppo.yaml"]  # only the ppo pipeline has a ppo stage
    text = (out / "k8s" / "trainjobs" / "ppo-ppo.yaml").read_text()
    assert text.startswith("# The TrainJob the ppo task of the ppo pipeline creates")
    assert "&id" not in text  # no YAML anchors: a reviewer reads every field
    manifest = yaml.safe_load(text)
    assert "namespace" not in manifest["metadata"]
    validate_manifest({**manifest, "metadata": {**manifest["metadata"], "namespace": "team-a"}})
    # Exactly what the task builds at run time for that run id.
    built = cluster.node_launch(config, "ppo").manifest(
        run_id=k8s_manifests.RUN_ID_PLACEHOLDER, stage="ppo", namespace="team-a"
    )
    built["metadata"].pop("namespace")
    assert manifest == built
    assert manifest["metadata"]["annotations"][SPEC_DIGEST] == spec_digest(manifest["spec"])
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["image"] == config.image("cuda")
    for side in ("requests", "limits"):
        assert trainer["resourcesPerNode"][side]["nvidia.com/gpu"] == "8"
    assert trainer["command"] == [
        "python3", "-m", "torch.distributed.run", "-m", "rlhf.pipeline.stage_job",
        f"s3://rlhf-staging/runs/{k8s_manifests.RUN_ID_PLACEHOLDER}/ppo/job.json",
    ]  # fmt: skip
    assert manifest["spec"]["runtimeRef"]["name"] == "torch-distributed"
    # Credentials are references to the Secrets, never values.
    env = {e["name"]: e for e in trainer["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "rlhf-s3", "key": "AWS_SECRET_ACCESS_KEY"}},
    }
    assert all("value" not in e for e in trainer["env"])
    pod = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["claim-0"]["persistentVolumeClaim"] == {
        "claimName": "rlhf-checkpoints"
    }
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"/dev/shm", CHECKPOINT_MOUNT}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_on_the_mpi_runtime_the_launcher_runs_mpirun_and_every_pod_gets_the_settings(
    tmp_path,
) -> None:
    data = json.loads(json.dumps(DONE_WHEN))
    data["stages"]["ppo"]["trainjob_runtime"] = "deepspeed-distributed"
    config = cluster.cluster_config_from_dict(data)
    compile_trainjobs(tmp_path, config)
    manifest = yaml.safe_load((tmp_path / "trainjobs" / "ppo-ppo.yaml").read_text())
    validate_manifest({**manifest, "metadata": {**manifest["metadata"], "namespace": "team-a"}})
    built = cluster.node_launch(config, "ppo").manifest(
        run_id=k8s_manifests.RUN_ID_PLACEHOLDER, stage="ppo", namespace="team-a"
    )
    built["metadata"].pop("namespace")
    assert manifest == built
    assert manifest["spec"]["runtimeRef"]["name"] == "deepspeed-distributed"
    trainer = manifest["spec"]["trainer"]
    # 2 hosts (the launcher's pod is one: runLauncherAsNode) of 8 slots each.
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    for side in ("requests", "limits"):
        assert trainer["resourcesPerNode"][side]["nvidia.com/gpu"] == "8"
    # The launcher runs mpirun (through mpi_launch), forwarding the stage's variables to the
    # ranks it starts over SSH; the runtime's user has its home in /home/mpiuser.
    env = {e["name"]: e for e in trainer["env"]}
    assert env["HOME"] == {"name": "HOME", "value": "/home/mpiuser"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "rlhf-s3"
    command = trainer["command"]
    assert command[:5] == ["python3", "-m", "rlhf.pipeline.mpi_launch", "--forward", command[4]]
    assert command[5] == f"s3://rlhf-staging/runs/{k8s_manifests.RUN_ID_PLACEHOLDER}/ppo/job.json"
    assert set(command[4].split(",")) == set(env) - {"HOME"}
    assert "AWS_SECRET_ACCESS_KEY" in command[4].split(",")
    # The launcher and the nodes both run ranks: the same node selector, tolerations, /dev/shm
    # and checkpoint volume on both replicated jobs (their containers are both named node).
    jobs = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ]
    assert [j["name"] for j in jobs] == ["launcher", "node"]
    launcher, node = (j["template"]["spec"]["template"] for j in jobs)
    assert launcher == node
    assert launcher["metadata"]["labels"]["rlhf/stage"] == "ppo"
    pod = launcher["spec"]
    assert pod["containers"][0]["name"] == "node"
    assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} == {
        "/dev/shm", CHECKPOINT_MOUNT,
    }  # fmt: skip
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_the_mpi_runtime_s_own_variables_are_refused() -> None:
    launch = cluster.node_launch(
        cluster.cluster_config_from_dict(json.loads(json.dumps(DONE_WHEN))), "ppo"
    )
    launch.runtime = "deepspeed-distributed"
    launch.env["OMPI_MCA_orte_default_hostfile"] = ["configMap", "mine", "hosts", False]
    with pytest.raises(TrainJobSpecError, match=r"spec.trainer.env: \['OMPI_MCA_orte_default_"):
        launch.manifest(run_id="r", stage="ppo", namespace="ns")


def test_the_rbac_is_valid_and_bound_to_the_pipeline_service_account(compiled) -> None:
    out, _ = compiled
    role, binding = yaml.safe_load_all((out / "k8s" / "trainjob-rbac.yaml").read_text())
    version = kubernetes_validate.latest_version()
    for doc in (role, binding):
        kubernetes_validate.validate(doc, version, strict=True)
    assert role["rules"] == k8s_manifests.TRAINJOB_RULES
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_recompiling_without_multi_node_stages_removes_the_trainjobs(tmp_path) -> None:
    config = cluster.cluster_config_from_dict(json.loads(json.dumps(DONE_WHEN)))
    written = compile_trainjobs(tmp_path, config)
    assert {p.name for p in written} == {"ppo-ppo.yaml", "trainjob-rbac.yaml"}
    assert compile_trainjobs(tmp_path, cluster.ClusterConfig()) == []
    assert not list((tmp_path / "trainjobs").glob("*.yaml"))
    assert not (tmp_path / "trainjob-rbac.yaml").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stages": {"ppo": {"nodes": 2}}}, "staging: stages ['ppo'] run on several nodes"),
        ({"staging": "/mnt/x", "stages": {"ppo": {"nodes": 2}}}, "an s3:// prefix"),
        ({"stages": {"evaluate": {"nodes": 2}}}, "only the training stages run on several"),
        ({"stages": {"sft": {"nodes": 0}}}, "stages.sft: nodes must be >= 1"),
        (
            {"staging": "s3://b/p", "stages": {"sft": {"nodes": 2, "trainjob_runtime": ""}}},
            "needs a trainjob_runtime",
        ),
    ],
)
def test_multi_node_mistakes_are_named(data, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cluster.cluster_config_from_dict(data, where="c.yaml")


# -- least privilege: the Role against the calls the task really makes -------------------------


def _verb(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    """(resource, verb) of one request, as the API server's authorizer names it."""
    resource = "trainjobs" if "/trainjobs" in path else "pods"
    if path.endswith("/log"):
        return "pods/log", "get"
    named = re.search(r"/(trainjobs|pods)/[^/]+$", path) is not None
    if method == "POST":
        return resource, "create"
    if method == "DELETE":
        return resource, "delete"
    if query.get("watch", "").lower() in ("1", "t", "true"):
        return resource, "watch"
    return resource, "get" if named else "list"


def test_the_role_grants_exactly_the_calls_the_task_makes() -> None:
    granted = {
        (resource, verb)
        for rule in k8s_manifests.TRAINJOB_RULES
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    launch = cluster.node_launch(
        cluster.cluster_config_from_dict(json.loads(json.dumps(DONE_WHEN))), "ppo"
    )
    used = set()
    with K8sApiServer() as server:
        api = client.ApiClient(client.Configuration(host=server.url))
        done = launch.manifest(run_id="run-1", stage="ppo", namespace="ns")
        server.state.script(done["metadata"]["name"], [
            ("running",), ("log", "step 1/2"), ("log", "step 2/2"), ("complete",),
        ])  # fmt: skip
        run_trainjob(done, api, timeout_seconds=20, log=lambda line: None, poll_seconds=0.2)
        slow = launch.manifest(run_id="run-2", stage="ppo", namespace="ns")
        server.state.script(slow["metadata"]["name"], [("running",), ("log", "step 1/2")])
        with pytest.raises(TrainJobTimeout):  # deleted on timeout
            run_trainjob(slow, api, timeout_seconds=1.5, log=lambda line: None, poll_seconds=0.2)
        for r in server.state.requests:
            used.add(_verb(r.method, r.path, r.query))
    assert used == granted
