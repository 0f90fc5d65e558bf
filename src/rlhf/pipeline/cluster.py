"""How each stage runs on a Kubernetes cluster: image, resources, GPUs, secrets, retries.

KFP fixes a task's pod settings when the pipeline is compiled, so these are compile-time
settings: ``rlhf compile --cluster-config cluster.yaml`` (and ``rlhf submit``/``schedule``, which
compile before uploading). The committed packages under pipelines/ carry the defaults below.

Every pipeline calls :func:`configure` once per task with the task's stage name, so a pipeline
added later gets the same settings by naming its stages. ``@dsl.pipeline`` runs the pipeline
function once, when the module is imported (with the defaults); :func:`build` runs it again
under another config. Local runs (``kfp.local``) build it with none of these settings
(:data:`LOCAL`): no retries with minutes of backoff, no timeouts, no Secrets that do not exist
on a laptop.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from rlhf import __version__
from rlhf.config import from_dict
from rlhf.pipeline.images import DEFAULT_REGISTRY, FLAVOURS, image_ref
from rlhf.pipeline.inferenceservice import Predictor
from rlhf.pipeline.kfp_task_check import install as install_fast_task_check
from rlhf.pipeline.multi_node import NodeLaunch
from rlhf.pipeline.pod_env import (
    CHECKPOINT_MOUNT,
    CHECKPOINTS_ENV,
    PREDICTOR_ENV,
    PROCESSES_ENV,
    STAGE_LABEL,
    TRAINJOB_ENV,
)
from rlhf.stages.specs import STAGES

# The pipeline parameter that turns the optional deploy step on (specs: optional=True).
DEPLOY_SWITCH = "deploy_enabled"
TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}


@dataclasses.dataclass
class StageResources:
    """The pod of one stage. Quantities use Kubernetes' notation ("500m", "16Gi"); an empty
    string leaves a setting unset (the cluster's defaults apply)."""

    image: str = "cpu"  # "cpu" or "cuda" (the project's images) or a full image reference
    cpu_request: str = "1"
    cpu_limit: str = ""
    memory_request: str = "4Gi"
    memory_limit: str = "8Gi"
    # The extended resource the GPUs are requested as (KFP's accelerator type), e.g.
    # "nvidia.com/gpu"; "" for none. Pick a GPU model with node_selector (the label your
    # cluster uses, e.g. nvidia.com/gpu.product).
    accelerator_type: str = ""
    # GPUs of the pod (KFP's accelerator limit), or of each node. With more than one, the
    # stage runs as that many processes under torchrun, one per GPU (docs/scaling.md).
    gpus: int = 0
    # Nodes of a training stage. With more than one, the task creates a Kubeflow Trainer
    # TrainJob of that many nodes, each with this stage's image, resources, GPUs, /dev/shm,
    # node selector and tolerations, and follows it (docs/kubeflow.md); the task itself is a
    # small CPU pod. Needs the cluster config's staging.
    nodes: int = 1
    # The TrainJob's ClusterTrainingRuntime: torch-distributed (torch policy: every node runs
    # torchrun, which reads the PET_* variables the runtime sets) or deepspeed-distributed (MPI
    # policy: a launcher runs mpirun over SSH into the nodes); see docs/kubeflow.md.
    trainjob_runtime: str = "torch-distributed"
    # In-memory emptyDir mounted on /dev/shm: PyTorch data loaders and NCCL need more shared
    # memory than the container runtime's 64 MiB. "" mounts none.
    shm_size: str = ""
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    # Each: {key, operator (Equal|Exists), value, effect (NoSchedule|PreferNoSchedule|
    # NoExecute), toleration_seconds}, as in a pod spec (snake_case).
    tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timeout_seconds: int = 0  # the pod's activeDeadlineSeconds; 0 for none
    retries: int = 0  # re-runs after a failure (a training stage resumes from its checkpoint)
    retry_backoff: str = "60s"  # wait before the first retry
    retry_backoff_factor: float = 2.0  # each later wait is this times the previous one
    retry_backoff_max: str = "1800s"  # longest wait
    caching: bool = False  # reuse an earlier run's outputs when the inputs are the same


def _gpu_stage() -> StageResources:
    """A training stage: one GPU on the CUDA image, shared memory, tolerating GPU taints,
    retried with backoff (it resumes from its last checkpoint), never cached."""
    return StageResources(
        image="cuda",
        cpu_request="4",
        cpu_limit="8",
        memory_request="32Gi",
        memory_limit="64Gi",
        accelerator_type="nvidia.com/gpu",
        gpus=1,
        shm_size="16Gi",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        timeout_seconds=24 * 3600,
        retries=2,
        retry_backoff="120s",
    )


def default_stages() -> dict[str, StageResources]:
    """Every stage of ``rlhf.stages.specs``: a GPU training pod or a CPU pod, with the
    settings its spec changes."""
    return {
        name: dataclasses.replace(_gpu_stage() if spec.gpu else StageResources(), **spec.cluster)
        for name, spec in STAGES.items()
    }


@dataclasses.dataclass
class EnvSource:
    """A Secret or ConfigMap whose keys become environment variables of the same names."""

    name: str  # the Kubernetes object's name; "" skips it
    keys: list[str]
    optional: bool = False  # a missing object (or key) is not an error for the pod


def _default_secrets() -> list[EnvSource]:
    return [
        EnvSource("rlhf-s3", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        # Optional: many MLflow servers run without authentication.
        EnvSource("rlhf-mlflow", ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"], True),
    ]


def _default_config_maps() -> list[EnvSource]:
    return [EnvSource("rlhf-endpoints", ["AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"])]


@dataclasses.dataclass
class ClusterConfig:
    """Compile-time settings of a pipeline on a cluster (``--cluster-config`` YAML)."""

    registry: str = DEFAULT_REGISTRY  # where the project's images are pulled from
    tag: str = __version__  # image tag prefix: <registry>/rlhf:<tag>-cpu and -cuda
    cpu_image: str = ""  # a full reference for the CPU image; wins over registry and tag
    cuda_image: str = ""  # a full reference for the CUDA image; wins over registry and tag
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)
    image_pull_policy: str = "IfNotPresent"  # Always, IfNotPresent or Never
    # Credentials: each Secret's keys become environment variables of every task. Never put
    # credentials in pipeline parameters: they are stored and shown with the run.
    secrets: list[EnvSource] = dataclasses.field(default_factory=_default_secrets)
    # Endpoints (not secret): each ConfigMap's keys become environment variables.
    config_maps: list[EnvSource] = dataclasses.field(default_factory=_default_config_maps)
    stages: dict[str, StageResources] = dataclasses.field(default_factory=default_stages)
    # An s3:// prefix where a multi-node stage's task and nodes exchange its inputs, outputs,
    # metrics and job file (<staging>/<run>/<stage>/); needed when a stage has nodes > 1.
    staging: str = ""
    # A PersistentVolumeClaim mounted on every training pod and TrainJob node at
    # /rlhf-checkpoints; checkpoints go there under <run>/<stage>, so a retried task or
    # TrainJob resumes instead of starting over. ReadWriteMany for multi-node stages (every
    # rank writes its shard). "" keeps checkpoints in the pod: a retry starts over.
    checkpoint_volume: str = ""
    # The ServiceAccount the pipeline's pods run as (KFP's pipeline-runner; default-editor in
    # a multi-user profile); pipelines/k8s/trainjob-rbac.yaml lets it run TrainJobs.
    pipeline_service_account: str = "pipeline-runner"
    # The deploy step (docs/serving.md): true compiles the pipelines with deploy_enabled on by
    # default and writes k8s/inferenceservices/<pipeline>.yaml (for review) and
    # k8s/inferenceservice-rbac.yaml. A run may still set deploy_enabled either way.
    deploy: bool = False
    # The ServiceAccount of the InferenceService's predictor: KServe's storage initializer
    # reads the S3 credentials from its Secret (annotated serving.kserve.io/s3-*), so they
    # never appear in the InferenceService. "" for none (a public bucket, node IAM roles).
    serving_service_account: str = "rlhf-serving"

    def image(self, name: str) -> str:
        """A stage's ``image`` setting as a full reference."""
        if name not in FLAVOURS:
            return name
        override = self.cpu_image if name == "cpu" else self.cuda_image
        return override or image_ref(name, self.registry, self.tag)


def _partial(cls: type, base: Any, data: Any, where: str) -> Any:
    """``base`` with the fields given in ``data`` (checked and typed by ``from_dict``): a stage
    written in the YAML with two fields changes only those two."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of fields, got {data!r}")
    try:
        typed = from_dict(cls, data, where)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}" if not str(e).startswith(where) else str(e)) from None
    return dataclasses.replace(base, **{k: getattr(typed, k) for k in data})


def _check_stage(name: str, stage: StageResources, where: str) -> StageResources:
    if not isinstance(stage.node_selector, dict):
        raise ValueError(f"{where}.node_selector: expected a mapping of label: value")
    stage.node_selector = {str(k): str(v) for k, v in stage.node_selector.items()}
    for i, toleration in enumerate(stage.tolerations):
        if not isinstance(toleration, dict) or set(toleration) - TOLERATION_KEYS:
            raise ValueError(
                f"{where}.tolerations[{i}]: expected a mapping with keys from "
                f"{sorted(TOLERATION_KEYS)}, got {toleration!r}"
            )
    if stage.gpus < 0 or stage.retries < 0 or stage.timeout_seconds < 0:
        raise ValueError(f"{where}: gpus, retries and timeout_seconds must be >= 0")
    if stage.gpus and not stage.accelerator_type:
        raise ValueError(f"{where}: gpus needs an accelerator_type (nvidia.com/gpu)")
    if stage.gpus > 1 and not (STAGES[name].gpu or STAGES[name].launcher):
        raise ValueError(f"{where}: gpus > 1: only the training stages run one process per GPU")
    if stage.nodes < 1:
        raise ValueError(f"{where}: nodes must be >= 1, got {stage.nodes}")
    if stage.nodes > 1 and not STAGES[name].gpu:
        raise ValueError(f"{where}: nodes > 1: only the training stages run on several nodes")
    if stage.nodes > 1 and not stage.trainjob_runtime:
        raise ValueError(
            f"{where}: nodes > 1 needs a trainjob_runtime (torch-distributed or "
            "deepspeed-distributed)"
        )
    return stage


def cluster_config_from_dict(data: dict[str, Any], where: str = "cluster config") -> ClusterConfig:
    """A ClusterConfig from a mapping: every field optional; ``stages.<name>`` changes only the
    fields it gives; ``secrets`` and ``config_maps``, when given, replace the defaults."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of fields, got {data!r}")
    data = dict(data)
    stages_data = data.pop("stages", None) or {}
    sources = {key: data.pop(key) for key in ("secrets", "config_maps") if key in data}
    config = _partial(ClusterConfig, ClusterConfig(), data, where)
    if not isinstance(stages_data, dict):
        raise ValueError(f"{where}: stages: expected a mapping of stage name: settings")
    for name, fields in stages_data.items():
        if name not in config.stages:
            raise ValueError(
                f"{where}: stages: unknown stage {name!r}; known: {sorted(config.stages)}"
            )
        stage_where = f"{where}: stages.{name}"
        config.stages[name] = _partial(
            StageResources, config.stages[name], fields or {}, stage_where
        )
    for name, stage in config.stages.items():
        _check_stage(name, stage, f"{where}: stages.{name}")
    for key, items in sources.items():
        if not isinstance(items, list):
            raise ValueError(f"{where}: {key}: expected a list of {{name, keys, optional}}")
        parsed = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "name" not in item or "keys" not in item:
                raise ValueError(f"{where}: {key}[{i}]: expected a mapping with name and keys")
            parsed.append(_partial(EnvSource, EnvSource("", []), item, f"{where}: {key}[{i}]"))
        setattr(config, key, parsed)
    multi_node = sorted(name for name, stage in config.stages.items() if stage.nodes > 1)
    if multi_node and not config.staging.startswith("s3://"):
        raise ValueError(
            f"{where}: staging: stages {multi_node} run on several nodes, which exchange their "
            f"inputs and outputs through object storage: set staging to an s3:// prefix, got "
            f"{config.staging!r}"
        )
    if config.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise ValueError(
            f"{where}: image_pull_policy: expected Always, IfNotPresent or Never, "
            f"got {config.image_pull_policy!r}"
        )
    return config


def load_cluster_config(path: str | Path | None) -> ClusterConfig:
    """The defaults, or the YAML file at ``path`` over them."""
    if not path:
        return ClusterConfig()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return cluster_config_from_dict(data, where=str(path))


# The settings the pipeline functions apply while they are being compiled (None: the defaults);
# LOCAL while a pipeline runs under kfp.local.
LOCAL = "local"
_ACTIVE: contextvars.ContextVar[ClusterConfig | str | None] = contextvars.ContextVar(
    "rlhf_cluster_config", default=None
)


@contextlib.contextmanager
def _using(config: ClusterConfig | str) -> Iterator[None]:
    token = _ACTIVE.set(config)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def build(pipeline: GraphComponent, config: ClusterConfig | str) -> GraphComponent:
    """``pipeline`` defined again with ``config`` (or :data:`LOCAL`) applied to its tasks; with
    the config's ``deploy``, its ``deploy_enabled`` parameter (when it has a deploy step; not
    ``collect``) defaults to true."""
    func = pipeline.pipeline_func
    deploys = DEPLOY_SWITCH in inspect.signature(func).parameters
    if isinstance(config, ClusterConfig) and config.deploy and deploys:
        func = _with_default(func, DEPLOY_SWITCH, True)
    with _using(config):
        return dsl.pipeline(name=pipeline.name, description=pipeline.description)(func)


def _with_default(func: Any, name: str, value: Any) -> Any:
    """A copy of the pipeline function ``func`` whose parameter ``name`` defaults to ``value``
    (KFP reads a pipeline's parameter defaults from its signature)."""
    names = list(inspect.signature(func).parameters)
    defaults = list(func.__defaults__)
    defaults[names.index(name) - (len(names) - len(defaults))] = value
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, tuple(defaults),
                              func.__closure__)  # fmt: skip
    copy.__annotations__ = dict(func.__annotations__)
    copy.__doc__, copy.__module__, copy.__qualname__ = (
        func.__doc__,
        func.__module__,
        func.__qualname__,
    )
    return copy


