"""A multi-node stage as a Kubeflow Trainer ``TrainJob``: its manifest, and the KFP task that
creates it, follows it to the end and cleans up after it.

A KFP task is one pod; a stage that needs several GPU nodes runs as a TrainJob
(``trainer.kubeflow.org/v1alpha1``) that the task creates. The Trainer controller turns it into
a JobSet of ``numNodes`` pods from a ``ClusterTrainingRuntime`` and sets the rendezvous
environment of each node; the task waits, copies the log of the pod that runs the command into
its own, and exits the way the TrainJob ended. Two kinds of runtime:

* the torch policy (``torch-distributed``): every node runs the command (``torchrun``, which
  reads the ``PET_*`` variables the runtime sets), node 0's log is the one followed;
* the MPI policy (``deepspeed-distributed``): a ``launcher`` job runs the command (``mpirun``
  over SSH into the ``node`` pods, which run ``sshd``; with ``runLauncherAsNode`` the launcher's
  pod is one of the ``numNodes`` hosts), and its log, which carries every rank's output, is the
  one followed. Both jobs get the pod settings (node selector, tolerations, volumes); the
  runtime gives both ``spec.trainer``'s env and resources, the launcher alone its image and
  command.

The task talks to the Kubernetes API with the ``kubernetes`` client (``CustomObjectsApi`` for
the TrainJob, ``CoreV1Api`` for its pods and their logs), not the ``kubeflow`` SDK: the client
is already in the image (kfp needs it), the handful of calls made here are plain REST calls a
test server can answer, and each of them maps onto one RBAC verb (see docs/kubeflow.md). The
SDK's ``TrainerClient`` would add a package and a second model layer for what is one create,
one watch and one log stream, and hides which calls it makes. The manifest is a plain dict,
checked against the ``kubeflow-trainer-api`` pydantic models before it is sent.

Lifecycle (``run_trainjob``):

* create; a TrainJob with the same name already there is a retried task meeting its earlier
  attempt (the name comes from the run and the stage): one still running, or finished
  ``Complete``, is adopted (no GPU time lost; checkpoints are written by the nodes, not by this
  task); one that ``Failed``, one being deleted, or one made from a different spec (the
  ``rlhf/spec-digest`` annotation) is deleted and, once gone, created anew (the stage resumes
  from its last checkpoint).
* follow: a GET of the TrainJob after every change a watch reports (at least every
  ``poll_seconds``); node 0's pods' logs are streamed into ``log`` (``[pod] line``).
* ``Complete``: return. ``Failed``: raise :class:`TrainJobFailed` with its reason and message
  (the tail of every failed pod's log is logged first); the TrainJob is left for inspection.
* timeout, SIGTERM (what KFP sends when a run is cancelled), KeyboardInterrupt or any other
  error: delete the TrainJob (foreground: its pods go with it), then raise
  :class:`TrainJobTimeout`, exit with status 143, re-raise. A TrainJob is never left running
  without a task following it, except when the task's pod dies without a signal (SIGKILL, a
  lost node): then KFP's retry adopts it, and ``active_deadline_seconds`` bounds it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlhf.pipeline import termination
from rlhf.pipeline.kube_api import (
    QUANTITY_RE,
    REQUEST_TIMEOUT,
    CustomObject,
    api_message,
    condition,
    transient,
)
from rlhf.pipeline.pod_env import STAGE_LABEL

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
RUN_LABEL = "rlhf/run"
SPEC_DIGEST = "rlhf/spec-digest"  # annotation: what the TrainJob was made from
PATCH_MANAGER = "rlhf/pipeline"  # our entry in spec.runtimePatches (keyed by manager)
# The trainer's replicated job and container in the runtimes Kubeflow Trainer ships; an MPI
# runtime's launcher job (its container is also named "node").
TRAINER_JOB = "node"
LAUNCHER_JOB = "launcher"
# Kubeflow Trainer's shipped runtimes with the MPI policy (OpenMPI, runLauncherAsNode).
MPI_RUNTIMES = frozenset({"deepspeed-distributed", "mpi-distributed"})
# Set by the MPI runtime on the launcher; the Trainer refuses a TrainJob that sets them.
MPI_RESERVED_ENV = frozenset({
    "OMPI_MCA_orte_default_hostfile", "OMPI_MCA_plm_rsh_args",
    "OMPI_MCA_orte_keep_fqdn_hostnames", "OMPI_MCA_orte_set_default_slots",
})  # fmt: skip
JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
SHM_VOLUME = "dshm"
# Labels JobSet and Job put on every pod: the TrainJob's JobSet has the TrainJob's name.
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

# The CRD allows 63 characters (an RFC 1035 label), but JobSet names each pod's hostname
# <trainjob>-<replicated job>-<job index>-<pod index>, and that must be a label too.
MAX_NAME = 40
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CLAIM_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a DNS subdomain
TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}
FAILED_TAIL_LINES = 30


def is_mpi_runtime(runtime: str) -> bool:
    """Whether ``runtime`` is one of Kubeflow Trainer's MPI runtimes (launcher and nodes)."""
    return runtime in MPI_RUNTIMES


