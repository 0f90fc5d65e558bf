"""A stage on several nodes: what its KFP task knows about the TrainJob it launches, and the
launch itself.

The cluster config (``nodes: M`` > 1) turns the stage's task into a small CPU pod that carries
a :class:`NodeLaunch` in its environment (``RLHF_TRAINJOB``, JSON, fixed at compile time). At
run time the component (``component_runner.py``) calls :func:`run_on_nodes`, which

1. stages the task's input artifacts under ``<staging>/<run>/<stage>/inputs/<port>`` (an
   ``s3://`` prefix every node can read; a KFP artifact lives in the task's pod only),
2. writes the stage job (``stage_job.py``) to ``<staging>/<run>/<stage>/job.json``: the config,
   those inputs, and outputs and metrics under the same prefix,
3. creates the TrainJob (``trainjob.py``): M nodes, each running ``torchrun -m
   rlhf.pipeline.stage_job <job.json>`` (the Trainer's torch runtime sets every node's rank and
   rendezvous through ``PET_*`` variables, which torchrun reads), or, under an MPI runtime
   (``deepspeed-distributed``), a launcher running ``mpirun ... -m rlhf.pipeline.stage_job
   <job.json>`` over the M nodes (``mpi_launch.py``), follows it to the end with node 0's (the
   launcher's) log in the task's log,
4. copies the outputs rank 0 published back into the task's output artifacts and returns the
   metrics rank 0 wrote.

Checkpoints go to the cluster config's ``checkpoint_volume`` (a ReadWriteMany
PersistentVolumeClaim mounted on every node) under ``<run>/<stage>``, so a retried task, which
adopts or re-creates the TrainJob under the same name, resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.pipeline.kube_api import kubernetes_api
from rlhf.pipeline.mpi_launch import MPI_HOME
from rlhf.pipeline.pod_env import CHECKPOINT_MOUNT, TRAINJOB_ENV, run_checkpoint_dir
from rlhf.pipeline.stage_job import StageJob
from rlhf.pipeline.trainjob import EnvRef, is_mpi_runtime, run_trainjob, trainjob_manifest

log = logging.getLogger("rlhf.pipeline")

# How long the task follows a TrainJob when the stage sets no timeout.
NO_TIMEOUT_SECONDS = 30 * 24 * 3600
# Longest wait between two looks at the TrainJob and its pods (a watch wakes it sooner).
POLL_SECONDS = 10.0


@dataclasses.dataclass
class NodeLaunch:
    """Everything about a multi-node stage's TrainJob that is known when the pipeline is
    compiled (``cluster.node_launch``); the run id, namespace and job file come at run time."""

    runtime: str  # the ClusterTrainingRuntime (torch-distributed, deepspeed-distributed)
    image: str
    nodes: int
    gpus_per_node: int
    staging: str  # s3:// prefix the task and the nodes exchange inputs, outputs and the job
    gpu_resource: str = "nvidia.com/gpu"
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    # name -> [secret|configMap, object, key, optional]: credentials stay references
    env: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    shm_size: str = ""
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)
    checkpoint_volume: str = ""  # a PVC mounted on every node at CHECKPOINT_MOUNT
    timeout_seconds: int = 0  # 0: none

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls) -> NodeLaunch | None:
        """The launch the cluster config put on this task's pod, or None (one pod)."""
        text = os.environ.get(TRAINJOB_ENV)
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{TRAINJOB_ENV}: not a TrainJob launch ({e}); recompile the "
                             "pipeline with this version of rlhf") from None  # fmt: skip

    def stage_prefix(self, pipeline_run: str, stage: str) -> str:
        return f"{self.staging.rstrip('/')}/{pipeline_run}/{stage}"

    def manifest(self, *, run_id: str, stage: str, namespace: str) -> dict[str, Any]:
        """The TrainJob of ``stage`` in run ``run_id`` (checked against the Trainer API)."""
        job_uri = f"{self.stage_prefix(run_id, stage)}/job.json"
        env: dict[str, str | EnvRef] = {name: EnvRef(*ref) for name, ref in self.env.items()}
        if is_mpi_runtime(self.runtime):
            # The launcher starts the ranks (mpirun, over SSH into the nodes: they get the
            # launcher's copies of the stage's variables); the runtime runs it as its user,
            # whose home is the writable one.
            command = ["python3", "-m", "rlhf.pipeline.mpi_launch",
                       "--forward", ",".join(sorted(env)), job_uri]  # fmt: skip
            env["HOME"] = MPI_HOME
        else:
            command = ["python3", "-m", "torch.distributed.run", "-m",
                       "rlhf.pipeline.stage_job", job_uri]  # fmt: skip
        return trainjob_manifest(
            run_id=run_id, stage=stage, namespace=namespace, runtime=self.runtime,
            image=self.image, command=command, num_nodes=self.nodes,
            gpus_per_node=self.gpus_per_node, gpu_resource=self.gpu_resource,
            procs_per_node=max(self.gpus_per_node, 1),
            cpu_request=self.cpu_request, cpu_limit=self.cpu_limit,
            memory_request=self.memory_request, memory_limit=self.memory_limit,
            env=env,
            node_selector=self.node_selector, tolerations=self.tolerations,
            shm_size=self.shm_size,
            volume_claims=(
                {self.checkpoint_volume: CHECKPOINT_MOUNT} if self.checkpoint_volume else None
            ),
            image_pull_secrets=self.image_pull_secrets,
            active_deadline_seconds=self.timeout_seconds,
        )  # fmt: skip


