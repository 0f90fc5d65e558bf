"""A small stand-in for the Kubernetes API server on 127.0.0.1: the calls ``run_trainjob``
makes through the real ``kubernetes`` client, answered the way the API server answers them.

* TrainJobs (``/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs``): create (201;
  409 AlreadyExists; 422 for a name the CRD refuses), get, list, watch (chunked JSON lines,
  events after ``resourceVersion``, closed after ``timeoutSeconds``), delete (a Status; with
  ``deletion_seconds`` the object stays with a ``deletionTimestamp`` that long, as foreground
  deletion keeps it until its pods are gone); 404 NotFound Status for a missing one.
* InferenceServices (``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices``),
  through the same custom-object routes: create, get, list, watch, delete, and patch (a JSON
  merge patch, RFC 7386, as the client sends it; ``metadata.generation`` goes up when the spec
  changes). A 404 Status for any other custom resource.
* Pods (``/api/v1/namespaces/{ns}/pods``): list by an equality label selector, and
  ``/{name}/log`` (plain text; ``follow`` streams new lines until the pod ends; ``tailLines``;
  400 while the pod is Pending).

What a created TrainJob does is scripted (:meth:`State.script`): a list of steps run by a thread
of its own, in order: ``("running",)`` makes its pods (numNodes of them, Running, labelled as
JobSet labels them: ``node`` pods, or under an MPI runtime the ``launcher`` pod, host 0, and
numNodes - 1 ``node`` pods), ``("log", text)`` / ``("log", text, node)`` appends a line to a
pod's log,
``("sleep", seconds)``, ``("complete",)``, ``("failed", reason, message)`` (node 0's pod
Failed, the others Succeeded... unless ``("failed", reason, message, node)`` names another),
``("call", fn)``: ``fn(trainjob)`` runs (the nodes' work, say) and returns the steps that follow.
A TrainJob without a script stays as it was created: it runs forever.

What KServe's controller does with an InferenceService is scripted per change of its spec
(:meth:`State.script_changes`): the create, then each patch that changes the spec, plays the next
list of steps: ``("ready", url)`` (``Ready=True`` for the current generation, ``status.url`` and
``status.address.url``), ``("not_ready", reason, message)`` (``Ready=False``), ``("progress",)``
(``Ready=Unknown``), ``("failed_load", message)`` (the model failed to load: ``Ready=False``
with a non-terminal reason, ``modelStatus`` ``BlockedByFailedLoad``), ``("sleep", seconds)``. A change with no steps left changes no status.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

from json_http import JsonHandler, ThreadedServer

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
CUSTOM = re.compile(r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")
# The custom resources served: (group, version, plural) -> kind.
KINDS = {(GROUP, VERSION, PLURAL): "TrainJob",
         ("serving.kserve.io", "v1beta1", "inferenceservices"): "InferenceService"}  # fmt: skip
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/log)?)?$")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _flag(value: str | None) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool): the
    Python client sends ``True``."""
    return (value or "").lower() in ("1", "t", "true")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, name: str = "",
            resource: tuple[str, str, str] = (GROUP, VERSION, PLURAL)) -> dict[str, Any]:  # fmt: skip
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason,
            "details": {"name": name, "group": resource[0], "kind": resource[2]},
            "code": code}  # fmt: skip


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (null removes a field)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    phase: str = "Running"
    lines: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {"containers": [{"name": "node", "image": "x"}]},
            "status": {"phase": self.phase,
                       "containerStatuses": [{"name": "node", "restartCount": 0, "ready": True,
                                              "image": "x", "imageID": "x"}]},
        }  # fmt: skip