def _launcher(s: StageResources) -> StageResources:
    """The small CPU pod of a task that starts the stage's real work elsewhere (a TrainJob, an
    InferenceService) on the CPU image, keeping the stage's timeout, retries and caching."""
    return dataclasses.replace(
        StageResources(), timeout_seconds=s.timeout_seconds, retries=s.retries,
        retry_backoff=s.retry_backoff, retry_backoff_factor=s.retry_backoff_factor, retry_backoff_max=s.retry_backoff_max,
        caching=s.caching,
    )  # fmt: skip


def node_launch(config: ClusterConfig, stage: str) -> NodeLaunch:
    """The TrainJob a multi-node stage's task launches: the stage's pod settings on each node,
    the same Secrets and ConfigMaps as environment references."""
    s = config.stages[stage]
    env = {
        key: ["secret" if kind == "secrets" else "configMap", source.name, key, source.optional]
        for kind in ("secrets", "config_maps")
        for source in getattr(config, kind)
        if source.name
        for key in source.keys
    }
    return NodeLaunch(
        runtime=s.trainjob_runtime, image=config.image(s.image), nodes=s.nodes,
        gpus_per_node=s.gpus, staging=config.staging,
        gpu_resource=s.accelerator_type or "nvidia.com/gpu",
        cpu_request=s.cpu_request, cpu_limit=s.cpu_limit, memory_request=s.memory_request,
        memory_limit=s.memory_limit, env=env, node_selector=dict(s.node_selector),
        tolerations=[dict(t) for t in s.tolerations], shm_size=s.shm_size,
        image_pull_secrets=list(config.image_pull_secrets),
        checkpoint_volume=config.checkpoint_volume, timeout_seconds=s.timeout_seconds,
    )  # fmt: skip