def command_job(runtime: str) -> str:
    """The replicated job whose pods run ``spec.trainer.command`` under ``runtime``."""
    return LAUNCHER_JOB if is_mpi_runtime(runtime) else TRAINER_JOB


class TrainJobSpecError(ValueError):
    """A TrainJob manifest that the cluster would refuse; the message names the field."""


class TrainJobError(RuntimeError):
    """A TrainJob that did not complete."""


class TrainJobFailed(TrainJobError):
    """The TrainJob's ``Failed`` condition became true."""


class TrainJobTimeout(TrainJobError):
    """The TrainJob did not finish in time (it has been deleted)."""


@dataclass(frozen=True)
class EnvRef:
    """An environment variable read from a Secret's or ConfigMap's key when the pod starts,
    so a credential never appears in the TrainJob (``kubectl get -o yaml`` shows the
    reference only)."""

    kind: Literal["secret", "configMap"]
    name: str  # the Secret's or ConfigMap's name
    key: str
    optional: bool = False  # a missing object or key leaves the variable unset


def trainjob_name(run_id: str, stage: str) -> str:
    """``rlhf-<stage>-<run id>``, lower-cased to a DNS label of at most ``MAX_NAME``
    characters; when that is too long, the stage's start and a digest of both. The same run and
    stage always give the same name (a retried task finds its earlier TrainJob)."""
    if not run_id or not stage:
        raise TrainJobSpecError(
            f"TrainJob name: run id and stage are required, got {run_id!r}, {stage!r}"
        )
    name = _label_chars(f"rlhf-{stage}-{run_id}")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{run_id}\0{stage}".encode()).hexdigest()[:12]
    head = _label_chars(f"rlhf-{stage}")[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def _label_chars(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def trainjob_manifest(
    *,
    run_id: str,
    stage: str,
    namespace: str,
    runtime: str,
    image: str,
    command: Sequence[str],
    num_nodes: int,
    gpus_per_node: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    procs_per_node: int = 0,
    cpu_request: str = "",
    cpu_limit: str = "",
    memory_request: str = "",
    memory_limit: str = "",
    env: Mapping[str, str | EnvRef] | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    shm_size: str = "",
    volume_claims: Mapping[str, str] | None = None,
    service_account: str = "",
    image_pull_secrets: Sequence[str] = (),
    active_deadline_seconds: int = 0,
    runtime_kind: str = "ClusterTrainingRuntime",
) -> dict[str, Any]:
    """The TrainJob of one stage of one pipeline run, checked against the Trainer API's models.

    ``command`` is what every node runs (the runtime sets each node's rank and rendezvous
    environment), or under an MPI runtime (:data:`MPI_RUNTIMES`) what the launcher runs
    (``mpirun``, starting ``procs_per_node`` ranks on every node); ``procs_per_node`` 0 keeps
    the runtime's default (one process per GPU). The pod settings below go to every replicated
    job that runs a rank: ``node``, and an MPI runtime's ``launcher``.
    Quantities use Kubernetes' notation ("8", "500m", "64Gi"); "" leaves one unset. GPUs are
    requested and limited as ``gpu_resource``. ``env`` values are plain strings or
    :class:`EnvRef`. ``tolerations`` are pod-spec tolerations (``toleration_seconds`` is
    accepted for ``tolerationSeconds``). ``shm_size`` mounts an in-memory emptyDir of that size
    on /dev/shm (NCCL and data loaders need more than the runtime's 64 MiB).
    ``volume_claims`` mounts each PersistentVolumeClaim (name: mount path) on every node.
    ``active_deadline_seconds`` (0: none) makes the controller fail a TrainJob that runs longer,
    even one whose task is gone.
    """
    name = trainjob_name(run_id, stage)
    labels = {
        "app.kubernetes.io/name": "rlhf",
        "app.kubernetes.io/component": _label_value(stage),
        "app.kubernetes.io/part-of": "rlhf",
        "app.kubernetes.io/managed-by": "rlhf-pipeline",
        STAGE_LABEL: _label_value(stage),
        RUN_LABEL: _label_value(run_id),
    }
    _check(num_nodes, "spec.trainer.numNodes", minimum=1)
    _check(gpus_per_node, f"spec.trainer.resourcesPerNode.limits[{gpu_resource}]", minimum=0)
    _check(procs_per_node, "spec.trainer.numProcPerNode", minimum=0)
    _check(active_deadline_seconds, "spec.activeDeadlineSeconds", minimum=0)
    if not command or not all(isinstance(c, str) for c in command):
        raise TrainJobSpecError(
            f"TrainJob spec.trainer.command: a non-empty list of strings is "
            f"required, got {command!r}"
        )
    for field, value in (
        ("spec.runtimeRef.name", runtime),
        ("spec.trainer.image", image),
        ("metadata.namespace", namespace),
    ):
        if not isinstance(value, str) or not value:
            raise TrainJobSpecError(f"TrainJob {field}: required, got {value!r}")

    trainer: dict[str, Any] = {
        "image": image,
        "command": list(command),
        "numNodes": num_nodes,
        "resourcesPerNode": _resources(
            cpu_request, cpu_limit, memory_request, memory_limit, gpus_per_node, gpu_resource
        ),
    }
    if procs_per_node:
        trainer["numProcPerNode"] = procs_per_node
    if env:
        reserved = sorted(set(env) & MPI_RESERVED_ENV) if is_mpi_runtime(runtime) else []
        if reserved:
            raise TrainJobSpecError(
                f"TrainJob spec.trainer.env: {reserved} are set by the MPI runtime {runtime!r}"
            )
        trainer["env"] = [_env_var(k, v) for k, v in env.items()]

    pod: dict[str, Any] = {}
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [_toleration(t, i) for i, t in enumerate(tolerations)]
    if service_account:
        pod["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
    volumes, mounts = [], []
    if shm_size:
        _quantity(shm_size, "spec.runtimePatches[].volumes[dshm].emptyDir.sizeLimit")
        volumes.append(
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}
        )
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    for i, (claim, path) in enumerate(sorted((volume_claims or {}).items())):
        if not CLAIM_RE.match(claim or "") or not str(path).startswith("/"):
            raise TrainJobSpecError(
                f"TrainJob spec.runtimePatches[].volumes[{claim!r}]: a claim name (a DNS "
                f"subdomain) and an absolute mount path are required, got {claim!r}: {path!r}"
            )
        volumes.append({"name": f"claim-{i}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"claim-{i}", "mountPath": path})
    if volumes:
        pod["volumes"] = volumes
        pod["containers"] = [{"name": TRAINER_JOB, "volumeMounts": mounts}]

    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": runtime_kind, "name": runtime},
        "trainer": trainer,
    }
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    spec["runtimePatches"] = [
        {
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {
                                "name": job,
                                "template": {
                                    "spec": {
                                        "template": {
                                            "metadata": {"labels": dict(labels)},
                                            "spec": pod,
                                        }
                                    }
                                },
                            }
                            for job in (
                                [LAUNCHER_JOB, TRAINER_JOB]
                                if is_mpi_runtime(runtime)
                                else [TRAINER_JOB]
                            )
                        ]
                    }
                }
            },
        }
    ]
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {SPEC_DIGEST: spec_digest(spec)},
        },
        "spec": spec,
    }
    validate_manifest(manifest)
    return manifest


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A short digest of a TrainJob spec as this module wrote it."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a TrainJob manifest against ``kubeflow_trainer_api``'s models; the error names
    the field by its path (``spec.trainer.numNodes``) and says what is wrong."""
    import pydantic
    from kubeflow_trainer_api.models import (
        IoK8sApimachineryPkgApiResourceQuantity,
        TrainerV1alpha1TrainJob,
    )

    # The models type a quantity as an object wrapping the string the API sends.
    def wrap(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {k: wrap(v, (*path, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [wrap(v, path) for v in node]
        if path[-2:-1] in (("limits",), ("requests",)) or path[-1:] == ("sizeLimit",):
            return IoK8sApimachineryPkgApiResourceQuantity(node)
        return node

    try:
        TrainerV1alpha1TrainJob.model_validate(wrap(dict(manifest), ()))
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise TrainJobSpecError(
            f"TrainJob {manifest.get('metadata', {}).get('name')}: {problems}"
        ) from None


def _check(value: Any, field: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TrainJobSpecError(
            f"TrainJob {field}: must be an integer of at least {minimum}, got {value!r}"
        )


def _quantity(value: str, field: str) -> str:
    if not isinstance(value, str) or not QUANTITY_RE.match(value):
        raise TrainJobSpecError(
            f"TrainJob {field}: not a Kubernetes quantity (like 8, 500m, 64Gi): {value!r}"
        )
    return value


def _label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-_.")


def _resources(
    cpu_request: str,
    cpu_limit: str,
    memory_request: str,
    memory_limit: str,
    gpus: int,
    gpu_resource: str,
) -> dict[str, dict[str, str]]:
    base = "spec.trainer.resourcesPerNode"
    requests = {
        k: _quantity(v, f"{base}.requests.{k}")
        for k, v in (("cpu", cpu_request), ("memory", memory_request))
        if v
    }
    limits = {
        k: _quantity(v, f"{base}.limits.{k}")
        for k, v in (("cpu", cpu_limit), ("memory", memory_limit))
        if v
    }
    if gpus:
        # An extended resource's request must equal its limit.
        requests[gpu_resource] = limits[gpu_resource] = str(gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _env_var(name: str, value: str | EnvRef) -> dict[str, Any]:
    if isinstance(value, EnvRef):
        if value.kind not in ("secret", "configMap"):
            raise TrainJobSpecError(
                f"TrainJob spec.trainer.env[{name}]: kind must be secret or "
                f"configMap, got {value.kind!r}"
            )
        selector = {"name": value.name, "key": value.key}
        if value.optional:
            selector["optional"] = True
        return {"name": name, "valueFrom": {f"{value.kind}KeyRef": selector}}
    if not isinstance(value, str):
        raise TrainJobSpecError(
            f"TrainJob spec.trainer.env[{name}]: a string or an EnvRef is required, got {value!r}"
        )
    return {"name": name, "value": value}


def _toleration(toleration: Mapping[str, Any], index: int) -> dict[str, Any]:
    out = {
        ("tolerationSeconds" if k == "toleration_seconds" else k): v
        for k, v in toleration.items()
        if v not in (None, "")
    }
    unknown = set(out) - TOLERATION_FIELDS
    if unknown:
        raise TrainJobSpecError(
            f"TrainJob tolerations[{index}]: unknown fields "
            f"{sorted(unknown)}; allowed: {sorted(TOLERATION_FIELDS)}"
        )
    return out


# -- running one --------------------------------------------------------------------------------


def run_trainjob(
    manifest: Mapping[str, Any],
    api_client: Any,
    timeout_seconds: float,
    log: Callable[[str], None] = print,
    poll_seconds: float = 10.0,
) -> None:
    """Create the TrainJob (or adopt/replace the one an earlier attempt left), follow it and
    stream node 0's log into ``log``; return when it is ``Complete``.

    Raises :class:`TrainJobFailed` (it failed: reason and message), :class:`TrainJobTimeout`
    (not finished within ``timeout_seconds``: deleted) or :class:`TrainJobError`; on SIGTERM it
    deletes the TrainJob and exits with status 143 (``SystemExit``), on KeyboardInterrupt it
    deletes it and re-raises. ``api_client`` is a ``kubernetes.client.ApiClient``.
    """
    job = _Follower(manifest, api_client, log, poll_seconds)
    deadline = time.monotonic() + timeout_seconds
    pods = _PodLogs(job, poll_seconds)
    with termination.sigterm_raises():
        try:
            job.create(deadline)
            pods.start()
            job.follow(deadline, timeout_seconds)
            pods.finish()
        except TrainJobFailed:
            pods.finish()
            pods.tail_failed()
            raise  # left in place: `kubectl describe` shows why; a retry replaces it
        except termination.Terminated:
            termination.ignore_sigterm()  # one cleanup, not two
            pods.abandon()
            job.delete(termination.CANCELLED)
            raise SystemExit(termination.SIGTERM_EXIT) from None
        except BaseException as e:
            pods.abandon()
            job.delete(f"the task stopped: {type(e).__name__}")
            raise


class _Follower(CustomObject):
    """One TrainJob through the Kubernetes API."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        api_client: Any,
        log: Callable[[str], None],
        poll_seconds: float,
    ) -> None:
        from kubernetes import client

        super().__init__(manifest, (GROUP, VERSION, PLURAL), KIND, api_client, self._locked,
                         poll_seconds)  # fmt: skip
        self.core = client.CoreV1Api(api_client)
        self._log = log
        self._lock = threading.Lock()
        self.digest = manifest["metadata"].get("annotations", {}).get(SPEC_DIGEST)

    def _locked(self, line: str) -> None:
        with self._lock:  # the log streams call it from their threads
            self._log(line)

    # -- API calls ---------------------------------------------------------------------------
    def _delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                propagation_policy="Foreground",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def delete(self, why: str) -> None:
        """Delete it on the way out; a failure is logged, never raised over the first error."""
        try:
            self._delete()
            self.log(f"{self.what}: deleted ({why})")
        except Exception as e:  # noqa: BLE001 (cleanup must not mask the original error)
            self.log(f"{self.what}: could not delete it ({why}): {e}; delete it by hand")

    # -- create or adopt ---------------------------------------------------------------------
    def create(self, deadline: float) -> None:
        from kubernetes.client.exceptions import ApiException

        while True:
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    dict(self.manifest),
                    _request_timeout=REQUEST_TIMEOUT,
                )
                self.log(f"{self.what}: created ({self._shape()})")
                return
            except ApiException as e:
                if e.status != 409:
                    raise TrainJobError(
                        f"{self.what}: the API refused it: {api_message(e)}"
                    ) from None
            existing = self.read()
            if existing is None:
                continue  # deleted between our create and get: create again
            replace = self._replace_reason(existing)
            if replace is None:
                self.log(f"{self.what}: adopted the one an earlier attempt of this task created")
                return
            self.log(
                f"{self.what}: exists, {replace}; replacing it (the stage resumes from "
                f"its last checkpoint)"
            )
            if not existing["metadata"].get("deletionTimestamp"):
                self._delete()
            self._wait_gone(deadline)

    def _replace_reason(self, existing: Mapping[str, Any]) -> str | None:
        if existing["metadata"].get("deletionTimestamp"):
            return "being deleted"
        theirs = existing["metadata"].get("annotations", {}).get(SPEC_DIGEST)
        if theirs != self.digest:
            return f"made from another spec (digest {theirs}, this one {self.digest})"
        failed = condition(existing, "Failed")
        if failed:
            return f"an earlier attempt failed ({failed.get('reason')}: {failed.get('message')})"
        return None

    def _wait_gone(self, deadline: float) -> None:
        while self.read() is not None:
            if time.monotonic() > deadline:
                raise TrainJobTimeout(
                    f"{self.what}: an earlier one was still being deleted when the timeout came"
                )
            time.sleep(min(self.poll, 1.0))

    def _shape(self) -> str:
        trainer = self.manifest["spec"].get("trainer", {})
        limits = trainer.get("resourcesPerNode", {}).get("limits", {})
        gpus = [f"{v} {k}" for k, v in limits.items() if k not in ("cpu", "memory")]
        return (
            f"runtime {self.manifest['spec']['runtimeRef']['name']}, "
            f"{trainer.get('numNodes')} node(s)" + (f" x {gpus[0]}" if gpus else "")
        )

    # -- follow --------------------------------------------------------------------------------
    def follow(self, deadline: float, timeout_seconds: float) -> None:
        resource_version = None
        while True:
            try:
                job = self.read()
            except Exception as e:  # noqa: BLE001
                if not transient(e):
                    raise
                self.log(f"{self.what}: the API did not answer ({e}); trying again")
                job = {}
            if job is None:
                raise TrainJobError(
                    f"{self.what}: deleted while the task followed it (by "
                    f"someone else: kubectl delete, or a namespace cleanup)"
                )
            if job:
                self.report(job)
                if condition(job, "Complete"):
                    self.log(f"{self.what}: complete")
                    return
                failed = condition(job, "Failed")
                if failed:
                    raise TrainJobFailed(
                        f"{self.what} failed: {failed.get('reason')}: {failed.get('message')}"
                    )
                resource_version = job["metadata"].get("resourceVersion")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TrainJobTimeout(
                    f"{self.what}: not finished after {timeout_seconds:g} s "
                    f"(the stage's timeout); deleting it"
                )
            self.wait_for_change(min(self.poll, remaining), resource_version)