@dataclass
class State:
    trainjobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    inferenceservices: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    change_scripts: dict[str, list[list[tuple]]] = field(default_factory=dict)
    unavailable_gets: int = 0  # the next GETs of one InferenceService answer 503 (a restart)
    # The answers to the next PATCHes of an InferenceService: 0 applies it, a status refuses it.
    patch_answers: list[int] = field(default_factory=list)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    hosts: dict[str, list[Pod]] = field(default_factory=dict)  # TrainJob -> its pods, node order
    requests: list[Request] = field(default_factory=list)
    # (resourceVersion, ADDED|MODIFIED|DELETED, object, plural)
    events: list[tuple[int, str, dict[str, Any], str]] = field(default_factory=list)
    scripts: dict[str, list[tuple]] = field(default_factory=dict)
    deletion_seconds: float = 0.0  # how long a deleted TrainJob lingers (foreground deletion)
    versions: Any = field(default_factory=lambda: itertools.count(100))
    changed: threading.Condition = field(default_factory=threading.Condition)

    # -- for tests ------------------------------------------------------------------------------
    def script(self, name: str, steps: list[tuple]) -> None:
        """What the TrainJob called ``name`` does once created (or :meth:`run` for one
        already there)."""
        self.scripts[name] = steps

    def add(self, manifest: dict[str, Any], conditions: list[dict] | None = None) -> None:
        """A TrainJob left by an earlier attempt (as if created then)."""
        with self.changed:
            obj = self._stored(copy.deepcopy(manifest))
            obj["status"] = {"conditions": conditions or []}
            self._put(obj, "ADDED")

    def script_changes(self, name: str, *changes: list[tuple]) -> None:
        """What KServe's controller does with the InferenceService ``name``: on its create
        and on each patch that changes its spec, the next of ``changes`` plays."""
        self.change_scripts[name] = list(changes)

    def add_service(self, manifest: dict[str, Any], url: str) -> None:
        """An InferenceService that is there and ready (the previous champion), generation 1."""
        with self.changed:
            obj = copy.deepcopy(manifest)
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            obj["status"] = _service_status(obj, "True", "", "", url)
            self._put(obj, "ADDED", "inferenceservices")

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.changed:
            return copy.deepcopy(self.inferenceservices.get((namespace, name)))

    def run(self, namespace: str, name: str, steps: list[tuple]) -> None:
        threading.Thread(target=self._play, args=(namespace, name, steps), daemon=True).start()

    def trainjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.changed:
            return copy.deepcopy(self.trainjobs.get((namespace, name)))

    def sent(self, method: str, pattern: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and pattern in r.path]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        with self.changed:
            while not predicate():  # requests are recorded without a notify: poll too
                if time.monotonic() > end:
                    raise TimeoutError("the server state never got there")
                self.changed.wait(timeout=0.05)

    # -- inside the server ----------------------------------------------------------------------
    def _stored(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        spec = obj.setdefault("spec", {})
        spec.setdefault("suspend", False)  # the CRD's defaults
        spec.setdefault("managedBy", "trainer.kubeflow.org/trainjob-controller")
        return obj

    def store(self, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        return getattr(self, plural)

    def _put(self, obj: dict[str, Any], kind: str, plural: str = PLURAL) -> None:
        """Store a change and wake the watches (call with ``changed`` held)."""
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self.versions))
        key = (meta["namespace"], meta["name"])
        if plural != PLURAL:
            store = self.store(plural)
            if kind == "DELETED":
                store.pop(key, None)
            else:
                store[key] = obj
        elif kind == "DELETED":
            self.trainjobs.pop(key, None)
            for pod_key in [k for k, p in self.pods.items()
                            if p.labels.get("jobset.sigs.k8s.io/jobset-name") == key[1]]:  # fmt: skip
                del self.pods[pod_key]  # the garbage collector takes its pods
        else:
            self.trainjobs[key] = obj
        self.events.append((int(meta["resourceVersion"]), kind, copy.deepcopy(obj), plural))
        self.changed.notify_all()

    def _play(self, namespace: str, name: str, steps: list[tuple]) -> None:
        steps = list(steps)
        while steps:
            step = steps.pop(0)
            if step[0] == "call":  # what the nodes do, outside the lock; returns more steps
                obj = self.trainjob(namespace, name)
                if obj is None or obj["metadata"].get("deletionTimestamp"):
                    return
                steps[:0] = step[1](obj)
                continue
            with self.changed:
                obj = self.trainjobs.get((namespace, name))
                if obj is None or obj["metadata"].get("deletionTimestamp"):
                    return  # deleted: its script ends with it
                kind = step[0]
                if kind == "sleep":
                    pass
                elif kind == "running":
                    nodes = obj["spec"].get("trainer", {}).get("numNodes", 1)
                    # An MPI runtime (runLauncherAsNode): the launcher's pod is the first host.
                    mpi = obj["spec"]["runtimeRef"]["name"] == "deepspeed-distributed"
                    jobs = [("launcher", 0)] + [("node", i) for i in range(nodes - 1)] if mpi \
                        else [("node", i) for i in range(nodes)]  # fmt: skip
                    self.hosts[name] = []
                    for job, i in jobs:
                        pod = Pod(f"{name}-{job}-0-{i}-{uuid.uuid4().hex[:5]}", namespace, {
                            "jobset.sigs.k8s.io/jobset-name": name,
                            "jobset.sigs.k8s.io/replicatedjob-name": job,
                            "batch.kubernetes.io/job-completion-index": str(i),
                        })  # fmt: skip
                        self.pods[(namespace, pod.name)] = pod
                        self.hosts[name].append(pod)
                    obj["status"] = {
                        "jobsStatus": [
                            {"name": job, "active": sum(1 for j, _ in jobs if j == job)}
                            for job in dict.fromkeys(j for j, _ in jobs)
                        ]
                    }
                    self._put(obj, "MODIFIED")
                elif kind == "log":
                    self._node(name, step[2] if len(step) > 2 else 0).lines.append(step[1])
                    self.changed.notify_all()
                elif kind in ("complete", "failed"):
                    failing = step[3] if len(step) > 3 else 0
                    for index, pod in enumerate(self.hosts.get(name, [])):
                        failed = kind == "failed" and index == failing
                        pod.phase = "Failed" if failed else "Succeeded"
                    condition = (
                        {"type": "Complete", "status": "True", "reason": "JobSetCompleted",
                         "message": "jobset completed successfully"}
                        if kind == "complete" else
                        {"type": "Failed", "status": "True", "reason": step[1],
                         "message": step[2]}
                    )  # fmt: skip
                    condition["lastTransitionTime"] = _now()
                    obj.setdefault("status", {}).setdefault("conditions", []).append(condition)
                    self._put(obj, "MODIFIED")
            if step[0] == "sleep":
                time.sleep(step[1])

    def _play_change(self, namespace: str, name: str) -> None:
        """The controller's answer to a change of an InferenceService's spec (its next script)."""
        with self.changed:
            changes = self.change_scripts.get(name)
            steps = changes.pop(0) if changes else []
        for step in steps:
            if step[0] == "sleep":
                time.sleep(step[1])
                continue
            with self.changed:
                obj = self.inferenceservices.get((namespace, name))
                if obj is None:
                    return
                status, reason, message, url = {
                    "ready": ("True", "", "", step[1] if len(step) > 1 else ""),
                    "not_ready": ("False", *step[1:3], ""),
                    "progress": ("Unknown", "Progressing", "revision is being deployed", ""),
                    "failed_load": ("False", "", "", ""),
                }[step[0]]
                obj["status"] = _service_status(obj, status, reason, message, url)
                if step[0] == "failed_load":  # KServe: the storage initializer's pod failed
                    obj["status"]["conditions"][1].update(
                        reason="RevisionMissing", message="Configuration does not have any "
                        "ready Revision")  # fmt: skip
                    obj["status"]["modelStatus"] = {
                        "transitionStatus": "BlockedByFailedLoad",
                        "states": {"targetModelState": "FailedToLoad"},
                        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": step[1],
                                            "exitCode": 1},
                    }  # fmt: skip
                self._put(obj, "MODIFIED", "inferenceservices")

    def _node(self, name: str, index: int) -> Pod:
        hosts = self.hosts.get(name, [])
        if index < len(hosts):
            return hosts[index]
        raise KeyError(f"no pod of node {index} of {name} (script 'running' first)")