def predictor(config: ClusterConfig) -> Predictor:
    """The deploy stage's InferenceService predictor: the ``deploy`` stage's resources, GPUs,
    node selector and tolerations, and the serving ServiceAccount."""
    s = config.stages["deploy"]
    return Predictor(
        service_account=config.serving_service_account, gpus=s.gpus,
        gpu_resource=s.accelerator_type or "nvidia.com/gpu",
        cpu_request=s.cpu_request, cpu_limit=s.cpu_limit, memory_request=s.memory_request,
        memory_limit=s.memory_limit, node_selector=dict(s.node_selector),
        tolerations=[dict(t) for t in s.tolerations],
    )  # fmt: skip


def configure(task: Any, stage: str) -> Any:
    """Apply the active cluster config's settings for ``stage`` to a pipeline task: image,
    CPU/memory/GPU, /dev/shm, node selector, tolerations, timeout, retries, caching, pull
    secrets, the checkpoint volume, and the Secrets/ConfigMaps as environment variables; for a
    multi-node stage, the TrainJob its task launches. Returns the task."""
    from kfp import kubernetes

    install_fast_task_check()  # each setting below would otherwise cost ~0.3 s (its module)
    active = _ACTIVE.get()
    if active == LOCAL:
        return task
    config = active if isinstance(active, ClusterConfig) else ClusterConfig()
    if stage not in config.stages:
        raise ValueError(
            f"no cluster settings for stage {stage!r}; known: {sorted(config.stages)} "
            "(declare it in rlhf/stages/specs.py)"
        )
    s = config.stages[stage]
    if STAGES[stage].launcher:
        # The task creates the InferenceService and waits for it: a small CPU pod; the
        # predictor gets the stage's resources (predictor).
        task.set_env_variable(PREDICTOR_ENV, predictor(config).to_json())
        s = _launcher(s)
    elif s.nodes > 1:
        # The task creates and follows the stage's TrainJob: a small CPU pod, off the GPU nodes;
        # the nodes get the stage's image and resources (node_launch).
        task.set_env_variable(TRAINJOB_ENV, node_launch(config, stage).to_json())
        s = _launcher(s)
    elif config.checkpoint_volume and STAGES[stage].gpu:
        kubernetes.mount_pvc(task, pvc_name=config.checkpoint_volume, mount_path=CHECKPOINT_MOUNT)
        task.set_env_variable(CHECKPOINTS_ENV, CHECKPOINT_MOUNT)
    # The stage on the pod: `kubectl get pods -l rlhf/stage=sft`; tests read it back too.
    kubernetes.add_pod_label(task, STAGE_LABEL, stage)
    task.set_container_image(config.image(s.image))
    for value, setter in (
        (s.cpu_request, task.set_cpu_request),
        (s.cpu_limit, task.set_cpu_limit),
        (s.memory_request, task.set_memory_request),
        (s.memory_limit, task.set_memory_limit),
    ):
        if value:
            setter(value)
    if s.gpus:
        task.set_accelerator_type(s.accelerator_type).set_accelerator_limit(s.gpus)
    if s.gpus > 1:  # the component then runs the stage under torchrun, one process per GPU
        task.set_env_variable(PROCESSES_ENV, str(s.gpus))
    if s.shm_size:
        kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=s.shm_size)
    for label, value in sorted(s.node_selector.items()):
        kubernetes.add_node_selector(task, label, value)
    for toleration in s.tolerations:
        kubernetes.add_toleration(task, **toleration)
    if s.timeout_seconds:
        kubernetes.set_timeout(task, s.timeout_seconds)
    if s.retries:
        task.set_retry(
            s.retries,
            backoff_duration=s.retry_backoff,
            backoff_factor=s.retry_backoff_factor,
            backoff_max_duration=s.retry_backoff_max,
        )
    task.set_caching_options(s.caching)
    if config.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(config.image_pull_secrets))
    kubernetes.set_image_pull_policy(task, config.image_pull_policy)
    for source in config.secrets:
        if source.name:
            kubernetes.use_secret_as_env(
                task, source.name, {k: k for k in source.keys}, optional=source.optional
            )
    for source in config.config_maps:
        if source.name:
            kubernetes.use_config_map_as_env(
                task, source.name, {k: k for k in source.keys}, optional=source.optional
            )
    return task