class _PodLogs:
    """Streams the log of the pod that runs the command (node 0; an MPI runtime's launcher,
    which prints every rank's output) into the task's log, each pod (a restarted one again)
    from a thread of its own."""

    def __init__(self, job: _Follower, poll_seconds: float) -> None:
        self.job = job
        self.poll = poll_seconds
        runtime = job.manifest["spec"]["runtimeRef"]["name"]
        self.selector = (
            f"{JOBSET_LABEL}={job.name},{JOB_LABEL}={command_job(runtime)},{INDEX_LABEL}=0"
        )
        self._stop = threading.Event()
        self._streamed: set[tuple[str, int]] = set()
        self._threads: list[threading.Thread] = []
        self._responses: list[Any] = []
        self._warned = False
        self._scanner: threading.Thread | None = None

    def start(self) -> None:
        self._scanner = threading.Thread(target=self._scan, daemon=True)
        self._scanner.start()

    def _scan(self) -> None:
        while not self._stop.is_set():
            self._scan_once()
            self._stop.wait(self.poll)

    def _scan_once(self) -> None:
        try:
            pods = self.job.core.list_namespaced_pod(
                self.job.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
            ).items
        except Exception as e:  # noqa: BLE001 (logs are a convenience; the status decides)
            if not self._warned:
                self._warned = True
                self.job.log(f"{self.job.what}: cannot list its pods for their logs: {e}")
            return
        for pod in pods:
            if pod.status.phase not in ("Running", "Succeeded", "Failed"):
                continue
            restarts = max(
                (s.restart_count for s in pod.status.container_statuses or []), default=0
            )
            key = (pod.metadata.name, restarts)
            if key in self._streamed:
                continue
            self._streamed.add(key)
            thread = threading.Thread(target=self._stream, args=(pod,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _container(self, pod: Any) -> str:
        names = [c.name for c in pod.spec.containers]
        return TRAINER_JOB if TRAINER_JOB in names else names[0]

    def _stream(self, pod: Any) -> None:
        name = pod.metadata.name
        try:
            response = self.job.core.read_namespaced_pod_log(
                name,
                self.job.namespace,
                container=self._container(pod),
                follow=True,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT, None),
            )
            self._responses.append(response)
            for line in _lines(response.stream(decode_content=True)):
                self.job.log(f"[{name}] {line}")
        except Exception as e:  # noqa: BLE001
            if not self._stop.is_set():
                self.job.log(f"[{name}] (its log stream ended: {e})")

    def finish(self, drain_seconds: float = 5.0) -> None:
        """Stream what the scanner has not seen yet (a pod that ran and ended between two
        scans), then let the streams reach the end of their pods' logs."""
        self._stop.set()
        if self._scanner:
            self._scanner.join(timeout=REQUEST_TIMEOUT)
        self._scan_once()
        end = time.monotonic() + drain_seconds
        for thread in list(self._threads):
            thread.join(timeout=max(0.0, end - time.monotonic()))
        self.abandon()

    def abandon(self) -> None:
        self._stop.set()
        for response in self._responses:
            # Closing a response another thread reads blocks on its buffer's lock; shutting
            # its socket down ends that read instead.
            sock = getattr(getattr(response, "_connection", None), "sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def tail_failed(self) -> None:
        """The last lines of each failed pod whose log was not streamed (another node's)."""
        try:
            pods = self.job.core.list_namespaced_pod(
                self.job.namespace,
                label_selector=f"{JOBSET_LABEL}={self.job.name}",
                _request_timeout=REQUEST_TIMEOUT,
            ).items
        except Exception:  # noqa: BLE001
            return
        streamed = {name for name, _ in self._streamed}
        for pod in pods:
            if pod.status.phase != "Failed" or pod.metadata.name in streamed:
                continue
            try:
                text = self.job.core.read_namespaced_pod_log(
                    pod.metadata.name,
                    self.job.namespace,
                    container=self._container(pod),
                    tail_lines=FAILED_TAIL_LINES,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except Exception as e:  # noqa: BLE001
                text = f"(no log: {e})"
            self.job.log(f"[{pod.metadata.name}] last {FAILED_TAIL_LINES} lines of a failed pod:")
            for line in text.splitlines():
                self.job.log(f"[{pod.metadata.name}] {line}")


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if buffer:
        yield buffer.decode("utf-8", "replace")