def _service_status(obj: dict, ready: str, reason: str, message: str, url: str) -> dict:
    """An InferenceService's status as KServe writes it, for its current generation."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    condition = {"type": "Ready", "status": ready, "lastTransitionTime": _now()}
    if reason:
        condition.update(reason=reason, message=message)
    status: dict[str, Any] = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "conditions": [{**condition, "type": "PredictorReady"}, condition],
    }
    if ready == "True":
        status["url"] = f"http://{name}.{ns}.example.com"
        status["address"] = {"url": url or f"http://{name}-predictor.{ns}.svc.cluster.local"}
    return status


class Handler(JsonHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams as the API server sends
    state: State  # set on the subclass by K8sApiServer

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        request = Request(method, url.path, query, body)
        self.state.requests.append(request)
        try:
            if (m := CUSTOM.match(url.path)) and m.group(1, 2, 4) == (GROUP, VERSION, PLURAL):
                self._trainjobs(request, m.group(3), m.group(5))
            elif m and m.group(1, 2, 4) in KINDS:
                self._services(request, m.group(1, 2, 4), m.group(3), m.group(5))
            elif m := PODS.match(url.path):
                self._pods(request, m.group(1), m.group(2), bool(m.group(3)))
            else:
                self._reply(404, _status(404, "NotFound", f"no route for {method} {url.path}"))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a stream it closed)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- TrainJobs ----------------------------------------------------------------------------
    def _trainjobs(self, r: Request, ns: str, name: str | None) -> None:
        s = self.state
        if r.method == "POST" and name is None:
            obj = copy.deepcopy(r.body)
            new = obj.get("metadata", {}).get("name", "")
            if not NAME_RE.match(new) or len(new) > 63:
                message = f'TrainJob.trainer.kubeflow.org "{new}" is invalid: metadata.name'
                return self._reply(422, _status(422, "Invalid", message, new))
            with s.changed:
                if (ns, new) in s.trainjobs:
                    message = f'{PLURAL}.{GROUP} "{new}" already exists'
                    return self._reply(409, _status(409, "AlreadyExists", message, new))
                obj["metadata"]["namespace"] = ns
                self.state._put(self.state._stored(obj), "ADDED")
                created = copy.deepcopy(obj)
            if new in s.scripts:
                s.run(ns, new, s.scripts[new])
            return self._reply(201, created)
        if r.method == "GET" and name is None and _flag(r.query.get("watch")):
            return self._watch(r, ns, PLURAL)
        if r.method == "GET" and name is None:
            with s.changed:
                items = [copy.deepcopy(o) for (n, _), o in s.trainjobs.items() if n == ns]
                version = str(next(s.versions))
            return self._reply(200, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJobList",
                                     "metadata": {"resourceVersion": version}, "items": items})  # fmt: skip
        with s.changed:
            obj = s.trainjobs.get((ns, name))
            if obj is None:
                message = f'{PLURAL}.{GROUP} "{name}" not found'
                return self._reply(404, _status(404, "NotFound", message, name))
            if r.method == "GET":
                return self._reply(200, copy.deepcopy(obj))
            if r.method != "DELETE":
                return self._reply(405, _status(405, "MethodNotAllowed", r.method, name))
            if s.deletion_seconds and not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                s._put(obj, "MODIFIED")
                threading.Timer(s.deletion_seconds, self._remove, (ns, name)).start()
            elif not s.deletion_seconds:
                s._put(obj, "DELETED")
            return self._reply(200, copy.deepcopy(obj))

    def _remove(self, ns: str, name: str) -> None:
        with self.state.changed:
            obj = self.state.trainjobs.get((ns, name))
            if obj is not None:
                self.state._put(obj, "DELETED")

    def _watch(self, r: Request, ns: str, plural: str) -> None:
        s = self.state
        wanted = r.query.get("fieldSelector", "").removeprefix("metadata.name=") or None
        since = int(r.query.get("resourceVersion") or 0)
        end = time.monotonic() + float(r.query.get("timeoutSeconds", 1800))
        self._start_stream("application/json")
        with s.changed:
            if not since:  # the current state first, as ADDED events
                pending = [(int(o["metadata"]["resourceVersion"]), "ADDED", copy.deepcopy(o),
                            plural) for o in s.store(plural).values()]  # fmt: skip
                since = max((e[0] for e in s.events), default=0)
            else:
                pending = []
        while True:
            for _, kind, obj, of in pending:
                meta = obj["metadata"]
                if of == plural and meta["namespace"] == ns and wanted in (None, meta["name"]):
                    self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            with s.changed:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                if not any(e[0] > since for e in s.events):
                    s.changed.wait(timeout=remaining)
                pending = [e for e in s.events if e[0] > since]
                since = max([since, *(e[0] for e in pending)])
        self._chunk(b"")

    # -- InferenceServices (and any other custom resource but TrainJobs) ------------------------
    def _services(self, r: Request, resource: tuple[str, str, str], ns: str,
                  name: str | None) -> None:  # fmt: skip
        s, plural, kind = self.state, resource[2], KINDS[resource]
        store = s.store(plural)
        if r.method == "POST" and name is None:
            obj = copy.deepcopy(r.body)
            new = obj.get("metadata", {}).get("name", "")
            if not NAME_RE.match(new) or len(new) > 63:
                message = f'{kind}.{resource[0]} "{new}" is invalid: metadata.name'
                return self._reply(422, _status(422, "Invalid", message, new, resource))
            with s.changed:
                if (ns, new) in store:
                    message = f'{plural}.{resource[0]} "{new}" already exists'
                    return self._reply(409, _status(409, "AlreadyExists", message, new, resource))
                obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()),
                                       creationTimestamp=_now(), generation=1)  # fmt: skip
                s._put(obj, "ADDED", plural)
                created = copy.deepcopy(obj)
            threading.Thread(target=s._play_change, args=(ns, new), daemon=True).start()
            return self._reply(201, created)
        if r.method == "GET" and name is None and _flag(r.query.get("watch")):
            return self._watch(r, ns, plural)
        if r.method == "GET" and name is None:
            with s.changed:
                items = [copy.deepcopy(o) for (n, _), o in store.items() if n == ns]
                version = str(next(s.versions))
            return self._reply(200, {"apiVersion": "/".join(resource[:2]), "kind": f"{kind}List",
                                     "metadata": {"resourceVersion": version}, "items": items})  # fmt: skip
        with s.changed:
            obj = store.get((ns, name))
            if obj is None:
                message = f'{plural}.{resource[0]} "{name}" not found'
                return self._reply(404, _status(404, "NotFound", message, name, resource))
            if r.method == "GET" and s.unavailable_gets:
                s.unavailable_gets -= 1
                return self._reply(503, _status(503, "ServiceUnavailable", "etcd leader changed"))
            if r.method == "GET":
                return self._reply(200, copy.deepcopy(obj))
            if r.method == "DELETE":  # the object as deleted (no finalizer here to wait for)
                s._put(obj, "DELETED", plural)
                return self._reply(200, copy.deepcopy(obj))
            if r.method != "PATCH":
                return self._reply(405, _status(405, "MethodNotAllowed", r.method, name, resource))
            refused = s.patch_answers.pop(0) if s.patch_answers else 0
            if refused:
                message = f'inferenceservices "{name}" is forbidden: the webhook refused it'
                return self._reply(refused, _status(refused, "Forbidden", message, name, resource))
            content_type = self.headers.get("Content-Type", "")
            if content_type != "application/merge-patch+json":
                message = f"the fake server takes merge patches only, got {content_type}"
                return self._reply(415, _status(415, "UnsupportedMediaType", message, name))
            patched = merge_patch(obj, r.body)
            patched["metadata"].update({k: obj["metadata"][k] for k in
                                        ("name", "namespace", "uid", "generation")})  # fmt: skip
            spec_changed = patched.get("spec") != obj.get("spec")
            if spec_changed:
                patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            s._put(patched, "MODIFIED", plural)
            reply = copy.deepcopy(patched)
        if spec_changed:
            threading.Thread(target=s._play_change, args=(ns, name), daemon=True).start()
        return self._reply(200, reply)

    # -- pods ---------------------------------------------------------------------------------
    def _pods(self, r: Request, ns: str, name: str | None, log: bool) -> None:
        s = self.state
        if name is None:
            wanted = dict(p.split("=", 1) for p in r.query.get("labelSelector", "").split(",") if p)
            with s.changed:
                items = [p.as_json() for (n, _), p in s.pods.items()
                         if n == ns and all(p.labels.get(k) == v for k, v in wanted.items())]  # fmt: skip
            return self._reply(200, {"apiVersion": "v1", "kind": "PodList",
                                     "metadata": {"resourceVersion": "1"}, "items": items})  # fmt: skip
        with s.changed:
            pod = s.pods.get((ns, name))
        if pod is None:
            return self._reply(404, _status(404, "NotFound", f'pods "{name}" not found', name))
        if not log:
            return self._reply(200, pod.as_json())
        if pod.phase == "Pending":
            message = f'container "node" in pod "{name}" is waiting to start: ContainerCreating'
            return self._reply(400, _status(400, "BadRequest", message, name))
        self._start_stream("text/plain")
        if not _flag(r.query.get("follow")):
            lines = pod.lines[-int(r.query["tailLines"]) :] if "tailLines" in r.query else pod.lines
            self._chunk("".join(f"{line}\n" for line in lines).encode())
            return self._chunk(b"")
        sent = 0
        while True:
            with s.changed:
                while sent == len(pod.lines) and pod.phase == "Running" and (ns, name) in s.pods:
                    s.changed.wait(timeout=1.0)
                new, sent = pod.lines[sent:], len(pod.lines)
                ended = pod.phase != "Running" or (ns, name) not in s.pods
            if new:
                self._chunk("".join(f"{line}\n" for line in new).encode())
            if ended:
                return self._chunk(b"")


class K8sApiServer(ThreadedServer):
    """``with K8sApiServer() as server:`` -> ``server.url``, ``server.state``."""

    def __init__(self) -> None:
        super().__init__(Handler, State())
