"""A KFP task whose stage runs on 2 nodes (cluster config ``nodes: 2``), end to end on this
machine: the component stages its input artifact in S3 (moto's server), creates the TrainJob
through the real ``kubernetes`` client against a Kubernetes API server started here, whose
"nodes" are two real ``torchrun`` agents (one process each, gloo, ZeRO-3, each with its own
download cache and temporary space, as two machines would be) running the job file from S3 with
the rendezvous variables Kubeflow Trainer sets; rank 0 publishes the model, and the task copies
it into its output artifact. The weights match the same stage in one process. A TrainJob that
fails fails the task with its reason. With the cluster config's checkpoint volume, checkpoints
go under the run and the stage, on a training pod and on a TrainJob's nodes alike. On the MPI
runtime (``deepspeed-distributed``) the launcher's command runs as the runtime's launcher pod
runs it: a real ``mpirun`` over the runtime's hostfile (this machine, 2 slots) starting the 2
ranks, whose output is the launcher pod's log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from servers import free_port

import rlhf
from rlhf.pipeline import component_runner, multi_node
from rlhf.pipeline.multi_node import NodeLaunch
from rlhf.pipeline.pod_env import CHECKPOINT_MOUNT, CHECKPOINTS_ENV, TRAINJOB_ENV
from rlhf.pipeline.trainjob import TrainJobFailed
from rlhf.storage import s3 as s3_storage

# The Kubernetes API server stand-in, the component's arguments and the weight comparison live
# beside their own tests.
for folder in ("pipeline", "distributed"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
from component_task import Metrics, sft_task  # noqa: E402
from k8s_api_server import K8sApiServer  # noqa: E402
from launch import assert_same_weights  # noqa: E402

SRC = str(Path(rlhf.__file__).resolve().parents[1])
RUN = "run-7f3a"
NAMESPACE = "team-a"


def _nodes(root: Path):
    """The TrainJob's nodes: one ``torchrun`` agent per node with the ``PET_*`` variables the
    Trainer's torch runtime sets, the manifest's command and plain env values; node 0's output
    becomes its pod's log."""

    def run(trainjob: dict) -> list[tuple]:
        trainer = trainjob["spec"]["trainer"]
        nodes, per_node = trainer["numNodes"], trainer["numProcPerNode"]
        port = free_port()
        agents = []
        for node in range(nodes):
            home = root / f"node{node}"
            (home / "tmp").mkdir(parents=True, exist_ok=True)
            command = [sys.executable, *trainer["command"][1:]]
            env = {
                **os.environ,
                **{e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e},
                "PET_NNODES": str(nodes), "PET_NODE_RANK": str(node),
                "PET_NPROC_PER_NODE": str(per_node), "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port), "RLHF_CACHE_DIR": str(home / "cache"),
                "TMPDIR": str(home / "tmp"), "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
            }  # fmt: skip
            env.pop(TRAINJOB_ENV, None)
            agents.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True))  # fmt: skip
        logs = [agent.communicate(timeout=300)[0] for agent in agents]
        steps = [("log", line, 0) for line in logs[0].splitlines()]
        for node, agent in enumerate(agents):
            if agent.returncode:
                tail = logs[node].strip().splitlines()[-1:] or [""]
                return [*steps, ("failed", "NodeFailed", f"node {node}: {tail[0]}", node)]
        return [*steps, ("complete",)]

    return run


def _mpi_launcher(root: Path):
    """The TrainJob's launcher pod under the MPI runtime: its command (``mpi_launch``, which
    runs ``mpirun``) with the hostfile the runtime mounts (here one host with a slot per node:
    SSH into other pods is what a cluster adds) and the plain env values; its output is the
    launcher pod's log (host 0)."""

    def run(trainjob: dict) -> list[tuple]:
        trainer = trainjob["spec"]["trainer"]
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        hostfile = root / "hostfile"
        hostfile.write_text(f"localhost slots={trainer['numNodes'] * trainer['numProcPerNode']}\n")
        env = {
            **os.environ,
            **{e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e},
            # This machine's HOME, not the runtime user's: DeepSpeed's compiled ops are cached there.
            "OMPI_MCA_orte_default_hostfile": str(hostfile), "HOME": os.environ["HOME"],
            "RLHF_CACHE_DIR": str(root / "cache"), "TMPDIR": str(root / "tmp"),
            "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "MASTER_PORT": str(free_port()),  # not 29500: other runs on this machine
        }  # fmt: skip
        env.pop(TRAINJOB_ENV, None)
        command = [sys.executable, *trainer["command"][1:]]
        launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        try:
            log = launcher.communicate(timeout=600)[0]
        except subprocess.TimeoutExpired:
            launcher.terminate()  # mpirun ends its ranks on SIGTERM (a SIGKILL would orphan them)
            log = launcher.communicate()[0] + "\nthe launcher timed out"
        steps = [("log", line, 0) for line in log.splitlines()]
        if launcher.returncode:
            tail = log.strip().splitlines()[-1:] or [""]
            return [*steps, ("failed", "LauncherFailed", tail[0], 0)]
        return [*steps, ("complete",)]

    return run