def run_on_nodes(
    job: StageJob,
    launch: NodeLaunch,
    *,
    api: tuple[Any, str] | None = None,
    poll_seconds: float | None = None,
    log_line: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run ``job`` (local input and output paths, as the KFP task has them) as ``launch``'s
    TrainJob and return the metrics rank 0 wrote; the outputs are copied to ``job.outputs``.
    ``api`` is (ApiClient, namespace); by default :func:`kubernetes_api`."""
    if not job.pipeline_run:
        raise ValueError(f"{job.stage}: a TrainJob needs the pipeline run's id")
    prefix = launch.stage_prefix(job.pipeline_run, job.stage)
    config = dict(job.config)
    if launch.checkpoint_volume and not config.get("checkpoint_dir"):
        config["checkpoint_dir"] = run_checkpoint_dir(job.pipeline_run, job.stage)
    node_job = dataclasses.replace(
        job,
        config=config,
        inputs={
            port: _stage_input(value, f"{prefix}/inputs/{port}")
            for port, value in job.inputs.items()
        },  # fmt: skip
        outputs={
            port: f"{prefix}/outputs/{port}"
            for port, value in job.outputs.items()
            if value is not None
        },  # fmt: skip
        metrics_file=f"{prefix}/metrics.json",
    )
    with tempfile.TemporaryDirectory(prefix=f"rlhf-{job.stage}-") as work:
        job_file = Path(work) / "job.json"
        job_file.write_text(json.dumps(dataclasses.asdict(node_job)), encoding="utf-8")
        storage.publish(job_file, f"{prefix}/job.json")
    api_client, namespace = api or kubernetes_api()
    manifest = launch.manifest(run_id=job.pipeline_run, stage=job.stage, namespace=namespace)
    log.info("%s: TrainJob %s/%s: %d nodes x %d GPUs, runtime %s, job %s/job.json",
             job.stage, namespace, manifest["metadata"]["name"], launch.nodes,
             launch.gpus_per_node, launch.runtime, prefix)  # fmt: skip
    run_trainjob(
        manifest,
        api_client,
        timeout_seconds=launch.timeout_seconds or NO_TIMEOUT_SECONDS,
        log=log_line or (lambda line: log.info("%s", line)),
        poll_seconds=poll_seconds or POLL_SECONDS,
    )
    for port, uri in node_job.outputs.items():  # rank 0's outputs into the task's artifacts
        storage.publish(storage.local_path(uri), job.outputs[port])
    return json.loads(storage.local_path(node_job.metrics_file).read_text(encoding="utf-8"))


def _stage_input(value: Any, uri: str) -> Any:
    """An input port's value for the nodes: a local file or folder published to ``uri``; a list
    of URIs, an ``s3://`` URI or None as they are."""
    if value is None or isinstance(value, list) or storage.is_s3(value):
        return value
    return storage.publish(value, uri)