@pytest.fixture
def cluster(bucket, tmp_path, monkeypatch):
    """A Kubernetes API server the task reaches through a kubeconfig, and the launch the
    cluster config would put on the task's pod."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(multi_node, "POLL_SECONDS", 0.2)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    launch = NodeLaunch(runtime="torch-distributed", image="rlhf:test", nodes=2, gpus_per_node=0,
                        staging=f"s3://{bucket}/staging",
                        env={"AWS_SECRET_ACCESS_KEY": ["secret", "rlhf-s3",
                                                       "AWS_SECRET_ACCESS_KEY", False]})  # fmt: skip
    monkeypatch.setenv(TRAINJOB_ENV, launch.to_json())
    with K8sApiServer() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server.url}}],
            "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                      "namespace": NAMESPACE}}],
        }))  # fmt: skip
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield server, launch


@pytest.mark.distributed  # two torchrun agents (or mpirun) and a reference run
@pytest.mark.parametrize("runtime", ["torch-distributed", "deepspeed-distributed"])
def test_a_two_node_stage_runs_as_a_trainjob(
    runtime, cluster, prepared, tmp_path, monkeypatch, capfd
):
    server, launch = cluster
    if runtime != launch.runtime:
        if shutil.which("mpirun") is None:
            pytest.skip("no mpirun (make installs Debian's openmpi-bin)")
        launch.runtime = runtime
        monkeypatch.setenv(TRAINJOB_ENV, launch.to_json())
    pods = _nodes(tmp_path / "nodes") if runtime == "torch-distributed" else _mpi_launcher(
        tmp_path / "launcher"
    )  # fmt: skip
    name = launch.manifest(run_id=RUN, stage="sft", namespace=NAMESPACE)["metadata"]["name"]
    server.state.script(name, [("running",), ("call", pods)])
    two = Metrics()
    component_runner.run_component(
        "sft", sft_task(prepared["sft"], str(tmp_path / "two"), two, RUN)
    )
    # Node 0's (the launcher's) log in the task's log: a world of 2 ranks; rank 0 reports.
    log = capfd.readouterr().err
    pod = "node-0-0" if runtime == "torch-distributed" else "launcher-0-0"
    assert re.search(rf"\[rlhf-sft-run-7f3a-{pod}-\w+\] .*rank 0 of 2", log)
    assert re.search(rf"\[rlhf-sft-run-7f3a-{pod}-\w+\] <== sft done", log)
    if runtime == "deepspeed-distributed":  # mpirun printed both ranks' lines there
        assert re.search(rf"\[rlhf-sft-run-7f3a-{pod}-\w+\] .*rank 1 of 2", log)
        assert re.search(rf"\[rlhf-sft-run-7f3a-{pod}-\w+\] .*mpi launch: mpirun", log)
    created = server.state.trainjob(NAMESPACE, name)
    assert created["spec"]["trainer"]["numNodes"] == 2
    job_uri = created["spec"]["trainer"]["command"][-1]
    assert created["spec"]["runtimeRef"]["name"] == runtime
    assert job_uri == f"{launch.staging}/{RUN}/sft/job.json"
    job = json.loads(s3_storage.download(job_uri).read_text())
    assert job["inputs"]["data"] == f"{launch.staging}/{RUN}/sft/inputs/data"
    assert job["outputs"]["model"] == f"{launch.staging}/{RUN}/sft/outputs/model"
    assert "checkpoint_dir" not in job["config"] or not job["config"]["checkpoint_dir"]

    monkeypatch.delenv(TRAINJOB_ENV)
    one = Metrics()
    component_runner.run_component(
        "sft", sft_task(prepared["sft"], str(tmp_path / "one"), one, RUN)
    )
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert two.logged["steps"] == one.logged["steps"] == 3
    assert two.logged["val_loss"] == pytest.approx(one.logged["val_loss"], abs=1e-4)


def test_a_failed_trainjob_fails_the_task_with_its_reason(cluster, prepared, tmp_path, monkeypatch):
    server, launch = cluster
    launch.checkpoint_volume = "rlhf-checkpoints"
    monkeypatch.setenv(TRAINJOB_ENV, launch.to_json())
    manifest = launch.manifest(run_id=RUN, stage="sft", namespace=NAMESPACE)
    server.state.script(manifest["metadata"]["name"], [
        ("running",), ("log", "Traceback (most recent call last):"),
        ("failed", "NodeFailed", "node 1: CUDA out of memory", 1),
    ])  # fmt: skip
    with pytest.raises(TrainJobFailed, match=r"NodeFailed.*node 1: CUDA out of memory"):
        component_runner.run_component(
            "sft", sft_task(prepared["sft"], str(tmp_path / "model"), Metrics(), RUN)
        )
    assert not (tmp_path / "model").exists()
    # The nodes would have checkpointed to the volume, under this run and stage.
    job = json.loads(s3_storage.download(f"{launch.staging}/{RUN}/sft/job.json").read_text())
    assert job["config"]["checkpoint_dir"] == f"{CHECKPOINT_MOUNT}/{RUN}/sft"
    created = server.state.trainjob(NAMESPACE, manifest["metadata"]["name"])
    patch = created["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "claim-0", "persistentVolumeClaim": {"claimName": "rlhf-checkpoints"}}
    ]


def test_a_training_pod_checkpoints_to_the_volume(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(TRAINJOB_ENV, raising=False)
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path / "volume"))
    task = sft_task(prepared["sft"], str(tmp_path / "model"), Metrics(), RUN)
    task["overrides"] = {"max_steps": 2, "eval_every": 0, "checkpoint_every": 1}
    component_runner.run_component("sft", task)
    folder = tmp_path / "volume" / RUN / "sft"
    assert any(folder.iterdir()), "no checkpoint on the volume"
    assert not (tmp_path / "model.checkpoints").exists()
